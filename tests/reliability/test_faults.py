"""Short fault tests (the long ones are `make chaos`): a real ingest process and a fleet publishing with
`meta.seq` against a private PostgreSQL cluster and Mosquitto (scripts/chaos/stack.py), so stopping the
database here never touches the shared one. Each counts every message: nothing lost, nothing stored twice,
everything handed to the processors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from ingest.broker_sync import sync_broker
from scripts.chaos import scenarios
from scripts.chaos.scenarios import Env, Load
from scripts.chaos.service import ingest
from scripts.chaos.stack import Stack, stack

RATE = 200  # messages/s over the fleet: low load, the point is the fault
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_stack() -> Iterator[Stack]:
    with stack() as running:
        yield running


@pytest.fixture
async def env(private_stack: Stack) -> AsyncIterator[Env]:
    yield await scenarios.provision(private_stack, 10)


async def test_kill_9_of_ingest_mid_load_loses_and_duplicates_nothing(env: Env) -> None:
    service = ingest(env.stack, ingest_mqtt_client_id="test-kill", ingest_mqtt_share_group="test-kill").start()
    try:
        await asyncio.to_thread(service.ready)
        load = Load(env, RATE, 16).start()
        await asyncio.sleep(8)
        await asyncio.to_thread(service.kill)
        service.start()
        await asyncio.to_thread(service.ready)
        result = await load.result()
        recovery, reconciled, duplicated = await scenarios.settle(env, result, time.monotonic(), limit_s=40)
    finally:
        service.close()
    assert result["sent"] >= 0.9 * RATE * 16 and result["unacked"] == 0 and result["refused"] == 0
    assert recovery is not None, reconciled
    assert (reconciled.missing, reconciled.partial, reconciled.unexpected, duplicated) == (0, 0, 0, 0)
    assert reconciled.stored == result["sent"]
    assert scenarios.outbox_rows(env) == 0  # every committed reading was handed to the processors


async def test_a_postgres_restart_mid_load_stops_acks_and_loses_nothing(env: Env) -> None:
    service = ingest(env.stack, ingest_mqtt_client_id="test-pg", ingest_mqtt_share_group="test-pg").start()
    try:
        await asyncio.to_thread(service.ready)
        load = Load(env, RATE, 16).start()
        await asyncio.sleep(5)
        await asyncio.to_thread(env.stack.pg_stop)
        await asyncio.sleep(2)  # a batch committed just before the stop may still be acknowledged
        acks = service.metric("ingest_acks_total")
        await asyncio.sleep(6)
        acked_while_down = service.metric("ingest_acks_total") - acks
        await asyncio.to_thread(env.stack.pg_start)
        result = await load.result()
        recovery, reconciled, duplicated = await scenarios.settle(env, result, time.monotonic(), limit_s=40)
        assert service.alive, service.log()[-2000:]
        log = service.log()  # closing removes it; a stall after the restart is diagnosed from it
    finally:
        service.close()
    assert acked_while_down == 0
    assert result["unacked"] == 0 and result["refused"] == 0
    assert recovery is not None, f"{reconciled}\ningest log (end):\n{log[-4000:]}"
    assert (reconciled.missing, reconciled.partial, reconciled.unexpected, duplicated) == (0, 0, 0, 0)
    assert reconciled.stored == result["sent"]
    assert scenarios.outbox_rows(env) == 0


async def test_a_graceful_broker_restart_with_ingest_running_loses_nothing(env: Env) -> None:
    """The default plain subscription lives in ingest's persistent session, which Mosquitto saves at shutdown and
    restores at start: readings published before ingest has reconnected are queued for it, not dropped (with a
    `$share/...` subscription Mosquitto 2.0 answers them 0x10 "no matching subscribers": docs/reliability.md)."""
    service = ingest(env.stack, ingest_mqtt_client_id="test-broker-restart").start()  # the default share group
    try:
        await asyncio.to_thread(service.ready)
        load = Load(env, RATE, 12).start()
        await asyncio.sleep(4)
        await asyncio.to_thread(env.stack.broker_restart)
        result = await load.result()
        recovery, reconciled, duplicated = await scenarios.settle(env, result, time.monotonic(), limit_s=40)
        assert service.alive, service.log()[-2000:]
    finally:
        service.close()
        await scenarios.end_session(env.stack, "test-broker-restart")
    assert result["reason_codes"].get("0x10", 0) == 0  # nothing acknowledged without a subscriber
    assert result["refused"] == 0
    assert result["sent"] >= 0.9 * RATE * 12
    assert recovery is not None, reconciled
    # Publishes the broker never acknowledged (in flight as it stopped) are the device's to resend, not a loss.
    lost = max(0, reconciled.missing - result["unacked"]) + reconciled.partial
    assert (lost, reconciled.unexpected, duplicated) == (0, 0, 0)
    assert scenarios.outbox_rows(env) == 0


@pytest.mark.xfail(
    strict=True,
    reason="Mosquitto 2.0.11 (eclipse-mosquitto/mosquitto#2934): a reload (SIGHUP: every broker-sync) after a restart"
    " ends the restored session of a client that has not reconnected since; readings published to it from then until"
    " ingest reconnects are acknowledged to the devices and lost (docs/reliability.md, known limits)",
)
async def test_a_broker_reload_after_a_restart_while_ingest_is_away_loses_nothing(env: Env) -> None:
    service = ingest(env.stack, ingest_mqtt_client_id="test-reload").start()
    try:
        await asyncio.to_thread(service.ready)
        await asyncio.to_thread(service.stop)  # ingest away: the broker queues for its persistent session
        await asyncio.to_thread(env.stack.broker_restart)
        await asyncio.to_thread(sync_broker, scenarios.ingest_settings(env.stack))  # a device added or revoked
        load = Load(env, RATE, 4).start()
        result = await load.result()
        service.start()
        await asyncio.to_thread(service.ready)
        recovery, reconciled, duplicated = await scenarios.settle(env, result, time.monotonic(), limit_s=15)
    finally:
        service.close()
        await scenarios.end_session(env.stack, "test-reload")
    assert result["unacked"] == 0 and result["refused"] == 0
    assert (reconciled.missing, reconciled.partial, duplicated) == (0, 0, 0), reconciled
    assert recovery is not None
