// Leases of budgets across nodes (migration 016, spendpol_lease_grant):
// the grant that keeps every node's lease (or its spend, if larger) within
// the limit, run as controld's runtime role. The lease manager that calls
// it and the module that admits inside it are tested with three nodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { useStack } from './lib/stack.mjs';

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

test('a node silent for ttl + grace keeps only what it last reported using', async () => {
  const id = await budget(1000);
  grant(id, 'node-a', { used: 0, want: 500 });
  grant(id, 'node-b', { used: 120, want: 500 });
  assert.deepEqual(grant(id, 'node-a', { used: 0, want: 1000 }), { granted: 500, left: 0, live: 2 });
  sql(`UPDATE budget_leases SET expires_at = clock_timestamp() - interval '6 seconds'
        WHERE budget_id = '${id}' AND node_id = 'node-b'`);
  assert.deepEqual(grant(id, 'node-a', { used: 0, want: 1000 }), { granted: 880, left: 0, live: 1 });
  assert.equal(sql(`SELECT granted_nano || ' ' || (reclaimed_at IS NOT NULL) FROM budget_leases
                     WHERE budget_id = '${id}' AND node_id = 'node-b'`), '120 true');
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
