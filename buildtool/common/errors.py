"""Errors that the CLI turns into one clear line and an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class BuildToolError(Exception):
    """An expected failure: the CLI prints its message, without a traceback."""

    exit_code = 1


@dataclass
class SpecError(BuildToolError):
    """A spec is invalid. Names the file, the key path and, where known, the line."""

    path: Path
    key: str
    message: str
    line: int | None = None

    exit_code = 2

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class SolveError(BuildToolError):
    """The solver could not find a set of packages that satisfies the spec."""


class LockStaleError(BuildToolError):
    """`lock --check` found a lock that no longer matches its spec."""


class UsageError(BuildToolError):
    """Arguments that do not go together, or one that is missing where argparse cannot
    see it: the CLI gives the command's usage line and this one line, exit status 2, as
    argparse gives its own."""

    exit_code = 2


class InputError(BuildToolError):
    """A command-line value is not what it must be (a registry, an image reference)."""

    exit_code = 2
