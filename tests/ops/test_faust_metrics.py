"""The Faust processors worker as it runs (real Kafka, real PostgreSQL): /healthz, /readyz once its consumer
holds partitions, and /metrics counting what it consumed and committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processors.events import Tick
from tests import factories
from tests.ingest.harness import free_port
from tests.processors.faust_harness import (
    PARTITIONS,
    FaustRun,
    committed_everything,
    create_topic,
    delete_topics,
    new_run_id,
    produce,
    record,
)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[FaustRun, int]]:
    port = free_port()
    run = FaustRun(new_run_id("metrics"), tmp_path, {"PROCESSOR_FAUST_METRICS_PORT": str(port)})
    await create_topic(run.topic)
    try:
        await run.start()
        yield run, port
    finally:
        if run.process is not None:
            assert await run.stop() == 0, run.log_tail()
        await delete_topics(run.run_id)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with http.get(url) as r:
            return r.status, await r.text()
    except aiohttp.ClientError:
        return 0, ""


def _samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


async def test_the_worker_serves_probes_and_counts_its_batches(
    worker: tuple[FaustRun, int], patient: factories.Patient
) -> None:
    run, port = worker
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with asyncio.timeout(60):
            while (await _get(http, base + "/readyz"))[0] != 200:
                run.assert_running()
                await asyncio.sleep(0.2)
        assert await _get(http, base + "/healthz") == (200, "ok\n")

        await produce(run.topic, [record(str(patient.id), Tick(datetime.now(UTC)))] * 3)
        async with asyncio.timeout(60):
            while not await committed_everything(run.run_id, run.topic):
                run.assert_running()
                await asyncio.sleep(0.2)
        status, page = await _get(http, base + "/metrics")
        assert status == 200
        samples = _samples(page)
        assert samples[("processors_records_consumed_total", ())] == 3
        assert samples[("processors_events_evaluated_total", (("kind", "tick"),))] == 3
        assert samples[("processors_events_evaluated_total", (("kind", "reading"),))] == 0
        assert samples[("processors_batch_size_events_sum", ())] == 3
        assert (
            samples[("processors_batch_duration_seconds_count", ())]
            == samples[("processors_batch_size_events_count", ())]
        )
        assert samples[("processors_partitions_assigned", ())] == PARTITIONS
        assert samples[("processors_errors_total", (("stage", "batch"),))] == 0
        # The probe polls every 5 s: the lag it reads once everything is committed is zero.
        lags = []
        for _ in range(30):
            lags.append(_samples((await _get(http, base + "/metrics"))[1])[("processors_consumer_lag_records", ())])
            if lags[-1] == 0:
                break
            await asyncio.sleep(0.5)
        assert lags[-1] == 0, lags
