"""The episodes a window of readings would have produced in measurement order, for one direction.

The engine judges each reading once, at its arrival. Late readings measured before an open episode may complete an
episode of their own in the past (opened by a breach, cleared by readings after it, all before the open episode),
which no single arrival would have opened. Replaying the window in measurement order with the rules the engine
applies (open on a breach, escalate on a more severe one, clear by hysteresis at readings, and by quiet time at the
ticks that would have come between readings) finds those spells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from processors.requirements import Requirement
from processors.rules import Breach, Track, breach_at, clears_at
from processors.state import Sample

__all__ = ["Spell", "calm_before", "spells"]


@dataclass(frozen=True, slots=True)
class Spell:
    """One episode of a replay, by window positions: where it opened (and by which breach), its escalations, and
    the last reading of the run that cleared it with the time it cleared (None: still open where the replay
    stopped)."""

    opened: int
    breach: Breach
    escalations: tuple[tuple[int, Breach], ...] = ()
    cleared: int | None = None
    resolved_at: datetime | None = None

    @property
    def breaches(self) -> tuple[Breach, ...]:
        return (self.breach, *(b for _, b in self.escalations))


def spells(
    t: Track,
    samples: Sequence[Sample],
    requirement: Requirement,
    span: tuple[int, int],
    until: datetime,
    stop: datetime,
) -> list[Spell]:
    """The episodes the readings at positions [start, end) (`span`; no episode is open at `start`) open, escalate
    and clear in measurement order, up to `until` (measured after them all), ending with the first position
    measured after `stop` at which none is open. A spell clears at a reading by the hysteresis rules, or, when back
    inside for `clear_minutes` before the next reading (or `until`), at the instant the quiet time was reached (a
    tick would have cleared it then)."""
    start, end = span
    found: list[Spell] = []
    current: Spell | None = None
    for j in range(start, end + 1):
        if current is None and j < end and samples[j].measured_at > stop:
            return found
        if current is not None and j > current.opened + 1:
            quiet = _quiet_clear(t, samples, j - 1, requirement, current, samples[j].measured_at if j < end else until)
            if quiet is not None:
                found.append(quiet)
                current = None
        if j == end:
            break
        breach = breach_at(t, samples, j, requirement)
        if breach is not None:
            if current is None:
                current = Spell(j, breach)
            elif breach.severity.rank > max(b.severity.rank for b in current.breaches):
                current = Spell(current.opened, current.breach, (*current.escalations, (j, breach)))
        elif current is not None and clears_at(
            t, samples, j, requirement, samples[current.opened].measured_at, samples[j].measured_at
        ):
            found.append(Spell(current.opened, current.breach, current.escalations, j, samples[j].measured_at))
            current = None
    if current is not None:
        found.append(current)
    return found


def _quiet_clear(
    t: Track, samples: Sequence[Sample], last: int, requirement: Requirement, spell: Spell, next_at: datetime
) -> Spell | None:
    """The spell cleared by quiet time if the run of inside readings ending at `last` reached `clear_minutes`
    before `next_at` (the next reading's time)."""
    if requirement.clear_minutes is None or not t.inside(last):
        return None
    after = samples[spell.opened].measured_at
    start = last
    while start > 0 and samples[start - 1].measured_at > after and t.inside(start - 1):
        start -= 1
    if samples[start].measured_at <= after:
        return None
    at = samples[start].measured_at + timedelta(minutes=requirement.clear_minutes)
    if at >= next_at:
        return None
    return Spell(spell.opened, spell.breach, spell.escalations, last, max(at, samples[last].measured_at))


def calm_before(t: Track, samples: Sequence[Sample], requirement: Requirement, index: int) -> int:
    """A position at or before `index` where a replay may start with no episode open: just after a run of
    readings inside (none breaching) long enough to clear any episode opened before it; 0 if none is known."""
    count = 0
    for q in range(index - 1, -1, -1):
        if not t.inside(q) or t.level(q) is not None:
            count = 0
            continue
        count += 1
        first, last = samples[q].measured_at, samples[q + count - 1].measured_at
        by_count = requirement.clears_by_count and count >= requirement.clear_count
        by_time = requirement.clear_minutes is not None and last - first >= timedelta(minutes=requirement.clear_minutes)
        if by_count or by_time:
            return q + count
    return 0
