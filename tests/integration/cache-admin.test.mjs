// The response cache's admin API (issue 12): GET/PUT /cache/config,
// DELETE /cache (purges) and GET /cache/stats, on the real stack. Every
// refusal names its field; another organisation neither sees nor changes
// this one's settings; stats count the cache outcomes of journal lines
// (appended here, as ingest.test.mjs does) in a range.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { useStack, spendpolHeaders, assertJsonError, newKey, usdToNano } from './lib/stack.mjs';

const s = useStack();

const DEFAULTS = {
  mode: 'exact', ttl_seconds: 3600, scope: 'org', only_deterministic: true, max_entry_bytes: 1048576,
  similarity_threshold: 0.95, embedding_provider: null, embedding_model: null, embed_system_prompt: false,
  embedding_timeout_ms: 1000, max_vectors: 10000,
};
const SEMANTIC = { embedding_provider: 'openai', embedding_model: 'text-embedding-3-small' };
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** one value (or rows joined by '\n') of a query run as the tables' owner */
function sql(query) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

/** a second organisation with its own admin key (the API makes none) */
function otherOrganisation() {
  const org = `org_cache_${crypto.randomBytes(4).toString('hex')}`;
  const key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'cache B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'cache B admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);
  return { org, key };
}

function fieldError(r, status, field, what) {
  const e = assertJsonError(r, status, what);
  assert.equal(e.field, field, `${what}: field in ${r.text}`);
  return e;
}

test('GET /cache/config answers the defaults before any PUT', async () => {
  const r = await s.api('GET', '/cache/config');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, DEFAULTS);
});

