// Prompt templates' admin API (issue 13): POST/GET /prompts, GET
// /prompts/{slug}, versions numbered 1, 2, 3 and immutable, labels
// (PUT/DELETE /prompts/{slug}/labels/{label}), the 404/409/422 answers,
// require_template on keys, and the snapshot records the module reads.
// Admin API only: no proxy call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { useStack, waitFor, assertJsonError, UUID_RE } from './lib/stack.mjs';
import { readSnapshot as readSnapshotFile, TABLE } from './lib/snapshot.mjs';

const s = useStack();
const ORG = 'org_default';

// ---- the snapshot file (libspendpol/sp_snapshot.h, v10) ----------------

const KEY_TEMPLATE_REQUIRED = 0x04;

const readSnapshot = () => readSnapshotFile(s.snapshotDir);

/** the template record (org, slug) of the snapshot, or null */
function snapshotTemplate(org, slug) {
  const { str, records } = readSnapshot();
  const rec = records(TABLE.TEMPLATES).find((r) => str(r) === org && str(r + 8) === slug);
  return rec ? JSON.parse(str(rec + 16)) : null;
}

function snapshotKeyFlags(key) {
  const { buf, records } = readSnapshot();
  const hash = crypto.createHash('sha256').update(key).digest();
  for (const rec of records(TABLE.KEYS)) {
    if (buf.subarray(rec, rec + 32).equals(hash)) return buf.readUInt32LE(rec + 32 + 48 + 4);
  }
  return null;
}

function psql(url, query) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-Atqc', query],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function fieldError(r, status, field, what) {
  const e = assertJsonError(r, status, what);
  if (field instanceof RegExp) assert.match(e.field ?? '', field, `${what}: field in ${r.text}`);
  else assert.equal(e.field, field, `${what}: field in ${r.text}`);
  return e;
}

const slugOf = (base) => `${base}-${crypto.randomBytes(3).toString('hex')}`;

const v1 = {
  messages: [
    { role: 'system', content: 'You answer {{product}} questions in {{tone}} tone.' },
    { role: 'user', content: '{{question}}' },
  ],
  variables: { product: { required: true }, tone: { default: 'a friendly' }, question: { required: true } },
  model: 'gpt-4o-mini',
  parameters: { temperature: 0.2, max_tokens: 300 },
};
const v2 = { ...v1, model: 'gpt-4o' };
const v3 = { messages: [{ role: 'user', content: 'Say hi' }] };

async function createTemplate(slug, version = v1) {
  const r = await s.api('POST', '/prompts', { body: { slug, name: `Template ${slug}`, description: 'support answers', version } });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

// ---- templates and versions --------------------------------------------

test('POST /prompts creates a template with a UUID and its version 1', async () => {
  const slug = slugOf('support');
  const t = await createTemplate(slug);
  assert.match(t.id, UUID_RE);
  assert.equal(t.slug, slug);
  assert.equal(t.name, `Template ${slug}`);
  assert.equal(t.description, 'support answers');
  assert.equal(t.latest, 1);
  assert.deepEqual(t.labels, {});
  assert.equal(t.versions.length, 1);
  assert.equal(t.versions[0].version, 1);
  assert.deepEqual(t.versions[0].messages, v1.messages);
  assert.deepEqual(t.versions[0].variables, v1.variables);
  assert.deepEqual(t.versions[0].parameters, v1.parameters);
  assert.equal(t.versions[0].model, 'gpt-4o-mini');

  const got = await s.api('GET', `/prompts/${slug}`);
  assert.equal(got.status, 200, got.text);
  assert.deepEqual(got.json, t);

  const list = await s.api('GET', '/prompts');
  assert.equal(list.status, 200, list.text);
  const item = list.json.data.find((x) => x.slug === slug);
  assert.deepEqual({ id: item.id, latest: item.latest, labels: item.labels, name: item.name },
    { id: t.id, latest: 1, labels: {}, name: t.name });
});

test('versions are numbered 1, 2, 3 and never change', async () => {
  const slug = slugOf('numbered');
  const t = await createTemplate(slug);

  let r = await s.api('POST', `/prompts/${slug}/versions`, { body: v2 });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.version, 2);
  assert.equal(r.json.template_id, t.id);
  assert.equal(r.json.model, 'gpt-4o');
  r = await s.api('POST', `/prompts/${slug}/versions`, { body: v3 });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.version, 3);

  r = await s.api('GET', `/prompts/${slug}`);
  assert.equal(r.json.latest, 3);
  assert.deepEqual(r.json.versions.map((v) => v.version), [1, 2, 3]);
  assert.deepEqual(r.json.versions[0].messages, v1.messages, 'version 1 as written');
  assert.deepEqual(r.json.versions[2].messages, v3.messages);

  // immutable in the database too: neither the API's role nor the owner
  // may rewrite or drop a version
  for (const q of [`UPDATE prompt_versions SET body = '{}' WHERE prompt_id = '${t.id}'`,
    `DELETE FROM prompt_versions WHERE prompt_id = '${t.id}' AND version = 1`]) {
    assert.throws(() => psql(s.ownerDatabaseURL, q), /immutable/, q);
  }
  r = await s.api('GET', `/prompts/${slug}`);
  assert.deepEqual(r.json.versions.map((v) => v.version), [1, 2, 3]);
  assert.deepEqual(r.json.versions[0].messages, v1.messages);
});

