// A reader of the policy snapshot file as the module maps it
// (libspendpol/sp_snapshot.h): the header, each table's used slots and the
// strings records point at. One copy for every test that checks what
// controld published.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

export const SNAPSHOT_VERSION = 11;
export const TABLES = 12;
export const TABLE = {
  KEYS: 0, PROVIDERS: 1, PRICES: 2, ORGS: 3, ALIASES: 4, BUDGETS: 5,
  ENDPOINTS: 6, SETTINGS: 7, CACHE_PURGES: 8, ROUTES: 9, TEMPLATES: 10,
  POLICIES: 11,
};

/** {buf, str(at), records(table)} of dir/policy.snap */
export function readSnapshot(dir) {
  const buf = fs.readFileSync(path.join(dir, 'policy.snap'));
  assert.equal(buf.toString('latin1', 0, 8), 'SPSNAP01');
  assert.equal(buf.readUInt32LE(8), SNAPSHOT_VERSION, 'snapshot format version');
  const str = (at) => {
    const off = buf.readUInt32LE(at), len = buf.readUInt32LE(at + 4);
    return buf.toString('utf8', off, off + len);
  };
  // every record of a table: the file offset of each used slot's record
  const records = (t) => {
    const tableAt = 48 + TABLES * 8 + t * 16;
    const offset = Number(buf.readBigUInt64LE(tableAt));
    const slots = Number(buf.readBigUInt64LE(tableAt + 8));
    const out = [];
    for (let i = 0; i < slots; i++) {
      const rec = Number(buf.readBigUInt64LE(offset + i * 16 + 8));
      if (rec) out.push(rec);
    }
    return out;
  };
  return { buf, str, records };
}
