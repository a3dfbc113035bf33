// nginx -s reload and nginx -s reopen (after the journal was moved away, as
// logrotate does) under load: no request lost, no [alert] (the harness fails
// the file on any), every answered request in /audit-logs exactly once --
// for reopen, the rows from both the moved file and the new one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { useStack, sleep, waitFor } from '../integration/lib/stack.mjs';
import {
  startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend, keepAliveRace, assertNotForwarded,
} from './lib/load.mjs';

const s = useStack();

test('nginx -s reload mid-load: no request lost, rows exactly once', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'reload');
  const oldWorkers = s.nginxWorkerPids();
  const load = startLoad(s, key, { concurrency: 6, maxMs: 10_000, tag: 'reload' });
  await load.more(50);
  s.nginxSignal('reload');
  // the new generation of workers takes over
  await waitFor(() => {
    const now = s.nginxWorkerPids();
    return now.length >= 2 && now.some((p) => !oldWorkers.includes(p));
  }, { timeout: 10_000, message: 'new nginx workers after reload' });
  await load.more(30);
  s.nginxSignal('reload'); // twice, the second one while the first's old workers may still drain
  await load.more(50);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests, workers ${oldWorkers} -> ${s.nginxWorkerPids()}`);

  // An idle keep-alive connection closed by an old worker as it exits can
  // race the client's next request on it (no response at all): standard
  // HTTP, retried by the SDK by default (here maxRetries is 0). Allowed,
  // few, and only if the request never reached the provider and left no
  // audit row (verifyAudit: the key's rows are exactly the answered ones).
  const races = results.filter(keepAliveRace);
  t.diagnostic(`keep-alive races (no response, connection closed by an exiting worker): ${races.length}`);
  assert.ok(races.length <= 4, `${races.length} requests on connections closed by the reload`);
  assertAnswered(results, { what: 'nginx -s reload', allowed: keepAliveRace });
  assertNotForwarded(s, races);
  // (the check itself: an answered request is found at the fixture)
  assert.throws(() => assertNotForwarded(s, results.filter((r) => r.ok).slice(0, 1)), /reached the provider/);
  const { totalNano } = await verifyAudit(s, results, { keyId });
  await assertBudgetSpend(s, budget, totalNano);
});

test('nginx -s reopen after mv of the journal: rows from both files ingested exactly once', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'reopen');
  const journal = s.journalPath;
  const rotated = `${journal}.1`;
  const load = startLoad(s, key, { concurrency: 6, maxMs: 10_000, tag: 'reopen' });
  await load.more(50);
  fs.renameSync(journal, rotated);
  await load.more(20); // these land in the moved file: nginx still has it open
  s.nginxSignal('reopen');
  await waitFor(() => fs.existsSync(journal) && fs.statSync(journal).size > 0,
    { timeout: 10_000, message: 'nginx to create a new journal and write to it after reopen' });
  await load.more(50);
  const results = await load.stop();
  const sizes = { rotated: fs.statSync(rotated).size, current: fs.statSync(journal).size };
  t.diagnostic(`${results.length} requests; journal sizes ${JSON.stringify(sizes)}`);

  assertAnswered(results, { what: 'nginx -s reopen' });
  // which file each answered id is in: both must contribute
  const inRotated = fs.readFileSync(rotated, 'utf8');
  const inCurrent = fs.readFileSync(journal, 'utf8');
  const ids = results.filter((r) => r.id).map((r) => r.id);
  const nRot = ids.filter((id) => inRotated.includes(id)).length;
  const nCur = ids.filter((id) => inCurrent.includes(id)).length;
  t.diagnostic(`answered ids: ${nRot} in the moved journal, ${nCur} in the new one`);
  assert.ok(nRot > 0 && nCur > 0, `ids in both files (moved ${nRot}, new ${nCur})`);
  assert.equal(nRot + nCur, ids.length, 'every answered id is in exactly one journal file');
  const { totalNano } = await verifyAudit(s, results, { keyId });
  await assertBudgetSpend(s, budget, totalNano);
  // and after rotation, later requests keep being ingested from the new file
  const more = startLoad(s, key, { concurrency: 2, maxMs: 3000, maxRequests: 20, tag: 'reopen-after' });
  await more.more(20);
  const after = await more.stop();
  assertAnswered(after, { min: 5, what: 'requests after the rotation' });
  await verifyAudit(s, [...results, ...after], { keyId });
});
