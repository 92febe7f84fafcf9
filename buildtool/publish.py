"""Publish the pair atomically: build, test, push by digest, and only then tag.

1. If both content tags are already in the registry, nothing is built or pushed.
2. Otherwise the compat gate checks the lock's notebook and worker sets, and both images
   are built and pass `buildtool test`, before anything is sent.
3. Blobs and manifests go up by digest (the notebook's shared layers are mounted from the
   worker repository, so they cross the wire once); tags are written last.

`build/<env>/published.json` records the references and digests, and
`build/<env>/published-lock.yml` the lock that was published.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from buildtool.build import BuildStamp, docker_cli
from buildtool.errors import BuildToolError
from buildtool.lockfile import write_atomic
from buildtool.published import (
    PUBLISHED_FILE,
    PUBLISHED_LOCK_FILE,
    Published,
    PublishedImage,
    PublishedImages,
    read_published,
)
from buildtool.registry import MANIFEST_V2, Registry, credentials_for, split_reference
from buildtool.render import ROLES, RenderedPair
from compat.gate import IncompatibleImagesError, gate_lockfile
from compat.report import render_markdown

LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"
# Fast compression: layers are compressed once per content and cached, and a push over a
# fast link is bound by the CPU, not by the bytes.
GZIP_LEVEL = 1


@dataclass
class _Blob:
    path: Path
    digest: str
    size: int


def _compressed(layer: Path, cache: Path, diff_id: str) -> _Blob:
    """Gzip a layer deterministically (same bytes in, same digest out), cached by diff_id."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{diff_id.removeprefix('sha256:')}.tar.gz"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        with (
            layer.open("rb") as source,
            tmp.open("wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL
            ) as out,
        ):
            shutil.copyfileobj(source, out, 1 << 20)
        tmp.replace(target)
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return _Blob(target, f"sha256:{digest.hexdigest()}", target.stat().st_size)


def _export(refs: list[str], workdir: Path, cache: Path) -> dict[str, tuple[_Blob, list[_Blob]]]:
    """`docker save` the images once; return each one's config blob and layer blobs."""
    archive = workdir / "images.tar"
    with archive.open("wb") as out:
        subprocess.run([docker_cli(), "save", *refs], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(workdir / "x", filter="tar")
    root = workdir / "x"
    result = {}
    for entry in json.loads((root / "manifest.json").read_text()):
        config_path = root / entry["Config"]
        diff_ids = json.loads(config_path.read_text())["rootfs"]["diff_ids"]
        config = _Blob(
            config_path,
            f"sha256:{hashlib.sha256(config_path.read_bytes()).hexdigest()}",
            config_path.stat().st_size,
        )
        layers = [
            _compressed(root / p, cache, d) for p, d in zip(entry["Layers"], diff_ids, strict=True)
        ]
        for tag in entry["RepoTags"] or []:
            result[tag] = (config, layers)
    return result


def _manifest(config: _Blob, layers: list[_Blob]) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": LAYER_GZIP, "size": b.size, "digest": b.digest} for b in layers],
    }
    return json.dumps(manifest, indent=3).encode()


def _write_record(pair: RenderedPair, publication: Published, lock_path: Path) -> None:
    directory = Path(pair.directory)
    previous = read_published(directory.parent, pair.environment)
    if previous is not None and all(
        previous.images.image(r).digest == publication.images.image(r).digest for r in ROLES
    ):
        return  # a no-op keeps the record of the real publish, byte for byte
    write_atomic(directory / PUBLISHED_FILE, publication.to_json())
    write_atomic(directory / PUBLISHED_LOCK_FILE, lock_path.read_text())


def compat_gate(pair: RenderedPair, lock_path: Path) -> None:
    """Refuse a pair whose notebook and worker sets mismatch; keep the report either way."""
    try:
        report = gate_lockfile(lock_path, pair.platform)
    except IncompatibleImagesError as exc:
        write_atomic(Path(pair.directory) / "compat-report.md", render_markdown(exc.report))
        raise BuildToolError(f"compat gate: {exc}") from None
    write_atomic(Path(pair.directory) / "compat-report.md", render_markdown(report))


def published_digests(registry: Registry, pair: RenderedPair) -> dict[str, str] | None:
    """The digests under both content tags, or None if either is missing."""
    digests = {}
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        digest = registry.manifest_digest(name, pair.content_tag)
        if digest is None:
            return None
        digests[role] = digest
    return digests


def _record(
    pair: RenderedPair,
    registry_prefix: str,
    stamp: BuildStamp,
    images: dict[str, PublishedImage],
    bytes_pushed: int,
    now: str,
) -> Published:
    return Published(
        environment=pair.environment,
        registry=registry_prefix,
        content_tag=pair.content_tag,
        date_tag=stamp.date_tag,
        lock_sha256=pair.lock_sha256,
        images=PublishedImages(**images),
        bytes_pushed=bytes_pushed,
        published_at=now,
    )


def publish(
    pair: RenderedPair,
    lock_path: Path,
    registry_prefix: str,
    stamp: BuildStamp,
    build: Callable[[], None],
    test: Callable[[], None],
) -> Published:
    host, _ = split_reference(pair.worker.repository)
    registry = Registry(host, credentials_for(host))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    existing = published_digests(registry, pair)
    if existing is not None:
        print(f"{pair.environment}: {pair.content_tag} is already published: "
              "nothing built, nothing pushed")  # fmt: skip
        images = {
            role: PublishedImage.at(pair.image(role).repository, existing[role], [pair.content_tag])
            for role in ROLES
        }
        publication = _record(pair, registry_prefix, stamp, images, 0, now)
        _write_record(pair, publication, lock_path)
        return publication

    compat_gate(pair, lock_path)
    build()
    test()  # raises before anything is pushed

    tags = [pair.content_tag, stamp.date_tag]
    manifests: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="buildtool-publish-") as tmp:
        refs = [pair.image(role).ref for role in ROLES]
        exported = _export(refs, Path(tmp), Path(pair.directory).parent / ".blobs")
        _, worker_name = split_reference(pair.worker.repository)
        for role in ROLES:
            image = pair.image(role)
            _, name = split_reference(image.repository)
            config, layers = exported[image.ref]
            mount = worker_name if role == "notebook" else None
            for blob in [*layers, config]:
                registry.push_blob(name, blob.digest, blob.path, mount_from=mount)
            manifests[role] = _manifest(config, layers)
            digest = f"sha256:{hashlib.sha256(manifests[role]).hexdigest()}"
            registry.put_manifest(name, digest, manifests[role])
            print(f"pushed {image.repository}@{digest}")
    # Both images are complete in the registry: now, and only now, the tags.
    images: dict[str, PublishedImage] = {}
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        for tag in tags:
            digest = registry.put_manifest(name, tag, manifests[role])
        images[role] = PublishedImage.at(pair.image(role).repository, digest, tags)
        print(f"tagged {pair.image(role).repository}:{{{','.join(tags)}}}")
    publication = _record(pair, registry_prefix, stamp, images, registry.bytes_uploaded, now)
    _write_record(pair, publication, lock_path)
    return publication
