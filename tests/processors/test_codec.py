"""Engine state survives JSON (the inline runner's jsonb rows, the Faust changelog)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from processors.codec import dump_state, load_state
from processors.errors import StateError
from processors.state import PatientState


def test_key_order_and_spacing_do_not_matter() -> None:
    state = PatientState(uuid4(), started_at=datetime(2026, 3, 5, tzinfo=UTC), seen=(uuid4(),))
    as_jsonb = json.dumps(dict(reversed(json.loads(dump_state(state)).items())), indent=2)
    assert load_state(as_jsonb) == state


@pytest.mark.parametrize("raw", [b'{"format": 0, "state": {}}', b"{}", b"garbage"])
def test_unreadable_state_is_a_state_error(raw: bytes) -> None:
    with pytest.raises(StateError):
        load_state(raw)
