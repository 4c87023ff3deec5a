-- Engine states are stored compressed (zlib over processors.codec's JSON): the processors rewrite a patient's
-- state with every batch that touches it, and as jsonb the server parsed and logged every byte of it. Opaque to
-- everyone but the processors, as before.
ALTER TABLE processor_states DROP CONSTRAINT processor_states_state_check;
ALTER TABLE processor_states ALTER COLUMN state TYPE bytea USING convert_to(state::text, 'UTF8');
