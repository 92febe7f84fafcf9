"""Cold build, bytes pushed and no-op nightly of the physlite pair, against baselines.

    python -m bench.build [--repeat 3]

Everything is measured in one run, offline, on the physlite environment locked against
the conda-forge stand-in (packages fetched over HTTP from 127.0.0.1, as from conda-forge),
on the debootstrap base images, with the local registry. It empties the Docker build
cache (`docker builder prune`) before each cold build.

* ours: `buildtool build physlite` with no BuildKit cache (the worker, then the notebook
  layered on it), and `buildtool publish` into a fresh namespace;
* the naive baseline, the deployment today: the two images built apart from two
  Dockerfiles, each installing its whole set from scratch on the same base with the same
  py-rattler builder stage, each with its own package cache, then `docker push`ed;
* the floor: py-rattler alone fetching and installing the notebook set into an empty
  prefix on the host, with an empty package cache.

Cold times are medians of --repeat runs. Image sizes are the compressed sizes of the
manifests' blobs in the registry and `docker image inspect` Size. The no-op nightly is a
`buildtool publish` of unchanged content after every local image and the build cache are
removed (a fresh CI runner). The temporary namespaces' local tags are removed at the end.
"""

from __future__ import annotations

import argparse
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
from collections import Counter
from collections.abc import Callable
from dataclasses import astuple, dataclass
from importlib.metadata import version
from pathlib import Path

from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined
from jinja2 import Environment as Jinja

from buildtool import standin
from buildtool.build import docker_cli
from buildtool.lockfile import read_lock
from buildtool.publish import GZIP_LEVEL
from buildtool.registry import MANIFEST_V2, OCI_MANIFEST, Credentials, Registry, split_reference
from buildtool.render import BASE_APT, PREFIX, ROLES, TEMPLATES, RenderedPair, render
from buildtool.spec import Environment, load_environment
from buildtool.standin import StandIn
from tests.support.registry import RegistryCredentials, docker_login, registry_credentials

REPO = Path(__file__).resolve().parents[1]
ENV_NAME = "physlite"
SPECS = ("base", "physlite")  # the spec and the one it extends
PAIR_PUSH_TARGET = 1.1  # pair push <= this x the notebook image's own compressed size
COLD_SPEEDUP_TARGET = 1.8  # cold pair build >= this x faster than the naive baseline
FLOOR_TARGET = 1.5  # cold pair build <= this x the floor
LOG_TAIL = 30
# `docker push` reports each layer as one of these when it is done with it.
PUSH_OUTCOME = r"^\w+: (Pushed|Mounted from|Layer already exists)"
COMMANDS = {
    "worker": ["dask", "worker", "--help"],
    "notebook": ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser"],
}

