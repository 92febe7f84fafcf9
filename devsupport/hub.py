"""A real JupyterHub on 127.0.0.1, for the tests that need the deployment's hub.

JupyterHub from PyPI (its own venv, `HUB_REQUIREMENTS`), its proxy configurable-http-proxy
from npm, the DummyAuthenticator (one password, made anew for each hub, for every listed
user) and DockerSpawner (users' servers as containers on the local Docker engine) stand in
for the chart's hub, proxy, authenticator and KubeSpawner. `running_hub` starts one from a
generated `jupyterhub_config.py`, to which a test appends its own configuration (services,
roles, the images a spawner allows), and stops it and whatever it spawned afterwards.

`Hub` reaches the hub through its proxy as a browser does (cookies, the login form, its XSRF
token), and hands out a user's API token for tests that call the hub's or a service's API.

Nothing here skips: node and npm, and for spawning the Docker engine, must be there.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import secrets
import shutil
import string
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool.common import BuildToolError, cache_root
from devsupport.cache import locked
from devsupport.cluster import Venv, ensure_venv, spawn
from devsupport.dockercli import docker
from devsupport.servers import free_port

log = logging.getLogger(__name__)

# The hub of the same major version as the image's jupyterhub-singleuser
# (devsupport/standin/requirements.txt), and the spawner for local containers.
HUB_REQUIREMENTS = ("jupyterhub==6.1.1", "dockerspawner==14.0.0")
PROXY_PACKAGE = "configurable-http-proxy@5.3.0"
#: How long the hub may take to answer after it starts (the first start migrates its db).
START_TIMEOUT_S = 120.0
#: How long the hub may take to stop on SIGTERM: it stops every user's server first.
STOP_TIMEOUT_S = 60.0

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
# The profile, as KubeSpawner applies it: the image by digest and the pod's environment
# (else the test's own configuration says which images the spawner allows).
if "image" in settings:
    c.DockerSpawner.image = settings["image"]
if "environment" in settings:
    c.DockerSpawner.environment = settings["environment"]
# What the chart's `singleuser.cmd` defaults to.
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.name_template = settings["container"]
# Named servers (as the Helm values turn them on with the builder service): each its own
# container, `<container>--<server name>`, the default server's ending in `--`.
if settings.get("named_servers"):
    c.JupyterHub.allow_named_servers = True
    c.DockerSpawner.name_template = settings["container"] + "--{{servername}}"
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
                raise RuntimeError("npm is not installed: the hub needs node and npm")
            log.info("installing %s with npm", PROXY_PACKAGE)
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


class HubSession:
    """One client of the hub with cookies of its own, as one browser has: logging in here
    leaves every other session as it was (so a test can hold two users at once)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def cookie(self, name: str) -> str:
        """The value of the cookie the hub set last under this name."""
        values = [c.value for c in self.cookies if c.name == name and c.value is not None]
        if not values:
            raise LookupError(f"the hub set no {name!r} cookie in this session")
        return values[-1]

    def get(self, path: str) -> tuple[str, str, str]:
        """GET through the proxy as the browser would: (final URL, content type, body)."""
        with self.opener.open(self.url + path, timeout=30) as response:
            body = response.read().decode()
            return response.url, response.headers.get("Content-Type", ""), body

    def login(self, user: str, password: str, next_path: str) -> str:
        """The hub's login form, with its XSRF token; returns the page it lands on
        (`next_path`, or what that page redirects to)."""
        self.get("/hub/login")
        form = urllib.parse.urlencode(
            {"username": user, "password": password, "_xsrf": self.cookie("_xsrf")}
        ).encode()
        query = urllib.parse.urlencode({"next": next_path})
        with self.opener.open(f"{self.url}/hub/login?{query}", form, timeout=60) as response:
            return response.url

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON to the hub's API with this session's cookie: the hub then asks for its
        XSRF token in a header, the one its last page view set (it changes at login)."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-XSRFToken": self.cookie("_xsrf")},
            method="POST",
        )
        with self.opener.open(request, timeout=30) as response:
            return json.loads(response.read())


@dataclass
class Hub:
    """A running hub, reached through its proxy at `url`; its own session is a browser's."""

    url: str
    #: the DummyAuthenticator's password, every user's
    password: str
    log: Path
    #: DockerSpawner's name_template: `{username}` is the user's, `{servername}` the
    #: server's (with named servers)
    container_template: str
    session: HubSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = HubSession(self.url)

    def container(self, user: str, server: str = "") -> str:
        """The name of the container that holds this user's server (or named server), as
        DockerSpawner names it (`_escape`: `hep-extra` is `hep-2dextra`)."""
        return self.container_template.format(username=_escape(user), servername=_escape(server))

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> tuple[str, str, str]:
        """GET in the hub's own session: (final URL, content type, body)."""
        return self.session.get(path)

    def login(self, user: str, next_path: str = "/hub/spawn") -> str:
        """Log the hub's own session in as `user` through the login form; by default it
        goes on to spawn the user's server, as the chart's hub does after a login."""
        return self.session.login(user, self.password, next_path)

    def wait_for_server(self, user: str, timeout: float = 300, server: str = "") -> dict[str, Any]:
        """Open the user's server (or named server) as the browser does until it answers
        (the hub's OAuth round trip gives its cookie), then ask its API for its status."""
        base = f"/user/{user}/{server}/" if server else f"/user/{user}/"
        deadline = time.monotonic() + timeout
        while True:
            with suppress(urllib.error.HTTPError, urllib.error.URLError, TimeoutError):
                url, _, _ = self.get(base + "lab")
                if urllib.parse.urlparse(url).path == base + "lab":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user}'s server did not answer:\n{self.log_tail()}")
            time.sleep(2)
        url, kind, body = self.get(base + "api/status")
        if not kind.startswith("application/json"):
            raise RuntimeError(f"{url} answered {kind}: {body[:500]}")
        status: dict[str, Any] = json.loads(body)
        return status

    def token(self, user: str, note: str = "test") -> str:
        """A new hub API token of `user`, with the user's own permissions, for
        `Authorization: token <token>` on the hub's and its services' APIs.

        Asked for as the user does on the hub's token page: a session of its own logs in
        through the form (the hub's own session stays as it is), opens the home page (which
        sets the logged-in XSRF cookie), and POSTs to /hub/api/users/{user}/tokens."""
        session = HubSession(self.url)
        session.login(user, self.password, "/hub/home")
        quoted = urllib.parse.quote(user, safe="")
        created = session.post_json(f"/hub/api/users/{quoted}/tokens", {"note": note})
        token: str = created["token"]
        return token


