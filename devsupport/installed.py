"""An environment installed on the host from the stand-in's channel, for the tests of the
stand-in itself: what the base spec asks for, solved and installed with py-rattler."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rattler import RepoDataRecord

from buildtool.spec import load_environment
from devsupport import REPO
from devsupport.standin.condaenv import install, solve

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


def install_base(channel: Path, scratch: Path) -> InstalledEnv:
    """BASE_SPECS solved against `channel` (a folder) and installed under `scratch`."""
    started = time.monotonic()
    records = solve(channel, BASE_SPECS)
    solved = time.monotonic()
    install(records, scratch / "prefix", cache_dir=scratch / "pkgs")
    return InstalledEnv(scratch / "prefix", records, solved - started, time.monotonic() - solved)