test('labels point at versions; moving and deleting them', async () => {
  const slug = slugOf('labelled');
  await createTemplate(slug);
  await s.api('POST', `/prompts/${slug}/versions`, { body: v2 });

  let r = await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: 1 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.label, 'production');
  assert.equal(r.json.version, 1);
  r = await s.api('PUT', `/prompts/${slug}/labels/staging`, { body: { version: 2 } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual((await s.api('GET', `/prompts/${slug}`)).json.labels, { production: 1, staging: 2 });

  r = await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: 2 } });
  assert.equal(r.json.version, 2);
  assert.deepEqual((await s.api('GET', `/prompts/${slug}`)).json.labels, { production: 2, staging: 2 });

  fieldError(await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: 9 } }), 404, 'version', 'unknown version');
  fieldError(await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: '2' } }), 400, 'version', 'version a string');
  fieldError(await s.api('PUT', `/prompts/${slug}/labels/production`, { body: {} }), 422, 'version', 'version missing');
  fieldError(await s.api('PUT', `/prompts/${slug}/labels/Prod!`, { body: { version: 1 } }), 422, 'label', 'label not a slug');
  assert.deepEqual((await s.api('GET', `/prompts/${slug}`)).json.labels, { production: 2, staging: 2 }, 'unchanged');

  r = await s.api('DELETE', `/prompts/${slug}/labels/staging`);
  assert.equal(r.status, 204, r.text);
  fieldError(await s.api('DELETE', `/prompts/${slug}/labels/staging`), 404, 'label', 'label already deleted');
  assert.deepEqual((await s.api('GET', `/prompts/${slug}`)).json.labels, { production: 2 });
  const listed = (await s.api('GET', '/prompts')).json.data.find((x) => x.slug === slug);
  assert.deepEqual(listed.labels, { production: 2 });
  assert.equal(listed.latest, 2);
});

