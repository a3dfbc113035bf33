// How controld behaves towards the people who run it: /healthz tells only
// admins its details; a journal line with impossible numbers is refused,
// logged once (escaped) and counted, and the lines after it still load;
// no core dumps, and the keys it was started with are gone from its
// environment.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { useStack, newKey, spendpolHeaders, waitFor } from './lib/stack.mjs';

const s = useStack();

async function health(key) {
  const r = await s.api('GET', '/healthz', { key });
  return r;
}

function controldLog() {
  return fs.readFileSync(path.join(s.logs, 'controld.err'), 'utf8');
}

/** One real journal line, parsed: a template the forged lines copy. */
async function journalTemplate() {
  const { key } = await s.createKey({ name: 'hygiene' });
  const { response } = await s.client(key).chat.completions.create({
    model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'template' }],
  }).withResponse();
  const id = spendpolHeaders(response).auditId;
  await s.waitAuditRow(id);
  const line = fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${id}"`));
  assert.ok(line, `journal line of ${id}`);
  return JSON.parse(line);
}

function newEventId() {
  return `evt_hygiene${crypto.randomBytes(8).toString('hex')}`;
}

test('/healthz without a key says only whether controld is healthy', async () => {
  const r = await health(null);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { status: 'ok' });
  assert.equal(r.headers.get('cache-control'), 'no-store');
});

test('/healthz with a wrong key is refused; with the admin key it has the details', async () => {
  const wrong = await health(newKey());
  assert.equal(wrong.status, 401, wrong.text);
  assert.equal(wrong.json?.error?.code, 'invalid_api_key');

  const r = await health(s.adminKey);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, 'ok');
  assert.equal(r.json.database, 'ok');
  assert.equal(r.json.redis, 'ok');
  assert.ok(r.json.snapshot_generation >= 1, r.text);
  for (const k of ['journal_offset', 'journal_malformed_lines', 'journal_refused_lines']) {
    assert.equal(typeof r.json[k], 'number', `${k} in ${r.text}`);
  }
});

test('a journal line with negative tokens is refused, logged once escaped, counted; the next line loads', async () => {
  const template = await journalTemplate();
  const before = (await health(s.adminKey)).json;

  // an id with a newline (ids are cut at 63 bytes): the log line must not
  // split into a forged one
  const badId = `${newEventId()}\n[error] FORGED\x1b[2J`;
  const bad = { ...template, id: badId, input_tokens: -1000000, cost_nano: -5 };
  const goodId = newEventId();
  const good = { ...template, id: goodId };
  fs.appendFileSync(s.journalPath, `${JSON.stringify(bad)}\n${JSON.stringify(good)}\n`);

  const row = await s.waitAuditRow(goodId);
  assert.equal(row.id, goodId);

  const after = await waitFor(async () => {
    const h = (await health(s.adminKey)).json;
    return h.journal_refused_lines === before.journal_refused_lines + 1 ? h : null;
  }, { message: 'journal_refused_lines counts the refused line' });
  assert.equal(after.journal_malformed_lines, before.journal_malformed_lines);
  assert.ok(after.journal_offset > before.journal_offset);

  const rows = await s.allAuditRows();
  assert.ok(!rows.some((r) => r.id.startsWith(badId.slice(0, 20))), 'the refused line was loaded');

  const log = controldLog().split('\n');
  const refused = log.filter((l) => l.includes('refused event') && l.includes(badId.slice(0, 20)));
  assert.equal(refused.length, 1, `one log line for the refused event:\n${refused.join('\n')}`);
  assert.ok(refused[0].includes('\\x0a[error] FORGED\\x1b[2J at offset'), refused[0]);
  assert.match(refused[0], /field "input_tokens" is -1000000, expected 0\.\.1000000000000/);
  assert.ok(!log.some((l) => l.startsWith('[error] FORGED')), 'a forged log line');
  // the reason names the field, never quotes the line
  assert.ok(!refused[0].includes(template.requested_model), refused[0]);
});

test('a line whose cached tokens exceed its input is refused; an absurd cost too', async () => {
  const template = await journalTemplate();
  const before = (await health(s.adminKey)).json;
  const cachedId = newEventId();
  const costId = newEventId();
  const goodId = newEventId();
  fs.appendFileSync(s.journalPath, [
    { ...template, id: cachedId, input_tokens: 10, cached_tokens: 8, cache_write_tokens: 3 },
    { ...template, id: costId, cost_nano: 2e15 },
    { ...template, id: goodId },
  ].map((l) => `${JSON.stringify(l)}\n`).join(''));

  await s.waitAuditRow(goodId);
  const after = await waitFor(async () => {
    const h = (await health(s.adminKey)).json;
    return h.journal_refused_lines === before.journal_refused_lines + 2 ? h : null;
  }, { message: 'two more refused lines' });
  assert.equal(after.journal_refused_lines, before.journal_refused_lines + 2);
  const ids = new Set((await s.allAuditRows()).map((r) => r.id));
  assert.ok(!ids.has(cachedId) && !ids.has(costId), 'a refused line was loaded');
  const log = controldLog();
  assert.match(log, new RegExp(`refused event ${cachedId} at offset \\d+: fields "cached_tokens" \\(8\\) and "cache_write_tokens" \\(3\\) exceed "input_tokens" \\(10\\)`));
  assert.match(log, new RegExp(`refused event ${costId} at offset \\d+: field "cost_nano" is 2000000000000000, expected 0\\.\\.1000000000000000`));
});

test('controld has no core dumps and its environment no longer holds the admin key', async () => {
  const pid = s.controld.pid;
  const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
  assert.match(fs.readFileSync(`/proc/${pid}/comm`, 'utf8'), /controld/);
  assert.match(limits, /^Max core file size\s+0\s+0\s+bytes/m, limits);
  const environ = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
  assert.ok(environ.includes('SPENDPOL_ADMIN_KEY='), 'the variable is still named');
  assert.ok(!environ.includes(s.adminKey), 'the admin key is still in /proc/PID/environ');
});
