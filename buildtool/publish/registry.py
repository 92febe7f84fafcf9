"""A small client for the registry HTTP API (OCI distribution spec), enough to publish.

It speaks Basic auth and the Bearer token flow, by `compat.registry_rules`, the rules
every registry client of this project follows (which it states at length):

- Credentials come from REGISTRY_USER and REGISTRY_PASSWORD, for the configured registry
  only (REGISTRY's host, else the registry the command publishes to), or from the docker
  config's `auths`, each for its own host. They go only into request headers, never
  into messages, reprs or logs.
- They go only to the registry's own origin (scheme, host and port, exactly), and to the
  token realm a Bearer challenge names only over https, at the registry itself, or on
  this machine's loopback; any other realm is refused in one line before anything is
  sent to it.
- Redirects are followed here, not by urllib, for every method (307/308 keep the method
  and body). Once a redirect leaves the origin the credentials were meant for, the rest
  of the chain goes without `Authorization`, even if it comes back.
- An upload `Location` on another origin is followed, without credentials. The spec
  allows an absolute Location on another host, and registries that keep blobs in object
  storage hand out pre-signed upload and download URLs that carry their own
  authorization; Docker and containerd follow them and likewise send registry
  credentials only to the registry. Refusing would break pushes to those registries and
  protect nothing, since the credentials are withheld anyway. If such a host asks for
  credentials (401), the push fails in one line naming it.

What this module adds to the rules is what a push needs: every method, uploads, mounts,
the Bearer flow per scope. The redirect loop is written out rather than delegated to
urllib's handler (which copies `Authorization` to any host and follows redirects only for
GET, HEAD and POST) or to `requests` (not a dependency, and it re-adds .netrc credentials
on redirects): it is a few lines, and the rule is easier to check when it is in one place.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request

from buildtool.common import BuildToolError
from buildtool.image import OCI_INDEX, OCI_MANIFEST, Blob
from compat import registry_rules as rules
from compat.registry import OPENER, Answer
from compat.registry_rules import (
    MAX_REDIRECTS,
    REDIRECTS,
    Credentials,
    Origin,
    display_url,
    realm_may_receive_credentials,
)

MANIFEST_TYPES = (
    OCI_INDEX,
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def split_reference(repository: str) -> tuple[str, str]:
    """`host[:port]/name/space` -> (host, name/space)."""
    try:
        return rules.split_repository(repository)
    except rules.RegistryRuleError:
        raise BuildToolError(
            f"{repository!r}: publish needs a registry host, e.g. 127.0.0.1:5000/ns"
        ) from None


def credentials_for(host: str, configured: str | None) -> Credentials | None:
    """The credentials for `host` (`registry_rules.credentials_for`): the environment's
    only when `host` is the configured registry, REGISTRY's host or else `configured`
    (the registry the command publishes to)."""
    return rules.checked(BuildToolError, rules.credentials_for, host, configured)


def _origin(url: str) -> Origin:
    """`Origin.of`, failing as this tool fails (one line, no traceback)."""
    return rules.checked(BuildToolError, Origin.of, url)


# Basic credentials are the same for every scope: learnt once per registry.
_ANY_SCOPE = "*"


class Registry:
    """A registry's HTTP API, as a push needs it."""

    #: The bytes of one PATCH of an upload.
    CHUNK = 8 * 1024 * 1024

    def __init__(self, host: str, credentials: Credentials | None, timeout: float = 60) -> None:
        self.base = rules.base_url(host)
        self.host = host
        self.origin = _origin(self.base)
        self.credentials = credentials
        self.timeout = timeout
        self._auth: dict[str, str] = {}  # scope -> Authorization header value
        self.bytes_uploaded = 0

    def __repr__(self) -> str:  # never the credentials nor the tokens
        return f"Registry({self.base!r})"

    # -- transport -------------------------------------------------------------------
    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | None,
        authorization: str | None,
        trusted: Origin,
    ) -> Answer:
        """One request and its redirects. `authorization` goes only to `trusted`, and
        only until a redirect leaves it: the rest of the chain goes without it."""
        headers = dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            here = _origin(url)
            sent = dict(headers)
            if authorization is not None and here == trusted:
                sent["Authorization"] = authorization
            request = urllib.request.Request(url, data=data, method=method, headers=sent)
            try:
                with OPENER.open(request, timeout=self.timeout) as response:
                    return Answer(response.status, dict(response.headers), response.read(), url)
            except urllib.error.HTTPError as exc:
                answer = Answer(exc.code, dict(exc.headers or {}), exc.read(), url)
                exc.close()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                where = "the registry" if here == self.origin else str(here)
                raise BuildToolError(f"{self.host}: cannot reach {where} ({reason})") from None
            location = _header(answer.headers, "Location")
            if answer.status not in REDIRECTS or location is None:
                return answer
            target = urllib.parse.urljoin(url, location)
            if _origin(target) != here:
                authorization = None  # left the origin: never again in this chain
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, data = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            url = target
        raise BuildToolError(f"{self.host}: more than {MAX_REDIRECTS} redirects from {method}")

    def _authorize(self, challenge: str, scope: str) -> str:
        if self.credentials is None:
            raise BuildToolError(
                f"{self.host}: the registry wants credentials; "
                "set REGISTRY_USER and REGISTRY_PASSWORD, or `docker login`"
            )
        basic = self.credentials.basic()
        if challenge.lower().startswith("basic"):
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm:
            raise BuildToolError(f"{self.host}: a Bearer challenge without a token realm")
        realm_origin = _origin(realm)
        if not realm_may_receive_credentials(realm, self.origin):
            raise BuildToolError(
                f"{self.host}: refusing to send the registry credentials to the token "
                f"realm {realm_origin}: plain http to a host that is not this machine"
            )
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        separator = "&" if "?" in realm else "?"
        answer = self._exchange("GET", f"{realm}{separator}{query}", {}, None, basic, realm_origin)
        if answer.status != 200:
            raise BuildToolError(f"{self.host}: login refused ({answer.status})")
        try:
            token = json.loads(answer.body)
            value = token.get("token") or token["access_token"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BuildToolError(
                f"{self.host}: the token realm {realm_origin} answered without a token"
            ) from None
        return f"Bearer {value}"

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
    ) -> tuple[int, dict[str, str], bytes]:
        """`path` on the registry, or an absolute URL (an upload Location); a `Location`
        in the answer comes back absolute, resolved against the URL that answered."""
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            known = self._auth.get(scope) or self._auth.get(_ANY_SCOPE)
            answer = self._exchange(method, url, headers or {}, data, known, self.origin)
            location = _header(answer.headers, "Location")
            if location is not None:
                answer.headers["Location"] = urllib.parse.urljoin(answer.url, location)
            if answer.status < 300:
                return answer.status, answer.headers, answer.body
            if answer.status == 401 and _origin(answer.url) != self.origin:
                raise BuildToolError(
                    f"{self.host}: {_origin(answer.url)} wants credentials for "
                    f"{method} {display_url(answer.url)}; the registry's go only to {self.origin}"
                )
            if answer.status == 401 and attempt == 0:
                challenge = _header(answer.headers, "WWW-Authenticate") or "Basic"
                value = self._authorize(challenge, scope)
                self._auth[_ANY_SCOPE if value.startswith("Basic") else scope] = value
                continue
            if answer.status in ok:
                return answer.status, answer.headers, answer.body
            if answer.status == 401:
                raise BuildToolError(f"{self.host}: credentials refused")
            if answer.status == 404 and 404 not in ok:
                raise BuildToolError(f"{method} {display_url(answer.url)}: not found")
            return answer.status, answer.headers, answer.body
        raise AssertionError("unreachable")

    # -- API ------------------------------------------------------------------------
    def manifest_digest(self, name: str, reference: str) -> str | None:
        status, headers, _ = self.request(
            "HEAD",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            ok=(200, 404),
        )
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def get_manifest(self, name: str, reference: str) -> str | None:
        """The manifest or index under `reference`, or None if there is none."""
        status, _, body = self.request(
            "GET",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            ok=(200, 404),
        )
        return body.decode() if status == 200 else None

    def get_blob(self, name: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        _, _, body = self.request(
            "GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull"
        )
        if f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
            raise BuildToolError(f"{name}: blob {digest} came back with other content")
        return body

    def blob_exists(self, name: str, digest: str) -> bool:
        status, _, _ = self.request(
            "HEAD", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull", ok=(200, 404)
        )
        return status == 200

    def push_blob(self, name: str, blob: Blob, mount_from: str | None = None) -> None:
        """Upload a blob unless the repository has it or can mount it from `mount_from`."""
        digest = blob.digest
        if self.blob_exists(name, digest):
            return
        scope = f"repository:{name}:pull,push"
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        status, headers, _ = self.request("POST", f"/v2/{name}/blobs/uploads/{query}", scope=scope)
        if status == 201:  # mounted across repositories: no bytes sent
            return
        location = urllib.parse.urljoin(self.base, headers["Location"])
        with blob.open() as handle:
            while chunk := handle.read(self.CHUNK):
                status, headers, _ = self.request(
                    "PATCH",
                    location,
                    scope=scope,
                    data=chunk,
                    headers={"Content-Type": "application/octet-stream"},
                )
                self.bytes_uploaded += len(chunk)
                location = urllib.parse.urljoin(self.base, headers["Location"])
        separator = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT", f"{location}{separator}digest={digest}", scope=scope, data=b""
        )
        if status != 201:
            raise BuildToolError(f"{name}: upload of {digest} failed ({status}): {body[:200]!r}")

    def mount_blob(self, name: str, digest: str, mount_from: str) -> None:
        """Make blob `digest` of repository `mount_from` part of `name` without sending it
        (a cross-repository mount), or fail in one line: the bytes are not here to send."""
        if self.blob_exists(name, digest):
            return
        scope = f"repository:{name}:pull,push"
        status, headers, _ = self.request(
            "POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={mount_from}", scope=scope
        )
        if status == 201:
            return
        if status == 202 and "Location" in headers:  # an upload session instead: close it
            self.request("DELETE", headers["Location"], scope=scope, ok=(200, 202, 204, 404))
        raise BuildToolError(
            f"{self.host}: cannot mount {digest} from {mount_from} into {name} ({status}); "
            "the credentials need pull access to the parent's repository"
        )

    def delete_manifest(self, name: str, digest: str) -> None:
        """Delete a manifest by digest (its tags go with it); one that is gone already is
        no error."""
        status, _, body = self.request(
            "DELETE",
            f"/v2/{name}/manifests/{digest}",
            scope=f"repository:{name}:pull,push,delete",
            ok=(202, 404),
        )
        if status not in (202, 404):
            raise BuildToolError(f"{name}@{digest}: delete refused ({status}): {body[:200]!r}")

    def put_manifest(self, name: str, reference: str, manifest: Blob) -> str:
        assert manifest.data is not None
        status, headers, body = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull,push",
            headers={"Content-Type": manifest.media_type},
            data=manifest.data,
        )
        if status != 201:
            raise BuildToolError(f"{name}:{reference}: manifest refused ({status}): {body[:200]!r}")
        self.bytes_uploaded += manifest.size
        if headers.get("Docker-Content-Digest", manifest.digest) != manifest.digest:
            raise BuildToolError(f"{name}:{reference}: the registry stored another digest")
        return manifest.digest


def _header(headers: dict[str, str], name: str) -> str | None:
    """A header of `headers` (a plain dict of an answer's headers), whatever its case."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
