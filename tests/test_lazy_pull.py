"""The pairs this tool writes are lazily pullable (eStargz, `buildtool/image/estargz.py`),
checked with the real runtimes, never with a reader of our own:

- the real stargz snapshotter, on a cold containerd (devsupport/coldnode.py), mounts the
  session's published physlite worker lazily, over FUSE, having fetched a small part of
  it; a scheduler, a worker and a client from it compute; the snapshotter prefetched the
  layers' prioritized ranges, which hold the files the worker's start opened when the
  build recorded it (`buildtool/image/prefetch.py`);
- plain containerd (overlayfs) on another cold node, and a second Docker Engine 20.10,
  pull the same image whole and run the same scheduler, worker and client.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import tempfile
from pathlib import Path

import pytest

from buildtool.image import PREFETCH_LANDMARK, TOC_DIGEST_ANNOTATION, TOC_NAME
from buildtool.publish import Credentials, Registry, split_reference
from devsupport.coldnode import ColdNode
from devsupport.servers import DockerEngine, free_port
from devsupport.sitepair import PublishedSite

pytestmark = [pytest.mark.docker, pytest.mark.registry]

CLIENT = """
import sys
from distributed import Client
with Client(sys.argv[1], timeout=120) as client:
    client.wait_for_workers(1, timeout=180)
    print("computed", client.submit(sum, range(10)).result())
"""
PYTHON_FILE = "srv/conda/envs/notebook/lib/python3.11/site-packages/distributed/worker.py"


def _manifest(site: PublishedSite, ref: str) -> tuple[Registry, str, dict]:
    repository, _, digest = ref.partition("@")
    host, name = split_reference(repository)
    registry = Registry(host, Credentials(site.credentials.user, site.credentials.password))
    text = registry.get_manifest(name, digest)
    assert text is not None, ref
    return registry, name, json.loads(text)


def _toc(blob: bytes) -> list[str]:
    """The entries' names of an eStargz blob's TOC, found by its footer."""
    offset = int(blob[-51:][16:32], 16)
    archive = gzip.decompress(blob[offset:-51])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile(TOC_NAME)
        assert member is not None
        return [entry["name"] for entry in json.loads(member.read())["entries"]]


def _compute(run, start, ref: str) -> str:  # type: ignore[no-untyped-def]
    """A scheduler and a worker started from `ref`, and a client run to its end."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    start(ref, "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
          "--dashboard-address", "127.0.0.1:0")  # fmt: skip
    start(ref, "dask", "worker", address, "--nthreads", "1", "--dashboard-address", "127.0.0.1:0")
    return str(run(ref, "python", "-c", CLIENT, address))


def test_a_cold_node_mounts_the_physlite_worker_lazily_and_it_computes(
    physlite_site: PublishedSite, tmp_path: Path
) -> None:
    worker = physlite_site.published["images"]["worker"]["ref"]
    registry, name, manifest = _manifest(physlite_site, worker)
    layers = manifest["layers"]
    lazy = [layer for layer in layers if TOC_DIGEST_ANNOTATION in layer.get("annotations", {})]
    # Every layer but the base image's is eStargz, as its descriptor says.
    assert len(lazy) >= len(layers) - 2, [layer.get("annotations") for layer in layers]
    compressed = sum(layer["size"] for layer in layers)

    # The worker's start, recorded by the build, goes first: distributed's worker module
    # is before the prefetch landmark of the layer that holds it.
    holding = []
    for layer in lazy:
        names = _toc(registry.get_blob(name, layer["digest"]))
        if PYTHON_FILE in names:
            holding = names
    assert PREFETCH_LANDMARK in holding
    assert holding.index(PYTHON_FILE) < holding.index(PREFETCH_LANDMARK)

    proxy = physlite_site.proxy
    with ColdNode(physlite_site.credentials, tmp_path / "lazy", hosts=[proxy.address]) as node:
        before = proxy.blob_bytes
        node.pull_lazy(worker)
        pulled = proxy.blob_bytes - before
        fuse = [m for m in node.mounts() if m.fstype.startswith("fuse")]
        assert len(fuse) >= len(lazy) - 1, node.mounts()
        # A lazy pull fetches the TOCs and each layer's prefetch range (what the worker's
        # start and the spec's imports read), and no layer whole: containerd's content
        # store holds the manifest and the config, nothing more.
        assert pulled < 0.6 * compressed, (pulled, compressed)
        layer_digests = {layer["digest"] for layer in layers}
        assert not layer_digests & set(node.fetched().content), "a layer was fetched whole"

        def run(ref: str, *command: str) -> str:
            result = node.run(ref, *command)
            assert result.exit_code == 0, result.stdout + result.stderr
            return result.stdout

        said = _compute(run, node.start, worker)
        assert "computed 45" in said
        # The snapshotter prefetched the prioritized ranges (its metrics log says so).
        logged = "\n".join(
            p.read_text(errors="replace") for p in (tmp_path / "lazy").rglob("*.log")
        )
        sizes = [int(s) for s in re.findall(r"prefetch_size=(\d+)", logged)]
        assert sizes and max(sizes) > 0, logged[-3000:]
        assert proxy.blob_bytes - before < compressed  # still not the whole image


def test_plain_containerd_and_docker_pull_the_same_image_and_compute(
    physlite_site: PublishedSite, tmp_path: Path
) -> None:
    worker = physlite_site.published["images"]["worker"]["ref"]
    proxy = physlite_site.proxy
    with ColdNode(physlite_site.credentials, tmp_path / "plain", hosts=[proxy.address]) as node:
        node.pull(worker)
        assert not [m for m in node.mounts() if m.fstype.startswith("fuse")]

        def run(ref: str, *command: str) -> str:
            result = node.run(ref, *command)
            assert result.exit_code == 0, result.stdout + result.stderr
            return result.stdout

        assert "computed 45" in _compute(run, node.start, worker)

    # A short root: its containerd's socket path must fit a socket address's 108 bytes.
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp")))
    started: list[str] = []
    try:
        engine.login(proxy.address, physlite_site.credentials)
        engine.docker("pull", "--quiet", worker)

        def docker_run(ref: str, *command: str) -> str:
            result = engine.docker("run", "--rm", "--network", "host", ref, *command, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout.decode()

        def docker_start(ref: str, *command: str) -> str:
            ran = engine.docker("run", "-d", "--network", "host", ref, *command)
            started.append(ran.stdout.decode().strip())
            return started[-1]

        assert "computed 45" in _compute(docker_run, docker_start, worker)
    finally:
        for container in started:
            engine.docker("rm", "-f", container, check=False)
        engine.stop()
