// Writes the C source of the o200k_base and cl100k_base vocabularies for
// libspendpol/sp_tokenize.c, from js-tiktoken's ranks files (installed by
// `make deps` into tools/tokenizer/node_modules; nothing is fetched here).
//
//   node tools/tokenizer/gen-vocab.mjs OUT.c
//
// For each encoding: the token bytes in rank order (offsets + one byte
// string) and an open-addressing hash table from bytes to rank, laid out
// here, with a table of the two-byte tokens, so that it sits in read-only data, shared by every process that
// maps the binary, and needs no work at start. The hash (FNV-1a 32 with
// murmur3's finaliser) must stay identical to sp_tok_hash() in
// sp_tokenize.c; test_lib_tokenize.c looks every token up to prove it.
//
// The pre-tokenizer patterns are not taken from here: sp_tokenize.c holds
// them in PCRE2 syntax. The patterns js-tiktoken ships are checked against
// the ones that C source was written from, so that a package update that
// changes a pattern stops the build instead of silently diverging.

import { writeFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "package.json"));

const CONTRACTIONS = "'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D";

const ENCODINGS = [
    {
        name: "o200k_base",
        sym: "o200k",
        pat: "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
            + "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(" + CONTRACTIONS + ")?"
            + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
            + "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(" + CONTRACTIONS + ")?"
            + "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+"
            + "|\\s+(?!\\S)|\\s+",
    },
    {
        name: "cl100k_base",
        sym: "cl100k",
        pat: "(" + CONTRACTIONS + ")|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
            + "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
            + "|\\s+(?!\\S)|\\s+",
    },
];

function hash(bytes) {
    let h = 0x811c9dc5;
    for (const b of bytes) {
        h = Math.imul(h ^ b, 0x01000193) >>> 0;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b) >>> 0;
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h ^= h >>> 16;
    return h >>> 0;
}

const RANK_BITS = 18;           // SP_TOK_RANK_BITS
const BLOOM_BITS = 1 << 22;     // SP_TOK_BLOOM_BITS
const BLOOM_WORDS = BLOOM_BITS / 64;

function bloomBits(h) {
    const g = Math.imul(h, 0x9e3779b1) >>> 0;
    return [h & (BLOOM_BITS - 1), (g ^ (g >>> 15)) & (BLOOM_BITS - 1)];
}
const EMPTY = 0xffffffff;

function build(enc) {
    const ranks = require(`js-tiktoken/ranks/${enc.name}`);
    if (ranks.pat_str !== enc.pat) {
        throw new Error(`${enc.name}: js-tiktoken's pattern changed; `
            + `review sp_tokenize.c's pattern against: ${ranks.pat_str}`);
    }

    const tokens = [];
    for (const line of ranks.bpe_ranks.split("\n")) {
        if (line === "") continue;
        const [, offsetStr, ...b64] = line.split(" ");
        const offset = Number.parseInt(offsetStr, 10);
        b64.forEach((t, i) => { tokens[offset + i] = Buffer.from(t, "base64"); });
    }

    const n = tokens.length;
    if (n >= (1 << RANK_BITS)) throw new Error(`${enc.name}: too many ranks`);

    let slots = 1;
    while (slots < n * 2.5) slots <<= 1;      // load below 0.4
    const table = new Uint32Array(slots).fill(EMPTY);
    const offsets = new Uint32Array(n + 1);
    let total = 0, maxLen = 0;

    for (let r = 0; r < n; r++) {
        offsets[r] = total;
        const t = tokens[r];
        if (t === undefined) continue;        // a hole: length 0, never found
        total += t.length;
        maxLen = Math.max(maxLen, t.length);
        const h = hash(t);
        let i = h & (slots - 1);
        while (table[i] !== EMPTY) i = (i + 1) & (slots - 1);
        table[i] = (((h >>> RANK_BITS) << RANK_BITS) | r) >>> 0;
    }
    offsets[n] = total;

    // a Bloom filter (two bits a token) in front of the table: most of
    // the merge's lookups miss, and the filter (512 KiB) stays in cache
    // where the table does not; bloomBits() must match sp_tok_bloom()
    const bloom = new BigUint64Array(BLOOM_WORDS);
    for (let r = 0; r < n; r++) {
        const t = tokens[r];
        if (t === undefined) continue;
        for (const bit of bloomBits(hash(t))) {
            bloom[bit >>> 6] |= 1n << BigInt(bit & 63);
        }
    }

    // two-byte tokens by their bytes: the merge's first round of lookups
    const pairs = new Uint32Array(65536).fill(EMPTY);
    for (let r = 0; r < n; r++) {
        const t = tokens[r];
        if (t !== undefined && t.length === 2) pairs[(t[0] << 8) | t[1]] = r;
    }

    return { enc, n, slots, table, offsets, pairs, bloom, bytes: Buffer.concat(tokens.filter(Boolean)), maxLen };
}

function cString(buf) {
    const out = [];
    let line = "    \"";
    for (const b of buf) {
        let c;
        if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c && b !== 0x3f) {
            c = String.fromCharCode(b);
        } else {
            c = "\\" + b.toString(8).padStart(3, "0");
        }
        line += c;
        if (line.length > 74) { out.push(line + "\""); line = "    \""; }
    }
    out.push(line + "\"");
    return out.join("\n");
}

function cArray(arr) {
    const out = [];
    let line = "   ";
    for (const v of arr) {
        const s = v === EMPTY ? " E," : ` ${v},`;
        if (line.length + s.length > 78) { out.push(line); line = "   "; }
        line += s;
    }
    out.push(line);
    return out.join("\n");
}

function cArray64(arr) {
    const out = [];
    let line = "   ";
    for (const v of arr) {
        const s = v === 0n ? " 0," : ` 0x${v.toString(16)}u,`;
        if (line.length + s.length > 78) { out.push(line); line = "   "; }
        line += s;
    }
    out.push(line);
    return out.join("\n");
}

const out = process.argv[2];
if (!out) {
    console.error("usage: node gen-vocab.mjs OUT.c");
    process.exit(2);
}

const version = JSON.parse(readFileSync(
    join(here, "node_modules/js-tiktoken/package.json"), "utf8")).version;

let c = `/*
 * Generated by tools/tokenizer/gen-vocab.mjs from js-tiktoken ${version}:
 * do not edit. The o200k_base and cl100k_base vocabularies for
 * sp_tokenize.c: token bytes by rank and a bytes -> rank hash table.
 */

#include "sp_tokenize.h"

#define E 0xffffffffu
`;

for (const enc of ENCODINGS) {
    const v = build(enc);
    c += `
static const uint32_t  ${enc.sym}_offsets[${v.n + 1}] = {
${cArray(v.offsets)}
};

static const uint32_t  ${enc.sym}_slots[${v.slots}] = {
${cArray(v.table)}
};

static const uint32_t  ${enc.sym}_pairs[65536] = {
${cArray(v.pairs)}
};

static const uint64_t  ${enc.sym}_bloom[${BLOOM_WORDS}] = {
${cArray64(v.bloom)}
};

static const uint8_t  ${enc.sym}_bytes[${v.bytes.length + 1}] =
${cString(v.bytes)};

const sp_tok_vocab_t  sp_tok_vocab_${enc.name} = {
    "${enc.name}", ${v.n}, ${v.slots - 1}, ${v.maxLen},
    ${enc.sym}_offsets, ${enc.sym}_slots, ${enc.sym}_pairs, ${enc.sym}_bloom,
    ${enc.sym}_bytes
};
`;
}

writeFileSync(out + ".tmp", c);
import("node:fs").then((fs) => fs.renameSync(out + ".tmp", out));
