// One global budget held by two nodes (nginx + controld each) sharing
// PostgreSQL and Redis. Each node sees the other's spend once controld has
// ingested it (journal tail + spend file, well under a second): spaced
// requests never overshoot; a simultaneous burst overshoots at most by
// what the other node admits before it sees the first settlement, which is
// bounded by the limit itself (docs/budgets.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Stack, sleep, waitFor } from './lib/stack.mjs';

const a = new Stack();
let b;

before(async () => {
  await a.start();
  b = new Stack({
    databaseURL: a.databaseURL,
    redisURL: a.redisURL,
    adminKey: a.adminKey,
    masterKey: fs.readFileSync(path.join(a.dataDir, 'master.key'), 'utf8').trim(),
  });
  await b.start();
}, { timeout: 240_000 });

// node b first: node a owns the PostgreSQL and Redis both use
after(async () => {
  const alive = setInterval(() => {}, 1000);
  let problems;
  try {
    problems = [...(b ? await b.stop() : []), ...await a.stop()];
  } finally {
    clearInterval(alive);
  }
  assert.deepEqual(problems, [], `problems in the nodes' logs (${a.dataDir}, ${b?.dataDir})`);
}, { timeout: 120_000 });

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

async function settled(ids) {
  const want = new Set(ids);
  let rows = [];
  await waitFor(async () => {
    rows = (await a.allAuditRows({ limit: 1000 })).filter((r) => want.has(r.id));
    return rows.length === want.size;
  }, { timeout: 20_000, message: 'audit rows from both nodes' });
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

test('a burst on both nodes overshoots at most by the documented bound', async (t) => {
  const { key, limit } = await globalBudget();
  const results = await Promise.all([
    ...Array.from({ length: 40 }, () => call(a, key)),
    ...Array.from({ length: 40 }, () => call(b, key)),
  ]);
  const ok = results.filter((r) => r.status === 200).map((r) => r.auditId);
  assert.equal(results.filter((r) => r.status !== 200 && r.code !== 'budget_exceeded').length, 0);
  const total = await settled(ok);
  t.diagnostic(`burst: ${ok.length} admitted of 80, settled ${total} nano-USD, limit ${limit} (${(Number(total) / Number(limit)).toFixed(3)} x)`);
  // each node alone holds the limit; together at most one limit per node
  assert.ok(total <= 2n * limit, `settled ${total} > 2 x ${limit}`);

  // once both have ingested, the budget is exhausted on both nodes
  await sleep(1000);
  assert.equal((await call(a, key)).status, 402);
  assert.equal((await call(b, key)).status, 402);
});