def _escape(name: str) -> str:
    """DockerSpawner's (legacy) escape of a user's or a server's name in a container's
    name: lowercase ASCII letters and digits stay, every other byte of the UTF-8 name
    becomes `-` and two hex digits."""
    safe = set(string.ascii_lowercase + string.digits)
    return "".join(chr(b) if chr(b) in safe else f"-{b:02x}" for b in name.encode()).lower()


def _remove_containers(prefix: str) -> None:
    """Remove every container whose name starts with `prefix`: the servers of a hub that
    did not stop them itself. Nothing to do where there is no docker CLI."""
    try:
        listing = docker(
            "ps", "--all", "--quiet", "--filter", f"name=^{prefix}", check=False, timeout=60
        )
    except BuildToolError:  # no docker CLI, or an engine that does not answer
        return
    ids = listing.stdout.decode().split()
    if ids:
        docker("rm", "--force", *ids, check=False, timeout=120)


@contextmanager
def running_hub(
    work: Path,
    settings: dict[str, Any],
    extra_config: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[Hub]:
    """Start JupyterHub in `work` (its config, database, cookie secret and log) and yield
    it once its API answers through the proxy; stop it, and the servers it spawned, after.

    `settings` needs `users` (who may log in, each with `Hub.password`); `image` and
    `environment` set DockerSpawner's, and `hub_connect_ip` where servers reach the hub
    (default: this host's address on Docker's bridge). The harness adds the ports, the
    proxy, the password and the container names; a key given here wins. The merged settings
    are written to `work/settings.json` and read by the config as `settings`.

    `extra_config` is Python appended to the generated `jupyterhub_config.py`, where `c`
    and `settings` are in scope (services, roles, `c.DockerSpawner.allowed_images`). `env`
    is added to the hub's environment, which the services it launches inherit.
    """
    if not settings.get("users"):
        raise ValueError("running_hub needs settings['users']: who may log in")
    work.mkdir(parents=True, exist_ok=True)
    venv: Venv = ensure_venv(HUB_REQUIREMENTS)
    merged: dict[str, Any] = {
        "port": free_port(),
        "hub_port": free_port(),
        "proxy_api_port": free_port(),
        "proxy": str(_proxy_command()),
        "proxy_pid_file": str(work / "proxy.pid"),
        "db": str(work / "jupyterhub.sqlite"),
        "cookie_secret": str(work / "cookie_secret"),
        "password": secrets.token_hex(8),
        "container": f"hubtest-{uuid.uuid4().hex[:8]}-{{username}}",
        **settings,
    }
    if "hub_connect_ip" not in merged:
        merged["hub_connect_ip"] = _docker_bridge_ip()
    (work / "settings.json").write_text(json.dumps(merged))
    config = HUB_CONFIG.format(settings=str(work / "settings.json"))
    if extra_config:
        config += "\n# The test's own configuration.\n" + extra_config + "\n"
    (work / "jupyterhub_config.py").write_text(config)

    hub_env = {**os.environ, **(env or {})}
    hub_env["PATH"] = f"{venv.path / 'bin'}:{hub_env['PATH']}"
    log.info("starting JupyterHub on port %d for %s", merged["port"], ", ".join(merged["users"]))
    process = spawn(
        [venv.path / "bin" / "jupyterhub", "-f", "jupyterhub_config.py"],
        work / "jupyterhub.log",
        env=hub_env,
    )
    hub = Hub(
        f"http://127.0.0.1:{merged['port']}",
        merged["password"],
        process.log,
        merged["container"] + ("--{servername}" if merged.get("named_servers") else ""),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                hub.get("/hub/api")
                break
            if process.popen.poll() is not None:
                raise RuntimeError(f"JupyterHub exited:\n{hub.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"JupyterHub did not answer:\n{hub.log_tail()}")
            time.sleep(0.5)
        yield hub
    finally:
        # On SIGTERM the hub stops the users' servers (DockerSpawner removes their
        # containers); any it could not stop in time are removed here.
        process.stop(grace=STOP_TIMEOUT_S)
        _remove_containers(hub.container_template.split("{username}")[0])
