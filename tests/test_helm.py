"""`buildtool helm-values`: DaskHub chart values, run through the real KubeSpawner,
dask-gateway client and dask-gateway server code that reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.backends.kubernetes.controller import KubeController
from distributed.cli.dask_scheduler import main as dask_scheduler_cli
from traitlets.config import Config

from buildtool.common import BuildToolError
from buildtool.image import CLIENT_ENV, GUARD_ENV, SCHEDULER_PRELOAD
from buildtool.site import dump_helm_values, generate_helm_values, write_helm_values
from devsupport.chart import IMAGE_ENV, cluster_config, gateway_backend, gateway_image, spawn
from devsupport.published import write_published

PUBLISHED = ("e2e", "physlite", "pyhep")
# The seed site.yaml keeps this project's own e2e check pair off the hub and preselects
# physlite: the values offer the other two.
OFFERED = ("physlite", "pyhep")


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required if required is not None else list(properties),
        "properties": properties,
    }


_STRING = {"type": "string", "minLength": 1}
_DIGEST_REF = {"type": "string", "pattern": r"^[^@\s]+@sha256:[0-9a-f]{64}$"}

# Every key the generated values use, and nothing else. Where the keys sit follows the
# charts' own values schemas: zero-to-jupyterhub's `singleuser.profileList` (an array it
# passes to KubeSpawner.profile_list) and dask-gateway's `gateway.extraConfig` (a map of
# code blocks). What a profile may hold is KubeSpawner's to check: the tests below load
# the profiles into a real KubeSpawner.
VALUES_SCHEMA = _closed(
    {
        "jupyterhub": _closed(
            {
                "singleuser": _closed(
                    {
                        "profileList": {
                            "type": "array",
                            "minItems": 1,
                            "items": _closed(
                                {
                                    "display_name": _STRING,
                                    "description": _STRING,
                                    "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]*$"},
                                    "default": {"const": True},
                                    "kubespawner_override": _closed(
                                        {
                                            "image": _DIGEST_REF,
                                            "environment": _closed(
                                                {
                                                    IMAGE_ENV: {"const": "{{JUPYTER_IMAGE_SPEC}}"},
                                                    CLIENT_ENV: {"const": "off"},
                                                },
                                                required=[IMAGE_ENV],
                                            ),
                                        }
                                    ),
                                },
                                required=[
                                    "display_name",
                                    "description",
                                    "slug",
                                    "kubespawner_override",
                                ],
                            ),
                        }
                    }
                ),
                # Only with site.yaml's user_images: the hub's profile callable.
                "hub": _closed({"extraConfig": _closed({"daskhubUserImages": _STRING})}),
            },
            required=["singleuser"],
        ),
        "dask-gateway": _closed(
            {"gateway": _closed({"extraConfig": _closed({"optionHandler": _STRING})})}
        ),
    }
)


@pytest.fixture
def published(envroot: Path, tmp_path: Path) -> dict[str, dict]:
    build_dir = tmp_path / "build"
    return {name: write_published(build_dir, name) for name in PUBLISHED}


@pytest.fixture
def values_file(envroot: Path, tmp_path: Path, published: dict[str, dict]) -> Path:
    path = tmp_path / "deploy" / "daskhub-values.yaml"
    assert write_helm_values(generate_helm_values(envroot, tmp_path / "build"), path)
    return path


@pytest.fixture
def values(values_file: Path) -> dict:
    return yaml.safe_load(values_file.read_text())


@pytest.fixture
def backend(values: dict, tmp_path: Path) -> KubeBackend:
    return gateway_backend(values, tmp_path)


def _client_options(pod_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The cluster options the dask-gateway client sends from inside that pod."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DASK_CONFIG": str(tmp_path / "no-dask-config"),
        **pod_env,
    }
    code = (
        "import json\n"
        "from dask_gateway import Gateway\n"
        "with Gateway('http://127.0.0.1:9') as gateway:\n"
        "    print(json.dumps(gateway._config_cluster_options()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_values_are_yaml_with_header_and_only_known_keys(values_file: Path, values: dict) -> None:
    text = values_file.read_text()
    assert text.startswith("# AUTO GENERATED by `buildtool helm-values`")
    assert "optionHandler: |\n" in text  # the snippet stays readable in the file
    jsonschema.validate(values, VALUES_SCHEMA)

    # The schema is closed: a key it does not know is an error.
    values["jupyterhub"]["singleuser"]["profileList"][0]["kubespawner_override"]["img"] = "x"
    with pytest.raises(jsonschema.ValidationError, match="'img' was unexpected"):
        jsonschema.validate(values, VALUES_SCHEMA)


def test_each_profile_pins_its_notebook_and_maps_it_to_its_worker(
    values: dict, published: dict[str, dict]
) -> None:
    profiles = values["jupyterhub"]["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == list(OFFERED)
    assert [p.get("default", False) for p in profiles] == [True, False]
    assert profiles[0]["display_name"] == "PHYSLITE (uproot, awkward, coffea, pyarrow)"

    namespace: dict[str, Any] = {"c": Config()}
    exec(values["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"], namespace)
    for profile in profiles:
        images = published[profile["slug"]]["images"]
        notebook = profile["kubespawner_override"]["image"]
        assert notebook == images["notebook"]["ref"]
        assert namespace["DASKHUB_WORKER_FOR_IMAGE"][notebook] == images["worker"]["ref"]
    assert namespace["DASKHUB_WORKER_IMAGES"] == [
        published[name]["images"]["worker"]["ref"] for name in OFFERED
    ]


def test_gateway_starts_only_published_worker_images(
    backend: KubeBackend, published: dict[str, dict]
) -> None:
    e2e, physlite, pyhep = (published[name]["images"] for name in PUBLISHED)
    # No image asked for: the default profile's worker.
    assert gateway_image(backend, {}) == physlite["worker"]["ref"]
    # A notebook image starts its matched worker; a worker image starts as it is.
    assert gateway_image(backend, {"image": pyhep["notebook"]["ref"]}) == pyhep["worker"]["ref"]
    assert gateway_image(backend, {"image": physlite["worker"]["ref"]}) == physlite["worker"]["ref"]
    # What the notebook image bakes in: its worker by content tag, which publish never moves.
    tag = published["physlite"]["content_tag"]
    by_content_tag = f"{physlite['worker']['repository']}:{tag}"
    assert gateway_image(backend, {"image": by_content_tag}) == physlite["worker"]["ref"]

    refused = [
        "docker.io/library/python:3.11",
        f"{physlite['worker']['repository']}:{published['physlite']['date_tag']}",  # it moves
        physlite["worker"]["repository"] + "@sha256:" + "0" * 64,
        "",
        # A hidden pair is not deployed: neither of its images starts.
        e2e["worker"]["ref"],
        e2e["notebook"]["ref"],
    ]
    for image in refused:
        with pytest.raises(PublicException, match="is not a published DaskHub image"):
            gateway_image(backend, {"image": image})


def test_each_notebook_gets_its_matched_worker_end_to_end(
    values: dict, backend: KubeBackend, published: dict[str, dict], tmp_path: Path
) -> None:
    # JupyterHub: KubeSpawner applies each profile and makes the pod's environment.
    pods = spawn(values["jupyterhub"]["singleuser"]["profileList"], tmp_path)
    assert list(pods) == list(OFFERED)
    for name, (image, pod_env) in pods.items():
        images = published[name]["images"]
        assert image == pod_env["JUPYTER_IMAGE_SPEC"] == images["notebook"]["ref"]
        assert pod_env[IMAGE_ENV] == "{JUPYTER_IMAGE_SPEC}"
        # The notebook: dask-gateway's client expands the option from that environment.
        options = _client_options(pod_env, tmp_path)
        assert options == {"image": images["notebook"]["ref"]}
        # The gateway: the option handler picks the worker built from the same lock.
        assert gateway_image(backend, options) == images["worker"]["ref"]


def test_a_second_write_changes_nothing(envroot: Path, tmp_path: Path, values_file: Path) -> None:
    before = values_file.read_bytes(), values_file.stat().st_mtime_ns
    values = generate_helm_values(envroot, tmp_path / "build")
    assert not write_helm_values(values, values_file)
    assert (values_file.read_bytes(), values_file.stat().st_mtime_ns) == before


def test_the_default_profile_can_be_chosen(
    envroot: Path, tmp_path: Path, published: dict[str, dict]
) -> None:
    values = generate_helm_values(envroot, tmp_path / "build", default="pyhep")
    profiles = values["jupyterhub"]["singleuser"]["profileList"]
    assert [p.get("default", False) for p in profiles] == [False, True]
    snippet = values["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    default = published["pyhep"]["images"]["worker"]["ref"]
    assert f'DASKHUB_DEFAULT_WORKER_IMAGE = "{default}"' in snippet

    for name in ("ml", "e2e"):  # not published; published but hidden
        with pytest.raises(BuildToolError, match=f"'{name}' is not published \\(or is hidden\\)"):
            generate_helm_values(envroot, tmp_path / "build", default=name)


def test_without_profile_settings_every_published_pair_is_offered(
    envroot: Path, tmp_path: Path, published: dict[str, dict]
) -> None:
    (envroot / "site.yaml").write_text("version_checks: true\n")
    values = generate_helm_values(envroot, tmp_path / "build")
    profiles = values["jupyterhub"]["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == list(PUBLISHED)
    assert [p.get("default", False) for p in profiles] == [True, False, False]
    (envroot / "site.yaml").write_text("profiles: {hidden: [e2e, physlite, pyhep]}\n")
    with pytest.raises(BuildToolError, match="every published environment is hidden"):
        generate_helm_values(envroot, tmp_path / "build")


def test_nothing_published_is_an_error(envroot: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildToolError, match="no environment is published yet"):
        generate_helm_values(envroot, tmp_path / "build")


def _scheduler_preloads(backend: KubeBackend) -> tuple[tuple[str, ...], dict[str, str]]:
    """The preloads of the scheduler command the gateway's Kubernetes controller builds
    for a cluster, as distributed's `dask-scheduler` command line parses them, and the
    environment of the cluster's pods."""
    config = cluster_config(backend, {})
    command = KubeController.get_scheduler_command(None, "ns", "cluster", config)
    assert command[:2] == ["dask", "scheduler"]  # distributed 2026.6 has no dask-scheduler
    context = dask_scheduler_cli.make_context("dask scheduler", command[2:])
    return tuple(context.params["preload"]), dict(config.environment)


