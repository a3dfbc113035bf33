// Journal rotation done the way logrotate does it, under load, in the harder
// orders: the file moved some seconds before `nginx -s reopen` (logrotate's
// postrotate runs after every file was moved), and a rotation while controld
// is down. After recovery every answered request is in /audit-logs exactly
// once, whichever file its line went to.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { useStack, sleep, waitFor } from '../integration/lib/stack.mjs';
import {
  startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend, allRows,
} from './lib/load.mjs';

const s = useStack();

function idsIn(file, results) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  return results.filter((r) => r.id && text.includes(`"id":"${r.id}"`)).length;
}

async function rotate(suffix, { gapMs }) {
  const journal = s.journalPath;
  const moved = `${journal}.${suffix}`;
  fs.renameSync(journal, moved);
  await sleep(gapMs); // nginx keeps appending to the moved file meanwhile
  s.nginxSignal('reopen');
  await waitFor(() => fs.existsSync(journal), { timeout: 10_000, message: 'a new journal after reopen' });
  return moved;
}

test('mv of the journal 2 s before nginx -s reopen, three times under load: every row exactly once', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'rot-gap');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 20_000, tag: 'rot-gap' });
  await load.more(40);
  const moved = [];
  for (let i = 1; i <= 3; i++) {
    moved.push(await rotate(`gap${i}`, { gapMs: 2000 }));
    await load.more(30);
  }
  const results = await load.stop();
  t.diagnostic(`${results.length} requests; ids per file: ${moved.map((f) => idsIn(f, results)).join(', ')}, current ${idsIn(s.journalPath, results)}`);
  assertAnswered(results, { what: 'rotations' });
  const { totalNano } = await verifyAudit(s, results, { keyId, timeout: 20_000 });
  await assertBudgetSpend(s, budget, totalNano);
});

test('journal rotated while controld is down (kill -9): the moved file\'s unread lines are still ingested', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'rot-down');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 15_000, tag: 'rot-down' });
  await load.more(40);
  await s.stopControld('SIGKILL');
  await load.more(40); // journaled into the file controld has not read yet
  const moved = await rotate('down', { gapMs: 0 });
  await load.more(40);
  await s.startControld();
  await load.more(30);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests; ids in the moved file ${idsIn(moved, results)}, in the new one ${idsIn(s.journalPath, results)}`);
  assertAnswered(results, { what: 'rotation while controld is down' });
  let v;
  try {
    v = await verifyAudit(s, results, { keyId, timeout: 15_000 });
  } catch (e) {
    const have = new Set((await allRows(s)).map((r) => r.id));
    const missing = results.filter((r) => r.id && !have.has(r.id));
    const inMoved = idsIn(moved, missing);
    const inNew = idsIn(s.journalPath, missing);
    e.message += `\n(of the ${missing.length} missing: ${inMoved} are lines of the moved file ${moved.split('/').pop()} written after controld's last `
      + `committed offset and before the reopen, ${inNew} in the new file)`;
    throw e;
  }
  const { totalNano } = v;
  await assertBudgetSpend(s, budget, totalNano);
});

test('journal rotated while PostgreSQL is down: controld finishes the moved file once the database is back', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'rot-pg');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 15_000, tag: 'rot-pg' });
  await load.more(40);
  await s.stopPostgres();
  await load.more(40);
  const moved = await rotate('pg', { gapMs: 0 });
  await load.more(40);
  await sleep(1500); // longer than controld's grace period for a rotated file
  await s.startPostgres();
  await load.more(30);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests; ids in the moved file ${idsIn(moved, results)}, in the new one ${idsIn(s.journalPath, results)}`);
  assertAnswered(results, { what: 'rotation while PostgreSQL is down' });
  const { totalNano } = await verifyAudit(s, results, { keyId, timeout: 30_000 });
  await assertBudgetSpend(s, budget, totalNano);
});

test('two rotations while PostgreSQL is down: every moved file is read, none skipped', async (t) => {
  // controld cannot ingest while the database is down, so it is still on
  // the first file when the second rotation happens: the file in between
  // must not be skipped (hourly logrotate and an hour-long outage)
  const { key, keyId, budget } = await budgetedKey(s, 'rot-pg2');
  const load = startLoad(s, key, { concurrency: 6, maxMs: 20_000, tag: 'rot-pg2' });
  await load.more(30);
  await s.stopPostgres();
  await load.more(30);
  const first = await rotate('pg2a', { gapMs: 0 });
  await load.more(30);
  const second = await rotate('pg2b', { gapMs: 0 });
  await load.more(30);
  await s.startPostgres();
  await load.more(30);
  const results = await load.stop();
  t.diagnostic(`${results.length} requests; ids in ${first.split('/').pop()} ${idsIn(first, results)}, in ${second.split('/').pop()} ${idsIn(second, results)}, in the current file ${idsIn(s.journalPath, results)}`);
  assertAnswered(results, { what: 'two rotations while PostgreSQL is down' });
  let v;
  try {
    v = await verifyAudit(s, results, { keyId, timeout: 15_000 });
  } catch (e) {
    const have = new Set((await allRows(s)).map((r) => r.id));
    const missing = results.filter((r) => r.id && !have.has(r.id));
    e.message += `\n(of the ${missing.length} missing: ${idsIn(first, missing)} in ${first.split('/').pop()}, `
      + `${idsIn(second, missing)} in ${second.split('/').pop()}, ${idsIn(s.journalPath, missing)} in the current file)`;
    throw e;
  }
  await assertBudgetSpend(s, budget, v.totalNano);
});
