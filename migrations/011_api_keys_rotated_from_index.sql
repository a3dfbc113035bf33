-- api_keys.rotated_from references api_keys (id): without an index every
-- deleted or re-keyed row makes PostgreSQL scan the whole table for rows
-- pointing at it (a 500,000-row DELETE of 1M keys did not finish in 10
-- minutes). Only rotated keys have it set, hence partial.

CREATE INDEX IF NOT EXISTS api_keys_rotated_from
    ON api_keys (rotated_from) WHERE rotated_from IS NOT NULL;
