"""Packages written by condapkg: deterministic, and rattler installs them with the prefix."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import zstandard

from devsupport.cache import file_sha256
from devsupport.standin.condaenv import index_channel, install, solve
from devsupport.standin.condapkg import PLACEHOLDER, PackageMeta, write_package


def make_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    tool = root / "bin" / "hello"
    tool.write_text(f"#!/bin/sh\necho installed in {PLACEHOLDER}\n")
    tool.chmod(0o755)
    (root / "bin" / "hi").symlink_to("hello")
    (root / "share").mkdir()
    (root / "share" / "data.bin").write_bytes(b"\0binary\0")


def test_same_inputs_give_the_same_archive(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree")
    meta = PackageMeta("hello", "1.0", "0")
    first = write_package(meta, tmp_path / "tree", tmp_path / "a", ["bin/hello"])
    (tmp_path / "tree" / "share" / "data.bin").touch()  # a new mtime changes nothing
    second = write_package(meta, tmp_path / "tree", tmp_path / "b", ["bin/hello"])
    assert first.name == "hello-1.0-0.conda"
    assert file_sha256(first) == file_sha256(second)


def test_metadata_describes_the_files(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree")
    meta = PackageMeta("hello", "1.0", "0", depends=("python >=3.11,<3.12",))
    package = write_package(meta, tmp_path / "tree", tmp_path / "channel", ["bin/hello"])
    with zipfile.ZipFile(package) as archive:
        assert archive.namelist() == [
            "metadata.json",
            "info-hello-1.0-0.tar.zst",
            "pkg-hello-1.0-0.tar.zst",
        ]
        info_tar = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(archive.read("info-hello-1.0-0.tar.zst"))
        )
    (tmp_path / "info.tar").write_bytes(info_tar)
    subprocess.run(["tar", "-xf", "info.tar"], cwd=tmp_path, check=True)
    index = json.loads((tmp_path / "info" / "index.json").read_text())
    assert index["depends"] == ["python >=3.11,<3.12"]
    assert (index["subdir"], index["arch"], index["platform"]) == ("linux-64", "x86_64", "linux")
    paths = {p["_path"]: p for p in json.loads((tmp_path / "info/paths.json").read_text())["paths"]}
    assert paths["bin/hello"]["prefix_placeholder"] == PLACEHOLDER
    assert paths["bin/hello"]["file_mode"] == "text"
    assert paths["bin/hi"]["path_type"] == "softlink"
    assert "prefix_placeholder" not in paths["share/data.bin"]
    assert (tmp_path / "info" / "files").read_text().split() == sorted(paths)


def test_rattler_installs_it_with_the_prefix_filled_in(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree")
    channel = tmp_path / "channel"
    write_package(PackageMeta("hello", "1.0", "0"), tmp_path / "tree", channel, ["bin/hello"])
    write_package(
        PackageMeta("hello-meta", "1.0", "0", depends=("hello",), subdir="noarch"), None, channel
    )
    index_channel(channel)
    prefix = tmp_path / "prefix"
    install(solve(channel, ["hello-meta"]), prefix, tmp_path / "pkgs")
    out = subprocess.run([prefix / "bin" / "hi"], capture_output=True, text=True, check=True)
    assert out.stdout == f"installed in {prefix}\n"
    assert (prefix / "share" / "data.bin").read_bytes() == b"\0binary\0"
