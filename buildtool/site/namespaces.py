"""Per-user registry namespaces: where a hub user's own pairs live, and who may start them.

A site that sets `user_images:` in site.yaml (a repository template with one `{username}`
path component, `registry.example.org/daskhub-users/{username}`) lets each hub user publish
extension pairs into a namespace of their own. The rules, in one place:

- `escape_username`: a JupyterHub name as one registry path component. The escape is
  injective (`[a-z0-9]` kept, every other byte of the UTF-8 name `-` and two lowercase hex
  digits, so `-` only ever starts an escape): two users never share a namespace.
- `user_prefix`: the template with a user's escaped name, the user's namespace.
- `user_worker_image`: what the gateway starts for an image in a user namespace: only the
  asking user's own images, and only by digest; for a notebook image, the worker its
  `io.daskhub.worker-image` label names, which must be the same user's by digest too. The
  label is read from the registry (`notebook_worker`), once per digest and process.
- `user_profile_list`: the hub's profiles for one user: the site's, and "My own image",
  whose free-form field admits only that user's images by digest (`own_image_regex`).

Own code rather than a library. `escapism`, which JupyterHub uses for pod names, writes
uppercase hex (registry paths are lowercase) and is not in the gateway's image; the registry
clients of this project (`buildtool/publish/registry.py`, `compat/registry.py`) cannot be imported
there either. The rules run in three places: here (publish and the tests), inside the
dask-gateway server (the option handler) and inside the JupyterHub hub (the profile list),
and neither server has any daskhub package installed. So the part between the `portable`
markers uses the standard library only, and `buildtool.site.helm` embeds its source verbatim in
the generated extraConfig: the code the servers run is the code the tests run. It raises
`NamespaceError`, which this module makes a BuildToolError (one line, exit code 1) and the
generated config a plain ValueError, which the gateway answers the user with. There is no
`from __future__ import annotations` here because the embedded copy runs without it.

Reading the registry from the option handler. dask-gateway calls the handler synchronously
in its event loop, so a registry read holds the gateway for as long as it takes: each
request times out after REQUEST_TIMEOUT_S, one lookup after LOOKUP_BUDGET_S in all, and a
digest's answer is kept for the life of the process (a digest names the same bytes
forever; failures are not kept). The rules for credentials are `buildtool/publish/registry.py`'s:
plain http only to loopback hosts (127.0.0.0/8, localhost), https otherwise; the pull
credentials (DASKHUB_REGISTRY_USER and DASKHUB_REGISTRY_PASSWORD in the gateway's
environment) go only to the registry's own origin (scheme, host and port), and to a Bearer
token realm only over https or on a loopback host; redirects are followed here, never with
credentials once they leave that origin; no message names a credential or a token.
"""

import inspect
import sys

from buildtool.common import BuildToolError, grammar
from compat import registry_rules
from compat.registry_rules import (
    MAX_REDIRECTS,
    PATH,
    REDIRECTS,
    SHA256,
    NoRedirects,
    Origin,
    base_url,
    checked,
    credentials_for,
    display_url,
    is_loopback,
    realm_may_receive_credentials,
)
from compat.vocabulary import WORKER_LABEL

# isort: split
# -- portable: begin. buildtool.site.helm embeds what follows, up to the end marker, verbatim in
# the generated gateway and hub config, after compat/registry_rules.py (whose names it
# uses: the registry's rules) and WORKER_LABEL. The standard library only, ASCII only.
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USERNAME_PLACEHOLDER = "{username}"
#: The longest escaped name: one component of a repository name of at most 255 characters.
ESCAPED_USERNAME_MAX = 128
#: What a user asks for is refused unread past this length.
IMAGE_MAX = 512
#: The gateway's pull credentials for the user images' registry, from its environment.
REGISTRY_USER_ENV = "DASKHUB_REGISTRY_USER"
REGISTRY_PASSWORD_ENV = "DASKHUB_REGISTRY_PASSWORD"
REQUEST_TIMEOUT_S = 5.0
LOOKUP_BUDGET_S = 15.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
#: The hub profile of a user's own notebook image.
OWN_IMAGE_SLUG = "own-image"


