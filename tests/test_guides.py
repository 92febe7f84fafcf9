"""The guides run: the admin guide's shell blocks, then the user guide's, as a reader
runs them, in one bash session each (`devsupport/guides.py`), against the stand-in and
the local registry. The lab sets only what the guides ask the reader to set (their
registry and credentials; the notebook's `JUPYTER_IMAGE_SPEC`) and puts the stand-in's
channel and base images in as a site's mirror flags.

What the guides' "not run here" blocks would hand a cluster is checked here with the
tools a cluster uses: both values files of `helm upgrade`, merged as Helm merges them,
against both subcharts' schemas; every manifest against Kubernetes' schemas; the nightly
workflow against GitHub's; and every `deploy/` path those blocks name exists.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from devsupport.chartschema import helm_merge, validate_values
from devsupport.dockercli import remove_local_tags, require_docker
from devsupport.guides import RUN, blocks, lab_bin, run_guide
from devsupport.localregistry import registry_credentials
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]

ADMIN, USER = RUN


def _ran(result: subprocess.CompletedProcess[str]) -> None:
    last = re.findall(r">>> (\S+)", result.stderr)
    assert result.returncode == 0, (
        f"the block at {last[-1] if last else '?'} failed:\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )


def test_the_admin_and_user_guides_run(standin: StandIn, tmp_path: Path) -> None:
    require_docker()
    credentials = registry_credentials()
    namespace = f"{credentials.registry}/guide{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{lab_bin(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_CHANNEL": standin.channel,
        "STANDIN_IMAGE_FLAGS": " ".join(standin.image_flags),
        "DASKHUB_LAB": "1",
        # What the guides' unrun blocks ask the reader to export:
        "SITE_REGISTRY": namespace,
        "MY_IMAGES": f"{namespace}-users/alice",
        "REGISTRY": credentials.registry,
        "REGISTRY_USER": credentials.user,
        "REGISTRY_PASSWORD": credentials.password,
        "GIT_AUTHOR_NAME": "admin",
        "GIT_AUTHOR_EMAIL": "admin@example.org",
        "GIT_COMMITTER_NAME": "admin",
        "GIT_COMMITTER_EMAIL": "admin@example.org",
    }
    try:
        _ran(run_guide(ADMIN, tmp_path, env))
        site = tmp_path / "physics-site"
        _check_the_deploy_files(site)
        published = json.loads((site / "build" / "analysis" / "published.json").read_text())
        notebook = published["images"]["notebook"]["ref"]
        assert notebook.startswith(f"{namespace}/jupyter-analysis@sha256:")

        user = tmp_path / "user"
        user.mkdir()
        _ran(run_guide(USER, user, {**env, "JUPYTER_IMAGE_SPEC": notebook}))
        mine = json.loads((user / "build" / "hep" / "published.json").read_text())
        assert mine["images"]["notebook"]["ref"].startswith(f"{namespace}-users/alice/jupyter-hep@")
        assert (user / "build" / "hep" / "client" / "client-requirements.txt").is_file()
    finally:
        remove_local_tags(namespace + "/", namespace + "-users/")


def _check_the_deploy_files(site: Path) -> None:
    deploy = site / "deploy"
    values = yaml.safe_load((deploy / "daskhub-values.yaml").read_text())
    own = yaml.safe_load((site / "my-site.yaml").read_text())
    validate_values(helm_merge(values, own))
    (profile,) = values["jupyterhub"]["singleuser"]["profileList"]
    assert profile["slug"] == "analysis" and profile["default"] is True
    assert values["jupyterhub"]["hub"]["services"]["daskhub-builder"]["url"]

    manifests = [
        manifest
        for path in sorted((deploy / "kubernetes").glob("*.yaml"))
        for manifest in yaml.safe_load_all(path.read_text())
    ]
    assert {"Deployment", "DaemonSet", "NetworkPolicy"} <= {m["kind"] for m in manifests}
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.28.0", strict=True)

    # What the unrun blocks hand kubectl and helm is there.
    named = {
        path
        for page in RUN
        for block in blocks(page)
        if block.mark == "not run here" and block.shell
        for path in re.findall(r"\bdeploy/[\w./-]+", block.text)
    }
    assert "deploy/daskhub-values.yaml" in named
    assert [path for path in sorted(named) if not (site / path).exists()] == []

    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(site / ".github" / "workflows" / "nightly.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
