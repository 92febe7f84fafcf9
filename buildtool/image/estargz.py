"""eStargz layers, written here byte for byte: a gzip layer that a lazy-pulling node
mounts before it has fetched it, and that every other runtime pulls as any gzip layer.

From the specification (stargz-snapshotter's `docs/estargz.md`):

- the blob is a series of gzip members, which together are one valid gzip stream of one
  valid tar archive; a member starts at the top of the blob, at the payload of every
  non-empty regular file (and at every chunk of a large one: CHUNK_SIZE), at the TOC's
  tar header and at the footer. Tar headers ride in the member before them;
- the TOC, `stargz.index.json`, is the archive's last member: every entry's name, type,
  mode, owner, time, link, size, the offset of its payload's member in the blob, and the
  sha256 of every file and of every chunk;
- the footer is an empty gzip member of 51 bytes whose extra field holds the TOC's
  offset (`%016xSTARGZ`);
- a landmark file says which files come first, to be fetched before a container starts:
  `.prefetch.landmark` after them, or `.no.prefetch.landmark` first when there are none.
  Both hold one byte, 0xf;
- the layer's descriptor carries the TOC's digest
  (`containerd.io/snapshot/stargz/toc.digest`) and the archive's uncompressed size
  (`io.containers.estargz.uncompressed-size`).

The archive's uncompressed bytes (what the layer's diff_id hashes, and what `docker load`
reads here) are written beside the blob in the same pass: both follow from the entries
and the compression level alone (zlib's deflate with no name and no time in any header),
so two builds of the same entries give the same blob and the same diff_id.

Own code, as the other layer writers here (`oci.py`): the only writers of eStargz are Go
(the snapshotter's `estargz` package, `ctr-remote`, BuildKit), which convert a finished
layer; this tool writes its layers itself, and orders their files as it goes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from buildtool.common import BuildToolError

TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENT = b"\x0f"
#: The largest piece of a file in one gzip member (the snapshotter's default).
CHUNK_SIZE = 4 << 20
TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"

_COPY = 1 << 20
# A gzip member's header: no name, no time; XFL says how hard deflate worked (RFC 1952).
_OS_UNKNOWN = 255


def _xfl(level: int) -> int:
    return 2 if level >= 9 else 4 if level == 1 else 0


def footer(toc_offset: int) -> bytes:
    """The 51-byte footer: an empty gzip member whose extra field holds the TOC's offset."""
    extra = b"SG" + struct.pack("<H", 22) + f"{toc_offset:016x}STARGZ".encode()
    header = b"\x1f\x8b\x08\x04" + struct.pack("<I", 0) + bytes([0, _OS_UNKNOWN])
    empty_block = b"\x01\x00\x00\xff\xff"  # a final stored block of no bytes
    return header + struct.pack("<H", len(extra)) + extra + empty_block + struct.pack("<II", 0, 0)


class _Hashing:
    """Counts and hashes what is written through to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.target.write(data)
        self.sha.update(data)
        self.size += len(data)


@dataclass(frozen=True)
class Written:
    """What a finished eStargz layer is: its blob's digest and size, its archive's
    (the diff_id), and the TOC's digest."""

    digest: str
    size: int
    diff_id: str
    uncompressed_size: int
    toc_digest: str

    @property
    def annotations(self) -> dict[str, str]:
        return {
            TOC_DIGEST_ANNOTATION: self.toc_digest,
            UNCOMPRESSED_SIZE_ANNOTATION: str(self.uncompressed_size),
        }


