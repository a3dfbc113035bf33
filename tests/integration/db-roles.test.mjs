// Issue 10 item 2: least-privilege database access.
//
// The private cluster takes passwords only (scram-sha-256, no trust
// line); controld serves as two logins, spendpol_controld (member of
// spendpol_system only) and spendpol_api (member of spendpol_app only, the
// admin API's tenant statements), which are no superuser, have no
// BYPASSRLS, own nothing and cannot SET ROLE or RESET ROLE into a role
// that could; inside spendpol_app a tenant sees and changes only its own
// organisation's rows and cannot switch to spendpol_system; no serving
// role may rewrite a key hash or an audit row; controld refuses a runtime
// URL that could bypass row-level security, or one tenant-and-system
// login, unless SPENDPOL_DATABASE_INSECURE=1.

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

/** inside spendpol_app for orgId (the API URL) or spendpol_system (the runtime URL) */
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
  for (const u of [s.databaseURL, s.apiDatabaseURL, s.ownerDatabaseURL]) {
    assert.match(u, /^postgresql:\/\/spendpol_(controld|api|owner)@127\.0\.0\.1:\d+\/postgres\?passfile=/, u);
  }
});

test('connecting without the password is refused (TCP and the unix socket, every role)', () => {
  for (const user of ['spendpol_controld', 'spendpol_api', 'spendpol_owner', 'postgres']) {
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

test('the runtime roles are no superuser, have no BYPASSRLS, do not inherit, own nothing; one is system, the other tenant', () => {
  const members = (u) => ok(u,
    "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = current_user::regrole");
  for (const [u, name] of [[s.databaseURL, 'spendpol_controld'], [s.apiDatabaseURL, 'spendpol_api']]) {
    assert.equal(ok(u, 'SELECT current_user'), name);
    assert.equal(ok(u,
      'SELECT rolsuper, rolbypassrls, rolinherit, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user'),
    'f|f|f|f|f', name);
    assert.equal(ok(u, 'SELECT count(*) FROM pg_class WHERE relowner = current_user::regrole'), '0', name);
  }
  // one login per side: neither can become the other's role
  assert.equal(members(s.databaseURL), 'spendpol_system');
  assert.equal(members(s.apiDatabaseURL), 'spendpol_app');
  // the tables are the owner's
  assert.equal(ok(s.ownerDatabaseURL,
    "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relowner <> 'spendpol_owner'::regrole"), '0');
});

test('RESET ROLE leaves a runtime login with no table privilege; it cannot SET ROLE to the owner or the superuser', () => {
  for (const u of [s.databaseURL, s.apiDatabaseURL]) {
    for (const t of ['audit_logs', 'api_keys', 'providers', 'orgs']) {
      denied(u, `RESET ROLE; SELECT count(*) FROM ${t}`, new RegExp(`permission denied for table ${t}`));
    }
    denied(u, 'SET ROLE spendpol_owner', /permission denied to set role "spendpol_owner"/);
    denied(u, 'SET ROLE postgres', /permission denied to set role "postgres"/);
    denied(u, 'SET SESSION AUTHORIZATION postgres', /permission denied to set session authorization/);
    denied(u, 'CREATE TABLE planted (x int)', /permission denied for schema public/);
  }
  // the same through an expression, as an injected SELECT would try
  denied(s.apiDatabaseURL, asApp('org_default', "SELECT set_config('role', 'spendpol_owner', true)"),
    /permission denied to set role "spendpol_owner"/);
});

test('inside a tenant transaction, an injected switch to spendpol_system fails: other organisations stay invisible', async () => {
  // org B's key is written by the owner; the tenant is org A (the default)
  const orgB = 'org_dbroles_inject';
  const keyB = `key_${crypto.randomBytes(12).toString('hex')}`;
  ok(s.ownerDatabaseURL, `INSERT INTO orgs (id, name) VALUES ('${orgB}', 'inject') ON CONFLICT DO NOTHING;
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix)
      VALUES ('${keyB}', '${orgB}', 'inject B key', '\\x${crypto.randomBytes(32).toString('hex')}', 'sp_key_i')`);
  // the transaction controld's tenant pool opens (cd_db_begin), then the
  // statements an injection would add
  const tenant = (sql) => `BEGIN; SET LOCAL ROLE spendpol_app;
    SELECT set_config('spendpol.org_id', 'org_default', true); ${sql}; COMMIT`;
  // (psql prints every result: set_config's, then the count)
  assert.equal(ok(s.apiDatabaseURL, tenant(`SELECT count(*) FROM api_keys WHERE org_id = '${orgB}'`)).split('\n').pop(), '0');
  assert.equal(ok(s.ownerDatabaseURL, `SELECT count(*) FROM api_keys WHERE org_id = '${orgB}'`), '1');
  denied(s.apiDatabaseURL, tenant(`SET LOCAL ROLE spendpol_system; SELECT count(*) FROM api_keys WHERE org_id = '${orgB}'`),
    /permission denied to set role "spendpol_system"/);
  denied(s.apiDatabaseURL, tenant(`SELECT set_config('role', 'spendpol_system', false); SELECT count(*) FROM api_keys WHERE org_id = '${orgB}'`),
    /permission denied to set role "spendpol_system"/);
  denied(s.apiDatabaseURL, tenant(`SET ROLE spendpol_system; SELECT count(*) FROM api_keys WHERE org_id = '${orgB}'`),
    /permission denied to set role "spendpol_system"/);
  // out of the transaction too, for a session that was never in one
  denied(s.apiDatabaseURL, 'SET ROLE spendpol_system', /permission denied to set role "spendpol_system"/);
  // the system login has no use for spendpol_app and cannot take it
  denied(s.databaseURL, 'SET ROLE spendpol_app', /permission denied to set role "spendpol_app"/);
  denied(s.databaseURL, "BEGIN; SELECT set_config('role', 'spendpol_app', true); COMMIT", /permission denied to set role "spendpol_app"/);
  // a real admin API request still works over the tenant login
  const k = await s.createKey({ name: 'db-roles tenant' }, { wait: false });
  assert.ok(k.id, JSON.stringify(k));
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
  assert.ok(Number(ok(s.apiDatabaseURL, asApp(A, `SELECT count(*) FROM api_keys WHERE id = '${a.id}'`))) === 1,
    'org A sees its own key');
  assert.equal(ok(s.apiDatabaseURL, asApp(A, `SELECT count(*) FROM api_keys WHERE org_id = '${ORG_B}'`)), '0');
  assert.equal(ok(s.apiDatabaseURL, asApp(A, `SELECT count(*) FROM audit_logs WHERE org_id = '${ORG_B}'`)), '0');
  assert.equal(ok(s.apiDatabaseURL, asApp(A, `SELECT count(*) FROM orgs WHERE id = '${ORG_B}'`)), '0');
  // an UPDATE finds nothing to change; an INSERT into B is refused
  ok(s.apiDatabaseURL, asApp(A, `UPDATE api_keys SET name = 'stolen', active = false, revoked_at = now() WHERE id = '${KEY_B}'`));
  assert.equal(ok(s.ownerDatabaseURL, `SELECT name || ' ' || active FROM api_keys WHERE id = '${KEY_B}'`), 'org B key true');
  denied(s.apiDatabaseURL, asApp(A, `INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix)
    VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${ORG_B}', 'planted', '\\x${crypto.randomBytes(32).toString('hex')}', 'sp_key_p')`),
  /new row violates row-level security policy/);
  // a tenant without an org sees nothing at all
  assert.equal(ok(s.apiDatabaseURL, asApp('', 'SELECT count(*) FROM api_keys')), '0');
  // B sees its own, not A's
  assert.equal(ok(s.apiDatabaseURL, asApp(ORG_B, `SELECT string_agg(id, ',') FROM api_keys`)), KEY_B);
});

test('no serving role may rewrite a key hash, nor change or delete audit rows', () => {
  const h = crypto.randomBytes(32).toString('hex');
  denied(s.apiDatabaseURL, asApp(ORG_B, `UPDATE api_keys SET key_hash = '\\x${h}' WHERE id = '${KEY_B}'`),
    /permission denied for table api_keys/);
  denied(s.databaseURL, asSystem(`UPDATE api_keys SET key_hash = '\\x${h}' WHERE id = '${KEY_B}'`),
    /permission denied for table api_keys/);
  denied(s.apiDatabaseURL, asApp(ORG_B, `DELETE FROM api_keys WHERE id = '${KEY_B}'`), /permission denied for table api_keys/);
  denied(s.databaseURL, asSystem(`DELETE FROM api_keys WHERE id = '${KEY_B}'`), /permission denied for table api_keys/);
  denied(s.apiDatabaseURL, asApp(ORG_B, 'UPDATE audit_logs SET cost_nano = 0'), /permission denied for table audit_logs/);
  denied(s.databaseURL, asSystem('UPDATE audit_logs SET cost_nano = 0'), /permission denied for table audit_logs/);
  denied(s.databaseURL, asSystem('DELETE FROM audit_logs'), /permission denied for table audit_logs/);
  denied(s.apiDatabaseURL, asApp(ORG_B, `INSERT INTO audit_logs (id, org_id, created_at) VALUES ('x', '${ORG_B}', now())`),
    /permission denied for table audit_logs/);
  // the columns the API changes still can be
  ok(s.apiDatabaseURL, asApp(ORG_B, `UPDATE api_keys SET name = 'renamed', rpm_limit = 5 WHERE id = '${KEY_B}'`));
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
  r.done = new Promise((resolve) => c.on('close', (code, signal) => {
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

  // the system login alone: its tenant statements could not SET ROLE
  // spendpol_app, so it does not start, whatever INSECURE says
  r = runControld(s.databaseURL, { SPENDPOL_MIGRATE_DATABASE_URL: s.ownerDatabaseURL, SPENDPOL_DATABASE_INSECURE: '1' });
  x = await r.done;
  assert.notEqual(x.code, 0, r.out);
  assert.match(r.out, /the role "spendpol_controld" of SPENDPOL_DATABASE_URL \(the admin API's tenant statements too: SPENDPOL_API_DATABASE_URL is unset\) is not a member of spendpol_app/);

  // and the runtime URL, the API's and the owner's for migrations start cleanly
  r = runControld(s.databaseURL, { SPENDPOL_MIGRATE_DATABASE_URL: s.ownerDatabaseURL, SPENDPOL_API_DATABASE_URL: s.apiDatabaseURL });
  assert.ok(await r.ready, r.out);
  assert.match(r.out, /runtime role "spendpol_controld" \(SPENDPOL_DATABASE_URL\): no superuser, BYPASSRLS or table owner within reach/);
  assert.match(r.out, /tenant role "spendpol_api" \(SPENDPOL_API_DATABASE_URL\): no superuser, BYPASSRLS or table owner, nor spendpol_system within reach/);
  assert.doesNotMatch(r.out, /db: the role|SPENDPOL_DATABASE_INSECURE/);
  r.kill();
  x = await r.done;
  assert.equal(x.code, 0, r.out);
});

test('controld refuses one runtime login that can become both spendpol_app and spendpol_system, unless SPENDPOL_DATABASE_INSECURE=1', { timeout: 90_000 }, async () => {
  // the layout before the tenant login of its own: one login, both roles
  const su = superuserURL();
  const pw = crypto.randomBytes(24).toString('hex');
  ok(su, `DROP ROLE IF EXISTS spendpol_both; CREATE ROLE spendpol_both LOGIN NOINHERIT PASSWORD '${pw}';
    GRANT spendpol_app, spendpol_system TO spendpol_both`);
  try {
    // the password in the URL: PGPASSWORD would override the owner's
    // passfile too
    const both = `postgresql://spendpol_both:${pw}@127.0.0.1:${s.pgPort}/postgres`;
    const env = { SPENDPOL_MIGRATE_DATABASE_URL: s.ownerDatabaseURL };
    let r = runControld(both, env);
    let x = await r.done;
    assert.notEqual(x.code, 0, r.out);
    assert.match(r.out, /runtime role "spendpol_both" \(SPENDPOL_DATABASE_URL\): no superuser/);
    assert.match(r.out, /\[error\] db: the role "spendpol_both" of SPENDPOL_DATABASE_URL \(the admin API's tenant statements too: SPENDPOL_API_DATABASE_URL is unset\) can become the role of every organisation's rows too \(spendpol_system\)/);
    assert.match(r.out, /not starting: set SPENDPOL_API_DATABASE_URL to a role that .* only a member of spendpol_app/);
    assert.doesNotMatch(r.out, /controld ready/);
    assert.ok(!r.out.includes(pw), 'a password reached the log');

    // the same login given as the API URL is refused just as well
    r = runControld(s.databaseURL, { ...env, SPENDPOL_API_DATABASE_URL: both });
    x = await r.done;
    assert.notEqual(x.code, 0, r.out);
    assert.match(r.out, /the role "spendpol_both" of SPENDPOL_API_DATABASE_URL can become the role of every organisation's rows too \(spendpol_system\)/);

    // accepted when told, with a warning
    r = runControld(both, { ...env, SPENDPOL_DATABASE_INSECURE: '1' });
    assert.ok(await r.ready, r.out);
    assert.match(r.out, /\[warn\] db: the role "spendpol_both" .* \(spendpol_system\)/);
    assert.match(r.out, /SPENDPOL_DATABASE_INSECURE=1: starting anyway/);
    r.kill();
    x = await r.done;
    assert.equal(x.code, 0, r.out);
  } finally {
    ok(su, 'DROP ROLE IF EXISTS spendpol_both');
  }
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
      DROP ROLE spendpol_controld; DROP ROLE spendpol_api; REASSIGN OWNED BY spendpol_owner TO postgres;
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
    assert.equal(ok(sh('pg-api-url', tmp, port), 'SELECT current_user'), 'spendpol_api');
    const r = psql(`postgresql://postgres@127.0.0.1:${port}/postgres?passfile=/nonexistent`, 'SELECT 1');
    assert.equal(r.ok, false);
    assert.match(r.err, /no password supplied|password authentication failed/);

    // the layout with one runtime login in both roles and no spendpol_api:
    // the login is split, the other passwords stay
    const members = `SELECT r.rolname || ':' || coalesce((SELECT string_agg(b.rolname, '+' ORDER BY b.rolname)
      FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid), '')
      FROM pg_roles r WHERE r.rolname IN ('spendpol_controld', 'spendpol_api') ORDER BY r.rolname`;
    ok(su, 'DROP ROLE spendpol_api; GRANT spendpol_app TO spendpol_controld');
    const passPath = path.join(tmp, 'pg', 'pgpass');
    const kept = fs.readFileSync(passPath, 'utf8').split('\n').filter((l) => l && !/:spendpol_api:/.test(l));
    fs.writeFileSync(passPath, `${kept.join('\n')}\n`, { mode: 0o600 });
    assert.equal(ok(su, members), 'spendpol_controld:spendpol_app+spendpol_system');
    sh('pg-stop', tmp);
    sh('pg-start', tmp, port);
    assert.equal(ok(su, members), 'spendpol_api:spendpol_app\nspendpol_controld:spendpol_system');
    const lines = fs.readFileSync(passPath, 'utf8').split('\n').filter(Boolean);
    for (const l of kept) assert.ok(lines.includes(l), `${l.split(':')[3]}'s password changed`);
    assert.equal(lines.filter((l) => /^\*:\*:\*:spendpol_api:[0-9a-f]{48}$/.test(l)).length, 1, 'one spendpol_api line');
    assert.equal(fs.statSync(passPath).mode & 0o777, 0o600);
    assert.equal(ok(sh('pg-api-url', tmp, port), 'SELECT current_user'), 'spendpol_api');
    assert.equal(ok(sh('pg-url', tmp, port), 'SELECT current_user'), 'spendpol_controld');
  } finally {
    try { sh('pg-stop', tmp); } catch { /* stopped */ }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
