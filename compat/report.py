"""Render a :class:`compat.compare.Report` as a terminal table, Markdown or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from compat import rules
from compat.compare import Group, Mismatch, Report

HEADERS = ("Level", "Package")


def _version(version: str | None) -> str:
    return "None" if version is None else version


def _cell(groups: tuple[Group, ...]) -> str:
    if len(groups) == 1:
        return _version(groups[0].version)
    return ", ".join(f"{len(g.members)} at {_version(g.version)}" for g in groups)


def _row(report: Report, mismatch: Mismatch) -> list[str]:
    cells = [_cell(mismatch.columns[name]) for name in report.columns]
    return [mismatch.level, mismatch.package, *cells, ", ".join(mismatch.differs), mismatch.reason]


def _headers(report: Report) -> list[str]:
    return [*HEADERS, *report.columns, "Differs", "Why"]


def _one_sided(report: Report) -> dict[str, int]:
    """column -> how many packages only it has, of those distributed does not compare:
    a notebook's own packages (jupyterlab, ...) differ from its workers by design."""
    counts: dict[str, int] = {}
    for mismatch in report.warnings:
        column = only_in(mismatch)
        if column is not None and mismatch.package not in rules.ERROR_LEVEL:
            counts[column] = counts.get(column, 0) + 1
    return counts


def summary(report: Report) -> str:
    """One line: the counts of errors and warnings, the packages only one side has (not
    warnings: nothing compares them), and what was checked."""
    one_sided = _one_sided(report)
    errors, warnings = len(report.errors), len(report.warnings) - sum(one_sided.values())
    line = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    for column, count in one_sided.items():
        line += f", {count} package{'s' * (count != 1)} only in {column} (not compared)"
    if report.workers_checked is not None:
        line += f"; {report.workers_checked} workers checked"
    return line


def _split_workers(mismatch: Mismatch) -> str | None:
    """'48 workers at 4.3.2, 2 at None' when the workers disagree."""
    groups = mismatch.columns.get("workers", ())
    if len(groups) < 2:
        return None
    first, *rest = groups
    parts = [f"{len(first.members)} workers at {_version(first.version)}"]
    parts += [f"{len(g.members)} at {_version(g.version)}" for g in rest]
    return ", ".join(parts)


def only_in(mismatch: Mismatch) -> str | None:
    """The one column that has the package, when every other column lacks it.

    Tables list such packages on one line per column instead of a row each:
    a notebook has many packages that its workers do not need.
    """
    holders = [
        name
        for name, groups in mismatch.columns.items()
        if any(g.version is not None for g in groups)
    ]
    if len(holders) != 1 or any(g.version is None for g in mismatch.columns[holders[0]]):
        return None
    return holders[0]


def _table_rows(report: Report) -> list[Mismatch]:
    """Mismatches that get a row: all but one-sided packages distributed ignores."""
    return [m for m in report.mismatches if m.package in rules.ERROR_LEVEL or only_in(m) is None]


def _only_in_lines(report: Report) -> list[str]:
    by_column: dict[str, list[str]] = {}
    for mismatch in report.warnings:
        column = only_in(mismatch)
        if column is not None and mismatch.package not in rules.ERROR_LEVEL:
            version = mismatch.columns[column][0].version
            by_column.setdefault(column, []).append(f"{mismatch.package} {version}")
    return [
        f"only in {column} ({len(packages)}): {', '.join(packages)}"
        for column, packages in by_column.items()
    ]


def _details(report: Report) -> list[str]:
    """Plain sentences below the table: split workers, one-sided packages, departures, notes."""
    lines: list[str] = []
    for mismatch in report.mismatches:
        split = _split_workers(mismatch)
        if split is None:
            continue
        lines.append(f"{mismatch.package}: {split}")
        for group in mismatch.columns["workers"][1:]:
            addresses = ", ".join(group.members)
            lines.append(f"  at {_version(group.version)}: {addresses}")
    lines += _only_in_lines(report)
    if report.left:
        lines.append(f"left the cluster during the check: {', '.join(report.left)}")
    for address, reason in report.unanswered.items():
        lines.append(f"not checked: {address} ({reason})")
    lines += [f"note: {note}" for note in report.notes]
    return lines


def render_table(report: Report) -> str:
    """Aligned plain-text table for a terminal."""
    rows = [_headers(report)] + [_row(report, m) for m in _table_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"Package versions: {report.subject}"]
    if len(rows) > 1:
        for index, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
    elif not report.mismatches:
        lines.append("all package versions match")
    lines += _details(report)
    lines.append(summary(report))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: Report) -> str:
    """GitHub-flavoured Markdown for CI logs and pull requests."""
    lines = [f"### Package versions: {_md(report.subject)}", "", f"**{summary(report)}**"]
    if _table_rows(report):
        headers = _headers(report)
        lines.append("")
        lines.append("| " + " | ".join(_md(h) for h in headers) + " |")
        lines.append("|" + "---|" * len(headers))
        for mismatch in _table_rows(report):
            cells = _row(report, mismatch)
            cells[1] = f"`{cells[1]}`"
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    elif not report.mismatches:
        lines += ["", "All package versions match."]
    details = _details(report)
    if details:
        lines.append("")
        lines += [f"- {_md(line.strip())}" for line in details]
    return "\n".join(lines) + "\n"


def as_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return {
        "subject": report.subject,
        "ok": not report.errors,
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "columns": list(report.columns),
        "workers_checked": report.workers_checked,
        "workers_left": list(report.left),
        "workers_unanswered": dict(report.unanswered),
        "notes": list(report.notes),
        "mismatches": [
            {
                "package": m.package,
                "level": m.level,
                "reason": m.reason,
                "differs": list(m.differs),
                "columns": {
                    name: [
                        {"version": g.version, "count": len(g.members), "members": list(g.members)}
                        for g in groups
                    ]
                    for name, groups in m.columns.items()
                },
            }
            for m in report.mismatches
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table,
    "markdown": render_markdown,
    "json": render_json,
}


def render(report: Report, fmt: str) -> str:
    return RENDERERS[fmt](report)
