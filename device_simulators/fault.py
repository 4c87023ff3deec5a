"""Fault injection: each fault switchable, deterministic with a seed, counted, and with its expected verdict.

`inject` rewrites one device's clean message stream. Every produced envelope names its fault and carries what
ingest (or the broker) must conclude, from docs/protocol.md:

| fault | what the device does | expected |
| --- | --- | --- |
| duplicate | publishes the same message twice in a row (a QoS 1 retry) | the repeat adds nothing |
| replay | re-sends an earlier message much later | adds nothing |
| out_of_order | sends two consecutive messages in swapped order | both stored |
| late_batch | is offline for a while, then uploads every stored reading in one message | all stored |
| clock_skew | its clock runs ahead by `skew` | future_timestamp per reading ahead of its arrival by > 5 min |
| wrong_unit | reports one reading in another vital's unit | unit_mismatch for that reading, the rest stored |
| malformed | sends a broken payload (one of several kinds, in turn) | the message refused with its reason |
| oversized | sends a payload over the 64 KiB limit | payload_too_large |
| foreign_topic | publishes on another device's topic | the broker refuses it (PUBACK 0x87) |

A verdict that depends on the arrival time (clock skew: a skewed reading is in the future only if it arrives
before its skewed time, as a live device's does, not in a backfill sent a day later) is the verdict for arrival
at `send_at`; `Envelope.on_arrival` re-judges it for the actual arrival, and the player counts that one.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from device_simulators.message import (
    MAX_PAYLOAD_BYTES,
    Envelope,
    Expected,
    Message,
    Reading,
    readings_topic,
    timestamp_reason,
)
from device_simulators.vitals import SPECS, WRONG_UNITS, VitalType


class FaultKind(StrEnum):
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    OUT_OF_ORDER = "out_of_order"
    LATE_BATCH = "late_batch"
    CLOCK_SKEW = "clock_skew"
    WRONG_UNIT = "wrong_unit"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    FOREIGN_TOPIC = "foreign_topic"


class Malformation(StrEnum):
    """The kinds of broken payload, produced in this order, and the rejection reason of each."""

    TRUNCATED = "truncated"
    NOT_UTF8 = "not_utf8"
    NAN_TOKEN = "nan_token"
    DUPLICATE_KEY = "duplicate_key"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    EXTRA_FIELD = "extra_field"
    MISTYPED_VALUE = "mistyped_value"
    BAD_MESSAGE_ID = "bad_message_id"
    NO_READINGS = "no_readings"
    TOO_MANY_READINGS = "too_many_readings"


MALFORMATION_REASON: dict[Malformation, str] = {
    Malformation.TRUNCATED: "invalid_json",
    Malformation.NOT_UTF8: "not_utf8",
    Malformation.NAN_TOKEN: "invalid_json",
    Malformation.DUPLICATE_KEY: "invalid_json",
    Malformation.NOT_OBJECT: "not_object",
    Malformation.MISSING_FIELD: "invalid_message",
    Malformation.EXTRA_FIELD: "invalid_message",
    Malformation.MISTYPED_VALUE: "invalid_message",
    Malformation.BAD_MESSAGE_ID: "bad_message_id",
    Malformation.NO_READINGS: "bad_reading_count",
    Malformation.TOO_MANY_READINGS: "bad_reading_count",
}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Per-message probability of each fault (0 switches it off), plus the knobs some faults need.

    Attributes:
        offline: how long a late-batch device stays offline before uploading its backlog.
        skew: how far a skewed device clock runs ahead (negative: behind).
        replay_after: how many messages later a replayed message is re-sent.
    """

    rates: dict[FaultKind, float] = field(default_factory=dict)
    offline: timedelta = timedelta(hours=24)
    # Not whole minutes: scenarios measure at whole minutes (re-checks 20 min apart), and a reading moved exactly
    # onto another one's time is a different verdict (conflicting_duplicate), not a clock-skew one.
    skew: timedelta = timedelta(minutes=20, milliseconds=317)
    replay_after: int = 5

    @classmethod
    def every(cls, rate: float, **knobs: timedelta | int) -> FaultPlan:
        """The same rate for every fault."""
        return cls(rates=dict.fromkeys(FaultKind, rate), **knobs)  # type: ignore[arg-type]

    def rate(self, kind: FaultKind) -> float:
        return self.rates.get(kind, 0.0)


@dataclass(slots=True)
class Injection:
    """The rewritten stream and how many times each fault was produced."""

    envelopes: list[Envelope]
    counts: Counter[FaultKind] = field(default_factory=Counter)


