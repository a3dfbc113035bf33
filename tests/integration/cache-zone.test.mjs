// The response cache's shared zone (docs/cache.md, "The zone"): the
// spendpol_cache_size directive (nginx -t refuses a zone under 8 pages, 0
// turns the cache off), a small zone that fills up and evicts the least
// recently used entries (counted in GET /cache/stats), answers too large
// for an entry (max_entry_bytes, or a quarter of the zone) served but not
// stored, entries kept across `nginx -s reload`, and X-Spendpol-Cache on the
// errors the gateway makes itself.
//
// Two nodes on one database: the main one with a 64k zone, and one with
// `spendpol_cache_size 0`. The org's provider points at the second node's
// fixture (the last to start sets it), so upstream counts add both.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Stack, BUILD, IS_SAN, newKey, sleep, waitFor, usdToNano } from './lib/stack.mjs';
import { nginxTest } from './lib/nginx-t.mjs';
import {
  header, cacheOf, putCacheConfig, cacheStats, waitApplied, freshWindow, savedNano,
} from './lib/cache.mjs';

const SLOW = IS_SAN ? 3 : 1;
const ZONE = 64 * 1024;
const WORKERS = 2;                       // scripts/lib/stack.sh

// the zone alone: its Redis tier (cache-nodes.test.mjs) is off here, so an
// evicted entry is a miss
const s = new Stack({ nginxHttp: `spendpol_cache_size ${ZONE / 1024}k; spendpol_cache_redis off;` });
const zero = Stack.join(s, { nginxHttp: 'spendpol_cache_size 0;' });
let key;

before(async () => {
  try {
    await s.start();
    await zero.start();
  } catch (e) {
    s.failed = true;
    zero.failed = true;
    throw e;
  }
  key = (await s.createKey({ name: 'cache zone' })).key;
  await zero.waitKeyAccepted(key);
}, { timeout: 240_000 * SLOW });

after(async () => {
  const alive = setInterval(() => {}, 1000);
  const problems = [];
  try {
    problems.push(...await zero.stop());
    problems.push(...await s.stop());
  } finally {
    clearInterval(alive);
  }
  assert.deepEqual(problems, [], `problems in the stacks' logs (${s.dataDir}, ${zero.dataDir})`);
}, { timeout: 120_000 });

const MODEL = 'gpt-4o-mini';
const fresh = (label) => `${label} ${crypto.randomBytes(5).toString('hex')}`;
/** a deterministic chat request (temperature 0): looked up and stored */
const chatBody = (label, extra = {}) => ({
  model: MODEL, max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: fresh(label) }], ...extra,
});
const upstream = () => s.fixture.completions().length + zero.fixture.completions().length;

/**
 * POST /chat/completions on a node, the whole answer read: {status,
 * headers, cache, bytes (the body's length in bytes), text, auditId};
 * pad: the fixture's answer text made that many characters longer.
 */
async function call(node, k, body, { pad = 0, headers = {}, raw } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (k) h.authorization = `Bearer ${k}`;
  if (pad) h['x-fixture-mode'] = `pad-${pad}`;
  const r = await fetch(`${node.openaiBaseURL}/chat/completions`, {
    method: 'POST', headers: h, body: raw ?? JSON.stringify(body),
  });
  const buf = Buffer.from(await r.arrayBuffer());
  return {
    status: r.status, headers: r.headers, cache: cacheOf(r), bytes: buf.length, text: buf.toString('utf8'),
    auditId: header(r, 'x-spendpol-audit-id'),
  };
}

/** call() that must answer 200 with this X-Spendpol-Cache */
async function expectState(node, body, state, opts = {}) {
  const r = await call(node, key, body, opts);
  assert.equal(r.status, 200, `${opts.what ?? ''} ${r.text.slice(0, 300)}`);
  assert.equal(r.cache, state, `${opts.what ?? 'X-Spendpol-Cache'} (${r.bytes} bytes)`);
  return r;
}

/**
 * GET /cache/stats's zone figures {entries, bytes, evictions} once two
 * reads 400 ms apart agree (each worker reports them every snapshot
 * interval, 200 ms) and pred holds: within 3 s, "a couple of seconds".
 */
