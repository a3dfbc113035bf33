// controld killed with SIGKILL under load, then restarted: the proxy keeps
// answering on its last snapshot (fail static) and, once controld is back,
// every answered request is in /audit-logs exactly once with its cost, and
// the budget's spend equals the audit rows' total.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, sleep, waitFor } from '../integration/lib/stack.mjs';
import { startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend } from './lib/load.mjs';

const s = useStack();

test('kill -9 controld mid-load, restart: no request refused, no audit row lost or duplicated', async () => {
  const { key, keyId, budget } = await budgetedKey(s, 'kill');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 9000, tag: 'kill' });
  await load.more(60);
  await s.stopControld('SIGKILL');
  const before = load.count;
  await sleep(1500); // the proxy serves on its last snapshot
  const during = load.count - before;
  await s.startControld();
  await load.more(60);
  const results = await load.stop();

  assert.ok(during > 10, `only ${during} requests answered while controld was down`);
  assertAnswered(results, { what: 'controld kill -9' });
  const { totalNano } = await verifyAudit(s, results, { keyId });
  await assertBudgetSpend(s, budget, totalNano);
});

test('kill -9 controld again and again while it catches up a backlog: every row exactly once', async (t) => {
  // a warning budget: controld is down before the budget's first request
  const { key, keyId, budget } = await budgetedKey(s, 'backlog', { action: 'warn' });
  await s.stopControld('SIGKILL');
  // a backlog of journal lines while controld is down (JSON only: faster)
  const load = startLoad(s, key, { concurrency: 16, maxMs: 6000, maxRequests: 1500, stream: false, tag: 'backlog' });
  await waitFor(() => load.count >= 1200, { timeout: 8000, interval: 50, message: '1200 backlog requests' }).catch(() => {});
  const results = await load.stop();
  const kills = [];
  for (const delay of [0, 100, 180, 220, 260, 300, 600]) {
    await s.startControld();
    await sleep(delay);
    const h = await s.api('GET', '/healthz').catch(() => null);
    kills.push(`${delay} ms: journal_offset ${h?.json?.journal_offset}`);
    await s.stopControld('SIGKILL');
  }
  await s.startControld();
  t.diagnostic(`${results.length} requests in the backlog; controld killed at: ${kills.join('; ')}`);
  assertAnswered(results, { min: 500, what: 'the backlog (controld down)' });
  const { totalNano } = await verifyAudit(s, results, { keyId, timeout: 30_000 });
  await assertBudgetSpend(s, budget, totalNano);
});
