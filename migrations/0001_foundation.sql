-- Extensions, shared functions, domains and the enums of the core schema.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- Exclusion constraints over (uuid =, range &&): no device is assigned to two patients at once.
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Time-ordered UUIDs (RFC 9562 version 7): 48-bit Unix milliseconds, then random bits. Hot tables get their ids
-- from the application (ingest generates them); this is the default everywhere else.
CREATE FUNCTION uuid_generate_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION is_timezone(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;

-- An IANA time zone name such as 'America/Chicago' (patients' schedules are in their own zone).
CREATE DOMAIN iana_timezone AS text CHECK (is_timezone(VALUE));

CREATE TYPE user_role AS ENUM ('admin', 'provider', 'patient', 'care_manager', 'support');
CREATE TYPE provider_type AS ENUM (
    'physician', 'nurse', 'nurse_practitioner', 'physician_assistant', 'care_manager', 'pharmacist',
    'dietitian', 'other');
CREATE TYPE care_team_role AS ENUM (
    'primary_physician', 'nurse', 'care_manager', 'specialist', 'pharmacist', 'other');
CREATE TYPE care_plan_status AS ENUM ('draft', 'active', 'paused', 'completed', 'cancelled');
CREATE TYPE device_kind AS ENUM (
    'bp_cuff', 'pulse_oximeter', 'scale', 'glucometer', 'thermometer', 'respiratory_monitor', 'multi');
CREATE TYPE device_status AS ENUM ('active', 'revoked');
CREATE TYPE notification_type AS ENUM (
    'vital_alert', 'vital_alert_cleared', 'missed_measurement', 'device_offline', 'care_plan', 'message',
    'system');
CREATE TYPE notification_priority AS ENUM ('low', 'normal', 'high', 'critical');
CREATE TYPE notification_channel AS ENUM ('in_app', 'push', 'email', 'sms', 'webhook');
CREATE TYPE notification_status AS ENUM (
    'pending', 'sending', 'sent', 'delivered', 'read', 'failed', 'dead', 'cancelled');
CREATE TYPE symptom_severity AS ENUM ('mild', 'moderate', 'severe', 'critical');
CREATE TYPE symptom_source AS ENUM ('patient', 'device', 'provider');
-- Stable reason codes for refused messages and readings (mirrored by ingest's RejectionReason).
CREATE TYPE rejection_reason AS ENUM (
    -- the whole message
    'bad_topic', 'payload_too_large', 'not_utf8', 'invalid_json', 'not_object', 'invalid_message',
    'bad_message_id', 'bad_reading_count', 'unknown_device', 'revoked_device',
    -- one reading
    'unknown_type', 'unit_mismatch', 'non_finite', 'out_of_range', 'implausible_value', 'bad_timestamp',
    'future_timestamp', 'stale_timestamp', 'unassigned_device', 'cross_field', 'conflicting_duplicate');