async function zoneFigures(pred = () => true, what = 'steady zone figures') {
  let prev = null;
  try {
    await waitFor(async () => {
      const st = await cacheStats(s, Date.now() - 60_000, Date.now() + 1000);
      const f = { entries: st.entries, bytes: st.bytes, evictions: st.evictions };
      const steady = prev !== null && JSON.stringify(prev) === JSON.stringify(f);
      prev = f;
      return steady && pred(f);
    }, { timeout: 3000 * SLOW, interval: 400, message: `${what} in GET /cache/stats` });
  } catch (e) {
    throw new Error(`${e.message}; last figures ${JSON.stringify(prev)}`);
  }
  return prev;
}

// ------------------------------------------------------------ the directive

/** an nginx.conf for nginx -t in dir, with lines in its http{} block */
function httpConf(dir, lines) {
  const so = path.join(BUILD, 'nginx/objs/ngx_http_spendpol_module.so');
  return `
load_module ${so};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/px; fastcgi_temp_path ${dir}/fc;
  uwsgi_temp_path ${dir}/uw; scgi_temp_path ${dir}/sc;
  ${lines}
  server { listen 127.0.0.1:1; location /v1/ { spendpol on; } }
}
`;
}

test('nginx -t: spendpol_cache_size below 8 pages is refused naming the directive; 8 pages and 0 are accepted', (t) => {
  const page = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-cache-size-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const conf = (size) => httpConf(dir, `spendpol_cache_size ${size};`);
  for (const size of [`${(7 * page) / 1024}k`, '1k', '1']) {
    const r = nginxTest(dir, conf(size));
    assert.notEqual(r.status, 0, `spendpol_cache_size ${size} (under 8 pages of ${page}): ${r.output}`);
    assert.match(r.output, new RegExp(`\\[emerg\\].*spendpol_cache_size must be 0 \\(no cache\\) or at least ${8 * page}\\b`),
      `spendpol_cache_size ${size}: ${r.output}`);
  }
  for (const size of [`${(8 * page) / 1024}k`, '0', '64m']) {
    const r = nginxTest(dir, conf(size));
    assert.equal(r.status, 0, `spendpol_cache_size ${size}: ${r.output}`);
  }
  const bad = nginxTest(dir, conf('lots'));
  assert.notEqual(bad.status, 0, bad.output);
  assert.match(bad.output, /\[emerg\].*"spendpol_cache_size"/, bad.output);
});

test('nginx -t: spendpol_cache_redis on|off, spendpol_cache_redis_timeout (at least 1ms) and spendpol_cache_embed_address (numeric address:port) are checked', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-cache-redis-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const conf = (lines) => httpConf(dir, lines);
  for (const ok of ['spendpol_cache_redis off;', 'spendpol_cache_redis on; spendpol_cache_redis_timeout 20ms;',
    'spendpol_cache_redis_timeout 1;', 'spendpol_cache_embed_address 127.0.0.1:8080;',
    'spendpol_cache_embed_address [::1]:8080;']) {
    const r = nginxTest(dir, conf(ok));
    assert.equal(r.status, 0, `${ok}: ${r.output}`);
  }
  const zero = nginxTest(dir, conf('spendpol_cache_redis_timeout 0;'));
  assert.notEqual(zero.status, 0, zero.output);
  assert.match(zero.output, /\[emerg\].*spendpol_cache_redis_timeout must be at least 1ms/, zero.output);
  for (const bad of ['spendpol_cache_embed_address localhost:8080;', 'spendpol_cache_embed_address 127.0.0.1;',
    'spendpol_cache_embed_address 127.0.0.1:8080/v1;']) {
    const r = nginxTest(dir, conf(bad));
    assert.notEqual(r.status, 0, `${bad}: ${r.output}`);
    assert.match(r.output, /\[emerg\].*spendpol_cache_embed_address must be a numeric address and port/, `${bad}: ${r.output}`);
  }
  const twice = nginxTest(dir, conf('spendpol_cache_embed_address 127.0.0.1:1; spendpol_cache_embed_address 127.0.0.1:2;'));
  assert.match(twice.output, /\[emerg\].*"spendpol_cache_embed_address" directive is duplicate/, twice.output);
  for (const bad of ['spendpol_cache_redis maybe;', 'spendpol_cache_redis_timeout soon;']) {
    const r = nginxTest(dir, conf(bad));
    assert.notEqual(r.status, 0, `${bad}: ${r.output}`);
    assert.match(r.output, /\[emerg\].*"spendpol_cache_redis(_timeout)?"/, `${bad}: ${r.output}`);
  }
});

