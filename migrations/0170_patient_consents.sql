-- Consent tracking: which consent document (type, version) a patient granted, when, recorded by whom, and
-- its revocation. A row is a fact: once revoked it never changes; re-consenting (a new version) is a new row.

CREATE TYPE consent_type AS ENUM (
    'remote_monitoring', 'data_sharing', 'telehealth', 'research', 'sms_notifications', 'email_notifications',
    'privacy_notice');
CREATE TYPE consent_method AS ENUM ('electronic', 'written', 'verbal');

CREATE TABLE patient_consents (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL,
    patient_id          uuid NOT NULL,
    consent_type        consent_type NOT NULL,
    -- The version of the consent document the patient agreed to, and a digest of its exact text.
    version             text NOT NULL CHECK (version ~ '^[A-Za-z0-9._-]{1,32}$'),
    document_sha256     text CHECK (document_sha256 ~ '^[0-9a-f]{64}$'),
    method              consent_method NOT NULL DEFAULT 'electronic',
    granted_at          timestamptz NOT NULL DEFAULT now(),
    -- Who recorded it: the patient, a proxy, or a provider taking verbal consent.
    granted_by          uuid REFERENCES users (id),
    expires_at          timestamptz,
    revoked_at          timestamptz,
    revoked_by          uuid REFERENCES users (id),
    revocation_reason   text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    CONSTRAINT patient_consents_expiry CHECK (expires_at IS NULL OR expires_at > granted_at),
    CONSTRAINT patient_consents_revocation CHECK (revoked_at IS NULL OR revoked_at >= granted_at),
    CONSTRAINT patient_consents_revoked_by CHECK (revoked_at IS NOT NULL OR revoked_by IS NULL)
);
-- At most one unrevoked consent per patient and type: a new version is granted after revoking the old one.
CREATE UNIQUE INDEX patient_consents_one_current ON patient_consents (patient_id, consent_type)
    WHERE revoked_at IS NULL;

-- Only revoking (revoked_at, revoked_by, revocation_reason, once) may change a row; nothing deletes one.
CREATE FUNCTION patient_consents_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    revocable constant text[] := '{revoked_at,revoked_by,revocation_reason,updated_at}';
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'patient_consents rows are kept: revoke a consent instead of deleting it'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.revoked_at IS NOT NULL
       OR (to_jsonb(NEW) - revocable) IS DISTINCT FROM (to_jsonb(OLD) - revocable) THEN
        RAISE EXCEPTION 'a consent is immutable once recorded; only an unrevoked consent may be revoked'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER patient_consents_immutable BEFORE UPDATE OR DELETE ON patient_consents
    FOR EACH ROW EXECUTE FUNCTION patient_consents_immutable();
CREATE TRIGGER patient_consents_updated_at BEFORE UPDATE ON patient_consents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Whether a patient has a current consent of a type (granted, not revoked, not expired) at an instant.
CREATE FUNCTION has_consent(patient uuid, kind consent_type, at timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM patient_consents
         WHERE patient_id = patient AND consent_type = kind AND granted_at <= at
           AND (revoked_at IS NULL OR revoked_at > at) AND (expires_at IS NULL OR expires_at > at))
$$;

GRANT SELECT, INSERT ON patient_consents TO {{app}};
GRANT UPDATE (revoked_at, revoked_by, revocation_reason) ON patient_consents TO {{app}};
-- The processors check consent before contacting a patient (e.g. SMS).
GRANT SELECT ON patient_consents TO {{processor}};
