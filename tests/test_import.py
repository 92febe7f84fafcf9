"""`buildtool import`: real environment.yml files become specs that validate and lock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from buildtool.lock import read_lock
from buildtool.spec import load_environment
from devsupport import REPO
from devsupport.buildtool_cli import buildtool

ENVFILES = REPO / "tests" / "data" / "envfiles"
PANGEO = ENVFILES / "pangeo-docker-images"


def _import(envroot: Path, source: Path, name: str, *extra: str) -> Path:
    result = buildtool(
        "--root", envroot, "import", source, "--name", name, *extra, cwd=envroot.parent
    )
    assert result.returncode == 0, result.stderr
    path = envroot / name / "env.yaml"
    assert result.stdout.strip() == f"wrote {path}"
    return path


def _import_twice(envroot: Path, source: Path, name: str, *extra: str) -> str:
    """Import, then import again: the same file gives the same bytes."""
    first = _import(envroot, source, name, *extra).read_bytes()
    second = _import(envroot, source, name, *extra).read_bytes()
    assert first == second
    return first.decode()


def _lock(envroot: Path, name: str, channel: str) -> dict[str, tuple[str, str]]:
    result = buildtool("--root", envroot, "lock", name, "--channel", channel, cwd=envroot.parent)
    assert result.returncode == 0, result.stderr
    lock = read_lock(envroot / name / "conda-lock.yml")
    return {p.name: (p.version, p.build) for p in lock.packages("worker", "linux-64")}


def test_pangeo_images_import_as_one_extends_chain_and_lock(
    envroot: Path, metadata_channel: str
) -> None:
    # conda-lock merges pangeo's files (ml-notebook + pangeo-notebook + base-notebook);
    # here each file is one spec, extending the one it is merged with.
    base = _import_twice(envroot, PANGEO / "base-notebook" / "environment.yml", "pangeo-base")
    assert base.startswith(
        f"# Imported by `buildtool import` from {PANGEO / 'base-notebook' / 'environment.yml'}\n"
    )
    assert "description: Imported from environment.yml (conda environment 'notebook')\n" in base
    assert "channels" not in base  # conda-forge (without `nodefaults`) is the default
    assert "  - python 3.12.*\n  - pangeo-notebook 2026.1.21.*\n  - pip\n" in base

    pangeo = _import_twice(
        envroot,
        PANGEO / "pangeo-notebook" / "environment.yml",
        "pangeo",
        "--extends",
        "pangeo-base",
    )
    assert "extends: pangeo-base\n" in pangeo
    assert "  - argopy <1.4.0\n" in pangeo and "  - gcsfs >=2025\n" in pangeo

    ml = _import_twice(
        envroot, PANGEO / "ml-notebook" / "environment.yml", "pangeo-ml", "--extends", "pangeo"
    )
    # Normalized, in the file's order.
    assert ml.index("  - jaxlib >=0.4.31 cuda12*\n") < ml.index("  - tensorflow >=2.17.0 cuda12*\n")
    assert 'virtual_packages:\n  __cuda: "12.0"\n' in ml  # from virtual-packages.yml
    pytorch = _import_twice(
        envroot,
        PANGEO / "pytorch-notebook" / "environment.yml",
        "pangeo-pytorch",
        "--extends",
        "pangeo",
    )
    assert "  - pytorch >=2.7.0 cuda12*\n" in pytorch

    for name in ("pangeo-base", "pangeo", "pangeo-ml", "pangeo-pytorch"):
        load_environment(envroot, name)
        worker = _lock(envroot, name, metadata_channel)
        assert worker["python"][0].startswith("3.12.")
        assert "pangeo-notebook" in worker
    assert _lock(envroot, "pangeo-ml", metadata_channel)["tensorflow"][1].startswith("cuda12")
    assert _lock(envroot, "pangeo-pytorch", metadata_channel)["pytorch"][1].startswith("cuda12")


@pytest.mark.parametrize(
    ("source", "extends", "expect"),
    [
        # A JupyterHub image with ~100 packages, `~=` pins and `nodefaults`.
        (
            "cryointhecloud-hub-image/environment.yml",
            None,
            {"jupyterhub-singleuser": "5.", "qgis": "3.", "python": "3.12."},
        ),
        # A workshop's exact `name=version` pins.
        (
            "agu24workshop/environment.yml",
            None,
            {"gmt": "6.5.0", "pygmt": "0.13.0", "jupyterlab": "4.2.5"},
        ),
        # A course's file with a `prefix:`, on top of this project's base spec.
        (
            "dsci522-dockerfile-practice/environment.yaml",
            "base",
            {"numpy": "2.1.3", "python": "3.11.", "dask-gateway": ""},
        ),
    ],
)
def test_other_real_environment_files_import_and_lock(
    source: str, extends: str | None, expect: dict[str, str], envroot: Path, metadata_channel: str
) -> None:
    extra = ("--extends", extends) if extends else ()
    text = _import_twice(envroot, ENVFILES / source, "imported", *extra)
    env = load_environment(envroot, "imported")
    worker = _lock(envroot, "imported", metadata_channel)
    for name, version in expect.items():
        assert worker[name][0].startswith(version), (name, worker[name])
    if extends:
        # What base asks for in the same words (python=3.11, numpy) is left out; the
        # file's own pin on numpy stays.
        assert "python" not in text and [r.spec for r in env.dependencies[-1:]] == ["numpy 2.1.3.*"]
        assert env.files[0].parent.name == "base"


def test_unpinned_pip_entries_are_refused_one_line_each_and_nothing_written(
    envroot: Path,
) -> None:
    # As in pangeo-cloud-federation's ooi image (deployments/ooi/image/binder).
    source = envroot.parent / "environment.yml"
    source.write_text(
        "name: pangeo\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n"
        "  - pip\n  - pip:\n    - azure-storage-blob\n    - requests==2.32.3\n"
        "    - git+https://github.com/GenericMappingTools/pygmt\n"
    )
    result = buildtool("--root", envroot, "import", source, "--name", "ooi", cwd=envroot.parent)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {source}:8: dependencies[2].pip[0]: 'azure-storage-blob' is not an exact pip "
        "pin (name==version): pip packages are not solved, so only exact pins rebuild the same",
        f"error: {source}:10: dependencies[2].pip[2]: "
        "'git+https://github.com/GenericMappingTools/pygmt' is not an exact pip pin "
        "(name==version): pip packages are not solved, so only exact pins rebuild the same",
    ]
    assert not (envroot / "ooi").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "dependencies:\n  - numpy\n  - numpy >>1\n",
            ":3: dependencies[1]: invalid MatchSpec 'numpy >>1'",
        ),
        ("dependencies: [numpy]\nchannel: [conda-forge]\n", ":2: channel: unknown key"),
        # Found in the spec it imports to (base pins python 3.11.*), told at the file's line.
        (
            "dependencies:\n  - numpy\n  - python=3.10\n",
            ":3: dependencies[1]: contradictory pins: 'python 3.10.*' conflicts with "
            "'python 3.11.*'",
        ),
        (
            "dependencies: [numpy]\nvariables: {1BAD: x}\n",
            ":2: variables.1BAD: '1BAD' is not an environment variable name",
        ),
    ],
)
def test_import_refuses_what_a_spec_refuses_and_keeps_the_old_spec(
    text: str, expected: str, envroot: Path
) -> None:
    source = envroot.parent / "environment.yml"
    source.write_text(text)
    spec = envroot / "physlite" / "env.yaml"
    before = hashlib.sha256(spec.read_bytes()).hexdigest()
    result = buildtool(
        "--root",
        envroot,
        "import",
        source,
        "--name",
        "physlite",
        "--extends",
        "base",
        cwd=envroot.parent,
    )
    assert result.returncode == 2
    (only,) = result.stderr.splitlines()
    assert only.startswith(f"error: {source}{expected}"), only
    assert hashlib.sha256(spec.read_bytes()).hexdigest() == before


def test_virtual_packages_yml_per_platform(envroot: Path) -> None:
    folder = envroot.parent / "gpu"
    folder.mkdir()
    (folder / "environment.yml").write_text("dependencies: [pytorch=*=cuda12*]\n")
    (folder / "virtual-packages.yml").write_text(
        "subdirs:\n"
        "  linux-64: {packages: {__cuda: '12.6', __glibc: '2.17'}}\n"
        "  linux-aarch64: {packages: {__cuda: '12.4'}}\n"
        "  osx-arm64: {packages: {__osx: '14.0'}}\n"
    )
    text = _import_twice(envroot, folder / "environment.yml", "gpu")
    assert text.endswith(
        "dependencies:\n  - pytorch * cuda12*\n"
        "# from virtual-packages.yml: what the GPU nodes provide\nvirtual_packages:\n"
        '  linux-64:\n    __cuda: "12.6"\n  linux-aarch64:\n    __cuda: "12.4"\n'
    )
    env = load_environment(envroot, "gpu")
    assert env.declared_virtual_packages("linux-aarch64") == {"__cuda": "12.4"}
