-- Ingest loads each batch through a temporary table while running as
-- spendpol_system; PUBLIC has TEMPORARY by default, but a hardened
-- database may have revoked it.

DO $$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO spendpol_system',
                   current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant TEMPORARY on % to spendpol_system: %',
        current_database(), SQLERRM;
END
$$;
