"""The project's vocabulary: roles, platforms and the install prefix, each defined once.

Both distributions use these names. They live here, in the checker's light distribution,
because daskhub-images depends on daskhub-compat and not the other way round.

* A **role** is what an image does in a pair: the Dask worker, or the Jupyter notebook
  (the Dask client), which is the worker image plus the notebook's own layers. Roles are
  listed in that order, the worker first, everywhere.
* A **platform** is one target of a pair, named by its conda subdir (``linux-64``). It
  carries what each tool calls the same machine: OCI's architecture and variant, Debian's
  architecture and the kernel's machine name (``uname -m``). Both command lines take
  either spelling, the subdir or the OCI name (``linux/amd64``), read by
  ``platform_named``.
* **PREFIX** is where the conda environment lives inside both images.
* The **label keys**: what an image's config (and an attached artifact's annotations)
  says of its pair, the OCI keys and this project's `io.daskhub.*` keys. The Dockerfile
  templates get them from `LABEL_KEYS`.
"""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol, TypeVar


class Role(str, Enum):
    """An image's role in a pair. Compares equal to its value (`Role.WORKER == "worker"`)."""

    WORKER = "worker"
    NOTEBOOK = "notebook"

    def __str__(self) -> str:  # f-strings give "worker", not "Role.WORKER"
        return self.value


#: The roles of a pair, in their one order: the worker first, the notebook built on it.
ROLES: tuple[Role, ...] = tuple(Role)

#: The conda-lock category of the packages each role adds to the roles before it: the
#: worker's are `main` (what conda-lock installs by default), the notebook's own `notebook`.
CATEGORY: dict[Role, str] = {Role.WORKER: "main", Role.NOTEBOOK: "notebook"}


def categories(role: str) -> frozenset[str]:
    """The lock categories an image of `role` installs: its own and its predecessors'."""
    upto = ROLES[: ROLES.index(Role(role)) + 1]
    return frozenset(CATEGORY[r] for r in upto)


#: Where the conda environment is installed in both images of every pair.
PREFIX = "/srv/conda/envs/notebook"

# -- label keys: what an image's config says of its pair ----------------------------------
#: The OCI keys an image's config carries: its repository's name and its description.
TITLE_LABEL = "org.opencontainers.image.title"
DESCRIPTION_LABEL = "org.opencontainers.image.description"
#: What a reproducible image never carries: its build time and its source revision.
CREATED_LABEL = "org.opencontainers.image.created"
REVISION_LABEL = "org.opencontainers.image.revision"
#: The environment a pair was built from, and which of the two an image is.
ENVIRONMENT_LABEL = "io.daskhub.environment"
ROLE_LABEL = "io.daskhub.role"
#: The lock an image was built from (its content sha256), on both images of a pair.
LOCK_LABEL = "io.daskhub.lock-sha256"
#: The notebook's matched worker image, which its clusters start by default.
WORKER_LABEL = "io.daskhub.worker-image"
#: An extension pair's images: the notebook image of the pair they extend.
PARENT_LABEL = "io.daskhub.parent"
#: An untagged image that carries part of a chain into the engine while a build runs.
PARTIAL_LABEL = "io.daskhub.partial"
#: Every container and network of a build's image tests: the build's id.
BUILD_LABEL = "io.daskhub.build"
#: An SBOM artifact's annotation: the platform whose image it describes.
PLATFORM_ANNOTATION = "io.daskhub.platform"
#: The keys the Dockerfile templates write (dockerfiles/_labels.j2), by what they hold.
LABEL_KEYS = {
    "title": TITLE_LABEL,
    "description": DESCRIPTION_LABEL,
    "environment": ENVIRONMENT_LABEL,
    "role": ROLE_LABEL,
}
#: The artifact attached to both images of a pair with its client's pins, one layer per
#: file named by its title (`buildtool.publish.attachments`, read by `compat preflight`).
CLIENT_ARTIFACT_TYPE = "application/vnd.daskhub.client.v1"
#: The variable that names, in the notebook image, the worker its clusters start.
IMAGE_OPTION_ENV = "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"

#: A platform's name, as a spec writes it (a conda subdir).
PlatformName = Literal["linux-64", "linux-aarch64"]


@dataclass(frozen=True)
class Platform:
    """One target platform, with the name each tool gives it."""

    subdir: PlatformName  # conda: linux-64
    oci_architecture: str  # OCI image config and index: amd64
    oci_variant: str | None  # OCI: v8 for arm64, else none
    debian_architecture: str  # dpkg --print-architecture: amd64
    machine: str  # uname -m: x86_64; also conda's __archspec and the wheel tags' arch

    @property
    def oci(self) -> str:
        """`linux/amd64`, `linux/arm64/v8`: the form `docker --platform` takes."""
        parts = ["linux", self.oci_architecture, self.oci_variant]
        return "/".join(part for part in parts if part)

    def __str__(self) -> str:
        return self.subdir


LINUX_64 = Platform("linux-64", "amd64", None, "amd64", "x86_64")
LINUX_AARCH64 = Platform("linux-aarch64", "arm64", "v8", "arm64", "aarch64")

#: Every platform a pair can be built for, by conda subdir, linux-64 first.
PLATFORMS: dict[str, Platform] = {p.subdir: p for p in (LINUX_64, LINUX_AARCH64)}


#: The valid platform names, both spellings, for an error message.
PLATFORM_NAMES = ", ".join(f"{p.subdir} ({p.oci})" for p in PLATFORMS.values())


def platform_named(text: str) -> Platform | None:
    """The platform `text` names in either spelling both tools accept: its conda subdir
    (`linux-64`, `linux-aarch64`) or its OCI name, with or without the variant
    (`linux/amd64`, `linux/arm64`, `linux/arm64/v8`); None for anything else."""
    for candidate in PLATFORMS.values():
        spellings = (candidate.subdir, candidate.oci, f"linux/{candidate.oci_architecture}")
        if text in spellings:
            return candidate
    return None


def host_platform() -> Platform:
    """This machine's platform (`uname -m`; macOS calls aarch64 arm64); linux-64 otherwise."""
    machine = {"arm64": "aarch64"}.get(_host.machine(), _host.machine())
    for candidate in PLATFORMS.values():
        if candidate.machine == machine:
            return candidate
    return LINUX_64


_T_co = TypeVar("_T_co", covariant=True)


class Pair(Protocol[_T_co]):
    """Anything that holds one value per role: a pair's specs, references or images."""

    @property
    def worker(self) -> _T_co: ...

    @property
    def notebook(self) -> _T_co: ...


def of_role(pair: Pair[_T_co], role: str) -> _T_co:
    """`pair`'s value for `role`; ValueError for a name that is not a role."""
    return pair.worker if Role(role) is Role.WORKER else pair.notebook
