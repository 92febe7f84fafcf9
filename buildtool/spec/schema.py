"""The schema of one `env.yaml`: every key, validated strictly, before `extends`.

Every error is a :class:`SpecError` naming the file, the key path and the line (the line
map comes from `yamlfile`). `spec.py` resolves a spec's `extends` chain into one
:class:`~buildtool.spec.environments.Environment`; `pins.py` checks the merged pins agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator
from rattler import MatchSpec, Version
from rattler.exceptions import InvalidMatchSpecError, InvalidVersionError

from buildtool.common import StrictModel, grammar, yamlfile
from compat.vocabulary import PLATFORMS, PlatformName

SPEC_FILE = "env.yaml"
LOCK_FILE = "conda-lock.yml"
DEFAULT_CHANNELS = ["conda-forge"]
DEFAULT_PLATFORMS: list[str] = ["linux-64"]

# One line of text shown to users (profile lists, labels, docs).
TEXT_MAX = 300
# What every solve assumes the nodes have: the images run on Debian bookworm (glibc 2.36).
# `__archspec` (the CPU) is added per platform by the solver. A spec declares the rest
# (`__cuda` on GPU nodes) in `virtual_packages`.
DEFAULT_VIRTUAL_PACKAGES = {"__unix": "0", "__linux": "5.10", "__glibc": "2.36"}


def normalize_matchspec(value: str, packages_only: bool = False) -> str:
    """`value` in one canonical form, or ValueError saying why conda would refuse it, or
    why this tool does.

    conda's grammar is rattler's lenient parser (rattler's `ParseStrictness::Lenient`;
    py-rattler exposes it as `strict=False`), which reads every form conda reads in an
    environment file: `name>=1.2=build*`, `name=1.2=build`, `name 1.2` (== 1.2, as conda
    reads it), `channel::name` and brackets (`name[version='>=1.2',build=cuda*]`). The
    syntax conda does not have (rattler's `[extras=...]`, `[when=...]`, `[flags=...]`,
    globs in names) stays refused. What is stored is rattler's string form of the parsed
    spec (`tensorflow >=2.17.0 cuda12*`): the same for every way of writing one spec, and
    read back the same by strict and lenient parsers alike.

    A spec names packages; where they come from is the channels' business, so a URL is
    refused in every form (a package's `[url=...]`, a bare archive URL or path, a
    channel given by URL): the solve would fetch it from wherever it points, a request a
    spec's author could aim at the builder's network. With `packages_only` (a user's
    extension, and everything the hub service takes) a spec names a package and its
    versions and builds only: no channel (`channel::name`, `[channel=...]`), `subdir`,
    `md5` or `sha256`, which only the parent's lock decides.
    """
    try:
        spec = MatchSpec(
            value,
            strict=False,
            exact_names_only=True,
            extras=False,
            conditionals=False,
            flags=False,
        )
    except InvalidMatchSpecError as exc:
        raise ValueError(f"invalid MatchSpec {value!r}: {exc}") from None
    if spec.name is None or not grammar.PACKAGE_NAME.fullmatch(spec.name.normalized):
        raise ValueError(f"invalid MatchSpec {value!r}: bad package name")
    if spec.build is not None and re.search(r"\s", str(spec.build)):
        # conda reads `name version build` and nothing after it.
        raise ValueError(f"invalid MatchSpec {value!r}: more than name, version and build")
    canonical = str(spec)
    if "://" in canonical or "://" in value or "url=" in canonical:
        raise ValueError(
            f"MatchSpec {value!r} names a URL: a spec names packages, and its channels say "
            "where they come from"
        )
    if packages_only:
        extra = [
            key
            for key, present in (
                ("a channel", spec.channel is not None),
                ("a subdir", spec.subdir is not None),
                ("an md5", spec.md5 is not None),
                ("a sha256", spec.sha256 is not None),
            )
            if present
        ]
        if extra:
            raise ValueError(
                f"MatchSpec {value!r} names {extra[0]}: an addition names a package, its "
                "versions and builds only; the parent's channels and lock decide the rest"
            )
    return canonical


def _check_matchspecs(values: list[str], packages_only: bool = False) -> list[str]:
    normalized = []
    for index, value in enumerate(values):
        try:
            normalized.append(normalize_matchspec(value, packages_only))
        except ValueError as exc:
            raise ValueError(f"[{index}] {exc}") from None
    return normalized


def _check_additions(values: list[str]) -> list[str]:
    return _check_matchspecs(values, packages_only=True)


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


def _pip_pins(v: list[str]) -> list[str]:
    # pip packages are not solved, so only exact pins keep the pair reproducible.
    return _check_pattern(v, grammar.PIP_PIN, "an exact pip pin (name==version)")


def _module_names(v: list[str]) -> list[str]:
    return _check_pattern(v, grammar.MODULE, "a Python module name")


def _repository_name(v: str | None) -> str | None:
    if v is not None and (len(v) > 128 or not grammar.REPOSITORY.fullmatch(v)):
        raise ValueError(f"{v!r} is not a valid image repository name")
    return v


def _one_line(v: str | None) -> str | None:
    # Control characters (newlines among them) are refused for every value on reading.
    if v is None:
        return v
    if not v.strip():
        raise ValueError("must be one non-empty line")
    if len(v.strip()) > TEXT_MAX:
        raise ValueError(f"must be one line of at most {TEXT_MAX} characters")
    return v.strip()


# The fields the specs of site environments and of extensions share.
MatchSpecs = Annotated[list[str], AfterValidator(_check_matchspecs)]
#: An extension's additions: packages by name, versions and builds only.
Additions = Annotated[list[str], AfterValidator(_check_additions)]
PipPins = Annotated[list[str], AfterValidator(_pip_pins)]
ModuleNames = Annotated[list[str], AfterValidator(_module_names)]
RepositoryName = Annotated[str | None, AfterValidator(_repository_name)]
OneLine = Annotated[str, AfterValidator(_one_line)]


class PackageLists(StrictModel):
    """Fields shared by the top level and the per-image sections."""

    dependencies: MatchSpecs = Field(default_factory=list)
    pip: PipPins = Field(default_factory=list)
    apt: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    imports: ModuleNames = Field(default_factory=list)

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


class ImageSpec(PackageLists):
    """`notebook:` or `worker:`: what only that image gets, and its repository name."""

    image: RepositoryName = None


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


class SpecFile(PackageLists):
    """The schema of one `env.yaml`, before inheritance."""

    description: OneLine
    display_name: OneLine | None = None
    # An abstract spec is only extended: it is never locked or built on its own.
    abstract: bool = False
    extends: EnvironmentName | None = None  # a folder beside this one, never a path
    channels: list[str] | None = None
    platforms: list[PlatformName] | None = None
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
        common = {k: val for k, val in v.items() if k not in PLATFORMS}
        out: dict[str, Any] = _check_virtual_map(common, "")
        for platform in PLATFORMS:
            if platform in v:
                out[platform] = _check_virtual_map(v[platform], f"{platform}: ")
        return out

    def declared_virtual_packages(self) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """(what every platform gets, what each platform gets on top)."""
        per_platform = {k: v for k, v in self.virtual_packages.items() if isinstance(v, dict)}
        common = {k: v for k, v in self.virtual_packages.items() if isinstance(v, str)}
        return common, per_platform

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
class LoadedSpec:
    path: Path
    spec: SpecFile
    lines: yamlfile.Lines


def load_spec_file(path: Path) -> LoadedSpec:
    """Parse and validate one `env.yaml`, without following `extends`."""
    spec, lines = yamlfile.load_file(path, SpecFile, "the spec")
    return LoadedSpec(path, spec, lines)


def _from_value(value: str) -> str:
    """`from:` an environment's name or a notebook image reference."""
    problem = (
        grammar.image_reference_problem(value)
        if "/" in value
        else grammar.environment_name_problem(value)
    )
    if problem:
        raise ValueError(f"{problem}; name a site environment or its notebook image")
    return value


