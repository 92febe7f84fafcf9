"""The deployment's own usage, `GatewayCluster(worker_cores=1, worker_memory=2, image=...)`,
against a real dask-gateway server configured with the generated Helm values.

The server is `dask-gateway-server` from the test extra, its config file the chart's
`extraConfig.optionHandler` snippet, verbatim, after a preamble that says where to listen
and which backend to run (`devsupport.chart.chart_gateway`): dask-gateway's own local
backend with KubeBackend's cluster configuration class, recording each cluster's
configuration as the backend holds it. The test then makes the worker and scheduler pods
from that configuration with dask-gateway's own KubeController.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.utils import FrozenAttrDict

from buildtool.common import SpecError
from buildtool.site import generate_helm_values, load_site_settings, write_helm_values
from devsupport.chart import ChartGateway, chart_gateway
from devsupport.published import write_published

GIB = 2**30
PUBLISHED = ("e2e", "physlite")
SITE_YAML = """\
cluster_options:
  worker_cores: {min: 0.5, default: 1, max: 2}
  worker_memory: {min: 1, default: 4, max: 8}
  scheduler_cores: {min: 0.5, default: 0.5, max: 1}
  scheduler_memory: {min: 1, default: 3, max: 4}
"""


@pytest.fixture
def published(envroot: Path, tmp_path: Path) -> dict[str, dict]:
    return {name: write_published(tmp_path / "build", name) for name in PUBLISHED}


@pytest.fixture
def values(envroot: Path, tmp_path: Path, published: dict[str, dict]) -> dict:
    (envroot / "site.yaml").write_text(SITE_YAML)
    path = tmp_path / "deploy" / "daskhub-values.yaml"
    write_helm_values(generate_helm_values(envroot, tmp_path / "build"), path)
    return yaml.safe_load(path.read_text())


@pytest.fixture
def gateway(values: dict, tmp_path: Path) -> Iterator[ChartGateway]:
    with chart_gateway(values, tmp_path / "gateway") as running:
        yield running


def _pod(config: dict, worker: bool) -> dict:
    """The pod dask-gateway's Kubernetes controller makes from a cluster's configuration."""
    controller = KubeController(gateway_instance="daskhub")
    return controller.make_pod("daskhub", "c1", FrozenAttrDict(config), is_worker=worker)


def test_the_deployments_snippet_starts_the_matched_worker_with_its_resources(
    gateway: ChartGateway, published: dict[str, dict]
) -> None:
    e2e, physlite = (published[name]["images"] for name in PUBLISHED)
    by_content_tag = f"{e2e['worker']['repository']}:{published['e2e']['content_tag']}"
    started = gateway.attempts(
        # The wiki's line, with a published notebook image: its matched worker starts.
        {"worker_cores": 1, "worker_memory": 2, "image": physlite["notebook"]["ref"]},
        # A worker by its content tag, fractional cores, and the scheduler's options.
        {"worker_cores": 0.5, "image": by_content_tag, "scheduler_memory": 4},
    )
    assert all("cluster" in result for result in started), started
    first, second = (gateway.config(result["cluster"]) for result in started)

    assert first["image"] == physlite["worker"]["ref"]
    assert (first["worker_cores"], first["worker_cores_limit"]) == (1.0, 1.0)
    assert first["worker_memory"] == first["worker_memory_limit"] == 2 * GIB
    # What the user did not ask for comes from the site settings.
    assert (first["scheduler_cores"], first["scheduler_memory"]) == (0.5, 3 * GIB)

    assert second["image"] == e2e["worker"]["ref"]
    assert (second["worker_cores"], second["worker_memory"]) == (0.5, 4 * GIB)
    assert second["scheduler_memory"] == second["scheduler_memory_limit"] == 4 * GIB

    # What Kubernetes would be asked for: the matched worker by digest, requests = limits.
    (container,) = _pod(first, worker=True)["spec"]["containers"]
    assert container["image"] == physlite["worker"]["ref"]
    assert container["resources"] == {
        "requests": {"cpu": "1.000", "memory": str(2 * GIB)},
        "limits": {"cpu": "1.000", "memory": str(2 * GIB)},
    }
    (container,) = _pod(first, worker=False)["spec"]["containers"]
    assert container["image"] == physlite["worker"]["ref"]
    assert container["resources"]["limits"] == {"cpu": "0.500", "memory": str(3 * GIB)}


def test_the_notebook_pods_own_image_option_needs_no_image_argument(
    gateway: ChartGateway, values: dict, published: dict[str, dict]
) -> None:
    """In a notebook pod the profile's environment names the image; users pass resources."""
    profile = values["jupyterhub"]["singleuser"]["profileList"][1]
    notebook = profile["kubespawner_override"]["image"]
    env = {
        # KubeSpawner's expansion of `{{JUPYTER_IMAGE_SPEC}}` leaves single braces.
        name: value.replace("{{", "{").replace("}}", "}")
        for name, value in profile["kubespawner_override"]["environment"].items()
    }
    (result,) = gateway.attempts(
        {"worker_cores": 2, "worker_memory": 8}, env={**env, "JUPYTER_IMAGE_SPEC": notebook}
    )
    config = gateway.config(result["cluster"])
    assert config["image"] == published[profile["slug"]]["images"]["worker"]["ref"]
    assert (config["worker_cores"], config["worker_memory"]) == (2.0, 8 * GIB)


