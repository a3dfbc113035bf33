// A client that hangs up still pays for the provider's work (issue 9, item
// 5). Once a request has reached the provider, the provider bills it
// whatever the client does: the gateway keeps reading the answer after the
// client has gone (bounded by spendpol_orphan_timeout and
// spendpol_orphan_max_size), settles the real usage against the budget, and
// journals status 499 with the real cost; when the answer never completes
// (the provider resets, the bound is reached) it bills the prompt estimate
// plus the output received, flagged usage_estimated. For an OpenAI model
// the prompt estimate is its exact count (o200k_base with the chat
// overhead), what OpenAI bills, not the fixture's ceil(chars / 4).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import {
  useStack, waitFor, sleep, IS_SAN, usdToNano, expectedCostNano, auditRowsOf,
} from './lib/stack.mjs';
import { fixtureUsage } from '../fixtures/openai-fixture.mjs';
import { chatTokens, encodingOf } from '../fixtures/prompt-tokens.mjs';

const SLOW = IS_SAN ? 3 : 1;
const ORPHAN_TIMEOUT_MS = 3000 * SLOW;

const s = useStack({
  nginxHttp: `spendpol_orphan_timeout ${ORPHAN_TIMEOUT_MS / 1000}s; `
    + 'spendpol_orphan_max_size 64k;',
});

const MODEL = 'gpt-4o-mini';

function chatBody(tag, extra = {}) {
  return {
    model: MODEL,
    messages: [{ role: 'user', content: `hang-up test ${tag} ${crypto.randomBytes(4).toString('hex')}: ${'lorem ipsum '.repeat(20)}` }],
    max_tokens: 40,
    ...extra,
  };
}

/** a key in a project with its own budget */
async function budgetedKey(tag) {
  const project = `hangup-${tag}-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: '1000', period: 'daily' },
  });
  assert.equal(b.status, 201, `POST /budgets -> ${b.status} ${b.text}`);
  const key = await s.createKey({ name: `k-${project}`, project });
  return { key: key.key, keyId: key.id, budget: b.json };
}

/**
 * POST /chat/completions over node:http; the client closes its connection
 * `after` ms after sending, or once `chunks` pieces of a stream arrived.
 * Resolves with what the client saw.
 */
function hangUp(key, body, { mode, after = null, chunks = null }) {
  const u = new URL(`${s.openaiBaseURL}/chat/completions`);
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    const out = { status: 0, id: null, got: 0, pieces: 0 };
    let done = false;
    const finish = () => { if (!done) { done = true; resolve(out); } };
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST',
      headers: {
        authorization: `Bearer ${key}`, 'content-type': 'application/json',
        'content-length': payload.length, 'x-fixture-mode': mode,
      },
    }, (res) => {
      out.status = res.statusCode;
      out.id = res.headers['x-spendpol-audit-id'] ?? null;
      res.on('data', (d) => {
        out.got += d.length;
        out.pieces++;
        if (chunks !== null && out.pieces >= chunks) { req.destroy(); finish(); }
      });
      res.on('end', () => { out.complete = true; finish(); });
      res.on('error', finish);
      res.on('close', finish);
    });
    req.on('error', finish);
    req.end(payload);
    if (after !== null) setTimeout(() => { req.destroy(); finish(); }, after);
  });
}

/** the one audit row of a key (excluding the 400s of its acceptance probe) */
async function rowOf(keyId, timeout = 15_000 * SLOW) {
  let rows = [];
  await waitFor(async () => {
    const r = await s.api('GET', `/audit-logs?limit=1000&api_key_id=${keyId}`);
    rows = auditRowsOf(r.json).filter((x) => x.api_key_id === keyId && x.status !== 400);
    return rows.length >= 1;
  }, { timeout, interval: 200, message: `the audit row of ${keyId}` });
  assert.equal(rows.length, 1, `one audit row: ${JSON.stringify(rows)}`);
  return rows[0];
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

/** the prompt's tokens as OpenAI bills them: tiktoken with the chat overhead */
const promptTokens = (body) => chatTokens(encodingOf(body.model), body.messages);

const warned = (row) => JSON.stringify(row.warnings ?? '').includes('usage_estimated');

/** the row carries the provider's real usage and cost, and the budget counts it */
async function assertRealUsage(row, body, budget) {
  const usage = fixtureUsage(body);
  assert.equal(row.status, 499, `status: the client's view (${JSON.stringify(row)})`);
  assert.equal(row.input_tokens, usage.prompt_tokens, `input tokens: ${JSON.stringify(row)}`);
  assert.equal(row.output_tokens, usage.completion_tokens, `output tokens: ${JSON.stringify(row)}`);
  assert.equal(BigInt(row.cost_nano), expectedCostNano(MODEL, usage), `cost: ${JSON.stringify(row)}`);
  assert.ok(!warned(row), `real usage, not estimated: ${JSON.stringify(row.warnings)}`);
  assert.ok(!row.error_code, `no error_code: ${row.error_code}`);
  await assertBudgetSpend(budget, BigInt(row.cost_nano));
}

