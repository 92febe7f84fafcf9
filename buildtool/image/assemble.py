"""Put the locked conda packages on the system images, as layers by package.

1. py-rattler installs the image's locked set into the environment's staging prefix on
   the build host, with the image's prefix (`/srv/conda/envs/notebook`) patched into the
   files, for the image's platform: installing is copying and patching, so an aarch64
   environment is laid out on an x86 host without emulating anything. The archives come
   from their locked URLs, checked against the lock's sha256, through rattler's package
   cache. The staging prefix is kept between builds, one per environment and platform,
   beside the package cache (so files are hard links into it), and updated in place:
   a new lock unlinks and links only the packages it changed.
2. Each package's files and its `conda-meta` record are grouped by `layers.plan_layers`
   and written by `oci.BlobStore` as reproducible layers: owned by jovyan (1000:100),
   times clamped to the package's own build time (the newest time in its archive), so
   the byte-compiled files that packages ship stay valid and nothing depends on when
   the build ran.
3. Every layer is keyed by its inputs (`_key`): how layers are written (`LAYOUT`),
   py-rattler's version, the platform, prefix and owner, and each member's name and
   locked sha256 (the wheels layer: its pins and their sha256). A layer whose key is in
   the store is taken as it is: nothing is installed, tarred or compressed for it. What
   the planner needs of a package (its files, size and build time) is kept by its
   sha256 too, so a lock that changed nothing installs nothing.
4. The worker image is its system image plus the worker set's layers (its pip wheels
   and the version checks, `versionchecks.py`, on top); the notebook image is the worker
   image plus the notebook stage's layers and the notebook-only packages'. Layers are
   made in that order, each handed to `on_layer` as soon as it is in the store, so the
   engine can take them while the next ones are written.

Nothing the build host has leaks in: the records' cache paths are rewritten to where a
conda cache would be in the image, and a file in the staging prefix that no package owns
fails the build.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path

import rattler

import compat
from buildtool.common import BuildToolError, DiskBudget
from buildtool.image import pkgcache, versionchecks
from buildtool.image.layers import MAX_LAYERS, Budget, Package, PlannedLayer, plan_layers
from buildtool.image.oci import BlobStore, Entry, Image, Layer, file_entry
from buildtool.image.system import SystemPair
from buildtool.lock import (
    LockedPackage,
    PipLockedPackage,
    channel_client,
    fetch_wheels,
    install_wheels,
)
from compat.vocabulary import PREFIX, of_role

PKGS_IN_IMAGE = "/srv/conda/pkgs"
JOVYAN = (1000, 100)
# Written by the installer for the prefix, not by a package (the system stage makes
# conda-meta/history, which marks the prefix as an environment).
NOT_PACKAGED = frozenset({"CACHEDIR.TAG", "conda-meta/history"})
# Seconds for one request: a slow mirror fails the build instead of hanging it.
TIMEOUT = 600
# Part of every layer's key: bumped when layers are written differently (`_entries`,
# `oci.BlobStore.write_layer`: eStargz since v1).
LAYOUT = "estargz-v1"


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
    installed: int = 0  # the packages py-rattler linked into the staging prefix

    def image(self, role: str) -> Image:
        return of_role(self, role)


@functools.cache
def _rattler_version() -> str:
    return metadata.version("py-rattler")


def _key(*parts: object) -> str:
    """The key of something made from `parts` by this module's rules."""
    inputs = [LAYOUT, _rattler_version(), PREFIX, JOVYAN, *parts]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


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


