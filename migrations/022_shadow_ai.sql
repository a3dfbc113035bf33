-- Shadow AI (issue 14, docs/shadow-ai.md): clients that reach AI services
-- directly instead of through the gateway. Two sources raise the same
-- alerts:
--
--   raw_key  a call to the proxy with a raw provider key (refused 401);
--            the module journals the key's type and fingerprint, ingest
--            COPYs the row into audit_logs, and the trigger below
--            upserts the alert in that row's transaction: exactly once,
--            since a row read twice from the journal is not inserted
--            twice (ingest's dedupe) and an AFTER INSERT trigger fires
--            only for rows inserted;
--   egress   DNS and proxy logs posted to POST /shadow-ai/logs or tailed
--            from SPENDPOL_EGRESS_LOG (controld/api_shadow.c,
--            controld/shadow_tail.c), matched against the catalogue in
--            libspendpol/sp_egress.c.
--
-- One client is one alert per source and UTC day: later hits add to its
-- count, union its arrays and move last_seen; an acknowledged alert
-- stays acknowledged (the day's later hits are still counted).

-- audit_logs' shadow_key_type, shadow_key_fp and client_addr are 021's.

CREATE TABLE IF NOT EXISTS shadow_ai_alerts (
    id               text PRIMARY KEY CHECK (id ~ '^sai_[0-9a-f]{24}$'),
    org_id           text NOT NULL,
    source           text NOT NULL CHECK (source IN ('raw_key', 'egress')),
    client           text NOT NULL CHECK (length(client) BETWEEN 1 AND 64),
    day              date NOT NULL,
    services         text[] NOT NULL DEFAULT '{}',
    domains          text[] NOT NULL DEFAULT '{}',
    key_types        text[] NOT NULL DEFAULT '{}',
    key_fps          text[] NOT NULL DEFAULT '{}',
    hits             bigint NOT NULL CHECK (hits >= 1),
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged')),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'acknowledged') = (acknowledged_at IS NOT NULL)),
    CHECK (first_seen <= last_seen),
    UNIQUE (org_id, source, client, day)
);

-- GET /shadow-ai/alerts: newest last_seen first, keyset paged on
-- (last_seen, id), ascending and read backwards (see 015)
CREATE INDEX IF NOT EXISTS shadow_ai_alerts_org_last_seen
    ON shadow_ai_alerts (org_id, last_seen, id);

-- a tenant reads its alerts, posts logs (api_shadow.c upserts) and
-- acknowledges; controld's ingest (the trigger) and tail upsert too
GRANT SELECT, INSERT, UPDATE ON shadow_ai_alerts TO spendpol_app;
GRANT SELECT, INSERT, UPDATE ON shadow_ai_alerts TO spendpol_system;

ALTER TABLE shadow_ai_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE shadow_ai_alerts FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS shadow_ai_alerts_app ON shadow_ai_alerts;
CREATE POLICY shadow_ai_alerts_app ON shadow_ai_alerts TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS shadow_ai_alerts_system ON shadow_ai_alerts;
CREATE POLICY shadow_ai_alerts_system ON shadow_ai_alerts
    TO spendpol_system USING (true) WITH CHECK (true);

-- Where the tail stopped in each egress log, by device and inode as
-- journal_offsets: a rotated file is never mistaken for its successor,
-- and the offset moves in the transaction of the upserts it led to.
CREATE TABLE IF NOT EXISTS egress_offsets (
    path        text NOT NULL,
    device      bigint NOT NULL,
    inode       bigint NOT NULL,
    "offset"    bigint NOT NULL CHECK ("offset" >= 0),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (path, device, inode)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON egress_offsets TO spendpol_system;

-- The sorted union of two arrays, at most cap elements: a flood of
-- random subdomains cannot grow one row without bound.
CREATE OR REPLACE FUNCTION spendpol_shadow_union(a text[], b text[],
    cap integer)
RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(v ORDER BY v), '{}')
    FROM (SELECT DISTINCT v FROM unnest(coalesce(a, '{}') || coalesce(b, '{}'))
          AS u (v)
          WHERE v IS NOT NULL AND v <> '' ORDER BY v LIMIT cap) s
$$;

-- One client's hits of one day into its alert: inserted, or added to the
-- existing one. The id of the alert. SECURITY INVOKER: row-level
-- security fences the caller (a tenant into its own org).
CREATE OR REPLACE FUNCTION spendpol_shadow_hit(p_org text, p_source text,
    p_client text, p_day date, p_services text[], p_domains text[],
    p_key_types text[], p_key_fps text[], p_hits bigint,
    p_first timestamptz, p_last timestamptz)
RETURNS text
LANGUAGE sql AS $$
    INSERT INTO shadow_ai_alerts AS a (id, org_id, source, client, day,
        services, domains, key_types, key_fps, hits, first_seen, last_seen)
    VALUES ('sai_' || substr(md5(gen_random_uuid()::text), 1, 24), p_org,
        p_source, p_client, p_day,
        spendpol_shadow_union(p_services, NULL, 100),
        spendpol_shadow_union(p_domains, NULL, 200),
        spendpol_shadow_union(p_key_types, NULL, 100),
        spendpol_shadow_union(p_key_fps, NULL, 200),
        p_hits, p_first, p_last)
    ON CONFLICT (org_id, source, client, day) DO UPDATE SET
        services = spendpol_shadow_union(a.services, EXCLUDED.services, 100),
        domains = spendpol_shadow_union(a.domains, EXCLUDED.domains, 200),
        key_types = spendpol_shadow_union(a.key_types, EXCLUDED.key_types,
                                          100),
        key_fps = spendpol_shadow_union(a.key_fps, EXCLUDED.key_fps, 200),
        hits = a.hits + EXCLUDED.hits,
        first_seen = least(a.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(a.last_seen, EXCLUDED.last_seen),
        updated_at = clock_timestamp()
    RETURNING a.id
$$;

-- The raw-key source. The row's org (the deployment's shadow org, or the
-- key's when the module knew it); the client is the row's client_addr.
-- The key type is also the service ("openai"), so ?service= finds both
-- sources.
CREATE OR REPLACE FUNCTION spendpol_shadow_audit()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM spendpol_shadow_hit(NEW.org_id, 'raw_key',
        left(coalesce(nullif(NEW.client_addr, ''), 'unknown'), 64),
        (NEW.created_at AT TIME ZONE 'UTC')::date,
        ARRAY[NEW.shadow_key_type], '{}',
        ARRAY[NEW.shadow_key_type], ARRAY[NEW.shadow_key_fp], 1,
        NEW.created_at, NEW.created_at);
    RETURN NULL;
END
$$;

-- On the partitioned parent: PostgreSQL clones a row trigger onto every
-- partition, those that exist and those spendpol_audit_partition()
-- creates later, so ingest's COPY into a month's partition fires it. The
-- WHEN keeps it off every other row: no function call per request.
DROP TRIGGER IF EXISTS audit_logs_shadow_ai ON audit_logs;
CREATE TRIGGER audit_logs_shadow_ai
    AFTER INSERT ON audit_logs
    FOR EACH ROW
    WHEN (NEW.shadow_key_type IS NOT NULL AND NEW.shadow_key_type <> '')
    EXECUTE FUNCTION spendpol_shadow_audit();
