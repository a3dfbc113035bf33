// Test harness: starts a whole Spendpol stack for one test file on free
// loopback ports in a temp data dir -- private PostgreSQL and Redis,
// controld, nginx with the module, and the fixture OpenAI provider -- using
// the same shell pieces as `make run` (scripts/stack.sh).
//
//   import { useStack } from './lib/stack.mjs';
//   const s = useStack();            // registers before/after hooks
//   test('x', async () => { const key = await s.createKey(); ... });
//
// After the file's tests it stops everything and fails if nginx's error.log
// or controld's stderr has [alert], [emerg], AddressSanitizer or
// "runtime error:", or if any sanitizer log file was written.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startFixture } from '../../fixtures/openai-fixture.mjs';

const execFileP = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = process.env.SPENDPOL_REPO_ROOT || path.resolve(here, '../../..');
export const BUILD = path.resolve(REPO, process.env.SPENDPOL_BUILD_DIR || 'build');
const STACK_SH = path.join(REPO, 'scripts/stack.sh');
export const IS_SAN = /(^|\/)san\/?$/.test(BUILD) || process.env.SPENDPOL_SANITIZE === '1';
const SLOW = IS_SAN ? 3 : 1;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** like sleep, but does not keep the process alive (for races against a timeout) */
const idle = (ms) => new Promise((r) => setTimeout(r, ms).unref());

/** A fresh Spendpol-style key: sp_key_ + 48 lowercase hex. */
export function newKey() { return `sp_key_${crypto.randomBytes(24).toString('hex')}`; }

/**
 * A free loopback port below the kernel's ephemeral range (32768+), so
 * outgoing connections do not grab it between choosing and binding.
 */
export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 10000 + Math.floor(Math.random() * 22000);
    const ok = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port');
}

/** Runs start(port) with fresh ports while it fails because the port was taken. */
async function withPortRetry(name, start, onRetry = () => {}) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      await start(port);
      return port;
    } catch (e) {
      if (attempt >= 4 || !/in use|EADDRINUSE|could not bind|bind\(\)|Address already/i.test(String(e?.message))) throw e;
      process.stderr.write(`[stack] ${name}: port ${port} was taken, retrying\n`);
      onRetry(port);
    }
  }
}

/** Polls fn until it returns a truthy value; returns it. Throws on timeout. */
export async function waitFor(fn, { timeout = 5000, interval = 50, message = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { lastErr = e; }
    if (Date.now() > end) {
      const why = lastErr ? ` (last error: ${lastErr.message})` : ` (last value: ${JSON.stringify(last)?.slice(0, 300)})`;
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${why}`);
    }
    await sleep(interval);
  }
}

function tail(file, n = 30) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n - 1).join('\n');
  } catch { return `(no ${file})`; }
}

async function sh(args, env = {}) {
  try {
    const { stdout } = await execFileP('bash', [STACK_SH, ...args], {
      env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 4 << 20,
    });
    return stdout.trim();
  } catch (e) {
    throw new Error(`stack.sh ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/**
 * Sends signal to a child every second (one that arrives before the process
 * has its handlers is lost) for up to secs, then SIGKILLs it and its own
 * children (nginx workers outlive a SIGKILLed master).
 */
async function stopChild(c, signal, secs) {
  if (!c || c.exitInfo) return c?.exitInfo;
  if (signal === 'SIGKILL') { c.kill('SIGKILL'); return c.exited; }
  for (let i = 0; i < secs; i++) {
    c.kill(signal);
    const r = await Promise.race([c.exited, idle(1000).then(() => null)]);
    if (r) return r;
  }
  let kids = [];
  try {
    kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(c.pid)], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number);
  } catch { /* none */ }
  process.stderr.write(`[stack] pid ${c.pid} ignored ${signal} for ${secs} s: killing it and ${kids.length} children\n`);
  c.kill('SIGKILL');
  for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch { /* gone */ } }
  return c.exited;
}

const PROBLEM = /\[alert\]|\[emerg\]|AddressSanitizer|LeakSanitizer|runtime error:/;

export class Stack {
  constructor(opts = {}) {
    this.opts = opts;
    this.children = new Set();
    this.failed = false;
    this.stopped = false;
  }

