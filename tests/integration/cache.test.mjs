// The response cache (issue 12) with OpenAI's own SDK against the OpenAI
// fixture: which requests are looked up (X-Spendpol-Cache hit, miss or
// skip), what a hit answers (the stored answer, no upstream request, cost 0,
// its own audit row with what it saved), what is never stored, the
// organisation's settings (GET/PUT /cache/config: mode, ttl, scope,
// only_deterministic) reaching nginx through the snapshot, purges (DELETE
// /cache), rate limits and budgets with hits, and GET /cache/stats.
// The six providers, streamed and not: cache-providers.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import OpenAI from 'openai';
import { newKey, sleep, waitFor, usdToNano } from './lib/stack.mjs';
import { rawRequest } from './lib/providers.mjs';
import {
  useCacheStack, lastCall, header, cacheOf, assertHit, assertHitCostHeaders, assertHitCostTrailers,
  assertMissHitRows, savedNano, replayOf, CACHE_DEFAULTS, getCacheConfig, putCacheConfig, purgeCache,
  cacheStats, waitApplied, freshWindow,
} from './lib/cache.mjs';
import { fixtureUsage } from '../fixtures/openai-fixture.mjs';

let key;
const s = useCacheStack(async (stack) => {
  key = (await stack.createKey({ name: 'cache' })).key;
});

const MODEL = 'gpt-4o-mini';
/** a prompt no other test sends */
const fresh = (label) => `${label} ${crypto.randomBytes(5).toString('hex')} — grüß ✓`;
/** a deterministic chat request (temperature 0) */
const chatBody = (prompt, extra = {}) => ({
  model: MODEL, max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: prompt }], ...extra,
});
const upstream = () => s.fixture.completions().length;
const upstreamEmbeddings = () => s.fixture.requests.filter((r) => r.path.endsWith('/embeddings')).length;
const row = (res) => s.waitAuditRow(header(res, 'x-spendpol-audit-id'));

/**
 * A chat completion through the openai SDK: {status, headers, call (the
 * recorded request and response), json (the JSON body as sent), or for a
 * stream the text deltas, finish reason, usage, the chunks carrying usage
 * and streamError when it was cut}; an SDK error gives {status, error}.
 */
async function chat(k, body, { headers } = {}) {
  let data;
  let response;
  try {
    ({ data, response } = await s.client(k).chat.completions.create(body, headers ? { headers } : undefined).withResponse());
  } catch (e) {
    return { status: e.status, headers: e.headers, error: e, call: lastCall() };
  }
  const out = { status: response.status, headers: response.headers, call: lastCall() };
  if (!body.stream) {
    out.json = JSON.parse(await out.call.body);
    out.data = data;
    return out;
  }
  out.deltas = [];
  out.finish = null;
  out.usage = null;
  out.usageChunks = 0;
  try {
    for await (const ch of data) {
      const c = ch.choices?.[0];
      if (c?.delta?.content) out.deltas.push(c.delta.content);
      if (c?.finish_reason) out.finish = c.finish_reason;
      if (ch.usage) { out.usage = ch.usage; out.usageChunks++; }
    }
  } catch (e) { out.streamError = e; }
  out.text = out.deltas.join('');
  return out;
}

/** what an SDK stream showed, for comparing a hit with the miss before it */
const seen = (r) => ({ deltas: r.deltas, finish: r.finish, usage: r.usage });

/** X-Spendpol-Cache of one fresh request (for polls on a setting) */
async function probeOnce(body) {
  const r = await chat(key, body);
  assert.equal(r.status, 200, `probe: ${r.status} ${r.error?.message}`);
  return cacheOf(r);
}

// ------------------------------------------------------------ settings

test('GET /cache/config has the defaults; PUT refuses a bad value naming the field and changes nothing', async () => {
  const cfg = await getCacheConfig(s);
  for (const [k, v] of Object.entries(CACHE_DEFAULTS)) assert.equal(cfg[k], v, `default ${k}: ${JSON.stringify(cfg)}`);

  // a valid change first, so a refused PUT that wrote half would show.
  // Not of mode, scope or only_deterministic: the next test does not wait
  // for the defaults to reach nginx, and those change what is looked up
  // and under which key
  const changed = { ...CACHE_DEFAULTS, ttl_seconds: 120, max_entry_bytes: 1024 * 1024 - 1 };
  await putCacheConfig(s, changed);
  const bad = [
    ['mode', 'fuzzy'], ['mode', 3], ['ttl_seconds', 0], ['ttl_seconds', -5], ['ttl_seconds', 1.5],
    ['ttl_seconds', 30 * 86400 + 1], ['ttl_seconds', '60'], ['scope', 'team'],
    ['only_deterministic', 'yes'], ['max_entry_bytes', 0], ['max_entry_bytes', 16 * 1024 * 1024 + 1],
  ];
  try {
    for (const [field, value] of bad) {
      const body = { mode: 'off', ttl_seconds: 60, scope: 'department', only_deterministic: false, max_entry_bytes: 2048, [field]: value };
      const r = await s.api('PUT', '/cache/config', { body });
      assert.ok(r.status === 400 || r.status === 422, `PUT ${field}=${JSON.stringify(value)} -> ${r.status} ${r.text}`);
      assert.equal(r.json?.error?.field, field, `PUT ${field}=${JSON.stringify(value)}: ${r.text}`);
      assert.equal(typeof r.json?.error?.message, 'string');
    }
    const r = await s.api('PUT', '/cache/config', { body: { ...CACHE_DEFAULTS, colour: 'blue' } });
    assert.ok(r.status === 400 || r.status === 422, `an unknown member -> ${r.status} ${r.text}`);
    const after = await getCacheConfig(s);
    for (const [k, v] of Object.entries(changed)) assert.equal(after[k], v, `${k} unchanged by refused PUTs: ${JSON.stringify(after)}`);
  } finally {
    await putCacheConfig(s, {});
  }
  const restored = await getCacheConfig(s);
  for (const [k, v] of Object.entries(CACHE_DEFAULTS)) assert.equal(restored[k], v, `${k} back to its default`);

  const noKey = await s.api('GET', '/cache/config', { key: null });
  assert.equal(noKey.status, 401, noKey.text);
  const proxyKey = await s.api('PUT', '/cache/config', { key, body: CACHE_DEFAULTS });
  assert.equal(proxyKey.status, 403, `a proxy key cannot change the cache: ${proxyKey.text}`);
});

