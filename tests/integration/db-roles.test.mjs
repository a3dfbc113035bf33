// Issue 10 item 2: least-privilege database access.
//
// The private cluster takes passwords only (scram-sha-256, no trust
// line); controld serves as spendpol_controld, which is no superuser, has
// no BYPASSRLS, owns nothing and cannot SET ROLE or RESET ROLE into a role
// that could; inside spendpol_app it sees and changes only its own
// organisation's rows; no serving role may rewrite a key hash or an audit
// row; controld refuses a runtime URL that could bypass row-level security
// unless SPENDPOL_DATABASE_INSECURE=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useStack, BUILD, REPO } from './lib/stack.mjs';

const s = useStack();
const STACK_SH = path.join(REPO, 'scripts', 'stack.sh');
const ORG_B = 'org_dbroles_b';
const KEY_B = `key_${crypto.randomBytes(12).toString('hex')}`;

/** psql with URL; { ok, out, err } (never throws) */
function psql(url, sql, env = {}) {
  const r = spawnSync('psql', [url, '-X', '-w', '-v', 'ON_ERROR_STOP=1', '-qtA', '-c', sql], {
    encoding: 'utf8', env: { ...process.env, PGPASSWORD: '', ...env }, timeout: 30_000,
  });
  return { ok: r.status === 0, out: (r.stdout || '').trim(), err: r.stderr || '' };
}

function ok(url, sql) {
  const r = psql(url, sql);
  assert.ok(r.ok, `${sql}\n${r.err}`);
  return r.out;
}

function denied(url, sql, re) {
  const r = psql(url, sql);
  assert.equal(r.ok, false, `${sql} should fail, answered ${r.out}`);
  assert.match(r.err, re, sql);
}

/** the runtime URL, inside spendpol_app for orgId or spendpol_system */
const asApp = (orgId, sql) => `BEGIN; SET LOCAL ROLE spendpol_app;
  SET LOCAL spendpol.org_id = '${orgId}'; ${sql}; COMMIT`;
const asSystem = (sql) => `BEGIN; SET LOCAL ROLE spendpol_system; ${sql}; COMMIT`;

function superuserURL() {
  return execFileSync('bash', [STACK_SH, 'pg-superuser-url', s.dataDir, String(s.pgPort)], { encoding: 'utf8' }).trim();
}

test('pg_hba.conf has no trust line; every rule asks for a scram-sha-256 password', () => {
  const hba = fs.readFileSync(path.join(s.dataDir, 'pg', 'data', 'pg_hba.conf'), 'utf8');
  const rules = hba.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  assert.ok(rules.length >= 2, hba);
  for (const r of rules) {
    assert.doesNotMatch(r, /\btrust\b/, r);
    assert.match(r, /\sscram-sha-256$/, r);
  }
  for (const f of ['pgpass', 'superuser.pgpass']) {
    const st = fs.statSync(path.join(s.dataDir, 'pg', f));
    assert.equal(st.mode & 0o777, 0o600, `${f} mode ${(st.mode & 0o777).toString(8)}`);
  }
  // the URLs name the passfile; no password is in them
  for (const u of [s.databaseURL, s.ownerDatabaseURL]) {
    assert.match(u, /^postgresql:\/\/spendpol_(controld|owner)@127\.0\.0\.1:\d+\/postgres\?passfile=/, u);
  }
});

test('connecting without the password is refused (TCP and the unix socket, every role)', () => {
  for (const user of ['spendpol_controld', 'spendpol_owner', 'postgres']) {
    for (const host of ['127.0.0.1', path.join(s.dataDir, 'pg', 'run')]) {
      const r = psql(`postgresql://${user}@/postgres?host=${encodeURIComponent(host)}&port=${s.pgPort}&passfile=/nonexistent`,
        'SELECT 1');
      assert.equal(r.ok, false, `${user} via ${host} got in without a password`);
      assert.match(r.err, /no password supplied|password authentication failed/, r.err);
    }
  }
  // and a wrong one
  const r = psql(`postgresql://spendpol_controld:wrong@127.0.0.1:${s.pgPort}/postgres`, 'SELECT 1');
  assert.equal(r.ok, false);
  assert.match(r.err, /password authentication failed/);
});

