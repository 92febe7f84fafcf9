"""Environments: a spec resolved through its `extends` chain into one flat
:class:`Environment`, and the environments a site folder holds.

The schema of one file is `specfile.py`; pins that contradict each other are found by
`pins.py`. Every error is a :class:`SpecError` naming the file, the key path and the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool.common import SpecError, grammar, key_text, yamlfile
from buildtool.spec.pins import check_pins
from buildtool.spec.schema import (
    DEFAULT_CHANNELS,
    DEFAULT_PLATFORMS,
    LOCK_FILE,
    SPEC_FILE,
    ExtensionFile,
    ImageSpec,
    LoadedSpec,
    PackageLists,
    Requirement,
    load_spec_file,
)
from compat.vocabulary import of_role


@dataclass
class ImageSet:
    """Everything one image gets beyond the conda packages it shares."""

    repository: str  # the image's repository name in the registry (the spec's `image:`)
    dependencies: list[Requirement] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)


class _InRoot:
    """A spec's folder (`root/name`) and its lock there."""

    name: str
    root: Path

    @property
    def directory(self) -> Path:
        return self.root / self.name

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE


@dataclass
class Environment(_InRoot):
    """A spec resolved through `extends`: what `lock`, `render` and `docs` work from."""

    name: str
    root: Path
    files: list[Path]
    description: str
    display_name: str
    abstract: bool
    channels: list[str]
    platforms: list[str]
    dependencies: list[Requirement]
    notebook: ImageSet
    worker: ImageSet
    base_image: str | None
    # Declared through `extends` (children override): for every platform, and per platform.
    virtual_packages: dict[str, str] = field(default_factory=dict)
    platform_virtual_packages: dict[str, dict[str, str]] = field(default_factory=dict)

    def roots(self, role: str) -> list[Requirement]:
        """The MatchSpecs an image asks for: the shared ones plus its own."""
        return self.dependencies + self.image(role).dependencies

    def all_requirements(self) -> list[Requirement]:
        """The union that the one solve is made of."""
        return self.dependencies + self.notebook.dependencies + self.worker.dependencies

    def image(self, role: str) -> ImageSet:
        return of_role(self, role)

    def declared_virtual_packages(self, platform: str) -> dict[str, str]:
        """The virtual packages the spec declares for `platform` (beyond the defaults)."""
        declared = {**self.virtual_packages, **self.platform_virtual_packages.get(platform, {})}
        return dict(sorted(declared.items()))

    def content_hash(self, platform: str) -> str:
        """Hash of what the solve depends on: specs, channels, platform, virtual packages."""
        payload: dict[str, Any] = {
            "channels": self.channels,
            "platform": platform,
            "common": [r.spec for r in self.dependencies],
            "notebook": [r.spec for r in self.notebook.dependencies],
            "worker": [r.spec for r in self.worker.dependencies],
        }
        virtual = self.declared_virtual_packages(platform)
        if virtual:  # only then: the hashes of specs that declare none stay as they were
            payload["virtual_packages"] = virtual
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _requirements(loaded: LoadedSpec, section: tuple[str, ...]) -> list[Requirement]:
    owner: PackageLists = loaded.spec
    for part in section:
        owner = getattr(owner, part)
    out = []
    for index, spec in enumerate(owner.dependencies):
        loc = (*section, "dependencies", index)
        out.append(Requirement(spec, loaded.path, key_text(loc), loaded.lines.get(loc)))
    return out


def _chain(root: Path, name: str) -> list[LoadedSpec]:
    """The spec and its ancestors, root ancestor first."""
    chain: list[LoadedSpec] = []
    seen: list[str] = []
    current: str | None = name
    child: LoadedSpec | None = None
    while current is not None:
        path = root / current / SPEC_FILE
        if child is None:  # a name from the command line or a folder (a parent's: validated)
            check_environment_name(root, current)
        if current in seen:
            cycle = " -> ".join([*seen, current])
            assert child is not None
            raise SpecError(
                child.path, "extends", f"cycle in extends: {cycle}", child.lines.get(("extends",))
            )
        if not path.exists():
            if child is None:
                raise SpecError(path, "", f"no environment {current!r} (spec file not found)")
            raise SpecError(
                child.path,
                "extends",
                f"parent environment {current!r} does not exist ({path} not found)",
                child.lines.get(("extends",)),
            )
        loaded = load_spec_file(path)
        chain.insert(0, loaded)
        seen.append(current)
        child, current = loaded, loaded.spec.extends
    return chain


def _merge_image(chain: list[LoadedSpec], image: str, default_name: str) -> ImageSet:
    merged = ImageSet(repository=default_name)
    for loaded in chain:
        part: ImageSpec = getattr(loaded.spec, image)
        merged.repository = part.image or merged.repository
        merged.dependencies += _requirements(loaded, (image,))
        for source in (loaded.spec, part):
            merged.pip += source.pip
            merged.apt += source.apt
            merged.env.update(source.env)
            merged.imports += source.imports
    return merged


def _last(chain: list[LoadedSpec], getter: Any, default: Any) -> Any:
    for loaded in reversed(chain):
        value = getter(loaded.spec)
        if value is not None:
            return value
    return default


