"""Registry credentials go to the registry's own origin, and to nothing else.

Each test runs the client against real HTTP servers: a fake but real registry on
127.0.0.1 (`OciServer`: enough of the distribution API to push and fetch), and storage,
redirectors and token realms on 127.0.0.2 and 127.0.0.3, which are other hosts to an HTTP
client. Every server records each request's method, path and Authorization, and each test
checks what EACH server received. No Docker: the whole file runs in seconds.

The https-or-loopback rule for token realms is checked as a pure function too, with
names such as auth.example.com that no live server here could have.
"""

from __future__ import annotations

import base64
import json
import logging
import traceback

import pytest

from buildtool.common import BuildToolError
from buildtool.image import Blob
from buildtool.publish import Credentials, Origin, Registry, realm_may_receive_credentials
from devsupport.servers import (
    OciServer,
    OciStore,
    RecordingServer,
    Redirector,
    TokenService,
    start,
)

USER, PASSWORD = "pusher", "s3cret-Pa55-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "tok-registry-only-7f3a"
BEARER = f"Bearer {TOKEN}"
SECRETS = (PASSWORD, BASIC.split()[1], TOKEN)
NAME = "team/app"


def client(registry: OciServer, password: str = PASSWORD) -> Registry:
    assert registry.address.startswith("127.0.0.1:")
    return Registry(registry.address, Credentials(USER, password), timeout=10)


def blob(size: int = 5000) -> Blob:
    return Blob.of(
        bytes(range(256)) * (size // 256) + b"x" * (size % 256), "application/octet-stream"
    )


def manifest(layer: Blob) -> Blob:
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": layer.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Blob.of(json.dumps(document).encode(), "application/vnd.oci.image.manifest.v1+json")


def methods(server: RecordingServer) -> list[str]:
    return [r.method for r in server.received]


# -- the rules as pure functions --------------------------------------------------------
REGISTRY_ORIGIN = Origin("https", "registry.example.com", 443)


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("https://auth.example.com/token", True),
        ("https://auth.example.com:8443/token", True),
        ("http://auth.example.com/token", False),
        ("http://auth.example.com:443/token", False),  # the port does not make it https
        ("http://localhost:8080/token", True),
        ("http://LOCALHOST/token", True),
        ("http://127.0.0.1:5001/token", True),
        ("http://127.0.0.2/token", True),
        ("http://127.255.255.254/token", True),
        ("http://[::1]:5001/token", True),
        ("http://128.0.0.1/token", False),
        ("http://10.0.0.1/token", False),
        ("http://localhost.example.com/token", False),
        ("http://127.0.0.1.nip.io/token", False),  # a name, resolved wherever DNS says
        ("http://[::2]/token", False),
        ("http://registry.example.com/token", False),  # the registry's host, not its origin
        ("https://registry.example.com/token", True),
    ],
)
def test_a_realm_gets_basic_only_over_https_or_on_loopback(realm: str, allowed: bool) -> None:
    assert realm_may_receive_credentials(realm, REGISTRY_ORIGIN) is allowed


def test_an_origin_is_scheme_host_and_port_exactly() -> None:
    assert Origin.of("https://Registry.Example.com/v2/") == REGISTRY_ORIGIN
    assert Origin.of("https://registry.example.com:443/x?y=1") == REGISTRY_ORIGIN
    assert Origin.of("http://registry.example.com/v2/") != REGISTRY_ORIGIN  # https -> http
    assert Origin.of("http://registry.example.com:443/") != REGISTRY_ORIGIN
    assert Origin.of("https://registry.example.com:8443/") != REGISTRY_ORIGIN  # another port
    assert Origin.of("https://blobs.registry.example.com/") != REGISTRY_ORIGIN  # a subdomain
    assert Origin.of("http://127.0.0.1:5000/") != Origin.of("http://127.0.0.1:5001/")
    assert Origin.of("http://[::1]:5000/") == Origin("http", "::1", 5000)
    assert str(Origin.of("http://[::1]:5000/")) == "http://[::1]:5000"


