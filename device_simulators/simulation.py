"""A patient's devices over a period: scheduled and extra measurements turned into wire messages (pure)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from device_simulators.device import DeviceKind, DeviceModel, take_measurement
from device_simulators.message import Envelope, Message, envelope
from device_simulators.physiology import Effect, Patient
from device_simulators.schedule import measurement_times, schedule_for


@dataclass(frozen=True, slots=True)
class Silence:
    """A device that sends nothing (switched off, flat battery) in [start, end): those measurements never exist."""

    kind: DeviceKind
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Subject:
    """A simulated patient and the devices assigned to them."""

    patient: Patient
    devices: tuple[DeviceModel, ...]


@dataclass(frozen=True, slots=True)
class Script:
    """What happens to a subject on top of the routine: effects, extra measurements, silences."""

    effects: tuple[Effect, ...] = ()
    extra: Mapping[DeviceKind, tuple[datetime, ...]] = field(default_factory=dict)
    silences: tuple[Silence, ...] = ()
    skip_probability: float = 0.04


def simulate(
    subject: Subject, start: datetime, end: datetime, *, seed: int = 0, script: Script = Script()
) -> list[Envelope]:
    """Every message the subject's devices send in [start, end), ordered by send time.

    Each device numbers its messages (`meta.seq` from 1) and uploads a few seconds after measuring. A measurement
    draws its noise and upload delay from the seed, the serial and its instant alone, so runs over overlapping
    windows send identical readings for the overlap (a re-run is stored as duplicates, never as conflicting ones).
    """
    out: list[Envelope] = []
    for device in subject.devices:
        key = f"sim:{seed}:{device.serial}"
        schedule = schedule_for(device.kind, subject.patient.condition, skip_probability=script.skip_probability)
        times = set(measurement_times(schedule, subject.patient.timezone, start, end, key))
        times.update(t for t in script.extra.get(device.kind, ()) if start <= t < end)
        silent = [s for s in script.silences if s.kind is device.kind]
        battery = 1.0
        seq = 0
        for at in sorted(times):
            if any(s.start <= at < s.end for s in silent):
                continue
            rng = random.Random(f"{key}:{at.isoformat()}")
            readings = take_measurement(device, subject.patient, at, rng, script.effects)
            seq += 1
            battery = max(0.05, battery - 0.002)
            sent_at = at + timedelta(seconds=rng.uniform(2, 20), microseconds=rng.randrange(1000) * 1000)
            if out and out[-1].serial == device.serial and sent_at <= out[-1].send_at:
                sent_at = out[-1].send_at + timedelta(milliseconds=1)  # one upload queue: in measurement order
            message = Message(
                message_id=f"{device.serial}:{seq}",
                readings=readings,
                sent_at=sent_at,
                meta={"seq": seq, "firmware": device.firmware, "battery": round(battery, 3)},
            )
            out.append(envelope(device.serial, seq, message, sent_at))
    out.sort(key=lambda e: (e.send_at, e.serial))
    return out
