"""A small client for the registry HTTP API (OCI distribution spec), enough to publish.

It speaks Basic auth and the Bearer token flow. Credentials come from REGISTRY_USER and
REGISTRY_PASSWORD, or from the docker config's `auths`; they only ever go into request
headers, never into messages or logs, and never to another host: registries that keep
blobs elsewhere (Artifact Registry, S3-backed ones) redirect blob requests there, and
such a redirect is followed without the `Authorization` header.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from buildtool.errors import BuildToolError
from buildtool.oci import OCI_INDEX, OCI_MANIFEST, Blob

MANIFEST_TYPES = (
    OCI_INDEX,
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def split_reference(repository: str) -> tuple[str, str]:
    """`host[:port]/name/space` -> (host, name/space)."""
    host, _, name = repository.partition("/")
    if not name or not ("." in host or ":" in host or host == "localhost"):
        raise BuildToolError(
            f"{repository!r}: publish needs a registry host, e.g. 127.0.0.1:5000/ns"
        )
    return host, name


def credentials_for(host: str) -> Credentials | None:
    """From REGISTRY_USER/REGISTRY_PASSWORD, else from ~/.docker/config.json."""
    user, password = os.environ.get("REGISTRY_USER"), os.environ.get("REGISTRY_PASSWORD")
    if user and password:
        return Credentials(user, password)
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    if config.exists():
        auth = json.loads(config.read_text()).get("auths", {}).get(host, {}).get("auth")
        if auth:
            name, _, secret = base64.b64decode(auth).decode().partition(":")
            return Credentials(name, secret)
    return None


class _SameHostAuthorization(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but keep `Authorization` only for the host that was asked."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != req.host:
            for store in (new.headers, new.unredirected_hdrs):
                store.pop("Authorization", None)
        return new


_OPENER = urllib.request.build_opener(_SameHostAuthorization)
# Basic credentials are the same for every scope: learnt once per registry.
_ANY_SCOPE = "*"


class Registry:
    def __init__(self, host: str, credentials: Credentials | None, timeout: float = 60) -> None:
        local = host.split(":")[0] in ("127.0.0.1", "localhost")
        self.base = f"{'http' if local else 'https'}://{host}"
        self.host = host
        self.credentials = credentials
        self.timeout = timeout
        self._auth: dict[str, str] = {}  # scope -> Authorization header value
        self.bytes_uploaded = 0

    # -- transport -------------------------------------------------------------------
    def _authorize(self, challenge: str, scope: str) -> str:
        if self.credentials is None:
            raise BuildToolError(
                f"{self.host}: the registry wants credentials; "
                "set REGISTRY_USER and REGISTRY_PASSWORD, or `docker login`"
            )
        basic = base64.b64encode(
            f"{self.credentials.username}:{self.credentials.password}".encode()
        ).decode()
        if challenge.lower().startswith("basic"):
            return f"Basic {basic}"
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        request = urllib.request.Request(
            f"{params['realm']}?{query}", headers={"Authorization": f"Basic {basic}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                token = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise BuildToolError(f"{self.host}: login refused ({exc.code})") from None
        return f"Bearer {token.get('token') or token['access_token']}"

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
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            merged = dict(headers or {})
            known = self._auth.get(scope) or self._auth.get(_ANY_SCOPE)
            if known:
                merged["Authorization"] = known
            request = urllib.request.Request(url, data=data, method=method, headers=merged)
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    challenge = exc.headers.get("WWW-Authenticate", "Basic")
                    value = self._authorize(challenge, scope)
                    self._auth[_ANY_SCOPE if value.startswith("Basic") else scope] = value
                    continue
                if exc.code in ok:
                    return exc.code, dict(exc.headers), exc.read()
                if exc.code == 401:
                    raise BuildToolError(f"{self.host}: credentials refused") from None
                if exc.code == 404 and 404 not in ok:
                    raise BuildToolError(f"{method} {url}: not found") from None
                return exc.code, dict(exc.headers), exc.read()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise BuildToolError(f"{self.host}: cannot reach the registry ({reason})") from None
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
            "GET", f"/v2/{name}/manifests/{reference}", scope=f"repository:{name}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)}, ok=(200, 404),
        )  # fmt: skip
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
            while chunk := handle.read(CHUNK):
                status, headers, _ = self.request(
                    "PATCH", location, scope=scope, data=chunk,
                    headers={"Content-Type": "application/octet-stream"},
                )  # fmt: skip
                self.bytes_uploaded += len(chunk)
                location = urllib.parse.urljoin(self.base, headers["Location"])
        separator = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT", f"{location}{separator}digest={digest}", scope=scope, data=b""
        )
        if status != 201:
            raise BuildToolError(f"{name}: upload of {digest} failed ({status}): {body[:200]!r}")

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
