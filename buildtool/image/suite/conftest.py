"""Fixtures for the image tests: what they check (`buildtool.image.testing.Subject`), the lock,
and containers.

`buildtool test` writes the subject, one platform's, and names it in BUILDTOOL_SUBJECT
(the tests run once per platform: another platform than the engine's runs under
emulation).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra

from buildtool.image.engine import docker_cli
from buildtool.image.testing import SUBJECT_ENV, Subject
from buildtool.lock import LockFile, read_lock
from compat.vocabulary import PREFIX, ROLES


@pytest.fixture(scope="session")
def subject() -> Subject:
    return Subject.load(Path(os.environ[SUBJECT_ENV]))


@pytest.fixture(scope="session")
def lock(subject: Subject) -> LockFile:
    return read_lock(Path(subject.lock_path))


@pytest.fixture(scope="session")
def platform(subject: Subject) -> str:
    return subject.platform


@pytest.fixture(scope="session")
def refs(subject: Subject) -> dict[str, str]:
    """role -> what the engine runs for this platform's image."""
    return subject.refs


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The build's own docker client (`buildtool.image.engine.docker_cli`), so the image tests
    talk to the engine the pair was loaded into."""
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="session")
def containers(subject: Subject, refs: dict[str, str]) -> Iterator[dict[str, testinfra.host.Host]]:
    """One idle container per image, started through the image's own entrypoint, in the
    build's sandbox (`buildtool.image.sandbox`)."""
    ids = {
        role: docker(
            "run", "-d", "--rm", *subject.run_args, "--network", "none", refs[role], "sleep", "1d"
        ).stdout.strip()
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
