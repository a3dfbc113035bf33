// Governance that a key holder cannot get around (issue 9, items 3, 6, 7):
// a key's own department and project bind unless the key allows
// overrides, an unpriced model does not pass a hard budget, and the
// reservation is the real worst case (n choices, media, validated
// numbers), so no field of the request lowers what is held.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useStack, waitFor, rawRequest, assertJsonError } from './lib/stack.mjs';

const s = useStack();

const tag = () => crypto.randomBytes(3).toString('hex');

async function budget(scope, value, limitNano, extra = {}) {
  const r = await s.api('POST', '/budgets', {
    body: {
      name: `b-${value}-${tag()}`,
      scope: { type: scope, value },
      limit_usd: (Number(limitNano) / 1e9).toFixed(9),
      period: 'daily',
      ...extra,
    },
  });
  assert.equal(r.status, 201, `POST /budgets -> ${r.status} ${r.text}`);
  return r.json;
}

/* one chat call with raw HTTP, so every header and byte is ours */
async function call(key, body, headers = {}) {
  return rawRequest(`${s.openaiBaseURL}/chat/completions`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const hi = (extra = {}) => ({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }], ...extra });

/* until every worker has the snapshot with the budget: the status settles */
async function settles(fn, status, message) {
  return s.waitStable(fn, (r) => r.status === status, { times: 6, message });
}

// ---------------------------------------------------------------- item 3

test('a key bound to a department cannot escape its spent budget by naming another', async () => {
  const dept = `eng-${tag()}`;
  const { key } = await s.createKey({ department: dept });
  await budget('department', dept, 1n);            // nothing fits

  const own = await settles(() => call(key, hi()), 402, 'the department budget to refuse');
  assert.equal(own.json.error.code, 'budget_exceeded');

  const other = await call(key, hi(), { 'X-Spendpol-Department': `other-${tag()}` });
  const e = assertJsonError(other, 403, 'a differing department header');
  assert.equal(e.code, 'attribution_not_allowed');
  assert.match(e.message, /attribution_override/);

  // naming its own department is fine (and still refused by the budget)
  const same = await call(key, hi(), { 'X-Spendpol-Department': dept });
  assert.equal(same.status, 402);

  // the same holds for the project
  const proj = `p-${tag()}`;
  const { key: pkey } = await s.createKey({ project: proj });
  await budget('project', proj, 1n);
  await settles(() => call(pkey, hi()), 402, 'the project budget to refuse');
  const pother = await call(pkey, hi(), { 'X-Spendpol-Project': `x-${tag()}` });
  assert.equal(assertJsonError(pother, 403, 'a differing project header').code, 'attribution_not_allowed');
});

test('an override key re-attributes, and the budgets of both its own and the named values apply', async () => {
  const own = `svc-${tag()}`;
  const named = `team-${tag()}`;
  const created = await s.createKey({ department: own, attribution_override: true });
  assert.equal(created.attribution_override, true, `attribution_override in ${JSON.stringify(created)}`);
  const { key } = created;

  // re-attributed: served, and the audit row carries the named department
  const ok = await call(key, hi(), { 'X-Spendpol-Department': named });
  assert.equal(ok.status, 200, ok.text);
  const row = await s.waitAuditRow(ok.headers.get('x-spendpol-audit-id'));
  assert.equal(row.department, named);

  // the named department's spent budget refuses
  await budget('department', named, 1n);
  await settles(() => call(key, hi(), { 'X-Spendpol-Department': named }), 402,
    'the named department budget to refuse');

  // the key's own department's spent budget refuses whatever is named
  const elsewhere = `elsewhere-${tag()}`;
  assert.equal((await call(key, hi(), { 'X-Spendpol-Department': elsewhere })).status, 200);
  await budget('department', own, 1n);
  const r = await settles(() => call(key, hi(), { 'X-Spendpol-Department': elsewhere }), 402,
    "the key's own department budget to refuse");
  assert.equal(r.json.error.code, 'budget_exceeded');
});

