"""Every scenario file through `processors.batch.run_batch` (the Faust runner's batch step: two server-side calls,
migration 0203) against the real database, without Kafka.

The test keeps the states the way the Faust worker keeps its table: in memory, updated after each commit. Variants:
each event in a batch of its own; every batch delivered twice; everything between two requirement changes in one
batch (an episode opened, escalated and cleared, and the next one opened, in one write); and a cache that lags one
commit behind the database (as after a crash between a commit and the changelog write), so every batch takes the
database's copy of the state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest

from processors.batch import run_batch
from processors.context import EngineConfig
from processors.contexts import ContextCache
from processors.events import CommittedReading, Event
from processors.listener import listen
from processors.state import PatientState
from tests.processors.scenario import RequirementSpec, all_paths, expected_outcome, load
from tests.processors.scenario_db import add_requirement, create_world, database_outcome, insert_reading
from tests.processors.test_inline_scenarios import wait_until

SCENARIOS = all_paths()
VARIANTS = ["each", "redelivered", "batched", "lagging"]


class Runner:
    """The Faust worker's use of `run_batch`, minus Kafka: states cached in memory after each commit."""

    def __init__(self, pool: asyncpg.Pool, contexts: ContextCache, config: EngineConfig, lagging: bool) -> None:
        self.pool = pool
        self.contexts = contexts
        self.config = config
        self.lagging = lagging
        self.cached: dict[UUID, PatientState] = {}
        self.behind: dict[UUID, PatientState] = {}

    async def deliver(self, patient_id: UUID, events: Sequence[Event]) -> None:
        async with self.pool.acquire() as conn:
            result = await run_batch(conn, {patient_id: events}, self.cached, self.contexts, self.config)
        if self.lagging:
            # The cache gets each state one commit late: every batch after the first must take the database's.
            self.cached.update(self.behind)
            self.behind = dict(result.states)
        else:
            self.cached.update(result.states)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path, variant: str, db: psycopg.Connection[Any], processor_pool: asyncpg.Pool) -> None:
    spec = load(path)
    world = create_world(db, spec)
    contexts = ContextCache(ttl=3600)
    runner = Runner(processor_pool, contexts, spec.config.engine(), lagging=variant == "lagging")
    stop, listening = asyncio.Event(), asyncio.Event()
    pending: list[Event] = []

    async def flush() -> None:
        if pending:
            await runner.deliver(world.patient_id, list(pending))
            pending.clear()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(listen(processor_pool, contexts, stop, listening))
        await asyncio.wait_for(listening.wait(), 10)
        try:
            for step, item in world.events():
                if isinstance(item, RequirementSpec):
                    await flush()
                    assert contexts.holds(world.patient_id) or not spec.timeline.index(step)
                    add_requirement(db, world, item)
                    await wait_until(lambda: not contexts.holds(world.patient_id))
                    continue
                if isinstance(item, CommittedReading):
                    insert_reading(db, world, step)
                pending.append(item)
                if variant != "batched":
                    for _ in range(2 if variant == "redelivered" else 1):
                        await runner.deliver(world.patient_id, pending)
                    pending.clear()
            await flush()
        finally:
            stop.set()
    assert database_outcome(db, world) == expected_outcome(spec)


ESCALATION = next(p for p in SCENARIOS if p.stem == "warning_then_critical")


async def acknowledged_then_rest(
    db: psycopg.Connection[Any], pool: asyncpg.Pool, batches: Callable[[list[Event]], list[list[Event]]]
) -> tuple[str, bool, int]:
    """Warning episode opened by the first reading and acknowledged by the nurse; the remaining readings (an
    escalation, a reading inside the cooldown, a reminder, a clear but the last) delivered in `batches`. Returns
    the episode's status, whether it is still acknowledged, and its revision."""
    spec = load(ESCALATION)
    world = create_world(db, spec)
    runner = Runner(pool, ContextCache(ttl=3600), spec.config.engine(), lagging=False)
    readings: list[Event] = []
    for step, item in world.events():
        assert isinstance(item, CommittedReading)
        insert_reading(db, world, step)
        readings.append(item)
    await runner.deliver(world.patient_id, readings[:1])
    db.execute(
        "UPDATE vital_alerts SET status = 'acknowledged', acknowledged_at = opened_at, acknowledged_by = %s"
        " WHERE patient_id = %s",
        (world.users["nurse"], world.patient_id),
    )
    for batch in batches(readings[1:-1]):
        await runner.deliver(world.patient_id, batch)
    row = db.execute(
        "SELECT status::text, acknowledged_at IS NOT NULL, revision FROM vital_alerts WHERE patient_id = %s",
        (world.patient_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_an_escalation_clears_an_acknowledgement_also_when_later_changes_share_its_batch(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool
) -> None:
    one_by_one = await acknowledged_then_rest(db, processor_pool, lambda events: [[e] for e in events])
    together = await acknowledged_then_rest(db, processor_pool, lambda events: [events])
    # The escalation asks for a new acknowledgement; the reminder after it (same batch, a later round) keeps that.
    assert one_by_one[:2] == ("open", False)
    assert together == one_by_one
