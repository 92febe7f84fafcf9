"""Index channels, solve and install environments, in-process with py-rattler (offline)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import rattler
from rattler import Channel, RepoDataRecord
from rattler.index import index_fs

PLATFORMS = ("linux-64", "noarch")


def index_channel(channel: Path) -> None:
    """Write repodata.json for every subdir of a channel folder (noarch/ must exist)."""
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False))


def solve(channel: Path | str, specs: Sequence[str]) -> list[RepoDataRecord]:
    """Solve specs against one channel (a folder or URL) for linux-64."""
    url = channel.absolute().as_uri() if isinstance(channel, Path) else channel
    return asyncio.run(
        rattler.solve(
            sources=[Channel(url)],
            specs=list(specs),
            platforms=[rattler.Subdir(p) for p in PLATFORMS],
        )
    )


def install(records: list[RepoDataRecord], prefix: Path, cache_dir: Path) -> None:
    """Install solved records into prefix, extracting packages into cache_dir."""
    asyncio.run(
        rattler.install(records, target_prefix=prefix, cache_dir=cache_dir, show_progress=False)
    )
