-- Diabetes weight trend with hysteresis, as 0085 did for heart failure. 0070 alerts on a gain of 2.3 kg within
-- 168 h but clears as soon as one reading's 7-day gain is back at 2.3 kg or less. Body weight swings by half a
-- kilogram to a kilogram within a day (meals, fluids, clothing, time of weigh-in), so a patient whose weekly gain
-- hovers around the threshold flaps: one reading opens an episode, the next lighter one clears it, the next opens
-- it again, and every swing pages the care team about the same gain.
--
-- From now on a gain episode clears only when the 7-day gain is back at or below 1.4 kg (threshold 2.3 less a
-- margin of 0.9 kg, about the widest day-to-day swing) on two weigh-ins in a row (about two days for a once-daily
-- scale). Opening is unchanged: a gain of 2.3 kg (5 lb) within a week.

UPDATE care_plan_templates t
   SET default_requirements = (
       SELECT jsonb_agg(CASE WHEN r ->> 'vital_type' = 'body_weight'
                             THEN r || '{"hysteresis_margin": 0.9, "clear_count": 2}'::jsonb
                             ELSE r END
                        ORDER BY position)
         FROM jsonb_array_elements(t.default_requirements) WITH ORDINALITY AS e (r, position))
 WHERE t.code = 'diabetes_rpm' AND t.organization_id IS NULL;

-- Requirements the seed copied from the old template and nobody tailored since (still the active version, still
-- exactly 0070's weight rule) get the same fix as a new version; a version a clinician made is left alone.
INSERT INTO vital_requirements (
    organization_id, patient_id, vital_type_id, care_plan_id, version, effective_from,
    warning_low, warning_high, critical_low, critical_high, breach_k, breach_n, sustained_minutes,
    hysteresis_margin, clear_count, clear_minutes, cooldown_minutes, trend_window_hours, trend_delta,
    expected_per_day, expected_times, expected_window_minutes, change_reason)
SELECT r.organization_id, r.patient_id, r.vital_type_id, r.care_plan_id, r.version + 1, now(),
       r.warning_low, r.warning_high, r.critical_low, r.critical_high, r.breach_k, r.breach_n, r.sustained_minutes,
       0.9, 2, r.clear_minutes, r.cooldown_minutes, r.trend_window_hours, r.trend_delta,
       r.expected_per_day, r.expected_times, r.expected_window_minutes,
       'care plan template diabetes_rpm: weight-trend hysteresis (migration 0086)'
  FROM vital_requirements r
  JOIN vital_types v ON v.id = r.vital_type_id
  JOIN care_plans p ON p.id = r.care_plan_id
  JOIN care_plan_templates t ON t.id = p.template_id
 WHERE v.code = 'body_weight'
   AND t.code = 'diabetes_rpm'
   AND r.effective_to IS NULL
   AND r.change_reason = 'seeded from template'
   AND r.created_by IS NULL
   AND r.trend_window_hours = 168 AND r.trend_delta = 2.3
   AND r.hysteresis_margin = 0 AND r.clear_count = 1 AND r.clear_minutes IS NULL;
