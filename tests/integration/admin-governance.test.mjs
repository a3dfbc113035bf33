// The admin side of issue 9 ("governance that no key holder can get
// around"): a key's attribution_override, an organisation's
// allowed_endpoints and its "*" fallback price per provider, each through
// the admin API and into the policy snapshot the proxy maps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useStack, waitFor, assertJsonError } from './lib/stack.mjs';
import { readSnapshot as readSnapshotFile, TABLE } from './lib/snapshot.mjs';

const s = useStack();
const ORG = 'org_default';

// ---- a reader of the snapshot file (libspendpol/sp_snapshot.h, v10) ----

const KEY_ATTRIBUTION_OVERRIDE = 0x02;

const readSnapshot = () => readSnapshotFile(s.snapshotDir);

/** the flags of the key whose plaintext is key, or null when absent */
function snapshotKeyFlags(key) {
  const { buf, records } = readSnapshot();
  const hash = crypto.createHash('sha256').update(key).digest();
  for (const rec of records(TABLE.KEYS)) {
    // key_hash[32], six refs, scopes, flags
    if (buf.subarray(rec, rec + 32).equals(hash)) return buf.readUInt32LE(rec + 32 + 48 + 4);
  }
  return null;
}

/** "METHOD provider path" of every allowed endpoint of the organisation */
function snapshotEndpoints(org) {
  const { str, records } = readSnapshot();
  return records(TABLE.ENDPOINTS)
    .filter((rec) => str(rec) === org)
    .map((rec) => `${str(rec + 16)} ${str(rec + 8)} ${str(rec + 24)}`)
    .sort();
}

/** "org provider model" of every price record */
function snapshotPrices() {
  const { str, records } = readSnapshot();
  return records(TABLE.PRICES).map((rec) => `${str(rec)} ${str(rec + 8)} ${str(rec + 16)}`);
}

/** a 400/422 admin error naming field (controld's "field") and starting its message with it */
function assertFieldError(res, status, field, what) {
  const e = assertJsonError(res, status, what);
  assert.equal(e.type, 'invalid_request_error', `${what}: ${res.text}`);
  assert.equal(e.field, field, `${what}: ${res.text}`);
  assert.ok(e.message.startsWith(field), `${what}: message names ${field}: ${e.message}`);
  return e;
}

// ---- attribution_override ----------------------------------------------

test('attribution_override: set at creation, changed by PATCH, kept by rotation', async () => {
  const plain = await s.createKey({ name: 'plain', department: 'eng' });
  assert.equal(plain.attribution_override, false, 'default false');

  const shared = await s.createKey({ name: 'shared service', department: 'platform', attribution_override: true });
  assert.equal(shared.attribution_override, true);

  const got = await s.api('GET', `/api-keys/${shared.id}`);
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json.attribution_override, true);

  const list = await s.api('GET', '/api-keys?limit=1000');
  assert.equal(list.status, 200, list.text);
  const byId = new Map(list.json.data.map((k) => [k.id, k]));
  assert.equal(byId.get(shared.id).attribution_override, true);
  assert.equal(byId.get(plain.id).attribution_override, false);

  // the snapshot carries it as a key flag
  await waitFor(() => snapshotKeyFlags(shared.key) === KEY_ATTRIBUTION_OVERRIDE, { message: 'override flag published' });
  assert.equal(snapshotKeyFlags(plain.key), 0);

  // PATCH changes it, and only it
  let p = await s.api('PATCH', `/api-keys/${shared.id}`, { body: { attribution_override: false } });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.attribution_override, false);
  assert.equal(p.json.department, 'platform');
  assert.equal(p.json.name, 'shared service');
  await waitFor(() => snapshotKeyFlags(shared.key) === 0, { message: 'override flag cleared' });

  p = await s.api('PATCH', `/api-keys/${shared.id}`, { body: { name: 'renamed' } });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.attribution_override, false, 'a PATCH without it keeps it');

  p = await s.api('PATCH', `/api-keys/${plain.id}`, { body: { attribution_override: true } });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.attribution_override, true);
  assert.equal((await s.api('GET', `/api-keys/${plain.id}`)).json.attribution_override, true);

  // rotation keeps it
  const r = await s.api('POST', `/api-keys/${plain.id}/rotate`);
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.attribution_override, true);
  assert.equal(r.json.rotated_from, plain.id);
  await waitFor(() => snapshotKeyFlags(r.json.key) === KEY_ATTRIBUTION_OVERRIDE, { message: 'rotated key keeps the flag' });
  assert.equal(snapshotKeyFlags(plain.key), null, 'the old key is gone');
});

