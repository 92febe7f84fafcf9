"""Publish the pair atomically: build, test, push by digest, and only then tag.

1. If both content tags are already in the registry, nothing is built or pushed.
2. Otherwise the compat gate checks the lock's notebook and worker sets, and both images
   are built and pass `buildtool test` (unless the image tests are turned off: then the
   record says `image_tested: false`), before anything is sent.
3. Layers, configs and manifests go up by digest from the layer store: a blob the
   registry holds is not sent again, and the notebook's shared layers are mounted from
   the worker repository. With several platforms, each image is an OCI index over one
   manifest per platform. Each image gets its SBOMs and the matching client's pins
   (`buildtool/lock/laptop.py`) attached, and the lock it was built from with its file list
   (`buildtool/publish/parent.py`), which extension pairs are built on. Tags are written last.

`build/<env>/published.json` records the references and digests, and
`build/<env>/published-lock.yml` the lock that was published.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from buildtool.common import (
    PUBLISHED_FILE,
    PUBLISHED_IMAGES_FILE,
    PUBLISHED_LOCK_FILE,
    SBOM_DIR,
    BuildToolError,
    Published,
    PublishedImage,
    PublishedImages,
    read_published,
    write_atomic,
)
from buildtool.image import (
    FILES_FILE,
    Blob,
    BuiltPair,
    Image,
    RenderedPair,
    date_tag,
    full_client_text,
    index,
    package_cache,
    store_for,
)
from buildtool.lock import FULL_REQUIREMENTS_FILE, client_files, read_lock
from buildtool.publish.attachments import attach_client_files as attach_pins
from buildtool.publish.attachments import attach_lock
from buildtool.publish.registry import Registry, credentials_for, split_reference
from buildtool.publish.sbom import ImageContents, attach_sbom, sbom_json
from compat.gate import IncompatibleImagesError, gate_lockfile
from compat.report import render_markdown
from compat.vocabulary import ROLES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushedImage:
    """One role's image in the registry: its top manifest (an index with several
    platforms) and each platform's manifest."""

    top: Blob
    manifests: dict[str, Blob]  # platform -> manifest

    @property
    def platforms(self) -> dict[str, str]:
        return {platform: blob.digest for platform, blob in self.manifests.items()}


def _write_record(pair: RenderedPair, publication: Published, built: BuiltPair | None) -> None:
    directory = Path(pair.directory)
    previous = read_published(directory.parent, pair.environment)
    if previous is not None and all(
        previous.images.image(r).digest == publication.images.image(r).digest for r in ROLES
    ):
        return  # a no-op keeps the record of the real publish, byte for byte
    write_atomic(directory / PUBLISHED_FILE, publication.to_json())
    write_atomic(directory / PUBLISHED_LOCK_FILE, pair.lock_path.read_text())
    if built is not None:
        write_atomic(directory / PUBLISHED_IMAGES_FILE, built.to_json())


def compat_gate(pair: RenderedPair) -> None:
    """Refuse a pair whose notebook and worker sets mismatch; keep the report either way."""
    reports = []
    for platform in pair.platforms:
        try:
            reports.append(render_markdown(gate_lockfile(pair.lock_path, platform)))
        except IncompatibleImagesError as exc:
            write_atomic(Path(pair.directory) / "compat-report.md", render_markdown(exc.report))
            raise BuildToolError(f"compat gate ({platform}): {exc}") from None
    write_atomic(Path(pair.directory) / "compat-report.md", "\n".join(reports))


def published_digests(registry: Registry, pair: RenderedPair) -> dict[str, str] | None:
    """The digests under both content tags, or None if either is missing."""
    digests: dict[str, str] = {}
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        digest = registry.manifest_digest(name, pair.content_tag)
        if digest is None:
            return None
        digests[role] = digest
    return digests


def push_images(registry: Registry, pair: RenderedPair, built: BuiltPair) -> dict[str, PushedImage]:
    """Every blob and manifest by digest, nothing tagged; the top manifest per role."""
    store = store_for(pair)
    diff_ids = [
        layer.diff_id
        for roles in built.images.values()
        for image in roles.values()
        for layer in image.layers
    ]
    blobs = store.gzip_blobs(diff_ids)
    _, worker_name = split_reference(pair.worker.repository)
    pushed: dict[str, PushedImage] = {}
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        mount = worker_name if role == "notebook" else None
        manifests: dict[str, Blob] = {}
        for platform, roles in built.images.items():
            image: Image = roles[role]
            for layer in image.layers:
                registry.push_blob(name, blobs[layer.diff_id], mount_from=mount)
            registry.push_blob(name, image.config_blob())
            manifests[platform] = image.manifest(blobs)
            registry.put_manifest(name, manifests[platform].digest, manifests[platform])
        top = manifests[pair.platforms[0]] if len(manifests) == 1 else index(manifests)
        if len(manifests) > 1:
            registry.put_manifest(name, top.digest, top)
        pushed[role] = PushedImage(top, manifests)
        logger.info(f"pushed {pair.image(role).repository}@{top.digest}")
    return pushed


