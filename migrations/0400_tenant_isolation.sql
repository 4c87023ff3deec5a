-- Tenant isolation: row-level security keyed by organization on every tenant-owned table (every table with an
-- organization_id column, and organizations itself), forced for the table owner too.
--
-- The user-facing role {{app}} sees and changes only the rows of the organization set for the current transaction:
--     BEGIN; SET LOCAL rpm.organization_id = '<uuid>'; ...; COMMIT;      (or set_config(..., true))
-- A transaction-local setting ends with its transaction, so a pooled connection never carries a tenant into the
-- next one; with no setting the app sees and changes zero rows; a malformed setting is an error, never a leak.
--
-- The pipeline roles {{ingest}} and {{processor}} work across tenants by design: each gets an explicit permissive
-- policy on every tenant-owned table; grants alone decide what each may touch (least privilege).
--
-- FORCE ROW LEVEL SECURITY makes the owner's rights confined too: code that runs with the owner's rights (views,
-- SECURITY DEFINER functions) is unrestricted only in a session logged in as the owner or a pipeline role
-- (migrations, seeding, broker sync, the pipeline); reached from an app session it sees the app's tenant only.
-- Referential-integrity checks bypass row security, as always in PostgreSQL.
--
-- A migration that adds a tenant-owned table must call enable_tenant_isolation('<table>') (tests/security fails
-- for any tenant-owned table without these policies).

-- The tenant of the current transaction, or NULL. Inlined into policies (indexable: a stable expression).
CREATE FUNCTION current_organization_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('rpm.organization_id', true), '')::uuid
$$;

-- True when the session logged in as the owner or a pipeline role (migrations, seeding, broker sync, the pipeline).
-- Declared IMMUTABLE on purpose: session_user cannot change during a session (only a superuser may SET SESSION
-- AUTHORIZATION, and no project role is one), and PostgreSQL keeps no plan across sessions, so the planner may fold
-- it to a constant. Folded to true, the owner's policy disappears from the plan, and with it the security-barrier
-- ordering that would stop non-leakproof conditions (full-text @@, trigram %, ILIKE) from using their indexes.
CREATE FUNCTION session_is_trusted() RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT session_user IN ((parse_ident('{{owner}}'))[1], (parse_ident('{{ingest}}'))[1],
                            (parse_ident('{{processor}}'))[1])
$$;

-- Enables and forces row-level security on one table and (re)creates its policies; idempotent.
--   key:          the column that names the tenant (organizations: id).
--   shared_reads: rows with a NULL key are shared by every tenant, readable but not writable by the app
--                 (care_plan_templates, service_plans).
CREATE FUNCTION enable_tenant_isolation(tbl regclass, key name DEFAULT 'organization_id',
                                        shared_reads boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name;
    tenant_match constant text := format('%I = current_organization_id()', key);
BEGIN
    FOR policy IN
        SELECT polname FROM pg_policy
         WHERE polrelid = tbl AND polname IN ('app_tenant', 'app_shared_read', 'owner_scope', 'pipeline_ingest',
                                                'pipeline_processor')
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', policy, tbl);
    END LOOP;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);

    EXECUTE format('CREATE POLICY app_tenant ON %s AS PERMISSIVE FOR ALL TO {{app}} USING (%s) WITH CHECK (%s)',
                   tbl, tenant_match, tenant_match);
    IF shared_reads THEN
        EXECUTE format('CREATE POLICY app_shared_read ON %s AS PERMISSIVE FOR SELECT TO {{app}} USING (%I IS NULL)',
                       tbl, key);
    END IF;
    EXECUTE format('CREATE POLICY owner_scope ON %s AS PERMISSIVE FOR ALL TO {{owner}} '
                   'USING (session_is_trusted() OR %s) WITH CHECK (session_is_trusted() OR %s)',
                   tbl, tenant_match, tenant_match);
    -- Whether a pipeline role may touch the table at all is the grants' business; its policy is there so that a
    -- later GRANT works without revisiting row security.
    EXECUTE format('CREATE POLICY pipeline_ingest ON %s AS PERMISSIVE FOR ALL TO {{ingest}} USING (true) '
                   'WITH CHECK (true)', tbl);
    EXECUTE format('CREATE POLICY pipeline_processor ON %s AS PERMISSIVE FOR ALL TO {{processor}} USING (true) '
                   'WITH CHECK (true)', tbl);
END
$$;
REVOKE ALL ON FUNCTION enable_tenant_isolation(regclass, name, boolean) FROM PUBLIC;

-- Every tenant-owned table that exists now (partitions are covered through their parent: no role but the owner
-- has privileges on a partition itself). Idempotent; a later migration may call it to cover newer tables.
CREATE FUNCTION enable_tenant_isolation_everywhere() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tbl regclass;
    done integer := 0;
BEGIN
    PERFORM enable_tenant_isolation('public.organizations'::regclass, 'id');
    done := 1;
    FOR tbl IN
        SELECT c.oid::regclass
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY c.relname
    LOOP
        -- Shared catalogues: a NULL organization means offered to every organization.
        PERFORM enable_tenant_isolation(tbl, 'organization_id',
                                        shared_reads => tbl::text IN ('care_plan_templates', 'service_plans'));
        done := done + 1;
    END LOOP;
    RETURN done;
END
$$;
REVOKE ALL ON FUNCTION enable_tenant_isolation_everywhere() FROM PUBLIC;

SELECT enable_tenant_isolation_everywhere();

-- Log-in starts before the tenant is known: the one cross-tenant lookup the app needs, e-mail -> (user, organization),
-- after which it sets the tenant and reads the user's row under its own policy. The extra owner policy honours
-- rpm.scope = 'login' only in code running with the owner's rights (current_user), which the app reaches only
-- through this function (views keep current_user; tests/security checks which definer functions the app may call).
CREATE POLICY owner_login_lookup ON users AS PERMISSIVE FOR SELECT TO {{owner}}
    USING (current_user = (parse_ident('{{owner}}'))[1] AND current_setting('rpm.scope', true) = 'login');

CREATE FUNCTION user_login_lookup(p_email text, OUT user_id uuid, OUT organization_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    previous constant text := current_setting('rpm.scope', true);
BEGIN
    -- (A function's SET clause may not name a custom parameter for a non-superuser owner: set and restore.)
    PERFORM set_config('rpm.scope', 'login', true);
    SELECT u.id, u.organization_id INTO user_id, organization_id
      FROM users u WHERE lower(u.email) = lower(p_email) AND u.deleted_at IS NULL;
    PERFORM set_config('rpm.scope', coalesce(previous, ''), true);
END
$$;
REVOKE ALL ON FUNCTION user_login_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION user_login_lookup(text) TO {{app}};
