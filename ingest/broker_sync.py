"""Writes the broker's password file and ACL from the registry and tells Mosquitto to reload them."""

from __future__ import annotations

import logging
import os
import signal

import psycopg

from ingest.broker_auth import (
    BrokerUser,
    device_user,
    hash_password,
    ingest_user,
    render_acl,
    render_password_file,
    service_user,
    write_atomically,
)
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

_SYNC_LOCK = 0x52504D42  # "RPMB"


def _has_registry(conn: psycopg.Connection[tuple[str, str]]) -> bool:
    """False before the device registry's migration has run."""
    exists = conn.execute("SELECT to_regclass('public.devices') IS NOT NULL").fetchone()
    return bool(exists and exists[0])


def active_devices(conn: psycopg.Connection[tuple[str, str]]) -> list[tuple[str, str]]:
    """(serial, credential hash) of every active device; none before the registry's migration has run."""
    if not _has_registry(conn):
        return []
    rows = conn.execute(
        "SELECT serial, credential_hash FROM devices"
        " WHERE status = 'active' AND credential_hash IS NOT NULL ORDER BY serial"
    ).fetchall()
    return [(str(serial), str(h)) for serial, h in rows]


def revoked_serials(conn: psycopg.Connection[tuple[str, str]]) -> list[str]:
    """Serials of revoked devices (denied outright in the ACL); none before the registry's migration has run."""
    if not _has_registry(conn):
        return []
    rows = conn.execute("SELECT serial FROM devices WHERE status = 'revoked' ORDER BY serial").fetchall()
    return [str(r[0]) for r in rows]


def broker_users(settings: IngestSettings, devices: list[tuple[str, str]]) -> list[BrokerUser]:
    """The service users, then every device whose serial is not a service user's name (such a device would
    share the service's login and its grants, so it is left out of the broker and logged)."""
    users = [
        ingest_user(settings.mqtt_ingest_user, hash_password(settings.mqtt_ingest_password.get_secret_value())),
        service_user(settings.mqtt_processor_user, hash_password(settings.mqtt_processor_password.get_secret_value())),
    ]
    reserved = {u.username for u in users}
    for serial, h in devices:
        if serial in reserved:
            logger.error("device %s not allowed on the broker: its serial is a service user's name", serial)
            continue
        users.append(device_user(serial, h))
    return users


def reload_broker(settings: IngestSettings) -> bool:
    """Sends SIGHUP to the project's broker; False when it is not running."""
    pidfile = settings.broker_dir / "mosquitto.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def sync_broker(settings: IngestSettings, *, reload: bool = True) -> int:
    """Regenerates passwd and acl; returns the number of devices allowed to connect."""
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as conn:
        # Serialises concurrent syncs, so a slower one can never overwrite a newer snapshot of the registry.
        conn.execute("SELECT pg_advisory_lock(%s)", (_SYNC_LOCK,))
        try:
            devices = active_devices(conn)
            users = broker_users(settings, devices)
            settings.broker_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(settings.broker_dir / "passwd", render_password_file(users))
            write_atomically(settings.broker_dir / "acl", render_acl(users, revoked_serials(conn)))
            if reload and not reload_broker(settings):
                logger.warning("broker not running; files written to %s", settings.broker_dir)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SYNC_LOCK,))
    return len(devices)
