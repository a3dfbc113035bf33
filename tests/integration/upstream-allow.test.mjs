// Outbound addresses are chosen by the operator (SPENDPOL_UPSTREAM_ALLOW):
// by default provider base URLs and webhook URLs must be https to public
// addresses, so loopback, private, link-local and metadata addresses (and
// names) get 422 upstream_not_allowed naming the rule; the admin API's own
// address is refused whatever the list allows; the module judges the
// address it is about to connect to (literal, or what a name resolves to
// through nginx's resolver: DNS rebinding) and answers 502
// upstream_not_allowed without revealing it; the webhook deliverer judges
// every address it connects to and says so in the delivery's error.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Stack, IS_SAN, BUILD, waitFor, assertJsonError } from './lib/stack.mjs';
import { startDnsFixture } from '../fixtures/dns-fixture.mjs';

const SLOW = IS_SAN ? 3 : 1;

// the defaults: no SPENDPOL_UPSTREAM_ALLOW at all
const s = new Stack({ provider: false, upstreamAllow: null });
let dns;
let trap; // a TCP listener on 127.0.0.1 that must never see a connection
const trapConnections = [];

before(async () => {
  dns = await startDnsFixture({ records: { 'alpha.test': '127.0.0.1' } });
  s.opts.nginxHttp = `resolver 127.0.0.1:${dns.port} valid=1s; `;
  trap = net.createServer((c) => { trapConnections.push(Date.now()); c.destroy(); });
  await new Promise((r) => trap.listen(0, '127.0.0.1', r));
  try {
    await s.start();
  } catch (e) {
    s.failed = true;
    throw e;
  }
}, { timeout: 180_000 * SLOW });

after(async () => {
  let problems;
  try {
    problems = await s.stop();
    await dns?.close();
    await new Promise((r) => trap.close(r));
  } catch (e) { problems = [String(e)]; }
  if (problems.length) {
    assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
  }
}, { timeout: 120_000 });

/* restarts controld with another allow list (null: unset) */
async function allow(list) {
  s.opts.upstreamAllow = list;
  await s.restartControld({ signal: 'SIGTERM' });
}

async function putProvider(baseUrl, name = 'openai') {
  return s.api('PUT', `/providers/${name}`, { body: { api_key: 'sk-fixture-secret', base_url: baseUrl } });
}

function assertRefused(r, param, rule, what) {
  assert.equal(r.status, 422, `${what}: ${r.status} ${r.text}`);
  const e = r.json?.error;
  assert.equal(e?.code, 'upstream_not_allowed', `${what}: ${r.text}`);
  assert.equal(e?.field, param, `${what}: ${r.text}`);
  assert.match(e.message, new RegExp(`\\(rule: ${rule}\\)`), `${what}: ${r.text}`);
  return e;
}

async function webhookRule(url) {
  return s.api('POST', '/alerts/rules', {
    body: { type: 'error_rate', params: { window_minutes: 5, threshold_percent: 50, min_requests: 1000000 }, webhook: { url, format: 'json' } },
  });
}

test('by default, loopback, private, link-local and metadata base URLs get 422 naming the rule', async () => {
  const port = s.fixture.port;
  const cases = [
    [`http://127.0.0.1:${port}/v1`, 'loopback', 'a loopback address'],
    ['http://10.0.0.5', 'private', 'a private address'],
    ['https://10.0.0.5/v1', 'private', 'a private address'],
    ['http://192.168.1.10:8000/v1', 'private', 'a private address'],
    ['http://169.254.169.254', 'metadata', 'metadata'],
    ['http://169.254.10.1', 'link-local', 'link-local'],
    [`http://[::1]:${port}`, 'loopback', 'loopback'],
    ['http://[::ffff:10.0.0.5]', 'private', 'private'],
    ['http://[fd00:ec2::254]', 'metadata', 'metadata'],
    [`http://localhost:${port}`, 'loopback', 'loopback'],
    ['https://metadata.google.internal', 'metadata', 'metadata'],
    ['http://0.0.0.0:8000', 'unspecified', 'unspecified'],
    // a name that does not resolve here: plain http is not allowed to it
    ['http://nowhere.invalid/v1', 'http', 'http'],
  ];
  for (const [url, rule, text] of cases) {
    const e = assertRefused(await putProvider(url), 'base_url', rule, url);
    assert.ok(e.message.includes(text), `${url}: ${e.message}`);
    if (rule !== 'http') assert.match(e.message, /allow it with SPENDPOL_UPSTREAM_ALLOW/, e.message);
  }
  const e = assertRefused(await putProvider('http://10.0.0.5'), 'base_url', 'private', '10.0.0.5');
  assert.equal(e.message, 'base_url host 10.0.0.5 is a private address; allow it with SPENDPOL_UPSTREAM_ALLOW (rule: private)');

  // nothing was stored
  const got = await s.api('GET', '/providers/openai');
  assert.equal(got.status, 404, got.text);

  // public https (and the built-in default) is accepted
  const ok = await putProvider('https://api.openai.com/v1');
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.base_url, 'https://api.openai.com/v1');
});

