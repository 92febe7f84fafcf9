"""Environment specs: `environments/<name>/env.yaml`, validated strictly and resolved
through `extends` into one flat :class:`Environment`.

Every error is a :class:`SpecError` naming the file, the key path and the line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, field_validator
from rattler import MatchSpec, Version, VersionSpec
from rattler.exceptions import InvalidMatchSpecError, InvalidVersionError

from buildtool import grammar, yamlfile
from buildtool.errors import SpecError
from buildtool.yamlfile import StrictModel, key_text

SPEC_FILE = "env.yaml"
LOCK_FILE = "conda-lock.yml"
DEFAULT_CHANNELS = ["conda-forge"]
DEFAULT_PLATFORMS = ["linux-64"]
Platform = Literal["linux-64", "linux-aarch64"]
PLATFORMS = ["linux-64", "linux-aarch64"]
IMAGES = ("notebook", "worker")

# One line of text shown to users (profile lists, labels, docs).
TEXT_MAX = 300
# What every solve assumes the nodes have: the images run on Debian bookworm (glibc 2.36).
# `__archspec` (the CPU) is added per platform by the solver. A spec declares the rest
# (`__cuda` on GPU nodes) in `virtual_packages`.
DEFAULT_VIRTUAL_PACKAGES = {"__unix": "0", "__linux": "5.10", "__glibc": "2.36"}


def normalize_matchspec(value: str) -> str:
    """`value` in one canonical form, or ValueError saying why conda would refuse it.

    conda's grammar is rattler's lenient parser (rattler's `ParseStrictness::Lenient`;
    py-rattler exposes it as `strict=False`), which reads every form conda reads in an
    environment file: `name>=1.2=build*`, `name=1.2=build`, `name 1.2` (== 1.2, as conda
    reads it), `channel::name` and brackets (`name[version='>=1.2',build=cuda*]`). The
    syntax conda does not have (rattler's `[extras=...]`, `[when=...]`, `[flags=...]`,
    globs in names) stays refused. What is stored is rattler's string form of the parsed
    spec (`tensorflow >=2.17.0 cuda12*`): the same for every way of writing one spec, and
    read back the same by strict and lenient parsers alike.
    """
    try:
        spec = MatchSpec(
            value, strict=False, exact_names_only=True, extras=False, conditionals=False,
            flags=False,
        )  # fmt: skip
    except InvalidMatchSpecError as exc:
        raise ValueError(f"invalid MatchSpec {value!r}: {exc}") from None
    if spec.name is None or not grammar.PACKAGE_NAME.fullmatch(spec.name.normalized):
        raise ValueError(f"invalid MatchSpec {value!r}: bad package name")
    if spec.build is not None and re.search(r"\s", str(spec.build)):
        # conda reads `name version build` and nothing after it.
        raise ValueError(f"invalid MatchSpec {value!r}: more than name, version and build")
    return str(spec)


def _check_matchspecs(values: list[str]) -> list[str]:
    normalized = []
    for index, value in enumerate(values):
        try:
            normalized.append(normalize_matchspec(value))
        except ValueError as exc:
            raise ValueError(f"[{index}] {exc}") from None
    return normalized


def _check_pattern(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for index, value in enumerate(values):
        if not pattern.fullmatch(value):
            raise ValueError(f"[{index}] {value!r} is not {what}")
    return values


def _environment_name(name: str) -> str:
    problem = grammar.environment_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


#: An environment's name in a YAML field (`extends`, site.yaml's `profiles`).
EnvironmentName = Annotated[str, AfterValidator(_environment_name)]


class _Packages(StrictModel):
    """Fields shared by the top level and the per-image sections."""

    dependencies: list[str] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)
    apt: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    imports: list[str] = Field(default_factory=list)

    @field_validator("dependencies")
    @classmethod
    def _matchspecs(cls, v: list[str]) -> list[str]:
        return _check_matchspecs(v)

    @field_validator("pip")
    @classmethod
    def _pip_pins(cls, v: list[str]) -> list[str]:
        # pip packages are not solved, so only exact pins keep the pair reproducible.
        return _check_pattern(v, grammar.PIP_PIN, "an exact pip pin (name==version)")

    @field_validator("apt")
    @classmethod
    def _apt_names(cls, v: list[str]) -> list[str]:
        return _check_pattern(v, grammar.APT_PACKAGE, "a Debian package name (optionally =version)")

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not grammar.ENV_VAR.fullmatch(key):
                raise ValueError(f"{{{key}}} {key!r} is not a valid environment variable name")
        return v

    @field_validator("imports")
    @classmethod
    def _module_names(cls, v: list[str]) -> list[str]:
        return _check_pattern(v, grammar.MODULE, "a Python module name")


class ImageSpec(_Packages):
    """`notebook:` or `worker:`: what only that image gets, and its repository name."""

    image: str | None = None

    @field_validator("image")
    @classmethod
    def _image_name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 128 or not grammar.REPOSITORY.fullmatch(v)):
            raise ValueError(f"{v!r} is not a valid image repository name")
        return v


class BuildSpec(StrictModel):
    """`build:` how the images are made: the base image, by digest for reproducible images."""

    base_image: str | None = None

    @field_validator("base_image")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        problem = v and grammar.image_reference_problem(v)
        if problem:
            raise ValueError(problem)
        return v


def _check_virtual_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}must map virtual package names to versions")
    for name, version in value.items():
        if not isinstance(name, str) or not grammar.VIRTUAL_PACKAGE.fullmatch(name):
            raise ValueError(f"{where}{name!r} is not a virtual package name (like __cuda)")
        if name in (*DEFAULT_VIRTUAL_PACKAGES, "__archspec"):
            raise ValueError(
                f"{where}{name} is not declared: it follows the base image "
                f"({', '.join(f'{k} {v}' for k, v in DEFAULT_VIRTUAL_PACKAGES.items())})"
            )
        if not isinstance(version, str):
            raise ValueError(f'{where}{name}: write the version as a quoted string, e.g. "12.6"')
        try:
            Version(version)
        except InvalidVersionError:
            raise ValueError(f"{where}{name}: {version!r} is not a version") from None
    return dict(value)


class SpecFile(_Packages):
    """The schema of one `env.yaml`, before inheritance."""

    description: str
    display_name: str | None = None
    # An abstract spec is only extended: it is never locked or built on its own.
    abstract: bool = False
    extends: EnvironmentName | None = None  # a folder beside this one, never a path
    channels: list[str] | None = None
    platforms: list[Platform] | None = None
    notebook: ImageSpec = Field(default_factory=ImageSpec)
    worker: ImageSpec = Field(default_factory=ImageSpec)
    build: BuildSpec = Field(default_factory=BuildSpec)
    # What the nodes provide beyond the defaults, e.g. {__cuda: "12.6"}; a platform name
    # as key holds what differs on that platform: {linux-aarch64: {__cuda: "12.4"}}.
    virtual_packages: dict[str, Any] = Field(default_factory=dict)

    @field_validator("virtual_packages", mode="before")
    @classmethod
    def _virtual_packages(cls, v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ValueError("must map virtual package names to versions")
        common = {k: val for k, val in v.items() if k not in get_args(Platform)}
        out: dict[str, Any] = _check_virtual_map(common, "")
        for platform in get_args(Platform):
            if platform in v:
                out[platform] = _check_virtual_map(v[platform], f"{platform}: ")
        return out

    def declared_virtual_packages(self) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """(what every platform gets, what each platform gets on top)."""
        per_platform = {k: v for k, v in self.virtual_packages.items() if isinstance(v, dict)}
        common = {k: v for k, v in self.virtual_packages.items() if isinstance(v, str)}
        return common, per_platform

    @field_validator("description", "display_name")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        # Control characters (newlines among them) are refused for every value on reading.
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must be one non-empty line")
        if len(v.strip()) > TEXT_MAX:
            raise ValueError(f"must be one line of at most {TEXT_MAX} characters")
        return v.strip()

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must list at least one channel")
        for index, channel in enumerate(v or []):
            problem = grammar.channel_problem(channel)
            if problem:
                raise ValueError(f"[{index}] {problem}")
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("must list each platform once, and at least one")
        return v


@dataclass(frozen=True)
class Requirement:
    """One MatchSpec with where it was written, for error messages."""

    spec: str
    path: Path
    key: str
    line: int | None

    @property
    def name(self) -> str:
        name = MatchSpec(self.spec).name
        assert name is not None  # validated in SpecFile
        return name.normalized


@dataclass
class ImageSet:
    """Everything one image gets beyond the conda packages it shares."""

    image: str
    dependencies: list[Requirement] = field(default_factory=list)
    pip: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)


@dataclass
class Environment:
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

    @property
    def directory(self) -> Path:
        return self.root / self.name

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE

    def roots(self, image: str) -> list[Requirement]:
        """The MatchSpecs an image asks for: the shared ones plus its own."""
        own = self.notebook if image == "notebook" else self.worker
        return self.dependencies + own.dependencies

    def all_requirements(self) -> list[Requirement]:
        """The union that the one solve is made of."""
        return self.dependencies + self.notebook.dependencies + self.worker.dependencies

    def image(self, image: str) -> ImageSet:
        return self.notebook if image == "notebook" else self.worker

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


@dataclass
class _Loaded:
    path: Path
    spec: SpecFile
    lines: yamlfile.Lines


def load_spec_file(path: Path) -> _Loaded:
    """Parse and validate one `env.yaml`, without following `extends`."""
    spec, lines = yamlfile.load_file(path, SpecFile, "the spec")
    return _Loaded(path, spec, lines)


def _requirements(loaded: _Loaded, section: tuple[str, ...]) -> list[Requirement]:
    owner: _Packages = loaded.spec
    for part in section:
        owner = getattr(owner, part)
    out = []
    for index, spec in enumerate(owner.dependencies):
        loc = (*section, "dependencies", index)
        out.append(Requirement(spec, loaded.path, key_text(loc), loaded.lines.get(loc)))
    return out


def _chain(root: Path, name: str) -> list[_Loaded]:
    """The spec and its ancestors, root ancestor first."""
    chain: list[_Loaded] = []
    seen: list[str] = []
    current: str | None = name
    child: _Loaded | None = None
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


def _merge_image(chain: list[_Loaded], image: str, default_name: str) -> ImageSet:
    merged = ImageSet(image=default_name)
    for loaded in chain:
        part: ImageSpec = getattr(loaded.spec, image)
        merged.image = part.image or merged.image
        merged.dependencies += _requirements(loaded, (image,))
        for source in (loaded.spec, part):
            merged.pip += source.pip
            merged.apt += source.apt
            merged.env.update(source.env)
            merged.imports += source.imports
    return merged


def _last(chain: list[_Loaded], getter: Any, default: Any) -> Any:
    for loaded in reversed(chain):
        value = getter(loaded.spec)
        if value is not None:
            return value
    return default


def _merge_virtual(chain: list[_Loaded]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
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


def _candidate_versions(requirements: list[Requirement]) -> list[Version]:
    """Versions that sit on or just past every bound the specs mention."""
    found = set()
    for req in requirements:
        version = MatchSpec(req.spec).version
        for token in re.findall(r"[0-9][0-9A-Za-z._+]*", str(version or "")):
            base = token.rstrip(".*")
            found.update({base, f"{base}.0.1", f"{base}.post1"})
    candidates = [Version("0"), Version("99999999")]
    for text in sorted(found):
        try:
            candidates.append(Version(text))
        except InvalidVersionError:  # a token that is not a version is no candidate
            continue
    return candidates


def _satisfiable(requirements: list[Requirement]) -> bool:
    """Whether one version can satisfy every requirement's version range."""
    specs = [VersionSpec(MatchSpec(r.spec).version or "*") for r in requirements]
    return any(all(s.matches(v) for s in specs) for v in _candidate_versions(requirements))


