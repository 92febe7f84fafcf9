"""Build the rendered pair, for each of its platforms, and load it into the Docker engine.

For each platform: the system stages with BuildKit (`system.py`), then the conda layers
(`assemble.py`), into the layer store under `build/.store`. `build/<env>/images.json`
records every image (config and layers), which `test`, `publish` and `verify` read, and
`build/<env>/build-stats.json` what the build did (layers written, bytes sent, seconds).

The parts overlap: the system stages of every platform are built in the background
while the packages are installed, and the engine loads the layers already written, in
chain order, while the next ones are written (`_Loader`). Nothing is done twice: layers
and system stages are kept by their inputs' keys, and the engine gets only the layers it
does not hold; images it has under the right tags already are not loaded at all.

The engine gets the images under the content tag and the date tag (YYYYMMDD); images of
another platform than the engine's are loaded under tags ending in the platform's name
(`c-0123abcd4567-linux-aarch64`), so the image tests can run them under emulation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from buildtool.common import BuildToolError, cache_root, write_atomic
from buildtool.image.assemble import AssembledPair, assemble
from buildtool.image.engine import docker, docker_cli, held_layer_chains, local_tags
from buildtool.image.oci import BlobStore, Image, Layer, chain_ids, docker_load, next_chain
from buildtool.image.prefetch import record as record_starts
from buildtool.image.render import RenderedPair
from buildtool.image.system import SystemImage, SystemPair, build_system
from buildtool.lock import LockFile, locked_wheels, read_lock
from compat.vocabulary import PARTIAL_LABEL, ROLES, host_platform, of_role

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.json"
STATS_FILE = "build-stats.json"
# What owns each file of the prefix, per platform (`AssembledPair.owners`); `publish`
# attaches it to the images with their lock.
FILES_FILE = "files.json"


def date_tag() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")


def package_cache() -> Path:
    """The package cache (`pkgcache`: packages under their sha256), shared by every build
    and environment; the staging prefixes and the wheels are kept beside it."""
    return cache_root() / "build" / "pkgs"


def store_for(pair: RenderedPair) -> BlobStore:
    return BlobStore(Path(pair.directory).parent / ".store")


@dataclass(frozen=True)
class BuiltPair:
    """`build/<env>/images.json`: every image of the pair, per platform."""

    content_tag: str
    images: dict[str, dict[str, Image]]  # platform -> role -> image
    # platform -> role -> Debian package -> {"version", "arch"}: what the system stage has
    apt: dict[str, dict[str, dict[str, dict[str, str]]]]

    def local_tag(self, pair: RenderedPair, role: str, platform: str) -> str:
        """The engine's tag for one platform's image."""
        ref = pair.image(role).ref
        return ref if platform == host_platform().subdir else f"{ref}-{platform}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, pair: RenderedPair, path: Path | None = None) -> BuiltPair:
        path = path or Path(pair.directory) / IMAGES_FILE
        if not path.exists():
            raise BuildToolError(f"{path}: not built yet; run `buildtool build {pair.environment}`")
        data = json.loads(path.read_text())
        if data["content_tag"] != pair.content_tag:
            raise BuildToolError(
                f"{path}: built as {data['content_tag']}, rendered since as "
                f"{pair.content_tag}; run `buildtool build {pair.environment}`"
            )

        def image(value: dict[str, Any]) -> Image:
            return Image(
                value["platform"], value["config"], tuple(Layer(**x) for x in value["layers"])
            )

        images = {
            platform: {role: image(value) for role, value in roles.items()}
            for platform, roles in data["images"].items()
        }
        return cls(data["content_tag"], images, data["apt"])


# Layers the engine is sent at once while the build goes on: small enough that it starts
# early, large enough that each `docker load`'s own cost (a second or less) stays small.
LOAD_STEP = 256 * 1024 * 1024


def stage_for(cache: Path, environment: str, platform: str) -> Path:
    """The staging prefix of an environment and platform, beside the package cache."""
    return cache.parent / "stages" / f"{environment}-{platform}"


def with_lock_config(system: SystemPair, pair: RenderedPair) -> SystemPair:
    """The system images' configs with what they take from the lock (`lock_config`)."""
    images: dict[str, SystemImage] = {}
    for role in ROLES:
        image: SystemImage = of_role(system, role)
        labels, env = pair.lock_config(role)
        config = dict(image.config["config"])
        config["Labels"] = {**config.get("Labels", {}), **labels}
        config["Env"] = [*config.get("Env", []), *(f"{k}={v}" for k, v in env.items())]
        images[role] = replace(image, config={**image.config, "config": config})
    return replace(system, worker=images["worker"], notebook=images["notebook"])