def install_locked(
    lock_path: Path,
    platform: str,
    packages: list[LockedPackage],
    stage: Path,
    cache: Path,
    reporter: rattler.InstallerReporter | None = None,
    *,
    fresh: bool = True,
    view_name: str | None = None,
) -> int:
    """Make `stage` hold exactly `packages`, patched for PREFIX: a new prefix if `fresh`,
    else the one there updated in place. `reporter` hears of every download. Returns how
    many packages were linked."""
    records = locked_records(lock_path, platform, packages)
    if fresh and stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(stage / "conda-meta")) if (stage / "conda-meta").is_dir() else set()
    with pkgcache.view(cache, [pkgcache.Facts.of(r) for r in records], view_name) as view:
        try:
            asyncio.run(
                rattler.install(
                    records,
                    target_prefix=stage,
                    cache_dir=view.path,
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
        view.publish()
    return len(set(os.listdir(stage / "conda-meta")) - before)


def _newest_time(folder: Path) -> int:
    newest = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
    return newest


def read_installed(stage: Path, cache: Path, names: set[str] | None = None) -> dict[str, Installed]:
    """The staged packages (those in `names`, or all), as their records say; their build
    times from their entries in the package `cache`."""
    installed: dict[str, Installed] = {}
    if names is not None and not names:
        return installed
    for path in sorted((stage / "conda-meta").glob("*.json")):
        record = json.loads(path.read_text())
        if names is not None and record["name"] not in names:
            continue
        files = tuple(record.get("files", []))
        installed[record["name"]] = Installed(
            record["name"],
            record["version"],
            record["build"],
            f"conda-meta/{path.name}",
            files,
            sum((stage / f).lstat().st_size for f in files),
            _newest_time(cache / record["sha256"] / path.stem),
        )
    return installed


def check_owned(stage: Path, installed: dict[str, Installed]) -> None:
    """Every file in the staging prefix belongs to one of `installed`."""
    owned = {f for p in installed.values() for f in (*p.files, p.record)} | NOT_PACKAGED
    folders = [""]
    while folders:
        folder = folders.pop()
        with os.scandir(stage / folder) as entries:
            for entry in entries:
                relative = f"{folder}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    folders.append(relative + "/")
                elif relative not in owned:
                    raise BuildToolError(f"{stage}: {relative} belongs to no installed package")


def _image_record(path: Path) -> bytes:
    """A package's conda-meta record as the image has it: the build host's cache paths
    rewritten to where a conda cache would be in the image."""
    record = json.loads(path.read_text())
    in_image = f"{PKGS_IN_IMAGE}/{path.stem}"
    record["extracted_package_dir"] = in_image
    if isinstance(record.get("link"), dict):
        record["link"]["source"] = in_image
    return (json.dumps(record, indent=2) + "\n").encode()


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
            name = f"{root}/{relative}"
            if relative == package.record:
                data = _image_record(stage / relative)
                entries[name] = Entry(
                    name, "file", 0o644, uid, gid, package.built, size=len(data), data=data
                )
            else:
                entries[name] = file_entry(stage / relative, name, uid, gid, package.built)
    return list(entries.values())


def _describe(packages: list[Installed]) -> str:
    return "conda: " + ", ".join(f"{p.name} {p.version} {p.build}" for p in packages)


def pip_layer(
    locked: list[PipLockedPackage],
    platform: str,
    python: str,
    clamp: int,
    wheel_cache: Path,
    store: BlobStore,
    budget: DiskBudget | None = None,
) -> tuple[Layer, list[str]]:
    """The image's locked wheels as one layer on top of its conda layers, and its files
    (relative to the prefix), kept in the store by the wheels' pins and sha256."""
    pins = sorted(f"{w.name}=={w.version}" for w in locked)
    key = _key(
        "pip",
        platform,
        python,
        clamp,
        sorted(f"{w.name}=={w.version} {w.hash.sha256}" for w in locked),
    )
    known = store.recall_layer(key)
    if known is not None:
        problem = budget.over(known[0].size, len(known[1]), "the pip pins") if budget else None
        if problem:
            raise BuildToolError(problem)
        return known
    wheels = fetch_wheels(locked, platform, python, wheel_cache)
    with tempfile.TemporaryDirectory(prefix="pip-", dir=store.root) as folder:
        stage = Path(folder)
        files = install_wheels(wheels, stage, PREFIX, ".".join(python.split(".")[:2]), budget)
        wheel = Installed("pip", "", "", None, tuple(files), 0, clamp)
        layer = store.write_layer(_entries(stage, [wheel]), clamp, "pip: " + " ".join(pins))
    store.remember_layer(key, layer, files)
    return layer, files


def _checks_layer(
    python: str, platform: str, clamp: int, store: BlobStore
) -> tuple[Layer, list[str]]:
    """The version checks (`versionchecks.py`) as the worker image's last layer, and its
    files, kept in the store by their content."""
    package = resources.files(compat)
    sources = {
        name: hashlib.sha256((package / name).read_bytes()).hexdigest()
        for name in versionchecks.MODULES
    }
    key = _key("checks", platform, python, clamp, sources, versionchecks.CONFIG_TEXT)
    known = store.recall_layer(key)
    if known is not None:
        return known
    with tempfile.TemporaryDirectory(prefix="checks-", dir=store.root) as folder:
        stage = Path(folder)
        files = versionchecks.write(stage, python)
        checks = Installed("daskhub-compat", "", "", None, tuple(files), 0, clamp)
        layer = store.write_layer(_entries(stage, [checks]), clamp, "version checks: compat")
    store.remember_layer(key, layer, files)
    return layer, files


def package_layers(
    stage: Path, installed: dict[str, Installed], names: list[str], slots: int, store: BlobStore
) -> list[Layer]:
    """`names` as layers by the plan, written from `stage` (an extension's additions)."""
    layers = []
    for planned in plan_layers([Package(n, installed[n].size) for n in names], slots):
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


@contextlib.contextmanager
def _held(stage: Path) -> Iterator[None]:
    """The staging prefix for this build alone: a build of the same environment elsewhere
    (another checkout with the same cache) waits."""
    stage.parent.mkdir(parents=True, exist_ok=True)
    with open(stage.parent / f"{stage.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class _Staging:
    """The staging prefix, installed when a layer or a package's facts are first needed
    and at most once a build."""

    lock_path: Path
    platform: str
    packages: list[LockedPackage]
    stage: Path
    cache: Path
    linked: int = 0
    ready: bool = False
    facts: dict[str, Installed] = field(default_factory=dict)

    def prefix(self, known: dict[str, Installed]) -> Path:
        """The prefix holding the whole set; `known`: the packages' facts as far as kept
        (the rest are read from the prefix).

        A new prefix is checked whole: every file in it belongs to a package. An update in
        place is not walked again (layers hold only the files packages list, so a stray
        file could not reach one); if it fails, the prefix is made again from nothing,
        once, as a killed build may have left it half-linked."""
        if self.ready:
            return self.stage
        unknown = {p.name for p in self.packages} - set(known)
        # A package in the prefix under another sha256 than the lock's is not replaced by
        # an update in place (same name, version and build): the prefix is made anew, so
        # that py-rattler checks the archive against the lock.
        new = not (self.stage / "conda-meta").is_dir() or self._differs(unknown)
        try:
            self._install(known, unknown, fresh=new)
        except BuildToolError:
            if new:
                raise
            self._install(known, unknown, fresh=True)
        self.ready = True
        return self.stage

    def _differs(self, names: set[str]) -> bool:
        """Whether the prefix holds one of `names` in the locked name, version and build
        but under another sha256 than the lock's."""
        for package in self.packages:
            if package.name not in names:
                continue
            dist = package.url.rsplit("/", 1)[-1].removesuffix(".conda").removesuffix(".tar.bz2")
            record = self.stage / "conda-meta" / f"{dist}.json"
            if (
                record.exists()
                and json.loads(record.read_text()).get("sha256") != package.hash.sha256
            ):
                return True
        return False

    def _install(self, known: dict[str, Installed], unknown: set[str], fresh: bool) -> None:
        self.linked = install_locked(
            self.lock_path, self.platform, self.packages, self.stage, self.cache, fresh=fresh
        )
        self.facts = read_installed(self.stage, self.cache, unknown)
        missing = sorted(unknown - set(self.facts))
        if missing:
            raise BuildToolError(f"{self.stage}: {missing[0]} was not installed")
        if fresh:
            check_owned(self.stage, {**known, **self.facts})


def _package_facts(
    staging: _Staging, sha: dict[str, str], store: BlobStore
) -> dict[str, Installed]:
    """What the layer plan needs of every package (`sha`: name -> locked sha256): kept in
    the store by its sha256, else read from the staging prefix, installed for it."""
    known: dict[str, Installed] = {}
    for name, digest in sha.items():
        kept = store.recall("packages", _key("package", staging.platform, digest))
        if kept is not None:
            known[name] = Installed(**{**kept, "files": tuple(kept["files"])})
    if len(known) < len(sha):
        staging.prefix(known)
        for name, facts in staging.facts.items():
            store.remember("packages", _key("package", staging.platform, sha[name]), asdict(facts))
        known.update(staging.facts)
    return known


def assemble(
    lock_path: Path,
    platform: str,
    worker_set: list[LockedPackage],
    notebook_set: list[LockedPackage],
    pip: dict[str, list[PipLockedPackage]],
    system: Callable[[], SystemPair],
    stage: Path,
    cache: Path,
    store: BlobStore,
    on_layer: Callable[[Layer], None] = lambda layer: None,
    starts: Callable[[Callable[[], Path]], dict[str, list[str]]] = lambda prefix: {},
) -> AssembledPair:
    """Both images of one platform, from the staging prefix `stage` holding the notebook
    set; `pip`: each role's own locked wheels (the notebook's beyond the worker's);
    `system`: waits for the system stages (built meanwhile); `on_layer` gets each layer
    of the notebook image, bottom first, once it is in the store; `starts`: what each
    role's start reads (`prefetch.py`), given a way to the staged prefix, which goes
    first in its layers."""
    with _held(stage):
        sha = {p.name: p.hash.sha256 for p in notebook_set}
        staging = _Staging(lock_path, platform, notebook_set, stage, cache)
        known = _package_facts(staging, sha, store)
        worker_names = sorted(p.name for p in worker_set)
        notebook_names = sorted(n for n in sha if n not in set(worker_names))
        missing = sorted({*worker_names, *notebook_names} - set(known))
        if missing:
            raise BuildToolError(f"{stage}: {missing[0]} was not installed")

        root = PREFIX.lstrip("/")

        def conda_layer(planned: PlannedLayer, read: list[str]) -> Layer:
            members = [known[n] for n in planned.packages]
            held = {f"{root}/{f}" for p in members for f in (*p.files, p.record) if f}
            first = [path for path in read if path in held]
            key = _key("conda", platform, [[n, sha[n]] for n in planned.packages], first)
            kept = store.recall_layer(key)
            if kept is None:
                prefix = staging.prefix(known)
                layer = store.write_layer(
                    _entries(prefix, members),
                    max(p.built for p in members),
                    _describe(members),
                    prefetch=first,
                )
                store.remember_layer(key, layer, [])
            else:
                layer = kept[0]
            on_layer(layer)
            return layer

        pair = system()
        read = starts(lambda: staging.prefix(known))
        for layer in pair.worker.layers:
            on_layer(layer)
        fixed = len(pair.worker.layers) + len(pair.notebook_extra)
        budget = Budget.after(fixed + sum(1 for pins in pip.values() if pins) + 1)
        python = known["python"].version
        owners = {
            name: [*package.files, *([package.record] if package.record else [])]
            for name, package in known.items()
        }
        layers: dict[str, list[Layer]] = {"worker": [], "notebook": []}
        for role, names, slots in (
            ("worker", worker_names, budget.worker),
            ("notebook", notebook_names, budget.notebook),
        ):
            if role == "notebook":
                for layer in pair.notebook_extra:
                    on_layer(layer)
            plan = plan_layers([Package(n, known[n].size) for n in names], slots)
            layers[role] = [conda_layer(planned, read.get(role, [])) for planned in plan]
            clamp = max(known[n].built for n in names)
            extra: list[tuple[str, tuple[Layer, list[str]]]] = []
            if pip.get(role):
                wheels = pip_layer(
                    pip[role], platform, python, clamp, cache.parent / "wheels", store
                )
                extra.append((f"pip ({role})", wheels))
            if role == "worker":
                checks = _checks_layer(".".join(python.split(".")[:2]), platform, clamp, store)
                extra.append(("version checks", checks))
            for owner, (layer, files) in extra:
                owners[owner] = files
                layers[role].append(layer)
                on_layer(layer)
        worker = Image(platform, pair.worker.config, (*pair.worker.layers, *layers["worker"]))
        notebook = Image(
            platform,
            pair.notebook.config,
            (*worker.layers, *pair.notebook_extra, *layers["notebook"]),
        )
        for role, image in (("worker", worker), ("notebook", notebook)):
            check_layers(image, f"{role} image ({platform})")
        return AssembledPair(platform, worker, notebook, owners, staging.linked)
