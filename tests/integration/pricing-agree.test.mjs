// Every price the admin API shows is what the proxy charges: for a table
// of model names (list model, dated model, alias, organisation price on
// the undated base, fallback, unknown) GET /pricing/openai/NAME's price
// applied to the fixture's usage gives exactly X-Spendpol-Cost. And the
// one rule SQL repeats (spendpol_model_covers, the undated base model)
// answers the C unit test's table of cases the same way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useStack, spendpolHeaders, usdToNano, waitFor, REPO } from './lib/stack.mjs';

const s = useStack();

/** The nano-USD cost of usage at an API price item, as sp_cost_nano rounds. */
function costAt(item, usage) {
  const nano = (usd) => (usd == null ? null : usdToNano(usd));
  const input = nano(item.input_usd_per_mtok);
  const cachedPrice = nano(item.cached_input_usd_per_mtok) ?? input;
  const cached = BigInt(usage.prompt_tokens_details?.cached_tokens ?? 0);
  const total = (BigInt(usage.prompt_tokens) - cached) * input
    + cached * cachedPrice
    + BigInt(usage.completion_tokens) * nano(item.output_usd_per_mtok);
  return (total + 500_000n) / 1_000_000n;
}

async function proxied(key, model, content = 'agree on my price') {
  const r = await s.client(key).chat.completions.create({
    model, messages: [{ role: 'user', content }], max_tokens: 1000,
  }).withResponse();
  return { usage: r.data.usage, h: spendpolHeaders(r.response), warning: r.response.headers.get('x-spendpol-policy-warning') ?? '' };
}

/**
 * Asks the API for name and the proxy for a call to model until the proxy
 * charges what the API shows (a price just set reaches the proxy's
 * snapshot within a second); returns the API's item.
 */
async function assertAgree(key, { model, ask = [model], source, via = {} }) {
  let last = {};
  const detail = () => JSON.stringify({
    cost: last.call?.h.cost, usage: last.call?.usage,
    answers: last.answers?.map((a) => [a.status, a.json]),
  });
  await waitFor(async () => {
    const call = await proxied(key, model);
    last = { call, answers: [] };
    for (const name of ask) {
      const get = await s.api('GET', `/pricing/openai/${encodeURIComponent(name)}`);
      last.answers.push(get);
      if (get.status !== 200) return false;
      if (costAt(get.json, call.usage) !== usdToNano(call.h.cost)) return false;
    }
    return true;
  }, { timeout: 5000, message: `API and proxy agree on ${model}` })
    .catch((e) => assert.fail(`${e.message}: ${detail()}`));
  for (const [i, get] of last.answers.entries()) {
    assert.equal(get.json.match.requested_model, ask[i]);
    assert.equal(get.json.match.source, source, `${ask[i]}: ${get.text}`);
    assert.equal(get.json.match.alias, via.alias ?? false, ask[i]);
    assert.equal(get.json.match.base_model, via.base ?? false, ask[i]);
  }
  assert.ok(usdToNano(last.call.h.cost) > 0n, `${model} costs something`);
  return last.answers[0].json;
}

