"""`buildtool lock`: one real rattler solve per environment, one lock for both images."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rattler

from buildtool.lock import read_lock, solve_with_rattler
from buildtool.spec import load_environment
from devsupport.buildtool_cli import buildtool


def _lock(envroot: Path, name: str, channel: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = buildtool(
        "--root", envroot, "lock", name, "--channel", channel, *extra, cwd=envroot.parent
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("name", ["pyhep", "ml", "physlite"])
def test_seed_environment_locks_for_real(name: str, envroot: Path, solver_channel: str) -> None:
    _lock(envroot, name, solver_channel)
    lock = read_lock(envroot / name / "conda-lock.yml")
    notebook = lock.packages("notebook", "linux-64")
    worker = lock.packages("worker", "linux-64")
    assert all(len(p.hash.sha256) == 64 for p in lock.package)
    env = load_environment(envroot, name)
    assert {r.name for r in env.all_requirements()} <= {p.name for p in notebook}
    assert {p.hash.sha256 for p in worker} < {p.hash.sha256 for p in notebook}
    assert "jupyterlab" not in {p.name for p in worker}
    assert {"dask", "distributed", "coffea" if name != "ml" else "root"} <= {p.name for p in worker}


def test_physlite_as_a_new_user_would(envroot: Path, solver_channel: str, tmp_path: Path) -> None:
    _lock(envroot, "physlite", solver_channel)
    path = envroot / "physlite" / "conda-lock.yml"
    first = path.read_bytes()
    assert first.startswith(b"# AUTO GENERATED")

    # conda-lock itself renders it, worker set by default and notebook set with -e.
    out = tmp_path / "render"
    out.mkdir()
    for extra in ([], ["-e", "notebook"]):
        template = f"{'nb' if extra else 'wk'}-{{platform}}.lock"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "conda_lock",
                "render",
                "-k",
                "explicit",
                "--filename-template",
                template,
                *extra,
                str(path),
            ],
            cwd=out,
            check=True,
            capture_output=True,
        )
    urls = {
        kind: [ln for ln in (out / f"{kind}-linux-64.lock").read_text().splitlines() if "://" in ln]
        for kind in ("wk", "nb")
    }
    lock = read_lock(path)
    assert len(urls["wk"]) == len(lock.packages("worker", "linux-64"))
    assert len(urls["nb"]) == len(lock.packages("notebook", "linux-64"))

    # rattler reads it too, with every package's sha256.
    lockfile = rattler.LockFile.from_path(path)
    env = lockfile.default_environment()
    (platform,) = [p for p in env.platforms() if p.name == "linux-64"]
    records = env.conda_repodata_records_for_platform(platform)
    assert {r.sha256.hex() for r in records} == {p.hash.sha256 for p in lock.package}

    # Nothing changed: the second run writes a byte-identical file and says so.
    second = _lock(envroot, "physlite", solver_channel)
    assert "lock unchanged" in second.stdout
    assert path.read_bytes() == first


def test_worker_gets_the_union_version_not_its_own_solve(
    envroot: Path, solver_channel: str
) -> None:
    env = load_environment(envroot, "physlite")
    # Solved alone, the worker would take the newest tornado ...
    alone = solve_with_rattler([r.spec for r in env.roots("worker")], [solver_channel], "linux-64")
    assert {p.name: p.version for p in alone}["tornado"] == "6.4.1"
    # ... but jupyterhub-singleuser in the notebook caps it, and the one solve rules both.
    _lock(envroot, "physlite", solver_channel)
    lock = read_lock(envroot / "physlite" / "conda-lock.yml")
    worker = {p.name: p for p in lock.packages("worker", "linux-64")}
    notebook = {p.name: p for p in lock.packages("notebook", "linux-64")}
    assert worker["tornado"].version == "6.3.3"
    assert worker["tornado"].hash.sha256 == notebook["tornado"].hash.sha256
    for name, package in worker.items():
        assert notebook[name] == package


def test_solver_backs_off_a_conflict(envroot: Path, solver_channel: str) -> None:
    _lock(envroot, "ml", solver_channel)
    versions = {p.name: p.version for p in read_lock(envroot / "ml" / "conda-lock.yml").package}
    assert versions["numpy"] == "1.24.4"  # wasserstein needs numpy <1.25; 2.0.1 is newest


def test_unsolvable_spec_names_the_conflict_and_keeps_the_lock(
    envroot: Path, solver_channel: str
) -> None:
    _lock(envroot, "ml", solver_channel)
    path = envroot / "ml" / "conda-lock.yml"
    before = path.read_bytes()
    spec = envroot / "ml" / "env.yaml"
    spec.write_text(spec.read_text().replace("  - energyflow\n", "  - energyflow\n  - numpy >=2\n"))
    result = buildtool(
        "--root", envroot, "lock", "ml", "--channel", solver_channel, cwd=envroot.parent
    )
    assert result.returncode == 1
    first_line = result.stderr.splitlines()[0]
    assert "unsolvable" in first_line and "numpy" in first_line and "wasserstein" in first_line
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_check_detects_a_changed_parent_without_solving(envroot: Path, solver_channel: str) -> None:
    _lock(envroot, "physlite", solver_channel)
    ok = buildtool("--root", envroot, "lock", "--check", "physlite", cwd=envroot.parent)
    assert ok.returncode == 0, ok.stderr
    base = envroot / "base" / "env.yaml"
    base.write_text(base.read_text().replace("  - pandas\n", "  - pandas\n  - zict\n"))
    stale = buildtool("--root", envroot, "lock", "--check", "physlite", cwd=envroot.parent)
    assert stale.returncode == 1
    assert "out of date" in stale.stderr and "base/env.yaml" in stale.stderr


def test_relock_writes_a_diff_per_image(envroot: Path, solver_channel: str) -> None:
    _lock(envroot, "physlite", solver_channel)
    spec = envroot / "physlite" / "env.yaml"
    spec.write_text(spec.read_text().replace("  - aiohttp\n", "  - aiohttp\n  - toolz 0.11.*\n"))
    notebook_only = envroot / "base" / "env.yaml"
    notebook_only.write_text(
        notebook_only.read_text().replace("    - ipywidgets\n", "    - ipywidgets ==8.1.2\n")
    )
    result = _lock(envroot, "physlite", solver_channel)
    assert (
        "worker   linux-64      downgraded toolz 0.12.1 (pyhd8ed1ab_0) -> 0.11.2" in result.stdout
    )
    assert "notebook linux-64      downgraded ipywidgets" in result.stdout
    assert "worker   linux-64      downgraded ipywidgets" not in result.stdout
    markdown = (envroot.parent / "build" / "physlite" / "lock-diff.md").read_text()
    assert "#### worker image" in markdown
    assert (
        "| toolz | linux-64 | downgraded | 0.12.1 (pyhd8ed1ab_0) | 0.11.2 (pyhd8ed1ab_0) |"
        in markdown
    )


def test_rattler_solve_is_real(solver_channel: str) -> None:
    """Guard against a channel that solves trivially: rattler sees every version."""
    records = asyncio.run(
        rattler.solve(
            sources=[rattler.Channel(solver_channel)],
            specs=["numpy <2"],
            platforms=["linux-64", "noarch"],
        )
    )
    assert {r.name.normalized: str(r.version) for r in records}["numpy"] == "1.26.4"


CUDA_SPEC = """\
description: TensorFlow on GPU nodes
dependencies:
  - tensorflow>=2.17.0=cuda12*   # as pangeo's ml-notebook writes it
