"""A real Dask cluster from the stand-in channel's `dask scheduler` and `dask worker` CLIs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devsupport.installed import InstalledEnv

CLIENT = """
import sys
from distributed import Client
with Client(scheduler_file=sys.argv[1], timeout=30) as client:
    client.wait_for_workers(1, timeout=30)
    print(client.submit(sum, range(101)).result(timeout=30))
"""


@contextmanager
def started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(path: Path, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.dask
def test_scheduler_and_worker_clis_compute(installed_env: InstalledEnv, tmp_path: Path) -> None:
    dask = str(installed_env.prefix / "bin" / "dask")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_log, worker_log = tmp_path / "scheduler.log", tmp_path / "worker.log"
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    worker = [dask, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1"]
    worker += ["--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
    with started([*scheduler, "--scheduler-file", str(scheduler_file)], scheduler_log) as proc:
        wait_for(scheduler_file, proc, scheduler_log, 60)
        with started(worker, worker_log):
            result = subprocess.run(
                [str(installed_env.python), "-c", CLIENT, str(scheduler_file)],
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert result.returncode == 0, f"{result.stderr}\n--- worker\n{worker_log.read_text()[-3000:]}"
    assert result.stdout.strip() == "5050"
