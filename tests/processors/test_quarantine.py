"""Poison isolation: a patient whose events fail deterministically is set aside, the others commit, nothing is lost.

The failure is provoked for real: the poisoned patient's stored engine state is given the largest version a bigint
holds, so the batch's state write (version + 1) cannot be encoded (asyncpg DataError, SQLSTATE 22000) on every
attempt, as any corrupt state or constraint-violating output would. Removing the state row (it is rebuilt from the
tables) is the fix; `quarantine retry` then evaluates the set-aside events once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import psycopg
import pytest

from processors.codec import dump_state, load_state
from processors.errors import BatchRefusedError, StateError, StoreError
from processors.events import CommittedReading, Event, Tick
from processors.failures import is_retriable
from processors.inline import InlineProcessor
from processors.metrics import ProcessorMetrics
from processors.quarantine import Batch, isolate, list_quarantined
from processors.quarantine_cli import retry
from tests.processors.scenario import DIRECTORY, World, expected_outcome, load
from tests.processors.scenario_db import create_world, database_outcome, insert_reading

CRISIS = DIRECTORY / "hypertensive_crisis.yaml"
BIGINT_MAX = 2**63 - 1
ROOT = Path(__file__).parents[2]


def poison(db: psycopg.Connection[Any], patient_id: UUID) -> None:
    """The patient's stored state at the largest version: its next write fails on every attempt."""
    row = db.execute("SELECT state FROM processor_states WHERE patient_id = %s", (patient_id,)).fetchone()
    assert row is not None
    state = replace(load_state(bytes(row[0])), version=BIGINT_MAX)
    db.execute(
        "UPDATE processor_states SET state = %s, version = %s WHERE patient_id = %s",
        (dump_state(state), BIGINT_MAX, patient_id),
    )


def insert_readings(db: psycopg.Connection[Any], worlds: Sequence[World]) -> dict[UUID, list[CommittedReading]]:
    """Every world's readings into `vital_readings`; each patient's committed-reading events, in order."""
    per_world: dict[UUID, list[CommittedReading]] = {}
    for world in worlds:
        for step, item in world.events():
            if isinstance(item, CommittedReading):
                insert_reading(db, world, step)
                per_world.setdefault(world.patient_id, []).append(item)
    return per_world


def notifications(db: psycopg.Connection[Any], patient_id: UUID) -> int:
    row = db.execute("SELECT count(*) FROM notifications WHERE patient_id = %s", (patient_id,)).fetchone()
    assert row is not None
    return int(row[0])


def quarantined_metric(metrics: ProcessorMetrics, kind: str = "reading") -> float:
    value = metrics.registry.get_sample_value("processors_quarantined_events_total", {"kind": kind})
    assert value is not None
    return value


# -- pure: which failures are retried, and the bisection -------------------------------------------------------------


