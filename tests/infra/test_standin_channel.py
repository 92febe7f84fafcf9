"""The conda-forge stand-in: laid out and served as conda-forge is, solvable, installable,
and what it installs runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import rattler

from buildtool.lock import solve_with_rattler
from devsupport.cache import file_sha256
from devsupport.installed import InstalledEnv
from devsupport.standin import StandIn
from devsupport.standin.channel import build_channel, channel_key


def run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=True
    )


def test_both_subdirs_are_indexed_with_hashes(real_channel: Path) -> None:
    for subdir in ("linux-64", "noarch"):
        repodata = json.loads((real_channel / subdir / "repodata.json").read_text())
        records = repodata["packages.conda"]
        archives = sorted(p.name for p in (real_channel / subdir).glob("*.conda"))
        assert sorted(records) == archives
        for filename, record in records.items():
            assert record["sha256"] == file_sha256(real_channel / subdir / filename)
            assert len(record["md5"]) == 32
            assert record["subdir"] == subdir


def test_channel_has_the_image_packages(real_channel: Path) -> None:
    linux = json.loads((real_channel / "linux-64" / "repodata.json").read_text())
    names = {r["name"] for r in linux["packages.conda"].values()}
    assert {"python", "pip", "dask", "distributed", "msgpack-python", "jupyterlab"} <= names
    noarch = json.loads((real_channel / "noarch" / "repodata.json").read_text())
    (singleuser,) = noarch["packages.conda"].values()
    assert singleuser["name"] == "jupyterhub-singleuser"
    assert singleuser["depends"][0].startswith("jupyterhub ==")


def test_second_build_reuses_the_cache(real_channel: Path) -> None:
    built = real_channel.parent.resolve()
    assert build_channel() == real_channel
    assert real_channel.parent.resolve() == built
    key = (real_channel.parent / ".channel-key").read_text().strip()
    assert built.name == channel_key() == key


def test_laid_out_and_named_as_conda_forge(real_channel: Path) -> None:
    assert real_channel.name == "conda-forge"
    linux = json.loads((real_channel / "linux-64" / "repodata.json").read_text())
    names = {r["name"] for r in linux["packages.conda"].values()}
    # conda-forge's names, not PyPI's
    assert {"msgpack-python", "python-graphviz", "root", "matplotlib-base"} <= names
    assert not {"msgpack", "graphviz", "matplotlib"} & names
    versions: dict[str, set[str]] = {}
    for record in linux["packages.conda"].values():
        versions.setdefault(record["name"], set()).add(record["version"])
    assert {"toolz", "pytz", "numpy"} <= {n for n, v in versions.items() if len(v) >= 2}


def test_served_over_http_as_conda_forge_is(standin: StandIn, real_channel: Path) -> None:
    assert standin.channel.startswith("http://127.0.0.1:") and standin.channel.endswith(
        "/conda-forge"
    )
    with urllib.request.urlopen(f"{standin.channel}/noarch/repodata.json", timeout=10) as r:
        assert json.load(r)["packages.conda"]
    solved = solve_with_rattler(["python 3.11.*", "toolz <1.2"], [standin.channel], "linux-64")
    toolz = next(p for p in solved if p.name == "toolz")
    assert toolz.version == "1.1.0" and toolz.url.startswith(standin.channel + "/linux-64/")
    with urllib.request.urlopen(toolz.url, timeout=10) as r:
        assert hashlib.sha256(r.read()).hexdigest() == toolz.sha256
    assert rattler.Channel(standin.channel).base_url.startswith("http://")


def test_solve_picks_the_relocated_python(installed_env: InstalledEnv) -> None:
    by_name = {r.name.normalized: r for r in installed_env.records}
    assert str(by_name["python"].version) == "3.11.7"
    assert str(by_name["python"].build) == "h0_local"
    assert {"dask", "distributed", "jupyterlab", "jupyterhub", "tornado"} <= by_name.keys()
    env = installed_env
    print(
        f"\nsolve {env.solve_seconds:.2f} s, install {env.install_seconds:.1f} s"
        f" ({len(env.records)} packages)",
        file=sys.stderr,
    )


def test_installed_python_is_3_11_7_in_its_prefix(installed_env: InstalledEnv) -> None:
    out = run(installed_env.python, "-c", "import sys; print(sys.version); print(sys.prefix)")
    version, prefix = out.stdout.splitlines()
    assert version.startswith("3.11.7 ")
    assert Path(prefix) == installed_env.prefix


def test_stdlib_extensions_and_packages_import(installed_env: InstalledEnv) -> None:
    modules = (
        "ssl, sqlite3, lzma, bz2, ctypes, zlib, readline, uuid, decimal, "
        "dask, distributed, dask_gateway, msgpack, cloudpickle, tornado, toolz, lz4, "
        "numpy, pandas, jupyterlab, ipykernel, ipywidgets, dask_labextension, jupyterhub"
    )
    run(installed_env.python, "-c", f"import {modules}")


def test_sysconfig_points_at_the_install_prefix(installed_env: InstalledEnv) -> None:
    out = run(installed_env.prefix / "bin" / "python3.11-config", "--prefix")
    assert Path(out.stdout.strip()) == installed_env.prefix
    code = "import sysconfig; print(sysconfig.get_config_var('prefix'))"
    assert Path(run(installed_env.python, "-c", code).stdout.strip()) == installed_env.prefix


def test_console_scripts_run(installed_env: InstalledEnv) -> None:
    bin_dir = installed_env.prefix / "bin"
    dask = next(r for r in installed_env.records if r.name.normalized == "dask")
    assert f"version {dask.version}" in run(bin_dir / "dask", "--version").stdout
    run(bin_dir / "dask", "scheduler", "--help")
    run(bin_dir / "dask", "worker", "--help")
    assert run(bin_dir / "jupyter", "lab", "--version").stdout.strip()
    run(bin_dir / "jupyterhub-singleuser", "--help")
    assert "pip" in run(bin_dir / "pip", "--version").stdout


def test_pip_sees_a_consistent_environment(installed_env: InstalledEnv) -> None:
    out = run(installed_env.python, "-m", "pip", "check")
    assert "No broken requirements" in out.stdout


def test_a_stand_in_that_cannot_be_made_fails_loudly(tmp_path: Path) -> None:
    """`make` stops at `python -m devsupport.standin up` instead of locking against nothing."""
    env = {**os.environ, "DASKHUB_CPYTHON": str(tmp_path / "no-python")}
    result = subprocess.run(
        [sys.executable, "-m", "devsupport.standin", "up"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"no CPython at {tmp_path / 'no-python'}" in result.stderr
    assert "STANDIN_CHANNEL" not in result.stdout
