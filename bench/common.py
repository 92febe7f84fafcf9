"""What the build benchmarks share: a scratch workspace, timing, the registry, the table;
a cold engine and caches; the build's own statistics; the two floors.

The floors, which bench.build and bench.layers each measure in their own run:

* the install floor (`install_floor`): py-rattler alone fetching and installing the
  lock's linux-64 notebook set (every conda package of the pair) into an empty prefix,
  with an empty package cache; only the install is timed;
* the engine floor (`engine_floor`): `docker import` of that prefix as ONE uncompressed
  tar (`tar -C prefix -cf prefix.tar .`, not timed): the least the engine takes to take
  in the pair's bytes. The imported image is removed at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import rattler

from buildtool.image import STATS_FILE, BuildStats, locked_records
from buildtool.lock import LAB_ENV, read_lock
from buildtool.publish import MANIFEST_TYPES, Credentials, Registry, split_reference
from buildtool.spec import Environment, load_environment
from devsupport import log_progress, standin
from devsupport.dockercli import docker, remove_local_tags
from devsupport.localregistry import RegistryCredentials, registry_credentials
from devsupport.standin import StandIn

REPO = Path(__file__).resolve().parents[1]
LOG_TAIL = 30
# The system stages' images, which `buildtool build` tags in the engine.
SYSTEM_IMAGES = "buildtool-system/"
# What `buildtool build ENV` writes in build/ENV after every build (the build inside
# `buildtool publish` too), and what `buildtool publish` writes there.
PUBLISHED_FILE = "published.json"
FLOOR_PLATFORM = "linux-64"


@dataclass(frozen=True)
class Row:
    metric: str
    ours: str
    baseline: str
    ratio: str
    target: str
    result: str


@dataclass
class Bench:
    """The scratch workspace, the registry and the stand-in every step shares."""

    name: str  # the benchmark, for progress lines
    work: Path
    credentials: RegistryCredentials
    standin: StandIn
    repeat: int
    # The benchmark's own options (`main(..., options=...)`), parsed.
    options: argparse.Namespace = field(default_factory=argparse.Namespace)

    @property
    def root(self) -> Path:
        return self.work / "environments"

    @property
    def build_dir(self) -> Path:
        return self.work / "build"

    @property
    def image_flags(self) -> list[str]:
        return ["--base-image", self.standin.base_image]

    @property
    def builder_image(self) -> str:
        """The baselines' builder image (`main(..., builder=True)` makes it)."""
        if self.standin.builder_image is None:
            raise RuntimeError("the stand-in was made without the builder image")
        return self.standin.builder_image

    @property
    def namespaces(self) -> str:
        """What every namespace of the benchmarks starts with (`namespace`), this run's and
        any earlier run's."""
        return f"{self.credentials.registry}/bench"

    def registry(self) -> Registry:
        c = self.credentials
        return Registry(c.registry, Credentials(c.user, c.password))

    def namespace(self, kind: str) -> str:
        return f"{self.credentials.registry}/bench{kind}{uuid.uuid4().hex[:8]}"

    def progress(self, message: str) -> None:
        print(f"[{self.name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def buildtool(self, *args: str, log: str, env: dict[str, str] | None = None) -> str:
        command = [sys.executable, "-m", "buildtool.cli", "--root", str(self.root), *args]
        return run(command, self.work / log, cwd=self.work, env=env)

    def registry_env(self) -> dict[str, str]:
        c = self.credentials
        return {**os.environ, "REGISTRY_USER": c.user, "REGISTRY_PASSWORD": c.password}

    def lock(
        self, env_name: str, specs: tuple[str, ...], edit: Callable[[str], str] | None = None
    ) -> Environment:
        """Copy the specs (the last one changed by `edit`) and lock against the stand-in."""
        for name in specs:
            (self.root / name).mkdir(parents=True, exist_ok=True)
            text = (REPO / "environments" / name / "env.yaml").read_text()
            if edit is not None and name == specs[-1]:
                text = edit(text)
            (self.root / name / "env.yaml").write_text(text)
        self.buildtool("lock", env_name, "--channel", self.standin.channel, log="lock.log")
        return load_environment(self.root, env_name)

    def cold(self, *folders: Path) -> None:
        """`empty_caches` for every namespace of the benchmarks (earlier runs' too), the
        system stages' images, and `folders` (package caches, layer stores)."""
        empty_caches([self.namespaces, SYSTEM_IMAGES], *folders)

    def build(
        self, env_name: str, registry: str, *, log: str, env: dict[str, str]
    ) -> tuple[float, BuildStats]:
        """`buildtool build ENV`: the process's wall time (Python's start-up included: what
        a user waits for) and the build's own statistics. The old statistics are removed
        first, so a build that writes none fails here instead of reporting the last's."""
        (self.build_dir / env_name / STATS_FILE).unlink(missing_ok=True)
        started = time.perf_counter()
        self.buildtool(
            "build",
            env_name,
            "--quiet",
            "--registry",
            registry,
            *self.image_flags,
            log=log,
            env=env,
        )
        seconds = time.perf_counter() - started
        return seconds, read_build_stats(self.build_dir, env_name)

    def cold_build(
        self,
        env_name: str,
        registry: str,
        folders: Sequence[Path],
        *,
        log: str,
        env: dict[str, str],
    ) -> tuple[float, BuildStats]:
        """`cold` (with `folders`), then `build`, checked to have sent its layers to the
        engine (`require_cold`)."""
        self.cold(*folders)
        seconds, stats = self.build(env_name, registry, log=log, env=env)
        require_cold(stats, f"the cold build of {env_name} ({log})")
        return seconds, stats


def main(
    name: str,
    doc: str,
    report: Callable[[Bench], str],
    platforms: tuple[str, ...] = ("linux-64",),
    builder: bool = False,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """A benchmark's command line: --repeat, a scratch workspace, the table on stdout; the
    local tags of its namespaces (`Bench.namespace`) are removed at the end. The stand-in
    makes the base images of `platforms`, and the builder image if `builder` (the
    baselines' builder stages)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per timed row (each row is their median)"
    )
    if options is not None:
        options(parser)
    args = parser.parse_args()
    os.environ[LAB_ENV] = "1"  # the benchmarks are the lab: their locks name the stand-in
    log_progress()  # the stand-in's, while it builds
    credentials = registry_credentials()
    with tempfile.TemporaryDirectory(prefix=f"{name.replace('.', '-')}-") as scratch:
        made = standin.up(platforms, builder)
        bench = Bench(name, Path(scratch), credentials, made, args.repeat, args)
        try:
            print(report(bench))
        finally:
            remove_local_tags(f"{credentials.registry}/bench")


def run(
    command: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a command with its output in `log`; raise with the log's tail if it fails."""
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
    )
    log.write_text(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-LOG_TAIL:])
        raise RuntimeError(f"{' '.join(command[:6])} ... exited {result.returncode}:\n{tail}")
    return result.stdout


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def remove_images(*prefixes: str) -> None:
    """Remove every local image whose repository starts with one of `prefixes` (by tag, or
    by digest when it has no tag), then every dangling image; raise if one is left."""

    def listed() -> list[str]:
        listing = docker(
            "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"
        ).stdout.decode()
        refs = []
        for line in listing.splitlines():
            repository, tag, digest = line.split()
            if not repository.startswith(prefixes):
                continue
            if tag != "<none>":
                refs.append(f"{repository}:{tag}")
            elif digest != "<none>":
                refs.append(f"{repository}@{digest}")
        return sorted(set(refs))

    refs = listed()
    failure = docker("rmi", *refs, check=False).stderr.decode().strip() if refs else ""
    left = listed()
    if left:
        raise RuntimeError(f"could not remove {', '.join(left)} from the engine:\n{failure}")
    docker("image", "prune", "--force")  # dangling: untagged and used by no other image


