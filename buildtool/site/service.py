"""`buildtool serve`: the hub service where users build their own matched pairs.

A JupyterHub service (the Helm values register it: `hub.services.daskhub-builder`). It
has no login of its own: JupyterHub's service-auth library (`HubOAuthenticated`) gives it
the hub's user, by OAuth for the page and by a hub token for the API, and the user is only
ever that one, never a name in a request. It holds the registry's push credentials, which
no user sees, and builds as `buildtool publish` builds an extension pair (`extend.py`):
without a Docker engine, into the user's own namespace (site.yaml `user_images`).

The page (server-rendered, plus a little JavaScript that calls the JSON API below) lets a
user pick a site environment, add conda packages and exact pip pins or paste an
environment.yml, see what the solve adds (or the one-line conflict) before building,
follow the build, and get the notebook image by digest, a link that spawns it and the
`GatewayCluster()` line; it lists and deletes their pairs.

The JSON API, under the service's prefix (`/services/daskhub-builder/api/`):

    GET    environments        the site pairs one may extend
    POST   preview             {environment, dependencies, pip, environment_yml} -> added
    POST   builds              the same, with {name} -> 202 {id}
    GET    environments/<name>/packages   what a site pair holds
    GET    builds              the user's builds, newest first
    GET    builds/<id>         one, with its log's lines from ?from=N on
    GET    builds/<id>/log     its whole log, as text (?download=1: as a file)
    POST   builds/<id>/cancel  end it: nothing is tagged, nothing is left
    GET    pairs               the user's published pairs;  DELETE pairs/<name>
    POST   pairs/<name>/rebuild  the same additions on the site's current pair
    GET    hub/pairs/<user>    for the hub's spawner (the service's own token only)

Limits come from site.yaml's `self_service` (`sitesettings.SelfService`); each refusal is
one line, on the page and in the API (`{"error": ...}` with 400, 403, 404, 409 or 429).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment as Jinja
from jinja2 import PackageLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpserver import HTTPServer

from buildtool.common import (
    BuildToolError,
    Limits,
    Published,
    call_bounded,
    grammar,
    published_extensions,
    read_published,
)
from buildtool.image import package_cache, prune_package_cache, sweep_sandboxes
from buildtool.lock import Parent, lock_extension, read_lock
from buildtool.publish import (
    Registry,
    added_records,
    credentials_for,
    delete_attached,
    read_parent,
    split_reference,
)
from buildtool.site.builds import (
    Build,
    BuildQueue,
    BuildRefused,
    Job,
    LocalRunner,
    cli_command,
    content_length,
)
from buildtool.site.namespaces import server_name, user_prefix
from buildtool.site.settings import (
    SITE_FILE,
    ServiceSettings,
    check_users_apart,
    load_site_settings,
)
from buildtool.spec import (
    SPEC_FILE,
    convert_environment_yml,
    environment_names,
    load_environment,
    load_extension,
)

logger = logging.getLogger(__name__)

# The most packages and pins one request may add, and the longest text it may send
# (refused before it is read: the server takes no larger body).
MAX_ADDITIONS = 50
MAX_BODY = 64 * 1024
# Names a pair cannot have: the folders of a user's workspace.
RESERVED_NAMES = frozenset({"build", "specs"})
# Previews (solves) one user may ask for: one at a time, and this many a minute.
PREVIEWS_PER_MINUTE = 12
# A solve of a user's additions, in a child process of its own (`call_bounded`).
SOLVE_LIMITS = Limits(cpu_seconds=120, memory_bytes=4 * 1024**3, wall_seconds=180)


class Rejected(Exception):
    """A request refused in one line, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A user's additions, checked: the spec written into a folder, as a user would."""

    environment: str
    name: str
    dependencies: list[str]
    pip: list[str]


