"""The self-service page in a real browser: alice, in Debian's chromium, logs in to a real
JupyterHub (configurable-http-proxy, DockerSpawner, named servers on as the Helm values
turn them on), and on the builder service's page

- sees the empty states, checks what two packages add to physlite (and their size against
  the limit) before she may build, and sees a changed request go stale;
- builds: the page moves to the build's own URL; she reloads it mid-build (the push held
  at the registry's proxy) and it follows the same build and its log again;
- copies the notebook image by digest (read back from the browser's clipboard);
- starts the pair while her own server runs: it starts as a named server of its own,
  running the new image, and from inside it a client starts work on a scheduler and two
  workers of the matched worker image, where an added package imports;
- cancels a second build mid-push: no tag, no container, no pair;
- after the site publishes physlite again, sees her pair marked outdated and rebuilds it
  with one click: the new pair's parent is the site's new notebook image.

Screenshots of each step are kept in test-artifacts/test_service_browser/. Nothing here
skips: chromium, chromedriver, node, npm, the Docker engine and the local registry must be
there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from buildtool.site import portable_config, user_prefix
from compat.vocabulary import BUILD_LABEL
from devsupport.browser import Browser, artifacts_dir, browser
from devsupport.builder import Builder, running_builder
from devsupport.buildtool_cli import buildtool
from devsupport.dockercli import docker
from devsupport.servers import free_port
from devsupport.sitepair import PublishedSite
from devsupport.standin import StandIn

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


def _records(site: PublishedSite, into: Path) -> Path:
    """A build folder holding only the site's publish records: the service's view of what
    the site has published, which this test moves on when it republishes physlite."""
    for record in ("published.json", "published-lock.yml"):
        target = into / "physlite" / record
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(site.build_dir / "physlite" / record, target)
    return into


def _pause(page: Browser) -> None:
    """Half a second, in the page's own time."""
    page.script("setTimeout(arguments[arguments.length - 1], 500)")


def _wait_state(page: Browser, states: tuple[str, ...], timeout: float = 600) -> str:
    """The build's state as the page shows it, once it is one of `states`."""
    page.wait_for("#build-state")
    for _ in range(int(timeout * 2)):
        state = page.text("#build-state")
        if state in states:
            return state
        _pause(page)
    raise TimeoutError(f"the build stayed {page.text('#build-state')!r}")


def _build_from_form(page: Browser, name: str, packages: str) -> str:
    """Fill the form, check, build; the build's id (from the page's new URL)."""
    page.fill("#name", name)
    page.fill("#dependencies", packages)
    page.click("#check")
    page.wait_for("#preview .list-group")
    assert page.driver.find_element("css selector", "#build").is_enabled()
    page.click("#build")
    page.wait_for("#progress")
    found = re.search(r"/builds/([0-9a-f]{16})$", page.url)
    assert found, page.url
    return found.group(1)


def test_alice_builds_follows_cancels_starts_and_rebuilds_in_the_browser(
    physlite_site: PublishedSite, standin: StandIn, tmp_path: Path
) -> None:
    artifacts = artifacts_dir("test_service_browser")
    site_notebook = physlite_site.published["images"]["notebook"]["ref"]
    extra = ALLOWED_IMAGES.format(portable=portable_config(), site=site_notebook)
    docker_env = {**os.environ, "DOCKER_CONFIG": physlite_site.env["DOCKER_CONFIG"]}
    records = _records(physlite_site, tmp_path / "records")
    started: list[str] = []
    with (
        running_builder(
            physlite_site,
            tmp_path,
            ["alice"],
            image_tests=True,
            extra_config=extra,
            spawn_query="image={image}",
            hub_settings={"named_servers": True},
            build_dir=records,
        ) as builder,
        browser(artifacts) as page,
    ):
        _log_in(page, builder)
        _check_then_build(page, builder, physlite_site)
        notebook = _copy_and_start(page, builder, site_notebook, docker_env, started)
        _cancel(page, builder, physlite_site)
        _outdated_then_rebuild(page, builder, physlite_site, standin, records, notebook)
    for name in started:
        docker("rm", "--force", name, check=False)


