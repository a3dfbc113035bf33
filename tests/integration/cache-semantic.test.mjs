// The semantic cache (issue 12, item 4) with OpenAI's own SDK against the
// OpenAI fixture, whose embeddings endpoint answers the vectors this file
// chooses (fixture.setEmbeddings): a paraphrase of a stored prompt is a hit
// (X-Spendpol-Cache-Similarity, no chat upstream, cost 0); a prompt that
// differs in negation, a number or a named entity is never one, even with
// an identical vector (the lexical guard); below the threshold, other
// parameters, an embedding that fails or is too slow: misses, the request
// still answered. The embedding call goes through the governed path: its
// own audit row, linked to the request it served.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { IS_SAN } from './lib/stack.mjs';
import { useCacheStack, header, cacheOf, waitApplied } from './lib/cache.mjs';

const SLOW = IS_SAN ? 3 : 1;
const EMBED_MODEL = 'text-embedding-3-small';
const SEMANTIC = {
  mode: 'semantic', embedding_provider: 'openai', embedding_model: EMBED_MODEL,
  similarity_threshold: 0.95, embedding_timeout_ms: 1000,
};

let key;
const s = useCacheStack(async (stack) => {
  key = (await stack.createKey({ name: 'semantic' })).key;
  await putSemantic({});
});

async function putSemantic(extra) {
  const r = await s.api('PUT', '/cache/config', { body: { ...SEMANTIC, ...extra } });
  assert.equal(r.status, 200, `PUT /cache/config -> ${r.status} ${r.text}`);
  return r.json;
}

/**
 * A word no other prompt has, with a digit: an identifier to the guard,
 * so prompts of two tags never share an answer whatever their vectors
 */
const tag = () => `t${crypto.randomBytes(4).toString('hex')}7`;
/** a deterministic chat request (temperature 0) */
const chatBody = (prompt, extra = {}) => ({
  model: 'gpt-4o-mini', max_tokens: 12, temperature: 0, messages: [{ role: 'user', content: prompt }], ...extra,
});
const upstream = () => s.fixture.completions().length;
const embeddingCalls = () => s.fixture.embeddingCalls().length;

/** a unit vector of the fixture's 8 dimensions along axis i, turned by angle a towards axis i+1 */
const vec = (i, a = 0) => Array.from({ length: 8 }, (_, k) => (k === i ? Math.cos(a) : k === (i + 1) % 8 ? Math.sin(a) : 0));

/** POST /chat/completions raw: {status, cache, similarity, cost, audit, text, json} */
async function call(body, headers = {}) {
  const r = await fetch(`${s.openaiBaseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* a stream */ }
  return {
    requestBody: JSON.stringify(body), status: r.status, cache: cacheOf(r), similarity: header(r, 'x-spendpol-cache-similarity'),
    cost: header(r, 'x-spendpol-cost'), audit: header(r, 'x-spendpol-audit-id'), text, json,
  };
}

async function expect(body, state, what) {
  const r = await call(body);
  assert.equal(r.status, 200, `${what}: ${r.text.slice(0, 300)}`);
  assert.equal(r.cache, state, `${what}: X-Spendpol-Cache`);
  return r;
}

/** the two prompts get vectors va and vb; a is stored, then b is asked */
async function pair(a, b, va, vb, extra = {}) {
  s.fixture.setEmbeddings({ [a]: { vector: va }, [b]: { vector: vb } });
  const first = await expect(chatBody(a, extra), 'miss', `"${a}" first`);
  const n0 = upstream();
  const second = await call(chatBody(b, extra));
  assert.equal(second.status, 200, second.text.slice(0, 300));
  return { first, second, reachedProvider: upstream() - n0 };
}

test('semantic settings reach nginx: a paraphrase of a stored prompt is a hit, with its similarity, no chat upstream, cost 0', async () => {
  // the setting travels in the snapshot: poll with fresh pairs
  // each try in a direction of its own (cosine under 0.95 to the others)
  // and a group of its own (max_tokens 11): only 4 equally close prompts
  // are put to the guard (docs/cache.md), and the tries' prompts differ
  // by their tags
  let last;
  let n = 0;
  await waitApplied(async () => {
    const t = tag();
    const v = vec(n % 8, 0.4 * Math.floor(n / 8));
    n++;
    last = await pair(`What is the capital of France? ${t}`, `what's the capital of France ${t}`, v, v, { max_tokens: 11 });
    return last.second.cache;
  }, (c) => c === 'hit', { message: 'mode semantic on nginx' });
  const { first, second, reachedProvider } = last;
  assert.equal(reachedProvider, 0, 'the paraphrase did not reach the provider');
  assert.equal(second.similarity, '1.0000');
  assert.equal(second.cost, '0.000000');
  assert.equal(second.json.choices[0].message.content, first.json.choices[0].message.content, 'the stored answer');
  assert.equal(second.json.id, first.json.id, 'byte for byte the stored answer');
  // an exact repeat is an exact hit: no similarity header, no embedding
  const n0 = embeddingCalls();
  const again = await expect(JSON.parse(first.requestBody), 'hit', 'the same prompt again');
  assert.equal(again.similarity, null);
  assert.equal(embeddingCalls(), n0, 'an exact hit needs no embedding');
});