// ------------------------------------------------------------ a hit

test('temperature 0: the second identical call is a hit: no upstream request, the same JSON, 200, cost 0, tokens 0/0, an age, a fresh audit id', async () => {
  const body = chatBody(fresh('hit'));
  const n0 = upstream();
  const a = await chat(key, body);
  assert.equal(a.status, 200, a.error?.message);
  assert.equal(cacheOf(a), 'miss');
  assert.equal(upstream(), n0 + 1);
  assert.ok(usdToNano(header(a, 'x-spendpol-cost')) > 0n, `the miss costs: ${header(a, 'x-spendpol-cost')}`);

  const b = await chat(key, body);
  assert.equal(upstream(), n0 + 1, 'a hit reaches no provider');
  const { age } = assertHit(b, { first: a });
  assert.ok(age <= 5, `age ${age} s of an answer stored a moment ago`);
  assertHitCostHeaders(b);
  assert.deepEqual(b.json, a.json, 'the stored JSON body');
  assert.equal(b.data.choices[0].message.content, a.data.choices[0].message.content);

  const [missRow, hitRow] = [await row(a), await row(b)];
  assertMissHitRows(missRow, hitRow);
  assert.equal(header(a, 'x-spendpol-cost'), missRow.cost_usd);
  assert.equal(hitRow.stream, false);
  assert.equal(hitRow.provider, 'openai');

  // a third call is a hit too, with its own audit id
  const c = await chat(key, body);
  assertHit(c, { first: b });
  assert.notEqual(header(c, 'x-spendpol-audit-id'), header(a, 'x-spendpol-audit-id'));
  assert.equal(upstream(), n0 + 1);
});

// ------------------------------------------------------------ what is looked up

test('only_deterministic: a seed alone qualifies; temperature 0.7 or none without a seed is skip and never stored; embeddings always qualify', async () => {
  const n0 = upstream();
  // a seed, no temperature
  const seeded = { model: MODEL, max_tokens: 12, seed: 42, messages: [{ role: 'user', content: fresh('seed') }] };
  const s1 = await chat(key, seeded);
  assert.equal(cacheOf(s1), 'miss');
  const s2 = await chat(key, seeded);
  assertHit(s2, { first: s1, what: 'seeded' });
  assert.deepEqual(s2.json, s1.json);
  assert.equal(upstream(), n0 + 1);

  // a seed with temperature 0.7: the seed makes it repeatable
  const seededWarm = { ...seeded, temperature: 0.7, messages: [{ role: 'user', content: fresh('seed warm') }] };
  assert.equal(cacheOf(await chat(key, seededWarm)), 'miss');
  assertHit(await chat(key, seededWarm), { what: 'seeded at 0.7' });
  assert.equal(upstream(), n0 + 2);

  // temperature 0.7, no seed: not looked up, not stored
  const warm = chatBody(fresh('warm'), { temperature: 0.7 });
  const w1 = await chat(key, warm);
  const w2 = await chat(key, warm);
  assert.equal(w1.status, 200);
  assert.equal(cacheOf(w1), 'skip');
  assert.equal(cacheOf(w2), 'skip');
  assert.equal(upstream(), n0 + 4, 'both reach the provider');
  const warmRow = await row(w2);
  assert.equal(warmRow.cache, 'skip');
  assert.equal(savedNano(warmRow), 0n);
  assert.ok(usdToNano(warmRow.cost_usd) > 0n);

  // no temperature (the provider's default samples) and no seed: skip
  const plain = { model: MODEL, max_tokens: 12, messages: [{ role: 'user', content: fresh('plain') }] };
  assert.equal(cacheOf(await chat(key, plain)), 'skip');
  assert.equal(cacheOf(await chat(key, plain)), 'skip');
  assert.equal(upstream(), n0 + 6);

  // embeddings sample nothing: always cacheable
  const e0 = upstreamEmbeddings();
  const input = fresh('embed me');
  const client = s.client(key);
  const { data: d1, response: r1 } = await client.embeddings.create({ model: 'text-embedding-3-small', input }).withResponse();
  const b1 = await lastCall().body;
  assert.equal(cacheOf(r1), 'miss');
  const { data: d2, response: r2 } = await client.embeddings.create({ model: 'text-embedding-3-small', input }).withResponse();
  const b2 = await lastCall().body;
  assertHit(r2, { first: r1, what: 'embeddings' });
  assertHitCostHeaders(r2, 'embeddings hit');
  assert.equal(upstreamEmbeddings(), e0 + 1, 'an embeddings hit reaches no provider');
  assert.deepEqual(JSON.parse(b2), JSON.parse(b1));
  assert.deepEqual(d2.data[0].embedding, d1.data[0].embedding);
  const [em, eh] = [await row(r1), await row(r2)];
  assert.equal(em.cache, 'miss');
  assert.equal(eh.cache, 'hit');
  assert.equal(savedNano(eh), usdToNano(em.cost_usd));
});

