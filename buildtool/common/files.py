"""Writing the files the tool makes: whole or not at all, and only when they change.

Every file buildtool writes goes through here. A reader (another `make` target, the
hub's Helm upgrade, a user's editor) sees the old file or the new one, never half of
one; and a file whose text is unchanged keeps its modification time, so that `make`
and the docs' "changed" list see no change.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never half.

    The file gets the mode a plain write would (0666 less the umask), not mkstemp's 0600:
    build contexts are read by the images' non-root user too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` (atomically) unless it already holds it; True if written."""
    if path.is_file() and path.read_text() == text:
        return False
    write_atomic(path, text)
    return True
