"""`python -m scripts.seed [--check]`: realistic, idempotent demo data, and the seeded fleet's credentials.

Two organizations, their providers, 50 patients in several time zones, each with an active care plan from a
template, the template's vital requirements, a care team of 2-3 providers, and devices assigned to the patient.
Every row has a natural key (slug, email, MRN, serial), so a second run changes nothing. Device passwords are
written to `device_credentials.json` (git-ignored, mode 600) for the simulators; a device whose password is not in
that file gets new credentials.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from ingest import provisioning
from ingest.broker_auth import verify_password
from ingest.broker_sync import sync_broker
from ingest.settings import IngestSettings
from migrations.settings import MigrationSettings
from scripts import seed_platform

Conn = psycopg.Connection[Any]
CREDENTIALS = Path("device_credentials.json")
PATIENTS_PER_ORG = 25


@dataclass(frozen=True, slots=True)
class OrgSpec:
    slug: str
    name: str
    domain: str
    timezones: tuple[str, ...]


ORGS = (
    OrgSpec(
        "lakeside-heart",
        "Lakeside Heart & Vascular",
        "lakeside.example",
        ("America/Chicago", "America/New_York", "America/Indiana/Indianapolis"),
    ),
    OrgSpec(
        "cascade-home-health",
        "Cascade Home Health",
        "cascade.example",
        ("America/Los_Angeles", "America/Denver", "America/Phoenix", "Pacific/Honolulu", "America/Anchorage"),
    ),
)
# (provider type, specialty, care-team role)
STAFF = (
    ("physician", "Cardiology", "primary_physician"),
    ("physician", "Internal Medicine", "primary_physician"),
    ("physician", "Endocrinology", "specialist"),
    ("nurse", "RPM nursing", "nurse"),
    ("nurse", "RPM nursing", "nurse"),
    ("nurse_practitioner", "Pulmonology", "nurse"),
    ("care_manager", "Care coordination", "care_manager"),
)
TEMPLATE_DEVICES = {
    "hypertension_rpm": ("bp_cuff",),
    "heart_failure_rpm": ("bp_cuff", "scale", "pulse_oximeter"),
    "copd_rpm": ("pulse_oximeter", "thermometer", "respiratory_monitor"),
    "diabetes_rpm": ("glucometer", "bp_cuff", "scale"),
}
DEVICE_MODELS = {
    "bp_cuff": ("Omron", "BP7350"),
    "pulse_oximeter": ("Masimo", "MightySat Rx"),
    "scale": ("Withings", "Body Cardio"),
    "glucometer": ("Roche", "Accu-Chek Guide"),
    "thermometer": ("Braun", "ThermoScan 7"),
    "respiratory_monitor": ("Philips", "RespiraSense"),
}
SERIAL_PREFIX = {
    "bp_cuff": "BPC",
    "pulse_oximeter": "OXI",
    "scale": "SCL",
    "glucometer": "GLU",
    "thermometer": "THM",
    "respiratory_monitor": "RSP",
}
FIRST = (
    "Maria James Linda Robert Patricia Michael Barbara William Elizabeth David Susan Richard Jessica Joseph Sarah "
    "Thomas Karen Charles Nancy Daniel Lisa Matthew Betty Anthony Sandra Mark Ashley Donald Dorothy Steven Kimberly "
    "Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Melissa George Deborah Timothy"
).split()
LAST = (
    "Garcia Johnson Nguyen Smith Patel Williams Brown Jones Miller Davis Rodriguez Martinez Hernandez Lopez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson "
    "Walker Young Allen King Wright Scott Torres Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell"
).split()
REQUIREMENT_FIELDS = (
    "warning_low",
    "warning_high",
    "critical_low",
    "critical_high",
    "breach_k",
    "breach_n",
    "sustained_minutes",
    "hysteresis_margin",
    "clear_count",
    "clear_minutes",
    "cooldown_minutes",
    "trend_window_hours",
    "trend_delta",
    "expected_per_day",
    "expected_times",
    "expected_window_minutes",
)


def _id(conn: Conn, query: str, params: tuple[Any, ...]) -> UUID:
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return UUID(str(row[0]))


def _password_hash(label: str) -> str:
    # Demo accounts get an unguessable password nobody knows (scrypt of random bytes); log-in is out of scope here.
    salt = os.urandom(16)
    digest = hashlib.scrypt(os.urandom(32) + label.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def upsert_user(conn: Conn, org_id: UUID, email: str, role: str, first: str, last: str) -> UUID:
    found = conn.execute(
        "SELECT id FROM users WHERE lower(email) = lower(%s) AND deleted_at IS NULL", (email,)
    ).fetchone()
    if found is not None:
        return UUID(str(found[0]))
    conn.execute(
        "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name, email_verified_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING",
        (org_id, email, _password_hash(email), role, first, last),
    )
    return _id(conn, "SELECT id FROM users WHERE lower(email) = lower(%s) AND deleted_at IS NULL", (email,))


def seed_org(conn: Conn, spec: OrgSpec) -> dict[str, Any]:
    conn.execute(
        "INSERT INTO organizations (name, slug, timezone) VALUES (%s, %s, %s) ON CONFLICT (slug) DO NOTHING",
        (spec.name, spec.slug, spec.timezones[0]),
    )
    org_id = _id(conn, "SELECT id FROM organizations WHERE slug = %s", (spec.slug,))
    staff: list[tuple[UUID, str]] = []
    for i, (ptype, specialty, team_role) in enumerate(STAFF):
        first, last = FIRST[(i * 7 + len(spec.slug)) % len(FIRST)], LAST[(i * 11 + len(spec.slug)) % len(LAST)]
        user_id = upsert_user(conn, org_id, f"{first}.{last}.{i}@{spec.domain}".lower(), "provider", first, last)
        npi = f"1{int(hashlib.sha256(f'{spec.slug}:{i}'.encode()).hexdigest(), 16) % 10**9:09d}"
        conn.execute(
            "INSERT INTO healthcare_providers (organization_id, user_id, provider_type, specialty, license_number,"
            " license_state, npi) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
            (org_id, user_id, ptype, specialty, f"RN-{npi[-6:]}", "IL" if "lakeside" in spec.slug else "WA", npi),
        )
        staff.append((_id(conn, "SELECT id FROM healthcare_providers WHERE user_id = %s", (user_id,)), team_role))
    return {"id": org_id, "staff": staff}


def seed_patient(
    conn: Conn, spec: OrgSpec, org: dict[str, Any], index: int, rng: random.Random, templates: dict[str, UUID]
) -> list[tuple[str, str, UUID]]:
    """Creates (or finds) one patient with plan, requirements, care team and devices; returns (serial, kind, id)."""
    org_id: UUID = org["id"]
    first, last = rng.choice(FIRST), rng.choice(LAST)
    timezone = spec.timezones[index % len(spec.timezones)]
    template = tuple(TEMPLATE_DEVICES)[index % len(TEMPLATE_DEVICES)]
    mrn = f"{spec.slug[:3].upper()}{100000 + index}"
    born = date(1938, 1, 1) + timedelta(days=rng.randrange(0, 365 * 45))
    user_id = upsert_user(conn, org_id, f"patient.{mrn.lower()}@{spec.domain}", "patient", first, last)
    conn.execute(
        "INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, sex, timezone, emergency_contact_name,"
        " emergency_contact_phone, emergency_contact_relation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (organization_id, mrn) DO NOTHING",
        (
            org_id,
            user_id,
            mrn,
            born,
            rng.choice(("female", "male")),
            timezone,
            f"{rng.choice(FIRST)} {last}",
            f"+1-555-{rng.randrange(1000, 9999)}",
            rng.choice(("spouse", "daughter", "son", "sibling")),
        ),
    )
    patient_id = _id(conn, "SELECT id FROM patients WHERE organization_id = %s AND mrn = %s", (org_id, mrn))

    plan_row = conn.execute(
        "SELECT id FROM care_plans WHERE patient_id = %s AND template_id = %s AND status = 'active'",
        (patient_id, templates[template]),
    ).fetchone()
    if plan_row is None:
        tpl = conn.execute(
            "SELECT name, icd10_codes FROM care_plan_templates WHERE id = %s", (templates[template],)
        ).fetchone()
        assert tpl is not None
        plan_id = _id(
            conn,
            "INSERT INTO care_plans (organization_id, patient_id, template_id, status, title, start_date, icd10_codes,"
            " details) VALUES (%s, %s, %s, 'active', %s, %s, %s, %s) RETURNING id",
            (
                org_id,
                patient_id,
                templates[template],
                tpl[0],
                date.today() - timedelta(days=90),
                tpl[1],
                Jsonb({"goals": ["keep vitals in range", "daily measurements"], "seeded": True}),
            ),
        )
    else:
        plan_id = UUID(str(plan_row[0]))

    defaults = conn.execute(
        "SELECT default_requirements FROM care_plan_templates WHERE id = %s", (templates[template],)
    ).fetchone()
    assert defaults is not None
    for req in defaults[0]:
        exists = conn.execute(
            "SELECT 1 FROM vital_requirements r JOIN vital_types t ON t.id = r.vital_type_id"
            " WHERE r.patient_id = %s AND t.code = %s AND r.effective_to IS NULL",
            (patient_id, req["vital_type"]),
        ).fetchone()
        if exists:
            continue
        fields = {k: req[k] for k in REQUIREMENT_FIELDS if k in req}
        columns = ", ".join(fields)
        placeholders = ", ".join(["%s"] * len(fields))
        conn.execute(
            f"INSERT INTO vital_requirements (organization_id, patient_id, vital_type_id, care_plan_id, version,"
            f" effective_from, change_reason, {columns})"
            f" SELECT %s, %s, id, %s, 1, now() - interval '90 days', 'seeded from template', {placeholders}"
            f" FROM vital_types WHERE code = %s",
            (org_id, patient_id, plan_id, *fields.values(), req["vital_type"]),
        )

    # Care team: a primary physician, a nurse, and for every third patient the care manager.
    staff: list[tuple[UUID, str]] = org["staff"]
    physicians = [s for s in staff if s[1] == "primary_physician"]
    nurses = [s for s in staff if s[1] == "nurse"]
    team = [(physicians[index % len(physicians)], True), (nurses[index % len(nurses)], False)]
    if index % 3 == 0:
        team.append(((next(s for s in staff if s[1] == "care_manager")), False))
    for (provider_id, role), primary in team:
        conn.execute(
            "INSERT INTO patient_provider_assignments (organization_id, patient_id, provider_id, role, is_primary,"
            " started_at) SELECT %s, %s, %s, %s, %s, now() - interval '90 days'"
            " WHERE NOT EXISTS (SELECT 1 FROM patient_provider_assignments"
            "                    WHERE patient_id = %s AND provider_id = %s AND ended_at IS NULL)",
            (org_id, patient_id, provider_id, role, primary, patient_id, provider_id),
        )

    devices = []
    for kind in TEMPLATE_DEVICES[template]:
        serial = f"{SERIAL_PREFIX[kind]}-{mrn}"
        manufacturer, model = DEVICE_MODELS[kind]
        if conn.execute("SELECT 1 FROM devices WHERE serial = %s", (serial,)).fetchone() is None:
            provisioning.add_device(
                conn,
                organization_id=org_id,
                serial=serial,
                kind=kind,
                model=model,
                manufacturer=manufacturer,
                firmware_version="2.4.1",
            )
        assigned = conn.execute(
            "SELECT 1 FROM device_assignments a JOIN devices d ON d.id = a.device_id"
            " WHERE d.serial = %s AND a.patient_id = %s AND a.assigned_to IS NULL",
            (serial, patient_id),
        ).fetchone()
        if assigned is None:
            provisioning.assign_device(
                conn, serial=serial, patient_id=patient_id, since=datetime.now(UTC) - timedelta(days=45)
            )
        devices.append((serial, kind, patient_id))
    return devices


def refresh_credentials(conn: Conn, devices: list[tuple[str, str, UUID, UUID, str]]) -> list[dict[str, str]]:
    """Keeps each device's known password if it still matches the registry; rotates the others."""
    known: dict[str, str] = {}
    if CREDENTIALS.exists():
        known = {d["serial"]: d["password"] for d in json.loads(CREDENTIALS.read_text())["devices"]}
    out = []
    for serial, kind, patient_id, org_id, timezone in devices:
        row = conn.execute("SELECT credential_hash FROM devices WHERE serial = %s", (serial,)).fetchone()
        password = known.get(serial)
        if password is None or row is None or row[0] is None or not verify_password(password, row[0]):
            password = provisioning.rotate_credentials(conn, serial=serial)
        out.append(
            {
                "serial": serial,
                "password": password,
                "kind": kind,
                "patient_id": str(patient_id),
                "organization_id": str(org_id),
                "timezone": timezone,
            }
        )
    return out


