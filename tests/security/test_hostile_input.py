"""Every case of the hostile corpus through ingest's pure core (parse_envelope + judge): refused, with the reason
the wire contract names, without an exception, with a detail PostgreSQL can store."""

from __future__ import annotations

from collections import Counter

import pytest

from ingest.admission import Envelope, Limits, judge, parse_envelope
from ingest.directory import DeviceRecord
from ingest.rejection import RejectionReason
from tests.ingest import catalog
from tests.security import hostile

LIMITS = Limits()
UNITS = catalog.registry()
CASES = hostile.corpus(catalog.NOW, LIMITS)


def _device(kind: hostile.DeviceKind) -> DeviceRecord | None:
    return {
        "assigned": catalog.device(),
        "unassigned": catalog.device(assignments=()),
        "revoked": catalog.device(revoked=True),
        "unknown": None,
    }[kind]


def _params() -> list[object]:
    return [
        pytest.param(c, id=c.name, marks=pytest.mark.xfail(raises=OverflowError, reason=hostile.KNOWN_DEFECTS[c.name]))
        if c.name in hostile.KNOWN_DEFECTS
        else pytest.param(c, id=c.name)
        for c in CASES
    ]


def test_the_corpus_covers_every_category() -> None:
    assert len(CASES) >= 200
    reasons = Counter(reason for case in CASES for reason, _ in case.refusals)
    # Every refusal a message's content can earn (bad_topic and conflicting_duplicate need a topic or a history).
    content_reasons = set(RejectionReason) - {RejectionReason.BAD_TOPIC, RejectionReason.CONFLICTING_DUPLICATE}
    assert content_reasons <= set(reasons)
    assert reasons[RejectionReason.INVALID_JSON] >= 100  # JSONTestSuite's categories of malformed JSON
    assert reasons[RejectionReason.NOT_UTF8] >= 20


@pytest.mark.parametrize("case", _params())
def test_a_hostile_message_is_refused_with_the_right_reason(case: hostile.Case) -> None:
    envelope = Envelope(f"devices/{catalog.device().serial}/readings", case.payload, catalog.NOW)
    verdict = judge(envelope, parse_envelope(envelope, LIMITS), _device(case.device), UNITS, LIMITS)
    assert verdict.readings == ()
    assert [(r.reason, r.reading_index) for r in verdict.rejections] == list(case.refusals)
    for rejection in verdict.rejections:
        assert "\x00" not in rejection.detail and len(rejection.detail) <= 300
        rejection.detail.encode("utf-8")  # no lone surrogates: PostgreSQL text accepts it


@pytest.mark.parametrize(
    "topic",
    [
        "devices/cuff-0001/status",
        "devices/cuff-0001/readings/extra",
        "devices/cuff-0001",
        "devices//readings",
        "devices/+/readings",
        "devices/#",
        "devices/a/readings",
        "devices/" + "x" * 65 + "/readings",
        "devices/cuff 0001/readings",
        "devices/cuff\u00e9/readings",
        "Devices/cuff-0001/readings",
        "/devices/cuff-0001/readings",
        "devices/cuff-0001/readings\u0000",
        "$SYS/broker/readings",
        "",
    ],
)
def test_a_message_on_a_topic_ingest_does_not_own_is_refused(topic: str) -> None:
    envelope = Envelope(topic, CASES[0].payload, catalog.NOW)
    verdict = judge(envelope, parse_envelope(envelope, LIMITS), catalog.device(), UNITS, LIMITS)
    assert [(r.reason, r.reading_index) for r in verdict.rejections] == [(RejectionReason.BAD_TOPIC, None)]
    assert verdict.readings == ()
