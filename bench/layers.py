"""Package layers against single-layer images: a one-package bump, pushed and pulled.

    python -m bench.layers [--repeat 3]

On physlite, locked against the conda-forge stand-in, measured in one run. "Yesterday"
pins toolz to its older release in the stand-in (1.1.0); "today" lifts the pin, and the
relock moves toolz, and nothing else, to 1.2.0.

* ours: `buildtool publish` yesterday, relock, `buildtool publish` today;
* the baseline: today's images before package layers (bench/baseline: the worker's
  environment one layer, the notebook's own packages one more), built from the same two
  locks and `docker push`ed.

(a) bytes pushed by today's publish: the blobs the registry did not hold yet;
(b) bytes pulled by a node that holds yesterday's pair when it pulls today's, counted on
    the wire by a proxy in front of the registry; once for a containerd node (`ctr`: what
    Kubernetes nodes run) and once for a second Docker Engine (20.10, classic store);
(c) `buildtool verify`: today's pair rebuilt on clean caches gives the published digests;
(d) yesterday's pair push against the notebook image's own compressed size;
(e) cold builds (no BuildKit cache, no layer store, no package cache), medians.
"""

from __future__ import annotations

import json
import os
import statistics
import urllib.request
import uuid
from pathlib import Path

from bench.baseline import build_single_layer, render_context
from bench.common import (
    Bench,
    Row,
    empty_caches,
    main,
    manifest_blobs,
    mb,
    run,
    table,
    timed,
    verdict,
)
from bench.node import ContainerdNode
from buildtool.engine import docker_cli
from buildtool.lockdiff import diff_locks
from buildtool.lockfile import read_lock
from compat.vocabulary import ROLES
from devsupport.registry import docker_login
from devsupport.servers import DockerEngine, FrontProxy

ENV_NAME = "physlite"
SPECS = ("base", "physlite")
BUMPED = "toolz"
YESTERDAY_PIN = "  - toolz <1.2\n"
PUSH_TARGET = 0.05  # (a) bytes pushed <= 5 % of the notebook image (compressed)
PULL_TARGET = 0.05  # (b) bytes pulled <= 5 % of the notebook image (compressed)
PAIR_TARGET = 1.05  # (d) pair push <= 1.05 x the notebook image (compressed)
COLD_TARGET = 1.10  # (e) cold build <= 1.10 x the single-layer images'


def pin_yesterday(text: str) -> str:
    return text.replace("dependencies:\n", "dependencies:\n" + YESTERDAY_PIN, 1)


class Pairs:
    """Where each side's pairs go."""

    def __init__(self, bench: Bench) -> None:
        self.ours_ns = bench.namespace("layers")
        self.base_ns = bench.namespace("single")

    def single_refs(self, day: str) -> dict[str, str]:
        return {
            "worker": f"{self.base_ns}/dask-gateway-{ENV_NAME}:{day}",
            "notebook": f"{self.base_ns}/jupyter-{ENV_NAME}:{day}",
        }


def new_blob_bytes(bench: Bench, before: list[str], after: list[str]) -> int:
    """What pushing `after` sends once `before` is in the registry: blobs not yet there."""
    registry = bench.registry()
    held = {d for ref in before for d in manifest_blobs(registry, ref)}
    new = {d: s for ref in after for d, s in manifest_blobs(registry, ref).items() if d not in held}
    return sum(new.values())


def archive_size(url: str) -> int:
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.headers["Content-Length"])


def publish_ours(bench: Bench, registry: str, log: str) -> dict:
    bench.buildtool(
        "publish",
        ENV_NAME,
        "--quiet",
        "--registry",
        registry,
        *bench.image_flags,
        log=log,
        env=bench.registry_env(),
    )
    return json.loads((bench.build_dir / ENV_NAME / "published.json").read_text())


def push_single(bench: Bench, refs: dict[str, str], config: Path) -> None:
    for role in ROLES:
        run(
            [docker_cli(), "push", refs[role]],
            bench.work / f"push-{refs[role][-9:]}-{role}.log",
            env={**os.environ, "DOCKER_CONFIG": str(config)},
        )


def pull(node: DockerEngine | ContainerdNode, ref: str) -> None:
    if isinstance(node, DockerEngine):
        node.docker("pull", "--quiet", ref)
    else:
        node.pull(ref)


