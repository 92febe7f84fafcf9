"""Hostile archives are refused before anything lands outside their folder.

Real archives, built here: wheels (zip) for the stand-in's wheel converter, tars for
`extract_tar` (the docker save archive and the Debian packages go through it).
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from buildtool.common import UnsafeArchiveMember, confine, extract_tar
from devsupport.standin.wheelconv import Target, read_wheel, stage_wheel

TARGET = Target("3.11.7")
DIST_INFO = "demo-1.0.dist-info"


def make_wheel(
    path: Path,
    members: dict[str, bytes] | None = None,
    entry_points: str = "",
    symlinks: dict[str, str] | None = None,
) -> Path:
    """A wheel of `demo` 1.0 holding symlink members (name -> target), then `members`
    (name -> content)."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{DIST_INFO}/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        wheel.writestr(f"{DIST_INFO}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        if entry_points:
            wheel.writestr(f"{DIST_INFO}/entry_points.txt", entry_points)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            wheel.writestr(info, target)
        for name, content in (members or {}).items():
            wheel.writestr(name, content)
    return path


def stage(wheel: Path, root: Path) -> None:
    stage_wheel(read_wheel(wheel), root, TARGET, (TARGET.python_spec,))


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(the package folder, deep inside tmp_path; the wheel's own folder beside it)."""
    root = tmp_path / "a" / "b" / "c" / "d" / "root"
    return root, tmp_path / "wheels"


def test_a_well_formed_wheel_is_staged(layout: tuple[Path, Path]) -> None:
    root, wheels = layout
    wheels.mkdir()
    wheel = make_wheel(
        wheels / "demo-1.0-py3-none-any.whl",
        {"demo/__init__.py": b"x = 1\n", "demo-1.0.data/scripts/tool": b"#!python\nprint(1)\n"},
        "[console_scripts]\ndemo = demo:main\n",
    )
    stage(wheel, root)
    assert (root / TARGET.site_packages / "demo" / "__init__.py").read_bytes() == b"x = 1\n"
    assert (root / "bin" / "tool").exists()
    assert b"from demo import main" in (root / "bin" / "demo").read_bytes()


@pytest.mark.parametrize(
    "member",
    [
        "../escape.py",  # one level up: still inside the package, refused all the same
        "../../../../../escape.py",  # out of site-packages, lib, the package, and beyond
        "demo/../../../../../../escape.py",
        "demo-1.0.data/scripts/../../../../escape.py",
        "demo-1.0.data/data/../../escape.py",
    ],
)
def test_a_member_that_climbs_out_is_refused(
    layout: tuple[Path, Path], tmp_path: Path, member: str
) -> None:
    root, wheels = layout
    wheels.mkdir()
    wheel = make_wheel(wheels / "demo-1.0-py3-none-any.whl", {member: b"owned = True\n"})
    with pytest.raises(UnsafeArchiveMember) as refused:
        stage(wheel, root)
    message = str(refused.value)
    assert message.startswith(f"{wheel}: member {member!r} refused"), message
    assert "'..'" in message
    assert refused.value.exit_code == 2
    assert not list(tmp_path.rglob("escape.py"))


def test_an_absolute_member_is_refused(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, wheels = layout
    wheels.mkdir()
    target = tmp_path / "outside" / "absolute.py"
    wheel = make_wheel(wheels / "demo-1.0-py3-none-any.whl", {str(target): b"owned = True\n"})
    with pytest.raises(UnsafeArchiveMember, match="absolute path") as refused:
        stage(wheel, root)
    assert str(target) in str(refused.value) and str(wheel) in str(refused.value)
    assert not target.exists()
    assert not list(tmp_path.rglob("absolute.py"))


def test_a_symlink_member_is_refused(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, wheels = layout
    wheels.mkdir()
    wheel = make_wheel(
        wheels / "demo-1.0-py3-none-any.whl",
        {"demo/link/payload.py": b"owned = True\n"},
        symlinks={"demo/link": str(tmp_path / "outside")},
    )
    with pytest.raises(UnsafeArchiveMember, match="symlink") as refused:
        stage(wheel, root)
    assert str(refused.value).startswith(f"{wheel}: member 'demo/link' refused")
    assert not (tmp_path / "outside").exists()
    assert not list(root.rglob("link"))


@pytest.mark.parametrize(
    "name", ["../../evil", "../evil", "sub/evil", "..", "/tmp/evil-entry-point"]
)
def test_an_entry_point_that_is_not_a_file_name_is_refused(
    layout: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    root, wheels = layout
    wheels.mkdir()
    wheel = make_wheel(
        wheels / "demo-1.0-py3-none-any.whl",
        {"demo/__init__.py": b""},
        f"[console_scripts]\n{name} = mod:func\n",
    )
    with pytest.raises(UnsafeArchiveMember) as refused:
        stage(wheel, root)
    message = str(refused.value)
    assert message.startswith(f"{wheel}: member '{DIST_INFO}/entry_points.txt: {name}'"), message
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/evil-entry-point").exists()
    assert not (root / "bin").exists() or not list((root / "bin").iterdir())


# tars


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def extract(archive: Path, dest: Path, **options: bool) -> list[str]:
    with tarfile.open(archive) as tar:
        return extract_tar(tar, dest, archive=archive, **options)


def test_a_well_formed_tar_is_extracted(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "good.tar",
        [
            ("./usr/lib/a.py", b"a\n"),
            link("./usr/lib/b.py", "a.py"),
            link("./usr/lib/c.py", "usr/lib/a.py", tarfile.LNKTYPE),
        ],
    )
    dest = tmp_path / "dest"
    assert extract(archive, dest) == []
    assert (dest / "usr/lib/b.py").read_text() == "a\n"
    assert (dest / "usr/lib/c.py").read_text() == "a\n"


def test_a_symlink_that_escapes_is_refused(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "escape.tar", [link("escape", "../outside"), ("escape/payload", b"owned\n")]
    )
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveMember) as refused:
        extract(archive, dest)
    assert str(refused.value).startswith(f"{archive}: member 'escape' refused"), refused.value
    assert refused.value.exit_code == 2
    assert not (tmp_path / "outside").exists()
    assert not (dest / "escape").exists()


def test_nothing_is_written_through_a_symlink_even_one_inside(tmp_path: Path) -> None:
    """The data filter accepts a link inside the folder; writing through it is refused
    all the same (the way the filters of older Pythons were bypassed)."""
    archive = make_tar(
        tmp_path / "through.tar",
        [("inner/keep", b"keep\n"), link("hop", "inner"), ("hop/payload", b"owned\n")],
    )
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveMember, match="through the symlink") as refused:
        extract(archive, dest)
    assert "'hop/payload'" in str(refused.value)
    assert not (dest / "inner" / "payload").exists()


def test_a_hard_link_to_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    archive = make_tar(
        tmp_path / "hard.tar",
        [link("soft", str(outside)), link("hard", "soft", tarfile.LNKTYPE), ("hard", b"owned")],
    )
    with pytest.raises(UnsafeArchiveMember):
        extract(archive, tmp_path / "dest")
    assert outside.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../../escape", "'..'"),
        ("/tmp/escape-absolute", "absolute path"),
        ("a/../../escape", "'..'"),
    ],
)
def test_tar_members_that_climb_out_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    archive = make_tar(tmp_path / "bad.tar", [(name, b"owned\n")])
    dest = tmp_path / "x" / "dest"
    with pytest.raises(UnsafeArchiveMember, match=reason) as refused:
        extract(archive, dest)
    assert f"member {name!r}" in str(refused.value)
    assert not list(tmp_path.rglob("escape*"))
    assert not Path("/tmp/escape-absolute").exists()


