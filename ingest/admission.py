"""Judging one message: message-level checks, then each reading (type, unit, value, time, plausibility,
attribution), then cross-field rules. Pure: no I/O, time comes in as the message's `received_at`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, SafeUUID

from ingest.directory import DeviceRecord
from ingest.message import Message, ReadingInput, parse_timestamp, validate_message
from ingest.payload import decode_payload, parse_topic
from ingest.rejection import Rejection, RejectionReason
from ingest.units import UnitRegistry

# (systolic, diastolic) codes: at the same instant the diastolic pressure must be below the systolic one.
BLOOD_PRESSURE = ("systolic_bp", "diastolic_bp")


@dataclass(frozen=True, slots=True)
class Limits:
    """What ingest accepts; each is a setting."""

    max_payload_bytes: int = 64 * 1024
    max_meta_bytes: int = 4 * 1024
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as it arrived: topic, raw bytes and the arrival time from the injected clock."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Parsed:
    """A structurally valid message on a well-formed topic, not yet matched against the registry."""

    serial: str
    message: Message


@dataclass(frozen=True, slots=True)
class AcceptedReading:
    """A reading ready to store: canonical value, attributed to the patient at measured_at."""

    id: UUID
    organization_id: UUID
    patient_id: UUID
    device_id: UUID
    vital_type_id: int
    value: float
    original_value: float
    original_unit: str
    measured_at: datetime
    received_at: datetime
    message_id: str
    metadata: str
    reading_index: int

    @property
    def key(self) -> tuple[UUID, int, datetime]:
        """The reading's identity: (device, vital type, measured_at)."""
        return (self.device_id, self.vital_type_id, self.measured_at)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one message: readings to store and refusals (whole message, or one per reading)."""

    envelope: Envelope
    serial: str | None
    device: DeviceRecord | None
    message_id: str | None
    readings: tuple[AcceptedReading, ...]
    rejections: tuple[Rejection, ...]


def parse_envelope(envelope: Envelope, limits: Limits) -> Parsed | Rejection:
    """Topic, size, encoding, JSON and message structure: everything that needs no registry."""
    topic = parse_topic(envelope.topic)
    if topic is None or topic.kind != "readings":
        return Rejection(RejectionReason.BAD_TOPIC, f"not a readings topic: {envelope.topic}")
    decoded = decode_payload(envelope.payload, max_bytes=limits.max_payload_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    message = validate_message(decoded, max_meta_bytes=limits.max_meta_bytes)
    if isinstance(message, Rejection):
        return message
    return Parsed(topic.serial, message)


def judge(
    envelope: Envelope,
    parsed: Parsed | Rejection,
    device: DeviceRecord | None,
    units: UnitRegistry,
    limits: Limits,
) -> Verdict:
    """The verdict on one message, given its parse result and the device's registry record (None: unknown)."""
    if isinstance(parsed, Rejection):
        return Verdict(envelope, None, None, None, (), (parsed,))
    message = parsed.message
    if device is None:
        refusal = Rejection(RejectionReason.UNKNOWN_DEVICE, f"no device with serial {parsed.serial}")
        return Verdict(envelope, parsed.serial, None, message.message_id, (), (refusal,))
    if device.revoked:
        refusal = Rejection(RejectionReason.REVOKED_DEVICE, f"device {parsed.serial} is revoked")
        return Verdict(envelope, parsed.serial, device, message.message_id, (), (refusal,))
    received_at = envelope.received_at
    latest, earliest = received_at + limits.max_future, received_at - limits.max_age
    prefix = _id_prefix(received_at)
    accepted: list[AcceptedReading] = []
    rejections: list[Rejection] = []
    for index, reading in enumerate(message.readings):
        outcome = _judge_reading(index, reading, message, device, units, received_at, latest, earliest, prefix)
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            accepted.append(outcome)
    if len(accepted) > 1:
        accepted, cross = _cross_field(accepted, units)
        rejections.extend(cross)
        rejections.sort(key=lambda r: r.reading_index or 0)
    return Verdict(envelope, parsed.serial, device, message.message_id, tuple(accepted), tuple(rejections))


