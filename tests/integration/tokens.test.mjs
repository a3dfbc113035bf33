// Exact prompt tokens (issue 18, item 4): an OpenAI model's prompt is
// counted in the request path with its public encoding (o200k_base,
// cl100k_base) and the chat overhead, so a budget reserves what OpenAI
// will bill for input, not a bound four times larger. The reservation is
// read back from the journal (reserved_nano): with a per-token price and
// max_tokens set it is prompt x input price + max_tokens x output price.
//
// The reference counts are js-tiktoken's (tests/fixtures/prompt-tokens.mjs)
// on tests/fixtures/prompt-corpus.json: English, code, CJK, emoji,
// whitespace runs and every special character class.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { useStack, waitFor, IS_SAN } from './lib/stack.mjs';
import {
  loadCorpus, withCounts, chatTokens, countText, encodingOf,
} from '../fixtures/prompt-tokens.mjs';

const SLOW = IS_SAN ? 3 : 1;
const s = useStack();
const corpus = loadCorpus();

// list prices, nano-USD per token: input, output (migrations/003)
const PRICE = {
  'gpt-4o-mini': [150n, 600n],
  'gpt-3.5-turbo': [500n, 1500n],
  'gpt-4.1-nano': [100n, 400n],
  'text-embedding-3-small': [20n, 0n],
};

let key;

/** a key whose project has a budget: every admission reserves its worst case */
async function budgetedKey() {
  if (key) return key;
  const project = `tok-${crypto.randomBytes(3).toString('hex')}`;
  const b = await s.api('POST', '/budgets', {
    body: { name: `b-${project}`, scope: { type: 'project', value: project }, limit_usd: '1000', period: 'daily' },
  });
  assert.equal(b.status, 201, `POST /budgets -> ${b.status} ${b.text}`);
  key = (await s.createKey({ name: `k-${project}`, project })).key;
  return key;
}

/** the journal line of an audit id, once nginx wrote it */
async function journalLine(id) {
  let line;
  await waitFor(() => {
    line = fs.readFileSync(s.journalPath, 'utf8').split('\n').find((l) => l.includes(`"${id}"`));
    return line !== undefined;
  }, { timeout: 10_000 * SLOW, message: `journal line ${id}` });
  return JSON.parse(line);
}

/** POSTs body to path; the prompt tokens its reservation was made of */
async function reservedPrompt(path, body, maxTokens = 0) {
  const r = await fetch(`${s.openaiBaseURL}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await budgetedKey()}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await r.arrayBuffer();
  const id = r.headers.get('x-spendpol-audit-id');
  assert.ok(id, `${path}: an audit id (status ${r.status})`);
  const line = await journalLine(id);
  const [inPrice, outPrice] = PRICE[body.model];
  const reserved = BigInt(line.reserved_nano) - BigInt(maxTokens) * outPrice;
  assert.equal(reserved % inPrice, 0n, `reserved ${line.reserved_nano} is whole tokens`);
  return { tokens: Number(reserved / inPrice), status: r.status, line };
}

test('the corpus counts are js-tiktoken\'s', () => {
  assert.deepEqual(corpus, withCounts(corpus),
    'tests/fixtures/prompt-corpus.json: rerun node tests/fixtures/prompt-tokens.mjs --write');
});

for (const model of ['gpt-4o-mini', 'gpt-3.5-turbo']) {
  test(`chat prompts reserve their exact ${encodingOf(model)} count with the chat overhead (${model})`, async () => {
    const encoding = encodingOf(model);
    for (const c of corpus.chats) {
      const { tokens, status } = await reservedPrompt('/chat/completions',
        { model, max_tokens: 20, messages: c.messages }, 20);
      assert.equal(status, 200);
      assert.equal(tokens, c[encoding], `${c.name}: reserved ${tokens}, tiktoken ${c[encoding]}`);
    }
    for (const t of corpus.texts) {
      const messages = [{ role: 'user', content: t.text }];
      const { tokens } = await reservedPrompt('/chat/completions', { model, max_tokens: 5, messages }, 5);
      assert.equal(tokens, chatTokens(encoding, messages), `${t.name}`);
      // the bytes bound it replaces: about four times more on prose
      assert.ok(tokens < t.bytes + 64, `${t.name}: ${tokens} >= ${t.bytes} bytes`);
    }
  });
}

test('embeddings reserve the exact count of every input', async () => {
  const input = corpus.texts.map((t) => t.text);
  const { tokens, status } = await reservedPrompt('/embeddings',
    { model: 'text-embedding-3-small', input });
  assert.equal(status, 200);
  assert.equal(tokens, corpus.texts.reduce((n, t) => n + t.cl100k_base, 0));
  const ids = await reservedPrompt('/embeddings', { model: 'text-embedding-3-small', input: [[1, 2, 3], [4, 5]] });
  assert.equal(ids.tokens, 5);
});

test('the Responses API reserves input and instructions as messages', async () => {
  const text = corpus.texts.find((t) => t.name === 'code-python');
  const { tokens } = await reservedPrompt('/responses', {
    model: 'gpt-4.1-nano', max_output_tokens: 16, instructions: 'Be brief.', input: text.text,
  }, 16);
  const want = chatTokens('o200k_base', [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: text.text }]);
  assert.equal(tokens, want);
});

test('tools keep a bound: the exact messages plus their bytes and the framing', async () => {
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const { tokens } = await reservedPrompt('/chat/completions', { model: 'gpt-4o-mini', max_tokens: 5, messages, tools }, 5);
  const exact = chatTokens('o200k_base', messages);
  const schemaBytes = Buffer.byteLength('typefunctionfunctionnameget_weatherparameterstypeobjectpropertiescitytypestring');
  assert.equal(tokens, exact + schemaBytes + 64);
  assert.ok(countText('o200k_base', JSON.stringify(tools)) < schemaBytes, 'the bound is above the schema\'s own tokens');
});