test('X-Spendpol-Cache: skip on the request is not looked up and not stored: a later normal call is a miss', async () => {
  const body = chatBody(fresh('request skip'));
  const n0 = upstream();
  const a = await chat(key, body, { headers: { 'X-Spendpol-Cache': 'skip' } });
  assert.equal(a.status, 200);
  assert.equal(cacheOf(a), 'skip');
  assert.equal(upstream(), n0 + 1);
  const b = await chat(key, body);
  assert.equal(cacheOf(b), 'miss', 'the skipped answer was not stored');
  assert.equal(upstream(), n0 + 2);
  const c = await chat(key, body);
  assertHit(c, { first: b });
  // a stored answer does not serve a request that says skip
  const d = await chat(key, body, { headers: { 'X-Spendpol-Cache': 'skip' } });
  assert.equal(cacheOf(d), 'skip');
  assert.equal(upstream(), n0 + 3);
  assert.equal((await row(a)).cache, 'skip');
  assert.equal((await row(d)).cache, 'skip');
});

test('a provider beta or version header the client sends is part of the key: another value is a miss, the same a hit', async () => {
  const body = chatBody(fresh('beta header'));
  const n0 = upstream();
  const plain = await chat(key, body);
  assert.equal(cacheOf(plain), 'miss');
  const beta = await chat(key, body, { headers: { 'OpenAI-Beta': 'assistants=v2' } });
  assert.equal(cacheOf(beta), 'miss', 'a beta header may change the answer');
  const again = await chat(key, body, { headers: { 'OpenAI-Beta': 'assistants=v2' } });
  assertHit(again, { first: beta });
  const other = await chat(key, body, { headers: { 'OpenAI-Beta': 'assistants=v1' } });
  assert.equal(cacheOf(other), 'miss');
  assert.equal(upstream(), n0 + 3);
  assertHit(await chat(key, body), { first: plain });
});

/**
 * POST /chat/completions whose answer is read only after pauseMs (the
 * socket's buffers fill and nginx must wait to write): {status, cache,
 * bytes, body}
 */
