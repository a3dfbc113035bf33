// Alert rules and webhook delivery: POST/GET/DELETE /alerts/rules, a
// budget_threshold alert delivered to a local receiver as JSON or in
// Slack's {"text"} shape, retried with backoff after 5xx answers, every
// attempt listed in GET /alerts/{id}; webhook credentials never logged.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, assertPaged } from './lib/stack.mjs';

const s = useStack();

/* a webhook receiver on 127.0.0.1 answering statuses[i] to request i */
async function receiver(statuses = []) {
  const got = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      got.push({ at: Date.now(), method: req.method, url: req.url, headers: req.headers, body });
      const status = statuses[got.length - 1] ?? 200;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  after(() => new Promise((r) => server.close(r)));
  return { url, got };
}

/* a warning budget of 0.001 USD on a fresh project and a key in it */
async function budgetAndKey() {
  const project = `p-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: {
      name: `alert-${project}`, scope: { type: 'project', value: project },
      limit_usd: '0.001', period: 'daily', action: 'warn', thresholds: [50],
    },
  });
  assert.equal(b.status, 201, b.text);
  const key = await s.createKey({ project });
  return { budget: b.json, key: key.key };
}

async function rule(type, params, webhook) {
  const r = await s.api('POST', '/alerts/rules', { body: { type, params, webhook } });
  assert.equal(r.status, 201, r.text);
  assert.match(r.json.id, /^arl_[0-9a-f]{24}$/);
  return r.json;
}

/* one call of about 0.0006 USD (gpt-4o-mini, 1000 output tokens): 60 % */
async function spend(key) {
  const r = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: 'hi' }],
  });
  assert.ok(r.choices);
}

test('rules are validated, listed and deleted', async () => {
  const bad = [
    [{ type: 'nope' }, 422, 'type'],
    [{}, 422, 'type'],
    [{ type: 'error_rate', params: { window_minutes: 0 } }, 422, 'params'],
    [{ type: 'error_rate', params: { wat: 1 } }, 400, 'params'],
    [{ type: 'spend_spike', params: { factor: 1 } }, 422, 'params'],
    [{ type: 'budget_threshold', webhook: { url: 'ftp://x/y' } }, 422, 'webhook.url'],
    [{ type: 'budget_threshold', webhook: { url: 'http://x/y', format: 'xml' } }, 422, 'webhook.format'],
    [{ type: 'budget_threshold', webhook: {} }, 422, 'webhook.url'],
  ];
  for (const [body, status, field] of bad) {
    const r = await s.api('POST', '/alerts/rules', { body });
    assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.field, field, r.text);
  }

  const e = await rule('error_rate', { window_minutes: 5, threshold_percent: 20, min_requests: 20 });
  assert.deepEqual(e.params, { window_minutes: 5, threshold_percent: 20, min_requests: 20 });
  assert.equal(e.webhook, null);
  const sp = await rule('spend_spike', { window_minutes: 60, factor: 3 },
    { url: 'https://hooks.example.com/services/T0/B0?token=zzz', format: 'slack' });
  assert.deepEqual(sp.params, { window_minutes: 60, factor: 3, baseline_windows: 24 });
  assert.deepEqual(sp.webhook, { url: 'https://hooks.example.com/services/T0/B0', format: 'slack' });

  const list = await s.api('GET', '/alerts/rules');
  assert.equal(list.status, 200, list.text);
  const ids = list.json.data.map((x) => x.id);
  assert.ok(ids.includes(e.id) && ids.includes(sp.id));

  for (const id of [e.id, sp.id]) {
    assert.equal((await s.api('DELETE', `/alerts/rules/${id}`)).status, 200);
    assert.equal((await s.api('DELETE', `/alerts/rules/${id}`)).status, 404);
  }

  // the alert routes keep working next to the rule routes
  assert.equal((await s.api('GET', '/alerts')).status, 200);
  assert.equal((await s.api('GET', '/alerts/alr_000000000000000000000000')).status, 404);
});

test('a budget crossing 50 % raises the alert and the webhook gets it as JSON', async () => {
  const hook = await receiver();
  const { budget, key } = await budgetAndKey();
  const r = await rule('budget_threshold', { budget_id: budget.id }, { url: `${hook.url}/hook`, format: 'json' });
  assert.deepEqual(r.webhook, { url: `${hook.url}/hook`, format: 'json' });

  const t0 = Date.now();
  await spend(key);
  await waitFor(() => hook.got.length >= 1, { timeout: 15_000, message: 'the webhook call' });
  const call = hook.got[0];
  assert.ok(call.at - t0 < 10_000, `delivered after ${call.at - t0} ms`);
  assert.equal(call.method, 'POST');
  assert.equal(call.url, '/hook');
  assert.match(call.headers['content-type'], /application\/json/);
  const alert = JSON.parse(call.body);
  assert.equal(alert.type, 'budget_threshold');
  assert.match(alert.id, /^alr_/);
  assert.equal(alert.details.budget_id, budget.id);
  assert.equal(alert.details.threshold_percent, 50);

  let got;
  await waitFor(async () => {
    got = await s.api('GET', `/alerts/${alert.id}`);
    return got.json?.deliveries?.length === 1;
  }, { timeout: 5000, message: 'the recorded delivery' });
  assert.equal(got.json.id, alert.id);
  assert.equal(got.json.deliveries[0].rule_id, r.id);
  assert.equal(got.json.deliveries[0].attempt, 1);
  assert.equal(got.json.deliveries[0].status_code, 200);
  assert.equal(got.json.deliveries[0].error, null);
  await new Promise((res) => setTimeout(res, 1500));
  assert.equal(hook.got.length, 1, 'delivered once');
});

test('500, 500, then 200: three attempts with backoff, all recorded', async () => {
  const hook = await receiver([500, 500, 200]);
  const { budget, key } = await budgetAndKey();
  const r = await rule('budget_threshold', { budget_id: budget.id }, { url: hook.url, format: 'json' });
  await spend(key);
  await waitFor(() => hook.got.length >= 3, { timeout: 25_000, message: 'three webhook calls' });
  assert.ok(hook.got[1].at - hook.got[0].at >= 900, `1st wait ${hook.got[1].at - hook.got[0].at} ms`);
  assert.ok(hook.got[2].at - hook.got[1].at >= 1900, `2nd wait ${hook.got[2].at - hook.got[1].at} ms`);
  const id = JSON.parse(hook.got[0].body).id;
  for (const c of hook.got) assert.equal(JSON.parse(c.body).id, id);

  let got;
  await waitFor(async () => {
    got = await s.api('GET', `/alerts/${id}`);
    return got.json?.deliveries?.length === 3;
  }, { timeout: 5000, message: 'three recorded attempts' });
  assert.deepEqual(got.json.deliveries.map((d) => [d.rule_id, d.attempt, d.status_code]),
    [[r.id, 1, 500], [r.id, 2, 500], [r.id, 3, 200]]);
  assert.match(got.json.deliveries[0].error, /500/);
  await new Promise((res) => setTimeout(res, 2500));
  assert.equal(hook.got.length, 3, 'no attempt after the 200');
});

test('slack format posts {"text"}; URL credentials are sent, never shown or logged', async () => {
  const hook = await receiver();
  const { budget, key } = await budgetAndKey();
  const port = new URL(hook.url).port;
  const url = `http://hookuser:s3cr3t-pw@127.0.0.1:${port}/slack/hook?token=t0ps3cret`;
  const r = await rule('budget_threshold', { budget_id: budget.id }, { url, format: 'slack' });
  assert.deepEqual(r.webhook, { url: `http://127.0.0.1:${port}/slack/hook`, format: 'slack' });

  await spend(key);
  await waitFor(() => hook.got.length >= 1, { timeout: 15_000, message: 'the slack webhook call' });
  const call = hook.got[0];
  assert.equal(call.url, '/slack/hook?token=t0ps3cret');
  assert.equal(call.headers.authorization, `Basic ${Buffer.from('hookuser:s3cr3t-pw').toString('base64')}`);
  const body = JSON.parse(call.body);
  assert.deepEqual(Object.keys(body), ['text']);
  assert.match(body.text, /budget_threshold/);
  assert.match(body.text, new RegExp(budget.id));

  const listed = JSON.stringify((await s.api('GET', '/alerts/rules')).json);
  assert.ok(!listed.includes('s3cr3t') && !listed.includes('t0ps3cret'), listed);
  for (const f of fs.readdirSync(s.logs).filter((n) => n.startsWith('controld'))) {
    const text = fs.readFileSync(path.join(s.logs, f), 'utf8');
    assert.ok(!text.includes('s3cr3t') && !text.includes('t0ps3cret'), `${f} holds a webhook credential`);
  }
});

