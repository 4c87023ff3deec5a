"""The engine's per-patient state: frozen values, replaced (never mutated) by each evaluation.

It holds what the rules need to remember: recent readings per vital type (sorted by measurement time, so late
and out-of-order arrivals land in their place), the open episodes, the vital checks still in play, when each
device was last heard from, and the ids of recently processed readings (redelivered events are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from processors.adherence import Slot
from processors.alerts import Direction, Rule, Severity

__all__ = ["DeviceState", "Episode", "PatientState", "Resolved", "Sample", "VitalState"]


@dataclass(frozen=True, slots=True)
class Sample:
    """A reading as the rules see it."""

    reading_id: UUID
    measured_at: datetime
    value: float

    @property
    def order(self) -> tuple[datetime, UUID]:
        """Readings sort by measurement time; simultaneous ones by id (any fixed order will do)."""
        return (self.measured_at, self.reading_id)


@dataclass(frozen=True, slots=True)
class Episode:
    """An open `vital_alerts` episode (resolved ones leave the state)."""

    alert_id: UUID
    direction: Direction
    severity: Severity
    rule: Rule
    retrospective: bool
    opened_at: datetime
    changed_at: datetime
    requirement_id: UUID
    requirement_version: int
    trigger_reading_ids: tuple[UUID, ...]
    value: float
    threshold: float | None
    # Set once the episode paged someone; the cooldown counts from here (in measurement time).
    last_notified_at: datetime | None
    revision: int
    # Symptom codes already flagged for this episode.
    symptoms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolved:
    """The span of an episode the engine resolved (or recorded whole, in the past), while it is in the window: a
    past episode overlapping it is already on record."""

    direction: Direction
    opened_at: datetime
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class VitalState:
    """One vital type of one patient."""

    samples: tuple[Sample, ...] = ()
    episodes: dict[Direction, Episode] = field(default_factory=dict)
    # Episodes resolved since the oldest reading of the window, oldest first.
    resolved: tuple[Resolved, ...] = ()
    slots: tuple[Slot, ...] = ()
    # Vital checks are generated up to this instant (window starts); None until the first generation.
    scheduled_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceState:
    last_measured_at: datetime | None = None
    # The silence already reported: the last_measured_at (or assignment start) it was measured from.
    reported_silence_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class PatientState:
    patient_id: UUID
    # When the engine first saw the patient (no check is scheduled, no silence counted, before it).
    started_at: datetime
    vitals: dict[int, VitalState] = field(default_factory=dict)
    devices: dict[UUID, DeviceState] = field(default_factory=dict)
    # As text: membership in a tuple of str is a C-speed scan.
    seen: tuple[str, ...] = ()
    # How many committed batches changed this state (the runners count; the engine does not look at it).
    version: int = 0
