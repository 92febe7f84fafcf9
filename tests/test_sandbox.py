"""A user's code runs in a sandbox, and a build leaves nothing behind.

- physlite, extended by the stand-in's hostile package `daskhub-probe` (it tries to reach
  a listener on the host and forks until stopped, at import), published with its image
  tests: the listener hears nothing, the pids limit stops the forks, the tests fail so
  nothing is tagged, and no container, network or process of the build is left.
- The hub service's runner at a build's time limit: a build that left a process in a
  session of its own, a container and a network, all gone when the limit ends it.

Nothing here skips: a missing engine or registry fails.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.image import BUILD_ID_ENV
from buildtool.site import Build, BuildQueue, Job, LocalRunner
from compat.vocabulary import BUILD_LABEL
from devsupport.buildtool_cli import buildtool
from devsupport.dockercli import docker, require_docker
from devsupport.sitepair import PublishedSite

pytestmark = [pytest.mark.docker, pytest.mark.registry]
PROBE_PORT = 47813  # devsupport/standin/probe.py's


@pytest.fixture
def listener() -> Iterator[list[str]]:
    """A listener on every address of this host at the probe's port: who connected."""
    heard: list[str] = []
    server = socket.create_server(("0.0.0.0", PROBE_PORT), reuse_port=True)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, peer = server.accept()
            except TimeoutError:
                continue
            heard.append(peer[0])
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield heard
    stop.set()
    thread.join()
    server.close()


def _left(build: str) -> dict[str, list[str]]:
    """What of `build` is still there: containers, networks, processes."""
    label = f"label={BUILD_LABEL}={build}"
    marker = f"{BUILD_ID_ENV}={build}".encode()
    processes = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    processes.append(entry.name)
            except OSError:
                continue
    return {
        "containers": docker("ps", "-aq", "--filter", label).stdout.decode().split(),
        "networks": docker("network", "ls", "-q", "--filter", label).stdout.decode().split(),
        "processes": processes,
    }


def test_a_hostile_addition_reaches_nothing_and_leaves_nothing(
    physlite_site: PublishedSite, listener: list[str], tmp_path: Path
) -> None:
    require_docker()
    users = tmp_path / "users"
    (users / "probe").mkdir(parents=True)
    notebook = physlite_site.published["images"]["notebook"]["ref"]
    (users / "probe" / "env.yaml").write_text(
        f"from: {notebook}\ndescription: hostile\n"
        "dependencies: [daskhub-probe]\nimports: [daskhub_probe]\n"
    )
    common = ["--root", users, "--build-dir", users / "build"]
    locked = buildtool(*common, "lock", "probe", cwd=users, env=physlite_site.env)
    assert locked.returncode == 0, locked.stderr
    build = f"sandbox-{uuid.uuid4().hex[:8]}"
    registry = f"{physlite_site.proxy.address}/users{uuid.uuid4().hex[:8]}/mallory"
    started = time.monotonic()
    published = buildtool(
        *common,
        "publish",
        "probe",
        "--registry",
        registry,
        "--image-tests",
        "yes",
        cwd=users,
        env={**physlite_site.env, BUILD_ID_ENV: build},
    )
    assert published.returncode == 1, published.stderr[-3000:]
    assert "image tests failed for probe" in published.stderr
    assert time.monotonic() - started < 600
    report = (users / "build" / "probe" / "linux-64" / "image-tests.xml").read_text()
    # The probe ran, reached nothing, and the pids limit stopped its forks.
    said = re.findall(r"daskhub-probe: reached (\w+), forked (\d+) processes", report)
    assert said and {reached for reached, _ in said} == {"nothing"}, report[:2000]
    assert max(int(forked) for _, forked in said) < 256
    assert listener == []
    assert not (users / "build" / "probe" / "published.json").exists()
    assert _left(build) == {"containers": [], "networks": [], "processes": []}


LEAVES_EVERYTHING = """
import os, subprocess, sys, time
build = os.environ["DASKHUB_BUILD_ID"]
label = f"io.daskhub.build={build}"
subprocess.Popen(["setsid", "sleep", "600"])
subprocess.run(["docker", "network", "create", "--internal", "--label", label, f"n-{build}"],
               check=True, capture_output=True)
subprocess.run(["docker", "run", "-d", "--label", label, sys.argv[1], "sleep", "600"],
               check=True, capture_output=True)
print("solving: everything is started", flush=True)
time.sleep(600)
"""


def test_a_build_at_its_time_limit_ends_with_its_whole_tree(
    physlite_site: PublishedSite, tmp_path: Path
) -> None:
    """The service's runner: a build that started a process in a session of its own, a
    container and a network, stopped at its limit: none of them is left."""
    require_docker()
    base = physlite_site.published["images"]["worker"]["ref"]
    docker("pull", base, env={**os.environ, "DOCKER_CONFIG": physlite_site.env["DOCKER_CONFIG"]})
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=1)
    build = queue.new("mallory", "x", "physlite")
    queue.start(
        Job(
            build=build,
            commands=[[sys.executable, "-c", LEAVES_EVERYTHING, base]],
            cwd=tmp_path,
            env=dict(os.environ),
            timeout=20,
            log=queue.log_path(build.id),
            after_lock=lambda: None,
            on_success=lambda: ("", "", False),
        )
    )
    deadline = time.monotonic() + 120
    while (done := queue.get(build.id)) is not None and done.state in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert isinstance(done, Build)
    assert done.state == "failed" and "longer than 20 s" in (done.error or ""), done
    assert "everything is started" in queue.log_path(build.id).read_text()
    assert _left(build.id) == {"containers": [], "networks": [], "processes": []}
