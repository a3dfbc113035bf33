// Shared helpers of the response cache's tests (cache.test.mjs,
// cache-providers.test.mjs): a record of every proxy call an SDK made (its
// request, so it can be replayed raw, and its response body, read from a
// clone), the X-Spendpol-Cache checks of a hit and a miss, the audit rows of
// both, and the admin API's /cache routes.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Stack, IS_SAN, sleep, waitFor, usdToNano, UUID_RE } from './stack.mjs';

const SLOW = IS_SAN ? 3 : 1;

// ------------------------------------------------------------ fetch recorder

// Every SDK ends in globalThis.fetch; wrapped at import (before any client
// is made), as lib/providers.mjs does. A call to a recorded prefix keeps
// its request (url, method, headers, body) and its response (status,
// headers, and the body text, from a clone the SDK does not see).
const innerFetch = globalThis.fetch;
const prefixes = new Set();
export const calls = [];

globalThis.fetch = async function cacheRecordingFetch(input, init) {
  const url = typeof input === 'string' ? input : (input?.url ?? String(input));
  const recorded = [...prefixes].some((p) => url.startsWith(p));
  let requestBody;
  let requestHeaders;
  let method;
  if (recorded) {
    if (typeof Request !== 'undefined' && input instanceof Request) {
      requestBody = await input.clone().text();
      requestHeaders = new Headers(input.headers);
      method = input.method;
    }
    const b = init?.body;
    if (typeof b === 'string') requestBody = b;
    else if (b instanceof Uint8Array || b instanceof ArrayBuffer) requestBody = Buffer.from(b).toString('utf8');
    else if (b !== undefined && b !== null) {
      // a stream or form: read once here, sent as bytes
      const bytes = await new Response(b).arrayBuffer();
      requestBody = Buffer.from(bytes).toString('utf8');
      init = { ...init, body: bytes };
    }
    if (init?.headers) requestHeaders = new Headers(init.headers);
    method = init?.method ?? method ?? 'GET';
  }
  const res = await innerFetch(input, init);
  if (recorded) {
    const call = {
      url, method, requestHeaders: requestHeaders ?? new Headers(), requestBody,
      status: res.status, headers: res.headers,
      body: res.clone().text().catch((e) => `(body not read: ${e.message})`),
    };
    calls.push(call);
    if (calls.length > 200) calls.shift();
  }
  return res;
};

/** records SDK calls whose URL starts with prefix (the proxy's URL) */
export function recordCalls(prefix) { prefixes.add(prefix.endsWith('/') ? prefix : `${prefix}/`); }
export const lastCall = () => calls[calls.length - 1];

// ------------------------------------------------------------ the stack

/**
 * useStack() with setup(s) run in the same before hook, after the stack
 * started (the order of two hooks is not certain), and calls to the proxy
 * recorded.
 */
export function useCacheStack(setup = async () => {}, opts = {}) {
  const s = new Stack(opts);
  before(async () => {
    try {
      await s.start();
    } catch (e) {
      s.failed = true;
      throw e;
    }
    recordCalls(s.proxyURL);
    await setup(s);
  }, { timeout: 240_000 });
  after(async () => {
    const alive = setInterval(() => {}, 1000);
    let problems;
    try { problems = await s.stop(); } finally { clearInterval(alive); }
    if (problems.length) assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
  }, { timeout: 120_000 });
  return s;
}

// ------------------------------------------------------------ headers

/** a header of a Headers, a node headers object or a recorded call */
export function header(h, name) {
  const hs = h?.headers ?? h;
  if (typeof hs?.get === 'function') return hs.get(name);
  const v = hs?.[name.toLowerCase()];
  return v === undefined ? null : String(v);
}

export const cacheOf = (h) => header(h, 'x-spendpol-cache');

/** the checks every hit passes, whatever the provider and mode */
export function assertHit(h, { first, what = 'hit' } = {}) {
  assert.equal(cacheOf(h), 'hit', `${what}: X-Spendpol-Cache`);
  const status = h.status ?? h.statusCode;
  if (status !== undefined) assert.equal(status, 200, `${what}: status`);
  const age = header(h, 'x-spendpol-cache-age');
  assert.match(age ?? '', /^\d+$/, `${what}: X-Spendpol-Cache-Age ${age}`);
  const id = header(h, 'x-spendpol-audit-id');
  assert.match(id ?? '', /^evt_/, `${what}: X-Spendpol-Audit-Id ${id}`);
  if (first) assert.notEqual(id, header(first, 'x-spendpol-audit-id'), `${what}: a fresh audit id`);
  return { age: Number(age), auditId: id };
}

/** a hit's cost and tokens: in the headers of a JSON answer */
export function assertHitCostHeaders(h, what = 'hit') {
  assert.equal(header(h, 'x-spendpol-cost'), '0.000000', `${what}: X-Spendpol-Cost`);
  assert.equal(header(h, 'x-spendpol-tokens'), '0/0', `${what}: X-Spendpol-Tokens`);
}

/**
 * a streamed hit's cost: in the trailers, as for a live stream (tokens in
 * the trailers too, or already in the headers: both are known up front)
 */
export function assertHitCostTrailers(res, what = 'streamed hit') {
  assert.match(res.headers.trailer ?? '', /X-Spendpol-Cost/i, `${what}: Trailer: ${res.headers.trailer}`);
  assert.equal(res.trailers?.['x-spendpol-cost'], '0.000000', `${what}: trailer X-Spendpol-Cost (trailers ${JSON.stringify(res.trailers)})`);
  assert.equal(res.trailers?.['x-spendpol-tokens'] ?? res.headers['x-spendpol-tokens'], '0/0', `${what}: X-Spendpol-Tokens`);
}

