"""Faults in the nightly, injected for real, and builds on another engine.

- A registry process of its own is killed (SIGKILL) in the middle of a push: nothing is
  tagged; restarted, the rerun completes and sends only the blobs that were missing.
- `buildtool plan` against it, with e2e published, lists exactly the other seeds, at one
  manifest request per image.
- A second dockerd, reached through DOCKER_HOST as a remote builder is, builds and tests
  the pair; killed during a build, it gives one clear error, and once restarted the
  next run builds cleanly.
- A registry that redirects blob requests to other storage: the storage never receives
  our Authorization header.
Nothing here skips: a missing engine or registry binary fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.publish import Credentials, Registry, fetch_sboms
from compat.vocabulary import ROLES
from devsupport import REPO
from devsupport.buildtool_cli import buildtool
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.localregistry import RegistryCredentials, registry_credentials
from devsupport.servers import BlobStorage, DockerEngine, FrontProxy, RegistryProcess
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]
SEEDS = ("e2e", "ml", "physlite", "pyhep")


@pytest.fixture(scope="module")
def site(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every seed spec and its committed lock, in a site folder of its own."""
    require_docker()
    work = tmp_path_factory.mktemp("faults")
    shutil.copytree(REPO / "environments", work / "environments")
    result = buildtool("lock", "e2e", "--channel", standin.channel, cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "standin": standin, "credentials": registry_credentials()}


