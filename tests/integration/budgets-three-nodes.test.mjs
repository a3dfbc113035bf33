// Leased budgets across three nodes (nginx + controld each) sharing one
// PostgreSQL and Redis (docs/budgets.md, "Across nodes: exact, with
// leases"). Each node admits inside the lease its controld holds; the
// leases of all nodes never add up to more than the budget has left, so
// the nodes together never settle more than the limit, whatever the burst,
// and a request that does not fit its node's lease waits for a top-up
// instead of being refused while the budget can still pay it.
//
// Leases here live 2 s (SPENDPOL_LEASE_TTL_MS) so the failure cases run
// quickly; the defaults are 10 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useNodes, sleep, waitFor } from './lib/stack.mjs';

const env = { SPENDPOL_LEASE_TTL_MS: '2000', SPENDPOL_LEASE_GRACE_MS: '1000' };
const [a, b, c] = useNodes(3, { env });

const CONTENT = 'one budget, three nodes';
const MAX_TOKENS = 1000;

function call(node, key, { slowMs = 0 } = {}) {
  return node.client(key, { maxRetries: 0 }).chat.completions
    .create({ model: 'gpt-4o-mini', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: CONTENT }] },
      slowMs ? { headers: { 'x-fixture-mode': `slow-${slowMs}` } } : undefined)
    .withResponse()
    .then(({ response }) => ({ status: response.status, auditId: response.headers.get('x-spendpol-audit-id') }))
    .catch((e) => ({ status: e.status ?? 0, code: e.code ?? e.error?.code, message: e.message }));
}

/** What one request costs, measured through node a on a key without a budget. */
let perRequest;
async function costOfOne() {
  if (perRequest) return perRequest;
  const { key } = await a.createKey({ project: `cal-${crypto.randomBytes(3).toString('hex')}` });
  const r = await call(a, key);
  assert.equal(r.status, 200, JSON.stringify(r));
  const row = await a.waitAuditRow(r.auditId);
  perRequest = BigInt(row.cost_nano);
  assert.ok(perRequest > 0n);
  return perRequest;
}

/** A blocking project budget that pays for `pays` requests in full, and a key on it known to every node. */
async function budgetFor(pays, { action } = {}) {
  const per = await costOfOne();
  const project = `l-${crypto.randomBytes(3).toString('hex')}`;
  const limit = per * BigInt(pays) + per / 2n;
  const r = await a.api('POST', '/budgets', {
    body: {
      name: `lease-${project}`, scope: { type: 'project', value: project },
      limit_usd: (Number(limit) / 1e9).toFixed(9), period: 'monthly', ...(action ? { action } : {}),
    },
  });
  assert.equal(r.status, 201, r.text);
  const { key } = await a.createKey({ project });
  await b.waitKeyAccepted(key);
  await c.waitKeyAccepted(key);
  return { key, limit, pays, budgetId: r.json.id };
}

/** The audit rows' total for these ids, once every node has ingested them. */
async function settled(ids) {
  const rows = await a.waitAuditRows(ids, 30_000);
  return rows.reduce((sum, r) => sum + BigInt(r.cost_nano), 0n);
}

function burst(nodes, key, n, opts) {
  return Promise.all(Array.from({ length: n }, (_, i) => call(nodes[i % nodes.length], key, opts)));
}

function tally(results) {
  const ok = results.filter((r) => r.status === 200).map((r) => r.auditId);
  const other = results.filter((r) => r.status !== 200 && !(r.status === 402 && r.code === 'budget_exceeded'));
  return { ok, other };
}

for (const pays of [1, 10, 100]) {
  test(`a burst of 300 over three nodes against a budget for ${pays}: never over the limit, >= 90 % of it used`, async (t) => {
    const { key, limit } = await budgetFor(pays);
    const results = await burst([a, b, c], key, 300);
    const { ok, other } = tally(results);
    assert.deepEqual(other.slice(0, 3), [], `only 200 or 402 budget_exceeded (${other.length} others)`);
    const total = await settled(ok);
    t.diagnostic(`pays ${pays}: ${ok.length} admitted of 300, settled ${total} of ${limit} nano-USD (${(Number(total) / Number(limit)).toFixed(3)} x)`);
    assert.ok(total <= limit, `settled ${total} > limit ${limit}`);
    assert.ok(ok.length >= Math.ceil(0.9 * pays), `${ok.length} admitted of the ${pays} the budget pays for`);
    assert.ok(ok.length <= pays);
  });
}

