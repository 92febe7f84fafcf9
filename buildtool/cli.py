"""`buildtool`: a thin command line over the library's stages."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from buildtool import lock as locking
from buildtool.common import (
    BuildToolError,
    InputError,
    LockStaleError,
    UsageError,
    read_published,
    write_atomic,
    write_if_changed,
)
from buildtool.image import (
    RenderedPair,
    build_pair,
    engine_available,
    full_client_text,
    package_cache,
    render,
    test,
)
from buildtool.lock import (
    CLIENT_DIR,
    FULL_REQUIREMENTS_FILE,
    REQUIREMENTS_FILE,
    LockFile,
    client_files,
    diff_locks,
    diff_markdown,
    diff_text,
    dump_lock,
    read_lock,
    write_client_files,
)
from buildtool.publish import Options, parent_reader, plan, plan_json, publish, verify
from buildtool.site import (
    CHARTS_FILE,
    SITE_FILE,
    VALUES_PATH,
    deploy_manifests,
    gateway_chart,
    generate_helm_values,
    init_site,
    load_site_settings,
    site_registry,
    user_namespace,
    user_registry,
    write_catalog,
    write_charts,
    write_helm_values,
    write_manifests,
)
from buildtool.spec import (
    check_environment_name,
    environment_names,
    import_environment,
    load,
    load_environment,
)
from compat.vocabulary import PLATFORM_NAMES, PLATFORMS, ROLES, platform_named

logger = logging.getLogger("buildtool.cli")  # not __name__: `python -m buildtool.cli` too
#: The hub user a notebook runs for: JupyterHub sets it in every single-user server.
HUB_USER_ENV = "JUPYTERHUB_USER"
#: `client --output -`: the pins on stdout.
STDOUT = Path("-")
#: The distribution `buildtool` comes with, whose version `--version` prints.
DISTRIBUTION = "daskhub-images"
#: What the exit status means, for every command; each command's --help says it for itself.
EXIT_STATUS = (
    "exit status: 0 done; 1 what the command checks or does failed (a solve, a build, an "
    "image test, the registry, a stale lock); 2 the input is wrong (a spec, site.yaml, a "
    "name or a flag), and nothing is written. Each command's --help says what they mean "
    "for it."
)
#: What exit status 2 means, for every command: nothing was written.
BAD_INPUT = (
    "the input is wrong (a spec, site.yaml, a name or a flag): one line naming the file, "
    "the key and the line (for flags, after the usage line); nothing is written"
)


def _names(args: argparse.Namespace) -> list[str]:
    if args.all and args.env:
        raise UsageError("name environments or pass --all, not both")
    if args.all:
        return environment_names(args.root)
    if not args.env:
        raise UsageError("name an environment, or pass --all")
    for name in args.env:
        check_environment_name(args.root, name)
    return args.env


def cmd_list(args: argparse.Namespace) -> int:
    for name in _names(args):
        load_environment(args.root, name)  # validates the spec and its parents
        print(name)
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    if args.check:
        if args.channel or args.platform:
            raise UsageError(
                "--check checks each lock against its spec: no --channel or --platform"
            )
        return _check_locks(args)
    targets = [load(args.root, name) for name in _names(args)]
    parents = parent_reader(args.build_dir)
    for target in targets:
        locked = locking.lock(target, args.channel, args.platform, parents)
        _write_lock(args, target.name, target.lock_path, locked.lock, locked.baseline)
    return 0


def _check_locks(args: argparse.Namespace) -> int:
    """Every lock checked: one failure is its one line; with several, each is a line and
    the last says how many, with the worst exit code of them."""
    names = _names(args)
    failed: list[BuildToolError] = []
    for name in names:
        try:
            locking.check(load(args.root, name))
        except BuildToolError as exc:
            if len(names) == 1:
                raise
            print(f"error: {exc}", file=sys.stderr)
            failed.append(exc)
            continue
        print(f"{name}: lock is up to date with its spec")
    if failed:
        error = LockStaleError(f"{len(failed)} of {len(names)} locks to make again; see above")
        error.exit_code = max(exc.exit_code for exc in failed)
        raise error
    return 0


def _write_lock(
    args: argparse.Namespace, name: str, path: Path, lock: LockFile, old: LockFile | None = None
) -> None:
    """Write a lock and its diff against the lock it replaces (or `old`)."""
    old = read_lock(path) if path.exists() else old
    write_if_changed(path, dump_lock(lock))
    changes = diff_locks(old, lock)
    diff_path = args.build_dir / name / "lock-diff.md"
    write_atomic(diff_path, diff_markdown(name, changes))
    print(diff_text(name, changes))
    print(f"wrote {path} ({len(lock.package)} packages) and {diff_path}")


def _platform(text: str) -> str:
    """A platform in either spelling (`linux-aarch64`, `linux/arm64`), as its conda subdir."""
    found = platform_named(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a platform: use {PLATFORM_NAMES}")
    return found.subdir


def _base_image(text: str) -> tuple[str | None, str]:
    """`--base-image REF` (None: every platform) or `PLATFORM=REF`; a reference never
    holds `=`, so what is before one must name a platform."""
    platform, equals, ref = text.partition("=")
    if not equals:
        return None, text
    if not ref:
        raise argparse.ArgumentTypeError(f"{text!r}: no image reference after the =")
    return _platform(platform), ref


def _base_images(values: list[tuple[str | None, str]] | None) -> dict[str, str]:
    """platform -> reference: each `PLATFORM=REF`, and a bare `REF` for the others."""
    chosen = {platform: ref for platform, ref in values or [] if platform is not None}
    for platform, ref in values or []:
        if platform is None:
            chosen.update({p: ref for p in PLATFORMS if p not in chosen})
    return chosen


def _render(args: argparse.Namespace, name: str) -> RenderedPair:
    env = load_environment(args.root, name)
    if not args.registry and load_site_settings(args.root).registry is not None:
        args.registry = site_registry(args.root)  # the site's own, unless given
    return render(
        env,
        read_lock(env.lock_path),
        args.build_dir,
        registry=args.registry,
        base_images=_base_images(args.base_image),
    )


def cmd_render(args: argparse.Namespace) -> int:
    for name in _names(args):
        pair = _render(args, name)
        print(f"rendered {pair.directory}: {pair.worker.ref} and {pair.notebook.ref}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    for name in _names(args):
        pair = _render(args, name)
        build_pair(pair, echo=args.verbose)
        print(f"built {pair.worker.ref} and {pair.notebook.ref}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    for name in _names(args):
        test(load(args.root, name), args.build_dir)
        print(f"{name}: image tests passed")
    return 0


def _image_tests(choice: str) -> bool:
    """`--image-tests`: whether the image tests run before the tags. auto: when a Docker
    engine answers; yes: always (an error now without one); no: never."""
    if choice == "no":
        return False
    if engine_available():
        return True
    if choice == "yes":
        raise BuildToolError(
            "--image-tests yes: no Docker engine answers (start dockerd, or set DOCKER_HOST)"
        )
    logger.info("no Docker engine answers: the pairs are published without their image tests")
    return False


def cmd_publish(args: argparse.Namespace) -> int:
    if args.user and args.registry:
        raise UsageError("--user names the registry namespace: not with --registry")
    targets = [load(args.root, name) for name in _names(args)]
    if args.user:
        args.registry = user_registry(args.root, args.user, targets)
    args.registry = args.registry or site_registry(args.root)
    options = Options(
        registry=args.registry,
        build_dir=args.build_dir,
        base_images=_base_images(args.base_image),
        image_tests=_image_tests(args.image_tests),
        verbose=args.verbose,
        max_installed_mb=args.max_installed_mb,
    )
    for target in targets:
        publication = publish(target, options)
        for role in ROLES:
            print(f"{role}: {publication.images.image(role).ref}")
        print(f"bytes pushed: {publication.bytes_pushed}")
        if publication.bytes_fetched is not None:
            print(f"bytes fetched: {publication.bytes_fetched}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    args.registry = args.registry or site_registry(args.root)
    pairs = [_render(args, name) for name in _names(args)]
    if args.names:
        for entry in plan(pairs)["include"]:
            print(entry["environment"])
    else:
        print(plan_json(pairs))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    different = 0
    for name in _names(args):
        if not args.registry:  # render as it was published
            published = read_published(args.build_dir, name)
            args.registry = published.registry if published else None
        for verdict in verify(_render(args, name), echo=args.verbose):
            state = "identical" if verdict.same else "DIFFERENT"
            print(
                f"{name} {verdict.role}: {state}: rebuilt {verdict.rebuilt}, "
                f"published {verdict.published}"
            )
            for line in verdict.differences:
                print(f"  {line}")
            different += not verdict.same
    return 1 if different else 0


def cmd_client(args: argparse.Namespace) -> int:
    names = _names(args)
    if args.output is not None and len(names) > 1:
        raise UsageError("--output takes one environment")
    for name in names:
        target = load(args.root, name)
        files = client_files(name, read_lock(target.lock_path), target.lock_path)
        if args.full:  # every distribution, read from the packages (fetched if need be)
            files[FULL_REQUIREMENTS_FILE] = full_client_text(
                name, target.lock_path, package_cache()
            )
        if args.output == STDOUT:
            sys.stdout.write(files[FULL_REQUIREMENTS_FILE if args.full else REQUIREMENTS_FILE])
            continue
        for path in write_client_files(files, args.output or args.build_dir / name / CLIENT_DIR):
            print(f"wrote {path}")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    changed = write_catalog(args.root, args.build_dir, args.out)
    for path in changed:
        print(f"{'wrote' if path.exists() else 'removed'} {path}")
    print(f"{args.out}: {len(changed)} page(s) changed")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # The service's own dependencies (JupyterHub's service-auth) are the `serve` extra.
    from buildtool.site import ServiceSettings, serve

    port = args.port
    if port is None:  # a service the hub starts is told where to listen
        url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
        port = urllib.parse.urlsplit(url).port if url else None
    if port is None:
        raise UsageError("serve needs --port, or JUPYTERHUB_SERVICE_URL from the hub")
    site = load_site_settings(args.root)
    if site.user_images is None or site.self_service is None:
        raise BuildToolError(f"{args.root / SITE_FILE}: serve needs user_images and self_service")
    settings = ServiceSettings(
        root=args.root,
        build_dir=args.build_dir,
        state=args.state,
        image_tests=_image_tests(args.image_tests),
        limits=site.self_service,
        user_images=site.user_images,
        **({"spawn_query": args.spawn_query} if args.spawn_query else {}),
    )
    serve(settings, port, args.address)
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    user = args.user if args.user is not None else os.environ.get(HUB_USER_ENV, "")
    if not user:
        raise InputError(
            f"no user: pass --user NAME, or set {HUB_USER_ENV} (a hub notebook has it)"
        )
    print(f"{user} -> {user_namespace(args.root, user)}")
    return 0


def cmd_helm_values(args: argparse.Namespace) -> int:
    if args.default is not None:
        check_environment_name(args.root, args.default)
    values = generate_helm_values(args.root, args.build_dir, args.default)
    chart = gateway_chart(args.root, args.build_dir)  # checked before anything is written
    changed = write_helm_values(values, args.output)
    profiles = len(values["jupyterhub"]["singleuser"]["profileList"])
    print(f"{'wrote' if changed else 'unchanged:'} {args.output} ({profiles} profile(s))")
    charts = args.output.parent / CHARTS_FILE
    changed = write_charts(chart, charts)
    print(f"{'wrote' if changed else 'unchanged:'} {charts} (dask-gateway chart {chart.version})")
    for path in write_manifests(args.output.parent, deploy_manifests(args.root, args.build_dir)):
        print(f"wrote {path}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    for path in init_site(args.folder):
        print(f"wrote {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = import_environment(args.environment_yml, args.name, args.root, args.extends)
    print(f"wrote {path}")
    return 0


def _env_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("env", nargs="*", help="environment name(s)")
    p.add_argument("--all", action="store_true", help="every environment that is not abstract")


def _image_options(p: argparse.ArgumentParser) -> None:
    _env_options(p)
    p.add_argument(
        "--registry",
        help="registry and namespace, host[:port]/path (default: site.yaml's registry)",
    )
    p.add_argument(
        "--base-image",
        action="append",
        type=_base_image,
        metavar="[PLATFORM=]REF",
        help="override the spec's base image (for one platform with PLATFORM=, either "
        f"spelling: {PLATFORM_NAMES})",
    )


def _image_tests_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--image-tests",
        choices=("auto", "yes", "no"),
        default="auto",
        help=f"run the image tests of {what} (pytest + testinfra, a real Dask cluster; "
        "they need a Docker engine) before its tags: auto, when an engine answers; yes, "
        "always (an error without one); no, publish untested (its record says so)",
    )


def _general_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before its name or after it. The top level holds
    their defaults; after the name each is SUPPRESSed unless given, so that argparse,
    which copies a command's values over the top level's, keeps a value given before
    the name. Progress is logged on stderr (INFO) and the engine's own build output goes
    to log files; -q keeps warnings and errors only; -v adds the details (DEBUG) and
    streams the build output too. What a command answers is on stdout."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--root",
        type=Path,
        default=default(None),
        help="folder of environment specs (default: ./environments if it exists, else .)",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=default(Path("build")),
        help="where generated files go",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="warnings and errors only",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log the details, and stream build output",
    )


def _version() -> str:
    """`buildtool (daskhub-images) 0.1.0`: the installed distribution's version."""
    try:
        return f"%(prog)s ({DISTRIBUTION}) {metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        return f"%(prog)s ({DISTRIBUTION} is not installed: no version)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buildtool", description=__doc__, epilog=EXIT_STATUS)
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    _general_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    general = argparse.ArgumentParser(add_help=False)
    _general_options(general, defaults=False)

    def add_parser(
        name: str, help: str, done: str, failed: str | None = None
    ) -> argparse.ArgumentParser:
        """A command, with what its exit status means (`--help` ends with it)."""
        one = f"1 {failed}; " if failed else ""
        epilog = f"exit status: 0 {done}; {one}2 {BAD_INPUT}"
        command = sub.add_parser(
            name, parents=[general], help=help, description=f"{help}.", epilog=epilog
        )
        command.set_defaults(command_parser=command)  # its usage line, for a UsageError
        return command

    p = add_parser(
        "list",
        help="print environment names (validating their specs)",
        done="the names are printed",
    )
    _env_options(p)
    p.set_defaults(func=cmd_list)

    p = add_parser(
        "lock",
        help="solve an environment once and write its conda-lock.yml",
        done="locked (with --check: every lock is up to date)",
        failed="no solution, or with --check a lock to make again (each one a line)",
    )
    _env_options(p)
    p.add_argument("--channel", action="append", help="use this channel instead of the spec's")
    p.add_argument(
        "--platform",
        action="append",
        type=_platform,
        metavar="PLATFORM",
        help=f"lock for this platform instead, either spelling: {PLATFORM_NAMES}",
    )
    p.add_argument("--check", action="store_true", help="only check the lock is up to date")
    p.set_defaults(func=cmd_lock)

    p = add_parser(
        "render",
        help="write the pair's Dockerfiles and build context",
        done="rendered",
        failed="a lock older than its spec, or one another machine cannot fetch",
    )
    _image_options(p)
    p.set_defaults(func=cmd_render)

    p = add_parser(
        "build",
        help="render, then build both images, layered by package",
        done="built and loaded",
        failed="a stale lock, a fetch, the engine, or the layer limit",
    )
    _image_options(p)
    p.set_defaults(func=cmd_build)

    p = add_parser(
        "test",
        help="run the image tests (pytest + testinfra) on a built pair, or a published "
        "extension pair (pulled by digest)",
        done="every image test passed",
        failed="an image test failed, or there is no pair to test",
    )
    _env_options(p)
    p.set_defaults(func=cmd_test)

    p = add_parser(
        "publish",
        help="build, test, then push the pair by digest and tag it",
        done="published, or already in the registry",
        failed="a build, an image test, the registry or a limit; no tag moved",
    )
    _image_options(p)
    _image_tests_option(p, "each pair")
    p.add_argument(
        "--max-installed-mb",
        type=float,
        help="an extension pair: the most its additions may write, uncompressed (MB; "
        "conda packages and pip pins each); default 20000",
    )
    p.add_argument(
        "--user",
        help="an extension pair: publish into this hub user's namespace (site.yaml's "
        "user_images) instead of --registry",
    )
    p.set_defaults(func=cmd_publish)

    p = add_parser(
        "plan",
        help="print, as JSON for a CI matrix, the pairs not yet in the registry",
        done="the plan is printed (maybe empty)",
        failed="the registry could not be asked",
    )
    _image_options(p)
    p.add_argument("--names", action="store_true", help="only their names, one per line")
    p.set_defaults(func=cmd_plan)

    p = add_parser(
        "verify",
        help="rebuild a published pair from its lock on clean caches; compare digests",
        done="every digest is the published one",
        failed="a digest differs (the first differing layer is named)",
    )
    _image_options(p)
    p.set_defaults(func=cmd_verify)

    p = add_parser(
        "client",
        help="write the pip and conda pins of a client matching the pair (build/ENV/client/, "
        "or --output)",
        done="the pins are written",
        failed="no lock to read",
    )
    _env_options(p)
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help=f"the folder for one environment's pins (default: build/ENV/{CLIENT_DIR}/); "
        f"-: print its {REQUIREMENTS_FILE} (with --full, the full pins) on stdout instead",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"also {FULL_REQUIREMENTS_FILE}: every Python distribution of the worker set, "
        "for a laptop that builds the analysis's task graphs (coffea, dask-awkward); read "
        "from the packages themselves, which are fetched into the package cache if need be",
    )
    p.set_defaults(func=cmd_client)

    p = add_parser(
        "catalog",
        help="write the image table, package manifests and lock diffs",
        done="the pages are current",
        failed="a lock or a record could not be read",
    )
    p.add_argument("--out", type=Path, default=Path("catalog"), help="folder for the pages")
    p.set_defaults(func=cmd_catalog)

    p = add_parser(
        "serve",
        help="run the hub service where users build their own pairs",
        done="stopped",
        failed="the service cannot start",
    )
    p.add_argument("--port", type=int, help="where to listen (else from JUPYTERHUB_SERVICE_URL)")
    p.add_argument(
        "--address",
        default="127.0.0.1",
        help="the address to listen on (its Deployment: 0.0.0.0)",
    )
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="the service's own folder, on a volume of its own (users' workspaces, queue)",
    )
    _image_tests_option(p, "each user's pair")
    p.add_argument(
        "--spawn-query",
        help="the hub's spawn query that starts an image, with {image} (default: "
        "KubeSpawner's own-image profile)",
    )
    p.set_defaults(func=cmd_serve)

    p = add_parser(
        "whoami",
        help="print where a hub user's own pairs go: site.yaml's user_images with the name "
        "escaped (a-z and 0-9 kept, any other byte -XX: alice.b -> alice-2eb)",
        done="the namespace is printed",
    )
    p.add_argument(
        "--user",
        metavar="NAME",
        help=f"the hub user (default: ${HUB_USER_ENV}, set in every notebook)",
    )
    p.set_defaults(func=cmd_whoami)

    p = add_parser(
        "helm-values",
        help="write the daskhub chart values of the published pairs",
        done="the values and manifests are current",
        failed="no one dask-gateway version serves every pair",
    )
    p.add_argument("--output", type=Path, default=VALUES_PATH, help="the values file to write")
    p.add_argument("--default", help="environment preselected in the profile list (else the first)")
    p.set_defaults(func=cmd_helm_values)

    p = add_parser(
        "init",
        help="start a site's own repository of environments in FOLDER",
        done="the site is written",
    )
    p.add_argument(
        "folder", type=Path, metavar="FOLDER", help="a new or empty folder for the repository"
    )
    p.set_defaults(func=cmd_init)

    p = add_parser(
        "import",
        help="write environments/NAME/env.yaml from an environment.yml",
        done="the spec is written",
    )
    p.add_argument(
        "environment_yml", type=Path, metavar="ENVIRONMENT_YML", help="a conda environment file"
    )
    p.add_argument("--name", required=True, help="the environment to write")
    p.add_argument("--extends", help="the parent spec (e.g. base); what it asks for is left out")
    p.set_defaults(func=cmd_import)

    return parser


def default_root() -> Path:
    """`./environments` when there is one (this repository's layout), else the current
    directory: a site's own repository of environment folders."""
    candidate = Path("environments")
    return candidate if candidate.is_dir() else Path(".")


def log_to_stderr(level: int) -> None:
    """The tool's own loggers (`buildtool.*`) at `level`, as plain lines on stderr. Other
    handlers (a host program's, pytest's) are left as they are."""
    logger = logging.getLogger("buildtool")
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if h.get_name() == "buildtool-cli"]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("buildtool-cli")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr(
        logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    )
    if args.root is None:
        args.root = default_root()
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except UsageError as exc:
        command: argparse.ArgumentParser = args.command_parser
        command.error(str(exc))  # the usage line and the message; exit status 2
    except BuildToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def run() -> None:
    """The console script: `main`, then leave without finalizing the interpreter.

    py-rattler answers from tokio threads that may still be handing a solve's result back
    when a short command (a refused solve, say) is already exiting; a thread that attaches
    to a finalizing interpreter crashed it (SIGSEGV instead of exit code 1, about one run
    in a hundred). Every file is written and closed by now, so only the streams need
    flushing.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
