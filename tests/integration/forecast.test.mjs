// Forecasts (issue 15): 90 days of synthetic spend written straight into
// audit_logs (as the tables' owner) for an organisation of its own, with a
// weekly pattern and seeded noise, a doubling on two days and a quiet
// stretch of three days at 20%. GET /forecast/anomalies finds both and
// nothing else; the spend_anomaly job raises them as alerts, once; a clean
// series' forecast holds the generator's values in its interval; a
// budget's runs_out_at matches a hand computation; POST /forecast/what-if
// re-prices gpt-4o traffic at gpt-4o-mini's list price from GET /pricing;
// bad input for each route.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { useStack, newKey, waitFor } from './lib/stack.mjs';

const s = useStack({ env: { SPENDPOL_FORECAST_JOB_MS: '500' } });

const USD = 1_000_000_000n;
const DAY = 86_400_000;
/* by UTC weekday, Sunday first: USD per day of department "ops" */
const WEEKLY = [30, 100, 110, 105, 120, 95, 40];
const CLEAN_SHARE = 0.2;                 /* department "clean": 20% of it */
const TODAY = Math.floor(Date.now() / DAY);
const DOUBLED = [TODAY - 25, TODAY - 24];
const QUIET = [TODAY - 12, TODAY - 11, TODAY - 10];

const dateOf = (day) => new Date(day * DAY).toISOString().slice(0, 10);
const weekday = (day) => new Date(day * DAY).getUTCDay();

function sql(q, url = s.ownerDatabaseURL) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', q], { encoding: 'utf8' }).trim();
}

/* mulberry32: the same noise every run */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let org, key;

/*
 * The organisation and its history, once, from the first test: the
 * stack's own before hook may not have run when a hook of this file runs.
 */
let ready = null;
const setup = () => { ready ??= history(); return ready; };

async function history() {
  org = `org_fc_${crypto.randomBytes(4).toString('hex')}`;
  key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'forecast');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'forecast admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);

  const rnd = prng(20261205);
  const rows = [];
  for (let day = TODAY - 90; day < TODAY; day++) {
    let ops = WEEKLY[weekday(day)] * (1 + 0.16 * (rnd() - 0.5));
    const clean = WEEKLY[weekday(day)] * CLEAN_SHARE * (1 + 0.16 * (rnd() - 0.5));
    if (DOUBLED.includes(day)) ops *= 2;
    if (QUIET.includes(day)) ops *= 0.2;
    const at = new Date(day * DAY + 12 * 3600_000).toISOString();
    for (const [dept, usd] of [['ops', ops], ['clean', clean]]) {
      rows.push(`('fc-${crypto.randomBytes(8).toString('hex')}', '${org}', '${at}', 'openai', 'gpt-4o', '${dept}', ${Math.round(usd * 1e9)})`);
    }
  }
  const months = new Set();
  for (let day = TODAY - 91; day <= TODAY; day += 1) months.add(dateOf(day).slice(0, 7));
  sql([...months].map((m) => `SELECT spendpol_audit_partition('${m}-01T00:00:00Z');`).join('\n')
    + `INSERT INTO audit_logs (id, org_id, created_at, provider, model, department, cost_nano) VALUES ${rows.join(',\n')};`);
}

async function api(method, p, opts = {}) {
  await setup();
  return s.api(method, p, { key, ...opts });
}

function assertError(r, status, field, code) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error?.param ?? r.json?.error?.field, field, r.text);
  if (code) assert.equal(r.json.error.code, code, r.text);
}

test('anomalies: the doubling and the quiet stretch, and nothing else', async () => {
  const from = new Date((TODAY - 60) * DAY).toISOString();
  const r = await api('GET', `/forecast/anomalies?group_by=department&from=${from}`);
  assert.equal(r.status, 200, r.text);
  const ops = r.json.data.filter((a) => a.group === 'ops');
  const spikes = ops.filter((a) => a.direction === 'spike').map((a) => a.date).sort();
  const drops = ops.filter((a) => a.direction === 'drop').map((a) => a.date).sort();
  assert.deepEqual(spikes, DOUBLED.map(dateOf), r.text);
  assert.deepEqual(drops, QUIET.map(dateOf), r.text);
  for (const a of ops) {
    assert.ok(Math.abs(a.z) > 3.5, JSON.stringify(a));
    assert.equal(BigInt(a.difference_nano), BigInt(a.actual_nano) - BigInt(a.expected_nano));
    assert.match(a.actual_usd, /^\d+\.\d{6,9}$/);
  }
  // the clean department has ordinary noise only
  assert.deepEqual(r.json.data.filter((a) => a.group === 'clean'), [], r.text);
  // the total follows ops: only planted days, if any
  const planted = new Set([...DOUBLED, ...QUIET].map(dateOf));
  for (const a of r.json.data.filter((x) => x.scope === 'total')) assert.ok(planted.has(a.date), JSON.stringify(a));
  assert.equal(r.json.rule.z_threshold, 3.5);

  // hourly buckets answer too (one row a day: nothing to flag at noon)
  const h = await api('GET', '/forecast/anomalies?interval=hour');
  assert.equal(h.status, 200, h.text);
  assert.equal(h.json.interval, 'hour');
});

