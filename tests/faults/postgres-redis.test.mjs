// PostgreSQL stopped for ~3 s under load, then started; Redis restarted under
// load. The proxy keeps answering (it never needs either), controld
// reconnects, ingestion catches up: every answered request is in
// /audit-logs exactly once with its cost, and the budget agrees.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, sleep, waitFor } from '../integration/lib/stack.mjs';
import { startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend } from './lib/load.mjs';

const s = useStack();

test('PostgreSQL down ~3 s mid-load: proxy answers throughout, ingestion catches up exactly once', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'pg');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 12_000, tag: 'pg' });
  await load.more(60);
  await s.stopPostgres();
  const before = load.count;
  await sleep(3000);
  const during = load.count - before;
  // while the database is down, the admin API says so instead of hanging
  const h = await s.api('GET', '/healthz');
  t.diagnostic(`controld /healthz with PostgreSQL down: ${h.status} ${h.text.slice(0, 200)}`);
  await s.startPostgres();
  await load.more(60);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests, ${during} while PostgreSQL was down`);

  assert.ok(during > 10, `only ${during} requests answered while PostgreSQL was down`);
  assertAnswered(results, { what: 'PostgreSQL down' });
  const { totalNano } = await verifyAudit(s, results, { keyId, timeout: 40_000 });
  await assertBudgetSpend(s, budget, totalNano);
  // controld reports healthy again
  await waitFor(async () => (await s.api('GET', '/healthz')).status === 200, { timeout: 10_000, message: 'controld healthy after PostgreSQL is back' });
});

test('Redis restarted mid-load: proxy answers throughout, every row exactly once', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'redis');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 10_000, tag: 'redis' });
  await load.more(60);
  await s.restartRedis({ downMs: 1000 });
  await load.more(60);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests`);

  assertAnswered(results, { what: 'Redis restart' });
  const { totalNano } = await verifyAudit(s, results, { keyId });
  await assertBudgetSpend(s, budget, totalNano);
  await waitFor(async () => {
    const r = await s.api('GET', '/healthz');
    return r.status === 200 && !/down|error|unavailable/i.test(JSON.stringify(r.json?.redis ?? ''));
  }, { timeout: 10_000, message: 'controld healthy with Redis back' });
});
