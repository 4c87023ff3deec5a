"""Every scenario file through the Faust runner: a real worker process on real Kafka.

All scenarios with the same engine configuration share one worker and one topic (each scenario is its own
patient, so its own key). The test plays ingest: it commits each reading to vital_readings and produces the event;
ticks are produced as tick records. Before a requirement change the test waits until the worker has committed
every event so far, inserts the new version, and goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from processors.events import CommittedReading
from tests.processors.faust_harness import (
    FaustRun,
    config_environment,
    fail_with_diagnostics,
    produce,
    record,
    topic_run,
    wait_committed,
)
from tests.processors.scenario import Outcome, RequirementSpec, ScenarioSpec, World, all_paths, expected_outcome, load
from tests.processors.scenario_db import add_requirement, create_world, database_outcome, insert_reading

pytestmark = pytest.mark.slow

SETTLE_TIMEOUT = 90.0


@pytest.fixture
async def faust_run(tmp_path: Path) -> AsyncIterator[FaustRun]:
    async with topic_run("scenarios", tmp_path) as run:
        yield run


async def settle(db: psycopg.Connection[Any], worlds: list[World], run: FaustRun) -> dict[str, Outcome]:
    """Waits until every world's tables show its expected outcome (or the timeout); returns what they show."""
    expected = {w.spec.name: expected_outcome(w.spec) for w in worlds}
    seen: dict[str, Outcome] = {}
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while True:
                seen = {w.spec.name: database_outcome(db, w) for w in worlds}
                if seen == expected:
                    return seen
                await run.supervise()
                await asyncio.sleep(0.5)
    except TimeoutError:
        pending = sorted(name for name in expected if seen.get(name) != expected[name])
        await fail_with_diagnostics(run, f"scenarios not settled after {SETTLE_TIMEOUT:.0f} s: {pending}")
    return seen


async def play(db: psycopg.Connection[Any], specs: list[ScenarioSpec], run: FaustRun) -> None:
    worlds = [create_world(db, spec) for spec in specs]
    # Phases end at requirement changes: produce, wait until committed, change the requirement, go on.
    pending: list[tuple[World, RequirementSpec]] = []
    records: list[tuple[bytes, bytes]] = []
    steps = {w.spec.name: list(w.events()) for w in worlds}
    positions = dict.fromkeys(steps, 0)
    await run.start()
    while any(positions[name] < len(s) for name, s in steps.items()):
        for world in worlds:
            name = world.spec.name
            key = str(world.patient_id)
            while positions[name] < len(steps[name]):
                step, item = steps[name][positions[name]]
                if isinstance(item, RequirementSpec):
                    if not any(w is world for w, _ in pending):
                        pending.append((world, item))
                    break
                if isinstance(item, CommittedReading):
                    insert_reading(db, world, step)
                records.append(record(key, item))
                positions[name] += 1
        await produce(run.topic, records)
        records.clear()
        if pending:
            await wait_committed(run, SETTLE_TIMEOUT)
            for world, requirement in pending:
                add_requirement(db, world, requirement)
                positions[world.spec.name] += 1
            pending.clear()
    outcomes = await settle(db, worlds, run)
    for world in worlds:
        assert outcomes[world.spec.name] == expected_outcome(world.spec), world.spec.name


async def test_all_scenarios(db: psycopg.Connection[Any], faust_run: FaustRun) -> None:
    specs = [load(path) for path in all_paths()]
    configs = {spec.config for spec in specs}
    assert len(configs) == 1, "scenarios with their own engine configuration need a worker of their own"
    faust_run.settings.update(config_environment(specs[0].config))
    await play(db, specs, faust_run)
    assert await faust_run.stop() == 0, faust_run.log_tail()
