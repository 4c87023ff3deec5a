"""A real `python -m ingest serve` for end-to-end tests, owning only the test's device topics."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest

from ingest.settings import IngestSettings
from tests.ingest.harness import end_session

ROOT = Path(__file__).resolve().parents[2]

IngestFor = Callable[..., None]

# Inline processors in a test's ingest must not act on other tests' patients: no clock ticks over every monitored
# patient, and no recovery of other processes' outbox rows (only rows older than a day would be taken).
INLINE_PROCESSORS = {
    "PROCESSOR_TRANSPORT": "inline",
    "PROCESSOR_TICK_INTERVAL_S": "0",
    "INGEST_RELAY_LEASE_S": "86400",
    "INGEST_RELAY_SCAN_INTERVAL_S": "3600",
}


@pytest.fixture
def ingest_for(ingest_settings: IngestSettings, tmp_path: Path) -> Iterator[IngestFor]:
    """`ingest_for(*serials, env={...})` starts an ingest process that subscribes to only these devices' readings
    (its own persistent session); `env` adds settings (default: no processors). Stopped at teardown."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    logs: list[IO[bytes]] = []

    def start(*serials: str, env: Mapping[str, str] | None = None) -> None:
        client_id = f"test-e2e-{secrets.token_hex(4)}"
        environment = {
            **os.environ,
            "INGEST_MQTT_CLIENT_ID": client_id,
            "INGEST_MQTT_READINGS_FILTERS": json.dumps([f"devices/{s}/readings" for s in serials]),
            "INGEST_MQTT_STATUS_FILTERS": "[]",
            "INGEST_METRICS_PORT": "0",
            "PROCESSOR_TRANSPORT": "none",
            **(env or {}),
        }
        log = (tmp_path / "ingest.log").open("ab")
        logs.append(log)
        cmd = [sys.executable, "-m", "ingest", "--log-level", "WARNING", "serve"]
        process = subprocess.Popen(cmd, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, client_id))

    yield start
    for process, client_id in started:
        process.terminate()
        process.wait(30)
        asyncio.run(end_session(ingest_settings, client_id))
    for log in logs:
        log.close()


async def until(predicate: Callable[[], bool], limit_s: float) -> bool:
    """Polls `predicate` every 0.2 s for up to `limit_s`; returns its last answer."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True
