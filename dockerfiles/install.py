"""Install an explicit lock into a conda prefix with py-rattler, without solving.

Runs inside the image's builder stage. Each line of the explicit file is
`URL#sha256:HEX`; `file:///pkgs/...` URLs are read from the bind-mounted package folder,
others are downloaded. Every archive is checked against its sha256 before it is used.

With `--delta DIR`, packages already in the prefix are kept as they are and only the
files the install adds or changes are copied to DIR: the notebook image's layer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import rattler


def read_explicit(path: Path) -> list[tuple[str, str]]:
    """(url, sha256) pairs, in file order."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        url, _, fragment = line.partition("#")
        if not fragment.startswith("sha256:"):
            sys.exit(f"{path}: {url}: no sha256 in the explicit lock")
        entries.append((url, fragment.removeprefix("sha256:")))
    return entries


def fetch(url: str, sha256: str, downloads: Path) -> Path:
    if url.startswith("file://"):
        archive = Path(url.removeprefix("file://"))
    else:
        archive = downloads / url.rsplit("/", 1)[-1]
        with urllib.request.urlopen(url) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{url}: sha256 is {digest}, the lock says {sha256}")
    return archive


def snapshot(prefix: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(prefix)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in prefix.rglob("*")
        if not p.is_dir() or p.is_symlink()
    }


def copy_delta(prefix: Path, before: dict[str, tuple[int, int]], delta: Path) -> int:
    """Copy what is new or changed since `before` from prefix to delta; returns a count."""
    copied = 0
    for relative, state in snapshot(prefix).items():
        if before.get(relative) == state:
            continue
        source, target = prefix / relative, delta / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copy2(source, target)
        copied += 1
    return copied


async def _records(archives: list[Path]) -> list[rattler.RepoDataRecord]:
    return list(
        await asyncio.gather(*(rattler.RepoDataRecord.from_package_archive(a) for a in archives))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("explicit", type=Path)
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--delta", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as downloads:
        archives = [fetch(u, s, Path(downloads)) for u, s in read_explicit(args.explicit)]
        records = asyncio.run(_records(archives))
        meta = args.prefix / "conda-meta"
        installed = [rattler.PrefixRecord.from_path(p) for p in sorted(meta.glob("*.json"))]
        before = snapshot(args.prefix) if args.prefix.exists() else {}
        asyncio.run(
            rattler.install(
                records,
                target_prefix=args.prefix,
                installed_packages=installed,
                show_progress=False,
            )
        )
    print(f"installed {len(records) - len(installed)} packages into {args.prefix}")
    if args.delta:
        args.delta.mkdir(parents=True, exist_ok=True)
        print(f"{copy_delta(args.prefix, before, args.delta)} files in the delta layer")


if __name__ == "__main__":
    main()
