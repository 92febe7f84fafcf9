"""Per-user namespaces (buildtool/site/namespaces.py): the escape of a user name, the site's
`user_images` template, and the rules for a user's own images, as pure functions. No
Docker, no registry, no network; the portable part also runs under `python -S`, with the
standard library alone, as it runs inside the gateway and the hub.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.common import BuildToolError, SpecError, grammar
from buildtool.publish import Registry
from buildtool.site import (
    NamespaceError,
    RegistryReader,
    check_users_apart,
    escape_username,
    hub_user_images_config,
    in_any_user_namespace,
    load_site_settings,
    own_image_regex,
    portable_source,
    template_problem,
    user_prefix,
    user_profile_list,
    user_worker_image,
)
from compat import registry as oci
from compat.registry_rules import is_loopback
from devsupport import REPO
from devsupport.published import write_published

TEMPLATE = "registry.example.org/daskhub-users/{username}"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def unescape(component: str) -> str:
    """The inverse of `escape_username`, written here from its rule: `-` and two hex
    digits is a byte, any other character is itself."""
    data, i = bytearray(), 0
    while i < len(component):
        if component[i] == "-":
            data.append(int(component[i + 1 : i + 3], 16))
            i += 3
        else:
            data += component[i].encode()
            i += 1
    return data.decode("utf-8")


def own(username: str, repository: str = "jupyter-myenv", digest: str = DIGEST) -> str:
    return f"{user_prefix(TEMPLATE, username)}/{repository}@{digest}"


# -- the escape --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("alice", "alice"),
        ("alice.b", "alice-2eb"),
        ("a-b", "a-2db"),
        ("a_b", "a-5fb"),
        ("aB", "a-42"),
        ("x@example.org", "x-40example-2eorg"),
        ("jöe", "j-c3-b6e"),
        ("0day", "0day"),
        ("a-2db", "a-2d2db"),  # a name that looks like an escape is escaped again
        ("z" * 128, "z" * 128),
    ],
)
def test_a_name_keeps_its_letters_and_digits_and_escapes_each_other_byte(
    name: str, escaped: str
) -> None:
    assert escape_username(name) == escaped
    assert unescape(escaped) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "an empty user name has no image namespace"),
        ("-alice", "it must start with a lowercase letter or a digit"),
        ("_alice", "it must start with a lowercase letter or a digit"),
        (".alice", "it must start with a lowercase letter or a digit"),
        ("Alice", "it must start with a lowercase letter or a digit"),
        ("ölaf", "it must start with a lowercase letter or a digit"),
        ("z" * 129, "escaped, it is longer than 128 characters"),
        ("a" + "." * 43, "escaped, it is longer than 128 characters"),  # 1 + 43 * 3 = 130
        ("a\ud800", "is not valid Unicode text"),
        ("\nroot", "it must start with a lowercase letter or a digit"),
    ],
)
def test_a_name_without_a_namespace_is_refused_in_one_line(name: str, says: str) -> None:
    with pytest.raises(NamespaceError) as caught:
        escape_username(name)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
    # The tool's one-line error, exit code 1; the gateway answers a ValueError's message.
    assert isinstance(caught.value, BuildToolError) and caught.value.exit_code == 1
    assert isinstance(caught.value, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_every_escape_is_one_path_component_that_unescapes_to_the_name(name: str) -> None:
    try:
        escaped = escape_username(name)
    except NamespaceError:
        return
    assert grammar.PATH_COMPONENT.fullmatch(escaped)
    assert len(escaped) <= 128
    assert unescape(escaped) == name  # a left inverse: the escape is injective


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_two_users_never_share_a_namespace(a: str, b: str) -> None:
    try:
        first, second = escape_username(a), escape_username(b)
    except NamespaceError:
        return
    assert (first == second) == (a == b)
    assert (user_prefix(TEMPLATE, a) == user_prefix(TEMPLATE, b)) == (a == b)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.255.255.254",
        "[::1]",
        "128.0.0.1",
        "10.0.0.1",
        "localhost.example.com",
        "127.0.0.1.nip.io",
        "[::2]",
        "registry.example.org",
    ],
)
def test_every_registry_client_speaks_plain_http_to_the_same_hosts(host: str) -> None:
    """One loopback rule (`compat.registry_rules`) for the push client, compat's reader and
    the gateway's reader alike: plain http on this machine, https anywhere else."""
    hostport = f"{host}:5000"
    expected = "http" if is_loopback(host) else "https"
    bases = [
        Registry(hostport, None).base,
        oci.Client(hostport, None).base,
        RegistryReader(hostport).base,
    ]
    assert bases == [f"{expected}://{hostport}"] * 3


