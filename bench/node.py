"""A containerd node that pulls images, for bench.layers.

`ctr` in a namespace of its own, on the containerd that Docker runs on: what a Kubernetes
node (GKE, EKS) runs, which keeps every blob it pulled in its content store. The Docker
Engine node and the proxy that counts the bytes pulled are shared with the tests
(devsupport/servers.py).
"""

from __future__ import annotations

import subprocess
import time

from devsupport.localregistry import RegistryCredentials

CONTAINERD = "/var/run/docker/containerd/containerd.sock"


class ContainerdNode:
    def __init__(self, namespace: str, credentials: RegistryCredentials) -> None:
        self.namespace = namespace
        self.user = f"{credentials.user}:{credentials.password}"

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", CONTAINERD, "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            check=True,
        )

    def pull(self, ref: str) -> None:
        self.ctr("images", "pull", "--plain-http", "--user", self.user, ref)

    def stop(self) -> None:
        listing = self.ctr("images", "ls", "-q").stdout.split()
        if listing:
            self.ctr("images", "rm", *listing)
        # Right after the images go, containerd's own collector may hold the content
        # store: pruning then fails once, and a second try goes through.
        for attempt in range(3):
            result = subprocess.run(
                [
                    "ctr",
                    "--address",
                    CONTAINERD,
                    "-n",
                    self.namespace,
                    "content",
                    "prune",
                    "references",
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                return
            time.sleep(1 + attempt)
        raise RuntimeError(f"ctr content prune in {self.namespace}: {result.stderr.strip()}")
