"""Cold build, bytes pushed and no-op nightly of the physlite pair, against baselines.

    python -m bench.build [--repeat 3]

Everything is measured in one run, offline, on the physlite environment locked against
the conda-forge stand-in (packages fetched over HTTP from 127.0.0.1, as from conda-forge),
on the debootstrap base image, with the local registry. Before each cold build the
Docker build cache (`docker builder prune`), our images, the layer store and the package
caches are emptied.

* ours: `buildtool build physlite` (system stages with BuildKit, conda layers by package),
  and `buildtool publish` into a fresh namespace;
* the naive baseline, the deployment today: the two images built apart from two
  Dockerfiles (bench/baseline), each installing its whole set from scratch on the same
  base with the same py-rattler, each with its own package cache, then `docker push`ed;
* the floor: py-rattler alone fetching and installing the notebook set into an empty
  prefix on the host, with an empty package cache;
* arm64 beside x86: the e2e pair with `platforms: [linux-64, linux-aarch64]`, one cold
  build, with the time of each platform's system stages (BuildKit; for linux-aarch64
  under qemu) and of its conda layers (laid out on this host), as the build reports them.

Cold times are medians of --repeat runs. Image sizes are the compressed sizes of the
manifests' blobs in the registry and `docker image inspect` Size. The no-op nightly is a
`buildtool publish` of unchanged content after every local image and the build cache are
removed (a fresh CI runner).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import rattler

from bench.baseline import build_naive, render_context
from bench.common import (
    REPO,
    Bench,
    Row,
    bytes_pushed,
    empty_caches,
    main,
    manifest_blobs,
    mb,
    run,
    table,
    timed,
    uncompressed_size,
    verdict,
)
from buildtool.engine import docker_cli
from buildtool.lockfile import read_lock
from buildtool.render import RenderedPair
from buildtool.spec import Environment
from compat.vocabulary import ROLES
from devsupport.registry import docker_login

ENV_NAME = "physlite"
SPECS = ("base", "physlite")  # the spec and the one it extends
PAIR_PUSH_TARGET = 1.1  # pair push <= this x the notebook image's own compressed size
COLD_SPEEDUP_TARGET = 1.8  # cold pair build >= this x faster than the naive baseline
FLOOR_TARGET = 1.5  # cold pair build <= this x the floor
MULTIARCH = "platforms: [linux-64, linux-aarch64]\n"


def install_floor(env: Environment, scratch: Path) -> None:
    """py-rattler alone: fetch and install the notebook set into an empty prefix."""
    lock = rattler.LockFile.from_path(env.lock_path).default_environment()
    platform = next(p for p in lock.platforms() if p.name == "linux-64")
    records = lock.conda_repodata_records_for_platform(platform)
    shutil.rmtree(scratch, ignore_errors=True)
    asyncio.run(
        rattler.install(
            records,
            target_prefix=scratch / "prefix",
            cache_dir=scratch / "cache",
            show_progress=False,
        )
    )


def sizes(bench: Bench, refs: dict[str, str]) -> dict[str, tuple[int, int, dict[str, int]]]:
    """role -> (compressed, uncompressed, blobs) of the image under `refs[role]`."""
    out = {}
    for role in ROLES:
        blobs = manifest_blobs(bench.registry(), refs[role])
        out[role] = (sum(blobs.values()), uncompressed_size(refs[role]), blobs)
    return out


TIMING = re.compile(
    r"^timing (?P<platform>\S+): system stages (?P<system>[\d.]+) s \(BuildKit(?P<emulated>, "
    r"emulated)?\), conda layers (?P<conda>[\d.]+) s \(host\)$",
    re.MULTILINE,
)


def arm64_rows(bench: Bench, namespace: str) -> list[Row]:
    """One cold build of the e2e pair for both platforms; each platform's time by stage."""
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
    empty_caches([f"{namespace}/", "buildtool-system/"], packages, root.parent / "build")
    bench.progress("cold build of the e2e pair for linux-64 and linux-aarch64")
    started = time.perf_counter()
    output = buildtool(
        "build",
        "e2e",
        "--quiet",
        "--registry",
        namespace,
        *bench.standin.image_flags,
        log="build-multiarch.log",
    )
    total = time.perf_counter() - started
    timings = {m["platform"]: m for m in TIMING.finditer(output)}
    x86, arm = timings["linux-64"], timings["linux-aarch64"]

    def seconds(m: re.Match[str]) -> float:
        return float(m["system"]) + float(m["conda"])

    return [
        Row(
            "e2e pair, linux-64 (system + conda layers)",
            f"{seconds(x86):.1f} s",
            "-",
            "-",
            "-",
            "-",
        ),
        Row(
            "e2e pair, linux-aarch64, beside linux-64",
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
    ours_ns, naive_ns = bench.namespace("ours"), bench.namespace("naive")
    bench.progress(f"locking {ENV_NAME} against the stand-in ({bench.standin.channel})")
    env = bench.lock(ENV_NAME, SPECS)
    lock = read_lock(env.lock_path)
    bench.buildtool("render", ENV_NAME, "--registry", ours_ns, *bench.image_flags, log="render.log")
    pair = RenderedPair.load(bench.build_dir, ENV_NAME)
    naive_refs = {role: f"{naive_ns}/{env.image(role).repository}:naive" for role in ROLES}
    context = render_context(
        env,
        lock,
        bench.work / "baseline",
        bench.standin.base_image,
        bench.standin.builder_image,
        naive_refs["worker"],
    )
    packages = bench.work / "cache"
    ours_env = {**bench.registry_env(), "DASKHUB_CACHE": str(packages)}
    store = bench.build_dir / ".store"

    def build_ours() -> None:
        bench.buildtool(
            "build",
            ENV_NAME,
            "--quiet",
            "--registry",
            ours_ns,
            *bench.image_flags,
            log="build.log",
            env=ours_env,
        )

    cold_ours, cold_naive, floor_runs = [], [], []
    prefixes = [f"{ours_ns}/", f"{naive_ns}/", "buildtool-system/"]
    for i in range(bench.repeat):
        bench.progress(f"cold builds, run {i + 1} of {bench.repeat}: ours, naive, floor")
        empty_caches(prefixes, packages, store)
        cold_ours.append(timed(build_ours))
        empty_caches(prefixes, packages, store)
        cold_naive.append(timed(lambda: build_naive(context, naive_refs)))
        floor_runs.append(timed(lambda: install_floor(env, bench.work / "floor")))

    bench.progress(f"ours: buildtool publish {ENV_NAME} --registry {ours_ns} (build, test, push)")
    bench.buildtool(
        "publish",
        ENV_NAME,
        "--quiet",
        "--registry",
        ours_ns,
        *bench.image_flags,
        log="publish-1.log",
        env=ours_env,
    )
    published = json.loads((Path(pair.directory) / "published.json").read_text())
    ours_refs = {role: pair.image(role).ref for role in ROLES}
    ours = sizes(bench, ours_refs)

    bench.progress(f"baseline: docker push to {naive_ns}")
    docker_config = bench.work / "docker-config"
    docker_login(bench.credentials, docker_config)
    for role in ROLES:
        run(
            [docker_cli(), "push", naive_refs[role]],
            bench.work / f"push-{role}.log",
            env={**os.environ, "DOCKER_CONFIG": str(docker_config)},
        )
    naive = sizes(bench, naive_refs)
    naive_distinct = sum({d: s for r in ROLES for d, s in naive[r][2].items()}.values())

    bench.progress(f"no-op nightly on an empty Docker cache, {bench.repeat} runs")
    noop_times, noop_bytes = [], 0
    for i in range(bench.repeat):
        empty_caches(prefixes)
        started = time.perf_counter()
        output = bench.buildtool(
            "publish",
            ENV_NAME,
            "--quiet",
            "--registry",
            ours_ns,
            *bench.image_flags,
            log=f"publish-noop-{i}.log",
            env=ours_env,
        )
        noop_times.append(time.perf_counter() - started)
        noop_bytes += bytes_pushed(output)

    ours_s, naive_s = statistics.median(cold_ours), statistics.median(cold_naive)
    floor = statistics.median(floor_runs)
    speedup, over_floor = naive_s / ours_s, ours_s / floor
    ours_push = published["bytes_pushed"]
    ours_ratio = ours_push / ours["notebook"][0]
    naive_ratio = naive_distinct / naive["notebook"][0]
    rows = [
        Row(
            f"cold build of the pair, median of {bench.repeat}",
            f"{ours_s:.1f} s",
            f"{naive_s:.1f} s (two images built apart)",
            f"{speedup:.2f}x faster",
            f">= {COLD_SPEEDUP_TARGET}x faster",
            verdict(speedup >= COLD_SPEEDUP_TARGET),
        ),
        Row(
            "cold build / floor",
            f"{ours_s:.1f} s",
            f"{floor:.1f} s (rattler alone, notebook set)",
            f"{over_floor:.2f}x the floor",
            f"<= {FLOOR_TARGET}x",
            verdict(over_floor <= FLOOR_TARGET),
        ),
        Row(
            "pair push, bytes",
            mb(ours_push),
            mb(naive_distinct),
            f"{ours_push / naive_distinct:.2f}",
            "-",
            "-",
        ),
        Row(
            "pair push / own notebook image (compressed)",
            f"{ours_ratio:.2f}x",
            f"{naive_ratio:.2f}x",
            "-",
            f"<= {PAIR_PUSH_TARGET:.1f}x",
            verdict(ours_ratio <= PAIR_PUSH_TARGET),
        ),
    ]
    for role in ROLES:
        for kind, index in (("compressed, registry", 0), ("uncompressed, docker", 1)):
            a, b = ours[role][index], naive[role][index]
            rows.append(Row(f"{role} image ({kind})", mb(a), mb(b), f"{a / b:.2f}", "-", "-"))
    rows.append(
        Row(
            f"no-op nightly, empty Docker cache, median of {bench.repeat}",
            f"{statistics.median(noop_times):.2f} s",
            "-",
            "-",
            "0 bytes pushed",
            verdict(noop_bytes == 0),
        )
    )
    rows += arm64_rows(bench, ours_ns + "-multiarch")
    worker_blobs = ours["worker"][2]
    layers = sorted(ours["notebook"][2].items(), key=lambda item: -item[1])
    notes = [
        f"Environment {ENV_NAME}: {len(lock.package)} locked packages from "
        f"{bench.standin.channel}; ours in {ours_ns}, baseline in {naive_ns}.",
        "Cold runs (s), ours: "
        + ", ".join(f"{t:.1f}" for t in cold_ours)
        + "; naive: "
        + ", ".join(f"{t:.1f}" for t in cold_naive)
        + "; floor: "
        + ", ".join(f"{t:.1f}" for t in floor_runs)
        + ".",
        f"No-op runs: {', '.join(f'{t:.2f}' for t in noop_times)} s, "
        f"{noop_bytes} bytes pushed (the whole CLI process; nothing built).",
        f"Notebook image: {len(layers) - 1} layers; the ten largest (compressed):",
        *(
            f"  {d[7:19]} {mb(s):>10} ({'shared' if d in worker_blobs else 'notebook only'})"
            for d, s in layers[:10]
        ),
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


if __name__ == "__main__":
    # The arm64 rows build for linux-aarch64; the naive baseline has a builder stage.
    main("bench.build", __doc__, report, platforms=("linux-64", "linux-aarch64"), builder=True)
