"""Vital types and their accepted UCUM units, loaded once from `vital_types`/`vital_type_units` (immutable here)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """canonical = (value + pre_offset) * factor."""

    factor: float
    pre_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class VitalType:
    id: int
    code: str
    loinc: str
    canonical_unit: str
    plausible_min: float
    plausible_max: float
    decimal_precision: int
    units: Mapping[str, UnitConversion]

    def to_canonical(self, value: float, unit: str) -> float | None:
        """The value in the canonical unit, rounded to the type's precision; None for a unit it does not accept."""
        conversion = self.units.get(unit)
        return None if conversion is None else self.convert(value, conversion)

    def convert(self, value: float, conversion: UnitConversion) -> float:
        """`to_canonical` for a conversion already looked up (one of this type's `units`); a value that overflows
        is returned as it is (infinite), not rounded."""
        canonical = (value + conversion.pre_offset) * conversion.factor
        return round(canonical, self.decimal_precision) if math.isfinite(canonical) else canonical

    def is_plausible(self, canonical: float) -> bool:
        return self.plausible_min <= canonical <= self.plausible_max


@dataclass(frozen=True, slots=True)
class UnitRegistry:
    """Every vital type, found by its code or any of its LOINC codes."""

    types: Mapping[str, VitalType]
    by_id: Mapping[int, VitalType]

    def lookup(self, name: str) -> VitalType | None:
        return self.types.get(name)


def build_registry(
    type_rows: Iterable[tuple[int, str, str, Iterable[str], str, float, float, int]],
    unit_rows: Iterable[tuple[int, str, float, float]],
) -> UnitRegistry:
    """Builds the registry from `vital_types` rows (id, code, loinc, loinc_aliases, canonical_unit, plausible_min,
    plausible_max, decimal_precision) and `vital_type_units` rows (vital_type_id, unit, factor, pre_offset)."""
    units: dict[int, dict[str, UnitConversion]] = {}
    for type_id, unit, factor, pre_offset in unit_rows:
        units.setdefault(type_id, {})[unit] = UnitConversion(float(factor), float(pre_offset))
    names: dict[str, VitalType] = {}
    by_id: dict[int, VitalType] = {}
    for type_id, code, loinc, aliases, canonical, low, high, precision in type_rows:
        accepted = dict(units.get(type_id, {}))
        accepted.setdefault(canonical, UnitConversion(1.0))
        vital = VitalType(
            id=type_id,
            code=code,
            loinc=loinc,
            canonical_unit=canonical,
            plausible_min=float(low),
            plausible_max=float(high),
            decimal_precision=int(precision),
            units=MappingProxyType(accepted),
        )
        by_id[type_id] = vital
        for name in (code, loinc, *aliases):
            names[name] = vital
    return UnitRegistry(MappingProxyType(names), MappingProxyType(by_id))
