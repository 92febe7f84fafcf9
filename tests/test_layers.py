"""Package-layered, bit-reproducible pairs: the e2e pair built twice from nothing.

Between the two builds the images, the system stages, BuildKit's cache (apt's cache
mounts included), the layer store and the package cache are all removed, so the second
build shares nothing with the first but the lock, the base image and the stand-in.
Nothing here skips: a missing engine fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from buildtool.build import BuiltPair
from buildtool.layers import MAX_LAYERS
from buildtool.oci import BlobStore
from buildtool.render import RenderedPair
from compat.vocabulary import ROLES
from devsupport.cli import buildtool, locked_site
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.standin import StandIn

pytestmark = pytest.mark.docker
REGISTRY = "localhost/layers-test"
# What no layer may keep: apt's lists and archives, logs, caches.
LEFTOVERS = (
    "var/lib/apt/lists/",
    "var/cache/apt/",
    "var/log/apt/",
    "home/jovyan/.cache/",
    "root/.cache/",
    "var/cache/ldconfig/aux-cache",
)


def _build(work: Path, standin: StandIn, cache: Path) -> dict:
    """`buildtool build e2e` from nothing; the digests of what it made."""
    env = {**os.environ, "DASKHUB_CACHE": str(cache)}
    result = buildtool(
        "build",
        "e2e",
        "--registry",
        REGISTRY,
        "--base-image",
        standin.base_image,
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pair = RenderedPair.load(work / "build", "e2e")
    built = BuiltPair.load(pair)
    store = BlobStore(work / "build" / ".store")
    digests = {}
    for role in ROLES:
        image = built.images["linux-64"][role]
        blobs = store.gzip_blobs([layer.diff_id for layer in image.layers])
        engine = json.loads(docker("image", "inspect", pair.image(role).ref).stdout)[0]
        digests[role] = {
            "manifest": image.manifest(blobs).digest,
            "image id": engine["Id"],
            "layers": engine["RootFS"]["Layers"],
            "blobs": [blobs[layer.diff_id].digest for layer in image.layers],
        }
    return {
        "pair": pair,
        "built": built,
        "store": store,
        "digests": digests,
        "work": work,
        "cache": cache,
        "log": result.stderr,
    }


def _forget_everything(work: Path, cache: Path) -> None:
    remove_local_tags(REGISTRY + "/")
    remove_local_tags("buildtool-system/e2e:")
    docker("builder", "prune", "-af")
    shutil.rmtree(work / "build")
    shutil.rmtree(cache)


@pytest.fixture(scope="module")
def twice(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    require_docker()
    work = tmp_path_factory.mktemp("layers")
    locked_site(work, standin.channel)
    cache = tmp_path_factory.mktemp("cache-1")
    first = _build(work, standin, cache)
    first["layer files"] = {
        layer.diff_id: _files(first["store"], layer.diff_id)
        for image in first["built"].images["linux-64"].values()
        for layer in image.layers
    }
    _forget_everything(work, cache)
    second = _build(work, standin, tmp_path_factory.mktemp("cache-2"))
    yield [first, second]
    remove_local_tags(REGISTRY + "/")


def _files(store: BlobStore, diff_id: str) -> list[str]:
    """What a layer holds, folders left out."""
    with tarfile.open(store.layer_path(diff_id)) as tar:
        return [m.name.removeprefix("./") for m in tar.getmembers() if not m.isdir()]


def test_a_rebuild_with_nothing_changed_sends_the_engine_no_layer(
    twice: list[dict], standin: StandIn
) -> None:
    second = twice[1]
    again = _build(second["work"], standin, second["cache"])
    assert "sent the engine 0.0 MB of layers" in again["log"], again["log"][-2000:]
    for role in ROLES:
        assert again["digests"][role]["image id"] == second["digests"][role]["image id"]


def test_two_clean_builds_give_identical_digests(twice: list[dict]) -> None:
    first, second = (build["digests"] for build in twice)
    for role in ROLES:
        assert first[role]["layers"] == second[role]["layers"], role
        assert first[role]["image id"] == second[role]["image id"], role
        assert first[role]["manifest"] == second[role]["manifest"], role


def test_layer_limit_and_no_repeated_layer(twice: list[dict]) -> None:
    digests = twice[0]["digests"]
    for role in ROLES:
        layers, blobs = digests[role]["layers"], digests[role]["blobs"]
        assert len(layers) <= MAX_LAYERS
        assert len(set(layers)) == len(layers) and len(set(blobs)) == len(blobs)
    worker, notebook = digests["worker"]["layers"], digests["notebook"]["layers"]
    assert notebook[: len(worker)] == worker  # the notebook is the worker plus layers
    assert len(worker) > 10  # by package, not one environment layer


def test_each_package_and_its_record_share_a_layer(twice: list[dict]) -> None:
    files = twice[0]["layer files"]
    prefix = "srv/conda/envs/notebook/"
    by_member = {name: diff for diff, names in files.items() for name in names}
    for image in twice[0]["built"].images["linux-64"].values():
        for layer in image.layers:
            if not layer.created_by.startswith("conda: "):
                continue
            for package in layer.created_by.removeprefix("conda: ").split(", "):
                name, version, build = package.split(" ")
                record = f"{prefix}conda-meta/{name}-{version}-{build}.json"
                assert by_member[record] == layer.diff_id, record


def test_no_layer_keeps_caches_or_apt_lists(twice: list[dict]) -> None:
    for diff_id, names in twice[0]["layer files"].items():
        kept = [n for n in names if n.startswith(LEFTOVERS)]
        assert not kept, (diff_id, kept[:5])
