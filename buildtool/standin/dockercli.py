"""Thin helpers around the docker command line, failing loudly when the engine is missing."""

from __future__ import annotations

import shutil
import subprocess

from buildtool.errors import BuildToolError
from buildtool.proc import CommandTimeout, run

# Time limits, in seconds. `docker info`: an engine that answers does so at once.
INFO_TIMEOUT = 30
# Any other command: pulls, pushes, `docker run` of a test's container; past half an hour
# it hangs.
DOCKER_TIMEOUT = 30 * 60


class DockerUnavailable(BuildToolError):
    """The docker CLI or engine cannot be used; run scripts/machine-setup.sh."""


class DockerCommandFailed(BuildToolError):
    """A docker command exited non-zero; the message carries its stderr."""


def require_docker() -> None:
    """Raise DockerUnavailable unless the CLI exists and the engine answers."""
    if shutil.which("docker") is None:
        raise DockerUnavailable("the docker CLI is not installed; run scripts/machine-setup.sh")
    try:
        probe = run(["docker", "info"], capture_output=True, text=True, timeout=INFO_TIMEOUT)
    except CommandTimeout as timeout:
        raise DockerUnavailable(
            f"the Docker engine does not answer ({timeout}); run scripts/machine-setup.sh"
        ) from None
    if probe.returncode != 0:
        raise DockerUnavailable(
            "the Docker engine does not answer (`docker info` failed); "
            f"run scripts/machine-setup.sh\n{probe.stderr.strip()}"
        )


def docker(
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = DOCKER_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `docker ARGS` with output captured; raise DockerCommandFailed on failure if check,
    CommandTimeout if it runs longer than `timeout` seconds."""
    result = run(["docker", *args], input=input, capture_output=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise DockerCommandFailed(f"docker {' '.join(args)} exited {result.returncode}:\n{stderr}")
    return result


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def remove_local_tags(prefix: str) -> None:
    """Untag every local image whose repository starts with `prefix` (layers stay cached)."""
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    refs = [ref for ref in listing.split() if ref.startswith(prefix)]
    if refs:
        docker("rmi", *refs, check=False)