def _judge_reading(
    index: int,
    reading: ReadingInput,
    message: Message,
    device: DeviceRecord,
    units: UnitRegistry,
    received_at: datetime,
    latest: datetime,
    earliest: datetime,
    id_prefix: int,
) -> AcceptedReading | Rejection:
    """One reading's verdict; `latest`/`earliest` bound measured_at, `id_prefix` is the time part of its id."""
    vital = units.types.get(reading.type)
    if vital is None:
        return Rejection(RejectionReason.UNKNOWN_TYPE, f"unknown vital type {reading.type!r}", index)
    conversion = vital.units.get(reading.unit)
    if conversion is None:
        accepted = ", ".join(sorted(vital.units))
        return Rejection(
            RejectionReason.UNIT_MISMATCH, f"{vital.code} is not measured in {reading.unit!r} (use {accepted})", index
        )
    value = reading.value
    if type(value) is not float or not math.isfinite(value):
        checked = _as_float(value)
        if isinstance(checked, Rejection):
            return Rejection(checked.reason, checked.detail, index)
        value = checked
    stamped = parse_timestamp(reading.measured_at)
    if stamped is None:
        return Rejection(RejectionReason.BAD_TIMESTAMP, "measured_at is not RFC 3339 with an offset", index)
    # Compared before converting: year 1 at +14:00 or 9999-12-31 at -05:00 have no UTC datetime (year 0 / 10000).
    if stamped > latest:
        return Rejection(RejectionReason.FUTURE_TIMESTAMP, f"measured_at is {stamped - received_at} ahead", index)
    if stamped < earliest:
        return Rejection(RejectionReason.STALE_TIMESTAMP, f"measured_at is {received_at - stamped} old", index)
    measured_at = stamped if stamped.tzinfo is UTC else stamped.astimezone(UTC)
    canonical = vital.convert(value, conversion)
    if not math.isfinite(canonical):
        return Rejection(RejectionReason.OUT_OF_RANGE, f"{vital.code} overflows in {vital.canonical_unit}", index)
    if not vital.is_plausible(canonical):
        return Rejection(
            RejectionReason.IMPLAUSIBLE_VALUE,
            f"{vital.code} outside {vital.plausible_min:g}..{vital.plausible_max:g} {vital.canonical_unit}",
            index,
        )
    patient_id = device.patient_at(measured_at)
    if patient_id is None:
        return Rejection(
            RejectionReason.UNASSIGNED_DEVICE, f"device not assigned to a patient at {measured_at.isoformat()}", index
        )
    return AcceptedReading(
        _reading_id(id_prefix),
        device.organization_id,
        patient_id,
        device.id,
        vital.id,
        canonical,
        value,
        reading.unit,
        measured_at,
        received_at,
        message.message_id,
        message.metadata,
        index,
    )


def _as_float(value: int | float) -> float | Rejection:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return Rejection(RejectionReason.NON_FINITE, "value is not a finite number")
    try:
        return float(value)
    except OverflowError:
        return Rejection(RejectionReason.OUT_OF_RANGE, "integer value too large for a double")


def _cross_field(readings: list[AcceptedReading], units: UnitRegistry) -> tuple[list[AcceptedReading], list[Rejection]]:
    systolic, diastolic = (units.lookup(code) for code in BLOOD_PRESSURE)
    if systolic is None or diastolic is None:
        return readings, []
    by_instant: dict[datetime, dict[int, AcceptedReading]] = {}
    for reading in readings:
        if reading.vital_type_id in (systolic.id, diastolic.id):
            by_instant.setdefault(reading.measured_at, {}).setdefault(reading.vital_type_id, reading)
    refused: set[int] = set()
    rejections: list[Rejection] = []
    for pair in by_instant.values():
        high, low = pair.get(systolic.id), pair.get(diastolic.id)
        if high is not None and low is not None and low.value >= high.value:
            detail = f"diastolic {low.value:g} >= systolic {high.value:g} at the same instant"
            for reading in (high, low):
                refused.add(reading.reading_index)
                rejections.append(Rejection(RejectionReason.CROSS_FIELD, detail, reading.reading_index))
    if not refused:
        return readings, []
    return [r for r in readings if r.reading_index not in refused], rejections


def new_reading_id(at: datetime) -> UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds of `at`, version 7, variant, then random bits."""
    return _reading_id(_id_prefix(at))


def _id_prefix(at: datetime) -> int:
    """The UUIDv7 bits fixed by the time: 48-bit Unix milliseconds, then the version."""
    return ((int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76)


_UUID_NEW = object.__new__
_UUID_SET = object.__setattr__
_UNKNOWN_SAFETY = SafeUUID.unknown


def _reading_id(prefix: int) -> UUID:
    rand = random.getrandbits(74)
    value = prefix | ((rand >> 62) << 64) | (0b10 << 62) | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    # UUID(int=...) validates its arguments at length; the value is in range by construction, so set the two
    # slots the way UUID.__init__ does (tests/ingest/test_admission.py checks equality with UUID(int=...)).
    uuid = _UUID_NEW(UUID)
    _UUID_SET(uuid, "int", value)
    _UUID_SET(uuid, "is_safe", _UNKNOWN_SAFETY)
    return uuid
