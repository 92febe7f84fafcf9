"""``python -m compat preflight REF``: this interpreter against a pair's worker set.

The worker set comes from a site's lock (an environment name) or from the SBOM attached
to a published image (an image reference). The lock tests run in this process, against
a copy of environments/e2e and base and against small locks written here from this
interpreter's own versions. The registry tests push a small image and its SBOM to the
suite's registry (127.0.0.1:5000) with buildtool's client and `buildtool.publish.sbom.attach`,
as `buildtool publish` does, and run the checker as a subprocess; the credential rules of
compat's registry client are checked against the real servers of devsupport/servers.py.

This interpreter holds the very versions the e2e lock pins, so the mismatch cases make
this environment differ on purpose: a ``distributed-2000.1.0.dist-info`` put first on
``sys.path`` is what ``importlib.metadata`` (and so distributed) reads, as it would be
for a client that really has that version.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from buildtool.image import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    canonical_json,
    index,
)
from buildtool.lock import LockedPackage, read_lock
from buildtool.publish import Credentials, ImageContents, Registry, attach_sbom, sbom_json
from compat import cli, preflight, rules
from compat import registry as oci
from compat.model import Package, PackageSet
from devsupport.cluster import checker_path
from devsupport.localregistry import RegistryCredentials, registry_credentials
from devsupport.servers import (
    OciServer,
    OciStore,
    RecordingServer,
    Redirector,
    TokenService,
    start,
)

REPO = Path(__file__).resolve().parents[2]
OTHER_DISTRIBUTED = "2000.1.0"
#: What the lock tests compare: distributed's packages and dask-gateway.
COMPARED = sorted(rules.REQUIRED | rules.OPTIONAL | {"dask-gateway"})


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def this_python() -> str:
    info = sys.version_info
    assert info.releaselevel == "final", "these tests spell a final release's version"
    return f"{info.major}.{info.minor}.{info.micro}"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["preflight", *args])
    out, err = capsys.readouterr()
    return code, out, err


def site(tmp_path: Path) -> Path:
    """A site root holding copies of environments/e2e (with its lock) and base."""
    root = tmp_path / "site"
    for name in ("e2e", "base"):
        shutil.copytree(REPO / "environments" / name, root / name)
    return root


def lock_version(path: Path, name: str) -> str:
    (version,) = {
        e["version"]
        for e in yaml.safe_load(path.read_text())["package"]
        if e["name"] == name and e["platform"] == "linux-64" and e["category"] == "main"
    }
    return version


def shadow(tmp_path: Path, name: str, version: str) -> Path:
    """A folder that, first on sys.path, makes ``name`` look installed at ``version``."""
    folder = tmp_path / "shadow"
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def entry(name: str, version: str, category: str = "main") -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "manager": "conda",
        "platform": "linux-64",
        "dependencies": {},
        "category": category,
        "optional": category != "main",
        "url": f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-h0_0.conda",
        "hash": {"md5": "0" * 32, "sha256": "0" * 64},
    }


def matching_versions() -> dict[str, str]:
    """This interpreter's versions of what preflight compares, under conda names; an
    optional package not installed here gets a version of its own (it is not compared)."""
    conda_names = {"dask": "dask-core", "msgpack": "msgpack-python"}
    versions = {"python": this_python()}
    for name in COMPARED:
        version = installed(name)
        if version is None:
            assert name in rules.OPTIONAL, f"{name}: this test needs it installed"
            version = "9.9.9"
        versions[conda_names.get(name, name)] = version
    return versions


def write_lock(root: Path, environment: str, versions: dict[str, str]) -> Path:
    """A small conda-lock v1 lock, written by hand: a worker set of exactly ``versions``,
    a package distributed ignores, and a notebook-only distributed that must not count."""
    packages = [entry(n, v) for n, v in versions.items()]
    packages += [entry("openssl", "3.5.0"), entry("distributed", "1999.1.1", "notebook")]
    document = {
        "version": 1,
        "metadata": {
            "content_hash": {"linux-64": "0" * 64},
            "channels": [],
            "platforms": ["linux-64"],
            "sources": ["env.yaml"],
        },
        "package": packages,
    }
    path = root / environment / "conda-lock.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == cli.EXIT_CANNOT_CHECK, out + err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("daskhub-compat: error: "), err
    return lines[0]


# -- an environment name: the site's lock ------------------------------------------------------
def test_the_e2e_lock_against_a_client_with_another_distributed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = site(tmp_path)
    locked = lock_version(root / "e2e" / "conda-lock.yml", "distributed")
    assert locked != OTHER_DISTRIBUTED
    monkeypatch.syspath_prepend(str(shadow(tmp_path, "distributed", OTHER_DISTRIBUTED)))
    assert metadata.version("distributed") == OTHER_DISTRIBUTED

    code, out, err = run(capsys, "e2e", "--root", str(root))

    assert code == cli.EXIT_MISMATCH, out + err
    assert err == ""
    assert f"e2e workers in {root / 'e2e' / 'conda-lock.yml'} (linux-64)" in out
    (row,) = [
        line for line in out.splitlines() if line.startswith("error") and "distributed" in line
    ]
    assert row.split()[:4] == ["error", "distributed", OTHER_DISTRIBUTED, locked]
    assert "required by distributed" in row
    (fix,) = [line for line in out.splitlines() if line.startswith("fix: ")]
    assert fix.startswith("fix: pip install ")
    assert f"distributed=={locked}" in fix.split() and OTHER_DISTRIBUTED not in fix
    # Only what distributed compares: none of the lock's other packages has a row.
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("error")]
    assert set(rows) <= set(COMPARED) | {"python"}


def test_a_lock_of_this_interpreters_versions_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    write_lock(root, "mine", matching_versions())

    code, out, err = run(capsys, "mine", "--root", str(root))

    assert (code, err) == (cli.EXIT_OK, ""), out + err
    assert "all package versions match" in out
    gateway = installed("dask-gateway")
    assert f"note: dask-gateway: {gateway} here, {gateway} on the workers" in out
    assert "fix:" not in out


def test_the_full_pins_compare_every_distribution_they_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--full`: every pin of `client-requirements-full.txt` (beyond what distributed
    compares) must be here at its version; one that is not is a row, and the fix."""
    build = tmp_path / "build"
    folder = build / "mine" / "client"
    folder.mkdir(parents=True)
    pytest_version, yaml_version = installed("pytest"), installed("pyyaml")
    header = f"# AUTO GENERATED\n# Python: {this_python()} exactly\n# Not pinned:\n#   libzlib\n"
    full = folder / "client-requirements-full.txt"
    full.write_text(header + f"pytest=={pytest_version}\nPyYAML=={yaml_version}\n")
    code, out, err = run(capsys, "mine", "--full", "--build-dir", str(build))
    assert (code, err) == (cli.EXIT_OK, ""), out + err
    assert "all package versions match" in out

    # An awkward that is not the workers' (and one that is not installed at all).
    full.write_text(full.read_text() + "pytest-not-installed==1.0\npyyaml==0.0.1\n")
    code, out, err = run(capsys, "mine", "--full", "--build-dir", str(build))
    assert code == cli.EXIT_MISMATCH, out + err
    rows = [line.split()[:4] for line in out.splitlines() if line.startswith("error")]
    assert ["error", "pyyaml", yaml_version, "0.0.1"] in rows
    assert out.splitlines()[-1] == "fix: pip install pytest-not-installed==1.0 pyyaml==0.0.1"

    # None written yet: one line that says how to write it.
    code, out, err = run(capsys, "other", "--full", "--build-dir", str(build))
    assert "run `buildtool client other --full` first" in one_line_error(code, out, err)


