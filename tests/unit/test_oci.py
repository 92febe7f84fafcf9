"""OCI layers, configs and indexes (buildtool/image/oci.py), without Docker: the same inputs give
the same bytes, whatever the files' times after the clamp, and what a layer cannot hold is
one line."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.image import BlobStore, Image, file_entry, index

CLAMP = 1_700_000_000


def _tree(root: Path, mtime: int) -> list:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "lib.txt").write_text("data\n")
    (root / "link").symlink_to("lib.txt")
    for path in [root / "bin" / "tool", root / "lib.txt", root / "bin", root]:
        os.utime(path, (mtime, mtime))
    paths = sorted(p for p in root.rglob("*"))
    return [file_entry(p, p.relative_to(root).as_posix(), 1000, 100, CLAMP) for p in paths]


def _layer(tmp_path: Path, name: str, mtime: int):
    store = BlobStore(tmp_path / f"store-{name}")
    entries = _tree(tmp_path / name, mtime)
    return store, store.write_layer(reversed(entries), CLAMP, "conda: tool")


def test_the_same_files_give_the_same_layer_whatever_their_times_after_the_clamp(
    tmp_path: Path,
) -> None:
    store_a, first = _layer(tmp_path, "a", CLAMP + 10)
    store_b, second = _layer(tmp_path, "b", CLAMP + 99_999)
    assert first.diff_id == second.diff_id and first.size == second.size
    assert store_a.gzip_blob(first.diff_id).digest == store_b.gzip_blob(second.diff_id).digest
    with tarfile.open(store_a.layer_path(first.diff_id)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(1000, 100, "", "")}
    assert max(m.mtime for m in members) == CLAMP


def test_config_manifest_and_index_are_canonical_and_name_each_platform(tmp_path: Path) -> None:
    store, layer = _layer(tmp_path, "a", CLAMP)
    config = {"config": {"Env": ["PATH=/srv/conda/envs/notebook/bin"]}}
    images = {p: Image(p, config, (layer,)) for p in ("linux-aarch64", "linux-64")}
    blobs = store.gzip_blobs([layer.diff_id])
    manifests = {p: image.manifest(blobs) for p, image in images.items()}
    assert manifests == {p: image.manifest(blobs) for p, image in images.items()}
    arm = json.loads(images["linux-aarch64"].config_blob().data or b"")
    assert (arm["architecture"], arm["variant"], arm["os"]) == ("arm64", "v8", "linux")
    assert arm["rootfs"]["diff_ids"] == [layer.diff_id]
    top = json.loads(index(manifests).data or b"")
    assert [m["platform"] for m in top["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert index(dict(reversed(list(manifests.items())))).digest == index(manifests).digest


def test_what_a_layer_cannot_hold_is_one_line_naming_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(BuildToolError) as raised:
        file_entry(fifo, "pipe", 0, 0, CLAMP)
    assert str(raised.value).startswith(f"{fifo}: not a file") and "\n" not in str(raised.value)