test("the key's own department budget counts re-attributed spend", async () => {
  const own = `cost-${tag()}`;
  const { key } = await s.createKey({ department: own, attribution_override: true });
  const b = await budget('department', own, 1_000_000_000n, { action: 'warn' });

  const r = await call(key, hi(), { 'X-Spendpol-Department': `to-${tag()}` });
  assert.equal(r.status, 200, r.text);
  const costUsd = r.headers.get('x-spendpol-cost');
  assert.ok(Number(costUsd) > 0, `cost ${costUsd}`);

  await waitFor(async () => {
    const sp = await s.api('GET', `/budgets/${b.id}/spend`);
    return sp.status === 200 && sp.json.requests === 1 && Number(sp.json.spent_usd) === Number(costUsd);
  }, { timeout: 15_000, message: "the key's own department budget to count the call" });
});

test('a key without a department may name one, and that budget applies', async () => {
  const named = `free-${tag()}`;
  const { key } = await s.createKey({});
  assert.equal((await call(key, hi(), { 'X-Spendpol-Department': named })).status, 200);
  await budget('department', named, 1n);
  await settles(() => call(key, hi(), { 'X-Spendpol-Department': named }), 402,
    'the named department budget to refuse');
});

test('PATCH turns attribution_override on and off; a header with control bytes is refused', async () => {
  const own = `pt-${tag()}`;
  const created = await s.createKey({ department: own });
  assert.equal(created.attribution_override, false);
  const other = { 'X-Spendpol-Department': `o-${tag()}` };
  assert.equal((await call(created.key, hi(), other)).status, 403);

  const on = await s.api('PATCH', `/api-keys/${created.id}`, { body: { attribution_override: true } });
  assert.equal(on.status, 200, on.text);
  await settles(() => call(created.key, hi(), other), 200, 'the override to reach every worker');

  const off = await s.api('PATCH', `/api-keys/${created.id}`, { body: { attribution_override: false } });
  assert.equal(off.status, 200, off.text);
  await settles(() => call(created.key, hi(), other), 403, 'the override to be withdrawn everywhere');

  const bad = await call(created.key, hi(), { 'X-Spendpol-Department': 'a\tb' });
  const e = assertJsonError(bad, 400, 'a control byte in the department header');
  assert.equal(e.code, 'invalid_header');
  assert.match(e.message, /X-Spendpol-Department/);
});

// ---------------------------------------------------------------- item 6

