// Hand-written PII samples to the corpus format:
//   node tools/pii-corpus/markup.mjs [IN] [OUT]
// (default tests/pii/handwritten.txt -> tests/pii/handwritten.jsonl).
// One sample a line; [[type:value]] marks an entity; \n is a newline;
// lines starting with # are comments. --check compares with OUT.

import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const input = args[0] ?? 'tests/pii/handwritten.txt';
const output = args[1] ?? 'tests/pii/handwritten.jsonl';

const out = [];
for (const line of readFileSync(input, 'utf8').split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const src = line.replaceAll('\\n', '\n');
    let text = '';
    const entities = [];
    const re = /\[\[([a-z0-9_]+):([\s\S]*?)\]\]/g;
    let last = 0, m;
    while ((m = re.exec(src)) !== null) {
        text += src.slice(last, m.index);
        const start = Buffer.byteLength(text);
        text += m[2];
        entities.push({ type: m[1], start, end: Buffer.byteLength(text) });
        last = re.lastIndex;
    }
    text += src.slice(last);
    out.push(JSON.stringify({ text, entities }));
}

const data = out.join('\n') + '\n';
if (process.argv.includes('--check')) {
    if (readFileSync(output, 'utf8') !== data) {
        console.error(`${output} is stale: run node tools/pii-corpus/markup.mjs`);
        process.exit(1);
    }
} else {
    writeFileSync(output, data);
    console.log(`${output}: ${out.length} samples`);
}