test('nginx killed with SIGKILL mid-burst: its lease comes back, the others spend it, nothing over', async (t) => {
  const { key, limit, pays } = await budgetFor(30);
  // c takes its lease first (about half the budget), then answers take
  // 500 ms: c dies with its requests in flight, their reservations and the
  // rest of its lease held
  const warm = await call(c, key);
  assert.equal(warm.status, 200, JSON.stringify(warm));
  const first = burst([a, b, c], key, 45, { slowMs: 500 });
  await sleep(150);
  c.killNginx();
  try {
    const results = await first;
    // c's own requests die with it; a's and b's are answered
    const answered = results.filter((_, i) => i % 3 !== 2);
    const { ok, other } = tally(answered);
    assert.deepEqual(other.slice(0, 3), [], 'a and b answer 200 or 402 budget_exceeded');
    const cOk = results.filter((r, i) => i % 3 === 2 && r.status === 200).map((r) => r.auditId);
    assert.equal(cOk.length, 0, 'c died before answering');

    // c's controld sees its nginx gone (no heartbeat for 5 s, the journal
    // drained since) and gives back the rest of c's lease: until then a and
    // b are refused (c holds it), afterwards they spend it, spaced
    const later = [];
    let refusedFirst = 0;
    const deadline = Date.now() + 25_000;
    while (Date.now() < deadline && 1 + ok.length + cOk.length + later.length < pays) {
      const r = await call(later.length % 2 ? b : a, key);
      if (r.status === 200) later.push(r.auditId);
      else if (r.status === 402 && r.code === 'budget_exceeded') { refusedFirst += later.length === 0; await sleep(250); }
      else assert.fail(`unexpected answer ${JSON.stringify(r)}`);
    }
    const ids = [warm.auditId, ...ok, ...cOk, ...later];
    const total = await settled(ids);
    t.diagnostic(`admitted 1 (c, before) + ${ok.length} + ${cOk.length} (c) in the burst, ${later.length} after (${refusedFirst} refused while c held its lease); settled ${total} of ${limit}`);
    assert.ok(total <= limit, `settled ${total} > limit ${limit}`);
    assert.ok(ids.length >= Math.ceil(0.9 * pays), `only ${ids.length} of ${pays} admitted: c's lease did not come back`);
    assert.ok(ids.length <= pays);
    assert.ok(later.length > 0, 'a and b spent what c held once it came back');
  } finally {
    await c.startNginx();
  }
  await c.waitKeyAccepted(key);
});

test('controld stopped on one node: it spends at most its lease, then 402 budget_unavailable; warn budgets answer', async (t) => {
  const hard = await budgetFor(200);
  const soft = await budgetFor(200, { action: 'warn' });
  // leases for both budgets on b
  assert.equal((await call(b, hard.key)).status, 200);
  assert.equal((await call(b, soft.key)).status, 200);
  await b.stopControld('SIGTERM');
  try {
    // within the lease's life b answers; after it, it refuses the hard
    // budget with a message naming the cause, and serves the soft one
    await sleep(3500);   // ttl 2 s, plus margin
    const r = await call(b, hard.key);
    assert.equal(r.status, 402, JSON.stringify(r));
    assert.equal(r.code, 'budget_unavailable', JSON.stringify(r));
    assert.match(r.message, /controld|PostgreSQL/);
    assert.equal((await call(b, soft.key)).status, 200);
    // the other nodes are unaffected
    assert.equal((await call(a, hard.key)).status, 200);
  } finally {
    await b.startControld();
  }
  await waitFor(async () => (await call(b, hard.key)).status === 200,
    { timeout: 15_000, interval: 200, message: 'b serving the hard budget again' });
  t.diagnostic('b refused with budget_unavailable while its controld was down and served again after');
});

test('PostgreSQL restarted mid-burst: nothing over the limit, every node serves again', async (t) => {
  const { key, limit } = await budgetFor(40);
  const first = burst([a, b, c], key, 60);
  await sleep(20);
  await a.restartPostgres({ downMs: 2000 });
  const results = await first;
  const ok = results.filter((r) => r.status === 200).map((r) => r.auditId);
  const other = results.filter((r) => r.status !== 200 && !(r.status === 402 && /^budget_(exceeded|unavailable)$/.test(r.code)));
  assert.deepEqual(other.slice(0, 3), [], 'only 200 or 402');
  const total = await settled(ok);
  t.diagnostic(`admitted ${ok.length} of 60 across a PostgreSQL restart, settled ${total} of ${limit}`);
  assert.ok(total <= limit, `settled ${total} > limit ${limit}`);
  const fresh = await budgetFor(5);
  for (const node of [a, b, c]) {
    await waitFor(async () => (await call(node, fresh.key)).status === 200,
      { timeout: 20_000, interval: 250, message: 'every node serving after the restart' });
  }
});
