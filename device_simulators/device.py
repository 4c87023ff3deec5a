"""Device kinds (PostgreSQL enum `device_kind`) and what one measurement of each kind reports."""

from __future__ import annotations

from enum import StrEnum

from device_simulators.vitals import VitalType


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
