"""Extension pairs end to end: physlite published into the real local registry (through
a proxy that counts what is pushed), extended by a user with two conda packages physlite
lacks and one exact pip pin, locked (conda-lock's own reader checks the result),
published with the docker CLI removed from PATH, then image-tested by digest with the
real pair test (an added module imported on the workers). A conflicting addition fails
in one line and writes nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from conda_lock.lockfile import parse_conda_lock_file

from buildtool.site import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, generate_helm_values
from devsupport.buildtool_cli import buildtool
from devsupport.chart import chart_gateway
from devsupport.sitepair import PublishedSite

ADDED_CONDA = ("threadpoolctl", "wurlitzer")  # in the stand-in, not in physlite
ADDED_PIP = "hepunits==2.3.5"  # a pure-Python wheel from PyPI


@dataclass
class Site(PublishedSite):
    """The published site, and a user's folder: no checkout of the site, the registry only."""

    users: Path


def _user_spec(site: Site, name: str, body: str) -> Path:
    folder = site.users / name
    folder.mkdir(parents=True, exist_ok=True)
    notebook = site.published["images"]["notebook"]["ref"]
    (folder / "env.yaml").write_text(f"from: {notebook}\n{body}")
    return folder


def _user(site: Site, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return buildtool(
        "--root",
        site.users,
        "--build-dir",
        site.users / "build",
        *args,
        cwd=site.users,
        env=env or site.env,
    )


@pytest.fixture(scope="module")
def site(physlite_site: PublishedSite, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The session's published physlite, and a user's folder of this module's own."""
    return Site(**vars(physlite_site), users=tmp_path_factory.mktemp("users"))


@pytest.fixture(scope="module")
def alice(site: Site) -> Path:
    """alice's extension, locked."""
    folder = _user_spec(
        site,
        "alice",
        "description: PHYSLITE with two more packages and one wheel\n"
        f"dependencies: [{', '.join(ADDED_CONDA)}]\n"
        f"pip: ['{ADDED_PIP}']\n"
        "imports: [threadpoolctl, wurlitzer, hepunits]\n",
    )
    result = _user(site, "lock", "alice")
    assert result.returncode == 0, result.stderr
    return folder


def test_only_the_additions_are_solved_and_every_parent_record_is_kept(
    site: Site, alice: Path
) -> None:
    parent = yaml.safe_load((site.work / "build" / "physlite" / "published-lock.yml").read_text())
    child = yaml.safe_load((alice / "conda-lock.yml").read_text())
    # Every record of the parent, byte for byte the same (same version, build, sha256).
    assert child["package"][: len(parent["package"])] == parent["package"]
    added = child["package"][len(parent["package"]) :]
    assert sorted(p["name"] for p in added) == sorted([*ADDED_CONDA, "hepunits"])
    assert all(p["category"] == "main" and not p["optional"] for p in added)
    custom = child["metadata"]["custom_metadata"]
    images = site.published["images"]
    assert custom["parent.notebook"] == images["notebook"]["ref"]
    assert custom["parent.worker"] == images["worker"]["ref"]
    assert custom["parent.lock_sha256"] == site.published["lock_sha256"]
    # conda-lock's own reader takes it: both images get the additions (category main).
    lock = parse_conda_lock_file(alice / "conda-lock.yml")
    main = {p.name for p in lock.package if p.categories == {"main"}}
    assert {*ADDED_CONDA, "hepunits"} <= main
    # The lock's diff says what the extension adds to its parent.
    diff = (site.users / "build" / "alice" / "lock-diff.md").read_text()
    assert all(name in diff for name in ADDED_CONDA) and "coffea" not in diff


def test_a_conflicting_addition_is_one_line_and_writes_nothing(site: Site) -> None:
    folder = _user_spec(site, "clash", "description: an older numpy\ndependencies: ['numpy<2']\n")
    result = _user(site, "lock", "clash")
    assert result.returncode == 2
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert f"{folder / 'env.yaml'}:3: dependencies[0]:" in line
    assert "numpy <2" in line and "physlite holds numpy 2.4.6" in line
    assert sorted(p.name for p in folder.iterdir()) == ["env.yaml"]
    assert not (site.users / "build" / "clash").exists()


def test_published_without_docker_mounting_every_parent_blob_then_tested_by_digest(
    site: Site, alice: Path, tmp_path: Path
) -> None:
    no_docker = tmp_path / "bin"  # a PATH with no docker CLI on it, and no engine either
    no_docker.mkdir()
    env = {**site.env, "PATH": str(no_docker), "DOCKER_HOST": "unix:///nonexistent.sock"}
    site.proxy.reset()
    # Into alice's namespace, as the site's user_images names it.
    template = f"{site.proxy.address}/users{uuid.uuid4().hex[:8]}/{{username}}"
    (site.users / "site.yaml").write_text(f"user_images: {template}\n")
    result = _user(site, "publish", "alice", "--user", "alice", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((site.users / "build" / "alice" / "published.json").read_text())
    assert record["images"]["notebook"]["repository"] == template.format(username="alice") + (
        "/jupyter-alice"
    )
    assert record["parent"] == site.published["images"]["notebook"]["ref"]
    assert record["added"] == sorted([*ADDED_CONDA, "hepunits"])
    assert record["image_tested"] is False  # --image-tests auto, and no engine answers

    # On the wire: no blob of the parent was sent again; each was mounted.
    parent_blobs = set()
    for role in ("worker", "notebook"):
        image = site.published["images"][role]
        name = image["repository"].split("/", 1)[1]
        manifest = json.loads(_get(site, name, image["digest"]))
        parent_blobs |= {layer["digest"] for layer in manifest["layers"]}
    assert not parent_blobs & set(site.proxy.uploaded)
    assert parent_blobs <= set(site.proxy.mounted)
    # What was pushed is the new layers plus configs, manifests and the attachments.
    assert site.proxy.pushed_bytes == record["bytes_pushed"]
    assert record["bytes_pushed"] < 1_000_000

    # The catalog lists the user pair with its parent and what it adds.
    catalog = _user(site, "catalog", "--out", str(tmp_path / "catalog"))
    assert catalog.returncode == 0, catalog.stderr
    page = (tmp_path / "catalog" / "images.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `alice`"))
    assert record["images"]["notebook"]["ref"] in row and record["parent"] in row
    assert "physlite" in row and "hepunits, threadpoolctl, wurlitzer" in row

    # The real gateway, configured by the site's values, starts alice's matched worker by
    # digest from her notebook image, and refuses it to bob.
    (site.root / "site.yaml").write_text(f"user_images: {template}\n")
    values = generate_helm_values(site.root, site.work / "build")
    pull = {
        REGISTRY_USER_ENV: site.credentials.user,
        REGISTRY_PASSWORD_ENV: site.credentials.password,
    }
    notebook, worker = (record["images"][role]["ref"] for role in ("notebook", "worker"))
    with chart_gateway(values, tmp_path / "gateway", pull) as gateway:
        (started,) = gateway.attempts({"image": notebook}, user="alice")
        (refused,) = gateway.attempts({"image": notebook}, user="bob")
    assert gateway.config(started["cluster"])["image"] == worker
    assert "another user's namespace" in refused["error"]

    # With an engine: the image tests, pulled by digest, the real pair test included.
    tested = _user(site, "test", "alice")
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    report = ElementTree.parse(site.users / "build" / "alice" / "linux-64" / "image-tests.xml")
    suite = report.getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "1")) == 0
    names = {case.get("name") for case in report.getroot().iter("testcase")}
    assert "test_real_pair_scheduler_worker_and_client" in names


