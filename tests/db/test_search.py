"""Full-text and trigram search on symptoms and patient names, served by their indexes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.db.conftest import RoleConnect
from tests.factories import Organization, Patient

Conn = psycopg.Connection[Any]
ROWS = 5000
GIN_INDEXES = ("users_name_search_idx", "users_full_name_trgm_idx", "symptoms_search_idx", "symptoms_name_trgm_idx")


@pytest.fixture
def crowd(db: Conn, org: Organization) -> Iterator[Conn]:
    """A transaction holding ROWS patients and ROWS symptoms with random names and fresh planner statistics;
    rolled back afterwards, so the shared database keeps neither rows nor statistics."""
    with psycopg.connect(db.info.dsn + f" password={db.info.password}") as conn:
        # Deterministic made-up words (md5 hex mapped to letters), so the statistics and plans are repeatable.
        conn.execute(
            "CREATE FUNCTION pg_temp.letters(seed text, n int) RETURNS text LANGUAGE sql IMMUTABLE AS"
            " $$ SELECT translate(substr(md5(seed), 1, n), '0123456789', 'ghijklmnop') $$"
        )
        conn.execute(
            "WITH u AS (INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " SELECT %(org)s, 'crowd' || i || '-' || %(slug)s || '@example.test', 'x', 'patient',"
            " initcap(pg_temp.letters('f' || i, 8)), initcap(pg_temp.letters('l' || i, 10))"
            " FROM generate_series(1, %(n)s) AS i RETURNING id)"
            " INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
            " SELECT %(org)s, id, 'crowd-' || row_number() OVER (), '1950-01-01', 'UTC' FROM u",
            {"org": org.id, "slug": org.slug, "n": ROWS},
        )
        conn.execute(
            "INSERT INTO symptoms (organization_id, patient_id, code, name, severity, source, onset_at, notes)"
            " SELECT %(org)s, p.id, 'crowd', initcap(pg_temp.letters('s' || p.mrn, 12)), 'mild', 'patient', now(),"
            " 'felt ' || pg_temp.letters('n' || p.mrn, 9)"
            " FROM patients p WHERE p.organization_id = %(org)s",
            {"org": org.id},
        )
        # Vacuum would merge the new entries from each GIN index's pending list into the index; until then the
        # planner (rightly) costs reading that list, which after a bulk load makes any index look expensive.
        for index in GIN_INDEXES:
            conn.execute("SELECT gin_clean_pending_list(%s::regclass)", (index,))
        conn.execute("ANALYZE users, patients, symptoms")
        yield conn
        conn.rollback()


def plan(conn: Conn, query: str, params: tuple[Any, ...]) -> str:
    rows = conn.execute("EXPLAIN " + query, params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def named(db: Conn, org: Organization, first: str, last: str) -> Patient:
    patient = factories.create_patient(db, org.id)
    db.execute("UPDATE users SET first_name = %s, last_name = %s WHERE id = %s", (first, last, patient.user_id))
    return patient


def test_patient_search_finds_prefixes_in_any_order_and_typos(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    wilhelmina = named(db, org, "Wilhelmina", "Zbyszewski")
    named(db, org, "William", "Smith")
    named(db, factories.create_organization(db), "Wilhelmina", "Zbyszewski")  # another tenant
    with connect_as("app", org.id) as conn:
        by_prefix = conn.execute(
            "SELECT patient_id, first_name FROM search_patients(%s, 'zbysz wil')", (org.id,)
        ).fetchall()
        by_typo = conn.execute(
            "SELECT patient_id FROM search_patients(%s, 'wilhelmina zbyshewski')", (org.id,)
        ).fetchall()
        williams = conn.execute("SELECT last_name FROM search_patients(%s, 'wil')", (org.id,)).fetchall()
    assert by_prefix == [(wilhelmina.id, "Wilhelmina")]
    assert by_typo == [(wilhelmina.id,)]
    assert sorted(williams) == [("Smith",), ("Zbyszewski",)]


def test_the_planner_uses_the_name_indexes(crowd: Conn, org: Organization) -> None:
    full_text = plan(crowd, "SELECT id FROM users WHERE name_search @@ name_tsquery(%s)", ("zbysz",))
    trigram = plan(crowd, "SELECT id FROM users WHERE full_name(first_name, last_name) %% lower(%s)", ("zbyszewsky",))
    assert "users_name_search_idx" in full_text
    assert "users_full_name_trgm_idx" in trigram
    # search_patients() runs with the owner's rights since 0420 (its plan is not visible from here); that the app
    # reaches its GIN indexes is checked in tests/security/test_patient_search.py.


def test_the_planner_uses_the_symptom_indexes(crowd: Conn) -> None:
    words = plan(
        crowd, "SELECT id FROM symptoms WHERE search @@ websearch_to_tsquery('english', %s)", ("dizzy fainting",)
    )
    fuzzy = plan(crowd, "SELECT id FROM symptoms WHERE name ILIKE %s", ("%dizzin%",))
    assert "symptoms_search_idx" in words
    assert "symptoms_name_trgm_idx" in fuzzy


def test_symptom_search_ranks_names_above_notes(db: Conn, org: Organization, patient: Patient) -> None:
    for name, notes in [("Shortness of breath", "at night"), ("Ankle swelling", "breath short when climbing")]:
        db.execute(
            "INSERT INTO symptoms (organization_id, patient_id, code, name, severity, source, onset_at, notes)"
            " VALUES (%s, %s, 'reported', %s, 'moderate', 'patient', now(), %s)",
            (org.id, patient.id, name, notes),
        )
    rows = db.execute(
        "SELECT name FROM symptoms WHERE patient_id = %s AND search @@ websearch_to_tsquery('english', 'breath')"
        " ORDER BY ts_rank(search, websearch_to_tsquery('english', 'breath')) DESC",
        (patient.id,),
    ).fetchall()
    assert rows == [("Shortness of breath",), ("Ankle swelling",)]
