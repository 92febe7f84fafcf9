"""The image stage: a locked environment becomes its matched pair of images, built
reproducibly, layered by package, loaded into a Docker engine and tested. It hands the
publish stage `build/<env>/images.json` (every image's config and layers) and the layer
store, from which a push sends only what a registry lacks.

  render.py         the pair's build inputs from the lock: the system Dockerfile of each
                    platform (from dockerfiles/), tags, references (`render.json`)
  system.py         the system stages (base image, Debian packages, the jovyan user) with
                    BuildKit, kept by the key of their inputs
  pkgcache.py       the package cache: each conda package under its lock's sha256
  dists.py          the Python distributions a package installs, by its own metadata
  assemble.py       the locked packages installed with py-rattler and written as layers
  layers.py         which packages share a layer: a stable plan within 64 layers
  oci.py            reproducible layer tars, blobs, configs, manifests; `docker load`
  estargz.py        layers as eStargz: lazily pullable, still plain gzip tar to others
  prefetch.py       what a pair's start reads, recorded once, to go first in its layers
  engine.py         the one Docker client, every command with a time limit; whether an
                    engine answers
  build.py          all of it, for each platform, overlapped; `build/<env>/images.json`
  versionchecks.py  the scheduler guard and client check every pair carries
  testing.py        the image tests (suite/, pytest + testinfra) on a built or a
                    published pair
  sandbox.py        where the image tests run the user's code: a network of the build's
                    own, bounded unprivileged containers, all removed when it ends
"""

from buildtool.image.assemble import (
    Installed,
    check_layers,
    check_owned,
    install_locked,
    locked_records,
    package_layers,
    pip_layer,
    read_installed,
)
from buildtool.image.build import (
    FILES_FILE,
    STATS_FILE,
    BuildStats,
    BuiltPair,
    build_pair,
    date_tag,
    package_cache,
    store_for,
)
from buildtool.image.dists import Distribution, distributions, full_client_text
from buildtool.image.engine import docker, docker_cli, engine_available, run_logged
from buildtool.image.estargz import (
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    TOC_DIGEST_ANNOTATION,
    TOC_NAME,
    UNCOMPRESSED_SIZE_ANNOTATION,
)
from buildtool.image.layers import (
    EXTENSION_RESERVE,
    LARGE,
    MAX_LAYERS,
    Budget,
    Package,
    plan_layers,
)
from buildtool.image.oci import (
    EXTENSION_GZIP_LEVEL,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    BlobStore,
    Entry,
    Image,
    Layer,
    canonical_json,
    docker_load,
    file_entry,
    index,
    sha256_digest,
)
from buildtool.image.pkgcache import MARKER, VIEWS, Facts, entry_problem, view
from buildtool.image.pkgcache import prune as prune_package_cache
from buildtool.image.render import BASE_APT, RenderedPair, dockerfile_string, render
from buildtool.image.sandbox import BUILD_ID_ENV, Sandbox, sandbox
from buildtool.image.sandbox import remove as remove_sandbox
from buildtool.image.sandbox import sweep as sweep_sandboxes
from buildtool.image.testing import test, test_extension, test_pair
from buildtool.image.versionchecks import (
    CLIENT_ENV,
    GUARD_ENV,
    SCHEDULER_PRELOAD,
    SCHEDULER_PRELOAD_ARGS,
)
from buildtool.image.versionchecks import OFF as CHECKS_OFF

__all__ = [
    "NO_PREFETCH_LANDMARK",
    "PREFETCH_LANDMARK",
    "TOC_DIGEST_ANNOTATION",
    "TOC_NAME",
    "UNCOMPRESSED_SIZE_ANNOTATION",
    "Distribution",
    "distributions",
    "full_client_text",
    "BASE_APT",
    "BUILD_ID_ENV",
    "CHECKS_OFF",
    "CLIENT_ENV",
    "EXTENSION_GZIP_LEVEL",
    "EXTENSION_RESERVE",
    "FILES_FILE",
    "GUARD_ENV",
    "LARGE",
    "MARKER",
    "MAX_LAYERS",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "SCHEDULER_PRELOAD",
    "SCHEDULER_PRELOAD_ARGS",
    "STATS_FILE",
    "VIEWS",
    "Blob",
    "BlobStore",
    "Budget",
    "BuildStats",
    "BuiltPair",
    "Entry",
    "Facts",
    "Image",
    "Installed",
    "Layer",
    "Package",
    "RenderedPair",
    "Sandbox",
    "build_pair",
    "canonical_json",
    "check_layers",
    "check_owned",
    "date_tag",
    "docker",
    "docker_cli",
    "docker_load",
    "dockerfile_string",
    "engine_available",
    "entry_problem",
    "file_entry",
    "index",
    "install_locked",
    "locked_records",
    "package_cache",
    "package_layers",
    "pip_layer",
    "plan_layers",
    "prune_package_cache",
    "read_installed",
    "remove_sandbox",
    "render",
    "run_logged",
    "sandbox",
    "sha256_digest",
    "store_for",
    "sweep_sandboxes",
    "test",
    "test_extension",
    "test_pair",
    "view",
]
