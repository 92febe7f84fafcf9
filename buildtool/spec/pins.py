"""Pins that contradict each other, found before any solve.

A child spec and its parents may each pin one package; when no version can satisfy them
all, the solver's own message names neither file. This check names the later pin (the
spec being edited) and the earlier one it conflicts with, in one line.
"""

from __future__ import annotations

import re

from rattler import MatchSpec, Version, VersionSpec
from rattler.exceptions import InvalidVersionError

from buildtool.common import SpecError
from buildtool.spec.schema import Requirement


def _candidate_versions(requirements: list[Requirement]) -> list[Version]:
    """Versions that sit on or just past every bound the specs mention."""
    found = set()
    for req in requirements:
        version = MatchSpec(req.spec).version
        for token in re.findall(r"[0-9][0-9A-Za-z._+]*", str(version or "")):
            base = token.rstrip(".*")
            found.update({base, f"{base}.0.1", f"{base}.post1"})
    candidates = [Version("0"), Version("99999999")]
    for text in sorted(found):
        try:
            candidates.append(Version(text))
        except InvalidVersionError:  # a token that is not a version is no candidate
            continue
    return candidates


def _satisfiable(requirements: list[Requirement]) -> bool:
    """Whether one version can satisfy every requirement's version range."""
    specs = [VersionSpec(MatchSpec(r.spec).version or "*") for r in requirements]
    return any(all(s.matches(v) for s in specs) for v in _candidate_versions(requirements))


def check_pins(requirements: list[Requirement]) -> None:
    """Refuse specs of one package whose version ranges cannot all hold at once."""
    by_name: dict[str, list[Requirement]] = {}
    for req in requirements:
        if MatchSpec(req.spec).version is not None:
            by_name.setdefault(req.name, []).append(req)
    for versioned in by_name.values():
        if len(versioned) < 2 or _satisfiable(versioned):
            continue
        # Name the first pair that conflicts, so the message stays one line.
        for i, first in enumerate(versioned):
            for second in versioned[i + 1 :]:
                if not _satisfiable([first, second]):
                    # Blame the later one: a child spec is what is being edited.
                    where = f"{first.path}:{first.line}" if first.line else str(first.path)
                    raise SpecError(
                        second.path,
                        second.key,
                        f"contradictory pins: {second.spec!r} conflicts with "
                        f"{first.spec!r} ({where} {first.key})",
                        second.line,
                    )
        first = versioned[0]
        raise SpecError(
            first.path,
            first.key,
            "contradictory pins: no version satisfies "
            + ", ".join(repr(r.spec) for r in versioned),
            first.line,
        )
