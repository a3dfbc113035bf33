// The response cache on two nodes (nginx + controld each) sharing
// PostgreSQL and Redis (docs/cache.md): the organisation's settings are
// shared (a PUT on one node's controld reaches the other node's nginx),
// each node has its own cache zone and both share the Redis tier (a hit
// on A is a hit on B, with no upstream request), both keep answering with
// Redis stopped and share again once it is back, and a purge taken by
// one node stops the other from serving its entries (zone or Redis)
// within 1 s.
//
// The org's provider points at the fixture of the node started last, so
// upstream counts add both fixtures.

import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useNodes, IS_SAN, REPO, sleep, waitFor } from './lib/stack.mjs';
import { header, cacheOf, getCacheConfig, putCacheConfig, purgeCache, waitApplied, CACHE_DEFAULTS } from './lib/cache.mjs';

const SLOW = IS_SAN ? 3 : 1;
// A Redis lookup may take 5 ms at most by default; this file's nodes run
// on 2 loaded cores, sanitizer builds included, so they allow 100 ms (the
// hung-Redis test below still sees each miss come after that wait).
const [a, b] = useNodes(2, { nginxHttp: 'spendpol_cache_redis_timeout 100ms;' });

const fresh = (label) => `${label} ${crypto.randomBytes(5).toString('hex')}`;
/** a deterministic chat request (temperature 0): looked up and stored */
const chatBody = (label, extra = {}) => ({
  model: 'gpt-4o-mini', max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: fresh(label) }], ...extra,
});
const upstream = () => a.fixture.completions().length + b.fixture.completions().length;

let keyPromise;
/** one proxy key, made on node A and accepted by both nodes */
function proxyKey() {
  keyPromise ??= (async () => {
    const { key } = await a.createKey({ name: 'cache nodes' });
    await b.waitKeyAccepted(key);
    return key;
  })();
  return keyPromise;
}