test('the job raises each anomaly once as a spend_anomaly alert', async () => {
  const planted = [...DOUBLED, ...QUIET].map(dateOf).sort();
  let alerts = [];
  await waitFor(async () => {
    const r = await api('GET', '/alerts?type=spend_anomaly&limit=100');
    alerts = (r.json?.data ?? []).filter((a) => a.details?.scope === 'total');
    return alerts.length >= planted.length;
  }, { timeout: 30_000, message: 'the spend_anomaly alerts' });
  const dates = alerts.map((a) => a.details.date).sort();
  assert.deepEqual(dates, planted, JSON.stringify(alerts.map((a) => a.details)));
  for (const a of alerts) {
    assert.equal(a.type, 'spend_anomaly');
    assert.match(a.message, /Spend (spike|drop) on \d{4}-\d{2}-\d{2}/);
    assert.match(a.message, /\(robust z-score -?\d+(\.\d{1,2})?\)$/, a.message);
  }
  // once per (org, group, day): later runs add nothing
  await new Promise((res) => setTimeout(res, 2000));
  const again = await api('GET', '/alerts?type=spend_anomaly&limit=100');
  assert.equal(again.json.data.filter((a) => a.details?.scope === 'total').length, planted.length);
  // another organisation sees none of them
  const other = await s.api('GET', '/alerts?type=spend_anomaly&limit=100');
  assert.equal(other.status, 200, other.text);
  assert.equal(other.json.data.filter((a) => JSON.stringify(a.details).includes('"ops"') || planted.includes(a.details?.date)).length, 0);
});

test('spend: a clean series holds the generator in its interval', async () => {
  const r = await api('GET', '/forecast/spend?horizon=14d&group_by=department');
  assert.equal(r.status, 200, r.text);
  const clean = r.json.groups.find((g) => g.group === 'clean');
  assert.ok(clean, r.text);
  assert.equal(clean.method, 'holt_winters');
  assert.equal(clean.history_days, 90);
  assert.ok(clean.points.length >= 14);
  assert.equal(clean.points[0].date, dateOf(TODAY));
  for (let k = 0; k < 14; k++) {
    const p = clean.points[k];
    const truth = BigInt(Math.round(WEEKLY[weekday(TODAY + k)] * CLEAN_SHARE * 1e9));
    assert.ok(BigInt(p.low_95_nano) <= truth && truth <= BigInt(p.high_95_nano), `${p.date}: ${truth} in ${JSON.stringify(p)}`);
    assert.ok(BigInt(p.low_nano) <= BigInt(p.expected_nano) && BigInt(p.expected_nano) <= BigInt(p.high_nano));
    assert.ok(BigInt(p.low_95_nano) <= BigInt(p.low_nano) && BigInt(p.high_nano) <= BigInt(p.high_95_nano));
  }
  // the horizon's sum is today's expected (nothing spent today) and the rest
  const sum = clean.points.slice(0, 14).reduce((a, p) => a + BigInt(p.expected_nano), 0n);
  assert.equal(BigInt(clean.to_horizon.expected_nano), sum);
  assert.equal(clean.to_horizon.days, 14);
  assert.equal(clean.to_horizon.end_date, dateOf(TODAY + 13));
  // the total and both groups; money as nano and USD text
  assert.equal(r.json.total.method, 'holt_winters');
  assert.equal(r.json.groups.length, 2);
  assert.match(r.json.total.to_month_end.expected_total_usd, /^\d+\.\d{6,9}$/);
});

