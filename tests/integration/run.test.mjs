// `make run`'s script end to end, as a newcomer uses it: scripts/run.sh
// prints a ready line and an admin key; a key from POST /api-keys drives the
// official openai SDK; the call and its cost are in GET /audit-logs; Ctrl-C
// stops everything (exit 0); a second start keeps keys, providers and audit
// logs; a child that dies takes run.sh down with a non-zero exit.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import {
  REPO, BUILD, IS_SAN, freePort, waitFor, auditRowsOf, usdToNano, expectedCostNano, sleep,
} from './lib/stack.mjs';
import { startFixture, fixtureReply, fixtureUsage } from '../fixtures/openai-fixture.mjs';

const SLOW = IS_SAN ? 3 : 1;
const idle = (ms) => new Promise((r) => setTimeout(r, ms).unref());
const data = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-run-'));
const fixture = await startFixture({ expectedKey: 'sk-fixture-secret' });
let proxyPort;
let apiPort;
const running = new Set();

after(async () => {
  const alive = setInterval(() => {}, 1000); // the checks below must run
  try { await cleanup(); } finally { clearInterval(alive); }
});

async function cleanup() {
  // run.sh runs in its own process group: end whatever is left of it
  for (const p of running) { try { process.kill(-p.pid, 'SIGTERM'); } catch { /* gone */ } }
  if (running.size) await sleep(3000);
  for (const p of running) { try { process.kill(-p.pid, 'SIGKILL'); } catch { /* gone */ } }
  // nginx and controld run in sessions of their own: find them by this data dir
  const leftovers = [];
  try {
    const master = Number(fs.readFileSync(path.join(data, 'nginx', 'nginx.pid'), 'utf8'));
    // a stale pid file must not name someone else's process
    if (master && fs.readFileSync(`/proc/${master}/cmdline`, 'latin1').includes(data)) {
      leftovers.push(master);
      const kids = spawnSync('ps', ['-o', 'pid=', '--ppid', String(master)], { encoding: 'utf8' }).stdout;
      leftovers.push(...kids.split(/\s+/).filter(Boolean).map(Number));
    }
  } catch { /* no nginx */ }
  for (const pid of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`SPENDPOL_DATA_DIR=${data}`)) leftovers.push(Number(pid));
    } catch { /* gone or not ours */ }
  }
  for (const pid of leftovers) {
    if (pid === process.pid) continue;
    try { process.kill(pid, 'SIGKILL'); process.stderr.write(`[run.test] killed leftover pid ${pid}\n`); } catch { /* gone */ }
  }
  await fixture.close();
  // a crashed run.sh may have left its private PostgreSQL/Redis behind
  for (const cmd of ['redis-stop', 'pg-stop']) {
    await new Promise((r) => spawn('bash', [path.join(REPO, 'scripts/stack.sh'), cmd, data], { stdio: 'ignore' }).on('exit', r));
  }
  const problems = [];
  for (const f of ['error.log', 'controld.err']) {
    const p = path.join(data, 'logs', f);
    if (fs.existsSync(p)) {
      for (const l of fs.readFileSync(p, 'utf8').split('\n')) {
        if (/\[alert\]|\[emerg\]|AddressSanitizer|runtime error:/.test(l)) problems.push(`${f}: ${l}`);
      }
    }
  }
  if (problems.length) {
    process.stderr.write(`[run.test] data dir kept: ${data}\n`);
    assert.fail(problems.join('\n'));
  }
  if (process.env.SPENDPOL_KEEP_DATA !== '1') fs.rmSync(data, { recursive: true, force: true });
  const snap = spawnSync('bash', [path.join(REPO, 'scripts/stack.sh'), 'snapshot-dir', data], { encoding: 'utf8' }).stdout.trim();
  if (snap.includes('spendpol-')) fs.rmSync(snap, { recursive: true, force: true });
}

