"""The cold node (devsupport/coldnode.py) is a real node: a containerd of its own and the
stargz snapshotter daemon pull a small image from the local registry plainly and lazily,
through a counting proxy, and run containers from it; a new node is cold again.

The image: the stand-in's base image with 32 MiB of incompressible ballast that nothing
reads, pushed with Docker; its eStargz copy is made by `ctr-remote images convert` (the
harness's converter, not the project's writer, which is tested on its own)."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildtool.publish import Credentials, Registry
from devsupport.coldnode import OVERLAYFS, STARGZ, ColdNode, Fetched
from devsupport.dockercli import docker, require_docker
from devsupport.localregistry import RegistryCredentials, docker_login, registry_credentials
from devsupport.servers import FrontProxy
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]
log = logging.getLogger(__name__)

REPOSITORY = "coldnode/tiny"
BALLAST = 32 << 20
MARKER = "cold\n"  # /etc/coldnode in the image
TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"  # an eStargz layer's annotation


@dataclass(frozen=True)
class TinyImage:
    plain_size: int  # the compressed layers of each tag
    estargz_size: int
    estargz_layers: dict[str, int]  # digest -> size


@pytest.fixture(scope="module")
def credentials() -> RegistryCredentials:
    return registry_credentials()


@pytest.fixture(scope="module")
def proxy(credentials: RegistryCredentials) -> Iterator[FrontProxy]:
    front = FrontProxy(credentials.registry)
    yield front
    front.close()


def _layers(credentials: RegistryCredentials, tag: str) -> list[dict]:
    registry = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    manifest = registry.get_manifest(REPOSITORY, tag)
    assert manifest is not None, tag
    return json.loads(manifest)["layers"]


@pytest.fixture(scope="module")
def tiny(
    standin: StandIn, credentials: RegistryCredentials, tmp_path_factory: pytest.TempPathFactory
) -> TinyImage:
    """`REPOSITORY:plain` pushed by Docker, and `REPOSITORY:estargz` converted from it."""
    require_docker()
    work = tmp_path_factory.mktemp("tiny")
    (work / "ballast").write_bytes(random.Random(0).randbytes(BALLAST))
    (work / "marker").write_text(MARKER)
    (work / "Dockerfile").write_text(
        f"FROM {standin.base_image}\nCOPY ballast /opt/ballast\nCOPY marker /etc/coldnode\n"
    )
    plain = f"{credentials.registry}/{REPOSITORY}:plain"
    started = time.monotonic()
    docker("build", "--quiet", "--tag", plain, str(work))
    docker_login(credentials, work / "docker")
    docker("push", plain, env={**os.environ, "DOCKER_CONFIG": str(work / "docker")})
    log.info("built and pushed %s in %.1f s", plain, time.monotonic() - started)

    estargz = f"{credentials.registry}/{REPOSITORY}:estargz"
    started = time.monotonic()
    with ColdNode(credentials, work / "converter-logs") as converter:
        converter.pull(plain)
        converter.convert_estargz(plain, estargz)
        converter.push(estargz)
    log.info("converted and pushed %s in %.1f s", estargz, time.monotonic() - started)
    layers = _layers(credentials, "estargz")
    assert all(TOC_DIGEST in layer.get("annotations", {}) for layer in layers)
    return TinyImage(
        plain_size=sum(layer["size"] for layer in _layers(credentials, "plain")),
        estargz_size=sum(layer["size"] for layer in layers),
        estargz_layers={layer["digest"]: layer["size"] for layer in layers},
    )


def test_a_plain_pull_fetches_every_layer_and_runs(
    tiny: TinyImage, credentials: RegistryCredentials, proxy: FrontProxy, tmp_path: Path
) -> None:
    ref = f"{proxy.address}/{REPOSITORY}:plain"
    with ColdNode(credentials, tmp_path / "logs", hosts=[proxy.address]) as node:
        proxy.reset()
        seconds = node.pull(ref)
        log.info("plain pull: %.1f s, %d blob bytes", seconds, proxy.blob_bytes)
        assert proxy.blob_bytes >= tiny.plain_size > BALLAST
        assert node.fetched().content_bytes >= tiny.plain_size
        assert node.snapshots(OVERLAYFS) and not node.snapshots(STARGZ)

        started = time.monotonic()
        result = node.run(ref, "cat", "/etc/coldnode")
        log.info("plain run: %.1f s", time.monotonic() - started)
        assert (result.exit_code, result.stdout) == (0, MARKER)
        assert node.run(ref, "sh", "-c", "echo no >&2; exit 3").exit_code == 3

        # A container left running is on the node's host network, until it is stopped.
        container = node.start(ref, "sleep", "600")
        assert container in node.tasks()
        node.stop(container)
        assert container not in node.tasks()


def test_a_lazy_pull_mounts_over_fuse_fetches_little_and_runs(
    tiny: TinyImage, credentials: RegistryCredentials, proxy: FrontProxy, tmp_path: Path
) -> None:
    ref = f"{proxy.address}/{REPOSITORY}:estargz"
    with ColdNode(credentials, tmp_path / "logs", hosts=[proxy.address]) as node:
        proxy.reset()
        seconds = node.pull_lazy(ref)
        before_run = proxy.blob_bytes
        log.info("lazy pull: %.1f s, %d of %d blob bytes", seconds, before_run, tiny.estargz_size)
        assert before_run < tiny.estargz_size / 10
        # Each layer is the snapshotter's FUSE mount; none was fetched into the content
        # store, as a plain pull does.
        fuse = [m for m in node.mounts() if m.fstype.startswith("fuse")]
        assert len(fuse) == len(tiny.estargz_layers)
        assert all(m.mountpoint.is_relative_to(node.stargz_root) for m in fuse)
        assert not set(tiny.estargz_layers) & set(node.fetched().content)

        started = time.monotonic()
        result = node.run(ref, "cat", "/etc/coldnode")
        log.info(
            "lazy run: %.1f s, %d blob bytes fetched by then",
            time.monotonic() - started,
            proxy.blob_bytes,
        )
        assert (result.exit_code, result.stdout) == (0, MARKER)
        assert proxy.blob_bytes < tiny.estargz_size / 4  # the ballast was never read
        assert node.fetched().stargz_bytes > 0

        # The credentials, plain or as a Basic token, are in no command line of the
        # node's processes, nor in its logs.
        secrets = (credentials.password, credentials.authorization().split()[1])
        assert not [line for line in _command_lines() if any(s in line for s in secrets)]
        logs = [p.read_text(errors="replace") for p in (tmp_path / "logs").iterdir()]
        assert len(logs) == 2
        assert not [text for text in logs if any(s in text for s in secrets)]
        root = node.root
    assert not root.exists()
    assert not [line for line in _mount_lines() if str(root) in line]


def test_a_new_node_is_cold_again(
    tiny: TinyImage, credentials: RegistryCredentials, proxy: FrontProxy, tmp_path: Path
) -> None:
    ref = f"{proxy.address}/{REPOSITORY}:estargz"
    roots = []
    fetched = []
    for attempt in range(2):
        with ColdNode(credentials, tmp_path / f"logs{attempt}", hosts=[proxy.address]) as node:
            roots.append(node.root)
            assert node.images() == []
            assert node.fetched() == Fetched({}, 0)
            assert node.snapshots(OVERLAYFS) == node.snapshots(STARGZ) == []
            proxy.reset()
            node.pull_lazy(ref)
            assert node.run(ref, "cat", "/etc/coldnode").stdout == MARKER
            fetched.append(proxy.blob_bytes)
    assert roots[0] != roots[1]
    # The second node fetched again what the first did: nothing was kept between them.
    assert fetched[1] > 0 and abs(fetched[1] - fetched[0]) < fetched[0] / 4


def test_the_proxy_passes_ranges_through_and_holds_a_rate(
    tiny: TinyImage, credentials: RegistryCredentials
) -> None:
    user = Credentials(credentials.user, credentials.password)
    ballast = max(tiny.estargz_layers, key=tiny.estargz_layers.__getitem__)
    blob = f"/v2/{REPOSITORY}/blobs/{ballast}"
    scope = f"repository:{REPOSITORY}:pull"
    direct = Registry(credentials.registry, user)
    rate = 4 << 20
    front = FrontProxy(credentials.registry, rate=rate)
    try:
        through = Registry(front.address, user)
        one = {"Range": "bytes=0-1048575"}
        status, headers, body = through.request("GET", blob, scope=scope, headers=one)
        _, direct_headers, direct_body = direct.request("GET", blob, scope=scope, headers=one)
        assert (status, len(body), body) == (206, 1 << 20, direct_body)
        assert _lower(headers)["content-range"] == _lower(direct_headers)["content-range"]
        assert front.blob_bytes == 1 << 20

        # Several ranges in one request, as the snapshotter asks: one multipart answer.
        front.reset()
        two = {"Range": "bytes=100-199,5000-5099"}
        status, headers, body = through.request("GET", blob, scope=scope, headers=two)
        assert status == 206
        assert _lower(headers)["content-type"].startswith("multipart/byteranges")
        assert direct_body[100:200] in body and direct_body[5000:5100] in body
        assert front.blob_bytes == len(body)

        front.reset()
        started = time.monotonic()
        through.request("GET", blob, scope=scope, headers={"Range": "bytes=0-8388607"})
        seconds = time.monotonic() - started
        assert front.blob_bytes == 8 << 20
        assert 8 / 4 * 0.9 < seconds < 8 / 4 * 3  # 8 MiB at 4 MiB/s
    finally:
        front.close()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return lines


def _mount_lines() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()
