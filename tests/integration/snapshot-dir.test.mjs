// Issue 10 item 4 (controld): the snapshot directory cannot be planted.
// controld creates it 0700; one that exists with another owner, looser
// modes or as a symbolic link stops the start with a message naming the
// directory, its owner and mode and what is expected; 0750 (the nginx
// workers' group) is accepted; files in it are 0640 at most.
//
// The refusals happen before controld reaches PostgreSQL, so those runs
// need no database: an accepted directory leaves controld waiting for one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useStack, BUILD, REPO, waitFor } from './lib/stack.mjs';

const s = useStack();
const tmp = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-snapdir-'));
fs.chmodSync(tmp, 0o755);   // nobody must be able to reach the dirs below

/** runs controld against dir with no reachable database */
function controld(dir, extra = {}) {
  const env = {
    PATH: process.env.PATH,
    SPENDPOL_DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none?connect_timeout=1',
    SPENDPOL_DATA_DIR: path.join(tmp, 'data'),
    SPENDPOL_SNAPSHOT_DIR: dir,
    SPENDPOL_API_LISTEN: '127.0.0.1:0',
    SPENDPOL_JOURNAL: path.join(tmp, 'data', 'journal.log'),
    SPENDPOL_MIGRATIONS_DIR: path.join(REPO, 'migrations'),
    ...extra,
  };
  const c = spawn(path.join(BUILD, 'controld'), [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  c.err = '';
  c.stderr.on('data', (d) => { c.err += d; });
  c.stdout.resume();
  // 'close', not 'exit': after the exit, stderr may still hold the message
  c.done = new Promise((resolve) => c.on('close', (code, signal) => resolve({ code, signal })));
  return c;
}

async function refused(dir, pattern) {
  const c = controld(dir);
  const r = await Promise.race([c.done, new Promise((res) => setTimeout(res, 10_000, 'running'))]);
  if (r === 'running') c.kill('SIGKILL');
  assert.deepEqual(r, { code: 1, signal: null }, `controld on ${dir}: ${c.err}`);
  assert.match(c.err, pattern);
  const ctl = ctlUser();
  assert.match(c.err, new RegExp(`expected a directory owned by controld's user ${ctl.username} \\(uid ${ctl.uid}\\) with mode 0700, or 0750 for the nginx workers' group`));
  assert.doesNotMatch(c.err, /waiting for PostgreSQL/);
}

async function accepted(dir) {
  const c = controld(dir);
  try {
    await waitFor(() => /waiting for PostgreSQL/.test(c.err), { timeout: 10_000, message: `controld to accept ${dir}: ${c.err}` });
  } finally {
    c.kill('SIGTERM');
  }
  assert.deepEqual(await c.done, { code: 0, signal: null }, c.err);
  assert.doesNotMatch(c.err, /SPENDPOL_SNAPSHOT_DIR/);
}

const me = os.userInfo();
// started as root, controld runs as the spendpol user (issue 10 item 1):
// the directory must be that user's, and one it creates is 0750
// (the stack's start has created the user)
const ctlUser = () => (me.uid === 0
  ? { username: 'spendpol', uid: Number(execFileSync('id', ['-u', 'spendpol'], { encoding: 'utf8' })) }
  : me);
const freshMode = me.uid === 0 ? 0o750 : 0o700;
const esc = (p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const mode = (p) => fs.lstatSync(p).mode & 0o7777;

test('a world-writable snapshot dir (0777) stops the start, named with its owner and mode', async () => {
  const dir = path.join(tmp, 'open');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o777);
  await refused(dir, new RegExp(`controld: SPENDPOL_SNAPSHOT_DIR ${esc(dir)} is a directory owned by ${me.username} \\(uid ${me.uid}\\) with mode 0777;`));
  assert.equal(mode(dir), 0o777, 'controld must not change a directory it refuses');
});

test('other-readable (0755) and group-writable (0770) dirs are refused too', async () => {
  for (const m of [0o755, 0o770, 0o701]) {
    const dir = path.join(tmp, `m${m.toString(8)}`);
    fs.mkdirSync(dir);
    fs.chmodSync(dir, m);
    await refused(dir, new RegExp(`${esc(dir)} is a directory owned by ${me.username} \\(uid ${me.uid}\\) with mode 0${m.toString(8)};`));
  }
});

test('a snapshot dir of another user (nobody), even 0700, stops the start', async () => {
  const dir = path.join(tmp, 'nobodys');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const nobody = Number(fs.readFileSync('/etc/passwd', 'utf8').match(/^nobody:[^:]*:(\d+):(\d+):/m)[1]);
  fs.chownSync(dir, nobody, 0);
  await refused(dir, new RegExp(`${esc(dir)} is a directory owned by nobody \\(uid ${nobody}\\) with mode 0700;`));
});

test('a symbolic link, even to a private dir, stops the start', async () => {
  const real = path.join(tmp, 'real');
  fs.mkdirSync(real, { mode: 0o700 });
  const link = path.join(tmp, 'link');
  fs.symlinkSync(real, link);
  await refused(link, new RegExp(`${esc(link)} is a symbolic link owned by ${me.username}`));
});

test('a fresh snapshot dir is created 0700 (0750 as root); 0700, 0750 and 2750 are accepted', async () => {
  const dir = path.join(tmp, 'fresh', 'snap');
  await accepted(dir);
  assert.ok(fs.lstatSync(dir).isDirectory());
  assert.equal(mode(dir), freshMode);
  assert.equal(fs.lstatSync(dir).uid, ctlUser().uid, 'owned by the user controld runs as');
  fs.chmodSync(dir, 0o700);
  await accepted(dir);
  fs.chmodSync(dir, 0o750);
  await accepted(dir);
  assert.equal(mode(dir), 0o750);
  fs.chmodSync(dir, 0o2750);  // setgid: files inherit the workers' group
  await accepted(dir);
});

test('SPENDPOL_SNAPSHOT_MODE above 0640 is a configuration error', async () => {
  const dir = path.join(tmp, 'modes');
  const c = controld(dir, { SPENDPOL_SNAPSHOT_MODE: '0644' });
  assert.deepEqual(await c.done, { code: 2, signal: null }, c.err);
  assert.match(c.err, /SPENDPOL_SNAPSHOT_MODE=0644 gives more than 0640: expected at most owner read-write and group read/);
  assert.equal(fs.existsSync(dir), false);
});

test('a running stack: its snapshot dir is 0700 (0750 as root) and its files 0640 at most', async () => {
  assert.equal(mode(s.snapshotDir), freshMode, s.snapshotDir);
  await s.createKey();
  const files = await waitFor(() => {
    const f = fs.readdirSync(s.snapshotDir);
    return f.includes('policy.snap') && f.includes('spend.slots') && f;
  }, { message: 'policy.snap and spend.slots' });
  for (const f of files) {
    const m = mode(path.join(s.snapshotDir, f));
    assert.equal(m & ~0o640, 0, `${f} has mode 0${m.toString(8)}`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});
