"""Live-check wall time against 10, 50 and 100 real workers on 127.0.0.1.

    python -m bench.compat [--workers 10 50 100] [--repeat 3]

For each size it starts a scheduler and that many workers (real processes,
``dask worker --nworkers``, from the test venvs of devsupport/cluster.py),
then measures, in the client venv:

* ``daskhub-compat live`` end to end, as a user runs it (new interpreter,
  connection, full package set of every worker, report);
* :func:`compat.live.collect` inside a running interpreter;
* the baseline, distributed's own ``client.get_versions()`` on the same
  cluster (a fixed list of packages, one broadcast, no per-worker deadline),
  with a fresh ``Client`` connection as ``collect`` makes one, and alone on a
  connected client.

Times are medians over ``--repeat`` runs. Every process is stopped at the end,
also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devsupport import cluster as dask_cluster

#: Runs in the client venv: prints the times, in seconds, of each kind of run.
IN_PROCESS = """
import json, sys, time
from distributed import Client
from compat import live
address, repeat, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = {"collect": [], "connect_get_versions": [], "get_versions": []}
for _ in range(repeat):
    started = time.perf_counter()
    snapshot = live.collect(live.Target(address=address))
    times["collect"].append(time.perf_counter() - started)
    assert len(snapshot.workers) == expected, len(snapshot.workers)
    started = time.perf_counter()
    with Client(address) as client:
        versions = client.get_versions()
        times["connect_get_versions"].append(time.perf_counter() - started)
        started = time.perf_counter()
        versions = client.get_versions()
        times["get_versions"].append(time.perf_counter() - started)
    assert len(versions["workers"]) == expected, len(versions["workers"])
print(json.dumps(times))
"""


@dataclass(frozen=True)
class Row:
    workers: int
    startup_s: float
    cli_s: float
    collect_s: float
    connect_get_versions_s: float
    get_versions_s: float


def measure(size: int, repeat: int, logs: Path) -> Row:
    client_venv = dask_cluster.ensure_venv(dask_cluster.CLIENT_REQUIREMENTS)
    worker_venv = dask_cluster.ensure_venv(dask_cluster.WORKER_REQUIREMENTS)
    path = dask_cluster.checker_path(logs / "checker")
    started = time.perf_counter()
    cluster = dask_cluster.start_cluster(client_venv, logs / f"cluster-{size}")
    try:
        cluster.add_workers(worker_venv, size)
        cluster.worker_addresses(size)
        startup = time.perf_counter() - started
        cli_times = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = dask_cluster.run_checker(client_venv, path, "live", cluster.address)
            cli_times.append(time.perf_counter() - started)
            if f"{size} workers checked" not in result.stdout:
                raise RuntimeError(f"check failed: {result.stdout}{result.stderr}")
        result = subprocess.run(
            [str(client_venv.python), "-c", IN_PROCESS, cluster.address, str(repeat), str(size)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            cwd=path,
            env={"PYTHONPATH": str(path)},
        )
        times = json.loads(result.stdout)
    finally:
        cluster.stop()
    return Row(
        workers=size,
        startup_s=startup,
        cli_s=statistics.median(cli_times),
        collect_s=statistics.median(times["collect"]),
        connect_get_versions_s=statistics.median(times["connect_get_versions"]),
        get_versions_s=statistics.median(times["get_versions"]),
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| workers | cluster start | `daskhub-compat live` (CLI) | `live.collect` | "
        "`Client()` + `get_versions()` | `get_versions()` alone |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.workers} | {row.startup_s:.1f} s | {row.cli_s:.2f} s | "
            f"{row.collect_s:.2f} s | {row.connect_get_versions_s:.2f} s | "
            f"{row.get_versions_s:.3f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compat-") as scratch:
        rows = [measure(size, args.repeat, Path(scratch)) for size in args.workers]
    print(table(rows))


if __name__ == "__main__":
    main()
