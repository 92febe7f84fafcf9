"""Cold start: from the start of a pull to a `dask worker` of the physlite worker image
registered with a running scheduler, on a cold node, and the bytes fetched until then.

    python -m bench.coldstart [--repeat 3] [--bandwidth 100]

A cold node is a containerd of its own beside the stargz snapshotter, with a fresh root
(devsupport/coldnode.py); the registry is reached through a proxy that counts the blob
bytes it hands out, throttled to `--bandwidth` MB/s (0: loopback speed), since a cloud
node's pull is bound by its bandwidth where loopback is not. The scheduler runs in the
Docker engine beside it, from the same image, and a watcher there says when the worker
joined. Every row is measured in the same run, each run on a new node; timed rows are
medians of `--repeat` runs.

(a) the baseline: the same packages as one single-layer gzip image (bench/baseline: the
    way pangeo-docker-images and docker-stacks build), pulled plainly;
(b) the layered image as it was before eStargz (the same layers, each gzipped whole, as
    publish wrote them), pulled plainly;
(c) the eStargz image as publish writes it now, its prefetch list first in each layer,
    pulled lazily;
(d) on a node that already holds the physlite notebook image (pulled lazily), the worker:
    the bytes fetched and the time;
(e) on a node that already holds physlite's worker, pyhep's worker: the bytes fetched
    until it registered, against the archives of pyhep's packages that physlite lacks
    (as the channel serves them).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass

from bench.baseline import build_single_layer, render_context
from bench.common import Bench, Row, main, mb, table, verdict
from buildtool.common import read_published
from buildtool.image import OCI_LAYER_GZIP, OCI_MANIFEST, Blob, docker_cli
from buildtool.lock import read_lock
from buildtool.publish import split_reference
from buildtool.site import content_length
from devsupport.coldnode import ColdNode
from devsupport.dockercli import docker
from devsupport.localregistry import docker_login
from devsupport.servers import FrontProxy, free_port

SPECS = ("base", "physlite", "pyhep")
TIME_TARGET = 0.3  # (c) against (a), at 100 MB/s
BYTES_TARGET = 0.25  # (c) bytes before registration, against the image's compressed size
SHARED_TARGET = 1.2  # (e) against pyhep's own packages

WATCH = """
import sys, time
from distributed import Client
with Client(sys.argv[1], timeout=60) as client:
    print("ready", flush=True)
    while sys.argv[2] not in {w["name"] for w in client.scheduler_info()["workers"].values()}:
        time.sleep(0.02)
    print(f"joined {time.time():.3f}", flush=True)
