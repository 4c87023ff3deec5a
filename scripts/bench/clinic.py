"""Makes sandbox patients monitored, so the processors judge their readings: an active care plan, a heart-rate
requirement and a one-nurse care team (a patient without an active care plan has its readings stored and skipped).

The load generator's heart rates (55-99 /min) never breach `HEART_RATE`; the paging probe's do.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

from device_simulators.credentials import Fleet
from scripts.bench.sandbox import Sandbox

# Critical above 150 /min; one reading opens an episode and one reading back inside clears it; no cooldown.
HEART_RATE: dict[str, Any] = {
    "warning_low": 40,
    "critical_low": 30,
    "warning_high": 120,
    "critical_high": 150,
    "breach_k": 1,
    "breach_n": 1,
    "hysteresis_margin": 0,
    "clear_count": 1,
    "cooldown_minutes": 0,
}
BREACH_VALUE = 180
NORMAL_VALUE = 70


def monitor(box: Sandbox, fleet: Fleet) -> None:
    """Gives every patient of `fleet` (one organization) a care plan, the heart-rate requirement and a nurse."""
    organization = fleet.devices[0].organization_id
    patients = [d.patient_id for d in fleet.devices]
    assert organization is not None and all(p is not None for p in patients)
    since = datetime.now(UTC) - timedelta(days=30)
    columns = ", ".join(HEART_RATE)
    placeholders = ", ".join(["%s"] * len(HEART_RATE))
    with box.admin() as conn, conn.transaction():
        user = conn.execute(
            "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " VALUES (%s, %s, %s, 'provider', 'Bench', 'Nurse') RETURNING id",
            (organization, f"nurse-{secrets.token_hex(4)}@bench.test", "$2b$12$" + secrets.token_urlsafe(40)[:53]),
        ).fetchone()
        assert user is not None
        provider = conn.execute(
            "INSERT INTO healthcare_providers (organization_id, user_id, provider_type, npi)"
            " VALUES (%s, %s, 'nurse', %s) RETURNING id",
            (organization, user[0], f"{secrets.randbelow(10**10):010d}"),
        ).fetchone()
        assert provider is not None
        for patient in patients:
            plan = conn.execute(
                "INSERT INTO care_plans (organization_id, patient_id, status, title, start_date)"
                " VALUES (%s, %s, 'active', 'Bench monitoring', %s) RETURNING id",
                (organization, patient, date.today() - timedelta(days=30)),
            ).fetchone()
            assert plan is not None
            conn.execute(
                "INSERT INTO patient_provider_assignments (organization_id, patient_id, provider_id, role,"
                " is_primary, started_at) VALUES (%s, %s, %s, 'nurse', true, %s)",
                (organization, patient, provider[0], since),
            )
            conn.execute(
                "INSERT INTO vital_requirements (organization_id, patient_id, vital_type_id, care_plan_id, version,"
                f" effective_from, {columns}) SELECT %s, %s, id, %s, 1, %s, {placeholders}"
                " FROM vital_types WHERE code = 'heart_rate'",
                (organization, patient, plan[0], since, *HEART_RATE.values()),
            )