  /**
   * A node that joins first's database, Redis and master key, as
   * `make run` starts a node that joins an existing database. Start it
   * after first; stop it before first (first owns PostgreSQL and Redis).
   */
  static join(first, opts = {}) {
    return new Stack({ ...opts, join: first });
  }

  /** SIGKILL to the nginx master and every worker: the node's proxy is gone at once. */
  killNginx() {
    // the master stopped first: killed workers are not replaced meanwhile
    // (a replacement would outlive the master and keep the port)
    const master = this.nginxMasterPid();
    try { process.kill(master, 'SIGSTOP'); } catch { /* gone */ }
    const pids = [...this.nginxWorkerPids(), master];
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    return pids;
  }

  async start() {
    if (this.opts.join) {
      // first's settings, read now that it has started
      const first = this.opts.join;
      this.opts = {
        databaseURL: first.databaseURL,
        apiDatabaseURL: first.apiDatabaseURL,
        ownerDatabaseURL: first.ownerDatabaseURL,
        redisURL: first.redisURL,
        adminKey: first.adminKey,
        masterKey: fs.readFileSync(path.join(first.dataDir, 'controld', 'master.key'), 'utf8').trim(),
        ...this.opts,
        join: undefined,
      };
    }
    const o = this.opts;
    const base = process.env.SPENDPOL_TEST_TMP || os.tmpdir();
    this.dataDir = fs.mkdtempSync(path.join(base, 'spendpol-it-'));
    fs.chmodSync(this.dataDir, 0o755);
    this.logs = path.join(this.dataDir, 'logs');
    fs.mkdirSync(this.logs, { recursive: true });
    this.snapshotDir = await sh(['snapshot-dir', this.dataDir]);
    this._exitHook = () => this._killSync();
    process.on('exit', this._exitHook);

    this.region = o.region || 'test-region-1';

    this.fixture = await startFixture();

    // a second node shares the first one's database (the three URLs),
    // Redis and master key. databaseURL: controld's runtime role
    // (spendpol_system); apiDatabaseURL: the admin API's tenant role
    // (spendpol_app); ownerDatabaseURL: the tables' owner, for migrations
    // and for tests that inspect or change tables with psql.
    this.databaseURL = o.databaseURL || process.env.SPENDPOL_TEST_DATABASE_URL;
    this.apiDatabaseURL = o.apiDatabaseURL || process.env.SPENDPOL_TEST_API_DATABASE_URL;
    this.ownerDatabaseURL = o.ownerDatabaseURL || process.env.SPENDPOL_TEST_OWNER_DATABASE_URL;
    if (this.databaseURL && !this.ownerDatabaseURL) {
      // one external URL: migrations and serving share a role that owns
      // the tables, which controld accepts only when told to
      this.ownerDatabaseURL = this.databaseURL;
      this.databaseInsecure = true;
    }
    if (this.databaseURL && !this.apiDatabaseURL) {
      // an external runtime URL without a tenant one: both pools share
      // a role that can become spendpol_app and spendpol_system
      this.databaseInsecure = true;
    }
    if (!this.databaseURL) {
      this.ownPg = true;
      this.pgPort = await withPortRetry('postgres', async (port) => {
        try {
          await sh(['pg-start', this.dataDir, String(port)], { SPENDPOL_PG_FAST: '1' });
        } catch (e) {
          // pg_ctl's message does not say why; its log does
          throw new Error(`${e.message}\n${tail(path.join(this.logs, 'postgres.log'), 10)}`);
        }
      });
      this.databaseURL = await sh(['pg-url', this.dataDir, String(this.pgPort)]);
      this.apiDatabaseURL = await sh(['pg-api-url', this.dataDir, String(this.pgPort)]);
      this.ownerDatabaseURL = await sh(['pg-owner-url', this.dataDir, String(this.pgPort)]);
    }
    this.redisURL = o.redisURL || process.env.SPENDPOL_TEST_REDIS_URL;
    if (!this.redisURL) {
      this.ownRedis = true;
      this.redisPort = await withPortRetry('redis', (port) => sh(['redis-start', this.dataDir, String(port)]));
      this.redisURL = `redis://127.0.0.1:${this.redisPort}`;
    }

    this.adminKey = o.adminKey === null ? null : (o.adminKey || newKey());
    this.apiPort = await withPortRetry('controld', async (port) => {
      this.apiPort = port;
      await this.startControld();
    });
    this.apiURL = `http://127.0.0.1:${this.apiPort}`;
    this.proxyPort = await withPortRetry('nginx', async (port) => {
      this.proxyPort = port;
      await this.startNginx();
    }, (port) => {
      // the failed bind's [emerg] is not a finding
      const log = path.join(this.logs, 'error.log');
      if (fs.existsSync(log)) fs.renameSync(log, path.join(this.logs, `error.log.bind-${port}`));
    });
    if (o.provider !== false) await this.setProvider();
    return this;
  }

