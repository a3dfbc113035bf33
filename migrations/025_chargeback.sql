-- Chargeback (issue 15, docs/chargeback.md): an organisation's spend over
-- a period [starts_at, ends_at), per group (department, project, API key
-- or agent), provider and model, summed from audit_logs in SQL
-- (controld/api_chargeback.c).
--
-- An open period's figures are computed when asked. Finalizing takes the
-- organisation's chain lock (023), so no ingest transaction is half-way
-- through its rows, records the chain head as finalized_seq and stores
-- the figures in chargeback_lines: the rows of the period with chain_seq
-- <= finalized_seq (and the unchained rows from before 023).
--
-- A row ingested later (chain_seq > finalized_seq) whose created_at falls
-- in a finalized period is late: it is booked as an adjustment of the
-- organisation's next open period (the earliest open one starting at or
-- after the finalized period's end), stored with that period when it is
-- finalized in turn (kind 'adjustment', original_period_id the period the
-- row belongs to). A late row of period P is thereby frozen once the
-- chain head it was given is covered by the finalized_seq of a period
-- holding adjustments of P, and every nano-dollar lands exactly once.
--
-- Finalized periods and their lines never change: controld answers 409,
-- the trigger below refuses the same at the database, and the tenant
-- role may only insert lines.

CREATE TABLE IF NOT EXISTS chargeback_periods (
    id             text PRIMARY KEY CHECK (id ~ '^cbp_[0-9a-f]{24}$'),
    org_id         text NOT NULL,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    group_by       text NOT NULL CHECK (group_by IN ('department',
                       'project', 'api_key', 'agent')),
    status         text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'finalized')),
    finalized_at   timestamptz,
    finalized_seq  bigint CHECK (finalized_seq >= 0),
    finalized_by   text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (ends_at > starts_at),
    CHECK (ends_at <= starts_at + interval '366 days'),
    CHECK ((status = 'finalized') = (finalized_at IS NOT NULL)),
    CHECK ((status = 'finalized') = (finalized_seq IS NOT NULL))
);

-- GET /chargeback/periods, newest first (ascending, read backwards: 015)
CREATE INDEX IF NOT EXISTS chargeback_periods_org_created
    ON chargeback_periods (org_id, created_at, id);
-- the overlap check and the next open period
CREATE INDEX IF NOT EXISTS chargeback_periods_org_starts
    ON chargeback_periods (org_id, starts_at);

-- kind 'line': a row of the period itself; 'adjustment': late rows of
-- original_period_id booked here. group_value NULL: rows without the
-- group (no department, ...).
CREATE TABLE IF NOT EXISTS chargeback_lines (
    period_id           text NOT NULL REFERENCES chargeback_periods (id),
    org_id              text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('line',
                            'adjustment')),
    original_period_id  text REFERENCES chargeback_periods (id),
    group_value         text,
    provider            text,
    model               text,
    cost_nano           bigint NOT NULL,
    input_tokens        bigint NOT NULL,
    output_tokens       bigint NOT NULL,
    requests            bigint NOT NULL CHECK (requests >= 1),
    CHECK ((kind = 'adjustment') = (original_period_id IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS chargeback_lines_period
    ON chargeback_lines (period_id);
-- the late rows of a period already frozen elsewhere
CREATE INDEX IF NOT EXISTS chargeback_lines_original
    ON chargeback_lines (original_period_id)
    WHERE original_period_id IS NOT NULL;

-- a finalized period is immutable: no UPDATE or DELETE of it, from any
-- role (controld checks first and answers 409 period_finalized)
CREATE OR REPLACE FUNCTION spendpol_chargeback_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'finalized' THEN
        RAISE EXCEPTION 'chargeback period % is finalized', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS chargeback_periods_frozen ON chargeback_periods;
CREATE TRIGGER chargeback_periods_frozen
    BEFORE UPDATE OR DELETE ON chargeback_periods
    FOR EACH ROW EXECUTE FUNCTION spendpol_chargeback_frozen();

GRANT SELECT, INSERT, UPDATE, DELETE ON chargeback_periods TO spendpol_app;
GRANT SELECT, INSERT ON chargeback_lines TO spendpol_app;
GRANT SELECT ON chargeback_periods, chargeback_lines TO spendpol_system;

ALTER TABLE chargeback_periods ENABLE ROW LEVEL SECURITY;
ALTER TABLE chargeback_periods FORCE ROW LEVEL SECURITY;
ALTER TABLE chargeback_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE chargeback_lines FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS chargeback_periods_app ON chargeback_periods;
CREATE POLICY chargeback_periods_app ON chargeback_periods TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS chargeback_periods_system ON chargeback_periods;
CREATE POLICY chargeback_periods_system ON chargeback_periods
    TO spendpol_system USING (true);

DROP POLICY IF EXISTS chargeback_lines_app ON chargeback_lines;
CREATE POLICY chargeback_lines_app ON chargeback_lines TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS chargeback_lines_system ON chargeback_lines;
CREATE POLICY chargeback_lines_system ON chargeback_lines
    TO spendpol_system USING (true);
