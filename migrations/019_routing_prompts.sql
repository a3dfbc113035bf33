-- Routing rules and versioned prompt templates (issue 13; contracts in
-- libspendpol/sp_route.h and sp_template.h).
--
-- routing_rules: /routing/rules (api_routing.c). rule holds the whole
-- rule as sp_route_validate() accepted it (without id, name, priority and
-- enabled, which are columns); the snapshot carries an organisation's
-- enabled rules, priority ascending then creation, as one JSON array
-- (SP_TABLE_ROUTES).
--
-- prompts, prompt_versions, prompt_labels: /prompts (api_prompts.c). A
-- version is immutable once written: spendpol_app may only INSERT
-- versions, and a trigger refuses UPDATE and DELETE for every role but
-- the owner (which deletes them with their template, by cascade). A label
-- names one version of its template. The snapshot carries one record per
-- template (SP_TABLE_TEMPLATES).
--
-- orgs.route_skip_forbidden: X-Spendpol-Route: skip is ignored
-- (SP_ORG_ROUTE_SKIP_FORBIDDEN). api_keys.require_template: a request of
-- the key without X-Spendpol-Template gets 403 (SP_KEY_TEMPLATE_REQUIRED).
--
-- Each table bumps state_version, so a change republishes the snapshot.

CREATE TABLE IF NOT EXISTS routing_rules (
    id          text PRIMARY KEY CHECK (id ~ '^rr_[0-9a-f]{24}$'),
    org_id      text NOT NULL REFERENCES orgs (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    priority    integer NOT NULL DEFAULT 100,
    enabled     boolean NOT NULL DEFAULT true,
    rule        jsonb NOT NULL CHECK (jsonb_typeof(rule) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS routing_rules_org_order
    ON routing_rules (org_id, priority, created_at, id);

CREATE TABLE IF NOT EXISTS prompts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       text NOT NULL REFERENCES orgs (id),
    slug         text NOT NULL
                 CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT ''
                 CHECK (length(description) <= 2000),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (org_id, slug)
);

CREATE TABLE IF NOT EXISTS prompt_versions (
    prompt_id   uuid NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    org_id      text NOT NULL REFERENCES orgs (id),
    version     integer NOT NULL CHECK (version >= 1),
    body        jsonb NOT NULL CHECK (jsonb_typeof(body) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by  text,
    PRIMARY KEY (prompt_id, version)
);

CREATE TABLE IF NOT EXISTS prompt_labels (
    prompt_id   uuid NOT NULL,
    org_id      text NOT NULL REFERENCES orgs (id),
    label       text NOT NULL
                CHECK (label ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    version     integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (prompt_id, label),
    FOREIGN KEY (prompt_id, version)
        REFERENCES prompt_versions (prompt_id, version) ON DELETE CASCADE
);

ALTER TABLE orgs ADD COLUMN IF NOT EXISTS route_skip_forbidden boolean
    NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS require_template boolean
    NOT NULL DEFAULT false;


-- Versions are history: spend is grouped by template version, so what a
-- version said must never change under it.
CREATE OR REPLACE FUNCTION spendpol_prompt_version_immutable()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- the cascade of a template's deletion (by the owner) may remove them
    IF TG_OP = 'DELETE' AND pg_trigger_depth() > 1 THEN
        RETURN OLD;
    END IF;

    RAISE EXCEPTION 'prompt versions are immutable'
        USING ERRCODE = 'restrict_violation';
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'prompt_versions_immutable'
                      AND tgrelid = 'prompt_versions'::regclass) THEN
        CREATE TRIGGER prompt_versions_immutable
            BEFORE UPDATE OR DELETE ON prompt_versions
            FOR EACH ROW EXECUTE FUNCTION spendpol_prompt_version_immutable();
    END IF;
END
$$;


-- api_routing.c writes rules; api_prompts.c inserts templates and
-- versions and upserts and deletes labels; snapshot.c reads all of them.
GRANT SELECT, INSERT, UPDATE, DELETE ON routing_rules TO spendpol_app;
GRANT SELECT, INSERT ON prompts, prompt_versions TO spendpol_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON prompt_labels TO spendpol_app;
GRANT SELECT ON routing_rules, prompts, prompt_versions, prompt_labels
    TO spendpol_system;

DO $$
BEGIN
    REVOKE ALL ON routing_rules, prompts, prompt_versions, prompt_labels
        FROM PUBLIC;
    REVOKE ALL ON FUNCTION spendpol_prompt_version_immutable() FROM PUBLIC;
    -- api_org.c and api_keys.c set the two flags
    GRANT UPDATE (route_skip_forbidden) ON orgs TO spendpol_app;
    GRANT UPDATE (require_template) ON api_keys TO spendpol_app;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'routing and prompt grants not applied: %', SQLERRM;
END
$$;

DO $$
DECLARE
    t  text;
BEGIN
    FOREACH t IN ARRAY ARRAY['routing_rules', 'prompts', 'prompt_versions',
                             'prompt_labels']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_app', t);
        EXECUTE format('CREATE POLICY %I ON %I TO spendpol_app'
                       ' USING (org_id = current_setting(''spendpol.org_id'','
                       ' true)) WITH CHECK (org_id = current_setting('
                       '''spendpol.org_id'', true))', t || '_app', t);
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_system', t);
        EXECUTE format('CREATE POLICY %I ON %I TO spendpol_system'
                       ' USING (true)', t || '_system', t);

        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                        WHERE tgname = t || '_bump_state_version'
                          AND tgrelid = t::regclass) THEN
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR '
                           'DELETE OR TRUNCATE ON %I FOR EACH STATEMENT '
                           'EXECUTE FUNCTION spendpol_bump_state_version()',
                           t || '_bump_state_version', t);
        END IF;
    END LOOP;
END
$$;
