import random
from datetime import UTC, datetime, timedelta

from device_simulators.device import DeviceKind, make_device, take_measurement
from device_simulators.physiology import Condition, Effect, make_patient, measure, true_value
from device_simulators.schedule import local_instant, measurement_times, schedule_for
from device_simulators.vitals import SPECS, VitalType

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_same_seed_same_patient_and_different_seeds_differ() -> None:
    a = make_patient("p1", Condition.HYPERTENSION, "America/Chicago", seed=7)
    b = make_patient("p1", Condition.HYPERTENSION, "America/Chicago", seed=7)
    c = make_patient("p1", Condition.HYPERTENSION, "America/Chicago", seed=8)
    assert a == b
    assert a.baselines[VitalType.SYSTOLIC_BP] != c.baselines[VitalType.SYSTOLIC_BP]


def test_conditions_shift_baselines_the_clinical_way() -> None:
    def mean(condition: Condition, vital: VitalType) -> float:
        return sum(make_patient(f"p{i}", condition, seed=1).baselines[vital].mean for i in range(200)) / 200

    assert mean(Condition.HYPERTENSION, VitalType.SYSTOLIC_BP) > mean(Condition.HEALTHY, VitalType.SYSTOLIC_BP) + 10
    assert mean(Condition.COPD, VitalType.SPO2) < mean(Condition.HEALTHY, VitalType.SPO2) - 2
    assert mean(Condition.DIABETES, VitalType.BLOOD_GLUCOSE) > mean(Condition.HEALTHY, VitalType.BLOOD_GLUCOSE) + 30


def test_circadian_rhythm_peaks_at_the_patients_local_peak_hour() -> None:
    patient = make_patient("p1", Condition.HEALTHY, "UTC", seed=3)
    peak = patient.baselines[VitalType.HEART_RATE].peak_hour
    at_peak = T0 + timedelta(hours=peak)
    at_trough = at_peak + timedelta(hours=12)
    amplitude = patient.baselines[VitalType.HEART_RATE].amplitude
    difference = true_value(patient, VitalType.HEART_RATE, at_peak) - true_value(
        patient, VitalType.HEART_RATE, at_trough
    )
    assert abs(difference - 2 * amplitude) < 0.2


def test_measurements_are_plausible_rounded_and_noisy_within_bounds() -> None:
    patient = make_patient("p1", Condition.COPD, seed=1)
    rng = random.Random(1)
    for vital, spec in SPECS.items():
        values = [measure(patient, vital, T0 + timedelta(minutes=i), rng) for i in range(300)]
        assert all(spec.plausible_min <= v <= spec.plausible_max for v in values)
        assert all(round(v, spec.decimals) == v for v in values)
        assert len(set(values)) > 1
    assert max(measure(patient, VitalType.SPO2, T0, rng) for _ in range(500)) <= 100


def test_effect_ramps_holds_and_recovers() -> None:
    patient = make_patient("p1", Condition.HEALTHY, "UTC", seed=1)
    effect = Effect(
        VitalType.SPO2, T0, T0 + timedelta(hours=1), level=85, ramp=timedelta(minutes=10), recover=timedelta(minutes=10)
    )

    def value(minutes: float) -> float:
        return true_value(patient, VitalType.SPO2, T0 + timedelta(minutes=minutes), [effect])

    assert value(-1) > 95
    assert 85 < value(5) < 95
    assert value(30) == 85
    assert 85 < value(65) < 95
    assert value(80) > 95


def test_bp_cuff_reports_three_vitals_at_one_instant_in_its_units() -> None:
    device = make_device("cuff-1", DeviceKind.BP_CUFF, seed=1)
    patient = make_patient("p1", Condition.HYPERTENSION, seed=1)
    readings = take_measurement(device, patient, T0, random.Random(1))
    assert [r.type for r in readings] == [
        device.type_name(v) for v in (VitalType.SYSTOLIC_BP, VitalType.DIASTOLIC_BP, VitalType.HEART_RATE)
    ]
    assert {r.measured_at for r in readings} == {T0}
    assert readings[0].value > readings[1].value


def test_us_scale_reports_pounds_that_convert_back_to_the_patients_weight() -> None:
    device = make_device("scale-1", DeviceKind.SCALE, seed=1, us_units=True)
    patient = make_patient("p1", Condition.HEART_FAILURE, seed=1)
    (reading,) = take_measurement(device, patient, T0, random.Random(1))
    assert reading.unit == "[lb_av]"
    kg = reading.value * 0.45359237
    assert abs(kg - true_value(patient, VitalType.BODY_WEIGHT, T0)) < 0.5


def test_schedule_follows_local_time_across_a_dst_change() -> None:
    schedule = schedule_for(DeviceKind.BP_CUFF, Condition.HYPERTENSION, skip_probability=0)
    schedule = type(schedule)(schedule.times, jitter_minutes=0, jitter_bound_minutes=0, skip_probability=0)
    start = datetime(2026, 3, 6, tzinfo=UTC)  # US DST starts on 2026-03-08
    times = list(measurement_times(schedule, "America/Chicago", start, start + timedelta(days=5), "key"))
    from zoneinfo import ZoneInfo

    local = [t.astimezone(ZoneInfo("America/Chicago")) for t in times]
    assert {(t.hour, t.minute) for t in local} == {(8, 0), (20, 0)}
    assert {t.utcoffset() for t in local} == {timedelta(hours=-6), timedelta(hours=-5)}
    assert times == sorted(times)


def test_a_nominal_time_inside_the_spring_forward_gap_moves_forward() -> None:
    from datetime import date, time
    from zoneinfo import ZoneInfo

    at = local_instant(date(2026, 3, 8), time(2, 30), ZoneInfo("America/Chicago"))
    assert at.astimezone(ZoneInfo("America/Chicago")).hour == 3


def test_runs_over_overlapping_windows_send_identical_readings_for_the_overlap() -> None:
    """A re-run (the demo's `--days 1` an hour later, a backfill resumed) repeats what it sent before: ingest
    stores it as duplicates, never as conflicting ones."""
    from device_simulators.message import Envelope
    from device_simulators.simulation import Subject, simulate

    patient = make_patient("overlap", Condition.HEART_FAILURE, "America/Chicago", seed=3)
    devices = tuple(make_device(f"OVL-{kind.value}", kind, seed=3) for kind in DeviceKind)
    subject = Subject(patient, devices)
    start = datetime(2026, 11, 2, 15, 17, tzinfo=UTC)
    first = simulate(subject, start, start + timedelta(days=3), seed=3)
    later = simulate(subject, start + timedelta(days=1, hours=5), start + timedelta(days=4), seed=3)

    def measured(envelopes: list[Envelope], since: datetime, until: datetime) -> dict[tuple[str, str, str], object]:
        out: dict[tuple[str, str, str], object] = {}
        for e in envelopes:
            assert e.message is not None
            for r in e.message.readings:
                if since <= r.measured_at < until:
                    out[(e.serial, r.type, r.measured_at.isoformat())] = (r.value, r.unit, e.message.sent_at)
        return out

    overlap = (start + timedelta(days=1, hours=5), start + timedelta(days=3))
    before, again = measured(first, *overlap), measured(later, *overlap)
    assert len(before) > 20  # every kind, twice a day or more
    assert again == before