def _log_in(page: Browser, builder: Builder) -> None:
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
    assert "You have no pairs yet" in page.text("#pairs-empty")
    assert page.text("#builds-empty") == "No builds yet."
    page.click("#show-packages")
    page.wait_for("#packages ul")
    assert re.search(r"physlite holds \d+ packages", page.text("#packages"))
    assert "coffea" in page.text("#packages")
    page.screenshot("empty-page-and-what-physlite-holds")
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


def _check_then_build(page: Browser, builder: Builder, site: PublishedSite) -> None:
    build_button = page.driver.find_element("css selector", "#build")
    assert not build_button.is_enabled()  # check first
    page.fill("#dependencies", "threadpoolctl\nwurlitzer")
    page.fill("#name", "hep-extra")
    page.click("#check")
    page.wait_for("#preview .list-group")
    added = page.text("#preview")
    assert "threadpoolctl" in added and "wurlitzer" in added
    assert re.search(r"\d+\.\d MB of the 2000\.0 MB this hub allows", added), added
    assert build_button.is_enabled()
    page.fill("#name", "hep-extra2")  # a changed request must be checked again
    assert not build_button.is_enabled()
    assert "check it again" in page.text("#preview")
    page.fill("#name", "hep-extra")
    page.click("#check")
    page.wait_for("#preview .list-group")
    page.screenshot("preview")

    # Build, with the push held at the registry's proxy: reload mid-build, and the page
    # at the build's own URL follows it and its log again.
    site.proxy.hold_uploads.set()
    try:
        page.click("#build")
        page.wait_for("#progress")
        assert re.search(r"/builds/[0-9a-f]{16}$", page.url), page.url
        build_url = page.url
        for _ in range(240):
            if "push" in page.text("#build-state") or "pushing" in page.text("#log"):
                break
            _pause(page)
        page.screenshot("building")
        page.reload()
        page.wait_for("#progress")
        assert page.url == build_url
        page.wait_for("#log")
        for _ in range(60):
            if "solving" in page.text("#log"):
                break
            _pause(page)
        assert "solving" in page.text("#log")  # the whole log so far, not its tail
        assert page.text("#build-name") == "hep-extra on physlite"
        assert page.text("#build-state") in ("running", "queued")
        page.screenshot("reloaded-mid-build")
    finally:
        site.proxy.hold_uploads.clear()
    page.wait_for("#result", timeout=600)
    page.show("#result")
    page.screenshot("published")
    assert page.text("#tested") == "(image tests passed)"
    assert "GatewayCluster()" in page.text("#gateway-line")
    assert "hep-extra" in page.text("#pairs")
    assert "succeeded" in page.text("#builds")


def _copy_and_start(
    page: Browser,
    builder: Builder,
    site_notebook: str,
    docker_env: dict[str, str],
    started: list[str],
) -> str:
    hub = builder.hub
    notebook = page.text("#notebook-ref")
    worker = page.text("#worker-ref")
    assert "/alice/jupyter-hep-extra@sha256:" in notebook
    assert "/alice/dask-gateway-hep-extra@sha256:" in worker
    page.allow_clipboard()
    page.click("button[data-copy='notebook-ref']")
    assert page.clipboard() == notebook
    page.screenshot("copied")

    # alice's own server runs already (the site's image), as it does for most users.
    docker("pull", site_notebook, env=docker_env)
    hub.login("alice", next_path="/hub/home")
    hub.get("/hub/spawn?" + urllib.parse.urlencode({"image": site_notebook}))
    hub.wait_for_server("alice", timeout=300)
    # The page's link starts the pair in a named server of its own: the new image, not
    # the server already running. DockerSpawner starts the image by digest (pulled as a
    # node pulls it: DockerSpawner cannot pull a digest itself).
    docker("pull", notebook, env=docker_env)
    server = page.text("#server-name")
    assert re.fullmatch(r"hep-extra-[0-9a-f]{8}", server), server
    page.click("#spawn-link")
    status = hub.wait_for_server("alice", timeout=300, server=server)
    assert "started" in status
    page.open(f"{hub.url}/user/alice/{server}/lab")
    page.wait_for(".jp-Launcher", timeout=120)
    page.screenshot("named-server-running-the-pair")
    container = hub.container("alice", server)
    inspected = json.loads(docker("inspect", container).stdout)[0]
    assert inspected["Config"]["Image"] == notebook
    default = json.loads(docker("inspect", hub.container("alice")).stdout)[0]
    assert default["Config"]["Image"] == site_notebook  # left as it was

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
        docker("run", "-d", "--network", "host", "--name", name, worker, *command, env=docker_env)
        started.append(name)
    host_ip = hub_connect_ip(hub)
    said = docker("exec", container, "python", "-c", CLIENT, f"tcp://{host_ip}:{port}")
    result = json.loads(said.stdout.decode().strip().splitlines()[-1])
    assert result == {"workers": 2, "imported": ["threadpoolctl", "wurlitzer"]}
    return notebook


