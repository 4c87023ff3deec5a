"""Differences between the schema the migrations define and a live database's, and their report."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scripts.catalog import MULTILINE, QUERIES, Catalog


class Change(StrEnum):
    MISSING = "missing"  # defined by the migrations, absent from the live database
    UNEXPECTED = "unexpected"  # in the live database, defined by no migration
    CHANGED = "changed"  # both have it, with different definitions


@dataclass(frozen=True, slots=True)
class Drift:
    section: str
    name: str
    change: Change
    expected: str | None
    actual: str | None


def compare(expected: Catalog, actual: Catalog) -> list[Drift]:
    """Every difference, by section (in catalog order) then name."""
    drifts: list[Drift] = []
    sections = list(QUERIES) + sorted((set(expected.sections) | set(actual.sections)) - set(QUERIES))
    for section in sections:
        want = expected.sections.get(section, {})
        have = actual.sections.get(section, {})
        for name in sorted(set(want) | set(have)):
            if name not in have:
                drifts.append(Drift(section, name, Change.MISSING, want[name], None))
            elif name not in want:
                drifts.append(Drift(section, name, Change.UNEXPECTED, None, have[name]))
            elif want[name] != have[name]:
                drifts.append(Drift(section, name, Change.CHANGED, want[name], have[name]))
    return drifts


def render(drifts: Sequence[Drift]) -> str:
    """A readable report: one headline per difference, and what differs beneath a changed definition."""
    lines: list[str] = []
    for d in drifts:
        lines.append(f"{d.change.upper():<10} {d.section:<12} {d.name}")
        if d.change is Change.MISSING:
            lines.extend(_indent(f"expected: {d.expected}"))
        elif d.change is Change.UNEXPECTED:
            lines.extend(_indent(f"found:    {d.actual}"))
        elif d.section in MULTILINE:
            assert d.expected is not None and d.actual is not None
            diff = difflib.unified_diff(
                d.expected.splitlines(), d.actual.splitlines(), "migrations", "live", n=1, lineterm=""
            )
            lines.extend(f"    {line}" for line in diff)
        else:
            lines.append(f"    expected: {d.expected}")
            lines.append(f"    found:    {d.actual}")
    return "\n".join(lines)


def summary(drifts: Sequence[Drift]) -> str:
    """One line: how many differences of each kind, and in which sections."""
    by_change = {c: sum(d.change is c for d in drifts) for c in Change}
    sections: dict[str, int] = {}
    for d in drifts:
        sections[d.section] = sections.get(d.section, 0) + 1
    where = ", ".join(f"{section} {n}" for section, n in sections.items())
    return (
        f"{len(drifts)} difference(s): {by_change[Change.MISSING]} missing, {by_change[Change.UNEXPECTED]} "
        f"unexpected, {by_change[Change.CHANGED]} changed ({where})"
    )


def _indent(text: str, limit: int = 12) -> list[str]:
    """A definition shown in full up to `limit` lines."""
    shown = text.splitlines()
    more = len(shown) - limit
    return [f"    {line}" for line in shown[:limit]] + ([f"    ... ({more} more lines)"] if more > 0 else [])
