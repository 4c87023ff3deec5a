"""Loading patients' contexts (zone, care plan, requirement versions, care team, devices) from PostgreSQL, and a
cache of them that requirement and context notifications invalidate."""

from __future__ import annotations

import logging
import time as monotonic
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import time
from typing import Any
from uuid import UUID

from processors.context import AssignedDevice, CareTeamMember, PatientContext
from processors.requirements import Requirement
from processors.symptoms import Comparison, SymptomRule, SymptomRuleKind, SymptomSeverity

__all__ = ["ContextCache", "load_contexts", "load_symptom_rules", "monitored_patients"]

logger = logging.getLogger(__name__)

# asyncpg.Connection (untyped library): anything with fetch().
Connection = Any

_PATIENTS = """
SELECT p.id, p.organization_id, p.timezone,
       EXISTS (SELECT 1 FROM care_plans cp
                WHERE cp.patient_id = p.id AND cp.status = 'active'
                  AND (cp.end_date IS NULL OR cp.end_date >= current_date)) AS monitored
  FROM patients p
 WHERE p.id = ANY($1::uuid[]) AND p.deleted_at IS NULL
"""
_REQUIREMENTS = """
SELECT r.id, r.patient_id, r.vital_type_id, t.code, t.canonical_unit, r.version, r.effective_from, r.effective_to,
       r.warning_low, r.warning_high, r.critical_low, r.critical_high, r.breach_k, r.breach_n, r.sustained_minutes,
       r.hysteresis_margin, r.clear_count, r.clear_minutes, r.cooldown_minutes, r.trend_window_hours, r.trend_delta,
       r.expected_per_day, r.expected_times, r.expected_window_minutes
  FROM vital_requirements r JOIN vital_types t ON t.id = r.vital_type_id
 WHERE r.patient_id = ANY($1::uuid[])
 ORDER BY r.patient_id, r.vital_type_id, r.version
"""
_CARE_TEAM = """
SELECT a.patient_id, h.user_id, a.role::text, a.started_at, a.ended_at
  FROM patient_provider_assignments a
  JOIN healthcare_providers h ON h.id = a.provider_id
  JOIN users u ON u.id = h.user_id
 WHERE a.patient_id = ANY($1::uuid[]) AND u.is_active AND u.deleted_at IS NULL
"""
_DEVICES = """
SELECT a.patient_id, d.id, d.serial, a.assigned_from, a.assigned_to
  FROM device_assignments a JOIN devices d ON d.id = a.device_id
 WHERE a.patient_id = ANY($1::uuid[]) AND d.status = 'active'
"""
_SYMPTOM_RULES = """
SELECT code, name, vital_type_id, kind::text, comparison::text, threshold, min_readings, severity::text
  FROM symptom_rules WHERE is_active ORDER BY code, vital_type_id
"""
# Patients the clock must visit: monitored, with a requirement in force (checks, quiet clears) or a device.
_MONITORED = """
SELECT p.id FROM patients p
 WHERE p.deleted_at IS NULL
   AND EXISTS (SELECT 1 FROM care_plans cp
                WHERE cp.patient_id = p.id AND cp.status = 'active'
                  AND (cp.end_date IS NULL OR cp.end_date >= current_date))
   AND (EXISTS (SELECT 1 FROM vital_requirements r WHERE r.patient_id = p.id AND r.effective_to IS NULL)
        OR EXISTS (SELECT 1 FROM device_assignments a WHERE a.patient_id = p.id AND a.assigned_to IS NULL))
 ORDER BY p.id
"""


async def load_symptom_rules(conn: Connection) -> tuple[SymptomRule, ...]:
    rows = await conn.fetch(_SYMPTOM_RULES)
    return tuple(
        SymptomRule(
            code=r["code"],
            name=r["name"],
            vital_type_id=r["vital_type_id"],
            kind=SymptomRuleKind(r["kind"]),
            comparison=Comparison(r["comparison"]),
            threshold=r["threshold"],
            min_readings=r["min_readings"],
            severity=SymptomSeverity(r["severity"]),
        )
        for r in rows
    )


async def monitored_patients(conn: Connection) -> list[UUID]:
    return [r["id"] for r in await conn.fetch(_MONITORED)]


