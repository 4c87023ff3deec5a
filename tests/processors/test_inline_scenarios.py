"""Every scenario file through the inline runner against the real database.

The test plays ingest: it commits each reading to vital_readings (as the schema owner) and then hands the event
to `InlineProcessor.deliver`; ticks go to `tick`; a requirement change is inserted as a new version and must
reach the runner through LISTEN/NOTIFY (its context cache is given a TTL far beyond the test). Variants deliver
every reading twice, or throw away the stored engine state between steps so it is rebuilt from the tables.

The state is thrown away only between steps received at different instants: readings received together come
from one ingest message and are delivered in one call (one transaction), and a rebuild holds the readings received
before the event at hand as history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from processors.contexts import ContextCache
from processors.events import CommittedReading, Tick
from processors.inline import InlineProcessor
from tests.processors.scenario import RequirementSpec, all_paths, expected_outcome, load
from tests.processors.scenario_db import add_requirement, create_world, database_outcome, insert_reading

SCENARIOS = all_paths()
VARIANTS = ["once", "redelivered", "rebuilt"]


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polls a plain attribute of the runner's cache
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path, variant: str, db: psycopg.Connection[Any], processor_pool: asyncpg.Pool) -> None:
    spec = load(path)
    world = create_world(db, spec)
    contexts = ContextCache(ttl=3600)
    processor = InlineProcessor(processor_pool, spec.config.engine(), contexts=contexts)
    stop = asyncio.Event()
    steps = list(world.events())
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(processor.listen(stop))
        await asyncio.wait_for(processor.listening.wait(), 10)
        try:
            for position, (step, item) in enumerate(steps):
                if isinstance(item, RequirementSpec):
                    assert contexts.holds(world.patient_id) or not spec.timeline.index(step)
                    add_requirement(db, world, item)
                    await wait_until(lambda: not contexts.holds(world.patient_id))
                elif isinstance(item, Tick):
                    await processor.tick(item.now, [world.patient_id])
                else:
                    assert isinstance(item, CommittedReading)
                    insert_reading(db, world, step)
                    for _ in range(2 if variant == "redelivered" else 1):
                        await processor.deliver([item])
                following = steps[position + 1][0].at if position + 1 < len(steps) else None
                if variant == "rebuilt" and following != step.at:
                    db.execute("DELETE FROM processor_states WHERE patient_id = %s", (world.patient_id,))
        finally:
            stop.set()
    assert database_outcome(db, world) == expected_outcome(spec)
