"""scripts/machine-setup.sh is safe to re-run and never prints the registry password."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devsupport.localregistry import registry_credentials

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "machine-setup.sh"


@pytest.mark.docker
@pytest.mark.registry
def test_rerun_finds_everything_running_and_keeps_the_password() -> None:
    before = registry_credentials()
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert "dockerd: already answering" in result.stdout
    assert "registry: already answering" in result.stdout
    # Keyed on what it installs: a ready machine runs no pip (it took 13 s every time).
    assert "pip install: up to date" in result.stdout
    assert result.stdout.rstrip().endswith("[machine-setup] done")
    assert before.password not in result.stdout + result.stderr
    assert registry_credentials() == before
