/*
 * libspendpol micro-benchmarks: parsers in MB/s, key lookup in ns,
 * snapshot build, publish and load for a large number of keys.
 *
 * usage: micro [keys]      (default 1000000)
 *        micro tokenize    (the tokenizer, and a request's count)
 *        micro journal     (the journal line parser only)
 *        micro cache       (the response cache key only)
 *        micro semantic    (the semantic cache: search and guard)
 *        micro template    (a prompt template applied to a request)
 *        micro translate   (a request to Anthropic and its answer back)
 *        micro route       (100 routing rules, none matching)
 *        micro policy      (20 policies on a 2 KB chat body)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>

#include <jansson.h>

#include "spendpol.h"
#include "sp_cache.h"
#include "sp_journal.h"
#include "sp_route.h"
#include "sp_semantic.h"
#include "sp_snapshot.h"
#include "sp_translate.h"
#include "sp_template.h"
#include "sp_tokenize.h"
#include "sp_usage.h"
#include "sp_pii.h"
#include "sp_policy.h"


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static const char  chunk_event[] =
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":"
    "\"chat.completion.chunk\",\"created\":1727292222,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1bb46167f9\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" governance\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

static const char  usage_event[] =
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":"
    "\"chat.completion.chunk\",\"created\":1727292222,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
    "1024,\"completion_tokens\":512,\"total_tokens\":1536,"
    "\"prompt_tokens_details\":{\"cached_tokens\":512}}}\n\n"
    "data: [DONE]\n\n";

static const char  completion[] =
    "{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":"
    "\"chat.completion\",\"created\":1727292511,\"model\":"
    "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Spend governance keeps every "
    "call within budget, priced to the nano-dollar, and written to the "
    "audit log before the next one starts.\",\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":"
    "{\"prompt_tokens\":19,\"completion_tokens\":28,\"total_tokens\":47,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}";

static const char  request[] =
    "{\"model\":\"gpt-4o-mini\",\"max_tokens\":256,\"stream\":false,"
    "\"messages\":[{\"role\":\"system\",\"content\":\"You are a careful "
    "assistant for the finance team.\"},{\"role\":\"user\",\"content\":"
    "\"Summarise last month's spend by department and flag anything above "
    "budget, with the three largest line items for each.\"}]}";


static void
bench_sse(void)
{
    char               *stream, *data;
    size_t              n, len, i, off, step;
    double              t0, t1;
    int                 done, rounds, r;
    sp_sse_t            sse;
    sp_response_info_t  info;

    n = 20000;
    len = n * (sizeof(chunk_event) - 1) + sizeof(usage_event) - 1;
    stream = malloc(len);
    data = malloc(65536);

    if (stream == NULL || data == NULL) {
        exit(1);
    }

    for (i = 0; i < n; i++) {
        memcpy(stream + i * (sizeof(chunk_event) - 1), chunk_event,
               sizeof(chunk_event) - 1);
    }

    memcpy(stream + n * (sizeof(chunk_event) - 1), usage_event,
           sizeof(usage_event) - 1);

    rounds = 5;

    /* the parser alone, fed 4 KiB reads as they come off a socket */
    t0 = now_s();

    for (r = 0; r < rounds; r++) {
        sp_sse_init(&sse, data, 65536);

        for (off = 0; off < len; off += step) {
            step = len - off < 4096 ? len - off : 4096;
            i = 0;

            while (i < step) {
                i += sp_sse_feed(&sse, stream + off + i, step - i, &done);
            }
        }
    }

    t1 = now_s();
    printf("sse parser                    %8.0f MB/s\n",
           rounds * len / (t1 - t0) / 1e6);

    /* and with every event's JSON looked at, as the module does */
    t0 = now_s();

    for (r = 0; r < rounds; r++) {
        sp_sse_init(&sse, data, 65536);
        memset(&info, 0, sizeof(info));

        for (off = 0; off < len; off += step) {
            step = len - off < 4096 ? len - off : 4096;
            i = 0;

            while (i < step) {
                i += sp_sse_feed(&sse, stream + off + i, step - i, &done);

                if (done) {
                    (void) sp_usage_from_event(SP_PROVIDER_OPENAI, sse.event,
                                               sse.data, sse.data_len, &info);
                }
            }
        }
    }

    t1 = now_s();
    printf("sse parser + usage per event  %8.0f MB/s  (%.2f us/event)\n",
           rounds * len / (t1 - t0) / 1e6,
           (t1 - t0) / (rounds * (double) (n + 2)) * 1e6);

    if (!info.has_usage || info.usage.input_tokens != 1024) {
        fprintf(stderr, "sse benchmark read the wrong usage\n");
        exit(1);
    }

    free(stream);
    free(data);
}


static void
bench_json(void)
{
    double              t0, t1;
    int                 i, n;
    char                err[256];
    sp_request_info_t   req;
    sp_response_info_t  info;

    n = 200000;
    t0 = now_s();

    for (i = 0; i < n; i++) {
        memset(&info, 0, sizeof(info));
        (void) sp_usage_from_json(SP_PROVIDER_OPENAI, completion,
                                  sizeof(completion) - 1, &info);
    }

    t1 = now_s();
    printf("usage from a JSON completion  %8.2f us  (%.0f MB/s)\n",
           (t1 - t0) / n * 1e6, n * (sizeof(completion) - 1) / (t1 - t0)
           / 1e6);

    t0 = now_s();

    for (i = 0; i < n; i++) {
        (void) sp_request_parse(SP_PROVIDER_OPENAI, request,
                                sizeof(request) - 1, &req, err, sizeof(err));
    }

    t1 = now_s();
    printf("request body parse            %8.2f us  (%.0f MB/s)\n",
           (t1 - t0) / n * 1e6, n * (sizeof(request) - 1) / (t1 - t0) / 1e6);
}


