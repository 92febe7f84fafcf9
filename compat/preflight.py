"""``daskhub-compat preflight REF``: will this Python work with a pair's workers?

Run it where a Dask client will run (a notebook, a laptop, a CI job), before any cluster
exists. It compares this interpreter (``sys.version``, ``importlib.metadata``) with the
pair's worker set, read

* for an image reference (anything with a ``/``: ``host/ns/worker:tag``,
  ``host/ns/worker@sha256:...``), from the SBOM that ``buildtool publish`` attached to
  the image in the registry (:mod:`compat.registry`), for ``--platform``;
* for an environment name (``physlite``), from the site's lock,
  ``<root>/<env>/conda-lock.yml``, worker category.

It compares what distributed compares between a client and its workers
(:mod:`compat.rules`): the full Python version, the packages distributed requires (one
missing here is a mismatch too) and its optional ones where both sides have them. It
also compares dask-gateway, whose client and server must match; a worker set without
it is reported as such and is no mismatch. On a mismatch it prints the one ``pip
install`` command that brings this environment in line, under PyPI names.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compat import compare, registry, report, rules, sources
from compat.compare import Group, Mismatch, Report
from compat.model import CheckError, Package, PackageRecord, PackageSet, conda_package_set
from compat.names import normalize
from compat.vocabulary import LINUX_64, Platform

GATEWAY = "dask-gateway"
#: Everything preflight compares; every other package is left out.
COMPARED = rules.ERROR_LEVEL | {GATEWAY}
CLIENT, WORKERS = "client", "workers"
GATEWAY_REASON = "gateway client and server must match"
#: What the line of the pip command that fixes the mismatches starts with.
FIX = "fix: "
LOCK_FILE = "conda-lock.yml"
# An environment's folder name (buildtool/common/grammar.py's ENVIRONMENT_NAME).
_ENVIRONMENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)


@dataclass
class Preflight:
    """A report of client against workers, and what to run to fix it."""

    report: Report
    #: lines saying how to fix the mismatches; empty when everything matches
    fix: list[str]

    @property
    def errors(self) -> list[Mismatch]:
        return self.report.errors


@dataclass(frozen=True)
class WorkerSet:
    """The worker side: its packages, what it is called, and anything to say about it."""

    packages: PackageSet
    source: str
    notes: tuple[str, ...] = ()


# -- the worker side --------------------------------------------------------------------------
def default_root() -> Path:
    """``./environments`` when there is one (a clone of this repository), else ``.``."""
    return Path("environments") if Path("environments").is_dir() else Path(".")


def from_lock(environment: str, root: Path, platform: Platform) -> WorkerSet:
    """The worker set of ``<root>/<environment>/conda-lock.yml``."""
    if len(environment) > 64 or not _ENVIRONMENT.fullmatch(environment):
        raise CheckError(
            f"{environment[:100]!r} is neither an image reference (host/name[:tag][@digest]) "
            "nor an environment name (lowercase letters, digits and . _ - between them)"
        )
    subdir = platform.subdir
    if not root.is_dir():
        raise CheckError(f"{root}: no such folder (--root: the site's environments folder)")
    folder = root / environment
    if not folder.is_dir():
        raise CheckError(f"{folder}: no environment {environment!r} under {root}")
    path = folder / LOCK_FILE
    if not path.is_file():
        raise CheckError(f"{path}: no lock; run `buildtool lock {environment}` first")
    packages = sources.from_lockfile(sources.LockSelection(path, "worker", subdir))
    return WorkerSet(packages, f"{environment} workers in {path} ({subdir})")


def _properties(component: dict[str, Any]) -> dict[str, str]:
    found = component.get("properties")
    items = found if isinstance(found, list) else []
    return {str(p.get("name")): str(p.get("value")) for p in items if isinstance(p, dict)}


def sbom_records(document: dict[str, Any], where: str) -> list[PackageRecord]:
    """The conda packages, then the pip pins, of a CycloneDX SBOM (``buildtool.publish.sbom``)."""
    components = document.get("components")
    if not isinstance(components, list):
        raise CheckError(f"{where}: the SBOM lists no components")
    conda: list[PackageRecord] = []
    pip: list[PackageRecord] = []
    for component in components:
        if not isinstance(component, dict):
            raise CheckError(f"{where}: an SBOM component is not an object")
        purl, name, version = (component.get(k) for k in ("purl", "name", "version"))
        if not (isinstance(purl, str) and isinstance(name, str) and isinstance(version, str)):
            continue  # not a package (buildtool writes all three for every package)
        if purl.startswith("pkg:conda/"):
            conda.append(PackageRecord(name, version, _properties(component).get("conda:build")))
        elif purl.startswith("pkg:pypi/"):
            pip.append(PackageRecord(name, version, None))
    if not conda:
        raise CheckError(f"{where}: the SBOM lists no conda packages")
    return [*conda, *pip]


def from_registry(reference: str, platform: Platform, timeout: float) -> WorkerSet:
    """The set an image's SBOM lists, as the registry holds it."""
    found = registry.read_sbom(reference, platform.oci, timeout)
    where = str(found.reference)
    packages = conda_package_set(where, sbom_records(found.document, where))
    metadata = found.document.get("metadata")
    root = metadata.get("component") if isinstance(metadata, dict) else None
    role = _properties(root).get("daskhub:role") if isinstance(root, dict) else None
    notes: tuple[str, ...] = ()
    if role == "notebook":
        notes = (
            "this is the pair's notebook image: its set was compared, which holds the worker "
            "image's versions of every package both have; name the worker image to compare "
            "exactly what the workers run",
        )
    source = f"{where} ({found.platform}, manifest {found.manifest})"
    return WorkerSet(packages, source, notes)