test('the runtime role is no superuser, has no BYPASSRLS, does not inherit, owns nothing', () => {
  assert.equal(ok(s.databaseURL, 'SELECT current_user'), 'spendpol_controld');
  assert.equal(ok(s.databaseURL,
    'SELECT rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user'),
  'f|f|f|f|f');
  assert.equal(ok(s.databaseURL,
    "SELECT count(*) FROM pg_class WHERE relowner = 'spendpol_controld'::regrole"), '0');
  assert.equal(ok(s.databaseURL,
    "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = 'spendpol_controld'::regrole"),
  'spendpol_app,spendpol_system');
  // the tables are the owner's
  assert.equal(ok(s.ownerDatabaseURL,
    "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relowner <> 'spendpol_owner'::regrole"), '0');
});

test('RESET ROLE leaves the runtime login with no table privilege; it cannot SET ROLE to the owner or the superuser', () => {
  for (const t of ['audit_logs', 'api_keys', 'providers', 'orgs']) {
    denied(s.databaseURL, `RESET ROLE; SELECT count(*) FROM ${t}`, new RegExp(`permission denied for table ${t}`));
  }
  denied(s.databaseURL, 'SET ROLE spendpol_owner', /permission denied to set role "spendpol_owner"/);
  denied(s.databaseURL, 'SET ROLE postgres', /permission denied to set role "postgres"/);
  // the same through an expression, as an injected SELECT would try
  denied(s.databaseURL, asApp('org_default', "SELECT set_config('role', 'spendpol_owner', true)"),
    /permission denied to set role "spendpol_owner"/);
  denied(s.databaseURL, 'SET SESSION AUTHORIZATION postgres', /permission denied to set session authorization/);
  denied(s.databaseURL, 'CREATE TABLE planted (x int)', /permission denied for schema public/);
});

test('as spendpol_app of one organisation, another organisation\'s rows are invisible and unchangeable', async () => {
  // org A: the default organisation, with a key made through the API; org
  // B (the API serves one organisation) written by the owner
  const a = await s.createKey({ name: 'db-roles A' }, { wait: false });
  const hashB = crypto.randomBytes(32).toString('hex');
  ok(s.ownerDatabaseURL, `INSERT INTO orgs (id, name) VALUES ('${ORG_B}', 'b') ON CONFLICT DO NOTHING;
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix)
      VALUES ('${KEY_B}', '${ORG_B}', 'org B key', '\\x${hashB}', 'sp_key_b');
    INSERT INTO audit_logs (id, org_id, created_at, cost_nano)
      VALUES ('dbroles-${KEY_B}', '${ORG_B}', now(), 42)`);

  const A = 'org_default';
  assert.ok(Number(ok(s.databaseURL, asApp(A, `SELECT count(*) FROM api_keys WHERE id = '${a.id}'`))) === 1,
    'org A sees its own key');
  assert.equal(ok(s.databaseURL, asApp(A, `SELECT count(*) FROM api_keys WHERE org_id = '${ORG_B}'`)), '0');
  assert.equal(ok(s.databaseURL, asApp(A, `SELECT count(*) FROM audit_logs WHERE org_id = '${ORG_B}'`)), '0');
  assert.equal(ok(s.databaseURL, asApp(A, `SELECT count(*) FROM orgs WHERE id = '${ORG_B}'`)), '0');
  // an UPDATE finds nothing to change; an INSERT into B is refused
  ok(s.databaseURL, asApp(A, `UPDATE api_keys SET name = 'stolen', active = false, revoked_at = now() WHERE id = '${KEY_B}'`));
  assert.equal(ok(s.ownerDatabaseURL, `SELECT name || ' ' || active FROM api_keys WHERE id = '${KEY_B}'`), 'org B key true');
  denied(s.databaseURL, asApp(A, `INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix)
    VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${ORG_B}', 'planted', '\\x${crypto.randomBytes(32).toString('hex')}', 'sp_key_p')`),
  /new row violates row-level security policy/);
  // a tenant without an org sees nothing at all
  assert.equal(ok(s.databaseURL, asApp('', 'SELECT count(*) FROM api_keys')), '0');
  // B sees its own, not A's
  assert.equal(ok(s.databaseURL, asApp(ORG_B, `SELECT string_agg(id, ',') FROM api_keys`)), KEY_B);
});

