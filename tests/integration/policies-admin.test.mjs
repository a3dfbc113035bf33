// The policies' admin API (issue 14): /policies (create with defaults,
// list filters, PATCH merge, delete, 422s naming the field, PCRE2's own
// message and offset for a bad regex, scopes), POST /policies/evaluate
// (each kind blocking, warning, logging and redacting, a catastrophic
// regex answering quickly, a key's attribution as the module applies it),
// the snapshot that carries the enabled policies, row-level security
// between two organisations, and the audit columns a journal line fills.
// Admin API and journal only: no proxy call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, assertJsonError, newKey } from './lib/stack.mjs';
import { readSnapshot, TABLE } from './lib/snapshot.mjs';

const s = useStack();
const ORG = 'org_default';
const POLICY_ID = /^pol_[0-9a-f]{24}$/;
const CARD = '4111 1111 1111 1111';

/** the organisation's policies as the snapshot carries them, or null */
function snapshotPolicies(org) {
  const { str, records } = readSnapshot(s.snapshotDir);
  const rec = records(TABLE.POLICIES).find((r) => str(r) === org);
  return rec ? JSON.parse(str(rec + 8)) : null;
}

/** one value of a query run as the tables' owner */
function sql(query) {
  return execFileSync('psql', [s.ownerDatabaseURL, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8' }).trim();
}

function fieldError(r, status, field, what) {
  const e = assertJsonError(r, status, what);
  if (field instanceof RegExp) assert.match(e.field ?? '', field, `${what}: field in ${r.text}`);
  else assert.equal(e.field, field, `${what}: field in ${r.text}`);
  return e;
}

async function deleteAllPolicies(key) {
  const list = await s.api('GET', '/policies', { key });
  assert.equal(list.status, 200, list.text);
  for (const p of list.json.data) await s.api('DELETE', `/policies/${p.id}`, { key });
}

const create = async (body, key) => {
  const r = await s.api('POST', '/policies', { body, key });
  assert.equal(r.status, 201, r.text);
  return r.json;
};

const chat = (content, extra = {}) => ({ model: 'gpt-4o', messages: [{ role: 'user', content }], ...extra });

const evaluate = (body, key) => s.api('POST', '/policies/evaluate', { body, key });

const piiCards = (action = 'redact') => ({
  name: 'no cards', kind: 'pii', action, entities: ['card'],
});

// ---- /policies ---------------------------------------------------------

test('POST /policies stores a policy with its defaults and answers it', async () => {
  await deleteAllPolicies();
  const r = await s.api('POST', '/policies', { body: piiCards() });
  assert.equal(r.status, 201, r.text);
  assert.match(r.json.id, POLICY_ID);
  assert.equal(r.json.name, 'no cards');
  assert.equal(r.json.enabled, true, 'enabled by default');
  assert.deepEqual(r.json.scope, { type: 'organization' }, 'organisation scope by default');
  assert.equal(r.json.kind, 'pii');
  assert.equal(r.json.action, 'redact');
  assert.ok(r.json.created_at && r.json.updated_at);

  const got = await s.api('GET', `/policies/${r.json.id}`);
  assert.equal(got.status, 200, got.text);
  assert.deepEqual(got.json, r.json);
});

test('GET /policies lists oldest first, filtered by kind, scope_type and enabled', async () => {
  await deleteAllPolicies();
  const a = await create({ name: 'a', kind: 'model', action: 'block', deny_models: ['gpt-4o*'] });
  const b = await create({ name: 'b', kind: 'attribution', action: 'log', require: 'department',
    scope: { type: 'project', value: 'apollo' } });
  const c = await create({ name: 'c', kind: 'model', action: 'warn', allow_providers: ['openai'], enabled: false });

  let r = await s.api('GET', '/policies');
  assert.deepEqual(r.json.data.map((p) => p.id), [a.id, b.id, c.id]);
  r = await s.api('GET', '/policies?kind=model');
  assert.deepEqual(r.json.data.map((p) => p.id), [a.id, c.id]);
  r = await s.api('GET', '/policies?scope_type=project');
  assert.deepEqual(r.json.data.map((p) => p.id), [b.id]);
  r = await s.api('GET', '/policies?enabled=false');
  assert.deepEqual(r.json.data.map((p) => p.id), [c.id]);
  r = await s.api('GET', '/policies?kind=model&enabled=true');
  assert.deepEqual(r.json.data.map((p) => p.id), [a.id]);

  fieldError(await s.api('GET', '/policies?kind=budget'), 400, 'kind', 'unknown kind filter');
  fieldError(await s.api('GET', '/policies?scope_type=team'), 400, 'scope_type', 'unknown scope filter');
  fieldError(await s.api('GET', '/policies?enabled=yes'), 400, 'enabled', 'enabled not a boolean');
});

test('PATCH /policies/{id} merges the members given and validates the merged policy', async () => {
  await deleteAllPolicies();
  const made = await create({ name: 'secrets', kind: 'pattern', action: 'block', patterns: ['secret-\\d+'],
    case_insensitive: true });

  let r = await s.api('PATCH', `/policies/${made.id}`, { body: { action: 'warn', code: 'secret_word' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.action, 'warn');
  assert.equal(r.json.code, 'secret_word');
  assert.deepEqual(r.json.patterns, made.patterns, 'patterns kept');
  assert.equal(r.json.name, 'secrets', 'name kept');
  assert.equal(r.json.created_at, made.created_at);

  r = await s.api('PATCH', `/policies/${made.id}`, { body: { case_insensitive: null } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.case_insensitive, undefined, 'null removes an optional member');

  // a merged policy that is not valid is refused, and nothing changes
  r = await s.api('PATCH', `/policies/${made.id}`, { body: { patterns: ['ok', '(unclosed'] } });
  const e = fieldError(r, 422, 'patterns[1]', 'bad regex by PATCH');
  assert.equal(e.code, 'invalid_pattern');
  r = await s.api('PATCH', `/policies/${made.id}`, { body: { kind: 'model' } });
  fieldError(r, 422, /^patterns$|^kind$|^allow_models$/, 'members of another kind');
  r = await s.api('GET', `/policies/${made.id}`);
  assert.deepEqual(r.json.patterns, ['secret-\\d+']);
  assert.equal(r.json.kind, 'pattern');
});

test('unknown, malformed and deleted policy ids are 404', async () => {
  const made = await create({ name: 'doomed', kind: 'attribution', action: 'log', require: 'project' });
  let r = await s.api('DELETE', `/policies/${made.id}`);
  assert.equal(r.status, 204, r.text);
  for (const [method, body] of [['GET'], ['PATCH', { action: 'warn' }], ['DELETE']]) {
    r = await s.api(method, `/policies/${made.id}`, { body });
    fieldError(r, 404, 'id', `${method} deleted`);
    r = await s.api(method, '/policies/pol_nothex', { body });
    fieldError(r, 404, 'id', `${method} malformed`);
  }
});

test('bad policies get 422 naming the field, a bad regex with PCRE2\'s message and offset', async () => {
  await deleteAllPolicies();
  let r = await s.api('POST', '/policies', { body: { name: 'bad', kind: 'pattern', action: 'block',
    patterns: ['fine', 'a(b'] } });
  let e = fieldError(r, 422, 'patterns[1]', 'unclosed group');
  assert.equal(e.code, 'invalid_pattern');
  assert.match(e.message, /missing closing parenthesis/i, e.message);
  assert.match(e.message, /offset \d+/, e.message);

  const cases = [
    [{ kind: 'pii', action: 'block' }, 'name'],
    [{ name: 'x', kind: 'budget', action: 'block' }, 'kind'],
    [{ name: 'x', kind: 'model', action: 'redact', deny_models: ['gpt-4o'] }, 'action'],
    [{ name: 'x', kind: 'model', action: 'block' }, /allow_models|deny_models/],
    [{ name: 'x', kind: 'model', action: 'block', deny_models: ['gpt-[4o'] }, /^deny_models/],
    [{ name: 'x', kind: 'limits', action: 'block', max_tokens: 0 }, 'max_tokens'],
    [{ name: 'x', kind: 'limits', action: 'block', max_cost_usd: 'lots' }, 'max_cost_usd'],
    [{ name: 'x', kind: 'pii', action: 'block', threshold: 2 }, 'threshold'],
    [{ name: 'x', kind: 'pii', action: 'block', entities: { card: 'shred' } }, /^entities/],
    [{ name: 'x', kind: 'pii', action: 'block', patterns: ['a'] }, 'patterns'],
    [{ name: 'x', kind: 'time_window', action: 'block', timezone: 'Mars/Olympus', days: ['mon'],
      start: '09:00', end: '17:00' }, 'timezone'],
    [{ name: 'x', kind: 'attribution', action: 'log', require: 'department', code: 'Bad Code' }, 'code'],
    [{ name: 'x', kind: 'attribution', action: 'log', require: 'department', colour: 'red' }, 'colour'],
    // scopes as budgets take them
    [{ name: 'x', kind: 'attribution', action: 'log', require: 'project', scope: { type: 'team', value: 'a' } },
      /^scope/],
    [{ name: 'x', kind: 'attribution', action: 'log', require: 'project', scope: { type: 'department' } },
      /^scope/],
  ];
  for (const [body, field] of cases) {
    r = await s.api('POST', '/policies', { body });
    e = fieldError(r, 422, field, JSON.stringify(body));
    assert.ok(e.message.length > 0);
  }

  // a key or agent scope names one of the organisation's
  r = await s.api('POST', '/policies', { body: { name: 'x', kind: 'attribution', action: 'log',
    require: 'project', scope: { type: 'api_key', value: `key_${'0'.repeat(24)}` } } });
  e = fieldError(r, 422, 'scope.value', 'unknown key');
  assert.equal(e.code, 'unknown_api_key');
  assert.equal((await s.api('GET', '/policies')).json.data.length, 0, 'nothing stored');

  const key = await s.createKey({ name: 'scoped' }, { wait: false });
  const made = await create({ name: 'key scoped', kind: 'attribution', action: 'log', require: 'project',
    scope: { type: 'api_key', value: key.id } });
  assert.deepEqual(made.scope, { type: 'api_key', value: key.id });
});

// ---- the snapshot -------------------------------------------------------

test('the snapshot carries the enabled policies, oldest first, with id and name', async () => {
  await deleteAllPolicies();
  await waitFor(() => snapshotPolicies(ORG) === null, { message: 'no policies: no record' });
  const first = await create(piiCards('block'));
  const off = await create({ name: 'off', kind: 'model', action: 'block', deny_models: ['*'], enabled: false });
  const second = await create({ name: 'deny 4o', kind: 'model', action: 'block', deny_models: ['gpt-4o*'] });

  await waitFor(() => snapshotPolicies(ORG)?.length === 2, { message: 'two enabled policies published' });
  const published = snapshotPolicies(ORG);
  assert.deepEqual(published.map((p) => [p.id, p.name]), [[first.id, 'no cards'], [second.id, 'deny 4o']]);
  assert.deepEqual(published[1].deny_models, ['gpt-4o*']);

  await s.api('PATCH', `/policies/${off.id}`, { body: { enabled: true } });
  await waitFor(() => snapshotPolicies(ORG)?.length === 3, { message: 'enabled policy published' });
  await deleteAllPolicies();
  await waitFor(() => snapshotPolicies(ORG) === null, { message: 'deleted: no record' });
});

// ---- POST /policies/evaluate -------------------------------------------

test('evaluate: a model policy blocks, with the policy named and a 403', async () => {
  await deleteAllPolicies();
  const p = await create({ name: 'no 4o', kind: 'model', action: 'block', deny_models: ['gpt-4o*'] });
  let r = await evaluate({ body: chat('Hello there') });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.decision, 'block');
  assert.equal(r.json.status, 403);
  assert.deepEqual(r.json.blocked_by, { id: p.id, name: 'no 4o' });
  assert.equal(r.json.matches.length, 1);
  assert.deepEqual(Object.keys(r.json.matches[0]).sort(), ['action', 'code', 'kind', 'name', 'policy_id', 'reason']);
  assert.equal(r.json.matches[0].kind, 'model');
  assert.equal(r.json.matches[0].code, 'model_not_allowed');
  assert.match(r.json.message, /no 4o/);
  assert.equal(r.json.guard_score, 0);
  assert.deepEqual(r.json.pii_types, []);

  r = await evaluate({ body: chat('Hello there', { model: 'gpt-4.1-mini' }) });
  assert.equal(r.json.decision, 'pass');
  assert.equal(r.json.status, 200);
  assert.equal(r.json.blocked_by, null);
  assert.deepEqual(r.json.matches, []);
  assert.equal(r.json.redacted_body, undefined);
  await deleteAllPolicies();
});

test('evaluate: a limits policy warns with its code; a max cost priced as /pricing prices it', async () => {
  const policies = [{ name: 'short answers', kind: 'limits', action: 'warn', code: 'long_answer', max_tokens: 100 }];
  let r = await evaluate({ body: chat('Hi', { max_tokens: 500 }), policies });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.decision, 'warn');
  assert.equal(r.json.status, 200);
  assert.deepEqual(r.json.warnings, ['long_answer']);
  assert.equal(r.json.matches[0].action, 'warn');
  r = await evaluate({ body: chat('Hi', { max_tokens: 50 }), policies });
  assert.equal(r.json.decision, 'pass');

  // gpt-4o's list price: 50 output tokens cost far more than a nano-dollar
  const costly = [{ name: 'tiny', kind: 'limits', action: 'block', max_cost_usd: '0.000001' }];
  r = await evaluate({ body: chat('Hi', { max_tokens: 50 }), policies: costly });
  assert.equal(r.json.decision, 'block', r.text);
  assert.equal(r.json.matches[0].code, 'limit_exceeded');
  const roomy = [{ name: 'roomy', kind: 'limits', action: 'block', max_cost_usd: '100' }];
  r = await evaluate({ body: chat('Hi', { max_tokens: 50 }), policies: roomy });
  assert.equal(r.json.decision, 'pass', r.text);
  // the prompt counted as the module counts it: gpt-4o's "Hi" is 8 tokens
  // (3 per message, the role, the content, 3 for the reply), so 8 x $2.50
  // + 50 x $10 per 1M tokens is $0.00052 exactly: at the limit passes,
  // a nano-dollar below blocks (the bytes bound would block both)
  const at = (usd) => [{ name: 'edge', kind: 'limits', action: 'block', max_cost_usd: usd }];
  r = await evaluate({ body: chat('Hi', { max_tokens: 50 }), policies: at('0.00052') });
  assert.equal(r.json.decision, 'pass', r.text);
  r = await evaluate({ body: chat('Hi', { max_tokens: 50 }), policies: at('0.000519999') });
  assert.equal(r.json.decision, 'block', r.text);

  // an unpriced model's worst case is unknown: no violation
  r = await evaluate({ body: chat('Hi', { model: 'no-such-model-xyz', max_tokens: 50 }), policies: costly });
  assert.equal(r.json.decision, 'pass', r.text);
});

test('evaluate: an attribution policy logs; headers and a key attribute as the module does', async () => {
  const policies = [{ name: 'need a department', kind: 'attribution', action: 'log', require: 'department' }];
  let r = await evaluate({ body: chat('Hi'), policies });
  assert.equal(r.json.decision, 'log', r.text);
  assert.equal(r.json.matches[0].code, 'attribution_missing');
  r = await evaluate({ body: chat('Hi'), headers: { 'x-spendpol-department': 'eng' }, policies });
  assert.equal(r.json.decision, 'pass', r.text);
  r = await evaluate({ body: chat('Hi'), department: 'eng', policies });
  assert.equal(r.json.decision, 'pass', r.text);

  // a key's own department binds: a policy on it applies, another is refused
  const key = await s.createKey({ name: 'eng key', department: 'eng' }, { wait: false });
  const scoped = [{ name: 'eng only', kind: 'model', action: 'block', deny_models: ['*'],
    scope: { type: 'department', value: 'eng' } }];
  r = await evaluate({ api_key_id: key.id, body: chat('Hi'), policies: scoped });
  assert.equal(r.json.decision, 'block', r.text);
  r = await evaluate({ body: chat('Hi'), policies: scoped });
  assert.equal(r.json.decision, 'pass', 'no key, no department');
  r = await evaluate({ api_key_id: key.id, body: chat('Hi'), headers: { 'X-Spendpol-Department': 'sales' },
    policies: scoped });
  const e = fieldError(r, 422, 'headers.X-Spendpol-Department', 'a bound key names another department');
  assert.equal(e.code, 'attribution_not_allowed');

  // a key allowed to override takes the header's
  const shared = await s.createKey({ name: 'shared', department: 'eng', attribution_override: true }, { wait: false });
  r = await evaluate({ api_key_id: shared.id, body: chat('Hi'), headers: { 'X-Spendpol-Department': 'sales' },
    policies: scoped });
  assert.equal(r.json.decision, 'pass', r.text);
  r = await evaluate({ api_key_id: `key_${'0'.repeat(24)}`, body: chat('Hi'), policies: scoped });
  fieldError(r, 422, 'api_key_id', 'unknown key');
});

test('evaluate: a pii policy redacts cards, with offsets and never the values', async () => {
  await deleteAllPolicies();
  await create(piiCards('redact'));
  const text = JSON.stringify(chat(`Charge my card ${CARD} today, mail me at jo@example.com`));
  const r = await evaluate({ body_text: text });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.decision, 'redact', r.text);
  assert.equal(r.json.status, 200);
  assert.deepEqual(r.json.pii_types.sort(), ['card', 'email']);
  assert.ok(r.json.guard_score > 0 && r.json.guard_score <= 1, `guard score ${r.json.guard_score}`);
  assert.equal(Math.round(r.json.guard_score * 1000) / 1000, r.json.guard_score, '3 decimals');
  const card = r.json.entities.find((x) => x.type === 'card');
  assert.ok(card, r.text);
  assert.equal(text.slice(card.start, card.end), CARD, 'offsets in body_text');
  const email = r.json.entities.find((x) => x.type === 'email');
  assert.equal(text.slice(email.start, email.end), 'jo@example.com');
  assert.match(r.json.redacted_body.messages[0].content, /\[REDACTED:CARD\]/);
  assert.match(r.json.redacted_body.messages[0].content, /jo@example\.com/, 'only the policy\'s types');
  // the card never comes back outside of what the provider would receive
  const { redacted_body: _, ...rest } = r.json;
  assert.ok(!JSON.stringify(rest).includes('4111'), JSON.stringify(rest));
  assert.ok(!JSON.stringify(r.json.redacted_body).includes('4111'));

  // a body object: offsets in its compact serialisation
  const body = chat(`card ${CARD}`);
  const r2 = await evaluate({ body });
  const e2 = r2.json.entities.find((x) => x.type === 'card');
  assert.equal(JSON.stringify(body).slice(e2.start, e2.end), CARD);
  await deleteAllPolicies();
});

test('evaluate: pattern policies block, and a catastrophic regex answers quickly (fail closed)', async () => {
  const policies = [{ name: 'project names', kind: 'pattern', action: 'block', patterns: ['\\bproject\\s+falcon\\b'],
    case_insensitive: true }];
  let r = await evaluate({ body: chat('Tell me about Project Falcon'), policies });
  assert.equal(r.json.decision, 'block', r.text);
  assert.equal(r.json.matches[0].code, 'pattern_matched');
  assert.ok(!r.json.matches[0].reason.includes('Falcon'), 'the reason never quotes the text');
  r = await evaluate({ body: chat('Tell me about eagles'), policies });
  assert.equal(r.json.decision, 'pass');

  const evil = [{ name: 'evil', kind: 'pattern', action: 'warn', patterns: ['(a+)+$'] }];
  const started = Date.now();
  r = await evaluate({ body: chat(`${'a'.repeat(30000)}!`), policies: evil });
  const took = Date.now() - started;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.decision, 'warn', 'a pattern that hits a limit counts as matched');
  assert.ok(took < 2000, `answered in ${took} ms`);

  // redact a pattern's spans
  const redact = [{ name: 'codes', kind: 'pattern', action: 'redact', patterns: ['ZX-\\d{4}'] }];
  r = await evaluate({ body: chat('ship ZX-1234 now'), policies: redact });
  assert.equal(r.json.decision, 'redact', r.text);
  assert.equal(r.json.redacted_body.messages[0].content, 'ship [REDACTED:PATTERN] now');
});

test('evaluate: a time window blocks outside its hours, at the time given', async () => {
  const policies = [{ name: 'office hours', kind: 'time_window', action: 'block', timezone: 'Europe/Paris',
    days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '09:00', end: '18:00' }];
  let r = await evaluate({ body: chat('Hi'), policies, at: '2026-12-02T10:00:00Z' });   // a Wednesday, 11:00 in Paris
  assert.equal(r.json.decision, 'pass', r.text);
  r = await evaluate({ body: chat('Hi'), policies, at: '2026-12-05T10:00:00Z' });       // a Saturday
  assert.equal(r.json.decision, 'block', r.text);
  assert.equal(r.json.matches[0].code, 'outside_time_window');
});

test('evaluate refuses bad input naming the field', async () => {
  const cases = [
    [{}, 422, 'body'],
    [{ body: chat('x'), body_text: '{}' }, 422, 'body'],
    [{ body: 'text' }, 400, 'body'],
    [{ body_text: 42 }, 400, 'body_text'],
    [{ body_text: '{"model": "gpt-4o", "max_tokens": "many"}' }, 422, 'body_text'],
    [{ body: chat('x'), provider: 'acme' }, 422, 'provider'],
    [{ body: chat('x'), at: 'yesterday' }, 422, 'at'],
    [{ body: chat('x'), headers: { 'X-Spendpol-Project': 7 } }, 400, 'headers.X-Spendpol-Project'],
    [{ body: chat('x'), policies: {} }, 400, 'policies'],
    [{ body: chat('x'), policies: [{ name: 'p', kind: 'pattern', action: 'block', patterns: ['(x'] }] }, 422,
      'policies[0].patterns[0]'],
    [{ body: chat('x'), colour: 'red' }, 400, 'colour'],
  ];
  for (const [body, status, field] of cases) {
    fieldError(await evaluate(body), status, field, JSON.stringify(body));
  }
});

// ---- tenants ------------------------------------------------------------

/** a second organisation with its own admin key (the API makes none) */
function otherOrganisation() {
  const org = `org_pol_${crypto.randomBytes(4).toString('hex')}`;
  const key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'policies B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'policies B admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);
  return { org, key };
}