def test_the_default_root_is_environments_if_there_is_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lock(tmp_path / "repo" / "environments", "mine", matching_versions())
    monkeypatch.chdir(tmp_path / "repo")
    assert run(capsys, "mine")[0] == cli.EXIT_OK
    monkeypatch.chdir(tmp_path / "repo" / "environments")
    assert run(capsys, "mine")[0] == cli.EXIT_OK


def test_a_gateway_that_differs_is_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    write_lock(root, "mine", {**matching_versions(), "dask-gateway": "2000.2.0"})

    code, out, _ = run(capsys, "mine", "--root", str(root))

    assert code == cli.EXIT_MISMATCH, out
    (row,) = [line for line in out.splitlines() if line.startswith("error")]
    assert row.split()[:4] == ["error", "dask-gateway", installed("dask-gateway"), "2000.2.0"]
    assert preflight.GATEWAY_REASON in row
    assert "fix: pip install dask-gateway==2000.2.0" in out.splitlines()


def test_a_worker_set_without_the_gateway_says_so_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    versions = matching_versions()
    del versions["dask-gateway"]
    write_lock(root, "mine", versions)

    code, out, _ = run(capsys, "mine", "--root", str(root))

    assert code == cli.EXIT_OK, out
    assert f"note: dask-gateway: {installed('dask-gateway')} here, not in the image" in out


