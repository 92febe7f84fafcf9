"""Package names: one spelling for PyPI distributions and conda packages.

A live cluster reports Python distributions (PyPI names) while a lockfile or an
image's ``conda-meta`` reports conda package names. Both are normalised the
PEP 503 way (lowercase, runs of ``-``, ``_`` and ``.`` become ``-``) and the
few conda packages whose name differs from the distribution they ship are
mapped to the PyPI name.
"""

from __future__ import annotations

import re

#: conda package name -> name of the Python distribution it installs.
CONDA_TO_PYPI: dict[str, str] = {
    "dask-core": "dask",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "python-graphviz": "graphviz",
    "python-kubernetes": "kubernetes",
    "pytables": "tables",
    "pytorch": "torch",
}

_SEPARATORS = re.compile(r"[-_.]+")


def normalize(name: str) -> str:
    """PEP 503 normal form of a distribution or package name."""
    return _SEPARATORS.sub("-", name).lower()


def from_conda(name: str) -> str:
    """Canonical name for a conda package name."""
    name = normalize(name)
    return CONDA_TO_PYPI.get(name, name)
