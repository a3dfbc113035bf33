// The labelled PII corpus: node tools/pii-corpus/gen.mjs [--seed N] [OUT]
// (default tests/pii/corpus.jsonl). Another seed draws a fresh corpus of
// the same shapes: the committed one was used while tuning the scanner. Deterministic: the same seed writes
// the same bytes, so the committed corpus can be checked with --check.
//
// Each line: {"text": ..., "entities": [{"type", "start", "end"}]} with
// UTF-8 byte offsets into text. Positives of every type sit in varied
// contexts (chat, e-mail, logs, JSON inside text, CSV, other languages);
// hard negatives are the look-alikes a scanner must leave alone: order
// numbers that fail Luhn, version strings, invoice ids shaped like IBANs
// that fail mod-97, SSN shapes with invalid areas, timestamps, UUIDs, git
// SHAs, part numbers, dates without a birth context.

import { writeFileSync, readFileSync } from 'node:fs';

const seedAt = process.argv.indexOf('--seed');
const SEED = seedAt > 0 ? Number(process.argv[seedAt + 1]) : 0x5eed14;
const SAMPLES_PER_TYPE = 150;
const NEGATIVES = 700;
const MIXED = 250;

let state = SEED >>> 0;
function rand() {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (a) => a[Math.floor(rand() * a.length)];
const digits = (n) => Array.from({ length: n }, () => int(0, 9)).join('');
const chars = (set, n) => Array.from({ length: n }, () => pick(set)).join('');
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const UPNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const HEX = '0123456789abcdef';
const B64 = ALNUM + '+/';
const B64URL = ALNUM + '-_';

// ---- values ---------------------------------------------------------------

const FIRST = ['jane', 'john', 'maria', 'li', 'ahmed', 'sofia', 'lukas',
    'chloe', 'raj', 'amelie', 'kenji', 'olga', 'pedro', 'fatima', 'noah'];
const LAST = ['doe', 'smith', 'garcia', 'wang', 'khan', 'rossi', 'muller',
    'dubois', 'patel', 'martin', 'tanaka', 'ivanova', 'silva', 'ali'];
const DOMAINS = ['example.com', 'example.org', 'mail.example.net',
    'corp.example.co.uk', 'acme-widgets.io', 'exemple.fr', 'beispiel.de',
    'uni.example.edu', 'shop.example.com.br', 'example.travel'];

function email() {
    const f = pick(FIRST), l = pick(LAST);
    const local = pick([`${f}.${l}`, `${f}_${l}`, `${f}${int(1, 99)}`,
        `${f[0]}${l}`, `${f}.${l}+${pick(['work', 'news', 'x'])}`,
        `${f}-${l}`, `${l}.${f}${int(70, 99)}`]);
    const d = pick(DOMAINS);
    return rand() < 0.1 ? `${local}@${d}`.toUpperCase() : `${local}@${d}`;
}

function phone() {
    const line = () => `01${digits(2)}`;
    const area = () => `${int(2, 9)}${int(0, 9)}${int(2, 9)}`;
    const exch = () => `${int(2, 9)}${digits(2)}`;
    return pick([
        () => `+1 ${area()} ${exch()} ${line()}`,
        () => `+1-${area()}-${exch()}-${line()}`,
        () => `(${area()}) ${exch()}-${line()}`,
        () => `${area()}-${exch()}-${line()}`,
        () => `${area()}.${exch()}.${line()}`,
        () => `+44 20 7946 0${digits(3)}`,
        () => `+447700900${digits(3)}`,
        () => `020 7946 0${digits(3)}`,
        () => `07700 900${digits(3)}`,
        () => `+33 1 ${digits(2)} ${digits(2)} ${digits(2)} ${digits(2)}`,
        () => `0${int(1, 7)} ${digits(2)} ${digits(2)} ${digits(2)} ${digits(2)}`,
        () => `+49 30 ${digits(8)}`,
        () => `030 ${digits(8)}`,
        () => `0151 ${digits(8)}`,
        () => `+91 98${digits(3)} ${digits(5)}`,
        () => `+81 3-${digits(4)}-${digits(4)}`,
    ])();
}

function ssnParts() {
    let a;
    do { a = int(1, 899); } while (a === 666);
    return [String(a).padStart(3, '0'), String(int(1, 99)).padStart(2, '0'),
        String(int(1, 9999)).padStart(4, '0')];
}

function ssn() {
    const [a, g, s] = ssnParts();
    return `${a}-${g}-${s}`;
}

function luhnComplete(prefix, len) {
    let body = prefix + digits(len - prefix.length - 1);
    for (let c = 0; c <= 9; c++) {
        if (luhnOk(body + c)) return body + c;
    }
    throw new Error('luhn');
}

function luhnOk(s) {
    let sum = 0, dbl = false;
    for (let k = s.length - 1; k >= 0; k--) {
        let x = s.charCodeAt(k) - 48;
        if (dbl) { x *= 2; if (x > 9) x -= 9; }
        sum += x; dbl = !dbl;
    }
    return sum % 10 === 0;
}

function cardNumber() {
    return pick([
        () => luhnComplete('4' + digits(3), 16),
        () => luhnComplete(String(int(51, 55)), 16),
        () => luhnComplete(String(int(2221, 2720)), 16),
        () => luhnComplete(pick(['34', '37']), 15),
        () => luhnComplete('6011', 16),
        () => luhnComplete(String(int(3528, 3589)), 16),
        () => luhnComplete(pick(['36', '38']), 14),
        () => luhnComplete('62' + digits(2), 16),
    ])();
}

function groupCard(n, sep) {
    if (n.length === 15) return [n.slice(0, 4), n.slice(4, 10), n.slice(10)].join(sep);
    if (n.length === 14) return [n.slice(0, 4), n.slice(4, 10), n.slice(10)].join(sep);
    return n.match(/.{1,4}/g).join(sep);
}

function card() {
    const n = cardNumber();
    return pick([n, groupCard(n, ' '), groupCard(n, '-')]);
}

const IBAN_LEN = { DE: 22, FR: 27, GB: 22, ES: 24, IT: 27, NL: 18, BE: 16,
    CH: 21, AT: 20, PL: 28, SE: 24, NO: 15, DK: 18, PT: 25, IE: 22,
    FI: 18, LU: 20, CZ: 24, RO: 24, SA: 24 };

function mod97(s) {
    let r = 0;
    for (const ch of s) {
        const v = /[0-9]/.test(ch) ? ch : String(ch.charCodeAt(0) - 55);
        for (const d of v) r = (r * 10 + (d.charCodeAt(0) - 48)) % 97;
    }
    return r;
}

function ibanWith(cc, bban) {
    const check = 98 - mod97(bban + cc + '00');
    return cc + String(check).padStart(2, '0') + bban;
}

function ibanCompact() {
    const cc = pick(Object.keys(IBAN_LEN));
    const n = IBAN_LEN[cc] - 4;
    let bban;
    if (cc === 'GB' || cc === 'NL' || cc === 'IE') {
        bban = chars('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 4) + digits(n - 4);
    } else {
        bban = digits(n);
    }
    return ibanWith(cc, bban);
}

const space4 = (s) => s.match(/.{1,4}/g).join(' ');

function iban() {
    const s = ibanCompact();
    return rand() < 0.5 ? s : space4(s);
}

function ipv4() {
    return pick([
        () => `10.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}`,
        () => `192.168.${int(0, 255)}.${int(1, 254)}`,
        () => `172.${int(16, 31)}.${int(0, 255)}.${int(1, 254)}`,
        () => `${int(11, 223)}.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}`,
    ])();
}

function ipv6() {
    const g = () => int(0, 0xffff).toString(16);
    return pick([
        () => Array.from({ length: 8 }, g).join(':'),
        () => `2001:db8::${g()}:${g()}`,
        () => `fe80::${g()}:${g()}:${g()}:${g()}`,
        () => `2001:0db8:85a3:0000:0000:8a2e:0370:${int(0x1000, 0xffff).toString(16)}`,
        () => `::ffff:192.0.2.${int(1, 254)}`,
        () => `2a00:1450:4001:${int(0x800, 0x8ff).toString(16)}::200e`,
        () => `::1`,
    ])();
}

function apiKey() {
    return pick([
        () => `sk-proj-${chars(B64URL, 48)}${int(0, 9)}`,
        () => `sk-${chars(ALNUM, 20)}T3BlbkFJ${chars(ALNUM, 20)}`,
        () => `sk-ant-api03-${chars(B64URL, 93)}AA`,
        () => `AIza${chars(B64URL, 34)}${int(0, 9)}`,
        () => `AKIA${chars(UPNUM, 15)}${int(0, 9)}`,
        () => `ghp_${chars(ALNUM, 35)}${int(0, 9)}`,
        () => `github_pat_11${chars(UPNUM, 20)}_${chars(ALNUM, 59)}`,
        () => `xoxb-${digits(12)}-${digits(12)}-${chars(ALNUM, 24)}`,
        () => `sk_live_${chars(ALNUM, 23)}${int(0, 9)}`,
        () => `hf_${chars(ALNUM, 33)}${int(0, 9)}`,
        () => `glpat-${chars(B64URL, 19)}${int(0, 9)}`,
        () => `gsk_${chars(ALNUM, 51)}${int(0, 9)}`,
        () => `sp_key_${chars(HEX, 48)}`,
    ])();
}

const b64url = (s) => Buffer.from(s).toString('base64url');

function jwt() {
    const head = b64url(JSON.stringify(pick([
        { alg: 'HS256', typ: 'JWT' }, { alg: 'RS256', kid: digits(6) },
        { typ: 'JWT', alg: 'ES256' }])));
    const body = b64url(JSON.stringify({ sub: digits(8),
        name: `${pick(FIRST)} ${pick(LAST)}`, iat: 1700000000 + int(0, 9999999) }));
    return `${head}.${body}.${chars(B64URL, 43)}`;
}

function privateKey() {
    const label = pick(['RSA PRIVATE KEY', 'PRIVATE KEY', 'EC PRIVATE KEY',
        'OPENSSH PRIVATE KEY', 'ENCRYPTED PRIVATE KEY']);
    const lines = Array.from({ length: int(2, 6) }, () => chars(B64, 64));
    return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----`;
}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June',
    'July', 'August', 'September', 'October', 'November', 'December'];

function dateText() {
    const y = int(1940, 2005), m = int(1, 12), d = int(1, 28);
    const p2 = (x) => String(x).padStart(2, '0');
    return pick([
        `${p2(d)}/${p2(m)}/${y}`, `${p2(m)}/${p2(d)}/${y}`,
        `${y}-${p2(m)}-${p2(d)}`, `${p2(d)}.${p2(m)}.${y}`,
        `${MONTHS[m - 1]} ${d}, ${y}`, `${d} ${MONTHS[m - 1]} ${y}`,
    ]);
}

function dobContext() {
    return pick(['Date of birth: ', 'DOB ', 'DOB: ', 'born on ',
        'I was born ', 'birthdate=', 'Geburtsdatum: ', 'né le ',
        'fecha de nacimiento: ', 'patient DOB ']);
}

// ---- contexts ---------------------------------------------------------

// A sample is built from parts: strings, and [type, value] entities.
function sample(parts) {
    let text = '';
    const entities = [];
    for (const p of parts) {
        if (typeof p === 'string') { text += p; continue; }
        const start = Buffer.byteLength(text);
        text += p[1];
        entities.push({ type: p[0], start, end: Buffer.byteLength(text) });
    }
    return { text, entities };
}

const WRAPS = [
    (e) => ['Hi, please update my record: ', e, '. Thanks!'],
    (e) => ['Can you draft a reply to the customer? Their details: ', e, '\n'],
    (e) => ['2024-05-01T12:00:03Z INFO request from user ', e, ' ok'],
    (e) => ['{"customer": {"contact": "', e, '", "tier": 2}}'],
    (e) => ['id,name,value\n42,Jane,', e, '\n43,Li,n/a'],
    (e) => ['Bonjour, voici les informations : ', e, ' — merci beaucoup.'],
    (e) => ['Hallo, hier sind die Daten: ', e, '. Viele Grüße'],
    (e) => ['Hola, mis datos son ', e, ', gracias.'],
    (e) => ['こんにちは。連絡先は ', e, ' です。'],
    (e) => ['> ', e, '\n> forwarded message'],
    (e) => ['Summarize this ticket: customer wrote "', e, '" yesterday.'],
    (e) => ['- field: ', e, '\n- status: open'],
];

function wrapped(type, value, lead = '') {
    const w = pick(WRAPS)([type, value]);
    if (lead) w.splice(1, 0, lead);
    return sample(w);
}

const POS = {
    email: () => wrapped('email', email(), pick(['', 'email ', 'mail: '])),
    phone: () => wrapped('phone', phone(), pick(['', 'phone ', 'tel: ', 'call '])),
    ssn: () => {
        const [a, g, s] = ssnParts();
        const form = int(0, 2);
        if (form === 0) return wrapped('ssn', `${a}-${g}-${s}`, pick(['', 'SSN ']));
        return wrapped('ssn', form === 1 ? `${a} ${g} ${s}` : `${a}${g}${s}`,
            pick(['SSN ', 'social security number ', 'ssn: ']));
    },
    card: () => wrapped('card', card(), pick(['', 'card ', 'cc: ', 'Visa '])),
    iban: () => wrapped('iban', iban(), pick(['', 'IBAN ', 'account '])),
    ipv4: () => wrapped('ipv4', ipv4(), pick(['', 'ip ', 'host '])),
    ipv6: () => wrapped('ipv6', ipv6(), pick(['', 'addr ', 'ipv6 '])),
    api_key: () => wrapped('api_key', apiKey(), pick(['', 'key: ', 'token=', 'export API_KEY='])),
    jwt: () => wrapped('jwt', jwt(), pick(['', 'Bearer ', 'token: '])),
    private_key: () => wrapped('private_key', privateKey(), pick(['', 'key:\n'])),
    dob: () => wrapped('dob', dateText(), dobContext()),
};

function uuid() {
    return [8, 4, 4, 4, 12].map((n) => chars(HEX, n)).join('-');
}

function luhnBad(prefix, len) {
    const good = luhnComplete(prefix, len);
    const last = (Number(good[len - 1]) + int(1, 9)) % 10;
    return good.slice(0, len - 1) + last;
}

function ibanBad() {
    const good = ibanCompact();
    const k = int(4, good.length - 1);
    const c = good[k];
    const swapped = /[0-9]/.test(c) ? String((Number(c) + int(1, 9)) % 10)
        : (c === 'Z' ? 'A' : String.fromCharCode(c.charCodeAt(0) + 1));
    const bad = good.slice(0, k) + swapped + good.slice(k + 1);
    return rand() < 0.5 ? bad : space4(bad);
}

const NEG = [
    () => `Order #${luhnBad('4' + digits(3), 16)} has shipped.`,
    () => `Tracking: ${groupCard(luhnBad(String(int(51, 55)), 16), ' ')} (not a card)`,
    () => `Reference number ${digits(int(20, 24))} in the ledger`,
    () => `Running version ${int(1, 9)}.${int(0, 20)}.${int(0, 99)}.${int(0, 999)} on prod`,
    () => `Upgraded to v${int(1, 20)}.${int(0, 9)}.${int(0, 9)}.${int(1, 9)} yesterday`,
    () => `build ${int(1, 9)}.${int(0, 9)}.${int(0, 9)}.${int(0, 9)}.${int(0, 99)} is out`,
    () => `Chrome/120.0.${int(1000, 9999)}.${int(10, 300)} Safari/537.36`,
    () => `Invoice ${ibanBad()} is overdue`,
    () => `Invoice id ${pick(['INV', 'PO', 'REF'])}${digits(int(14, 20))}`,
    () => `SSN field example: ${pick(['000', '666', String(int(900, 999))])}-${digits(2)}-${digits(4)}`,
    () => `ssn test value ${digits(3)}-00-${digits(4)}`,
    () => `ssn placeholder ${String(int(1, 899)).padStart(3, '0')}-${String(int(1, 99)).padStart(2, '0')}-0000`,
    () => `Timestamp 2024-0${int(1, 9)}-1${int(0, 9)}T${int(10, 23)}:${int(10, 59)}:${int(10, 59)}Z logged`,
    () => `epoch ${int(1600000000, 1799999999)} and ms ${int(1600000000, 1799999999)}${digits(3)}`,
    () => `request id ${uuid()} failed`,
    () => `commit ${chars(HEX, 40)} fixed it`,
    () => `short sha ${chars(HEX, 7)} and sha256:${chars(HEX, 64)}`,
    () => `Part number P/N ${digits(4)}-${digits(4)}-${digits(3)}`,
    () => `SKU ${digits(2)}-${digits(4)}-${digits(3)} in stock`,
    () => `call ticket 1${digits(2)}-${digits(3)}-${digits(4)} (internal)`,
    () => `The meeting is on ${dateText()} at 10:30.`,
    () => `Invoice date ${dateText()}, due in 30 days`,
    () => `Ping @${pick(FIRST)} on Slack about it`,
    () => `ssh ${pick(FIRST)}@localhost -p 22`,
    () => `pip install requests==2.${int(0, 31)}.${int(0, 9)} and sk-learn`,
    () => `the task-${chars(ALNUM, 12)} job and the sk-${chars('abcdefghij', 5)} flag`,
    () => `MAC ${Array.from({ length: 6 }, () => chars(HEX, 2)).join(':')} on eth0`,
    () => `at ${int(10, 23)}:${int(10, 59)}:${int(10, 59)} the job ran`,
    () => `use std::vector<int> and a::b in C++`,
    () => `Total: $${int(1, 99)},${digits(3)}.${digits(2)} for ${int(2, 40)} items`,
    () => `coordinates ${int(10, 80)}.${digits(6)}, ${int(10, 170)}.${digits(6)}`,
    () => `-----BEGIN CERTIFICATE-----\n${chars(B64, 64)}\n-----END CERTIFICATE-----`,
    () => `-----BEGIN PUBLIC KEY-----\n${chars(B64, 64)}\n-----END PUBLIC KEY-----`,
    () => `eyJ is how base64 JSON begins; eyJhbGciOi alone is not a token`,
    () => `key id AKIA-example and AKIA${chars(UPNUM, 10)} (truncated)`,
    () => `phone extension x${digits(4)}, room ${digits(3)}`,
    () => `ISBN 978-${digits(1)}-${digits(3)}-${digits(5)}-${digits(1)}`,
    () => `ratio 3+4 = 7, 1+1 = 2, x+12`,
    () => `the ${pick(['IP', 'version'])} field is 1.2.3 and 1.2.3.4.5.6`,
];

// ---- writing -------------------------------------------------------------

function generate() {
    const out = [];
    for (const type of Object.keys(POS)) {
        for (let k = 0; k < SAMPLES_PER_TYPE; k++) out.push(POS[type]());
    }
    for (let k = 0; k < NEGATIVES; k++) out.push(sample([pick(NEG)()]));
    for (let k = 0; k < MIXED; k++) {
        // two or three entities of different types in one text
        const types = Object.keys(POS);
        const parts = ['Customer note: '];
        const n = int(2, 3);
        for (let j = 0; j < n; j++) {
            const s = POS[pick(types)]();
            parts.push({ s });
            parts.push(j === n - 1 ? '.' : pick([' and ', '; ', '\n', ' | ']));
        }
        let text = '';
        const entities = [];
        for (const p of parts) {
            if (typeof p === 'string') { text += p; continue; }
            const base = Buffer.byteLength(text);
            text += p.s.text;
            for (const e of p.s.entities) {
                entities.push({ type: e.type, start: e.start + base, end: e.end + base });
            }
        }
        // a negative in between, sometimes
        if (rand() < 0.5) text += ' ' + pick(NEG)();
        out.push({ text, entities });
    }
    return out;
}

const file = process.argv.find((a, k) => k >= 2 && !a.startsWith('--')
    && process.argv[k - 1] !== '--seed')
    ?? 'tests/pii/corpus.jsonl';
const lines = generate().map((s) => JSON.stringify(s)).join('\n') + '\n';

if (process.argv.includes('--check')) {
    if (readFileSync(file, 'utf8') !== lines) {
        console.error(`${file} is not what gen.mjs writes: run node tools/pii-corpus/gen.mjs`);
        process.exit(1);
    }
} else {
    writeFileSync(file, lines);
    console.log(`${file}: ${lines.split('\n').length - 1} samples`);
}