# -- live: uploads, realms, redirect chains ---------------------------------------------
@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_an_upload_location_on_another_host_gets_no_credentials(
    servers: list[RecordingServer], auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry hands the upload to storage on 127.0.0.2 (as registries backed by
    object storage do): the upload goes there, in several PATCHes and a PUT, bare."""
    monkeypatch.setattr(Registry, "CHUNK", 1024)  # several PATCHes, small blob
    store = OciStore()
    storage = start(servers, OciServer("127.0.0.2", store=store))
    if auth == "basic":
        realm, wanted, challenge = None, BASIC, 'Basic realm="fake"'
    else:
        realm = start(servers, TokenService("127.0.0.3", TOKEN, basic=BASIC))
        wanted, challenge = BEARER, f'Bearer realm="{realm.url}/token",service="fake"'
    registry = start(
        servers,
        OciServer(
            store=store,
            authorization=wanted,
            challenge=challenge,
            upload_base=storage.url,
        ),
    )
    assert isinstance(registry, OciServer)
    layer = blob(5000)
    client_ = client(registry)

    client_.push_blob(NAME, layer)
    assert client_.get_blob(NAME, layer.digest) == layer.data  # stored, and it reads back

    assert methods(storage) == ["PATCH"] * 5 + ["PUT"]
    assert storage.authorizations() == [None] * 6
    assert set(registry.authorizations()) == {None, wanted}  # the challenge, then ours
    assert "POST" in methods(registry) and "PATCH" not in methods(registry)
    if realm is not None:
        assert set(realm.authorizations()) == {BASIC}


def test_a_loopback_http_realm_gets_basic_once_per_token_and_the_registry_only_bearer(
    servers: list[RecordingServer],
) -> None:
    realm = start(servers, TokenService("127.0.0.2", TOKEN, basic=BASIC))
    challenge = f'Bearer realm="{realm.url}/token",service="fake"'
    registry = start(servers, OciServer(authorization=BEARER, challenge=challenge))
    assert isinstance(registry, OciServer)
    client_ = client(registry)
    layer = blob()

    client_.put_manifest(NAME, "v1", manifest(layer))
    assert realm.authorizations() == [BASIC]  # exactly once
    assert registry.authorizations() == [None, BEARER]

    client_.push_blob(NAME, layer)  # first under the pull scope: one more token
    client_.get_blob(NAME, layer.digest)
    client_.get_manifest(NAME, "v1")
    assert realm.authorizations() == [BASIC, BASIC]  # one per scope: pull,push and pull
    assert all("scope=repository" in r.path for r in realm.received)
    assert set(registry.authorizations()) == {None, BEARER}  # never Basic


def test_a_plain_http_realm_elsewhere_is_refused_before_anything_is_sent(
    servers: list[RecordingServer],
) -> None:
    challenge = 'Bearer realm="http://auth.example.com/token",service="fake"'
    registry = start(servers, OciServer(authorization=BEARER, challenge=challenge))
    with pytest.raises(BuildToolError) as refused:
        client(registry).get_manifest(NAME, "v1")
    message = str(refused.value)
    assert "\n" not in message
    assert registry.address in message and "http://auth.example.com:80" in message
    assert not any(secret in message for secret in SECRETS)
    assert registry.authorizations() == [None]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH"])
def test_a_redirect_chain_to_two_other_hosts_carries_no_credentials(
    servers: list[RecordingServer], method: str
) -> None:
    """127.0.0.1 (the registry) -307-> 127.0.0.2 -307-> 127.0.0.3 (storage)."""
    store = OciStore()
    storage = start(servers, OciServer("127.0.0.3", store=store))
    hop = start(servers, Redirector("127.0.0.2", storage.url))
    registry = start(
        servers,
        OciServer(
            store=store,
            authorization=BASIC,
            redirect_to=hop.url,
            redirect_methods=frozenset({method}),
        ),
    )
    assert isinstance(registry, OciServer)
    client_ = client(registry)
    layer = blob()
    if method in ("GET", "HEAD"):
        store.blobs[layer.digest] = layer.data or b""
    if method == "GET":
        assert client_.get_blob(NAME, layer.digest) == layer.data
    elif method == "HEAD":
        assert client_.blob_exists(NAME, layer.digest)
    elif method == "PUT":
        assert client_.put_manifest(NAME, "v1", manifest(layer)) == manifest(layer).digest
    else:
        client_.push_blob(NAME, layer)
        assert store.blobs[layer.digest] == layer.data

    assert method in methods(hop) and method in methods(storage)
    assert hop.authorizations() == [None] * len(hop.received)
    assert storage.authorizations() == [None] * len(storage.received)
    assert BASIC in registry.authorizations()  # the registry itself did get them


class Bouncer(RecordingServer):
    """A registry whose manifests are elsewhere: with our credentials, a GET gets a 307 to
    `elsewhere`, which sends it back here under /back/, served to anyone."""

    elsewhere = ""

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        if path.startswith("/back/"):
            return 200, {"Content-Type": "application/json"}, b"{}"
        if authorization != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 307, {"Location": self.elsewhere + path}, b""


def test_a_chain_that_leaves_and_comes_back_stays_without_credentials(
    servers: list[RecordingServer],
) -> None:
    """127.0.0.1:A -307-> 127.0.0.2 -307-> 127.0.0.1:A again: whoever sent us back there
    chose the path, so the credentials do not come back with it."""
    registry = start(servers, Bouncer("127.0.0.1"))
    assert isinstance(registry, Bouncer)
    away = start(servers, Redirector("127.0.0.2", registry.url + "/back"))
    registry.elsewhere = away.url

    assert client(registry).get_manifest(NAME, "v1") == "{}"  # type: ignore[arg-type]
    assert [(r.path.split("/")[1], r.authorization) for r in registry.received] == [
        ("v2", None),
        ("v2", BASIC),
        ("back", None),
    ]
    assert away.authorizations() == [None]


def test_a_realm_that_redirects_elsewhere_passes_no_basic_on(
    servers: list[RecordingServer],
) -> None:
    """The realm on 127.0.0.2 (loopback: allowed) redirects to a token service on
    127.0.0.3 that hands out tokens to anyone: the login works, and Basic stops at .2."""
    tokens = start(servers, TokenService("127.0.0.3", TOKEN, basic=None))
    realm = start(servers, Redirector("127.0.0.2", tokens.url))
    challenge = f'Bearer realm="{realm.url}/token",service="fake"'
    registry = start(servers, OciServer(authorization=BEARER, challenge=challenge))

    assert client(registry).get_manifest(NAME, "v1") is None  # 404: logged in, nothing there
    assert realm.authorizations() == [BASIC]
    assert tokens.authorizations() == [None]
    assert registry.authorizations() == [None, BEARER]


def test_a_realm_redirect_to_a_service_that_wants_basic_fails_without_sending_it(
    servers: list[RecordingServer],
) -> None:
    tokens = start(servers, TokenService("127.0.0.3", TOKEN, basic=BASIC))
    realm = start(servers, Redirector("127.0.0.2", tokens.url))
    challenge = f'Bearer realm="{realm.url}/token",service="fake"'
    registry = start(servers, OciServer(authorization=BEARER, challenge=challenge))

    with pytest.raises(BuildToolError, match="login refused"):
        client(registry).get_manifest(NAME, "v1")
    assert tokens.authorizations() == [None]


def test_another_port_on_the_same_host_is_another_origin(servers: list[RecordingServer]) -> None:
    """Uploads handed to, and blob reads redirected to, 127.0.0.1:B from 127.0.0.1:A."""
    store = OciStore()
    other_port = start(servers, OciServer("127.0.0.1", store=store))
    registry = start(
        servers,
        OciServer(
            store=store,
            authorization=BASIC,
            upload_base=other_port.url,
            redirect_to=other_port.url,
            redirect_methods=frozenset({"GET"}),
        ),
    )
    assert isinstance(registry, OciServer)
    assert registry.address != other_port.address
    client_ = client(registry)
    layer = blob()

    client_.push_blob(NAME, layer)
    assert client_.get_blob(NAME, layer.digest) == layer.data
    assert methods(other_port) == ["PATCH", "PUT", "GET"]
    assert other_port.authorizations() == [None, None, None]
    assert BASIC in registry.authorizations()


def test_storage_that_wants_credentials_gets_none_and_the_push_fails_in_one_line(
    servers: list[RecordingServer],
) -> None:
    store = OciStore()
    storage = start(servers, OciServer("127.0.0.2", store=store, authorization=BASIC))
    registry = start(servers, OciServer(store=store, authorization=BASIC, upload_base=storage.url))
    with pytest.raises(BuildToolError) as refused:
        client(registry).push_blob(NAME, blob())
    message = str(refused.value)
    assert storage.address in message and "wants credentials" in message
    assert "\n" not in message and not any(secret in message for secret in SECRETS)
    assert storage.authorizations() == [None]  # asked once, bare; never retried with ours


# -- nothing secret in messages, reprs or logs ------------------------------------------
class EmptyRealm(RecordingServer):
    """A token realm that answers 200 with no token in it."""

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        return 200, {"Content-Type": "application/json"}, b"{}"


def test_credentials_appear_in_no_message_repr_or_log(
    servers: list[RecordingServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refusing_realm = start(servers, TokenService("127.0.0.2", TOKEN, basic="Basic other"))
    empty_realm = start(servers, EmptyRealm("127.0.0.3"))
    storage = start(servers, OciServer("127.0.0.2", authorization=BASIC))
    cases = {
        "wrong password": (OciServer(authorization=BASIC), "not-" + PASSWORD),
        "realm refuses": (
            OciServer(authorization=BEARER, challenge=(f'Bearer realm="{refusing_realm.url}/t"')),
            PASSWORD,
        ),
        "realm gives no token": (
            OciServer(authorization=BEARER, challenge=(f'Bearer realm="{empty_realm.url}/t"')),
            PASSWORD,
        ),
        "realm over http elsewhere": (
            OciServer(authorization=BEARER, challenge=('Bearer realm="http://auth.example.com/t"')),
            PASSWORD,
        ),
        "storage wants credentials": (
            OciServer(authorization=BASIC, upload_base=storage.url),
            PASSWORD,
        ),
    }
    messages = []
    for label, (registry, password) in cases.items():
        start(servers, registry)
        client_ = client(registry, password)
        assert not any(secret in repr(client_) for secret in SECRETS)
        with pytest.raises(BuildToolError) as failed:
            client_.push_blob(NAME, blob())
        error = failed.value
        shown = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        messages.append(f"{label}: {error}\n{error!r}\n{shown}")
    unreachable = Registry("127.0.0.1:9", Credentials(USER, PASSWORD), timeout=5)
    with pytest.raises(BuildToolError, match="cannot reach the registry") as failed:
        unreachable.get_manifest(NAME, "v1")
    messages.append(str(failed.value))
    messages.append(repr(Credentials(USER, PASSWORD)))
    messages.append(caplog.text)

    everything = "\n".join(messages)
    assert "credentials refused" in everything and "login refused" in everything
    assert "without a token" in everything and "refusing to send" in everything
    for secret in SECRETS:
        assert secret not in everything
