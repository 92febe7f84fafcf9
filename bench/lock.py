"""Benchmark `buildtool lock` on a generated channel of conda-forge's scale.

The channel is only `repodata.json` (linux-64 and noarch): solving needs no archives. It
is generated from a fixed seed, following how conda-forge grows over release epochs:

- names sit on layers, C libraries at the bottom and Python packages above, and each
  depends on a name one layer down plus a few popular ones, so the chains under the
  seed packages run 30-45 deep; older releases sometimes have one more dependency;
- a library's dependents pin it to its minor series (`>=1.2.3,<1.3.0a0`), and when it
  moves to a new series every dependent is rebuilt (a new build number), as a
  conda-forge migration does; a new Python is such a migration for extension packages;
- extension packages have one build per Python (`python >=3.11,<3.12.0a0`), pure Python
  packages are `noarch: python`;
- some dependencies carry a floor, some a cap below the dependency's next major version.
  A package releases again when a dependency it caps has a new major, except the
  "laggards", which stopped releasing before majors began: their caps make the solver
  back off newer versions. The notebook-only seed packages are laggards (as
  jupyterhub-singleuser capped tornado), so solving the images apart can split them.

Every package the seed environments name is in it, high in the layers. The newest builds
out by epoch MAJOR_FROM - 1 satisfy each other (no major has come yet, pins match the
last rebuild, Python 3.11 is out), so the seed environments are solvable; the benchmark
checks it by solving them.

Each environment is locked by the real CLI in a subprocess (process start, reading the
repodata, solving and writing). For comparison, in-process: the same union solve alone,
and the baseline of today's deployment, the notebook and the worker roots solved apart.

    python -m bench.lock [--records N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from bench.common import table
from buildtool.lock import read_lock, solve_with_rattler
from buildtool.spec import LOCK_FILE, Environment, load_environment
from compat.vocabulary import ROLES

REPO = Path(__file__).resolve().parents[1]
SEED_ENVIRONMENTS = ("pyhep", "ml", "physlite")
TARGET_SECONDS = 2.0
REPEATS = 3
RANDOM_SEED = 20240917
PLATFORM = "linux-64"

EPOCHS = 12  # half-years of releases
MAJOR_FROM = 6  # Python packages only start new major versions from this epoch on
PYTHON_LINES = {"3.10": 0, "3.11": 3, "3.12": 7}  # the epoch each Python arrives in
LAYERS = 45
LIB_LAYERS = 12  # the bottom layers are C libraries
SEED_LAYERS = (30, LAYERS - 1)
POPULAR_ROUNDS = 8  # the first names made on each layer are the popular ones
LAGGARD_RATE = 0.04
DROPPED_RATE = 0.5
RECORDS_PER_NAME = 20  # conda-forge's average: sets the least number of names
FIRST_TIMESTAMP_MS = 1_546_300_800_000  # 2019-01-01
EPOCH_MS = 182 * 24 * 3600 * 1000
LICENSES = ("MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later", "LGPL-2.1-or-later")
SYLLABLES = [consonant + vowel for consonant in "bdfgklmnprstvz" for vowel in "aeiou"]

Kind = Literal["lib", "python", "abi", "pyext", "noarch"]
Edge = Literal["pin", "plain", "floor", "capped"]
PYTHON_KINDS = ("pyext", "noarch")


@dataclass
class Release:
    """One version of a package, out in `epoch` and the newest until `until`."""

    version: str
    epoch: int
    until: int = EPOCHS
    depends: list[str] = field(default_factory=list)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(self.version.split(".")[:2])


@dataclass(frozen=True)
class Build:
    release: Release
    number: int
    epoch: int
    python: str | None = None  # the Python minor an extension package is built for


@dataclass
class Package:
    name: str
    kind: Kind
    layer: int
    edges: dict[str, Edge]
    releases: list[Release]
    popular: bool = False
    dropped: dict[str, int] = field(default_factory=dict)  # old dependency: epoch dropped
    builds: list[Build] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._epochs = [r.epoch for r in self.releases]

    def at(self, epoch: int) -> Release | None:
        """The newest release out by the end of `epoch`."""
        index = bisect_right(self._epochs, epoch)
        return self.releases[index - 1] if index else None

    @property
    def series_epochs(self) -> set[int]:
        """Epochs where a new minor series came out: its dependents are rebuilt."""
        epochs = {self.releases[0].epoch}
        epochs.update(b.epoch for a, b in pairwise(self.releases) if a.series != b.series)
        return epochs

    @property
    def major_epochs(self) -> list[int]:
        return [b.epoch for a, b in pairwise(self.releases) if b.major > a.major]


class ChannelGenerator:
    """Makes the package graph, its releases and its builds, from one random seed."""

    def __init__(
        self, seed_names: Iterable[str], laggards: set[str], records: int, rng: random.Random
    ) -> None:
        self.seed_names = sorted(set(seed_names) - {"python"})
        self.laggards = laggards
        self.records = records
        self.rng = rng
        self.packages: dict[str, Package] = {}
        self.by_layer: list[list[Package]] = [[] for _ in range(LAYERS)]
        self.popular: list[Package] = []
        self.record_count = 0

    def generate(self) -> dict[str, Package]:
        made = 0
        while self.record_count < self.records or made < self.records // RECORDS_PER_NAME:
            layer = made % LAYERS
            popular = made < POPULAR_ROUNDS * LAYERS
            self._add(self._new_name(layer), layer, popular=popular)
            made += 1
        self._add_python()
        seed_layers = sorted((self.rng.randint(*SEED_LAYERS), n) for n in self.seed_names)
        for layer, name in seed_layers:
            self._add(name, layer, popular=False, seed=True)
        return self.packages

    def _new_name(self, layer: int) -> str:
        while True:
            stem = "".join(self.rng.choices(SYLLABLES, k=self.rng.randint(2, 3)))
            if layer < LIB_LAYERS:
                name = f"lib{stem}"
            else:
                name = self.rng.choice((stem, f"py{stem}", f"{stem}-core", f"{stem}-utils"))
            if name not in self.packages and name not in self.seed_names:
                return name

    def _kind(self, layer: int) -> Kind:
        if layer < LIB_LAYERS:
            return "lib"
        return "pyext" if self.rng.random() < 0.35 else "noarch"

    def _pick_popular(self, below: int, accept: Callable[[Package], bool]) -> Package | None:
        """A popular package under layer `below`, the most popular ones far more often."""
        if not self.popular:
            return None
        for _ in range(30):
            candidate = self.popular[int(len(self.popular) * self.rng.random() ** 3)]
            if candidate.layer < below and accept(candidate):
                return candidate
        return None

    def _dependencies(self, kind: Kind, layer: int, popular: bool, seed: bool) -> list[Package]:
        def accept(dep: Package) -> bool:
            if kind == "lib":
                return dep.kind == "lib"
            return kind == "pyext" or dep.kind in PYTHON_KINDS

        deps: list[Package] = []
        if layer:  # the chain one layer down
            pool = self.by_layer[layer - 1]
            if popular or (not seed and self.rng.random() < 0.5):
                pool = [p for p in pool if p.popular] or pool
            deps.append(self.rng.choice(pool))
        for _ in range(self.rng.choice((0, 1, 1, 2, 2, 3) if not seed else (2, 3, 4))):
            dep = self._pick_popular(layer, accept)
            if dep is not None:
                deps.append(dep)
        if seed:
            earlier = [self.packages[n] for n in self.seed_names if n in self.packages]
            deps += self.rng.sample(earlier, min(len(earlier), self.rng.randint(0, 2)))
        return list({d.name: d for d in deps}.values())

    def _edge(self, kind: Kind, dep: Package, laggard: bool) -> Edge:
        if dep.kind == "lib":
            return "pin" if kind in ("lib", "pyext") else "plain"
        if laggard:
            return "capped"
        return self.rng.choices(("plain", "floor", "capped"), (45, 40, 15))[0]

    def _add(self, name: str, layer: int, popular: bool, seed: bool = False) -> None:
        kind = self._kind(layer)
        laggard = name in self.laggards or (kind != "lib" and self.rng.random() < LAGGARD_RATE)
        deps = self._dependencies(kind, layer, popular, seed)
        edges = {d.name: self._edge(kind, d, laggard) for d in deps}
        dropped = self._dropped(kind, layer, edges)
        releases = self._releases(kind, edges, laggard, many=popular or seed)
        for release in releases:
            release.depends = [
                self._constraint(self.packages[dep], edge, release.epoch)
                for dep, edge in edges.items()
                if edge != "pin"
            ]
            release.depends += [
                self._constraint(self.packages[dep], "floor", release.epoch)
                for dep, until in dropped.items()
                if release.epoch < until
            ]
        self._register(Package(name, kind, layer, edges, releases, popular, dropped))

    def _dropped(self, kind: Kind, layer: int, edges: dict[str, Edge]) -> dict[str, int]:
        """Now and then a dependency that only older releases have, on any Python package
        below: the solver has to read it, and what it needs, to rule those releases out."""
        if kind == "lib" or layer == LIB_LAYERS or self.rng.random() >= DROPPED_RATE:
            return {}
        dep = self.rng.choice(self.by_layer[self.rng.randrange(LIB_LAYERS, layer)])
        return {} if dep.name in edges else {dep.name: self.rng.randint(1, EPOCHS - 1)}

    def _register(self, package: Package) -> None:
        package.builds = self._builds(package)
        self.record_count += len(package.builds)
        self.packages[package.name] = package
        self.by_layer[package.layer].append(package)
        if package.popular:
            self.popular.append(package)

    def _releases(
        self, kind: Kind, edges: dict[str, Edge], laggard: bool, many: bool
    ) -> list[Release]:
        rng = self.rng
        count = min(60, max(1, round(rng.lognormvariate(2.6 if many else 2.2, 0.7))))
        first = rng.randint(0, 2)
        last = MAJOR_FROM - 1 if laggard else EPOCHS - 1
        epochs = [first] + [rng.randint(first, last) for _ in range(count - 1)]
        if not laggard:  # release again when a capped dependency has a new major
            for dep, edge in edges.items():
                if edge == "capped":
                    epochs += [e for e in self.packages[dep].major_epochs if e > first]
        major, minor, patch = rng.choice((0, 0, 1, 1, 2, 3)), rng.randint(0, 15), 0
        releases = []
        for index, epoch in enumerate(sorted(epochs)):
            roll = rng.random()
            if index and roll < 0.08 and (kind == "lib" or epoch >= MAJOR_FROM):
                major, minor, patch = major + 1, 0, 0
            elif index and roll < 0.4:
                minor, patch = minor + 1, 0
            elif index:
                patch += 1
            releases.append(Release(f"{major}.{minor}.{patch}", epoch))
        for older, newer in pairwise(releases):
            older.until = newer.epoch
        return releases

    def _constraint(self, dep: Package, edge: Edge, epoch: int) -> str:
        current = dep.at(epoch)
        if current is None or edge == "plain":
            return dep.name
        bounds = []
        if edge == "floor" or self.rng.random() < 0.5:
            floor = dep.at(epoch - self.rng.randint(0, 3))
            if floor is not None:
                bounds.append(f">={floor.version}")
        if edge == "capped":
            later = (r.major for r in dep.releases if r.epoch > epoch and r.major > current.major)
            cap = next(later, None)
            if cap is not None:
                bounds.append(f"<{cap}")
        return f"{dep.name} {','.join(bounds)}" if bounds else dep.name

    def _add_python(self) -> None:
        libs = [p for p in self.popular if p.kind == "lib" and p.layer < LIB_LAYERS // 2]
        edges: dict[str, Edge] = {p.name: "pin" for p in self.rng.sample(libs, 4)}
        releases = [
            Release(f"{line}.{patch}", epoch, until=epoch + 1)  # one patch release an epoch
            for line, start in PYTHON_LINES.items()
            for patch, epoch in enumerate(range(start, EPOCHS))
        ]
        python = Package("python", "python", LIB_LAYERS // 2, edges, releases)
        self._register(python)
        abi = [
            Release(line, start, depends=[f"python {line}.* *_cpython"])
            for line, start in PYTHON_LINES.items()
        ]
        self._register(Package("python_abi", "abi", LIB_LAYERS // 2, {}, abi))

    def _builds(self, package: Package) -> list[Build]:
        rebuilds: set[int] = set()
        for dep, edge in package.edges.items():
            if edge == "pin":
                rebuilds |= self.packages[dep].series_epochs
        if package.kind == "pyext":
            rebuilds |= set(PYTHON_LINES.values())
        builds = []
        for release in package.releases:
            epochs = [
                release.epoch,
                *sorted(e for e in rebuilds if release.epoch < e < release.until),
            ]
            for number, epoch in enumerate(epochs):
                if package.kind == "pyext":
                    builds += [
                        Build(release, number, epoch, line)
                        for line, start in PYTHON_LINES.items()
                        if start <= epoch
                    ]
                else:
                    builds.append(Build(release, number, epoch))
        return builds

    def depends(self, package: Package, build: Build) -> list[str]:
        """The depends of one build: its release's, pins as of the build, and the ABI."""
        depends = list(build.release.depends)
        for dep, edge in package.edges.items():
            if edge == "pin":
                current = self.packages[dep].at(build.epoch)
                if current is None:
                    depends.append(dep)
                else:
                    major, minor = current.series
                    depends.append(f"{dep} >={current.version},<{major}.{int(minor) + 1}.0a0")
        if package.kind in ("lib", "python", "pyext"):
            depends.append("__glibc >=2.17,<3.0.a0")
        if build.python is not None:
            python_minor = int(build.python.split(".")[1])
            depends.append(f"python >={build.python},<3.{python_minor + 1}.0a0")
            depends.append(f"python_abi {build.python}.* *_cp3{python_minor}")
        if package.kind == "noarch":
            depends.append(f"python >=3.{8 + build.release.epoch // 4}")
        return sorted(depends)

    def build_string(self, package: Package, build: Build) -> str:
        digest = f"{self.rng.getrandbits(28):07x}"
        if package.kind == "noarch":
            return f"pyhd8ed1ab_{build.number}"
        if package.kind == "abi":
            return f"5_cp{build.release.version.replace('.', '')}"
        if package.kind == "python":
            return f"h{digest}_{build.number}_cpython"
        if build.python is not None:
            return f"py{build.python.replace('.', '')}h{digest}_{build.number}"
        return f"h{digest}_{build.number}"


