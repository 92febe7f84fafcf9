"""Command line: ``daskhub-compat``.

    daskhub-compat live tcp://127.0.0.1:8786 [--format table|markdown|json] [--output FILE]
    daskhub-compat live --gateway-cluster NAME
    daskhub-compat diff lock:conda-lock.yml#notebook lock:conda-lock.yml#worker
    daskhub-compat diff image:REGISTRY/notebook:TAG env
    daskhub-compat preflight REGISTRY/worker:TAG    (or an environment name) [--format ...]

Exit codes: 0 no error-level mismatch, 1 error-level mismatch, 2 the check
could not run (unreachable scheduler, unreadable source, bad arguments) or,
without an error-level mismatch, some worker still in the cluster did not
answer in time. Workers that left the cluster during the check are reported
but do not change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import compat
from compat import compare, live, preflight, registry, report, sources
from compat.model import CheckError
from compat.vocabulary import LINUX_64, PLATFORM_NAMES, Platform, platform_named

EXIT_OK, EXIT_MISMATCH, EXIT_CANNOT_CHECK = 0, 1, 2
PROG = "daskhub-compat"
#: What the exit status means (the module's docstring), for `--help`: the tool's, then
#: each command's.
_MISMATCH = (
    f"exit status: {EXIT_OK} no error-level mismatch; {EXIT_MISMATCH} an error-level mismatch"
)
EXIT_STATUS = {
    PROG: f"{_MISMATCH}; {EXIT_CANNOT_CHECK} the check could not run (bad arguments, an "
    "unreadable source, registry or scheduler). Each command's --help says more.",
    "live": f"{_MISMATCH}; {EXIT_CANNOT_CHECK} the check could not run (bad arguments, an "
    "unreachable scheduler) or, with no error-level mismatch, a worker still in the cluster "
    "did not answer in time. Workers that left during the check are reported and change "
    "nothing.",
    "diff": f"{_MISMATCH}; {EXIT_CANNOT_CHECK} a source could not be read, or bad arguments.",
    "preflight": f"exit status: {EXIT_OK} this Python matches the workers; {EXIT_MISMATCH} an "
    "error-level mismatch (the pip command that fixes it is printed); "
    f"{EXIT_CANNOT_CHECK} the workers' packages could not be read (the registry, the "
    "site's lock), or bad arguments.",
}


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _platform(text: str) -> Platform:
    """`--platform`: either spelling of a pair's platform."""
    found = platform_named(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a platform: use {PLATFORM_NAMES}")
    return found


def _version() -> str:
    """`daskhub-compat 0.1.0`: the installed distribution's version. A checker put on
    PYTHONPATH without being installed (as tests/compat does in its venvs) has none."""
    try:
        return f"{PROG} {metadata.version(PROG)}"
    except metadata.PackageNotFoundError:
        return f"{PROG} (not installed: no version)"


def _format_option(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """`--format`, every command's, before its name or after it: the top level holds the
    default; after the name it is SUPPRESSed unless given (argparse copies a command's
    values over the top level's)."""
    parser.add_argument(
        "--format",
        choices=tuple(report.RENDERERS),
        default="table" if defaults else argparse.SUPPRESS,
        help="the report as a table, Markdown or JSON (default: table)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=compat.__doc__.splitlines()[0], epilog=EXIT_STATUS[PROG]
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    _format_option(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)

    general = argparse.ArgumentParser(add_help=False)
    _format_option(general, defaults=False)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--output", type=Path, help="write the report here; print only its summary line"
    )

    check = commands.add_parser(
        "live",
        parents=[general, output],
        help="check a running cluster: client, scheduler, workers",
        epilog=EXIT_STATUS["live"],
    )
    target = check.add_mutually_exclusive_group(required=True)
    target.add_argument("address", nargs="?", help="scheduler address, e.g. tcp://host:8786")
    target.add_argument("--gateway-cluster", metavar="NAME", help="dask-gateway cluster name")
    check.add_argument(
        "--timeout",
        type=float,
        default=live.DEFAULT_TIMEOUT_S,
        help="seconds to wait for the scheduler, then for the workers (default: %(default)s)",
    )
    check.add_argument(
        "--settle-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause between listing the workers and querying them (default: 0)",
    )
    check.add_argument("-v", "--verbose", action="store_true", help="report progress on stderr")

    diff = commands.add_parser(
        "diff",
        parents=[general, output],
        help="compare two static sources (lockfile, image, env)",
        epilog=EXIT_STATUS["diff"],
    )
    diff.add_argument("first", help="lock:PATH#IMAGE[@PLATFORM], image:REF, prefix:PATH or env")
    diff.add_argument("second", help="same forms as the first source")

    pre = commands.add_parser(
        "preflight",
        parents=[general],
        help="check this Python against a pair's workers: no cluster needed",
        epilog=EXIT_STATUS["preflight"],
    )
    pre.add_argument(
        "ref", metavar="REF", help="published image (host/name:tag or @sha256:...) or environment"
    )
    pre.add_argument(
        "--root",
        type=Path,
        help="site folder of <env>/conda-lock.yml (default: ./environments if any, else .)",
    )
    pre.add_argument(
        "--platform",
        type=_platform,
        default=LINUX_64,
        metavar="PLATFORM",
        help=f"the workers' platform, either spelling: {PLATFORM_NAMES} (default: %(default)s)",
    )
    pre.add_argument(
        "--timeout",
        type=float,
        default=registry.DEFAULT_TIMEOUT_S,
        help="seconds per registry request (default: %(default)s)",
    )
    pre.add_argument(
        "--full",
        action="store_true",
        help=f"compare every pin of the pair's full client pins ({preflight.FULL_FILE}: "
        "attached to a published image, or for an environment's name the one `buildtool "
        "client NAME --full` wrote under --build-dir), not only what distributed compares",
    )
    pre.add_argument(
        "--build-dir",
        type=Path,
        default=Path("build"),
        help="with --full and an environment's name: the build folder (default: %(default)s)",
    )
    return parser


def _live_report(args: argparse.Namespace) -> compare.Report:
    progress = _progress if args.verbose else live.quiet
    target = live.Target(address=args.address, gateway_cluster=args.gateway_cluster)
    snapshot = live.collect(target, args.timeout, args.settle_delay, progress)
    return compare.compare_cluster(snapshot)


def _diff_report(args: argparse.Namespace) -> compare.Report:
    first, second = sources.load(args.first), sources.load(args.second)
    if first.label == second.label:
        first.label, second.label = args.first, args.second
    return compare.compare_sets(first, second)


def _preflight(args: argparse.Namespace) -> int:
    try:
        if args.full:
            result = preflight.run_full(args.ref, args.build_dir, args.timeout)
        else:
            result = preflight.run(args.ref, args.root, args.platform, args.timeout)
    except CheckError as error:
        message = " ".join(str(error).split())  # one line, whatever the source said
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    sys.stdout.write(preflight.render(result, args.format))
    return EXIT_MISMATCH if result.errors else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "preflight":
        return _preflight(args)
    try:
        result = _live_report(args) if args.command == "live" else _diff_report(args)
    except CheckError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    text = report.render(result, args.format)
    if args.output:
        try:
            args.output.write_text(text)
        except OSError as error:
            print(f"{PROG}: error: cannot write {args.output}: {error.strerror}", file=sys.stderr)
            return EXIT_CANNOT_CHECK
        print(report.summary(result))
    else:
        sys.stdout.write(text)
    if result.errors:
        return EXIT_MISMATCH
    return EXIT_CANNOT_CHECK if result.unanswered else EXIT_OK
