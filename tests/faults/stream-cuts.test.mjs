// Streams cut short under load: a client that disconnects mid-stream, and an
// upstream that resets mid-stream. The other requests are unaffected; every
// cut request has exactly one audit row, with a sensible status and
// error_code and a cost for what was delivered (never $0).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { useStack, sleep, waitFor } from '../integration/lib/stack.mjs';
import {
  startLoad, assertAnswered, verifyAudit, budgetedKey, assertBudgetSpend, loadBody, allRows, MODEL,
} from './lib/load.mjs';

const s = useStack();

function tally(rows, f) {
  const m = {};
  for (const r of rows) { const k = f(r); m[k] = (m[k] ?? 0) + 1; }
  return JSON.stringify(m);
}

/** A stream read for `chunks` chunks, then aborted by the client. */
async function disconnectAfter(client, body, chunks) {
  const ac = new AbortController();
  const rec = { chunks: 0, id: null, status: 0 };
  try {
    const { data, response } = await client.chat.completions.create(body, { signal: ac.signal }).withResponse();
    rec.status = response.status;
    rec.id = response.headers.get('x-spendpol-audit-id');
    for await (const c of data) {
      if (c.choices?.[0]?.finish_reason === 'stop') rec.finished = true;
      if (++rec.chunks >= chunks) { ac.abort(); break; }
    }
  } catch (e) {
    rec.error = e?.message;
  }
  return rec;
}

test('clients that disconnect mid-stream: one audit row each, billed for what was delivered', async (t) => {
  const bg = await budgetedKey(s, 'bg-disc');
  const cut = await budgetedKey(s, 'disc');
  const load = startLoad(s, bg.key, { concurrency: 4, maxMs: 12_000, tag: 'disc-bg' });
  const client = s.client(cut.key);
  const cuts = [];
  for (let i = 0; i < 24; i++) {
    // 3 at a time, cut after 1..4 chunks
    const batch = [0, 1, 2].map((j) => disconnectAfter(client, loadBody('disc', i * 3 + j, true), 1 + ((i + j) % 4)));
    cuts.push(...(await Promise.all(batch)));
    if (cuts.length >= 36) break;
  }
  await load.more(20);
  const results = await load.stop();
  t.diagnostic(`${results.length} background requests, ${cuts.length} disconnects (${cuts.filter((c) => c.finished).length} saw the whole stream first)`);

  assertAnswered(results, { what: 'client disconnects' });
  const bgv = await verifyAudit(s, results, { keyId: bg.keyId });
  await assertBudgetSpend(s, bg.budget, bgv.totalNano);

  assert.equal(cuts.filter((c) => c.status === 200 && c.id).length, cuts.length, `every cut stream started with 200 and an audit id: ${JSON.stringify(cuts.filter((c) => !c.id).slice(0, 3))}`);
  const recs = cuts.map((c, i) => ({ ...c, i, ok: false }));
  const { byId, keyRows, totalNano } = await verifyAudit(s, recs, { keyId: cut.keyId });
  const rows = recs.map((c) => byId.get(c.id));
  t.diagnostic(`disconnect rows: status ${tally(rows, (r) => r.status)}, error_code ${tally(rows, (r) => r.error_code || '-')}, warnings ${tally(rows, (r) => JSON.stringify(r.warnings))}`);
  const bad = [];
  for (const [i, r] of rows.entries()) {
    if (![200, 499].includes(r.status)) bad.push(`${r.id}: status ${r.status}`);
    if (!['', 'stream_incomplete', 'client_closed'].includes(r.error_code ?? '')) bad.push(`${r.id}: error_code ${r.error_code}`);
    if (!(BigInt(r.cost_nano) > 0n)) bad.push(`${r.id}: cost ${r.cost_nano} for a stream that delivered ${recs[i].chunks} chunks`);
    if (!(r.input_tokens > 0)) bad.push(`${r.id}: input_tokens ${r.input_tokens}`);
    // the first chunk is the role chunk with no text: output is billed from the 3rd on
    if (r.error_code === 'stream_incomplete' && recs[i].chunks >= 3 && !(r.output_tokens > 0)) bad.push(`${r.id}: cut after ${recs[i].chunks} chunks but output_tokens ${r.output_tokens}`);
    if (r.stream !== true) bad.push(`${r.id}: stream ${r.stream}`);
  }
  assert.deepEqual(bad.slice(0, 10), [], `${bad.length} problems in the disconnected streams' rows`);
  assert.equal(keyRows.filter((r) => r.status !== 400).length, cuts.length, 'one row per disconnected stream');
  await assertBudgetSpend(s, cut.budget, totalNano);
});

