"""Render the matched pair's build inputs from the ONE lock.

`build/<env>/` becomes:

    conda-lock.yml                     the lock the images are assembled from
    <platform>/system.Dockerfile       the system stages (worker, notebook), from
                                       dockerfiles/system.Dockerfile.j2
    render.json                        tags and references for build, test, publish

The packages are fetched from their locked channel URLs, as they are from conda-forge in
production; a channel that only exists as a local folder (file://) is refused here:
serve it over HTTP instead.

The content tag hashes everything rendered, the layout rules of the assembly and the
registry path, so the same lock, spec and templates always give the same tag, and any
change to them gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from jinja2 import Environment as Jinja
from jinja2 import FileSystemLoader, StrictUndefined

from buildtool.common import (
    BuildToolError,
    InputError,
    grammar,
    unsafe_character,
    write_atomic,
    write_if_changed,
)
from buildtool.image import layers
from buildtool.lock import LockedPackage, LockFile, check_site_channels
from buildtool.spec import Environment, ImageSet
from compat.vocabulary import (
    IMAGE_OPTION_ENV,
    LABEL_KEYS,
    LOCK_LABEL,
    PREFIX,
    ROLES,
    WORKER_LABEL,
    of_role,
)

TEMPLATES = Path(str(resources.files("buildtool.image") / "dockerfiles"))
# What every image needs from Debian: an init process and TLS roots.
BASE_APT = ["tini", "ca-certificates"]
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# Bumped when the assembly lays out images differently, so that the content tag moves.
ASSEMBLY = (
    f"layers-v4-estargz max={layers.MAX_LAYERS} reserve={layers.EXTENSION_RESERVE} "
    f"large={layers.LARGE} nb={layers.NOTEBOOK_SHARE}"
)


@dataclass
class ImageRef:
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class RenderedPair:
    """What `render` made, read back by `build`, `test` and `publish`."""

    environment: str
    directory: str
    platforms: list[str]
    base_images: dict[str, str]  # platform -> base image reference
    pip: dict[
        str, list[str]
    ]  # role -> its own exact pip pins (the notebook's: beyond the worker's)
    content_tag: str
    lock_sha256: str
    worker: ImageRef
    notebook: ImageRef

    def image(self, role: str) -> ImageRef:
        return of_role(self, role)

    def lock_config(self, role: str) -> tuple[dict[str, str], dict[str, str]]:
        """The labels and variables a role's image config gets from the lock, which the
        system Dockerfile leaves out so that its stages do not change with the lock."""
        labels = {LOCK_LABEL: self.lock_sha256}
        env = {}
        if role == "notebook":
            labels[WORKER_LABEL] = self.worker.ref
            # Clusters started from this notebook default to the matched worker image.
            env[IMAGE_OPTION_ENV] = self.worker.ref
        return labels, env

    def system_dockerfile(self, platform: str) -> Path:
        return Path(self.directory) / platform / "system.Dockerfile"

    @property
    def lock_path(self) -> Path:
        return Path(self.directory) / "conda-lock.yml"

    @classmethod
    def load(cls, build_dir: Path, env: str) -> RenderedPair:
        path = build_dir / env / "render.json"
        if not path.exists():
            raise BuildToolError(f"{path}: not rendered yet; run `buildtool render {env}`")
        data = json.loads(path.read_text())
        data["worker"] = ImageRef(**data["worker"])
        data["notebook"] = ImageRef(**data["notebook"])
        return cls(**data)


def _check_fetchable(env: Environment, packages: list[LockedPackage]) -> None:
    local = [p for p in packages if not p.url.startswith(("http://", "https://"))]
    if local:
        raise BuildToolError(
            f"{env.lock_path}: {local[0].name} is locked at {local[0].url}, which a build "
            f"cannot fetch ({len(local)} such package(s)); lock against a channel served over "
            "HTTP(S), as conda-forge is"
        )


def dockerfile_string(value: str) -> str:
    """`value` as a double-quoted Dockerfile word that the parser reads back as `value`.

    Inside double quotes Docker's shell-word lexer treats a backslash before `"`, `$` or
    a backslash as an escape, expands `$NAME`, and nothing else: so those three are
    escaped, and no quote, variable or line continuation can end the word early. A line
    break cannot be quoted at all, so a value holding one never gets here (the spec
    reader refuses it); this refuses it again rather than write a second instruction.
    """
    if unsafe_character(value):
        raise BuildToolError(
            f"refusing to write a Dockerfile value with a control character: "
            f"{value.encode('unicode_escape').decode('ascii')!r}"
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _check_references(registry: str | None, base_images: dict[str, str]) -> None:
    """The command line's registry and base images, parsed by the reference grammar."""
    problem = registry and grammar.registry_problem(registry.rstrip("/"))
    if problem:
        raise InputError(f"--registry: {problem}")
    for platform, image in base_images.items():
        problem = grammar.image_reference_problem(image)
        if problem:
            raise InputError(f"--base-image {platform}: {problem}")


