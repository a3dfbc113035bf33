// Shared helpers of the provider_<name>.test.mjs files: a stack whose
// provider points at that provider's fixture, list prices parsed from
// migrations/data/prices.tsv, exact nano-USD cost, audit rows, trailers, and
// a record of the last proxy response every SDK got (its X-Spendpol-*
// headers, also for errors the SDKs turn into exceptions).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  Stack, REPO, IS_SAN, sleep, waitFor, usdToNano, nanoToUsd,
} from './stack.mjs';

export const SLOW = IS_SAN ? 3 : 1;
export const CREDENTIAL = 'fixture-provider-secret-0123456789';

// ------------------------------------------------------------ prices

/** USD decimal string -> nano-USD (BigInt) */
const nano = (usd) => usdToNano(usd);

/**
 * prices.tsv -> Map "provider/model" -> {input, output, cached, cacheWrite}
 * in nano-USD per 1M tokens (BigInt); a blank cached/cache-write column is
 * the input price.
 */
export function loadPrices(file = path.join(REPO, 'migrations/data/prices.tsv')) {
  const map = new Map();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim() || line.startsWith('#')) continue;
    const [provider, model, input, output, cached, cacheWrite] = line.split('\t');
    const p = {
      input: nano(input), output: nano(output),
      cached: cached ? nano(cached) : nano(input),
      cacheWrite: cacheWrite ? nano(cacheWrite) : nano(input),
    };
    map.set(`${provider}/${model}`, p);
  }
  return map;
}

export const PRICES = loadPrices();

export function priceOf(provider, model) {
  const p = PRICES.get(`${provider}/${model}`);
  assert.ok(p, `no list price for ${provider}/${model} in prices.tsv`);
  return p;
}

/**
 * sp_cost_nano: round half up of
 * (uncached*in + cached*cached_in + written*cw + out*out) / 1e6.
 * usage = {input (all input tokens, cached and written included), output,
 * cached, cacheWrite}
 */
export function costNano(price, u) {
  const input = BigInt(u.input);
  const cached = BigInt(u.cached ?? 0);
  const written = BigInt(u.cacheWrite ?? 0);
  const uncached = input - cached - written;
  const total = uncached * price.input + cached * price.cached + written * price.cacheWrite
    + BigInt(u.output) * price.output;
  return (total + 500_000n) / 1_000_000n;
}

/** the header's cost must be the exact cost, to as many decimals as it prints */
export function assertCostString(cost, expectedNano, what = 'cost') {
  assert.match(cost ?? '', /^\d+\.\d{6,9}$/, `${what}: ${cost}`);
  const decimals = cost.split('.')[1].length;
  assert.equal(usdToNano(cost), expectedNano, `${what} ${cost} vs expected ${expectedNano} nano-USD (${nanoToUsd(expectedNano, 9)})`);
  assert.ok(decimals >= 6);
}

// ------------------------------------------------------------ fetch recorder

// Every SDK ends in globalThis.fetch (or gets it passed); the last response
// from the proxy is kept so a test can read its headers even when the SDK
// threw.
const realFetch = globalThis.fetch;
export const proxyResponses = [];
let proxyPrefix = null;
globalThis.fetch = async function recordingFetch(input, init) {
  const res = await realFetch(input, init);
  const url = typeof input === 'string' ? input : (input?.url ?? String(input));
  if (proxyPrefix && url.startsWith(proxyPrefix)) {
    const requestHeaders = new Headers(init?.headers ?? (typeof input === 'object' ? input.headers : undefined));
    proxyResponses.push({ url, status: res.status, headers: res.headers, requestHeaders });
    if (proxyResponses.length > 50) proxyResponses.shift();
  }
  return res;
};
export const lastProxyResponse = () => proxyResponses[proxyResponses.length - 1];

// ------------------------------------------------------------ the stack

/**
 * A stack for one provider: starts the fixture (startFixture()), points
 * PUT /providers/{name} at it (base URL fixture.url + basePath) with
 * CREDENTIAL and the given extra provider fields, waits until the proxy
 * routes the provider. Returns {s, fx (getter), key (getter), baseURL}.
 */
