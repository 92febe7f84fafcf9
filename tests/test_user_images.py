"""Users' own pairs (site.yaml `user_images`), enforced where images start.

- Small synthetic pairs are pushed into the real local registry (127.0.0.1:5000, htpasswd)
  under a namespace of this run's own, for alice and bob: a worker image, and a notebook
  image whose config labels `io.daskhub.worker-image` with that worker by digest (alice's
  as an OCI index whose first entry is a BuildKit-style attestation, bob's as a manifest).
- The real dask-gateway server runs the generated handler (`devsupport.chart.chart_gateway`)
  with the registry's pull credentials in its environment, and the deployment's own client
  code asks it for clusters as alice and as bob.
- The real KubeSpawner runs the hub's generated extraConfig, loaded as the jupyterhub chart
  loads it (`devsupport.chart.hub_spawn`), for alice's and bob's choices.
- The handler's registry reads (the same code, `buildtool.site.namespaces`) run against small
  real HTTP servers (`devsupport.servers`) for what the local registry cannot show: the
  Bearer flow, a token realm it must not trust, blobs behind a redirect, a wrong manifest.
"""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from buildtool.image import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    canonical_json,
    sha256_digest,
)
from buildtool.publish import Credentials, Registry
from buildtool.site import (
    OWN_IMAGE_SLUG,
    REGISTRY_PASSWORD_ENV,
    REGISTRY_USER_ENV,
    NamespaceError,
    dump_helm_values,
    forget_worker_labels,
    generate_helm_values,
    user_prefix,
    user_worker_image,
)
from compat.vocabulary import ROLE_LABEL, WORKER_LABEL
from devsupport.chart import IMAGE_ENV, chart_gateway, hub_spawn
from devsupport.localregistry import RegistryCredentials, registry_credentials
from devsupport.published import write_published
from devsupport.servers import OciServer, OciStore, RecordingServer, TokenService, start

pytestmark = pytest.mark.registry

NOTEBOOK_REPOSITORY, WORKER_REPOSITORY = "jupyter-myenv", "dask-gateway-myenv"


@dataclass(frozen=True)
class UserPair:
    notebook: str  # by digest
    worker: str  # by digest


@dataclass(frozen=True)
class Pushed:
    template: str
    alice: UserPair
    bob: UserPair
    #: in alice's namespace, a notebook whose label names bob's worker
    astray: str


def _image(text: str, labels: dict[str, str], env: list[str]) -> tuple[list[Blob], Blob]:
    """A one-layer linux/amd64 image: its blobs (layer, config) and its OCI manifest."""
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/daskhub-user-image")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = Blob.of(gzip.compress(buffer.getvalue(), mtime=0), OCI_LAYER_GZIP)
    config = Blob.of(
        canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": labels, "Env": env},
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(buffer.getvalue())]},
            }
        ),
        OCI_CONFIG,
    )
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return [layer, config], Blob.of(canonical_json(document), OCI_MANIFEST)


def _push(
    registry: Registry, repository: str, blobs: list[Blob], manifest: Blob, tag: str = ""
) -> str:
    """Push to `repository` (with its host); the reference by digest."""
    name = repository.split("/", 1)[1]
    for blob in blobs:
        registry.push_blob(name, blob)
    registry.put_manifest(name, manifest.digest, manifest)
    if tag:
        registry.put_manifest(name, tag, manifest)
    return f"{repository}@{manifest.digest}"


def _notebook(registry: Registry, repository: str, worker: str, index: bool) -> str:
    """A notebook image naming `worker` as the site pairs' Dockerfile does (label and
    variable); as an index, after a BuildKit-style attestation without the label."""
    labels = {ROLE_LABEL: "notebook", WORKER_LABEL: worker}
    blobs, manifest = _image(f"{repository} notebook", labels, [f"{IMAGE_ENV}={worker}"])
    ref = _push(registry, repository, blobs, manifest)
    if not index:
        return ref
    blobs, attestation = _image(f"{repository} attestation", {}, [])
    _push(registry, repository, blobs, attestation)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            attestation.descriptor(
                platform={"os": "unknown", "architecture": "unknown"},
                annotations={
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": manifest.digest,
                },
            ),
            manifest.descriptor(platform={"os": "linux", "architecture": "amd64"}),
        ],
    }
    return _push(registry, repository, [], Blob.of(canonical_json(document), OCI_INDEX))


