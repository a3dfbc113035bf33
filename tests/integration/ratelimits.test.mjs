// Rate limits: requests and tokens per minute per key, agent and
// organisation, set through the admin API (POST/PATCH /api-keys,
// POST/PATCH /agents, PATCH /org), published in the snapshot and enforced by the proxy: 429 with
// Retry-After and OpenAI's x-ratelimit-* headers (the SDK's
// RateLimitError).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useStack, sleep, waitFor } from './lib/stack.mjs';

const s = useStack();

const header = (h, name) => (typeof h?.get === 'function' ? h.get(name) : h?.[name]) ?? null;

async function ask(key, maxTokens = 5) {
  try {
    const { response } = await s.client(key, { maxRetries: 0 }).chat.completions
      .create({ model: 'gpt-4o-mini', max_tokens: maxTokens, messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    return { status: response.status };
  } catch (e) {
    return { status: e.status, code: e.code, error: e };
  }
}

// the proxy counts in one-minute windows aligned to the clock: start a
// test early enough in a window that it ends in the same one
async function freshWindow(needSeconds = 20) {
  const into = (Date.now() % 60000) / 1000;
  if (into > 60 - needSeconds) await sleep(60000 - (Date.now() % 60000) + 200);
}

test('rate_limits are validated, stored and returned', async () => {
  const bad = await s.api('POST', '/api-keys', { body: { name: 'x', rate_limits: { requests_per_minute: -1 } } });
  assert.equal(bad.status, 422, bad.text);
  assert.equal(bad.json.error.field, 'rate_limits.requests_per_minute');
  const typ = await s.api('POST', '/api-keys', { body: { name: 'x', rate_limits: { tokens_per_minute: '5' } } });
  assert.equal(typ.status, 400, typ.text);
  assert.equal(typ.json.error.field, 'rate_limits.tokens_per_minute');
  const unknown = await s.api('POST', '/api-keys', { body: { name: 'x', rate_limits: { rpm: 5 } } });
  assert.equal(unknown.status, 400, unknown.text);
  assert.equal(unknown.json.error.field, 'rate_limits');

  const plain = await s.createKey({}, { wait: false });
  assert.deepEqual(plain.rate_limits, { requests_per_minute: 0, tokens_per_minute: 0 });

  const k = await s.createKey({ rate_limits: { requests_per_minute: 7, tokens_per_minute: 9000 } }, { wait: false });
  assert.deepEqual(k.rate_limits, { requests_per_minute: 7, tokens_per_minute: 9000 });
  const got = await s.api('GET', `/api-keys/${k.id}`);
  assert.deepEqual(got.json.rate_limits, { requests_per_minute: 7, tokens_per_minute: 9000 });

  // PATCH changes only what it names
  const p = await s.api('PATCH', `/api-keys/${k.id}`, { body: { rate_limits: { tokens_per_minute: 0 } } });
  assert.equal(p.status, 200, p.text);
  assert.deepEqual(p.json.rate_limits, { requests_per_minute: 7, tokens_per_minute: 0 });

  // rotation keeps the limits
  const rotated = await s.api('POST', `/api-keys/${k.id}/rotate`);
  assert.equal(rotated.status, 201, rotated.text);
  assert.deepEqual(rotated.json.rate_limits, { requests_per_minute: 7, tokens_per_minute: 0 });

  const missing = await s.api('PATCH', '/api-keys/key_000000000000000000000000', { body: { name: 'y' } });
  assert.equal(missing.status, 404, missing.text);
});

test('requests_per_minute 3: the fourth call in the minute is a RateLimitError', async () => {
  await freshWindow();
  const { key } = await s.createKey({ rate_limits: { requests_per_minute: 3 } });
  for (let i = 0; i < 3; i++) assert.equal((await ask(key)).status, 200, `call ${i + 1}`);
  const r = await ask(key);
  assert.equal(r.status, 429);
  assert.ok(r.error instanceof OpenAI.RateLimitError, String(r.error));
  assert.equal(header(r.error.headers, 'x-ratelimit-limit-requests'), '3');
  const retry = Number(header(r.error.headers, 'retry-after'));
  assert.ok(retry >= 1 && retry <= 60, `retry-after ${retry}`);
});

test('tokens_per_minute: refused once the window\'s tokens are used', async () => {
  await freshWindow();
  const { key } = await s.createKey({ rate_limits: { tokens_per_minute: 1000 } });
  let admitted = 0;
  let refused = null;
  for (let i = 0; i < 20 && !refused; i++) {
    const r = await ask(key, 200);
    if (r.status === 200) admitted++;
    else refused = r;
  }
  assert.ok(refused, 'a call refused within 20');
  assert.ok(admitted >= 1 && admitted <= 5, `admitted ${admitted}`);
  assert.equal(refused.status, 429);
  assert.ok(refused.error instanceof OpenAI.RateLimitError);
  assert.equal(header(refused.error.headers, 'x-ratelimit-limit-tokens'), '1000');
  assert.ok(header(refused.error.headers, 'retry-after'));
});

test('a PATCH raising the limit takes effect within about a second', async () => {
  await freshWindow();
  const created = await s.createKey({ rate_limits: { requests_per_minute: 1 } });
  assert.equal((await ask(created.key)).status, 200);
  assert.equal((await ask(created.key)).status, 429);
  const p = await s.api('PATCH', `/api-keys/${created.id}`, { body: { rate_limits: { requests_per_minute: 100 } } });
  assert.equal(p.status, 200, p.text);
  const at = Date.now();
  await waitFor(async () => (await ask(created.key)).status === 200, { timeout: 3000, interval: 50, message: 'the raised limit' });
  assert.ok(Date.now() - at < 1500, `took ${Date.now() - at} ms`);
});

test('an agent\'s limit applies across all of its keys', async () => {
  const bad = await s.api('POST', '/agents', { body: { name: 'x', rate_limits: { requests_per_minute: 1.5 } } });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.error.field, 'rate_limits.requests_per_minute');

  const created = await s.api('POST', '/agents', { body: { name: 'batch', rate_limits: { requests_per_minute: 3 } } });
  assert.equal(created.status, 201, created.text);
  assert.deepEqual(created.json.rate_limits, { requests_per_minute: 3, tokens_per_minute: 0 });
  const agent = created.json;

  await freshWindow();
  const one = await s.createKey({ agent_id: agent.id });
  const two = await s.createKey({ agent_id: agent.id });
  const other = await s.createKey();
  const got = [];
  for (const k of [one.key, two.key, one.key, two.key, one.key]) got.push(await ask(k));
  assert.deepEqual(got.map((r) => r.status), [200, 200, 200, 429, 429]);
  assert.ok(got[3].error instanceof OpenAI.RateLimitError);
  assert.equal(header(got[3].error.headers, 'x-ratelimit-limit-requests'), '3');
  assert.equal(header(got[3].error.headers, 'x-ratelimit-remaining-requests'), '0');
  // a key of no agent is not held by it
  assert.equal((await ask(other.key)).status, 200);

  // PATCH names only what changes; raising the limit lets the agent on
  const p = await s.api('PATCH', `/agents/${agent.id}`, { body: { rate_limits: { requests_per_minute: 100 } } });
  assert.equal(p.status, 200, p.text);
  assert.deepEqual(p.json.rate_limits, { requests_per_minute: 100, tokens_per_minute: 0 });
  assert.equal(p.json.name, 'batch');
  await waitFor(async () => (await ask(two.key)).status === 200, { timeout: 3000, interval: 50, message: 'the raised agent limit' });
  const listed = await s.api('GET', '/agents');
  assert.deepEqual(listed.json.data.find((x) => x.id === agent.id).rate_limits, { requests_per_minute: 100, tokens_per_minute: 0 });
});

test('an organisation limit applies across its keys', async () => {
  await freshWindow();
  const a = await s.createKey();
  const b = await s.createKey();
  const set = await s.api('PATCH', '/org', { body: { rate_limits: { requests_per_minute: 4 } } });
  assert.equal(set.status, 200, set.text);
  assert.deepEqual(set.json.rate_limits, { requests_per_minute: 4, tokens_per_minute: 0 });
  assert.deepEqual((await s.api('GET', '/org')).json.rate_limits, { requests_per_minute: 4, tokens_per_minute: 0 });
  try {
    // wait for the snapshot, then for a fresh window to count from zero
    await waitFor(async () => (await ask(a.key)).status === 429, { timeout: 5000, interval: 100, message: 'the org limit' });
    await sleep(60000 - (Date.now() % 60000) + 200);
    const got = [];
    for (const k of [a.key, b.key, a.key, b.key, a.key, b.key]) got.push(await ask(k));
    assert.deepEqual(got.map((r) => r.status), [200, 200, 200, 200, 429, 429]);
    assert.equal(header(got[4].error.headers, 'x-ratelimit-limit-requests'), '4');
  } finally {
    const reset = await s.api('PATCH', '/org', { body: { rate_limits: null } });
    assert.equal(reset.status, 200, reset.text);
    assert.deepEqual(reset.json.rate_limits, { requests_per_minute: 0, tokens_per_minute: 0 });
  }
});