static void
bench_snapshot(size_t keys)
{
    int                      fd;
    char                     key[SP_KEY_LEN + 1], id[32], err[256];
    void                    *map;
    size_t                   i, hits;
    double                   t0, t1, t2;
    uint8_t                  hash[SP_KEY_HASH_LEN], (*hashes)[SP_KEY_HASH_LEN];
    struct stat              st;
    sp_snapshot_t            s;
    sp_snapshot_key_in_t     in;
    sp_snapshot_builder_t   *b;

    hashes = malloc(keys * SP_KEY_HASH_LEN);
    if (hashes == NULL) {
        exit(1);
    }

    t0 = now_s();
    b = sp_snapshot_builder_new(1);

    for (i = 0; i < keys; i++) {
        snprintf(key, sizeof(key), "sp_key_%048zx", i);
        sp_key_hash(key, SP_KEY_LEN, hashes[i]);

        memset(&in, 0, sizeof(in));
        memcpy(in.key_hash, hashes[i], SP_KEY_HASH_LEN);
        snprintf(id, sizeof(id), "key_%024zx", i);
        in.key_id = id;
        in.org_id = "org_default";
        in.name = "bench";
        in.department = "engineering";
        in.project = "gateway";
        in.scopes = SP_SCOPE_PROXY;

        if (sp_snapshot_add_key(b, &in) != SP_OK) {
            exit(1);
        }
    }

    t1 = now_s();

    if (sp_snapshot_publish(b, "/dev/shm", "spendpol-micro.snap", 0600, err,
                            sizeof(err)) != SP_OK)
    {
        fprintf(stderr, "publish: %s\n", err);
        exit(1);
    }

    t2 = now_s();
    sp_snapshot_builder_free(b);

    printf("snapshot of %zu keys: add %.2f s, build+write %.2f s\n",
           keys, t1 - t0, t2 - t1);

    fd = open("/dev/shm/spendpol-micro.snap", O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        exit(1);
    }

    /* what a worker does on a new generation: map and validate */
    t0 = now_s();
    map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);

    if (map == MAP_FAILED
        || sp_snapshot_open(&s, map, st.st_size, err, sizeof(err)) != SP_OK)
    {
        fprintf(stderr, "open: %s\n", err);
        exit(1);
    }

    t1 = now_s();
    printf("snapshot load (map + validate) %.1f ms for %.0f MB\n",
           (t1 - t0) * 1e3, st.st_size / 1e6);

    hits = 0;
    t0 = now_s();

    for (i = 0; i < keys; i++) {
        hits += sp_snapshot_find_key(&s, hashes[(i * 7919) % keys]) != NULL;
    }

    t1 = now_s();
    printf("key lookup (hit)              %8.0f ns\n", (t1 - t0) / keys * 1e9);

    t0 = now_s();

    for (i = 0; i < keys; i++) {
        memcpy(hash, hashes[i], sizeof(hash));
        hash[31] ^= 0x5a;
        hash[0] ^= 0xa5;
        hits += sp_snapshot_find_key(&s, hash) != NULL;
    }

    t1 = now_s();
    printf("key lookup (miss)             %8.0f ns\n", (t1 - t0) / keys * 1e9);

    t0 = now_s();

    for (i = 0; i < 1000000; i++) {
        snprintf(key, sizeof(key), "sp_key_%048zx", i % keys);
        sp_key_hash(key, SP_KEY_LEN, hash);
    }

    t1 = now_s();
    printf("key hash (SHA-256)            %8.0f ns\n", (t1 - t0) / 1e6 * 1e9);

    if (hits != keys) {
        fprintf(stderr, "lookups found %zu of %zu keys\n", hits, keys);
        exit(1);
    }

    munmap(map, st.st_size);
    close(fd);
    unlink("/dev/shm/spendpol-micro.snap");
    free(hashes);
}


/* a mixed prompt corpus: prose, code, JSON, numbers, CJK, RTL, emoji */
static const char  *tok_corpus[] = {
    "The quick brown fox jumps over the lazy dog. It's a sentence that "
    "uses every letter; we've used it for years, and they're still "
    "typing it. Budgets, invoices and quarterly reports: 1,234,567.89 USD "
    "spent on 42 projects in 2026.\n\n",
    "def handler(event, context):\n    items = [x * 2 for x in event['items']]"
    "\n    if not items:\n        return {\"status\": 404}\n    return {\"status\":"
    " 200, \"items\": items}\n\n",
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":"
    "\"Summarise the attached report in three bullet points.\"}]}\n",
    "日本語のテキストと中文文本，还有한국어 텍스트도 있습니다。\n",
    "عربي: مرحبا بالعالم. עברית: שלום עולם. हिन्दी: नमस्ते दुनिया।\n",
    "Emoji 😀👍🏽 👨‍👩‍👧‍👦 and accents: café, naïve, Zürich, São Paulo.\n",
    "        indented    with    runs   of   spaces\t\tand tabs\n\n\n\n",
};


static size_t
tok_fresh_words(char *buf, size_t cap)
{
    size_t     len, k, n;
    uint64_t   seed;
    const char *syl;

    static const char  *syllables[] = {
        "ka", "ron", "te", "vil", "ma", "sor", "pi", "quen", "da", "lu",
        "bre", "ost", "ing", "zu", "fal", "ne", "gro", "wy", "char", "ex",
        "sto", "mi", "pla", "un", "der", "tho", "ve", "sk", "li", "nar",
    };

    seed = 7;
    len = 0;

    while (len + 64 < cap) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        n = 1 + (seed >> 60) % 5;

        if ((seed >> 20) % 11 == 0) {
            len += snprintf(buf + len, cap - len, " %llu",
                            (unsigned long long) (seed >> 40));
            continue;
        }

        buf[len++] = ((seed >> 24) % 7 == 0) ? '\n' : ' ';

        for (k = 0; k < n; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            syl = syllables[(seed >> 33) % 30];
            memcpy(buf + len, syl, strlen(syl));
            len += strlen(syl);
        }

        if ((seed >> 50) % 9 == 0) {
            buf[len++] = ((seed >> 45) % 2) ? ',' : '.';
        }
    }

    return len;
}


/* CPU time of this thread: MB/s per core, whatever else runs */
static double
cpu_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
bench_tokenize_one(sp_tok_encoding_e e, const sp_tok_vocab_t *vocab,
    const char *buf, size_t len, const char *prompt, size_t plen)
{
    int               i, rounds;
    char              err[256];
    double            t0, t1;
    uint64_t          tokens;
    sp_tok_ctx_t     *ctx;
    sp_tok_enc_t     *enc;
    sp_tok_result_t   res;

    enc = sp_tok_enc_create(e, vocab, err, sizeof(err));
    ctx = sp_tok_ctx_create(0);

    if (enc == NULL || ctx == NULL) {
        fprintf(stderr, "tokenizer: %s\n", enc ? "out of memory" : err);
        exit(1);
    }

    /* once to warm the caches */
    tokens = sp_tok_count(enc, ctx, buf, len, NULL);

    rounds = 5;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        memset(&res, 0, sizeof(res));
        tokens = sp_tok_count(enc, ctx, buf, len, &res);
    }

    t1 = cpu_s();

    printf("tokenize %-12s         %8.1f MB/s  (%.1f M tokens/s, "
           "%.2f bytes/token)\n", vocab->name,
           rounds * len / (t1 - t0) / 1e6,
           rounds * tokens / (t1 - t0) / 1e6, (double) len / tokens);

    rounds = 20000;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        tokens = sp_tok_count(enc, ctx, prompt, plen, NULL);
    }

    t1 = cpu_s();

    printf("tokenize %-12s %zu B    %8.2f us  (%llu tokens)\n",
           vocab->name, plen, (t1 - t0) / rounds * 1e6,
           (unsigned long long) tokens);

    sp_tok_ctx_free(ctx);
    sp_tok_enc_free(enc);
}


static void
bench_tokenize(void)
{
    char    *buf;
    size_t   len, cap, i, n, plen;

    /* 4 MiB of the corpus, in rotation */
    cap = 4 * 1024 * 1024;
    buf = malloc(cap);
    if (buf == NULL) {
        exit(1);
    }

    len = 0;
    n = sizeof(tok_corpus) / sizeof(tok_corpus[0]);

    for (i = 0; ; i++) {
        size_t  l = strlen(tok_corpus[i % n]);

        if (len + l > cap) {
            break;
        }

        memcpy(buf + len, tok_corpus[i % n], l);
        len += l;
    }

    /* a typical prompt: the first 2 KB of it */
    plen = len < 2048 ? len : 2048;

    printf("tokenize: 4 MiB of mixed text (prose, code, JSON, CJK, RTL, "
           "emoji, whitespace)\n");
    bench_tokenize_one(SP_TOK_O200K_BASE, &sp_tok_vocab_o200k_base, buf, len,
                       buf, plen);
    bench_tokenize_one(SP_TOK_CL100K_BASE, &sp_tok_vocab_cl100k_base, buf,
                       len, buf, plen);

    /*
     * The same corpus repeats its words, which the context's piece cache
     * remembers. Words made of random syllables (about 10^7 of them, few
     * seen twice) and random numbers show the cost without that help.
     */
    len = tok_fresh_words(buf, cap);
    printf("tokenize: 4 MiB of words rarely seen twice (no cache help)\n");
    bench_tokenize_one(SP_TOK_O200K_BASE, &sp_tok_vocab_o200k_base, buf, len,
                       buf, plen);
    bench_tokenize_one(SP_TOK_CL100K_BASE, &sp_tok_vocab_cl100k_base, buf,
                       len, buf, plen);
    free(buf);
}