test('a budget runs out when its expected cumulative spend crosses the limit', async () => {
  const b = await api('POST', '/budgets', {
    body: { name: 'forecast org', scope: { type: 'organization' }, limit_usd: '1050', period: 'total' },
  });
  assert.equal(b.status, 201, b.text);
  // spent so far (what ingest would have counted): 50 USD
  sql(`INSERT INTO budget_spend (budget_id, org_id, period_start, spent_nano, requests)
       SELECT id, org_id, created_at, ${50n * USD}, 1 FROM budgets WHERE id = '${b.json.id}'`);

  const r = await api('GET', '/forecast/spend?horizon=60d');
  assert.equal(r.status, 200, r.text);
  const mine = r.json.budgets.find((x) => x.id === b.json.id);
  assert.ok(mine, r.text);
  assert.equal(BigInt(mine.spent_nano), 50n * USD);
  assert.equal(mine.exhausted, false);

  // the same sum over the total's points (the budget covers every row)
  let cum = 50n * USD, at = null;
  r.json.total.points.slice(0, 60).forEach((p, k) => {
    cum += BigInt(p.expected_nano) - (k === 0 ? BigInt(r.json.total.today_actual_nano) : 0n);
    if (at === null && cum >= 1050n * USD) at = p.date;
  });
  assert.equal(mine.runs_out_at, at, JSON.stringify(mine));

  // by hand from the generator: ops and clean at their weekday means
  let hand = 50, day = TODAY;
  while (hand < 1050) { hand += WEEKLY[weekday(day)] * (1 + CLEAN_SHARE); day++; }
  const got = Math.round(Date.parse(`${mine.runs_out_at}T00:00:00Z`) / DAY);
  assert.ok(Math.abs(got - (day - 1)) <= 2, `runs out ${mine.runs_out_at}, by hand ${dateOf(day - 1)}`);

  // a limit out of reach within the horizon: null
  const far = await api('POST', '/budgets', {
    body: { name: 'far', scope: { type: 'organization' }, limit_usd: '1000000', period: 'total' },
  });
  assert.equal(far.status, 201, far.text);
  const r2 = await api('GET', '/forecast/spend?horizon=30d');
  assert.equal(r2.json.budgets.find((x) => x.id === far.json.id).runs_out_at, null);
});

test('what-if: gpt-4o traffic at gpt-4o-mini list prices', async () => {
  // rows of the default organisation an hour ago, with every kind of token
  const usage = [[1200, 300, 200, 0], [50_000, 1_000, 0, 0], [7, 3, 0, 0], [800, 900, 100, 100]];
  const at = new Date(Date.now() - 3600_000).toISOString();
  const ids = usage.map(() => `wi-${crypto.randomBytes(8).toString('hex')}`);
  sql(`INSERT INTO audit_logs (id, org_id, created_at, provider, model, project,
         input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_nano) VALUES `
    + usage.map(([i, o, c, w], k) => `('${ids[k]}', 'org_default', '${at}', 'openai', 'gpt-4o', 'wi-${k % 2}', ${i}, ${o}, ${c}, ${w}, ${1000 + k})`).join(','));

  const price = await s.api('GET', '/pricing/openai/gpt-4o-mini');
  assert.equal(price.status, 200, price.text);
  const nano = (usd) => BigInt(Math.round(Number(usd) * 1e9));
  const p = price.json;
  const inP = nano(p.input_usd_per_mtok), outP = nano(p.output_usd_per_mtok);
  const cachedP = p.cached_input_usd_per_mtok == null ? inP : nano(p.cached_input_usd_per_mtok);
  const writeP = p.cache_write_usd_per_mtok == null ? inP : nano(p.cache_write_usd_per_mtok);
  const cost = ([i, o, c, w]) => {
    const t = BigInt(i - c - w) * inP + BigInt(c) * cachedP + BigInt(w) * writeP + BigInt(o) * outP;
    return (t + 500_000n) / 1_000_000n;      /* half up, per request, as the proxy */
  };
  const expected = usage.reduce((a, u) => a + cost(u), 0n);
  const actual = usage.reduce((a, _u, k) => a + 1000n + BigInt(k), 0n);

  const body = {
    from: new Date(Date.now() - 2 * 3600_000).toISOString(), to: new Date().toISOString(),
    changes: [{ provider: 'openai', from_model: 'gpt-4o', to_model: 'gpt-4o-mini' }], group_by: 'project',
  };
  const r = await s.api('POST', '/forecast/what-if', { body });
  assert.equal(r.status, 200, r.text);
  assert.equal(BigInt(r.json.total.what_if_nano), expected, r.text);
  assert.equal(BigInt(r.json.total.actual_nano), actual, r.text);
  assert.equal(BigInt(r.json.total.difference_nano), expected - actual);
  assert.equal(r.json.total.repriced_requests, 4);
  const g0 = r.json.groups.find((g) => g.group === 'wi-0');
  assert.equal(BigInt(g0.what_if_nano), cost(usage[0]) + cost(usage[2]));
  assert.equal(r.json.changes[0].price.input_usd_per_mtok, p.input_usd_per_mtok);

  // explicit prices: 1 USD in, 2 USD out per 1M tokens
  const r2 = await s.api('POST', '/forecast/what-if', {
    body: { ...body, group_by: undefined, changes: [{ provider: 'openai', model: 'gpt-4o', prices: { input_usd_per_mtok: '1', output_usd_per_mtok: 2 } }] },
  });
  assert.equal(r2.status, 200, r2.text);
  const flat = usage.reduce((a, [i, o]) => a + (BigInt(i) * 1000n * 1_000_000n + BigInt(o) * 2000n * 1_000_000n + 500_000n) / 1_000_000n, 0n);
  assert.equal(BigInt(r2.json.total.what_if_nano), flat, r2.text);
  assert.deepEqual(r2.json.groups, []);
});