  _env() {
    const env = { ...process.env, SPENDPOL_REGION: this.region };
    // the fixture providers and webhook sinks listen on loopback, under
    // *.test names from the DNS fixture; opts.upstreamAllow: null for the
    // default (public https only)
    delete env.SPENDPOL_UPSTREAM_ALLOW;
    const allow = this.opts.upstreamAllow === undefined ? '127.0.0.0/8,::1/128,*.test' : this.opts.upstreamAllow;
    if (allow !== null) env.SPENDPOL_UPSTREAM_ALLOW = allow;
    delete env.SPENDPOL_ADMIN_KEY;
    if (this.adminKey) env.SPENDPOL_ADMIN_KEY = this.adminKey;
    if (this.opts.maxBodySize) env.SPENDPOL_MAX_BODY_SIZE = this.opts.maxBodySize;
    if (this.opts.masterKey) env.SPENDPOL_MASTER_KEY = this.opts.masterKey;
    if (this.opts.journal) env.SPENDPOL_JOURNAL = this.opts.journal;
    // A lease top-up is one PostgreSQL transaction away; on a 2-core test
    // machine running three stacks (and ASan) at once that can take longer
    // than the 50 ms default, which the budget tests prove when run alone.
    // Tests of the wait itself set their own.
    const http = this.opts.nginxHttp ?? '';
    env.SPENDPOL_NGINX_HTTP = /spendpol_lease_wait/.test(http) ? http : `spendpol_lease_wait 250ms; ${http}`;
    Object.assign(env, this.opts.env);   // e.g. SPENDPOL_LEASE_TTL_MS
    delete env.SPENDPOL_MIGRATE_DATABASE_URL;
    delete env.SPENDPOL_DATABASE_INSECURE;
    delete env.SPENDPOL_API_DATABASE_URL;
    if (this.apiDatabaseURL) env.SPENDPOL_API_DATABASE_URL = this.apiDatabaseURL;
    if (this.ownerDatabaseURL !== this.databaseURL) env.SPENDPOL_MIGRATE_DATABASE_URL = this.ownerDatabaseURL;
    if (this.databaseInsecure) env.SPENDPOL_DATABASE_INSECURE = '1';
    for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LD_PRELOAD']) delete env[k];
    return env;
  }

