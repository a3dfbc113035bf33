// Policies, the PII guard score, the hallucination score and shadow-AI
// alerts through the real gateway (issue 14): the official openai SDK is
// the client, the provider fixture shows what reached the provider, the
// audit row what was recorded, and POST /policies/evaluate must give the
// module's own answer on a corpus of requests.
//
// Every policy here is scoped to one key of its test (the tests share an
// organisation), except where a test says otherwise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { useStack, sleep, auditRowsOf } from './lib/stack.mjs';
import { auditRow, SLOW } from './lib/providers.mjs';

const s = useStack();

const CARD = '4111 1111 1111 1111';
const CARD2 = '5500-0000-0000-0004';
const EMAIL = 'jane.doe@example.org';

async function createPolicy(body) {
  const r = await s.api('POST', '/policies', { body: { enabled: true, ...body } });
  assert.equal(r.status, 201, `POST /policies -> ${r.status} ${r.text}`);
  assert.match(r.json.id, /^pol_/);
  return r.json;
}

const keyScope = (k) => ({ type: 'api_key', value: k.id });
const lastSent = () => s.fixture.completions().at(-1).json;

/** a call with the openai SDK: {status, headers, body} or {status, error} */
async function call(key, body, headers = {}) {
  try {
    const { data, response } = await s.client(key).chat.completions
      .create({ model: 'gpt-4o-mini', ...body }, { headers }).withResponse();
    return { status: response.status, headers: response.headers, data };
  } catch (e) {
    if (e.status == null) throw e;
    return { status: e.status, error: e, headers: e.headers };
  }
}

/** waits until every worker has the key's policies: pred holds on answers in a row */
async function settled(key, body, pred, message) {
  return s.waitStable(() => call(key, body), pred, { times: 6, message });
}

const user = (content) => ({ messages: [{ role: 'user', content }] });

test('a PII policy redacts card numbers: the provider sees [REDACTED:CARD], the answer a guard score, the audit row both', async () => {
  const k = await s.createKey({ name: 'pii-redact' });
  const pol = await createPolicy({
    name: 'Redact cards', scope: keyScope(k), kind: 'pii', action: 'redact', entities: ['card'],
  });
  const body = user(`Charge my card ${CARD} and mail the receipt to ${EMAIL}, thanks.`);
  const r = await settled(k.key, body, (x) => x.status === 200 && /REDACTED/.test(JSON.stringify(lastSent())), 'the policy in every worker');

  const sent = lastSent().messages[0].content;
  assert.equal(sent, `Charge my card [REDACTED:CARD] and mail the receipt to ${EMAIL}, thanks.`,
    'only the card is redacted; the email is no card');
  assert.ok(!JSON.stringify(s.fixture.completions().at(-1).json).includes('4111'), 'no digit of the card left');

  const score = Number(r.headers.get('x-spendpol-guard-score'));
  assert.ok(score >= 0.85 && score <= 1, `guard score ${score}`);

  const row = await auditRow(s, r.headers.get('x-spendpol-audit-id'));
  assert.equal(Number(row.guard_score).toFixed(3), score.toFixed(3));
  assert.deepEqual([...row.pii_types].sort(), ['card', 'email']);
  assert.equal(row.policy_action, 'redact');
  assert.deepEqual(row.policy_ids, [pol.id]);

  // JSON escapes inside the string and a second card: still valid JSON, both redacted
  const tricky = await call(k.key, user(`line1\n"quoted" ${CARD2}\tand \u00e9 ${CARD}`));
  assert.equal(tricky.status, 200);
  assert.equal(lastSent().messages[0].content, 'line1\n"quoted" [REDACTED:CARD]\tand \u00e9 [REDACTED:CARD]');
});