test('the embedding call is governed: its own audit row, model and endpoint of the embedding, parented to the request', async () => {
  const t = tag();
  const a = `How do I reset my password? ${t}`;
  const n0 = embeddingCalls();
  s.fixture.setEmbeddings({ [a]: { vector: vec(1) } });
  const r = await expect(chatBody(a), 'miss', 'a new prompt');
  assert.equal(embeddingCalls(), n0 + 1, 'one embedding call reached the provider');
  const embedCall = s.fixture.embeddingCalls().at(-1);
  assert.equal(embedCall.json.input, a, 'the last user message is embedded');
  assert.equal(embedCall.json.model, EMBED_MODEL);
  assert.equal(embedCall.headers.authorization, 'Bearer sk-fixture-secret', 'the provider key, never the Spendpol key');
  const chatRow = await s.waitAuditRow(r.audit);
  let embedRow;
  await waitApplied(async () => {
    const rows = await s.allAuditRows();
    embedRow = rows.find((x) => x.parent_id === chatRow.span_id && x.model?.startsWith(EMBED_MODEL));
    return Boolean(embedRow);
  }, (x) => x, { times: 1, stableMs: 0, message: 'the embedding call\'s audit row' });
  assert.equal(embedRow.trace_id, chatRow.trace_id, 'same trace');
  assert.equal(embedRow.status, 200);
  assert.ok(Number(embedRow.cost_usd) > 0, `the embedding is metered: ${embedRow.cost_usd}`);
  assert.equal(embedRow.api_key_id, chatRow.api_key_id, 'billed to the same key');
});

test('the lexical guard: negation, numbers and named entities never hit, even with identical vectors', async () => {
  const cases = [
    ['Please enable 2FA on my account', 'Please disable 2FA on my account', 'negation'],
    ['Give me 3 ideas for a birthday party', 'Give me 4 ideas for a birthday party', 'number'],
    ['Tell me about the weather in Paris in winter', 'Tell me about the weather in Rome in winter', 'named entity'],
    ['Do not delete the file named "report.txt"', 'Do not delete the file named "notes.txt"', 'quoted string'],
  ];
  for (const [a, b, what] of cases) {
    const t = tag();
    const { second, reachedProvider } = await pair(`${a} ${t}`, `${b} ${t}`, vec(2), vec(2));
    assert.equal(second.cache, 'miss', `${what}: "${b}" after "${a}"`);
    assert.equal(reachedProvider, 1, `${what}: the provider answered`);
  }
});

test('near twins do not hide each other: refused by the guard, the next most similar is tried', async () => {
  const t = tag();
  const [three, four, ask] = [`Give me 3 ideas for a team offsite ${t}`, `Give me 4 ideas for a team offsite ${t}`,
    `Suggest 4 ideas for a team offsite ${t}`];
  s.fixture.setEmbeddings({ [three]: { vector: vec(6) }, [four]: { vector: vec(6) }, [ask]: { vector: vec(6) } });
  const x = { max_tokens: 14 };
  await expect(chatBody(three, x), 'miss', 'the 3 ideas prompt');
  const stored = await expect(chatBody(four, x), 'miss', 'the 4 ideas prompt: the guard refuses the 3 ideas answer');
  const n0 = upstream();
  const r = await expect(chatBody(ask, x), 'hit', 'a paraphrase of the 4 ideas prompt, stored second');
  assert.equal(upstream(), n0);
  assert.equal(r.json.id, stored.json.id, 'the 4 ideas answer, not the 3 ideas one');
});

