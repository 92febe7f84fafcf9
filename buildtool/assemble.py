"""Put the locked conda packages on the system images, as layers by package.

1. py-rattler installs the image's locked set into a staging folder on the build host,
   with the image's prefix (`/srv/conda/envs/notebook`) patched into the files, for the
   image's platform: installing is copying and patching, so an aarch64 environment is
   laid out on an x86 host without emulating anything. The archives come from their
   locked URLs, checked against the lock's sha256, through rattler's package cache.
2. Each package's files and its `conda-meta` record are grouped by `layers.plan_layers`
   and written by `oci.BlobStore` as reproducible layers: owned by jovyan (1000:100),
   times clamped to the package's own build time (the newest time in its archive), so
   the byte-compiled files that packages ship stay valid and nothing depends on when
   the build ran.
3. The worker image is its system image plus the worker set's layers (its pip wheels
   and the version checks, `versionchecks.py`, on top); the notebook image is the worker
   image plus the notebook stage's layers and the notebook-only packages'.

Nothing the build host has leaks in: the records' cache paths are rewritten to where a
conda cache would be in the image, and a file in the staging folder that no package owns
fails the build.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import rattler

from buildtool import versionchecks
from buildtool.errors import BuildToolError
from buildtool.layers import MAX_LAYERS, Budget, Package, plan_layers
from buildtool.lock import channel_client
from buildtool.lockfile import LockedPackage, PipLockedPackage
from buildtool.oci import BlobStore, Entry, Image, Layer, file_entry
from buildtool.system import SystemPair
from buildtool.wheels import fetch_wheels, install_wheels
from compat.vocabulary import PREFIX, of_role

PKGS_IN_IMAGE = "/srv/conda/pkgs"
JOVYAN = (1000, 100)
# Written by the installer for the prefix, not by a package (the system stage makes
# conda-meta/history, which marks the prefix as an environment).
NOT_PACKAGED = frozenset({"CACHEDIR.TAG", "conda-meta/history"})
# Seconds for one request: a slow mirror fails the build instead of hanging it.
TIMEOUT = 600


@dataclass(frozen=True)
class Installed:
    """A conda package in the staged prefix (or the image's pip wheels, taken together)."""

    name: str
    version: str
    build: str
    record: str | None  # conda-meta/<dist>.json
    files: tuple[str, ...]
    size: int
    built: int  # the newest time in the package's archive


@dataclass(frozen=True)
class AssembledPair:
    platform: str
    worker: Image
    notebook: Image
    # What owns each file of the prefix (relative to it), in the notebook image: a conda
    # package's name, or one of the layers that hold no package ("pip (worker)", ...).
    # Published with the lock, so an extension pair can check it overwrites nothing.
    owners: dict[str, list[str]]

    def image(self, role: str) -> Image:
        return of_role(self, role)


def locked_records(lock_path: Path, platform: str, wanted: list[LockedPackage]) -> list:
    environment = rattler.LockFile.from_path(lock_path).default_environment()
    if environment is None:
        raise BuildToolError(f"{lock_path}: no default environment")
    subdir = next((p for p in environment.platforms() if p.name == platform), None)
    if subdir is None:
        raise BuildToolError(f"{lock_path}: not locked for {platform}")
    records = environment.conda_repodata_records_for_platform(subdir) or []
    by_url = {str(r.url): r for r in records}
    chosen = []
    for package in wanted:
        record = by_url.get(package.url)
        if record is None:
            raise BuildToolError(f"{lock_path}: rattler finds no record for {package.url}")
        if record.sha256 is None or record.sha256.hex() != package.hash.sha256:
            raise BuildToolError(f"{lock_path}: {package.name} has no sha256 rattler can check")
        chosen.append(record)
    return chosen


def install(
    lock_path: Path,
    platform: str,
    packages: list[LockedPackage],
    stage: Path,
    cache: Path,
    reporter: rattler.InstallerReporter | None = None,
) -> None:
    """A fresh staging prefix holding exactly `packages`, patched for PREFIX; `reporter`
    hears of every download."""
    records = locked_records(lock_path, platform, packages)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        asyncio.run(
            rattler.install(
                records,
                target_prefix=stage,
                cache_dir=cache,
                alternative_target_prefix=PREFIX,
                platform=rattler.Platform(platform),
                client=channel_client(TIMEOUT),
                show_progress=False,
                execute_link_scripts=False,
                reporter=reporter,
            )
        )
    except Exception as exc:  # rattler's errors carry the URL or the file that failed
        raise BuildToolError(f"installing {platform} packages: {exc}") from None


def _newest_time(folder: Path) -> int:
    newest = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
    return newest


def read_installed(stage: Path) -> dict[str, Installed]:
    """The staged packages, their records rewritten so no host path stays in them."""
    installed = {}
    for path in sorted((stage / "conda-meta").glob("*.json")):
        record = json.loads(path.read_text())
        dist = path.stem
        built = _newest_time(Path(record["extracted_package_dir"]))
        in_image = f"{PKGS_IN_IMAGE}/{dist}"
        record["extracted_package_dir"] = in_image
        if isinstance(record.get("link"), dict):
            record["link"]["source"] = in_image
        path.write_text(json.dumps(record, indent=2) + "\n")
        os.utime(path, (built, built))
        files = tuple(record.get("files", []))
        size = sum((stage / f).lstat().st_size for f in files)
        installed[record["name"]] = Installed(
            record["name"],
            record["version"],
            record["build"],
            f"conda-meta/{path.name}",
            files,
            size,
            built,
        )
    owned = {f for p in installed.values() for f in (*p.files, p.record)} | NOT_PACKAGED
    for directory, _, names in os.walk(stage):
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), stage)
            if relative not in owned:
                raise BuildToolError(f"{stage}: {relative} belongs to no installed package")
    return installed