test('attribution_override of the wrong type is 400 naming the field', async () => {
  for (const value of ['true', 1, 0, null, [], {}]) {
    const c = await s.api('POST', '/api-keys', { body: { name: 'x', attribution_override: value } });
    const e = assertFieldError(c, 400, 'attribution_override', `POST ${JSON.stringify(value)}`);
    assert.equal(e.code, 'invalid_type');
    assert.match(e.message, /true or false/);
  }

  const k = await s.createKey({ name: 'typed' }, { wait: false });
  const p = await s.api('PATCH', `/api-keys/${k.id}`, { body: { attribution_override: 'yes' } });
  assertFieldError(p, 400, 'attribution_override', 'PATCH "yes"');
  assert.equal((await s.api('GET', `/api-keys/${k.id}`)).json.attribution_override, false, 'unchanged');
});

// ---- allowed_endpoints -------------------------------------------------

const BATCHES = [
  { provider: 'openai', method: 'POST', path: '/batches' },
  { provider: 'openai', method: 'GET', path: '/batches/*' },
  { provider: 'anthropic', method: 'POST', path: '/v1/messages/batches' },
];

test('allowed_endpoints: PUT /org replaces the list, GET shows it, [] clears it', async () => {
  const before = await s.api('GET', '/org');
  assert.equal(before.status, 200, before.text);
  assert.deepEqual(before.json.allowed_endpoints, []);

  const put = await s.api('PUT', '/org', { body: { allowed_endpoints: BATCHES } });
  assert.equal(put.status, 200, put.text);
  assert.deepEqual(put.json.allowed_endpoints, BATCHES, 'in the order given');

  const get = await s.api('GET', '/org');
  assert.deepEqual(get.json.allowed_endpoints, BATCHES);

  await waitFor(() => snapshotEndpoints(ORG).length === 3, { message: 'endpoints published' });
  assert.deepEqual(snapshotEndpoints(ORG), [
    'GET openai /batches/*', 'POST anthropic /v1/messages/batches', 'POST openai /batches',
  ]);

  // other settings leave the list alone
  const other = await s.api('PATCH', '/org', { body: { refuse_unpriced_models: false } });
  assert.equal(other.status, 200, other.text);
  assert.deepEqual(other.json.allowed_endpoints, BATCHES);

  // a new list replaces the whole old one
  const one = [{ provider: 'mistral', method: 'GET', path: '/v1/batch/jobs' }];
  const replaced = await s.api('PUT', '/org', { body: { allowed_endpoints: one } });
  assert.equal(replaced.status, 200, replaced.text);
  assert.deepEqual(replaced.json.allowed_endpoints, one);
  await waitFor(() => snapshotEndpoints(ORG).join() === 'GET mistral /v1/batch/jobs', { message: 'list replaced' });

  const cleared = await s.api('PUT', '/org', { body: { allowed_endpoints: [] } });
  assert.equal(cleared.status, 200, cleared.text);
  assert.deepEqual(cleared.json.allowed_endpoints, []);
  assert.deepEqual((await s.api('GET', '/org')).json.allowed_endpoints, []);
  await waitFor(() => snapshotEndpoints(ORG).length === 0, { message: 'list cleared' });
});

test('allowed_endpoints: every refusal names its entry and changes nothing', async () => {
  const ok = { provider: 'openai', method: 'POST', path: '/batches' };
  const ok2 = { provider: 'openai', method: 'GET', path: '/batches' };
  const set = await s.api('PUT', '/org', { body: { allowed_endpoints: [ok] } });
  assert.equal(set.status, 200, set.text);

  const tooMany = Array.from({ length: 65 }, (_, i) => ({ provider: 'openai', method: 'POST', path: `/x${i}` }));
  const cases = [
    [{}, 400, 'invalid_type', 'allowed_endpoints'],
    ['/batches', 400, 'invalid_type', 'allowed_endpoints'],
    [null, 400, 'invalid_type', 'allowed_endpoints'],
    [tooMany, 422, 'too_many_endpoints', 'allowed_endpoints'],
    [[ok, 'POST /files'], 400, 'invalid_type', 'allowed_endpoints[1]'],
    [[ok, { ...ok, path: '/files', model: 'x' }], 400, 'unknown_field', 'allowed_endpoints[1]'],
    [[{ method: 'POST', path: '/files' }], 422, 'missing_field', 'allowed_endpoints[0].provider'],
    [[{ provider: 'openai', path: '/files' }], 422, 'missing_field', 'allowed_endpoints[0].method'],
    [[{ provider: 'openai', method: 'POST' }], 422, 'missing_field', 'allowed_endpoints[0].path'],
    [[{ provider: 7, method: 'POST', path: '/files' }], 400, 'invalid_type', 'allowed_endpoints[0].provider'],
    [[ok, { provider: 'openrouter', method: 'POST', path: '/files' }], 422, 'unknown_provider', 'allowed_endpoints[1].provider'],
    [[ok, { provider: 'openai', method: 'post', path: '/files' }], 422, 'invalid_method', 'allowed_endpoints[1].method'],
    [[ok, { provider: 'openai', method: 'CONNECT', path: '/files' }], 422, 'invalid_method', 'allowed_endpoints[1].method'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: 'files' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: '/../chat/completions' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: '//evil.example/x' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: '/files\r\nX-Injected: yes' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: '/files%0d%0a' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, { provider: 'openai', method: 'GET', path: '/files?purpose=batch' }], 422, 'invalid_path', 'allowed_endpoints[2].path'],
    [[ok, ok2, ok], 422, 'duplicate_endpoint', 'allowed_endpoints[2]'],
  ];

  for (const [value, status, code, field] of cases) {
    const what = `allowed_endpoints ${JSON.stringify(value).slice(0, 80)}`;
    const r = await s.api('PUT', '/org', { body: { allowed_endpoints: value } });
    const e = assertFieldError(r, status, field, what);
    assert.equal(e.code, code, `${what}: ${r.text}`);
  }

  // nothing was half-written
  assert.deepEqual((await s.api('GET', '/org')).json.allowed_endpoints, [ok]);

  // the duplicate's message says which entry it repeats
  const dup = await s.api('PUT', '/org', { body: { allowed_endpoints: [ok, ok] } });
  assert.match(assertFieldError(dup, 422, 'allowed_endpoints[1]', 'duplicate').message, /repeats allowed_endpoints\[0\]/);

  const cleared = await s.api('PUT', '/org', { body: { allowed_endpoints: [] } });
  assert.equal(cleared.status, 200, cleared.text);
});

