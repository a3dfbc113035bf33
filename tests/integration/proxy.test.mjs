// A governed OpenAI call through the proxy, non-streaming and streaming,
// driven by the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import {
  useStack, spendpolHeaders, expectedCostNano, nanoToUsd, usdToNano, UUID_RE, auditRowsOf,
} from './lib/stack.mjs';
import { fixtureReply, fixtureUsage } from '../fixtures/openai-fixture.mjs';

const s = useStack();

// 800 code points -> 200 prompt tokens; max_tokens 200 -> 200 completion
// tokens: 200 x 150 + 200 x 600 = 150000 nano-USD = "0.000150"
const PROMPT_800 = 'Tell me about spend governance for LLM APIs, in detail. '.repeat(15).slice(0, 799) + 'é';

/** the header's cost must be the exact cost, to as many decimals as it prints */
function assertCostHeader(cost, expectedNano) {
  assert.match(cost ?? '', /^\d+\.\d+$/, `X-Spendpol-Cost ${cost}`);
  const decimals = cost.split('.')[1].length;
  assert.equal(cost, nanoToUsd(expectedNano, Math.min(decimals, 9)), `cost ${cost} vs expected ${expectedNano} nano-USD`);
}

function assertNoSpendpolKey(req, key) {
  const all = JSON.stringify(req.rawHeaders) + req.body;
  assert.ok(!all.includes(key), 'the Spendpol key reached the provider');
  assert.ok(!/sp_key_/.test(all), 'an sp_key_ reached the provider');
  assert.equal(req.headers['x-spendpol-key'], undefined);
}

test('non-streaming completion: content, X-Spendpol-* headers, provider key, exact cost', async () => {
  const { key } = await s.createKey({ name: 'proxy-plain' });
  s.fixture.clear();
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: PROMPT_800 }], max_tokens: 200 };
  const t0 = Date.now();
  const { data, response } = await s.client(key).chat.completions.create(body).withResponse();
  const elapsed = Date.now() - t0;

  assert.equal(data.choices[0].message.content, fixtureReply(body));
  assert.deepEqual(data.usage, fixtureUsage(body));
  const u = data.usage;
  assert.equal(u.prompt_tokens, 200);
  assert.equal(u.completion_tokens, 200);

  const h = spendpolHeaders(response);
  assertCostHeader(h.cost, expectedCostNano('gpt-4o-mini', u));
  assert.equal(h.cost, '0.000150');
  assert.match(h.model ?? '', /^gpt-4o-mini/, `X-Spendpol-Model ${h.model}`);
  assert.equal(h.tokens, `${u.prompt_tokens}/${u.completion_tokens}`);
  assert.match(h.auditId ?? '', /^evt_[A-Za-z0-9_-]+$/, `X-Spendpol-Audit-Id ${h.auditId}`);
  assert.match(h.traceId ?? '', UUID_RE, `X-Spendpol-Trace-Id ${h.traceId}`);
  assert.match(h.spanId ?? '', /^[0-9a-f]{16}$/, `X-Spendpol-Span-Id ${h.spanId}`);
  assert.match(h.latencyMs ?? '', /^\d+(\.\d+)?$/, `X-Spendpol-Latency-Ms ${h.latencyMs}`);
  assert.ok(Number(h.latencyMs) <= elapsed + 5, `latency ${h.latencyMs} ms > client-observed ${elapsed} ms`);
  assert.equal(h.region, s.region);

  const reqs = s.fixture.completions();
  assert.equal(reqs.length, 1, 'the fixture got exactly one request');
  assert.equal(reqs[0].method, 'POST');
  assert.equal(reqs[0].headers.authorization, 'Bearer sk-fixture-secret');
  assertNoSpendpolKey(reqs[0], key);
  assert.equal(reqs[0].json.model, 'gpt-4o-mini');
  assert.deepEqual(reqs[0].json.messages, body.messages);
});

test('cached input tokens are priced at the cached rate', async () => {
  const { key } = await s.createKey();
  // 4800 code points -> 1200 prompt tokens, 600 of them cached (fixture rule)
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(4800) }], max_tokens: 100 };
  const { data, response } = await s.client(key).chat.completions.create(body).withResponse();
  assert.equal(data.usage.prompt_tokens_details.cached_tokens, 600);
  const expected = expectedCostNano('gpt-4o-mini', data.usage); // 600x150 + 600x75 + 100x600
  assert.equal(expected, 195000n);
  assertCostHeader(response.headers.get('x-spendpol-cost'), expected);
});

test('a given X-Spendpol-Trace-Id is echoed back', async () => {
  const { key } = await s.createKey();
  const trace = crypto.randomUUID();
  const { response } = await s.client(key).chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'X-Spendpol-Trace-Id': trace } })
    .withResponse();
  assert.equal(response.headers.get('x-spendpol-trace-id'), trace);
});

