// Routing rules through the real gateway (issue 13): a model rewrite and its
// headers, a rule that starts rewriting exactly when a budget is 80 % spent,
// a weighted split, the official openai SDK routed to the five other
// providers (translated, streamed and not, usage and cost from the target),
// fallback on 429, 500, a reset before the first byte and a timeout, the
// cooldown of a target that keeps failing, X-Spendpol-Route: skip, and the
// trace id and latency headers on the gateway's own errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Stack, sleep, waitFor, nanoToUsd, UUID_RE, rawRequest } from './lib/stack.mjs';
import { CREDENTIAL, SLOW, auditRow, costNano, priceOf, assertCostString } from './lib/providers.mjs';
import { fixtureUsage, fixtureReply } from '../fixtures/openai-fixture.mjs';
import * as anthropic from '../fixtures/providers/anthropic.mjs';
import * as google from '../fixtures/providers/google.mjs';
import * as azure from '../fixtures/providers/azure.mjs';
import * as cohere from '../fixtures/providers/cohere.mjs';
import * as mistral from '../fixtures/providers/mistral.mjs';

const s = new Stack();
const fx = {};
let key;

// each provider the openai SDK may be routed to: the model the rule names,
// and the model its price is listed under
const TARGETS = {
  anthropic: { mod: anthropic, start: anthropic.startAnthropicFixture, model: 'claude-haiku-4-5', priced: 'claude-haiku-4-5' },
  google: { mod: google, start: google.startGoogleFixture, model: 'gemini-2.0-flash', priced: 'gemini-2.0-flash' },
  azure: { mod: azure, start: azure.startAzureFixture, model: 'mini-eu', priced: 'gpt-4o-mini', provider: { model_aliases: { 'mini-eu': 'gpt-4o-mini' } } },
  cohere: { mod: cohere, start: cohere.startCohereFixture, model: 'command-r-08-2024', priced: 'command-r-08-2024' },
  mistral: { mod: mistral, start: mistral.startMistralFixture, model: 'mistral-small-latest', priced: 'mistral-small-latest' },
};

