"""Scripted clinical scenarios: a patient, their devices, and what goes wrong when (pure, deterministic).

Times are offsets from local midnight of the scenario's first day in the patient's time zone. Each scenario
states what the processors must conclude (episodes and symptoms), following the seeded care plan templates
(migrations/0070) and the symptom rules of issue 5; tests assert them once the processors run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from device_simulators.device import DeviceKind, make_device
from device_simulators.message import Envelope
from device_simulators.physiology import Condition, Effect, make_patient
from device_simulators.simulation import Script, Silence, Subject, simulate
from device_simulators.vitals import VitalType


@dataclass(frozen=True, slots=True)
class ExpectedEpisode:
    vital: VitalType
    direction: str  # vital_alert_direction: "low" | "high" | "rise" | "fall"
    severity: str  # "warning" | "critical"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    condition: Condition
    kinds: tuple[DeviceKind, ...]
    days: int
    script: Callable[[datetime], Script]
    episodes: tuple[ExpectedEpisode, ...] = ()
    symptoms: tuple[str, ...] = ()
    notifications: tuple[str, ...] = ()


def _at(day0: datetime, day: int, hhmm: str) -> datetime:
    """Local wall-clock `hhmm` on scenario day `day` (day0 is local midnight of day 0)."""
    zone = day0.tzinfo
    assert isinstance(zone, ZoneInfo)
    local = datetime.combine(day0.date() + timedelta(days=day), time.fromisoformat(hhmm), tzinfo=zone)
    return local.astimezone(ZoneInfo("UTC"))


def _every(first: datetime, last: datetime, minutes: float) -> tuple[datetime, ...]:
    out = []
    at = first
    while at <= last:
        out.append(at)
        at += timedelta(minutes=minutes)
    return tuple(out)


def _crisis(d0: datetime) -> Script:
    onset, end = _at(d0, 1, "07:00"), _at(d0, 1, "10:00")
    return Script(
        effects=(
            Effect(VitalType.SYSTOLIC_BP, onset, end, level=198, recover=timedelta(hours=3)),
            Effect(VitalType.DIASTOLIC_BP, onset, end, level=131, recover=timedelta(hours=3)),
            Effect(VitalType.HEART_RATE, onset, end, level=96, recover=timedelta(hours=3)),
        ),
        # The patient re-measures twice after a frightening reading.
        extra={DeviceKind.BP_CUFF: (_at(d0, 1, "08:50"), _at(d0, 1, "09:10"))},
        skip_probability=0.0,
    )


def _desaturation(d0: datetime) -> Script:
    onset, end = _at(d0, 1, "13:00"), _at(d0, 1, "14:00")
    checks = _every(_at(d0, 1, "13:05"), _at(d0, 1, "15:30"), 5)
    return Script(
        effects=(
            Effect(VitalType.SPO2, onset, end, level=84.5, ramp=timedelta(minutes=3), recover=timedelta(minutes=15)),
            Effect(
                VitalType.HEART_RATE, onset, end, delta=18, ramp=timedelta(minutes=3), recover=timedelta(minutes=15)
            ),
            # Tachypnoea that stays under the COPD template's warning_high (24/min): the episode is the SpO2's.
            Effect(
                VitalType.RESPIRATORY_RATE,
                onset,
                end,
                delta=5,
                ramp=timedelta(minutes=3),
                recover=timedelta(minutes=15),
            ),
        ),
        extra={DeviceKind.PULSE_OXIMETER: checks, DeviceKind.RESPIRATORY_MONITOR: checks[::3]},
        skip_probability=0.0,
    )


def _fever(d0: datetime) -> Script:
    return Script(
        effects=(
            Effect(
                VitalType.BODY_TEMPERATURE,
                _at(d0, 1, "10:00"),
                _at(d0, 2, "06:00"),
                level=38.55,
                ramp=timedelta(hours=4),
                recover=timedelta(hours=10),
            ),
            Effect(
                VitalType.HEART_RATE,
                _at(d0, 1, "10:00"),
                _at(d0, 2, "06:00"),
                delta=12,
                ramp=timedelta(hours=4),
                recover=timedelta(hours=10),
            ),
        ),
        extra={DeviceKind.THERMOMETER: _every(_at(d0, 1, "14:00"), _at(d0, 3, "06:00"), 240)},
        skip_probability=0.0,
    )


def _weight_gain(d0: datetime) -> Script:
    gain_start, gain_end = _at(d0, 2, "00:00"), _at(d0, 5, "00:00")
    evenings = tuple(_at(d0, day, "19:30") for day in (2, 3, 4))
    return Script(
        effects=(
            Effect(VitalType.BODY_WEIGHT, gain_start, gain_end, delta=5.4, ramp=gain_end - gain_start, recover=None),
        ),
        extra={DeviceKind.SCALE: evenings},
        skip_probability=0.0,
    )


def _hypoglycemia(d0: datetime) -> Script:
    return Script(
        effects=(
            Effect(
                VitalType.BLOOD_GLUCOSE,
                _at(d0, 1, "15:20"),
                _at(d0, 1, "15:45"),
                level=46,
                recover=timedelta(minutes=30),
            ),
        ),
        extra={DeviceKind.GLUCOMETER: (_at(d0, 1, "15:30"), _at(d0, 1, "15:40"), _at(d0, 1, "16:30"))},
        skip_probability=0.0,
    )


def _silent(d0: datetime) -> Script:
    return Script(
        silences=(Silence(DeviceKind.BP_CUFF, _at(d0, 1, "12:00"), _at(d0, 3, "12:00")),), skip_probability=0.0
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "hypertensive_crisis",
            "Hypertensive patient: a morning reading of ~198/131 confirmed by two re-checks, resolving by afternoon.",
            Condition.HYPERTENSION,
            (DeviceKind.BP_CUFF,),
            3,
            _crisis,
            episodes=(
                ExpectedEpisode(VitalType.SYSTOLIC_BP, "high", "critical"),
                ExpectedEpisode(VitalType.DIASTOLIC_BP, "high", "critical"),
            ),
            symptoms=("hypertensive_crisis",),
        ),
        Scenario(
            "desaturation",
            "COPD patient: SpO2 falls to ~85% for an hour with tachypnoea, spot-checked every 5 minutes, recovers.",
            Condition.COPD,
            (DeviceKind.PULSE_OXIMETER, DeviceKind.RESPIRATORY_MONITOR),
            2,
            _desaturation,
            episodes=(ExpectedEpisode(VitalType.SPO2, "low", "critical"),),
            symptoms=("hypoxemia",),
        ),
        Scenario(
            "fever",
            "A fever of ~38.5 °C for most of a day, measured every four hours, then back to normal.",
            Condition.COPD,
            (DeviceKind.THERMOMETER,),
            4,
            _fever,
            episodes=(ExpectedEpisode(VitalType.BODY_TEMPERATURE, "high", "warning"),),
            symptoms=("fever",),
        ),
        Scenario(
            "weight_gain",
            "Heart failure: +1.8 kg a day for three days (fluid retention), weighed mornings and evenings.",
            Condition.HEART_FAILURE,
            (DeviceKind.SCALE,),
            6,
            _weight_gain,
            episodes=(ExpectedEpisode(VitalType.BODY_WEIGHT, "rise", "warning"),),
            symptoms=("rapid_weight_gain",),
        ),
        Scenario(
            "hypoglycemia",
            "Diabetic patient: glucose ~46 mg/dL in the afternoon, re-checked twice, treated, recovered.",
            Condition.DIABETES,
            (DeviceKind.GLUCOMETER,),
            2,
            _hypoglycemia,
            episodes=(ExpectedEpisode(VitalType.BLOOD_GLUCOSE, "low", "critical"),),
            symptoms=("hypoglycemia",),
        ),
        Scenario(
            "silent_device",
            "A BP cuff goes silent for two days (four missed twice-daily readings), then reports again.",
            Condition.HYPERTENSION,
            (DeviceKind.BP_CUFF,),
            4,
            _silent,
            notifications=("missed_measurement", "device_offline"),
        ),
    )
}


def day_zero(start: datetime, timezone: str) -> datetime:
    """Local midnight of the day `start` falls on, in the patient's zone."""
    zone = ZoneInfo(timezone)
    local = start.astimezone(zone)
    return datetime.combine(local.date(), time(0), tzinfo=zone)


def run_scenario(
    scenario: Scenario,
    start: datetime,
    *,
    serial_prefix: str,
    timezone: str = "America/Chicago",
    seed: int = 0,
    serials: dict[DeviceKind, str] | None = None,
) -> tuple[Subject, list[Envelope]]:
    """The scenario's messages from local midnight of `start`'s day for `scenario.days` days."""
    d0 = day_zero(start, timezone)
    patient = make_patient(serial_prefix, scenario.condition, timezone, seed=seed, controlled=True)
    named = serials or {}
    devices = tuple(
        make_device(named.get(kind, f"{serial_prefix}-{kind.value.replace('_', '')[:6]}"), kind, seed=seed)
        for kind in scenario.kinds
    )
    subject = Subject(patient, devices)
    end = d0 + timedelta(days=scenario.days)
    return subject, simulate(
        subject, d0.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC")), seed=seed, script=scenario.script(d0)
    )
