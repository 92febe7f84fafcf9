"""Which differences are errors, following ``distributed/versions.py``.

distributed compares a fixed list of packages between client, scheduler and
workers and warns (``VersionMismatchWarning``) on any difference. It reads
versions with ``importlib.metadata.version`` and compares the scheduler only
for the packages it marks as scheduler-relevant. This checker makes those
comparisons errors:

* the Python version (full, e.g. ``3.11.7``), on every side;
* the packages distributed requires, on every side, where a package missing
  on one side (``None``) is a mismatch too;
* distributed's optional packages where they are installed on both sides
  (numpy and pandas between client and workers only, as the scheduler's are
  not compared by distributed; lz4 on every side).

Every other difference in the full installed package set is a warning.
"""

from __future__ import annotations

from typing import Literal

Level = Literal["error", "warning"]

PYTHON = "python"
#: ``distributed.versions.required_packages``
REQUIRED = frozenset({"dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz"})
#: ``distributed.versions.optional_packages``
OPTIONAL = frozenset({"numpy", "pandas", "lz4"})
#: ``distributed.versions.scheduler_relevant_packages``
SCHEDULER_RELEVANT = REQUIRED | {"lz4", PYTHON}
#: Every package whose mismatch can be an error.
ERROR_LEVEL = REQUIRED | OPTIONAL | {PYTHON}


def is_error(package: str, versions: list[str | None]) -> bool:
    """Whether these versions of ``package`` (None: not installed) are an error.

    ``versions`` holds one entry per side that distributed compares for this
    package (see :func:`compares_scheduler`).
    """
    if package == PYTHON or package in REQUIRED:
        return len(set(versions)) > 1
    if package in OPTIONAL:
        return len({v for v in versions if v is not None}) > 1
    return False


def compares_scheduler(package: str) -> bool:
    """Whether distributed checks the scheduler's version of ``package``."""
    return package in SCHEDULER_RELEVANT
