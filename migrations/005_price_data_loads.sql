-- Which list-price data file (migrations/data/prices.tsv) was loaded last,
-- by checksum, so an unchanged file is not re-applied at every start.

CREATE TABLE IF NOT EXISTS price_data_loads (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    rows        integer NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

GRANT SELECT, INSERT, UPDATE ON price_data_loads TO spendpol_system;