def test_python_and_packages_that_differ_get_the_one_pip_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    versions = {**matching_versions(), "python": "3.10.1", "toolz": "0.1.0", "tornado": "5.0"}
    write_lock(root, "mine", versions)

    code, out, _ = run(capsys, "mine", "--root", str(root))

    assert code == cli.EXIT_MISMATCH, out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("error")}
    assert sorted(rows) == ["python", "toolz", "tornado"]
    assert rows["python"][2:4] == [this_python(), "3.10.1"]
    lines = out.splitlines()
    assert (
        f"Python {this_python()} here, 3.10.1 on the workers: pip cannot change that; "
        "use a Python 3.10.1 environment"
    ) in lines
    assert lines[-1] == "fix: pip install toolz==0.1.0 tornado==5.0"
    assert "3 errors, 0 warnings" in lines


def test_what_distributed_requires_must_be_here_and_its_options_where_both_have_them() -> None:
    client = PackageSet(
        "client",
        "python",
        {
            "python": Package("3.11.7"),
            "dask": Package("2026.8.0"),
            "numpy": Package("2.0.0"),
            "dask-gateway": Package("2026.3.0"),
        },
    )
    workers = PackageSet(
        "w",
        "conda",
        {
            "python": Package("3.11.7", "h_cpython"),
            "dask": Package("2026.8.0", "pyh_0"),
            "tornado": Package("6.6.1", "py311h_0"),
            "numpy": Package("2.4.6", "py311h_0"),
            "lz4": Package("4.4.5", "py311h_0"),
            "dask-gateway": Package("2026.3.0", "pyh_0"),
        },
    )

    result = preflight.check(client, preflight.WorkerSet(workers, "w"), "test")

    assert [(m.package, m.reason) for m in result.errors] == [
        ("numpy", "compared by distributed where installed"),
        ("tornado", "required by distributed"),
    ]
    assert result.fix == ["fix: pip install numpy==2.4.6 tornado==6.6.1"]
    rendered = preflight.render(result)
    assert "lz4" not in rendered  # optional, and not installed here
    assert "note: dask-gateway: 2026.3.0 here, 2026.3.0 on the workers" in rendered


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("e2e", "--root", "{tmp}/nowhere"), "{tmp}/nowhere: no such folder"),
        (("absent", "--root", "{site}"), "{site}/absent: no environment 'absent' under {site}"),
        (("base", "--root", "{site}"), "{site}/base/conda-lock.yml: no lock; run `buildtool lock"),
        (("broken", "--root", "{site}"), "{site}/broken/conda-lock.yml is not valid YAML"),
        (("E2E!", "--root", "{site}"), "'E2E!' is neither an image reference"),
        (("e2e", "--root", "{site}", "--platform", "linux/arm64"), "platform 'linux-aarch64'"),
    ],
)
def test_an_unreadable_site_or_environment_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    root = site(tmp_path)
    (root / "broken").mkdir()
    (root / "broken" / "conda-lock.yml").write_text("version: 1\npackage: [\n  - name: x\n")
    fill = {"tmp": tmp_path, "site": root}

    line = one_line_error(*run(capsys, *(a.format(**fill) for a in args)))

    assert expected.format(**fill) in line


# -- an image reference: the SBOM in the registry -------------------------------------------------
@pytest.fixture(scope="module")
def credentials() -> RegistryCredentials:
    return registry_credentials()


