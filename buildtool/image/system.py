"""The system part of a pair: base image, Debian packages, the jovyan user, image config.

BuildKit builds the two stages of the rendered `system.Dockerfile` (`worker`, and
`notebook` on top of it), unless the store has them under the key of their inputs (the
Dockerfile, which holds nothing of the lock, and the base image's id): a new lock does
not build them again. `docker save` hands over their layers:

- the base image's layers are rewritten as eStargz (`estargz.py`), file for file: the
  same members, sorted, their times clamped to the base's creation time. A lazily
  pulling node mounts a layer remotely only while every layer under it is eStargz too
  (containerd fetches every layer from the first it must fetch whole), so the base's
  cannot stay gzip layers if the pair's are to start lazily;
- each layer the Dockerfile adds is rewritten reproducibly: members sorted, times
  clamped to the base image's creation time, owner names cleared, and what apt and
  the logs leave behind dropped (lists, archives, logs, ldconfig's inode cache).

The image config (user, environment, entrypoint, command, labels) is the stage's own, cut
to the fields the OCI image spec defines. The Debian packages the images end up with are
read from dpkg's status file in the layers and recorded, so the publish record and the
SBOM can name them. A normalized stage is kept in the store under the ids of the images
BuildKit made, so an unchanged stage (BuildKit's cache hit) is not rewritten again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from buildtool.common import BuildToolError, extract_tar
from buildtool.image.engine import docker, docker_cli, run_logged
from buildtool.image.oci import BlobStore, Layer
from compat.vocabulary import PLATFORMS, ROLES

logger = logging.getLogger(__name__)

# Paths a layer must not keep: apt's lists and archives, logs, temporary files, and
# ldconfig's cache of inode numbers and times.
DROPPED_UNDER = ("var/lib/apt/lists/", "var/cache/apt/", "var/log/", "tmp/", "root/.cache/")
DROPPED = frozenset({"var/cache/ldconfig/aux-cache"})
# The fields of an image config that the OCI image spec defines.
CONFIG_FIELDS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
)
DPKG_STATUS = "var/lib/dpkg/status"
# Part of the key of a normalized stage: bumped when normalizing changes (n5: eStargz,
# the base's layers too).
NORMALIZATION = "n5"
# Time limit, in seconds, of `docker save` of both stages (their layers, gigabytes for
# large images, over the engine's socket).
SAVE_TIMEOUT = 30 * 60


def dropped(path: str) -> bool:
    return path in DROPPED or path.startswith(DROPPED_UNDER)


@dataclass(frozen=True)
class SystemImage:
    config: dict[str, Any]  # {"config": {...}}: the OCI config without rootfs and history
    layers: tuple[Layer, ...]  # the base's, then the stage's
    apt: dict[str, dict[str, str]]  # Debian package -> {"version", "arch"} as installed


@dataclass(frozen=True)
class SystemPair:
    platform: str
    worker: SystemImage
    notebook: SystemImage  # its layers begin with the worker's

    @property
    def notebook_extra(self) -> tuple[Layer, ...]:
        """The layers the notebook stage adds to the worker's."""
        return self.notebook.layers[len(self.worker.layers) :]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SystemPair:
        data = json.loads(text)

        def image(value: dict[str, Any]) -> SystemImage:
            layers = tuple(Layer(**layer) for layer in value["layers"])
            return SystemImage(value["config"], layers, value["apt"])

        return cls(data["platform"], image(data["worker"]), image(data["notebook"]))


def build_system(
    dockerfile: Path,
    base_image: str,
    platform: str,
    tag: str,
    store: BlobStore,
    echo: bool,
    no_cache: bool = False,
) -> tuple[SystemPair, bool]:
    """Both stages' reproducible layers, and whether BuildKit ran: not when the store has
    them under their inputs' key (unless `no_cache`)."""
    key = None if no_cache else _input_key(dockerfile, base_image, platform)
    by_inputs = store.root / "system" / f"in-{key}.json"
    if key and by_inputs.exists():
        kept = SystemPair.from_json(by_inputs.read_text())
        if all(store.layer_path(layer.diff_id).exists() for layer in kept.notebook.layers):
            return kept, False
    context = dockerfile.parent
    for role in ROLES:
        command = [
            # Host networking: an apt mirror or proxy on the build host's 127.0.0.1.
            docker_cli(),
            "build",
            "--progress=plain",
            "--network=host",
            "--platform",
            PLATFORMS[platform].oci,
            "--target",
            role,
            "-f",
            str(dockerfile),
            "-t",
            f"{tag}-{role}",
            str(context),
            *(["--no-cache"] if no_cache else []),
        ]
        log = context / f"system-{role}-build.log"
        logger.info(f"building the {role} system stage ({platform}), its output in {log}")
        run_logged(command, log, echo)
    # What BuildKit made, by its images' ids: a cache hit of its own is not normalized again.
    ids = [_inspect(f"{tag}-{role}")["Id"] for role in ROLES]
    record = (
        store.root
        / "system"
        / ("-".join([NORMALIZATION, *(i.removeprefix("sha256:")[:24] for i in ids)]) + ".json")
    )
    if record.exists():
        pair = SystemPair.from_json(record.read_text())
    else:
        pair = _normalize(base_image, platform, tag, store)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(pair.to_json())
    if key:
        by_inputs.write_text(pair.to_json())
    return pair, True


