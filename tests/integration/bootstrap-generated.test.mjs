// A generated bootstrap admin key (no SPENDPOL_ADMIN_KEY) is written only
// to admin.key, mode 0600; controld's stdout is a log file here, so the
// key is not printed there, nor anywhere else in the logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { useStack } from './lib/stack.mjs';

const s = useStack({ adminKey: null });

test('a generated admin key is only in admin.key (0600), never in a log', async () => {
  const file = path.join(s.dataDir, 'controld', 'admin.key');
  assert.match(s.adminKey ?? '', /^sp_key_[0-9a-f]{48}$/, 'the harness read the key from admin.key');
  assert.equal(fs.readFileSync(file, 'utf8').trim(), s.adminKey);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);

  // it works: the admin API answers with it
  const r = await s.api('GET', '/org');
  assert.equal(r.status, 200, r.text);

  // every log file, those in logs/san (sanitizer builds) too
  const files = fs.readdirSync(s.logs, { recursive: true })
    .filter((f) => fs.statSync(path.join(s.logs, f)).isFile());
  assert.ok(files.includes('controld.out'), `logs: ${files}`);
  for (const f of files) {
    const text = fs.readFileSync(path.join(s.logs, f), 'utf8');
    assert.equal(text.includes(s.adminKey), false, `${f} holds the admin key`);
    assert.equal(text.includes(s.adminKey.slice(7, 31)), false, `${f} holds part of the admin key`);
  }
});
