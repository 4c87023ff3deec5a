"""The Faust worker's stall watchdog: a worker that stops making progress with records waiting exits (code 70) for
its supervisor to restart it, and the restart loses and duplicates nothing.

The stall is made real and deterministic: the test holds the patient's advisory lock, so the worker's batch waits
inside PostgreSQL (not a database error: the worker is not retrying, it is stuck).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from processors.events import CommittedReading
from processors.store import LOCK_CLASS, lock_key
from processors.supervision import EXIT_STALLED
from tests.processors.faust_harness import FaustRun, produce, record, topic_run
from tests.processors.scenario import DIRECTORY, expected_outcome, load
from tests.processors.scenario_db import create_world, database_outcome, insert_reading
from tests.roles import RoleSettings

pytestmark = pytest.mark.slow


@pytest.fixture
async def faust_run(tmp_path: Path) -> AsyncIterator[FaustRun]:
    async with topic_run("watchdog", tmp_path, {"PROCESSOR_STALL_TIMEOUT_S": "6"}) as run:
        yield run


async def test_a_stuck_worker_exits_and_its_restart_completes_the_stream(
    db: psycopg.Connection[Any], faust_run: FaustRun, roles: RoleSettings
) -> None:
    spec = load(DIRECTORY / "hypertensive_crisis.yaml")
    world = create_world(db, spec)
    records = []
    for step, item in world.events():
        assert isinstance(item, CommittedReading)
        insert_reading(db, world, step)
        records.append(record(str(world.patient_id), item))
    with psycopg.connect(roles.dsn("owner"), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(world.patient_id)))
        await faust_run.start()
        await produce(faust_run.topic, records)
        assert faust_run.process is not None
        async with asyncio.timeout(90):
            returncode = await faust_run.process.wait()
        assert returncode == EXIT_STALLED, faust_run.log_tail()
        assert "stalled" in faust_run.log.read_text(errors="replace")
        assert database_outcome(db, world).notifications == []
    await faust_run.supervise()  # the lock is released with its session: the restarted worker can work
    outcome = None
    async with asyncio.timeout(90):
        while (outcome := database_outcome(db, world)) != expected_outcome(spec):
            await faust_run.supervise()
            await asyncio.sleep(0.5)
    assert outcome == expected_outcome(spec)
    assert faust_run.stall_restarts == 1
    assert await faust_run.stop() == 0, faust_run.log_tail()
