"""The simulators' clinical scenarios through the real broker and a real `python -m ingest serve` with the inline
processors: each patient (care plan template of the scenario's condition, a physician and a nurse) gets exactly the
episodes and symptoms the scenario states.

A scenario is a backfill: its days end before today, so every reading arrives hours or days after it was
measured. With the default lateness horizon (15 min) the processors must record the episodes as retrospective and
page nobody. Replayed as if live (the horizon widened to cover the scenario; rules, thresholds and measurement
times untouched), each newest reading is judged live: the same episodes open, page both care-team members at the
scenario's severity, and none is retrospective.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from device_simulators.player import play
from device_simulators.publisher import Broker
from device_simulators.scenario import SCENARIOS, Scenario, day_zero, run_scenario
from device_simulators.timeline import Timeline, compress
from ingest.settings import IngestSettings
from tests import factories
from tests.conftest import MqttDeviceFactory
from tests.device_simulators.conftest import INLINE_PROCESSORS, IngestFor, until

Conn = psycopg.Connection[Any]
WITH_EPISODES = sorted(name for name, s in SCENARIOS.items() if s.episodes)
PRIORITY = {"warning": "high", "critical": "critical"}


@dataclass(frozen=True, slots=True)
class Case:
    scenario: Scenario
    patient: factories.Patient
    team: tuple[UUID, ...]  # the care team's user ids
    serials: dict[Any, str]
    passwords: dict[str, str]


def _case(db: Conn, org: factories.Organization, mqtt_device: MqttDeviceFactory, name: str) -> Case:
    scenario = SCENARIOS[name]
    patient = factories.create_patient(db, org.id, timezone="America/Chicago")
    plan = factories.create_care_plan(db, patient, template_code=f"{scenario.condition.value}_rpm")
    factories.create_template_requirements(db, patient, f"{scenario.condition.value}_rpm", care_plan_id=plan)
    team = []
    for kind, role in (("physician", "primary_physician"), ("nurse", "nurse")):
        provider = factories.create_provider(db, org.id, provider_type=kind)
        factories.add_to_care_team(db, patient, provider, role=role, is_primary=kind == "physician")
        team.append(provider.user_id)
    devices = {kind: mqtt_device(kind=kind.value, assign_to=patient) for kind in scenario.kinds}
    return Case(
        scenario,
        patient,
        tuple(team),
        {kind: d.serial for kind, d in devices.items()},
        {d.serial: d.password for d in devices.values()},
    )


def _episodes(db: Conn, patient: UUID) -> list[tuple[str, str, str, bool]]:
    rows = db.execute(
        "SELECT t.code, a.direction::text, a.severity::text, a.retrospective FROM vital_alerts a"
        " JOIN vital_types t ON t.id = a.vital_type_id WHERE a.patient_id = %s ORDER BY 1, 2",
        (patient,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _pages(db: Conn, patient: UUID) -> list[tuple[str, str, str, str, UUID]]:
    """Every page (vital_alert notification, whatever the change) the patient's care team received."""
    rows = db.execute(
        "SELECT payload->>'vital_type', payload->>'direction', payload->>'change', priority::text, recipient_user_id"
        " FROM notifications WHERE patient_id = %s AND type = 'vital_alert'",
        (patient,),
    ).fetchall()
    return sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows)


def _symptoms(db: Conn, patient: UUID) -> set[str]:
    rows = db.execute("SELECT code FROM symptoms WHERE patient_id = %s AND source = 'device'", (patient,)).fetchall()
    return {r[0] for r in rows}


async def _play_all(
    db: Conn,
    org: factories.Organization,
    mqtt_device: MqttDeviceFactory,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
    env: dict[str, str],
    names: list[str],
    *,
    live: timedelta | None = None,
) -> list[Case]:
    """The scenarios, each on a patient of its own, through one ingest with inline processors: backfilled over
    the days before now, or with `live`, in compressed real time (the days happen now, in `live`)."""
    cases = [_case(db, org, mqtt_device, name) for name in names]
    ingest_for(*(s for case in cases for s in case.serials.values()), env=INLINE_PROCESSORS | env)
    await asyncio.sleep(3)  # ingest connects and subscribes
    broker = Broker(ingest_settings.mqtt_host, ingest_settings.mqtt_port)
    expected_rows = 0
    for case in cases:
        span = timedelta(days=case.scenario.days)
        now = datetime.now(UTC)
        _, envelopes = run_scenario(
            case.scenario, now - span, serial_prefix="alerts", timezone=case.patient.timezone, serials=case.serials
        )
        if live is not None:
            first = day_zero(now - span, case.patient.timezone).astimezone(UTC)
            envelopes = compress(envelopes, Timeline.fitting(first, first + span, now, live))
        report = await play(envelopes, case.passwords, broker, speed=0.0 if live is None else 1.0)
        assert report.as_expected, report
        expected_rows += sum(e.expected.stored for e in envelopes)

    patients = [c.patient.id for c in cases]

    def processed() -> bool:
        """Every reading stored, and the hand-off delivered them all (the relay deletes an outbox row once the
        processors committed its readings' outputs)."""
        stored = db.execute("SELECT count(*) FROM vital_readings WHERE patient_id = ANY(%s)", (patients,)).fetchone()
        pending = db.execute(
            "SELECT count(*) FROM ingest_outbox o WHERE EXISTS (SELECT 1 FROM device_assignments a"
            " WHERE a.patient_id = ANY(%s) AND a.device_id = ANY(o.device_ids))",
            (patients,),
        ).fetchone()
        return stored == (expected_rows,) and pending == (0,)

    assert await until(processed, 60), "the pipeline did not store and hand off every reading within 60 s"
    return cases


