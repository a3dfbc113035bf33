// Issue 9, items 1, 2, 4 and 8 against the real stack, as an attacker with
// an ordinary proxy key: a path that would split the upstream request, a
// model that would inject a response header, a Spendpol key in the query
// string under every spelling, and endpoints Spendpol does not meter. The
// fixture records every request it gets: "nothing upstream" is checked on
// its record. The path and query rules themselves are unit-tested in
// tests/unit/test_lib_path.c, the catalogue in test_lib_endpoint.c.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { useStack, rawRequest, assertJsonError, sleep } from './lib/stack.mjs';
import { fixtureReply } from '../fixtures/openai-fixture.mjs';

const s = useStack();
let key;

const good = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello, governed world' }], max_tokens: 8 };

// what sp_query_key_names holds, and the same in other letter cases
const KEY_NAMES = ['key', 'api-key', 'api_key', 'apikey', 'x-api-key', 'x-goog-api-key', 'spendpol-key', 'x-spendpol-key'];
const MIXED_CASE = ['KEY', 'Key', 'Api-Key', 'API_KEY', 'ApiKey', 'X-Api-Key', 'X-Goog-Api-Key', 'Spendpol-Key', 'X-SPENDPOL-KEY', 'x-Spendpol-KEY'];

const authed = (h = {}) => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json', ...h });

/** a request that must stop at the gateway: the fixture records nothing */
async function refusedBeforeUpstream(path, { method = 'POST', body = good, headers = authed() } = {}) {
  s.fixture.clear();
  const res = await rawRequest(`${s.proxyURL}${path}`, { method, headers, body: method === 'GET' ? undefined : body });
  // a split second request would arrive after the first one's answer
  await sleep(200);
  assert.deepEqual(s.fixture.requests.map((r) => `${r.method} ${r.path}`), [],
    `${method} ${path} reached the provider (gateway answered ${res.status} ${res.text.slice(0, 200)})`);
  return res;
}

function assertInvalidPath(res, what) {
  const e = assertJsonError(res, 400, what);
  assert.equal(e.code, 'invalid_path', `${what}: ${res.text}`);
  assert.equal(e.type, 'invalid_request_error', `${what}: ${res.text}`);
  assert.doesNotMatch(e.message, /sp_key_/, `${what}: the message repeats a key`);
  return e;
}

/** a governed call still goes through, after each refusal */
async function stillWorks() {
  s.fixture.clear();
  const r = await s.client(key).chat.completions.create(good);
  assert.equal(r.choices[0].message.content, fixtureReply(good));
  assert.equal(s.fixture.completions().length, 1);
}

test('setup: a proxy key', async () => {
  ({ key } = await s.createKey({ name: 'security-path' }));
});

test('request splitting: the path from issue 9 gets 400 invalid_path and nothing reaches the provider', async () => {
  const split = '/v1/openai/models%20HTTP/1.1%0d%0aHost:%20x%0d%0a%0d%0aPOST%20/v1/chat/completions';
  assertInvalidPath(await refusedBeforeUpstream(split, { method: 'GET' }), `GET ${split}`);
  assertInvalidPath(await refusedBeforeUpstream(split), `POST ${split}`);
  await stillWorks();
});

test('request splitting: CR, LF and spaces encoded twice or three times, or in upper case, get 400 invalid_path', async () => {
  const paths = [
    '/v1/openai/models%250d%250aHost:%2520x%250d%250a%250d%250aPOST%2520/v1/chat/completions',
    '/v1/openai/models%25250d%25250aX-Injected:%252520yes',
    '/v1/openai/chat/completions%0D%0AX-Injected:%20yes',
    '/v1/openai/chat/completions%250D%250AX-Injected:yes',
    '/v1/openai/chat/completions%2520HTTP/1.1',
    '/v1/openai/chat/completions%09',
  ];
  for (const p of paths) {
    assertInvalidPath(await refusedBeforeUpstream(p), `POST ${p}`);
  }
  await stillWorks();
});

test('dot segments, encoded slashes, an authority or a scheme in the path get 400 invalid_path', async () => {
  const paths = [
    '/v1/openai/chat/%2e%2e/files',
    '/v1/openai/chat/%2E%2E/%2E%2E/batches',
    '/v1/openai/chat/%252e%252e/files',
    '/v1/openai/models/..%2ffiles',
    '/v1/openai/chat%2Fcompletions',
    '/v1/openai/models/../files',
    '/v1/openai/models/../chat/completions',
    '/v1/openai//evil.com/chat/completions',
    '/v1/openai/http://evil.com/chat/completions',
    // a key in the path would reach the provider (an Azure deployment
    // segment is forwarded) and the audit row's endpoint
    `/v1/openai/chat/${key}/completions`,
  ];
  for (const p of paths) {
    assertInvalidPath(await refusedBeforeUpstream(p), `POST ${p}`);
  }
  await stillWorks();
});

