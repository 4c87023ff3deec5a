"""Every simulator message, clean or deliberately faulty, gets exactly its expected verdict from ingest's own
pure parser and judge (ingest.admission), with the unit registry loaded from the real `vital_types` tables."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from device_simulators.device import DeviceKind, make_device
from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.load import LoadMessages
from device_simulators.message import Envelope, accepted
from device_simulators.physiology import Condition, make_patient
from device_simulators.scenario import SCENARIOS, run_scenario
from device_simulators.simulation import Script, Subject, simulate
from device_simulators.vitals import SPECS
from ingest import admission
from ingest.directory import Assignment, DeviceRecord
from ingest.identity import RecentIdentities, plan_batch
from ingest.units import UnitRegistry, build_registry

START = datetime(2026, 11, 2, 15, tzinfo=UTC)
LIMITS = admission.Limits()


@pytest.fixture
def units(db: psycopg.Connection[Any]) -> UnitRegistry:
    types = db.execute(
        "SELECT id, code, loinc, loinc_aliases, canonical_unit, plausible_min, plausible_max, decimal_precision"
        " FROM vital_types"
    ).fetchall()
    unit_rows = db.execute("SELECT vital_type_id, unit, factor, pre_offset FROM vital_type_units").fetchall()
    return build_registry(types, unit_rows)


def directory(serials: set[str]) -> dict[str, DeviceRecord]:
    since = datetime(2000, 1, 1, tzinfo=UTC)
    return {
        s: DeviceRecord(uuid.uuid4(), uuid.uuid4(), s, False, (Assignment(uuid.uuid4(), since, None),)) for s in serials
    }


Arrival = Callable[[Envelope], datetime]


def as_sent(env: Envelope) -> datetime:
    return env.send_at


def verdicts(envelopes: list[Envelope], units: UnitRegistry, arrival: Arrival = as_sent) -> list[admission.Verdict]:
    devices = directory({e.serial for e in envelopes})
    out = []
    for env in envelopes:
        arrived = admission.Envelope(env.topic, env.payload, arrival(env))
        parsed = admission.parse_envelope(arrived, LIMITS)
        serial = parsed.serial if isinstance(parsed, admission.Parsed) else None
        out.append(admission.judge(arrived, parsed, devices.get(serial or ""), units, LIMITS))
    return out


def assert_verdicts_match(envelopes: list[Envelope], units: UnitRegistry, arrival: Arrival = as_sent) -> None:
    """Ingest's verdict on each envelope arriving at `arrival(envelope)` is the one the simulator expects then."""
    delivered = [e for e in envelopes if not e.expected.broker_denied]
    results = verdicts(delivered, units, arrival)
    for env, verdict in zip(delivered, results, strict=True):
        expected = env.on_arrival(arrival(env))
        if expected.message_reason is not None:
            assert [(r.reason.value, r.reading_index) for r in verdict.rejections] == [
                (expected.message_reason, None)
            ], (
                env.fault,
                verdict.rejections,
            )
            assert verdict.readings == ()
            continue
        got: list[str | None] = [None] * len(expected.reading_reasons)
        for rejection in verdict.rejections:
            assert rejection.reading_index is not None, (env.fault, rejection)
            got[rejection.reading_index] = rejection.reason.value
        assert tuple(got) == expected.reading_reasons, (env.fault, verdict.rejections)
    # Across the stream, repeats add nothing and nothing conflicts.
    plan = plan_batch(results, RecentIdentities(0))
    assert not plan.conflicts
    assert len(plan.rows) == sum(e.on_arrival(arrival(e)).stored for e in delivered)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_clean_scenario_messages_are_stored_whole(name: str, units: UnitRegistry) -> None:
    envelopes = run_scenario(SCENARIOS[name], START, serial_prefix="WIRE")[1]
    results = verdicts(envelopes, units)
    assert all(not v.rejections for v in results)
    assert sum(len(v.readings) for v in results) == sum(len(e.expected.reading_reasons) for e in envelopes)


def test_every_device_model_quirk_is_understood(units: UnitRegistry) -> None:
    """Every kind, with LOINC names or codes, metric and US units, mmol/L: all stored, values canonical."""
    patient = make_patient("quirks", Condition.DIABETES, "America/Denver", seed=2)
    devices = tuple(make_device(f"Q-{kind.value}-{i}", kind, seed=i) for kind in DeviceKind for i in range(12))
    envelopes = simulate(Subject(patient, devices), START, START + timedelta(days=2), seed=2)
    assert {e.serial for e in envelopes} == {d.serial for d in devices}
    results = verdicts(envelopes, units)
    assert all(not v.rejections for v in results)
    units_seen = {r.original_unit for v in results for r in v.readings}
    assert {"[lb_av]", "[degF]", "mmol/L", "{beats}/min", "kg", "Cel"} <= units_seen
    for verdict in results:
        for reading in verdict.readings:
            spec = next(s for s in SPECS.values() if units.by_id[reading.vital_type_id].code == s.code)
            assert spec.plausible_min <= reading.value <= spec.plausible_max