def test_retriable_failures_are_the_ones_a_later_attempt_can_fix() -> None:
    assert is_retriable(asyncpg.exceptions.SerializationError("x"))
    assert is_retriable(asyncpg.exceptions.DeadlockDetectedError("x"))
    assert is_retriable(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_retriable(asyncpg.InternalClientError("cannot switch to state 12"))
    assert is_retriable(asyncpg.exceptions.ReadOnlySQLTransactionError("x"))
    assert is_retriable(asyncpg.exceptions.TooManyConnectionsError("x"))
    assert is_retriable(asyncpg.exceptions.QueryCanceledError("x"))
    assert is_retriable(asyncpg.exceptions.ConnectionDoesNotExistError("x"))
    assert is_retriable(ConnectionResetError())
    assert is_retriable(TimeoutError())
    assert is_retriable(StoreError("x"))
    assert not is_retriable(asyncpg.exceptions.CheckViolationError("x"))
    assert not is_retriable(asyncpg.exceptions.UniqueViolationError("x"))
    assert not is_retriable(asyncpg.exceptions.DataError("x"))
    assert not is_retriable(asyncpg.exceptions.UndefinedColumnError("x"))
    assert not is_retriable(BatchRefusedError("x"))
    assert not is_retriable(StateError("x"))
    assert not is_retriable(KeyError("a bug raised for one patient"))


async def test_isolate_commits_everyone_but_the_failing_patients() -> None:
    patients = [uuid4() for _ in range(9)]
    poisoned = {patients[2], patients[7]}
    batch: dict[UUID, list[Event]] = {p: [Tick(datetime.now(UTC))] for p in patients}
    committed: list[UUID] = []
    aside: list[tuple[UUID, str]] = []

    async def attempt(part: Batch) -> int:
        if poisoned & part.keys():
            raise asyncpg.exceptions.CheckViolationError("new row violates check constraint")
        committed.extend(part)
        return len(part)

    async def set_aside(patient_id: UUID, events: Any, exc: BaseException) -> None:
        aside.append((patient_id, type(exc).__name__))

    results = await isolate(batch, attempt, set_aside)
    assert sorted(committed) == sorted(set(patients) - poisoned)
    assert sum(results) == len(patients) - len(poisoned)
    assert sorted(aside) == sorted((p, "CheckViolationError") for p in poisoned)


async def test_isolate_lets_a_retriable_failure_through_unsplit() -> None:
    calls: list[int] = []

    async def attempt(part: Batch) -> None:
        calls.append(len(part))
        raise asyncpg.exceptions.SerializationError("could not serialize access")

    async def set_aside(patient_id: UUID, events: Any, exc: BaseException) -> None:
        raise AssertionError("nothing may be set aside for a retriable failure")

    with pytest.raises(asyncpg.exceptions.SerializationError):
        await isolate({uuid4(): [], uuid4(): []}, attempt, set_aside)
    assert calls == [2]


# -- the inline runner on the real database ---------------------------------------------------------------------


async def test_a_poisoned_patient_is_set_aside_the_others_commit_and_a_retry_after_the_fix_evaluates_it_once(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool
) -> None:
    spec = load(CRISIS)
    worlds = [create_world(db, spec) for _ in range(4)]
    sick, healthy = worlds[0], worlds[1:]
    per_world = insert_readings(db, worlds)
    metrics = ProcessorMetrics()
    processor = InlineProcessor(processor_pool, spec.config.engine(), on_quarantine=metrics.count_quarantined)
    first, *rest = per_world[sick.patient_id]
    await processor.deliver([first])
    poison(db, sick.patient_id)

    # One hand-off batch with every other reading of the four patients, in measurement order (as the relay does).
    batch = sorted((r for rs in per_world.values() for r in rs if r is not first), key=lambda r: r.measured_at)
    await processor.deliver(batch)  # returns: the relay deletes the outbox rows and moves on

    for world in healthy:
        assert database_outcome(db, world) == expected_outcome(spec)
    async with processor_pool.acquire() as conn:
        held = await list_quarantined(conn, patients=[sick.patient_id])
    assert sorted(q.event_key for q in held) == sorted(str(r.reading_id) for r in rest)
    assert {(q.error_class, q.sqlstate, q.attempts, q.resolved_at) for q in held} == {("DataError", "22000", 1, None)}
    assert all("int64" in q.error_message for q in held)
    assert quarantined_metric(metrics) == len(rest)
    before = notifications(db, sick.patient_id)

    # The same batch again (a redelivery): still not blocked, the same rows, one more attempt each.
    await processor.deliver(batch)
    async with processor_pool.acquire() as conn:
        again = await list_quarantined(conn, patients=[sick.patient_id])
    assert len(again) == len(rest) and {q.attempts for q in again} == {2}

    # The fix: the corrupt state goes (it is rebuilt from the tables); the retry evaluates what was set aside.
    db.execute("DELETE FROM processor_states WHERE patient_id = %s", (sick.patient_id,))
    report = await retry(processor_pool, spec.config.engine(), patients=[sick.patient_id])
    assert (report.resolved, report.failed_events) == (len(rest), 0)
    assert database_outcome(db, sick) == expected_outcome(spec)
    assert notifications(db, sick.patient_id) > before
    async with processor_pool.acquire() as conn:
        assert await list_quarantined(conn, patients=[sick.patient_id]) == []
        resolved = await list_quarantined(conn, include_resolved=True, patients=[sick.patient_id])
    assert len(resolved) == len(rest) and all(q.resolved_at is not None for q in resolved)

    # Once: a second retry finds nothing and writes nothing.
    written = notifications(db, sick.patient_id)
    report = await retry(processor_pool, spec.config.engine(), patients=[sick.patient_id])
    assert (report.resolved, report.failed_events) == (0, 0)
    assert notifications(db, sick.patient_id) == written
    assert database_outcome(db, sick) == expected_outcome(spec)


async def test_a_retry_before_the_fix_keeps_the_events_with_one_more_attempt(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool
) -> None:
    spec = load(CRISIS)
    world = create_world(db, spec)
    readings = [(s, r) for s, r in world.events() if isinstance(r, CommittedReading)]
    for step, _ in readings:
        insert_reading(db, world, step)
    processor = InlineProcessor(processor_pool, spec.config.engine())
    await processor.deliver([readings[0][1]])
    poison(db, world.patient_id)
    assert await processor.process({world.patient_id: [r for _, r in readings[1:3]]}) == {world.patient_id}
    report = await retry(processor_pool, spec.config.engine(), patients=[world.patient_id])
    assert (report.resolved, report.failed_events, report.failed_patients) == (0, 2, [world.patient_id])
    async with processor_pool.acquire() as conn:
        assert {q.attempts for q in await list_quarantined(conn, patients=[world.patient_id])} == {2}


def test_the_command_lists_the_quarantine_as_json(db: psycopg.Connection[Any]) -> None:
    world = World(load(CRISIS))
    created = create_world(db, world.spec)
    db.execute(
        "INSERT INTO processor_quarantine (organization_id, patient_id, event_key, event, error_class, sqlstate,"
        " error_message) VALUES (%s, %s, 'tick', '{\"tick\": \"2026-01-01T00:00:00Z\"}', 'CheckViolationError',"
        " '23514', 'new row violates check constraint')",
        (created.organization_id, created.patient_id),
    )
    out = subprocess.run(
        [sys.executable, "-m", "processors", "quarantine", "list", "--json", "--patient", str(created.patient_id)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = json.loads(out.stdout)
    assert [(r["kind"], r["error_class"], r["sqlstate"], r["attempts"]) for r in rows] == [
        ("tick", "CheckViolationError", "23514", 1)
    ]
