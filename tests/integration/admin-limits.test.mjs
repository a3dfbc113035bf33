// Admin API limits (issue 10): the request body cap, per-organisation caps
// on keys, budgets, alert rules and agents, TLS for the admin API with its
// idle timeout and per-IP connection limit, and the refusal to serve plain
// HTTP on an address other hosts reach.

// The stack's controld takes these from the environment (the harness passes
// process.env through); they must be set before useStack() starts it.
process.env.SPENDPOL_MAX_KEYS_PER_ORG = '4';
process.env.SPENDPOL_MAX_BUDGETS_PER_ORG = '2';
process.env.SPENDPOL_MAX_ALERT_RULES_PER_ORG = '2';
process.env.SPENDPOL_MAX_AGENTS_PER_ORG = '2';

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { useStack, rawRequest, assertJsonError, freePort, BUILD, REPO } from './lib/stack.mjs';

const s = useStack();

const CONTROLD = path.join(BUILD, 'controld');

function adminHeaders() {
  return { authorization: `Bearer ${s.adminKey}`, 'content-type': 'application/json' };
}

test('a 2 MiB body -> 413 JSON naming the limit and SPENDPOL_API_BODY_MAX', async () => {
  const big = JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) });
  const r = await rawRequest(`${s.apiURL}/api-keys`, { headers: adminHeaders(), body: big });
  const e = assertJsonError(r, 413, 'Content-Length over the cap');
  assert.equal(e.code, 'body_too_large');
  assert.match(e.message, /1048576 bytes/);
  assert.match(e.message, /SPENDPOL_API_BODY_MAX/);

  // just under the cap is read and judged on its content
  const under = JSON.stringify({ name: 'x'.repeat(1024 * 1024 - 64) });
  const u = await rawRequest(`${s.apiURL}/api-keys`, { headers: adminHeaders(), body: under });
  assert.notEqual(u.status, 413, u.text.slice(0, 300));
  assert.ok(u.status === 400 || u.status === 422, `${u.status} ${u.text.slice(0, 300)}`);
  assert.equal(u.json.error.field, 'name', u.text.slice(0, 300));

  // and the daemon still answers
  assert.equal((await s.api('GET', '/api-keys?limit=1')).status, 200);
});

test('an oversized body is drained, so a client still writing reads the 413 (ten in a row)', async () => {
  // 6 MiB: under eight times the cap, read and dropped before the answer;
  // a client without Expect: 100-continue must never see a reset instead
  const big = Buffer.alloc(6 * 1024 * 1024, 0x78);
  for (let i = 0; i < 10; i++) {
    const r = await rawRequest(`${s.apiURL}/api-keys`, { headers: adminHeaders(), body: big });
    assert.equal(assertJsonError(r, 413, `round ${i}`).code, 'body_too_large');
  }
});

