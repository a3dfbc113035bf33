-- audit_logs partitioned by month (UTC), for ingest at COPY speed and
-- retention by dropping whole months.
--
-- Ingest (controld/ingest_load.c) COPYs each batch straight into its
-- month's partition. PostgreSQL refuses COPY FROM into a table with
-- row-level security, so the partitions have none: only the owner and
-- spendpol_system (INSERT) have any privilege on them, and tenants read
-- through the parent, whose RLS policies are those of 002. The parent
-- keeps 014's rule: spendpol_system may SELECT and INSERT, never UPDATE
-- or DELETE; spendpol_app may only SELECT.
--
-- The primary key must hold the partition key. It is (org_id, created_at,
-- id): a row read twice from the journal has the same organisation, time
-- and id, so it still collides (the dedupe path's ON CONFLICT), and the
-- same index serves the organisation's newest-first list, so audit_logs
-- keeps two indexes instead of three (each costs 3-4 us of PostgreSQL CPU
-- per COPYed row on the bench machine).

ALTER TABLE audit_logs RENAME TO audit_logs_unpartitioned;
ALTER INDEX IF EXISTS audit_logs_pkey RENAME TO audit_logs_unpartitioned_pkey;
DROP INDEX IF EXISTS audit_logs_org_created;
DROP INDEX IF EXISTS audit_logs_org_key_created;

CREATE TABLE audit_logs (
    LIKE audit_logs_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (org_id, created_at, id)
) PARTITION BY RANGE (created_at);

-- Indexes: only those a query uses, ascending and read backwards for
-- "newest first": new rows land on the rightmost leaf (PostgreSQL's fast
-- path for appends, 90%-full splits), where a DESC index puts every new
-- row on the leftmost leaf, each insert descending the tree.
--
-- The primary key (org_id, created_at, id) serves:
--   GET /audit-logs (api_audit.c, CD_PAGE_SQL): the organisation's rows
--   (RLS), ORDER BY created_at DESC, id DESC after a (created_at, id)
--   cursor;
--   the error_rate and spend_spike rules (alert_jobs.c): one
--   organisation's rows since a time;
--   a lookup of one event: its id starts with its request time in ms
--   (ngx_http_spendpol_ids: "evt_" and 12 hex digits), so
--   (org_id, created_at, id) is known from the id and probes one
--   partition.
-- GET /audit-logs?api_key_id= (api_audit.c): the same list, for one key.
CREATE INDEX audit_logs_org_key_created
    ON audit_logs (org_id, api_key_id, created_at, id);

-- The partition of the month holding at, created when absent, by the
-- owner (SECURITY DEFINER): controld calls it before loading a month's
-- first rows, and for next month ahead, so no row is ever refused.
CREATE OR REPLACE FUNCTION spendpol_audit_partition(at timestamptz)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    lo    timestamptz := date_trunc('month', at AT TIME ZONE 'UTC')
                         AT TIME ZONE 'UTC';
    name  text := 'audit_logs_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        -- two nodes creating the same month: the second waits, then sees it
        PERFORM pg_advisory_xact_lock(hashtext('spendpol_audit_partition'),
                                      hashtext(name));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_logs'
                           ' FOR VALUES FROM (%L) TO (%L)', name, lo,
                           lo + interval '1 month');
            EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', name);
            EXECUTE format('GRANT INSERT ON %I TO spendpol_system', name);
        END IF;
    END IF;
    RETURN name;
END
$$;

-- Retention: drops the partitions wholly older than keep_months months
-- before the current one (UTC); returns how many. keep_months < 1 keeps
-- everything.
CREATE OR REPLACE FUNCTION spendpol_audit_drop_months(keep_months integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    cutoff   text;
    part     record;
    dropped  integer := 0;
BEGIN
    IF keep_months IS NULL OR keep_months < 1 THEN
        RETURN 0;
    END IF;
    cutoff := 'audit_logs_p' || to_char(date_trunc('month',
                  now() AT TIME ZONE 'UTC')
                  - make_interval(months => keep_months), 'YYYYMM');
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass
          AND c.relname ~ '^audit_logs_p[0-9]{6}$' AND c.relname < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

DO $$
BEGIN
    REVOKE ALL ON FUNCTION spendpol_audit_partition(timestamptz),
        spendpol_audit_drop_months(integer) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION spendpol_audit_partition(timestamptz),
        spendpol_audit_drop_months(integer) TO spendpol_system;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant the audit partition functions: %', SQLERRM;
END
$$;

-- the rows so far, into their months; then this month and the next
SELECT spendpol_audit_partition(m)
FROM (SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')
          AT TIME ZONE 'UTC' AS m
      FROM audit_logs_unpartitioned
      UNION SELECT now() UNION SELECT now() + interval '1 month') months;

INSERT INTO audit_logs SELECT * FROM audit_logs_unpartitioned;
DROP TABLE audit_logs_unpartitioned;

-- the parent: 002's policies and 014's grants
GRANT SELECT ON audit_logs TO spendpol_app;
GRANT SELECT, INSERT ON audit_logs TO spendpol_system;
ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_logs_app ON audit_logs TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true));
CREATE POLICY audit_logs_system ON audit_logs TO spendpol_system
    USING (true) WITH CHECK (true);