def pulled(
    node: DockerEngine | ContainerdNode,
    proxy: FrontProxy,
    registry: str,
    yesterday: list[str],
    today: list[str],
) -> int:
    """Bytes of blobs the node fetches for today's pair, holding yesterday's."""
    through = [ref.replace(registry, proxy.address, 1) for ref in [*yesterday, *today]]
    for ref in through[: len(yesterday)]:
        pull(node, ref)
    proxy.reset()
    for ref in through[len(yesterday) :]:
        pull(node, ref)
    return proxy.blob_bytes


def report(bench: Bench) -> str:
    pairs = Pairs(bench)
    registry = bench.credentials.registry
    config = bench.work / "docker-config"
    docker_login(bench.credentials, config)

    # -- yesterday ------------------------------------------------------------------------
    bench.progress(f"yesterday: {ENV_NAME} locked with {YESTERDAY_PIN.strip()}")
    env = bench.lock(ENV_NAME, SPECS, pin_yesterday)
    old_lock = read_lock(env.lock_path)
    first = publish_ours(bench, pairs.ours_ns, "publish-yesterday.log")
    ours_yesterday = [first["images"][r]["ref"] for r in ROLES]
    notebook_size = sum(manifest_blobs(bench.registry(), ours_yesterday[1]).values())
    single_yesterday = pairs.single_refs("yesterday")
    context = render_context(
        env,
        old_lock,
        bench.work / "single-yesterday",
        bench.standin.base_image,
        bench.standin.builder_image,
        single_yesterday["worker"],
    )
    bench.progress("yesterday: the single-layer pair, built and pushed")
    build_single_layer(context, single_yesterday)
    push_single(bench, single_yesterday, config)
    single_notebook_size = sum(
        manifest_blobs(bench.registry(), single_yesterday["notebook"]).values()
    )

    # -- today ----------------------------------------------------------------------------
    bench.progress(f"today: the pin lifted, {ENV_NAME} relocked")
    env = bench.lock(ENV_NAME, SPECS)
    new_lock = read_lock(env.lock_path)
    changes = diff_locks(old_lock, new_lock)
    moved = sorted({c.name for c in changes})
    if moved != [BUMPED]:
        raise RuntimeError(f"the relock moved {moved}, not only {BUMPED}")
    bumped = next(p for p in new_lock.package if p.name == BUMPED)
    second = publish_ours(bench, pairs.ours_ns, "publish-today.log")
    ours_today = [second["images"][r]["ref"] for r in ROLES]
    single_today = pairs.single_refs("today")
    context = render_context(
        env,
        new_lock,
        bench.work / "single-today",
        bench.standin.base_image,
        bench.standin.builder_image,
        single_today["worker"],
    )
    bench.progress("today: the single-layer pair, built and pushed")
    build_single_layer(context, single_today)
    push_single(bench, single_today, config)

    pushed_ours = new_blob_bytes(bench, ours_yesterday, ours_today)
    pushed_single = new_blob_bytes(
        bench, list(single_yesterday.values()), list(single_today.values())
    )

    # -- (b) pulls --------------------------------------------------------------------------
    proxy = FrontProxy(registry)
    pulls: dict[str, dict[str, int]] = {}
    try:
        for kind in ("containerd", "docker"):
            pulls[kind] = {}
            for side, yesterday, today in (
                ("ours", ours_yesterday, ours_today),
                ("single", list(single_yesterday.values()), list(single_today.values())),
            ):
                bench.progress(f"(b) a {kind} node pulls {side}: yesterday, then today")
                node: DockerEngine | ContainerdNode
                if kind == "docker":
                    node = DockerEngine(bench.work / f"node-{side}")
                    node.login(proxy.address, bench.credentials)
                else:
                    node = ContainerdNode(f"bench-{uuid.uuid4().hex[:8]}", bench.credentials)
                try:
                    pulls[kind][side] = pulled(node, proxy, registry, yesterday, today)
                finally:
                    node.stop()
    finally:
        proxy.close()

    # -- (c) verify ---------------------------------------------------------------------------
    bench.progress("(c) buildtool verify: today's pair rebuilt on clean caches")
    output = bench.buildtool("verify", ENV_NAME, "--quiet", *bench.image_flags, log="verify.log")
    identical = {role: f"{ENV_NAME} {role}: identical" in output for role in ROLES}

    # -- (e) cold builds ------------------------------------------------------------------------
    packages = bench.work / "cache"
    ours_env = {**os.environ, "DASKHUB_CACHE": str(packages)}
    prefixes = [f"{pairs.ours_ns}/", f"{pairs.base_ns}/", "buildtool-system/"]
    cold_ours, cold_single = [], []
    for i in range(bench.repeat):
        bench.progress(f"(e) cold builds, run {i + 1} of {bench.repeat}: ours, single-layer")
        empty_caches(prefixes, packages, bench.build_dir / ".store")
        cold_ours.append(
            timed(
                lambda: bench.buildtool(
                    "build",
                    ENV_NAME,
                    "--quiet",
                    "--registry",
                    pairs.ours_ns,
                    *bench.image_flags,
                    log="cold-build.log",
                    env=ours_env,
                )
            )
        )
        empty_caches(prefixes)
        cold_single.append(timed(lambda: build_single_layer(context, single_today)))

    # -- the table --------------------------------------------------------------------------------
    ours_cold, single_cold = statistics.median(cold_ours), statistics.median(cold_single)
    first_push = first["bytes_pushed"]
    rows = [
        Row(
            f"(a) push after a {BUMPED} bump",
            mb(pushed_ours),
            mb(pushed_single),
            f"{pushed_ours / pushed_single:.3f}",
            f"<= {PUSH_TARGET:.0%} of notebook ({mb(PUSH_TARGET * notebook_size)})",
            verdict(pushed_ours <= PUSH_TARGET * notebook_size),
        ),
        Row(
            f"    {BUMPED} {bumped.version} archive (the physical limit)",
            mb(archive_size(bumped.url)),
            "-",
            "-",
            "-",
            "-",
        ),
    ]
    for kind, label in (
        ("containerd", "containerd node (Kubernetes)"),
        ("docker", "Docker Engine 20.10 node"),
    ):
        ours_pull, single_pull = pulls[kind]["ours"], pulls[kind]["single"]
        rows.append(
            Row(
                f"(b) pull, {label}",
                mb(ours_pull),
                mb(single_pull),
                f"{ours_pull / single_pull:.3f}",
                f"<= {PULL_TARGET:.0%} of notebook",
                verdict(ours_pull <= PULL_TARGET * notebook_size),
            )
        )
    rows += [
        Row(
            "(c) two clean builds, identical digests",
            ", ".join(f"{r}: {'yes' if identical[r] else 'no'}" for r in ROLES),
            "-",
            "-",
            "yes for both",
            verdict(all(identical.values())),
        ),
        Row(
            "(d) pair push / notebook image (compressed)",
            f"{first_push / notebook_size:.3f}x",
            "-",
            "-",
            f"<= {PAIR_TARGET}x",
            verdict(first_push <= PAIR_TARGET * notebook_size),
        ),
        Row(
            f"(e) cold build of the pair, median of {bench.repeat}",
            f"{ours_cold:.1f} s",
            f"{single_cold:.1f} s",
            f"{ours_cold / single_cold:.2f}x",
            f"<= {COLD_TARGET:.2f}x",
            verdict(ours_cold <= COLD_TARGET * single_cold),
        ),
        Row(
            "notebook image, compressed",
            mb(notebook_size),
            mb(single_notebook_size),
            f"{notebook_size / single_notebook_size:.2f}",
            "-",
            "-",
        ),
    ]
    notes = [
        f"The relock moved only {BUMPED}: "
        + ", ".join(f"{c.name} {c.old} -> {c.new} ({c.role})" for c in changes)
        + ".",
        f"Ours in {pairs.ours_ns}, baseline in {pairs.base_ns}; layers: worker "
        f"{len(manifest_blobs(bench.registry(), ours_today[0])) - 1}, notebook "
        f"{len(manifest_blobs(bench.registry(), ours_today[1])) - 1}.",
        "Cold runs (s), ours: "
        + ", ".join(f"{t:.1f}" for t in cold_ours)
        + "; single-layer: "
        + ", ".join(f"{t:.1f}" for t in cold_single)
        + ".",
        "verify said: "
        + " / ".join(
            line
            for line in output.splitlines()
            if ": identical" in line or "DIFFERENT" in line or line.startswith("  ")
        ),
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


if __name__ == "__main__":
    # The single-layer baseline has a builder stage.
    main("bench.layers", __doc__, report, builder=True)
