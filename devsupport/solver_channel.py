"""A local conda channel for solver tests: real `.tar.bz2` archives, indexed by rattler.

It holds every package the seed environments name, several versions of the ones that
matter, extension packages built per Python version, and two deliberate tensions:

- every `jupyterhub-singleuser` needs `tornado <6.4`, so the union solve picks tornado
  6.3.3 where a worker-only solve would pick 6.4.1;
- `wasserstein` (which ml's `energyflow` needs) caps `numpy <1.25` here, so the ml
  environment must back off numpy 2.0.1, and asking for `numpy >=2` next to it is
  unsolvable.

The packages carry no payload: they are for solving and locking, not for running.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rattler.index import index_fs

PYTHONS = ("3.10", "3.11", "3.12")


@dataclass(frozen=True)
class Pkg:
    name: str
    version: str
    depends: tuple[str, ...] = ()
    compiled: bool = False  # a linux-64 build per Python version, else noarch


def _versions(name: str, versions: str, *depends: str, compiled: bool = False) -> list[Pkg]:
    return [Pkg(name, v, tuple(depends), compiled) for v in versions.split()]


PACKAGES: list[Pkg] = [
    *_versions(
        "dask-core",
        "2024.1.0 2024.8.0",
        "click",
        "cloudpickle",
        "fsspec",
        "packaging",
        "partd",
        "pyyaml",
        "toolz >=0.10",
        "importlib-metadata",
    ),
    Pkg("dask", "2024.1.0", ("dask-core ==2024.1.0", "distributed ==2024.1.0", "numpy", "pandas")),
    Pkg("dask", "2024.8.0", ("dask-core ==2024.8.0", "distributed ==2024.8.0", "numpy", "pandas")),
    *[
        Pkg(
            "distributed",
            v,
            (
                f"dask-core =={v}",
                "click",
                "cloudpickle",
                "jinja2",
                "locket",
                "msgpack-python",
                "packaging",
                "psutil",
                "pyyaml",
                "sortedcontainers",
                "tblib",
                "toolz >=0.10",
                "tornado >=6.0.4",
                "urllib3",
                "zict",
            ),
        )
        for v in ("2024.1.0", "2024.8.0")
    ],
    *_versions(
        "dask-gateway",
        "2023.9.0 2024.1.0",
        "aiohttp",
        "click",
        "dask >=2022",
        "distributed",
        "pyyaml",
        "tornado",
    ),
    *_versions("msgpack-python", "1.0.5 1.0.7", compiled=True),
    *_versions("cloudpickle", "2.2.1 3.0.0"),
    *_versions("tornado", "6.3.3 6.4.1", compiled=True),
    *_versions("toolz", "0.11.2 0.12.1"),
    *_versions("lz4", "4.3.2 4.3.3", "lz4-c", compiled=True),
    *_versions("numpy", "1.24.4 1.26.4 2.0.1", "libblas", compiled=True),
    *_versions(
        "pandas",
        "2.0.3 2.2.2",
        "numpy >=1.22.4",
        "python-dateutil",
        "pytz",
        "tzdata",
        compiled=True,
    ),
    *_versions(
        "jupyterlab",
        "4.0.11 4.2.5",
        "jupyter_server >=2.4",
        "ipykernel",
        "jinja2",
        "tornado >=6.2",
        "packaging",
        "traitlets",
    ),
    *_versions(
        "jupyterhub-singleuser",
        "4.1.5 5.1.0",
        "jupyterhub-base",
        "jupyter_server",
        "tornado >=5.1,<6.4",
    ),
    *_versions(
        "ipykernel",
        "6.28.0 6.29.5",
        "ipython",
        "traitlets",
        "tornado >=6.1",
        "jupyter_client",
        "pyzmq",
        "psutil",
    ),
    *_versions(
        "ipywidgets",
        "8.1.2 8.1.5",
        "ipython",
        "traitlets",
        "widgetsnbextension",
        "jupyterlab_widgets",
    ),
    *_versions(
        "dask-labextension", "7.0.0", "jupyterlab >=4", "distributed", "jupyter-server-proxy"
    ),
    *_versions(
        "coffea",
        "2024.4.1 2024.8.3",
        "awkward >=2",
        "uproot >=5",
        "dask-awkward",
        "numba",
        "numpy",
        "lz4",
        "cloudpickle",
        "toolz",
        "pyarrow",
    ),
    *_versions("uproot", "5.3.10 5.4.1", "awkward >=2", "numpy", "fsspec", "packaging"),
    *_versions("awkward", "2.6.7 2.6.8", "awkward-cpp", "numpy >=1.18", "packaging", "fsspec"),
    *_versions("awkward-cpp", "35 37", "numpy >=1.18", compiled=True),
    *_versions("dask-awkward", "2024.7.0", "awkward >=2", "dask-core"),
    *_versions("numba", "0.59.1 0.60.0", "llvmlite", "numpy >=1.22,<2.1", compiled=True),
    *_versions("h5py", "3.10.0 3.11.0", "hdf5", "numpy", compiled=True),
    *_versions("pyarrow", "16.1.0 17.0.0", "libarrow", "numpy >=1.16.6", compiled=True),
    *_versions(
        "aiohttp",
        "3.9.5 3.10.5",
        "multidict",
        "yarl",
        "attrs",
        "frozenlist",
        "aiosignal",
        compiled=True,
    ),
    *_versions("python-graphviz", "0.20.3", "graphviz"),
    *_versions("mimesis", "11.1.0 17.0.0"),
    *_versions("root", "6.30.4 6.32.2", "numpy", "libstdcxx-ng", compiled=True),
    *_versions("keras", "2.15.0 3.4.1", "numpy", "h5py", "absl-py", "rich"),
    *_versions("flatbuffers", "23.5.26 24.3.25"),
    *_versions("joblib", "1.3.2 1.4.2"),
    *_versions("pillow", "10.3.0 10.4.0", "libjpeg-turbo", compiled=True),
    *_versions("pytz", "2024.1"),
    *_versions(
        "scikit-learn", "1.4.2 1.5.1", "numpy", "scipy", "joblib", "threadpoolctl", compiled=True
    ),
    *_versions("scipy", "1.13.1 1.14.0", "numpy >=1.23.5", "libblas", compiled=True),
    *_versions("energyflow", "1.3.2", "numpy", "h5py", "six", "wasserstein"),
    *_versions("wasserstein", "1.1.0", "numpy <1.25", compiled=True),
    *_versions("jax", "0.4.30", "jaxlib", "numpy >=1.22", "ml_dtypes", "scipy"),
    *_versions("jaxlib", "0.4.30", "numpy >=1.22", "ml_dtypes", "scipy", compiled=True),
    *_versions("dask-histogram", "2024.3.0", "boost-histogram", "dask-core"),
]

# Only python itself is arch-specific among the leaves.
PYTHON_DEPENDS = {"libzlib", "openssl"}
PYTHON_BUILDS = {"3.10": "3.10.14", "3.11": "3.11.7", "3.12": "3.12.4"}


def _archive(path: Path, index: dict) -> None:
    files = {
        "info/index.json": json.dumps(index, sort_keys=True),
        "info/paths.json": json.dumps({"paths": [], "paths_version": 1}),
        "info/files": "",
    }
    with tarfile.open(path, "w:bz2") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


def _index(name: str, version: str, build: str, subdir: str, depends: list[str]) -> dict:
    index = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": depends,
        "subdir": subdir,
        "license": "BSD-3-Clause",
        "timestamp": 1700000000000,
    }
    if subdir == "noarch":
        index["noarch"] = "python"
    return index


def write_package(
    dest: Path, subdir: str, name: str, version: str, build: str, depends: list[str]
) -> None:
    """One package archive under `dest/subdir` (index the channel afterwards)."""
    (dest / subdir).mkdir(parents=True, exist_ok=True)
    index = _index(name, version, build, subdir, depends)
    _archive(dest / subdir / f"{name}-{version}-{build}.tar.bz2", index)


def _dep_name(spec: str) -> str:
    return spec.split(" ", 1)[0]


def build_channel(dest: Path, packages: list[Pkg] = PACKAGES) -> Path:
    """Write the archives under `dest` and index them; returns `dest`."""
    for subdir in ("linux-64", "noarch"):
        (dest / subdir).mkdir(parents=True, exist_ok=True)
    for minor, full in PYTHON_BUILDS.items():
        build = f"h0_{minor.replace('.', '')}_cpython"
        index = _index("python", full, build, "linux-64", sorted(PYTHON_DEPENDS))
        _archive(dest / "linux-64" / f"python-{full}-{build}.tar.bz2", index)
    defined = {p.name for p in packages} | {"python"}
    needed = {_dep_name(d) for p in packages for d in p.depends} | PYTHON_DEPENDS
    leaves = needed - defined
    for leaf in sorted(leaves):  # a single plain version of everything else
        _archive(
            dest / "noarch" / f"{leaf}-3.0.0-0.tar.bz2", _index(leaf, "3.0.0", "0", "noarch", [])
        )
    for pkg in packages:
        if pkg.compiled:
            for minor in PYTHONS:
                tag = minor.replace(".", "")
                build = f"py{tag}_0"
                depends = [*pkg.depends, f"python >={minor},<{minor}.999"]
                index = _index(pkg.name, pkg.version, build, "linux-64", depends)
                _archive(dest / "linux-64" / f"{pkg.name}-{pkg.version}-{build}.tar.bz2", index)
        else:
            index = _index(
                pkg.name, pkg.version, "pyhd8ed1ab_0", "noarch", [*pkg.depends, "python >=3.9"]
            )
            _archive(dest / "noarch" / f"{pkg.name}-{pkg.version}-pyhd8ed1ab_0.tar.bz2", index)
    asyncio.run(index_fs(dest))
    return dest


if __name__ == "__main__":
    import sys

    print(build_channel(Path(sys.argv[1])).resolve().as_uri())