/** POST /chat/completions on a node: {status, cache, text, at (ms when answered)} */
async function call(node, body) {
  const k = await proxyKey();
  const r = await fetch(`${node.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, cache: cacheOf(r), age: header(r, 'x-spendpol-cache-age'), text, at: Date.now() };
}

/**
 * The same call on node (B by default), expected a hit from the Redis
 * tier: the storing node's SET goes out without waiting for its reply, so
 * the call waits 50 ms first.
 */
async function waitShared(body, node = b) {
  await sleep(50 * SLOW);
  const r = await call(node, body);
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.cache, 'hit', 'the other node did not find the answer in Redis');
  return r;
}

/**
 * Fresh answers stored on A until one is a hit on B (each worker of
 * either node connects again at most a second after its last try);
 * the number of tries.
 */
async function waitSharing(label) {
  const until = Date.now() + 10_000 * SLOW;
  for (let i = 1; Date.now() < until; i++) {
    const probe = chatBody(`${label} ${i}`);
    await expectState(a, probe, 'miss', `a new answer on A (${label})`);
    await sleep(50 * SLOW);
    const x = await call(b, probe);
    assert.equal(x.status, 200, x.text.slice(0, 300));
    if (x.cache === 'hit') return i;
    await sleep(250);
  }
  assert.fail(`B never shared A's answers (${label})`);
}

async function expectState(node, body, state, what) {
  const r = await call(node, body);
  assert.equal(r.status, 200, `${what}: ${r.text.slice(0, 300)}`);
  assert.equal(r.cache, state, what);
  return r;
}

test('settings are shared: a PUT /cache/config on node A reaches node B\'s nginx', async (t) => {
  await proxyKey();
  const probeB = async () => (await call(b, chatBody('B sampling', { temperature: 0.7 }))).cache;
  assert.equal(await probeB(), 'skip', 'a sampling call is not looked up under the defaults');
  const put = Date.now();
  await putCacheConfig(a, { only_deterministic: false });
  try {
    await waitApplied(probeB, (c) => c === 'miss', { message: 'node A\'s only_deterministic false on node B' });
    t.diagnostic(`node A's PUT applied on node B after ${Date.now() - put} ms (4 answers in a row over 600 ms included)`);
    const onB = await getCacheConfig(b);
    assert.equal(onB.only_deterministic, false, `GET /cache/config on node B: ${JSON.stringify(onB)}`);
    // a sampling call stored on B is a hit there
    const warm = chatBody('B warm', { temperature: 0.7 });
    await expectState(b, warm, 'miss', 'a sampling call on B');
    await expectState(b, warm, 'hit', 'a sampling call on B again');
  } finally {
    await putCacheConfig(a, {});
    await waitApplied(probeB, (c) => c === 'skip', { message: 'the defaults again on node B' });
  }
  const back = await getCacheConfig(b);
  for (const [k, v] of Object.entries(CACHE_DEFAULTS)) assert.equal(back[k], v, `${k} on node B`);
});

test('the Redis tier: an answer stored on A is a hit on B, with no upstream request', async () => {
  const body = chatBody('shared tier');
  const n0 = upstream();
  const first = await expectState(a, body, 'miss', 'first call on A');
  assert.equal(upstream(), n0 + 1);
  // A's store reaches Redis without waiting for its reply: give it a moment
  const onB = await waitShared(body);
  assert.equal(upstream(), n0 + 1, 'B answered from Redis: the provider was not asked again');
  assert.equal(onB.text, first.text, 'B sends A\'s stored answer byte for byte');
  assert.ok(Number(onB.age) >= 0, `X-Spendpol-Cache-Age on B: ${onB.age}`);
  // B keeps it in its own zone too, and A still has it
  await expectState(b, body, 'hit', 'the same call on B again');
  await expectState(a, body, 'hit', 'the same call on A again');
  assert.equal(upstream(), n0 + 1);
});

test('a streamed answer stored on B is replayed on A through Redis', async () => {
  const body = chatBody('shared stream', { stream: true });
  const n0 = upstream();
  const first = await expectState(b, body, 'miss', 'a stream on B');
  assert.match(first.text, /data: \[DONE\]/);
  const onA = await waitShared(body, a);
  assert.equal(onA.text, first.text, 'the stream replayed on A byte for byte');
  assert.equal(upstream(), n0 + 1);
});

test('Redis stopped: both nodes keep answering (misses, then their own hits), logged once; shared again once it is back', async (t) => {
  const logA = path.join(a.logs, 'error.log');
  const logB = path.join(b.logs, 'error.log');
  const down = (f) => (fs.readFileSync(f, 'utf8').match(/the cache's second tier\) is unreachable/g) || []).length;
  const before = [down(logA), down(logB)];
  await a.stopRedis();
  try {
    const slowest = [];
    for (const node of [a, b]) {
      for (let i = 0; i < 6; i++) {
        const body = chatBody(`redis down ${i}`);
        const t0 = Date.now();
        await expectState(node, body, 'miss', `call ${i} with Redis stopped`);
        await expectState(node, body, 'hit', `call ${i} again with Redis stopped: the node's own zone`);
        slowest.push(Date.now() - t0);
      }
    }
    t.diagnostic(`with Redis stopped, the slowest miss+hit pair took ${Math.max(...slowest)} ms`);
    assert.ok(Math.max(...slowest) < 2000 * SLOW, `a pair took ${Math.max(...slowest)} ms with Redis stopped`);
    // once per outage and worker, not once per request
    const workers = (n) => n.nginxWorkerPids().length;
    for (const [i, [node, log]] of [[a, logA], [b, logB]].entries()) {
      const n = down(log) - before[i];
      assert.ok(n >= 1 && n <= workers(node), `node ${i ? 'B' : 'A'} logged Redis down ${n} times (${workers(node)} workers)`);
    }
  } finally {
    await a.startRedis();
  }
  // each worker connects again at most a second after its last try
  t.diagnostic(`shared again after ${await waitSharing('redis back')} tries`);
});

test('Redis hung (SIGSTOP): lookups give up after spendpol_cache_redis_timeout and are misses; late answers are dropped', async (t) => {
  const pid = Number(execFileSync('bash', [path.join(REPO, 'scripts/stack.sh'), 'redis-pid', a.dataDir], { encoding: 'utf8' }));
  assert.ok(pid > 0, `Redis pid ${pid}`);
  const logA = path.join(a.logs, 'error.log');
  const slow = () => (fs.readFileSync(logA, 'utf8').match(/did not answer a lookup within spendpol_cache_redis_timeout/g) || []).length;
  const before = slow();
  const stored = chatBody('before the hang');
  await expectState(a, stored, 'miss', 'stored on A before the hang');
  process.kill(pid, 'SIGSTOP');
  const took = [];
  try {
    for (let i = 0; i < 8; i++) {
      const body = chatBody(`hung ${i}`);
      const t0 = Date.now();
      await expectState(a, body, 'miss', `call ${i} with Redis hung`);
      took.push(Date.now() - t0);
      await expectState(a, body, 'hit', `call ${i} again: A's own zone, no Redis lookup`);
    }
    // B has not got it in its zone, and Redis does not answer: a miss, in time
    const onB = await call(b, stored);
    assert.equal(onB.status, 200, onB.text.slice(0, 300));
    assert.equal(onB.cache, 'miss', 'B cannot reach the entry while Redis hangs');
    // no reply for 5 s with lookups in flight: the worker gives the
    // connection up (and tries a new one), so a hung Redis cannot hold its
    // lookups and stores in flight for ever
    const stale = () => (fs.readFileSync(logA, 'utf8').match(/no reply for 5 s; reconnecting/g) || []).length;
    await waitFor(async () => {
      const x = await call(a, chatBody('hung, later'));
      assert.equal(x.status, 200, x.text.slice(0, 300));
      return stale() > 0;
    }, { timeout: 15_000 * SLOW, interval: 500, message: 'node A to give up its silent Redis connection' });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  t.diagnostic(`misses with Redis hung took ${took.join(', ')} ms`);
  assert.ok(Math.max(...took) < 1000 * SLOW, `a miss with Redis hung took ${Math.max(...took)} ms`);
  // a worker with its connection made waits the whole timeout; one that
  // had none yet does not wait at all
  assert.ok(took.filter((ms) => ms >= 100).length >= took.length / 2,
    `misses with Redis hung took ${took.join(', ')} ms: most waited spendpol_cache_redis_timeout (100ms)`);
  const n = slow() - before;
  assert.ok(n >= 1 && n <= a.nginxWorkerPids().length, `node A logged the slow Redis ${n} times`);
  // the late answers to abandoned lookups are dropped; once the workers
  // have new connections, sharing goes on
  t.diagnostic(`shared again after ${await waitSharing('after the hang')} tries`);
});

test('DELETE /cache on node A: node B stops serving its stored entries within 1 s', async (t) => {
  const onB = [0, 1, 2, 3].map((i) => chatBody(`purge B ${i}`));
  for (const [i, body] of onB.entries()) {
    await expectState(b, body, 'miss', `B entry ${i}`);
    await expectState(b, body, 'hit', `B entry ${i} stored`);
  }
  const onA = chatBody('purge A');
  await expectState(a, onA, 'miss', 'A entry');
  await expectState(a, onA, 'hit', 'A entry stored');

  const r = await purgeCache(a);
  const answered = Date.now();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json?.purged?.provider, null, r.text);

  // B polled every 50 ms from the DELETE's answer, until its first miss
  let firstMiss = null;
  const polls = [];
  for (let i = 0; Date.now() - answered < 5000 * SLOW; i++) {
    const x = await call(b, onB[0]);
    assert.equal(x.status, 200, x.text.slice(0, 300));
    polls.push(x.cache);
    if (x.cache === 'miss') { firstMiss = x.at - answered; break; }
    assert.equal(x.cache, 'hit', 'before the purge arrives B serves its entry');
    await sleep(Math.max(0, answered + 50 * (i + 1) - Date.now()));
  }
  t.diagnostic(`first miss on node B ${firstMiss} ms after node A answered the DELETE (${polls.length} polls)`);
  console.log(`# cache-nodes: first miss on node B ${firstMiss} ms after node A answered DELETE /cache (${polls.length} polls)`);
  assert.notEqual(firstMiss, null, `node B still served the purged entry ${5000 * SLOW} ms after the purge`);
  assert.ok(firstMiss < 1000, `node B's first miss came ${firstMiss} ms after the purge (at most 1000)`);

  // 1 s after the purge every worker of B has it: the other entries are misses
  await sleep(Math.max(0, answered + 1000 - Date.now()));
  for (const [i, body] of onB.slice(1).entries()) {
    await expectState(b, body, 'miss', `B entry ${i + 1}, 1 s after the purge`);
  }
  await expectState(a, onA, 'miss', 'A entry, after its own node\'s purge');
  // what is stored after the purge is served
  await expectState(b, onB[1], 'hit', 'B entry 1 stored again');
  await expectState(a, onA, 'hit', 'A entry stored again');
});
