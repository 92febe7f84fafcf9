"""OCI image pieces, written reproducibly: layer tars, compressed blobs, configs, manifests,
indexes, and the archive that `docker load` reads.

Every byte follows from the inputs: tar members are sorted, times are clamped, owners are
numbers without names, and only extended attributes survive from the PAX headers; JSON is
written with sorted keys and no spaces; gzip gets no name and no time. So the same files
give the same layer digest on any machine, on any day.

Own code rather than a library: the Python OCI clients (oras-py, docker-py) push and pull
what others built; none writes layers byte for byte from a file list, or rewrites a layer
that BuildKit made into a normalized one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from buildtool.common import BuildToolError, Watchdog, write_atomic
from buildtool.image import estargz
from compat.vocabulary import PLATFORMS

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Fast compression: every layer is compressed once per content and cached. An extension
# pair's few layers take EXTENSION_GZIP_LEVEL: they travel over a user's network, and
# are small enough that the better ratio costs seconds at most.
GZIP_LEVEL = 1
EXTENSION_GZIP_LEVEL = 6
COPY_BUFFER = 1 << 20

# Time limit, in seconds, of one `docker load` (every image of a build, gigabytes, into
# the engine): past it the engine has stopped reading.
LOAD_TIMEOUT = 60 * 60

# platform (conda subdir) -> (OCI architecture, variant)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to `target`."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.target.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


# What a tar member's bytes come from: a file on disk, bytes, an open file, or nothing.
Content = Path | bytes | IO[bytes] | None


class TarWriter:
    """Writes a tar archive byte for byte as `tarfile` does (PAX headers, members padded
    to 512 bytes, two zero blocks, the whole padded to 10240), much faster: `tarfile`'s
    stream mode copies every byte several times through its buffer, which capped a layer
    at a few hundred MB/s of Python CPU. File data is copied in large chunks, or, with
    `sendfile`, handed to the kernel (`os.sendfile`) from the file to `out`'s descriptor."""

    def __init__(self, out: BinaryIO, sendfile: bool = False) -> None:
        self.out = out
        self.sendfile = sendfile
        self.offset = 0
        self._buffer = bytearray(COPY_BUFFER)

    def _write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.offset += len(data)

    def add(self, info: tarfile.TarInfo, content: Content = None) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if not info.isreg() or info.size == 0:
            return
        if isinstance(content, bytes):
            self._write(content)
        elif isinstance(content, Path):
            with content.open("rb") as source:
                self._copy(source, info.size)
        else:
            assert content is not None, info.name
            self._copy(content, info.size)
        remainder = info.size % tarfile.BLOCKSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def _copy(self, source: IO[bytes], size: int) -> None:
        if self.sendfile:
            self.out.flush()
            while size:
                sent = os.sendfile(self.out.fileno(), source.fileno(), None, size)
                if sent == 0:
                    break
                size -= sent
                self.offset += sent
        view = memoryview(self._buffer)
        while size:
            got = source.readinto(view[: min(size, len(view))])  # type: ignore[attr-defined]
            if not got:
                raise BuildToolError(
                    f"{getattr(source, 'name', 'a member')}: shorter than its size"
                )
            self._write(view[:got])
            size -= got

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))


