"""The deploy files, checked with the tools a cluster uses, without a cluster:

- the Helm values against both subcharts' own values schemas, merged with their defaults
  as Helm merges them (z2jh 4.4.0 and dask-gateway 2026.3.0, `../shared/charts`);
- every manifest `helm-values` writes beside them, and the pods the charts' consumers
  make, against Kubernetes' own OpenAPI schemas (`kubernetes-validate`), for 1.28 (the
  oldest z2jh 4.4.0 supports) and the newest it knows;
- ml-gpu's notebook pod as the real KubeSpawner makes it, and its Dask worker pod as the
  real dask-gateway KubeBackend's controller makes it: on GPU nodes, with the GPU.

Each validator is also shown failing on a file made wrong on purpose.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from buildtool.cli import build_parser, main
from buildtool.site import KUBERNETES_DIR, SERVICE_NAME
from devsupport import REPO
from devsupport.chart import gateway_backend, hub_spawn, worker_pod
from devsupport.chartschema import validate_values
from devsupport.published import write_published

VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
GPU_NODES = {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SITE = f"""
registry: 127.0.0.1:5000/daskhub
profiles: {{default: physlite, hidden: [e2e]}}
image_pull_secret: daskhub-registry
user_images: 127.0.0.1:5000/daskhub-users/{{username}}
self_service: {{image: "registry.example.org/daskhub-builder:2026.12", state_gb: 50}}
placement:
  default:
    workers: {{node_selector: {{pool: dask-workers}}}}
  ml-gpu:
    notebook: {{node_selector: {GPU_NODES}, tolerations: [{GPU_TAINT}], gpus: 1}}
    workers: {{node_selector: {GPU_NODES}, tolerations: [{GPU_TAINT}], gpus: 1}}
