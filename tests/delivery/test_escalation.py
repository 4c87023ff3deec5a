from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from processors.delivery.escalation import Episode, Escalation, EscalationPolicy, next_escalation

OPENED = datetime(2026, 2, 1, 3, 0, tzinfo=UTC)
POLICY = EscalationPolicy(after=timedelta(minutes=10))
TEAM = {"nurse", "primary_physician", "care_manager"}


def episode(**changes: object) -> Episode:
    fields: dict[str, object] = {
        "alert_id": uuid4(),
        "severity": "critical",
        "status": "open",
        "retrospective": False,
        "opened_at": OPENED,
    }
    fields.update(changes)
    return Episode(**fields)  # type: ignore[arg-type]


def test_walks_the_chain_one_step_after_another() -> None:
    e = episode()
    first = next_escalation(e, POLICY, TEAM)
    assert first == Escalation(e.alert_id, 1, "primary_physician", OPENED + timedelta(minutes=10))
    # Done 3 minutes late: the next step counts from when it was really done.
    done = OPENED + timedelta(minutes=13)
    second = next_escalation(episode(alert_id=e.alert_id, level=1, escalated_at=done), POLICY, TEAM)
    assert second == Escalation(e.alert_id, 2, "care_manager", done + timedelta(minutes=10))
    assert next_escalation(episode(level=2, escalated_at=done), POLICY, TEAM) is None


def test_roles_nobody_holds_are_skipped() -> None:
    e = episode()
    step = next_escalation(e, POLICY, {"nurse", "care_manager"})
    assert step is not None and (step.level, step.role) == (2, "care_manager")
    assert next_escalation(e, POLICY, {"nurse"}) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "acknowledged"},
        {"status": "resolved"},
        {"severity": "warning"},
        {"retrospective": True},
    ],
)
def test_only_open_paging_critical_episodes_escalate(changes: dict[str, object]) -> None:
    assert next_escalation(episode(**changes), POLICY, TEAM) is None


def test_custom_chain() -> None:
    policy = EscalationPolicy(after=timedelta(minutes=5), chain=("care_manager", "nurse"))
    step = next_escalation(episode(), policy, TEAM)
    assert step is not None and (step.level, step.role, step.due_at) == (1, "nurse", OPENED + timedelta(minutes=5))


@pytest.mark.parametrize(
    "kwargs",
    [{"after": timedelta(0)}, {"chain": ("nurse",)}, {"chain": ("nurse", "nurse")}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid escalation policy"):
        EscalationPolicy(**kwargs)  # type: ignore[arg-type]
