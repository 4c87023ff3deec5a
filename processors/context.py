"""Everything the engine needs to know about a patient besides its own state, and the engine's tuning."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from processors.requirements import Requirement
from processors.symptoms import SymptomRule

__all__ = ["AssignedDevice", "CareTeamMember", "EngineConfig", "PatientContext"]


@dataclass(frozen=True, slots=True)
class CareTeamMember:
    """A provider's user on the patient's care team over [started_at, ended_at)."""

    user_id: UUID
    role: str
    started_at: datetime
    ended_at: datetime | None = None

    def active_at(self, at: datetime) -> bool:
        return self.started_at <= at and (self.ended_at is None or at < self.ended_at)


@dataclass(frozen=True, slots=True)
class AssignedDevice:
    """A device assigned to the patient over [assigned_from, assigned_to)."""

    device_id: UUID
    serial: str
    assigned_from: datetime
    assigned_to: datetime | None = None

    def active_at(self, at: datetime) -> bool:
        return self.assigned_from <= at and (self.assigned_to is None or at < self.assigned_to)


@dataclass(frozen=True, slots=True)
class PatientContext:
    """The patient as the database describes it: zone, whether monitored, requirement versions, team, devices.

    `requirements` holds every version the engine may need (a late reading is judged by the version that was
    effective when it was measured). `monitored` is false without an active care plan: nothing is evaluated.
    """

    patient_id: UUID
    organization_id: UUID
    timezone: str
    monitored: bool
    requirements: tuple[Requirement, ...] = ()
    care_team: tuple[CareTeamMember, ...] = ()
    devices: tuple[AssignedDevice, ...] = ()
    symptom_rules: tuple[SymptomRule, ...] = ()

    def requirement_at(self, vital_type_id: int, at: datetime) -> Requirement | None:
        """The version of the requirement for `vital_type_id` that was effective at `at`."""
        for requirement in self.requirements:
            if requirement.vital_type_id == vital_type_id and requirement.covers(at):
                return requirement
        return None

    def versions(self, vital_type_id: int) -> Iterator[Requirement]:
        return (r for r in self.requirements if r.vital_type_id == vital_type_id)

    @property
    def vital_type_ids(self) -> tuple[int, ...]:
        return tuple(sorted({r.vital_type_id for r in self.requirements}))

    def recipients(self, at: datetime) -> tuple[UUID, ...]:
        """The users to notify about something that happened at `at`: the care team active then."""
        return tuple(sorted({m.user_id for m in self.care_team if m.active_at(at)}, key=str))

    def rules_for(self, vital_type_id: int) -> tuple[SymptomRule, ...]:
        return tuple(r for r in self.symptom_rules if r.vital_type_id == vital_type_id)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tuning knobs of the engine (the runners fill it from their settings)."""

    # A reading received later than this after its measurement never pages: its episode is retrospective.
    lateness_horizon: timedelta = timedelta(minutes=15)
    # An assigned device with no reading for this long is reported (once per silence).
    silent_after: timedelta = timedelta(hours=24)
    # Readings kept per vital type: at least this far back from the newest (rules may ask for more)...
    retention: timedelta = timedelta(hours=48)
    # ...and never more than this many.
    max_samples: int = 500
    # Reading ids remembered per patient to drop redelivered events.
    seen_ids: int = 512
    # Vital checks are scheduled this far ahead of the clock.
    schedule_ahead: timedelta = timedelta(hours=24)
    # A reading this long after a check's window still completes it, as 'late'.
    late_limit: timedelta = timedelta(hours=4)
    # Checks stay in the state (a backfill may still complete them) this long after their window.
    slot_retention: timedelta = timedelta(hours=48)
