"""The local distribution registry started by scripts/machine-setup.sh: its credentials,
for the tests and the benchmarks."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devsupport.dockercli import docker

DEFAULT_STATE_DIR = Path("/var/lib/daskhub-images")


class RegistryUnavailable(RuntimeError):
    """The registry or its credentials are missing; run scripts/machine-setup.sh."""


@dataclass(frozen=True)
class RegistryCredentials:
    registry: str  # host:port
    user: str
    password: str = field(repr=False)

    def authorization(self) -> str:
        """The value of an HTTP Authorization header for these credentials."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def v2_status(self, timeout: float = 5.0) -> int:
        """HTTP status of GET /v2/ with these credentials (raises URLError if nothing answers)."""
        request = urllib.request.Request(
            f"http://{self.registry}/v2/", headers={"Authorization": self.authorization()}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


def credentials_file() -> Path:
    state = Path(os.environ.get("DASKHUB_STATE_DIR", DEFAULT_STATE_DIR))
    return state / "registry" / "credentials.env"


def read_credentials(path: Path | None = None) -> RegistryCredentials:
    """Parse credentials.env (REGISTRY=, REGISTRY_USER=, REGISTRY_PASSWORD=)."""
    path = path or credentials_file()
    if not path.is_file():
        raise RegistryUnavailable(f"{path} is missing; run scripts/machine-setup.sh")
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    try:
        return RegistryCredentials(
            values["REGISTRY"], values["REGISTRY_USER"], values["REGISTRY_PASSWORD"]
        )
    except KeyError as missing:
        raise RegistryUnavailable(f"{path} has no {missing.args[0]}") from None


def registry_credentials(path: Path | None = None) -> RegistryCredentials:
    """The stored credentials, checked against the running registry."""
    credentials = read_credentials(path)
    try:
        status = credentials.v2_status()
    except OSError as error:
        raise RegistryUnavailable(
            f"no registry answers at {credentials.registry} ({error}); run scripts/machine-setup.sh"
        ) from None
    if status != 200:
        raise RegistryUnavailable(
            f"the registry at {credentials.registry} refuses the stored credentials "
            f"(HTTP {status}); run scripts/machine-setup.sh"
        )
    return credentials


def docker_login(credentials: RegistryCredentials, docker_config: Path) -> None:
    """`docker login` with the password on stdin, into a separate docker config folder.

    Raises DockerCommandFailed when the registry refuses.
    """
    docker(
        "login",
        "--username",
        credentials.user,
        "--password-stdin",
        credentials.registry,
        input=credentials.password.encode(),
        env={**os.environ, "DOCKER_CONFIG": str(docker_config)},
    )
