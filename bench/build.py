"""Bytes pushed and no-op nightly time of the layered pair, against today's two images.

    python -m bench.build [--repeat 3]

Everything is measured in one run, offline, on the e2e environment (locked against the
local channel of real packages, on the debootstrap base images) and the local registry:

* ours: `buildtool publish` into a fresh namespace; the notebook image is layered on its
  worker, so the pair pushes the shared environment once. Bytes pushed come from
  `build/e2e/published.json`.
* baseline, the deployment today: two images built apart from two Dockerfiles, each
  installing its whole conda set from scratch on the runtime base image (the same
  py-rattler builder stage as ours), built with BuildKit and `docker push`ed into another
  fresh namespace. Its bytes pushed are the sizes of the distinct blobs (config and
  layers) that the two pushed manifests reference, read from the registry: exact for a
  fresh namespace. Ours are measured the same way as a cross-check.

An image's own size is the compressed size of its manifest's blobs in the registry (the
target uses the notebook's) and, for reference, the uncompressed `docker image inspect`
Size. The no-op nightly is a second `buildtool publish` of the same content, timed as the
whole CLI process, against a fully cached `docker build` and `docker push` of both
baseline images; both are the median of --repeat runs. The temporary namespaces' local
tags are removed at the end; what went into the registry stays.
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

from buildtool.build import docker_cli
from buildtool.lockfile import read_lock
from buildtool.publish import GZIP_LEVEL
from buildtool.registry import MANIFEST_V2, OCI_MANIFEST, Credentials, Registry, split_reference
from buildtool.render import BASE_APT, PREFIX, ROLES, TEMPLATES, RenderedPair, render
from buildtool.spec import Environment, load_environment
from buildtool.standin.baseimage import ensure_base_image
from buildtool.standin.channel import build_real_channel
from tests.support.registry import RegistryCredentials, docker_login, registry_credentials

REPO = Path(__file__).resolve().parents[1]
ENV_NAME = "e2e"
SPECS = ("base", "e2e")  # the e2e spec and the one it extends
PAIR_PUSH_TARGET = 1.1  # pair push <= this x the notebook image's own compressed size
NOOP_SPEEDUP_TARGET = 5.0
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
COPY install.py {{ explicit }} /build/
RUN --mount=type=bind,source=pkgs,target=/pkgs \\
    /opt/rattler/bin/python /build/install.py /build/{{ explicit }} {{ prefix }}

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
COPY --from=rattler --chown=1000:100 {{ prefix }} {{ prefix }}
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
    base_image: str
    builder_image: str
    repeat: int

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
def lock_e2e(bench: Bench) -> Environment:
    for name in SPECS:
        (bench.root / name).mkdir(parents=True)
        shutil.copy(REPO / "environments" / name / "env.yaml", bench.root / name)
    channel = build_real_channel().resolve().as_uri()
    command = [sys.executable, "-m", "buildtool.cli", "--root", str(bench.root), "lock",
               ENV_NAME, "--channel", channel]  # fmt: skip
    run(command, bench.work / "lock.log", cwd=bench.work)
    return load_environment(bench.root, ENV_NAME)


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
    for name in ("install.py", "worker.explicit", "notebook.explicit"):
        os.link(rendered / name, dest / name)
    shutil.copytree(rendered / "pkgs", dest / "pkgs", copy_function=os.link)
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
        )
        (dest / f"{role}.Dockerfile").write_text(text)


def build_naive(context: Path, refs: dict[str, str]) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for role in ROLES:
        dockerfile = context / f"{role}.Dockerfile"
        command = [docker_cli(), "build", "--progress=plain", "-f", str(dockerfile),
                   "-t", refs[role], str(context)]  # fmt: skip
        run(command, context.parent / f"naive-{role}-build.log", env=env)


@dataclass(frozen=True)
class NaiveRun:
    build_s: float
    push_s: float
    layers: Counter[str]  # what `docker push` did with each layer: Pushed, Mounted, ...

    @property
    def seconds(self) -> float:
        return self.build_s + self.push_s


def push_naive(context: Path, refs: dict[str, str], docker_config: Path) -> Counter[str]:
    """`docker push` both images; counts the layers by what happened to them."""
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    layers: Counter[str] = Counter()
    for role in ROLES:
        log = context.parent / f"naive-{role}-push.log"
        output = run([docker_cli(), "push", refs[role]], log, env=env)
        layers.update(re.findall(PUSH_OUTCOME, output, re.MULTILINE))
    return layers


def naive_nightly(context: Path, refs: dict[str, str], docker_config: Path) -> NaiveRun:
    """The baseline's nightly: build both images, then push both."""
    started = time.perf_counter()
    build_naive(context, refs)
    built = time.perf_counter()
    layers = push_naive(context, refs, docker_config)
    return NaiveRun(built - started, time.perf_counter() - built, layers)


def import_time(repeat: int) -> float:
    """Median time to start Python and import the CLI: the floor of any `buildtool` run."""
    command = [sys.executable, "-c", "import buildtool.cli"]
    return statistics.median(
        timed(lambda: subprocess.run(command, check=True)) for _ in range(repeat)
    )


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


