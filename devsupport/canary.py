"""Look for secrets where they must never be: files, captured output, registry blobs.

A test plants known secrets (canaries) where a user puts real ones, runs the tool, then
asks this module where the canaries ended up. A secret can leak in its own spelling or
base64-encoded (an `Authorization: Basic` header, a docker config's `auth`), and base64
of a secret written inside a longer base64 text depends on where it starts modulo 3: each
of the three alignments is looked for, without the characters that also depend on the
neighbouring bytes (as secret scanners look for base64-embedded strings).

Image layers are gzip'd tars and some are tens of MB: they are decompressed as a stream
and scanned chunk by chunk, with an overlap so that a canary split across two chunks is
still found.

Hand-written because scanners such as trufflehog or detect-secrets look for the shapes of
known kinds of secret (AWS keys, private keys), not for one given value in its encodings;
what is here is the standard library (base64, gzip) plus zstandard and the project's own
registry client.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from buildtool.publish import Registry

CHUNK = 1024 * 1024
PAGE = 100  # catalog entries asked for at once
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Readable(Protocol):
    """A file, or a decompressing reader over one."""

    def read(self, size: int = -1, /) -> bytes: ...


def base64_spellings(secret: bytes) -> set[bytes]:
    """The base64 (standard and URL-safe) of `secret` as it appears wherever it starts in
    an encoded text: for each of the 3 offsets, the characters that `secret` alone fixes."""
    spellings = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        first = -(-8 * shift // 6)  # the first character made of `secret`'s bits only
        end = 8 * (shift + len(secret)) // 6  # past the last such character
        fixed = encoded[first:end]
        spellings |= {fixed, fixed.translate(bytes.maketrans(b"+/", b"-_"))}
    return spellings


@dataclass(frozen=True)
class Canary:
    """A secret planted for a test: `what` names it in failure messages."""

    what: str
    user: str
    password: str = field(repr=False)

    def needles(self) -> dict[bytes, str]:
        """Each byte string to look for, and how it spells the secret."""
        found = {self.password.encode(): "raw"}
        for spelling in base64_spellings(self.password.encode()):
            found.setdefault(spelling, "base64 of the password")
        for spelling in base64_spellings(f"{self.user}:{self.password}".encode()):
            found.setdefault(spelling, "base64 of user:password")
        return found


class Scanner:
    """Scans byte streams for every canary's spellings and keeps where each was found."""

    def __init__(self, canaries: Iterable[Canary]) -> None:
        self.needles = {
            needle: f"{canary.what} ({spelling})"
            for canary in canaries
            for needle, spelling in canary.needles().items()
        }
        self.overlap = max(map(len, self.needles)) - 1
        self.findings: list[str] = []
        self.scanned = 0  # streams scanned
        self.bytes = 0  # bytes scanned (decompressed bytes count again)

    def scan_chunks(self, where: str, chunks: Iterable[bytes]) -> None:
        """One stream: every needle, across chunk boundaries; a finding once per stream."""
        self.scanned += 1
        tail = b""
        reported: set[str] = set()
        for chunk in chunks:
            self.bytes += len(chunk)
            window = tail + chunk
            for needle, what in self.needles.items():
                if what not in reported and needle in window:
                    reported.add(what)
                    self.findings.append(f"{where}: {what}")
            tail = window[-self.overlap :]

    def scan_text(self, where: str, text: str) -> None:
        self.scan_chunks(where, [text.encode()])

    def scan_stream(self, where: str, stream: BinaryIO) -> None:
        """A seekable stream, as it is, then decompressed if it is gzip or zstd."""
        self.scan_chunks(where, _chunks(stream))
        stream.seek(0)
        magic = stream.read(4)
        stream.seek(0)
        if magic.startswith(GZIP_MAGIC):
            self._scan_decompressed(f"{where} (gunzipped)", gzip.GzipFile(fileobj=stream))
        elif magic == ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(stream)
            self._scan_decompressed(f"{where} (zstd-decompressed)", reader)

    def _scan_decompressed(self, where: str, reader: _Readable) -> None:
        # Magic bytes by chance, or a truncated stream: the raw bytes were scanned anyway.
        with contextlib.suppress(OSError, EOFError, zlib.error, zstandard.ZstdError):
            self.scan_chunks(where, _chunks(reader))

    def scan_file(self, path: Path) -> None:
        with path.open("rb") as stream:
            self.scan_stream(str(path), stream)

    def scan_tree(
        self, root: Path, *, changed_since: float | None = None, max_size: int | None = None
    ) -> int:
        """Every regular file under `root` (symlinks are not followed); with
        `changed_since`, only those written or created since (mtime or ctime), and with
        `max_size` only those no larger. Returns how many files were scanned."""
        count = 0
        for path in _files(root):
            try:
                status = path.lstat()
                changed = max(status.st_mtime, status.st_ctime)
                if changed_since is not None and changed < changed_since:
                    continue
                if max_size is not None and status.st_size > max_size:
                    continue
                self.scan_file(path)
            except FileNotFoundError:  # removed since the walk listed it (a cache at work)
                continue
            count += 1
        return count

    def scan_repository(self, registry: Registry, name: str) -> int:
        """Every tag of `name`, every manifest they reach (index entries, subjects), and
        every blob those manifests name: configs, layers (decompressed), SBOMs.
        Returns how many blobs were scanned."""
        listing = _get_json(registry, f"/v2/{name}/tags/list", f"repository:{name}:pull")
        pending = list(listing.get("tags") or [])
        seen_manifests: set[str] = set()
        seen_blobs: set[str] = set()
        while pending:
            reference = pending.pop()
            text = registry.get_manifest(name, reference)
            if text is None:
                raise AssertionError(f"{name}: {reference} is listed but has no manifest")
            self.scan_text(f"registry {name} manifest {reference}", text)
            manifest = json.loads(text)
            for entry in [*manifest.get("manifests", []), manifest.get("subject") or {}]:
                digest = entry.get("digest")
                if digest and digest not in seen_manifests:
                    seen_manifests.add(digest)
                    pending.append(digest)
            for blob in [manifest.get("config") or {}, *manifest.get("layers", [])]:
                digest = blob.get("digest")
                if digest and digest not in seen_blobs:
                    seen_blobs.add(digest)
                    where = f"registry {name} blob {digest} ({blob.get('mediaType')})"
                    self.scan_stream(where, io.BytesIO(registry.get_blob(name, digest)))
        return len(seen_blobs)


