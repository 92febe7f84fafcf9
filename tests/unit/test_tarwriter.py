"""A layer's members are what Python's own `tarfile` writes, byte for byte.

A layer is an eStargz archive (`estargz.py`): its landmark and its members, each member's
bytes as `tarfile` writes them, then the TOC and the archive's end. The reference here is
`tarfile` itself, fed the same members.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from buildtool.image import NO_PREFETCH_LANDMARK, TOC_NAME, BlobStore, Entry, file_entry

CLAMP = 1_700_000_000


def _tree(root: Path) -> list[Entry]:
    """Members that take every path through the writer: long and non-ASCII names (PAX
    headers), sizes on and off the 512-byte blocks, empty files, links, folders, and
    bytes held in memory."""
    (root / "d" / ("long-" * 30)).mkdir(parents=True)
    files = {
        "d/empty": b"",
        "d/block": b"x" * 512,
        "d/odd": os.urandom(70_001),
        f"d/{'long-' * 30}/inner.py": b"print('hi')\n",
        "d/naïve-é.txt": "ünïcode\n".encode(),
        "d/big": os.urandom(3 * (1 << 20) + 5),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "d" / "link").symlink_to("odd")
    entries = []
    for directory, folders, names in os.walk(root):
        for name in folders + names:
            path = Path(directory) / name
            entries.append(file_entry(path, str(path.relative_to(root)), 1000, 100, CLAMP))
    record = b'{"name": "x"}\n'
    entries.append(Entry("d/record.json", "file", 0o644, 1000, 100, CLAMP, size=14, data=record))
    return entries


def _reference(entries: list[Entry]) -> bytes:
    """The members as `tarfile` writes them (without the archive's end)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        landmark = tarfile.TarInfo(NO_PREFETCH_LANDMARK)
        landmark.size, landmark.mode, landmark.uname, landmark.gname = 1, 0o644, "", ""
        tar.addfile(landmark, io.BytesIO(b"\x0f"))
        for entry in sorted(entries, key=lambda e: e.path):
            if entry.data is not None:
                tar.addfile(entry.tarinfo(), io.BytesIO(entry.data))
            elif entry.kind == "file":
                assert entry.source is not None
                with entry.source.open("rb") as data:
                    tar.addfile(entry.tarinfo(), data)
            else:
                tar.addfile(entry.tarinfo())
        members = tar.offset
    return out.getvalue()[:members]


def test_a_layer_is_byte_for_byte_what_tarfile_writes(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    store = BlobStore(tmp_path / "store")
    layer = store.write_layer(entries, CLAMP, "test")
    written = store.layer_path(layer.diff_id).read_bytes()
    reference = _reference(entries)
    assert written.startswith(reference)
    assert written.endswith(tarfile.NUL * 1024)  # the archive's end, after the TOC
    assert layer.diff_id == f"sha256:{hashlib.sha256(written).hexdigest()}"
    assert layer.size == len(written)
    assert store.written == [(layer.diff_id, layer.size)]
    with tarfile.open(store.layer_path(layer.diff_id)) as tar:
        names = tar.getnames()
        record = tar.extractfile("d/record.json")
        assert record is not None and record.read() == b'{"name": "x"}\n'
    assert names[0] == NO_PREFETCH_LANDMARK and names[-1] == TOC_NAME
    assert names[1:-1] == sorted(names[1:-1]) and f"d/{'long-' * 30}/inner.py" in names


def test_a_layer_keyed_by_its_inputs_is_recalled_while_its_file_is_there(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    layer = store.write_layer(_tree(tmp_path / "tree"), CLAMP, "test")
    store.remember_layer("k" * 64, layer, ["a", "b"])
    assert store.recall_layer("k" * 64) == (layer, ["a", "b"])
    assert store.recall_layer("0" * 64) is None
    store.layer_path(layer.diff_id).unlink()
    assert store.recall_layer("k" * 64) is None
