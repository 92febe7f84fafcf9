"""Nodes that pull images, and a proxy that counts what they pull.

- `CountingProxy`: a reverse proxy on 127.0.0.1 in front of the registry; it counts the
  bytes of every blob it hands out, so a pull is measured on the wire.
- `DockerNode`: a second Docker engine (its own dockerd, data root and socket), as a
  JupyterHub node that runs Docker; its classic image store keeps layers, not blobs.
- `ContainerdNode`: containerd's own client (`ctr`, in a namespace of its own) against
  the containerd that Docker runs on: what a Kubernetes node (GKE, EKS) runs, which keeps
  every blob it pulled in its content store.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.registry import RegistryCredentials

CONTAINERD = "/var/run/docker/containerd/containerd.sock"


class CountingProxy:
    """Forwards everything to `upstream` (host:port); counts blob bytes sent back."""

    def __init__(self, upstream: str) -> None:
        self.blob_bytes = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection = http.client.HTTPConnection(upstream, timeout=300)
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                counted = self.command == "GET" and "/blobs/" in self.path
                while chunk := response.read(1 << 20):
                    self.wfile.write(chunk)
                    if counted:
                        with proxy._lock:
                            proxy.blob_bytes += len(chunk)
                connection.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.blob_bytes = 0

    def close(self) -> None:
        self.server.shutdown()


class DockerNode:
    """A second dockerd with its own data root and socket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = f"unix://{root / 'docker.sock'}"
        self.log = (root / "dockerd.log").open("w")
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "--host", self.host,
             "--bridge", "none", "--iptables=false", "--ip-masq=false"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the node's dockerd did not start: {root / 'dockerd.log'}")
            time.sleep(0.5)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "cfg")}
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                              check=check)  # fmt: skip

    def login(self, registry: str, credentials: RegistryCredentials) -> None:
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "cfg")}
        subprocess.run(["docker", "login", "--username", credentials.user, "--password-stdin",
                        registry], input=credentials.password, text=True, env=env,
                       capture_output=True, check=True)  # fmt: skip

    def pull(self, ref: str) -> None:
        self.docker("pull", "--quiet", ref)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class ContainerdNode:
    """`ctr` in a namespace of its own, on the containerd that Docker runs on."""

    def __init__(self, namespace: str, credentials: RegistryCredentials) -> None:
        self.namespace = namespace
        self.user = f"{credentials.user}:{credentials.password}"

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", CONTAINERD, "-n", self.namespace, *args],
                              capture_output=True, text=True, check=True)  # fmt: skip

    def pull(self, ref: str) -> None:
        self.ctr("images", "pull", "--plain-http", "--user", self.user, ref)

    def stop(self) -> None:
        listing = self.ctr("images", "ls", "-q").stdout.split()
        if listing:
            self.ctr("images", "rm", *listing)
        self.ctr("content", "prune", "references")