before(async () => {
  try { await s.start(); } catch (e) { s.failed = true; throw e; }
  for (const [name, t] of Object.entries(TARGETS)) {
    fx[name] = await t.start({ expectedKey: CREDENTIAL });
    const r = await s.api('PUT', `/providers/${name}`, { body: { api_key: CREDENTIAL, base_url: fx[name].url, ...(t.provider ?? {}) } });
    assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/${name} -> ${r.status} ${r.text}`);
  }
  key = (await s.createKey({ name: 'routing' })).key;
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

// ---------------------------------------------------------------- helpers

async function addRule(rule) {
  const r = await s.api('POST', '/routing/rules', { body: { name: `r-${crypto.randomBytes(3).toString('hex')}`, ...rule } });
  assert.equal(r.status, 201, `POST /routing/rules -> ${r.status} ${r.text}`);
  return r.json;
}

async function dropRule(id) {
  const r = await s.api('DELETE', `/routing/rules/${id}`);
  assert.ok(r.status === 204 || r.status === 200, `DELETE /routing/rules/${id} -> ${r.status} ${r.text}`);
}

const H = (response) => {
  const g = (n) => response.headers.get(n);
  return {
    routed: g('x-spendpol-routed'), requested: g('x-spendpol-requested-model'), model: g('x-spendpol-model'),
    attempts: g('x-spendpol-attempts'), cost: g('x-spendpol-cost'), audit: g('x-spendpol-audit-id'),
    trace: g('x-spendpol-trace-id'), latency: g('x-spendpol-latency-ms'),
  };
};

const chat = (model, extra = {}, opts = {}, k = key) => s.client(k).chat.completions
  .create({ model, messages: [{ role: 'user', content: `Route me, please ✓ ${crypto.randomBytes(4).toString('hex')}` }], max_tokens: 20, ...extra }, opts)
  .withResponse();

/** every worker has a snapshot in which pred holds for the answer to model */
async function waitAnswer(model, pred, message, extra = {}) {
  return s.waitStable(async () => {
    try { return H((await chat(model, extra)).response); } catch (e) { return { error: e.status ?? String(e) }; }
  }, pred, { message, times: 6 });
}

// ---------------------------------------------------------------- rewrite

test('a rewrite rule sends gpt-4o to gpt-4o-mini, with its headers and audit row', async () => {
  const rule = await addRule({ priority: 10, conditions: { model: 'gpt-4o', project: 'rewrite' }, action: { type: 'rewrite', model: 'gpt-4o-mini' } });
  const k = (await s.createKey({ name: 'rewrite', project: 'rewrite' })).key;
  try {
    await s.waitStable(async () => H((await chat('gpt-4o', {}, {}, k)).response), (h) => h.routed === 'true', { message: 'the rule in every worker', times: 6 });
    const before = s.fixture.completions().length;
    const { data, response } = await chat('gpt-4o', {}, {}, k);
    const h = H(response);
    assert.equal(h.routed, 'true');
    assert.equal(h.requested, 'gpt-4o');
    assert.equal(h.model, 'gpt-4o-mini-2024-07-18', 'the model that answered');
    assert.equal(data.model, 'gpt-4o-mini-2024-07-18');
    assert.equal(h.attempts, null, 'one attempt: no X-Spendpol-Attempts');
    const sent = s.fixture.completions().slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].json.model, 'gpt-4o-mini', 'the provider was asked for the rewritten model');
    const usage = fixtureUsage(sent[0].json);
    const expected = costNano(priceOf('openai', 'gpt-4o-mini'), { input: usage.prompt_tokens, output: usage.completion_tokens, cached: usage.prompt_tokens_details.cached_tokens });
    assertCostString(h.cost, expected, 'priced at the model that answered');
    const row = await auditRow(s, h.audit);
    assert.equal(row.routed, true);
    assert.equal(row.route_rule, rule.id);
    assert.equal(row.requested_model, 'gpt-4o');
    assert.equal(BigInt(row.cost_nano), expected);

    // another model is not matched
    const other = H((await chat('gpt-4.1-mini', {}, {}, k)).response);
    assert.equal(other.routed, 'false');
    assert.equal(other.requested, 'gpt-4.1-mini');

    // X-Spendpol-Route: skip bypasses it
    const skipped = H((await chat('gpt-4o', {}, { headers: { 'X-Spendpol-Route': 'skip' } }, k)).response);
    assert.equal(skipped.routed, 'false');
    assert.match(skipped.model, /^gpt-4o-2024/);

    // unless the organisation forbids skipping
    const org = await s.api('PUT', '/org', { body: { route_skip_forbidden: true } });
    assert.equal(org.status, 200, org.text);
    try {
      await s.waitStable(async () => H((await chat('gpt-4o', {}, { headers: { 'X-Spendpol-Route': 'skip' } }, k)).response),
        (x) => x.routed === 'true', { message: 'skipping forbidden in every worker', times: 6 });
    } finally {
      await s.api('PUT', '/org', { body: { route_skip_forbidden: false } });
    }
  } finally {
    await dropRule(rule.id);
  }
});

test('a rewrite within Google and Azure changes the model in the path', async () => {
  const g = await addRule({ priority: 11, conditions: { provider: 'google', model: 'gemini-2.0-flash' }, action: { type: 'rewrite', model: 'gemini-2.5-flash-lite' } });
  const a = await addRule({ priority: 12, conditions: { provider: 'azure', model: 'mini-eu' }, action: { type: 'rewrite', model: 'prod-chat' } });
  try {
    const google = (n) => rawRequest(`${s.proxyURL}/v1/google/v1beta/models/gemini-2.0-flash:generateContent`, {
      headers: { 'x-goog-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: `rewrite me ${n}` }] }], generationConfig: { maxOutputTokens: 8 } }),
    });
    const azureCall = (n) => rawRequest(`${s.proxyURL}/v1/azure/openai/deployments/mini-eu/chat/completions?api-version=2024-10-21`, {
      headers: { 'api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: `rewrite me ${n}` }], max_tokens: 8 }),
    });
    await s.waitStable(async () => (await google('w')).headers.get('x-spendpol-routed'), (v) => v === 'true', { message: 'the google rule in every worker', times: 6 });
    const res = await google('now');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('x-spendpol-requested-model'), 'gemini-2.0-flash');
    assert.equal(fx.google.requests.at(-1).pathname, '/v1beta/models/gemini-2.5-flash-lite:generateContent');

    await s.waitStable(async () => (await azureCall('w')).headers.get('x-spendpol-routed'), (v) => v === 'true', { message: 'the azure rule in every worker', times: 6 });
    const az = await azureCall('now');
    assert.equal(az.status, 200, az.text);
    assert.equal(fx.azure.requests.at(-1).pathname, '/openai/deployments/prod-chat/chat/completions');
    assert.equal(az.headers.get('x-spendpol-requested-model'), 'mini-eu');
  } finally {
    await dropRule(g.id);
    await dropRule(a.id);
  }
});

// ------------------------------------------------------- budget threshold

test('a budget rule starts rewriting exactly when 80 % of the budget is spent', async () => {
  const project = `p80-${crypto.randomBytes(3).toString('hex')}`;
  const k = (await s.createKey({ name: 'p80', project })).key;
  // every call of this shape costs the same: prompt and max_tokens fixed
  const body = { messages: [{ role: 'user', content: 'Budget threshold probe ✓' }], max_tokens: 20 };
  const one = fixtureUsage({ model: 'gpt-4o', ...body });
  const costOne = costNano(priceOf('openai', 'gpt-4o'), { input: one.prompt_tokens, output: one.completion_tokens, cached: one.prompt_tokens_details.cached_tokens });
  const limit = costOne * 5n;     // 4 calls: exactly 80.000 %
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: nanoToUsd(limit, 9), period: 'daily', action: 'warn' },
  });
  assert.equal(b.status, 201, b.text);
  const rule = await addRule({ priority: 20, conditions: { model: 'gpt-4o', project, budget_used_pct: { gte: 80 } }, action: { type: 'rewrite', model: 'gpt-4o-mini' } });
  try {
    await sleep(1000 * SLOW);   // the budget and the rule in every worker's snapshot
    const call = () => s.client(k).chat.completions.create({ model: 'gpt-4o', ...body }).withResponse();
    const seen = [];
    for (let i = 0; i < 6; i++) {
      const h = H((await call()).response);
      seen.push(h.routed);
      // settled before the next call: the zone counts it at once
      await waitFor(async () => (await auditRow(s, h.audit)) !== null, { timeout: 10_000 * SLOW });
    }
    assert.deepEqual(seen, ['false', 'false', 'false', 'false', 'true', 'true'],
      'calls 1-4 are below 80 % (0, 20, 40, 60 %); the fifth sees exactly 80 %');
  } finally {
    await dropRule(rule.id);
  }
});

// -------------------------------------------------------------- split

test('a weighted split stays within 5 % of its weights over 1,000 requests, and a sticky one keeps a trace on one target', async () => {
  const rule = await addRule({
    priority: 30, conditions: { model: 'split-me' },
    action: { type: 'split', targets: [{ provider: 'openai', model: 'gpt-4o-mini', weight: 70 }, { provider: 'openai', model: 'gpt-4.1-nano', weight: 30 }] },
  });
  const sticky = await addRule({
    priority: 31, conditions: { model: 'split-sticky' },
    action: { type: 'split', sticky: true, targets: [{ provider: 'openai', model: 'gpt-4o-mini', weight: 50 }, { provider: 'openai', model: 'gpt-4.1-nano', weight: 50 }] },
  });
  try {
    await waitAnswer('split-me', (h) => h.routed === 'true', 'the split rule in every worker');
    const before = s.fixture.completions().length;
    const client = s.client(key);
    const N = 1000;
    for (let i = 0; i < N; i += 50) {
      await Promise.all(Array.from({ length: 50 }, () => client.chat.completions.create({ model: 'split-me', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 })));
    }
    const sent = s.fixture.completions().slice(before).filter((r) => r.json.messages[0].content === 'x');
    assert.equal(sent.length, N);
    const mini = sent.filter((r) => r.json.model === 'gpt-4o-mini').length / N;
    assert.ok(Math.abs(mini - 0.7) <= 0.05, `gpt-4o-mini took ${(mini * 100).toFixed(1)} % (weight 70 %)`);

    for (const trace of [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()]) {
      const models = new Set();
      for (let i = 0; i < 10; i++) {
        const { data } = await chat('split-sticky', {}, { headers: { 'X-Spendpol-Trace-Id': trace } });
        models.add(data.model);
      }
      assert.equal(models.size, 1, `trace ${trace} went to ${[...models]}`);
    }
  } finally {
    await dropRule(rule.id);
    await dropRule(sticky.id);
  }
});

// ------------------------------------------------------ cross-provider

for (const [name, t] of Object.entries(TARGETS)) {
  for (const stream of [false, true]) {
    test(`the openai SDK routed to ${name}${stream ? ', streamed' : ''}: the answer, usage and cost are the target's`, async () => {
      const requested = `to-${name}-${stream ? 's' : 'j'}`;
      const rule = await addRule({ priority: 40, conditions: { model: requested }, action: { type: 'provider', provider: name, model: t.model } });
      try {
        await waitAnswer(requested, (h) => h.routed === 'true', `the ${name} rule in every worker`);
        const f = fx[name];
        const n0 = f.requests.length;
        const messages = [{ role: 'system', content: 'Answer in one line.' }, { role: 'user', content: `Grüß mich auf ${name} ✓ 🚀` }];
        const client = s.client(key);
        let text, usage, response;
        if (!stream) {
          const r = await client.chat.completions.create({ model: requested, messages, max_tokens: 30, temperature: 0.2 }).withResponse();
          response = r.response;
          assert.equal(r.data.object, 'chat.completion');
          assert.equal(r.data.choices[0].message.role, 'assistant');
          assert.ok(['stop', 'length'].includes(r.data.choices[0].finish_reason), r.data.choices[0].finish_reason);
          text = r.data.choices[0].message.content;
          usage = r.data.usage;
        } else {
          const r = await client.chat.completions.create({ model: requested, messages, max_tokens: 30, stream: true, stream_options: { include_usage: true } }).withResponse();
          response = r.response;
          text = '';
          let finish = null;
          for await (const chunk of r.data) {
            assert.equal(chunk.object, 'chat.completion.chunk');
            if (chunk.usage) usage = chunk.usage;
            for (const c of chunk.choices ?? []) {
              text += c.delta?.content ?? '';
              finish = c.finish_reason ?? finish;
            }
          }
          assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
        }
        const recs = f.requests.slice(n0).filter((x) => x.method === 'POST');
        assert.equal(recs.length, 1, `one request reached ${name}`);
        const rec = recs[0];
        assert.equal(text, t.mod.replyFor(rec), 'the text the target answered');
        const bill = t.mod.billingFor(rec);
        assert.ok(usage, 'usage reached the client');
        assert.equal(usage.prompt_tokens, bill.input);
        assert.equal(usage.completion_tokens, bill.output);
        const expected = costNano(priceOf(name, t.priced), bill);
        const h = H(response);
        assert.equal(h.routed, 'true');
        assert.equal(h.requested, requested);
        const row = await auditRow(s, h.audit);
        assert.equal(row.provider, name);
        assert.equal(BigInt(row.cost_nano), expected, 'the target\'s usage at the target\'s price');
        if (!stream) assertCostString(h.cost, expected);
      } finally {
        await dropRule(rule.id);
      }
    });
  }
}