def _pair(registry: Registry, prefix: str, index: bool) -> UserPair:
    blobs, manifest = _image(f"{prefix} worker", {"io.daskhub.role": "worker"}, [])
    worker = _push(registry, f"{prefix}/{WORKER_REPOSITORY}", blobs, manifest, tag="latest")
    return UserPair(_notebook(registry, f"{prefix}/{NOTEBOOK_REPOSITORY}", worker, index), worker)


@pytest.fixture(scope="module")
def credentials() -> RegistryCredentials:
    return registry_credentials()


@pytest.fixture(scope="module")
def pushed(credentials: RegistryCredentials) -> Pushed:
    template = f"{credentials.registry}/usertest{uuid.uuid4().hex[:12]}/{{username}}"
    registry = Registry(
        credentials.registry, Credentials(credentials.user, credentials.password), timeout=60
    )
    alice = _pair(registry, user_prefix(template, "alice"), index=True)
    bob = _pair(registry, user_prefix(template, "bob"), index=False)
    astray = _notebook(
        registry, f"{user_prefix(template, 'alice')}/jupyter-astray", bob.worker, index=False
    )
    return Pushed(template, alice, bob, astray)


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Each test reads the registry itself: the module keeps answers per process."""
    forget_worker_labels()


@pytest.fixture
def published(tmp_path: Path) -> dict[str, dict]:
    return {name: write_published(tmp_path / "build", name) for name in ("e2e", "physlite")}


@pytest.fixture
def values(envroot: Path, tmp_path: Path, pushed: Pushed, published: dict[str, dict]) -> dict:
    """The values as the chart reads them: written, and read back."""
    (envroot / "site.yaml").write_text(
        f"profiles: {{default: physlite, hidden: [e2e]}}\nuser_images: {pushed.template}\n"
    )
    return yaml.safe_load(dump_helm_values(generate_helm_values(envroot, tmp_path / "build")))


def _by_tag(reference: str) -> str:
    return reference.split("@")[0] + ":latest"


# -- the gateway -------------------------------------------------------------------------
def test_the_gateway_starts_a_users_own_images_by_digest_and_no_one_elses(
    values: dict,
    pushed: Pushed,
    published: dict[str, dict],
    credentials: RegistryCredentials,
    tmp_path: Path,
) -> None:
    alice, bob = pushed.alice, pushed.bob
    physlite = published["physlite"]["images"]
    alice_prefix, bob_prefix = (user_prefix(pushed.template, n) for n in ("alice", "bob"))
    env = {REGISTRY_USER_ENV: credentials.user, REGISTRY_PASSWORD_ENV: credentials.password}
    with chart_gateway(values, tmp_path / "gateway", env) as gateway:
        as_alice = gateway.attempts(
            {"image": alice.notebook},
            {"image": alice.worker, "worker_cores": 2},
            {"image": physlite["notebook"]["ref"]},
            {"image": _by_tag(alice.worker)},
            {"image": pushed.astray},
            {"image": bob.notebook},
            user="alice",
        )
        as_bob = gateway.attempts(
            {"image": bob.notebook},
            {"image": alice.notebook},
            {"image": alice.worker},
            user="bob",
        )
        log = gateway.log.read_text()

    accepted = as_alice[:3] + as_bob[:1]
    assert all("cluster" in result for result in accepted), (as_alice, as_bob)
    started = [gateway.config(result["cluster"])["image"] for result in accepted]
    # alice's notebook (an index) starts her worker by digest; her worker starts as it is;
    # a site notebook still starts its site worker; bob's notebook starts his worker.
    assert started == [alice.worker, alice.worker, physlite["worker"]["ref"], bob.worker]
    refused = [r.get("error") for r in as_alice[3:] + as_bob[1:]]
    assert refused == [
        f"ValueError: image {_by_tag(alice.worker)!r}: your own images start by digest only "
        f"({alice_prefix}/<repository>@sha256:<64 hex>), never by tag",
        f"ValueError: image {pushed.astray!r} names its worker {bob.worker!r}, which is not "
        "one of your own images by digest",
        f"ValueError: image {bob.notebook!r} is in another user's namespace; you may start "
        f"your own images only ({alice_prefix}/...)",
        f"ValueError: image {alice.notebook!r} is in another user's namespace; you may start "
        f"your own images only ({bob_prefix}/...)",
        f"ValueError: image {alice.worker!r} is in another user's namespace; you may start "
        f"your own images only ({bob_prefix}/...)",
    ]
    basic = base64.b64encode(f"{credentials.user}:{credentials.password}".encode()).decode()
    assert log and credentials.password not in log and basic not in log


# -- the hub -----------------------------------------------------------------------------
def _own(image: str) -> dict[str, str]:
    return {"profile": OWN_IMAGE_SLUG, "image--unlisted-choice": image}


def test_the_hub_offers_a_user_their_own_notebook_images_by_digest_and_no_one_elses(
    values: dict, pushed: Pushed, published: dict[str, dict], tmp_path: Path
) -> None:
    alice, bob = pushed.alice, pushed.bob
    requests: list[tuple[str | None, dict[str, str]]] = [
        ("alice", _own(alice.notebook)),
        ("bob", _own(bob.notebook)),
        ("bob", _own(alice.notebook)),
        ("alice", _own(_by_tag(alice.notebook))),
        ("alice", _own(alice.notebook + "\n")),
        ("alice", {"profile": OWN_IMAGE_SLUG}),
        ("_admin", _own(alice.notebook)),  # a name without a namespace
        ("alice", {"profile": "physlite"}),
        ("alice", {}),
    ]
    pods = hub_spawn(values["jupyterhub"], requests, tmp_path)

    for pod, image in zip(pods[:2], (alice.notebook, bob.notebook), strict=True):
        assert pod["image"] == pod["env"]["JUPYTER_IMAGE_SPEC"] == image
        # The image's own variable names its worker: the profile sets none.
        assert IMAGE_ENV not in pod["env"]
    refused = "ValueError: Received unlisted_choice for image that failed validation regex."
    assert [pod.get("error") for pod in pods[2:7]] == [
        refused,
        refused,
        refused,
        "ValueError: Unable to determine a default choice for image.",
        "ValueError: No such profile: own-image. Options include: physlite",
    ]
    # The site's profiles are as they were: the same pods as without user images.
    site_only = {"singleuser": values["jupyterhub"]["singleuser"]}
    before = hub_spawn(site_only, [("alice", {"profile": "physlite"})], tmp_path)
    assert pods[7] == pods[8] == before[0]
    assert before[0]["image"] == published["physlite"]["images"]["notebook"]["ref"]


# -- the registry reads, against small real servers ----------------------------------------
USER, PASSWORD = "gateway-puller", "pull-s3cret-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "tok-registry-only-9c1e"


@pytest.fixture
def pull_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_USER_ENV, USER)
    monkeypatch.setenv(REGISTRY_PASSWORD_ENV, PASSWORD)


def _serve(store: OciStore, address: str) -> tuple[str, UserPair]:
    """alice's pair in `store`, as the registry at `address` serves it; its template."""
    template = f"{address}/users/{{username}}"
    prefix = user_prefix(template, "alice")
    refs: dict[str, str] = {}
    for role in ("worker", "notebook"):
        labels = {WORKER_LABEL: refs["worker"]} if role == "notebook" else {}
        blobs, manifest = _image(f"alice {role}", labels, [])
        for blob in (*blobs, manifest):
            assert blob.data is not None
        store.blobs.update({blob.digest: blob.data for blob in blobs if blob.data})
        assert manifest.data is not None
        store.manifests[(f"users/alice/{role}", manifest.digest)] = (OCI_MANIFEST, manifest.data)
        refs[role] = f"{prefix}/{role}@{manifest.digest}"
    return template, UserPair(refs["notebook"], refs["worker"])


