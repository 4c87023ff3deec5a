"""Every scenario file through the pure engine: as delivered, with every reading delivered twice (at-least-once
redelivery), and with the state serialised and read back between events (a restart between any two events).
Every output is also checked against the constraints of the tables the runners write it to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from processors.codec import dump_state, load_state
from processors.engine import evaluate
from processors.events import CommittedReading
from processors.state import PatientState
from tests.processors.constraints import Tables
from tests.processors.scenario import (
    Ledger,
    Outcome,
    RequirementSpec,
    World,
    all_paths,
    expected_outcome,
    load,
    pure_context,
    requirement_versions,
)

Restore = Callable[[PatientState], PatientState]


def run_pure(world: World, *, redeliver: bool = False, restore: Restore | None = None) -> Outcome:
    specs = list(world.spec.requirements)
    context = pure_context(world, requirement_versions(specs, world.patient_id))
    config = world.spec.config.engine()
    ledger = Ledger()
    tables = Tables()
    state: PatientState | None = None
    for _, item in world.events():
        if isinstance(item, RequirementSpec):
            specs.append(item)
            context = pure_context(world, requirement_versions(specs, world.patient_id))
            continue
        deliveries = 2 if redeliver and isinstance(item, CommittedReading) else 1
        for _ in range(deliveries):
            result = evaluate(state, item, context, config)
            ledger.apply(result.outputs)
            tables.apply(result.outputs)
            state = result.state if restore is None else restore(result.state)
    return ledger.outcome(world)


def _round_trip(state: PatientState) -> PatientState:
    restored = load_state(dump_state(state))
    assert restored == state
    return restored


SCENARIOS = all_paths()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    spec = load(path)
    assert run_pure(World(spec)) == expected_outcome(spec)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_with_redelivery(path: Path) -> None:
    spec = load(path)
    assert run_pure(World(spec), redeliver=True) == expected_outcome(spec)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_with_state_round_trips(path: Path) -> None:
    spec = load(path)
    assert run_pure(World(spec), restore=_round_trip) == expected_outcome(spec)


def test_the_issue_list_is_covered() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {
        "hypertensive_crisis",
        "desaturation_recovery",
        "fever",
        "tachycardia_k_of_n",
        "heart_failure_weight_gain",
        "hypoglycemia",
        "warning_then_critical",
        "flapping_hysteresis",
        "late_backfill_day",
        "out_of_order_arrival",
        "missed_bp_across_dst",
        "silent_device",
    } <= names