// -------------------------------------------------------------- fallback

for (const [what, failure, extra] of [
  ['a 429', { status: 429 }, {}],
  ['a 500', { status: 500 }, {}],
  ['a reset before the first byte', { reset: true }, {}],
  ['a timeout', { delayMs: 3000 }, { attempt_timeout_ms: 500 }],
]) {
  for (const stream of [false, true]) {
    test(`OpenAI failing with ${what}${stream ? ' (streamed)' : ''} falls back to Anthropic: no error reaches the client`, async () => {
      const requested = `fb-${crypto.randomBytes(3).toString('hex')}`;
      const rule = await addRule({
        priority: 50, conditions: { model: requested },
        action: { type: 'rewrite', model: 'gpt-4o-mini' },
        fallback: [{ provider: 'anthropic', model: 'claude-haiku-4-5' }],
        cooldown: { failures: 100, seconds: 1 }, ...extra,
      });
      try {
        await waitAnswer(requested, (h) => h.routed === 'true' && h.attempts === null, 'the fallback rule in every worker');
        s.fixture.fail(failure);
        const n0 = fx.anthropic.requests.length;
        const o0 = s.fixture.completions().length;
        try {
          for (let i = 0; i < 3; i++) {
            let r;
            if (stream) {
              r = await s.client(key).chat.completions.create({ model: requested, messages: [{ role: 'user', content: 'fall back ✓' }], max_tokens: 20, stream: true }).withResponse();
              let text = '';
              for await (const c of r.data) text += c.choices?.[0]?.delta?.content ?? '';
              assert.ok(text.length > 0, 'streamed text');
            } else {
              r = await chat(requested);
              assert.ok(r.data.choices[0].message.content.length > 0);
            }
            const h = H(r.response);
            assert.equal(h.attempts, '2');
            assert.equal(h.routed, 'true');
            assert.equal(h.requested, requested);
            assert.match(h.model ?? '', /^claude-haiku-4-5/);
            const row = await auditRow(s, h.audit);
            assert.equal(row.attempts, 2);
            assert.equal(row.provider, 'anthropic');
            assert.match(row.attempt_log ?? '', /^openai\/gpt-4o-mini:\d+$/, `attempt_log ${row.attempt_log}`);
            if (failure.status) assert.equal(row.attempt_log, `openai/gpt-4o-mini:${failure.status}`);
          }
        } finally {
          s.fixture.fail(null);
        }
        assert.equal(fx.anthropic.requests.length - n0, 3, 'each call answered by Anthropic');
        assert.ok(s.fixture.completions().length - o0 >= 3, 'OpenAI was tried first each time');
      } finally {
        await dropRule(rule.id);
      }
    });
  }
}

