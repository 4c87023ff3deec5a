import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from device_simulators.device import DeviceKind, make_device
from device_simulators.fault import (
    MALFORMATION_REASON,
    FaultKind,
    FaultPlan,
    Malformation,
    inject,
    malformed_payload,
    oversized_payload,
)
from device_simulators.message import MAX_PAYLOAD_BYTES, Envelope
from device_simulators.physiology import Condition, make_patient
from device_simulators.scenario import SCENARIOS, run_scenario
from device_simulators.simulation import Script, Subject, simulate

START = datetime(2026, 11, 2, 15, tzinfo=UTC)


def long_stream(days: int = 10) -> list[Envelope]:
    """A pulse oximeter spot-checked every 30 minutes for `days` days."""
    patient = make_patient("flt", Condition.HEART_FAILURE, "America/Chicago", seed=1)
    device = make_device("OXI-FLT", DeviceKind.PULSE_OXIMETER, seed=1)
    checks = tuple(START + timedelta(minutes=30 * i) for i in range(days * 48))
    script = Script(extra={DeviceKind.PULSE_OXIMETER: checks})
    return simulate(Subject(patient, (device,)), START, START + timedelta(days=days), seed=1, script=script)


def clean(name: str = "desaturation") -> list[Envelope]:
    if name == "long":
        return long_stream()
    scenario = SCENARIOS[name]
    envelopes = run_scenario(scenario, START, serial_prefix="FLT")[1]
    serial = envelopes[0].serial
    return [e for e in envelopes if e.serial == serial]


def only(kind: FaultKind, rate: float = 0.3, **knobs: object) -> FaultPlan:
    return FaultPlan(rates={kind: rate}, **knobs)  # type: ignore[arg-type]


def test_no_faults_leaves_the_stream_unchanged() -> None:
    stream = clean()
    result = inject(stream, FaultPlan(), seed=1, foreign_serial="OTHER-1")
    assert result.envelopes == stream
    assert result.counts == Counter()


def test_injection_is_deterministic_with_a_seed() -> None:
    stream = clean()
    plan = FaultPlan.every(0.1)
    a = inject(stream, plan, seed=5, foreign_serial="OTHER-1")
    b = inject(stream, plan, seed=5, foreign_serial="OTHER-1")
    c = inject(stream, plan, seed=6, foreign_serial="OTHER-1")
    assert [e.payload for e in a.envelopes] == [e.payload for e in b.envelopes]
    assert a.counts == b.counts
    assert [e.payload for e in a.envelopes] != [e.payload for e in c.envelopes]


def test_counts_match_the_faulty_envelopes_produced() -> None:
    result = inject(clean("long"), FaultPlan.every(0.02), seed=2, foreign_serial="OTHER-1")
    produced = Counter(FaultKind(e.fault) for e in result.envelopes if e.fault is not None)
    # An out-of-order pair is one fault with one envelope marked.
    assert produced == result.counts
    assert all(result.counts[k] > 0 for k in FaultKind), result.counts


def test_duplicate_is_the_same_bytes_right_after_and_adds_nothing() -> None:
    result = inject(clean(), only(FaultKind.DUPLICATE), seed=1)
    out = result.envelopes
    dups = [i for i, e in enumerate(out) if e.fault == FaultKind.DUPLICATE]
    assert len(dups) == result.counts[FaultKind.DUPLICATE] > 0
    for i in dups:
        assert out[i].payload == out[i - 1].payload
        assert out[i].expected.repeat and out[i].expected.stored == 0


def test_replay_resends_an_earlier_message_later_and_adds_nothing() -> None:
    stream = clean()
    result = inject(stream, only(FaultKind.REPLAY, replay_after=4), seed=1)
    replays = [(i, e) for i, e in enumerate(result.envelopes) if e.fault == FaultKind.REPLAY]
    assert replays
    for i, env in replays:
        first = next(j for j, e in enumerate(result.envelopes) if e.payload == env.payload)
        assert first < i - 1
        assert env.expected.stored == 0
    assert len(result.envelopes) == len(stream) + len(replays)


def test_out_of_order_swaps_neighbours_and_stores_both() -> None:
    stream = clean()
    result = inject(stream, only(FaultKind.OUT_OF_ORDER), seed=1)
    seqs = [e.seq for e in result.envelopes]
    assert sorted(seqs) == [e.seq for e in stream]
    assert seqs != sorted(seqs)
    assert sum(e.expected.stored for e in result.envelopes) == sum(e.expected.stored for e in stream)
    assert [e.send_at for e in result.envelopes] == sorted(e.send_at for e in result.envelopes)


