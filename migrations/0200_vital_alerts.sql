-- The processors' outputs and inputs beyond the core schema: alert episodes (vital_alerts), symptom rules as
-- seeded data, the link from a device-flagged symptom to its episode, the inline runner's per-patient engine
-- state, and notifications of changes to what the processors cache (care teams, care plans, device assignments).
--
-- Idempotency: every row the processors write has a key derived from its cause, so a replayed event writes
-- nothing new — vital_alerts.id (from the opening reading), notifications.idempotency_key, symptoms.id and
-- (vital_alert_id, code), scheduled_events.idempotency_key, adherence_records.scheduled_event_id.

CREATE TYPE vital_alert_direction AS ENUM ('low', 'high', 'rise', 'fall');
CREATE TYPE vital_alert_severity AS ENUM ('warning', 'critical');
CREATE TYPE vital_alert_status AS ENUM ('open', 'acknowledged', 'resolved');
CREATE TYPE vital_alert_rule AS ENUM ('threshold', 'k_of_n', 'sustained', 'trend');
CREATE TYPE vital_alert_change AS ENUM ('opened', 'escalated', 'promoted', 'reminded', 'cleared');

-- One row per episode: a vital out of range in one direction, from the reading that opened it until it is back
-- inside (hysteresis). The processors write every column but the acknowledgement; `revision` counts their
-- changes, and an upsert applies only a newer revision, so a replayed (older) change never undoes a newer one.
-- Times are event times (measurement time, or the processors' clock tick for quiet-time clears): `updated_at` is
-- the last change of the episode, not of the row; created_at is when the row was first written.
CREATE TABLE vital_alerts (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL,
    patient_id          uuid NOT NULL,
    vital_type_id       smallint NOT NULL REFERENCES vital_types (id),
    direction           vital_alert_direction NOT NULL,
    severity            vital_alert_severity NOT NULL,
    status              vital_alert_status NOT NULL DEFAULT 'open',
    -- The rule that opened it; the requirement version of its last breach (open, escalation, reminder).
    rule                vital_alert_rule NOT NULL,
    requirement_id      uuid NOT NULL REFERENCES vital_requirements (id),
    requirement_version integer NOT NULL CHECK (requirement_version >= 1),
    -- Raised from late or out-of-order data: recorded, never paged.
    retrospective       boolean NOT NULL DEFAULT false,
    opened_at           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    resolved_at         timestamptz,
    last_change         vital_alert_change NOT NULL,
    -- The readings that opened, escalated or re-notified it (vital_readings has no single-column key).
    trigger_reading_ids uuid[] NOT NULL CHECK (cardinality(trigger_reading_ids) >= 1),
    -- The value (trend: the change over the window) and limit of the last change, in the canonical unit.
    value               double precision NOT NULL,
    threshold           double precision,
    last_notified_at    timestamptz,
    revision            integer NOT NULL CHECK (revision >= 1),
    acknowledged_at     timestamptz,
    acknowledged_by     uuid REFERENCES users (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK ((status = 'resolved') = (last_change = 'cleared')),
    CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL),
    CHECK (resolved_at IS NULL OR resolved_at >= opened_at),
    CHECK (updated_at >= opened_at),
    CHECK ((direction IN ('rise', 'fall')) = (rule = 'trend'))
);
-- One open episode per patient x vital type x direction.
CREATE UNIQUE INDEX vital_alerts_one_open ON vital_alerts (patient_id, vital_type_id, direction)
    WHERE status <> 'resolved';
CREATE INDEX vital_alerts_patient_idx ON vital_alerts (patient_id, opened_at DESC);
-- The care team's work list: what is not resolved yet, per organization.
CREATE INDEX vital_alerts_unresolved_idx ON vital_alerts (organization_id, opened_at DESC)
    WHERE status <> 'resolved';

-- Symptom rules: data, not code. A threshold rule flags an episode in the matching direction of its vital type
-- once `min_readings` of the episode's readings satisfy `value <comparison> threshold`; a trend rule flags a
-- trend episode whose change over the window is at least `threshold` (rise for gt/ge, fall for lt/le).
-- A symptom spanning several vitals (hypertensive crisis: systolic or diastolic) has one row per vital type.
CREATE TYPE symptom_rule_kind AS ENUM ('threshold', 'trend');
CREATE TYPE symptom_comparison AS ENUM ('lt', 'le', 'gt', 'ge');

CREATE TABLE symptom_rules (
    code            text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    vital_type_id   smallint NOT NULL REFERENCES vital_types (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind            symptom_rule_kind NOT NULL DEFAULT 'threshold',
    comparison      symptom_comparison NOT NULL,
    threshold       double precision NOT NULL,
    min_readings    smallint NOT NULL DEFAULT 1 CHECK (min_readings >= 1),
    severity        symptom_severity NOT NULL,
    is_active       boolean NOT NULL DEFAULT true,
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, vital_type_id),
    CHECK (kind = 'threshold' OR (threshold >= 0 AND min_readings = 1))
);
CREATE TRIGGER symptom_rules_updated_at BEFORE UPDATE ON symptom_rules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

INSERT INTO symptom_rules (code, vital_type_id, name, kind, comparison, threshold, min_readings, severity,
                           description) VALUES
    ('hypoxemia', 4, 'Hypoxemia', 'threshold', 'lt', 90, 1, 'severe', 'SpO2 below 90 %'),
    ('fever', 6, 'Fever', 'threshold', 'ge', 38.0, 1, 'moderate', 'Body temperature at or above 38.0 Cel'),
    ('tachycardia', 1, 'Sustained tachycardia', 'threshold', 'gt', 100, 3, 'moderate',
     'Heart rate over 100 /min in three readings of one episode'),
    ('bradycardia', 1, 'Sustained bradycardia', 'threshold', 'lt', 50, 3, 'moderate',
     'Heart rate under 50 /min in three readings of one episode'),
    ('hypertensive_crisis', 2, 'Hypertensive crisis', 'threshold', 'ge', 180, 1, 'critical',
     'Systolic blood pressure at or above 180 mm[Hg]'),
    ('hypertensive_crisis', 3, 'Hypertensive crisis', 'threshold', 'ge', 120, 1, 'critical',
     'Diastolic blood pressure at or above 120 mm[Hg]'),
    ('hypoglycemia', 8, 'Hypoglycemia', 'threshold', 'lt', 70, 1, 'severe', 'Blood glucose below 70 mg/dL'),
    ('rapid_weight_gain', 7, 'Rapid weight gain', 'trend', 'ge', 0.9, 1, 'moderate',
     'A weight-gain trend episode of 0.9 kg (2 lb) or more over the requirement''s window');

-- A device-flagged symptom belongs to the episode that raised it (one per episode and code) and resolves with it.
ALTER TABLE symptoms ADD COLUMN vital_alert_id uuid REFERENCES vital_alerts (id);
CREATE UNIQUE INDEX symptoms_vital_alert_code_key ON symptoms (vital_alert_id, code) WHERE vital_alert_id IS NOT NULL;

-- The inline runner's engine state per patient, written in the same transaction as the outputs it led to, so a
-- crash either keeps both or neither and a redelivered event is recognised. Opaque to everyone but the processors.
CREATE TABLE processor_states (
    patient_id  uuid PRIMARY KEY REFERENCES patients (id),
    state       jsonb NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The processors cache each patient's context (zone, care plan, care team, devices) and requirement versions.
-- Requirements already notify on 'vital_requirements'; the rest notifies on 'processor_context' with the patient.
CREATE FUNCTION processor_context_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data record;
BEGIN
    row_data := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    PERFORM pg_notify('processor_context',
                      json_build_object('patient_id', CASE WHEN TG_TABLE_NAME = 'patients' THEN row_data.id
                                                           ELSE row_data.patient_id END,
                                        'table', TG_TABLE_NAME)::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER patient_provider_assignments_processor_context
    AFTER INSERT OR UPDATE OR DELETE ON patient_provider_assignments
    FOR EACH ROW EXECUTE FUNCTION processor_context_notify();
CREATE TRIGGER care_plans_processor_context AFTER INSERT OR UPDATE OR DELETE ON care_plans
    FOR EACH ROW EXECUTE FUNCTION processor_context_notify();
CREATE TRIGGER device_assignments_processor_context AFTER INSERT OR UPDATE OR DELETE ON device_assignments
    FOR EACH ROW EXECUTE FUNCTION processor_context_notify();
CREATE TRIGGER patients_processor_context AFTER UPDATE OF timezone, deleted_at ON patients
    FOR EACH ROW EXECUTE FUNCTION processor_context_notify();

-- Least privilege. The processors write episodes, their state, (through 0060/0150 grants) notifications,
-- symptoms and adherence; they never delete an episode. The app reads episodes and acknowledges them: it cannot
-- resolve one (resolved_at is not its to write, and the CHECKs tie status 'resolved' to it).
GRANT SELECT, INSERT ON vital_alerts TO {{processor}};
GRANT UPDATE (severity, status, rule, requirement_id, requirement_version, retrospective, updated_at, resolved_at,
              last_change, trigger_reading_ids, value, threshold, last_notified_at, revision, acknowledged_at,
              acknowledged_by)
    ON vital_alerts TO {{processor}};
GRANT SELECT ON vital_alerts TO {{app}};
GRANT UPDATE (status, acknowledged_at, acknowledged_by) ON vital_alerts TO {{app}};
GRANT SELECT ON symptom_rules TO {{processor}}, {{app}};
GRANT SELECT, INSERT, UPDATE, DELETE ON processor_states TO {{processor}};

-- Row-level security for the new tenant-owned table. On a fresh database this runs before migration 0400, whose
-- enable_tenant_isolation_everywhere() then covers vital_alerts; on a database that already has 0400, do it here.
DO $$
BEGIN
    IF to_regproc('enable_tenant_isolation') IS NOT NULL THEN
        PERFORM enable_tenant_isolation('vital_alerts'::regclass);
    END IF;
END
$$;
