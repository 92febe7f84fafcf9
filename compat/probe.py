"""What a Python process has installed, as plain data.

:func:`snapshot` runs in the checker's own process and, shipped by value with
cloudpickle, on a cluster's scheduler and workers, which need not have this
package installed. It must therefore use only the standard library and
return only builtins.
"""

from __future__ import annotations

import sys
from importlib import metadata

_RELEASE_LEVELS = {"alpha": "a", "beta": "b", "candidate": "rc"}


def python_version() -> str:
    """Full interpreter version in conda's spelling: ``3.11.7``, ``3.13.0rc1``."""
    info = sys.version_info
    version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        version += f"{_RELEASE_LEVELS[info.releaselevel]}{info.serial}"
    return version


def snapshot() -> dict[str, str]:
    """Installed distributions (name as found -> version) plus ``python``.

    Where a name is installed twice on ``sys.path`` the first one wins, as it
    does for ``importlib.metadata.version``, which distributed uses.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in found:
            found[name] = dist.version
    found["python"] = python_version()
    return found
