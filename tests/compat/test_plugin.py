"""The runtime guard, loaded into a real scheduler as its docstring says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.compat.cluster import (
    ODD_TOOLZ_VERSION,
    StartCluster,
    Venv,
    free_port,
    run_checker,
)

pytestmark = pytest.mark.dask

GUARD_CONFIG = """\
distributed:
  scheduler:
    preload:
      - compat.plugin
compat:
  guard: refuse
logging:
  compat: info
"""


def _complaint(odd_worker: str, action: str) -> str:
    return (
        f"worker {odd_worker} has package versions that differ from the scheduler's: "
        f"toolz {ODD_TOOLZ_VERSION} (scheduler 1.2.0); {action}"
    )


def test_refuse_mode_closes_a_mismatched_worker_and_keeps_a_matching_one(
    start_cluster: StartCluster,
    client_venv: Venv,
    odd_worker_venv: Venv,
    checker_path: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "compat.yaml").write_text(GUARD_CONFIG)
    cluster = start_cluster({"DASK_CONFIG": str(config), "PYTHONPATH": str(checker_path)})
    cluster.add_workers(client_venv, 1)
    (matching,) = cluster.worker_addresses(1)
    odd_port = free_port()
    odd = cluster.add_workers(odd_worker_venv, 1, port=odd_port)
    odd_worker = f"tcp://127.0.0.1:{odd_port}"

    odd.popen.wait(timeout=60)  # the worker, its nanny and `dask worker` all close

    scheduler_log = cluster.processes[0].log.read_text()
    complaint = _complaint(odd_worker, "closing it (compat.guard: refuse)")
    assert f" - compat.plugin - ERROR - {complaint}\n" in scheduler_log
    assert cluster.worker_addresses(1) == [matching]
    result = run_checker(client_venv, checker_path, "live", cluster.address, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mismatches"] == [] and report["workers_checked"] == 1


def test_log_mode_logs_and_keeps_the_worker(
    start_cluster: StartCluster, odd_worker_venv: Venv, checker_path: Path
) -> None:
    cluster = start_cluster(
        {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "compat.plugin", "PYTHONPATH": str(checker_path)}
    )
    odd_port = free_port()
    odd = cluster.add_workers(odd_worker_venv, 1, port=odd_port)
    odd_worker = f"tcp://127.0.0.1:{odd_port}"

    assert cluster.worker_addresses(1) == [odd_worker]
    time.sleep(1)  # time in which a refusing guard would have closed it
    assert odd.popen.poll() is None
    assert cluster.worker_addresses(1) == [odd_worker]
    scheduler_log = cluster.processes[0].log.read_text()
    assert _complaint(odd_worker, "keeping it (compat.guard: log)") in scheduler_log