async def load_contexts(
    conn: Connection, patient_ids: Collection[UUID], symptom_rules: tuple[SymptomRule, ...]
) -> dict[UUID, PatientContext]:
    """The contexts of these patients (absent: unknown or deleted patients), in five queries."""
    ids = list(patient_ids)
    patients = await conn.fetch(_PATIENTS, ids)
    requirements: dict[UUID, list[Requirement]] = {}
    for r in await conn.fetch(_REQUIREMENTS, ids):
        requirements.setdefault(r["patient_id"], []).append(_requirement(r))
    team: dict[UUID, list[CareTeamMember]] = {}
    for r in await conn.fetch(_CARE_TEAM, ids):
        team.setdefault(r["patient_id"], []).append(
            CareTeamMember(r["user_id"], r["role"], r["started_at"], r["ended_at"])
        )
    devices: dict[UUID, list[AssignedDevice]] = {}
    for r in await conn.fetch(_DEVICES, ids):
        devices.setdefault(r["patient_id"], []).append(
            AssignedDevice(r["id"], r["serial"], r["assigned_from"], r["assigned_to"])
        )
    return {
        p["id"]: PatientContext(
            patient_id=p["id"],
            organization_id=p["organization_id"],
            timezone=p["timezone"],
            monitored=p["monitored"],
            requirements=tuple(requirements.get(p["id"], ())),
            care_team=tuple(sorted(team.get(p["id"], ()), key=lambda m: (m.started_at, str(m.user_id)))),
            devices=tuple(sorted(devices.get(p["id"], ()), key=lambda d: (d.assigned_from, str(d.device_id)))),
            symptom_rules=symptom_rules,
        )
        for p in patients
    }


def _requirement(r: Any) -> Requirement:
    times: Iterable[time] = r["expected_times"] or ()
    return Requirement(
        id=r["id"],
        vital_type_id=r["vital_type_id"],
        vital_type=r["code"],
        unit=r["canonical_unit"],
        version=r["version"],
        effective_from=r["effective_from"],
        effective_to=r["effective_to"],
        warning_low=r["warning_low"],
        warning_high=r["warning_high"],
        critical_low=r["critical_low"],
        critical_high=r["critical_high"],
        breach_k=r["breach_k"],
        breach_n=r["breach_n"],
        sustained_minutes=r["sustained_minutes"],
        hysteresis_margin=r["hysteresis_margin"],
        clear_count=r["clear_count"],
        clear_minutes=r["clear_minutes"],
        cooldown_minutes=r["cooldown_minutes"],
        trend_window_hours=r["trend_window_hours"],
        trend_delta=r["trend_delta"],
        expected_per_day=r["expected_per_day"],
        expected_times=tuple(times),
        expected_window_minutes=r["expected_window_minutes"],
    )


async def _requirement_versions(conn: Connection, patient_ids: Collection[UUID]) -> dict[UUID, int]:
    rows = await conn.fetch(
        "SELECT patient_id, count(*) AS versions FROM vital_requirements WHERE patient_id = ANY($1::uuid[])"
        " GROUP BY patient_id",
        list(patient_ids),
    )
    return {r["patient_id"]: r["versions"] for r in rows}


class ContextCache:
    """Contexts by patient, each kept at most `ttl` seconds; `invalidate` drops one (or all) at once.

    The runners invalidate on the database's notifications ('vital_requirements', 'processor_context'), so an
    edit takes effect at the next event; `get` also compares each cached patient's number of requirement versions
    with the table's (one indexed query per batch), so a new version is never missed; the TTL bounds how stale a
    care team or device list may get if a notification is ever lost.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = monotonic.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[UUID, tuple[float, PatientContext]] = {}
        self.symptom_rules: tuple[SymptomRule, ...] = ()
        self._rules_loaded_at: float | None = None

    def holds(self, patient_id: UUID) -> bool:
        """Whether a context of this patient is cached (fresh or not)."""
        return patient_id in self._entries

    def invalidate(self, patient_id: UUID | None = None) -> None:
        if patient_id is None:
            self._entries.clear()
            self._rules_loaded_at = None
        else:
            self._entries.pop(patient_id, None)

    def to_check(self, patient_ids: Iterable[UUID]) -> list[UUID]:
        """The patients whose cached context is fresh: `get` needs their number of requirement versions."""
        now = self._clock()
        return [p for p in patient_ids if p in self._entries and now - self._entries[p][0] <= self._ttl]

    async def get(
        self, conn: Connection, patient_ids: Collection[UUID], versions: Mapping[UUID, int] | None = None
    ) -> dict[UUID, PatientContext]:
        """The contexts of these patients (absent: unknown or deleted). `versions`: the number of requirement
        versions of (at least) the `to_check` patients, read in this transaction; without it, one query reads
        them."""
        now = self._clock()
        if self._rules_loaded_at is None or now - self._rules_loaded_at > self._ttl:
            self.symptom_rules = await load_symptom_rules(conn)
            self._rules_loaded_at = now
        found: dict[UUID, PatientContext] = {}
        missing: list[UUID] = []
        if versions is None:
            cached = [p for p in patient_ids if p in self._entries and now - self._entries[p][0] <= self._ttl]
            # Versioned polling on top of LISTEN: a requirement version committed before this batch is always seen.
            versions = await _requirement_versions(conn, cached) if cached else {}
        for patient_id in patient_ids:
            entry = self._entries.get(patient_id)
            if (
                entry is not None
                and now - entry[0] <= self._ttl
                and versions.get(patient_id, 0) == len(entry[1].requirements)
            ):
                found[patient_id] = entry[1]
            else:
                missing.append(patient_id)
        if missing:
            loaded = await load_contexts(conn, missing, self.symptom_rules)
            for patient_id, context in loaded.items():
                self._entries[patient_id] = (now, context)
            found.update(loaded)
        return found
