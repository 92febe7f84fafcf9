"""Where the tool keeps what it downloads between builds (the package cache)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder: $DASKHUB_CACHE, else ~/.cache/daskhub-images."""
    configured = os.environ.get("DASKHUB_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "daskhub-images"
    root.mkdir(parents=True, exist_ok=True)
    return root
