"""A real JupyterHub spawns the published e2e notebook image, as the deployment does.

JupyterHub from PyPI with its proxy, configurable-http-proxy, from npm, and DockerSpawner
(containers on the local Docker engine) stand in for the chart's hub, proxy and KubeSpawner.
The spawner's image and environment are the default profile of `buildtool helm-values`,
expanded by the real KubeSpawner the way it makes a pod (devsupport.chart.spawn). A user
logs in through the proxy's login form, the hub starts their server from the notebook image
by digest, and the test checks that the server answers through the proxy, runs as jovyan,
and that dask-gateway's config inside it names the notebook image, which the generated
gateway option handler maps to its matched worker.

Nothing here skips: the Docker engine, the local registry, node and npm must be there.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dask_gateway_server.backends.kubernetes import KubeBackend
from traitlets.config import PyFileConfigLoader

from buildtool.cache import cache_root
from devsupport.cache import locked
from devsupport.chart import IMAGE_ENV, gateway_image, spawn
from devsupport.cli import buildtool
from devsupport.cluster import Venv, ensure_venv
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.registry import docker_login, registry_credentials
from devsupport.servers import free_port
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]

REPO = Path(__file__).resolve().parents[1]
# The hub of the same major version as the image's jupyterhub-singleuser
# (devsupport/standin/requirements.txt), and the spawner for local containers.
HUB_REQUIREMENTS = ("jupyterhub==6.1.1", "dockerspawner==14.0.0")
PROXY_PACKAGE = "configurable-http-proxy@5.3.0"
USER = "alice"

HUB_CONFIG = """\
import json

settings = json.load(open({settings!r}))
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_port = settings["hub_port"]
c.JupyterHub.hub_connect_ip = settings["hub_connect_ip"]
c.JupyterHub.db_url = "sqlite:///" + settings["db"]
c.JupyterHub.cookie_secret_file = settings["cookie_secret"]
c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % settings["proxy_api_port"]
c.ConfigurableHTTPProxy.pid_file = settings["proxy_pid_file"]
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = settings["password"]
c.Authenticator.allowed_users = set(settings["users"])
c.JupyterHub.spawner_class = "docker"
# The profile, as KubeSpawner applies it: the image by digest and the pod's environment.
c.DockerSpawner.image = settings["image"]
c.DockerSpawner.environment = settings["environment"]
# What the chart's `singleuser.cmd` defaults to.
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.name_template = settings["container"]
c.DockerSpawner.remove = True
c.DockerSpawner.use_internal_ip = True
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
"""


def _proxy_command() -> Path:
    """configurable-http-proxy from npm, installed once into the cache."""
    folder = cache_root() / "configurable-http-proxy"
    command = folder / "node_modules" / ".bin" / "configurable-http-proxy"
    with locked(folder.with_suffix(".lock")):
        if not command.exists():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is not installed: the hub test needs node and npm")
            subprocess.run(
                [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", PROXY_PACKAGE],
                check=True,
                capture_output=True,
                text=True,
            )
    return command


def _docker_bridge_ip() -> str:
    """The host's address on Docker's default bridge, where containers reach the hub."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split(" inet ")[1].split("/")[0]


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


@dataclass
class Hub:
    url: str
    password: str
    container: str
    log: Path

    def __post_init__(self) -> None:
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[str, str, str]:
        """GET through the proxy as the browser would: (final URL, content type, body)."""
        with self.opener.open(self.url + path, timeout=30) as response:
            body = response.read().decode()
            return response.url, response.headers.get("Content-Type", ""), body

    def login(self, user: str) -> str:
        """The hub's login form, with its XSRF token; returns the page it lands on."""
        self.get("/hub/login")
        xsrf = next(c.value for c in self.cookies if c.name == "_xsrf")
        form = urllib.parse.urlencode(
            {"username": user, "password": self.password, "_xsrf": xsrf}
        ).encode()
        with self.opener.open(self.url + "/hub/login?next=/hub/spawn", form, timeout=60) as r:
            return r.url

    def wait_for_server(self, user: str, timeout: float = 300) -> dict:
        """Open the user's server as the browser does until it answers (the hub's OAuth
        round trip gives its cookie), then ask its API for its status."""
        deadline = time.monotonic() + timeout
        while True:
            with suppress(urllib.error.HTTPError, urllib.error.URLError, TimeoutError):
                url, _, _ = self.get(f"/user/{user}/lab")
                if urllib.parse.urlparse(url).path == f"/user/{user}/lab":
                    break
            assert time.monotonic() < deadline, self.log.read_text()[-4000:]
            time.sleep(2)
        url, kind, body = self.get(f"/user/{user}/api/status")
        assert kind.startswith("application/json"), (url, kind, body[:500])
        return json.loads(body)


@pytest.fixture
def hub(published: dict, tmp_path: Path) -> Iterator[Hub]:
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

    venv: Venv = ensure_venv(HUB_REQUIREMENTS)
    port = free_port()
    settings = {
        "port": port,
        "hub_port": free_port(),
        "hub_connect_ip": _docker_bridge_ip(),
        "proxy_api_port": free_port(),
        "proxy": str(_proxy_command()),
        "proxy_pid_file": str(tmp_path / "proxy.pid"),
        "db": str(tmp_path / "jupyterhub.sqlite"),
        "cookie_secret": str(tmp_path / "cookie_secret"),
        "password": secrets.token_hex(8),
        "users": [USER],
        "image": image,
        "environment": environment,
        "container": f"hubtest-{uuid.uuid4().hex[:8]}-{{username}}",
    }
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "jupyterhub_config.py").write_text(
        HUB_CONFIG.format(settings=str(tmp_path / "settings.json"))
    )
    log = tmp_path / "jupyterhub.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(venv.path / "bin" / "jupyterhub"), "-f", "jupyterhub_config.py"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": f"{venv.path / 'bin'}:{os.environ['PATH']}"},
        )
    hub = Hub(
        f"http://127.0.0.1:{port}",
        settings["password"],
        settings["container"].format(username=USER),
        log,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                hub.get("/hub/api")
                break
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        yield hub
    finally:
        # The hub stops the user's server (and DockerSpawner removes its container).
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        docker("rm", "--force", hub.container, check=False)


def _in_server(hub: Hub, *command: str) -> str:
    """Run a command inside the user's server container, with its environment."""
    return docker("exec", hub.container, *command).stdout.decode().strip()


def test_the_hub_spawns_the_published_notebook_image(
    hub: Hub, published: dict, tmp_path: Path
) -> None:
    images = published["published"]["images"]
    landed = hub.login(USER)
    assert urllib.parse.urlparse(landed).path.startswith(("/hub/", f"/user/{USER}/"))
    status = hub.wait_for_server(USER)
    assert "started" in status  # the Jupyter server's own status API, through the proxy

    inspected = json.loads(docker("inspect", hub.container).stdout)[0]
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
