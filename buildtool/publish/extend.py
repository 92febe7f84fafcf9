"""Extension pairs: a user's packages on a published pair, built and pushed without a
Docker engine.

An extension's spec (`from:`, `spec.py`) is locked by solving only its additions with
every record of the parent's lock held fixed (`lock.lock_extension`). Publishing it:

1. The parent is read from the registry (`parent.py`): manifests, configs, the lock it
   was built from and what owns each file of its prefix. No parent layer is downloaded.
2. Only the added packages' archives are fetched (py-rattler's package cache, each
   checked against the lock's sha256) and installed into an empty staging prefix, with
   the image's prefix patched in; the added wheels go on top. A file that the parent
   already has is an error naming both owners.
3. The additions become layers by the parent's own rules (`layers.py`: own layers for
   large packages, groups by name hash, the wheels as one layer), within the layers the
   parent left free (`layers.EXTENSION_RESERVE`), written reproducibly (`oci.py`) and
   compressed harder than a site's (`oci.EXTENSION_GZIP_LEVEL`).
4. worker   = the parent's worker layers + the additions;
   notebook = the child's worker layers + the parent notebook's own layers.
   The configs are the parent's, with labels naming the extension, its lock and the
   parent by digest; the notebook's `DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE` and
   `io.daskhub.worker-image` name the new worker by digest.
5. Everything is pushed by digest. The parent's blobs are mounted across repositories,
   never sent again; only the new layers, configs and manifests travel. The lock (with
   the merged file list) and the client's pins are attached as for a site pair, so an
   extension can be extended in turn while layers are left. With `test`, the image
   tests run on the pair (by digest) before anything is tagged. Tags come last.

Nothing here calls a Docker engine: a notebook pod or a small service can publish.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool.common import (
    PUBLISHED_FILE,
    PUBLISHED_LOCK_FILE,
    BuildToolError,
    DiskBudget,
    Limits,
    Published,
    PublishedImage,
    PublishedImages,
    SpecError,
    call_bounded,
    write_atomic,
)
from buildtool.image import (
    EXTENSION_GZIP_LEVEL,
    MAX_LAYERS,
    VIEWS,
    BlobStore,
    Image,
    Installed,
    Layer,
    check_layers,
    check_owned,
    date_tag,
    index,
    install_locked,
    package_cache,
    package_layers,
    pip_layer,
    read_installed,
)
from buildtool.image import Blob as OciBlob
from buildtool.lock import (
    LockedPackage,
    LockFile,
    Parent,
    ParentImage,
    PipLockedPackage,
    check_extension_lock,
    check_site_channels,
    client_files,
)
from buildtool.publish.attachments import attach_client_files, attach_lock
from buildtool.publish.parent import read_parent
from buildtool.publish.registry import Registry, credentials_for, split_reference
from buildtool.spec import Extension
from compat.vocabulary import (
    DESCRIPTION_LABEL,
    ENVIRONMENT_LABEL,
    IMAGE_OPTION_ENV,
    LOCK_LABEL,
    PARENT_LABEL,
    ROLES,
    TITLE_LABEL,
    WORKER_LABEL,
    Role,
)

logger = logging.getLogger(__name__)

# Bumped when extension pairs are laid out differently, so that the content tag moves.
LAYOUT = "extension-v1"
#: What the additions may write when nobody says less (`publish --max-installed-mb`):
#: the conda packages' files, and the pip pins' files, each.
DEFAULT_BUDGET = DiskBudget(max_bytes=20 * 10**9)
#: The child process that installs the additions.
INSTALL_LIMITS = Limits(cpu_seconds=1800, memory_bytes=8 * 1024**3, wall_seconds=3600)
# A top-level module in site-packages: a package's __init__ or a module file.
_TOP_LEVEL = re.compile(
    r"lib/python[0-9.]+/site-packages/(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:/__init__)?\.py"
)
# What `Image.config_blob` writes from the layers and the platform.
_DERIVED = ("architecture", "os", "variant", "created", "rootfs", "history")


class DownloadCounter:
    """py-rattler's installer reporter, counting what it fetches: which packages and how
    many bytes (a package found in the cache is not fetched)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._bytes: dict[int, int] = {}
        self._downloads = 0

    @property
    def bytes(self) -> int:
        return sum(self._bytes.values())

    def on_transaction_start(self, total_operations: int) -> None: ...
    def on_transaction_operation_start(self, operation: int) -> None: ...
    def on_populate_cache_start(self, operation: int, package_name: str) -> int:
        self.names.append(package_name)
        return operation

    def on_validate_start(self, cache_entry: int) -> int:
        return cache_entry

    def on_validate_complete(self, validate_idx: int) -> None: ...
    def on_download_start(self, cache_entry: int) -> int:
        self._downloads += 1
        return self._downloads

    def on_download_progress(self, download_idx: int, progress: int, total: int | None) -> None:
        self._bytes[download_idx] = max(progress, self._bytes.get(download_idx, 0))

    def on_download_completed(self, download_idx: int) -> None: ...
    def on_populate_cache_complete(self, cache_entry: int) -> None: ...
    def on_unlink_start(self, operation: int, package_name: str) -> int:
        return operation

    def on_unlink_complete(self, index: int) -> None: ...
    def on_link_start(self, operation: int, package_name: str) -> int:
        return operation

    def on_link_complete(self, index: int) -> None: ...
    def on_transaction_operation_complete(self, operation: int) -> None: ...
    def on_transaction_complete(self) -> None: ...
    def on_post_link_start(self, package_name: str, script_path: str) -> int:
        return 0

    def on_post_link_complete(self, index: int, success: bool) -> None: ...
    def on_pre_unlink_start(self, package_name: str, script_path: str) -> int:
        return 0

    def on_pre_unlink_complete(self, index: int, success: bool) -> None: ...


