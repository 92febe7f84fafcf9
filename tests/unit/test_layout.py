"""The house: buildtool's stage packages, each reached through its face, the import
directions import-linter checks (and that the check can fail), the label keys and the
CLI's dispatch written once."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devsupport import REPO

STAGES = ("common", "spec", "lock", "image", "publish", "site")


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_buildtool_is_its_stages_and_a_thin_cli() -> None:
    entries = sorted(p.name for p in (REPO / "buildtool").iterdir() if p.name != "__pycache__")
    assert entries == sorted([*STAGES, "__init__.py", "cli.py"])
    assert len(entries) <= 8


@pytest.mark.parametrize("stage", STAGES)
def test_each_face_maps_its_stage_and_names_its_surface(stage: str) -> None:
    package = importlib.import_module(f"buildtool.{stage}")
    assert package.__doc__ and len(package.__doc__.splitlines()) > 3
    modules = {p.stem for p in (REPO / "buildtool" / stage).glob("*.py")} - {"__init__"}
    for module in modules:  # the map names every module
        assert f"{module}.py" in package.__doc__, (stage, module)
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        assert hasattr(package, name), (stage, name)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of buildtool in `path`: `a.b` for `from a.b import
    c`, `a.b.c` for `import a.b.c`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, module) for line, module in found if module.startswith("buildtool")]


def test_code_outside_a_stage_imports_only_its_face() -> None:
    """tests, bench, devsupport, the CLI and the other stages alike: `from buildtool.image
    import build_pair`, never `from buildtool.image.build import ...`."""
    reaching_in = []
    for path in _python_files("buildtool", "tests", "bench", "devsupport"):
        relative = path.relative_to(REPO).as_posix()
        for line, module in _imports(path):
            parts = module.split(".")
            if len(parts) > 2 and not relative.startswith(f"buildtool/{parts[1]}/"):
                reaching_in.append(f"{relative}:{line}: {module}")
    assert not reaching_in, "\n".join(reaching_in)


def test_every_label_key_is_in_the_vocabulary_only() -> None:
    keys = re.compile(r"[\"']io\.daskhub\.|[\"']org\.opencontainers\.image\.|^LABEL io\.", re.M)
    places = [
        p.relative_to(REPO).as_posix()
        for folder in ("buildtool", "compat", "dockerfiles")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and p.suffix in (".py", ".j2") and keys.search(p.read_text())
    ]
    assert places == ["compat/vocabulary.py"]


def test_the_cli_dispatches_nothing_itself() -> None:
    assert "is_extension" not in (REPO / "buildtool" / "cli.py").read_text()


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts (pyproject.toml) on the code under `root`."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "lint-imports"),
            "--config",
            str(REPO / "pyproject.toml"),
        ],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layers_contract_holds_and_fails_on_an_upward_import(tmp_path: Path) -> None:
    for distribution in ("buildtool", "compat", "devsupport"):
        shutil.copytree(
            REPO / distribution, tmp_path / distribution, ignore=shutil.ignore_patterns("*.pyc")
        )
    kept = _lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-3000:]
    assert "Contracts: 3 kept, 0 broken." in kept.stdout
    errors = tmp_path / "buildtool" / "common" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom buildtool.site import namespaces  # noqa\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "buildtool.common is not allowed to import buildtool.site" in broken.stdout
    assert "buildtool.common.errors -> buildtool.site" in broken.stdout