test('spendpol_cache_size 0: every response says skip and identical deterministic calls both reach the provider', async () => {
  const body = chatBody('no zone');
  const n0 = upstream();
  const a = await expectState(zero, body, 'skip', { what: 'first call, no zone' });
  const b = await expectState(zero, body, 'skip', { what: 'second call, no zone' });
  assert.equal(header(b, 'x-spendpol-cache-age'), null);
  assert.equal(upstream(), n0 + 2, 'both reach the provider');
  assert.ok(usdToNano(header(b, 'x-spendpol-cost')) > 0n, `the second call costs: ${header(b, 'x-spendpol-cost')}`);
  const st = await expectState(zero, chatBody('no zone stream', { stream: true }), 'skip', { what: 'a stream, no zone' });
  assert.match(st.text, /data: \[DONE\]/);
  const rows = await s.waitAuditRows([a.auditId, b.auditId]);
  assert.deepEqual(rows.map((x) => x.cache), ['skip', 'skip']);
  // the same call on the node with a zone is cached: the skip is the zone's absence
  await expectState(s, body, 'miss', { what: 'the node with a zone' });
  await expectState(s, body, 'hit', { what: 'the node with a zone' });
  await expectState(zero, body, 'skip', { what: 'no zone, after the other node stored it' });
});

// ------------------------------------------------------------ a full zone

test('a 64k zone evicts the least recently used first: the entry hit after each store survives, the oldest untouched one is a miss again; /cache/stats counts evictions', async () => {
  // ~3.5 KB answers: one slab page each, and 32 of them are far more
  // than a 64k zone holds
  const PAD = 3000;
  const base = await zoneFigures();
  const n0 = upstream();
  const sizes = [];
  const kept = chatBody('lru kept');
  const oldest = chatBody('lru oldest');
  const k0 = await expectState(s, kept, 'miss', { pad: PAD, what: 'the entry to keep' });
  const o0 = await expectState(s, oldest, 'miss', { pad: PAD, what: 'the oldest untouched entry' });
  sizes.push(k0.bytes, o0.bytes);
  const fillers = [];
  for (let i = 0; i < 30; i++) {
    const f = chatBody(`lru filler ${i}`);
    fillers.push(f);
    sizes.push((await expectState(s, f, 'miss', { pad: PAD, what: `filler ${i}` })).bytes);
    const hit = await expectState(s, kept, 'hit', { pad: PAD, what: `the recently used entry after filler ${i}` });
    assert.equal(hit.bytes, k0.bytes, 'the stored answer, whole');
  }
  assert.equal(upstream(), n0 + 32, 'each store reached the provider once, each hit not at all');
  const last = await expectState(s, fillers.at(-1), 'hit', { pad: PAD, what: 'the newest filler' });
  const [min, max] = [Math.min(...sizes), Math.max(...sizes)];
  assert.ok(min > 3000 && max < 4000, `answer sizes ${min}..${max}`);

  // the zone's figures, before any further store changes them: nothing
  // expired or was purged, so each of the 32 stored is there or evicted
  const st = await zoneFigures((f) => f.entries + f.evictions === base.entries + base.evictions + 32,
    'the 32 stores in the zone\'s entries and evictions');
  const t = JSON.stringify({ base, now: st });
  const evicted = st.evictions - base.evictions;
  assert.ok(st.entries >= 2 && st.entries <= ZONE / 4096, `entries of a 64k zone (each takes a page at least): ${t}`);
  assert.ok(evicted >= 32 - ZONE / 4096, `32 answers in a zone that holds at most ${ZONE / 4096}: ${t}`);
  // what earlier tests stored is older, so evicted first: what is left is this test's
  assert.ok(evicted >= base.entries, t);
  assert.ok(st.bytes >= k0.bytes + last.bytes && st.bytes <= ZONE, `bytes within the zone: ${t}`);
  assert.ok(st.bytes >= st.entries * min && st.bytes <= st.entries * max,
    `bytes are the stored bodies' sizes (${min}..${max} each): ${t}`);

  await expectState(s, oldest, 'miss', { pad: PAD, what: 'the oldest untouched entry, evicted' });
  await expectState(s, fillers[0], 'miss', { pad: PAD, what: 'the first filler, evicted' });
  await expectState(s, oldest, 'hit', { pad: PAD, what: 'the oldest entry, stored again' });
  await expectState(s, kept, 'hit', { pad: PAD, what: 'the recently used entry, still' });
  assert.equal(upstream(), n0 + 34);
});