def _entries(stage: Path, packages: list[Installed]) -> list[Entry]:
    uid, gid = JOVYAN
    clamp = max(p.built for p in packages)
    root = PREFIX.lstrip("/")
    # The prefix and the folders above it, as the system stage made them: a layer that
    # leaves them out gets them made by the engine, owned by root, over the lower ones.
    entries: dict[str, Entry] = {"srv": Entry("srv", "dir", 0o755, 0, 0, clamp)}
    for folder in ("srv/conda", "srv/conda/envs", root):
        entries[folder] = Entry(folder, "dir", 0o755, uid, gid, clamp)
    for package in packages:
        for relative in (*package.files, *([package.record] if package.record else [])):
            parent = os.path.dirname(relative)
            while parent and f"{root}/{parent}" not in entries:
                name = f"{root}/{parent}"
                entries[name] = file_entry(stage / parent, name, uid, gid, clamp)
                parent = os.path.dirname(parent)
            mode = 0o644 if relative == package.record else None
            name = f"{root}/{relative}"
            entries[name] = file_entry(stage / relative, name, uid, gid, package.built, mode)
    return list(entries.values())


def _describe(packages: list[Installed]) -> str:
    return "conda: " + ", ".join(f"{p.name} {p.version} {p.build}" for p in packages)


def pip_layer(
    stage: Path,
    locked: list[PipLockedPackage],
    platform: str,
    python: str,
    clamp: int,
    wheel_cache: Path,
    store: BlobStore,
) -> tuple[Layer, list[str]]:
    """The image's locked wheels as one layer on top of its conda layers, and its files."""
    wheels = fetch_wheels(locked, platform, python, wheel_cache)
    files = install_wheels(wheels, stage, PREFIX, ".".join(python.split(".")[:2]))
    wheel = Installed("pip", "", "", None, tuple(files), 0, clamp)
    pins = sorted(f"{w.name}=={w.version}" for w in locked)
    return store.write_layer(_entries(stage, [wheel]), clamp, "pip: " + " ".join(pins)), files


