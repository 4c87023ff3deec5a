-- The hot table: every accepted reading, in its canonical unit, partitioned by day of measured_at (UTC).
-- Identity is (device, vital type, measured_at): a repeat can never be stored twice. The table carries no foreign
-- keys: ingest resolves device, patient and type from the registry before writing, and a per-row key check on
-- four parents would cost the append rate more than the registry lookup it duplicates.

DO $$
DECLARE
    columns constant text := $cols$
        id              uuid NOT NULL,
        organization_id uuid NOT NULL,
        patient_id      uuid NOT NULL,
        device_id       uuid NOT NULL,
        vital_type_id   smallint NOT NULL,
        value           double precision NOT NULL,
        original_value  double precision NOT NULL,
        original_unit   text NOT NULL,
        measured_at     timestamptz NOT NULL,
        received_at     timestamptz NOT NULL,
        message_id      text NOT NULL,
        metadata        jsonb NOT NULL DEFAULT '{}',
        CONSTRAINT vital_readings_pkey PRIMARY KEY (device_id, vital_type_id, measured_at)
    $cols$;
BEGIN
    -- TimescaleDB is not a trusted extension: a superuser installs it in the database (docker-compose does) and
    -- the table becomes a hypertable with the same columns, keys and insert path, with daily chunks.
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('CREATE TABLE vital_readings (%s)', columns);
        PERFORM create_hypertable('vital_readings', 'measured_at', chunk_time_interval => interval '1 day');
    ELSE
        EXECUTE format('CREATE TABLE vital_readings (%s) PARTITION BY RANGE (measured_at)', columns);
    END IF;
END
$$;

-- The processors' and clinicians' question: recent readings of one patient and vital type.
CREATE INDEX vital_readings_patient_idx ON vital_readings (patient_id, vital_type_id, measured_at);

-- Creates the missing daily partitions from days_back before today to days_ahead after (UTC days), so no valid
-- reading (accepted up to 30 days old) fails for lack of one. Ingest calls it at start and hourly; it runs with
-- the owner's rights so the ingest role needs no DDL privilege. Returns how many partitions it created.
CREATE FUNCTION ensure_vital_reading_partitions(days_back integer DEFAULT 31, days_ahead integer DEFAULT 14)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    today constant date := (now() AT TIME ZONE 'UTC')::date;
    day date;
    created integer := 0;
    partition_name text;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.vital_readings'::regclass) <> 'p' THEN
        RETURN 0;  -- a hypertable: TimescaleDB manages chunks
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ensure_vital_reading_partitions'));
    FOR day IN SELECT generate_series(today - days_back, today + days_ahead, interval '1 day')::date LOOP
        partition_name := 'vital_readings_' || to_char(day, 'YYYYMMDD');
        IF to_regclass('public.' || partition_name) IS NULL THEN
            EXECUTE format('CREATE TABLE public.%I PARTITION OF public.vital_readings FOR VALUES FROM (%L) TO (%L)',
                           partition_name, day::timestamp AT TIME ZONE 'UTC',
                           (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
REVOKE ALL ON FUNCTION ensure_vital_reading_partitions(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_vital_reading_partitions(integer, integer) TO {{ingest}};

SELECT ensure_vital_reading_partitions();

-- Every refused message or reading, with its raw bytes (bytea: a payload may hold NUL or invalid UTF-8), kept for
-- inspection and replay once the cause is fixed.
CREATE TABLE ingest_rejections (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    claimed_serial  text,
    device_id       uuid,
    organization_id uuid,
    message_id      text,
    reason          rejection_reason NOT NULL,
    detail          text NOT NULL,
    -- Index of the refused reading in the message; NULL when the whole message was refused.
    reading_index   integer CHECK (reading_index >= 0),
    payload         bytea NOT NULL,
    -- The size received; payload holds at most the configured limit of it.
    payload_size    integer NOT NULL CHECK (payload_size >= 0),
    replayed_at     timestamptz,
    replay_result   text,
    CHECK (octet_length(payload) <= 1048576)
);
CREATE INDEX ingest_rejections_received_idx ON ingest_rejections (received_at);
CREATE INDEX ingest_rejections_reason_idx ON ingest_rejections (reason, received_at);

GRANT SELECT, INSERT ON vital_readings TO {{ingest}};
GRANT SELECT ON vital_readings TO {{processor}}, {{app}};
GRANT SELECT, INSERT ON ingest_rejections TO {{ingest}};
GRANT UPDATE (replayed_at, replay_result) ON ingest_rejections TO {{ingest}};
GRANT SELECT ON ingest_rejections TO {{app}};
