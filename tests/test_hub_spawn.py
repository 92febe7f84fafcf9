"""A real JupyterHub spawns the published e2e notebook image, as the deployment does.

JupyterHub from PyPI with its proxy, configurable-http-proxy, from npm, and DockerSpawner
(containers on the local Docker engine) stand in for the chart's hub, proxy and KubeSpawner
(devsupport.hub runs them).
The spawner's image and environment are the default profile of `buildtool helm-values`,
expanded by the real KubeSpawner the way it makes a pod (devsupport.chart.spawn). A user
logs in through the proxy's login form, the hub starts their server from the notebook image
by digest, and the test checks that the server answers through the proxy, runs as jovyan,
and that dask-gateway's config inside it names the notebook image, which the generated
gateway option handler maps to its matched worker.

Nothing here skips: the Docker engine, the local registry, node and npm must be there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dask_gateway_server.backends.kubernetes import KubeBackend
from traitlets.config import PyFileConfigLoader

from devsupport.buildtool_cli import buildtool
from devsupport.chart import IMAGE_ENV, gateway_image, spawn
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.hub import Hub, running_hub
from devsupport.localregistry import docker_login, registry_credentials
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]

REPO = Path(__file__).resolve().parents[1]
USER = "alice"


@pytest.fixture(scope="module")
def published(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The e2e pair locked against the conda-forge stand-in, built, tested and published to
    a throwaway registry namespace, and the Helm values generated from that publish."""
    require_docker()
    credentials = registry_credentials()
    work = tmp_path_factory.mktemp("hub-e2e")
    for name in ("base", "e2e"):
        (work / "environments" / name).mkdir(parents=True)
        shutil.copy2(REPO / "environments" / name / "env.yaml", work / "environments" / name)
    result = buildtool("lock", "e2e", "--channel", standin.channel, cwd=work)
    assert result.returncode == 0, result.stderr
    registry = f"{credentials.registry}/t{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "REGISTRY_USER": credentials.user,
        "REGISTRY_PASSWORD": credentials.password,
    }
    command = [
        sys.executable,
        "-m",
        "buildtool.cli",
        "publish",
        "e2e",
        "--registry",
        registry,
        "--base-image",
        standin.base_image,
    ]
    try:
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        values_file = work / "deploy" / "daskhub-values.yaml"
        result = buildtool("helm-values", "--output", values_file, cwd=work)
        assert result.returncode == 0, result.stderr
        yield {
            "work": work,
            "credentials": credentials,
            "published": json.loads((work / "build" / "e2e" / "published.json").read_text()),
            "values": yaml.safe_load(values_file.read_text()),
        }
    finally:
        remove_local_tags(registry + "/")


@pytest.fixture
def hub(published: dict, tmp_path: Path) -> Iterator[Hub]:
    """The hub (devsupport.hub) with DockerSpawner set as the default profile sets the pod."""
    values = published["values"]
    # The default profile, through the real KubeSpawner: what its pod would get.
    profiles = values["jupyterhub"]["singleuser"]["profileList"]
    (profile,) = (p for p in profiles if p.get("default"))
    image, pod_env = spawn(profiles, tmp_path)[profile["slug"]]
    environment = {name: pod_env[name] for name in profile["kubespawner_override"]["environment"]}

    # The image by digest, pulled as a node would: DockerSpawner 14 cannot pull a digest
    # reference itself (it splits `repo@sha256:...` at the last colon into repo and tag).
    config = tmp_path / "docker-config"
    docker_login(published["credentials"], config)
    docker("pull", image, env={**os.environ, "DOCKER_CONFIG": str(config)})

    settings = {"users": [USER], "image": image, "environment": environment}
    with running_hub(tmp_path / "hub", settings) as hub:
        yield hub


def _in_server(hub: Hub, *command: str) -> str:
    """Run a command inside the user's server container, with its environment."""
    return docker("exec", hub.container(USER), *command).stdout.decode().strip()


def test_the_hub_spawns_the_published_notebook_image(
    hub: Hub, published: dict, tmp_path: Path
) -> None:
    images = published["published"]["images"]
    landed = hub.login(USER)
    assert urllib.parse.urlparse(landed).path.startswith(("/hub/", f"/user/{USER}/"))
    status = hub.wait_for_server(USER)
    assert "started" in status  # the Jupyter server's own status API, through the proxy

    inspected = json.loads(docker("inspect", hub.container(USER)).stdout)[0]
    assert inspected["Config"]["Image"] == images["notebook"]["ref"]
    # The server process itself runs as jovyan (1000).
    processes = _in_server(hub, "ps", "-eo", "user:16=,uid=,args=").splitlines()
    servers = [line.split() for line in processes if "jupyterhub-singleuser" in line]
    assert servers and all(fields[:2] == ["jovyan", "1000"] for fields in servers), processes

    # dask-gateway's client inside the server sends the notebook image as the option ...
    code = (
        "import json; from dask_gateway import Gateway\n"
        "with Gateway('http://127.0.0.1:9') as g: print(json.dumps(g._config_cluster_options()))"
    )
    options = json.loads(_in_server(hub, "python", "-c", code))
    assert options == {"image": images["notebook"]["ref"]}
    assert _in_server(hub, "printenv", IMAGE_ENV) == "{JUPYTER_IMAGE_SPEC}"
    # ... which the generated gateway option handler maps to the matched worker.
    snippet = published["values"]["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    (tmp_path / "dask_gateway_config.py").write_text(snippet)
    config = PyFileConfigLoader("dask_gateway_config.py", path=str(tmp_path)).load_config()
    assert gateway_image(KubeBackend(config=config), options) == images["worker"]["ref"]
