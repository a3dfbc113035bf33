// Shadow AI (issue 14): egress logs posted to POST /shadow-ai/logs in each
// format raise one alert per client and UTC day with the services seen;
// acknowledge; filters and paging; row-level security between
// organisations; unreadable lines counted, never quoted; 413 beyond 10 MB
// or 100,000 lines; raw-key alerts from audit rows (the trigger, through
// an INSERT and a COPY into the month's partition, as ingest does); the
// tail of SPENDPOL_EGRESS_LOG, across a restart and a rotation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { useStack, newKey, waitFor, assertPaged } from './lib/stack.mjs';

const tailDir = fs.mkdtempSync(path.join(process.env.SPENDPOL_TEST_TMP || os.tmpdir(), 'spendpol-egress-'));
fs.chmodSync(tailDir, 0o755);
const tailLog = path.join(tailDir, 'dnsmasq.log');
const tailGeneric = path.join(tailDir, 'egress.tsv');
fs.writeFileSync(tailLog, '');
fs.writeFileSync(tailGeneric, '');

const s = useStack({
  env: { SPENDPOL_EGRESS_LOG: `${tailLog}:dnsmasq,${tailGeneric}:generic` },
});

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/* a time of yesterday (UTC), whole seconds: all lines of a test share its day */
const T = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000 - 86_400_000 + 3_723_000);
const DAY = T.toISOString().slice(0, 10);
const pad = (n, w = 2) => String(n).padStart(w, '0');
const clock = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
const syslogTime = (d) => `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${clock(d)}`;
const bindTime = (d) => `${pad(d.getUTCDate())}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${clock(d)}.123`;
const unix = (d) => `${Math.floor(d.getTime() / 1000)}.250`;
const uniq = () => crypto.randomBytes(2).readUInt16BE(0) % 250 + 1;

function sql(q, url = s.ownerDatabaseURL) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', q], { encoding: 'utf8' }).trim();
}

async function postLogs(text, { format, key, type = 'text/plain' } = {}) {
  const q = format ? `?format=${format}` : '';
  const r = await fetch(`${s.apiURL}/shadow-ai/logs${q}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key || s.adminKey}`, 'content-type': type },
    body: text,
  });
  const body = await r.text();
  let json = null;
  try { json = JSON.parse(body); } catch { /* not JSON */ }
  return { status: r.status, json, text: body };
}

