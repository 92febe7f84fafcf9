"""The local stand-ins for what production reaches over the network.

conda-forge and Docker Hub cannot be reached from the machines this project is built and
tested on. `python -m devsupport.standin up` (`make standin`) makes their nearest real
equivalents, which the main job (`make demo`), the tests and the benchmarks all use:

  channel.py    a conda channel of real, runnable packages with conda-forge's layout
  server.py     that channel served over HTTP on 127.0.0.1, as conda-forge is served
  baseimage.py  Debian bookworm runtime images (amd64 and arm64) and a builder image,
                made with debootstrap, each only when asked for

The rest (condapkg, condaenv, pythonpkg, debianpython, wheelconv) is what they are
built with; condaenv also installs environments from the channel for the tests.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from buildtool.common import BuildToolError

DEFAULT_PLATFORMS = ("linux-64",)


@dataclass(frozen=True)
class StandIn:
    """The channel's URL and the base images that were made, and only those."""

    channel: str  # http://127.0.0.1:PORT/conda-forge
    base_images: dict[str, str] = field(hash=False)  # platform -> runtime image
    builder_image: str | None = None  # for the benchmarks' baselines, when asked for

    def base_image_for(self, platform: str) -> str:
        if platform not in self.base_images:
            raise BuildToolError(
                f"the stand-in was made without a {platform} base image "
                f"(made: {', '.join(self.base_images) or 'none'}); ask up() for it"
            )
        return self.base_images[platform]

    @property
    def base_image(self) -> str:
        """The linux-64 runtime image."""
        return self.base_image_for("linux-64")

    @property
    def base_image_aarch64(self) -> str:
        return self.base_image_for("linux-aarch64")

    @property
    def image_flags(self) -> list[str]:
        """`--base-image PLATFORM=REF` for each platform made, as `buildtool build` takes
        them (a platform not made keeps its spec's base image)."""
        return [
            flag
            for platform, image in self.base_images.items()
            for flag in ("--base-image", f"{platform}={image}")
        ]

    def env_lines(self) -> str:
        """Shell assignments, for `make` to source: only what was made."""
        lines = {"STANDIN_CHANNEL": self.channel}
        if "linux-64" in self.base_images:
            lines["STANDIN_BASE_IMAGE"] = self.base_images["linux-64"]
        if "linux-aarch64" in self.base_images:
            lines["STANDIN_BASE_IMAGE_AARCH64"] = self.base_images["linux-aarch64"]
        if self.builder_image is not None:
            lines["STANDIN_BUILDER_IMAGE"] = self.builder_image
        lines["STANDIN_IMAGE_FLAGS"] = " ".join(self.image_flags)
        return "".join(f"{name}={shlex.quote(value)}\n" for name, value in lines.items())


def up(platforms: Iterable[str] = DEFAULT_PLATFORMS, builder: bool = False) -> StandIn:
    """Build (or reuse) the channel and serve it; make (or reuse) the runtime base image of
    each of `platforms`, and the builder image if `builder`."""
    from devsupport.standin.baseimage import RUNTIME_KINDS, ensure_base_image
    from devsupport.standin.channel import build_channel
    from devsupport.standin.server import ensure_server

    wanted = list(dict.fromkeys(platforms))
    unknown = [p for p in wanted if p not in RUNTIME_KINDS]
    if unknown:
        raise BuildToolError(
            f"the stand-in has no base image for {unknown[0]}; choose from {sorted(RUNTIME_KINDS)}"
        )
    channel = build_channel()
    return StandIn(
        channel=ensure_server(channel.parent),
        base_images={p: ensure_base_image(RUNTIME_KINDS[p]) for p in wanted},
        builder_image=ensure_base_image("builder") if builder else None,
    )