def _publish(site: dict, registry: str, *extra: str) -> subprocess.Popen[str]:
    c: RegistryCredentials = site["credentials"]
    command = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "publish",
        "e2e",
        "--registry",
        registry,
        "--base-image",
        site["standin"].base_image,
        *extra,
    ]
    env = {**os.environ, "REGISTRY_USER": c.user, "REGISTRY_PASSWORD": c.password}
    return subprocess.Popen(
        command,
        cwd=site["work"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    registry = RegistryProcess(tmp_path_factory.mktemp("registry"))
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def front(own_registry: RegistryProcess) -> Iterator[FrontProxy]:
    """The registry of its own, reached through a proxy that counts the requests."""
    proxy = FrontProxy(own_registry.address)
    yield proxy
    proxy.close()


def test_registry_killed_mid_push_tags_nothing_and_the_rerun_sends_the_rest(
    site: dict, own_registry: RegistryProcess, front: FrontProxy
) -> None:
    namespace = f"{front.address}/faults"
    c: RegistryCredentials = site["credentials"]
    client = Registry(front.address, Credentials(c.user, c.password))
    try:
        publishing = _publish(site, namespace)
        while own_registry.blobs() < 3:  # some blobs are in, the push goes on
            assert publishing.poll() is None, publishing.communicate()
            time.sleep(0.05)
        own_registry.kill()
        out, err = publishing.communicate(timeout=300)
        assert publishing.returncode == 1, out + err
        assert "cannot reach the registry" in err
        stored = own_registry.blobs()

        own_registry.start()
        render = json.loads((site["work"] / "build" / "e2e" / "render.json").read_text())
        for role in ROLES:
            name = render[role]["repository"].split("/", 1)[1]
            assert client.manifest_digest(name, render["content_tag"]) is None  # untagged

        rerun = _publish(site, namespace)
        out, err = rerun.communicate(timeout=900)
        assert rerun.returncode == 0, out[-3000:] + err[-3000:]
        published = json.loads((site["work"] / "build" / "e2e" / "published.json").read_text())
        sent = published["bytes_pushed"]
        total = _blob_bytes(client, published)
        assert 0 < sent < total, (sent, total)  # what was stored before is not sent again
        assert own_registry.blobs() > stored
    finally:
        remove_local_tags(namespace + "/")


def _blob_bytes(client: Registry, published: dict) -> int:
    sizes = {}
    for role in ROLES:
        image = published["images"][role]
        name = image["repository"].split("/", 1)[1]
        manifest = json.loads(client.get_manifest(name, image["digest"]) or "{}")
        for blob in [manifest["config"], *manifest["layers"]]:
            sizes[blob["digest"]] = blob["size"]
    return sum(sizes.values())


def test_plan_lists_what_is_not_published_one_request_per_image(
    site: dict, front: FrontProxy
) -> None:
    """After the test above, e2e is published in the registry of its own."""
    c: RegistryCredentials = site["credentials"]
    env = {**os.environ, "REGISTRY_USER": c.user, "REGISTRY_PASSWORD": c.password}
    front.reset()
    result = buildtool(
        "plan",
        *SEEDS,
        "--registry",
        f"{front.address}/faults",
        "--base-image",
        site["standin"].base_image,
        cwd=site["work"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)
    assert [e["environment"] for e in planned["include"]] == ["ml", "physlite", "pyhep"]
    assert all(e["platforms"] == "linux-64" and e["content_tag"] for e in planned["include"])
    # e2e: its two images; each other seed: its worker, missing; one more: the login.
    assert front.requests == 2 + 3 + 1


@pytest.fixture(scope="module")
def engine(site: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    second = DockerEngine(Path(f"/tmp/dockerd-{uuid.uuid4().hex[:8]}"))  # a short socket path
    try:
        second.adopt(site["standin"].base_image)
        yield second
    finally:
        second.stop()


def _build(site: dict, engine: DockerEngine) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "build",
        "e2e",
        "--registry",
        "localhost/remote",
        "--base-image",
        site["standin"].base_image,
    ]
    return subprocess.Popen(
        command,
        cwd=site["work"],
        env=engine.env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_engine_killed_mid_build_fails_clearly_and_the_next_run_builds(
    site: dict, engine: DockerEngine
) -> None:
    building = _build(site, engine)
    assert building.stderr is not None
    for line in building.stderr:  # progress is logged on stderr
        if "system stage" in line:  # BuildKit is at work on the second engine
            time.sleep(1)
            engine.kill()
            break
    out, err = building.communicate(timeout=300)
    assert building.returncode == 1, out + err
    (said,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert said.startswith("error: docker") and "failed" in said, err

    engine.start()
    rebuilt = _build(site, engine)
    out, err = rebuilt.communicate(timeout=900)
    assert rebuilt.returncode == 0, out[-3000:] + err[-3000:]
    render = json.loads((site["work"] / "build" / "e2e" / "render.json").read_text())
    for role in ROLES:
        ref = f"{render[role]['repository']}:{render['content_tag']}"
        assert engine.docker("image", "inspect", ref, check=False).returncode == 0, ref
        # built there, not on the suite's engine
        local = docker("image", "inspect", ref, check=False)
        assert local.returncode != 0, ref
    tested = buildtool("test", "e2e", cwd=site["work"], env=engine.env())
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]


def test_blob_redirects_never_carry_our_credentials(site: dict) -> None:
    """Pushes and SBOM fetches through a registry whose blob requests redirect to storage
    (as Artifact Registry and S3-backed registries do)."""
    c: RegistryCredentials = site["credentials"]
    storage = BlobStorage(c.registry, c)
    front = FrontProxy(c.registry, redirect_to=storage.url)
    namespace = f"{front.address}/r{uuid.uuid4().hex[:8]}"
    try:
        publishing = _publish(site, namespace)
        out, err = publishing.communicate(timeout=900)
        assert publishing.returncode == 0, out[-3000:] + err[-3000:]
        published = json.loads((site["work"] / "build" / "e2e" / "published.json").read_text())
        client = Registry(front.address, Credentials(c.user, c.password))
        image = published["images"]["worker"]
        (subject,) = image["platforms"].values()
        (document,) = fetch_sboms(client, image["repository"].split("/", 1)[1], subject)
        assert json.loads(document)["metadata"]["component"]["version"] == image["digest"]
    finally:
        front.close()
        storage.close()
        remove_local_tags(namespace + "/")
    assert storage.authorizations, "no blob request was redirected"
    assert set(storage.authorizations) == {None}
