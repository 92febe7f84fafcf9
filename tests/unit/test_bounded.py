"""Work on a user's input in a bounded child process (`buildtool.common.bounded`): its
answer comes back, its one-line error too, and each limit stops it in one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from buildtool.common import BuildToolError, DiskBudget, LimitExceeded, Limits, SpecError
from buildtool.common import call_bounded as call

QUICK = Limits(cpu_seconds=5, memory_bytes=1024**3, wall_seconds=30)


def _add(a: int, b: int) -> int:
    return a + b


def _refuse(path: str) -> None:
    raise SpecError(Path(path), "dependencies[0]", "names a URL", 3)


def _sleep() -> None:
    time.sleep(60)


def _spin() -> None:
    while True:
        pass


def _allocate() -> bytes:
    return b"x" * (2 * 1024**3)


def _fill(folder: str) -> None:
    for index in range(10_000):
        Path(folder, f"f{index}").write_bytes(b"\0" * 1024 * 1024)
        time.sleep(0.001)


def test_the_answer_comes_back() -> None:
    assert call(_add, 40, 2, limits=QUICK, what="adding") == 42


def test_an_error_is_its_one_line_and_exit_code() -> None:
    with pytest.raises(BuildToolError) as caught:
        call(_refuse, "/site/ext/env.yaml", limits=QUICK, what="the solve")
    assert str(caught.value) == "/site/ext/env.yaml:3: dependencies[0]: names a URL"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("function", "limits", "says"),
    [
        (_sleep, Limits(wall_seconds=1), "more than 1 s"),
        (_spin, Limits(cpu_seconds=1, wall_seconds=30), "more than 1 s of CPU"),
        (_allocate, Limits(memory_bytes=512 * 1024**2), "more than 512 MB of memory"),
    ],
)
def test_each_limit_stops_the_work_in_one_line(function, limits: Limits, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as caught:
        call(function, limits=limits, what="the solve")
    assert str(caught.value) == f"the solve: stopped, {says}"
    assert time.monotonic() - started < 20


def test_a_watch_stops_an_install_that_writes_too_much(tmp_path: Path) -> None:
    budget = DiskBudget(max_bytes=20 * 1024 * 1024)
    with pytest.raises(LimitExceeded) as caught:
        call(
            _fill,
            str(tmp_path),
            limits=QUICK,
            what="the install",
            watch=budget.watch(tmp_path, what="the additions"),
            poll=0.05,
        )
    assert "the additions would be more than 20.9715 MB uncompressed" in str(caught.value)
    written = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert written < 100 * 1024 * 1024  # stopped within a poll of the budget
