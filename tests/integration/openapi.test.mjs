// GET /openapi.json (issue 15): served without a key, it is the document
// in controld/openapi.json and a valid OpenAPI 3.1 document (checked by
// @seriousme/openapi-schema-validator, strict). Then the document is held
// to what controld answers: every route of the table is called, each
// answer's status must be one the operation documents and its JSON body
// must match the documented schema (ajv, draft 2020-12, the document's
// own components). The route table itself is matched by the unit test
// test_controld_openapi.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { useStack, REPO } from './lib/stack.mjs';

const s = useStack();
const SOURCE = JSON.parse(fs.readFileSync(path.join(REPO, 'controld/openapi.json'), 'utf8'));
const METHODS = ['get', 'put', 'post', 'delete', 'patch'];

let doc;
const called = new Set();
const problems = [];     /* every difference, told at the end at once */
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: 'doc', components: { schemas: SOURCE.components.schemas } });
const compiled = new Map();

/** the operation whose path template matches path, with its key */
function operationOf(method, urlPath) {
  const segs = urlPath.split('?')[0].split('/');
  for (const [tpl, item] of Object.entries(SOURCE.paths)) {
    const t = tpl.split('/');
    if (t.length !== segs.length || !item[method]) continue;
    if (t.every((x, i) => x.startsWith('{') || x === segs[i])) {
      return { key: `${method.toUpperCase()} ${tpl}`, op: item[method] };
    }
  }
  return null;
}

/** refs to the components, made absolute for the schema ajv holds */
function absolute(schema) {
  return JSON.parse(JSON.stringify(schema).replaceAll('"$ref":"#/components/', '"$ref":"doc#/components/'));
}

function responseOf(op, status) {
  let r = op.responses[String(status)];
  if (r && r.$ref) r = SOURCE.components.responses[r.$ref.split('/').pop()];
  return r;
}

/**
 * A JSON body the document's schema takes must not be refused for its
 * shape (400 invalid_type, unknown_field, invalid_json), and one it
 * refuses must not be accepted; values it cannot express (an unknown
 * budget id, ...) may still be 404 or 422.
 */
function checkBody(found, body, r, what) {
  const schema = found.op.requestBody?.content?.['application/json']?.schema;
  if (!schema) {
    problems.push(`${what}: a body was sent, the document describes none`);
    return;
  }
  const id = `${found.key} body`;
  if (!compiled.has(id)) compiled.set(id, ajv.compile(absolute(schema)));
  const validate = compiled.get(id);
  const shape = ['invalid_type', 'unknown_field', 'invalid_json'];
  if (validate(body)) {
    if (r.status === 400 && shape.includes(r.json?.error?.code)) {
      problems.push(`${what}: the document takes this body, controld refused its shape`);
    }
  } else if (r.status < 300) {
    problems.push(`${what}: controld took a body the document refuses: ${ajv.errorsText(validate.errors)}`);
  }
}

/**
 * One call to controld, held to the document: the status must be
 * documented for the operation, a JSON answer must match its schema.
 */
