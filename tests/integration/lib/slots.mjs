// The slot files' keys as libspendpol computes them, for tests that read
// or write the spend file and the ask file (sp_budget.h, sp_lease.h).

const M64 = (1n << 64n) - 1n;
const H1 = 0x9e3779b97f4a7c15n;

function mix(x) {
  x ^= x >> 30n; x = (x * 0xbf58476d1ce4e5b9n) & M64;
  x ^= x >> 27n; x = (x * 0x94d049bb133111ebn) & M64;
  return x ^ (x >> 31n);
}

/** sp_budget_hash(): sp_hash64 of the id with the budgets' seed, never 0 */
export function budgetHash(id) {
  const b = Buffer.from(id);
  let h = (0x5350454e44n ^ ((BigInt(b.length) * H1) & M64)) & M64;
  let i = 0;
  for (; i + 8 <= b.length; i += 8) h = (mix(h ^ b.readBigUInt64LE(i)) + H1) & M64;
  const tail = Buffer.alloc(8);
  b.copy(tail, 0, i);
  h = mix(h ^ tail.readBigUInt64LE(0) ^ ((BigInt(b.length - i) << 56n) & M64));
  return h || 1n;
}
