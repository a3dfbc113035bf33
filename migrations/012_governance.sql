-- Governance that no key holder can get around (issue 9).
--
-- api_keys.attribution_override: only such a key (a shared service key)
-- may re-attribute a request with X-Spendpol-Department, -Project or
-- -Agent; any other key's own values bind. It travels in the snapshot as
-- the key flag SP_KEY_ATTRIBUTION_OVERRIDE. api_keys bumps state_version
-- (001), so a change republishes at once.
--
-- org_allowed_endpoints: endpoints an organisation lets through beyond
-- the built-in catalogue (PUT /org "allowed_endpoints", replaced as a
-- whole), in the order given. Travels in the snapshot table
-- SP_TABLE_ENDPOINTS.
--
-- model_prices: an organisation's fallback price for a provider is its
-- price of the model "*" (PUT /pricing/{provider}/*). A list price of "*"
-- would be a fallback for every organisation, so it may not exist; "*"
-- inside a longer name reads like a wildcard it is not, so new rows may
-- not have one.

ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS attribution_override boolean
    NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS org_allowed_endpoints (
    org_id      text NOT NULL REFERENCES orgs (id),
    ordinal     integer NOT NULL CHECK (ordinal BETWEEN 0 AND 63),
    provider    text NOT NULL CHECK (provider IN ('openai', 'anthropic',
                    'google', 'azure', 'cohere', 'mistral')),
    method      text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT',
                    'PATCH', 'DELETE')),
    pattern     text NOT NULL CHECK (length(pattern) BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, ordinal),
    UNIQUE (org_id, provider, method, pattern)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON org_allowed_endpoints
    TO spendpol_app, spendpol_system;

ALTER TABLE org_allowed_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_allowed_endpoints FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS org_allowed_endpoints_app ON org_allowed_endpoints;
CREATE POLICY org_allowed_endpoints_app ON org_allowed_endpoints
    TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS org_allowed_endpoints_system ON org_allowed_endpoints;
CREATE POLICY org_allowed_endpoints_system ON org_allowed_endpoints
    TO spendpol_system
    USING (true) WITH CHECK (true);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'org_allowed_endpoints_bump_state_version'
                      AND tgrelid = 'org_allowed_endpoints'::regclass) THEN
        CREATE TRIGGER org_allowed_endpoints_bump_state_version
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
            ON org_allowed_endpoints
            FOR EACH STATEMENT
            EXECUTE FUNCTION spendpol_bump_state_version();
    END IF;
END
$$;

-- the loader never wrote one; a hand-made one goes before the check
DELETE FROM model_prices WHERE org_id IS NULL AND model = '*';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'model_prices_fallback_is_an_orgs'
                      AND conrelid = 'model_prices'::regclass) THEN
        ALTER TABLE model_prices ADD CONSTRAINT
            model_prices_fallback_is_an_orgs
            CHECK (org_id IS NOT NULL OR model <> '*');
    END IF;

    -- NOT VALID: an organisation's older "gpt-*" price stays readable
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'model_prices_star_alone'
                      AND conrelid = 'model_prices'::regclass) THEN
        ALTER TABLE model_prices ADD CONSTRAINT model_prices_star_alone
            CHECK (model = '*' OR strpos(model, '*') = 0) NOT VALID;
    END IF;
END
$$;