class EStargzWriter:
    """Writes one eStargz layer: the blob to `blob` and its uncompressed archive to
    `archive`, entry by entry, in the order they are added."""

    def __init__(self, blob: BinaryIO, archive: BinaryIO, level: int) -> None:
        self.blob = _Hashing(blob)
        self.archive = _Hashing(archive)
        self.level = level
        self.entries: list[dict[str, Any]] = []
        self._deflate: Any = None  # the open member's compressor
        self._crc = 0
        self._length = 0
        self._buffer = bytearray(_COPY)

    # -- gzip members ------------------------------------------------------------------
    def _open(self) -> None:
        header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([_xfl(self.level), 255])
        self.blob.write(header)
        self._deflate = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc, self._length = 0, 0

    def _close(self) -> None:
        if self._deflate is None:
            return
        self.blob.write(self._deflate.flush(zlib.Z_FINISH))
        self.blob.write(struct.pack("<II", self._crc, self._length & 0xFFFFFFFF))
        self._deflate = None

    def _emit(self, data: bytes | memoryview) -> None:
        """Uncompressed bytes of the archive: into the open member, and beside it."""
        if self._deflate is None:
            self._open()
        self.archive.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._length += len(data)
        self.blob.write(self._deflate.compress(data))

    # -- entries -----------------------------------------------------------------------
    def add(self, info: tarfile.TarInfo, content: IO[bytes] | bytes | None = None) -> None:
        """One tar member; a regular file's bytes from `content` (exactly `info.size`)."""
        if info.name.rstrip("/") == TOC_NAME:
            raise BuildToolError(f"{TOC_NAME}: a layer may not hold a file of that name")
        entry = _toc_entry(info)
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self.entries.append(entry)
        if not info.isreg() or info.size == 0:
            return
        source = _reader(content, info)
        whole = hashlib.sha256()
        written = 0
        for index, chunk in enumerate(_chunks(info.size)):
            self._close()  # every chunk's payload starts a member
            piece: dict[str, Any] = entry if index == 0 else {"name": info.name, "type": "chunk"}
            piece["offset"] = self.blob.size
            if index:
                piece["chunkOffset"] = written
            if written + chunk < info.size:
                piece["chunkSize"] = chunk  # the last chunk (or a whole file) says 0
            part = hashlib.sha256()
            self._copy(source, chunk, info.name, part, whole)
            piece["chunkDigest"] = f"sha256:{part.hexdigest()}"
            if index:
                self.entries.append(piece)
            written += chunk
        entry["digest"] = f"sha256:{whole.hexdigest()}"
        remainder = info.size % tarfile.BLOCKSIZE
        if remainder:
            self._emit(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def _copy(self, source: IO[bytes], size: int, name: str, *digests: Any) -> None:
        view = memoryview(self._buffer)
        while size:
            got = source.readinto(view[: min(size, len(view))])  # type: ignore[attr-defined]
            if not got:
                raise BuildToolError(f"{name}: shorter than its size")
            for digest in digests:
                digest.update(view[:got])
            self._emit(view[:got])
            size -= got

    def close(self) -> Written:
        """The TOC and the archive's end in a member of their own, then the footer."""
        self._close()
        toc_offset = self.blob.size
        toc = json.dumps({"version": 1, "entries": self.entries}, indent="\t").encode()
        info = tarfile.TarInfo(TOC_NAME)
        info.size, info.mode = len(toc), 0o644
        info.uname = info.gname = ""
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self._emit(toc)
        self._emit(tarfile.NUL * (-len(toc) % tarfile.BLOCKSIZE))
        self._emit(tarfile.NUL * (tarfile.BLOCKSIZE * 2))  # the archive's end
        self._close()
        self.blob.write(footer(toc_offset))
        return Written(
            digest=f"sha256:{self.blob.sha.hexdigest()}",
            size=self.blob.size,
            diff_id=f"sha256:{self.archive.sha.hexdigest()}",
            uncompressed_size=self.archive.size,
            toc_digest=f"sha256:{hashlib.sha256(toc).hexdigest()}",
        )


def landmark(name: str) -> tarfile.TarInfo:
    """A landmark's tar header (its one byte is LANDMARK_CONTENT)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(LANDMARK_CONTENT), 0o644
    info.uname = info.gname = ""
    return info


def _chunks(size: int) -> Iterator[int]:
    while size > 0:
        yield min(size, CHUNK_SIZE)
        size -= CHUNK_SIZE


def _reader(content: IO[bytes] | bytes | None, info: tarfile.TarInfo) -> IO[bytes]:
    if isinstance(content, bytes):
        return io.BytesIO(content)
    if content is None:
        raise BuildToolError(f"{info.name}: a file of {info.size} bytes with no content")
    return content


_TYPES = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _toc_entry(info: tarfile.TarInfo) -> dict[str, Any]:
    """A TOCEntry, with the fields the snapshotter reads (empty ones left out, as its own
    writer leaves them out)."""
    kind = _TYPES.get(info.type)
    if kind is None:
        raise BuildToolError(f"{info.name}: tar type {info.type!r} has no eStargz entry")
    entry: dict[str, Any] = {"name": info.name, "type": kind}
    if kind == "reg" and info.size:
        entry["size"] = info.size
    if info.mtime:
        entry["modtime"] = _rfc3339(int(info.mtime))
    if kind in ("symlink", "hardlink"):
        entry["linkName"] = info.linkname
    entry["mode"] = info.mode
    if info.uid:
        entry["uid"] = info.uid
    if info.gid:
        entry["gid"] = info.gid
    if kind in ("char", "block"):
        entry["devMajor"], entry["devMinor"] = info.devmajor, info.devminor
    xattrs = {
        key.removeprefix("SCHILY.xattr."): value
        for key, value in info.pax_headers.items()
        if key.startswith("SCHILY.xattr.")
    }
    if xattrs:  # JSON bytes, as Go's encoding/json writes []byte: base64
        entry["xattrs"] = {
            k: base64.b64encode(v.encode("utf-8", "surrogateescape")).decode()
            for k, v in sorted(xattrs.items())
        }
    return entry


def _rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
