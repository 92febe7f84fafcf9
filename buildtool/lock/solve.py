"""One solve per environment and platform, written as one lock for both images.

The union of every MatchSpec (inherited, common, notebook, worker) is solved once. The
worker set is the dependency closure of the worker's roots *within that solve*, so the
worker never gets a version, build or file that the notebook does not have too.

The solver is py-rattler, in-process: the same solver against conda-forge in production
and against the local stand-in channel here. The lock is written in conda-lock's v1
format, which conda-lock and micromamba read too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rattler
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.common import (
    BuildToolError,
    InputError,
    LockStaleError,
    SolveError,
    SpecError,
    grammar,
)
from buildtool.lock.laptop import disagreements, platform_versions
from buildtool.lock.lockfile import (
    NOTEBOOK_CATEGORY,
    WORKER_CATEGORY,
    LockChannel,
    LockedPackage,
    LockFile,
    LockMetadata,
    PackageHash,
    PipHash,
    PipLockedPackage,
    check_site_channels,
    read_lock,
)
from buildtool.lock.parent import Parent
from buildtool.lock.wheels import find_wheel, parse_pin
from buildtool.spec import (
    DEFAULT_VIRTUAL_PACKAGES,
    SPEC_FILE,
    Environment,
    Extension,
    Requirement,
    Target,
)
from compat.vocabulary import PLATFORMS

logger = logging.getLogger(__name__)

# Rounds of pinning the platforms' worker sets to agree (a pin can move other packages).
AGREE_ROUNDS = 3
# Seconds for one repodata request: an unreachable channel fails the lock, never hangs it.
FETCH_TIMEOUT = 120
# rattler's explanation when a package needs a virtual package the solve does not have:
#   └─ tensorflow 2.19.1 would require           (or: pytorch 2.3.1 | 2.10.0 would require)
#      └─ __cuda *, for which no candidates were found.
_MISSING_VIRTUAL = re.compile(
    r"(?P<package>[A-Za-z0-9_.\-]+) (?P<version>\S+(?: \| \S+)*) would require\s*\n\s*[├└]─ "
    r"(?P<virtual>__[a-z0-9_]+)(?: (?P<spec>[^,\n]*?))?, for which no candidates were found"
)


class MissingVirtualPackage(SolveError):
    """A package needs a virtual package (`__cuda`) that the solve was not given."""

    def __init__(self, package: str, virtual: str, spec: str, platform: str) -> None:
        super().__init__(f"{package} needs {virtual} {spec}".strip() + f" on {platform}")
        self.package, self.virtual, self.spec, self.platform = package, virtual, spec, platform


def virtual_packages(declared: dict[str, str] | None = None) -> dict[str, str]:
    """The virtual packages a solve assumes: the defaults, then what a spec `declared`."""
    return {**DEFAULT_VIRTUAL_PACKAGES, "__archspec": "1", **(declared or {})}


@dataclass(frozen=True)
class SolvedPackage:
    """One record of a solve."""

    name: str
    version: str
    build: str
    url: str
    md5: str
    sha256: str
    depends: tuple[str, ...]


def channel_client(timeout: int) -> rattler.Client:
    """rattler's HTTP client for channels, for the solve and the install alike: with
    rattler's authentication middleware, which takes a channel's credentials from
    `RATTLER_AUTH_FILE` or the keyring, so that no URL ever needs to carry them, and its
    retry middleware for the transient errors of a busy server (rattler's own stack)."""
    from rattler.networking import AuthenticationMiddleware, Client, RetryMiddleware

    return Client([RetryMiddleware(3), AuthenticationMiddleware()], timeout=timeout)


def channel_url(channel: str) -> str:
    """A channel given on the command line: a name, a URL without credentials, or a local
    folder (as a file:// URL)."""
    if (
        channel.strip()
        and "://" not in channel
        and (channel.startswith(("/", ".")) or Path(channel).is_dir())
    ):
        channel = Path(channel).resolve().as_uri()
    problem = grammar.channel_problem(channel)
    if problem:
        raise InputError(f"--channel: {problem}")
    return channel


def _conflicting_names(explanation: str) -> list[str]:
    names = re.findall(r"[├└]─ ([A-Za-z0-9_.\-]+)", explanation)
    names += re.findall(r"^\s*([A-Za-z0-9_.\-]+) \S+ cannot be installed", explanation, re.M)
    return sorted(set(names))


def solve_with_rattler(
    specs: Sequence[str],
    channels: Sequence[str],
    platform: str,
    declared_virtual: dict[str, str] | None = None,
    pinned: Sequence[rattler.RepoDataRecord] = (),
) -> list[SolvedPackage]:
    """Solve in-process with py-rattler; works offline against file:// channels.

    `declared_virtual` (`{"__cuda": "12.6"}`) adds to the default virtual packages;
    `pinned` records are held as installed, never changed (an extension's parent).
    """
    from rattler import BuildString, Channel, GenericVirtualPackage, PackageName, Version
    from rattler.exceptions import GatewayError, SolverError

    virtual = virtual_packages(declared_virtual)
    packages = [
        GenericVirtualPackage(
            PackageName(name),
            Version(version),
            BuildString(PLATFORMS[platform].machine if name == "__archspec" else "0"),
        )
        for name, version in virtual.items()
    ]
    try:
        records = asyncio.run(
            rattler.solve(
                sources=[Channel(channel_url(c)) for c in channels],
                specs=list(specs),
                platforms=[rattler.Subdir(platform), rattler.Subdir("noarch")],
                virtual_packages=packages,
                pinned_packages=list(pinned),
                gateway=rattler.Gateway(client=channel_client(FETCH_TIMEOUT)),
            )
        )
    except SolverError as exc:
        text = str(exc).strip()
        missing = _MISSING_VIRTUAL.search(text)
        if missing:
            spec = (missing["spec"] or "").strip()
            raise MissingVirtualPackage(
                f"{missing['package']} {missing['version']}",
                missing["virtual"],
                "" if spec == "*" else spec,
                platform,
            ) from None
        names = ", ".join(_conflicting_names(text)) or "see below"
        raise SolveError(
            f"unsolvable for {platform}: conflicting packages: {names}\n{text}"
        ) from None
    except GatewayError as exc:
        raise SolveError(
            f"cannot read channel for {platform}: {str(exc).splitlines()[0]}"
        ) from None
    unhashed = [str(r.url) for r in records if r.md5 is None or r.sha256 is None]
    if unhashed:
        raise SolveError(f"{unhashed[0]}: the channel's repodata gives no md5 or sha256 for it")
    return [
        SolvedPackage(
            name=r.name.normalized,
            version=str(r.version),
            build=str(r.build),
            url=str(r.url),
            md5=(r.md5 or b"").hex(),
            sha256=(r.sha256 or b"").hex(),
            depends=tuple(r.depends),
        )
        for r in records
    ]


def _dep_name(spec: str) -> str:
    return re.split(r"[\s=<>!~\[]", spec.strip(), maxsplit=1)[0]


def closure(packages: Iterable[SolvedPackage], roots: Iterable[Requirement]) -> set[str]:
    """Names of the packages that `roots` need, following depends within one solve."""
    by_name = {p.name: p for p in packages}
    todo = [r.name for r in roots]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue  # virtual packages (__glibc) are not in the solve
        seen.add(name)
        todo.extend(_dep_name(d) for d in by_name[name].depends)
    return seen


def _locked(p: SolvedPackage, platform: str, in_worker: bool) -> LockedPackage:
    dependencies: dict[str, str] = {}
    for dep in p.depends:
        name, _, rest = dep.strip().partition(" ")
        dependencies[name] = rest.strip()
    return LockedPackage(
        name=p.name,
        version=p.version,
        platform=platform,
        dependencies=dict(sorted(dependencies.items())),
        url=p.url,
        hash=PackageHash(md5=p.md5, sha256=p.sha256),
        category=WORKER_CATEGORY if in_worker else NOTEBOOK_CATEGORY,
        optional=not in_worker,
    )


def _without_channel(spec: str) -> str:
    """`conda-forge::numpy` -> `numpy`: for a solve against channels given instead."""
    return spec.split("::", 1)[1] if "::" in spec.split(" ", 1)[0] else spec


def _missing_virtual_message(env: Environment, exc: MissingVirtualPackage) -> str:
    declared = env.declared_virtual_packages(exc.platform)
    field = f"virtual_packages in {env.files[-1]}"
    if exc.virtual in declared:
        return (
            f"environment {env.name!r}: {exc.package} needs {exc.virtual} {exc.spec}, but "
            f"{exc.virtual} {declared[exc.virtual]} is declared on {exc.platform}; "
            f"change it in {field}"
        )
    return (
        f"environment {env.name!r}: {exc.package} needs {exc.virtual}, which no node declares "
        f"on {exc.platform}; add it to {field}"
    )


def _custom_metadata(env: Environment, platforms: Sequence[str]) -> dict[str, str]:
    """What the lock records beyond conda-lock's fields: the virtual packages solved for."""
    return {
        f"virtual_packages.{platform}": " ".join(
            f"{name}={version}"
            for name, version in sorted(
                virtual_packages(env.declared_virtual_packages(platform)).items()
            )
        )
        for platform in platforms
    }


def pip_pins(env: Environment) -> dict[str, list[str]]:
    """The exact pip pins by lock category: the worker's (in both images) are `main`, the
    notebook's own are `notebook`."""
    worker = list(dict.fromkeys(env.worker.pip))
    notebook = [pin for pin in dict.fromkeys(env.notebook.pip) if pin not in worker]
    return {WORKER_CATEGORY: worker, NOTEBOOK_CATEGORY: notebook}


def lock_content_hash(env: Environment, platform: str) -> str:
    """The spec's content hash, with its pip pins when it has any (only then: the locks of
    environments without pins keep their hashes)."""
    spec_hash = env.content_hash(platform)
    pins = pip_pins(env)
    if not any(pins.values()):
        return spec_hash
    payload = {"spec": spec_hash, "pip": {category: sorted(p) for category, p in pins.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pip_record(pin: str, platform: str, python: str, category: str) -> PipLockedPackage:
    """The lock's record of the one wheel on PyPI that `pin` takes on `platform`."""
    wheel = find_wheel(pin, platform, python)
    return PipLockedPackage(
        name=wheel.name,
        version=wheel.version,
        platform=platform,
        url=wheel.url,
        hash=PipHash(sha256=wheel.sha256),
        category=category,
        optional=category != WORKER_CATEGORY,
    )


def _locked_pip(
    env: Environment, platform: str, solved: Sequence[SolvedPackage]
) -> list[PipLockedPackage]:
    """One wheel per pip pin on `platform`, for the solve's Python, from PyPI."""
    pins = pip_pins(env)
    if not any(pins.values()):
        return []
    python = next((p.version for p in solved if p.name == "python"), None)
    if python is None:
        every = ", ".join(pin for category in pins.values() for pin in category)
        raise SolveError(
            f"environment {env.name!r}: pip pins ({every}) need python, which the "
            f"{platform} solve does not have"
        )
    records: dict[str, PipLockedPackage] = {}
    for category, category_pins in pins.items():
        for pin in category_pins:
            name, version = parse_pin(pin)
            if name in records:
                if version != Version(records[name].version):
                    raise SolveError(
                        f"environment {env.name!r}: pip pins {pin} and "
                        f"{records[name].name}=={records[name].version} contradict"
                    )
                continue  # the worker's pin, written another way: in both images already
            records[name] = _pip_record(pin, platform, python, category)
    return list(records.values())


def _solve_platforms(
    env: Environment, specs: Sequence[str], channels: Sequence[str], platforms: Sequence[str]
) -> tuple[list[LockedPackage], list[PipLockedPackage]]:
    package: list[LockedPackage] = []
    pip: list[PipLockedPackage] = []
    for platform in platforms:
        declared = env.declared_virtual_packages(platform)
        try:
            solved = solve_with_rattler(specs, channels, platform, declared)
        except MissingVirtualPackage as exc:
            raise SolveError(_missing_virtual_message(env, exc)) from None
        except SolveError as exc:
            raise SolveError(f"environment {env.name!r}: {exc}") from None
        worker = closure(solved, env.roots("worker"))
        package += [_locked(p, platform, p.name in worker) for p in solved]
        pip += _locked_pip(env, platform, solved)
    package.sort(key=lambda p: (p.platform, p.name))
    pip.sort(key=lambda p: (p.platform, p.name))
    return package, pip


def newest_common_version(
    name: str, channels: Sequence[str], platforms: Sequence[str], gateway: rattler.Gateway
) -> str | None:
    """The newest release of conda package `name` that the channels have for every one of
    `platforms` (noarch counts for each), or None. `gateway` keeps the repodata it read
    for the next package."""
    sources = [rattler.Channel(channel_url(c)) for c in channels]
    common: set[str] | None = None
    for platform in platforms:
        subdirs = [rattler.Subdir(platform), rattler.Subdir("noarch")]
        found = asyncio.run(gateway.query(sources, subdirs, [name], recursive=False))
        versions = {str(r.version) for records in found for r in records}
        common = versions if common is None else common & versions
    if not common:
        return None
    return str(max(rattler.Version(v) for v in common))


def lock_environment(
    env: Environment,
    channels: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
) -> LockFile:
    """Solve the environment once per platform and return the lock (nothing is written).

    With several platforms, one client must match the workers of every platform, so the
    worker sets must agree on what distributed compares (and dask-gateway): where the
    per-platform solves differ, each such package is pinned to its newest release that
    every platform has, and all platforms are solved again (AGREE_ROUNDS times at most).
    """
    channels = [channel_url(c) for c in channels] if channels else list(env.channels)
    platforms = list(platforms or env.platforms)
    specs = [r.spec for r in env.all_requirements()]
    if channels != list(env.channels):  # the given channels replace the specs' channels too
        specs = [_without_channel(s) for s in specs]
    sources = [Path("..", f.parent.name, f.name).as_posix() for f in env.files]
    sources = [s.removeprefix(f"../{env.name}/") for s in reversed(sources)]
    metadata = LockMetadata(
        content_hash={p: lock_content_hash(env, p) for p in platforms},
        channels=[LockChannel(url=c) for c in channels],
        platforms=platforms,
        sources=sources,
        custom_metadata=_custom_metadata(env, platforms),
    )
    gateway: rattler.Gateway | None = None  # made when the platforms first differ
    agreed: dict[str, str] = {}
    for _ in range(AGREE_ROUNDS + 1):
        pinned = [*specs, *(f"{name} =={version}" for name, version in agreed.items())]
        try:
            package, pip = _solve_platforms(env, pinned, channels, platforms)
        except SolveError as exc:
            if not agreed:
                raise
            said = ", ".join(f"{n} {v}" for n, v in agreed.items())
            raise SolveError(
                f"{exc}\n(the platforms' worker sets were pinned to agree on {said})"
            ) from None
        lock = LockFile(metadata=metadata, package=package, pip=pip)
        differ = disagreements(lock, env.lock_path) if len(platforms) > 1 else {}
        if not differ:
            if agreed:
                logger.info(
                    "%s: the worker sets of %s agree on %s (the newest release on every platform)",
                    env.name,
                    ", ".join(platforms),
                    ", ".join(f"{n} {v}" for n, v in sorted(agreed.items())),
                )
            return lock
        gateway = gateway or rattler.Gateway(client=channel_client(FETCH_TIMEOUT))
        for name, pins in differ.items():
            names = {pin.lock_name for pin in pins.values() if pin and pin.manager == "conda"}
            conda = all(pin and pin.manager == "conda" for pin in pins.values())
            lock_name = names.pop() if conda and len(names) == 1 else None
            common = (
                newest_common_version(lock_name, channels, platforms, gateway)
                if lock_name
                else None
            )
            if lock_name is None or common is None or agreed.get(lock_name) == common:
                raise SolveError(
                    f"environment {env.name!r}: the worker sets differ "
                    f"({name} {platform_versions(pins, ', ')}) and no release is on every "
                    "platform; one client cannot match them all"
                )
            agreed[lock_name] = common
    raise SolveError(
        f"environment {env.name!r}: the worker sets of {', '.join(platforms)} did not agree "
        f"after {AGREE_ROUNDS} rounds of pins ({', '.join(f'{n} {v}' for n, v in agreed.items())})"
    )


def check_lock(env: Environment) -> None:
    """Raise LockStaleError when the spec (with its parents) changed after locking."""
    lock = read_lock(env.lock_path)
    stale = [
        platform
        for platform in env.platforms
        if lock.metadata.content_hash.get(platform) != lock_content_hash(env, platform)
    ]
    if stale:
        raise LockStaleError(
            f"{env.lock_path} is out of date for {', '.join(stale)}: the spec "
            f"({', '.join(str(f) for f in env.files)}) changed; run `buildtool lock {env.name}`"
        )


# -- extension pairs -------------------------------------------------------------------


def _parent_records(parent: Parent, platform: str) -> list[rattler.RepoDataRecord]:
    """The parent lock's conda records of `platform`, as rattler reads them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conda-lock.yml"
        path.write_text(parent.lock_text)
        environment = rattler.LockFile.from_path(path).default_environment()
    subdir = next(p for p in environment.platforms() if p.name == platform)  # type: ignore[union-attr]
    return list(environment.conda_repodata_records_for_platform(subdir) or [])  # type: ignore[union-attr]


# How deep the search for the parent package an addition cannot live with goes.
CONFLICT_DEPTH = 4
# How many (spec, depth) questions one explanation may ask.
EXPLAIN_STEPS = 2000


class _Candidates:
    """The channels' records of a package name on one platform, newest first, cached."""

    def __init__(self, channels: Sequence[str], platform: str) -> None:
        self.gateway = rattler.Gateway(client=channel_client(FETCH_TIMEOUT))
        self.sources = [rattler.Channel(channel_url(c)) for c in channels]
        self.subdirs = [rattler.Subdir(platform), rattler.Subdir("noarch")]
        self.known: dict[str, list[rattler.RepoDataRecord]] = {}

    def __call__(self, spec: rattler.MatchSpec, name: str) -> list[rattler.RepoDataRecord]:
        if name not in self.known:
            found = asyncio.run(
                self.gateway.query(self.sources, self.subdirs, [name], recursive=False)
            )
            self.known[name] = sorted(
                (r for records in found for r in records),
                key=lambda r: (r.version, r.build_number),
                reverse=True,
            )
        return [r for r in self.known[name] if spec.matches(r)]


_Reason = tuple[list[str], str, rattler.RepoDataRecord]


@dataclass
class _Explainer:
    """Why no release of a spec can join the parent: a search of the releases' needs to
    `CONFLICT_DEPTH`, each (spec, depth) answered once, and at most `EXPLAIN_STEPS` asked
    in all (a spec whose releases fan out without end gets no explanation, only the
    solver's own message)."""

    held: dict[str, rattler.RepoDataRecord]
    candidates: _Candidates
    steps: int = EXPLAIN_STEPS
    known: dict[tuple[str, int], _Reason | None] = field(default_factory=dict)

    def blocked(self, spec: str, depth: int) -> _Reason | None:
        """The chain of packages down to the one that needs what the parent does not
        hold, that need, and the parent's record; None if a release may join (or the
        search ends)."""
        key = (spec, depth)
        if key not in self.known:
            self.steps -= 1
            self.known[key] = self._search(spec, depth) if self.steps >= 0 else None
        return self.known[key]

    def _search(self, spec: str, depth: int) -> _Reason | None:
        match = rattler.MatchSpec(spec)
        name = _dep_name(spec)
        if name in self.held:
            return None if match.matches(self.held[name]) else ([], spec, self.held[name])
        releases = self.candidates(match, name)
        if not releases or depth == 0:
            return None
        first: _Reason | None = None
        for release in releases:
            reason = next(
                (
                    found
                    for dep in release.depends
                    if (found := self.blocked(dep, depth - 1)) is not None
                ),
                None,
            )
            if reason is None:
                return None  # this release may join: the conflict is elsewhere
            if first is None:
                chain, need, record = reason
                first = ([f"{name} {release.version}", *chain], need, record)
        return first


def _conflict(
    ext: Extension,
    parent_name: str,
    held: dict[str, rattler.RepoDataRecord],
    channels: Sequence[str],
    platform: str,
) -> SpecError | None:
    """The one line that says which addition cannot live with which parent package: the
    addition (at its line in the spec), the parent's package and locked version, and
    what the addition needs."""
    candidates = _Candidates(channels, platform)
    explainer = _Explainer(held, candidates)
    for requirement in ext.dependencies:
        if not candidates(rattler.MatchSpec(requirement.spec), requirement.name) and (
            requirement.name not in held
        ):
            return SpecError(
                requirement.path,
                requirement.key,
                f"{requirement.spec!r} is in none of the channels for {platform}",
                requirement.line,
            )
        reason = explainer.blocked(requirement.spec, CONFLICT_DEPTH)
        if reason is not None:
            chain, need, record = reason
            via = f" (through {' -> '.join(chain)})" if chain else ""
            return SpecError(
                requirement.path,
                requirement.key,
                f"the addition {requirement.spec!r} needs {need}{via}, but {parent_name} "
                f"holds {record.name.normalized} {record.version}",
                requirement.line,
            )
    return None


def _extension_pip(
    ext: Extension, parent: Parent, platform: str, python: str
) -> list[PipLockedPackage]:
    """One wheel per added pip pin; a pin of a package the parent holds is a conflict."""
    conda = {p.name: p for p in parent.lock.package if p.platform == platform}
    pip = {canonicalize_name(p.name): p for p in parent.lock.pip if p.platform == platform}
    records = []
    for pin in ext.pip:
        name, version = parse_pin(pin)
        held = pip.get(canonicalize_name(name)) or conda.get(canonicalize_name(name))
        if held is not None:
            index = ext.pip.index(pin)
            raise SpecError(
                ext.path,
                f"pip[{index}]",
                f"the addition {pin!r} needs {name} =={version}, but {parent.environment} "
                f"holds {held.name} {held.version}",
                ext.pip_lines[index],
            )
        records.append(_pip_record(pin, platform, python, WORKER_CATEGORY))
    return records


def lock_extension(ext: Extension, parent: Parent) -> LockFile:
    """Solve only the additions, every record of the parent's lock held fixed (rattler's
    pinned packages: same version, build and sha256), and return the child lock: the
    parent's records unchanged, plus the new ones, in both images (category `main`)."""
    platforms = list(parent.lock.metadata.platforms)
    channels = [c.url for c in parent.lock.metadata.channels]
    specs = [_without_channel(r.spec) for r in ext.dependencies]
    added: list[LockedPackage] = []
    added_pip: list[PipLockedPackage] = []
    for platform in platforms:
        logger.info(
            "%s: solving %s on %s (%s), its %d records held",
            ext.name,
            ", ".join([*specs, *ext.pip]),
            parent.environment,
            platform,
            sum(1 for p in parent.lock.package if p.platform == platform),
        )
        records = _parent_records(parent, platform)
        held = {r.name.normalized: r for r in records}
        virtual = dict(
            item.split("=", 1)
            for item in (parent.lock.metadata.custom_metadata or {})
            .get(f"virtual_packages.{platform}", "")
            .split()
        )
        try:
            solved = solve_with_rattler(specs, channels, platform, virtual, records)
        except SolveError as exc:
            conflict = _conflict(ext, parent.environment, held, channels, platform)
            if conflict is not None:
                raise conflict from None
            raise SolveError(
                f"extension {ext.name!r} on {parent.environment} ({platform}): "
                + str(exc).splitlines()[0]
            ) from None
        for package in solved:
            if package.name in held:
                if package.sha256 != (held[package.name].sha256 or b"").hex():
                    raise SolveError(
                        f"extension {ext.name!r}: the solve moved the parent's {package.name}"
                    )
                continue
            added.append(_locked(package, platform, True))
        python = next(p.version for p in parent.lock.package if p.name == "python")
        added_pip += _extension_pip(ext, parent, platform, python)
    custom = dict(parent.lock.metadata.custom_metadata or {})
    custom.update(
        {
            "parent.environment": parent.environment,
            "parent.notebook": parent.notebook.ref,
            "parent.worker": parent.worker.ref,
            "parent.lock_sha256": parent.lock.content_sha(),
            "added": " ".join(sorted({p.name for p in added} | {p.name for p in added_pip})),
        }
    )
    metadata = LockMetadata(
        content_hash={p: ext.content_hash(parent.notebook.digest) for p in platforms},
        channels=parent.lock.metadata.channels,
        platforms=platforms,
        sources=[SPEC_FILE],
        custom_metadata=custom,
    )
    return LockFile(
        metadata=metadata,
        package=[*parent.lock.package, *sorted(added, key=lambda p: (p.platform, p.name))],
        pip=[*parent.lock.pip, *sorted(added_pip, key=lambda p: (p.platform, p.name))],
    )


def check_extension_lock(ext: Extension) -> LockFile:
    """The extension's lock, or LockStaleError when its spec changed after locking."""
    lock = read_lock(ext.lock_path)
    parent = (lock.metadata.custom_metadata or {}).get("parent.notebook", "")
    digest = parent.rpartition("@")[2]
    if not digest or any(
        value != ext.content_hash(digest) for value in lock.metadata.content_hash.values()
    ):
        raise LockStaleError(
            f"{ext.lock_path} is out of date: the spec ({ext.path}) changed; "
            f"run `buildtool lock {ext.name}`"
        )
    return lock


@dataclass(frozen=True)
class Locked:
    """A new lock, and what its diff compares with when no lock was there before: an
    extension's first lock is compared with its parent's (what it adds)."""

    lock: LockFile
    baseline: LockFile | None = None


def lock(
    target: Target,
    channels: Sequence[str] | None,
    platforms: Sequence[str] | None,
    parent_of: Callable[[Extension], Parent],
) -> Locked:
    """Lock an environment (with `channels` and `platforms` instead of its spec's, when
    given) or an extension (on its parent, which `parent_of` reads: its channels and
    platforms are the parent's)."""
    if isinstance(target, Environment):
        return Locked(lock_environment(target, channels, platforms))
    if channels or platforms:
        raise BuildToolError(
            f"{target.name}: an extension takes its channels and platforms from its parent; "
            "--channel and --platform do not apply"
        )
    parent = parent_of(target)
    first = not target.lock_path.exists()
    return Locked(lock_extension(target, parent), parent.lock if first else None)


def check(target: Target) -> None:
    """Raise LockStaleError unless the target's lock is up to date with its spec (and,
    outside a lab, made against the site's channels, `check_site_channels`)."""
    if isinstance(target, Environment):
        check_lock(target)
    else:
        check_extension_lock(target)
    check_site_channels(read_lock(target.lock_path), target.lock_path, target.name)
