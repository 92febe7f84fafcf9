"""`buildtool init` gives a site that publishes: init, then the one edit the README asks
for (site.yaml's registry), lock, publish and helm-values, run as an admin runs them, with
only the lab's overrides (the stand-in's channel and base image). Nothing here skips."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from buildtool.site import REGISTRY_PLACEHOLDER
from devsupport.buildtool_cli import buildtool
from devsupport.dockercli import remove_local_tags, require_docker
from devsupport.localregistry import registry_credentials
from devsupport.standin import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.registry]


def test_an_initialised_site_locks_publishes_and_deploys(standin: StandIn, tmp_path: Path) -> None:
    require_docker()
    site = tmp_path / "physics-site"
    made = buildtool("init", site, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (site / "analysis" / "env.yaml").is_file()

    # Before the registry is named, nothing is published anywhere: one line.
    refused = buildtool("publish", "analysis", cwd=site)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: site.yaml:4: registry: still the placeholder")

    credentials = registry_credentials()
    namespace = f"{credentials.registry}/init{uuid.uuid4().hex[:8]}"
    settings = site / "site.yaml"
    settings.write_text(settings.read_text().replace(REGISTRY_PLACEHOLDER, namespace))
    env = {
        **os.environ,
        "REGISTRY_USER": credentials.user,
        "REGISTRY_PASSWORD": credentials.password,
    }
    try:
        locked = buildtool("lock", "analysis", "--channel", standin.channel, cwd=site)
        assert locked.returncode == 0, locked.stderr
        published = buildtool("publish", "analysis", *standin.image_flags, cwd=site, env=env)
        assert published.returncode == 0, published.stderr[-3000:]
        assert f"notebook: {namespace}/jupyter-analysis@sha256:" in published.stdout
        deployed = buildtool("helm-values", cwd=site)
        assert deployed.returncode == 0, deployed.stderr
    finally:
        remove_local_tags(namespace + "/")
    values = yaml.safe_load((site / "deploy" / "daskhub-values.yaml").read_text())
    (profile,) = values["jupyterhub"]["singleuser"]["profileList"]
    assert profile["slug"] == "analysis" and profile["default"] is True
    assert profile["kubespawner_override"]["image"].startswith(f"{namespace}/jupyter-analysis@")

    # The nightly workflow is one GitHub's own schema takes.
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
