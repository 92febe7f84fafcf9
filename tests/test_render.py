"""`buildtool render`: both Dockerfiles and their context come from the one lock."""

from __future__ import annotations

import hashlib
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
    assert set(_explicit(out / "notebook-only.explicit")) == set(notebook) - set(worker)
    assert all("#sha256:" in line and line.startswith("file:///pkgs/") for line in notebook)
    assert len(list((out / "pkgs").rglob("*.tar.bz2"))) == len(notebook)

    dockerfiles = {role: (out / role / "Dockerfile").read_text() for role in ("worker", "notebook")}
    for text in dockerfiles.values():
        assert text.startswith("# AUTO GENERATED")
        assert 'ENTRYPOINT ["tini"' in text or "FROM worker" in text
    assert "FROM ${WORKER_IMAGE} AS worker" in dockerfiles["notebook"]
    assert "useradd --create-home --uid 1000 --gid 100" in dockerfiles["worker"]
    assert "apt-get install" in dockerfiles["notebook"] and " file " in dockerfiles["notebook"]
    assert "ATLAS_LOCAL_ROOT_BASE" in dockerfiles["notebook"]
    assert "ATLAS_LOCAL_ROOT_BASE" not in dockerfiles["worker"]
    assert "micromamba create" in dockerfiles["worker"]  # physlite's installer
    assert "micromamba install" in dockerfiles["notebook"]
    assert meta["worker"] == {"repository": "reg.example:5000/ns/dask-gateway-physlite",
                              "tag": meta["content_tag"]}  # fmt: skip


def test_content_tag_is_a_function_of_the_inputs(locked: Path, solver_channel: str) -> None:
    first = _render(locked)["content_tag"]
    assert _render(locked)["content_tag"] == first
    rattler = _render(locked, "--installer", "rattler")
    assert rattler["content_tag"] != first
    dockerfile = (locked.parent / "build" / "physlite" / "worker" / "Dockerfile").read_text()
    assert "install.py /build/worker.explicit" in dockerfile
    spec = locked / "physlite" / "env.yaml"
    spec.write_text(spec.read_text().replace("  - aiohttp\n", "  - aiohttp\n  - toolz 0.11.*\n"))
    relock = buildtool("--root", locked, "lock", "physlite", "--channel", solver_channel,
                       cwd=locked.parent)  # fmt: skip
    assert relock.returncode == 0
    assert _render(locked)["content_tag"] not in (first, rattler["content_tag"])


def test_render_without_a_lock_says_so(envroot: Path) -> None:
    result = buildtool("--root", envroot, "render", "physlite", cwd=envroot.parent)
    assert result.returncode == 1
    assert "no lock file; run `buildtool lock` first" in result.stderr


def test_a_rebuilt_channel_archive_replaces_the_stale_link(tmp_path: Path) -> None:
    from buildtool.lockfile import LockedPackage, PackageHash
    from buildtool.render import _link_local_archives

    source = tmp_path / "channel" / "noarch" / "pkg-1.0-0.tar.bz2"
    source.parent.mkdir(parents=True)

    def locked(content: bytes) -> LockedPackage:
        source.unlink(missing_ok=True)  # a rebuild writes a new file at the same path
        source.write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        return LockedPackage(name="pkg", version="1.0", platform="linux-64", url=source.as_uri(),
                             hash=PackageHash(md5="0" * 32, sha256=digest),
                             category="main", optional=False)  # fmt: skip

    pkgs = tmp_path / "pkgs"
    _link_local_archives([locked(b"first build")], pkgs)
    _link_local_archives([locked(b"second build")], pkgs)
    assert (pkgs / "noarch" / source.name).read_bytes() == b"second build"
