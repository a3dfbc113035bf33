// Upstream keepalive: governed requests reuse idle connections to the
// provider (kept per nginx worker, keyed by address, scheme and host name),
// survive the provider closing them, respect the idle timeout and the
// requests-per-connection limit, and reach providers by host name through
// nginx's resolver (a DNS fixture here), failing over between a name's
// addresses. A name that does not resolve is a JSON 502.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import {
  Stack, IS_SAN, sleep, waitFor, rawRequest, assertJsonError,
} from './lib/stack.mjs';
import { startFixture, fixtureReply } from '../fixtures/openai-fixture.mjs';
import { startDnsFixture } from '../fixtures/dns-fixture.mjs';

const SLOW = IS_SAN ? 3 : 1;
const WORKERS = 2; // scripts/lib/stack.sh: worker_processes 2
const MAX_REQUESTS = 8; // spendpol_upstream_keepalive_requests, set below
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

const s = new Stack({ provider: false });
const started = []; // fixtures this file starts besides the stack's own
let dns;
let fxA;
let port;
let key;

before(async () => {
  dns = await startDnsFixture({
    records: {
      'alpha.test': '127.0.0.1',
      'beta.test': '127.0.0.1',
      // nothing listens on 127.0.0.3: connections to it are refused
      'two.test': ['127.0.0.3', '127.0.0.1'],
    },
  });
  s.opts.nginxHttp = `resolver 127.0.0.1:${dns.port}; `
    + `spendpol_upstream_keepalive_requests ${MAX_REQUESTS}; `
    + 'spendpol_upstream_keepalive_timeout 2s;';
  try {
    await s.start();
  } catch (e) {
    s.failed = true;
    throw e;
  }
  fxA = s.fixture;
  port = fxA.port;
  // two providers on one address, under two names
  await s.setProvider({ name: 'openai', base_url: `http://alpha.test:${port}/v1` });
  await s.setProvider({ name: 'mistral', base_url: `http://beta.test:${port}` });
  ({ key } = await s.createKey({ name: 'keepalive' }));
}, { timeout: 180_000 * SLOW });

after(async () => {
  const alive = setInterval(() => {}, 1000);
  let problems;
  try {
    for (const f of started) await f.close();
    problems = await s.stop();
    await dns?.close();
  } finally { clearInterval(alive); }
  if (problems.length) {
    assert.fail(`problems in the stack's logs (${s.dataDir}):\n${problems.join('\n\n')}`);
  }
}, { timeout: 120_000 });

const MODEL = { openai: 'gpt-4o-mini', mistral: 'mistral-small-latest' };

function body(provider, content, extra = {}) {
  return { model: MODEL[provider], messages: [{ role: 'user', content }], max_tokens: 5, ...extra };
}

/*
 * The chat endpoint as each SDK sends it: OpenAI's base URL ends in /v1,
 * Mistral's does not (its SDK adds /v1 to the path). The fixture answers
 * both /chat/completions and /v1/chat/completions.
 */
const chatPath = (provider) => `/v1/${provider}${provider === 'mistral' ? '/v1' : ''}/chat/completions`;

/** POST .../chat/completions through the gateway; fresh: on a new client connection (any worker) */
function chat(provider, b, { fresh = false } = {}) {
  return rawRequest(`${s.proxyURL}${chatPath(provider)}`, {
    headers: {
      authorization: `Bearer ${key}`, 'content-type': 'application/json', ...(fresh ? { connection: 'close' } : {}),
    },
    body: b,
  });
}

/** POST .../chat/completions on the agent's client connection: {status, json, text} */
function chatOn(agent, provider, b) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(b));
    const req = http.request(`${s.proxyURL}${chatPath(provider)}`, {
      method: 'POST',
      agent,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': data.length },
    }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { json = null; }
        resolve({ status: res.statusCode, json, text });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** the assistant text of an OpenAI SSE body */
function streamedText(text) {
  return text.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
    .map((l) => JSON.parse(l.slice(6))).map((e) => e.choices?.[0]?.delta?.content ?? '').join('');
}

function errorLog() {
  return fs.readFileSync(path.join(s.logs, 'error.log'), 'utf8');
}

/**
 * Points the mistral provider at url and waits until every worker uses it:
 * pred(response) holds for answers on fresh client connections in a row.
 */
async function setMistral(url, pred) {
  await s.setProvider({ name: 'mistral', base_url: url });
  return s.waitStable(() => chat('mistral', body('mistral', 'which one?'), { fresh: true }), pred,
    { message: `mistral at ${url}`, timeout: 10_000 * SLOW });
}

test('sequential requests share upstream connections: one per worker, at most spendpol_upstream_keepalive_requests each', async () => {
  const c0 = fxA.connections.length;
  const r0 = fxA.requests.length;
  for (let i = 0; i < 20; i++) {
    const b = body('openai', `sequential ${i}`);
    const r = await chat('openai', b);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, fixtureReply(b));
    assert.ok(r.headers.get('x-spendpol-cost'), 'X-Spendpol-Cost');
  }
  const reqs = fxA.requests.slice(r0);
  assert.equal(reqs.length, 20);
  const opened = fxA.connections.length - c0;
  assert.ok(opened <= WORKERS * Math.ceil(20 / MAX_REQUESTS),
    `20 sequential requests opened ${opened} upstream connections`);
  for (const c of fxA.connections) {
    assert.ok(c.requests <= MAX_REQUESTS, `a connection carried ${c.requests} requests`);
  }
  for (const q of reqs) {
    assert.equal(q.headers.host, `alpha.test:${port}`, 'Host: the base URL\'s host and port');
    assert.equal(q.headers.connection, undefined, 'no "Connection: close" upstream');
  }
});