# -- the rules for a user's own images ---------------------------------------------------
def test_the_own_image_regex_admits_only_the_users_own_images_by_digest() -> None:
    pattern = own_image_regex(TEMPLATE, "alice.b")
    prefix = "registry.example.org/daskhub-users/alice-2eb"
    assert re.match(pattern, f"{prefix}/jupyter-myenv@{DIGEST}")
    assert re.match(pattern, f"{prefix}/team/dask-gateway-x@{DIGEST}")
    refused = [
        f"{prefix}/jupyter-myenv:latest",  # a tag
        f"{prefix}/jupyter-myenv:latest@{DIGEST}",  # a tag as well
        f"{prefix}/jupyter-myenv@{DIGEST}\n",  # `$` would let this through
        f"{prefix}/jupyter-myenv@{DIGEST}x",
        f"{prefix}/jupyter-myenv@{DIGEST.upper()}",
        f"{prefix}/jupyter-myenv@sha256:{'0' * 63}",
        f"{prefix}/Jupyter@{DIGEST}",
        f"{prefix}@{DIGEST}",
        f"{prefix}x/jupyter-myenv@{DIGEST}",  # alice-2ebx, another user
        f"registry.example.org/daskhub-users/alice/jupyter-myenv@{DIGEST}",
        f"registry-example.org/daskhub-users/alice-2eb/jupyter-myenv@{DIGEST}",  # `.` is literal
        f"registry.example.org/daskhub-users/alice-2eb/../bob/jupyter@{DIGEST}",
        f"x{prefix}/jupyter-myenv@{DIGEST}",
    ]
    for image in refused:
        assert not re.match(pattern, image), image
    # What browsers' `v`-flag patterns refuse is not in it: `re.escape`'s `\-`, `\Z`.
    assert set(re.findall(r"\\.", pattern)) <= {r"\.", r"\s", r"\S"}


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10))
def test_no_users_regex_admits_another_users_image(a: str, b: str) -> None:
    try:
        pattern, image = own_image_regex(TEMPLATE, a), own(b)
    except NamespaceError:
        return
    assert bool(re.match(pattern, image)) == (a == b)


def test_an_image_in_any_user_namespace_is_told_apart_from_the_site_images() -> None:
    assert in_any_user_namespace(TEMPLATE, own("bob"))
    assert in_any_user_namespace(TEMPLATE, "registry.example.org/daskhub-users/x/y:tag")
    assert not in_any_user_namespace(TEMPLATE, "registry.example.org/daskhub/jupyter-x:tag")
    assert not in_any_user_namespace(TEMPLATE, "registry.example.org/daskhub-users/alice")
    assert not in_any_user_namespace(TEMPLATE, "registryXexample.org/daskhub-users/a/b:c")
    inner = "registry.example.org/users/{username}/pairs"
    assert in_any_user_namespace(inner, "registry.example.org/users/bob/pairs/x@" + DIGEST)
    assert not in_any_user_namespace(inner, "registry.example.org/users/bob/other/x:y")


