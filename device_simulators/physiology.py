"""Per-patient physiology: baselines, circadian rhythm, measurement noise and scenario effects (pure).

A patient's baselines are drawn once from a seed and the patient's key, so the same seed always yields the same
patient. A value at an instant = baseline mean + circadian term + scenario effects, and a measurement adds
device noise (bounded at 2.5 standard deviations, so a scripted 20-point excursion is never masked by noise).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from device_simulators.vitals import SPECS, VitalType


class Condition(StrEnum):
    """The care plans the seed uses (care_plan_templates.code without `_rpm`)."""

    HEALTHY = "healthy"
    HYPERTENSION = "hypertension"
    HEART_FAILURE = "heart_failure"
    COPD = "copd"
    DIABETES = "diabetes"


@dataclass(frozen=True, slots=True)
class Baseline:
    """Mean, measurement noise (sd) and a daily cosine of `amplitude` peaking at `peak_hour` local time."""

    mean: float
    sd: float
    amplitude: float = 0.0
    peak_hour: float = 12.0
    relative: bool = False  # sd is a percentage of the value (glucometers are specified that way)


@dataclass(frozen=True, slots=True)
class Patient:
    key: str
    timezone: str
    condition: Condition
    baselines: Mapping[VitalType, Baseline]
    noise: float = 1.0  # scales every measurement sd


@dataclass(frozen=True, slots=True)
class Effect:
    """A scripted change of one vital: it ramps from baseline towards `level` (absolute) or by `delta`.

    Ramps up over `ramp` from `start`, holds until `until`, ramps back down over `recover` (None: never recovers).
    """

    vital: VitalType
    start: datetime
    until: datetime
    level: float | None = None
    delta: float = 0.0
    ramp: timedelta = timedelta(0)
    recover: timedelta | None = timedelta(0)

    def weight(self, at: datetime) -> float:
        if at < self.start:
            return 0.0
        if at < self.start + self.ramp:
            return (at - self.start) / self.ramp
        if at <= self.until:
            return 1.0
        if self.recover is None:
            return 1.0
        if at < self.until + self.recover:
            return 1.0 - (at - self.until) / self.recover
        return 0.0


# (mean, sd of the patient's mean across patients, measurement sd, circadian amplitude, peak hour)
_POPULATION: dict[VitalType, tuple[float, float, float, float, float]] = {
    VitalType.SYSTOLIC_BP: (124, 8, 5, 6, 10),
    VitalType.DIASTOLIC_BP: (78, 5, 4, 4, 10),
    VitalType.HEART_RATE: (72, 7, 3, 5, 15),
    VitalType.SPO2: (97, 0.8, 0.8, 0.3, 14),
    VitalType.RESPIRATORY_RATE: (15, 1.5, 1.2, 1, 15),
    VitalType.BODY_TEMPERATURE: (36.7, 0.15, 0.12, 0.3, 18),
    VitalType.BODY_WEIGHT: (80, 14, 0.12, 0.4, 20),
    VitalType.BLOOD_GLUCOSE: (98, 8, 4, 15, 19),
}
# What each condition does to the population mean.
_SHIFT: dict[Condition, dict[VitalType, float]] = {
    Condition.HEALTHY: {},
    Condition.HYPERTENSION: {VitalType.SYSTOLIC_BP: 16, VitalType.DIASTOLIC_BP: 8},
    Condition.HEART_FAILURE: {
        VitalType.SYSTOLIC_BP: 4,
        VitalType.HEART_RATE: 6,
        VitalType.SPO2: -1.5,
        VitalType.BODY_WEIGHT: 10,
    },
    Condition.COPD: {VitalType.SPO2: -3, VitalType.RESPIRATORY_RATE: 3, VitalType.HEART_RATE: 6},
    Condition.DIABETES: {VitalType.BLOOD_GLUCOSE: 42, VitalType.SYSTOLIC_BP: 6, VitalType.BODY_WEIGHT: 12},
}
_NOISE_BOUND = 2.5


def make_patient(
    key: str, condition: Condition, timezone: str = "UTC", *, seed: int = 0, controlled: bool = False
) -> Patient:
    """Draws a patient's baselines; the same (seed, key, condition) always gives the same patient.

    A `controlled` patient (well treated, used by the scenarios) stays inside the care plans' warning
    thresholds except where a scenario pushes a vital out: a quarter of the condition's shift and of the spread
    between patients (at most one population sd), half the circadian amplitude and half the measurement noise.
    """
    rng = random.Random(f"patient:{seed}:{key}:{condition}")
    scale = 0.25 if controlled else 1.0
    baselines: dict[VitalType, Baseline] = {}
    for vital, (mean, between, sd, amplitude, peak) in _POPULATION.items():
        spread = rng.gauss(0, between)
        if controlled:  # a well-treated patient is never an outlier of the population
            spread = max(-between, min(between, spread))
        own = mean + scale * (_SHIFT[condition].get(vital, 0.0) + spread)
        daily = amplitude * (0.5 if controlled else 1.0)
        if vital is VitalType.SPO2:
            own = min(own, 98.8)
        baselines[vital] = Baseline(
            mean=own,
            sd=sd,
            amplitude=daily,
            peak_hour=peak + rng.uniform(-1.5, 1.5),
            relative=vital is VitalType.BLOOD_GLUCOSE,
        )
    return Patient(
        key=key, timezone=timezone, condition=condition, baselines=baselines, noise=0.5 if controlled else 1.0
    )


def true_value(patient: Patient, vital: VitalType, at: datetime, effects: Sequence[Effect] = ()) -> float:
    """The patient's underlying value at `at` (before device noise)."""
    b = patient.baselines[vital]
    local = at.astimezone(ZoneInfo(patient.timezone))
    hour = local.hour + local.minute / 60
    value = b.mean + b.amplitude * math.cos(2 * math.pi * (hour - b.peak_hour) / 24)
    for effect in effects:
        if effect.vital != vital:
            continue
        w = effect.weight(at)
        if w:
            value = value + w * (effect.level - value) if effect.level is not None else value + w * effect.delta
    return value


def measure(
    patient: Patient, vital: VitalType, at: datetime, rng: random.Random, effects: Sequence[Effect] = ()
) -> float:
    """One device measurement: true value plus bounded noise, rounded to the type's precision, kept plausible."""
    b = patient.baselines[vital]
    value = true_value(patient, vital, at, effects)
    sd = (b.sd * value / 100 if b.relative else b.sd) * patient.noise
    value += max(-_NOISE_BOUND, min(_NOISE_BOUND, rng.gauss(0, 1))) * sd
    spec = SPECS[vital]
    if vital is VitalType.SPO2:
        value = min(value, 100.0)
    value = max(spec.plausible_min, min(spec.plausible_max, value))
    return round(value, spec.decimals) if spec.decimals else float(round(value))