/** starts scripts/run.sh; resolves when its ready line is out */
async function startRun(extraEnv = {}) {
  // the fixture provider listens on loopback, which is refused by default
  const env = { ...process.env, SPENDPOL_DATA_DIR: data, SPENDPOL_BUILD_DIR: BUILD, SPENDPOL_UPSTREAM_ALLOW: '127.0.0.0/8', ...extraEnv };
  for (const k of ['SPENDPOL_ADMIN_KEY', 'DATABASE_URL', 'SPENDPOL_DATABASE_URL', 'REDIS_URL', 'SPENDPOL_REDIS_URL', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LD_PRELOAD']) delete env[k];
  for (let attempt = 0; ; attempt++) {
    if (!proxyPort || attempt > 0) { proxyPort = await freePort(); apiPort = await freePort(); }
    env.SPENDPOL_PROXY_LISTEN = `127.0.0.1:${proxyPort}`;
    env.SPENDPOL_API_LISTEN = `127.0.0.1:${apiPort}`;
    const p = spawn('bash', [path.join(REPO, 'scripts/run.sh')], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running.add(p);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.done = new Promise((resolve) => p.on('exit', (code, signal) => { running.delete(p); resolve({ code, signal }); }));
    const ready = await Promise.race([
      waitFor(() => /^spendpol ready/m.test(out), { timeout: 120_000 * SLOW, interval: 100, message: 'run.sh ready line' }).then(() => true),
      p.done.then(() => false),
    ]);
    if (ready) {
      p.output = () => out;
      p.errors = () => err;
      return p;
    }
    if (attempt < 2 && /in use/.test(err)) continue;
    throw new Error(`run.sh exited before ready\n--- stdout\n${out}\n--- stderr\n${err}`);
  }
}

/** runs body(p) with run.sh started; a failing body still stops it, so the next test starts clean */
async function withRun(body) {
  const p = await startRun();
  try {
    await body(p);
  } finally {
    if (running.has(p)) {
      try { process.kill(-p.pid, 'SIGTERM'); } catch { /* gone */ }
      await Promise.race([p.done, idle(30_000)]);
    }
  }
}

async function stopRun(p, signal = 'SIGINT') {
  p.kill(signal);
  const r = await Promise.race([p.done, idle(60_000).then(() => ({ timeout: true }))]);
  assert.deepEqual(r, { code: 0, signal: null }, `run.sh after ${signal}: ${JSON.stringify(r)}\n${p.errors()}`);
}

async function api(method, p, key, body) {
  const r = await fetch(`http://127.0.0.1:${apiPort}${p}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null, text };
}

const portOpen = (port) => fetch(`http://127.0.0.1:${port}/`).then(() => true, () => false);

let adminKey;
let proxyKey;
let firstAuditId;

test('make run: ready line, admin key, a governed call with its cost in the audit log', () => withRun(async (p) => {
  const out = p.output();
  const m = /admin key: (sp_key_[0-9a-f]{48})/.exec(out);
  assert.ok(m, `no admin key in:\n${out}`);
  adminKey = m[1];
  assert.match(out, new RegExp(`OPENAI_BASE_URL=http://127\\.0\\.0\\.1:${proxyPort}/v1/openai`));
  assert.match(out, /curl .*\/api-keys/);
  assert.match(out, /audit-logs/);
  assert.equal(fs.readFileSync(path.join(data, 'controld', 'admin.key'), 'utf8').trim(), adminKey);

  const k = await api('POST', '/api-keys', adminKey, { name: 'demo' });
  assert.equal(k.status, 201, k.text);
  proxyKey = k.json.key;
  const pr = await api('PUT', '/providers/openai', adminKey, { api_key: 'sk-fixture-secret', base_url: fixture.url });
  assert.ok(pr.status >= 200 && pr.status < 300, pr.text);

  const client = new OpenAI({ baseURL: `http://127.0.0.1:${proxyPort}/v1/openai`, apiKey: proxyKey, maxRetries: 0 });
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello from the quick start' }] };
  const { data: res, response } = await waitFor(async () => {
    try { return await client.chat.completions.create(body).withResponse(); } catch (e) { if (e.status === 401) return null; throw e; }
  }, { timeout: 5000, message: 'the new key to work' });
  assert.equal(res.choices[0].message.content, fixtureReply(body));
  firstAuditId = response.headers.get('x-spendpol-audit-id');
  const cost = response.headers.get('x-spendpol-cost');
  assert.equal(usdToNano(cost), expectedCostNano('gpt-4o-mini', fixtureUsage(body)));

  const row = await waitFor(async () => auditRowsOf((await api('GET', '/audit-logs', adminKey)).json).find((r) => r.id === firstAuditId),
    { timeout: 10_000 * SLOW, message: 'the audit row' });
  assert.equal(usdToNano(row.cost_usd), usdToNano(cost));

  // the ready line's metrics: the proxy's (local only) and controld's (the bootstrap key is an operator)
  assert.match(out, new RegExp(`curl -s http://127\\.0\\.0\\.1:${proxyPort}/metrics`));
  const pm = await fetch(`http://127.0.0.1:${proxyPort}/metrics`);
  const ptext = await pm.text();
  assert.equal(pm.status, 200, ptext);
  assert.match(ptext, /^spendpol_proxy_requests_total\{.*model="gpt-4o-mini[^"]*".*\} [1-9]/m);
  const cm = await fetch(`http://127.0.0.1:${apiPort}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } });
  const ctext = await cm.text();
  assert.equal(cm.status, 200, ctext);
  assert.match(ctext, /^spendpol_controld_ingest_rows_total [1-9]/m);

  await stopRun(p, 'SIGINT');
  assert.equal(await portOpen(proxyPort), false, 'nginx still listening after Ctrl-C');
  assert.equal(await portOpen(apiPort), false, 'controld still listening after Ctrl-C');
}));

test('second start reuses the data: admin key, proxy key, provider and audit logs survive; SIGTERM stops it', async () => {
  assert.ok(adminKey && proxyKey, 'needs the first test');
  await withRun(async (p) => {
    const k = await api('GET', '/api-keys', adminKey);
    assert.equal(k.status, 200, `the admin key from the first run: ${k.text}`);
    const rows = auditRowsOf((await api('GET', '/audit-logs', adminKey)).json);
    assert.ok(rows.some((r) => r.id === firstAuditId), 'the first run\'s audit row is gone');
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${proxyPort}/v1/openai`, apiKey: proxyKey, maxRetries: 0 });
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'still here?' }] };
    const res = await waitFor(async () => {
      try { return await client.chat.completions.create(body); } catch (e) { if (e.status === 401) return null; throw e; }
    }, { timeout: 5000, message: 'the old key to work after restart' });
    assert.equal(res.choices[0].message.content, fixtureReply(body));
    await stopRun(p, 'SIGTERM');
  });
});

test('a child that dies stops the rest; run.sh exits non-zero with its log', () => withRun(async (p) => {
  const { execFileSync } = await import('node:child_process');
  const kids = execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(p.pid)], { encoding: 'utf8' });
  const line = kids.split('\n').find((l) => /controld/.test(l));
  assert.ok(line, `no controld child of run.sh in:\n${kids}`);
  process.kill(Number(line.trim().split(/\s+/)[0]), 'SIGKILL');
  const r = await Promise.race([p.done, idle(60_000).then(() => ({ timeout: true }))]);
  assert.ok(!r.timeout, 'run.sh did not notice controld dying');
  assert.notEqual(r.code, 0, `run.sh exit ${JSON.stringify(r)}`);
  assert.match(p.errors(), /controld exited unexpectedly/);
  assert.equal(await portOpen(proxyPort), false, 'nginx left running');
}));
