-- Vital types (LOINC + UCUM), their accepted units, and versioned per-patient requirements.

CREATE TABLE vital_types (
    id              smallint PRIMARY KEY,
    code            text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]{1,40}$'),
    name            text NOT NULL,
    loinc           text NOT NULL UNIQUE CHECK (loinc ~ '^[0-9]{1,7}-[0-9]$'),
    -- Other LOINC codes a device may send for the same quantity (e.g. SpO2 by pulse oximetry vs. arterial).
    loinc_aliases   text[] NOT NULL DEFAULT '{}',
    canonical_unit  text NOT NULL,
    -- Plausible range in the canonical unit: anything outside is refused as implausible, not stored.
    plausible_min   double precision NOT NULL,
    plausible_max   double precision NOT NULL,
    -- Digits after the decimal point kept in the canonical unit.
    decimal_precision smallint NOT NULL CHECK (decimal_precision BETWEEN 0 AND 4),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (plausible_min < plausible_max)
);

-- canonical = (value + pre_offset) * factor. The canonical unit itself is listed with factor 1, offset 0.
CREATE TABLE vital_type_units (
    vital_type_id   smallint NOT NULL REFERENCES vital_types (id),
    unit            text NOT NULL,
    factor          double precision NOT NULL CHECK (factor > 0),
    pre_offset      double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (vital_type_id, unit)
);

INSERT INTO vital_types (id, code, name, loinc, loinc_aliases, canonical_unit, plausible_min, plausible_max,
                         decimal_precision) VALUES
    (1, 'heart_rate',       'Heart rate',                 '8867-4',  '{}',       '/min',    20,  300, 0),
    (2, 'systolic_bp',      'Systolic blood pressure',    '8480-6',  '{}',       'mm[Hg]',  40,  300, 0),
    (3, 'diastolic_bp',     'Diastolic blood pressure',   '8462-4',  '{}',       'mm[Hg]',  20,  200, 0),
    (4, 'spo2',             'Oxygen saturation (SpO2)',   '59408-5', '{2708-6}', '%',       50,  100, 0),
    (5, 'respiratory_rate', 'Respiratory rate',           '9279-1',  '{}',       '/min',     2,   80, 0),
    (6, 'body_temperature', 'Body temperature',           '8310-5',  '{}',       'Cel',     30,   45, 1),
    (7, 'body_weight',      'Body weight',                '29463-7', '{}',       'kg',     0.5,  500, 2),
    (8, 'blood_glucose',    'Glucose in blood',           '2339-0',  '{}',       'mg/dL',   10, 1500, 0);

INSERT INTO vital_type_units (vital_type_id, unit, factor, pre_offset) VALUES
    (1, '/min', 1, 0), (1, '{beats}/min', 1, 0),
    (2, 'mm[Hg]', 1, 0),
    (3, 'mm[Hg]', 1, 0),
    (4, '%', 1, 0),
    (5, '/min', 1, 0), (5, '{breaths}/min', 1, 0),
    (6, 'Cel', 1, 0), (6, '[degF]', 5.0 / 9.0, -32),
    (7, 'kg', 1, 0), (7, '[lb_av]', 0.45359237, 0), (7, 'g', 0.001, 0),
    -- Glucose: 1 mmol/L = 18.0156 mg/dL (molar mass 180.156 g/mol).
    (8, 'mg/dL', 1, 0), (8, 'mmol/L', 18.0156, 0);

