"""One batch of events for the database-backed runners: the same steps whether the state comes from
`processor_states` (inline) or a Faust table.

In one transaction (the caller's): lock the batch's patients, fetch their contexts, drop episodes people
resolved, rebuild missing states from the tables, evaluate every patient's events in order, write the outputs.
The caller stores the new states — in the same transaction (inline) or after it commits (Faust changelog).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from processors.context import EngineConfig
from processors.contexts import ContextCache
from processors.engine import Output, evaluate, event_time
from processors.events import Event
from processors.state import PatientState
from processors.store import bootstrap_state, lock_patients, reconcile, write_outputs

__all__ = ["BatchResult", "apply_batch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: list[Output]
    # The patients whose state changed, with their new state.
    states: dict[UUID, PatientState]


async def apply_batch(
    conn: Any,
    by_patient: Mapping[UUID, Sequence[Event]],
    stored: Mapping[UUID, PatientState],
    contexts: ContextCache,
    config: EngineConfig,
) -> BatchResult:
    """Evaluates `by_patient` (each patient's events in delivery order) from the `stored` states."""
    await lock_patients(conn, by_patient.keys())
    known = await contexts.get(conn, by_patient.keys())
    for patient_id in by_patient.keys() - known.keys():
        logger.debug("events for unknown or deleted patient %s skipped", patient_id)
    monitored = [p for p in by_patient if p in known and known[p].monitored]
    current = await reconcile(conn, {p: stored[p] for p in monitored if p in stored})
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
    await write_outputs(conn, outputs)
    return BatchResult(outputs, changed)