def _text_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if isinstance(value, str):  # one per line, as the page's text areas send them
        value = [line.strip() for line in value.splitlines() if line.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Rejected(400, f"{key}: a list of strings, or one per line")
    return value


_PLAIN = re.compile(r"[^A-Za-z0-9_.=<>!~*,:\[\] -]")
REQUEST_KEYS = ("environment", "name", "dependencies", "pip", "environment_yml")


def parse_request(body: dict[str, Any], offered: list[str]) -> Request:
    """The request's additions (from lists or a pasted environment.yml), bounded. Who
    builds, and into which namespace, is never the request's to say."""
    unknown = sorted(set(body) - set(REQUEST_KEYS))
    if unknown:
        raise Rejected(400, f"unknown key {unknown[0]!r} (a request has {', '.join(REQUEST_KEYS)})")
    environment = body.get("environment")
    if not isinstance(environment, str) or environment not in offered:
        raise Rejected(400, f"environment: one of {', '.join(offered)}")
    name = body.get("name") or f"my-{environment}"
    if not isinstance(name, str) or grammar.environment_name_problem(name):
        raise Rejected(400, f"name: {grammar.environment_name_problem(str(name))}")
    if name in RESERVED_NAMES:
        raise Rejected(400, f"name: {name!r} is reserved; choose another")
    dependencies, pip = _text_list(body, "dependencies"), _text_list(body, "pip")
    pasted = body.get("environment_yml")
    if pasted:
        if not isinstance(pasted, str):
            raise Rejected(400, "environment_yml: the text of an environment.yml")
        more, more_pip = _imported(pasted)
        dependencies, pip = dependencies + more, pip + more_pip
    if not dependencies and not pip:
        raise Rejected(400, "add at least one conda package or pip pin")
    if len(dependencies) + len(pip) > MAX_ADDITIONS:
        raise Rejected(400, f"at most {MAX_ADDITIONS} packages and pins at once")
    return Request(environment, name, dependencies, pip)


def _imported(text: str) -> tuple[list[str], list[str]]:
    """The dependencies and pip pins of a pasted environment.yml, by the importer."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "environment.yml"
        source.write_text(text)
        try:
            imported = convert_environment_yml(source, None, Path(folder))
        except BuildToolError as exc:
            raise Rejected(400, str(exc).replace(folder + "/", "")) from None
    data = yaml.safe_load(imported.text) or {}
    # An extension keeps its parent's Python: a python spec is left out (and only that:
    # python-dateutil is a package like any other).
    dependencies = [
        d for d in data.get("dependencies", []) if d.split()[0].split("[")[0] != "python"
    ]
    return dependencies, list(data.get("pip", []))


def write_spec(folder: Path, request: Request, parent: str) -> Path:
    """The extension's env.yaml, as a user would write it (every value checked on
    reading, by the same schema as any spec)."""
    # The description says what was asked, every character outside a spec's plain ones
    # shown as "?": the additions themselves are checked, at their lines, on reading.
    asked = ", ".join(request.dependencies + request.pip)
    spec = {
        "from": parent,
        "description": f"{request.environment} and {_PLAIN.sub('?', asked)}"[:300],
        "dependencies": request.dependencies,
        "pip": request.pip,
    }
    (folder / request.name).mkdir(parents=True, exist_ok=True)
    path = folder / request.name / SPEC_FILE
    path.write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    return path


class Builder:
    """The service's state and its operations, apart from HTTP."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.queue = BuildQueue(
            settings.state, LocalRunner(settings.limits.concurrent), settings.limits.max_queued
        )
        self._parents: dict[str, Parent] = {}
        # Solves (previews, and the check before a build) have a pool of their own, so
        # that a flood of them leaves the rest of the service (the page, the lists, the
        # registry calls) its own threads.
        self.solves = ThreadPoolExecutor(max_workers=2, thread_name_prefix="solve")
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="service")
        self._previews: dict[str, deque[float]] = {}
        self._previewing: set[str] = set()
        self._preview_lock = threading.Lock()

    # -- the site ---------------------------------------------------------------------
    def environments(self) -> list[dict[str, str]]:
        hidden = set(load_site_settings(self.settings.root).profiles.hidden)
        offered = []
        for name in environment_names(self.settings.root):
            published = read_published(self.settings.build_dir, name)
            if published is None or name in hidden:
                continue
            env = load_environment(self.settings.root, name)
            offered.append(
                {
                    "name": name,
                    "display_name": env.display_name,
                    "description": env.description,
                    "notebook": published.images.notebook.ref,
                }
            )
        return offered

    def parent(self, environment: str) -> Parent:
        published = read_published(self.settings.build_dir, environment)
        assert published is not None
        ref = published.images.notebook.ref
        if ref not in self._parents:
            self._parents[ref] = read_parent(ref, configured=self.settings.registry_host)
        return self._parents[ref]

    def request(self, body: dict[str, Any]) -> Request:
        return parse_request(body, [e["name"] for e in self.environments()])

    # -- what a request adds ------------------------------------------------------------
    def admit_preview(self, user: str) -> None:
        """One preview at a time per user, and PREVIEWS_PER_MINUTE a minute; else 429."""
        now = time.monotonic()
        with self._preview_lock:
            recent = self._previews.setdefault(user, deque())
            while recent and now - recent[0] > 60:
                recent.popleft()
            if user in self._previewing:
                raise Rejected(429, "a preview of yours is under way; wait for it")
            if len(recent) >= PREVIEWS_PER_MINUTE:
                raise Rejected(
                    429, f"at most {PREVIEWS_PER_MINUTE} previews a minute; try again shortly"
                )
            recent.append(now)
            self._previewing.add(user)

    def preview_done(self, user: str) -> None:
        with self._preview_lock:
            self._previewing.discard(user)

    def preview(self, request: Request) -> dict[str, Any]:
        """Solve the additions on the parent, writing nothing the user keeps: in a child
        process with CPU, memory and time limits (SOLVE_LIMITS)."""
        parent = self.parent(request.environment)
        with tempfile.TemporaryDirectory() as folder:
            write_spec(Path(folder), request, parent.notebook.ref)
            try:
                ext = load_extension(Path(folder), request.name)
                lock = call_bounded(
                    lock_extension, ext, parent, limits=SOLVE_LIMITS, what="the solve"
                )
            except BuildToolError as exc:  # the user's own words, at their place in the spec
                raise Rejected(400, str(exc).replace(folder + "/", "")) from None
        conda, pip = added_records(lock, parent.lock)
        added = [
            {"name": p.name, "version": p.version, "platform": p.platform, "manager": manager}
            for manager, records in (("conda", conda), ("pip", pip))
            for p in records
        ]
        return {
            "environment": request.environment,
            "parent": parent.notebook.ref,
            "added": added,
            "added_bytes": _sizes([p.url for p in conda] + [p.url for p in pip]),
            "max_added_bytes": int(self.settings.limits.max_added_mb * 1e6),
        }

    def packages(self, environment: str) -> dict[str, Any]:
        """What a site environment's pair holds, as its published lock says (its first
        platform): each package, its version and the images it is in."""
        if environment not in [e["name"] for e in self.environments()]:
            raise Rejected(404, "no such site environment")
        lock = self.parent(environment).lock
        platform = lock.metadata.platforms[0]
        records = [
            {
                "name": p.name,
                "version": p.version,
                "manager": manager,
                "images": "both" if p.in_worker else "notebook",
            }
            for manager, found in (("conda", lock.package), ("pip", lock.pip))
            for p in found
            if p.platform == platform
        ]
        return {"environment": environment, "platform": platform, "packages": records}

    # -- builds ---------------------------------------------------------------------
    def allowed(self, user: str) -> None:
        group = self.settings.limits.group
        if group is not None and user not in hub_group_members(group):
            raise Rejected(403, f"only members of the hub group {group!r} may build pairs here")

    def start(self, user: str, request: Request) -> dict[str, Any]:
        self.allowed(user)
        workspace = self.settings.workspace(user)
        limits = self.settings.limits
        pairs = self.published_names(user) - {request.name}
        if len(pairs) >= limits.max_pairs:
            raise Rejected(
                403,
                f"you have {len(pairs)} pairs, the most this hub allows "
                "(self_service.max_pairs); delete one first",
            )
        used = _folder_bytes(workspace)
        if used > limits.max_user_mb * 1e6:
            raise Rejected(
                403,
                f"your workspace holds {used / 1e6:.0f} MB, more than this hub allows "
                f"({limits.max_user_mb:g} MB, self_service.max_user_mb); delete a pair first",
            )
        try:
            self.queue.admit(user)  # the cheap checks first: no solve for a full queue
        except BuildRefused as exc:
            raise Rejected(exc.status, str(exc)) from None
        parent = self.parent(request.environment)
        self.preview(request)  # a hostile or conflicting spec fails here, in one line
        try:
            build = self.queue.new(user, request.name, request.environment)
        except BuildRefused as exc:
            raise Rejected(exc.status, str(exc)) from None
        specs, outputs = workspace / "specs", workspace / "build"
        write_spec(specs, request, parent.notebook.ref)
        registry = user_prefix(self.settings.user_images, user)
        common = ["--root", str(specs), "--build-dir", str(outputs)]
        publish = [
            *common,
            "publish",
            request.name,
            "--registry",
            registry,
            "--max-installed-mb",
            str(self.settings.limits.max_installed_mb),
        ]
        job = Job(
            build=build,
            commands=[
                cli_command(*common, "lock", request.name),
                cli_command(
                    *publish, "--image-tests", "yes" if self.settings.image_tests else "no"
                ),
            ],
            cwd=workspace,
            env=dict(os.environ),
            timeout=self.settings.limits.build_timeout,
            log=self.queue.log_path(build.id),
            after_lock=lambda: self._check_size(specs, request.name, parent),
            on_success=lambda: self._published(user, workspace, request.name),
            after=lambda: self._prune(outputs),
        )
        self.queue.start(job)
        return {"id": build.id, "state": build.state}

    def _check_size(self, specs: Path, name: str, parent: Parent) -> None:
        """The added archives' size within `max_added_mb` (asked of their servers)."""
        conda, pip = added_records(read_lock(specs / name / "conda-lock.yml"), parent.lock)
        size = _sizes([p.url for p in conda] + [p.url for p in pip])
        limit = self.settings.limits.max_added_mb
        if size > limit * 1e6:
            raise BuildToolError(
                f"the additions are {size / 1e6:.1f} MB, more than this hub's "
                f"{limit:g} MB (self_service.max_added_mb)"
            )

    def _published(self, user: str, workspace: Path, name: str) -> tuple[str, str, bool]:
        published = read_published(workspace / "build", name)
        if published is None:
            raise BuildToolError("the build published no record")
        self._forget_superseded(user, name, published)
        return published.images.notebook.ref, published.images.worker.ref, published.image_tested

    def _prune(self, outputs: Path) -> None:
        """After a build, however it ended: its layer store (what it pushed is in the
        registry now) and the package cache past self_service.max_cache_mb."""
        shutil.rmtree(outputs / ".store", ignore_errors=True)
        freed = prune_package_cache(package_cache(), int(self.settings.limits.max_cache_mb * 1e6))
        if freed:
            logger.info("pruned %.0f MB of the package cache", freed / 1e6)

    def published_names(self, user: str) -> set[str]:
        """The user's pairs as the registry holds them: every name a build of theirs
        published (the service's own records, which no request deletes) whose notebook
        image is still there, and every publish record in their workspace."""
        names = {p["name"] for p in self.pairs(user)}
        for build in self.queue.of_user(user):
            if build.state == "succeeded" and build.notebook and build.name not in names:
                repository, _, digest = build.notebook.partition("@")
                host, name = split_reference(repository)
                registry = Registry(host, credentials_for(host, configured=host))
                if registry.manifest_digest(name, digest) is not None:
                    names.add(build.name)
        return names

    def _forget_superseded(self, user: str, name: str, published: Published) -> None:
        """A rebuild under a name leaves one pair: the images it replaces are deleted
        (by digest, with what is attached to them)."""
        kept = {published.images.notebook.ref, published.images.worker.ref}
        for build in self.queue.of_user(user):
            if build.name != name or build.state != "succeeded":
                continue
            for ref in (build.notebook, build.worker):
                if ref and ref not in kept:
                    _delete_image(ref)
                    kept.add(ref)

    def _own_build(self, user: str, build_id: str) -> Build:
        build = self.queue.get(build_id)
        if build is None or build.user != user:  # another user's build is no build
            raise Rejected(404, "no such build")
        return build

    def build(self, user: str, build_id: str, since: int = 0) -> dict[str, Any]:
        """A build's record, with its log's lines from line `since` on (the page asks
        for what it has not shown yet; `log_next` is where to go on from)."""
        build = self._own_build(user, build_id)
        lines = self.log_text(user, build_id).splitlines()
        workspace = str(self.settings.workspace(user))
        shown = build.model_dump()
        shown["error"] = build.error and build.error.replace(workspace, "~")
        if build.notebook:
            shown["server"] = server_name(build.name, build.notebook)
        return {**shown, "log": lines[max(since, 0) :], "log_next": len(lines)}

    def log_text(self, user: str, build_id: str) -> str:
        """A build's whole log (at most MAX_LOG_BYTES and a tail), the user's own
        workspace shown as "~": the service's folders are its own."""
        self._own_build(user, build_id)
        log = self.queue.log_path(build_id)
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.replace(str(self.settings.workspace(user)), "~")

    def cancel(self, user: str, build_id: str) -> dict[str, Any]:
        self._own_build(user, build_id)
        try:
            self.queue.cancel(build_id)
        except BuildRefused as exc:
            raise Rejected(exc.status, str(exc)) from None
        return {"id": build_id, "cancelling": True}

    def rebuild(self, user: str, name: str) -> dict[str, Any]:
        """Build a pair again, with the same additions, on its site environment's pair as
        the site publishes it now."""
        published = self._own_pair(user, name)
        spec = self.settings.workspace(user) / "specs" / name / SPEC_FILE
        written = yaml.safe_load(spec.read_text()) if spec.exists() else None
        if not isinstance(written, dict) or not published.parent_environment:
            raise Rejected(404, f"{name} was not built here; build it again from the form")
        body = {
            "environment": published.parent_environment,
            "name": name,
            "dependencies": written.get("dependencies", []),
            "pip": written.get("pip", []),
        }
        return self.start(user, self.request(body))

    def builds(self, user: str) -> list[dict[str, Any]]:
        return [b.model_dump() for b in self.queue.of_user(user)]

    # -- pairs ------------------------------------------------------------------------
    def pairs(self, user: str) -> list[dict[str, Any]]:
        workspace = self.settings.workspace(user)
        tested = {b.name: b.tested for b in reversed(self.queue.of_user(user)) if b.notebook}
        current = {e["name"]: e["notebook"] for e in self.environments()}
        return [
            {
                "name": p.environment,
                "notebook": p.images.notebook.ref,
                "worker": p.images.worker.ref,
                "parent": p.parent,
                "environment": p.parent_environment,
                "added": p.added,
                "published_at": p.published_at,
                "tested": tested.get(p.environment, False),
                "server": server_name(p.environment, p.images.notebook.ref),
                # The site has published its environment's pair again since: a rebuild
                # puts the same additions on the new one.
                "outdated": p.parent_environment in current
                and current[p.parent_environment] != p.parent,
            }
            for p in published_extensions(workspace / "build")
        ]

    def _own_pair(self, user: str, name: str) -> Published:
        if grammar.environment_name_problem(name):
            raise Rejected(404, "no such pair")
        published = read_published(self.settings.workspace(user) / "build", name)
        if published is None:
            raise Rejected(404, "no such pair")
        return published

    def delete(self, user: str, name: str) -> bool:
        workspace = self.settings.workspace(user)
        published = self._own_pair(user, name)
        for image in (published.images.notebook, published.images.worker):
            _delete_image(image.ref)
        shutil.rmtree(workspace / "build" / name, ignore_errors=True)
        shutil.rmtree(workspace / "specs" / name, ignore_errors=True)
        return True


