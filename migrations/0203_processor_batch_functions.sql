-- One batch of the processors in four round trips (BEGIN, processor_batch_begin, processor_batch_write, COMMIT)
-- instead of about eleven. Both functions run with the caller's rights (row-level security and grants apply as to
-- the statements they replace) and are callable only by the processor role.
--
-- processor_batch_begin: lock the batch's patients (pg_advisory_xact_lock, in key order so two batches sharing
-- patients cannot deadlock), then, each in a statement of its own so it sees what other transactions committed
-- before the lock was granted:
--   's' rows: each stored state's version, and its bytes only where the caller's cached version differs;
--   'r' rows: each patient's number of requirement versions (the context cache's freshness check);
--   'a' rows: the episodes the caller believes open that a person resolved (migration 0510), whose symptoms are
--             resolved here too.
CREATE FUNCTION processor_batch_begin(
    p_lock_class integer,
    p_lock_keys integer[],
    p_patients uuid[],
    p_cached_versions bigint[],
    p_context_patients uuid[],
    p_believed_open uuid[]
) RETURNS TABLE (kind text, patient uuid, alert uuid, row_version bigint, stored_state bytea, resolved timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_class, k) FROM (SELECT DISTINCT unnest(p_lock_keys) AS k ORDER BY 1) AS keys;
    RETURN QUERY
    SELECT 's'::text, s.patient_id, NULL::uuid, s.version,
           CASE WHEN c.cached IS DISTINCT FROM s.version THEN s.state END, NULL::timestamptz
      FROM unnest(p_patients, p_cached_versions) AS c (patient_id, cached)
      JOIN processor_states s ON s.patient_id = c.patient_id;
    RETURN QUERY
    SELECT 'r'::text, r.patient_id, NULL::uuid, count(*), NULL::bytea, NULL::timestamptz
      FROM vital_requirements r
     WHERE r.patient_id = ANY (p_context_patients)
     GROUP BY r.patient_id;
    RETURN QUERY
    WITH gone AS (
        SELECT a.id, a.patient_id, a.resolved_at FROM vital_alerts a
         WHERE a.id = ANY (p_believed_open) AND a.status = 'resolved'
    ), symptoms_resolved AS (
        UPDATE symptoms s SET resolved_at = g.resolved_at
          FROM gone g WHERE s.vital_alert_id = g.id AND s.resolved_at IS NULL
    )
    SELECT 'a'::text, g.patient_id, g.id, NULL::bigint, NULL::bytea, g.resolved_at FROM gone g;
END
$$;