test('client gone before the provider answered: the request is still audited', async (t) => {
  const { key, keyId } = await budgetedKey(s, 'early');
  const client = s.client(key);
  const n = 6;
  const outcomes = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    try {
      // the fixture waits 1.5 s before answering "slow" requests
      await client.chat.completions.create(loadBody('early', i, i % 2 === 0), { signal: ac.signal, headers: { 'X-Fixture-Mode': 'slow' } });
      return 'answered';
    } catch (e) { return e?.constructor?.name; }
  }));
  await sleep(2500); // the upstream answers after 1.5 s; the log phase runs when nginx notices
  let rows = [];
  await waitFor(async () => {
    rows = (await allRows(s)).filter((r) => r.api_key_id === keyId && r.status !== 400);
    return rows.length >= n;
  }, { timeout: 10_000, interval: 250, message: `${n} audit rows for requests whose client left before the answer` }).catch(() => {});
  t.diagnostic(`client side: ${JSON.stringify(outcomes)}; rows: ${rows.length}, status ${tally(rows, (r) => r.status)}, error_code ${tally(rows, (r) => r.error_code || '-')}, cost_nano ${tally(rows, (r) => r.cost_nano)}`);
  assert.equal(rows.length, n, `${n} requests reached the gateway and were abandoned by the client; audit rows: ${rows.length}`);
  const ids = new Set(rows.map((r) => r.id));
  assert.equal(ids.size, rows.length, 'no duplicate rows');
});

/** A JSON request the fixture resets mid-body, over node:http: what arrived. */
function rawJsonReset(s, key, body) {
  const u = new URL(`${s.openaiBaseURL}/chat/completions`);
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    const out = { status: 0, id: null, contentLength: null, got: 0 };
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', timeout: 10_000,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': payload.length, 'x-fixture-mode': 'reset' },
    }, (res) => {
      out.status = res.statusCode;
      out.id = res.headers['x-spendpol-audit-id'] ?? null;
      out.contentLength = res.headers['content-length'] ?? null;
      res.on('data', (d) => { out.got += d.length; });
      res.on('error', (e) => { out.error = e.message; });
      res.on('aborted', () => { out.error = out.error ?? 'aborted'; });
      res.on('close', () => resolve(out));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => { out.error = e.message; resolve(out); });
    req.end(payload);
  });
}

async function resetRun(t, tag, stream) {
  const bg = await budgetedKey(s, `bg-${tag}`);
  const cut = await budgetedKey(s, tag);
  const load = startLoad(s, bg.key, { concurrency: 4, maxMs: 12_000, tag: `${tag}-bg` });
  // every request of this key is reset by the fixture: streams mid-stream, JSON mid-body
  const resets = startLoad(s, cut.key, {
    concurrency: 3, maxMs: 12_000, maxRequests: 30, stream, tag, headers: { 'X-Fixture-Mode': 'reset' },
  });
  await waitFor(() => resets.count >= 30, { timeout: 12_000, interval: 50, message: '30 reset requests' }).catch(() => {});
  const cutRes = await resets.stop();
  await load.more(20);
  const results = await load.stop();

  assertAnswered(results, { what: 'upstream resets on another key' });
  const bgv = await verifyAudit(s, results, { keyId: bg.keyId });
  await assertBudgetSpend(s, bg.budget, bgv.totalNano);
  return { cut, cutRes };
}

