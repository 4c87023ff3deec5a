-- Organizations (tenants), users with 2FA/lockout/verification, providers, patients and care teams.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    timezone    iana_timezone NOT NULL DEFAULT 'UTC',
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

CREATE TABLE users (
    id                      uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id         uuid NOT NULL REFERENCES organizations (id),
    email                   text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    password_hash           text NOT NULL,
    role                    user_role NOT NULL,
    first_name              text NOT NULL,
    last_name               text NOT NULL,
    phone                   text,
    is_active               boolean NOT NULL DEFAULT true,
    -- Two-factor authentication: the TOTP secret is encrypted with pgcrypto (pgp_sym_encrypt, key held by the
    -- application), backup codes are stored only as hashes.
    two_factor_enabled      boolean NOT NULL DEFAULT false,
    two_factor_secret       bytea,
    two_factor_backup_codes text[] NOT NULL DEFAULT '{}',
    -- Lockout after repeated failures.
    failed_login_attempts   integer NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
    locked_until            timestamptz,
    -- Email verification: only a hash of the token is kept.
    email_verified_at       timestamptz,
    email_verification_token_hash text,
    email_verification_expires_at timestamptz,
    last_login_at           timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    CHECK (NOT two_factor_enabled OR two_factor_secret IS NOT NULL),
    CHECK ((email_verification_token_hash IS NULL) = (email_verification_expires_at IS NULL))
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX users_organization_idx ON users (organization_id);

CREATE TABLE healthcare_providers (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    user_id         uuid NOT NULL UNIQUE REFERENCES users (id),
    provider_type   provider_type NOT NULL,
    specialty       text,
    license_number  text,
    license_state   text,
    npi             text UNIQUE CHECK (npi ~ '^[0-9]{10}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX healthcare_providers_organization_idx ON healthcare_providers (organization_id);

CREATE TABLE patients (
    id                          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id             uuid NOT NULL REFERENCES organizations (id),
    user_id                     uuid NOT NULL UNIQUE REFERENCES users (id),
    mrn                         text NOT NULL CHECK (length(mrn) BETWEEN 1 AND 64),
    date_of_birth               date NOT NULL CHECK (date_of_birth > '1900-01-01'),
    sex                         text CHECK (sex IN ('female', 'male', 'other', 'unknown')),
    timezone                    iana_timezone NOT NULL,
    emergency_contact_name      text,
    emergency_contact_phone     text,
    emergency_contact_relation  text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    UNIQUE (organization_id, mrn)
);

-- Care team: who looks after a patient, in which role, over which period.
CREATE TABLE patient_provider_assignments (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id),
    patient_id      uuid NOT NULL REFERENCES patients (id),
    provider_id     uuid NOT NULL REFERENCES healthcare_providers (id),
    role            care_team_role NOT NULL,
    is_primary      boolean NOT NULL DEFAULT false,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at > started_at),
    EXCLUDE USING gist (patient_id WITH =, provider_id WITH =, tstzrange(started_at, ended_at) WITH &&)
);
CREATE UNIQUE INDEX patient_provider_assignments_one_primary
    ON patient_provider_assignments (patient_id) WHERE is_primary AND ended_at IS NULL;
CREATE INDEX patient_provider_assignments_provider_idx ON patient_provider_assignments (provider_id);

CREATE TRIGGER organizations_updated_at BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER healthcare_providers_updated_at BEFORE UPDATE ON healthcare_providers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER patients_updated_at BEFORE UPDATE ON patients FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER patient_provider_assignments_updated_at BEFORE UPDATE ON patient_provider_assignments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The user-facing role works with people; the processors only need who is on whose care team, and when.
GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, users, healthcare_providers, patients,
    patient_provider_assignments TO {{app}};
GRANT SELECT (id, organization_id, timezone, deleted_at) ON patients TO {{processor}};
GRANT SELECT (id, organization_id, user_id, provider_type) ON healthcare_providers TO {{processor}};
GRANT SELECT ON patient_provider_assignments TO {{processor}};
GRANT SELECT (id, organization_id, is_active, deleted_at) ON users TO {{processor}};
GRANT SELECT (id, organization_id) ON patients TO {{ingest}};
