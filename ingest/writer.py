"""Writes a batch in one transaction: readings (COPY into a session staging table, then INSERT ... ON CONFLICT DO
NOTHING into vital_readings), refusals, and the outbox row for the hand-off to processors.

Why staging + merge: COPY has no ON CONFLICT (and PostgreSQL refuses COPY into vital_readings at all since it
has row-level security), and a redelivered message must add nothing. Measured (scripts/bench/ingest_write.py,
docs/benchmarks.md): the merge with RETURNING id is the fastest idempotent way that also says which rows were new
and stays fast when a batch repeats stored identities (crash recovery); only then does one more query read the
stored values of the repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from ingest.admission import AcceptedReading, Envelope, Limits, Parsed, Verdict, judge, parse_envelope
from ingest.database import STAGING_TABLE, as_ingest_error, load_devices
from ingest.directory import DeviceRecord
from ingest.errors import BatchRefusedError, DatabaseUnavailableError
from ingest.event import ReadingEvent, event_of
from ingest.identity import Plan, RecentIdentities, conflict_rejection, plan_batch
from ingest.payload import claimed_serial
from ingest.rejection import Rejection, RejectionReason, safe_text
from ingest.units import UnitRegistry

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

COLUMNS = (
    "id",
    "organization_id",
    "patient_id",
    "device_id",
    "vital_type_id",
    "value",
    "original_value",
    "original_unit",
    "measured_at",
    "received_at",
    "message_id",
    "metadata",
)
_COLUMN_LIST = ", ".join(COLUMNS)
# The merge returns the inserted ids as one array (cheaper to decode than a row each). With a destination it also
# writes the outbox row from what it inserted, in the same statement (server-side: no identity arrays built and
# sent from here): exactly the rows that were new, i.e. the batch's settled rows; none when nothing was new.
_INSERTED = (
    f"INSERT INTO vital_readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGING_TABLE}"
    " ON CONFLICT DO NOTHING RETURNING id, device_id, vital_type_id, measured_at"
)
_MERGE = f"WITH ins AS ({_INSERTED}) SELECT array_agg(id), NULL::bigint FROM ins"
_MERGE_AND_OUTBOX = (
    f"WITH ins AS ({_INSERTED}),"
    " box AS (INSERT INTO ingest_outbox (destination, device_ids, vital_type_ids, measured_ats)"
    " SELECT $1, array_agg(device_id), array_agg(vital_type_id), array_agg(measured_at) FROM ins"
    " HAVING count(*) > 0 RETURNING id)"
    " SELECT (SELECT array_agg(id) FROM ins), (SELECT id FROM box)"
)
# The stored values of staged rows that were not inserted (their identity was stored before, by an earlier batch
# or by a concurrent transaction that ON CONFLICT waited for; this new statement sees its commit).
_EXISTING = (
    f"SELECT s.id, v.value FROM {STAGING_TABLE} s"
    " JOIN vital_readings v USING (device_id, vital_type_id, measured_at) WHERE s.id = ANY($1::uuid[])"
)
_REJECTIONS = """
INSERT INTO ingest_rejections (received_at, topic, claimed_serial, device_id, organization_id, message_id, reason,
                               detail, reading_index, payload, payload_size)
SELECT r.received_at, r.topic, r.claimed_serial, r.device_id, r.organization_id, r.message_id,
       r.reason::rejection_reason, r.detail, r.reading_index, r.payload, r.payload_size
  FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
              $8::text[], $9::int[], $10::bytea[], $11::int[])
       AS r(received_at, topic, claimed_serial, device_id, organization_id, message_id, reason, detail,
            reading_index, payload, payload_size)
ON CONFLICT DO NOTHING
"""
_TOUCH = """
UPDATE devices d SET last_seen_at = v.seen_at
  FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, seen_at)
 WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.seen_at)
"""


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What one message of a batch came to."""

    verdict: Verdict
    stored: int
    duplicates: int
    refused: tuple[Rejection, ...]


@dataclass(frozen=True, slots=True)
class Written:
    """A committed batch: per-message outcomes, the committed readings as events, and their outbox row."""

    outcomes: tuple[MessageOutcome, ...]
    events: tuple[ReadingEvent, ...]
    outbox_id: int | None

    @property
    def stored(self) -> int:
        return len(self.events)


