"""`buildtool import`: a conda `environment.yml` written as `environments/NAME/env.yaml`.

Sites already hold environment files (the seed deployment built its images on
pangeo-docker-images'); moving to this tool should not mean rewriting each by hand. The
import keeps what the spec can express and refuses, in one line each, what it cannot:

- `channels`, without conda's `nodefaults` marker (a spec's channels are all there is),
  left out when they are what the spec would have anyway (the parent's, or conda-forge);
- `dependencies`, each normalized (`tensorflow>=2.17.0=cuda12*` is stored as
  `tensorflow >=2.17.0 cuda12*`), in the file's order, without exact duplicates and without
  what the parent (`--extends`) already asks for in the same words (a bare name the parent
  names, or the parent's own spec); a constraint on a parent's package stays, and a
  contradictory one is refused like any other pin;
- the `pip:` entries, only exact pins (`name==version`): pip packages are not solved, so
  anything else could change between two builds of one lock. Every other entry is one error
  naming the file, the key and the line; nothing is written;
- `variables` as `env`, and the `__cuda`-like virtual packages of a conda-lock
  `virtual-packages.yml` beside the file as `virtual_packages`.

The output depends only on the file's content and the options: importing the same file
again writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rattler import MatchSpec

from buildtool.common import BuildToolError, SpecError, grammar, key_text, nearest_line, yamlfile
from buildtool.spec.environments import Environment, check_environment_name, load_environment
from buildtool.spec.schema import (
    DEFAULT_CHANNELS,
    DEFAULT_VIRTUAL_PACKAGES,
    SPEC_FILE,
    normalize_matchspec,
)
from compat.vocabulary import PLATFORMS

KNOWN_KEYS = ("name", "channels", "dependencies", "variables", "prefix")
# conda's marker for "do not add the defaults channel": a spec's channels are all it uses.
_NOT_CHANNELS = {"nodefaults"}


class ImportErrors(BuildToolError):
    """Everything wrong with one environment file, one line each."""

    exit_code = 2

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__(str(errors[0]))
        self.errors = errors

    def __str__(self) -> str:
        # The CLI prints "error: " before the message; each further line gets it too.
        return "\nerror: ".join(str(e) for e in self.errors)


def _read(source: Path) -> tuple[dict[str, Any], yamlfile.Lines, str]:
    text = yamlfile.read_text(source, what="environment file")
    data, lines = yamlfile.load(source, text, "an environment file")
    return data, lines, text


def _scalar(value: str, flow: bool = False) -> str:
    """`value` as a YAML scalar: plain when YAML reads it back as itself, else quoted.
    In a flow sequence (`[a, b]`) a comma or bracket would split or end it: quoted."""
    plain = yaml.safe_load(value) == value and ": " not in value and " #" not in value
    if flow and any(c in value for c in ",[]{}"):
        plain = False
    return value if plain and value.strip() == value else json.dumps(value)


def _virtual_packages(source: Path) -> dict[str, Any]:
    """What a conda-lock `virtual-packages.yml` beside `source` declares for our platforms:
    one map when every platform that declares something declares the same, else a map per
    platform. The defaults (`__glibc`, ...) follow the base image and are not taken."""
    path = source.parent / "virtual-packages.yml"
    if not path.is_file():
        return {}
    data, lines = yamlfile.load(path, yamlfile.read_text(path), "virtual-packages.yml")
    subdirs = data.get("subdirs") or {}
    if not isinstance(subdirs, dict):
        raise SpecError(path, "subdirs", "must map platforms to packages", lines.get(("subdirs",)))
    declared: dict[str, dict[str, str]] = {}
    for platform in PLATFORMS:
        entry = subdirs.get(platform) or {}
        packages = entry.get("packages") or {} if isinstance(entry, dict) else None
        loc: tuple[str, ...]
        if not isinstance(packages, dict):
            loc = ("subdirs", platform)
            line = nearest_line(lines, loc)
            raise SpecError(path, key_text(loc), "must map `packages` to versions", line)
        for name in packages:
            if not grammar.VIRTUAL_PACKAGE.fullmatch(str(name)):
                loc = ("subdirs", platform, "packages", name)
                line = nearest_line(lines, loc)
                raise SpecError(path, key_text(loc), f"{name!r} is not a virtual package", line)
        own = {
            str(name): str(version)
            for name, version in packages.items()
            if name not in (*DEFAULT_VIRTUAL_PACKAGES, "__archspec")
        }
        if own:
            declared[platform] = own
    distinct = {json.dumps(v, sort_keys=True) for v in declared.values()}
    return next(iter(declared.values())) if len(distinct) == 1 else dict(declared)


@dataclass
class Imported:
    """The spec's text, and where in the source each of its list items came from."""

    text: str
    source: Path
    origins: dict[str, tuple[str, int | None]]  # "dependencies[2]" -> ("dependencies[5]", 12)