@pytest.mark.parametrize("seed", range(4))
def test_every_fault_gets_exactly_its_expected_verdict(seed: int, units: UnitRegistry) -> None:
    patient = make_patient("faulty", Condition.HEART_FAILURE, "America/Chicago", seed=seed)
    device = make_device("OXI-WIRE", DeviceKind.PULSE_OXIMETER, seed=seed)
    cuff = make_device("BPC-WIRE", DeviceKind.BP_CUFF, seed=seed)
    checks = tuple(START + timedelta(minutes=30 * i) for i in range(6 * 48))
    script = Script(extra={DeviceKind.PULSE_OXIMETER: checks, DeviceKind.BP_CUFF: checks[::4]})
    stream = simulate(Subject(patient, (device, cuff)), START, START + timedelta(days=6), seed=seed, script=script)
    counts: Counter[FaultKind] = Counter()
    envelopes: list[Envelope] = []
    for serial, other in (("OXI-WIRE", "BPC-WIRE"), ("BPC-WIRE", "OXI-WIRE")):
        own = [e for e in stream if e.serial == serial]
        result = inject(own, FaultPlan.every(0.04, offline=timedelta(hours=20)), seed=seed, foreign_serial=other)
        counts.update(result.counts)
        envelopes.extend(result.envelopes)
    assert set(counts) == set(FaultKind), counts
    assert_verdicts_match(envelopes, units)


@pytest.mark.parametrize("arrival", ["live", "backfilled a day later", "backfilled 40 days later"])
def test_clock_skew_and_every_other_fault_match_ingest_live_and_backfilled(arrival: str, units: UnitRegistry) -> None:
    """A device clock 20 min ahead: live, each skewed reading is in the future when it arrives (future_timestamp);
    in a backfill published at once a day after the last measurement it is in the past and stored; 40 days later
    every reading is stale. The verdict the simulator counts (`on_arrival`) is ingest's in each case, for every
    fault."""
    patient = make_patient("skewed", Condition.HEART_FAILURE, "America/Chicago", seed=7)
    cuff = make_device("BPC-SKEW", DeviceKind.BP_CUFF, seed=7)
    checks = tuple(START + timedelta(minutes=45 * i) for i in range(3 * 32))
    stream = simulate(
        Subject(patient, (cuff,)),
        START,
        START + timedelta(days=3),
        seed=7,
        script=Script(extra={DeviceKind.BP_CUFF: checks}),
    )
    plan = FaultPlan(rates={**dict.fromkeys(FaultKind, 0.03), FaultKind.CLOCK_SKEW: 0.2}, offline=timedelta(hours=6))
    envelopes = inject(stream, plan, seed=7, foreign_serial="OXI-SKEW").envelopes
    skewed = [e for e in envelopes if e.fault == FaultKind.CLOCK_SKEW]
    assert len(skewed) >= 5
    assert all(set(e.expected.reading_reasons) == {"future_timestamp"} for e in skewed)  # as sent: live
    last = max(e.send_at for e in envelopes)
    at: Arrival = {
        "live": as_sent,
        "backfilled a day later": lambda e: last + timedelta(days=1),
        "backfilled 40 days later": lambda e: last + timedelta(days=40),
    }[arrival]
    reasons = {r for e in skewed for r in e.on_arrival(at(e)).reading_reasons}
    assert reasons == {"live": {"future_timestamp"}, "backfilled a day later": {None}}.get(arrival, {"stale_timestamp"})
    assert_verdicts_match(envelopes, units, at)


def test_malformed_and_oversized_reasons_are_ingests(units: UnitRegistry) -> None:
    stream = run_scenario(SCENARIOS["hypertensive_crisis"], START, serial_prefix="MAL")[1]
    result = inject(stream * 2, FaultPlan(rates={FaultKind.MALFORMED: 1.0}), seed=1)
    more = inject(stream, FaultPlan(rates={FaultKind.OVERSIZED: 1.0}), seed=1)
    assert_verdicts_match(result.envelopes + more.envelopes, units)


@pytest.mark.parametrize("per_message", [1, 10, 500])
def test_load_messages_are_stored_whole(per_message: int, units: UnitRegistry) -> None:
    now = datetime.now(UTC)
    messages = LoadMessages("wire", per_message, now - timedelta(hours=12), seed=1)
    envelopes = [
        Envelope("LOAD-1", "devices/LOAD-1/readings", messages.payload(seq), seq, now, accepted(per_message))
        for seq in range(1, 30)
    ]
    assert_verdicts_match(envelopes, units)
