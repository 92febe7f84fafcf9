"""Fixtures: the stand-in channel, and one environment installed from it for the session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rattler import RepoDataRecord

from buildtool.spec import load_environment
from devsupport.dockercli import require_docker
from devsupport.standin.channel import build_channel
from devsupport.standin.condaenv import install, solve
from tests.conftest import REPO

# What environments/base asks for, notebook side included, plus pip.
BASE_SPECS = (
    *(r.spec for r in load_environment(REPO / "environments", "e2e").all_requirements()),
    "pip",
)


@dataclass(frozen=True)
class InstalledEnv:
    prefix: Path
    records: list[RepoDataRecord]
    solve_seconds: float
    install_seconds: float

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"


@pytest.fixture(scope="session")
def real_channel() -> Path:
    """The stand-in's channel folder (.../conda-forge)."""
    return build_channel()


@pytest.fixture(scope="session")
def installed_env(real_channel: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledEnv:
    scratch = tmp_path_factory.mktemp("real-env")
    started = time.monotonic()
    records = solve(real_channel, BASE_SPECS)
    solved = time.monotonic()
    install(records, scratch / "prefix", cache_dir=scratch / "pkgs")
    return InstalledEnv(scratch / "prefix", records, solved - started, time.monotonic() - solved)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Tests that use this fail (never skip) when Docker is missing."""
    require_docker()