// ------------------------------------------------------------ too large

test('an answer larger than max_entry_bytes (or a quarter of the zone) is served whole but not stored', async () => {
  const PAD = 3000;
  await putCacheConfig(s, { max_entry_bytes: 2000 });
  try {
    await waitApplied(async () => {
      const b = chatBody('max entry probe');
      await call(s, key, b, { pad: PAD });
      return (await call(s, key, b, { pad: PAD })).cache;
    }, (c) => c === 'miss', { message: 'max_entry_bytes 2000' });
    const n0 = upstream();
    const big = chatBody('larger than max_entry_bytes');
    const a = await expectState(s, big, 'miss', { pad: PAD, what: 'a 3.5 KB answer' });
    assert.ok(a.bytes > 2000, `${a.bytes} bytes`);
    assert.equal(Number(header(a, 'content-length') ?? a.bytes), a.bytes);
    assert.equal(JSON.parse(a.text).choices[0].message.content.length > PAD, true, 'the whole answer is served');
    await expectState(s, big, 'miss', { pad: PAD, what: 'the same call: it was not stored' });
    assert.equal(upstream(), n0 + 2);

    // a stream larger than the limit: served to its end, not stored
    const stream = chatBody('stream larger than max_entry_bytes', { stream: true });
    const s1 = await expectState(s, stream, 'miss', { what: 'a streamed answer' });
    assert.ok(s1.bytes > 2000, `the stream is ${s1.bytes} bytes`);
    assert.match(s1.text, /"finish_reason":"stop"[\s\S]*data: \[DONE\]\s*$/, 'the stream is served to its end');
    const s2 = await expectState(s, stream, 'miss', { what: 'the same stream: it was not stored' });
    assert.equal(s2.text.replace(/"(id|created)":("[^"]*"|\d+)/g, ''), s1.text.replace(/"(id|created)":("[^"]*"|\d+)/g, ''));

    // an answer under the limit is stored as usual
    const small = chatBody('under max_entry_bytes');
    const m = await expectState(s, small, 'miss', { what: 'a small answer' });
    assert.ok(m.bytes < 2000, `${m.bytes} bytes`);
    await expectState(s, small, 'hit', { what: 'a small answer' });
    assert.equal(upstream(), n0 + 5);
  } finally {
    await putCacheConfig(s, {});
    await waitApplied(async () => {
      const b = chatBody('max entry restore');
      await call(s, key, b, { pad: PAD });
      return (await call(s, key, b, { pad: PAD })).cache;
    }, (c) => c === 'hit', { message: 'max_entry_bytes back to its default' });
  }

  // max_entry_bytes 1 MiB, but one entry may take at most a quarter of the zone (16k)
  const n1 = upstream();
  const quarter = chatBody('over a quarter of the zone');
  const q = await expectState(s, quarter, 'miss', { pad: 20_000, what: 'a 20 KB answer' });
  assert.ok(q.bytes > ZONE / 4, `${q.bytes} bytes`);
  await expectState(s, quarter, 'miss', { pad: 20_000, what: 'a 20 KB answer again: not stored' });
  const under = chatBody('under a quarter of the zone');
  await expectState(s, under, 'miss', { pad: 12_000, what: 'a 12 KB answer' });
  await expectState(s, under, 'hit', { pad: 12_000, what: 'a 12 KB answer again' });
  assert.equal(upstream(), n1 + 3);
});

// ------------------------------------------------------------ reload

