"""Symptom rules (seeded data in `symptom_rules`) and the symptom flags the engine raises from episodes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from processors.alerts import Direction

__all__ = ["Comparison", "SymptomFlag", "SymptomRule", "SymptomRuleKind", "SymptomSeverity"]


class SymptomSeverity(StrEnum):
    """PostgreSQL enum `symptom_severity`."""

    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"
    CRITICAL = "critical"


class SymptomRuleKind(StrEnum):
    """PostgreSQL enum `symptom_rule_kind`: compare readings, or the gain/loss of a trend episode."""

    THRESHOLD = "threshold"
    TREND = "trend"


class Comparison(StrEnum):
    """PostgreSQL enum `symptom_comparison`."""

    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


@dataclass(frozen=True, slots=True)
class SymptomRule:
    """One row of `symptom_rules`.

    A threshold rule matches a reading `value <comparison> threshold`; it flags the episode in the matching
    direction once `min_readings` readings of that episode matched. A trend rule flags a trend episode whose
    change over the window is at least `threshold` (rise for gt/ge, fall for lt/le).
    """

    code: str
    name: str
    vital_type_id: int
    kind: SymptomRuleKind
    comparison: Comparison
    threshold: float
    min_readings: int
    severity: SymptomSeverity

    @property
    def direction(self) -> Direction:
        rising = self.comparison in (Comparison.GT, Comparison.GE)
        if self.kind is SymptomRuleKind.TREND:
            return Direction.RISE if rising else Direction.FALL
        return Direction.HIGH if rising else Direction.LOW

    def matches(self, value: float) -> bool:
        """For threshold rules: the reading's value; for trend rules: the absolute change over the window."""
        if self.kind is SymptomRuleKind.TREND:
            return value >= self.threshold
        match self.comparison:
            case Comparison.LT:
                return value < self.threshold
            case Comparison.LE:
                return value <= self.threshold
            case Comparison.GT:
                return value > self.threshold
            case Comparison.GE:
                return value >= self.threshold


@dataclass(frozen=True, slots=True)
class SymptomFlag:
    """A `symptoms` row with source 'device', raised once per episode and rule code."""

    symptom_id: UUID
    organization_id: UUID
    patient_id: UUID
    alert_id: UUID
    code: str
    name: str
    severity: SymptomSeverity
    onset_at: datetime
    device_id: UUID
    reading_id: UUID
    measured_at: datetime
