// Compliance (issue 15 items 2 and 6, docs/compliance.md): every audit row
// ingested from real proxy traffic is linked into its organisation's hash
// chain; GET /compliance/verify recomputes it and names the first broken
// link (a row changed or deleted as the database owner); erasure of a
// key's or a client address's identifying fields keeps the chain whole;
// retention deletes the old rows (at once on PUT, and by the periodic job
// after a restart), the first kept row's prev_hash becoming the anchor;
// tools/spendpol-audit-verify checks an export offline (GET
// /audit-logs/export's CSV and JSON lines); bad input on each route.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { useStack, newKey, waitFor, spendpolHeaders } from './lib/stack.mjs';

const s = useStack();
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TOOL = path.join(REPO, 'tools/spendpol-audit-verify');

function sql(q, url = s.ownerDatabaseURL) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', q], { encoding: 'utf8' }).trim();
}

async function verify(query = '', key) {
  const r = await s.api('GET', `/compliance/verify${query}`, { key });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/* requests through nginx with the SDK; their audit rows ingested */
async function traffic(n, key) {
  const client = s.client(key);
  const ids = [];
  for (let i = 0; i < n; i++) {
    const { response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `chain ${i}` }] }).withResponse();
    ids.push(spendpolHeaders(response).auditId);
  }
  await s.waitAuditRows(ids);
  return ids;
}

function partitionOf(id) {
  return sql(`SELECT tableoid::regclass FROM audit_logs WHERE id = '${id}'`);
}

/* the chain as sp_chain.h defines it, computed here from the stored rows */
const CANON = `id, org_id, (extract(epoch FROM created_at) * 1000000)::bigint, api_key_id, provider,
  requested_model, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_nano,
  reserved_nano, saved_nano, status, cache, CASE WHEN stream THEN 't' ELSE 'f' END, endpoint, department,
  project, agent_id, error_code, CASE WHEN routed THEN 't' ELSE 'f' END, route_rule, template_id::text,
  template_version, round(guard_score::numeric * 1000)::integer, array_to_string(pii_types, ','),
  policy_action, array_to_string(policy_ids, ','), hallucination_score, shadow_key_type, shadow_key_fp,
  client_addr, trace_id, span_id, parent_id`;
const BODY = ['id', 'org_id', 'created_at', 'api_key_id', 'provider', 'requested_model', 'model',
  'input_tokens', 'output_tokens', 'cached_tokens', 'cache_write_tokens', 'cost_nano', 'reserved_nano',
  'saved_nano', 'status', 'cache', 'stream', 'endpoint', 'department', 'project', 'agent_id', 'error_code',
  'routed', 'route_rule', 'template_id', 'template_version', 'guard_score', 'pii_types', 'policy_action',
  'policy_ids', 'hallucination_score', 'shadow_key_type', 'shadow_key_fp'];
const SUBJECT = ['client_addr', 'trace_id', 'span_id', 'parent_id'];
const sha = (...parts) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
const canon = (names, values) => Buffer.from(names.map((n, i) => `${n}=${values[i]}\n`).join(''), 'utf8');

/* links the rows of org (ids in chain order) as ingest would, as the owner */
function linkRows(org, ids, { seq = 0, prev = Buffer.alloc(32) } = {}) {
  for (const id of ids) {
    const json = sql(`SELECT json_build_array(${CANON}) FROM audit_logs WHERE org_id = '${org}' AND id = '${id}'`);
    const v = JSON.parse(json).map((x) => (x === null ? '' : String(x)));
    const salt = crypto.randomBytes(16);
    const subject = sha(salt, canon(SUBJECT, v.slice(BODY.length)));
    const hash = sha(prev, sha(canon(BODY, v.slice(0, BODY.length))), subject);
    seq += 1;
    sql(`UPDATE ${partitionOf(id)} SET chain_seq = ${seq}, prev_hash = '\\x${prev.toString('hex')}',
      row_hash = '\\x${hash.toString('hex')}', subject_salt = '\\x${salt.toString('hex')}',
      subject_digest = '\\x${subject.toString('hex')}' WHERE org_id = '${org}' AND id = '${id}'`);
    prev = hash;
  }
  sql(`INSERT INTO audit_chain_heads (org_id, seq, hash) VALUES ('${org}', ${seq}, '\\x${prev.toString('hex')}')
    ON CONFLICT (org_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash`);
  return { seq, prev };
}

