"""Baselines a user would write without this project: a paho-mqtt subscriber that INSERTs what it receives,
row at a time (one commit per reading) or with executemany (one commit per batch). paho acknowledges on receipt,
before the commit: these baselines are faster to write and weaker than ingest (a crash loses what was acked).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from scripts.bench.sandbox import Sandbox

INSERT = (
    "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value, original_value,"
    " original_unit, measured_at, received_at, message_id, metadata)"
    " VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def _directory(box: Sandbox) -> dict[str, tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """serial -> (device id, organization id, patient id), as the baseline would cache it."""
    with box.admin() as conn:
        rows = conn.execute(
            "SELECT d.serial, d.id, d.organization_id, a.patient_id FROM devices d"
            " JOIN device_assignments a ON a.device_id = d.id AND a.assigned_to IS NULL"
        ).fetchall()
    return {serial: (device, org, patient) for serial, device, org, patient in rows}


def _rows(
    directory: dict[str, tuple[uuid.UUID, uuid.UUID, uuid.UUID]], topic: str, payload: bytes
) -> list[tuple[Any, ...]]:
    device, org, patient = directory[topic.split("/")[1]]
    body = json.loads(payload)
    now = datetime.now(UTC)
    meta = json.dumps({"meta": body.get("meta", {})})
    return [
        (
            uuid.uuid4(),
            org,
            patient,
            device,
            r["value"],
            r["value"],
            r["unit"],
            r["measured_at"],
            now,
            body["message_id"],
            meta,
        )
        for r in body["readings"]
    ]


def run_baseline(
    box: Sandbox, expected_rows: int, publish: Callable[[], Any], *, batch: int | None, limit_s: float = 180
) -> dict[str, float]:
    """Subscribes with paho, starts `publish`, and writes every reading; returns committed rows/s.

    batch None: one INSERT and one commit per reading; otherwise executemany + commit per `batch` readings
    (or after 100 ms of quiet).
    """
    directory = _directory(box)
    conn = psycopg.connect(box.ingest.ingest_dsn(), autocommit=batch is None)
    done = threading.Event()
    state = {"rows": 0, "first": 0.0, "last": 0.0}
    pending: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def commit(rows: list[tuple[Any, ...]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(INSERT, rows)
        conn.commit()
        _count(len(rows))

    def _count(n: int) -> None:
        state["rows"] += n
        state["last"] = time.perf_counter()
        if state["rows"] >= expected_rows:
            done.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        if not state["first"]:
            state["first"] = time.perf_counter()
        rows = _rows(directory, message.topic, message.payload)
        if batch is None:
            for row in rows:
                conn.execute(INSERT, row)
                _count(1)
            return
        with lock:
            pending.extend(rows)
            if len(pending) >= batch:
                commit(pending[:])
                pending.clear()

    def flusher() -> None:
        while not done.is_set():
            time.sleep(0.1)
            with lock:
                if pending:
                    commit(pending[:])
                    pending.clear()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-baseline-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5
    )
    client.username_pw_set(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(box.broker.host, box.broker.port)
    client.loop_start()
    flush_thread = threading.Thread(target=flusher, daemon=True) if batch is not None else None
    try:
        client.subscribe("devices/+/readings", qos=1)
        subscribed.wait(5)
        if flush_thread is not None:
            flush_thread.start()
        proc = publish()
        done.wait(limit_s)
        proc.wait()
    finally:
        done.set()
        client.disconnect()
        client.loop_stop()
        if flush_thread is not None:
            flush_thread.join()
        conn.close()
    elapsed = state["last"] - state["first"]
    return {"rows": state["rows"], "rows_per_s": state["rows"] / elapsed if elapsed > 0 else 0.0}
