-- The alert lifecycle and escalation on the processors' episodes (vital_alerts, migration 0200).
--
-- People acknowledge, assign and resolve episodes (`python -m processors alerts ...`, as the app role, in the
-- acting user's tenant, each action audited with the user). Resolving by a person needs more than 0200 lets the
-- app write: it also sets resolved_at, last_change = 'cleared' (0200's CHECKs tie them to status 'resolved'),
-- resolved_by and the outcome note; that is granted here, on those columns only.
-- Escalation: an unacknowledged critical episode pages the next care-team role after a delay; the current step
-- is on the episode (escalation_level, escalated_at), every step in alert_escalations.

ALTER TABLE vital_alerts
    ADD COLUMN assigned_to      uuid,
    ADD COLUMN assigned_at      timestamptz,
    ADD COLUMN resolved_by      uuid REFERENCES users (id),
    ADD COLUMN resolution_note  text CHECK (length(resolution_note) BETWEEN 1 AND 2000),
    ADD COLUMN escalation_level smallint NOT NULL DEFAULT 0 CHECK (escalation_level >= 0),
    ADD COLUMN escalated_at     timestamptz,
    -- An assignee belongs to the episode's organization.
    ADD CONSTRAINT vital_alerts_assignee_fkey FOREIGN KEY (organization_id, assigned_to)
        REFERENCES users (organization_id, id),
    ADD CONSTRAINT vital_alerts_assigned CHECK ((assigned_to IS NULL) = (assigned_at IS NULL)),
    ADD CONSTRAINT vital_alerts_resolved_by CHECK (resolved_by IS NULL OR status = 'resolved'),
    ADD CONSTRAINT vital_alerts_resolution_note CHECK (resolution_note IS NULL OR status = 'resolved'),
    ADD CONSTRAINT vital_alerts_escalated CHECK ((escalation_level = 0) = (escalated_at IS NULL));
CREATE INDEX vital_alerts_assigned_idx ON vital_alerts (assigned_to) WHERE status <> 'resolved';
-- The escalator's question: which critical episodes are still open.
CREATE INDEX vital_alerts_escalating_idx ON vital_alerts (opened_at)
    WHERE status = 'open' AND severity = 'critical' AND NOT retrospective;

CREATE TABLE alert_escalations (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id     uuid NOT NULL,
    alert_id            uuid NOT NULL REFERENCES vital_alerts (id),
    -- Position in the policy's chain (1: the first role after the first responder).
    level               smallint NOT NULL CHECK (level >= 1),
    role                care_team_role NOT NULL,
    due_at              timestamptz NOT NULL,
    escalated_at        timestamptz NOT NULL CHECK (escalated_at >= due_at),
    notified_user_ids   uuid[] NOT NULL CHECK (cardinality(notified_user_ids) >= 1),
    UNIQUE (alert_id, level)
);

-- A person resolving an episode re-arms its rule: the processors drop the episode from their cached state when
-- told on their context channel (0200's processor_context_notify sends {"patient_id", "table": "vital_alerts"}).
CREATE TRIGGER vital_alerts_resolved_by_person AFTER UPDATE OF status ON vital_alerts
    FOR EACH ROW WHEN (NEW.status = 'resolved' AND OLD.status <> 'resolved' AND NEW.resolved_by IS NOT NULL)
    EXECUTE FUNCTION processor_context_notify();

GRANT UPDATE (assigned_to, assigned_at, resolved_at, last_change, resolved_by, resolution_note)
    ON vital_alerts TO {{app}};
GRANT SELECT ON alert_escalations TO {{app}};
GRANT UPDATE (escalation_level, escalated_at) ON vital_alerts TO {{processor}};
GRANT SELECT, INSERT ON alert_escalations TO {{processor}};

DO $$
BEGIN
    IF to_regproc('enable_tenant_isolation_everywhere') IS NOT NULL THEN
        PERFORM enable_tenant_isolation_everywhere();
    END IF;
END
$$;
