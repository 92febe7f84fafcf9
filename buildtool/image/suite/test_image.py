"""What every published pair must satisfy; run by `buildtool test ENV`."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid

import pytest
import testinfra

from buildtool.image.engine import docker_cli
from buildtool.image.suite.conftest import docker, inspect
from buildtool.image.testing import Subject
from buildtool.lock import LockFile
from compat.vocabulary import (
    CREATED_LABEL,
    DESCRIPTION_LABEL,
    ENVIRONMENT_LABEL,
    LOCK_LABEL,
    PREFIX,
    REVISION_LABEL,
    ROLE_LABEL,
    ROLES,
    WORKER_LABEL,
)

Hosts = dict[str, testinfra.host.Host]


@pytest.mark.parametrize("role", ROLES)
def test_every_locked_package_is_installed_as_locked(
    role: str, platform: str, lock: LockFile, installed: dict[str, dict[str, dict]]
) -> None:
    expected = {p.name: (p.version, p.build) for p in lock.packages(role, platform)}
    actual = {name: (r["version"], r["build"]) for name, r in installed[role].items()}
    assert actual == expected


def test_worker_set_is_inside_the_notebook_set(installed: dict[str, dict[str, dict]]) -> None:
    for name, record in installed["worker"].items():
        theirs = installed["notebook"].get(name)
        assert theirs is not None, f"{name} is in the worker image but not the notebook image"
        assert (theirs["version"], theirs["build"]) == (record["version"], record["build"])


@pytest.mark.parametrize("role", ROLES)
def test_spec_imports(role: str, subject: Subject, containers: Hosts) -> None:
    modules = subject.imports[role]
    assert modules, "the spec names no imports to test"
    code = "; ".join(f"import {m}" for m in modules)
    containers[role].check_output(f"{PREFIX}/bin/python -c '{code}'")


@pytest.mark.parametrize("role", ROLES)
def test_runs_as_jovyan_under_an_init(role: str, refs: dict[str, str], containers: Hosts) -> None:
    host = containers[role]
    assert host.check_output("id -u") == "1000"
    assert host.check_output("id -g") == "100"
    assert host.check_output("id -un") == "jovyan"
    assert host.check_output("echo $HOME") == "/home/jovyan"
    assert "tini" in host.file("/proc/1/cmdline").content_string
    assert host.check_output("command -v python") == f"{PREFIX}/bin/python"
    config = inspect(refs[role])["Config"]
    assert config["User"] in ("1000:100", "jovyan")


@pytest.mark.parametrize("role", ROLES)
def test_labels(role: str, subject: Subject, refs: dict[str, str]) -> None:
    labels = inspect(refs[role])["Config"]["Labels"]
    assert labels[ENVIRONMENT_LABEL] == subject.environment
    assert labels[ROLE_LABEL] == role
    assert labels[LOCK_LABEL] == subject.lock_sha256
    assert labels[DESCRIPTION_LABEL]
    # Nothing that moves from build to build: the same lock gives the same config.
    assert not {CREATED_LABEL, REVISION_LABEL} & set(labels)
    if role == "notebook":
        assert labels[WORKER_LABEL] == subject.worker_ref


@pytest.mark.parametrize("role", ROLES)
def test_layers_within_limits(role: str, refs: dict[str, str]) -> None:
    """At most 64 layers, base included, and no two alike (GKE image streaming refuses
    images with repeated layers)."""
    layers = inspect(refs[role])["RootFS"]["Layers"]
    assert len(layers) <= 64
    assert len(set(layers)) == len(layers)


def test_notebook_is_the_worker_plus_layers(refs: dict[str, str]) -> None:
    worker = inspect(refs["worker"])["RootFS"]["Layers"]
    notebook = inspect(refs["notebook"])["RootFS"]["Layers"]
    assert notebook[: len(worker)] == worker and len(notebook) > len(worker)


def test_notebook_knows_its_worker(subject: Subject, containers: Hosts) -> None:
    env = containers["notebook"].environment()
    assert env["DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"] == subject.worker_ref


def test_jupyter_only_where_the_spec_puts_it(
    subject: Subject,
    containers: Hosts,
    installed: dict[str, dict[str, dict]],
) -> None:
    notebook = containers["notebook"]
    notebook.check_output("jupyter lab --version")
    if "jupyterhub-singleuser" in installed["notebook"]:
        notebook.check_output("jupyterhub-singleuser --version")
    if not subject.worker_asks_jupyter:
        assert "jupyterlab" not in installed["worker"]
        assert not containers["worker"].exists("jupyter")


def test_worker_image_runs_dask(containers: Hosts) -> None:
    worker = containers["worker"]
    worker.check_output("dask scheduler --help")
    worker.check_output("dask worker --help")


VERSION_CHECKS = textwrap.dedent(
    """
    import json, dask, compat.clientcheck, compat.plugin
    keys = ("distributed.scheduler.preload", "distributed.client.preload",
            "compat.guard", "compat.client")
    print(json.dumps([dask.config.get(key) for key in keys]))
    """
)


@pytest.mark.parametrize("role", ROLES)
def test_version_checks_are_on(role: str, containers: Hosts) -> None:
    """Both images carry the guard and the client check, turned on by their dask config
    (buildtool/image/versionchecks.py)."""
    said = json.loads(containers[role].check_output(f"python -c '{VERSION_CHECKS}'"))
    assert said == [["compat.plugin"], ["compat.clientcheck"], "refuse", "error"]


PAIR_CLIENT = textwrap.dedent(
    """
    import importlib, json, sys, warnings
    from distributed import Client
    warnings.simplefilter("error")  # a VersionMismatchWarning fails the check
    with Client(sys.argv[1], timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        assert client.submit(lambda x: x + 1, 41).result() == 42
        versions = client.get_versions(check=True)
        client_packages = versions["client"]["packages"]
        for side in [versions["scheduler"], *versions["workers"].values()]:
            assert side["packages"] == client_packages, (side["packages"], client_packages)
        modules = json.loads(sys.argv[2])
        imported = client.run(lambda: [importlib.import_module(m).__name__ for m in modules])
        assert all(found == modules for found in imported.values()), imported
    print("pair ok")
    """
)


def test_real_pair_scheduler_worker_and_client(refs: dict[str, str], subject: Subject) -> None:
    """Scheduler and worker from the worker image, client from the notebook image, in the
    build's sandbox: the worker and the client join the scheduler's loopback, the only
    network any of them has; the worker spec's imports are imported on the workers,
    through the client."""
    name = f"pairtest-{uuid.uuid4().hex[:8]}"
    address = "tcp://127.0.0.1:8786"
    started = []
    try:
        scheduler = docker(
            "run",
            "-d",
            *subject.run_args,
            "--network",
            "none",
            "--name",
            f"{name}-scheduler",
            refs["worker"],
            "dask",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "8786",
            "--dashboard-address",
            ":0",
        ).stdout.strip()
        started.append(scheduler)
        joined = [*subject.run_args, "--network", f"container:{scheduler}"]
        started.append(
            docker(
                "run",
                "-d",
                *joined,
                "--name",
                f"{name}-worker",
                refs["worker"],
                "dask",
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-dashboard",
            ).stdout.strip()
        )
        result = subprocess.run(
            [
                docker_cli(),
                "run",
                "--rm",
                *joined,
                refs["notebook"],
                "python",
                "-c",
                PAIR_CLIENT,
                address,
                json.dumps(subject.imports["worker"]),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pair ok" in result.stdout
        # The scheduler ran the version guard of the image's dask config.
        log = docker("logs", started[0], check=False)
        assert "Run preload setup: compat.plugin" in log.stdout + log.stderr
    finally:
        for cid in started:
            docker("rm", "-f", cid, check=False)
