"""The package cache holds each package under the sha256 its lock names, with real builds.

The stand-in gives numpy 2.4.6 the build string `py311_0` on linux-64 and on
linux-aarch64, so py-rattler's own cache (one folder per name-version-build) handed the
aarch64 numpy to the linux-64 build after a killed extraction. Here the e2e pair is
built for each platform, from one base, on one shared cache: both at once, then one
after the other, then with a linux-64 build killed while it extracts numpy, then with
the aarch64 numpy planted where the linux-64 one belongs. Every linux-64 image holds the
x86-64 numpy, and every build of one lock gives the same images, which passed their
image tests. Nothing here skips: a missing engine or qemu fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from buildtool.image import MARKER, VIEWS, BlobStore, BuiltPair, Facts, RenderedPair
from buildtool.lock import read_lock
from devsupport.buildtool_cli import buildtool, locked_site
from devsupport.dockercli import remove_local_tags, require_docker
from devsupport.standin import StandIn

pytestmark = pytest.mark.docker
PLATFORMS = ("linux-64", "linux-aarch64")
# ELF e_machine of each platform's shared objects.
MACHINE = {"linux-64": 62, "linux-aarch64": 183}
NUMPY_SO = "/numpy/_core/_multiarray_umath.cpython-311-"


def _registry(platform: str) -> str:
    return f"localhost/pkgcache-{platform}"


@pytest.fixture(scope="module")
def sites(standin_multiarch: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The e2e spec locked for one platform each, against the same stand-in."""
    require_docker()
    works = {}
    for platform in PLATFORMS:
        work = tmp_path_factory.mktemp(f"pkgcache-{platform}")
        locked_site(work, standin_multiarch.channel, extra=f"platforms: [{platform}]\n")
        works[platform] = work
    yield {"work": works, "standin": standin_multiarch, "images": {}}
    remove_local_tags(*(_registry(p) + "/" for p in PLATFORMS))


