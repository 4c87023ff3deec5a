-- Care plan templates (hypertension, heart failure, COPD, diabetes RPM...) and patients' care plans.

-- ICD-10-CM code shape, e.g. I10, I50.22, E11.9, J44.1.
CREATE FUNCTION are_icd10_codes(codes text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(bool_and(c ~ '^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$'), true) FROM unnest(codes) AS c
$$;

CREATE TABLE care_plan_templates (
    id                   uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- NULL: a template shared by every organization.
    organization_id      uuid REFERENCES organizations (id),
    code                 text NOT NULL CHECK (code ~ '^[a-z0-9_]{2,64}$'),
    name                 text NOT NULL,
    description          text,
    icd10_codes          text[] NOT NULL DEFAULT '{}' CHECK (are_icd10_codes(icd10_codes)),
    -- Default vital requirements: [{"vital_type": "systolic_bp", "warning_high": 140, ...}, ...]
    default_requirements jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(default_requirements) = 'array'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX care_plan_templates_code_key
    ON care_plan_templates (coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid), code);

CREATE TABLE care_plans (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    patient_id      uuid NOT NULL REFERENCES patients (id),
    template_id     uuid REFERENCES care_plan_templates (id),
    status          care_plan_status NOT NULL DEFAULT 'draft',
    title           text NOT NULL,
    start_date      date NOT NULL,
    end_date        date,
    icd10_codes     text[] NOT NULL DEFAULT '{}' CHECK (are_icd10_codes(icd10_codes)),
    details         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    created_by      uuid REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (end_date IS NULL OR end_date >= start_date)
);
CREATE UNIQUE INDEX care_plans_one_active_per_template
    ON care_plans (patient_id, template_id) WHERE status = 'active';
CREATE INDEX care_plans_patient_idx ON care_plans (patient_id);

CREATE TRIGGER care_plan_templates_updated_at BEFORE UPDATE ON care_plan_templates
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER care_plans_updated_at BEFORE UPDATE ON care_plans FOR EACH ROW EXECUTE FUNCTION set_updated_at();

GRANT SELECT, INSERT, UPDATE, DELETE ON care_plan_templates, care_plans TO {{app}};
GRANT SELECT ON care_plan_templates TO {{processor}};
GRANT SELECT (id, organization_id, patient_id, template_id, status, start_date, end_date) ON care_plans
    TO {{processor}};
