"""Work done for a user, in a process of its own with limits: CPU time, memory, wall
time, and whatever a watch says (bytes written to a folder, say).

A solve or an install runs in the service's process or the build's, but on the user's
input: a spec whose solve explodes, or an archive that expands without end, would take
the whole process, and every other user's requests with it. So such work runs here, in a
new interpreter (multiprocessing's `spawn`: nothing of the parent's threads or locks is
inherited), with `RLIMIT_CPU` and `RLIMIT_AS` set before it starts, while the parent
waits with a deadline and asks `watch` every `poll` seconds. Past a limit the child is
killed, its whole process group, and the caller gets one line saying which limit.

Own code rather than a library: `concurrent.futures.ProcessPoolExecutor` keeps workers
alive (one hostile call would poison the next) and has no per-call kill; the standard
library's `resource` and `multiprocessing` are all this needs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from buildtool.common.errors import BuildToolError

_T = TypeVar("_T")


@dataclass(frozen=True)
class Limits:
    """What one call may take. `cpu_seconds` and `memory_bytes` are the kernel's limits
    on the child; `wall_seconds` the parent's deadline."""

    cpu_seconds: int = 300
    memory_bytes: int = 4 * 1024**3
    wall_seconds: float = 600


class LimitExceeded(BuildToolError):
    """A call went past one of its limits: one line naming it."""


def _child(connection: Connection, limits: Limits, function: Callable[..., Any], args: Any) -> None:
    os.setsid()  # its own group, so that the parent kills whatever it starts too
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    try:
        connection.send(("ok", function(*args)))
    except MemoryError:
        connection.send(("limit", "memory"))
    except BuildToolError as exc:
        connection.send(("error", (type(exc).__name__, str(exc), exc.exit_code)))
    except Exception as exc:  # sent back as one line, not a traceback
        connection.send(("error", (type(exc).__name__, f"{type(exc).__name__}: {exc}", 1)))
    finally:
        connection.close()


def call(
    function: Callable[..., _T],
    *args: Any,
    limits: Limits,
    what: str,
    watch: Callable[[], str | None] = lambda: None,
    poll: float = 0.2,
) -> _T:
    """`function(*args)` in a bounded child process; its result, or its BuildToolError
    (as the same kind of one line), or LimitExceeded when a limit or `watch` (a reason, or
    None while all is well) stops it. `function` and its arguments must pickle."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sending, limits, function, args), daemon=True)
    child.start()
    sending.close()
    deadline = time.monotonic() + limits.wall_seconds
    reason = None
    try:
        while reason is None:
            if receiving.poll(poll):
                try:
                    kind, value = receiving.recv()
                except EOFError:  # it died without a word: killed by a limit
                    child.join(5)
                    reason = "died"
                    break
                if kind == "ok":
                    reason = watch()  # what it wrote last, between two polls
                    if reason is None:
                        return value  # type: ignore[no-any-return]
                    break
                if kind == "limit":
                    reason = f"more than {limits.memory_bytes // 1024**2} MB of memory"
                    break
                error = BuildToolError(value[1])
                error.exit_code = value[2]
                raise error
            if not child.is_alive():
                reason = "died"
                break
            reason = watch()
            if reason is None and time.monotonic() > deadline:
                reason = f"more than {limits.wall_seconds:g} s"
        if reason == "died":
            code = child.exitcode
            reason = (
                f"more than {limits.cpu_seconds} s of CPU"
                if code in (-signal.SIGXCPU, -signal.SIGKILL)
                else f"its process ended ({code})"
            )
        raise LimitExceeded(f"{what}: stopped, {reason}")
    finally:
        if child.is_alive() and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        child.join(5)
        receiving.close()


@dataclass(frozen=True)
class DiskBudget:
    """How much an install may write: bytes (what the files hold) and files."""

    max_bytes: int
    max_files: int = 200_000

    def over(self, size: int, files: int, what: str) -> str | None:
        """Why `size` bytes in `files` files is past the budget, or None."""
        if size > self.max_bytes:
            return f"{what} would be more than {self.max_bytes / 1e6:g} MB uncompressed"
        if files > self.max_files:
            return f"{what} would be more than {self.max_files} files"
        return None

    def watch(self, *folders: Path, what: str) -> Callable[[], str | None]:
        """A `call` watch: the regular files under `folders` (links not followed)."""

        def check() -> str | None:
            size = files = 0
            for folder in folders:
                for directory, _, names in os.walk(folder):
                    for name in names:
                        try:
                            stat = os.lstat(os.path.join(directory, name))
                        except OSError:  # gone meanwhile
                            continue
                        files += 1
                        size += stat.st_size
            return self.over(size, files, what)

        return check
