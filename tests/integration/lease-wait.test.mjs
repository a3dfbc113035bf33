// The module's side of leased budgets (issue 18, docs/budgets.md): the ask
// file nginx lays out beside the journal, and a request whose lease lacks
// what it needs waiting up to spendpol_lease_wait for controld to extend
// it. This stack's controld runs with leasing off (SPENDPOL_LEASES=0), so
// the test plays its lease manager exactly: it writes the lease fields of
// the spend file (and the SP_SPEND_LEASES flag) the way controld stores
// them, and reads the asks the module writes. budget-leases.test.mjs and
// budgets-three-nodes.test.mjs run the real one.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, sleep, REPO, BUILD } from './lib/stack.mjs';
import { budgetHash } from './lib/slots.mjs';

const WAIT_MS = 1000;
const s = useStack({ nginxHttp: `spendpol_lease_wait ${WAIT_MS}ms;`, env: { SPENDPOL_LEASES: '0' } });

/* ---- the slot files (libspendpol/sp_budget.h, sp_lease.h) ---------- */

/** a slot file: 64-byte header (slots at 12), slots of stride bytes keyed by hash */
class Slots {
  constructor(file, stride) { this.file = file; this.stride = stride; }
  read(off, n = 8) {
    const fd = fs.openSync(this.file, 'r');
    try {
      const b = Buffer.alloc(n);
      fs.readSync(fd, b, 0, n, off);
      return b;
    } finally { fs.closeSync(fd); }
  }
  get64(off) { return this.read(off).readBigInt64LE(0); }
  set64(off, v) {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(v));
    const fd = fs.openSync(this.file, 'r+');
    try { fs.writeSync(fd, b, 0, 8, off); } finally { fs.closeSync(fd); }
  }
  /** offset of the slot of hash, or -1 */
  find(hash) {
    const all = fs.readFileSync(this.file);
    const n = all.readUInt32LE(12);
    for (let i = 0; i < n; i++) {
      const off = 64 + i * this.stride;
      if (all.readBigUInt64LE(off) === hash) return off;
    }
    return -1;
  }
}

/* sp_spend_header_t / sp_spend_slot_t offsets */
const SPEND = { flags: 24, drained: 32 };
const SLOT = { lease: 56, expires: 64, left: 72, live: 80, answered: 88 };
/* sp_ask_header_t / sp_ask_slot_t offsets */
const ASKH = { epoch: 16, heartbeat: 24, asks: 32 };
const ASK = { used: 16, admitted: 24, need: 32, seq: 40, lastAdmit: 48, worst: 56 };

const spend = () => new Slots(path.join(s.snapshotDir, 'spend.slots'), 128);
const askPath = () => path.join(path.dirname(s.journalPath), 'asks.slots');
const asks = () => new Slots(askPath(), 64);

const USD = 1_000_000_000n;

/**
 * What controld would publish for this node's lease of the budget, in its
 * order, answering the asks so far.
 */
function grant(budget, { lease, left = 1000n * USD, expiresIn = 600_000, drained = Date.now() }) {
  const f = spend();
  const slot = f.find(budgetHash(budget));
  assert.ok(slot > 0, `the spend file has a slot for ${budget}`);
  const asked = askSlot(budget);
  f.set64(slot + SLOT.left, left);
  f.set64(slot + SLOT.live, 1);
  f.set64(slot + SLOT.expires, Date.now() + expiresIn);
  f.set64(slot + SLOT.lease, lease);
  if (asked) f.set64(slot + SLOT.answered, asked.seq);
  f.set64(SPEND.drained, drained);
  f.set64(SPEND.flags, 1);
  return slot;
}

function leasesOff() { spend().set64(SPEND.flags, 0); }

function askSlot(budget) {
  const f = asks();
  const off = f.find(budgetHash(budget));
  if (off < 0) return null;
  const o = {};
  for (const [k, d] of Object.entries(ASK)) o[k] = f.get64(off + d);
  return o;
}

/* ---- requests ------------------------------------------------------- */

async function budgetWithKey(limitUsd = '10') {
  const project = `lw-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: limitUsd, period: 'daily' },
  });
  assert.equal(b.status, 201, b.text);
  const key = (await s.createKey({ name: `k-${project}`, project })).key;
  return { budget: b.json.id, key };
}

async function ask(key, { signal } = {}) {
  const t0 = Date.now();
  const r = await fetch(`${s.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    signal,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] }),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* the status says enough */ }
  return { status: r.status, json, text, ms: Date.now() - t0 };
}

/** a budget whose spend controld has published (its slot exists) */
async function published() {
  const b = await budgetWithKey();
  assert.equal((await ask(b.key)).status, 200, 'the budget admits before leases');
  await waitFor(() => spend().find(budgetHash(b.budget)) > 0,
    { timeout: 10_000, message: 'controld publishes the budget in the spend file' });
  return b;
}

function errorLog() {
  return fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
}

/* ---- tests ---------------------------------------------------------- */

/* each test grants leases to its own budget; none outlives it */
afterEach(() => leasesOff());