/*
 * The request path's count: a chat body (messages from the corpus, in
 * rotation, JSON-escaped) parsed by sp_request_parse and counted by
 * sp_request_count_prompt, as the module does for an OpenAI model. MB/s
 * of body per core, and us for a body of about size bytes.
 */
static void
bench_request_count_one(const sp_request_tokenizer_t *tokenizer,
    const char *model, size_t size)
{
    int                 i, rounds;
    char               *body, err[256];
    size_t              len, n, k;
    double              t0, t1;
    json_t             *root, *messages;
    sp_request_info_t   info;

    n = sizeof(tok_corpus) / sizeof(tok_corpus[0]);
    messages = json_array();

    for (k = 0, len = 0; len < size; k++) {
        json_array_append_new(messages,
            json_pack("{s:s, s:s}", "role", k % 2 ? "assistant" : "user",
                      "content", tok_corpus[k % n]));
        len += strlen(tok_corpus[k % n]) + 32;
    }

    root = json_pack("{s:s, s:i, s:o}", "model", model, "max_tokens", 256,
                     "messages", messages);
    body = json_dumps(root, JSON_COMPACT);
    len = strlen(body);

    rounds = (int) (64 * 1024 * 1024 / len) + 1;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        if (sp_request_parse(SP_PROVIDER_OPENAI, body, len, &info, err,
                             sizeof(err))
            != SP_OK
            || sp_request_count_prompt(tokenizer, SP_PROVIDER_OPENAI, model,
                                       0, body, len, &info)
               != SP_OK)
        {
            fprintf(stderr, "request count: %s\n", err);
            exit(1);
        }
    }

    t1 = cpu_s();

    printf("request parse + count %-12s %6zu B  %8.1f MB/s  %9.2f us  "
           "(%lld tokens, %lld bytes bound)\n", model, len,
           rounds * len / (t1 - t0) / 1e6, (t1 - t0) / rounds * 1e6,
           (long long) info.prompt_tokens,
           (long long) (info.prompt_bytes + SP_REQUEST_FRAMING_TOKENS));

    free(body);
    json_decref(root);
}


static void
bench_request_count(void)
{
    int                     e;
    char                    err[256];
    sp_tok_enc_t           *enc[SP_TOK_ENCODINGS];
    sp_request_tokenizer_t  tokenizer;

    static const sp_tok_vocab_t  *vocab[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        enc[e] = sp_tok_enc_create(e, vocab[e], err, sizeof(err));

        if (enc[e] == NULL) {
            fprintf(stderr, "tokenizer: %s\n", err);
            exit(1);
        }

        tokenizer.enc[e] = enc[e];
    }

    tokenizer.ctx = sp_tok_ctx_create(0);

    if (tokenizer.ctx == NULL) {
        exit(1);
    }

    printf("request: a chat body parsed and its prompt counted exactly\n");
    bench_request_count_one(&tokenizer, "gpt-4o", 2048);
    bench_request_count_one(&tokenizer, "gpt-4o", 64 * 1024);
    bench_request_count_one(&tokenizer, "gpt-4", 64 * 1024);

    sp_tok_ctx_free(tokenizer.ctx);

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        sp_tok_enc_free(enc[e]);
    }
}


/*
 * controld's ingest: one journal line as the module writes it (a typical
 * record, nothing escaped; and one with escapes in its strings), parsed
 * again and again. ns per line in thread CPU time.
 */
static void
bench_journal_one(const char *what, const sp_journal_record_t *rec)
{
    int                  i, rounds;
    char                 line[SP_JOURNAL_LINE_MAX], err[256];
    size_t               len;
    double               t0, t1;
    sp_journal_record_t  out;

    len = sp_journal_format(rec, line, sizeof(line));

    if (len == 0 || sp_journal_parse(line, len, &out, err, sizeof(err))
                    != SP_OK)
    {
        fprintf(stderr, "journal: %s\n", len ? err : "line too long");
        exit(1);
    }

    rounds = 200000;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        sp_journal_parse(line, len, &out, err, sizeof(err));
    }

    t1 = cpu_s();

    printf("journal line parse, %-8s %zu B %8.0f ns\n", what, len,
           (t1 - t0) / rounds * 1e9);
}


