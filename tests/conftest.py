"""Fixtures shared by the whole suite. The suite runs against the real services that `make services` starts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import settings

from ingest.broker_sync import sync_broker
from ingest.settings import IngestSettings
from migrations.settings import MigrationSettings
from tests import factories, mqtt_probe

# Property tests: `make test` runs the same examples every time (derandomize: a red CI names a defect a re-run
# reproduces, not a lucky draw) with no wall-clock deadline (speed is measured by benchmarks, and a shared 2-core
# box stalls now and then); `make fuzz` (HYPOTHESIS_PROFILE=fuzz) draws fresh examples on every run.
settings.register_profile("test", deadline=None, derandomize=True)
settings.register_profile("fuzz", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "test"))


@pytest.fixture(scope="session")
def migration_settings() -> MigrationSettings:
    return MigrationSettings()


@pytest.fixture(scope="session")
def ingest_settings() -> IngestSettings:
    return IngestSettings()


@pytest.fixture
def db(migration_settings: MigrationSettings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the project database as the schema owner."""
    with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def org(db: psycopg.Connection[Any]) -> factories.Organization:
    return factories.create_organization(db)


@pytest.fixture
def patient(db: psycopg.Connection[Any], org: factories.Organization) -> factories.Patient:
    """A patient with an active care plan and a care team (primary physician + nurse)."""
    p = factories.create_patient(db, org.id)
    factories.create_care_plan(db, p)
    physician = factories.create_provider(db, org.id, provider_type="physician")
    nurse = factories.create_provider(db, org.id, provider_type="nurse")
    factories.add_to_care_team(db, p, physician, role="primary_physician", is_primary=True)
    factories.add_to_care_team(db, p, nurse, role="nurse")
    return p


MqttDeviceFactory = Callable[..., factories.Device]


@pytest.fixture
def mqtt_device(
    db: psycopg.Connection[Any], org: factories.Organization, ingest_settings: IngestSettings
) -> MqttDeviceFactory:
    """Creates a device (kwargs as factories.create_device) whose credentials the broker already accepts."""

    def make(**kwargs: Any) -> factories.Device:
        kwargs.setdefault("organization_id", org.id)
        device = factories.create_device(db, kwargs.pop("organization_id"), **kwargs)
        sync_broker(ingest_settings)
        mqtt_probe.wait_until(
            ingest_settings.mqtt_host, ingest_settings.mqtt_port, device.serial, device.password, accepted=True
        )
        return device

    return make