test('the master lays out the ask file beside the journal: its owner, mode 0644, the zone epoch, a heartbeat', async () => {
  const st = fs.statSync(askPath());
  assert.equal(st.mode & 0o7777, 0o644);
  assert.equal(st.uid, fs.statSync(`/proc/${s.nginxMasterPid()}`).uid, 'owned by the master\'s user');
  assert.equal(st.uid, fs.statSync(s.journalPath).uid, 'as the journal is');
  assert.equal(asks().read(0).toString('latin1'), 'SPASKS01');
  const slots = asks().read(12, 4).readUInt32LE(0);
  assert.ok(slots >= 8 && (slots & (slots - 1)) === 0, `a power of two: ${slots}`);
  assert.equal(st.size, 64 + slots * 64);
  const epoch = Number(asks().get64(ASKH.epoch));
  assert.ok(epoch > Date.now() - 600_000 && epoch <= Date.now(), `the zone's epoch: ${epoch}`);
  const beat = Number(asks().get64(ASKH.heartbeat));
  await waitFor(() => Number(asks().get64(ASKH.heartbeat)) > beat,
    { timeout: 3000, message: 'the workers\' heartbeat moves on' });
  assert.ok(Number(asks().get64(ASKH.heartbeat)) > Date.now() - 2000);
  assert.deepEqual(fs.readdirSync(path.dirname(askPath())).filter((f) => f.includes('.tmp')), [],
    'no temporary file left');
});