test('every response carries X-Spendpol-Guard-Score: 0 for clean text, the score of what was found otherwise', async () => {
  const k = await s.createKey({ name: 'guard-score' });
  const clean = await call(k.key, user('What is the capital of France?'));
  assert.equal(clean.status, 200);
  assert.equal(clean.headers.get('x-spendpol-guard-score'), '0');

  const email = await call(k.key, user(`Write to ${EMAIL} please`));
  const e = Number(email.headers.get('x-spendpol-guard-score'));
  assert.ok(e > 0 && e < 0.85, `an email alone scores low: ${e}`);
  const both = await call(k.key, user(`Write to ${EMAIL}, SSN 123-45-6789`));
  assert.ok(Number(both.headers.get('x-spendpol-guard-score')) > e, 'more kinds of PII, a higher score');
  assert.equal(lastSent().messages[0].content, `Write to ${EMAIL}, SSN 123-45-6789`, 'no policy: nothing redacted');

  // a gateway error carries it too
  const bad = await call(k.key, { messages: [{ role: 'user', content: 'x' }], max_tokens: -5 });
  assert.equal(bad.status, 400);
  assert.ok(bad.headers.get('x-spendpol-guard-score') !== null);
});

test('model and provider policies block (403 policy_violation naming the policy), warn and log', async () => {
  const k = await s.createKey({ name: 'model-policy' });
  const deny = await createPolicy({
    name: 'No big models', scope: keyScope(k), kind: 'model', action: 'block', deny_models: ['gpt-4o', 'gpt-4.1*'],
  });
  const r = await settled(k.key, { model: 'gpt-4o', ...user('hi') }, (x) => x.status === 403, 'the block in every worker');
  assert.equal(r.error.code, 'policy_violation');
  assert.match(r.error.message, /No big models/);
  assert.match(r.error.message, new RegExp(deny.id));
  const before = s.fixture.completions().length;
  assert.equal((await call(k.key, { model: 'gpt-4.1-mini', ...user('hi') })).status, 403);
  assert.equal(s.fixture.completions().length, before, 'a blocked call never reaches the provider');
  assert.equal((await call(k.key, { model: 'gpt-4o-mini', ...user('hi') })).status, 200, 'other models pass');
  const row = await auditRow(s, r.headers.get('x-spendpol-audit-id'));
  assert.equal(row.status, 403);
  assert.equal(row.policy_action, 'block');
  assert.equal(row.error_code, 'policy_violation');

  const k2 = await s.createKey({ name: 'provider-policy-warn' });
  await createPolicy({
    name: 'Only Anthropic please', scope: keyScope(k2), kind: 'model', action: 'warn', allow_providers: ['anthropic'], code: 'provider_discouraged',
  });
  const w = await settled(k2.key, user('hi'), (x) => x.status === 200 && /provider_discouraged/.test(x.headers.get('x-spendpol-policy-warning') ?? ''), 'the warning in every worker');
  const wrow = await auditRow(s, w.headers.get('x-spendpol-audit-id'));
  assert.equal(wrow.policy_action, 'warn');
  assert.deepEqual(wrow.policy_warnings, ['provider_discouraged']);

  const k3 = await s.createKey({ name: 'model-policy-log' });
  const logp = await createPolicy({ name: 'Log mini', scope: keyScope(k3), kind: 'model', action: 'log', deny_models: ['gpt-4o-mini'] });
  const l = await settled(k3.key, user('hi'), (x) => x.status === 200, 'the key');
  await sleep(300 * SLOW);
  const l2 = await call(k3.key, user('hi'));
  assert.equal(l2.headers.get('x-spendpol-policy-warning'), null, 'a log policy sends no warning');
  const lrow = await auditRow(s, l2.headers.get('x-spendpol-audit-id'));
  assert.equal(lrow.policy_action, 'log');
  assert.deepEqual(lrow.policy_ids, [logp.id]);
  assert.ok(l);
});

