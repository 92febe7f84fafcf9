"""The self-service loop in a real browser: alice, in Debian's chromium, logs in to a real
JupyterHub (configurable-http-proxy, DockerSpawner), opens the builder service's page,
adds two packages to physlite, watches the build (image tests included) finish, spawns
the new notebook image from the page's link, and from inside that server a client
starts work on a scheduler and two workers of the matched worker image, where an added
package imports. Screenshots of each step are kept in test-artifacts/.

Nothing here skips: chromium, chromedriver, node, npm, the Docker engine and the local
registry must be there.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid
from pathlib import Path

from buildtool.site import portable_config
from devsupport.browser import artifacts_dir, browser
from devsupport.builder import running_builder
from devsupport.dockercli import docker
from devsupport.servers import free_port
from devsupport.sitepair import PublishedSite

# DockerSpawner stands in for KubeSpawner: the images a user may start are the site's
# notebook and the user's own pairs, as the builder service lists them to the hub.
ALLOWED_IMAGES = """
{portable}

SITE_NOTEBOOK = {site!r}
BUILDER = c.JupyterHub.services[0]


def daskhub_allowed_images(spawner):
    pairs = service_pairs(BUILDER["url"], BUILDER["api_token"], spawner.user.name)
    return [SITE_NOTEBOOK, *(p["notebook"] for p in pairs)]


c.DockerSpawner.allowed_images = daskhub_allowed_images
"""

CLIENT = """
import importlib, json, sys
from distributed import Client
with Client(sys.argv[1], timeout=60) as client:
    client.wait_for_workers(2, timeout=120)
    names = ("threadpoolctl", "wurlitzer")
    found = client.run(lambda: [importlib.import_module(m).__name__ for m in names])
    imported = sorted({m for ms in found.values() for m in ms})
    print(json.dumps({"workers": len(found), "imported": imported}))
"""


def test_alice_builds_a_pair_in_the_browser_and_starts_it(
    physlite_site: PublishedSite, tmp_path: Path
) -> None:
    artifacts = artifacts_dir("test_service_browser")
    site_notebook = physlite_site.published["images"]["notebook"]["ref"]
    extra = ALLOWED_IMAGES.format(portable=portable_config(), site=site_notebook)
    docker_env = {**os.environ, "DOCKER_CONFIG": physlite_site.env["DOCKER_CONFIG"]}
    started: list[str] = []
    with (
        running_builder(
            physlite_site, tmp_path, ["alice"], image_tests=True, extra_config=extra
        ) as builder,
        browser(artifacts) as page,
    ):
        hub = builder.hub
        # Log in, going on to the service's page (the hub's OAuth, no consent page).
        page.open(
            hub.url + "/hub/login?" + urllib.parse.urlencode({"next": builder.url[len(hub.url) :]})
        )
        page.fill("#username_input", "alice")
        page.fill("#password_input", hub.password)
        page.click("#login_submit")
        page.wait_for("#environment")
        assert page.text("#user") == "alice"
        page.screenshot("service-page")
        # A cookie-authenticated POST that carries a bogus token header and no XSRF token
        # (what another site's page could send) is refused; the page's own calls carry it.
        forged = page.script(
            "const done = arguments[arguments.length - 1];"
            "fetch(document.querySelector('main').dataset.prefix + 'api/builds', {"
            "  method: 'POST', headers: {'Authorization': 'token bogus',"
            "  'Content-Type': 'application/json'},"
            "  body: JSON.stringify({environment: 'physlite', dependencies: ['toolz']})"
            "}).then(r => done(r.status), e => done(String(e)));"
        )
        assert forged == 403, forged

        # Two packages physlite lacks; what they add, before building.
        page.fill("#dependencies", "threadpoolctl\nwurlitzer")
        page.fill("#name", "hep-extra")
        page.click("#check")
        page.wait_for("#preview .list-group")
        added = page.text("#preview")
        assert "threadpoolctl" in added and "wurlitzer" in added
        page.screenshot("preview")

        # Build: the steps and the log as it goes, then the published pair.
        page.click("#build")
        page.wait_for("#progress")
        page.screenshot("building")
        page.wait_for("#result", timeout=600)
        page.show("#result")
        page.screenshot("published")
        notebook = page.text("#notebook-ref")
        worker = page.text("#worker-ref")
        assert "/alice/jupyter-hep-extra@sha256:" in notebook
        assert "/alice/dask-gateway-hep-extra@sha256:" in worker
        assert page.text("#tested") == "(image tests passed)"
        assert f'GatewayCluster(image="{worker}")' in page.text("#gateway-line")
        assert "hep-extra" in page.text("#pairs")

        # Start a server with it, from the page's link: DockerSpawner starts the image by
        # digest (pulled as a node pulls it: DockerSpawner cannot pull a digest itself).
        docker("pull", notebook, env=docker_env)
        page.click("#spawn-link")
        hub.login("alice", next_path="/hub/home")  # the harness's own session, to check
        status = hub.wait_for_server("alice", timeout=300)
        assert "started" in status
        page.open(hub.url + "/user/alice/lab")
        page.wait_for(".jp-Launcher", timeout=120)
        page.screenshot("server")
        container = hub.container("alice")
        inspected = json.loads(docker("inspect", container).stdout)[0]
        assert inspected["Config"]["Image"] == notebook

        # From inside it: a scheduler and two workers of the matched worker image (the
        # image's own variable names it), and the added packages import on the workers.
        named = docker("exec", container, "printenv", "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE")
        assert named.stdout.decode().strip() == worker
        port = free_port()
        tag = uuid.uuid4().hex[:8]
        for role, command in (
            ("scheduler", ["dask", "scheduler", "--port", str(port), "--dashboard-address", ":0"]),
            ("worker-1", ["dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1"]),
            ("worker-2", ["dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1"]),
        ):
            name = f"svc-{tag}-{role}"
            docker(
                "run", "-d", "--network", "host", "--name", name, worker, *command, env=docker_env
            )
            started.append(name)
        host_ip = hub_connect_ip(hub)
        said = docker("exec", container, "python", "-c", CLIENT, f"tcp://{host_ip}:{port}")
        result = json.loads(said.stdout.decode().strip().splitlines()[-1])
        assert result == {"workers": 2, "imported": ["threadpoolctl", "wurlitzer"]}
        page.open(builder.url)
        page.show("#pairs tbody tr")
        page.screenshot("my-pairs")
    for name in started:
        docker("rm", "--force", name, check=False)


def hub_connect_ip(hub) -> str:  # type: ignore[no-untyped-def]
    """Where the user's container reaches this host (the hub's connect address)."""
    settings = json.loads((Path(hub.log).parent / "settings.json").read_text())
    return str(settings["hub_connect_ip"])
