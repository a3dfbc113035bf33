-- Policies, the PII guard score, the hallucination score and shadow AI
-- (issue 14; contracts in libspendpol/sp_policy.h, sp_pii.h and
-- sp_journal.h).
--
-- policies: /policies (api_policies.c). policy holds the whole policy as
-- sp_policy_validate() accepted it, but for id, created_at and updated_at
-- (columns); kind, scope_type, scope_value, action and enabled are read
-- from it by generated columns, so the filters of GET /policies and the
-- snapshot's query cannot disagree with what the module compiles. The
-- snapshot carries an organisation's enabled policies, oldest first, as
-- one JSON array (SP_TABLE_POLICIES); POST /policies/evaluate compiles
-- the same array (CD_POLICIES_JSON).
--
-- audit_logs: the journal's members after template_version, one column
-- each, COPYed by ingest (controld/ingest_load.c):
--
--   guard_score          the prompt's PII score, 0..1 (real); 0 when
--                        nothing was found, never NULL
--   pii_types            the types found in the prompt ({} when none)
--   policy_action        the decision: log, warn, redact or block; NULL
--                        when no policy matched
--   policy_ids           every policy matched ({} when none)
--   policy_warnings      the warn codes sent in X-Spendpol-Policy-Warning
--   hallucination_score  the answer's score in percent; NULL when it was
--                        not scored
--   shadow_key_type      a raw provider key presented instead of a
--   shadow_key_fp        Spendpol key: its kind and fingerprint (never
--   client_addr          the key), and the client's address
--
-- On the partitioned parent, as 020: constant defaults are a catalogue
-- change, and rows from before read guard score 0, empty arrays and
-- NULL. The CHECKs are sp_journal_check's bounds, which ingest applies
-- before the COPY.

CREATE TABLE IF NOT EXISTS policies (
    id           text PRIMARY KEY CHECK (id ~ '^pol_[0-9a-f]{24}$'),
    org_id       text NOT NULL REFERENCES orgs (id),
    policy       jsonb NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
    name         text GENERATED ALWAYS AS (policy ->> 'name') STORED,
    kind         text GENERATED ALWAYS AS (policy ->> 'kind') STORED,
    action       text GENERATED ALWAYS AS (policy ->> 'action') STORED,
    scope_type   text GENERATED ALWAYS AS
                 (coalesce(policy -> 'scope' ->> 'type', 'organization'))
                 STORED,
    scope_value  text GENERATED ALWAYS AS (policy -> 'scope' ->> 'value')
                 STORED,
    enabled      boolean GENERATED ALWAYS AS
                 (coalesce((policy ->> 'enabled')::boolean, true)) STORED,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS policies_org_order
    ON policies (org_id, created_at, id);

ALTER TABLE audit_logs
    ADD COLUMN IF NOT EXISTS guard_score real NOT NULL DEFAULT 0
        CHECK (guard_score >= 0 AND guard_score <= 1),
    ADD COLUMN IF NOT EXISTS pii_types text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS policy_action text
        CHECK (policy_action IN ('log', 'warn', 'redact', 'block')),
    ADD COLUMN IF NOT EXISTS policy_ids text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS policy_warnings text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS hallucination_score smallint
        CHECK (hallucination_score BETWEEN 0 AND 100),
    ADD COLUMN IF NOT EXISTS shadow_key_type text,
    ADD COLUMN IF NOT EXISTS shadow_key_fp text,
    ADD COLUMN IF NOT EXISTS client_addr text;

-- GET /audit-logs?policy_action= (newest first, after a cursor). Partial,
-- as 020's: a request no policy matched pays nothing for it at COPY time.
CREATE INDEX IF NOT EXISTS audit_logs_org_policy_created
    ON audit_logs (org_id, policy_action, created_at, id)
    WHERE policy_action IS NOT NULL;


-- api_policies.c writes policies; snapshot.c reads them.
GRANT SELECT, INSERT, UPDATE, DELETE ON policies TO spendpol_app;
GRANT SELECT ON policies TO spendpol_system;

DO $$
BEGIN
    REVOKE ALL ON policies FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'policies grants not applied: %', SQLERRM;
END
$$;

ALTER TABLE policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE policies FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS policies_app ON policies;
CREATE POLICY policies_app ON policies TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true))
    WITH CHECK (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS policies_system ON policies;
CREATE POLICY policies_system ON policies TO spendpol_system USING (true);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'policies_bump_state_version'
                      AND tgrelid = 'policies'::regclass) THEN
        CREATE TRIGGER policies_bump_state_version
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policies
            FOR EACH STATEMENT
            EXECUTE FUNCTION spendpol_bump_state_version();
    END IF;
END
$$;