"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The seed site with e2e, physlite and ml-gpu published, and site.yaml above;
    `helm-values` run on it."""
    work = tmp_path_factory.mktemp("deploy")
    root = work / "environments"
    shutil.copytree(REPO / "environments", root)
    (root / "site.yaml").write_text(SITE)
    build = work / "build"
    records = {name: write_published(build, name) for name in ("e2e", "physlite", "ml-gpu")}
    # One dask-gateway serves every pair (helm-values checks it): the records say that
    # e2e and physlite were published from a lock with ml-gpu's conda-forge gateway.
    for name in ("e2e", "physlite"):
        shutil.copy(root / "ml-gpu" / "conda-lock.yml", build / name / "published-lock.yml")
    output = work / "deploy" / "daskhub-values.yaml"
    code = main(
        [
            "--root",
            str(root),
            "--build-dir",
            str(work / "build"),
            "helm-values",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    manifests = {
        path.name: list(yaml.safe_load_all(path.read_text()))
        for path in sorted((work / "deploy" / KUBERNETES_DIR).glob("*.yaml"))
    }
    return {
        "values": yaml.safe_load(output.read_text()),
        "manifests": manifests,
        "records": records,
        "work": work,
    }


def test_the_values_validate_against_both_subcharts_schemas(deployed: dict) -> None:
    validate_values(deployed["values"])
    wrong = copy.deepcopy(deployed["values"])
    wrong["jupyterhub"]["singleuser"]["image"]["pullSecrets"] = "daskhub-registry"  # not a list
    with pytest.raises(jsonschema.ValidationError):
        validate_values(wrong)
    wrong = copy.deepcopy(deployed["values"])
    wrong["dask-gateway"]["gateway"]["backend"]["imagePullSecrets"] = [{"nme": "x"}]
    with pytest.raises(jsonschema.ValidationError):
        validate_values(wrong)


def _validate(manifest: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_every_manifest_validates_against_kubernetes_schemas(deployed: dict) -> None:
    builder = deployed["manifests"]["builder.yaml"]
    assert [m["kind"] for m in builder] == [
        "ServiceAccount",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
    ]
    prepullers = deployed["manifests"]["prepuller.yaml"]
    assert {m["kind"] for m in prepullers} == {"DaemonSet"}
    for manifest in [*builder, *prepullers]:
        _validate(manifest)
    wrong = copy.deepcopy(builder[2])
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong)
    wrong = copy.deepcopy(prepullers[0])
    wrong["spec"]["template"]["spec"]["initContainers"][0]["imagePulPolicy"] = "Always"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong)


def test_the_builder_is_reached_by_the_hub_alone_with_its_token_from_a_secret(
    deployed: dict,
) -> None:
    account, claim, deployment, service, policy = deployed["manifests"]["builder.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.org/daskhub-builder:2026.12"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    token = next(e for e in container["env"] if e["name"] == "JUPYTERHUB_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.daskhub-builder.apiToken",
    }
    # The command is one the real CLI parses: it binds where its Service sends, and keeps
    # its state on its volume.
    assert container["args"][0] == "buildtool"
    parsed = build_parser().parse_args(container["args"][1:])
    assert (parsed.command, parsed.address, parsed.port) == ("serve", "0.0.0.0", 8000)
    assert parsed.image_tests == "auto"  # a pod has no Docker engine: pairs go untested
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(parsed.state)] == "state"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The hub reaches it at the URL the values name, and nothing but the hub and proxy may.
    services = deployed["values"]["jupyterhub"]["hub"]["services"]
    assert services[SERVICE_NAME]["url"] == f"http://{service['metadata']['name']}:8000"
    sources = [rule["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"][0]["from"]]
    assert sources == [
        {"app": "jupyterhub", "component": "hub"},
        {"app": "jupyterhub", "component": "proxy"},
    ]


def test_each_worker_pool_pre_pulls_its_worker_images(deployed: dict) -> None:
    records = deployed["records"]
    pulled = {}
    for daemonset in deployed["manifests"]["prepuller.yaml"]:
        pod = daemonset["spec"]["template"]["spec"]
        images = [c["image"] for c in pod["initContainers"]]
        pulled[tuple(sorted(pod.get("nodeSelector", {}).items()))] = images
        assert pod["imagePullSecrets"] == [{"name": "daskhub-registry"}]
    assert pulled == {
        tuple(GPU_NODES.items()): [records["ml-gpu"]["images"]["worker"]["ref"]],
        (("pool", "dask-workers"),): [records["physlite"]["images"]["worker"]["ref"]],
    }


def test_ml_gpu_notebook_and_workers_land_on_gpu_nodes_with_a_gpu(
    deployed: dict, tmp_path: Path
) -> None:
    values, records = deployed["values"], deployed["records"]
    (pod,) = hub_spawn(values["jupyterhub"], [(None, {"profile": "ml-gpu"})], tmp_path)
    assert "error" not in pod, pod
    notebook = pod["pod"]
    assert notebook["spec"]["nodeSelector"] == GPU_NODES
    assert GPU_TAINT in notebook["spec"]["tolerations"]
    (container,) = [c for c in notebook["spec"]["containers"] if c["name"] == "notebook"]
    assert container["image"] == records["ml-gpu"]["images"]["notebook"]["ref"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"

    backend = gateway_backend(values, tmp_path / "gateway")
    notebook_ref = records["ml-gpu"]["images"]["notebook"]["ref"]
    worker = worker_pod(backend, {"image": notebook_ref})
    assert worker["spec"]["nodeSelector"] == GPU_NODES
    assert worker["spec"]["tolerations"] == [GPU_TAINT]
    (dask,) = worker["spec"]["containers"]
    assert dask["image"] == records["ml-gpu"]["images"]["worker"]["ref"]
    assert dask["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert dask["resources"]["limits"]["memory"]  # the gateway's own limits are kept
    # physlite's workers go to the default pool, with no GPU.
    other = worker_pod(backend, {"image": records["physlite"]["images"]["notebook"]["ref"]})
    assert other["spec"]["nodeSelector"] == {"pool": "dask-workers"}
    assert "nvidia.com/gpu" not in other["spec"]["containers"][0]["resources"]["limits"]
    for made in (notebook, worker, other):
        _validate(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                **{k: v for k, v in made.items() if k in ("metadata", "spec")},
            }
        )
