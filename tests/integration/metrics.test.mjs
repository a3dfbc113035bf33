// controld's GET /metrics (docs/metrics.md): who may read it, text a strict
// parser accepts, and counters that move by exactly what happened between
// two scrapes: admin requests by route pattern and status, rows ingested,
// snapshot publishes, webhook deliveries.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, spendpolHeaders, newKey } from './lib/stack.mjs';

const TOKEN = crypto.randomBytes(32).toString('hex');
const s = useStack({ env: { SPENDPOL_METRICS_TOKEN: TOKEN } });

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const HELP_RE = new RegExp(`^# HELP (${NAME}) .*$`);
const TYPE_RE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram)$`);
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*)\\})? (\\S+)$`);
const VALUE_RE = /^(?:[+-]Inf|NaN|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)$/;

/**
 * The exposition text, strictly: every line a HELP, a TYPE (once per
 * family, before its samples) or a sample `name{labels} value` of a
 * declared family; counters end in _total; a histogram's buckets rise
 * with le, end with +Inf and its _count repeats +Inf; no series twice.
 * Returns Map(series text -> number) and the families' types.
 */
function parseMetrics(text) {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const types = new Map();
  const series = new Map();
  let bucket = null;   // { key, value, inf }
  for (const line of text.slice(0, -1).split('\n')) {
    let m;
    if ((m = HELP_RE.exec(line))) {
      assert.ok(!types.has(m[1]), `HELP after TYPE for ${m[1]}`);
      continue;
    }
    if ((m = TYPE_RE.exec(line))) {
      assert.ok(!types.has(m[1]), `TYPE twice for ${m[1]}`);
      types.set(m[1], m[2]);
      continue;
    }
    m = SAMPLE_RE.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const [, name, labels = '', value] = m;
    assert.match(value, VALUE_RE, line);
    let family = name;
    let part = '';
    if (!types.has(name)) {
      const h = /^(.*)_(bucket|sum|count)$/.exec(name);
      assert.ok(h && types.get(h[1]) === 'histogram', `sample of an undeclared family: ${line}`);
      family = h[1];
      part = h[2];
    } else {
      assert.notEqual(types.get(name), 'histogram', `bare histogram sample: ${line}`);
    }
    if (types.get(family) === 'counter') assert.match(name, /_total$/, line);
    const key = labels ? `${name}{${labels}}` : name;
    assert.ok(!series.has(key), `series twice: ${key}`);
    const v = Number(value);
    series.set(key, v);
    if (part === 'bucket') {
      const le = /(?:^|,)le="([^"]*)"$/.exec(labels);
      assert.ok(le, `bucket without le last: ${line}`);
      const rest = labels.slice(0, le.index);
      const k = `${family}{${rest}}`;
      if (bucket && bucket.key === k) {
        assert.ok(v >= bucket.value, `buckets fall: ${line}`);
      } else {
        assert.ok(!bucket || bucket.inf !== null, `a histogram without +Inf before ${line}`);
      }
      bucket = { key: k, value: v, inf: le[1] === '+Inf' ? v : null };
    } else if (part === 'count') {
      assert.ok(bucket && bucket.key === `${family}{${labels}}` && bucket.inf === v,
        `_count is not the +Inf bucket: ${line}`);
    }
  }
  return { series, types };
}

