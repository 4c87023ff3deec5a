import itertools
from datetime import UTC, datetime, timedelta

import pytest

from device_simulators.message import Envelope
from device_simulators.scenario import SCENARIOS, run_scenario
from device_simulators.vitals import VitalType
from tests.device_simulators.helpers import Point, points, series

START = datetime(2026, 11, 2, 15, tzinfo=UTC)


def run(name: str, seed: int = 0) -> list[Envelope]:
    return run_scenario(SCENARIOS[name], START, serial_prefix="SCN", seed=seed)[1]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_scenario_is_deterministic_with_its_seed(name: str) -> None:
    first, again, other = run(name, 3), run(name, 3), run(name, 4)
    assert [e.payload for e in first] == [e.payload for e in again]
    assert [e.payload for e in first] != [e.payload for e in other]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("seed", range(5))
def test_scenario_messages_are_clean_and_numbered(name: str, seed: int) -> None:
    envelopes = run(name, seed)
    assert envelopes
    for serial in {e.serial for e in envelopes}:
        seqs = [e.seq for e in envelopes if e.serial == serial]
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert all(e.fault is None and e.expected.stored == len(e.expected.reading_reasons) for e in envelopes)
    assert [e.send_at for e in envelopes] == sorted(e.send_at for e in envelopes)


@pytest.mark.parametrize("seed", range(10))
def test_hypertensive_crisis_has_three_critical_readings(seed: int) -> None:
    envelopes = run("hypertensive_crisis", seed)
    systolic = series(envelopes, VitalType.SYSTOLIC_BP)
    diastolic = series(envelopes, VitalType.DIASTOLIC_BP)
    assert sum(p.value >= 180 for p in systolic) == 3
    assert sum(p.value >= 120 for p in diastolic) == 3
    assert all(p.value < 160 for p in systolic[-2:])


@pytest.mark.parametrize("seed", range(10))
def test_desaturation_stays_below_88_percent_for_over_ten_minutes_then_recovers(seed: int) -> None:
    spo2 = series(run("desaturation", seed), VitalType.SPO2)
    low = [p for p in spo2 if p.value < 88]
    assert len(low) >= 5
    assert low[-1].measured_at - low[0].measured_at >= timedelta(minutes=10)
    after = [p for p in spo2 if p.measured_at > low[-1].measured_at]
    assert len(after) >= 4 and all(p.value >= 90 for p in after[-4:])


@pytest.mark.parametrize("seed", range(10))
def test_fever_is_between_38_and_39_and_resolves(seed: int) -> None:
    temps = series(run("fever", seed), VitalType.BODY_TEMPERATURE)
    febrile = [p for p in temps if p.value >= 38.0]
    assert len(febrile) >= 3
    assert all(p.value < 39.0 for p in temps)
    assert temps[-1].value < 37.7


@pytest.mark.parametrize("seed", range(10))
def test_weight_gain_exceeds_0_9_kg_within_24_hours(seed: int) -> None:
    weights = series(run("weight_gain", seed), VitalType.BODY_WEIGHT)
    gains = [
        later.value - earlier.value
        for i, earlier in enumerate(weights)
        for later in weights[i + 1 :]
        if later.measured_at - earlier.measured_at <= timedelta(hours=24)
    ]
    assert max(gains) >= 0.9
    assert weights[-1].value - weights[0].value > 4


@pytest.mark.parametrize("seed", range(10))
def test_hypoglycemia_reads_below_54_then_recovers(seed: int) -> None:
    glucose = series(run("hypoglycemia", seed), VitalType.BLOOD_GLUCOSE)
    low = [p for p in glucose if p.value < 54]
    assert len(low) == 2
    assert all(p.value >= 70 for p in glucose if p.measured_at > low[-1].measured_at + timedelta(minutes=40))


def test_silent_device_sends_nothing_for_two_days() -> None:
    envelopes = run("silent_device")
    gaps = [b.send_at - a.send_at for a, b in itertools.pairwise(envelopes)]
    assert max(gaps) > timedelta(days=2)
    assert len(envelopes) == 4


# Warning thresholds of the seeded care plan templates (migrations/0070): (low, high).
WARNING = {
    VitalType.SYSTOLIC_BP: (90, 140),
    VitalType.DIASTOLIC_BP: (50, 90),
    VitalType.HEART_RATE: (50, 110),
    VitalType.SPO2: (90, None),
    VitalType.RESPIRATORY_RATE: (10, 24),
    VitalType.BODY_TEMPERATURE: (35.5, 38.0),
    VitalType.BLOOD_GLUCOSE: (70, 250),
}


def _outside(p: Point) -> bool:
    low, high = WARNING.get(p.vital, (None, None))
    return (low is not None and p.value < low) or (high is not None and p.value > high)


def _threshold_vitals(name: str) -> set[VitalType]:
    """The vitals a scenario's threshold episodes (low/high) are about: the only ones allowed out of range."""
    return {e.vital for e in SCENARIOS[name].episodes if e.direction in ("low", "high")}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("seed", range(10))
def test_only_the_vitals_of_expected_episodes_ever_leave_the_warning_range(name: str, seed: int) -> None:
    for p in points(run(name, seed)):
        assert not _outside(p) or p.vital in _threshold_vitals(name), p


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_device_serial_or_patient_key_pushes_another_vital_out_of_range(name: str) -> None:
    """Device noise is drawn from the serial and baselines from the patient's key, and the alert tests play
    scenarios on random serials: an episode the scenario does not state (a tachypnoea peak at 25/min on an
    unlucky serial) must be impossible, not rare."""
    scenario = SCENARIOS[name]
    for i in range(300):
        serials = {kind: f"serial-{i}-{kind.value}" for kind in scenario.kinds}
        _, envelopes = run_scenario(scenario, START, serial_prefix=f"patient-{i % 7}", serials=serials)
        for p in points(envelopes):
            assert not _outside(p) or p.vital in _threshold_vitals(name), (i, p)
