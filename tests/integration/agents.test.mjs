// Agents: a paused agent's keys are refused on every worker within a
// second (403 agent_paused, which the SDKs do not retry); resume restores
// them; who paused and resumed is recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useStack, waitFor, assertPaged } from './lib/stack.mjs';

const s = useStack();

async function ask(key) {
  try {
    const { response } = await s.client(key).chat.completions
      .create({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    return { status: response.status };
  } catch (e) {
    return { status: e.status, code: e.code, error: e };
  }
}

test('pause refuses the agent within a second, resume restores it, both audited', async () => {
  const created = await s.api('POST', '/agents', { body: { name: 'nightly crawler' } });
  assert.equal(created.status, 201, created.text);
  const agent = created.json;
  assert.match(agent.id, /^agt_/);
  assert.equal(agent.state, 'active');

  const { key } = await s.createKey({ name: 'crawler key', agent_id: agent.id });
  assert.equal((await ask(key)).status, 200);

  const paused = await s.api('POST', `/agents/${agent.id}/pause`);
  assert.equal(paused.status, 200, paused.text);
  assert.equal(paused.json.state, 'paused');
  const pausedAt = Date.now();

  const refused = await s.waitStable(() => ask(key), (r) => r.status === 403,
    { times: 6, timeout: 3000, message: 'every worker to refuse the paused agent' });
  assert.ok(Date.now() - pausedAt < 1500, `refused after ${Date.now() - pausedAt} ms`);
  assert.equal(refused.code, 'agent_paused');
  assert.ok(refused.error instanceof OpenAI.PermissionDeniedError);

  // another agent's keys and keys without an agent are not affected
  const { key: other } = await s.createKey({ name: 'no agent' });
  assert.equal((await ask(other)).status, 200);

  const resumed = await s.api('POST', `/agents/${agent.id}/resume`);
  assert.equal(resumed.status, 200, resumed.text);
  await s.waitStable(() => ask(key), (r) => r.status === 200,
    { times: 6, timeout: 3000, message: 'every worker to serve the resumed agent' });

  const got = await s.api('GET', `/agents/${agent.id}`);
  assert.equal(got.status, 200);
  const actions = got.json.events.map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a === 'paused' || a === 'resumed'), ['paused', 'resumed']);
  for (const e of got.json.events) assert.match(e.by ?? '', /^key_/, JSON.stringify(e));

  // the refused requests are in the audit log with their reason
  await waitFor(async () => (await s.allAuditRows({ limit: 200 }))
    .some((r) => r.error_code === 'agent_paused' && r.status === 403),
  { timeout: 5000, message: 'an audit row for the refused call' });
});

test('a key cannot name an agent that does not exist', async () => {
  const r = await s.api('POST', '/api-keys', { body: { name: 'x', agent_id: 'agt_000000000000000000000000' } });
  assert.equal(r.status, 422, r.text);
  assert.equal(r.json.error.field, 'agent_id');
});

test('GET /agents pages newest first with a cursor, also filtered by state', async () => {
  const agents = [];
  for (const name of ['page a', 'page b', 'page c']) {
    const r = await s.api('POST', '/agents', { body: { name } });
    assert.equal(r.status, 201, r.text);
    agents.push(r.json.id);
  }
  for (const id of [agents[0], agents[2]]) {
    assert.equal((await s.api('POST', `/agents/${id}/pause`)).status, 200);
  }
  assert.deepEqual(await assertPaged(s, '/agents', { badFilter: 'state=bogus' }), [agents[2], agents[1]]);
  assert.deepEqual(await assertPaged(s, '/agents?state=paused'), [agents[2], agents[0]]);
  assert.equal((await assertPaged(s, '/agents?state=active'))[0], agents[1]);
});
