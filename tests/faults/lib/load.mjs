// Load and audit checks shared by the fault tests (tests/faults/*.test.mjs).
//
//   const load = startLoad(s, key, { concurrency: 6, maxMs: 6000 });
//   ... inject a fault while load runs ...
//   const results = await load.stop();
//   await verifyAudit(s, results, { keyId });
//
// Load is a bounded loop (in requests and in time) of concurrent requests
// with the official openai client through the proxy, mixed JSON and
// streaming, every one recorded with its audit id, its cost header (JSON)
// and the cost the fixture's usage implies (streams: the trailer is not
// visible to the SDK, so the cost is computed from the tokens).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import {
  sleep, waitFor, usdToNano, expectedCostNano,
} from '../../integration/lib/stack.mjs';
import { fixtureUsage } from '../../fixtures/openai-fixture.mjs';

export const MODEL = 'gpt-4o-mini';

/** Body of the i-th load request: small, varied prompts and max_tokens. */
export function loadBody(tag, i, stream) {
  const content = `${tag} #${i} ${'ç'.repeat(i % 37)} ${'x'.repeat((i * 7) % 53)}`;
  return { model: MODEL, messages: [{ role: 'user', content }], max_tokens: 4 + (i % 29), stream };
}

function headerOf(e, name) {
  const h = e?.headers;
  if (!h) return null;
  if (typeof h.get === 'function') return h.get(name);
  return h[name] ?? null;
}

/**
 * One request through the official client. Returns
 * { i, stream, status, id, cost, expectedNano, ok, phase, error, t0, t1 }.
 * ok: 200 and (stream) every chunk through to finish_reason 'stop'.
 */
export async function oneRequest(client, body, i, { headers } = {}) {
  const rec = { i, stream: !!body.stream, status: 0, id: null, cost: null, ok: false, t0: Date.now(), content: body.messages[0].content };
  rec.expectedNano = expectedCostNano(MODEL, fixtureUsage(body));
  let response;
  try {
    const r = await client.chat.completions.create(body, headers ? { headers } : undefined).withResponse();
    response = r.response;
    rec.status = response.status;
    rec.id = response.headers.get('x-spendpol-audit-id');
    rec.cost = response.headers.get('x-spendpol-cost');
    if (body.stream) {
      let finished = false;
      rec.chunks = 0;
      for await (const c of r.data) {
        rec.chunks++;
        if (c.choices?.[0]?.finish_reason === 'stop') finished = true;
      }
      rec.ok = rec.status === 200 && finished;
      if (!finished) { rec.phase = 'stream'; rec.error = 'stream ended without finish_reason stop'; }
    } else {
      const text = r.data?.choices?.[0]?.message?.content ?? '';
      rec.ok = rec.status === 200 && text.length > 0;
    }
  } catch (e) {
    rec.phase = response ? 'stream' : 'request';
    const cause = e?.cause ? ` (cause: ${e.cause.code ?? ''} ${e.cause.message ?? ''}${e.cause.cause ? ` / ${e.cause.cause.code ?? ''} ${e.cause.cause.message ?? ''}` : ''})` : '';
    rec.error = `${e?.constructor?.name}: ${e?.message}${cause}`.slice(0, 300);
    if (!response) {
      rec.status = e?.status ?? 0;
      rec.id = headerOf(e, 'x-spendpol-audit-id');
      rec.code = e?.code ?? e?.error?.code ?? null;
    }
  }
  rec.t1 = Date.now();
  return rec;
}

/**
 * A streamed request over node:http with `TE: trailers`, so the
 * X-Spendpol-Cost trailer is seen (the SDK's fetch does not expose
 * trailers). Same record as oneRequest, raw: true.
 */
export function rawStreamRequest(url, key, body, i, { headers = {} } = {}) {
  const rec = { i, stream: true, raw: true, status: 0, id: null, cost: null, ok: false, t0: Date.now(), content: body.messages[0].content };
  rec.expectedNano = expectedCostNano(MODEL, fixtureUsage(body));
  const u = new URL(`${url}/chat/completions`);
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    const done = (err) => {
      if (err && !rec.error) { rec.error = `${err.code ?? ''} ${err.message}`.slice(0, 300); rec.phase = rec.status ? 'stream' : 'request'; }
      rec.t1 = Date.now();
      resolve(rec);
    };
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', timeout: 15_000,
      headers: {
        authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': payload.length, te: 'trailers', ...headers,
      },
    }, (res) => {
      rec.status = res.statusCode;
      rec.id = res.headers['x-spendpol-audit-id'] ?? null;
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('error', done);
      res.on('aborted', () => done(new Error('response aborted')));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        rec.cost = res.trailers['x-spendpol-cost'] ?? null;
        const finished = /"finish_reason":"stop"/.test(text) && /data: \[DONE\]/.test(text);
        rec.ok = rec.status === 200 && finished && rec.cost != null;
        if (!rec.ok && !rec.error) {
          rec.phase = 'stream';
          rec.error = rec.status !== 200 ? text.slice(0, 200) : (finished ? 'no X-Spendpol-Cost trailer' : 'stream ended without finish_reason stop');
        }
        done();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', done);
    req.end(payload);
  });
}

