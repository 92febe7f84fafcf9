"""Unpacking archives without writing outside the target folder.

Archives are input, and input may be hostile: a member named `../../x` or `/etc/x`, a
symlink member that a later member is then written through, or a wheel entry point named
`../evil` would otherwise write wherever the build may write.

`confine` is the one check: a relative name under a folder, refusing absolute names, `..`,
NUL bytes, and any symlink on the way (the file itself included), so that nothing is ever
written through a link; the result is resolved and must lie inside the folder. The stand-in's
wheel converter, which reads zip members and writes them by hand (zipfile checks nothing
then), calls it for every member and entry point. `extract_tar` adds it to tarfile's
`data` extraction filter (Python 3.11.4+): the filter refuses links that point outside,
device files and odd permissions, and this check keeps every write off symlinks, which the
filters of Pythons before 3.11.13 do not (CVE-2025-4517: link chains longer than PATH_MAX).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from buildtool.common.errors import BuildToolError


class UnsafeArchiveMember(BuildToolError):
    """An archive member (or entry point) that would land outside its folder: bad input."""

    exit_code = 2

    def __init__(self, archive: object, member: str, reason: str) -> None:
        super().__init__(f"{archive}: member {member!r} refused: {reason}")
        self.archive = archive
        self.member = member
        self.reason = reason


def check_name(name: str, *, archive: object, member: str | None = None) -> list[str]:
    """The parts of a relative archive name; refuses absolute names, `..` and NUL bytes.

    `member` is what errors call the entry (default: `name`)."""
    member = name if member is None else member
    if "\0" in name:
        raise UnsafeArchiveMember(archive, member, "the name holds a NUL byte")
    if not name:
        raise UnsafeArchiveMember(archive, member, "the name is empty")
    if name.startswith("/"):
        raise UnsafeArchiveMember(archive, member, "the name is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveMember(archive, member, "the name climbs out of its folder with '..'")
    return parts


def confine(root: Path, name: str, *, archive: object, member: str | None = None) -> Path:
    """Where `name` goes under `root`, checked: relative, no `..`, no NUL, no symlink on the
    way (an existing symlink at the path itself included), and resolving inside `root`.

    Returns the resolved path. `archive` and `member` name the offender in errors."""
    member = name if member is None else member
    base = root.resolve()
    path = base
    for part in check_name(name, archive=archive, member=member):
        path = path / part
        if path.is_symlink():
            raise UnsafeArchiveMember(
                archive, member, f"it would be written through the symlink {path}"
            )
    if not path.resolve().is_relative_to(base):
        raise UnsafeArchiveMember(archive, member, f"it resolves outside {root}")
    return path


def extract_tar(
    tar: tarfile.TarFile, dest: Path, *, archive: object, skip_absolute_links: bool = False
) -> list[str]:
    """Extract every member of `tar` into `dest` with the `data` filter and `confine`.

    A refused member raises UnsafeArchiveMember before it is written; members before it
    stay in `dest`. `skip_absolute_links` leaves out symlinks to absolute paths instead of
    refusing them: a Debian package's links to the system's own files (`/etc/...`) would
    point at this host's files once unpacked here. Returns the names left out.
    """
    skipped: list[str] = []

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        confine(dest, member.name, archive=archive)
        if member.issym() and member.linkname.startswith("/") and skip_absolute_links:
            skipped.append(member.name)
            return None
        if member.islnk():  # a hard link's target is a member name: no link on its way
            confine(dest, member.linkname, archive=archive, member=member.name)
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as error:
            raise UnsafeArchiveMember(archive, member.name, str(error)) from None

    dest.mkdir(parents=True, exist_ok=True)
    tar.extractall(dest, filter=check)
    return skipped
