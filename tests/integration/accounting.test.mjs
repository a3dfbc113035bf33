// The newcomer's month end (issue 15's "Done when", README "Accounting and
// compliance"): export the month's audit rows as CSV and verify the chain
// offline, close a chargeback period and see a late row land as an
// adjustment of the next, ask when a budget runs out, scrape both
// /metrics, read /openapi.json. Each step as the README shows it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { useStack, spendpolHeaders, waitFor, usdToNano } from './lib/stack.mjs';

const s = useStack();

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const TOOL = path.join(REPO, 'tools/spendpol-audit-verify');

function sql(q) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-qAtc', q], { encoding: 'utf8' }).trim();
}

const monthStart = (d) => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
const nextMonth = (d) => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));

let key;
let budgetId;
const costs = new Map();   // audit id -> cost nano

async function call(content) {
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content }],
  }).withResponse();
  const h = spendpolHeaders(response);
  costs.set(h.auditId, usdToNano(response.headers.get('x-spendpol-cost')));
  return h.auditId;
}

test('a month of traffic, exported as CSV, verifies offline and online', async () => {
  // the department's budget first: spend counts from a budget's creation
  const bud = await s.api('POST', '/budgets',
    { body: { name: 'eng monthly', scope: { type: 'department', value: 'eng' }, limit_usd: '0.05', period: 'monthly' } });
  assert.equal(bud.status, 201, bud.text);
  budgetId = bud.json.id;
  ({ key } = await s.createKey({ name: 'finance-demo', department: 'eng' }));
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push(await call(`month end ${i}`));
  await s.waitAuditRows(ids);

  const now = new Date();
  const from = monthStart(now).toISOString();
  const to = nextMonth(now).toISOString();
  const r = await s.api('GET', `/audit-logs/export?format=csv&from=${from}&to=${to}`);
  assert.equal(r.status, 200, r.text);
  const lines = r.text.trimEnd().split('\r\n');
  const rows = lines.length - 1;
  assert.ok(rows >= ids.length, 'every call is a row');
  for (const id of ids) assert.ok(lines.some((l) => l.startsWith(`"${id}",`)), `${id} exported`);
  assert.match(lines[0], /^"id","org_id","created_at",/);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-month-'));
  const file = path.join(dir, 'audit.csv');
  fs.writeFileSync(file, r.text);
  const ok = spawnSync('/usr/bin/python3', [TOOL, file], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, new RegExp(`^OK ${rows} rows, org org_default seq 1\\.\\.${rows} head [0-9a-f]{64}`, 'm'));

  const v = await s.api('GET', '/compliance/verify');
  assert.equal(v.status, 200, v.text);
  assert.equal(v.json.verified, true, v.text);
  assert.equal(v.json.head.seq, rows);
  assert.ok(ok.stdout.includes(v.json.head.hash), 'the offline head is the online head');

  // one changed cost in the file: the tool names the row and fails
  const tampered = r.text.replace(/("evt_[0-9a-f]+","org_default",(?:"[^"]*",){10})"(\d+)"/, (m, a, n) => `${a}"${Number(n) + 1}"`);
  assert.notEqual(tampered, r.text, 'a cost_nano cell was changed');
  fs.writeFileSync(file, tampered);
  const bad = spawnSync('/usr/bin/python3', [TOOL, file], { encoding: 'utf8' });
  assert.equal(bad.status, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout, /BROKEN org org_default: row evt_[0-9a-f]+ chain_seq \d+: row_hash_mismatch/);
  fs.rmSync(dir, { recursive: true });
});

test('close a chargeback period; a late row lands as an adjustment of the next', async () => {
  const now = Date.now();
  const cut = new Date(now + 60_000).toISOString();
  const a = await s.api('POST', '/chargeback/periods',
    { body: { name: 'this month so far', starts_at: monthStart(new Date(now)).toISOString(), ends_at: cut, group_by: 'department' } });
  assert.equal(a.status, 201, a.text);
  const b = await s.api('POST', '/chargeback/periods',
    { body: { name: 'the rest', starts_at: cut, ends_at: nextMonth(new Date(now + 120_000)).toISOString(), group_by: 'department' } });
  assert.equal(b.status, 201, b.text);

  const open = await s.api('GET', `/chargeback/periods/${a.json.id}`);
  const sum = [...costs.values()].reduce((x, y) => x + y, 0n);
  assert.equal(BigInt(open.json.totals.cost_nano), sum, 'the period is the sum of the rows to the nano');
  assert.ok(open.json.lines.length >= 1 && open.json.lines.every((l) => l.group === 'eng'), open.text);

  const fin = await s.api('POST', `/chargeback/periods/${a.json.id}/finalize`);
  assert.equal(fin.status, 200, fin.text);
  assert.equal(fin.json.status, 'finalized');
  assert.equal((await s.api('POST', `/chargeback/periods/${a.json.id}/finalize`)).status, 409);
  assert.equal((await s.api('PATCH', `/chargeback/periods/${a.json.id}`, { body: { name: 'x' } })).status, 409);

  // made now, inside the closed period, ingested after its close
  const late = await call('a late row');
  await s.waitAuditRows([late]);
  const next = await waitFor(async () => {
    const r = await s.api('GET', `/chargeback/periods/${b.json.id}`);
    return r.json.adjustments.length ? r.json : null;
  }, { timeout: 10_000, message: 'the late row as an adjustment' });
  assert.equal(next.adjustments.length, 1);
  assert.equal(next.adjustments[0].original_period_id, a.json.id);
  assert.equal(next.adjustments[0].group, 'eng');
  assert.equal(BigInt(next.adjustments[0].cost_nano), costs.get(late));
  const frozen = await s.api('GET', `/chargeback/periods/${a.json.id}`);
  assert.equal(BigInt(frozen.json.totals.cost_nano), sum, 'the closed period did not move');
});

test('when will the budget run out', async () => {
  const spent = [...costs.values()].reduce((x, y) => x + y, 0n);
  const limit = (spent * 3n) / 2n;   // half as much again as spent so far
  const usd = `${limit / 1_000_000_000n}.${String(limit % 1_000_000_000n).padStart(9, '0')}`;
  const bud = await s.api('PATCH', `/budgets/${budgetId}`, { body: { limit_usd: usd } });
  assert.equal(bud.status, 200, bud.text);

  // ten days of history before today, 20,000 nano a day (as the owner:
  // the rows a real month would have; they are not chained, and not late)
  sql(`SELECT spendpol_audit_partition(now() - interval '10 days');
    INSERT INTO audit_logs (id, org_id, created_at, provider, model, cost_nano, status, department)
    SELECT 'evt_hist' || lpad(d::text, 20, '0'), 'org_default',
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - d * interval '1 day' + interval '12 hours',
           'openai', 'gpt-4o-mini', 20000, 200, 'eng'
      FROM generate_series(1, 10) d`);

  const f = await s.api('GET', '/forecast/spend?horizon=30d');
  assert.equal(f.status, 200, f.text);
  const b = f.json.budgets.find((x) => x.id === budgetId);
  assert.ok(b, f.text);
  assert.equal(BigInt(b.limit_nano), limit);
  assert.equal(BigInt(b.spent_nano), spent);
  assert.equal(b.exhausted, false);
  assert.equal(b.history_days >= 10, true, JSON.stringify(b));
  // 20,000 a day: today's rows already passed today's expected, tomorrow
  // adds 20,000 (still under the limit), the day after crosses it
  const day = (n) => new Date(Date.parse(`${f.json.today}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);
  const end = b.period_end.slice(0, 10);
  assert.ok(spent + 20_000n < limit && spent + 40_000n >= limit, `the plan holds: spent ${spent}, limit ${limit}`);
  assert.equal(b.runs_out_at, day(2) < end ? day(2) : null, JSON.stringify(b));
  assert.ok(BigInt(b.expected_spend_nano) >= spent, f.text);

  const bad = await s.api('GET', '/forecast/spend?horizon=400d');
  assert.equal(bad.status, 422, bad.text);
  assert.equal(bad.json.error.field ?? bad.json.error.param, 'horizon');
});

test('scrape /metrics; /openapi.json describes every route', async () => {
  const m = await s.api('GET', '/metrics');
  assert.equal(m.status, 200, m.text);
  assert.match(m.text, /^# TYPE spendpol_controld_ingest_rows_total counter$/m);
  const rows = Number(/^spendpol_controld_ingest_rows_total (\d+)$/m.exec(m.text)[1]);
  assert.ok(rows >= costs.size, m.text.slice(0, 400));

  const o = await s.api('GET', '/openapi.json', { key: null });
  assert.equal(o.status, 200);
  assert.equal(o.json.openapi.slice(0, 3), '3.1');
  for (const p of ['/audit-logs/export', '/compliance/verify', '/chargeback/periods/{id}/finalize',
    '/forecast/spend', '/orgs', '/metrics']) {
    assert.ok(o.json.paths[p], `${p} is described`);
  }
});
