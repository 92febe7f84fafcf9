"""Install one image's locked packages into a conda prefix with py-rattler, without solving.

    install.py conda-lock.yml PLATFORM IMAGE.explicit PREFIX [--cache DIR] [--python-only]

py-rattler is put on the path of whatever Python runs this. With `--python-only`, the
builder's Python installs just the environment's `python` and what it needs (the
bootstrap); after that the environment's own Python installs the rest of the image's set
in the image's final stage, straight into its prefix, keeping what is there as it is.
The records come from the lock, read by rattler itself; IMAGE.explicit (`URL#sha256:HEX`
lines) selects the image's set. rattler's installer fetches the archives from their
channel URLs in parallel, with a timeout, into its package cache (a BuildKit cache mount
shared by every build), and checks each against the lock's sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    if environment is None:
        sys.exit(f"{lock}: no default environment")
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


def python_closure(records: list) -> list:
    """`python` and what it needs, following the records' depends."""
    by_name = {r.name.normalized: r for r in records}
    wanted, todo = set(), ["python"]
    while todo:
        name = todo.pop()
        if name in wanted or name not in by_name:
            continue  # virtual packages (__glibc) are not records
        wanted.add(name)
        todo += [dep.split()[0] for dep in by_name[name].depends]
    return [r for r in records if r.name.normalized in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("platform")
    parser.add_argument("explicit", type=Path)
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/root/.cache/rattler"))
    parser.add_argument("--python-only", action="store_true")
    args = parser.parse_args()

    records = locked_records(args.lock, args.platform, read_explicit(args.explicit))
    if args.python_only:
        records = python_closure(records)
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
    # Leave without finalizing the interpreter: a py-rattler (tokio) thread that hands its
    # last result back while Python finalizes aborts it (PyGILState_Release). Everything
    # is installed and written by now; only the output needs flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