/* before the evaluator tests, whose rules may raise alerts at any time */
test('GET /alerts pages newest first with a cursor, also filtered', async () => {
  const budgets = [];
  for (let i = 0; i < 2; i++) {
    const { budget, key } = await budgetAndKey();
    await spend(key);
    budgets.push(budget.id);
  }
  const ours = [];
  await waitFor(async () => {
    const r = await s.api('GET', '/alerts?type=budget_threshold');
    ours.length = 0;
    for (const id of budgets) {
      const alert = r.json?.data?.find((a) => a.details.budget_id === id);
      if (alert) ours.push(alert.id);
    }
    return ours.length === 2;
  }, { timeout: 15_000, message: 'two budget_threshold alerts' });
  /* one ingest batch may raise both in one transaction: same created_at */
  const same = (got) => assert.deepEqual([...got].sort(), [...ours].sort());
  same(await assertPaged(s, '/alerts', { badFilter: 'state=bogus' }));
  same(await assertPaged(s, '/alerts?type=budget_threshold', { badFilter: 'state=open%01' }));
  same(await assertPaged(s, '/alerts?state=open', { badFilter: 'type=%01' }));
});

test('error_rate: the evaluator raises an alert once 5xx answers pass the threshold', async () => {
  const hook = await receiver();
  const r = await rule('error_rate', { window_minutes: 5, threshold_percent: 30, min_requests: 5 },
    { url: `${hook.url}/errors`, format: 'json' });
  const { key } = await budgetAndKey();
  const client = s.client(key);
  for (let i = 0; i < 12; i++) {
    await client.chat.completions.create({ model: 'fixture-500', messages: [{ role: 'user', content: 'hi' }] })
      .then(() => assert.fail('fixture-500 answered 2xx'), (e) => assert.equal(e.status, 500));
  }
  // the evaluator runs every 15 s
  await waitFor(() => hook.got.length >= 1, { timeout: 45_000, message: 'the error_rate webhook call' });
  const alert = JSON.parse(hook.got[0].body);
  assert.equal(alert.type, 'error_rate');
  assert.equal(alert.details.rule_id, r.id);
  assert.ok(alert.details.errors >= 12, JSON.stringify(alert.details));
  assert.ok(alert.details.error_percent >= 30, JSON.stringify(alert.details));
  assert.equal(alert.dedupe_key.split(':')[1], r.id);
  const listed = await s.api('GET', '/alerts?type=error_rate');
  assert.ok(listed.json.data.some((a) => a.id === alert.id), listed.text);
  // one alert per rule and (clock-aligned) window, however often the job
  // runs; a window boundary passed while waiting may add the next one
  await new Promise((res) => setTimeout(res, 16_000));
  const again = await s.api('GET', '/alerts?type=error_rate');
  const mine = again.json.data.filter((a) => a.details.rule_id === r.id);
  assert.equal(new Set(mine.map((a) => a.dedupe_key)).size, mine.length, JSON.stringify(mine));
  assert.ok(mine.length <= 2, `${mine.length} alerts`);
  assert.equal(hook.got.length, mine.length);
});

