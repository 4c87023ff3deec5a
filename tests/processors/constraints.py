"""The constraints the database holds on the processors' output tables, checked on engine outputs in memory.

`Tables` folds outputs the way the runners store them (processors/store.py: an alert upserted by newer revision,
symptoms inserted once and resolved with their alert, notifications inserted once) and asserts, output by output,
what PostgreSQL would refuse: the CHECKs of `vital_alerts` (migration 0200), `symptoms` and `notifications`
(0060), the one-open-episode unique index, the processor role's column grants (it cannot UPDATE `opened_at`,
`direction` or the patient), and the foreign key from a symptom to its episode. An output that fails one of these
fails its whole batch on every retry, so the runner stalls. On top of that, what docs/processors.md promises: an
episode's change time never goes backwards.

CHECK constraints are evaluated on the proposed row of an INSERT ... ON CONFLICT before the conflict is
detected, so even a replayed, older revision must satisfy them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from processors.alerts import AlertChange, AlertStatus, ChangeKind, Direction, Rule
from processors.engine import Output
from processors.notifications import Notification
from processors.symptoms import SymptomFlag

__all__ = ["Tables"]

_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


@dataclass
class Tables:
    """The rows the runners would have written, checked as the database checks them."""

    alerts: dict[UUID, AlertChange] = field(default_factory=dict)
    symptoms: dict[UUID, tuple[SymptomFlag, datetime | None]] = field(default_factory=dict)
    notification_keys: set[str] = field(default_factory=set)

    def apply(self, outputs: Iterable[Output]) -> None:
        for output in outputs:
            self._apply(output)

    def _apply(self, output: Output) -> None:
        if isinstance(output, AlertChange):
            self._alert(output)
        elif isinstance(output, SymptomFlag):
            self._symptom(output)
        elif isinstance(output, Notification):
            assert 1 <= len(output.title) <= 200
            assert isinstance(output.payload, dict)
            self.notification_keys.add(output.key)

    def _alert(self, a: AlertChange) -> None:
        # vital_alerts CHECKs (migration 0200).
        assert a.revision >= 1 and a.requirement_version >= 1
        assert len(a.trigger_reading_ids) >= 1
        assert (a.status is AlertStatus.RESOLVED) == (a.resolved_at is not None)
        assert (a.status is AlertStatus.RESOLVED) == (a.kind is ChangeKind.CLEARED)
        assert a.resolved_at is None or a.resolved_at >= a.opened_at, "vital_alerts resolved_at < opened_at"
        assert a.changed_at >= a.opened_at, "vital_alerts_check4: updated_at < opened_at"
        assert (a.direction in (Direction.RISE, Direction.FALL)) == (a.rule is Rule.TREND)
        known = self.alerts.get(a.alert_id)
        if known is not None:
            # Columns the processor role may not UPDATE, and the promise that an episode's time only moves on.
            assert (a.opened_at, a.direction, a.vital_type_id, a.patient_id) == (
                known.opened_at, known.direction, known.vital_type_id, known.patient_id,
            )  # fmt: skip
            assert a.revision != known.revision or a == known
            assert a.revision < known.revision or a.changed_at >= known.changed_at, "updated_at went backwards"
            if a.revision <= known.revision:
                return
        if known is None and a.status is AlertStatus.RESOLVED:
            # A past episode written whole (docs/processors.md): recorded, never paged, and over before the episode
            # open in its direction began (it never overlaps it).
            assert a.retrospective and a.last_notified_at is None, "a past episode written whole paged"
            assert a.resolved_at is not None
            assert all(
                a.resolved_at < x.opened_at
                for x in self.alerts.values()
                if x.status is not AlertStatus.RESOLVED
                and (x.vital_type_id, x.direction) == (a.vital_type_id, a.direction)
            ), "a past episode overlaps the open one"
        self.alerts[a.alert_id] = a
        # vital_alerts_one_open: one unresolved episode per patient x vital type x direction.
        open_now = [
            x for x in self.alerts.values()
            if x.status is not AlertStatus.RESOLVED and (x.vital_type_id, x.direction) == (a.vital_type_id, a.direction)
        ]  # fmt: skip
        assert len(open_now) <= 1, "a second open episode (vital_alerts_one_open)"
        if a.resolved_at is not None:
            for symptom_id, (flag, resolved) in self.symptoms.items():
                if flag.alert_id == a.alert_id and resolved is None:
                    self._symptom_row(flag, a.resolved_at)
                    self.symptoms[symptom_id] = (flag, a.resolved_at)

    def _symptom(self, s: SymptomFlag) -> None:
        alert = self.alerts.get(s.alert_id)
        assert alert is not None, "a symptom before its episode (foreign key)"
        if s.symptom_id in self.symptoms:
            return
        assert all(f.alert_id != s.alert_id or f.code != s.code for f, _ in self.symptoms.values())
        self._symptom_row(s, alert.resolved_at)
        self.symptoms[s.symptom_id] = (s, alert.resolved_at)

    @staticmethod
    def _symptom_row(s: SymptomFlag, resolved_at: datetime | None) -> None:
        # symptoms CHECKs (migration 0060).
        assert _CODE.match(s.code)
        assert s.device_id is not None
        assert resolved_at is None or resolved_at >= s.onset_at, "symptoms resolved_at < onset_at"
