"""`buildtool render`: both Dockerfiles and their context come from the one lock."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from buildtool.image import RenderedPair
from devsupport.buildtool_cli import buildtool


@pytest.fixture
def locked(envroot: Path, solver_channel: str) -> Path:
    result = buildtool(
        "--root", envroot, "lock", "physlite", "--channel", solver_channel, cwd=envroot.parent
    )
    assert result.returncode == 0, result.stderr
    return envroot


def _render(root: Path, *extra: str) -> dict:
    result = buildtool(
        "--root",
        root,
        "render",
        "physlite",
        "--registry",
        "reg.example:5000/ns",
        *extra,
        cwd=root.parent,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((root.parent / "build" / "physlite" / "render.json").read_text())


def test_render_writes_the_system_stages_of_a_matched_pair(locked: Path) -> None:
    meta = _render(locked)
    out = locked.parent / "build" / "physlite"
    assert (out / "conda-lock.yml").read_text() == (
        locked / "physlite" / "conda-lock.yml"
    ).read_text()
    assert meta["platforms"] == ["linux-64"]
    assert meta["base_images"] == {"linux-64": "debian:bookworm-slim"}
    text = (out / "linux-64" / "system.Dockerfile").read_text()
    assert text.startswith("# AUTO GENERATED")
    worker, notebook = text.split("FROM worker AS notebook")
    assert "FROM debian:bookworm-slim AS worker" in worker
    assert "useradd --create-home --uid 1000 --gid 100" in worker
    assert 'ENTRYPOINT ["tini"' in worker
    assert "apt-get install" in notebook and " file " in notebook
    assert "ATLAS_LOCAL_ROOT_BASE" in notebook and "ATLAS_LOCAL_ROOT_BASE" not in worker
    # apt's lists and archives are cache mounts, per platform, never in a layer
    assert "--mount=type=cache,id=daskhub-apt-lists-linux-64,target=/var/lib/apt/lists" in text
    # no conda package is installed by the Dockerfile: the assembly adds them as layers
    assert "rattler" not in text and "conda-lock.yml" not in text
    # nothing in it follows from the lock, so a new lock reuses the system stages; the
    # build puts the lock's labels and the matched worker (by content tag) in the config
    worker_ref = f"reg.example:5000/ns/dask-gateway-physlite:{meta['content_tag']}"
    assert meta["lock_sha256"] not in text and meta["content_tag"] not in text
    pair = RenderedPair.load(locked.parent / "build", "physlite")
    assert pair.lock_config("notebook") == (
        {"io.daskhub.lock-sha256": meta["lock_sha256"], "io.daskhub.worker-image": worker_ref},
        {"DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE": worker_ref},
    )
    assert pair.lock_config("worker") == ({"io.daskhub.lock-sha256": meta["lock_sha256"]}, {})
    assert "created" not in text and "revision" not in text
    assert meta["worker"] == {
        "repository": "reg.example:5000/ns/dask-gateway-physlite",
        "tag": meta["content_tag"],
    }


def test_base_image_per_platform(locked: Path) -> None:
    meta = _render(locked, "--base-image", "a:1", "--base-image", "linux-aarch64=b:2")
    assert meta["base_images"] == {"linux-64": "a:1"}
    meta = _render(locked, "--base-image", "linux-64=c:3")
    assert meta["base_images"] == {"linux-64": "c:3"}


def test_content_tag_is_a_function_of_the_inputs(locked: Path, solver_channel: str) -> None:
    first = _render(locked)["content_tag"]
    assert _render(locked)["content_tag"] == first
    other_base = _render(locked, "--base-image", "debian:bookworm-slim@sha256:" + "0" * 64)
    assert other_base["content_tag"] != first
    spec = locked / "physlite" / "env.yaml"
    spec.write_text(spec.read_text().replace("  - aiohttp\n", "  - aiohttp\n  - toolz 0.11.*\n"))
    relock = buildtool(
        "--root", locked, "lock", "physlite", "--channel", solver_channel, cwd=locked.parent
    )
    assert relock.returncode == 0
    assert _render(locked)["content_tag"] not in (first, other_base["content_tag"])


def test_render_without_a_lock_says_so(envroot: Path) -> None:
    result = buildtool("--root", envroot, "render", "physlite", cwd=envroot.parent)
    assert result.returncode == 1
    assert "no lock file; run `buildtool lock` first" in result.stderr


def test_render_refuses_a_lock_that_a_build_cannot_fetch(
    locked: Path, solver_channel: str, tmp_path: Path
) -> None:
    """A file:// channel exists only on the host: refused with one clear line."""
    lock = locked / "physlite" / "conda-lock.yml"
    lock.write_text(lock.read_text().replace(solver_channel, (tmp_path / "channel").as_uri()))
    result = buildtool("--root", locked, "render", "physlite", cwd=locked.parent)
    assert result.returncode == 1
    assert "which a build cannot fetch" in result.stderr and "file://" in result.stderr


# Values a spec may hold (one line each) that a naive `KEY="{{ value }}"` would mangle or
# end early: quotes, backslashes (a trailing one too), variables, comments.
AWKWARD = ['a"b', "a\\b", "end\\", '\\"', "$HOME", "${X:-y}", "\\$", "it's", "#x", "a  b"]


@pytest.mark.docker
def test_buildkit_reads_every_quoted_value_back_as_it_was(tmp_path: Path) -> None:
    """The real parser is BuildKit's: each ENV and LABEL value that `dockerfile_string`
    writes comes back in the image config exactly as the spec held it."""
    from buildtool.image import docker, docker_cli, dockerfile_string
    from devsupport.dockercli import require_docker

    require_docker()
    lines = ["FROM scratch"]
    lines += [f"ENV K{i}={dockerfile_string(v)}" for i, v in enumerate(AWKWARD)]
    lines += [f"LABEL l{i}={dockerfile_string(v)}" for i, v in enumerate(AWKWARD)]
    (tmp_path / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = "daskhub-test/quoting:latest"
    build = [docker_cli(), "build", "-q", "-t", tag, str(tmp_path)]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    subprocess.run(build, check=True, env=env, capture_output=True, timeout=300)
    try:
        config = json.loads(docker("image", "inspect", tag))[0]["Config"]
    finally:
        docker("image", "rm", tag)
    read = dict(item.split("=", 1) for item in config["Env"] or [])
    for i, value in enumerate(AWKWARD):
        assert read[f"K{i}"] == value
        assert config["Labels"][f"l{i}"] == value
