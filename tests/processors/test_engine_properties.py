"""Invariants of the engine over arbitrary arrival orders, values and lateness (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.alerts import AlertChange, ChangeKind
from processors.context import CareTeamMember, EngineConfig, PatientContext
from processors.engine import Output, evaluate
from processors.events import CommittedReading
from processors.notifications import Notification, NotificationType
from processors.requirements import Requirement
from processors.state import PatientState

T0 = datetime(2026, 3, 5, tzinfo=UTC)
CONFIG = EngineConfig(lateness_horizon=timedelta(minutes=15))
PATIENT, ORG, DEVICE, NURSE = uuid4(), uuid4(), uuid4(), uuid4()
CONTEXT = PatientContext(
    patient_id=PATIENT,
    organization_id=ORG,
    timezone="UTC",
    monitored=True,
    requirements=(
        Requirement(
            id=uuid4(), vital_type_id=1, vital_type="heart_rate", unit="/min", version=1,
            effective_from=T0 - timedelta(days=1), warning_low=50, warning_high=100, critical_low=40,
            critical_high=140, breach_k=2, breach_n=3, hysteresis_margin=5, clear_count=2, cooldown_minutes=30,
        ),
    ),
    care_team=(CareTeamMember(NURSE, "nurse", T0 - timedelta(days=1)),),
)  # fmt: skip

# (value, minutes since the previous arrival, lateness in minutes)
steps = st.lists(
    st.tuples(st.integers(30, 160), st.integers(0, 90), st.sampled_from([0, 0, 0, 1, 5, 14, 16, 60, 600])),
    min_size=1,
    max_size=40,
)


def readings(spec: list[tuple[int, int, int]]) -> list[CommittedReading]:
    arrival = T0
    result = []
    for value, gap, late in spec:
        arrival += timedelta(minutes=gap, seconds=1)
        result.append(
            CommittedReading(
                reading_id=uuid4(), organization_id=ORG, patient_id=PATIENT, device_id=DEVICE,
                vital_type="heart_rate", vital_type_id=1, value=float(value), unit="/min",
                measured_at=arrival - timedelta(minutes=late), received_at=arrival,
            )
        )  # fmt: skip
    return result


def run(events: list[CommittedReading], repeat: int = 1) -> tuple[list[Output], PatientState | None]:
    state: PatientState | None = None
    outputs: list[Output] = []
    for event in events:
        for _ in range(repeat):
            result = evaluate(state, event, CONTEXT, CONFIG)
            outputs.extend(result.outputs)
            state = result.state
    return outputs, state


@settings(max_examples=300, deadline=None)
@given(steps)
def test_only_the_newest_timely_reading_pages(spec: list[tuple[int, int, int]]) -> None:
    events = readings(spec)
    outputs, _ = run(events)
    by_id = {e.reading_id: e for e in events}
    newest_at_arrival: set[UUID] = set()
    newest: tuple[datetime, UUID] | None = None
    for e in events:
        key = (e.measured_at, e.reading_id)
        if newest is None or key > newest:
            newest = key
            newest_at_arrival.add(e.reading_id)
    for n in outputs:
        if isinstance(n, Notification) and n.type is NotificationType.VITAL_ALERT:
            cause = by_id[UUID(str(n.payload["reading_id"]))]
            assert cause.lateness <= CONFIG.lateness_horizon
            assert cause.reading_id in newest_at_arrival


@settings(max_examples=300, deadline=None)
@given(steps)
def test_redelivery_changes_nothing(spec: list[tuple[int, int, int]]) -> None:
    events = readings(spec)
    once, state_once = run(events)
    twice, state_twice = run(events, repeat=2)
    assert twice == once
    assert state_twice == state_once


@settings(max_examples=300, deadline=None)
@given(steps)
def test_episodes_are_consistent(spec: list[tuple[int, int, int]]) -> None:
    outputs, state = run(readings(spec))
    changes: dict[UUID, list[AlertChange]] = {}
    for o in outputs:
        if isinstance(o, AlertChange):
            changes.setdefault(o.alert_id, []).append(o)
    for history in changes.values():
        if history[0].kind is ChangeKind.CLEARED:
            # A past episode written whole (docs/processors.md): one row, already resolved, retrospective, never
            # paged, at the revision its transitions would have reached (opened, escalations, cleared).
            (whole,) = history
            assert whole.retrospective and whole.last_notified_at is None and whole.revision >= 2
            assert whole.resolved_at == whole.changed_at and whole.opened_at < whole.changed_at
            continue
        assert [c.revision for c in history] == list(range(1, len(history) + 1))
        assert history[0].kind is ChangeKind.OPENED
        assert all(c.kind is not ChangeKind.OPENED for c in history[1:])
        assert all(c.kind is not ChangeKind.CLEARED for c in history[:-1])
        ranks = [c.severity.rank for c in history]
        assert ranks == sorted(ranks)  # severity never goes down within an episode
    still_open = {a for a, h in changes.items() if h[-1].kind is not ChangeKind.CLEARED}
    assert state is not None
    assert still_open == {e.alert_id for v in state.vitals.values() for e in v.episodes.values()}
    keys = [o.key for o in outputs if isinstance(o, Notification)]
    assert len(keys) == len(set(keys))