test('a Content-Length far over the cap is refused unread; a chunked flood loses its connection', async () => {
  // 64 MiB announced, nothing sent: the answer comes before any body
  const far = await new Promise((resolve, reject) => {
    const sock = net.connect(Number(new URL(s.apiURL).port), '127.0.0.1');
    let got = '';
    sock.on('data', (d) => { got += d; });
    sock.on('end', () => resolve(got));
    sock.on('error', reject);
    sock.write(`POST /api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.adminKey}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
  });
  assert.match(far, /^HTTP\/1\.1 413/, far.slice(0, 200));
  assert.match(far, /SPENDPOL_API_BODY_MAX/);

  // chunked, 16 MiB and more: the daemon stops reading and closes
  const closed = await new Promise((resolve) => {
    const sock = net.connect(Number(new URL(s.apiURL).port), '127.0.0.1');
    const chunk = Buffer.alloc(1024 * 1024, 0x78);
    let sent = 0;
    sock.on('error', () => resolve(sent));
    sock.on('close', () => resolve(sent));
    sock.write(`POST /api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.adminKey}\r\n` +
      'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
    const pump = () => {
      while (sent < 64) {
        sent++;
        if (!sock.write(`${chunk.length.toString(16)}\r\n`) || !sock.write(chunk) || !sock.write('\r\n')) {
          sock.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  assert.ok(closed < 64, `the daemon read all ${closed} MiB of a chunked flood`);
  assert.equal((await s.api('GET', '/api-keys?limit=1')).status, 200);
});

function assertCapError(r, setting, cap) {
  const e = assertJsonError(r, 422, setting);
  assert.equal(e.code, 'org_limit_reached');
  assert.ok(e.message.includes(`${setting}=${cap}`), e.message);
  assert.match(e.message, /raise/);
  return e;
}

/** POSTs until the first non-201 (at most max + 2 times); returns [ids, refusal]. */
async function fillUp(route, body, max) {
  const ids = [];
  for (let i = 0; i < max + 2; i++) {
    const r = await s.api('POST', route, { body: body(i) });
    if (r.status !== 201) return [ids, r];
    ids.push(r.json.id);
  }
  assert.fail(`${route}: ${max + 2} creations all succeeded`);
}

test('keys past SPENDPOL_MAX_KEYS_PER_ORG -> 422; revoking one makes room', async () => {
  const [ids, refused] = await fillUp('/api-keys', (i) => ({ name: `cap-${i}` }), 4);
  assertCapError(refused, 'SPENDPOL_MAX_KEYS_PER_ORG', 4);
  assert.ok(ids.length >= 1 && ids.length <= 4, `created ${ids.length}`);

  const list = await s.api('GET', '/api-keys?limit=100');
  assert.equal(list.status, 200);
  assert.equal(list.json.data.filter((k) => k.active !== false && !k.revoked_at).length, 4,
    'active keys at the refusal');

  assert.equal((await s.api('DELETE', `/api-keys/${ids[0]}`)).status, 200);
  const again = await s.api('POST', '/api-keys', { body: { name: 'after-revoke' } });
  assert.equal(again.status, 201, again.text);
  assertCapError(await s.api('POST', '/api-keys', { body: { name: 'over' } }), 'SPENDPOL_MAX_KEYS_PER_ORG', 4);
});

test('agents, budgets and alert rules past their caps -> 422 naming the setting', async () => {
  const [agents, a] = await fillUp('/agents', (i) => ({ name: `agent-${i}` }), 2);
  assert.equal(agents.length, 2);
  assertCapError(a, 'SPENDPOL_MAX_AGENTS_PER_ORG', 2);

  const budget = (i) => ({ name: `b-${i}`, scope: { type: 'organization' }, limit_usd: '100', period: 'monthly' });
  const [budgets, b] = await fillUp('/budgets', budget, 2);
  assert.equal(budgets.length, 2);
  assertCapError(b, 'SPENDPOL_MAX_BUDGETS_PER_ORG', 2);
  assert.equal((await s.api('DELETE', `/budgets/${budgets[0]}`)).status < 300, true);
  assert.equal((await s.api('POST', '/budgets', { body: budget(9) })).status, 201);

  const [rules, r] = await fillUp('/alerts/rules', () => ({ type: 'unpriced_model' }), 2);
  assert.equal(rules.length, 2, r.text);
  assertCapError(r, 'SPENDPOL_MAX_ALERT_RULES_PER_ORG', 2);
});

/** env for a controld run by hand: nothing of ours or the stack's leaks in */
function bareEnv(extra) {
  return { PATH: process.env.PATH, HOME: os.tmpdir(), ...extra };
}

test('plain HTTP on 0.0.0.0 without SPENDPOL_API_INSECURE: exits 2 before connecting', async () => {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sp-insecure-'));
  const started = Date.now();
  // a database that never answers: reaching it would wait forever
  const out = spawnSyncish(CONTROLD, bareEnv({
    SPENDPOL_DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none?connect_timeout=1',
    SPENDPOL_API_LISTEN: `0.0.0.0:${port}`,
    SPENDPOL_DATA_DIR: dataDir,
  }));
  const res = await out;
  const left = fs.readdirSync(dataDir);
  fs.rmSync(dataDir, { recursive: true, force: true });
  assert.deepEqual(left, [], 'it created files before refusing');
  assert.equal(res.code, 2, `exit ${JSON.stringify(res)}`);
  assert.ok(Date.now() - started < 10_000, 'took too long: it waited for the database');
  assert.match(res.stderr, /SPENDPOL_API_LISTEN="0\.0\.0\.0:\d+" is not a loopback address/);
  assert.match(res.stderr, /SPENDPOL_API_TLS_CERT and SPENDPOL_API_TLS_KEY/);
  assert.match(res.stderr, /SPENDPOL_API_INSECURE=1/);
});

function spawnSyncish(cmd, env) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.on('error', reject);
    // 'close': after the exit, the pipes may still hold output
    c.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, stdout, stderr }); });
  });
}

/** a raw TCP connection; closed resolves with ms until the server closed it */
function connect(port) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = net.connect(port, '127.0.0.1');
    const closed = new Promise((r) => sock.on('close', () => r(Date.now() - t0)));
    sock.on('error', () => {});
    sock.once('connect', () => resolve({ sock, closed }));
    sock.once('error', reject);
  });
}

/** a second controld on the stack's database, with its own files; env adds settings */
async function startHand(env) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sp-hand-api-'));
  const c = spawn(CONTROLD, [], {
    env: bareEnv({
      SPENDPOL_DATABASE_URL: s.databaseURL,
      SPENDPOL_MIGRATE_DATABASE_URL: s.ownerDatabaseURL,
      SPENDPOL_API_DATABASE_URL: s.apiDatabaseURL,
      SPENDPOL_API_LISTEN: '127.0.0.1:0',
      SPENDPOL_DATA_DIR: dir,
      SPENDPOL_SNAPSHOT_DIR: path.join(dir, 'snap'),
      SPENDPOL_JOURNAL: path.join(dir, 'journal.log'),
      SPENDPOL_MIGRATIONS_DIR: path.join(REPO, 'migrations'),
      SPENDPOL_ADMIN_KEY: s.adminKey,
      ...env(dir),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const h = { dir, stdout: '', stderr: '' };
  c.stderr.on('data', (d) => { h.stderr += d; });
  const exited = new Promise((resolve) => c.on('close', (code, signal) => resolve({ code, signal })));
  h.stop = async () => {
    c.kill('SIGTERM');
    const kill = setTimeout(() => c.kill('SIGKILL'), 15_000);
    const x = await exited;
    clearTimeout(kill);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(x.code, 0, `hand-run controld exit ${JSON.stringify(x)}\n${h.stderr.slice(-2000)}`);
    assert.doesNotMatch(h.stderr, /AddressSanitizer|runtime error:/);
  };
  try {
    h.port = await new Promise((resolve, reject) => {
      c.stdout.on('data', (d) => {
        h.stdout += d;
        const m = /controld ready api=\S+:(\d+) /.exec(h.stdout);
        if (m) resolve(Number(m[1]));
      });
      exited.then((x) => reject(new Error(`controld exited ${JSON.stringify(x)}\n${h.stderr.slice(-2000)}`)));
      setTimeout(() => reject(new Error(`not ready\n${h.stdout}\n${h.stderr.slice(-2000)}`)), 30_000);
    });
  } catch (e) {
    c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return h;
}

test('idle timeout (SPENDPOL_API_CONNECTION_TIMEOUT) and per-IP limit (SPENDPOL_API_PER_IP_CONNECTION_LIMIT)', { timeout: 90_000 }, async () => {
  const h = await startHand(() => ({
    SPENDPOL_API_CONNECTION_TIMEOUT: '2',
    SPENDPOL_API_PER_IP_CONNECTION_LIMIT: '2',
  }));
  try {
    // two idle connections are allowed, a third from the same IP is closed
    // at once; the idle ones close after about 2 s
    const a = await connect(h.port), b = await connect(h.port);
    await new Promise((r) => setTimeout(r, 200));
    const third = await connect(h.port);
    const thirdMs = await third.closed;
    assert.ok(thirdMs < 1500, `third connection from one IP lived ${thirdMs} ms`);
    // a request stalled half-way is dropped too (slow clients)
    a.sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const [aMs, bMs] = await Promise.all([a.closed, b.closed]);
    assert.ok(aMs >= 1500 && aMs < 8000, `stalled connection closed after ${aMs} ms`);
    assert.ok(bMs >= 1500 && bMs < 8000, `idle connection closed after ${bMs} ms`);

    // and once they are gone the API answers again
    const r = await fetch(`http://127.0.0.1:${h.port}/healthz`, { headers: { connection: 'close' } });
    assert.equal(r.status, 200);
  } finally {
    await h.stop();
  }
});

test('TLS admin API from SPENDPOL_API_TLS_CERT and SPENDPOL_API_TLS_KEY', { timeout: 90_000 }, async () => {
  const keys = fs.mkdtempSync(path.join(os.tmpdir(), 'sp-tls-pem-'));
  const cert = path.join(keys, 'cert.pem'), key = path.join(keys, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const h = await startHand(() => ({ SPENDPOL_API_TLS_CERT: cert, SPENDPOL_API_TLS_KEY: key }));
  try {
    // HTTPS with the certificate as the only CA
    const ca = fs.readFileSync(cert);
    const got = await new Promise((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: h.port, path: '/api-keys?limit=1', ca, agent: false, headers: { authorization: `Bearer ${s.adminKey}` } }, (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, text }));
      }).on('error', reject);
    });
    assert.equal(got.status, 200, got.text);
    assert.ok(Array.isArray(JSON.parse(got.text).data));

    // plain HTTP on the TLS port gets no HTTP answer
    const plain = await new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: h.port, path: '/healthz', agent: false }, (res) => resolve(`status ${res.statusCode}`));
      req.on('error', (e) => resolve(`error ${e.code}`));
      req.setTimeout(3000, () => { req.destroy(); resolve('error timeout'); });
    });
    assert.match(plain, /^error /);
  } finally {
    await h.stop();
    fs.rmSync(keys, { recursive: true, force: true });
  }
});