test('row-level security: an organisation sees and evaluates only its own policies', async () => {
  await deleteAllPolicies();
  const mine = await create({ name: 'mine', kind: 'model', action: 'block', deny_models: ['*'] });
  const other = otherOrganisation();
  const theirs = await create({ name: 'theirs', kind: 'attribution', action: 'warn', require: 'project' }, other.key);

  let r = await s.api('GET', '/policies', { key: other.key });
  assert.deepEqual(r.json.data.map((p) => p.id), [theirs.id]);
  r = await s.api('GET', '/policies');
  assert.deepEqual(r.json.data.map((p) => p.id), [mine.id]);
  for (const [method, body] of [['GET'], ['PATCH', { enabled: false }], ['DELETE']]) {
    fieldError(await s.api(method, `/policies/${mine.id}`, { key: other.key, body }), 404, 'id', `${method} across`);
  }
  r = await evaluate({ body: chat('Hi') }, other.key);
  assert.equal(r.json.decision, 'warn', 'their policy, not mine');
  assert.deepEqual(r.json.matches.map((m) => m.policy_id), [theirs.id]);

  await waitFor(() => snapshotPolicies(other.org)?.[0]?.id === theirs.id, { message: 'their policies published' });
  assert.deepEqual(snapshotPolicies(ORG).map((p) => p.id), [mine.id]);
  await deleteAllPolicies(other.key);
  await deleteAllPolicies();
});

