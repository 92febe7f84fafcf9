"""The local stand-ins for what production reaches over the network.

conda-forge and Docker Hub cannot be reached from the machines this project is built and
tested on. `python -m devsupport.standin up` (`make standin`) makes their nearest real
equivalents, which the main job (`make demo`), the tests and the benchmarks all use:

  channel.py    a conda channel of real, runnable packages with conda-forge's layout
  server.py     that channel served over HTTP on 127.0.0.1, as conda-forge is served
  baseimage.py  Debian bookworm runtime images (amd64 and arm64) and a builder image,
                made with debootstrap

The rest (condapkg, condaenv, pythonpkg, debianpython, wheelconv) is what they are
built with; condaenv also installs environments from the channel for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StandIn:
    channel: str  # http://127.0.0.1:PORT/conda-forge
    base_image: str  # linux-64
    base_image_aarch64: str
    builder_image: str  # for the benchmarks' baselines

    @property
    def image_flags(self) -> list[str]:
        """`--base-image` for every platform, as `buildtool build` takes them."""
        return ["--base-image", self.base_image,
                "--base-image", f"linux-aarch64={self.base_image_aarch64}"]  # fmt: skip

    def env_lines(self) -> str:
        """Shell assignments, for `make` to source."""
        return (
            f"STANDIN_CHANNEL={self.channel}\n"
            f"STANDIN_BASE_IMAGE={self.base_image}\n"
            f"STANDIN_BASE_IMAGE_AARCH64={self.base_image_aarch64}\n"
            f"STANDIN_BUILDER_IMAGE={self.builder_image}\n"
        )


def up() -> StandIn:
    """Build (or reuse) the channel and the base images, and serve the channel."""
    from devsupport.standin.baseimage import ensure_base_image
    from devsupport.standin.channel import build_channel
    from devsupport.standin.server import ensure_server

    channel = build_channel()
    return StandIn(
        channel=ensure_server(channel.parent),
        base_image=ensure_base_image("runtime"),
        base_image_aarch64=ensure_base_image("runtime-arm64"),
        builder_image=ensure_base_image("builder"),
    )
