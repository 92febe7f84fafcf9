"""`buildtool`: a thin command line over the library's stages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from buildtool import lock as locking
from buildtool.errors import BuildToolError
from buildtool.lockdiff import diff_locks, diff_markdown, diff_text
from buildtool.lockfile import dump_lock, read_lock, write_atomic
from buildtool.spec import environment_names, load_environment


def _names(args: argparse.Namespace) -> list[str]:
    if args.all:
        return environment_names(args.root)
    if not args.env:
        raise BuildToolError("name an environment, or pass --all")
    return args.env


def cmd_lock(args: argparse.Namespace) -> int:
    envs = [load_environment(args.root, name) for name in _names(args)]
    if args.check:
        for env in envs:
            locking.check_lock(env)
            print(f"{env.name}: lock is up to date with its spec")
        return 0
    solver = locking.pick_solver(args.solver)
    for env in envs:
        old = read_lock(env.lock_path) if env.lock_path.exists() else None
        lock = locking.lock_environment(env, args.channel, args.platform, solver)
        text = dump_lock(lock)
        if not env.lock_path.exists() or env.lock_path.read_text() != text:
            write_atomic(env.lock_path, text)
        changes = diff_locks(old, lock)
        diff_path = args.build_dir / env.name / "lock-diff.md"
        write_atomic(diff_path, diff_markdown(env.name, changes))
        print(diff_text(env.name, changes))
        print(f"wrote {env.lock_path} ({len(lock.package)} packages) and {diff_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buildtool", description=__doc__)
    parser.add_argument(
        "--root", type=Path, default=Path("environments"), help="folder of environment specs"
    )
    parser.add_argument(
        "--build-dir", type=Path, default=Path("build"), help="where generated files go"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lock", help="solve an environment once and write its conda-lock.yml")
    p.add_argument("env", nargs="*", help="environment name(s)")
    p.add_argument("--all", action="store_true", help="every environment that is not abstract")
    p.add_argument("--channel", action="append", help="use this channel instead of the spec's")
    p.add_argument("--platform", action="append", help="lock for this platform instead")
    p.add_argument("--solver", choices=["auto", "rattler", "conda-lock"], default="auto")
    p.add_argument("--check", action="store_true", help="only check the lock is up to date")
    p.set_defaults(func=cmd_lock)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except BuildToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