def check_pins(requirements: list[Requirement]) -> None:
    """Refuse specs of one package whose version ranges cannot all hold at once."""
    by_name: dict[str, list[Requirement]] = {}
    for req in requirements:
        if MatchSpec(req.spec).version is not None:
            by_name.setdefault(req.name, []).append(req)
    for versioned in by_name.values():
        if len(versioned) < 2 or _satisfiable(versioned):
            continue
        # Name the first pair that conflicts, so the message stays one line.
        for i, first in enumerate(versioned):
            for second in versioned[i + 1 :]:
                if not _satisfiable([first, second]):
                    # Blame the later one: a child spec is what is being edited.
                    where = f"{first.path}:{first.line}" if first.line else str(first.path)
                    raise SpecError(
                        second.path,
                        second.key,
                        f"contradictory pins: {second.spec!r} conflicts with "
                        f"{first.spec!r} ({where} {first.key})",
                        second.line,
                    )
        first = versioned[0]
        raise SpecError(
            first.path,
            first.key,
            "contradictory pins: no version satisfies "
            + ", ".join(repr(r.spec) for r in versioned),
            first.line,
        )


def check_environment_name(root: Path, name: str) -> None:
    """Refuse a name that could not be a folder beside the others (or an image name)."""
    problem = grammar.environment_name_problem(name)
    if problem:
        shown = name.encode("unicode_escape").decode("ascii")  # one line, whatever it holds
        raise SpecError(root, "", f"environment {shown!r}: {problem.replace(repr(name), 'name')}")


def environment_names(root: Path) -> list[str]:
    """Every buildable (not abstract) environment under `root`."""
    names = sorted(p.parent.name for p in root.glob(f"*/{SPEC_FILE}"))
    for name in names:
        check_environment_name(root, name)
    return [name for name in names if not load_spec_file(root / name / SPEC_FILE).spec.abstract]