class ExtensionImage(StrictModel):
    """`notebook:` or `worker:` of an extension: only its repository name."""

    image: RepositoryName = None


class ExtensionFile(StrictModel):
    """The schema of an extension's `env.yaml`: a user's packages on a published pair.

    `from` names the parent, like a Dockerfile's FROM: the pair is built on the parent's
    images (`extends` builds on a spec and solves everything again). `on`, the other
    name that suggests itself, is a boolean in YAML 1.1, which PyYAML reads (`on:` would
    be the key `True`). What a pair built without a Docker engine cannot change is not
    here: Debian packages, environment variables, channels, platforms and virtual
    packages all come from the parent."""

    from_: Annotated[str, AfterValidator(_from_value)] = Field(alias="from")
    description: OneLine
    display_name: OneLine | None = None
    dependencies: Additions = Field(default_factory=list)
    pip: PipPins = Field(default_factory=list)
    imports: ModuleNames = Field(default_factory=list)
    notebook: ExtensionImage = Field(default_factory=ExtensionImage)
    worker: ExtensionImage = Field(default_factory=ExtensionImage)

    @model_validator(mode="after")
    def _adds_something(self) -> ExtensionFile:
        if not self.dependencies and not self.pip:
            raise ValueError("an extension adds dependencies or pip pins; this one adds none")
        return self
