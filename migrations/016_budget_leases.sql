-- Leased budgets across nodes (issue 18, libspendpol/sp_lease.h).
--
-- Each node's controld holds, per blocking budget and period, a lease: the
-- most the node may settle and hold in flight in the period (a ceiling,
-- not a delta). A node holds max(its lease, its ingested spend); the
-- holdings of all nodes never pass the limit, so the nodes together
-- cannot settle more than the limit, whatever the burst. Each module
-- admits only inside its own node's lease (the spend file carries it).
--
-- spendpol_lease_grant() is the only writer: one call is one grant,
-- top-up, give-back or heartbeat of one node, serialized per budget by a
-- transaction-scoped advisory lock (so READ COMMITTED is enough). Ingest
-- takes no lock: what it adds to a node's spend stays within that node's
-- lease, which the lease already counts.

CREATE TABLE IF NOT EXISTS budget_leases (
    budget_id     text NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    org_id        text NOT NULL,
    period_start  timestamptz NOT NULL,
    node_id       text NOT NULL,
    granted_nano  bigint NOT NULL DEFAULT 0 CHECK (granted_nano >= 0),
    -- the node's own count at its last heartbeat: spend of every epoch,
    -- pending and in flight (what the node reported last)
    used_nano     bigint NOT NULL DEFAULT 0 CHECK (used_nano >= 0),
    rate_nano     bigint NOT NULL DEFAULT 0 CHECK (rate_nano >= 0),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL,
    reclaimed_at  timestamptz,
    PRIMARY KEY (budget_id, period_start, node_id)
);

-- One node's lease on one budget and period. used: the node's count now
-- (>= what it settled and holds); want: the lease it asks for (less than
-- it holds gives back, never below used nor its ingested spend). A silent
-- node's lease is never reclaimed here: only that node (its controld, once
-- its journal is ingested) or an operator (DELETE /budget-leases/{node})
-- lowers it, so its unreported spend can never add to the others'
-- (grace_ms is kept for the callers; the operator's view uses it).
-- Returns the lease granted, what the cluster can still
-- grant after it, and the nodes holding a live lease.
CREATE OR REPLACE FUNCTION spendpol_lease_grant(budget text,
    period timestamptz, node text, used bigint, want bigint, rate bigint,
    ttl_ms bigint, grace_ms bigint,
    OUT granted_nano bigint, OUT left_nano bigint, OUT live_nodes integer)
LANGUAGE plpgsql AS $$
DECLARE
    lim         bigint;
    org         text;
    others      bigint;
    mine        bigint;
    spent_here  bigint;
    now_at      timestamptz;
BEGIN
    granted_nano := 0;
    left_nano := 0;
    live_nodes := 0;

    -- every grant of this budget, whatever the period, one at a time
    PERFORM pg_advisory_xact_lock(hashtextextended(budget, 18));

    SELECT b.limit_nano, b.org_id INTO lim, org
      FROM budgets b WHERE b.id = budget;

    IF NOT FOUND THEN
        RETURN;     -- deleted: nothing to hold
    END IF;

    now_at := clock_timestamp();

    -- each other node holds its lease or its spend, whichever is larger
    SELECT coalesce(sum(greatest(coalesce(l.granted_nano, 0),
                                 coalesce(s.spent, 0))), 0)
      INTO others
      FROM (SELECT bl.node_id, bl.granted_nano FROM budget_leases bl
             WHERE bl.budget_id = budget AND bl.period_start = period
               AND bl.node_id <> node) l
      FULL JOIN (SELECT node_id, sum(spent_nano) AS spent
                   FROM budget_node_spend
                  WHERE budget_id = budget AND period_start = period
                    AND node_id <> node
                  GROUP BY node_id) s USING (node_id);

    SELECT coalesce(sum(spent_nano), 0) INTO spent_here
      FROM budget_node_spend
     WHERE budget_id = budget AND period_start = period AND node_id = node;

    mine := greatest(least(want, lim - others), used, spent_here, 0);

    INSERT INTO budget_leases AS l (budget_id, org_id, period_start, node_id,
                                    granted_nano, used_nano, rate_nano,
                                    heartbeat_at, expires_at)
    VALUES (budget, org, period, node, mine, greatest(used, 0),
            greatest(rate, 0), now_at,
            now_at + ttl_ms * interval '1 millisecond')
    ON CONFLICT (budget_id, period_start, node_id) DO UPDATE
       SET granted_nano = EXCLUDED.granted_nano,
           used_nano = EXCLUDED.used_nano,
           rate_nano = EXCLUDED.rate_nano,
           heartbeat_at = EXCLUDED.heartbeat_at,
           expires_at = EXCLUDED.expires_at,
           reclaimed_at = NULL;

    granted_nano := mine;
    left_nano := greatest(lim - others - mine, 0);

    SELECT count(*) INTO live_nodes FROM budget_leases bl
     WHERE bl.budget_id = budget AND bl.period_start = period
       AND bl.reclaimed_at IS NULL AND bl.expires_at > now_at;
END
$$;

-- An operator frees the unused leases of a node gone for good: each lease
-- of the node in an organisation falls to the node's ingested spend. What
-- the node settled and was not ingested, if its journal is ever ingested,
-- then counts on top. Returns what was released per budget and period.
CREATE OR REPLACE FUNCTION spendpol_lease_release(node text, org text,
    OUT budget_id text, OUT period_start timestamptz,
    OUT released_nano bigint)
RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    l  record;
    spent  bigint;
BEGIN
    FOR l IN SELECT bl.budget_id, bl.period_start, bl.granted_nano
               FROM budget_leases bl
              WHERE bl.node_id = node AND bl.org_id = org
              ORDER BY bl.budget_id, bl.period_start
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(l.budget_id, 18));

        SELECT coalesce(sum(s.spent_nano), 0) INTO spent
          FROM budget_node_spend s
         WHERE s.budget_id = l.budget_id AND s.period_start = l.period_start
           AND s.node_id = node;

        UPDATE budget_leases bl
           SET granted_nano = least(bl.granted_nano, spent),
               used_nano = least(bl.used_nano, spent),
               reclaimed_at = clock_timestamp()
         WHERE bl.budget_id = l.budget_id
           AND bl.period_start = l.period_start AND bl.node_id = node
        RETURNING l.granted_nano - bl.granted_nano INTO released_nano;

        budget_id := l.budget_id;
        period_start := l.period_start;
        RETURN NEXT;
    END LOOP;
END
$$;

GRANT SELECT ON budget_leases TO spendpol_app;
GRANT SELECT, INSERT, UPDATE ON budget_leases TO spendpol_system;

DO $$
BEGIN
    REVOKE ALL ON budget_leases FROM PUBLIC;
    REVOKE ALL ON FUNCTION spendpol_lease_grant(text, timestamptz, text,
        bigint, bigint, bigint, bigint, bigint) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION spendpol_lease_grant(text, timestamptz, text,
        bigint, bigint, bigint, bigint, bigint) TO spendpol_system;
    REVOKE ALL ON FUNCTION spendpol_lease_release(text, text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION spendpol_lease_release(text, text)
        TO spendpol_system;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant spendpol_lease_grant: %', SQLERRM;
END
$$;

ALTER TABLE budget_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_leases FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS budget_leases_app ON budget_leases;
CREATE POLICY budget_leases_app ON budget_leases TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS budget_leases_system ON budget_leases;
CREATE POLICY budget_leases_system ON budget_leases TO spendpol_system
    USING (true) WITH CHECK (true);
