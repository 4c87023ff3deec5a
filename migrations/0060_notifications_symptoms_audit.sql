-- Notifications to users, symptoms (reported or flagged by devices), and the append-only HIPAA audit log.

CREATE TABLE notifications (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL REFERENCES organizations (id),
    recipient_user_id   uuid NOT NULL REFERENCES users (id),
    patient_id          uuid REFERENCES patients (id),
    type                notification_type NOT NULL,
    priority            notification_priority NOT NULL DEFAULT 'normal',
    channel             notification_channel NOT NULL DEFAULT 'in_app',
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body                text NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    status              notification_status NOT NULL DEFAULT 'pending',
    -- Producers derive it from what caused the notification, so a replayed event never notifies twice.
    idempotency_key     text NOT NULL UNIQUE,
    scheduled_for       timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    failed_at           timestamptz,
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_recipient_idx ON notifications (recipient_user_id, created_at DESC);
CREATE INDEX notifications_pending_idx ON notifications (scheduled_for) WHERE status IN ('pending', 'failed');
CREATE INDEX notifications_patient_idx ON notifications (patient_id, created_at DESC);

CREATE TABLE symptoms (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL REFERENCES organizations (id),
    patient_id          uuid NOT NULL REFERENCES patients (id),
    code                text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    name                text NOT NULL,
    severity            symptom_severity NOT NULL,
    source              symptom_source NOT NULL,
    onset_at            timestamptz NOT NULL,
    resolved_at         timestamptz,
    device_id           uuid REFERENCES devices (id),
    -- The reading that raised it (vital_readings has no single-column key to reference: see its migration).
    related_reading_id  uuid,
    related_measured_at timestamptz,
    notes               text,
    reported_by         uuid REFERENCES users (id),
    search              tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(name, '')), 'A')
        || setweight(to_tsvector('english', coalesce(notes, '')), 'B')) STORED,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (resolved_at IS NULL OR resolved_at >= onset_at),
    CHECK (source <> 'device' OR device_id IS NOT NULL)
);
CREATE INDEX symptoms_patient_idx ON symptoms (patient_id, onset_at DESC);
CREATE INDEX symptoms_search_idx ON symptoms USING gin (search);
CREATE INDEX symptoms_name_trgm_idx ON symptoms USING gin (name gin_trgm_ops);

CREATE TRIGGER notifications_updated_at BEFORE UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER symptoms_updated_at BEFORE UPDATE ON symptoms FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who did what to which record. Append-only: no role can change or remove a row (triggers refuse UPDATE,
-- DELETE and TRUNCATE even for the owner; application roles are granted INSERT and SELECT only).
CREATE TABLE audit_logs (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    organization_id uuid,
    actor_user_id   uuid,
    db_role         text NOT NULL DEFAULT current_user,
    action          text NOT NULL CHECK (action ~ '^[a-z_.]{2,64}$'),
    entity_type     text NOT NULL,
    entity_id       uuid,
    before          jsonb,
    after           jsonb,
    ip_address      inet,
    user_agent      text,
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_entity_idx ON audit_logs (entity_type, entity_id, occurred_at);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_user_id, occurred_at);
CREATE INDEX audit_logs_occurred_brin ON audit_logs USING brin (occurred_at);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_logs_no_update_delete BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

GRANT SELECT, INSERT, UPDATE ON notifications, symptoms TO {{app}};
GRANT SELECT, INSERT, UPDATE ON notifications TO {{processor}};
GRANT SELECT, INSERT, UPDATE ON symptoms TO {{processor}};
GRANT SELECT, INSERT ON audit_logs TO {{app}};
GRANT INSERT ON audit_logs TO {{ingest}}, {{processor}};
