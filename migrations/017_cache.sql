-- The response cache's control plane (issue 12, libspendpol/sp_cache.h).
--
-- cache_config: an organisation's settings (GET/PUT /cache/config,
-- api_cache.c). No row means the defaults of sp_cache_config_default();
-- the snapshot carries them either way (SP_TABLE_ORGS).
--
-- cache_purges: DELETE /cache, one row per (organisation, provider,
-- model), '' standing for all; a purge upserts purged_at. The snapshot
-- carries every row (SP_TABLE_CACHE_PURGES): an entry stored before a
-- purge that covers it is not served. Rows are few (at most one per
-- model an organisation purged), so nothing expires them.
--
-- Both bump state_version, so a change republishes the snapshot at once
-- on the node that took it and within a poll on the others.
--
-- audit_logs.saved_nano: what a cache hit would have cost (the answer's
-- cost when it was stored), for GET /cache/stats; 0 for every other row.

CREATE TABLE IF NOT EXISTS cache_config (
    org_id              text PRIMARY KEY REFERENCES orgs (id),
    mode                text NOT NULL DEFAULT 'exact'
                        CHECK (mode IN ('off', 'exact', 'semantic')),
    ttl_seconds         integer NOT NULL DEFAULT 3600
                        CHECK (ttl_seconds BETWEEN 1 AND 2592000),
    scope               text NOT NULL DEFAULT 'org'
                        CHECK (scope IN ('org', 'api_key', 'project',
                                         'department')),
    only_deterministic  boolean NOT NULL DEFAULT true,
    max_entry_bytes     integer NOT NULL DEFAULT 1048576
                        CHECK (max_entry_bytes BETWEEN 1 AND 16777216),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS cache_purges (
    org_id      text NOT NULL REFERENCES orgs (id),
    provider    text NOT NULL DEFAULT '' CHECK (provider IN ('', 'openai',
                    'anthropic', 'google', 'azure', 'cohere', 'mistral')),
    model       text NOT NULL DEFAULT ''
                CHECK (length(model) <= 200
                       AND (provider <> '' OR model = '')),
    purged_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, provider, model)
);

-- api_cache.c upserts both (INSERT ... ON CONFLICT DO UPDATE) as
-- spendpol_app; snapshot.c reads both as spendpol_system; nothing deletes
GRANT SELECT, INSERT, UPDATE ON cache_config, cache_purges TO spendpol_app;
GRANT SELECT ON cache_config, cache_purges TO spendpol_system;

DO $$
BEGIN
    REVOKE ALL ON cache_config, cache_purges FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not revoke the cache tables from PUBLIC: %',
        SQLERRM;
END
$$;

ALTER TABLE cache_config ENABLE ROW LEVEL SECURITY;
ALTER TABLE cache_config FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS cache_config_app ON cache_config;
CREATE POLICY cache_config_app ON cache_config TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS cache_config_system ON cache_config;
CREATE POLICY cache_config_system ON cache_config TO spendpol_system
    USING (true) WITH CHECK (true);

ALTER TABLE cache_purges ENABLE ROW LEVEL SECURITY;
ALTER TABLE cache_purges FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS cache_purges_app ON cache_purges;
CREATE POLICY cache_purges_app ON cache_purges TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS cache_purges_system ON cache_purges;
CREATE POLICY cache_purges_system ON cache_purges TO spendpol_system
    USING (true) WITH CHECK (true);

DO $$
DECLARE
    t  text;
BEGIN
    FOREACH t IN ARRAY ARRAY['cache_config', 'cache_purges'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                        WHERE tgname = t || '_bump_state_version'
                          AND tgrelid = t::regclass) THEN
            EXECUTE format('CREATE TRIGGER %I'
                           ' AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE'
                           ' ON %I FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION spendpol_bump_state_version()',
                           t || '_bump_state_version', t);
        END IF;
    END LOOP;
END
$$;

-- On the partitioned parent: PostgreSQL adds the column, its default and
-- its CHECK to every partition, those that exist and those
-- spendpol_audit_partition() creates later (PARTITION OF takes the
-- parent's columns). A constant default is a catalogue change, no
-- rewrite of the stored months.
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS saved_nano bigint
    NOT NULL DEFAULT 0 CHECK (saved_nano >= 0);
