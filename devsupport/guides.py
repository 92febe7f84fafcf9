"""The guides' code blocks, read and run as a reader would run them.

A fenced block's language is its info string's first word. A `<!-- not run here: WHY -->`
or `<!-- checked: FILE ... -->` comment on the line just above a fence says what the suite
does with it: a `not run here` shell block is one the lab cannot run (a cluster, GitHub),
a `checked` YAML block is a file the unit layer loads with the tool's own reader. Every
other shell block of a guide in `RUN` is run, in order, in one bash session
(`tests/test_guides.py`).

The lab has no conda-forge and no Docker Hub, so a guide runs with a `buildtool` in front
of the real one on `PATH` (`lab_buildtool`): it adds the stand-in's channel to `lock` of
a site environment and the stand-in's base images to the commands that build: the mirror
flags a site behind a firewall passes. Nothing else of a command is changed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildtool.cli import build_parser, default_root
from buildtool.spec import Environment, environment_names, load
from devsupport import REPO

#: The guides whose shell blocks the suite runs, in this order.
RUN = (REPO / "docs" / "admin.md", REPO / "docs" / "user.md")
#: Every page whose blocks are accounted for.
PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL = ("sh", "bash", "shell", "console")

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_MARK = re.compile(r"^<!--\s*(not run here|checked):\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # the fence's line, from 1
    language: str
    text: str
    mark: str | None  # "not run here" or "checked"
    reason: str  # what the mark says

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def shell(self) -> bool:
        return self.language in SHELL

    @property
    def runs(self) -> bool:
        return self.shell and self.mark is None and self.page in RUN


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, with the mark on the line above its fence."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        close = next(
            (j for j in range(index + 1, len(lines)) if lines[j].startswith(fence.group(1))),
            len(lines),
        )
        mark = _MARK.match(lines[index - 1]) if index else None
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=fence.group(2),
                text="\n".join(lines[index + 1 : close]) + "\n",
                mark=mark.group(1) if mark else None,
                reason=mark.group(2) if mark else "",
            )
        )
        index = close + 1
    return found


def script(page: Path) -> str:
    """The page's runnable shell blocks as one bash script; each block is announced on
    stderr first, so a failure names its block."""
    parts = ["set -euo pipefail"]
    for block in blocks(page):
        if block.runs:
            parts.append(f"echo {shlex.quote('>>> ' + block.where)} >&2")
            parts.append(block.text)
    return "\n".join(parts)


def run_guide(
    page: Path, cwd: Path, env: Mapping[str, str], timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run the page's runnable blocks in `cwd`, in one bash session."""
    return subprocess.run(
        ["bash", "-c", script(page)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lab_bin(folder: Path) -> Path:
    """A folder holding the lab's `buildtool` (`lab_buildtool`), to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "buildtool"
    shim.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from devsupport.guides import lab_buildtool\n"
        "lab_buildtool(sys.argv[1:])\n"
    )
    shim.chmod(0o755)
    return folder


#: The commands that build images, and so take `--base-image`.
_BUILDS = ("render", "build", "publish", "plan", "verify")


def lab_flags(argv: Sequence[str], channel: str, image_flags: Sequence[str]) -> list[str]:
    """The stand-in's flags `argv` needs: `--channel` for a lock of site environments
    (an extension's channels are its parent's), `--base-image` for a build; none when
    the command names its own."""
    args = build_parser().parse_args(list(argv))
    if args.command == "lock" and not args.check and not args.channel:
        root = args.root or default_root()
        names = environment_names(root) if args.all else args.env
        if names and all(isinstance(load(root, name), Environment) for name in names):
            return ["--channel", channel]
    if args.command in _BUILDS and not args.base_image:
        return list(image_flags)
    return []


def lab_buildtool(argv: Sequence[str]) -> None:
    """Run the real `buildtool` with the stand-in's flags added (`lab_flags`); its channel
    and base images are STANDIN_CHANNEL and STANDIN_IMAGE_FLAGS."""
    extra = lab_flags(
        argv, os.environ["STANDIN_CHANNEL"], shlex.split(os.environ["STANDIN_IMAGE_FLAGS"])
    )
    command = [sys.executable, "-m", "buildtool.cli", *argv, *extra]
    os.execv(sys.executable, command)