test('streamed requests reuse upstream connections too', async () => {
  const c0 = fxA.connections.length;
  for (let i = 0; i < 10; i++) {
    const b = body('openai', `stream ${i}`, { stream: true });
    const r = await chat('openai', b);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type'), /text\/event-stream/);
    assert.equal(streamedText(r.text), fixtureReply(b));
    assert.match(r.text, /data: \[DONE\]/);
  }
  const opened = fxA.connections.length - c0;
  assert.ok(opened <= WORKERS * Math.ceil(10 / MAX_REQUESTS), `10 streams opened ${opened} upstream connections`);
});

test('the provider closing idle connections between requests: the next request is still answered', async () => {
  const c0 = fxA.connections.length;
  for (let i = 0; i < 10; i++) {
    const r = await chat('openai', body('openai', `closed under us ${i}`));
    assert.equal(r.status, 200, `request ${i}: ${r.text}`);
    fxA.closeIdleConnections();
  }
  const opened = fxA.connections.length - c0;
  assert.ok(opened >= 5, `the fixture closed its idle connections, so new ones were opened (${opened})`);
});

test('a connection the provider closed while the worker was busy is not reused: the request is still answered', async () => {
  // one client connection, so both requests go to the worker that keeps
  // the first one's upstream connection
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const first = await chatOn(agent, 'openai', body('openai', 'first'));
    assert.equal(first.status, 200, first.text);
    const workers = s.nginxWorkerPids();
    let second;
    for (const pid of workers) process.kill(pid, 'SIGSTOP');
    try {
      // the worker sees the request before the provider's FIN: it must
      // not send a POST on a connection the provider has closed
      second = chatOn(agent, 'openai', body('openai', 'second'));
      await sleep(200);
      fxA.closeIdleConnections();
      await sleep(200);
    } finally {
      for (const pid of workers) process.kill(pid, 'SIGCONT');
    }
    const r = await second;
    assert.equal(r.status, 200, r.text);
  } finally {
    agent.destroy();
  }
});

test('an idle upstream connection is closed after spendpol_upstream_keepalive_timeout', async () => {
  const r0 = fxA.requests.length;
  const r = await chat('openai', body('openai', 'then idle'));
  assert.equal(r.status, 200, r.text);
  const remotePort = fxA.requests[r0].remotePort;
  const conn = fxA.connections.findLast((c) => c.remotePort === remotePort);
  assert.ok(conn?.open, 'the connection stays open after the response');
  // the fixture keeps idle connections 75 s: nginx closes first (2 s)
  await waitFor(() => !conn.open, { timeout: 4500, interval: 50, message: 'nginx to close the idle connection (2 s)' });
  assert.ok(conn.peerClosed, 'nginx closed it, not the fixture');
});

test('two providers on one address under different host names never share a connection', async () => {
  const r0 = fxA.requests.length;
  for (let i = 0; i < 8; i++) {
    for (const p of ['openai', 'mistral']) {
      const b = body(p, `${p} ${i}`);
      const r = await chat(p, b);
      assert.equal(r.status, 200, `${p}: ${r.text}`);
      assert.equal(r.json.choices[0].message.content, fixtureReply(b));
    }
  }
  const reqs = fxA.requests.slice(r0);
  assert.equal(reqs.length, 16);
  const hosts = new Map(); // upstream connection (its port) -> Host headers it carried
  for (const q of reqs) {
    assert.equal(q.headers.host, q.json.model === MODEL.openai ? `alpha.test:${port}` : `beta.test:${port}`);
    hosts.set(q.remotePort, (hosts.get(q.remotePort) ?? new Set()).add(q.headers.host));
  }
  for (const [p, h] of hosts) assert.equal(h.size, 1, `the connection from port ${p} carried ${[...h].join(' and ')}`);
  assert.ok(hosts.size <= 2 * WORKERS * Math.ceil(8 / MAX_REQUESTS), `16 requests on ${hosts.size} connections`);
});

