"""`buildtool client`: the pins of a client matching a pair, made from the committed locks.

Pure: the committed physlite and e2e locks (and variations of them made in memory), the
real CLI in a subprocess, and `buildtool catalog` on a scratch copy of `environments/`. The
registry side (the artifact on both published images) is in tests/test_e2e.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from rattler import MatchSpec

from buildtool.common import SpecError
from buildtool.lock import (
    ENVIRONMENT_FILE,
    GENERATED_MARK,
    REQUIREMENTS_FILE,
    LockFile,
    PipHash,
    PipLockedPackage,
    client_files,
    client_pins,
    full_pins,
    full_requirements_text,
    read_lock,
)
from buildtool.site import write_catalog
from compat.names import from_conda
from compat.rules import OPTIONAL, REQUIRED
from devsupport.buildtool_cli import buildtool

REPO = Path(__file__).resolve().parents[2]
LOCKS = {name: REPO / "environments" / name / "conda-lock.yml" for name in ("physlite", "e2e")}
# What distributed compares (compat/rules.py) and dask-gateway, under their PyPI names.
EXPECTED_NAMES = sorted(REQUIRED | OPTIONAL | {"dask-gateway"})


def _lock(name: str) -> LockFile:
    return read_lock(LOCKS[name])


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in text.splitlines() if line and not line.startswith("#")]


def _worker_versions(lock: LockFile, platform: str = "linux-64") -> dict[str, str]:
    """PyPI name -> version of every conda package of the worker set."""
    return {from_conda(p.name): p.version for p in lock.packages("worker", platform)}


@pytest.mark.parametrize("name", ["physlite", "e2e"])
def test_pins_are_the_worker_sets_versions_under_pypi_names(name: str) -> None:
    lock = _lock(name)
    files = client_files(name, lock, LOCKS[name])
    requirements = _requirements(files[REQUIREMENTS_FILE])
    worker = _worker_versions(lock)

    # Every line parses as a requirement, and each is one exact pin.
    assert [r.name for r in requirements] == EXPECTED_NAMES
    for requirement in requirements:
        (specifier,) = requirement.specifier
        assert specifier.operator == "=="
        assert not requirement.extras and requirement.marker is None
        assert worker[requirement.name] == specifier.version  # the worker set has it
    pins = {r.name: str(r.specifier) for r in requirements}
    assert pins["msgpack"] == f"=={worker['msgpack']}"  # msgpack-python in the lock
    assert "msgpack-python" not in pins
    assert pins["dask-gateway"] == "==2026.3.0"


def test_physlite_pins_exactly() -> None:
    text = client_files("physlite", _lock("physlite"), LOCKS["physlite"])[REQUIREMENTS_FILE]
    pins = [line for line in text.splitlines() if not line.startswith("#")]
    assert pins == [
        "cloudpickle==3.1.3",
        "dask==2025.3.1",
        "dask-gateway==2026.3.0",
        "distributed==2025.3.1",
        "lz4==4.4.5",
        "msgpack==1.2.4",
        "numpy==2.4.6",
        "pandas==3.1.1",
        "toolz==1.2.0",
        "tornado==6.6.1",
    ]
    assert text.startswith(GENERATED_MARK + " physlite`")
    assert "# Python: 3.11.7 exactly" in text
    assert f"lock content sha256 {_lock('physlite').content_sha()}" in text


@pytest.mark.parametrize("name", ["physlite", "e2e"])
def test_environment_file_is_a_conda_environment_with_the_same_pins(name: str) -> None:
    lock = _lock(name)
    files = client_files(name, lock, LOCKS[name])
    text = files[ENVIRONMENT_FILE]
    assert text.startswith(GENERATED_MARK)
    document = yaml.safe_load(text)
    assert set(document) == {"name", "channels", "dependencies"}
    assert document["name"] == f"{name}-client"
    assert document["channels"] == ["conda-forge", "nodefaults"]
    assert all(isinstance(d, str) for d in document["dependencies"])
    assert document["dependencies"][0] == "python=3.11.7"
    worker = {p.name: p.version for p in lock.packages("worker", "linux-64")}
    assert worker["python"] == "3.11.7"
    specs = [MatchSpec(d) for d in document["dependencies"]]
    conda = {}
    for spec, line in zip(specs, document["dependencies"], strict=True):
        name_, _, version = line.partition("=")
        assert spec.name.normalized == name_
        assert worker[name_] == version  # conda's names, the worker set's versions
        conda[from_conda(name_)] = version
    assert "msgpack-python" in {s.name.normalized for s in specs}
    pip = {r.name: str(r.specifier)[2:] for r in _requirements(files[REQUIREMENTS_FILE])}
    assert conda == {"python": "3.11.7", **pip}


def test_the_same_lock_gives_the_same_bytes() -> None:
    first = client_files("e2e", _lock("e2e"), LOCKS["e2e"])
    assert client_files("e2e", _lock("e2e"), LOCKS["e2e"]) == first


def _without(lock: LockFile, name: str) -> LockFile:
    return lock.model_copy(update={"package": [p for p in lock.package if p.name != name]})


def _recategorize(lock: LockFile, name: str, category: str) -> LockFile:
    package = [
        p.model_copy(update={"category": category, "optional": category != "main"})
        if p.name == name
        else p
        for p in lock.package
    ]
    return lock.model_copy(update={"package": package})


def test_dask_gateway_from_the_notebook_set_or_left_out_with_a_comment() -> None:
    lock = _lock("physlite")
    notebook_only = _recategorize(lock, "dask-gateway", "notebook")
    text = client_files("physlite", notebook_only, LOCKS["physlite"])[REQUIREMENTS_FILE]
    assert "dask-gateway==2026.3.0" in text.splitlines()
    assert "dask-gateway is the notebook image's" in text

    files = client_files("physlite", _without(lock, "dask-gateway"), LOCKS["physlite"])
    assert "dask-gateway" not in [r.name for r in _requirements(files[REQUIREMENTS_FILE])]
    for text in files.values():
        assert "# dask-gateway is not in this lock, so it is not pinned here" in text
    assert not any(
        d.startswith("dask-gateway")
        for d in yaml.safe_load(files[ENVIRONMENT_FILE])["dependencies"]
    )


def test_only_what_the_worker_set_has() -> None:
    """An optional package the workers lack is not pinned, even if the notebook has it."""
    lock = _recategorize(_lock("physlite"), "lz4", "notebook")
    text = client_files("physlite", lock, LOCKS["physlite"])[REQUIREMENTS_FILE]
    assert "lz4" not in [r.name for r in _requirements(text)]


def test_conda_forges_dask_metapackage_gives_one_pin_and_dask_core_in_the_yml() -> None:
    lock = _lock("physlite")
    dask = next(p for p in lock.package if p.name == "dask")
    core = dask.model_copy(
        update={
            "name": "dask-core",
            "url": dask.url.replace("/dask-2025.3.1-", "/dask-core-2025.3.1-"),
        }
    )
    lock = lock.model_copy(update={"package": [*lock.package, core]})
    files = client_files("physlite", lock, LOCKS["physlite"])
    assert [r.name for r in _requirements(files[REQUIREMENTS_FILE])].count("dask") == 1
    dependencies = yaml.safe_load(files[ENVIRONMENT_FILE])["dependencies"]
    assert "dask-core=2025.3.1" in dependencies and "dask=2025.3.1" not in dependencies

    other = core.model_copy(
        update={"version": "2025.2.0", "url": core.url.replace("2025.3.1", "2025.2.0")}
    )
    clash = lock.model_copy(update={"package": [*_lock("physlite").package, other]})
    with pytest.raises(
        SpecError, match=r"dask \(linux-64\): 2025\.3\.1 and dask-core 2025\.2\.0 both install dask"
    ):
        client_pins("physlite", clash, LOCKS["physlite"])


def test_a_worker_pip_pin_wins_over_the_conda_package() -> None:
    lock = _lock("physlite")
    wheel = PipLockedPackage(
        name="toolz",
        version="1.0.0",
        platform="linux-64",
        url="https://files.pythonhosted.org/packages/aa/bb/toolz-1.0.0-py3-none-any.whl",
        hash=PipHash(sha256="0" * 64),
        category="main",
        optional=False,
    )
    files = client_files("physlite", lock.model_copy(update={"pip": [wheel]}), LOCKS["physlite"])
    assert "toolz==1.0.0" in files[REQUIREMENTS_FILE].splitlines()
    dependencies = yaml.safe_load(files[ENVIRONMENT_FILE])["dependencies"]
    assert not any(d.startswith("toolz=") for d in dependencies if isinstance(d, str))
    assert {"pip": ["toolz==1.0.0"]} in dependencies and "pip" in dependencies


def _two_platforms(lock: LockFile, changes: dict[str, str]) -> LockFile:
    """The lock with an aarch64 copy of every record, `changes` (name -> version) there."""
    arm = [
        p.model_copy(
            update={"platform": "linux-aarch64", "version": changes.get(p.name, p.version)}
        )
        for p in lock.package
    ]
    metadata = lock.metadata.model_copy(update={"platforms": ["linux-64", "linux-aarch64"]})
    return lock.model_copy(update={"package": [*lock.package, *arm], "metadata": metadata})


def test_several_platforms_give_one_client_or_one_clear_line() -> None:
    lock = _lock("physlite")
    same = client_files("physlite", _two_platforms(lock, {}), LOCKS["physlite"])
    assert "# Workers: linux-64, linux-aarch64;" in same[REQUIREMENTS_FILE]
    single = client_files("physlite", lock, LOCKS["physlite"])
    assert _requirements(same[REQUIREMENTS_FILE]) == _requirements(single[REQUIREMENTS_FILE])

    cases = [
        ({"distributed": "2025.2.0"}, "distributed is 2025.3.1 on linux-64 but 2025.2.0 on"),
        ({"python": "3.11.8"}, "python is 3.11.7 on linux-64 but 3.11.8 on linux-aarch64"),
    ]
    for changes, shown in cases:
        with pytest.raises(SpecError) as caught:
            client_pins("physlite", _two_platforms(lock, changes), LOCKS["physlite"])
        assert shown in str(caught.value)
        assert str(caught.value).startswith(f"{LOCKS['physlite']}: package:")
        assert caught.value.exit_code == 2


def test_a_version_pip_cannot_read_is_one_line() -> None:
    lock = _lock("physlite")
    package = [
        p.model_copy(update={"version": "6.6.1_custom"}) if p.name == "tornado" else p
        for p in lock.package
    ]
    with pytest.raises(SpecError, match=r"package tornado \(linux-64\): version '6\.6\.1_custom'"):
        client_pins("physlite", lock.model_copy(update={"package": package}), LOCKS["physlite"])


def test_cli_writes_both_files_under_build(tmp_path: Path) -> None:
    build = tmp_path / "build"
    result = buildtool(
        "--root",
        REPO / "environments",
        "--build-dir",
        build,
        "client",
        "physlite",
        "e2e",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for name in ("physlite", "e2e"):
        expected = client_files(name, _lock(name), LOCKS[name])
        for filename, text in expected.items():
            path = build / name / "client" / filename
            assert path.read_text() == text
            assert f"wrote {path}" in result.stdout

    missing = buildtool(
        "--root", REPO / "environments", "--build-dir", build, "client", "no-such-env", cwd=tmp_path
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "no-such-env" in missing.stderr


def test_catalog_links_the_published_pairs_client(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root)
    build, catalog = tmp_path / "build", tmp_path / "catalog"
    (build / "physlite").mkdir(parents=True)
    shutil.copyfile(LOCKS["physlite"], build / "physlite" / "published-lock.yml")
    digest = "sha256:" + "ab" * 32
    image = {
        "repository": "127.0.0.1:5000/d/x",
        "digest": digest,
        "tags": ["c-1"],
        "ref": f"127.0.0.1:5000/d/x@{digest}",
    }
    (build / "physlite" / "published.json").write_text(
        json.dumps(
            {
                "environment": "physlite",
                "registry": "127.0.0.1:5000/d",
                "content_tag": "c-1",
                "date_tag": "20261201",
                "lock_sha256": "0" * 64,
                "images": {"worker": image, "notebook": image},
                "bytes_pushed": 1,
                "published_at": "2026-12-01T00:00:00Z",
            }
        )
    )

    write_catalog(root, build, catalog)

    expected = client_files("physlite", _lock("physlite"), LOCKS["physlite"])
    for filename, text in expected.items():
        assert (catalog / "clients" / "physlite" / filename).read_text() == text
    page = (catalog / "images.md").read_text()
    assert "[client pins](clients/physlite/client-requirements.txt)" in page
    assert "([conda](clients/physlite/client-environment.yml))" in page
    assert "clients/e2e" not in page and not (catalog / "clients" / "e2e").exists()  # unpublished
    assert write_catalog(root, build, catalog) == []  # a second run changes nothing

    shutil.rmtree(build / "physlite")  # no longer published: its client files go
    changed = write_catalog(root, build, catalog)
    assert {catalog / "clients" / "physlite" / f for f in expected} <= set(changed)
    assert not list((catalog / "clients").rglob("*.*"))


def test_the_full_pins_name_every_worker_distribution_by_its_own_metadata() -> None:
    """What each package installs (here stated; in a build read from its own metadata,
    `buildtool.image.distributions`) names the pins: conda's name never does."""
    lock = read_lock(LOCKS["physlite"])
    worker = {p.name: p for p in lock.packages("worker", "linux-64")}
    installs = {
        name: [(from_conda(name), package.version)]
        for name, package in worker.items()
        if name not in ("python", "h5py", "uproot")
    }
    installs["uproot"] = [("Uproot", "9.9.9")]  # the metadata's spelling and version win
    text = full_requirements_text(full_pins("physlite", lock, LOCKS["physlite"], installs))
    pins = [Requirement(line) for line in text.splitlines() if line and not line.startswith("#")]
    names = {pin.name.lower(): str(pin.specifier) for pin in pins}
    assert names["uproot"] == "==9.9.9"
    assert names["msgpack"] == f"=={worker['msgpack-python'].version}"  # not msgpack-python
    assert "python" not in names
    assert "h5py" not in names and "h5py" in text.split("# Not pinned:")[1]
    assert text.startswith(GENERATED_MARK)
    # What distributed compares is pinned alike in both files.
    compared = client_files("physlite", lock, LOCKS["physlite"])[REQUIREMENTS_FILE]
    for line in compared.splitlines():
        if line and not line.startswith("#"):
            assert line in text.splitlines(), line