def empty_caches(prefixes: list[str], *folders: Path) -> None:
    """What a fresh runner has: no build cache, no image under `prefixes` and no dangling
    image, no package cache or layer store (`folders`); the base images stay.

    The engine may still hold the pair's layers in images under other names (a pair
    built outside the benchmarks, by `make build` or the tests): a cold build then sends
    nothing, and `require_cold` fails. The cold rows need an engine that holds none of
    the pair's layers."""
    remove_images(*prefixes)
    docker("builder", "prune", "-af")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


# -- what the build says it did ------------------------------------------------------------


def stats_summary(stats: BuildStats) -> str:
    return (
        f"build_pair {stats.seconds:.1f} s, {stats.layers} layers, "
        f"{stats.layers_written} written ({mb(stats.bytes_written)}), "
        f"{stats.layers_sent} sent ({mb(stats.bytes_sent)}), "
        f"{stats.packages_installed} packages installed, "
        f"system stages {'built' if stats.system_built else 'from the store'}"
    )


def _read_fields(path: Path, data: Any, wanted: Mapping[str, type], what: str) -> dict[str, Any]:
    """The `wanted` fields of `data` (read from `path`), each of its type; raise naming the
    file and the field when one is missing or of another type."""
    if not isinstance(data, dict):
        raise RuntimeError(f"{path}: {what} is not a JSON object")
    out = {}
    for name, kind in wanted.items():
        if name not in data:
            raise RuntimeError(f"{path}: no {name!r} in {what}")
        value = data[name]
        numeric = kind is float and isinstance(value, int) and not isinstance(value, bool)
        if not (isinstance(value, kind) or numeric) or (kind is int and isinstance(value, bool)):
            raise RuntimeError(f"{path}: {what}: {name!r} is {value!r}, not {kind.__name__}")
        out[name] = float(value) if kind is float else value
    return out


