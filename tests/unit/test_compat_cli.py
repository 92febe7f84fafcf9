"""`daskhub-compat`'s own behaviour, in-process (`compat.cli.main`) and, where the
installation matters, in a subprocess, without Docker, a registry or a cluster: what it
takes and the exit codes it gives. The checks themselves are tests/compat's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from compat import cli
from devsupport import REPO
from devsupport.cluster import checker_path
from devsupport.lockdata import MATCHED


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder with environments/e2e and its lock."""
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments" / "e2e", root / "e2e")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`main(argv)` refused as argparse refuses a flag: exit status 2, nothing on stdout,
    the command's usage line, then one line that says why. That line is returned."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    assert exited.value.code == cli.EXIT_CANNOT_CHECK and out == "", out + err
    usage, _, why = err.rpartition("\n" + cli.PROG)
    assert usage.startswith(f"usage: {cli.PROG}") and why.count("\n") == 1, err
    return cli.PROG + why.rstrip("\n")


# -- the platforms: either spelling ----------------------------------------------------------
@pytest.mark.parametrize("spelling", ["linux-64", "linux/amd64"])
def test_preflight_takes_either_spelling_of_a_platform(
    site: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    """Before, `--platform linux-64` was refused: preflight took OCI names alone."""
    code, out, err = run(capsys, "preflight", "e2e", "--root", str(site), "--platform", spelling)
    assert code in (cli.EXIT_OK, cli.EXIT_MISMATCH) and err == "", err
    assert f"e2e workers in {site / 'e2e' / 'conda-lock.yml'} (linux-64)" in out.splitlines()[0]


@pytest.mark.parametrize("wrong", ["amd64", "linux/s390x", "linux-32"])
def test_a_wrong_platform_names_both_spellings_of_the_valid_ones(
    site: Path, capsys: pytest.CaptureFixture[str], wrong: str
) -> None:
    line = usage_error(capsys, "preflight", "e2e", "--root", str(site), "--platform", wrong)
    expected = "is not a platform: use linux-64 (linux/amd64), linux-aarch64 (linux/arm64/v8)"
    assert f"argument --platform: {wrong!r} {expected}" in line


def test_a_lock_source_takes_either_spelling_and_conda_subdirs_beyond_the_pairs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lock:PATH#IMAGE@PLATFORM`: a pair's platform either way; a laptop's lock keeps
    conda's names (`osx-arm64`)."""
    reports = {}
    for platform in ("linux-64", "linux/amd64", "osx-arm64"):
        sources = [f"lock:{MATCHED}#{image}@{platform}" for image in ("notebook", "worker")]
        code, out, err = run(capsys, "diff", *sources, "--format", "json")
        assert code == cli.EXIT_OK, err
        reports[platform] = json.loads(out)["mismatches"]
    assert reports["linux/amd64"] == reports["linux-64"] != reports["osx-arm64"]
    code, _, err = run(capsys, "diff", f"lock:{MATCHED}#worker@linux/arm64", "env")
    assert code == cli.EXIT_CANNOT_CHECK
    assert "has no packages for platform 'linux-aarch64' (it has: linux-64, osx-arm64)" in err


# -- --version ----------------------------------------------------------------------------------
def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    """Before, `daskhub-compat --version` was a usage error (no command named)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr() == (f"daskhub-compat {metadata.version('daskhub-compat')}\n", "")


def test_a_checker_that_is_not_installed_says_so(tmp_path: Path) -> None:
    """On PYTHONPATH alone, as tests/compat runs it in its venvs: no distribution to ask,
    and the checker still starts (site-packages left out, PyYAML put beside it)."""
    checker = checker_path(tmp_path)
    (checker / "yaml").symlink_to(Path(yaml.__file__).parent, target_is_directory=True)
    ran = subprocess.run(
        [sys.executable, "-S", "-m", "compat", "--version"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(checker), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (
        0,
        "daskhub-compat (not installed: no version)\n",
        "",
    )


# -- --help: what each exit status means --------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "one", "two"),
    [
        ([], "1 an error-level mismatch", "2 the check could not run (bad arguments"),
        (["live"], "1 an error-level mismatch", "did not answer in time"),
        (["diff"], "1 an error-level mismatch", "2 a source could not be read, or bad arguments."),
        (
            ["preflight"],
            "1 an error-level mismatch (the pip command that fixes it is printed)",
            "2 the workers' packages could not be read",
        ),
    ],
)
def test_every_help_ends_with_what_each_exit_status_means(
    capsys: pytest.CaptureFixture[str], command: list[str], one: str, two: str
) -> None:
    """Before, only the module's docstring said it: no --help did."""
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    epilog = text[text.index("exit status: 0 ") :]
    assert one in epilog and two in epilog and epilog.index(one) < epilog.index(two)


# -- preflight --format, and --format on either side of the command ----------------------------
@pytest.fixture
def another_distributed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution folder first on sys.path: importlib.metadata (and so the checker)
    reads distributed at another version than the e2e lock's."""
    info = tmp_path / "shadow" / "distributed-2000.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distributed\nVersion: 2000.1.0\n")
    monkeypatch.syspath_prepend(str(info.parent))
    assert metadata.version("distributed") == "2000.1.0"
    return "2000.1.0"


def test_preflight_writes_json_and_markdown_as_diff_and_live_do(
    site: Path, capsys: pytest.CaptureFixture[str], another_distributed: str
) -> None:
    """Before, preflight wrote its table alone: `--format` was an unrecognized argument."""
    argv = ["preflight", "e2e", "--root", str(site)]
    code, table, _ = run(capsys, *argv)
    assert code == cli.EXIT_MISMATCH
    (fix,) = [line for line in table.splitlines() if line.startswith("fix: pip install ")]
    assert run(capsys, *argv, "--format", "table") == (code, table, "")

    code, text, err = run(capsys, *argv, "--format", "json")
    assert (code, err) == (cli.EXIT_MISMATCH, "")
    found = json.loads(text)
    assert found["fix"] == [line for line in table.splitlines() if line.startswith("fix: ")]
    (row,) = [m for m in found["mismatches"] if m["package"] == "distributed"]
    assert row["level"] == "error" and row["columns"]["client"][0]["version"] == another_distributed
    assert found["ok"] is False and found["errors"] == len(found["mismatches"])

    code, text, err = run(capsys, *argv, "--format", "markdown")
    assert (code, err) == (cli.EXIT_MISMATCH, "")
    assert text.startswith("### Package versions: this Python")
    assert "| error | `distributed` | 2000.1.0 |" in text
    assert text.endswith(f"\n\n- fix: `{fix.removeprefix('fix: ')}`\n")


@pytest.mark.parametrize("command", [["preflight", "e2e"], ["diff", "env", "env"]])
def test_format_parses_before_the_command_or_after_it(
    site: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    root = ["--root", str(site)] if command[0] == "preflight" else []
    before = run(capsys, "--format", "json", *command, *root)
    after = run(capsys, *command, *root, "--format", "json")
    assert before == after and json.loads(before[1])["subject"]
    assert run(capsys, *command, *root)[1] != before[1]  # the default stays the table
