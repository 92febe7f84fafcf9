"""The dask-gateway server's own option handling, configured from generated Helm values
the way the daskhub chart configures it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.models import User
from traitlets.config import PyFileConfigLoader


def gateway_backend(values: dict, folder: Path) -> KubeBackend:
    """The gateway's backend: extraConfig pasted into `dask_gateway_config.py`, loaded by
    traitlets with `c` in scope, as the chart does."""
    snippet = values["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dask_gateway_config.py").write_text(snippet)
    config = PyFileConfigLoader("dask_gateway_config.py", path=str(folder)).load_config()
    return KubeBackend(config=config)


def cluster_config(backend: KubeBackend, request: dict[str, str], user: str = "alice") -> Any:
    """The cluster config the gateway makes from a user's option request."""
    _, config = asyncio.run(backend.process_cluster_options(User(user), request))
    return config