static void
bench_journal(void)
{
    sp_journal_record_t  rec;

    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_01JDX4Z7Q8M2N5P6R7S8T9V0WX");
    rec.ts_ms = 1764230000123LL;
    strcpy(rec.org_id, "org_default");
    strcpy(rec.api_key_id, "key_000000000000000000000042");
    strcpy(rec.provider, "openai");
    strcpy(rec.requested_model, "gpt-4o-mini");
    strcpy(rec.model, "gpt-4o-mini-2024-07-18");
    rec.input_tokens = 1234;
    rec.output_tokens = 567;
    rec.cached_tokens = 1024;
    rec.cost_nano = 150000;
    rec.status = 200;
    strcpy(rec.cache, "miss");
    rec.stream = 1;
    rec.latency_ms = 842;
    rec.gateway_us = 85;
    strcpy(rec.department, "engineering");
    strcpy(rec.project, "gateway");
    strcpy(rec.agent_id, "agent-7");
    strcpy(rec.trace_id, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
    strcpy(rec.span_id, "00f067aa0ba902b7");
    strcpy(rec.warnings, "usage_estimated");
    rec.epoch = 1764230000000LL;
    rec.reserved_nano = 450000;
    strcpy(rec.endpoint, "POST /chat/completions");

    bench_journal_one("plain", &rec);

    strcpy(rec.project, "caf\xc3\xa9 \"quoted\"\tand\\slashed");
    strcpy(rec.agent_id, "\xe6\x97\xa5\xe6\x9c\xac\x01");

    bench_journal_one("escaped", &rec);
}


/*
 * The response cache's key (sp_cache_key) on a chat body as the OpenAI
 * SDKs send it: compact, members in the SDK's order (model, messages,
 * max_tokens, temperature), every message {"role","content"}, so every
 * object is out of order and gets sorted. A system prompt and the user's
 * question make about 2 KB; a conversation of turns about 20 KB. ns per
 * key in thread CPU time, and the scratch the caller allocates.
 */
static void
bench_cache_key_one(size_t size)
{
    int                 i, rounds;
    char               *body, *scratch, err[256];
    size_t              len, cap, need, k;
    double              t0, t1;
    uint8_t             key[SP_CACHE_KEY_LEN];
    sp_cache_key_in_t   in;

    static const char  system[] =
        "You are a careful assistant for the finance team of a mid-sized "
        "company. Answer in plain English, cite the ledger lines you rely "
        "on, never invent figures, and say so when the data you were given "
        "does not answer the question. Amounts are in US dollars unless a "
        "line says otherwise; round to whole dollars in prose and keep "
        "cents in tables. When a department is over budget, name the three "
        "largest contributors and whether each is recurring. Keep answers "
        "under three hundred words unless asked for more detail. If a "
        "question needs numbers from outside the export, ask for them "
        "rather than estimating, and list what you would need.";
    static const char  question[] =
        "Here is last month's spend export. Summarise it by department, "
        "flag anything above budget and suggest where to look first.\\n\\n"
        "department,line,amount,budget\\nengineering,cloud compute,48210.55,"
        "45000\\nengineering,LLM APIs,12877.10,10000\\nmarketing,events,"
        "23100.00,25000\\nmarketing,ads,31877.42,30000\\nsales,travel,"
        "9120.77,12000\\nsales,CRM seats,7600.00,7600\\nfinance,audit,"
        "15000.00,15000\\nsupport,contractors,21455.90,20000\\n"
        "support,tooling,4380.00,5000\\nlegal,outside counsel,18250.00,"
        "15000\\nlegal,filings,1200.00,2000\\nhr,recruiting,11990.35,"
        "12000\\nhr,benefits admin,3300.00,3300\\noperations,rent,"
        "41000.00,41000\\noperations,utilities,5210.66,5000\\n"
        "operations,insurance,7800.00,7800\\nresearch,lab supplies,"
        "9344.12,8000\\nresearch,conferences,6120.00,4000\\n\\n"
        "Last month engineering moved two services to a new region, and "
        "marketing ran its spring campaign three weeks early; both may "
        "explain some of the variance. Finance also asked whether the "
        "legal overrun is a one-off: the outside counsel line covers a "
        "contract dispute that should settle this quarter. Please keep "
        "the summary short enough to paste into the monthly report, then "
        "add a table with one row per department (spend, budget, "
        "difference) and a last paragraph on what to watch next month, "
        "especially the LLM API line, which has grown every month.";
    static const char  answer[] =
        "Engineering is 6,088 dollars over budget: cloud compute (48,211 "
        "against 45,000, recurring) and LLM APIs (12,877 against 10,000, "
        "growing month on month). Marketing's ads ran 1,877 over while "
        "events came in under, so the department as a whole is within "
        "budget. Support's contractors are 1,456 over.";

    cap = size + 4096;
    body = malloc(cap);

    if (body == NULL) {
        exit(1);
    }

    len = (size_t) snprintf(body, cap, "{\"model\":\"gpt-4o-mini\","
                            "\"messages\":[{\"role\":\"system\","
                            "\"content\":\"%s\"},{\"role\":\"user\","
                            "\"content\":\"%s\"}", system, question);

    for (k = 0; len + sizeof(question) + sizeof(answer) < size; k++) {
        len += (size_t) snprintf(body + len, cap - len,
                                 ",{\"role\":\"%s\",\"content\":\"%s\"}",
                                 k % 2 ? "user" : "assistant",
                                 k % 2 ? question : answer);
    }

    len += (size_t) snprintf(body + len, cap - len,
                             "],\"max_tokens\":512,\"temperature\":0}");

    memset(&in, 0, sizeof(sp_cache_key_in_t));
    in.org_id = sp_str_from("org_default");
    in.scope = SP_CACHE_SCOPE_ORG;
    in.scope_value = sp_str_from("");
    in.provider = sp_str_from("openai");
    in.endpoint = sp_str_from("POST /chat/completions");
    in.body = body;
    in.body_len = len;

    need = sp_cache_key_scratch(len);
    scratch = malloc(need);

    if (scratch == NULL) {
        exit(1);
    }

    if (sp_cache_key(&in, scratch, need, key, err, sizeof(err)) != SP_OK) {
        fprintf(stderr, "cache key: %s\n", err);
        exit(1);
    }

    rounds = (int) (256 * 1024 * 1024 / len) + 1;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        (void) sp_cache_key(&in, scratch, need, key, err, sizeof(err));
    }

    t1 = cpu_s();

    printf("cache key %6zu B              %8.0f ns  (%.0f MB/s, scratch "
           "%zu B = %.1fx the body)\n", len, (t1 - t0) / rounds * 1e9,
           rounds * len / (t1 - t0) / 1e6, need, (double) need / len);

    free(scratch);
    free(body);
}


static void
bench_cache_key(void)
{
    bench_cache_key_one(2048);
    bench_cache_key_one(20 * 1024);
}


/*
 * The semantic cache: one lookup among 10,000 stored vectors (the
 * issue's target: 200 us at most), the best of several runs of a few
 * hundred lookups each, with stored norms and without; then the lexical
 * guard on two 500-byte prompts.
 */
static void
bench_semantic_search(size_t dim)
{
    int        run;
    int        k;
    size_t     count, i, j, lookups, best;
    double     t0, t1, fastest, fastest_nonorm, sim, x;
    float     *f;
    int8_t    *vectors, *queries;
    uint32_t  *norms;
    uint64_t   rng;

    count = 10000;
    lookups = 200;
    f = malloc(dim * sizeof(float));
    vectors = malloc(count * dim);
    queries = malloc(lookups * dim);
    norms = malloc(count * sizeof(uint32_t));

    if (f == NULL || vectors == NULL || queries == NULL || norms == NULL) {
        exit(1);
    }

    rng = 0x9e3779b97f4a7c15ULL;

    for (i = 0; i < count + lookups; i++) {
        for (j = 0; j < dim; j++) {
            /* roughly Gaussian: the sum of four uniforms */
            x = 0;

            for (k = 0; k < 4; k++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                x += (double) (rng >> 11) / 9007199254740992.0 - 0.5;
            }

            f[j] = (float) x;
        }

        if (sp_semantic_quantise(f, dim, i < count ? vectors + i * dim
                                 : queries + (i - count) * dim) != SP_OK)
        {
            exit(1);
        }

        if (i < count) {
            norms[i] = sp_semantic_norm(vectors + i * dim, dim);
        }
    }

    fastest = 1e9;
    fastest_nonorm = 1e9;

    /* CPU time: the 2 shared cores of a test machine preempt wall time */
    for (run = 0; run < 7; run++) {
        t0 = cpu_s();

        for (i = 0; i < lookups; i++) {
            (void) sp_semantic_search(vectors, norms, count, dim,
                                      queries + i * dim, 0.95, &best, &sim);
        }

        t1 = cpu_s();
        fastest = (t1 - t0) / lookups < fastest ? (t1 - t0) / lookups
                                                : fastest;
        t0 = cpu_s();

        for (i = 0; i < lookups / 4; i++) {
            (void) sp_semantic_search(vectors, NULL, count, dim,
                                      queries + i * dim, 0.95, &best, &sim);
        }

        t1 = cpu_s();
        fastest_nonorm = (t1 - t0) / (lookups / 4) < fastest_nonorm
                         ? (t1 - t0) / (lookups / 4) : fastest_nonorm;
    }

    printf("semantic search 10000 x %4zu  %8.1f us/lookup (%.1f ns a "
           "vector; without stored norms %.1f us)\n", dim, fastest * 1e6,
           fastest / count * 1e9, fastest_nonorm * 1e6);

    free(f);
    free(vectors);
    free(queries);
    free(norms);
}


