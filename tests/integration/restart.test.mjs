// controld killed (SIGKILL) and restarted while traffic flows: every request
// the proxy answered appears exactly once in /audit-logs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, sleep } from './lib/stack.mjs';

const s = useStack();

async function traffic(client, answered, stopAt) {
  let i = 0;
  while (Date.now() < stopAt()) {
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `restart traffic ${i++}` }], stream: i % 3 === 0 };
    try {
      const { data, response } = await client.chat.completions.create(body).withResponse();
      if (body.stream) for await (const _ of data) { /* drain */ }
      const id = response.headers.get('x-spendpol-audit-id');
      answered.push({ id, status: response.status });
    } catch (e) {
      // an error answered by the proxy still has an audit id in its headers
      const id = e?.headers?.get?.('x-spendpol-audit-id') ?? e?.headers?.['x-spendpol-audit-id'];
      answered.push({ id: id ?? null, status: e?.status ?? 0, error: e?.message });
    }
  }
}

async function run(signal) {
  const { key } = await s.createKey({ name: `restart-${signal}` });
  const client = s.client(key);
  const answered = [];
  let stop = Infinity;
  const workers = Array.from({ length: 3 }, () => traffic(client, answered, () => stop));
  await sleep(1200);
  await s.stopControld(signal);
  await sleep(800); // the proxy keeps serving on its last snapshot
  await s.startControld();
  await sleep(1200);
  stop = 0;
  await Promise.all(workers);

  const ok = answered.filter((a) => a.status === 200);
  assert.ok(ok.length >= 10, `only ${ok.length} successful requests`);
  const failures = answered.filter((a) => a.status !== 200);
  assert.deepEqual(failures, [], 'requests failed while controld restarted');
  const withId = answered.filter((a) => a.id);
  assert.equal(withId.length, answered.length, 'every answer has an X-Spendpol-Audit-Id');

  const want = new Set(withId.map((a) => a.id));
  assert.equal(want.size, withId.length, 'audit ids are unique');
  let rows = [];
  try {
    await s.waitAuditRow(withId.at(-1).id, 30_000);
    rows = await waitAll(want);
  } finally {
    rows = rows.length ? rows : await s.allAuditRows();
  }
  const counts = new Map();
  for (const r of rows) counts.set(r.id, (counts.get(r.id) ?? 0) + 1);
  const missing = [...want].filter((id) => !counts.has(id));
  const dup = [...counts].filter(([, n]) => n > 1);
  assert.deepEqual(missing, [], `${missing.length} of ${want.size} answered requests missing from /audit-logs`);
  assert.deepEqual(dup, [], 'audit rows duplicated');
}

async function waitAll(want) {
  const end = Date.now() + 30_000;
  for (;;) {
    const rows = await s.allAuditRows({ limit: 100 });
    const ids = new Set(rows.map((r) => r.id));
    if ([...want].every((id) => ids.has(id)) || Date.now() > end) return rows;
    await sleep(200);
  }
}

test('controld SIGKILL during traffic loses and duplicates no audit row', async () => {
  await run('SIGKILL');
});

test('controld SIGTERM during traffic loses and duplicates no audit row', async () => {
  await run('SIGTERM');
});
