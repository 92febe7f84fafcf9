"""A published pair as the parent of an extension pair, read from the registry alone.

`publish` attaches to both images of every pair it publishes the lock they were built
from and what owns each file of their prefix (`attach_lock`), as one OCI artifact
(`artifacts.py`). `read_parent` reads a pair back from nothing but a notebook image
reference: its manifests and configs (no layer is downloaded), its matched worker (named
by the notebook's `io.daskhub.worker-image` label), and the attached lock, read as the
untrusted input it is (`lockfile.read_lock`) and bound to the images by the
`io.daskhub.lock-sha256` label both carry. So a user who has only the registry can layer
on any published pair; no checkout of the site's repository is needed.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from buildtool.common import BuildToolError, read_published
from buildtool.image import OCI_INDEX, Blob
from buildtool.lock import MAX_LOCK_BYTES, Parent, ParentImage, read_lock
from buildtool.publish import artifacts
from buildtool.publish.attachments import FILES_TITLE, LOCK_ARTIFACT_TYPE, LOCK_TITLE
from buildtool.publish.registry import Registry, credentials_for
from compat import registry_rules
from compat.vocabulary import (
    ENVIRONMENT_LABEL,
    LOCK_LABEL,
    PLATFORMS,
    ROLE_LABEL,
    WORKER_LABEL,
    Role,
)

logger = logging.getLogger(__name__)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The largest file list attached (uncompressed): a seed pair's is about 3.5 MB.
MAX_FILES_BYTES = 256 * 1024 * 1024
# How many extensions deep a chain of parents may go (each takes layers of the 64).
MAX_DEPTH = 8


def resolve_from(value: str, build_dir: Path) -> str:
    """`from:` as a notebook image reference: an environment's name is looked up in its
    publish record (`build/<name>/published.json`); a reference is taken as it is."""
    if "/" in value:
        return value
    published = read_published(build_dir, value)
    if published is None:
        raise BuildToolError(
            f"environment {value!r} is not published here (no {build_dir}/{value}/published.json);"
            " name its notebook image by reference instead"
        )
    return published.images.notebook.ref


def _reference(text: str) -> registry_rules.Reference:
    return registry_rules.checked(BuildToolError, registry_rules.parse_reference, text)


def _platform_of(descriptor: dict[str, Any]) -> str:
    described = descriptor.get("platform", {})
    for subdir, platform in PLATFORMS.items():
        if described.get("architecture") == platform.oci_architecture and (
            described.get("variant") or None
        ) == (platform.oci_variant or None):
            return subdir
    raise BuildToolError(f"a manifest for {described}, which is no platform this tool builds")


def _json(registry: Registry, name: str, reference: str, what: str) -> tuple[str, dict]:
    text = registry.get_manifest(name, reference)
    if text is None:
        raise BuildToolError(f"{registry.host}/{name}@{reference}: not found ({what})")
    try:
        return text, json.loads(text)
    except ValueError:
        raise BuildToolError(f"{registry.host}/{name}@{reference}: not JSON ({what})") from None


def _read_image(registry: Registry, reference: str, what: str) -> ParentImage:
    ref = _reference(reference)
    if ref.host != registry.host:
        raise BuildToolError(
            f"{reference}: the {what} is in another registry than {registry.host}; an "
            "extension pair mounts its parent's layers, so both live in one registry"
        )
    digest = ref.digest or registry.manifest_digest(ref.name, ref.reference)
    if digest is None:
        raise BuildToolError(f"{reference}: no such image ({what})")
    text, top = _json(registry, ref.name, digest, what)
    if Blob.of(text.encode(), "").digest != digest:
        raise BuildToolError(f"{reference}: the registry answered with other content")
    if top.get("mediaType") == OCI_INDEX or "manifests" in top:
        listed = {_platform_of(d): d["digest"] for d in top.get("manifests", [])}
    else:
        listed = {"": digest}
    manifests, configs = {}, {}
    for platform, manifest_digest in listed.items():
        manifest = (
            top
            if manifest_digest == digest
            else _json(registry, ref.name, manifest_digest, what)[1]
        )
        config = json.loads(registry.get_blob(ref.name, manifest["config"]["digest"]))
        if not platform:  # a single manifest: its platform is in its config
            platform = _platform_of({"platform": config})
        manifests[platform], configs[platform] = manifest, config
    return ParentImage(f"{ref.host}/{ref.name}", digest, manifests, configs)


def _labels(image: ParentImage) -> dict[str, str]:
    labels: dict[str, str] = (
        next(iter(image.configs.values())).get("config", {}).get("Labels") or {}
    )
    return labels


def read_parent(notebook_reference: str, configured: str | None, depth: int = 0) -> Parent:
    """The pair whose notebook image is `notebook_reference` (by digest or tag), read with
    the credentials of `configured`, the registry the command works with (see
    `compat.registry_rules.credentials_for`). A parent, or a grandparent its attached lock
    names, in any other registry than the configured one is refused before any request."""
    host = _reference(notebook_reference).host
    expected = registry_rules.configured_registry(configured)
    if expected and host != expected:  # refused before anything is asked of it
        raise BuildToolError(
            f"{notebook_reference}: the parent is in {host}, not in {expected}, the registry "
            "the pair is published to; an extension pair lives beside its parent"
        )
    registry = Registry(host, credentials_for(host, configured))
    notebook = _read_image(registry, notebook_reference, "parent notebook image")
    labels = _labels(notebook)
    if labels.get(ROLE_LABEL) != Role.NOTEBOOK or WORKER_LABEL not in labels:
        raise BuildToolError(
            f"{notebook_reference}: not a notebook image of a published pair (its labels "
            f"name no {WORKER_LABEL})"
        )
    worker = _read_image(registry, labels[WORKER_LABEL], "parent worker image")
    if _labels(worker).get(LOCK_LABEL) != labels.get(LOCK_LABEL):
        raise BuildToolError(f"{notebook_reference}: its worker image was built from another lock")
    if set(worker.manifests) != set(notebook.manifests):
        raise BuildToolError(f"{notebook_reference}: its worker has other platforms")
    found = artifacts.fetch(registry, notebook.name, notebook.digest, LOCK_ARTIFACT_TYPE)
    if not found or LOCK_TITLE not in found[-1] or FILES_TITLE not in found[-1]:
        raise BuildToolError(
            f"{notebook_reference}: no lock is attached to it (published before locks were "
            "attached? publish it again)"
        )
    attached = found[-1]
    try:
        lock_text = gunzip_limited(attached[LOCK_TITLE].data, MAX_LOCK_BYTES).decode()
    except (OSError, ValueError):
        raise BuildToolError(f"{notebook_reference}: the attached lock is unreadable") from None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / LOCK_TITLE
        path.write_text(lock_text)
        try:
            lock = read_lock(path)
        except BuildToolError as exc:
            raise BuildToolError(f"{notebook_reference}: the attached lock: {exc}") from None
    if lock.content_sha() != labels.get(LOCK_LABEL):
        raise BuildToolError(
            f"{notebook_reference}: the attached lock is not the one it was built from"
        )
    try:
        listed = json.loads(gunzip_limited(attached[FILES_TITLE].data, MAX_FILES_BYTES))
        owners = {
            platform: {str(f): str(owner) for owner, files in by_owner.items() for f in files}
            for platform, by_owner in listed.items()
        }
    except (OSError, ValueError, AttributeError, TypeError):
        raise BuildToolError(
            f"{notebook_reference}: the attached file list is unreadable"
        ) from None
    logger.info(
        "parent %s: %s, %d conda records, %s",
        notebook.ref,
        labels.get(ENVIRONMENT_LABEL, "?"),
        len(lock.package),
        ", ".join(sorted(notebook.manifests)),
    )
    if not all(_DIGEST.fullmatch(image.digest) for image in (worker, notebook)):
        raise BuildToolError(f"{notebook_reference}: a digest of the pair is not sha256")
    grandparent = (lock.metadata.custom_metadata or {}).get("parent.notebook")
    if grandparent:  # an extension's list holds its own files: its parent's come from there
        if depth >= MAX_DEPTH:
            raise BuildToolError(f"{notebook_reference}: more than {MAX_DEPTH} parents")
        inherited = read_parent(grandparent, configured, depth + 1).owners
        owners = {p: {**inherited.get(p, {}), **own} for p, own in owners.items()}
    return Parent(worker, notebook, lock, lock_text, owners)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """`data` decompressed, refused past `limit` bytes (a small blob may expand a lot)."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        out = stream.read(limit + 1)
    if len(out) > limit:
        raise ValueError(f"more than {limit} bytes")
    return out
