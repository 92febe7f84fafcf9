"""Fixtures for the image tests: the rendered pair, its spec and lock, and containers.

`buildtool test` sets BUILDTOOL_ROOT, BUILDTOOL_BUILD_DIR, BUILDTOOL_ENV and
BUILDTOOL_PLATFORM (the tests run once per platform: another platform than the engine's
runs under emulation).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra

from buildtool.build import BuiltPair
from buildtool.engine import docker_cli
from buildtool.lockfile import LockFile, read_lock
from buildtool.render import RenderedPair
from buildtool.spec import Environment, load_environment
from compat.vocabulary import PREFIX, ROLES


@pytest.fixture(scope="session")
def env() -> Environment:
    return load_environment(Path(os.environ["BUILDTOOL_ROOT"]), os.environ["BUILDTOOL_ENV"])


@pytest.fixture(scope="session")
def lock(env: Environment) -> LockFile:
    return read_lock(env.lock_path)


@pytest.fixture(scope="session")
def pair(env: Environment) -> RenderedPair:
    return RenderedPair.load(Path(os.environ["BUILDTOOL_BUILD_DIR"]), env.name)


@pytest.fixture(scope="session")
def platform() -> str:
    return os.environ["BUILDTOOL_PLATFORM"]


@pytest.fixture(scope="session")
def refs(pair: RenderedPair, platform: str) -> dict[str, str]:
    """role -> the engine's tag for this platform's image."""
    built = BuiltPair.load(pair)
    return {role: built.local_tag(pair, role, platform) for role in ROLES}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The build's own docker client (`buildtool.engine.docker_cli`), so the image tests
    talk to the engine the pair was loaded into."""
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="session")
def containers(refs: dict[str, str]) -> Iterator[dict[str, testinfra.host.Host]]:
    """One idle container per image, started through the image's own entrypoint."""
    ids = {
        role: docker("run", "-d", "--rm", refs[role], "sleep", "infinity").stdout.strip()
        for role in ROLES
    }
    try:
        yield {role: testinfra.get_host(f"docker://{cid}") for role, cid in ids.items()}
    finally:
        for cid in ids.values():
            docker("rm", "-f", cid, check=False)


@pytest.fixture(scope="session")
def installed(containers: dict[str, testinfra.host.Host]) -> dict[str, dict[str, dict]]:
    """name -> conda-meta record, per image, as read inside the container."""
    script = (
        "import json, pathlib; print(json.dumps([json.loads(p.read_text()) for p in "
        f"pathlib.Path('{PREFIX}/conda-meta').glob('*.json')]))"
    )
    out = {}
    for role, host in containers.items():
        records = json.loads(host.check_output(f'{PREFIX}/bin/python -c "{script}"'))
        out[role] = {r["name"]: r for r in records}
    return out


def inspect(ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]
