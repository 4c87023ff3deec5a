"""Scenario files (tests/scenarios/*.yaml) and what any runner must make of them.

A scenario is data: a patient (zone, care team, devices), requirement versions, a timeline of readings, ticks and
requirement changes, and the exact episodes, notifications, symptoms and vital checks expected at the end. The
same file runs through the pure engine, the inline runner (real PostgreSQL) and the Faust runner (real Kafka);
each mode turns what it produced into an `Outcome` and the test compares it with the file's expectation.

Names in the file (care-team members, devices, readings, alerts) are resolved to fresh ids on every run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4, uuid5

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from processors.adherence import AdherenceChange, CheckStatus
from processors.alerts import AlertChange, AlertStatus
from processors.context import AssignedDevice, CareTeamMember, EngineConfig, PatientContext
from processors.engine import Output
from processors.events import CommittedReading, Event, Tick
from processors.notifications import Notification
from processors.requirements import Requirement
from processors.symptoms import Comparison, SymptomFlag, SymptomRule, SymptomRuleKind, SymptomSeverity

DIRECTORY = Path(__file__).parents[1] / "scenarios"

# vital_types as migration 0030 seeds them: code -> (id, canonical unit).
VITAL_TYPES: dict[str, tuple[int, str]] = {
    "heart_rate": (1, "/min"),
    "systolic_bp": (2, "mm[Hg]"),
    "diastolic_bp": (3, "mm[Hg]"),
    "spo2": (4, "%"),
    "respiratory_rate": (5, "/min"),
    "body_temperature": (6, "Cel"),
    "body_weight": (7, "kg"),
    "blood_glucose": (8, "mg/dL"),
}
# symptom_rules as migration 0200 seeds them (a database test checks the two agree).
SEEDED_SYMPTOM_RULES: tuple[SymptomRule, ...] = tuple(
    SymptomRule(code, name, type_id, SymptomRuleKind(kind), Comparison(cmp), threshold, minimum, SymptomSeverity(sev))
    for code, name, type_id, kind, cmp, threshold, minimum, sev in [
        ("hypoxemia", "Hypoxemia", 4, "threshold", "lt", 90.0, 1, "severe"),
        ("fever", "Fever", 6, "threshold", "ge", 38.0, 1, "moderate"),
        ("tachycardia", "Sustained tachycardia", 1, "threshold", "gt", 100.0, 3, "moderate"),
        ("bradycardia", "Sustained bradycardia", 1, "threshold", "lt", 50.0, 3, "moderate"),
        ("hypertensive_crisis", "Hypertensive crisis", 2, "threshold", "ge", 180.0, 1, "critical"),
        ("hypertensive_crisis", "Hypertensive crisis", 3, "threshold", "ge", 120.0, 1, "critical"),
        ("hypoglycemia", "Hypoglycemia", 8, "threshold", "lt", 70.0, 1, "severe"),
        ("rapid_weight_gain", "Rapid weight gain", 7, "trend", "ge", 0.9, 1, "moderate"),
    ]
)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(value: object) -> object:
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Instant = AwareDatetime


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamMemberSpec(_Model):
    name: str
    role: str = "nurse"
    since: Instant
    until: Instant | None = None


class DeviceSpec(_Model):
    name: str
    kind: str = "multi"
    since: Instant
    until: Instant | None = None


class RuleSpec(_Model):
    """The columns of one vital_requirements version (names as in the table)."""

    warning_low: float | None = None
    warning_high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None
    breach_k: int = 1
    breach_n: int = 1
    sustained_minutes: int | None = None
    hysteresis_margin: float = 0.0
    clear_count: int = 1
    clear_minutes: int | None = None
    cooldown_minutes: int = 60
    trend_window_hours: int | None = None
    trend_delta: float | None = None
    expected_per_day: int | None = None
    expected_times: tuple[str, ...] = ()
    expected_window_minutes: int = 60

    def columns(self) -> dict[str, Any]:
        """Column -> value for an INSERT (times as `time`)."""
        values = self.model_dump(include=set(RuleSpec.model_fields))
        values["expected_times"] = [time.fromisoformat(t) for t in self.expected_times]
        return values


class RequirementSpec(RuleSpec):
    vital: str
    since: Instant


class ConfigSpec(_Model):
    lateness_horizon: Duration = timedelta(minutes=15)
    silent_after: Duration = timedelta(hours=24)
    schedule_ahead: Duration = timedelta(hours=24)
    late_limit: Duration = timedelta(hours=4)

    def engine(self) -> EngineConfig:
        return EngineConfig(
            lateness_horizon=self.lateness_horizon,
            silent_after=self.silent_after,
            schedule_ahead=self.schedule_ahead,
            late_limit=self.late_limit,
        )


class ReadingSpec(_Model):
    name: str
    vital: str
    value: float
    device: str
    # Measurement time; default: the step's `at` minus `age` (itself default 0: received as measured).
    measured: Instant | None = None
    age: Duration = timedelta(0)


class StepSpec(_Model):
    """One moment of the timeline: `at` is the receipt time of a reading, a tick's now, or a change's time."""

    at: Instant
    reading: ReadingSpec | None = None
    tick: bool = False
    requirement: RequirementSpec | None = None


class AlertSpec(_Model):
    ref: str
    vital: str
    direction: Literal["low", "high", "rise", "fall"]
    severity: Literal["warning", "critical"]
    status: Literal["open", "resolved"]
    rule: Literal["threshold", "k_of_n", "sustained", "trend"]
    retrospective: bool = False
    opened_at: Instant
    resolved_at: Instant | None = None
    version: int = 1
    triggers: tuple[str, ...]


class NotificationSpec(_Model):
    type: Literal["vital_alert", "vital_alert_cleared", "missed_measurement", "device_offline"]
    priority: Literal["low", "normal", "high", "critical"]
    to: tuple[str, ...]
    at: Instant
    alert: str | None = None
    change: str | None = None
    # missed_measurement: the check's key suffix '<vital> <local date>T<HH:MM>'; device_offline: the device name.
    subject: str | None = None


class SymptomSpec(_Model):
    code: str
    alert: str
    reading: str
    resolved_at: Instant | None = None


class CheckSpec(_Model):
    vital: str
    local: str
    status: Literal["scheduled", "completed", "late", "partial", "missed", "cancelled"]
    reading: str | None = None
    received: int = 0


class ExpectSpec(_Model):
    alerts: tuple[AlertSpec, ...] = ()
    notifications: tuple[NotificationSpec, ...] = ()
    symptoms: tuple[SymptomSpec, ...] = ()
    checks: tuple[CheckSpec, ...] = ()


class ScenarioSpec(_Model):
    name: str
    description: str
    timezone: str = "America/Chicago"
    monitored: bool = True
    care_team: tuple[TeamMemberSpec, ...]
    devices: tuple[DeviceSpec, ...]
    config: ConfigSpec = Field(default_factory=ConfigSpec)
    requirements: tuple[RequirementSpec, ...]
    timeline: tuple[StepSpec, ...]
    expect: ExpectSpec


def load(path: Path) -> ScenarioSpec:
    return ScenarioSpec.model_validate(yaml.safe_load(path.read_text()))


def all_paths() -> list[Path]:
    return sorted(DIRECTORY.glob("*.yaml"))


# -- outcomes ---------------------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass(frozen=True, order=True, slots=True)
class AlertRow:
    opened_at: str
    vital: str
    direction: str
    severity: str
    status: str
    rule: str
    retrospective: bool
    resolved_at: str | None
    version: int
    triggers: tuple[str, ...]


@dataclass(frozen=True, order=True, slots=True)
class NotificationRow:
    at: str
    type: str
    priority: str
    to: str
    # The alert as "<vital> <direction> <opened_at>", the check key suffix, or the device name.
    subject: str
    change: str | None


@dataclass(frozen=True, order=True, slots=True)
class SymptomRow:
    code: str
    alert: str
    reading: str
    onset_at: str
    resolved_at: str | None


@dataclass(frozen=True, order=True, slots=True)
class CheckRow:
    vital: str
    local: str
    status: str
    reading: str | None
    received: int


@dataclass(frozen=True, slots=True)
class Outcome:
    alerts: list[AlertRow]
    notifications: list[NotificationRow]
    symptoms: list[SymptomRow]
    checks: list[CheckRow]


def alert_subject(vital: str, direction: str, opened_at: datetime | str) -> str:
    at = opened_at if isinstance(opened_at, str) else _utc(opened_at)
    return f"{vital} {direction} {at}"


def expected_outcome(spec: ScenarioSpec) -> Outcome:
    measured = {name: _utc(at) for name, at in reading_times(spec).items()}
    subjects = {a.ref: alert_subject(a.vital, a.direction, a.opened_at) for a in spec.expect.alerts}
    alerts = [
        AlertRow(
            opened_at=str(_utc(a.opened_at)),
            vital=a.vital,
            direction=a.direction,
            severity=a.severity,
            status=a.status,
            rule=a.rule,
            retrospective=a.retrospective,
            resolved_at=_utc(a.resolved_at),
            version=a.version,
            triggers=tuple(sorted(a.triggers)),
        )
        for a in spec.expect.alerts
    ]
    notifications = [
        NotificationRow(
            at=str(_utc(n.at)),
            type=n.type,
            priority=n.priority,
            to=to,
            subject=subjects[n.alert] if n.alert is not None else str(n.subject),
            change=n.change,
        )
        for n in spec.expect.notifications
        for to in n.to
    ]
    symptoms = [
        SymptomRow(
            code=s.code,
            alert=subjects[s.alert],
            reading=s.reading,
            onset_at=str(measured[s.reading]),
            resolved_at=_utc(s.resolved_at),
        )
        for s in spec.expect.symptoms
    ]
    checks = [CheckRow(c.vital, c.local, c.status, c.reading, c.received) for c in spec.expect.checks]
    return Outcome(sorted(alerts), sorted(notifications), sorted(symptoms), sorted(checks))


def reading_times(spec: ScenarioSpec) -> dict[str, datetime]:
    return {
        step.reading.name: step.reading.measured or step.at - step.reading.age
        for step in spec.timeline
        if step.reading is not None
    }


# -- the scenario's world: names -> ids, the context, the events ------------------------------------------------


@dataclass(slots=True)
class World:
    """One run of a scenario: fresh ids for its names, and the requirement versions as the timeline adds them."""

    spec: ScenarioSpec
    organization_id: UUID = field(default_factory=uuid4)
    patient_id: UUID = field(default_factory=uuid4)
    users: dict[str, UUID] = field(default_factory=dict)
    devices: dict[str, UUID] = field(default_factory=dict)
    readings: dict[str, UUID] = field(default_factory=dict)
    symptom_rules: tuple[SymptomRule, ...] = SEEDED_SYMPTOM_RULES

    def __post_init__(self) -> None:
        for member in self.spec.care_team:
            self.users.setdefault(member.name, uuid4())
        for device in self.spec.devices:
            self.devices.setdefault(device.name, uuid4())
        for step in self.spec.timeline:
            if step.reading is not None:
                self.readings.setdefault(step.reading.name, uuid4())

    def names(self) -> dict[UUID, str]:
        """Id -> name for everything named in the file (to turn rows back into names)."""
        return {
            **{v: k for k, v in self.users.items()},
            **{v: k for k, v in self.devices.items()},
            **{v: k for k, v in self.readings.items()},
        }

    def reading(self, step: StepSpec) -> CommittedReading:
        spec = step.reading
        assert spec is not None
        type_id, unit = VITAL_TYPES[spec.vital]
        return CommittedReading(
            reading_id=self.readings[spec.name],
            organization_id=self.organization_id,
            patient_id=self.patient_id,
            device_id=self.devices[spec.device],
            vital_type=spec.vital,
            vital_type_id=type_id,
            value=spec.value,
            unit=unit,
            measured_at=(spec.measured or step.at - spec.age).astimezone(UTC),
            received_at=step.at.astimezone(UTC),
        )

    def events(self) -> Iterator[tuple[StepSpec, Event | RequirementSpec]]:
        """The timeline in order: each step with its event, or the requirement version it adds."""
        for step in self.spec.timeline:
            if step.reading is not None:
                yield step, self.reading(step)
            elif step.requirement is not None:
                yield step, step.requirement
            elif step.tick:
                yield step, Tick(step.at.astimezone(UTC))
            else:
                raise ValueError(f"{self.spec.name}: a step at {step.at} has nothing to do")


def requirement_versions(specs: Iterable[RequirementSpec], namespace: UUID) -> tuple[Requirement, ...]:
    """Requirement versions as the database's versioning trigger makes them: per vital type, each new version
    closes the previous one at its own start. Ids are stable per `namespace` and position."""
    result: list[Requirement] = []
    by_type: dict[int, list[Requirement]] = {}
    for position, spec in enumerate(specs):
        type_id, unit = VITAL_TYPES[spec.vital]
        versions = by_type.setdefault(type_id, [])
        if versions:
            last = versions[-1]
            versions[-1] = Requirement(**{**_fields(last), "effective_to": max(spec.since, last.effective_from)})
        columns = spec.columns()
        columns["expected_times"] = tuple(columns["expected_times"])
        versions.append(
            Requirement(
                id=uuid5(namespace, f"requirement-{position}"),
                vital_type_id=type_id,
                vital_type=spec.vital,
                unit=unit,
                version=len(versions) + 1,
                effective_from=spec.since,
                **columns,
            )
        )
    for versions in by_type.values():
        result.extend(versions)
    return tuple(result)


def _fields(requirement: Requirement) -> dict[str, Any]:
    return {name: getattr(requirement, name) for name in Requirement.__dataclass_fields__}


def pure_context(world: World, versions: tuple[Requirement, ...]) -> PatientContext:
    spec = world.spec
    return PatientContext(
        patient_id=world.patient_id,
        organization_id=world.organization_id,
        timezone=spec.timezone,
        monitored=spec.monitored,
        requirements=versions,
        care_team=tuple(CareTeamMember(world.users[m.name], m.role, m.since, m.until) for m in spec.care_team),
        devices=tuple(
            AssignedDevice(world.devices[d.name], f"{spec.name}-{d.name}", d.since, d.until) for d in spec.devices
        ),
        symptom_rules=world.symptom_rules,
    )


# -- folding outputs the way the database stores them -----------------------------------------------------------


@dataclass(slots=True)
class Ledger:
    """What the tables would hold after the outputs: alerts by id (newest revision), notifications by key (first),
    symptoms by id (first; resolved with their alert), checks by key (best outcome)."""

    alerts: dict[UUID, AlertChange] = field(default_factory=dict)
    notifications: dict[str, Notification] = field(default_factory=dict)
    symptoms: dict[UUID, SymptomFlag] = field(default_factory=dict)
    checks: dict[str, AdherenceChange] = field(default_factory=dict)

    def apply(self, outputs: Iterable[Output]) -> None:
        for output in outputs:
            if isinstance(output, AlertChange):
                known = self.alerts.get(output.alert_id)
                if known is None or output.revision > known.revision:
                    self.alerts[output.alert_id] = output
            elif isinstance(output, Notification):
                self.notifications.setdefault(output.key, output)
            elif isinstance(output, SymptomFlag):
                self.symptoms.setdefault(output.symptom_id, output)
            else:
                known_check = self.checks.get(output.slot.key)
                if known_check is None or _better(output, known_check):
                    self.checks[output.slot.key] = output

    def outcome(self, world: World) -> Outcome:
        names = world.names()
        subjects = {a.alert_id: alert_subject(a.vital_type, a.direction, a.opened_at) for a in self.alerts.values()}
        alerts = [
            AlertRow(
                opened_at=str(_utc(a.opened_at)),
                vital=a.vital_type,
                direction=a.direction.value,
                severity=a.severity.value,
                status=a.status.value,
                rule=a.rule.value,
                retrospective=a.retrospective,
                resolved_at=_utc(a.resolved_at),
                version=a.requirement_version,
                triggers=tuple(sorted(names[i] for i in a.trigger_reading_ids)),
            )
            for a in self.alerts.values()
        ]
        notifications = [
            NotificationRow(
                at=str(_utc(n.scheduled_for)),
                type=n.type.value,
                priority=n.priority.value,
                to=names[n.recipient_user_id],
                subject=notification_subject(n.payload, subjects, names),
                change=_opt_str(n.payload.get("change")),
            )
            for n in self.notifications.values()
        ]
        symptoms = [
            SymptomRow(
                code=s.code,
                alert=subjects[s.alert_id],
                reading=names[s.reading_id],
                onset_at=str(_utc(s.onset_at)),
                resolved_at=_utc(self.alerts[s.alert_id].resolved_at),
            )
            for s in self.symptoms.values()
        ]
        checks = [
            CheckRow(
                vital=c.slot.vital_type,
                local=f"{c.slot.local_date.isoformat()}T{c.slot.local_time.strftime('%H:%M')}",
                status=c.slot.status.value,
                reading=None if c.slot.reading_id is None else names[c.slot.reading_id],
                received=c.slot.received_count,
            )
            for c in self.checks.values()
        ]
        return Outcome(sorted(alerts), sorted(notifications), sorted(symptoms), sorted(checks))


def _better(new: AdherenceChange, old: AdherenceChange) -> bool:
    if old.slot.status is CheckStatus.SCHEDULED and new.slot.status is CheckStatus.CANCELLED:
        return True
    return (new.slot.status.rank, new.slot.received_count) > (old.slot.status.rank, old.slot.received_count)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def notification_subject(payload: Mapping[str, Any], alerts: Mapping[UUID, str], names: Mapping[UUID, str]) -> str:
    """What a notification is about, in scenario terms (see NotificationRow.subject)."""
    if "alert_id" in payload:
        return alerts[UUID(str(payload["alert_id"]))]
    if "device_id" in payload:
        return names[UUID(str(payload["device_id"]))]
    return f"{payload['vital_type']} {payload['local_date']}T{payload['local_time']}"


def local_key(local_date: date, local_time: time) -> str:
    return f"{local_date.isoformat()}T{local_time.strftime('%H:%M')}"


__all__ = [
    "AlertRow",
    "AlertStatus",
    "CheckRow",
    "Ledger",
    "NotificationRow",
    "Outcome",
    "ScenarioSpec",
    "SymptomRow",
    "World",
    "all_paths",
    "expected_outcome",
    "load",
    "pure_context",
    "requirement_versions",
]
