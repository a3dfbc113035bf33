// Cohere through the gateway with the official cohere-ai SDK
// (CohereClientV2), against the Cohere v2 fixture
// (tests/fixtures/providers/cohere.mjs): billed units (not the raw token
// counts) priced exactly, streamed and not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useProviderStack, providerSuite, CREDENTIAL, SLOW,
} from './lib/providers.mjs';
import { CohereClientV2, Cohere, CohereError } from 'cohere-ai';
import * as fixture from '../fixtures/providers/cohere.mjs';

const ctx = useProviderStack('cohere', fixture.startCohereFixture);

const req = (c) => ({ model: c.model, messages: [{ role: 'user', content: c.prompt }], maxTokens: c.maxTokens });

providerSuite(ctx, {
  provider: 'cohere',
  model: 'command-a-03-2025',
  answeredModel: 'command-a-03-2025',
  unpricedModel: 'command-fixture-unpriced',
  client: (key) => new CohereClientV2({ token: key, environment: ctx.baseURL, maxRetries: 0, timeoutInSeconds: 20 * SLOW }),
  async complete(client, c) {
    const r = await client.chat(req(c));
    assert.equal(r.finishReason, 'COMPLETE');
    return r.message.content.map((p) => p.text).join('');
  },
  async stream(client, c) {
    let text = '';
    let events = 0;
    for await (const ev of await client.chatStream(req(c))) {
      events++;
      if (ev.type === 'content-delta') text += ev.delta?.message?.content?.text ?? '';
    }
    return { text, events };
  },
  raw: (c, { stream, key }) => ({
    path: '/v2/chat',
    headers: key ? { authorization: `Bearer ${key}` } : {},
    body: { model: c.model, messages: [{ role: 'user', content: c.prompt }], max_tokens: c.maxTokens, stream },
  }),
  keyHeaders: (key) => ({ authorization: `Bearer ${key}` }),
  requests: (fx) => fx.requests.filter((r) => r.pathname === '/v2/chat'),
  billing: fixture.billingFor,
  reply: fixture.replyFor,
  assertCredential(rec) {
    assert.equal(rec.headers.authorization, `Bearer ${CREDENTIAL}`);
  },
  assertProviderError(err, status) {
    const cls = { 400: Cohere.BadRequestError, 401: Cohere.UnauthorizedError, 429: Cohere.TooManyRequestsError, 500: Cohere.InternalServerError }[status];
    assert.ok(err instanceof cls, `${err?.constructor?.name} for ${status}: ${err}`);
    assert.ok(err instanceof CohereError);
    assert.equal(err.statusCode, status);
    assert.equal(err.body?.message, fixture.errorMessage(status));
  },
  assertGatewayError(err, status) {
    assert.ok(err instanceof CohereError, `not a CohereError: ${err}`);
    assert.equal(err.statusCode, status);
  },
  assertAuthError(err) {
    assert.ok(err instanceof Cohere.UnauthorizedError, `not an UnauthorizedError: ${err}`);
    assert.equal(err.statusCode, 401);
  },
}, test);

test('cohere: billed units are priced, not the raw token counts', () => {
  const u = fixture.usageFor({ messages: [{ role: 'user', content: 'abc' }], max_tokens: 4 });
  assert.notEqual(u.tokens.input_tokens, u.billed_units.input_tokens);
});
