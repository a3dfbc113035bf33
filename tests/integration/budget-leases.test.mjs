// Leases of budgets across nodes (migration 016, spendpol_lease_grant):
// the grant that keeps every node's lease (or its spend, if larger) within
// the limit, run as controld's runtime role. The lease manager that calls
// it and the module that admits inside it are tested with three nodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { useStack } from './lib/stack.mjs';
import { budgetHash } from './lib/slots.mjs';

// leases renew within these in the tests
process.env.SPENDPOL_LEASE_TTL_MS = '2000';
process.env.SPENDPOL_LEASE_GRACE_MS = '1000';
const s = useStack();
const PERIOD = '2026-12-01 00:00:00+00';

/** one value (or rows joined by '\n') of a query run as the tables' owner */
function sql(query) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

/** the grant statement, as controld's runtime role runs it */
function grantArgs(budget, node, { used = 0, want, rate = 0, ttl = 10000, grace = 5000 }) {
  return [s.databaseURL, '-v', 'ON_ERROR_STOP=1', '-Atq',
    '-c', 'BEGIN', '-c', 'SET LOCAL ROLE spendpol_system',
    '-c', `SELECT granted_nano, left_nano, live_nodes FROM spendpol_lease_grant('${budget}',
           '${PERIOD}', '${node}', ${used}, ${want}, ${rate}, ${ttl}, ${grace})`,
    '-c', 'COMMIT'];
}

function parse(out) {
  const [granted, left, live] = out.trim().split('\n').filter((l) => l.includes('|'))[0].split('|').map(Number);
  return { granted, left, live };
}

function grant(budget, node, opts) {
  return parse(execFileSync('psql', grantArgs(budget, node, opts), { encoding: 'utf8' }));
}

async function budget(limitNano) {
  const r = await s.api('POST', '/budgets', {
    body: {
      name: `lease-${crypto.randomBytes(3).toString('hex')}`, scope: { type: 'organization' },
      limit_usd: (limitNano / 1e9).toFixed(9), period: 'total',
    },
  });
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

test('a grant is what is left after the other nodes, and gives back down to what is used', async () => {
  const id = await budget(1000);
  assert.deepEqual(grant(id, 'node-a', { want: 600 }), { granted: 600, left: 400, live: 1 });
  assert.deepEqual(grant(id, 'node-b', { want: 600 }), { granted: 400, left: 0, live: 2 });
  // a gives back what it does not use, never below what it uses
  assert.deepEqual(grant(id, 'node-a', { used: 100, want: 100 }), { granted: 100, left: 500, live: 2 });
  assert.deepEqual(grant(id, 'node-a', { used: 100, want: 50 }), { granted: 100, left: 500, live: 2 });
  // a node without a lease holds what it spent; so does one whose spend passed its lease
  sql(`INSERT INTO budget_node_spend (budget_id, org_id, period_start, node_id, epoch, spent_nano)
       SELECT id, org_id, '${PERIOD}', 'node-c', 1, 300 FROM budgets WHERE id = '${id}'`);
  assert.deepEqual(grant(id, 'node-a', { used: 100, want: 600 }), { granted: 300, left: 0, live: 2 });
  sql(`INSERT INTO budget_node_spend (budget_id, org_id, period_start, node_id, epoch, spent_nano)
       SELECT id, org_id, '${PERIOD}', 'node-a', 1, 250 FROM budgets WHERE id = '${id}'`);
  assert.deepEqual(grant(id, 'node-a', { used: 250, want: 0 }), { granted: 250, left: 50, live: 2 });
});

test('a silent node keeps its lease until an operator frees it down to its spend', async () => {
  const id = await budget(1000);
  grant(id, 'node-a', { used: 0, want: 500 });
  grant(id, 'node-b', { used: 120, want: 500 });
  assert.deepEqual(grant(id, 'node-a', { used: 0, want: 1000 }), { granted: 500, left: 0, live: 2 });
  sql(`UPDATE budget_leases SET expires_at = clock_timestamp() - interval '1 hour'
        WHERE budget_id = '${id}' AND node_id = 'node-b'`);
  // no timeout reclaims it: b's unreported spend could come later
  assert.deepEqual(grant(id, 'node-a', { used: 0, want: 1000 }), { granted: 500, left: 0, live: 1 });
  sql(`INSERT INTO budget_node_spend (budget_id, org_id, period_start, node_id, epoch, spent_nano)
       SELECT id, org_id, '${PERIOD}', 'node-b', 1, 90 FROM budgets WHERE id = '${id}'`);
  const out = execFileSync('psql', [s.databaseURL, '-v', 'ON_ERROR_STOP=1', '-Atq',
    '-c', 'BEGIN', '-c', 'SET LOCAL ROLE spendpol_system',
    '-c', `SELECT budget_id, released_nano FROM spendpol_lease_release('node-b', 'org_default')
            WHERE budget_id = '${id}'`, '-c', 'COMMIT'], { encoding: 'utf8' });
  assert.match(out, new RegExp(`${id}\\|410`));
  assert.equal(sql(`SELECT granted_nano || ' ' || (reclaimed_at IS NOT NULL) FROM budget_leases
                     WHERE budget_id = '${id}' AND node_id = 'node-b'`), '90 true');
  assert.deepEqual(grant(id, 'node-a', { used: 0, want: 1000 }), { granted: 910, left: 0, live: 1 });
  // back again: it asks like any node, from what is left
  assert.deepEqual(grant(id, 'node-b', { used: 120, want: 500 }), { granted: 120, left: 0, live: 2 });
});

test('concurrent grants of twenty nodes never pass the limit together', async () => {
  const id = await budget(1000);
  const run = promisify(execFile);
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    run('psql', grantArgs(id, `node-${i}`, { want: 100 }), { encoding: 'utf8' })
      .then(({ stdout }) => parse(stdout))));
  const total = results.reduce((sum, r) => sum + r.granted, 0);
  assert.equal(total, 1000);
  assert.equal(results.filter((r) => r.granted === 100).length, 10);
  assert.equal(sql(`SELECT sum(granted_nano) FROM budget_leases WHERE budget_id = '${id}'`), '1000');
});