export function useProviderStack(name, startFixture, { basePath = '', provider = {} } = {}) {
  const s = new Stack({ provider: false });
  const ctx = {
    s, name, fx: null, key: null, keyId: null,
    get baseURL() { return `${s.proxyURL}/v1/${name}`; },
  };
  before(async () => {
    // as useStack() does, in one hook so the order is certain
    try {
      await s.start();
    } catch (e) {
      s.failed = true;
      throw e;
    }
    ctx.fx = await startFixture({ expectedKey: CREDENTIAL });
    proxyPrefix = s.proxyURL;
    const r = await s.api('PUT', `/providers/${name}`, {
      body: { api_key: CREDENTIAL, base_url: ctx.fx.url + basePath, ...provider },
    });
    assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/${name} -> ${r.status} ${r.text}`);
    const k = await s.createKey({ name: `${name}-sdk` });
    ctx.key = k.key;
    ctx.keyId = k.id;
    await waitRouted(s, name, ctx.key);
  }, { timeout: 240_000 * SLOW });
  after(async () => {
    const alive = setInterval(() => {}, 1000);
    let problems;
    try {
      await ctx.fx?.close();
      problems = await s.stop();
    } finally { clearInterval(alive); }
    if (problems.length) {
      assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
    }
  }, { timeout: 120_000 });
  return ctx;
}

/** status of a malformed body to /v1/{name}/...: 400 once routed, 404 before */
export async function routeStatus(s, name, key, pathSuffix = 'x') {
  const r = await realFetch(`${s.proxyURL}/v1/${name}/${pathSuffix}`, {
    method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"model": ',
  });
  await r.arrayBuffer();
  return r.status;
}

/*
 * Routed: the provider is configured (404 provider_not_configured until
 * then), so the path /x, no endpoint of any catalogue, is refused as such.
 */
export async function waitRouted(s, name, key) {
  return s.waitStable(() => routeStatus(s, name, key), (st) => st === 403,
    { message: `the proxy to route /v1/${name}`, timeout: 10_000 * SLOW });
}

// ------------------------------------------------------------ audit rows

export async function auditRow(s, id) {
  assert.match(id ?? '', /^evt_/, `X-Spendpol-Audit-Id ${id}`);
  return s.waitAuditRow(id, 15_000 * SLOW);
}

/** asserts tokens and cost of an audit row against normalised usage */
export function assertRowUsage(row, u, expectedNano, what = 'audit row') {
  assert.equal(Number(row.input_tokens), u.input, `${what}: input_tokens ${JSON.stringify(row)}`);
  assert.equal(Number(row.output_tokens), u.output, `${what}: output_tokens`);
  assert.equal(Number(row.cached_tokens ?? 0), u.cached ?? 0, `${what}: cached_tokens`);
  if (u.cacheWrite !== undefined) assert.equal(Number(row.cache_write_tokens ?? 0), u.cacheWrite, `${what}: cache_write_tokens`);
  assert.equal(usdToNano(row.cost_usd), expectedNano, `${what}: cost_usd ${row.cost_usd} vs ${expectedNano} nano-USD`);
}

// ------------------------------------------------------------ raw requests

/**
 * A raw HTTP request that reads trailers: resolves {status, headers,
 * trailers, text}; a reset after the headers resolves with error set.
 */
export function rawRequest(url, { method = 'POST', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const buf = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { te: 'trailers', ...headers };
    if (buf) { h['content-length'] = buf.length; h['content-type'] ??= 'application/json'; }
    // the path exactly as written: URL() would resolve "%2e%2e" segments
    const u = new URL(url);
    const path = url.slice(url.indexOf('/', url.indexOf('//') + 2)) || '/';
    const req = http.request({ host: u.hostname, port: u.port, path, method, headers: h }, (r) => {
      const chunks = [];
      const done = (error) => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { json = null; }
        resolve({ status: r.statusCode, headers: r.headers, trailers: r.trailers, text, json, error });
      };
      r.on('data', (d) => chunks.push(d));
      r.on('end', () => done(null));
      r.on('error', (e) => done(e));
      r.on('aborted', () => done(new Error('aborted')));
    });
    req.on('error', reject);
    if (buf) req.end(buf); else req.end();
  });
}

/** the provider never saw a Spendpol key: not in headers, query or body */
export function assertNoSpendpolKey(rec, key) {
  const all = JSON.stringify(rec.rawHeaders) + rec.path + rec.body;
  assert.ok(!all.includes(key), `the Spendpol key reached the provider: ${JSON.stringify(rec.rawHeaders)} ${rec.path}`);
  assert.ok(!/sp_key_/.test(all), `an sp_key_ reached the provider: ${JSON.stringify(rec.rawHeaders)} ${rec.path}`);
  assert.equal(rec.headers['x-spendpol-key'], undefined);
}

/** X-Spendpol-Policy-Warning as a list */
export function warningsOf(v) {
  return String(v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
}

/** GET /alerts?type=unpriced_model, waiting for one about model */
export async function waitUnpricedAlert(s, provider, model) {
  return waitFor(async () => {
    const r = await s.api('GET', '/alerts?type=unpriced_model&limit=100');
    assert.equal(r.status, 200, r.text);
    return (r.json?.data ?? []).find((a) => a.details?.provider === provider && a.details?.model === model);
  }, { timeout: 15_000 * SLOW, interval: 200, message: `an unpriced_model alert for ${provider}/${model}` });
}

/** PATCH /org refuse_unpriced_models and wait until the proxy applies it */
export async function setRefuseUnpriced(s, on, probe) {
  const r = await s.api('PATCH', '/org', { body: { refuse_unpriced_models: on } });
  assert.equal(r.status, 200, `PATCH /org -> ${r.status} ${r.text}`);
  assert.equal(r.json.refuse_unpriced_models, on);
  // probe(): the status the proxy gives an unpriced request now
  await s.waitStable(probe, (st) => (on ? st === 400 : st !== 400),
    { message: `refuse_unpriced_models=${on} to reach the proxy`, times: 4, timeout: 10_000 * SLOW });
}

export { sleep, usdToNano, nanoToUsd };

// ------------------------------------------------------------ the suite

/** ~1050 prompt tokens of multi-byte text: above the fixtures' cache threshold */
export const LONG_PROMPT = ('Spend governance für LLM-APIs — Kosten ✓, Budgets 日本語, 🚀 ').repeat(80).slice(0, 4150);
export const SHORT_PROMPT = 'Sag hallo auf Deutsch, bitte — grüß mich ✓ 🚀';

/**
 * Registers the common tests of one provider. adapter:
 *   provider, model, answeredModel, unpricedModel, maxTokens
 *   client(key)                        the official SDK pointed at ctx.baseURL
 *   complete(client, conv)             -> text (conv: {model, prompt, maxTokens})
 *   stream(client, conv)               -> {text, events}
 *   raw(conv, {stream, key})           -> {path, headers, body} for a raw request
 *   requests(fx)                       the fixture's recorded generation requests
 *   billing(rec), reply(rec)           from the fixture: normalised usage, answer text
 *   assertCredential(rec)              the provider credential in the provider's header
 *   assertProviderError(err, status)   the SDK's own typed error with the provider's message
 *   assertAuthError(err)               the SDK's authentication error
 *   keyHeaders(key)                    where the provider's API takes its key (raw request headers)
 *   sdkKeyHeaders(key)                 where this SDK version puts it, when not there
 */
export function providerSuite(ctx, a, test) {
  const { s } = ctx;
  const conv = (prompt, extra = {}) => ({ model: a.model, prompt, maxTokens: a.maxTokens ?? 77, ...extra });
  const lastRec = () => { const r = a.requests(ctx.fx); return r[r.length - 1]; };
  const lastAuditId = () => lastProxyResponse()?.headers.get('x-spendpol-audit-id');
  const price = () => priceOf(a.provider, a.priceModel ?? a.model);

  test(`${a.provider}: non-streamed via the SDK: answer, credential, no Spendpol key, exact usage and cost`, async () => {
    ctx.fx.clear();
    const client = a.client(ctx.key);
    const text = await a.complete(client, conv(LONG_PROMPT));
    const rec = lastRec();
    assert.ok(rec, 'the fixture got the request');
    assert.equal(a.requests(ctx.fx).length, 1, 'exactly one upstream request');
    assert.equal(text, a.reply(rec));
    assert.match(text, /Grüße .* ✓ — 日本語のテキスト 🚀🧪/);
    a.assertCredential(rec);
    assertNoSpendpolKey(rec, ctx.key);

    const res = lastProxyResponse();
    assert.equal(res.status, 200);
    const u = a.billing(rec);
    assert.ok(u.input >= 1000, `long prompt: ${JSON.stringify(u)}`);
    const expected = costNano(price(), u);
    assert.ok(expected > 0n);
    assertCostString(res.headers.get('x-spendpol-cost'), expected, 'X-Spendpol-Cost');
    const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
    assertRowUsage(row, u, expected);
    assert.equal(res.headers.get('x-spendpol-cost'), row.cost_usd, 'X-Spendpol-Cost equals the audit row');
    assert.equal(res.headers.get('x-spendpol-tokens'), `${row.input_tokens}/${row.output_tokens}`);
    assert.equal(res.headers.get('x-spendpol-model'), a.answeredModel);
    assert.equal(row.provider, a.provider);
    assert.equal(row.status, 200);
    assert.equal(row.model, a.answeredModel);
    assert.deepEqual(row.warnings ?? [], []);
  });

  for (const split of ['awkward', 'utf8', 'bytes']) {
    test(`${a.provider}: streamed via the SDK (split ${split}): chunks concatenate to the answer, same cost as non-streamed`, async () => {
      ctx.fx.clear();
      const client = a.client(ctx.key);
      const { text, events } = await a.stream(client, conv(`${LONG_PROMPT} fixture-split:${split}`));
      const rec = lastRec();
      assert.equal(a.requests(ctx.fx).length, 1, 'exactly one upstream request');
      assert.equal(text, a.reply(rec));
      assert.ok(events > (a.minEvents ?? 5), `only ${events} events`);
      a.assertCredential(rec);
      assertNoSpendpolKey(rec, ctx.key);
      const res = lastProxyResponse();
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const u = a.billing(rec);
      const expected = costNano(price(), u);
      const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
      assertRowUsage(row, u, expected, `streamed (${split}) audit row`);
      assert.equal(row.stream, true);
      assert.deepEqual(row.warnings ?? [], []);
    });
  }

  test(`${a.provider}: streamed and non-streamed of the same conversation cost exactly the same`, async () => {
    const client = a.client(ctx.key);
    const c = conv(`${SHORT_PROMPT} ${'ü'.repeat(40)}`);
    await a.complete(client, c);
    const r1 = lastProxyResponse();
    await a.stream(client, c);
    const r2 = lastProxyResponse();
    const [row1, row2] = [await auditRow(s, r1.headers.get('x-spendpol-audit-id')), await auditRow(s, r2.headers.get('x-spendpol-audit-id'))];
    assert.equal(row1.stream, false);
    assert.equal(row2.stream, true);
    for (const f of ['input_tokens', 'output_tokens', 'cached_tokens', 'cache_write_tokens', 'cost_usd']) {
      assert.equal(row2[f], row1[f], `${f}: streamed ${row2[f]} vs non-streamed ${row1[f]}`);
    }
    assert.ok(usdToNano(row1.cost_usd) > 0n);
  });

  test(`${a.provider}: streamed response: X-Spendpol-Cost and X-Spendpol-Tokens arrive as trailers equal to the audit row`, async () => {
    ctx.fx.clear();
    const r = a.raw(conv(`${LONG_PROMPT} fixture-split:lines`), { stream: true, key: ctx.key });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.match(res.headers['content-type'] ?? '', /text\/event-stream/);
    assert.match(res.headers.trailer ?? '', /X-Spendpol-Cost/i, `Trailer: ${res.headers.trailer}`);
    const rec = lastRec();
    assert.equal(res.text, rec.response, 'the client gets the provider\'s stream byte for byte');
    const u = a.billing(rec);
    const expected = costNano(price(), u);
    assertCostString(res.trailers['x-spendpol-cost'], expected, 'trailer X-Spendpol-Cost');
    const row = await auditRow(s, res.headers['x-spendpol-audit-id']);
    assertRowUsage(row, u, expected);
    assert.equal(res.trailers['x-spendpol-cost'], row.cost_usd);
    assert.equal(res.trailers['x-spendpol-tokens'], `${row.input_tokens}/${row.output_tokens}`);
  });

  for (const status of [400, 401, 429, 500]) {
    test(`${a.provider}: provider error ${status} reaches the SDK as its typed error with the provider's message; journaled with status`, async () => {
      const client = a.client(ctx.key);
      let err;
      try { await a.complete(client, conv(`${SHORT_PROMPT} fixture-mode:error-${status}`)); } catch (e) { err = e; }
      assert.ok(err, 'the SDK threw');
      a.assertProviderError(err, status);
      const res = lastProxyResponse();
      assert.equal(res.status, status);
      const id = res.headers.get('x-spendpol-audit-id');
      assert.match(res.headers.get('x-spendpol-trace-id') ?? '', /\S/, 'X-Spendpol-Trace-Id on a provider error');
      assert.match(res.headers.get('x-spendpol-span-id') ?? '', /^[0-9a-f]{16}$/, 'X-Spendpol-Span-Id on a provider error');
      assert.equal(res.headers.get('x-spendpol-region'), s.region);
      const row = await auditRow(s, id);
      assert.equal(row.status, status);
      assert.equal(usdToNano(row.cost_usd), 0n, 'an error costs nothing');
    });
  }

  test(`${a.provider}: a provider error reaches the client byte for byte, with the governance headers`, async () => {
    const r = a.raw(conv(`${SHORT_PROMPT} fixture-mode:error-429`), { stream: false, key: ctx.key });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
    assert.equal(res.status, 429);
    assert.equal(res.text, lastRec().response);
    assert.match(res.headers['content-type'] ?? '', /application\/json/);
    for (const h of ['x-spendpol-audit-id', 'x-spendpol-trace-id', 'x-spendpol-span-id', 'x-spendpol-region']) {
      assert.ok(res.headers[h], `${h} on a provider error`);
    }
  });

  test(`${a.provider}: provider error while streaming reaches the SDK as its typed error`, async () => {
    const client = a.client(ctx.key);
    let err;
    try { await a.stream(client, conv(`${SHORT_PROMPT} fixture-mode:error-400`)); } catch (e) { err = e; }
    assert.ok(err, 'the SDK threw');
    a.assertProviderError(err, 400);
    const res = lastProxyResponse();
    const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
    assert.equal(row.status, 400);
  });

  test(`${a.provider}: a non-JSON provider body is passed through and journaled`, async () => {
    const r = a.raw(conv(`${SHORT_PROMPT} fixture-mode:nonjson`), { stream: false, key: ctx.key });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
    assert.equal(res.status, 200);
    assert.match(res.text, /Bad Gateway<\/h1> — not JSON at all/);
    const row = await auditRow(s, res.headers['x-spendpol-audit-id']);
    assert.equal(row.status, 200);
  });

  for (const stream of [false, true]) {
    test(`${a.provider}: a ${stream ? 'streamed ' : ''}response without usage is recorded with estimated tokens, never $0`, async () => {
      const client = a.client(ctx.key);
      const c = conv(`${LONG_PROMPT} fixture-mode:nousage`);
      let res;
      if (!stream && a.sdkRequiresUsage) {
        // this SDK rejects a JSON answer without usage: ask the gateway directly
        const r = a.raw(c, { stream: false, key: ctx.key });
        const x = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
        assert.equal(x.status, 200, x.text);
        res = { status: x.status, headers: new Headers(Object.entries(x.headers).map(([k, v]) => [k, String(v)])) };
      } else {
        const text = stream ? (await a.stream(client, c)).text : await a.complete(client, c);
        assert.equal(text, a.reply(lastRec()));
        res = lastProxyResponse();
      }
      const id = res.headers.get('x-spendpol-audit-id');
      if (!stream) {
        assert.ok(warningsOf(res.headers.get('x-spendpol-policy-warning')).includes('usage_estimated'),
          `X-Spendpol-Policy-Warning: ${res.headers.get('x-spendpol-policy-warning')}`);
        assert.ok(usdToNano(res.headers.get('x-spendpol-cost') ?? '0') > 0n, `X-Spendpol-Cost ${res.headers.get('x-spendpol-cost')}`);
      }
      const row = await auditRow(s, id);
      assert.ok((row.warnings ?? []).includes('usage_estimated'), `warnings ${JSON.stringify(row.warnings)}`);
      assert.ok(Number(row.input_tokens) > 0, `input_tokens ${row.input_tokens}`);
      assert.ok(Number(row.output_tokens) > 0, `output_tokens ${row.output_tokens}`);
      assert.ok(usdToNano(row.cost_usd) > 0n, `cost_usd ${row.cost_usd}`);
    });
  }

  test(`${a.provider}: a streamed response without usage says usage_estimated in the trailers' journal row and header`, async () => {
    const r = a.raw(conv(`${SHORT_PROMPT} fixture-mode:nousage`), { stream: true, key: ctx.key });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
    assert.equal(res.status, 200);
    const row = await auditRow(s, res.headers['x-spendpol-audit-id']);
    assert.ok((row.warnings ?? []).includes('usage_estimated'));
    assert.ok(usdToNano(res.trailers['x-spendpol-cost'] ?? '0') > 0n, `trailer cost ${res.trailers['x-spendpol-cost']}`);
    assert.equal(res.trailers['x-spendpol-cost'], row.cost_usd);
    // known only at the end of the stream: the warning can only be a trailer
    const w = warningsOf(res.trailers['x-spendpol-policy-warning'] ?? res.headers['x-spendpol-policy-warning']);
    assert.ok(w.includes('usage_estimated'),
      `X-Spendpol-Policy-Warning on a streamed response without usage: trailers ${JSON.stringify(res.trailers)}, Trailer: ${res.headers.trailer}`);
  });

  test(`${a.provider}: a stream the provider resets mid-way is billed for what was delivered`, async () => {
    const client = a.client(ctx.key);
    let text = '';
    let err = null;
    try { text = (await a.stream(client, conv(`${LONG_PROMPT} fixture-mode:reset`))).text; } catch (e) { err = e; }
    const res = lastProxyResponse();
    assert.equal(res.status, 200);
    const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
    assert.ok(Number(row.input_tokens) > 0, `input_tokens ${row.input_tokens}`);
    assert.ok(Number(row.output_tokens) > 0, `output_tokens ${row.output_tokens} (text delivered before the reset)`);
    assert.ok(usdToNano(row.cost_usd) > 0n, `cost_usd ${row.cost_usd}`);
    assert.ok(err || text.length < a.reply(lastRec()).length, 'the stream was cut');
  });

  test(`${a.provider}: an unpriced model is served, flagged, alerted; refused when the org says so`, async () => {
    const client = a.client(ctx.key);
    const c = conv(SHORT_PROMPT, { model: a.unpricedModel });
    const text = await a.complete(client, c);
    assert.equal(text, a.reply(lastRec()));
    const res = lastProxyResponse();
    assert.ok(warningsOf(res.headers.get('x-spendpol-policy-warning')).includes('unpriced_model'),
      `X-Spendpol-Policy-Warning: ${res.headers.get('x-spendpol-policy-warning')}`);
    const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
    assert.ok((row.warnings ?? []).includes('unpriced_model'), `warnings ${JSON.stringify(row.warnings)}`);
    const alert = await waitUnpricedAlert(s, a.provider, a.unpricedAnsweredModel ?? a.unpricedModel);
    assert.equal(alert.state, 'open');

    const probe = async () => {
      const r = a.raw(c, { stream: false, key: ctx.key });
      const x = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
      return x.status;
    };
    await setRefuseUnpriced(s, true, probe);
    try {
      const before = a.requests(ctx.fx).length;
      let err;
      try { await a.complete(client, c); } catch (e) { err = e; }
      assert.ok(err, 'refused');
      a.assertGatewayError(err, 400);
      const r = a.raw(c, { stream: false, key: ctx.key });
      const x = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: r.headers, body: r.body });
      assert.equal(x.status, 400);
      assert.match(x.headers['content-type'] ?? '', /application\/json/);
      assert.equal(x.json?.error?.code, 'unpriced_model', x.text);
      const rs = a.raw(c, { stream: true, key: ctx.key });
      const xs = await rawRequest(`${ctx.baseURL}${rs.path}`, { headers: rs.headers, body: rs.body });
      assert.equal(xs.status, 400, 'a streamed request for an unpriced model is refused too');
      assert.equal(xs.json?.error?.code, 'unpriced_model', xs.text);
      assert.equal(a.requests(ctx.fx).length, before, 'a refused request never reaches the provider');
      // a priced model is still served
      assert.equal(await a.complete(client, conv(SHORT_PROMPT)), a.reply(lastRec()));
    } finally {
      await setRefuseUnpriced(s, false, probe);
    }
  });

  test(`${a.provider}: a non-streamed answer the provider resets mid-body is a JSON 5xx error, journaled with that status`, async () => {
    // the gateway holds a JSON answer until it is complete, so nothing has
    // reached the client when the provider resets: it can still answer
    const r = a.raw(conv(`${SHORT_PROMPT} fixture-mode:reset`), { stream: false, key: ctx.key });
    const trace = crypto.randomUUID();   // a trace id is a UUID, or it is replaced
    let res = null;
    let err = null;
    try {
      res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: { ...r.headers, 'x-spendpol-trace-id': trace }, body: r.body });
    } catch (e) { err = e; }
    const row = await waitFor(async () => (await s.allAuditRows()).find((x) => x.trace_id === trace),
      { timeout: 15_000 * SLOW, interval: 100, message: `the audit row of trace ${trace}` });
    assert.ok(res, `the client got no HTTP response at all (${err?.code} ${err?.message}); the journal says status ${row.status}, ` +
      `${row.input_tokens}/${row.output_tokens} tokens, cost ${row.cost_usd}, warnings ${JSON.stringify(row.warnings)}`);
    assert.ok(res.status >= 500, `status ${res.status}: ${res.text.slice(0, 300)}`);
    assert.equal(typeof res.json?.error?.message, 'string', res.text.slice(0, 300));
    assert.equal(res.headers['x-spendpol-audit-id'], row.id);
    assert.equal(row.status, res.status, 'journaled with the status the client got');
  });

  test(`${a.provider}: a client that hangs up mid-stream is billed for what was delivered`, async () => {
    const r = a.raw(conv(`${LONG_PROMPT} fixture-split:utf8`), { stream: true, key: ctx.key });
    const buf = Buffer.from(JSON.stringify(r.body));
    const auditId = await new Promise((resolve, reject) => {
      const req = http.request(`${ctx.baseURL}${r.path}`, {
        method: 'POST', headers: { ...r.headers, 'content-type': 'application/json', 'content-length': buf.length },
      }, (res) => {
        let got = 0;
        res.on('data', (d) => {
          got += d.length;
          // past the preamble events: some text has been delivered
          if (got > 2500) { req.destroy(); resolve(res.headers['x-spendpol-audit-id']); }
        });
        res.on('end', () => resolve(res.headers['x-spendpol-audit-id']));
        res.on('error', () => {});
      });
      req.on('error', (e) => { if (e.code !== 'ECONNRESET') reject(e); });
      req.end(buf);
    });
    const row = await auditRow(s, auditId);
    assert.ok(Number(row.input_tokens) > 0, `input_tokens ${row.input_tokens}`);
    assert.ok(Number(row.output_tokens) > 0, `output_tokens ${row.output_tokens}`);
    assert.ok(usdToNano(row.cost_usd) > 0n, `cost_usd ${row.cost_usd}`);
  });

  test(`${a.provider}: a streamed unpriced model is served and flagged in the journal`, async () => {
    const client = a.client(ctx.key);
    const { text } = await a.stream(client, conv(SHORT_PROMPT, { model: a.unpricedModel }));
    assert.equal(text, a.reply(lastRec()));
    const res = lastProxyResponse();
    const row = await auditRow(s, res.headers.get('x-spendpol-audit-id'));
    assert.ok((row.warnings ?? []).includes('unpriced_model'), `warnings ${JSON.stringify(row.warnings)}`);
    assert.ok(Number(row.output_tokens) > 0);
  });

  test(`${a.provider}: traceparent and X-Spendpol-Trace-Id reach the provider`, async () => {
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parent = '00f067aa0ba902b7';
    const r = a.raw(conv(SHORT_PROMPT), { stream: false, key: ctx.key });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, {
      headers: { ...r.headers, traceparent: `00-${trace}-${parent}-01` }, body: r.body,
    });
    assert.equal(res.status, 200, res.text.slice(0, 300));
    // the trace id is always a UUID: W3C's 32 hex digits in UUID form
    const uuid = `${trace.slice(0, 8)}-${trace.slice(8, 12)}-${trace.slice(12, 16)}-${trace.slice(16, 20)}-${trace.slice(20)}`;
    assert.equal(res.headers['x-spendpol-trace-id'], uuid);
    const rec = lastRec();
    const tp = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(rec.headers.traceparent ?? '');
    assert.ok(tp, `traceparent upstream: ${rec.headers.traceparent}`);
    assert.equal(tp[1], trace);
    assert.equal(tp[2], res.headers['x-spendpol-span-id'], 'our span is the parent upstream');
    assert.equal(rec.headers['x-spendpol-trace-id'], uuid);
    const row = await auditRow(s, res.headers['x-spendpol-audit-id']);
    assert.equal(row.parent_id, parent);
  });

  test(`${a.provider}: the Spendpol key works where the SDK puts its key; a wrong key is the SDK's authentication error`, async () => {
    ctx.fx.clear();
    const r = a.raw(conv(SHORT_PROMPT), { stream: false, key: null });
    const res = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: { ...r.headers, ...a.keyHeaders(ctx.key) }, body: r.body });
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.equal(res.text, lastRec().response, 'the client gets the provider\'s answer byte for byte');
    assertNoSpendpolKey(lastRec(), ctx.key);
    a.assertCredential(lastRec());

    // X-Spendpol-Key works for every provider
    const res2 = await rawRequest(`${ctx.baseURL}${r.path}`, { headers: { ...r.headers, 'x-spendpol-key': ctx.key }, body: r.body });
    assert.equal(res2.status, 200, res2.text.slice(0, 300));
    assertNoSpendpolKey(lastRec(), ctx.key);
    a.assertCredential(lastRec());

    const before = a.requests(ctx.fx).length;
    const wrong = `sp_key_${'0'.repeat(48)}`;
    let err;
    try { await a.complete(a.client(wrong), conv(SHORT_PROMPT)); } catch (e) { err = e; }
    assert.ok(err, 'a wrong key is refused');
    a.assertAuthError(err);
    const last = lastProxyResponse();
    assert.equal(last.status, 401);
    assert.equal(a.requests(ctx.fx).length, before, 'never forwarded');
    // and the SDK itself put its key where keyHeaders() says
    for (const [h, v] of Object.entries((a.sdkKeyHeaders ?? a.keyHeaders)(wrong))) {
      assert.equal(last.requestHeaders.get(h), v, `the SDK sent its key in ${h}`);
    }
  });

  test(`${a.provider}: an organisation's own price (PUT /pricing) applies exactly, streamed and not; DELETE returns to the list price`, async () => {
    const model = a.priceModel ?? a.model;
    const own = { input: '1.111111111', output: '7.777777777', cached: '0.333333333', cacheWrite: '2.222222222' };
    const r = await s.api('PUT', `/pricing/${a.provider}/${model}`, {
      body: {
        input_usd_per_mtok: own.input, output_usd_per_mtok: own.output,
        cached_input_usd_per_mtok: own.cached, cache_write_usd_per_mtok: own.cacheWrite,
      },
    });
    assert.equal(r.status, 200, r.text);
    const ownPrice = { input: usdToNano(own.input), output: usdToNano(own.output), cached: usdToNano(own.cached), cacheWrite: usdToNano(own.cacheWrite) };
    const client = a.client(ctx.key);
    const c = conv(LONG_PROMPT);
    try {
      // the new snapshot reaches every worker within about a second
      const u0 = await waitFor(async () => {
        await a.complete(client, c);
        const u = a.billing(lastRec());
        const cost = lastProxyResponse().headers.get('x-spendpol-cost');
        return usdToNano(cost) === costNano(ownPrice, u) ? u : null;
      }, { timeout: 10_000 * SLOW, interval: 100, message: 'the organisation price to apply' });
      const row = await auditRow(s, lastProxyResponse().headers.get('x-spendpol-audit-id'));
      assertRowUsage(row, u0, costNano(ownPrice, u0), 'org price, non-streamed');
      await a.stream(client, c);
      const srow = await auditRow(s, lastProxyResponse().headers.get('x-spendpol-audit-id'));
      assertRowUsage(srow, a.billing(lastRec()), costNano(ownPrice, a.billing(lastRec())), 'org price, streamed');
      assert.equal(srow.cost_usd, row.cost_usd);
    } finally {
      const d = await s.api('DELETE', `/pricing/${a.provider}/${model}`);
      assert.equal(d.status, 204, d.text);
    }
    await waitFor(async () => {
      await a.complete(client, c);
      const u = a.billing(lastRec());
      return usdToNano(lastProxyResponse().headers.get('x-spendpol-cost')) === costNano(price(), u);
    }, { timeout: 10_000 * SLOW, interval: 100, message: 'the list price to apply again' });
  });
}
