-- 0200's processor_context_notify() named row_data.patient_id in a CASE whose other branch served the patients
-- table; PL/pgSQL resolves both field references, so every UPDATE of a patient's timezone or deleted_at failed
-- with "record row_data has no field patient_id". Read the key through jsonb instead, which has no such trap.
CREATE OR REPLACE FUNCTION processor_context_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM pg_notify('processor_context',
                      json_build_object('patient_id', CASE WHEN TG_TABLE_NAME = 'patients' THEN row_data->>'id'
                                                           ELSE row_data->>'patient_id' END,
                                        'table', TG_TABLE_NAME)::text);
    RETURN NULL;
END
$$;
