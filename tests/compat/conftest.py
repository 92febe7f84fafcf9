"""Fixtures for the compat tests: separate virtual environments and real Dask
clusters on 127.0.0.1 (see devsupport/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport import cluster as dask_cluster
from devsupport.cluster import MIXED_WORKERS, Cluster, MixedCluster, Venv
from devsupport.servers import free_port


@pytest.fixture(scope="session")
def client_venv() -> Venv:
    return dask_cluster.ensure_venv(dask_cluster.CLIENT_REQUIREMENTS)


@pytest.fixture(scope="session")
def worker_venv() -> Venv:
    return dask_cluster.ensure_venv(dask_cluster.WORKER_REQUIREMENTS)


@pytest.fixture(scope="session")
def odd_worker_venv() -> Venv:
    return dask_cluster.ensure_venv(dask_cluster.ODD_WORKER_REQUIREMENTS)


@pytest.fixture(scope="session")
def checker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PYTHONPATH that makes ``python -m compat`` importable in any venv."""
    return dask_cluster.checker_path(tmp_path_factory.mktemp("checker"))


@pytest.fixture
def start_cluster(client_venv: Venv, tmp_path: Path) -> Iterator[dask_cluster.StartCluster]:
    """Start schedulers (from the client venv) that are stopped after the test."""
    started: list[Cluster] = []

    def start(scheduler_env: dict[str, str] | None = None) -> Cluster:
        cluster = dask_cluster.start_cluster(
            client_venv, tmp_path / f"cluster-{len(started)}", scheduler_env
        )
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="module")
def mixed_cluster(
    client_venv: Venv,
    worker_venv: Venv,
    odd_worker_venv: Venv,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MixedCluster]:
    cluster = dask_cluster.start_cluster(client_venv, tmp_path_factory.mktemp("mixed"))
    try:
        cluster.add_workers(worker_venv, MIXED_WORKERS - 1)
        odd_port = free_port()
        cluster.add_workers(odd_worker_venv, 1, port=odd_port)
        workers = cluster.worker_addresses(MIXED_WORKERS)
        odd_worker = f"tcp://127.0.0.1:{odd_port}"
        assert odd_worker in workers
        yield MixedCluster(cluster, odd_worker, workers)
    finally:
        cluster.stop()
