"""Reading simulator output back the way ingest will: decode the payload, convert to canonical units."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from device_simulators.message import Envelope
from device_simulators.vitals import SPECS, VitalType


@dataclass(frozen=True, slots=True)
class Point:
    serial: str
    vital: VitalType
    value: float
    measured_at: datetime


def vital_of(name: str) -> VitalType:
    for vital, spec in SPECS.items():
        if name in (vital.value, spec.loinc):
            return vital
    raise KeyError(name)


def points(envelopes: list[Envelope]) -> list[Point]:
    out = []
    for env in envelopes:
        body = json.loads(env.payload)
        for r in body["readings"]:
            vital = vital_of(r["type"])
            unit = SPECS[vital].unit(r["unit"])
            out.append(
                Point(
                    env.serial,
                    vital,
                    (r["value"] + unit.pre_offset) * unit.factor,
                    datetime.fromisoformat(r["measured_at"]),
                )
            )
    return sorted(out, key=lambda p: p.measured_at)


def series(envelopes: list[Envelope], vital: VitalType) -> list[Point]:
    return [p for p in points(envelopes) if p.vital is vital]
