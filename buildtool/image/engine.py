"""The Docker engine the build talks to, through its own CLI.

Which engine is the client's business: `DOCKER_HOST` or the current docker context
(`docker context use ...`) point it at a remote one, as sites do on Kubernetes; nothing
here picks an engine itself.

An engine, remote ones above all, can stop answering: every docker command runs with a
time limit (`buildtool.common.proc`), after which it is killed and the build fails in one line.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

from buildtool.common import BuildToolError, Watchdog, describe, run
from buildtool.image.oci import chain_ids

LOG_TAIL = 40
# Debian's docker.io client (20.10) carries BuildKit itself; newer clients need buildx.
FALLBACK_CLI = "/usr/bin/docker"
# Time limits, in seconds. Asking the client which it is (`docker buildx version`,
# `docker version`): an answer takes well under a second, even from a remote engine.
PROBE_TIMEOUT = 30
# A docker command that asks or tells the engine something small (`image inspect`).
DOCKER_TIMEOUT = 5 * 60
# One `docker build` (a system stage): apt under qemu for arm64 takes minutes; an hour
# means it hangs.
BUILD_TIMEOUT = 60 * 60


@functools.cache
def docker_cli() -> str:
    """The docker client to use: $DOCKER_CLI, else `docker` if it can build with BuildKit."""
    if os.environ.get("DOCKER_CLI"):
        return os.environ["DOCKER_CLI"]
    docker = shutil.which("docker")
    if docker is None:
        raise BuildToolError("no docker CLI on PATH; install docker.io and start dockerd")
    probe = run([docker, "buildx", "version"], capture_output=True, timeout=PROBE_TIMEOUT)
    if probe.returncode != 0 and Path(FALLBACK_CLI).exists():
        legacy = run(
            [FALLBACK_CLI, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
        if legacy.stdout.startswith("20."):
            return FALLBACK_CLI
    return docker


def engine_available() -> bool:
    """Whether a Docker engine answers the client (`docker version`) within the probe's
    limit: where `--image-tests auto` runs a pair's image tests."""
    try:
        probe = run(
            [docker_cli(), "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=PROBE_TIMEOUT,
        )
    except BuildToolError:  # no docker CLI, or no answer in time
        return False
    return probe.returncode == 0


def docker(*args: str, input: bytes | None = None, timeout: float = DOCKER_TIMEOUT) -> bytes:
    """Run the docker CLI; a failure names the command and what the engine said, a command
    still running after `timeout` seconds is killed (CommandTimeout)."""
    result = run(
        [docker_cli(), *args], input=input, capture_output=True, env=_env(), timeout=timeout
    )
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        raise BuildToolError(
            f"docker {args[0]} failed (exit {result.returncode}): "
            + (said[-1] if said else "no message")
        )
    return result.stdout


def held_layer_chains() -> frozenset[str]:
    """The chain IDs of every layer stack the engine's images hold: one `image ls` and one
    `image inspect`, however many images there are."""
    ids = sorted(set(docker("image", "ls", "--quiet", "--no-trunc").decode().split()))
    if not ids:
        return frozenset()
    stacks = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", *ids)
    held: set[str] = set()
    for line in stacks.decode().splitlines():
        held.update(chain_ids(json.loads(line) or []))
    return frozenset(held)


def local_tags() -> dict[str, str]:
    """Every tag the engine has, and the id of the image under it."""
    listing = docker("image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    tags = {}
    for line in listing.decode().splitlines():
        tag, _, image_id = line.rpartition(" ")
        if not tag.endswith(":<none>"):
            tags[tag] = image_id
    return tags


def _env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def run_logged(command: list[str], log: Path, echo: bool, timeout: float = BUILD_TIMEOUT) -> None:
    """Run a docker command, its output to `log` (and the terminal when `echo`); on failure
    the error carries the log's last lines. After `timeout` seconds the command (its whole
    process group) is killed and CommandTimeout raised."""
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(),
                start_new_session=True,
            )
        except FileNotFoundError:
            raise BuildToolError(f"{command[0]}: not found") from None
        assert process.stdout is not None
        with process, Watchdog(process, timeout, describe(command)) as watchdog:
            for line in process.stdout:
                out.write(line)
                tail.append(line)
                if echo:
                    sys.stdout.write(line)
            code = process.wait()
    watchdog.check()
    if code != 0:
        raise BuildToolError(
            f"docker {command[1]} failed (exit {code}); last lines of {log}:\n" + "".join(tail)
        )
