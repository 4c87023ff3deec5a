"""The seeded vital types of migration 0030 as a registry, for pure tests that need no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from ingest.directory import Assignment, DeviceRecord
from ingest.units import UnitRegistry, build_registry

TYPE_ROWS: list[tuple[int, str, str, list[str], str, float, float, int]] = [
    (1, "heart_rate", "8867-4", [], "/min", 20, 300, 0),
    (2, "systolic_bp", "8480-6", [], "mm[Hg]", 40, 300, 0),
    (3, "diastolic_bp", "8462-4", [], "mm[Hg]", 20, 200, 0),
    (4, "spo2", "59408-5", ["2708-6"], "%", 50, 100, 0),
    (5, "respiratory_rate", "9279-1", [], "/min", 2, 80, 0),
    (6, "body_temperature", "8310-5", [], "Cel", 30, 45, 1),
    (7, "body_weight", "29463-7", [], "kg", 0.5, 500, 2),
    (8, "blood_glucose", "2339-0", [], "mg/dL", 10, 1500, 0),
]
UNIT_ROWS: list[tuple[int, str, float, float]] = [
    (1, "/min", 1, 0),
    (1, "{beats}/min", 1, 0),
    (2, "mm[Hg]", 1, 0),
    (3, "mm[Hg]", 1, 0),
    (4, "%", 1, 0),
    (5, "/min", 1, 0),
    (5, "{breaths}/min", 1, 0),
    (6, "Cel", 1, 0),
    (6, "[degF]", 5.0 / 9.0, -32),
    (7, "kg", 1, 0),
    (7, "[lb_av]", 0.45359237, 0),
    (7, "g", 0.001, 0),
    (8, "mg/dL", 1, 0),
    (8, "mmol/L", 18.0156, 0),
]

NOW = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)


def registry() -> UnitRegistry:
    return build_registry(TYPE_ROWS, UNIT_ROWS)


def device(
    *,
    serial: str = "cuff-0001",
    revoked: bool = False,
    assignments: tuple[Assignment, ...] | None = None,
    patient_id: UUID | None = None,
) -> DeviceRecord:
    """A device assigned since 60 days before NOW to `patient_id` (or a fresh patient), unless told otherwise."""
    if assignments is None:
        assignments = (Assignment(patient_id or uuid4(), NOW - timedelta(days=60), None),)
    return DeviceRecord(uuid4(), uuid4(), serial, revoked, assignments)
