"""The daskhub chart's own consumers of generated Helm values, run without a cluster:

- the dask-gateway server's option handling, configured from the values the way the chart
  configures it (`gateway_backend`, `cluster_config`, `gateway_image`), in this process;
- the real dask-gateway server, its config file the values' `extraConfig.optionHandler`
  verbatim after a preamble, and the deployment's own client code against it
  (`chart_gateway`, `ChartGateway.attempts`);
- KubeSpawner's expansion of a profile into the user's pod: its image, environment and
  pod manifest (`spawn`), and the hub's config loaded as the jupyterhub chart loads it,
  for any user and options (`hub_spawn`);
- the gateway's Kubernetes controller's worker pod for an option request (`worker_pod`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.models import User
from traitlets.config import PyFileConfigLoader

from devsupport.gateway import healthy
from devsupport.servers import free_port

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


def worker_pod(backend: KubeBackend, request: dict[str, str], user: str = "alice") -> dict:
    """The Dask worker pod the real KubeBackend's controller makes for a user's option
    request (its own `make_pod`, as it would send it to the API server)."""
    config = cluster_config(backend, request, user)
    controller = KubeController(gateway_instance="daskhub")  # the chart's instance name
    pod: dict = controller.make_pod("daskhub", "cluster", config, is_worker=True)
    return pod


def gateway_image(backend: KubeBackend, request: dict[str, str]) -> str:
    """The worker image the gateway starts for a user's option request."""
    return cluster_config(backend, request).image


SPAWN = """
import asyncio, json, sys, types
from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner
from traitlets.config import Config

jupyterhub, requests = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# As the jupyterhub chart's jupyterhub_config.py: singleuser.profileList, then each
# hub.extraConfig snippet in key order, run with `c` in scope.
c = Config()
c.KubeSpawner.profile_list = jupyterhub["singleuser"]["profileList"]
# hub.services, as the chart makes them JupyterHub's services (apiToken: api_token).
c.JupyterHub.services = []
for name, given in jupyterhub.get("hub", {}).get("services", {}).items():
    service = {"name": name, **{k: v for k, v in given.items() if k != "apiToken"}}
    if given.get("apiToken"):
        service["api_token"] = given["apiToken"]
    c.JupyterHub.services.append(service)
for _, snippet in sorted(jupyterhub.get("hub", {}).get("extraConfig", {}).items()):
    exec(snippet, {"c": c})

async def pod(user, options):
    named = {} if user is None else {"user": types.SimpleNamespace(name=user, id=1, url="/")}
    spawner = KubeSpawner(config=c, _mock=True, **named)
    spawner.user_options = options
    try:
        await spawner.load_user_options()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    return {"image": spawner.image, "env": spawner.get_env(), "pod": pod}

print(json.dumps([asyncio.run(pod(user, options)) for user, options in requests]))
"""


def hub_spawn(
    jupyterhub: dict, requests: list[tuple[str | None, dict[str, str]]], work: Path
) -> list[dict[str, Any]]:
    """Per request (a user name, None for KubeSpawner's mock user, and the user's options
    as JupyterHub passes them: `{"profile": slug, ...}`), what the real KubeSpawner makes
    of it with the hub configured from the values' `jupyterhub` part: `{"image", "env"}`
    of the user's pod, or `{"error"}`.

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
    result = subprocess.run(
        [sys.executable, "-c", SPAWN, json.dumps(jupyterhub), json.dumps(requests)],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def spawn(profile_list: list[dict], work: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Per profile, the image and environment that KubeSpawner gives the user's pod (`work`:
    a folder for its kube config)."""
    slugs = [profile["slug"] for profile in profile_list]
    pods = hub_spawn(
        {"singleuser": {"profileList": profile_list}},
        [(None, {"profile": slug}) for slug in slugs],
        work,
    )
    for slug, pod in zip(slugs, pods, strict=True):
        assert "error" not in pod, f"{slug}: {pod}"
    return {slug: (pod["image"], pod["env"]) for slug, pod in zip(slugs, pods, strict=True)}


