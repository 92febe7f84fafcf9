"""Static package sets: a conda-lock lockfile, a built image, a conda prefix,
or the current Python environment.

A source is named on the command line as

* ``lock:PATH#notebook`` or ``lock:PATH#worker``, optionally ``@PLATFORM``
  (default ``linux-64``): the image's packages in a conda-lock v1 lockfile. A pair's
  platform may be named either way (``linux-aarch64`` or ``linux/arm64``); any other
  is a platform of the lockfile's, as conda names it (``osx-arm64``).
  The worker image is the ``main`` category; the notebook image adds the
  ``notebook`` category.
* ``image:REF``: the environment ``/srv/conda/envs/notebook`` of a built
  image, read with the docker CLI: its ``conda-meta`` records plus the
  packages pip installed there (``*.dist-info`` not installed by conda).
* ``prefix:PATH``: the same for a conda environment on disk.
* ``env``: the Python distributions of the running interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from compat import names, probe, vocabulary
from compat.model import CheckError, Package, PackageRecord, PackageSet, conda_package_set
from compat.vocabulary import PREFIX, ROLES, platform_named

DEFAULT_PLATFORM = "linux-64"
#: Time limit, in seconds, of the `docker run` that lists an image's packages: a
#: container that cats a few hundred small files; past five minutes the engine hangs.
#: `subprocess.run` kills the docker client then (it starts no children of its own).
DOCKER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LockSelection:
    """Which part of a lockfile to read."""

    path: Path
    image: str
    platform: str = DEFAULT_PLATFORM


def from_snapshot(label: str, snapshot: dict[str, str]) -> PackageSet:
    """A set from :func:`compat.probe.snapshot` output; the first spelling wins."""
    packages: dict[str, Package] = {}
    for name, version in snapshot.items():
        packages.setdefault(names.normalize(name), Package(version))
    return PackageSet(label=label, kind="python", packages=packages)


def from_environment(label: str = "env") -> PackageSet:
    """The running interpreter's distributions."""
    return from_snapshot(label, probe.snapshot())


def record_from_url(url: str) -> tuple[str, str, str] | None:
    """``(name, version, build)`` from a conda package URL, None if not one."""
    filename = url.rsplit("/", 1)[-1]
    for extension in (".conda", ".tar.bz2"):
        if filename.endswith(extension):
            stem = filename.removesuffix(extension)
            parts = stem.rsplit("-", 2)
            if len(parts) == 3:
                return parts[0], parts[1], parts[2]
    return None