// ---- audit columns -------------------------------------------------------

test('a journal line\'s policy, score and shadow members reach /audit-logs and its filters', async () => {
  const base = { v: 1, ts_ms: Date.now(), org_id: ORG, provider: 'openai', model: 'gpt-4o', status: 200 };
  const ids = [1, 2, 3].map(() => `evt_${crypto.randomBytes(8).toString('hex')}`);
  const lines = [
    { ...base, id: ids[0], guard_score_milli: 850, pii_types: 'card,email', policy_action: 'redact',
      policy_ids: 'pol_a,pol_b', policy_warnings: 'pii_detected', hallucination_pct: 12 },
    { ...base, id: ids[1], status: 401, shadow_key_type: 'openai', shadow_key_fp: 'fp_0123456789abcdef',
      client_addr: '10.0.0.7' },
    { ...base, id: ids[2], guard_score_milli: 300, pii_types: 'email', policy_action: 'warn',
      policy_warnings: 'pii_detected', hallucination_pct: 0 },
  ];
  fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  const rows = Object.fromEntries((await s.waitAuditRows(ids)).map((x) => [x.id, x]));

  assert.equal(rows[ids[0]].guard_score, 0.85);
  assert.deepEqual(rows[ids[0]].pii_types, ['card', 'email']);
  assert.equal(rows[ids[0]].policy_action, 'redact');
  assert.deepEqual(rows[ids[0]].policy_ids, ['pol_a', 'pol_b']);
  assert.deepEqual(rows[ids[0]].policy_warnings, ['pii_detected']);
  assert.equal(rows[ids[0]].hallucination_score, 12);
  assert.equal(rows[ids[0]].shadow_key_type, null);

  assert.equal(rows[ids[1]].guard_score, 0, 'nothing found: 0, never null');
  assert.deepEqual(rows[ids[1]].pii_types, []);
  assert.equal(rows[ids[1]].policy_action, null);
  assert.equal(rows[ids[1]].hallucination_score, null, 'not scored');
  assert.equal(rows[ids[1]].shadow_key_type, 'openai');
  assert.equal(rows[ids[1]].shadow_key_fp, 'fp_0123456789abcdef');
  assert.equal(rows[ids[1]].client_addr, '10.0.0.7');
  assert.equal(rows[ids[2]].hallucination_score, 0, 'scored 0 is a score');

  const only = async (query) => (await s.auditLogs(query)).data.map((x) => x.id).filter((id) => ids.includes(id));
  assert.deepEqual(await only({ policy_action: 'redact' }), [ids[0]]);
  assert.deepEqual((await only({ pii_type: 'email' })).sort(), [ids[0], ids[2]].sort());
  assert.deepEqual(await only({ pii_type: 'card' }), [ids[0]]);
  assert.deepEqual(await only({ min_guard_score: '0.85' }), [ids[0]]);
  assert.deepEqual((await only({ min_guard_score: '0.3' })).sort(), [ids[0], ids[2]].sort());

  for (const [name, value] of [['policy_action', 'pass'], ['pii_type', 'name'], ['min_guard_score', '1.5'],
    ['min_guard_score', '0.1234'], ['min_guard_score', 'high']]) {
    const r = await s.api('GET', `/audit-logs?${name}=${encodeURIComponent(value)}`);
    fieldError(r, 400, name, `${name}=${value}`);
  }
});