def _sizes(urls: list[str]) -> int:
    """What the archives at `urls` weigh, as their servers say (HEAD requests)."""
    return sum(content_length(url) for url in urls)


def _folder_bytes(folder: Path) -> int:
    """What the files under `folder` hold."""
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _delete_image(ref: str) -> None:
    """Delete an image by digest (`host/name@sha256:...`), and what is attached to it."""
    repository, _, digest = ref.partition("@")
    host, name = split_reference(repository)
    registry = Registry(host, credentials_for(host, configured=host))
    delete_attached(registry, name, digest)
    registry.delete_manifest(name, digest)


def hub_group_members(group: str) -> set[str]:
    """The members of a hub group, asked of the hub's API with the service's token."""
    api = os.environ["JUPYTERHUB_API_URL"].rstrip("/")
    request = urllib.request.Request(
        f"{api}/groups/{urllib.parse.quote(group, safe='')}",
        headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return set(json.loads(response.read()).get("users", []))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return set()
        raise


# -- HTTP -------------------------------------------------------------------------------


class _Base(HubOAuthenticated, web.RequestHandler):
    """The hub's user, and one line for every refusal."""

    builder: Builder

    def initialize(self, builder: Builder) -> None:
        self.builder = builder

    @property
    def user(self) -> str:
        model = self.current_user
        assert model is not None
        return str(model["name"])

    def set_default_headers(self) -> None:
        """Nothing but this service's own page and the hub's stylesheet runs in it, and no
        other site may frame it. (XSRF is the service-auth library's own rule: a request
        the hub's token authenticated needs none; every other one does.)"""
        self.nonce = secrets.token_urlsafe(16)
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'self'; script-src 'self' 'nonce-{self.nonce}'; "
            f"style-src 'self' 'nonce-{self.nonce}'; frame-ancestors 'self'; "
            "base-uri 'none'; form-action 'self'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})

    def reject(self, exc: Rejected) -> None:
        """Answer with the refusal's status and its one line."""
        self.set_status(exc.status)
        self.finish({"error": str(exc)})

    def body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise Rejected(400, f"a request is at most {MAX_BODY // 1024} KiB")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise Rejected(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Rejected(400, "the body is a JSON object")
        return body

    async def call(self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        """Run `fn` off the event loop (the registry, a solve in `pool`); a Rejected
        becomes the answer, and None is returned."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool or self.builder.pool, fn, *args)
        except Rejected as exc:
            self.reject(exc)
            return None

    def parsed(self) -> Request | None:
        """The request's additions, or None once it was answered with a refusal."""
        try:
            return self.builder.request(self.body())
        except Rejected as exc:
            self.reject(exc)
            return None


class PageHandler(_Base):
    """The page; at `builds/<id>`, the page following that build (a URL that survives a
    reload, and that the user can keep)."""

    @web.authenticated
    def get(self, build_id: str = "") -> None:
        template = _templates().get_template("service.html")
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/"
        self.finish(
            template.render(
                user=self.user,
                prefix=prefix,
                hub_prefix=hub_prefix,
                xsrf=self.xsrf_token.decode(),
                nonce=self.nonce,
                environments=self.builder.environments(),
                limits=self.builder.settings.limits,
                tested=self.builder.settings.image_tests,
                spawn_query=self.builder.settings.spawn_query,
                build_id=build_id,
            )
        )


class EnvironmentsHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        found = await self.call(self.builder.environments)
        if found is not None:
            self.finish({"environments": found})


class PreviewHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        request = self.parsed()
        if request is None:
            return
        try:
            self.builder.admit_preview(self.user)
        except Rejected as exc:
            self.reject(exc)
            return
        try:
            found = await self.call(self.builder.preview, request, pool=self.builder.solves)
        finally:
            self.builder.preview_done(self.user)
        if found is not None:
            self.finish(found)


class BuildsHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        self.finish({"builds": self.builder.builds(self.user)})

    @web.authenticated
    async def post(self) -> None:
        request = self.parsed()
        started = (
            None
            if request is None
            else await self.call(self.builder.start, self.user, request, pool=self.builder.solves)
        )
        if started is not None:
            self.set_status(202)
            self.finish(started)


class BuildHandler(_Base):
    @web.authenticated
    async def get(self, build_id: str) -> None:
        since = self.get_argument("from", "0")
        if not since.isdigit():
            self.reject(Rejected(400, "from: a line number"))
            return
        found = await self.call(self.builder.build, self.user, build_id, int(since))
        if found is not None:
            self.finish(found)


class BuildLogHandler(_Base):
    """A build's whole log, as text; with `download=1`, as a file to keep."""

    @web.authenticated
    async def get(self, build_id: str) -> None:
        text = await self.call(self.builder.log_text, self.user, build_id)
        if text is None:
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if self.get_argument("download", "") == "1":
            self.set_header("Content-Disposition", f'attachment; filename="build-{build_id}.log"')
        self.finish(text)


class CancelHandler(_Base):
    @web.authenticated
    async def post(self, build_id: str) -> None:
        found = await self.call(self.builder.cancel, self.user, build_id)
        if found is not None:
            self.set_status(202)
            self.finish(found)


class PairsHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        self.finish({"pairs": self.builder.pairs(self.user)})


class RebuildHandler(_Base):
    @web.authenticated
    async def post(self, name: str) -> None:
        started = await self.call(self.builder.rebuild, self.user, name, pool=self.builder.solves)
        if started is not None:
            self.set_status(202)
            self.finish(started)


class PackagesHandler(_Base):
    @web.authenticated
    async def get(self, environment: str) -> None:
        found = await self.call(self.builder.packages, environment)
        if found is not None:
            self.finish(found)


class PairHandler(_Base):
    @web.authenticated
    async def delete(self, name: str) -> None:
        if await self.call(self.builder.delete, self.user, name) is not None:
            self.set_status(204)
            self.finish()


class HubPairsHandler(web.RequestHandler):
    """A user's pairs for the hub's spawner: only the service's own token opens it."""

    def initialize(self, builder: Builder) -> None:
        self.builder = builder

    def get(self, user: str) -> None:
        given = self.request.headers.get("Authorization", "").removeprefix("token ")
        own = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not own or not hmac.compare_digest(given.encode(), own.encode()):
            raise web.HTTPError(403)
        self.finish({"pairs": self.builder.pairs(user)})


def _templates() -> Jinja:
    return Jinja(
        loader=PackageLoader("buildtool.site", "templates"), autoescape=select_autoescape()
    )


def make_app(settings: ServiceSettings) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    builder = Builder(settings)
    kwargs = {"builder": builder}
    api = prefix + "api/"
    return web.Application(
        [
            (prefix, PageHandler, kwargs),
            (prefix + r"builds/([0-9a-f]{16})", PageHandler, kwargs),
            (prefix + "oauth_callback", HubOAuthCallbackHandler),
            (api + "environments", EnvironmentsHandler, kwargs),
            (api + r"environments/([^/]+)/packages", PackagesHandler, kwargs),
            (api + "preview", PreviewHandler, kwargs),
            (api + "builds", BuildsHandler, kwargs),
            (api + r"builds/([0-9a-f]{16})", BuildHandler, kwargs),
            (api + r"builds/([0-9a-f]{16})/log", BuildLogHandler, kwargs),
            (api + r"builds/([0-9a-f]{16})/cancel", CancelHandler, kwargs),
            (api + "pairs", PairsHandler, kwargs),
            (api + r"pairs/([^/]+)", PairHandler, kwargs),
            (api + r"pairs/([^/]+)/rebuild", RebuildHandler, kwargs),
            (api + r"hub/pairs/([^/]+)", HubPairsHandler, kwargs),
        ],
        cookie_secret=os.urandom(32),
        # No `xsrf_cookies`: tornado would check every POST before anyone knows whether
        # the hub's token authenticated it. The service-auth library checks XSRF itself
        # when it authenticates a request by its cookie, and only then.
    )


def serve(settings: ServiceSettings, port: int, address: str = "127.0.0.1") -> None:
    """Run the service on `address`:`port` until it is stopped."""
    if not re.fullmatch(r"[0-9]+", str(port)):
        raise BuildToolError(f"--port {port!r}")
    site = load_site_settings(settings.root)
    if site.user_images is None:
        raise BuildToolError(f"{settings.root / SITE_FILE}: serve needs user_images")
    check_users_apart(settings.root, settings.build_dir)  # site.yaml may have changed since
    if settings.image_tests:  # what builds of an earlier run left: none of them runs now
        left = sweep_sandboxes()
        if left:
            logger.info("removed %d containers that earlier builds left", left)
    app = make_app(settings)

    async def main() -> None:
        server = HTTPServer(app, xheaders=True, max_body_size=MAX_BODY)
        server.listen(port, address=address)
        logger.info("serving on %s port %d", address, port)
        await asyncio.Event().wait()

    asyncio.run(main())
