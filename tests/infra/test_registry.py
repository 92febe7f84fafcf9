"""The local registry: the stored credentials log in and push, others are refused."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devsupport.dockercli import DockerCommandFailed, docker
from devsupport.localregistry import (
    RegistryCredentials,
    RegistryUnavailable,
    credentials_file,
    docker_login,
    read_credentials,
    registry_credentials,
)

pytestmark = [pytest.mark.registry, pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def credentials() -> RegistryCredentials:
    return registry_credentials()


def test_credentials_file_is_private_and_complete(credentials: RegistryCredentials) -> None:
    assert credentials_file().stat().st_mode & 0o077 == 0
    assert credentials.registry.startswith("127.0.0.1:")
    assert credentials.user == "ci"
    assert len(credentials.password) >= 24
    assert credentials.password not in repr(credentials)


def test_missing_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailable, match="machine-setup.sh"):
        read_credentials(tmp_path / "credentials.env")


def test_login_with_stored_credentials(credentials: RegistryCredentials, tmp_path: Path) -> None:
    docker_login(credentials, tmp_path)
    auths = json.loads((tmp_path / "config.json").read_text())["auths"]
    assert credentials.registry in auths


def test_wrong_password_is_refused(credentials: RegistryCredentials, tmp_path: Path) -> None:
    wrong = dataclasses.replace(credentials, password=credentials.password[::-1])
    with pytest.raises(DockerCommandFailed, match="401 Unauthorized"):
        docker_login(wrong, tmp_path)
    assert wrong.v2_status() == 401


def test_anonymous_requests_are_refused(credentials: RegistryCredentials) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{credentials.registry}/v2/", timeout=5)
    assert refused.value.code == 401


def test_push_and_read_back_the_manifest(credentials: RegistryCredentials, tmp_path: Path) -> None:
    docker_login(credentials, tmp_path)
    reference = f"infra-test/tiny:{tmp_path.name}"
    tag = f"{credentials.registry}/{reference}"
    docker("import", "-", tag, input=_one_file_rootfs())
    try:
        docker("push", tag, env={**os.environ, "DOCKER_CONFIG": str(tmp_path)})
    finally:
        docker("rmi", tag)
    repository, _, name = reference.partition(":")
    request = urllib.request.Request(
        f"http://{credentials.registry}/v2/{repository}/manifests/{name}",
        headers={"Authorization": credentials.authorization(), "Accept": MANIFEST_V2},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    assert len(manifest["layers"]) == 1


def _one_file_rootfs() -> bytes:
    data = b"daskhub-images registry test\n"
    info = tarfile.TarInfo("hello.txt")
    info.size = len(data)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
