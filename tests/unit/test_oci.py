"""OCI layers, configs and indexes (buildtool/image/oci.py), without Docker: the same inputs give
the same bytes, whatever the files' times after the clamp, and what a layer cannot hold is
one line."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.image import (
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    TOC_DIGEST_ANNOTATION,
    TOC_NAME,
    UNCOMPRESSED_SIZE_ANNOTATION,
    BlobStore,
    Image,
    file_entry,
    index,
)

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
    # eStargz: no file comes first, so the no-prefetch landmark does; the TOC is last.
    assert members[0].name == NO_PREFETCH_LANDMARK and members[-1].name == TOC_NAME
    files = members[1:-1]
    assert [m.name for m in files] == sorted(m.name for m in files)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in files} == {(1000, 100, "", "")}
    assert max(m.mtime for m in files) == CLAMP


def test_a_layer_is_an_estargz_blob_whose_archive_is_its_diff(tmp_path: Path) -> None:
    """The blob decompresses (as one gzip stream of many members) to the archive the
    diff_id hashes; its descriptor names the TOC's digest and the archive's size; the
    files asked for come first, in that order, behind the prefetch landmark."""
    store = BlobStore(tmp_path / "store")
    entries = _tree(tmp_path / "tree", CLAMP)
    layer = store.write_layer(entries, CLAMP, "conda: tool", prefetch=["lib.txt", "bin/tool"])
    blob = store.gzip_blob(layer.diff_id)
    archive = gzip.decompress(blob.open().read())
    assert f"sha256:{hashlib.sha256(archive).hexdigest()}" == layer.diff_id
    assert archive == store.layer_path(layer.diff_id).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = [m.name for m in tar.getmembers()]
        toc = tar.extractfile(TOC_NAME).read()  # type: ignore[union-attr]
    assert names[:3] == ["lib.txt", "bin/tool", PREFETCH_LANDMARK]
    assert names[-1] == TOC_NAME
    described = blob.descriptor()["annotations"]
    assert described[TOC_DIGEST_ANNOTATION] == f"sha256:{hashlib.sha256(toc).hexdigest()}"
    assert described[UNCOMPRESSED_SIZE_ANNOTATION] == str(len(archive))
    # The footer names where the TOC's member starts, and each file's payload starts a
    # member of its own at the offset its entry gives.
    raw = blob.open().read()
    toc_offset = int(raw[-51:][16:32], 16)
    assert zlib.decompressobj(31).decompress(raw[toc_offset:]).startswith(TOC_NAME.encode())
    for entry in json.loads(toc)["entries"]:
        if entry["type"] == "reg" and entry.get("size") and entry["name"] != PREFETCH_LANDMARK:
            payload = zlib.decompressobj(31).decompress(raw[entry["offset"] :])
            assert payload.startswith((tmp_path / "tree" / entry["name"]).read_bytes())


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
