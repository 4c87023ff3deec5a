-- Scheduled events (medication, vital checks, appointments, exercise...) and the adherence outcome of each.
--
-- A row of scheduled_events is one occurrence. Its instant is scheduled_for; local_date/local_time keep the
-- wall-clock time it was planned for in `timezone` (the patient's zone when it was scheduled), so "08:00 every
-- day" stays 08:00 across DST changes and a later change of the patient's zone does not rewrite history.
-- The processors generate vital checks from vital_requirements.expected_per_day/expected_times (one event per
-- requirement, local time and day, upserted on idempotency_key) and resolve each one by upserting its
-- adherence_records row (ON CONFLICT (scheduled_event_id)); a trigger copies the outcome into the event's status.

CREATE TYPE scheduled_event_kind AS ENUM (
    'medication', 'vital_check', 'appointment', 'exercise', 'education', 'symptom_check', 'other');
-- scheduled -> one of the adherence outcomes (set from adherence_records), or cancelled.
CREATE TYPE scheduled_event_status AS ENUM (
    'scheduled', 'completed', 'late', 'partial', 'missed', 'cancelled');
CREATE TYPE adherence_status AS ENUM ('completed', 'late', 'partial', 'missed');
-- Who established the outcome: a matching device reading, the patient or a provider, or the system's sweep.
CREATE TYPE adherence_source AS ENUM ('device', 'patient', 'provider', 'system');

-- Composite foreign keys prove an event and its outcome belong to the patient and the patient's organization.
CREATE TABLE scheduled_events (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL,
    patient_id          uuid NOT NULL,
    kind                scheduled_event_kind NOT NULL,
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description         text,
    -- Required for vital checks: which vital is expected.
    vital_type_id       smallint REFERENCES vital_types (id),
    -- The requirement version a generated vital check comes from (NULL for events people create).
    requirement_id      uuid REFERENCES vital_requirements (id),
    care_plan_id        uuid REFERENCES care_plans (id),
    -- Appointments: with whom.
    provider_id         uuid REFERENCES healthcare_providers (id),
    -- The instant, and the wall-clock time it was planned for in the patient's zone.
    scheduled_for       timestamptz NOT NULL,
    timezone            iana_timezone NOT NULL,
    local_date          date NOT NULL,
    local_time          time NOT NULL,
    -- When doing it counts as on time; after window_end it is late, until the processors declare it missed.
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    -- Recurring series: the RFC 5545 rule on the series' events, and the series every occurrence belongs to.
    recurrence_rule     text
        CHECK (recurrence_rule ~ '^FREQ=(HOURLY|DAILY|WEEKLY|MONTHLY|YEARLY)(;[A-Z]+=[^;]+)*$'),
    series_id           uuid,
    status              scheduled_event_status NOT NULL DEFAULT 'scheduled',
    cancelled_at        timestamptz,
    cancel_reason       text,
    -- Medication name/dose, appointment location, exercise plan...
    details             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    -- Producers derive it from what the event stands for, e.g.
    -- 'vital_check:<patient_id>:<vital type code>:<local date>T<HH:MM>', so regenerating never duplicates.
    idempotency_key     text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_by          uuid REFERENCES users (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    UNIQUE (organization_id, patient_id, id),
    CONSTRAINT scheduled_events_vital_check_type CHECK (kind <> 'vital_check' OR vital_type_id IS NOT NULL),
    CONSTRAINT scheduled_events_generated_key
        CHECK (requirement_id IS NULL OR (kind = 'vital_check' AND idempotency_key IS NOT NULL)),
    CONSTRAINT scheduled_events_window CHECK (window_start <= scheduled_for AND scheduled_for <= window_end),
    -- The wall-clock time matches the instant in that zone; up to an hour apart only when the planned time
    -- falls in a DST gap (02:30 on a spring-forward day is 03:30). Catches instants computed in the wrong zone.
    CONSTRAINT scheduled_events_local_time
        CHECK ((scheduled_for AT TIME ZONE timezone) - (local_date + local_time)
               BETWEEN interval '-1 hour' AND interval '1 hour'),
    CONSTRAINT scheduled_events_cancelled CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);
CREATE INDEX scheduled_events_patient_idx ON scheduled_events (patient_id, scheduled_for);
-- The processors' two questions: which open check does this reading satisfy, and which windows have closed.
CREATE INDEX scheduled_events_open_vital_idx ON scheduled_events (patient_id, vital_type_id, window_start)
    WHERE status = 'scheduled' AND kind = 'vital_check';
CREATE INDEX scheduled_events_open_due_idx ON scheduled_events (window_end) WHERE status = 'scheduled';
CREATE INDEX scheduled_events_series_idx ON scheduled_events (series_id) WHERE series_id IS NOT NULL;

-- One outcome per event; a late reading may upgrade 'missed' to 'late' by updating the same row.
CREATE TABLE adherence_records (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL,
    patient_id          uuid NOT NULL,
    scheduled_event_id  uuid NOT NULL UNIQUE,
    status              adherence_status NOT NULL,
    source              adherence_source NOT NULL,
    -- When it was done (the reading's measured_at for a vital check); NULL when missed.
    occurred_at         timestamptz,
    -- The reading that satisfied a vital check (vital_readings has no single-column key: id + measured_at,
    -- as in symptoms).
    reading_id          uuid,
    reading_measured_at timestamptz,
    -- e.g. 2 readings expected, 1 received: partial.
    expected_count      smallint NOT NULL DEFAULT 1 CHECK (expected_count >= 1),
    received_count      smallint NOT NULL DEFAULT 0 CHECK (received_count >= 0),
    recorded_by         uuid REFERENCES users (id),
    notes               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, patient_id, scheduled_event_id)
        REFERENCES scheduled_events (organization_id, patient_id, id),
    CONSTRAINT adherence_records_reading CHECK ((reading_id IS NULL) = (reading_measured_at IS NULL)),
    CONSTRAINT adherence_records_occurred CHECK (status = 'missed' OR occurred_at IS NOT NULL),
    CONSTRAINT adherence_records_missed
        CHECK (status <> 'missed' OR (reading_id IS NULL AND received_count = 0)),
    CONSTRAINT adherence_records_partial
        CHECK (status <> 'partial' OR received_count BETWEEN 1 AND expected_count - 1)
);
CREATE INDEX adherence_records_patient_idx ON adherence_records (patient_id, created_at);
CREATE INDEX adherence_records_reading_idx ON adherence_records (reading_id) WHERE reading_id IS NOT NULL;

-- The event's status follows its outcome, so "open events" stays one indexed predicate.
CREATE FUNCTION adherence_records_set_event_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE scheduled_events SET status = NEW.status::text::scheduled_event_status
     WHERE id = NEW.scheduled_event_id AND status IS DISTINCT FROM NEW.status::text::scheduled_event_status;
    RETURN NULL;
END
$$;
CREATE TRIGGER adherence_records_event_status AFTER INSERT OR UPDATE OF status ON adherence_records
    FOR EACH ROW EXECUTE FUNCTION adherence_records_set_event_status();

CREATE TRIGGER scheduled_events_updated_at BEFORE UPDATE ON scheduled_events
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER adherence_records_updated_at BEFORE UPDATE ON adherence_records
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Events are cancelled, never deleted: their outcomes are clinical history.
GRANT SELECT, INSERT, UPDATE ON scheduled_events, adherence_records TO {{processor}}, {{app}};
