"""Escalation of unacknowledged critical episodes along the care team, one role after another.

An open, critical, non-retrospective episode that nobody acknowledged escalates `after` its opening to the next
role of the chain (nurse -> primary physician -> care manager by default) that has an active member on the care
team, then `after` that escalation to the next, until the chain ends. Acknowledging or resolving stops it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

__all__ = ["DEFAULT_CHAIN", "Episode", "Escalation", "EscalationPolicy", "next_escalation"]

DEFAULT_CHAIN = ("nurse", "primary_physician", "care_manager")


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """How long an episode may stay unacknowledged at each step, and the care-team roles to page in order.

    `chain[0]` is the first responder, notified when the episode opens; escalations go to `chain[1:]`.
    """

    after: timedelta = timedelta(minutes=15)
    chain: tuple[str, ...] = DEFAULT_CHAIN

    def __post_init__(self) -> None:
        if self.after <= timedelta(0) or len(self.chain) < 2 or len(set(self.chain)) != len(self.chain):
            raise ValueError(f"invalid escalation policy {self!r}")


@dataclass(frozen=True, slots=True)
class Episode:
    """What escalation needs of a `vital_alerts` row; `level` counts the escalations done (0: none yet)."""

    alert_id: UUID
    severity: str
    status: str
    retrospective: bool
    opened_at: datetime
    level: int = 0
    escalated_at: datetime | None = None

    @property
    def escalates(self) -> bool:
        return self.status == "open" and self.severity == "critical" and not self.retrospective


@dataclass(frozen=True, slots=True)
class Escalation:
    """Page `role` (chain position `level`), due at `due_at`."""

    alert_id: UUID
    level: int
    role: str
    due_at: datetime


def next_escalation(episode: Episode, policy: EscalationPolicy, roles_on_team: Collection[str]) -> Escalation | None:
    """The next escalation of `episode`, whether due yet or not; None when it does not (or no longer) escalate.

    Roles of the chain nobody holds on the care team are skipped. Compare `due_at` with the clock to act.
    """
    if not episode.escalates:
        return None
    since = episode.escalated_at if episode.escalated_at is not None else episode.opened_at
    for level in range(episode.level + 1, len(policy.chain)):
        role = policy.chain[level]
        if role in roles_on_team:
            return Escalation(episode.alert_id, level, role, since + policy.after)
    return None
