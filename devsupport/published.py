"""A publish record (`build/<name>/published.json`) written as the publish stage writes
it, for the tests of what reads it (docs, Helm values) without building or pushing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REGISTRY = "127.0.0.1:5000/daskhub"
CONTENT_TAG = "c-0123456789ab"
DATE_TAG = "20261125"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_published(build_dir: Path, name: str) -> dict:
    """`build/<name>/published.json` exactly as the publish stage writes it."""
    images = {}
    for image, repository in (("worker", "dask-gateway"), ("notebook", "jupyter")):
        repo = f"{REGISTRY}/{repository}-{name}"
        digest = _digest(f"{name} {image}")
        images[image] = {
            "repository": repo,
            "digest": digest,
            "tags": [CONTENT_TAG, DATE_TAG],
            "ref": f"{repo}@{digest}",
        }
    published = {
        "environment": name,
        "registry": REGISTRY,
        "content_tag": CONTENT_TAG,
        "date_tag": DATE_TAG,
        "lock_sha256": hashlib.sha256(name.encode()).hexdigest(),
        "images": images,
        "bytes_pushed": 12345,
        "published_at": "2026-11-25T13:40:00Z",
    }
    path = build_dir / name / "published.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(published, indent=2) + "\n")
    return published