test('every price GET /pricing shows is what the proxy charges', async () => {
  const { key } = await s.createKey({ name: 'agree' });

  // a list model; the fixture answers a dated name, priced by its base
  const mini = await assertAgree(key, {
    model: 'gpt-4o-mini', ask: ['gpt-4o-mini'], source: 'list',
  });
  assert.equal(mini.model, 'gpt-4o-mini');
  const dated = await assertAgree(key, {
    model: 'gpt-4o-mini', ask: ['gpt-4o-mini-2024-07-18', 'gpt-4o-mini-20240718'],
    source: 'list', via: { base: true },
  });
  assert.equal(dated.model, 'gpt-4o-mini', 'a dated name shows its base model\'s price');

  // a dated model asked for by name (GET answered 404 before)
  await assertAgree(key, {
    model: 'gpt-4o-2024-08-06', ask: ['gpt-4o-2024-08-06'], source: 'list', via: { base: true },
  });

  // an alias (deployment) prices as the model it runs
  const prov = await s.api('PUT', '/providers/openai', {
    body: { api_key: 'sk-fixture-secret', base_url: s.fixture.url, model_aliases: { 'team-deploy': 'gpt-4.1' } },
  });
  assert.ok(prov.status === 200 || prov.status === 201, prov.text);
  const alias = await assertAgree(key, {
    model: 'team-deploy', ask: ['team-deploy'], source: 'list', via: { alias: true },
  });
  assert.equal(alias.model, 'gpt-4.1');

  // an organisation price on the undated base wins for the dated name
  const put = await s.api('PUT', '/pricing/openai/gpt-4o', {
    body: { input_usd_per_mtok: '3.125', output_usd_per_mtok: '11.5' },
  });
  assert.equal(put.status, 200, put.text);
  const org = await assertAgree(key, {
    model: 'gpt-4o', ask: ['gpt-4o-2024-08-06'], source: 'organization', via: { base: true },
  });
  assert.equal(org.input_usd_per_mtok, '3.125000');
  assert.equal(org.list_price.model, 'gpt-4o');
  await assertAgree(key, { model: 'gpt-4o', ask: ['gpt-4o'], source: 'organization' });

  // an unknown model: no price shown, nothing charged, flagged
  const unknown = await s.api('GET', '/pricing/openai/gpt-agree-unknown');
  assert.equal(unknown.status, 404, unknown.text);
  assert.equal(unknown.json.error.code, 'model_unpriced');
  const free = await proxied(key, 'gpt-agree-unknown');
  assert.equal(free.h.cost, '0.000000');
  assert.match(free.warning, /unpriced_model/);

  // with a fallback price, the unknown model shows and pays the fallback
  const fb = await s.api('PUT', '/pricing/openai/*', {
    body: { input_usd_per_mtok: '7', output_usd_per_mtok: '21' },
  });
  assert.equal(fb.status, 200, fb.text);
  const fallback = await assertAgree(key, {
    model: 'gpt-agree-unknown', ask: ['gpt-agree-unknown'], source: 'fallback',
  });
  assert.equal(fallback.model, '*');

  // the list agrees with the single answers
  const list = await s.api('GET', '/pricing?provider=openai&model=gpt-4o');
  assert.equal(list.status, 200, list.text);
  assert.equal(list.json.data.length, 1);
  assert.equal(list.json.data[0].input_usd_per_mtok, '3.125000');

  for (const p of ['/pricing/openai/*', '/pricing/openai/gpt-4o']) {
    assert.equal((await s.api('DELETE', p)).status, 204, p);
  }
});

// the cases test_lib_price.c checks sp_price_base_model against
function baseModelCases() {
  const text = fs.readFileSync(path.join(REPO, 'tests/unit/model_base_cases.h'), 'utf8');
  const cases = [...text.matchAll(/^\{ "([^"]*)", "([^"]*)", ([01]) \},$/gm)]
    .map((m) => ({ name: m[1], model: m[2], covered: m[3] === '1' }));
  assert.ok(cases.length >= 20, `read ${cases.length} cases`);
  return cases;
}

test('SQL spendpol_model_covers agrees with the C base-model rule', () => {
  const cases = baseModelCases();
  const lit = (v) => `'${v.replace(/'/g, "''")}'`;
  const sql = `SELECT ${cases.map((c) => `spendpol_model_covers(${lit(c.name)}, ${lit(c.model)})`).join(', ')}`;
  const out = execFileSync('psql', [s.ownerDatabaseURL, '-X', '-qtA', '-F', ',', '-c', sql], { encoding: 'utf8' }).trim().split(',');
  assert.equal(out.length, cases.length);
  for (const [i, c] of cases.entries()) {
    assert.equal(out[i] === 't', c.covered, `spendpol_model_covers('${c.name}', '${c.model}')`);
  }
});
