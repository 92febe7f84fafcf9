"""Which conda packages share an image layer: a stable plan, so a change moves few bytes.

Each image gets a fixed number of layer slots (`Budget`), `EXTENSION_RESERVE` of the
`MAX_LAYERS` being left for an extension pair's packages. Within them:

- **own layers**: packages of at least `LARGE` installed bytes get a layer each, the
  largest first, up to half the slots; a new numpy is then one layer, not the environment;
- **groups**: every other package lands in one of a fixed number of groups, chosen by a
  hash of its *name*. Versions, sizes and the other packages do not move a package
  between groups, so bumping, adding or removing one changes only its own group's layer.

A package's files and its `conda-meta` record always travel together. Layers are ordered
own layers first (by name), then groups (by number): the plan depends on nothing but the
package names and sizes, so the same lock always gives the same plan.

Own code rather than a library: the layering tools that exist (nixpkgs' buildLayeredImage,
chunkah, rpmoci) are not Python and do not know conda packages or a notebook image that
must be its worker image plus layers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from buildtool.common import BuildToolError

# The most layers an image may have, its base included (GKE image streaming, and what
# most runtimes handle without slowing down: nixpkgs stops near 100, chunkah at 64).
MAX_LAYERS = 64
# Installed bytes from which a package gets a layer of its own.
LARGE = 8 * 1024 * 1024
# The share of the conda layers that the notebook's own packages get (the rest: worker).
NOTEBOOK_SHARE = 1 / 3
# Layers a site pair leaves free for an extension pair (a user's packages on top of it,
# `buildtool/publish/extend.py`): its own layers and groups, and its pip wheels.
EXTENSION_RESERVE = 4


@dataclass(frozen=True)
class Package:
    """One installed package as the planner sees it."""

    name: str
    size: int  # installed bytes


@dataclass(frozen=True)
class PlannedLayer:
    """A planned layer: a key for `docker history` and the packages it holds."""

    key: str  # "numpy" for an own layer, "group-03" for a group
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Budget:
    """Layer slots for each image's conda packages, after the layers that come before."""

    worker: int
    notebook: int

    @classmethod
    def after(cls, fixed_layers: int) -> Budget:
        """Split what `MAX_LAYERS` leaves after the base and system layers of both images
        and the extension reserve."""
        free = MAX_LAYERS - EXTENSION_RESERVE - fixed_layers
        if free < 4:
            raise BuildToolError(
                f"the base image and system stages have {fixed_layers} layers, which leaves "
                f"{max(free, 0)} of the {MAX_LAYERS} an image may have for the conda packages "
                f"({EXTENSION_RESERVE} more are kept for extension pairs; at least 4 are "
                "needed): use a base image with fewer layers"
            )
        notebook = max(2, int(free * NOTEBOOK_SHARE))
        return cls(worker=free - notebook, notebook=notebook)


def group_of(name: str, groups: int) -> int:
    """A package's group: a hash of its name, so nothing else can move it."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % groups


def plan_layers(packages: list[Package], slots: int) -> list[PlannedLayer]:
    """Spread `packages` over at most `slots` layers (empty groups are left out)."""
    if slots < 2:
        raise BuildToolError(f"a layer plan needs at least two slots, not {slots}")
    groups = slots // 2
    large = sorted((p for p in packages if p.size >= LARGE), key=lambda p: (-p.size, p.name))
    own = sorted(p.name for p in large[: slots - groups])
    members: dict[int, list[str]] = {}
    for package in packages:
        if package.name not in own:
            members.setdefault(group_of(package.name, groups), []).append(package.name)
    layers = [PlannedLayer(name, (name,)) for name in own]
    layers += [
        PlannedLayer(f"group-{index:02d}", tuple(sorted(members[index])))
        for index in sorted(members)
    ]
    return layers