test('streaming completion: chunks concatenate to the fixture text; usage recorded without include_usage', async () => {
  const { key } = await s.createKey({ name: 'proxy-stream' });
  s.fixture.clear();
  const trace = crypto.randomUUID();
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: PROMPT_800 }], max_tokens: 200, stream: true };
  const { data: stream, response } = await s.client(key).chat.completions
    .create(body, { headers: { 'X-Spendpol-Trace-Id': trace } }).withResponse();
  assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
  let text = '';
  let chunks = 0;
  let finish = null;
  for await (const c of stream) {
    chunks++;
    if (c.choices?.length) {
      text += c.choices[0].delta?.content ?? '';
      finish = c.choices[0].finish_reason ?? finish;
    }
  }
  assert.ok(chunks > 3, `only ${chunks} chunks`);
  assert.equal(text, fixtureReply(body));
  assert.match(text, /Héllo wörld ✓/);
  assert.equal(finish, 'stop');

  const reqs = s.fixture.completions();
  assert.equal(reqs.length, 1);
  assert.equal(reqs[0].headers.authorization, 'Bearer sk-fixture-secret');
  assertNoSpendpolKey(reqs[0], key);
  assert.equal(reqs[0].json.stream, true);

  // the audit row carries the real usage and cost
  const auditId = response.headers.get('x-spendpol-audit-id');
  const usage = fixtureUsage(body);
  const row = await waitRow((r) => (auditId ? r.id === auditId : r.trace_id === trace));
  assert.equal(row.trace_id, trace);
  assert.equal(Number(row.input_tokens), usage.prompt_tokens);
  assert.equal(Number(row.output_tokens), usage.completion_tokens);
  assert.equal(usdToNano(row.cost_usd), expectedCostNano('gpt-4o-mini', usage));
});

test('streaming with include_usage: the client gets the usage chunk', async () => {
  const { key } = await s.createKey();
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'stream me, with usage ✓' }], stream: true, stream_options: { include_usage: true } };
  const stream = await s.client(key).chat.completions.create(body);
  let text = '';
  let usage = null;
  for await (const c of stream) {
    text += c.choices?.[0]?.delta?.content ?? '';
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, fixtureReply(body));
  assert.deepEqual(usage, fixtureUsage(body));
});

test('concurrent streams do not mix', async () => {
  const { key } = await s.createKey();
  const client = s.client(key);
  const bodies = Array.from({ length: 6 }, (_, i) => ({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: `stream number ${i} ${'ü'.repeat(i * 7)}` }], stream: true,
  }));
  const texts = await Promise.all(bodies.map(async (b) => {
    let t = '';
    for await (const c of await client.chat.completions.create(b)) t += c.choices?.[0]?.delta?.content ?? '';
    return t;
  }));
  texts.forEach((t, i) => assert.equal(t, fixtureReply(bodies[i])));
});

async function waitRow(pred) {
  const end = Date.now() + 15000;
  for (;;) {
    const rows = auditRowsOf(await s.auditLogs({ limit: 100 }));
    const r = rows.find(pred);
    if (r) return r;
    if (Date.now() > end) throw new Error('audit row did not appear within 15 s');
    await new Promise((res) => setTimeout(res, 100));
  }
}

test('streaming: X-Spendpol-Cost and X-Spendpol-Tokens arrive as trailers, equal to the audit row', async () => {
  const { key } = await s.createKey({ name: 'trailers' });
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: PROMPT_800 }], max_tokens: 200, stream: true };
  const res = await new Promise((resolve, reject) => {
    const req = http.request(`${s.openaiBaseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', te: 'trailers' },
    }, (r) => {
      const chunks = [];
      r.on('data', (d) => chunks.push(d));
      r.on('end', () => resolve({ status: r.statusCode, headers: r.headers, trailers: r.trailers, text: Buffer.concat(chunks).toString('utf8') }));
      r.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'] ?? '', /text\/event-stream/);
  assert.match(res.headers.trailer ?? '', /X-Spendpol-Cost/i, `Trailer: ${res.headers.trailer}`);
  assert.match(res.text, /data: \[DONE\]/);
  const usage = fixtureUsage(body);
  assert.equal(res.trailers['x-spendpol-tokens'], `${usage.prompt_tokens}/${usage.completion_tokens}`);
  assertCostHeader(res.trailers['x-spendpol-cost'], expectedCostNano('gpt-4o-mini', usage));
  const row = await s.waitAuditRow(res.headers['x-spendpol-audit-id']);
  assert.equal(usdToNano(row.cost_usd), usdToNano(res.trailers['x-spendpol-cost']));
});