test('a target that keeps failing cools down for every worker, then is tried again', async () => {
  const requested = `cool-${crypto.randomBytes(3).toString('hex')}`;
  const rule = await addRule({
    priority: 60, conditions: { model: requested }, action: { type: 'rewrite', model: 'gpt-4o-mini' },
    fallback: [{ provider: 'anthropic', model: 'claude-haiku-4-5' }], cooldown: { failures: 2, seconds: 3 },
  });
  try {
    await waitAnswer(requested, (h) => h.routed === 'true' && h.attempts === null, 'the cooldown rule in every worker');
    s.fixture.fail({ status: 503 });
    try {
      for (let i = 0; i < 2; i++) assert.equal(H((await chat(requested)).response).attempts, '2');
      const o0 = s.fixture.completions().length;
      for (let i = 0; i < 6; i++) {
        const h = H((await chat(requested)).response);
        assert.equal(h.attempts, null, 'OpenAI is cooling: Anthropic answers at the first attempt');
        assert.match(h.model, /^claude-haiku-4-5/);
      }
      assert.equal(s.fixture.completions().length, o0, 'no request reached OpenAI while it cooled down');
    } finally {
      s.fixture.fail(null);
    }
    await sleep(3200);
    const h = H((await chat(requested)).response);
    assert.match(h.model, /^gpt-4o-mini/, 'after its cooldown OpenAI answers again');
  } finally {
    await dropRule(rule.id);
  }
});