def _expected(case: Case, *, retrospective: bool) -> list[tuple[str, str, str, bool]]:
    return sorted((e.vital.value, e.direction, e.severity, retrospective) for e in case.scenario.episodes)


def _opened(case: Case) -> list[tuple[str, str, str, str, UUID]]:
    """The opening pages a live episode sends: one to each care-team member at the scenario's severity."""
    return sorted(
        (e.vital.value, e.direction, "opened", PRIORITY[e.severity], user)
        for e in case.scenario.episodes
        for user in case.team
    )


async def test_backfilled_scenarios_raise_their_episodes_as_retrospective_and_page_nobody(
    db: Conn,
    org: factories.Organization,
    mqtt_device: MqttDeviceFactory,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
) -> None:
    cases = await _play_all(db, org, mqtt_device, ingest_settings, ingest_for, {}, WITH_EPISODES)
    for case in cases:
        assert _episodes(db, case.patient.id) == _expected(case, retrospective=True), case.scenario.name
        assert _pages(db, case.patient.id) == [], case.scenario.name
        assert _symptoms(db, case.patient.id) == set(case.scenario.symptoms), case.scenario.name


async def test_scenarios_replayed_as_live_page_the_care_team(
    db: Conn,
    org: factories.Organization,
    mqtt_device: MqttDeviceFactory,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
) -> None:
    """Each episode opens with one page to each care-team member at the scenario's severity; any further page is
    a reminder of that episode (the template's cooldown passed while it stayed open), never another vital."""
    horizon = (max(SCENARIOS[name].days for name in WITH_EPISODES) + 1) * 86400
    cases = await _play_all(
        db, org, mqtt_device, ingest_settings, ingest_for, {"PROCESSOR_LATENESS_HORIZON_S": str(horizon)},
        WITH_EPISODES,
    )  # fmt: skip
    for case in cases:
        assert _episodes(db, case.patient.id) == _expected(case, retrospective=False), case.scenario.name
        pages = _pages(db, case.patient.id)
        assert [p for p in pages if p[2] == "opened"] == _opened(case), case.scenario.name
        reminders = {(e.vital.value, e.direction, "reminded", PRIORITY[e.severity]) for e in case.scenario.episodes}
        assert {p[:4] for p in pages if p[2] != "opened"} <= reminders, case.scenario.name
        assert _symptoms(db, case.patient.id) == set(case.scenario.symptoms), case.scenario.name


async def test_a_scenario_in_compressed_real_time_pages_the_care_team(
    db: Conn,
    org: factories.Organization,
    mqtt_device: MqttDeviceFactory,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
) -> None:
    """The demo's live step, with the processors' default lateness horizon: the crisis's three days happen now in
    ten seconds, each reading sent as it is measured, so its episodes are live and page each care-team member
    (its rules count readings, so compressing time changes nothing they conclude)."""
    (case,) = await _play_all(
        db, org, mqtt_device, ingest_settings, ingest_for, {}, ["hypertensive_crisis"], live=timedelta(seconds=10)
    )
    assert _episodes(db, case.patient.id) == _expected(case, retrospective=False)
    assert [p for p in _pages(db, case.patient.id) if p[2] == "opened"] == _opened(case)
    assert _symptoms(db, case.patient.id) == set(case.scenario.symptoms)


async def test_weight_gain_is_one_episode(
    db: Conn,
    org: factories.Organization,
    mqtt_device: MqttDeviceFactory,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
) -> None:
    """Three days of steady gain, weighed mornings and evenings, are one episode: the heart-failure template clears
    a gain only 0.5 kg below its 0.9 kg threshold on two weigh-ins in a row (migration 0085), so the evening-to-
    morning swing (a morning reading measured against the higher evening one) no longer clears and reopens it."""
    (case,) = await _play_all(db, org, mqtt_device, ingest_settings, ingest_for, {}, ["weight_gain"])
    assert _episodes(db, case.patient.id) == _expected(case, retrospective=True)