test('no serving role may rewrite a key hash, nor change or delete audit rows', () => {
  const h = crypto.randomBytes(32).toString('hex');
  denied(s.databaseURL, asApp(ORG_B, `UPDATE api_keys SET key_hash = '\\x${h}' WHERE id = '${KEY_B}'`),
    /permission denied for table api_keys/);
  denied(s.databaseURL, asSystem(`UPDATE api_keys SET key_hash = '\\x${h}' WHERE id = '${KEY_B}'`),
    /permission denied for table api_keys/);
  denied(s.databaseURL, asApp(ORG_B, `DELETE FROM api_keys WHERE id = '${KEY_B}'`), /permission denied for table api_keys/);
  denied(s.databaseURL, asSystem(`DELETE FROM api_keys WHERE id = '${KEY_B}'`), /permission denied for table api_keys/);
  denied(s.databaseURL, asApp(ORG_B, 'UPDATE audit_logs SET cost_nano = 0'), /permission denied for table audit_logs/);
  denied(s.databaseURL, asSystem('UPDATE audit_logs SET cost_nano = 0'), /permission denied for table audit_logs/);
  denied(s.databaseURL, asSystem('DELETE FROM audit_logs'), /permission denied for table audit_logs/);
  denied(s.databaseURL, asApp(ORG_B, `INSERT INTO audit_logs (id, org_id, created_at) VALUES ('x', '${ORG_B}', now())`),
    /permission denied for table audit_logs/);
  // the columns the API changes still can be
  ok(s.databaseURL, asApp(ORG_B, `UPDATE api_keys SET name = 'renamed', rpm_limit = 5 WHERE id = '${KEY_B}'`));
  assert.equal(ok(s.ownerDatabaseURL, `SELECT name FROM api_keys WHERE id = '${KEY_B}'`), 'renamed');
});

