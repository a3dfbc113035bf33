-- The endpoint of each audited call: the method and the path after
-- /v1/{provider}, as the gateway re-encoded and forwarded it
-- ("POST /chat/completions"). Endpoints an organisation allowed beyond the
-- metered catalogue are told apart by it in the audit log.
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS endpoint text;
