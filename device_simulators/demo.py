"""The seeded fleet as patients: who has which devices, what condition that suggests, and a routine period of
their measurements with a sprinkling of faults (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from device_simulators.credentials import DeviceCredential
from device_simulators.device import DeviceKind, make_device
from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.message import Envelope
from device_simulators.physiology import Condition, make_patient
from device_simulators.scenario import Scenario
from device_simulators.simulation import Subject, simulate


@dataclass(frozen=True, slots=True)
class Household:
    """One patient's devices from the credentials file."""

    key: str
    timezone: str
    devices: tuple[DeviceCredential, ...]

    @property
    def kinds(self) -> set[DeviceKind]:
        return {d.kind for d in self.devices}

    @property
    def condition(self) -> Condition:
        """The care plan the seed gives a patient with these devices (migrations/0070, scripts/seed.py)."""
        kinds = self.kinds
        if DeviceKind.GLUCOMETER in kinds:
            return Condition.DIABETES
        if DeviceKind.RESPIRATORY_MONITOR in kinds or DeviceKind.THERMOMETER in kinds:
            return Condition.COPD
        if DeviceKind.SCALE in kinds:
            return Condition.HEART_FAILURE
        return Condition.HYPERTENSION


def households(devices: Sequence[DeviceCredential]) -> list[Household]:
    groups: dict[str, list[DeviceCredential]] = {}
    for d in devices:
        groups.setdefault(str(d.patient_id or d.serial), []).append(d)
    return [Household(key, ds[0].timezone, tuple(ds)) for key, ds in sorted(groups.items())]


def household_for(scenario: Scenario, homes: Sequence[Household], *, index: int = 0) -> Household | None:
    """The `index`-th patient whose devices cover the scenario's device kinds, patients on the scenario's care plan
    first (their requirements are the ones the scenario's expected episodes follow)."""
    fitting = [h for h in homes if set(scenario.kinds) <= h.kinds]
    fitting.sort(key=lambda h: h.condition is not scenario.condition)
    return fitting[index] if 0 <= index < len(fitting) else None


def routine(
    homes: Sequence[Household], start: datetime, end: datetime, *, seed: int = 0, fault_rate: float = 0.0
) -> tuple[list[Envelope], Counter[FaultKind]]:
    """Every household's measurements in [start, end), faults injected per device, ordered by send time."""
    serials = [d.serial for h in homes for d in h.devices]
    out: list[Envelope] = []
    counts: Counter[FaultKind] = Counter()
    plan = FaultPlan.every(fault_rate) if fault_rate > 0 else FaultPlan()
    for home in homes:
        patient = make_patient(home.key, home.condition, home.timezone, seed=seed)
        models = tuple(make_device(d.serial, d.kind, seed=seed) for d in home.devices)
        stream = simulate(Subject(patient, models), start, end, seed=seed)
        for device in home.devices:
            own = [e for e in stream if e.serial == device.serial]
            if not own:
                continue
            other = serials[(serials.index(device.serial) + 1) % len(serials)]
            result = inject(own, plan, seed=seed, foreign_serial=other if other != device.serial else None)
            counts.update(result.counts)
            out.extend(result.envelopes)
    out.sort(key=lambda e: e.send_at)
    return out, counts