test('limits: max_tokens and the worst-case cost per request', async () => {
  const k = await s.createKey({ name: 'limits-policy' });
  await createPolicy({ name: 'Short answers', scope: keyScope(k), kind: 'limits', action: 'block', max_tokens: 100 });
  const r = await settled(k.key, { ...user('hi'), max_tokens: 101 }, (x) => x.status === 403, 'the limit in every worker');
  assert.match(r.error.message, /Short answers/);
  assert.equal((await call(k.key, { ...user('hi'), max_tokens: 100 })).status, 200, 'at the limit passes');

  const k2 = await s.createKey({ name: 'cost-policy' });
  // gpt-4o: $10 per 1M output tokens: 10,000 output tokens are $0.10 at worst
  await createPolicy({ name: 'Ten cents', scope: keyScope(k2), kind: 'limits', action: 'warn', max_cost_usd: '0.10' });
  const over = await settled(k2.key, { model: 'gpt-4o', ...user('hi'), max_tokens: 10000 },
    (x) => x.status === 200 && /limit_exceeded/.test(x.headers.get('x-spendpol-policy-warning') ?? ''), 'the cost limit in every worker');
  assert.ok(over);
  const under = await call(k2.key, { model: 'gpt-4o', ...user('hi'), max_tokens: 9000 });
  assert.equal(under.status, 200);
  assert.doesNotMatch(under.headers.get('x-spendpol-policy-warning') ?? '', /limit_exceeded/);
});

test('attribution, patterns and time windows', async () => {
  const k = await s.createKey({ name: 'attribution-policy' });
  await createPolicy({ name: 'Say who pays', scope: keyScope(k), kind: 'attribution', action: 'block', require: 'department' });
  const r = await settled(k.key, user('hi'), (x) => x.status === 403, 'attribution in every worker');
  assert.equal(r.error.code, 'policy_violation');
  assert.equal((await call(k.key, user('hi'), { 'X-Spendpol-Department': 'finance' })).status, 200);

  const k2 = await s.createKey({ name: 'pattern-policy' });
  await createPolicy({ name: 'Project Falcon is secret', scope: keyScope(k2), kind: 'pattern', action: 'redact', patterns: ['project\\s+falcon'], case_insensitive: true });
  await settled(k2.key, user('Tell me about Project  FALCON now'), (x) => x.status === 200 && /REDACTED/.test(lastSent().messages[0].content), 'the pattern in every worker');
  assert.equal(lastSent().messages[0].content, 'Tell me about [REDACTED:PATTERN] now');

  // a catastrophic pattern is held to its limits: it answers at once, closed
  const k3 = await s.createKey({ name: 'catastrophic-pattern' });
  await createPolicy({ name: 'Backtracking', scope: keyScope(k3), kind: 'pattern', action: 'block', patterns: ['(a+)+$'] });
  const evil = `${'a'.repeat(5000)}b`;
  const t0 = Date.now();
  const c = await settled(k3.key, user(evil), (x) => x.status === 403, 'the pattern in every worker');
  assert.match(c.error.message, /limit/);
  assert.ok(Date.now() - t0 < 10_000 * SLOW);
  const t1 = Date.now();
  assert.equal((await call(k3.key, user(evil))).status, 403);
  assert.ok(Date.now() - t1 < 1000 * SLOW, `one request took ${Date.now() - t1} ms`);
  assert.equal((await call(k3.key, user('bbb'))).status, 200);

  // a window that is never now: 00:00-00:01 on a day that is not today
  const k4 = await s.createKey({ name: 'time-policy' });
  const days = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
  const notToday = days[(new Date().getUTCDay() + 3) % 7];
  await createPolicy({ name: 'Office hours', scope: keyScope(k4), kind: 'time_window', action: 'block', timezone: 'UTC', days: [notToday], start: '00:00', end: '00:01' });
  const tw = await settled(k4.key, user('hi'), (x) => x.status === 403, 'the window in every worker');
  assert.match(tw.error.message, /Office hours/);
});

