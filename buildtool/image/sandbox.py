"""Where a pair's image tests run what the pair holds: the code its packages run is the
user's, so every container is shut in.

- **No network but a loopback of the test's own**: a container starts with none
  (`--network none`), and the containers of the pair test join the scheduler's
  (`--network container:<id>`), so scheduler, worker and client meet on that loopback
  and reach nothing else: neither the host (its loopback, a Docker socket, a registry,
  cloud metadata) nor anything beyond it. (A Docker network, even `--internal`, still
  lets a container reach the host at its bridge's address: the sandbox test caught
  exactly that.)
- **Every container bounded and unprivileged**: all capabilities dropped, no new
  privileges, the images' own unprivileged user (jovyan, 1000:100), and limits on
  processes, memory and CPU.
- **Every container labelled with the build** (`BUILD_LABEL`), so that whoever ends the
  build, however it ends (passed, failed, killed at its time limit, or the service
  itself killed), removes all of them by the label: `remove` (a network labelled so goes
  too), and `sweep` when a service starts.

A build's id comes from `BUILD_ID_ENV` when its runner set it (the hub service does, and
kills every process that carries it when the build ends), else a new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from buildtool.common import BuildToolError
from buildtool.image.engine import docker
from compat.vocabulary import BUILD_LABEL

logger = logging.getLogger(__name__)

#: The variable a build's processes carry: the build's id.
BUILD_ID_ENV = "DASKHUB_BUILD_ID"
#: The bounds of one container of the image tests.
PIDS = 256
MEMORY = "4g"
CPUS = "1"
USER = "1000:100"


def build_id() -> str:
    """This build's id: its runner's, or a new one."""
    return os.environ.get(BUILD_ID_ENV) or f"b{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Sandbox:
    """One build's label and the flags of every container it runs."""

    build: str

    def run_args(self) -> list[str]:
        """What `docker run` takes for every container of the build, its network aside:
        `--network none`, or `--network container:<id>` to join another's loopback."""
        return [
            "--label",
            f"{BUILD_LABEL}={self.build}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            str(PIDS),
            "--memory",
            MEMORY,
            "--memory-swap",
            MEMORY,
            "--cpus",
            CPUS,
            "--user",
            USER,
        ]


@contextlib.contextmanager
def sandbox(build: str) -> Iterator[Sandbox]:
    """The sandbox of `build`; on the way out, however it is left, every container of
    the build is removed."""
    try:
        yield Sandbox(build)
    finally:
        remove(build)


def _labelled(kind: list[str], build: str | None) -> list[str]:
    label = f"{BUILD_LABEL}={build}" if build else BUILD_LABEL
    return docker(*kind, "--filter", f"label={label}", "--format", "{{.ID}}").decode().split()


def remove(build: str | None) -> int:
    """Remove every container and network of `build` (of every build when None); how
    many containers there were. One that cannot be removed is a warning, not an error:
    the next sweep takes it."""
    containers = _labelled(["ps", "-a"], build)
    try:
        if containers:
            docker("rm", "-f", *containers)
        networks = _labelled(["network", "ls"], build)
        if networks:
            docker("network", "rm", *networks)
    except BuildToolError as exc:
        logger.warning("left containers or a network of build %s: %s", build, exc)
    return len(containers)


def sweep() -> int:
    """Remove what builds left that no process runs any longer (a service starting up:
    none of its builds runs yet)."""
    return remove(None)