def worker_set(target: str, root: Path | None, platform: Platform, timeout: float) -> WorkerSet:
    """An image reference has a ``/``; anything else names an environment."""
    if "/" in target:
        return from_registry(target, platform, timeout)
    return from_lock(target, root if root is not None else default_root(), platform)


# -- the comparison -----------------------------------------------------------------------------
def _compared(packages: PackageSet, label: str) -> PackageSet:
    kept = {n: p for n, p in packages.packages.items() if n in COMPARED}
    return PackageSet(label, packages.kind, kept)


def _gateway(here: str | None, there: str | None) -> tuple[Mismatch | None, str]:
    """dask-gateway's row (None when there is none) and its line below the table."""
    shown = here or "not installed"
    if there is None:
        return None, f"{GATEWAY}: {shown} here, not in the image (not compared)"
    line = f"{GATEWAY}: {shown} here, {there} on the workers"
    if here == there:
        return None, line
    columns: dict[str, tuple[Group, ...]] = {
        CLIENT: (Group(here, (CLIENT,)),),
        WORKERS: (Group(there, (WORKERS,)),),
    }
    return Mismatch(GATEWAY, "error", GATEWAY_REASON, columns, (WORKERS,)), line


def fix_lines(mismatches: list[Mismatch]) -> list[str]:
    """The pip command that installs the workers' versions of what differs."""
    lines: list[str] = []
    pins: list[str] = []
    for mismatch in mismatches:
        here = mismatch.columns[CLIENT][0].version
        there = mismatch.columns[WORKERS][0].version
        if mismatch.package == rules.PYTHON:
            lines.append(
                f"Python {here} here, {there} on the workers: pip cannot change that; "
                f"use a Python {there} environment"
            )
        elif there is None:
            lines.append(f"{mismatch.package} is not in the image: pip cannot fix that here")
        else:
            pins.append(f"{mismatch.package}=={there}")
    if pins:
        lines.append(FIX + shlex.join(["pip", "install", *pins]))
    return lines


def check(client: PackageSet, workers: WorkerSet, subject: str) -> Preflight:
    """Compare this environment with a worker set."""
    columns = [
        compare.Column(CLIENT, {CLIENT: _compared(client, CLIENT)}),
        compare.Column(WORKERS, {WORKERS: _compared(workers.packages, WORKERS)}),
    ]
    # Only the error-level rows are kept: the rules' warnings (one-sided packages,
    # builds) are not what distributed compares; dask-gateway gets its own row.
    found = compare.compare_columns(columns, subject)
    mismatches = [m for m in found.mismatches if m.level == "error" and m.package != GATEWAY]
    row, line = _gateway(client.version(GATEWAY), workers.packages.version(GATEWAY))
    if row is not None:
        mismatches.append(row)
    mismatches.sort(key=lambda m: m.package)
    result = dataclasses.replace(found, mismatches=mismatches, notes=[line, *workers.notes])
    return Preflight(result, fix_lines(mismatches))


