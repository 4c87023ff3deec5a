"""Deduplication by identity (device, vital type, measured_at): within a batch, and against a bounded cache of
identities recently committed. The cache is only a fast path; the primary key in PostgreSQL is the guarantee."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ingest.admission import AcceptedReading, Verdict
from ingest.rejection import Rejection, RejectionReason

ReadingKey = tuple[UUID, int, datetime]


class RecentIdentities:
    """The values of the most recently committed identities, oldest evicted first (bounded)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: OrderedDict[ReadingKey, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: ReadingKey) -> float | None:
        return self._values.get(key)

    def remember(self, key: ReadingKey, value: float) -> None:
        """Records that `key` is stored with `value` (the stored row's value, which never changes)."""
        if self._capacity <= 0:
            return
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._capacity:
            self._values.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A refused reading of the message at `verdict_index` in the batch."""

    verdict_index: int
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Plan:
    """What a batch writes: new candidate rows (first occurrence of each identity), and what was set aside."""

    rows: tuple[AcceptedReading, ...]
    row_verdicts: tuple[int, ...]
    duplicates: int
    conflicts: tuple[Conflict, ...]


def conflict_rejection(reading: AcceptedReading, stored_value: float) -> Rejection:
    return Rejection(
        RejectionReason.CONFLICTING_DUPLICATE,
        f"identity already stored with value {stored_value:g}; this message says {reading.value:g}",
        reading.reading_index,
    )


def plan_batch(verdicts: Sequence[Verdict], recent: RecentIdentities) -> Plan:
    """Keeps the first reading of each identity in the batch; a repeat with the same (rounded) value is a
    duplicate, with another value a conflicting duplicate. Identities the cache knows are settled the same way."""
    rows: list[AcceptedReading] = []
    row_verdicts: list[int] = []
    first: dict[ReadingKey, float] = {}
    duplicates = 0
    conflicts: list[Conflict] = []
    for index, verdict in enumerate(verdicts):
        for reading in verdict.readings:
            key = reading.key
            known = first.get(key)
            if known is None:
                known = recent.get(key)
                if known is None:
                    first[key] = reading.value
                    rows.append(reading)
                    row_verdicts.append(index)
                    continue
            if known == reading.value:
                duplicates += 1
            else:
                conflicts.append(Conflict(index, conflict_rejection(reading, known)))
    return Plan(tuple(rows), tuple(row_verdicts), duplicates, tuple(conflicts))