test('spend_spike: the last window against the average of the ones before', async () => {
  const hook = await receiver();
  const r = await rule('spend_spike', { window_minutes: 1, baseline_windows: 2, factor: 3 },
    { url: `${hook.url}/spike`, format: 'slack' });
  // history written straight into audit_logs (as the tables' owner; the
  // runtime role may not insert audit rows): 1 USD in
  // the baseline windows, 10 USD in the last minute, far above any spend
  // the other tests of this file made
  const id = () => `spike-${crypto.randomBytes(8).toString('hex')}`;
  execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-qc',
    `INSERT INTO audit_logs (id, org_id, created_at, cost_nano) VALUES
     ('${id()}', 'org_default', now() - interval '90 seconds', 1000000000),
     ('${id()}', 'org_default', now() - interval '5 seconds', 10000000000)`]);
  await waitFor(() => hook.got.length >= 1, { timeout: 45_000, message: 'the spend_spike webhook call' });
  const { text } = JSON.parse(hook.got[0].body);
  assert.match(text, /spend_spike/);
  const listed = await s.api('GET', '/alerts?type=spend_spike');
  const mine = listed.json.data.filter((a) => a.details.rule_id === r.id);
  assert.equal(mine.length, 1, listed.text);
  assert.equal(Number(mine[0].details.factor), 3);
  assert.ok(Number(mine[0].details.spend_usd) >= 10, JSON.stringify(mine[0].details));
  assert.ok(Number(mine[0].details.ratio) >= 3, JSON.stringify(mine[0].details));
});
