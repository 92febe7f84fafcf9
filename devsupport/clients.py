"""Dask clients and workers from venvs on the host, against a cluster in containers: a
laptop made by pip from a pair's client requirements, and a client or worker whose
versions differ (the venvs of devsupport/cluster.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devsupport import cluster as dask_cluster
from devsupport.cluster import Venv
from devsupport.servers import free_port

LAPTOP = """\
import sys, warnings
from distributed import Client
warnings.simplefilter("error")  # a VersionMismatchWarning fails the laptop
with Client(sys.argv[1], timeout=60) as client:
    client.wait_for_workers(2, timeout=120)
    client.get_versions(check=True)
    assert client.submit(sum, range(10)).result() == 45
print("laptop ok")
"""
CONNECT = "import sys; from distributed import Client; Client(sys.argv[1], timeout=60)"


def laptop(requirements: str) -> Venv:
    """A venv made by real pip from PyPI with a client-requirements.txt's pins (cached)."""
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    return dask_cluster.ensure_venv(pins)


def run_laptop(venv: Venv, address: str, cwd: Path) -> None:
    """The laptop computes on the cluster, with distributed's own check on and no warning."""
    ran = subprocess.run(
        [str(venv.python), "-c", LAPTOP, address],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0 and "laptop ok" in ran.stdout, ran.stdout + ran.stderr


def run_script(
    venv: Venv, script: Path, address: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """An analysis script (tests/analyses/scripts) run by the laptop's Python against the
    cluster at `address`: the laptop builds the task graph, the workers compute it."""
    return subprocess.run(
        [str(venv.python), str(script), address],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def checked_client(venv: Venv, address: str, work: Path) -> subprocess.CompletedProcess[str]:
    """`Client(address)` from `venv` with the images' client check preloaded."""
    checker = dask_cluster.checker_path(work / "checker")
    return subprocess.run(
        [str(venv.python), "-c", CONNECT, address],
        cwd=checker,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": str(checker),
            "DASK_DISTRIBUTED__CLIENT__PRELOAD": "compat.clientcheck",
        },
    )


def refused_worker(venv: Venv, address: str, work: Path) -> str:
    """Start a worker from `venv`; it must exit (the scheduler's guard closes it). Returns
    its address."""
    port = free_port()
    worker = dask_cluster.spawn(
        [
            venv.python,
            "-m",
            "dask",
            "worker",
            address,
            "--host",
            "127.0.0.1",
            "--worker-port",
            str(port),
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        work / f"worker-{port}.log",
    )
    try:
        worker.popen.wait(timeout=120)  # the guard closes it: worker and nanny exit
    finally:
        worker.stop()
    return f"tcp://127.0.0.1:{port}"