// ---- the "*" fallback price --------------------------------------------

test('PUT /pricing/openai/* sets the fallback price: listed, published, deleted', async () => {
  const put = await s.api('PUT', '/pricing/openai/*', {
    body: { input_usd_per_mtok: '5.00', output_usd_per_mtok: '20', max_output_tokens: 16384 },
  });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.json.provider, 'openai');
  assert.equal(put.json.model, '*');
  assert.equal(put.json.source, 'organization');
  assert.equal(put.json.input_usd_per_mtok, '5.000000');
  assert.equal(put.json.output_usd_per_mtok, '20.000000');
  assert.equal(put.json.max_output_tokens, 16384);
  assert.equal(put.json.in_effect, true);
  assert.equal(put.json.list_price, null, 'there is no list "*"');

  const get = await s.api('GET', '/pricing/openai/*');
  assert.equal(get.status, 200, get.text);
  assert.equal(get.json.model, '*');
  assert.equal(get.json.input_usd_per_mtok, '5.000000');

  // percent-encoded, as some clients send it
  const encoded = await s.api('GET', '/pricing/openai/%2A');
  assert.equal(encoded.status, 200, encoded.text);
  assert.equal(encoded.json.model, '*');

  for (const q of ['', '?provider=openai', '?model=*']) {
    const list = await s.api('GET', `/pricing${q}`);
    assert.equal(list.status, 200, list.text);
    const fallback = list.json.data.filter((p) => p.model === '*');
    assert.equal(fallback.length, 1, `GET /pricing${q} lists the fallback once`);
    assert.equal(fallback[0].provider, 'openai');
    assert.equal(fallback[0].source, 'organization');
    assert.equal(fallback[0].output_usd_per_mtok, '20.000000');
  }
  const anthropic = await s.api('GET', '/pricing?provider=anthropic');
  assert.equal(anthropic.json.data.filter((p) => p.model === '*').length, 0);

  // published as the organisation's price of model "*"
  await waitFor(() => snapshotPrices().includes(`${ORG} openai *`), { message: 'fallback published' });
  assert.ok(!snapshotPrices().some((p) => p.startsWith(' ') && p.endsWith(' *')), 'no list "*"');

  const del = await s.api('DELETE', '/pricing/openai/*');
  assert.equal(del.status, 204, del.text);
  const gone = await s.api('GET', '/pricing/openai/*');
  const e = assertJsonError(gone, 404, 'GET after DELETE');
  assert.match(e.message, /fallback price for openai/);
  assertJsonError(await s.api('DELETE', '/pricing/openai/*'), 404, 'DELETE twice');
  await waitFor(() => !snapshotPrices().includes(`${ORG} openai *`), { message: 'fallback unpublished' });
});

test('"*" is a model name only alone', async () => {
  const body = { input_usd_per_mtok: '1', output_usd_per_mtok: '2' };
  for (const model of ['gpt-*', '**', '*-2024-08-06', 'gpt-4o*']) {
    const r = await s.api('PUT', `/pricing/openai/${encodeURIComponent(model)}`, { body });
    const e = assertJsonError(r, 422, `PUT ${model}`);
    assert.equal(e.field, 'model');
    assert.match(e.message, /fallback/);
  }
  const list = await s.api('GET', '/pricing?model=gpt-*');
  assertJsonError(list, 422, 'GET ?model=gpt-*');

  // the fallback's body is validated like any price
  const bad = await s.api('PUT', '/pricing/openai/*', { body: { input_usd_per_mtok: '1' } });
  assert.equal(assertJsonError(bad, 422, 'no output price').field, 'output_usd_per_mtok');
  const unknown = await s.api('PUT', '/pricing/openrouter/*', { body });
  assertJsonError(unknown, 404, 'unknown provider');
});
