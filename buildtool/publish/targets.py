"""Publishing what a folder holds, whichever it is: a site environment is rendered, built,
tested and pushed (`sitepair.py`); a user's extension is built on its parent without a
Docker engine and pushed (`extend.py`). And the parent an extension is locked on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from buildtool.common import DiskBudget, Published
from buildtool.image import build_pair, render, test_extension, test_pair
from buildtool.lock import Parent, read_lock
from buildtool.publish.extend import DEFAULT_BUDGET, publish_extension
from buildtool.publish.parent import read_parent, resolve_from
from buildtool.publish.sitepair import publish as publish_site_pair
from buildtool.spec import Environment, Extension, Target


@dataclass(frozen=True)
class Options:
    """How to publish: where to, from which build folder, with which base images, and
    whether the pair's image tests run before its tags (they need a Docker engine)."""

    registry: str  # host[:port]/namespace
    build_dir: Path
    base_images: dict[str, str] = field(default_factory=dict)  # platform -> reference
    image_tests: bool = True
    verbose: bool = False
    # An extension's additions: what they may write, uncompressed (None: the default).
    max_installed_mb: float | None = None


def publish(target: Target, options: Options) -> Published:
    """Publish `target` into `options.registry`; the record of what was published."""
    if isinstance(target, Environment):
        pair = render(
            target,
            read_lock(target.lock_path),
            options.build_dir,
            registry=options.registry,
            base_images=options.base_images,
        )
        return publish_site_pair(
            pair,
            options.registry,
            build=lambda: build_pair(pair, echo=options.verbose),
            test=(lambda: test_pair(target.root, options.build_dir, target.name))
            if options.image_tests
            else None,
        )
    ext = target

    def tested(refs: dict[str, dict[str, str]], worker: str, imports: list[str]) -> None:
        test_extension(ext, options.build_dir, refs, worker, imports)

    budget = (
        DiskBudget(int(options.max_installed_mb * 1e6))
        if options.max_installed_mb is not None
        else DEFAULT_BUDGET
    )
    return publish_extension(
        ext,
        options.registry,
        options.build_dir,
        test=tested if options.image_tests else None,
        budget=budget,
    )


def parent_reader(build_dir: Path) -> ParentReader:
    """What `lock` reads an extension's parent with (`buildtool.lock.solve.lock`)."""
    return ParentReader(build_dir)


@dataclass(frozen=True)
class ParentReader:
    """Reads an extension's parent from the registry. A parent named by environment is
    the site's own publish (its record in `build_dir`), in the site's configured registry;
    a parent named by reference in the spec gets the credentials of REGISTRY alone."""

    build_dir: Path

    def __call__(self, ext: Extension) -> Parent:
        reference = resolve_from(ext.parent, self.build_dir)
        configured = None if "/" in ext.parent else reference.partition("/")[0]
        return read_parent(reference, configured)
