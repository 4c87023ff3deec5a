"""The chaos table: one row per scenario, notes underneath."""

from __future__ import annotations

from collections.abc import Sequence

from scripts.chaos.scenarios import Row

HEADER = ("scenario", "load", "faults", "lost", "duplicated", "recovery", "result")


def _cells(row: Row) -> tuple[str, ...]:
    def number(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    recovery = "not settled" if row.recovery_s is None else f"{row.recovery_s:.1f}s"
    return (row.scenario, row.load, row.faults, number(row.lost), number(row.duplicated), recovery,
            "ok" if row.ok else "FAIL")  # fmt: skip


def render(rows: Sequence[Row]) -> str:
    table = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    for row in rows:
        lines.extend(f"  {row.scenario}: {note}" for note in row.notes)
    return "\n".join(lines)