def render(
    env: Environment,
    lock: LockFile,
    build_dir: Path,
    *,
    registry: str | None = None,
    base_images: dict[str, str] | None = None,
    templates: Path = TEMPLATES,
) -> RenderedPair:
    """`base_images`: platform -> base image, overriding the spec's (the stand-in's)."""
    platforms = [p for p in env.platforms if p in lock.metadata.platforms]
    missing = sorted(set(env.platforms) - set(platforms))
    if missing:
        raise BuildToolError(f"{env.lock_path}: not locked for {missing[0]}; run `buildtool lock`")
    _check_references(registry, base_images or {})
    check_site_channels(lock, env.lock_path, env.name)
    directory = build_dir / env.name
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    chosen = {
        p: (base_images or {}).get(p) or env.base_image or DEFAULT_BASE_IMAGE for p in platforms
    }
    for platform in platforms:
        _check_fetchable(env, lock.packages("notebook", platform))
    lock_text = env.lock_path.read_text()
    # The tag hashes what the images are made of, not the rendered Dockerfiles, since the
    # notebook's names the worker's tag.
    digest = hashlib.sha256()
    inputs = [
        ASSEMBLY,
        prefix,
        env.name,
        json.dumps(chosen, sort_keys=True),
        lock_text,
        json.dumps(_spec_inputs(env), sort_keys=True),
    ]
    inputs += [path.read_text() for path in sorted(templates.glob("*.j2"))]
    for part in inputs:
        digest.update(part.encode() + b"\0")
    tag = f"c-{digest.hexdigest()[:12]}"
    pair = RenderedPair(
        environment=env.name,
        directory=str(directory.resolve()),
        platforms=platforms,
        base_images=chosen,
        pip={"worker": env.worker.pip, "notebook": _notebook_only(env).pip},
        content_tag=tag,
        lock_sha256=lock.content_sha(),
        worker=ImageRef(prefix + env.worker.repository, tag),
        notebook=ImageRef(prefix + env.notebook.repository, tag),
    )
    jinja = Jinja(
        loader=FileSystemLoader(templates),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    jinja.filters["dockerfile_string"] = dockerfile_string
    template = jinja.get_template("system.Dockerfile.j2")
    files = {"conda-lock.yml": lock_text}
    for platform in platforms:
        files[f"{platform}/system.Dockerfile"] = template.render(
            env=env,
            platform=platform,
            prefix=PREFIX,
            labels=LABEL_KEYS,
            base_apt=BASE_APT,
            base_image=chosen[platform],
            worker=env.worker,
            notebook=_notebook_only(env),
        )
    for name, text in files.items():
        path = directory / name
        write_if_changed(path, text)
    write_atomic(directory / "render.json", json.dumps(asdict(pair), indent=2) + "\n")
    return pair


def _spec_inputs(env: Environment) -> dict:
    """What the Dockerfiles take from the spec."""
    return {
        "description": env.description,
        **{
            role: {
                "image": env.image(role).repository,
                "apt": env.image(role).apt,
                "pip": env.image(role).pip,
                "env": env.image(role).env,
            }
            for role in ROLES
        },
    }


def _notebook_only(env: Environment) -> ImageSet:
    """The notebook's own apt, pip and env: what it adds to the worker's."""
    worker, notebook = env.worker, env.notebook
    return ImageSet(
        repository=notebook.repository,
        pip=[p for p in notebook.pip if p not in worker.pip],
        apt=[p for p in notebook.apt if p not in worker.apt],
        env={k: v for k, v in notebook.env.items() if worker.env.get(k) != v},
    )
