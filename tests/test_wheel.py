"""Installable like repo2docker or conda-lock: the built wheels in a fresh venv (no system
site-packages), used from a site's own repository of environments outside this checkout.

The wheels are built from a copy of the sources; pip takes the dependencies from the
package index and keeps them in its cache (~/.cache/pip), so reruns stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from buildtool.lock import LAB_ENV
from compat.vocabulary import ROLES
from devsupport import REPO
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.lockdata import DRIFTED
from devsupport.published import write_published
from devsupport.standin import StandIn

_SKIP = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
# What the checkout holds beside the product and must never ship in its wheels: the
# stand-in, the development support package, the tests and the benchmarks.
TEST_ONLY = {"standin", "devsupport", "tests", "bench"}


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """Only the venv on PATH and nothing that points back into this checkout; the lab
    named, as its locks are the stand-in's."""
    return {
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        LAB_ENV: "1",
    }


def _venv(path: Path, *wheels: Path) -> Path:
    _run(sys.executable, "-m", "venv", path, cwd=path.parent)
    assert "include-system-site-packages = false" in (path / "pyvenv.cfg").read_text()
    _run(path / "bin" / "python", "-m", "pip", "install", "-q", *wheels, cwd=path.parent)
    return path


def _installed(venv: Path) -> set[str]:
    listed = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=json", cwd=venv)
    return {entry["name"].lower() for entry in json.loads(listed)} - {"pip", "setuptools"}


def _unexpected(wheel: Path, package: str) -> list[str]:
    """The files of `wheel` that are neither under `package/` nor its .dist-info, or that
    sit under a folder named like something test-only."""
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info/"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    return [
        name
        for name in names
        if not name.startswith((f"{package}/", dist_info))
        or TEST_ONLY & set(PurePosixPath(name).parts[:-1])
    ]


