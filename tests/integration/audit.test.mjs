// GET /audit-logs: the row of a request matches its X-Spendpol-* headers;
// attribution from request headers (a key that allows overrides) or the
// key's defaults; pagination.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  useStack, spendpolHeaders, usdToNano, expectedCostNano, auditRowsOf, nextCursorOf, UUID_RE, assertPaged,
} from './lib/stack.mjs';
import { fixtureUsage } from '../fixtures/openai-fixture.mjs';

const s = useStack();

test('the audit row matches the response headers', async () => {
  const created = await s.createKey({ name: 'audit', department: 'eng', project: 'alpha', attribution_override: true });
  const trace = crypto.randomUUID();
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Count the cost of this, please ✓' }], max_tokens: 42 };
  const { data, response } = await s.client(created.key).chat.completions.create(body, {
    headers: { 'X-Spendpol-Department': 'research', 'X-Spendpol-Project': 'moonshot', 'X-Spendpol-Trace-Id': trace },
  }).withResponse();
  const h = spendpolHeaders(response);
  assert.match(h.auditId ?? '', /^evt_/);
  assert.equal(h.traceId, trace);

  const row = await s.waitAuditRow(h.auditId);
  assert.equal(row.id, h.auditId);
  assert.equal(typeof row.cost_usd, 'string', `cost_usd is a decimal string: ${JSON.stringify(row.cost_usd)}`);
  assert.equal(usdToNano(row.cost_usd), usdToNano(h.cost), `cost_usd ${row.cost_usd} vs header ${h.cost}`);
  assert.equal(usdToNano(row.cost_usd), expectedCostNano('gpt-4o-mini', fixtureUsage(body)));
  assert.equal(Number(row.input_tokens), data.usage.prompt_tokens);
  assert.equal(Number(row.output_tokens), data.usage.completion_tokens);
  assert.equal(`${row.input_tokens}/${row.output_tokens}`, h.tokens);
  assert.equal(row.model, h.model);
  assert.equal(row.requested_model, 'gpt-4o-mini');
  assert.equal(row.provider, 'openai');
  assert.equal(Number(row.status), 200);
  assert.equal(row.api_key_id, created.id);
  assert.equal(row.department, 'research');
  assert.equal(row.project, 'moonshot');
  assert.equal(row.trace_id, trace);
  assert.equal(row.span_id, h.spanId);
  assert.ok(row.created_at && !Number.isNaN(Date.parse(row.created_at)), `created_at ${row.created_at}`);
  assert.ok(Number.isFinite(Number(row.latency_ms)), `latency_ms ${row.latency_ms}`);
  assert.ok('cache' in row, 'row has cache');
});

test("attribution falls back to the key's defaults", async () => {
  const created = await s.createKey({ name: 'defaults', department: 'finance', project: 'ledger' });
  const { response } = await s.client(created.key).chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'defaults' }] }).withResponse();
  const h = spendpolHeaders(response);
  assert.match(h.traceId ?? '', UUID_RE, 'a trace id is generated when none is given');
  const row = await s.waitAuditRow(h.auditId);
  assert.equal(row.department, 'finance');
  assert.equal(row.project, 'ledger');
  assert.equal(row.trace_id, h.traceId);
});

test('pagination: limit and cursor, newest first, no duplicates', async () => {
  const { id: keyId, key } = await s.createKey({ name: 'pages' });
  const client = s.client(key);
  const ids = [];
  for (let i = 0; i < 7; i++) {
    const { response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `page test ${i}` }] }).withResponse();
    ids.push(response.headers.get('x-spendpol-audit-id'));
  }
  assert.equal(new Set(ids).size, 7, `audit ids unique: ${ids}`);
  await s.waitAuditRow(ids.at(-1));
  await Promise.all(ids.map((id) => s.waitAuditRow(id)));

  const seen = [];
  let cursor;
  let pages = 0;
  for (;;) {
    const page = await s.auditLogs({ limit: 3, cursor });
    const rows = auditRowsOf(page);
    assert.ok(rows.length <= 3, `limit=3 gave ${rows.length} rows`);
    seen.push(...rows);
    pages++;
    cursor = nextCursorOf(page);
    if (!cursor || rows.length === 0) break;
    assert.ok(pages < 100, 'pagination does not end');
  }
  const seenIds = seen.map((r) => r.id);
  assert.equal(new Set(seenIds).size, seenIds.length, 'duplicate rows across pages');
  for (const id of ids) assert.ok(seenIds.includes(id), `row ${id} missing from the pages`);
  assert.ok(pages >= 3, `7+ rows at limit 3 should take 3+ pages, took ${pages}`);
  // newest first: ours appear in reverse order of issue, and timestamps never increase
  const ours = seenIds.filter((id) => ids.includes(id));
  assert.deepEqual(ours, [...ids].reverse());
  for (let i = 1; i < seen.length; i++) {
    assert.ok(Date.parse(seen[i - 1].created_at) >= Date.parse(seen[i].created_at),
      `row ${i} (${seen[i].created_at}) is newer than row ${i - 1} (${seen[i - 1].created_at})`);
  }
  const first = auditRowsOf(await s.auditLogs({ limit: 1 }));
  assert.equal(first.length, 1);
  assert.equal(first[0].id, seen[0].id);

  const long = 'm'.repeat(257);
  assert.deepEqual(await assertPaged(s, '/audit-logs', { badFilter: `provider=${long}` }), ours.slice(0, 2));
  assert.deepEqual(await assertPaged(s, `/audit-logs?api_key_id=${keyId}`, { badFilter: `model=${long}` }),
    ours.slice(0, 2));
  assert.deepEqual(await assertPaged(s, `/audit-logs?provider=openai&model=gpt-4o-mini&api_key_id=${keyId}`),
    ours.slice(0, 2));
});
