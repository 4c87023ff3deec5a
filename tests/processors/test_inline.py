"""The inline runner's guarantees beyond the scenarios: concurrent runners, failed batches, live context changes."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import asyncpg
import psycopg
import pytest

from processors.contexts import ContextCache
from processors.errors import StoreError
from processors.events import CommittedReading
from processors.inline import InlineProcessor
from tests import factories
from tests.processors.scenario import DIRECTORY, World, expected_outcome, load
from tests.processors.scenario_db import create_world, database_outcome, insert_reading
from tests.processors.test_inline_scenarios import wait_until
from tests.roles import RoleSettings

CRISIS = DIRECTORY / "hypertensive_crisis.yaml"


def readings(world: World) -> list[tuple[Any, CommittedReading]]:
    return [(step, item) for step, item in world.events() if isinstance(item, CommittedReading)]


async def test_two_runners_delivering_the_same_events_at_once_write_everything_once(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool, roles: RoleSettings
) -> None:
    spec = load(CRISIS)
    world = create_world(db, spec)
    other_pool = await asyncpg.create_pool(roles.url("processor"), min_size=1, max_size=2)
    try:
        first = InlineProcessor(processor_pool, spec.config.engine())
        second = InlineProcessor(other_pool, spec.config.engine())
        for step, reading in readings(world):
            insert_reading(db, world, step)
            await asyncio.gather(first.deliver([reading]), second.deliver([reading]))
    finally:
        await other_pool.close()
    assert database_outcome(db, world) == expected_outcome(spec)


async def test_a_failed_batch_raises_retriable_writes_nothing_and_a_retry_completes_it(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool, roles: RoleSettings
) -> None:
    spec = load(CRISIS)
    world = create_world(db, spec)
    steps = readings(world)
    for step, _ in steps:
        insert_reading(db, world, step)
    batch = [reading for _, reading in steps]
    broken = await asyncpg.create_pool(roles.url("processor"), min_size=1, max_size=1)
    await broken.close()
    with pytest.raises(StoreError) as caught:
        await InlineProcessor(broken, spec.config.engine()).deliver(batch)
    assert caught.value.retriable
    assert db.execute("SELECT count(*) FROM notifications WHERE patient_id = %s", (world.patient_id,)).fetchone() == (
        0,
    )
    await InlineProcessor(processor_pool, spec.config.engine()).deliver(batch)
    assert database_outcome(db, world) == expected_outcome(spec)


async def test_a_care_team_change_is_heard_without_a_restart(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool
) -> None:
    spec = load(CRISIS)
    world = create_world(db, spec)
    contexts = ContextCache(ttl=3600)
    processor = InlineProcessor(processor_pool, spec.config.engine(), contexts=contexts)
    stop = asyncio.Event()
    steps = readings(world)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(processor.listen(stop))
        await asyncio.wait_for(processor.listening.wait(), 10)
        step, first = steps[0]
        insert_reading(db, world, step)
        await processor.deliver([first])
        assert contexts.holds(world.patient_id)
        patient = factories.Patient(world.patient_id, world.patient_id, world.organization_id, spec.timezone)
        manager = factories.create_provider(db, world.organization_id, provider_type="care_manager")
        factories.add_to_care_team(db, patient, manager, role="care_manager", started_at=spec.care_team[0].since)
        await wait_until(lambda: not contexts.holds(world.patient_id))
        step, crisis = next((s, r) for s, r in steps if r.value == 186)
        insert_reading(db, world, step)
        await processor.deliver([crisis])
        stop.set()
    recipients = db.execute(
        "SELECT recipient_user_id FROM notifications WHERE patient_id = %s AND type = 'vital_alert'",
        (world.patient_id,),
    ).fetchall()
    assert (manager.user_id,) in recipients
    assert len(recipients) == 3


async def test_events_of_unknown_patients_are_skipped(processor_pool: asyncpg.Pool) -> None:
    spec = load(CRISIS)
    world = World(spec, patient_id=uuid4())
    _, reading = readings(world)[0]
    await InlineProcessor(processor_pool, spec.config.engine()).deliver([reading])
    async with processor_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM processor_states WHERE patient_id = $1", world.patient_id) == 0


async def test_an_episode_a_person_resolved_is_re_armed(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool
) -> None:
    spec = load(CRISIS)
    world = create_world(db, spec)
    processor = InlineProcessor(processor_pool, spec.config.engine())
    systolic = [(s, r) for s, r in readings(world) if r.vital_type == "systolic_bp"]
    for step, reading in systolic[:2]:  # 132, then 186: a critical episode opens
        insert_reading(db, world, step)
        await processor.deliver([reading])
    db.execute(
        "UPDATE vital_alerts SET status = 'resolved', resolved_at = opened_at, last_change = 'cleared',"
        " resolved_by = %s, resolution_note = 'repeated manually: 142/88' WHERE patient_id = %s",
        (world.users["nurse"], world.patient_id),
    )
    step, still_high = systolic[2]  # 178: would only have been a suppressed repeat of the old episode
    insert_reading(db, world, step)
    await processor.deliver([still_high])
    rows = db.execute(
        "SELECT severity::text, status::text, resolved_by IS NOT NULL FROM vital_alerts WHERE patient_id = %s"
        " ORDER BY opened_at",
        (world.patient_id,),
    ).fetchall()
    assert rows == [("critical", "resolved", True), ("warning", "open", False)]
    assert db.execute(
        "SELECT resolved_at IS NOT NULL FROM symptoms WHERE patient_id = %s", (world.patient_id,)
    ).fetchall() == [(True,)]


async def test_a_known_patient_costs_four_round_trips_per_batch(
    db: psycopg.Connection[Any], roles: RoleSettings
) -> None:
    """After a patient's first batch (context and state built), each batch is BEGIN, processor_batch_begin,
    processor_batch_write, COMMIT (plus vital-check statements when a check changes): the runner's cache holds the
    state the table holds, so none is read back and no reload has to be reconciled."""
    spec = load(CRISIS)
    world = create_world(db, spec)
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    pool = await asyncpg.create_pool(roles.url("processor"), min_size=1, max_size=1, init=log_queries)
    try:
        processor = InlineProcessor(pool, spec.config.engine())
        extra: list[list[str]] = []
        for n, (step, reading) in enumerate(readings(world)):
            insert_reading(db, world, step)
            statements.clear()
            await processor.deliver([reading])
            if n > 0:
                batch = ("BEGIN", "COMMIT", "processor_batch_begin", "processor_batch_write")
                checks = ("scheduled_events", "adherence_records")
                release = ("RESET ALL",)  # the pool's reset when the connection is released
                extra.append([q for q in statements if not any(k in q for k in batch + checks + release)])
    finally:
        await pool.close()
    assert database_outcome(db, world) == expected_outcome(spec)
    assert extra == [[]] * (len(readings(world)) - 1)
