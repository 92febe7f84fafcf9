"""The fixture lockfiles in tests/compat/data, and conda-meta records made from them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from compat.sources import record_from_url

DATA = Path(__file__).parent / "data"
#: notebook (main + notebook categories) and worker (main) images from one solve
MATCHED = DATA / "matched.conda-lock.yml"
#: a later solve whose worker image drifted from MATCHED
DRIFTED = DATA / "drifted.conda-lock.yml"


def write_conda_meta(lockfile: Path, prefix: Path) -> Path:
    """Write ``prefix/conda-meta/*.json`` for the linux-64 worker image of ``lockfile``."""
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True)
    for entry in yaml.safe_load(lockfile.read_text())["package"]:
        parsed = record_from_url(entry["url"])
        if entry["platform"] == "linux-64" and entry["category"] == "main" and parsed:
            name, version, build = parsed
            record = {"name": name, "version": version, "build": build, "depends": []}
            (meta / f"{name}-{version}-{build}.json").write_text(json.dumps(record, indent=2))
    return prefix
