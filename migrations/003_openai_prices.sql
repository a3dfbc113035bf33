-- OpenAI list prices (org_id NULL) as nano-USD per 1M tokens:
-- USD x 1e9, so $0.15 per 1M tokens is 150000000. cached_input is NULL
-- where OpenAI offers no cached-input discount (billed as input).
-- Source: https://openai.com/api/pricing/ as of 2026-11-27.

INSERT INTO model_prices (org_id, provider, model, input_nano,
    output_nano, cached_input_nano, source_url, effective_from)
SELECT NULL, 'openai', p.model, p.input_nano::bigint, p.output_nano::bigint,
       p.cached_input_nano::bigint, 'https://openai.com/api/pricing/',
       DATE '2026-11-27'
  FROM (VALUES
    ('gpt-5',                   1250000000, 10000000000,  125000000),
    ('gpt-5-mini',               250000000,  2000000000,   25000000),
    ('gpt-5-nano',                50000000,   400000000,    5000000),
    ('gpt-4.1',                 2000000000,  8000000000,  500000000),
    ('gpt-4.1-mini',             400000000,  1600000000,  100000000),
    ('gpt-4.1-nano',             100000000,   400000000,   25000000),
    ('gpt-4o',                  2500000000, 10000000000, 1250000000),
    ('gpt-4o-mini',              150000000,   600000000,   75000000),
    ('o3',                      2000000000,  8000000000,  500000000),
    ('o4-mini',                 1100000000,  4400000000,  275000000),
    ('o3-mini',                 1100000000,  4400000000,  550000000),
    ('o1',                     15000000000, 60000000000, 7500000000),
    ('gpt-4-turbo',            10000000000, 30000000000,       NULL),
    ('gpt-3.5-turbo',            500000000,  1500000000,       NULL),
    ('text-embedding-3-small',    20000000,           0,       NULL),
    ('text-embedding-3-large',   130000000,           0,       NULL)
  ) AS p (model, input_nano, output_nano, cached_input_nano)
ON CONFLICT (org_id, provider, model, effective_from) DO NOTHING;
