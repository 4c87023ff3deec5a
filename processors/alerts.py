"""Alert episodes as the engine reports them: one `AlertChange` per transition of a `vital_alerts` row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

__all__ = ["AlertChange", "AlertStatus", "ChangeKind", "Direction", "Rule", "Severity"]


class Direction(StrEnum):
    """Which way a vital left its range (PostgreSQL enum `vital_alert_direction`)."""

    LOW = "low"
    HIGH = "high"
    # Trend rules (e.g. weight gain over a window).
    RISE = "rise"
    FALL = "fall"


class Severity(StrEnum):
    """PostgreSQL enum `vital_alert_severity`; `rank` orders them."""

    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return 2 if self is Severity.CRITICAL else 1


class AlertStatus(StrEnum):
    """PostgreSQL enum `vital_alert_status`. The engine writes open/resolved; people acknowledge."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ChangeKind(StrEnum):
    """What happened to an episode (PostgreSQL enum `vital_alert_change`)."""

    OPENED = "opened"
    ESCALATED = "escalated"
    # A retrospective episode confirmed by timely data: it now pages.
    PROMOTED = "promoted"
    REMINDED = "reminded"
    CLEARED = "cleared"


class Rule(StrEnum):
    """Which rule of the requirement opened the episode (PostgreSQL enum `vital_alert_rule`)."""

    THRESHOLD = "threshold"
    K_OF_N = "k_of_n"
    SUSTAINED = "sustained"
    TREND = "trend"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """The whole `vital_alerts` row after one transition; `revision` grows by one per transition."""

    kind: ChangeKind
    alert_id: UUID
    organization_id: UUID
    patient_id: UUID
    vital_type_id: int
    vital_type: str
    direction: Direction
    severity: Severity
    status: AlertStatus
    rule: Rule
    retrospective: bool
    opened_at: datetime
    changed_at: datetime
    resolved_at: datetime | None
    requirement_id: UUID
    requirement_version: int
    trigger_reading_ids: tuple[UUID, ...]
    value: float
    threshold: float | None
    last_notified_at: datetime | None
    revision: int