def _get(site: Site, name: str, digest: str) -> str:
    from buildtool.publish import Registry
    from compat.registry import Credentials

    registry = Registry(
        site.proxy.address, Credentials(site.credentials.user, site.credentials.password)
    )
    text = registry.get_manifest(name, digest)
    assert text is not None
    return text


def test_an_addition_that_would_overwrite_a_parent_file_publishes_nothing(site: Site) -> None:
    """The wheel `msgpack` installs the files of physlite's conda `msgpack-python`."""
    _user_spec(site, "clobber", "description: msgpack from PyPI\npip: ['msgpack==1.1.0']\n")
    assert _user(site, "lock", "clobber").returncode == 0
    site.proxy.reset()
    users = f"{site.proxy.address}/users{uuid.uuid4().hex[:8]}/bob"
    result = _user(site, "publish", "clobber", "--registry", users)
    assert result.returncode == 2
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert ":3: pip: the pip wheels (msgpack==1.1.0) would overwrite " in line
    assert "site-packages/msgpack/" in line and "msgpack-python of physlite" in line
    assert site.proxy.pushed_bytes == 0 and not site.proxy.uploaded
    assert not (site.users / "build" / "clobber" / "published.json").exists()


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        (
            "bigconda",
            f"dependencies: [{ADDED_CONDA[0]}]\n",
            "installing the additions (linux-64): stopped, the additions would be more than",
        ),
        ("bigwheel", f"pip: ['{ADDED_PIP}']\n", "the pip pins"),
    ],
)
def test_additions_past_the_uncompressed_cap_are_refused_while_installing(
    site: Site, name: str, body: str, says: str
) -> None:
    """What the additions expand to is bounded while they install (`--max-installed-mb`,
    which the hub service sets from self_service.max_installed_mb), for conda packages and
    wheels alike: past it, nothing is published."""
    _user_spec(site, name, f"description: too large for this hub\n{body}")
    assert _user(site, "lock", name).returncode == 0
    site.proxy.reset()
    users = f"{site.proxy.address}/users{uuid.uuid4().hex[:8]}/carol"
    result = _user(site, "publish", name, "--registry", users, "--max-installed-mb", "0.01")
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert says in line and "0.01 MB uncompressed" in line, line
    assert site.proxy.pushed_bytes == 0 and not site.proxy.uploaded
    assert not (site.users / "build" / name / "published.json").exists()