def test_absolute_symlinks_are_refused_or_left_out(tmp_path: Path) -> None:
    """A Debian package links into the system (/etc/...): left out when asked, refused
    otherwise."""
    archive = make_tar(
        tmp_path / "deb.tar",
        [("./usr/lib/a.py", b"a\n"), link("./usr/lib/sitecustomize.py", "/etc/sitecustomize.py")],
    )
    with pytest.raises(UnsafeArchiveMember, match="absolute"):
        extract(archive, tmp_path / "strict")
    dest = tmp_path / "lenient"
    assert extract(archive, dest, skip_absolute_links=True) == ["./usr/lib/sitecustomize.py"]
    assert (dest / "usr/lib/a.py").exists()
    assert not (dest / "usr/lib/sitecustomize.py").is_symlink()


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "empty"), ("a\0b", "NUL"), ("/etc/passwd", "absolute"), ("a/../../b", "'..'")],
)
def test_confine_refuses_names_that_could_point_elsewhere(
    tmp_path: Path, name: str, reason: str
) -> None:
    with pytest.raises(UnsafeArchiveMember, match=reason):
        confine(tmp_path, name, archive="test.zip")


def test_confine_refuses_an_existing_symlink(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "file").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeArchiveMember, match="symlink"):
        confine(tmp_path / "root", "file", archive="test.zip")
    assert confine(tmp_path / "root", "./sub/new", archive="test.zip") == (
        tmp_path.resolve() / "root" / "sub" / "new"
    )