def _cancel(page: Browser, builder: Builder, site: PublishedSite) -> None:
    """A second build, cancelled mid-push: nothing tagged, nothing left running."""
    page.open(builder.url)
    page.wait_for("#environment")
    site.proxy.hold_uploads.set()
    try:
        build_id = _build_from_form(page, "second", "threadpoolctl")
        for _ in range(240):
            if "pushing" in page.text("#log"):
                break
            _pause(page)
        page.click("#cancel")
        assert "Cancel this build?" in page.accept_dialog()
        assert _wait_state(page, ("cancelled", "failed", "succeeded")) == "cancelled"
    finally:
        site.proxy.hold_uploads.clear()
    page.show("#progress")
    page.screenshot("cancelled")
    assert "cancelled by its user" in page.text("#message")
    assert page.text("#steps li.failed").startswith("Push")  # where it was cancelled
    prefix = user_prefix(builder.template, "alice")
    for repository in (f"{prefix}/jupyter-second", f"{prefix}/dask-gateway-second"):
        assert site.tags(repository) == []
    left = docker("ps", "-aq", "--filter", f"label={BUILD_LABEL}={build_id}").stdout.split()
    assert left == []
    assert "second" not in page.text("#pairs")


def _outdated_then_rebuild(
    page: Browser,
    builder: Builder,
    site: PublishedSite,
    standin: StandIn,
    records: Path,
    old_notebook: str,
) -> None:
    """The site publishes physlite again (here into a namespace of its own, so that its
    notebook image is a new one): alice's pair is outdated, and one click rebuilds it on
    the new one."""
    namespace = f"{site.proxy.address}/x{uuid.uuid4().hex[:8]}"
    result = buildtool(
        "--root",
        site.root,
        "--build-dir",
        site.build_dir,
        "publish",
        "physlite",
        "--registry",
        namespace,
        *standin.image_flags,
        cwd=site.work,
        env=site.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The service's records of the site move on; the session's site keeps its own.
    for record in ("published.json", "published-lock.yml"):
        shutil.copy(site.build_dir / "physlite" / record, records / "physlite" / record)
    original = site.published
    (site.build_dir / "physlite" / "published.json").write_text(json.dumps(original, indent=2))
    new_parent = json.loads((records / "physlite" / "published.json").read_text())["images"][
        "notebook"
    ]["ref"]

    page.open(builder.url)
    page.wait_for("#pairs tbody tr")
    row = "#pairs tr[data-pair='hep-extra']"
    assert "outdated" in page.text(row)
    page.show(row)
    page.screenshot("outdated")
    page.click(row + " button.rebuild")
    page.wait_for("#progress")
    assert _wait_state(page, ("succeeded", "failed", "cancelled")) == "succeeded", page.text(
        "#message"
    )
    page.wait_for("#result")
    assert page.text("#notebook-ref") != old_notebook
    page.open(builder.url)
    page.wait_for(row)
    assert "outdated" not in page.text(row)
    page.show("#pairs")
    page.screenshot("rebuilt-on-the-new-physlite")
    token = builder.hub.token("alice")
    pairs = _api(builder, "pairs", token)["pairs"]
    (pair,) = [p for p in pairs if p["name"] == "hep-extra"]
    assert pair["parent"] == new_parent and pair["outdated"] is False


def _api(builder: Builder, path: str, token: str) -> dict:
    request = urllib.request.Request(builder.api(path), headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict = json.loads(response.read())
    return answer


def hub_connect_ip(hub) -> str:  # type: ignore[no-untyped-def]
    """Where the user's container reaches this host (the hub's connect address)."""
    settings = json.loads((Path(hub.log).parent / "settings.json").read_text())
    return str(settings["hub_connect_ip"])
