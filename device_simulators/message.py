"""Messages on the wire (docs/protocol.md) and the verdict the simulator expects ingest to reach on each."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_READINGS = 500
# Ingest's time limits on measured_at, relative to the message's arrival (docs/protocol.md).
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_AGE = timedelta(days=30)
TIME_REASONS = frozenset({"future_timestamp", "stale_timestamp"})


def readings_topic(serial: str) -> str:
    return f"devices/{serial}/readings"


def status_topic(serial: str) -> str:
    return f"devices/{serial}/status"


def format_timestamp(at: datetime) -> str:
    """RFC 3339 with an explicit offset and millisecond precision, as devices send it."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("device timestamps carry an offset; got a naive datetime")
    text = at.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value as the device reports it (its own unit, its own clock)."""

    type: str
    value: float
    unit: str
    measured_at: datetime

    def to_wire(self) -> dict[str, Any]:
        value: float | int = int(self.value) if float(self.value).is_integer() else self.value
        return {"type": self.type, "value": value, "unit": self.unit, "measured_at": format_timestamp(self.measured_at)}


@dataclass(frozen=True, slots=True)
class Message:
    """A readings message: `meta.seq` numbers the device's messages so loss and repeats can be counted."""

    message_id: str
    readings: tuple[Reading, ...]
    sent_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message_id": self.message_id}
        if self.sent_at is not None:
            body["sent_at"] = format_timestamp(self.sent_at)
        body["readings"] = [r.to_wire() for r in self.readings]
        if self.meta:
            body["meta"] = self.meta
        return body

    def encode(self) -> bytes:
        return json.dumps(self.to_wire(), separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Expected:
    """What ingest must conclude about a message.

    Attributes:
        message_reason: the `rejection_reason` refusing the whole message, or None when it is parsed.
        reading_reasons: for a parsed message, one entry per reading: None when stored, else its reason.
        broker_denied: the broker refuses it (a device publishing on another device's topic); ingest never sees it.
        repeat: every reading repeats an identity sent before with the same value, so nothing new is stored.
    """

    message_reason: str | None = None
    reading_reasons: tuple[str | None, ...] = ()
    broker_denied: bool = False
    repeat: bool = False

    @property
    def stored(self) -> int:
        """Readings this message adds to `vital_readings`."""
        if self.broker_denied or self.repeat or self.message_reason is not None:
            return 0
        return sum(reason is None for reason in self.reading_reasons)


def timestamp_reason(measured_at: datetime, received_at: datetime) -> str | None:
    """Ingest's verdict on a measurement time for a message arriving at `received_at` (None: in range)."""
    if measured_at > received_at + FUTURE_TOLERANCE:
        return "future_timestamp"
    if measured_at < received_at - MAX_AGE:
        return "stale_timestamp"
    return None


def accepted(count: int) -> Expected:
    return Expected(reading_reasons=(None,) * count)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One MQTT publish: who sends it, where, the exact bytes, and the expected verdict.

    `fault` names the injected fault (None for a clean message); `message` is the message in the payload, when
    the payload is one, so tests can compare a faulty message with what the device really measured.

    `expected` is the verdict on the message arriving when it is sent (`send_at`, as a live device's would).
    Ingest judges measurement times against the actual arrival, so a message played later (a backfill published
    at once) may be judged otherwise: `on_arrival` gives the verdict for the time it really arrives.
    """

    serial: str
    topic: str
    payload: bytes
    seq: int
    send_at: datetime
    expected: Expected
    fault: str | None = None
    message: Message | None = None

    def on_arrival(self, received_at: datetime) -> Expected:
        """The verdict on this message arriving at `received_at`: the time checks (future, stale) judged anew for
        each reading that no earlier check refuses, everything else as expected."""
        expected = self.expected
        if self.message is None or expected.broker_denied or expected.message_reason is not None:
            return expected
        reasons = tuple(
            timestamp_reason(r.measured_at, received_at) if reason is None or reason in TIME_REASONS else reason
            for r, reason in zip(self.message.readings, expected.reading_reasons, strict=True)
        )
        return expected if reasons == expected.reading_reasons else replace(expected, reading_reasons=reasons)


def envelope(serial: str, seq: int, message: Message, send_at: datetime) -> Envelope:
    """A clean message from `serial`, expected to be stored whole."""
    return Envelope(
        serial=serial,
        topic=readings_topic(serial),
        payload=message.encode(),
        seq=seq,
        send_at=send_at,
        expected=accepted(len(message.readings)),
        message=message,
    )


def shift(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)
