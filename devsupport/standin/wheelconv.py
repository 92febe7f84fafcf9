"""Turn wheels into staged conda package trees for one target CPython (3.11, linux-64 or
linux-aarch64).

A wheel's files go to lib/pythonX.Y/site-packages, its .data/ folders to their install
schemes (scripts -> bin, data -> the prefix root, headers -> include), and its console
and GUI entry points become bin/ scripts whose shebang holds the conda placeholder.
Requires-Dist becomes conda depends: markers are evaluated for the target, PyPI names
are mapped to conda names, specifiers are translated to MatchSpec syntax, and a
requirement with extras (`jsonschema[format-nongpl]`) depends on the extra's own
requirements too, since conda has no extras.

Wheels are input: every member name and entry point name goes through
`buildtool.common.confine`, so a member named `../x` or `/x`, a symlink member, or an entry point
named `../evil` is refused before anything is written outside the package's folder.
"""

from __future__ import annotations

import configparser
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.common import UnsafeArchiveMember, check_name, confine
from compat.vocabulary import PLATFORMS
from devsupport.standin.condapkg import PLACEHOLDER, PackageMeta

# PyPI names whose conda(-forge) package is named differently.
CONDA_NAMES = {
    "msgpack": "msgpack-python",
    "graphviz": "python-graphviz",
    # conda-forge's `matplotlib` adds a Qt GUI; libraries depend on matplotlib-base.
    "matplotlib": "matplotlib-base",
}


@dataclass(frozen=True)
class Target:
    """The interpreter the packages are for; markers are evaluated against it."""

    python_version: str  # full, e.g. "3.11.7"
    subdir: str = "linux-64"  # or linux-aarch64

    @property
    def machine(self) -> str:
        return PLATFORMS[self.subdir].machine

    @property
    def short(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.short}/site-packages"

    @property
    def python_spec(self) -> str:
        major, minor = map(int, self.short.split("."))
        return f"python >={major}.{minor},<{major}.{minor + 1}"

    @property
    def build(self) -> str:
        return "py" + self.short.replace(".", "") + "_0"

    def marker_environment(self, extra: str = "") -> dict[str, str]:
        return {
            "python_version": self.short,
            "python_full_version": self.python_version,
            "implementation_name": "cpython",
            "implementation_version": self.python_version,
            "platform_python_implementation": "CPython",
            "os_name": "posix",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.machine,
            "extra": extra,
        }


@dataclass(frozen=True)
class WheelInfo:
    path: Path
    name: str  # canonical PyPI name
    version: str
    requires: tuple[Requirement, ...]
    license: str | None


def conda_name(pypi_name: str) -> str:
    name = canonicalize_name(pypi_name)
    return CONDA_NAMES.get(name, name)


def read_wheel(path: Path) -> WheelInfo:
    with zipfile.ZipFile(path) as wheel:
        dist_info = _dist_info(wheel)
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    return WheelInfo(
        path=path,
        name=canonicalize_name(metadata["Name"]),
        version=metadata["Version"],
        requires=tuple(Requirement(r) for r in metadata.get_all("Requires-Dist") or []),
        license=metadata.get("License-Expression"),
    )


def conda_constraint(specifier: SpecifierSet) -> str:
    """A PEP 440 specifier set as a conda version spec (comma = and); "" for any."""
    parts: list[str] = []
    for spec in sorted(specifier, key=str):
        parts += _translate(spec)
    return ",".join(parts)


def _translate(spec: Specifier) -> list[str]:
    operator, version = spec.operator, spec.version
    if operator == "~=":
        release = Version(version).release[:-1]
        upper = ".".join(map(str, (*release[:-1], release[-1] + 1)))
        return [f">={version}", f"<{upper}"]
    if operator in ("==", "==="):
        return [version] if version.endswith(".*") else [f"=={version}"]
    if operator == "!=":
        # conda has no "not this series"; leaving the hole out only widens the range.
        return [] if version.endswith(".*") else [f"!={version}"]
    return [f"{operator}{version}"]


def conda_depends(
    wheel: WheelInfo, everything: Mapping[str, WheelInfo], target: Target
) -> tuple[str, ...]:
    """The depends of wheel's conda package: python, then its requirements, sorted."""
    constraints: dict[str, list[str]] = {}
    for requirement in _effective(wheel.requires, everything, target, extra=""):
        name = conda_name(requirement.name)
        if name == conda_name(wheel.name):
            continue
        constraint = conda_constraint(requirement.specifier)
        constraints.setdefault(name, [])
        if constraint and constraint not in constraints[name]:
            constraints[name].append(constraint)
    depends = [f"{name} {','.join(c)}".strip() for name, c in sorted(constraints.items())]
    return (target.python_spec, *depends)