def seed(conn: Conn, settings: IngestSettings) -> dict[str, int]:
    rng = random.Random(20261125)
    templates = {
        str(code): UUID(str(i))
        for i, code in conn.execute("SELECT id, code FROM care_plan_templates WHERE organization_id IS NULL").fetchall()
    }
    fleet: list[tuple[str, str, UUID, UUID, str]] = []
    for spec in ORGS:
        org = seed_org(conn, spec)
        for index in range(PATIENTS_PER_ORG):
            for serial, kind, patient_id in seed_patient(conn, spec, org, index, rng, templates):
                fleet.append((serial, kind, patient_id, org["id"], spec.timezones[index % len(spec.timezones)]))
    devices = refresh_credentials(conn, fleet)
    tmp = CREDENTIALS.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(
        json.dumps({"broker": {"host": settings.mqtt_host, "port": settings.mqtt_port}, "devices": devices}, indent=1)
    )
    tmp.replace(CREDENTIALS)
    sync_broker(settings)
    seed_platform.seed_platform(conn, [spec.slug for spec in ORGS])
    return counts(conn)


def counts(conn: Conn) -> dict[str, int]:
    seeded_orgs = [spec.slug for spec in ORGS]
    result = {}
    for table, where in (
        ("organizations", "slug = ANY(%s)"),
        ("patients", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("healthcare_providers", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("care_plans", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("vital_requirements", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("patient_provider_assignments", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("devices", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
        ("device_assignments", "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"),
    ):
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", (seeded_orgs,)).fetchone()
        assert row is not None
        result[table] = int(row[0])
    result.update(seed_platform.counts(conn, seeded_orgs))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed")
    parser.add_argument("--check", action="store_true", help="only report what is seeded; change nothing")
    args = parser.parse_args(argv)
    settings = IngestSettings()
    with psycopg.connect(MigrationSettings().admin_dsn(), autocommit=True) as conn:
        result = counts(conn) if args.check else seed(conn, settings)
    for table, n in result.items():
        print(f"  {table:<30} {n:>5}")
    if not args.check:
        print(f"seeded; device credentials for the simulators in {CREDENTIALS} (mode 600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
