-- Routing and prompt templates in the audit log (issue 13): what the
-- journal's routing and template members say (libspendpol/sp_journal.h),
-- one column each, COPYed by ingest (controld/ingest_load.c).
--
--   routed            a routing rule chose the target
--   route_rule        its id
--   attempts          upstream attempts; 1 when none fell back (also for
--                     a cache hit, which made none); at most 8, the
--                     longest fallback chain (SP_ROUTE_MAX_TARGETS)
--   attempt_log       the attempts that failed, in order, comma-separated
--                     "provider/model:status" (0: no answer)
--   route_note        rules skipped and why, targets left out
--   template_id       the prompt template applied; NULL when none
--   template_version  its version; NULL when none
--
-- On the partitioned parent: PostgreSQL adds each column, its default and
-- its CHECK to every partition, those that exist and those
-- spendpol_audit_partition() creates later. Constant defaults are a
-- catalogue change, no rewrite of the stored months: rows from before
-- read routed false, attempts 1 (no fallback existed) and NULL.
--
-- The CHECKs are sp_journal_check's bounds, which ingest applies before
-- the COPY: a line outside them is refused alone and never fails a batch.

ALTER TABLE audit_logs
    ADD COLUMN IF NOT EXISTS routed boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS route_rule text,
    ADD COLUMN IF NOT EXISTS attempts smallint NOT NULL DEFAULT 1
        CHECK (attempts BETWEEN 1 AND 8),
    ADD COLUMN IF NOT EXISTS attempt_log text,
    ADD COLUMN IF NOT EXISTS route_note text,
    ADD COLUMN IF NOT EXISTS template_id uuid,
    ADD COLUMN IF NOT EXISTS template_version integer
        CHECK (template_version >= 1);

-- GET /audit-logs?template_id= (newest first, after a cursor) and
-- GET /audit-logs/summary?group_by=template (api_audit.c). Partial: only
-- templated rows pay for it at COPY time (each index costs 3-4 us of
-- PostgreSQL CPU per row, see 015); a request without a template costs
-- nothing more than before.
CREATE INDEX IF NOT EXISTS audit_logs_org_template_created
    ON audit_logs (org_id, template_id, template_version, created_at, id)
    WHERE template_id IS NOT NULL;