@dataclass
class ChannelStats:
    records: int
    names: int
    repodata_bytes: int
    seconds: float


def write_channel(generator: ChannelGenerator, dest: Path) -> ChannelStats:
    """Generate the packages and write `dest/{linux-64,noarch}/repodata.json`, with every
    record both as .tar.bz2 and as .conda (different files: their own hashes and size)."""
    started = time.perf_counter()
    packages = generator.generate()
    rng = generator.rng
    repodata: dict[str, dict[str, Any]] = {
        subdir: {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": {},
            "repodata_version": 1,
        }
        for subdir in (PLATFORM, "noarch")
    }
    for package in packages.values():
        subdir = "noarch" if package.kind == "noarch" else PLATFORM
        for build in package.builds:
            record: dict[str, object] = {
                "name": package.name,
                "version": build.release.version,
                "build": generator.build_string(package, build),
                "build_number": build.number,
                "depends": generator.depends(package, build),
                "license": rng.choice(LICENSES),
                "subdir": subdir,
                "timestamp": FIRST_TIMESTAMP_MS + build.epoch * EPOCH_MS + rng.randrange(EPOCH_MS),
            }
            if package.kind == "noarch":
                record["noarch"] = "python"
            stem = f"{package.name}-{record['version']}-{record['build']}"
            for key, extension in (("packages", ".tar.bz2"), ("packages.conda", ".conda")):
                repodata[subdir][key][stem + extension] = {
                    **record,
                    "md5": f"{rng.getrandbits(128):032x}",
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "size": rng.randint(5_000, 50_000_000),
                }
    size = 0
    for subdir, data in repodata.items():
        path = dest / subdir / "repodata.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, separators=(",", ":")))
        size += path.stat().st_size
    return ChannelStats(generator.record_count, len(packages), size, time.perf_counter() - started)


