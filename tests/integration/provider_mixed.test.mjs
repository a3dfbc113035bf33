// All five fixture providers behind one gateway at once: concurrent streamed
// and non-streamed requests to anthropic, google, azure, cohere and mistral
// never mix answers or usage, and each audit row has its exact cost.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Stack } from './lib/stack.mjs';
import {
  CREDENTIAL, SLOW, rawRequest, auditRow, assertRowUsage, costNano, priceOf, waitRouted, assertNoSpendpolKey,
} from './lib/providers.mjs';
import * as anthropic from '../fixtures/providers/anthropic.mjs';
import * as google from '../fixtures/providers/google.mjs';
import * as azure from '../fixtures/providers/azure.mjs';
import * as cohere from '../fixtures/providers/cohere.mjs';
import * as mistral from '../fixtures/providers/mistral.mjs';

const s = new Stack({ provider: false });
const fx = {};
let key;

const P = {
  anthropic: {
    mod: anthropic, start: anthropic.startAnthropicFixture, model: 'claude-haiku-4-5',
    req: (prompt, stream) => ({ path: '/v1/messages', headers: { 'x-api-key': key }, body: { model: 'claude-haiku-4-5', max_tokens: 50, messages: [{ role: 'user', content: prompt }], stream } }),
    text: (r, stream) => (stream ? sseData(r.text).filter((e) => e.type === 'content_block_delta').map((e) => e.delta.text).join('') : r.json.content[0].text),
  },
  google: {
    mod: google, start: google.startGoogleFixture, model: 'gemini-2.5-flash-lite',
    req: (prompt, stream) => ({
      path: `/v1beta/models/gemini-2.5-flash-lite:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
      headers: { 'x-goog-api-key': key }, body: { contents: [{ role: 'user', parts: [{ text: prompt }] }], generationConfig: { maxOutputTokens: 50 } },
    }),
    text: (r, stream) => (stream ? sseData(r.text) : [r.json]).map((e) => e.candidates[0].content.parts[0].text).join(''),
  },
  azure: {
    mod: azure, start: azure.startAzureFixture, model: 'gpt-4o-mini', provider: { model_aliases: { 'mini-eu': 'gpt-4o-mini' } },
    req: (prompt, stream) => ({
      path: '/openai/deployments/mini-eu/chat/completions?api-version=2024-10-21', headers: { 'api-key': key },
      body: { messages: [{ role: 'user', content: prompt }], max_tokens: 50, stream },
    }),
    text: (r, stream) => (stream ? sseData(r.text).map((e) => e.choices?.[0]?.delta?.content ?? '').join('') : r.json.choices[0].message.content),
  },
  cohere: {
    mod: cohere, start: cohere.startCohereFixture, model: 'command-r-08-2024',
    req: (prompt, stream) => ({ path: '/v2/chat', headers: { authorization: `Bearer ${key}` }, body: { model: 'command-r-08-2024', messages: [{ role: 'user', content: prompt }], max_tokens: 50, stream } }),
    text: (r, stream) => (stream ? sseData(r.text).filter((e) => e.type === 'content-delta').map((e) => e.delta.message.content.text).join('') : r.json.message.content[0].text),
  },
  mistral: {
    mod: mistral, start: mistral.startMistralFixture, model: 'ministral-8b-latest',
    req: (prompt, stream) => ({ path: '/v1/chat/completions', headers: { authorization: `Bearer ${key}` }, body: { model: 'ministral-8b-latest', messages: [{ role: 'user', content: prompt }], max_tokens: 50, stream } }),
    text: (r, stream) => (stream ? sseData(r.text).map((e) => e.choices?.[0]?.delta?.content ?? '').join('') : r.json.choices[0].message.content),
  },
};

/** the JSON payloads of an SSE body's data: lines ([DONE] left out) */
function sseData(text) {
  return text.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim())
    .filter((d) => d && d !== '[DONE]').map((d) => JSON.parse(d));
}

before(async () => {
  try { await s.start(); } catch (e) { s.failed = true; throw e; }
  for (const [name, p] of Object.entries(P)) {
    fx[name] = await p.start({ expectedKey: CREDENTIAL });
    const r = await s.api('PUT', `/providers/${name}`, { body: { api_key: CREDENTIAL, base_url: fx[name].url, ...(p.provider ?? {}) } });
    assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/${name} -> ${r.status} ${r.text}`);
  }
  key = (await s.createKey({ name: 'mixed' })).key;
  for (const name of Object.keys(P)) await waitRouted(s, name, key);
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

test('concurrent requests to all five providers: answers and usage never mix, every cost exact', async () => {
  const jobs = [];
  let i = 0;
  for (const [name, p] of Object.entries(P)) {
    for (const stream of [true, false, true, false]) {
      const tag = crypto.randomBytes(4).toString('hex');
      const prompt = `${name} #${i++} ${tag} ${'ä✓'.repeat(i * 3)} fixture-split:${['awkward', 'utf8', 'lines'][i % 3]}`;
      jobs.push({ name, p, stream, prompt, tag });
    }
  }
  const results = await Promise.all(jobs.map(async (j) => {
    const r = j.p.req(j.prompt, j.stream);
    const res = await rawRequest(`${s.proxyURL}/v1/${j.name}${r.path}`, { headers: r.headers, body: r.body });
    return { ...j, res };
  }));
  for (const j of results) {
    assert.equal(j.res.status, 200, `${j.name}: ${j.res.text.slice(0, 200)}`);
    const rec = fx[j.name].requests.find((x) => x.body.includes(j.tag));
    assert.ok(rec, `${j.name}: the fixture got ${j.tag}`);
    assertNoSpendpolKey(rec, key);
    assert.equal(j.p.text(j.res, j.stream), j.p.mod.replyFor(rec), `${j.name} ${j.stream ? 'streamed' : 'JSON'} answer`);
    const u = j.p.mod.billingFor(rec);
    const row = await auditRow(s, j.res.headers['x-spendpol-audit-id']);
    assert.equal(row.provider, j.name);
    assertRowUsage(row, u, costNano(priceOf(j.name, j.p.model), u), `${j.name} ${j.stream ? 'streamed' : 'JSON'}`);
    assert.equal(j.stream ? j.res.trailers['x-spendpol-cost'] : j.res.headers['x-spendpol-cost'], row.cost_usd);
  }
});

// what sp_query_key_names holds, in lower and in mixed letter case
const KEY_SPELLINGS = ['key', 'api-key', 'api_key', 'apikey', 'x-api-key', 'x-goog-api-key', 'spendpol-key', 'x-spendpol-key',
  'KEY', 'Api-Key', 'API_KEY', 'ApiKey', 'X-Api-Key', 'X-GOOG-API-KEY', 'Spendpol-Key', 'X-Spendpol-KEY'];

test('a Spendpol key in the query string, under every spelling and letter case, authenticates with every provider and never reaches it', async () => {
  for (const [name, p] of Object.entries(P)) {
    for (const spelling of KEY_SPELLINGS) {
      const { path, body } = p.req(`spelled ${spelling}`, false);
      const sep = path.includes('?') ? '&' : '?';
      const r = await rawRequest(`${s.proxyURL}/v1/${name}${path}${sep}${spelling}=${key}`, { body });
      assert.equal(r.status, 200, `${name} ?${spelling}=: ${r.status} ${r.text.slice(0, 200)}`);
      const rec = fx[name].requests.at(-1);
      assert.ok(rec.path.startsWith(path.split('?')[0]) || rec.path.includes(path.split('?')[0]), `${name}: the fixture got ${rec.path}`);
      assertNoSpendpolKey(rec, key);
      if (path.includes('?')) assert.ok(rec.path.includes(path.split('?')[1]), `${name}: the other parameters stay (${rec.path})`);
    }
  }
});