async function scrape(key = TOKEN) {
  const r = await s.api('GET', '/metrics', { key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return parseMetrics(r.text).series;
}

const get = (m, k) => m.get(k) ?? 0;
const req = (route, method, status) =>
  `spendpol_controld_http_requests_total{route="${route}",method="${method}",status="${status}"}`;

function sql(query) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

/** an admin key of a second organisation (the API makes none) */
function otherOrganisationKey() {
  const org = `org_metrics_${crypto.randomBytes(4).toString('hex')}`;
  const key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'metrics B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'metrics B admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);
  return key;
}

test('the token or an operator key reads /metrics; the token opens nothing else', async () => {
  const none = await s.api('GET', '/metrics', { key: null });
  assert.equal(none.status, 401, none.text);
  assert.equal(none.json.error.code, 'missing_api_key');

  const wrong = await s.api('GET', '/metrics', { key: `${TOKEN.slice(0, -4)}abcd` });
  assert.equal(wrong.status, 401, wrong.text);
  assert.ok(!wrong.text.includes(TOKEN.slice(0, 16)), 'a refused bearer is not echoed');

  await scrape(TOKEN);
  await scrape(s.adminKey);

  const { key } = await s.createKey({ name: 'metrics-not-admin' });
  assert.equal((await s.api('GET', '/metrics', { key })).status, 403);

  // an admin of the operator's own organisation without the operator scope
  const admin = await s.createKey({ name: 'metrics-admin-only', scopes: ['admin'] }, { wait: false });
  const refused = await s.api('GET', '/metrics', { key: admin.key });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.json.error.code, 'insufficient_scope');

  // every organisation's traffic is in them: another tenant's admin key may not
  const other = otherOrganisationKey();
  assert.equal((await s.api('GET', '/budgets', { key: other })).status, 200);
  const foreign = await s.api('GET', '/metrics', { key: other });
  assert.equal(foreign.status, 403, foreign.text);
  assert.equal(foreign.json.error.code, 'insufficient_scope');

  // the scraper's token is no admin key
  assert.equal((await s.api('GET', '/budgets', { key: TOKEN })).status, 401);
  assert.equal((await s.api('GET', '/healthz', { key: TOKEN })).status, 401);

  const text = (await s.api('GET', '/metrics', { key: TOKEN })).text;
  const { types } = parseMetrics(text);
  for (const family of [
    'spendpol_controld_http_requests_total', 'spendpol_controld_http_request_duration_seconds',
    'spendpol_controld_ingest_rows_total', 'spendpol_controld_ingest_lag_seconds',
    'spendpol_controld_ingest_behind_bytes', 'spendpol_controld_snapshot_generation',
    'spendpol_controld_snapshot_publish_duration_seconds',
    'spendpol_controld_snapshot_last_publish_timestamp_seconds',
    'spendpol_controld_webhook_deliveries_total', 'spendpol_controld_db_pool_connections',
    'spendpol_controld_db_pool_connections_in_use', 'spendpol_controld_db_pool_waits_total',
  ]) {
    assert.ok(types.has(family), `${family} is declared`);
  }
  for (const name of types.keys()) assert.match(name, /^spendpol_controld_/);
});

test('requests counted exactly by route pattern and status, never by raw path', async () => {
  const before = await scrape();

  for (let i = 0; i < 3; i++) assert.equal((await s.api('GET', '/budgets')).status, 200);
  const ids = ['bud_000000000000000000000001', 'bud_000000000000000000000002'];
  for (const id of ids) assert.equal((await s.api('GET', `/budgets/${id}`)).status, 404);
  const bad = await s.api('PATCH', `/budgets/${ids[0]}`, { body: { nope: 1 } });
  assert.ok(bad.status >= 400 && bad.status < 500, bad.text);
  assert.equal((await s.api('GET', '/no-such-route')).status, 404);
  assert.equal((await s.api('GET', '/no-such-route/xyz')).status, 404);
  assert.equal((await s.api('PUT', '/budgets')).status, 405);
  assert.equal((await s.api('GET', '/budgets', { key: null })).status, 401);

  const after = await scrape();
  const delta = (k) => get(after, k) - get(before, k);

  assert.equal(delta(req('/budgets', 'GET', '200')), 3);
  assert.equal(delta(req('/budgets', 'GET', '401')), 1);
  assert.equal(delta(req('/budgets/{id}', 'GET', '404')), 2);
  assert.equal(delta(req('/budgets/{id}', 'PATCH', String(bad.status))), 1);
  assert.equal(delta(req('unmatched', 'any', '404')), 2);
  assert.equal(delta(req('unmatched', 'any', '405')), 1);
  // the first scrape was counted once it was answered
  assert.equal(delta(req('/metrics', 'GET', '200')), 1);

  for (const k of after.keys()) {
    assert.ok(!k.includes('bud_0000') && !k.includes('no-such-route'), `raw path in ${k}`);
  }

  const count = (m) => get(m, 'spendpol_controld_http_request_duration_seconds_count{route="/budgets",method="GET"}');
  assert.equal(count(after) - count(before), 4);
});