/**
 * Starts concurrency workers sending requests until stop() is called, maxMs
 * passed or maxRequests were sent. more(n) keeps the load going (past maxMs,
 * restarting the workers if they ended) until n more requests completed, so
 * a slow machine makes a phase longer, not the test fail. Every other request streams (every
 * streamEvery-th; stream: true or false for all).
 */
export function startLoad(s, key, {
  concurrency = 6, maxMs = 8000, maxRequests = 3000, streamEvery = 2, tag = 'load', headers, stream, rawEvery = 8,
} = {}) {
  const client = s.client(key, { timeout: 15_000 });
  const results = [];
  const started = Date.now();
  let next = 0;
  let stopped = false;
  const runTag = `${tag}-${crypto.randomBytes(3).toString('hex')}`;
  let deadline = started + maxMs;
  const worker = async () => {
    while (!stopped && Date.now() < deadline && next < maxRequests) {
      const i = next++;
      const body = loadBody(runTag, i, stream ?? (i % streamEvery === 1));
      // one stream in four over node:http, to check the X-Spendpol-Cost trailer too
      if (body.stream && rawEvery && i % rawEvery === rawEvery - 1) {
        results.push(await rawStreamRequest(s.openaiBaseURL, key, body, i, { headers }));
      } else {
        results.push(await oneRequest(client, body, i, { headers }));
      }
    }
  };
  let done = Promise.all(Array.from({ length: concurrency }, worker));
  let running = true;
  done.then(() => { running = false; });
  return {
    results,
    started,
    /** requests completed so far */
    get count() { return results.length; },
    /** waits until at least n more requests completed (bounded) */
    async more(n, timeout = 10_000) {
      const want = results.length + n;
      deadline = Math.max(deadline, Date.now() + timeout);
      if (!running && !stopped && next < maxRequests) {
        const again = Promise.all(Array.from({ length: concurrency }, worker));
        done = Promise.all([done, again]);
        running = true;
        again.then(() => { running = false; });
      }
      await waitFor(() => results.length >= want, { timeout, interval: 20, message: `${n} more load requests` });
    },
    async stop() {
      stopped = true;
      await done;
      return results;
    },
  };
}

/** One line per failure kind, for assertion messages. */
export function summarize(recs, n = 8) {
  const by = new Map();
  for (const r of recs) {
    const k = `${r.status} ${r.phase ?? ''} ${r.code ?? ''} ${r.error ?? ''}`.slice(0, 160);
    by.set(k, (by.get(k) ?? 0) + 1);
  }
  return [...by].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, c]) => `${c}x ${k}`).join('\n');
}

/** Fail static: every request answered 200 and complete, except those `allowed(rec)` says the fault caused. */
export function assertAnswered(results, { min = 20, allowed = () => false, what = 'the fault' } = {}) {
  const ok = results.filter((r) => r.ok);
  assert.ok(ok.length >= min, `only ${ok.length} of ${results.length} requests succeeded during ${what}:\n${summarize(results.filter((r) => !r.ok))}`);
  const bad = results.filter((r) => !r.ok && !allowed(r));
  assert.equal(bad.length, 0, `${bad.length} of ${results.length} requests failed during ${what}:\n${summarize(bad)}`);
  const noId = results.filter((r) => r.status === 200 && !r.id);
  assert.equal(noId.length, 0, `${noId.length} answers without X-Spendpol-Audit-Id`);
}

/**
 * The keep-alive race: the server closed an idle persistent connection
 * (e.g. an nginx worker exiting gracefully after a reload) just as the
 * client sent its next request on it. No response at all, "other side
 * closed" / "socket hang up". Such a request must never have reached the
 * provider (checked against the fixture's log by notForwarded()).
 */
export function keepAliveRace(r) {
  return !r.ok && r.status === 0 && r.phase === 'request' && !r.id
    && /other side closed|socket hang up|ECONNRESET/.test(r.error ?? '');
}

/** The fixture never received these requests (their prompt is unique). */
export function assertNotForwarded(s, recs) {
  const seen = s.fixture.completions().map((q) => q.body);
  const reached = recs.filter((r) => seen.some((b) => b.includes(JSON.stringify(r.content).slice(1, -1))));
  assert.deepEqual(reached.map((r) => `#${r.i} ${r.error}`), [], 'requests that failed without any answer reached the provider');
}

/** Every audit row, pages of 1000. */
export async function allRows(s) {
  return s.allAuditRows({ limit: 1000 });
}

/**
 * After recovery: every request in `recs` that the proxy answered with an
 * audit id is in GET /audit-logs exactly once; rows of completed requests
 * cost what their X-Spendpol-Cost header said (JSON) or what their tokens
 * cost (streams); if keyId is given, the key's rows are exactly these
 * requests and their total matches. Returns { rows, byId, keyRows, totalNano }.
 */
