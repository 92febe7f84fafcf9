"""The offline end-to-end run, on real parts: the conda-forge stand-in served over HTTP,
debootstrap base images, the Docker engine, the local registry with htpasswd auth.

One environment pair from `environments/e2e` is locked, built, tested (including the pair
test: scheduler, worker and client, no mismatch), published, pulled back by digest, and
published again as a no-op. Nothing here skips: a missing engine or registry fails.

The channel credentials (in rattler's authentication file, as users are told to keep
them) and the registry's are canaries: the last test looks for them, raw and in base64,
in every file the run wrote, every command's output and every blob it published.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from buildtool.common import cache_root
from buildtool.lock import REQUIREMENTS_FILE, read_lock
from buildtool.publish import Credentials, Registry, fetch_sboms, split_reference
from buildtool.site import generate_helm_values
from compat.vocabulary import ROLES
from devsupport import clients
from devsupport import cluster as dask_cluster
from devsupport.buildtool_cli import buildtool
from devsupport.canary import Canary, Scanner, repositories_under, write_rattler_auth_file
from devsupport.chart import cluster_config, gateway_backend
from devsupport.dockercli import docker, remove_local_tags, require_docker
from devsupport.localregistry import RegistryCredentials, docker_login, registry_credentials
from devsupport.servers import free_port
from devsupport.standin import StandIn


@pytest.fixture(scope="module")
def credentials() -> RegistryCredentials:
    require_docker()
    return registry_credentials()


@pytest.fixture(scope="module")
def offline(
    credentials: RegistryCredentials, standin: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """The locked e2e spec and the flags that point the pipeline at local parts.

    Every buildtool command of this module runs with `env` (the registry credentials, and
    RATTLER_AUTH_FILE naming channel credentials kept outside `work`) and is recorded in
    `runs` with its output."""
    started = time.time()
    channel = standin.channel
    channel_canary = Canary("channel password", "ci", f"channel-{secrets.token_hex(16)}")
    auth_file = tmp_path_factory.mktemp("channel-auth") / "rattler-auth.json"
    host = urllib.parse.urlsplit(channel).hostname
    assert host is not None
    write_rattler_auth_file(auth_file, host, channel_canary)
    work = tmp_path_factory.mktemp("e2e")
    root = work / "environments"
    root.mkdir()
    for name in ("base", "e2e"):
        (root / name).mkdir()
        (root / name / "env.yaml").write_text(
            (Path(__file__).parents[1] / "environments" / name / "env.yaml").read_text()
        )
    env = {
        **os.environ,
        "RATTLER_AUTH_FILE": str(auth_file),
        "REGISTRY_USER": credentials.user,
        "REGISTRY_PASSWORD": credentials.password,
    }
    locked = buildtool("--root", root, "lock", "e2e", "--channel", channel, cwd=work, env=env)
    assert locked.returncode == 0, locked.stderr
    registry = f"{credentials.registry}/t{uuid.uuid4().hex[:10]}"
    yield {
        "work": work,
        "root": root,
        "registry": registry,
        "images": ["--base-image", standin.base_image],
        "env": env,
        "runs": [("lock", locked)],
        "started": started,
        "canaries": [
            channel_canary,
            Canary("registry password", credentials.user, credentials.password),
        ],
    }
    remove_local_tags(registry + "/")


def _publish(offline: dict, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        "python",
        "-m",
        "buildtool.cli",
        "--root",
        str(offline["root"]),
        "publish",
        "e2e",
        "--registry",
        offline["registry"],
        *offline["images"],
    ]
    result = subprocess.run(
        command, cwd=offline["work"], env=env or offline["env"], capture_output=True, text=True
    )
    offline["runs"].append(("publish", result))
    return result


def _buildtool(offline: dict, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """A buildtool command in the work folder, with the module's environment, recorded."""
    result = buildtool(*args, cwd=offline["work"], env=offline["env"])
    offline["runs"].append((str(args[2]), result))
    return result


def _tags(offline: dict, credentials: RegistryCredentials) -> dict[str, str | None]:
    """What the content tags point at in the registry (None: not there)."""
    registry = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    meta = json.loads((offline["work"] / "build" / "e2e" / "render.json").read_text())
    digests = {}
    for role in ROLES:
        _, name = split_reference(meta[role]["repository"])
        digests[role] = registry.manifest_digest(name, meta[role]["tag"])
    return digests


