"""One batch of events for the database-backed runners: the same steps whether the state comes from
`processor_states` (inline) or a Faust table.

In one transaction: lock the batch's patients, fetch their contexts, drop episodes people resolved, rebuild
missing states from the tables, evaluate every patient's events in order, write the outputs and the new states
(versioned, in `processor_states`). A runner that keeps its own copy of the states takes them from the result
after the commit (the inline runner's cache, the Faust table's changelog).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from processors.codec import dump_state
from processors.context import EngineConfig, PatientContext
from processors.contexts import ContextCache
from processors.engine import Output, evaluate, event_time, forget
from processors.events import Event
from processors.rebuild import bootstrap_state
from processors.state import PatientState
from processors.store import begin_batch, reconcile, write_batch

__all__ = ["BatchResult", "run_batch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: list[Output]
    # The patients whose state changed, with their new state.
    states: dict[UUID, PatientState]
    # The same states as stored (processors.codec), for a runner that keeps its own copy.
    encoded: dict[UUID, bytes] = field(default_factory=dict)
    # Every state the batch started from, changed or not: what a runner may cache after the commit.
    current: dict[UUID, PatientState] = field(default_factory=dict)


async def run_batch(
    conn: Any,
    by_patient: Mapping[UUID, Sequence[Event]],
    cached: Mapping[UUID, PatientState | None],
    contexts: ContextCache,
    config: EngineConfig,
) -> BatchResult:
    """One whole batch in one transaction on `conn`, in four round trips when every patient is known (BEGIN,
    `begin_batch`, `write_batch`, COMMIT): lock the patients, take the newest states (`cached` where the table
    holds that version), evaluate, write the outputs and the new states (returned encoded as well).

    More only where something is missing: a context not cached (four queries), a state rebuilt from the tables,
    a state reloaded after a crash (one `reconcile`), vital checks that changed."""
    async with conn.transaction():
        start = await begin_batch(conn, {p: cached.get(p) for p in by_patient}, contexts.to_check(by_patient.keys()))
        known = await contexts.get(conn, by_patient.keys(), start.requirement_versions)
        monitored = _monitored(by_patient, known)
        current = {p: s for p in monitored if (s := start.states.get(p)) is not None}
        reloaded = {p: current[p] for p in start.reloaded if p in current}
        if reloaded:
            current.update(await reconcile(conn, reloaded))
        for patient_id, alert_ids in start.resolved.items():
            if patient_id in current:
                current[patient_id] = forget(current[patient_id], alert_ids)
        result = await _evaluate(conn, by_patient, monitored, known, current, start.states, config)
        encoded = {p: dump_state(s) for p, s in result.states.items()}
        await write_batch(conn, result.outputs, {p: (s, encoded[p]) for p, s in result.states.items()})
    return BatchResult(result.outputs, result.states, encoded, start.states)


def _monitored(by_patient: Mapping[UUID, Sequence[Event]], known: Mapping[UUID, PatientContext]) -> list[UUID]:
    for patient_id in by_patient.keys() - known.keys():
        logger.debug("events for unknown or deleted patient %s skipped", patient_id)
    return [p for p in by_patient if p in known and known[p].monitored]


async def _evaluate(
    conn: Any,
    by_patient: Mapping[UUID, Sequence[Event]],
    monitored: Sequence[UUID],
    known: Mapping[UUID, PatientContext],
    current: Mapping[UUID, PatientState],
    stored: Mapping[UUID, PatientState],
    config: EngineConfig,
) -> BatchResult:
    """Each monitored patient's events in order from its `current` state (rebuilt from the tables if none); a
    state that differs from the `stored` one gets the next version."""
    outputs: list[Output] = []
    changed: dict[UUID, PatientState] = {}
    for patient_id in monitored:
        events = by_patient[patient_id]
        context = known[patient_id]
        state = current.get(patient_id)
        if state is None:
            state = await bootstrap_state(conn, context, event_time(events[0]), config)
        for event in events:
            result = evaluate(state, event, context, config)
            outputs.extend(result.outputs)
            state = result.state
        before = stored.get(patient_id)
        if state != before:
            changed[patient_id] = replace(state, version=(0 if before is None else before.version) + 1)
    return BatchResult(outputs, changed)
