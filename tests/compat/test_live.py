"""The live check against real Dask processes run from genuinely different venvs.

The mixed cluster: client and scheduler from the client venv (with lz4), 49
workers from the worker venv (no lz4) and one from the odd-worker venv (no lz4,
older toolz). The report must name exactly toolz (error, one worker) and lz4
(warning, all workers), nothing else.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devsupport.cluster import (
    LZ4_VERSION,
    MIXED_WORKERS,
    ODD_TOOLZ_VERSION,
    MixedCluster,
    StartCluster,
    Venv,
    run_checker,
)
from devsupport.servers import free_port

pytestmark = pytest.mark.dask

TOOLZ_VERSION = "1.2.0"


def _json_report(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def _expected_mismatches(workers: list[str], odd_worker: str) -> list[dict]:
    usual = sorted(w for w in workers if w != odd_worker)
    return [
        {
            "package": "toolz",
            "level": "error",
            "reason": "required by distributed",
            "differs": ["workers"],
            "columns": {
                "client": [{"version": TOOLZ_VERSION, "count": 1, "members": ["client"]}],
                "scheduler": [{"version": TOOLZ_VERSION, "count": 1, "members": ["scheduler"]}],
                "workers": [
                    {"version": TOOLZ_VERSION, "count": len(usual), "members": usual},
                    {"version": ODD_TOOLZ_VERSION, "count": 1, "members": [odd_worker]},
                ],
            },
        },
        {
            "package": "lz4",
            "level": "warning",
            "reason": "missing on some sides",
            "differs": ["workers"],
            "columns": {
                "client": [{"version": LZ4_VERSION, "count": 1, "members": ["client"]}],
                "scheduler": [{"version": LZ4_VERSION, "count": 1, "members": ["scheduler"]}],
                "workers": [{"version": None, "count": len(workers), "members": sorted(workers)}],
            },
        },
    ]


def test_report_names_exactly_the_differing_packages_and_sides(
    mixed_cluster: MixedCluster, client_venv: Venv, checker_path: Path
) -> None:
    address = mixed_cluster.cluster.address
    result = run_checker(client_venv, checker_path, "live", address, "--format", "json")

    assert result.returncode == 1, result.stderr
    report = _json_report(result)
    assert report["errors"] == 1 and report["warnings"] == 1
    assert report["workers_checked"] == MIXED_WORKERS
    assert report["workers_left"] == [] and report["workers_unanswered"] == {}
    assert report["mismatches"] == _expected_mismatches(
        mixed_cluster.workers, mixed_cluster.odd_worker
    )


def test_table_groups_the_workers_and_lists_the_odd_one(
    mixed_cluster: MixedCluster, client_venv: Venv, checker_path: Path
) -> None:
    address = mixed_cluster.cluster.address
    result = run_checker(client_venv, checker_path, "live", address)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    toolz_row = next(line for line in lines if line.startswith("error"))
    assert toolz_row.split()[:4] == ["error", "toolz", TOOLZ_VERSION, TOOLZ_VERSION]
    assert f"49 at {TOOLZ_VERSION}, 1 at {ODD_TOOLZ_VERSION}" in toolz_row
    assert f"toolz: 49 workers at {TOOLZ_VERSION}, 1 at {ODD_TOOLZ_VERSION}" in lines
    assert f"  at {ODD_TOOLZ_VERSION}: {mixed_cluster.odd_worker}" in lines
    assert lines[-1] == f"1 error, 1 warning; {MIXED_WORKERS} workers checked"


def test_fifty_workers_are_checked_in_under_five_seconds(
    mixed_cluster: MixedCluster, client_venv: Venv, checker_path: Path
) -> None:
    address = mixed_cluster.cluster.address
    started = time.monotonic()
    result = run_checker(client_venv, checker_path, "live", address, "--format", "json")
    elapsed = time.monotonic() - started

    assert _json_report(result)["workers_checked"] == MIXED_WORKERS
    assert elapsed < 5.0, f"the check took {elapsed:.1f} s"


def _wait_for_stderr_line(process: subprocess.Popen[str], text: str, timeout: float) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stderr], [], [], remaining)
        if not ready:
            break
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} on stderr within {timeout} s: {seen}")


def test_a_worker_killed_mid_check_is_reported_as_left(
    mixed_cluster: MixedCluster, client_venv: Venv, worker_venv: Venv, checker_path: Path
) -> None:
    cluster = mixed_cluster.cluster
    victim_port = free_port()
    victim = cluster.add_workers(worker_venv, 1, port=victim_port)
    victim_address = f"tcp://127.0.0.1:{victim_port}"
    try:
        assert victim_address in cluster.worker_addresses(MIXED_WORKERS + 1)
        checker = subprocess.Popen(
            [
                str(client_venv.python),
                "-m",
                "compat",
                "live",
                cluster.address,
                "--format",
                "json",
                "--settle-delay",
                "3",
                "--verbose",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=checker_path,
            env={**os.environ, "PYTHONPATH": str(checker_path)},
        )
        try:
            _wait_for_stderr_line(checker, f"listed {MIXED_WORKERS + 1} workers", timeout=30)
            victim.signal(signal.SIGKILL)
            stdout, stderr = checker.communicate(timeout=60)
        finally:
            checker.kill()
    finally:
        victim.stop()
        cluster.processes.remove(victim)

    assert checker.returncode == 1, stderr
    report = json.loads(stdout)
    assert report["workers_left"] == [victim_address]
    assert report["workers_unanswered"] == {}
    assert report["workers_checked"] == MIXED_WORKERS
    assert report["mismatches"] == _expected_mismatches(
        mixed_cluster.workers, mixed_cluster.odd_worker
    )
    assert cluster.worker_addresses(MIXED_WORKERS) == mixed_cluster.workers


def test_unreachable_scheduler_exits_2_within_the_timeout(
    client_venv: Venv, checker_path: Path
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_checker(client_venv, checker_path, "live", address, "--timeout", "2")
    elapsed = time.monotonic() - started

    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"daskhub-compat: error: cannot reach scheduler {address} within 2 s")
    assert elapsed < 2 + 3, f"gave up after {elapsed:.1f} s"


STALLED_WORKER_PRELOAD = '''\
"""Worker preload: the first out-of-band call blocks the event loop for a while,
as a task holding the GIL would."""
import time


def dask_setup(worker):
    run = worker.handlers["run"]

    async def stalled_run(*args, **kwargs):
        time.sleep(20)
        return await run(*args, **kwargs)

    worker.handlers["run"] = stalled_run
'''


def test_a_worker_that_does_not_answer_in_time_is_reported_and_exits_2(
    start_cluster: StartCluster, client_venv: Venv, checker_path: Path, tmp_path: Path
) -> None:
    preload = tmp_path / "stalled_worker.py"
    preload.write_text(STALLED_WORKER_PRELOAD)
    cluster = start_cluster(None)
    cluster.add_workers(client_venv, 1)
    assert len(cluster.worker_addresses(1)) == 1
    stalled_port = free_port()
    stalled = cluster.add_workers(
        client_venv, 1, port=stalled_port, env={"DASK_DISTRIBUTED__WORKER__PRELOAD": str(preload)}
    )
    assert len(cluster.worker_addresses(2)) == 2

    result = run_checker(
        client_venv, checker_path, "live", cluster.address, "--timeout", "2", "--format", "json"
    )
    stalled.signal(signal.SIGKILL)  # it would not stop gracefully while it sleeps

    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["workers_unanswered"] == {
        f"tcp://127.0.0.1:{stalled_port}": "no answer within 2 s"
    }
    assert report["workers_checked"] == 1 and report["workers_left"] == []
    assert report["mismatches"] == []