async function call(method, urlPath, { body, key, text, contentType } = {}) {
  const found = operationOf(method.toLowerCase(), urlPath);
  assert.ok(found, `${method} ${urlPath} is not in the document`);
  let r;
  if (text !== undefined) {
    const res = await fetch(`${s.apiURL}${urlPath}`, {
      method, body: text,
      headers: { authorization: `Bearer ${key ?? s.adminKey}`, 'content-type': contentType || 'text/plain' },
    });
    const t = await res.text();
    r = { status: res.status, headers: res.headers, text: t, json: t ? JSON.parse(t) : null };
  } else {
    r = await s.api(method, urlPath, { body, key });
  }
  const what = `${method} ${urlPath} -> ${r.status} ${r.text.slice(0, 300)}`;
  const doc404 = r.status === 404 && r.json?.error?.code === 'unknown_route';
  if (found.op['x-spendpol-pending'] && doc404) return r;     /* not landed */
  called.add(found.key);
  if (body !== undefined) checkBody(found, body, r, what);
  const resp = responseOf(found.op, r.status);
  if (!resp) {
    problems.push(`${what}: status ${r.status} is not documented for ${found.key}`);
    return r;
  }
  const content = resp.content || {};
  if (!Object.keys(content).length) {
    if (r.text !== '') problems.push(`${what}: documented without a body`);
    return r;
  }
  const ct = (r.headers.get('content-type') || '').split(';')[0];
  if (!content[ct]) {
    problems.push(`${what}: content-type ${ct} is not documented`);
  } else if (ct === 'application/json') {
    const id = `${found.key} ${r.status}`;
    if (!compiled.has(id)) compiled.set(id, ajv.compile(absolute(content[ct].schema)));
    const validate = compiled.get(id);
    if (!validate(r.json)) {
      problems.push(`${what}: ${validate.errors.map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`).join('; ')}`);
    }
  }
  return r;
}

test('GET /openapi.json answers the document without a key', async () => {
  const r = await s.api('GET', '/openapi.json', { key: null });
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(r.json, SOURCE, 'the embedded document is controld/openapi.json');
  doc = r.json;

  /* a key changes nothing, not even a wrong one: the route asks for none */
  const k = await s.api('GET', '/openapi.json', { key: `sp_key_${'0'.repeat(48)}` });
  assert.equal(k.status, 200, k.text);
  assert.deepEqual(k.json, SOURCE);

  const bad = await s.api('POST', '/openapi.json', { key: null, body: {} });
  assert.equal(bad.status, 405, bad.text);
  assert.equal(bad.headers.get('allow'), 'GET');
});

test('the document is valid OpenAPI 3.1', async () => {
  const v = new Validator({ strict: true });
  const res = await v.validate(doc || SOURCE);
  assert.equal(v.version, '3.1');
  assert.equal(res.valid, true, JSON.stringify(res.errors, null, 1)?.slice(0, 4000));
});

test('every route answers what the document says', async () => {
  const uniq = () => crypto.randomBytes(4).toString('hex');
  const missing = 'bud_000000000000000000000000';

  // health, without and with a key; 401 for a wrong key
  await call('GET', '/healthz', { key: null });
  await call('GET', '/healthz');
  await call('GET', '/healthz', { key: `sp_key_${'1'.repeat(48)}` });
  await call('GET', '/openapi.json', { key: null });
  await call('GET', '/metrics');
  await call('GET', '/metrics', { key: null });

  // api keys
  const created = await call('POST', '/api-keys', { body: { name: `oa-${uniq()}`, department: 'docs', rate_limits: { requests_per_minute: 60 } } });
  assert.equal(created.status, 201, created.text);
  await call('POST', '/api-keys', { body: { name: 'x', colour: 'blue' } });
  await call('POST', '/api-keys', { body: { name: 'x', scopes: ['root'] } });
  await call('GET', '/api-keys?limit=2');
  await call('GET', '/api-keys?limit=0');
  await call('GET', `/api-keys/${created.json.id}`);
  await call('GET', '/api-keys/key_000000000000000000000000');
  await call('PATCH', `/api-keys/${created.json.id}`, { body: { name: 'renamed', attribution_override: true } });
  const rotated = await call('POST', `/api-keys/${created.json.id}/rotate`);
  assert.equal(rotated.status, 201, rotated.text);
  await call('DELETE', `/api-keys/${rotated.json.id}`);
  await call('POST', `/api-keys/${rotated.json.id}/rotate`);
  await call('GET', '/api-keys', { key: null });
  const proxyOnly = await call('POST', '/api-keys', { body: { name: `oa-proxy-${uniq()}`, scopes: ['proxy'] } });
  await call('GET', '/api-keys', { key: proxyOnly.json.key });

  // providers
  await call('PUT', '/providers/openai', { body: { api_key: 'sk-openapi-test', base_url: s.fixture.url } });
  await call('PUT', '/providers/azure', { body: { api_key: 'sk-openapi-test' } });
  await call('PUT', '/providers/openai', { body: { api_key: 7 } });
  await call('GET', '/providers');
  await call('GET', '/providers/openai');
  await call('GET', '/providers/nope');
  await call('PUT', '/providers/mistral', { body: { api_key: 'sk-openapi-test', model_aliases: { m: 'mistral-small-latest' } } });
  await call('DELETE', '/providers/mistral');
  await call('DELETE', '/providers/mistral');

  // audit
  await call('GET', '/audit-logs?limit=5&provider=openai');
  await call('GET', '/audit-logs?routed=maybe');
  await call('GET', '/audit-logs/summary?group_by=template');
  await call('GET', '/audit-logs/summary?group_by=colour');
  await call('GET', '/audit-logs/summary?group_by=template&from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z');
  await call('GET', '/audit-logs/export?format=jsonl');

  // org
  await call('GET', '/org');
  await call('PATCH', '/org', { body: { refuse_unpriced_models: false } });
  await call('PUT', '/org', { body: { allowed_endpoints: [{ provider: 'openai', method: 'POST', path: '/batches' }] } });
  await call('PUT', '/org', { body: { allowed_endpoints: [{ provider: 'nope', method: 'POST', path: '/x' }] } });
  await call('PATCH', '/org', { body: { allowed_endpoints: [] } });

  // pricing
  await call('GET', '/pricing?provider=openai');
  await call('GET', '/pricing/openai/gpt-4o');
  await call('GET', '/pricing/openai/no-such-model');
  await call('PUT', '/pricing/openai/oa-model', { body: { input_usd_per_mtok: '1.25', output_usd_per_mtok: 5, max_output_tokens: 1000 } });
  await call('PUT', '/pricing/openai/oa-model', { body: { input_usd_per_mtok: '-1', output_usd_per_mtok: '1' } });
  await call('PUT', '/pricing/openai/oa-model', { body: { output_usd_per_mtok: '1' } });
  await call('GET', '/pricing/openai/oa-model');
  await call('DELETE', '/pricing/openai/oa-model');
  await call('DELETE', '/pricing/openai/oa-model');

  // budgets
  const budget = await call('POST', '/budgets', { body: { name: 'oa', scope: { type: 'organization' }, limit_usd: '10', period: 'monthly', thresholds: [50, 100] } });
  assert.equal(budget.status, 201, budget.text);
  await call('POST', '/budgets', { body: { name: 'oa', scope: { type: 'organization' }, period: 'monthly' } });
  await call('POST', '/budgets', { body: { name: 'oa', scope: { type: 'organization' }, limit_usd: '10', period: 'yearly' } });
  await call('GET', '/budgets?limit=10');
  await call('GET', `/budgets/${budget.json.id}`);
  await call('GET', `/budgets/${missing}`);
  await call('PATCH', `/budgets/${budget.json.id}`, { body: { model: 'gpt-4o', timezone: 'Europe/Paris' } });
  await call('GET', `/budgets/${budget.json.id}/spend`);
  await call('GET', '/budget-leases');
  await call('DELETE', '/budget-leases/no-such-node');

  // alerts and rules
  const rule = await call('POST', '/alerts/rules', { body: { type: 'spend_spike', params: { window_minutes: 10 }, webhook: { url: 'https://example.invalid/hook', format: 'slack' } } });
  assert.equal(rule.status, 201, rule.text);
  await call('POST', '/alerts', { body: { type: 'budget_threshold', params: { budget_id: budget.json.id } } });
  await call('POST', '/alerts/rules', { body: { type: 'weather' } });
  await call('POST', '/alerts/rules', { body: { type: 'error_rate', params: { window_minutes: 0 } } });
  await call('GET', '/alerts/rules');
  await call('DELETE', `/alerts/rules/${rule.json.id}`);
  await call('DELETE', `/alerts/rules/${rule.json.id}`);
  await call('GET', '/alerts?state=open&limit=5');
  await call('GET', '/alerts?state=sleeping');
  await call('GET', '/alerts/alr_000000000000000000000000');
  await call('POST', '/alerts/alr_000000000000000000000000/acknowledge');

  // cache
  await call('GET', '/cache/config');
  await call('PUT', '/cache/config', { body: { mode: 'exact', ttl_seconds: 60 } });
  await call('PUT', '/cache/config', { body: { mode: 'psychic' } });
  await call('GET', '/cache/stats');
  await call('GET', '/cache/stats?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z');
  await call('DELETE', '/cache?provider=openai&model=gpt-4o');
  await call('DELETE', '/cache?model=gpt-4o');

  // agents
  const agent = await call('POST', '/agents', { body: { name: `oa-${uniq()}`, description: 'docs', rate_limits: { requests_per_minute: 5 } } });
  assert.equal(agent.status, 201, agent.text);
  await call('POST', '/agents', { body: {} });
  await call('GET', '/agents?state=active');
  await call('GET', '/agents?state=asleep');
  await call('GET', `/agents/${agent.json.id}`);
  await call('PATCH', `/agents/${agent.json.id}`, { body: { description: null } });
  await call('POST', `/agents/${agent.json.id}/pause`);
  await call('POST', `/agents/${agent.json.id}/resume`);
  const agentKey = await call('POST', '/api-keys', { body: { name: `oa-agent-${uniq()}`, agent_id: agent.json.id } });
  await call('DELETE', `/agents/${agent.json.id}`);
  await call('DELETE', `/api-keys/${agentKey.json.id}`);
  await call('DELETE', `/agents/${agent.json.id}`);
  await call('GET', `/agents/${agent.json.id}`);

  // routing
  const rr = await call('POST', '/routing/rules', { body: { name: 'oa', conditions: { model: 'gpt-4o' }, action: { type: 'rewrite', model: 'gpt-4o-mini' } } });
  assert.equal(rr.status, 201, rr.text);
  await call('POST', '/routing/rules', { body: { name: 'oa', action: { type: 'teleport' } } });
  await call('GET', '/routing/rules');
  await call('GET', `/routing/rules/${rr.json.id}`);
  await call('PATCH', `/routing/rules/${rr.json.id}`, { body: { priority: 5, enabled: false } });
  await call('POST', '/routing/evaluate', { body: { provider: 'openai', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] } } });
  await call('POST', '/routing/evaluate', { body: { provider: 'nope', body: {} } });
  await call('DELETE', `/routing/rules/${rr.json.id}`);
  await call('DELETE', `/routing/rules/${rr.json.id}`);

  // prompts
  const slug = `oa-${uniq()}`;
  const v1 = { messages: [{ role: 'user', content: 'Hello {{name}}' }], variables: { name: { required: true } }, model: 'gpt-4o-mini' };
  const prompt = await call('POST', '/prompts', { body: { slug, name: 'OA', description: 'docs', version: v1 } });
  assert.equal(prompt.status, 201, prompt.text);
  await call('POST', '/prompts', { body: { slug, version: v1 } });
  await call('GET', '/prompts');
  await call('GET', `/prompts/${slug}`);
  await call('GET', '/prompts/no-such-template');
  await call('POST', `/prompts/${slug}/versions`, { body: v1 });
  await call('POST', `/prompts/${slug}/versions`, { body: { variables: {} } });
  await call('PUT', `/prompts/${slug}/labels/production`, { body: { version: 2 } });
  await call('PUT', `/prompts/${slug}/labels/production`, { body: { version: 9 } });
  await call('DELETE', `/prompts/${slug}/labels/production`);
  await call('DELETE', `/prompts/${slug}/labels/production`);

  // policies
  const policy = await call('POST', '/policies', { body: { name: 'no cards', kind: 'pii', action: 'redact', entities: ['card'] } });
  assert.equal(policy.status, 201, policy.text);
  await call('POST', '/policies', { body: { name: 'x', kind: 'weather', action: 'block' } });
  await call('GET', '/policies?kind=pii&enabled=true');
  await call('GET', '/policies?enabled=maybe');
  await call('GET', `/policies/${policy.json.id}`);
  await call('PATCH', `/policies/${policy.json.id}`, { body: { enabled: false } });
  await call('POST', '/policies/evaluate', { body: { provider: 'openai', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'card 4111 1111 1111 1111' }] } } });
  await call('POST', '/policies/evaluate', { body: { provider: 'openai', body: 'text' } });
  await call('DELETE', `/policies/${policy.json.id}`);
  await call('GET', `/policies/${policy.json.id}`);

  // shadow AI
  const day = new Date(Date.now() - 3600_000);
  const line = `${Math.floor(day.getTime() / 1000)}.000\t10.9.8.7\tapi.openai.com\n`;
  await call('POST', '/shadow-ai/logs?format=generic', { text: line });
  await call('POST', '/shadow-ai/logs?format=morse', { text: line });
  await call('POST', '/shadow-ai/logs', { text: JSON.stringify({ format: 'generic', lines: [line.trim()] }), contentType: 'application/json' });
  const alerts = await call('GET', '/shadow-ai/alerts?source=egress&limit=5');
  await call('GET', '/shadow-ai/alerts?source=dns');
  const sid = alerts.json.data[0]?.id || 'sai_000000000000000000000000';
  await call('GET', `/shadow-ai/alerts/${sid}`);
  await call('POST', `/shadow-ai/alerts/${sid}/acknowledge`);
  await call('GET', '/shadow-ai/alerts/sai_000000000000000000000000');

  // the routes of this session's other branches, once they have landed
  await call('POST', '/compliance/erasure', { body: { client_addr: '10.1.2.3' } });
  await call('GET', '/compliance/verify');
  await call('GET', '/compliance/erasures');
  await call('GET', '/compliance/retention');
  await call('PUT', '/compliance/retention', { body: { audit_retention_days: 365 } });
  await call('POST', '/compliance/erasure', { body: {} });
  const period = await call('POST', '/chargeback/periods', { body: { name: 'oa', starts_at: '2020-01-01T00:00:00Z', ends_at: '2020-02-01T00:00:00Z', group_by: 'department' } });
  await call('GET', '/chargeback/periods');
  const pid = period.status === 201 ? period.json.id : 'cbp_000000000000000000000000';
  await call('GET', `/chargeback/periods/${pid}`);
  await call('PATCH', `/chargeback/periods/${pid}`, { body: { name: 'oa2' } });
  await call('POST', `/chargeback/periods/${pid}/finalize`);
  await call('DELETE', `/chargeback/periods/${pid}`);
  await call('GET', '/forecast/spend?horizon=7d');
  await call('GET', '/forecast/anomalies');
  await call('POST', '/forecast/what-if', { body: {} });
  await call('GET', '/orgs');
  await call('GET', '/orgs/org_default');
  await call('POST', '/orgs', { body: {} });

  await call('DELETE', `/budgets/${budget.json.id}`);
  await call('DELETE', `/budgets/${budget.json.id}`);

  /* every operation of the table was called */
  const uncalled = [];
  for (const [tpl, item] of Object.entries(SOURCE.paths)) {
    for (const m of METHODS) {
      const key = `${m.toUpperCase()} ${tpl}`;
      if (item[m] && !item[m]['x-spendpol-pending'] && !called.has(key)) uncalled.push(key);
    }
  }
  assert.deepEqual(uncalled, [], 'operations the test did not call');
  assert.deepEqual(problems, [], 'answers that differ from the document');
});
