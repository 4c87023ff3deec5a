"""The vital types a simulated device can report, mirroring the `vital_types` seed (docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VitalType(StrEnum):
    """Vital type codes of the `vital_types` table."""

    HEART_RATE = "heart_rate"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    SPO2 = "spo2"
    RESPIRATORY_RATE = "respiratory_rate"
    BODY_TEMPERATURE = "body_temperature"
    BODY_WEIGHT = "body_weight"
    BLOOD_GLUCOSE = "blood_glucose"


@dataclass(frozen=True, slots=True)
class Unit:
    """An accepted UCUM unit: canonical = (value + pre_offset) * factor."""

    code: str
    factor: float = 1.0
    pre_offset: float = 0.0

    def from_canonical(self, value: float) -> float:
        return value / self.factor - self.pre_offset


@dataclass(frozen=True, slots=True)
class VitalSpec:
    code: VitalType
    loinc: str
    canonical_unit: str
    units: tuple[Unit, ...]
    plausible_min: float
    plausible_max: float
    decimals: int

    def unit(self, code: str) -> Unit:
        for unit in self.units:
            if unit.code == code:
                return unit
        raise KeyError(f"{code!r} is not an accepted unit of {self.code}")


SPECS: dict[VitalType, VitalSpec] = {
    spec.code: spec
    for spec in (
        VitalSpec(VitalType.HEART_RATE, "8867-4", "/min", (Unit("/min"), Unit("{beats}/min")), 20, 300, 0),
        VitalSpec(VitalType.SYSTOLIC_BP, "8480-6", "mm[Hg]", (Unit("mm[Hg]"),), 40, 300, 0),
        VitalSpec(VitalType.DIASTOLIC_BP, "8462-4", "mm[Hg]", (Unit("mm[Hg]"),), 20, 200, 0),
        VitalSpec(VitalType.SPO2, "59408-5", "%", (Unit("%"),), 50, 100, 0),
        VitalSpec(VitalType.RESPIRATORY_RATE, "9279-1", "/min", (Unit("/min"), Unit("{breaths}/min")), 2, 80, 0),
        VitalSpec(
            VitalType.BODY_TEMPERATURE, "8310-5", "Cel", (Unit("Cel"), Unit("[degF]", 5.0 / 9.0, -32.0)), 30, 45, 1
        ),
        VitalSpec(
            VitalType.BODY_WEIGHT,
            "29463-7",
            "kg",
            (Unit("kg"), Unit("[lb_av]", 0.45359237), Unit("g", 0.001)),
            0.5,
            500,
            2,
        ),
        VitalSpec(VitalType.BLOOD_GLUCOSE, "2339-0", "mg/dL", (Unit("mg/dL"), Unit("mmol/L", 18.0156)), 10, 1500, 0),
    )
}

# A unit of some other vital type that a misconfigured device might send (the wrong-unit fault).
WRONG_UNITS: dict[VitalType, str] = {
    VitalType.HEART_RATE: "mm[Hg]",
    VitalType.SYSTOLIC_BP: "%",
    VitalType.DIASTOLIC_BP: "kg",
    VitalType.SPO2: "/min",
    VitalType.RESPIRATORY_RATE: "Cel",
    VitalType.BODY_TEMPERATURE: "mg/dL",
    VitalType.BODY_WEIGHT: "mm[Hg]",
    VitalType.BLOOD_GLUCOSE: "kg",
}