def test_refusals_before_any_registry_read_say_why_in_one_line() -> None:
    cases = {
        ("bob", own("alice")): "is in another user's namespace; you may start your own "
        "images only (registry.example.org/daskhub-users/bob/...)",
        ("alice", own("alice").split("@")[0] + ":latest"): "your own images start by digest "
        "only (registry.example.org/daskhub-users/alice/<repository>@sha256:<64 hex>)",
        ("_root", own("alice")): "user name '_root' has no image namespace",
    }
    for (user, image), says in cases.items():
        with pytest.raises(NamespaceError) as caught:
            user_worker_image(TEMPLATE, image, user)
        assert says in str(caught.value) and "\n" not in str(caught.value)
    # Not in a user namespace: the site's rules decide.
    assert user_worker_image(TEMPLATE, "docker.io/library/python:3", "bob") is None


def test_the_profiles_are_the_sites_then_the_users_own_image() -> None:
    site = [{"slug": "physlite", "display_name": "PHYSLITE", "default": True}]
    profiles = user_profile_list(site, TEMPLATE, "alice.b")
    assert profiles[:1] == site and len(profiles) == 2
    unlisted = profiles[1]["profile_options"]["image"]["unlisted_choice"]
    assert unlisted["validation_regex"] == own_image_regex(TEMPLATE, "alice.b")
    assert unlisted["kubespawner_override"] == {"image": "{value}"}
    assert "environment" not in str(profiles[1])
    # A name without a namespace gets the site's profiles alone.
    assert user_profile_list(site, TEMPLATE, "_admin") == site


# -- the site setting ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "template",
    [
        "127.0.0.1:5000/daskhub-users/{username}",
        "localhost/users/{username}",
        "registry.example.org/users/{username}/pairs",
        "registry.example.org:443/a.b/c_d/e--f/{username}",
    ],
)
def test_a_good_template_is_taken(tmp_path: Path, template: str) -> None:
    (tmp_path / "site.yaml").write_text(f"version_checks: true\nuser_images: {template}\n")
    assert load_site_settings(tmp_path).user_images == template
    assert template_problem(template) is None


