"""Replaying stored refusals once their cause is fixed (a device assigned, a unit added...): what is valid now is
stored, idempotently; each replayed refusal records its result. Time rules are judged at the original arrival."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from ingest.admission import Envelope
from ingest.database import as_ingest_error, connect, ensure_partitions, load_units
from ingest.identity import RecentIdentities
from ingest.rejection import RejectionReason
from ingest.settings import IngestSettings
from ingest.writer import MessageOutcome, Writer

logger = logging.getLogger(__name__)

_PAGE = 500
_CANDIDATES = """
SELECT id, received_at, topic, reason::text AS reason, reading_index, payload, payload_size
  FROM ingest_rejections
 WHERE ($1::text[] IS NULL OR reason::text = ANY($1::text[]))
   AND ($2::timestamptz IS NULL OR received_at >= $2)
   AND ($3::text IS NULL OR claimed_serial = $3)
   AND (replay_result IS NULL OR replay_result LIKE 'refused%')
   AND (received_at, id) > ($4, $5)
 ORDER BY received_at, id
 LIMIT $6
"""
_RECORD = "UPDATE ingest_rejections SET replayed_at = now(), replay_result = $2 WHERE id = $1"


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    examined: int
    results: Counter[str]


def replay_result(outcome: MessageOutcome) -> str:
    """`stored`, `duplicate`, or `refused: <reason>[, ...]` (with counts for a whole message)."""
    refused = Counter(r.reason.value for r in outcome.refused)
    if outcome.stored and not refused:
        return "stored"
    if outcome.stored:
        return f"stored {outcome.stored}; refused: " + ", ".join(f"{r} x{n}" for r, n in sorted(refused.items()))
    if refused:
        return "refused: " + ", ".join(sorted(refused))
    return "duplicate"


async def replay(
    settings: IngestSettings,
    *,
    reasons: Sequence[RejectionReason] | None = None,
    since: datetime | None = None,
    serial: str | None = None,
    limit: int | None = None,
) -> ReplaySummary:
    """Replays refusals not yet replayed successfully, oldest first; safe to run again (nothing is stored twice)."""
    conn = await connect(settings, staging=True)
    try:
        writer = Writer(await load_units(conn), settings.limits, RecentIdentities(0))
        results: Counter[str] = Counter()
        examined = 0
        cursor: tuple[datetime, UUID] = (datetime(1970, 1, 1, tzinfo=UTC), UUID(int=0))
        reason_values = [r.value for r in reasons] if reasons else None
        while limit is None or examined < limit:
            page = _PAGE if limit is None else min(_PAGE, limit - examined)
            rows = await conn.fetch(_CANDIDATES, reason_values, since, serial, cursor[0], cursor[1], page)
            if not rows:
                break
            cursor = (rows[-1]["received_at"], rows[-1]["id"])
            examined += len(rows)
            for result in await _replay_page(conn, writer, rows):
                results[result.split(":")[0].split(" ")[0]] += 1
        return ReplaySummary(examined, results)
    except BaseException as exc:
        raise as_ingest_error(exc) from exc
    finally:
        await conn.close()


async def _replay_page(conn: asyncpg.Connection, writer: Writer, rows: Sequence[asyncpg.Record]) -> list[str]:
    oldest = min(r["received_at"] for r in rows)
    await ensure_partitions(conn, days_back=(datetime.now(UTC) - oldest).days + 32)
    replayable = [r for r in rows if len(r["payload"]) == r["payload_size"]]
    truncated = [r for r in rows if len(r["payload"]) != r["payload_size"]]
    results: dict[UUID, str] = {r["id"]: "refused: payload_too_large (only a prefix was kept)" for r in truncated}
    if replayable:
        written = await writer.write(
            conn,
            [Envelope(r["topic"], bytes(r["payload"]), r["received_at"]) for r in replayable],
            only_reading=[r["reading_index"] for r in replayable],
            store_rejections=False,
        )
        for row, outcome in zip(replayable, written.outcomes, strict=True):
            results[row["id"]] = replay_result(outcome)
    await conn.executemany(_RECORD, list(results.items()))
    return list(results.values())