test('bad input is refused naming the field', async () => {
  for (const h of ['0d', '366d', 'abc', '30', '30h', '-1d']) {
    assertError(await api('GET', `/forecast/spend?horizon=${h}`), 422, 'horizon', 'invalid_value');
  }
  assertError(await api('GET', '/forecast/spend?group_by=color'), 422, 'group_by', 'invalid_value');
  assertError(await api('GET', '/forecast/spend?interval=hour'), 422, 'interval', 'invalid_value');
  assertError(await api('GET', '/forecast/anomalies?interval=week'), 422, 'interval', 'invalid_value');
  assertError(await api('GET', '/forecast/anomalies?from=yesterday'), 400, 'from', 'invalid_time');
  assertError(await api('GET', '/forecast/anomalies?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z'), 422, 'from', 'invalid_range');
  assertError(await api('GET', '/forecast/anomalies?from=2020-01-01T00:00:00Z'), 422, 'from', 'invalid_value');

  const ok = { from: '2026-11-01T00:00:00Z', to: '2026-11-02T00:00:00Z', changes: [{ provider: 'openai', from_model: 'gpt-4o', to_model: 'gpt-4o-mini' }] };
  const post = (body) => api('POST', '/forecast/what-if', { body });
  assertError(await post({ ...ok, extra: 1 }), 400, 'extra', 'unknown_field');
  assertError(await post({ ...ok, from: undefined }), 422, 'from', 'missing_field');
  assertError(await post({ ...ok, from: 5 }), 400, 'from', 'invalid_type');
  assertError(await post({ ...ok, to: '2026-10-01T00:00:00Z' }), 422, 'from', 'invalid_range');
  assertError(await post({ ...ok, changes: [] }), 422, 'changes', 'invalid_value');
  assertError(await post({ ...ok, changes: {} }), 400, 'changes', 'invalid_type');
  assertError(await post({ ...ok, group_by: 'color' }), 422, 'group_by', 'invalid_value');
  assertError(await post({ ...ok, changes: [ok.changes[0], { provider: 'openai', from_model: 'gpt-4o', to_model: 'no-such-model' }] }),
    422, 'changes[1].to_model', 'unknown_model');
  assertError(await post({ ...ok, changes: [{ provider: 'nope', from_model: 'a', to_model: 'b' }] }), 422, 'changes[0].provider', 'invalid_value');
  assertError(await post({ ...ok, changes: [{ provider: 'openai', from_model: 'gpt-4o' }] }), 422, 'changes[0].to_model', 'missing_field');
  assertError(await post({ ...ok, changes: [{ ...ok.changes[0], colour: 1 }] }), 400, 'changes[0].colour', 'unknown_field');
  assertError(await post({ ...ok, changes: [{ provider: 'openai', model: 'gpt-4o', prices: { input_usd_per_mtok: '1' } }] }),
    422, 'changes[0].prices.output_usd_per_mtok', 'missing_field');
  assertError(await post({ ...ok, changes: [{ provider: 'openai', model: 'gpt-4o', prices: { input_usd_per_mtok: '-1', output_usd_per_mtok: '1' } }] }),
    422, 'changes[0].prices.input_usd_per_mtok', 'invalid_value');
  assertError(await post({ ...ok, changes: [{ provider: 'openai', model: 'gpt-4o', prices: { input_usd_per_mtok: '1', output_usd_per_mtok: '1', x: 1 } }] }),
    400, 'changes[0].prices.x', 'unknown_field');
  const notJson = await s.api('POST', '/forecast/what-if', { key, body: '{' });
  assert.equal(notJson.status, 400, notJson.text);
  // no key: 401
  const anon = await s.api('GET', '/forecast/spend', { key: null });
  assert.equal(anon.status, 401, anon.text);
});