@dataclass
class _Reading:
    """What reading an environment file found: the errors, and where each kept value
    came from (its key and line, for errors about the spec it becomes)."""

    source: Path
    lines: yamlfile.Lines
    errors: list[SpecError] = field(default_factory=list)
    origins: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def origin(self, key: str, loc: tuple[Any, ...]) -> None:
        self.origins[key] = (key_text(loc), nearest_line(self.lines, loc))

    def error(self, loc: tuple[Any, ...], message: str) -> None:
        self.errors.append(
            SpecError(self.source, key_text(loc), message, nearest_line(self.lines, loc))
        )


def _channels(reading: _Reading, data: dict[str, Any]) -> list[str]:
    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        reading.error(("channels",), "must be a list of channel names")
        channels = []
    channels = [c for c in channels if c not in _NOT_CHANNELS]
    for index, channel in enumerate(channels):
        problem = grammar.channel_problem(channel)
        if problem:
            reading.error(("channels", index), problem)
    return channels


def _pip_pins(
    reading: _Reading, entry: dict[str, Any], loc: tuple[Any, ...], pip: list[str]
) -> None:
    """The `pip:` list of a dependency entry, added to `pip`: exact pins only."""
    if not isinstance(entry["pip"] or [], list):
        reading.error((*loc, "pip"), "must be a list of pip requirements")
        return
    for pip_index, requirement in enumerate(entry["pip"] or []):
        if isinstance(requirement, str) and grammar.PIP_PIN.fullmatch(requirement.strip()):
            reading.origin(f"pip[{len(pip)}]", (*loc, "pip", pip_index))
            pip.append(requirement.strip())
        else:
            reading.error(
                (*loc, "pip", pip_index),
                f"{requirement!r} is not an exact pip pin (name==version): pip "
                "packages are not solved, so only exact pins rebuild the same",
            )


def _dependencies(
    reading: _Reading, data: dict[str, Any], parent: Environment | None
) -> tuple[list[str], list[str]]:
    """The conda MatchSpecs the parent does not already ask for, and the exact pip pins."""
    parent_specs = {r.spec for r in parent.all_requirements()} if parent else set()
    parent_names = {r.name for r in parent.all_requirements()} if parent else set()
    dependencies: list[str] = []
    pip: list[str] = []
    raw = data.get("dependencies") or []
    if not isinstance(raw, list):
        reading.error(("dependencies",), "must be a list")
        raw = []
    for index, entry in enumerate(raw):
        loc: tuple[Any, ...] = ("dependencies", index)
        if isinstance(entry, dict) and list(entry) == ["pip"]:
            _pip_pins(reading, entry, loc, pip)
            continue
        if not isinstance(entry, str):
            reading.error(loc, "must be a MatchSpec string or a `pip:` list")
            continue
        try:
            spec = normalize_matchspec(str(entry))
        except ValueError as exc:
            reading.error(loc, str(exc))
            continue
        bare = MatchSpec(spec).name.normalized == spec  # type: ignore[union-attr]
        if spec in parent_specs or (bare and spec in parent_names) or spec in dependencies:
            continue
        reading.origin(f"dependencies[{len(dependencies)}]", loc)
        dependencies.append(spec)
    return dependencies, pip


