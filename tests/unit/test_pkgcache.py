"""The package cache's rules, on folders laid out by hand: an entry is linked into a view
only when it is the package the lock names; anything else is moved aside and fetched
again; a package fetched into a view becomes an entry only when its index says it is the
locked one. The real installs (py-rattler fetching into views) are in tests/test_pkgcache.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from buildtool.common import BuildToolError
from buildtool.image import MARKER, VIEWS, Facts, entry_problem, view
from buildtool.image import prune_package_cache as prune

NUMPY = Facts("ab" * 32, "linux-64", "numpy", "2.4.6", "py311_0")


def _extracted(folder: Path, facts: Facts, subdir: str | None = None) -> None:
    (folder / "info").mkdir(parents=True)
    index = {**asdict(facts), "subdir": subdir or facts.subdir}
    del index["sha256"]
    (folder / "info" / "index.json").write_text(json.dumps(index))
    (folder / "lib").mkdir()
    (folder / "lib" / "numpy.so").write_text(subdir or facts.subdir)


def _entry(cache: Path, facts: Facts, subdir: str | None = None) -> Path:
    entry = cache / facts.sha256
    _extracted(entry / facts.dist, facts, subdir)
    (entry / f"{facts.dist}.lock").write_bytes(b"\0" * 40)
    (entry / MARKER).write_text(json.dumps(asdict(facts)))
    return entry


def test_a_verified_entry_is_linked_into_the_view(tmp_path: Path) -> None:
    entry = _entry(tmp_path, NUMPY)
    assert entry_problem(tmp_path, NUMPY) is None
    with view(tmp_path, [NUMPY]) as made:
        linked = made.path / NUMPY.dist
        assert linked.is_symlink() and linked.resolve() == (entry / NUMPY.dist).resolve()
        assert (made.path / f"{NUMPY.dist}.lock").read_bytes() == b"\0" * 40
        assert made.publish() == 0
    assert not made.path.exists() and entry.is_dir()


def test_another_platforms_files_under_the_locked_name_are_never_linked(tmp_path: Path) -> None:
    """An entry whose index names linux-aarch64 under the linux-64 record's sha256 (what
    a killed extraction left in py-rattler's own cache) is moved aside, not linked."""
    _entry(tmp_path, NUMPY, subdir="linux-aarch64")
    problem = entry_problem(tmp_path, NUMPY)
    assert problem is not None and "linux-aarch64" in problem
    with view(tmp_path, [NUMPY]) as made:
        assert not (made.path / NUMPY.dist).exists()
    assert not (tmp_path / NUMPY.sha256).exists()


@pytest.mark.parametrize(
    "spoil",
    [
        lambda entry: (entry / MARKER).unlink(),  # killed before it was marked
        lambda entry: (entry / MARKER).write_text(
            json.dumps(asdict(replace(NUMPY, build="py311_1")))
        ),
        lambda entry: (entry / f"{NUMPY.dist}.lock").unlink(),
        lambda entry: (entry / NUMPY.dist / "info" / "index.json").write_text("{"),
    ],
)
def test_an_entry_that_fails_its_check_is_fetched_again(tmp_path: Path, spoil) -> None:
    spoil(_entry(tmp_path, NUMPY))
    assert entry_problem(tmp_path, NUMPY) not in (None, "missing")
    with view(tmp_path, [NUMPY]) as made:
        assert not (made.path / NUMPY.dist).exists()
    assert not (tmp_path / NUMPY.sha256).exists()


def test_a_fetched_package_becomes_an_entry_only_if_it_is_the_locked_one(tmp_path: Path) -> None:
    other = replace(NUMPY, sha256="cd" * 32, subdir="linux-aarch64")
    with view(tmp_path, [NUMPY]) as made:
        # what py-rattler does for a package the view lacks: fetch, check, extract
        _extracted(made.path / NUMPY.dist, NUMPY)
        (made.path / f"{NUMPY.dist}.lock").write_bytes(b"\1" * 40)
        assert made.publish() == 1
    assert entry_problem(tmp_path, NUMPY) is None
    assert entry_problem(tmp_path, other) == "missing"
    with view(tmp_path, [other]) as made:
        _extracted(made.path / other.dist, other, subdir="linux-64")
        (made.path / f"{other.dist}.lock").write_bytes(b"\1" * 40)
        with pytest.raises(BuildToolError) as caught:
            made.publish()
    assert str(caught.value) == (
        f"numpy 2.4.6 py311_0: the archive with sha256 {'cd' * 32} holds the linux-64 "
        "numpy 2.4.6 py311_0, not the linux-aarch64 one the lock names"
    )
    assert entry_problem(tmp_path, other) == "missing"


def test_a_view_left_by_a_killed_install_is_removed_by_the_next(tmp_path: Path) -> None:
    left = tmp_path / VIEWS / "tmpkilled"
    _extracted(left / NUMPY.dist, NUMPY)
    with view(tmp_path, []) as made:
        assert not left.exists() and made.path.is_dir()


def test_prune_keeps_the_entries_used_last(tmp_path: Path) -> None:
    old, recent = NUMPY, replace(NUMPY, sha256="cd" * 32, name="scipy")
    for facts in (old, recent):
        _entry(tmp_path, facts)
        (tmp_path / facts.sha256 / facts.dist / "lib" / "big").write_bytes(b"\0" * 100_000)
    os.utime(tmp_path / old.sha256 / MARKER, (1, 1))
    with view(tmp_path, [recent]):  # a use makes it recent
        pass
    assert prune(tmp_path, keep_bytes=150_000) > 100_000
    assert not (tmp_path / old.sha256).exists() and entry_problem(tmp_path, recent) is None
    assert prune(tmp_path, keep_bytes=150_000) == 0
