"""The runtime guard, loaded into a real scheduler as its docstring says."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from devsupport.cluster import (
    ODD_TOOLZ_VERSION,
    StartCluster,
    Venv,
    run_checker,
)
from devsupport.servers import free_port

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


CONNECT = """\
import sys
from distributed import Client
with Client(sys.argv[1], timeout=60) as client:
    print("connected", client.submit(sum, [1, 2]).result())
"""


def _connect(
    venv: Venv, address: str, checker_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """A client from `venv` with the client check preloaded, as the images preload it."""
    return subprocess.run(
        [str(venv.python), "-c", CONNECT, address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=checker_path,
        env={
            **os.environ,
            "PYTHONPATH": str(checker_path),
            "DASK_DISTRIBUTED__CLIENT__PRELOAD": "compat.clientcheck",
            **env,
        },
    )


def test_the_client_check_fails_a_mismatched_client_at_client(
    start_cluster: StartCluster, client_venv: Venv, odd_worker_venv: Venv, checker_path: Path
) -> None:
    cluster = start_cluster()
    cluster.add_workers(client_venv, 1)
    cluster.worker_addresses(1)

    odd = _connect(odd_worker_venv, cluster.address, checker_path)
    assert odd.returncode == 1 and "connected" not in odd.stdout
    assert odd.stderr.splitlines()[-1] == (
        "compat.clientcheck.ClientVersionError: this Dask client's versions differ from the "
        f"cluster's: toolz {ODD_TOOLZ_VERSION} here, 1.2.0 on the cluster. Fix: pip install "
        "toolz==1.2.0. (compat.client: error; DASK_COMPAT__CLIENT=off turns this into "
        "distributed's warning)"
    )
    # Off: distributed's warning, as without the preload.
    off = _connect(odd_worker_venv, cluster.address, checker_path, DASK_COMPAT__CLIENT="off")
    assert off.returncode == 0 and "connected 3" in off.stdout, off.stderr
    assert "VersionMismatchWarning" in off.stderr and "ClientVersionError" not in off.stderr
    # A matching client (lz4 here, not on the workers: distributed warns, no error).
    matched = _connect(client_venv, cluster.address, checker_path)
    assert matched.returncode == 0 and "connected 3" in matched.stdout, matched.stderr
    assert "ClientVersionError" not in matched.stderr
