"""The parent of an extension pair, as data: both images as the registry holds them, the
lock they were built from and what owns each file of their prefix.

`buildtool.publish.parent` reads it from the registry; locking an extension
(`solve.lock_extension`) holds every record of its lock fixed, and publishing one
(`buildtool.publish.extend`) mounts its layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buildtool.lock.lockfile import LockFile
from compat.vocabulary import ENVIRONMENT_LABEL, of_role


@dataclass(frozen=True)
class ParentImage:
    """One image of the parent pair: its top digest, and per platform its manifest and
    config as the registry holds them."""

    repository: str  # host/name
    digest: str  # what users pull: the index's with several platforms
    manifests: dict[str, dict[str, Any]]  # platform -> OCI manifest
    configs: dict[str, dict[str, Any]]  # platform -> image config

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def name(self) -> str:
        return self.repository.partition("/")[2]


@dataclass(frozen=True)
class Parent:
    """A published pair read from the registry: both images, the lock, the file owners."""

    worker: ParentImage
    notebook: ParentImage
    lock: LockFile
    lock_text: str
    owners: dict[str, dict[str, str]]  # platform -> prefix-relative path -> owner

    def image(self, role: str) -> ParentImage:
        return of_role(self, role)

    @property
    def environment(self) -> str:
        config = next(iter(self.notebook.configs.values()))
        return str(config.get("config", {}).get("Labels", {}).get(ENVIRONMENT_LABEL, "?"))
