"""Files attached to a published image as OCI artifacts: its SBOMs, its client's pins, and
the lock it was built from (with its file list), which extension pairs are built on.

An artifact is an OCI manifest with an `artifactType`, the empty config, one layer per
file (named by the `org.opencontainers.image.title` annotation) and a `subject`: the
image it belongs to. A registry with the referrers API lists it there by itself; it is
also listed under the referrers tag schema (an index under the tag `sha256-<hex>`), which
every registry can hold and which is how it is read here: one path, tested against the
local registry, which has no referrers API.

Own code rather than oras-py: three small functions over the registry client this tool
already has, with its credential rule; oras-py would bring a second HTTP stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from buildtool.image import OCI_INDEX, OCI_MANIFEST, Blob, canonical_json
from buildtool.publish.registry import Registry
from compat.vocabulary import TITLE_LABEL as TITLE

EMPTY_CONFIG = Blob.of(b"{}", "application/vnd.oci.empty.v1+json")


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact: its title (a name, never used as a path), type and bytes."""

    title: str
    media_type: str
    data: bytes


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag listing what refers to `digest`."""
    return digest.replace(":", "-")


def attach(
    registry: Registry,
    name: str,
    subject: Blob,
    artifact_type: str,
    files: list[ArtifactFile],
    annotations: dict[str, str] | None = None,
    mount_from: str | None = None,
) -> str:
    """Push `files` as one artifact whose subject is `subject` (in repository `name`),
    and list it under the referrers tag, newest last. Returns the artifact's digest.
    Files already in repository `mount_from` (the other image of a pair) are mounted,
    not sent again."""
    layers = [Blob.of(f.data, f.media_type) for f in files]
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG.descriptor(),
        "layers": [
            layer.descriptor(annotations={TITLE: f.title})
            for f, layer in zip(files, layers, strict=True)
        ],
        "subject": subject.descriptor(),
    }
    if annotations:
        document["annotations"] = annotations
    manifest = Blob.of(canonical_json(document), OCI_MANIFEST)
    for blob in (EMPTY_CONFIG, *layers):
        registry.push_blob(name, blob, mount_from=mount_from)
    registry.put_manifest(name, manifest.digest, manifest)
    tag = referrers_tag(subject.digest)
    listed = registry.get_manifest(name, tag)
    entries = json.loads(listed)["manifests"] if listed else []
    entries = [e for e in entries if e["digest"] != manifest.digest]
    extra = {"annotations": annotations} if annotations else {}
    entries.append(manifest.descriptor(artifactType=artifact_type, **extra))
    index = Blob.of(
        canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        OCI_INDEX,
    )
    registry.put_manifest(name, tag, index)
    return manifest.digest


def fetch(
    registry: Registry, name: str, subject: str, artifact_type: str
) -> list[dict[str, ArtifactFile]]:
    """Every artifact of `artifact_type` attached to `name@subject`, oldest first, each as
    title -> file. Each file's bytes are checked against their digest."""
    text = registry.get_manifest(name, referrers_tag(subject))
    listed = json.loads(text)["manifests"] if text else []
    found = []
    for entry in listed:
        if entry.get("artifactType") != artifact_type:
            continue
        manifest = json.loads(registry.get_manifest(name, entry["digest"]) or "{}")
        files = {}
        for layer in manifest.get("layers", []):
            title = str(layer.get("annotations", {}).get(TITLE, ""))
            data = registry.get_blob(name, layer["digest"])
            files[title] = ArtifactFile(title, str(layer.get("mediaType", "")), data)
        found.append(files)
    return found


def delete_attached(registry: Registry, name: str, subject: str) -> None:
    """Delete every artifact attached to `name@subject`, and their referrers index."""
    text = registry.get_manifest(name, referrers_tag(subject))
    if text is None:
        return
    for entry in json.loads(text).get("manifests", []):
        registry.delete_manifest(name, entry["digest"])
    registry.delete_manifest(name, Blob.of(text.encode(), OCI_INDEX).digest)