def attach_sboms(
    registry: Registry, pair: RenderedPair, built: BuiltPair, pushed: dict[str, PushedImage]
) -> None:
    """An SBOM per image and platform: attached in the registry, kept in build/ENV/sbom."""
    lock = read_lock(pair.lock_path)
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        pins = pair.pip["worker"] + (pair.pip["notebook"] if role == "notebook" else [])
        for platform, manifest in pushed[role].manifests.items():
            image = built.images[platform][role]
            contents = ImageContents(
                environment=pair.environment,
                role=role,
                platform=platform,
                repository=pair.image(role).repository,
                digest=pushed[role].top.digest,
                manifest=manifest.digest,
                created=max(layer.created for layer in image.layers),
                conda=lock.packages(role, platform),
                pip=pins,
                apt=built.apt[platform][role],
            )
            document = sbom_json(contents)
            write_atomic(Path(pair.directory) / SBOM_DIR / f"{role}-{platform}.cdx.json", document)
            attach_sbom(registry, name, manifest, document, platform)
        logger.info(f"attached SBOMs to {pair.image(role).repository}@{pushed[role].top.digest}")


def attach_client_files(
    registry: Registry, pair: RenderedPair, pushed: dict[str, PushedImage], files: dict[str, str]
) -> None:
    """The matching client's pins (`buildtool/lock/laptop.py`), attached to both images by the
    digest users pull: the same files for every platform."""
    _, worker_name = split_reference(pair.worker.repository)
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        mount = worker_name if role == "notebook" else None
        attach_pins(registry, name, pushed[role].top, files, mount)
        logger.info(
            f"attached client pins to {pair.image(role).repository}@{pushed[role].top.digest}"
        )


def attach_locks(registry: Registry, pair: RenderedPair, pushed: dict[str, PushedImage]) -> None:
    """The lock and the file owners, attached to both images by the digest users pull:
    what an extension pair is built on (`buildtool/publish/parent.py`)."""
    owners = json.loads((Path(pair.directory) / FILES_FILE).read_text())
    _, worker_name = split_reference(pair.worker.repository)
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        mount = worker_name if role == "notebook" else None
        attach_lock(registry, name, pushed[role].top, pair.lock_path.read_text(), owners, mount)
    logger.info(f"attached the lock to {pair.notebook.repository}@{pushed['notebook'].top.digest}")


def publish(
    pair: RenderedPair,
    registry_prefix: str,
    build: Callable[[], BuiltPair],
    test: Callable[[], None] | None,
) -> Published:
    """Publish `pair` (this module's steps); `test` runs the image tests, None skips them."""
    host, _ = split_reference(pair.worker.repository)
    registry = Registry(host, credentials_for(host, configured=host))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    today = date_tag()
    started = time.monotonic()

    existing = published_digests(registry, pair)
    if existing is not None:
        logger.info(
            f"{pair.environment}: {pair.content_tag} is already published: "
            "nothing built, nothing pushed"
        )
        previous = read_published(Path(pair.directory).parent, pair.environment)
        images: dict[str, PublishedImage] = {
            role: PublishedImage.at(
                pair.image(role).repository,
                existing[role],
                [pair.content_tag],
                previous.images.image(role).platforms
                if previous and previous.images.image(role).digest == existing[role]
                else {},
            )
            for role in ROLES
        }
        # Whether they were tested is known from this folder's record of those digests;
        # a pair published elsewhere (the nightly) was, as a site pair's are by default.
        same = previous is not None and all(
            previous.images.image(role).digest == existing[role] for role in ROLES
        )
        tested = previous.image_tested if previous is not None and same else True
        publication = _record(pair, registry_prefix, today, images, 0, now, tested)
        _write_record(pair, publication, None)
        return publication

    compat_gate(pair)
    client = client_files(pair.environment, read_lock(pair.lock_path), pair.lock_path)
    begun = time.monotonic()
    built = build()
    # Every distribution of the worker set, read from the packages the build installed.
    client[FULL_REQUIREMENTS_FILE] = full_client_text(
        pair.environment, pair.lock_path, package_cache()
    )
    timings = {"build": time.monotonic() - begun}
    if test is not None:
        begun = time.monotonic()
        test()  # raises before anything is pushed
        timings["image_tests"] = time.monotonic() - begun
    begun = time.monotonic()

    pushed = push_images(registry, pair, built)
    attach_sboms(registry, pair, built, pushed)
    attach_client_files(registry, pair, pushed, client)
    attach_locks(registry, pair, pushed)
    # Both images are complete in the registry: now, and only now, the tags.
    tags = [pair.content_tag, today]
    images = {}
    for role in ROLES:
        _, name = split_reference(pair.image(role).repository)
        for tag in tags:
            registry.put_manifest(name, tag, pushed[role].top)
        images[role] = PublishedImage.at(
            pair.image(role).repository, pushed[role].top.digest, tags, pushed[role].platforms
        )
        logger.info(f"tagged {pair.image(role).repository}:{{{','.join(tags)}}}")
    publication = _record(
        pair, registry_prefix, today, images, registry.bytes_uploaded, now, test is not None
    )
    timings["push"] = time.monotonic() - begun
    timings["total"] = time.monotonic() - started
    publication.timings = {step: round(seconds, 2) for step, seconds in timings.items()}
    _write_record(pair, publication, built)
    return publication


def _record(
    pair: RenderedPair,
    registry_prefix: str,
    today: str,
    images: dict[str, PublishedImage],
    bytes_pushed: int,
    now: str,
    image_tested: bool,
) -> Published:
    return Published(
        environment=pair.environment,
        registry=registry_prefix,
        content_tag=pair.content_tag,
        date_tag=today,
        lock_sha256=pair.lock_sha256,
        images=PublishedImages(**images),
        bytes_pushed=bytes_pushed,
        published_at=now,
        image_tested=image_tested,
    )
