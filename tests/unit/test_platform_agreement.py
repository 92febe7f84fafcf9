"""One lock, several platforms, one client: the worker sets agree on what distributed
compares, or `buildtool lock` fails in one line.

A channel on disk (file://, no network) whose linux-aarch64 subdir lacks the newest
python and msgpack-python that linux-64 has, as the stand-in's does and as conda-forge's
can for a day after a release. Solved per platform, the two worker sets would differ,
and a laptop client could match at most one of them (distributed warns on the full
Python version and on msgpack's). The lock pins both to their newest release on every
platform instead; where no release is on every platform, the lock command exits 1 with
one line naming the package and each platform's version, and writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from rattler.index import index_fs

from buildtool import cli
from buildtool.lock import client_files, disagreements, read_lock
from devsupport.solver_channel import write_package

PLATFORMS = ("linux-64", "linux-aarch64")
SPEC = """\
description: Two platforms, one client
channels: [{channel}]
platforms: [linux-64, linux-aarch64]
dependencies: [python 3.*, distributed, msgpack-python]
imports: [distributed]
"""


def _channel(root: Path, pythons: dict[str, list[str]]) -> str:
    """pythons: the releases of python per platform; msgpack-python 1.0.7 on linux-64 only."""
    channel = root / "channel"
    write_package(
        channel, "noarch", "distributed", "2024.8.0", "0", ["python >=3.10", "msgpack-python"]
    )
    for platform, versions in pythons.items():
        for version in versions:
            write_package(channel, platform, "python", version, "h0", [])
        msgpacks = ["1.0.5", "1.0.7"] if platform == "linux-64" else ["1.0.5"]
        for version in msgpacks:
            write_package(channel, platform, "msgpack-python", version, "py3_0", ["python >=3.10"])
    asyncio.run(index_fs(channel))
    return channel.as_uri()


def _site(root: Path, channel: str) -> Path:
    (root / "environments" / "two").mkdir(parents=True)
    (root / "environments" / "two" / "env.yaml").write_text(SPEC.format(channel=channel))
    return root / "environments"


def _lock(environments: Path) -> int:
    return cli.main(["--root", str(environments), "lock", "two"])


def test_the_platforms_agree_on_the_newest_release_both_have(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    channel = _channel(tmp_path, {"linux-64": ["3.11.2", "3.11.7"], "linux-aarch64": ["3.11.2"]})
    environments = _site(tmp_path, channel)
    with caplog.at_level(logging.INFO):
        assert _lock(environments) == 0
    path = environments / "two" / "conda-lock.yml"
    lock = read_lock(path)
    for platform in PLATFORMS:
        versions = {p.name: p.version for p in lock.packages("worker", platform)}
        assert versions == {
            "python": "3.11.2",
            "msgpack-python": "1.0.5",
            "distributed": "2024.8.0",
        }
    assert disagreements(lock, path) == {}
    assert "agree on msgpack-python 1.0.5, python 3.11.2" in caplog.text
    assert "python==3.11.2" not in client_files("two", lock, path)["client-requirements.txt"]
    assert "# Python: 3.11.2 exactly" in client_files("two", lock, path)["client-requirements.txt"]


def test_no_common_release_is_one_line_and_no_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = _channel(tmp_path, {"linux-64": ["3.11.7"], "linux-aarch64": ["3.12.4"]})
    environments = _site(tmp_path, channel)
    assert _lock(environments) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert (
        "environment 'two': the worker sets differ (python 3.11.7 on linux-64, 3.12.4 on "
        "linux-aarch64) and no release is on every platform; one client cannot match them all"
    ) in err
    assert not (environments / "two" / "conda-lock.yml").exists()


def test_one_platform_is_solved_as_before(tmp_path: Path) -> None:
    channel = _channel(tmp_path, {"linux-64": ["3.11.2", "3.11.7"], "linux-aarch64": []})
    environments = _site(tmp_path, channel)
    spec = environments / "two" / "env.yaml"
    spec.write_text(spec.read_text().replace("[linux-64, linux-aarch64]", "[linux-64]"))
    assert _lock(environments) == 0
    lock = read_lock(environments / "two" / "conda-lock.yml")
    versions = {p.name: p.version for p in lock.packages("worker", "linux-64")}
    assert versions["python"] == "3.11.7" and versions["msgpack-python"] == "1.0.7"


@pytest.mark.parametrize("flag, shown", [((), True), (("-v",), True), (("-q",), False)])
def test_progress_is_logged_on_stderr_and_quiet_keeps_it_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: tuple[str, ...], shown: bool
) -> None:
    channel = _channel(tmp_path, {"linux-64": ["3.11.2", "3.11.7"], "linux-aarch64": ["3.11.2"]})
    environments = _site(tmp_path, channel)
    assert cli.main(["--root", str(environments), "lock", "two", *flag]) == 0
    said = capsys.readouterr()
    assert ("agree on msgpack-python 1.0.5, python 3.11.2" in said.err) is shown
    assert "agree on" not in said.out and "wrote " in said.out  # the answer, on stdout