test('404, 409 and 422 answers name their field', async () => {
  const slug = slugOf('taken');
  await createTemplate(slug);

  fieldError(await s.api('POST', '/prompts', { body: { slug, name: 'again', version: v1 } }), 409, 'slug', 'slug taken');
  fieldError(await s.api('GET', '/prompts/no-such-template'), 404, 'slug', 'unknown slug');
  fieldError(await s.api('GET', '/prompts/Not_A_Slug!'), 404, 'slug', 'malformed slug');
  fieldError(await s.api('POST', '/prompts/no-such-template/versions', { body: v1 }), 404, 'slug', 'versions of an unknown slug');
  fieldError(await s.api('PUT', '/prompts/no-such-template/labels/production', { body: { version: 1 } }), 404, 'slug', 'label of an unknown slug');

  fieldError(await s.api('POST', '/prompts', { body: { slug: 'Bad Slug', version: v1 } }), 422, 'slug', 'slug alphabet');
  fieldError(await s.api('POST', '/prompts', { body: { version: v1 } }), 422, 'slug', 'slug missing');
  fieldError(await s.api('POST', '/prompts', { body: { slug: slugOf('x') } }), 422, 'version', 'version missing');
  fieldError(await s.api('POST', '/prompts', { body: { slug: slugOf('x'), version: { variables: {} } } }), 422, /^version\.messages/, 'no messages');
  fieldError(await s.api('POST', `/prompts/${slug}/versions`, { body: { variables: {} } }), 422, /^messages/, 'a version without messages');
  fieldError(await s.api('POST', '/prompts', { body: { slug: slugOf('x'), version: v1, colour: 'blue' } }), 400, 'colour', 'unknown member');

  const got = await s.api('GET', `/prompts/${slug}`);
  assert.equal(got.json.latest, 1, 'refusals wrote nothing');
});

// ---- keys and the snapshot ---------------------------------------------

test('keys take require_template at creation and by PATCH, and it is published as a key flag', async () => {
  const plain = await s.createKey({ name: 'free-form' });
  assert.equal(plain.require_template, false, 'default false');
  const strict = await s.createKey({ name: 'templated only', require_template: true });
  assert.equal(strict.require_template, true);

  const list = await s.api('GET', '/api-keys?limit=1000');
  const byId = new Map(list.json.data.map((k) => [k.id, k]));
  assert.equal(byId.get(strict.id).require_template, true);
  assert.equal(byId.get(plain.id).require_template, false);

  await waitFor(() => (snapshotKeyFlags(strict.key) & KEY_TEMPLATE_REQUIRED) !== 0, { message: 'flag published' });
  assert.equal(snapshotKeyFlags(plain.key) & KEY_TEMPLATE_REQUIRED, 0);

  let r = await s.api('PATCH', `/api-keys/${plain.id}`, { body: { require_template: true } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.require_template, true);
  await waitFor(() => (snapshotKeyFlags(plain.key) & KEY_TEMPLATE_REQUIRED) !== 0, { message: 'flag set by PATCH' });

  r = await s.api('POST', `/api-keys/${strict.id}/rotate`);
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.require_template, true, 'rotation keeps it');

  fieldError(await s.api('PATCH', `/api-keys/${plain.id}`, { body: { require_template: 'yes' } }), 400, 'require_template', 'not a boolean');
});

test('the snapshot carries each template with its versions and labels', async () => {
  const slug = slugOf('published');
  const t = await createTemplate(slug);
  await waitFor(() => snapshotTemplate(ORG, slug) !== null, { message: 'template published' });
  let rec = snapshotTemplate(ORG, slug);
  assert.equal(rec.id, t.id);
  assert.equal(rec.slug, slug);
  assert.equal(rec.latest, 1);
  assert.deepEqual(rec.labels, {});
  assert.equal(rec.versions.length, 1);
  assert.equal(rec.versions[0].version, 1);
  assert.deepEqual(rec.versions[0].messages, v1.messages);
  assert.deepEqual(rec.versions[0].variables, v1.variables);
  assert.deepEqual(rec.versions[0].parameters, v1.parameters);

  await s.api('POST', `/prompts/${slug}/versions`, { body: v2 });
  await s.api('PUT', `/prompts/${slug}/labels/production`, { body: { version: 1 } });
  await waitFor(() => snapshotTemplate(ORG, slug)?.labels?.production === 1, { message: 'label published' });
  rec = snapshotTemplate(ORG, slug);
  assert.equal(rec.latest, 2);
  assert.deepEqual(rec.versions.map((v) => [v.version, v.model]), [[1, 'gpt-4o-mini'], [2, 'gpt-4o']]);
});