"""


def test_cuda_build_locks_with_declared_cuda(
    envroot: Path, metadata_channel: str, tmp_path: Path
) -> None:
    (envroot / "tf").mkdir()
    spec = envroot / "tf" / "env.yaml"
    spec.write_text(CUDA_SPEC + "virtual_packages: {__cuda: '12.6'}\n")
    _lock(envroot, "tf", metadata_channel)
    path = envroot / "tf" / "conda-lock.yml"
    lock = read_lock(path)
    worker = {p.name: p for p in lock.packages("worker", "linux-64")}
    assert worker["tensorflow"].build.startswith("cuda12")
    assert worker["tensorflow-base"].dependencies["__cuda"] == ""
    assert lock.metadata.custom_metadata == {
        "virtual_packages.linux-64": "__archspec=1 __cuda=12.6 __glibc=2.36 __linux=5.10 __unix=0"
    }
    # conda-lock reads the recorded metadata and renders the lock.
    subprocess.run(
        [sys.executable, "-m", "conda_lock", "render", "-k", "explicit", str(path)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    # The declaration is part of what the lock was made from.
    spec.write_text(CUDA_SPEC + "virtual_packages: {__cuda: '12.8'}\n")
    stale = buildtool("--root", envroot, "lock", "--check", "tf", cwd=envroot.parent)
    assert stale.returncode == 1 and "out of date" in stale.stderr


def test_undeclared_cuda_is_one_line_naming_package_and_field(
    envroot: Path, metadata_channel: str
) -> None:
    (envroot / "tf").mkdir()
    (envroot / "tf" / "env.yaml").write_text(CUDA_SPEC)
    result = buildtool(
        "--root", envroot, "lock", "tf", "--channel", metadata_channel, cwd=envroot.parent
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: environment 'tf': tensorflow 2.19.1 needs __cuda, which no node declares on "
        f"linux-64; add it to virtual_packages in {envroot / 'tf' / 'env.yaml'}"
    ]
    assert not (envroot / "tf" / "conda-lock.yml").exists()


def test_too_old_declared_cuda_names_the_declaration(envroot: Path, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    record = {
        "name": "gpulib",
        "version": "1.0",
        "build": "cuda12_0",
        "build_number": 0,
        "depends": ["__cuda >=12"],
        "subdir": "linux-64",
        "md5": "0" * 32,
        "sha256": "0" * 64,
    }
    for subdir, packages in (("linux-64", {"gpulib-1.0-cuda12_0.conda": record}), ("noarch", {})):
        (channel / subdir).mkdir(parents=True)
        repodata = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": packages}
        (channel / subdir / "repodata.json").write_text(json.dumps(repodata))
    (envroot / "old").mkdir()
    (envroot / "old" / "env.yaml").write_text(
        "description: x\ndependencies: [gpulib]\nvirtual_packages: {__cuda: '11.8'}\n"
    )
    result = buildtool(
        "--root", envroot, "lock", "old", "--channel", channel.as_uri(), cwd=envroot.parent
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: environment 'old': gpulib 1.0 needs __cuda >=12, but __cuda 11.8 is declared "
        f"on linux-64; change it in virtual_packages in {envroot / 'old' / 'env.yaml'}"
    ]


def test_ml_gpu_locks_with_the_cuda_build_in_the_worker(
    envroot: Path, metadata_channel: str
) -> None:
    _lock(envroot, "ml-gpu", metadata_channel)
    lock = read_lock(envroot / "ml-gpu" / "conda-lock.yml")
    worker = {p.name: p for p in lock.packages("worker", "linux-64")}
    notebook = {p.name: p for p in lock.packages("notebook", "linux-64")}
    assert worker["pytorch"].build.startswith("cuda12")
    assert worker["pytorch"] == notebook["pytorch"]
    assert {"cuda-version", "keras", "scikit-learn", "dask-gateway"} <= set(worker)
    assert worker["python"].version.startswith("3.11.")
    assert "jupyterlab" in notebook and "jupyterlab" not in worker
    assert "__cuda=12.6" in lock.metadata.custom_metadata["virtual_packages.linux-64"]

    # Without its declaration, one line names the package (every version the solver tried).
    spec = envroot / "ml-gpu" / "env.yaml"
    text = spec.read_text()
    spec.write_text(text[: text.index("virtual_packages:")] + text[text.index("notebook:") :])
    result = buildtool(
        "--root", envroot, "lock", "ml-gpu", "--channel", metadata_channel, cwd=envroot.parent
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: environment 'ml-gpu': pytorch 2.3.1 | 2.10.0 needs __cuda, which no node "
        f"declares on linux-64; add it to virtual_packages in {spec}"
    ]


def test_channel_pinned_spec_locks_against_the_channel_given_instead(
    envroot: Path, metadata_channel: str
) -> None:
    # `--channel` replaces the spec's channels, the ones named in its specs too.
    (envroot / "pinned").mkdir()
    (envroot / "pinned" / "env.yaml").write_text(
        "description: x\ndependencies: ['conda-forge::numpy>=1.26', 'python=3.12']\n"
    )
    _lock(envroot, "pinned", metadata_channel)
    lock = read_lock(envroot / "pinned" / "conda-lock.yml")
    assert "numpy" in {p.name for p in lock.packages("worker", "linux-64")}
    assert all(p.url.startswith(metadata_channel) for p in lock.package)


def test_an_empty_channel_is_refused_not_read_as_the_current_folder(envroot: Path) -> None:
    """A failed `$(...)` in a Makefile gives `--channel ""`; that must not lock anything."""
    result = buildtool("--root", envroot, "lock", "e2e", "--channel", "", cwd=envroot.parent)
    assert result.returncode == 2
    assert "an empty channel was given" in result.stderr
    assert not (envroot / "e2e" / "conda-lock.yml").exists()