@pytest.fixture(scope="module")
def e2e_packages() -> list[LockedPackage]:
    """The e2e lock's worker packages for linux-64, as `buildtool publish` reads them."""
    return read_lock(REPO / "environments" / "e2e" / "conda-lock.yml").packages(
        "worker", "linux-64"
    )


def versioned(packages: list[LockedPackage], **versions: str | None) -> list[LockedPackage]:
    """The packages with some versions changed (None: left out)."""
    changed = [
        p.model_copy(update={"version": versions[p.name]}) if p.name in versions else p
        for p in packages
        if versions.get(p.name, "") is not None
    ]
    return changed


def layer() -> Blob:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc/preflight")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    return Blob.of(gzip.compress(data.getvalue(), mtime=0), OCI_LAYER_GZIP)


def push_image(
    client: Registry,
    repository: str,
    sets: dict[str, list[LockedPackage]],
    tag: str,
    with_sbom: bool = True,
) -> Blob:
    """A small image (one manifest, or an index over several platforms) with an SBOM per
    platform attached as `buildtool publish` attaches it; tagged ``tag``."""
    _, name = repository.split("/", 1)
    archs = {
        "linux-64": {"architecture": "amd64"},
        "linux-aarch64": {"architecture": "arm64", "variant": "v8"},
    }
    manifests: dict[str, Blob] = {}
    for platform in sets:
        files = layer()
        config = Blob.of(
            canonical_json(
                {
                    **archs[platform],
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [files.digest]},
                }
            ),
            OCI_CONFIG,
        )
        manifests[platform] = Blob.of(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [files.descriptor()],
                }
            ),
            OCI_MANIFEST,
        )
        for blob in (files, config):
            client.push_blob(name, blob)
        client.put_manifest(name, manifests[platform].digest, manifests[platform])
    top = next(iter(manifests.values())) if len(manifests) == 1 else index(manifests)
    client.put_manifest(name, top.digest, top)
    client.put_manifest(name, tag, top)
    for platform, packages in sets.items() if with_sbom else ():
        contents = ImageContents(
            environment="e2e",
            role="worker",
            platform=platform,
            repository=repository,
            digest=top.digest,
            manifest=manifests[platform].digest,
            created=int(time.time()),
            conda=packages,
            pip=[],
            apt={},
        )
        attach_sbom(client, name, manifests[platform], sbom_json(contents), platform)
    return top


@pytest.fixture(scope="module")
def published(
    credentials: RegistryCredentials, e2e_packages: list[LockedPackage]
) -> dict[str, str]:
    """Two images in the suite's registry: one platform, and an index over two whose
    arm64 image has another distributed and no dask-gateway; and one without an SBOM."""
    client = Registry(credentials.registry, Credentials(credentials.user, credentials.password))
    namespace = f"{credentials.registry}/compat-preflight/{uuid.uuid4().hex[:12]}"
    worker = versioned(e2e_packages, distributed=OTHER_DISTRIBUTED)
    single = push_image(client, f"{namespace}/worker", {"linux-64": worker}, "v1")
    arm = versioned(e2e_packages, distributed="2000.3.0", **{"dask-gateway": None})
    multi = push_image(
        client, f"{namespace}/multi", {"linux-64": worker, "linux-aarch64": arm}, "v1"
    )
    push_image(client, f"{namespace}/bare", {"linux-64": worker}, "v1", with_sbom=False)
    return {
        "worker": f"{namespace}/worker@{single.digest}",
        "worker_tag": f"{namespace}/worker:v1",
        "multi": f"{namespace}/multi@{multi.digest}",
        "bare": f"{namespace}/bare:v1",
        "namespace": namespace,
    }


