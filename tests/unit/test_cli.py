"""The command line's own behaviour, in-process (`buildtool.cli.main`), without Docker or
a network: what it reports and the exit codes it gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from buildtool.cli import build_parser, main
from buildtool.common import read_published
from buildtool.lock import LAB_ENV, REQUIREMENTS_FILE, client_files, read_lock
from buildtool.site import (
    REGISTRY_PLACEHOLDER,
    builder_manifests,
    load_site_settings,
    user_registry,
)
from devsupport import REPO
from devsupport.published import write_published


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The seed environments with their committed locks."""
    root = tmp_path / "environments"
    shutil.copytree(REPO / "environments", root)
    return root


def test_lock_check_all_reports_every_environment_and_fails_at_the_end(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(site), "lock", "--check", "--all"]) == 0
    for name in ("e2e", "pyhep"):
        spec = site / name / "env.yaml"
        spec.write_text(spec.read_text() + "\n# changed\npip: ['hepunits==2.3.5']\n")
    capsys.readouterr()
    code = main(["--root", str(site), "lock", "--check", "--all"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines()] == ["ml", "ml-gpu", "physlite"]
    errors = err.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), err
    assert "e2e" in errors[0] and "pyhep" in errors[1]
    assert errors[2] == "error: 2 of 5 locks to make again; see above"


@pytest.mark.parametrize("command", [["lock", "--check"], ["render"], ["build"], ["publish"]])
def test_outside_the_lab_a_lab_lock_is_one_line_with_the_relock(
    site: Path,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seed locks name the stand-in on this machine: a site's path refuses them before
    anything is fetched, and says how to relock."""
    monkeypatch.delenv(LAB_ENV)
    extra = ["--registry", "registry.example.org/daskhub"] if command == ["publish"] else []
    code = main(["--root", str(site), *command, "physlite", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "locked against http://127.0.0.1:8321/conda-forge, a channel on this machine" in err
    assert "`buildtool lock physlite`" in err


def test_the_sites_registry_is_the_default_and_its_placeholder_is_refused(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "site.yaml").write_text("# the site\nregistry: registry.example.org/physics\n")
    build = ["--build-dir", str(tmp_path / "build")]
    assert main(["--root", str(site), *build, "render", "e2e", "--base-image", "debian:12"]) == 0
    assert "registry.example.org/physics/jupyter-e2e:" in capsys.readouterr().out
    (site / "site.yaml").write_text(f"# the site\nregistry: {REGISTRY_PLACEHOLDER}\n")
    code = main(["--root", str(site), *build, "publish", "e2e"])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [
        f"error: {site}/site.yaml:2: registry: still the placeholder of `buildtool init`: "
        "write where this site's pairs go (host[:port]/namespace)"
    ]


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """`main(argv)` refused as argparse refuses a flag: exit status 2, nothing on stdout,
    the command's usage line, then one line that says why. That line is returned."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == "", out + err
    usage, _, why = err.rpartition("\n" + "buildtool")
    assert usage.startswith("usage: buildtool") and why.count("\n") == 1, err
    return "buildtool" + why.rstrip("\n")


# -- the platforms: either spelling ----------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "subdir"),
    [
        ("linux-64", "linux-64"),
        ("linux/amd64", "linux-64"),
        ("linux-aarch64", "linux-aarch64"),
        ("linux/arm64", "linux-aarch64"),
        ("linux/arm64/v8", "linux-aarch64"),
    ],
)
def test_lock_takes_either_spelling_of_a_platform_and_keeps_the_subdir(
    given: str, subdir: str
) -> None:
    """Before, `--platform` took the conda subdirs alone (`linux/arm64`: invalid choice)."""
    args = build_parser().parse_args(["lock", "e2e", "--platform", given])
    assert args.platform == [subdir]


