"""``--gateway-cluster`` against a real dask-gateway server and cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import ensure_venv, run_checker
from devsupport.gateway import GATEWAY_REQUIREMENTS, GatewayServer, start_gateway

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    server = start_gateway(ensure_venv(GATEWAY_REQUIREMENTS), tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        server.stop()


def test_gateway_cluster_is_checked_through_the_gateway(
    gateway: GatewayServer, checker_path: Path
) -> None:
    name = gateway.new_cluster(workers=2)

    result = run_checker(
        gateway.venv,
        checker_path,
        "live",
        "--gateway-cluster",
        name,
        "--format",
        "json",
        env=gateway.client_env,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["subject"] == f"cluster {name}"
    assert report["workers_checked"] == 2
    assert report["mismatches"] == []


def test_unknown_gateway_cluster_exits_2(gateway: GatewayServer, checker_path: Path) -> None:
    result = run_checker(
        gateway.venv,
        checker_path,
        "live",
        "--gateway-cluster",
        "no-such-cluster",
        env=gateway.client_env,
    )

    assert result.returncode == 2
    assert result.stderr.startswith(
        "daskhub-compat: error: cannot connect to gateway cluster no-such-cluster: "
    )
