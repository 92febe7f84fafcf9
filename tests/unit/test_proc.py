"""Time limits on child processes, for real: commands that sleep past a short limit.

The same helpers the product uses (`buildtool.common.proc.run`, and `engine.run_logged` with its
Watchdog, which `docker build` goes through), with the limit as a parameter.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from buildtool.common import CommandTimeout, describe, interrupt_group, kill_marked, run
from buildtool.image import run_logged


def gone(pid: int) -> bool:
    """The process has exited (a zombie that nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def pids_in(path: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) == 2:
            return [int(word) for word in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path}: the command did not write its pids")


# A shell that starts a grandchild (sleep), records both pids, and waits.
SLEEPER = "sleep 30 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait"


def test_a_command_past_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as stopped:
        run(
            ["sh", "-c", SLEEPER.format(pids=pids) + " # token=secret"],
            timeout=0.5,
            capture_output=True,
        )
    assert time.monotonic() - started < 5
    assert str(stopped.value) == "sh did not finish within 0.5 s; it was stopped"
    assert "secret" not in str(stopped.value)
    assert stopped.value.exit_code == 1
    assert wait_gone(pids_in(pids)), "the shell or its sleep outlived the limit"


def test_a_plain_sleep_past_its_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"^sleep did not finish within 0\.5 s"):
        run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - started < 3


def test_a_grandchild_holding_the_output_open_is_killed(tmp_path: Path) -> None:
    """The command exits at once, but what it started keeps its stdout open."""
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}"
    with pytest.raises(CommandTimeout):
        run(["sh", "-c", script], timeout=1, capture_output=True, what="the test's shell")
    assert wait_gone(pids_in(pids))


def test_within_the_limit_nothing_changes() -> None:
    done = run(
        ["sh", "-c", "cat; echo err >&2; exit 3"],
        input="in\n",
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "in\n", "err\n")
    with pytest.raises(subprocess.CalledProcessError):
        run(["false"], timeout=30, check=True)


def test_a_streamed_build_past_its_limit_is_killed(tmp_path: Path) -> None:
    """engine.run_logged, which runs `docker build`: its log is kept, the group killed."""
    pids = tmp_path / "pids"
    log = tmp_path / "build.log"
    command = ["sh", "-c", "echo step 1; " + SLEEPER.format(pids=pids)]
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"^sh did not finish within 0\.5 s"):
        run_logged(command, log, echo=False, timeout=0.5)
    assert time.monotonic() - started < 5
    assert log.read_text() == "step 1\n"
    assert wait_gone(pids_in(pids))


def test_a_streamed_command_that_fails_in_time_fails_as_before(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="failed \\(exit 4\\)") as failed:
        run_logged(["sh", "-c", "echo oops; exit 4"], tmp_path / "b.log", echo=False, timeout=30)
    assert not isinstance(failed.value, CommandTimeout)
    assert "oops" in str(failed.value)


def test_an_interrupted_command_gets_sigint_first(tmp_path: Path) -> None:
    """As Ctrl-C from the terminal would: the command may clean up (pytest removes its
    containers, docker build cancels) before it is killed."""
    cleaned = tmp_path / "cleaned"
    process = subprocess.Popen(
        ["sh", "-c", f"trap 'echo yes > {cleaned}; exit 0' INT; echo ready; sleep 30 & wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    interrupt_group(process, grace=5)
    assert process.returncode is not None
    assert cleaned.read_text() == "yes\n"


def test_an_interrupted_command_that_ignores_sigint_is_killed() -> None:
    process = subprocess.Popen(
        ["sh", "-c", "trap '' INT; echo ready; while :; do sleep 0.1; done"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    started = time.monotonic()
    interrupt_group(process, grace=0.5)
    assert process.returncode == -9
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["/usr/bin/docker", "build", "--progress=plain", "-t", "x", "."], "docker build"),
        (["docker", "--config", "/secret/cfg", "login", "-u", "me"], "docker"),
        (["apt-get", "-o", "Dir::State=/x", "download", "python3.11"], "apt-get"),
        (["curl", "https://user:password@example.org/"], "curl"),
        (["debootstrap", "--arch=arm64", "bookworm", "/tmp/x"], "debootstrap bookworm"),
    ],
)
def test_errors_name_the_program_and_subcommand_only(command: list[str], named: str) -> None:
    assert describe(command) == named


def test_a_builds_whole_tree_ends_its_own_sessions_included(tmp_path: Path) -> None:
    """A build's processes that left for sessions of their own (as every `run` child
    does) outlive a group kill; `kill_marked` ends every process carrying the build's
    mark, and only those."""
    env = {"PATH": "/usr/bin:/bin", "DASKHUB_BUILD_ID": "b-test"}
    script = "setsid sh -c 'echo $$ > escaped; exec sleep 600' & echo $$ > top; wait"
    build = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "600"], env={**env, "DASKHUB_BUILD_ID": "other"})
    deadline = time.monotonic() + 10
    while not ((tmp_path / "escaped").exists() and (tmp_path / "top").exists()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    escaped = int((tmp_path / "escaped").read_text())
    build.kill()  # the group kill a time limit does: the escaped session lives on
    build.wait()
    assert Path(f"/proc/{escaped}").exists()
    assert kill_marked("DASKHUB_BUILD_ID", "b-test") >= 1
    deadline = time.monotonic() + 10
    while Path(f"/proc/{escaped}").exists() and "Z" not in _state(escaped):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert bystander.poll() is None  # another build's process is not touched
    bystander.kill()
    bystander.wait()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
