// The cache's Redis tier with a Redis that wants a password, on database
// 3 (REDIS_URL redis://:PASSWORD@host:port/3; docs/cache.md): the nodes'
// workers authenticate and select the database before using the
// connection, so entries land in database 3 only, a hit stored on node A
// is a hit on node B through it, and the password appears in no log.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { useNodes, freePort, waitFor, sleep, IS_SAN } from './lib/stack.mjs';

const SLOW = IS_SAN ? 3 : 1;
const PORT = await freePort();
const PASSWORD = `pw-${crypto.randomBytes(12).toString('hex')}`;
const DB = 3;

let redis;
const cli = (...args) => execFileSync('redis-cli', ['-p', String(PORT), '-a', PASSWORD, '--no-auth-warning', ...args],
  { encoding: 'utf8' }).trim();

// a Redis of this file's own, before the nodes start
before(async () => {
  redis = spawn('redis-server', ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--requirepass', PASSWORD, '--protected-mode', 'yes'], { stdio: 'ignore' });
  await waitFor(() => {
    try { return cli('PING') === 'PONG'; } catch { return false; }
  }, { timeout: 10_000, message: 'the password-protected Redis to answer' });
});

const [a, b] = useNodes(2, {
  redisURL: `redis://:${PASSWORD}@127.0.0.1:${PORT}/${DB}`,
  nginxHttp: 'spendpol_cache_redis_timeout 100ms;',
});

after(() => { redis?.kill('SIGTERM'); });

let keyPromise;
function proxyKey() {
  keyPromise ??= (async () => {
    const { key } = await a.createKey({ name: 'cache redis auth' });
    await b.waitKeyAccepted(key);
    return key;
  })();
  return keyPromise;
}

async function call(node, body) {
  const r = await fetch(`${node.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await proxyKey()}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, cache: r.headers.get('x-spendpol-cache'), text: await r.text() };
}

const chatBody = (label) => ({
  model: 'gpt-4o-mini', max_tokens: 12, temperature: 0,
  messages: [{ role: 'user', content: `${label} ${crypto.randomBytes(5).toString('hex')}` }],
});

test('with AUTH and SELECT: entries go to database 3 only, and node B hits what node A stored', async (t) => {
  await proxyKey();
  // each worker connects on its first lookup and uses the connection once
  // AUTH and SELECT answered: share a fresh answer until it works
  let tries = 0;
  let shared = null;
  const until = Date.now() + 15_000 * SLOW;
  while (!shared && Date.now() < until) {
    tries++;
    const body = chatBody('auth');
    const first = await call(a, body);
    assert.equal(first.status, 200, first.text.slice(0, 300));
    assert.equal(first.cache, 'miss');
    await sleep(50 * SLOW);
    const onB = await call(b, body);
    assert.equal(onB.status, 200, onB.text.slice(0, 300));
    if (onB.cache === 'hit') shared = { first, onB };
    else await sleep(250);
  }
  assert.ok(shared, 'node B never found node A\'s answer in the password-protected Redis');
  t.diagnostic(`shared after ${tries} tries`);
  assert.equal(shared.onB.text, shared.first.text);

  const inDb = cli('-n', String(DB), '--scan', '--pattern', 'spendpol:cache:v1:*').split('\n').filter(Boolean);
  const inDb0 = cli('-n', '0', '--scan', '--pattern', 'spendpol:cache:*').split('\n').filter(Boolean);
  assert.ok(inDb.length >= tries, `entries in database ${DB}: ${inDb.length}`);
  assert.deepEqual(inDb0, [], 'nothing in database 0');
  for (const k of inDb) assert.match(k, /^spendpol:cache:v1:[0-9a-f]{64}$/);
  const ttl = Number(cli('-n', String(DB), 'PTTL', inDb[0]));
  assert.ok(ttl > 0 && ttl <= 3600 * 1000, `an entry expires with its TTL: PTTL ${ttl}`);
});

test('the Redis password reaches no log of either node', () => {
  for (const node of [a, b]) {
    for (const f of fs.readdirSync(node.logs)) {
      const p = path.join(node.logs, f);
      if (!fs.statSync(p).isFile()) continue;
      assert.ok(!fs.readFileSync(p, 'utf8').includes(PASSWORD), `${f} of ${node.dataDir} holds the Redis password`);
    }
  }
});
