"""The hub service (`buildtool serve`) run by a real JupyterHub, as the chart runs it:
registered in `c.JupyterHub.services` (here the hub also starts it, in this Python), with
its role, on a copy of a published site whose site.yaml names the users' namespaces."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from buildtool.lock import LAB_ENV
from buildtool.site import SERVICE_NAME
from devsupport.hub import Hub, running_hub
from devsupport.servers import free_port
from devsupport.sitepair import PublishedSite

SERVICE_CONFIG = """\
service = json.load(open({path!r}))
c.JupyterHub.services = [service]
c.JupyterHub.load_roles = [
    {{"name": service["name"], "scopes": ["read:groups"], "services": [service["name"]]}},
    # Every user may reach the service (the hub grants no service to users by default).
    {{"name": "user", "scopes": ["self", "access:services!service=" + service["name"]]}},
]
"""


@dataclass
class Builder:
    hub: Hub
    url: str  # the service's page, through the hub's proxy
    template: str  # site.yaml's user_images
    state: Path  # the service's own folder
    log: Path
    root: Path  # the copy of the site's environments it serves
    service: dict  # its entry in c.JupyterHub.services: url, api_token, ...

    def api(self, path: str) -> str:
        return f"{self.url}api/{path}"


@contextmanager
def running_builder(
    site: PublishedSite,
    work: Path,
    users: list[str],
    self_service: str = "{}",
    image_tests: bool = False,
    spawn_query: str = "image={image}",
    hub_settings: dict | None = None,
    extra_config: str = "",
    build_dir: Path | None = None,
) -> Iterator[Builder]:
    """A hub for `users` with the builder service on a copy of `site`'s environments;
    `self_service` is site.yaml's value of that key (YAML). The service reads the site's
    publish records from `build_dir` (default: the site's own build folder)."""
    root = work / "site"
    shutil.copytree(site.root, root)
    template = site.users_template()
    (root / "site.yaml").write_text(f"user_images: {template}\nself_service: {self_service}\n")
    state = work / "service"
    port = free_port()
    log = work / "service.log"
    service = {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{port}",
        # The service's own token, which the hub holds too (as z2jh generates one).
        "api_token": secrets.token_hex(32),
        "oauth_no_confirm": True,
        "command": [
            "/bin/sh",
            "-c",
            'exec "$0" "$@" >>' + str(log) + " 2>&1",
            sys.executable,
            "-m",
            "buildtool.cli",
            "--root",
            str(root),
            "--build-dir",
            str(build_dir or site.build_dir),
            "serve",
            "--state",
            str(state),
            "--image-tests",
            "yes" if image_tests else "no",
            "--spawn-query",
            spawn_query,
        ],
        # A service the hub starts gets only this and its JUPYTERHUB_* variables.
        "environment": {
            key: site.env[key]
            for key in (
                "REGISTRY_USER",
                "REGISTRY_PASSWORD",
                "DOCKER_CONFIG",
                "PATH",
                "HOME",
                LAB_ENV,
            )
            if key in site.env
        },
    }
    (work / "service.json").write_text(json.dumps(service))
    config = "import json\n" + SERVICE_CONFIG.format(path=str(work / "service.json"))
    with running_hub(
        work / "hub",
        {"users": users, **(hub_settings or {})},
        config + extra_config,
    ) as hub:
        yield Builder(
            hub, f"{hub.url}/services/{SERVICE_NAME}/", template, state, log, root, service
        )
