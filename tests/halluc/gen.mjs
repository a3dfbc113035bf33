#!/usr/bin/env node
// The labelled set of the hallucination score: tests/halluc/set.jsonl.
//
//   node tests/halluc/gen.mjs > tests/halluc/set.jsonl    (re)write it
//   node tests/halluc/gen.mjs --check                      the file is current
//
// Deterministic (a seeded PRNG, no clock): the same script writes the
// same bytes. Each line is one item:
//   {"id", "template", "kind", "label": "grounded" | "ungrounded",
//    "provider", "body": <request body>, "answer": <provider answer>}
// Six templates (earnings, trial, launch, city, match, contract) make a
// passage of facts with varied names, numbers and dates. Grounded answers
// restate some of those facts in other words and formats (paraphrase), a
// few with the rounding people use (hard: the score may call them
// unsupported). Ungrounded answers have the passage's shape but swapped
// numbers, invented names, shifted dates, or a fabricated mix; a few change
// one fact only (subtle). The passage reaches the model the way each
// provider carries material: system prompts, instructions, tool results,
// documents, or pasted into a long user turn.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const INSTANCES = 12;   // per template: 2 items each, 6 templates -> 144

function mulberry32(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

const rng = mulberry32(14);
const int = (lo, hi) => lo + Math.floor(rng() * (hi - lo + 1));
const pick = (a) => a[Math.floor(rng() * a.length)];
const other = (a, not) => {
    let v;
    do { v = pick(a); } while (v === not);
    return v;
};

const FIRST = ['Maria', 'John', 'Aiko', 'Rahul', 'Elena', 'Samuel', 'Chloe',
    'Tomasz', 'Nadia', 'Oliver', 'Ingrid', 'Kwame', 'Lucia', 'Hassan',
    'Freya', 'Diego', 'Mei', 'Pavel', 'Grace', 'Anton'];
const LAST = ['Keller', 'Barrow', 'Tanaka', 'Mehta', 'Rossi', 'Okafor',
    'Dubois', 'Nowak', 'Haddad', 'Brennan', 'Lindqvist', 'Mensah', 'Ferreira',
    'Aziz', 'Holm', 'Castillo', 'Zhang', 'Volkov', 'Whitfield', 'Kruger'];
const CO_A = ['Norvale', 'Brightwater', 'Kestrel', 'Solenne', 'Ardent',
    'Halcyon', 'Tidewell', 'Corvane', 'Pemberly', 'Quillon', 'Marrow',
    'Vantor', 'Ellory', 'Stratton', 'Fernhill'];
const CO_B = ['Systems', 'Robotics', 'Labs', 'Foods', 'Energy', 'Logistics',
    'Analytics', 'Therapeutics', 'Materials', 'Networks'];
const CITIES = ['Lyon', 'Rotterdam', 'Austin', 'Leeds', 'Porto', 'Tampere',
    'Brno', 'Adelaide', 'Calgary', 'Osaka', 'Valencia', 'Gdansk', 'Denver',
    'Bergen', 'Graz', 'Nantes', 'Malmo', 'Cork', 'Turin', 'Halifax'];
const RIVERS = ['Aldra', 'Wenner', 'Solva', 'Tamsin', 'Orrin', 'Lusk',
    'Brandt', 'Mirel'];
const PRODUCTS = ['Atlas line', 'Beacon series', 'Orbit kit', 'Summit range',
    'Nimbus platform', 'Harbor suite', 'Lumen module', 'Vertex engine',
    'Cascade set', 'Meridian pack'];
const AGENCIES = ['FDA', 'EMA', 'MHRA', 'PMDA', 'TGA'];
const BANKS = ['Hollis Partners', 'Crane Capital', 'Redfern Securities',
    'Alder Research', 'Wexford Markets'];
const DRUGS = ['Velorin', 'Tramadex', 'Osterel', 'Quinavir', 'Lumirastat',
    'Pelazone', 'Corvitrin', 'Abelarix'];
const TEAMS = ['Harbor City Falcons', 'Northgate Rovers', 'Eastfield United',
    'Riverside Athletic', 'Westmoor Wanderers', 'Kingsbridge Town',
    'Ashford Rangers', 'Millbrook Albion'];
const STADIUMS = ['Crown Park', 'Elm Road Stadium', 'Victoria Ground',
    'Lakeside Arena', 'Foundry Lane'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June',
    'July', 'August', 'September', 'October', 'November', 'December'];

const person = () => `${pick(FIRST)} ${pick(LAST)}`;
const otherPerson = (p) => {
    let q;
    do { q = person(); } while (q.split(' ').some((w) => p.includes(w)));
    return q;
};
const company = () => `${pick(CO_A)} ${pick(CO_B)}`;
const otherCompany = (c) => {
    let d;
    do { d = company(); } while (d.split(' ')[0] === c.split(' ')[0]);
    return d;
};

// numbers in the formats people write them
const commas = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
const spaces = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
const millions = (m10) => `${(m10 / 10).toFixed(1)} million`;
const fullDollars = (m10) => `$${commas(m10 * 100000)}`;
const shortDollars = (m10) => `$${(m10 / 10).toFixed(1)}M`;

const date = () => ({ y: int(2019, 2025), m: int(1, 12), d: int(1, 28) });
const shiftDate = (t) => ({ y: t.y, m: (t.m % 12) + 1, d: ((t.d + 9) % 28) + 1 });
const pad = (n) => String(n).padStart(2, '0');
const iso = (t) => `${t.y}-${pad(t.m)}-${pad(t.d)}`;
const mdy = (t) => `${MONTHS[t.m - 1]} ${t.d}, ${t.y}`;
const dmy = (t) => `${t.d} ${MONTHS[t.m - 1]} ${t.y}`;
const anyDate = (t) => pick([iso, mdy, dmy])(t);

const near = (v, lo, hi) => {
    let w;
    do { w = v + pick([-1, 1]) * int(lo, hi); } while (w <= 0 || w === v);
    return w;
};

// one template: facts, the passage, a question, answer styles
const TEMPLATES = {
    earnings: {
        facts: () => ({
            co: company(), city: pick(CITIES), city2: pick(CITIES),
            end: date(), rev: int(12, 990), growth: int(3, 45),
            ceo: person(), product: pick(PRODUCTS), staff: int(1100, 9800),
            bank: pick(BANKS),
        }),
        swap: (f) => ({ ...f, rev: near(f.rev, 15, 200), growth: near(f.growth, 4, 20),
                         staff: near(f.staff, 300, 2000) }),
        rename: (f) => ({ ...f, ceo: otherPerson(f.ceo), product: other(PRODUCTS, f.product),
                           bank: other(BANKS, f.bank) }),
        redate: (f) => ({ ...f, end: shiftDate(f.end) }),
        passage: (f) => `${f.co}, headquartered in ${f.city}, reported revenue of ` +
            `${fullDollars(f.rev)} for the quarter ending ${mdy(f.end)}, an ` +
            `increase of ${f.growth}% over the same quarter a year earlier. ` +
            `Chief executive ${f.ceo} said demand for the "${f.product}" drove ` +
            `most of the growth. The company employs ${commas(f.staff)} people ` +
            `and plans to open a second site in ${f.city2} next year. Analysts ` +
            `at ${f.bank} noted that operating margins were broadly stable.`,
        question: (f) => `How did ${f.co} do in its last quarter?`,
        styles: [
            (f) => `Revenue reached $${millions(f.rev)} in the quarter that ended on ` +
                `${iso(f.end)}, ${f.growth} percent higher than a year before. ` +
                `According to ${f.ceo}, the "${f.product}" was the main driver.`,
            (f) => `In the quarter ending ${dmy(f.end)}, the company grew revenue ` +
                `by ${f.growth}% to ${shortDollars(f.rev)}. It has ${spaces(f.staff)} ` +
                `employees, and ${f.bank} described margins as stable.`,
            (f) => `Sales rose ${f.growth}% year over year to ${fullDollars(f.rev)}. ` +
                `The chief executive, ${f.ceo}, credited the ${f.product}; headcount ` +
                `is ${commas(f.staff)}.`,
        ],
        rounded: (f) => `Revenue was roughly $${Math.round(f.rev / 10)} million, up ` +
            `about ${f.growth}% on the year, and ${f.ceo} credited the ${f.product}.`,
    },
    trial: {
        facts: () => ({
            drug: pick(DRUGS), sponsor: company(), n: int(120, 4800),
            eff: int(18, 87), placebo: int(3, 15), pi: person(),
            agency: pick(AGENCIES), read: date(), weeks: int(12, 96),
            site: pick(CITIES),
        }),
        swap: (f) => ({ ...f, n: near(f.n, 90, 900), eff: near(f.eff, 5, 25),
                         placebo: near(f.placebo, 2, 8), weeks: near(f.weeks, 6, 30) }),
        rename: (f) => ({ ...f, pi: otherPerson(f.pi), sponsor: otherCompany(f.sponsor),
                           agency: other(AGENCIES, f.agency) }),
        redate: (f) => ({ ...f, read: shiftDate(f.read) }),
        passage: (f) => `The phase 3 trial of ${f.drug}, sponsored by ${f.sponsor}, ` +
            `enrolled ${commas(f.n)} patients at sites led from ${f.site}. After ` +
            `${f.weeks} weeks, ${f.eff}% of patients on ${f.drug} reached the primary ` +
            `endpoint, against ${f.placebo}% on placebo. Principal investigator ` +
            `${f.pi} presented the results on ${dmy(f.read)}, and the sponsor said ` +
            `it would file with the ${f.agency} within the year. Serious adverse ` +
            `events were similar in both arms.`,
        question: (f) => `Summarise the ${f.drug} trial results.`,
        styles: [
            (f) => `The study enrolled ${f.n} patients; ${f.eff} percent met the ` +
                `primary endpoint on ${f.drug} versus ${f.placebo} percent on placebo ` +
                `after ${f.weeks} weeks. Results were presented by ${f.pi} on ${mdy(f.read)}.`,
            (f) => `In this phase 3 study run by ${f.sponsor}, the response rate was ` +
                `${f.eff}% (placebo: ${f.placebo}%). A filing with the ${f.agency} is planned.`,
            (f) => `After ${f.weeks} weeks of treatment, ${f.eff}% of the ${commas(f.n)} ` +
                `participants responded. The principal investigator, ${f.pi}, reported ` +
                `the data on ${iso(f.read)}.`,
        ],
        rounded: (f) => `Around ${Math.round(f.eff / 10) * 10}% of patients responded, ` +
            `far more than on placebo, according to ${f.pi}.`,
    },
    launch: {
        facts: () => ({
            co: company(), product: pick(PRODUCTS), price: int(49, 1899),
            hours: int(11, 72), warranty: int(2, 5), launch: date(),
            head: person(), units: int(1200, 98000), city: pick(CITIES),
        }),
        swap: (f) => ({ ...f, price: near(f.price, 20, 400), hours: near(f.hours, 3, 20),
                         units: near(f.units, 800, 20000), warranty: f.warranty + int(1, 3) }),
        rename: (f) => ({ ...f, head: otherPerson(f.head), co: otherCompany(f.co),
                           product: other(PRODUCTS, f.product) }),
        redate: (f) => ({ ...f, launch: shiftDate(f.launch) }),
        passage: (f) => `${f.co} released the ${f.product} on ${iso(f.launch)} at a ` +
            `list price of $${commas(f.price)}. The battery lasts up to ${f.hours} hours ` +
            `per charge and the device carries a ${f.warranty}-year warranty. Product ` +
            `lead ${f.head} said ${commas(f.units)} units were pre-ordered before ` +
            `launch, most of them through the flagship store in ${f.city}. Firmware ` +
            `updates are delivered monthly over the air.`,
        question: (f) => `What should I know about the ${f.product}?`,
        styles: [
            (f) => `It went on sale on ${mdy(f.launch)} for $${f.price}, runs for up to ` +
                `${f.hours} hours on a charge and comes with a ${f.warranty} year warranty.`,
            (f) => `The ${f.product} from ${f.co} costs $${commas(f.price)}. Before launch, ` +
                `${spaces(f.units)} units had been pre-ordered, said ${f.head}.`,
            (f) => `Launched ${dmy(f.launch)}, the device offers ${f.hours}-hour battery ` +
                `life; ${f.head} reported ${commas(f.units)} pre-orders, many in ${f.city}.`,
        ],
        rounded: (f) => `It costs about $${Math.round(f.price / 100) * 100} and the ` +
            `battery lasts most of a day, according to ${f.head}.`,
    },
    city: {
        facts: () => ({
            city: pick(CITIES), river: pick(RIVERS), founded: int(1050, 1890),
            pop: int(41000, 980000), mayor: person(), bridge: `${pick(LAST)} Bridge`,
            area: int(40, 900), since: int(2012, 2024),
        }),
        swap: (f) => ({ ...f, founded: near(f.founded, 20, 200), pop: near(f.pop, 5000, 90000),
                         area: near(f.area, 10, 120), since: near(f.since, 1, 6) }),
        rename: (f) => ({ ...f, mayor: otherPerson(f.mayor),
                           bridge: `${other(LAST, f.bridge.split(' ')[0])} Bridge`,
                           river: other(RIVERS, f.river) }),
        redate: (f) => ({ ...f, founded: f.founded + int(30, 90) }),
        passage: (f) => `The town guide says ${f.city} grew up on both banks of the ` +
            `${f.river} River after it was founded in ${f.founded}. Today it has ` +
            `${commas(f.pop)} inhabitants on ${f.area} square kilometres. The ` +
            `"${f.bridge}", rebuilt twice, links the old town to the market ` +
            `district. ${f.mayor} has been mayor since ${f.since}, and the council ` +
            `meets in the former customs house on the quay.`,
        question: (f) => `Tell me about the town from the guide.`,
        styles: [
            (f) => `Founded in ${f.founded} on the ${f.river} River, the town now has ` +
                `${spaces(f.pop)} residents. The mayor is ${f.mayor}, in office since ${f.since}.`,
            (f) => `It covers ${f.area} km2 and is home to ${commas(f.pop)} people; the ` +
                `"${f.bridge}" joins the old town and the market district.`,
            (f) => `The guide notes that ${f.mayor} has led the council since ${f.since} ` +
                `and that the town dates from ${f.founded}.`,
        ],
        rounded: (f) => `It is an old river town of roughly ${Math.round(f.pop / 1000)} ` +
            `thousand people, run by ${f.mayor}.`,
    },
    match: {
        facts: () => {
            const home = pick(TEAMS);
            return {
                home, away: other(TEAMS, home), hg: int(0, 6), ag: int(0, 6),
                day: date(), venue: pick(STADIUMS), crowd: int(11000, 78000),
                scorer: person(), coach: person(), minute: int(12, 89),
            };
        },
        swap: (f) => ({ ...f, hg: f.hg + int(1, 2), ag: f.ag + int(1, 3),
                         crowd: near(f.crowd, 2000, 9000), minute: near(f.minute, 5, 30) }),
        rename: (f) => ({ ...f, scorer: otherPerson(f.scorer), coach: otherPerson(f.coach),
                           venue: other(STADIUMS, f.venue) }),
        redate: (f) => ({ ...f, day: shiftDate(f.day) }),
        passage: (f) => `Match report: ${f.home} ${f.hg}, ${f.away} ${f.ag}. Played ` +
            `at ${f.venue} on ${mdy(f.day)} in front of ${commas(f.crowd)} ` +
            `spectators. ${f.scorer} scored in the ${f.minute}th minute and was named ` +
            `player of the match. Afterwards, coach ${f.coach} praised the defence ` +
            `and said the squad would rest key players before the cup tie.`,
        question: (f) => `How did the ${f.home} game go?`,
        styles: [
            (f) => `The final score was ${f.hg}-${f.ag} at ${f.venue}, watched by ` +
                `${spaces(f.crowd)} fans on ${dmy(f.day)}. ${f.scorer} struck in the ` +
                `${f.minute}th minute.`,
            (f) => `On ${iso(f.day)} the home side met ${f.away}; the crowd was ` +
                `${commas(f.crowd)}, and coach ${f.coach} praised his defence.`,
            (f) => `Player of the match was ${f.scorer}, who scored after ${f.minute} ` +
                `minutes in front of ${commas(f.crowd)} people at ${f.venue}.`,
        ],
        rounded: (f) => `A crowd of about ${Math.round(f.crowd / 1000)} thousand saw ` +
            `${f.scorer} score for the home side.`,
    },
    contract: {
        facts: () => {
            const buyer = company();
            return {
                buyer, seller: otherCompany(buyer), value: int(15, 950),
                start: date(), months: int(12, 60), law: pick(CITIES),
                signer: person(), notice: int(30, 180), cap: int(5, 40),
            };
        },
        swap: (f) => ({ ...f, value: near(f.value, 10, 150), months: near(f.months, 6, 24),
                         notice: near(f.notice, 15, 60), cap: near(f.cap, 3, 12) }),
        rename: (f) => ({ ...f, signer: otherPerson(f.signer), seller: otherCompany(f.seller),
                           law: other(CITIES, f.law) }),
        redate: (f) => ({ ...f, start: shiftDate(f.start) }),
        passage: (f) => `This services agreement between ${f.buyer} (the Customer) and ` +
            `${f.seller} (the Supplier) takes effect on ${dmy(f.start)} and runs for ` +
            `${f.months} months. The total contract value is ${fullDollars(f.value)}. ` +
            `Either party may terminate with ${f.notice} days' written notice. ` +
            `Liability is capped at ${f.cap}% of fees paid. The agreement is governed ` +
            `by the courts of ${f.law} and was signed for the Supplier by ${f.signer}.`,
        question: (f) => `What are the key terms of this contract?`,
        styles: [
            (f) => `The agreement starts on ${mdy(f.start)} for a term of ${f.months} ` +
                `months and is worth $${millions(f.value)}. Termination requires ` +
                `${f.notice} days' notice.`,
            (f) => `${f.seller} supplies the services from ${iso(f.start)}; liability ` +
                `is limited to ${f.cap} percent of fees, and disputes go to the courts ` +
                `of ${f.law}.`,
            (f) => `Its value is ${shortDollars(f.value)} over ${f.months} months, and ` +
                `it was signed for the supplier by ${f.signer}.`,
        ],
        rounded: (f) => `It runs for ${Math.round(f.months / 12)} years or so and is ` +
            `worth about $${Math.round(f.value / 10)} million, signed by ${f.signer}.`,
    },
};

// how each provider carries the passage, and its answer shape
const CARRIERS = [
    ['openai', 'system'], ['anthropic', 'system'], ['google', 'system'],
    ['cohere', 'documents'], ['openai', 'tool'], ['mistral', 'system'],
    ['azure', 'system'], ['openai', 'responses'], ['openai', 'pasted'],
    ['anthropic', 'tool'], ['cohere', 'v1'], ['anthropic', 'pasted'],
];

function body(provider, carrier, passage, question) {
    const sys = `You answer questions using only the material below.\n\n${passage}`;
    const pasted = `Here is a document I was sent:\n\n${passage}\n\n` +
        `Please read it carefully. ${question}`;

    switch (`${provider}/${carrier}`) {
    case 'openai/system': case 'mistral/system': case 'azure/system':
        return { model: provider === 'mistral' ? 'mistral-small-latest' : 'gpt-4o-mini',
                 messages: [{ role: 'system', content: sys },
                            { role: 'user', content: question }] };
    case 'openai/tool':
        return { model: 'gpt-4o-mini', messages: [
            { role: 'user', content: question },
            { role: 'assistant', content: null, tool_calls: [{ id: 'call_1',
              type: 'function', function: { name: 'search', arguments: '{"q":"facts"}' } }] },
            { role: 'tool', tool_call_id: 'call_1', content: passage }] };
    case 'openai/responses':
        return { model: 'gpt-4o-mini', instructions: sys, input: question };
    case 'openai/pasted': case 'anthropic/pasted':
        return provider === 'openai'
            ? { model: 'gpt-4o-mini', messages: [{ role: 'user', content: pasted }] }
            : { model: 'claude-3-5-haiku-latest', max_tokens: 512,
                messages: [{ role: 'user', content: pasted }] };
    case 'anthropic/system':
        return { model: 'claude-3-5-haiku-latest', max_tokens: 512, system: sys,
                 messages: [{ role: 'user', content: question }] };
    case 'anthropic/tool':
        return { model: 'claude-3-5-haiku-latest', max_tokens: 512, messages: [
            { role: 'user', content: question },
            { role: 'assistant', content: [{ type: 'tool_use', id: 'tu_1', name: 'search',
              input: { q: 'facts' } }] },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'tu_1',
              content: passage }] }] };
    case 'google/system':
        return { systemInstruction: { parts: [{ text: sys }] },
                 contents: [{ role: 'user', parts: [{ text: question }] }] };
    case 'cohere/documents':
        return { model: 'command-r-plus', messages: [{ role: 'user', content: question }],
                 documents: [{ id: 'doc1', data: { title: 'Source', text: passage } }] };
    case 'cohere/v1':
        return { model: 'command-r', message: question,
                 documents: [{ title: 'Source', snippet: passage }] };
    default:
        throw new Error(`no carrier ${provider}/${carrier}`);
    }
}

