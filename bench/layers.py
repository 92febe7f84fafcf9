"""Package layers against single-layer images: a one-package bump, pushed and pulled; the
rebuild after a bump, against the engine floor.

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
(e) and (f), the rebuilds, --repeat runs, each: from cold (bench.common.empty_caches: no
    image under the benchmarks' namespaces, no system-stage or dangling image, no
    BuildKit cache, an empty package cache, no layer store), "day 0" (toolz pinned as
    yesterday, and a notebook-only package pinned below its newest release in the
    stand-in) is locked and built, not timed (a cold build: build-stats.json must report
    bytes sent to the engine); then, with everything that build left warm (package cache
    and staging prefix, layer store, its images in the engine), day 1 lifts the toolz pin
    and day 2 the notebook pin: each is relocked (not timed, and checked to have moved
    only that package; the notebook one only in the notebook image), then
    `buildtool build physlite` is timed, the process's wall time;
    (e) the rebuild after the toolz bump (a worker package: in both images), and
    (f) after the notebook-only bump, each over the engine floor: `docker import` of the
    install floor's prefix (py-rattler alone installing the notebook set into an empty
    prefix, empty package cache) as one uncompressed tar, measured in each run
    (bench.common). The notebook-only package is the smallest one of physlite's
    notebook-only set that the stand-in holds in two releases; when it holds none, (f)
    is not measured and the notes say where to add one.

Timed rows are medians of the runs; the notes list each run with its build-stats.json.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rattler import Version

from bench.baseline import build_single_layer, render_context
from bench.common import (
    Bench,
    BuildStats,
    Floors,
    Row,
    main,
    manifest_blobs,
    mb,
    run,
    runs_note,
    table,
    verdict,
)
from buildtool.image import docker_cli
from buildtool.lock import Change, LockFile, diff_locks, read_lock
from compat.vocabulary import ROLES
from devsupport.coldnode import ColdNode
from devsupport.localregistry import docker_login
from devsupport.servers import DockerEngine, FrontProxy

ENV_NAME = "physlite"
SPECS = ("base", "physlite")
PLATFORM = "linux-64"
BUMPED = "toolz"
YESTERDAY_PIN = "  - toolz <1.2\n"
PUSH_TARGET = 0.05  # (a) bytes pushed <= 5 % of the notebook image (compressed)
PULL_TARGET = 0.05  # (b) bytes pulled <= 5 % of the notebook image (compressed)
PAIR_TARGET = 1.05  # (d) pair push <= 1.05 x the notebook image (compressed)
WORKER_REBUILD_TARGET = 0.3  # (e) rebuild after the toolz bump <= 0.3 x the engine floor
NOTEBOOK_REBUILD_TARGET = 0.1  # (f) after a notebook-only bump <= 0.1 x the engine floor
# Where the stand-in's older releases are listed, for the note when (f) has no package.
STANDIN_OLDER = (
    "OLDER in devsupport/standin/channel.py (pinned with hashes in "
    "devsupport/standin/requirements-older.txt)"
)


def pin_yesterday(text: str) -> str:
    """toolz pinned below 1.2, first in the spec's own (top-level) dependencies."""
    top = re.search(r"^dependencies:\n", text, re.MULTILINE)
    if top is None:
        raise RuntimeError(f"{ENV_NAME}'s spec has no top-level `dependencies:` block")
    return text[: top.end()] + YESTERDAY_PIN + text[top.end() :]


def pin_notebook(text: str, spec: str) -> str:
    """`spec` added to the notebook image's own dependencies (so it stays out of the
    worker's set)."""
    line = f"    - {spec}\n"
    block = re.search(r"^notebook:\n  dependencies:\n", text, re.MULTILINE)
    if block is not None:
        return text[: block.end()] + line + text[block.end() :]
    section = re.search(r"^notebook:\n", text, re.MULTILINE)
    if section is not None:
        return text[: section.end()] + "  dependencies:\n" + line + text[section.end() :]
    return text + "notebook:\n  dependencies:\n" + line


@dataclass(frozen=True)
class Bump:
    """A notebook-only package the stand-in holds in an older release too."""

    name: str
    older: str  # what the pin leaves
    newer: str  # the version the lock takes without the pin
    size: int  # the newer archive's bytes

    @property
    def pin(self) -> str:
        return f"{self.name} <{self.newer}"


