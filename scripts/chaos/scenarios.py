"""Fault scenarios under load. Each runs the fleet publisher (device_simulators, `meta.seq` per device) against a
chaos stack while a fault task breaks something, then counts exactly what was lost and duplicated.

Counting: `lost` is the number of messages the broker acknowledged to a device that never reached
vital_readings (sent - stored - never acknowledged); `duplicated` the readings stored more than once for one
(device, meta.seq, position) — the primary key makes it 0 unless identity is broken; `recovery` the seconds from
the end of the fault until every acknowledged message was stored and handed to the processors (outbox empty).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from device_simulators.credentials import Fleet
from device_simulators.fleet import FleetPlan, run_fleet
from device_simulators.load import LoadMessages
from device_simulators.provision import provision_fleet
from device_simulators.publisher import Broker, ConnectError, Connection
from device_simulators.reconcile import Reconciliation, reconcile
from ingest.admission import Limits
from ingest.broker_sync import sync_broker
from ingest.settings import IngestSettings
from scripts.chaos.service import Process, ingest
from scripts.chaos.stack import ROOT, Stack


@dataclass
class Row:
    """One line of the chaos table."""

    scenario: str
    load: str
    faults: str
    lost: int | None
    duplicated: int | None
    recovery_s: float | None
    ok: bool
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Env:
    """A provisioned fleet on a running stack."""

    stack: Stack
    fleet: Fleet

    @property
    def serials(self) -> list[str]:
        return [d.serial for d in self.fleet.devices]


def ingest_settings(stack: Stack) -> IngestSettings:
    return IngestSettings(
        rpm_state_dir=stack.root, postgres_port=stack.pg_port, mqtt_port=stack.mqtt_port
    )  # fmt: skip


async def _accepted(fleet: Fleet, limit_s: float = 20.0) -> None:
    """Waits until the broker (after a reload) accepts the newest device."""
    last = fleet.devices[-1]
    deadline = time.monotonic() + limit_s
    while True:
        conn = Connection(f"probe-{secrets.token_hex(3)}", last.serial, last.password, on_ack=lambda *_: None)
        try:
            await conn.connect(fleet.broker, limit_s=2)
        except ConnectError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        await conn.close()
        return


async def provision(stack: Stack, devices: int, *, care_team: bool = False) -> Env:
    """A fleet of `devices` patients with one device each, an active care plan and a heart-rate requirement that
    the load's values (55-99 /min) never breach; with `care_team`, one nurse each (to count notifications)."""
    broker = Broker("127.0.0.1", stack.mqtt_port)
    with stack.connect() as conn:
        org, fleet = provision_fleet(conn, f"chaos-{secrets.token_hex(3)}", devices, broker)
        conn.execute(
            "INSERT INTO care_plans (organization_id, patient_id, status, title, start_date)"
            " SELECT organization_id, id, 'active', 'Chaos', current_date - 30 FROM patients"
            " WHERE organization_id = %s",
            (org,),
        )
        conn.execute(
            "INSERT INTO vital_requirements (organization_id, patient_id, vital_type_id, version, effective_from,"
            " warning_high, critical_high, cooldown_minutes)"
            " SELECT organization_id, id, 1, 1, now() - interval '30 days', 120, 140, 600 FROM patients"
            " WHERE organization_id = %s",
            (org,),
        )
        if care_team:
            rows = conn.execute("SELECT id FROM patients WHERE organization_id = %s", (org,)).fetchall()
            for (patient_id,) in rows:
                user = conn.execute(
                    "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
                    " VALUES (%s, %s, 'x', 'provider', 'Nurse', 'Chaos') RETURNING id",
                    (org, f"nurse-{secrets.token_hex(6)}@chaos.test"),
                ).fetchone()
                assert user is not None
                provider = conn.execute(
                    "INSERT INTO healthcare_providers (organization_id, user_id, provider_type)"
                    " VALUES (%s, %s, 'nurse') RETURNING id",
                    (org, user[0]),
                ).fetchone()
                assert provider is not None
                conn.execute(
                    "INSERT INTO patient_provider_assignments (organization_id, patient_id, provider_id, role,"
                    " started_at) VALUES (%s, %s, %s, 'nurse', now() - interval '30 days')",
                    (org, patient_id, provider[0]),
                )
    sync_broker(ingest_settings(stack))
    await _accepted(fleet)
    return Env(stack, fleet)


