"""Runtime guard: check each worker's versions as it joins the scheduler.

Enable it in the image the scheduler runs from (under dask-gateway that is the
worker image) with this dask config, e.g. in ``/etc/dask/compat.yaml``::

    distributed:
      scheduler:
        preload:
          - compat.plugin
    compat:
      guard: log      # or: refuse, off
    logging:
      compat: info    # format the guard's lines like distributed's own

or with environment variables: ``DASK_DISTRIBUTED__SCHEDULER__PRELOAD=compat.plugin``
and ``DASK_COMPAT__GUARD=refuse`` (the guard's lines then go to stderr unformatted).

A joining worker's versions are those distributed sends when it registers
(``distributed.versions.get_versions``): Python, the packages distributed
requires, and numpy, pandas and lz4. The guard compares the ones distributed
compares for the scheduler (see :mod:`compat.rules`) with the scheduler's own.
On a mismatch it logs an error; in mode ``refuse`` it also pauses the worker,
so that no task is sent to it, and tells it to close (its nanny closes too).
Mode ``off`` installs nothing (``DASK_COMPAT__GUARD=off`` for one scheduler).

Under dask-gateway the scheduler's command line names its own ``--preload``, which
replaces the configured ones: the gateway's option handler that ``buildtool
helm-values`` writes adds ``--preload compat.plugin`` to the scheduler command.

Unlike the rest of the package, this module imports distributed at import time:
it only ever runs inside a Dask scheduler.
"""

from __future__ import annotations

import logging
from typing import Any

import dask
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.versions import get_versions

from compat import rules

logger = logging.getLogger("compat.plugin")

CONFIG_KEY = "compat.guard"
MODES = ("log", "refuse")
OFF = "off"


class VersionGuard(SchedulerPlugin):
    """Logs, and in mode ``refuse`` closes, workers whose versions differ."""

    name = "compat-version-guard"

    def __init__(self, mode: str = "log") -> None:
        if mode not in MODES:
            raise ValueError(f"{CONFIG_KEY} must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.own_versions: dict[str, str | None] = get_versions()["packages"]

    def mismatches(self, worker_versions: dict[str, str | None]) -> dict[str, str | None]:
        """Package -> worker's version, for each error-level difference."""
        return {
            package: worker_versions.get(package)
            for package in sorted(rules.SCHEDULER_RELEVANT)
            if rules.is_error(
                package, [self.own_versions.get(package), worker_versions.get(package)]
            )
        }

    def add_worker(self, scheduler: Any, worker: str) -> None:
        state = scheduler.workers.get(worker)
        if state is None:
            return
        differing = self.mismatches((state.versions or {}).get("packages", {}))
        if not differing:
            return
        details = ", ".join(
            f"{package} {version} (scheduler {self.own_versions.get(package)})"
            for package, version in differing.items()
        )
        action = "closing it" if self.mode == "refuse" else "keeping it"
        logger.error(
            "worker %s has package versions that differ from the scheduler's: %s; %s (%s: %s)",
            worker,
            details,
            action,
            CONFIG_KEY,
            self.mode,
        )
        if self.mode == "refuse":
            stimulus = "compat-version-guard"
            scheduler.handle_worker_status_change("paused", worker, stimulus_id=stimulus)
            scheduler.close_worker(worker)


def dask_setup(scheduler: Any) -> None:
    """Preload hook: install the guard in the mode set by ``compat.guard``."""
    mode = dask.config.get(CONFIG_KEY, default="log")
    if mode != OFF:
        scheduler.add_plugin(VersionGuard(mode))