def standin_records(channel: str) -> list[dict[str, Any]]:
    """Every record of the stand-in's linux-64 and noarch repodata, with its file name."""
    records = []
    for subdir in (PLATFORM, "noarch"):
        try:
            with urllib.request.urlopen(f"{channel}/{subdir}/repodata.json", timeout=60) as body:
                repodata = json.load(body)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                continue
            raise
        for key in ("packages", "packages.conda"):
            for filename, record in repodata.get(key, {}).items():
                records.append({**record, "fn": filename})
    return records


def notebook_bump(lock: LockFile, channel: str) -> Bump | None:
    """The smallest package of the notebook-only set (notebook packages not in the
    worker's) of which the stand-in holds a release older than the locked one."""
    worker = {p.name for p in lock.packages("worker", PLATFORM)}
    notebook_only = [p for p in lock.packages("notebook", PLATFORM) if p.name not in worker]
    records = standin_records(channel)
    versions: dict[str, set[str]] = {}
    for record in records:
        versions.setdefault(record["name"], set()).add(record["version"])
    size = {record["fn"]: int(record.get("size", 0)) for record in records}
    candidates = []
    for package in notebook_only:
        older = [v for v in versions.get(package.name, ()) if Version(v) < Version(package.version)]
        if older:
            newest_older = max(older, key=Version)
            bump = Bump(package.name, newest_older, package.version, size.get(package.filename, 0))
            candidates.append(bump)
    return min(candidates, key=lambda b: (b.size, b.name)) if candidates else None


def only_moved(changes: list[Change], name: str, roles: set[str], what: str) -> None:
    """Raise unless the relock moved `name` alone, in `roles` exactly."""
    moved = sorted({c.name for c in changes})
    if moved != [name]:
        raise RuntimeError(f"{what}: the relock moved {moved}, not only {name}")
    if {c.role for c in changes} != roles:
        raise RuntimeError(
            f"{what}: {name} moved in {sorted({c.role for c in changes})}, not {sorted(roles)}"
        )


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


def pull(node: DockerEngine | ColdNode, ref: str) -> None:
    if isinstance(node, DockerEngine):
        node.docker("pull", "--quiet", ref)
    else:
        node.pull(ref)