async def end_session(stack: Stack, client_id: str) -> None:
    """Ends an ingest process's persistent broker session (a clean start). A session left behind keeps its
    subscription: later scenarios would still work, but the broker would queue a copy of every reading for it and
    never answer 0x10 "no matching subscribers", which the broker scenarios count."""
    settings = ingest_settings(stack)
    client = gmqtt.Client(client_id, clean_session=True)
    client.set_auth_credentials(settings.mqtt_ingest_user, settings.mqtt_ingest_password.get_secret_value())
    await client.connect("127.0.0.1", stack.mqtt_port, version=MQTTv50)
    await client.disconnect()


@dataclass
class Load:
    """A fleet run in the background."""

    env: Env
    rate: float
    duration_s: float
    run_id: str = field(default_factory=lambda: f"chaos{secrets.token_hex(3)}")
    task: asyncio.Task[dict[str, Any]] | None = None

    def start(self) -> Load:
        plan = FleetPlan(
            run_id=self.run_id, rate=self.rate, duration_s=self.duration_s, window=2000, drain_timeout_s=180
        )
        passwords = [d.password for d in self.env.fleet.devices]
        self.task = asyncio.create_task(
            run_fleet(plan, self.env.serials, self.env.fleet.broker, device_passwords=passwords, progress=None)
        )
        return self

    async def result(self) -> dict[str, Any]:
        assert self.task is not None
        return await self.task


def count(env: Env, result: dict[str, Any]) -> tuple[Reconciliation, int]:
    """The run reconciled against vital_readings, and readings stored twice for one (device, seq, position)."""
    last_seq: dict[str, int] = result["last_seq"]
    origin = datetime.fromisoformat(result["origin"])
    span = LoadMessages("x", result["readings_per_message"], origin).span(max(last_seq.values(), default=0))
    with env.stack.connect() as conn:
        rec = reconcile(conn, result["run_id"], last_seq, result["readings_per_message"], origin, span)
        row = conn.execute(
            "SELECT count(*) - count(DISTINCT (device_id, metadata, measured_at)) FROM vital_readings"
            " WHERE measured_at >= %s AND measured_at < %s AND metadata->'meta'->>'run' = %s",
            (origin, origin + span + timedelta(seconds=1), result["run_id"]),
        ).fetchone()
    return rec, int(row[0]) if row else 0


def outbox_rows(env: Env) -> int:
    with env.stack.connect() as conn:
        row = conn.execute("SELECT count(*) FROM ingest_outbox").fetchone()
    return int(row[0]) if row else 0


async def settle(
    env: Env, result: dict[str, Any], fault_end: float, limit_s: float = 240.0
) -> tuple[float | None, Reconciliation, int]:
    """Waits until everything the broker acknowledged is stored and handed off; seconds since `fault_end`."""
    deadline = time.monotonic() + limit_s
    while True:
        rec, dup = await asyncio.to_thread(count, env, result)
        handed_off = await asyncio.to_thread(outbox_rows, env) == 0
        if rec.missing <= result["unacked"] and rec.partial == 0 and handed_off:
            return time.monotonic() - fault_end, rec, dup
        if time.monotonic() > deadline:
            return None, rec, dup
        await asyncio.sleep(0.5)


def _load_text(result: dict[str, Any], env: Env) -> str:
    return (
        f"{result['sent']:,} msg, {len(env.serials)} devices, offered {result['sent_per_s']:,.0f}/s"
        f" for {result['elapsed_s']:.0f}s"
    )


async def _finish(
    name: str,
    env: Env,
    load: Load,
    faults: str,
    fault_end: float,
    notes: list[str],
    ok: bool = True,
    settle_s: float = 240.0,
) -> Row:
    result = await load.result()
    # Recovery counts from the later of the fault's end and the load's end: backlog, not remaining load.
    recovery, rec, dup = await settle(env, result, max(fault_end, time.monotonic()), settle_s)
    lost = max(0, rec.missing - result["unacked"]) + rec.partial
    if result["unacked"]:
        notes.append(f"{result['unacked']} publishes never acknowledged by the broker")
    if recovery is None:
        notes.append(f"not settled: {rec.missing} missing, outbox {outbox_rows(env)} rows")
    good = ok and lost == 0 and dup == 0 and recovery is not None and result["refused"] == 0
    return Row(name, _load_text(result, env), faults, lost, dup, recovery, good, notes)


# --- scenarios ------------------------------------------------------------------------------------------------


