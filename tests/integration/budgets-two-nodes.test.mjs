// One global budget held by two nodes (nginx + controld each) sharing
// PostgreSQL and Redis. Each node admits inside the lease its controld
// holds (docs/budgets.md, "Across nodes: exact, with leases"): spaced
// requests stop exactly at the limit, and a simultaneous burst on both
// nodes never settles more than the limit either.
//
// Rate limits are global the same way: each controld pushes its node's
// ingested requests to Redis and publishes the other nodes' counts of the
// current minute in the spend file. With Redis down each node holds the
// limits on its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useNodes, sleep } from './lib/stack.mjs';

const [a, b] = useNodes(2);

const CONTENT = 'split between two nodes';
const PER_REQUEST = 6n * 150n + 1000n * 600n;   // fixture: 6 prompt, 1000 out

async function globalBudget() {
  const project = `g-${crypto.randomBytes(3).toString('hex')}`;
  const limit = PER_REQUEST * 10n + PER_REQUEST / 2n;
  const r = await a.api('POST', '/budgets', {
    body: {
      name: `global-${project}`, scope: { type: 'project', value: project },
      limit_usd: (Number(limit) / 1e9).toFixed(9), period: 'monthly',
    },
  });
  assert.equal(r.status, 201, r.text);
  const { key } = await a.createKey({ project });
  await b.waitKeyAccepted(key);
  return { key, limit };
}

function call(node, key) {
  return node.client(key).chat.completions
    .create({ model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: CONTENT }] })
    .withResponse()
    .then(({ response }) => ({ status: response.status, auditId: response.headers.get('x-spendpol-audit-id') }))
    .catch((e) => ({ status: e.status, code: e.code ?? e.error?.code }));
}

/** what nginx logged about the provider on both nodes (to tell why a call failed) */
function upstreamErrors() {
  return [a, b].flatMap((node) => {
    try {
      return fs.readFileSync(path.join(node.logs, 'error.log'), 'utf8')
        .split('\n').filter((l) => /\[(error|crit|alert)\]|upstream/.test(l)).slice(-5);
    } catch (e) {
      return [`${node.dataDir}: ${e.message}`];
    }
  });
}

/** The audit rows' total for these ids, once both nodes have ingested them. */
async function settled(ids) {
  const rows = await a.waitAuditRows(ids);
  return rows.reduce((sum, r) => sum + BigInt(r.cost_nano), 0n);
}

test('spaced requests alternating between nodes stop exactly at the limit', async () => {
  const { key, limit } = await globalBudget();
  const ok = [];
  for (let i = 0; i < 14; i++) {
    const r = await call(i % 2 ? b : a, key);
    if (r.status === 200) ok.push(r.auditId);
    else assert.equal(r.code, 'budget_exceeded', JSON.stringify(r));
    await sleep(800);   // longer than ingestion and the spend file's update
  }
  assert.equal(ok.length, 10, 'ten requests fit, on whichever node');
  assert.ok(await settled(ok) <= limit);
});

test('a burst on both nodes never settles more than the limit, and uses it', async (t) => {
  const { key, limit } = await globalBudget();
  const results = await Promise.all([
    ...Array.from({ length: 40 }, () => call(a, key)),
    ...Array.from({ length: 40 }, () => call(b, key)),
  ]);
  const ok = results.filter((r) => r.status === 200).map((r) => r.auditId);
  const other = results.filter((r) => r.status !== 200 && r.code !== 'budget_exceeded');
  assert.equal(other.length, 0, `only 200 or 402 budget_exceeded: ${JSON.stringify(other.slice(0, 3))}; ` +
    `the nodes' upstream errors: ${upstreamErrors().join(' | ')}`);
  const total = await settled(ok);
  t.diagnostic(`burst: ${ok.length} admitted of 80, settled ${total} nano-USD, limit ${limit} (${(Number(total) / Number(limit)).toFixed(3)} x)`);
  // leases: the two nodes together never more than the limit, and a
  // request that did not fit its node's lease waited for a top-up instead
  // of being refused while the budget could still pay it
  assert.ok(total <= limit, `settled ${total} > limit ${limit}`);
  assert.ok(ok.length >= 9 && ok.length <= 10, `${ok.length} admitted; the budget pays for 10`);

  // once both have ingested, the budget is exhausted on both nodes
  await sleep(1000);
  assert.equal((await call(a, key)).status, 402);
  assert.equal((await call(b, key)).status, 402);
});


