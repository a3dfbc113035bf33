-- Rate limits and alert rules.
--
-- Requests and tokens a minute per key and per organisation (0: none);
-- the proxy enforces them from the snapshot (api_keys and orgs already
-- bump state_version, so a change republishes at once).
--
-- An alert rule evaluates a condition (spend_spike, error_rate: by the
-- alert job; budget_threshold, unpriced_model: raised by ingest) and may
-- deliver every alert of its type to a webhook. alert_delivery_jobs is
-- the queue (one row per alert and rule), alert_deliveries records every
-- attempt.

ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (rpm_limit BETWEEN 0 AND 4294967295);
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (tpm_limit BETWEEN 0 AND 4294967295);
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS rpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (rpm_limit BETWEEN 0 AND 4294967295);
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS tpm_limit bigint NOT NULL
    DEFAULT 0 CHECK (tpm_limit BETWEEN 0 AND 4294967295);

GRANT UPDATE (rpm_limit, tpm_limit) ON orgs TO spendpol_app;

CREATE TABLE IF NOT EXISTS alert_rules (
    id              text PRIMARY KEY CHECK (id ~ '^arl_[0-9a-f]{24}$'),
    org_id          text NOT NULL REFERENCES orgs (id),
    type            text NOT NULL CHECK (type IN ('budget_threshold',
                        'spend_spike', 'error_rate', 'unpriced_model')),
    params          jsonb NOT NULL DEFAULT '{}',
    webhook_url     text,
    webhook_format  text CHECK (webhook_format IN ('json', 'slack')),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((webhook_url IS NULL) = (webhook_format IS NULL))
);

CREATE INDEX IF NOT EXISTS alert_rules_org_created
    ON alert_rules (org_id, created_at DESC, id DESC);

-- no foreign keys: the record of deliveries outlives a deleted rule
CREATE TABLE IF NOT EXISTS alert_delivery_jobs (
    alert_id      text NOT NULL,
    rule_id       text NOT NULL,
    org_id        text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'delivered', 'failed')),
    next_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (alert_id, rule_id)
);

CREATE INDEX IF NOT EXISTS alert_delivery_jobs_due
    ON alert_delivery_jobs (next_at) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS alert_deliveries (
    id           bigserial PRIMARY KEY,
    org_id       text NOT NULL,
    alert_id     text NOT NULL,
    rule_id      text NOT NULL,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    status_code  integer,
    error        text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS alert_deliveries_alert
    ON alert_deliveries (org_id, alert_id, at, id);

GRANT SELECT, INSERT, DELETE ON alert_rules TO spendpol_app;
GRANT SELECT ON alert_deliveries TO spendpol_app;
GRANT SELECT ON alert_rules TO spendpol_system;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_delivery_jobs
    TO spendpol_system;
GRANT SELECT, INSERT ON alert_deliveries TO spendpol_system;
GRANT USAGE, SELECT ON SEQUENCE alert_deliveries_id_seq TO spendpol_system;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alert_rules', 'alert_delivery_jobs',
                             'alert_deliveries']
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
                       ' USING (true) WITH CHECK (true)', t || '_system', t);
    END LOOP;
END
$$;