/** controld by hand on the stack's database with URL as its runtime URL */
function runControld(url, extra = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sp-dbroles-'));
  const c = spawn(path.join(BUILD, 'controld'), [], {
    env: {
      PATH: process.env.PATH,
      HOME: os.tmpdir(),
      SPENDPOL_DATABASE_URL: url,
      SPENDPOL_API_LISTEN: '127.0.0.1:0',
      SPENDPOL_DATA_DIR: dir,
      SPENDPOL_SNAPSHOT_DIR: path.join(dir, 'snap'),
      SPENDPOL_JOURNAL: path.join(dir, 'journal.log'),
      SPENDPOL_MIGRATIONS_DIR: path.join(REPO, 'migrations'),
      SPENDPOL_ADMIN_KEY: s.adminKey,
      SPENDPOL_MASTER_KEY: fs.readFileSync(path.join(s.dataDir, 'controld', 'master.key'), 'utf8').trim(),
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r = { out: '' };
  c.stdout.on('data', (d) => { r.out += d; });
  c.stderr.on('data', (d) => { r.out += d; });
  r.done = new Promise((resolve) => c.on('exit', (code, signal) => {
    fs.rmSync(dir, { recursive: true, force: true });
    resolve({ code, signal });
  }));
  r.ready = new Promise((resolve) => {
    const t = setInterval(() => {
      if (/controld ready/.test(r.out)) { clearInterval(t); resolve(true); }
    }, 50);
    r.done.then(() => { clearInterval(t); resolve(false); });
  });
  r.kill = () => c.kill('SIGTERM');
  return r;
}

test('controld refuses a superuser or table-owning runtime URL, unless SPENDPOL_DATABASE_INSECURE=1', { timeout: 90_000 }, async () => {
  const su = superuserURL();
  const suPassword = fs.readFileSync(path.join(s.dataDir, 'pg', 'superuser.pgpass'), 'utf8').trim().split(':')[4];

  // started as root, controld reads no file of root's: the superuser's
  // password goes in the environment for these runs
  const suEnv = { PGPASSWORD: suPassword };
  let r = runControld(su, suEnv);
  let x = await r.done;
  assert.notEqual(x.code, 0, r.out);
  assert.match(r.out, /the role "postgres" of SPENDPOL_DATABASE_URL is \(or can become\) the superuser/);
  assert.match(r.out, /SPENDPOL_MIGRATE_DATABASE_URL/);
  assert.match(r.out, /SPENDPOL_DATABASE_INSECURE=1/);
  assert.doesNotMatch(r.out, /controld ready/);
  assert.ok(!r.out.includes(suPassword), 'a password reached the log');

  // the owner: BYPASSRLS and the tables' owner
  r = runControld(s.ownerDatabaseURL);
  x = await r.done;
  assert.notEqual(x.code, 0, r.out);
  assert.match(r.out, /the role "spendpol_owner" of SPENDPOL_DATABASE_URL is \(or can become\) the BYPASSRLS role/);
  assert.match(r.out, /the role "spendpol_owner" of SPENDPOL_DATABASE_URL owns \(or can become the owner of\) tables with row-level security \(owner: spendpol_owner\)/);

  // accepted when told, with a warning
  r = runControld(su, { ...suEnv, SPENDPOL_DATABASE_INSECURE: '1' });
  assert.ok(await r.ready, r.out);
  assert.match(r.out, /\[warn\] db: .*superuser/);
  assert.match(r.out, /SPENDPOL_DATABASE_INSECURE=1: starting anyway/);
  r.kill();
  x = await r.done;
  assert.equal(x.code, 0, r.out);

  // and the runtime URL with the owner's for migrations starts cleanly
  r = runControld(s.databaseURL, { SPENDPOL_MIGRATE_DATABASE_URL: s.ownerDatabaseURL });
  assert.ok(await r.ready, r.out);
  assert.match(r.out, /runtime role "spendpol_controld": no superuser, BYPASSRLS or table owner within reach/);
  assert.doesNotMatch(r.out, /db: the role|SPENDPOL_DATABASE_INSECURE/);
  r.kill();
  x = await r.done;
  assert.equal(x.code, 0, r.out);
});

test('a data dir of an older version (trust, no roles, the superuser owning the tables) is upgraded in place', { timeout: 120_000 }, () => {
  const tmp = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'sp-dbroles-old-'));
  fs.chmodSync(tmp, 0o755);
  const port = execFileSync('bash', [STACK_SH, 'free-port'], { encoding: 'utf8' }).trim();
  const sh = (...a) => execFileSync('bash', [STACK_SH, ...a], { encoding: 'utf8', env: { ...process.env, SPENDPOL_PG_FAST: '1' } }).trim();
  try {
    sh('pg-start', tmp, port);
    // make it look like the old layout: trust everywhere, no pgpass, a
    // table and a sequence owned by the superuser
    const su = sh('pg-superuser-url', tmp, port);
    ok(su, `CREATE TABLE public.legacy (id serial PRIMARY KEY);
      ALTER TABLE public.legacy OWNER TO postgres;
      CREATE SEQUENCE public.legacy_gen; ALTER SEQUENCE public.legacy_gen OWNER TO postgres;
      DROP ROLE spendpol_controld; REASSIGN OWNED BY spendpol_owner TO postgres;
      DROP OWNED BY spendpol_owner; DROP ROLE spendpol_owner;
      ALTER ROLE postgres PASSWORD NULL`);
    const hbaPath = path.join(tmp, 'pg', 'data', 'pg_hba.conf');
    fs.writeFileSync(hbaPath, 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
    for (const f of ['pgpass', 'superuser.pgpass']) fs.rmSync(path.join(tmp, 'pg', f));
    sh('pg-stop', tmp);
    // start: upgraded
    sh('pg-start', tmp, port);
    const hba = fs.readFileSync(hbaPath, 'utf8');
    assert.doesNotMatch(hba.replace(/#.*/g, ''), /trust/);
    const owner = sh('pg-owner-url', tmp, port);
    assert.equal(ok(owner, "SELECT string_agg(relname || ':' || pg_get_userbyid(relowner), ',' ORDER BY relname) FROM pg_class WHERE relname LIKE 'legacy%'"),
      'legacy:spendpol_owner,legacy_gen:spendpol_owner,legacy_id_seq:spendpol_owner,legacy_pkey:spendpol_owner');
    assert.equal(ok(sh('pg-url', tmp, port), 'SELECT current_user'), 'spendpol_controld');
    const r = psql(`postgresql://postgres@127.0.0.1:${port}/postgres?passfile=/nonexistent`, 'SELECT 1');
    assert.equal(r.ok, false);
    assert.match(r.err, /no password supplied|password authentication failed/);
  } finally {
    try { sh('pg-stop', tmp); } catch { /* stopped */ }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