static void
bench_semantic(void)
{
    int          rc, run;
    char         reason[128];
    size_t       i, rounds;
    double       t0, t1, fastest;

    static const char  a[] =
        "We are migrating the billing service from the old Postgres 12 "
        "cluster to the managed one in Frankfurt next week. Write a short "
        "checklist for the on-call engineer: what to back up before the "
        "cutover, how to verify that invoices generated during the window "
        "are not lost, and when to roll back. Do not include anything "
        "about the payment provider, it is out of scope, and keep it under "
        "ten items. Assume the read replicas are already in sync and that "
        "the maintenance window is two hours on Saturday night. Mention "
        "the feature flag billing_v2 and the dashboard at "
        "https://grafana.internal/d/billing if they help.";
    static const char  b[] =
        "We're migrating the billing service from the old Postgres 12 "
        "cluster to the managed one in Frankfurt next week. Please write "
        "a brief checklist for the on-call engineer: what to back up "
        "before the cutover, how to check that invoices generated during "
        "the window are not lost, and when to roll back. Do not include "
        "anything about the payment provider (out of scope), and keep it "
        "under ten items. Assume read replicas are already in sync and "
        "the maintenance window is two hours on Saturday night. Mention "
        "the feature flag billing_v2 and the dashboard at "
        "https://grafana.internal/d/billing if useful.";

    bench_semantic_search(768);
    bench_semantic_search(1536);
    bench_semantic_search(3072);

    rc = sp_semantic_guard(a, sizeof(a) - 1, b, sizeof(b) - 1, reason,
                           sizeof(reason));
    rounds = 20000;
    fastest = 1e9;

    for (run = 0; run < 5; run++) {
        t0 = cpu_s();

        for (i = 0; i < rounds; i++) {
            (void) sp_semantic_guard(a, sizeof(a) - 1, b, sizeof(b) - 1,
                                     reason, sizeof(reason));
        }

        t1 = cpu_s();
        fastest = (t1 - t0) / rounds < fastest ? (t1 - t0) / rounds
                                               : fastest;
    }

    printf("semantic guard %zu B / %zu B     %8.2f us  (%s)\n",
           sizeof(a) - 1, sizeof(b) - 1, fastest * 1e6,
           rc == 1 ? "may hit" : reason);
}


/*
 * A prompt template applied at stage 4 (issue 13: under 10 us): a record
 * with two versions, the latest of 3 messages and 3 variables, applied to
 * a 1 KB OpenAI body that carries the variables, for OpenAI and for
 * Anthropic (system text joined). The best of several runs, thread CPU
 * time.
 */
static void
bench_template_one(sp_provider_e provider, const char *record,
    const char *body, size_t body_len)
{
    int                   run;
    char                  code[SP_TEMPLATE_CODE_LEN], err[256], *out;
    size_t                i, rounds, bound, len;
    double                t0, t1, fastest;
    sp_template_result_t  res;

    bound = sp_template_apply_bound(strlen(record), body_len, 0);
    out = malloc(bound);

    if (out == NULL) {
        exit(1);
    }

    if (sp_template_apply(provider, record, strlen(record), 0,
                          sp_str_from(""), body, body_len, NULL, 0, out,
                          bound, &len, &res, code, sizeof(code), err,
                          sizeof(err))
        != SP_OK)
    {
        fprintf(stderr, "template: %s: %s\n", code, err);
        exit(1);
    }

    rounds = 50000;
    fastest = 1e9;

    for (run = 0; run < 5; run++) {
        t0 = cpu_s();

        for (i = 0; i < rounds; i++) {
            (void) sp_template_apply(provider, record, strlen(record), 0,
                                     sp_str_from(""), body, body_len, NULL,
                                     0, out, bound, &len, &res, code,
                                     sizeof(code), err, sizeof(err));
        }

        t1 = cpu_s();
        fastest = (t1 - t0) / rounds < fastest ? (t1 - t0) / rounds
                                               : fastest;
    }

    printf("template %-9s %zu B record, %zu B body -> %zu B  %6.2f us "
           "(bound %zu B)\n", sp_provider_name(provider), strlen(record),
           body_len, len, fastest * 1e6, bound);

    free(out);
}


static void
bench_template(void)
{
    size_t  len;
    char    body[2048];

    static const char  record[] =
        "{\"id\":\"5f0c6a7e-3b1d-4c2a-9e8f-0123456789ab\","
        "\"slug\":\"support-reply\",\"latest\":2,"
        "\"labels\":{\"production\":1},"
        "\"versions\":["
        "{\"version\":1,\"messages\":[{\"role\":\"user\","
        "\"content\":\"{{question}}\"}],"
        "\"variables\":{\"question\":{\"required\":true}}},"
        "{\"version\":2,"
        "\"messages\":[{\"role\":\"system\",\"content\":\"You answer "
        "{{product}} questions for the support team, in {{ tone }} tone, "
        "citing the documentation where you can.\"},"
        "{\"role\":\"developer\",\"content\":\"Keep answers under "
        "two hundred words; say so when you do not know.\"},"
        "{\"role\":\"user\",\"content\":\"Customer question: "
        "{{question}}\"}],"
        "\"variables\":{\"product\":{\"required\":true},"
        "\"tone\":{\"default\":\"a friendly\"},"
        "\"question\":{\"required\":true}},"
        "\"model\":\"gpt-4o-mini\","
        "\"parameters\":{\"temperature\":0.2,\"max_tokens\":300}}"
        "]}";

    static const char  question[] =
        "We set a monthly budget of 500 USD for the marketing department "
        "and a rule that sends gpt-4o to gpt-4o-mini at 80 percent. Last "
        "week the dashboard showed 82 percent but some requests still went "
        "to gpt-4o, and the X-Spendpol-Model header said gpt-4o on them. "
        "Those requests came from an agent key that belongs to the growth "
        "project, which has its own budget of 200 USD at 40 percent. Is "
        "the rule evaluated against the department budget or against every "
        "budget that covers the request, and how do we make it use the "
        "department's? Please also explain whether the rule still applies "
        "when the request names a fallback chain of its own, what the "
        "journal records for such requests, and whether the answer changes "
        "for streamed requests. We run two nginx nodes behind one load "
        "balancer.";

    len = (size_t) snprintf(body, sizeof(body),
                            "{\"messages\":[{\"role\":\"user\","
                            "\"content\":\"Also: do cached answers count "
                            "against the budget, and do they show up in the "
                            "chargeback report?\"}],\"stream\":true,"
                            "\"spendpol_variables\":{\"product\":"
                            "\"Spendpol\",\"tone\":\"a precise\","
                            "\"question\":\"%s\"},\"user\":"
                            "\"agent-42\"}", question);

    bench_template_one(SP_PROVIDER_OPENAI, record, body, len);
    bench_template_one(SP_PROVIDER_ANTHROPIC, record, body, len);
}


/*
 * Cross-provider translation: a typical 2 KB OpenAI chat request (system
 * prompt, a short exchange, a question, one tool) to Anthropic, and Anthropic's JSON
 * answer back to a chat.completion. The issue allows 20 us for both
 * together; the best of several runs, in thread CPU time.
 */