"""


@dataclass
class Measured:
    seconds: float
    fetched: int  # blob bytes through the proxy until the worker joined
    pulled: int  # of which the pull's own (before the worker started)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bandwidth",
        type=float,
        default=100.0,
        help="MB/s between the node and the registry (0: loopback speed); default 100",
    )


def _plain_copy(bench: Bench, ref: str, tag: str) -> str:
    """The image `ref` as it was before eStargz: the same archives, each gzipped whole
    (the store's plain gzip of a layer), pushed under `tag`. Its reference."""
    registry = bench.registry()
    repository, _, digest = ref.partition("@")
    _, name = split_reference(repository)
    manifest = json.loads(registry.get_manifest(name, digest) or "{}")
    layers = []
    for layer in manifest["layers"]:  # the same archives (diff_ids): the config holds
        archive = gzip.decompress(registry.get_blob(name, layer["digest"]))
        plain = Blob.of(gzip.compress(archive, compresslevel=1, mtime=0), OCI_LAYER_GZIP)
        registry.push_blob(name, plain)
        layers.append(plain.descriptor())
    document = {**manifest, "layers": layers}
    registry.put_manifest(name, tag, Blob.of(json.dumps(document).encode(), OCI_MANIFEST))
    return f"{repository}:{tag}"


def _single_layer(bench: Bench, namespace: str, worker_ref: str) -> str:
    """(a): the physlite pair as one single-layer image each, built and pushed."""
    env = bench.lock("physlite", ("base", "physlite"))
    refs = {role: f"{namespace}/single-physlite:{role}" for role in ("worker", "notebook")}
    context = render_context(
        env,
        read_lock(env.lock_path),
        bench.work / "single",
        bench.standin.base_image,
        bench.builder_image,
        worker_ref,
    )
    build_single_layer(context, refs)
    config = bench.work / "docker-config"
    docker_login(bench.credentials, config)
    subprocess.run(
        [docker_cli(), "push", refs["worker"]],
        check=True,
        capture_output=True,
        env={**bench.registry_env(), "DOCKER_CONFIG": str(config)},
    )
    return refs["worker"]


def _manifest(bench: Bench, ref: str) -> dict:
    repository, reference = ref.split("@", 1) if "@" in ref else ref.rsplit(":", 1)
    _, name = split_reference(repository)
    return json.loads(bench.registry().get_manifest(name, reference) or "{}")


def _compressed(bench: Bench, ref: str) -> int:
    """The compressed size of an image's layers, as its manifest gives them."""
    return sum(layer["size"] for layer in _manifest(bench, ref)["layers"])


class Scheduler:
    """A scheduler in the Docker engine, from the physlite worker image, and watchers
    that say when a named worker joined it."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.container = docker(
            "run", "-d", "--network", "host", image,
            "dask", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-address", "127.0.0.1:0",
        ).stdout.decode().strip()  # fmt: skip

    def watch(self, name: str) -> str:
        """A watcher for `name`, once it is connected."""
        watcher = docker(
            "run", "-d", "--network", "host", self.image, "python", "-c", WATCH,
            self.address, name,
        ).stdout.decode().strip()  # fmt: skip
        deadline = time.monotonic() + 120
        while "ready" not in docker("logs", watcher).stdout.decode():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the watcher for {name} did not connect")
            time.sleep(0.2)
        return watcher

    def joined(self, watcher: str, timeout: float = 900) -> float:
        """When the watched worker joined (seconds since the epoch)."""
        deadline = time.monotonic() + timeout
        while True:
            said = docker("logs", watcher).stdout.decode()
            if "joined" in said:
                docker("rm", "-f", watcher)
                return float(said.split("joined", 1)[1].split()[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker joined: {said}")
            time.sleep(0.05)

    def close(self) -> None:
        docker("rm", "-f", self.container)


def _start_worker(
    bench: Bench,
    scheduler: Scheduler,
    ref: str,
    *,
    lazy: bool,
    before: tuple[str, ...] = (),
    label: str,
) -> Measured:
    """On a new cold node (having pulled `before` first, not timed): pull `ref`, start a
    worker from it; the seconds until it joined the scheduler, and the bytes fetched."""
    rate = bench.options.bandwidth * 1e6 or None
    proxy = FrontProxy(bench.credentials.registry, rate=rate)
    registry = bench.credentials.registry
    try:
        with ColdNode(
            bench.credentials, bench.work / "nodes" / label, hosts=[proxy.address]
        ) as node:
            for earlier in before:
                pull = node.pull_lazy if lazy else node.pull
                pull(earlier.replace(registry, proxy.address, 1))
            name = f"cold-{uuid.uuid4().hex[:8]}"
            watcher = scheduler.watch(name)
            through = ref.replace(registry, proxy.address, 1)
            fetched_before = proxy.blob_bytes
            started = time.time()
            (node.pull_lazy if lazy else node.pull)(through)
            pulled = proxy.blob_bytes - fetched_before
            node.start(
                through, "dask", "worker", scheduler.address, "--nthreads", "1",
                "--name", name, "--dashboard-address", "127.0.0.1:0",
            )  # fmt: skip
            joined = scheduler.joined(watcher)
            fetched = proxy.blob_bytes - fetched_before
        return Measured(joined - started, fetched, pulled)
    finally:
        proxy.close()
        shutil.rmtree(bench.work / "nodes" / label, ignore_errors=True)


def _median(runs: list[Measured]) -> Measured:
    return Measured(
        statistics.median(r.seconds for r in runs),
        int(statistics.median(r.fetched for r in runs)),
        int(statistics.median(r.pulled for r in runs)),
    )


def report(bench: Bench) -> str:
    bandwidth = bench.options.bandwidth
    namespace = bench.namespace("cold")
    for name in ("physlite", "pyhep"):
        bench.progress(f"{name}: locked and published (eStargz)")
        bench.lock(name, ("base", name))
        bench.buildtool(
            "publish", name, "--registry", namespace, "--image-tests", "no", *bench.image_flags,
            log=f"publish-{name}.log", env=bench.registry_env(),
        )  # fmt: skip
    physlite = read_published(bench.build_dir, "physlite")
    pyhep = read_published(bench.build_dir, "pyhep")
    assert physlite is not None and pyhep is not None
    worker = physlite.images.worker.ref
    notebook = physlite.images.notebook.ref
    bench.progress("(b) the same layers, gzipped whole, pushed")
    plain = _plain_copy(bench, worker, "plain-gzip")
    bench.progress("(a) the single-layer image, built and pushed")
    single = _single_layer(bench, namespace, worker)
    local = f"{physlite.images.worker.repository}:{physlite.content_tag}"
    scheduler = Scheduler(local)
    runs: dict[str, list[Measured]] = {key: [] for key in "abcde"}
    try:
        for attempt in range(bench.repeat):
            for key, ref, lazy, before in (
                ("a", single, False, ()),
                ("b", plain, False, ()),
                ("c", worker, True, ()),
                ("d", worker, True, (notebook,)),
                ("e", pyhep.images.worker.ref, True, (worker,)),
            ):
                bench.progress(f"({key}) run {attempt + 1} of {bench.repeat}")
                runs[key].append(
                    _start_worker(
                        bench, scheduler, ref, lazy=lazy, before=before, label=f"{key}{attempt}"
                    )
                )
    finally:
        scheduler.close()
    a, b, c, d, e = (_median(runs[key]) for key in "abcde")

    config = _manifest(bench, worker)["config"]["size"]
    sizes = {
        key: _compressed(bench, ref) for key, ref in (("a", single), ("b", plain), ("c", worker))
    }
    held = {p.hash.sha256 for p in read_lock(bench.root / "physlite" / "conda-lock.yml").package}
    own = [
        p
        for p in read_lock(bench.root / "pyhep" / "conda-lock.yml").packages("worker", "linux-64")
        if p.hash.sha256 not in held
    ]
    own_bytes = sum(content_length(p.url) for p in own)

    speed = f"{bandwidth:g} MB/s" if bandwidth else "loopback"
    rows = [
        Row(
            "(a) single-layer gzip, pulled plainly: seconds to a registered worker",
            f"{a.seconds:.1f} s",
            "-",
            "1.00",
            "the baseline",
            "-",
        ),
        Row(
            "(b) layered gzip (before eStargz), pulled plainly",
            f"{b.seconds:.1f} s",
            f"{a.seconds:.1f} s (a)",
            f"{b.seconds / a.seconds:.2f}",
            "no slower",
            verdict(b.seconds <= a.seconds),
        ),
        Row(
            "(c) eStargz with prefetch, pulled lazily",
            f"{c.seconds:.1f} s",
            f"{a.seconds:.1f} s (a)",
            f"{c.seconds / a.seconds:.2f}",
            f"<= {TIME_TARGET}x",
            verdict(c.seconds <= a.seconds * TIME_TARGET),
        ),
        Row(
            "(c) bytes fetched before the worker registered",
            mb(c.fetched),
            f"{mb(sizes['c'])} (the image)",
            f"{c.fetched / sizes['c']:.2f}",
            f"<= {BYTES_TARGET:.0%}",
            verdict(c.fetched <= sizes["c"] * BYTES_TARGET),
        ),
        Row(
            "(d) the worker, on a node holding the notebook image: bytes its pull fetched",
            f"{d.pulled:,} bytes",
            f"{config:,} bytes (its image config, which the notebook image lacks)",
            "-",
            "no layer: 0 bytes beyond the config",
            verdict(d.pulled <= config),
        ),
        Row(
            "(d) and until it registered (files read lazily), seconds",
            f"{mb(d.fetched)}, {d.seconds:.1f} s",
            f"{mb(c.fetched)}, {c.seconds:.1f} s (c)",
            f"{d.seconds / c.seconds:.2f}",
            "reported",
            "-",
        ),
        Row(
            "(e) pyhep's worker on a node holding physlite's: bytes fetched",
            mb(e.fetched),
            f"{mb(own_bytes)} (its own {len(own)} packages' archives)",
            f"{e.fetched / own_bytes:.2f}",
            f"<= {SHARED_TARGET}x",
            verdict(e.fetched <= own_bytes * SHARED_TARGET),
        ),
    ]
    notes = [
        f"Measured {time.strftime('%Y-%m-%d')}, {speed}, medians of {bench.repeat} runs.",
        "Compressed sizes: single-layer "
        + f"{mb(sizes['a'])}, layered gzip {mb(sizes['b'])}, eStargz {mb(sizes['c'])} "
        + f"({sizes['c'] / sizes['b']:.2f}x the layered gzip).",
        "Runs (seconds, MB): "
        + "; ".join(
            f"({key}) " + ", ".join(f"{r.seconds:.1f}/{r.fetched / 1e6:.1f}" for r in runs[key])
            for key in "abcde"
        ),
    ]
    return table(rows) + "\n" + "\n".join(notes)


if __name__ == "__main__":
    main("bench.coldstart", __doc__ or "", report, builder=True, options=options)
