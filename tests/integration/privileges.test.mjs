// Issue 10 item 1: no root workers. Started as root (as CI runs it), only
// the nginx master stays root: the workers run as spendpol-nginx with
// controld's group, controld and Redis as spendpol, PostgreSQL as
// postgres; each directory gives each process what it needs and no more.
// Started by another user, everything runs as that user and nginx.conf
// names no user.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useStack, spendpolHeaders, BUILD, REPO } from './lib/stack.mjs';

const s = useStack();
const root = os.userInfo().uid === 0;

/** real, effective, saved and filesystem ids, and the groups, of a pid */
function ids(pid) {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => st.match(new RegExp(`^${name}:\\s*(.*)$`, 'm'))[1].trim().split(/\s+/).filter(Boolean).map(Number);
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups') };
}

function uidOf(user) { return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' })); }
function gidOf(user) { return Number(execFileSync('id', ['-g', user], { encoding: 'utf8' })); }

const stat = (p) => fs.lstatSync(p);
const mode = (p) => stat(p).mode & 0o7777;

/** true when user (with group) may do what the shell command does */
function can(user, group, cmd) {
  return spawnSync('runuser', ['-u', user, '-g', group, '--', 'sh', '-c', cmd], { stdio: 'ignore' }).status === 0;
}

test('a governed request is served and audited with every process at its own user', async () => {
  const { key } = await s.createKey({ name: 'privileges' });
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'who runs this?' }],
  }).withResponse();
  assert.equal(response.status, 200);
  // controld read the journal nginx's master opened: the row arrives
  const row = await s.waitAuditRow(spendpolHeaders(response).auditId);
  assert.equal(Number(row.status), 200);
});

test('nginx: the master is the only root process; workers are spendpol-nginx with controld\'s group', () => {
  const conf = fs.readFileSync(path.join(s.dataDir, 'nginx', 'nginx.conf'), 'utf8');
  const workers = s.nginxWorkerPids();
  assert.ok(workers.length >= 2, `workers: ${workers}`);
  if (!root) {
    assert.doesNotMatch(conf, /^\s*user\s/m, 'no user directive when not started as root');
    for (const w of workers) assert.deepEqual(ids(w).uid, Array(4).fill(os.userInfo().uid));
    return;
  }
  assert.match(conf, /^user spendpol-nginx spendpol;$/m);
  const wuid = uidOf('spendpol-nginx');
  const sgid = gidOf('spendpol');
  assert.notEqual(wuid, 0);
  for (const w of workers) {
    const id = ids(w);
    assert.deepEqual(id.uid, [wuid, wuid, wuid, wuid], `worker ${w} uids`);
    assert.deepEqual(id.gid, [sgid, sgid, sgid, sgid], `worker ${w} gids`);
    assert.ok(!id.groups.includes(0), `worker ${w} groups ${id.groups}`);
  }
  assert.equal(ids(s.nginxMasterPid()).uid[1], 0, 'the master binds and opens logs as root');
});