static void
bench_translate(void)
{
    int                     run, i, rounds;
    char                    body[4096], *req, *resp, err[256];
    size_t                  len, out_len;
    double                  t0, t1, fastest, fastest_req;
    sp_translate_request_t  res;

    static const char  system[] =
        "You are a careful assistant for the finance team of a mid-sized "
        "company. Answer in plain English, cite the ledger lines you rely "
        "on, never invent figures, and say so when the data you were given "
        "does not answer the question. Amounts are in US dollars unless a "
        "line says otherwise; round to whole dollars in prose and keep "
        "cents in tables. When a department is over budget, name the three "
        "largest contributors and whether each is recurring.";
    static const char  question[] =
        "Here is last month's spend export. Summarise it by department, "
        "flag anything above budget and suggest where to look first.\\n\\n"
        "department,line,amount,budget\\nengineering,cloud compute,48210.55,"
        "45000\\nengineering,LLM APIs,12877.10,10000\\nmarketing,events,"
        "23100.00,25000\\nmarketing,ads,31877.42,30000\\nsales,travel,"
        "9120.77,12000\\nsales,CRM seats,7600.00,7600\\nfinance,audit,"
        "15000.00,15000\\nsupport,contractors,21455.90,20000\\n"
        "support,tooling,4380.00,5000\\nlegal,outside counsel,18250.00,"
        "15000\\nlegal,filings,1200.00,2000\\nhr,recruiting,11990.35,"
        "12000\\n\\nLast month engineering moved two services to a new "
        "region, and marketing ran its spring campaign three weeks early; "
        "both may explain some of the variance. Please keep the summary "
        "short enough to paste into the monthly report, then add a table "
        "with one row per department (spend, budget, difference).";
    static const char  answer[] =
        "{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\","
        "\"content\":[{\"type\":\"text\",\"text\":\"Engineering is 6,088 "
        "dollars over budget: cloud compute (48,211 against 45,000, "
        "recurring) and LLM APIs (12,877 against 10,000, growing month on "
        "month). Marketing's ads ran 1,877 over while events came in "
        "under, so the department as a whole is within budget. Support's "
        "contractors are 1,456 over; legal's outside counsel 3,250 over, "
        "a one-off if the dispute settles this quarter.\"}],"
        "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
        "\"input_tokens\":412,\"cache_creation_input_tokens\":0,"
        "\"cache_read_input_tokens\":0,\"output_tokens\":96,"
        "\"service_tier\":\"standard\"}}";

    len = (size_t) snprintf(body, sizeof(body),
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\","
        "\"content\":\"%s\"},{\"role\":\"user\",\"content\":\"Which "
        "months are in the export?\"},{\"role\":\"assistant\",\"content\":"
        "\"Only last month's: one line per department and cost centre, "
        "with its budget.\"},{\"role\":\"user\",\"content\":\"%s\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"get_ledger\",\"description\":\"Ledger lines of a department "
        "for a month\",\"parameters\":{\"type\":\"object\",\"properties\":"
        "{\"department\":{\"type\":\"string\"},\"month\":{\"type\":"
        "\"string\",\"description\":\"YYYY-MM\"}},\"required\":"
        "[\"department\",\"month\"]}}}],\"max_tokens\":512,"
        "\"temperature\":0.2,\"user\":\"finance-bot\"}", system, question);

    req = malloc(sp_translate_request_bound(len));
    resp = malloc(sp_translate_response_bound(sizeof(answer) - 1));

    if (req == NULL || resp == NULL) {
        exit(1);
    }

    if (sp_translate_request(SP_PROVIDER_ANTHROPIC, "claude-sonnet-4-5", 17,
                             body, len, req, sp_translate_request_bound(len),
                             &res, err, sizeof(err)) != SP_OK
        || sp_translate_response(SP_PROVIDER_ANTHROPIC, 200, answer,
                                 sizeof(answer) - 1, "chatcmpl-bench",
                                 1764230000, resp,
                                 sp_translate_response_bound(
                                     sizeof(answer) - 1), &out_len) != SP_OK)
    {
        fprintf(stderr, "translate: %s\n", err);
        exit(1);
    }

    rounds = 20000;
    fastest = 1e9;
    fastest_req = 1e9;

    for (run = 0; run < 5; run++) {
        t0 = cpu_s();

        for (i = 0; i < rounds; i++) {
            (void) sp_translate_request(SP_PROVIDER_ANTHROPIC,
                                        "claude-sonnet-4-5", 17, body, len,
                                        req, sp_translate_request_bound(len),
                                        &res, err, sizeof(err));
        }

        t1 = cpu_s();
        fastest_req = (t1 - t0) / rounds < fastest_req
                      ? (t1 - t0) / rounds : fastest_req;

        for (i = 0; i < rounds; i++) {
            (void) sp_translate_response(SP_PROVIDER_ANTHROPIC, 200, answer,
                                         sizeof(answer) - 1,
                                         "chatcmpl-bench", 1764230000, resp,
                                         sp_translate_response_bound(
                                             sizeof(answer) - 1), &out_len);
        }

        t0 = cpu_s() - t0;
        fastest = t0 / rounds < fastest ? t0 / rounds : fastest;
    }

    printf("translate %zu B request -> anthropic   %8.2f us  (%zu B out)\n",
           len, fastest_req * 1e6, res.body_len);
    printf("translate %zu B answer -> openai        %8.2f us  (%zu B out)\n",
           sizeof(answer) - 1, (fastest - fastest_req) * 1e6, out_len);
    printf("translate request + answer           %8.2f us  (limit 20 us)\n",
           fastest * 1e6);

    free(req);
    free(resp);
}


static int64_t
bench_route_tokens(void *data)
{
    return 1200;
}


static int64_t
bench_route_budget(void *data, sp_str_t budget_id)
{
    return 500000;
}


/*
 * An organisation's 100 rules, none of which matches the request: model
 * globs that share its prefix, other departments, projects, keys and
 * providers, time windows (Europe/Paris) and budget thresholds behind a
 * model that matches, so the lazy values are asked too (once each).
 */