  _spawn(name, args) {
    const out = fs.openSync(path.join(this.logs, `${name}.out`), 'a');
    const err = fs.openSync(path.join(this.logs, `${name}.err`), 'a');
    const child = spawn('bash', [STACK_SH, ...args], {
      env: this._env(), stdio: ['ignore', 'pipe', err], detached: false,
    });
    fs.closeSync(err);
    child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
      this.children.delete(child);
      child.exitInfo = { code, signal };
      resolve(child.exitInfo);
    }));
    child.stdout.on('data', (d) => fs.writeSync(out, d));
    child.stdout.on('end', () => { try { fs.closeSync(out); } catch { /* closed */ } });
    this.children.add(child);
    return child;
  }

  /** Starts controld and waits for its ready line. */
  async startControld() {
    this.apiURL = `http://127.0.0.1:${this.apiPort}`;
    const c = this._spawn('controld', ['controld-exec', this.dataDir, BUILD, `127.0.0.1:${this.apiPort}`, this.databaseURL, this.redisURL]);
    this.controld = c;
    let buf = '';
    const ready = new Promise((resolve, reject) => {
      c.stdout.on('data', (d) => {
        buf += d.toString('utf8');
        const k = /admin key: (sp_key_[0-9a-f]+)/.exec(buf);
        if (k && !this.adminKey) this.adminKey = k[1];
        const m = /controld ready api=(\S+) generation=(\d+)/.exec(buf);
        if (m) resolve({ api: m[1], generation: Number(m[2]) });
      });
      c.exited.then((x) => reject(new Error(
        `controld exited (${JSON.stringify(x)}) before its ready line\n--- stdout\n${buf.slice(-2000)}\n--- stderr\n${tail(path.join(this.logs, 'controld.err'))}`)));
    });
    const t = idle(60_000 * SLOW).then(() => { throw new Error(`controld not ready after ${60 * SLOW} s\n${tail(path.join(this.logs, 'controld.err'))}`); });
    this.controldReady = await Promise.race([ready, t]);
    if (!this.adminKey) {
      const f = path.join(this.dataDir, 'controld', 'admin.key');
      if (fs.existsSync(f)) this.adminKey = fs.readFileSync(f, 'utf8').trim();
    }
    return this.controldReady;
  }

  /** Stops controld with the given signal and waits for it to exit. */
  async stopControld(signal = 'SIGTERM') {
    return stopChild(this.controld, signal, 15 * SLOW);
  }

  async restartControld({ signal = 'SIGKILL' } = {}) {
    await this.stopControld(signal);
    return this.startControld();
  }

  async startNginx() {
    this.proxyURL = `http://127.0.0.1:${this.proxyPort}`;
    this.openaiBaseURL = `${this.proxyURL}/v1/openai`;
    await sh(['nginx-conf', this.dataDir, BUILD, `127.0.0.1:${this.proxyPort}`], this._env());
    const n = this._spawn('nginx', ['nginx-exec', this.dataDir, BUILD]);
    this.nginx = n;
    let dead = null;
    n.exited.then((x) => { dead = x; });
    await waitFor(async () => {
      if (dead) {
        throw Object.assign(new Error(`nginx exited ${JSON.stringify(dead)}\n${tail(path.join(this.logs, 'error.log'))}\n${tail(path.join(this.logs, 'nginx.err'))}`), { fatal: true });
      }
      try {
        const r = await fetch(`${this.proxyURL}/healthz`);
        await r.arrayBuffer();
        return r.status > 0;
      } catch { return false; }
    }, { timeout: 30_000 * SLOW, interval: 100, message: 'nginx to answer' }).catch((e) => {
      if (dead) throw new Error(`nginx exited ${JSON.stringify(dead)}\n${tail(path.join(this.logs, 'error.log'))}\n${tail(path.join(this.logs, 'nginx.err'))}`);
      throw e;
    });
  }

  async stopNginx(signal = 'SIGQUIT') {
    return stopChild(this.nginx, signal, 10 * SLOW);
  }

  // ------------------------------------------------------------ faults
  // (used by tests/faults; additive: nothing above calls these)

  /** The journal nginx appends to and controld tails (opts.journal, else the data dir's). */
  get journalPath() {
    return this.opts.journal || path.join(this.dataDir, 'journal', 'journal.log');
  }

  /** pid of the nginx master, from its pid file (falls back to the child's pid). */
  nginxMasterPid() {
    try {
      const pid = Number(fs.readFileSync(path.join(this.dataDir, 'nginx', 'nginx.pid'), 'utf8').trim());
      if (pid > 0) return pid;
    } catch { /* no pid file yet */ }
    return this.nginx?.pid;
  }

  /**
   * What `nginx -s reload|reopen|quit|stop` does: the signal to the master
   * (HUP, USR1, QUIT, TERM). Returns the master's pid.
   */
  nginxSignal(what) {
    const sig = { reload: 'SIGHUP', reopen: 'SIGUSR1', quit: 'SIGQUIT', stop: 'SIGTERM' }[what] ?? what;
    const pid = this.nginxMasterPid();
    process.kill(pid, sig);
    return pid;
  }

  /** pids of the nginx master's worker processes (ps --ppid). */
  nginxWorkerPids() {
    try {
      return execFileSync('ps', ['-o', 'pid=', '--ppid', String(this.nginxMasterPid())], { encoding: 'utf8' })
        .split(/\s+/).filter(Boolean).map(Number);
    } catch { return []; }
  }

  /** Stops the stack's own PostgreSQL (pg_ctl stop -m fast). */
  async stopPostgres() {
    if (!this.ownPg) throw new Error('stopPostgres: this stack uses a shared database');
    await sh(['pg-stop', this.dataDir]);
  }

  /** Starts the stack's own PostgreSQL again on the same port. */
  async startPostgres() {
    if (!this.ownPg) throw new Error('startPostgres: this stack uses a shared database');
    await sh(['pg-start', this.dataDir, String(this.pgPort)], { SPENDPOL_PG_FAST: '1' });
  }

  /** Stops PostgreSQL, waits downMs, starts it again on the same port. */
  async restartPostgres({ downMs = 0 } = {}) {
    await this.stopPostgres();
    if (downMs) await sleep(downMs);
    await this.startPostgres();
  }

  async stopRedis() {
    if (!this.ownRedis) throw new Error('stopRedis: this stack uses a shared Redis');
    await sh(['redis-stop', this.dataDir]);
  }

  async startRedis() {
    if (!this.ownRedis) throw new Error('startRedis: this stack uses a shared Redis');
    await sh(['redis-start', this.dataDir, String(this.redisPort)]);
  }

  /** Stops Redis, waits downMs, starts it again on the same port. */
  async restartRedis({ downMs = 0 } = {}) {
    await this.stopRedis();
    if (downMs) await sleep(downMs);
    await this.startRedis();
  }

  // ------------------------------------------------------------ admin API

  /** fetch against the admin API; key defaults to the admin key (null: none). */
  async api(method, p, { body, key, headers = {} } = {}) {
    const h = { ...headers };
    const k = key === undefined ? this.adminKey : key;
    if (k) h.authorization = `Bearer ${k}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(`${this.apiURL}${p}`, {
      method, headers: h, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: r.status, headers: r.headers, json, text };
  }

  /** PUT /providers/openai, by default pointing at the fixture. */
  async setProvider(cfg = {}) {
    const body = { api_key: 'sk-fixture-secret', base_url: this.fixture.url, ...cfg };
    const r = await this.api('PUT', `/providers/${cfg.name || 'openai'}`, { body: { api_key: body.api_key, base_url: body.base_url } });
    assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/openai -> ${r.status} ${r.text}`);
    return r.json;
  }

  /**
   * POST /api-keys; returns the JSON (id, key, ...). Waits (by default) until
   * the proxy accepts the key, i.e. a snapshot carrying it is published.
   */
  async createKey(body = {}, { wait = true } = {}) {
    const r = await this.api('POST', '/api-keys', { body: { name: `test-${crypto.randomBytes(3).toString('hex')}`, ...body } });
    assert.equal(r.status, 201, `POST /api-keys -> ${r.status} ${r.text}`);
    assert.match(r.json?.key ?? '', /^sp_key_[0-9a-f]{48}$/, `key in ${r.text}`);
    assert.ok(r.json.id, `id in ${r.text}`);
    if (wait) await this.waitKeyAccepted(r.json.key);
    return r.json;
  }

  /**
   * Status the proxy gives a key, without reaching the provider: a
   * malformed body is refused (400) after authentication (401 first).
   */
  async proxyAuthStatus(key) {
    const r = await fetch(`${this.openaiBaseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: '{"model": ',
    });
    await r.arrayBuffer();
    return r.status;
  }

  async waitKeyAccepted(key, timeout = 5000 * SLOW) {
    return waitFor(async () => (await this.proxyAuthStatus(key)) !== 401, { timeout, interval: 50, message: 'the proxy to accept a new key' });
  }

  async waitKeyRejected(key, timeout = 2000) {
    return waitFor(async () => (await this.proxyAuthStatus(key)) === 401, { timeout, interval: 50, message: 'the proxy to reject a key' });
  }

  /**
   * Waits until pred(await fn()) holds for `times` answers in a row, each on a
   * new connection (so every nginx worker is asked), e.g. after a change that
   * every worker must pick up from a new snapshot. Returns the last answer.
   */
  async waitStable(fn, pred, { times = 8, timeout = 5000 * SLOW, message = 'a stable answer' } = {}) {
    const end = Date.now() + timeout;
    let streak = 0;
    let last;
    for (;;) {
      last = await fn();
      streak = pred(last) ? streak + 1 : 0;
      if (streak >= times) return last;
      if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${JSON.stringify(last?.status ?? last)?.slice(0, 200)})`);
      if (!streak) await sleep(50);
    }
  }

  /** The official openai client pointed at the proxy with a Spendpol key. */
  client(key, opts = {}) {
    return new OpenAI({ baseURL: this.openaiBaseURL, apiKey: key, maxRetries: 0, timeout: 20_000 * SLOW, ...opts });
  }

  /** GET /audit-logs with query params; returns the parsed JSON. */
  async auditLogs(params = {}) {
    const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, String(v)]));
    const qs = q.toString();
    const r = await this.api('GET', `/audit-logs${qs ? `?${qs}` : ''}`);
    assert.equal(r.status, 200, `GET /audit-logs -> ${r.status} ${r.text}`);
    return r.json;
  }

  /** Every audit row, following the cursor. */
  async allAuditRows({ limit = 100 } = {}) {
    const rows = [];
    let cursor;
    for (let i = 0; i < 1000; i++) {
      const page = await this.auditLogs({ limit, cursor });
      const data = auditRowsOf(page);
      rows.push(...data);
      cursor = nextCursorOf(page);
      if (!cursor || data.length === 0) break;
    }
    return rows;
  }

  /** Waits until GET /audit-logs has a row with this id; returns it. */
  async waitAuditRow(id, timeout = 10_000 * SLOW) {
    return waitFor(async () => (await this.allAuditRows()).find((r) => r.id === id),
      { timeout, interval: 100, message: `audit row ${id}` });
  }

  /** Waits until GET /audit-logs has a row for each of ids; returns those rows. */
  async waitAuditRows(ids, timeout = 20_000) {
    const want = new Set(ids);
    let rows = [];
    await waitFor(async () => {
      rows = (await this.allAuditRows({ limit: 1000 })).filter((r) => want.has(r.id));
      return rows.length === want.size;
    }, { timeout, message: `${want.size} audit rows` });
    return rows;
  }

  // ------------------------------------------------------------ teardown

  /** Problems found in the logs: [alert], [emerg], sanitizer reports. */
  logProblems() {
    const problems = [];
    for (const f of ['error.log', 'controld.err', 'nginx.err']) {
      const p = path.join(this.logs, f);
      if (!fs.existsSync(p)) continue;
      const lines = fs.readFileSync(p, 'utf8').split('\n');
      lines.forEach((l, i) => {
        if (PROBLEM.test(l)) problems.push(`${f}:${i + 1}: ${l}\n${lines.slice(i + 1, i + 12).join('\n')}`);
      });
    }
    // nginx workers (not root) write theirs in logs/san
    for (const dir of [this.logs, path.join(this.logs, 'san')]) {
      for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
        if (/^(asan|ubsan)\./.test(f)) {
          problems.push(`${f}:\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(0, 6000)}`);
        }
      }
    }
    return problems;
  }

  async stop() {
    if (this.stopped) return [];
    this.stopped = true;
    await this.stopNginx('SIGQUIT').catch(() => {});
    await this.stopControld('SIGTERM').catch(() => {});
    if (this.ownRedis) await sh(['redis-stop', this.dataDir]).catch(() => {});
    if (this.ownPg) await sh(['pg-stop', this.dataDir]).catch(() => {});
    await this.fixture?.close().catch(() => {});
    process.removeListener('exit', this._exitHook);
    const problems = this.logProblems();
    if (problems.length || this.failed || process.env.SPENDPOL_KEEP_DATA === '1') {
      process.stderr.write(`[stack] data dir kept: ${this.dataDir}\n`);
    } else {
      fs.rmSync(this.dataDir, { recursive: true, force: true });
    }
    if (this.snapshotDir?.includes('spendpol-')) fs.rmSync(this.snapshotDir, { recursive: true, force: true });
    return problems;
  }

  _killSync() {
    for (const c of this.children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    for (const cmd of [this.ownRedis && 'redis-stop', this.ownPg && 'pg-stop'].filter(Boolean)) {
      try { execFileSync('bash', [STACK_SH, cmd, this.dataDir], { stdio: 'ignore', timeout: 30_000 }); } catch { /* best effort */ }
    }
  }
}

