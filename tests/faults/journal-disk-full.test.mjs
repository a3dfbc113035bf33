// The journal's disk fills up under load. The journal is put on a 64 KiB
// tmpfs mounted for this test (SPENDPOL_JOURNAL, honoured by both the nginx
// conf and controld). While the disk is full the proxy keeps answering
// (fail static) and logs an [alert] about the journal (expected here, and
// only here: filtered out of this stack's log problems). Once space
// returns, new requests are journaled and ingested again, exactly once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Stack, sleep, waitFor } from '../integration/lib/stack.mjs';
import { startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend } from './lib/load.mjs';

const JOURNAL_ALERT = /\[alert\].*spendpol: journal write to ".*" failed/;

const mnt = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-faults-jfs-'));
let mounted = false;
let s;

before(async () => {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch (e) {
    throw new Error(`cannot mount a 64 KiB tmpfs for the journal at ${mnt} (needs root / CAP_SYS_ADMIN): ${e.stderr || e.message}`);
  }
  s = new Stack({ journal: path.join(mnt, 'journal.log') });
  try { await s.start(); } catch (e) { s.failed = true; throw e; }
}, { timeout: 180_000 });

after(async () => {
  const alive = setInterval(() => {}, 1000);
  let problems = [];
  try {
    if (s) problems = await s.stop();
  } finally {
    clearInterval(alive);
    if (mounted) { try { execFileSync('umount', ['-l', mnt], { stdio: 'pipe' }); } catch { /* best effort */ } }
    try { fs.rmdirSync(mnt); } catch { /* kept */ }
  }
  // the journal [alert] is this test's expected outcome, not a finding
  const real = problems.filter((p) => !JOURNAL_ALERT.test(p.split('\n')[0]));
  if (real.length) assert.fail(`problems in the stack's logs (${s.dataDir}):\n${real.join('\n\n')}`);
  // only the expected alert: the harness kept the data dir for it, drop it
  if (s && !s.failed && problems.length && process.env.SPENDPOL_KEEP_DATA !== '1') {
    fs.rmSync(s.dataDir, { recursive: true, force: true });
    process.stderr.write(`[faults] removed ${s.dataDir}: its only log problem was the expected journal [alert]\n`);
  }
}, { timeout: 120_000 });

function fillDisk(file) {
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(4096, 0x78);
  let n = 0;
  try {
    for (let i = 0; i < 100_000; i++) {
      try { n += fs.writeSync(fd, buf); } catch (e) { if (e.code === 'ENOSPC') break; throw e; }
    }
    // the last partial page
    for (let i = 0; i < 4096; i++) {
      try { n += fs.writeSync(fd, buf, 0, 1); } catch (e) { if (e.code === 'ENOSPC') break; throw e; }
    }
  } finally { fs.closeSync(fd); }
  return n;
}

function journalAlerts() {
  const log = path.join(s.logs, 'error.log');
  return fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => JOURNAL_ALERT.test(l)) : [];
}

test('journal disk full under load: requests answered, [alert] logged, journaling resumes when space returns', async (t) => {
  const { key, keyId, budget } = await budgetedKey(s, 'full');
  const journal = s.journalPath;
  assert.equal(path.dirname(journal), mnt);

  // A: normal
  let load = startLoad(s, key, { concurrency: 4, maxMs: 10_000, tag: 'full-a' });
  await load.more(30);
  const a = await load.stop();
  assertAnswered(a, { what: 'phase A (disk not full)' });
  await verifyAudit(s, a, { keyId });

  // B: disk full
  const filler = path.join(mnt, 'filler');
  const filled = fillDisk(filler);
  const sizeFull = fs.statSync(journal).size;
  load = startLoad(s, key, { concurrency: 4, maxMs: 10_000, tag: 'full-b' });
  await load.more(60);
  const b = await load.stop();
  const sizeAfterB = fs.statSync(journal).size;
  t.diagnostic(`filler ${filled} bytes; journal ${sizeFull} -> ${sizeAfterB} bytes while full; ${b.length} requests`);
  assertAnswered(b, { what: 'the journal disk full' });
  await waitFor(() => journalAlerts().length > 0, { timeout: 5000, message: 'an [alert] about the journal write in error.log' });
  t.diagnostic(`journal alerts: ${journalAlerts().length}, first: ${journalAlerts()[0]?.slice(0, 240)}`);

  // C: space returns
  fs.unlinkSync(filler);
  load = startLoad(s, key, { concurrency: 4, maxMs: 10_000, tag: 'full-c' });
  await load.more(30);
  const c = await load.stop();
  assertAnswered(c, { what: 'phase C (space back)' });

  // the journal's lines: a write cut short by ENOSPC leaves a torn line
  const lines = fs.readFileSync(journal, 'utf8').split('\n');
  const tail = lines.pop();
  const torn = lines.filter((l) => { try { JSON.parse(l); return false; } catch { return true; } });
  t.diagnostic(`journal: ${lines.length} lines, ${torn.length} not JSON${torn.length ? ` e.g. ${JSON.stringify(torn[0].slice(0, 120))}...${JSON.stringify(torn[0].slice(-80))}` : ''}; unterminated tail ${tail.length} bytes`);
  const whole = new Set();
  for (const l of lines) { try { whole.add(JSON.parse(l).id); } catch { /* torn */ } }
  const journaled = (r) => r.id && whole.has(r.id);
  const cIn = c.filter(journaled).length;
  const bIn = b.filter(journaled).length;
  t.diagnostic(`answered ids found in the journal: phase B ${bIn}/${b.length}, phase C ${cIn}/${c.length}`);

  const glued = c.filter((r) => !journaled(r) && torn.some((l) => l.includes(`"id":"${r.id}"`)));
  const gluedIds = new Set(glued.map((r) => r.id));

  // every request of A and C (but those glued to the torn line, asserted
  // last) is in the audit log exactly once, at its cost; B's rows, if any
  // got through, are not duplicated (checked over all rows)
  const { rows } = await verifyAudit(s, [...a, ...c.filter((r) => !gluedIds.has(r.id))], { keyId, exactKeyRows: false, timeout: 20_000 });
  const bIds = new Set(b.map((r) => r.id));
  const bRows = rows.filter((r) => bIds.has(r.id));
  t.diagnostic(`phase B requests in /audit-logs: ${bRows.length} of ${b.length} (their lines could not be written)`);
  const keyRows = rows.filter((r) => r.api_key_id === keyId);
  await assertBudgetSpend(s, budget, keyRows.reduce((x, r) => x + BigInt(r.cost_nano), 0n));

  const gluedRows = rows.filter((r) => gluedIds.has(r.id)).length;
  assert.equal(cIn, c.length, `only ${cIn} of ${c.length} requests answered after space returned are whole lines in the journal; `
    + `${glued.length} (${[...gluedIds].join(', ')}) were appended to the torn line a short write left while the disk was full, `
    + `so controld skips them as one malformed line (${gluedRows} of them in /audit-logs)`);
});
