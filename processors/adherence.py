"""Vital checks (`scheduled_events` of kind vital_check) and their outcomes (`adherence_records`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from uuid import UUID

__all__ = ["AdherenceChange", "CheckStatus", "Slot"]


class CheckStatus(StrEnum):
    """PostgreSQL enum `scheduled_event_status` (the outcomes are also `adherence_status`)."""

    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    LATE = "late"
    PARTIAL = "partial"
    MISSED = "missed"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        """Outcomes only ever improve (a backfill completes a missed check); replays must not undo that."""
        return _RANK[self]


_RANK = {
    CheckStatus.SCHEDULED: 0,
    CheckStatus.CANCELLED: 0,
    CheckStatus.MISSED: 1,
    CheckStatus.PARTIAL: 2,
    CheckStatus.LATE: 3,
    CheckStatus.COMPLETED: 4,
}


@dataclass(frozen=True, slots=True)
class Slot:
    """One expected measurement: a window around a local wall-clock time, or a whole local day (a quota).

    `key` is the scheduled event's idempotency key: 'vital_check:<patient>:<type code>:<local date>T<HH:MM>'.
    """

    slot_id: UUID
    key: str
    requirement_id: UUID
    requirement_version: int
    vital_type_id: int
    vital_type: str
    timezone: str
    local_date: date
    local_time: time
    scheduled_for: datetime
    window_start: datetime
    window_end: datetime
    expected_count: int
    # A whole local day expecting `expected_count` readings (expected_per_day without expected_times).
    quota: bool
    status: CheckStatus = CheckStatus.SCHEDULED
    received_count: int = 0
    reading_id: UUID | None = None
    reading_measured_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdherenceChange:
    """A vital check was scheduled, resolved (completed/late/partial/missed), improved, or cancelled."""

    organization_id: UUID
    patient_id: UUID
    slot: Slot
    changed_at: datetime