def test_wrong_password_is_refused_without_showing_it(
    offline: dict, credentials: RegistryCredentials
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    result = _publish(offline, {**offline["env"], "REGISTRY_PASSWORD": wrong})
    assert result.returncode == 1
    assert "credentials refused" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert credentials.password not in result.stdout + result.stderr


def test_failing_image_tests_publish_nothing(
    offline: dict, credentials: RegistryCredentials
) -> None:
    spec = offline["root"] / "e2e" / "env.yaml"
    original = spec.read_text()
    spec.write_text(original + "imports: [no_such_module_anywhere]\n")
    try:
        result = _publish(offline)
    finally:
        spec.write_text(original)
    assert result.returncode == 1
    assert "image tests failed" in result.stderr
    assert _tags(offline, credentials) == {"worker": None, "notebook": None}


def test_publish_pull_back_and_noop(
    offline: dict, credentials: RegistryCredentials, tmp_path: Path
) -> None:
    first = _publish(offline)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    build = offline["work"] / "build" / "e2e"
    published = json.loads((build / "published.json").read_text())
    images = published["images"]
    assert images["worker"]["digest"] != images["notebook"]["digest"]
    assert _tags(offline, credentials) == {r: images[r]["digest"] for r in ROLES}
    assert published["bytes_pushed"] > 0
    # Where the publish's time went: each part, and the whole at least their sum.
    timings = published["timings"]
    assert set(timings) == {"build", "image_tests", "push", "total"}
    assert timings["total"] >= timings["build"] + timings["image_tests"] + timings["push"] > 0
    assert "compat-report.md" in {p.name for p in build.iterdir()}
    # The production path: every package fetched over HTTP, nothing from the host's disk.
    lock = (offline["root"] / "e2e" / "conda-lock.yml").read_text()
    assert "url: http://127.0.0.1:" in lock and "/conda-forge/" in lock
    for path in build.rglob("*"):
        if path.is_file():
            assert "file://" not in path.read_text(errors="replace"), path

    # Pull back by digest through a separate docker login, and run real Dask from it.
    config = tmp_path / "docker-config"
    docker_login(credentials, config)
    login_env = {**os.environ, "DOCKER_CONFIG": str(config)}
    for role in ROLES:
        ref = images[role]["ref"]
        docker("pull", ref, env=login_env)
        out = docker("run", "--rm", ref, "python", "-c", "import distributed; print('ok')")
        assert out.stdout.decode().strip() == "ok"
        # No secret in the layers' history, the labels or the environment.
        for view in (docker("history", "--no-trunc", ref), docker("image", "inspect", ref)):
            assert credentials.password not in view.stdout.decode()

    second = _publish(offline)
    assert second.returncode == 0, second.stderr
    assert "already published: nothing built, nothing pushed" in second.stderr  # logged
    assert "bytes pushed: 0" in second.stdout  # the answer
    assert "building" not in second.stdout + second.stderr
    assert json.loads((build / "published.json").read_text()) == published


def test_each_published_image_has_its_sbom_in_the_registry(
    offline: dict, credentials: RegistryCredentials
) -> None:
    """Fetched as a client finds it (the referrers tag schema), valid CycloneDX
    by the library's own validator, listing exactly the lock's packages of that image."""
    registry = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    published = json.loads((offline["work"] / "build" / "e2e" / "published.json").read_text())
    lock = read_lock(offline["root"] / "e2e" / "conda-lock.yml")
    for role in ROLES:
        image = published["images"][role]
        _, name = split_reference(image["repository"])
        (subject,) = image["platforms"].values()
        (document,) = fetch_sboms(registry, name, subject)
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
        bom = json.loads(document)
        assert bom["metadata"]["component"]["version"] == image["digest"]
        purls = [PackageURL.from_string(c["purl"]) for c in bom["components"]]
        conda = {(p.name, p.version, p.qualifiers["build"]) for p in purls if p.type == "conda"}
        assert conda == {(p.name, p.version, p.build) for p in lock.packages(role, "linux-64")}
        hashes = {
            c["name"]: c["hashes"][0]["content"]
            for c in bom["components"]
            if c["purl"].startswith("pkg:conda/")
        }
        assert hashes == {p.name: p.hash.sha256 for p in lock.packages(role, "linux-64")}
        debs = {p.name for p in purls if p.type == "deb"}
        assert {"tini", "ca-certificates", "libc6"} <= debs
        assert ("procps" in debs) == (role == "notebook")  # the notebook's own apt
        pypi = {(p.name, p.version) for p in purls if p.type == "pypi"}
        assert pypi == ({("tomli-w", "1.2.0")} if role == "notebook" else set())
    # `buildtool catalog` keeps the same documents under catalog/sbom/
    result = _buildtool(offline, "--root", offline["root"], "catalog")
    assert result.returncode == 0, result.stderr
    kept = sorted((offline["work"] / "catalog" / "sbom" / "e2e").glob("*.cdx.json"))
    assert [p.name for p in kept] == ["notebook-linux-64.cdx.json", "worker-linux-64.cdx.json"]


def test_verify_rebuilds_the_published_digests(offline: dict) -> None:
    """`buildtool verify`: from the lock, on clean caches and without BuildKit's cache,
    the same manifests as the ones published (test_publish_pull_back_and_noop)."""
    command = ("--root", offline["root"], "verify", "e2e", *offline["images"])
    result = _buildtool(offline, *command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    published = json.loads((offline["work"] / "build" / "e2e" / "published.json").read_text())
    for role in ROLES:
        digest = published["images"][role]["digest"]
        assert f"e2e {role}: identical: rebuilt {digest}, published {digest}" in result.stdout
    # Another base image is another image: verify says so instead of comparing.
    other = _buildtool(
        offline, "--root", offline["root"], "verify", "e2e", "--base-image", "debian:12"
    )
    assert other.returncode == 1
    assert "verify the lock that was published" in other.stderr


def test_an_archive_that_does_not_match_the_lock_fails_the_build(offline: dict) -> None:
    """rattler checks every fetched archive against the lock's sha256."""
    lock = offline["root"] / "e2e" / "conda-lock.yml"
    original = lock.read_text()
    start = original.index("sha256: ", original.index("name: toolz"))
    real = original[start + 8 : start + 72]
    lock.write_text(original[: start + 8] + "a" * 64 + original[start + 72 :])
    try:
        result = _buildtool(
            offline,
            "--root",
            offline["root"],
            "build",
            "e2e",
            "--registry",
            offline["registry"],
            *offline["images"],
        )
    finally:
        lock.write_text(original)
    assert result.returncode == 1
    assert "hash mismatch" in result.stderr and "toolz" in result.stderr
    assert f"got {real}" in result.stderr


def test_no_credential_reaches_a_file_a_log_or_a_blob(
    offline: dict, credentials: RegistryCredentials
) -> None:
    """After everything above (lock, publish, no-op re-publish, catalog, verify, a failed
    build), neither canary is anywhere, raw or in base64: not in a file of the work folder
    (specs, locks, build/, catalog/, deploy/), not in any command's output, not in a blob of
    the published repositories (manifests, configs, decompressed layers, SBOMs), not in a
    file the caches (ours and rattler's) got since the run started."""
    started = time.monotonic()
    scanner = Scanner(offline["canaries"])
    published = json.loads((offline["work"] / "build" / "e2e" / "published.json").read_text())
    publishes = [result for label, result in offline["runs"] if label == "publish"]
    assert any(p.returncode == 0 for p in publishes), "needs test_publish_pull_back_and_noop"

    work_files = scanner.scan_tree(offline["work"])
    times = {"work": time.monotonic() - started}
    for number, (label, result) in enumerate(offline["runs"]):
        scanner.scan_text(f"output of command {number} ({label}), stdout", result.stdout)
        scanner.scan_text(f"output of command {number} ({label}), stderr", result.stderr)

    registry = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    _, namespace = split_reference(offline["registry"])
    repositories = repositories_under(registry, namespace)
    assert {
        split_reference(image["repository"])[1] for image in published["images"].values()
    } <= set(repositories)
    blobs = sum(scanner.scan_repository(registry, name) for name in repositories)
    times["registry"] = time.monotonic() - started - sum(times.values())

    since = offline["started"] - 2  # file times have a coarser clock than time.time()
    caches = [f for f in (cache_root(), Path.home() / ".cache" / "rattler") if f.is_dir()]
    cached = sum(
        scanner.scan_tree(folder, changed_since=since, max_size=50 * 1024 * 1024)
        for folder in caches
    )

    times["caches"] = time.monotonic() - started - sum(times.values())
    print(
        f"canary scan: {work_files} work files, {len(offline['runs'])} commands' output, "
        f"{blobs} blobs in {len(repositories)} repositories, {cached} cache files; "
        f"{scanner.bytes / 1e6:.0f} MB in {sum(times.values()):.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in times.items())})"
    )
    assert blobs > 0 and work_files > 0
    assert not scanner.findings, "a credential was found:\n" + "\n".join(scanner.findings)


def test_both_published_images_carry_the_client_pins(
    offline: dict, credentials: RegistryCredentials
) -> None:
    """After test_publish_pull_back_and_noop: the client artifact is attached to both images
    by the digest users pull, and holds what `buildtool client e2e` writes."""
    from buildtool.lock import ENVIRONMENT_FILE, REQUIREMENTS_FILE
    from buildtool.publish import fetch_client_files

    published = json.loads((offline["work"] / "build" / "e2e" / "published.json").read_text())
    result = _buildtool(offline, "--root", offline["root"], "client", "e2e")
    assert result.returncode == 0, result.stderr
    written = offline["work"] / "build" / "e2e" / "client"
    requirements = (written / REQUIREMENTS_FILE).read_text()
    assert "distributed==" in requirements and "dask-gateway==" in requirements
    registry = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    for role in ROLES:
        image = published["images"][role]
        _, name = split_reference(image["repository"])
        files = fetch_client_files(registry, name, image["digest"])
        assert files[REQUIREMENTS_FILE] == requirements, role
        assert files[ENVIRONMENT_FILE] == (written / ENVIRONMENT_FILE).read_text(), role


def test_version_checks_of_the_published_pair(
    offline: dict, credentials: RegistryCredentials, tmp_path: Path
) -> None:
    """After test_publish_pull_back_and_noop (the pair is pulled). The scheduler starts from
    the worker image with the command the generated gateway option handler gives (the
    guard preloaded), two workers from the same image join it. A laptop venv made by pip
    from the published client-requirements.txt (PyPI) computes on it; a worker from
    another environment (toolz 0.12.1) is closed by the guard, which names it; a client
    with that toolz and the images' client check fails at Client(...) with the fix."""

    images = json.loads((offline["work"] / "build" / "e2e" / "published.json").read_text())
    worker_image = images["images"]["worker"]["ref"]
    values = generate_helm_values(offline["root"], offline["work"] / "build")
    backend = gateway_backend(values, tmp_path / "gateway")
    config = cluster_config(backend, {"image": images["images"]["notebook"]["ref"]})
    assert config.image == worker_image  # the gateway's own mapping picks this pair
    scheduler_cmd = list(config.scheduler_cmd)
    assert scheduler_cmd == ["dask", "scheduler", "--preload", "compat.plugin"]
    assert list(config.worker_cmd) == ["dask", "worker"]

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    started = []
    try:
        started.append(
            docker(
                "run",
                "-d",
                "--network",
                "host",
                worker_image,
                *scheduler_cmd,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                ":0",
            )
            .stdout.decode()
            .strip()
        )
        for _ in range(2):
            started.append(
                docker(
                    "run",
                    "-d",
                    "--network",
                    "host",
                    worker_image,
                    "dask",
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                )
                .stdout.decode()
                .strip()
            )

        requirements = offline["work"] / "build" / "e2e" / "client" / REQUIREMENTS_FILE
        clients.run_laptop(clients.laptop(requirements.read_text()), address, tmp_path)

        odd_venv = dask_cluster.ensure_venv(dask_cluster.ODD_WORKER_REQUIREMENTS)
        odd_worker = clients.refused_worker(odd_venv, address, tmp_path)
        log = docker("logs", started[0])
        said = log.stdout.decode() + log.stderr.decode()
        assert "Run preload setup: compat.plugin" in said
        assert (
            f"worker {odd_worker} has package versions that differ from the scheduler's: "
            f"toolz {dask_cluster.ODD_TOOLZ_VERSION} (scheduler 1.2.0); closing it"
        ) in said

        client = clients.checked_client(odd_venv, address, tmp_path)
        assert client.returncode == 1
        assert client.stderr.splitlines()[-1].startswith(
            "compat.clientcheck.ClientVersionError: this Dask client's versions differ from "
            f"the cluster's: toolz {dask_cluster.ODD_TOOLZ_VERSION} here, 1.2.0 on the cluster. "
            "Fix: pip install toolz==1.2.0."
        ), client.stderr
    finally:
        for cid in started:
            docker("rm", "-f", cid, check=False)
