"""The spec's exact pip pins: one wheel per pin and platform, chosen by its tags, locked
with its sha256, checked at build and installed into the staged prefix.

At `buildtool lock`, PyPI's simple API (PEP 691, JSON) lists the pinned release's files
with their sha256. The wheel is chosen by its tags, as pip chooses (`packaging.tags`: the
image's CPython, manylinux up to the base image's glibc, pure Python last), and recorded
in the lock as a `manager: pip` record: its URL on PyPI and its sha256.

At build, each locked wheel comes from the cache, where it is kept under its locked
sha256 (`<cache>/<sha256>/<file>`, checked again on every hit), or from its locked URL;
its tags must fit the image's platform and Python, and its sha256 must be the lock's, or
the build stops. pypa's `installer` unpacks it into the staged prefix with the
image's interpreter in its scripts. No byte code is compiled, so the files are the
wheel's own and the layer is the same on every build.

Not `pip download`: pip reports neither the URL nor the hash of the file it took, and a
cache shared by every platform let it (and a pick by file name) hand a linux-64 build an
aarch64 wheel. Here locking is one request to the simple API and building one download,
each with a timeout; the choice is made with `packaging`'s tags, which pip itself uses.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urljoin

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from buildtool.common import BuildToolError, DiskBudget
from buildtool.lock.lockfile import PYPI_FILES, PipLockedPackage
from compat.vocabulary import PLATFORMS

# manylinux wheels up to the base image's glibc (Debian bookworm: 2.36).
GLIBC_MINOR = 36
# The legacy manylinux names of some glibc versions (PEP 600).
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
PYPI_SIMPLE = "https://pypi.org/simple/"
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
# Seconds PyPI may stay silent (connecting or between bytes), and seconds one file may
# take in all: a stalled mirror fails the lock or the build instead of hanging it.
TIMEOUT = 60
DEADLINE = 1800

_Candidate = TypeVar("_Candidate", str, Path)


@dataclass(frozen=True)
class Wheel:
    """The wheel a pin takes on one platform: what a pip record holds."""

    name: str  # canonical (`tomli-w`)
    version: str
    filename: str
    url: str
    sha256: str


def parse_pin(pin: str) -> tuple[str, Version]:
    """`Tomli_W[extra]==1.2` -> (`tomli-w`, Version("1.2")); extras are not installed."""
    name, _, version = pin.partition("==")
    try:
        return canonicalize_name(name.split("[", 1)[0]), Version(version)
    except InvalidVersion:
        raise BuildToolError(f"pip pin {pin!r}: {version!r} is not a version") from None


def platform_tags(platform: str) -> list[str]:
    """The manylinux platform tags an image of `platform` runs, most specific first."""
    arch = PLATFORMS[platform].machine
    oldest = 17 if arch == "aarch64" else 5  # manylinux2014 was the first with aarch64
    tags = []
    for minor in range(GLIBC_MINOR, oldest - 1, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
    return tags


def supported_tags(platform: str, python: str) -> list[Tag]:
    """The wheel tags the image's CPython `python` (`3.11` or `3.11.7`) takes on
    `platform`, in pip's order of preference."""
    major, minor = (int(part) for part in python.split(".")[:2])
    interpreter = f"cp{major}{minor}"
    platforms = platform_tags(platform)
    return [
        *cpython_tags((major, minor), abis=[interpreter], platforms=platforms),
        *compatible_tags((major, minor), interpreter, platforms),
    ]


