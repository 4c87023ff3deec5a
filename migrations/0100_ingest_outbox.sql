-- Ingest's durable hand-off to the processors, and idempotent refusals.

-- A transactional outbox: each committed batch of readings writes one row here in the same transaction, listing
-- the identities (device, vital type, measured_at) of the readings it inserted. The relay hands those readings to
-- the processors (inline or Kafka) and deletes the row only after that succeeded, so a crash at any point after
-- the commit leaves no committed reading unevaluated. Rows live seconds; the table stays small.
CREATE TABLE ingest_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    device_ids      uuid[] NOT NULL,
    vital_type_ids  smallint[] NOT NULL,
    measured_ats    timestamptz[] NOT NULL,
    CHECK (cardinality(device_ids) > 0),
    CHECK (cardinality(vital_type_ids) = cardinality(device_ids)),
    CHECK (cardinality(measured_ats) = cardinality(device_ids))
);

GRANT SELECT, INSERT, DELETE ON ingest_outbox TO {{ingest}};

-- A redelivered message (ingest crashed after storing its refusal but before the PUBACK), or the same bad bytes
-- sent again, is refused again but stored once: a refusal's identity is what was refused and why.
CREATE UNIQUE INDEX ingest_rejections_identity
    ON ingest_rejections (topic, sha256(payload), coalesce(reading_index, -1), reason);