async function ask(node, key) {
  try {
    const { response } = await node.client(key, { maxRetries: 0 }).chat.completions
      .create({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    return { status: response.status };
  } catch (e) {
    return { status: e.status, code: e.code, headers: e.headers };
  }
}

// windows are whole minutes: start early enough to end in the same one
async function freshWindow(needSeconds) {
  if ((Date.now() % 60000) / 1000 > 60 - needSeconds) await sleep(60000 - (Date.now() % 60000) + 200);
}

const SEEN = 2000;   // ingestion, Redis, the other node's spend file round

test('a key\'s requests_per_minute holds across both nodes', async () => {
  await freshWindow(25);
  const { key } = await a.createKey({ rate_limits: { requests_per_minute: 6 } });
  await b.waitKeyAccepted(key);

  const window = Date.now() - (Date.now() % 60000);
  const unlimited = await a.createKey();
  for (let i = 0; i < 3; i++) assert.equal((await ask(a, unlimited.key)).status, 200);
  for (let i = 0; i < 4; i++) assert.equal((await ask(a, key)).status, 200, `node a call ${i + 1}`);
  await sleep(SEEN);

  // only subjects with a limit are counted in Redis: this key, not the
  // key without one nor the organisation
  const members = execFileSync('redis-cli', ['-p', String(a.redisPort), 'SMEMBERS', `spendpol:rate:${window}`],
    { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
  assert.equal(members.length, 1, `subjects counted in Redis: ${members}`);

  // node b has admitted nothing itself, yet only two are left
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await ask(b, key));
  assert.deepEqual(got.map((r) => r.status), [200, 200, 429]);
  assert.equal(got[2].code, 'rate_limit_exceeded');
  assert.equal(got[2].headers.get('x-ratelimit-limit-requests'), '6');
  assert.equal(got[2].headers.get('x-ratelimit-remaining-requests'), '0');

  // and node a sees node b's two
  await sleep(SEEN);
  assert.equal((await ask(a, key)).status, 429);
});

test('an agent\'s limit across nodes, and each node alone while Redis is down', async () => {
  const created = await a.api('POST', '/agents', { body: { name: 'two-node agent', rate_limits: { requests_per_minute: 4 } } });
  assert.equal(created.status, 201, created.text);
  await freshWindow(40);
  const one = await a.createKey({ agent_id: created.json.id });
  const two = await a.createKey({ agent_id: created.json.id });
  await b.waitKeyAccepted(one.key);
  await b.waitKeyAccepted(two.key);

  assert.equal((await ask(a, one.key)).status, 200);
  assert.equal((await ask(a, one.key)).status, 200);
  assert.equal((await ask(a, one.key)).status, 200);
  await sleep(SEEN);
  assert.equal((await ask(b, two.key)).status, 200);
  assert.equal((await ask(b, two.key)).status, 429);

  // Redis down: the proxy keeps answering and each node counts alone
  const lone = await a.createKey({ rate_limits: { requests_per_minute: 2 } });
  await b.waitKeyAccepted(lone.key);
  await a.stopRedis();
  try {
    assert.equal((await ask(a, lone.key)).status, 200);
    assert.equal((await ask(a, lone.key)).status, 200);
    assert.equal((await ask(a, lone.key)).status, 429);
    await sleep(SEEN);
    assert.equal((await ask(b, lone.key)).status, 200, 'node b cannot know of node a\'s calls');
    assert.equal((await ask(b, lone.key)).status, 200);
    assert.equal((await ask(b, lone.key)).status, 429);
  } finally {
    await a.startRedis();
  }
});