test('ingest rows equal the rows in audit_logs; lag and bytes behind come back down', async () => {
  await s.setProvider();
  // createKey's probe through the proxy is journaled too: start once it is in
  const { key } = await s.createKey({ name: 'metrics-ingest' });
  const caughtUp = async () => {
    const m = await scrape();
    return get(m, 'spendpol_controld_ingest_behind_bytes') === 0
      && get(m, 'spendpol_controld_ingest_offset_bytes') === fs.statSync(s.journalPath).size ? m : null;
  };
  let before;
  await waitFor(async () => (before = await caughtUp()), { timeout: 10_000, message: 'ingest idle' });
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const { response } = await s.client(key).chat.completions.create({
      model: 'gpt-4o-mini', messages: [{ role: 'user', content: `metrics ${i}` }],
    }).withResponse();
    ids.push(spendpolHeaders(response).auditId);
  }
  const list = ids.map((id) => `'${id}'`).join(',');
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id IN (${list})`) === '5',
    { timeout: 15_000, message: 'five audit rows' });

  let m;
  await waitFor(async () => (m = await caughtUp()), { timeout: 10_000, message: 'ingest caught up' });

  assert.equal(get(m, 'spendpol_controld_ingest_rows_total') - get(before, 'spendpol_controld_ingest_rows_total'), 5);
  // a fresh database: every row in audit_logs was loaded by this controld
  assert.equal(get(m, 'spendpol_controld_ingest_rows_total'), Number(sql('SELECT count(*) FROM audit_logs')));
  assert.ok(get(m, 'spendpol_controld_ingest_batches_total') > get(before, 'spendpol_controld_ingest_batches_total'));
  assert.equal(get(m, 'spendpol_controld_ingest_offset_bytes'), fs.statSync(s.journalPath).size);
  assert.ok(m.has('spendpol_controld_ingest_lag_seconds'));
  assert.ok(get(m, 'spendpol_controld_ingest_lag_seconds') < 5, `lag ${get(m, 'spendpol_controld_ingest_lag_seconds')}`);
  assert.equal(get(m, 'spendpol_controld_ingest_batch_failures_total'), 0);
});

test('snapshot generation is the published one and publishes are counted', async () => {
  const generation = async () => (await s.api('GET', '/healthz')).json.snapshot_generation;
  let m = await scrape();
  assert.equal(get(m, 'spendpol_controld_snapshot_generation'), await generation());
  const ok = get(m, 'spendpol_controld_snapshot_publishes_total{result="ok"}');
  const g0 = get(m, 'spendpol_controld_snapshot_generation');
  assert.ok(g0 > 0);

  await s.createKey({ name: 'metrics-publish' });   // waits until the proxy has it
  m = await scrape();
  assert.ok(get(m, 'spendpol_controld_snapshot_generation') > g0);
  assert.equal(get(m, 'spendpol_controld_snapshot_generation'), await generation());
  assert.ok(get(m, 'spendpol_controld_snapshot_publishes_total{result="ok"}') > ok);
  assert.equal(get(m, 'spendpol_controld_snapshot_publishes_total{result="failed"}'), 0);
  assert.equal(get(m, 'spendpol_controld_snapshot_publish_duration_seconds_count'),
    get(m, 'spendpol_controld_snapshot_publishes_total{result="ok"}'));
  const last = get(m, 'spendpol_controld_snapshot_last_publish_timestamp_seconds');
  assert.ok(Math.abs(Date.now() / 1000 - last) < 60, `last publish at ${last}`);
});

test('database pools are reported with their sizes', async () => {
  const m = await scrape();
  for (const pool of ['system', 'tenant']) {
    const size = get(m, `spendpol_controld_db_pool_connections{pool="${pool}"}`);
    const used = get(m, `spendpol_controld_db_pool_connections_in_use{pool="${pool}"}`);
    assert.ok(size > 0, `${pool} pool size ${size}`);
    assert.ok(used >= 0 && used <= size, `${pool} in use ${used} of ${size}`);
    assert.ok(m.has(`spendpol_controld_db_pool_waits_total{pool="${pool}"}`));
  }
});

test('webhook deliveries are counted by result', async () => {
  const got = [];
  const statuses = [500, 200];
  const server = http.createServer((q, res) => {
    q.resume();
    q.on('end', () => {
      got.push(q.url);
      res.writeHead(statuses[got.length - 1] ?? 200);
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  after(() => new Promise((r) => server.close(r)));

  const project = `m-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: {
      name: `metrics-${project}`, scope: { type: 'project', value: project },
      limit_usd: '0.001', period: 'daily', action: 'warn', thresholds: [50],
    },
  });
  assert.equal(b.status, 201, b.text);
  const rule = await s.api('POST', '/alerts/rules', {
    body: { type: 'budget_threshold', params: { budget_id: b.json.id },
      webhook: { url: `http://127.0.0.1:${server.address().port}/hook`, format: 'json' } },
  });
  assert.equal(rule.status, 201, rule.text);

  const before = await scrape();
  const { key } = await s.createKey({ project });
  await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: 'hi' }],
  });
  await waitFor(() => got.length >= 2, { timeout: 20_000, message: 'a failed and a retried delivery' });

  const d = (m, r) => get(m, `spendpol_controld_webhook_deliveries_total{result="${r}"}`);
  let m;
  await waitFor(async () => {
    m = await scrape();
    return d(m, 'delivered') - d(before, 'delivered') >= 1;
  }, { timeout: 5_000, message: 'the delivery counted' });
  assert.equal(d(m, 'retrying') - d(before, 'retrying'), 1);
  assert.equal(d(m, 'delivered') - d(before, 'delivered'), 1);
  assert.equal(d(m, 'failed') - d(before, 'failed'), 0);
});