def test_a_bearer_token_is_fetched_with_the_credentials_and_only_the_token_reaches_the_registry(
    servers: list[RecordingServer], pull_credentials: None
) -> None:
    tokens = start(servers, TokenService("127.0.0.2", TOKEN, BASIC))
    store = OciStore()
    registry = OciServer(
        store=store,
        authorization=f"Bearer {TOKEN}",
        challenge=f'Bearer realm="{tokens.url}/token",service="registry"',
    )
    start(servers, registry)
    template, alice = _serve(store, registry.address)
    assert user_worker_image(template, alice.notebook, "alice") == alice.worker
    assert tokens.authorizations() == [BASIC]
    assert "scope=repository%3Ausers%2Falice%2Fnotebook%3Apull" in tokens.received[0].path
    assert set(registry.authorizations()) == {None, f"Bearer {TOKEN}"}
    # Read once per process: a second request reads nothing.
    count = len(registry.received)
    assert user_worker_image(template, alice.notebook, "alice") == alice.worker
    assert len(registry.received) == count


def test_a_token_realm_over_plain_http_elsewhere_never_gets_the_credentials(
    servers: list[RecordingServer], pull_credentials: None
) -> None:
    store = OciStore()
    registry = OciServer(
        store=store,
        authorization=f"Bearer {TOKEN}",
        challenge='Bearer realm="http://auth.example.com/token",service="registry"',
    )
    start(servers, registry)
    template, alice = _serve(store, registry.address)
    with pytest.raises(NamespaceError) as caught:
        user_worker_image(template, alice.notebook, "alice")
    assert str(caught.value) == (
        f"{registry.address}: refusing to send the registry credentials to the token realm "
        "http://auth.example.com:80: plain http to a host that is not this machine"
    )


