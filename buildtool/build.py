"""Build the rendered pair, for each of its platforms, and load it into the Docker engine.

For each platform: the system stages with BuildKit (`system.py`), then the conda layers
(`assemble.py`), into the layer store under `build/.store`. `build/<env>/images.json`
records every image (config and layers), which `test`, `publish` and `verify` read.

The engine gets the images under the content tag and the date tag (YYYYMMDD); images of
another platform than the engine's are loaded under tags ending in the platform's name
(`c-0123abcd4567-linux-aarch64`), so the image tests can run them under emulation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from buildtool.assemble import AssembledPair, assemble
from buildtool.cache import cache_root
from buildtool.engine import docker_cli, held_layer_chains
from buildtool.errors import BuildToolError
from buildtool.files import write_atomic
from buildtool.lockfile import read_lock
from buildtool.oci import BlobStore, Image, Layer, docker_load
from buildtool.render import RenderedPair
from buildtool.system import build_system
from buildtool.wheels import locked_wheels
from compat.vocabulary import ROLES, host_platform

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.json"
# What owns each file of the prefix, per platform (`AssembledPair.owners`); `publish`
# attaches it to the images with their lock.
FILES_FILE = "files.json"


def date_tag() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")


def package_cache() -> Path:
    """py-rattler's package cache, shared by every build and environment."""
    return cache_root() / "rattler" / "pkgs"


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
    builds the system stages without BuildKit's cache; without `load` nothing is
    recorded or loaded (what `verify` wants)."""
    lock = read_lock(pair.lock_path)
    store = store or store_for(pair)
    images: dict[str, dict[str, Image]] = {}
    apt: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    owners: dict[str, dict[str, list[str]]] = {}
    for platform in pair.platforms:
        started = time.monotonic()
        system = build_system(
            pair.system_dockerfile(platform),
            pair.base_images[platform],
            platform,
            f"buildtool-system/{pair.environment}:{platform}",
            store,
            echo,
            no_cache=no_cache,
        )
        system_s = time.monotonic() - started
        logger.info(f"assembling the conda layers ({platform})")
        # The staging prefix goes once its layers are in the store.
        with tempfile.TemporaryDirectory(prefix=f"stage-{platform}-", dir=store.root) as stage:
            assembled: AssembledPair = assemble(
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
                system,
                Path(stage) / "prefix",
                cache or package_cache(),
                store,
            )
        images[platform] = {role: assembled.image(role) for role in ROLES}
        owners[platform] = assembled.owners
        apt[platform] = {"worker": system.worker.apt, "notebook": system.notebook.apt}
        # What ran where: another platform's system steps run under emulation (qemu);
        # its conda layers are laid out on this host like this platform's.
        emulated = ", emulated" if platform != host_platform().subdir else ""
        logger.info(
            f"timing {platform}: system stages {system_s:.1f} s (BuildKit{emulated}), "
            f"conda layers {time.monotonic() - started - system_s:.1f} s (host)",
        )
    built = BuiltPair(pair.content_tag, images, apt)
    if load:
        write_atomic(Path(pair.directory) / IMAGES_FILE, built.to_json())
        write_atomic(Path(pair.directory) / FILES_FILE, json.dumps(owners, sort_keys=True))
        load_pair(pair, built, store)
    return built


def load_pair(pair: RenderedPair, built: BuiltPair, store: BlobStore) -> int:
    """Load every image into the engine, under its content tag and today's date tag,
    sending only the layers it does not hold already. Returns the layer bytes sent."""
    tagged: dict[str, Image] = {}
    for platform, roles in built.images.items():
        for role, image in roles.items():
            tag = built.local_tag(pair, role, platform)
            tagged[tag] = image
            if platform == host_platform().subdir:
                tagged[f"{pair.image(role).repository}:{date_tag()}"] = image
    held = held_layer_chains()
    try:
        sent = docker_load(docker_cli(), tagged, store, held)
    except RuntimeError as exc:
        if not held:
            raise BuildToolError(str(exc)) from None
        # An image removed between the inspect and the load took chains with it.
        logger.info("the engine lost a layer it held (%s): loading them all", exc)
        try:
            sent = docker_load(docker_cli(), tagged, store)
        except RuntimeError as again:
            raise BuildToolError(str(again)) from None
    for tag, image in tagged.items():
        logger.info(f"loaded {tag} ({image.image_id[:19]}, {len(image.layers)} layers)")
    layers = {layer.diff_id: layer.size for image in tagged.values() for layer in image.layers}
    logger.info(
        "sent the engine %.1f MB of layers; it held %.1f MB of them already",
        sent / 1e6,
        (sum(layers.values()) - sent) / 1e6,
    )
    return sent