def test_a_base_image_for_one_platform_takes_either_spelling(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `linux/amd64=debian:12` was taken for a reference of every platform."""
    build = tmp_path / "build"
    argv = ["--root", str(site), "--build-dir", str(build), "render", "e2e"]
    registry = ["--registry", "registry.example.org/physics"]
    assert main([*argv, *registry, "--base-image", "linux/amd64=debian:12"]) == 0
    rendered = json.loads((build / "e2e" / "render.json").read_text())
    assert rendered["base_images"] == {"linux-64": "debian:12"}
    assert (
        "FROM debian:12 AS worker" in (build / "e2e" / "linux-64" / "system.Dockerfile").read_text()
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv",
    [
        ["lock", "e2e", "--platform", "amd64"],
        ["lock", "e2e", "--platform", "linux/s390x"],
        ["render", "e2e", "--base-image", "linux-32=debian:12"],
    ],
)
def test_a_wrong_platform_names_both_spellings_of_the_valid_ones(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    line = usage_error(capsys, argv)
    assert "is not a platform: use linux-64 (linux/amd64), linux-aarch64 (linux/arm64/v8)" in line


# -- every command's options, on either side of its name --------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--root", "environments", "lock", "physlite"],
        ["lock", "physlite", "--root", "environments"],
        ["--build-dir", "out", "-q", "lock", "physlite", "--root", "environments"],
        ["lock", "--root", "environments", "-q", "physlite", "--build-dir", "out"],
    ],
)
def test_every_commands_options_parse_before_its_name_or_after_it(argv: list[str]) -> None:
    """Before, --root and --build-dir parsed before the command only, -q and -v after it
    only: `lock physlite --root environments` was `unrecognized arguments`."""
    args = build_parser().parse_args(argv)
    assert (args.command, args.env, args.root) == ("lock", ["physlite"], Path("environments"))
    assert args.build_dir == Path("out" if "out" in argv else "build")
    assert args.quiet is ("-q" in argv) and args.verbose is False


def test_the_defaults_stay_and_a_value_on_either_side_wins() -> None:
    args = build_parser().parse_args(["list"])
    assert (args.root, args.build_dir, args.quiet, args.verbose) == (
        None,
        Path("build"),
        False,
        False,
    )
    before = build_parser().parse_args(["--build-dir", "a", "-v", "list"])
    after = build_parser().parse_args(["list", "--build-dir", "b"])
    assert (before.build_dir, before.verbose, after.build_dir) == (Path("a"), True, Path("b"))


def test_a_root_and_a_build_dir_after_the_command_are_used(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "elsewhere"
    assert main(["client", "e2e", "--root", str(site), "--build-dir", str(build), "-q"]) == 0
    written = sorted(p.name for p in (build / "e2e" / "client").iterdir())
    assert written == ["client-environment.yml", "client-requirements.txt"]
    assert capsys.readouterr().err == ""


# -- usage errors: the command's usage line, exit status 2 ------------------------------------
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["lock"], "buildtool lock: error: name an environment, or pass --all"),
        (
            ["list", "e2e", "--all"],
            "buildtool list: error: name environments or pass --all, not both",
        ),
        (
            ["lock", "--check", "--all", "--platform", "linux-64"],
            "buildtool lock: error: --check checks each lock against its spec: no --channel or "
            "--platform",
        ),
        (
            ["publish", "e2e", "--user", "alice", "--registry", "registry.example.org/x"],
            "buildtool publish: error: --user names the registry namespace: not with --registry",
        ),
        (
            ["serve", "--state", "state"],
            "buildtool serve: error: serve needs --port, or JUPYTERHUB_SERVICE_URL from the hub",
        ),
    ],
)
def test_arguments_that_do_not_go_together_are_a_usage_error(
    site: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    says: str,
) -> None:
    """Before, `buildtool lock` was `error: name an environment, or pass --all` with exit
    status 1 and no usage line; names with --all were read as --all; --check left out
    --channel and --platform, and --user --registry, silently."""
    monkeypatch.delenv("JUPYTERHUB_SERVICE_URL", raising=False)
    assert usage_error(capsys, ["--root", str(site), *argv]) == says


def test_version_is_the_installed_distributions() -> None:
    """Before, `buildtool --version` was a usage error (no command named)."""
    ran = subprocess.run(
        [sys.executable, "-m", "buildtool.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert (ran.returncode, ran.stderr) == (0, "")
    assert ran.stdout == f"buildtool (daskhub-images) {metadata.version('daskhub-images')}\n"


def _help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """`--help`'s text, its lines joined (argparse wraps them to the terminal)."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_tools_help_ends_with_what_each_exit_status_means(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, only the commands' --help said it; the tool's ended with its options."""
    text = _help(capsys, [])
    assert text.endswith(
        "exit status: 0 done; 1 what the command checks or does failed (a solve, a build, an "
        "image test, the registry, a stale lock); 2 the input is wrong (a spec, site.yaml, a "
        "name or a flag), and nothing is written. Each command's --help says what they mean "
        "for it."
    )
    assert "exit status: 0 the names are printed; 2 " in _help(capsys, ["list"])


# -- one image-tests switch ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [["publish", "e2e"], ["serve", "--state", "state"]])
def test_publish_and_serve_take_one_image_tests_switch(command: list[str]) -> None:
    """Before, publish had `--test` (extension pairs only, off by default; site pairs were
    always tested) and serve `--test-images`."""
    parser = build_parser()
    assert parser.parse_args(command).image_tests == "auto"
    for choice in ("yes", "no"):
        assert parser.parse_args([*command, "--image-tests", choice]).image_tests == choice


@pytest.mark.parametrize(
    "argv", [["publish", "e2e", "--test"], ["serve", "--state", "state", "--test-images", "no"]]
)
def test_the_old_switches_are_gone(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "unrecognized arguments: --test" in usage_error(capsys, argv)


def _without_docker(site: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on a machine with no docker CLI and no engine, outside the lab."""
    (site / "site.yaml").write_text(
        "user_images: registry.example.org/users/{username}\nself_service: {}\n"
    )
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "buildtool.cli", "--root", str(site), *argv],
        capture_output=True,
        text=True,
        env={"PATH": str(empty), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "e2e", "--registry", "registry.example.org/physics"],
        ["serve", "--port", "8999", "--state", "state"],
    ],
)
def test_image_tests_yes_without_an_engine_is_one_line_before_anything_runs(
    site: Path, tmp_path: Path, command: list[str]
) -> None:
    ran = _without_docker(site, tmp_path, *command, "--image-tests", "yes")
    assert ran.returncode == 1 and ran.stdout == "", ran.stderr
    assert ran.stderr == (
        "error: --image-tests yes: no Docker engine answers (start dockerd, or set DOCKER_HOST)\n"
    )


def test_image_tests_auto_without_an_engine_publishes_untested(site: Path, tmp_path: Path) -> None:
    """Past the switch, the publish goes on (here to the lab lock it refuses outside the
    lab, before anything is fetched)."""
    ran = _without_docker(site, tmp_path, "publish", "e2e", "--registry", "registry.example.org/x")
    lines = ran.stderr.splitlines()
    assert ran.returncode == 2 and len(lines) == 2, ran.stderr
    assert lines[0] == "no Docker engine answers: the pairs are published without their image tests"
    assert lines[1].startswith("error: ") and "`buildtool lock e2e`" in lines[1]


def test_the_record_says_when_a_pair_was_published_untested(tmp_path: Path) -> None:
    """`image_tested` is in published.json only when false: a record of before reads as
    tested, as every site pair then was."""
    written = write_published(tmp_path, "e2e")
    record = read_published(tmp_path, "e2e")
    assert record is not None and record.image_tested is True
    assert json.loads(record.to_json()) == written
    untested = record.model_copy(update={"image_tested": False})
    assert json.loads(untested.to_json()) == {**written, "image_tested": False}


def test_the_services_deployment_keeps_auto(tmp_path: Path) -> None:
    """It runs `serve` in a pod with no Docker engine: auto publishes untested there."""
    (tmp_path / "site.yaml").write_text("self_service: {image: registry.example.org/b:1}\n")
    service = load_site_settings(tmp_path).self_service
    assert service is not None
    deployment = next(m for m in builder_manifests(service) if m["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"][1:])
    assert (args.command, args.image_tests) == ("serve", "auto")


# -- client --output ----------------------------------------------------------------------------
def test_client_writes_where_output_says_or_prints_the_requirements(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the pins went to build/ENV/client/ alone: `--output` was unrecognized."""
    build = tmp_path / "build"
    argv = ["--root", str(site), "--build-dir", str(build), "client", "e2e"]
    expected = client_files(
        "e2e", read_lock(site / "e2e" / "conda-lock.yml"), site / "e2e" / "conda-lock.yml"
    )
    assert main([*argv, "--output", str(tmp_path / "pins")]) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "pins").iterdir()} == expected
    capsys.readouterr()
    assert main([*argv, "--output", "-"]) == 0
    assert capsys.readouterr().out == expected[REQUIREMENTS_FILE]
    assert not build.exists()


def test_client_output_takes_one_environment(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, ["client", "e2e", "physlite", "--output", "-"])
    assert line == "buildtool client: error: --output takes one environment"


# -- whoami -------------------------------------------------------------------------------------
USER_IMAGES = "registry.example.org/daskhub-users/{username}"


@pytest.fixture
def users_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seed site with users' namespaces, and alice.b's notebook's JUPYTERHUB_USER."""
    (site / "site.yaml").write_text(f"user_images: {USER_IMAGES}\n")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice.b")
    return site


@pytest.mark.parametrize(
    ("argv", "answer"),
    [
        ([], "alice.b -> registry.example.org/daskhub-users/alice-2eb"),
        (["--user", "zoë"], "zoë -> registry.example.org/daskhub-users/zo-c3-ab"),
    ],
)
def test_whoami_prints_where_a_users_own_pairs_go(
    users_site: Path, capsys: pytest.CaptureFixture[str], argv: list[str], answer: str
) -> None:
    assert main(["--root", str(users_site), "whoami", *argv]) == 0
    assert capsys.readouterr() == (answer + "\n", "")
    user, _, namespace = answer.partition(" -> ")
    assert namespace == user_registry(users_site, user, [])  # where publish --user puts them


@pytest.mark.parametrize(
    ("site_yaml", "argv", "says"),
    [
        (None, ["--user", ""], "error: no user: pass --user NAME, or set JUPYTERHUB_USER"),
        ("profiles: {hidden: [e2e]}\n", [], "/site.yaml names no user_images: no user has a"),
        (None, ["--user", "Émile"], "user name 'Émile' has no image namespace: it must start"),
    ],
)
def test_whoami_without_a_user_or_a_namespace_is_one_line(
    users_site: Path,
    capsys: pytest.CaptureFixture[str],
    site_yaml: str | None,
    argv: list[str],
    says: str,
) -> None:
    if site_yaml is not None:
        (users_site / "site.yaml").write_text(site_yaml)
    assert main(["--root", str(users_site), "whoami", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert says in err


def test_whoami_with_no_hub_user_asks_for_one(
    users_site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert main(["--root", str(users_site), "whoami"]) == 2
    assert capsys.readouterr() == (
        "",
        "error: no user: pass --user NAME, or set JUPYTERHUB_USER (a hub notebook has it)\n",
    )


def test_whoamis_help_says_names_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    assert "(a-z and 0-9 kept, any other byte -XX: alice.b -> alice-2eb)" in _help(
        capsys, ["whoami"]
    )
