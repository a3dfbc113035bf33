// Chargeback periods (issue 15, item 3; docs/chargeback.md): figures per
// group, provider and model equal the audit rows to the nano-dollar;
// finalize freezes them (409 on any change); rows ingested after a
// finalize for its window land as adjustments of the next open period,
// and every nano-dollar lands exactly once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { useStack, spendpolHeaders, waitFor, usdToNano, assertPaged } from './lib/stack.mjs';

const s = useStack();

const HOUR = 3600_000;

/** one value (or rows joined by '\n') of a query run as the tables' owner */
function sql(query) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

const iso = (ms) => new Date(ms).toISOString();
const newId = () => `evt_chgbk${crypto.randomBytes(11).toString('hex')}`;

/** the journal line of a real request through the proxy, parsed */
async function request(key, content = 'chargeback') {
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content }],
  }).withResponse();
  const id = spendpolHeaders(response).auditId;
  await loaded({ id });
  const line = fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${id}"`));
  assert.ok(line, `journal line of ${id}`);
  return JSON.parse(line);
}

async function loaded(line) {
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id = '${line.id}'`) === '1',
    { timeout: 10_000, message: `audit row ${line.id}` });
}

/** journal lines written as the module writes them, loaded by ingest */
async function append(lines) {
  fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  for (const l of lines) await loaded(l);
}

async function create(body, status = 201) {
  const r = await s.api('POST', '/chargeback/periods', { body });
  assert.equal(r.status, status, r.text);
  return r.json;
}

async function get(id) {
  const r = await s.api('GET', `/chargeback/periods/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function finalize(id) {
  const r = await s.api('POST', `/chargeback/periods/${id}/finalize`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, 'finalized');
  return r.json;
}

/** the rows of [from, to) grouped as a period's lines, from audit_logs */
function expectedLines(from, to, column, extra = '') {
  const rows = sql(`SELECT coalesce(${column}, '<null>'), provider, model, sum(cost_nano),
      sum(input_tokens), sum(output_tokens), count(*) FROM audit_logs
    WHERE created_at >= '${iso(from)}' AND created_at < '${iso(to)}' ${extra}
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`);
  return rows ? rows.split('\n').sort() : [];
}

const asRows = (lines) => lines.map((l) => [l.group ?? '<null>', l.provider, l.model, l.cost_nano,
  l.input_tokens, l.output_tokens, l.requests].join('|')).sort();

const sumCost = (items) => items.reduce((n, l) => n + BigInt(l.cost_nano), 0n);

function assertTotals(period) {
  const all = [...period.lines, ...period.adjustments];
  assert.equal(BigInt(period.totals.cost_nano), sumCost(all));
  assert.equal(usdToNano(period.totals.cost_usd), sumCost(all));
  assert.equal(period.totals.requests, all.reduce((n, l) => n + l.requests, 0));
  assert.equal(BigInt(period.adjustments_total.cost_nano), sumCost(period.adjustments));
  for (const l of all) assert.equal(usdToNano(l.cost_usd), BigInt(l.cost_nano));
}

let keys;
let template;
let thisHour;         // the finalized period of the figures test, ends in the future

test('setup: keys in departments, requests through the proxy', async () => {
  keys = {
    eng: (await s.createKey({ department: 'eng' })).key,
    sales: (await s.createKey({ department: 'sales' })).key,
    none: (await s.createKey({})).key,
  };
  template = await request(keys.eng);
  // late rows are told by the hash chain's position (chain_seq), which
  // ingest gives every row it loads
  assert.equal(sql(`SELECT chain_seq > 0 FROM audit_logs WHERE id = '${template.id}'`), 't');
});

test('bad input: unknown fields, types, inverted and long ranges, bad ids, filters', async () => {
  const at = Date.parse('2031-01-01T00:00:00Z');
  const ok = { name: 'x', starts_at: iso(at), ends_at: iso(at + HOUR) };
  const refused = async (method, path, body, status, code, field) => {
    const r = await s.api(method, path, { body });
    assert.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.code, code, r.text);
    if (field !== undefined) assert.equal(r.json.error.field, field, r.text);
  };
  await refused('POST', '/chargeback/periods', { ...ok, color: 'red' }, 400, 'unknown_field');
  await refused('POST', '/chargeback/periods', { ...ok, starts_at: 5 }, 400, 'invalid_type', 'starts_at');
  await refused('POST', '/chargeback/periods', { ...ok, ends_at: ok.starts_at }, 422, 'invalid_value', 'ends_at');
  await refused('POST', '/chargeback/periods', { ...ok, ends_at: iso(at - 1) }, 422, 'invalid_value', 'ends_at');
  await refused('POST', '/chargeback/periods', { ...ok, ends_at: iso(at + 367 * 24 * HOUR) }, 422,
    'invalid_value', 'ends_at');
  await refused('POST', '/chargeback/periods', { ...ok, starts_at: 'yesterday' }, 422, 'invalid_value',
    'starts_at');
  await refused('POST', '/chargeback/periods', { ...ok, group_by: 'team' }, 422, 'invalid_value', 'group_by');
  await refused('POST', '/chargeback/periods', { starts_at: ok.starts_at, ends_at: ok.ends_at }, 422,
    'missing_field', 'name');
  await refused('GET', '/chargeback/periods/bud_0123456789abcdef01234567', undefined, 404, 'period_not_found', 'id');
  await refused('GET', '/chargeback/periods/cbp_0123456789abcdef01234567', undefined, 404, 'period_not_found', 'id');
  await refused('POST', '/chargeback/periods/cbp_0123456789abcdef01234567/finalize', undefined, 404,
    'period_not_found', 'id');
  await refused('GET', '/chargeback/periods?status=closed', undefined, 400, 'invalid_filter', 'status');

  // overlap: 409 naming the other period; touching ends are fine
  const a = await create(ok);
  assert.match(a.id, /^cbp_[0-9a-f]{24}$/);
  const r = await s.api('POST', '/chargeback/periods', {
    body: { ...ok, starts_at: iso(at + HOUR / 2), ends_at: iso(at + 2 * HOUR) },
  });
  assert.equal(r.status, 409, r.text);
  assert.equal(r.json.error.code, 'period_overlap');
  assert.match(r.json.error.message, new RegExp(a.id));
  const b = await create({ ...ok, starts_at: ok.ends_at, ends_at: iso(at + 2 * HOUR) });
  await refused('PATCH', `/chargeback/periods/${b.id}`, { starts_at: iso(at + HOUR / 2) }, 409, 'period_overlap');
  await refused('PATCH', `/chargeback/periods/${b.id}`, { ends_at: iso(at) }, 422, 'invalid_value', 'ends_at');
  await refused('PATCH', `/chargeback/periods/${b.id}`, { status: 'finalized' }, 400, 'unknown_field');
  const renamed = await s.api('PATCH', `/chargeback/periods/${b.id}`, { body: { name: 'renamed', group_by: 'agent' } });
  assert.equal(renamed.status, 200, renamed.text);
  assert.equal(renamed.json.name, 'renamed');
  assert.equal(renamed.json.group_by, 'agent');
  assert.equal(renamed.json.starts_at, ok.ends_at);

  await assertPaged(s, '/chargeback/periods', { badFilter: 'status=closed' });
  const list = await s.api('GET', '/chargeback/periods?status=open&limit=1000');
  assert.ok(list.json.data.every((p) => p.status === 'open'));
  assert.deepEqual(list.json.data.slice(0, 2).map((p) => p.id), [b.id, a.id], 'newest first');

  for (const id of [a.id, b.id]) {
    const d = await s.api('DELETE', `/chargeback/periods/${id}`);
    assert.equal(d.status, 204, d.text);
  }
  await refused('GET', `/chargeback/periods/${a.id}`, undefined, 404, 'period_not_found', 'id');
});

