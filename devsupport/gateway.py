"""A real dask-gateway server on 127.0.0.1 for the ``--gateway-cluster`` test.

The server runs from its own venv with the local backend
(``UnsafeLocalBackend``: clusters are plain local processes of this user), and
so do the clusters' schedulers and workers, started as ``python -m dask``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from devsupport.cluster import BASE_REQUIREMENTS, DaskProcess, Venv, spawn
from devsupport.servers import free_port

GATEWAY_VERSION = "2026.3.0"
GATEWAY_REQUIREMENTS = (
    *BASE_REQUIREMENTS,
    f"dask-gateway=={GATEWAY_VERSION}",
    f"dask-gateway-server[local]=={GATEWAY_VERSION}",
)

CONFIG = """\
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{public_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.LocalBackend.clusters_directory = "{clusters}"
c.ClusterConfig.scheduler_cmd = ["{python}", "-m", "dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["{python}", "-m", "dask", "worker"]
c.ClusterConfig.worker_threads = 1
c.ClusterConfig.worker_memory = "512M"
"""

#: Runs in the gateway venv: start a cluster with N workers, print its name.
NEW_CLUSTER = """
import sys
from dask_gateway import Gateway
with Gateway() as gateway:
    cluster = gateway.new_cluster(shutdown_on_close=False)
    cluster.scale(int(sys.argv[1]))
    with cluster.get_client(set_as_default=False) as client:
        client.wait_for_workers(int(sys.argv[1]), timeout=120)
    print(cluster.name)
"""


@dataclass
class GatewayServer:
    venv: Venv
    server: DaskProcess
    clusters: Path
    #: what a client needs to find this gateway through dask config
    client_env: dict[str, str]

    def new_cluster(self, workers: int) -> str:
        result = subprocess.run(
            [str(self.venv.python), "-c", NEW_CLUSTER, str(workers)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, **self.client_env},
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"no gateway cluster: {result.stderr[-2000:]}\n{self.server.log_tail()}"
            )
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server (it stops its clusters), then any cluster process left over."""
        self.server.stop()
        for pid in _processes_under(self.clusters):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_under(directory: Path) -> list[int]:
    """Processes whose working directory is inside ``directory``: the clusters' ones."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(directory):
                    found.append(int(entry.name))
    return found


def start_gateway(venv: Venv, workdir: Path) -> GatewayServer:
    workdir.mkdir(parents=True, exist_ok=True)
    api_port, public_port = free_port(), free_port()
    clusters = workdir / "clusters"
    config = workdir / "gateway_config.py"
    config.write_text(
        CONFIG.format(
            api_port=api_port, public_port=public_port, clusters=clusters, python=venv.python
        )
    )
    server = spawn(
        [venv.path / "bin" / "dask-gateway-server", "-f", config], workdir / "gateway.log"
    )
    gateway = GatewayServer(
        venv,
        server,
        clusters,
        {
            "DASK_GATEWAY__ADDRESS": f"http://127.0.0.1:{public_port}",
            "DASK_GATEWAY__AUTH__TYPE": "basic",
        },
    )
    deadline = time.monotonic() + 60
    while not healthy(public_port):
        if server.popen.poll() is not None or time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError(f"the gateway did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    return gateway


def healthy(public_port: int) -> bool:
    """Whether the gateway's API answers through its public proxy."""
    url = f"http://127.0.0.1:{public_port}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
