"""The registry's rules, written once: what an image reference may look like, where a
request goes, and where credentials may go.

Every client of a registry in this project follows them: buildtool's (push and pull,
`buildtool.publish.registry`), compat's (read-only, `compat.registry`), and the reader in
`buildtool.site.namespaces` that the dask-gateway server and the JupyterHub hub run. Those
two servers have no daskhub package installed, so `buildtool.site.helm` embeds this
module's source verbatim in their generated config: this module imports the standard
library only, has no `from __future__` line, and is ASCII.

- **References**: the distribution project's grammar (the one `docker pull` and every
  registry parse): `[host[:port]/]path[:tag][@digest]`. This project reads and pins by
  sha256 digests only.
- **Origins**: a URL's requests go to its scheme, host and port (defaults filled in).
  A registry on this machine's loopback (`localhost`, 127.0.0.0/8, ::1) is spoken to
  over http, any other over https.
- **Credentials** go only to the registry they are for: REGISTRY_USER and
  REGISTRY_PASSWORD to the configured registry's host (REGISTRY's host when it is set,
  else the registry the command works with), and the docker config's `auths` each to its
  own host. They go into request headers, never into messages or reprs.
- **The token realm** a `WWW-Authenticate: Bearer realm=...` challenge names gets the
  Basic credentials only over https, or over plain http at the registry itself or on
  this machine's loopback.
- **Redirects** are followed by the clients themselves, never by urllib (which copies
  `Authorization` to any host): once a redirect leaves the origin the credentials were
  meant for, the rest of the chain goes without them.
"""

import base64
import ipaddress
import json
import os
import re
import typing
import urllib.parse
import urllib.request
from pathlib import Path


class RegistryRuleError(ValueError):
    """A reference, URL or docker config that breaks the rules: one line."""


_T = typing.TypeVar("_T")


def checked(error: "type[Exception]", rule: "typing.Callable[..., _T]", *args: typing.Any) -> _T:
    """`rule(*args)`, a RegistryRuleError it raises raised as `error` instead (each
    client's own kind of one-line error)."""
    try:
        return rule(*args)
    except RegistryRuleError as exc:
        raise error(str(exc)) from None


# -- references ----------------------------------------------------------------------------
DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = rf"{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*(?::[0-9]+)?"
PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH = rf"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
#: The one digest this project reads or pins by.
SHA256 = r"sha256:[0-9a-f]{64}"
REFERENCE = re.compile(
    rf"(?:(?P<host>{DOMAIN})/)?(?P<name>{PATH})(?::(?P<tag>{TAG}))?(?:@(?P<digest>{DIGEST}))?",
    re.ASCII,
)
REFERENCE_MAX = 255
#: Where Docker Hub's API and its docker config key are.
API_HOSTS = {"docker.io": "registry-1.docker.io"}
CONFIG_KEYS = {"docker.io": "https://index.docker.io/v1/"}


def is_registry_host(component: str) -> bool:
    """Whether the first component of a name is a registry host, as docker decides: it has
    a dot or a port, or is localhost."""
    return ("." in component or ":" in component or component == "localhost") and bool(
        re.fullmatch(DOMAIN, component, re.ASCII)
    )


class Reference:
    """`host[:port]/name[:tag][@sha256:...]`; the digest wins over the tag."""

    def __init__(self, host: str, name: str, tag: "str | None", digest: "str | None") -> None:
        self.host, self.name, self.tag, self.digest = host, name, tag, digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    @property
    def reference(self) -> str:
        """What goes after `/manifests/`."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.host}/{self.name}"
        if self.tag:
            text += f":{self.tag}"
        return text + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """An image reference as `docker pull` reads it, by tag or by sha256 digest; without
    a registry host, Docker Hub's."""
    match = REFERENCE.fullmatch(text) if len(text) <= REFERENCE_MAX else None
    if match is None or (match["digest"] and not re.fullmatch(SHA256, match["digest"])):
        raise RegistryRuleError(
            f"{text[:100]!r} is not an image reference (host/name[:tag][@sha256:<64 hex>])"
        )
    host, name = match["host"], match["name"]
    if host is None or not is_registry_host(host):
        # `team/app` is Docker Hub's; so is `library/app` for a bare `app`.
        name = f"{host}/{name}" if host else name
        host = "docker.io"
        name = name if "/" in name else f"library/{name}"
    return Reference(host, name, match["tag"], match["digest"])


