-- Organisation prices take effect at an instant (PUT /pricing with an
-- RFC 3339 effective_from), so effective_from becomes a timestamptz; the
-- list-price dates already stored become midnight UTC of their day.
--
-- Alerts: one row per condition an organisation should act on, raised by
-- controld (journal ingest, later budgets and rules). While an alert is
-- open its dedupe_key is unique in the organisation, so a condition seen
-- a thousand times is one alert whose details count the occurrences.

DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND table_name = 'model_prices'
           AND column_name = 'effective_from') = 'date' THEN
        ALTER TABLE model_prices ALTER COLUMN effective_from
            TYPE timestamptz USING effective_from::timestamp AT TIME ZONE 'UTC';
    END IF;
END
$$;

-- No foreign key to orgs: like audit_logs, ingest must never stall on it.
CREATE TABLE IF NOT EXISTS alerts (
    id               text PRIMARY KEY CHECK (id ~ '^alr_[0-9a-f]{24}$'),
    org_id           text NOT NULL,
    type             text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,63}$'),
    state            text NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'acknowledged')),
    severity         text NOT NULL
                     CHECK (severity IN ('info', 'warning', 'critical')),
    message          text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    dedupe_key       text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    CHECK ((state = 'acknowledged') = (acknowledged_at IS NOT NULL))
);

CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_dedupe
    ON alerts (org_id, dedupe_key)
    WHERE state = 'open' AND dedupe_key IS NOT NULL;

CREATE INDEX IF NOT EXISTS alerts_org_created
    ON alerts (org_id, created_at DESC, id DESC);

-- a tenant reads its alerts and may only acknowledge them
GRANT SELECT ON alerts TO spendpol_app;
GRANT UPDATE (state, acknowledged_at, acknowledged_by) ON alerts
    TO spendpol_app;
GRANT SELECT, INSERT, UPDATE ON alerts TO spendpol_system;

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS alerts_app ON alerts;
CREATE POLICY alerts_app ON alerts TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS alerts_system ON alerts;
CREATE POLICY alerts_system ON alerts TO spendpol_system
    USING (true) WITH CHECK (true);