async def kill_ingest(env: Env, *, rate: float, duration_s: float, every_s: float) -> Row:
    service = ingest(env.stack, ingest_mqtt_client_id="chaos-kill", ingest_mqtt_share_group="chaos-kill").start()
    service.ready()
    load = Load(env, rate, duration_s).start()
    kills, ready_s = 0, []
    started = time.monotonic()
    try:
        # The last kill comes as the load ends, so recovery measures the backlog it left.
        while (kills + 1) * every_s <= duration_s:
            await asyncio.sleep(max(0.0, started + (kills + 1) * every_s - time.monotonic()))
            await asyncio.to_thread(service.kill)
            kills += 1
            service.start()
            ready_s.append(await asyncio.to_thread(service.ready))
        fault_end = time.monotonic()
        notes = [f"restart to ready: max {max(ready_s, default=0):.1f}s"]
        return await _finish("kill -9 ingest", env, load, f"{kills} x kill -9 ingest (every {every_s:g}s)",
                             fault_end, notes)  # fmt: skip
    finally:
        service.close()


async def _database_outage(
    env: Env, name: str, fault: str, down: Callable[[], None], up: Callable[[], None], rate: float, outage_s: float
) -> Row:
    service = ingest(env.stack, ingest_mqtt_client_id=f"chaos-{name}", ingest_mqtt_share_group=f"chaos-{name}")
    service.start().ready()
    load = Load(env, rate, outage_s + 10).start()  # the load ends as the database comes back
    notes: list[str] = []
    try:
        await asyncio.sleep(10)
        await asyncio.to_thread(down)
        await asyncio.sleep(3)  # a batch that committed just before the fault may still be acknowledged
        acks_before = await asyncio.to_thread(service.metric, "ingest_acks_total") if service.alive else None
        await asyncio.sleep(outage_s - 3)
        acks_during = None
        if service.alive and acks_before is not None:
            acks_during = await asyncio.to_thread(service.metric, "ingest_acks_total") - acks_before
            notes.append(f"acks while down: {acks_during:.0f}")
            notes.append(f"ingest RSS at end of outage {service.rss_mb():.0f} MB")
        await asyncio.to_thread(up)
        fault_end = time.monotonic()
        crashed = not service.alive
        if crashed:
            notes.append(f"ingest exited during the outage: {service.last_error()}; restarted")
            service.start()
        row = await _finish(name, env, load, fault, fault_end, notes, ok=acks_during == 0 and not crashed)
        return row
    finally:
        service.close()


async def stop_database(env: Env, *, rate: float, outage_s: float) -> Row:
    return await _database_outage(
        env, "postgres-stop", f"PostgreSQL stopped {outage_s:g}s", env.stack.pg_stop, env.stack.pg_start, rate,
        outage_s,
    )  # fmt: skip


async def pause_database(env: Env, *, rate: float, outage_s: float) -> Row:
    return await _database_outage(
        env, "postgres-pause", f"PostgreSQL SIGSTOP {outage_s:g}s", env.stack.pg_pause, env.stack.pg_resume, rate,
        outage_s,
    )  # fmt: skip


async def broker_fault(env: Env, *, rate: float, kill: bool, share: str = "", ingest_online: bool = False) -> Row:
    """The broker restarts (SIGTERM, then start) or is killed (`kill -9`, then start) while devices publish.
    `share` is ingest's share group ("": the default plain subscription; "ingest": scale-out). With
    `ingest_online` ingest keeps running through the fault (it reconnects and resubscribes by itself); otherwise it
    goes offline first (the broker queues for its session) and comes back after the load."""
    kind = "kill -9" if kill else "restart"
    subscription = f"$share/{share}" if share else "plain"
    name = f"mosquitto {kind}, {subscription} subscription, ingest {'running' if ingest_online else 'offline'}"
    tag = f"broker-{'kill' if kill else 'restart'}-{share or 'plain'}-{'on' if ingest_online else 'off'}"
    service = ingest(env.stack, ingest_mqtt_client_id=f"chaos-{tag}", ingest_mqtt_share_group=share)
    service.start().ready()
    load = Load(env, rate, 20).start()
    try:
        await asyncio.sleep(6)
        if not ingest_online:
            await asyncio.to_thread(service.stop)
            await asyncio.sleep(6)
        await asyncio.to_thread(env.stack.broker_kill if kill else env.stack.broker_restart)
        if kill:
            await asyncio.to_thread(env.stack.broker_start)
        await load.result()  # devices keep publishing after the fault
        if not ingest_online:
            service.start()
        await asyncio.to_thread(service.ready)
        fault_end = time.monotonic()
        notes = [
            "ingest running throughout; broker fault at t=6s; devices publish throughout"
            if ingest_online
            else "ingest offline from t=6s to the end of the load; broker fault at t=12s; devices publish throughout"
        ]
        row = await _finish(name, env, load, f"mosquitto {kind} (persistence, autosave_interval 10s)", fault_end,
                            notes, settle_s=30 if kill or share else 240)  # fmt: skip
        result = await load.result()
        dropped = result["reason_codes"].get("0x10", 0)
        if dropped:
            row.notes.append(f"{dropped} publishes acknowledged 0x10 'no matching subscribers': dropped by the broker")
        if kill:
            row.ok = row.duplicated == 0  # the loss is measured and documented, not forbidden
            row.notes.append("kill -9 loses what arrived since the last autosave (<= 10s); docs/reliability.md")
        elif share:
            # Scale-out's documented window (Mosquitto 2.0 does not persist shared subscriptions): measured, not
            # forbidden; the default plain subscription must lose nothing.
            row.ok = row.duplicated == 0
            row.notes.append("shared subscription: dropped until a member resubscribed; docs/reliability.md")
        return row
    finally:
        service.close()
        await end_session(env.stack, f"chaos-{tag}")