GATEWAY_PREAMBLE = """\
# The test's part: where to listen, and a local backend with KubeBackend's cluster config.
import json
import pathlib

from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
from dask_gateway_server.backends.local import LocalClusterConfig, UnsafeLocalBackend

RECORDS = pathlib.Path({records!r})


class KubeShapedClusterConfig(KubeClusterConfig, LocalClusterConfig):
    pass


class RecordingBackend(UnsafeLocalBackend):
    async def do_start_cluster(self, cluster):
        (RECORDS / (cluster.name + ".json")).write_text(json.dumps(dict(cluster.config)))
        async for state in super().do_start_cluster(cluster):
            yield state


c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{public_port}"
c.DaskGateway.backend_class = RecordingBackend
c.RecordingBackend.cluster_config_class = KubeShapedClusterConfig
c.LocalBackend.clusters_directory = {clusters!r}
c.ClusterConfig.scheduler_cmd = [{python!r}, "-m", "dask", "scheduler"]
c.ClusterConfig.worker_cmd = [{python!r}, "-m", "dask", "worker"]

# The generated values' extraConfig.optionHandler, verbatim:
"""

#: A user's notebook code: the deployment's snippet, then what each attempt gave.
GATEWAY_CLIENT = """
import json, sys
from dask_gateway import GatewayCluster

results = []
for kwargs in json.loads(sys.argv[1]):
    try:
        cluster = GatewayCluster(**kwargs)
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}"})
    else:
        results.append({"cluster": cluster.name})
        cluster.shutdown()
print(json.dumps(results))
"""


@dataclass
class ChartGateway:
    """A running dask-gateway server configured by the values (`chart_gateway`)."""

    address: str
    records: Path
    log: Path

    def attempts(
        self, *kwargs: dict, env: dict[str, str] | None = None, user: str = "alice"
    ) -> list[dict]:
        """Run the notebook code once per set of keyword arguments, as `user`, each in a
        process of its own: a client that starts and stops distributed's event loop
        several times in one process trips over its LoopRunner now and then (`assert loop
        is not None`, distributed 2026.8), which is not what these tests are about."""
        results = []
        for one in kwargs:
            result = subprocess.run(
                [sys.executable, "-c", GATEWAY_CLIENT, json.dumps([one])],
                env={
                    **os.environ,
                    "DASK_GATEWAY__ADDRESS": self.address,
                    "DASK_GATEWAY__AUTH__TYPE": "basic",
                    # Basic auth's user name (else the process's own, getpass's).
                    "DASK_GATEWAY__AUTH__KWARGS__USERNAME": user,
                    "JUPYTERHUB_USER": user,
                    **(env or {}),
                },
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stderr + self.log.read_text()[-3000:]
            results += json.loads(result.stdout)
        return results

    def config(self, cluster: str) -> dict:
        """The cluster's configuration as the backend holds it."""
        return json.loads((self.records / f"{cluster}.json").read_text())


@contextmanager
def chart_gateway(
    values: dict, folder: Path, env: dict[str, str] | None = None
) -> Iterator[ChartGateway]:
    """The real dask-gateway server (`python -m dask_gateway_server`), its config file
    `GATEWAY_PREAMBLE` and then the values' `extraConfig.optionHandler` verbatim, as the
    chart pastes it. The backend is dask-gateway's own local one (clusters are local
    processes: there is no Kubernetes here) with KubeBackend's cluster configuration class,
    so the handler's output is checked against the traits KubeBackend has; it records each
    cluster's configuration in `records`. `env` is added to the server's environment."""
    records, clusters = folder / "records", folder / "clusters"
    records.mkdir(parents=True)
    api_port, public_port = free_port(), free_port()
    config = folder / "dask_gateway_config.py"
    config.write_text(
        GATEWAY_PREAMBLE.format(
            records=str(records),
            clusters=str(clusters),
            python=sys.executable,
            api_port=api_port,
            public_port=public_port,
        )
        + values["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    )
    log = folder / "gateway.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
            cwd=folder,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not healthy(public_port):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield ChartGateway(f"http://127.0.0.1:{public_port}", records, log)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