class _Loader:
    """Loads a platform's layers into the engine while the build writes the next ones.

    Every `LOAD_STEP` bytes the engine lacks, the chain so far goes to `docker load` as an
    untagged image marked `PARTIAL_LABEL`, one load after another on a thread of its own
    (the engine's work, and `os.sendfile`, leave the GIL to the layer writing). What a
    load did not take, the final load of the tagged images sends."""

    def __init__(self, store: BlobStore, platform: str, held: set[str]) -> None:
        self.store, self.platform, self.held = store, platform, held
        self.chain: list[Layer] = []
        self.chains: list[str] = []
        self.unsent = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
        self.partials: list[str] = []
        self.layers = self.bytes = 0

    def add(self, layer: Layer) -> None:
        self.chain.append(layer)
        self.chains.append(next_chain(self.chains[-1] if self.chains else None, layer.diff_id))
        if self.chains[-1] not in self.held:
            self.unsent += layer.size
        if self.unsent >= LOAD_STEP:
            self.unsent = 0
            config = {"config": {"Labels": {PARTIAL_LABEL: "true"}}}
            self.pool.submit(self._load, Image(self.platform, config, tuple(self.chain)))

    def _load(self, image: Image) -> None:
        try:
            layers, sent = docker_load(
                docker_cli(), [(None, image)], self.store, frozenset(self.held)
            )
        except (RuntimeError, BuildToolError) as exc:
            logger.info("loading a part of the chain failed (%s); the final load sends it", exc)
            return
        self.held.update(chain_ids(layer.diff_id for layer in image.layers))
        self.partials.append(image.image_id)
        self.layers += layers
        self.bytes += sent

    def finish(self) -> None:
        self.pool.shutdown(wait=True)


@dataclass
class BuildStats:
    """`build/<env>/build-stats.json`: what one build did."""

    seconds: float = 0.0
    layers: int = 0  # distinct layers of the pair
    layers_written: int = 0  # tarred into the layer store by this build
    bytes_written: int = 0
    layers_sent: int = 0  # sent to the engine by this build
    bytes_sent: int = 0
    packages_installed: int = 0  # linked into the staging prefixes by py-rattler
    system_built: bool = False  # whether BuildKit ran the system stages

    def count(self, images: dict[str, dict[str, Image]], store: BlobStore, started: float) -> None:
        """The pair's distinct layers, what the store wrote, and the time since `started`."""
        self.layers = len(
            {
                layer.diff_id
                for roles in images.values()
                for i in roles.values()
                for layer in i.layers
            }
        )
        self.layers_written = len({d for d, _ in store.written})
        self.bytes_written = sum(dict(store.written).values())
        self.seconds = round(time.monotonic() - started, 2)

    def log(self) -> None:
        logger.info(
            "wrote %d of the pair's %d layers (%.1f MB) and sent the engine %d (%.1f MB) in %.1f s",
            self.layers_written,
            self.layers,
            self.bytes_written / 1e6,
            self.layers_sent,
            self.bytes_sent / 1e6,
            self.seconds,
        )


def _system_stages(
    pair: RenderedPair, platform: str, store: BlobStore, echo: bool, no_cache: bool
) -> tuple[SystemPair, bool, float]:
    """A platform's system stages (BuildKit, or the store's when their inputs are kept),
    with what they take from the lock; whether BuildKit ran, and the seconds it took."""
    begun = time.monotonic()
    system, built = build_system(
        pair.system_dockerfile(platform),
        pair.base_images[platform],
        platform,
        f"buildtool-system/{pair.environment}:{platform}",
        store,
        echo,
        no_cache=no_cache,
    )
    return with_lock_config(system, pair), built, time.monotonic() - begun


def _assemble(
    pair: RenderedPair,
    lock: LockFile,
    platform: str,
    system: Future[tuple[SystemPair, bool, float]],
    cache: Path,
    store: BlobStore,
    loader: _Loader,
    load: bool,
    recorded: dict[str, dict[str, list[str]]],
) -> AssembledPair:
    """One platform's images: its conda layers on its system stages (`system`, built
    meanwhile), each layer handed to `loader` as it is written when the pair is loaded;
    what each role's start reads goes first in its layers (`recorded`: by platform)."""

    def starts(prefix: Callable[[], Path]) -> dict[str, list[str]]:
        host = host_platform().subdir
        if platform != host:  # the engine's own platform's recording, when there is one
            return recorded.get(host, {})
        packages = [f"{p.name} {p.hash.sha256}" for p in lock.packages("notebook", platform)]
        found = record_starts(store, pair.base_images[platform], platform, prefix, packages)
        recorded[platform] = found
        return found

    return assemble(
        pair.lock_path,
        platform,
        lock.packages("worker", platform),
        lock.packages("notebook", platform),
        {
            role: locked_wheels(
                pair.lock_path, lock.pip_packages(role, platform), pair.pip[role], platform
            )
            for role in ROLES
        },
        lambda: system.result()[0],
        stage_for(cache, pair.environment, platform),
        cache,
        store,
        loader.add if load else lambda layer: None,
        starts,
    )