test('without SP_SPEND_LEASES no ask is written and nothing waits', async () => {
  const b = await published();
  const r = await ask(b.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(askSlot(b.budget), null, 'no ask slot for a budget before controld grants leases');
});

test('a request the lease does not cover asks controld, waits, and is admitted when the lease grows', async () => {
  const b = await published();
  const asksBefore = asks().get64(ASKH.asks);
  grant(b.budget, { lease: 1n });
  const pending = ask(b.key);
  let slot;
  await waitFor(() => { slot = askSlot(b.budget); return slot && slot.seq >= 1n && slot.need > 0n; },
    { timeout: WAIT_MS, interval: 10, message: 'an ask in the ask file' });
  assert.ok(asks().get64(ASKH.asks) > asksBefore, 'the header counts the ask');
  assert.equal(slot.admitted, 0n, 'nothing admitted yet');
  grant(b.budget, { lease: 1000n * USD });
  const r = await pending;
  assert.equal(r.status, 200, r.text);
  assert.ok(r.ms < WAIT_MS, `admitted when the lease grew, before spendpol_lease_wait: ${r.ms} ms`);

  const after = askSlot(b.budget);
  assert.ok(after.admitted > 0n && after.worst === after.admitted, JSON.stringify(after, (k, v) => String(v)));
  assert.ok(Number(after.lastAdmit) > Date.now() - 10_000);
  assert.equal(after.need, 0n, 'the ask was answered: nothing outstanding');
  // released: used no longer holds the worst case (what is pending only)
  assert.ok(after.used >= 0n && after.used < 2n * after.worst, `used ${after.used}`);

  // a request the lease covers does not wait
  const fast = await ask(b.key);
  assert.equal(fast.status, 200, fast.text);
  assert.equal(askSlot(b.budget).seq, after.seq, 'no ask for a request the lease covers');
});

test('no answer within spendpol_lease_wait: 402 budget_unavailable naming the cause', async () => {
  const b = await published();
  grant(b.budget, { lease: 1n });
  const r = await ask(b.key);
  assert.equal(r.status, 402, r.text);
  assert.equal(r.json?.error?.code, 'budget_unavailable', r.text);
  assert.equal(r.json?.error?.type, 'insufficient_quota', r.text);
  assert.match(r.json.error.message, new RegExp(`budget ${b.budget}: .*did not extend it within spendpol_lease_wait`));
  assert.ok(r.ms >= WAIT_MS - 50, `waited spendpol_lease_wait: ${r.ms} ms`);
  assert.ok(r.ms < WAIT_MS + 1500, `not much longer: ${r.ms} ms`);
});

test('controld answered and the lease still falls short (the other nodes hold the rest): budget_exceeded after the wait', async () => {
  const b = await published();
  grant(b.budget, { lease: 1n });
  const pending = ask(b.key);
  await waitFor(() => (askSlot(b.budget)?.seq ?? 0n) >= 1n && spend().get64(spend().find(budgetHash(b.budget)) + SLOT.answered) < askSlot(b.budget).seq,
    { timeout: WAIT_MS, interval: 10, message: 'the request\'s ask' });
  grant(b.budget, { lease: 1n });
  const r = await pending;
  assert.equal(r.status, 402, r.text);
  assert.equal(r.json?.error?.code, 'budget_exceeded', r.text);
  assert.ok(r.ms >= WAIT_MS - 50, `waited: ${r.ms} ms`);
});

test('an expired lease refuses at once (budget_unavailable); a budget the cluster cannot pay too (budget_exceeded)', async () => {
  const b = await published();
  grant(b.budget, { lease: 1000n * USD, expiresIn: -1 });
  let r = await ask(b.key);
  assert.equal(r.status, 402, r.text);
  assert.equal(r.json?.error?.code, 'budget_unavailable', r.text);
  assert.match(r.json.error.message, /has expired/);
  assert.ok(r.ms < WAIT_MS / 2, `no wait: ${r.ms} ms`);

  grant(b.budget, { lease: 1n, left: 0n });
  r = await ask(b.key);
  assert.equal(r.status, 402, r.text);
  assert.equal(r.json?.error?.code, 'budget_exceeded', r.text);
  assert.ok(r.ms < WAIT_MS / 2, `no wait: ${r.ms} ms`);
});

test('a lease not usable until the journal of an earlier nginx is counted waits for drained_ms', async () => {
  const b = await published();
  grant(b.budget, { lease: 1000n * USD, drained: 1 });
  const pending = ask(b.key);
  await sleep(200);
  spend().set64(SPEND.drained, Date.now());
  const r = await pending;
  assert.equal(r.status, 200, r.text);
  assert.ok(r.ms >= 150 && r.ms < WAIT_MS, `waited for the journal: ${r.ms} ms`);

  grant(b.budget, { lease: 1000n * USD, drained: 1 });
  const late = await ask(b.key);
  assert.equal(late.status, 402, late.text);
  assert.match(late.json?.error?.message ?? '', /not usable yet/);
});

test('a client that goes away while waiting holds nothing and leaves no [alert]', async () => {
  const b = await published();
  grant(b.budget, { lease: 1n });
  const workers = s.nginxWorkerPids().sort();
  const gone = await Promise.allSettled(Array.from({ length: 20 }, () => ask(b.key, { signal: AbortSignal.timeout(100) })));
  assert.ok(gone.every((g) => g.status === 'rejected'), 'every client gave up');
  await sleep(WAIT_MS + 200);
  // nothing of theirs is held: a lease of exactly what is used plus one
  // worst case admits one more request
  const used = askSlot(b.budget).used;
  grant(b.budget, { lease: 1000n * USD });
  assert.equal((await ask(b.key)).status, 200);
  const worst = askSlot(b.budget).worst;
  grant(b.budget, { lease: askSlot(b.budget).used + worst });
  const r = await ask(b.key);
  assert.equal(r.status, 200, `${r.text} (used before ${used})`);
  assert.deepEqual(s.nginxWorkerPids().sort(), workers, 'no worker died');
  assert.doesNotMatch(errorLog(), /\[alert\]|\[crit\]/);
});

test('nginx -t leaves the ask file alone; a reload keeps it (same file, same epoch) and waiting requests are answered', async () => {
  const before = fs.statSync(askPath());
  const epoch = asks().get64(ASKH.epoch);
  execFileSync('bash', [path.join(REPO, 'scripts/stack.sh'), 'nginx-test', s.dataDir, BUILD], { stdio: 'pipe' });
  assert.equal(fs.statSync(askPath()).ino, before.ino, 'nginx -t made no new ask file');

  const b = await published();
  grant(b.budget, { lease: 1n });
  const waiting = Array.from({ length: 3 }, () => ask(b.key));
  await sleep(100);
  s.nginxSignal('reload');
  const answers = await Promise.all(waiting);
  assert.deepEqual(answers.map((a) => a.json?.error?.code), Array(3).fill('budget_unavailable'),
    JSON.stringify(answers.map((a) => a.text)));

  assert.equal(fs.statSync(askPath()).ino, before.ino, 'a reload keeps the ask file');
  assert.equal(asks().get64(ASKH.epoch), epoch, 'and the epoch');
  // the new workers write the same file: once controld answered, a new ask
  grant(b.budget, { lease: 1n });
  const seq = askSlot(b.budget).seq;
  await ask(b.key);
  assert.ok(askSlot(b.budget).seq > seq, 'the new workers ask in the kept file');
  grant(b.budget, { lease: 1000n * USD });
  assert.equal((await ask(b.key)).status, 200);
});

test('a graceful stop answers the waiting requests; a new nginx lays out a new ask file with its epoch', async () => {
  const b = await published();
  const before = fs.statSync(askPath());
  const epoch = asks().get64(ASKH.epoch);
  grant(b.budget, { lease: 1n });
  const waiting = Array.from({ length: 3 }, () => ask(b.key));
  await sleep(100);
  s.nginxSignal('quit');
  const answers = await Promise.all(waiting);
  assert.deepEqual(answers.map((a) => a.status), [402, 402, 402], JSON.stringify(answers.map((a) => a.text)));
  await s.nginx.exited;
  leasesOff();

  await s.startNginx();
  const now = fs.statSync(askPath());
  assert.notEqual(now.ino, before.ino, 'a new zone, a new file');
  assert.ok(asks().get64(ASKH.epoch) > epoch, 'with the new zone\'s epoch');
  assert.equal(askSlot(b.budget), null, 'and no asks of the old one');
  assert.doesNotMatch(errorLog(), /\[alert\]|\[crit\]/);
});
