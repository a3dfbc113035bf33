// The routing rules' admin API (issue 13): /routing/rules (create, list
// order, PATCH merge, delete, 422s naming the field), POST
// /routing/evaluate (the module's answer as a dry run, a budget share
// condition included), the organisation's route_skip_forbidden and the
// snapshot that carries the enabled rules. Admin API only: no proxy call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, assertJsonError } from './lib/stack.mjs';
import { readSnapshot as readSnapshotFile, TABLE } from './lib/snapshot.mjs';

const s = useStack();
const ORG = 'org_default';
const RULE_ID = /^rr_[0-9a-f]{24}$/;

// ---- the snapshot file (libspendpol/sp_snapshot.h, v10) ----------------

const ORG_ROUTE_SKIP_FORBIDDEN = 0x02;

const readSnapshot = () => readSnapshotFile(s.snapshotDir);

/** the organisation's rules as the snapshot carries them, or null */
function snapshotRules(org) {
  const { str, records } = readSnapshot();
  const rec = records(TABLE.ROUTES).find((r) => str(r) === org);
  return rec ? JSON.parse(str(rec + 8)) : null;
}

function snapshotOrgFlags(org) {
  const { buf, str, records } = readSnapshot();
  const rec = records(TABLE.ORGS).find((r) => str(r) === org);
  return rec ? buf.readUInt32LE(rec + 8) : null;
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

async function deleteAllRules() {
  const list = await s.api('GET', '/routing/rules');
  for (const rule of list.json.data) await s.api('DELETE', `/routing/rules/${rule.id}`);
}

const rewrite = (name, extra = {}) => ({
  name,
  conditions: { model: 'gpt-4o' },
  action: { type: 'rewrite', model: 'gpt-4o-mini' },
  ...extra,
});

const chat = { model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello there' }] };

// ---- /routing/rules ----------------------------------------------------

test('POST /routing/rules stores a rule with its defaults and answers it', async () => {
  await deleteAllRules();
  const r = await s.api('POST', '/routing/rules', { body: rewrite('mini for 4o') });
  assert.equal(r.status, 201, r.text);
  assert.match(r.json.id, RULE_ID);
  assert.equal(r.json.name, 'mini for 4o');
  assert.equal(r.json.priority, 100, 'default priority');
  assert.equal(r.json.enabled, true, 'enabled by default');
  assert.deepEqual(r.json.conditions, { model: 'gpt-4o' });
  assert.deepEqual(r.json.action, { type: 'rewrite', model: 'gpt-4o-mini' });
  assert.ok(r.json.created_at && r.json.updated_at);

  const got = await s.api('GET', `/routing/rules/${r.json.id}`);
  assert.equal(got.status, 200, got.text);
  assert.deepEqual(got.json, r.json);
});

test('GET /routing/rules lists by priority, then creation', async () => {
  await deleteAllRules();
  const ids = {};
  for (const [name, priority] of [['c', 50], ['a', 10], ['b', 50], ['d', 200]]) {
    const r = await s.api('POST', '/routing/rules', { body: rewrite(name, { priority }) });
    assert.equal(r.status, 201, r.text);
    ids[name] = r.json.id;
  }
  const list = await s.api('GET', '/routing/rules');
  assert.equal(list.status, 200, list.text);
  assert.deepEqual(list.json.data.map((x) => x.name), ['a', 'c', 'b', 'd']);
  assert.deepEqual(list.json.data.map((x) => x.priority), [10, 50, 50, 200]);
});

test('PATCH /routing/rules/{id} merges the members given and validates the merged rule', async () => {
  await deleteAllRules();
  const made = (await s.api('POST', '/routing/rules', {
    body: rewrite('patched', { priority: 5, fallback: [{ provider: 'openai', model: 'gpt-4o' }] }),
  })).json;

  let r = await s.api('PATCH', `/routing/rules/${made.id}`, { body: { enabled: false, priority: 7 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.enabled, false);
  assert.equal(r.json.priority, 7);
  assert.equal(r.json.name, 'patched', 'name kept');
  assert.deepEqual(r.json.action, made.action, 'action kept');
  assert.deepEqual(r.json.fallback, made.fallback, 'fallback kept');
  assert.equal(r.json.created_at, made.created_at);

  r = await s.api('PATCH', `/routing/rules/${made.id}`, { body: { action: { type: 'rewrite', model: 'gpt-4.1-mini' }, fallback: null } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.action.model, 'gpt-4.1-mini');
  assert.equal(r.json.fallback, undefined, 'null removes an optional member');

  // a merged rule that is not valid is refused, and nothing changes
  r = await s.api('PATCH', `/routing/rules/${made.id}`, { body: { conditions: { model: 'gpt-[4o' } } });
  fieldError(r, 422, 'conditions.model', 'malformed glob by PATCH');
  r = await s.api('GET', `/routing/rules/${made.id}`);
  assert.deepEqual(r.json.conditions, { model: 'gpt-4o' });

  r = await s.api('PATCH', `/routing/rules/${made.id}`, { body: { name: null } });
  fieldError(r, 422, 'name', 'name cannot be removed');
});

test('unknown, malformed and deleted rule ids are 404', async () => {
  const made = (await s.api('POST', '/routing/rules', { body: rewrite('doomed') })).json;
  let r = await s.api('DELETE', `/routing/rules/${made.id}`);
  assert.equal(r.status, 204, r.text);
  for (const [method, body] of [['GET'], ['PATCH', { priority: 1 }], ['DELETE']]) {
    r = await s.api(method, `/routing/rules/${made.id}`, { body });
    fieldError(r, 404, 'id', `${method} a deleted rule`);
    r = await s.api(method, '/routing/rules/rr_nothex', { body });
    fieldError(r, 404, 'id', `${method} a malformed id`);
  }
});

test('bad rules get 422 naming the field, and nothing is stored', async () => {
  await deleteAllRules();
  const cases = [
    [{ ...rewrite('x'), action: { type: 'provider', provider: 'openia', model: 'm' } }, /^action\.provider/, 'unknown provider'],
    [{ ...rewrite('x'), conditions: { model: 'gpt-[4o' } }, 'conditions.model', 'malformed glob'],
    [{
      ...rewrite('x'),
      action: { type: 'split', targets: [{ provider: 'openai', model: 'a', weight: 0 }, { provider: 'openai', model: 'b', weight: 0 }] },
    }, /^action\.targets/, 'weights summing to zero'],
    [{ ...rewrite('x'), colour: 'blue' }, 'colour', 'unknown member'],
  ];
  for (const [body, field, what] of cases) {
    const r = await s.api('POST', '/routing/rules', { body });
    const e = fieldError(r, 422, field, what);
    assert.ok(e.message.length > 10, `${what}: a message says what is expected: ${e.message}`);
  }
  fieldError(await s.api('POST', '/routing/rules', { body: { action: { type: 'rewrite', model: 'm' } } }), 422, 'name', 'name missing');
  fieldError(await s.api('POST', '/routing/rules', { body: rewrite('x', { priority: 'high' }) }), 400, 'priority', 'priority a string');
  fieldError(await s.api('POST', '/routing/rules', { body: rewrite('x', { enabled: 1 }) }), 400, 'enabled', 'enabled a number');
  assert.equal((await s.api('GET', '/routing/rules')).json.data.length, 0, 'nothing stored');
});

// ---- the snapshot ------------------------------------------------------

test('the snapshot carries the enabled rules in evaluation order, with id and name', async () => {
  await deleteAllRules();
  const late = (await s.api('POST', '/routing/rules', { body: rewrite('late', { priority: 20 }) })).json;
  const early = (await s.api('POST', '/routing/rules', { body: rewrite('early', { priority: 10 }) })).json;
  const off = (await s.api('POST', '/routing/rules', { body: rewrite('off', { priority: 1, enabled: false }) })).json;

  await waitFor(() => snapshotRules(ORG)?.length === 2, { message: 'two enabled rules published' });
  const rules = snapshotRules(ORG);
  assert.deepEqual(rules.map((x) => [x.id, x.name]), [[early.id, 'early'], [late.id, 'late']]);
  assert.deepEqual(rules[0].action, early.action);
  assert.deepEqual(rules[0].conditions, early.conditions);

  await s.api('PATCH', `/routing/rules/${off.id}`, { body: { enabled: true } });
  await waitFor(() => snapshotRules(ORG)?.[0]?.id === off.id, { message: 'enabled rule published first' });

  await deleteAllRules();
  await waitFor(() => snapshotRules(ORG) === null, { message: 'no rules: no record' });
});

test('PUT /org route_skip_forbidden is shown by GET /org and published as an org flag', async () => {
  let r = await s.api('GET', '/org');
  assert.equal(r.json.route_skip_forbidden, false, 'default false');
  r = await s.api('PUT', '/org', { body: { route_skip_forbidden: true } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.route_skip_forbidden, true);
  assert.equal((await s.api('GET', '/org')).json.route_skip_forbidden, true);
  await waitFor(() => (snapshotOrgFlags(ORG) & ORG_ROUTE_SKIP_FORBIDDEN) !== 0, { message: 'flag published' });

  fieldError(await s.api('PUT', '/org', { body: { route_skip_forbidden: 'yes' } }), 400, 'route_skip_forbidden', 'not a boolean');

  r = await s.api('PUT', '/org', { body: { route_skip_forbidden: false } });
  assert.equal(r.json.route_skip_forbidden, false);
  await waitFor(() => (snapshotOrgFlags(ORG) & ORG_ROUTE_SKIP_FORBIDDEN) === 0, { message: 'flag cleared' });
});

// ---- POST /routing/evaluate --------------------------------------------

test('POST /routing/evaluate: a matching rule, a request no rule matches, and why', async () => {
  await deleteAllRules();
  const rule = (await s.api('POST', '/routing/rules', { body: rewrite('mini') })).json;

  let r = await s.api('POST', '/routing/evaluate', { body: { provider: 'openai', body: chat } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.matched, true);
  assert.equal(r.json.skipped_by_header, false);
  assert.deepEqual(r.json.rule, { id: rule.id, name: 'mini' });
  assert.deepEqual(r.json.targets[0], { provider: 'openai', model: 'gpt-4o-mini' });
  assert.ok(r.json.max_attempts >= 1);
  assert.equal(typeof r.json.attempt_timeout_ms, 'number');
  assert.equal(typeof r.json.explain, 'string');
  assert.ok(r.json.explain.length > 0);

  r = await s.api('POST', '/routing/evaluate', { body: { provider: 'openai', body: { ...chat, model: 'gpt-4.1' } } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.matched, false);
  assert.equal(r.json.rule, null);
  assert.deepEqual(r.json.targets, [{ provider: 'openai', model: 'gpt-4.1' }], 'the request as sent');
});

test('POST /routing/evaluate: X-Spendpol-Route: skip sends the request first as sent, the fallbacks behind it, unless forbidden', async () => {
  await deleteAllRules();
  const rule = (await s.api('POST', '/routing/rules', {
    body: rewrite('mini', { fallback: [{ provider: 'openai', model: 'gpt-4.1' }] }),
  })).json;
  const body = { provider: 'openai', body: chat, headers: { 'x-spendpol-route': 'skip' } };

  let r = await s.api('POST', '/routing/evaluate', { body });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.skipped_by_header, true);
  assert.equal(r.json.rule.id, rule.id, 'the rule still applies for its fallbacks');
  assert.deepEqual(r.json.targets, [{ provider: 'openai', model: 'gpt-4o' }, { provider: 'openai', model: 'gpt-4.1' }]);
  assert.match(r.json.explain, /skip/);

  await s.api('PUT', '/org', { body: { route_skip_forbidden: true } });
  try {
    r = await s.api('POST', '/routing/evaluate', { body });
    assert.equal(r.json.skipped_by_header, false);
    assert.equal(r.json.matched, true);
    assert.deepEqual(r.json.targets, [{ provider: 'openai', model: 'gpt-4o-mini' }, { provider: 'openai', model: 'gpt-4.1' }]);
    assert.match(r.json.explain, /skip ignored/);
  } finally {
    await s.api('PUT', '/org', { body: { route_skip_forbidden: false } });
  }
});

test('POST /routing/evaluate: a budget at 85 % matches a budget_used_pct gte 80 rule, one at 70 % does not', async () => {
  await deleteAllRules();
  const rule = (await s.api('POST', '/routing/rules', {
    body: rewrite('save when 80 % spent', { conditions: { model: 'gpt-4o', budget_used_pct: { gte: 80 } } }),
  })).json;
  const key = await s.createKey({ name: 'marketing', department: 'marketing' });
  const budget = await s.api('POST', '/budgets', {
    body: { name: 'marketing monthly', scope: { type: 'department', value: 'marketing' }, limit_usd: '10.00', period: 'monthly' },
  });
  assert.equal(budget.status, 201, budget.text);

  // spend as ingest counts it (budget_spend of the current period): no
  // proxy call is made by this file, and $8.50 of fixture traffic would
  // take thousands of requests
  const spend = (nano) => sql(`INSERT INTO budget_spend (budget_id, org_id, period_start, spent_nano, requests)
      SELECT id, org_id, spendpol_period_start(period, timezone, created_at, now()), ${nano}, 1
        FROM budgets WHERE id = '${budget.json.id}'
      ON CONFLICT (budget_id, period_start) DO UPDATE SET spent_nano = EXCLUDED.spent_nano`);
  const evaluate = (extra = {}) => s.api('POST', '/routing/evaluate', { body: { api_key_id: key.id, provider: 'openai', body: chat, ...extra } });

  try {
    spend(8_500_000_000);
    const shown = await s.api('GET', `/budgets/${budget.json.id}/spend`);
    assert.equal(shown.json.spent_usd.replace(/0+$/, ''), '8.5', 'the figure GET /budgets/{id}/spend shows');

    let r = await evaluate();
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.matched, true, r.text);
    assert.equal(r.json.rule.id, rule.id);
    assert.deepEqual(r.json.targets[0], { provider: 'openai', model: 'gpt-4o-mini' });

    // a department given directly instead of a key
    r = await s.api('POST', '/routing/evaluate', { body: { department: 'marketing', provider: 'openai', body: chat } });
    assert.equal(r.json.matched, true, r.text);
    // another department's request is not covered by the budget
    r = await s.api('POST', '/routing/evaluate', { body: { department: 'sales', provider: 'openai', body: chat } });
    assert.equal(r.json.matched, false, r.text);

    spend(7_000_000_000);
    r = await evaluate();
    assert.equal(r.json.matched, false, r.text);

    spend(8_000_000_000);
    r = await evaluate();
    assert.equal(r.json.matched, true, `exactly 80 %: ${r.text}`);
  } finally {
    await s.api('DELETE', `/budgets/${budget.json.id}`);
  }
});

test('POST /routing/evaluate refuses bad input naming the field', async () => {
  const cases = [
    [{ body: chat }, 422, 'provider'],
    [{ provider: 'openia', body: chat }, 422, 'provider'],
    [{ provider: 'openai' }, 422, 'body'],
    [{ provider: 'openai', body: 'hello' }, 400, 'body'],
    [{ provider: 'openai', body: { model: 7 } }, 422, 'body'],
    [{ provider: 'openai', body: chat, now: 'yesterday' }, 422, 'now'],
    [{ provider: 'openai', body: chat, headers: { 'X-Spendpol-Route': 'never' } }, 422, 'headers.X-Spendpol-Route'],
    [{ provider: 'openai', body: chat, headers: { 'X-Other': 1 } }, 400, 'headers.X-Other'],
    [{ provider: 'openai', body: chat, api_key_id: 'key_000000000000000000000000' }, 422, 'api_key_id'],
    [{ provider: 'openai', body: chat, colour: 'blue' }, 400, 'colour'],
  ];
  for (const [body, status, field] of cases) {
    fieldError(await s.api('POST', '/routing/evaluate', { body }), status, field, JSON.stringify(body));
  }
});

test('POST /routing/evaluate: a rule to another provider is skipped when translation cannot carry the request', async () => {
  await deleteAllRules();
  const rule = (await s.api('POST', '/routing/rules', {
    body: { name: 'to claude', conditions: { model: 'gpt-4o' }, action: { type: 'provider', provider: 'anthropic', model: 'claude-sonnet-4-5' } },
  })).json;

  let r = await s.api('POST', '/routing/evaluate', { body: { provider: 'openai', body: chat } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.matched, true, r.text);
  assert.equal(r.json.rule.id, rule.id);
  assert.deepEqual(r.json.targets[0], { provider: 'anthropic', model: 'claude-sonnet-4-5' });

  // several choices: Anthropic has no n, so the rule does not apply
  r = await s.api('POST', '/routing/evaluate', { body: { provider: 'openai', body: { ...chat, n: 2 } } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.matched, false, r.text);
  assert.match(r.json.explain, new RegExp(rule.id));
  assert.deepEqual(r.json.targets, [{ provider: 'openai', model: 'gpt-4o' }]);
  await deleteAllRules();
});

test('POST /routing/evaluate: a budget narrowed to a model covers its dated names, not other models', async () => {
  await deleteAllRules();
  await s.api('POST', '/routing/rules', {
    body: rewrite('4o budget', { conditions: { model: 'gpt-4o*', budget_used_pct: { gte: 80 } } }),
  });
  const budget = await s.api('POST', '/budgets', {
    body: { name: '4o only', scope: { type: 'organization' }, model: 'gpt-4o', limit_usd: '1.00', period: 'daily' },
  });
  assert.equal(budget.status, 201, budget.text);
  try {
    sql(`INSERT INTO budget_spend (budget_id, org_id, period_start, spent_nano, requests)
      SELECT id, org_id, spendpol_period_start(period, timezone, created_at, now()), 900000000, 1
        FROM budgets WHERE id = '${budget.json.id}'`);
    const evaluate = (model) => s.api('POST', '/routing/evaluate', { body: { provider: 'openai', body: { ...chat, model } } });
    assert.equal((await evaluate('gpt-4o-2024-08-06')).json.matched, true, 'a dated name is covered');
    assert.equal((await evaluate('gpt-4o-mini')).json.matched, false, 'another model is not');
  } finally {
    await s.api('DELETE', `/budgets/${budget.json.id}`);
  }
});
