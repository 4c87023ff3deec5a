"""Counts a load run's messages in `vital_readings` by (device, meta.seq): what was lost, what was doubled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

# ingest keeps the message's `meta` in vital_readings.metadata, either as is or under "meta".
_SEQ = "coalesce(r.metadata->>'seq', r.metadata->'meta'->>'seq')::bigint"
_RUN = "coalesce(r.metadata->>'run', r.metadata->'meta'->>'run')"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Messages sent (seq 1..last per device) against rows stored.

    `missing` messages have no row, `partial` ones fewer rows than readings, `unexpected` rows carry a seq that
    was never sent. Duplicates cannot exist (primary key), so `rows == readings_per_message * complete`.
    """

    sent: int
    stored: int
    rows: int
    missing: int
    partial: int
    unexpected: int

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.partial == 0 and self.unexpected == 0


def reconcile(
    conn: psycopg.Connection[Any],
    run_id: str,
    last_seq: Mapping[str, int],
    readings_per_message: int,
    origin: datetime,
    span: timedelta,
) -> Reconciliation:
    """Compares the run's sent messages (`last_seq`: serial -> highest seq sent) with the stored rows."""
    serials = list(last_seq)
    rows = conn.execute(
        f"SELECT d.serial, {_SEQ} AS seq, count(*) FROM vital_readings r JOIN devices d ON d.id = r.device_id"
        f" WHERE d.serial = ANY(%s) AND r.measured_at >= %s AND r.measured_at < %s AND {_RUN} = %s"
        " GROUP BY 1, 2",
        (serials, origin, origin + span + timedelta(seconds=1), run_id),
    ).fetchall()
    stored = partial = unexpected = total = 0
    for serial, seq, count in rows:
        total += count
        if seq is None or not 1 <= seq <= last_seq.get(serial, 0):
            unexpected += count
            continue
        stored += 1
        if count != readings_per_message:
            partial += 1
    sent = sum(last_seq.values())
    return Reconciliation(
        sent=sent,
        stored=stored,
        rows=total,
        missing=sent - stored,
        partial=partial,
        unexpected=unexpected,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the pipeline made of a run's devices since `since`: stored rows, refusals by reason, alerts, and the
    pages (vital_alert notifications to care-team members) the live ones sent."""

    stored: int
    refused: dict[str, int]
    alerts: dict[str, int]
    pages: int = 0


def outcome(conn: psycopg.Connection[Any], serials: list[str], since: datetime) -> Outcome:
    stored = conn.execute(
        "SELECT count(*) FROM vital_readings r JOIN devices d ON d.id = r.device_id"
        " WHERE d.serial = ANY(%s) AND r.received_at >= %s",
        (serials, since),
    ).fetchone()
    refused = conn.execute(
        "SELECT reason::text, count(*) FROM ingest_rejections WHERE claimed_serial = ANY(%s) AND received_at >= %s"
        " GROUP BY 1 ORDER BY 2 DESC",
        (serials, since),
    ).fetchall()
    alerts: list[tuple[str, int]] = []
    pages = None
    if conn.execute("SELECT to_regclass('public.vital_alerts') IS NOT NULL").fetchone() == (True,):
        pages = conn.execute(
            "SELECT count(*) FROM notifications WHERE type = 'vital_alert' AND created_at >= %s"
            " AND patient_id IN (SELECT da.patient_id FROM device_assignments da"
            " JOIN devices d ON d.id = da.device_id WHERE d.serial = ANY(%s))",
            (since, serials),
        ).fetchone()
        alerts = conn.execute(
            "SELECT vt.code || ' ' || a.direction || ' ' || a.severity"
            " || CASE WHEN a.retrospective THEN ' (retrospective)' ELSE '' END, count(*)"
            " FROM vital_alerts a JOIN vital_types vt ON vt.id = a.vital_type_id"
            " WHERE a.created_at >= %s AND a.patient_id IN (SELECT da.patient_id FROM device_assignments da"
            " JOIN devices d ON d.id = da.device_id WHERE d.serial = ANY(%s)) GROUP BY 1 ORDER BY 1",
            (since, serials),
        ).fetchall()
    return Outcome(
        stored=int(stored[0]) if stored else 0,
        refused={str(reason): int(n) for reason, n in refused},
        alerts={str(kind): int(n) for kind, n in alerts},
        pages=int(pages[0]) if pages else 0,
    )
