"""The image source against a real image in the local Docker engine."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.dockercli import docker
from devsupport.lockdata import DRIFTED, MATCHED, write_prefix
from devsupport.standin.baseimage import ensure_base_image

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


def checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compat", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture
def notebook_image(tmp_path: Path) -> Iterator[str]:
    """A Debian image holding the matched lockfile's notebook environment records."""
    root = tmp_path / "root"
    write_prefix(MATCHED, root / "srv" / "conda" / "envs" / "notebook", "notebook")
    tag = f"local/compat-test-image:{uuid.uuid4().hex[:12]}"
    container = docker("create", ensure_base_image("runtime"), "sh").stdout.decode().strip()
    try:
        docker("cp", f"{root / 'srv'}/.", f"{container}:/srv")
        docker("commit", container, tag)
    finally:
        docker("rm", container)
    yield tag
    docker("rmi", tag)


def test_image_matches_its_lockfile(notebook_image: str) -> None:
    result = checker("diff", f"lock:{MATCHED}#notebook", f"image:{notebook_image}")

    assert result.returncode == 0, result.stderr
    assert "all package versions match" in result.stdout  # the pip package too


def test_image_differs_from_a_drifted_lockfile(notebook_image: str) -> None:
    result = checker(
        "diff", f"lock:{DRIFTED}#worker", f"image:{notebook_image}", "--format", "json"
    )

    assert result.returncode == 1, result.stderr
    assert '"errors": 4' in result.stdout


def test_unreadable_image_exits_2() -> None:
    result = checker("diff", "image:127.0.0.1:1/compat/absent:latest", "env")

    assert result.returncode == 2
    assert result.stderr.startswith(
        "daskhub-compat: error: cannot read image 127.0.0.1:1/compat/absent:latest: "
    )