def escape_username(name: str) -> str:
    """A JupyterHub user name as one registry path component: `[a-z0-9]` kept, every other
    byte of its UTF-8 form `-` and two lowercase hex digits (`alice.b` -> `alice-2eb`,
    `a-b` -> `a-2db`). Injective, since `-` only ever starts an escape. A name that is
    empty, that would start with `-` (its first character needs escaping: a path
    component starts with a letter or digit), or whose escape is longer than 128
    characters has no namespace."""
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise NamespaceError(f"user name {name[:64]!r} is not valid Unicode text") from None
    escaped = "".join(
        chr(byte) if 0x61 <= byte <= 0x7A or 0x30 <= byte <= 0x39 else f"-{byte:02x}"
        for byte in data
    )
    if not escaped:
        raise NamespaceError("an empty user name has no image namespace")
    if escaped.startswith("-"):
        raise NamespaceError(
            f"user name {name[:64]!r} has no image namespace: it must start with a "
            "lowercase letter or a digit"
        )
    if len(escaped) > ESCAPED_USERNAME_MAX:
        raise NamespaceError(
            f"user name {name[:64]!r} has no image namespace: escaped, it is longer than "
            f"{ESCAPED_USERNAME_MAX} characters"
        )
    return escaped


def user_prefix(template: str, username: str) -> str:
    """The user's namespace: the site's `user_images` template with their escaped name."""
    return template.replace(USERNAME_PLACEHOLDER, escape_username(username))


def _regex_literal(text: str) -> str:
    """`text` as a regular expression that matches it alone, both in Python's `re` and in
    a browser: KubeSpawner puts the validation regex in the form's `pattern` attribute,
    which browsers compile with the `v` flag, where `re.escape`'s `\\-` is an error."""
    return "".join("\\" + char if char in "\\^$.|?*+()[]{}" else char for char in text)


def in_any_user_namespace(template: str, image: str) -> bool:
    """Whether `image` lies in some user's namespace: the template with any one path
    component in place of `{username}`, then `/`."""
    before, _, after = template.partition(USERNAME_PLACEHOLDER)
    pattern = _regex_literal(before) + "[^/]+" + _regex_literal(after) + "/"
    return re.match(pattern, image) is not None


def own_image_regex(template: str, username: str) -> str:
    """The regular expression of the user's own images by digest, and of nothing else:
    `<prefix>/<repository>@sha256:<64 hex>`, whole. It holds in Python's `re.match`
    (KubeSpawner's check) and in a browser's `pattern` attribute alike: the end is
    `(?![\\s\\S])`, since `$` lets a trailing newline through in Python and `\\Z` is not
    JavaScript."""
    prefix = _regex_literal(user_prefix(template, username))
    return f"^{prefix}/{PATH}@{SHA256}(?![\\s\\S])"


def user_worker_image(template: str, image: str, username: str) -> str | None:
    """What the gateway starts for `image`, asked for by `username`: None when `image`
    lies in no user's namespace (the site's rules apply to it); the image itself for the
    user's own worker image by digest; the worker that the user's own notebook image names,
    which must be theirs and by digest too. Anything else in a user namespace is refused:
    another user's image, an image by tag, a notebook naming a worker elsewhere."""
    if not in_any_user_namespace(template, image):
        return None
    shown = image[:200]
    own = user_prefix(template, username)
    if not image.startswith(own + "/"):
        raise NamespaceError(
            f"image {shown!r} is in another user's namespace; you may start your own "
            f"images only ({own}/...)"
        )
    pattern = own_image_regex(template, username)
    if len(image) > IMAGE_MAX or not re.match(pattern, image):
        raise NamespaceError(
            f"image {shown!r}: your own images start by digest only "
            f"({own}/<repository>@sha256:<64 hex>), never by tag"
        )
    worker = notebook_worker(image)
    if worker is None:  # no label: a worker image, which starts as it is
        return image
    if len(worker) > IMAGE_MAX or not re.match(pattern, worker):
        raise NamespaceError(
            f"image {shown!r} names its worker {worker[:200]!r}, which is not one of "
            "your own images by digest"
        )
    return worker