function slowReader(k, body, { pauseMs, headers = {} }) {
  return new Promise((resolve, reject) => {
    const url = new URL(`${s.openaiBaseURL}/chat/completions`);
    const req = http.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${k}`, ...headers },
    }, (res) => {
      res.pause();
      const parts = [];
      setTimeout(() => {
        res.on('data', (d) => parts.push(d));
        res.on('end', () => {
          const buf = Buffer.concat(parts);
          resolve({ status: res.statusCode, cache: res.headers['x-spendpol-cache'], bytes: buf.length, body: buf });
        });
        res.resume();
      }, pauseMs);
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('an answer larger than the socket takes at once, live or a hit, is sent whole to a slow reader; the hit never reaches the provider', async () => {
  const before = await getCacheConfig(s);
  await putCacheConfig(s, { max_entry_bytes: 8 * 1024 * 1024 });
  try {
    // a 6 MB answer: far more than the loopback socket's buffers hold
    const body = chatBody(fresh('a large hit'));
    const pad = { 'x-fixture-mode': `pad-${6 * 1024 * 1024}` };
    // stored once the setting reached the worker that answers
    let first;
    await waitFor(async () => {
      first = await slowReader(key, body, { pauseMs: 0, headers: pad });
      return first.status === 200 && first.cache === 'hit';
    }, { timeout: 15_000, interval: 50, message: 'a 6 MB answer stored under max_entry_bytes 8 MiB' });
    assert.ok(first.bytes > 6 * 1024 * 1024, `${first.bytes} bytes`);
    // the live answer too (held whole for its cost, then written in parts)
    const live = await slowReader(key, body, { pauseMs: 500, headers: { ...pad, 'X-Spendpol-Cache': 'skip' } });
    assert.equal(live.status, 200);
    assert.equal(live.cache, 'skip');
    assert.equal(JSON.parse(live.body).choices[0].message.content,
      JSON.parse(first.body).choices[0].message.content, 'a live 6 MB answer, whole, to a slow reader');
    const n0 = upstream();
    const hit = await slowReader(key, body, { pauseMs: 500, headers: pad });
    assert.equal(hit.status, 200);
    assert.equal(hit.cache, 'hit');
    assert.equal(hit.bytes, first.bytes, 'the whole answer');
    assert.ok(hit.body.equals(first.body), 'the same bytes');
    await sleep(300);
    assert.equal(upstream(), n0, 'a hit sent in several writes reaches no provider');
  } finally {
    await putCacheConfig(s, { max_entry_bytes: before.max_entry_bytes });
  }
});

// ------------------------------------------------------------ streams

test('a stream is answered from a stored stream and a JSON request from a stored answer, never crossed; a streamed hit has its cost in the trailers', async () => {
  const n0 = upstream();
  const prompt = fresh('json first');
  const j1 = await chat(key, chatBody(prompt));
  assert.equal(cacheOf(j1), 'miss');
  const st = chatBody(prompt, { stream: true, stream_options: { include_usage: true } });
  const s1 = await chat(key, st);
  assert.equal(cacheOf(s1), 'miss', 'a stored JSON answer does not answer a stream');
  assert.equal(upstream(), n0 + 2);
  assert.match(header(s1, 'content-type') ?? '', /text\/event-stream/);
  const s2 = await chat(key, st);
  assertHit(s2, { first: s1, what: 'streamed hit' });
  assert.match(header(s2, 'content-type') ?? '', /text\/event-stream/, 'a stream is answered as a stream');
  assert.deepEqual(seen(s2), seen(s1), 'the same text deltas, finish reason and usage');
  assert.equal(s2.text, s1.text);
  assert.equal(s1.finish, 'stop');
  assert.deepEqual(s1.usage, fixtureUsage(st));
  const j2 = await chat(key, chatBody(prompt));
  assertHit(j2, { first: j1, what: 'JSON hit' });
  assert.deepEqual(j2.json, j1.json, 'a JSON request gets the stored JSON, not the stream');
  assert.equal(upstream(), n0 + 2);

  // the SDK's streamed request sent again raw: the trailers of a hit
  const raw = await rawRequest(s2.call.url, replayOf(s2.call));
  assert.equal(raw.status, 200, raw.text.slice(0, 300));
  assertHit({ headers: raw.headers }, { first: s2, what: 'raw streamed hit' });
  assertHitCostTrailers(raw);
  assert.equal(upstream(), n0 + 2);

  const [m, h] = [await row(s1), await row(s2)];
  assertMissHitRows(m, h, 'streamed');
  assert.equal(h.stream, true);

  // the other way: a stored stream does not answer a JSON request
  const other = fresh('stream first');
  const t1 = await chat(key, chatBody(other, { stream: true }));
  assert.equal(cacheOf(t1), 'miss');
  const u1 = await chat(key, chatBody(other));
  assert.equal(cacheOf(u1), 'miss', 'a stored stream does not answer a JSON request');
  assert.equal(upstream(), n0 + 4);
  assertHit(await chat(key, chatBody(other, { stream: true })), { what: 'stream after stream' });
  assertHit(await chat(key, chatBody(other)), { what: 'JSON after JSON' });
  assert.equal(upstream(), n0 + 4);
});

test('a stream stored without include_usage shows the usage chunk to a client that asks for it, and one stored with it hides it from a client that does not', async () => {
  const ask = { stream_options: { include_usage: true } };
  for (const storedAsking of [false, true]) {
    const prompt = fresh(`usage stored ${storedAsking}`);
    const base = chatBody(prompt, { stream: true });
    const n0 = upstream();
    const first = await chat(key, storedAsking ? { ...base, ...ask } : base);
    assert.equal(cacheOf(first), 'miss');
    assert.equal(first.usageChunks, storedAsking ? 1 : 0, `the live stream (asked: ${storedAsking})`);
    for (const asking of [!storedAsking, storedAsking, !storedAsking]) {
      const r = await chat(key, asking ? { ...base, ...ask } : base);
      const what = `stored ${storedAsking ? 'with' : 'without'} usage, replayed to a client that ${asking ? 'asks' : 'does not ask'}`;
      assertHit(r, { first, what });
      assert.equal(r.streamError, undefined, `${what}: ${r.streamError}`);
      assert.deepEqual(r.deltas, first.deltas, `${what}: the same text deltas`);
      assert.equal(r.finish, 'stop', what);
      if (asking) {
        assert.equal(r.usageChunks, 1, `${what}: one usage chunk`);
        assert.deepEqual(r.usage, fixtureUsage(base), `${what}: the provider's usage`);
      } else {
        assert.equal(r.usageChunks, 0, `${what}: no usage chunk`);
        assert.equal(r.usage, null, what);
      }
    }
    assert.equal(upstream(), n0 + 1, 'one upstream request for the four streams');
  }
});

// ------------------------------------------------------------ never stored

