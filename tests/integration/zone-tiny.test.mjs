// The shared zone (spendpol_zone_size) at its smallest: budget counters and
// rate limit windows of idle keys are expired (LRU, as limit_req does), a
// zone still full of windows in use answers 503 gateway_busy with one
// [warn] a minute, never a 500, and the limits of the keys in use hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { useStack, sleep, waitFor } from './lib/stack.mjs';

/* 8 pages, the least nginx -t accepts: room for about a hundred nodes */
const s = useStack({ nginxHttp: 'spendpol_zone_size 32k;' });

const KEYS = 2000;
const CONCURRENCY = 16;

async function ask(key) {
  const r = await fetch(`${s.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* the status says enough */ }
  return { status: r.status, json, text, retryAfter: r.headers.get('retry-after') };
}

/* every key once, CONCURRENCY at a time; the statuses by key */
async function flood(keys) {
  const out = new Array(keys.length);
  let next = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < keys.length) {
      const i = next++;
      out[i] = await ask(keys[i]);
    }
  }));
  return out;
}

function count(results) {
  const by = {};
  for (const r of results) by[r.status] = (by[r.status] ?? 0) + 1;
  return by;
}

function errorLog() {
  return fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
}

/* the minute windows are aligned to the clock: start early in one */
async function freshWindow(needSeconds) {
  const into = (Date.now() % 60000) / 1000;
  if (into > 60 - needSeconds) await sleep(60000 - (Date.now() % 60000) + 200);
}

async function nextMinute() {
  await sleep(60000 - (Date.now() % 60000) + 500);
}

/* many keys through the admin API; the proxy takes the last one last */
async function createKeys(n, body) {
  const keys = [];
  for (let i = 0; i < n; i += 20) {
    const batch = await Promise.all(Array.from({ length: Math.min(20, n - i) },
      () => s.createKey(body, { wait: false })));
    for (const k of batch) keys.push(k.key);
  }
  await s.waitKeyAccepted(keys[keys.length - 1]);
  return keys;
}

test(`${KEYS} rate limited keys through a 32k zone: 503 gateway_busy when full, never 500, limits hold`, { timeout: 600_000 }, async (t) => {
  // an organisation budget far from spent: every request needs its counter
  const org = await s.api('POST', '/budgets', {
    body: { name: 'org-wide', scope: { type: 'organization' }, limit_usd: '1000', period: 'daily' },
  });
  assert.equal(org.status, 201, org.text);

  // a budget a few requests spend (the worst case of the next exceeds it)
  const project = `p-${crypto.randomBytes(3).toString('hex')}`;
  const small = await s.api('POST', '/budgets', {
    body: { name: 'small', scope: { type: 'project', value: project }, limit_usd: '0.00005', period: 'daily' },
  });
  assert.equal(small.status, 201, small.text);
  const spender = (await s.createKey({ name: 'spender', project })).key;

  const active = (await s.createKey({ rate_limits: { requests_per_minute: 3 } })).key;
  const crowd = await createKeys(KEYS, { rate_limits: { requests_per_minute: 2 } });

  await freshWindow(50);

  assert.equal((await ask(spender)).status, 200, 'the small budget admits a request');
  let spent;
  for (let i = 0; i < 40; i++) {
    spent = await ask(spender);
    if (spent.status !== 200) break;
  }
  assert.equal(spent.status, 402, spent.text);
  assert.equal(spent.json?.error?.code, 'budget_exceeded', spent.text);

  for (let i = 0; i < 3; i++) assert.equal((await ask(active)).status, 200, `active call ${i + 1}`);

  const first = await flood(crowd);
  const by = count(first);
  t.diagnostic(`first minute: ${JSON.stringify(by)}`);
  assert.deepEqual(Object.keys(by).filter((st) => st !== '200' && st !== '503'), [],
    `only 200 and 503: ${JSON.stringify(by)}`);
  assert.ok(by[200] > 0, `some keys fit: ${JSON.stringify(by)}`);
  assert.ok(by[503] > 0, `a 32k zone cannot count ${KEYS} windows of one minute: ${JSON.stringify(by)}`);

  const busy = first.find((r) => r.status === 503);
  assert.equal(busy.json?.error?.type, 'api_error', busy.text);
  assert.equal(busy.json?.error?.code, 'gateway_busy', busy.text);
  assert.match(busy.json.error.message, /spendpol_zone_size/);
  assert.equal(busy.retryAfter, '1');

  // the active key's window was in use: still there, still counting
  const fourth = await ask(active);
  assert.equal(fourth.status, 429, `the active key at its rpm limit: ${fourth.text}`);

  // a key admitted in the flood is at its limit too once it used it
  const admitted = crowd[first.findIndex((r) => r.status === 200)];
  const again = await ask(admitted);
  // (503 when its budget counter was expired and the zone is full)
  assert.ok(again.status === 200 || again.status === 503, `second call ${again.status}`);
  if (again.status === 200) assert.equal((await ask(admitted)).status, 429, 'third call in the minute');

  // a spent budget refuses whether or not its counter is still in the zone
  const stillSpent = await ask(spender);
  assert.ok(stillSpent.status === 402 || stillSpent.status === 503, stillSpent.text);

  // the next minute the old windows are idle: they make room
  await nextMinute();
  const refused = crowd.filter((k, i) => first[i].status === 503).slice(0, 50);
  const second = await flood(refused);
  assert.deepEqual(Object.keys(count(second)).filter((st) => st !== '200'), [],
    `keys refused last minute are admitted now: ${JSON.stringify(count(second))}`);

  // ... and the spent budget, its counter made again from what controld
  // ingested, refuses as a budget
  const later = await ask(spender);
  assert.equal(later.status, 402, later.text);
  assert.equal(later.json?.error?.code, 'budget_exceeded', later.text);

  const log = errorLog();
  const warns = log.split('\n').filter((l) => /\[warn\].*shared zone "spendpol" is full/.test(l));
  assert.ok(warns.length >= 1 && warns.length <= 2, `one [warn] a minute, got ${warns.length}`);
  assert.match(warns[0], /spendpol_zone_size 32768/);
  assert.doesNotMatch(log, /ngx_slab_alloc\(\) failed/);
  assert.doesNotMatch(log, /zone is full; raise/);
});
