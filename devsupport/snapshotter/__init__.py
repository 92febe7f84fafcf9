"""The stargz snapshotter daemon of the test node (devsupport/coldnode.py), built here.

main.go beside this file says why the project builds its own daemon. `binary()` builds it
once into the cache, `cache_root()/stargz-snapshotter/KEY/`, KEY a digest of main.go, of
`go version` and of the versions of Debian's library packages it is built from; a file
lock makes concurrent callers wait for one build. `python -m devsupport.snapshotter`
builds it and prints its path.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from buildtool.common import BuildToolError, cache_root, run
from devsupport.cache import digest, locked

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("main.go")
BINARY_NAME = "containerd-stargz-grpc"
# Debian's Go sources, in GOPATH layout (scripts/machine-setup.sh installs them).
GOPATH = "/usr/share/gocode"
# The sources it is built from: a new version of either is a new build.
LIBRARIES = (
    "golang-github-containerd-stargz-snapshotter-dev",
    "golang-github-containerd-containerd-dev",
)
# Time limits, in seconds. A cold build takes a few minutes on two cores.
BUILD_TIMEOUT = 30 * 60
QUERY_TIMEOUT = 60


def binary() -> Path:
    """The daemon's path, built first if this key has not been built yet."""
    go = shutil.which("go")
    if go is None:
        raise BuildToolError("go is missing (golang-go); run scripts/machine-setup.sh")
    folder = cache_root() / "stargz-snapshotter" / _key(go)
    target = folder / BINARY_NAME
    if target.is_file():
        return target
    with locked(folder.parent / "build.lock"):
        if not target.is_file():
            _build(go, folder)
    return target


def _key(go: str) -> str:
    version = run([go, "version"], capture_output=True, check=True, timeout=QUERY_TIMEOUT)
    packages = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *LIBRARIES],
        capture_output=True,
        timeout=QUERY_TIMEOUT,
    )
    if packages.returncode != 0:
        raise BuildToolError(
            f"the snapshotter's Go sources are missing ({', '.join(LIBRARIES)}); "
            "run scripts/machine-setup.sh"
        )
    return digest([SOURCE.read_bytes(), version.stdout, packages.stdout])


def _build(go: str, folder: Path) -> None:
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build_log = folder.parent / "build.log"
    log.info("building the stargz snapshotter daemon -> %s", folder)
    started = time.monotonic()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder.parent),
        # Debian's library sources are in GOPATH layout, without go.mod files.
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(folder.parent / "go-build"),
    }
    with build_log.open("w") as out:
        result = run(
            [go, "build", "-o", str(partial / BINARY_NAME), str(SOURCE)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=partial,
            timeout=BUILD_TIMEOUT,
        )
    if result.returncode != 0:
        tail = "\n".join(build_log.read_text().splitlines()[-30:])
        raise BuildToolError(f"building the snapshotter daemon failed (log {build_log}):\n{tail}")
    shutil.rmtree(folder, ignore_errors=True)  # a build whose binary went missing
    partial.rename(folder)
    log.info("built the stargz snapshotter daemon in %.0f s", time.monotonic() - started)
