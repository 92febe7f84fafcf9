"""Install one image's locked packages into a conda prefix with py-rattler, without solving.

    install.py conda-lock.yml PLATFORM IMAGE.explicit PREFIX [--cache DIR]

Runs in the worker image's builder stage (into an empty prefix), and in the notebook
image's final stage (into the worker's prefix, whose packages it keeps as they are).
The records come from the lock, read by rattler itself; IMAGE.explicit (`URL#sha256:HEX`
lines) selects the image's set. rattler's installer fetches the archives from their
channel URLs in parallel, with a timeout, into its package cache (a BuildKit cache mount
shared by every build), and checks each against the lock's sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import rattler

# Seconds for one request: a slow mirror fails the build instead of hanging it.
TIMEOUT = 600


def read_explicit(path: Path) -> dict[str, str]:
    """url -> sha256, for each package of the image."""
    entries = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        url, _, fragment = line.partition("#")
        if not fragment.startswith("sha256:"):
            sys.exit(f"{path}: {url}: no sha256 in the explicit lock")
        entries[url] = fragment.removeprefix("sha256:")
    return entries


def locked_records(lock: Path, platform: str, wanted: dict[str, str]) -> list:
    environment = rattler.LockFile.from_path(lock).default_environment()
    for candidate in environment.platforms():
        if candidate.name == platform:
            break
    else:
        sys.exit(f"{lock}: not locked for {platform}")
    records = environment.conda_repodata_records_for_platform(candidate) or []
    chosen = [r for r in records if str(r.url) in wanted]
    missing = sorted(set(wanted) - {str(r.url) for r in chosen})
    if missing:
        sys.exit(f"{lock}: no record for {missing[0]} (and {len(missing) - 1} more)")
    for record in chosen:
        if record.sha256 is None or record.sha256.hex() != wanted[str(record.url)]:
            sys.exit(f"{record.url}: the lock and the explicit list disagree on its sha256")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("platform")
    parser.add_argument("explicit", type=Path)
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/root/.cache/rattler"))
    args = parser.parse_args()

    records = locked_records(args.lock, args.platform, read_explicit(args.explicit))
    meta = args.prefix / "conda-meta"
    installed = [rattler.PrefixRecord.from_path(p) for p in sorted(meta.glob("*.json"))]
    asyncio.run(
        rattler.install(
            records,
            target_prefix=args.prefix,
            cache_dir=args.cache / "pkgs",
            installed_packages=installed,
            client=rattler.Client(timeout=TIMEOUT),
            show_progress=False,
        )
    )
    print(f"installed {len(records) - len(installed)} packages into {args.prefix}")


if __name__ == "__main__":
    main()
