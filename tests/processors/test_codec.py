"""Engine state survives JSON (the inline runner's jsonb rows, the Faust changelog)."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from processors.alerts import Direction
from processors.codec import dump_state, load_state
from processors.errors import StateError
from processors.state import PatientState, Resolved, Sample, VitalState


def test_states_round_trip_compressed_and_plain_json_of_any_key_order_is_read() -> None:
    state = PatientState(uuid4(), started_at=datetime(2026, 3, 5, tzinfo=UTC), seen=(str(uuid4()),))
    stored = dump_state(state)
    assert load_state(stored) == state
    plain = json.loads(zlib.decompress(stored))
    assert load_state(json.dumps(dict(reversed(plain.items())), indent=2)) == state


def test_resolved_spans_round_trip_and_a_state_stored_before_them_reads_as_none() -> None:
    at = datetime(2026, 3, 5, tzinfo=UTC)
    vital = VitalState(samples=(Sample(uuid4(), at, 80.0),), resolved=(Resolved(Direction.HIGH, at, at),))
    state = PatientState(uuid4(), started_at=at, vitals={1: vital})
    stored = dump_state(state)
    assert load_state(stored) == state
    plain = json.loads(zlib.decompress(stored))
    del plain["state"]["vitals"]["1"]["resolved"]
    assert load_state(json.dumps(plain)).vitals[1] == VitalState(samples=vital.samples)


@pytest.mark.parametrize("raw", [b'{"format": 1, "state": {}}', b"{}", b"garbage"])
def test_unreadable_state_is_a_state_error(raw: bytes) -> None:
    with pytest.raises(StateError):
        load_state(raw)