test('a deleted budget grants nothing, and tenants only read leases', async () => {
  const id = await budget(1000);
  grant(id, 'node-a', { want: 10 });
  const r = await s.api('DELETE', `/budgets/${id}`);
  assert.ok(r.status < 300, r.text);
  assert.deepEqual(grant(id, 'node-a', { want: 10 }), { granted: 0, left: 0, live: 0 });
  assert.throws(() => execFileSync('psql', [s.apiDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atq',
    '-c', 'BEGIN', '-c', 'SET LOCAL ROLE spendpol_app',
    '-c', `SELECT spendpol_lease_grant('${id}', '${PERIOD}', 'x', 0, 1, 0, 1, 1)`], { stdio: 'pipe' }),
  /permission denied/);
});

// ---- the lease manager (controld/lease.c) against an ask file -----------

const askPath = () => path.join(path.dirname(s.journalPath), 'asks.slots');
const spendPath = () => path.join(s.snapshotDir, 'spend.slots');

/** this node's slot of a budget in the spend file, or null */
function spendSlot(id) {
  const f = fs.readFileSync(spendPath());
  const hash = budgetHash(id);
  const slots = f.readUInt32LE(12);
  for (let i = 0; i < slots; i++) {
    const o = 64 + i * 128;
    if (f.readBigUInt64LE(o) !== hash) continue;
    const n = (k) => Number(f.readBigInt64LE(o + 8 * k));
    return {
      period: n(1), nodeAll: n(6), lease: n(7), expires: n(8), left: n(9), live: n(10), answered: n(11),
    };
  }
  return null;
}

const spendFlags = () => Number(fs.readFileSync(spendPath()).readBigUInt64LE(24));

/** an ask file as the module lays it out (sp_ask_init), 8 slots */
function writeAsks({ heartbeat = Date.now(), asks = 1, slots = [] }) {
  const f = Buffer.alloc(64 + 8 * 64);
  f.write('SPASKS01', 0, 'latin1');
  f.writeUInt32LE(1, 8);
  f.writeUInt32LE(8, 12);
  f.writeBigInt64LE(BigInt(Date.now() - 60_000), 16);
  f.writeBigInt64LE(BigInt(heartbeat), 24);
  f.writeBigUInt64LE(BigInt(asks), 32);
  for (const a of slots) {
    const hash = budgetHash(a.id);
    let i = Number(hash & 7n);
    while (f.readBigUInt64LE(64 + i * 64) !== 0n) i = (i + 1) & 7;
    const o = 64 + i * 64;
    f.writeBigUInt64LE(hash, o);
    [a.period, a.used ?? 0, a.admitted ?? 0, a.need ?? 0, a.seq ?? 0, a.lastAdmit ?? Date.now(), a.worst ?? 0]
      .forEach((v, k) => f.writeBigInt64LE(BigInt(v), o + 8 + 8 * k));
  }
  // a new file (new inode), as a new nginx lays one out
  fs.writeFileSync(`${askPath()}.tmp`, f);
  fs.renameSync(`${askPath()}.tmp`, askPath());
}