def _read_json(path: Path, writer: str) -> Any:
    if not path.exists():
        raise RuntimeError(f"{path}: missing; `{writer}` writes it")
    return json.loads(path.read_text())


def read_build_stats(build_dir: Path, env_name: str) -> BuildStats:
    path = build_dir / env_name / STATS_FILE
    data = _read_json(path, f"buildtool build {env_name}")
    wanted = {f.name: type(getattr(BuildStats(), f.name)) for f in fields(BuildStats)}
    return BuildStats(**_read_fields(path, data, wanted, "the build's statistics"))


def require_cold(stats: BuildStats, what: str) -> None:
    """Fail loudly unless the build sent layers to the engine: one that sent nothing found
    the pair's layers in the engine already, and was not cold."""
    if stats.bytes_sent > 0:
        return
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.decode()
    raise RuntimeError(
        f"{what} sent {stats.bytes_sent} bytes to the engine ({STATS_FILE}: bytes_sent): "
        "the engine already holds the pair's layers, under names the benchmarks do not "
        "remove. A cold build needs an engine that holds none of them: remove the images "
        "built from the same lock (e.g. another registry's jupyter-/dask-gateway- pair) and "
        f"run again. The engine holds:\n{listing}"
    )


@dataclass(frozen=True)
class PublishTimings:
    """`timings` of `build/ENV/published.json`, in seconds."""

    build: float
    image_tests: float
    push: float  # compression, blob uploads, the attached SBOMs and locks, the tags
    total: float

    @property
    def rest(self) -> float:
        """What is neither the build, the image tests nor the push."""
        return self.total - self.build - self.image_tests - self.push


def read_published(build_dir: Path, env_name: str) -> dict[str, Any]:
    path = build_dir / env_name / PUBLISHED_FILE
    data = _read_json(path, f"buildtool publish {env_name}")
    _read_fields(path, data, {"images": dict, "bytes_pushed": int}, "the publish record")
    return dict(data)


def publish_timings(build_dir: Path, env_name: str) -> PublishTimings:
    path = build_dir / env_name / PUBLISHED_FILE
    data = read_published(build_dir, env_name)
    _read_fields(path, data, {"timings": dict}, "the publish record")
    wanted = {name: float for name in ("build", "image_tests", "push", "total")}
    return PublishTimings(**_read_fields(path, data["timings"], wanted, "timings"))


