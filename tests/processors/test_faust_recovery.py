"""Kill -9 the Faust worker mid-stream and start it again: no notification lost, none duplicated.

Forty patients (copies of ten scenario files) stream their readings at once; the worker takes small batches so the
stream lasts. As soon as part of the notifications exist, the worker is killed with SIGKILL (no offset commit, no
changelog flush), then started again with the same app id. It recovers its table from the changelog, Kafka
redelivers whatever was not committed, and in the end every patient's tables hold exactly its scenario's outcome.
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
    produce,
    progress,
    record,
    topic_run,
)
from tests.processors.scenario import DIRECTORY, expected_outcome, load
from tests.processors.scenario_db import create_world, database_outcome, insert_reading

pytestmark = pytest.mark.slow

SCENARIOS = [
    "hypertensive_crisis", "warning_then_critical", "flapping_hysteresis", "tachycardia_k_of_n", "fever",
    "out_of_order_arrival", "desaturation_recovery", "late_backfill_day", "heart_failure_weight_gain", "hypoglycemia",
]  # fmt: skip
COPIES = 4
TIMEOUT = 120.0
RESTART_S = 30.0
MAX_RESTARTS = 8


@pytest.fixture
async def faust_run(tmp_path: Path) -> AsyncIterator[FaustRun]:
    async with topic_run("recovery", tmp_path, {"PROCESSOR_BATCH_MAX": "3", "PROCESSOR_BATCH_WITHIN_S": "0.01"}) as run:
        yield run


def notification_count(db: psycopg.Connection[Any], patients: list[Any]) -> int:
    row = db.execute("SELECT count(*) FROM notifications WHERE patient_id = ANY(%s)", (patients,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_kill_9_mid_stream_loses_and_duplicates_nothing(db: psycopg.Connection[Any], faust_run: FaustRun) -> None:
    specs = [load(DIRECTORY / f"{name}.yaml") for name in SCENARIOS for _ in range(COPIES)]
    worlds = [create_world(db, spec) for spec in specs]
    patients = [w.patient_id for w in worlds]
    expected_total = sum(len(expected_outcome(spec).notifications) for spec in specs)
    records = []
    for position in range(max(len(spec.timeline) for spec in specs)):
        for world in worlds:  # interleaved, as devices would send
            steps = list(world.events())
            if position < len(steps):
                step, item = steps[position]
                assert isinstance(item, CommittedReading)
                insert_reading(db, world, step)
                records.append(record(str(world.patient_id), item))
    await faust_run.start()
    await produce(faust_run.topic, records)

    async with asyncio.timeout(TIMEOUT):
        while notification_count(db, patients) < expected_total // 5:
            faust_run.assert_running()
            await asyncio.sleep(0.02)
    await faust_run.kill()
    at_kill = notification_count(db, patients)
    # A partition the killed worker never committed on is read again from its first record: the case where a
    # record Faust drops at start-up is acknowledged past unless the worker checks against the partition's start.
    committed_at_kill = await progress(faust_run.run_id, faust_run.topic)
    assert at_kill < expected_total, "the stream was over before the kill: make it longer"

    await faust_run.start()
    outcomes = {}
    # TIMEOUT of work, plus RESTART_S for each restart the supervisor makes: the worker exits 70 on a consumer gap
    # (processors.offsets) and a restart waits out its killed predecessor's session; MAX_RESTARTS bounds that.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline + RESTART_S * faust_run.stall_restarts:
        outcomes = {i: database_outcome(db, w) for i, w in enumerate(worlds)}
        if all(outcomes[i] == expected_outcome(w.spec) for i, w in enumerate(worlds)):
            break
        await faust_run.supervise()
        assert faust_run.stall_restarts <= MAX_RESTARTS, faust_run.log_tail(600)
        await asyncio.sleep(0.5)
    unsettled = [i for i, w in enumerate(worlds) if outcomes[i] != expected_outcome(w.spec)]
    if unsettled:
        offsets = await progress(faust_run.run_id, faust_run.topic)
        await faust_run.dump_tasks()
        counts = [(i, worlds[i].spec.name, len(outcomes[i].notifications)) for i in unsettled]
        pytest.fail(
            f"unsettled {counts}; (committed, end) per partition {offsets}, at the kill {committed_at_kill}; watchdog"
            f" restarts {faust_run.stall_restarts}\n{faust_run.log_tail(600)}"
        )
    assert notification_count(db, patients) == expected_total
    assert at_kill > 0
    print(
        f"kill -9 at {at_kill}/{expected_total} notifications, (committed, end) per partition {committed_at_kill};"
        f" restarts on exit 70: {faust_run.stall_restarts}"
    )
    log = faust_run.log.read_text(errors="replace")
    for reason in ("exiting for a restart",):
        if reason in log:
            print(log[log.rindex("\n", 0, log.index(reason)) :][:20000])
    assert await faust_run.stop() == 0, faust_run.log_tail()