test('query string: CR and LF, raw-encoded or encoded twice, get 400 invalid_path', async () => {
  for (const q of ['x=%0d%0aX-Injected:%20yes', 'x=%250d%250a', 'a=1&b=%25250a']) {
    const p = `/v1/openai/chat/completions?${q}`;
    assertInvalidPath(await refusedBeforeUpstream(p), `POST ${p}`);
  }
  await stillWorks();
});

/**
 * A request over a bare socket: nothing between us and nginx rewrites it.
 * The socket stays open for writing (a half-close reads to nginx as a
 * client gone, 499); "Connection: close" ends the answer.
 */
function rawHttp(port, text) {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    const chunks = [];
    c.on('data', (d) => chunks.push(d));
    c.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    c.on('error', reject);
    c.setTimeout(20_000, () => { c.destroy(); reject(new Error('raw HTTP timed out')); });
    c.write(text);
  });
}

test('header injection: a model with CR LF gets 400 naming "model" and no X-Injected header', async () => {
  const bodies = [
    { ...good, model: 'gpt-4o-mini\r\nX-Injected: yes' },
    { ...good, model: 'gpt-4o-mini\nX-Injected: yes' },
    { ...good, model: 'gpt-4o-mini\r\nX-Injected: yes', stream: true },
    { ...good, model: 'gpt-4o-mini\u0000X-Injected: yes' },
  ];
  for (const body of bodies) {
    const what = `model ${JSON.stringify(body.model)}${body.stream ? ' (stream)' : ''}`;
    s.fixture.clear();
    const json = JSON.stringify(body);
    assert.ok(!/[\r\n]/.test(json), 'the body carries the CR LF JSON-escaped');
    const answer = await rawHttp(s.proxyPort,
      'POST /v1/openai/chat/completions HTTP/1.1\r\n'
      + `Host: 127.0.0.1:${s.proxyPort}\r\n`
      + `Authorization: Bearer ${key}\r\n`
      + 'Content-Type: application/json\r\n'
      + `Content-Length: ${Buffer.byteLength(json)}\r\n`
      + 'Connection: close\r\n\r\n'
      + json);
    const head = answer.slice(0, answer.indexOf('\r\n\r\n'));
    assert.doesNotMatch(head, /^x-injected:/im, `${what}: an injected response header:\n${head}`);
    assert.match(head, /^HTTP\/1\.1 400 /, `${what}: ${answer.slice(0, 600)}`);
    // the JSON error, chunked or not
    const rest = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    let e = null;
    try { e = JSON.parse(rest.slice(rest.indexOf('{'), rest.lastIndexOf('}') + 1)).error; } catch { e = null; }
    assert.ok(e && typeof e.message === 'string', `${what}: not a JSON error: ${answer.slice(0, 600)}`);
    assert.match(e.message, /\bmodel\b/, `${what}: the message does not name the field: ${e.message}`);
    if (e.param !== undefined && e.param !== null) assert.equal(e.param, 'model', what);
    await sleep(100);
    assert.equal(s.fixture.requests.length, 0, `${what}: reached the provider`);
  }
  await stillWorks();
});

test('header injection: a provider model with CR LF is escaped in X-Spendpol-Model, never copied raw', async () => {
  const json = JSON.stringify(good);
  const answer = await rawHttp(s.proxyPort,
    'POST /v1/openai/chat/completions HTTP/1.1\r\n'
    + `Host: 127.0.0.1:${s.proxyPort}\r\n`
    + `Authorization: Bearer ${key}\r\n`
    + 'Content-Type: application/json\r\n'
    + 'X-Fixture-Mode: ctlmodel\r\n'
    + `Content-Length: ${Buffer.byteLength(json)}\r\n`
    + 'Connection: close\r\n\r\n'
    + json);
  const head = answer.slice(0, answer.indexOf('\r\n\r\n'));
  assert.match(head, /^HTTP\/1\.1 200 /, answer.slice(0, 600));
  assert.doesNotMatch(head, /^x-injected:/im, `an injected response header:\n${head}`);
  assert.match(head, /^X-Spendpol-Model: gpt-4o-mini-2024-07-18%0D%0AX-Injected: yes\r?$/m, head);
  // the cost is still exact: the answer was metered like any other
  assert.match(head, /^X-Spendpol-Cost: 0\.0000\d+/m, head);
});

/** the one call the fixture got, checked for any trace of a Spendpol key */
function assertForwardedWithout(rec, expectedPath, what) {
  assert.equal(rec.path, expectedPath, `${what}: forwarded as ${rec.path}`);
  const all = JSON.stringify(rec.rawHeaders) + rec.path + rec.body;
  assert.ok(!all.includes(key), `${what}: the Spendpol key reached the provider: ${rec.path}`);
  assert.doesNotMatch(all, /sp_key_/i, `${what}: an sp_key_ reached the provider: ${rec.path}`);
  assert.equal(rec.headers.authorization, 'Bearer sk-fixture-secret', `${what}: the organisation's credential upstream`);
}

