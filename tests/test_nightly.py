"""`make nightly` over the seed environments, three nights, from a copy of this checkout.

1. The first night publishes every seed (in parallel, JOBS=2) and regenerates the catalog and
   the Helm values; `buildtool plan` then lists nothing.
2. e2e's spec changes: the second night rebuilds e2e, and only e2e.
3. e2e's image tests fail while physlite's spec changes: physlite is published, e2e is not,
   and the Helm values keep e2e's digests from the second night.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import yaml

from devsupport import REPO
from devsupport.dockercli import remove_local_tags, require_docker
from devsupport.localregistry import registry_credentials

SEEDS = ("e2e", "ml", "physlite", "pyhep")


def _checkout(dest: Path) -> Path:
    """The tracked files, symlinks as symlinks (buildtool/image/dockerfiles is one)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        source = REPO / name
        if name and (source.is_file() or source.is_symlink()):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def _make(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the copy, as from a shell or a CI step: not as a sub-make of the
    `make check` that runs this suite (a sub-make prints "Entering directory" lines)."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    }
    return subprocess.run(
        ["make", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        # The copy must not re-point the editable install that the rest of the suite uses.
        env={**inherited, "LAB": "1", "DASKHUB_KEEP_INSTALL": "1"},
    )


def _published(checkout: Path) -> dict[str, dict]:
    return {
        name: json.loads((checkout / "build" / name / "published.json").read_text())
        for name in SEEDS
    }


def _helm_images(checkout: Path) -> dict[str, str]:
    values = yaml.safe_load((checkout / "deploy" / "daskhub-values.yaml").read_text())
    profiles = values["jupyterhub"]["singleuser"]["profileList"]
    return {p["slug"]: p["kubespawner_override"]["image"] for p in profiles}


def _edit(spec: Path, old: str, new: str) -> None:
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))


def test_three_nights(tmp_path: Path) -> None:
    require_docker()
    credentials = registry_credentials()
    checkout = _checkout(tmp_path / "checkout")
    registry = f"{credentials.registry}/n{uuid.uuid4().hex[:10]}"
    night = ["nightly", f"REGISTRY={registry}", f"ENVS={' '.join(SEEDS)}", "JOBS=2"]
    try:
        first = _make(checkout, *night)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        published = _published(checkout)
        notebooks = {name: published[name]["images"]["notebook"] for name in SEEDS}
        for name, image in notebooks.items():
            assert image["repository"].startswith(f"{registry}/"), name
            assert f"tagged {image['repository']}:" in first.stderr, name  # publish's log
        images = (checkout / "catalog" / "images.md").read_text()
        assert all(image["ref"] in images for image in notebooks.values())
        helm = _helm_images(checkout)
        offered = [name for name in SEEDS if name != "e2e"]  # site.yaml hides the check pair
        assert helm == {name: published[name]["images"]["notebook"]["ref"] for name in offered}
        # Its stdout is the JSON alone, as a CI matrix step pipes it.
        plan = _make(checkout, "plan", f"REGISTRY={registry}", f"ENVS={' '.join(SEEDS)}")
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout) == {"include": []}

        e2e = checkout / "environments" / "e2e" / "env.yaml"
        _edit(e2e, "extends: base\n", "extends: base\nenv: {NIGHT: two}\n")
        second = _make(checkout, *night)
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        assert f"tagged {registry}/jupyter-e2e:" in second.stderr
        assert second.stderr.count("tagged ") == 2  # e2e's two images, nothing else
        after_second = _published(checkout)
        assert after_second["e2e"]["content_tag"] != published["e2e"]["content_tag"]
        for name in ("ml", "physlite", "pyhep"):
            assert after_second[name] == published[name], name

        _edit(e2e, "env: {NIGHT: two}\n", "env: {NIGHT: three}\nimports: [no_such_module]\n")
        physlite = checkout / "environments" / "physlite" / "env.yaml"
        _edit(physlite, "extends: base\n", "extends: base\nenv: {NIGHT: three}\n")
        third = _make(checkout, *night)
        assert third.returncode != 0
        assert "image tests failed for e2e" in third.stdout + third.stderr
        after_third = _published(checkout)
        assert after_third["e2e"] == after_second["e2e"]  # its last good publish
        assert after_third["physlite"]["content_tag"] != after_second["physlite"]["content_tag"]
        helm = _helm_images(checkout)
        assert "e2e" not in helm
        assert helm["physlite"] == after_third["physlite"]["images"]["notebook"]["ref"]
    finally:
        remove_local_tags(registry + "/")
