"""Static sources, the comparison rules, the gate and the report formats.

These need neither Dask nor Docker; the lockfiles are in tests/compat/data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compat import gate, rules, sources
from compat.compare import compare_cluster
from compat.live import ClusterSnapshot
from compat.model import CheckError, Package, PackageRecord, PackageSet
from compat.names import from_conda, normalize
from devsupport.lockdata import DRIFTED, MATCHED, write_prefix

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_ONLY = ["dask-labextension", "ipykernel", "jupyterlab"]


def checker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compat", *args], capture_output=True, text=True, cwd=REPO
    )


def lock(path: Path, image: str, platform: str = "linux-64") -> PackageSet:
    return sources.from_lockfile(sources.LockSelection(path, image, platform))


def test_names_are_normalised_and_conda_names_mapped() -> None:
    assert normalize("ruamel.yaml") == normalize("Ruamel_Yaml") == "ruamel-yaml"
    assert from_conda("msgpack-python") == "msgpack"
    assert from_conda("dask-core") == "dask"
    assert from_conda("lz4-c") == "lz4-c"


def test_worker_image_is_the_main_category() -> None:
    worker = lock(MATCHED, "worker")

    assert worker.label == "worker" and worker.kind == "conda"
    assert worker.python == "3.11.7"
    assert worker.packages["python"] == Package("3.11.7", "hab00c5b_1_cpython")
    assert worker.packages["msgpack"] == Package("1.2.4", "py311hd18a35c_0")
    assert worker.packages["dask"] == Package("2026.8.0", "pyhd8ed1ab_0")
    assert worker.packages["lz4-c"] == Package("1.10.0", "h5888daf_1")
    assert "msgpack-python" not in worker.packages and "dask-core" not in worker.packages
    assert not set(NOTEBOOK_ONLY) & set(worker.packages)


def test_notebook_image_adds_the_notebook_category() -> None:
    notebook, worker = lock(MATCHED, "notebook"), lock(MATCHED, "worker")

    assert sorted(set(notebook.packages) - set(worker.packages)) == NOTEBOOK_ONLY
    assert notebook.packages["jupyterlab"] == Package("4.4.0", "pyhd8ed1ab_0")
    assert notebook.packages["dask-labextension"] == Package("7.0.0", None)  # a pip package


def test_platform_is_selectable() -> None:
    osx = lock(MATCHED, "worker", "osx-arm64")

    assert osx.packages == {
        "python": Package("3.11.7", "hdf0ec26_1_cpython"),
        "toolz": Package("1.2.0", "pyhd8ed1ab_0"),
    }


def test_lock_spec_parsing() -> None:
    assert sources.parse_lock_spec("a/b.yml#worker") == sources.LockSelection(
        Path("a/b.yml"), "worker", "linux-64"
    )
    assert sources.parse_lock_spec("b.yml#notebook@osx-arm64").platform == "osx-arm64"
    with pytest.raises(CheckError, match="PATH#notebook"):
        sources.parse_lock_spec("b.yml")


@pytest.mark.parametrize(
    ("package", "versions", "error"),
    [
        ("python", ["3.11.7", "3.11.8"], True),
        ("toolz", ["1.2.0", "0.12.1"], True),
        ("toolz", ["1.2.0", None], True),
        ("lz4", ["4.4.5", "4.4.4"], True),
        ("lz4", ["4.4.5", None], False),
        ("numpy", [None, "2.4.6", "2.4.6"], False),
        ("jupyterlab", ["4.4.0", None], False),
        ("dask", ["2026.8.0", "2026.8.0"], False),
    ],
)
def test_error_rules(package: str, versions: list[str | None], error: bool) -> None:
    assert rules.is_error(package, versions) is error


def test_gate_refuses_a_pair_with_an_error_mismatch() -> None:
    notebook, worker = lock(MATCHED, "notebook"), lock(DRIFTED, "worker")

    with pytest.raises(gate.IncompatibleImagesError) as raised:
        gate.assert_compatible(notebook, worker)

    report = raised.value.report
    assert [m.package for m in report.errors] == ["lz4", "pandas", "python", "toolz"]
    assert {m.package: m.reason for m in report.warnings} == {
        **{name: "missing on some sides" for name in NOTEBOOK_ONLY},
        "numpy": "missing on some sides",
        "openssl": "versions differ",
        "tornado": "same version, other build",
    }
    assert all(m.differs == ("worker",) for m in report.mismatches)
    assert "python (notebook 3.11.7, worker 3.11.8)" in str(raised.value)
    assert "toolz (notebook 1.2.0, worker 0.12.1)" in str(raised.value)


def test_gate_accepts_a_matched_pair() -> None:
    report = gate.assert_compatible(lock(MATCHED, "notebook"), lock(MATCHED, "worker"))

    assert report.errors == []
    assert [m.package for m in report.warnings] == NOTEBOOK_ONLY


def test_gate_lockfile_accepts_one_solve() -> None:
    assert gate.gate_lockfile(MATCHED).errors == []


def test_gate_lockfile_refuses_a_required_package_only_in_the_notebook(tmp_path: Path) -> None:
    data = yaml.safe_load(MATCHED.read_text())
    for entry in data["package"]:
        if entry["name"] == "distributed":
            entry["category"], entry["optional"] = "notebook", True
    lockfile = tmp_path / "conda-lock.yml"
    lockfile.write_text(yaml.safe_dump(data))

    with pytest.raises(gate.IncompatibleImagesError, match=r"distributed \(notebook 2026.8.0, "):
        gate.gate_lockfile(lockfile)


def test_live_comparison_rules_without_a_cluster() -> None:
    """The scheduler's numpy is not compared by distributed; an odd client is named alone."""

    def side(label: str, **versions: str) -> PackageSet:
        packages = {"python": Package("3.11.7")} | {
            name: Package(v) for name, v in versions.items()
        }
        return PackageSet(label, "python", packages)

    snapshot = ClusterSnapshot(
        target="tcp://127.0.0.1:8786",
        client=side("client", dask="2026.8.0", numpy="2.4.6"),
        scheduler=side("scheduler", dask="2026.7.1", numpy="2.3.0"),
        workers={
            "tcp://127.0.0.1:1": side("w1", dask="2026.7.1", numpy="2.4.6"),
            "tcp://127.0.0.1:2": side("w2", dask="2026.7.1", numpy="2.4.6"),
        },
    )

    report = compare_cluster(snapshot)

    dask, numpy = report.mismatches
    assert (dask.package, dask.level, dask.differs) == ("dask", "error", ("client",))
    assert (numpy.package, numpy.level, numpy.differs) == ("numpy", "warning", ("scheduler",))


