-- Tenancy: row-level security, forced even for the tables' owner.
--
-- spendpol_app     API requests; sees the rows of the org named by
--                  current_setting('spendpol.org_id') only.
-- spendpol_system  ingest, snapshot publisher, bootstrap, key lookup;
--                  sees every row.
--
-- controld runs every statement under SET LOCAL ROLE one of these, so
-- the policies apply even when it connects as a superuser.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spendpol_app') THEN
        CREATE ROLE spendpol_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created concurrently by another database's migration
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles
                    WHERE rolname = 'spendpol_system') THEN
        CREATE ROLE spendpol_system NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- SET ROLE needs membership unless we are a superuser.
DO $$
BEGIN
    EXECUTE format('GRANT spendpol_app, spendpol_system TO %I',
                   current_user);
EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
    RAISE WARNING 'could not grant spendpol roles to %: %', current_user,
        SQLERRM;
END
$$;

GRANT USAGE ON SCHEMA public TO spendpol_app, spendpol_system;

GRANT SELECT ON orgs TO spendpol_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys, providers
    TO spendpol_app;
GRANT SELECT ON audit_logs TO spendpol_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON model_prices TO spendpol_app;
GRANT USAGE, SELECT ON SEQUENCE model_prices_id_seq TO spendpol_app;

GRANT SELECT, INSERT, UPDATE ON orgs TO spendpol_system;
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys, providers, audit_logs,
    model_prices, journal_offsets TO spendpol_system;
GRANT USAGE, SELECT ON SEQUENCE model_prices_id_seq, snapshot_generation
    TO spendpol_system;
GRANT SELECT ON state_version TO spendpol_app, spendpol_system;

ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE providers FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
ALTER TABLE model_prices ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_prices FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS orgs_app ON orgs;
CREATE POLICY orgs_app ON orgs TO spendpol_app
    USING (id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS orgs_system ON orgs;
CREATE POLICY orgs_system ON orgs TO spendpol_system
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS api_keys_app ON api_keys;
CREATE POLICY api_keys_app ON api_keys TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS api_keys_system ON api_keys;
CREATE POLICY api_keys_system ON api_keys TO spendpol_system
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS providers_app ON providers;
CREATE POLICY providers_app ON providers TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS providers_system ON providers;
CREATE POLICY providers_system ON providers TO spendpol_system
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS audit_logs_app ON audit_logs;
CREATE POLICY audit_logs_app ON audit_logs TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS audit_logs_system ON audit_logs;
CREATE POLICY audit_logs_system ON audit_logs TO spendpol_system
    USING (true) WITH CHECK (true);

-- a tenant reads the list prices and its own, and writes only its own
DROP POLICY IF EXISTS model_prices_app_read ON model_prices;
CREATE POLICY model_prices_app_read ON model_prices FOR SELECT
    TO spendpol_app
    USING (org_id IS NULL
           OR org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS model_prices_app_write ON model_prices;
CREATE POLICY model_prices_app_write ON model_prices FOR ALL
    TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS model_prices_system ON model_prices;
CREATE POLICY model_prices_system ON model_prices TO spendpol_system
    USING (true) WITH CHECK (true);
