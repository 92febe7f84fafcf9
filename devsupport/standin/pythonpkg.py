"""Stage a relocatable copy of a shared-library CPython build (e.g. a pyenv one).

What a fresh CPython has and nothing more: site-packages is left empty (pip comes as
its own package), and the test suite, tkinter/IDLE and the static libpython are dropped.
ELF rpaths become $ORIGIN-relative. Text files that name the build prefix (shebangs,
sysconfig data, python3.X-config, pkg-config files, the Makefile) get the conda
placeholder instead; binaries are left alone, since the interpreter finds its home
from its own location and binary prefix replacement would corrupt it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from devsupport.standin.condapkg import PLACEHOLDER

ELF_MAGIC = b"\x7fELF"
# Tests, Tk and byte code (recompiled later) are left out of the stdlib copy.
DROPPED = (
    "__pycache__",
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtle.py",
    "turtledemo",
    "_tkinter.*",
    "_test*",
    "_ctypes_test.*",
    "_xxtestfuzz.*",
    "xxlimited*",
    "xxsubtype.*",
)


@dataclass(frozen=True)
class StagedPython:
    root: Path
    version: str  # e.g. "3.11.7"
    text_placeholders: tuple[str, ...]

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def executable(self) -> Path:
        return self.root / "bin" / f"python{self.short_version}"


def python_version(source: Path) -> str:
    """The full version (e.g. 3.11.7) of the CPython installed at source."""
    result = subprocess.run(
        [
            str(source / "bin" / "python3"),
            "-I",
            "-c",
            "import platform; print(platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def stage_python(source: Path, root: Path) -> StagedPython:
    """Copy the CPython at source into root, relocatable, and byte-compile its stdlib."""
    version = python_version(source)
    short = ".".join(version.split(".")[:2])
    _copy_selected(source, root, short)
    _relativize_rpaths(source, root)
    placeholders = _replace_prefix_in_text_files(source, root)
    staged = StagedPython(root, version, tuple(sorted(placeholders)))
    compile_pyc(staged, [(root / "lib" / f"python{short}", root)])
    return staged


def compile_pyc(
    python: StagedPython, trees: list[tuple[Path, Path]], interpreter: Path | None = None
) -> None:
    """Byte-compile folders with the staged interpreter (or `interpreter`, a CPython of the
    same minor version that this machine can run), as checked-hash pycs.

    trees: (folder to compile, root of its package tree). Recorded source paths are made
    relative to the tree root and put under the placeholder, so the byte code does not
    depend on where it was staged; -B and force keep out the timestamp pycs that the
    compiling interpreter writes for its own stdlib imports. Checked-hash pycs stay valid
    whatever mtimes the installer gives, and are rebuilt where the installer rewrote the
    source (placeholder files). Some packages ship .py files that are templates or data
    and do not compile; they are left without a pyc, as pip would.
    """
    script = textwrap.dedent(
        """
        import compileall, json, py_compile, sys
        mode = py_compile.PycInvalidationMode.CHECKED_HASH
        for folder, tree in json.load(sys.stdin):
            compileall.compile_dir(
                folder, stripdir=tree, prependdir=sys.argv[1], force=True, quiet=2,
                workers=2, invalidation_mode=mode,
            )
        """
    )
    pairs = [[str(folder), str(tree)] for folder, tree in trees]
    subprocess.run(
        [str(interpreter or python.executable), "-I", "-B", "-c", script, PLACEHOLDER],
        input=json.dumps(pairs).encode(),
        stdout=subprocess.DEVNULL,
        check=True,
    )


def _copy_selected(source: Path, root: Path, short: str) -> None:
    lib = f"python{short}"
    for script in ("", "3", short):
        for stem in (f"python{script}", f"python{script}-config", f"pydoc{script}"):
            _copy(source / "bin" / stem, root / "bin" / stem)
    for stem in (f"2to3-{short}", "2to3"):
        _copy(source / "bin" / stem, root / "bin" / stem)
    shutil.copytree(source / "include", root / "include", symlinks=True)
    for item in (source / "lib").iterdir():
        if item.name.startswith("libpython") or item.name == "pkgconfig":
            _copy(item, root / "lib" / item.name)
    dropped = shutil.ignore_patterns(*DROPPED, f"lib{lib}.a")
    site_packages = source / "lib" / lib / "site-packages"

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == site_packages:
            return {name for name in names if name != "README.txt"}
        return set(dropped(folder, names))

    shutil.copytree(source / "lib" / lib, root / "lib" / lib, symlinks=True, ignore=ignore)


def _copy(src: Path, dst: Path) -> None:
    if not src.exists() and not src.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def _is_linked_elf(path: Path) -> bool:
    """An executable or shared object (e_type 2 or 3), not an object file."""
    with path.open("rb") as f:
        header = f.read(18)
    return header[:4] == ELF_MAGIC and header[16] in (2, 3)


def _relativize_rpaths(source: Path, root: Path) -> None:
    for path in _files(root):
        if not _is_linked_elf(path):
            continue
        rpath = subprocess.run(
            ["patchelf", "--print-rpath", str(path)], capture_output=True, text=True, check=True
        ).stdout.strip()
        if str(source) not in rpath:
            continue
        relocated = [_relative_entry(entry, source, root, path) for entry in rpath.split(":")]
        subprocess.run(["patchelf", "--set-rpath", ":".join(relocated), str(path)], check=True)


def _relative_entry(entry: str, source: Path, root: Path, elf: Path) -> str:
    if not entry.startswith(str(source)):
        return entry
    target = root / Path(entry).relative_to(source)
    return "$ORIGIN/" + os.path.relpath(target, elf.parent)


def _replace_prefix_in_text_files(source: Path, root: Path) -> list[str]:
    old = str(source).encode()
    changed = []
    for path in _files(root):
        data = path.read_bytes()
        if old not in data or b"\0" in data or _is_elf(path):
            continue
        path.write_bytes(data.replace(old, PLACEHOLDER.encode()))
        changed.append(path.relative_to(root).as_posix())
    return changed
