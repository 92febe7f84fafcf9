"""Wheels are chosen by their tags for the image's platform and Python, never by name.

A pick by file-name prefix (`sorted(...)[0]`) gave a linux-64 build orjson's aarch64
wheel: `aarch64` sorts before `x86_64`. The names here are made up, as a folder of
downloads would hold them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.lock import (
    PipHash,
    PipLockedPackage,
    choose_wheel,
    fetch_wheels,
    locked_wheels,
    platform_tags,
)

ORJSON = [
    "orjson-3.10.12-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
    "orjson-3.10.12-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "orjson-3.10.12-cp311-cp311-musllinux_1_2_x86_64.whl",
    "orjson-3.10.12-cp311-cp311-macosx_10_15_x86_64.macosx_11_0_arm64.whl",
    "orjson-3.10.12-cp311-cp311-manylinux_2_39_x86_64.whl",  # newer glibc than bookworm's
    "orjson-3.10.11-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "orjson-3.10.12-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "orjson-3.10.12-cp311-cp311-win_amd64.whl",
    "orjson-3.10.12.tar.gz",
]


def _folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "wheels" / "linux-64"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_linux_64_python_311_takes_the_x86_64_cp311_wheel(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ORJSON)
    chosen = choose_wheel(folder.iterdir(), "orjson", "3.10.12", "linux-64", "3.11")
    assert chosen == folder / (
        "orjson-3.10.12-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    )
    assert sorted(p.name for p in folder.glob("orjson-3.10.12-*"))[0] != chosen.name  # the old pick
    aarch64 = choose_wheel(folder.iterdir(), "orjson", "3.10.12", "linux-aarch64", "3.11.7")
    assert aarch64 is not None and aarch64.name.endswith("manylinux2014_aarch64.whl")


def test_no_aarch64_cp312_or_too_new_glibc_wheel_fits_linux_64_python_311(tmp_path: Path) -> None:
    unfit = [name for name in ORJSON if "cp311-cp311-manylinux_2_17_x86_64" not in name]
    folder = _folder(tmp_path, unfit)
    assert choose_wheel(folder.iterdir(), "orjson", "3.10.12", "linux-64", "3.11") is None
    assert choose_wheel(unfit, "orjson", "3.10.12", "linux-64", "3.12") == ORJSON[1]


def test_preference_follows_pip(tmp_path: Path) -> None:
    names = [
        "pkg-1.0-py3-none-any.whl",
        "pkg-1.0-cp38-abi3-manylinux_2_28_x86_64.whl",
        "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    ]
    # the newest manylinux the base image runs, then older ones, abi3, pure Python last
    for expected in reversed(names):
        assert choose_wheel(names, "pkg", "1.0", "linux-64", "3.11") == expected
        names.remove(expected)
    # a higher build number wins among equal tags; names are compared canonically
    built = ["Pkg_Name-1.0-1-py3-none-any.whl", "pkg.name-1.0-2-py3-none-any.whl"]
    assert choose_wheel(built, "pkg-name", "1.0", "linux-64", "3.11") == built[1]


def test_platform_tags_stop_at_the_base_images_glibc() -> None:
    x86 = platform_tags("linux-64")
    assert x86[0] == "manylinux_2_36_x86_64"
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(x86)
    assert not any("aarch64" in tag for tag in x86)
    arm = platform_tags("linux-aarch64")
    assert arm[-1] == "manylinux2014_aarch64" and not any("x86_64" in tag for tag in arm)


def _record(filename: str, version: str = "3.10.12") -> PipLockedPackage:
    return PipLockedPackage(
        name="orjson",
        version=version,
        platform="linux-64",
        url=f"https://files.pythonhosted.org/packages/00/{filename}",
        hash=PipHash(sha256="0" * 64),
        category="main",
        optional=False,
    )


def test_a_locked_wheel_that_does_not_fit_stops_the_build(tmp_path: Path) -> None:
    record = _record(ORJSON[0])  # aarch64, locked for linux-64 by hand
    with pytest.raises(BuildToolError) as caught:
        fetch_wheels([record], "linux-64", "3.11.7", tmp_path)
    assert str(caught.value) == (
        f"orjson 3.10.12 (linux-64): the locked wheel {ORJSON[0]} does not fit linux-64 and "
        "Python 3.11.7; run `buildtool lock`"
    )


def test_every_pin_must_be_locked(tmp_path: Path) -> None:
    records = [_record(ORJSON[-3]), _record(ORJSON[5], "3.10.11")]
    assert locked_wheels(tmp_path, records, ["ORJSON==3.10.12"], "linux-64") == records[:1]
    with pytest.raises(BuildToolError) as caught:
        locked_wheels(tmp_path, records, ["orjson==3.10.13"], "linux-64")
    assert str(caught.value) == (
        f"{tmp_path}: the pip pin orjson==3.10.13 is not locked for linux-64; run `buildtool lock`"
    )
