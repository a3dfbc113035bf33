// Reference token counts for tests/unit/test_lib_tokenize.c, computed with
// the npm package js-tiktoken (its vocabularies and its byte-pair merge).
//
//   node tools/tokenizer/gen-cases.mjs OUT.h        write the table
//   node tools/tokenizer/gen-cases.mjs --check F.h  exit 1 unless F.h is
//                                                   what would be written
//
// The split uses OpenAI tiktoken's own patterns (those sp_tokenize.c
// implements), translated to JavaScript, rather than the ones js-tiktoken
// ships, which differ from tiktoken in three corners:
//   - cl100k_base: tiktoken has "\s++$" before "\s*[\r\n]", so trailing
//     whitespace that holds a newline followed by spaces is one piece;
//     js-tiktoken's older pattern splits it after the last newline.
//   - \s: tiktoken's (Rust regex) is Unicode White_Space, with U+0085 and
//     without U+FEFF; JavaScript's is the reverse. Spelled out below.
//   - (?i:'s...): tiktoken folds case by Unicode rules, so "'ſ" (long s)
//     is a contraction too; spelled out below.
// Possessive quantifiers (JavaScript has none) are written greedy: in these
// patterns nothing after them could make a backtrack succeed.

import { writeFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "package.json"));
const { Tiktoken, getEncodingNameForModel } = require("js-tiktoken/lite");

const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028"
         + "\\u2029\\u202f\\u205f\\u3000";
const C = "'[sS\\u017f]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]";

const PATTERNS = {
    o200k_base:
        `[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*`
        + `[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:${C})?`
        + `|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+`
        + `[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:${C})?`
        + `|\\p{N}{1,3}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n/]*|[${WS}]*[\\r\\n]+`
        + `|[${WS}]+(?![^${WS}])|[${WS}]+`,
    cl100k_base:
        `'(?:[sS\\u017fdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])`
        + `|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}`
        + `| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|[${WS}]+$|[${WS}]*[\\r\\n]`
        + `|[${WS}]+(?![^${WS}])|[${WS}]`,
};

const enc = {};
for (const name of Object.keys(PATTERNS)) {
    const ranks = require(`js-tiktoken/ranks/${name}`);
    enc[name] = new Tiktoken({ ...ranks, pat_str: PATTERNS[name] });
}

// encode_ordinary: special tokens in the text are plain text
const count = (name, text) => enc[name].encode(text, [], []).length;

// a deterministic generator, so that the table is the same every time
let seed = 0x5eed1234;
function rnd(n) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
}

const FIXED = [
    "",
    "hello world",
    "Hello, World!",
    "The quick brown fox jumps over the lazy dog.",
    "It's John's book; they're here, we've seen it, I'm sure, you'll see, he'd go.",
    "IT'S JOHN'S BOOK; THEY'RE HERE, WE'VE SEEN IT, I'M SURE, YOU'LL SEE, HE'D GO.",
    "don'ſ it'S o'Re l'Ll x'vE",
    "1234567890 12 123 1234 12345 123456 1,234,567.89 3.14159 0x1F 1e10",
    "١٢٣٤٥ ١٢٣ ⅫⅣ ²³ ½",
    "    four spaces, then    more\ttabs\t\tand\n\n\nnewlines\r\n\r\nCRLF",
    "trailing spaces   ",
    "trailing newline then spaces\n  ",
    "trailing newlines\n\n\n",
    "\n",
    " ",
    "  \n  \n  x",
    " ".repeat(1000),
    "\n".repeat(500),
    " \t".repeat(300) + "x",
    "a".repeat(2000),
    "ab".repeat(700),
    "9".repeat(1000),
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~\\",
    "a/b/c // comment /* block */ http://example.com/path?q=1&r=2#frag",
    "def f(x):\n    return x ** 2  # square\n\nclass A:\n    pass\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
    "<|endoftext|> and <|endofprompt|> and <|fim_prefix|> are plain text here",
    "日本語のテキストです。中文文本，还有한국어 텍스트.",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🧑🏿‍🚀",
    "Combining: e\u0301 a\u0308 n\u0303 \u0301\u0301\u0301 Z\u0351\u0352\u0353",
    "עברית ועוד מילים, العربية مع كلمات، فارسی",
    "हिन्दी में पाठ, தமிழ் உரை, ภาษาไทย",
    "Ελληνικά και Русский текст",
    "no\u00a0break\u2028line\u2029para\u3000ideo\u205fmath\u202fnarrow\u1680ogham",
    "nel\u0085x bom\ufeffy \u0085\u0085 \ufeff\ufeff",
    "zero\u200bwidth\u200cjoiner\u200dx",
    "Ǆǅǆ ᾈᾉ ǅungla LjubLJANA",
    "ÀÉÎÕÜ àéîõü ß ẞ ŉ",
    "CamelCaseWordsAndALLCAPSAndMixedCASEWords iPhone eBay McDonald",
    "\u0000\u0001\u0002\u001f\u007f control",
    "tab\tseparated\tvalues\n1\t2\t3\n",
    "mixed 123abc abc123 a1b2c3 ...!!! ???",
    "'''''' \"\"\"\"\"\" ```js\ncode\n```",
    "a\r\rb\r\n\nc\n\r d",
    "   leading spaces",
    "\u00a0\u00a0\u00a0x \u3000\u3000y",
    "x\u0085\u0085\u0085",
];

