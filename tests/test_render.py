"""`buildtool render`: both Dockerfiles and their context come from the one lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildtool.lockfile import read_lock
from tests.conftest import buildtool


@pytest.fixture
def locked(envroot: Path, solver_channel: str) -> Path:
    result = buildtool("--root", envroot, "lock", "physlite", "--channel", solver_channel,
                       cwd=envroot.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return envroot


def _render(root: Path, *extra: str) -> dict:
    result = buildtool("--root", root, "render", "physlite", "--registry", "reg.example:5000/ns",
                       *extra, cwd=root.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads((root.parent / "build" / "physlite" / "render.json").read_text())


def _explicit(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if "://" in line]


def test_render_writes_a_matched_pair(locked: Path) -> None:
    meta = _render(locked)
    out = locked.parent / "build" / "physlite"
    lock = read_lock(locked / "physlite" / "conda-lock.yml")
    worker, notebook = _explicit(out / "worker.explicit"), _explicit(out / "notebook.explicit")
    assert len(worker) == len(lock.packages("worker", "linux-64"))
    assert len(notebook) == len(lock.packages("notebook", "linux-64"))
    assert set(worker) < set(notebook)
    # every archive is fetched from its locked channel URL, as from conda-forge
    urls = {f"{p.url}#sha256:{p.hash.sha256}" for p in lock.packages("notebook", "linux-64")}
    assert set(notebook) == urls and all(line.startswith("http://") for line in notebook)
    assert (out / "conda-lock.yml").read_text() == (
        locked / "physlite" / "conda-lock.yml"
    ).read_text()
    assert not (out / "pkgs").exists()

    dockerfiles = {role: (out / role / "Dockerfile").read_text() for role in ("worker", "notebook")}
    for text in dockerfiles.values():
        assert text.startswith("# AUTO GENERATED")
        assert 'ENTRYPOINT ["tini"' in text or "FROM worker" in text
    assert "FROM ${WORKER_IMAGE} AS worker" in dockerfiles["notebook"]
    assert "useradd --create-home --uid 1000 --gid 100" in dockerfiles["worker"]
    assert "apt-get install" in dockerfiles["notebook"] and " file " in dockerfiles["notebook"]
    assert "ATLAS_LOCAL_ROOT_BASE" in dockerfiles["notebook"]
    assert "ATLAS_LOCAL_ROOT_BASE" not in dockerfiles["worker"]
    # py-rattler bootstraps the environment's Python, which installs the rest in place
    assert "python3 /build/install.py /build/conda-lock.yml linux-64" in dockerfiles["worker"]
    assert "/build/worker.explicit /srv/conda/envs/notebook --cache" in dockerfiles["worker"]
    assert "--python-only" in dockerfiles["worker"]
    assert "/build/notebook.explicit /srv/conda/envs/notebook --cache" in dockerfiles["notebook"]
    for text in dockerfiles.values():  # one package cache, shared by every build
        assert "--mount=type=cache,id=daskhub-rattler-pkgs," in text
    # the notebook layer never copies the worker's environment
    assert "COPY --from=worker" not in dockerfiles["notebook"]
    assert meta["worker"] == {"repository": "reg.example:5000/ns/dask-gateway-physlite",
                              "tag": meta["content_tag"]}  # fmt: skip


def test_content_tag_is_a_function_of_the_inputs(locked: Path, solver_channel: str) -> None:
    first = _render(locked)["content_tag"]
    assert _render(locked)["content_tag"] == first
    other_base = _render(locked, "--base-image", "debian:bookworm-slim@sha256:" + "0" * 64)
    assert other_base["content_tag"] != first
    spec = locked / "physlite" / "env.yaml"
    spec.write_text(spec.read_text().replace("  - aiohttp\n", "  - aiohttp\n  - toolz 0.11.*\n"))
    relock = buildtool("--root", locked, "lock", "physlite", "--channel", solver_channel,
                       cwd=locked.parent)  # fmt: skip
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