test('a Spendpol key in the query string authenticates under every spelling and never reaches the provider', async () => {
  for (const name of [...KEY_NAMES, ...MIXED_CASE]) {
    s.fixture.clear();
    const p = `/v1/openai/chat/completions?first=1&${encodeURIComponent(name)}=${key}&last=2`;
    const res = await rawRequest(`${s.proxyURL}${p}`, { headers: { 'content-type': 'application/json' }, body: good });
    assert.equal(res.status, 200, `?${name}=: ${res.status} ${res.text.slice(0, 300)}`);
    assert.equal(res.json?.choices?.[0]?.message?.content, fixtureReply(good), `?${name}=`);
    assert.equal(s.fixture.requests.length, 1, `?${name}=: one call upstream`);
    assertForwardedWithout(s.fixture.requests[0], '/v1/chat/completions?first=1&last=2', `?${name}=`);
  }
});

test('a Spendpol key in the query string is removed when the header authenticates too, and alone', async () => {
  for (const name of ['key', 'KEY', 'Api_Key', 'x-goog-api-key']) {
    s.fixture.clear();
    const res = await rawRequest(`${s.proxyURL}/v1/openai/chat/completions?${name}=${key}`, { headers: authed(), body: good });
    assert.equal(res.status, 200, `?${name}= with Authorization: ${res.status} ${res.text.slice(0, 300)}`);
    assertForwardedWithout(s.fixture.requests[0], '/v1/chat/completions', `?${name}= with Authorization`);
  }
  // under a name that is no key name, the value is still never forwarded
  s.fixture.clear();
  const res = await rawRequest(`${s.proxyURL}/v1/openai/chat/completions?a=1&token=${key}`, { headers: authed(), body: good });
  assert.equal(res.status, 200, `?token=: ${res.status} ${res.text.slice(0, 300)}`);
  assertForwardedWithout(s.fixture.requests[0], '/v1/chat/completions?a=1', '?token=');
});

test('a GET model list with ?key= is governed and forwarded without the key', async () => {
  s.fixture.clear();
  const res = await rawRequest(`${s.proxyURL}/v1/openai/models?Key=${key}`, { method: 'GET' });
  assert.equal(res.status, 200, `GET /models: ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.json?.object, 'list');
  assert.equal(s.fixture.requests.length, 1);
  assertForwardedWithout(s.fixture.requests[0], '/v1/models', 'GET /models?Key=');
});

/** waits until the proxy routes a provider: a malformed body to a governed path gets 400, not 404 */
async function waitRouted(provider, path) {
  return s.waitStable(async () => {
    const r = await rawRequest(`${s.proxyURL}/v1/${provider}${path}`, { headers: authed(), body: '{"model": ' });
    return r.status;
  }, (st) => st === 400, { message: `the proxy to route /v1/${provider}` });
}

test('ungoverned endpoints get 403 endpoint_not_governed and nothing reaches the provider', async () => {
  // anthropic pointed at the recording fixture: anything forwarded shows there
  const r = await s.api('PUT', '/providers/anthropic', { body: { api_key: 'sk-ant-fixture-secret', base_url: s.fixture.url.replace(/\/v1$/, '') } });
  assert.ok(r.status >= 200 && r.status < 300, `PUT /providers/anthropic -> ${r.status} ${r.text}`);
  await waitRouted('anthropic', '/v1/messages');

  const calls = [
    ['POST', '/v1/openai/batches', { input_file_id: 'file-abc', endpoint: '/v1/chat/completions', completion_window: '24h' }],
    ['POST', '/v1/openai/files', { purpose: 'batch' }],
    ['GET', '/v1/openai/batches'],
    ['POST', '/v1/openai/fine_tuning/jobs', { model: 'gpt-4o-mini', training_file: 'file-abc' }],
    ['POST', '/v1/openai/assistants', { model: 'gpt-4o-mini' }],
    ['GET', '/v1/openai/responses/resp_123'],
    ['DELETE', '/v1/openai/models/ft:gpt-4o-mini:org:x'],
    ['GET', '/v1/openai/chat/completions'],
    ['POST', '/v1/anthropic/v1/messages/batches', { requests: [{ custom_id: 'a', params: { model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] } }] }],
  ];
  for (const [method, path, body] of calls) {
    const res = await refusedBeforeUpstream(path, { method, body: body ?? good });
    const e = assertJsonError(res, 403, `${method} ${path}`);
    assert.equal(e.code, 'endpoint_not_governed', `${method} ${path}: ${res.text}`);
    assert.match(e.message, /allow/i, `${method} ${path}: the message says how to allow it: ${e.message}`);
  }
  await stillWorks();
});