def _variables(reading: _Reading, data: dict[str, Any]) -> dict[Any, Any]:
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        reading.error(("variables",), "must map names to values")
        return {}
    for key, value in variables.items():
        if not isinstance(key, str) or not grammar.ENV_VAR.fullmatch(key):
            reading.error(("variables", key), f"{key!r} is not an environment variable name")
        elif isinstance(value, (dict, list)) or value is None:
            reading.error(("variables", key), "must be a string, a number or a boolean")
    return variables


def convert(source: Path, extends: str | None, root: Path) -> Imported:
    """The spec that `source` (a conda environment.yml) imports to, on top of `extends`."""
    data, lines, text = _read(source)
    reading = _Reading(source, lines)
    for key in data:
        if key not in KNOWN_KEYS:
            reading.error(
                (key,), f"unknown key {key!r} (an environment file has {', '.join(KNOWN_KEYS)})"
            )
    parent = load_environment(root, extends) if extends else None
    channels = _channels(reading, data)
    dependencies, pip = _dependencies(reading, data, parent)
    variables = _variables(reading, data)
    if reading.errors:
        raise ImportErrors(reading.errors)

    digest = hashlib.sha256(text.encode()).hexdigest()
    out = [
        f"# Imported by `buildtool import` from {source.as_posix()}",
        f"# (sha256 {digest[:16]}). Import again to update it, or edit it from now on.",
        "description: "
        + _scalar(
            f"Imported from {source.name}"
            + (f" (conda environment {str(data['name'])!r})" if data.get("name") else "")
        ),
    ]
    if extends:
        out.append(f"extends: {extends}")
    if channels and channels != list(parent.channels if parent else DEFAULT_CHANNELS):
        out.append(f"channels: [{', '.join(_scalar(c, flow=True) for c in channels)}]")
    out.append("dependencies:" if dependencies else "dependencies: []")
    out += [f"  - {_scalar(spec)}" for spec in dependencies]
    if pip:
        out.append("pip:")
        out += [f"  - {_scalar(requirement)}" for requirement in pip]
    if variables:
        reading.origin("env", ("variables",))
        out.append("env:")
        out += [f"  {key}: {_scalar(str(value))}" for key, value in variables.items()]
    out += _virtual_lines(_virtual_packages(source))
    return Imported("\n".join(out) + "\n", source, reading.origins)


def _virtual_lines(virtual: dict[str, Any]) -> list[str]:
    """virtual-packages.yml's packages as the spec's `virtual_packages:`."""
    if not virtual:
        return []
    out = ["# from virtual-packages.yml: what the GPU nodes provide", "virtual_packages:"]
    for key, value in virtual.items():
        if isinstance(value, dict):
            out.append(f"  {key}:")
            out += [f"    {k}: {json.dumps(v)}" for k, v in value.items()]
        else:
            out.append(f"  {key}: {json.dumps(value)}")
    return out


def import_environment(source: Path, name: str, root: Path, extends: str | None = None) -> Path:
    """Write `root/name/env.yaml` from `source`, validated; on any error write nothing."""
    check_environment_name(root, name)
    if extends is not None:
        check_environment_name(root, extends)
    if yamlfile.unsafe_character(str(source)):
        shown = str(source).encode("unicode_escape").decode("ascii")
        raise SpecError(Path(shown), "", "a file name holds a control character")
    imported = convert(source, extends, root)
    directory = root / name
    path = directory / SPEC_FILE
    created = not directory.exists()
    old = path.read_bytes() if path.exists() else None
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(imported.text)
    try:
        load_environment(root, name)  # the same validation as every other spec
    except BuildToolError as exc:
        if old is not None:
            path.write_bytes(old)
        elif created:
            shutil.rmtree(directory)
        else:
            path.unlink()
        if isinstance(exc, SpecError) and exc.path == path:
            raise _in_source(imported, exc) from None
        raise
    return path


def _in_source(imported: Imported, exc: SpecError) -> SpecError:
    """`exc`, found in the spec that was not kept, told about the line it came from."""
    key = exc.key.split(".", 1)[0]
    for candidate in (exc.key, key, key.split("[", 1)[0]):
        if candidate in imported.origins:
            source_key, line = imported.origins[candidate]
            return SpecError(imported.source, source_key, exc.message, line)
    return SpecError(imported.source, "", f"imports to an invalid spec: {exc.message}")
