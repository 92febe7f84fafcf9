"""The hub service's build queue (`buildtool/site/builds.py`) with its real local runner,
running small real commands: one build per user, the queue's bound, the time limit, the
step read from the log, and a restart that finds builds cut short."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.site import MAX_LOG_BYTES, Build, BuildQueue, BuildRefused, Job, LocalRunner, step_of


def _job(queue: BuildQueue, build: Build, *scripts: str, timeout: float = 30) -> Job:
    return Job(
        build=build,
        commands=[[sys.executable, "-c", script] for script in scripts],
        cwd=queue.folder,
        env={},
        timeout=timeout,
        log=queue.log_path(build.id),
        after_lock=lambda: None,
        on_success=lambda: ("nb@sha256:" + "a" * 64, "wk@sha256:" + "b" * 64, False),
    )


def _wait(queue: BuildQueue, build_id: str) -> Build:
    deadline = time.monotonic() + 30
    while (build := queue.get(build_id)) is not None and build.state in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert build is not None
    return build


def test_one_build_per_user_and_a_bounded_queue(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=2)
    first = queue.new("alice", "a", "physlite")
    with pytest.raises(BuildRefused) as twice:
        queue.new("alice", "b", "physlite")
    assert twice.value.status == 409
    queue.new("bob", "c", "physlite")
    with pytest.raises(BuildRefused) as full:
        queue.new("carol", "d", "physlite")
    assert full.value.status == 429 and "max_queued" in str(full.value)
    queue.start(_job(queue, first, "import sys; print('solving x', file=sys.stderr)"))
    done = _wait(queue, first.id)
    assert done.state == "succeeded" and done.notebook and done.step == "done"
    assert [b.id for b in queue.of_user("alice")] == [first.id]


def test_a_failed_command_is_its_error_line_and_a_slow_build_is_stopped(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(2), max_queued=4)
    failing = queue.new("alice", "a", "physlite")
    queue.start(
        _job(
            queue,
            failing,
            "import sys; print('solving'); print('error: no such package'); sys.exit(2)",
        )
    )
    slow = queue.new("bob", "b", "physlite")
    queue.start(_job(queue, slow, "import time; time.sleep(30)", timeout=1))
    assert _wait(queue, failing.id).error == "no such package"
    stopped = _wait(queue, slow.id)
    assert stopped.state == "failed" and "longer than 1 s" in (stopped.error or "")


def test_a_check_after_the_lock_stops_the_build(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=4)
    build = queue.new("alice", "a", "physlite")

    def too_large() -> None:
        raise BuildToolError("the additions are 9.0 MB, more than this hub's 1 MB")

    job = _job(queue, build, "pass", "open('published', 'w')")
    queue.start(Job(**{**job.__dict__, "after_lock": too_large}))
    assert "more than this hub's 1 MB" in (_wait(queue, build.id).error or "")
    assert not (queue.folder / "published").exists()


def test_the_step_is_the_latest_the_log_shows() -> None:
    assert step_of("") == "lock"
    assert (
        step_of("solving a\nfetching and installing b\nwriting the layers (linux-64)") == "layers"
    )
    assert step_of("pushing x and y\nrunning the image tests\ntagged x:{c-1}") == "tag"


def test_a_restart_finds_the_builds_it_cut_short(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=4)
    build = queue.new("alice", "a", "physlite")  # queued, never started: the service stops
    again = BuildQueue(tmp_path, LocalRunner(1), max_queued=4)
    found = again.get(build.id)
    assert found is not None and found.state == "failed"
    assert "the service restarted" in (found.error or "")
    again.new("alice", "b", "physlite")  # no longer blocks alice


def test_a_build_that_talks_without_end_keeps_a_bounded_log_and_its_error(
    tmp_path: Path,
) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=2)
    loud = queue.new("alice", "a", "physlite")
    script = (
        "import sys\n"
        "for i in range(200_000): print('x' * 60, i)\n"
        "print('error: the additions conflict', file=sys.stderr)\n"
        "sys.exit(2)\n"
    )
    queue.start(_job(queue, loud, script))
    done = _wait(queue, loud.id)
    assert done.state == "failed" and done.error == "the additions conflict"
    log = queue.log_path(loud.id)
    assert log.stat().st_size < MAX_LOG_BYTES + 20 * 1024
    assert "bytes of the log left out here" in log.read_text()


def test_the_queue_refuses_before_anything_costly(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path, LocalRunner(1), max_queued=1)
    queue.admit("alice")
    queue.new("alice", "a", "physlite")
    with pytest.raises(BuildRefused) as busy:
        queue.admit("alice")
    assert busy.value.status == 409
    with pytest.raises(BuildRefused) as full:
        queue.admit("bob")
    assert full.value.status == 429