def run(
    target: str,
    root: Path | None = None,
    platform: Platform = LINUX_64,
    timeout: float = registry.DEFAULT_TIMEOUT_S,
) -> Preflight:
    """Check the running interpreter against ``target``'s workers.

    Raises :class:`compat.model.CheckError` when the worker set cannot be read.
    """
    workers = worker_set(target, root, platform, timeout)
    client = sources.from_environment(CLIENT)
    return check(client, workers, f"this Python ({sys.executable}) vs {workers.source}")


# -- the full pins: every distribution of the worker set ---------------------------------------
FULL_FILE = "client-requirements-full.txt"
FULL_REASON = "the workers' version (full client pins)"
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_PYTHON_LINE = re.compile(r"# Python: (\S+) exactly")


def full_pins(text: str, where: str) -> PackageSet:
    """The pins of a `client-requirements-full.txt` (what `buildtool client --full`
    writes and `publish` attaches), with the workers' Python from its header."""
    packages: dict[str, Package] = {}
    for line in text.splitlines():
        python = _PYTHON_LINE.match(line)
        if python:
            packages[rules.PYTHON] = Package(python.group(1))
        pin = _PIN.fullmatch(line.strip())
        if pin:
            packages[normalize(pin.group(1))] = Package(pin.group(2))
    if len(packages) < 2:
        raise CheckError(f"{where}: no pins in it")
    return PackageSet(where, "python", packages)


def read_full_pins(target: str, build_dir: Path, timeout: float) -> PackageSet:
    """An image's attached full pins; for an environment's name, the ones `buildtool
    client NAME --full` wrote under `build_dir`."""
    if "/" in target:
        return full_pins(registry.read_client_file(target, FULL_FILE, timeout), target)
    path = build_dir / target / "client" / FULL_FILE
    if not path.is_file():
        raise CheckError(f"{path}: none; run `buildtool client {target} --full` first")
    return full_pins(path.read_text(), str(path))


def check_full(client: PackageSet, pinned: PackageSet, subject: str) -> Preflight:
    """Every pinned distribution at the workers' version here (one missing is a
    mismatch too), and the workers' Python."""
    mismatches = []
    for name in sorted(pinned.packages):
        here, there = client.version(name), pinned.version(name)
        if here != there:
            columns: dict[str, tuple[Group, ...]] = {
                CLIENT: (Group(here, (CLIENT,)),),
                WORKERS: (Group(there, (WORKERS,)),),
            }
            mismatches.append(Mismatch(name, "error", FULL_REASON, columns, (WORKERS,)))
    note = f"{len(pinned.packages)} pins compared, Python among them"
    found = Report(subject, (CLIENT, WORKERS), mismatches, notes=[note])
    return Preflight(found, fix_lines(mismatches))


def run_full(
    target: str, build_dir: Path, timeout: float = registry.DEFAULT_TIMEOUT_S
) -> Preflight:
    """Check the running interpreter against every pin of `target`'s full client pins."""
    pinned = read_full_pins(target, build_dir, timeout)
    client = sources.from_environment(CLIENT)
    return check_full(client, pinned, f"this Python ({sys.executable}) vs {pinned.label}")


def render(result: Preflight, fmt: str = "table") -> str:
    """The report in `fmt` (`compat.report.RENDERERS`), with the fix: its lines after a
    table, as a list after Markdown, as `fix` in JSON."""
    if fmt == "json":
        return json.dumps({**report.as_dict(result.report), "fix": result.fix}, indent=2) + "\n"
    text = report.render(result.report, fmt)
    if fmt == "markdown":
        fixes = "".join(f"- {_markdown(line)}\n" for line in result.fix)
        return text + (f"\n{fixes}" if fixes else "")
    return text + "".join(f"{line}\n" for line in result.fix)


def _markdown(line: str) -> str:
    """A fix line for Markdown: the pip command as code."""
    command = line.removeprefix(FIX)
    return f"{FIX}`{command}`" if command != line else line