class Writer:
    """Judges and writes batches of envelopes over one connection (owned by the caller).

    `destination` names where the relay hands committed readings ('inline', 'kafka:<topic>', 'discard'); None
    writes no outbox rows (no processors downstream).
    """

    def __init__(
        self, units: UnitRegistry, limits: Limits, recent: RecentIdentities, destination: str | None = "inline"
    ) -> None:
        self.units = units
        self.limits = limits
        self.recent = recent
        self.destination = destination

    async def write(
        self,
        conn: asyncpg.Connection,
        envelopes: Sequence[Envelope],
        *,
        only_reading: Sequence[int | None] | None = None,
        store_rejections: bool = True,
    ) -> Written:
        """Writes the batch in one transaction and returns once it is committed.

        Args:
            conn: a connection from `ingest.database.connect(..., staging=True)`.
            envelopes: the messages, as received.
            only_reading: per envelope, a reading index to restrict it to (replay of one refused reading).
            store_rejections: False records nothing in ingest_rejections (replay updates the original row).

        Raises:
            DatabaseUnavailableError: retriable; nothing was committed.
            BatchRefusedError: PostgreSQL refused the data; nothing was committed.
        """
        try:
            return await self._write(conn, envelopes, only_reading, store_rejections)
        except BaseException as exc:
            raise as_ingest_error(exc) from exc

    async def _write(
        self,
        conn: asyncpg.Connection,
        envelopes: Sequence[Envelope],
        only_reading: Sequence[int | None] | None,
        store_rejections: bool,
    ) -> Written:
        parsed = self._pure(lambda: parse_batch(envelopes, self.limits))
        serials = {p.serial for p in parsed if not isinstance(p, Rejection)}
        directory = await load_devices(conn, serials)
        judged = self._pure(
            lambda: judge_batch(envelopes, parsed, directory, self.units, self.limits, self.recent, only_reading)
        )
        plan = judged.plan

        async with conn.transaction():
            existing: dict[UUID, float] = {}
            outbox_id: int | None = None
            if plan.rows:
                await conn.copy_records_to_table(STAGING_TABLE, records=judged.records(), columns=COLUMNS)
                if self.destination is None:
                    ids, _ = await conn.fetchrow(_MERGE)
                else:
                    ids, outbox_id = await conn.fetchrow(_MERGE_AND_OUTBOX, self.destination)
                inserted = set(ids or ())
                if len(inserted) != len(plan.rows):
                    missing = [r.id for r in plan.rows if r.id not in inserted]
                    existing = {row["id"]: row["value"] for row in await conn.fetch(_EXISTING, missing)}
                    if len(existing) != len(missing):
                        raise DatabaseUnavailableError("readings neither inserted nor found; retrying the batch")
            settled = judged.settle(existing)
            rejection_rows = [
                _rejection_row(judged.verdicts[i], r, self.limits.max_payload_bytes)
                for i, refusals in enumerate(settled.refused)
                for r in refusals
            ]
            if store_rejections and rejection_rows:
                await conn.execute(_REJECTIONS, *_columns(rejection_rows, 11))

        for reading in plan.rows:
            self.recent.remember(reading.key, existing.get(reading.id, reading.value))
        return settled.written(judged.verdicts, self.units, outbox_id)

    @staticmethod
    def _pure(step: Callable[[], _T]) -> _T:
        """Runs a step of the pure core. It is fuzzed never to raise; if it does anyway (a bug), the batch is
        refused as data so the pipeline isolates the message that triggers it instead of crash-looping on it."""
        try:
            return step()
        except Exception as exc:
            logger.exception("judging failed (a bug): the batch is isolated message by message")
            raise BatchRefusedError(None, f"internal error while judging: {type(exc).__name__}") from exc

    async def refuse(self, conn: asyncpg.Connection, envelope: Envelope, rejection: Rejection) -> Written:
        """Stores a refusal of the whole message, decided outside the judge (e.g. PostgreSQL refused its data)."""
        try:
            parsed: Parsed | Rejection = parse_envelope(envelope, self.limits)
        except Exception:  # the refusal is stored anyway, without the parsed serial and id
            parsed = rejection
        serial = None if isinstance(parsed, Rejection) else parsed.serial
        message_id = None if isinstance(parsed, Rejection) else parsed.message.message_id
        verdict = Verdict(envelope, serial, None, message_id, (), (rejection,))
        try:
            await conn.execute(
                _REJECTIONS, *_columns([_rejection_row(verdict, rejection, self.limits.max_payload_bytes)], 11)
            )
        except BaseException as exc:
            raise as_ingest_error(exc) from exc
        return Written((MessageOutcome(verdict, 0, 0, (rejection,)),), (), None)


@dataclass(frozen=True, slots=True)
class Settled:
    """A batch after the merge: refusals per message (conflicts included), readings stored per message, and the
    rows that were new (what the outbox and the processors get)."""

    refused: list[list[Rejection]]
    stored: list[int]
    rows: list[AcceptedReading]

    def written(self, verdicts: Sequence[Verdict], units: UnitRegistry, outbox_id: int | None) -> Written:
        outcomes = []
        for i, verdict in enumerate(verdicts):
            refused = self.refused[i]
            conflicts = sum(1 for r in refused if r.reason is RejectionReason.CONFLICTING_DUPLICATE)
            duplicates = len(verdict.readings) - self.stored[i] - conflicts
            outcomes.append(MessageOutcome(verdict, self.stored[i], duplicates, tuple(refused)))
        return Written(tuple(outcomes), tuple(event_of(r, units) for r in self.rows), outbox_id)


