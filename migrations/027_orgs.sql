-- Organisations (issue 15 item 5, docs/organisations.md).
--
-- A third key scope, operator: the deployment's operator creates and
-- lists organisations (POST/GET /orgs, controld/api_orgs.c). Only an
-- operator key may create, rotate or revoke a key with that scope
-- (api_keys.c). The scope never reaches the proxy: the snapshot carries
-- proxy and admin only.
--
-- The operator's routes run as spendpol_system, which sees every
-- organisation: they insert the organisation and its first admin key in
-- one transaction, so an organisation never exists without a way in.
-- Everything else an organisation owns is written through the admin API
-- as spendpol_app, fenced by row-level security to spendpol.org_id.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conname = 'api_keys_scopes_check'
                  AND conrelid = 'api_keys'::regclass) THEN
        ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
    END IF;

    ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
        CHECK (scopes <@ ARRAY['proxy', 'admin', 'operator']::text[]);
END
$$;

-- An upgraded deployment's bootstrap key (and its rotations, which keep
-- name and scopes) becomes the operator: until now the API served one
-- organisation, whose admins ran the whole deployment anyway.
UPDATE api_keys SET scopes = scopes || ARRAY['operator']
 WHERE org_id = 'org_default' AND name = 'bootstrap admin' AND active
   AND 'admin' = ANY (scopes) AND NOT 'operator' = ANY (scopes);

-- 014 took INSERT on orgs from spendpol_system; POST /orgs needs the two
-- columns it sets (the settings keep their defaults, as org_default's)
DO $$
BEGIN
    GRANT INSERT (id, name) ON orgs TO spendpol_system;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant INSERT on orgs to spendpol_system '
        '(POST /orgs will fail): %', SQLERRM;
END
$$;

-- The tables without an organisation column are controld's own
-- bookkeeping (where ingest stopped in each journal and egress log, each
-- node's journal epoch). spendpol_app holds no privilege on them; with
-- row-level security forced and a policy for spendpol_system only, a
-- grant added by mistake still shows a tenant no row. state_version
-- stays as it is: a counter read by the login role outside any SET ROLE
-- and bumped by a SECURITY DEFINER trigger; it holds nothing of a
-- tenant's.
DO $$
DECLARE
    t  text;
BEGIN
    FOREACH t IN ARRAY ARRAY['journal_offsets', 'journal_nodes',
                             'egress_offsets']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_system', t);
        EXECUTE format('CREATE POLICY %I ON %I TO spendpol_system'
                       ' USING (true) WITH CHECK (true)', t || '_system', t);
    END LOOP;
END
$$;