def _load_lockfile(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError as error:
        raise CheckError(f"cannot read lockfile {path}: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CheckError(f"lockfile {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict) or data.get("version") != 1:
        raise CheckError(f"lockfile {path} is not in conda-lock v1 format (version: 1)")
    entries = data.get("package")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CheckError(f"lockfile {path} has no 'package' list")
    return entries


def _lock_record(path: Path, entry: dict) -> PackageRecord:
    try:
        name, version = str(entry["name"]), str(entry["version"])
    except KeyError as error:
        raise CheckError(f"lockfile {path}: a package entry has no {error.args[0]!r}") from None
    build = None
    if entry.get("manager", "conda") == "conda":
        parsed = record_from_url(str(entry.get("url", "")))
        build = parsed[2] if parsed else None
    return PackageRecord(name=name, version=version, build=build)


def from_lockfile(selection: LockSelection) -> PackageSet:
    """One image's packages for one platform from a conda-lock v1 lockfile."""
    path = selection.path
    categories = vocabulary.categories(selection.image) if selection.image in ROLES else None
    if categories is None:
        known = ", ".join(ROLES)
        raise CheckError(f"unknown image {selection.image!r} for {path}: use one of {known}")
    entries = _load_lockfile(path)
    platforms = {str(entry.get("platform")) for entry in entries}
    if selection.platform not in platforms:
        raise CheckError(
            f"lockfile {path} has no packages for platform {selection.platform!r} "
            f"(it has: {', '.join(sorted(platforms))})"
        )
    records = [
        _lock_record(path, entry)
        for entry in entries
        if entry.get("platform") == selection.platform
        and entry.get("category", "main") in categories
    ]
    return conda_package_set(f"{selection.image}", records)


def parse_conda_meta(text: str, origin: str) -> list[PackageRecord]:
    """Records from the concatenated contents of ``conda-meta/*.json`` files."""
    decoder = json.JSONDecoder()
    records: list[PackageRecord] = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            data, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise CheckError(f"{origin}: unreadable conda-meta record: {error}") from error
        if not isinstance(data, dict) or "name" not in data or "version" not in data:
            raise CheckError(f"{origin}: a conda-meta record has no name or version")
        records.append(PackageRecord(str(data["name"]), str(data["version"]), data.get("build")))
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    if not records:
        raise CheckError(f"{origin}: no conda-meta records found")
    return records


def pip_records(dist_info_folders: Iterable[str]) -> list[PackageRecord]:
    """Records from folder names such as ``dask_labextension-7.0.0.dist-info``."""
    records = []
    for folder in dist_info_folders:
        name, sep, version = folder.removesuffix(".dist-info").partition("-")
        if sep:
            records.append(PackageRecord(name, version, None))
    return records


def _installed_by_pip(dist_info: Path) -> bool:
    installer = dist_info / "INSTALLER"
    return not (installer.exists() and installer.read_text().strip() == "conda")


def from_prefix(prefix: Path) -> PackageSet:
    """A conda environment on disk: ``conda-meta`` plus what pip installed there."""
    meta = prefix / "conda-meta"
    files = sorted(meta.glob("*.json"))
    if not files:
        raise CheckError(f"{meta} has no conda-meta records")
    text = "\n".join(file.read_text() for file in files)
    dist_infos = sorted(prefix.glob("lib/python3*/site-packages/*.dist-info"))
    pip = pip_records(d.name for d in dist_infos if _installed_by_pip(d))
    return conda_package_set(str(prefix), [*parse_conda_meta(text, str(meta)), *pip])


#: Run in an image by ``sh -c SCRIPT PREFIX``: the prefix's conda-meta records,
#: then a marker line, then the dist-info folders that conda did not install.
LIST_PREFIX_SCRIPT = """\
set -e
cat "$0"/conda-meta/*.json
echo
echo '#dist-info'
for d in "$0"/lib/python3*/site-packages/*.dist-info; do
  if [ -d "$d" ] && [ "$(cat "$d/INSTALLER" 2>/dev/null)" != conda ]; then echo "${d##*/}"; fi
done
"""
DIST_INFO_MARKER = "\n#dist-info\n"


def from_image(reference: str, prefix: str = PREFIX) -> PackageSet:
    """A built image's environment, listed by a throwaway container."""
    docker = shutil.which("docker")
    if docker is None:
        raise CheckError("the docker CLI is not installed; it is needed to read image sources")
    command = [
        docker,
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        reference,
        "-c",
        LIST_PREFIX_SCRIPT,
        prefix,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise CheckError(
            f"cannot read image {reference}: docker run did not finish within "
            f"{DOCKER_TIMEOUT_S:g} s; it was stopped"
        ) from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CheckError(f"cannot read image {reference}: {detail[0]}")
    conda_meta, _, dist_infos = result.stdout.partition(DIST_INFO_MARKER)
    records = parse_conda_meta(conda_meta, f"image {reference}:{prefix}")
    pip = pip_records(dist_infos.split())
    return conda_package_set(reference, [*records, *pip])


def parse_lock_spec(spec: str) -> LockSelection:
    """``PATH#IMAGE[@PLATFORM]`` -> :class:`LockSelection`."""
    path, sep, rest = spec.rpartition("#")
    if not sep or not path:
        raise CheckError(f"lock source {spec!r} must look like PATH#notebook or PATH#worker")
    image, _, platform = rest.partition("@")
    named = platform_named(platform)
    return LockSelection(Path(path), image, named.subdir if named else platform or DEFAULT_PLATFORM)


def load(spec: str) -> PackageSet:
    """Load a source named as in this module's docstring."""
    kind, sep, value = spec.partition(":")
    if spec == "env":
        return from_environment()
    if sep and kind == "lock":
        return from_lockfile(parse_lock_spec(value))
    if sep and kind == "image" and value:
        return from_image(value)
    if sep and kind == "prefix" and value:
        return from_prefix(Path(value))
    raise CheckError(f"unknown source {spec!r}: use lock:PATH#IMAGE, image:REF, prefix:PATH or env")
