"""The engine: (state, event, context) -> (new state, outputs). Pure: no I/O, no clock, no randomness.

Readings are placed in their vital type's window by measurement time and judged at their own position:

* The newest reading of its type, received within the lateness horizon, is *live*: it may open, escalate,
  promote or remind (each of which pages the care team) and clear.
* Any other reading (received later than the horizon, or older than a reading already seen) is *retrospective*:
  it may open a retrospective episode, which never pages (and is resolved at once if the readings already seen
  after it clear it), escalate the retrospective episode it belongs to, or clear an episode that no newer reading
  holds open; it never changes a live episode's severity and never notifies except for an all-clear of an
  episode that had paged. Measured before the open episode of its direction, it may complete an episode of its
  own in the past (`processors.spells`), recorded whole: one resolved, retrospective row.

An episode's time only moves on (the tables' CHECKs hold it: `updated_at >= opened_at`, `resolved_at >= opened_at`,
a symptom resolves after its onset): a change caused by a reading older than the episode's last change is recorded
at that change's time.

Ticks schedule and close vital checks, report silent devices, and clear episodes after quiet time.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from processors.adherence import AdherenceChange, CheckStatus, Slot
from processors.alerts import AlertChange, AlertStatus, ChangeKind, Direction
from processors.context import EngineConfig, PatientContext
from processors.events import CommittedReading, Event, Tick
from processors.identity import stable_id
from processors.notifications import Notification, for_alert, for_missed_check, for_silent_device
from processors.requirements import Requirement
from processors.rules import Breach, Track, breach_at, clears_at, track
from processors.schedule import expected_slots
from processors.spells import calm_before, spells
from processors.state import DeviceState, Episode, PatientState, Resolved, Sample, VitalState
from processors.symptoms import SymptomFlag, SymptomRuleKind

__all__ = ["Evaluation", "Output", "evaluate", "event_time", "forget", "open_alert_ids"]

Output = AlertChange | Notification | SymptomFlag | AdherenceChange

_ORDER = (Direction.LOW, Direction.HIGH, Direction.RISE, Direction.FALL)
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: PatientState
    outputs: tuple[Output, ...]


def forget(state: PatientState, alert_ids: Collection[UUID]) -> PatientState:
    """The state without these episodes (resolved by a person): the next breach opens a new one."""
    if not alert_ids:
        return state
    vitals = {
        type_id: replace(vital, episodes={d: e for d, e in vital.episodes.items() if e.alert_id not in alert_ids})
        for type_id, vital in state.vitals.items()
    }
    return replace(state, vitals=vitals)


def open_alert_ids(state: PatientState) -> set[UUID]:
    return {e.alert_id for vital in state.vitals.values() for e in vital.episodes.values()}


def event_time(event: Event) -> datetime:
    """The instant an event happens for the engine: a tick's now, a reading's receipt."""
    return event.now if isinstance(event, Tick) else event.received_at


def evaluate(state: PatientState | None, event: Event, context: PatientContext, config: EngineConfig) -> Evaluation:
    """Applies one event to one patient's state. `state` None means the engine has not seen the patient yet."""
    current = state if state is not None else PatientState(context.patient_id, started_at=event_time(event))
    if not context.monitored:
        return Evaluation(current, ())
    run = _Run(context, config, current)
    if isinstance(event, Tick):
        run.tick(event.now)
    else:
        run.reading(event)
    return Evaluation(run.state, tuple(run.outputs))


