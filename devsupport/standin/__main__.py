"""`python -m devsupport.standin up|relock`: the conda-forge stand-in's command line.

    up      build (or reuse) and serve the channel, make (or reuse) the base images, and
            print STANDIN_* shell assignments on stdout for `make` to source
    relock  re-resolve the pinned wheels (needs PyPI and uv)

Progress goes to stderr (logging); a failure is one line there and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from buildtool.errors import BuildToolError
from devsupport import log_progress
from devsupport.standin import up

log = logging.getLogger("devsupport.standin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devsupport.standin",
        description="The local conda-forge stand-in (HTTP) and base images, for offline use",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("up", help="build and serve the channel, make the base images")
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
        standin = up()
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
