// Snapshot files cannot be rolled back: a worker refuses a policy.snap whose
// generation is lower than the one it holds (an older copy renamed over the
// current file, as controld itself publishes), keeps what it has, says so
// once per file in the error log, and takes the next higher publication as
// usual. A revoked key therefore stays revoked. After `nginx -s reload` the
// new workers hold nothing and take the file that is there (docs/module.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { useStack, waitFor, IS_SAN } from './lib/stack.mjs';

const SLOW = IS_SAN ? 3 : 1;
const WORKERS = 2; // scripts/lib/stack.sh: worker_processes 2
const REFUSAL = /\[error\] (\d+)#\d+: (?:\*\d+ )?spendpol: refused snapshot "[^"]*policy\.snap": generation (\d+) is older than generation (\d+) loaded; keeping the one loaded/;

const s = useStack();

/*
 * What the proxy says to a key, on a connection of its own (no keepalive),
 * so the kernel spreads the questions over the workers.
 */
function authStatus(key) {
  return new Promise((resolve, reject) => {
    const u = new URL(`${s.openaiBaseURL}/chat/completions`);
    const body = '{"model": ';
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: false,
      headers: {
        authorization: `Bearer ${key}`, 'content-type': 'application/json',
        'content-length': Buffer.byteLength(body), connection: 'close',
      },
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end(body);
  });
}

const snap = () => path.join(s.snapshotDir, 'policy.snap');

/*
 * A copy of policy.snap with its owner and group, as controld would have
 * written it (the test runs as root; the workers read through the group).
 */
function keepCopy(to) {
  fs.copyFileSync(snap(), to);
  const st = fs.statSync(snap());
  fs.chownSync(to, st.uid, st.gid);
}

function refusals() {
  const log = fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
  return log.split('\n').map((l) => REFUSAL.exec(l)).filter(Boolean)
    .map((m) => ({ pid: Number(m[1]), offered: Number(m[2]), loaded: Number(m[3]) }));
}

/* pids of the workers that loaded generation gen or a later one */
function loadedBy(gen) {
  const log = fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
  return new Set([...log.matchAll(/\[info\] (\d+)#\d+: (?:\*\d+ )?spendpol: snapshot generation (\d+) loaded/g)]
    .filter((m) => Number(m[2]) >= gen).map((m) => Number(m[1])));
}

/* waits until every worker's timer has loaded generation gen (or later) */
async function waitLoaded(gen) {
  await waitFor(() => loadedBy(gen).size === WORKERS,
    { timeout: 5000 * SLOW, interval: 100, message: `generation ${gen} loaded by each worker` });
}

async function generation() {
  const r = await s.api('GET', '/healthz');
  assert.equal(r.status, 200, r.text);
  const g = Number(r.json?.snapshot_generation ?? r.json?.snapshot?.generation);
  assert.ok(g > 0, `snapshot generation in ${r.text}`);
  return g;
}

test('an older policy.snap renamed over the current one is refused by every worker; a revoked key stays revoked', async () => {
  const doomed = await s.createKey({ name: 'revoked-later' });
  const oldGen = await generation();
  const aside = path.join(s.snapshotDir, 'policy.snap.aside');
  keepCopy(aside);

  // newer generations: one key revoked, another created
  const del = await s.api('DELETE', `/api-keys/${doomed.id}`);
  assert.ok(del.status >= 200 && del.status < 300, `DELETE -> ${del.status} ${del.text}`);
  const fresh = await s.createKey({ name: 'created-later' });
  await s.waitStable(() => authStatus(doomed.key), (st) => st === 401, { message: 'the revocation on every worker' });
  await s.waitStable(() => authStatus(fresh.key), (st) => st !== 401, { message: 'the new key on every worker' });
  const newGen = await generation();
  assert.ok(newGen > oldGen, `${newGen} > ${oldGen}`);
  await waitLoaded(newGen);

  // the roll back, atomically, as controld publishes
  const rolledBack = fs.readFileSync(aside);
  fs.renameSync(aside, snap());

  // every worker's timer sees the file and refuses it, once
  const pids = s.nginxWorkerPids();
  assert.equal(pids.length, WORKERS);
  await waitFor(() => new Set(refusals().map((r) => r.pid)).size === WORKERS,
    { timeout: 5000 * SLOW, interval: 100, message: `a refusal line from each of ${pids.join(', ')}` });
  for (const r of refusals()) {
    assert.ok(pids.includes(r.pid), `refused by a current worker: ${JSON.stringify(r)}`);
    assert.equal(r.offered, oldGen);
    assert.equal(r.loaded, newGen);
  }

  // the workers keep the newer snapshot: the new key works, the revoked one does not
  for (let i = 0; i < 3; i++) {
    await s.waitStable(() => authStatus(fresh.key), (st) => st !== 401, { times: 12, message: 'the new key kept on every worker' });
    await s.waitStable(() => authStatus(doomed.key), (st) => st === 401, { times: 12, message: 'the revoked key kept out on every worker' });
  }

  // once per file, not per request (an unknown key also re-checks the file)
  assert.equal(refusals().length, WORKERS, JSON.stringify(refusals()));
  // and what was refused is still the file in place: nothing republished meanwhile
  assert.ok(fs.readFileSync(snap()).equals(rolledBack), 'policy.snap is still the rolled-back copy');
});

test('a later, higher publication replaces the held snapshot as usual', async () => {
  const before = refusals().length;
  const later = await s.createKey({ name: 'after-the-rollback' });
  await s.waitStable(() => authStatus(later.key), (st) => st !== 401, { message: 'the later key on every worker' });
  // each worker's timer loads it, whichever worker the requests reached
  await waitLoaded(await generation());
  assert.equal(refusals().length, before, 'no new refusal');
});

test('after nginx -s reload the new workers hold nothing and take the file in place, even an older one', async () => {
  const key = await s.createKey({ name: 'before-reload-rollback' });
  const oldGen = await generation();
  const aside = path.join(s.snapshotDir, 'policy.snap.aside');
  keepCopy(aside);
  const del = await s.api('DELETE', `/api-keys/${key.id}`);
  assert.ok(del.status >= 200 && del.status < 300, del.text);
  await s.waitStable(() => authStatus(key.key), (st) => st === 401, { message: 'the revocation on every worker' });
  await waitLoaded(await generation());
  fs.renameSync(aside, snap());
  await waitFor(() => refusals().some((r) => r.offered === oldGen),
    { timeout: 5000 * SLOW, interval: 100, message: 'the refusal' });
  await s.waitStable(() => authStatus(key.key), (st) => st === 401, { message: 'still revoked before the reload' });

  const old = s.nginxWorkerPids();
  s.nginxSignal('reload');
  await waitFor(() => {
    const now = s.nginxWorkerPids();
    return now.length === WORKERS && now.every((p) => !old.includes(p));
  }, { timeout: 20_000 * SLOW, interval: 100, message: 'the old workers to exit' });
  // the operator's reload is the one way to accept an older file (e.g. a restored database)
  await s.waitStable(() => authStatus(key.key), (st) => st !== 401, { message: 'the older file taken after the reload' });

  // controld's next publication is higher again and brings the revocation back
  await s.createKey({ name: 'after-reload' });
  await s.waitStable(() => authStatus(key.key), (st) => st === 401, { message: 'the revocation republished' });
});