test('an unpriced model is refused under a hard budget, served without one, and billed at a fallback price', async () => {
  const model = `acme-unpriced-${tag()}`;
  const free = await s.createKey({});
  const r0 = await call(free.key, hi({ model }));
  assert.equal(r0.status, 200, r0.text);
  assert.match(r0.headers.get('x-spendpol-policy-warning') || '', /unpriced_model/);

  const proj = `up-${tag()}`;
  const { key } = await s.createKey({ project: proj });
  await budget('project', proj, 1_000_000_000n);
  const r1 = await settles(() => call(key, hi({ model })), 403, 'the hard budget to refuse the unpriced model');
  const e = assertJsonError(r1, 403, 'unpriced model under a hard budget');
  assert.equal(e.code, 'unpriced_model');
  assert.match(e.message, /PUT \/pricing\/openai\//);

  // a warn-only budget does not refuse it
  const wproj = `upw-${tag()}`;
  const wkey = await s.createKey({ project: wproj });
  await budget('project', wproj, 1n, { action: 'warn' });
  assert.equal((await call(wkey.key, hi({ model }))).status, 200);

  // the organisation's fallback price for openai: reserved, billed, flagged
  const put = await s.api('PUT', '/pricing/openai/*', {
    body: { input_usd_per_mtok: '1.00', output_usd_per_mtok: '2.00' },
  });
  assert.ok(put.status === 200 || put.status === 201, `PUT /pricing/openai/* -> ${put.status} ${put.text}`);
  const r2 = await settles(() => call(key, hi({ model, max_tokens: 10 })), 200, 'the fallback price to reach every worker');
  // the fixture answers 1 prompt token ("hi") and max_tokens output tokens
  assert.equal(r2.headers.get('x-spendpol-cost'), '0.000021');
  assert.match(r2.headers.get('x-spendpol-policy-warning') || '', /fallback_price/);
  const row = await s.waitAuditRow(r2.headers.get('x-spendpol-audit-id'));
  assert.equal(String(row.cost_nano), '21000');
});

// ---------------------------------------------------------------- item 7

test('numeric fields are validated: no wrap-around, no floats, no negatives, nothing above the model limit', async () => {
  const { key } = await s.createKey({});
  const cases = [
    ['{"model":"gpt-4o-mini","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"hi"}]}', /max_tokens/],
    ['{"model":"gpt-4o-mini","max_tokens":99999999999999999999,"messages":[{"role":"user","content":"hi"}]}', /max_tokens/],
    ['{"model":"gpt-4o-mini","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}', /max_tokens/],
    ['{"model":"gpt-4o-mini","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}', /max_tokens/],
    ['{"model":"gpt-4o-mini","max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}', /max_tokens/],
    ['{"model":"gpt-4o-mini","max_completion_tokens":"10","messages":[{"role":"user","content":"hi"}]}', /max_completion_tokens/],
    ['{"model":"gpt-4o-mini","n":0,"messages":[{"role":"user","content":"hi"}]}', /"n"/],
    ['{"model":"gpt-4o-mini","n":1e3,"messages":[{"role":"user","content":"hi"}]}', /"n"/],
    ['{"model":"gpt-4o-mini","n":100000,"messages":[{"role":"user","content":"hi"}]}', /"n"/],
  ];
  const before = s.fixture.completions().length;
  for (const [body, field] of cases) {
    const r = await call(key, body);
    const e = assertJsonError(r, 400, body);
    assert.match(e.message, field, `${body}: ${e.message}`);
  }
  assert.equal(s.fixture.completions().length, before, 'nothing reached the provider');
});

test('a body with a duplicate key for a field the gateway reads is refused', async () => {
  const { key } = await s.createKey({});
  const r = await call(key, '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_tokens":100000}');
  const e = assertJsonError(r, 400, 'duplicate max_tokens');
  assert.equal(e.code, 'duplicate_field');
  assert.match(e.message, /max_tokens/);
  const m = await call(key, '{"model":"acme-unpriced","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}');
  assert.equal(assertJsonError(m, 400, 'duplicate model').code, 'duplicate_field');
});

test('n choices and images are part of the worst case held against a budget', async () => {
  // gpt-4o-mini: 150 nano-USD an input token, 600 an output token; "hi"
  // is 2 bytes of prompt, held as 2 + 64 tokens
  const worst1 = 66n * 150n + 100n * 600n;                    // n = 1
  const proj = `w-${tag()}`;
  await budget('project', proj, worst1 * 2n);
  // a key made after the budget: the snapshot that carries it has the budget
  const { key } = await s.createKey({ project: proj });
  const body = (extra) => hi({ max_tokens: 100, ...extra });

  const three = await call(key, body({ n: 3 }));
  assert.equal(assertJsonError(three, 402, 'n=3 held as 3 x 100 output tokens').code, 'budget_exceeded');

  const image = await call(key, body({
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }],
  }));
  assert.equal(assertJsonError(image, 402, 'an image held at 20,000 tokens').code, 'budget_exceeded');

  const one = await call(key, body({ n: 1 }));
  assert.equal(one.status, 200, `n=1 fits: ${one.text}`);
});

// ---------------------------------------------------------------- item 4