function answer(provider, carrier, text, length) {
    switch (provider === 'azure' || provider === 'mistral' ? 'openai' : provider) {
    case 'openai':
        if (carrier === 'responses') {
            return { object: 'response', status: length ? 'incomplete' : 'completed',
                     incomplete_details: length ? { reason: 'max_output_tokens' } : null,
                     output: [{ type: 'message', role: 'assistant',
                                content: [{ type: 'output_text', text }] }] };
        }
        return { object: 'chat.completion', choices: [{ index: 0,
                 message: { role: 'assistant', content: text },
                 finish_reason: length ? 'length' : 'stop' }] };
    case 'anthropic':
        return { type: 'message', role: 'assistant', content: [{ type: 'text', text }],
                 stop_reason: length ? 'max_tokens' : 'end_turn' };
    case 'google':
        return { candidates: [{ content: { role: 'model', parts: [{ text }] },
                 finishReason: length ? 'MAX_TOKENS' : 'STOP' }] };
    case 'cohere':
        if (carrier === 'v1') {
            return { text, finish_reason: length ? 'MAX_TOKENS' : 'COMPLETE' };
        }
        return { message: { role: 'assistant', content: [{ type: 'text', text }] },
                 finish_reason: length ? 'MAX_TOKENS' : 'COMPLETE' };
    default:
        throw new Error(provider);
    }
}

