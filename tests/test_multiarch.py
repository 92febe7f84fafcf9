"""Multi-arch pairs: the e2e spec with `platforms: [linux-64, linux-aarch64]`, one lock.

One `buildtool publish` builds both platforms (the aarch64 system steps under qemu, the
aarch64 environment laid out on this x86 host), runs every image test, the real pair test
included, on both, and pushes an OCI index per image. A node pulling the worker's index
for linux/arm64 gets an aarch64 interpreter. An aarch64 platform whose image tests fail
leaves no index tagged, and the earlier tags where they were.
Nothing here skips: a missing engine, registry or qemu fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.image import OCI_INDEX
from buildtool.publish import Credentials, Registry, split_reference
from compat.vocabulary import ROLES
from devsupport.buildtool_cli import buildtool, locked_site
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.localregistry import RegistryCredentials, docker_login, registry_credentials
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]
PLATFORMS = "platforms: [linux-64, linux-aarch64]\n"


@pytest.fixture(scope="module")
def site(standin_multiarch: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    require_docker()
    work = tmp_path_factory.mktemp("multiarch")
    locked_site(work, standin_multiarch.channel, extra=PLATFORMS)
    credentials = registry_credentials()
    registry = f"{credentials.registry}/m{uuid.uuid4().hex[:10]}"
    yield {
        "work": work,
        "standin": standin_multiarch,
        "credentials": credentials,
        "registry": registry,
    }
    remove_local_tags(registry + "/")


def _publish(site: dict, *images: str) -> subprocess.CompletedProcess[str]:
    c: RegistryCredentials = site["credentials"]
    command = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "publish",
        "e2e",
        "--registry",
        site["registry"],
        *images,
    ]
    env = {**os.environ, "REGISTRY_USER": c.user, "REGISTRY_PASSWORD": c.password}
    return subprocess.run(command, cwd=site["work"], env=env, capture_output=True, text=True)


def test_one_lock_two_platforms(site: dict) -> None:
    lock = (site["work"] / "environments" / "e2e" / "conda-lock.yml").read_text()
    assert "  - linux-64\n  - linux-aarch64\n" in lock
    assert "/conda-forge/linux-aarch64/python-3.11.2-h0_debian.conda" in lock
    # linux-64 has 3.11.7 too, but one client must match both worker sets: the lock takes
    # the newest Python (and dask, distributed) that both platforms have.
    assert "/conda-forge/linux-64/python-3.11.2-h0_debian.conda" in lock


def test_one_command_publishes_a_pair_of_indexes(site: dict, tmp_path: Path) -> None:
    result = _publish(site, *site["standin"].image_flags)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # Both platforms' image tests ran, the real pair test among them.
    work = site["work"] / "build" / "e2e"
    for platform in ("linux-64", "linux-aarch64"):
        report = (work / platform / "image-tests.xml").read_text()
        assert 'failures="0"' in report and "test_real_pair_scheduler_worker_and_client" in report
    assert "system stages" in result.stderr and "(BuildKit, emulated)" in result.stderr
    published = json.loads((work / "published.json").read_text())
    c: RegistryCredentials = site["credentials"]
    registry = Registry(c.registry, Credentials(c.user, c.password))
    for role in ROLES:
        image = published["images"][role]
        assert set(image["platforms"]) == {"linux-64", "linux-aarch64"}
        _, name = split_reference(image["repository"])
        index = json.loads(registry.get_manifest(name, image["digest"]) or "{}")
        assert index["mediaType"] == OCI_INDEX
        listed = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
        assert listed == {
            "amd64": image["platforms"]["linux-64"],
            "arm64": image["platforms"]["linux-aarch64"],
        }
        assert registry.manifest_digest(name, published["content_tag"]) == image["digest"]
    # The Helm values name the indexes.
    values = buildtool("helm-values", "--output", tmp_path / "values.yaml", cwd=site["work"])
    assert values.returncode == 0, values.stderr
    text = (tmp_path / "values.yaml").read_text()
    assert published["images"]["notebook"]["ref"] in text

    # A node pulls the worker's index for linux/arm64, by digest, and runs aarch64 Python.
    config = tmp_path / "docker-config"
    docker_login(c, config)
    ref = published["images"]["worker"]["ref"]
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    docker("pull", "--platform", "linux/arm64", ref, env=env)
    machine = docker(
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        ref,
        "python",
        "-c",
        "import platform; print(platform.machine())",
        env=env,
    )
    assert machine.stdout.decode().strip() == "aarch64"


def test_a_failing_arm64_image_test_tags_nothing(site: dict, tmp_path: Path) -> None:
    """An arm64 base image without `tini` (dpkg still lists it, so apt leaves it be): the
    aarch64 images cannot start, their image tests fail, and no tag moves."""
    before = json.loads((site["work"] / "build" / "e2e" / "published.json").read_text())
    broken = f"local/broken-arm64:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {site['standin'].base_image_aarch64}\nRUN rm /usr/bin/tini\n"
    )
    docker("build", "--platform", "linux/arm64", "-t", broken, str(tmp_path))
    spec = site["work"] / "environments" / "e2e" / "env.yaml"
    original = spec.read_text()
    spec.write_text(original + 'env: {CHANGED: "1"}\n')  # a new content tag
    try:
        result = _publish(
            site,
            "--base-image",
            site["standin"].base_image,
            "--base-image",
            f"linux-aarch64={broken}",
        )
    finally:
        spec.write_text(original)
        docker("image", "rm", broken, check=False)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "image tests failed for e2e on linux-aarch64" in result.stderr
    rendered = json.loads((site["work"] / "build" / "e2e" / "render.json").read_text())
    c: RegistryCredentials = site["credentials"]
    registry = Registry(c.registry, Credentials(c.user, c.password))
    for role in ROLES:
        _, name = split_reference(rendered[role]["repository"])
        assert registry.manifest_digest(name, rendered["content_tag"]) is None  # no index
        # the earlier content tag still points where it did
        earlier = registry.manifest_digest(name, before["content_tag"])
        assert earlier == before["images"][role]["digest"]
    after = json.loads((site["work"] / "build" / "e2e" / "published.json").read_text())
    assert after == before
