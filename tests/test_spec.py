"""Spec loading, inheritance and strict validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from buildtool.spec import environment_names, load_environment, normalize_matchspec
from devsupport import REPO
from devsupport.buildtool_cli import buildtool


def test_seed_environments_resolve_through_base() -> None:
    root = REPO / "environments"
    assert environment_names(root) == ["e2e", "ml", "ml-gpu", "physlite", "pyhep"]
    env = load_environment(root, "physlite")
    names = [r.name for r in env.dependencies]
    for required in (
        "python",
        "dask",
        "distributed",
        "dask-gateway",
        "msgpack-python",
        "cloudpickle",
        "tornado",
        "toolz",
        "lz4",
        "numpy",
        "pandas",
        "h5py",
        "numba",
        "uproot",
        "awkward",
        "pyarrow",
        "coffea",
        "aiohttp",
    ):
        assert required in names
    assert "jupyterlab" in [r.name for r in env.notebook.dependencies]
    assert "file" in env.notebook.apt and "file" not in env.worker.apt
    assert (
        env.notebook.env["ATLAS_LOCAL_ROOT_BASE"] == "/cvmfs/atlas.cern.ch/repo/ATLASLocalRootBase"
    )
    assert env.notebook.repository == "jupyter-physlite"
    assert env.worker.repository == "dask-gateway-physlite"
    assert env.channels == ["conda-forge"] and env.platforms == ["linux-64"]
    assert "coffea" in env.notebook.imports and "coffea" in env.worker.imports


# Each case: the files to write (relative to the env root), the expected message parts,
# and the line the error must point at (None where the file has no useful line).
BAD_SPECS: dict[str, tuple[dict[str, str], list[str], int | None]] = {
    "unknown top-level key": (
        {"bad/env.yaml": "description: x\ndependecies: [numpy]\n"},
        ["dependecies", "unknown key"],
        2,
    ),
    "unknown key in an image section": (
        {"bad/env.yaml": "description: x\nnotebook:\n  dependencies: []\n  imagee: y\n"},
        ["notebook.imagee", "unknown key"],
        4,
    ),
    "invalid MatchSpec": (
        {"bad/env.yaml": "description: x\ndependencies:\n  - numpy\n  - numpy >>1\n"},
        ["dependencies[1]", "invalid MatchSpec", "numpy >>1"],
        4,
    ),
    "MatchSpec syntax that conda does not have": (
        {
            "bad/env.yaml": "description: x\nworker:\n  dependencies:\n"
            "    - numpy\n    - 'numpy[when=\"python >=3.12\"]'\n"
        },
        ["worker.dependencies[1]", "invalid MatchSpec", "bracket key: when"],
        5,
    ),
    "MatchSpec with more than name, version and build": (
        {"bad/env.yaml": "description: x\ndependencies: [numpy 1.2 py_0 extra]\n"},
        ["dependencies[0]", "more than name, version and build"],
        2,
    ),
    "virtual package version not a string": (
        {"bad/env.yaml": "description: x\nvirtual_packages:\n  __cuda: 12.6\n"},
        ["virtual_packages", "__cuda", 'quoted string, e.g. "12.6"'],
        2,
    ),
    "virtual package without the __ prefix": (
        {"bad/env.yaml": "description: x\nvirtual_packages: {cuda: '12.6'}\n"},
        ["virtual_packages", "'cuda' is not a virtual package name"],
        2,
    ),
    "virtual package that follows the base image": (
        {"bad/env.yaml": "description: x\nvirtual_packages: {__glibc: '2.40'}\n"},
        ["virtual_packages", "follows the base image", "__glibc 2.36"],
        2,
    ),
    "per-platform virtual packages not a map": (
        {"bad/env.yaml": "description: x\nvirtual_packages:\n  linux-aarch64: '12.4'\n"},
        ["virtual_packages", "linux-aarch64: must map"],
        2,
    ),
    "missing parent": (
        {"bad/env.yaml": "description: x\n\nextends: nothere\n"},
        ["extends", "'nothere' does not exist"],
        3,
    ),
    "cycle in extends": (
        {
            "bad/env.yaml": "description: x\nextends: loop\n",
            "loop/env.yaml": "description: y\nextends: bad\n",
        },
        ["extends", "cycle", "bad -> loop -> bad"],
        2,
    ),
    "contradictory pins in one spec": (
        {
            "bad/env.yaml": "description: x\ndependencies: [numpy <1.25]\n"
            "notebook:\n  dependencies: [numpy >=2]\n"
        },
        ["contradictory pins", "numpy <1.25", "numpy >=2"],
        4,
    ),
    "pin contradicting the inherited parent": (
        {"bad/env.yaml": "description: x\nextends: base\ndependencies:\n  - python 3.10.*\n"},
        ["contradictory pins", "python 3.11.*", "python 3.10.*", "base/env.yaml:7"],
        4,
    ),
    "YAML syntax error": (
        {"bad/env.yaml": "description: x\ndependencies: [numpy\n"},
        ["not valid YAML"],
        3,
    ),
    "missing description": (
        {"bad/env.yaml": "dependencies: [numpy]\n"},
        ["description", "required key is missing"],
        1,
    ),
    "dependencies not a list": (
        {"bad/env.yaml": "description: x\ndependencies: numpy\n"},
        ["dependencies", "list"],
        2,
    ),
    "unsupported platform": (
        {"bad/env.yaml": "description: x\nplatforms: [linux-64, win-64]\n"},
        ["platforms[1]", "linux-aarch64"],
        2,
    ),
    "duplicate key": (
        {"bad/env.yaml": "description: x\ndependencies: [numpy]\ndependencies: [scipy]\n"},
        ["dependencies", "twice"],
        3,
    ),
    "pip requirement not pinned": (
        {"bad/env.yaml": "description: x\nworker:\n  pip: [requests>=2]\n"},
        ["worker.pip[0]", "exact pip pin"],
        3,
    ),
    "bad environment variable name": (
        {"bad/env.yaml": "description: x\nenv:\n  1BAD: y\n"},
        ["env", "environment variable"],
        3,
    ),
    "empty channel list": (
        {"bad/env.yaml": "description: x\nchannels: []\n"},
        ["channels", "at least one channel"],
        2,
    ),
    "multi-line description": (
        {"bad/env.yaml": "description: |\n  one\n  two\n"},
        ["description", "must be one line of text, but holds a newline"],
        1,
    ),
    "spec is not a mapping": ({"bad/env.yaml": "- numpy\n"}, ["YAML mapping"], 1),
    "no such environment": ({}, ["no environment 'bad'"], None),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_is_refused_with_one_clear_line(
    case: str, envroot: Path, tmp_path: Path, solver_channel: str
) -> None:
    files, parts, line = BAD_SPECS[case]
    for relative, text in files.items():
        (envroot / relative).parent.mkdir(parents=True, exist_ok=True)
        (envroot / relative).write_text(text)
    # An existing lock must survive the refusal untouched.
    (envroot / "bad").mkdir(exist_ok=True)
    (envroot / "bad" / "conda-lock.yml").write_text("previous lock\n")
    before = _snapshot(tmp_path)
    result = buildtool("--root", envroot, "lock", "bad", "--channel", solver_channel, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert "env.yaml" in message
    for part in parts:
        assert part in message, message
    if line is not None:
        assert f"env.yaml:{line}:" in message, message
    assert _snapshot(tmp_path) == before


# conda's forms (from real environment.yml files) and the one form each is stored in.
CONDA_FORMS = {
    "tensorflow>=2.17.0=cuda12*": "tensorflow >=2.17.0 cuda12*",  # pangeo ml-notebook
    "jaxlib>=0.4.31=cuda12*": "jaxlib >=0.4.31 cuda12*",
    "tensorflow >=2.17.0 cuda12*": "tensorflow >=2.17.0 cuda12*",
    "numpy=1.26=py311h64a7726_0": "numpy ==1.26 py311h64a7726_0",
    "numpy=1.26": "numpy 1.26.*",
    "numpy 1.26": "numpy ==1.26",  # conda reads a bare version as exact
    "numpy>=1.2,<2": "numpy >=1.2,<2",
    "jupyterhub-singleuser~=5.0": "jupyterhub-singleuser ~=5.0",
    "conda-forge::numpy": "conda-forge::numpy",
    "conda-forge::numpy>=1.2": "conda-forge::numpy >=1.2",
    "numpy[version='>=1.2',build=cuda*]": "numpy >=1.2 cuda*",
    "pytorch=*=*cuda*": "pytorch * *cuda*",
}


def test_conda_matchspec_forms_are_accepted_and_normalized(envroot: Path) -> None:
    lines = "".join(f"  - {json.dumps(form)}\n" for form in CONDA_FORMS)
    (envroot / "forms").mkdir()
    (envroot / "forms" / "env.yaml").write_text(f"description: x\ndependencies:\n{lines}")
    env = load_environment(envroot, "forms")
    assert [r.spec for r in env.dependencies] == list(CONDA_FORMS.values())
    assert [r.line for r in env.dependencies] == list(range(3, 3 + len(CONDA_FORMS)))
    # Idempotent: the stored form is read back as itself.
    for normalized in CONDA_FORMS.values():
        assert normalize_matchspec(normalized) == normalized


def test_virtual_packages_inherit_override_per_platform_and_enter_the_hash(envroot: Path) -> None:
    (envroot / "gpu").mkdir()
    (envroot / "gpu" / "env.yaml").write_text(
        "description: x\nabstract: true\nplatforms: [linux-64, linux-aarch64]\n"
        "virtual_packages: {__cuda: '12.6', linux-aarch64: {__cuda: '12.4'}}\n"
    )
    (envroot / "child").mkdir()
    child = envroot / "child" / "env.yaml"
    child.write_text("description: y\nextends: gpu\ndependencies: [numpy]\n")
    env = load_environment(envroot, "child")
    assert env.declared_virtual_packages("linux-64") == {"__cuda": "12.6"}
    assert env.declared_virtual_packages("linux-aarch64") == {"__cuda": "12.4"}
    before = env.content_hash("linux-64")

    child.write_text(child.read_text() + "virtual_packages: {__cuda: '12.8'}\n")
    env = load_environment(envroot, "child")
    assert env.declared_virtual_packages("linux-64") == {"__cuda": "12.8"}
    assert env.declared_virtual_packages("linux-aarch64") == {"__cuda": "12.4"}
    assert env.content_hash("linux-64") != before

    # A spec that declares none keeps the hash it had before virtual packages existed.
    plain = load_environment(envroot, "physlite")
    assert plain.declared_virtual_packages("linux-64") == {}
    payload = {
        "channels": plain.channels,
        "platform": "linux-64",
        "common": [r.spec for r in plain.dependencies],
        "notebook": [r.spec for r in plain.notebook.dependencies],
        "worker": [r.spec for r in plain.worker.dependencies],
    }
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert plain.content_hash("linux-64") == expected
