"""The command line's own behaviour, in-process (`buildtool.cli.main`), without Docker or
a network: what it reports and the exit codes it gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from buildtool.cli import main
from devsupport import REPO


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The seed environments with their committed locks."""
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root)
    return root


def test_lock_check_all_reports_every_environment_and_fails_at_the_end(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(site), "lock", "--check", "--all"]) == 0
    for name in ("e2e", "pyhep"):
        spec = site / name / "env.yaml"
        spec.write_text(spec.read_text() + "\n# changed\npip: ['hepunits==2.3.5']\n")
    capsys.readouterr()
    code = main(["--root", str(site), "lock", "--check", "--all"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == ["ml", "ml-gpu", "physlite"]
    errors = err.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), err
    assert "e2e" in errors[0] and "pyhep" in errors[1]
    assert errors[2] == "error: 2 lock(s) to make again; see above"