/** Rows of an /audit-logs page, whatever the envelope ({data:[...]} or [...]). */
export function auditRowsOf(page) {
  if (Array.isArray(page)) return page;
  for (const k of ['data', 'items', 'audit_logs', 'rows']) if (Array.isArray(page?.[k])) return page[k];
  return [];
}

export function nextCursorOf(page) {
  return page?.next_cursor ?? page?.cursor ?? page?.next ?? null;
}

/**
 * A keyset-paged list route (path may carry filters, e.g. '/agents?state=
 * paused'): limit=1 twice, following next_cursor, gives the rows of one
 * limit=2 page; a page holding the last row has next_cursor null; a bad
 * limit or cursor is 400 invalid_limit / invalid_cursor, checked in that
 * order, with the route's own filter (badFilter, e.g. 'state=bogus')
 * checked between them. Returns the ids of the two newest rows.
 */
export async function assertPaged(s, route, { badFilter } = {}) {
  const get = (query) => s.api('GET', `${route}${route.includes('?') ? '&' : '?'}${query}`);
  const ok = async (query) => {
    const r = await get(query);
    assert.equal(r.status, 200, `GET ${route} ${query}: ${r.text}`);
    assert.deepEqual(Object.keys(r.json), ['data', 'next_cursor'], `GET ${route} ${query}: ${r.text}`);
    return r.json;
  };
  const refused = async (query, code, field, message) => {
    const r = await get(query);
    assert.equal(r.status, 400, `GET ${route} ${query}: ${r.text}`);
    if (message === undefined) {
      assert.equal(r.json?.error?.code, code, `GET ${route} ${query}: ${r.text}`);
    } else {
      assert.deepEqual(r.json, { error: { type: 'invalid_request_error', code, message, field } },
        `GET ${route} ${query}`);
    }
  };
  const ids = (page) => page.data.map((row) => row.id);

  const two = await ok('limit=2');
  assert.equal(two.data.length, 2, `GET ${route} limit=2 needs two rows: ${JSON.stringify(two)}`);
  const first = await ok('limit=1');
  assert.deepEqual(ids(first), ids(two).slice(0, 1));
  assert.match(first.next_cursor ?? '', /^[A-Za-z0-9_-]+$/, `next_cursor of ${JSON.stringify(first)}`);
  const second = await ok(`limit=1&cursor=${first.next_cursor}`);
  assert.deepEqual(ids(second), ids(two).slice(1, 2));
  const all = await ok('limit=1000');
  assert.equal(all.next_cursor, null, 'the last page has next_cursor null');
  assert.deepEqual(ids(all).slice(0, 2), ids(two));

  const badCursor = 'bm90LWEtY3Vyc29y';     /* "not-a-cursor": no ':' */
  const cursorMessage = 'cursor must be a next_cursor value from a previous page';
  const limitMessage = 'limit must be an integer from 1 to 1000';
  await refused(`cursor=${badCursor}`, 'invalid_cursor', 'cursor', cursorMessage);
  await refused('limit=1&cursor=%21', 'invalid_cursor', 'cursor', cursorMessage);
  await refused('limit=0', 'invalid_limit', 'limit', limitMessage);
  await refused('limit=1001', 'invalid_limit', 'limit', limitMessage);
  await refused('limit=x1', 'invalid_limit', 'limit', limitMessage);
  await refused(`limit=0&cursor=${badCursor}`, 'invalid_limit', 'limit', limitMessage);
  if (badFilter) {
    await refused(`limit=0&${badFilter}`, 'invalid_limit', 'limit', limitMessage);
    await refused(`${badFilter}&cursor=${badCursor}`, 'invalid_filter');
  }
  return ids(two);
}