def _checks_layer(
    stage: Path, installed: dict[str, Installed], clamp: int, store: BlobStore
) -> tuple[Layer, list[str]]:
    """The version checks (`versionchecks.py`) as the worker image's last layer, and its
    files."""
    python = ".".join(installed["python"].version.split(".")[:2])
    files = versionchecks.write(stage, python)
    checks = Installed("daskhub-compat", "", "", None, tuple(files), 0, clamp)
    return store.write_layer(_entries(stage, [checks]), clamp, "version checks: compat"), files


def package_layers(
    stage: Path, installed: dict[str, Installed], names: list[str], slots: int, store: BlobStore
) -> list[Layer]:
    plan = plan_layers([Package(n, installed[n].size) for n in names], slots)
    layers = []
    for planned in plan:
        members = [installed[n] for n in planned.packages]
        layers.append(
            store.write_layer(
                _entries(stage, members), max(p.built for p in members), _describe(members)
            )
        )
    return layers


def check_layers(image: Image, what: str) -> None:
    """At most MAX_LAYERS layers, and no two alike (image streaming refuses those)."""
    diff_ids = [layer.diff_id for layer in image.layers]
    if len(diff_ids) > MAX_LAYERS:
        raise BuildToolError(f"{what}: {len(diff_ids)} layers, more than {MAX_LAYERS}")
    if len(set(diff_ids)) != len(diff_ids):
        twice = next(d for d in diff_ids if diff_ids.count(d) > 1)
        raise BuildToolError(f"{what}: two layers are both {twice}")


def assemble(
    lock_path: Path,
    platform: str,
    worker_set: list[LockedPackage],
    notebook_set: list[LockedPackage],
    pip: dict[str, list[PipLockedPackage]],
    system: SystemPair,
    stage: Path,
    cache: Path,
    store: BlobStore,
) -> AssembledPair:
    """Both images of one platform, from one install of the notebook set; `pip`: each
    role's own locked wheels (the notebook's beyond the worker's)."""
    install(lock_path, platform, notebook_set, stage, cache)
    installed = read_installed(stage)
    worker_names = sorted(p.name for p in worker_set)
    notebook_names = sorted(p.name for p in notebook_set if p.name not in set(worker_names))
    missing = sorted({*worker_names, *notebook_names} - set(installed))
    if missing:
        raise BuildToolError(f"{stage}: {missing[0]} was not installed")
    fixed = len(system.worker.layers) + len(system.notebook_extra)
    budget = Budget.after(fixed + sum(1 for pins in pip.values() if pins) + 1)
    worker_layers = package_layers(stage, installed, worker_names, budget.worker, store)
    notebook_layers = package_layers(stage, installed, notebook_names, budget.notebook, store)
    owners = {
        name: [*package.files, *([package.record] if package.record else [])]
        for name, package in installed.items()
    }
    for role, names, layers in (
        ("worker", worker_names, worker_layers),
        ("notebook", notebook_names, notebook_layers),
    ):
        if pip.get(role):
            clamp = max(installed[n].built for n in names)
            python = installed["python"].version
            layer, owners[f"pip ({role})"] = pip_layer(
                stage, pip[role], platform, python, clamp, cache.parent / "wheels", store
            )
            layers.append(layer)
    clamp = max(installed[n].built for n in worker_names)
    layer, owners["version checks"] = _checks_layer(stage, installed, clamp, store)
    worker_layers.append(layer)
    worker = Image(platform, system.worker.config, (*system.worker.layers, *worker_layers))
    notebook = Image(
        platform,
        system.notebook.config,
        (*worker.layers, *system.notebook_extra, *notebook_layers),
    )
    for role, image in (("worker", worker), ("notebook", notebook)):
        check_layers(image, f"{role} image ({platform})")
    return AssembledPair(platform, worker, notebook, owners)