def reachable(packages: dict[str, Package], roots: Iterable[str]) -> tuple[int, int]:
    """Names and records that a solve of `roots` can reach through any record's depends."""
    todo = [*roots, "python_abi"]  # python_abi is named by extension builds only
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(packages[name].edges)
            todo.extend(packages[name].dropped)
    return len(seen), sum(len(packages[name].builds) for name in seen)


@dataclass
class Result:
    env: str
    specs: int
    reach_names: int
    reach_records: int
    locked: int = 0
    worker: int = 0
    lock_times: list[float] = field(default_factory=list)
    union_times: list[float] = field(default_factory=list)
    baseline_times: list[float] = field(default_factory=list)
    mismatches: int = 0


def time_cli_lock(env: str, envs_dir: Path, build_dir: Path, channel: str) -> float:
    """One `buildtool lock ENV` in a fresh process, writing the lock from scratch."""
    (envs_dir / env / LOCK_FILE).unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "--root",
        str(envs_dir),
        "--build-dir",
        str(build_dir),
        "lock",
        env,
        "--channel",
        channel,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"buildtool lock {env} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def time_union_solve(env: Environment, channel: str) -> float:
    """The one solve that `buildtool lock` makes, without the process around it."""
    started = time.perf_counter()
    solve_with_rattler([r.spec for r in env.all_requirements()], [channel], PLATFORM)
    return time.perf_counter() - started


