"""Data shared by every part of the checker: package sets and the check error."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from compat import names

#: Where a package set's names come from: conda packages (lockfile, image) or
#: installed Python distributions (a live process).
Kind = Literal["conda", "python"]


class CheckError(Exception):
    """The check could not run: bad input or an unreachable cluster (exit code 2)."""


@dataclass(frozen=True)
class Package:
    """One installed or locked package."""

    version: str
    #: conda build string such as ``py311h1234_0``; None for Python distributions.
    build: str | None = None


@dataclass
class PackageSet:
    """Everything installed on one side: canonical name -> package.

    The interpreter is the package ``python``, with its full version
    (``3.11.7``, or ``3.13.0rc1`` for a pre-release).
    """

    label: str
    kind: Kind
    packages: dict[str, Package] = field(default_factory=dict)

    @property
    def python(self) -> str | None:
        return self.version("python")

    def version(self, name: str) -> str | None:
        package = self.packages.get(name)
        return package.version if package else None


@dataclass(frozen=True)
class PackageRecord:
    """A package as a lockfile, ``conda-meta`` or a pip ``*.dist-info`` folder names it."""

    name: str
    version: str
    build: str | None


def conda_package_set(label: str, records: Iterable[PackageRecord]) -> PackageSet:
    """Build a set from conda records, mapping conda names to PyPI names.

    When two records map to one name (the ``dask`` metapackage and
    ``dask-core``), the record named in :data:`compat.names.CONDA_TO_PYPI`
    wins: it is the one that installs the distribution. Otherwise the first
    record wins, so conda records go before pip ones.
    """
    packages: dict[str, Package] = {}
    for record in records:
        canonical = names.from_conda(record.name)
        explicit = names.normalize(record.name) in names.CONDA_TO_PYPI
        if canonical in packages and not explicit:
            continue
        packages[canonical] = Package(record.version, record.build)
    return PackageSet(label=label, kind="conda", packages=packages)