def test_diff_cli_exit_codes_and_table() -> None:
    matched = checker("diff", f"lock:{MATCHED}#notebook", f"lock:{MATCHED}#worker")
    drifted = checker("diff", f"lock:{MATCHED}#notebook", f"lock:{DRIFTED}#worker")

    assert matched.returncode == 0, matched.stderr
    assert matched.stdout.splitlines() == [
        "Package versions: notebook vs worker",
        "only in notebook (3): dask-labextension 7.0.0, ipykernel 6.29.5, jupyterlab 4.4.0",
        "0 errors, 0 warnings, 3 packages only in notebook (not compared)",
    ]
    assert drifted.returncode == 1, drifted.stderr
    header = drifted.stdout.splitlines()[1].split()
    assert header == ["Level", "Package", "notebook", "worker", "Differs", "Why"]
    assert drifted.stdout.splitlines()[-1] == (
        "4 errors, 3 warnings, 3 packages only in notebook (not compared)"
    )


def test_markdown_shape() -> None:
    result = checker(
        "diff", f"lock:{MATCHED}#notebook", f"lock:{DRIFTED}#worker", "--format", "markdown"
    )

    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "### Package versions: notebook vs worker",
        "",
        "**4 errors, 3 warnings, 3 packages only in notebook (not compared)**",
    ]
    assert lines[4] == "| Level | Package | notebook | worker | Differs | Why |"
    assert lines[5] == "|---|---|---|---|---|---|"
    assert "| error | `toolz` | 1.2.0 | 0.12.1 | worker | required by distributed |" in lines
    assert "| warning | `numpy` | 2.4.6 | None | worker | missing on some sides |" in lines
    assert len(lines) == 6 + 7 + 2  # title, summary, table, then one line for the rest:
    assert lines[-1] == (
        "- only in notebook (3): dask-labextension 7.0.0, ipykernel 6.29.5, jupyterlab 4.4.0"
    )