def build_pair(
    pair: RenderedPair,
    *,
    echo: bool = True,
    cache: Path | None = None,
    store: BlobStore | None = None,
    no_cache: bool = False,
    load: bool = True,
) -> BuiltPair:
    """Build every platform's images, record them, and load them into the engine.

    `cache` and `store` default to the shared package cache and layer store; `no_cache`
    builds the system stages without BuildKit's cache or the store's; without `load`
    nothing is recorded or loaded (what `verify` wants)."""
    started = time.monotonic()
    lock = read_lock(pair.lock_path)
    store = store or store_for(pair)
    cache = cache or package_cache()
    stats = BuildStats()
    held = set(held_layer_chains()) if load else set()
    partials: list[str] = []
    images: dict[str, dict[str, Image]] = {}
    apt: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    owners: dict[str, dict[str, list[str]]] = {}
    recorded: dict[str, dict[str, list[str]]] = {}

    # BuildKit builds every platform's system stages, one after another, while the host
    # installs and writes the conda layers.
    builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="system")
    try:
        systems = {
            p: builds.submit(_system_stages, pair, p, store, echo, no_cache) for p in pair.platforms
        }
        for platform in pair.platforms:
            begun = time.monotonic()
            loader = _Loader(store, platform, held)
            try:
                assembled = _assemble(
                    pair, lock, platform, systems[platform], cache, store, loader, load, recorded
                )
            finally:
                loader.finish()
                partials += loader.partials
            stats.layers_sent += loader.layers
            stats.bytes_sent += loader.bytes
            stats.packages_installed += assembled.installed
            system, built, system_s = systems[platform].result()
            stats.system_built |= built
            images[platform] = {role: assembled.image(role) for role in ROLES}
            owners[platform] = assembled.owners
            apt[platform] = {"worker": system.worker.apt, "notebook": system.notebook.apt}
            # What ran where: another platform's system steps run under emulation (qemu);
            # its conda layers are laid out on this host like this platform's.
            emulated = ", emulated" if platform != host_platform().subdir else ""
            logger.info(
                f"timing {platform}: system stages {system_s:.1f} s (BuildKit{emulated}"
                f"{'' if built else ', kept'}), conda layers "
                f"{time.monotonic() - begun:.1f} s (host)",
            )
    except BaseException:
        _remove_partials(partials)  # they hold layers that no tagged image will
        raise
    finally:
        # A failed platform stops the system stages not begun yet (and waits for the one
        # under way, which its time limit bounds).
        builds.shutdown(wait=True, cancel_futures=True)
    built_pair = BuiltPair(pair.content_tag, images, apt)
    if load:
        write_atomic(Path(pair.directory) / IMAGES_FILE, built_pair.to_json())
        write_atomic(Path(pair.directory) / FILES_FILE, json.dumps(owners, sort_keys=True))
        try:
            layers, sent = load_pair(pair, built_pair, store, frozenset(held))
        finally:
            _remove_partials(partials)
        stats.layers_sent += layers
        stats.bytes_sent += sent
    stats.count(images, store, started)
    if load:
        write_atomic(Path(pair.directory) / STATS_FILE, json.dumps(asdict(stats), indent=1) + "\n")
    stats.log()
    return built_pair


def _remove_partials(image_ids: list[str]) -> None:
    """Remove the images that carried parts of the chains in: the tagged images hold
    their layers now. One that cannot be removed is left, with a warning."""
    if image_ids:
        try:
            docker("rmi", "--no-prune", *image_ids)
        except BuildToolError as exc:
            logger.warning("left partial images %s in the engine: %s", " ".join(image_ids), exc)


def load_pair(
    pair: RenderedPair, built: BuiltPair, store: BlobStore, held: frozenset[str] | None = None
) -> tuple[int, int]:
    """Load every image into the engine, under its content tag and today's date tag,
    sending only the layers it does not hold already (`held`: the chains it holds, if
    known); nothing when it has every image under its tags. Returns the layers and bytes
    of layers sent."""
    tagged: dict[str, Image] = {}
    for platform, roles in built.images.items():
        for role, image in roles.items():
            tag = built.local_tag(pair, role, platform)
            tagged[tag] = image
            if platform == host_platform().subdir:
                tagged[f"{pair.image(role).repository}:{date_tag()}"] = image
    there = local_tags()
    if all(there.get(tag) == image.image_id for tag, image in tagged.items()):
        logger.info("the engine has every image under its tags already")
        return 0, 0
    held = held_layer_chains() if held is None else held
    try:
        layers, sent = docker_load(docker_cli(), list(tagged.items()), store, held)
    except RuntimeError as exc:
        if not held:
            raise BuildToolError(str(exc)) from None
        # An image removed between the inspect and the load took chains with it.
        logger.info("the engine lost a layer it held (%s): loading them all", exc)
        try:
            layers, sent = docker_load(docker_cli(), list(tagged.items()), store)
        except RuntimeError as again:
            raise BuildToolError(str(again)) from None
    for tag, image in tagged.items():
        logger.info(f"loaded {tag} ({image.image_id[:19]}, {len(image.layers)} layers)")
    return layers, sent
