"""Compare package sets side by side and classify every difference.

A *column* is one side of the comparison: the client, the scheduler, the
workers (one member per worker), or a static source such as a lockfile's
notebook image. Each mismatch records, per column, the versions found there
grouped by value, so "48 workers at 4.3.2, 2 at None" falls out directly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from compat import rules
from compat.live import ClusterSnapshot
from compat.model import PackageSet
from compat.rules import Level


@dataclass(frozen=True)
class Column:
    """One side of a comparison."""

    name: str
    #: member name (a worker address, or the column name) -> its package set
    members: dict[str, PackageSet]
    #: distributed compares the scheduler only for some packages
    is_scheduler: bool = False


@dataclass(frozen=True)
class Group:
    """Members of a column that hold the same version (None: not installed)."""

    version: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class Mismatch:
    """One package whose versions differ."""

    package: str
    level: Level
    reason: str
    #: column name -> groups, largest first
    columns: dict[str, tuple[Group, ...]]
    #: the columns that differ: those unlike the first column, or the first
    #: column alone when all the others agree with each other
    differs: tuple[str, ...]


@dataclass
class Report:
    """The outcome of one check."""

    subject: str
    columns: tuple[str, ...]
    mismatches: list[Mismatch]
    #: live checks: how many workers answered; None for static checks
    workers_checked: int | None = None
    left: list[str] = field(default_factory=list)
    unanswered: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.level == "error"]

    @property
    def warnings(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.level == "warning"]


BUILD_REASON = "same version, other build"
MIXED_KINDS_NOTE = (
    "conda packages were compared with Python distributions: packages found on "
    "one side only are not listed, except those distributed requires"
)


def _groups(values: dict[str, str | None]) -> tuple[Group, ...]:
    by_version: dict[str | None, list[str]] = defaultdict(list)
    for member, version in values.items():
        by_version[version].append(member)
    ordered = sorted(by_version.items(), key=lambda item: (-len(item[1]), str(item[0])))
    return tuple(Group(version, tuple(sorted(members))) for version, members in ordered)


def _differs(columns: dict[str, tuple[Group, ...]]) -> tuple[str, ...]:
    names = list(columns)
    reference = columns[names[0]][0].version
    unlike = [n for n in names[1:] if any(g.version != reference for g in columns[n])]
    others = {g.version for n in names[1:] for g in columns[n]}
    if len(names) > 2 and len(unlike) == len(names) - 1 and len(others) == 1:
        return (names[0],)
    return tuple(unlike)


def _values(column: Column, package: str, with_build: bool) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for member, package_set in column.members.items():
        found = package_set.packages.get(package)
        if found is None:
            values[member] = None
        elif with_build and found.build:
            values[member] = f"{found.version}={found.build}"
        else:
            values[member] = found.version
    return values


def _builds(columns: list[Column], package: str) -> set[tuple[str, str | None]]:
    return {
        (found.version, found.build)
        for c in columns
        for package_set in c.members.values()
        if (found := package_set.packages.get(package)) is not None
    }


def _classify(package: str, columns: list[Column], common_only: bool) -> tuple[Level, str] | None:
    """(level, reason) for ``package``, or None when it matches everywhere."""
    compared = [c for c in columns if not c.is_scheduler or rules.compares_scheduler(package)]
    error_values = [v for c in compared for v in _values(c, package, False).values()]
    if rules.is_error(package, error_values):
        if package == rules.PYTHON:
            return "error", "Python version"
        if package in rules.REQUIRED:
            return "error", "required by distributed"
        return "error", "compared by distributed where installed"
    values = {v for c in columns for v in _values(c, package, False).values()}
    if common_only:
        values.discard(None)
    if len(values) > 1:
        return "warning", "missing on some sides" if None in values else "versions differ"
    builds = _builds(columns, package)
    if len(builds) > 1 and all(build is not None for _, build in builds):
        return "warning", BUILD_REASON
    return None


def compare_columns(columns: list[Column], subject: str) -> Report:
    """Compare every package found in any column."""
    columns = [c for c in columns if c.members]
    sets = [s for c in columns for s in c.members.values()]
    common_only = len({s.kind for s in sets}) > 1
    packages = sorted({name for s in sets for name in s.packages})
    mismatches: list[Mismatch] = []
    for package in packages:
        found = _classify(package, columns, common_only)
        if found is None:
            continue
        level, reason = found
        with_build = reason == BUILD_REASON
        grouped = {c.name: _groups(_values(c, package, with_build)) for c in columns}
        mismatches.append(Mismatch(package, level, reason, grouped, _differs(grouped)))
    mismatches.sort(key=lambda m: (m.level != "error", m.package))
    notes = [MIXED_KINDS_NOTE] if common_only else []
    return Report(subject, tuple(c.name for c in columns), mismatches, notes=notes)


def compare_sets(first: PackageSet, second: PackageSet) -> Report:
    """Compare two static sources, e.g. a notebook image and a worker image."""
    columns = [
        Column(first.label, {first.label: first}),
        Column(second.label, {second.label: second}),
    ]
    return compare_columns(columns, f"{first.label} vs {second.label}")


def compare_cluster(snapshot: ClusterSnapshot) -> Report:
    """Compare client, scheduler and every worker of a live cluster."""
    columns = [
        Column("client", {"client": snapshot.client}),
        Column("scheduler", {"scheduler": snapshot.scheduler}, is_scheduler=True),
        Column("workers", dict(snapshot.workers)),
    ]
    report = compare_columns(columns, f"cluster {snapshot.target}")
    report.workers_checked = len(snapshot.workers)
    report.left = list(snapshot.left)
    report.unanswered = dict(snapshot.unanswered)
    return report