async def overload(env: Env, *, capacity_probe_s: float, duration_s: float) -> Row:
    """Capacity first (a saturating burst: messages stored per second until all are in), then twice that."""
    service = ingest(env.stack, ingest_mqtt_client_id="chaos-overload", ingest_mqtt_share_group="chaos-overload")
    service.start().ready()
    try:
        started = time.monotonic()
        probe = await Load(env, 0, capacity_probe_s).start().result()
        drained, _, _ = await settle(env, probe, time.monotonic())
        if drained is None:
            return Row("overload 2x capacity", _load_text(probe, env), "capacity probe", None, None, None, False,
                       ["the capacity probe never drained"])  # fmt: skip
        capacity = probe["sent"] / (time.monotonic() - started)
        load = Load(env, 2 * capacity, duration_s).start()
        baseline = service.rss_mb()
        peak, peak_depth = baseline, 0.0
        while load.task is not None and not load.task.done():
            await asyncio.sleep(1)
            peak = max(peak, service.rss_mb())
            peak_depth = max(peak_depth, await asyncio.to_thread(service.metric, "ingest_queue_depth_messages"))
        fault_end = time.monotonic()
        notes = [
            f"capacity {capacity:,.0f} msg/s (a {capacity_probe_s:g}s saturating burst, stored and handed off)",
            f"ingest RSS {baseline:.0f} -> peak {peak:.0f} MB",
            f"peak in-process queue {peak_depth:,.0f} msgs (INGEST_QUEUE_MAX bounds it; the broker holds the rest)",
        ]
        return await _finish("overload 2x capacity", env, load, f"offered 2 x {capacity:,.0f} msg/s", fault_end,
                             notes, settle_s=600)  # fmt: skip
    finally:
        service.close()


async def _send(env: Env, payloads: list[bytes]) -> None:
    device = env.fleet.devices[0]
    conn = Connection(f"poison-{secrets.token_hex(3)}", device.serial, device.password, on_ack=lambda *_: None)
    await conn.connect(env.fleet.broker)
    for i, payload in enumerate(payloads):
        await conn.publish(f"devices/{device.serial}/readings", payload, i)
    await conn.drain(60)
    await conn.close()


async def poison(env: Env, *, rate: float) -> Row:
    """The hostile corpus mid-load (every message refused, none in the way), then the two that used to crash the
    validator (timestamps whose UTC form does not exist); ingest is restarted like a supervisor would (<= 3x)."""
    from tests.security import hostile

    service = ingest(env.stack, ingest_mqtt_client_id="chaos-poison", ingest_mqtt_share_group="chaos-poison")
    service.start().ready()
    load = Load(env, rate, 20).start()
    cases = hostile.corpus(now(), Limits())
    former = {"timestamp_year_1_east_offset", "timestamp_year_9999_west_offset"}
    harmless = [c.payload for c in cases if c.device == "assigned" and c.name not in former]
    crashing = [c.payload for c in cases if c.name in former]
    restarts = 0
    try:
        await asyncio.sleep(4)
        await _send(env, harmless)
        await asyncio.sleep(2)
        await _send(env, crashing)
        while load.task is not None and not load.task.done():
            await asyncio.sleep(0.5)
            if not service.alive and restarts < 3:
                restarts += 1
                service.start()
        fault_end = time.monotonic()
        notes = [f"{len(harmless)} hostile messages, then {len(crashing)} that crashed the validator before 96c573a"]
        notes.append(f"ingest exited and was restarted {restarts}x; alive at the end: {service.alive}")
        row = await _finish("poison messages", env, load, "hostile corpus + crashing messages mid-load", fault_end,
                            notes, ok=restarts == 0, settle_s=20 if not service.alive else 240)  # fmt: skip
        return row
    finally:
        service.close()