/** Starts a stack before the file's tests and stops (and checks) it after. */
export function useStack(opts = {}) {
  const s = new Stack(opts);
  before(async () => {
    try {
      await s.start();
    } catch (e) {
      s.failed = true;
      throw e;
    }
  }, { timeout: 180_000 * SLOW });
  after(async () => {
    // keep the process alive until the checks are done, whatever stop() awaits
    const alive = setInterval(() => {}, 1000);
    let problems;
    try { problems = await s.stop(); } finally { clearInterval(alive); }
    if (problems.length) {
      assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
    }
  }, { timeout: 120_000 });
  return s;
}

/**
 * n nodes (nginx + controld each) sharing the first one's PostgreSQL and
 * Redis (Stack.join), started before the file's tests and stopped, the
 * joining ones first, after them.
 */
export function useNodes(n, opts = {}) {
  const nodes = [new Stack(opts)];
  for (let i = 1; i < n; i++) nodes.push(Stack.join(nodes[0], opts));
  const started = [];
  before(async () => {
    for (const node of nodes) {
      started.push(node);
      await node.start();
    }
  }, { timeout: 120_000 * n * SLOW });
  after(async () => {
    const alive = setInterval(() => {}, 1000);
    const problems = [];
    try {
      for (const node of started.reverse()) problems.push(...await node.stop());
    } finally {
      clearInterval(alive);
    }
    assert.deepEqual(problems, [], `problems in the nodes' logs (${nodes.map((x) => x.dataDir).join(', ')})`);
  }, { timeout: 120_000 });
  return nodes;
}

