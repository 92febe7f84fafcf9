"""`make nightly` against the local registry, twice, from a copy of this checkout.

The first run publishes the end-to-end pair (ENVS=e2e: the seed pairs are built by
tests/analyses) and regenerates docs/images.md and the Helm values; the second changes
nothing and pushes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import yaml

from buildtool.standin.dockercli import remove_local_tags, require_docker
from tests.conftest import REPO
from tests.support.registry import registry_credentials

GENERATED = ("docs/images.md", "deploy/daskhub-values.yaml", "environments/e2e/conda-lock.yml")


def _checkout(dest: Path) -> Path:
    """The tracked files, symlinks as symlinks (buildtool/dockerfiles is one)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        source = REPO / name
        if name and (source.is_file() or source.is_symlink()):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def _nightly(checkout: Path, registry: str) -> str:
    result = subprocess.run(
        ["make", "nightly", f"REGISTRY={registry}", "ENVS=e2e"],
        cwd=checkout, capture_output=True, text=True,
        # The copy must not re-point the editable install that the rest of the suite uses.
        env={**os.environ, "LOCAL": "1", "DASKHUB_KEEP_INSTALL": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_nightly_publishes_then_is_a_noop(tmp_path: Path) -> None:
    require_docker()
    credentials = registry_credentials()
    checkout = _checkout(tmp_path / "checkout")
    registry = f"{credentials.registry}/n{uuid.uuid4().hex[:10]}"

    try:
        _publish_twice(checkout, registry)
    finally:
        remove_local_tags(registry + "/")


def _publish_twice(checkout: Path, registry: str) -> None:
    first = _nightly(checkout, registry)
    assert "tagged" in first and "bytes pushed: 0" not in first
    images = (checkout / "docs" / "images.md").read_text()
    assert "| Jupyter image | Name | Worker image | Description |" in images
    assert f"{registry}/jupyter-e2e@sha256:" in images
    values = yaml.safe_load((checkout / "deploy" / "daskhub-values.yaml").read_text())
    (profile,) = values["jupyterhub"]["singleuser"]["profileList"]
    assert profile["kubespawner_override"]["image"].startswith(f"{registry}/jupyter-e2e@sha256:")
    before = {name: (checkout / name).read_bytes() for name in GENERATED}

    second = _nightly(checkout, registry)
    assert "already published: nothing built, nothing pushed" in second
    assert "bytes pushed: 0" in second
    assert "building" not in second
    assert {name: (checkout / name).read_bytes() for name in GENERATED} == before