test('never stored: a provider error, a stream cut before its end, an answer whose usage was estimated', async () => {
  // a provider error (X-Fixture-Mode reaches the fixture; the key is the body)
  const body = chatBody(fresh('error'));
  const n0 = upstream();
  const e1 = await chat(key, body, { headers: { 'X-Fixture-Mode': '500' } });
  assert.equal(e1.status, 500);
  assert.ok(e1.error instanceof OpenAI.InternalServerError, String(e1.error));
  assert.equal(cacheOf(e1), 'miss', 'an error answer was looked up');
  const e2 = await chat(key, body, { headers: { 'X-Fixture-Mode': '500' } });
  assert.equal(e2.status, 500);
  assert.equal(cacheOf(e2), 'miss');
  assert.equal(upstream(), n0 + 2, 'an error is not served from the cache');
  const ok1 = await chat(key, body);
  assert.equal(ok1.status, 200);
  assert.equal(cacheOf(ok1), 'miss', 'the error was not stored');
  assert.equal(upstream(), n0 + 3);
  assertHit(await chat(key, body), { first: ok1, what: 'after the error' });
  assert.equal((await row(e2)).cache, 'miss');

  // a stream the provider cuts
  const st = chatBody(fresh('cut'), { stream: true });
  const n1 = upstream();
  const c1 = await chat(key, st, { headers: { 'X-Fixture-Mode': 'reset' } });
  assert.equal(cacheOf(c1), 'miss');
  assert.ok(c1.error || c1.streamError || c1.finish === null, 'the stream was cut');
  const c2 = await chat(key, st);
  assert.equal(cacheOf(c2), 'miss', 'a cut stream is not stored');
  assert.equal(upstream(), n1 + 2, 'the next identical stream reaches the provider');
  assert.equal(c2.finish, 'stop');
  const c3 = await chat(key, st);
  assertHit(c3, { first: c2, what: 'after the cut stream' });
  assert.deepEqual(seen(c3), seen(c2));

  // an answer without usage: priced on an estimate, not stored
  const nu = chatBody(fresh('no usage'));
  const n2 = upstream();
  const u1 = await chat(key, nu, { headers: { 'X-Fixture-Mode': 'nousage' } });
  assert.equal(u1.status, 200);
  assert.match(header(u1, 'x-spendpol-policy-warning') ?? '', /usage_estimated/);
  assert.equal(cacheOf(u1), 'miss');
  const u2 = await chat(key, nu, { headers: { 'X-Fixture-Mode': 'nousage' } });
  assert.equal(cacheOf(u2), 'miss', 'an estimated answer is not stored');
  assert.equal(upstream(), n2 + 2);
  const u3 = await chat(key, nu);
  assert.equal(cacheOf(u3), 'miss');
  assert.equal(upstream(), n2 + 3);
  assertHit(await chat(key, nu), { first: u3, what: 'after the estimated answer' });
});

// ------------------------------------------------------------ settings reach nginx

test('mode off: nothing is looked up (skip), not even what was stored before', async () => {
  const stored = chatBody(fresh('stored before off'));
  await chat(key, stored);
  assertHit(await chat(key, stored), { what: 'before off' });
  await putCacheConfig(s, { mode: 'off' });
  try {
    await waitApplied(() => probeOnce(chatBody(fresh('off probe'))), (c) => c === 'skip', { message: 'mode off' });
    const n0 = upstream();
    const a = await chat(key, stored);
    const b = await chat(key, stored);
    assert.equal(cacheOf(a), 'skip');
    assert.equal(cacheOf(b), 'skip');
    assert.equal(upstream(), n0 + 2);
    assert.equal((await getCacheConfig(s)).mode, 'off');
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(async () => {
      const body = chatBody(fresh('on probe'));
      await probeOnce(body);
      return probeOnce(body);
    }, (c) => c === 'hit', { message: 'mode exact again' });
  }
});

test('ttl_seconds 1: the same call is a hit at once and a miss after 1.5 s', async () => {
  // only_deterministic false in the same PUT shows when the settings arrived
  await putCacheConfig(s, { ttl_seconds: 1, only_deterministic: false });
  try {
    await waitApplied(() => probeOnce(chatBody(fresh('ttl probe'), { temperature: 0.7 })), (c) => c !== 'skip',
      { message: 'only_deterministic false with ttl 1' });
    const body = chatBody(fresh('ttl'));
    const n0 = upstream();
    const a = await chat(key, body);
    assert.equal(cacheOf(a), 'miss');
    const b = await chat(key, body);
    const { age } = assertHit(b, { first: a, what: 'within the ttl' });
    assert.ok(age <= 1, `age ${age}`);
    await sleep(1500);
    const c = await chat(key, body);
    assert.equal(cacheOf(c), 'miss', 'expired after ttl_seconds');
    assert.equal(upstream(), n0 + 2);
    assertHit(await chat(key, body), { first: c, what: 'stored again' });
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(() => probeOnce(chatBody(fresh('ttl restore'), { temperature: 0.7 })), (c) => c === 'skip',
      { message: 'the default settings again' });
  }
});

/** a second organisation: its admin key written by the owner, then its provider and a proxy key through the API */
async function secondOrg() {
  const org = `org_cache_${crypto.randomBytes(4).toString('hex')}`;
  const admin = newKey();
  const hash = crypto.createHash('sha256').update(admin).digest('hex');
  const sql = `INSERT INTO orgs (id, name) VALUES ('${org}', 'cache B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'cache B admin', '\\x${hash}', '${admin.slice(0, 8)}', '{proxy,admin}')`;
  const r = spawnSync('psql', [s.ownerDatabaseURL, '-X', '-w', '-v', 'ON_ERROR_STOP=1', '-qtA', '-c', sql], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `psql: ${r.stderr}`);
  const p = await s.api('PUT', '/providers/openai', { key: admin, body: { api_key: 'sk-fixture-secret', base_url: s.fixture.url } });
  assert.ok(p.status >= 200 && p.status < 300, `org B PUT /providers/openai -> ${p.status} ${p.text}`);
  const k = await s.api('POST', '/api-keys', { key: admin, body: { name: 'cache B proxy' } });
  assert.equal(k.status, 201, k.text);
  await s.waitKeyAccepted(k.json.key);
  return { org, admin, key: k.json.key };
}