def checker(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m compat preflight ...` in this interpreter, credentials only from ``env``
    (an empty docker config folder, no REGISTRY* of the caller's)."""
    (tmp_path / "docker").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY")}
    base |= {
        "PYTHONPATH": str(checker_path(tmp_path / "checker")),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    return subprocess.run(
        [sys.executable, "-m", "compat", "preflight", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=base | env,
        timeout=120,
        check=False,
    )


def login(credentials: RegistryCredentials) -> dict[str, str]:
    return {"REGISTRY_USER": credentials.user, "REGISTRY_PASSWORD": credentials.password}


def assert_no_secret(credentials: RegistryCredentials, *texts: str) -> None:
    basic = credentials.authorization().split()[1]
    for text in texts:
        assert credentials.password not in text and basic not in text


@pytest.mark.registry
@pytest.mark.parametrize("which", ["worker", "worker_tag"])
def test_a_published_worker_image_against_this_python(
    tmp_path: Path,
    credentials: RegistryCredentials,
    published: dict[str, str],
    e2e_packages: list[LockedPackage],
    which: str,
) -> None:
    locked = {p.name: p.version for p in e2e_packages}
    result = checker(tmp_path, published[which], env=login(credentials))

    assert result.returncode == cli.EXIT_MISMATCH, result.stdout + result.stderr
    assert result.stderr == ""
    assert published[which] in result.stdout.splitlines()[0]
    (row,) = [r for r in result.stdout.splitlines() if r.startswith("error  distributed")]
    assert row.split()[2:4] == [installed("distributed"), OTHER_DISTRIBUTED]
    (fix,) = [r for r in result.stdout.splitlines() if r.startswith("fix: ")]
    assert f"distributed=={OTHER_DISTRIBUTED}" in fix.split()
    gateway = f"note: dask-gateway: {installed('dask-gateway')} here, "
    assert gateway + f"{locked['dask-gateway']} on the workers" in result.stdout
    assert_no_secret(credentials, result.stdout, result.stderr)


@pytest.mark.registry
def test_an_index_is_followed_to_the_platforms_manifest_and_its_sbom(
    tmp_path: Path, credentials: RegistryCredentials, published: dict[str, str]
) -> None:
    arm = checker(tmp_path, published["multi"], "--platform", "linux/arm64", env=login(credentials))
    amd = checker(tmp_path, published["multi"], env=login(credentials))
    other = checker(
        tmp_path, published["worker"], "--platform", "linux-aarch64", env=login(credentials)
    )

    assert arm.returncode == amd.returncode == cli.EXIT_MISMATCH, arm.stderr + amd.stderr
    assert (
        "distributed==2000.3.0" in arm.stdout and "(linux/arm64/v8, manifest sha256:" in arm.stdout
    )
    assert f"note: dask-gateway: {installed('dask-gateway')} here, not in the image" in arm.stdout
    assert f"distributed=={OTHER_DISTRIBUTED}" in amd.stdout and "2000.3.0" not in amd.stdout
    line = one_line_error(other.returncode, other.stdout, other.stderr)
    assert "the image is linux/amd64, not linux/arm64/v8; pass --platform linux/amd64" in line


@pytest.mark.registry
def test_docker_config_auths_are_read_when_the_variables_are_not_set(
    tmp_path: Path, credentials: RegistryCredentials, published: dict[str, str]
) -> None:
    (tmp_path / "docker").mkdir()
    auth = base64.b64encode(f"{credentials.user}:{credentials.password}".encode()).decode()
    config = {"auths": {credentials.registry: {"auth": auth}}}
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))

    result = checker(tmp_path, published["worker"], env={})

    assert result.returncode == cli.EXIT_MISMATCH, result.stderr


@pytest.mark.registry
@pytest.mark.parametrize(
    ("reference", "login_as", "expected"),
    [
        ("{namespace}/worker@sha256:" + "0" * 64, "user", "@sha256:" + "0" * 64 + ": not found"),
        ("{namespace}/absent:v1", "user", "/absent:v1: not found"),
        ("{bare}", "user", "/bare:v1: no SBOM attached (nothing under the referrers tag sha256-"),
        ("{worker}", None, "the registry wants credentials; set REGISTRY_USER"),
        ("{worker}", "wrong", "credentials refused"),
        ("{worker}", "elsewhere", "the registry wants credentials"),
        ("127.0.0.1:1/nothing/here:v1", "user", "127.0.0.1:1: cannot reach the registry"),
        ("{namespace}/Worker:v1", "user", "is not an image reference"),
    ],
)
def test_an_unreadable_reference_exits_2_in_one_line(
    tmp_path: Path,
    credentials: RegistryCredentials,
    published: dict[str, str],
    reference: str,
    login_as: str | None,
    expected: str,
) -> None:
    env = {
        None: {},
        "user": login(credentials),
        "wrong": {**login(credentials), "REGISTRY_PASSWORD": "not-the-password"},
        # Variables meant for another registry are not sent to this one.
        "elsewhere": {**login(credentials), "REGISTRY": "registry.example.com/ns"},
    }[login_as]
    result = checker(tmp_path, reference.format(**published), env=env)

    line = one_line_error(result.returncode, result.stdout, result.stderr)
    assert expected.format(**published) in line
    assert_no_secret(credentials, result.stdout, result.stderr)


def test_compat_imports_nothing_of_buildtool(tmp_path: Path) -> None:
    code = (
        "import sys, compat.cli, compat.preflight, compat.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('buildtool', 'pydantic', 'rattler', 'cyclonedx')))"
    )
    env = {**os.environ, "PYTHONPATH": str(checker_path(tmp_path / "checker"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- compat's registry client: references and where credentials go --------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/ns/worker:v1", ("127.0.0.1:5000", "ns/worker", "v1", None)),
        ("localhost/w@sha256:" + "a" * 64, ("localhost", "w", None, "sha256:" + "a" * 64)),
        ("ghcr.io/org/w:1.0@sha256:" + "b" * 64, ("ghcr.io", "org/w", "1.0", "sha256:" + "b" * 64)),
        ("pangeo/worker", ("docker.io", "pangeo/worker", None, None)),
    ],
)
def test_references_are_read_as_docker_reads_them(
    text: str, expected: tuple[str, str, str | None, str | None]
) -> None:
    found = oci.parse_reference(text)
    assert (found.host, found.name, found.tag, found.digest) == expected


@pytest.mark.parametrize(
    "text", ["host.io/Upper", "host.io/a/../b", "host.io/a:b:c", "host.io/a@sha256:abc", "a\n/b"]
)
def test_other_references_are_refused(text: str) -> None:
    with pytest.raises(oci.RegistryError, match="is not an image reference"):
        oci.parse_reference(text)


USER, PASSWORD = "reader", "s3cret-preflight-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "tok-compat-registry-only"
BEARER = f"Bearer {TOKEN}"
NAME = "team/worker"


def stored(store: OciStore) -> tuple[str, bytes]:
    """A blob and a manifest tagged v1 naming it, in ``store``; (manifest digest, blob)."""
    data = b"blob bytes"
    digest = Blob.of(data, "application/octet-stream").digest
    store.blobs[digest] = data
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "layers": [],
            "config": {"digest": digest, "size": len(data)},
        }
    ).encode()
    store.manifests[(NAME, "v1")] = (OCI_MANIFEST, manifest)
    return digest, data


def client(registry: RecordingServer, credentials: oci.Credentials | None) -> oci.Client:
    assert registry.address.startswith("127.0.0.1:")
    return oci.Client(registry.address, credentials, timeout=10)


def test_a_loopback_realm_gets_basic_and_the_registry_only_the_token(
    servers: list[RecordingServer],
) -> None:
    realm = start(servers, TokenService("127.0.0.2", TOKEN, basic=BASIC))
    registry = start(
        servers,
        OciServer(
            authorization=BEARER, challenge=f'Bearer realm="{realm.url}/token",service="fake"'
        ),
    )
    assert isinstance(registry, OciServer)
    digest, data = stored(registry.store)
    reader = client(registry, oci.Credentials(USER, PASSWORD))

    manifest = reader.manifest(NAME, "v1")
    assert manifest is not None and manifest.document["config"]["digest"] == digest
    assert reader.blob(NAME, {"digest": digest, "size": len(data)}) == data
    assert realm.authorizations() == [BASIC]
    assert "scope=repository%3Ateam%2Fworker%3Apull" in realm.received[0].path
    assert registry.authorizations() == [None, BEARER, BEARER]
    assert PASSWORD not in repr(reader)


def test_without_credentials_the_realm_is_asked_for_an_anonymous_token(
    servers: list[RecordingServer],
) -> None:
    realm = start(servers, TokenService("127.0.0.2", TOKEN, basic=None))
    registry = start(
        servers, OciServer(authorization=BEARER, challenge=f'Bearer realm="{realm.url}/token"')
    )
    assert isinstance(registry, OciServer)
    stored(registry.store)

    assert client(registry, None).manifest(NAME, "v1") is not None
    assert realm.authorizations() == [None]


def test_a_plain_http_realm_elsewhere_is_refused_before_anything_is_sent(
    servers: list[RecordingServer],
) -> None:
    registry = start(
        servers,
        OciServer(authorization=BEARER, challenge='Bearer realm="http://auth.example.com/token"'),
    )
    with pytest.raises(oci.RegistryError) as refused:
        client(registry, oci.Credentials(USER, PASSWORD)).manifest(NAME, "v1")
    assert "refusing the token realm http://auth.example.com:80" in str(refused.value)
    assert registry.authorizations() == [None]


def test_a_redirect_to_another_host_carries_no_credentials(
    servers: list[RecordingServer],
) -> None:
    """127.0.0.1 (the registry) -307-> 127.0.0.2 -307-> 127.0.0.3 (storage), for every GET."""
    store = OciStore()
    digest, data = stored(store)
    storage = start(servers, OciServer("127.0.0.3", store=store))
    hop = start(servers, Redirector("127.0.0.2", storage.url))
    registry = start(
        servers,
        OciServer(
            store=store,
            authorization=BASIC,
            redirect_to=hop.url,
            redirect_methods=frozenset({"GET"}),
        ),
    )
    reader = client(registry, oci.Credentials(USER, PASSWORD))

    assert reader.manifest(NAME, "v1") is not None
    assert reader.blob(NAME, {"digest": digest, "size": len(data)}) == data
    assert len(storage.received) == 2
    assert hop.authorizations() == storage.authorizations() == [None, None]
    assert registry.authorizations() == [None, BASIC, BASIC]


class Bouncer(RecordingServer):
    """A registry whose manifests are elsewhere: with the credentials, a GET gets a 307 to
    `elsewhere`, which sends it back here under /back/, served to anyone."""

    elsewhere = ""

    def answer(self, method, path, authorization, body):  # type: ignore[no-untyped-def]
        if path.startswith("/back/"):
            return 200, {"Content-Type": OCI_MANIFEST}, b'{"schemaVersion": 2}'
        if authorization != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 307, {"Location": self.elsewhere + path}, b""


def test_a_chain_that_leaves_and_comes_back_stays_without_credentials(
    servers: list[RecordingServer],
) -> None:
    """127.0.0.1:A -307-> 127.0.0.2 -307-> 127.0.0.1:A again: whoever sent the request
    back chose its path, so the credentials do not come back with it."""
    registry = start(servers, Bouncer("127.0.0.1"))
    assert isinstance(registry, Bouncer)
    away = start(servers, Redirector("127.0.0.2", registry.url + "/back"))
    registry.elsewhere = away.url

    manifest = client(registry, oci.Credentials(USER, PASSWORD)).manifest(NAME, "v1")

    assert manifest is not None and manifest.document == {"schemaVersion": 2}
    assert [(r.path.split("/")[1], r.authorization) for r in registry.received] == [
        ("v2", None),
        ("v2", BASIC),
        ("back", None),
    ]
    assert away.authorizations() == [None]


def test_content_that_is_not_what_was_asked_for_is_refused(servers: list[RecordingServer]) -> None:
    registry = start(servers, OciServer())
    assert isinstance(registry, OciServer)
    digest, data = stored(registry.store)
    registry.store.blobs[digest] = b"blob BYTES"  # as long, other bytes
    manifest = registry.store.manifests[(NAME, "v1")]
    registry.store.manifests[(NAME, "sha256:" + "1" * 64)] = manifest
    reader = client(registry, None)

    with pytest.raises(oci.RegistryError, match="came back with other content"):
        reader.blob(NAME, {"digest": digest, "size": len(data)})
    with pytest.raises(oci.RegistryError, match="has another digest"):
        reader.manifest(NAME, "sha256:" + "1" * 64)
