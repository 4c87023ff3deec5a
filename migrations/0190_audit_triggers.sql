-- Every change to a sensitive table is written to audit_logs by the database itself, with the row before and
-- after as JSONB, whichever role makes it. The acting application user comes from the session setting
-- rpm.actor_user_id, which services set per transaction: SELECT set_config('rpm.actor_user_id', $1, true).
--
-- Trigger arguments tune a table: 'ignore:<column>' changes that alone are not worth a row (a device's
-- heartbeat), 'redact:<column>' values that must not be copied into the log (credential hashes).

CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    arg text;
    ignored text[] := '{updated_at}';
    redacted text[] := '{}';
    old_row jsonb;
    new_row jsonb;
    changed text[];
    column_name text;
    setting text := nullif(current_setting('rpm.actor_user_id', true), '');
    actor uuid;
    details jsonb := jsonb_build_object('source', 'trigger');
BEGIN
    FOREACH arg IN ARRAY coalesce(TG_ARGV, '{}') LOOP
        IF arg LIKE 'ignore:%' THEN
            ignored := ignored || substr(arg, 8);
        ELSIF arg LIKE 'redact:%' THEN
            redacted := redacted || substr(arg, 8);
        ELSE
            RAISE EXCEPTION 'audit_row_change: unknown argument %', arg;
        END IF;
    END LOOP;

    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
          FROM jsonb_each(new_row) n
         WHERE n.value IS DISTINCT FROM old_row -> n.key;
        IF changed <@ ignored THEN
            RETURN NULL;
        END IF;
        details := details || jsonb_build_object('changed', to_jsonb(changed));
    END IF;
    FOREACH column_name IN ARRAY redacted LOOP
        IF old_row ->> column_name IS NOT NULL THEN
            old_row := jsonb_set(old_row, ARRAY[column_name], '"[redacted]"');
        END IF;
        IF new_row ->> column_name IS NOT NULL THEN
            new_row := jsonb_set(new_row, ARRAY[column_name], '"[redacted]"');
        END IF;
    END LOOP;

    -- A malformed setting must not make the change itself fail: keep it as a detail.
    IF setting ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        actor := setting::uuid;
    ELSIF setting IS NOT NULL THEN
        details := details || jsonb_build_object('actor_setting', left(setting, 100));
    END IF;

    -- Inside SECURITY DEFINER current_user is the owner: the role that made the change is the session's.
    INSERT INTO audit_logs (organization_id, actor_user_id, db_role, action, entity_type, entity_id,
                            before, after, details)
    VALUES ((coalesce(new_row, old_row) ->> 'organization_id')::uuid, actor, session_user,
            TG_TABLE_NAME || '.' || lower(TG_OP), TG_TABLE_NAME, (coalesce(new_row, old_row) ->> 'id')::uuid,
            old_row, new_row, details);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION audit_row_change() FROM PUBLIC;

CREATE TRIGGER patients_audit AFTER INSERT OR UPDATE OR DELETE ON patients
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER care_plans_audit AFTER INSERT OR UPDATE OR DELETE ON care_plans
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER vital_requirements_audit AFTER INSERT OR UPDATE OR DELETE ON vital_requirements
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER patient_provider_assignments_audit
    AFTER INSERT OR UPDATE OR DELETE ON patient_provider_assignments
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER device_assignments_audit AFTER INSERT OR UPDATE OR DELETE ON device_assignments
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER devices_audit AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION audit_row_change(
        'ignore:last_seen_at', 'ignore:connection_status', 'redact:credential_hash');
CREATE TRIGGER patient_consents_audit AFTER INSERT OR UPDATE OR DELETE ON patient_consents
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER patient_subscriptions_audit AFTER INSERT OR UPDATE OR DELETE ON patient_subscriptions
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
