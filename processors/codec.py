"""The engine state as JSON, for the inline runner's `processor_states` rows and the Faust table's changelog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from processors.errors import StateError
from processors.state import PatientState

__all__ = ["FORMAT", "dump_state", "load_state"]

# Bumped when PatientState changes incompatibly; a stored state of another format is rebuilt from the database.
FORMAT: Literal[1] = 1


@dataclass(frozen=True, slots=True)
class _Stored:
    format: Literal[1]
    state: PatientState


_ADAPTER: TypeAdapter[_Stored] = TypeAdapter(_Stored)


def dump_state(state: PatientState) -> bytes:
    return _ADAPTER.dump_json(_Stored(FORMAT, state))


def load_state(raw: bytes | str) -> PatientState:
    """Reads back `dump_state` (key order and spacing may differ, as after a trip through jsonb).

    Raises `StateError` for another format or a corrupt value.
    """
    try:
        return _ADAPTER.validate_json(raw).state
    except ValidationError as exc:
        raise StateError(f"stored processor state is unreadable: {exc.error_count()} errors") from exc
