// Large answers are metered (issue 9, item 9). A JSON answer larger than
// spendpol_max_response_size cannot be held for the cost headers: it
// passes through as it arrives, and its usage is scanned on the way, so
// the journal, the audit row and the budget still carry the provider's
// real usage (with or without Content-Length). An answer without usage is
// estimated from its text and flagged; never $0 for a 2xx with output.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useStack, waitFor, IS_SAN, usdToNano, expectedCostNano, rawRequest } from './lib/stack.mjs';
import { costNano, priceOf } from './lib/providers.mjs';
import { fixtureUsage } from '../fixtures/openai-fixture.mjs';
import * as anthropic from '../fixtures/providers/anthropic.mjs';
import * as cohere from '../fixtures/providers/cohere.mjs';

const SLOW = IS_SAN ? 3 : 1;
const LIMIT = 16 * 1024;

const s = useStack({ nginxHttp: `spendpol_max_response_size ${LIMIT / 1024}k;` });

const MODEL = 'gpt-4o-mini';

// two more providers' wire formats on the same stack
const fixtures = {};

/* the provider's fixture, started and configured on first use */
async function fixtureFor(name, start) {
  if (!fixtures[name]) {
    fixtures[name] = await start();
    await s.setProvider({ name, base_url: fixtures[name].url });
  }
  return fixtures[name];
}

after(async () => {
  for (const fx of Object.values(fixtures)) await fx.close();
});

function chatBody(tag) {
  return {
    model: MODEL,
    messages: [{ role: 'user', content: `large answer ${tag} ${crypto.randomBytes(4).toString('hex')}` }],
    max_tokens: 300,
  };
}