@dataclass(frozen=True, slots=True)
class Judged:
    """A judged batch: one verdict per message and the plan of candidate rows."""

    verdicts: list[Verdict]
    plan: Plan

    def records(self) -> list[tuple[object, ...]]:
        """The candidate rows as COPY records, in `COLUMNS` order."""
        return [_record(r) for r in self.plan.rows]

    def settle(self, existing: Mapping[UUID, float]) -> Settled:
        """What the batch came to, given the stored values of candidate rows the merge did not insert."""
        plan = self.plan
        refused: list[list[Rejection]] = [list(v.rejections) for v in self.verdicts]
        for conflict in plan.conflicts:
            refused[conflict.verdict_index].append(conflict.rejection)
        stored = [0] * len(self.verdicts)
        if not existing:  # the usual case: every candidate row was new
            for verdict_index in plan.row_verdicts:
                stored[verdict_index] += 1
            return Settled(refused, stored, list(plan.rows))
        for reading, verdict_index in zip(plan.rows, plan.row_verdicts, strict=True):
            if reading.id not in existing:
                stored[verdict_index] += 1
            elif existing[reading.id] != reading.value:
                refused[verdict_index].append(conflict_rejection(reading, existing[reading.id]))
        rows = [r for r in plan.rows if r.id not in existing]
        return Settled(refused, stored, rows)


def parse_batch(envelopes: Sequence[Envelope], limits: Limits) -> list[Parsed | Rejection]:
    """Each envelope parsed (topic, size, JSON, structure), or its message-level refusal."""
    return [parse_envelope(e, limits) for e in envelopes]


def judge_batch(
    envelopes: Sequence[Envelope],
    parsed: Sequence[Parsed | Rejection],
    directory: Mapping[str, DeviceRecord],
    units: UnitRegistry,
    limits: Limits,
    recent: RecentIdentities,
    only_reading: Sequence[int | None] | None = None,
) -> Judged:
    """Judges each parsed message against the registry and plans the batch's rows (dedupe in batch and cache).

    Args:
        only_reading: per envelope, a reading index to restrict it to (replay of one refused reading).
    """
    verdicts = []
    for i, (envelope, result) in enumerate(zip(envelopes, parsed, strict=True)):
        device = None if isinstance(result, Rejection) else directory.get(result.serial)
        verdict = judge(envelope, result, device, units, limits)
        if only_reading is not None and only_reading[i] is not None:
            verdict = _restrict(verdict, only_reading[i])
        verdicts.append(verdict)
    return Judged(verdicts, plan_batch(verdicts, recent))


async def touch_devices(conn: asyncpg.Connection, seen: dict[UUID, datetime]) -> None:
    """Moves devices' last_seen_at forward (ids sorted, so concurrent writers lock rows in one order)."""
    if not seen:
        return
    ids = sorted(seen)
    try:
        await conn.execute(_TOUCH, ids, [seen[i] for i in ids])
    except BaseException as exc:
        raise as_ingest_error(exc) from exc


def _restrict(verdict: Verdict, index: int | None) -> Verdict:
    if not verdict.readings and any(r.reading_index is None for r in verdict.rejections):
        return verdict
    return Verdict(
        verdict.envelope,
        verdict.serial,
        verdict.device,
        verdict.message_id,
        tuple(r for r in verdict.readings if r.reading_index == index),
        tuple(r for r in verdict.rejections if r.reading_index == index),
    )


def _record(r: AcceptedReading) -> tuple[object, ...]:
    return (
        r.id,
        r.organization_id,
        r.patient_id,
        r.device_id,
        r.vital_type_id,
        r.value,
        r.original_value,
        r.original_unit,
        r.measured_at,
        r.received_at,
        r.message_id,
        r.metadata,
    )


def _rejection_row(verdict: Verdict, rejection: Rejection, max_payload: int) -> tuple[object, ...]:
    envelope = verdict.envelope
    device = verdict.device
    serial = verdict.serial or claimed_serial(envelope.topic)
    return (
        envelope.received_at,
        safe_text(envelope.topic, 1000),
        safe_text(serial, 64) if serial is not None else None,
        device.id if device else None,
        device.organization_id if device else None,
        verdict.message_id,
        rejection.reason.value,
        rejection.detail,
        rejection.reading_index,
        envelope.payload[:max_payload],
        len(envelope.payload),
    )


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    return [[row[i] for row in rows] for i in range(width)]