# One image as the deployment builds it today: its whole set, from scratch, on the base.
NAIVE_DOCKERFILE = """\
# Baseline for bench/build.py: the {{ role }} image on its own, whole set from scratch.
{% include "_rattler_builder.j2" %}
{# Built apart: each image has its own package cache, as two separate builds do; the same
   installer as ours, bootstrap first, then the rest in place. #}
{% set install %}
RUN --mount=type=bind,from=rattler,source=/opt/rattler,target=/opt/rattler \\
    --mount=type=bind,source=.,target=/build \\
    --mount=type=cache,id=bench-naive-{{ role }},uid=1000,gid=100,\\
target=/home/jovyan/.cache/rattler \\
    PYTHONPATH=/opt/rattler {python} /build/install.py /build/conda-lock.yml {{ platform }} \\
      /build/{{ explicit }} {{ prefix }} --cache /home/jovyan/.cache/rattler{extra}
{% endset %}
FROM rattler AS bootstrap
USER 1000:100
{{ install.replace("{python}", "python3").replace("{extra}", " --python-only") }}

FROM {{ base_image }}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV LANG=C.UTF-8 \\
    CONDA_DIR=/srv/conda \\
    CONDA_PREFIX={{ prefix }} \\
    NB_USER=jovyan \\
    NB_UID=1000 \\
    NB_GID=100 \\
    HOME=/home/jovyan \\
    PATH={{ prefix }}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{% set apt = base_apt + image.apt %}{% include "_apt.j2" %}
RUN useradd --create-home --uid 1000 --gid 100 --shell /bin/bash jovyan \\
 && mkdir -p /srv/conda/envs && chown -R 1000:100 /srv/conda
COPY --from=bootstrap --chown=1000:100 {{ prefix }} {{ prefix }}
USER 1000:100
{{ install.replace("{python}", "python").replace("{extra}", "") }}
{% if image.pip %}
USER 1000:100
RUN --mount=type=cache,target=/home/jovyan/.cache/pip,uid=1000,gid=100 \\
    python -m pip install --no-deps {{ image.pip | join(" ") }}
{% endif %}
{% for key, value in variables.items() %}
ENV {{ key }}="{{ value }}"
{% endfor %}
USER 1000:100
WORKDIR /home/jovyan
{% if role == "notebook" %}
EXPOSE 8888
{% endif %}
ENTRYPOINT ["tini", "-g", "--"]
CMD {{ command }}
"""


@dataclass(frozen=True)
class ImageSize:
    compressed: int  # config + layers, as stored in the registry
    uncompressed: int  # `docker image inspect` Size


@dataclass(frozen=True)
class PairSizes:
    images: dict[str, ImageSize]  # role -> size
    distinct_blobs: int  # bytes of the blobs the two manifests reference, each once


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
    """The scratch workspace, the registry and the flags every step shares."""

    work: Path
    credentials: RegistryCredentials
    standin: StandIn
    repeat: int

    @property
    def base_image(self) -> str:
        return self.standin.base_image

    @property
    def builder_image(self) -> str:
        return self.standin.builder_image

    @property
    def root(self) -> Path:
        return self.work / "environments"

    @property
    def build_dir(self) -> Path:
        return self.work / "build"

    @property
    def image_flags(self) -> list[str]:
        return ["--base-image", self.base_image, "--builder-image", self.builder_image]

    def registry(self) -> Registry:
        c = self.credentials
        return Registry(c.registry, Credentials(c.user, c.password))

    def namespace(self, kind: str) -> str:
        return f"{self.credentials.registry}/bench{kind}{uuid.uuid4().hex[:8]}"


def progress(message: str) -> None:
    print(f"[bench.build {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {result.returncode}:\n{tail}")
    return result.stdout


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# -- ours ---------------------------------------------------------------------------------
def lock_spec(bench: Bench) -> Environment:
    for name in SPECS:
        (bench.root / name).mkdir(parents=True)
        shutil.copy(REPO / "environments" / name / "env.yaml", bench.root / name)
    command = [sys.executable, "-m", "buildtool.cli", "--root", str(bench.root), "lock",
               ENV_NAME, "--channel", bench.standin.channel]  # fmt: skip
    run(command, bench.work / "lock.log", cwd=bench.work)
    return load_environment(bench.root, ENV_NAME)


def build_ours(bench: Bench, registry: str) -> None:
    command = [sys.executable, "-m", "buildtool.cli", "--root", str(bench.root), "build",
               ENV_NAME, "--quiet", "--registry", registry, *bench.image_flags]  # fmt: skip
    run(command, bench.work / "build.log", cwd=bench.work)


def empty_docker_cache(namespaces: list[str]) -> None:
    """What a fresh runner has: no build cache, no image of ours (base images stay)."""
    remove_local_tags(namespaces)
    subprocess.run([docker_cli(), "builder", "prune", "-af"], capture_output=True, check=True)


