"""The daskhub chart's own consumers of generated Helm values, run without a cluster:

- the dask-gateway server's option handling, configured from the values the way the chart
  configures it (`gateway_backend`, `cluster_config`, `gateway_image`);
- KubeSpawner's expansion of a profile into the user's pod: its image and environment
  (`spawn`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.models import User
from traitlets.config import PyFileConfigLoader

#: The notebook pod's variable that gives dask-gateway's client its `image` cluster option.
IMAGE_ENV = "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"


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


def gateway_image(backend: KubeBackend, request: dict[str, str]) -> str:
    """The worker image the gateway starts for a user's option request."""
    return cluster_config(backend, request).image


SPAWN = """
import asyncio, json, sys
from kubespawner import KubeSpawner
from traitlets.config import Config

async def pod(config, slug):
    spawner = KubeSpawner(config=config, _mock=True)
    spawner.user_options = {"profile": slug}
    await spawner.load_user_options()
    return spawner.image, spawner.get_env()

config = Config()
config.KubeSpawner.profile_list = json.loads(sys.argv[1])
print(json.dumps({slug: asyncio.run(pod(config, slug)) for slug in sys.argv[2:]}))
"""


def spawn(profile_list: list[dict], work: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Per profile, the image and environment that KubeSpawner gives the user's pod (`work`:
    a folder for its kube config).

    KubeSpawner loads a kube config when it is made (it never connects here), from
    KUBECONFIG, which kubernetes_asyncio reads on import: hence a process of its own."""
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    slugs = [profile["slug"] for profile in profile_list]
    result = subprocess.run(
        [sys.executable, "-c", SPAWN, json.dumps(profile_list), *slugs],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return {slug: (image, env) for slug, (image, env) in json.loads(result.stdout).items()}
