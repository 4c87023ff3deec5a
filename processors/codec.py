"""The engine state as compressed JSON, for `processor_states` rows and the Faust table's changelog.

zlib at its fastest level: a state is mostly UUIDs and timestamps, about a quarter of its JSON once compressed.
Plain JSON (as stored before migration 0202) is still read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from processors.errors import StateError
from processors.state import PatientState

__all__ = ["FORMAT", "dump_state", "load_state"]

# Bumped when PatientState changes incompatibly (2: samples without a device, seen ids as text); a stored state of
# another format is rebuilt from the database.
FORMAT: Literal[2] = 2


@dataclass(frozen=True, slots=True)
class _Stored:
    format: Literal[2]
    state: PatientState


_ADAPTER: TypeAdapter[_Stored] = TypeAdapter(_Stored)


def dump_state(state: PatientState) -> bytes:
    return zlib.compress(_ADAPTER.dump_json(_Stored(FORMAT, state)), 1)


def load_state(raw: bytes | str) -> PatientState:
    """Reads back `dump_state` (key order and spacing may differ, as after a trip through jsonb).

    Raises `StateError` for another format or a corrupt value.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        return _ADAPTER.validate_json(data if data[:1] == b"{" else zlib.decompress(data)).state
    except zlib.error as exc:
        raise StateError(f"stored processor state is unreadable: {exc}") from exc
    except ValidationError as exc:
        raise StateError(f"stored processor state is unreadable: {exc.error_count()} errors") from exc
