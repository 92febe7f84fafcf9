"""The docs hold up without running anything heavy: every shell block is run by the
guides' test or says why not, the YAML examples load with the tool's own readers, every
relative link finds its file and heading, the CLI reference is the parser's, and the
README stays short. (`tests/test_guides.py` runs the guides' blocks.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from buildtool.site import load_site_settings
from buildtool.spec import load
from devsupport import REPO
from devsupport.clidoc import CLI_DOC, render
from devsupport.guides import PAGES, RUN, Block, blocks, lab_flags, script

ALL = [block for page in PAGES for block in blocks(page)]


def test_the_readme_is_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_every_shell_block_runs_or_says_why_not() -> None:
    shell = [b for b in ALL if b.shell]
    assert len([b for b in shell if b.runs]) >= 12  # the guides' own commands
    unaccounted = [b.where for b in shell if not b.runs and b.mark != "not run here"]
    assert unaccounted == [], "a shell block outside the run guides needs a not-run mark"
    assert [b.where for b in ALL if b.mark and len(b.reason) < 10] == []


def test_a_block_without_a_mark_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```sh\nmake something\n```\n\n<!-- not run here: x -->\n```sh\nls\n```\n"
    )
    found = blocks(page)
    assert [(b.line, b.mark, b.reason) for b in found] == [
        (3, None, ""),
        (8, "not run here", "x"),
    ]
    assert not any(b.runs for b in found)  # not a run guide: the first is unaccounted


def test_the_run_guides_scripts_are_valid_bash() -> None:
    for page in RUN:
        text = script(page)
        assert text.count(">>> docs/") == len([b for b in blocks(page) if b.runs])
        checked = subprocess.run(["bash", "-n", "-c", text], capture_output=True)
        assert checked.returncode == 0, checked.stderr


def _checked(kind: str) -> list[Block]:
    return [b for b in ALL if b.mark == "checked" and b.reason.startswith(kind)]


def test_the_site_yaml_example_loads(tmp_path: Path) -> None:
    (example,) = _checked("site.yaml")
    (tmp_path / "site.yaml").write_text(example.text)
    settings = load_site_settings(tmp_path)
    assert settings.self_service is not None and settings.placement["ml-gpu"].workers.gpus == 1


def test_the_env_yaml_examples_load(tmp_path: Path) -> None:
    examples = _checked("env.yaml")
    assert len(examples) == 2
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root)
    for index, example in enumerate(examples):
        (root / f"example{index}").mkdir()
        (root / f"example{index}" / "env.yaml").write_text(example.text)
        load(root, f"example{index}")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but - and _ dropped, spaces
    to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target}"


def test_the_cli_reference_is_the_parsers() -> None:
    assert CLI_DOC.read_text() == render(), "run: python -m devsupport.clidoc"


def test_the_lab_adds_only_the_mirror_flags(tmp_path: Path) -> None:
    root = REPO / "environments"
    flags = ["--base-image", "linux-64=standin:1"]
    channel = "http://127.0.0.1:8321/conda-forge"
    assert lab_flags(["--root", str(root), "lock", "e2e"], channel, flags) == [
        "--channel",
        channel,
    ]
    assert lab_flags(["--root", str(root), "lock", "--check", "--all"], channel, flags) == []
    assert lab_flags(["--root", str(root), "publish", "e2e"], channel, flags) == flags
    assert lab_flags(["--root", str(root), "helm-values"], channel, flags) == []
    # An extension's channels are its parent's: its lock gets none.
    ext = tmp_path / "hep"
    ext.mkdir()
    (ext / "env.yaml").write_text(
        "from: 127.0.0.1:5000/d/jupyter-e2e@sha256:"
        + "0" * 64
        + "\ndescription: e2e and vector\ndependencies: [vector]\n"
    )
    assert lab_flags(["--root", str(tmp_path), "lock", "hep"], channel, flags) == []
