"""`python -m devsupport.standin up|relock`: the conda-forge stand-in's command line.

    up      build (or reuse) and serve the channel, make (or reuse) the base images asked
            for, and print STANDIN_* shell assignments on stdout for `make` to source:
            only what was made. Base images: the runtime of each --platform, and of each
            platform an --environment's spec (or with --all, any spec) builds for;
            linux-64 when none is named; the builder image with --builder.
    relock  re-resolve the pinned wheels (needs PyPI and uv)

Progress goes to stderr (logging); a failure is one line there and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from buildtool.common import BuildToolError
from buildtool.spec import environment_names, load_environment
from devsupport import log_progress
from devsupport.standin import DEFAULT_PLATFORMS, up

log = logging.getLogger("devsupport.standin")


def platforms_of(root: Path, names: list[str]) -> list[str]:
    """The platforms the named environments' specs build for, in their order."""
    return list(dict.fromkeys(p for name in names for p in load_environment(root, name).platforms))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devsupport.standin",
        description="The local conda-forge stand-in (HTTP) and base images, for offline use",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("up", help="build and serve the channel, make the base images asked for")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="PLATFORM",
        help="make this platform's runtime base image (repeatable; default linux-64)",
    )
    p.add_argument(
        "--environment",
        action="append",
        default=[],
        metavar="NAME",
        help="make the runtime base image of every platform NAME's spec builds for",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="make the runtime base image of every platform any environment builds for",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("environments"),
        help="folder of environment specs, for --environment (default: ./environments)",
    )
    p.add_argument("--builder", action="store_true", help="make the builder image too")
    sub.add_parser("relock", help="re-pin the stand-in's wheels (needs PyPI and uv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_progress()
    try:
        if args.action == "relock":
            from devsupport.standin.channel import relock

            log.info("%d wheels pinned", len(relock()))
            return 0
        names = environment_names(args.root) if args.all else args.environment
        platforms = [*args.platform, *platforms_of(args.root, names)]
        standin = up(platforms or DEFAULT_PLATFORMS, builder=args.builder)
    except BuildToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(standin.env_lines(), end="")
    return 0


if __name__ == "__main__":
    # As buildtool's console script does: py-rattler's threads may still be running.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
