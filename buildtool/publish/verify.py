"""`buildtool verify ENV`: rebuild a published pair from its lock and compare digests.

The rebuild starts from nothing that the publishing build left: a new package cache, a
new layer store, and BuildKit without its cache. It computes every image's manifest (and
index) digest as publish would, without pushing anything, and compares them with the
publish record. Where they differ it names the first layer that does, by what it holds,
so a user can tell a changed Debian package from a changed conda package.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from buildtool.common import PUBLISHED_IMAGES_FILE, BuildToolError, read_published
from buildtool.image import BlobStore, BuiltPair, Image, RenderedPair, build_pair, index
from compat.vocabulary import ROLES


@dataclass(frozen=True)
class Verdict:
    role: str
    published: str
    rebuilt: str
    differences: list[str]  # per platform: the first differing layer, or the config

    @property
    def same(self) -> bool:
        return self.published == self.rebuilt


def _digests(built: BuiltPair, store: BlobStore, role: str) -> tuple[str, dict[str, str]]:
    manifests = {}
    for platform, roles in built.images.items():
        image = roles[role]
        blobs = store.gzip_blobs([layer.diff_id for layer in image.layers])
        manifests[platform] = image.manifest(blobs)
    top = next(iter(manifests.values())) if len(manifests) == 1 else index(manifests)
    return top.digest, {p: m.digest for p, m in manifests.items()}


def _first_difference(old: Image, new: Image) -> str:
    for position, (a, b) in enumerate(zip(old.layers, new.layers, strict=False)):
        if a.diff_id != b.diff_id:
            return f"layer {position + 1} differs ({b.created_by[:120]})"
    if len(old.layers) != len(new.layers):
        return f"{len(old.layers)} layers published, {len(new.layers)} rebuilt"
    return "the image config differs"


def verify(pair: RenderedPair, echo: bool = False) -> list[Verdict]:
    build_dir = Path(pair.directory).parent
    published = read_published(build_dir, pair.environment)
    if published is None:
        raise BuildToolError(f"{pair.environment}: nothing published to verify against")
    if published.content_tag != pair.content_tag:
        raise BuildToolError(
            f"{pair.environment}: published as {published.content_tag}, but the spec, lock or "
            f"registry now render as {pair.content_tag}: verify the lock that was published"
        )
    record = Path(pair.directory) / PUBLISHED_IMAGES_FILE
    before = BuiltPair.load(pair, record) if record.exists() else None
    with tempfile.TemporaryDirectory(prefix="buildtool-verify-", dir=build_dir) as tmp:
        store = BlobStore(Path(tmp) / "store")
        rebuilt = build_pair(
            pair, echo=echo, cache=Path(tmp) / "pkgs", store=store, no_cache=True, load=False
        )
        verdicts = []
        for role in ROLES:
            digest, platforms = _digests(rebuilt, store, role)
            expected = published.images.image(role)
            differences = []
            for platform, image_digest in platforms.items():
                if expected.platforms.get(platform, expected.digest) == image_digest:
                    continue
                if before is not None and platform in before.images:
                    old = before.images[platform][role]
                    differences.append(
                        f"{platform}: " + _first_difference(old, rebuilt.images[platform][role])
                    )
                else:
                    differences.append(f"{platform}: differs")
            verdicts.append(Verdict(role, expected.digest, digest, differences))
    return verdicts
