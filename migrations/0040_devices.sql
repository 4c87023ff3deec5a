-- The device registry and device-to-patient assignments over time.

-- Composite keys let child tables prove that a device and a patient belong to the same organization.
ALTER TABLE patients ADD CONSTRAINT patients_organization_id_id_key UNIQUE (organization_id, id);

CREATE TABLE devices (
    id                      uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id         uuid NOT NULL REFERENCES organizations (id),
    -- The serial is the device's MQTT username and its topic level: devices/<serial>/readings.
    serial                  text NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9._-]{3,64}$'),
    kind                    device_kind NOT NULL,
    model                   text,
    manufacturer            text,
    firmware_version        text,
    status                  device_status NOT NULL DEFAULT 'active',
    -- Mosquitto PBKDF2-SHA512 ($7$) hash of the device's MQTT password; the password itself is never stored.
    credential_hash         text CHECK (credential_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$'),
    credentials_rotated_at  timestamptz,
    revoked_at              timestamptz,
    last_seen_at            timestamptz,
    connection_status       text CHECK (connection_status IN ('online', 'offline')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

CREATE TABLE device_assignments (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    device_id       uuid NOT NULL,
    patient_id      uuid NOT NULL,
    assigned_from   timestamptz NOT NULL,
    assigned_to     timestamptz,
    assigned_by     uuid REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, device_id) REFERENCES devices (organization_id, id),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    CHECK (assigned_to IS NULL OR assigned_to > assigned_from),
    -- History is kept; a device is never assigned to two patients at the same instant.
    CONSTRAINT device_assignments_no_overlap
        EXCLUDE USING gist (device_id WITH =, tstzrange(assigned_from, assigned_to) WITH &&)
);
CREATE INDEX device_assignments_patient_idx ON device_assignments (patient_id);

CREATE TRIGGER devices_updated_at BEFORE UPDATE ON devices FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER device_assignments_updated_at BEFORE UPDATE ON device_assignments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Ingest reads the registry (never credential hashes) and records when a device was last seen.
GRANT SELECT (id, organization_id, serial, kind, status, revoked_at, last_seen_at, connection_status)
    ON devices TO {{ingest}}, {{processor}};
GRANT UPDATE (last_seen_at, connection_status) ON devices TO {{ingest}};
GRANT SELECT ON device_assignments TO {{ingest}}, {{processor}};
GRANT SELECT (id, organization_id, serial, kind, model, manufacturer, firmware_version, status,
              credentials_rotated_at, revoked_at, last_seen_at, connection_status, created_at, updated_at)
    ON devices TO {{app}};
GRANT SELECT, INSERT, UPDATE ON device_assignments TO {{app}};