test('by default, webhook URLs to local addresses get 422 naming the rule', async () => {
  const cases = [
    ['http://127.0.0.1:9/hook', 'loopback'],
    ['http://10.1.2.3/hook', 'private'],
    ['http://169.254.169.254/latest/meta-data', 'metadata'],
    ['http://[::1]:9/hook', 'loopback'],
    ['https://localhost/hook', 'loopback'],
    ['https://metadata.google.internal/x', 'metadata'],
  ];
  for (const [url, rule] of cases) {
    assertRefused(await webhookRule(url), 'webhook.url', rule, url);
  }
  // other validation still comes first and names its own field
  const r = await s.api('POST', '/alerts/rules', { body: { type: 'error_rate', webhook: { url: 'http://127.0.0.1:9/', format: 'xml' } } });
  assert.equal(r.status, 422, r.text);
});

test('the admin API address is refused even when 127.0.0.0/8 is allowed', async () => {
  await allow('127.0.0.0/8,::1/128,*.test');
  const admin = new URL(s.apiURL);
  for (const url of [`http://127.0.0.1:${admin.port}`, `http://127.0.0.1:${admin.port}/v1`, `http://0.0.0.0:${admin.port}`]) {
    const e = assertRefused(await putProvider(url), 'base_url', 'admin-api', url);
    assert.match(e.message, /admin API/, e.message);
    assert.doesNotMatch(e.message, /allow it with/, e.message);
  }
  assertRefused(await webhookRule(`http://127.0.0.1:${admin.port}/hook`), 'webhook.url', 'admin-api', 'webhook');
  // the same host at another port is allowed now
  const ok = await putProvider(`http://127.0.0.1:${s.fixture.port}/v1`);
  assert.equal(ok.status, 200, ok.text);
  const hook = await webhookRule('http://127.0.0.1:9/hook');
  assert.equal(hook.status, 201, hook.text);
});

test('a bad SPENDPOL_UPSTREAM_ALLOW entry stops controld with a message naming it', () => {
  const env = {
    PATH: process.env.PATH,
    SPENDPOL_DATABASE_URL: s.databaseURL,
    SPENDPOL_API_LISTEN: '127.0.0.1:1',
    SPENDPOL_DATA_DIR: path.join(s.dataDir, 'bad-allow'),
    SPENDPOL_UPSTREAM_ALLOW: '127.0.0.0/8,10.0.0.0/33',
  };
  const r = spawnSync(path.join(BUILD, 'controld'), [], { env, encoding: 'utf8', timeout: 20_000 * SLOW });
  assert.notEqual(r.status, 0, `controld started: ${r.stdout} ${r.stderr}`);
  const out = `${r.stdout}${r.stderr}`;
  assert.match(out, /SPENDPOL_UPSTREAM_ALLOW/, out);
  assert.match(out, /"10\.0\.0\.0\/33"/, out);
});