test('scope org: two keys share entries; scope api_key: they do not; two organisations never share', async () => {
  const other = (await s.createKey({ name: 'cache other' })).key;
  const body = chatBody(fresh('org scope'));
  const n0 = upstream();
  assert.equal(cacheOf(await chat(key, body)), 'miss');
  assertHit(await chat(other, body), { what: 'another key of the organisation' });
  assert.equal(upstream(), n0 + 1);

  const pair = async (b) => {
    const x = await chat(key, b);
    const y = await chat(other, b);
    return [cacheOf(x), cacheOf(y)];
  };
  await putCacheConfig(s, { scope: 'api_key' });
  try {
    await waitApplied(() => pair(chatBody(fresh('key scope probe'))), ([, y]) => y === 'miss', { message: 'scope api_key' });
    const b = chatBody(fresh('key scope'));
    const n1 = upstream();
    assert.deepEqual(await pair(b), ['miss', 'miss'], 'each key its own entry');
    assert.deepEqual(await pair(b), ['hit', 'hit']);
    assert.equal(upstream(), n1 + 2);
    // the org-scoped entry stored before is not the key's
    assert.equal(cacheOf(await chat(other, body)), 'miss');
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(() => pair(chatBody(fresh('org scope probe'))), ([x, y]) => x === 'miss' && y === 'hit', { message: 'scope org again' });
  }

  const b = await secondOrg();
  const shared = chatBody(fresh('two orgs'));
  const n2 = upstream();
  assert.equal(cacheOf(await chat(key, shared)), 'miss');
  assertHit(await chat(key, shared), { what: 'organisation A' });
  const fromB = await chat(b.key, shared);
  assert.equal(fromB.status, 200, fromB.error?.message);
  assert.equal(cacheOf(fromB), 'miss', 'another organisation never gets A\'s entry');
  assert.equal(upstream(), n2 + 2);
  assertHit(await chat(b.key, shared), { what: 'organisation B\'s own entry' });
  assert.equal(upstream(), n2 + 2);
  const cfgB = await getCacheConfig(s, b.admin);
  assert.equal(cfgB.scope, 'org');
});

test('scope project: keys of one project share entries; requests without a project share only with their own key', async () => {
  const p1a = (await s.createKey({ name: 'cache p1 a', project: 'cache-p1' })).key;
  const p1b = (await s.createKey({ name: 'cache p1 b', project: 'cache-p1' })).key;
  const p2 = (await s.createKey({ name: 'cache p2', project: 'cache-p2' })).key;
  const none = (await s.createKey({ name: 'cache no project' })).key;
  await putCacheConfig(s, { scope: 'project' });
  try {
    await waitApplied(async () => {
      const b = chatBody(fresh('project scope probe'));
      await chat(p1a, b);
      return cacheOf(await chat(p2, b));
    }, (c) => c === 'miss', { message: 'scope project' });
    const b = chatBody(fresh('project scope'));
    const n0 = upstream();
    assert.equal(cacheOf(await chat(p1a, b)), 'miss');
    assertHit(await chat(p1b, b), { what: 'another key of the same project' });
    assert.equal(cacheOf(await chat(p2, b)), 'miss', 'another project');
    // no project: not shared with every unattributed request, only the key's own
    assert.equal(cacheOf(await chat(none, b)), 'miss');
    assertHit(await chat(none, b), { what: 'the key without a project, again' });
    assert.equal(cacheOf(await chat(key, b)), 'miss', 'another key without a project');
    assert.equal(upstream(), n0 + 4);
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(async () => {
      const b = chatBody(fresh('org scope again'));
      await chat(p1a, b);
      return cacheOf(await chat(p2, b));
    }, (c) => c === 'hit', { message: 'scope org again' });
  }
});

test('a shorter ttl_seconds applies to answers stored before it', async () => {
  const body = chatBody(fresh('ttl lowered'));
  assert.equal(cacheOf(await chat(key, body)), 'miss');
  assertHit(await chat(key, body), { what: 'stored under the default ttl' });
  await sleep(1100);
  await putCacheConfig(s, { ttl_seconds: 1, only_deterministic: false });
  try {
    await waitApplied(() => probeOnce(chatBody(fresh('ttl lowered probe'), { temperature: 0.7 })), (c) => c !== 'skip',
      { message: 'ttl 1' });
    const n0 = upstream();
    const r = await chat(key, body);
    assert.equal(cacheOf(r), 'miss', 'older than the new ttl: not served');
    assert.equal(upstream(), n0 + 1);
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(() => probeOnce(chatBody(fresh('ttl lowered restore'), { temperature: 0.7 })), (c) => c === 'skip',
      { message: 'the default settings again' });
  }
});

test('an answer still on its way when a purge is made is not stored', async () => {
  const body = chatBody(fresh('purge in flight'));
  // the fixture answers after 2.5 s; the purge is made and reaches the workers meanwhile
  const slow = chat(key, body, { headers: { 'X-Fixture-Mode': 'slow-2500' } });
  await sleep(300);
  await purgeCache(s);
  const first = await slow;
  assert.equal(first.status, 200, first.error?.message);
  assert.equal(cacheOf(first), 'miss');
  const n0 = upstream();
  const again = await chat(key, body);
  assert.equal(cacheOf(again), 'miss', 'the answer that crossed the purge was not stored');
  assert.equal(upstream(), n0 + 1);
  assertHit(await chat(key, body), { first: again, what: 'stored after the purge' });
});

