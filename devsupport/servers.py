"""Real servers the tests (and benchmarks) start on 127.0.0.1 beside the suite's own.

- `RegistryProcess`: a distribution registry of its own (Debian's docker-registry, the
  suite's htpasswd), so that one can be killed without touching the shared one;
- `DockerEngine`: a second dockerd with its own data root and socket, reached through
  `DOCKER_HOST` as a remote builder is;
- `FrontProxy`: a reverse proxy in front of a registry that counts the requests and the
  blob bytes it hands out (Range requests pass through), can hold them to a bandwidth,
  as a node's link to a registry does, and can send blob requests elsewhere with a
  redirect, as registries that keep blobs in object storage do;
- `BlobStorage`: that elsewhere: it serves blobs it fetches from the registry with its
  own credentials, and records the Authorization headers that reached it;
- `RecordingServer` and its kinds `OciServer` (a fake but real registry: enough of the
  distribution API to push and fetch blobs and manifests), `Redirector` and
  `TokenService`: small servers on any loopback address (127.0.0.2 is another host to a
  client), each recording every request's method, path and Authorization.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from buildtool.image import docker_cli
from devsupport.dockercli import docker
from devsupport.localregistry import DEFAULT_STATE_DIR, RegistryCredentials


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiet_handler(base: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    class Quiet(base):  # type: ignore[valid-type, misc]
        def log_message(self, *args: object) -> None:
            pass

    return Quiet


class RegistryProcess:
    """docker-registry on a port of its own, with the suite's htpasswd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.data = root / "data"
        state = Path(os.environ.get("DASKHUB_STATE_DIR", DEFAULT_STATE_DIR)) / "registry"
        (root / "config.yml").parent.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.data}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\nauth:\n  htpasswd:\n"
            f"    realm: faults\n    path: {state / 'htpasswd'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:  # what a failed start made (its mounts, its bridge) goes
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(self.root / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2)
            except urllib.error.HTTPError:
                return  # 401: it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the registry did not start: {self.root}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def blobs(self) -> int:
        """How many blobs the registry has completely stored."""
        return len(list(self.data.glob("docker/registry/v2/blobs/sha256/*/*/data")))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


_ENGINES = itertools.count()


