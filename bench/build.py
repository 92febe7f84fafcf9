"""Cold build, no-op rebuild and cold publish of the physlite pair, against the two floors
and the single-layer build, all measured in one run; sizes; arm64 beside x86.

    python -m bench.build [--repeat 3]

Offline: physlite locked against the conda-forge stand-in (packages fetched over HTTP
from 127.0.0.1, as from conda-forge), on the debootstrap base image, with the local
registry. "Cold" (bench.common.empty_caches) is what a fresh runner has: no image under
the benchmarks' namespaces (this run's and earlier runs'), no system-stage image
(buildtool-system/), no dangling image, no BuildKit cache (`docker builder prune -af`),
an empty package cache and no layer store (build/.store); the base images stay. A cold
build needs an engine that holds none of the pair's layers under other names (a pair
built from the same lock by `make build` or the tests): such a build sends nothing to
the engine, and the run stops (build-stats.json's bytes_sent must be above 0 after every
cold build, the one inside each cold publish too).

Each of the --repeat runs measures, in this order:

1. ours, cold: `buildtool build physlite` (system stages with BuildKit, conda layers by
   package, loaded into the engine): the process's wall time, and build-stats.json;
2. in the last run only, the no-op rebuild: `buildtool build physlite` --repeat times
   more with nothing changed, each the process's wall time (Python's start-up included:
   what a user waits for), and the layers written and bytes sent to the engine that
   build-stats.json reports (both must be 0);
3. the cold publish: `buildtool publish physlite` (build, image tests, push) into a fresh
   namespace of the local registry: published.json's timings (build, image tests, push
   with its compression, blob uploads, SBOMs, locks and tags; the rest is the total less
   those three) and the process's wall time;
4. the single-layer build, cold (bench/baseline `build_single_layer`: the worker's whole
   environment one layer from BuildKit, the notebook FROM it with one more layer);
5. the floors (bench.common): the install floor, py-rattler alone fetching and installing
   the notebook set into an empty prefix with an empty package cache; the engine floor,
   `docker import` of that prefix as one uncompressed tar.

Every timed row is the median of the runs; the notes list each run. The cold build's
targets: at most the install floor plus the engine floor, and faster than the single-layer
build. Then, once: the single-layer pair is `docker push`ed, the baseline of the sizes
and pair-push rows (compressed: the manifests' blobs in the registry; uncompressed:
`docker image inspect` Size; ours from the last cold publish), and the arm64 rows: the
e2e pair with `platforms: [linux-64, linux-aarch64]`, one cold build, with the time of
each platform's system stages (BuildKit; for linux-aarch64 under qemu) and of its conda
layers (laid out on this host), as the build reports them.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.baseline import build_single_layer, render_context
from bench.common import (
    PUBLISHED_FILE,
    REPO,
    STATS_FILE,
    Bench,
    BuildStats,
    Floors,
    PublishTimings,
    Row,
    main,
    manifest_blobs,
    mb,
    publish_timings,
    read_build_stats,
    read_published,
    require_cold,
    run,
    runs_note,
    seconds_list,
    stats_summary,
    table,
    timed,
    uncompressed_size,
    verdict,
)
from buildtool.image import RenderedPair, docker_cli
from buildtool.lock import read_lock
from compat.vocabulary import ROLES
from devsupport.localregistry import docker_login

ENV_NAME = "physlite"
SPECS = ("base", "physlite")  # the spec and the one it extends
PAIR_PUSH_TARGET = 1.1  # pair push <= this x the notebook image's own compressed size
FLOORS_TARGET = 1.0  # cold build <= this x (install floor + engine floor)
NOOP_TARGET = 2.0  # no-op rebuild, seconds, with 0 layers written and 0 bytes sent
MULTIARCH = "platforms: [linux-64, linux-aarch64]\n"


@dataclass(frozen=True)
class ImageSize:
    compressed: int  # the manifest's blobs in the registry
    uncompressed: int  # `docker image inspect` Size
    blobs: dict[str, int]  # digest -> compressed size, config and layers


def sizes(bench: Bench, refs: dict[str, str], local: dict[str, str]) -> dict[str, ImageSize]:
    """role -> the size of the image `refs[role]` in the registry, `local[role]` in the
    engine."""
    out: dict[str, ImageSize] = {}
    for role in ROLES:
        blobs = manifest_blobs(bench.registry(), refs[role])
        out[role] = ImageSize(sum(blobs.values()), uncompressed_size(local[role]), blobs)
    return out


def share(part: float, total: float) -> str:
    return f"{part / total:.0%} of total"


# The line `buildtool build` logs (INFO) per platform; ", kept" when the system stages
# came from the layer store.
TIMING = re.compile(
    r"^timing (?P<platform>\S+): system stages (?P<system>[\d.]+) s \(BuildKit(?P<emulated>, "
    r"emulated)?(?:, kept)?\), conda layers (?P<conda>[\d.]+) s \(host\)$",
    re.MULTILINE,
)


def arm64_rows(bench: Bench, namespace: str) -> list[Row]:
    """One cold build of the e2e pair for both platforms; each platform's time by stage, from
    the build's own `timing` lines (so the build runs without --quiet). The system stages
    are built in the background while the conda layers are written: the two overlap, and
    their sum is not a wall time."""
    root = bench.work / "multiarch" / "environments"
    for name in ("base", "e2e"):
        (root / name).mkdir(parents=True)
        text = (REPO / "environments" / name / "env.yaml").read_text()
        if name == "e2e":
            text = text.replace("extends: base\n", "extends: base\n" + MULTIARCH)
        (root / name / "env.yaml").write_text(text)
    packages = bench.work / "multiarch" / "cache"
    env = {**os.environ, "DASKHUB_CACHE": str(packages)}

    def buildtool(*args: str, log: str) -> str:
        command = [sys.executable, "-m", "buildtool.cli", "--root", str(root), *args]
        return run(command, bench.work / log, cwd=root.parent, env=env)

    buildtool("lock", "e2e", "--channel", bench.standin.channel, log="lock-multiarch.log")
    bench.cold(packages, root.parent / "build")
    bench.progress("cold build of the e2e pair for linux-64 and linux-aarch64")
    started = time.perf_counter()
    output = buildtool(
        "build",
        "e2e",
        "--registry",
        namespace,
        *bench.standin.image_flags,
        log="build-multiarch.log",
    )
    total = time.perf_counter() - started
    timings = {m["platform"]: m for m in TIMING.finditer(output)}
    missing = [p for p in ("linux-64", "linux-aarch64") if p not in timings]
    if missing:
        raise RuntimeError(
            f"`buildtool build e2e` printed no timing line for {', '.join(missing)} "
            f"(see {bench.work / 'build-multiarch.log'})"
        )
    x86, arm = timings["linux-64"], timings["linux-aarch64"]

    def seconds(m: re.Match[str]) -> float:
        return float(m["system"]) + float(m["conda"])

    return [
        Row(
            "e2e pair, linux-64, system + conda layers (summed)",
            f"{seconds(x86):.1f} s",
            "-",
            "-",
            "-",
            "-",
        ),
        Row(
            "e2e pair, linux-aarch64, the same sum, beside linux-64",
            f"{seconds(arm):.1f} s",
            f"{seconds(x86):.1f} s",
            f"{seconds(arm) / seconds(x86):.2f}x",
            "-",
            "-",
        ),
        Row(
            "    of which emulated: system stages (qemu)",
            f"{float(arm['system']):.1f} s",
            f"{float(x86['system']):.1f} s (native)",
            f"{float(arm['system']) / float(x86['system']):.1f}x",
            "-",
            "-",
        ),
        Row(
            "    not emulated: conda layers (host)",
            f"{float(arm['conda']):.1f} s",
            f"{float(x86['conda']):.1f} s",
            f"{float(arm['conda']) / float(x86['conda']):.2f}x",
            "-",
            "-",
        ),
        Row("e2e pair, both platforms, whole build", f"{total:.1f} s", "-", "-", "-", "-"),
    ]


def report(bench: Bench) -> str:
    ours_ns, single_ns = bench.namespace("ours"), bench.namespace("single")
    bench.progress(f"locking {ENV_NAME} against the stand-in ({bench.standin.channel})")
    env = bench.lock(ENV_NAME, SPECS)
    lock = read_lock(env.lock_path)
    single_refs: dict[str, str] = {
        role: f"{single_ns}/{env.image(role).repository}:single" for role in ROLES
    }
    context = render_context(
        env,
        lock,
        bench.work / "baseline",
        bench.standin.base_image,
        bench.builder_image,
        single_refs["worker"],
    )
    packages = bench.work / "cache"
    store = bench.build_dir / ".store"
    ours_env = {**bench.registry_env(), "DASKHUB_CACHE": str(packages)}
    env_dir = bench.build_dir / ENV_NAME

    cold: list[tuple[float, BuildStats]] = []
    noop: list[tuple[float, BuildStats]] = []
    publishes: list[tuple[str, float, PublishTimings, BuildStats]] = []
    single_runs: list[float] = []
    floors = Floors()
    published: dict[str, Any] = {}
    ours: dict[str, ImageSize] = {}
    for i in range(bench.repeat):
        run_name = f"run {i + 1} of {bench.repeat}"
        bench.progress(f"{run_name}: cold build of ours")
        cold.append(
            bench.cold_build(
                ENV_NAME, ours_ns, [packages, store], log=f"build-cold-{i}.log", env=ours_env
            )
        )
        if i == bench.repeat - 1:
            bench.progress(f"{run_name}: no-op rebuilds, {bench.repeat} of them")
            for j in range(bench.repeat):
                noop.append(bench.build(ENV_NAME, ours_ns, log=f"build-noop-{j}.log", env=ours_env))

        publish_ns = bench.namespace("publish")
        bench.progress(f"{run_name}: cold publish into {publish_ns} (build, image tests, push)")
        bench.cold(packages, store)
        for name in (STATS_FILE, PUBLISHED_FILE):
            (env_dir / name).unlink(missing_ok=True)
        started = time.perf_counter()
        bench.buildtool(
            "publish",
            ENV_NAME,
            "--quiet",
            "--registry",
            publish_ns,
            *bench.image_flags,
            log=f"publish-cold-{i}.log",
            env=ours_env,
        )
        wall = time.perf_counter() - started
        stats = read_build_stats(bench.build_dir, ENV_NAME)
        require_cold(stats, f"the build of the cold publish ({publish_ns})")
        publishes.append((publish_ns, wall, publish_timings(bench.build_dir, ENV_NAME), stats))
        published = read_published(bench.build_dir, ENV_NAME)
        pair = RenderedPair.load(bench.build_dir, ENV_NAME)
        ours = sizes(
            bench,
            {role: published["images"][role]["ref"] for role in ROLES},
            {role: pair.image(role).ref for role in ROLES},
        )

        bench.progress(f"{run_name}: cold single-layer build")
        bench.cold()
        single_runs.append(timed(lambda: build_single_layer(context, single_refs)))

        bench.progress(f"{run_name}: the floors (py-rattler alone, docker import of its prefix)")
        floors.measure(env.lock_path, bench.work / "floor")

    bench.progress(f"the single-layer pair: docker push to {single_ns}")
    docker_config = bench.work / "docker-config"
    docker_login(bench.credentials, docker_config)
    for role in ROLES:
        run(
            [docker_cli(), "push", single_refs[role]],
            bench.work / f"push-single-{role}.log",
            env={**os.environ, "DOCKER_CONFIG": str(docker_config)},
        )
    single = sizes(bench, single_refs, single_refs)
    single_distinct = sum({d: s for r in ROLES for d, s in single[r].blobs.items()}.values())

    ours_s = statistics.median(t for t, _ in cold)
    single_s = statistics.median(single_runs)
    floor_s = floors.install_s + floors.engine_s
    over_floors = ours_s / floor_s
    noop_s = statistics.median(t for t, _ in noop)
    noop_written = max(s.layers_written for _, s in noop)
    noop_sent = max(s.bytes_sent for _, s in noop)
    timings = [t for _, _, t, _ in publishes]
    total = statistics.median(t.total for t in timings)
    parts = {
        "build": statistics.median(t.build for t in timings),
        "image tests": statistics.median(t.image_tests for t in timings),
        "push (compression, blobs, SBOMs, locks, tags)": statistics.median(t.push for t in timings),
        "rest (total - build - image tests - push)": statistics.median(t.rest for t in timings),
    }
    ours_push = published["bytes_pushed"]
    ours_ratio = ours_push / ours["notebook"].compressed
    single_ratio = single_distinct / single["notebook"].compressed
    n = bench.repeat
    rows = [
        Row(
            f"cold build of the pair / the two floors, median of {n}",
            f"{ours_s:.1f} s",
            f"{floor_s:.1f} s (install {floors.install_s:.1f} + engine {floors.engine_s:.1f})",
            f"{over_floors:.2f}x the floors",
            f"<= {FLOORS_TARGET:.1f}x",
            verdict(over_floors <= FLOORS_TARGET),
        ),
        Row(
            f"cold build of the pair / single-layer build, median of {n}",
            f"{ours_s:.1f} s",
            f"{single_s:.1f} s (single-layer, BuildKit)",
            f"{ours_s / single_s:.2f}x",
            "< 1.00x (faster)",
            verdict(ours_s < single_s),
        ),
        Row(
            f"no-op rebuild (nothing changed), median of {len(noop)}",
            f"{noop_s:.2f} s; {noop_written} layers written, {noop_sent} bytes sent",
            "-",
            "-",
            f"<= {NOOP_TARGET:.0f} s, 0 layers written, 0 bytes sent",
            verdict(noop_s <= NOOP_TARGET and noop_written == 0 and noop_sent == 0),
        ),
        Row(
            f"cold publish (build, image tests, push), median of {n}",
            f"{total:.1f} s",
            "-",
            "-",
            "reported",
            "-",
        ),
        *(
            Row(f"    {name}", f"{seconds:.1f} s", "-", share(seconds, total), "-", "-")
            for name, seconds in parts.items()
        ),
        Row(
            "pair push, bytes",
            mb(ours_push),
            f"{mb(single_distinct)} (single-layer)",
            f"{ours_push / single_distinct:.2f}",
            "-",
            "-",
        ),
        Row(
            "pair push / own notebook image (compressed)",
            f"{ours_ratio:.2f}x",
            f"{single_ratio:.2f}x",
            "-",
            f"<= {PAIR_PUSH_TARGET:.1f}x",
            verdict(ours_ratio <= PAIR_PUSH_TARGET),
        ),
    ]
    for role in ROLES:
        for kind, a, b in (
            ("compressed, registry", ours[role].compressed, single[role].compressed),
            ("uncompressed, docker", ours[role].uncompressed, single[role].uncompressed),
        ):
            rows.append(Row(f"{role} image ({kind})", mb(a), mb(b), f"{a / b:.2f}", "-", "-"))
    rows += arm64_rows(bench, ours_ns + "-multiarch")

    worker_blobs = ours["worker"].blobs
    layers = sorted(ours["notebook"].blobs.items(), key=lambda item: -item[1])
    notes = [
        f"Environment {ENV_NAME}: {len(lock.package)} locked packages from "
        f"{bench.standin.channel}; ours built in {ours_ns}, published in "
        f"{', '.join(ns for ns, *_ in publishes)}; single-layer in {single_ns}.",
        f"Cold builds: {runs_note(cold)}.",
        f"Single-layer cold builds (s): {seconds_list(single_runs)}.",
        floors.note(),
        f"No-op rebuilds (the whole CLI process): {runs_note(noop, 2)}.",
        *(
            f"Cold publish {k + 1} (s): {wall:.1f} wall, {t.total:.1f} total = build "
            f"{t.build:.1f} + image tests {t.image_tests:.1f} + push {t.push:.1f} + rest "
            f"{t.rest:.1f}; its build: {stats_summary(s)}."
            for k, (_, wall, t, s) in enumerate(publishes)
        ),
        f"Notebook image: {len(layers) - 1} layers; the ten largest (compressed):",
        *(
            f"  {d[7:19]} {mb(s):>10} ({'shared' if d in worker_blobs else 'notebook only'})"
            for d, s in layers[:10]
        ),
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


if __name__ == "__main__":
    # The arm64 rows build for linux-aarch64; the single-layer baseline has a builder stage.
    main("bench.build", __doc__, report, platforms=("linux-64", "linux-aarch64"), builder=True)