def _with(env: Envelope, fault: FaultKind, payload: bytes, expected: Expected, **changes: object) -> Envelope:
    return replace(env, payload=payload, expected=expected, fault=fault.value, **changes)  # type: ignore[arg-type]


def malformed_payload(message: Message, kind: Malformation) -> bytes:
    """A payload broken in exactly one way (every other part follows the protocol)."""
    body = message.to_wire()
    match kind:
        case Malformation.TRUNCATED:
            raw = message.encode()
            return raw[: max(1, len(raw) // 2)]
        case Malformation.NOT_UTF8:
            return message.encode().replace(b'"message_id":"', b'"message_id":"\xff\xfe', 1)
        case Malformation.NAN_TOKEN:
            body["readings"][0]["value"] = float("nan")
            return json.dumps(body, separators=(",", ":")).encode()
        case Malformation.DUPLICATE_KEY:
            text = message.encode().decode()
            return ('{"message_id":"dup",' + text[1:]).encode()
        case Malformation.NOT_OBJECT:
            return json.dumps(body["readings"], separators=(",", ":")).encode()
        case Malformation.MISSING_FIELD:
            del body["readings"][0]["unit"]
        case Malformation.EXTRA_FIELD:
            body["patient_name"] = "not allowed here"
        case Malformation.MISTYPED_VALUE:
            body["readings"][0]["value"] = str(body["readings"][0]["value"])
        case Malformation.BAD_MESSAGE_ID:
            body["message_id"] = "bad id/with spaces"
        case Malformation.NO_READINGS:
            body["readings"] = []
        case Malformation.TOO_MANY_READINGS:
            body["readings"] = body["readings"] * (501 // len(body["readings"]) + 1)
    return json.dumps(body, separators=(",", ":")).encode()


def oversized_payload(message: Message) -> bytes:
    """A valid message padded with JSON whitespace to one byte over the limit: refused on size alone."""
    raw = message.encode()
    pad = MAX_PAYLOAD_BYTES + 1 - len(raw)
    return raw[:-1] + b" " * max(pad, 0) + raw[-1:]


def _skewed(message: Message, skew: timedelta) -> Message:
    return replace(
        message,
        readings=tuple(replace(r, measured_at=r.measured_at + skew) for r in message.readings),
        sent_at=None if message.sent_at is None else message.sent_at + skew,
    )


def _skew_verdict(message: Message, received_at: datetime) -> Expected:
    return Expected(reading_reasons=tuple(timestamp_reason(r.measured_at, received_at) for r in message.readings))


def _wrong_unit(message: Message, rng: random.Random) -> tuple[Message, Expected]:
    index = rng.randrange(len(message.readings))
    reading = message.readings[index]
    vital = _vital_of(reading.type)
    readings = list(message.readings)
    readings[index] = replace(reading, unit=WRONG_UNITS[vital])
    reasons: list[str | None] = [None] * len(readings)
    reasons[index] = "unit_mismatch"
    # Diastolic >= systolic refuses both; a refused reading takes no part in that check.
    return replace(message, readings=tuple(readings)), Expected(reading_reasons=tuple(reasons))


def _vital_of(type_name: str) -> VitalType:
    for vital, spec in SPECS.items():
        if type_name in (vital.value, spec.loinc):
            return vital
    raise KeyError(type_name)


def _late_batch(serial: str, backlog: Sequence[Envelope], upload_at: datetime, seq: int) -> Envelope:
    readings: list[Reading] = []
    for env in backlog:
        assert env.message is not None
        readings.extend(env.message.readings)
    first = backlog[0].message
    assert first is not None
    message = Message(
        message_id=f"{serial}:batch:{seq}",
        readings=tuple(readings[:500]),
        sent_at=upload_at,
        meta={"seq": seq, "batch_of": len(backlog), **{k: v for k, v in first.meta.items() if k != "seq"}},
    )
    return Envelope(
        serial=serial,
        topic=readings_topic(serial),
        payload=message.encode(),
        seq=seq,
        send_at=upload_at,
        expected=Expected(reading_reasons=(None,) * len(message.readings)),
        fault=FaultKind.LATE_BATCH.value,
        message=message,
    )


def inject(
    stream: Sequence[Envelope],
    plan: FaultPlan,
    *,
    seed: int = 0,
    foreign_serial: str | None = None,
    key: str | None = None,
) -> Injection:
    """Applies the plan to one device's clean stream (ordered by send time) and counts what it produced.

    Each message draws each fault independently, in the order of FaultKind; a message takes at most one of the
    faults that change its content (the first drawn). `foreign_serial` is the device whose topic a
    foreign-topic fault publishes on (no such fault without one). The random draws depend on the seed and
    `key` (default: the device's serial, so each device of a fleet gets its own faults).
    """
    rng = random.Random(f"faults:{seed}:{key if key is not None else (stream[0].serial if stream else '')}")
    result = Injection(envelopes=[])
    out = result.envelopes
    malformations = list(Malformation)
    sent: list[Envelope] = []
    replays: list[tuple[int, Envelope]] = []
    backlog: list[Envelope] = []
    offline_until: datetime | None = None
    next_seq = max((e.seq for e in stream), default=0) + 1
    i = 0
    while i < len(stream):
        env = stream[i]
        i += 1
        assert env.message is not None
        for due, old in [r for r in replays if r[0] <= i]:
            replays.remove((due, old))
            out.append(
                replace(
                    old, send_at=env.send_at, expected=replace(old.expected, repeat=True), fault=FaultKind.REPLAY.value
                )
            )
            result.counts[FaultKind.REPLAY] += 1
        # A late batch: the device keeps measuring while offline, then uploads everything in one message.
        if offline_until is not None:
            if env.message.readings[0].measured_at < offline_until and len(backlog) < 100:
                backlog.append(env)
                continue
            out.append(_late_batch(env.serial, backlog, env.send_at, next_seq))
            next_seq += 1
            result.counts[FaultKind.LATE_BATCH] += 1
            backlog, offline_until = [], None
        drawn = [k for k in FaultKind if rng.random() < plan.rate(k)]
        if FaultKind.LATE_BATCH in drawn:
            offline_until = env.message.readings[0].measured_at + plan.offline
            backlog = [env]
            continue
        content = next((k for k in drawn if k in _CONTENT_FAULTS), None)
        if content is FaultKind.FOREIGN_TOPIC and foreign_serial is None:
            content = None
        produced = env
        if content is FaultKind.CLOCK_SKEW:
            message = _skewed(env.message, plan.skew)
            produced = _with(env, content, message.encode(), _skew_verdict(message, env.send_at), message=message)
        elif content is FaultKind.WRONG_UNIT:
            message, expected = _wrong_unit(env.message, rng)
            produced = _with(env, content, message.encode(), expected, message=message)
        elif content is FaultKind.MALFORMED:
            kind = malformations[result.counts[FaultKind.MALFORMED] % len(malformations)]
            produced = _with(
                env, content, malformed_payload(env.message, kind), Expected(message_reason=MALFORMATION_REASON[kind])
            )
        elif content is FaultKind.OVERSIZED:
            produced = _with(env, content, oversized_payload(env.message), Expected(message_reason="payload_too_large"))
        elif content is FaultKind.FOREIGN_TOPIC:
            assert foreign_serial is not None
            produced = _with(
                env, content, env.payload, Expected(broker_denied=True), topic=readings_topic(foreign_serial)
            )
        if content is not None:
            result.counts[content] += 1
        if FaultKind.OUT_OF_ORDER in drawn and i < len(stream) and content is None:
            following = stream[i]
            i += 1
            # The next message overtakes this one, which arrives just after it (a retry from a slow queue).
            out.append(replace(following, fault=FaultKind.OUT_OF_ORDER.value))
            result.counts[FaultKind.OUT_OF_ORDER] += 1
            produced = replace(produced, send_at=following.send_at + timedelta(seconds=1))
        out.append(produced)
        sent.append(produced)
        if FaultKind.DUPLICATE in drawn:
            out.append(_with(produced, FaultKind.DUPLICATE, produced.payload, _repeat(produced.expected)))
            result.counts[FaultKind.DUPLICATE] += 1
        if FaultKind.REPLAY in drawn and content is None:
            replays.append((i + plan.replay_after, produced))
    if backlog:
        assert backlog[-1].message is not None
        out.append(_late_batch(backlog[0].serial, backlog, backlog[-1].send_at + plan.offline / 2, next_seq))
        result.counts[FaultKind.LATE_BATCH] += 1
    for _, old in replays:
        out.append(replace(old, expected=replace(old.expected, repeat=True), fault=FaultKind.REPLAY.value))
        result.counts[FaultKind.REPLAY] += 1
    return result


_CONTENT_FAULTS = (
    FaultKind.CLOCK_SKEW,
    FaultKind.WRONG_UNIT,
    FaultKind.MALFORMED,
    FaultKind.OVERSIZED,
    FaultKind.FOREIGN_TOPIC,
)


def _repeat(expected: Expected) -> Expected:
    """A byte-identical repeat: refused again for the same reasons, or adds nothing when it was stored."""
    if expected.message_reason is not None or expected.broker_denied:
        return expected
    return replace(expected, repeat=True)
