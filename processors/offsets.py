"""Whether a Faust worker's batch continues each source partition where processing must go on (pure).

Faust can drop records it had buffered while its fetch position moves on (faust-streaming PR 217; seen here after a
restart), and its offset bookkeeping then commits past them: it only refuses to commit over a gap at the head when
the group has committed before on that partition. A dropped reading would be a lost alert, so the worker checks
every batch against the offsets it expects and exits for a restart on a gap (`processors.faust_app`).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass

__all__ = ["Gap", "find_gap", "start_offset"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Records `first` .. `received - 1` of `partition` were skipped: `received` came instead."""

    partition: int
    first: int
    received: int


def start_offset(committed: int | None, earliest: int) -> int:
    """The offset a partition's processing starts at after an assignment: the group's committed offset, or, where
    the group never committed (None or negative) or retention removed it, the partition's first record
    (`consumer_auto_offset_reset="earliest"`). Never the first record a fetch happens to return: after a kill
    before the first commit, the records Faust drops at start-up would be skipped unnoticed."""
    if committed is None or committed < earliest:
        return earliest
    return committed


def find_gap(records: Iterable[tuple[int, int]], expected: MutableMapping[int, int]) -> Gap | None:
    """Checks `records` ((partition, offset), in delivery order) against `expected` (partition -> the offset the
    next record must have; every partition of `records` present) and advances it. A record at or below the
    expected offset is a redelivery (judged idempotently), not a gap."""
    for partition, offset in records:
        want = expected[partition]
        if offset > want:
            return Gap(partition, want, offset)
        expected[partition] = max(want, offset + 1)
    return None