test('nginx -s reload keeps the stored entries: a hit from the new workers', async () => {
  const body = chatBody('across a reload');
  const a = await expectState(s, body, 'miss', { what: 'before the reload' });
  await expectState(s, body, 'hit', { what: 'before the reload' });
  const n0 = upstream();
  const old = s.nginxWorkerPids();
  assert.equal(old.length, WORKERS, `workers ${old}`);
  s.nginxSignal('reload');
  await waitFor(() => {
    const now = s.nginxWorkerPids();
    return now.length === WORKERS && now.every((p) => !old.includes(p));
  }, { timeout: 20_000 * SLOW, interval: 100, message: 'the old workers to exit' });
  // the new workers map the snapshot before they know the key
  const r = await waitFor(async () => {
    const x = await call(s, key, body);
    return x.status === 200 ? x : null;
  }, { timeout: 10_000 * SLOW, message: 'a 200 from the new workers' });
  assert.equal(r.cache, 'hit', 'the entry stored before the reload');
  assert.equal(r.text, a.text, 'the stored answer');
  assert.match(header(r, 'x-spendpol-cache-age') ?? '', /^\d+$/);
  assert.equal(upstream(), n0);
  // and the zone still stores
  const after = chatBody('after the reload');
  await expectState(s, after, 'miss', { what: 'after the reload' });
  await expectState(s, after, 'hit', { what: 'after the reload' });
});

// ------------------------------------------------------------ gateway errors

test('X-Spendpol-Cache on errors the gateway makes: 401 bad key and 400 malformed JSON say skip; a 429 for a call not stored says miss or skip', async () => {
  const body = chatBody('errors');
  await expectState(s, body, 'miss', { what: 'stored' });
  await expectState(s, body, 'hit', { what: 'stored' });
  const n0 = upstream();

  const bad = await call(s, newKey(), body);
  assert.equal(bad.status, 401, bad.text);
  assert.equal(bad.cache, 'skip', 'a 401 is not looked up, even for a stored call');
  assert.equal(header(bad, 'x-spendpol-cache-age'), null);
  assert.equal(JSON.parse(bad.text).error?.code !== undefined, true, bad.text);

  const malformed = await call(s, key, null, { raw: '{"model": "gpt-4o-mini", "temperature": 0, "messages": [' });
  assert.equal(malformed.status, 400, malformed.text);
  assert.equal(malformed.cache, 'skip', 'a malformed body is not looked up');
  assert.equal(header(malformed, 'x-spendpol-cache-age'), null);
  assert.equal(upstream(), n0);

  // requests_per_minute 1: the minute's request used, a call not stored is a 429
  await freshWindow(8);
  const limited = (await s.createKey({ name: 'cache zone rpm', rate_limits: { requests_per_minute: 1 } })).key;
  assert.equal((await call(s, limited, chatBody('errors, first of the minute'))).status, 200);
  const n1 = upstream();
  const refused = await call(s, limited, chatBody('errors, not stored'));
  assert.equal(refused.status, 429, refused.text);
  assert.ok(['miss', 'skip'].includes(refused.cache), `X-Spendpol-Cache on a 429: ${refused.cache}`);
  assert.equal(header(refused, 'x-spendpol-cache-age'), null);
  assert.equal(upstream(), n1, 'a 429 reaches no provider');
  const [row] = await s.waitAuditRows([refused.auditId]);
  assert.deepEqual([row.status, row.cache, savedNano(row)], [429, refused.cache, 0n], JSON.stringify(row));
});

// A 429 is not an answer from the cache (a hit is a 200, docs/cache.md):
// the lookup runs before the rate limit (a hit holds no tokens), and a
// request the limit refuses after its lookup found an entry is a skip,
// with no age and no saving.
test('a 429 for a stored call is not a hit: not in its header, not in its audit row, no saving', async () => {
  const body = chatBody('429 of a stored call');
  await expectState(s, body, 'miss', { what: 'stored' });
  await expectState(s, body, 'hit', { what: 'stored' });
  await freshWindow(8);
  const limited = (await s.createKey({ name: 'cache zone rpm hit', rate_limits: { requests_per_minute: 1 } })).key;
  const first = await call(s, limited, body);
  assert.equal(first.status, 200, first.text);
  assert.equal(first.cache, 'hit', 'a hit uses the minute\'s request');
  const refused = await call(s, limited, body);
  assert.equal(refused.status, 429, refused.text);
  const [row] = await s.waitAuditRows([refused.auditId]);
  assert.deepEqual({
    header: refused.cache, age: header(refused, 'x-spendpol-cache-age'),
    row: [row.status, row.cache, String(savedNano(row))],
  }, {
    header: 'skip', age: null, row: [429, 'skip', '0'],
  }, `the 429 (audit row ${JSON.stringify(row)})`);
});