test('PUT /cache/config merges the fields given over the current settings', async () => {
  let r = await s.api('PUT', '/cache/config', { body: { ttl_seconds: 60 } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { ...DEFAULTS, ttl_seconds: 60 });

  r = await s.api('PUT', '/cache/config', { body: { scope: 'project', only_deterministic: false } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { ...DEFAULTS, ttl_seconds: 60, scope: 'project', only_deterministic: false });

  r = await s.api('PUT', '/cache/config', { body: { mode: 'off', max_entry_bytes: 16777216, ttl_seconds: 2592000 } });
  assert.equal(r.status, 200, r.text);
  const want = { ...DEFAULTS, mode: 'off', ttl_seconds: 2592000, scope: 'project', only_deterministic: false, max_entry_bytes: 16777216 };
  assert.deepEqual(r.json, want);
  assert.deepEqual((await s.api('GET', '/cache/config')).json, want);

  // an empty body changes nothing
  r = await s.api('PUT', '/cache/config', { body: {} });
  assert.deepEqual(r.json, want);

  r = await s.api('PUT', '/cache/config', { body: DEFAULTS });
  assert.deepEqual(r.json, DEFAULTS);
});

test('every refusal of PUT /cache/config names its field, and changes nothing', async () => {
  await s.api('PUT', '/cache/config', { body: { ttl_seconds: 120 } });
  const cases = [
    [{ mode: 'semantic' }, 422, 'embedding_model'],
    [{ mode: 'fuzzy' }, 422, 'mode'],
    [{ mode: 1 }, 400, 'mode'],
    [{ ttl_seconds: 0 }, 422, 'ttl_seconds'],
    [{ ttl_seconds: 2592001 }, 422, 'ttl_seconds'],
    [{ ttl_seconds: '60' }, 400, 'ttl_seconds'],
    [{ ttl_seconds: 1.5 }, 400, 'ttl_seconds'],
    [{ scope: 'team' }, 422, 'scope'],
    [{ scope: null }, 400, 'scope'],
    [{ only_deterministic: 'yes' }, 400, 'only_deterministic'],
    [{ max_entry_bytes: 0 }, 422, 'max_entry_bytes'],
    [{ max_entry_bytes: 16777217 }, 422, 'max_entry_bytes'],
    [{ ttl_seconds: 30, colour: 'blue' }, 400, 'colour'],
    [{ similarity_threshold: 0.49 }, 422, 'similarity_threshold'],
    [{ similarity_threshold: 1.000001 }, 422, 'similarity_threshold'],
    [{ similarity_threshold: 0.9500001 }, 422, 'similarity_threshold'],
    [{ similarity_threshold: '0.9' }, 400, 'similarity_threshold'],
    [{ similarity_threshold: null }, 400, 'similarity_threshold'],
    [{ embedding_provider: 'anthropic' }, 422, 'embedding_provider'],
    [{ embedding_provider: 'voyage' }, 422, 'embedding_provider'],
    [{ embedding_provider: 1 }, 400, 'embedding_provider'],
    [{ embedding_model: '' }, 422, 'embedding_model'],
    [{ embedding_model: 'text embedding' }, 422, 'embedding_model'],
    [{ embedding_model: 'mod\u00e8le' }, 422, 'embedding_model'],
    [{ embedding_model: 'm'.repeat(128) }, 422, 'embedding_model'],
    [{ embedding_model: ['m'] }, 400, 'embedding_model'],
    [{ embed_system_prompt: 'yes' }, 400, 'embed_system_prompt'],
    [{ embedding_timeout_ms: 49 }, 422, 'embedding_timeout_ms'],
    [{ embedding_timeout_ms: 30001 }, 422, 'embedding_timeout_ms'],
    [{ embedding_timeout_ms: 100.5 }, 400, 'embedding_timeout_ms'],
    [{ max_vectors: 0 }, 422, 'max_vectors'],
    [{ max_vectors: 100001 }, 422, 'max_vectors'],
    [{ max_vectors: '10' }, 400, 'max_vectors'],
    // a valid member beside a bad one is not written either
    [{ ...SEMANTIC, max_vectors: 0 }, 422, 'max_vectors'],
  ];
  for (const [body, status, field] of cases) {
    fieldError(await s.api('PUT', '/cache/config', { body }), status, field, JSON.stringify(body));
  }
  const e = fieldError(await s.api('PUT', '/cache/config', { body: { embedding_provider: 'anthropic' } }), 422,
    'embedding_provider', 'anthropic');
  assert.match(e.message, /^anthropic has no embeddings endpoint/);
  assertJsonError(await s.api('PUT', '/cache/config', { body: '{"ttl_seconds": ' }), 400, 'malformed JSON');
  assertJsonError(await s.api('PUT', '/cache/config', { body: { ttl_seconds: 30 }, key: null }), 401, 'no key');

  assert.deepEqual((await s.api('GET', '/cache/config')).json, { ...DEFAULTS, ttl_seconds: 120 });
  await s.api('PUT', '/cache/config', { body: DEFAULTS });
});

test('mode semantic needs an embeddings provider and model, in the same PUT or set before', async () => {
  await s.api('PUT', '/cache/config', { body: DEFAULTS });
  try {
    // neither: the model is named, the message names both
    let e = fieldError(await s.api('PUT', '/cache/config', { body: { mode: 'semantic' } }), 422, 'embedding_model',
      'semantic alone');
    assert.equal(e.code, 'missing_field');
    assert.match(e.message, /embedding_provider and embedding_model/);
    e = fieldError(await s.api('PUT', '/cache/config', { body: { mode: 'semantic', embedding_model: 'm' } }), 422,
      'embedding_provider', 'semantic without a provider');
    assert.equal(e.code, 'missing_field');
    fieldError(await s.api('PUT', '/cache/config', { body: { mode: 'semantic', embedding_provider: 'openai' } }), 422,
      'embedding_model', 'semantic without a model');
    assert.deepEqual((await s.api('GET', '/cache/config')).json, DEFAULTS, 'refused PUTs wrote nothing');

    // both in the same PUT
    let r = await s.api('PUT', '/cache/config', {
      body: { mode: 'semantic', ...SEMANTIC, similarity_threshold: 0.912345, embed_system_prompt: true,
              embedding_timeout_ms: 250, max_vectors: 100000 },
    });
    assert.equal(r.status, 200, r.text);
    const want = { ...DEFAULTS, mode: 'semantic', ...SEMANTIC, similarity_threshold: 0.912345,
                   embed_system_prompt: true, embedding_timeout_ms: 250, max_vectors: 100000 };
    assert.deepEqual(r.json, want);
    assert.deepEqual((await s.api('GET', '/cache/config')).json, want);
    assert.equal(sql(`SELECT similarity_threshold_ppm || ' ' || embedding_provider || ' ' || embedding_model
      FROM cache_config WHERE org_id = 'org_default'`), '912345 openai text-embedding-3-small');

    // a partial PUT keeps them; unsetting one while semantic is refused
    r = await s.api('PUT', '/cache/config', { body: { ttl_seconds: 90, similarity_threshold: 1 } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { ...want, ttl_seconds: 90, similarity_threshold: 1 });
    fieldError(await s.api('PUT', '/cache/config', { body: { embedding_provider: null } }), 422,
      'embedding_provider', 'unsetting the provider of a semantic cache');
    fieldError(await s.api('PUT', '/cache/config', { body: { embedding_model: null } }), 422,
      'embedding_model', 'unsetting the model of a semantic cache');

    // leaving semantic and unsetting them in one PUT; then semantic again
    // with the settings stored before
    r = await s.api('PUT', '/cache/config', { body: { mode: 'exact', embedding_model: null } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.json.mode, r.json.embedding_provider, r.json.embedding_model], ['exact', 'openai', null]);
    fieldError(await s.api('PUT', '/cache/config', { body: { mode: 'semantic' } }), 422, 'embedding_model',
      'semantic with only the provider stored');
    r = await s.api('PUT', '/cache/config', { body: { embedding_provider: 'cohere', embedding_model: 'embed-english-v3.0' } });
    assert.equal(r.status, 200, r.text);
    r = await s.api('PUT', '/cache/config', { body: { mode: 'semantic' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.json.mode, r.json.embedding_provider, r.json.embedding_model],
      ['semantic', 'cohere', 'embed-english-v3.0']);

    // every provider with an embeddings endpoint is taken
    for (const provider of ['openai', 'azure', 'google', 'cohere', 'mistral']) {
      r = await s.api('PUT', '/cache/config', { body: { embedding_provider: provider } });
      assert.equal(r.status, 200, `${provider}: ${r.text}`);
      assert.equal(r.json.embedding_provider, provider);
    }
  } finally {
    const r = await s.api('PUT', '/cache/config', { body: DEFAULTS });
    assert.equal(r.status, 200, r.text);
  }
  assert.deepEqual((await s.api('GET', '/cache/config')).json, DEFAULTS, 'GET\'s body PUT back restores the defaults');
});

test('the database refuses a half-configured semantic cache, whatever writes it', async () => {
  assert.throws(() => sql(`UPDATE cache_config SET mode = 'semantic', embedding_provider = NULL
    WHERE org_id = 'org_default'; INSERT INTO cache_config (org_id, mode) VALUES ('org_default', 'semantic')
    ON CONFLICT (org_id) DO UPDATE SET mode = 'semantic'`), /cache_config_semantic_embedding/);
  assert.throws(() => sql(`INSERT INTO cache_config (org_id, embedding_provider) VALUES ('org_default', 'anthropic')
    ON CONFLICT (org_id) DO UPDATE SET embedding_provider = 'anthropic'`), /check constraint/);
  assert.deepEqual((await s.api('GET', '/cache/config')).json, DEFAULTS);
});

test('another organisation neither sees nor changes this one\'s settings', async () => {
  const b = otherOrganisation();
  await s.api('PUT', '/cache/config', { body: { ttl_seconds: 777, scope: 'api_key' } });

  let r = await s.api('GET', '/cache/config', { key: b.key });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, DEFAULTS, 'a fresh organisation has the defaults, semantic ones included');

  r = await s.api('PUT', '/cache/config', { key: b.key, body: { mode: 'off' } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { ...DEFAULTS, mode: 'off' });

  assert.deepEqual((await s.api('GET', '/cache/config')).json, { ...DEFAULTS, ttl_seconds: 777, scope: 'api_key' });
  assert.equal(sql(`SELECT string_agg(org_id || ':' || mode || ':' || ttl_seconds, ',' ORDER BY org_id)
    FROM cache_config WHERE org_id IN ('org_default', '${b.org}')`), `${b.org}:off:3600,org_default:exact:777`);

  // purges are the organisation's own too
  r = await s.api('DELETE', '/cache', { key: b.key });
  assert.equal(r.status, 200, r.text);
  assert.equal(sql(`SELECT count(*) FROM cache_purges WHERE org_id = '${b.org}'`), '1');
  await s.api('PUT', '/cache/config', { body: DEFAULTS });
});

test('DELETE /cache purges the organisation, a provider or one model; a later purge moves purged_at', async () => {
  let r = await s.api('DELETE', '/cache');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.purged.provider, null);
  assert.equal(r.json.purged.model, null);
  assert.match(r.json.purged.purged_at, RFC3339);
  const first = r.json.purged.purged_at;

  r = await s.api('DELETE', '/cache?provider=openai');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual({ ...r.json.purged, purged_at: 'x' }, { provider: 'openai', model: null, purged_at: 'x' });

  r = await s.api('DELETE', '/cache?provider=anthropic&model=claude-3-5-haiku-20241022');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.purged.model, 'claude-3-5-haiku-20241022');

  assert.equal(sql(`SELECT string_agg(provider || '/' || model, ',' ORDER BY provider, model)
    FROM cache_purges WHERE org_id = 'org_default'`), '/,anthropic/claude-3-5-haiku-20241022,openai/');

  r = await s.api('DELETE', '/cache');
  assert.ok(r.json.purged.purged_at > first, `${r.json.purged.purged_at} after ${first}`);
  assert.equal(sql(`SELECT count(*) FROM cache_purges WHERE org_id = 'org_default' AND provider = ''`), '1');
  assert.equal(sql(`SELECT to_char(purged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    FROM cache_purges WHERE org_id = 'org_default' AND provider = ''`), r.json.purged.purged_at);
});

test('DELETE /cache refusals name their field', async () => {
  let e = fieldError(await s.api('DELETE', '/cache?model=gpt-4o'), 422, 'model', 'model alone');
  assert.match(e.message, /provider/);
  e = fieldError(await s.api('DELETE', '/cache?provider=openia'), 422, 'provider', 'unknown provider');
  assert.match(e.message, /openai, anthropic, google, azure, cohere, mistral/);
  fieldError(await s.api('DELETE', '/cache?provider='), 422, 'provider', 'empty provider');
  fieldError(await s.api('DELETE', '/cache?provider=openai&model='), 422, 'model', 'empty model');
  fieldError(await s.api('DELETE', `/cache?provider=openai&model=${'m'.repeat(201)}`), 422, 'model', 'long model');
});

test('a purge bumps the change marker, so every node republishes', async () => {
  const before = Number(sql('SELECT version FROM state_version'));
  const r = await s.api('DELETE', '/cache?provider=mistral');
  assert.equal(r.status, 200, r.text);
  assert.ok(Number(sql('SELECT version FROM state_version')) > before, 'state_version bumped');
});

test('GET /cache/stats: an empty range, the default range, and its refusals', async () => {
  let r = await s.api('GET', '/cache/stats?from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, {
    from: '2001-01-01T00:00:00.000Z', to: '2001-01-02T00:00:00.000Z', hits: 0, misses: 0, skips: 0,
    hit_rate: 0, saved_usd: r.json.saved_usd, entries: r.json.entries, bytes: r.json.bytes,
    evictions: r.json.evictions, by_model: [],
  });
  assert.equal(usdToNano(r.json.saved_usd), 0n);
  for (const k of ['entries', 'bytes', 'evictions']) assert.ok(Number.isInteger(r.json[k]) && r.json[k] >= 0, k);

  r = await s.api('GET', '/cache/stats');
  assert.equal(r.status, 200, r.text);
  assert.equal(Date.parse(r.json.to) - Date.parse(r.json.from), 24 * 3600 * 1000);
  assert.ok(Math.abs(Date.parse(r.json.to) - Date.now()) < 60_000, r.json.to);

  fieldError(await s.api('GET', '/cache/stats?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z'), 422, 'from', 'from after to');
  fieldError(await s.api('GET', '/cache/stats?from=yesterday'), 400, 'from', 'bad from');
  fieldError(await s.api('GET', '/cache/stats?to=2026-13-01T00:00:00Z'), 400, 'to', 'bad to');
});

test('GET /cache/stats counts hits, misses and skips of the range by model; audit rows show saved_usd', async () => {
  // a real journal line as the template, then lines of cache outcomes
  const { key } = await s.createKey({ name: 'cache-stats' });
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'cache stats template' }],
  }).withResponse();
  const id = spendpolHeaders(response).auditId;
  await s.waitAuditRow(id);
  const line = fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${id}"`));
  assert.ok(line, `journal line of ${id}`);
  const t = JSON.parse(line);

  // a second of its own, two hours ago, so no other test's rows count
  const base = Math.floor((Date.now() - 2 * 3600 * 1000) / 1000) * 1000;
  const outcomes = [
    ['openai', 'gpt-4o-mini', 'hit', 1_000_000], ['openai', 'gpt-4o-mini', 'hit', 2_000_000],
    ['openai', 'gpt-4o-mini', 'hit', 500], ['openai', 'gpt-4o-mini', 'miss', 0],
    ['openai', 'gpt-4o-mini', 'skip', 0], ['anthropic', 'claude-3-5-haiku', 'hit', 3_000_000],
    ['anthropic', 'claude-3-5-haiku', 'miss', 0], ['openai', 'gpt-4o', 'skip', 0],
  ];
  const lines = outcomes.map(([provider, model, cache, saved], i) => ({
    ...t, id: `evt_cache${crypto.randomBytes(10).toString('hex')}`, ts_ms: base + 10 + i,
    provider, model, requested_model: model, cache, saved_nano: saved, cost_nano: cache === 'hit' ? 0 : t.cost_nano,
  }));
  fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  const rows = await s.waitAuditRows(lines.map((l) => l.id));
  const hit = rows.find((r) => r.id === lines[1].id);
  assert.equal(usdToNano(hit.saved_usd), 2_000_000n);
  assert.equal(hit.cache, 'hit');
  assert.equal(usdToNano(rows.find((r) => r.id === lines[3].id).saved_usd), 0n);

  const from = new Date(base).toISOString();
  const to = new Date(base + 1000).toISOString();
  const r = await s.api('GET', `/cache/stats?from=${from}&to=${to}`);
  assert.equal(r.status, 200, r.text);
  const st = r.json;
  assert.equal(st.from, from);
  assert.equal(st.to, to);
  assert.deepEqual([st.hits, st.misses, st.skips], [4, 2, 2]);
  assert.equal(st.hit_rate, 0.6667);
  assert.match(r.text, /"hit_rate":0\.6667,/, 'printed with 4 decimals, not 17 digits');
  assert.equal(usdToNano(st.saved_usd), 6_000_500n);
  assert.deepEqual(st.by_model.map((m) => ({ ...m, saved_usd: String(usdToNano(m.saved_usd)) })), [
    { provider: 'openai', model: 'gpt-4o-mini', hits: 3, misses: 1, skips: 1, hit_rate: 0.75, saved_usd: '3000500' },
    { provider: 'anthropic', model: 'claude-3-5-haiku', hits: 1, misses: 1, skips: 0, hit_rate: 0.5, saved_usd: '3000000' },
    { provider: 'openai', model: 'gpt-4o', hits: 0, misses: 0, skips: 1, hit_rate: 0, saved_usd: '0' },
  ]);

  // to is exclusive: a range ending at the first line's time counts nothing
  const none = await s.api('GET', `/cache/stats?from=${from}&to=${new Date(base + 10).toISOString()}`);
  assert.deepEqual([none.json.hits, none.json.misses, none.json.skips], [0, 0, 0]);

  // another organisation's stats do not count these rows
  const b = otherOrganisation();
  const other = await s.api('GET', `/cache/stats?from=${from}&to=${to}`, { key: b.key });
  assert.equal(other.status, 200, other.text);
  assert.deepEqual([other.json.hits, other.json.by_model.length], [0, 0]);
});