test('every kind blocks, warns and logs through the proxy, as its action says', async () => {
  const days = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
  const kinds = [
    { kind: 'model', def: { deny_models: ['gpt-4o-mini'] }, code: 'model_not_allowed', body: user('hi') },
    { kind: 'limits', def: { max_tokens: 10 }, code: 'limit_exceeded', body: { ...user('hi'), max_tokens: 11 } },
    { kind: 'attribution', def: { require: 'project' }, code: 'attribution_missing', body: user('hi') },
    { kind: 'pii', def: { entities: ['email'] }, code: 'pii_detected', body: user(`mail ${EMAIL}`) },
    { kind: 'pattern', def: { patterns: ['\\bsecret sauce\\b'] }, code: 'pattern_matched', body: user('the secret sauce is') },
    {
      kind: 'time_window', def: { timezone: 'UTC', days: [days[(new Date().getUTCDay() + 3) % 7]], start: '00:00', end: '00:01' },
      code: 'outside_time_window', body: user('hi'),
    },
  ];
  const keys = [];
  for (const k of kinds) {
    for (const action of ['block', 'warn', 'log']) {
      const key = await s.createKey({ name: `kind-${k.kind}-${action}` });
      const pol = await createPolicy({ name: `${k.kind} ${action}`, scope: keyScope(key), kind: k.kind, action, ...k.def });
      keys.push({ ...k, action, key, pol });
    }
  }
  for (const x of keys) {
    const what = `${x.kind} ${x.action}`;
    const want = x.action === 'block' ? 403 : 200;
    const r = await settled(x.key.key, x.body, (y) => y.status === want
      && (x.action !== 'warn' || (y.headers.get('x-spendpol-policy-warning') ?? '').split(',').includes(x.code)), `${what} in every worker`);
    if (x.action === 'block') {
      assert.equal(r.error.code, 'policy_violation', what);
      assert.match(r.error.message, new RegExp(x.pol.id), what);
    }
    const warning = (r.headers.get('x-spendpol-policy-warning') ?? '').split(',');
    assert.equal(warning.includes(x.code), x.action === 'warn', `${what}: warning ${warning}`);
    const row = await auditRow(s, r.headers.get('x-spendpol-audit-id'));
    assert.equal(row.policy_action, x.action, what);
    assert.deepEqual(row.policy_ids, [x.pol.id], what);
  }
});

test('an invalid pattern is 422 with PCRE2\'s message and offset; nothing is stored', async () => {
  const r = await s.api('POST', '/policies', { body: { name: 'bad', scope: { type: 'organization' }, kind: 'pattern', action: 'block', patterns: ['ok', 'a(b'] } });
  assert.equal(r.status, 422, r.text);
  assert.equal(r.json.error.field, 'patterns[1]');
  assert.match(r.json.error.message, /offset \d+/);
  const list = await s.api('GET', '/policies');
  assert.ok(!JSON.stringify(list.json).includes('"a(b"'));
});

test('POST /policies/evaluate gives the proxy\'s own answer on a corpus', async () => {
  const k = await s.createKey({ name: 'evaluate-corpus' });
  const scope = keyScope(k);
  const made = [
    await createPolicy({ name: 'cards', scope, kind: 'pii', action: 'redact', entities: { card: 'redact', ssn: 'block', email: 'log' } }),
    await createPolicy({ name: 'secrets', scope, kind: 'pii', action: 'block', entities: ['api_key', 'private_key'] }),
    await createPolicy({ name: 'falcon', scope, kind: 'pattern', action: 'warn', patterns: ['falcon'], code: 'codename' }),
    await createPolicy({ name: 'tokens', scope, kind: 'limits', action: 'warn', max_tokens: 50 }),
    await createPolicy({ name: 'models', scope, kind: 'model', action: 'block', deny_models: ['gpt-4.1*'] }),
  ];
  assert.equal(made.length, 5);
  const corpus = [
    { model: 'gpt-4o-mini', ...user('plain text, nothing here') },
    { model: 'gpt-4o-mini', ...user(`card ${CARD} please`) },
    { model: 'gpt-4o-mini', ...user(`mail ${EMAIL} and call +1 415 555 0132`) },
    { model: 'gpt-4o-mini', ...user('my SSN is 123-45-6789') },
    { model: 'gpt-4o-mini', ...user('key sk-proj-' + 'a1B2c3D4e5'.repeat(5)) },
    { model: 'gpt-4o-mini', ...user('the falcon flies'), max_tokens: 60 },
    { model: 'gpt-4.1-mini', ...user('hello') },
    { model: 'gpt-4o-mini', messages: [{ role: 'system', content: `IBAN DE89 3704 0044 0532 0130 00, ip 10.1.2.3` }, { role: 'user', content: 'ok' }] },
    { model: 'gpt-4o-mini', ...user('order 4111 1111 1111 1112 and version 1.2.3.4.5') },
  ];
  // the key's five policies are everywhere once the model block is
  await settled(k.key, { model: 'gpt-4.1-mini', ...user('x') }, (x) => x.status === 403, 'the policies in every worker');

  for (const body of corpus) {
    const p = await call(k.key, body);
    const ev = await s.api('POST', '/policies/evaluate', { body: { api_key_id: k.id, provider: 'openai', body } });
    assert.equal(ev.status, 200, ev.text);
    const what = JSON.stringify(body).slice(0, 80);
    assert.equal(ev.json.status, p.status, `status of ${what}`);
    assert.equal(Number(ev.json.guard_score).toFixed(3), Number(p.headers.get('x-spendpol-guard-score')).toFixed(3), `guard score of ${what}`);
    const row = await auditRow(s, p.headers.get('x-spendpol-audit-id'));
    assert.equal(ev.json.decision, row.policy_action || 'pass', `decision of ${what}`);
    assert.deepEqual(ev.json.matches.map((m) => m.policy_id), row.policy_ids ?? [], `policies of ${what}`);
    assert.deepEqual([...ev.json.pii_types].sort(), [...(row.pii_types ?? [])].sort(), `pii types of ${what}`);
    const warned = (p.headers.get('x-spendpol-policy-warning') ?? '').split(',').filter((c) => ev.json.warnings.includes(c));
    assert.deepEqual(warned, ev.json.warnings, `warnings of ${what}`);
    for (const e of ev.json.entities) assert.deepEqual(Object.keys(e).sort(), ['end', 'start', 'type'], 'entities carry no values');
    if (ev.json.decision === 'redact') {
      assert.deepEqual(ev.json.redacted_body.messages, lastSent().messages, `redacted body of ${what}`);
    }
  }
});