/** saved_usd as nano-USD, whether the API prints it as "0.000000" or 0 */
export const savedNano = (row) => usdToNano(String(row.saved_usd));

/**
 * the audit rows of a miss and of the hit that followed it: cache "miss"
 * and nothing saved; cache "hit", cost 0 and the miss's cost saved
 */
export function assertMissHitRows(missRow, hitRow, what = '') {
  assert.equal(missRow.cache, 'miss', `${what} first call's row: ${JSON.stringify(missRow)}`);
  assert.equal(savedNano(missRow), 0n, `${what} first call's saved_usd ${missRow.saved_usd}`);
  assert.ok(usdToNano(missRow.cost_usd) > 0n, `${what} first call's cost_usd ${missRow.cost_usd}`);
  assert.equal(hitRow.cache, 'hit', `${what} hit's row: ${JSON.stringify(hitRow)}`);
  assert.equal(usdToNano(hitRow.cost_usd), 0n, `${what} hit's cost_usd ${hitRow.cost_usd}`);
  assert.equal(Number(hitRow.cost_nano ?? 0), 0, `${what} hit's cost_nano`);
  assert.equal(savedNano(hitRow), usdToNano(missRow.cost_usd),
    `${what} hit's saved_usd ${hitRow.saved_usd} vs the first call's cost_usd ${missRow.cost_usd}`);
  assert.equal(hitRow.status, 200, `${what} hit's status`);
}

// ------------------------------------------------------------ SSE

/** the JSON payloads of an SSE body's data: lines ([DONE] left out) */
export function sseData(text) {
  return text.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim())
    .filter((d) => d && d !== '[DONE]').map((d) => JSON.parse(d));
}

// ------------------------------------------------------------ replay

// headers a raw replay must not copy from the SDK's request
const HOP = new Set(['host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'accept-encoding', 'te']);

/**
 * The SDK's own request (a recorded call) as rawRequest options: the same
 * method, headers (key included) and body, so its answer shows trailers.
 */
export function replayOf(call) {
  const headers = {};
  for (const [k, v] of call.requestHeaders) if (!HOP.has(k.toLowerCase())) headers[k] = v;
  assert.equal(typeof call.requestBody, 'string', `the SDK's request body to ${call.url} was recorded`);
  return { method: call.method ?? 'POST', headers, body: call.requestBody };
}

// ------------------------------------------------------------ admin API

export const CACHE_DEFAULTS = Object.freeze({
  mode: 'exact', ttl_seconds: 3600, scope: 'org', only_deterministic: true, max_entry_bytes: 1024 * 1024,
});

export async function getCacheConfig(s, key) {
  const r = await s.api('GET', '/cache/config', key ? { key } : {});
  assert.equal(r.status, 200, `GET /cache/config -> ${r.status} ${r.text}`);
  return r.json;
}

/** PUT /cache/config with every field: the defaults, then cfg */
export async function putCacheConfig(s, cfg, key) {
  const body = { ...CACHE_DEFAULTS, ...cfg };
  const r = await s.api('PUT', '/cache/config', { body, ...(key ? { key } : {}) });
  assert.equal(r.status, 200, `PUT /cache/config ${JSON.stringify(body)} -> ${r.status} ${r.text}`);
  for (const [k, v] of Object.entries(body)) assert.equal(r.json[k], v, `PUT /cache/config answered ${k}: ${r.text}`);
  return r.json;
}

/** DELETE /cache with an optional query (e.g. "provider=openai&model=x") */
export async function purgeCache(s, query = '') {
  const r = await s.api('DELETE', `/cache${query ? `?${query}` : ''}`);
  assert.ok(r.status === 200 || r.status === 204, `DELETE /cache?${query} -> ${r.status} ${r.text}`);
  return r;
}

/** GET /cache/stats?from=&to= (ISO 8601 times) */
export async function cacheStats(s, from, to) {
  const q = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(to).toISOString() });
  const r = await s.api('GET', `/cache/stats?${q}`);
  assert.equal(r.status, 200, `GET /cache/stats?${q} -> ${r.status} ${r.text}`);
  return r.json;
}

/**
 * Polls probe() until pred holds for `times` answers in a row spanning at
 * least stableMs: a cache setting reaches nginx through the snapshot, which
 * each worker checks on its own timer (spendpol_snapshot_interval, 200 ms
 * by default), so the first worker to answer with the new setting does not
 * speak for the others until an interval or two has passed.
 */
export async function waitApplied(probe, pred, {
  times = 4, stableMs = 600 * SLOW, timeout = 10_000 * SLOW, message = 'the cache setting to reach nginx',
} = {}) {
  let streak = 0;
  let since = 0;
  let last;
  await waitFor(async () => {
    last = await probe();
    if (!pred(last)) { streak = 0; return false; }
    if (streak++ === 0) since = Date.now();
    return streak >= times && Date.now() - since >= stableMs;
  }, { timeout, interval: 20, message: `${message} (last: ${JSON.stringify(last)?.slice(0, 200)})` });
  return last;
}

// the proxy counts requests per minute in windows aligned to the clock
// (ratelimits.test.mjs): start a test early enough in one to end in it
export async function freshWindow(needSeconds = 15) {
  const into = (Date.now() % 60000) / 1000;
  if (into > 60 - needSeconds) await sleep(60000 - (Date.now() % 60000) + 200);
}

export { UUID_RE, usdToNano };