test('a name with two addresses: a refused one passes the request to the next', async () => {
  const host = `two.test:${port}`;
  await setMistral(`http://${host}`, (r) => r.status === 200 && fxA.requests.at(-1)?.headers.host === host);
  // concurrent requests need new connections, which take the addresses in turn
  const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => chat('mistral', body('mistral', `two ${i}`), { fresh: true })));
  for (const r of rs) assert.equal(r.status, 200, r.text);
  assert.match(errorLog(), new RegExp(`connect\\(\\) failed .*127\\.0\\.0\\.3:${port}`), 'the refused address was tried');
});

test('the same host name on two ports: each provider keeps to its own fixture', async () => {
  const fxB = await startFixture();
  started.push(fxB);
  const host = `alpha.test:${fxB.port}`;
  await setMistral(`http://${host}`, (r) => r.status === 200 && fxB.requests.at(-1)?.headers.host === host);
  const a0 = fxA.requests.length;
  const b0 = fxB.requests.length;
  for (let i = 0; i < 6; i++) {
    for (const p of ['openai', 'mistral']) {
      const r = await chat(p, body(p, `${p} port ${i}`));
      assert.equal(r.status, 200, `${p}: ${r.text}`);
    }
  }
  assert.deepEqual(fxA.requests.slice(a0).map((q) => q.json.model), Array(6).fill(MODEL.openai));
  assert.deepEqual(fxB.requests.slice(b0).map((q) => q.json.model), Array(6).fill(MODEL.mistral));
});

test('a provider host that does not resolve: JSON 502 upstream_unreachable, journaled; others unaffected', async () => {
  const r = await setMistral(`http://nowhere.test:${port}`, (x) => x.status === 502);
  const e = assertJsonError(r, 502, 'unresolvable provider host');
  assert.equal(e.code, 'upstream_unreachable');
  const row = await s.waitAuditRow(r.headers.get('x-spendpol-audit-id'));
  assert.equal(Number(row.status), 502);
  assert.match(errorLog(), /"nowhere\.test" could not be resolved/);
  const ok = await chat('openai', body('openai', 'still fine'));
  assert.equal(ok.status, 200, ok.text);
  await setMistral(`http://beta.test:${port}`, (x) => x.status === 200);
});

function haveOpenssl() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch { return false; }
}

test('https: the scheme comes from the base URL, the TLS name (SNI) is the provider\'s host, sessions are resumed', { skip: !haveOpenssl() && 'no openssl to make a certificate' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spendpol-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
      '-subj', '/CN=alpha.test', '-addext', 'subjectAltName=DNS:alpha.test'], { stdio: 'ignore' });
    // TLS 1.2: the session is made in the handshake (a TLS 1.3 ticket comes
    // after it, and nginx may close the refused connection first)
    const server = https.createServer({
      key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')),
      maxVersion: 'TLSv1.2',
    }, (req, res) => {
      req.resume();
      req.on('end', () => {
        const b = JSON.stringify({ choices: [{ index: 0, message: { role: 'assistant', content: 'over tls' } }] });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
        res.end(b);
      });
    });
    const handshakes = [];
    server.on('secureConnection', (sock) => handshakes.push({ name: sock.servername, resumed: sock.isSessionReused() }));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    started.push({ close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) });
    const url = `https://alpha.test:${server.address().port}`;
    if (fs.existsSync(CA_BUNDLE)) {
      // a self-signed certificate is refused: verification is on, for that name
      const r = await setMistral(url, (x) => x.status === 502);
      assert.equal(assertJsonError(r, 502, 'untrusted certificate').code, 'upstream_unreachable');
      assert.match(errorLog(), /upstream SSL certificate verify error/);
    } else {
      await setMistral(url, (x) => x.status === 200);
    }
    assert.ok(handshakes.length > 0, 'nginx spoke TLS to an https:// base URL');
    const full = handshakes.filter((h) => !h.resumed);
    assert.ok(full.length > 0 && full.every((h) => h.name === 'alpha.test'), `SNI: ${JSON.stringify(handshakes)}`);
    // (node reports no name on a resumed handshake)
    assert.ok(handshakes.some((h) => h.resumed), `later handshakes resume the host's TLS session: ${JSON.stringify(handshakes)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nginx -s reload with idle upstream connections: the old workers exit, the new ones answer', async () => {
  const rs = await Promise.all(Array.from({ length: 4 }, (_, i) => chat('openai', body('openai', `before reload ${i}`), { fresh: true })));
  for (const r of rs) assert.equal(r.status, 200, r.text);
  const old = s.nginxWorkerPids();
  s.nginxSignal('reload');
  await waitFor(() => {
    const now = s.nginxWorkerPids();
    return now.length === WORKERS && now.every((p) => !old.includes(p));
  }, { timeout: 20_000 * SLOW, interval: 100, message: 'the old workers to exit' });
  const r = await chat('openai', body('openai', 'after reload'), { fresh: true });
  assert.equal(r.status, 200, r.text);
  // the harness fails the file on [alert], e.g. "open socket ... left in connection"
});
