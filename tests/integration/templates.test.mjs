// Prompt templates through the real gateway (issue 13, item 5): the openai
// SDK calls a template by slug, by version and by label, with variables from
// the body or a header; the answer carries X-Spendpol-Template-Id and
// -Version and so does the audit row; a missing variable or an unknown
// template is a 400 naming it; a key may be required to use templates.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useStack, UUID_RE } from './lib/stack.mjs';
import { auditRow } from './lib/providers.mjs';

const s = useStack();

const V1 = {
  messages: [
    { role: 'system', content: 'You answer questions about {{product}} in {{tone}} tone.' },
    { role: 'user', content: '{{question}}' },
  ],
  variables: { product: { required: true }, tone: { default: 'a friendly' }, question: { required: true } },
  model: 'gpt-4o-mini',
  parameters: { temperature: 0.2, max_tokens: 25 },
};

const V2 = {
  messages: [{ role: 'system', content: 'Version two speaks of {{product}} — kurz ✓.' }, { role: 'user', content: '{{question}}' }],
  variables: { product: { required: true }, question: { required: true } },
};

async function makeTemplate() {
  const slug = `support-${crypto.randomBytes(3).toString('hex')}`;
  const r = await s.api('POST', '/prompts', { body: { slug, name: 'Support reply', version: V1 } });
  assert.equal(r.status, 201, `POST /prompts -> ${r.status} ${r.text}`);
  assert.match(r.json.id, UUID_RE);
  const v2 = await s.api('POST', `/prompts/${slug}/versions`, { body: V2 });
  assert.equal(v2.status, 201, v2.text);
  assert.equal(v2.json.version, 2);
  const label = await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: 1 } });
  assert.ok(label.status === 200 || label.status === 201, label.text);
  return { slug, id: r.json.id };
}

const lastSent = () => s.fixture.completions().at(-1).json;

async function call(key, template, body = {}, headers = {}) {
  return s.client(key).chat.completions
    .create({ messages: [], ...body }, { headers: { 'X-Spendpol-Template': template, ...headers } })
    .withResponse();
}

test('a template by slug, version and label from the openai SDK, with its headers and audit row', async () => {
  const { slug, id } = await makeTemplate();
  const { key } = await s.createKey({ name: 'templates' });

  // the newest version by slug (waits for the template in every worker)
  const latest = await s.waitStable(async () => {
    try { return await call(key, slug, { model: 'gpt-4o-mini', spendpol_variables: { product: 'Spendpol', question: 'Was kostet das?' } }); } catch (e) { return { error: e.status }; }
  }, (r) => r.response?.status === 200, { message: 'the template in every worker', times: 6 });
  assert.equal(latest.response.headers.get('x-spendpol-template-id'), id);
  assert.equal(latest.response.headers.get('x-spendpol-template-version'), '2');
  let sent = lastSent();
  assert.deepEqual(sent.messages, [
    { role: 'system', content: 'Version two speaks of Spendpol — kurz ✓.' },
    { role: 'user', content: 'Was kostet das?' },
  ]);
  assert.equal(sent.spendpol_variables, undefined, 'the variables are not forwarded');

  // version 1 by number: defaults, model and parameters from the template
  const v1 = await call(key, `${slug}@1`, { spendpol_variables: { product: 'Spendpol', question: 'Wie geht das? "quoted" \\ ✓' } });
  assert.equal(v1.response.headers.get('x-spendpol-template-version'), '1');
  sent = lastSent();
  assert.equal(sent.model, 'gpt-4o-mini');
  assert.equal(sent.temperature, 0.2);
  assert.equal(sent.max_tokens, 25);
  assert.equal(sent.messages[0].content, 'You answer questions about Spendpol in a friendly tone.');
  assert.equal(sent.messages[1].content, 'Wie geht das? "quoted" \\ ✓');

  // by label, variables from the header, the request's own messages after the template's
  const byLabel = await call(key, `${slug}@production`, { model: 'gpt-4.1-mini', messages: [{ role: 'user', content: 'und noch etwas' }] },
    { 'X-Spendpol-Template-Variables': JSON.stringify({ product: 'Gateway', tone: 'a terse', question: 'Q?' }) });
  assert.equal(byLabel.response.headers.get('x-spendpol-template-version'), '1');
  sent = lastSent();
  assert.equal(sent.model, 'gpt-4.1-mini', 'the request\'s own model wins');
  assert.deepEqual(sent.messages.map((m) => m.content), ['You answer questions about Gateway in a terse tone.', 'Q?', 'und noch etwas']);

  const row = await auditRow(s, byLabel.response.headers.get('x-spendpol-audit-id'));
  assert.equal(row.template_id, id);
  assert.equal(Number(row.template_version), 1);
});

test('a missing variable, an unknown template, version or label are 400s naming them', async () => {
  const { slug } = await makeTemplate();
  const { key } = await s.createKey({ name: 'templates-errors' });
  await s.waitStable(async () => {
    try { return (await call(key, slug, { model: 'gpt-4o-mini', spendpol_variables: { product: 'x', question: 'y' } })).response.status; } catch (e) { return e.status; }
  }, (st) => st === 200, { message: 'the template in every worker', times: 6 });

  const expect400 = async (template, body, what) => {
    let err;
    try { await call(key, template, body); } catch (e) { err = e; }
    assert.ok(err, `${template}: refused`);
    assert.equal(err.status, 400, `${template}: ${err.message}`);
    assert.match(err.message, what, `${template}: ${err.message}`);
    return err;
  };

  const missing = await expect400(slug, { spendpol_variables: { product: 'x' } }, /question/);
  assert.equal(missing.code, 'template_variable_missing');
  const unknown = await expect400('no-such-template', {}, /no-such-template/);
  assert.equal(unknown.code, 'template_not_found');
  await expect400(`${slug}@9`, { spendpol_variables: { product: 'x', question: 'y' } }, /9/);
  await expect400(`${slug}@staging`, { spendpol_variables: { product: 'x', question: 'y' } }, /staging/);
  await expect400(slug, { spendpol_variables: { product: ['not', 'text'], question: 'y' } }, /product/);
});

test('a key that requires templates refuses a request without one', async () => {
  const { slug } = await makeTemplate();
  const { key } = await s.createKey({ name: 'templates-only', require_template: true });
  let err;
  try {
    await s.client(key).chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'free text' }] });
  } catch (e) { err = e; }
  assert.equal(err?.status, 403, String(err));
  assert.equal(err.code, 'template_required');
  const ok = await call(key, `${slug}@1`, { spendpol_variables: { product: 'x', question: 'y' } });
  assert.equal(ok.response.status, 200);
});
