// The response cache (issue 12) with each provider's official SDK, all six
// behind one gateway (openai, anthropic, google, azure, cohere, mistral),
// streamed and not: a second identical deterministic call is a hit that
// reaches no provider and gives the SDK the same answer (the same JSON
// body; for a stream the same text deltas, finish reason and usage), at
// cost 0 with its own audit row; error answers, cut streams and answers
// with estimated usage are never stored. The rules in detail, with the
// openai SDK: cache.test.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { AzureOpenAI } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { CohereClientV2 } from 'cohere-ai';
import { Mistral } from '@mistralai/mistralai';
import { Stack, usdToNano } from './lib/stack.mjs';
import { CREDENTIAL, SLOW, rawRequest, auditRow, waitRouted } from './lib/providers.mjs';
import {
  recordCalls, lastCall, cacheOf, header, assertHit, assertHitCostHeaders, assertHitCostTrailers,
  assertMissHitRows, replayOf,
} from './lib/cache.mjs';
import * as anthropicFx from '../fixtures/providers/anthropic.mjs';
import * as googleFx from '../fixtures/providers/google.mjs';
import * as azureFx from '../fixtures/providers/azure.mjs';
import * as cohereFx from '../fixtures/providers/cohere.mjs';
import * as mistralFx from '../fixtures/providers/mistral.mjs';

// the openai fixture is the stack's own (Stack.fixture, PUT /providers/openai)
const s = new Stack();
const fx = {};
let key;
const baseURL = (name) => `${s.proxyURL}/v1/${name}`;
const MAX = 24;
const TIMEOUT = 20_000 * SLOW;

const FIXTURES = {
  anthropic: { start: anthropicFx.startAnthropicFixture },
  google: { start: googleFx.startGoogleFixture },
  azure: { start: azureFx.startAzureFixture, provider: { model_aliases: { 'mini-eu': 'gpt-4o-mini' } } },
  cohere: { start: cohereFx.startCohereFixture },
  mistral: { start: mistralFx.startMistralFixture },
};