def _chunks(stream: _Readable) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _get_json(registry: Registry, path: str, scope: str) -> dict:
    status, _, body = registry.request("GET", path, scope=scope)
    if status != 200:
        raise AssertionError(f"GET {path}: HTTP {status}: {body[:200]!r}")
    return json.loads(body)


def repositories_under(registry: Registry, namespace: str) -> list[str]:
    """The registry's repositories whose names start with `namespace/`, through the
    catalog's pages (the distribution registry gives at most 100 a page)."""
    found: list[str] = []
    last = ""
    while True:
        query = urllib.parse.urlencode({"n": PAGE, **({"last": last} if last else {})})
        page = _get_json(registry, f"/v2/_catalog?{query}", "registry:catalog:*")
        names = page.get("repositories") or []
        found += [name for name in names if name.startswith(namespace + "/")]
        if len(names) < PAGE:
            return sorted(found)
        last = names[-1]


def write_rattler_auth_file(path: Path, host: str, canary: Canary) -> None:
    """rattler's authentication file (what RATTLER_AUTH_FILE names): host -> credentials.
    rattler looks hosts up without their port."""
    entry = {"BasicHTTP": {"username": canary.user, "password": canary.password}}
    path.write_text(json.dumps({host: entry}))
    path.chmod(0o600)