static void
bench_route(void)
{
    int                  i, run;
    char                *json, err[256];
    size_t               len, cap, rounds;
    double               t0, t1, fastest;
    sp_route_set_t      *set;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    cap = 64 * 1024;
    json = malloc(cap);

    if (json == NULL) {
        exit(1);
    }

    len = 0;
    json[len++] = '[';

    for (i = 0; i < 100; i++) {
        len += snprintf(json + len, cap - len, "%s{\"id\":\"rr_%d\","
                        "\"conditions\":{", i ? "," : "", i);

        switch (i % 10) {
        case 0:
            len += snprintf(json + len, cap - len,
                            "\"model\":\"gpt-4o-%d*\"", i);
            break;
        case 1:
            len += snprintf(json + len, cap - len,
                            "\"model\":\"claude-*-%d\"", i);
            break;
        case 2:
            len += snprintf(json + len, cap - len,
                            "\"department\":\"dept-%d\"", i);
            break;
        case 3:
            len += snprintf(json + len, cap - len, "\"project\":\"p%d\","
                            "\"model\":\"gpt-4o\"", i);
            break;
        case 4:
            len += snprintf(json + len, cap - len, "\"provider\":"
                            "\"anthropic\"");
            break;
        case 5:
            len += snprintf(json + len, cap - len, "\"api_key_id\":"
                            "\"key_%024d\"", i);
            break;
        case 6:
            len += snprintf(json + len, cap - len, "\"model\":\"gpt-4o\","
                            "\"time_window\":{\"timezone\":"
                            "\"Europe/Paris\",\"days\":[\"sat\",\"sun\"]}");
            break;
        case 7:
            len += snprintf(json + len, cap - len, "\"model\":\"gpt-4o*\","
                            "\"budget_used_pct\":{\"gte\":%d}", 60 + i / 10);
            break;
        case 8:
            len += snprintf(json + len, cap - len, "\"model\":\"gpt-4?\","
                            "\"prompt_tokens\":{\"min\":%d}", 5000 + i);
            break;
        default:
            len += snprintf(json + len, cap - len, "\"model\":"
                            "\"gpt-4o-mini\",\"has_tools\":true");
            break;
        }

        len += snprintf(json + len, cap - len, "},\"action\":{\"type\":"
                        "\"rewrite\",\"model\":\"gpt-4o-mini\"}}");
    }

    json[len++] = ']';

    set = sp_route_compile(json, len, err, sizeof(err));

    if (set == NULL || sp_route_invalid(set, err, sizeof(err)) != 0) {
        fprintf(stderr, "route: %s\n", err);
        exit(1);
    }

    memset(&req, 0, sizeof(req));
    req.provider = SP_PROVIDER_OPENAI;
    req.model = sp_str_from("gpt-4o");
    req.api_key_id = sp_str_from("key_aaaaaaaaaaaaaaaaaaaaaaaa");
    req.department = sp_str_from("marketing");
    req.project = sp_str_from("web");
    req.trace_id = sp_str_from("4bf92f3577b34da6a3ce929d0e0e4736");
    req.now_ms = 1796418000000LL;           /* a Friday */
    req.prompt_tokens = bench_route_tokens;
    req.budget_used_ppm = bench_route_budget;

    sp_route_evaluate(set, &req, &out);

    if (out.matched) {
        fprintf(stderr, "route: a rule matched: %s\n", out.explain);
        exit(1);
    }

    rounds = 200000;
    fastest = 1e9;

    for (run = 0; run < 5; run++) {
        t0 = cpu_s();

        for (i = 0; i < (int) rounds; i++) {
            req.random = (uint64_t) i;
            sp_route_evaluate(set, &req, &out);
        }

        t1 = cpu_s();
        fastest = (t1 - t0) / rounds < fastest ? (t1 - t0) / rounds
                                               : fastest;
    }

    printf("route: 100 rules, none matching  %8.3f us  (%zu B of rules)\n",
           fastest * 1e6, len);

    sp_route_free(set);
    free(json);
}


/* ---- PII scan --------------------------------------------------------- */

static const char  *pii_words[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as",
    "was", "with", "be", "by", "on", "not", "he", "this", "are", "or",
    "his", "from", "at", "which", "but", "have", "an", "had", "they",
    "you", "were", "their", "one", "all", "we", "can", "her", "has",
    "there", "been", "if", "more", "when", "will", "would", "who", "so",
    "no", "She", "people", "report", "summary", "please", "shipping",
    "government", "history", "research", "process", "example", "system",
    "general", "group", "possible", "however", "experience", "Europe",
    "Paris", "Monday", "request", "explain", "short", "happy", "expected",
    "rather", "several", "great", "problem", "service", "point", "house"
};


static size_t
pii_prose(char *buf, size_t cap)
{
    size_t    len, w, n;
    uint64_t  seed;

    len = 0;
    seed = 0x9e3779b97f4a7c15ull;
    n = sizeof(pii_words) / sizeof(pii_words[0]);

    while (len + 32 < cap) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        w = (size_t) (seed >> 33) % n;

        len += (size_t) sprintf(buf + len, "%s", pii_words[w]);

        switch ((seed >> 20) % 16) {
        case 0:
            len += (size_t) sprintf(buf + len, ". ");
            break;
        case 1:
            len += (size_t) sprintf(buf + len, ", ");
            break;
        case 2:
            /* numbers are clean text too */
            len += (size_t) sprintf(buf + len, " %u ",
                                    (unsigned) (seed >> 40) % 3000);
            break;
        default:
            buf[len++] = ' ';
        }
    }

    return len;
}


static int
pii_cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


static void
bench_pii(void)
{
    int               i, rounds;
    char             *prose, *body, prompt[2048];
    size_t            len, plen, blen;
    double            t0, t1, *us;
    sp_pii_result_t  *res;

    prose = malloc(1 << 20);
    body = malloc(4096);
    res = malloc(sizeof(sp_pii_result_t));
    us = malloc(20000 * sizeof(double));

    if (prose == NULL || body == NULL || res == NULL || us == NULL) {
        fprintf(stderr, "pii: out of memory\n");
        exit(1);
    }

    len = pii_prose(prose, 1 << 20);

    sp_pii_scan_text(prose, len, SP_PII_ALL, res);
    if (res->total != 0) {
        fprintf(stderr, "pii: the clean prose has %s in it\n",
                sp_pii_name(res->entities[0].type));
        exit(1);
    }

    rounds = 20;
    t0 = cpu_s();

    for (i = 0; i < rounds; i++) {
        sp_pii_scan_text(prose, len, SP_PII_ALL, res);
    }

    t1 = cpu_s();

    printf("pii scan, clean prose %zu KB  %8.1f MB/s\n", len >> 10,
           rounds * len / (t1 - t0) / 1e6);

    /* a 2 KB chat prompt with one card number in it */
    plen = pii_prose(prompt, 1800);
    memcpy(prompt + plen / 2, " card 4111 1111 1111 1111 ", 26);

    blen = (size_t) snprintf(body, 4096,
                             "{\"model\":\"gpt-4o-mini\",\"messages\":[{"
                             "\"role\":\"system\",\"content\":\"You are a "
                             "helpful assistant.\"},{\"role\":\"user\","
                             "\"content\":\"%.*s\"}],\"max_tokens\":256}",
                             (int) plen, prompt);

    if (sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body, blen, SP_PII_ALL, res)
        != SP_OK || res->total != 1 || res->entities[0].type != SP_PII_CARD)
    {
        fprintf(stderr, "pii: the prompt's card was not found alone\n");
        exit(1);
    }

    for (i = 0; i < 20000; i++) {
        t0 = now_s();
        (void) sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body, blen,
                                SP_PII_ALL, res);
        t1 = now_s();
        us[i] = (t1 - t0) * 1e6;
    }

    qsort(us, 20000, sizeof(double), pii_cmp_double);

    printf("pii scan_body, %zu B chat body, one card  p50 %.2f us  "
           "p99 %.2f us\n", blen, us[10000], us[19800]);

    free(us);
    free(res);
    free(body);
    free(prose);
}


/* ---- policies ------------------------------------------------------- */

static int64_t
bench_policy_worst(void *data)
{
    return 12000000;                        /* $0.012 */
}


/*
 * 20 policies as an organisation might have them: model globs, limits, a
 * PII policy (which the body's card violates: warn), three patterns (no
 * match), attribution and a time window. Reported against the PII scan
 * alone on the same body: the policies' own cost is the difference.
 */