def test_without_the_setting_user_images_are_off(tmp_path: Path) -> None:
    assert load_site_settings(tmp_path).user_images is None
    (tmp_path / "site.yaml").write_text("user_images: null\n")
    assert load_site_settings(tmp_path).user_images is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('"https://registry.example.org/{username}"', "names a scheme"),
        ('"me:s3cret@registry.example.org/{username}"', "holds '@': no credentials"),
        ('"registry.example.org/users"', "needs exactly one {username}, not 0"),
        ('"registry.example.org/{username}/{username}"', "needs exactly one {username}, not 2"),
        ('"registry.example.org/{user}"', "needs exactly one {username}, not 0"),
        ('"registry.example.org/{username}/{tag}"', "holds braces other than {username}"),
        ('"registry.example.org/{username}}"', "holds braces other than {username}"),
        ('"registry.example.org/users-{username}"', "must be a whole path component"),
        ('"registry.example.org/Users/{username}"', "'Users' is not a repository path component"),
        ('"registry.example.org//{username}"', "'' is not a repository path component"),
        ('"registry.example.org/users/{username}/"', "'' is not a repository path component"),
        ('"registry/{username}"', "does not start with a registry host"),
        ('"registry.example.org/{username}"', "puts {username} right after the host"),
        ('"registry.example.org/{username}/pairs"', "puts {username} right after the host"),
        ('"{username}.example.org/x"', "does not start with a registry host"),
        ('"registry.example.org/a b/{username}"', "'a b' is not a repository path component"),
        ('["registry.example.org/{username}"]', "Input should be a valid string"),
        ('"registry.example.org/' + "a" * 90 + '/{username}"', "is longer than 100 characters"),
    ],
)
def test_a_bad_template_is_one_line_naming_file_key_and_line(
    tmp_path: Path, value: str, says: str
) -> None:
    (tmp_path / "site.yaml").write_text(f"# the site\nversion_checks: true\nuser_images: {value}\n")
    with pytest.raises(SpecError) as caught:
        load_site_settings(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/site.yaml:3: user_images: "), message
    assert says in message and "\n" not in message
    assert caught.value.exit_code == 2


# -- the portable part: the code the gateway and the hub run ---------------------------------
def test_the_portable_part_imports_the_standard_library_only_and_is_ascii() -> None:
    source = portable_source()
    assert source.isascii()  # the values file keeps it a readable `|` block
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported and imported <= sys.stdlib_module_names, imported
    names = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    assert not names & {"BuildToolError", "grammar", "inspect", "sys"}


OWN = "registry.example.org/daskhub-users/alice-2eb/jupyter-x@sha256:" + "a" * 64


def test_the_portable_part_runs_with_the_standard_library_alone(tmp_path: Path) -> None:
    """`python -S`: no site-packages, so no buildtool, traitlets or kubespawner; the
    generated hub snippet, with a stand-in for traitlets' `c`, gives the same answers as
    this process's module."""
    code = (
        "import asyncio, http.server, json, sys, threading, types\n"
        "class Service(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        body = json.dumps({{'pairs': [{{'name': 'x', 'notebook': {OWN!r}}}]}}).encode()\n"
        "        self.send_response(200)\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self, *args):\n"
        "        pass\n"
        "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Service)\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "space = types.SimpleNamespace\n"
        "c = space(KubeSpawner=space(), JupyterHub=space())\n"
        "c.KubeSpawner.profile_list = [{'slug': 'physlite', 'display_name': 'P'}]\n"
        "c.JupyterHub.services = [{'name': 'daskhub-builder', 'api_token': 't',\n"
        "    'url': f'http://127.0.0.1:{server.server_address[1]}'}]\n"
        "# As z2jh runs extraConfig: a namespace of its own, with `c` in it.\n"
        "config = {'c': c}\n"
        f"exec({hub_user_images_config(TEMPLATE, service=True)!r}, config)\n"
        "assert 'buildtool' not in sys.modules and 'traitlets' not in sys.modules\n"
        "spawner = types.SimpleNamespace(user=types.SimpleNamespace(name='alice.b'))\n"
        "profiles = asyncio.run(c.KubeSpawner.profile_list(spawner))\n"
        "escape_username = config['escape_username']\n"
        "try:\n"
        "    escape_username('_x')\n"
        "except ValueError as exc:\n"
        "    refused = [type(exc).__name__, str(exc)]\n"
        "print(json.dumps([escape_username('jöe'), profiles, refused]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    escaped, profiles, refused = json.loads(result.stdout)
    assert escaped == escape_username("jöe")
    site = [{"slug": "physlite", "display_name": "P"}]
    pairs = [{"name": "x", "notebook": OWN}]
    assert profiles == user_profile_list(site, TEMPLATE, "alice.b", pairs)
    assert OWN in json.dumps(profiles)  # the service's pair is offered
    with pytest.raises(NamespaceError) as caught:
        escape_username("_x")
    assert refused == ["NamespaceError", str(caught.value)]


def test_a_template_whose_namespaces_hold_a_site_image_is_one_line_at_its_key(
    tmp_path: Path,
) -> None:
    """The site publishes into `.../daskhub/team/...`: a user named `team` could publish
    over it. helm-values and serve both refuse, at site.yaml's user_images line."""
    root = tmp_path / "environments"
    for name in ("base", "e2e"):
        shutil.copytree(REPO / "environments" / name, root / name)
    record = write_published(tmp_path / "build", "e2e")
    for image in record["images"].values():
        image["repository"] = image["repository"].replace("/daskhub/", "/daskhub/team/")
        image["ref"] = f"{image['repository']}@{image['digest']}"
    (tmp_path / "build" / "e2e" / "published.json").write_text(json.dumps(record))
    (root / "site.yaml").write_text("# the site\nuser_images: 127.0.0.1:5000/daskhub/{username}\n")
    with pytest.raises(SpecError) as caught:
        check_users_apart(root, tmp_path / "build")
    message = str(caught.value)
    assert message.startswith(f"{root}/site.yaml:2: user_images: ")
    assert "covers the site's own image 127.0.0.1:5000/daskhub/team/" in message
    (root / "site.yaml").write_text("user_images: 127.0.0.1:5000/daskhub-users/{username}\n")
    check_users_apart(root, tmp_path / "build")
