"""A read-only client for a registry's HTTP API (the OCI distribution spec), enough to
read the SBOM that ``buildtool publish`` attaches to each image.

Why hand-written: compat installs with PyYAML alone (``pip install ./compat`` in a
notebook), so it can use neither an OCI library nor buildtool's own client. It only GETs:

* a manifest by tag or digest (OCI and Docker v2 types), following an index to one
  platform's manifest;
* the referrers tag ``sha256-<hex>`` of that manifest: an index of the artifacts whose
  subject it is, among them the CycloneDX SBOM (``artifactType``
  ``application/vnd.cyclonedx+json``), the one way ``buildtool.publish.sbom`` lists it;
* blobs, each checked against its digest and size.

Everything read is checked before it is used: a manifest fetched by digest must have
that digest, and every answer has a size limit; every request has a timeout. Where
requests and credentials may go is `compat.registry_rules` (http only on this machine's
loopback; credentials only to the registry they are for, and to a token realm over https
or on loopback; redirects followed here, without credentials once they leave the
registry). A reference read from the command line names the registry the environment's
REGISTRY_USER and REGISTRY_PASSWORD are for, unless REGISTRY names another.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from compat import registry_rules as rules
from compat.model import CheckError
from compat.registry_rules import (
    MAX_REDIRECTS,
    REDIRECTS,
    SHA256,
    Credentials,
    Origin,
    Reference,
    display_url,
    realm_may_receive_credentials,
)
from compat.vocabulary import CLIENT_ARTIFACT_TYPE, TITLE_LABEL

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
#: What ``buildtool.publish.sbom`` attaches: the artifact type and its one layer's media type.
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"

DEFAULT_TIMEOUT_S = 30.0
#: Registries must accept manifests of 4 MiB; none here is larger.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: An SBOM of a large image is a few MiB.
MAX_BLOB_BYTES = 64 * 1024 * 1024
#: ``docker.io`` names Docker Hub, whose API lives elsewhere; its docker config key too.
_SHA256 = re.compile(SHA256, re.ASCII)


class RegistryError(CheckError):
    """The registry could not be read, or answered with something unusable (exit code 2)."""


def _origin(url: str) -> Origin:
    return rules.checked(RegistryError, Origin.of, url)


def parse_reference(text: str) -> Reference:
    """An image reference as `docker pull` reads it (`registry_rules.parse_reference`)."""
    return rules.checked(RegistryError, rules.parse_reference, text)


def credentials_for(host: str) -> Credentials | None:
    """`registry_rules.credentials_for`, the registry a reader reads being the one the
    user named."""
    return rules.checked(RegistryError, rules.credentials_for, host, host)


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, as ``docker pull --platform`` takes it."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
            raise RegistryError(f"{text!r} is not a platform (os/architecture[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, described: dict[str, Any]) -> bool:
        """Whether an index entry's or an image config's platform is this one."""
        same = described.get("os") == self.os and described.get("architecture") == self.architecture
        return same and (self.variant is None or described.get("variant") == self.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# -- transport -------------------------------------------------------------------------------
OPENER = urllib.request.build_opener(rules.NoRedirects)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # the URL that answered, after any redirects

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def _read(response: Any, limit: int, url: str) -> bytes:
    body = response.read(limit + 1)
    if len(body) > limit:
        raise RegistryError(f"{display_url(url)}: the answer is larger than {limit} bytes")
    return body


class Client:
    """GETs from one registry, ``host[:port]`` as an image reference names it."""

    def __init__(
        self, host: str, credentials: Credentials | None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base = rules.base_url(host)
        self.host = host
        self.origin = _origin(self.base)
        self.credentials = credentials
        self.timeout = timeout
        self._auth: dict[str, str] = {}  # scope -> Authorization value ("*": Basic)

    def __repr__(self) -> str:  # never the credentials nor the tokens
        return f"Client({self.base!r})"

    def _exchange(
        self,
        url: str,
        headers: dict[str, str],
        authorization: str | None,
        trusted: Origin,
        limit: int,
    ) -> Answer:
        """One GET and its redirects. ``authorization`` goes only to ``trusted``, and only
        until a redirect leaves it: the rest of the chain goes without it."""
        for _ in range(MAX_REDIRECTS + 1):
            here = _origin(url)
            sent = dict(headers)
            if authorization is not None and here == trusted:
                sent["Authorization"] = authorization
            request = urllib.request.Request(url, method="GET", headers=sent)
            try:
                with OPENER.open(request, timeout=self.timeout) as response:
                    return Answer(
                        response.status, dict(response.headers), _read(response, limit, url), url
                    )
            except urllib.error.HTTPError as exc:
                answer = Answer(exc.code, dict(exc.headers or {}), b"", url)
                exc.close()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                where = "the registry" if here == self.origin else str(here)
                raise RegistryError(f"{self.host}: cannot reach {where} ({reason})") from None
            location = answer.header("Location")
            if answer.status not in REDIRECTS or location is None:
                return answer
            target = urllib.parse.urljoin(url, location)
            if _origin(target) != here:
                authorization = None  # left the origin: never again in this chain
            url = target
        raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    def _authorize(self, challenge: str, scope: str) -> str:
        """The Authorization value a 401's challenge asks for."""
        basic = self.credentials.basic() if self.credentials is not None else None
        if not challenge.lower().startswith("bearer"):
            if basic is None:
                raise RegistryError(
                    f"{self.host}: the registry wants credentials; set REGISTRY_USER and "
                    "REGISTRY_PASSWORD, or `docker login`"
                )
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{self.host}: a Bearer challenge without a token realm")
        realm_origin = _origin(realm)
        if not realm_may_receive_credentials(realm, self.origin):
            raise RegistryError(
                f"{self.host}: refusing the token realm {realm_origin}: plain http to a "
                "host that is not this machine"
            )
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}"
        answer = self._exchange(url, {}, basic, realm_origin, MAX_MANIFEST_BYTES)
        if answer.status != 200:
            refused = "login refused" if basic else "no anonymous access"
            raise RegistryError(f"{self.host}: {refused} ({answer.status} from {realm_origin})")
        try:
            token = json.loads(answer.body)
            value = token.get("token") or token["access_token"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(
                f"{self.host}: the token realm {realm_origin} answered without a token"
            ) from None
        if not isinstance(value, str) or not value.isprintable():
            raise RegistryError(f"{self.host}: the token realm {realm_origin} gave no usable token")
        return f"Bearer {value}"

    def get(self, name: str, path: str, accept: str | None, limit: int) -> Answer | None:
        """``/v2/<name>/<path>``: the answer, or None for a 404; other failures raise."""
        url = f"{self.base}/v2/{name}/{path}"
        scope = f"repository:{name}:pull"
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            known = self._auth.get(scope) or self._auth.get("*")
            answer = self._exchange(url, headers, known, self.origin, limit)
            if answer.status == 200:
                return answer
            if answer.status == 404:
                return None
            if answer.status == 401 and _origin(answer.url) != self.origin:
                raise RegistryError(
                    f"{self.host}: {_origin(answer.url)} wants credentials for "
                    f"{display_url(answer.url)}; the registry's go only to {self.origin}"
                )
            if answer.status == 401 and attempt == 0:
                value = self._authorize(answer.header("WWW-Authenticate") or "Basic", scope)
                self._auth["*" if value.startswith("Basic") else scope] = value
                continue
            if answer.status == 401:
                raise RegistryError(f"{self.host}: credentials refused for {name}")
            raise RegistryError(f"GET {display_url(answer.url)}: HTTP {answer.status}")
        raise AssertionError("unreachable")

    def manifest(self, name: str, reference: str) -> Manifest | None:
        """A manifest or index by tag or digest (checked), or None if there is none."""
        answer = self.get(
            name, f"manifests/{reference}", ", ".join(MANIFEST_TYPES), MAX_MANIFEST_BYTES
        )
        if answer is None:
            return None
        digest = f"sha256:{hashlib.sha256(answer.body).hexdigest()}"
        claimed = answer.header("Docker-Content-Digest")
        expected = reference if _SHA256.fullmatch(reference) else claimed
        if expected is not None and _SHA256.fullmatch(expected) and expected != digest:
            raise RegistryError(f"{self.host}/{name}: manifest {reference} has another digest")
        try:
            document = json.loads(answer.body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise RegistryError(f"{self.host}/{name}: manifest {reference} is not a JSON object")
        media_type = document.get("mediaType") or answer.header("Content-Type") or ""
        return Manifest(digest, str(media_type).split(";")[0].strip(), document)

    def blob(self, name: str, descriptor: dict[str, Any]) -> bytes:
        """The blob a descriptor names, checked against its digest and size."""
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise RegistryError(f"{self.host}/{name}: a descriptor without a sha256 digest")
        if not isinstance(size, int) or not 0 <= size <= MAX_BLOB_BYTES:
            raise RegistryError(f"{self.host}/{name}: blob {digest} has no usable size")
        answer = self.get(name, f"blobs/{digest}", None, size)
        if answer is None:
            raise RegistryError(f"{self.host}/{name}: blob {digest} not found")
        if (
            len(answer.body) != size
            or f"sha256:{hashlib.sha256(answer.body).hexdigest()}" != digest
        ):
            raise RegistryError(f"{self.host}/{name}: blob {digest} came back with other content")
        return answer.body


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    document: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (
            "manifests" in self.document and "layers" not in self.document
        )


# -- what preflight reads ----------------------------------------------------------------------
@dataclass(frozen=True)
class Sbom:
    """An image's SBOM as found in the registry."""

    reference: Reference
    platform: Platform
    #: the platform's image manifest, the SBOM's subject
    manifest: str
    document: dict[str, Any]


def _json_list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise RegistryError(f"{where}: not a list of descriptors")
    return value


def platform_manifest(client: Client, reference: Reference, platform: Platform) -> Manifest:
    """The image manifest of ``platform`` that ``reference`` names, directly or by index."""
    where = str(reference)
    top = client.manifest(reference.name, reference.reference)
    if top is None:
        raise RegistryError(f"{where}: not found")
    if top.is_index:
        entries = _json_list(top.document.get("manifests"), where)
        chosen = [e for e in entries if platform.matches(e.get("platform") or {})]
        if not chosen:
            have = sorted(
                {
                    "/".join(str(p.get(k)) for k in ("os", "architecture") if p.get(k))
                    for e in entries
                    if isinstance(p := e.get("platform"), dict)
                }
            )
            raise RegistryError(f"{where}: no {platform} image (it has: {', '.join(have)})")
        digest = chosen[0].get("digest")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise RegistryError(f"{where}: the {platform} entry has no sha256 digest")
        manifest = client.manifest(reference.name, digest)
        if manifest is None:
            raise RegistryError(f"{where}: its {platform} manifest {digest} is missing")
        if manifest.is_index:
            raise RegistryError(f"{where}: the {platform} entry is an index, not an image")
        return manifest
    # One manifest: its config says which platform it is.
    config = top.document.get("config")
    if not isinstance(config, dict) or config.get("mediaType") not in CONFIG_TYPES:
        raise RegistryError(f"{where}: not an image manifest (no image config)")
    try:
        described = json.loads(client.blob(reference.name, config))
    except ValueError:
        described = None
    if not isinstance(described, dict):
        raise RegistryError(f"{where}: its image config is not a JSON object")
    if not platform.matches(described):
        found = Platform(str(described.get("os")), str(described.get("architecture")))
        raise RegistryError(
            f"{where}: the image is {found}, not {platform}; pass --platform {found}"
        )
    return top


def sbom_of(client: Client, name: str, manifest: str, where: str) -> dict[str, Any]:
    """The CycloneDX document attached to ``manifest``, through the referrers tag."""
    tag = manifest.replace(":", "-")
    listing = client.manifest(name, tag)
    entries = _json_list(listing.document.get("manifests"), f"{where} referrers") if listing else []
    artifacts = [e for e in entries if e.get("artifactType") == SBOM_MEDIA_TYPE]
    if not artifacts:
        raise RegistryError(f"{where}: no SBOM attached (nothing under the referrers tag {tag})")
    # `buildtool.publish.sbom.attach` lists the newest last.
    artifact_digest = artifacts[-1].get("digest")
    if not isinstance(artifact_digest, str) or not _SHA256.fullmatch(artifact_digest):
        raise RegistryError(f"{where}: the SBOM entry has no sha256 digest")
    artifact = client.manifest(name, artifact_digest)
    if artifact is None:
        raise RegistryError(f"{where}: the SBOM manifest {artifact_digest} is missing")
    subject = artifact.document.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != manifest:
        raise RegistryError(f"{where}: the SBOM {artifact_digest} is about another image")
    layers = _json_list(artifact.document.get("layers"), f"{where} SBOM")
    documents = [layer for layer in layers if layer.get("mediaType") == SBOM_MEDIA_TYPE]
    if len(documents) != 1:
        raise RegistryError(f"{where}: the SBOM {artifact_digest} has no one CycloneDX layer")
    try:
        document = json.loads(client.blob(name, documents[0]))
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise RegistryError(f"{where}: the SBOM {artifact_digest} is not a CycloneDX document")
    return document


def read_client_file(text: str, title: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The client file `title` attached to the image ``text`` names (by the digest users
    pull: a single manifest's, or its index's)."""
    reference = parse_reference(text)
    client = Client(reference.host, credentials_for(reference.host), timeout)
    top = client.manifest(reference.name, reference.reference)
    if top is None:
        raise RegistryError(f"{reference}: no such image")
    tag = top.digest.replace(":", "-")
    listing = client.manifest(reference.name, tag)
    entries = (
        _json_list(listing.document.get("manifests"), f"{reference} referrers") if listing else []
    )
    artifacts = [e for e in entries if e.get("artifactType") == CLIENT_ARTIFACT_TYPE]
    for entry in reversed(artifacts):  # the newest last
        digest = entry.get("digest")
        artifact = client.manifest(reference.name, digest) if isinstance(digest, str) else None
        if artifact is None or artifact.document.get("subject", {}).get("digest") != top.digest:
            continue
        for layer in _json_list(artifact.document.get("layers"), f"{reference} client pins"):
            if layer.get("annotations", {}).get(TITLE_LABEL) == title:
                return client.blob(reference.name, layer).decode()
    raise RegistryError(f"{reference}: no {title} attached (published before full pins were)")


def read_sbom(text: str, platform: str, timeout: float = DEFAULT_TIMEOUT_S) -> Sbom:
    """The SBOM of the image ``text`` names, for ``platform`` (``os/arch[/variant]``)."""
    reference = parse_reference(text)
    wanted = Platform.parse(platform)
    client = Client(reference.host, credentials_for(reference.host), timeout)
    manifest = platform_manifest(client, reference, wanted)
    document = sbom_of(client, reference.name, manifest.digest, str(reference))
    return Sbom(reference, wanted, manifest.digest, document)