test('DELETE /cache?provider=openai&model=M purges that model only; DELETE /cache purges all; what is stored after a purge is served', async () => {
  const X = 'gpt-4o-mini-2024-07-18';
  const Y = 'gpt-4.1-nano-2025-04-14';
  const x1 = chatBody(fresh('purge x1'), { model: X });
  const x2 = chatBody(fresh('purge x2'), { model: X });
  const y1 = chatBody(fresh('purge y1'), { model: Y });
  for (const b of [x1, x2, y1]) {
    assert.equal(cacheOf(await chat(key, b)), 'miss');
    assertHit(await chat(key, b), { what: `stored ${b.model}` });
  }

  // A purge cannot be watched on every worker (a miss stores the answer
  // again); a setting PUT after it can, and a worker that has that
  // snapshot has the purge too. only_deterministic changes no key.
  await purgeCache(s, `provider=openai&model=${encodeURIComponent(X)}`);
  try {
    await putCacheConfig(s, { only_deterministic: false });
    await waitApplied(() => probeOnce(chatBody(fresh('purge probe'), { temperature: 0.7 })), (c) => c !== 'skip',
      { message: `a setting PUT after the purge of ${X}` });
    assert.equal(await probeOnce(x1), 'miss', `the purge of ${X}`);
    assert.equal(await probeOnce(x2), 'miss', `every ${X} entry is purged`);
    assert.equal(await probeOnce(y1), 'hit', `${Y} is kept`);
    assert.equal(await probeOnce(x1), 'hit', 'stored again after the purge');

    const y2 = chatBody(fresh('purge y2'), { model: Y });
    assert.equal(await probeOnce(y2), 'miss');
    assert.equal(await probeOnce(y2), 'hit');
    await purgeCache(s);
    await putCacheConfig(s, {});
    await waitApplied(() => probeOnce(chatBody(fresh('purge probe'), { temperature: 0.7 })), (c) => c === 'skip',
      { message: 'a setting PUT after the purge of everything' });
    assert.equal(await probeOnce(y1), 'miss', 'the purge of everything');
    assert.equal(await probeOnce(y2), 'miss');
    assert.equal(await probeOnce(x1), 'miss');
    assert.equal(await probeOnce(x1), 'hit', 'stored again after the purge');
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(() => probeOnce(chatBody(fresh('purge restore'), { temperature: 0.7 })), (c) => c === 'skip',
      { message: 'the default settings again' });
  }

  // an unknown provider, or a model without its provider, is refused by name
  for (const [q, fields] of [['provider=nope', ['provider']], ['model=x', ['provider', 'model']]]) {
    const r = await s.api('DELETE', `/cache?${q}`);
    assert.ok(r.status === 400 || r.status === 422, `DELETE /cache?${q} -> ${r.status} ${r.text}`);
    assert.ok(fields.includes(r.json?.error?.field), `DELETE /cache?${q}: ${r.text}`);
  }
});

// ------------------------------------------------------------ limits and budgets

test('requests_per_minute 2 counts hits: the third call in the minute is a 429; hits do not use tokens_per_minute', async () => {
  await freshWindow(8);
  const body = chatBody(fresh('rpm'));
  assert.equal(cacheOf(await chat(key, body)), 'miss');     // stored by an unlimited key
  const limited = (await s.createKey({ rate_limits: { requests_per_minute: 2 } })).key;
  const n0 = upstream();
  const a = await chat(limited, body);
  const b = await chat(limited, body);
  assertHit(a, { what: 'first limited call' });
  assertHit(b, { what: 'second limited call' });
  const c = await chat(limited, body);
  assert.equal(c.status, 429, `the third call in the minute: ${c.status}`);
  assert.ok(c.error instanceof OpenAI.RateLimitError, String(c.error));
  // found but not served: no hit is claimed, nothing saved
  assert.equal(cacheOf(c), 'skip', `X-Spendpol-Cache on a 429`);
  assert.equal(upstream(), n0);

  // a hit is not charged to the token window: six hits of a ~310-token
  // answer, then a live call of the same size, all under 1000 tokens a minute
  await freshWindow(8);
  const big = chatBody(fresh('tpm'), { max_tokens: 300 });
  assert.equal(cacheOf(await chat(key, big)), 'miss');
  const tpm = (await s.createKey({ rate_limits: { tokens_per_minute: 1000 } })).key;
  for (let i = 0; i < 6; i++) {
    const r = await chat(tpm, big);
    assert.equal(r.status, 200, `hit ${i + 1} under tokens_per_minute 1000: ${r.status} ${r.error?.message}`);
    assert.equal(cacheOf(r), 'hit');
  }
  const live = await chat(tpm, chatBody(fresh('tpm live'), { max_tokens: 300 }));
  assert.equal(live.status, 200, `a live call after six hits: ${live.status} ${live.error?.message}`);
  assert.equal(cacheOf(live), 'miss');
});

