"""distributed's version-mismatch table, read: what differs, what is an error, what fixes it.

`distributed.versions.error_message` renders the table a scheduler sends a connecting
client (Package, Client, Scheduler, Workers). :mod:`compat.clientcheck` turns it into one
error; this module is the pure part, with no import of distributed, so that it can be
tested on tables distributed makes without installing the preload's side effect.
"""

from __future__ import annotations

import re
import shlex

from compat import rules

_ROW = re.compile(r"\|(.*)\|")  # a row, matched whole on the stripped line


def table_rows(table: str) -> list[tuple[str, str, str, str]]:
    """(package, client, scheduler, workers) of each row of distributed's table."""
    rows = []
    for line in table.splitlines():
        match = _ROW.fullmatch(line.strip())
        if match:
            cells = [cell.strip() for cell in match[1].split("|")]
            if len(cells) == 4 and cells[0] != "Package":
                rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


def _version(package: str, cell: str) -> str | None:
    """A cell of the table as a version; None where the package is not installed.
    distributed reports Python as ``3.11.7.final.0``; people write ``3.11.7``."""
    if cell in ("None", "MISSING", ""):
        return None
    return ".".join(cell.split(".")[:3]) if package == rules.PYTHON else cell


def _cluster_version(package: str, scheduler: str, workers: str) -> str | None:
    """The cluster's version: the workers' when they agree, else the scheduler's."""
    if workers and not workers.startswith("{") and _version(package, workers) is not None:
        return _version(package, workers)
    return _version(package, scheduler)


def mismatches(table: str) -> list[tuple[str, str | None, str | None]]:
    """(package, this client's version, the cluster's) of each row of distributed's table
    that :mod:`compat.rules` makes an error: an optional package (numpy, pandas, lz4)
    that only one side has is distributed's warning, not an error."""
    found = []
    for package, client, scheduler, workers in table_rows(table):
        here = _version(package, client)
        there = _cluster_version(package, scheduler, workers)
        workers_differ = workers.startswith("{")
        if workers_differ or rules.is_error(package, [here, there]):
            found.append((package, here, there))
    return found


def explain(found: list[tuple[str, str | None, str | None]]) -> str:
    """One message: what differs, then the fix."""
    said, pins, fixes = [], [], []
    for package, here, there in found:
        said.append(f"{package} {here or 'not installed'} here, {there} on the cluster")
        if package == rules.PYTHON:
            fixes.append(f"use a Python {there} environment")
        elif there is None:
            fixes.append(f"uninstall {package}")
        else:
            pins.append(f"{package}=={there}")
    if pins:
        fixes.append(shlex.join(["pip", "install", *pins]))
    return (
        f"this Dask client's versions differ from the cluster's: {'; '.join(said)}. "
        f"Fix: {' and '.join(fixes)}."
    )