@dataclass
class ExtensionPair:
    """What was built: per platform each role's image, the new layers' blobs, the file
    owners to publish with the lock, and what was fetched."""

    images: dict[str, dict[str, Image]] = field(default_factory=dict)
    blobs: dict[str, OciBlob] = field(default_factory=dict)  # diff_id -> compressed blob
    new_layers: set[str] = field(default_factory=set)  # diff_ids made here
    owners: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    fetched_bytes: int = 0
    fetched: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    @property
    def modules(self) -> list[str]:
        """The top-level Python modules the additions install (what the image tests
        import when the spec names none)."""
        found = set()
        for owners in self.owners.values():
            for files in owners.values():
                for path in files:
                    match = _TOP_LEVEL.fullmatch(path)
                    if match and not match["name"].startswith("_"):
                        found.add(match["name"])
        return sorted(found)


def _seconds(text: str) -> int:
    return int(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


def _parent_image(image: ParentImage, platform: str) -> tuple[Image, dict[str, OciBlob]]:
    """The parent's image as this tool models it, and its layers' compressed blobs; its
    config must come out byte for byte as the registry holds it."""
    config = image.configs[platform]
    manifest = image.manifests[platform]
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    history = config.get("history", [])
    descriptors = manifest.get("layers", [])
    if not (len(diff_ids) == len(history) == len(descriptors)) or any(
        h.get("empty_layer") for h in history
    ):
        raise BuildToolError(f"{image.ref}: not a pair this tool built (one history per layer)")
    layers = tuple(
        Layer(d, 0, _seconds(h["created"]), str(h.get("created_by", "")))
        for d, h in zip(diff_ids, history, strict=True)
    )
    base = {k: v for k, v in config.items() if k not in _DERIVED}
    modeled = Image(platform, base, layers)
    if modeled.config_blob().digest != manifest["config"]["digest"]:
        raise BuildToolError(f"{image.ref}: its config is not one this tool wrote")
    # Each layer as the parent's manifest describes it, its annotations (an eStargz
    # layer's TOC digest and size) kept, so a lazy-pulling node mounts it in the child too.
    blobs = {
        d: OciBlob(
            desc["digest"],
            int(desc["size"]),
            desc["mediaType"],
            annotations={str(k): str(v) for k, v in desc.get("annotations", {}).items()},
        )
        for d, desc in zip(diff_ids, descriptors, strict=True)
    }
    return modeled, blobs


def added_records(
    lock: LockFile, parent_lock: LockFile, platform: str | None = None
) -> tuple[list[LockedPackage], list[PipLockedPackage]]:
    """The conda and pip records an extension's lock adds to its parent's (on `platform`,
    or on every platform): what is fetched, installed, layered and shown as added."""
    held = {(p.platform, p.name) for p in parent_lock.package}
    held_pip = {(p.platform, p.name) for p in parent_lock.pip}
    conda = [p for p in lock.package if (p.platform, p.name) not in held]
    pip = [p for p in lock.pip if (p.platform, p.name) not in held_pip]
    if platform is not None:
        conda = [p for p in conda if p.platform == platform]
        pip = [p for p in pip if p.platform == platform]
    return conda, pip


def _check_no_overwrite(
    ext: Extension,
    parent: Parent,
    platform: str,
    installed: dict[str, Installed],
    wheels: list[str],
) -> None:
    """No file of the parent is overwritten: one line at the spec's additions naming the
    addition, the file and the parent's package that installs it."""
    owners = parent.owners.get(platform, {})
    mine = [
        (f"the addition {name}", path)
        for name, package in installed.items()
        for path in (*package.files, *([package.record] if package.record else []))
    ]
    mine += [(f"the pip wheels ({', '.join(ext.pip)})", path) for path in wheels]
    for what, path in mine:
        if path in owners:
            key = "pip" if what.startswith("the pip") else "dependencies"
            line = (ext.pip_lines if key == "pip" else [r.line for r in ext.dependencies])[0]
            raise SpecError(
                ext.path,
                key,
                f"{what} would overwrite {path}, which {owners[path]} of "
                f"{parent.environment} installs",
                line,
            )


def _config(
    parent: ParentImage,
    platform: str,
    ext: Extension,
    role: str,
    lock_sha: str,
    worker_ref: str | None,
) -> dict[str, Any]:
    """The parent image's config on `platform` (what `Image` does not derive), saying
    what the extension is and, for the notebook, its worker by digest."""
    parent_ref = parent.ref
    config = {k: v for k, v in parent.configs[platform].items() if k not in _DERIVED}
    config = json.loads(json.dumps(config))
    inner = config.setdefault("config", {})
    labels = dict(inner.get("Labels") or {})
    labels.update(
        {
            TITLE_LABEL: ext.repository(role),
            DESCRIPTION_LABEL: f"{ext.description} ({role} image)",
            ENVIRONMENT_LABEL: ext.name,
            LOCK_LABEL: lock_sha,
            PARENT_LABEL: parent_ref,
        }
    )
    if worker_ref is not None:
        labels[WORKER_LABEL] = worker_ref
        inner["Env"] = [
            f"{IMAGE_OPTION_ENV}={worker_ref}" if e.startswith(f"{IMAGE_OPTION_ENV}=") else e
            for e in inner.get("Env", [])
        ]
    inner["Labels"] = dict(sorted(labels.items()))
    return config


def _install_counted(
    lock_path: Path,
    platform: str,
    conda: list[LockedPackage],
    stage: Path,
    cache: Path,
    view_name: str,
) -> tuple[list[str], int]:
    """Install the additions (in a bounded child process, `install_additions`): which
    packages were fetched, and how many bytes."""
    counter = DownloadCounter()
    install_locked(lock_path, platform, conda, stage, cache, counter, view_name=view_name)
    return counter.names, counter.bytes


def install_additions(
    lock_path: Path,
    platform: str,
    conda: list[LockedPackage],
    stage: Path,
    cache: Path,
    budget: DiskBudget,
) -> tuple[list[str], int]:
    """The added conda packages installed into `stage`, in a child process that is
    stopped as soon as what it extracts and links passes `budget` (an archive may expand
    without end), or its CPU, memory or time limits. What was fetched, and its bytes."""
    view_name = f"additions-{secrets.token_hex(8)}"
    return call_bounded(
        _install_counted,
        lock_path,
        platform,
        conda,
        stage,
        cache,
        view_name,
        limits=INSTALL_LIMITS,
        what=f"installing the additions ({platform})",
        watch=budget.watch(stage, cache / VIEWS / view_name, what="the additions"),
    )


def build_additions(
    ext: Extension,
    lock: LockFile,
    parent: Parent,
    store: BlobStore,
    cache: Path,
    budget: DiskBudget = DEFAULT_BUDGET,
) -> tuple[ExtensionPair, dict[str, tuple[list, Image, Image, dict[str, OciBlob]]]]:
    """Install and layer the additions of every platform, within `budget`. Returns the
    pair so far (new layers, owners, what was fetched) and, per platform, the new layers
    and the parent's two images with their blobs."""
    pair = ExtensionPair()
    parts = {}
    for platform in parent.lock.metadata.platforms:
        conda, pip = added_records(lock, parent.lock, platform)
        parent_worker, worker_blobs = _parent_image(parent.worker, platform)
        parent_notebook, notebook_blobs = _parent_image(parent.notebook, platform)
        shared = len(parent_worker.layers)
        if parent_notebook.layers[:shared] != parent_worker.layers:
            raise BuildToolError(f"{parent.notebook.ref}: not its worker image plus layers")
        fetched: tuple[list[str], int] = ([], 0)
        python = next(
            p.version for p in parent.lock.package if p.platform == platform and p.name == "python"
        )
        with tempfile.TemporaryDirectory(prefix=f"extend-{platform}-", dir=store.root) as folder:
            stage = Path(folder) / "prefix"
            stage.mkdir()
            installed: dict[str, Installed] = {}
            logger.info(
                "fetching and installing %s (%s)",
                ", ".join([p.name for p in conda] + [p.name for p in pip]) or "nothing",
                platform,
            )
            if conda:
                fetched = install_additions(ext.lock_path, platform, conda, stage, cache, budget)
                installed = read_installed(stage, cache)
                check_owned(stage, installed)
            clamp = max(
                [p.built for p in installed.values()]
                + [layer.created for layer in parent_worker.layers]
            )
            logger.info("writing the layers (%s)", platform)
            slots = MAX_LAYERS - len(parent_notebook.layers) - (1 if pip else 0)
            if conda and slots < 2:
                raise BuildToolError(
                    f"{parent.notebook.ref} has {len(parent_notebook.layers)} layers, which "
                    f"leaves {max(slots, 0)} of {MAX_LAYERS} for the additions (2 are needed)"
                )
            layers = package_layers(stage, installed, sorted(installed), slots, store)
            wheels: list[str] = []
            if pip:
                layer, wheels = pip_layer(
                    pip,
                    platform,
                    ".".join(python.split(".")[:2]),
                    clamp,
                    cache.parent / "wheels",
                    store,
                    budget,
                )
                layers.append(layer)
            _check_no_overwrite(ext, parent, platform, installed, wheels)
        pair.owners[platform] = {}  # only its own files: the parent's are the parent's
        for name, package in installed.items():
            pair.owners[platform][name] = [
                *package.files,
                *([package.record] if package.record else []),
            ]
        if wheels:
            pair.owners[platform]["pip (extension)"] = wheels
        pair.fetched += fetched[0]
        pair.fetched_bytes += fetched[1]
        pair.new_layers |= {layer.diff_id for layer in layers}
        pair.blobs.update(worker_blobs)
        pair.blobs.update(notebook_blobs)
        pair.blobs.update(
            store.gzip_blobs([layer.diff_id for layer in layers], EXTENSION_GZIP_LEVEL)
        )
        parts[platform] = (layers, parent_worker, parent_notebook, notebook_blobs)
    conda, pip = added_records(lock, parent.lock)
    pair.added = sorted({p.name for p in conda} | {p.name for p in pip})
    return pair, parts


def content_tag(ext: Extension, lock_text: str, parent: Parent) -> str:
    digest = hashlib.sha256()
    for part in (
        LAYOUT,
        ext.name,
        ext.description,
        ext.notebook_repository,
        ext.worker_repository,
        parent.notebook.digest,
        parent.worker.digest,
        lock_text,
    ):
        digest.update(part.encode() + b"\0")
    return f"c-{digest.hexdigest()[:12]}"


def _push(
    registry: Registry,
    name: str,
    images: dict[str, Image],
    pair: ExtensionPair,
    mount_from: dict[str, str],
) -> tuple[OciBlob, dict[str, OciBlob]]:
    """Push one role's images by digest: new layers sent, parent layers mounted (from the
    repository `mount_from` names for each diff_id). Returns the top manifest and each
    platform's."""
    manifests = {}
    for platform, image in images.items():
        for layer in image.layers:
            blob = pair.blobs[layer.diff_id]
            if layer.diff_id in pair.new_layers and layer.diff_id not in mount_from:
                registry.push_blob(name, blob)
            else:
                registry.mount_blob(name, blob.digest, mount_from[layer.diff_id])
        registry.push_blob(name, image.config_blob())
        manifests[platform] = image.manifest(pair.blobs)
        registry.put_manifest(name, manifests[platform].digest, manifests[platform])
    top = next(iter(manifests.values())) if len(manifests) == 1 else index(manifests)
    if len(manifests) > 1:
        registry.put_manifest(name, top.digest, top)
    return top, manifests


def _parent_in(ext: Extension, lock: LockFile, registry_prefix: str) -> tuple[str, Parent]:
    """The registry host the pair goes to, and the parent its lock was made on, read from
    that registry (an extension mounts its parent's layers, so both live in one)."""
    custom = lock.metadata.custom_metadata or {}
    host, _ = split_reference(f"{registry_prefix}/{ext.worker_repository}")
    parent = read_parent(custom["parent.notebook"], configured=host)
    if parent.lock.content_sha() != custom.get("parent.lock_sha256"):
        raise BuildToolError(f"{ext.lock_path}: the parent's lock changed; relock")
    parent_host, _ = split_reference(parent.notebook.repository)
    if host != parent_host:
        raise BuildToolError(
            f"{registry_prefix}: the parent is in {parent_host}; an extension pair mounts "
            "its parent's layers, so it is published in that registry"
        )
    return host, parent


@dataclass(frozen=True)
class _PushedPair:
    """Both images in the registry, untagged: each role's repository (host/name), its top
    manifest and each platform's manifest."""

    repositories: dict[Role, str]
    tops: dict[Role, OciBlob]
    platforms: dict[Role, dict[str, OciBlob]]

    def name(self, role: Role) -> str:
        return split_reference(self.repositories[role])[1]

    def ref(self, role: Role) -> str:
        return f"{self.repositories[role]}@{self.tops[role].digest}"

    def by_platform(self) -> dict[str, dict[str, str]]:
        """platform -> role -> repository@manifest digest: what the image tests pull."""
        return {
            platform: {
                str(role): f"{self.repositories[role]}@{self.platforms[role][platform].digest}"
                for role in ROLES
            }
            for platform in self.platforms[Role.WORKER]
        }


def _push_pair(
    registry: Registry,
    ext: Extension,
    parent: Parent,
    repositories: dict[Role, str],
    lock_sha: str,
    built: ExtensionPair,
    parts: dict[str, tuple[list, Image, Image, dict[str, OciBlob]]],
) -> _PushedPair:
    """Push the worker, whose digest the notebook's config names, then the notebook; the
    parent's layers are mounted from its repositories, the new ones sent once."""
    names = {role: split_reference(repositories[role])[1] for role in ROLES}
    logger.info("pushing %s and %s", repositories[Role.WORKER], repositories[Role.NOTEBOOK])
    workers = {
        platform: Image(
            platform,
            _config(parent.worker, platform, ext, Role.WORKER, lock_sha, None),
            (*parent_worker.layers, *layers),
        )
        for platform, (layers, parent_worker, _, _) in parts.items()
    }
    mount_worker = {
        layer.diff_id: parent.worker.name
        for image in workers.values()
        for layer in image.layers
        if layer.diff_id not in built.new_layers
    }
    worker_top, worker_manifests = _push(registry, names[Role.WORKER], workers, built, mount_worker)
    worker_ref = f"{repositories[Role.WORKER]}@{worker_top.digest}"
    notebooks = {
        platform: Image(
            platform,
            _config(parent.notebook, platform, ext, Role.NOTEBOOK, lock_sha, worker_ref),
            (*workers[platform].layers, *parent_notebook.layers[len(parent_worker.layers) :]),
        )
        for platform, (_, parent_worker, parent_notebook, _) in parts.items()
    }
    for role, images in ((Role.WORKER, workers), (Role.NOTEBOOK, notebooks)):
        for platform, image in images.items():
            check_layers(image, f"{ext.name} {role} image ({platform})")
    mount_notebook = {
        layer.diff_id: (
            names[Role.WORKER] if layer.diff_id in built.new_layers else parent.notebook.name
        )
        for image in notebooks.values()
        for layer in image.layers
    }
    notebook_top, notebook_manifests = _push(
        registry, names[Role.NOTEBOOK], notebooks, built, mount_notebook
    )
    return _PushedPair(
        repositories,
        {Role.WORKER: worker_top, Role.NOTEBOOK: notebook_top},
        {Role.WORKER: worker_manifests, Role.NOTEBOOK: notebook_manifests},
    )


def publish_extension(
    ext: Extension,
    registry_prefix: str,
    build_dir: Path,
    test: Callable[[dict[str, dict[str, str]], str, list[str]], None] | None = None,
    cache: Path | None = None,
    budget: DiskBudget = DEFAULT_BUDGET,
) -> Published:
    """Build and publish the extension pair into `registry_prefix` (host/namespace),
    without a Docker engine. `test` runs before the tags, given each platform's images
    by manifest digest (platform -> role -> ref), the worker's top ref and the modules
    to import (the spec's `imports`, else the top-level modules the additions install)."""
    started = time.monotonic()
    lock = check_extension_lock(ext)
    check_site_channels(lock, ext.lock_path, ext.name)
    host, parent = _parent_in(ext, lock, registry_prefix)
    lock_text = ext.lock_path.read_text()
    tag = content_tag(ext, lock_text, parent)
    registry = Registry(host, credentials_for(host, configured=host))
    store = BlobStore(build_dir / ".store", EXTENSION_GZIP_LEVEL)
    built, parts = build_additions(ext, lock, parent, store, cache or package_cache(), budget)
    logger.info(
        "%s: %d added packages (%s), fetched %.1f MB for %s",
        ext.name,
        len(built.added),
        ", ".join(built.added),
        built.fetched_bytes / 1e6,
        ", ".join(built.fetched) or "nothing",
    )
    repositories = {role: f"{registry_prefix}/{ext.repository(role)}" for role in ROLES}
    pushed = _push_pair(registry, ext, parent, repositories, lock.content_sha(), built, parts)
    client = client_files(ext.name, lock, ext.lock_path)
    for role in ROLES:
        mount = pushed.name(Role.WORKER) if role == Role.NOTEBOOK else None
        attach_lock(registry, pushed.name(role), pushed.tops[role], lock_text, built.owners, mount)
        attach_client_files(registry, pushed.name(role), pushed.tops[role], client, mount)
    imports = ext.imports or built.modules
    if test is not None:  # raises before anything is tagged
        logger.info("running the image tests")
        test(pushed.by_platform(), pushed.ref(Role.WORKER), imports)
    tags = [tag, date_tag()]
    for role in ROLES:
        for name in tags:
            registry.put_manifest(pushed.name(role), name, pushed.tops[role])
        logger.info(f"tagged {repositories[role]}:{{{','.join(tags)}}}")
    published = Published(
        environment=ext.name,
        registry=registry_prefix,
        content_tag=tag,
        date_tag=tags[1],
        lock_sha256=lock.content_sha(),
        images=PublishedImages(
            **{
                role: PublishedImage.at(
                    repositories[role],
                    pushed.tops[role].digest,
                    tags,
                    {p: m.digest for p, m in pushed.platforms[role].items()},
                )
                for role in ROLES
            }
        ),
        bytes_pushed=registry.bytes_uploaded,
        published_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        parent=parent.notebook.ref,
        parent_environment=parent.environment,
        added=built.added,
        bytes_fetched=built.fetched_bytes,
        imports=imports,
        image_tested=test is not None,
    )
    write_atomic(build_dir / ext.name / PUBLISHED_FILE, published.to_json())
    write_atomic(build_dir / ext.name / PUBLISHED_LOCK_FILE, lock_text)
    logger.info(
        "%s: published in %.1f s, %.1f MB pushed, %.1f MB fetched",
        ext.name,
        time.monotonic() - started,
        registry.bytes_uploaded / 1e6,
        built.fetched_bytes / 1e6,
    )
    return published