def _input_key(dockerfile: Path, base_image: str, platform: str) -> str | None:
    """What the stages are made from: the rendered Dockerfile (which copies nothing from
    its folder and holds nothing of the lock), the base image by its id, the platform and
    how layers are normalized. None if the engine does not have the base image yet."""
    try:
        base = _inspect(base_image)["Id"]
    except BuildToolError:
        return None
    inputs = [NORMALIZATION, platform, base, dockerfile.read_text()]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def _inspect(ref: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", ref))[0]


def _epoch(created: str) -> int:
    """Seconds since the epoch of an RFC 3339 time as Docker writes it."""
    whole = created.split(".")[0].rstrip("Z")
    return int(dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp())


def _normalize(base_image: str, platform: str, tag: str, store: BlobStore) -> SystemPair:
    base = _inspect(base_image)
    base_layers = len(base["RootFS"]["Layers"])
    clamp = _epoch(base["Created"])
    with tempfile.TemporaryDirectory(prefix="buildtool-system-", dir=store.root) as tmp:
        archive = Path(tmp) / "images.tar"
        with archive.open("wb") as out:
            out.write(docker("save", *(f"{tag}-{role}" for role in ROLES), timeout=SAVE_TIMEOUT))
        with tarfile.open(archive) as tar:
            extract_tar(tar, Path(tmp) / "x", archive=f"docker save of {tag}")
        root = Path(tmp) / "x"
        saved = {e["RepoTags"][0]: e for e in json.loads((root / "manifest.json").read_text())}
        images: dict[str, SystemImage] = {}
        below: tuple[Layer, ...] = ()  # the worker's layers, under the notebook's
        raw_below = 0  # how many of the stage's own layers those came from
        for role in ROLES:
            entry = saved[f"{tag}-{role}"]
            config = json.loads((root / entry["Config"]).read_text())
            diff_ids = config["rootfs"]["diff_ids"]
            steps = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
            layers = list(below)
            for position in range(raw_below, len(diff_ids)):
                source = root / entry["Layers"][position]
                step = steps[position] if position < len(steps) else ""
                of_base = position < base_layers  # a base layer is kept file for file
                layer = store.normalize_layer(
                    source,
                    clamp=clamp,
                    drop=(lambda path: False) if of_base else dropped,
                    created_by=f"{'base' if of_base else 'system'}: {step}",
                )
                if layer is not None:
                    layers.append(layer)
            kept = {
                key: config["config"][key] for key in CONFIG_FIELDS if config["config"].get(key)
            }
            images[role] = SystemImage(
                {"config": kept}, tuple(layers), _installed_debs(layers, store)
            )
            below, raw_below = tuple(layers), len(diff_ids)
    return SystemPair(platform, images["worker"], images["notebook"])


def _installed_debs(layers: list[Layer], store: BlobStore) -> dict[str, dict[str, str]]:
    """Package -> version and architecture, from dpkg's status file in the topmost layer
    that has it."""
    for layer in reversed(layers):
        with tarfile.open(store.layer_path(layer.diff_id)) as tar:
            member = next(
                (m for m in tar.getmembers() if m.name.removeprefix("./") == DPKG_STATUS), None
            )
            if member is None:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            text = handle.read().decode()
        installed = {}
        for stanza in text.split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in stanza.splitlines()
                if ": " in line and line[0] != " "
            )
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                installed[fields["Package"]] = {
                    "version": fields["Version"],
                    "arch": fields.get("Architecture", "all"),
                }
        return dict(sorted(installed.items()))
    raise BuildToolError(f"no {DPKG_STATUS} in the system layers: the base is not Debian")