static void
bench_policy(void)
{
    int                    i;
    char                  *json, *body, prompt[2048], err[256];
    size_t                 len, cap, plen, blen;
    double                 t0, t1, *us, *scan_us;
    sp_policy_set_t       *set;
    sp_pii_result_t       *res;
    sp_policy_request_t    req;
    sp_policy_decision_t  *out;

    cap = 16 * 1024;
    json = malloc(cap);
    body = malloc(4096);
    res = malloc(sizeof(sp_pii_result_t));
    out = malloc(sizeof(sp_policy_decision_t));
    us = malloc(20000 * sizeof(double));
    scan_us = malloc(20000 * sizeof(double));

    if (json == NULL || body == NULL || res == NULL || out == NULL
        || us == NULL || scan_us == NULL)
    {
        fprintf(stderr, "policy: out of memory\n");
        exit(1);
    }

#define BENCH_ORG  ",\"scope\":{\"type\":\"organization\"}"

    len = 0;
    json[len++] = '[';

    for (i = 0; i < 12; i++) {
        len += snprintf(json + len, cap - len, "{\"id\":\"pol_m%d\","
                        "\"name\":\"models %d\",\"kind\":\"model\","
                        "\"action\":\"%s\"" BENCH_ORG ",%s},", i, i,
                        i % 2 ? "block" : "warn",
                        i % 3 == 0 ? "\"deny_models\":[\"o1*\",\"gpt-3*\"]"
                        : i % 3 == 1 ? "\"allow_models\":[\"gpt-4o*\","
                                       "\"claude-*\",\"gemini-[0-9]*\"]"
                        : "\"deny_providers\":[\"cohere\"],"
                          "\"deny_models\":[\"*-preview\"]");
    }

    len += snprintf(json + len, cap - len,
        "{\"id\":\"pol_l1\",\"name\":\"tokens\",\"kind\":\"limits\","
        "\"action\":\"block\"" BENCH_ORG ",\"max_tokens\":4096},"
        "{\"id\":\"pol_l2\",\"name\":\"cost\",\"kind\":\"limits\","
        "\"action\":\"block\"" BENCH_ORG ",\"max_cost_usd\":\"0.50\"},"
        "{\"id\":\"pol_l3\",\"name\":\"cost warn\",\"kind\":"
        "\"limits\",\"action\":\"warn\"" BENCH_ORG ",\"max_cost_usd\":"
        "0.10,\"require_max_tokens\":true},"
        "{\"id\":\"pol_a\",\"name\":\"who\",\"kind\":\"attribution\","
        "\"action\":\"warn\"" BENCH_ORG ",\"require\":\"either\"},"
        "{\"id\":\"pol_t\",\"name\":\"hours\",\"kind\":\"time_window\","
        "\"action\":\"log\"" BENCH_ORG ",\"timezone\":\"Europe/Paris\","
        "\"days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"],"
        "\"start\":\"07:00\",\"end\":\"21:00\"},"
        "{\"id\":\"pol_p\",\"name\":\"pii\",\"kind\":\"pii\","
        "\"action\":\"warn\"" BENCH_ORG ",\"entities\":{\"card\":"
        "\"warn\",\"ssn\":\"block\"},\"threshold\":0.5},"
        "{\"id\":\"pol_r\",\"name\":\"words\",\"kind\":\"pattern\","
        "\"action\":\"block\"" BENCH_ORG ",\"case_insensitive\":true,"
        "\"patterns\":[\"project\\\\s+apollo\",\"\\\\bconfidential\\\\b\","
        "\"internal-only-\\\\d+\"]},"
        "{\"id\":\"pol_k\",\"name\":\"other key\",\"kind\":\"pii\","
        "\"action\":\"block\",\"scope\":{\"type\":\"api_key\","
        "\"value\":\"key_bbbbbbbbbbbbbbbbbbbbbbbb\"}}]");

    set = sp_policy_compile(json, len, err, sizeof(err));

    if (set == NULL || sp_policy_invalid(set, err, sizeof(err)) != 0
        || sp_policy_count(set) != 20)
    {
        fprintf(stderr, "policy: %s\n", set ? err : "not compiled");
        exit(1);
    }

    /* the pii bench's 2 KB chat prompt with one card number in it */
    plen = pii_prose(prompt, 1800);
    memcpy(prompt + plen / 2, " card 4111 1111 1111 1111 ", 26);

    blen = (size_t) snprintf(body, 4096,
                             "{\"model\":\"gpt-4o-mini\",\"messages\":[{"
                             "\"role\":\"system\",\"content\":\"You are a "
                             "helpful assistant.\"},{\"role\":\"user\","
                             "\"content\":\"%.*s\"}],\"max_tokens\":256}",
                             (int) plen, prompt);

    memset(&req, 0, sizeof(req));
    req.provider = SP_PROVIDER_OPENAI;
    req.model = sp_str_from("gpt-4o-mini");
    req.api_key_id = sp_str_from("key_aaaaaaaaaaaaaaaaaaaaaaaa");
    req.department = sp_str_from("marketing");
    req.project = sp_str_from("");
    req.max_tokens = 256;
    req.now_ms = 1796207400000LL;           /* a Wednesday, 11:30 Paris */
    req.body = body;
    req.body_len = blen;
    req.worst_case_nano = bench_policy_worst;

    if (sp_policy_evaluate(set, &req, out) != SP_OK
        || out->decision != SP_POLICY_WARN || out->total_matches != 1
        || strcmp(out->policy_ids, "pol_p") != 0)
    {
        fprintf(stderr, "policy: expected the pii policy alone to warn, "
                "got %s (%s)\n", sp_policy_action_name(out->decision),
                out->policy_ids);
        exit(1);
    }

    for (i = 0; i < 20000; i++) {
        t0 = now_s();
        (void) sp_pii_scan_body(SP_PROVIDER_OPENAI, 0, body, blen,
                                SP_PII_ALL, res);
        t1 = now_s();
        scan_us[i] = (t1 - t0) * 1e6;

        t0 = now_s();
        (void) sp_policy_evaluate(set, &req, out);
        t1 = now_s();
        us[i] = (t1 - t0) * 1e6;
    }

    qsort(us, 20000, sizeof(double), pii_cmp_double);
    qsort(scan_us, 20000, sizeof(double), pii_cmp_double);

    printf("policy: 20 policies, %zu B chat body  p50 %.2f us  p99 %.2f us"
           "  (PII scan alone p50 %.2f us: policies add %.2f us)\n", blen,
           us[10000], us[19800], scan_us[10000],
           us[10000] - scan_us[10000]);

#undef BENCH_ORG

    sp_policy_free(set);
    free(scan_us);
    free(us);
    free(out);
    free(res);
    free(body);
    free(json);
}


int
main(int argc, char **argv)
{
    size_t  keys;

    if (argc > 1 && strcmp(argv[1], "pii") == 0) {
        bench_pii();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "policy") == 0) {
        bench_policy();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "tokenize") == 0) {
        bench_tokenize();
        bench_request_count();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "journal") == 0) {
        bench_journal();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "cache") == 0) {
        bench_cache_key();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "semantic") == 0) {
        bench_semantic();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "template") == 0) {
        bench_template();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "translate") == 0) {
        bench_translate();
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "route") == 0) {
        bench_route();
        return 0;
    }

    keys = argc > 1 ? (size_t) strtoull(argv[1], NULL, 10) : 1000000;

    bench_sse();
    bench_json();
    bench_journal();
    bench_cache_key();
    bench_tokenize();
    bench_request_count();
    bench_pii();
    bench_snapshot(keys);

    return 0;
}
