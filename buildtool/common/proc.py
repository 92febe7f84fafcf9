"""Child processes with a time limit, for every command that talks to a network or an engine.

A registry, a mirror or PyPI that stops answering, or a Docker engine that stops reading,
would otherwise hang a build for ever. `subprocess.run(timeout=...)` is close but not
enough: it kills only the child itself, and a command's own children (apt's fetchers,
debootstrap's wget, the processes `pytest` starts) live on. So each command here runs in a
process group of its own (a new session), and when the limit passes the whole group gets
SIGKILL and the caller gets one `CommandTimeout`. Its message names the command by its
program and subcommand only ("docker build"), never by its arguments or environment, which
may hold credentials. A group of its own does not get the terminal's Ctrl-C, so when this
process stops (Ctrl-C, or an error while streaming) the group gets SIGINT, as it would
have from the terminal, and SIGKILL if it is still running `INTERRUPT_GRACE` seconds later:
`docker build` cancels its build, pytest removes its containers.

`run` is for commands whose output is collected at the end; `Watchdog` is for commands
whose output (or input) is streamed by the caller, as `docker build`'s log and
`docker load`'s archive are.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from buildtool.common.errors import BuildToolError

# A subcommand that may appear in an error: a plain word ("build", "download"), never a
# path, URL or value.
_SUBCOMMAND = re.compile(r"[a-z][a-z0-9-]*")
# How long a command interrupted with SIGINT gets to clean up before SIGKILL, in seconds.
INTERRUPT_GRACE = 10


class CommandTimeout(BuildToolError):
    """A command did not finish within its limit; it (and its process group) was killed."""

    def __init__(self, what: str, limit: float) -> None:
        super().__init__(f"{what} did not finish within {limit:g} s; it was stopped")
        self.what = what
        self.limit = limit


def describe(command: Sequence[str | Path]) -> str:
    """A command as errors may name it: its program and subcommand, nothing else."""
    program = os.path.basename(str(command[0]))
    for argument in map(str, command[1:]):
        if argument.startswith("-"):
            continue
        return f"{program} {argument}" if _SUBCOMMAND.fullmatch(argument) else program
    return program


def kill_group(process: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group that `process` leads (started with `start_new_session=True`):
    the command and every process it started that has not left the group.

    Called before `process` is reaped: until then its id, which is the group's, belongs to
    no other process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(process.pid, signal.SIGKILL)


def interrupt_group(process: subprocess.Popen[Any], grace: float = INTERRUPT_GRACE) -> None:
    """SIGINT to the group `process` leads, SIGKILL if the command has not ended `grace`
    seconds later (or if this is interrupted again meanwhile). Reaps the command."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(process)
        process.wait()
    except BaseException:
        kill_group(process)
        process.wait()
        raise


def run(
    command: Sequence[str | Path],
    *,
    timeout: float,
    what: str | None = None,
    input: bytes | str | None = None,  # noqa: A002 (subprocess.run's name)
    capture_output: bool = False,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` with a limit of `timeout` seconds on the whole process group.

    `what` names the command in errors (default: its program and subcommand). On the limit
    the group is killed and CommandTimeout raised; on Ctrl-C (or any other exception here)
    the group is interrupted (`interrupt_group`). Otherwise this behaves as
    `subprocess.run` does.
    """
    if capture_output:
        stdout = stderr = subprocess.PIPE
    process = subprocess.Popen(
        [str(part) for part in command],
        stdin=subprocess.PIPE if input is not None else None,
        stdout=stdout,
        stderr=stderr,
        text=text,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    with process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.wait()
            raise CommandTimeout(what or describe(command), timeout) from None
        except BaseException:
            interrupt_group(process)
            raise
    completed = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    if check:
        completed.check_returncode()
    return completed


class Watchdog:
    """Kills a streamed command's process group once `limit` seconds have passed.

    For a process started with `start_new_session=True` whose pipes the caller reads or
    writes itself. Killing the group closes those pipes, so a blocked read ends (EOF) and a
    blocked write fails (BrokenPipeError); afterwards `check()` raises CommandTimeout::

        with Watchdog(process, limit, "docker build") as watchdog:
            for line in process.stdout: ...
            process.wait()
        watchdog.check()
    """

    def __init__(self, process: subprocess.Popen[Any], limit: float, what: str) -> None:
        self.process = process
        self.limit = limit
        self.what = what
        self.expired = False
        self._timer = threading.Timer(limit, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        if self.process.returncode is None:  # not reaped yet: the group is still the command's
            self.expired = True
            kill_group(self.process)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if exc[0] is not None and self.process.returncode is None:
            interrupt_group(self.process)  # the caller failed (or Ctrl-C): the command stops

    def check(self) -> None:
        """Raise CommandTimeout if the limit killed the command."""
        if self.expired:
            raise CommandTimeout(self.what, self.limit)


def _carrying(marker: bytes) -> list[int]:
    """The processes (but this one) whose environment holds `marker` (`NAME=value`)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(name: str, value: str, rounds: int = 20) -> int:
    """SIGKILL every process that carries `name=value` in its environment, whatever
    session or process group it started: a build's whole tree, its children that left
    for sessions of their own included (a group kill misses those). Rounds go on while
    new ones turn up (a process forking as it dies). How many were killed."""
    marker = f"{name}={value}".encode()
    killed = 0
    for _ in range(rounds):
        found = _carrying(marker)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
