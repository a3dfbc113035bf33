// The fixture provider itself, driven directly by the official openai client:
// if these fail, every gateway test's expectations are wrong too.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import {
  startFixture, fixtureUsage, fixtureReply, fixtureModel,
} from '../fixtures/openai-fixture.mjs';

let fx;
let client;

before(async () => {
  fx = await startFixture({ expectedKey: 'sk-fixture-secret' });
  client = new OpenAI({ baseURL: fx.url, apiKey: 'sk-fixture-secret', maxRetries: 0, timeout: 10_000 });
});
after(async () => { await fx?.close(); });

const messages = [{ role: 'user', content: 'Say héllo in three words, please.' }];

test('fixture: non-streaming completion has OpenAI shape and deterministic usage', async () => {
  const body = { model: 'gpt-4o-mini', messages, max_tokens: 20 };
  const { data, response } = await client.chat.completions.create(body).withResponse();
  assert.equal(response.status, 200);
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.model, 'gpt-4o-mini-2024-07-18');
  assert.equal(data.choices[0].message.content, fixtureReply(body));
  assert.deepEqual(data.usage, fixtureUsage(body));
  assert.equal(data.usage.prompt_tokens, Math.ceil([...messages[0].content].length / 4));
  assert.equal(data.usage.completion_tokens, 20);
  const r = fx.completions().at(-1);
  assert.equal(r.headers.authorization, 'Bearer sk-fixture-secret');
  assert.equal(r.json.model, 'gpt-4o-mini');
});

test('fixture: streaming concatenates to the same text, usage chunk on request', async () => {
  const body = { model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true } };
  const stream = await client.chat.completions.create(body);
  let text = '';
  let usage = null;
  let chunks = 0;
  let finish = null;
  for await (const c of stream) {
    chunks++;
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.choices.length) {
      text += c.choices[0].delta?.content ?? '';
      finish = c.choices[0].finish_reason ?? finish;
    }
    if (c.usage) usage = c.usage;
  }
  assert.ok(chunks > 5, `got ${chunks} chunks`);
  assert.equal(text, fixtureReply(body));
  assert.match(text, /Héllo wörld ✓/);
  assert.equal(finish, 'stop');
  assert.deepEqual(usage, fixtureUsage(body));
});

test('fixture: stream without include_usage has no usage chunk', async () => {
  const body = { model: 'gpt-4o', messages, stream: true };
  const stream = await client.chat.completions.create(body);
  let text = '';
  for await (const c of stream) {
    assert.equal(c.usage, undefined);
    assert.equal(c.model, fixtureModel('gpt-4o'));
    text += c.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, fixtureReply(body));
});

test('fixture: raw SSE bytes arrive in awkward pieces (split UTF-8, split lines)', async () => {
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true } });
  const { headers, parts } = await new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: fx.port, path: '/v1/chat/completions', method: 'POST',
      headers: { authorization: 'Bearer sk-fixture-secret', 'content-type': 'application/json' },
    }, (res) => {
      const p = [];
      res.on('data', (d) => p.push(Buffer.from(d)));
      res.on('end', () => resolve({ headers: res.headers, parts: p }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.match(headers['content-type'], /^text\/event-stream/);
  assert.ok(parts.length > 10, `only ${parts.length} reads`);
  // at least one read ends inside a multi-byte UTF-8 character
  const splitUtf8 = parts.some((p) => {
    for (let i = p.length - 1, n = 0; i >= 0 && n < 4; i--, n++) {
      if ((p[i] & 0xc0) === 0xc0) return (p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : 2) > n + 1;
      if ((p[i] & 0xc0) !== 0x80) return false;
    }
    return false;
  });
  assert.ok(splitUtf8, 'no read split a UTF-8 character');
  const all = Buffer.concat(parts).toString('utf8');
  assert.ok(all.startsWith('data: {'));
  assert.ok(all.endsWith('data: [DONE]\n\n'));
  assert.match(all, /"choices":\[\],"usage":\{"prompt_tokens"/);
  for (const ev of all.split('\n\n').filter(Boolean)) assert.match(ev, /^data: /);
});

test('fixture: wrong key -> 401 AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL: fx.url, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: 'gpt-4o-mini', messages }), OpenAI.AuthenticationError);
});

test('fixture: error modes', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'fixture-500', messages }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 500,
  );
  const r = await fetch(`${fx.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk-fixture-secret', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'fixture-nonjson', messages }),
  });
  assert.equal(r.status, 200);
  await assert.rejects(async () => JSON.parse(await r.text()));
  await assert.rejects(async () => {
    const s = await client.chat.completions.create({ model: 'fixture-reset', messages, stream: true });
    // eslint-disable-next-line no-unused-vars
    for await (const _ of s) { /* drain */ }
  });
  const rr = await fetch(`http://127.0.0.1:${fx.port}/__requests`);
  const list = await rr.json();
  assert.ok(list.length >= 3);
  assert.ok(list.every((x) => typeof x.method === 'string' && typeof x.path === 'string'));
});