def report(bench: Bench, ours_ns: str, naive_ns: str) -> str:
    registry = bench.registry()
    progress(f"locking {ENV_NAME} against the local channel")
    env = lock_e2e(bench)
    pair = render(
        env, read_lock(env.lock_path), bench.build_dir, registry=ours_ns,
        base_image=bench.base_image, builder_image=bench.builder_image,
    )  # fmt: skip

    progress(f"ours: buildtool publish {ENV_NAME} --registry {ours_ns} (build, test, push)")
    ours_first = timed(lambda: publish_ours(bench, ours_ns, bench.work / "publish-1.log"))
    published = json.loads((Path(pair.directory) / "published.json").read_text())
    ours_refs = {role: pair.image(role).ref for role in ROLES}
    ours = measure_pair(registry, ours_refs)

    progress(f"baseline: two Dockerfiles built apart, docker push to {naive_ns}")
    naive_refs = {role: f"{naive_ns}/{env.image(role).image}:naive" for role in ROLES}
    context = bench.work / "naive"
    naive_context(bench, pair, env, naive_refs, context)
    docker_config = bench.work / "docker-config"
    docker_login(bench.credentials, docker_config)
    naive_first = naive_nightly(context, naive_refs, docker_config)
    naive = measure_pair(registry, naive_refs)

    progress(f"no-op nightly, {bench.repeat} runs each")
    noop_times, noop_bytes = [], 0
    for i in range(bench.repeat):
        log = bench.work / f"publish-noop-{i}.log"
        started = time.perf_counter()
        output = publish_ours(bench, ours_ns, log)
        noop_times.append(time.perf_counter() - started)
        noop_bytes += bytes_pushed(output)
    naive_runs = [naive_nightly(context, naive_refs, docker_config) for _ in range(bench.repeat)]
    floor = import_time(bench.repeat)

    ours_push = published["bytes_pushed"]
    ours_ratio = ours_push / ours.images["notebook"].compressed
    naive_ratio = naive.distinct_blobs / naive.images["notebook"].compressed
    noop = statistics.median(noop_times)
    naive_s = statistics.median(r.seconds for r in naive_runs)
    speedup = naive_s / noop
    rows = [
        Row("(a) pair push, bytes", mb(ours_push), mb(naive.distinct_blobs),
            f"{ours_push / naive.distinct_blobs:.2f}", "-", "-"),
        Row("(a) pair, distinct blobs in the registry", mb(ours.distinct_blobs),
            mb(naive.distinct_blobs), f"{ours.distinct_blobs / naive.distinct_blobs:.2f}",
            "-", "-"),
        Row("(a) pair push / own notebook image (compressed)", f"{ours_ratio:.2f}x",
            f"{naive_ratio:.2f}x", "-", f"<= {PAIR_PUSH_TARGET:.1f}x",
            verdict(ours_ratio <= PAIR_PUSH_TARGET)),
        *size_rows(ours, naive),
        Row(f"(b) no-op nightly, median of {bench.repeat}", f"{noop:.2f} s", f"{naive_s:.2f} s",
            f"{speedup:.1f}x faster", f">= {NOOP_SPEEDUP_TARGET:.0f}x faster",
            verdict(speedup >= NOOP_SPEEDUP_TARGET)),
        Row("(b) no-op nightly, bytes pushed", str(noop_bytes),
            f"{sum(r.layers['Pushed'] for r in naive_runs)} layers sent", "-", "0",
            verdict(noop_bytes == 0)),
    ]  # fmt: skip
    notes = [
        f"Environment {ENV_NAME}: {len(read_lock(env.lock_path).package)} locked packages; "
        f"ours in {ours_ns}, baseline in {naive_ns}.",
        f"Ours: bytes pushed from published.json ({ours_push:,} B); the distinct blobs of "
        f"its two manifests come to {ours.distinct_blobs:,} B, the difference "
        f"({ours_push - ours.distinct_blobs:,} B) being the manifests themselves.",
        f"Compressed sizes differ by compression: `buildtool publish` gzips layers at level "
        f"{GZIP_LEVEL}, `docker push` at gzip's default.",
        f"Baseline: bytes pushed = the distinct blobs (config + layers) that its two "
        f"manifests reference in the registry ({naive.distinct_blobs:,} B), exact for a "
        "fresh namespace.",
        f"No-op runs, ours: {', '.join(f'{t:.2f}' for t in noop_times)} s (whole CLI "
        "process); baseline build + push: "
        + ", ".join(f"{r.build_s:.2f} + {r.push_s:.2f}" for r in naive_runs)
        + f" s. Starting Python and importing buildtool.cli alone takes {floor:.2f} s.",
        f"First runs (not targets): our publish (build, test, push) {ours_first:.0f} s; "
        f"baseline build {naive_first.build_s:.0f} s + push {naive_first.push_s:.0f} s "
        f"(layers: {dict(naive_first.layers)}; docker mounts the layers it pushed to "
        "another repository of this registry before, hence the manifest method).",
    ]
    return table(rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per no-op timing")
    args = parser.parse_args()

    credentials = registry_credentials()
    base_image, builder_image = ensure_base_image("runtime"), ensure_base_image("builder")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        bench = Bench(Path(scratch), credentials, base_image, builder_image, args.repeat)
        ours_ns, naive_ns = bench.namespace("ours"), bench.namespace("naive")
        try:
            print(report(bench, ours_ns, naive_ns))
        finally:
            progress(f"removing the local tags of {ours_ns} and {naive_ns}")
            remove_local_tags([ours_ns, naive_ns])


if __name__ == "__main__":
    main()
