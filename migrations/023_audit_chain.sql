-- Tamper evidence (issue 15, docs/compliance.md): each audit row carries a
-- hash chained to the previous row of its organisation, computed by
-- controld's ingest in the row's own transaction (controld/ingest_load.c,
-- libspendpol/sp_chain.c):
--
--   chain_seq       1, 2, 3, ... per organisation, in ingest (commit) order
--   prev_hash       row_hash of the organisation's row chain_seq - 1
--                   (32 zero bytes for the first row)
--   row_hash        SHA-256(prev_hash || body digest || subject_digest),
--                   sp_chain.h
--   subject_salt    16 random bytes; with the subject fields (client_addr,
--   subject_digest  trace_id, span_id, parent_id) gives subject_digest.
--                   Erasure clears the subject fields and the salt and
--                   keeps the digest, so the chain still verifies and the
--                   erased values cannot be guessed back from it.
--   erased_at       when the subject fields were erased
--
-- Rows ingested before this migration have no chain (chain_seq NULL).
--
-- audit_chain_heads is each organisation's last link. Ingest takes
-- spendpol_chain_lock(org) for each organisation of a batch, in org id
-- order, reads the head, links the batch's rows and moves the head in
-- the same transaction; anything that needs a consistent cut of an
-- organisation's chain (chargeback finalize, compliance verify) takes
-- the same lock. A transaction-scoped advisory lock needs no table
-- privilege, so both roles may take it.

ALTER TABLE audit_logs
    ADD COLUMN IF NOT EXISTS chain_seq bigint,
    ADD COLUMN IF NOT EXISTS prev_hash bytea,
    ADD COLUMN IF NOT EXISTS row_hash bytea,
    ADD COLUMN IF NOT EXISTS subject_salt bytea,
    ADD COLUMN IF NOT EXISTS subject_digest bytea,
    ADD COLUMN IF NOT EXISTS erased_at timestamptz;

CREATE TABLE IF NOT EXISTS audit_chain_heads (
    org_id      text PRIMARY KEY,
    seq         bigint NOT NULL CHECK (seq >= 0),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

GRANT SELECT ON audit_chain_heads TO spendpol_app;
GRANT SELECT, INSERT, UPDATE ON audit_chain_heads TO spendpol_system;

ALTER TABLE audit_chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS audit_chain_heads_app ON audit_chain_heads;
CREATE POLICY audit_chain_heads_app ON audit_chain_heads TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true));
DROP POLICY IF EXISTS audit_chain_heads_system ON audit_chain_heads;
CREATE POLICY audit_chain_heads_system ON audit_chain_heads
    TO spendpol_system USING (true) WITH CHECK (true);

-- the organisation's chain lock, held to the end of the transaction
CREATE OR REPLACE FUNCTION spendpol_chain_lock(org text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('spendpol_chain'), hashtext(org));
$$;