BIGINT_MAX = 2**63 - 1


def _probe(run_id: str, value: int) -> bytes:
    """One heart-rate reading measured now (newer than any of the load's), outside the load's run and counts."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (
        f'{{"message_id":"{run_id}:1","readings":[{{"type":"heart_rate","value":{value},"unit":"/min",'
        f'"measured_at":"{at}"}}],"meta":{{"run":"{run_id}","seq":1}}}}'
    ).encode()


async def _send_probes(env: Env, indexes: list[int], value: int) -> None:
    async def one(index: int) -> None:
        device = env.fleet.devices[index]
        conn = Connection(f"probe-{secrets.token_hex(3)}", device.serial, device.password, on_ack=lambda *_: None)
        await conn.connect(env.fleet.broker)
        await conn.publish(f"devices/{device.serial}/readings", _probe(f"probe{secrets.token_hex(3)}", value), 1)
        await conn.drain(60)
        await conn.close()

    await asyncio.gather(*(one(i) for i in indexes))


def _patient_of(env: Env, index: int) -> Any:
    with env.stack.connect() as conn:
        row = conn.execute(
            "SELECT a.patient_id FROM device_assignments a JOIN devices d ON d.id = a.device_id"
            " WHERE d.serial = %s AND a.assigned_to IS NULL",
            (env.fleet.devices[index].serial,),
        ).fetchone()
    assert row is not None
    return row[0]


def _poison_state(env: Env, patient_id: Any) -> bool:
    """The patient's stored engine state at the largest bigint version, as tests/processors/test_quarantine.py
    does: every later state write (version + 1) fails with SQLSTATE 22000 on every attempt. False while the
    processors have not stored the patient's state yet."""
    from dataclasses import replace

    from processors.codec import dump_state, load_state
    from processors.store import LOCK_CLASS, lock_key

    with env.stack.connect() as conn, conn.transaction():
        # Under the patient's processors lock: a batch already in flight would otherwise overwrite the poison
        # with its own state when it commits (the runners write states under this lock, unconditionally).
        conn.execute("SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (LOCK_CLASS, lock_key(UUID(str(patient_id)))))
        row = conn.execute("SELECT state FROM processor_states WHERE patient_id = %s", (patient_id,)).fetchone()
        if row is None:
            return False
        state = replace(load_state(bytes(row[0])), version=BIGINT_MAX)
        conn.execute(
            "UPDATE processor_states SET state = %s, version = %s WHERE patient_id = %s",
            (dump_state(state), BIGINT_MAX, patient_id),
        )
    return True


def _alerts(env: Env, patients: list[Any]) -> dict[Any, int]:
    with env.stack.connect() as conn:
        rows = conn.execute(
            "SELECT p, (SELECT count(*) FROM vital_alerts a WHERE a.patient_id = p) FROM unnest(%s::uuid[]) p",
            (patients,),
        ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _quarantine(env: Env) -> dict[tuple[Any, str, bool], int]:
    """Quarantined rows by (patient, kind, resolved)."""
    with env.stack.connect() as conn:
        rows = conn.execute(
            "SELECT patient_id, CASE WHEN event_key = 'tick' THEN 'tick' ELSE 'reading' END,"
            " resolved_at IS NOT NULL, count(*) FROM processor_quarantine GROUP BY 1, 2, 3"
        ).fetchall()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


def _quarantined_metric(service: Process, kind: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, text = service.get("/metrics", timeout_s=10)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "processors_quarantined_events_total" and sample.labels.get("kind") == kind
    )


async def poison_patient(env: Env, *, rate: float, duration_s: float = 20, probes: int = 10) -> Row:
    """A processors poison: one monitored patient's batch fails deterministically mid-load (its stored state at
    the largest version, so every state write fails with SQLSTATE 22000). Each of `probes` other patients and the
    poisoned one then sends one reading above its warning threshold: each other patient gets its alert exactly
    once, the poisoned patient's events are quarantined and counted, and the load is stored and handed off without
    loss or duplicates. Then the fault is fixed (the state row removed; it is rebuilt from the tables) and
    `python -m processors quarantine retry` evaluates the set-aside events: the poisoned patient's alert opens."""
    service = ingest(env.stack, ingest_mqtt_client_id="chaos-poison-patient",
                     ingest_mqtt_share_group="chaos-poison-patient")  # fmt: skip
    service.start().ready()
    sick = await asyncio.to_thread(_patient_of, env, 0)
    probe_indexes = list(range(1, 1 + probes))
    probed = [await asyncio.to_thread(_patient_of, env, i) for i in probe_indexes]
    load = Load(env, rate, duration_s).start()
    started = time.monotonic()
    notes: list[str] = []
    try:
        await asyncio.sleep(duration_s / 4)
        deadline = time.monotonic() + 20
        while not await asyncio.to_thread(_poison_state, env, sick):
            if time.monotonic() > deadline:
                raise RuntimeError("the poisoned patient's state was never stored")
            await asyncio.sleep(0.2)
        poisoned_at = time.monotonic()
        await asyncio.sleep(1)
        await _send_probes(env, [0, *probe_indexes], 130)  # warning_high 120, critical_high 140
        await load.result()
        fault_end = time.monotonic()
        row = await _finish("poison patient (processors)", env, load,
                            f"1 patient's state writes fail (SQLSTATE 22000) from t={poisoned_at - started:.0f}s"
                            f" on; {probes} + 1 probe alerts", fault_end, notes)  # fmt: skip
        # The probes are outside the load's counts: wait until the last of them is handed off too.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(outbox_rows, env):
                break
            await asyncio.sleep(0.5)
        alerts = await asyncio.to_thread(_alerts, env, [sick, *probed])
        once = sum(1 for p in probed if alerts[p] == 1)
        notes.append(f"probe patients with their alert exactly once: {once}/{probes}; poisoned patient: {alerts[sick]}")
        held = await asyncio.to_thread(_quarantine, env)
        readings = held.get((sick, "reading", False), 0)
        ticks = held.get((sick, "tick", False), 0)
        others = sum(n for (p, _, _), n in held.items() if p != sick)
        counted = await asyncio.to_thread(_quarantined_metric, service, "reading")
        notes.append(
            f"quarantined: {readings} readings + {ticks} tick of the poisoned patient (processors_quarantined_events"
            f"_total{{kind=reading}} {counted:.0f}); of other patients: {others}"
        )
        ok = once == probes and alerts[sick] == 0 and readings > 0 and counted == readings and others == 0

        fixed = time.monotonic()
        with env.stack.connect() as conn:
            conn.execute("DELETE FROM processor_states WHERE patient_id = %s", (sick,))
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "processors", "quarantine", "retry", "--json"],
            cwd=ROOT, env=env.stack.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        retried_s = time.monotonic() - fixed
        report = json.loads(done.stdout) if done.returncode in (0, 1) and done.stdout.strip() else {}
        after = await asyncio.to_thread(_quarantine, env)
        unresolved = sum(n for (_, _, resolved), n in after.items() if not resolved)
        alerts_after = (await asyncio.to_thread(_alerts, env, [sick]))[sick]
        notes.append(
            f"fix (state row removed) + `quarantine retry`: exit {done.returncode}, {report.get('resolved')} resolved,"
            f" {report.get('failed_events')} failed again, {unresolved} unresolved left, poisoned patient's alerts"
            f" {alerts_after}, in {retried_s:.1f}s"
        )
        if done.returncode not in (0, 1):
            notes.append(f"retry stderr: {done.stderr.strip()[-300:]}")
        ok = ok and done.returncode == 0 and report.get("resolved") == readings + ticks and unresolved == 0
        ok = ok and alerts_after == 1
        row.ok = row.ok and ok
        return row
    finally:
        service.close()


SCENARIOS: dict[str, Callable[..., Awaitable[Row]]] = {
    "kill-ingest": kill_ingest,
    "stop-postgres": stop_database,
    "pause-postgres": pause_database,
    "restart-broker": broker_fault,
    "kill-broker": broker_fault,
    "overload": overload,
    "poison": poison,
    "poison-patient": poison_patient,
}


def now() -> datetime:
    return datetime.now(UTC)
