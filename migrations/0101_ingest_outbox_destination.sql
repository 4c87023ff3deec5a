-- Each outbox row names the destination its relay delivers to ('inline', 'kafka:<topic>', 'discard'), so several
-- ingest deployments (or test runs) sharing one database never deliver each other's readings to the wrong place.
-- A deployment that changes PROCESSOR_TRANSPORT drains its outbox first (docs/ingest.md).
ALTER TABLE ingest_outbox ADD COLUMN destination text NOT NULL DEFAULT 'inline'
    CHECK (destination ~ '^(inline|discard|kafka:[A-Za-z0-9._-]{1,249})$');
ALTER TABLE ingest_outbox ALTER COLUMN destination DROP DEFAULT;
CREATE INDEX ingest_outbox_destination_idx ON ingest_outbox (destination, id);
