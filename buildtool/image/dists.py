"""The Python distributions inside conda packages: what a laptop's pip installs to match.

A conda package that installs a Python distribution carries that distribution's metadata
(`site-packages/<name>-<version>.dist-info/METADATA`, or an `.egg-info`), whose `Name` and
`Version` are the distribution's own, as PyPI knows it: `msgpack-python` holds `msgpack`,
`pytorch` holds `torch`, `root` holds whatever its build installed. That is the one map
from conda packages to PyPI names that needs no table kept by hand: each package's own
word. A package that holds none (a C library, a compiler's runtime, Python itself) has no
distribution a laptop could pip install.

They are read from the package cache's entries (`pkgcache.py`: each checked against the
lock's sha256 before it is used), and a package not cached yet is fetched into the cache
first, as a build fetches it.
"""

from __future__ import annotations

import email.parser
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from buildtool.common import BuildToolError
from buildtool.image import pkgcache
from buildtool.image.assemble import install_locked, locked_records
from buildtool.lock import LockedPackage, full_pins, full_requirements_text, read_lock

# A distribution's metadata, where a conda package installs it (any site-packages).
_METADATA = re.compile(r"(?:^|/)site-packages/[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO)\Z")


@dataclass(frozen=True)
class Distribution:
    """A Python distribution as its own metadata names it."""

    name: str
    version: str


def _read(metadata: Path) -> Distribution:
    message = email.parser.HeaderParser().parsestr(metadata.read_text(errors="replace"))
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise BuildToolError(f"{metadata}: no Name or Version in the distribution's metadata")
    return Distribution(name.strip(), version.strip())


def _in_entry(folder: Path) -> list[Distribution]:
    """The distributions an extracted package installs (its `info/paths.json`)."""
    try:
        paths = json.loads((folder / "info" / "paths.json").read_text())["paths"]
    except (OSError, ValueError, KeyError) as exc:
        raise BuildToolError(f"{folder}: unreadable info/paths.json ({exc})") from None
    found = [_read(folder / p["_path"]) for p in paths if _METADATA.search(p["_path"])]
    return sorted(set(found), key=lambda d: d.name.lower())


def distributions(
    lock_path: Path, platform: str, packages: list[LockedPackage], cache: Path
) -> dict[str, list[Distribution]]:
    """Each of `packages` (by name) and the Python distributions it installs; those the
    cache lacks are fetched into it first (checked against the lock's sha256)."""
    records = locked_records(lock_path, platform, packages)
    facts = {record.name.normalized: pkgcache.Facts.of(record) for record in records}
    missing = [p for p in packages if pkgcache.entry_problem(cache, facts[p.name]) is not None]
    if missing:
        with tempfile.TemporaryDirectory(prefix="dists-") as stage:
            install_locked(lock_path, platform, missing, Path(stage) / "prefix", cache)
    found: dict[str, list[Distribution]] = {}
    for name, fact in facts.items():
        problem = pkgcache.entry_problem(cache, fact)
        if problem is not None:
            raise BuildToolError(f"{fact}: not in the package cache after fetching ({problem})")
        found[name] = _in_entry(cache / fact.sha256 / fact.dist)
    return found


def full_client_text(name: str, lock_path: Path, cache: Path) -> str:
    """`client-requirements-full.txt` of environment `name`: every distribution its
    worker set installs (`buildtool.lock.laptop`), read from the packages themselves."""
    lock = read_lock(lock_path)
    platform = lock.metadata.platforms[0]
    found = distributions(lock_path, platform, lock.packages("worker", platform), cache)
    installs = {package: [(d.name, d.version) for d in dists] for package, dists in found.items()}
    return full_requirements_text(full_pins(name, lock, lock_path, installs))