def test_blobs_behind_a_redirect_to_another_origin_get_no_credentials(
    servers: list[RecordingServer], pull_credentials: None
) -> None:
    store = OciStore()
    storage = start(servers, OciServer("127.0.0.2", store=store))
    registry = OciServer(
        store=store,
        authorization=BASIC,
        redirect_to=storage.url,
        redirect_methods=frozenset({"GET"}),
    )
    start(servers, registry)
    template, alice = _serve(store, registry.address)
    assert user_worker_image(template, alice.notebook, "alice") == alice.worker
    assert storage.received and set(storage.authorizations()) == {None}
    assert set(registry.authorizations()) == {None, BASIC}


def test_a_manifest_that_is_not_the_digest_asked_for_is_refused(
    servers: list[RecordingServer], pull_credentials: None
) -> None:
    store = OciStore()
    registry = start(servers, OciServer(store=store, authorization=BASIC))
    template, alice = _serve(store, registry.address)
    name, digest = "users/alice/notebook", alice.notebook.split("@")[1]
    worker = ("users/alice/worker", alice.worker.split("@")[1])
    store.manifests[(name, digest)] = store.manifests[worker]  # the right type, other bytes
    with pytest.raises(NamespaceError, match="the registry sent another manifest"):
        user_worker_image(template, alice.notebook, "alice")


def test_the_real_registry_refuses_missing_and_wrong_credentials_in_words_without_them(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = pushed.template.split("/")[0]
    monkeypatch.delenv(REGISTRY_USER_ENV, raising=False)
    monkeypatch.delenv(REGISTRY_PASSWORD_ENV, raising=False)
    with pytest.raises(NamespaceError) as caught:
        user_worker_image(pushed.template, pushed.alice.notebook, "alice")
    assert str(caught.value) == (
        f"{host}: the registry wants credentials; the gateway has none "
        f"({REGISTRY_USER_ENV}, {REGISTRY_PASSWORD_ENV})"
    )
    monkeypatch.setenv(REGISTRY_USER_ENV, USER)
    monkeypatch.setenv(REGISTRY_PASSWORD_ENV, PASSWORD)
    with pytest.raises(NamespaceError) as caught:
        user_worker_image(pushed.template, pushed.alice.notebook, "alice")
    assert str(caught.value) == f"{host}: the registry refused the gateway's credentials"
    missing = pushed.alice.worker.split("@")[0] + "@sha256:" + "0" * 64
    monkeypatch.setenv(REGISTRY_USER_ENV, registry_credentials().user)
    monkeypatch.setenv(REGISTRY_PASSWORD_ENV, registry_credentials().password)
    with pytest.raises(NamespaceError, match=f"{WORKER_REPOSITORY}: manifests/sha256:0+ not found"):
        user_worker_image(pushed.template, missing, "alice")
