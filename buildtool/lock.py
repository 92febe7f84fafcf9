"""One solve per environment and platform, written as one lock for both images.

The union of every MatchSpec (inherited, common, notebook, worker) is solved once. The
worker set is the dependency closure of the worker's roots *within that solve*, so the
worker never gets a version, build or file that the notebook does not have too.

Solvers are plain callables, `(specs, channels, platform) -> list[SolvedPackage]`:
py-rattler in-process (offline, the default) and conda-lock's CLI (when a conda, mamba
or micromamba executable is on PATH, as in production).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from buildtool.errors import BuildToolError, LockStaleError, SolveError
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
CONDA_EXECUTABLES = ("micromamba", "mamba", "conda")


@dataclass(frozen=True)
class SolvedPackage:
    """One record of a solve, whichever solver made it."""

    name: str
    version: str
    build: str
    url: str
    md5: str
    sha256: str
    depends: tuple[str, ...]


Solver = Callable[[Sequence[str], Sequence[str], str], list[SolvedPackage]]


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


def conda_lock_solver(executable: str) -> Solver:
    """Solve with conda-lock's CLI, which drives `executable` (conda, mamba, micromamba)."""

    def solve(specs: Sequence[str], channels: Sequence[str], platform: str) -> list[SolvedPackage]:
        with tempfile.TemporaryDirectory(prefix="buildtool-conda-lock-") as tmp:
            env_file, out = Path(tmp) / "environment.yml", Path(tmp) / "conda-lock.yml"
            env_file.write_text(
                yaml.safe_dump({"channels": list(channels), "dependencies": list(specs)})
            )
            command = [
                sys.executable, "-m", "conda_lock", "lock", "--conda", executable,
                "-f", str(env_file), "-p", platform, "--lockfile", str(out),
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-15:])
                raise SolveError(f"conda-lock could not solve for {platform}:\n{tail}")
            return packages_from_conda_lock(yaml.safe_load(out.read_text()), platform)

    return solve


def packages_from_conda_lock(data: dict, platform: str) -> list[SolvedPackage]:
    """Read the conda packages of one platform from a lock that conda-lock wrote."""
    found: dict[str, SolvedPackage] = {}
    for entry in data["package"]:
        if entry["manager"] != "conda" or entry["platform"] != platform:
            continue
        filename = entry["url"].rsplit("/", 1)[-1]
        build = filename.removesuffix(".conda").removesuffix(".tar.bz2").rsplit("-", 1)[-1]
        found[entry["name"]] = SolvedPackage(
            name=entry["name"],
            version=str(entry["version"]),
            build=build,
            url=entry["url"],
            md5=entry["hash"]["md5"],
            sha256=entry["hash"]["sha256"],
            depends=tuple(f"{k} {v}".strip() for k, v in entry.get("dependencies", {}).items()),
        )
    return list(found.values())


def pick_solver(name: str = "auto") -> Solver:
    """`auto` uses conda-lock when a conda executable is on PATH, else py-rattler."""
    if name == "rattler":
        return solve_with_rattler
    executable = next((e for e in CONDA_EXECUTABLES if shutil.which(e)), None)
    if name == "conda-lock" and executable is None:
        raise BuildToolError("--solver conda-lock needs conda, mamba or micromamba on PATH")
    return conda_lock_solver(executable) if executable else solve_with_rattler


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
    solver: Solver = solve_with_rattler,
) -> LockFile:
    """Solve the environment once per platform and return the lock (nothing is written)."""
    channels = [channel_url(c) for c in channels] if channels else list(env.channels)
    platforms = list(platforms or env.platforms)
    specs = [r.spec for r in env.all_requirements()]
    package: list[LockedPackage] = []
    for platform in platforms:
        try:
            solved = solver(specs, channels, platform)
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