-- processor_batch_write: the outputs of one batch and the new states, in the order the foreign keys need.
-- p_alert_rounds is a JSON array of arrays of vital_alerts rows, each array written by one statement in its order:
-- an episode changed twice in one batch appears in two rounds, because one INSERT ... ON CONFLICT DO UPDATE may not
-- touch a row twice and each change is judged against the row as the previous one left it (an escalation clears an
-- acknowledgement); within a round a patient's rows keep their order (an episode clears before the next one opens).
-- Idempotent (docs/processors.md): only a newer revision changes an episode, and a row a person resolved is never
-- touched again; notifications, symptoms are inserted under their unique keys; states are upserted with a version.
CREATE FUNCTION processor_batch_write(
    p_alert_rounds jsonb,
    p_symptoms jsonb,
    p_notifications jsonb,
    p_state_patients uuid[],
    p_states bytea[],
    p_state_versions bigint[]
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_round jsonb;
BEGIN
    FOR v_round IN SELECT value FROM jsonb_array_elements(p_alert_rounds) LOOP
        INSERT INTO vital_alerts AS va (id, organization_id, patient_id, vital_type_id, direction, severity, status,
                                        rule, requirement_id, requirement_version, retrospective, opened_at,
                                        updated_at, resolved_at, last_change, trigger_reading_ids, value, threshold,
                                        last_notified_at, revision)
        SELECT a.id, a.organization_id, a.patient_id, a.vital_type_id, a.direction, a.severity, a.status, a.rule,
               a.requirement_id, a.requirement_version, a.retrospective, a.opened_at, a.updated_at, a.resolved_at,
               a.last_change, a.trigger_reading_ids, a.value, a.threshold, a.last_notified_at, a.revision
          FROM jsonb_to_recordset(v_round) AS a (
              id uuid, organization_id uuid, patient_id uuid, vital_type_id smallint,
              direction vital_alert_direction, severity vital_alert_severity, status vital_alert_status,
              rule vital_alert_rule, requirement_id uuid, requirement_version integer, retrospective boolean,
              opened_at timestamptz, updated_at timestamptz, resolved_at timestamptz,
              last_change vital_alert_change, trigger_reading_ids uuid[], value double precision,
              threshold double precision, last_notified_at timestamptz, revision integer)
        ON CONFLICT (id) DO UPDATE SET
            severity = EXCLUDED.severity,
            status = CASE
                WHEN EXCLUDED.status = 'resolved' THEN EXCLUDED.status
                WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective
                    THEN EXCLUDED.status
                ELSE va.status END,
            acknowledged_at = CASE
                WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective THEN NULL
                ELSE va.acknowledged_at END,
            acknowledged_by = CASE
                WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective THEN NULL
                ELSE va.acknowledged_by END,
            rule = EXCLUDED.rule,
            requirement_id = EXCLUDED.requirement_id,
            requirement_version = EXCLUDED.requirement_version,
            retrospective = EXCLUDED.retrospective,
            updated_at = EXCLUDED.updated_at,
            resolved_at = EXCLUDED.resolved_at,
            last_change = EXCLUDED.last_change,
            trigger_reading_ids = EXCLUDED.trigger_reading_ids,
            value = EXCLUDED.value,
            threshold = EXCLUDED.threshold,
            last_notified_at = EXCLUDED.last_notified_at,
            revision = EXCLUDED.revision
        WHERE va.revision < EXCLUDED.revision AND va.status <> 'resolved';
    END LOOP;

    INSERT INTO symptoms (id, organization_id, patient_id, code, name, severity, source, onset_at, device_id,
                          related_reading_id, related_measured_at, vital_alert_id, resolved_at)
    SELECT s.id, s.organization_id, s.patient_id, s.code, s.name, s.severity, 'device', s.onset_at, s.device_id,
           s.reading_id, s.measured_at, a.id, a.resolved_at
      FROM jsonb_to_recordset(p_symptoms) AS s (
               id uuid, organization_id uuid, patient_id uuid, code text, name text, severity symptom_severity,
               onset_at timestamptz, device_id uuid, reading_id uuid, measured_at timestamptz, alert_id uuid)
      JOIN vital_alerts a ON a.id = s.alert_id
    ON CONFLICT DO NOTHING;

    UPDATE symptoms s SET resolved_at = c.resolved_at
      FROM (SELECT DISTINCT ON (r.id) r.id, r.resolved_at
              FROM jsonb_array_elements(p_alert_rounds) AS round,
                   jsonb_to_recordset(round) AS r (id uuid, last_change text, resolved_at timestamptz, revision integer)
             WHERE r.last_change = 'cleared'
             ORDER BY r.id, r.revision) AS c
     WHERE s.vital_alert_id = c.id AND s.resolved_at IS NULL;

    INSERT INTO notifications (organization_id, recipient_user_id, patient_id, type, priority, title, body, payload,
                               idempotency_key, scheduled_for)
    SELECT n.organization_id, n.recipient_user_id, n.patient_id, n.type, n.priority, n.title, n.body, n.payload,
           n.idempotency_key, n.scheduled_for
      FROM jsonb_to_recordset(p_notifications) AS n (
               organization_id uuid, recipient_user_id uuid, patient_id uuid, type notification_type,
               priority notification_priority, title text, body text, payload jsonb, idempotency_key text,
               scheduled_for timestamptz)
    ON CONFLICT (idempotency_key) DO NOTHING;

    INSERT INTO processor_states (patient_id, state, version, updated_at)
    SELECT s.patient_id, s.state, s.version, now()
      FROM unnest(p_state_patients, p_states, p_state_versions) AS s (patient_id, state, version)
    ON CONFLICT (patient_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version, updated_at = now();
END
$$;

REVOKE ALL ON FUNCTION processor_batch_begin(integer, integer[], uuid[], bigint[], uuid[], uuid[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION processor_batch_write(jsonb, jsonb, jsonb, uuid[], bytea[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION processor_batch_begin(integer, integer[], uuid[], bigint[], uuid[], uuid[]) TO {{processor}};
GRANT EXECUTE ON FUNCTION processor_batch_write(jsonb, jsonb, jsonb, uuid[], bytea[], bigint[]) TO {{processor}};
