-- Shared care plan templates for remote monitoring, with the vital requirements each one starts from.
-- Thresholds are in canonical units (mm[Hg], /min, %, Cel, kg, mg/dL); a clinician tailors them per patient, which
-- makes a new requirement version. Times of day are local to the patient.

INSERT INTO care_plan_templates (code, name, description, icd10_codes, default_requirements) VALUES
('hypertension_rpm', 'Hypertension remote monitoring',
 'Home blood pressure twice daily; alerts on sustained elevation and on hypertensive crisis.',
 '{I10}',
 '[
   {"vital_type": "systolic_bp", "warning_low": 90, "critical_low": 80, "warning_high": 140, "critical_high": 180,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240,
    "expected_per_day": 2, "expected_times": ["08:00", "20:00"], "expected_window_minutes": 120},
   {"vital_type": "diastolic_bp", "warning_low": 50, "critical_low": 40, "warning_high": 90, "critical_high": 120,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240},
   {"vital_type": "heart_rate", "warning_low": 50, "critical_low": 40, "warning_high": 110, "critical_high": 130,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240}
 ]'),
('heart_failure_rpm', 'Heart failure remote monitoring',
 'Daily morning weight with rapid-gain alerts, blood pressure, heart rate and oxygen saturation.',
 '{I50.9}',
 '[
   {"vital_type": "body_weight", "trend_window_hours": 24, "trend_delta": 0.9, "cooldown_minutes": 720,
    "expected_per_day": 1, "expected_times": ["07:30"], "expected_window_minutes": 180},
   {"vital_type": "systolic_bp", "warning_low": 90, "critical_low": 80, "warning_high": 140, "critical_high": 180,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240,
    "expected_per_day": 2, "expected_times": ["08:00", "20:00"], "expected_window_minutes": 120},
   {"vital_type": "diastolic_bp", "warning_low": 50, "critical_low": 40, "warning_high": 90, "critical_high": 120,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240},
   {"vital_type": "heart_rate", "warning_low": 50, "critical_low": 40, "warning_high": 110, "critical_high": 130,
    "breach_k": 3, "breach_n": 5, "sustained_minutes": 10, "hysteresis_margin": 5, "clear_count": 3,
    "cooldown_minutes": 120},
   {"vital_type": "spo2", "warning_low": 92, "critical_low": 88, "breach_k": 3, "breach_n": 5,
    "sustained_minutes": 5, "hysteresis_margin": 1, "clear_count": 3, "clear_minutes": 10, "cooldown_minutes": 60}
 ]'),
('copd_rpm', 'COPD remote monitoring',
 'Oxygen saturation, respiratory rate, heart rate and temperature to catch exacerbations early.',
 '{J44.9}',
 '[
   {"vital_type": "spo2", "warning_low": 90, "critical_low": 88, "breach_k": 3, "breach_n": 5,
    "sustained_minutes": 10, "hysteresis_margin": 1, "clear_count": 3, "clear_minutes": 15, "cooldown_minutes": 60,
    "expected_per_day": 3, "expected_times": ["08:00", "14:00", "20:00"], "expected_window_minutes": 120},
   {"vital_type": "respiratory_rate", "warning_low": 10, "critical_low": 8, "warning_high": 24, "critical_high": 30,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 2, "clear_count": 2, "cooldown_minutes": 120},
   {"vital_type": "heart_rate", "warning_low": 50, "critical_low": 40, "warning_high": 110, "critical_high": 130,
    "breach_k": 3, "breach_n": 5, "sustained_minutes": 10, "hysteresis_margin": 5, "clear_count": 3,
    "cooldown_minutes": 120},
   {"vital_type": "body_temperature", "warning_low": 35.5, "critical_low": 35.0, "warning_high": 38.0,
    "critical_high": 39.0, "hysteresis_margin": 0.3, "clear_count": 2, "cooldown_minutes": 240}
 ]'),
('diabetes_rpm', 'Diabetes remote monitoring',
 'Blood glucose four times daily with hypo- and hyperglycemia alerts, blood pressure and weight.',
 '{E11.9}',
 '[
   {"vital_type": "blood_glucose", "warning_low": 70, "critical_low": 54, "warning_high": 250, "critical_high": 400,
    "hysteresis_margin": 10, "clear_count": 1, "cooldown_minutes": 60,
    "expected_per_day": 4, "expected_times": ["07:00", "12:00", "17:00", "21:00"], "expected_window_minutes": 90},
   {"vital_type": "systolic_bp", "warning_low": 90, "critical_low": 80, "warning_high": 140, "critical_high": 180,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240,
    "expected_per_day": 1, "expected_times": ["08:00"], "expected_window_minutes": 180},
   {"vital_type": "diastolic_bp", "warning_low": 50, "critical_low": 40, "warning_high": 90, "critical_high": 120,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240},
   {"vital_type": "heart_rate", "warning_low": 50, "critical_low": 40, "warning_high": 110, "critical_high": 130,
    "breach_k": 2, "breach_n": 3, "hysteresis_margin": 5, "clear_count": 2, "cooldown_minutes": 240},
   {"vital_type": "body_weight", "trend_window_hours": 168, "trend_delta": 2.3, "cooldown_minutes": 1440,
    "expected_per_day": 1, "expected_times": ["07:30"], "expected_window_minutes": 180}
 ]');

-- Which vitals each kind of device measures (the seed and the simulators pair devices with requirements by it).
CREATE TABLE device_kind_vitals (
    kind            device_kind NOT NULL,
    vital_type_id   smallint NOT NULL REFERENCES vital_types (id),
    PRIMARY KEY (kind, vital_type_id)
);
INSERT INTO device_kind_vitals (kind, vital_type_id) VALUES
    ('bp_cuff', 2), ('bp_cuff', 3), ('bp_cuff', 1),
    ('pulse_oximeter', 4), ('pulse_oximeter', 1),
    ('scale', 7),
    ('glucometer', 8),
    ('thermometer', 6),
    ('respiratory_monitor', 5);

GRANT SELECT ON device_kind_vitals TO {{ingest}}, {{processor}}, {{app}};