def own_image_profile(template: str, username: str, pairs: Any = ()) -> dict:
    """The hub profile "My own image": the user's published `pairs` (as the hub service
    lists them) to choose from, and a free-form field; both admit only the user's own
    images by digest, which becomes the notebook pod's image. It sets no
    DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE: the image's own baked variable names its
    worker by digest."""
    prefix = user_prefix(template, username)
    shape = f"{prefix}/<repository>@sha256:<64 hex>"
    own = re.compile(own_image_regex(template, username))
    choices: dict = {}
    for index, pair in enumerate(pairs):
        image = pair.get("notebook") if isinstance(pair, dict) else None
        if not isinstance(image, str) or not own.fullmatch(image):
            continue  # only the user's own images, whatever the service said
        added = ", ".join(str(a) for a in pair.get("added", []))[:200]
        choices[f"pair-{index}"] = {
            "display_name": f"{pair.get('name', '?')}: {pair.get('environment', '?')} + {added}",
            "default": not choices,
            "kubespawner_override": {"image": image},
        }
    return {
        "display_name": "My own image",
        "description": f"A notebook image you published, by digest: {shape}",
        "slug": OWN_IMAGE_SLUG,
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": choices,
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Your notebook image, by digest",
                    "display_name_in_choices": "A notebook image of mine",
                    "validation_regex": own_image_regex(template, username),
                    "validation_message": f"One of your own images by digest: {shape}",
                    "kubespawner_override": {"image": "{value}"},
                },
            }
        },
    }


def user_profile_list(site_profiles: list, template: str, username: str, pairs: Any = ()) -> list:
    """The hub's profiles for one user: the site's as they are, then "My own image" with
    the user's published `pairs`, when the user's name has a namespace (a name that has
    none gets the site's alone)."""
    try:
        own = own_image_profile(template, username, pairs)
    except NamespaceError:
        return list(site_profiles)
    return [*site_profiles, own]


#: The hub service where users build their pairs (`buildtool serve`), and its hub prefix.
SERVICE_NAME = "daskhub-builder"
SERVICE_TIMEOUT_S = 5.0