def choose_wheel(
    candidates: Iterable[_Candidate],
    name: str,
    version: str | Version,
    platform: str,
    python: str,
) -> _Candidate | None:
    """The candidate (a wheel file name or path) of `name` `version` that the image's
    Python takes on `platform`: the one whose best tag pip would prefer, the highest
    build number among equals; None when no candidate fits."""
    preference = {tag: rank for rank, tag in enumerate(supported_tags(platform, python))}
    wanted_name, wanted_version = canonicalize_name(name), Version(str(version))
    best: tuple[tuple[int, tuple, str], _Candidate] | None = None
    for candidate in candidates:
        filename = PurePosixPath(str(candidate)).name
        try:
            wheel_name, wheel_version, build, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if wheel_name != wanted_name or wheel_version != wanted_version:
            continue
        ranks = [preference[tag] for tag in tags if tag in preference]
        if not ranks:
            continue
        key = (-min(ranks), build, filename)
        if best is None or key > best[0]:
            best = (key, candidate)
    return best[1] if best else None


def _fail(url: str, exc: BaseException, timeout: float) -> BuildToolError:
    reason = getattr(exc, "reason", exc)
    if isinstance(exc, urllib.error.HTTPError):
        return BuildToolError(f"{url}: HTTP {exc.code} {exc.reason}")
    if isinstance(reason, TimeoutError):
        return BuildToolError(f"{url}: no answer within {timeout:g} s (timed out)")
    return BuildToolError(f"{url}: {reason}")


def _transfer(
    url: str,
    sink: Callable[[bytes], object],
    headers: dict[str, str],
    timeout: float,
    deadline: float,
) -> None:
    """GET `url` into `sink(chunk)`: silent for `timeout` s, or longer than `deadline` s
    in all, is one clear error."""
    ends = time.monotonic() + deadline
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "buildtool", **headers})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                sink(chunk)
                if time.monotonic() > ends:
                    raise BuildToolError(f"{url}: not fetched within {deadline:g} s (timed out)")
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        raise _fail(url, exc, timeout) from None


def find_wheel(pin: str, platform: str, python: str, timeout: float = TIMEOUT) -> Wheel:
    """The wheel on PyPI that `pin` (name==version) takes on `platform` with CPython
    `python` (the locked one, `3.11.7`), with its URL and sha256."""
    name, version = parse_pin(pin)
    index = f"{PYPI_SIMPLE}{name}/"
    body = bytearray()
    try:
        _transfer(index, body.extend, {"Accept": _SIMPLE_JSON}, timeout, DEADLINE)
    except BuildToolError as exc:
        raise BuildToolError(f"pip pin {pin}: {exc}") from None
    try:
        files = json.loads(body)["files"]
        wheels = {f["filename"]: f for f in files if str(f["filename"]).endswith(".whl")}
    except (ValueError, KeyError, TypeError):
        raise BuildToolError(f"{index}: not a PEP 691 project page") from None
    fitting = [filename for filename, entry in wheels.items() if _runs_on(entry, python)]
    chosen = choose_wheel(fitting, name, version, platform, python)
    if chosen is None:
        release = sorted(f for f in wheels if _of_release(f, name, version))
        shown = ", ".join(release[:6]) + (
            f" and {len(release) - 6} more" if len(release) > 6 else ""
        )
        raise BuildToolError(
            f"pip pin {pin}: PyPI has no wheel of it for {platform} and Python {python} "
            f"(it has: {shown or 'no wheel of that release'})"
        )
    entry = wheels[chosen]
    url = urljoin(index, str(entry.get("url", ""))).split("#", 1)[0]
    sha256 = str((entry.get("hashes") or {}).get("sha256", ""))
    if not url.startswith(PYPI_FILES) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise BuildToolError(f"{index}: {chosen} has no sha256 or is not under {PYPI_FILES}")
    return Wheel(name, str(version), chosen, url, sha256)


def _of_release(filename: str, name: str, version: Version) -> bool:
    try:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return wheel_name == name and wheel_version == version


