"""The benchmark sandbox's private broker: its load-generator user publishes for every device (the fleet's
multiplexed mode, through a real ingest, counted exactly) and for nothing else; the project's broker never has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from device_simulators.load import LoadMessages
from device_simulators.publisher import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, Connection
from device_simulators.reconcile import reconcile
from ingest.settings import IngestSettings
from scripts.bench import pipeline
from scripts.bench.load import result, start_publisher, write_fleet
from scripts.bench.sandbox import LOADGEN_USER, Sandbox, sandbox


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with sandbox() as created:
        yield created


async def test_multiplexed_fleet_is_stored_exactly_and_the_loadgen_user_exists_only_in_the_sandbox(
    box: Sandbox, ingest_settings: IngestSettings
) -> None:
    fleet = box.provision("mux", 6)
    credentials = write_fleet(box, fleet, "mux")
    identity = box.loadgen()
    assert identity.username == LOADGEN_USER
    assert f"user {LOADGEN_USER}\ntopic write devices/+/readings\n" in (box.ingest.broker_dir / "acl").read_text()
    assert LOADGEN_USER not in (ingest_settings.broker_dir / "acl").read_text()
    assert LOADGEN_USER not in (ingest_settings.broker_dir / "passwd").read_text()

    ingest = pipeline.start_ingest(box, {})
    try:
        await asyncio.sleep(3)  # ingest connects and subscribes
        out = box.state_dir / "mux.json"
        publisher = start_publisher(
            box, credentials, out, devices=6, messages=600, readings=2, multiplex=2, duration=60
        )
        assert await asyncio.to_thread(publisher.wait, 60) == 0
        sent = result(out)
        assert (sent["mode"], sent["connections"], sent["connected"]) == ("multiplexed", 2, 2)
        assert sent["sent"] == sent["acked"] == 600 and sent["refused"] == 0 and sent["errors"] == 0
        assert set(sent["last_seq"]) == {d.serial for d in fleet.devices}

        deadline = time.monotonic() + 30
        for _ in range(150):
            if await pipeline.committed(box) >= 1200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        origin = datetime.fromisoformat(sent["origin"])
        span = LoadMessages(sent["run_id"], 2, origin).span(max(sent["last_seq"].values()))
        with box.admin() as db:
            counted = reconcile(db, sent["run_id"], sent["last_seq"], 2, origin, span)
        assert counted.exact and (counted.sent, counted.stored, counted.rows) == (600, 600, 1200)
    finally:
        await pipeline.stop_ingest(box, ingest)

    # The load generator may publish readings for any device (accepted: no subscriber is left to take this one),
    # and nothing else (status, other topics).
    reasons: dict[int, int] = {}
    conn = Connection(
        "mux-acl", identity.username, identity.password, on_ack=lambda seq, reason, _: reasons.update({seq: reason})
    )
    await conn.connect(box.broker)
    try:
        serial = fleet.devices[0].serial
        for seq, topic in enumerate((f"devices/{serial}/readings", f"devices/{serial}/status", "other/topic"), 1):
            await conn.publish(topic, b"{}", seq)
        assert await conn.drain(10)
    finally:
        await conn.close()
    assert reasons == {1: NO_MATCHING_SUBSCRIBERS, 2: NOT_AUTHORIZED, 3: NOT_AUTHORIZED}
