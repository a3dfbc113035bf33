// The proxy's metrics (issue 15, item 8, the module half): `spendpol_metrics`
// renders Prometheus text from counters every nginx worker adds to in shared
// memory. Traffic through the openai SDK (JSON and streamed, on fresh
// connections so both workers serve it), a refused request of each kind and
// a cache hit, then a scrape: requests, tokens and cost equal the sums of the
// audit rows exactly, refusals and cache results count what happened, the
// text parses strictly, and model names that were never priced do not take
// a label of their own.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useStack, freePort, newKey, waitFor, BUILD } from './lib/stack.mjs';
import { nginxTest } from './lib/nginx-t.mjs';

const metricsPort = await freePort();

// a listener of its own for the scrape, as docs/metrics.md recommends; the
// worker's pid on every answer tells which worker served it
const s = useStack({
  nginxHttp: `add_header X-Worker-Pid $pid always;
    server {
        listen 127.0.0.1:${metricsPort};
        location = /metrics { spendpol_metrics; }
        location / { return 404; }
    }`,
});

const MODEL = 'gpt-4o-mini';

async function scrapeText() {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { headers: { connection: 'close' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return r.text();
}

/*
 * The Prometheus text format (version 0.0.4), parsed strictly: HELP and
 * TYPE once per family and before its samples, families not interleaved,
 * metric and label names well formed, label values with only the three
 * escapes, values numbers, no series twice, histograms with le buckets in
 * order, cumulative, +Inf last and equal to _count, and a _sum.
 */
function parseStrict(text) {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const families = new Map();
  const seen = new Set();
  const done = new Set();
  let current = null;
  const samples = [];
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

  const familyOf = (name) => {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = name.endsWith(suffix) ? name.slice(0, -suffix.length) : null;
      if (base && families.get(base)?.type === 'histogram') return base;
    }
    return name;
  };

  text.slice(0, -1).split('\n').forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    let m = /^# (HELP|TYPE) (\S+) (.+)$/.exec(line);
    if (m) {
      assert.match(m[2], NAME, where);
      const f = families.get(m[2]) ?? { name: m[2] };
      if (current !== m[2]) {
        assert.ok(!done.has(m[2]), `family ${m[2]} interleaved: ${where}`);
        if (current) done.add(current);
        current = m[2];
      }
      if (m[1] === 'HELP') {
        assert.equal(f.help, undefined, `HELP twice: ${where}`);
        f.help = m[3];
      } else {
        assert.equal(f.type, undefined, `TYPE twice: ${where}`);
        assert.equal(f.samples ?? 0, 0, `TYPE after samples: ${where}`);
        assert.ok(['counter', 'gauge', 'histogram'].includes(m[3]), where);
        f.type = m[3];
      }
      families.set(m[2], f);
      return;
    }
    assert.ok(!line.startsWith('#'), `a comment other than HELP or TYPE: ${where}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample: ${where}`);
    const [, name, body = '', value] = m;
    const labels = {};
    let rest = body;
    while (rest.length) {
      const l = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/.exec(rest);
      assert.ok(l, `bad labels at "${rest}": ${where}`);
      assert.ok(!(l[1] in labels), `label ${l[1]} twice: ${where}`);
      labels[l[1]] = l[2].replace(/\\(["\\n])/g, (_, c) => (c === 'n' ? '\n' : c));
      rest = rest.slice(l[0].length);
      assert.ok(l[3] === ',' ? rest.length > 0 : rest.length === 0, `trailing comma: ${where}`);
    }
    assert.match(value, /^(?:[0-9]+(?:\.[0-9]+)?|\+Inf)$/, `value: ${where}`);
    const family = familyOf(name);
    assert.equal(family, current, `sample outside its family's block: ${where}`);
    const f = families.get(family);
    assert.ok(f?.type && f?.help, `no HELP and TYPE before: ${where}`);
    if (f.type === 'counter') assert.ok(name.endsWith('_total'), `a counter's name ends in _total: ${where}`);
    f.samples = (f.samples ?? 0) + 1;
    const id = `${name}{${Object.entries(labels).sort().map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    assert.ok(!seen.has(id), `series twice: ${where}`);
    seen.add(id);
    samples.push({ name, labels, value: value.includes('.') ? Number(value) : BigInt(value), text: value });
  });

  // histograms: per series, buckets cumulative, +Inf last = _count, a _sum
  for (const [name, f] of families) {
    if (f.type !== 'histogram') continue;
    const groups = new Map();
    for (const x of samples.filter((y) => y.name.startsWith(name))) {
      const { le, ...rest } = x.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      const g = groups.get(key) ?? { buckets: [] };
      if (x.name === `${name}_bucket`) g.buckets.push([le, BigInt(x.text)]);
      else if (x.name === `${name}_count`) g.count = BigInt(x.text);
      else if (x.name === `${name}_sum`) g.sum = x.text;
      groups.set(key, g);
    }
    for (const [key, g] of groups) {
      assert.ok(g.buckets.length > 1 && g.count !== undefined && g.sum !== undefined, `${name} ${key} is whole`);
      assert.equal(g.buckets.at(-1)[0], '+Inf', `${name} ${key}: +Inf last`);
      for (let i = 1; i < g.buckets.length; i++) {
        if (i < g.buckets.length - 1) assert.ok(Number(g.buckets[i][0]) > Number(g.buckets[i - 1][0]), `${name} ${key}: le in order`);
        assert.ok(g.buckets[i][1] >= g.buckets[i - 1][1], `${name} ${key}: cumulative`);
      }
      assert.equal(g.buckets.at(-1)[1], g.count, `${name} ${key}: +Inf = _count`);
    }
  }
  return { families, samples };
}

/** the sum of a family's samples (exact integers) whose labels match */
function total(scrape, name, match = {}) {
  let sum = 0n;
  for (const x of scrape.samples) {
    if (x.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => x.labels[k] === v)) sum += BigInt(x.text.split('.')[0]);
  }
  return sum;
}

async function scrape() {
  return parseStrict(await scrapeText());
}

/** a chat completion on a fresh connection: status, audit id, worker pid, error code */
async function chat(key, body) {
  const client = s.client(key, { defaultHeaders: { connection: 'close' } });
  try {
    if (body.stream) {
      const { data: stream, response } = await client.chat.completions
        .create({ ...body, stream_options: { include_usage: true } }).withResponse();
      for await (const chunk of stream) void chunk;
      return { status: response.status, auditId: response.headers.get('x-spendpol-audit-id'), pid: response.headers.get('x-worker-pid') };
    }
    const { response } = await client.chat.completions.create(body).withResponse();
    return { status: response.status, auditId: response.headers.get('x-spendpol-audit-id'), pid: response.headers.get('x-worker-pid') };
  } catch (e) {
    return { status: e.status, code: e.code ?? e.error?.code, auditId: e.headers?.get?.('x-spendpol-audit-id') ?? e.headers?.['x-spendpol-audit-id'], pid: e.headers?.get?.('x-worker-pid') };
  }
}

const sumOf = (rows, f) => rows.reduce((n, r) => n + BigInt(r[f] ?? 0), 0n);

test('counts, tokens and cost equal the audit rows, across both workers', async (t) => {
  const project = `pm-${crypto.randomBytes(3).toString('hex')}`;
  const { key } = await s.createKey({ name: 'metrics', project });

  // a budget too small for one request: the refusal is journaled
  const poor = `pmb-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${poor}`, scope: { type: 'project', value: poor }, limit_usd: '0.000000001', period: 'daily' },
  });
  assert.equal(b.status, 201, b.text);
  const { key: poorKey } = await s.createKey({ name: 'metrics-poor', project: poor });

  // the cache on, for one miss and one hit
  const c = await s.api('PUT', '/cache/config', {
    body: { mode: 'exact', ttl_seconds: 3600, scope: 'org', only_deterministic: true, max_entry_bytes: 1024 * 1024 },
  });
  assert.equal(c.status, 200, c.text);
  const cached = { model: MODEL, max_tokens: 7, temperature: 0, messages: [{ role: 'user', content: `cache me ${crypto.randomBytes(4).toString('hex')}` }] };
  await waitFor(async () => {
    const r = await fetch(`${s.openaiBaseURL}/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ ...cached, messages: [{ role: 'user', content: `probe ${crypto.randomBytes(4).toString('hex')}` }] }),
    });
    await r.arrayBuffer();
    return r.headers.get('x-spendpol-cache') === 'miss';
  }, { timeout: 10_000, message: 'the cache config to reach the proxy' });
  // the probes above are before the first scrape; nothing else runs now

  const before = await scrape();

  const results = [];
  const pids = new Set();
  for (let round = 0; round < 10 && (round < 2 || pids.size < 2); round++) {
    const batch = await Promise.all(Array.from({ length: 16 }, (_, i) => chat(key, {
      model: MODEL, max_tokens: 3 + (i % 5), stream: i % 2 === 1,
      messages: [{ role: 'user', content: `metrics ${round} ${i} ${'x'.repeat(i * 7)}` }],
    })));
    for (const r of batch) {
      assert.equal(r.status, 200, JSON.stringify(r));
      pids.add(r.pid);
    }
    results.push(...batch);
  }
  t.diagnostic(`${results.length} requests served by workers ${[...pids].join(', ')}`);
  assert.equal(pids.size, 2, 'both workers served requests');

  const miss = await chat(key, cached);
  const hit = await chat(key, cached);
  assert.equal(miss.status, 200);
  assert.equal(hit.status, 200);

  const refused = await chat(poorKey, { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'too dear' }] });
  assert.equal(refused.status, 402, JSON.stringify(refused));
  assert.equal(refused.code, 'budget_exceeded');
  assert.ok(refused.auditId, 'the refusal has an audit id');

  const badKey = await chat(newKey(), { model: MODEL, messages: [{ role: 'user', content: 'who am I' }] });
  assert.equal(badKey.status, 401);

  const ids = [...results, miss, hit, refused].map((r) => r.auditId);
  const rows = await s.waitAuditRows(ids);
  const byId = new Map(rows.map((r) => [r.id, r]));
  assert.equal(byId.get(hit.auditId).cache, 'hit');
  assert.equal(byId.get(miss.auditId).cache, 'miss');

  const after = await scrape();
  const delta = (name, match) => total(after, name, match) - total(before, name, match);

  // requests: one per audit row, by status class
  assert.equal(delta('spendpol_proxy_requests_total'), BigInt(rows.length));
  assert.equal(delta('spendpol_proxy_requests_total', { status_class: '2xx' }), BigInt(rows.filter((r) => r.status < 300).length));
  assert.equal(delta('spendpol_proxy_requests_total', { status_class: '4xx' }), 1n);
  assert.equal(delta('spendpol_proxy_requests_total', { provider: 'openai', operation: 'chat', requested_model: MODEL }), BigInt(rows.length));

  // cost and tokens, to the nano-dollar and the token, by model
  for (const model of new Set(rows.map((r) => r.model))) {
    const mine = rows.filter((r) => r.model === model);
    assert.equal(delta('spendpol_proxy_cost_nano_usd_total', { provider: 'openai', model }), sumOf(mine, 'cost_nano'), `cost of ${model}`);
    assert.equal(delta('gen_ai_client_token_usage_sum', { gen_ai_system: 'openai', gen_ai_response_model: model, gen_ai_token_type: 'input' }),
      sumOf(mine, 'input_tokens'), `input tokens of ${model}`);
    assert.equal(delta('gen_ai_client_token_usage_sum', { gen_ai_system: 'openai', gen_ai_response_model: model, gen_ai_token_type: 'output' }),
      sumOf(mine, 'output_tokens'), `output tokens of ${model}`);
  }
  assert.equal(delta('spendpol_proxy_cost_nano_usd_total'), sumOf(rows, 'cost_nano'));
  assert.ok(sumOf(rows, 'cost_nano') > 0n);

  // a token observation per answer from the provider: not the hit, not the refusal
  const answered = rows.filter((r) => r.status === 200 && r.cache !== 'hit').length;
  assert.equal(delta('gen_ai_client_token_usage_count', { gen_ai_token_type: 'input' }), BigInt(answered));
  assert.equal(delta('gen_ai_client_operation_duration_seconds_count', { gen_ai_system: 'openai', gen_ai_operation_name: 'chat' }), BigInt(answered));
  assert.equal(delta('spendpol_proxy_gateway_duration_seconds_count'), BigInt(rows.length));

  // refusals by reason, the unauthenticated one too (it has no audit row)
  assert.equal(delta('spendpol_proxy_refusals_total', { reason: 'budget_exceeded' }), 1n);
  assert.equal(delta('spendpol_proxy_refusals_total', { reason: 'invalid_api_key' }), 1n);
  assert.equal(delta('spendpol_proxy_refusals_total'), 2n);

  // cache results as the audit rows say
  for (const result of ['hit', 'miss', 'skip']) {
    assert.equal(delta('spendpol_proxy_cache_results_total', { result }), BigInt(rows.filter((r) => r.cache === result).length), `cache ${result}`);
  }
  assert.equal(delta('spendpol_proxy_cache_results_total', { result: 'semantic_hit' }), 0n);

  assert.equal(total(after, 'spendpol_proxy_model_slots'), 128n);
  assert.ok(total(after, 'spendpol_proxy_model_slots_used') >= 1n);
});

