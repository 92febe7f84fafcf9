"""e2e's pip pin, locked against the real PyPI: the lock records the wheel PyPI serves, with
its sha256; the build takes that wheel only if its bytes still hash to it.

Needs PyPI (pypi.org and files.pythonhosted.org); the conda side is solved against the
local solver channel.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.lock import check_lock, fetch_wheels, lock_content_hash, read_lock
from buildtool.spec import load_environment
from devsupport.buildtool_cli import buildtool

REPO = Path(__file__).resolve().parents[1]
WHEEL = "tomli_w-1.2.0-py3-none-any.whl"


@pytest.fixture
def locked(envroot: Path, solver_channel: str) -> Path:
    """e2e locked in a scratch copy of the seed specs: its lock's path."""
    result = buildtool(
        "--root", envroot, "lock", "e2e", "--channel", solver_channel, cwd=envroot.parent
    )
    assert result.returncode == 0, result.stderr
    return envroot / "e2e" / "conda-lock.yml"


def _served_sha256(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return hashlib.sha256(response.read()).hexdigest()


def test_lock_records_the_wheel_pypi_serves(locked: Path, tmp_path: Path) -> None:
    lock = read_lock(locked)
    (record,) = lock.pip
    assert (record.name, record.version, record.platform) == ("tomli-w", "1.2.0", "linux-64")
    assert (record.category, record.optional) == ("notebook", True)  # a notebook-only pin
    assert record.url.startswith("https://files.pythonhosted.org/packages/")
    assert record.filename == WHEEL
    assert record.hash.sha256 == _served_sha256(record.url)
    assert "tomli-w" not in {p.name for p in lock.packages("notebook", "linux-64")}
    assert lock.pip_packages("worker", "linux-64") == []

    # conda-lock renders it: the notebook set gets the wheel, pinned by its sha256.
    out = tmp_path / "render"
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "conda_lock",
            "render",
            "-k",
            "explicit",
            "-e",
            "notebook",
            "--filename-template",
            "nb-{platform}.lock",
            str(locked),
        ],
        cwd=out,
        check=True,
        capture_output=True,
    )
    rendered = (out / "nb-linux-64.lock").read_text()
    assert f"{record.url}#sha256={record.hash.sha256}" in rendered


def test_lock_check_notices_a_changed_pin(locked: Path, envroot: Path) -> None:
    env = load_environment(envroot, "e2e")
    check_lock(env)  # up to date
    spec = envroot / "e2e" / "env.yaml"
    spec.write_text(spec.read_text().replace("tomli-w==1.2.0", "tomli-w==1.1.0"))
    result = buildtool("--root", envroot, "lock", "--check", "e2e", cwd=envroot.parent)
    assert result.returncode == 1
    assert "is out of date for linux-64" in result.stderr


def test_environments_without_pins_keep_their_hashes() -> None:
    root = REPO / "environments"
    for name in ("physlite", "pyhep", "ml"):
        env = load_environment(root, name)
        assert not env.notebook.pip and not env.worker.pip
        for platform in env.platforms:
            assert lock_content_hash(env, platform) == env.content_hash(platform)
        check_lock(env)  # the committed lock is still up to date


def test_the_build_takes_the_wheel_only_with_the_locked_sha256(
    locked: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "wheels"
    (record,) = read_lock(locked).pip_packages("notebook", "linux-64")
    (path,) = fetch_wheels([record], "linux-64", "3.11.7", cache)
    assert path == cache / record.hash.sha256 / WHEEL
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record.hash.sha256

    # A tampered lock: its sha256 is still 64 hex characters, so it reads, and the wheel
    # step (cached file or fresh download alike) stops with one clear line.
    tampered = "0" * 63 + "a"
    locked.write_text(locked.read_text().replace(record.hash.sha256, tampered))
    (bad,) = read_lock(locked).pip
    for where in (cache, tmp_path / "empty-cache"):
        with pytest.raises(BuildToolError) as caught:
            fetch_wheels([bad], "linux-64", "3.11.7", where)
        assert str(caught.value) == (
            f"tomli-w 1.2.0 (linux-64): sha256 mismatch: the lock says {tampered}, "
            f"{record.url} served {record.hash.sha256}"
        )
        # nothing unverified is kept: under the tampered sha256 there is nothing, and the
        # cache still holds what matched the lock before
        assert list((where / tampered).iterdir()) == []
        assert (where / record.hash.sha256 / WHEEL).exists() == (where == cache)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_silent_server_fails_the_wheel_step_in_time(
    locked: Path, silent_server: str, tmp_path: Path
) -> None:
    (record,) = read_lock(locked).pip
    stalled = record.model_copy(update={"url": f"{silent_server}/packages/{WHEEL}"})
    started = time.monotonic()
    with pytest.raises(BuildToolError) as caught:
        fetch_wheels([stalled], "linux-64", "3.11.7", tmp_path, timeout=1)
    assert str(caught.value) == f"{stalled.url}: no answer within 1 s (timed out)"
    assert time.monotonic() - started < 10