// two or three sentences of the template's styles, in a random order
function compose(t, f) {
    const idx = [0, 1, 2].sort(() => rng() - 0.5).slice(0, int(2, 3));
    return idx.map((i) => t.styles[i](f)).join(' ');
}

function items() {
    const out = [];
    let c = 0;

    for (const [name, t] of Object.entries(TEMPLATES)) {
        for (let i = 0; i < INSTANCES; i++) {
            const f = t.facts();
            const passage = t.passage(f);
            const question = t.question(f);
            const [provider, carrier] = CARRIERS[c++ % CARRIERS.length];
            const req = body(provider, carrier, passage, question);

            // grounded: a paraphrase, or (1 in 6) the rounding people use
            const gkind = i % 6 === 5 ? 'rounded' : 'paraphrase';
            const gtext = gkind === 'rounded' ? t.rounded(f) : compose(t, f);

            // ungrounded: what changed
            const ukind = ['swapped-numbers', 'invented-names', 'shifted-dates',
                           'fabricated', 'swapped-numbers', 'subtle'][i % 6];
            let g;
            switch (ukind) {
            case 'swapped-numbers': g = t.swap(f); break;
            case 'invented-names': g = t.rename(f); break;
            case 'shifted-dates': g = t.redate(t.swap(f)); break;
            case 'fabricated': g = t.rename(t.redate(t.swap(f))); break;
            default: g = t.swap(f);
            }
            let utext;
            if (ukind === 'subtle') {
                // one sentence with changed facts among true ones
                const [a, b] = [0, 1, 2].sort(() => rng() - 0.5);
                utext = `${t.styles[a](f)} ${t.styles[b](g)}`;
            } else {
                utext = compose(t, g);
            }

            // a few answers of each label stop at their length limit
            const glen = i % 8 === 3;
            const ulen = i % 8 === 6;
            const id = `${name}-${String(i + 1).padStart(2, '0')}`;

            out.push({ id: `${id}-g`, template: name, kind: gkind, label: 'grounded',
                       provider, body: req, answer: answer(provider, carrier, gtext, glen) });
            out.push({ id: `${id}-u`, template: name, kind: ukind, label: 'ungrounded',
                       provider, body: req, answer: answer(provider, carrier, utext, ulen) });
        }
    }

    return out;
}

const text = items().map((x) => JSON.stringify(x)).join('\n') + '\n';

if (process.argv.includes('--check')) {
    const file = join(dirname(fileURLToPath(import.meta.url)), 'set.jsonl');
    if (readFileSync(file, 'utf8') !== text) {
        console.error('tests/halluc/set.jsonl is stale: ' +
                      'node tests/halluc/gen.mjs > tests/halluc/set.jsonl');
        process.exit(1);
    }
    console.log('tests/halluc/set.jsonl is current');
} else {
    process.stdout.write(text);
}