def _effective(
    requires: Iterable[Requirement],
    everything: Mapping[str, WheelInfo],
    target: Target,
    extra: str,
    seen: frozenset[tuple[str, str]] = frozenset(),
) -> list[Requirement]:
    """Requirements that apply on the target for this extra, with extras expanded."""
    environment = target.marker_environment(extra)
    selected = [r for r in requires if r.marker is None or r.marker.evaluate(environment)]
    if extra:
        base = target.marker_environment("")
        selected = [r for r in selected if r.marker is not None and not r.marker.evaluate(base)]
    result = list(selected)
    for requirement in selected:
        name = canonicalize_name(requirement.name)
        for wanted in sorted(requirement.extras):
            key = (name, canonicalize_name(wanted))
            if key in seen or name not in everything:
                continue
            result += _effective(
                everything[name].requires, everything, target, key[1], seen | {key}
            )
    return result


def stage_wheel(
    wheel: WheelInfo, root: Path, target: Target, depends: tuple[str, ...]
) -> tuple[PackageMeta, list[str]]:
    """Unpack wheel into root as an installed prefix tree.

    Returns the package metadata and the relative paths that hold the prefix placeholder.
    """
    placeholders: list[str] = []
    with zipfile.ZipFile(wheel.path) as archive:
        dist_info = _dist_info(archive)
        data_dir = dist_info.removesuffix(".dist-info") + ".data"
        for member in archive.infolist():
            if member.is_dir():
                continue
            if stat.S_ISLNK(member.external_attr >> 16):
                raise UnsafeArchiveMember(wheel.path, member.filename, "it is a symlink")
            check_name(member.filename, archive=wheel.path)
            relative = _install_path(member.filename, data_dir, target)
            destination = confine(root, relative, archive=wheel.path, member=member.filename)
            destination.parent.mkdir(parents=True, exist_ok=True)
            content = archive.read(member)
            if relative.startswith("bin/") and content.startswith(b"#!python"):
                content = _shebang(target) + content.split(b"\n", 1)[1]
                placeholders.append(relative)
            destination.write_bytes(content)
            if (member.external_attr >> 16) & stat.S_IXUSR:
                destination.chmod(0o755)
        entry_points = _entry_points(archive, dist_info)
    for script, reference in entry_points:
        where = f"{dist_info}/entry_points.txt: {script}"
        if "/" in script or script in (".", ".."):
            reason = "an entry point's name must be a plain file name"
            raise UnsafeArchiveMember(wheel.path, where, reason)
        path = confine(root, f"bin/{script}", archive=wheel.path, member=where)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_entry_point_script(reference, target))
        path.chmod(0o755)
        placeholders.append(f"bin/{script}")
    meta = PackageMeta(
        name=conda_name(wheel.name),
        version=wheel.version,
        build=target.build,
        depends=depends,
        subdir=target.subdir,
        license=wheel.license,
    )
    return meta, placeholders


def _dist_info(archive: zipfile.ZipFile) -> str:
    folders = {name.split("/", 1)[0] for name in archive.namelist()}
    matches = [f for f in folders if f.endswith(".dist-info")]
    if len(matches) != 1:
        raise ValueError(f"{archive.filename}: expected one .dist-info folder, found {matches}")
    return matches[0]


def _install_path(member: str, data_dir: str, target: Target) -> str:
    if not member.startswith(data_dir + "/"):
        return f"{target.site_packages}/{member}"
    scheme, _, rest = member[len(data_dir) + 1 :].partition("/")
    prefixes = {
        "purelib": target.site_packages,
        "platlib": target.site_packages,
        "scripts": "bin",
        "data": "",
        "headers": f"include/python{target.short}",
    }
    if scheme not in prefixes:
        raise ValueError(f"unknown wheel data scheme {scheme!r} in {member}")
    return f"{prefixes[scheme]}/{rest}".lstrip("/")


def _entry_points(archive: zipfile.ZipFile, dist_info: str) -> list[tuple[str, str]]:
    name = f"{dist_info}/entry_points.txt"
    if name not in archive.namelist():
        return []
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(archive.read(name).decode())
    return [
        (script, reference.strip())
        for section in ("console_scripts", "gui_scripts")
        if parser.has_section(section)
        for script, reference in parser.items(section)
    ]


def _shebang(target: Target) -> bytes:
    return f"#!{PLACEHOLDER}/bin/python{target.short}\n".encode()


def _entry_point_script(reference: str, target: Target) -> bytes:
    """A launcher for `module:attr.path [extras]`."""
    match = re.fullmatch(r"([\w.]+)\s*:\s*([\w.]+)\s*(\[.*\])?", reference)
    if not match:
        raise ValueError(f"cannot read entry point {reference!r}")
    module, attribute = match.group(1), match.group(2)
    head = attribute.split(".")[0]
    body = (
        f"import sys\n\nfrom {module} import {head}\n\n"
        f'if __name__ == "__main__":\n    sys.exit({attribute}())\n'
    )
    return _shebang(target) + body.encode()
