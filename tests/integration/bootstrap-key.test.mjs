// Issue 10 item 3: SPENDPOL_ADMIN_KEY only seeds an empty database. A
// bootstrap key revoked or rotated through the API stays refused after
// controld restarts with the same variable; a different key in the variable
// does not get in once admin keys exist; and no key's text reaches
// controld's logs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { useStack, newKey } from './lib/stack.mjs';

const s = useStack();
const seen = [];  // every key text this file handled

/** status of GET /api-keys with key: 200 for an admin key, 401 refused */
async function adminStatus(key) {
  const r = await s.api('GET', '/api-keys', { key });
  if (r.status === 401) assert.equal(r.json?.error?.type, 'authentication_error', r.text);
  return r.status;
}

async function createAdmin(byKey, name) {
  const r = await s.api('POST', '/api-keys', { key: byKey, body: { name, scopes: ['proxy', 'admin'] } });
  assert.equal(r.status, 201, `POST /api-keys -> ${r.status} ${r.text}`);
  seen.push(r.json.key);
  return r.json;
}

async function idOf(key) {
  const r = await s.api('GET', '/api-keys?limit=1000', { key });
  assert.equal(r.status, 200, r.text);
  const rows = r.json.data.filter((k) => k.name === 'bootstrap admin' && key.startsWith(k.key_prefix));
  assert.equal(rows.length, 1, `one bootstrap admin key in ${r.text}`);
  return rows[0].id;
}

test('a revoked bootstrap key stays revoked after a restart with the same SPENDPOL_ADMIN_KEY', async () => {
  const bootstrap = s.adminKey;
  seen.push(bootstrap);
  assert.equal(await adminStatus(bootstrap), 200, 'the seeded key works at first');
  const bootstrapId = await idOf(bootstrap);
  const second = await createAdmin(bootstrap, 'second admin');

  const del = await s.api('DELETE', `/api-keys/${bootstrapId}`, { key: second.key });
  assert.equal(del.status, 200, `DELETE -> ${del.status} ${del.text}`);
  assert.equal(del.json.active, false, del.text);
  assert.equal(await adminStatus(bootstrap), 401, 'revoked, before the restart');

  // the stack restarts controld with SPENDPOL_ADMIN_KEY = the bootstrap key
  assert.equal(s.adminKey, bootstrap);
  await s.restartControld();
  assert.equal(await adminStatus(bootstrap), 401, 'the restart brought the revoked bootstrap key back');
  assert.equal(await adminStatus(second.key), 200, 'the second admin key after the restart');
  await s.waitKeyAccepted(second.key);
  // every worker refuses it within a snapshot interval (a worker may still
  // hold the snapshot from before the revocation for up to 200 ms)
  await s.waitStable(() => s.proxyAuthStatus(bootstrap), (st) => st === 401,
    { times: 8, timeout: 3000, message: 'every worker to refuse the revoked bootstrap key' });

  const row = await s.api('GET', `/api-keys/${bootstrapId}`, { key: second.key });
  assert.equal(row.status, 200, row.text);
  assert.equal(row.json.active, false, `the bootstrap key's row: ${row.text}`);
  assert.match(fs.readFileSync(path.join(s.logs, 'controld.err'), 'utf8'),
    new RegExp(`SPENDPOL_ADMIN_KEY is key ${bootstrapId} \\(revoked\\)`));
  s.admin = second.key;
});

test('a rotated key named by SPENDPOL_ADMIN_KEY stays revoked; its successor works', async () => {
  const old = await createAdmin(s.admin, 'to rotate');
  const rot = await s.api('POST', `/api-keys/${old.id}/rotate`, { key: s.admin, body: {} });
  assert.equal(rot.status, 201, `rotate -> ${rot.status} ${rot.text}`);
  seen.push(rot.json.key);

  s.adminKey = old.key;   // as if it had seeded the database
  await s.restartControld();
  assert.equal(await adminStatus(old.key), 401, 'the rotated key came back after the restart');
  assert.equal(await adminStatus(rot.json.key), 200, 'the rotated key\'s successor');
});

test('a new SPENDPOL_ADMIN_KEY does not get into a database that has admin keys', async () => {
  const other = newKey();
  seen.push(other);
  s.adminKey = other;
  await s.restartControld();
  assert.equal(await adminStatus(other), 401);
  assert.equal(await adminStatus(s.admin), 200);
  await s.waitKeyAccepted(s.admin);
  assert.equal(await s.proxyAuthStatus(other), 401);
  assert.match(fs.readFileSync(path.join(s.logs, 'controld.err'), 'utf8'),
    /\[warn\] main: SPENDPOL_ADMIN_KEY is ignored: it is not a key of this database, which already has \d+ admin keys/);
  assert.equal(fs.existsSync(path.join(s.dataDir, 'controld', 'admin.key')), false, 'no key generated while an admin key is active');
});

test('no key text is in controld\'s logs (stdout and stderr)', () => {
  assert.ok(seen.length >= 5, `keys handled: ${seen.length}`);
  const files = fs.readdirSync(s.logs).filter((f) => f.startsWith('controld'));
  assert.deepEqual(files.sort(), ['controld.err', 'controld.out']);
  for (const f of files) {
    const text = fs.readFileSync(path.join(s.logs, f), 'utf8');
    assert.ok(text.length > 0 || f === 'controld.out', `${f} is empty`);
    for (const k of seen) {
      assert.equal(text.includes(k), false, `${f} holds a key's text`);
      // and no long piece of one either (the shown prefix is 12 characters)
      assert.equal(text.includes(k.slice(7, 31)), false, `${f} holds part of a key`);
    }
  }
});
