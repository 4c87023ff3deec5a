"""The committed-reading event on the wire (docs/protocol.md) and ticks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from processors.errors import BadEventError
from processors.events import CommittedReading, Tick, decode_event, encode_event


def reading() -> CommittedReading:
    return CommittedReading(
        reading_id=uuid4(), organization_id=uuid4(), patient_id=uuid4(), device_id=uuid4(),
        vital_type="systolic_bp", vital_type_id=2, value=132.0, unit="mm[Hg]",
        measured_at=datetime(2026, 11, 25, 7, 0, 55, tzinfo=UTC),
        received_at=datetime(2026, 11, 25, 7, 1, 2, 301000, tzinfo=UTC),
    )  # fmt: skip


def test_the_protocol_example_decodes() -> None:
    raw = json.dumps(
        {
            "reading_id": "01a214e6-108d-7eae-8b3b-97f5a1352add",
            "organization_id": str(uuid4()), "patient_id": str(uuid4()), "device_id": str(uuid4()),
            "vital_type": "systolic_bp", "vital_type_id": 2, "value": 132, "unit": "mm[Hg]",
            "measured_at": "2026-11-25T07:00:55+00:00", "received_at": "2026-11-25T07:01:02.301+00:00",
        }
    )  # fmt: skip
    event = decode_event(raw)
    assert isinstance(event, CommittedReading)
    assert event.value == 132.0
    assert event.lateness.total_seconds() == pytest.approx(7.301)


def test_events_round_trip() -> None:
    r = reading()
    assert decode_event(encode_event(r)) == r
    tick = Tick(datetime(2026, 3, 8, 7, 30, tzinfo=UTC))
    assert decode_event(encode_event(tick)) == tick


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"tick": "2026-03-08T07:30:00"}',  # no offset
        json.dumps({**json.loads(encode_event(reading())), "extra": 1}).encode(),
        json.dumps({**json.loads(encode_event(reading())), "value": "132"}).encode(),
        json.dumps({**json.loads(encode_event(reading())), "measured_at": "2026-11-25T07:00:55"}).encode(),
    ],
)
def test_anything_else_is_a_bad_event(raw: bytes) -> None:
    with pytest.raises(BadEventError) as caught:
        decode_event(raw)
    assert not caught.value.retriable
