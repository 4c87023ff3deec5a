-- Events the processors set aside because evaluating them failed for a reason retrying cannot fix (a constraint
-- or data error, a bug raised for one patient): the rest of their batch commits and the hand-off moves on.
-- `python -m processors quarantine retry` evaluates them again once the cause is fixed and marks them resolved.
-- One row per event and patient (a tick: one row per patient, holding the newest tick); a new failure of the same
-- event updates its row. The processors never delete it (they never delete clinical data): resolved rows stay as
-- the record of what happened. The event is a reading event (docs/protocol.md), PHI like vital_readings.
CREATE TABLE processor_quarantine (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid NOT NULL,
    patient_id      uuid NOT NULL,
    -- The reading id, or 'tick'.
    event_key       text NOT NULL CHECK (event_key <> ''),
    event           jsonb NOT NULL CHECK (jsonb_typeof(event) = 'object'),
    error_class     text NOT NULL CHECK (error_class <> ''),
    sqlstate        text CHECK (sqlstate ~ '^[0-9A-Z]{5}$'),
    error_message   text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    failed_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    UNIQUE (patient_id, event_key),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    CHECK (resolved_at IS NULL OR resolved_at >= quarantined_at)
);
CREATE INDEX processor_quarantine_unresolved_idx ON processor_quarantine (id) WHERE resolved_at IS NULL;

GRANT SELECT, INSERT ON processor_quarantine TO {{processor}};
GRANT UPDATE (event, error_class, sqlstate, error_message, attempts, failed_at, resolved_at)
    ON processor_quarantine TO {{processor}};

-- Row-level security for the new tenant-owned table. On a fresh database this runs before migration 0400, whose
-- enable_tenant_isolation_everywhere() then covers it; on a database that already has 0400, do it here.
DO $$
BEGIN
    IF to_regproc('enable_tenant_isolation') IS NOT NULL THEN
        PERFORM enable_tenant_isolation('processor_quarantine'::regclass);
    END IF;
END
$$;