def test_json_shape_and_output_file(tmp_path: Path) -> None:
    output = tmp_path / "report.json"
    result = checker(
        "diff",
        f"lock:{MATCHED}#notebook",
        f"lock:{DRIFTED}#worker",
        "--format",
        "json",
        "--output",
        str(output),
    )

    assert result.returncode == 1
    assert result.stdout == "4 errors, 3 warnings, 3 packages only in notebook (not compared)\n"
    report = json.loads(output.read_text())
    assert set(report) == {
        "subject",
        "ok",
        "errors",
        "warnings",
        "columns",
        "workers_checked",
        "workers_left",
        "workers_unanswered",
        "notes",
        "mismatches",
    }
    assert (report["ok"], report["errors"], report["warnings"]) == (False, 4, 6)
    assert report["columns"] == ["notebook", "worker"] and report["workers_checked"] is None
    assert report["mismatches"][0] == {
        "package": "lz4",
        "level": "error",
        "reason": "compared by distributed where installed",
        "differs": ["worker"],
        "columns": {
            "notebook": [{"version": "4.4.5", "count": 1, "members": ["notebook"]}],
            "worker": [{"version": "4.4.4", "count": 1, "members": ["worker"]}],
        },
    }


def test_same_labels_are_replaced_by_the_source_names() -> None:
    result = checker("diff", f"lock:{MATCHED}#worker", f"lock:{DRIFTED}#worker", "--format", "json")

    assert json.loads(result.stdout)["columns"] == [
        f"lock:{MATCHED}#worker",
        f"lock:{DRIFTED}#worker",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read lockfile {path}: No such file or directory"),
        ("version: 1\npackage: [unclosed", "lockfile {path} is not valid YAML"),
        ("version: 2\npackage: []\n", "lockfile {path} is not in conda-lock v1 format"),
        ("version: 1\nmetadata: {}\n", "lockfile {path} has no 'package' list"),
    ],
)
def test_bad_lockfile_exits_2_and_names_the_file(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "conda-lock.yml"
    if content is not None:
        path.write_text(content)

    result = checker("diff", f"lock:{path}#notebook", f"lock:{MATCHED}#worker")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("daskhub-compat: error: " + message.format(path=path))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (f"lock:{MATCHED}#scheduler", "unknown image 'scheduler'"),
        (f"lock:{MATCHED}#worker@win-64", "has no packages for platform 'win-64'"),
        ("nonsense", "unknown source 'nonsense'"),
    ],
)
def test_bad_source_exits_2(source: str, message: str) -> None:
    result = checker("diff", source, "env")

    assert result.returncode == 2
    assert message in result.stderr


def test_conda_prefix_source_matches_its_lockfile(tmp_path: Path) -> None:
    """conda-meta records plus the one pip package, as installing the lockfile leaves them."""
    prefix = write_prefix(MATCHED, tmp_path / "prefix", "notebook")

    result = checker("diff", f"lock:{MATCHED}#notebook", f"prefix:{prefix}", "--format", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mismatches"] == []
    assert sources.from_prefix(prefix).packages["dask-labextension"] == Package("7.0.0", None)


def test_pip_records_from_dist_info_folder_names() -> None:
    records = sources.pip_records(["dask_labextension-7.0.0.dist-info", "junk"])

    assert records == [PackageRecord("dask_labextension", "7.0.0", None)]


def test_compat_works_without_distributed_or_the_build_tool_dependencies() -> None:
    """What a notebook user installs: the static check must not need Dask, Docker or rattler."""
    blocked = ["distributed", "dask", "dask_gateway", "docker", "rattler", "conda_lock"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # makes `import name` fail\n"
        "from compat.cli import main\n"
        "import compat.gate, compat.sources, compat.report\n"
        f"code = main(['diff', 'lock:{MATCHED}#notebook', 'lock:{MATCHED}#worker'])\n"
        "assert code == 0, code\n"
        "sys.exit(main(['live', 'tcp://127.0.0.1:8786']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO
    )

    assert result.returncode == 2, result.stderr
    assert "the live check needs the 'distributed' package" in result.stderr
