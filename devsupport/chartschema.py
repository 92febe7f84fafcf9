"""The daskhub chart's subcharts check their values as `helm install` does: each
subchart's defaults, overlaid with the values under its key as Helm merges them, must
validate against that subchart's own `values.schema` (JSON Schema).

The schemas and defaults are the real charts' files, unchanged, in `../shared/charts`
beside the checkout (or `DASKHUB_SHARED_CHARTS`): z2jh 4.4.0 and dask-gateway 2026.3.0,
the versions the daskhub chart pins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from devsupport import REPO

CHARTS = Path(os.environ.get("DASKHUB_SHARED_CHARTS", REPO.parent / "shared" / "charts"))
#: The daskhub chart's key of each subchart, and the stem of its files.
SUBCHARTS = {"jupyterhub": "jupyterhub-4.4.0", "dask-gateway": "dask-gateway-2026.3.0"}


def helm_merge(defaults: Any, given: Any) -> Any:
    """What Helm makes of a chart's defaults and given values: maps merge key by key, any
    other value (lists included) replaces the default, and null deletes a default key."""
    if not isinstance(defaults, dict) or not isinstance(given, dict):
        return given
    merged = dict(defaults)
    for key, value in given.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


def _load(name: str) -> Any:
    path = CHARTS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the charts' files are not there (../shared/charts)")
    return yaml.safe_load(path.read_text())


def validate_values(values: dict[str, Any]) -> None:
    """Raise jsonschema's ValidationError unless each subchart takes its part of the
    daskhub values, merged with its defaults."""
    for key, stem in SUBCHARTS.items():
        merged = helm_merge(_load(f"{stem}.values.yaml"), values.get(key, {}))
        jsonschema.validate(merged, _load(f"{stem}.values.schema.yaml"))