test('a raw OpenAI key at the proxy is refused with 401 and raises a shadow-AI alert with its fingerprint, never the key', async () => {
  const raw = `sk-proj-${crypto.randomBytes(36).toString('base64url').replace(/[-_]/g, 'x')}`;
  const r = await call(raw, user('hi'));
  assert.equal(r.status, 401);
  assert.equal(r.error.code, 'provider_key_not_allowed');
  assert.ok(!r.error.message.includes(raw.slice(8, 20)));
  const fp = `fp_${crypto.createHash('sha256').update(raw).digest('hex').slice(0, 16)}`;

  let alert;
  const end = Date.now() + 15_000 * SLOW;
  while (!alert && Date.now() < end) {
    const list = await s.api('GET', '/shadow-ai/alerts?source=raw_key');
    assert.equal(list.status, 200, list.text);
    alert = auditRowsOf(list.json).find((a) => (a.key_fps ?? []).includes(fp));
    if (!alert) await sleep(200);
  }
  assert.ok(alert, 'the alert appears');
  assert.deepEqual(alert.key_types, ['openai']);
  assert.ok(!JSON.stringify(alert).includes(raw.slice(8)), 'the key is nowhere in the alert');
  for (const f of ['error.log', 'controld.err', 'controld.out', 'nginx.err']) {
    const file = path.join(s.logs, f);
    if (fs.existsSync(file)) assert.ok(!fs.readFileSync(file, 'utf8').includes(raw.slice(8)), `the key is not in ${f}`);
  }

  const ack = await s.api('POST', `/shadow-ai/alerts/${alert.id}/acknowledge`);
  assert.equal(ack.status, 200, ack.text);
  assert.equal(ack.json.status, 'acknowledged');

  // the Anthropic SDK's header too
  const ant = await fetch(`${s.proxyURL}/v1/anthropic/v1/messages`, {
    method: 'POST', headers: { 'x-api-key': `sk-ant-api03-${'Z'.repeat(93)}AA`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
  });
  assert.equal(ant.status, 401);
  assert.equal((await ant.json()).error.code, 'provider_key_not_allowed');
});

/** a streamed call read raw, for its trailers */
function streamRaw(key, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.openaiBaseURL}/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', te: 'trailers' },
    }, (r) => {
      const chunks = [];
      r.on('data', (d) => chunks.push(d));
      r.on('end', () => resolve({ status: r.statusCode, headers: r.headers, trailers: r.trailers, text: Buffer.concat(chunks).toString('utf8') }));
      r.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ model: 'gpt-4o-mini', ...body }));
  });
}