def test_the_gateway_scheduler_loads_the_version_guard(backend: KubeBackend) -> None:
    """The gateway names its own --preload, which replaces the image's configured ones:
    the handler's scheduler command adds the guard, and both reach the scheduler."""
    preloads, environment = _scheduler_preloads(backend)
    assert preloads == (SCHEDULER_PRELOAD, "dask_gateway.scheduler_preload")
    assert GUARD_ENV not in environment and CLIENT_ENV not in environment


def test_one_site_setting_turns_both_version_checks_off(
    envroot: Path, tmp_path: Path, published: dict[str, dict]
) -> None:
    (envroot / "site.yaml").write_text("version_checks: false\n")
    values = generate_helm_values(envroot, tmp_path / "build")
    jsonschema.validate(values, VALUES_SCHEMA)
    preloads, environment = _scheduler_preloads(gateway_backend(values, tmp_path / "gateway"))
    assert preloads == ("dask_gateway.scheduler_preload",)
    assert environment == {GUARD_ENV: "off", CLIENT_ENV: "off"}
    pods = spawn(values["jupyterhub"]["singleuser"]["profileList"], tmp_path)
    for _, pod_env in pods.values():
        assert pod_env[CLIENT_ENV] == "off"


def test_user_images_add_the_hubs_profile_callable_and_change_nothing_else(
    envroot: Path, tmp_path: Path, published: dict[str, dict]
) -> None:
    """The rules themselves are tested against the real servers in test_user_images.py."""
    before = generate_helm_values(envroot, tmp_path / "build")
    site = (envroot / "site.yaml").read_text()
    template = "127.0.0.1:5000/daskhub-users/{username}"
    (envroot / "site.yaml").write_text(site + f"user_images: {template}\n")
    after = generate_helm_values(envroot, tmp_path / "build")
    jsonschema.validate(after, VALUES_SCHEMA)
    assert "hub" not in before["jupyterhub"]
    assert after["jupyterhub"]["singleuser"] == before["jupyterhub"]["singleuser"]
    hub = after["jupyterhub"]["hub"]["extraConfig"]["daskhubUserImages"]
    assert f'DASKHUB_USER_IMAGES = "{template}"' in hub
    assert hub.rstrip().endswith("c.KubeSpawner.profile_list = daskhub_profile_list")
    handler = after["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    old = before["dask-gateway"]["gateway"]["extraConfig"]["optionHandler"]
    assert handler != old and "user_worker_image(DASKHUB_USER_IMAGES" in handler
    # The tables of the site's pairs are the same.
    assert old.split("GIB = 2**30")[0] == handler.split("GIB = 2**30")[0]
    text = dump_helm_values(after)  # both snippets stay readable blocks
    assert "daskhubUserImages: |\n" in text and "optionHandler: |\n" in text

    # A template whose namespaces could hold the site's own images is refused: a user
    # named `daskhub` could publish over them.
    (envroot / "site.yaml").write_text(site + "user_images: 127.0.0.1:5000/{username}\n")
    with pytest.raises(BuildToolError, match="user_images: .* right after the host"):
        generate_helm_values(envroot, tmp_path / "build")
