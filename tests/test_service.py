"""The hub service's JSON API (`buildtool serve`), run by a real JupyterHub with its proxy,
called with real hub tokens, building real extension pairs of the session's published
physlite into the local registry: who may see and do what, hostile input, limits, a
build killed mid-push, two users at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildtool.publish import Registry, split_reference
from buildtool.site import OWN_IMAGE_SLUG, SERVICE_NAME, generate_helm_values, user_prefix
from compat.registry import Credentials
from devsupport.builder import Builder, running_builder
from devsupport.chart import hub_spawn
from devsupport.servers import RecordingServer, start
from devsupport.sitepair import PublishedSite

SMALL = ["threadpoolctl", "wurlitzer"]  # in the stand-in, not in physlite
HUB_GROUPS = 'c.JupyterHub.load_groups = {"builders": {"users": ["alice", "bob"]}}\n'


@pytest.fixture(scope="module")
def builder(
    physlite_site: PublishedSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Builder]:
    with running_builder(
        physlite_site,
        tmp_path_factory.mktemp("service"),
        ["alice", "bob", "carol"],
        self_service="{builders: 'group:builders', max_pairs: 2, max_queued: 4}",
        extra_config=HUB_GROUPS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(builder: Builder) -> dict[str, str]:
    return {user: builder.hub.token(user) for user in ("alice", "bob", "carol")}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(_NoRedirect)


def call(
    builder: Builder, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    """The service's API through the hub's proxy: (status, the JSON answer or the text)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"token {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(builder.api(path), data, headers, method=method)
    try:
        with OPENER.open(request, timeout=120) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def wait(builder: Builder, token: str, build_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, build = call(builder, "GET", f"builds/{build_id}", token)
        assert status == 200, build
        if build["state"] in ("succeeded", "failed", "cancelled"):
            return build
        assert time.monotonic() < deadline, build
        time.sleep(0.5)


def test_without_a_hub_token_nothing_is_answered_or_built(builder: Builder) -> None:
    for method, path, body in (
        ("GET", "pairs", None),
        ("GET", "builds", None),
        ("POST", "builds", {"environment": "physlite", "dependencies": SMALL}),
        ("GET", "hub/pairs/alice", None),
    ):
        status, answer = call(builder, method, path, None, body)
        assert status in (302, 403), (path, status, answer)
    status, answer = call(builder, "GET", "hub/pairs/alice", "not-the-service-token")
    assert status == 403
    assert not (builder.state / "builds").exists() or not any((builder.state / "builds").iterdir())


class _Deaf(RecordingServer):
    """Answers 404 to anything; what matters is what it receives."""

    def answer(
        self, method: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return 404, {}, b""


def test_hostile_or_conflicting_input_is_one_line(
    builder: Builder, tokens: dict[str, str], servers: list[RecordingServer]
) -> None:
    alice = tokens["alice"]
    listener = start(servers, _Deaf("127.0.0.4"))  # "another host": it must hear nothing
    aimed = f"http://{listener.address}/pkgs"
    cases = [
        (
            {"environment": "physlite", "dependencies": ["numpy >>1"]},
            "dependencies[0]: invalid MatchSpec 'numpy >>1'",
        ),
        ({"environment": "physlite", "pip": ["numpy"]}, "pip[0]: 'numpy' is not an exact pip pin"),
        ({"environment": "physlite", "dependencies": ["x\ny"]}, "dependencies[0]"),
        ({"environment": "physlite", "name": "../../etc", "dependencies": SMALL}, "name:"),
        ({"environment": "physlite", "dependencies": SMALL, "user": "bob"}, "unknown key 'user'"),
        ({"environment": "nope", "dependencies": SMALL}, "environment: one of physlite"),
        ({"environment": "physlite", "dependencies": ["numpy<2"]}, "physlite holds numpy 2.4.6"),
        (
            {"environment": "physlite", "environment_yml": "dependencies: [numpy >>1]\n"},
            "environment.yml:1",
        ),
        ({"environment": "physlite", "name": "build", "dependencies": SMALL}, "is reserved"),
        *(
            ({"environment": "physlite", "dependencies": [form]}, "names a URL")
            for form in (
                f'x[url="{aimed}/x-1.0-0.conda"]',
                f"{aimed}/linux-64/x-1.0-0.conda",
                "file:///etc/x-1.0-0.conda",
                f"{aimed}::numpy",
            )
        ),
        (
            {
                "environment": "physlite",
                "environment_yml": f"dependencies: ['{aimed}/x-1-0.conda']\n",
            },
            "names a URL",
        ),
        ({"environment": "physlite", "dependencies": ["conda-forge::numpy"]}, "names a channel"),
        ({"environment": "physlite", "dependencies": ["numpy[subdir=noarch]"]}, "names a subdir"),
    ]
    for body, said in cases:
        for path in ("preview", "builds"):
            status, answer = call(builder, "POST", path, alice, body)
            assert status == 400, (body, answer)
            assert said in answer["error"] and "\n" not in answer["error"], (body, answer)
            assert str(builder.state) not in answer["error"]  # no path of the service's
    status, answer = call(builder, "GET", "builds", alice)
    assert answer == {"builds": []}
    assert listener.received == []


def test_a_preview_says_what_is_added(builder: Builder, tokens: dict[str, str]) -> None:
    status, answer = call(
        builder,
        "POST",
        "preview",
        tokens["alice"],
        {
            "environment": "physlite",
            "dependencies": "threadpoolctl\nwurlitzer",
            "pip": "hepunits==2.3.5",
        },
    )
    assert status == 200, answer
    assert sorted(p["name"] for p in answer["added"]) == ["hepunits", "threadpoolctl", "wurlitzer"]
    # Their size as their servers say, against the site's limit (max_added_mb: 2000).
    assert 0 < answer["added_bytes"] < 10_000_000
    assert answer["max_added_bytes"] == 2_000_000_000
    # What the site environment holds already, from its published lock.
    status, held = call(builder, "GET", "environments/physlite/packages", tokens["alice"])
    assert status == 200 and held["platform"] == "linux-64"
    numpy = next(p for p in held["packages"] if p["name"] == "numpy")
    assert numpy == {"name": "numpy", "version": "2.4.6", "manager": "conda", "images": "both"}
    assert any(p["images"] == "notebook" for p in held["packages"])  # jupyterlab, ...
    assert call(builder, "GET", "environments/nope/packages", tokens["alice"])[0] == 404


def test_two_users_build_at_once_and_neither_reaches_the_other(
    builder: Builder, tokens: dict[str, str], physlite_site: PublishedSite
) -> None:
    alice, bob = tokens["alice"], tokens["bob"]
    started: dict[str, Any] = {}

    def submit(user: str, token: str) -> None:
        started[user] = call(
            builder,
            "POST",
            "builds",
            token,
            {"environment": "physlite", "name": f"{user}-extra", "dependencies": SMALL},
        )

    threads = [
        threading.Thread(target=submit, args=item) for item in (("alice", alice), ("bob", bob))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {user: status for user, (status, _) in started.items()} == {"alice": 202, "bob": 202}
    # One build per user at a time.
    again = call(
        builder, "POST", "builds", alice, {"environment": "physlite", "dependencies": SMALL}
    )
    assert again[0] in (409, 202), again  # 202 only if alice's first build ended already
    builds = {
        user: wait(builder, token, started[user][1]["id"])
        for user, token in (("alice", alice), ("bob", bob))
    }
    if again[0] == 202:
        wait(builder, alice, again[1]["id"])
    for user, build in builds.items():
        assert build["state"] == "succeeded", build
        prefix = user_prefix(builder.template, user)
        assert build["notebook"].startswith(f"{prefix}/jupyter-{user}-extra@sha256:")
        assert build["worker"].startswith(f"{prefix}/dask-gateway-{user}-extra@sha256:")
        assert physlite_site.tags(build["notebook"].split("@")[0])

    # A build's log: from a line on (what the page has not shown yet), whole, as a file.
    alice_build = builds["alice"]["id"]
    whole = builds["alice"]["log"]
    assert any("solving" in line for line in whole) and builds["alice"]["log_next"] == len(whole)
    status, rest = call(builder, "GET", f"builds/{alice_build}?from={len(whole) - 2}", alice)
    assert rest["log"] == whole[-2:]
    assert call(builder, "GET", f"builds/{alice_build}?from=x", alice)[0] == 400
    status, text = call(builder, "GET", f"builds/{alice_build}/log", alice)
    assert status == 200 and text.splitlines() == whole
    request = urllib.request.Request(
        builder.api(f"builds/{alice_build}/log?download=1"),
        headers={"Authorization": f"token {alice}"},
    )
    with OPENER.open(request, timeout=30) as response:
        disposition = response.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="build-{alice_build}.log"'
    # An ended build cannot be cancelled; a pair not built here cannot be rebuilt.
    status, answer = call(builder, "POST", f"builds/{alice_build}/cancel", alice)
    assert status == 409 and "succeeded already" in answer["error"]
    assert call(builder, "POST", "pairs/nope/rebuild", alice)[0] == 404
    # Each pair: the named server it starts in, and whether the site moved on since.
    status, pairs = call(builder, "GET", "pairs", alice)
    (mine,) = [p for p in pairs["pairs"] if p["name"] == "alice-extra"]
    digest = mine["notebook"].split("@sha256:")[1]
    assert mine["server"] == f"alice-extra-{digest[:8]}" and mine["outdated"] is False

    # bob sees nothing of alice's: her build, her pairs; and cannot delete them.
    assert call(builder, "GET", f"builds/{alice_build}", bob)[0] == 404
    for path in (f"builds/{alice_build}/log", f"builds/{alice_build}/cancel"):
        assert call(builder, "GET" if path.endswith("log") else "POST", path, bob)[0] == 404
    status, pairs = call(builder, "GET", "pairs", bob)
    assert [p["name"] for p in pairs["pairs"]] == ["bob-extra"]
    assert call(builder, "DELETE", "pairs/alice-extra", bob)[0] == 404
    status, pairs = call(builder, "GET", "pairs", alice)
    assert "alice-extra" in [p["name"] for p in pairs["pairs"]]
    # The hub's spawner asks with the service's own token: alice's pairs, by digest.

    # alice deletes her own: gone from the registry and her list.
    notebook = builds["alice"]["notebook"]
    assert call(builder, "DELETE", "pairs/alice-extra", alice)[0] == 204
    status, pairs = call(builder, "GET", "pairs", alice)
    assert "alice-extra" not in [p["name"] for p in pairs["pairs"]]
    assert physlite_site.tags(notebook.split("@")[0]) == []


def test_limits_are_one_line_each(
    builder: Builder, tokens: dict[str, str], physlite_site: PublishedSite
) -> None:
    # carol is not in the hub group that may build.
    status, answer = call(
        builder,
        "POST",
        "builds",
        tokens["carol"],
        {"environment": "physlite", "dependencies": SMALL},
    )
    assert status == 403 and "hub group 'builders'" in answer["error"], answer
    # bob has bob-extra; two pairs at most: a second is allowed, a third is not.
    body = {"environment": "physlite", "dependencies": ["wurlitzer"]}
    status, answer = call(builder, "POST", "builds", tokens["bob"], {**body, "name": "bob-two"})
    assert status == 202, answer
    first = wait(builder, tokens["bob"], answer["id"])
    assert first["state"] == "succeeded", first
    status, answer = call(builder, "POST", "builds", tokens["bob"], {**body, "name": "bob-three"})
    assert status == 403 and "self_service.max_pairs" in answer["error"], answer
    # A rebuild under the same name leaves one pair: the images it replaces are gone.
    rebuilt = {**body, "name": "bob-two", "dependencies": ["threadpoolctl"]}
    status, answer = call(builder, "POST", "builds", tokens["bob"], rebuilt)
    assert status == 202, answer
    second = wait(builder, tokens["bob"], answer["id"])
    assert second["state"] == "succeeded" and second["notebook"] != first["notebook"], second
    site = physlite_site
    for role in ("notebook", "worker"):
        repository, _, digest = first[role].partition("@")
        host, name = split_reference(repository)
        registry = Registry(host, Credentials(site.credentials.user, site.credentials.password))
        assert registry.get_manifest(name, digest) is None, first[role]
    status, pairs = call(builder, "GET", "pairs", tokens["bob"])
    assert sorted(p["name"] for p in pairs["pairs"]) == ["bob-extra", "bob-two"]


def test_a_flood_of_previews_does_not_stop_another_users_build(
    builder: Builder, tokens: dict[str, str]
) -> None:
    """alice asks for previews as fast as she can, many at once; bob's build goes on
    and finishes, and alice hears a clear 429 for what is past her share."""
    body = {"environment": "physlite", "dependencies": ["wurlitzer"], "name": "bob-flood"}
    answers: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            status, _ = call(
                builder,
                "POST",
                "preview",
                tokens["alice"],
                {"environment": "physlite", "dependencies": SMALL},
            )
            answers.append(status)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        status, answer = call(builder, "DELETE", "pairs/bob-two", tokens["bob"])
        assert status == 204, answer
        status, answer = call(builder, "POST", "builds", tokens["bob"], body)
        assert status == 202, answer
        build = wait(builder, tokens["bob"], answer["id"])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert build["state"] == "succeeded", build
    assert 429 in answers and set(answers) <= {200, 429}, sorted(set(answers))


def test_the_spawn_form_offers_a_user_their_own_pairs_from_the_service(
    builder: Builder, physlite_site: PublishedSite, tmp_path: Path
) -> None:
    """The real KubeSpawner with the generated hub config, which asks the running service
    (with the service's own token, as the chart gives it) for the user's pairs."""
    values = generate_helm_values(builder.root, physlite_site.build_dir)
    services = values["jupyterhub"]["hub"]["services"]
    # Where this service runs, and its token: what a site's own values would say.
    services[SERVICE_NAME].update(url=builder.service["url"], apiToken=builder.service["api_token"])
    bob_pairs = {
        p["name"]: p["notebook"]
        for p in call(builder, "GET", "pairs", builder.hub.token("bob"))[1]["pairs"]
    }
    assert bob_pairs, "bob published pairs in the tests before"
    pods = hub_spawn(
        values["jupyterhub"],
        [
            ("bob", {"profile": OWN_IMAGE_SLUG, "image": "pair-0"}),
            ("alice", {"profile": OWN_IMAGE_SLUG, "image": "pair-0"}),
        ],
        tmp_path,
    )
    assert pods[0].get("image") in bob_pairs.values(), pods[0]
    assert "error" in pods[1] and pods[1].get("image") not in bob_pairs.values(), pods[1]


def test_a_build_killed_mid_push_leaves_no_tag(
    builder: Builder, tokens: dict[str, str], physlite_site: PublishedSite
) -> None:
    alice = tokens["alice"]
    proxy = physlite_site.proxy
    proxy.hold_uploads.set()  # blob uploads wait at the proxy until released
    try:
        status, answer = call(
            builder,
            "POST",
            "builds",
            alice,
            {"environment": "physlite", "name": "alice-cut", "dependencies": ["threadpoolctl"]},
        )
        assert status == 202, answer
        deadline = time.monotonic() + 120
        while call(builder, "GET", f"builds/{answer['id']}", alice)[1]["step"] != "push":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        publish = subprocess.run(
            ["pgrep", "-f", "buildtool.cli .*publish alice-cut"], capture_output=True, text=True
        ).stdout.split()
        assert publish, "the publish process was not found"
        for pid in publish:
            os.kill(int(pid), signal.SIGKILL)
    finally:
        proxy.hold_uploads.clear()
    build = wait(builder, alice, answer["id"])
    assert build["state"] == "failed" and build["notebook"] is None, build
    prefix = user_prefix(builder.template, "alice")
    for repository in (f"{prefix}/jupyter-alice-cut", f"{prefix}/dask-gateway-alice-cut"):
        assert physlite_site.tags(repository) == []
    status, pairs = call(builder, "GET", "pairs", alice)
    assert "alice-cut" not in [p["name"] for p in pairs["pairs"]]