before(async () => {
  try { await s.start(); } catch (e) { s.failed = true; throw e; }
  recordCalls(s.proxyURL);
  for (const [name, f] of Object.entries(FIXTURES)) {
    fx[name] = await f.start({ expectedKey: CREDENTIAL });
    const r = await s.api('PUT', `/providers/${name}`, { body: { api_key: CREDENTIAL, base_url: fx[name].url, ...(f.provider ?? {}) } });
    assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/${name} -> ${r.status} ${r.text}`);
  }
  key = (await s.createKey({ name: 'cache-providers' })).key;
  for (const name of Object.keys(FIXTURES)) await waitRouted(s, name, key);
}, { timeout: 240_000 * SLOW });

after(async () => {
  const alive = setInterval(() => {}, 1000);
  let problems;
  try {
    for (const f of Object.values(fx)) await f.close();
    problems = await s.stop();
  } finally { clearInterval(alive); }
  if (problems.length) assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
}, { timeout: 120_000 });

/**
 * Per provider, through its SDK, a deterministic request (temperature 0;
 * Mistral by its random_seed): complete(prompt) and stream(prompt) ->
 * what the SDK showed ({text} / {deltas, finish, usage}); upstream() counts
 * the provider's generation requests.
 */
const P = {
  openai: {
    sdk: () => s.client(key),
    complete: async (c, prompt) => {
      const r = await c.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }] });
      return { text: r.choices[0].message.content };
    },
    stream: async (c, prompt) => openaiStream(await c.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }],
      stream: true, stream_options: { include_usage: true },
    })),
    upstream: () => s.fixture.completions().length,
  },
  azure: {
    sdk: () => new AzureOpenAI({
      endpoint: baseURL('azure'), apiKey: key, apiVersion: '2024-10-21', deployment: 'mini-eu', maxRetries: 0, timeout: TIMEOUT,
    }),
    complete: async (c, prompt) => {
      const r = await c.chat.completions.create({ model: 'mini-eu', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }] });
      return { text: r.choices[0].message.content };
    },
    stream: async (c, prompt) => openaiStream(await c.chat.completions.create({
      model: 'mini-eu', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }],
      stream: true, stream_options: { include_usage: true },
    })),
    upstream: () => fx.azure.requests.filter((r) => azureFx.deploymentOf(r)).length,
  },
  anthropic: {
    sdk: () => new Anthropic({ baseURL: baseURL('anthropic'), apiKey: key, maxRetries: 0, timeout: TIMEOUT }),
    complete: async (c, prompt) => {
      const m = await c.messages.create({ model: 'claude-haiku-4-5', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }] });
      return { text: m.content.map((b) => b.text).join('') };
    },
    stream: async (c, prompt) => {
      const st = await c.messages.create({ model: 'claude-haiku-4-5', max_tokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }], stream: true });
      const out = { deltas: [], finish: null, usage: { start: null, end: null } };
      for await (const ev of st) {
        if (ev.type === 'message_start') out.usage.start = ev.message.usage;
        if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') out.deltas.push(ev.delta.text);
        if (ev.type === 'message_delta') { out.finish = ev.delta.stop_reason; out.usage.end = ev.usage; }
      }
      return out;
    },
    upstream: () => fx.anthropic.requests.filter((r) => r.pathname === '/v1/messages').length,
  },
  google: {
    sdk: () => new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: baseURL('google'), timeout: TIMEOUT } }),
    complete: async (c, prompt) => {
      const r = await c.models.generateContent({ model: 'gemini-2.5-flash-lite', contents: prompt, config: { temperature: 0, maxOutputTokens: MAX } });
      return { text: r.text };
    },
    stream: async (c, prompt) => {
      const out = { deltas: [], finish: null, usage: null };
      for await (const ch of await c.models.generateContentStream({ model: 'gemini-2.5-flash-lite', contents: prompt, config: { temperature: 0, maxOutputTokens: MAX } })) {
        if (ch.text) out.deltas.push(ch.text);
        out.finish = ch.candidates?.[0]?.finishReason ?? out.finish;
        if (ch.usageMetadata) out.usage = JSON.parse(JSON.stringify(ch.usageMetadata));
      }
      return out;
    },
    upstream: () => fx.google.requests.filter((r) => googleFx.routeOf(r)).length,
  },
  cohere: {
    sdk: () => new CohereClientV2({ token: key, environment: baseURL('cohere'), maxRetries: 0, timeoutInSeconds: 20 * SLOW }),
    complete: async (c, prompt) => {
      const r = await c.chat({ model: 'command-r-08-2024', maxTokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }] });
      return { text: r.message.content.map((p) => p.text).join('') };
    },
    stream: async (c, prompt) => {
      const out = { deltas: [], finish: null, usage: null };
      for await (const ev of await c.chatStream({ model: 'command-r-08-2024', maxTokens: MAX, temperature: 0, messages: [{ role: 'user', content: prompt }] })) {
        if (ev.type === 'content-delta') out.deltas.push(ev.delta?.message?.content?.text ?? '');
        if (ev.type === 'message-end') { out.finish = ev.delta?.finishReason ?? null; out.usage = ev.delta?.usage ?? null; }
      }
      return out;
    },
    upstream: () => fx.cohere.requests.filter((r) => r.pathname === '/v2/chat').length,
  },
  mistral: {
    // no temperature: the seed alone makes it deterministic (random_seed)
    sdk: () => new Mistral({ apiKey: key, serverURL: baseURL('mistral'), retryConfig: { strategy: 'none' }, timeoutMs: TIMEOUT }),
    complete: async (c, prompt) => {
      const r = await c.chat.complete({ model: 'ministral-8b-latest', maxTokens: MAX, randomSeed: 42, messages: [{ role: 'user', content: prompt }] });
      return { text: r.choices[0].message.content };
    },
    stream: async (c, prompt) => {
      const out = { deltas: [], finish: null, usage: null };
      for await (const ev of await c.chat.stream({ model: 'ministral-8b-latest', maxTokens: MAX, randomSeed: 42, messages: [{ role: 'user', content: prompt }] })) {
        const ch = ev.data.choices?.[0];
        if (ch?.delta?.content) out.deltas.push(ch.delta.content);
        if (ch?.finishReason) out.finish = ch.finishReason;
        if (ev.data.usage) out.usage = ev.data.usage;
      }
      return out;
    },
    upstream: () => fx.mistral.requests.filter((r) => r.pathname === '/v1/chat/completions').length,
  },
};

async function openaiStream(st) {
  const out = { deltas: [], finish: null, usage: null };
  for await (const ch of st) {
    const c = ch.choices?.[0];
    if (c?.delta?.content) out.deltas.push(c.delta.content);
    if (c?.finish_reason) out.finish = c.finish_reason;
    if (ch.usage) out.usage = ch.usage;
  }
  return out;
}

const fresh = (label) => `${label} ${crypto.randomBytes(5).toString('hex')} — grüß ✓ 日本`;

/** one SDK call; {seen, call (the recorded proxy call), error} */
async function sdkCall(p, stream, prompt) {
  const before = lastCall();
  let seen = null;
  let error = null;
  try {
    seen = await (stream ? p.stream(p.sdk(), prompt) : p.complete(p.sdk(), prompt));
  } catch (e) { error = e; }
  const call = lastCall();
  assert.ok(call && call !== before, `the SDK called the proxy (${error?.message ?? ''})`);
  return { seen, call, error };
}

for (const [name, p] of Object.entries(P)) {
  for (const stream of [false, true]) {
    const kind = stream ? 'streamed' : 'non-streamed';
    test(`${name}, ${kind}, through its SDK: the second identical call is a hit with the same answer, no upstream request, cost 0`, async () => {
      const prompt = fresh(`${name} ${kind}`);
      const n0 = p.upstream();
      const a = await sdkCall(p, stream, prompt);
      assert.equal(a.error, null, `first call: ${a.error?.stack}`);
      assert.equal(a.call.status, 200);
      assert.equal(cacheOf(a.call), 'miss', 'the first call');
      assert.equal(p.upstream(), n0 + 1, 'the first call reaches the provider');

      const b = await sdkCall(p, stream, prompt);
      assert.equal(b.error, null, `second call: ${b.error?.stack}`);
      assert.equal(p.upstream(), n0 + 1, 'a hit reaches no provider');
      assertHit(b.call, { first: a.call, what: `${name} ${kind} hit` });
      assert.deepEqual(b.seen, a.seen, 'the SDK sees the same answer');
      if (stream) {
        assert.ok(a.seen.deltas.length > 1, `${a.seen.deltas.length} text deltas`);
        assert.ok(a.seen.finish, 'a finish reason');
        assert.ok(a.seen.usage, 'a usage object');
        assert.match(header(b.call, 'content-type') ?? '', /text\/event-stream/);
        // the SDK's own request again, raw: the hit's cost is in the trailers
        const raw = await rawRequest(b.call.url, replayOf(b.call));
        assert.equal(raw.status, 200, raw.text.slice(0, 300));
        assertHit({ headers: raw.headers }, { first: b.call, what: `${name} raw streamed hit` });
        assertHitCostTrailers(raw, `${name} streamed hit`);
        assert.equal(p.upstream(), n0 + 1);
      } else {
        assert.ok(a.seen.text.length > 0);
        assertHitCostHeaders(b.call, `${name} hit`);
        const [ja, jb] = [JSON.parse(await a.call.body), JSON.parse(await b.call.body)];
        assert.deepEqual(jb, ja, 'the same JSON body');
      }
      const [missRow, hitRow] = [
        await auditRow(s, header(a.call, 'x-spendpol-audit-id')),
        await auditRow(s, header(b.call, 'x-spendpol-audit-id')),
      ];
      assertMissHitRows(missRow, hitRow, `${name} ${kind}`);
      assert.equal(hitRow.provider, name);
      assert.equal(hitRow.stream, stream);
      if (!stream) assert.equal(usdToNano(header(a.call, 'x-spendpol-cost')), usdToNano(missRow.cost_usd));
    });
  }
}

// what the fixtures of the five other providers do for a marker in the prompt
const NEVER_STORED = [
  { mode: 'error-500', stream: false, what: 'a provider error' },
  { mode: 'error-429', stream: true, what: 'a provider error to a stream' },
  { mode: 'reset', stream: true, what: 'a stream cut before its end' },
  { mode: 'nousage', stream: true, what: 'a stream without usage (estimated)' },
  { mode: 'nousage', stream: false, what: 'an answer without usage (estimated)' },
];

for (const name of Object.keys(FIXTURES)) {
  test(`${name}: never stored: ${NEVER_STORED.map((x) => x.what).join(', ')}; the next identical call reaches the provider`, async () => {
    const p = P[name];
    for (const { mode, stream, what } of NEVER_STORED) {
      const prompt = fresh(`${name} fixture-mode:${mode}`);
      const n0 = p.upstream();
      const a = await sdkCall(p, stream, prompt);
      const b = await sdkCall(p, stream, prompt);
      assert.equal(cacheOf(a.call), 'miss', `${what}: first call`);
      assert.equal(cacheOf(b.call), 'miss', `${what}: not stored, so the second is a miss too`);
      assert.equal(p.upstream(), n0 + 2, `${what}: the second call reaches the provider`);
    }
  });
}