def _start(sites: dict, platform: str, cache: Path) -> subprocess.Popen[str]:
    """`buildtool build e2e` for `platform` on the shared `cache`, in a session of its own
    (so a test can kill the whole build). The site's layer store goes first: it keeps
    layers by their packages' sha256, and a build that finds them all installs nothing."""
    shutil.rmtree(sites["work"][platform] / "build" / ".store", ignore_errors=True)
    command = [sys.executable, "-m", "buildtool.cli", "build", "e2e"]
    command += ["--registry", _registry(platform), *sites["standin"].image_flags]
    return subprocess.Popen(
        command,
        cwd=sites["work"][platform],
        env={**os.environ, "DASKHUB_CACHE": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(build: subprocess.Popen[str]) -> str:
    stdout, stderr = build.communicate(timeout=1200)
    assert build.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return stderr


def _built(sites: dict, platform: str) -> tuple[dict[str, str], int]:
    """The image ids of the pair built for `platform`, and the ELF machine of the numpy
    extension module in its worker image's layers."""
    work = sites["work"][platform]
    pair = RenderedPair.load(work / "build", "e2e")
    image = BuiltPair.load(pair).images[platform]
    store = BlobStore(work / "build" / ".store")
    machines = set()
    for layer in image["worker"].layers:
        with tarfile.open(store.layer_path(layer.diff_id)) as tar:
            for member in tar:
                if NUMPY_SO in member.name and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    machines.add(int.from_bytes(handle.read(20)[18:20], "little"))
    assert len(machines) == 1, machines
    ids = {role: built.image_id for role, built in image.items()}
    return ids, machines.pop()


def _numpy(sites: dict, platform: str) -> Facts:
    lock = read_lock(sites["work"][platform] / "environments" / "e2e" / "conda-lock.yml")
    (numpy,) = [p for p in lock.packages("worker", platform) if p.name == "numpy"]
    build = numpy.url.rsplit("/", 1)[-1].removesuffix(".conda").rsplit("-", 1)[-1]
    return Facts(numpy.hash.sha256, platform, "numpy", numpy.version, build)


def test_two_platforms_at_once_on_one_cache(sites: dict, tmp_path: Path) -> None:
    numpy = {p: _numpy(sites, p) for p in PLATFORMS}
    assert numpy["linux-64"].dist == numpy["linux-aarch64"].dist  # what broke the old cache
    assert numpy["linux-64"].sha256 != numpy["linux-aarch64"].sha256
    cache = tmp_path / "cache"
    builds = {p: _start(sites, p, cache) for p in PLATFORMS}
    for build in builds.values():
        _finish(build)
    for platform in PLATFORMS:
        ids, machine = _built(sites, platform)
        assert machine == MACHINE[platform], platform
        sites["images"][platform] = ids
        work = sites["work"][platform]
        tested = buildtool("test", "e2e", cwd=work)
        assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    entries = cache / "build" / "pkgs"
    for platform in PLATFORMS:
        assert (entries / numpy[platform].sha256 / numpy[platform].dist).is_dir()


def test_two_platforms_one_after_the_other(sites: dict, tmp_path: Path) -> None:
    """After the test above: on a new cache, aarch64 first, then linux-64, give the
    images the builds at once gave (which passed their image tests)."""
    cache = tmp_path / "cache"
    for platform in ("linux-aarch64", "linux-64"):
        _finish(_start(sites, platform, cache))
        ids, machine = _built(sites, platform)
        assert machine == MACHINE[platform]
        assert ids == sites["images"][platform], platform


def _kill_while_extracting(build: subprocess.Popen[str], cache: Path, dist: str) -> None:
    """SIGKILL the build's whole session once py-rattler is extracting `dist` (its
    half-made folder, `.<dist><random>`, in the install's view)."""
    views = cache / "build" / "pkgs" / VIEWS
    deadline = time.monotonic() + 600
    while not any(views.glob(f"*/.{dist}?*")):
        assert build.poll() is None, "the build ended before it extracted " + dist
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(build.pid, signal.SIGKILL)
    build.communicate()


def test_a_build_killed_while_extracting_then_built_again(sites: dict, tmp_path: Path) -> None:
    """The issue's steps: the aarch64 pair built (the cache holds its numpy), the linux-64
    build killed while it extracts its numpy, then built again: the locked numpy."""
    cache = tmp_path / "cache"
    _finish(_start(sites, "linux-aarch64", cache))
    numpy = _numpy(sites, "linux-64")
    _kill_while_extracting(_start(sites, "linux-64", cache), cache, numpy.dist)
    assert not (cache / "build" / "pkgs" / numpy.sha256).exists()
    _finish(_start(sites, "linux-64", cache))
    ids, machine = _built(sites, "linux-64")
    assert machine == MACHINE["linux-64"]
    assert ids == sites["images"]["linux-64"]
    assert not list((cache / "build" / "pkgs" / VIEWS).iterdir())  # the killed view is gone


def test_a_package_planted_under_the_locked_name_is_never_installed(
    sites: dict, tmp_path: Path
) -> None:
    """The aarch64 numpy put where the linux-64 one is kept, its record forged to name
    linux-64, and in py-rattler's own layout beside it: the build fetches the locked
    archive again, and the image is the one the lock gives."""
    cache = tmp_path / "cache"
    for platform in PLATFORMS:
        _finish(_start(sites, platform, cache))
    pkgs = cache / "build" / "pkgs"
    linux, aarch64 = _numpy(sites, "linux-64"), _numpy(sites, "linux-aarch64")
    planted = pkgs / linux.sha256
    shutil.rmtree(planted)
    shutil.copytree(pkgs / aarch64.sha256, planted, symlinks=True)
    (planted / MARKER).write_text(json.dumps(asdict(linux)))
    shutil.copytree(pkgs / aarch64.sha256 / aarch64.dist, pkgs / linux.dist, symlinks=True)
    # No staging prefix (and, as for every build here, no layer store): numpy must come
    # from the cache.
    shutil.rmtree(cache / "build" / "stages")
    log = _finish(_start(sites, "linux-64", cache))
    assert f"fetching {linux.dist} again" in log and "linux-aarch64" in log
    ids, machine = _built(sites, "linux-64")
    assert machine == MACHINE["linux-64"]
    assert ids == sites["images"]["linux-64"]
    index = json.loads((planted / linux.dist / "info" / "index.json").read_text())
    assert index["subdir"] == "linux-64"