/* a second organisation with its own admin key, and rows the owner inserts */
function otherOrganisation() {
  const org = `org_chain_${crypto.randomBytes(4).toString('hex')}`;
  const key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'chain B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'chain B admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);
  return { org, key };
}

function insertRows(org, n, daysAgo, { addr = null } = {}) {
  const ids = [];
  for (let i = 0; i < n; i++) {
    const id = `evt_${crypto.randomBytes(8).toString('hex')}`;
    sql(`SELECT spendpol_audit_partition(now() - interval '${daysAgo} days');
      INSERT INTO audit_logs (id, org_id, created_at, provider, model, cost_nano, status, client_addr, trace_id)
      VALUES ('${id}', '${org}', now() - interval '${daysAgo} days' + interval '${i} seconds', 'openai',
              'gpt-4o', ${1000 + i}, 200, ${addr ? `'${addr}'` : 'NULL'}, 'trace-${i}')`);
    ids.push(id);
  }
  return ids;
}

function runTool(file, args = []) {
  const r = spawnSync('python3', [TOOL, file, ...args], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('ingest links every row of real traffic; verify recomputes the chain', async () => {
  const { id: keyId, key } = await s.createKey({ name: 'chain' });
  const ids = await traffic(4, key);

  const seqs = sql(`SELECT string_agg(chain_seq::text, ',' ORDER BY chain_seq) FROM audit_logs
    WHERE org_id = 'org_default' AND chain_seq IS NOT NULL`).split(',').map(Number);
  seqs.forEach((q, i) => assert.equal(q, i + 1, `seqs have no gap and no duplicate: ${seqs}`));
  for (const id of ids) {
    const row = sql(`SELECT chain_seq IS NOT NULL AND length(row_hash) = 32 AND length(subject_salt) = 16
      AND api_key_id = '${keyId}' FROM audit_logs WHERE id = '${id}'`);
    assert.equal(row, 't', `${id} is linked`);
  }

  const v = await verify();
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.first_broken, null);
  assert.equal(v.rows, seqs.length);
  assert.equal(v.first_seq, 1);
  assert.equal(v.last_seq, seqs.length);
  assert.equal(v.head.seq, seqs.length);
  assert.equal(v.head.hash, sql(`SELECT encode(row_hash, 'hex') FROM audit_logs
    WHERE org_id = 'org_default' AND chain_seq = ${seqs.length}`));
  assert.equal(v.unchained_rows, 0);

  /* the hashes are the documented formula: recomputed here alike */
  const row = JSON.parse(sql(`SELECT json_build_array(${CANON}, encode(prev_hash, 'hex'), encode(row_hash, 'hex'),
    encode(subject_salt, 'hex'), encode(subject_digest, 'hex')) FROM audit_logs WHERE id = '${ids[0]}'`));
  const vals = row.slice(0, BODY.length + SUBJECT.length).map((x) => (x === null ? '' : String(x)));
  const [prevHex, rowHex, saltHex, subjectHex] = row.slice(BODY.length + SUBJECT.length);
  const subject = sha(Buffer.from(saltHex, 'hex'), canon(SUBJECT, vals.slice(BODY.length)));
  assert.equal(subject.toString('hex'), subjectHex);
  assert.equal(sha(Buffer.from(prevHex, 'hex'), sha(canon(BODY, vals.slice(0, BODY.length))), subject)
    .toString('hex'), rowHex);
});

test('lines read twice (in a batch, and after a forgotten offset) are linked once: no gap, no duplicate seq', async () => {
  const { key } = await s.createKey({ name: 'twice' });
  const [first] = await traffic(1, key);
  const line = JSON.parse(fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${first}"`)));
  const newId = () => `evt_chain${crypto.randomBytes(10).toString('hex')}`;
  const append = (lines) => fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  const loaded = (id) => waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id = '${id}'`) === '1',
    { timeout: 10_000, message: `audit row ${id}` });

  const lines = Array.from({ length: 3 }, () => ({ ...line, id: newId() }));
  append(lines);
  await loaded(lines[2].id);
  const head = (await verify()).head.seq;

  const fresh = { ...line, id: newId() };
  append([...lines, lines[1], fresh]);
  await loaded(fresh.id);
  let v = await verify();
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.head.seq, head + 1, 'only the new line is linked');
  assert.equal(sql(`SELECT chain_seq FROM audit_logs WHERE id = '${fresh.id}'`), String(head + 1));

  sql('DELETE FROM journal_offsets');
  await s.restartControld();
  const after = { ...line, id: newId() };
  append([after]);
  await loaded(after.id);
  v = await verify();
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.head.seq, head + 2, 'the whole journal read again links nothing twice');
  assert.equal(sql(`SELECT count(*) = count(DISTINCT chain_seq) FROM audit_logs WHERE org_id = 'org_default'`), 't');
});

test('a row changed as the owner is named; deleting one is a seq_gap', async () => {
  const { key } = await s.createKey({ name: 'tamper' });
  const ids = await traffic(3, key);
  const victim = ids[1];
  const part = partitionOf(victim);
  const seq = Number(sql(`SELECT chain_seq FROM audit_logs WHERE id = '${victim}'`));

  sql(`UPDATE ${part} SET cost_nano = cost_nano + 1 WHERE id = '${victim}'`);
  let v = await verify();
  assert.equal(v.verified, false);
  assert.equal(v.first_broken.id, victim);
  assert.equal(v.first_broken.chain_seq, seq);
  assert.equal(v.first_broken.reason, 'row_hash_mismatch');
  assert.equal(v.first_broken.found, sql(`SELECT encode(row_hash, 'hex') FROM audit_logs WHERE id = '${victim}'`));
  assert.match(v.first_broken.expected, /^[0-9a-f]{64}$/);

  sql(`UPDATE ${part} SET cost_nano = cost_nano - 1 WHERE id = '${victim}'`);
  assert.equal((await verify()).verified, true, 'restored: verified again');

  /* a subject field changed: its digest no longer matches its salt */
  const trace = sql(`SELECT trace_id FROM audit_logs WHERE id = '${victim}'`);
  sql(`UPDATE ${part} SET trace_id = 'forged' WHERE id = '${victim}'`);
  v = await verify();
  assert.equal(v.first_broken.reason, 'subject_digest_mismatch');
  assert.equal(v.first_broken.id, victim);
  sql(`UPDATE ${part} SET trace_id = '${trace}' WHERE id = '${victim}'`);

  /* deleted (kept aside, and put back after) */
  const saved = `chain_saved_${crypto.randomBytes(4).toString('hex')}`;
  sql(`CREATE TABLE ${saved} AS SELECT * FROM ${part} WHERE id = '${victim}'; DELETE FROM ${part} WHERE id = '${victim}'`);
  v = await verify();
  assert.equal(v.verified, false);
  assert.equal(v.first_broken.reason, 'seq_gap');
  assert.equal(v.first_broken.expected, seq);
  assert.equal(v.first_broken.found, seq + 1);
  assert.equal(v.first_broken.id, ids[2]);
  sql(`INSERT INTO ${part} SELECT * FROM ${saved}; DROP TABLE ${saved}`);
  assert.equal((await verify()).verified, true, 'put back: verified again');

  /* a forged head: named at the head's seq */
  const head = sql(`SELECT seq || '|' || encode(hash, 'hex') FROM audit_chain_heads WHERE org_id = 'org_default'`);
  const [headSeq, headHash] = head.split('|');
  sql(`UPDATE audit_chain_heads SET hash = '\\x${'ab'.repeat(32)}' WHERE org_id = 'org_default'`);
  v = await verify();
  assert.equal(v.verified, false);
  assert.equal(v.first_broken.chain_seq, Number(headSeq));
  assert.equal(v.first_broken.reason, 'row_hash_mismatch');
  assert.equal(v.first_broken.expected, headHash);
  sql(`UPDATE audit_chain_heads SET hash = '\\x${headHash}' WHERE org_id = 'org_default'`);
  assert.equal((await verify()).verified, true);
});

test('ranges: from= takes the first row\'s prev_hash as the anchor; bad times and inverted ranges', async () => {
  const { key } = await s.createKey({ name: 'range' });
  const before = new Date(Date.now() - 1000).toISOString();
  await new Promise((r) => setTimeout(r, 1100));
  const from = new Date().toISOString();
  const ids = await traffic(2, key);
  const v = await verify(`?from=${encodeURIComponent(from)}`);
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.rows, 2);
  assert.equal(v.last_seq, v.head.seq);
  assert.equal(v.first_seq, Number(sql(`SELECT chain_seq FROM audit_logs WHERE id = '${ids[0]}'`)));

  const empty = await verify(`?from=${encodeURIComponent(before)}&to=${encodeURIComponent(before)}`);
  assert.equal(empty.verified, true);
  assert.equal(empty.rows, 0);
  assert.equal(empty.first_seq, null);

  for (const [q, status, field] of [
    ['?from=yesterday', 400, 'from'],
    ['?to=2026-13-01T00:00:00Z', 400, 'to'],
    ['?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z', 422, 'from'],
  ]) {
    const r = await s.api('GET', `/compliance/verify${q}`);
    assert.equal(r.status, status, `${q}: ${r.text}`);
    assert.equal(r.json.error.param ?? r.json.error.field, field, r.text);
  }
});

test('erasure by key clears the subject fields and keeps the chain verifiable', async () => {
  const { id: keyId, key } = await s.createKey({ name: 'subject' });
  const ids = await traffic(2, key);
  /* createKey's probe through the proxy is the key's too */
  const n = Number(sql(`SELECT count(*) FROM audit_logs WHERE api_key_id = '${keyId}'`));
  assert.ok(n >= 2);
  const r = await s.api('POST', '/compliance/erasure', { body: { api_key_id: keyId } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.rows, n);
  assert.equal(r.json.selector, 'api_key_id');
  assert.match(r.json.fingerprint, /^fp_[0-9a-f]{16}$/);
  assert.ok(!r.text.includes(keyId), 'the selector is not echoed');

  for (const id of ids) {
    assert.equal(sql(`SELECT trace_id IS NULL AND span_id IS NULL AND subject_salt IS NULL
      AND erased_at IS NOT NULL AND subject_digest IS NOT NULL FROM audit_logs WHERE id = '${id}'`), 't');
  }
  assert.equal(sql(`SELECT name FROM api_keys WHERE id = '${keyId}'`), 'erased');

  const list = await s.api('GET', '/compliance/erasures');
  assert.equal(list.status, 200, list.text);
  const e = list.json.data.find((x) => x.id === r.json.id);
  assert.ok(e, list.text);
  assert.equal(e.rows, n);
  assert.equal(e.admin_key_id.startsWith('key_'), true);
  assert.ok(!list.text.includes(keyId));

  const v = await verify();
  assert.equal(v.verified, true, `erased rows still verify: ${JSON.stringify(v)}`);

  /* erased twice: nothing left to erase, recorded all the same */
  const again = await s.api('POST', '/compliance/erasure', { body: { api_key_id: keyId } });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.rows, 0);
  assert.equal(again.json.fingerprint, r.json.fingerprint);
});

test('erasure: bad input names the field', async () => {
  for (const [body, status, field] of [
    [{}, 422, 'api_key_id'],
    [{ api_key_id: 'key_000000000000000000000000', client_addr: '10.0.0.1' }, 422, 'client_addr'],
    [{ api_key_id: 12 }, 400, 'api_key_id'],
    [{ api_key_id: 'nope' }, 422, 'api_key_id'],
    [{ api_key_id: 'key_000000000000000000000000' }, 404, 'api_key_id'],
    [{ client_addr: '' }, 422, 'client_addr'],
    [{ user: 'x' }, 400, 'user'],
  ]) {
    const r = await s.api('POST', '/compliance/erasure', { body });
    assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.param ?? r.json.error.field, field, r.text);
  }
});

test('another organisation: its chain, client address erasure, retention now and by the periodic job', async () => {
  const b = otherOrganisation();
  const old = insertRows(b.org, 3, 400, { addr: '10.9.9.9' });
  const recent = insertRows(b.org, 2, 0, { addr: '10.9.9.9' });
  const { seq } = linkRows(b.org, [...old, ...recent]);
  assert.equal(seq, 5);

  let v = await verify('', b.key);
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.rows, 5);

  /* neither organisation sees the other's chain */
  assert.notEqual((await verify()).head.hash, v.head.hash);

  let r = await s.api('POST', '/compliance/erasure', { body: { client_addr: '10.9.9.9' }, key: b.key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.rows, 5);
  assert.equal(r.json.selector, 'client_addr');
  assert.equal(sql(`SELECT count(*) FROM audit_logs WHERE org_id = '${b.org}' AND client_addr IS NOT NULL`), '0');
  assert.equal((await verify('', b.key)).verified, true, 'verified after erasure');

  r = await s.api('GET', '/compliance/retention', { key: b.key });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { audit_retention_days: null });

  r = await s.api('PUT', '/compliance/retention', { body: { audit_retention_days: 30 }, key: b.key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.audit_retention_days, 30);
  assert.equal(r.json.deleted_rows, 3);

  v = await verify('', b.key);
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.rows, 2);
  assert.equal(v.first_seq, 4);
  assert.equal(sql(`SELECT anchor_seq FROM audit_chain_heads WHERE org_id = '${b.org}'`), '3');

  /* the first rows gone without retention: the anchor does not match */
  const part = partitionOf(recent[0]);
  const saved = `chain_saved_${crypto.randomBytes(4).toString('hex')}`;
  sql(`CREATE TABLE ${saved} AS SELECT * FROM ${part} WHERE id = '${recent[0]}'; DELETE FROM ${part} WHERE id = '${recent[0]}'`);
  v = await verify('', b.key);
  assert.equal(v.first_broken.reason, 'seq_gap');
  assert.equal(v.first_broken.expected, 4);
  sql(`INSERT INTO ${part} SELECT * FROM ${saved}; DROP TABLE ${saved}`);
  assert.equal((await verify('', b.key)).verified, true);

  /* the periodic job: old rows without a chain, in a month of their own */
  const month = sql(`SELECT spendpol_audit_partition(now() - interval '500 days')`);
  const unchained = insertRows(b.org, 2, 500);
  assert.equal((await verify('', b.key)).unchained_rows, 2);
  await s.restartControld({ signal: 'SIGTERM' });
  await waitFor(() => sql(`SELECT count(*) FROM audit_logs WHERE id IN ('${unchained.join("','")}')`) === '0',
    { timeout: 20_000, message: 'the retention job deletes the old rows' });
  await waitFor(() => sql(`SELECT to_regclass('${month}') IS NULL`) === 't',
    { timeout: 20_000, message: `the emptied month ${month} is dropped` });
  v = await verify('', b.key);
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.unchained_rows, 0);

  /* the other organisation's setting is its own */
  r = await s.api('GET', '/compliance/retention');
  assert.deepEqual(r.json, { audit_retention_days: null });
});

test('SPENDPOL_AUDIT_RETENTION_MONTHS drops whole months and moves the anchor: the chain still verifies', async () => {
  const c = otherOrganisation();
  const old = insertRows(c.org, 3, 400);
  const recent = insertRows(c.org, 2, 0);
  linkRows(c.org, [...old, ...recent]);
  assert.equal((await verify('', c.key)).verified, true);

  /* what the ingest thread runs for SPENDPOL_AUDIT_RETENTION_MONTHS=12 */
  const month = partitionOf(old[0]);
  assert.ok(Number(sql('SELECT spendpol_audit_drop_months(12)')) >= 1);
  assert.equal(sql(`SELECT to_regclass('${month}') IS NULL`), 't');
  assert.equal(sql(`SELECT anchor_seq FROM audit_chain_heads WHERE org_id = '${c.org}'`), '3');

  const v = await verify('', c.key);
  assert.equal(v.verified, true, JSON.stringify(v));
  assert.equal(v.rows, 2);
  assert.equal(v.first_seq, 4);
});

test('retention: bad input names the field; null keeps everything', async () => {
  for (const [body, status] of [
    [{}, 422],
    [{ audit_retention_days: 0 }, 422],
    [{ audit_retention_days: 3651 }, 422],
    [{ audit_retention_days: '30' }, 400],
    [{ audit_retention_days: 1.5 }, 400],
  ]) {
    const r = await s.api('PUT', '/compliance/retention', { body });
    assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.param ?? r.json.error.field, 'audit_retention_days', r.text);
  }
  const r = await s.api('PUT', '/compliance/retention', { body: { audit_retention_days: 30, extra: 1 } });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.param ?? r.json.error.field, 'extra');

  const ok = await s.api('PUT', '/compliance/retention', { body: { audit_retention_days: null } });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.audit_retention_days, null);
  assert.equal(ok.json.deleted_rows, 0);
});

test('tools/spendpol-audit-verify checks an export offline (JSONL and CSV)', async () => {
  const dir = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-export-'));
  const b = otherOrganisation();
  const ids = insertRows(b.org, 3, 1, { addr: '=1+1' });
  linkRows(b.org, ids);
  const files = exportFiles(b.org, dir);

  for (const f of Object.values(files)) {
    const ok = runTool(f);
    assert.equal(ok.status, 0, ok.out);
    assert.match(ok.out, new RegExp(`OK 3 rows, org ${b.org} seq 1\\.\\.3 head [0-9a-f]{64}`));
  }

  /* a changed cost in the file: that row is named, exit 1 */
  const lines = fs.readFileSync(files.jsonl, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  lines.find((l) => l.id === ids[1]).cost_nano += 1;
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const r = runTool(bad);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, new RegExp(`${ids[1]}.*row_hash_mismatch`));
});

test('GET /audit-logs/export, CSV and JSON lines, verifies offline; a changed cell is named', async () => {
  const dir = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-export-'));
  const { key } = await s.createKey({ name: 'export' });
  await traffic(2, key);
  const v = await verify();
  assert.equal(v.verified, true, JSON.stringify(v));
  for (const format of ['jsonl', 'csv']) {
    const r = await fetch(`${s.apiURL}/audit-logs/export?format=${format}`,
      { headers: { authorization: `Bearer ${s.adminKey}` } });
    const text = await r.text();
    assert.equal(r.status, 200, text.slice(0, 500));
    const f = path.join(dir, `api.${format}`);
    fs.writeFileSync(f, text);
    const ok = runTool(f);
    assert.equal(ok.status, 0, ok.out);
    assert.ok(ok.out.includes(`OK ${v.rows} rows, org org_default seq 1..${v.head.seq} head ${v.head.hash}`), ok.out);

    /* one digit of one cost changed in the file */
    const lines = text.split(format === 'csv' ? '\r\n' : '\n');
    const i = format === 'csv' ? 1 : 0;           /* the newest row */
    const changed = format === 'csv'
      ? lines[i].replace(/^((?:"[^"]*",){12})"(\d+)"/, (m, head, cost) => `${head}"${BigInt(cost) + 1n}"`)
      : JSON.stringify({ ...JSON.parse(lines[i]), cost_nano: JSON.parse(lines[i]).cost_nano + 1 });
    assert.notEqual(changed, lines[i], 'the cost cell found');
    lines[i] = changed;
    const bad = path.join(dir, `bad.${format}`);
    fs.writeFileSync(bad, lines.join(format === 'csv' ? '\r\n' : '\n'));
    const broken = runTool(bad);
    assert.equal(broken.status, 1, broken.out);
    assert.match(broken.out, /BROKEN org org_default: row evt_\S+ chain_seq \d+: row_hash_mismatch/);
  }
});

/*
 * The export format (docs/audit.md, the contract with GET
 * /audit-logs/export), built with psql: JSONL and CSV of the org's rows.
 */
const EXPORT_COLUMNS = ['id', 'org_id', 'created_at', 'ingested_at', 'api_key_id', 'provider', 'requested_model',
  'model', 'input_tokens', 'output_tokens', 'cached_tokens', 'cache_write_tokens', 'cost_nano', 'reserved_nano',
  'saved_nano', 'status', 'cache', 'stream', 'latency_ms', 'gateway_us', 'endpoint', 'department', 'project',
  'agent_id', 'trace_id', 'span_id', 'parent_id', 'warnings', 'error_code', 'node_id', 'routed', 'route_rule',
  'attempts', 'attempt_log', 'route_note', 'template_id', 'template_version', 'guard_score', 'pii_types',
  'policy_action', 'policy_ids', 'policy_warnings', 'hallucination_score', 'shadow_key_type', 'shadow_key_fp',
  'client_addr', 'chain_seq', 'prev_hash', 'row_hash', 'subject_salt', 'subject_digest', 'erased_at'];
const TS = (c) => `to_char(${c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const exportPair = (c) => {
  if (['created_at', 'ingested_at', 'erased_at'].includes(c)) return `'${c}', ${TS(c)}`;
  if (['prev_hash', 'row_hash', 'subject_salt', 'subject_digest'].includes(c)) return `'${c}', encode(${c}, 'hex')`;
  if (c === 'guard_score') return `'${c}', to_char(guard_score, 'FM0.000')`;
  if (c === 'template_id') return `'${c}', template_id::text`;
  return `'${c}', ${c}`;
};
/* json_build_object takes at most 100 arguments: two halves */
const EXPORT_SQL = `jsonb_build_object(${EXPORT_COLUMNS.slice(0, 26).map(exportPair).join(', ')})
  || jsonb_build_object(${EXPORT_COLUMNS.slice(26).map(exportPair).join(', ')})`;
const TEXT_COLUMNS = new Set(['id', 'org_id', 'api_key_id', 'provider', 'requested_model', 'model', 'cache',
  'endpoint', 'department', 'project', 'agent_id', 'trace_id', 'span_id', 'parent_id', 'error_code', 'node_id',
  'route_rule', 'attempt_log', 'route_note', 'policy_action', 'shadow_key_type', 'shadow_key_fp', 'client_addr']);

function exportFiles(org, dir) {
  const rows = sql(`SELECT ${EXPORT_SQL} FROM audit_logs WHERE org_id = '${org}'
    ORDER BY created_at DESC, id DESC`).split('\n').map((l) => JSON.parse(l));
  const jsonl = path.join(dir, 'export.jsonl');
  fs.writeFileSync(jsonl, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const cell = (c, v) => {
    let t = v === null ? '' : Array.isArray(v) ? JSON.stringify(v) : String(v);
    if (TEXT_COLUMNS.has(c) && /^[=+\-@\t\r']/.test(t)) t = `'${t}`;
    return `"${t.replace(/"/g, '""')}"`;
  };
  const csv = path.join(dir, 'export.csv');
  fs.writeFileSync(csv, [EXPORT_COLUMNS.map((c) => `"${c}"`).join(','),
    ...rows.map((r) => EXPORT_COLUMNS.map((c) => cell(c, r[c])).join(','))].join('\r\n') + '\r\n');
  return { jsonl, csv };
}