test('a client that hangs up while waiting for a JSON answer pays the real usage', async () => {
  const { key, keyId, budget } = await budgetedKey('json');
  const body = chatBody('json');
  // the client leaves well after the request reached the provider (a new
  // budget's first request may wait ~200 ms for its lease on a loaded
  // machine) and well before the answer
  const seen = await hangUp(key, body, { mode: `slow-${1500 * SLOW}`, after: 600 });
  assert.equal(seen.status, 0, 'the client left before any answer');
  const row = await rowOf(keyId);
  await assertRealUsage(row, body, budget);
  assert.equal(s.fixture.completions().filter((r) => r.body.includes(body.messages[0].content.slice(0, 40))).length, 1,
    'the provider got the request once');
});

for (const includeUsage of [false, true]) {
  test(`a client that hangs up mid-stream pays the real usage (${includeUsage ? 'asked for usage' : 'usage added by the gateway'})`, async () => {
    const { key, keyId, budget } = await budgetedKey(`sse-${includeUsage}`);
    const body = chatBody('sse', { stream: true, ...(includeUsage ? { stream_options: { include_usage: true } } : {}) });
    // the stream stops for a while after a third of it: the client leaves then
    const seen = await hangUp(key, body, { mode: `pause-${1000 * SLOW}`, chunks: 2 });
    assert.equal(seen.status, 200);
    assert.match(seen.id ?? '', /^evt_/);
    assert.ok(!seen.complete, 'the client did not read the whole stream');
    const row = await rowOf(keyId);
    assert.equal(row.id, seen.id);
    assert.equal(row.stream, true);
    await assertRealUsage(row, body, budget);
  });
}

test('a client that aborts an SDK stream pays the real usage', async () => {
  const { key, keyId, budget } = await budgetedKey('sdk');
  const body = chatBody('sdk', { stream: true });
  const ac = new AbortController();
  const client = s.client(key);
  let chunks = 0;
  let finished = false;
  try {
    const stream = await client.chat.completions.create(body, {
      signal: ac.signal, headers: { 'X-Fixture-Mode': `pause-${1000 * SLOW}` },
    });
    for await (const c of stream) {
      if (c.choices?.[0]?.finish_reason) finished = true;
      if (++chunks >= 2) ac.abort();
    }
  } catch (e) {
    assert.ok(e.name === 'AbortError' || /abort/i.test(String(e?.message)), `aborted: ${e}`);
  }
  assert.equal(finished, false, 'the client left before the end of the stream');
  const row = await rowOf(keyId);
  await assertRealUsage(row, body, budget);
});