test('when every target refuses, the client gets the last 429 in OpenAI\'s shape', async () => {
  const requested = `all-${crypto.randomBytes(3).toString('hex')}`;
  const rule = await addRule({
    priority: 70, conditions: { model: requested }, action: { type: 'rewrite', model: 'gpt-4o-mini' },
    fallback: [{ provider: 'anthropic', model: 'claude-haiku-4-5' }], cooldown: { failures: 100, seconds: 1 },
  });
  try {
    await waitAnswer(requested, (h) => h.routed === 'true', 'the rule in every worker');
    s.fixture.fail({ status: 429 });
    try {
      const res = await rawRequest(`${s.openaiBaseURL}/chat/completions`, {
        // the marker reaches Anthropic in the translated prompt
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: requested, messages: [{ role: 'user', content: 'refused everywhere fixture-mode:error-429' }], max_tokens: 5 }),
      });
      assert.equal(res.status, 429, res.text);
      const err = JSON.parse(res.text);
      assert.equal(typeof err.error?.message, 'string', res.text);
      assert.equal(res.headers.get('x-spendpol-attempts'), '2',
        `both targets tried: ${JSON.stringify(Object.fromEntries(res.headers))} ${res.text}`);
    } finally {
      s.fixture.fail(null);
    }
  } finally {
    await dropRule(rule.id);
  }
});

// ------------------------------------------------- ids and error headers

test('the trace id is a UUID also from a traceparent, and the gateway\'s own errors carry X-Spendpol-Latency-Ms', async () => {
  const trace = crypto.randomBytes(16).toString('hex');
  const res = await rawRequest(`${s.openaiBaseURL}/chat/completions`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', traceparent: `00-${trace}-${crypto.randomBytes(8).toString('hex')}-01` },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
  });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('x-spendpol-trace-id'), UUID_RE);
  assert.equal(res.headers.get('x-spendpol-trace-id').replaceAll('-', ''), trace);

  // a client's own trace id is kept when it is a UUID (any case), replaced when it is not
  const upper = crypto.randomUUID().toUpperCase();
  const kept = H((await chat('gpt-4o-mini', {}, { headers: { 'X-Spendpol-Trace-Id': upper } })).response);
  assert.equal(kept.trace, upper.toLowerCase());
  const replaced = H((await chat('gpt-4o-mini', {}, { headers: { 'X-Spendpol-Trace-Id': 'my-own-trace.7' } })).response);
  assert.match(replaced.trace, UUID_RE);

  const bad = await rawRequest(`${s.openaiBaseURL}/chat/completions`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"model": ',
  });
  assert.equal(bad.status, 400);
  assert.match(bad.headers.get('x-spendpol-latency-ms') ?? '', /^\d+\.\d{3}$/);
  assert.match(bad.headers.get('x-spendpol-trace-id'), UUID_RE);
  // a fixture answer is no gateway error: its text is checked elsewhere
  assert.ok(fixtureReply);
});