def service_pairs(url: str, token: str, username: str) -> list:
    """A user's published pairs, as the hub service lists them for the hub's spawner
    (`url`: the service's base URL; `token`: the service's own API token, which the hub
    holds too). None of the spawn page hangs on the service: on any failure, no pairs."""
    quoted = urllib.parse.quote(username, safe="")
    base = url.rstrip("/") + f"/services/{SERVICE_NAME}/api/hub/pairs/{quoted}"
    request = urllib.request.Request(base, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=SERVICE_TIMEOUT_S) as response:
            pairs = json.loads(response.read(MAX_MANIFEST_BYTES)).get("pairs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return pairs if isinstance(pairs, list) else []


# -- the registry read: one notebook image's worker label ------------------------------
_WORKER_OF: dict = {}  # image by digest -> its worker label (None: it has none)


def forget_worker_labels() -> None:
    """Forget the worker labels read so far (each is kept for the life of the process)."""
    _WORKER_OF.clear()


def notebook_worker(image: str) -> str | None:
    """The `io.daskhub.worker-image` label of `image` (`host/name@sha256:...`), or None
    when it has none (a worker image); read from the registry once per process."""
    if image not in _WORKER_OF:
        _WORKER_OF[image] = _read_worker_label(image)
    return _WORKER_OF[image]


def _origin(url: str) -> Origin:
    """`Origin.of`, refusing as this module refuses."""
    return checked(NamespaceError, Origin.of, url)


class RegistryReader:
    """GETs manifests and blobs from one registry (`host[:port]`), by the rules in this
    module's docstring."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.base = base_url(host)
        self.origin = _origin(self.base)
        loopback = is_loopback(self.origin.host)
        handlers: list = [NoRedirects()]
        if loopback:  # this machine's registry, never through a proxy
            handlers.append(urllib.request.ProxyHandler({}))
        self.opener = urllib.request.build_opener(*handlers)
        self.deadline = time.monotonic() + LOOKUP_BUDGET_S
        self.authorization: str | None = None

    def __repr__(self) -> str:  # never the credentials nor the token
        return f"RegistryReader({self.base!r})"

    def _fetch(
        self, url: str, accept: str | None, authorization: str | None, limit: int
    ) -> tuple[int, Any, bytes, str]:
        """One GET and its redirects: (status, headers, body, the URL that answered).
        `authorization` goes only to the origin of `url`, and only until a redirect
        leaves it."""
        trusted = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            here = _origin(url)
            headers = {"Accept": accept} if accept else {}
            if authorization is not None and here == trusted:
                headers["Authorization"] = authorization
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise NamespaceError(f"{self.host}: the registry did not answer in time")
            request = urllib.request.Request(url, headers=headers, method="GET")
            body = b""
            try:
                with self.opener.open(request, timeout=min(REQUEST_TIMEOUT_S, remaining)) as got:
                    status, answer_headers, body = got.status, got.headers, got.read(limit + 1)
            except urllib.error.HTTPError as exc:
                status, answer_headers = exc.code, exc.headers
                exc.close()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc.__class__.__name__
                where = "the registry" if here == self.origin else str(here)
                raise NamespaceError(f"{self.host}: cannot reach {where} ({reason})") from None
            if len(body) > limit:
                raise NamespaceError(
                    f"{self.host}: {display_url(url)} sent more than {limit} bytes"
                )
            location = answer_headers.get("Location") if answer_headers else None
            if status not in REDIRECTS or not location:
                return status, answer_headers, body, url
            target = urllib.parse.urljoin(url, location)
            if _origin(target) != here:
                authorization = None  # left the origin: never again in this chain
            url = target
        raise NamespaceError(f"{self.host}: more than {MAX_REDIRECTS} redirects")

    def _authorize(self, challenge: str, scope: str) -> str:
        """The Authorization value a 401's challenge asks for."""
        credentials = credentials_for(
            self.host,
            configured=self.host,
            user_env=REGISTRY_USER_ENV,
            password_env=REGISTRY_PASSWORD_ENV,
            registry_env=None,
            docker_config=False,
        )
        basic = credentials.basic() if credentials is not None else None
        if not challenge.lower().startswith("bearer"):
            if basic is None:
                raise NamespaceError(
                    f"{self.host}: the registry wants credentials; the gateway has none "
                    f"({REGISTRY_USER_ENV}, {REGISTRY_PASSWORD_ENV})"
                )
            return basic
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm:
            raise NamespaceError(f"{self.host}: a Bearer challenge without a token realm")
        realm_origin = _origin(realm)
        if basic is not None and not realm_may_receive_credentials(realm, self.origin):
            raise NamespaceError(
                f"{self.host}: refusing to send the registry credentials to the token realm "
                f"{realm_origin}: plain http to a host that is not this machine"
            )
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        url = realm + ("&" if "?" in realm else "?") + query
        status, _, body, _ = self._fetch(url, None, basic, MAX_TOKEN_BYTES)
        if status != 200:
            refused = "login refused" if basic else "no anonymous access"
            raise NamespaceError(f"{self.host}: {refused} (HTTP {status} from the token realm)")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer["access_token"]
        except (ValueError, KeyError, TypeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or not token.isprintable():
            raise NamespaceError(f"{self.host}: the token realm answered without a usable token")
        return "Bearer " + token

    def get(self, name: str, path: str, accept: str | None, limit: int) -> bytes:
        """`/v2/<name>/<path>`; anything but a 200 is refused, in one line."""
        url = f"{self.base}/v2/{name}/{path}"
        for attempt in (1, 2):
            status, headers, body, answered = self._fetch(url, accept, self.authorization, limit)
            if status == 200:
                return body
            if status == 404:
                raise NamespaceError(f"{self.host}/{name}: {path} not found")
            if status == 401 and _origin(answered) != self.origin:
                raise NamespaceError(
                    f"{self.host}: {display_url(answered)} wants credentials; the registry's "
                    "go only to the registry"
                )
            if status == 401 and attempt == 1:
                challenge = (headers.get("WWW-Authenticate") if headers else None) or "Basic"
                self.authorization = self._authorize(challenge, f"repository:{name}:pull")
                continue
            if status == 401:
                raise NamespaceError(f"{self.host}: the registry refused the gateway's credentials")
            raise NamespaceError(f"{self.host}/{name}: HTTP {status} for {path.split('/')[0]}")
        raise NamespaceError(f"{self.host}: no answer")

    def manifest(self, name: str, digest: str) -> dict:
        """The manifest or index `digest` names, checked against it."""
        body = self.get(name, f"manifests/{digest}", MANIFEST_ACCEPT, MAX_MANIFEST_BYTES)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise NamespaceError(f"{self.host}/{name}@{digest}: the registry sent another manifest")
        return _json_object(body, f"{self.host}/{name}@{digest}")

    def blob(self, name: str, descriptor: object) -> bytes:
        """The blob a descriptor names, checked against its digest and size."""
        where = f"{self.host}/{name}"
        if not isinstance(descriptor, dict):
            raise NamespaceError(f"{where}: a manifest without an image config")
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if not isinstance(digest, str) or not re.fullmatch(SHA256, digest):
            raise NamespaceError(f"{where}: a descriptor without a sha256 digest")
        if not isinstance(size, int) or not 0 <= size <= MAX_CONFIG_BYTES:
            raise NamespaceError(f"{where}: blob {digest} has no usable size")
        body = self.get(name, f"blobs/{digest}", None, size)
        if len(body) != size or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise NamespaceError(f"{where}: blob {digest} came back with other content")
        return body


def _json_object(body: bytes, where: str) -> dict:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise NamespaceError(f"{where}: not a JSON object")
    return document


def _is_image_entry(entry: object) -> bool:
    """An index entry that is one platform's image (not an attestation, not an index)."""
    if not isinstance(entry, dict) or entry.get("mediaType") not in (OCI_MANIFEST, DOCKER_MANIFEST):
        return False
    platform, annotations = entry.get("platform"), entry.get("annotations")
    if isinstance(platform, dict) and platform.get("os") == "unknown":
        return False
    return not (isinstance(annotations, dict) and "vnd.docker.reference.type" in annotations)


def _read_worker_label(image: str) -> str | None:
    """The worker label of `image`'s config. An index's images carry the same label on
    every platform, so its first platform's is read."""
    repository, _, digest = image.partition("@")
    host, _, name = repository.partition("/")
    reader = RegistryReader(host)
    document = reader.manifest(name, digest)
    if "manifests" in document:
        entries = document["manifests"] if isinstance(document["manifests"], list) else []
        chosen = next((entry for entry in entries if _is_image_entry(entry)), None)
        found = chosen.get("digest") if chosen is not None else None
        if not isinstance(found, str) or not re.fullmatch(SHA256, found):
            raise NamespaceError(f"{image[:200]}: an index without a platform's image")
        document = reader.manifest(name, found)
        if "manifests" in document:
            raise NamespaceError(f"{image[:200]}: an index inside an index")
    config = _json_object(reader.blob(name, document.get("config")), f"{host}/{name} config")
    settings = config.get("config")
    labels = settings.get("Labels") if isinstance(settings, dict) else None
    worker = labels.get(WORKER_LABEL) if isinstance(labels, dict) else None
    if worker is not None and not isinstance(worker, str):
        raise NamespaceError(f"{image[:200]}: its {WORKER_LABEL} label is not text")
    return worker


# -- portable: end


class NamespaceError(BuildToolError, ValueError):
    """A user name without a namespace, or a user image refused: one line. (In the
    generated gateway and hub config, a plain ValueError.)"""


def server_name(pair: str, notebook: str) -> str:
    """The hub's named server that a pair's notebook image starts in: the pair's name and
    its image's digest, as a JupyterHub server name must be (lowercase letters, digits and
    single hyphens, a letter first, at most 30). A rebuilt pair starts in a server of its
    own, never in the one still running its old image."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", pair.lower())).strip("-")
    if not slug[:1].isalpha():
        slug = "p-" + slug
    digest = notebook.rpartition("@sha256:")[2][:8]
    return f"{slug[:21].rstrip('-')}-{digest}"


PORTABLE_BEGIN = "# -- portable: begin"
PORTABLE_END = "# -- portable: end"
#: A longer template leaves too little of a repository name's 255 characters for the
#: escaped name (up to 128) and the environment's repository.
TEMPLATE_MAX = 100


def portable_config() -> str:
    """What the gateway's and the hub's generated config run, marked as generated: the
    registry's rules (`compat/registry_rules.py`, verbatim), the worker label's key,
    NamespaceError (there a plain ValueError), and this module's portable part."""
    return (
        "\n".join(
            [
                "# ---- GENERATED: compat/registry_rules.py, verbatim. ----",
                inspect.getsource(registry_rules).rstrip(),
                "# ---- GENERATED: buildtool/site/namespaces.py's portable part, verbatim. ----",
                f"WORKER_LABEL = {WORKER_LABEL!r}",
                "",
                "",
                "class NamespaceError(ValueError):",
                '    """A user name without a namespace, or a user image refused."""',
                "",
                "",
                portable_source().rstrip(),
                "# ---- end of the part of buildtool/site/namespaces.py ----",
            ]
        )
        + "\n"
    )


def portable_source() -> str:
    """The source of this module's portable part, verbatim, for the generated config."""
    lines = inspect.getsource(sys.modules[__name__]).splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith(PORTABLE_BEGIN))
    end = next(i for i, line in enumerate(lines) if line.startswith(PORTABLE_END))
    return "".join(lines[begin:end]).rstrip() + "\n"


def template_problem(template: str) -> str | None:
    """Why `template` cannot be `user_images:` (`host[:port]/path/{username}[/path]`:
    a registry host, lowercase path components, exactly one `{username}`, which is a
    whole component; no scheme, no credentials, no other braces), or None."""
    shape = "host[:port]/path/{username}"
    if len(template) > TEMPLATE_MAX:
        return f"is longer than {TEMPLATE_MAX} characters"
    if "://" in template:
        return (
            f"{template!r} names a scheme; write {shape} (the scheme follows from the host: "
            "https, or http on this machine's loopback)"
        )
    if "@" in template:
        return (
            f"{template!r} holds '@': no credentials or digests here; the gateway's pull "
            "credentials come from its environment"
        )
    count = template.count(USERNAME_PLACEHOLDER)
    if count != 1:
        return f"{template!r} needs exactly one {USERNAME_PLACEHOLDER}, not {count}"
    rest = template.replace(USERNAME_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        return f"{template!r} holds braces other than {USERNAME_PLACEHOLDER}"
    host, _, path = template.partition("/")
    registry_host = ("." in host or ":" in host or host == "localhost") and bool(
        grammar.REGISTRY_HOST.fullmatch(host)
    )
    if not path or not registry_host:
        return (
            f"{template!r} does not start with a registry host ({shape}; the host has a "
            "dot or a port, or is localhost)"
        )
    if path.split("/")[0] == USERNAME_PLACEHOLDER:
        return (
            f"{template!r} puts {USERNAME_PLACEHOLDER} right after the host; give users a "
            f"path of their own before it ({shape.replace('path/', 'users/')}), or a user named "
            "after one of the site's repositories would publish into it"
        )
    for component in path.split("/"):
        if component == USERNAME_PLACEHOLDER:
            continue
        if USERNAME_PLACEHOLDER in component:
            return (
                f"the {USERNAME_PLACEHOLDER} placeholder must be a whole path component, "
                f"not part of {component!r}"
            )
        if not grammar.PATH_COMPONENT.fullmatch(component):
            return (
                f"{component!r} is not a repository path component (lowercase letters and "
                "digits, with . _ - between them)"
            )
    return None
