"""What a pair's start reads, recorded once per build, to go first in its eStargz layers.

A lazily pulled layer (`estargz.py`) is fetched file by file as a container reads it,
except the files before its prefetch landmark, which the node fetches in one request
before the container starts. So the files a start reads should be those.

The start is run once, here, and every file it opens is recorded:

- **the worker's**: a `dask scheduler`, a `dask worker` joining it (with its nanny, as
  the gateway starts one) and a client that runs a task on it. The scheduler starts from
  the worker image too (the gateway's scheduler pods run it), so what it reads counts as
  well;
- **the notebook's**: a Jupyter server, started until it answers.

The spec's `imports` are not part of either. A start is the same in every environment
that holds the same packages, so a package's layer gets the same prefetch list, and the
same bytes, in all of them, and a node holding one environment's pair fetches only what
another adds (`bench/coldstart.py` (e)). With the imports recorded too, pyhep's worker
shared 30 of physlite's 38 layers (477 MB of new layers, uncompressed), against 36 (21 MB)
without: an import reads different files of numpy, numba or llvmlite in each, which
moves their layers' bytes. The imports' files are fetched when the first task imports
them.

They run in a sandboxed container (`sandbox.py`: no network but its own loopback, no
capabilities, bounded) of the platform's base image, with the staged prefix mounted
read-only where the images have it; every Python process of it carries a hook
(`sitecustomize`) that notes each file it opens (the `open` audit event, which imports
raise too) and the shared libraries it maps. The lists are sorted by path, so the same
files give the same layers whatever order they were read in; they are kept in the layer
store by what they were made from, so a rebuild records nothing.

Only the engine's own platform is recorded (another's would run under emulation, ten
times slower); the others take its lists, and a path a layer lacks is left out of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from buildtool.common import BuildToolError
from buildtool.image.engine import docker
from buildtool.image.oci import BlobStore
from buildtool.image.sandbox import build_id, sandbox
from compat.vocabulary import PREFIX

logger = logging.getLogger(__name__)

#: Part of the store's key of a recording: bumped when what is recorded changes.
RECORDING = "r2"
#: Seconds one recording may take.
TIMEOUT = 600

# In every Python process of the recording: note each file opened, and what is mapped.
HOOK = """\
import atexit, os, sys, threading

_where = os.environ.get("DASKHUB_RECORD")
if _where:
    _seen = set()
    _log = open(os.path.join(_where, "opened-%d.txt" % os.getpid()), "a", buffering=1)

    def _note(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            if path not in _seen:
                _seen.add(path)
                _log.write(os.path.abspath(path) + "\\n")

    def _maps():
        try:
            with open("/proc/self/maps") as maps:
                fields = [line.split(None, 5) for line in maps]
            found = {f[5].strip() for f in fields if len(f) == 6}
            with open(os.path.join(_where, "maps-%d.txt" % os.getpid()), "w") as out:
                out.write("\\n".join(sorted(p for p in found if p.startswith("/"))))
        except OSError:
            pass

    def _keep_maps():
        import time
        while True:
            time.sleep(1)
            _maps()

    sys.addaudithook(_note)
    atexit.register(_maps)
    threading.Thread(target=_keep_maps, daemon=True).start()
"""

START = """\
set -e
export PATH={prefix}/bin:$PATH HOME=/tmp
cd /tmp
if [ "$ROLE" = worker ]; then
  dask scheduler --host 127.0.0.1 --port 8786 --dashboard-address 127.0.0.1:0 &
  dask worker tcp://127.0.0.1:8786 --nthreads 1 --dashboard-address 127.0.0.1:0 --name start &
  python -c "
from distributed import Client
with Client('tcp://127.0.0.1:8786', timeout=120) as client:
    client.wait_for_workers(1, timeout=120)
    assert client.submit(sum, [1, 2]).result() == 3
    client.shutdown()
"
elif command -v jupyter-lab >/dev/null; then
  jupyter-lab --no-browser --ip 127.0.0.1 --port 8888 --ServerApp.token= &
  server=$!
  python -c "
import time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen('http://127.0.0.1:8888/api', timeout=2).read()
        break
    except OSError:
        time.sleep(0.5)
"
  kill -TERM "$server"
fi
wait
"""


def recording_key(base_image: str, platform: str, packages: Sequence[str]) -> str:
    """What a recording is made from: the base image (by its id), the platform and the
    staged packages (name and sha256)."""
    image_id = docker("image", "inspect", "--format", "{{.Id}}", base_image).decode().strip()
    inputs = [RECORDING, image_id, platform, sorted(packages), HOOK, START]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def _read(folder: Path) -> list[str]:
    """The files under the prefix the processes opened or mapped, as layer paths."""
    found: set[str] = set()
    for path in folder.glob("*.txt"):
        found.update(line.strip() for line in path.read_text(errors="replace").splitlines())
    root = PREFIX.rstrip("/") + "/"
    return sorted(p.lstrip("/") for p in found if p.startswith(root) and ".." not in p)


def _run(base_image: str, prefix: Path, role: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="prefetch-") as folder:
        work = Path(folder)
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(HOOK)
        (work / "start.sh").write_text(START.format(prefix=PREFIX))
        opened = work / "opened"
        opened.mkdir()
        # The container's user (jovyan) reads the scripts and writes what it opened.
        for path in (work, work / "hook"):
            os.chmod(path, 0o755)
        os.chmod(opened, 0o777)
        with sandbox(build_id()) as box:
            docker(
                "run",
                "--rm",
                *box.run_args(),
                "--network",
                "none",
                "--volume",
                f"{prefix}:{PREFIX}:ro",
                "--volume",
                f"{work}:/record",
                "--env",
                "PYTHONPATH=/record/hook",
                "--env",
                "DASKHUB_RECORD=/record/opened",
                "--env",
                f"ROLE={role}",
                "--entrypoint",
                "/bin/sh",
                base_image,
                "/record/start.sh",
                timeout=TIMEOUT,
            )
        return _read(opened)


def record(
    store: BlobStore,
    base_image: str,
    platform: str,
    prefix: Callable[[], Path],
    packages: Sequence[str],
) -> dict[str, list[str]]:
    """What the worker's start and the notebook's read (layer paths, sorted), from the
    store when these inputs were recorded before; `prefix` gives the staged prefix.

    A start that fails is a warning, and its image gets no prefetch list: the image
    tests, which run the same start, are where a broken start fails the build."""
    key = recording_key(base_image, platform, packages)
    kept = store.recall("prefetch", key)
    if kept is not None:
        return {role: list(paths) for role, paths in kept.items()}
    staged = prefix()
    found: dict[str, list[str]] = {}
    for role in ("worker", "notebook"):
        try:
            found[role] = _run(base_image, staged, role)
        except BuildToolError as exc:
            logger.warning("recording the %s's start failed (no prefetch list): %s", role, exc)
            return {}
    logger.info(
        "recorded the starts: the worker's reads %d files, the notebook's %d",
        len(found["worker"]),
        len(found["notebook"]),
    )
    store.remember("prefetch", key, found)
    return found
