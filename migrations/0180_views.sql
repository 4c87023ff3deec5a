-- Views for common questions. All are security_invoker: they run with the caller's grants and row-level
-- security, never with the owner's.

-- The most recent reading per patient and vital type (an index probe per pair: vital_readings_patient_idx).
CREATE VIEW latest_vitals WITH (security_invoker = true) AS
SELECT p.organization_id, p.id AS patient_id, vt.id AS vital_type_id, vt.code AS vital_type,
       r.value, vt.canonical_unit AS unit, r.measured_at, r.received_at, r.device_id, r.id AS reading_id
  FROM patients p
 CROSS JOIN vital_types vt
 CROSS JOIN LATERAL (
        SELECT vr.id, vr.value, vr.measured_at, vr.received_at, vr.device_id
          FROM vital_readings vr
         WHERE vr.patient_id = p.id AND vr.vital_type_id = vt.id
         ORDER BY vr.measured_at DESC
         LIMIT 1) r
 WHERE p.deleted_at IS NULL;

-- Who looks after each patient now.
CREATE VIEW active_care_teams WITH (security_invoker = true) AS
SELECT a.organization_id, a.patient_id, a.provider_id, hp.user_id AS provider_user_id, a.role, a.is_primary,
       hp.provider_type, hp.specialty, u.first_name, u.last_name, u.email, a.started_at
  FROM patient_provider_assignments a
  JOIN healthcare_providers hp ON hp.id = a.provider_id
  JOIN users u ON u.id = hp.user_id
 WHERE a.started_at <= now() AND (a.ended_at IS NULL OR a.ended_at > now())
   AND u.deleted_at IS NULL AND u.is_active;

-- Each device with the patient it is assigned to now and how long ago it was last heard from. Only columns
-- the processors may read, so the device-offline rule can use it too.
CREATE VIEW device_overview WITH (security_invoker = true) AS
SELECT d.id AS device_id, d.organization_id, d.serial, d.kind, d.status, d.connection_status, d.last_seen_at,
       now() - d.last_seen_at AS last_seen_age, da.patient_id, da.assigned_from
  FROM devices d
  LEFT JOIN device_assignments da
    ON da.device_id = d.id AND da.assigned_from <= now()
   AND (da.assigned_to IS NULL OR da.assigned_to > now());

-- How many patients follow each care plan template, per organization (NULL and zeros: an unused template).
CREATE VIEW care_plan_template_patients WITH (security_invoker = true) AS
SELECT t.id AS template_id, t.code AS template_code, t.name AS template_name, cp.organization_id,
       count(DISTINCT cp.patient_id) FILTER (WHERE cp.status = 'active') AS active_patients,
       count(DISTINCT cp.patient_id) FILTER (WHERE cp.status = 'paused') AS paused_patients,
       count(DISTINCT cp.patient_id) AS all_patients
  FROM care_plan_templates t
  LEFT JOIN care_plans cp ON cp.template_id = t.id
 GROUP BY t.id, t.code, t.name, cp.organization_id;

GRANT SELECT ON latest_vitals, active_care_teams, device_overview, care_plan_template_patients TO {{app}};
GRANT SELECT ON latest_vitals, device_overview TO {{processor}};