def test_late_batch_uploads_a_day_of_stored_readings_in_one_message() -> None:
    stream = clean("long")
    result = inject(stream, only(FaultKind.LATE_BATCH, rate=0.01, offline=timedelta(hours=24)), seed=3)
    batches = [e for e in result.envelopes if e.fault == FaultKind.LATE_BATCH]
    assert batches and len(batches) == result.counts[FaultKind.LATE_BATCH]
    all_readings = {(r["type"], r["measured_at"]) for e in stream for r in json.loads(e.payload)["readings"]}
    sent_readings = [(r["type"], r["measured_at"]) for e in result.envelopes for r in json.loads(e.payload)["readings"]]
    # Nothing lost, nothing sent twice: the batch carries what the device measured while offline.
    assert sorted(sent_readings) == sorted(all_readings)
    for batch in batches:
        body = json.loads(batch.payload)
        assert 1 <= len(body["readings"]) <= 500
        oldest = min(datetime.fromisoformat(r["measured_at"]) for r in body["readings"])
        assert batch.send_at - oldest > timedelta(hours=1)
        assert batch.expected.stored == len(body["readings"])


def test_clock_skew_ahead_refuses_readings_as_future() -> None:
    result = inject(clean(), only(FaultKind.CLOCK_SKEW, skew=timedelta(minutes=20)), seed=1)
    skewed = [e for e in result.envelopes if e.fault == FaultKind.CLOCK_SKEW]
    assert skewed
    for env in skewed:
        body = json.loads(env.payload)
        assert all(
            datetime.fromisoformat(r["measured_at"]) > env.send_at + timedelta(minutes=5) for r in body["readings"]
        )
        assert set(env.expected.reading_reasons) == {"future_timestamp"}


def test_small_clock_skew_behind_is_stored() -> None:
    result = inject(clean(), only(FaultKind.CLOCK_SKEW, skew=timedelta(minutes=-3)), seed=1)
    skewed = [e for e in result.envelopes if e.fault == FaultKind.CLOCK_SKEW]
    assert skewed and all(e.expected.stored == len(e.expected.reading_reasons) for e in skewed)


def test_wrong_unit_refuses_exactly_one_reading() -> None:
    result = inject(clean("hypertensive_crisis"), only(FaultKind.WRONG_UNIT), seed=1)
    wrong = [e for e in result.envelopes if e.fault == FaultKind.WRONG_UNIT]
    assert wrong
    for env in wrong:
        assert env.expected.reading_reasons.count("unit_mismatch") == 1
        assert env.expected.stored == 2


@pytest.mark.parametrize("kind", list(Malformation))
def test_each_malformation_breaks_the_payload_in_its_own_way(kind: Malformation) -> None:
    message = clean()[0].message
    assert message is not None
    payload = malformed_payload(message, kind)
    assert payload != message.encode()
    if kind is Malformation.NOT_UTF8:
        with pytest.raises(UnicodeDecodeError):
            payload.decode()
    elif MALFORMATION_REASON[kind] == "invalid_json" and kind is not Malformation.DUPLICATE_KEY:
        with pytest.raises(ValueError):
            json.loads(payload, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    else:
        json.loads(payload)


def test_malformed_cycles_through_every_kind() -> None:
    result = inject(clean(), only(FaultKind.MALFORMED, rate=1.0), seed=1)
    reasons = [e.expected.message_reason for e in result.envelopes if e.fault == FaultKind.MALFORMED]
    assert set(reasons) == set(MALFORMATION_REASON.values())


def test_oversized_is_valid_json_one_byte_over_the_limit() -> None:
    message = clean()[0].message
    assert message is not None
    payload = oversized_payload(message)
    assert len(payload) == MAX_PAYLOAD_BYTES + 1
    assert json.loads(payload) == json.loads(message.encode())


def test_foreign_topic_targets_the_other_device_and_expects_the_broker_to_refuse() -> None:
    result = inject(clean(), only(FaultKind.FOREIGN_TOPIC), seed=1, foreign_serial="OTHER-1")
    foreign = [e for e in result.envelopes if e.fault == FaultKind.FOREIGN_TOPIC]
    assert foreign
    assert all(e.topic == "devices/OTHER-1/readings" and e.expected.broker_denied for e in foreign)
    assert inject(clean(), only(FaultKind.FOREIGN_TOPIC), seed=1).counts[FaultKind.FOREIGN_TOPIC] == 0