test('the module refuses what the list no longer allows, and a name resolving outside it (DNS rebinding)', async () => {
  const { key } = await s.createKey({ name: `ua-${crypto.randomBytes(3).toString('hex')}` });
  const client = s.client(key);
  const ask = () => fetch(`${s.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
  }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }))
    .then((r) => { try { r.json = JSON.parse(r.text); } catch { r.json = null; } return r; });

  // allowed: the fixture on 127.0.0.1 answers
  await putProvider(`http://127.0.0.1:${s.fixture.port}/v1`);
  await s.waitStable(ask, (r) => r.status === 200, { message: 'the fixture to answer' });
  await client.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });

  // the operator narrows the list: the stored literal address is refused
  // by the module, which learns the list from the snapshot
  await allow('127.0.0.2/32');
  const lit = await s.waitStable(ask, (r) => r.status === 502 && r.json?.error?.code === 'upstream_not_allowed',
    { message: 'the module to refuse 127.0.0.1' });
  const e1 = assertJsonError(lit, 502, 'literal');
  assert.equal(e1.code, 'upstream_not_allowed');
  assert.ok(!lit.text.includes('127.0.0.1') && !lit.text.includes(String(s.fixture.port)), lit.text);

  // a name: https is accepted at store time (controld cannot resolve it),
  // nginx's resolver answers 127.0.0.1, outside the list
  const put = await putProvider(`https://alpha.test:${trap.address().port}/v1`);
  assert.equal(put.status, 200, put.text);
  const reb = await s.waitStable(ask, (r) => r.status === 502 && r.json?.error?.code === 'upstream_not_allowed'
    && dns.queries.some((q) => q.name === 'alpha.test'), { message: 'the module to refuse alpha.test' });
  const e2 = assertJsonError(reb, 502, 'rebinding');
  assert.equal(e2.type, 'api_error');
  assert.ok(!reb.text.includes('127.0.0.1') && !reb.text.includes('alpha.test'), reb.text);
  assert.equal(trapConnections.length, 0, 'nothing reached the address the name resolved to');

  // one [error] line per refusal naming provider, address and rule
  const log = fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
  const lines = log.split('\n').filter((l) => l.includes('refused: a loopback address'));
  assert.ok(lines.some((l) => /\[error\].*provider openai: upstream alpha\.test:\d+ at 127\.0\.0\.1:\d+ refused: a loopback address \(rule loopback\)/.test(l)),
    lines.join('\n') || log.slice(-2000));
  assert.ok(lines.some((l) => /\[error\].*upstream 127\.0\.0\.1:\d+ at 127\.0\.0\.1:\d+ refused/.test(l)), lines.join('\n'));
  assert.ok(!/\[alert\]/.test(log));

  // a name the list allows that resolves to the admin API: still refused
  await allow('127.0.0.0/8,*.test');
  const admin = new URL(s.apiURL).port;
  const put2 = await putProvider(`https://alpha.test:${admin}/v1`);
  assert.equal(put2.status, 200, put2.text);
  // (the previous refusal answers the same until the new snapshot is in)
  const line = `upstream alpha.test:${admin} at 127.0.0.1:${admin} refused: the admin API's own address (rule admin-api)`;
  let adm;
  await waitFor(async () => {
    adm = await ask();
    return fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8').includes(line);
  }, { timeout: 10_000 * SLOW, interval: 100, message: 'the admin-api log line' });
  const e3 = assertJsonError(adm, 502, 'admin API');
  assert.equal(e3.code, 'upstream_not_allowed');
  assert.ok(!adm.text.includes(admin), adm.text);
});

/**
 * A budget alert whose webhook goes to a sink on 127.0.0.3 answering 500
 * with a body; the rule is stored while 127.0.0.3 is allowed, then the
 * allow list becomes `then` and one request crosses the threshold.
 * Returns the alert's first recorded delivery and the sink's requests.
 */
async function webhookDelivery(then) {
  const got = [];
  const sink = http.createServer((req, res) => { got.push(req.url); res.writeHead(500); res.end('secret body of the sink'); });
  await new Promise((r) => sink.listen(0, '127.0.0.3', r));
  try {
    await allow('127.0.0.1/32,127.0.0.3/32');
    await putProvider(`http://127.0.0.1:${s.fixture.port}/v1`);
    const project = `p-${crypto.randomBytes(3).toString('hex')}`;
    const b = await s.api('POST', '/budgets', {
      body: { name: `ua-${project}`, scope: { type: 'project', value: project }, limit_usd: '0.001', period: 'daily', action: 'warn', thresholds: [50] },
    });
    assert.equal(b.status, 201, b.text);
    const r = await s.api('POST', '/alerts/rules', {
      body: { type: 'budget_threshold', params: { budget_id: b.json.id }, webhook: { url: `http://127.0.0.3:${sink.address().port}/hook`, format: 'json' } },
    });
    assert.equal(r.status, 201, r.text);

    await allow(then);
    const { key } = await s.createKey({ project });
    await s.client(key).chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: 'hi' }] });

    let alert;
    await waitFor(async () => {
      const list = await s.api('GET', '/alerts?type=budget_threshold');
      const a = list.json?.data?.find((x) => x.details?.budget_id === b.json.id);
      if (!a) return false;
      alert = await s.api('GET', `/alerts/${a.id}`);
      return alert.json?.deliveries?.length >= 1;
    }, { timeout: 20_000 * SLOW, message: 'a recorded delivery attempt' });
    return { d: alert.json.deliveries[0], text: alert.text, got };
  } finally {
    await new Promise((r) => sink.close(r));
  }
}

test('webhook delivery judges the address it connects to and says what failed', async () => {
  // the rule was stored while 127.0.0.3 was allowed; it is not any more
  const { d, text, got } = await webhookDelivery('127.0.0.1/32');
  assert.equal(d.status_code ?? 0, 0, JSON.stringify(d));
  assert.match(d.error, /address not allowed: loopback/, JSON.stringify(d));
  assert.ok(!text.includes('secret body'));
  assert.equal(got.length, 0, 'the sink was never reached');
});

test('a failed webhook delivery says the HTTP status and never the response body', async () => {
  const { d, text, got } = await webhookDelivery('127.0.0.1/32,127.0.0.3/32');
  assert.ok(got.length >= 1, 'the sink was reached');
  assert.equal(d.status_code, 500, JSON.stringify(d));
  assert.equal(d.error, 'HTTP status 500', JSON.stringify(d));
  assert.ok(!text.includes('secret body'), 'the response body is not echoed');
});
