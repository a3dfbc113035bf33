// Anthropic through the gateway with the official @anthropic-ai/sdk, against
// the Anthropic fixture (tests/fixtures/providers/anthropic.mjs): exact
// input, output, cache-read and cache-write tokens and cost, streamed and not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useProviderStack, providerSuite, CREDENTIAL, SLOW, rawRequest, auditRow, assertRowUsage, costNano, priceOf,
  lastProxyResponse, LONG_PROMPT,
} from './lib/providers.mjs';
import Anthropic from '@anthropic-ai/sdk';
import * as fixture from '../fixtures/providers/anthropic.mjs';

const ctx = useProviderStack('anthropic', fixture.startAnthropicFixture);

const body = (c, stream) => ({
  model: c.model, max_tokens: c.maxTokens, messages: [{ role: 'user', content: c.prompt }], ...(stream ? { stream: true } : {}),
});

providerSuite(ctx, {
  provider: 'anthropic',
  model: 'claude-sonnet-4-5',
  answeredModel: 'claude-sonnet-4-5-20250929',
  unpricedModel: 'claude-fixture-unpriced-1',
  client: (key) => new Anthropic({ baseURL: ctx.baseURL, apiKey: key, maxRetries: 0, timeout: 20_000 * SLOW }),
  async complete(client, c) {
    const m = await client.messages.create(body(c, false));
    assert.equal(m.type, 'message');
    return m.content.map((b) => b.text).join('');
  },
  async stream(client, c) {
    const st = await client.messages.create(body(c, true));
    let text = '';
    let events = 0;
    for await (const ev of st) {
      events++;
      if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
    }
    return { text, events };
  },
  raw: (c, { stream, key }) => ({
    path: '/v1/messages',
    headers: { ...(key ? { 'x-api-key': key } : {}), 'anthropic-version': '2023-06-01' },
    body: body(c, stream),
  }),
  keyHeaders: (key) => ({ 'x-api-key': key }),
  // @anthropic-ai/sdk 1.x sends apiKey as "Authorization: Bearer" (0.x used
  // x-api-key, which keyHeaders covers)
  sdkKeyHeaders: (key) => ({ authorization: `Bearer ${key}` }),
  requests: (fx) => fx.requests.filter((r) => r.pathname === '/v1/messages'),
  billing: fixture.billingFor,
  reply: fixture.replyFor,
  assertCredential(rec) {
    assert.equal(rec.headers['x-api-key'], CREDENTIAL);
    // the client's own anthropic-version is kept (the SDK sends its own)
    assert.match(rec.headers['anthropic-version'] ?? '', /^\d{4}-\d{2}-\d{2}$/);
    assert.equal(rec.headers.authorization, undefined, 'no Authorization upstream');
  },
  assertProviderError(err, status) {
    assert.ok(err instanceof Anthropic.APIError, `not an Anthropic.APIError: ${err}`);
    assert.equal(err.status, status);
    const cls = { 400: Anthropic.BadRequestError, 401: Anthropic.AuthenticationError, 429: Anthropic.RateLimitError, 500: Anthropic.InternalServerError }[status];
    assert.ok(err instanceof cls, `${err.constructor.name} for ${status}`);
    assert.equal(err.error?.type, 'error');
    assert.equal(err.error?.error?.message, fixture.errorMessage(status));
    assert.match(err.message, new RegExp(fixture.errorMessage(status).replace(/[()]/g, '\\$&')));
  },
  assertGatewayError(err, status) {
    assert.ok(err instanceof Anthropic.APIError, `not an Anthropic.APIError: ${err}`);
    assert.equal(err.status, status);
  },
  assertAuthError(err) {
    assert.ok(err instanceof Anthropic.AuthenticationError, `not an AuthenticationError: ${err}`);
    assert.equal(err.status, 401);
  },
}, test);

test('anthropic: the client\'s anthropic-version is forwarded; without one the gateway sends 2023-06-01', async () => {
  const b = body({ model: 'claude-haiku-4-5', maxTokens: 9, prompt: 'hi ✓' }, false);
  for (const [sent, want] of [['2024-01-01', '2024-01-01'], [null, '2023-06-01']]) {
    ctx.fx.clear();
    const headers = { 'x-api-key': ctx.key, ...(sent ? { 'anthropic-version': sent } : {}) };
    const res = await rawRequest(`${ctx.baseURL}/v1/messages`, { headers, body: b });
    assert.equal(res.status, 200, res.text);
    const rec = ctx.fx.last();
    assert.equal(rec.headers['anthropic-version'], want);
    assert.equal(rec.headers['x-api-key'], CREDENTIAL);
    assert.equal(res.json.model, 'claude-haiku-4-5-20251001');
    const u = fixture.billingFor(rec);
    const row = await auditRow(ctx.s, res.headers['x-spendpol-audit-id']);
    assertRowUsage(row, u, costNano(priceOf('anthropic', 'claude-haiku-4-5'), u));
  }
});

test('anthropic: a message_delta repeating the input-side usage is not counted twice', async () => {
  ctx.fx.clear();
  const client = new Anthropic({ baseURL: ctx.baseURL, apiKey: ctx.key, maxRetries: 0 });
  const st = await client.messages.create(body({ model: 'claude-sonnet-4-5', maxTokens: 64, prompt: `${LONG_PROMPT} fixture-delta:full` }, true));
  let text = '';
  let deltaUsage = null;
  for await (const ev of st) {
    if (ev.type === 'content_block_delta') text += ev.delta.text;
    if (ev.type === 'message_delta') deltaUsage = ev.usage;
  }
  const rec = ctx.fx.last();
  assert.equal(text, fixture.replyFor(rec));
  assert.ok(deltaUsage.cache_read_input_tokens > 0, JSON.stringify(deltaUsage));
  const u = fixture.billingFor(rec);
  const row = await auditRow(ctx.s, lastProxyResponse().headers.get('x-spendpol-audit-id'));
  assertRowUsage(row, u, costNano(priceOf('anthropic', 'claude-sonnet-4-5'), u));
});

test('anthropic: cache-read and cache-write tokens are priced at their own rates', async () => {
  // covered by the suite's long prompt (T >= 1024 gives both); check the
  // fixture really produces both, so the suite's exact cost covers them
  const u = fixture.usageFor({ messages: [{ role: 'user', content: 'x'.repeat(4200) }], max_tokens: 5 });
  assert.ok(u.cache_read_input_tokens > 0 && u.cache_creation_input_tokens > 0);
});
