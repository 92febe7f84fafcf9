"""The client check reads distributed's own mismatch table: the tables here are made by
`distributed.versions.error_message`, as a scheduler makes them for a connecting client.
The real clients and clusters are in tests/compat/test_plugin.py and tests/test_e2e.py."""

from __future__ import annotations

import copy
from typing import Any

from distributed.versions import error_message, get_versions

from compat.versiontable import explain, mismatches

HERE = get_versions()


def _with(**packages: str | None) -> dict[str, Any]:
    versions = copy.deepcopy(HERE)
    versions["packages"].update({k.replace("_", "-"): v for k, v in packages.items()})
    return versions


def _table(client: dict, scheduler: dict, *workers: dict) -> str:
    table = error_message(scheduler, {f"w{i}": w for i, w in enumerate(workers)}, client)
    return table["warning"]


def test_a_required_package_that_differs_is_an_error_with_its_fix() -> None:
    cluster = _with(toolz="1.2.0", numpy="2.4.6", pandas="3.1.1", lz4="4.4.5")
    client = _with(toolz="0.12.1", numpy=None, pandas=None, lz4=None)
    found = mismatches(_table(client, cluster, cluster, cluster))
    # numpy, pandas and lz4 missing here are distributed's warnings, not errors.
    assert found == [("toolz", "0.12.1", "1.2.0")]
    text = explain(found)
    assert "toolz 0.12.1 here, 1.2.0 on the cluster" in text
    assert "Fix: pip install toolz==1.2.0." in text


def test_python_and_packages_together_give_one_line() -> None:
    cluster = _with(dask="2025.3.1", distributed="2025.3.1", python="3.11.2.final.0")
    client = _with(dask="2026.8.0", distributed="2026.8.0", python="3.11.7.final.0")
    found = mismatches(_table(client, cluster, cluster))
    assert found == [
        ("dask", "2026.8.0", "2025.3.1"),
        ("distributed", "2026.8.0", "2025.3.1"),
        ("python", "3.11.7", "3.11.2"),
    ]
    text = explain(found)
    assert "\n" not in text
    assert "Fix: use a Python 3.11.2 environment and pip install dask==2025.3.1 " in text
    assert "distributed==2025.3.1." in text


def test_an_optional_package_on_both_sides_that_differs_is_an_error() -> None:
    cluster, client = _with(numpy="2.4.6"), _with(numpy="1.26.4")
    assert mismatches(_table(client, cluster, cluster)) == [("numpy", "1.26.4", "2.4.6")]


def test_workers_that_differ_among_themselves_are_an_error() -> None:
    odd = _with(cloudpickle="3.0.0")
    found = mismatches(_table(HERE, HERE, HERE, odd))
    assert [package for package, _, _ in found] == ["cloudpickle"]


def test_only_optional_packages_missing_here_is_no_error() -> None:
    cluster = _with(numpy="2.4.6", pandas="3.1.1")
    client = _with(numpy=None, pandas=None)
    table = _table(client, cluster, cluster)
    assert "numpy" in table  # distributed warns
    assert mismatches(table) == []
