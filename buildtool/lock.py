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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import LockStaleError, SolveError
from buildtool.lockfile import (
    NOTEBOOK_CATEGORY,
    WORKER_CATEGORY,
    LockChannel,
    LockedPackage,
    LockFile,
    LockMetadata,
    PackageHash,
    read_lock,
)
from buildtool.spec import Environment, Requirement

# The images run on Debian bookworm: glibc 2.36.
_VIRTUAL_PACKAGES = {"__unix": "0", "__linux": "5.10", "__glibc": "2.36"}
_ARCHSPEC = {"linux-64": "x86_64", "linux-aarch64": "aarch64"}


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


def channel_url(channel: str) -> str:
    """Accept a local folder as a channel too, as a file:// URL."""
    if "://" not in channel and (channel.startswith(("/", ".")) or Path(channel).is_dir()):
        return Path(channel).resolve().as_uri()
    return channel


def _conflicting_names(explanation: str) -> list[str]:
    names = re.findall(r"[├└]─ ([A-Za-z0-9_.\-]+)", explanation)
    names += re.findall(r"^\s*([A-Za-z0-9_.\-]+) \S+ cannot be installed", explanation, re.M)
    return sorted(set(names))


def solve_with_rattler(
    specs: Sequence[str], channels: Sequence[str], platform: str
) -> list[SolvedPackage]:
    """Solve in-process with py-rattler; works offline against file:// channels."""
    import rattler
    from rattler import BuildString, Channel, GenericVirtualPackage, PackageName, Version
    from rattler.exceptions import GatewayError, SolverError

    virtual = {**_VIRTUAL_PACKAGES, "__archspec": "1"}
    packages = [
        GenericVirtualPackage(
            PackageName(name),
            Version(version),
            BuildString(_ARCHSPEC[platform] if name == "__archspec" else "0"),
        )
        for name, version in virtual.items()
    ]
    try:
        records = asyncio.run(
            rattler.solve(
                sources=[Channel(channel_url(c)) for c in channels],
                specs=list(specs),
                platforms=[platform, "noarch"],
                virtual_packages=packages,
            )
        )
    except SolverError as exc:
        text = str(exc).strip()
        names = ", ".join(_conflicting_names(text)) or "see below"
        raise SolveError(
            f"unsolvable for {platform}: conflicting packages: {names}\n{text}"
        ) from None
    except GatewayError as exc:
        raise SolveError(
            f"cannot read channel for {platform}: {str(exc).splitlines()[0]}"
        ) from None
    return [
        SolvedPackage(
            name=r.name.normalized,
            version=str(r.version),
            build=str(r.build),
            url=str(r.url),
            md5=r.md5.hex(),
            sha256=r.sha256.hex(),
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


def lock_environment(
    env: Environment,
    channels: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
) -> LockFile:
    """Solve the environment once per platform and return the lock (nothing is written)."""
    channels = [channel_url(c) for c in channels] if channels else list(env.channels)
    platforms = list(platforms or env.platforms)
    specs = [r.spec for r in env.all_requirements()]
    package: list[LockedPackage] = []
    for platform in platforms:
        try:
            solved = solve_with_rattler(specs, channels, platform)
        except SolveError as exc:
            raise SolveError(f"environment {env.name!r}: {exc}") from None
        worker = closure(solved, env.roots("worker"))
        package += [_locked(p, platform, p.name in worker) for p in solved]
    package.sort(key=lambda p: (p.platform, p.name))
    sources = [Path("..", f.parent.name, f.name).as_posix() for f in env.files]
    sources = [s.removeprefix(f"../{env.name}/") for s in reversed(sources)]
    return LockFile(
        metadata=LockMetadata(
            content_hash={p: env.content_hash(p) for p in platforms},
            channels=[LockChannel(url=c) for c in channels],
            platforms=platforms,
            sources=sources,
        ),
        package=package,
    )


def check_lock(env: Environment) -> None:
    """Raise LockStaleError when the spec (with its parents) changed after locking."""
    lock = read_lock(env.lock_path)
    stale = [
        platform
        for platform in env.platforms
        if lock.metadata.content_hash.get(platform) != env.content_hash(platform)
    ]
    if stale:
        raise LockStaleError(
            f"{env.lock_path} is out of date for {', '.join(stale)}: the spec "
            f"({', '.join(str(f) for f in env.files)}) changed; run `buildtool lock {env.name}`"
        )