def _runs_on(entry: dict, python: str) -> bool:
    """Whether a file's `requires-python` admits CPython `python`."""
    requires = entry.get("requires-python")
    if not requires:
        return True
    try:
        return SpecifierSet(str(requires)).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True  # pip ignores what it cannot parse too


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheels(
    wheels: list[PipLockedPackage],
    platform: str,
    python: str,
    cache: Path,
    timeout: float = TIMEOUT,
) -> list[Path]:
    """The locked `wheels`, from `cache/<sha256>/` or their locked URLs, each checked:
    its tags fit `platform` and CPython `python`, its sha256 is the lock's."""
    paths = []
    for wheel in wheels:
        what = f"{wheel.name} {wheel.version} ({platform})"
        if choose_wheel([wheel.filename], wheel.name, wheel.version, platform, python) is None:
            raise BuildToolError(
                f"{what}: the locked wheel {wheel.filename} does not fit {platform} and "
                f"Python {python}; run `buildtool lock`"
            )
        path = cache / wheel.hash.sha256 / wheel.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and file_sha256(path) == wheel.hash.sha256:
            paths.append(path)
            continue
        _download(wheel, platform, path, timeout)
        paths.append(path)
    return paths


def _download(wheel: PipLockedPackage, platform: str, path: Path, timeout: float) -> None:
    """`wheel` from its locked URL to `path`, only if its sha256 is the lock's."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as handle:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                handle.write(chunk)

            _transfer(wheel.url, sink, {}, timeout, DEADLINE)
        if digest.hexdigest() != wheel.hash.sha256:
            raise BuildToolError(
                f"{wheel.name} {wheel.version} ({platform}): sha256 mismatch: the lock says "
                f"{wheel.hash.sha256}, {wheel.url} served {digest.hexdigest()}"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def locked_wheels(
    lock_path: Path, locked: list[PipLockedPackage], pins: list[str], platform: str
) -> list[PipLockedPackage]:
    """The lock's record of each of `pins` on `platform`, or one error naming the pin."""
    by_release: dict[tuple[str, Version], PipLockedPackage] = {
        (canonicalize_name(p.name), Version(p.version)): p for p in locked
    }
    chosen = []
    for pin in pins:
        record = by_release.get(parse_pin(pin))
        if record is None:
            raise BuildToolError(
                f"{lock_path}: the pip pin {pin} is not locked for {platform}; run `buildtool lock`"
            )
        chosen.append(record)
    return chosen


def _check_expanded(wheels: list[Path], budget: DiskBudget) -> None:
    """Refuse wheels that would write more than `budget`: what each member expands to is
    in the zip's central directory, and `zipfile` reads no member past its stated size
    (nor one whose CRC disagrees), so the stated sizes bound what the install writes."""
    size = files = 0
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
        except (OSError, zipfile.BadZipFile) as exc:
            raise BuildToolError(f"{wheel.name}: not a readable wheel ({exc})") from None
        size += sum(m.file_size for m in members)
        files += len(members)
        problem = budget.over(size, files, f"the pip pins, with {wheel.name},")
        if problem:
            raise BuildToolError(problem)


def install_wheels(
    wheels: list[Path], stage: Path, prefix: str, python: str, budget: DiskBudget | None = None
) -> list[str]:
    """Unpack `wheels` into `stage` (within `budget`, when given); the paths written,
    relative to it."""
    if budget is not None:
        _check_expanded(wheels, budget)
    site = f"lib/python{python}/site-packages"
    scheme = {
        "purelib": str(stage / site),
        "platlib": str(stage / site),
        "headers": str(stage / "include"),
        "scripts": str(stage / "bin"),
        "data": str(stage),
    }
    written: list[str] = []
    for wheel in wheels:
        destination = SchemeDictionaryDestination(
            scheme,
            interpreter=f"{prefix}/bin/python",
            script_kind="posix",
            bytecode_optimization_levels=(),
        )
        with WheelFile.open(wheel) as source:
            install(source, destination, additional_metadata={"INSTALLER": b"buildtool\n"})
            dist_info = f"{source.distribution}-{source.version}.dist-info"
        record = stage / site / dist_info / "RECORD"
        for line in record.read_text().splitlines():
            path = line.rsplit(",", 2)[0]
            if path:
                written.append(str((stage / site / path).resolve().relative_to(stage.resolve())))
    return sorted(set(written))