/** Parsed X-Spendpol-* headers of a Response / Headers. */
export function spendpolHeaders(h) {
  const headers = h.headers ?? h;
  const g = (n) => headers.get(n);
  return {
    cost: g('x-spendpol-cost'),
    model: g('x-spendpol-model'),
    tokens: g('x-spendpol-tokens'),
    auditId: g('x-spendpol-audit-id'),
    traceId: g('x-spendpol-trace-id'),
    spanId: g('x-spendpol-span-id'),
    latencyMs: g('x-spendpol-latency-ms'),
    region: g('x-spendpol-region'),
  };
}

/** nano-USD -> the decimal USD string the gateway prints (6 decimals). */
export function nanoToUsd(nano, decimals = 6) {
  const n = BigInt(nano);
  const scale = 10n ** BigInt(9 - decimals);
  // round half up to `decimals`
  const q = (n + scale / 2n) / scale;
  const s = q.toString().padStart(decimals + 1, '0');
  return `${s.slice(0, -decimals)}.${s.slice(-decimals)}`;
}

/** A USD decimal string -> nano-USD (exact for up to 9 decimals). */
export function usdToNano(usd) {
  const m = /^(\d+)(?:\.(\d{1,9}))?$/.exec(String(usd));
  if (!m) throw new Error(`not a USD decimal: ${usd}`);
  return BigInt(m[1]) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

// Seeded list prices (USD per 1M tokens), as migrations seed them.
export const PRICES = {
  'gpt-4o-mini': { input: 0.15, cachedInput: 0.075, output: 0.60 },
};

/**
 * Expected cost in nano-USD: uncached input at the input price, cached input
 * at the cached price, output at the output price. Prices per 1M tokens in
 * USD -> nano-USD per token = price * 1000.
 */
export function expectedCostNano(model, usage) {
  const p = PRICES[model];
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  const perTok = (usd) => BigInt(Math.round(usd * 1000));
  return BigInt(usage.prompt_tokens - cached) * perTok(p.input)
    + BigInt(cached) * perTok(p.cachedInput)
    + BigInt(usage.completion_tokens) * perTok(p.output);
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A raw HTTP request with node:http that still returns the response when
 * the server answers (e.g. 413) before the whole body was sent.
 */
export function rawRequest(url, { method = 'POST', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const buf = body === undefined ? null : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (buf) h['content-length'] = buf.length;
    let settled = false;
    // the path exactly as written: URL() would resolve "%2e%2e" segments
    const rawPath = url.slice(url.indexOf('/', url.indexOf('//') + 2)) || '/';
    const req = http.request({ host: u.hostname, port: u.port, path: rawPath, method, headers: h }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        settled = true;
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch { json = null; }
        resolve({ status: res.statusCode, headers: new Headers(Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)])), text, json });
      });
      res.on('error', (e) => { if (!settled) { settled = true; reject(e); } });
    });
    req.on('error', (e) => {
      // EPIPE/ECONNRESET while still sending: the response may already be on its way
      setTimeout(() => { if (!settled) { settled = true; reject(e); } }, 500);
    });
    if (buf) req.end(buf); else req.end();
  });
}

/** Asserts a gateway error: given status, JSON {"error":{"type","code","message"}}. */
export function assertJsonError(res, status, what = '') {
  assert.equal(res.status, status, `${what}: status ${res.status}, body ${res.text?.slice(0, 500)}`);
  const ct = res.headers.get('content-type') || '';
  assert.match(ct, /application\/json/, `${what}: content-type ${ct}`);
  assert.ok(res.json && typeof res.json.error === 'object', `${what}: not a JSON error: ${res.text?.slice(0, 500)}`);
  const e = res.json.error;
  assert.equal(typeof e.type, 'string', `${what}: error.type in ${res.text}`);
  assert.ok('code' in e, `${what}: error.code in ${res.text}`);
  assert.equal(typeof e.message, 'string', `${what}: error.message in ${res.text}`);
  assert.ok(e.message.length > 0, `${what}: empty error.message`);
  return e;
}
