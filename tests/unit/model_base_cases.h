/*
 * The undated base model rule, as cases: { name, model, covered }, where
 * covered says name is model or model's undated base model. The C rule
 * (sp_price_base_model, test_lib_price.c) and the SQL one
 * (spendpol_model_covers, tests/integration/pricing-agree.test.mjs, which
 * reads this file) must both answer every case; one case per line.
 */

{ "gpt-4o", "gpt-4o", 1 },
{ "gpt-4o", "gpt-4o-2024-08-06", 1 },
{ "gpt-4o", "gpt-4o-20240806", 1 },
{ "gpt-4o", "gpt-4o-mini", 0 },
{ "gpt-4o", "gpt-4o-mini-2024-07-18", 0 },
{ "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 1 },
{ "claude-3-5-haiku", "claude-3-5-haiku-20241022", 1 },
{ "gpt-4o", "gpt-4o-2024-8-06", 0 },
{ "gpt-4o", "gpt-4o-2024_08_06", 0 },
{ "gpt-4o", "gpt-4o-2024080", 0 },
{ "gpt-4o", "gpt-4o-202408061", 0 },
{ "gpt-4o", "gpt-4o-2024-08-06-x", 0 },
{ "gpt-4o", "gpt-4o2024-08-06", 0 },
{ "gpt-4o", "gpt-4o--2024-08-06", 0 },
{ "gpt-4o-", "gpt-4o--2024-08-06", 1 },
{ "gpt-3.5-turbo", "gpt-3.5-turbo-0125", 0 },
{ "o1", "o1-2024-12-17", 1 },
{ "*", "*-20240806", 1 },
{ "gpt-4o", "GPT-4O-2024-08-06", 0 },
{ "x", "x-9999-99-99", 1 },
{ "gpt-4o-2024", "gpt-4o-2024-08-06", 0 },