async function alert(id, key) {
  const r = await s.api('GET', `/shadow-ai/alerts/${id}`, { key });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function list(query = '', key) {
  const r = await s.api('GET', `/shadow-ai/alerts${query}`, { key });
  assert.equal(r.status, 200, r.text);
  return r.json.data;
}

function byClient(rows, client) {
  const found = rows.filter((a) => a.client === client);
  assert.equal(found.length, 1, `one alert for ${client}: ${JSON.stringify(rows)}`);
  return found[0];
}

/** a second organisation with its own admin key */
function otherOrganisation() {
  const org = `org_shadow_${crypto.randomBytes(4).toString('hex')}`;
  const key = newKey();
  const hash = crypto.createHash('sha256').update(key).digest('hex');
  sql(`INSERT INTO orgs (id, name) VALUES ('${org}', 'shadow B');
    INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, scopes)
      VALUES ('key_${crypto.randomBytes(12).toString('hex')}', '${org}', 'shadow B admin',
              '\\x${hash}', '${key.slice(0, 12)}', ARRAY['admin'])`);
  return { org, key };
}

test('dnsmasq lines: one alert per client and day, with its services and domains', async () => {
  const n = uniq();
  const a = `10.1.${n}.7`, b = `10.1.${n}.9`;
  const t = syslogTime(T);
  const lines = [
    `${t} dnsmasq[812]: query[A] api.openai.com from ${a}`,
    `${t} dnsmasq[812]: forwarded api.openai.com to 1.1.1.1`,
    `${t} dnsmasq[812]: reply api.openai.com is 162.159.140.245`,
    `${t} dnsmasq[812]: query[AAAA] claude.ai from ${a}`,
    `${t} dnsmasq[812]: query[A] example.com from ${a}`,
    `${t} dnsmasq[812]: query[A] notopenai.com from ${b}`,
    `${t} gw dnsmasq[812]: 7 ${b}/5353 query[HTTPS] chatgpt.com from ${b}`,
    `${t} dnsmasq[812]: cached chatgpt.com is <CNAME>`,
  ];
  const r = await postLogs(lines.join('\n') + '\n', { format: 'dnsmasq' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual({ ...r.json, alerts: r.json.alerts.length }, {
    lines: 8, queries: 5, ai_queries: 3, unreadable: 0, first_unreadable_line: null, alerts: 2,
  });
  for (const id of r.json.alerts) assert.match(id, /^sai_[0-9a-f]{24}$/);

  const rows = await list(`?client=${a}`);
  const x = byClient(rows, a);
  assert.equal(x.source, 'egress');
  assert.equal(x.day, DAY);
  assert.deepEqual(x.services, ['Claude', 'OpenAI']);
  assert.deepEqual(x.domains, ['api.openai.com', 'claude.ai']);
  assert.deepEqual(x.key_types, []);
  assert.equal(x.hits, 2);
  assert.equal(x.status, 'open');
  assert.equal(x.first_seen, T.toISOString());
  assert.equal(x.last_seen, T.toISOString());
  assert.ok(r.json.alerts.includes(x.id));

  const y = byClient(await list(`?client=${b}`), b);
  assert.deepEqual(y.services, ['ChatGPT']);
  assert.equal(y.hits, 1);

  // the same lines again: the same alerts, counts added, arrays as sets
  const again = await postLogs(lines.join('\n'), { format: 'dnsmasq' });
  assert.equal(again.status, 200, again.text);
  assert.deepEqual(again.json.alerts, r.json.alerts);
  const x2 = await alert(x.id);
  assert.equal(x2.hits, 4);
  assert.deepEqual(x2.services, ['Claude', 'OpenAI']);
});

test('BIND, Squid and generic lines, and auto detection of a mixed log', async () => {
  const n = uniq();
  const later = new Date(T.getTime() + 60_000);
  const bind = [
    `${bindTime(T)} queries: info: client @0x7f3c2c0a8b68 10.2.${n}.1#5353 (api.anthropic.com): query: api.anthropic.com IN A +E(0) (10.0.0.1)`,
    `${bindTime(later)} client 10.2.${n}.1#41000 (Generativelanguage.googleapis.com): query: Generativelanguage.googleapis.com IN AAAA + (10.0.0.1)`,
    `${bindTime(T)} lame-servers: info: host unreachable resolving 'x/A/IN'`,
  ];
  let r = await postLogs(bind.join('\n'), { format: 'bind' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.ai_queries, 2);
  assert.equal(r.json.alerts.length, 1);
  let x = await alert(r.json.alerts[0]);
  assert.equal(x.client, `10.2.${n}.1`);
  assert.deepEqual(x.services, ['Anthropic', 'Google Gemini API']);
  // BIND's times have milliseconds (bindTime writes .123)
  assert.equal(x.first_seen, new Date(T.getTime() + 123).toISOString());
  assert.equal(x.last_seen, new Date(later.getTime() + 123).toISOString());

  const squid = [
    `${unix(T)}     45 10.3.${n}.1 TCP_TUNNEL/200 3456 CONNECT api.mistral.ai:443 - HIER_DIRECT/1.2.3.4 -`,
    `${unix(T)} 12 10.3.${n}.1 TCP_MISS/200 812 GET http://user:pw@copilot-proxy.githubusercontent.com/v1/x?token=abc - HIER_DIRECT/1.2.3.4 text/html`,
    `${unix(T)} 3 10.3.${n}.2 TCP_TUNNEL/200 1 CONNECT www.example.org:443 - HIER_DIRECT/1.2.3.4 -`,
  ];
  r = await postLogs(squid.join('\n'), { format: 'squid' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual([r.json.queries, r.json.ai_queries, r.json.alerts.length], [3, 2, 1]);
  x = await alert(r.json.alerts[0]);
  assert.deepEqual(x.services, ['GitHub Copilot', 'Mistral AI']);
  assert.deepEqual(x.domains, ['api.mistral.ai', 'copilot-proxy.githubusercontent.com']);

  // generic as JSON, ISO and unix times, tabs, URLs
  r = await s.api('POST', '/shadow-ai/logs', {
    body: {
      format: 'generic',
      lines: [
        `${T.toISOString()} laptop-${n} https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke`,
        `${unix(T)}\tlaptop-${n}\tcursor.sh:443`,
        `# time client host`,
      ],
    },
  });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual([r.json.lines, r.json.queries, r.json.ai_queries], [3, 2, 2]);
  x = await alert(r.json.alerts[0]);
  assert.equal(x.client, `laptop-${n}`);
  assert.deepEqual(x.services, ['Amazon Bedrock', 'Cursor']);

  // auto: one post holding every format
  r = await postLogs([
    `${syslogTime(T)} dnsmasq[1]: query[A] perplexity.ai from 10.4.${n}.1`,
    bind[0].replace(`10.2.${n}.1`, `10.4.${n}.1`),
    squid[0].replace(`10.3.${n}.1`, `10.4.${n}.1`),
    `${unix(T)} 10.4.${n}.1 huggingface.co`,
  ].join('\r\n'));
  assert.equal(r.status, 200, r.text);
  assert.deepEqual([r.json.queries, r.json.ai_queries, r.json.unreadable], [4, 4, 0]);
  assert.equal(r.json.alerts.length, 1);
  x = await alert(r.json.alerts[0]);
  assert.deepEqual(x.services, ['Anthropic', 'Hugging Face', 'Mistral AI', 'Perplexity']);
  assert.equal(x.hits, 4);
});

test('unreadable lines are counted and numbered, never quoted', async () => {
  const n = uniq();
  const r = await postLogs([
    `${unix(T)} 10.5.${n}.1 api.openai.com`,
    'this is no log line secret-token-9f8e7d',
    '',
    `${unix(T)} 10.5.${n}.1`,
    `${unix(T)} 10.5.${n}.1 api.openai.com/secret-token-9f8e7d`,
  ].join('\n'), { format: 'generic' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.lines, 5);
  assert.equal(r.json.queries, 2);
  assert.equal(r.json.unreadable, 2);
  assert.equal(r.json.first_unreadable_line, 2);
  assert.doesNotMatch(r.text, /secret-token|no log line/);

  const bad = await postLogs('x', { format: 'syslog' });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.error.field, 'format');

  const badJson = await s.api('POST', '/shadow-ai/logs', { body: { lines: ['a', 3] } });
  assert.equal(badJson.status, 400, badJson.text);
  assert.match(badJson.json.error.message, /lines\[1\]/);
  const missing = await s.api('POST', '/shadow-ai/logs', { body: { format: 'auto' } });
  assert.equal(missing.status, 422, missing.text);
  assert.equal(missing.json.error.field, 'lines');
});

test('413 beyond 10 MB or 100,000 lines', async () => {
  const big = `${unix(T)} 10.6.0.1 example.com\n`.repeat(Math.ceil((10 * 1024 * 1024 + 1) / 36));
  let r = await postLogs(big, { format: 'generic' });
  assert.equal(r.status, 413, r.text.slice(0, 200));
  assert.equal(r.json.error.code, 'body_too_large');

  r = await postLogs('\n'.repeat(100_001));
  assert.equal(r.status, 413, r.text);
  assert.equal(r.json.error.code, 'too_many_lines');

  r = await s.api('POST', '/shadow-ai/logs', { body: { lines: Array(100_001).fill('') } });
  assert.equal(r.status, 413, r.text.slice(0, 200));

  // exactly 100,000 lines pass, in one transaction
  r = await postLogs(`${unix(T)} 10.6.0.2 api.groq.com\n`.repeat(100_000), { format: 'generic' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.ai_queries, 100_000);
  assert.equal((await alert(r.json.alerts[0])).hits, 100_000);
});

test('acknowledge is idempotent; later hits keep the acknowledgement', async () => {
  const n = uniq();
  const line = `${unix(T)} 10.7.${n}.1 api.deepseek.com`;
  let r = await postLogs(line, { format: 'generic' });
  const id = r.json.alerts[0];

  r = await s.api('POST', `/shadow-ai/alerts/${id}/acknowledge`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, 'acknowledged');
  assert.match(r.json.acknowledged_by, /^key_/);
  const at = r.json.acknowledged_at;
  assert.ok(at);

  r = await s.api('POST', `/shadow-ai/alerts/${id}/acknowledge`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.acknowledged_at, at);

  r = await postLogs(line, { format: 'generic' });
  assert.deepEqual(r.json.alerts, [id]);
  const x = await alert(id);
  assert.equal(x.status, 'acknowledged');
  assert.equal(x.hits, 2);

  for (const bad of ['sai_nope', 'alr_000000000000000000000000', `sai_${'0'.repeat(24)}`]) {
    r = await s.api('POST', `/shadow-ai/alerts/${bad}/acknowledge`);
    assert.equal(r.status, 404, r.text);
    assert.equal(r.json.error.code, 'shadow_alert_not_found');
    r = await s.api('GET', `/shadow-ai/alerts/${bad}`);
    assert.equal(r.status, 404, r.text);
  }
});

test('filters and paging', async () => {
  const n = uniq();
  const r = await postLogs([
    `${unix(T)} 10.8.${n}.1 api.openai.com`,
    `${unix(T)} 10.8.${n}.2 api.cohere.com`,
    `${unix(new Date(T.getTime() - 86_400_000))} 10.8.${n}.1 api.openai.com`,
  ].join('\n'), { format: 'generic' });
  assert.equal(r.json.alerts.length, 3);

  const mine = await list(`?client=10.8.${n}.1`);
  assert.equal(mine.length, 2);
  assert.ok(mine[0].last_seen > mine[1].last_seen, 'newest last_seen first');

  const cohere = await list('?service=COHERE&source=egress&status=open');
  assert.ok(cohere.some((a) => a.client === `10.8.${n}.2`));
  assert.ok(cohere.every((a) => a.services.includes('Cohere')));

  const from = `${DAY}T00:00:00Z`;
  const day = await list(`?client=10.8.${n}.1&from=${from}&to=${DAY}T23:59:59Z`);
  assert.deepEqual(day.map((a) => a.day), [DAY]);
  assert.deepEqual(await list(`?client=10.8.${n}.1&to=${from}`).then((x) => x.length), 1);
  assert.deepEqual(await list('?source=raw_key&client=10.8.0.0'), []);

  for (const q of ['source=dns', 'status=closed', 'from=yesterday', 'to=2026-13-01T00:00:00Z', 'client=']) {
    const bad = await s.api('GET', `/shadow-ai/alerts?${q}`);
    assert.equal(bad.status, 400, `${q}: ${bad.text}`);
  }
  await assertPaged(s, '/shadow-ai/alerts', { badFilter: 'status=bogus' });
});

test('organisations see only their own alerts', async () => {
  const other = otherOrganisation();
  const client = `10.9.${uniq()}.1`;
  const line = `${unix(T)} ${client} api.openai.com`;

  const mine = await postLogs(line, { format: 'generic' });
  const theirs = await postLogs(line + '\n' + line, { format: 'generic', key: other.key });
  assert.equal(theirs.status, 200, theirs.text);
  assert.notDeepEqual(theirs.json.alerts, mine.json.alerts);

  const seen = await list(`?client=${client}`, other.key);
  assert.deepEqual(seen.map((a) => a.id), theirs.json.alerts);
  assert.equal(seen[0].hits, 2);
  assert.equal((await alert(mine.json.alerts[0])).hits, 1);

  let r = await s.api('GET', `/shadow-ai/alerts/${mine.json.alerts[0]}`, { key: other.key });
  assert.equal(r.status, 404, r.text);
  r = await s.api('POST', `/shadow-ai/alerts/${mine.json.alerts[0]}/acknowledge`, { key: other.key });
  assert.equal(r.status, 404, r.text);
  assert.equal((await alert(mine.json.alerts[0])).status, 'open');
  assert.ok((await list('', other.key)).every((a) => a.client === client));
});

test('raw-key audit rows raise one alert per client and day (INSERT and COPY)', async () => {
  const client = `10.10.${uniq()}.1`;
  const at = new Date().toISOString();
  const evt = () => `evt_${crypto.randomBytes(14).toString('hex')}`;
  const e1 = evt();
  const asSystem = (q) => sql(`SET ROLE spendpol_system; ${q}`, s.databaseURL);

  asSystem(`INSERT INTO audit_logs (id, org_id, created_at, status, shadow_key_type, shadow_key_fp, client_addr)
    VALUES ('${e1}', 'org_default', '${at}', 401, 'openai', 'fp_0123456789abcdef', '${client}')`);
  // read twice from the journal: ingest's dedupe inserts nothing, so no second hit
  asSystem(`INSERT INTO audit_logs (id, org_id, created_at, status, shadow_key_type, shadow_key_fp, client_addr)
    VALUES ('${e1}', 'org_default', '${at}', 401, 'openai', 'fp_0123456789abcdef', '${client}')
    ON CONFLICT DO NOTHING`);
  // ingest COPYs into the month's partition
  const part = asSystem(`SELECT spendpol_audit_partition('${at}')`).split('\n').pop();
  execFileSync('psql', [s.databaseURL, '-v', 'ON_ERROR_STOP=1', '-qc',
    `SET ROLE spendpol_system; COPY ${part} (id, org_id, created_at, status, shadow_key_type, shadow_key_fp, client_addr) FROM STDIN`],
  { input: `${evt()}\torg_default\t${at}\t401\tanthropic\tfp_fedcba9876543210\t${client}\n`
         + `${evt()}\torg_default\t${at}\t200\t\\N\t\\N\t${client}\n` });

  const rows = await list(`?client=${client}&source=raw_key`);
  assert.equal(rows.length, 1, JSON.stringify(rows));
  const x = rows[0];
  assert.equal(x.hits, 2);
  assert.deepEqual(x.key_types, ['anthropic', 'openai']);
  assert.deepEqual(x.key_fps, ['fp_0123456789abcdef', 'fp_fedcba9876543210']);
  assert.deepEqual(x.domains, []);
  assert.equal(x.day, at.slice(0, 10));
  assert.equal((await list(`?client=${client}&service=OpenAI`)).length, 1);
});

test('the tail reads SPENDPOL_EGRESS_LOG from its last offset, across a restart and a rotation', async () => {
  const n = uniq();
  const now = new Date();
  const client = `10.11.${n}.1`;
  fs.appendFileSync(tailLog, `${syslogTime(now)} dnsmasq[1]: query[A] api.openai.com from ${client}\n`
    + `${syslogTime(now)} dnsmasq[1]: query[A] claude.ai from ${client}\n`);
  fs.appendFileSync(tailGeneric, `${unix(now)}\tlaptop-tail-${n}\tgemini.google.com\n`);

  const get = async () => (await list(`?client=${client}`))[0];
  await waitFor(async () => (await get())?.hits === 2, { timeout: 15_000, message: 'the tail' });
  await waitFor(async () => (await list(`?client=laptop-tail-${n}`)).length === 1,
    { timeout: 15_000, message: 'the second file' });

  // a partial line waits for its end
  fs.appendFileSync(tailLog, `${syslogTime(now)} dnsmasq[1]: query[A] api.mis`);
  await new Promise((r) => setTimeout(r, 1500));
  fs.appendFileSync(tailLog, `tral.ai from ${client}\n`);
  await waitFor(async () => (await get())?.hits === 3, { timeout: 15_000, message: 'the partial line' });
  assert.deepEqual((await get()).services, ['Claude', 'Mistral AI', 'OpenAI']);

  // a restart neither loses nor doubles
  await s.restartControld();
  fs.appendFileSync(tailLog, `${syslogTime(now)} dnsmasq[1]: query[A] x.ai from ${client}\n`);
  await waitFor(async () => (await get())?.hits === 4, { timeout: 20_000, message: 'after the restart' });

  // rotation: a new file under the same name is read from its start
  fs.renameSync(tailLog, `${tailLog}.1`);
  fs.writeFileSync(tailLog, `${syslogTime(now)} dnsmasq[1]: query[A] poe.com from ${client}\n`);
  await waitFor(async () => (await get())?.hits === 5, { timeout: 20_000, message: 'after the rotation' });
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await get()).hits, 5);
});

test('raw-key journal lines become one alert through ingest, a line read twice counted once', async () => {
  const client = `10.12.${uniq()}.1`;
  const base = { v: 1, ts_ms: Date.now(), org_id: 'org_default', provider: 'openai', model: 'gpt-4o', status: 401 };
  const ids = [1, 2, 3].map(() => `evt_${crypto.randomBytes(8).toString('hex')}`);
  const lines = [
    { ...base, id: ids[0], shadow_key_type: 'openai', shadow_key_fp: 'fp_00000000000000aa', client_addr: client },
    { ...base, id: ids[1], shadow_key_type: 'google', shadow_key_fp: 'fp_00000000000000bb', client_addr: client },
    { ...base, id: ids[2], status: 200, client_addr: client },
  ];
  fs.appendFileSync(s.journalPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  await s.waitAuditRows(ids);
  // the first line again, as after a crash before the offset was stored
  fs.appendFileSync(s.journalPath, `${JSON.stringify(lines[0])}\n`);
  const again = `evt_${crypto.randomBytes(8).toString('hex')}`;
  fs.appendFileSync(s.journalPath, `${JSON.stringify({ ...base, id: again, status: 200 })}\n`);
  await s.waitAuditRows([again]);

  const rows = await list(`?client=${client}`);
  assert.equal(rows.length, 1, JSON.stringify(rows));
  assert.equal(rows[0].source, 'raw_key');
  assert.equal(rows[0].hits, 2);
  assert.deepEqual(rows[0].key_types, ['google', 'openai']);
  assert.deepEqual(rows[0].key_fps, ['fp_00000000000000aa', 'fp_00000000000000bb']);
  assert.equal(rows[0].day, new Date(base.ts_ms).toISOString().slice(0, 10));
});
