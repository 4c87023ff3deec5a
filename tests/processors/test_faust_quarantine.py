"""Poison isolation in the Faust runner: a real worker process on real Kafka.

Four patients stream their readings; one has a stored engine state its next write cannot encode (the largest bigint
version: every attempt fails with SQLSTATE 22000). The worker sets that patient's events aside, commits the others,
and its consumer group commits every offset; after the fix, `quarantine retry` evaluates the set-aside events.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from processors.inline import InlineProcessor
from processors.quarantine import list_quarantined
from processors.quarantine_cli import retry
from tests.ingest.harness import free_port
from tests.processors.faust_harness import (
    FaustRun,
    produce,
    record,
    topic_run,
    wait_committed,
)
from tests.processors.scenario import DIRECTORY, expected_outcome, load
from tests.processors.scenario_db import create_world, database_outcome
from tests.processors.test_quarantine import insert_readings, poison

pytestmark = pytest.mark.slow

CRISIS = DIRECTORY / "hypertensive_crisis.yaml"


@pytest.fixture
async def faust_run(tmp_path: Path) -> AsyncIterator[FaustRun]:
    settings = {
        "PROCESSOR_BATCH_MAX": "100",
        "PROCESSOR_BATCH_WITHIN_S": "0.5",
        "PROCESSOR_FAUST_METRICS_PORT": str(free_port()),
        "PROCESSOR_METRICS_HOST": "127.0.0.1",
    }
    async with topic_run("quarantine", tmp_path, settings) as run:
        yield run


def scrape(run: FaustRun, name: str, labels: str) -> float:
    port = run.settings["PROCESSOR_FAUST_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    assert found is not None, text[:2000]
    return float(found.group(1))


async def test_the_worker_sets_a_poisoned_patient_aside_and_commits_everyone_else(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool, faust_run: FaustRun
) -> None:
    spec = load(CRISIS)
    worlds = [create_world(db, spec) for _ in range(4)]
    sick, healthy = worlds[0], worlds[1:]
    per_world = insert_readings(db, worlds)
    # The poisoned patient has a stored state (its first reading evaluated), then the state is corrupted.
    first, *rest = per_world[sick.patient_id]
    await InlineProcessor(processor_pool, spec.config.engine()).deliver([first])
    poison(db, sick.patient_id)

    records = [
        record(str(w.patient_id), r) for w in worlds for r in per_world[w.patient_id] if r is not first
    ]  # per key in order
    await faust_run.start()
    await produce(faust_run.topic, records)
    await wait_committed(faust_run, 90)  # the hand-off progressed: every offset committed

    for world in healthy:
        assert database_outcome(db, world) == expected_outcome(spec)
    async with processor_pool.acquire() as conn:
        held = await list_quarantined(conn, patients=[sick.patient_id])
    assert sorted(q.event_key for q in held) == sorted(str(r.reading_id) for r in rest)
    assert {(q.error_class, q.sqlstate) for q in held} == {("DataError", "22000")}
    assert scrape(faust_run, "processors_quarantined_events_total", 'kind="reading"') == len(rest)
    faust_run.assert_running()

    db.execute("DELETE FROM processor_states WHERE patient_id = %s", (sick.patient_id,))
    report = await retry(processor_pool, spec.config.engine(), patients=[sick.patient_id])
    assert (report.resolved, report.failed_events) == (len(rest), 0)
    assert database_outcome(db, sick) == expected_outcome(spec)
