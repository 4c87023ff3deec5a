"""Whatever the arrival order, values, lateness and ticks, no engine output can violate a constraint of the tables
the runners write it to (hypothesis, on the pure engine; the constraints: tests/processors/constraints.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import example, given, settings
from hypothesis import strategies as st

from processors.alerts import AlertStatus, ChangeKind
from processors.context import CareTeamMember, EngineConfig, PatientContext
from processors.engine import evaluate, open_alert_ids
from processors.events import CommittedReading, Event, Tick
from processors.requirements import Requirement
from processors.state import PatientState
from tests.processors.constraints import Tables
from tests.processors.scenario import SEEDED_SYMPTOM_RULES

T0 = datetime(2026, 3, 5, tzinfo=UTC)
CONFIG = EngineConfig(lateness_horizon=timedelta(minutes=15))
PATIENT, ORG, DEVICE, NURSE = uuid4(), uuid4(), uuid4(), uuid4()
HEART_RATE, WEIGHT = 1, 7


# Limits of a second heart-rate version: warning_low, critical_low, warning_high, critical_high.
_NEW_LIMITS: list[tuple[float | None, float | None, float | None, float | None]] = [
    (None, None, 100.0, 140.0),
    (None, 45.0, None, 130.0),
    (55.0, 45.0, 120.0, 160.0),
]


@st.composite
def requirements(draw: st.DrawFn) -> tuple[Requirement, ...]:
    """Heart-rate rules, a weight trend, and maybe a second version of each from some point of the timeline on
    (the versions as the database keeps them: the first closed where the second starts)."""
    breach_n = draw(st.integers(1, 4))
    heart_rate = Requirement(
        id=uuid4(), vital_type_id=HEART_RATE, vital_type="heart_rate", unit="/min", version=1,
        effective_from=T0 - timedelta(days=1), warning_low=50, warning_high=110, critical_low=40, critical_high=150,
        breach_k=draw(st.integers(1, breach_n)), breach_n=breach_n,
        sustained_minutes=draw(st.sampled_from([None, None, 10, 45])),
        hysteresis_margin=draw(st.sampled_from([0.0, 5.0])), clear_count=draw(st.integers(1, 3)),
        clear_minutes=draw(st.sampled_from([None, None, 20, 90])), cooldown_minutes=draw(st.sampled_from([0, 30])),
    )  # fmt: skip
    weight = WEIGHT_RULE
    versions: list[Requirement] = []
    if draw(st.booleans()):
        since = T0 + timedelta(minutes=draw(st.integers(0, 600)))
        low, critical_low, high, critical_high = draw(st.sampled_from(_NEW_LIMITS))
        versions.append(
            replace(
                heart_rate, id=uuid4(), version=2, effective_from=since, warning_low=low, critical_low=critical_low,
                warning_high=high, critical_high=critical_high,
            )
        )  # fmt: skip
        heart_rate = replace(heart_rate, effective_to=since)
        delta = draw(st.sampled_from([1.5, -1.0, None]))
        versions.append(
            replace(
                weight, id=uuid4(), version=2, effective_from=since, trend_delta=delta,
                trend_window_hours=None if delta is None else 12,
            )
        )  # fmt: skip
        weight = replace(weight, effective_to=since)
    return (heart_rate, weight, *versions)


WEIGHT_RULE = Requirement(
    id=uuid4(), vital_type_id=WEIGHT, vital_type="body_weight", unit="kg", version=1,
    effective_from=T0 - timedelta(days=1), trend_window_hours=24, trend_delta=1.0, hysteresis_margin=0.3,
)  # fmt: skip


def context(versions: tuple[Requirement, ...]) -> PatientContext:
    return PatientContext(
        patient_id=PATIENT,
        organization_id=ORG,
        timezone="UTC",
        monitored=True,
        requirements=versions,
        care_team=(CareTeamMember(NURSE, "nurse", T0 - timedelta(days=1)),),
        symptom_rules=SEEDED_SYMPTOM_RULES,
    )


# One step: a heart-rate reading (value), a weight reading (kg), or a tick; each after a gap in minutes, readings
# measured `late` minutes before they arrive (0-14: timely; beyond: retrospective).
# Values cluster around the limits (warning 50/110, critical 40/150, margin 0 or 5), so that episodes open,
# escalate and clear often; gaps are short next to the lateness, so that late readings land among others.
_LATENESS = st.sampled_from([0, 0, 0, 1, 5, 14, 16, 20, 30, 45, 60, 91, 240, 600])
_HEART_RATE = st.one_of(st.sampled_from([38, 45, 52, 80, 104, 108, 112, 125, 140, 155, 165]), st.integers(30, 170))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("hr"), _HEART_RATE, st.integers(0, 40), _LATENESS),
        st.tuples(st.just("kg"), st.integers(700, 740), st.integers(0, 600), _LATENESS),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 180), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


def events(spec: list[tuple[str, int, int, int]]) -> list[Event]:
    arrival = T0
    result: list[Event] = []
    for kind, value, gap, late in spec:
        arrival += timedelta(minutes=gap, seconds=1)
        if kind == "tick":
            result.append(Tick(arrival))
            continue
        type_id, code, unit, amount = (
            (HEART_RATE, "heart_rate", "/min", float(value))
            if kind == "hr"
            else (WEIGHT, "body_weight", "kg", value / 10)
        )
        result.append(
            CommittedReading(
                reading_id=uuid4(), organization_id=ORG, patient_id=PATIENT, device_id=DEVICE, vital_type=code,
                vital_type_id=type_id, value=amount, unit=unit, measured_at=arrival - timedelta(minutes=late),
                received_at=arrival,
            )
        )  # fmt: skip
    return result


def play(items: list[Event], ctx: PatientContext, repeat: int = 1) -> tuple[Tables, PatientState | None]:
    tables = Tables()
    state: PatientState | None = None
    for event in items:
        for _ in range(repeat):
            result = evaluate(state, event, ctx, CONFIG)
            tables.apply(result.outputs)
            state = result.state
    return tables, state


def _rules(**columns: Any) -> tuple[Requirement, ...]:
    return (
        Requirement(
            id=uuid4(), vital_type_id=HEART_RATE, vital_type="heart_rate", unit="/min", version=1,
            effective_from=T0 - timedelta(days=1), **{"warning_high": 110, "critical_high": 150, **columns},
        ),
        WEIGHT_RULE,
    )  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(requirements(), steps)
# tests/scenarios/escalate_before_open.yaml: a critical reading older than an open retrospective episode.
@example(_rules(hysteresis_margin=5), [("hr", 80, 0, 0), ("hr", 125, 120, 60), ("hr", 160, 1, 91)])
# An in-range reading older than a later breach of a retrospective episode once cleared it at its own time,
# before that breach's change and before the symptom it flagged (symptoms resolved_at < onset_at).
@example(
    _rules(warning_low=50, critical_low=40, breach_n=4, clear_count=2),
    [
        ("hr", 112, 0, 0),
        ("hr", 38, 0, 0),
        ("hr", 38, 0, 0),
        ("hr", 112, 20, 20),
        ("hr", 38, 0, 20),
        ("hr", 112, 0, 16),
        ("hr", 38, 0, 20),
    ],
)
@example(_rules(hysteresis_margin=5), [("hr", 80, 0, 0), ("hr", 125, 120, 60), ("hr", 160, 20, 30), ("hr", 80, 5, 50)])
def test_no_output_violates_a_table_constraint(
    versions: tuple[Requirement, ...], spec: list[tuple[str, int, int, int]]
) -> None:
    tables, state = play(events(spec), context(versions))
    assert state is not None
    open_rows = {a.alert_id for a in tables.alerts.values() if a.status is not AlertStatus.RESOLVED}
    assert open_rows == {e.alert_id for v in state.vitals.values() for e in v.episodes.values()}


@settings(max_examples=300, deadline=None)
@given(requirements(), steps)
def test_redelivered_events_change_no_row(
    versions: tuple[Requirement, ...], spec: list[tuple[str, int, int, int]]
) -> None:
    items = events(spec)
    once, _ = play(items, context(versions))
    twice, _ = play(items, context(versions), repeat=2)
    assert twice == once


def test_an_older_critical_reading_escalates_an_open_retrospective_episode_at_its_own_time() -> None:
    """tests/scenarios/escalate_before_open.yaml at the engine's level: a (80) on time, c (125) an hour late opens
    a retrospective warning episode, b (160) measured before c escalates it to critical; the change is recorded at
    the episode's opening time (b's own time is in the triggers), and nothing pages."""
    a, c, b = events([("hr", 80, 0, 0), ("hr", 125, 120, 60), ("hr", 160, 1, 91)])
    assert isinstance(b, CommittedReading) and isinstance(c, CommittedReading)
    tables, state = play([a, c, b], context(_rules(hysteresis_margin=5)))
    (alert,) = tables.alerts.values()
    assert (alert.kind, alert.severity.value, alert.retrospective, alert.revision) == (
        ChangeKind.ESCALATED, "critical", True, 2,
    )  # fmt: skip
    assert b.measured_at < alert.opened_at == alert.changed_at == c.measured_at
    assert set(alert.trigger_reading_ids) == {b.reading_id, c.reading_id}
    assert (alert.value, alert.threshold, alert.last_notified_at) == (160, 150, None)
    assert not tables.notification_keys
    assert state is not None and open_alert_ids(state) == {alert.alert_id}


def test_an_older_breach_separated_from_a_retrospective_episode_does_not_escalate_it() -> None:
    """a (160) measured before x (80), which would have cleared it, belongs to an earlier stretch, not to the
    episode c (125) opened: the episode stays at warning. The earlier stretch is an episode of its own, recorded
    whole (opened at a, resolved at x), retrospective, paging nobody."""
    x, c, a = events([("hr", 80, 0, 0), ("hr", 125, 120, 60), ("hr", 160, 1, 150)])
    assert isinstance(a, CommittedReading) and isinstance(x, CommittedReading) and isinstance(c, CommittedReading)
    assert a.measured_at < x.measured_at
    tables, state = play([x, c, a], context(_rules(hysteresis_margin=5)))
    alerts = {alert.opened_at: alert for alert in tables.alerts.values()}
    assert alerts.keys() == {a.measured_at, c.measured_at}
    alert = alerts[c.measured_at]
    assert (alert.kind, alert.severity.value, alert.revision) == (ChangeKind.OPENED, "warning", 1)
    past = alerts[a.measured_at]
    assert (past.kind, past.status, past.severity.value, past.retrospective, past.revision) == (
        ChangeKind.CLEARED, AlertStatus.RESOLVED, "critical", True, 2,
    )  # fmt: skip
    assert (past.resolved_at, past.changed_at, past.last_notified_at) == (x.measured_at, x.measured_at, None)
    assert past.trigger_reading_ids == (a.reading_id,)
    assert not tables.notification_keys
    assert state is not None and open_alert_ids(state) == {alert.alert_id}


def test_a_past_episode_is_recorded_once_when_later_late_readings_reshape_it() -> None:
    """b (160), late, is a past episode before the live one e opened, cleared by i1 and i2 (two readings). A late
    breach m between i1 and i2 and then a late in-range j between i1 and m make the replay clear it at j instead:
    the episode is on record already (a resolved row is never changed), so nothing more is written."""
    i1, i2, e, b, m, j = events(
        [("hr", 90, 0, 0), ("hr", 90, 60, 0), ("hr", 130, 60, 0), ("hr", 160, 1, 150), ("hr", 125, 1, 80),
         ("hr", 90, 1, 110)]
    )  # fmt: skip
    assert isinstance(b, CommittedReading) and isinstance(i2, CommittedReading) and isinstance(j, CommittedReading)
    assert isinstance(i1, CommittedReading) and isinstance(m, CommittedReading) and isinstance(e, CommittedReading)
    assert b.measured_at < i1.measured_at < j.measured_at < m.measured_at < i2.measured_at < e.received_at
    tables, state = play([i1, i2, e, b, m, j], context(_rules(clear_count=2)), repeat=2)
    past = [a for a in tables.alerts.values() if a.opened_at == b.measured_at]
    assert [(a.status, a.resolved_at, a.trigger_reading_ids) for a in past] == [
        (AlertStatus.RESOLVED, i2.measured_at, (b.reading_id,))
    ]
    assert len(tables.alerts) == 2
    assert state is not None and [(k.opened_at, k.resolved_at) for k in state.vitals[HEART_RATE].resolved] == [
        (b.measured_at, i2.measured_at)
    ]


def test_an_older_in_range_reading_does_not_clear_a_retrospective_episode_that_newer_data_holds_open() -> None:
    c, d, e = events([("hr", 125, 120, 60), ("hr", 160, 20, 30), ("hr", 80, 5, 50)])
    assert isinstance(c, CommittedReading) and isinstance(d, CommittedReading) and isinstance(e, CommittedReading)
    assert c.measured_at < e.measured_at < d.measured_at
    tables, _ = play([c, d, e], context(_rules(hysteresis_margin=5)))
    (alert,) = tables.alerts.values()
    assert (alert.kind, alert.status, alert.severity.value) == (ChangeKind.ESCALATED, AlertStatus.OPEN, "critical")
    assert alert.changed_at == d.measured_at
