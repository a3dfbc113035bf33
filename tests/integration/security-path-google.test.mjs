// Issue 9, items 1, 4 and 8 for Google, whose SDKs and users put the key
// in the query string (?key=, with ?alt=sse when streaming): every
// spelling and letter case authenticates and is removed before the call
// reaches the Gemini fixture (tests/fixtures/providers/google.mjs), which
// records what it gets. See security-path.test.mjs for OpenAI.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useProviderStack, CREDENTIAL, rawRequest, sleep } from './lib/providers.mjs';
import * as fixture from '../fixtures/providers/google.mjs';

const ctx = useProviderStack('google', fixture.startGoogleFixture);

const KEY_NAMES = ['key', 'api-key', 'api_key', 'apikey', 'x-api-key', 'x-goog-api-key', 'spendpol-key', 'x-spendpol-key'];
const MIXED_CASE = ['KEY', 'Key', 'Api-Key', 'API_KEY', 'ApiKey', 'X-Api-Key', 'X-Goog-Api-Key', 'Spendpol-Key', 'X-SPENDPOL-KEY'];

const MODEL = 'gemini-2.5-flash';
const body = { contents: [{ role: 'user', parts: [{ text: 'hello, governed Gemini' }] }], generationConfig: { maxOutputTokens: 8 } };

/** the one call the fixture got, checked for any trace of a Spendpol key */
function assertForwardedWithout(rec, expectedPath, what) {
  assert.equal(rec.path, expectedPath, `${what}: forwarded as ${rec.path}`);
  const all = JSON.stringify(rec.rawHeaders) + rec.path + rec.body;
  assert.ok(!all.includes(ctx.key), `${what}: the Spendpol key reached the provider: ${rec.path}`);
  assert.doesNotMatch(all, /sp_key_/i, `${what}: an sp_key_ reached the provider: ${rec.path}`);
  assert.equal(rec.headers['x-goog-api-key'], CREDENTIAL, `${what}: the organisation's credential upstream`);
}

async function post(path, headers = {}) {
  ctx.fx.clear();
  return rawRequest(`${ctx.baseURL}${path}`, { headers, body });
}

test('google: ?key= under every spelling and letter case authenticates generateContent and is removed', async () => {
  for (const name of [...KEY_NAMES, ...MIXED_CASE]) {
    const res = await post(`/v1beta/models/${MODEL}:generateContent?${name}=${ctx.key}`);
    assert.equal(res.status, 200, `?${name}=: ${res.status} ${res.text.slice(0, 300)}`);
    assert.ok(Array.isArray(res.json?.candidates), `?${name}=: ${res.text.slice(0, 300)}`);
    assert.equal(ctx.fx.requests.length, 1, `?${name}=: one call upstream`);
    assertForwardedWithout(ctx.fx.requests[0], `/v1beta/models/${MODEL}:generateContent`, `?${name}=`);
  }
});

test('google: streamGenerateContent?alt=sse&key= keeps alt=sse and loses the key, in either order', async () => {
  for (const q of [`alt=sse&key=${ctx.key}`, `key=${ctx.key}&alt=sse`, `KEY=${ctx.key}&alt=sse`, `alt=sse&X-Goog-Api-Key=${ctx.key}`]) {
    const res = await post(`/v1beta/models/${MODEL}:streamGenerateContent?${q}`);
    const what = `?${q.replace(ctx.key, 'KEY')}`;
    assert.equal(res.status, 200, `${what}: ${res.status} ${res.text.slice(0, 300)}`);
    assert.match(res.text, /^data: /m, `${what}: an SSE stream`);
    assert.equal(ctx.fx.requests.length, 1, `${what}: one call upstream`);
    assertForwardedWithout(ctx.fx.requests[0], `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`, what);
  }
});

test('google: a split path gets 400 invalid_path and nothing reaches the provider', async () => {
  for (const p of [
    `/v1beta/models/${MODEL}:generateContent%20HTTP/1.1%0d%0aHost:%20x%0d%0a%0d%0aPOST%20/v1beta/models/${MODEL}:generateContent`,
    `/v1beta/models/${MODEL}%250d%250a:generateContent`,
    `/v1beta/models/%2e%2e/${MODEL}:generateContent`,
  ]) {
    const res = await post(`${p}?key=${ctx.key}`);
    await sleep(200);
    assert.equal(res.status, 400, `${p}: ${res.status} ${res.text.slice(0, 300)}`);
    assert.match(res.text, /invalid_path/, `${p}: ${res.text.slice(0, 300)}`);
    assert.doesNotMatch(res.text, /sp_key_/, `${p}: the answer repeats the key`);
    assert.equal(ctx.fx.requests.length, 0, `${p}: reached the provider as ${ctx.fx.requests.map((r) => r.path)}`);
  }
});

test('google: batchGenerateContent is not governed: 403 endpoint_not_governed, nothing upstream', async () => {
  for (const p of [`/v1beta/models/${MODEL}:batchGenerateContent`, '/v1beta/batches', '/v1beta/cachedContents']) {
    const res = await post(p, { 'x-goog-api-key': ctx.key });
    await sleep(100);
    assert.equal(res.status, 403, `${p}: ${res.status} ${res.text.slice(0, 300)}`);
    assert.match(res.text, /endpoint_not_governed/, `${p}: ${res.text.slice(0, 300)}`);
    assert.equal(ctx.fx.requests.length, 0, `${p}: reached the provider`);
  }
});
