"""The unit registry: lookup by code and LOINC codes, conversion, rounding, plausibility."""

from __future__ import annotations

import math

from ingest.rejection import RejectionReason, safe_text
from ingest.units import build_registry
from tests.ingest.catalog import registry


def test_types_are_found_by_code_loinc_and_alias() -> None:
    units = registry()
    spo2 = units.lookup("spo2")
    assert spo2 is not None
    assert units.lookup("59408-5") is spo2
    assert units.lookup("2708-6") is spo2
    assert units.by_id[4] is spo2
    assert units.lookup("SpO2") is None


def test_conversion_rounds_to_precision_and_refuses_foreign_units() -> None:
    units = registry()
    temperature = units.lookup("body_temperature")
    assert temperature is not None
    assert temperature.to_canonical(98.6, "[degF]") == 37.0
    assert temperature.to_canonical(37.25, "Cel") == 37.2
    assert temperature.to_canonical(37, "K") is None
    glucose = units.lookup("blood_glucose")
    assert glucose is not None
    assert glucose.to_canonical(5.5, "mmol/L") == 99.0
    result = glucose.to_canonical(1e308, "mmol/L")
    assert result is not None
    assert not math.isfinite(result)


def test_plausibility_bounds_are_inclusive() -> None:
    heart_rate = registry().lookup("heart_rate")
    assert heart_rate is not None
    assert heart_rate.is_plausible(20)
    assert heart_rate.is_plausible(300)
    assert not heart_rate.is_plausible(19.99)


def test_the_canonical_unit_is_always_accepted() -> None:
    units = build_registry([(9, "custom", "1-1", [], "u", 0, 1, 0)], [])
    custom = units.lookup("custom")
    assert custom is not None
    assert custom.to_canonical(1, "u") == 1


def test_the_registry_is_immutable() -> None:
    units = registry()
    assert not hasattr(units.types, "__setitem__")


def test_rejection_reasons_know_their_level() -> None:
    assert RejectionReason.UNKNOWN_DEVICE.refuses_message
    assert not RejectionReason.UNASSIGNED_DEVICE.refuses_message
    assert len(RejectionReason) == 21


def test_safe_text_escapes_what_postgres_text_refuses() -> None:
    assert safe_text("plain") == "plain"
    assert "\x00" not in safe_text("a\x00b")
    safe_text("\ud800x").encode("utf-8")
    assert len(safe_text("x" * 1000)) == 300
