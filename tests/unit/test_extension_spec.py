"""An extension's spec (`from:`), read as a user's hostile input: no Docker, no network."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from buildtool.common import SpecError
from buildtool.publish import gunzip_limited
from buildtool.spec import (
    environment_names,
    is_extension,
    load_environment,
    load_extension,
)

PARENT = "registry.example.org/daskhub/jupyter-physlite@sha256:" + "a" * 64


def _write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "env.yaml").write_text(text)


def test_an_extension_reads_its_parent_additions_and_lines(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "hep",
        f"from: {PARENT}\ndescription: more\ndependencies: [particle, 'vector >=1']\n"
        "pip: [hepunits==2.3.5]\nimports: [particle]\nnotebook: {image: jupyter-hep2}\n",
    )
    _write(tmp_path, "site", "description: a site environment\ndependencies: [python]\n")
    ext = load_extension(tmp_path, "hep")
    assert ext.parent == PARENT
    assert [r.spec for r in ext.dependencies] == ["particle", "vector >=1"]
    assert [r.line for r in ext.dependencies] == [3, 3]
    assert ext.pip == ["hepunits==2.3.5"] and ext.pip_lines == [4]
    assert (ext.repository("notebook"), ext.repository("worker")) == (
        "jupyter-hep2",
        "dask-gateway-hep",
    )
    # Extensions are a user's: not among the site's environments, and not built as one.
    assert is_extension(tmp_path, "hep") and not is_extension(tmp_path, "site")
    assert environment_names(tmp_path) == ["site"]
    with pytest.raises(SpecError) as raised:
        load_environment(tmp_path, "hep")
    assert str(raised.value).startswith(f"{tmp_path / 'hep' / 'env.yaml'}:1: from:")


@pytest.mark.parametrize(
    ("body", "where", "said"),
    [
        (
            "from: physlite\ndescription: x\napt: [vim]\ndependencies: [a]\n",
            ":3: apt:",
            "unknown key",
        ),
        ("from: Phys Lite\ndescription: x\ndependencies: [a]\n", ":1: from:", "environment name"),
        (
            "from: a/b:c@sha256:zz\ndescription: x\ndependencies: [a]\n",
            ":1: from:",
            "image reference",
        ),
        ("from: physlite\ndescription: x\n", ":1:", "adds none"),
        (
            "from: physlite\ndescription: x\ndependencies: ['numpy >>1']\n",
            ":3: dependencies[0]:",
            "MatchSpec",
        ),
        ("from: physlite\ndescription: x\npip: [numpy]\n", ":3: pip[0]:", "exact pip pin"),
        (
            "from: physlite\ndescription: x\ndependencies: [a]\nenv: {A: b}\n",
            ":4: env:",
            "unknown key",
        ),
        (
            "from: physlite\ndescription: '  '\ndependencies: [a]\n",
            ":2: description:",
            "one non-empty line",
        ),
    ],
)
def test_a_bad_extension_is_one_line_naming_file_key_and_line(
    tmp_path: Path, body: str, where: str, said: str
) -> None:
    _write(tmp_path, "bad", body)
    with pytest.raises(SpecError) as raised:
        load_extension(tmp_path, "bad")
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 2
    assert message.startswith(f"{tmp_path / 'bad' / 'env.yaml'}{where}"), message
    assert said in message


def test_an_attached_file_that_expands_past_its_limit_is_refused() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    assert len(bomb) < 10_000
    assert gunzip_limited(bomb, 5_000_000) == b"\0" * 5_000_000
    with pytest.raises(ValueError):
        gunzip_limited(bomb, 4_999_999)
