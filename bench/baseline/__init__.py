"""The benchmarks' baselines, built in the same run as what they are compared with.

- **single-layer**: the pair as this project built it before package layers: the worker
  from `worker.Dockerfile.j2` (py-rattler in a builder stage, the whole environment in
  one layer), the notebook `FROM` it with one more layer for its own packages;
- **naive**: the deployment's way, two images built apart from `naive.Dockerfile.j2`,
  each installing its whole set from scratch with its own package cache.

Both install with py-rattler from the same lock and the same stand-in over HTTP, on the
same base image (`install.py`, the installer those Dockerfiles ran).
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from jinja2 import Environment as Jinja
from jinja2 import FileSystemLoader, StrictUndefined

from buildtool.image import BASE_APT, docker_cli, run_logged
from buildtool.lock import LockedPackage, LockFile
from buildtool.spec import Environment
from compat.vocabulary import PREFIX, ROLES

HERE = Path(__file__).parent
COMMANDS = {
    "worker": ["dask", "worker", "--help"],
    "notebook": ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser"],
}


def _explicit(packages: list[LockedPackage]) -> str:
    lines = ["@EXPLICIT", *(f"{p.url}#sha256:{p.hash.sha256}" for p in packages)]
    return "\n".join(lines) + "\n"


def render_context(
    env: Environment,
    lock: LockFile,
    dest: Path,
    base_image: str,
    builder_image: str,
    worker_ref: str,
) -> Path:
    """Both baselines' build context: the lock, the installer and the Dockerfiles."""
    dest.mkdir(parents=True, exist_ok=True)
    platform = "linux-64"
    (dest / "conda-lock.yml").write_text(env.lock_path.read_text())
    (dest / "install.py").write_text((HERE / "install.py").read_text())
    for role in ROLES:
        (dest / f"{role}.explicit").write_text(_explicit(lock.packages(role, platform)))
    jinja = Jinja(
        loader=FileSystemLoader(HERE),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    common = {
        "env": env,
        "platform": platform,
        "prefix": PREFIX,
        "base_apt": BASE_APT,
        "lock_sha256": lock.content_sha(),
        "rattler_version": version("py-rattler"),
        "base_image": base_image,
        "builder_image": builder_image,
    }
    notebook_only = {
        "image": env.notebook.repository,
        "pip": [p for p in env.notebook.pip if p not in env.worker.pip],
        "apt": [p for p in env.notebook.apt if p not in env.worker.apt],
        "env": {k: v for k, v in env.notebook.env.items() if env.worker.env.get(k) != v},
    }
    variables = {
        "worker": env.worker.env,
        "notebook": {"DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE": worker_ref, **env.notebook.env},
    }
    for role in ROLES:
        layered = env.worker if role == "worker" else notebook_only
        (dest / f"{role}.Dockerfile").write_text(
            jinja.get_template(f"{role}.Dockerfile.j2").render(
                role=role, image=layered, image_name=env.image(role).repository, **common
            )
        )
        (dest / f"naive-{role}.Dockerfile").write_text(
            jinja.get_template("naive.Dockerfile.j2").render(
                role=role,
                explicit=f"{role}.explicit",
                image=env.image(role),
                variables=variables[role],
                command=json.dumps(COMMANDS[role]),
                **common,
            )
        )
    return dest


def _build(context: Path, dockerfile: str, ref: str, log: Path, *args: str) -> None:
    command = [
        docker_cli(),
        "build",
        "--progress=plain",
        "--network=host",
        "-f",
        str(context / dockerfile),
        "-t",
        ref,
        *args,
        str(context),
    ]
    run_logged(command, log, echo=False)


def build_single_layer(context: Path, refs: dict[str, str]) -> None:
    """The pair as built before package layers: worker, then the notebook FROM it."""
    for role in ROLES:
        _build(
            context,
            f"{role}.Dockerfile",
            refs[role],
            context / f"single-{role}.log",
            "--build-arg",
            f"WORKER_IMAGE={refs['worker']}",
            "--build-arg",
            "CREATED=baseline",
            "--build-arg",
            "REVISION=baseline",
        )


def build_naive(context: Path, refs: dict[str, str]) -> None:
    """The two images built apart, each its whole set from scratch."""
    for role in ROLES:
        _build(context, f"naive-{role}.Dockerfile", refs[role], context / f"naive-{role}.log")