async function budgetedKey(tag) {
  const project = `large-${tag}-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: '1000', period: 'daily' },
  });
  assert.equal(b.status, 201, `POST /budgets -> ${b.status} ${b.text}`);
  const key = await s.createKey({ name: `k-${project}`, project });
  return { key: key.key, budget: b.json };
}

async function assertBudgetSpend(budget, nano) {
  let last;
  await waitFor(async () => {
    last = await s.api('GET', `/budgets/${budget.id}/spend`);
    return last.status === 200 && usdToNano(last.json.spent_usd) === nano;
  }, { timeout: 15_000 * SLOW, interval: 200, message: 'budget spend' }).catch(() => {
    assert.fail(`GET /budgets/${budget.id}/spend: ${last?.text}; expected ${nano} nano-USD`);
  });
}

function post(key, body, mode) {
  return rawRequest(`${s.openaiBaseURL}/chat/completions`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-fixture-mode': mode },
    body,
  });
}

for (const [name, mode] of [
  ['with Content-Length', 'pad-60000'],
  ['chunked, without Content-Length, outgrowing the buffer', 'pad-60000,chunked'],
]) {
  test(`a JSON answer over spendpol_max_response_size (${name}) is billed with its real usage`, async () => {
    const { key, budget } = await budgetedKey(name.slice(0, 4));
    const body = chatBody(name);
    const res = await post(key, body, mode);
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.ok(res.text.length > LIMIT, `a ${res.text.length}-byte answer`);
    // the client gets the provider's answer whole
    assert.ok(res.json, 'the answer is complete JSON');
    assert.equal(res.json.choices[0].message.content.length > 60000, true);
    const id = res.headers.get('x-spendpol-audit-id');
    assert.match(id ?? '', /^evt_/);
    // the headers left before the body: the cost is in the journal only
    assert.equal(res.headers.get('x-spendpol-cost'), null);

    const row = await s.waitAuditRow(id);
    const usage = fixtureUsage(body);
    assert.equal(row.status, 200);
    assert.equal(row.input_tokens, usage.prompt_tokens, JSON.stringify(row));
    assert.equal(row.output_tokens, usage.completion_tokens, JSON.stringify(row));
    assert.equal(row.model, res.json.model);
    assert.equal(BigInt(row.cost_nano), expectedCostNano(MODEL, usage));
    assert.ok(!JSON.stringify(row.warnings ?? '').includes('usage_estimated'), `warnings ${JSON.stringify(row.warnings)}`);
    await assertBudgetSpend(budget, BigInt(row.cost_nano));
  });
}

test('a large JSON answer without usage is estimated from its text and flagged, never $0', async () => {
  const { key, budget } = await budgetedKey('nousage');
  const body = chatBody('nousage');
  const res = await post(key, body, 'pad-60000,chunked,nousage');
  assert.equal(res.status, 200);
  const row = await s.waitAuditRow(res.headers.get('x-spendpol-audit-id'));
  assert.ok(JSON.stringify(row.warnings ?? '').includes('usage_estimated'), `warnings ${JSON.stringify(row.warnings)}`);
  // about 4 bytes a token of the 60 KB of text
  assert.ok(row.output_tokens >= 60000 / 4, `output tokens ${row.output_tokens}`);
  assert.ok(row.input_tokens > 0);
  assert.ok(BigInt(row.cost_nano) > 0n);
  await assertBudgetSpend(budget, BigInt(row.cost_nano));
});

test('an answer under the limit still carries its cost in the headers', async () => {
  const { key } = await budgetedKey('small');
  const body = chatBody('small');
  const res = await post(key, body, 'pad-1000');
  assert.equal(res.status, 200);
  const usage = fixtureUsage(body);
  assert.equal(res.headers.get('x-spendpol-tokens'), `${usage.prompt_tokens}/${usage.completion_tokens}`);
  assert.equal(usdToNano(res.headers.get('x-spendpol-cost')), expectedCostNano(MODEL, usage));
});

for (const [provider, fx, start, request] of [
  ['anthropic', anthropic, anthropic.startAnthropicFixture, (tag) => ({
    path: '/v1/messages',
    headers: { 'anthropic-version': '2023-06-01' },
    body: { model: 'claude-sonnet-4-5', max_tokens: 200, messages: [{ role: 'user', content: `large ${tag}` }] },
  })],
  ['cohere', cohere, cohere.startCohereFixture, (tag) => ({
    path: '/v2/chat',
    headers: {},
    body: { model: 'command-a-03-2025', max_tokens: 200, messages: [{ role: 'user', content: `large ${tag}` }] },
  })],
]) {
  test(`a large ${provider} answer is billed with its real usage`, async () => {
    const fixture = await fixtureFor(provider, start);
    const { key, budget } = await budgetedKey(provider);
    const tag = crypto.randomBytes(4).toString('hex');
    const q = request(tag);
    let routed;
    await waitFor(async () => {
      routed = await rawRequest(`${s.proxyURL}/v1/${provider}${q.path}`, {
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-fixture-mode': 'pad-50000,chunked', ...q.headers },
        body: q.body,
      });
      return routed.status !== 404;
    }, { timeout: 10_000 * SLOW, message: `the proxy to route ${provider}` });
    assert.equal(routed.status, 200, routed.text.slice(0, 300));
    assert.ok(routed.text.length > LIMIT && routed.json, `a whole ${routed.text.length}-byte answer`);
    assert.equal(routed.headers.get('x-spendpol-cost'), null);
    const rec = fixture.requests.find((r) => r.body.includes(`large ${tag}`));
    const u = fx.billingFor(rec);
    const row = await s.waitAuditRow(routed.headers.get('x-spendpol-audit-id'));
    assert.equal(row.input_tokens, u.input, JSON.stringify(row));
    assert.equal(row.output_tokens, u.output, JSON.stringify(row));
    assert.equal(row.cached_tokens ?? 0, u.cached ?? 0);
    assert.equal(BigInt(row.cost_nano), costNano(priceOf(provider, q.body.model), u), JSON.stringify(row));
    assert.ok(BigInt(row.cost_nano) > 0n);
    assert.ok(!JSON.stringify(row.warnings ?? '').includes('usage_estimated'), `warnings ${JSON.stringify(row.warnings)}`);
    await assertBudgetSpend(budget, BigInt(row.cost_nano));
  });
}