test('controld and Redis run as spendpol; PostgreSQL as postgres', () => {
  const me = os.userInfo().uid;
  const cuid = root ? uidOf('spendpol') : me;
  const c = ids(s.controld.pid);
  assert.deepEqual(c.uid, [cuid, cuid, cuid, cuid], 'controld uids');
  if (root) {
    assert.deepEqual(c.gid, Array(4).fill(gidOf('spendpol')), 'controld gids');
    assert.ok(!c.groups.includes(0), `controld groups ${c.groups}`);
  }
  if (s.ownRedis) {
    const rpid = Number(execFileSync('bash', [path.join(REPO, 'scripts/stack.sh'), 'redis-pid', s.dataDir], { encoding: 'utf8' }));
    assert.deepEqual(ids(rpid).uid, [cuid, cuid, cuid, cuid], 'redis uids');
  }
  if (s.ownPg && root) {
    const ppid = Number(fs.readFileSync(path.join(s.dataDir, 'pg', 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    assert.equal(ids(ppid).uid[1], uidOf('postgres'), 'postgres euid');
  }
});

test('files: controld\'s keys are its own; workers read the snapshot and write nothing there', () => {
  const cdir = path.join(s.dataDir, 'controld');
  assert.equal(mode(cdir), 0o700);
  for (const f of ['admin.key', 'master.key']) {
    const p = path.join(cdir, f);
    if (f === 'admin.key' && !fs.existsSync(p)) continue;   // the harness may seed the key
    assert.equal(mode(p) & 0o077, 0, `${f} is 0${mode(p).toString(8)}`);
  }
  assert.equal(fs.existsSync(path.join(s.dataDir, 'master.key')), false, 'no key in the data dir itself');
  const snap = path.join(s.snapshotDir, 'policy.snap');
  assert.ok(fs.existsSync(snap), snap);
  if (!root) {
    assert.equal(mode(s.snapshotDir), 0o700);
    return;
  }
  const cuid = uidOf('spendpol');
  const sgid = gidOf('spendpol');
  assert.equal(stat(s.snapshotDir).uid, cuid);
  assert.equal(stat(s.snapshotDir).gid, sgid);
  assert.equal(mode(s.snapshotDir) & 0o7777 & ~0o2000, 0o750);
  assert.equal(stat(cdir).uid, cuid);
  // as a worker: read the snapshot, plant nothing, reach no key
  assert.ok(can('spendpol-nginx', 'spendpol', `cat ${snap} >/dev/null`), 'a worker reads policy.snap');
  assert.ok(!can('spendpol-nginx', 'spendpol', `touch ${s.snapshotDir}/planted`), 'a worker cannot write the snapshot dir');
  assert.ok(!can('spendpol-nginx', 'spendpol', `mv ${snap} ${snap}.old`), 'a worker cannot replace policy.snap');
  assert.ok(!can('spendpol-nginx', 'spendpol', `cat ${cdir}/master.key`), 'a worker cannot read master.key');
  // the journal: nginx's master wrote it as root, controld's group reads it
  const jdir = path.dirname(s.journalPath);
  assert.equal(mode(jdir), 0o750);
  assert.equal(stat(jdir).gid, sgid);
  assert.ok(can('spendpol', 'spendpol', `head -c1 ${s.journalPath} >/dev/null`), 'controld\'s user reads the journal');
  assert.ok(!can('nobody', 'nogroup', `ls ${jdir}`), 'others cannot list the journal dir');
});

test('controld started as root refuses root and unknown users for SPENDPOL_USER (ignores it otherwise)', () => {
  const base = {
    PATH: process.env.PATH,
    SPENDPOL_DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none?connect_timeout=1',
    SPENDPOL_DATA_DIR: path.join(s.dataDir, 'refused'),
    SPENDPOL_SNAPSHOT_DIR: path.join(s.dataDir, 'refused-snap'),
    SPENDPOL_API_LISTEN: '127.0.0.1:0',
    SPENDPOL_MIGRATIONS_DIR: path.join(REPO, 'migrations'),
  };
  if (!root) {
    const r = spawnSync(path.join(BUILD, 'controld'), [], { env: { ...base, SPENDPOL_USER: 'root' }, encoding: 'utf8', timeout: 3000 });
    assert.match(r.stderr, /SPENDPOL_USER=root is ignored: controld was not started as root/);
    return;
  }
  for (const [user, pattern] of [
    ['root', /SPENDPOL_USER=root has uid 0 gid 0: controld does not run as root/],
    ['no-such-spendpol-user', /runs as SPENDPOL_USER=no-such-spendpol-user, which does not exist: create it \(useradd --system/],
  ]) {
    const r = spawnSync(path.join(BUILD, 'controld'), [], { env: { ...base, SPENDPOL_USER: user }, encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 1, `${user}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});
