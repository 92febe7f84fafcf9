"""What the build benchmarks share: a scratch workspace, timing, the registry, the table."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from buildtool.registry import MANIFEST_TYPES, Credentials, Registry, split_reference
from buildtool.spec import Environment, load_environment
from devsupport import log_progress, standin
from devsupport.dockercli import docker, remove_local_tags
from devsupport.registry import RegistryCredentials, registry_credentials
from devsupport.standin import StandIn

REPO = Path(__file__).resolve().parents[1]
LOG_TAIL = 30


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

    @property
    def root(self) -> Path:
        return self.work / "environments"

    @property
    def build_dir(self) -> Path:
        return self.work / "build"

    @property
    def image_flags(self) -> list[str]:
        return ["--base-image", self.standin.base_image]

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


def main(
    name: str,
    doc: str,
    report: Callable[[Bench], str],
    platforms: tuple[str, ...] = ("linux-64",),
    builder: bool = False,
) -> None:
    """A benchmark's command line: --repeat, a scratch workspace, the table on stdout; the
    local tags of its namespaces (`Bench.namespace`) are removed at the end. The stand-in
    makes the base images of `platforms`, and the builder image if `builder` (the
    baselines' builder stages)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per cold-build timing")
    args = parser.parse_args()
    log_progress()  # the stand-in's, while it builds
    credentials = registry_credentials()
    with tempfile.TemporaryDirectory(prefix=f"{name.replace('.', '-')}-") as scratch:
        bench = Bench(name, Path(scratch), credentials, standin.up(platforms, builder), args.repeat)
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


def empty_caches(prefixes: list[str], *folders: Path) -> None:
    """What a fresh runner has: no build cache, no image of ours, no package cache (the
    base images stay)."""
    remove_local_tags(*prefixes)
    docker("builder", "prune", "-af")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


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
