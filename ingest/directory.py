"""The device registry as ingest sees it: status and assignment history, for attribution by time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Assignment:
    """The device belonged to `patient_id` during [start, end); end None means still assigned."""

    patient_id: UUID
    start: datetime
    end: datetime | None

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: UUID
    organization_id: UUID
    serial: str
    revoked: bool
    assignments: tuple[Assignment, ...]

    def patient_at(self, at: datetime) -> UUID | None:
        """The patient the device was assigned to at `at`, or None (assignments never overlap)."""
        for assignment in self.assignments:
            if assignment.covers(at):
                return assignment.patient_id
        return None


DeviceDirectory = Mapping[str, DeviceRecord]
"""Devices by serial."""
