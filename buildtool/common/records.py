"""The record of a publish: `build/<env>/published.json`, written by `publish` and read by
`docs` and `helm-values`. One model for both sides, so the file has one schema."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from buildtool.common.errors import BuildToolError
from buildtool.common.models import StrictModel
from compat.vocabulary import ROLES, of_role

PUBLISHED_FILE = "published.json"
PUBLISHED_LOCK_FILE = "published-lock.yml"
# What was pushed, layer by layer (a copy of the build's images.json), for `verify`.
PUBLISHED_IMAGES_FILE = "published-images.json"
# The SBOM of each published image and platform: sbom/<role>-<platform>.cdx.json.
SBOM_DIR = "sbom"


class PublishedImage(StrictModel):
    repository: str
    digest: str  # the manifest's, or with several platforms the index's
    tags: list[str]
    ref: str
    platforms: dict[str, str] = {}  # platform -> that platform's manifest digest

    @classmethod
    def at(
        cls, repository: str, digest: str, tags: list[str], platforms: dict[str, str] | None = None
    ) -> PublishedImage:
        return cls(
            repository=repository,
            digest=digest,
            tags=tags,
            ref=f"{repository}@{digest}",
            platforms=platforms or {},
        )


class PublishedImages(StrictModel):
    worker: PublishedImage
    notebook: PublishedImage

    def image(self, role: str) -> PublishedImage:
        return of_role(self, role)

    def platform_refs(self) -> dict[str, dict[str, str]]:
        """platform -> role -> that platform's image by its manifest digest."""
        return {
            platform: {
                str(role): f"{self.image(role).repository}@{self.image(role).platforms[platform]}"
                for role in ROLES
            }
            for platform in self.worker.platforms
        }


class Published(StrictModel):
    """`build/<env>/published.json`."""

    environment: str
    registry: str
    content_tag: str
    date_tag: str
    lock_sha256: str
    images: PublishedImages
    bytes_pushed: int
    published_at: str
    # An extension pair's (`extend.py`): its parent's notebook image by digest, the
    # packages it adds, and the bytes of archives and wheels it fetched.
    parent: str | None = None
    parent_environment: str | None = None
    added: list[str] = []
    bytes_fetched: int | None = None
    imports: list[str] = []  # what its image tests import
    # Seconds of a site pair's publish: build, image_tests (when they ran), push
    # (compressing, uploading, attaching, tagging) and total.
    timings: dict[str, float] = {}
    # Whether the image tests passed before the tags (`--image-tests`); written only when
    # they did not run (`to_json` leaves the defaults out).
    image_tested: bool = True

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_defaults=True) + "\n"


def published_extensions(build_dir: Path) -> list[Published]:
    """The publish records of extension pairs (those with a parent) in `build_dir`."""
    records = [
        read_published(build_dir, p.parent.name) for p in build_dir.glob(f"*/{PUBLISHED_FILE}")
    ]
    return sorted(
        (r for r in records if r and r.parent), key=lambda r: r.images.notebook.repository
    )


def read_published(build_dir: Path, name: str) -> Published | None:
    """What was last published for environment `name`, or None if it never was."""
    path = build_dir / name / PUBLISHED_FILE
    if not path.exists():
        return None
    try:
        published = Published.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise BuildToolError(f"{path}: {key}: {first['msg']}") from None
    if published.environment != name:
        raise BuildToolError(f"{path}: environment is {published.environment!r}, not {name!r}")
    for image in (published.images.notebook, published.images.worker):
        if image.ref != f"{image.repository}@{image.digest}":
            raise BuildToolError(f"{path}: ref {image.ref!r} is not repository@digest")
    return published
