"""Fixtures: the stand-in channel, and one environment installed from it for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from devsupport.dockercli import require_docker
from devsupport.installed import InstalledEnv, install_base
from devsupport.standin.channel import build_channel


@pytest.fixture(scope="session")
def real_channel() -> Path:
    """The stand-in's channel folder (.../conda-forge)."""
    return build_channel()


@pytest.fixture(scope="session")
def installed_env(real_channel: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledEnv:
    return install_base(real_channel, tmp_path_factory.mktemp("real-env"))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Tests that use this fail (never skip) when Docker is missing."""
    require_docker()
