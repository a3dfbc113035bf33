-- Organisation settings the proxy enforces, and model aliases (an Azure
-- deployment name -> the model it runs, for pricing). Both travel in the
-- policy snapshot.

ALTER TABLE orgs ADD COLUMN IF NOT EXISTS refuse_unpriced boolean
    NOT NULL DEFAULT false;
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS updated_at timestamptz
    NOT NULL DEFAULT clock_timestamp();

-- orgs_app (002) already limits a tenant to its own row
GRANT UPDATE (refuse_unpriced, updated_at) ON orgs TO spendpol_app;

CREATE TABLE IF NOT EXISTS model_aliases (
    org_id      text NOT NULL,
    provider    text NOT NULL,
    alias       text NOT NULL CHECK (length(alias) BETWEEN 1 AND 200),
    model       text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, provider, alias),
    FOREIGN KEY (org_id, provider) REFERENCES providers (org_id, name)
        ON DELETE CASCADE
);

GRANT SELECT, INSERT, UPDATE, DELETE ON model_aliases
    TO spendpol_app, spendpol_system;

ALTER TABLE model_aliases ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_aliases FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS model_aliases_app ON model_aliases;
CREATE POLICY model_aliases_app ON model_aliases TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS model_aliases_system ON model_aliases;
CREATE POLICY model_aliases_system ON model_aliases TO spendpol_system
    USING (true) WITH CHECK (true);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'model_aliases_bump_state_version'
                      AND tgrelid = 'model_aliases'::regclass) THEN
        CREATE TRIGGER model_aliases_bump_state_version
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON model_aliases
            FOR EACH STATEMENT
            EXECUTE FUNCTION spendpol_bump_state_version();
    END IF;
END
$$;
