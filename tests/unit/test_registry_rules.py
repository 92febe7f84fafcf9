"""The registry's rules are written once (`compat/registry_rules.py`) and every client
follows them: credentials go only to the configured registry, the reference grammar and
the loopback rule are the same everywhere, and the generated gateway and hub config run
the module's own source."""

from __future__ import annotations

import ast
import http.server
import inspect
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.cli import main
from buildtool.publish import Registry
from buildtool.publish import credentials_for as push_credentials_for
from buildtool.site import hub_user_images_config
from compat import registry as read_client
from compat import registry_rules
from compat.registry_rules import Credentials, credentials_for, parse_reference
from devsupport import REPO

SITE = "registry.example.org"
ELSEWHERE = "evil.example.net"


@pytest.fixture
def pushing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The push credentials in the environment, and an empty docker config."""
    monkeypatch.setenv("REGISTRY_USER", "ci")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY", raising=False)


def test_registrys_host_binds_the_credentials(pushing: None, monkeypatch) -> None:
    """The issue's case: REGISTRY names the site's registry, a spec names another."""
    monkeypatch.setenv("REGISTRY", f"{SITE}/daskhub")
    assert credentials_for(SITE, None) == Credentials("ci", "s3cret")
    for configured in (None, SITE, ELSEWHERE):
        assert credentials_for(ELSEWHERE, configured) is None
    assert push_credentials_for(ELSEWHERE, ELSEWHERE) is None
    assert read_client.credentials_for(ELSEWHERE) is None


def test_without_registry_the_command_names_the_registry(pushing: None) -> None:
    assert credentials_for(SITE, SITE) == Credentials("ci", "s3cret")
    assert credentials_for(ELSEWHERE, SITE) is None
    assert credentials_for(ELSEWHERE, None) is None
    assert push_credentials_for(ELSEWHERE, SITE) is None


def test_docker_config_entries_go_to_their_own_host_only(pushing: None, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {"registry.example.org": {"auth": "dTpw"}}}')
    assert credentials_for(SITE, None) == Credentials("u", "p")
    assert credentials_for(ELSEWHERE, SITE) is None


def test_no_credential_in_a_repr() -> None:
    assert "s3cret" not in repr(Credentials("ci", "s3cret"))
    assert "s3cret" not in repr(Registry(SITE, Credentials("ci", "s3cret")))


def test_the_rules_are_defined_once() -> None:
    """No client keeps a copy of a rule: each name is defined in registry_rules alone."""
    rules = {"is_loopback", "Origin", "credentials_for", "parse_reference", "display_url"}
    defined: dict[str, list[str]] = {}
    for path in [*REPO.glob("buildtool/**/*.py"), *REPO.glob("compat/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in rules:
                body = ast.get_source_segment(path.read_text(), node) or ""
                if "registry_rules" in path.name or "rules." not in body:
                    defined.setdefault(node.name, []).append(path.name)
    assert defined == {name: ["registry_rules.py"] for name in rules}
    patterns = re.compile(r"_DOMAIN_COMPONENT\s*=|\(\"127\.0\.0\.1\", \"localhost\"\)")
    for path in [*REPO.glob("buildtool/**/*.py"), *REPO.glob("compat/*.py")]:
        if path.name != "registry_rules.py":
            assert not patterns.search(path.read_text()), path


def test_one_reference_grammar() -> None:
    ref = parse_reference("127.0.0.1:5000/team/jupyter-x:v1@sha256:" + "a" * 64)
    assert (ref.host, ref.name, ref.tag) == ("127.0.0.1:5000", "team/jupyter-x", "v1")
    assert str(parse_reference("ubuntu")) == "docker.io/library/ubuntu"
    with pytest.raises(ValueError):
        parse_reference("x@md5:" + "a" * 32)  # read and pinned by sha256 only


def test_the_module_runs_anywhere_and_the_generated_config_embeds_it() -> None:
    source = inspect.getsource(registry_rules)
    assert source.isascii() and "\nfrom __future__" not in source
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= sys.stdlib_module_names, imported
    assert source in hub_user_images_config(f"{SITE}/users/{{username}}")


@pytest.fixture
def basic_asker() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A registry on 127.0.0.3 ("another host") that answers every request with 401 and a
    Basic challenge, and keeps each request's headers."""
    asked: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's name)
            asked.append(dict(self.headers))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="give me your password"')
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.3", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.3:{server.server_address[1]}", asked
    server.shutdown()


def _lock_extension_from(host: str, tmp_path: Path, capsys) -> tuple[int, str]:
    root = tmp_path / "environments"
    (root / "ext").mkdir(parents=True)
    (root / "ext" / "env.yaml").write_text(
        f"from: {host}/ns/jupyter-physlite:latest\ndescription: x\ndependencies: [toolz]\n"
    )
    code = main(["--root", str(root), "--build-dir", str(tmp_path / "build"), "lock", "ext"])
    return code, capsys.readouterr().err


def test_a_parent_elsewhere_never_gets_the_push_credentials(
    pushing: None, basic_asker, tmp_path: Path, capsys
) -> None:
    """The issue's case: `from:` names a server that asks for Basic credentials. Without
    REGISTRY it is asked and gets none; the lock is one line."""
    host, asked = basic_asker
    code, err = _lock_extension_from(host, tmp_path, capsys)
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "wants credentials" in err and "s3cret" not in err
    assert asked and not any("Authorization" in headers for headers in asked)


def test_a_parent_outside_the_configured_registry_is_refused_unasked(
    pushing: None, basic_asker, tmp_path: Path, capsys, monkeypatch
) -> None:
    host, asked = basic_asker
    monkeypatch.setenv("REGISTRY", f"{SITE}/daskhub")
    code, err = _lock_extension_from(host, tmp_path, capsys)
    assert code != 0 and len(err.splitlines()) == 1, err
    assert f"the parent is in {host}, not in {SITE}" in err
    assert asked == []
