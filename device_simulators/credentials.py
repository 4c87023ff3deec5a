"""The device credentials file that `make seed` writes (git-ignored, mode 600), read at the boundary."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from device_simulators.device import DeviceKind
from device_simulators.publisher import Broker


class CredentialsFileError(Exception):
    retriable = False


class _Device(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    serial: str = Field(pattern=r"^[A-Za-z0-9._-]{3,64}$")
    password: SecretStr
    kind: DeviceKind
    patient_id: UUID | None = None
    organization_id: UUID | None = None
    timezone: str = "UTC"


class _Broker(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    port: int = Field(gt=0, lt=65536)


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    broker: _Broker
    devices: list[_Device]


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    serial: str
    password: str
    kind: DeviceKind
    patient_id: UUID | None = None
    organization_id: UUID | None = None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Fleet:
    broker: Broker
    devices: tuple[DeviceCredential, ...]


def load_fleet(path: Path) -> Fleet:
    """Reads and checks the credentials file; refuses one that other users could read."""
    try:
        mode = path.stat().st_mode
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CredentialsFileError(f"{path} not found: run `make seed` first") from exc
    except (OSError, ValueError) as exc:
        raise CredentialsFileError(f"{path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsFileError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    parsed = _File.model_validate(raw)
    return Fleet(
        broker=Broker(parsed.broker.host, parsed.broker.port),
        devices=tuple(
            DeviceCredential(
                serial=d.serial,
                password=d.password.get_secret_value(),
                kind=d.kind,
                patient_id=d.patient_id,
                organization_id=d.organization_id,
                timezone=d.timezone,
            )
            for d in parsed.devices
        ),
    )


def dump_fleet(fleet: Fleet, path: Path) -> None:
    """Writes a credentials file in the same shape (mode 600), e.g. for a provisioned load-test fleet."""
    body = {
        "broker": {"host": fleet.broker.host, "port": fleet.broker.port},
        "devices": [
            {
                "serial": d.serial,
                "password": d.password,
                "kind": d.kind.value,
                "patient_id": None if d.patient_id is None else str(d.patient_id),
                "organization_id": None if d.organization_id is None else str(d.organization_id),
                "timezone": d.timezone,
            }
            for d in fleet.devices
        ],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(path)
