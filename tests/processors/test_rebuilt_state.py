"""A state rebuilt from the tables holds the patient's stored readings as history, not as judged: a reading still
in hand-off when the rebuild happened (ingest crashed after the commit, or the clock reached the patient first) is
judged when it arrives, once, in place of its history copy (pure engine, no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from processors.alerts import AlertChange, ChangeKind, Direction, Severity
from processors.context import CareTeamMember, EngineConfig, PatientContext
from processors.engine import evaluate
from processors.events import CommittedReading
from processors.notifications import Notification
from processors.requirements import Requirement
from processors.state import PatientState, Sample, VitalState

T0 = datetime(2026, 3, 5, 12, tzinfo=UTC)
CONFIG = EngineConfig(lateness_horizon=timedelta(minutes=15))
PATIENT, ORG, DEVICE, NURSE = uuid4(), uuid4(), uuid4(), uuid4()
SPO2 = 4
CONTEXT = PatientContext(
    patient_id=PATIENT,
    organization_id=ORG,
    timezone="UTC",
    monitored=True,
    requirements=(
        Requirement(
            id=uuid4(), vital_type_id=SPO2, vital_type="spo2", unit="%", version=1,
            effective_from=T0 - timedelta(days=30), warning_low=92, critical_low=88,
        ),
    ),
    care_team=(CareTeamMember(NURSE, "nurse", T0 - timedelta(days=1)),),
)  # fmt: skip


def spo2(value: float, measured_at: datetime) -> CommittedReading:
    return CommittedReading(
        reading_id=uuid4(), organization_id=ORG, patient_id=PATIENT, device_id=DEVICE, vital_type="spo2",
        vital_type_id=SPO2, value=value, unit="%", measured_at=measured_at,
        received_at=measured_at + timedelta(seconds=2),
    )  # fmt: skip


def rebuilt(*history: CommittedReading) -> PatientState:
    """What a rebuild at a later instant makes of these stored readings: samples, none of them seen."""
    samples = tuple(Sample(r.reading_id, r.measured_at, r.value) for r in history)
    return PatientState(PATIENT, started_at=history[0].measured_at, vitals={SPO2: VitalState(samples=samples)})


def test_a_reading_held_as_history_is_judged_when_it_arrives_and_pages_once() -> None:
    earlier = spo2(97, T0 - timedelta(minutes=5))
    pending = spo2(83, T0)
    state = rebuilt(earlier, pending)

    first = evaluate(state, pending, CONTEXT, CONFIG)

    opened = [o for o in first.outputs if isinstance(o, AlertChange)]
    assert [(o.kind, o.direction, o.severity, o.retrospective, o.value) for o in opened] == [
        (ChangeKind.OPENED, Direction.LOW, Severity.CRITICAL, False, 83.0)
    ]
    assert [n.recipient_user_id for n in first.outputs if isinstance(n, Notification)] == [NURSE]
    assert [s.reading_id for s in first.state.vitals[SPO2].samples] == [earlier.reading_id, pending.reading_id]
    again = evaluate(first.state, pending, CONTEXT, CONFIG)
    assert again.outputs == ()
    assert again.state == first.state


def test_an_older_reading_held_as_history_is_judged_at_its_own_position() -> None:
    pending = spo2(83, T0 - timedelta(minutes=5))
    newer = spo2(97, T0)
    state = evaluate(rebuilt(pending), newer, CONTEXT, CONFIG).state

    result = evaluate(state, pending, CONTEXT, CONFIG)

    opened = [o for o in result.outputs if isinstance(o, AlertChange) and o.kind is ChangeKind.OPENED]
    assert [(o.direction, o.severity, o.retrospective) for o in opened] == [(Direction.LOW, Severity.CRITICAL, True)]
    assert not [n for n in result.outputs if isinstance(n, Notification)]
    assert [s.reading_id for s in result.state.vitals[SPO2].samples] == [pending.reading_id, newer.reading_id]
