"""The static gate: refuse a notebook image and a worker image that would not
work together, before they are published.

The build tool calls :func:`assert_compatible` (or :func:`gate_lockfile`)
and stops when it raises :class:`IncompatibleImagesError`.
"""

from __future__ import annotations

from pathlib import Path

from compat.compare import Report, compare_sets
from compat.model import PackageSet
from compat.sources import DEFAULT_PLATFORM, LockSelection, from_lockfile


class IncompatibleImagesError(Exception):
    """A notebook set and a worker set have an error-level mismatch."""

    def __init__(self, report: Report) -> None:
        self.report = report
        problems = "; ".join(
            f"{m.package} ("
            + ", ".join(f"{name} {groups[0].version}" for name, groups in m.columns.items())
            + ")"
            for m in report.errors
        )
        super().__init__(f"incompatible images, {report.subject}: {problems}")


def check_pair(notebook: PackageSet, worker: PackageSet) -> Report:
    """Compare the notebook image's packages with the worker image's."""
    return compare_sets(notebook, worker)


def assert_compatible(notebook: PackageSet, worker: PackageSet) -> Report:
    """Return the report, or raise :class:`IncompatibleImagesError` on an error."""
    report = check_pair(notebook, worker)
    if report.errors:
        raise IncompatibleImagesError(report)
    return report


def gate_lockfile(path: Path, platform: str = DEFAULT_PLATFORM) -> Report:
    """Gate the two images that one conda-lock lockfile describes.

    Raises :class:`compat.model.CheckError` when the lockfile cannot be read
    and :class:`IncompatibleImagesError` when the images would not match.
    """
    notebook = from_lockfile(LockSelection(Path(path), "notebook", platform))
    worker = from_lockfile(LockSelection(Path(path), "worker", platform))
    return assert_compatible(notebook, worker)
