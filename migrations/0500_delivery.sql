-- Delivery of notifications to care teams: one row per (notification, channel, target) with its retry state,
-- every attempt made, the organizations' webhook endpoints and their secrets, recipients' channel preferences
-- and quiet hours, and escalation policies. The `notifications` table itself is the outbox the producers write:
-- the dispatcher plans deliveries for its pending rows and rolls their outcome back up into it.

CREATE TYPE delivery_status AS ENUM ('pending', 'sending', 'sent', 'dead', 'cancelled');
CREATE TYPE delivery_outcome AS ENUM ('sent', 'retry', 'dead');

CREATE FUNCTION are_distinct(items anyarray) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT count(*) = count(DISTINCT i) FROM unnest(items) AS i
$$;

CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id             uuid NOT NULL REFERENCES organizations (id),
    name                        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    url                         text NOT NULL CHECK (url ~ '^https?://[^\s]+$' AND length(url) <= 2048),
    -- HMAC secrets. The dispatcher must read them to sign, so they are stored as given, but only the owner and
    -- the processors may read them: the app role sets them and cannot read them back (column grants below).
    -- While a secret is rotated the previous one signs too (a second v1=) until it expires.
    secret                      text NOT NULL CHECK (length(secret) BETWEEN 32 AND 256),
    previous_secret             text CHECK (length(previous_secret) BETWEEN 32 AND 256),
    previous_secret_expires_at  timestamptz,
    -- Empty: every type.
    notification_types          notification_type[] NOT NULL DEFAULT '{}' CHECK (are_distinct(notification_types)),
    min_priority                notification_priority NOT NULL DEFAULT 'low',
    is_active                   boolean NOT NULL DEFAULT true,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_endpoints_organization_idx ON webhook_endpoints (organization_id) WHERE is_active;

-- Channels a user wants besides in-app, and quiet hours in their zone (NULL: the organization's zone).
CREATE TABLE recipient_preferences (
    user_id         uuid PRIMARY KEY,
    organization_id uuid NOT NULL,
    channels        notification_channel[] NOT NULL DEFAULT '{in_app}' CHECK (are_distinct(channels)),
    quiet_start     time,
    quiet_end       time,
    timezone        iana_timezone,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (NOT 'webhook' = ANY (channels))
);

-- One organization-wide policy; without a row the dispatcher's configured default applies.
CREATE TABLE escalation_policies (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id),
    escalate_after  interval NOT NULL CHECK (escalate_after > interval '0' AND escalate_after <= interval '1 day'),
    -- chain[1] is paged when the episode opens; each later role after escalate_after without acknowledgement.
    chain           care_team_role[] NOT NULL CHECK (cardinality(chain) >= 2 AND are_distinct(chain)),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification_deliveries (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    notification_id     uuid NOT NULL REFERENCES notifications (id),
    organization_id     uuid NOT NULL,
    channel             notification_channel NOT NULL,
    -- The user (in_app, email, sms), a user_devices row (push) or a webhook_endpoints row (webhook).
    target_id           uuid NOT NULL,
    -- Copied from the notification: claims take the most urgent first.
    priority            notification_priority NOT NULL,
    status              delivery_status NOT NULL DEFAULT 'pending',
    attempts            smallint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Not before: quiet hours and retry backoff move it.
    next_attempt_at     timestamptz NOT NULL,
    -- A claim expires then; another dispatcher may take the delivery over (so delivery is at least once).
    lease_expires_at    timestamptz,
    -- A short reason code, never message content.
    last_error          text CHECK (length(last_error) <= 300),
    sent_at             timestamptz,
    dead_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (notification_id, channel, target_id),
    CHECK ((status = 'sending') = (lease_expires_at IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    CHECK ((status = 'dead') = (dead_at IS NOT NULL))
);
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notification_deliveries_lease_idx ON notification_deliveries (lease_expires_at)
    WHERE status = 'sending';

CREATE TABLE delivery_attempts (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    delivery_id     uuid NOT NULL REFERENCES notification_deliveries (id),
    organization_id uuid NOT NULL,
    attempt         smallint NOT NULL CHECK (attempt >= 1),
    started_at      timestamptz NOT NULL,
    duration_ms     integer NOT NULL CHECK (duration_ms >= 0),
    outcome         delivery_outcome NOT NULL,
    error           text CHECK (length(error) <= 300),
    -- HTTP status of webhook and push gateway answers, SMTP reply code of email.
    response_code   smallint,
    UNIQUE (delivery_id, attempt)
);

CREATE TRIGGER webhook_endpoints_updated_at BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER recipient_preferences_updated_at BEFORE UPDATE ON recipient_preferences
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER escalation_policies_updated_at BEFORE UPDATE ON escalation_policies
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER notification_deliveries_updated_at BEFORE UPDATE ON notification_deliveries
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who changed where alerts go is audited like any other sensitive configuration (secrets never copied).
CREATE TRIGGER webhook_endpoints_audit AFTER INSERT OR UPDATE OR DELETE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('redact:secret', 'redact:previous_secret');
CREATE TRIGGER recipient_preferences_audit AFTER INSERT OR UPDATE OR DELETE ON recipient_preferences
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER escalation_policies_audit AFTER INSERT OR UPDATE OR DELETE ON escalation_policies
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- The app configures endpoints (without reading secrets back), preferences and policies, and shows delivery state.
GRANT SELECT (id, organization_id, name, url, previous_secret_expires_at, notification_types, min_priority,
              is_active, created_at, updated_at) ON webhook_endpoints TO {{app}};
GRANT INSERT, UPDATE, DELETE ON webhook_endpoints TO {{app}};
GRANT SELECT, INSERT, UPDATE, DELETE ON recipient_preferences, escalation_policies TO {{app}};
GRANT SELECT ON notification_deliveries, delivery_attempts TO {{app}};
-- The dispatcher (processors role) reads configuration, owns delivery state, and needs the address to email.
GRANT SELECT ON webhook_endpoints, recipient_preferences, escalation_policies TO {{processor}};
GRANT SELECT, INSERT, UPDATE ON notification_deliveries TO {{processor}};
GRANT SELECT, INSERT ON delivery_attempts TO {{processor}};
GRANT SELECT (email) ON users TO {{processor}};
GRANT SELECT (id, timezone) ON organizations TO {{processor}};

-- Row-level security (migration 0400) on the new tenant-owned tables and the processors' new read of
-- organizations. On a fresh database 0400 has run and this covers them; on a database where 0400 is not applied
-- yet, 0400's own enable_tenant_isolation_everywhere() will.
DO $$
BEGIN
    IF to_regproc('enable_tenant_isolation_everywhere') IS NOT NULL THEN
        PERFORM enable_tenant_isolation_everywhere();
    END IF;
END
$$;