-- What the rule engine checks for one patient and vital type. Rows are immutable versions: a change inserts a
-- new row (version n+1) and closes the previous one (effective_to), so every alert can cite the exact version.
CREATE TABLE vital_requirements (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL REFERENCES organizations (id),
    patient_id          uuid NOT NULL REFERENCES patients (id),
    vital_type_id       smallint NOT NULL REFERENCES vital_types (id),
    care_plan_id        uuid REFERENCES care_plans (id),
    version             integer NOT NULL CHECK (version >= 1),
    effective_from      timestamptz NOT NULL DEFAULT now(),
    effective_to        timestamptz,
    -- Thresholds in the vital type's canonical unit.
    warning_low         double precision,
    warning_high        double precision,
    critical_low        double precision,
    critical_high       double precision,
    -- Sustained breaches: k of the last n readings out of range, and/or out of range for >= sustained_minutes.
    breach_k            smallint NOT NULL DEFAULT 1 CHECK (breach_k >= 1),
    breach_n            smallint NOT NULL DEFAULT 1 CHECK (breach_n >= 1),
    sustained_minutes   integer CHECK (sustained_minutes > 0),
    -- Hysteresis: an episode clears once back inside by the margin for clear_count readings or clear_minutes.
    hysteresis_margin   double precision NOT NULL DEFAULT 0 CHECK (hysteresis_margin >= 0),
    clear_count         smallint NOT NULL DEFAULT 1 CHECK (clear_count >= 1),
    clear_minutes       integer CHECK (clear_minutes > 0),
    -- No repeat notification within the cooldown while an episode is open (escalation always notifies).
    cooldown_minutes    integer NOT NULL DEFAULT 60 CHECK (cooldown_minutes >= 0),
    -- Trend rule, e.g. weight gain >= trend_delta (canonical unit) within trend_window_hours.
    trend_window_hours  integer CHECK (trend_window_hours > 0),
    trend_delta         double precision,
    -- Expected frequency: readings per day at these local times (patient's timezone), +/- window.
    expected_per_day    smallint CHECK (expected_per_day BETWEEN 1 AND 96),
    expected_times      time[] NOT NULL DEFAULT '{}',
    expected_window_minutes integer NOT NULL DEFAULT 60 CHECK (expected_window_minutes > 0),
    created_by          uuid REFERENCES users (id),
    change_reason       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (patient_id, vital_type_id, version),
    CHECK (breach_k <= breach_n),
    CHECK (effective_to IS NULL OR effective_to >= effective_from),
    CHECK (warning_low IS NULL OR warning_high IS NULL OR warning_low < warning_high),
    CHECK (critical_low IS NULL OR warning_low IS NULL OR critical_low <= warning_low),
    CHECK (critical_high IS NULL OR warning_high IS NULL OR critical_high >= warning_high),
    CHECK ((trend_window_hours IS NULL) = (trend_delta IS NULL)),
    CHECK (cardinality(expected_times) = 0 OR expected_per_day = cardinality(expected_times))
);
-- At most one active requirement per patient and vital type.
CREATE UNIQUE INDEX vital_requirements_one_active
    ON vital_requirements (patient_id, vital_type_id) WHERE effective_to IS NULL;
CREATE INDEX vital_requirements_organization_idx ON vital_requirements (organization_id);

-- Inserting a requirement makes it the next version and closes the active one; nothing else may change a row
-- except closing it once. Listeners (the processors) hear about each change on channel 'vital_requirements'.
CREATE FUNCTION vital_requirements_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous vital_requirements;
BEGIN
    SELECT * INTO previous FROM vital_requirements
     WHERE patient_id = NEW.patient_id AND vital_type_id = NEW.vital_type_id AND effective_to IS NULL
     FOR UPDATE;
    IF FOUND THEN
        UPDATE vital_requirements SET effective_to = greatest(NEW.effective_from, previous.effective_from)
         WHERE id = previous.id;
    END IF;
    SELECT coalesce(max(version), 0) + 1 INTO NEW.version FROM vital_requirements
     WHERE patient_id = NEW.patient_id AND vital_type_id = NEW.vital_type_id;
    RETURN NEW;
END
$$;

CREATE FUNCTION vital_requirements_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'vital_requirements rows are immutable versions; close one by setting effective_to'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.effective_to IS NOT NULL
       OR (to_jsonb(NEW) - 'effective_to') IS DISTINCT FROM (to_jsonb(OLD) - 'effective_to') THEN
        RAISE EXCEPTION 'vital_requirements version % is immutable: insert a new version instead', OLD.version
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION vital_requirements_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vital_requirements',
                      json_build_object('patient_id', NEW.patient_id, 'vital_type_id', NEW.vital_type_id,
                                        'id', NEW.id, 'version', NEW.version)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER vital_requirements_version BEFORE INSERT ON vital_requirements
    FOR EACH ROW EXECUTE FUNCTION vital_requirements_version();
CREATE TRIGGER vital_requirements_immutable BEFORE UPDATE OR DELETE ON vital_requirements
    FOR EACH ROW EXECUTE FUNCTION vital_requirements_immutable();
CREATE TRIGGER vital_requirements_notify AFTER INSERT OR UPDATE ON vital_requirements
    FOR EACH ROW EXECUTE FUNCTION vital_requirements_notify();

GRANT SELECT ON vital_types, vital_type_units TO {{ingest}}, {{processor}}, {{app}};
GRANT SELECT, INSERT ON vital_requirements TO {{app}};
GRANT UPDATE (effective_to) ON vital_requirements TO {{app}};
GRANT SELECT ON vital_requirements TO {{processor}};
