-- The audit trail of PHI: reads the application reports, changes the database records by itself, and audit rows
-- that cannot be forged. Change triggers reuse audit_row_change() (0190); this file adds the tables it does not
-- cover yet and the read path.

-- Who wrote an audit row and when is the database's to say: the writer can neither name another role nor backdate.
CREATE FUNCTION audit_logs_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.db_role := session_user;
    NEW.occurred_at := clock_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_logs_stamp BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION audit_logs_stamp();

-- Records that the acting user (rpm.actor_user_id) of the current tenant (rpm.organization_id) read these rows of
-- one tenant-owned table; one audit row per entity, action '<table>.read'. The app calls it in the transaction
-- that reads, e.g. SELECT audit_read('patients', ARRAY[$1]::uuid[], 'chart'). Runs with the caller's rights, so
-- the row can only be written for the caller's own tenant; without a tenant, or an actor of that tenant, it
-- raises: a read that cannot be audited should not be served. Returns the number of rows written.
CREATE FUNCTION audit_read(entity_type text, entity_ids uuid[], purpose text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tenant constant uuid := current_organization_id();
    setting constant text := nullif(current_setting('rpm.actor_user_id', true), '');
    actor uuid;
    written integer;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'audit_read: no tenant (SET LOCAL rpm.organization_id first)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF setting IS NULL OR setting !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE EXCEPTION 'audit_read: rpm.actor_user_id must name the acting user'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    actor := setting::uuid;
    -- Row security confines this lookup to the tenant: an actor of another organization is not found.
    PERFORM 1 FROM users WHERE id = actor;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_read: actor % is not a user of this organization', actor
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relname = entity_type AND c.relrowsecurity) THEN
        RAISE EXCEPTION 'audit_read: % is not a tenant-owned table', entity_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO audit_logs (organization_id, actor_user_id, action, entity_type, entity_id, details)
    SELECT tenant, actor, entity_type || '.read', entity_type, e,
           jsonb_strip_nulls(jsonb_build_object('source', 'audit_read', 'purpose', left(purpose, 200)))
      FROM (SELECT DISTINCT e FROM unnest(entity_ids) AS e WHERE e IS NOT NULL) AS ids (e);
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
REVOKE ALL ON FUNCTION audit_read(text, uuid[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_read(text, uuid[], text) TO {{app}};

-- Changes of PHI not covered by 0190. Symptoms: every change (the processors add one per alert episode, a low
-- rate). Users (names, contacts, log-in state), notifications, scheduled events and adherence: the changes a
-- person makes through the app; the pipeline's high-rate bookkeeping on these tables is not logged row by row.
CREATE TRIGGER symptoms_audit AFTER INSERT OR UPDATE OR DELETE ON symptoms
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW WHEN (NOT session_is_trusted())
    EXECUTE FUNCTION audit_row_change('redact:password_hash', 'redact:two_factor_secret',
                                      'redact:two_factor_backup_codes', 'redact:email_verification_token_hash',
                                      'ignore:name_search');
CREATE TRIGGER notifications_audit AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW WHEN (NOT session_is_trusted()) EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER scheduled_events_audit AFTER INSERT OR UPDATE OR DELETE ON scheduled_events
    FOR EACH ROW WHEN (NOT session_is_trusted()) EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER adherence_records_audit AFTER INSERT OR UPDATE OR DELETE ON adherence_records
    FOR EACH ROW WHEN (NOT session_is_trusted()) EXECUTE FUNCTION audit_row_change();

-- Alerts: a person acknowledging an episode. The processors' own changes are the episode's history (revision).
-- Guarded: on a database migrated before vital_alerts existed, a later migration attaches it.
DO $$
BEGIN
    IF to_regclass('public.vital_alerts') IS NOT NULL THEN
        CREATE OR REPLACE TRIGGER vital_alerts_audit AFTER INSERT OR UPDATE OR DELETE ON vital_alerts
            FOR EACH ROW WHEN (NOT session_is_trusted()) EXECUTE FUNCTION audit_row_change();
    END IF;
END
$$;
