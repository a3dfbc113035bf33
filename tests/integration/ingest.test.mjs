// Journal ingest: binary COPY into monthly partitions, exactly once even
// when lines are read twice, and budget spend attributed in C into the
// periods, scopes and models PostgreSQL's own rules (spendpol_period_start,
// spendpol_model_covers) give.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useStack, spendpolHeaders, waitFor } from './lib/stack.mjs';

const s = useStack();

/** one value (or rows joined by '\n') of a query run as the tables' owner */
function sql(query, url = s.ownerDatabaseURL) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

const ids = (list) => `ARRAY[${list.map((l) => `'${l.id}'`).join(',')}]::text[]`;

/** a real journal line of a request of a key of project, parsed */
async function template(project) {
  const { key } = await s.createKey({ name: `ingest-${project}`, project });
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'template' }],
  }).withResponse();
  const id = spendpolHeaders(response).auditId;
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id = '${id}'`) === '1',
    { timeout: 10_000, message: `audit row ${id}` });
  const line = fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${id}"`));
  assert.ok(line, `journal line of ${id}`);
  return JSON.parse(line);
}

const newId = () => `evt_ingest${crypto.randomBytes(10).toString('hex')}`;

function append(lines) {
  fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
}

async function loaded(line) {
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id = '${line.id}'`) === '1',
    { timeout: 10_000, message: `audit row ${line.id}` });
}

async function budget(project, extra = {}) {
  const r = await s.api('POST', '/budgets', {
    body: {
      name: `ingest-${project}-${crypto.randomBytes(3).toString('hex')}`, scope: { type: 'project', value: project },
      limit_usd: '1000', period: 'monthly', action: 'warn', ...extra,
    },
  });
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

/** spent and requests of a budget in each table, and the rows per table */
function spendOf(budgetId) {
  const one = (t, cols) => sql(`SELECT coalesce(sum(spent_nano), 0)${cols} FROM ${t} WHERE budget_id = '${budgetId}'`);
  return {
    spend: one('budget_spend', ', coalesce(sum(requests), 0)'),
    node: one('budget_node_spend', ''),
    model: one('budget_model_spend', ', coalesce(sum(requests), 0)'),
  };
}

test('lines read twice load once and count no cent twice (in a batch, and after a forgotten offset)', async () => {
  const project = `dup${crypto.randomBytes(4).toString('hex')}`;
  const t = await template(project);   // loaded before the budget: not counted
  const id = await budget(project);
  const lines = Array.from({ length: 5 }, (_, i) => ({ ...t, id: newId(), cost_nano: 1000 * (i + 1) }));
  append(lines);
  await loaded(lines[4]);
  const before = spendOf(id);
  assert.equal(before.spend, '15000|5');
  assert.equal(before.model, before.spend);
  assert.equal(before.node, '15000');

  // the same lines again, one of them twice, and one new line
  const fresh = { ...t, id: newId(), cost_nano: 7 };
  append([...lines, lines[2], fresh]);
  await loaded(fresh);
  assert.deepEqual(spendOf(id), { spend: '15007|6', node: '15007', model: '15007|6' });
  assert.equal(sql(`SELECT count(*), count(DISTINCT id) FROM audit_logs WHERE id = ANY (${ids(lines)})`), '5|5');
  assert.match(fs.readFileSync(path.join(s.logs, 'controld.err'), 'utf8'),
    /6 of the 7 events of the batch ending at offset \d+ were loaded before; skipped/);

  // the offset lost: the whole journal is read again after a crash
  sql('DELETE FROM journal_offsets');
  await s.restartControld();
  const after = { ...t, id: newId(), cost_nano: 11 };
  append([after]);
  await loaded(after);
  assert.deepEqual(spendOf(id), { spend: '15018|7', node: '15018', model: '15018|7' });
  assert.equal(sql(`SELECT count(*) FROM audit_logs WHERE id = ANY (${ids([...lines, fresh, t])})`), '7');
});

test('spend lands in the period spendpol_period_start gives, in the budget\'s time zone, across DST and month ends', async () => {
  const project = `tz${crypto.randomBytes(4).toString('hex')}`;
  const t = await template(project);
  const budgets = {
    daily_ny: await budget(project, { period: 'daily', timezone: 'America/New_York' }),
    weekly_kolkata: await budget(project, { period: 'weekly', timezone: 'Asia/Kolkata' }),
    monthly_berlin: await budget(project, { period: 'monthly', timezone: 'Europe/Berlin' }),
    monthly_utc: await budget(project, { period: 'monthly' }),
    total: await budget(project, { period: 'total' }),
  };
  const at = [
    '2026-03-08T04:59:59.999Z', '2026-03-08T05:00:00Z', // NY midnight, the DST day
    '2026-03-09T03:59:59.999Z', '2026-03-09T04:00:00Z', // NY midnight after it
    '2026-03-29T00:59:59.999Z', '2026-03-29T01:00:00Z', // Berlin DST
    '2026-03-31T21:59:59.999Z', '2026-03-31T22:00:00Z', // Berlin April 1st
    '2026-03-31T23:59:59.999Z', '2026-04-01T00:00:00Z', // UTC month end
    '2026-02-28T18:29:59.999Z', '2026-02-28T18:30:00Z', // Kolkata Mar 1st
    '2026-11-01T05:59:59.999Z', '2026-11-01T06:00:00Z', // NY DST end
    '2027-01-01T00:00:00Z', // after the budgets' creation: counts in total
  ].map((x) => Date.parse(x));
  // one batch spanning many periods, costs that tell which lines counted
  const lines = at.map((ts, i) => ({ ...t, id: newId(), ts_ms: ts, cost_nano: 2 ** i }));
  append(lines);
  await loaded(lines[lines.length - 1]);

  const values = lines.map((l) => `(${l.ts_ms}, ${l.cost_nano})`).join(',');
  for (const [name, bid] of Object.entries(budgets)) {
    const expected = sql(`SELECT string_agg(ps || '=' || spent, ',' ORDER BY ps) FROM (
      SELECT extract(epoch FROM spendpol_period_start(b.period, b.timezone, b.created_at, v.at))::bigint AS ps,
             sum(v.cost) AS spent
      FROM budgets b, (SELECT 'epoch'::timestamptz + ms * interval '1 millisecond' AS at, cost
                       FROM (VALUES ${values}) x(ms, cost)) v
      WHERE b.id = '${bid}' AND (b.period <> 'total' OR v.at >= b.created_at)
      GROUP BY 1) e`);
    const got = sql(`SELECT string_agg(extract(epoch FROM period_start)::bigint || '=' || spent_nano, ','
      ORDER BY period_start) FROM budget_spend WHERE budget_id = '${bid}'`);
    assert.equal(got, expected, name);
    assert.ok(got.length > 0, name);
  }

  // rows of March 2026 are in their month's partition, created for them
  assert.equal(sql(`SELECT DISTINCT tableoid::regclass FROM audit_logs WHERE id = '${lines[0].id}'`),
    'audit_logs_p202603');
  assert.equal(sql(`SELECT DISTINCT tableoid::regclass FROM audit_logs WHERE id = '${lines[14].id}'`),
    'audit_logs_p202701');
});

test('model narrowing: what C counts is what spendpol_model_covers says', async () => {
  const project = `mdl${crypto.randomBytes(4).toString('hex')}`;
  const t = await template(project);
  const bid = await budget(project, { model: 'gpt-4o' });
  const models = ['gpt-4o', 'gpt-4o-2024-08-06', 'gpt-4o-20240806', 'gpt-4o-mini', 'gpt-4o-2024-8-6',
    'gpt-4o-2024-08-06-x', 'gpt-4', 'gpt-4o-', 'GPT-4O', 'gpt-4o-2024_08_06', 'gpt-4o-202408066'];
  const lines = models.map((m, i) => ({ ...t, id: newId(), requested_model: m, model: m, cost_nano: 2 ** i }));
  // and one whose alias was routed to a covered model
  lines.push({ ...t, id: newId(), requested_model: 'my-alias', model: 'gpt-4o-2024-11-20', cost_nano: 2 ** 20 });
  append(lines);
  await loaded(lines[lines.length - 1]);
  const values = lines.map((l) => `('${l.requested_model}', '${l.model}', ${l.cost_nano})`).join(',');
  const expected = sql(`SELECT sum(cost) FROM (VALUES ${values}) v(rm, m, cost)
    WHERE spendpol_model_covers('gpt-4o', rm) OR spendpol_model_covers('gpt-4o', m)`);
  assert.equal(sql(`SELECT spent_nano FROM budget_spend WHERE budget_id = '${bid}'`), expected);
  assert.equal(expected, String(1 + 2 + 4 + 2 ** 20));
});

test('retention drops whole months older than the setting, and no other', async () => {
  const t = await template(`ret${crypto.randomBytes(4).toString('hex')}`);
  const old = { ...t, id: newId(), ts_ms: Date.parse('2001-05-15T00:00:00Z') };
  append([old]);
  await loaded(old);
  assert.equal(sql("SELECT to_regclass('audit_logs_p200105') IS NOT NULL"), 't');
  // spendpol_system may call it (controld's retention job), the tenant not
  const system = (q) => sql(`SET ROLE spendpol_system; ${q}`, s.databaseURL);
  assert.equal(system('SELECT spendpol_audit_drop_months(0)'), '0');
  assert.ok(Number(system('SELECT spendpol_audit_drop_months(12)')) >= 1);
  assert.equal(sql("SELECT to_regclass('audit_logs_p200105') IS NULL"), 't');
  assert.equal(sql(`SELECT count(*) FROM audit_logs WHERE id = '${t.id}'`), '1', 'this month is kept');
  assert.throws(() => sql('SET ROLE spendpol_app; SELECT spendpol_audit_drop_months(1)', s.apiDatabaseURL),
    /permission denied/);
});

test('the audit list queries read the partitions\' indexes in order: no sort, no sequential scan', async () => {
  const t = await template(`idx${crypto.randomBytes(4).toString('hex')}`);
  const explain = (filter) => sql(`SET ROLE spendpol_app; SELECT set_config('spendpol.org_id', '${t.org_id}', false);
    SET enable_seqscan = off; SET enable_sort = off; SET enable_bitmapscan = off;
    EXPLAIN SELECT id FROM audit_logs WHERE ($1::bigint IS NULL OR true) ${filter}
    ORDER BY created_at DESC, id DESC LIMIT 50`.replace('$1::bigint', 'NULL::bigint'), s.apiDatabaseURL);
  const list = explain('');
  assert.match(list, /Index (Only )?Scan Backward using audit_logs_p\d{6}_pkey/, list);
  assert.doesNotMatch(list, /Sort|Seq Scan/, list);
  const byKey = explain(`AND api_key_id = '${t.api_key_id}'`);
  assert.match(byKey, /Index (Only )?Scan Backward using audit_logs_p\d{6}_org_id_api_key_id_created_at_id_idx/, byKey);
  assert.doesNotMatch(byKey, /Sort|Seq Scan/, byKey);
});