async function until(fn, message, timeout = 10_000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('without an ask file controld grants nothing and leaves the module its old rule', async (t) => {
  if (fs.existsSync(askPath())) {
    t.skip('this nginx lays out an ask file: the flag was set at its start');
    return;
  }
  const id = await budget(1_000_000);
  await until(() => spendSlot(id), 'the budget in the spend file');
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(spendFlags() & 1, 0);
  assert.equal(spendSlot(id).lease, 0);
  assert.equal(sql(`SELECT count(*) FROM budget_leases WHERE budget_id = '${id}'`), '0');
});

test('an ask is granted from what is left, published, renewed, then given back when idle', async () => {
  const id = await budget(1_000_000);
  const { period } = await until(() => spendSlot(id), 'the budget in the spend file');
  writeAsks({ asks: 1, slots: [{ id, period, need: 5000, worst: 1000, seq: 1 }] });
  const got = await until(() => { const v = spendSlot(id); return v.answered === 1 && v.lease > 0 && v; },
    'the ask answered');
  assert.ok(got.lease >= 5000 && got.lease <= 1_000_000, JSON.stringify(got));
  assert.equal(got.live, 1);
  assert.equal(got.left, 1_000_000 - got.lease);
  assert.ok(got.expires > Date.now() && got.expires <= Date.now() + 10_000 + 1000);
  assert.equal(spendFlags() & 1, 1);
  const [node, granted] = sql(`SELECT node_id || '|' || granted_nano FROM budget_leases
                                WHERE budget_id = '${id}'`).split('|');
  assert.equal(Number(granted), got.lease);
  // the heartbeat renews it
  await until(() => spendSlot(id).expires > got.expires, 'a renewal');

  // the operator's view
  const list = await s.api('GET', '/budget-leases');
  assert.equal(list.status, 200, list.text);
  const row = list.json.data.find((l) => l.budget_id === id);
  assert.equal(row.node_id, node);
  assert.equal(row.live, true);
  // answered, the lease falls back to a few worst cases (SP_LEASE_MIN_WORST,
  // 16): no traffic yet
  assert.ok(Number(row.granted_usd) >= 1000 / 1e9, JSON.stringify(row));
  await until(() => spendSlot(id).lease === 16_000, 'a slice of 16 worst cases without traffic');

  // idle for 10 s: back down to what is used
  writeAsks({ asks: 2, slots: [{ id, period, used: 700, worst: 1000, seq: 1, lastAdmit: Date.now() - 11_000 }] });
  await until(() => spendSlot(id).lease === 700, 'the give-back');
  await until(() => sql(`SELECT granted_nano FROM budget_leases WHERE budget_id = '${id}'`) === '700',
    'the give-back in PostgreSQL');
});

test('nginx gone (no heartbeat for 5 s, journal drained): everything above the ingested spend goes back', async () => {
  const id = await budget(1_000_000);
  const { period } = await until(() => spendSlot(id), 'the budget in the spend file');
  writeAsks({ asks: 3, slots: [{ id, period, need: 50_000, worst: 1000, seq: 1 }] });
  await until(() => spendSlot(id).lease >= 50_000, 'the grant');
  // the 400 in use were reservations of requests that died with nginx:
  // they never settle, so nothing of the lease is kept for them (the node
  // has no ingested spend)
  writeAsks({ heartbeat: Date.now() - 6000, asks: 3, slots: [{ id, period, used: 400, worst: 1000, seq: 1 }] });
  await until(() => sql(`SELECT granted_nano FROM budget_leases WHERE budget_id = '${id}'`) === '0',
    'the give-back');
  assert.equal(spendSlot(id).lease, 0);
});

test('an operator frees a dead node\'s leases: DELETE /budget-leases/{node}', async () => {
  const id = await budget(1_000_000);
  grant(id, 'node-dead', { used: 100, want: 300_000 });
  const r = await s.api('DELETE', '/budget-leases/node-dead');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.node_id, 'node-dead');
  const mine = r.json.data.find((d) => d.budget_id === id);
  assert.equal(Number(mine.released_usd), 300_000 / 1e9);
  assert.equal(sql(`SELECT granted_nano FROM budget_leases WHERE budget_id = '${id}' AND node_id = 'node-dead'`), '0');
  const again = await s.api('DELETE', '/budget-leases/no-such-node');
  assert.equal(again.status, 404, again.text);
  const list = await s.api('GET', '/budget-leases');
  assert.equal(list.json.data.find((l) => l.node_id === 'node-dead' && l.budget_id === id).live, false);
});
