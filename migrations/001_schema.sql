-- Spendpol schema: organisations and their keys, provider credentials,
-- audit events, prices, journal offsets and the snapshot change marker.
-- Applied by controld in one transaction; safe to run twice.

CREATE TABLE IF NOT EXISTS orgs (
    id          text PRIMARY KEY CHECK (id ~ '^org_[A-Za-z0-9_]{1,60}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

INSERT INTO orgs (id, name) VALUES ('org_default', 'default')
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS api_keys (
    id            text PRIMARY KEY CHECK (id ~ '^key_[0-9a-f]{24}$'),
    org_id        text NOT NULL REFERENCES orgs (id),
    name          text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix    text NOT NULL,
    department    text,
    project       text,
    agent_id      text,
    scopes        text[] NOT NULL DEFAULT '{proxy}'
                  CHECK (scopes <@ ARRAY['proxy', 'admin']::text[]),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at    timestamptz,
    rotated_from  text REFERENCES api_keys (id),
    CHECK (active OR revoked_at IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS api_keys_org_created
    ON api_keys (org_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS providers (
    org_id       text NOT NULL REFERENCES orgs (id),
    name         text NOT NULL CHECK (name IN ('openai', 'anthropic',
                     'google', 'azure', 'cohere', 'mistral')),
    base_url     text NOT NULL,
    api_key_enc  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, name)
);

-- No foreign key to orgs: ingest must never stall on one event, and the
-- journal is written by the proxy from the snapshot's own org ids.
CREATE TABLE IF NOT EXISTS audit_logs (
    id                  text PRIMARY KEY,
    org_id              text NOT NULL,
    created_at          timestamptz NOT NULL,
    api_key_id          text,
    provider            text,
    requested_model     text,
    model               text,
    input_tokens        bigint NOT NULL DEFAULT 0,
    output_tokens       bigint NOT NULL DEFAULT 0,
    cached_tokens       bigint NOT NULL DEFAULT 0,
    cache_write_tokens  bigint NOT NULL DEFAULT 0,
    cost_nano           bigint NOT NULL DEFAULT 0,
    status              integer NOT NULL DEFAULT 0,
    cache               text,
    stream              boolean NOT NULL DEFAULT false,
    latency_ms          bigint NOT NULL DEFAULT 0,
    gateway_us          bigint NOT NULL DEFAULT 0,
    department          text,
    project             text,
    agent_id            text,
    trace_id            text,
    span_id             text,
    parent_id           text,
    warnings            text[] NOT NULL DEFAULT '{}',
    error_code          text,
    ingested_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS audit_logs_org_created
    ON audit_logs (org_id, created_at DESC, id DESC);

CREATE INDEX IF NOT EXISTS audit_logs_org_key_created
    ON audit_logs (org_id, api_key_id, created_at DESC, id DESC);

-- org_id NULL is the public list price; an organisation's own row wins.
-- Prices are nano-USD per one million tokens.
CREATE TABLE IF NOT EXISTS model_prices (
    id                 bigserial PRIMARY KEY,
    org_id             text REFERENCES orgs (id),
    provider           text NOT NULL,
    model              text NOT NULL,
    input_nano         bigint NOT NULL CHECK (input_nano >= 0),
    output_nano        bigint NOT NULL CHECK (output_nano >= 0),
    cached_input_nano  bigint CHECK (cached_input_nano >= 0),
    cache_write_nano   bigint CHECK (cache_write_nano >= 0),
    max_output_tokens  bigint CHECK (max_output_tokens >= 0),
    source_url         text,
    effective_from     date NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE NULLS NOT DISTINCT (org_id, provider, model, effective_from)
);

-- Where ingest stopped in each journal file, named by device and inode
-- so a rotated file is never mistaken for its successor.
CREATE TABLE IF NOT EXISTS journal_offsets (
    path        text NOT NULL,
    device      bigint NOT NULL,
    inode       bigint NOT NULL,
    "offset"    bigint NOT NULL CHECK ("offset" >= 0),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (path, device, inode)
);

CREATE SEQUENCE IF NOT EXISTS snapshot_generation;

-- The change marker: one row, bumped by every write the proxy must see,
-- whichever controld node made it. Publishers poll it.
CREATE TABLE IF NOT EXISTS state_version (
    id          integer PRIMARY KEY CHECK (id = 1),
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

INSERT INTO state_version (id, version) VALUES (1, 1)
ON CONFLICT (id) DO NOTHING;

-- SECURITY DEFINER: runs as the owner, so tenant roles need no right on
-- state_version itself.
CREATE OR REPLACE FUNCTION spendpol_bump_state_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE public.state_version
       SET version = version + 1, updated_at = clock_timestamp()
     WHERE id = 1;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orgs', 'api_keys', 'providers', 'model_prices']
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
