"""Shared fixtures: the stand-in, local solver channels, a scratch copy of `environments/`,
the HTTP servers a test starts. The helpers they use are in devsupport/."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from buildtool.lock import LAB_ENV
from devsupport import REPO
from devsupport import metadata_channel as metadata
from devsupport import standin as standin_module
from devsupport.dockercli import remove_local_tags
from devsupport.servers import RecordingServer
from devsupport.sitepair import PublishedSite, publish_site
from devsupport.solver_channel import build_channel
from devsupport.standin.server import ChannelRequestHandler

# The tests are the lab: their locks name the conda-forge stand-in on this machine, which
# buildtool refuses anywhere else (buildtool.lock.LAB_ENV).
os.environ[LAB_ENV] = "1"


@pytest.fixture(scope="session")
def solver_channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http:// URL of a channel holding every package the seed environments name, served
    on 127.0.0.1 as conda-forge is served (builds can only fetch from such URLs)."""
    channel = build_channel(tmp_path_factory.mktemp("solver") / "conda-forge")
    handler = functools.partial(ChannelRequestHandler, directory=str(channel.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/conda-forge"
    server.shutdown()


@pytest.fixture(scope="session")
def standin() -> standin_module.StandIn:
    """The conda-forge stand-in served over HTTP, and the linux-64 debootstrap base image
    (only that: the seed environments are linux-64 only)."""
    return standin_module.up()


@pytest.fixture(scope="session")
def standin_multiarch() -> standin_module.StandIn:
    """The stand-in with the linux-aarch64 base image too (debootstrapped under qemu the
    first time), for the multi-arch pairs."""
    return standin_module.up(platforms=("linux-64", "linux-aarch64"))


@pytest.fixture(scope="session")
def metadata_channel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """file:// URL of a repodata-only channel of real conda-forge records (from public
    conda-lock files; see devsupport/metadata_channel.py): for solving and locking, not
    installing."""
    return metadata.build_channel(tmp_path_factory.mktemp("metadata-channel")).as_uri()


@pytest.fixture
def envroot(tmp_path: Path) -> Path:
    """A scratch copy of the seed specs, without their committed locks."""
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root, ignore=shutil.ignore_patterns("conda-lock.yml"))
    return root


@pytest.fixture
def servers() -> Iterator[list[RecordingServer]]:
    """HTTP servers a test starts (`devsupport.servers.start`); all closed after it."""
    started: list[RecordingServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def physlite_site(
    standin: standin_module.StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublishedSite]:
    """physlite locked and published once per session, through a counting proxy in front
    of the local registry: the parent of the extension pairs' and the hub service's tests."""
    site = publish_site(standin, tmp_path_factory.mktemp("physlite-site"))
    yield site
    site.proxy.close()
    remove_local_tags(site.namespace + "/")  # the engine keeps no image of a run's own
