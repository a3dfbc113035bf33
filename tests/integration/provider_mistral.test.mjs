// Mistral through the gateway with the official @mistralai/mistralai SDK,
// against the Mistral fixture (tests/fixtures/providers/mistral.mjs): usage
// from the last stream chunk (sent without being asked), exact cost,
// streamed and not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useProviderStack, providerSuite, CREDENTIAL, SLOW,
} from './lib/providers.mjs';
import { Mistral } from '@mistralai/mistralai';
import { MistralError } from '@mistralai/mistralai/models/errors/index.js';
import * as fixture from '../fixtures/providers/mistral.mjs';

const ctx = useProviderStack('mistral', fixture.startMistralFixture);

const req = (c) => ({ model: c.model, messages: [{ role: 'user', content: c.prompt }], maxTokens: c.maxTokens });

providerSuite(ctx, {
  provider: 'mistral',
  model: 'mistral-small-latest',
  answeredModel: 'mistral-small-latest',
  unpricedModel: 'mistral-fixture-unpriced',
  // the SDK's response schema requires usage in a JSON answer
  sdkRequiresUsage: true,
  client: (key) => new Mistral({ apiKey: key, serverURL: ctx.baseURL, retryConfig: { strategy: 'none' }, timeoutMs: 20_000 * SLOW }),
  async complete(client, c) {
    const r = await client.chat.complete(req(c));
    return r.choices[0].message.content;
  },
  async stream(client, c) {
    let text = '';
    let events = 0;
    let usage = null;
    for await (const ev of await client.chat.stream(req(c))) {
      events++;
      text += ev.data.choices?.[0]?.delta?.content ?? '';
      if (ev.data.usage) usage = ev.data.usage;
    }
    if (!/fixture-mode:nousage/.test(c.prompt)) {
      assert.ok(usage, 'Mistral\'s own usage chunk reaches the client');
    }
    return { text, events };
  },
  raw: (c, { stream, key }) => ({
    path: '/v1/chat/completions',
    headers: key ? { authorization: `Bearer ${key}` } : {},
    body: { model: c.model, messages: [{ role: 'user', content: c.prompt }], max_tokens: c.maxTokens, stream },
  }),
  keyHeaders: (key) => ({ authorization: `Bearer ${key}` }),
  requests: (fx) => fx.requests.filter((r) => r.pathname === '/v1/chat/completions'),
  billing: fixture.billingFor,
  reply: fixture.replyFor,
  assertCredential(rec) {
    assert.equal(rec.headers.authorization, `Bearer ${CREDENTIAL}`);
    assert.equal(rec.json.stream_options, undefined, 'nothing OpenAI-specific added to a Mistral request');
  },
  assertProviderError(err, status) {
    assert.ok(err instanceof MistralError, `not a MistralError: ${err}`);
    assert.equal(err.statusCode, status);
    assert.equal(JSON.parse(err.body).message, fixture.errorMessage(status));
    assert.ok(err.message.includes(fixture.errorMessage(status)), err.message);
  },
  assertGatewayError(err, status) {
    assert.ok(err instanceof MistralError, `not a MistralError: ${err}`);
    assert.equal(err.statusCode, status);
  },
  assertAuthError(err) {
    assert.ok(err instanceof MistralError, `not a MistralError: ${err}`);
    assert.equal(err.statusCode, 401);
  },
}, test);