# -- the floors ----------------------------------------------------------------------------


def install_floor(lock_path: Path, scratch: Path) -> tuple[float, Path]:
    """py-rattler alone: fetch and install the lock's notebook set (every conda package of
    the pair) into an empty prefix with an empty package cache, both under `scratch`
    (emptied first). The seconds of the install alone, and the prefix."""
    records = locked_records(
        lock_path, FLOOR_PLATFORM, read_lock(lock_path).packages("notebook", FLOOR_PLATFORM)
    )
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    prefix = scratch / "prefix"
    started = time.perf_counter()
    asyncio.run(
        rattler.install(
            records, target_prefix=prefix, cache_dir=scratch / "cache", show_progress=False
        )
    )
    return time.perf_counter() - started, prefix


def engine_floor(prefix: Path, scratch: Path) -> tuple[float, int]:
    """`docker import` of `prefix` as one uncompressed tar (made first, not timed): the
    seconds of the import, and the tar's size. The image is removed afterwards."""
    archive = scratch / "prefix.tar"
    run(["tar", "-C", str(prefix), "-cf", str(archive), "."], scratch / "tar.log")
    size = archive.stat().st_size
    tag = f"floor:{uuid.uuid4().hex[:12]}"
    try:
        started = time.perf_counter()
        docker("import", str(archive), tag)
        return time.perf_counter() - started, size
    finally:
        docker("rmi", tag, check=False)
        archive.unlink(missing_ok=True)


@dataclass
class Floors:
    """Both floors, once per `measure`; medians over the runs."""

    install: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)
    tar_bytes: int = 0

    def measure(self, lock_path: Path, scratch: Path) -> None:
        """The install floor, then the engine floor on its prefix; `scratch` is removed."""
        try:
            install_s, prefix = install_floor(lock_path, scratch)
            engine_s, self.tar_bytes = engine_floor(prefix, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.install.append(install_s)
        self.engine.append(engine_s)

    @property
    def install_s(self) -> float:
        return statistics.median(self.install)

    @property
    def engine_s(self) -> float:
        return statistics.median(self.engine)

    def note(self) -> str:
        return (
            f"Install floor (py-rattler alone, notebook set, empty prefix and package cache) "
            f"runs: {seconds_list(self.install)} s; engine floor (`docker import` of that "
            f"prefix as one uncompressed tar of {mb(self.tar_bytes)}) runs: "
            f"{seconds_list(self.engine)} s."
        )


def seconds_list(values: Sequence[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def runs_note(runs: Sequence[tuple[float, BuildStats]], digits: int = 1) -> str:
    """Each build's wall time with what its build-stats.json says."""
    return "; ".join(f"{t:.{digits}f} s ({stats_summary(stats)})" for t, stats in runs)


def manifest_blobs(registry: Registry, ref: str) -> dict[str, int]:
    """digest -> size of the config and layers that the manifest under `ref` references."""
    if "@" in ref:
        repository, _, tag = ref.partition("@")
    else:
        repository, _, tag = ref.rpartition(":")
    _, name = split_reference(repository)
    _, _, body = registry.request(
        "GET",
        f"/v2/{name}/manifests/{tag}",
        scope=f"repository:{name}:pull",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    manifest = json.loads(body)
    return {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}


def uncompressed_size(ref: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref).stdout)


def bytes_pushed(output: str) -> int:
    match = re.search(r"^bytes pushed: (\d+)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"`buildtool publish` printed no byte count:\n{output[-2000:]}")
    return int(match.group(1))


def mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


HEADER = ("metric", "ours", "baseline", "ours / baseline", "target", "result")


def table(rows: Sequence[Row] | Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    """A Markdown table, its columns padded to line up: Rows under HEADER, or any rows of
    cells under their own header."""
    cells = [tuple(header), *(astuple(r) if isinstance(r, Row) else tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
