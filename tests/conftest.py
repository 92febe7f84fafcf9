"""Shared fixtures: a local solver channel and a scratch copy of `environments/`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import metadata_channel as metadata
from tests.solver_channel import build_channel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def solver_channel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """file:// URL of a channel holding every package the seed environments name."""
    return build_channel(tmp_path_factory.mktemp("solver-channel")).as_uri()


@pytest.fixture(scope="session")
def metadata_channel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """file:// URL of a repodata-only channel of real conda-forge records (from public
    conda-lock files; see tests/metadata_channel.py): for solving and locking, not installing."""
    return metadata.build_channel(tmp_path_factory.mktemp("metadata-channel")).as_uri()


@pytest.fixture
def envroot(tmp_path: Path) -> Path:
    """A scratch copy of the seed specs, without their committed locks."""
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root, ignore=shutil.ignore_patterns("conda-lock.yml"))
    return root


def buildtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    command = [sys.executable, "-m", "buildtool.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)