@dataclass(frozen=True)
class Entry:
    """One member of a layer to write: a file, directory or symlink under `path`."""

    path: str  # in the image, without the leading slash
    kind: str  # "file", "dir" or "symlink"
    mode: int
    uid: int
    gid: int
    mtime: int
    source: Path | None = None  # for "file": where the bytes are
    size: int = 0
    linkname: str = ""
    data: bytes | None = None  # for "file": the bytes themselves, instead of `source`

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.path + ("/" if self.kind == "dir" else ""))
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[
            self.kind
        ]
        info.mode, info.uid, info.gid, info.mtime = self.mode, self.uid, self.gid, self.mtime
        info.uname = info.gname = ""
        info.size = self.size if self.kind == "file" else 0
        info.linkname = self.linkname
        return info


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer in the store, with what `docker history` says of it."""

    diff_id: str
    size: int
    created: int  # seconds since the epoch: the newest time of what it holds
    created_by: str


class BlobStore:
    """Layers by diff_id (`<root>/layers/<hex>.tar`) and their gzip blobs, shared by every
    environment and platform built into the same build folder.

    The layers this tool writes are eStargz (`estargz.py`): each is written as its blob and
    its uncompressed archive at once, at the store's `level`, and its blob is kept under
    `<root>/gzip/<hex>.estargz` with the descriptor's annotations beside it. A layer kept as
    another tool made it (`write_stream`: the stand-in's base image) is gzipped plainly
    when it is pushed."""

    def __init__(self, root: Path, level: int = GZIP_LEVEL) -> None:
        self.root = root
        self.level = level
        (root / "layers").mkdir(parents=True, exist_ok=True)
        (root / "gzip").mkdir(parents=True, exist_ok=True)
        # What this process wrote into the store: (diff_id, bytes) of each layer.
        self.written: list[tuple[str, int]] = []

    def recall(self, kind: str, key: str) -> dict[str, Any] | None:
        """What was kept of `kind` under `key` (a hex digest of its inputs), if anything."""
        path = self.root / kind / f"{key}.json"
        try:
            value: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return value

    def remember(self, kind: str, key: str, value: dict[str, Any]) -> None:
        path = self.root / kind / f"{key}.json"
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(value, out, sort_keys=True)
        os.replace(tmp, path)

    def _level_key(self, key: str) -> str:
        """A layer's key at this store's compression level: the level is in an eStargz
        layer's bytes (its TOC holds compressed offsets), so in its diff_id too."""
        return key if self.level == GZIP_LEVEL else f"{key}-level{self.level}"

    def recall_layer(self, key: str) -> tuple[Layer, list[str]] | None:
        """The layer made from the inputs `key` stands for, and the files it holds, if
        it is still in the store."""
        value = self.recall("keys", self._level_key(key))
        if value is None:
            return None
        layer = Layer(**value["layer"])
        if not self.layer_path(layer.diff_id).exists():
            return None
        return layer, value["files"]

    def remember_layer(self, key: str, layer: Layer, files: list[str]) -> None:
        self.remember("keys", self._level_key(key), {"layer": asdict(layer), "files": files})

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / f"{diff_id.removeprefix('sha256:')}.tar"

    def _store(self, write: Callable[[BinaryIO], None]) -> tuple[str, int]:
        """Write a layer through `write`, then keep it under its digest."""
        fd, tmp = tempfile.mkstemp(dir=self.root / "layers", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw:
                hashing = _HashingWriter(raw)
                write(hashing)  # type: ignore[arg-type]
            diff_id = f"sha256:{hashing.sha.hexdigest()}"
            os.replace(tmp, self.layer_path(diff_id))
            self.written.append((diff_id, hashing.size))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return diff_id, hashing.size

    def _store_estargz(self, write: Callable[[estargz.EStargzWriter], None]) -> str:
        """Write an eStargz layer through `write`: its archive into `layers/`, its blob
        into `gzip/`, both under the archive's digest. Returns the diff_id."""
        fd_archive, archive_tmp = tempfile.mkstemp(dir=self.root / "layers", suffix=".tmp")
        fd_blob, blob_tmp = tempfile.mkstemp(dir=self.root / "gzip", suffix=".tmp")
        try:
            with os.fdopen(fd_archive, "wb") as archive, os.fdopen(fd_blob, "wb") as blob:
                writer = estargz.EStargzWriter(blob, archive, self.level)
                write(writer)
                done = writer.close()
            blob_path = self._estargz_path(done.diff_id)
            os.replace(blob_tmp, blob_path)
            record = {"digest": done.digest, "size": done.size, "annotations": done.annotations}
            write_atomic(blob_path.with_suffix(".json"), json.dumps(record, sort_keys=True))
            os.replace(archive_tmp, self.layer_path(done.diff_id))
            self.written.append((done.diff_id, done.uncompressed_size))
        except BaseException:
            Path(archive_tmp).unlink(missing_ok=True)
            Path(blob_tmp).unlink(missing_ok=True)
            raise
        return done.diff_id

    def _estargz_path(self, diff_id: str) -> Path:
        return self.root / "gzip" / f"{diff_id.removeprefix('sha256:')}.estargz"

    def write_layer(
        self,
        entries: Iterable[Entry],
        created: int,
        created_by: str,
        prefetch: Sequence[str] = (),
    ) -> Layer:
        """A layer of `entries`, as eStargz: the files `prefetch` names (those the layer
        holds) first, in that order, behind the prefetch landmark; the rest by path."""
        by_path = {entry.path: entry for entry in entries}
        first = [by_path[path] for path in dict.fromkeys(prefetch) if path in by_path]
        rest = sorted((e for e in by_path.values() if e not in first), key=lambda e: e.path)

        def add(writer: estargz.EStargzWriter, entry: Entry) -> None:
            content = entry.data if entry.data is not None else entry.source
            if isinstance(content, Path):
                with content.open("rb") as source:
                    writer.add(entry.tarinfo(), source)
            else:
                writer.add(entry.tarinfo(), content)

        def write(writer: estargz.EStargzWriter) -> None:
            if not first:
                writer.add(estargz.landmark(estargz.NO_PREFETCH_LANDMARK), estargz.LANDMARK_CONTENT)
            for entry in first:
                add(writer, entry)
            if first:
                writer.add(estargz.landmark(estargz.PREFETCH_LANDMARK), estargz.LANDMARK_CONTENT)
            for entry in rest:
                add(writer, entry)

        diff_id = self._store_estargz(write)
        return Layer(diff_id, self.layer_path(diff_id).stat().st_size, created, created_by)

    def normalize_layer(
        self,
        source: Path,
        *,
        clamp: int,
        drop: Callable[[str], bool],
        created_by: str,
    ) -> Layer | None:
        """Rewrite a layer that another tool made: members sorted, times clamped, names
        cleared, PAX headers cut to extended attributes, `drop`ped paths left out. None if
        only folders are left: what a step with nothing to do leaves (its cache mount
        points, folders whose times it touched)."""
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if not drop(m.name.rstrip("/"))]
            if all(m.isdir() for m in members):
                return None
            by_name = {m.name: m for m in members}
            # Hard links point at the first of their group in the new order.
            groups: dict[str, list[str]] = {}
            for member in members:
                if member.islnk():
                    groups.setdefault(member.linkname, [member.linkname]).append(member.name)
            data_of: dict[str, tarfile.TarInfo] = {}
            link_to: dict[str, str] = {}
            for target, names in groups.items():
                if target not in by_name:
                    raise BuildToolError(
                        f"{source}: {names[1]} links to {target}, which is left out"
                    )
                first, *rest = sorted(names)
                data_of[first] = by_name[target]
                for name in rest:
                    link_to[name] = first

            def write(new: estargz.EStargzWriter) -> None:
                new.add(estargz.landmark(estargz.NO_PREFETCH_LANDMARK), estargz.LANDMARK_CONTENT)
                for name in sorted(by_name):
                    member = by_name[name]
                    content = data_of.get(name, member)
                    info = tarfile.TarInfo(name)
                    info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
                    info.mtime = min(int(member.mtime), clamp)
                    info.uname = info.gname = ""
                    info.devmajor, info.devminor = member.devmajor, member.devminor
                    info.pax_headers = {
                        k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")
                    }
                    if name in link_to:
                        info.type, info.linkname = tarfile.LNKTYPE, link_to[name]
                        new.add(info)
                    elif content.isreg() or content.islnk():
                        info.type, info.size = tarfile.REGTYPE, content.size
                        new.add(info, tar.extractfile(content))
                    else:
                        info.type, info.linkname = member.type, member.linkname
                        new.add(info)

            diff_id = self._store_estargz(write)
        return Layer(diff_id, self.layer_path(diff_id).stat().st_size, clamp, created_by)

    def write_stream(self, source: IO[bytes], created: int, created_by: str) -> Layer:
        """Keep a layer tar read from `source` (another tool's output) as it is."""

        def write(out: BinaryIO) -> None:
            shutil.copyfileobj(source, out, COPY_BUFFER)

        diff_id, size = self._store(write)
        return Layer(diff_id, size, created, created_by)

    def gzip_blob(self, diff_id: str, level: int = GZIP_LEVEL) -> Blob:
        """The layer's blob: its eStargz blob when this tool wrote it; else the layer
        gzipped at `level` without name or time, cached by diff_id (and by level, when it
        is not the default)."""
        written = self._estargz_path(diff_id)
        if written.exists():
            record = json.loads(written.with_suffix(".json").read_text())
            return Blob(
                record["digest"],
                record["size"],
                OCI_LAYER_GZIP,
                written,
                annotations=record["annotations"],
            )
        hexid = diff_id.removeprefix("sha256:")
        suffix = "" if level == GZIP_LEVEL else f"-{level}"
        target = self.root / "gzip" / f"{hexid}{suffix}.tar.gz"
        record = target.with_suffix(".digest")
        if not (target.exists() and record.exists()):
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            try:
                with (
                    self.layer_path(diff_id).open("rb") as source,
                    os.fdopen(fd, "wb") as raw,
                ):
                    hashing = _HashingWriter(raw)
                    with gzip.GzipFile(
                        filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=level
                    ) as out:
                        shutil.copyfileobj(source, out, COPY_BUFFER)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            record.write_text(f"sha256:{hashing.sha.hexdigest()}\n")
        return Blob(record.read_text().strip(), target.stat().st_size, OCI_LAYER_GZIP, target)

    def gzip_blobs(self, diff_ids: list[str], level: int = GZIP_LEVEL) -> dict[str, Blob]:
        """Compress many layers at once (zlib works outside the GIL)."""
        unique = list(dict.fromkeys(diff_ids))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            blobs = pool.map(lambda diff_id: self.gzip_blob(diff_id, level), unique)
            return dict(zip(unique, blobs, strict=True))


@dataclass(frozen=True)
class Blob:
    """Something a manifest points at: a compressed layer (a file) or JSON (bytes)."""

    digest: str
    size: int
    media_type: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    # What its descriptor says besides (an eStargz layer's TOC digest and size).
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Blob:
        return cls(sha256_digest(data), len(data), media_type, data=data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        described = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            described["annotations"] = dict(self.annotations)
        return {**described, **extra}

    def open(self) -> BinaryIO:
        if self.path is not None:
            return self.path.open("rb")
        assert self.data is not None
        return io.BytesIO(self.data)


@dataclass(frozen=True)
class Image:
    """One image of one platform: its config and its layers, bottom first."""

    platform: str
    config: dict[str, Any]  # the OCI image config, without rootfs and history
    layers: tuple[Layer, ...]

    def config_blob(self) -> Blob:
        target = PLATFORMS[self.platform]
        created = max(layer.created for layer in self.layers)
        document = {
            **self.config,
            "architecture": target.oci_architecture,
            "os": "linux",
            "created": _rfc3339(created),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [
                {"created": _rfc3339(layer.created), "created_by": layer.created_by}
                for layer in self.layers
            ],
        }
        if target.oci_variant:
            document["variant"] = target.oci_variant
        return Blob.of(canonical_json(document), OCI_CONFIG)

    @property
    def image_id(self) -> str:
        """What `docker images` shows: the config's digest."""
        return self.config_blob().digest

    def manifest(self, blobs: dict[str, Blob]) -> Blob:
        """The OCI manifest, given the compressed blob of each layer."""
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.config_blob().descriptor(),
            "layers": [blobs[layer.diff_id].descriptor() for layer in self.layers],
        }
        return Blob.of(canonical_json(document), OCI_MANIFEST)


def index(manifests: dict[str, Blob]) -> Blob:
    """An OCI image index over one manifest per platform."""
    entries = []
    for subdir in sorted(manifests):
        target = PLATFORMS[subdir]
        described = {
            "architecture": target.oci_architecture,
            "os": "linux",
            **({"variant": target.oci_variant} if target.oci_variant else {}),
        }
        entries.append(manifests[subdir].descriptor(platform=described))
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Blob.of(canonical_json(document), OCI_INDEX)


def _rfc3339(seconds: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of each layer of a stack, bottom first: how an engine names a layer
    together with everything under it (the OCI image spec's ChainID)."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(next_chain(chains[-1] if chains else None, diff_id))
    return chains


def next_chain(below: str | None, diff_id: str) -> str:
    """The chain ID of a layer `diff_id` on the stack whose chain ID is `below`."""
    return diff_id if below is None else sha256_digest(f"{below} {diff_id}".encode())


def docker_archive(
    images: Sequence[tuple[str | None, Image]],
    store: BlobStore,
    held: frozenset[str] = frozenset(),
) -> Iterator[tuple[tarfile.TarInfo, Content]]:
    """The members of a `docker save` archive holding `images` (tag or None, image): each
    layer once, each config, and manifest.json. An image without a tag is loaded untagged.

    A layer whose chain the engine already `held` is named in the manifest but left out
    of the archive: the engine's loader finds the chain in its layer store and never opens
    that file (moby's image/tarexport/load.go), so only what it lacks is sent."""
    manifest = []
    seen: set[str] = set()
    for tag, image in images:
        config = image.config_blob()
        config_name = f"{config.digest.removeprefix('sha256:')}.json"
        layer_names = []
        chains = chain_ids(layer.diff_id for layer in image.layers)
        for layer, chain in zip(image.layers, chains, strict=True):
            name = f"{layer.diff_id.removeprefix('sha256:')}/layer.tar"
            layer_names.append(name)
            if layer.diff_id not in seen and chain not in held:
                seen.add(layer.diff_id)
                path = store.layer_path(layer.diff_id)
                info = tarfile.TarInfo(name)
                info.size = path.stat().st_size
                yield info, path
        if config_name not in seen:
            seen.add(config_name)
            info = tarfile.TarInfo(config_name)
            info.size = config.size
            yield info, config.data
        manifest.append(
            {"Config": config_name, "RepoTags": [tag] if tag else None, "Layers": layer_names}
        )
    data = json.dumps(manifest).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size = len(data)
    yield info, data


def docker_load(
    docker: str,
    images: Sequence[tuple[str | None, Image]],
    store: BlobStore,
    held: frozenset[str] = frozenset(),
    timeout: float = LOAD_TIMEOUT,
) -> tuple[int, int]:
    """Stream `images` into the engine's `docker load`, leaving out the layers whose chains
    it `held`; the layers go from the store to the engine's pipe by `os.sendfile`. Returns
    how many layers and bytes of layers were sent. After `timeout` seconds the load is
    killed and CommandTimeout raised."""
    sent = layers = 0
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [docker, "load", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        assert process.stdin is not None
        with Watchdog(process, timeout, "docker load") as watchdog:
            try:
                tar = TarWriter(process.stdin, sendfile=True)  # type: ignore[arg-type]
                for info, content in docker_archive(images, store, held):
                    tar.add(info, content)
                    if info.name.endswith("/layer.tar"):
                        layers += 1
                        sent += info.size
                tar.close()
                process.stdin.close()
            except BrokenPipeError:
                pass  # the engine stopped reading: its message says why
            code = process.wait()
        watchdog.check()
        if code != 0:
            err.seek(0)
            said = err.read().decode(errors="replace").strip()
            raise RuntimeError(f"docker load failed: {said or 'no message'}")
    return layers, sent


def file_entry(
    path: Path, name: str, uid: int, gid: int, clamp: int, mode: int | None = None
) -> Entry:
    """An Entry for what is at `path` on disk (not following symlinks)."""
    st = path.lstat()
    mtime = min(int(st.st_mtime), clamp)
    permissions = stat.S_IMODE(st.st_mode) & 0o1777 if mode is None else mode
    if stat.S_ISLNK(st.st_mode):
        return Entry(name, "symlink", 0o777, uid, gid, mtime, linkname=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return Entry(name, "dir", permissions, uid, gid, mtime)
    if stat.S_ISREG(st.st_mode):
        return Entry(name, "file", permissions, uid, gid, mtime, source=path, size=st.st_size)
    raise BuildToolError(
        f"{path}: not a file, directory or symlink; an image layer holds only those"
    )