def test_unpublished_images_and_over_limit_requests_are_refused(
    gateway: ChartGateway, published: dict[str, dict]
) -> None:
    e2e = published["e2e"]
    date_tagged = f"{e2e['images']['worker']['repository']}:{e2e['date_tag']}"
    refused = gateway.attempts(
        {"worker_cores": 1, "worker_memory": 2, "image": "docker.io/library/python:3.11"},
        {"worker_cores": 1, "worker_memory": 2, "image": date_tagged},
        {"worker_cores": 3, "worker_memory": 2},
        {"worker_memory": 16},
        {"scheduler_cores": 4},
        {"worker_cores": 0},
    )
    assert [r.get("error") for r in refused] == [
        "ValueError: image 'docker.io/library/python:3.11' is not a published DaskHub image; "
        f"use one of {[published[n]['images']['worker']['ref'] for n in PUBLISHED]} "
        "or their notebook images",
        f"ValueError: image {date_tagged!r} is not a published DaskHub image; "
        f"use one of {[published[n]['images']['worker']['ref'] for n in PUBLISHED]} "
        "or their notebook images",
        "ValueError: worker_cores must be <= 2.000000, got 3.0",
        "ValueError: worker_memory must be <= 8.000000, got 16.0",
        "ValueError: scheduler_cores must be <= 1.000000, got 4.0",
        "ValueError: worker_cores must be >= 0.500000, got 0.0",
    ]
    assert not list(gateway.records.iterdir())  # no cluster was started


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "cluster_options:\n  worker_cores: {min: 1, default: 1, max: 4}\n"
            "  worker_gpus: {min: 0, default: 0, max: 1}\n",
            "site.yaml:3: cluster_options.worker_gpus: unknown key 'worker_gpus'",
        ),
        (
            "cluster_options:\n  worker_memory:\n    min: 1\n    default: 32\n    max: 16\n",
            "site.yaml:2: cluster_options.worker_memory: needs min <= default <= max, "
            "got 1, 32, 16",
        ),
        (
            "cluster_options:\n  scheduler_cores: {min: 1, default: one, max: 2}\n",
            "site.yaml:2: cluster_options.scheduler_cores.default: Input should be a valid number",
        ),
        (
            "cluster_options:\n  worker_cores: {min: 0, default: 1, max: 2}\n",
            "site.yaml:2: cluster_options.worker_cores.min: Input should be greater than 0",
        ),
        ("- worker_cores\n", "site.yaml:1: the site settings must be a YAML mapping"),
    ],
    ids=["unknown-key", "default-above-max", "not-a-number", "min-zero", "not-a-mapping"],
)
def test_site_settings_are_validated_like_the_specs(
    envroot: Path, published: dict[str, dict], tmp_path: Path, text: str, error: str
) -> None:
    (envroot / "site.yaml").write_text(text)
    with pytest.raises(SpecError) as caught:
        load_site_settings(envroot)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{envroot}/{error}")

    # The command says it in one line, with exit code 2.
    result = subprocess.run(
        [sys.executable, "-m", "buildtool.cli", "--root", envroot, "helm-values"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {envroot}/{error}")
    assert result.stderr.count("\n") == 1
