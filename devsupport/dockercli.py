"""The docker command line for the tests, the benchmarks and the stand-in, failing loudly
when the engine is missing.

It runs the product's own client (`buildtool.image.engine.docker_cli`: $DOCKER_CLI, else a
`docker` that builds with BuildKit), with the same environment, so that a test talks to
the engine through the same docker as the build does. Unlike `buildtool.image.engine.docker`,
it hands back the whole result (exit code, stdout, stderr) and can leave a failure to
the caller (`check=False`).
"""

from __future__ import annotations

import os
import subprocess

from buildtool.common import BuildToolError, CommandTimeout, run
from buildtool.image import docker_cli

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
    try:
        docker_cli()
    except BuildToolError as missing:
        raise DockerUnavailable(f"{missing}; run scripts/machine-setup.sh") from None
    try:
        probe = docker("info", check=False, timeout=INFO_TIMEOUT)
    except CommandTimeout as timeout:
        raise DockerUnavailable(
            f"the Docker engine does not answer ({timeout}); run scripts/machine-setup.sh"
        ) from None
    if probe.returncode != 0:
        raise DockerUnavailable(
            "the Docker engine does not answer (`docker info` failed); "
            f"run scripts/machine-setup.sh\n{probe.stderr.decode(errors='replace').strip()}"
        )


def docker(
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = DOCKER_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `docker ARGS` with output captured; raise DockerCommandFailed on failure if check,
    CommandTimeout if it runs longer than `timeout` seconds. `env` replaces the process's
    environment (DOCKER_BUILDKIT=1 is added, as the build has it)."""
    result = run(
        [docker_cli(), *args],
        input=input,
        capture_output=True,
        env={**(os.environ if env is None else env), "DOCKER_BUILDKIT": "1"},
        timeout=timeout,
    )
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise DockerCommandFailed(f"docker {' '.join(args)} exited {result.returncode}:\n{stderr}")
    return result


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def remove_local_tags(*prefixes: str) -> None:
    """Untag every local image whose repository starts with one of `prefixes` (layers stay
    cached)."""
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    refs = [ref for ref in listing.split() if ref.startswith(prefixes)]
    if refs:
        docker("rmi", *refs, check=False)