test('upstream resets mid-stream: row present, error_code stream_incomplete, usage estimated, cost > 0', async (t) => {
  const { cut, cutRes } = await resetRun(t, 'reset-sse', true);
  const streams = cutRes;
  t.diagnostic(`reset streams, client side: ${tally(streams, (r) => `${r.status} ${r.ok ? 'complete' : r.phase ?? ''}`)}`);
  assert.ok(streams.length >= 10, `${streams.length} reset streams`);
  assert.equal(streams.filter((r) => r.ok).length, 0, 'a reset stream must not look complete to the client');
  assert.equal(streams.filter((r) => r.status === 200 && r.id).length, streams.length, 'reset streams started with 200 and an audit id');

  const recs = streams.map((r) => ({ ...r, ok: false }));
  const { byId, totalNano } = await verifyAudit(s, recs, { keyId: cut.keyId });
  const srows = streams.map((r) => byId.get(r.id));
  t.diagnostic(`reset stream rows: error_code ${tally(srows, (r) => r.error_code || '-')}, warnings ${tally(srows, (r) => JSON.stringify(r.warnings))}, status ${tally(srows, (r) => r.status)}`);
  const bad = [];
  for (const r of srows) {
    if (r.error_code !== 'stream_incomplete') bad.push(`${r.id}: error_code ${JSON.stringify(r.error_code)}`);
    if (!JSON.stringify(r.warnings).includes('usage_estimated')) bad.push(`${r.id}: warnings ${JSON.stringify(r.warnings)} without usage_estimated`);
    if (!(BigInt(r.cost_nano) > 0n)) bad.push(`${r.id}: cost ${r.cost_nano}`);
    if (!(r.input_tokens > 0 && r.output_tokens > 0)) bad.push(`${r.id}: tokens ${r.input_tokens}/${r.output_tokens}`);
    if (r.model !== 'gpt-4o-mini-2024-07-18' && r.model !== MODEL) bad.push(`${r.id}: model ${r.model}`);
  }
  assert.deepEqual(bad.slice(0, 10), [], `${bad.length} problems in the reset streams' rows`);
  await assertBudgetSpend(s, cut.budget, totalNano);
});

test('upstream resets mid-body (JSON): one audit row each, and the row says the response was cut', async (t) => {
  const { cut, cutRes } = await resetRun(t, 'reset-json', false);
  t.diagnostic(`reset JSON, client side: ${tally(cutRes, (r) => `${r.status} ${r.id ? 'id' : 'no-id'} ${r.error ?? ''}`.slice(0, 100))}`);
  assert.equal(cutRes.filter((r) => r.ok).length, 0, 'a reset JSON response must not look complete to the client');
  let rows = [];
  await waitFor(async () => {
    rows = (await allRows(s)).filter((r) => r.api_key_id === cut.keyId && !(r.status === 400 && r.error_code === 'invalid_json'));
    return rows.length >= cutRes.length;
  }, { timeout: 15_000, interval: 250, message: `${cutRes.length} rows` }).catch(() => {});
  t.diagnostic(`reset JSON rows: ${tally(rows, (r) => `status ${r.status} error_code ${r.error_code || '-'} warnings ${JSON.stringify(r.warnings)} output_tokens ${r.output_tokens} cost>0 ${BigInt(r.cost_nano) > 0n}`)}`);
  // what exactly a client gets, seen over node:http
  const raw = [];
  for (let i = 0; i < 3; i++) raw.push(await rawJsonReset(s, cut.key, loadBody('reset-raw', i, false)));
  t.diagnostic(`reset JSON over node:http: ${JSON.stringify(raw)}`);
  for (const r of raw.filter((x) => x.id)) {
    const row = await s.waitAuditRow(r.id);
    t.diagnostic(`  ${r.id}: client status ${r.status}, ${r.got}/${r.contentLength} body bytes, ${r.error ?? 'no error'}; row status ${row.status} error_code ${JSON.stringify(row.error_code)} tokens ${row.input_tokens}/${row.output_tokens} cost_nano ${row.cost_nano}`);
  }
  rows = (await allRows(s)).filter((r) => r.api_key_id === cut.keyId && !(r.status === 400 && r.error_code === 'invalid_json')
    && !raw.some((x) => x.id === r.id));
  assert.equal(new Set(rows.map((r) => r.id)).size, rows.length, 'no duplicate rows');
  assert.equal(rows.length, cutRes.length, 'one audit row per reset request');
  for (const r of rows) assert.ok(BigInt(r.cost_nano) >= 0n);
  // the client got a broken connection, not a 200: the row must not read as a clean success
  const clean = rows.filter((r) => r.status === 200 && !r.error_code);
  assert.deepEqual(clean.map((r) => r.id).slice(0, 5), [],
    `${clean.length} of ${rows.length} JSON responses cut mid-body by the provider are audited as status 200 with no error_code, while the client got a connection error`);
});