test('figures per department and model equal the audit rows to the nano; finalize freezes them', async () => {
  const now = Date.now();
  const start = Math.floor(now / HOUR) * HOUR - HOUR;
  const end = start + 3 * HOUR;
  // real requests of three departments (one without), and journal lines
  // of other models with costs past 2^32
  await request(keys.sales, 'sales question');
  await request(keys.none, 'no department');
  const lines = ['gpt-4o', 'gpt-4o-mini', 'o3'].flatMap((model, i) => ['eng', 'sales', ''].map((d, j) => ({
    ...template, id: newId(), ts_ms: start + 1000 * (3 * i + j), model, requested_model: model,
    department: d || undefined, cost_nano: 2 ** 40 + 3 * i + j, input_tokens: 1000 + i, output_tokens: 7 + j,
  })));
  await append(lines);

  const period = await create({ name: 'this hour', starts_at: iso(start), ends_at: iso(end) });
  assert.equal(period.status, 'open');
  assert.equal(period.group_by, 'department');
  assert.equal(period.finalized_seq, null);
  assert.deepEqual(asRows(period.lines), expectedLines(start, end, 'department'));
  assert.ok(period.lines.some((l) => l.group === null), 'rows without a department: group null');
  assert.deepEqual(period.adjustments, []);
  assertTotals(period);
  assert.equal(BigInt(period.totals.cost_nano),
    BigInt(sql(`SELECT sum(cost_nano) FROM audit_logs WHERE created_at >= '${iso(start)}' AND created_at < '${iso(end)}'`)));

  // another grouping of the same rows
  const patched = await s.api('PATCH', `/chargeback/periods/${period.id}`, { body: { group_by: 'api_key' } });
  assert.equal(patched.status, 200, patched.text);
  assert.deepEqual(asRows(patched.json.lines), expectedLines(start, end, 'api_key_id'));
  await s.api('PATCH', `/chargeback/periods/${period.id}`, { body: { group_by: 'department' } });

  const frozen = await finalize(period.id);
  thisHour = frozen;
  assert.match(frozen.finalized_at, /^\d{4}-\d\d-\d\dT/);
  assert.equal(frozen.finalized_seq,
    Number(sql(`SELECT coalesce((SELECT seq FROM audit_chain_heads WHERE org_id = '${template.org_id}'), 0)`)));
  assert.deepEqual(asRows(frozen.lines), expectedLines(start, end, 'department'));
  assertTotals(frozen);

  // immutable afterwards
  for (const [method, path, body] of [
    ['POST', `/chargeback/periods/${period.id}/finalize`],
    ['PATCH', `/chargeback/periods/${period.id}`, { name: 'changed' }],
    ['DELETE', `/chargeback/periods/${period.id}`],
  ]) {
    const r = await s.api(method, path, { body });
    assert.equal(r.status, 409, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.code, 'period_finalized');
  }
  // and at the database, whatever the role
  assert.throws(() => sql(`UPDATE chargeback_periods SET name = 'x' WHERE id = '${period.id}'`), /is finalized/);
  assert.throws(() => execFileSync('psql', [s.apiDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc',
    `SET ROLE spendpol_app; SELECT set_config('spendpol.org_id', '${template.org_id}', false);
     DELETE FROM chargeback_lines WHERE period_id = '${period.id}'`], { stdio: 'pipe' }), /permission denied/);
  const list = await s.api('GET', '/chargeback/periods?status=finalized');
  assert.deepEqual(list.json.data.map((p) => p.id), [period.id]);
});

