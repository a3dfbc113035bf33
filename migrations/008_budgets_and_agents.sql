-- Budgets and agents.
--
-- A budget limits what an organisation (or one key, agent, department or
-- project of it, optionally narrowed to a provider or model) spends per
-- period. Journal ingest attributes every audit row it really inserts to
-- the budgets covering it, in the batch's transaction: budget_spend (all
-- nodes), budget_node_spend (per node and nginx epoch, see sp_budget.h)
-- and budget_model_spend (for GET /budgets/{id}/spend). So spend is
-- counted exactly once, whatever crashes.
--
-- Agents group keys (api_keys.agent_id); a paused agent's keys are
-- refused by the proxy. Pause and resume are recorded in agent_events.

ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS node_id text;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS epoch bigint;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS reserved_nano bigint;

CREATE TABLE IF NOT EXISTS agents (
    id           text PRIMARY KEY CHECK (id ~ '^agt_[0-9a-f]{24}$'),
    org_id       text NOT NULL REFERENCES orgs (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text,
    state        text NOT NULL DEFAULT 'active'
                 CHECK (state IN ('active', 'paused')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS agents_org_created
    ON agents (org_id, created_at DESC, id DESC);

-- no foreign key: the record of who paused what outlives the agent
CREATE TABLE IF NOT EXISTS agent_events (
    id          bigserial PRIMARY KEY,
    org_id      text NOT NULL,
    agent_id    text NOT NULL,
    action      text NOT NULL CHECK (action IN ('created', 'updated',
                    'paused', 'resumed', 'deleted')),
    key_id      text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS agent_events_agent
    ON agent_events (org_id, agent_id, created_at, id);

CREATE TABLE IF NOT EXISTS budgets (
    id           text PRIMARY KEY CHECK (id ~ '^bud_[0-9a-f]{24}$'),
    org_id       text NOT NULL REFERENCES orgs (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope_type   text NOT NULL CHECK (scope_type IN ('organization',
                     'api_key', 'agent', 'department', 'project')),
    scope_value  text NOT NULL DEFAULT '',
    provider     text CHECK (provider IN ('openai', 'anthropic', 'google',
                     'azure', 'cohere', 'mistral')),
    model        text CHECK (length(model) BETWEEN 1 AND 200),
    limit_nano   bigint NOT NULL CHECK (limit_nano > 0),
    period       text NOT NULL CHECK (period IN ('daily', 'weekly',
                     'monthly', 'total')),
    timezone     text NOT NULL DEFAULT 'UTC',
    action       text NOT NULL DEFAULT 'block'
                 CHECK (action IN ('block', 'warn')),
    thresholds   integer[] NOT NULL DEFAULT '{50,80,100}',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((scope_type = 'organization') = (scope_value = ''))
);

CREATE INDEX IF NOT EXISTS budgets_org_created
    ON budgets (org_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS budget_spend (
    budget_id     text NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    org_id        text NOT NULL,
    period_start  timestamptz NOT NULL,
    spent_nano    bigint NOT NULL DEFAULT 0,
    requests      bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (budget_id, period_start)
);

CREATE TABLE IF NOT EXISTS budget_node_spend (
    budget_id     text NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    org_id        text NOT NULL,
    period_start  timestamptz NOT NULL,
    node_id       text NOT NULL,
    epoch         bigint NOT NULL,
    spent_nano    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start, node_id, epoch)
);

CREATE TABLE IF NOT EXISTS budget_model_spend (
    budget_id     text NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    org_id        text NOT NULL,
    period_start  timestamptz NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    spent_nano    bigint NOT NULL DEFAULT 0,
    requests      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start, provider, model)
);

-- the epoch of each node's latest ingested journal line (by its time)
CREATE TABLE IF NOT EXISTS journal_nodes (
    node_id     text PRIMARY KEY,
    epoch       bigint NOT NULL,
    last_at     timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- threshold alerts are raised once per budget, period and threshold,
-- acknowledged or not: looked up by dedupe key whatever the state
CREATE INDEX IF NOT EXISTS alerts_org_dedupe ON alerts (org_id, dedupe_key);

-- The period of a budget containing the instant at, in its time zone:
-- [start, end), end NULL for 'total' (which starts at created).
CREATE OR REPLACE FUNCTION spendpol_period_unit(period text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE period WHEN 'daily' THEN 'day' WHEN 'weekly' THEN 'week'
                       ELSE 'month' END
$$;

CREATE OR REPLACE FUNCTION spendpol_period_start(period text, tz text,
    created timestamptz, at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN period = 'total' THEN created
           ELSE date_trunc(spendpol_period_unit(period), at AT TIME ZONE tz)
                AT TIME ZONE tz END
$$;

-- computed in local time, so a day across a DST change is 23 or 25 hours
CREATE OR REPLACE FUNCTION spendpol_period_end(period text, tz text,
    at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN period = 'total' THEN NULL
           ELSE (date_trunc(spendpol_period_unit(period), at AT TIME ZONE tz)
                 + ('1 ' || spendpol_period_unit(period))::interval)
                AT TIME ZONE tz END
$$;

-- "gpt-4o" covers "gpt-4o", "gpt-4o-2024-08-06" and "gpt-4o-20240806",
-- not "gpt-4o-mini": the rule of sp_budget_covers (libspendpol)
CREATE OR REPLACE FUNCTION spendpol_model_covers(narrowing text,
    model text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT narrowing IS NULL OR narrowing = model
        OR (left(model, length(narrowing) + 1) = narrowing || '-'
            AND substr(model, length(narrowing) + 2)
                ~ '^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})$')
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON agents, budgets
    TO spendpol_app, spendpol_system;
GRANT SELECT, INSERT ON agent_events TO spendpol_app, spendpol_system;
GRANT USAGE, SELECT ON SEQUENCE agent_events_id_seq
    TO spendpol_app, spendpol_system;
GRANT SELECT ON budget_spend, budget_node_spend, budget_model_spend
    TO spendpol_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON budget_spend, budget_node_spend,
    budget_model_spend, journal_nodes TO spendpol_system;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'agent_events', 'budgets',
                             'budget_spend', 'budget_node_spend',
                             'budget_model_spend']
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

    -- the proxy sees budgets and agent states through the snapshot
    FOREACH t IN ARRAY ARRAY['agents', 'budgets']
    LOOP
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