def split_repository(repository: str) -> "tuple[str, str]":
    """`host[:port]/name/space` -> (host, name/space); the host must be a registry's."""
    host, _, name = repository.partition("/")
    if not name or not is_registry_host(host):
        raise RegistryRuleError(
            f"{repository[:100]!r}: no registry host (host[:port]/name, e.g. 127.0.0.1:5000/ns)"
        )
    return host, name


# -- origins -------------------------------------------------------------------------------
_DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10


def display_url(url: str) -> str:
    """A URL for a message: no user info, no query (pre-signed URLs keep secrets there)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:200]


class Origin:
    """Where a URL's requests go: scheme, host (lower case) and port (defaults filled in)."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port

    @classmethod
    def of(cls, url: str) -> "Origin":
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            raise RegistryRuleError(f"{display_url(url)}: not a valid URL (bad port)") from None
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise RegistryRuleError(f"{display_url(url)}: not an http or https URL")
        return cls(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])

    def _key(self) -> "tuple[str, str, int]":
        return self.scheme, self.host, self.port

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origin) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Origin({str(self)!r})"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """`localhost`, or an address in 127.0.0.0/8 or ::1 (not a name that looks like one)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """`host[:port]` (an IPv6 address in brackets) without its port."""
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


def base_url(host: str) -> str:
    """The API's base URL of the registry `host[:port]`: plain http on this machine's
    loopback, https anywhere else."""
    api = API_HOSTS.get(host, host)
    return f"{'http' if is_loopback(_hostname(api)) else 'https'}://{api}"


def realm_may_receive_credentials(realm: str, registry: Origin) -> bool:
    """Over https, yes; over plain http only at the registry itself, or on this machine."""
    origin = Origin.of(realm)
    return origin == registry or origin.scheme == "https" or is_loopback(origin.host)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back as an HTTPError: the clients follow redirects themselves."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


# -- credentials ---------------------------------------------------------------------------
class Credentials:
    """A user name and password for one registry; the password is never shown."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and (self.username, self.password) == (
            other.username,
            other.password,
        )

    def __hash__(self) -> int:
        return hash(self.username)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"

    def basic(self) -> str:
        """The Basic `Authorization` value."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def configured_registry(configured: "str | None", registry_env: "str | None" = "REGISTRY") -> str:
    """The host the environment's credentials are for: `REGISTRY`'s (`host[/namespace]`)
    when it is set, else `configured`, the registry the command works with."""
    named = os.environ.get(registry_env, "") if registry_env else ""
    return named.partition("/")[0] or (configured or "")


def credentials_for(
    host: str,
    configured: "str | None",
    user_env: str = "REGISTRY_USER",
    password_env: str = "REGISTRY_PASSWORD",
    registry_env: "str | None" = "REGISTRY",
    docker_config: bool = True,
) -> "Credentials | None":
    """The credentials for the registry `host`: the environment's (`user_env`,
    `password_env`) when `host` is the configured registry (`configured_registry`), else
    the docker config's `auths` entry for `host`, else none."""
    user, password = os.environ.get(user_env), os.environ.get(password_env)
    if user and password and host == configured_registry(configured, registry_env):
        return Credentials(user, password)
    if not docker_config:
        return None
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    if not config.is_file():
        return None
    try:
        auths = json.loads(config.read_text()).get("auths", {})
        auth = auths.get(CONFIG_KEYS.get(host, host), {}).get("auth")
        if not auth:
            return None
        name, _, secret = base64.b64decode(auth).decode().partition(":")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        raise RegistryRuleError(f"{config}: unreadable docker config (auths)") from None
    return Credentials(name, secret)
