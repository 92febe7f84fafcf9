"""Build the rendered pair on the local Docker engine with BuildKit: worker, then notebook.

Each image gets the content tag and the date tag (YYYYMMDD) locally. The build log goes
to the terminal and to `build/<env>/<role>-build.log`; a failure shows the log's tail.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import BuildToolError
from buildtool.render import ROLES, RenderedPair

LOG_TAIL = 40
# Debian's docker.io client (20.10) carries BuildKit itself; newer clients need buildx.
FALLBACK_CLI = "/usr/bin/docker"


@functools.cache
def docker_cli() -> str:
    """The docker client to use: $DOCKER_CLI, else `docker` if it can build with BuildKit."""
    if os.environ.get("DOCKER_CLI"):
        return os.environ["DOCKER_CLI"]
    docker = shutil.which("docker")
    if docker is None:
        raise BuildToolError("no docker CLI on PATH; install docker.io and start dockerd")
    probe = subprocess.run([docker, "buildx", "version"], capture_output=True)
    if probe.returncode != 0 and Path(FALLBACK_CLI).exists():
        legacy = subprocess.run([FALLBACK_CLI, "version", "--format", "{{.Client.Version}}"],
                                capture_output=True, text=True)  # fmt: skip
        if legacy.stdout.startswith("20."):
            return FALLBACK_CLI
    return docker


@dataclass(frozen=True)
class BuildStamp:
    """What varies per build but not per content: it only goes into labels."""

    created: str
    revision: str
    date_tag: str

    @classmethod
    def now(cls, source: Path) -> BuildStamp:
        moment = dt.datetime.now(dt.timezone.utc)
        return cls(
            created=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            revision=git_revision(source),
            date_tag=moment.strftime("%Y%m%d"),
        )


def git_revision(source: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _run_logged(command: list[str], log: Path, echo: bool) -> None:
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            tail.append(line)
            if echo:
                sys.stdout.write(line)
        code = process.wait()
    if code != 0:
        raise BuildToolError(
            f"docker build failed (exit {code}); last lines of {log}:\n" + "".join(tail)
        )


def build_pair(pair: RenderedPair, stamp: BuildStamp, *, echo: bool = True) -> None:
    """Build worker then notebook (which is FROM the worker) from the rendered context."""
    context = Path(pair.directory)
    for role in ROLES:
        image = pair.image(role)
        command = [
            # Host networking: a channel or mirror on the build host's 127.0.0.1 (an
            # offline site's, or the local stand-in) is reachable as it is from the host.
            docker_cli(), "build", "--progress=plain", "--network=host",
            "-f", str(context / role / "Dockerfile"),
            "-t", image.ref, "-t", f"{image.repository}:{stamp.date_tag}",
            "--build-arg", f"CREATED={stamp.created}",
            "--build-arg", f"REVISION={stamp.revision}",
            "--build-arg", f"WORKER_IMAGE={pair.worker.ref}",
            str(context),
        ]  # fmt: skip
        print(f"building {role} image {image.ref}", flush=True)
        _run_logged(command, context / f"{role}-build.log", echo)