// character classes for the generated cases
const ATOMS = [
    "the", " the", "The", " THE", "word", " words", "'s", "'re", "'LL", "'ve",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000",
    "\u0085", "\ufeff", "\u2028",
    "0", "12", "123", "4567", "89012345",
    ".", ",", "!", "?", "...", "--", "/", "//", "(", ")", "{", "}", "\"", "'",
    "#", "$", "%", "&", "*", "+", "<", ">", "=", "@", "\\", "^", "_", "`",
    "|", "~", ";", ":",
    "日本", "語", "中文", "한국어", "テスト", "😀", "👍🏽", "👨‍👩‍👧", "🇯🇵",
    "\u0301", "e\u0301", "\u0308\u0308", "שלום", "مرحبا", "नमस्ते", "Ωμέγα",
    "Привет", "ǅ", "ß", "ſ",
];

function generated(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
        const parts = 1 + rnd(40);
        let s = "";
        for (let j = 0; j < parts; j++) s += ATOMS[rnd(ATOMS.length)];
        out.push(s);
    }
    return out;
}

const TEXTS = [...FIXED, ...generated(400)];

function cString(s) {
    const bytes = Buffer.from(s, "utf8");
    let out = "\"";
    for (const b of bytes) {
        if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c && b !== 0x3f) {
            out += String.fromCharCode(b);
        } else {
            out += "\\" + b.toString(8).padStart(3, "0");
        }
    }
    return { lit: out + "\"", len: bytes.length };
}

const version = JSON.parse(readFileSync(
    join(here, "node_modules/js-tiktoken/package.json"), "utf8")).version;

let h = `/*
 * Generated by tools/tokenizer/gen-cases.mjs with js-tiktoken ${version}:
 * do not edit. Text, its length, and its o200k_base and cl100k_base counts.
 * \`make unit\` checks that the package still gives these counts.
 */

typedef struct {
    const char  *text;
    size_t       len;
    uint64_t     o200k;
    uint64_t     cl100k;
} tok_case_t;

static const tok_case_t  tok_cases[] = {
`;

for (const t of TEXTS) {
    const { lit, len } = cString(t);
    const a = count("o200k_base", t), b = count("cl100k_base", t);
    // long literals wrapped at 76 columns, cut between escapes
    const chunks = [];
    let rest = lit.slice(1, -1);
    while (rest.length > 70) {
        let cut = 70;
        while (rest[cut - 1] === "\\" || /\\[0-7]{0,2}$/.test(rest.slice(0, cut))) cut--;
        chunks.push(rest.slice(0, cut));
        rest = rest.slice(cut);
    }
    chunks.push(rest);
    h += `    { ${chunks.map((c) => `"${c}"`).join("\n      ")},\n`
       + `      ${len}, ${a}, ${b} },\n`;
}

h += "};\n";

// js-tiktoken's model -> encoding table (it exports no list: these are the
// names its getEncodingNameForModel knows, plus fine-tune spellings)
const MODELS = [
    "gpt-4o", "gpt-4o-2024-05-13", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20",
    "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview-2025-03-11", "gpt-4o-audio-preview",
    "gpt-4o-mini-audio-preview-2024-12-17", "gpt-4o-realtime",
    "gpt-4o-realtime-preview-2024-12-17", "chatgpt-4o-latest",
    "o1", "o1-2024-12-17", "o1-mini", "o1-mini-2024-09-12", "o1-preview",
    "o1-pro", "o1-pro-2025-03-19", "o3", "o3-2025-04-16", "o3-mini",
    "o3-mini-2025-01-31", "o4-mini", "o4-mini-2025-04-16",
    "gpt-4.1", "gpt-4.1-2025-04-14", "gpt-4.1-mini", "gpt-4.1-nano",
    "gpt-4.1-nano-2025-04-14", "gpt-4.5-preview", "gpt-4.5-preview-2025-02-27",
    "gpt-5", "gpt-5-2025-08-07", "gpt-5-nano", "gpt-5-mini",
    "gpt-5-mini-2025-08-07", "gpt-5-chat-latest",
    "gpt-4", "gpt-4-0314", "gpt-4-0613", "gpt-4-32k", "gpt-4-32k-0613",
    "gpt-4-1106-preview", "gpt-4-vision-preview", "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09", "gpt-4-turbo-preview", "gpt-4-0125-preview",
    "gpt-3.5-turbo", "gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-16k",
    "gpt-3.5-turbo-instruct", "gpt-35-turbo",
    "text-embedding-ada-002", "text-embedding-3-small",
    "text-embedding-3-large",
    "text-davinci-003", "davinci", "code-davinci-002", "gpt2",
];

h += `
typedef struct {
    const char  *model;
    int          encoding;      /* sp_tok_encoding_e, or -1 */
} tok_model_t;

static const tok_model_t  tok_models[] = {
`;
for (const m of MODELS) {
    const name = getEncodingNameForModel(m);
    const e = name === "o200k_base" ? "SP_TOK_O200K_BASE"
            : name === "cl100k_base" ? "SP_TOK_CL100K_BASE" : "-1";
    h += `    { "${m}", ${e} },\n`;
}
h += "};\n";

const args = process.argv.slice(2);
if (args[0] === "--check") {
    const have = readFileSync(args[1], "utf8");
    if (have !== h) {
        console.error(`${args[1]}: js-tiktoken now gives other counts; `
            + "regenerate with node tools/tokenizer/gen-cases.mjs and review");
        process.exit(1);
    }
    console.log(`${args[1]}: ${TEXTS.length} cases match js-tiktoken ${version}`);
} else if (args[0]) {
    writeFileSync(args[0], h);
} else {
    console.error("usage: node gen-cases.mjs OUT.h | --check FILE.h");
    process.exit(2);
}