test('below similarity_threshold, or other parameters: a miss', async () => {
  const t = tag();
  // cos(0.5 rad) = 0.878 < 0.95
  const low = await pair(`Summarise the sales figures please ${t}`, `Summarize the sales figures ${t}`, vec(3), vec(3, 0.5));
  assert.equal(low.second.cache, 'miss');
  assert.equal(low.reachedProvider, 1);
  // cos(0.2 rad) = 0.980 >= 0.95: a hit, its similarity said
  const t2 = tag();
  const high = await pair(`Summarise the sales figures please ${t2}`, `Summarize the sales figures ${t2}`, vec(3), vec(3, 0.2));
  assert.equal(high.second.cache, 'hit');
  assert.ok(Math.abs(Number(high.second.similarity) - Math.cos(0.2)) < 0.01, high.second.similarity);
  // same prompts, another max_tokens: another group
  const t3 = tag();
  s.fixture.setEmbeddings({ [`Explain DNS simply ${t3}`]: { vector: vec(4) }, [`Explain DNS in simple terms ${t3}`]: { vector: vec(4) } });
  await expect(chatBody(`Explain DNS simply ${t3}`), 'miss', 'stored with max_tokens 12');
  const other = await call(chatBody(`Explain DNS in simple terms ${t3}`, { max_tokens: 20 }));
  assert.equal(other.cache, 'miss', 'max_tokens 20 is another group');
});

test('a streamed paraphrase is answered from a stored stream', async () => {
  const t = tag();
  const { first, second } = await pair(`List three colours ${t}`, `Name three colours ${t}`, vec(5), vec(5), { stream: true });
  assert.match(first.text, /data: \[DONE\]/);
  assert.equal(second.cache, 'hit');
  assert.equal(second.text, first.text, 'the stored stream, byte for byte');
});

test('an embedding that fails, or is slower than embedding_timeout_ms, is a miss and the request is answered', async (t) => {
  const t1 = tag();
  const failing = `Which plan fits a team of five people? ${t1}`;
  s.fixture.setEmbeddings({ [failing]: { status: 500 } });
  const n0 = upstream();
  const r1 = await expect(chatBody(failing), 'miss', 'embedding 500');
  assert.equal(upstream(), n0 + 1);
  assert.ok(r1.json.choices[0].message.content.length > 0);

  await putSemantic({ embedding_timeout_ms: 300 });
  try {
    const t2 = tag();
    const slow = `Which plan fits a team of six people? ${t2}`;
    s.fixture.setEmbeddings({ [slow]: { vector: vec(6), delayMs: 2000 } });
    // the setting may take a snapshot interval to arrive: the first call may wait the old 1000 ms
    let took;
    await waitApplied(async () => {
      const body = chatBody(`${slow} ${tag()}`);
      s.fixture.setEmbeddings({ [body.messages[0].content]: { vector: vec(6), delayMs: 2000 } });
      const t0 = Date.now();
      const r = await call(body);
      took = Date.now() - t0;
      assert.equal(r.status, 200, r.text.slice(0, 300));
      assert.equal(r.cache, 'miss');
      return took;
    }, (ms) => ms < 1000, { times: 2, stableMs: 0, message: 'embedding_timeout_ms 300 applied' });
    t.diagnostic(`a request whose embedding took 2 s was answered after ${took} ms (timeout 300 ms)`);
    assert.ok(took >= 300, `${took} ms: it waited for the embedding`);
    assert.ok(took < 1000 * SLOW, `${took} ms`);
  } finally {
    await putSemantic({});
  }
});

test('max_vectors: an organisation keeps its most recently used vectors, the oldest go', async () => {
  await putSemantic({ max_vectors: 2 });
  try {
    let last;
    await waitApplied(async () => {
      const t = tag();
      const prompts = ['alpha', 'bravo', 'charlie'].map((w, i) => [`Describe the ${w} option ${t}`, `Please describe the ${w} option ${t}`, vec(i)]);
      for (const [a, b, v] of prompts) s.fixture.setEmbeddings({ [a]: { vector: v }, [b]: { vector: v } });
      for (const [a] of prompts) await expect(chatBody(a, { max_tokens: 13 }), 'miss', `stored: ${a}`);
      const oldest = await call(chatBody(prompts[0][1], { max_tokens: 13 }));
      const newest = await call(chatBody(prompts[2][1], { max_tokens: 13 }));
      last = { oldest: oldest.cache, newest: newest.cache };
      return last;
    }, (x) => x.oldest === 'miss' && x.newest === 'hit', { times: 2, stableMs: 0, message: 'max_vectors 2 applied' });
  } finally {
    await putSemantic({});
  }
});

test('mode exact: no embedding call, paraphrases are misses', async () => {
  await putSemantic({ mode: 'exact' });
  try {
    await waitApplied(async () => {
      const t = tag();
      return (await pair(`What is the capital of Spain? ${t}`, `what's the capital of Spain ${t}`, vec(7), vec(7))).second.cache;
    }, (c) => c === 'miss', { message: 'mode exact on nginx' });
    const n0 = embeddingCalls();
    await expect(chatBody(`Another prompt ${tag()}`), 'miss', 'exact mode');
    assert.equal(embeddingCalls(), n0, 'no embedding call in mode exact');
  } finally {
    await putSemantic({});
  }
});
