// Azure OpenAI through the gateway with the official openai SDK's
// AzureOpenAI client, against the Azure fixture
// (tests/fixtures/providers/azure.mjs): deployments priced through
// model_aliases, api-key, api-version, exact cached-token cost, streamed and
// not, the gateway's own include_usage kept from clients that did not ask.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useProviderStack, providerSuite, CREDENTIAL, SLOW, rawRequest, auditRow, assertRowUsage, costNano, priceOf,
  lastProxyResponse,
} from './lib/providers.mjs';
import OpenAI, { AzureOpenAI } from 'openai';
import * as fixture from '../fixtures/providers/azure.mjs';

const API_VERSION = '2024-10-21';
const ctx = useProviderStack('azure', fixture.startAzureFixture, {
  provider: { model_aliases: { 'prod-chat': 'gpt-4o', 'mini-eu': 'gpt-4o-mini' } },
});

const azure = (key, deployment) => new AzureOpenAI({
  endpoint: ctx.baseURL, apiKey: key, apiVersion: API_VERSION, deployment, maxRetries: 0, timeout: 20_000 * SLOW,
});
const params = (c, stream) => ({
  model: c.model, messages: [{ role: 'user', content: c.prompt }], max_tokens: c.maxTokens, ...(stream ? { stream: true } : {}),
});

providerSuite(ctx, {
  provider: 'azure',
  model: 'prod-chat',
  priceModel: 'gpt-4o',
  answeredModel: 'gpt-4o-2024-08-06',
  unpricedModel: 'lab-exp',
  unpricedAnsweredModel: 'gpt-fixture-unpriced-2025-01-01',
  client: (key) => ({ key }),
  async complete(client, c) {
    const r = await azure(client.key, c.model).chat.completions.create(params(c, false));
    assert.equal(r.model, fixture.DEPLOYMENTS[c.model]);
    return r.choices[0].message.content;
  },
  async stream(client, c) {
    const st = await azure(client.key, c.model).chat.completions.create(params(c, true));
    let text = '';
    let events = 0;
    for await (const ch of st) {
      events++;
      assert.equal(ch.usage ?? null, null, 'no usage chunk for a client that did not ask for one');
      text += ch.choices?.[0]?.delta?.content ?? '';
    }
    return { text, events };
  },
  raw: (c, { stream, key }) => ({
    path: `/openai/deployments/${c.model}/chat/completions?api-version=${API_VERSION}`,
    headers: key ? { 'api-key': key } : {},
    // a raw client that asks for usage gets the provider's stream unchanged
    body: { ...params(c, stream), ...(stream ? { stream_options: { include_usage: true } } : {}) },
  }),
  keyHeaders: (key) => ({ 'api-key': key }),
  requests: (fx) => fx.requests.filter((r) => fixture.deploymentOf(r)),
  billing: fixture.billingFor,
  reply: fixture.replyFor,
  assertCredential(rec) {
    assert.equal(rec.headers['api-key'], CREDENTIAL);
    assert.equal(rec.headers.authorization, undefined, 'no Authorization upstream');
    assert.equal(rec.query['api-version'], API_VERSION);
  },
  assertProviderError(err, status) {
    assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
    assert.equal(err.status, status);
    const cls = { 400: OpenAI.BadRequestError, 401: OpenAI.AuthenticationError, 429: OpenAI.RateLimitError, 500: OpenAI.InternalServerError }[status];
    assert.ok(err instanceof cls, `${err.constructor.name} for ${status}`);
    assert.equal(err.error?.message, fixture.errorMessage(status));
    assert.match(err.message, new RegExp(fixture.errorMessage(status)));
  },
  assertGatewayError(err, status) {
    assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
    assert.equal(err.status, status);
  },
  assertAuthError(err) {
    assert.ok(err instanceof OpenAI.AuthenticationError, `not an AuthenticationError: ${err}`);
  },
}, test);

test('azure: a streamed request gets include_usage upstream; the usage chunk reaches only a client that asked', async () => {
  const c = { model: 'mini-eu', prompt: 'Zähl bis drei ✓', maxTokens: 21 };
  for (const asked of [false, true]) {
    ctx.fx.clear();
    const st = await azure(ctx.key, c.model).chat.completions.create({
      ...params(c, true), ...(asked ? { stream_options: { include_usage: true } } : {}),
    });
    let usage = null;
    let text = '';
    for await (const ch of st) {
      if (ch.usage) usage = ch.usage;
      text += ch.choices?.[0]?.delta?.content ?? '';
    }
    const rec = ctx.fx.last();
    assert.equal(rec.json.stream_options?.include_usage, true, 'include_usage upstream');
    assert.equal(text, fixture.replyFor(rec));
    assert.deepEqual(usage, asked ? fixture.usageFor(rec.json) : null);
    const u = fixture.billingFor(rec);
    const row = await auditRow(ctx.s, lastProxyResponse().headers.get('x-spendpol-audit-id'));
    assertRowUsage(row, u, costNano(priceOf('azure', 'gpt-4o-mini'), u));
    assert.equal(row.model, 'gpt-4o-mini-2024-07-18');
  }
});

test('azure: X-Spendpol-Model is the model the deployment answered with; cost through the alias', async () => {
  const res = await rawRequest(`${ctx.baseURL}/openai/deployments/prod-chat/chat/completions?api-version=${API_VERSION}`, {
    headers: { 'api-key': ctx.key }, body: params({ model: 'prod-chat', prompt: 'ok ✓', maxTokens: 3 }, false),
  });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers['x-spendpol-model'], 'gpt-4o-2024-08-06');
  const rec = ctx.fx.last();
  const u = fixture.billingFor(rec);
  const row = await auditRow(ctx.s, res.headers['x-spendpol-audit-id']);
  assertRowUsage(row, u, costNano(priceOf('azure', 'gpt-4o'), u));
  assert.equal(res.headers['x-spendpol-cost'], row.cost_usd);
});
