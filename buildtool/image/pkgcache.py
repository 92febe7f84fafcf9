"""The package cache: each conda package extracted once, under the sha256 its lock names.

py-rattler keeps one extracted folder per `name-version-build`, with a `.lock` file beside
it that holds a revision and the sha256 of the archive it came from. That key is not
enough here:

- two records can share it with different contents: the same build string on two
  platforms (the stand-in's numpy `py311_0` on linux-64 and linux-aarch64; on conda-forge
  the hash is of the variant config, which nothing keeps apart across subdirs), or two
  channels publishing the same `name-version-build`, one of them rebuilt;
- so builds of the two take turns extracting over one folder, and a build killed while
  it extracts leaves the `.lock` naming the new archive over the old archive's files:
  every later build then trusts a folder that holds another platform's binaries.

So the cache here is keyed by what the lock names, the archive's sha256:

    <cache>/<sha256>/<dist>/        the extracted package (rattler's own layout)
    <cache>/<sha256>/<dist>.lock    rattler's bookkeeping for it
    <cache>/<sha256>/VERIFIED       written last: the sha256, subdir, name, version, build

An entry is made in a folder of its own and renamed into place whole, only after
py-rattler fetched the archive, checked it against the lock's sha256 and extracted it,
and its `info/index.json` names the record's subdir, name, version and build. A killed
build leaves at most a folder no build reads. Every hit is checked again (the `VERIFIED`
facts and `info/index.json` against the record); an entry that fails is moved aside and
fetched again, so a folder planted under a record's name is never linked.

Each install gets a view of its own (`view`): a fresh folder where every package the
cache holds is a symbolic link to its entry, and py-rattler's cache is that folder, so
it links what it finds and fetches the rest (into the view, checking each archive's
sha256). The fetched packages then become entries. Builds running at once each have
their own view; they share only entries, which nothing writes once they exist.

Own code rather than py-rattler's `PackageCache` options: its layers and its
`with_cached_origin` key by URL, which keeps platforms and channels apart but not two
archives behind one URL, nor a killed extraction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from buildtool.common import BuildToolError

logger = logging.getLogger(__name__)

MARKER = "VERIFIED"
VIEWS = ".views"
_HELD = ".held"


@dataclass(frozen=True)
class Facts:
    """What an entry must be: the lock record's archive sha256 and identity."""

    sha256: str
    subdir: str
    name: str
    version: str
    build: str

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    def __str__(self) -> str:
        return f"{self.subdir} {self.name} {self.version} {self.build}"

    @classmethod
    def of(cls, record: Any) -> Facts:
        """The facts of a py-rattler `RepoDataRecord`."""
        if record.sha256 is None:
            raise BuildToolError(f"{record.url}: the lock gives no sha256 to check it by")
        return cls(
            record.sha256.hex(),
            record.subdir,
            record.name.normalized,
            str(record.version),
            str(record.build),
        )


def _index_facts(folder: Path, sha256: str) -> Facts | None:
    try:
        index = json.loads((folder / "info" / "index.json").read_text())
        return Facts(sha256, index["subdir"], index["name"], index["version"], index["build"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def entry_problem(cache: Path, facts: Facts) -> str | None:
    """Why the entry of `facts` cannot be linked (None: it can); missing says so."""
    entry = cache / facts.sha256
    if not entry.exists():
        return "missing"
    try:
        marked = Facts(**json.loads((entry / MARKER).read_text()))
    except (OSError, ValueError, TypeError):
        return f"{entry} has no {MARKER} record"
    if marked != facts:
        return f"{entry} was made for the {marked}, the lock names the {facts}"
    found = _index_facts(entry / facts.dist, facts.sha256)
    if found != facts:
        return f"{entry / facts.dist}/info/index.json names the {found}, the lock the {facts}"
    if not (entry / f"{facts.dist}.lock").is_file():
        return f"{entry} has no {facts.dist}.lock"
    return None


def _discard(path: Path) -> None:
    """Move `path` aside (one rename, so no reader sees half of it) and remove it."""
    aside = path.with_name(f".discarded-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _sweep(views: Path) -> None:
    """Remove the views of installs that ended without removing theirs (killed)."""
    for view in views.iterdir() if views.is_dir() else ():
        with contextlib.suppress(OSError), open(view / _HELD, "a") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # an install under way holds it
            shutil.rmtree(view, ignore_errors=True)


@dataclass
class View:
    """One install's cache folder: links to the entries it may use, and what it fetched."""

    cache: Path
    path: Path
    facts: dict[str, Facts]  # dist -> facts, every record of the install

    def publish(self) -> int:
        """Make an entry of every package fetched into the view. Returns how many."""
        made = 0
        for dist, facts in self.facts.items():
            folder = self.path / dist
            if folder.is_symlink() or not folder.is_dir():
                continue
            found = _index_facts(folder, facts.sha256)
            if found != facts:
                held = f"the {found}" if found else "no readable info/index.json"
                raise BuildToolError(
                    f"{facts.name} {facts.version} {facts.build}: the archive with sha256 "
                    f"{facts.sha256} holds {held}, not the {facts.subdir} one the lock names"
                )
            staging = Path(tempfile.mkdtemp(prefix=f".{facts.sha256}-", dir=self.cache))
            os.rename(folder, staging / dist)
            shutil.copy2(self.path / f"{dist}.lock", staging / f"{dist}.lock")
            (staging / MARKER).write_text(json.dumps(asdict(facts), sort_keys=True))
            try:
                os.rename(staging, self.cache / facts.sha256)
                made += 1
            except OSError:  # another install made it meanwhile: the same bytes
                shutil.rmtree(staging, ignore_errors=True)
        return made


@contextlib.contextmanager
def view(cache: Path, wanted: Sequence[Facts], name: str | None = None) -> Iterator[View]:
    """A view of `cache` for an install of the `wanted` packages: every entry that passes
    its check linked in, the rest left for py-rattler to fetch. `name` names its folder
    (under `VIEWS`), for a caller that watches what is written there."""
    cache.mkdir(parents=True, exist_ok=True)
    views = cache / VIEWS
    views.mkdir(exist_ok=True)
    _sweep(views)
    if name is None:
        path = Path(tempfile.mkdtemp(dir=views))
    else:
        path = views / name
        path.mkdir()
    with open(path / _HELD, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            facts = {}
            for one in wanted:
                facts[one.dist] = one
                problem = entry_problem(cache, one)
                if problem is None:
                    entry = cache / one.sha256
                    os.utime(entry / MARKER)  # used now: `prune` keeps the recent ones
                    (path / one.dist).symlink_to(entry / one.dist)
                    shutil.copy2(entry / f"{one.dist}.lock", path / f"{one.dist}.lock")
                elif problem != "missing":
                    logger.warning("fetching %s again: %s", one.dist, problem)
                    _discard(cache / one.sha256)
            yield View(cache, path, facts)
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _size(folder: Path) -> int:
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def prune(cache: Path, keep_bytes: int) -> int:
    """Remove the entries used longest ago until the cache holds at most `keep_bytes`
    (an entry an install links now is as good as new: its marker's time is its use).
    How many bytes were freed."""
    entries = []
    for entry in cache.iterdir() if cache.is_dir() else ():
        marker = entry / MARKER
        if entry.name.startswith(".") or not marker.exists():
            continue
        entries.append((marker.stat().st_mtime, entry, _size(entry)))
    total = sum(size for _, _, size in entries)
    freed = 0
    for _, entry, size in sorted(entries, key=lambda item: item[0]):
        if total - freed <= keep_bytes:
            break
        _discard(entry)
        freed += size
    return freed
