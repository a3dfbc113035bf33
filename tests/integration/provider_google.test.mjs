// Google (Gemini API) through the gateway with the official @google/genai
// SDK, against the Gemini fixture (tests/fixtures/providers/google.mjs):
// usageMetadata (cached and thoughts tokens included), the last one winning
// when streamed, exact cost, streamed and not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useProviderStack, providerSuite, CREDENTIAL, SLOW, rawRequest, auditRow, assertRowUsage,
  assertNoSpendpolKey, costNano, priceOf,
} from './lib/providers.mjs';
import { GoogleGenAI, ApiError } from '@google/genai';
import * as fixture from '../fixtures/providers/google.mjs';

const ctx = useProviderStack('google', fixture.startGoogleFixture);

const wireBody = (c) => ({ contents: [{ role: 'user', parts: [{ text: c.prompt }] }], generationConfig: { maxOutputTokens: c.maxTokens } });
const params = (c) => ({ model: c.model, contents: c.prompt, config: { maxOutputTokens: c.maxTokens } });

providerSuite(ctx, {
  provider: 'google',
  model: 'gemini-2.5-flash',
  answeredModel: 'gemini-2.5-flash',
  unpricedModel: 'gemini-fixture-unpriced-1',
  minEvents: 3,
  client: (key) => new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: ctx.baseURL, timeout: 20_000 * SLOW } }),
  async complete(client, c) {
    const r = await client.models.generateContent(params(c));
    return r.text;
  },
  async stream(client, c) {
    let text = '';
    let events = 0;
    for await (const ch of await client.models.generateContentStream(params(c))) {
      events++;
      text += ch.text ?? '';
    }
    return { text, events };
  },
  raw: (c, { stream, key }) => ({
    path: `/v1beta/models/${c.model}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
    headers: key ? { 'x-goog-api-key': key } : {},
    body: wireBody(c),
  }),
  keyHeaders: (key) => ({ 'x-goog-api-key': key }),
  requests: (fx) => fx.requests.filter((r) => fixture.routeOf(r)),
  billing: fixture.billingFor,
  reply: fixture.replyFor,
  assertCredential(rec) {
    assert.equal(rec.headers['x-goog-api-key'], CREDENTIAL);
    assert.equal(rec.headers.authorization, undefined, 'no Authorization upstream');
    assert.equal(rec.query.key, undefined, 'no ?key= upstream');
  },
  assertProviderError(err, status) {
    assert.ok(err instanceof ApiError, `not an ApiError: ${err}`);
    assert.equal(err.status, status);
    const body = JSON.parse(err.message);
    assert.equal(body.error?.message, fixture.errorMessage(status));
    assert.equal(body.error?.code, status);
  },
  assertGatewayError(err, status) {
    assert.ok(err instanceof ApiError, `not an ApiError: ${err}`);
    assert.equal(err.status, status);
  },
  assertAuthError(err) {
    assert.ok(err instanceof ApiError, `not an ApiError: ${err}`);
    assert.equal(err.status, 401);
  },
}, test);

test('google: the Spendpol key in ?key= works and never reaches the provider', async () => {
  ctx.fx.clear();
  const c = { model: 'gemini-2.0-flash', prompt: 'Wie geht es dir? ✓', maxTokens: 20 };
  const res = await rawRequest(`${ctx.baseURL}/v1beta/models/gemini-2.0-flash:generateContent?key=${ctx.key}`, { body: wireBody(c) });
  assert.equal(res.status, 200, res.text);
  const rec = ctx.fx.last();
  assert.equal(rec.pathname, '/v1beta/models/gemini-2.0-flash:generateContent');
  assert.equal(rec.query.key, undefined, `query upstream: ${rec.path}`);
  assert.equal(rec.headers['x-goog-api-key'], CREDENTIAL);
  assertNoSpendpolKey(rec, ctx.key);
  assert.equal(res.json.candidates[0].content.parts[0].text, fixture.replyFor(rec));
  const u = fixture.billingFor(rec);
  assert.equal(u.output, 20, 'no thoughts for 2.0');
  const row = await auditRow(ctx.s, res.headers['x-spendpol-audit-id']);
  assertRowUsage(row, u, costNano(priceOf('google', 'gemini-2.0-flash'), u));
});

test('google: streamed with ?key= and alt=sse: the key is stripped, alt=sse kept', async () => {
  ctx.fx.clear();
  const c = { model: 'gemini-2.5-pro', prompt: 'Streame bitte ✓ 🚀', maxTokens: 33 };
  const res = await rawRequest(`${ctx.baseURL}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=${ctx.key}`, { body: wireBody(c) });
  assert.equal(res.status, 200, res.text);
  const rec = ctx.fx.last();
  assert.deepEqual(rec.query, { alt: 'sse' });
  assertNoSpendpolKey(rec, ctx.key);
  const u = fixture.billingFor(rec);
  assert.equal(u.output, 33 + 12, 'thoughts billed as output');
  const row = await auditRow(ctx.s, res.headers['x-spendpol-audit-id']);
  assertRowUsage(row, u, costNano(priceOf('google', 'gemini-2.5-pro'), u));
  assert.equal(res.trailers['x-spendpol-cost'], row.cost_usd);
});

test('google: :streamGenerateContent without alt=sse (one JSON array) is costed from its last usageMetadata', async () => {
  ctx.fx.clear();
  const c = { model: 'gemini-2.5-flash', prompt: `${'Erzähl mir was ✓ 🚀 '.repeat(10)}`, maxTokens: 40 };
  const res = await rawRequest(`${ctx.baseURL}/v1beta/models/gemini-2.5-flash:streamGenerateContent`, {
    headers: { 'x-goog-api-key': ctx.key }, body: wireBody(c),
  });
  assert.equal(res.status, 200, res.text.slice(0, 300));
  const rec = ctx.fx.last();
  assert.equal(res.text, rec.response, 'the array reaches the client byte for byte');
  const arr = JSON.parse(res.text);
  assert.equal(arr.map((x) => x.candidates[0].content.parts[0].text).join(''), fixture.replyFor(rec));
  const u = fixture.billingFor(rec);
  const row = await auditRow(ctx.s, res.headers['x-spendpol-audit-id']);
  assertRowUsage(row, u, costNano(priceOf('google', 'gemini-2.5-flash'), u));
  assert.deepEqual(row.warnings ?? [], []);
});