def _site(tmp_path: Path) -> Path:
    """A site's own repository: environment folders at its top, no `environments/`."""
    site = tmp_path / "site"
    for name in ("base", "e2e"):
        (site / name).mkdir(parents=True)
        shutil.copy2(REPO / "environments" / name / "env.yaml", site / name / "env.yaml")
    return site


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """daskhub-images and daskhub-compat, built from a copy of the working tree (what a
    site's checkout holds: the test and development folders too)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("buildtool", "dockerfiles", "compat", "devsupport", "tests", "bench"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=_SKIP)
    dist = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        dist,
        ".",
        "./compat",
        cwd=src,
    )
    built = {path.name.split("-")[0]: path for path in dist.glob("*.whl")}
    assert set(built) == {"daskhub_images", "daskhub_compat"}
    return built


@pytest.fixture(scope="module")
def venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("tool") / "venv", *wheels.values())


def test_the_installed_tool_locks_and_renders_a_site_repository(
    venv: Path, solver_channel: str, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    env = _clean_env(venv, tmp_path)
    where = _run("python", "-c", "import buildtool; print(buildtool.__file__)", cwd=site, env=env)
    assert Path(where.strip()).is_relative_to(venv)

    assert _run("buildtool", "list", "--all", cwd=site, env=env).split() == ["e2e"]
    _run("buildtool", "lock", "e2e", "--channel", solver_channel, cwd=site, env=env)
    assert (site / "e2e" / "conda-lock.yml").is_file()
    _run("buildtool", "render", "e2e", "--registry", "reg.example:5000/ns", cwd=site, env=env)
    out = site / "build" / "e2e"
    system = (out / "linux-64" / "system.Dockerfile").read_text()
    assert "\nFROM " in system and "FROM worker AS notebook" in system  # the packaged template

    # The same inputs render the same pair (same content tags) as this checkout's tool.
    checkout = tmp_path / "checkout"
    shutil.copytree(site, checkout / "environments", ignore=shutil.ignore_patterns("build"))
    render = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "render",
        "e2e",
        "--registry",
        "reg.example:5000/ns",
    ]
    _run(*render, cwd=checkout, env={**os.environ, "PYTHONPATH": str(REPO)})
    installed = json.loads((out / "render.json").read_text())
    from_checkout = json.loads((checkout / "build" / "e2e" / "render.json").read_text())
    for rendered in (installed, from_checkout):
        del rendered["directory"]  # where each wrote it
    assert installed == from_checkout
    dockerfile = (checkout / "build" / "e2e" / "linux-64" / "system.Dockerfile").read_text()
    assert system == dockerfile

    # The site's settings sit at its top too, and reach the generated Helm values.
    (site / "site.yaml").write_text(
        "cluster_options:\n  worker_cores: {min: 1, default: 2, max: 3}\n"
    )
    write_published(site / "build", "e2e")
    _run("buildtool", "helm-values", cwd=site, env=env)
    values = (site / "deploy" / "daskhub-values.yaml").read_text()
    assert 'Float("worker_cores", default=2.0, min=1.0, max=3.0' in values

    # `--root` from anywhere; `buildtool test` has its runner and its tests.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _run("buildtool", "--root", site, "list", "e2e", cwd=elsewhere, env=env).split() == [
        "e2e"
    ]
    check = (
        "import pytest, testinfra\n"
        "from buildtool.image.testing import TESTS\n"
        "assert (TESTS / 'test_image.py').is_file() and (TESTS / 'conftest.py').is_file()\n"
    )
    _run("python", "-c", check, cwd=elsewhere, env=env)


def test_the_wheels_ship_the_product_and_nothing_test_only(wheels: dict[str, Path]) -> None:
    """Only buildtool/ (compat/ for the checker) and the metadata: no stand-in, no
    devsupport, no tests, no benchmarks."""
    for dist, package in (("daskhub_images", "buildtool"), ("daskhub_compat", "compat")):
        assert _unexpected(wheels[dist], package) == [], dist
    with zipfile.ZipFile(wheels["daskhub_images"]) as archive:
        names = set(archive.namelist())
    # What the tool needs at run time is there: its templates and its image tests.
    assert {
        "buildtool/cli.py",
        "buildtool/common/cachedir.py",
        "buildtool/image/suite/test_image.py",
        "buildtool/image/dockerfiles/system.Dockerfile.j2",
    } <= names


def test_the_tools_dependencies_are_what_it_imports(venv: Path) -> None:
    names = _installed(venv)
    assert {"daskhub-images", "daskhub-compat", "py-rattler", "pytest-testinfra"} <= names
    assert not {"docker", "conda-lock"} & names


def test_the_checker_installs_alone_and_light(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = _venv(tmp_path / "venv", wheels["daskhub_compat"])
    assert _installed(venv) == {"daskhub-compat", "pyyaml"}
    env = _clean_env(venv, tmp_path)
    result = subprocess.run(
        [
            "daskhub-compat",
            "diff",
            f"lock:{DRIFTED}#notebook",
            f"lock:{DRIFTED}#worker",
            "--format",
            "json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 1), result.stderr
    assert json.loads(result.stdout)


@pytest.mark.docker
def test_the_installed_tool_builds_and_tests_the_e2e_pair(
    venv: Path, standin: StandIn, tmp_path: Path
) -> None:
    """lock, build (which renders) and the image tests, against the conda-forge stand-in."""
    require_docker()
    site = _site(tmp_path)
    env = _clean_env(venv, tmp_path)
    registry = f"localhost/wheel{uuid.uuid4().hex[:8]}"
    images = ["--base-image", standin.base_image]
    try:
        _run("buildtool", "lock", "e2e", "--channel", standin.channel, cwd=site, env=env)
        _run(
            "buildtool",
            "build",
            "e2e",
            "--quiet",
            "--registry",
            registry,
            *images,
            cwd=site,
            env=env,
        )
        rendered = json.loads((site / "build" / "e2e" / "render.json").read_text())
        for role in ROLES:
            ref = f"{rendered[role]['repository']}:{rendered[role]['tag']}"
            assert ref.startswith(registry + "/")
            docker("image", "inspect", ref)
        # The installed tool's own image tests, with its pytest and testinfra.
        out = _run("buildtool", "test", "e2e", cwd=site, env=env)
        assert "e2e: image tests passed" in out
    finally:
        remove_local_tags(registry + "/")
