"""Migration 0200: seeded symptom rules, the one-open-episode rule, and what each role may do with episodes."""

from __future__ import annotations

from typing import Any

import asyncpg
import psycopg
import pytest

from processors.contexts import load_symptom_rules
from processors.events import CommittedReading
from processors.inline import InlineProcessor
from tests.processors.scenario import DIRECTORY, SEEDED_SYMPTOM_RULES, World, load
from tests.processors.scenario_db import create_world, insert_reading
from tests.roles import RoleSettings


async def test_the_seeded_symptom_rules_are_the_ones_the_pure_scenarios_use(processor_pool: asyncpg.Pool) -> None:
    async with processor_pool.acquire() as conn:
        assert set(await load_symptom_rules(conn)) == set(SEEDED_SYMPTOM_RULES)


async def open_alert(db: psycopg.Connection[Any], pool: asyncpg.Pool) -> tuple[World, Any]:
    """A patient with an open critical episode (the crisis scenario's first high reading)."""
    spec = load(DIRECTORY / "hypertensive_crisis.yaml")
    world = create_world(db, spec)
    step, reading = next((s, r) for s, r in world.events() if isinstance(r, CommittedReading) and r.value == 186)
    insert_reading(db, world, step)
    await InlineProcessor(pool, spec.config.engine()).deliver([reading])
    row = db.execute(
        "SELECT id FROM vital_alerts WHERE patient_id = %s AND status = 'open'", (world.patient_id,)
    ).fetchone()
    assert row is not None
    return world, row[0]


async def test_the_app_acknowledges_an_episode_of_its_tenant_but_cannot_rewrite_what_the_engine_found(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool, roles: RoleSettings
) -> None:
    world, alert_id = await open_alert(db, processor_pool)
    nurse = world.users["nurse"]
    with psycopg.connect(roles.dsn("app")) as app:
        app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(world.organization_id),))
        updated = app.execute(
            "UPDATE vital_alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s"
            " WHERE id = %s",
            (nurse, alert_id),
        )
        assert updated.rowcount == 1
        app.commit()
        app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(world.organization_id),))
        with pytest.raises(psycopg.errors.CheckViolation):
            app.execute("UPDATE vital_alerts SET status = 'resolved' WHERE id = %s", (alert_id,))
        app.rollback()
        app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(world.organization_id),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("UPDATE vital_alerts SET severity = 'warning', revision = 99 WHERE id = %s", (alert_id,))
        app.rollback()
        # Another tenant sees nothing.
        app.execute("SELECT set_config('rpm.organization_id', gen_random_uuid()::text, true)")
        assert app.execute("SELECT count(*) FROM vital_alerts WHERE id = %s", (alert_id,)).fetchone() == (0,)


async def test_the_processor_never_deletes_an_episode_and_one_is_open_per_direction(
    db: psycopg.Connection[Any], processor_pool: asyncpg.Pool, roles: RoleSettings
) -> None:
    world, alert_id = await open_alert(db, processor_pool)
    with psycopg.connect(roles.dsn("processor")) as processor:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            processor.execute("DELETE FROM vital_alerts WHERE id = %s", (alert_id,))
        processor.rollback()
        with pytest.raises(psycopg.errors.UniqueViolation):
            processor.execute(
                "INSERT INTO vital_alerts (id, organization_id, patient_id, vital_type_id, direction, severity,"
                " status, rule, requirement_id, requirement_version, opened_at, updated_at, last_change,"
                " trigger_reading_ids, value, revision)"
                " SELECT gen_random_uuid(), organization_id, patient_id, vital_type_id, direction, severity, status,"
                " rule, requirement_id, requirement_version, opened_at, updated_at, last_change, trigger_reading_ids,"
                " value, 1 FROM vital_alerts WHERE id = %s",
                (alert_id,),
            )
        processor.rollback()
        assert processor.execute("SELECT count(*) FROM processor_states WHERE patient_id = %s",
                                 (world.patient_id,)).fetchone() == (1,)  # fmt: skip
    with psycopg.connect(roles.dsn("app")) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("SELECT * FROM processor_states LIMIT 1")