/*
 * A made-up name that no price names and no provider answered: here refused
 * as unpriced (a blocking budget covers the key), as a real provider would
 * refuse it too.
 */
test('a model name nobody priced or answered takes no label of its own', async () => {
  const project = `pmj-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: '10', period: 'daily' },
  });
  assert.equal(b.status, 201, b.text);
  const { key } = await s.createKey({ name: 'metrics-junk', project });
  const junk = `made-up-${crypto.randomBytes(4).toString('hex')}`;
  const before = await scrape();
  const r = await chat(key, { model: junk, messages: [{ role: 'user', content: 'hello' }] });
  assert.ok(r.status >= 400 && r.status < 500, JSON.stringify(r));
  assert.equal(r.code, 'unpriced_model');
  const row = (await s.waitAuditRows([r.auditId]))[0];
  const after = await scrape();
  assert.ok(!after.samples.some((x) => Object.values(x.labels).includes(junk)), `no series names ${junk}`);
  assert.equal(total(after, 'spendpol_proxy_requests_total', { requested_model: 'other', model: 'other' })
    - total(before, 'spendpol_proxy_requests_total', { requested_model: 'other', model: 'other' }), 1n);
  assert.equal(total(after, 'spendpol_proxy_model_slots_used'), total(before, 'spendpol_proxy_model_slots_used'));
  assert.equal(total(after, 'spendpol_proxy_refusals_total', { reason: row.error_code })
    - total(before, 'spendpol_proxy_refusals_total', { reason: row.error_code }), 1n, `refusal ${row.error_code} counted`);
});

test('spendpol_metrics answers GET and HEAD only', async () => {
  const head = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  const post = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST', body: 'x' });
  await post.arrayBuffer();
  assert.equal(post.status, 405);
});

test('a reload keeps the counters', async () => {
  const before = await scrape();
  const requests = total(before, 'spendpol_proxy_requests_total');
  assert.ok(requests > 0n);
  const old = new Set(s.nginxWorkerPids());
  s.nginxSignal('reload');
  await waitFor(() => {
    const now = s.nginxWorkerPids();
    return now.length === 2 && now.every((p) => !old.has(p));
  }, { timeout: 20_000, message: 'the reload to replace both workers' });
  // a connection an old worker accepted as it shut down may be closed unread
  let after;
  await waitFor(async () => {
    try { after = await scrape(); return true; } catch (e) { if (e.code === 'ERR_ASSERTION') throw e; return false; }
  }, { timeout: 10_000, message: 'a scrape from the new workers' });
  assert.equal(total(after, 'spendpol_proxy_requests_total'), requests);
  assert.equal(total(after, 'spendpol_proxy_cost_nano_usd_total'), total(before, 'spendpol_proxy_cost_nano_usd_total'));
  assert.equal(total(after, 'spendpol_proxy_model_slots_used'), total(before, 'spendpol_proxy_model_slots_used'));
});

/*
 * Last: it fills the table. The fixture answers any model name with 200,
 * as no real provider does, so each made-up name here takes a slot.
 */
test('past 128 model slots, models are counted as "other" and the totals stay exact', async () => {
  const { key } = await s.createKey({ name: 'metrics-many' });
  const before = await scrape();
  const free = 128n - total(before, 'spendpol_proxy_model_slots_used');
  const n = Number(free) + 5;
  const tag = crypto.randomBytes(3).toString('hex');
  const results = [];
  for (let i = 0; i < n; i += 16) {
    results.push(...await Promise.all(Array.from({ length: Math.min(16, n - i) }, (_, j) => chat(key, {
      model: `slot-${tag}-${i + j}`, max_tokens: 2, messages: [{ role: 'user', content: 'hi' }],
    }))));
  }
  for (const r of results) assert.equal(r.status, 200, JSON.stringify(r));
  const rows = await s.waitAuditRows(results.map((r) => r.auditId));
  const after = await scrape();
  const delta = (name, match) => total(after, name, match) - total(before, name, match);
  assert.equal(total(after, 'spendpol_proxy_model_slots_used'), 128n);
  const named = after.samples.filter((x) => x.name === 'spendpol_proxy_requests_total' && x.labels.requested_model.startsWith(`slot-${tag}-`));
  assert.equal(BigInt(named.length), free, 'one series per slot that was free');
  assert.equal(delta('spendpol_proxy_requests_total', { provider: 'openai', requested_model: 'other', model: 'other', status_class: '2xx' }), 5n);
  assert.equal(delta('spendpol_proxy_requests_total'), BigInt(n));
  assert.equal(delta('gen_ai_client_token_usage_sum', { gen_ai_system: 'openai', gen_ai_token_type: 'output' }), sumOf(rows, 'output_tokens'));
  assert.equal(delta('spendpol_proxy_cost_nano_usd_total'), sumOf(rows, 'cost_nano'));
  // the text stays bounded: 128 slots and the "other" ones
  assert.ok(after.samples.length < 128 * 45 + 2000, `${after.samples.length} samples`);
});

test('nginx -t: spendpol_metrics takes a location of its own and no arguments', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-metrics-conf-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const around = (inner) => `
load_module ${path.join(BUILD, 'nginx/objs/ngx_http_spendpol_module.so')};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/px; fastcgi_temp_path ${dir}/fc;
  uwsgi_temp_path ${dir}/uw; scgi_temp_path ${dir}/sc;
  ${inner}
}
`;
  let r = nginxTest(dir, around('server { listen 127.0.0.1:1; location = /metrics { spendpol_metrics; allow 127.0.0.1; deny all; } }'));
  assert.equal(r.status, 0, r.output);
  r = nginxTest(dir, around('server { listen 127.0.0.1:1; location /v1/ { spendpol on; spendpol_metrics; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] "spendpol_metrics" directive conflicts with another content handler/);
  r = nginxTest(dir, around('server { listen 127.0.0.1:1; location /v1/ { spendpol_metrics; spendpol on; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] "spendpol" directive conflicts with another content handler/);
  r = nginxTest(dir, around('server { listen 127.0.0.1:1; location = /metrics { spendpol_metrics on; } }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] invalid number of arguments in "spendpol_metrics"/);
  r = nginxTest(dir, around('spendpol_metrics; server { listen 127.0.0.1:1; }'));
  assert.notEqual(r.status, 0);
  assert.match(r.output, /\[emerg\] "spendpol_metrics" directive is not allowed here/);
});