def install_floor(env: Environment, scratch: Path) -> None:
    """py-rattler alone: fetch and install the notebook set into an empty prefix."""
    import asyncio

    import rattler

    lock = rattler.LockFile.from_path(env.lock_path).default_environment()
    platform = next(p for p in lock.platforms() if p.name == "linux-64")
    records = lock.conda_repodata_records_for_platform(platform)
    shutil.rmtree(scratch, ignore_errors=True)
    asyncio.run(rattler.install(records, target_prefix=scratch / "prefix",
                                cache_dir=scratch / "cache", show_progress=False))  # fmt: skip


def publish_ours(bench: Bench, registry: str, log: Path) -> str:
    """`buildtool publish` as a user runs it; returns its output."""
    c = bench.credentials
    command = [sys.executable, "-m", "buildtool.cli", "--root", str(bench.root), "publish",
               ENV_NAME, "--quiet", "--registry", registry, *bench.image_flags]  # fmt: skip
    env = {**os.environ, "REGISTRY_USER": c.user, "REGISTRY_PASSWORD": c.password}
    return run(command, log, cwd=bench.work, env=env)


def bytes_pushed(output: str) -> int:
    match = re.search(r"^bytes pushed: (\d+)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"`buildtool publish` printed no byte count:\n{output[-2000:]}")
    return int(match.group(1))


# -- baseline -----------------------------------------------------------------------------
def naive_context(
    bench: Bench, pair: RenderedPair, env: Environment, refs: dict[str, str], dest: Path
) -> None:
    """The baseline's build context: the rendered files, and one Dockerfile per image."""
    rendered = Path(pair.directory)
    dest.mkdir()
    for name in ("install.py", "conda-lock.yml", "worker.explicit", "notebook.explicit"):
        os.link(rendered / name, dest / name)
    jinja = Jinja(
        loader=ChoiceLoader([DictLoader({"naive": NAIVE_DOCKERFILE}), FileSystemLoader(TEMPLATES)]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    variables = {
        "worker": env.worker.env,
        "notebook": {"DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE": refs["worker"], **env.notebook.env},
    }
    for role in ROLES:
        text = jinja.get_template("naive").render(
            role=role,
            explicit=f"{role}.explicit",
            image=env.image(role),
            variables=variables[role],
            command=json.dumps(COMMANDS[role]),
            prefix=PREFIX,
            base_apt=BASE_APT,
            base_image=bench.base_image,
            builder_image=bench.builder_image,
            rattler_version=version("py-rattler"),
            platform=pair.platform,
        )
        (dest / f"{role}.Dockerfile").write_text(text)


def build_naive(context: Path, refs: dict[str, str]) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for role in ROLES:
        dockerfile = context / f"{role}.Dockerfile"
        command = [docker_cli(), "build", "--progress=plain", "--network=host",
                   "-f", str(dockerfile), "-t", refs[role], str(context)]  # fmt: skip
        run(command, context.parent / f"naive-{role}-build.log", env=env)


def push_naive(context: Path, refs: dict[str, str], docker_config: Path) -> Counter[str]:
    """`docker push` both images; counts the layers by what happened to them."""
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    layers: Counter[str] = Counter()
    for role in ROLES:
        log = context.parent / f"naive-{role}-push.log"
        output = run([docker_cli(), "push", refs[role]], log, env=env)
        layers.update(re.findall(PUSH_OUTCOME, output, re.MULTILINE))
    return layers


# -- measuring ----------------------------------------------------------------------------
def manifest_blobs(registry: Registry, ref: str) -> dict[str, int]:
    """digest -> size of the config and layers that the manifest under `ref` references."""
    repository, _, tag = ref.rpartition(":")
    _, name = split_reference(repository)
    _, _, body = registry.request(
        "GET",
        f"/v2/{name}/manifests/{tag}",
        scope=f"repository:{name}:pull",
        headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"},
    )
    manifest = json.loads(body)
    return {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}


def uncompressed_size(ref: str) -> int:
    result = subprocess.run(
        [docker_cli(), "image", "inspect", "--format", "{{.Size}}", ref],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout)


def measure_pair(registry: Registry, refs: dict[str, str]) -> PairSizes:
    blobs = {role: manifest_blobs(registry, refs[role]) for role in ROLES}
    images = {
        role: ImageSize(sum(blobs[role].values()), uncompressed_size(refs[role])) for role in ROLES
    }
    distinct = {digest: size for role in ROLES for digest, size in blobs[role].items()}
    return PairSizes(images, sum(distinct.values()))


def remove_local_tags(namespaces: list[str]) -> None:
    listing = subprocess.run(
        [docker_cli(), "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tags = [t for t in listing.stdout.split() if t.startswith(tuple(f"{n}/" for n in namespaces))]
    if not tags:
        return
    removed = subprocess.run([docker_cli(), "image", "rm", *tags], capture_output=True, text=True)
    if removed.returncode != 0:
        progress(f"could not remove every local tag: {removed.stderr.strip()}")


# -- report -------------------------------------------------------------------------------
def mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[Row]) -> str:
    header = Row("metric", "ours", "baseline", "ours / baseline", "target", "result")
    cells = [astuple(row) for row in [header, *rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def size_rows(ours: PairSizes, naive: PairSizes) -> list[Row]:
    rows = []
    for role in ("notebook", "worker"):
        for kind in ("compressed", "uncompressed"):
            a = getattr(ours.images[role], kind)
            b = getattr(naive.images[role], kind)
            where = "registry" if kind == "compressed" else "docker image inspect"
            rows.append(Row(f"(a) {role} image, {kind} ({where})", mb(a), mb(b),
                            f"{a / b:.2f}", "-", "-"))  # fmt: skip
    return rows


def layer_lines(registry: Registry, refs: dict[str, str]) -> list[str]:
    """The notebook image's layers, largest first, marked shared (with its worker) or not."""
    worker = manifest_blobs(registry, refs["worker"])
    notebook = manifest_blobs(registry, refs["notebook"])
    lines = []
    for digest, size in sorted(notebook.items(), key=lambda item: -item[1]):
        where = "shared with the worker" if digest in worker else "notebook only"
        lines.append(f"{digest[7:19]} {mb(size):>10} ({where})")
    return lines


def report(bench: Bench, ours_ns: str, naive_ns: str) -> str:
    registry = bench.registry()
    progress(f"locking {ENV_NAME} against the stand-in ({bench.standin.channel})")
    env = lock_spec(bench)
    pair = render(
        env, read_lock(env.lock_path), bench.build_dir, registry=ours_ns,
        base_image=bench.base_image, builder_image=bench.builder_image,
    )  # fmt: skip
    naive_refs = {role: f"{naive_ns}/{env.image(role).image}:naive" for role in ROLES}
    context = bench.work / "naive"
    naive_context(bench, pair, env, naive_refs, context)

    cold_ours, cold_naive, floor_runs = [], [], []
    for i in range(bench.repeat):
        progress(f"cold builds, run {i + 1} of {bench.repeat}: ours, naive, floor")
        empty_docker_cache([ours_ns, naive_ns])
        cold_ours.append(timed(lambda: build_ours(bench, ours_ns)))
        empty_docker_cache([ours_ns, naive_ns])
        cold_naive.append(timed(lambda: build_naive(context, naive_refs)))
        floor_runs.append(timed(lambda: install_floor(env, bench.work / "floor")))

    progress(f"ours: buildtool publish {ENV_NAME} --registry {ours_ns} (build, test, push)")
    publish_ours(bench, ours_ns, bench.work / "publish-1.log")
    published = json.loads((Path(pair.directory) / "published.json").read_text())
    ours_refs = {role: pair.image(role).ref for role in ROLES}
    ours = measure_pair(registry, ours_refs)

    progress(f"baseline: docker push to {naive_ns}")
    docker_config = bench.work / "docker-config"
    docker_login(bench.credentials, docker_config)
    push_naive(context, naive_refs, docker_config)
    naive = measure_pair(registry, naive_refs)

    progress(f"no-op nightly on an empty Docker cache, {bench.repeat} runs")
    noop_times, noop_bytes = [], 0
    for i in range(bench.repeat):
        empty_docker_cache([ours_ns, naive_ns])
        started = time.perf_counter()
        output = publish_ours(bench, ours_ns, bench.work / f"publish-noop-{i}.log")
        noop_times.append(time.perf_counter() - started)
        noop_bytes += bytes_pushed(output)

    ours_s, naive_s = statistics.median(cold_ours), statistics.median(cold_naive)
    floor = statistics.median(floor_runs)
    speedup, over_floor = naive_s / ours_s, ours_s / floor
    ours_push = published["bytes_pushed"]
    ours_ratio = ours_push / ours.images["notebook"].compressed
    naive_ratio = naive.distinct_blobs / naive.images["notebook"].compressed
    rows = [
        Row(f"cold build of the pair, median of {bench.repeat}", f"{ours_s:.1f} s",
            f"{naive_s:.1f} s", f"{speedup:.2f}x faster", f">= {COLD_SPEEDUP_TARGET}x faster",
            verdict(speedup >= COLD_SPEEDUP_TARGET)),
        Row("cold build / floor (rattler alone, notebook set)", f"{ours_s:.1f} s",
            f"{floor:.1f} s (floor)", f"{over_floor:.2f}x the floor",
            f"<= {FLOOR_TARGET}x", verdict(over_floor <= FLOOR_TARGET)),
        Row("pair push, bytes", mb(ours_push), mb(naive.distinct_blobs),
            f"{ours_push / naive.distinct_blobs:.2f}", "-", "-"),
        Row("pair push / own notebook image (compressed)", f"{ours_ratio:.2f}x",
            f"{naive_ratio:.2f}x", "-", f"<= {PAIR_PUSH_TARGET:.1f}x",
            verdict(ours_ratio <= PAIR_PUSH_TARGET)),
        *size_rows(ours, naive),
        Row(f"no-op nightly, empty Docker cache, median of {bench.repeat}",
            f"{statistics.median(noop_times):.2f} s", "-", "-", "0 bytes pushed",
            verdict(noop_bytes == 0)),
    ]  # fmt: skip
    notes = [
        f"Environment {ENV_NAME}: {len(read_lock(env.lock_path).package)} locked packages "
        f"from {bench.standin.channel}; ours in {ours_ns}, baseline in {naive_ns}.",
        "Cold runs (s), ours: "
        + ", ".join(f"{t:.1f}" for t in cold_ours)
        + "; naive: "
        + ", ".join(f"{t:.1f}" for t in cold_naive)
        + "; floor: "
        + ", ".join(f"{t:.1f}" for t in floor_runs)
        + ".",
        f"No-op runs: {', '.join(f'{t:.2f}' for t in noop_times)} s, "
        f"{noop_bytes} bytes pushed (whole CLI process, nothing built).",
        f"Compressed sizes differ by compression: `buildtool publish` gzips layers at level "
        f"{GZIP_LEVEL}, `docker push` at gzip's default.",
        "Notebook image layers (compressed, in the registry):",
        *(f"  {line}" for line in layer_lines(registry, ours_refs)),
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing")
    args = parser.parse_args()

    credentials = registry_credentials()
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        bench = Bench(Path(scratch), credentials, standin.up(), args.repeat)
        ours_ns, naive_ns = bench.namespace("ours"), bench.namespace("naive")
        try:
            print(report(bench, ours_ns, naive_ns))
        finally:
            progress(f"removing the local tags of {ours_ns} and {naive_ns}")
            remove_local_tags([ours_ns, naive_ns])


if __name__ == "__main__":
    main()