def _merge_virtual(chain: list[LoadedSpec]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    common: dict[str, str] = {}
    per_platform: dict[str, dict[str, str]] = {}
    for loaded in chain:
        own, own_per_platform = loaded.spec.declared_virtual_packages()
        common.update(own)
        for platform, declared in own_per_platform.items():
            per_platform.setdefault(platform, {}).update(declared)
    return common, per_platform


def load_environment(root: Path, name: str) -> Environment:
    """Load `root/name/env.yaml` with its `extends` chain, validated and merged."""
    line = _from_line(root, name)
    if line is not None:
        raise SpecError(
            root / name / SPEC_FILE,
            "from",
            f"{name!r} is an extension of a published pair: `lock`, `publish`, `test` and "
            "`client` take it; it is not rendered or built with Docker",
            line or None,
        )
    chain = _chain(root, name)
    own = chain[-1].spec
    virtual, platform_virtual = _merge_virtual(chain)
    env = Environment(
        name=name,
        root=root,
        files=[loaded.path for loaded in chain],
        description=own.description,
        display_name=own.display_name or name,
        abstract=own.abstract,
        channels=_last(chain, lambda s: s.channels, DEFAULT_CHANNELS),
        platforms=_last(chain, lambda s: s.platforms, DEFAULT_PLATFORMS),
        dependencies=[r for loaded in chain for r in _requirements(loaded, ())],
        notebook=_merge_image(chain, "notebook", f"jupyter-{name}"),
        worker=_merge_image(chain, "worker", f"dask-gateway-{name}"),
        base_image=_last(chain, lambda s: s.build.base_image, None),
        virtual_packages=virtual,
        platform_virtual_packages=platform_virtual,
    )
    check_pins(env.all_requirements())
    return env


def check_environment_name(root: Path, name: str) -> None:
    """Refuse a name that could not be a folder beside the others (or an image name)."""
    problem = grammar.environment_name_problem(name)
    if problem:
        shown = name.encode("unicode_escape").decode("ascii")  # one line, whatever it holds
        raise SpecError(root, "", f"environment {shown!r}: {problem.replace(repr(name), 'name')}")


def environment_names(root: Path) -> list[str]:
    """Every buildable (not abstract) site environment under `root`; extensions (`from:`)
    are a user's, built on a published pair, and are not listed."""
    names = sorted(p.parent.name for p in root.glob(f"*/{SPEC_FILE}"))
    for name in names:
        check_environment_name(root, name)
    return [
        name
        for name in names
        if not is_extension(root, name)
        and not load_spec_file(root / name / SPEC_FILE).spec.abstract
    ]


@dataclass
class Extension(_InRoot):
    """An extension's spec (`from:`): a user's packages on a published pair."""

    name: str
    root: Path
    path: Path
    parent: str  # `from`: a site environment's name or a notebook image reference
    description: str
    display_name: str
    dependencies: list[Requirement]
    pip: list[str]
    pip_lines: list[int | None]
    imports: list[str]
    notebook_repository: str
    worker_repository: str

    def repository(self, role: str) -> str:
        return self.notebook_repository if role == "notebook" else self.worker_repository

    def content_hash(self, parent_digest: str) -> str:
        """Hash of what the lock depends on: the additions and the parent, by digest."""
        payload = {
            "parent": parent_digest,
            "dependencies": [r.spec for r in self.dependencies],
            "pip": sorted(self.pip),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def is_extension(root: Path, name: str) -> bool:
    """Whether `root/name/env.yaml` layers on a published pair (has `from:`)."""
    return _from_line(root, name) is not None


def _from_line(root: Path, name: str) -> int | None:
    """The line of `root/name/env.yaml`'s `from:` (0 if unknown), None if it has none."""
    check_environment_name(root, name)
    path = root / name / SPEC_FILE
    if not path.exists():
        return None
    data, lines = yamlfile.load(path, yamlfile.read_text(path, what="spec"), "the spec")
    return lines.get(("from",), 0) if "from" in data else None


def load_extension(root: Path, name: str) -> Extension:
    """Load and validate the extension `root/name/env.yaml`."""
    check_environment_name(root, name)
    path = root / name / SPEC_FILE
    spec, lines = yamlfile.load_file(path, ExtensionFile, "the spec")
    dependencies = [
        Requirement(value, path, key_text(("dependencies", i)), lines.get(("dependencies", i)))
        for i, value in enumerate(spec.dependencies)
    ]
    check_pins(dependencies)
    return Extension(
        name=name,
        root=root,
        path=path,
        parent=spec.from_,
        description=spec.description,
        display_name=spec.display_name or name,
        dependencies=dependencies,
        pip=spec.pip,
        pip_lines=[lines.get(("pip", i)) for i in range(len(spec.pip))],
        imports=spec.imports,
        notebook_repository=spec.notebook.image or f"jupyter-{name}",
        worker_repository=spec.worker.image or f"dask-gateway-{name}",
    )


#: What a folder under the root holds: a site environment, or a user's extension.
Target = Environment | Extension


def load(root: Path, name: str) -> Target:
    """The environment or the extension `root/name/env.yaml` is (`from:` makes it an
    extension), loaded and validated; each stage takes either and does its own."""
    if is_extension(root, name):
        return load_extension(root, name)
    return load_environment(root, name)
