// Organisation prices reach the proxy's cost within a second; an
// unpriced model is served, flagged, and raises one alert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, spendpolHeaders, usdToNano, waitFor } from './lib/stack.mjs';

const s = useStack();

test('an organisation price reprices the next request', async () => {
  const { key } = await s.createKey({ name: 'p' });
  const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'price me' }] };
  const r1 = await s.client(key).chat.completions.create(body).withResponse();
  const h1 = spendpolHeaders(r1.response);
  const put = await s.api('PUT', '/pricing/openai/gpt-4o-mini', { body: { input_usd_per_mtok: '1500', output_usd_per_mtok: '6000' } });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.json.source, 'organization');
  assert.equal(put.json.list_price.input_usd_per_mtok, '0.150000');
  let h2;
  await waitFor(async () => {
    const r2 = await s.client(key).chat.completions.create(body).withResponse();
    h2 = spendpolHeaders(r2.response);
    return usdToNano(h2.cost) === usdToNano(h1.cost) * 10000n || usdToNano(h2.cost) === BigInt(usdToNano(h1.cost)) * 10000n;
  }, { timeout: 5000, message: 'org price applied' });
  const del = await s.api('DELETE', '/pricing/openai/gpt-4o-mini');
  assert.equal(del.status, 204);
});

test('an unpriced model raises one alert', async () => {
  const { key } = await s.createKey({ name: 'u' });
  const body = { model: 'gpt-unknown-77', messages: [{ role: 'user', content: 'who prices me' }] };
  let last;
  for (let i = 0; i < 3; i++) {
    const r = await s.client(key).chat.completions.create(body).withResponse();
    last = spendpolHeaders(r.response);
    assert.match(r.response.headers.get('x-spendpol-policy-warning') ?? '', /unpriced_model/);
    assert.equal(last.cost, '0.000000');
  }
  await s.waitAuditRow(last.auditId);
  let alerts;
  await waitFor(async () => {
    alerts = (await s.api('GET', '/alerts?type=unpriced_model')).json;
    return alerts.data.length === 1 && alerts.data[0].details.requests === 3;
  }, { timeout: 5000, message: 'alert' });
  assert.equal(alerts.data[0].dedupe_key, 'unpriced_model:openai:gpt-unknown-77-2024-07-18');
});
