"""A real analysis on each seed pair, computed on the workers and checked against the same
computation in the client alone (see scripts/ and conftest.py).

`make check` (CI) runs physlite's; `make analyses` runs all three: pyhep's and ml's pairs
are built and tested by the nightly test too, and their analyses would add a quarter to
the suite's time."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildtool.standin import StandIn
from tests.analyses.conftest import build_and_test_pair, run_analysis


def _analyse(name: str, standin: StandIn, data: Path, work: Path) -> dict:
    pair = build_and_test_pair(name, standin, work)
    result = run_analysis(pair, f"{name}.py", data)
    assert result["same"], result
    assert result["workers"], "no task ran on a worker"
    return result["distributed"]


def test_physlite_coffea_physliteschema(standin: StandIn, data_dir: Path, tmp_path: Path) -> None:
    result = _analyse("physlite", standin, data_dir, tmp_path)
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