def pulled(
    node: DockerEngine | ColdNode,
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


def rebuilds(bench: Bench, today: LockFile) -> tuple[list[Row], list[str]]:
    """(e) and (f): the rebuilds after a worker bump and after a notebook-only bump, over
    the engine floor, each run from a cold day-0 build (see the module's docstring)."""
    namespace = bench.namespace("rebuild")
    packages = bench.work / "rebuild-cache"
    store = bench.build_dir / ".store"
    env = {**os.environ, "DASKHUB_CACHE": str(packages)}
    notebook = notebook_bump(today, bench.standin.channel)
    if notebook is None:
        bench.progress(
            f"(f) will not be measured: the stand-in holds no older release of a package of "
            f"{ENV_NAME}'s notebook-only set (add one to {STANDIN_OLDER})"
        )
    else:
        bench.progress(
            f"(f) the notebook-only bump: {notebook.name} {notebook.older} -> {notebook.newer}"
        )

    def day(pin_toolz: bool, pin_notebook_package: bool) -> Callable[[str], str]:
        def edit(text: str) -> str:
            if pin_toolz:
                text = pin_yesterday(text)
            if pin_notebook_package and notebook is not None:
                text = pin_notebook(text, notebook.pin)
            return text

        return edit

    def relock(edit: Callable[[str], str]) -> tuple[LockFile, Path]:
        env_spec = bench.lock(ENV_NAME, SPECS, edit)
        return read_lock(env_spec.lock_path), env_spec.lock_path

    cold: list[tuple[float, BuildStats]] = []
    worker_runs: list[tuple[float, BuildStats]] = []
    notebook_runs: list[tuple[float, BuildStats]] = []
    floors = Floors()
    for i in range(bench.repeat):
        run_name = f"(e, f) run {i + 1} of {bench.repeat}"
        bench.progress(f"{run_name}: day 0 locked and built from cold")
        day0, _ = relock(day(True, True))
        cold.append(
            bench.cold_build(
                ENV_NAME, namespace, [packages, store], log=f"rebuild-day0-{i}.log", env=env
            )
        )
        bench.progress(f"{run_name}: day 1, {BUMPED} bumped: relocked, rebuilt")
        day1, _ = relock(day(False, True))
        only_moved(diff_locks(day0, day1), BUMPED, {str(r) for r in ROLES}, "day 1")
        worker_runs.append(bench.build(ENV_NAME, namespace, log=f"rebuild-worker-{i}.log", env=env))
        if notebook is not None:
            bench.progress(f"{run_name}: day 2, {notebook.name} bumped: relocked, rebuilt")
        day2, lock_path = relock(day(False, False))
        if notebook is not None:
            only_moved(diff_locks(day1, day2), notebook.name, {"notebook"}, "day 2")
            notebook_runs.append(
                bench.build(ENV_NAME, namespace, log=f"rebuild-notebook-{i}.log", env=env)
            )
        bench.progress(f"{run_name}: the floors (py-rattler alone, docker import of its prefix)")
        floors.measure(lock_path, bench.work / "floor")

    engine = floors.engine_s
    n = bench.repeat
    worker_s = statistics.median(t for t, _ in worker_runs)
    rows = [
        Row(
            f"(e) rebuild after a {BUMPED} bump (worker package), median of {n}",
            f"{worker_s:.1f} s",
            f"{engine:.1f} s (engine floor)",
            f"{worker_s / engine:.2f}x",
            f"<= {WORKER_REBUILD_TARGET}x the engine floor",
            verdict(worker_s <= WORKER_REBUILD_TARGET * engine),
        )
    ]
    notes = [
        f"(e, f) built in {namespace}; day 0's cold builds (in no row): {runs_note(cold)}.",
        f"(e) the pin `{YESTERDAY_PIN.strip()[2:]}` lifted, rebuilds: {runs_note(worker_runs)}.",
    ]
    if notebook is not None:
        notebook_s = statistics.median(t for t, _ in notebook_runs)
        rows.append(
            Row(
                f"(f) rebuild after a {notebook.name} bump (notebook only), median of {n}",
                f"{notebook_s:.1f} s",
                f"{engine:.1f} s (engine floor)",
                f"{notebook_s / engine:.2f}x",
                f"<= {NOTEBOOK_REBUILD_TARGET}x the engine floor",
                verdict(notebook_s <= NOTEBOOK_REBUILD_TARGET * engine),
            )
        )
        notes.append(
            f"(f) {notebook.name} {notebook.older} -> {notebook.newer} (pin `{notebook.pin}` "
            f"in the notebook's dependencies, lifted), rebuilds: {runs_note(notebook_runs)}."
        )
    else:
        rows.append(
            Row(
                "(f) rebuild after a notebook-only bump",
                "not measured",
                f"{engine:.1f} s (engine floor)",
                "-",
                f"<= {NOTEBOOK_REBUILD_TARGET}x the engine floor",
                "NOT MEASURED",
            )
        )
        notes.append(
            f"(f) not measured: no package of {ENV_NAME}'s notebook-only set has an older "
            f"release in the stand-in ({bench.standin.channel}). Add one to {STANDIN_OLDER}."
        )
    notes.append(f"(e, f) {floors.note()} Install floor median {floors.install_s:.1f} s.")
    return rows, notes


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
        bench.builder_image,
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
        bench.builder_image,
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
                if kind == "docker":
                    engine = DockerEngine(bench.work / f"node-{side}")
                    engine.login(proxy.address, bench.credentials)
                    try:
                        pulls[kind][side] = pulled(engine, proxy, registry, yesterday, today)
                    finally:
                        engine.stop()
                else:
                    logs = bench.work / f"node-{side}"
                    with ColdNode(bench.credentials, logs, hosts=[proxy.address]) as node:
                        pulls[kind][side] = pulled(node, proxy, registry, yesterday, today)
    finally:
        proxy.close()

    # -- (c) verify ---------------------------------------------------------------------------
    bench.progress("(c) buildtool verify: today's pair rebuilt on clean caches")
    output = bench.buildtool("verify", ENV_NAME, "--quiet", *bench.image_flags, log="verify.log")
    identical = {role: f"{ENV_NAME} {role}: identical" in output for role in ROLES}

    # -- (e), (f) rebuilds after a bump -----------------------------------------------------
    rebuild_rows, rebuild_notes = rebuilds(bench, new_lock)

    # -- the table --------------------------------------------------------------------------------
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
        *rebuild_rows,
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
        *rebuild_notes,
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
