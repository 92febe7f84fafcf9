"""Write a conda package (.conda, format v2) from a staged prefix tree.

The package holds the tree plus info/index.json, info/paths.json (sha256, size, and a
text-mode prefix placeholder for the files that need one) and info/files: an
uncompressed zip of metadata.json, info-<stem>.tar.zst and pkg-<stem>.tar.zst. It is
deterministic (sorted entries, fixed mtimes and owners, normalised modes, single-threaded
zstd), so the same inputs give the same sha256 on any machine. zstandard comes with
conda-lock, a dependency of the project.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from compat.vocabulary import PLATFORMS

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
# 2020-01-01T00:00:00Z, for every entry's mtime and every package's timestamp.
EPOCH = 1577836800
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
ZSTD_LEVEL = 12


@dataclass(frozen=True)
class PackageMeta:
    name: str
    version: str
    build: str
    depends: tuple[str, ...] = ()
    subdir: str = "linux-64"
    build_number: int = 0
    license: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.stem}.conda"

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    def index_json(self) -> dict[str, object]:
        index: dict[str, object] = {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "depends": list(self.depends),
            "subdir": self.subdir,
            "timestamp": EPOCH * 1000,
        }
        if self.subdir == "noarch":
            index["noarch"] = "generic"
        else:
            index["arch"] = PLATFORMS[self.subdir].machine
            index["platform"] = "linux"
        if self.license:
            index["license"] = self.license
        return index


@dataclass
class _Entry:
    path: str
    source: Path
    record: dict[str, object]


def write_package(
    meta: PackageMeta,
    root: Path | None,
    channel: Path,
    text_placeholders: Collection[str] = (),
) -> Path:
    """Pack the tree under root (None for a metapackage) into channel/<subdir>/<filename>.

    text_placeholders: relative paths whose content holds PLACEHOLDER, to be replaced
    by the install prefix (file_mode "text").
    """
    entries = _collect(root, set(text_placeholders)) if root else []
    info = {
        "info/index.json": _json(meta.index_json()),
        "info/paths.json": _json({"paths": [e.record for e in entries], "paths_version": 1}),
        "info/files": "".join(f"{e.path}\n" for e in entries).encode(),
    }
    target = channel / meta.subdir / meta.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as package:
        _zip_member(package, "metadata.json", _json({"conda_pkg_format_version": 2}))
        with _zip_open(package, f"info-{meta.stem}.tar.zst") as member:
            _write_tar_zst(member, info, [])
        with _zip_open(package, f"pkg-{meta.stem}.tar.zst") as member:
            _write_tar_zst(member, {}, entries)
    partial.rename(target)
    return target


def _zip_member(package: zipfile.ZipFile, name: str, data: bytes) -> None:
    with _zip_open(package, name) as member:
        member.write(data)


def _zip_open(package: zipfile.ZipFile, name: str) -> BinaryIO:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.external_attr = 0o644 << 16
    return package.open(info, "w")  # type: ignore[return-value]


def _write_tar_zst(out: BinaryIO, files: dict[str, bytes], entries: list[_Entry]) -> None:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    with (
        compressor.stream_writer(out, closefd=False) as stream,
        tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in sorted(files.items()):
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        for entry in entries:
            _add(tar, entry)


def _collect(root: Path, placeholders: set[str]) -> list[_Entry]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            source = Path(dirpath) / name
            if source.is_dir() and not source.is_symlink():
                continue
            path = source.relative_to(root).as_posix()
            entries.append(_Entry(path, source, _record(path, source, path in placeholders)))
    missing = placeholders - {e.path for e in entries}
    if missing:
        raise ValueError(f"placeholder files not in the tree: {sorted(missing)}")
    return sorted(entries, key=lambda e: e.path)


def _record(path: str, source: Path, has_placeholder: bool) -> dict[str, object]:
    if source.is_symlink():
        return {"_path": path, "path_type": "softlink"}
    data = source.read_bytes()
    record: dict[str, object] = {
        "_path": path,
        "path_type": "hardlink",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_in_bytes": len(data),
    }
    if has_placeholder:
        if PLACEHOLDER.encode() not in data:
            raise ValueError(f"{path} is marked for a prefix placeholder but holds none")
        record["file_mode"] = "text"
        record["prefix_placeholder"] = PLACEHOLDER
    return record


def _add(tar: tarfile.TarFile, entry: _Entry) -> None:
    if entry.source.is_symlink():
        info = _tarinfo(entry.path, tarfile.SYMTYPE, 0o777, 0)
        info.linkname = os.readlink(entry.source)
        tar.addfile(info)
        return
    mode = 0o755 if entry.source.stat().st_mode & 0o111 else 0o644
    size = entry.source.stat().st_size
    with entry.source.open("rb") as data:
        tar.addfile(_tarinfo(entry.path, tarfile.REGTYPE, mode, size), data)


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
