-- Least privilege for the two roles controld's runtime login switches to.
--
-- Each grant below matches a statement in controld/*.c (the file is
-- named); what no statement uses is revoked, so that an injected
-- statement can do no more than the daemon's own SQL. In particular:
--   * nobody but the owner may UPDATE api_keys.key_hash (rotation
--     inserts a new row and revokes the old one: api_keys.c);
--   * audit_logs is append-only for spendpol_system (ingest.c) and
--     read-only for spendpol_app (api_audit.c);
--   * DELETE only where a statement deletes.
--
-- The statements run in one block that warns instead of failing: on an
-- external database whose migrations run as a role that does not own the
-- tables, the grants cannot change and controld still starts (its start
-- check then reports what the runtime role can do).

DO $$
BEGIN
    -- no table privilege the daemon never uses, for either role
    REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public
        FROM spendpol_app, spendpol_system;
    REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
    -- the change marker, a counter: snapshot.c polls it on a bare
    -- connection, outside any SET ROLE, so the login role reads it itself
    GRANT SELECT ON state_version TO PUBLIC;

    -- orgs: read by both; tenants change their settings (api_org.c);
    -- the default org is inserted by 001, by the owner
    REVOKE INSERT, UPDATE, DELETE ON orgs FROM spendpol_system;

    -- api_keys: column-level UPDATE only.
    --   app:    revoke, rotate (active, revoked_at), PATCH (name, limits,
    --           attribution_override): api_keys.c
    --   system: bootstrap re-activates the admin key (active, revoked_at,
    --           scopes): api_keys.c cd_admin_ensure
    -- A table-level REVOKE also drops every column grant.
    REVOKE UPDATE, DELETE ON api_keys FROM spendpol_app, spendpol_system;
    GRANT UPDATE (active, revoked_at, name, rpm_limit, tpm_limit,
                  attribution_override) ON api_keys TO spendpol_app;
    GRANT UPDATE (active, revoked_at, scopes) ON api_keys
        TO spendpol_system;

    -- providers, model_aliases, agents, budgets, org_allowed_endpoints:
    -- written through the admin API (spendpol_app) only; the snapshot,
    -- spend and ingest paths read them
    REVOKE INSERT, UPDATE, DELETE ON providers, model_aliases, agents,
        budgets, org_allowed_endpoints FROM spendpol_system;
    -- api_org.c replaces the list: DELETE and INSERT, never UPDATE
    REVOKE UPDATE ON org_allowed_endpoints FROM spendpol_app;

    -- agent_events: appended by api_agents.c (app)
    REVOKE INSERT ON agent_events FROM spendpol_system;
    REVOKE USAGE ON SEQUENCE agent_events_id_seq FROM spendpol_system;

    -- audit_logs: ingest.c inserts (ON CONFLICT DO NOTHING); nothing
    -- updates or deletes a row
    REVOKE UPDATE, DELETE ON audit_logs FROM spendpol_system;
    REVOKE INSERT, UPDATE, DELETE ON audit_logs FROM spendpol_app;

    -- spend totals: ingest.c upserts, nothing deletes
    REVOKE DELETE ON budget_spend, budget_node_spend, budget_model_spend,
        journal_nodes FROM spendpol_system;

    -- delivery jobs: alert_jobs.c inserts and updates, never deletes
    REVOKE DELETE ON alert_delivery_jobs FROM spendpol_system;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'least-privilege grants not applied (% is not the '
        'tables'' owner): %', current_user, SQLERRM;
END
$$;

-- Functions: the SECURITY DEFINER trigger and the period helpers are
-- the owner's; nobody else needs to call the trigger function.
DO $$
BEGIN
    REVOKE ALL ON FUNCTION spendpol_bump_state_version() FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not revoke EXECUTE on spendpol_bump_state_version '
        'from PUBLIC: %', SQLERRM;
END
$$;
