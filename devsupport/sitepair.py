"""A site with one pair published into the local registry through a counting proxy: the
parent that the extension tests and the hub service's tests build on (published once per
session; about a minute warm)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from buildtool.publish import Credentials, Registry, split_reference
from devsupport.buildtool_cli import buildtool, locked_site
from devsupport.localregistry import RegistryCredentials, docker_login, registry_credentials
from devsupport.servers import FrontProxy
from devsupport.standin import StandIn


@dataclass
class PublishedSite:
    work: Path
    root: Path  # the site's environments
    build_dir: Path
    namespace: str  # where the site published, through the proxy
    proxy: FrontProxy  # in front of the registry; what the tests push goes through it
    env: dict[str, str]  # the registry credentials, a docker config logged into the proxy
    published: dict  # the pair's publish record
    credentials: RegistryCredentials

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds of `repository` (host/name), none when it holds
        no such repository."""
        host, name = split_reference(repository)
        registry = Registry(host, Credentials(self.credentials.user, self.credentials.password))
        status, _, body = registry.request(
            "GET", f"/v2/{name}/tags/list", scope=f"repository:{name}:pull", ok=(200, 404)
        )
        return (json.loads(body).get("tags") or []) if status == 200 else []

    def users_template(self) -> str:
        """A fresh `user_images` template on the proxy's host (the parent's registry)."""
        return f"{self.proxy.address}/users{uuid.uuid4().hex[:8]}/{{username}}"


def publish_site(standin: StandIn, work: Path, name: str = "physlite") -> PublishedSite:
    """Lock `name` against the stand-in and publish it through a new proxy."""
    credentials = registry_credentials()
    proxy = FrontProxy(credentials.registry)
    root = locked_site(work, standin.channel, name)
    env = {
        **os.environ,
        "REGISTRY_USER": credentials.user,
        "REGISTRY_PASSWORD": credentials.password,
        "DOCKER_CONFIG": str(work / "docker"),
    }
    docker_login(
        RegistryCredentials(proxy.address, credentials.user, credentials.password),
        work / "docker",
    )
    namespace = f"{proxy.address}/x{uuid.uuid4().hex[:8]}"
    result = buildtool(
        "--root",
        root,
        "publish",
        name,
        "--registry",
        namespace,
        *standin.image_flags,
        cwd=work,
        env=env,
    )
    if result.returncode != 0:
        proxy.close()
        raise RuntimeError(f"publishing {name} failed:\n{result.stderr[-3000:]}")
    published = json.loads((work / "build" / name / "published.json").read_text())
    return PublishedSite(work, root, work / "build", namespace, proxy, env, published, credentials)
