"""Shared by the analyses: run a computation on the cluster and in the client alone.

Each analysis script imports this (it is mounted beside them at /analysis), computes the
same result twice, once on the Dask workers and once in the client process with Dask's
synchronous scheduler, and prints one JSON line that the test reads.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import dask
from distributed import Client, get_task_stream

warnings.filterwarnings("ignore", category=UserWarning)

#: Where the samples are, for the client and the workers alike: /data in the containers,
#: the host's own folder for a laptop (the cluster's containers see it there too).
DATA = os.environ.get("ANALYSIS_DATA", "/data")


def on_cluster_and_alone(build):  # noqa: ANN001, ANN201
    """build() -> dict of dask collections; returns (on workers, in client, task stream)."""
    address = sys.argv[1]
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        with get_task_stream(client) as stream:
            distributed = dask.compute(build())[0]
        workers = sorted({task["worker"] for task in stream.data})
    local = dask.compute(build(), scheduler="sync")[0]
    return distributed, local, workers


def same(a: dict, b: dict, rel_tol: float) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(float(a[k]), float(b[k]), rel_tol=rel_tol, abs_tol=1e-12) for k in a
    )


def report(distributed: dict, local: dict, workers: list[str], rel_tol: float = 1e-9) -> None:
    """One JSON line: both results, the workers that ran tasks, and whether they agree."""
    result = {
        "distributed": {k: float(v) for k, v in distributed.items()},
        "local": {k: float(v) for k, v in local.items()},
        "workers": workers,
        "same": same(distributed, local, rel_tol),
    }
    print(json.dumps(result))
