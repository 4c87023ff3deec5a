-- Finding patients by name: full-text (word and prefix matches, any order) and trigram similarity (typos,
-- substrings). Names live on users; both indexes are on users so the same search serves providers too.
-- Symptoms already carry their tsvector and trigram indexes (0060).

ALTER TABLE users ADD COLUMN name_search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) STORED;
CREATE INDEX users_name_search_idx ON users USING gin (name_search);
-- The expression is the one full_name() returns: queries must use full_name(...) for the planner to match it.
CREATE FUNCTION full_name(first_name text, last_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))
$$;
CREATE INDEX users_full_name_trgm_idx ON users USING gin (full_name(first_name, last_name) gin_trgm_ops);

-- A websearch-style query to prefix terms: 'jo smi' matches "John Smith".
CREATE FUNCTION name_tsquery(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsquery('simple', string_agg(quote_literal(word) || ':*', ' & '))
      FROM regexp_split_to_table(lower(trim(query)), '[^[:alnum:]]+') AS word
     WHERE word <> ''
$$;

-- Patients of one organization whose name matches `query`, best first. Runs with the caller's rights, so
-- row-level security and grants of the caller apply.
CREATE FUNCTION search_patients(organization uuid, query text, max_results integer DEFAULT 20)
RETURNS TABLE (patient_id uuid, user_id uuid, mrn text, first_name text, last_name text, score real)
LANGUAGE sql STABLE AS $$
    SELECT p.id, u.id, p.mrn, u.first_name, u.last_name,
           greatest(ts_rank(u.name_search, name_tsquery(query)),
                    similarity(full_name(u.first_name, u.last_name), lower(query))) AS score
      FROM users u JOIN patients p ON p.user_id = u.id
     WHERE p.organization_id = organization AND p.deleted_at IS NULL AND u.deleted_at IS NULL
       AND (u.name_search @@ name_tsquery(query) OR full_name(u.first_name, u.last_name) % lower(query))
     ORDER BY score DESC, u.last_name, u.first_name
     LIMIT max_results
$$;

GRANT EXECUTE ON FUNCTION search_patients(uuid, text, integer) TO {{app}};
