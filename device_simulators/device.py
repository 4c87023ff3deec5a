"""Device kinds (PostgreSQL enum `device_kind`), device models and what one measurement of each reports."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from device_simulators.message import Reading
from device_simulators.physiology import Effect, Patient, measure
from device_simulators.vitals import SPECS, VitalType


class DeviceKind(StrEnum):
    BP_CUFF = "bp_cuff"
    PULSE_OXIMETER = "pulse_oximeter"
    SCALE = "scale"
    GLUCOMETER = "glucometer"
    THERMOMETER = "thermometer"
    RESPIRATORY_MONITOR = "respiratory_monitor"
    MULTI = "multi"


# One measurement reports these vitals together, at the same instant.
MEASURES: dict[DeviceKind, tuple[VitalType, ...]] = {
    DeviceKind.BP_CUFF: (VitalType.SYSTOLIC_BP, VitalType.DIASTOLIC_BP, VitalType.HEART_RATE),
    DeviceKind.PULSE_OXIMETER: (VitalType.SPO2, VitalType.HEART_RATE),
    DeviceKind.SCALE: (VitalType.BODY_WEIGHT,),
    DeviceKind.GLUCOMETER: (VitalType.BLOOD_GLUCOSE,),
    DeviceKind.THERMOMETER: (VitalType.BODY_TEMPERATURE,),
    DeviceKind.RESPIRATORY_MONITOR: (VitalType.RESPIRATORY_RATE,),
    DeviceKind.MULTI: (VitalType.HEART_RATE,),
}


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """How a device reports: its serial, firmware, whether it names types by LOINC, and its units."""

    serial: str
    kind: DeviceKind
    firmware: str = "1.0.0"
    loinc_names: bool = False
    units: Mapping[VitalType, str] = field(default_factory=dict)

    def type_name(self, vital: VitalType) -> str:
        return SPECS[vital].loinc if self.loinc_names else vital.value

    def unit(self, vital: VitalType) -> str:
        return self.units.get(vital, SPECS[vital].canonical_unit)


def make_device(serial: str, kind: DeviceKind, *, seed: int = 0, us_units: bool | None = None) -> DeviceModel:
    """A device with deterministic quirks: LOINC names on some, US units (lb, °F) on some, mmol/L rarely."""
    rng = random.Random(f"device:{seed}:{serial}")
    us = rng.random() < 0.5 if us_units is None else us_units
    units: dict[VitalType, str] = {}
    if us:
        units[VitalType.BODY_WEIGHT] = "[lb_av]"
        units[VitalType.BODY_TEMPERATURE] = "[degF]"
    if kind is DeviceKind.GLUCOMETER and rng.random() < 0.2:
        units[VitalType.BLOOD_GLUCOSE] = "mmol/L"
    if rng.random() < 0.3:
        units[VitalType.HEART_RATE] = "{beats}/min"
    firmware = f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
    return DeviceModel(serial=serial, kind=kind, firmware=firmware, loinc_names=rng.random() < 0.3, units=units)


def take_measurement(
    device: DeviceModel, patient: Patient, at: datetime, rng: random.Random, effects: Sequence[Effect] = ()
) -> tuple[Reading, ...]:
    """One measurement: every vital the device kind reports, at the same instant, in the device's units."""
    readings = []
    for vital in MEASURES[device.kind]:
        canonical = measure(patient, vital, at, rng, effects)
        unit_code = device.unit(vital)
        value = SPECS[vital].unit(unit_code).from_canonical(canonical)
        decimals = SPECS[vital].decimals + (0 if unit_code == SPECS[vital].canonical_unit else 1)
        value = round(value, decimals) if decimals else float(round(value))
        readings.append(Reading(device.type_name(vital), value, unit_code, at))
    return tuple(readings)
