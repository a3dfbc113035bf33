// controld killed with SIGKILL under load, then restarted: the proxy keeps
// answering on its last snapshot (fail static) and, once controld is back,
// every answered request is in /audit-logs exactly once with its cost, and
// the budget's spend equals the audit rows' total.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, sleep } from '../integration/lib/stack.mjs';
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
