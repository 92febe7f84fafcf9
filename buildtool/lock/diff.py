"""What a re-lock changed, per image: packages added, removed, upgraded or downgraded."""

from __future__ import annotations

from dataclasses import dataclass

from rattler import Version

from buildtool.lock.lockfile import LockedPackage, LockFile
from compat.vocabulary import ROLES


@dataclass(frozen=True)
class Change:
    role: str
    platform: str
    name: str
    kind: str  # added | removed | upgraded | downgraded | rebuilt
    old: str | None
    new: str | None


def _label(p: LockedPackage | None) -> str | None:
    return f"{p.version} ({p.build})" if p else None


def _kind(old: LockedPackage | None, new: LockedPackage | None) -> str | None:
    if old is None:
        return "added"
    if new is None:
        return "removed"
    if old.hash.sha256 == new.hash.sha256:
        return None
    old_v, new_v = Version(old.version), Version(new.version)
    if new_v > old_v:
        return "upgraded"
    if new_v < old_v:
        return "downgraded"
    return "rebuilt"


def diff_locks(old: LockFile | None, new: LockFile) -> list[Change]:
    changes = []
    platforms = sorted(set(new.metadata.platforms) | set(old.metadata.platforms if old else []))
    for role in ROLES:
        for platform in platforms:
            before = {p.name: p for p in old.packages(role, platform)} if old else {}
            after = {p.name: p for p in new.packages(role, platform)}
            for name in sorted(before.keys() | after.keys()):
                kind = _kind(before.get(name), after.get(name))
                if kind:
                    changes.append(
                        Change(
                            role,
                            platform,
                            name,
                            kind,
                            _label(before.get(name)),
                            _label(after.get(name)),
                        )
                    )
    return changes


def diff_text(env: str, changes: list[Change]) -> str:
    if not changes:
        return f"{env}: lock unchanged"
    lines = [f"{env}: {len(changes)} change(s)"]
    for c in changes:
        versions = f"{c.old or '-'} -> {c.new or '-'}"
        lines.append(f"  {c.role:<8} {c.platform:<13} {c.kind:<10} {c.name} {versions}")
    return "\n".join(lines)


def diff_markdown(env: str, changes: list[Change]) -> str:
    out = [f"### Lock diff: `{env}`", ""]
    if not changes:
        return "\n".join([*out, "No package changed.", ""])
    for role in ROLES:
        rows = [c for c in changes if c.role == role]
        out += [f"#### {role} image", ""]
        if not rows:
            out += ["No change.", ""]
            continue
        out += ["| Package | Platform | Change | Old | New |", "|---|---|---|---|---|"]
        out += [
            f"| {c.name} | {c.platform} | {c.kind} | {c.old or '–'} | {c.new or '–'} |"
            for c in rows
        ]
        out.append("")
    return "\n".join(out)
