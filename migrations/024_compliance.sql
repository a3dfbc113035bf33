-- Compliance (issue 15, docs/compliance.md): the audit chain's index and
-- anchor, erasure of a subject's identifying fields, and each
-- organisation's retention of its audit rows.
--
-- The functions below run as the owner (SECURITY DEFINER): neither
-- runtime role may UPDATE or DELETE audit_logs (014). The owner bypasses
-- row-level security (scripts/lib/stack.sh gives it BYPASSRLS, as the
-- earlier migrations that fill tenant tables need), so each function
-- names its organisation itself; the ones the tenant role may call take
-- it from the transaction's spendpol.org_id, never from an argument.

-- GET /compliance/verify reads an organisation's rows in chain order
CREATE INDEX IF NOT EXISTS audit_logs_org_chain
    ON audit_logs (org_id, chain_seq);

-- Where the chain starts once retention removed its oldest rows: the
-- last removed row's seq and row_hash. Verify of the whole chain wants
-- its first row at anchor_seq + 1 with prev_hash = anchor_hash (seq 1
-- and 32 zero bytes before any removal).
ALTER TABLE audit_chain_heads
    ADD COLUMN IF NOT EXISTS anchor_seq bigint NOT NULL DEFAULT 0
        CHECK (anchor_seq >= 0),
    ADD COLUMN IF NOT EXISTS anchor_hash bytea
        CHECK (anchor_hash IS NULL OR length(anchor_hash) = 32);

-- days of audit rows kept; NULL keeps them forever
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS audit_retention_days integer
    CHECK (audit_retention_days BETWEEN 1 AND 3650);
GRANT UPDATE (audit_retention_days) ON orgs TO spendpol_app;