export async function verifyAudit(s, recs, {
  keyId, timeout = 30_000, mustHave = (r) => !!r.id, exactKeyRows = true,
} = {}) {
  const want = recs.filter(mustHave);
  const wantIds = new Set(want.map((r) => r.id));
  assert.equal(wantIds.size, want.length, 'audit ids in X-Spendpol-Audit-Id are unique');
  let rows = [];
  const end = Date.now() + timeout;
  for (;;) {
    rows = await allRows(s);
    const have = new Set(rows.map((r) => r.id));
    const missing = [...wantIds].filter((id) => !have.has(id));
    if (!missing.length) break;
    if (Date.now() > end) {
      const ex = want.filter((r) => missing.includes(r.id)).slice(0, 5)
        .map((r) => `${r.id} (#${r.i} ${r.stream ? 'stream' : 'json'} status ${r.status} at +${r.t0 - want[0].t0} ms ${r.error ?? ''})`);
      assert.fail(`${missing.length} of ${wantIds.size} answered requests missing from /audit-logs after ${timeout} ms, e.g.\n${ex.join('\n')}`);
    }
    await sleep(250);
  }
  const counts = new Map();
  for (const r of rows) counts.set(r.id, (counts.get(r.id) ?? 0) + 1);
  const dup = [...counts].filter(([, n]) => n > 1);
  assert.deepEqual(dup, [], `${dup.length} audit ids duplicated in /audit-logs`);
  const byId = new Map(rows.map((r) => [r.id, r]));

  // cost of each completed request
  const costBad = [];
  let expectTotal = 0n;
  for (const r of want) {
    const row = byId.get(r.id);
    if (!r.ok) continue;
    const nano = BigInt(row.cost_nano);
    expectTotal += r.expectedNano;
    if (nano !== r.expectedNano) costBad.push(`${r.id}: row ${row.cost_nano} nano, expected ${r.expectedNano} (${r.stream ? 'stream' : 'json'})`);
    if (usdToNano(row.cost_usd) !== nano) costBad.push(`${r.id}: cost_usd ${row.cost_usd} != cost_nano ${row.cost_nano}`);
    if (r.cost != null && usdToNano(r.cost) !== usdToNano(row.cost_usd)) {
      costBad.push(`${r.id}: X-Spendpol-Cost ${r.cost} != cost_usd ${row.cost_usd}`);
    }
    if (row.status !== 200 || row.error_code) costBad.push(`${r.id}: completed request has status ${row.status} error_code ${row.error_code}`);
  }
  assert.deepEqual(costBad.slice(0, 10), [], `${costBad.length} rows with a wrong cost or status`);

  let keyRows = [];
  let totalNano = 0n;
  if (keyId) {
    keyRows = rows.filter((r) => r.api_key_id === keyId);
    totalNano = keyRows.reduce((a, r) => a + BigInt(r.cost_nano), 0n);
    if (exactKeyRows) {
      // the harness's waitKeyAccepted() probes the key with a malformed body (400 invalid_json)
      const extra = keyRows.filter((r) => !wantIds.has(r.id) && !(r.status === 400 && r.error_code === 'invalid_json'));
      assert.deepEqual(extra.map((r) => `${r.id} status ${r.status} ${r.error_code}`).slice(0, 10), [],
        `${extra.length} audit rows of the key that no answered request carries`);
    }
    const okTotal = keyRows.filter((r) => want.find((w) => w.id === r.id)?.ok).reduce((a, r) => a + BigInt(r.cost_nano), 0n);
    assert.equal(okTotal, expectTotal, 'total cost of the completed requests');
  }
  return { rows, byId, keyRows, totalNano };
}

/**
 * A budget on a fresh project (limit far above what the test spends) and a
 * key in that project; null budget when POST /budgets is not there.
 * action 'warn' for a test whose node has no controld from the start: a
 * blocking budget is leased, and without controld the node holds no lease
 * (402 budget_unavailable, docs/budgets.md).
 */
export async function budgetedKey(s, tag, { action } = {}) {
  const project = `f-${tag}-${crypto.randomBytes(3).toString('hex')}`;
  const r = await s.api('POST', '/budgets', {
    body: {
      name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: '1000', period: 'daily',
      ...(action ? { action } : {}),
    },
  });
  let budget = null;
  if (r.status === 201) budget = r.json;
  else if (r.status !== 404) assert.fail(`POST /budgets -> ${r.status} ${r.text}`);
  const key = await s.createKey({ name: `k-${project}`, project });
  return { key: key.key, keyId: key.id, budget, project };
}

/** GET /budgets/{id}/spend equals totalNano (waits for the spend to settle). */
export async function assertBudgetSpend(s, budget, totalNano, timeout = 15_000) {
  if (!budget) return;
  let last;
  try {
    await waitFor(async () => {
      last = await s.api('GET', `/budgets/${budget.id}/spend`);
      return last.status === 200 && usdToNano(last.json.spent_usd) === totalNano;
    }, { timeout, interval: 200, message: 'budget spend' });
  } catch {
    assert.fail(`GET /budgets/${budget.id}/spend: ${last?.status} ${last?.text?.slice(0, 300)}; the audit rows sum to ${totalNano} nano-USD`);
  }
}