test('embeddings are metered and priced like chat', async () => {
  const { key } = await s.createKey({});
  const input = 'Spendpol prices embeddings to the nano-dollar.';
  const { data, response } = await s.client(key).embeddings
    .create({ model: 'text-embedding-3-small', input }).withResponse();
  const tokens = data.usage.prompt_tokens;
  assert.ok(tokens > 0);
  // text-embedding-3-small: 0.02 USD per 1M tokens = 20 nano-USD a token
  const nano = BigInt(tokens) * 20n;
  assert.equal(response.headers.get('x-spendpol-tokens'), `${tokens}/0`);
  const row = await s.waitAuditRow(response.headers.get('x-spendpol-audit-id'));
  assert.equal(String(row.cost_nano), String(nano));
  assert.equal(row.endpoint, 'POST /embeddings');
});

test('a model list is governed, journaled with its endpoint and free', async () => {
  const { key } = await s.createKey({});
  const r = await rawRequest(`${s.openaiBaseURL}/models`, { method: 'GET', headers: { authorization: `Bearer ${key}` } });
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.json?.data), r.text);
  const row = await s.waitAuditRow(r.headers.get('x-spendpol-audit-id'));
  assert.equal(row.endpoint, 'GET /models');
  assert.equal(String(row.cost_nano), '0');
  assert.deepEqual(row.warnings, []);
});

test('an endpoint the organisation allowed is forwarded, journaled with its endpoint, rate limited and stopped by a spent budget', async () => {
  const { key, id } = await s.createKey({});
  const batch = { input_file_id: 'file-abc', endpoint: '/v1/chat/completions', completion_window: '24h' };
  const post = () => rawRequest(`${s.openaiBaseURL}/batches`, {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: batch,
  });

  assert.equal(assertJsonError(await post(), 403, 'not allowed yet').code, 'endpoint_not_governed');

  const put = await s.api('PUT', '/org', { body: { allowed_endpoints: [{ provider: 'openai', method: 'POST', path: '/batches' }] } });
  assert.equal(put.status, 200, put.text);
  s.fixture.clear();
  // the fixture has no batches: its own 404 proves the call went through
  const through = await s.waitStable(post, (r) => r.status === 404, { times: 6, message: 'every worker to allow /batches' });
  assert.ok(s.fixture.requests.some((r) => r.method === 'POST' && r.path.endsWith('/batches')), 'the fixture got the batch');
  const row = await s.waitAuditRow(through.headers.get('x-spendpol-audit-id'));
  assert.equal(row.endpoint, 'POST /batches');
  assert.equal(String(row.cost_nano), '0');
  assert.deepEqual(row.warnings, []);

  // rate limited like any call of the key
  const limited = await s.api('PATCH', `/api-keys/${id}`, { body: { rate_limits: { requests_per_minute: 1 } } });
  assert.equal(limited.status, 200, limited.text);
  const r429 = await s.waitStable(post, (r) => r.status === 429, { times: 3, message: 'the rate limit to refuse' });
  assert.equal(r429.json.error.code, 'rate_limit_exceeded');
  const unlimited = await s.api('PATCH', `/api-keys/${id}`, { body: { rate_limits: null } });
  assert.equal(unlimited.status, 200, unlimited.text);

  // and refused while a hard budget that covers the key is spent: spend
  // some, then lower the limit below it
  const b = await budget('api_key', id, 1_000_000_000n);
  const chat = await s.waitStable(() => call(key, hi()), (r) => r.status === 200, { times: 1, message: 'a chat call' });
  const spent = BigInt(Math.round(Number(chat.headers.get('x-spendpol-cost')) * 1e9));
  assert.ok(spent > 1n, `cost ${spent}`);
  await waitFor(async () => (await s.api('GET', `/budgets/${b.id}/spend`)).json?.requests === 1,
    { timeout: 15_000, message: 'the spend to be counted' });
  const lower = await s.api('PATCH', `/budgets/${b.id}`, { body: { limit_usd: '0.000000001' } });
  assert.equal(lower.status, 200, lower.text);
  const r402 = await s.waitStable(post, (r) => r.status === 402, { times: 6, message: 'the spent budget to refuse the allowed endpoint' });
  assert.equal(r402.json.error.code, 'budget_exceeded');

  const clear = await s.api('PUT', '/org', { body: { allowed_endpoints: [] } });
  assert.equal(clear.status, 200, clear.text);
});
