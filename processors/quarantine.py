"""Poison isolation: a patient whose events fail deterministically never blocks the others.

A batch that fails for a reason retrying cannot fix (`processors.failures.is_retriable` is False) is bisected by
patient, each half in its own transaction, until the patients whose events still fail alone are found; their
events are set aside in `processor_quarantine` (with the error's class, SQLSTATE and message) and everything else
commits. The runner then acknowledges the whole batch (outbox row deleted, Kafka offset committed). A retriable
failure at any point propagates: the runner retries the batch as before, and what already committed is recognised
on the retry (outputs are idempotent, states versioned).

`python -m processors quarantine retry` evaluates the set-aside events again once the cause is fixed
(`processors.quarantine_cli`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from processors.errors import ProcessorError
from processors.events import CommittedReading, Event, Tick, decode_event, encode_event
from processors.failures import describe, is_retriable

__all__ = ["Quarantined", "event_key", "in_retry_order", "isolate", "list_quarantined", "mark_resolved", "set_aside"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Batch = Mapping[UUID, Sequence[Event]]
SetAside = Callable[[UUID, Sequence[Event], BaseException], Awaitable[None]]

_MESSAGE_MAX = 2_000
_SET_ASIDE = """
INSERT INTO processor_quarantine AS q (organization_id, patient_id, event_key, event, error_class, sqlstate,
                                       error_message)
SELECT p.organization_id, p.id, e.key, e.event::jsonb, $4, $5, $6
  FROM patients p, unnest($2::text[], $3::text[]) AS e (key, event)
 WHERE p.id = $1
ON CONFLICT (patient_id, event_key) DO UPDATE
   SET event = EXCLUDED.event, error_class = EXCLUDED.error_class, sqlstate = EXCLUDED.sqlstate,
       error_message = EXCLUDED.error_message, attempts = q.attempts + 1, failed_at = now(), resolved_at = NULL
"""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One set-aside event (a row of `processor_quarantine`)."""

    id: int
    organization_id: UUID
    patient_id: UUID
    event_key: str
    event: Event
    error_class: str
    sqlstate: str | None
    error_message: str
    attempts: int
    quarantined_at: datetime
    failed_at: datetime
    resolved_at: datetime | None


def event_key(event: Event) -> str:
    """The event's identity in quarantine: its reading id, or 'tick' (a patient keeps only its newest tick)."""
    return "tick" if isinstance(event, Tick) else str(event.reading_id)


async def isolate(batch: Batch, attempt: Callable[[Batch], Awaitable[T]], set_aside: SetAside) -> list[T]:
    """Runs `attempt` over `batch`; on a non-retriable failure, over each half (by patient) recursively, and
    `set_aside` each single patient that still fails. Returns the results of the attempts that committed.

    Raises whatever is retriable (the caller retries the whole batch), and what `set_aside` raises."""
    try:
        return [await attempt(batch)]
    except Exception as exc:
        if is_retriable(exc):
            raise
        if len(batch) == 1:
            ((patient_id, events),) = batch.items()
            await set_aside(patient_id, events, exc)
            return []
        logger.warning("batch of %d patients refused (%s): evaluating them apart", len(batch), describe(exc))
    patients = list(batch)
    half = len(patients) // 2
    first = await isolate({p: batch[p] for p in patients[:half]}, attempt, set_aside)
    return first + await isolate({p: batch[p] for p in patients[half:]}, attempt, set_aside)


async def set_aside(conn: Any, patient_id: UUID, events: Sequence[Event], exc: BaseException) -> int:
    """Stores `events` of `patient_id` in quarantine with the failure (its own transaction on `conn`); returns how
    many rows it wrote. Logged at ERROR without PHI (patient id and error class only)."""
    cause = exc.__cause__ if isinstance(exc, ProcessorError) and exc.__cause__ is not None else exc
    newest: dict[str, Event] = {}
    for event in events:
        newest[event_key(event)] = event
    async with conn.transaction():
        status = await conn.execute(
            _SET_ASIDE,
            patient_id,
            list(newest),
            [encode_event(e).decode() for e in newest.values()],
            type(cause).__name__,
            getattr(cause, "sqlstate", None),
            str(cause)[:_MESSAGE_MAX],
        )
    written = int(status.split()[-1])
    logger.error(
        "%d events of patient %s set aside in processor_quarantine (%s); `python -m processors quarantine retry`"
        " evaluates them again",
        len(events), patient_id, describe(exc),
    )  # fmt: skip
    if written < len(newest):
        logger.error(
            "patient %s is unknown: %d of its events could not be set aside", patient_id, len(newest) - written
        )
    return written


async def list_quarantined(
    conn: Any, *, include_resolved: bool = False, patients: Sequence[UUID] = ()
) -> list[Quarantined]:
    """The quarantined events, oldest first (unresolved only unless `include_resolved`; of `patients` if any)."""
    rows = await conn.fetch(
        "SELECT id, organization_id, patient_id, event_key, event::text AS event, error_class, sqlstate,"
        " error_message, attempts, quarantined_at, failed_at, resolved_at FROM processor_quarantine"
        " WHERE ($1 OR resolved_at IS NULL) AND (cardinality($2::uuid[]) = 0 OR patient_id = ANY($2::uuid[]))"
        " ORDER BY id",
        include_resolved,
        list(patients),
    )
    return [
        Quarantined(
            id=r["id"],
            organization_id=r["organization_id"],
            patient_id=r["patient_id"],
            event_key=r["event_key"],
            event=decode_event(r["event"]),
            error_class=r["error_class"],
            sqlstate=r["sqlstate"],
            error_message=r["error_message"],
            attempts=r["attempts"],
            quarantined_at=r["quarantined_at"],
            failed_at=r["failed_at"],
            resolved_at=r["resolved_at"],
        )
        for r in rows
    ]


async def mark_resolved(conn: Any, ids: Sequence[int]) -> int:
    """Marks these rows resolved (their events committed); returns how many were still unresolved."""
    status = await conn.execute(
        "UPDATE processor_quarantine SET resolved_at = now() WHERE id = ANY($1::bigint[]) AND resolved_at IS NULL",
        list(ids),
    )
    return int(status.split()[-1])


def in_retry_order(rows: Sequence[Quarantined]) -> dict[UUID, list[Quarantined]]:
    """Each patient's rows in the order to evaluate them: readings by measurement time, its tick last."""
    by_patient: dict[UUID, list[Quarantined]] = {}
    for row in rows:
        by_patient.setdefault(row.patient_id, []).append(row)
    for patient_rows in by_patient.values():
        patient_rows.sort(key=_retry_key)
    return by_patient


def _retry_key(row: Quarantined) -> tuple[int, datetime, int]:
    event = row.event
    if isinstance(event, CommittedReading):
        return (0, event.measured_at, row.id)
    return (1, event.now, row.id)
