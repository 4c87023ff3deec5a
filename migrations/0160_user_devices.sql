-- Push tokens of the apps users sign in with (one row per app install), for push notifications.

CREATE TYPE push_platform AS ENUM ('ios', 'android', 'web');

-- Composite key so rows that belong to a user can prove they are in the user's organization.
ALTER TABLE users ADD CONSTRAINT users_organization_id_id_key UNIQUE (organization_id, id);

CREATE TABLE user_devices (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL,
    user_id             uuid NOT NULL,
    platform            push_platform NOT NULL,
    -- APNs device token, FCM registration token or a Web Push subscription endpoint.
    push_token          text NOT NULL CHECK (length(push_token) BETWEEN 8 AND 4096),
    device_name         text,
    app_version         text,
    os_version          text,
    locale              text,
    is_active           boolean NOT NULL DEFAULT true,
    last_used_at        timestamptz,
    -- Set when the user signs out or the push service reports the token invalid (e.g. APNs 410 Unregistered).
    deactivated_at      timestamptz,
    deactivation_reason text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, user_id) REFERENCES users (organization_id, id),
    -- A token identifies one install: registering it again (even for another user) updates that row.
    CONSTRAINT user_devices_token_key UNIQUE (platform, push_token),
    CONSTRAINT user_devices_active CHECK (is_active = (deactivated_at IS NULL))
);
CREATE INDEX user_devices_user_idx ON user_devices (user_id) WHERE is_active;

CREATE TRIGGER user_devices_updated_at BEFORE UPDATE ON user_devices
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Users register and remove their installs; whoever delivers push reads tokens and retires dead ones.
GRANT SELECT, INSERT, UPDATE, DELETE ON user_devices TO {{app}};
GRANT SELECT ON user_devices TO {{processor}};
GRANT UPDATE (last_used_at, is_active, deactivated_at, deactivation_reason) ON user_devices TO {{processor}};
