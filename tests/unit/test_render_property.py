"""Whatever a spec holds, the rendered Dockerfile has exactly the template's instructions,
and the Helm values read back the spec's words as they were.

Property-based (hypothesis): every text field of a spec gets hostile text (quotes,
backslashes, `$`, line breaks of every kind, `#`, NUL, bidi overrides). A spec the reader
refuses is fine (one line, exit 2); a spec it accepts must render to a Dockerfile whose
instruction list, read by a real Dockerfile parser (dockerfile-parse), is the one the same
spec renders with harmless values, with the same ENV and LABEL keys. That the values
themselves round-trip is checked against BuildKit, in tests/test_render.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.common import SpecError
from buildtool.image import render
from buildtool.lock import read_lock
from buildtool.site import ClusterOptions, Pair, dump_helm_values, options_handler_config
from buildtool.spec import load_environment

REPO = Path(__file__).resolve().parents[2]
# Pieces of injections (a quote that ends the value and starts a key, a trailing
# backslash, variables, comments, line breaks of every kind) and plain characters.
FRAGMENTS = [
    '"',
    "'",
    "\\",
    "$",
    "${HOME}",
    "=",
    " ",
    " X=1 ",
    '" Y="2',
    "#",
    "a",
    "b",
    "\n",
    "\r",
    "\t",
    "\0",
    "\x0b",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\\\n",
    "é",
    ";",
    "`id`",
]
HOSTILE = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)
# Each field and where it sits in the spec; the env keys are fixed so that the number of
# ENV instructions is the same as the baseline's.
FIELDS = {
    "description": ("description",),
    "display_name": ("display_name",),
    "env": ("env", "HOSTILE"),
    "notebook env": ("notebook", "env", "NB_HOSTILE"),
    "worker env": ("worker", "env", "WK_HOSTILE"),
    "apt": ("apt", 0),
    "pip": ("pip", 0),
    "imports": ("imports", 0),
    "notebook image": ("notebook", "image"),
    "worker image": ("worker", "image"),
    "base image": ("build", "base_image"),
}
SAFE = {
    "description": "safe",
    "display_name": "Safe",
    "env": "1",
    "notebook env": "2",
    "worker env": "3",
    "apt": "file",
    "pip": "tomli-w==1.2.0",
    "imports": "json",
    "notebook image": "jupyter-safe",
    "worker image": "dask-gateway-safe",
    "base image": "debian:bookworm-slim",
}


def _spec(values: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"extends": "base"}
    for name, path in FIELDS.items():
        node = spec
        for key, child in zip(path, path[1:], strict=False):
            node = node.setdefault(key, [] if isinstance(child, int) else {})
        if isinstance(path[-1], int):
            node.append(values[name])
        else:
            node[path[-1]] = values[name]
    return spec


@pytest.fixture(scope="module")
def site() -> Path:
    """base and e2e, with e2e's committed lock, in a folder of their own."""
    root = Path(tempfile.mkdtemp()) / "environments"
    for name in ("base", "e2e"):
        shutil.copytree(REPO / "environments" / name, root / name)
    return root


def _parsed(dockerfile: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The instruction list, the ENV and the LABEL pairs, as dockerfile-parse reads them."""
    parser = DockerfileParser(path=str(dockerfile.parent))
    parser.content = dockerfile.read_text()
    names = [item["instruction"] for item in parser.structure]
    envs: dict[str, str] = {}
    labels: dict[str, str] = {}
    for item in parser.structure:
        if item["instruction"] in ("ENV", "LABEL"):
            one = DockerfileParser(path=str(dockerfile.parent))
            one.content = f"FROM scratch\n{item['content']}"
            (envs if item["instruction"] == "ENV" else labels).update(
                one.envs if item["instruction"] == "ENV" else one.labels
            )
    return names, envs, labels


def _render(root: Path, values: dict[str, str], out: Path) -> Path | None:
    """The worker+notebook Dockerfile of e2e's lock with `values` in its spec, or None
    when the spec reader refuses them (always in one line)."""
    (root / "e2e" / "env.yaml").write_text(yaml.safe_dump(_spec(values), allow_unicode=False))
    try:
        env = load_environment(root, "e2e")
    except SpecError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return None
    pair = render(env, read_lock(env.lock_path), out, registry="127.0.0.1:5000/site")
    return pair.system_dockerfile("linux-64")


# The parsed Dockerfile of the safe spec, per site folder.
BASELINES: dict[Path, tuple] = {}


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(sorted(FIELDS)), text=HOSTILE)
def test_a_spec_never_adds_an_instruction(site: Path, field: str, text: str) -> None:
    out = Path(tempfile.mkdtemp())
    if site not in BASELINES:  # the same for every example: rendered once per site
        baseline = _render(site, SAFE, out / "baseline")
        assert baseline is not None
        BASELINES[site] = _parsed(baseline)
    rendered = _render(site, {**SAFE, field: text}, out / "hostile")
    if rendered is not None:
        names, envs, labels = _parsed(rendered)
        safe_names, safe_envs, safe_labels = BASELINES[site]
        assert names == safe_names, rendered.read_text()
        assert (sorted(envs), sorted(labels)) == (sorted(safe_envs), sorted(safe_labels))
        # dockerfile-parse unescapes only \" in a quoted word, BuildKit also \\ and \$
        # (tests/test_render.py checks those against BuildKit): compare where they agree.
        if "\\" not in text and "$" not in text:
            key = {"env": "HOSTILE", "notebook env": "NB_HOSTILE", "worker env": "WK_HOSTILE"}
            if field in key:
                assert envs[key[field]] == text
            if field == "description":
                assert labels["org.opencontainers.image.description"] == (
                    f"{text.strip()} (notebook image)"
                )
    shutil.rmtree(out)


@settings(max_examples=150, deadline=None)
@given(description=HOSTILE, display_name=HOSTILE)
def test_helm_values_read_back_the_spec_words(description: str, display_name: str) -> None:
    """The profile list is YAML another program (helm) reads: the words come back as they
    were, and the gateway's Python is the same program whatever they are."""
    pair = Pair(
        name="e2e",
        display_name=display_name,
        description=description,
        notebook="127.0.0.1:5000/site/jupyter-e2e@sha256:" + "a" * 64,
        worker="127.0.0.1:5000/site/dask-gateway-e2e@sha256:" + "b" * 64,
        worker_by_content_tag="127.0.0.1:5000/site/dask-gateway-e2e:c-0123456789ab",
    )
    handler = options_handler_config([pair], pair, ClusterOptions())
    values = {
        "jupyterhub": {
            "singleuser": {
                "profileList": [{"display_name": display_name, "description": description}]
            }
        },
        "dask-gateway": {"gateway": {"extraConfig": {"optionHandler": handler}}},
    }
    read = yaml.safe_load(dump_helm_values(values))
    profile = read["jupyterhub"]["singleuser"]["profileList"][0]
    assert (profile["display_name"], profile["description"]) == (display_name, description)
    assert read["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"] == handler