-- One row per erasure: who (the admin key), when, how many rows, and the
-- selector as a fingerprint, never its value.
CREATE TABLE IF NOT EXISTS audit_erasures (
    id            text PRIMARY KEY CHECK (id ~ '^era_[0-9a-f]{32}$'),
    org_id        text NOT NULL,
    admin_key_id  text NOT NULL,
    selector      text NOT NULL
                  CHECK (selector IN ('api_key_id', 'client_addr')),
    fingerprint   text NOT NULL CHECK (fingerprint ~ '^fp_[0-9a-f]{16}$'),
    rows          bigint NOT NULL CHECK (rows >= 0),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS audit_erasures_org_created
    ON audit_erasures (org_id, created_at, id);

GRANT SELECT ON audit_erasures TO spendpol_app;

ALTER TABLE audit_erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_erasures FORCE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS audit_erasures_app ON audit_erasures;
CREATE POLICY audit_erasures_app ON audit_erasures TO spendpol_app
    USING (org_id = current_setting('spendpol.org_id', true));

-- The trim lock: retention (spendpol_audit_retain) takes it exclusive
-- before it deletes an organisation's oldest rows and moves the anchor;
-- GET /compliance/verify takes it shared. Verify needs no other lock: it
-- reads the head, then opens its cursor, whose snapshot holds every row
-- up to that head (a batch commits its rows and its head together), so
-- ingest never waits for a verify; only the start of the chain could
-- move under it, and that is what this lock keeps still.
CREATE OR REPLACE FUNCTION spendpol_chain_trim_lock(org text,
    shared boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF shared THEN
        PERFORM pg_advisory_xact_lock_shared(hashtext('spendpol_chain_trim'),
                                             hashtext(org));
    ELSE
        PERFORM pg_advisory_xact_lock(hashtext('spendpol_chain_trim'),
                                      hashtext(org));
    END IF;
END
$$;

-- The selector's fingerprint: "fp_" and 16 hex digits of SHA-256 over
-- the organisation, the selector's name and its value. Who holds the
-- value can show it was erased; the list does not show the value.
CREATE OR REPLACE FUNCTION spendpol_erasure_fingerprint(org text,
    selector text, value text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'fp_' || left(encode(sha256(convert_to(
               org || ':' || selector || ':' || value, 'UTF8')), 'hex'), 16);
$$;

-- Erasure (POST /compliance/erasure): the subject fields and the salt of
-- the transaction's organisation's rows of one key or one client
-- address set to NULL, erased_at set; row_hash and subject_digest stay,
-- so the chain still verifies (the salt gone, the digest cannot be
-- matched against guessed values). A key's name becomes "erased".
-- Exactly one of key_id and addr. Returns the erasure's id and rows.
CREATE OR REPLACE FUNCTION spendpol_audit_erase(admin_key text,
    key_id text, addr text, OUT erasure_id text, OUT erased bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    org  text := current_setting('spendpol.org_id', true);
BEGIN
    IF org IS NULL OR org = '' THEN
        RAISE EXCEPTION 'spendpol_audit_erase: no organisation';
    END IF;
    IF (key_id IS NULL) = (addr IS NULL) THEN
        RAISE EXCEPTION 'spendpol_audit_erase: one of key_id and addr';
    END IF;

    -- ingest's lock: a batch of the organisation commits before or after
    PERFORM spendpol_chain_lock(org);

    UPDATE audit_logs
       SET client_addr = NULL, trace_id = NULL, span_id = NULL,
           parent_id = NULL, subject_salt = NULL,
           erased_at = clock_timestamp()
     WHERE org_id = org AND erased_at IS NULL
       AND (key_id IS NULL OR api_key_id = key_id)
       AND (addr IS NULL OR client_addr = addr);
    GET DIAGNOSTICS erased = ROW_COUNT;

    IF key_id IS NOT NULL THEN
        UPDATE api_keys SET name = 'erased'
         WHERE org_id = org AND id = key_id;
    END IF;

    erasure_id := 'era_' || replace(gen_random_uuid()::text, '-', '');

    INSERT INTO audit_erasures (id, org_id, admin_key_id, selector,
                                fingerprint, rows)
    VALUES (erasure_id, org, admin_key,
            CASE WHEN key_id IS NOT NULL THEN 'api_key_id'
                 ELSE 'client_addr' END,
            spendpol_erasure_fingerprint(org,
                CASE WHEN key_id IS NOT NULL THEN 'api_key_id'
                     ELSE 'client_addr' END,
                coalesce(key_id, addr)),
            erased);
END
$$;

-- Retention of one organisation's rows: those older than days go, in
-- chain order. keep is the lowest chain_seq of the rows still within
-- retention; only rows below it go, so the chain loses a prefix and
-- never a link in its middle (a row ingested late, older than a kept row
-- of a lower seq, stays until that one goes). Rows without a chain go by
-- age alone. The last removed row becomes the chain's anchor. Returns
-- the rows deleted.
CREATE OR REPLACE FUNCTION spendpol_audit_retain(org text, days integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    cutoff   timestamptz;
    keep     bigint;
    last     record;
    deleted  bigint;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RETURN 0;
    END IF;
    cutoff := now() - make_interval(days => days);

    -- trim before chain: a verify holds trim (shared), ingest holds chain
    PERFORM spendpol_chain_trim_lock(org, false);
    PERFORM spendpol_chain_lock(org);

    SELECT min(chain_seq) INTO keep FROM audit_logs
     WHERE org_id = org AND created_at >= cutoff;
    IF keep IS NULL THEN
        SELECT seq + 1 INTO keep FROM audit_chain_heads WHERE org_id = org;
    END IF;
    keep := coalesce(keep, 1);

    SELECT chain_seq, row_hash INTO last FROM audit_logs
     WHERE org_id = org AND created_at < cutoff AND chain_seq < keep
     ORDER BY chain_seq DESC LIMIT 1;

    DELETE FROM audit_logs
     WHERE org_id = org AND created_at < cutoff
       AND (chain_seq IS NULL OR chain_seq < keep);
    GET DIAGNOSTICS deleted = ROW_COUNT;

    IF last.chain_seq IS NOT NULL THEN
        UPDATE audit_chain_heads
           SET anchor_seq = last.chain_seq, anchor_hash = last.row_hash
         WHERE org_id = org AND anchor_seq < last.chain_seq;
    END IF;

    RETURN deleted;
END
$$;

-- PUT /compliance/retention applies the new setting at once, to the
-- transaction's organisation only
CREATE OR REPLACE FUNCTION spendpol_audit_retain_own()
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    org  text := current_setting('spendpol.org_id', true);
BEGIN
    IF org IS NULL OR org = '' THEN
        RAISE EXCEPTION 'spendpol_audit_retain_own: no organisation';
    END IF;
    RETURN spendpol_audit_retain(org,
        (SELECT audit_retention_days FROM orgs WHERE id = org));
END
$$;

-- The periodic job (controld, with the journal ingest's hourly
-- retention): every organisation with a retention, in org id order as
-- ingest takes the chain locks; then every month partition before the
-- current one that this left empty is dropped whole, as
-- spendpol_audit_drop_months drops them (no dead rows left to vacuum).
-- A month empties when every organisation with rows in it allows.
-- Returns the rows deleted.
CREATE OR REPLACE FUNCTION spendpol_audit_retention()
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    o        record;
    part     record;
    total    bigint := 0;
    empty    boolean;
    current  text := 'audit_logs_p' || to_char(now() AT TIME ZONE 'UTC',
                                               'YYYYMM');
BEGIN
    FOR o IN SELECT id, audit_retention_days FROM orgs
              WHERE audit_retention_days IS NOT NULL
              ORDER BY id COLLATE "C"
    LOOP
        total := total + spendpol_audit_retain(o.id, o.audit_retention_days);
    END LOOP;

    IF total = 0 THEN
        RETURN 0;
    END IF;

    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass
          AND c.relname ~ '^audit_logs_p[0-9]{6}$' AND c.relname < current
        ORDER BY c.relname
    LOOP
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', part.relname)
            INTO empty;
        IF empty THEN
            EXECUTE format('DROP TABLE %I', part.relname);
        END IF;
    END LOOP;

    RETURN total;
END
$$;

-- SPENDPOL_AUDIT_RETENTION_MONTHS (015's whole-month drops), now moving
-- each organisation's anchor to the last link it drops, under the trim
-- and chain locks of every organisation (in org id order, as ingest), so
-- the chain still verifies from its new start. A row linked later than
-- the anchor but dropped with the month would show as a seq_gap; a row
-- linked earlier but kept (ingested late into a newer month) is before
-- the anchor and no longer walked.
CREATE OR REPLACE FUNCTION spendpol_audit_drop_months(keep_months integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    cutoff   text;
    before   timestamptz;
    part     record;
    o        record;
    orgs     text[] := '{}';
    found    text[];
    dropped  integer := 0;
BEGIN
    IF keep_months IS NULL OR keep_months < 1 THEN
        RETURN 0;
    END IF;
    before := (date_trunc('month', now() AT TIME ZONE 'UTC')
               - make_interval(months => keep_months)) AT TIME ZONE 'UTC';
    cutoff := 'audit_logs_p' || to_char(before AT TIME ZONE 'UTC', 'YYYYMM');
    -- every organisation with a link in the months to drop (read from
    -- the partitions, which have no row-level security), locked once and
    -- in org id order, as ingest takes them: no lock cycle with it
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass
          AND c.relname ~ '^audit_logs_p[0-9]{6}$' AND c.relname < cutoff
    LOOP
        EXECUTE format('SELECT array_agg(DISTINCT org_id) FROM %I'
                       ' WHERE chain_seq IS NOT NULL', part.relname)
            INTO found;
        orgs := orgs || coalesce(found, '{}');
    END LOOP;
    FOR o IN SELECT DISTINCT u COLLATE "C" AS org_id FROM unnest(orgs) u
              ORDER BY 1
    LOOP
        PERFORM spendpol_chain_trim_lock(o.org_id, false);
        PERFORM spendpol_chain_lock(o.org_id);
    END LOOP;
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass
          AND c.relname ~ '^audit_logs_p[0-9]{6}$' AND c.relname < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('UPDATE audit_chain_heads h'
                       '   SET anchor_seq = x.chain_seq,'
                       '       anchor_hash = x.row_hash'
                       '  FROM (SELECT DISTINCT ON (org_id) org_id,'
                       '               chain_seq, row_hash FROM %I'
                       '         WHERE chain_seq IS NOT NULL'
                       '         ORDER BY org_id, chain_seq DESC) x'
                       ' WHERE h.org_id = x.org_id'
                       '   AND h.anchor_seq < x.chain_seq', part.relname);
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

DO $$
BEGIN
    REVOKE ALL ON FUNCTION spendpol_audit_erase(text, text, text),
        spendpol_audit_retain(text, integer), spendpol_audit_retain_own(),
        spendpol_audit_retention() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION spendpol_audit_erase(text, text, text),
        spendpol_audit_retain_own() TO spendpol_app;
    GRANT EXECUTE ON FUNCTION spendpol_audit_retention()
        TO spendpol_system;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant the compliance functions: %', SQLERRM;
END
$$;
