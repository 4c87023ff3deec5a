"""Mosquitto authentication files generated from the device registry.

The broker's password file and ACL are derived data: service users come from the environment, devices from the
`devices` table (active ones only). Device credentials are stored in the registry already in Mosquitto's own
PBKDF2-SHA512 format, so the password file is a projection of the registry and a plaintext secret never needs to
be kept anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Device secrets are 192-bit random strings, so the work factor guards nothing a brute force could reach; a
# modest count keeps a reconnect storm of thousands of devices cheap for the broker.
HASH_ITERATIONS = 1000
_SALT_BYTES = 12
_SERIAL = re.compile(r"^[A-Za-z0-9._-]{3,64}$")


class CredentialError(ValueError):
    """A credential or serial that the broker could not use safely."""


# What every user may publish, with %u standing for its username (a device's serial). One pattern instead of a
# `user` block per device: Mosquitto 2.0 re-reads the ACL on every reload (each broker-sync) in time quadratic in
# its user blocks, stalling the whole broker (2.1-2.5 s per reload at 11,500 devices, 5-19 ms with the pattern;
# docs/benchmarks.md, "Broker reload"). Service users get the same grant on topics no device can own: their names
# are not devices' serials (broker_sync skips a device that would collide).
DEVICE_PATTERNS = ("devices/%u/readings", "devices/%u/status")


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """One line of the password file plus the topics the user may use."""

    username: str
    password_hash: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def new_secret() -> str:
    """A fresh device or service password (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """Hashes a password in Mosquitto 2's `$7$` format (PBKDF2-HMAC-SHA512)."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, password_hash: str) -> bool:
    """Checks a password against a `$7$` hash in constant time."""
    try:
        _, kind, iterations, salt, digest = password_hash.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, actual)


def check_serial(serial: str) -> str:
    """Returns the serial if it is safe as a username and a topic level, else raises CredentialError."""
    if not _SERIAL.fullmatch(serial):
        raise CredentialError(f"serial {serial!r} must be 3-64 characters of [A-Za-z0-9._-]")
    return serial


def device_user(serial: str, password_hash: str) -> BrokerUser:
    """A device may publish only under its own `devices/<serial>/` topics: the ACL's DEVICE_PATTERNS grant that
    to every user whose name is its serial, so a device needs no ACL block of its own."""
    return BrokerUser(username=check_serial(serial), password_hash=password_hash)


def ingest_user(username: str, password_hash: str) -> BrokerUser:
    """The ingest service subscribes to every device's readings and status, shared or not."""
    return BrokerUser(
        username=username,
        password_hash=password_hash,
        read=(
            "devices/+/readings",
            "devices/+/status",
            "$share/ingest/devices/+/readings",
            "$share/ingest/devices/+/status",
            "$SYS/#",
        ),
    )


def service_user(username: str, password_hash: str) -> BrokerUser:
    """Other services only watch the broker's own status topics."""
    return BrokerUser(username=username, password_hash=password_hash, read=("$SYS/#",))


def render_password_file(users: Iterable[BrokerUser]) -> str:
    return "".join(f"{u.username}:{u.password_hash}\n" for u in users)


def acl_block(user: BrokerUser) -> list[str]:
    """The user's own ACL lines; none for a user (a device) whose only grant is DEVICE_PATTERNS."""
    if not user.read and not user.write:
        return []
    return [
        f"\nuser {user.username}",
        *(f"topic read {t}" for t in user.read),
        *(f"topic write {t}" for t in user.write),
    ]


def render_acl(users: Iterable[BrokerUser], revoked: Iterable[str] = ()) -> str:
    """The ACL: the device pattern, each service user's block, and a deny block per revoked serial. A user's
    deny outranks the pattern, which matters for a device still connected over mutual TLS when it is revoked:
    Mosquitto refuses its certificate at the next handshake but keeps the open connection, so only the ACL stops
    it publishing (a password client is disconnected by the reload itself)."""
    lines = [
        "# Generated by `python -m ingest broker-sync` from .env and the device registry. Do not edit.",
        "# Every user (each device: its username is its serial) may publish under devices/<own username>/.",
        *(f"pattern write {t}" for t in DEVICE_PATTERNS),
    ]
    for user in users:
        lines.extend(acl_block(user))
    for serial in revoked:
        lines.extend((f"\nuser {check_serial(serial)}", f"topic deny devices/{serial}/#"))
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replaces a file in one rename, so the broker never reads a half-written one on SIGHUP."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.chmod(mode)
        stat = path.stat() if path.exists() else None
        if stat is not None:
            os.chown(tmp, stat.st_uid, stat.st_gid)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
