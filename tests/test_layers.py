"""Package-layered, bit-reproducible pairs: the e2e pair built twice from nothing, then
again with nothing changed, and with one package bumped.

The builds go to a Docker daemon of this module's own (`DockerEngine`), which starts
with nothing but the base image: a cold build is cold whatever the suite's engine holds
(`make demo` leaves the same layers there under other names), and nothing here cleans
the suite's engine. Between the two clean builds the images, the system stages,
BuildKit's cache (apt's cache mounts included), the layer store, the staging prefix and
the package cache are all removed, so the second build shares nothing with the first
but the lock, the base image and the stand-in. The build after a bump, which reuses
everything it can, must give the same images as a clean build of the new lock. Nothing
here skips: a missing engine fails.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.image import (
    MAX_LAYERS,
    STATS_FILE,
    BlobStore,
    BuiltPair,
    RenderedPair,
)
from compat.vocabulary import PARTIAL_LABEL, ROLES
from devsupport.buildtool_cli import buildtool, locked_site
from devsupport.dockercli import require_docker
from devsupport.servers import DockerEngine
from devsupport.standin import StandIn

pytestmark = pytest.mark.docker
REGISTRY = "localhost/layers-test"
# The older toolz the stand-in keeps (devsupport/standin/channel.py: OLDER).
TOOLZ_PIN = "dependencies:\n  - toolz <1.2\n"
# What no layer may keep: apt's lists and archives, logs, caches.
LEFTOVERS = (
    "var/lib/apt/lists/",
    "var/cache/apt/",
    "var/log/apt/",
    "home/jovyan/.cache/",
    "root/.cache/",
    "var/cache/ldconfig/aux-cache",
)


def _build(work: Path, standin: StandIn, cache: Path, engine: DockerEngine) -> dict:
    """`buildtool build e2e` on `engine`; the digests of what it made."""
    env = {**engine.env(), "DASKHUB_CACHE": str(cache)}
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
        held = json.loads(engine.docker("image", "inspect", pair.image(role).ref).stdout)[0]
        digests[role] = {
            "manifest": image.manifest(blobs).digest,
            "image id": held["Id"],
            "layers": held["RootFS"]["Layers"],
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
        "stats": json.loads((work / "build" / "e2e" / STATS_FILE).read_text()),
    }


def _forget_everything(work: Path, cache: Path, engine: DockerEngine) -> None:
    """Every image but the base, BuildKit's cache, the layer store and the caches."""
    listing = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    made = [ref for ref in listing.split() if ref.startswith((REGISTRY, "buildtool-system/"))]
    engine.docker("rmi", *made)
    engine.docker("image", "prune", "-f")
    engine.docker("builder", "prune", "-af")
    shutil.rmtree(work / "build")
    shutil.rmtree(cache)


@pytest.fixture(scope="module")
def engine(standin: StandIn) -> Iterator[DockerEngine]:
    """A daemon of this module's own, holding only the base image."""
    require_docker()
    cold = DockerEngine(Path(f"/tmp/dockerd-{uuid.uuid4().hex[:8]}"))  # a short socket path
    try:
        cold.adopt(standin.base_image)
        yield cold
    finally:
        cold.stop()


@pytest.fixture(scope="module")
def twice(
    standin: StandIn, engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> list[dict]:
    work = tmp_path_factory.mktemp("layers")
    locked_site(work, standin.channel)
    cache = tmp_path_factory.mktemp("cache-1")
    first = _build(work, standin, cache, engine)
    first["layer files"] = {
        layer.diff_id: _files(first["store"], layer.diff_id)
        for image in first["built"].images["linux-64"].values()
        for layer in image.layers
    }
    _forget_everything(work, cache, engine)
    second = _build(work, standin, tmp_path_factory.mktemp("cache-2"), engine)
    return [first, second]


def _files(store: BlobStore, diff_id: str) -> list[str]:
    """What a layer holds, folders left out."""
    with tarfile.open(store.layer_path(diff_id)) as tar:
        return [m.name.removeprefix("./") for m in tar.getmembers() if not m.isdir()]


def test_a_rebuild_with_nothing_changed_writes_installs_and_sends_nothing(
    twice: list[dict], standin: StandIn, engine: DockerEngine
) -> None:
    second = twice[1]
    assert second["stats"]["layers_sent"] > 0 and second["stats"]["system_built"]
    again = _build(second["work"], standin, second["cache"], engine)
    assert again["stats"] | {"seconds": 0} == {
        "seconds": 0,
        "layers": second["stats"]["layers"],
        "layers_written": 0,
        "bytes_written": 0,
        "layers_sent": 0,
        "bytes_sent": 0,
        "packages_installed": 0,
        "system_built": False,
    }, again["log"][-2000:]
    for role in ROLES:
        assert again["digests"][role]["image id"] == second["digests"][role]["image id"]
    # The images that carried parts of the chain into the engine are gone.
    partial = engine.docker("images", "-q", "--filter", f"label={PARTIAL_LABEL}").stdout
    assert not partial.strip()


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


def test_a_bump_rewrites_its_own_layers_and_equals_a_clean_build(
    twice: list[dict],
    standin: StandIn,
    engine: DockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """toolz moves back to its older release in the stand-in: the rebuild links one
    package into the staging prefix, writes the few layers that hold it or take its
    time, builds no system stage, and gives the images a clean build of that lock gives."""
    second = twice[1]
    work, root = second["work"], second["work"] / "environments"
    spec = root / "e2e" / "env.yaml"
    spec.write_text(spec.read_text().replace("extends: base\n", f"extends: base\n{TOOLZ_PIN}"))
    relock = buildtool("--root", root, "lock", "e2e", "--channel", standin.channel, cwd=work)
    assert relock.returncode == 0, relock.stderr
    bumped = _build(work, standin, second["cache"], engine)
    stats = bumped["stats"]
    assert stats["packages_installed"] == 1 and not stats["system_built"], stats
    assert 1 <= stats["layers_written"] <= 3, stats
    # The engine holds the layers under toolz's; those above it moved with their chain.
    assert 0 < stats["bytes_sent"] < second["stats"]["bytes_sent"], stats
    assert stats["layers_sent"] < stats["layers"], stats
    _forget_everything(work, second["cache"], engine)
    clean = _build(work, standin, tmp_path_factory.mktemp("cache-3"), engine)
    assert clean["stats"]["packages_installed"] > 100
    for role in ROLES:
        assert bumped["digests"][role] == clean["digests"][role], role
