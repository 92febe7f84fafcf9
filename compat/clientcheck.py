"""Client preload: ``Client(...)`` fails, with one clear error, when this client's versions
differ from the cluster's, where distributed only warns.

When a client connects, the scheduler compares its versions with its own and its
workers' (``distributed.versions.error_message``: Python, the packages distributed
requires, numpy, pandas and lz4) and the client emits a ``VersionMismatchWarning``
holding distributed's table. The failure comes later, as a deserialization error deep in
a task (distributed#1678; failing hard is distributed#5582, open since 2021). Preloads
cannot stop a client (distributed logs what their setup raises and goes on), so this
module acts when distributed imports it, which is before the client connects: it makes
distributed's own warning raise :class:`ClientVersionError` instead, from ``Client(...)``,
with what differs and the one ``pip install`` that fixes it. The comparison is
distributed's own, read from its table, and :mod:`compat.rules` decides what is an
error, as everywhere in ``compat``: an optional package (numpy, pandas, lz4) that only
one side has stays distributed's warning.

Enable it with this dask config (the images of daskhub-images carry it, in
``<prefix>/etc/dask/daskhub-compat.yaml``)::

    distributed:
      client:
        preload:
          - compat.clientcheck
    compat:
      client: error     # or: off (distributed's warning, as without the preload)

``DASK_COMPAT__CLIENT=off`` turns it off for one process, and a user's own
``warnings.filterwarnings("ignore", category=VersionMismatchWarning)`` still silences it.

Like :mod:`compat.plugin`, this module imports distributed: it only runs in a client.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask
from distributed.versions import VersionMismatchWarning

from compat.versiontable import explain, mismatches, table_rows

CONFIG_KEY = "compat.client"
MODES = ("error", "off")
TURN_OFF = f"({CONFIG_KEY}: error; DASK_COMPAT__CLIENT=off turns this into distributed's warning)"


class ClientVersionError(RuntimeError):
    """This client's versions differ from the cluster's."""


_shown = warnings.showwarning


def _raise_mismatch(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    if issubclass(category, VersionMismatchWarning) and _mode() == "error":
        table = str(message)
        if not table_rows(table):  # a table this module cannot read: fail closed
            raise ClientVersionError(f"this Dask client's versions differ:\n{table}")
        found = mismatches(table)
        if found:
            raise ClientVersionError(f"{explain(found)} {TURN_OFF}")
    _shown(message, category, filename, lineno, file, line)


def _mode() -> str:
    mode = dask.config.get(CONFIG_KEY, default="error")
    if mode not in MODES:
        raise ValueError(f"{CONFIG_KEY} must be one of {', '.join(MODES)}, not {mode!r}")
    return str(mode)


def install() -> None:
    """Make every VersionMismatchWarning raise (once per process; idempotent)."""
    if warnings.showwarning is not _raise_mismatch:
        warnings.showwarning = _raise_mismatch
    # Shown every time, not once per place: each Client(...) must fail.
    warnings.filterwarnings("always", category=VersionMismatchWarning)


if _mode() == "error":
    install()
