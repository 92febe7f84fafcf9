"""What each name and value a user gives may look like, written once.

Every pattern is matched whole (`re.fullmatch`, ASCII only): `re.match(...$)` let a
trailing newline through, and a newline in a value became a new Dockerfile instruction.
The image reference grammar is the distribution project's (the one `docker pull` and every
registry parse), from `compat.registry_rules`, where every registry client gets it; the
rest follow what the consuming tool accepts (Debian package names,
PEP 508 names, POSIX shell variable names), narrowed to what a spec needs.
"""

from __future__ import annotations

import re
import urllib.parse

from compat.registry_rules import DOMAIN as _DOMAIN
from compat.registry_rules import PATH as _PATH
from compat.registry_rules import PATH_COMPONENT as _PATH_COMPONENT
from compat.registry_rules import REFERENCE, REFERENCE_MAX

# An environment's folder name: one path component, since it names images
# (`jupyter-<env>`) and folders. 64 characters leave room in a 128-character repository.
ENVIRONMENT_NAME = re.compile(_PATH_COMPONENT, re.ASCII)
ENVIRONMENT_NAME_MAX = 64
# A repository name without its registry (`jupyter-physlite`, `team/jupyter-x`).
REPOSITORY = re.compile(_PATH, re.ASCII)
# `[registry/]path[:tag][@digest]`, as `FROM` and `docker pull` take it.
IMAGE_REFERENCE = REFERENCE
# Where pairs are published: `host[:port]/namespace`.
REGISTRY_NAMESPACE = re.compile(rf"{_DOMAIN}/{_PATH}", re.ASCII)
# A registry host (`host[:port]`) and one component of a repository path, for templates
# such as site.yaml's `user_images` (`host/daskhub-users/{username}`).
REGISTRY_HOST = re.compile(_DOMAIN, re.ASCII)
PATH_COMPONENT = re.compile(_PATH_COMPONENT, re.ASCII)

PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*", re.ASCII)
ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
PIP_PIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+",
    re.ASCII,
)
APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+:~-]+)?", re.ASCII)
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)
VIRTUAL_PACKAGE = re.compile(r"__[a-z0-9_]+", re.ASCII)
CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*", re.ASCII)

# Where channel credentials go instead of the URL (rattler reads both).
CREDENTIALS_HINT = (
    "put credentials in rattler's authentication file (RATTLER_AUTH_FILE, keyed by host "
    "without the port) or its keyring entry, never in the URL"
)


def environment_name_problem(name: str) -> str | None:
    """Why `name` cannot name an environment, or None."""
    if len(name) > ENVIRONMENT_NAME_MAX:
        return f"is longer than {ENVIRONMENT_NAME_MAX} characters"
    if not ENVIRONMENT_NAME.fullmatch(name):
        return (
            f"{name!r} is not an environment name (lowercase letters, digits and . _ - "
            "between them, as in image names)"
        )
    return None


def image_reference_problem(reference: str) -> str | None:
    """Why `reference` is not an image reference (`[registry/]path[:tag][@digest]`)."""
    if len(reference) > REFERENCE_MAX or not IMAGE_REFERENCE.fullmatch(reference):
        return f"{reference!r} is not an image reference ([registry/]name[:tag][@sha256:...])"
    return None


def registry_problem(registry: str) -> str | None:
    """Why `registry` is not `host[:port]/namespace`, or None."""
    if len(registry) > REFERENCE_MAX or not REGISTRY_NAMESPACE.fullmatch(registry):
        return f"{registry!r} is not a registry and namespace (host[:port]/namespace)"
    return None


def channel_problem(channel: str) -> str | None:
    """Why `channel` cannot be a channel: a name (`conda-forge`, `conda-forge/label/x`)
    or an http(s) or file URL, never one that carries credentials."""
    if not channel.strip():
        return "an empty channel was given (did a `$(...)` for --channel fail?)"
    if "://" not in channel:
        if CHANNEL_NAME.fullmatch(channel) and ".." not in channel.split("/"):
            return None
        return f"{channel!r} is not a channel name or URL"
    parts = urllib.parse.urlsplit(channel)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return f"a channel URL carries credentials; {CREDENTIALS_HINT}"
    if parts.scheme not in ("http", "https", "file"):
        return f"a channel URL is http(s):// or file://, not {parts.scheme}://"
    if parts.query or parts.fragment or any(c.isspace() for c in channel):
        return "a channel URL has no query, fragment or spaces"
    if parts.scheme != "file" and not parts.hostname:
        return "a channel URL names its host"
    return None