class DockerEngine:
    """A second dockerd with its own data root, socket and bridge.

    Its own bridge, made here: a dockerd started with `--bridge none` deletes the host's
    docker0, which the suite's engine needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = f"unix://{root / 'docker.sock'}"
        self.bridge = f"dk{os.getpid()}-{next(_ENGINES)}"[:15]  # an interface name's limit
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "10.211.0.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:  # what a failed start made (its mounts, its bridge) goes
            self.stop()
            raise

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "cfg")}

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "--host",
                self.host,
                "--bridge",
                self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the second dockerd did not start: {self.root / 'dockerd.log'}")
            time.sleep(0.5)

    def docker(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [docker_cli(), *args], capture_output=True, env=self.env(), check=check, input=input
        )

    def adopt(self, image: str) -> None:
        """Copy an image of the suite's engine into this one."""
        self.docker("load", "--quiet", input=docker("save", image).stdout)

    def login(self, registry: str, credentials: RegistryCredentials) -> None:
        self.docker(
            "login",
            "--username",
            credentials.user,
            "--password-stdin",
            registry,
            input=credentials.password.encode(),
        )

    def kill(self) -> None:
        """SIGKILL the engine and its containerd: a crashed builder."""
        assert self.process is not None
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        containerd = int(pid_file.read_text()) if pid_file.exists() else None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if containerd is not None:  # its own session: killed when dockerd dies, or now
            with contextlib.suppress(ProcessLookupError):
                os.kill(containerd, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{containerd}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for folder in ("exec", "data"):
            subprocess.run(["umount", "-R", str(self.root / folder)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


class FrontProxy:
    """Forwards to `upstream` (host:port), counting: requests, blob bytes pulled, and what
    was pushed (the bytes of every request body, the digest of each blob upload that was
    completed, and each mount); blob GET/HEAD go to `redirect_to` (a base URL) with a 307
    when it is set.

    A request's headers pass through as they are, Range among them, and so does the
    answer: a blob's bytes, whole (200) or partial reads of a lazy pull (206, one range
    or several), are counted as they are actually sent; an error's body is not.
    `rate`, when set (bytes per second; it may be changed at any time), is the bandwidth
    of the link all answers' bodies share."""

    def __init__(
        self, upstream: str, redirect_to: str | None = None, rate: float | None = None
    ) -> None:
        self.requests = 0
        self.blob_bytes = 0
        self.rate = rate
        self._link_free_at = 0.0  # when the throttled link has sent what it was given
        self.pushed_bytes = 0
        self.uploaded: list[str] = []  # digests of blobs sent in full
        self.mounted: list[str] = []  # digests asked for by a cross-repository mount
        # While set, blob uploads wait here: a push that is under way, for as long as a
        # test needs (to kill it mid-push).
        self.hold_uploads = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                blob = self.command in ("GET", "HEAD") and "/blobs/sha256:" in self.path
                if blob and redirect_to:
                    self.send_response(307)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                uploading = self.command in ("PATCH", "PUT") and "/blobs/uploads/" in self.path
                while uploading and proxy.hold_uploads.is_set():
                    time.sleep(0.05)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                with proxy._lock:
                    proxy.pushed_bytes += length if self.command in ("PUT", "PATCH", "POST") else 0
                    if self.command == "PUT" and "digest" in query:
                        proxy.uploaded += query["digest"]
                    if self.command == "POST" and "mount" in query:
                        proxy.mounted += query["mount"]
                # A header sent several times (Docker sends one Accept per media type)
                # is forwarded as one, its values comma-joined as HTTP allows. Host is
                # kept, as reverse proxies do, so that the registry's upload Locations
                # name the proxy: the client sends credentials to no other origin.
                headers = {
                    key: ", ".join(self.headers.get_all(key) or [])
                    for key in dict.fromkeys(self.headers.keys())
                }
                connection = http.client.HTTPConnection(upstream, timeout=300)
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                counting = blob and self.command == "GET" and response.status < 300
                # Smaller pieces when throttled, so that the rate holds over short reads.
                while chunk := response.read(1 << 20 if proxy.rate is None else 64 << 10):
                    proxy._pace(len(chunk))
                    # Counted before it is written, so that a client that has read it all
                    # finds it counted; taken back if the client did not take it.
                    counted = len(chunk) if counting else 0
                    with proxy._lock:
                        proxy.blob_bytes += counted
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        with proxy._lock:
                            proxy.blob_bytes -= counted
                        raise
                connection.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(Handler))
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _pace(self, size: int) -> None:
        """Wait for `size` bytes' turn on the throttled link (none when unthrottled)."""
        rate = self.rate
        if rate is None:
            return
        with self._lock:
            start = max(time.monotonic(), self._link_free_at)
            self._link_free_at = start + size / rate
            sent_at = self._link_free_at
        time.sleep(max(0.0, sent_at - time.monotonic()))

    def reset(self) -> None:
        with self._lock:
            self.requests = self.blob_bytes = self.pushed_bytes = 0
            self.uploaded, self.mounted = [], []

    def close(self) -> None:
        self.server.shutdown()


class BlobStorage:
    """Serves `/v2/<name>/blobs/<digest>` from `registry` with its own credentials, as
    object storage behind a redirect does; records each request's Authorization."""

    def __init__(self, registry: str, credentials: RegistryCredentials) -> None:
        self.authorizations: list[str | None] = []
        storage = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                storage.authorizations.append(self.headers.get("Authorization"))
                request = urllib.request.Request(
                    f"http://{registry}{self.path}",
                    method=self.command,
                    headers={"Authorization": credentials.authorization()},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        data = response.read()
                        status = response.status
                except urllib.error.HTTPError as error:
                    data, status = b"", error.code
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(data)

            do_GET = do_HEAD = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(Handler))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# -- small HTTP servers on any loopback address, for the credential tests ---------------
# 127.0.0.2 and 127.0.0.3 are other hosts as far as an HTTP client can tell.


@dataclass(frozen=True)
class Received:
    """One request as a server saw it."""

    method: str
    path: str
    authorization: str | None


class RecordingServer:
    """A ThreadingHTTPServer on `host` (port of its own) that records every request and
    answers through `answer`, which subclasses write."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[Received] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization")
                recorder.received.append(Received(self.command, self.path, auth))
                status, headers, payload = recorder.answer(self.command, self.path, auth, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = ThreadingHTTPServer((host, 0), _quiet_handler(Handler))
        self.address = f"{host}:{self.server.server_address[1]}"
        self.url = f"http://{self.address}"
        # A short poll: close() (shutdown) returns within it, so many servers close fast.
        serve = lambda: self.server.serve_forever(poll_interval=0.05)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()

    def answer(
        self, method: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def authorizations(self) -> list[str | None]:
        return [r.authorization for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Redirector(RecordingServer):
    """Sends every request on to `target` (a base URL), same path, with a 307."""

    def __init__(self, host: str, target: str) -> None:
        self.target = target
        super().__init__(host)

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        return 307, {"Location": self.target + path}, b""


class TokenService(RecordingServer):
    """A Bearer token realm: GET answers `{"token": token}` to `basic` (an Authorization
    value), or to anyone when `basic` is None."""

    def __init__(self, host: str, token: str, basic: str | None) -> None:
        self.token, self.basic = token, basic
        super().__init__(host)

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        if self.basic is not None and authorization != self.basic:
            return 401, {"WWW-Authenticate": 'Basic realm="token"'}, b""
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": self.token}).encode()


@dataclass
class OciStore:
    """Blobs, manifests and uploads in progress, shared by the servers that serve them."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class OciServer(RecordingServer):
    """Enough of the OCI distribution API for `Registry.push_blob`, `put_manifest`,
    `get_blob` and `get_manifest`, over `store`.

    - `authorization`: the Authorization value it wants (anything else gets a 401 with
      `challenge`), or None to serve anyone, as storage behind pre-signed URLs does;
    - `upload_base`: where POST .../blobs/uploads/ sends the upload (a base URL; default
      here, as a relative Location);
    - `redirect_to`, `redirect_methods`: after authentication, requests with those
      methods (POST excepted) get a 307 to `redirect_to` + the same path.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        store: OciStore | None = None,
        authorization: str | None = None,
        challenge: str = 'Basic realm="fake"',
        upload_base: str = "",
        redirect_to: str | None = None,
        redirect_methods: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store if store is not None else OciStore()
        self.authorization = authorization
        self.challenge = challenge
        self.upload_base = upload_base
        self.redirect_to = redirect_to
        self.redirect_methods = redirect_methods
        super().__init__(host)

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        if self.authorization is not None and authorization != self.authorization:
            return 401, {"WWW-Authenticate": self.challenge}, b""
        if self.redirect_to and method in self.redirect_methods and method != "POST":
            return 307, {"Location": self.redirect_to + path}, b""
        store = self.store
        split = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(split.query)
        upload = re.fullmatch(r"/upload/(\w+)", split.path)
        blob = re.fullmatch(r"/v2/(.+)/blobs/(sha256:\w+)", split.path)
        manifest = re.fullmatch(r"/v2/(.+)/manifests/([\w.:-]+)", split.path)
        with store.lock:
            if method == "POST" and re.fullmatch(r"/v2/(.+)/blobs/uploads/", split.path):
                key = uuid.uuid4().hex
                store.uploads[key] = bytearray()
                return 202, {"Location": f"{self.upload_base}/upload/{key}"}, b""
            if upload and upload.group(1) in store.uploads:
                key = upload.group(1)
                store.uploads[key] += body
                if method == "PATCH":
                    return 202, {"Location": f"/upload/{key}"}, b""
                if method == "PUT":
                    data = bytes(store.uploads.pop(key))
                    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
                    if query.get("digest") != [digest]:
                        return 400, {}, b"digest mismatch"
                    store.blobs[digest] = data
                    return 201, {"Docker-Content-Digest": digest}, b""
            if blob and method in ("GET", "HEAD"):
                data = store.blobs.get(blob.group(2))
                return (404, {}, b"") if data is None else (200, {}, data)
            if manifest and method == "PUT":
                digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
                media_type = "application/vnd.oci.image.manifest.v1+json"
                store.manifests[manifest.groups()] = (media_type, body)
                store.manifests[(manifest.group(1), digest)] = (media_type, body)
                return 201, {"Docker-Content-Digest": digest}, b""
            if manifest and method in ("GET", "HEAD"):
                found = store.manifests.get(manifest.groups())
                if found is None:
                    return 404, {}, b""
                digest = f"sha256:{hashlib.sha256(found[1]).hexdigest()}"
                return 200, {"Content-Type": found[0], "Docker-Content-Digest": digest}, found[1]
        return 404, {}, b"not part of this fake"


def start(servers: list[RecordingServer], server: RecordingServer) -> RecordingServer:
    """Record a started server in the `servers` fixture's list, which closes it."""
    servers.append(server)
    return server
