"""The real `buildtool` command line, run in a subprocess as a user runs it, and a site
folder locked with it: what most tests start from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from devsupport import REPO


def buildtool(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    command = [sys.executable, "-m", "buildtool.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)


def locked_site(work: Path, channel: str, name: str = "e2e", extra: str = "") -> Path:
    """A site folder with `name`'s spec and its parent (no lock), `extra` added after its
    `extends:` line, locked against `channel`; returns the environments root."""
    root = work / "environments"
    for spec in ("base", name):
        shutil.copytree(
            REPO / "environments" / spec,
            root / spec,
            ignore=shutil.ignore_patterns("conda-lock.yml"),
        )
    if extra:
        path = root / name / "env.yaml"
        path.write_text(path.read_text().replace("extends: base\n", "extends: base\n" + extra))
    result = buildtool("--root", root, "lock", name, "--channel", channel, cwd=work)
    assert result.returncode == 0, result.stderr
    return root