test('late rows: adjustments of the next open period, frozen with it; every nano lands once', async () => {
  const base = Date.parse('2030-03-01T00:00:00Z');
  const day = 24 * HOUR;
  const at = (d, h = 0) => base + d * day + h * HOUR;
  const line = (ts, cost, department = 'eng', model = 'gpt-4o-mini') => ({
    ...template, id: newId(), ts_ms: ts, cost_nano: cost, department, model, requested_model: model,
  });

  // P1 [day 0, day 1), P3 [day 2, day 3); P2 is created later, between them
  await append([line(at(0, 1), 1), line(at(0, 2), 2, 'sales'), line(at(1, 1), 4), line(at(2, 1), 8)]);
  const p1 = await create({ name: 'P1', starts_at: iso(at(0)), ends_at: iso(at(1)) });
  const p3 = await create({ name: 'P3', starts_at: iso(at(2)), ends_at: iso(at(3)) });
  const f1 = await finalize(p1.id);
  assert.equal(sumCost(f1.lines), 3n);

  // a late row of P1: P1 keeps its figures, P3 (the next open one) books it
  const late1 = line(at(0, 5), 16, 'sales', 'gpt-4o');
  await append([late1]);
  assert.deepEqual(await get(p1.id), f1, 'a finalized period never changes');
  let g3 = await get(p3.id);
  assert.equal(sumCost(g3.lines), 8n);
  assert.deepEqual(g3.adjustments.map((a) => [a.original_period_id, a.group, a.provider, a.model, a.cost_nano,
    a.requests]), [[p1.id, 'sales', template.provider, 'gpt-4o', 16, 1]]);
  assert.equal(BigInt(g3.totals.cost_nano), 24n);
  assertTotals(g3);

  // P2 [day 1, day 2) created: now the next open period after P1
  const p2 = await create({ name: 'P2', starts_at: iso(at(1)), ends_at: iso(at(2)) });
  assert.deepEqual(p2.adjustments.map((a) => [a.original_period_id, a.cost_nano]), [[p1.id, 16]]);
  assert.deepEqual((await get(p3.id)).adjustments, []);

  // P2 finalized: the adjustment is frozen with it; the next late row of
  // P1 and one of P2 go to P3
  const f2 = await finalize(p2.id);
  assert.equal(sumCost(f2.lines), 4n);
  assert.deepEqual(f2.adjustments.map((a) => [a.original_period_id, a.cost_nano]), [[p1.id, 16]]);
  await append([line(at(0, 6), 32), line(at(1, 6), 64, 'ops')]);
  assert.deepEqual(await get(p2.id), f2);
  g3 = await get(p3.id);
  assert.deepEqual(g3.adjustments.map((a) => [a.original_period_id, a.group, a.cost_nano]).sort(),
    [[p1.id, 'eng', 32], [p2.id, 'ops', 64]].sort());
  const f3 = await finalize(p3.id);
  assert.deepEqual(f3.adjustments, g3.adjustments);
  assert.equal(BigInt(f3.totals.cost_nano), 8n + 32n + 64n);

  // after every period is finalized a late row waits for the next one
  const late4 = line(at(2, 9), 128);
  await append([late4]);
  const p4 = await create({ name: 'P4', starts_at: iso(at(5)), ends_at: iso(at(6)) });
  assert.deepEqual(p4.adjustments.map((a) => [a.original_period_id, a.cost_nano]), [[p3.id, 128]]);
  await finalize(p4.id);

  // every nano-dollar of the rows of [P1 start, P4 end) lands exactly once
  const booked = (await Promise.all([p1, p2, p3, p4].map((p) => get(p.id))))
    .reduce((n, p) => n + BigInt(p.totals.cost_nano), 0n);
  const rows = BigInt(sql(`SELECT sum(cost_nano) FROM audit_logs
    WHERE created_at >= '${iso(at(0))}' AND created_at < '${iso(at(6))}'`));
  assert.equal(booked, rows);
  assert.equal(rows, 255n);
});