const CONTEXT = 'Quarterly report. Acme Robotics sold 4,210 units in March 2026 at an average price of $312. '
  + 'The CFO, Maria Lindqvist, said margins rose to 18.5 percent. The Lyon plant opened on 3 February 2026. '
  + 'Returns were 2.1 percent, down from 3.4 percent. The board approved a dividend of $0.42 per share.';
const GROUNDED = 'Acme Robotics sold 4,210 units in March 2026 at about $312 each; Maria Lindqvist said margins reached 18.5 percent.';
const UNGROUNDED = 'Acme Robotics sold 9,870 units in April 2025 at $455 each; Henrik Strandberg said margins reached 31.2 percent after the Oslo plant opened.';

test('the hallucination score: low for a grounded answer, high for an ungrounded one, in headers, trailers and the audit row', async () => {
  const k = await s.createKey({ name: 'halluc' });
  const ask = (reply, finish) => ({
    messages: [{ role: 'system', content: `Answer only from this document:\n${CONTEXT}` }, { role: 'user', content: 'How did Acme do in March?' }],
    metadata: { fixture_reply: reply, ...(finish ? { fixture_finish: finish } : {}) },
  });
  const g = await call(k.key, ask(GROUNDED));
  const u = await call(k.key, ask(UNGROUNDED));
  assert.equal(g.data.choices[0].message.content, GROUNDED);
  const gs = Number(g.headers.get('x-spendpol-hallucination-score'));
  const us = Number(u.headers.get('x-spendpol-hallucination-score'));
  assert.ok(Number.isInteger(gs) && gs >= 0 && gs <= 100, `grounded ${gs}`);
  assert.ok(gs <= 30, `grounded answer scores low: ${gs}`);
  assert.ok(us >= 60, `ungrounded answer scores high: ${us}`);
  const row = await auditRow(s, u.headers.get('x-spendpol-audit-id'));
  assert.equal(Number(row.hallucination_score), us);

  const cut = await call(k.key, ask(GROUNDED, 'length'));
  assert.ok(Number(cut.headers.get('x-spendpol-hallucination-score')) > gs, 'an answer cut at its length scores higher');

  const st = await streamRaw(k.key, { ...ask(UNGROUNDED), stream: true });
  assert.equal(st.status, 200);
  assert.match(st.headers.trailer ?? '', /X-Spendpol-Hallucination-Score/i);
  assert.equal(Number(st.trailers['x-spendpol-hallucination-score']), us, 'the stream scores as the JSON answer');
});

test('scan_responses: a card in the answer is redacted before it reaches the client', async () => {
  const k = await s.createKey({ name: 'pii-answers' });
  await createPolicy({ name: 'Cards both ways', scope: keyScope(k), kind: 'pii', action: 'redact', entities: ['card'], scan_responses: true });
  const body = { ...user('What card is on file?'), metadata: { fixture_reply: `The card on file is ${CARD}.` } };
  const r = await settled(k.key, body, (x) => x.status === 200 && /REDACTED/.test(x.data.choices[0].message.content), 'the policy in every worker');
  assert.equal(r.data.choices[0].message.content, 'The card on file is [REDACTED:CARD].');
  assert.match(r.headers.get('x-spendpol-policy-warning') ?? '', /pii_in_response/);
  const row = await auditRow(s, r.headers.get('x-spendpol-audit-id'));
  assert.ok((row.warnings ?? []).includes('pii_in_response'), JSON.stringify(row.warnings));

  // a stream: the fixture splits the card over several events, which are
  // passed on as they come (none is held back): the whole text is scanned
  // at the end and the trailer says so
  const st = await streamRaw(k.key, { ...body, stream: true });
  assert.equal(st.status, 200);
  assert.match(st.text, /data: \[DONE\]/);
  assert.match(st.trailers['x-spendpol-policy-warning'] ?? '', /pii_in_response/);
});