class _Run:
    """One evaluation: the state being rebuilt and the outputs collected on the way."""

    def __init__(self, context: PatientContext, config: EngineConfig, state: PatientState) -> None:
        self.ctx = context
        self.cfg = config
        self.state = state
        self.outputs: list[Output] = []
        # Episodes resolved during this evaluation, by vital type (kept in the vital's state by `_remember`).
        self.resolved: dict[int, list[Resolved]] = {}

    # -- readings -------------------------------------------------------------------------------------------

    def reading(self, r: CommittedReading) -> None:
        reading_key = str(r.reading_id)
        if reading_key in self.state.seen:
            return
        devices = dict(self.state.devices)
        device = devices.get(r.device_id, DeviceState())
        if device.last_measured_at is None or r.measured_at > device.last_measured_at:
            devices[r.device_id] = replace(device, last_measured_at=r.measured_at)
        vital = self.state.vitals.get(r.vital_type_id, VitalState())
        sample = Sample(r.reading_id, r.measured_at, r.value)
        if not vital.samples or vital.samples[-1].order < sample.order:
            index = len(vital.samples)
            vital = replace(vital, samples=(*vital.samples, sample))
        else:
            ordered = list(vital.samples)
            index = bisect.bisect_left([s.order for s in ordered], sample.order)
            if index < len(ordered) and ordered[index].order == sample.order:
                # Already there as history of a state rebuilt from the tables (which claims nothing was judged:
                # a committed reading may still be in hand-off): judged now, at its own position.
                ordered[index] = sample
            else:
                ordered.insert(index, sample)
            vital = replace(vital, samples=tuple(ordered))
        samples = vital.samples

        vital = self._schedule(vital, r.vital_type_id, r.received_at)
        vital = self._match_check(vital, sample)
        requirement = self.ctx.requirement_at(r.vital_type_id, r.measured_at)
        if requirement is not None:
            live = index == len(samples) - 1 and r.lateness <= self.cfg.lateness_horizon
            vital = self._judge(vital, index, r, requirement, live=live)
        vital = self._trim(vital, self.ctx.requirement_at(r.vital_type_id, vital.samples[-1].measured_at))

        vitals = dict(self.state.vitals)
        vitals[r.vital_type_id] = self._remember(vital, r.vital_type_id)
        seen = (*self.state.seen, reading_key)[-self.cfg.seen_ids :]
        self.state = replace(self.state, vitals=vitals, devices=devices, seen=seen)

    def _judge(
        self, vital: VitalState, index: int, r: CommittedReading, requirement: Requirement, *, live: bool
    ) -> VitalState:
        samples = vital.samples
        episodes = dict(vital.episodes)
        directions = set(requirement.directions) | set(episodes)
        for direction in (d for d in _ORDER if d in directions):
            t = track(samples, requirement, direction)
            before = episodes.get(direction)
            if live:
                after = self._live(t, samples, index, r, requirement, before)
            else:
                after = self._retrospective(t, samples, index, r, requirement, before, vital.resolved)
            if after is not None and t.level(index) is not None:
                after = self._symptoms(after, t, samples, index, r)
            if after is None:
                episodes.pop(direction, None)
            else:
                episodes[direction] = after
        return replace(vital, episodes=episodes)

    def _live(
        self,
        t: Track,
        samples: tuple[Sample, ...],
        index: int,
        r: CommittedReading,
        requirement: Requirement,
        episode: Episode | None,
    ) -> Episode | None:
        breach = breach_at(t, samples, index, requirement)
        at = r.measured_at
        if breach is not None:
            if episode is None:
                return self._open(t, samples, index, r, requirement, breach, retrospective=False)
            if episode.retrospective or breach.severity.rank > episode.severity.rank:
                kind = ChangeKind.PROMOTED if episode.retrospective else ChangeKind.ESCALATED
                return self._breach_change(kind, episode, t, samples, index, r, requirement, breach, notify=True)
            if episode.last_notified_at is None or at - episode.last_notified_at >= requirement.cooldown:
                return self._breach_change(
                    ChangeKind.REMINDED, episode, t, samples, index, r, requirement, breach, notify=True
                )
            return episode
        if episode is not None and clears_at(t, samples, index, requirement, episode.opened_at, at):
            self._clear(episode, requirement, at, t.amount(index), r.reading_id)
            return None
        return episode

    def _retrospective(
        self,
        t: Track,
        samples: tuple[Sample, ...],
        index: int,
        r: CommittedReading,
        requirement: Requirement,
        episode: Episode | None,
        resolved: tuple[Resolved, ...],
    ) -> Episode | None:
        at = r.measured_at
        if (
            episode is not None
            and at < episode.opened_at
            and self._past(t, samples, index, r, requirement, episode, resolved)
        ):
            return episode
        if t.level(index) is None:
            if (
                episode is not None
                and (index == len(samples) - 1 or (episode.retrospective and not _breached_after(t, samples, index)))
                and clears_at(t, samples, index, requirement, episode.opened_at, at)
            ):
                self._clear(episode, requirement, at, t.amount(index), r.reading_id)
                return None
            return episode
        breach = breach_at(t, samples, index, requirement)
        if breach is None:
            return episode
        if episode is not None:
            if (
                episode.retrospective
                and breach.severity.rank > episode.severity.rank
                and _within(t, samples, index, requirement, episode)
            ):
                return self._breach_change(
                    ChangeKind.ESCALATED, episode, t, samples, index, r, requirement, breach, notify=False
                )
            return episode
        opened = self._open(t, samples, index, r, requirement, breach, retrospective=True)
        # Readings measured after this one are already known: play them forward, silently.
        current: Episode | None = self._symptoms(opened, t, samples, index, r)
        for j in range(index + 1, len(samples)):
            assert current is not None
            later = breach_at(t, samples, j, requirement)
            if later is not None and later.severity.rank > current.severity.rank:
                current = self._breach_change(
                    ChangeKind.ESCALATED, current, t, samples, j, None, requirement, later, notify=False
                )
            elif later is None and clears_at(t, samples, j, requirement, current.opened_at, samples[j].measured_at):
                self._clear(current, requirement, samples[j].measured_at, t.amount(j), samples[j].reading_id)
                return None
        return current

    def _past(
        self,
        t: Track,
        samples: tuple[Sample, ...],
        index: int,
        r: CommittedReading,
        requirement: Requirement,
        episode: Episode,
        resolved: tuple[Resolved, ...],
    ) -> bool:
        """Records, written whole, the past episode this late reading completes before the open `episode`: in
        measurement order it opens and clears before `episode` opened, and without this reading no such episode
        overlaps it (one that does was recorded by an earlier arrival, and a resolved row is never changed).
        Whether the reading belongs to such an episode (it then changes nothing else)."""
        end = bisect.bisect_left([s.measured_at for s in samples], episode.opened_at)
        until = episode.opened_at
        # Positions before `start` are the same in both windows and no episode is open there.
        start = calm_before(t, samples, requirement, index)
        spell = next(
            (
                s
                for s in spells(t, samples, requirement, (start, end), until, samples[index].measured_at)
                if s.cleared is not None and s.opened <= index <= s.cleared
            ),
            None,
        )
        if spell is None or spell.cleared is None or spell.resolved_at is None:
            return False
        opened_at, resolved_at = samples[spell.opened].measured_at, spell.resolved_at
        if any(
            k.direction is t.direction and k.opened_at <= resolved_at and opened_at <= k.resolved_at for k in resolved
        ):
            return True
        others = (*samples[:index], *samples[index + 1 :])
        if any(
            k.resolved_at is not None and others[k.opened].measured_at <= resolved_at and opened_at <= k.resolved_at
            for k in spells(
                track(others, requirement, t.direction), others, requirement, (start, end - 1), until, resolved_at
            )
        ):
            return True
        severity = max((b.severity for b in spell.breaches), key=lambda s: s.rank)
        opener = samples[spell.opened].reading_id
        past = Episode(
            # Its own id space: a past episode is written once, whole, never as a change of another row.
            alert_id=stable_id(
                opened_at, "vital_alert_past", self.ctx.patient_id, r.vital_type_id, t.direction, opener
            ),
            direction=t.direction,
            severity=severity,
            rule=spell.breach.rule,
            retrospective=True,
            opened_at=opened_at,
            changed_at=resolved_at,
            requirement_id=requirement.id,
            requirement_version=requirement.version,
            trigger_reading_ids=tuple(
                dict.fromkeys(samples[i].reading_id for b in spell.breaches for i in b.positions)
            ),
            value=t.amount(spell.cleared),
            threshold=requirement.threshold(t.direction, severity),
            last_notified_at=None,
            # The transitions it went through: opened, each escalation, cleared.
            revision=len(spell.breaches) + 1,
        )
        self._emit(
            ChangeKind.CLEARED, past, requirement, AlertStatus.RESOLVED, resolved_at,
            samples[spell.cleared].reading_id, notify=False,
        )  # fmt: skip
        self.resolved.setdefault(r.vital_type_id, []).append(Resolved(t.direction, opened_at, resolved_at))
        if t.level(index) is not None:
            self._symptoms(past, t, samples, index, r)
        return True

    def _open(
        self,
        t: Track,
        samples: tuple[Sample, ...],
        index: int,
        r: CommittedReading,
        requirement: Requirement,
        breach: Breach,
        *,
        retrospective: bool,
    ) -> Episode:
        at = r.measured_at
        episode = Episode(
            alert_id=stable_id(at, "vital_alert", self.ctx.patient_id, r.vital_type_id, t.direction, r.reading_id),
            direction=t.direction,
            severity=breach.severity,
            rule=breach.rule,
            retrospective=retrospective,
            opened_at=at,
            changed_at=at,
            requirement_id=requirement.id,
            requirement_version=requirement.version,
            trigger_reading_ids=tuple(samples[i].reading_id for i in breach.positions),
            value=t.amount(index),
            threshold=requirement.threshold(t.direction, breach.severity),
            last_notified_at=None if retrospective else at,
            revision=1,
        )
        self._emit(
            ChangeKind.OPENED, episode, requirement, AlertStatus.OPEN, None, r.reading_id, notify=not retrospective
        )
        return episode

    def _breach_change(
        self,
        kind: ChangeKind,
        episode: Episode,
        t: Track,
        samples: tuple[Sample, ...],
        index: int,
        r: CommittedReading | None,
        requirement: Requirement,
        breach: Breach,
        *,
        notify: bool,
    ) -> Episode:
        # An episode's time only moves on: a breach measured before its last change (an older reading that
        # escalates a retrospective episode) is recorded at that change's time; its own time is in the triggers.
        at = max(samples[index].measured_at, episode.changed_at)
        severity = max(episode.severity, breach.severity, key=lambda s: s.rank)
        triggers = dict.fromkeys((*episode.trigger_reading_ids, *(samples[i].reading_id for i in breach.positions)))
        changed = replace(
            episode,
            severity=severity,
            retrospective=episode.retrospective and not notify,
            changed_at=at,
            requirement_id=requirement.id,
            requirement_version=requirement.version,
            trigger_reading_ids=tuple(triggers),
            value=t.amount(index),
            threshold=requirement.threshold(t.direction, severity),
            last_notified_at=at if notify else episode.last_notified_at,
            revision=episode.revision + 1,
        )
        self._emit(kind, changed, requirement, AlertStatus.OPEN, None, samples[index].reading_id, notify=notify)
        return changed

    def _clear(
        self, episode: Episode, requirement: Requirement, at: datetime, value: float, reading_id: UUID | None
    ) -> None:
        cleared = replace(episode, changed_at=at, value=value, revision=episode.revision + 1)
        self.resolved.setdefault(requirement.vital_type_id, []).append(
            Resolved(episode.direction, episode.opened_at, at)
        )
        # Only an episode that paged gets an all-clear; a retrospective one was never news.
        self._emit(
            ChangeKind.CLEARED, cleared, requirement, AlertStatus.RESOLVED, at, reading_id,
            notify=episode.last_notified_at is not None,
        )  # fmt: skip

    def _emit(
        self,
        kind: ChangeKind,
        episode: Episode,
        requirement: Requirement,
        status: AlertStatus,
        resolved_at: datetime | None,
        reading_id: UUID | None,
        *,
        notify: bool,
    ) -> None:
        change = AlertChange(
            kind=kind,
            alert_id=episode.alert_id,
            organization_id=self.ctx.organization_id,
            patient_id=self.ctx.patient_id,
            vital_type_id=requirement.vital_type_id,
            vital_type=requirement.vital_type,
            direction=episode.direction,
            severity=episode.severity,
            status=status,
            rule=episode.rule,
            retrospective=episode.retrospective,
            opened_at=episode.opened_at,
            changed_at=episode.changed_at,
            resolved_at=resolved_at,
            requirement_id=episode.requirement_id,
            requirement_version=episode.requirement_version,
            trigger_reading_ids=episode.trigger_reading_ids,
            value=episode.value,
            threshold=episode.threshold,
            last_notified_at=episode.last_notified_at,
            revision=episode.revision,
        )
        self.outputs.append(change)
        if notify:
            recipients = self.ctx.recipients(episode.changed_at)
            self.outputs.extend(for_alert(change, requirement.unit, reading_id, recipients))

    def _symptoms(
        self, episode: Episode, t: Track, samples: tuple[Sample, ...], index: int, r: CommittedReading
    ) -> Episode:
        sample = samples[index]
        since = min(
            [episode.opened_at] + [s.measured_at for s in samples if s.reading_id in set(episode.trigger_reading_ids)]
        )
        for rule in self.ctx.rules_for(r.vital_type_id):
            if rule.direction is not episode.direction or rule.code in episode.symptoms:
                continue
            if rule.kind is SymptomRuleKind.TREND:
                matched = rule.matches(t.amount(index))
            else:
                count = sum(1 for s in samples[: index + 1] if s.measured_at >= since and rule.matches(s.value))
                matched = rule.matches(sample.value) and count >= rule.min_readings
            if not matched:
                continue
            self.outputs.append(
                SymptomFlag(
                    symptom_id=stable_id(sample.measured_at, "symptom", episode.alert_id, rule.code),
                    organization_id=self.ctx.organization_id,
                    patient_id=self.ctx.patient_id,
                    alert_id=episode.alert_id,
                    code=rule.code,
                    name=rule.name,
                    severity=rule.severity,
                    onset_at=sample.measured_at,
                    device_id=r.device_id,
                    reading_id=sample.reading_id,
                    measured_at=sample.measured_at,
                )
            )
            episode = replace(episode, symptoms=(*episode.symptoms, rule.code))
        return episode

    def _remember(self, vital: VitalState, vital_type_id: int) -> VitalState:
        """The vital with the episodes resolved in this evaluation, and without those over before its window."""
        spans = (*vital.resolved, *self.resolved.pop(vital_type_id, ()))
        if vital.samples:
            oldest = vital.samples[0].measured_at
            spans = tuple(k for k in spans if k.resolved_at >= oldest)
        return vital if spans == vital.resolved else replace(vital, resolved=spans)

    def _trim(self, vital: VitalState, requirement: Requirement | None) -> VitalState:
        samples = vital.samples
        if not samples:
            return vital
        span = self.cfg.retention
        keep = 1
        if requirement is not None:
            for minutes in (requirement.sustained_minutes, requirement.clear_minutes):
                if minutes is not None:
                    span = max(span, minutes * _MINUTE)
            if requirement.trend_window_hours is not None:
                span = max(span, requirement.trend_window_hours * 60 * _MINUTE)
            keep = max(requirement.breach_n, requirement.clear_count) + 1
        oldest = samples[-1].measured_at - span
        if samples[0].measured_at >= oldest and len(samples) <= self.cfg.max_samples:
            return vital
        cut = bisect.bisect_left([s.measured_at for s in samples], oldest)
        cut = max(0, min(cut, len(samples) - keep))
        cut = max(cut, len(samples) - self.cfg.max_samples)
        return replace(vital, samples=samples[cut:]) if cut else vital

    # -- vital checks ---------------------------------------------------------------------------------------

    def _schedule(self, vital: VitalState, vital_type_id: int, now: datetime) -> VitalState:
        versions = list(self.ctx.versions(vital_type_id))
        if not any(v.has_schedule for v in versions) and not vital.slots:
            return vital
        until = now + self.cfg.schedule_ahead
        start = self.state.started_at if vital.scheduled_until is None else now
        wanted = expected_slots(self.ctx.patient_id, self.ctx.timezone, versions, start, until)
        wanted_keys = {s.key for s in wanted}
        slots: list[Slot] = []
        for slot in vital.slots:
            if slot.status is CheckStatus.SCHEDULED and slot.window_start > now and slot.key not in wanted_keys:
                cancelled = replace(slot, status=CheckStatus.CANCELLED)
                self._adherence(cancelled, now)
                slots.append(cancelled)
            else:
                slots.append(slot)
        known = {s.key for s in slots}
        for slot in wanted:
            if slot.key not in known:
                slots.append(slot)
                self._adherence(slot, now)
        slots.sort(key=lambda s: (s.scheduled_for, s.key))
        return replace(vital, slots=tuple(slots), scheduled_until=until)

    def _match_check(self, vital: VitalState, sample: Sample) -> VitalState:
        at = sample.measured_at
        slots = list(vital.slots)
        on_time = [
            i
            for i, s in enumerate(slots)
            if not s.quota
            and s.status in (CheckStatus.SCHEDULED, CheckStatus.MISSED, CheckStatus.LATE)
            and s.window_start <= at <= s.window_end
        ]
        late = [
            i
            for i, s in enumerate(slots)
            if not s.quota
            and s.status in (CheckStatus.SCHEDULED, CheckStatus.MISSED)
            and s.window_end < at <= s.window_end + self.cfg.late_limit
        ]
        if on_time:
            i = min(on_time, key=lambda i: (abs(at - slots[i].scheduled_for), slots[i].scheduled_for))
            slots[i] = self._resolve(slots[i], CheckStatus.COMPLETED, sample, 1)
        elif late:
            i = max(late, key=lambda i: slots[i].window_end)
            slots[i] = self._resolve(slots[i], CheckStatus.LATE, sample, 1)
        for i, s in enumerate(slots):
            if not s.quota or not s.window_start <= at < s.window_end or s.status is CheckStatus.COMPLETED:
                continue
            if s.status is CheckStatus.CANCELLED:
                continue
            count = s.received_count + 1
            if count >= s.expected_count:
                slots[i] = self._resolve(s, CheckStatus.COMPLETED, sample, count)
            elif s.status is CheckStatus.SCHEDULED:
                # The day is not over: judged at its end (with the last reading, if it comes to 'partial').
                slots[i] = replace(
                    s, received_count=count, reading_id=sample.reading_id, reading_measured_at=sample.measured_at
                )
            else:
                slots[i] = self._resolve(s, CheckStatus.PARTIAL, sample, count)
        return replace(vital, slots=tuple(slots))

    def _resolve(self, slot: Slot, status: CheckStatus, sample: Sample | None, count: int) -> Slot:
        resolved = replace(slot, status=status, received_count=count)
        if sample is not None:
            resolved = replace(resolved, reading_id=sample.reading_id, reading_measured_at=sample.measured_at)
        self._adherence(resolved, slot.window_end if sample is None else sample.measured_at)
        return resolved

    def _adherence(self, slot: Slot, at: datetime) -> None:
        self.outputs.append(AdherenceChange(self.ctx.organization_id, self.ctx.patient_id, slot, at))

    # -- ticks ----------------------------------------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        vitals = dict(self.state.vitals)
        for vital_type_id in sorted(set(self.ctx.vital_type_ids) | set(vitals)):
            vital = vitals.get(vital_type_id, VitalState())
            vital = self._schedule(vital, vital_type_id, now)
            vital = self._close_due_checks(vital, now)
            vital = self._quiet_clears(vital, vital_type_id, now)
            vitals[vital_type_id] = self._remember(vital, vital_type_id)
        self.state = replace(self.state, vitals=vitals)
        self._silent_devices(now)

    def _close_due_checks(self, vital: VitalState, now: datetime) -> VitalState:
        slots: list[Slot] = []
        keep_for = max(self.cfg.slot_retention, self.cfg.late_limit)
        for slot in vital.slots:
            current = slot
            if slot.status is CheckStatus.SCHEDULED and slot.window_end <= now:
                if slot.quota and slot.received_count > 0:
                    current = self._resolve(slot, CheckStatus.PARTIAL, None, slot.received_count)
                else:
                    current = self._resolve(slot, CheckStatus.MISSED, None, 0)
                    self.outputs.extend(
                        for_missed_check(
                            self.ctx.organization_id, self.ctx.patient_id, current, now, self.ctx.recipients(now)
                        )
                    )
            if current.window_end + keep_for >= now:
                slots.append(current)
        return replace(vital, slots=tuple(slots))

    def _quiet_clears(self, vital: VitalState, vital_type_id: int, now: datetime) -> VitalState:
        if not vital.episodes or not vital.samples:
            return vital
        requirement = self.ctx.requirement_at(vital_type_id, now)
        if requirement is None or requirement.clear_minutes is None:
            return vital
        samples = vital.samples
        last = len(samples) - 1
        episodes = dict(vital.episodes)
        for direction in [d for d in _ORDER if d in episodes]:
            episode = episodes[direction]
            t = track(samples, requirement, direction)
            if clears_at(t, samples, last, requirement, episode.opened_at, now):
                self._clear(episode, requirement, now, t.amount(last), None)
                del episodes[direction]
        return replace(vital, episodes=episodes)

    def _silent_devices(self, now: datetime) -> None:
        devices = dict(self.state.devices)
        for assigned in self.ctx.devices:
            if not assigned.active_at(now):
                continue
            device = devices.get(assigned.device_id, DeviceState())
            since = max(
                t for t in (device.last_measured_at, assigned.assigned_from, self.state.started_at) if t is not None
            )
            if now - since < self.cfg.silent_after or device.reported_silence_from == since:
                continue
            self.outputs.extend(
                for_silent_device(
                    self.ctx.organization_id, self.ctx.patient_id, assigned.device_id, assigned.serial, since, now,
                    self.ctx.recipients(now),
                )
            )  # fmt: skip
            devices[assigned.device_id] = replace(device, reported_silence_from=since)
        self.state = replace(self.state, devices=devices)


def _breached_after(t: Track, samples: tuple[Sample, ...], index: int) -> bool:
    """Whether a reading measured after `index` breaches: newer data holds the episode open."""
    return any(t.level(j) is not None for j in range(index + 1, len(samples)))


def _within(t: Track, samples: tuple[Sample, ...], index: int, requirement: Requirement, episode: Episode) -> bool:
    """Whether the breach at `index` belongs to `episode`: measured since it opened, or before with nothing in
    between that would have cleared it (in measurement order the episode would have started there)."""
    since = samples[index].measured_at
    for j in range(index + 1, len(samples)):
        if samples[j].measured_at >= episode.opened_at:
            break
        if t.level(j) is None and clears_at(t, samples, j, requirement, since, samples[j].measured_at):
            return False
    return True
