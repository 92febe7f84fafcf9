"""A real analysis on each seed pair, computed on the workers and checked against the same
computation in the client alone (see scripts/ and devsupport/analyses.py).

`make check` (CI) runs physlite's; `make analyses` runs all three: pyhep's and ml's pairs
are built and tested by the nightly test too, and their analyses would add a quarter to
the suite's time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from buildtool.image import full_client_text, package_cache
from buildtool.lock import FULL_REQUIREMENTS_FILE, REQUIREMENTS_FILE, client_files, read_lock
from devsupport import clients
from devsupport import cluster as dask_cluster
from devsupport.analyses import SCRIPTS, build_and_test_pair, run_analysis
from devsupport.dockercli import docker
from devsupport.standin import StandIn


def _analyse(
    name: str,
    standin: StandIn,
    data: Path,
    work: Path,
    then: Callable[[str, str], None] | None = None,
) -> dict:
    pair = build_and_test_pair(name, standin, work)
    result = run_analysis(pair, f"{name}.py", data, then)
    assert result["same"], result
    assert result["workers"], "no task ran on a worker"
    return result["distributed"]


def _physlite_version_checks(work: Path, data: Path, address: str, scheduler: str) -> None:
    """On the physlite cluster, after its analysis: a laptop venv made by pip from physlite's
    client requirements computes on it; a laptop made from its full pins runs the whole
    coffea analysis, its graph built on the laptop; a venv with e2e's versions
    (distributed 2026.8.0, physlite's is 2025.3.1) fails `daskhub-compat preflight physlite`
    before any cluster, and as a worker is closed by the guard, which names the
    packages."""
    root = work / "environments"
    lock_path = root / "physlite" / "conda-lock.yml"
    requirements = client_files("physlite", read_lock(lock_path), lock_path)[REQUIREMENTS_FILE]
    assert "distributed==2025.3.1" in requirements.splitlines()
    clients.run_laptop(clients.laptop(requirements), address, work)

    # The whole analysis stack: every distribution of the worker set at the workers'
    # version, named by each package's own metadata, installed by real pip from PyPI.
    full = full_client_text("physlite", lock_path, package_cache())
    pins = [line for line in full.splitlines() if line and not line.startswith("#")]
    for name in ("awkward", "dask-awkward", "uproot", "coffea", "msgpack", "distributed"):
        assert any(pin.startswith(f"{name}==") for pin in pins), name
    assert "# Not pinned:" in full and "python" in full.split("# Not pinned:")[1]
    laptop = clients.laptop(full)
    ran = clients.run_script(laptop, SCRIPTS / "physlite.py", address, {"ANALYSIS_DATA": str(data)})
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["same"] and result["workers"], result
    assert result["distributed"]["events"] == 100

    # The full pins' preflight passes in that laptop; with another awkward (a dist-info
    # first on the path, as a laptop whose awkward is not the workers'), it fails with
    # that one row and the one pip command that fixes it.
    client_folder = work / "build" / "physlite" / "client"
    client_folder.mkdir(parents=True, exist_ok=True)
    (client_folder / FULL_REQUIREMENTS_FILE).write_text(full)
    checker = dask_cluster.checker_path(work / "checker")
    full_check = ("preflight", "physlite", "--full", "--build-dir", str(work / "build"))
    passed = dask_cluster.run_checker(laptop, checker, *full_check)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    awkward = next(pin.split("==")[1] for pin in pins if pin.startswith("awkward=="))
    shadow = work / "shadow" / "awkward-2.0.0.dist-info"
    shadow.mkdir(parents=True)
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: awkward\nVersion: 2.0.0\n")
    failed = dask_cluster.run_checker(
        laptop, checker, *full_check, env={"PYTHONPATH": f"{shadow.parent}:{checker}"}
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    rows = [line.split()[:4] for line in failed.stdout.splitlines() if line.startswith("error")]
    assert rows == [["error", "awkward", "2.0.0", awkward]], failed.stdout
    assert failed.stdout.splitlines()[-1] == f"fix: pip install awkward=={awkward}"

    other = dask_cluster.ensure_venv(dask_cluster.CLIENT_REQUIREMENTS)
    checker = dask_cluster.checker_path(work / "checker")
    preflight = dask_cluster.run_checker(
        other, checker, "preflight", "physlite", "--root", str(root)
    )
    assert preflight.returncode == 1, preflight.stdout + preflight.stderr
    rows = [line.split()[:4] for line in preflight.stdout.splitlines() if line.startswith("error")]
    assert ["error", "distributed", dask_cluster.DASK_VERSION, "2025.3.1"] in rows
    assert "distributed==2025.3.1" in preflight.stdout.splitlines()[-1]

    # No Client(...) from it here: distributed 2026.8's client cannot even finish the
    # handshake with a 2025.3 scheduler (`Scheduler.identity() got an unexpected keyword
    # argument 'n_workers'`), before any version comparison; preflight names it first.
    # The client check's own error is tested where the handshake works (tests/test_e2e.py).

    worker = clients.refused_worker(other, address, work)
    log = docker("logs", scheduler)
    said = log.stdout.decode() + log.stderr.decode()
    assert f"worker {worker} has package versions that differ from the scheduler's: " in said
    assert f"distributed {dask_cluster.DASK_VERSION} (scheduler 2025.3.1)" in said


def test_physlite_coffea_physliteschema(standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    def version_checks(address: str, scheduler: str) -> None:
        _physlite_version_checks(tmp_path, data_dir, address, scheduler)

    result = _analyse("physlite", standin, data_dir, tmp_path, version_checks)
    assert result["events"] == 100  # the sample's size (../shared/data/README.md)
    assert result["jets"] > 0 and result["photons"] > 0 and result["taus"] > 0


@pytest.mark.beyond_ci
def test_pyhep_coffea_nanoaod(standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    result = _analyse("pyhep", standin, data_dir, tmp_path)
    assert result["events"] == 40
    assert result["z_candidates"] > 0


@pytest.mark.beyond_ci
def test_ml_root_sklearn_keras(standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    result = _analyse("ml", standin, data_dir, tmp_path)
    assert result["jets"] == 188  # every jet of the 40 events, read by ROOT
    assert 0.5 < result["accuracy"] <= 1.0
    assert result["keras_loss_last"] < result["keras_loss_first"]  # it learned


pytestmark = pytest.mark.docker
