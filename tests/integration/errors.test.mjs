// Bad input and bad providers get a clear JSON error, and nothing else
// breaks (the harness also fails the file on [alert]/sanitizer reports).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useStack, freePort, rawRequest, assertJsonError } from './lib/stack.mjs';
import { fixtureReply } from '../fixtures/openai-fixture.mjs';

const s = useStack();
let key;
const good = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'still alive?' }] };

function post(path, body, headers = {}) {
  return rawRequest(`${s.proxyURL}${path}`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers }, body,
  });
}

async function stillWorks() {
  const r = await s.client(key).chat.completions.create(good);
  assert.equal(r.choices[0].message.content, fixtureReply(good));
}

test('setup: a key', async () => {
  ({ key } = await s.createKey({ name: 'errors' }));
});

test('malformed JSON -> 400 naming the problem', async () => {
  const e = assertJsonError(await post('/v1/openai/chat/completions', '{"model": "gpt-4o-mini", "messages": ['), 400, 'malformed JSON');
  assert.match(e.message, /json/i, `message should name the JSON problem: ${e.message}`);
  assertJsonError(await post('/v1/openai/chat/completions', 'not json at all'), 400, 'not JSON');
  assertJsonError(await post('/v1/openai/chat/completions', '[1,2,3]'), 400, 'JSON array body');
  await stillWorks();
});

test('body over spendpol_max_body_size (default 1m) -> 413 JSON', async () => {
  const big = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'a'.repeat(1536 * 1024) }] });
  assertJsonError(await post('/v1/openai/chat/completions', big), 413, 'oversized body');
  await stillWorks();
});

test('unknown provider -> 404 JSON', async () => {
  assertJsonError(await post('/v1/nope/x', good), 404, 'unknown provider');
  assertJsonError(await post('/v1/nope/chat/completions', good), 404, 'unknown provider');
  await stillWorks();
});

test('provider unreachable -> 502 JSON, then recovers', async () => {
  const closed = await freePort();
  await s.setProvider({ base_url: `http://127.0.0.1:${closed}/v1` });
  const r = await s.waitStable(() => post('/v1/openai/chat/completions', good, { connection: 'close' }), (x) => x.status === 502,
    { message: 'every worker to answer 502 after pointing the provider at a closed port' });
  assertJsonError(r, 502, 'unreachable provider');
  await assert.rejects(s.client(key).chat.completions.create(good), (err) => err instanceof OpenAI.APIError && err.status === 502);
  await s.setProvider();
  await s.waitStable(() => post('/v1/openai/chat/completions', good, { connection: 'close' }), (x) => x.status === 200,
    { message: 'every worker to recover' });
  await stillWorks();
});

test('provider 500 is passed on to the client; the proxy keeps working', async () => {
  await assert.rejects(
    s.client(key).chat.completions.create({ ...good, model: 'fixture-500' }),
    (e) => e instanceof OpenAI.APIError && e.status === 500,
  );
  await stillWorks();
});

test('provider answers non-JSON: the proxy answers and keeps working', async () => {
  const r = await post('/v1/openai/chat/completions', { ...good, model: 'fixture-nonjson' });
  assert.ok(r.status >= 200 && r.status < 600, `status ${r.status}`);
  await stillWorks();
});

test('provider resets the connection mid-stream: the client sees an error or a cut stream; the proxy keeps working', async () => {
  let text = '';
  try {
    const st = await s.client(key).chat.completions.create({ ...good, model: 'fixture-reset', stream: true });
    for await (const c of st) text += c.choices?.[0]?.delta?.content ?? '';
  } catch { /* expected */ }
  assert.notEqual(text, fixtureReply({ ...good, model: 'fixture-reset', stream: true }), 'a reset stream cannot be complete');
  try {
    await s.client(key).chat.completions.create({ ...good, model: 'fixture-reset' });
  } catch { /* expected */ }
  await stillWorks();
});

test('wrong method and path shapes get JSON errors, not crashes', async () => {
  const r = await rawRequest(`${s.proxyURL}/v1/`, { method: 'GET', headers: { authorization: `Bearer ${key}` } });
  assert.ok(r.status >= 400 && r.status < 500, `GET /v1/ -> ${r.status}`);
  const r2 = await rawRequest(`${s.proxyURL}/v1/openai`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: good });
  assert.ok(r2.status >= 400 && r2.status < 600, `POST /v1/openai -> ${r2.status}`);
  await stillWorks();
});