test('a request through the proxy after finalize is an adjustment of the next open period', async () => {
  // the figures test's period ends an hour or more from now
  const end = Date.parse(thisHour.ends_at);
  assert.ok(end > Date.now() + 30 * 60_000);
  const after = await request(keys.sales, 'after the close');
  assert.ok(Number(after.ts_ms) < end);
  assert.deepEqual(await get(thisHour.id), thisHour, 'a finalized period never changes');

  const next = await create({ name: 'next', starts_at: thisHour.ends_at, ends_at: iso(end + HOUR) });
  assert.deepEqual(next.adjustments.map((a) => [a.original_period_id, a.group, a.model, a.requests]),
    [[thisHour.id, 'sales', after.model, 1]]);
  assert.equal(BigInt(next.adjustments[0].cost_nano),
    BigInt(sql(`SELECT cost_nano FROM audit_logs WHERE id = '${after.id}'`)));
  assert.deepEqual(next.lines, []);
  assertTotals(next);
});

test('finalize while ingest loads rows of the period: each row is a line or a later adjustment, once', async (t) => {
  const start = Date.parse('2032-06-01T00:00:00Z');
  const x = await create({ name: 'busy', starts_at: iso(start), ends_at: iso(start + HOUR) });
  const y = await create({ name: 'after busy', starts_at: iso(start + HOUR), ends_at: iso(start + 2 * HOUR) });
  const batches = Array.from({ length: 30 }, (_, b) => Array.from({ length: 20 }, (_, i) => ({
    ...template, id: newId(), ts_ms: start + 1000 * (20 * b + i), cost_nano: 1 + crypto.randomInt(1_000_000),
    department: ['eng', 'sales', 'ops'][i % 3],
  })));
  const writer = (async () => {
    for (const batch of batches) {
      fs.appendFileSync(s.journalPath, batch.map((l) => `${JSON.stringify(l)}\n`).join(''));
      await new Promise((r) => setTimeout(r, 60));
    }
  })();
  // finalize once ingest has loaded some of the rows, while it loads more
  const window = `created_at >= '${iso(start)}' AND created_at < '${iso(start + HOUR)}'`;
  await waitFor(() => Number(sql(`SELECT count(*) FROM audit_logs WHERE ${window}`)) > 0,
    { timeout: 10_000, message: 'the first rows' });
  const fx = await finalize(x.id);
  await writer;
  await loaded(batches.at(-1).at(-1));
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE ${window}`) === '600',
    { timeout: 10_000, message: '600 rows' });

  const total = BigInt(sql(`SELECT sum(cost_nano) FROM audit_logs WHERE ${window}`));
  const frozen = BigInt(sql(`SELECT coalesce(sum(cost_nano), 0) FROM audit_logs WHERE ${window}
    AND chain_seq <= ${fx.finalized_seq}`));
  const gy = await get(y.id);
  t.diagnostic(`finalized with ${fx.totals.requests} of 600 rows, ${gy.adjustments_total.requests} late`);
  assert.equal(BigInt(fx.totals.cost_nano), frozen);
  assert.equal(gy.adjustments.every((a) => a.original_period_id === x.id), true);
  assert.equal(BigInt(fx.totals.cost_nano) + BigInt(gy.adjustments_total.cost_nano), total);
  assert.equal(fx.totals.requests + gy.adjustments_total.requests, 600);
  assert.ok(fx.totals.requests > 0, 'finalized after the first rows');
  assert.deepEqual(await get(x.id), fx);
});