def time_two_solves(env: Environment, channel: str) -> tuple[float, int]:
    """Today's deployment: notebook and worker solved apart. Returns the time and how
    many packages the two images share with a different version or build."""
    started = time.perf_counter()
    images = [
        solve_with_rattler([r.spec for r in env.roots(image)], [channel], PLATFORM)
        for image in ROLES
    ]
    seconds = time.perf_counter() - started
    worker, notebook = ({p.name: (p.version, p.build) for p in solved} for solved in images)
    return seconds, sum(1 for name, pick in worker.items() if notebook.get(name, pick) != pick)


def run(records: int, work: Path) -> int:
    environments = REPO / "environments"
    envs = {name: load_environment(environments, name) for name in SEED_ENVIRONMENTS}
    names = {r.name for env in envs.values() for r in env.all_requirements()}
    notebook_only = {r.name for env in envs.values() for r in env.notebook.dependencies}
    notebook_only -= {r.name for env in envs.values() for r in env.roots("worker")}
    generator = ChannelGenerator(names, notebook_only, records, random.Random(RANDOM_SEED))
    channel_dir = work / "channel"
    shutil.rmtree(channel_dir, ignore_errors=True)
    stats = write_channel(generator, channel_dir)
    channel = channel_dir.resolve().as_uri()
    print(
        f"channel {channel}: {stats.records:,} records ({2 * stats.records:,} repodata "
        f"entries, .tar.bz2 and .conda), {stats.names:,} names, "
        f"{stats.repodata_bytes / 1e6:.0f} MB repodata, generated in {stats.seconds:.1f} s"
    )

    envs_dir, build_dir = work / "environments", work / "build"
    shutil.rmtree(envs_dir, ignore_errors=True)
    shutil.copytree(environments, envs_dir, ignore=shutil.ignore_patterns(LOCK_FILE))
    print(f"load average before timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = []
    for name, env in envs.items():
        roots = {r.name for r in env.all_requirements()}
        result = Result(name, len(env.all_requirements()), *reachable(generator.packages, roots))
        for _ in range(REPEATS):
            result.lock_times.append(time_cli_lock(name, envs_dir, build_dir, channel))
            result.union_times.append(time_union_solve(env, channel))
            seconds, result.mismatches = time_two_solves(env, channel)
            result.baseline_times.append(seconds)
        lock = read_lock(envs_dir / name / LOCK_FILE)
        result.locked = len(lock.package)
        result.worker = sum(1 for p in lock.package if p.in_worker)
        results.append(result)
        print(f"{name}: locked {result.locked} packages", flush=True)
    print(f"load average after timing: {os.getloadavg()[0]:.1f}")
    print_table(results)
    return 0


def print_table(results: list[Result]) -> None:
    header = (
        "env",
        "specs",
        "reachable names / records",
        "locked (worker)",
        "lock min",
        "lock median",
        "union solve",
        "2 solves min",
        "2 solves median",
        "nb/worker differ",
    )
    rows = [
        (
            r.env,
            str(r.specs),
            f"{r.reach_names:,} / {r.reach_records:,}",
            f"{r.locked} ({r.worker})",
            f"{min(r.lock_times):.2f} s",
            f"{statistics.median(r.lock_times):.2f} s",
            f"{statistics.median(r.union_times):.2f} s",
            f"{min(r.baseline_times):.2f} s",
            f"{statistics.median(r.baseline_times):.2f} s",
            str(r.mismatches),
        )
        for r in results
    ]
    print()
    print(table(rows, header))
    print()
    print(
        "lock: `buildtool lock` in a new process, writing the lock; union solve: its one "
        "solve in-process (median);\n2 solves: notebook and worker roots solved apart "
        "in-process, as deployed today; nb/worker differ: packages both images get in a "
        "different build that way.\n"
    )
    for r in results:
        median = statistics.median(r.lock_times)
        verdict = "PASS" if median < TARGET_SECONDS else "FAIL"
        print(f"{verdict} {r.env}: median {median:.2f} s vs target {TARGET_SECONDS:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to generate")
    parser.add_argument("--keep", type=Path, help="keep channel, specs and locks in this folder")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lock-")))
        return run(args.records, work)


if __name__ == "__main__":
    sys.exit(main())