test('the provider resets after the client left: the prompt and the output received are billed, flagged', async () => {
  const { key, keyId, budget } = await budgetedKey('reset');
  const body = chatBody('reset');
  // half the JSON body, a pause (the client leaves), then a reset
  await hangUp(key, body, { mode: `pause-${1000 * SLOW},reset`, after: 200 });
  const row = await rowOf(keyId);
  const usage = fixtureUsage(body);
  assert.equal(row.status, 499);
  assert.ok(warned(row), `usage_estimated in ${JSON.stringify(row.warnings)}`);
  // the prompt is billed as counted at admission: exactly what OpenAI bills
  assert.equal(row.input_tokens, promptTokens(body), `input tokens ${row.input_tokens}, fixture ${usage.prompt_tokens}`);
  assert.ok(row.output_tokens > 0, `output received is billed: ${JSON.stringify(row)}`);
  assert.ok(BigInt(row.cost_nano) > 0n, `cost ${row.cost_nano}`);
  await assertBudgetSpend(budget, BigInt(row.cost_nano));
});

for (const [what, mode, output] of [
  ['stops mid-body', 'pause', true],
  ['has not started', 'slow', false],
]) {
  test(`an answer that ${what} at spendpol_orphan_timeout is billed as estimated: the prompt${output ? ' and the output received' : ''}`, async () => {
    const { key, keyId, budget } = await budgetedKey(`timeout-${mode}`);
    const body = chatBody(`timeout-${mode}`);
    const delay = ORPHAN_TIMEOUT_MS * 3;
    const started = Date.now();
    await hangUp(key, body, { mode: `${mode}-${delay}`, after: 200 });
    const row = await rowOf(keyId);
    assert.ok(Date.now() - started < delay, `settled at the bound (${Date.now() - started} ms), not when the provider finished`);
    assert.equal(row.status, 499);
    assert.ok(warned(row), `usage_estimated in ${JSON.stringify(row.warnings)}`);
    assert.equal(row.input_tokens, promptTokens(body), `input tokens ${row.input_tokens}`);
    assert.equal(row.output_tokens > 0, output, `output tokens ${row.output_tokens}`);
    assert.ok(BigInt(row.cost_nano) > 0n, `cost ${row.cost_nano}`);
    assert.ok(row.latency_ms >= ORPHAN_TIMEOUT_MS - 100 && row.latency_ms < delay, `latency ${row.latency_ms} ms`);
    await assertBudgetSpend(budget, BigInt(row.cost_nano));
  });
}

test('an answer larger than spendpol_orphan_max_size after the client left is cut there and estimated', async () => {
  const { key, keyId, budget } = await budgetedKey('size');
  const body = chatBody('size');
  // 200 KB of answer, half of it after the client has gone: over the 64k bound
  await hangUp(key, body, { mode: `pad-200000,pause-${600 * SLOW}`, after: 150 });
  const row = await rowOf(keyId);
  assert.equal(row.status, 499);
  assert.ok(warned(row), `usage_estimated in ${JSON.stringify(row.warnings)}`);
  // at least the half that arrived before the pause
  assert.ok(row.output_tokens >= 100000 / 4 - 1000, `output tokens ${row.output_tokens}`);
  assert.ok(BigInt(row.cost_nano) > 0n);
  await assertBudgetSpend(budget, BigInt(row.cost_nano));
});

test('an orphan read to its end leaves its provider connection open for reuse', async () => {
  const { key, keyId } = await budgetedKey('after');
  const body = chatBody('after');
  await hangUp(key, body, { mode: `slow-${300 * SLOW}`, after: 100 });
  await rowOf(keyId);
  const req = s.fixture.completions().find((r) => r.body.includes(body.messages[0].content.slice(0, 40)));
  assert.ok(req, 'the provider got the request');
  const conn = s.fixture.connections.find((c) => c.remotePort === req.remotePort);
  // the answer was read to its end: the connection is kept, not closed
  await sleep(300 * SLOW);
  assert.equal(conn.open, true, `the orphan's connection (port ${req.remotePort}) is still open`);
  const r = await s.client(key).chat.completions.create(chatBody('after-2'));
  assert.equal(r.choices[0].finish_reason, 'stop');
});
