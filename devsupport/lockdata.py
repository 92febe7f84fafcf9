"""The compat tests' fixture lockfiles (tests/compat/data), and environments laid out from them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from compat.names import from_conda
from compat.sources import record_from_url
from compat.vocabulary import categories
from devsupport import REPO

DATA = REPO / "tests" / "compat" / "data"
#: notebook (main + notebook categories) and worker (main) images from one solve
MATCHED = DATA / "matched.conda-lock.yml"
#: a later solve whose worker image drifted from MATCHED
DRIFTED = DATA / "drifted.conda-lock.yml"
SITE_PACKAGES = "lib/python3.11/site-packages"


def _dist_info(prefix: Path, name: str, version: str, installer: str) -> None:
    folder = prefix / SITE_PACKAGES / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)  # the dask metapackage and dask-core
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (folder / "INSTALLER").write_text(f"{installer}\n")


def write_prefix(lockfile: Path, prefix: Path, image: str) -> Path:
    """Lay out what installing ``image`` from ``lockfile`` (linux-64) leaves in ``prefix``.

    Each conda package gets its ``conda-meta`` record (and, for Python packages,
    the ``*.dist-info`` conda installs); each pip package only its ``*.dist-info``.
    """
    (prefix / "conda-meta").mkdir(parents=True)
    for entry in yaml.safe_load(lockfile.read_text())["package"]:
        if entry["platform"] != "linux-64" or entry["category"] not in categories(image):
            continue
        if entry["manager"] == "pip":
            _dist_info(prefix, entry["name"], entry["version"], "pip")
            continue
        parsed = record_from_url(entry["url"])
        assert parsed is not None, entry["url"]
        name, version, build = parsed
        record = {"name": name, "version": version, "build": build, "depends": []}
        (prefix / "conda-meta" / f"{name}-{version}-{build}.json").write_text(json.dumps(record))
        if build.startswith(("py", "pyh")) and name != "python":
            _dist_info(prefix, from_conda(name), version, "conda")
    return prefix