test('a hard budget nearly spent still serves hits, at no cost', async () => {
  const project = `cache-${crypto.randomBytes(3).toString('hex')}`;
  const content = fresh('budget');
  const maxTokens = 200;
  // the fixture bills ceil(chars / 4) prompt tokens and max_tokens output;
  // gpt-4o-mini: 150 and 600 nano-USD a token
  const perRequest = BigInt(Math.max(1, Math.ceil([...content].length / 4))) * 150n + BigInt(maxTokens) * 600n;
  const limit = perRequest + perRequest / 2n;
  const bud = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: (Number(limit) / 1e9).toFixed(9), period: 'daily' },
  });
  assert.equal(bud.status, 201, bud.text);
  const k = (await s.createKey({ name: `k-${project}`, project })).key;
  const body = chatBody(content, { max_tokens: maxTokens });
  const first = await chat(k, body);
  assert.equal(first.status, 200, first.error?.message);
  assert.equal(cacheOf(first), 'miss');
  assert.equal(usdToNano(header(first, 'x-spendpol-cost')), perRequest);

  // what is left does not pay for another live call of the same size
  const other = await chat(k, chatBody(fresh('budget'), { max_tokens: maxTokens }));
  assert.equal(other.status, 402, `a live call over the budget: ${other.status}`);
  assert.ok(['hit', 'miss', 'skip'].includes(cacheOf(other)), `X-Spendpol-Cache on a 402: ${cacheOf(other)}`);
  for (let i = 0; i < 3; i++) {
    const r = await chat(k, body);
    assert.equal(r.status, 200, `hit ${i + 1} within a spent budget: ${r.status} ${r.error?.message}`);
    assertHit(r, { first, what: `hit ${i + 1}` });
    assertHitCostHeaders(r);
  }
  const spend = await waitFor(async () => {
    const r = await s.api('GET', `/budgets/${bud.json.id}/spend`);
    return r.status === 200 && usdToNano(r.json.spent_usd) === perRequest ? r.json : null;
  }, { timeout: 10_000, message: 'the budget\'s spend: the miss only' });
  assert.equal(usdToNano(spend.spent_usd), perRequest, 'hits add nothing to the spend');
});

// ------------------------------------------------------------ stats

test('GET /cache/stats for a test\'s time range: 2 misses, 3 hits, 1 skip on one model: hit_rate 0.6, saved_usd the sum', async () => {
  const M = 'gpt-4.1-mini-2025-04-14';
  const from = Date.now() - 1;
  const a = chatBody(fresh('stats a'), { model: M });
  const b = chatBody(fresh('stats b'), { model: M, max_tokens: 20 });
  const ra = await chat(key, a);
  const ha = [await chat(key, a), await chat(key, a)];
  const rb = await chat(key, b);
  const hb = await chat(key, b);
  const sk = await chat(key, chatBody(fresh('stats skip'), { model: M, temperature: 0.7 }));
  assert.deepEqual([ra, ...ha, rb, hb, sk].map(cacheOf), ['miss', 'hit', 'hit', 'miss', 'hit', 'skip']);
  const rows = await s.waitAuditRows([ra, ...ha, rb, hb, sk].map((r) => header(r, 'x-spendpol-audit-id')));
  const to = Date.now() + 1000;
  const costA = usdToNano(header(ra, 'x-spendpol-cost'));
  const costB = usdToNano(header(rb, 'x-spendpol-cost'));
  const saved = 2n * costA + costB;
  assert.equal(rows.filter((x) => x.cache === 'hit').reduce((n, x) => n + savedNano(x), 0n), saved);

  const st = await waitFor(async () => {
    const x = await cacheStats(s, from, to);
    return x.hits + x.misses + x.skips >= 6 ? x : null;
  }, { timeout: 15_000, interval: 200, message: 'GET /cache/stats to count the six calls' });
  assert.equal(st.hits, 3, JSON.stringify(st));
  assert.equal(st.misses, 2, JSON.stringify(st));
  assert.equal(st.skips, 1, JSON.stringify(st));
  assert.ok(Math.abs(Number(st.hit_rate) - 0.6) < 1e-9, `hit_rate ${st.hit_rate}`);
  assert.equal(usdToNano(String(st.saved_usd)), saved, `saved_usd ${st.saved_usd} vs ${saved} nano-USD`);
  assert.ok(st.entries >= 2, `entries ${st.entries}`);
  assert.ok(st.bytes > 0, `bytes ${st.bytes}`);
  assert.equal(typeof st.evictions, 'number');
  const m = st.by_model.find((x) => x.provider === 'openai' && x.model === M);
  assert.ok(m, `by_model has openai/${M}: ${JSON.stringify(st.by_model)}`);
  assert.deepEqual([m.hits, m.misses, m.skips], [3, 2, 1]);
  assert.ok(Math.abs(Number(m.hit_rate) - 0.6) < 1e-9, `by_model hit_rate ${m.hit_rate}`);
  assert.equal(usdToNano(String(m.saved_usd)), saved);

  // a range before the calls counts none of them
  const empty = await cacheStats(s, from - 3_600_000, from - 1_800_000);
  assert.deepEqual([empty.hits, empty.misses, empty.skips], [0, 0, 0]);
  const bad = await s.api('GET', '/cache/stats?from=yesterday');
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json?.error?.field, 'from');
});
