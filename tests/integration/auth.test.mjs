// Keys on the proxy (wrong, missing, X-Spendpol-Key, revoked, rotated) and
// the admin API's own auth.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useStack, newKey, rawRequest, assertJsonError, assertPaged } from './lib/stack.mjs';
import { fixtureReply } from '../fixtures/openai-fixture.mjs';

const s = useStack();
const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Are you there?' }] };

function chat(key, headers = {}) {
  return rawRequest(`${s.openaiBaseURL}/chat/completions`, {
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body,
  });
}

test('wrong key -> 401 AuthenticationError, nothing forwarded', async () => {
  s.fixture.clear();
  await assert.rejects(s.client(newKey()).chat.completions.create(body), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, `got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, 401);
    return true;
  });
  await assert.rejects(s.client('sk-not-a-spendpol-key').chat.completions.create(body), OpenAI.AuthenticationError);
  assertJsonError(await chat(newKey()), 401, 'unknown key');
  assertJsonError(await chat('sp_key_short'), 401, 'malformed key');
  assert.equal(s.fixture.completions().length, 0, 'a request with a bad key reached the provider');
});

test('missing key -> 401 JSON error', async () => {
  assertJsonError(await chat(null), 401, 'no key');
  assertJsonError(await chat(null, { authorization: 'Basic Zm9vOmJhcg==' }), 401, 'basic auth');
});

test('key in X-Spendpol-Key works', async () => {
  const { key } = await s.createKey({ name: 'header-key' });
  s.fixture.clear();
  const r = await chat(null, { 'x-spendpol-key': key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].message.content, fixtureReply(body));
  const fwd = s.fixture.completions().at(-1);
  assert.equal(fwd.headers.authorization, 'Bearer sk-fixture-secret');
  assert.equal(fwd.headers['x-spendpol-key'], undefined, 'X-Spendpol-Key was forwarded');
});

/** statuses of n requests with key, each on a new connection (every worker gets asked) */
async function statuses(key, n = 8) {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await chat(key, { connection: 'close' })).status);
  return out;
}

test('revoked key fails with 401 within ~1 s, on every worker', async () => {
  const created = await s.createKey({ name: 'to-revoke' });
  const client = s.client(created.key);
  await client.chat.completions.create(body);
  const del = await s.api('DELETE', `/api-keys/${created.id}`);
  assert.ok(del.status >= 200 && del.status < 300, `DELETE -> ${del.status} ${del.text}`);
  const t0 = Date.now();
  await s.waitKeyRejected(created.key, 2000);
  const first = Date.now() - t0;
  // the bound is 1 s for every worker; allow some scheduling slack
  await new Promise((r) => setTimeout(r, Math.max(0, 1500 - (Date.now() - t0))));
  const after = await statuses(created.key);
  assert.deepEqual(after, after.map(() => 401), `1.5 s after revocation (first 401 after ${first} ms): ${after}`);
  await assert.rejects(client.chat.completions.create(body), OpenAI.AuthenticationError);
});

test('rotated key: old fails, new works', async () => {
  const created = await s.createKey({ name: 'to-rotate' });
  await s.client(created.key).chat.completions.create(body);
  const rot = await s.api('POST', `/api-keys/${created.id}/rotate`);
  assert.ok(rot.status === 200 || rot.status === 201, `rotate -> ${rot.status} ${rot.text}`);
  const fresh = rot.json.key;
  assert.match(fresh ?? '', /^sp_key_[0-9a-f]{48}$/);
  assert.notEqual(fresh, created.key);
  await s.waitKeyAccepted(fresh, 2000);
  await s.waitKeyRejected(created.key, 2000);
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 1500));
  const old = await statuses(created.key);
  assert.deepEqual(old, old.map(() => 401), `old key 1.5 s after rotation: ${old}`);
  const now = await statuses(fresh);
  assert.deepEqual(now, now.map(() => 200), `new key after rotation (${Date.now() - t0} ms): ${now}`);
  await assert.rejects(s.client(created.key).chat.completions.create(body), OpenAI.AuthenticationError);
  const r = await s.client(fresh).chat.completions.create(body);
  assert.equal(r.choices[0].message.content, fixtureReply(body));
});

test('admin API: 401 without a key, 403 with a proxy-only key, JSON errors', async () => {
  assertJsonError(await s.api('GET', '/api-keys', { key: null }), 401, 'no admin key');
  assertJsonError(await s.api('GET', '/api-keys', { key: newKey() }), 401, 'unknown admin key');
  const { key } = await s.createKey({ name: 'proxy-only' });
  assertJsonError(await s.api('GET', '/api-keys', { key }), 403, 'proxy key on admin API');
  assertJsonError(await s.api('POST', '/api-keys', { key, body: { name: 'x' } }), 403, 'proxy key creating keys');
  assertJsonError(await s.api('PUT', '/providers/openai', { key, body: { api_key: 'sk-evil' } }), 403, 'proxy key setting provider');
  const h = await s.api('GET', '/healthz', { key: null });
  assert.equal(h.status, 200, `/healthz -> ${h.status}`);
});

test('admin API never returns secrets', async () => {
  const p = await s.api('GET', '/providers');
  assert.equal(p.status, 200, p.text);
  assert.ok(!p.text.includes('sk-fixture-secret'), `GET /providers leaks the provider key: ${p.text}`);
  assert.ok(p.text.includes('openai'), `GET /providers lacks openai: ${p.text}`);
  const created = await s.createKey({ name: 'no-echo' });
  const one = await s.api('GET', `/api-keys/${created.id}`);
  assert.equal(one.status, 200, one.text);
  assert.ok(!one.text.includes(created.key), 'GET /api-keys/{id} returns the plaintext key');
  const list = await s.api('GET', '/api-keys');
  assert.equal(list.status, 200, list.text);
  assert.ok(!list.text.includes(created.key), 'GET /api-keys returns a plaintext key');
  assert.ok(list.text.includes(created.id));
});

test('GET /api-keys pages newest first with a cursor', async () => {
  const older = await s.createKey({ name: 'page older' }, { wait: false });
  const newer = await s.createKey({ name: 'page newer' }, { wait: false });
  assert.deepEqual(await assertPaged(s, '/api-keys'), [newer.id, older.id]);
});
