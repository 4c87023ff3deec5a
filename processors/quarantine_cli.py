"""`python -m processors quarantine list|retry [--json]`: the events the processors set aside.

`list` shows the unresolved ones (`--all`: resolved too) with the failure's class, SQLSTATE and message. `retry`
evaluates them again, each patient's events in measurement order (its tick last), through the inline runner's
database path, whichever runner set them aside (the Faust runner notices the newer state version and takes it).
Events that commit are marked resolved, so a second `retry` does nothing; events that fail again stay, with the new
failure and one more attempt. Outputs are idempotent: an event that had committed after all changes nothing.

Exit codes: 0 done (nothing failed again), 1 some events failed again, 2 the database could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from processors.context import EngineConfig
from processors.contexts import ContextCache
from processors.errors import StoreError
from processors.events import CommittedReading
from processors.failures import DATABASE_ERRORS
from processors.inline import InlineProcessor
from processors.quarantine import Quarantined, in_retry_order, list_quarantined, mark_resolved
from processors.settings import ProcessorSettings

__all__ = ["RetryReport", "main", "retry"]


@dataclass(slots=True)
class RetryReport:
    """What `retry` did: events evaluated and resolved, and the patients whose events failed again."""

    resolved: int = 0
    failed_patients: list[UUID] = field(default_factory=list)
    failed_events: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "resolved": self.resolved,
            "failed_events": self.failed_events,
            "failed_patients": [str(p) for p in self.failed_patients],
        }


async def retry(
    pool: asyncpg.Pool, config: EngineConfig, *, patients: Sequence[UUID] = (), contexts: ContextCache | None = None
) -> RetryReport:
    """Evaluates the unresolved quarantined events (of `patients`, if any) again, one patient per transaction.

    Raises `StoreError` when the database cannot be reached (nothing is marked resolved that did not commit)."""
    processor = InlineProcessor(pool, config, contexts=contexts)
    try:
        async with pool.acquire() as conn:
            rows = await list_quarantined(conn, patients=patients)
    except DATABASE_ERRORS as exc:
        raise StoreError(f"cannot read the quarantine: {exc!r}") from exc
    report = RetryReport()
    for patient_id, patient_rows in in_retry_order(rows).items():
        aside = await processor.process({patient_id: [r.event for r in patient_rows]})
        if patient_id in aside:
            report.failed_patients.append(patient_id)
            report.failed_events += len(patient_rows)
            continue
        try:
            async with pool.acquire() as conn:
                report.resolved += await mark_resolved(conn, [r.id for r in patient_rows])
        except DATABASE_ERRORS as exc:  # committed but not marked: the next retry evaluates them again, harmlessly
            raise StoreError(f"events of patient {patient_id} committed, not marked resolved: {exc!r}") from exc
    return report


def _as_json(q: Quarantined) -> dict[str, Any]:
    event = q.event
    return {
        "id": q.id,
        "organization_id": str(q.organization_id),
        "patient_id": str(q.patient_id),
        "event_key": q.event_key,
        "kind": "reading" if isinstance(event, CommittedReading) else "tick",
        "vital_type": event.vital_type if isinstance(event, CommittedReading) else None,
        "event_time": (event.measured_at if isinstance(event, CommittedReading) else event.now).isoformat(),
        "error_class": q.error_class,
        "sqlstate": q.sqlstate,
        "error_message": q.error_message,
        "attempts": q.attempts,
        "quarantined_at": q.quarantined_at.isoformat(),
        "failed_at": q.failed_at.isoformat(),
        "resolved_at": None if q.resolved_at is None else q.resolved_at.isoformat(),
    }


def _row(q: Quarantined) -> str:
    j = _as_json(q)
    state = "resolved" if q.resolved_at else f"x{q.attempts}"
    what = f"{j['kind']}:{j['vital_type']}" if j["vital_type"] else j["kind"]
    return (
        f"{q.id:>8}  {q.patient_id}  {what:<22} {j['event_time'][:19]}Z  {state:<8} "
        f"{q.error_class} {q.sqlstate or ''}: {q.error_message[:120]}"
    )


async def run(args: argparse.Namespace, settings: ProcessorSettings) -> int:
    """Runs one `quarantine` subcommand; prints to stdout, errors to stderr."""
    pool = await asyncpg.create_pool(settings.database_url(), min_size=1, max_size=2)
    try:
        if args.quarantine_command == "list":
            async with pool.acquire() as conn:
                found = await list_quarantined(conn, include_resolved=args.all, patients=args.patient or ())
            if args.json:
                print(json.dumps([_as_json(q) for q in found], indent=2))
            else:
                for q in found:
                    print(_row(q))
                print(f"{len(found)} event(s)")
            return 0
        contexts = ContextCache(ttl=settings.processor_context_ttl_s)
        report = await retry(pool, settings.engine(), patients=args.patient or (), contexts=contexts)
    except (StoreError, *DATABASE_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(f"{report.resolved} event(s) resolved; {report.failed_events} failed again")
    return 1 if report.failed_patients else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors quarantine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    actions = parser.add_subparsers(dest="quarantine_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--patient", type=UUID, action="append", help="only this patient's events (repeatable)")
    listing = actions.add_parser("list", parents=[common], help="the events set aside, oldest first")
    listing.add_argument("--all", action="store_true", help="resolved ones too")
    actions.add_parser("retry", parents=[common], help="evaluate the unresolved events again")
    return asyncio.run(run(parser.parse_args(argv), ProcessorSettings()))


if __name__ == "__main__":
    sys.exit(main())
