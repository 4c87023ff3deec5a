"""What the engine reacts to: a committed reading (docs/protocol.md's event) or a clock tick.

`ReadingMessage` is the wire model (pydantic, strict); the engine only ever sees the frozen `CommittedReading`.
A tick carries the runner's clock so that missed windows, silent devices and quiet-time clears are decided by
data, never by a call to the wall clock inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from processors.errors import BadEventError

__all__ = [
    "CommittedReading",
    "Event",
    "ReadingMessage",
    "Tick",
    "TickMessage",
    "decode_event",
    "encode_event",
]


@dataclass(frozen=True, slots=True)
class CommittedReading:
    """One stored reading of `vital_readings`, in the vital type's canonical unit."""

    reading_id: UUID
    organization_id: UUID
    patient_id: UUID
    device_id: UUID
    vital_type: str
    vital_type_id: int
    value: float
    unit: str
    measured_at: datetime
    received_at: datetime

    @property
    def lateness(self) -> timedelta:
        """How long after the measurement ingest received it."""
        return self.received_at - self.measured_at


@dataclass(frozen=True, slots=True)
class Tick:
    """The runner's clock reading `now` (for one patient, or for all of them)."""

    now: datetime


Event = CommittedReading | Tick


class ReadingMessage(BaseModel):
    """The committed-reading event as JSON (docs/protocol.md, 'Ingest -> processors')."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    reading_id: UUID
    organization_id: UUID
    patient_id: UUID
    device_id: UUID
    vital_type: Annotated[str, Field(min_length=2, max_length=41)]
    vital_type_id: Annotated[int, Field(ge=1, le=32767)]
    value: float
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    measured_at: AwareDatetime
    received_at: AwareDatetime

    def to_reading(self) -> CommittedReading:
        return CommittedReading(
            reading_id=self.reading_id,
            organization_id=self.organization_id,
            patient_id=self.patient_id,
            device_id=self.device_id,
            vital_type=self.vital_type,
            vital_type_id=self.vital_type_id,
            value=self.value,
            unit=self.unit,
            measured_at=self.measured_at,
            received_at=self.received_at,
        )


class TickMessage(BaseModel):
    """A tick on the readings topic (Faust runner): `{"tick": "<RFC 3339>"}`, keyed by patient id."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    tick: AwareDatetime


def decode_event(raw: bytes | str) -> Event:
    """Parses a JSON reading event or tick; raises `BadEventError` (not retriable) on anything else."""
    try:
        if (b'"tick"' in raw) if isinstance(raw, bytes) else ('"tick"' in raw):
            return Tick(TickMessage.model_validate_json(raw).tick)
        return ReadingMessage.model_validate_json(raw).to_reading()
    except ValidationError as exc:
        raise BadEventError(str(exc.errors(include_url=False, include_input=False))[:500]) from exc


def encode_event(event: Event) -> bytes:
    """The JSON form of an event, as ingest's relay and the tick producer put it on the topic."""
    if isinstance(event, Tick):
        return TickMessage(tick=event.now).model_dump_json().encode()
    return (
        ReadingMessage(
            reading_id=event.reading_id,
            organization_id=event.organization_id,
            patient_id=event.patient_id,
            device_id=event.device_id,
            vital_type=event.vital_type,
            vital_type_id=event.vital_type_id,
            value=event.value,
            unit=event.unit,
            measured_at=event.measured_at,
            received_at=event.received_at,
        )
        .model_dump_json()
        .encode()
    )
