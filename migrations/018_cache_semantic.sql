-- The semantic cache's settings (issue 12, libspendpol/sp_cache.h): an
-- organisation's embeddings endpoint and how close a stored prompt must
-- be, on its cache_config row (GET/PUT /cache/config, api_cache.c). The
-- snapshot carries them in the organisation's record (v9).
--
-- similarity_threshold_ppm: similarity_threshold x 1e6, an integer so
-- that what the API stores is what the module compares, bit for bit.
-- embedding_provider and embedding_model: NULL until set. Mode
-- 'semantic' needs both (cache_config_semantic_embedding): a row is never
-- a half-configured semantic cache, whatever writes it. The CHECKs are
-- the admin API's ranges; snapshot readers check them again.
--
-- Existing rows take the defaults; a constant default is a catalogue
-- change, no rewrite of the table.

ALTER TABLE cache_config
    ADD COLUMN IF NOT EXISTS similarity_threshold_ppm integer NOT NULL
        DEFAULT 950000
        CHECK (similarity_threshold_ppm BETWEEN 500000 AND 1000000),
    ADD COLUMN IF NOT EXISTS embedding_provider text
        CHECK (embedding_provider IN ('openai', 'azure', 'google',
                                      'cohere', 'mistral')),
    ADD COLUMN IF NOT EXISTS embedding_model text
        CHECK (length(embedding_model) BETWEEN 1 AND 127
               AND embedding_model ~ '^[!-~]+$'),
    ADD COLUMN IF NOT EXISTS embed_system_prompt boolean NOT NULL
        DEFAULT false,
    ADD COLUMN IF NOT EXISTS embedding_timeout_ms integer NOT NULL
        DEFAULT 1000
        CHECK (embedding_timeout_ms BETWEEN 50 AND 30000),
    ADD COLUMN IF NOT EXISTS max_vectors integer NOT NULL DEFAULT 10000
        CHECK (max_vectors BETWEEN 1 AND 100000);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'cache_config_semantic_embedding'
                      AND conrelid = 'cache_config'::regclass) THEN
        ALTER TABLE cache_config ADD CONSTRAINT
            cache_config_semantic_embedding
            CHECK (mode <> 'semantic'
                   OR (embedding_provider IS NOT NULL
                       AND embedding_model IS NOT NULL));
    END IF;
END
$$;
