/*
 * Exact token counts for o200k_base and cl100k_base; see sp_tokenize.h.
 *
 * The split: one PCRE2 pattern per encoding, written from the patterns
 * OpenAI's tiktoken (Rust/Python) uses, with two adjustments that keep
 * its semantics under PCRE2:
 *   - \s is spelled out as the Unicode White_Space set (WS below), which
 *     is what the Rust regex crate's \s means; PCRE2's \s under UCP
 *     leaves out U+0085.
 *   - PCRE2_DOLLAR_ENDONLY: "$" is the end of the text only, as in Rust.
 * pcre2_jit_match() is called directly: with PCRE2_MATCH_INVALID_UTF the
 * subject needs no UTF check (a check per call would make the split
 * quadratic) and invalid bytes simply never match.
 *
 * The merge: tiktoken's byte-pair merge. A piece that is a token is one
 * token. Otherwise every byte starts as a part; the adjacent pair whose
 * joined bytes have the lowest rank (the leftmost on a tie) is merged,
 * until no adjacent pair joins into a token. Short pieces use the
 * quadratic loop tiktoken uses, on the stack; long ones a binary heap of
 * (rank, position) with lazy deletion, O(n log n), in the context's
 * scratch. Both give the same answer (the fuzzer holds them to it).
 */

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_tokenize.h"


#define WS  "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
            "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

#define CONTRACTION  "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

static const char  *sp_tok_patterns[SP_TOK_ENCODINGS] = {

    /* o200k_base */
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
        "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" CONTRACTION "?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
        "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" CONTRACTION "?"
    "|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*"
    "|[" WS "]*[\\r\\n]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+",

    /* cl100k_base */
    "'(?i:[sdmt]|ll|ve|re)"
    "|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++"
    "|\\p{N}{1,3}+"
    "| ?[^" WS "\\p{L}\\p{N}]++[\\r\\n]*+"
    "|[" WS "]++$"
    "|[" WS "]*[\\r\\n]"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]"
};


struct sp_tok_enc_s {
    const sp_tok_vocab_t  *vocab;
    unsigned               which;
    pcre2_code            *code;
    int                    jit;
};


typedef struct {
    uint32_t  hash;
    uint8_t   len;                  /* 0: empty */
    uint8_t   which;                /* the encoding */
    uint16_t  tokens;
    uint8_t   bytes[SP_TOK_CACHE_PIECE];
} sp_tok_cached_t;


struct sp_tok_ctx_s {
    sp_tok_cached_t      *cache;
    pcre2_match_data     *md;
    pcre2_match_context  *mctx;
    pcre2_jit_stack      *stack;
    size_t                max_piece;
    void                 *scratch;
};


/* FNV-1a with murmur3's finaliser; gen-vocab.mjs hashes the same way */
static inline uint32_t
sp_tok_hash(const uint8_t *p, size_t len)
{
    size_t    i;
    uint32_t  h;

    h = 0x811c9dc5u;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x01000193u;
    }

    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;

    return h;
}


/* pieces are short: a loop beats a call to memcmp() */
static inline int
sp_tok_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (a[i] != b[i]) {
            return 0;
        }
    }

    return 1;
}


/* both of a token's bits are set (gen-vocab.mjs's bloomBits) */
static inline int
sp_tok_bloom(const sp_tok_vocab_t *v, uint32_t h)
{
    uint32_t  a, b, g;

    g = h * 0x9e3779b1u;
    a = h & (SP_TOK_BLOOM_BITS - 1);
    b = (g ^ (g >> 15)) & (SP_TOK_BLOOM_BITS - 1);

    return (v->bloom[a >> 6] >> (a & 63) & 1)
           && (v->bloom[b >> 6] >> (b & 63) & 1);
}


static uint32_t
sp_tok_rank_h(const sp_tok_vocab_t *v, const uint8_t *p, size_t len,
    uint32_t h)
{
    uint32_t  i, s, tag, rank, off;

    if (!sp_tok_bloom(v, h)) {
        return SP_TOK_RANK_NONE;
    }

    tag = h >> SP_TOK_RANK_BITS;

    for (i = h & v->slot_mask; ; i = (i + 1) & v->slot_mask) {
        s = v->slots[i];

        if (s == UINT32_MAX) {
            return SP_TOK_RANK_NONE;
        }

        if ((s >> SP_TOK_RANK_BITS) != tag) {
            continue;
        }

        rank = s & ((1u << SP_TOK_RANK_BITS) - 1);
        off = v->offsets[rank];

        if (v->offsets[rank + 1] - off == len
            && sp_tok_equal(v->bytes + off, p, len))
        {
            return rank;
        }
    }
}


uint32_t
sp_tok_rank(const sp_tok_vocab_t *v, const uint8_t *p, size_t len)
{
    if (len == 0 || len > v->max_len) {
        return SP_TOK_RANK_NONE;
    }

    if (len == 2) {
        return v->pairs[p[0] << 8 | p[1]];
    }

    return sp_tok_rank_h(v, p, len, sp_tok_hash(p, len));
}


/* tiktoken's loop: parts as boundaries start[0..m), start[m-1] == len */
static uint64_t
sp_tok_merge_short(const sp_tok_vocab_t *v, const uint8_t *p, size_t len)
{
    size_t    i, m, best;
    uint32_t  start[SP_TOK_SHORT_PIECE + 1];
    uint32_t  rank[SP_TOK_SHORT_PIECE];
    uint32_t  min;

    m = len + 1;

    for (i = 0; i <= len; i++) {
        start[i] = (uint32_t) i;
    }

    /* rank[i]: the pair of parts i and i + 1 */
    for (i = 0; i + 1 < len; i++) {
        rank[i] = v->pairs[p[i] << 8 | p[i + 1]];
    }

    if (len > 0) {
        rank[len - 1] = SP_TOK_RANK_NONE;
    }

    while (m > 2) {
        min = SP_TOK_RANK_NONE;
        best = 0;

        for (i = 0; i + 1 < m - 1; i++) {
            if (rank[i] < min) {
                min = rank[i];
                best = i;
            }
        }

        if (min == SP_TOK_RANK_NONE) {
            break;
        }

        /* part best absorbs part best + 1: boundary best + 1 goes */
        memmove(&start[best + 1], &start[best + 2],
                (m - best - 2) * sizeof(start[0]));
        memmove(&rank[best + 1], &rank[best + 2],
                (m - best - 3) * sizeof(rank[0]));
        m--;

        rank[best] = (best + 2 < m)
                     ? sp_tok_rank(v, p + start[best],
                                   start[best + 2] - start[best])
                     : SP_TOK_RANK_NONE;

        if (best > 0) {
            rank[best - 1] = sp_tok_rank(v, p + start[best - 1],
                                         start[best + 1] - start[best - 1]);
        }
    }

    return m - 1;
}


/*
 * The heap merge. Parts are linked by next[]/prev[] (a dead part has
 * next == NONE), rank[i] is the rank of part i joined with its successor.
 * A heap entry (rank << 32 | i) is current when part i lives and still has
 * that rank: the same rank at the same start is the same token, hence the
 * same pair. Entries: n - 1 at first, at most 2 per merge, so below 3n.
 */

#define SP_TOK_NONE  UINT32_MAX

typedef struct {
    uint64_t  *a;
    size_t     n;
} sp_tok_heap_t;


static void
sp_tok_heap_push(sp_tok_heap_t *h, uint64_t x)
{
    size_t  i, parent;

    i = h->n++;

    while (i > 0) {
        parent = (i - 1) / 2;

        if (h->a[parent] <= x) {
            break;
        }

        h->a[i] = h->a[parent];
        i = parent;
    }

    h->a[i] = x;
}


static uint64_t
sp_tok_heap_pop(sp_tok_heap_t *h)
{
    size_t    i, c;
    uint64_t  top, x;

    top = h->a[0];
    x = h->a[--h->n];
    i = 0;

    for ( ;; ) {
        c = 2 * i + 1;

        if (c >= h->n) {
            break;
        }

        if (c + 1 < h->n && h->a[c + 1] < h->a[c]) {
            c++;
        }

        if (x <= h->a[c]) {
            break;
        }

        h->a[i] = h->a[c];
        i = c;
    }

    if (h->n > 0) {
        h->a[i] = x;
    }

    return top;
}


static uint32_t
sp_tok_pair_rank(const sp_tok_vocab_t *v, const uint8_t *p, size_t len,
    const uint32_t *next, uint32_t i)
{
    uint32_t  j, end;

    j = next[i];

    if (j >= len) {
        return SP_TOK_RANK_NONE;
    }

    end = next[j];

    return sp_tok_rank(v, p + i, end - i);
}


static uint64_t
sp_tok_merge_heap(const sp_tok_vocab_t *v, const uint8_t *p, size_t len,
    void *scratch)
{
    size_t          i, parts;
    uint32_t        a, b, r, *next, *prev, *rank;
    uint64_t        e;
    sp_tok_heap_t   heap;

    /* layout: heap 3n uint64, then next n+1, prev n, rank n (uint32) */
    heap.a = scratch;
    heap.n = 0;
    next = (uint32_t *) (heap.a + 3 * len);
    prev = next + len + 1;
    rank = prev + len;

    for (i = 0; i < len; i++) {
        next[i] = (uint32_t) i + 1;
        prev[i] = (uint32_t) i - 1;            /* NONE for the first */
    }

    next[len] = (uint32_t) len;

    for (i = 0; i < len; i++) {
        rank[i] = sp_tok_pair_rank(v, p, len, next, (uint32_t) i);

        if (rank[i] != SP_TOK_RANK_NONE) {
            sp_tok_heap_push(&heap, (uint64_t) rank[i] << 32 | i);
        }
    }

    parts = len;

    while (heap.n > 0) {
        e = sp_tok_heap_pop(&heap);
        a = (uint32_t) e;
        r = (uint32_t) (e >> 32);

        if (next[a] == SP_TOK_NONE || rank[a] != r) {
            continue;                           /* stale */
        }

        /* a absorbs b */
        b = next[a];
        next[a] = next[b];
        next[b] = SP_TOK_NONE;

        if (next[a] < len) {
            prev[next[a]] = a;
        }

        parts--;

        rank[a] = sp_tok_pair_rank(v, p, len, next, a);

        if (rank[a] != SP_TOK_RANK_NONE) {
            sp_tok_heap_push(&heap, (uint64_t) rank[a] << 32 | a);
        }

        if (a > 0) {
            b = prev[a];
            rank[b] = sp_tok_pair_rank(v, p, len, next, b);

            if (rank[b] != SP_TOK_RANK_NONE) {
                sp_tok_heap_push(&heap, (uint64_t) rank[b] << 32 | b);
            }
        }
    }

    return parts;
}


uint64_t
sp_tok_merge(const sp_tok_vocab_t *v, const uint8_t *p, size_t len,
    void *scratch)
{
    if (len == 0) {
        return 0;
    }

    if (scratch == NULL) {
        if (len > SP_TOK_SHORT_PIECE) {
            return len;
        }

        return sp_tok_merge_short(v, p, len);
    }

    return sp_tok_merge_heap(v, p, len, scratch);
}


sp_tok_enc_t *
sp_tok_enc_create(sp_tok_encoding_e which, const sp_tok_vocab_t *vocab,
    char *err, size_t errlen)
{
    int            rc;
    PCRE2_SIZE     off;
    sp_tok_enc_t  *enc;
    PCRE2_UCHAR    msg[160];

    if ((unsigned) which >= SP_TOK_ENCODINGS) {
        snprintf(err, errlen, "unknown encoding %d", (int) which);
        return NULL;
    }

    /*
     * No default vocabulary here: a reference to the generated data would
     * make every binary that compiles this file (the nginx module takes
     * all of libspendpol/) fail to load unless it links that data too.
     */
    if (vocab == NULL || vocab->n_ranks == 0
        || vocab->n_ranks >= (1u << SP_TOK_RANK_BITS))
    {
        snprintf(err, errlen, "encoding %d: no vocabulary", (int) which);
        return NULL;
    }

    enc = calloc(1, sizeof(sp_tok_enc_t));
    if (enc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    enc->vocab = vocab;
    enc->which = which;
    enc->code = pcre2_compile((PCRE2_SPTR) sp_tok_patterns[which],
                              PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF
                              | PCRE2_DOLLAR_ENDONLY,
                              &rc, &off, NULL);

    if (enc->code == NULL) {
        pcre2_get_error_message(rc, msg, sizeof(msg));
        snprintf(err, errlen, "%s pattern at %zu: %s", vocab->name,
                 (size_t) off, (char *) msg);
        free(enc);
        return NULL;
    }

    /* without JIT (a CPU PCRE2 has no JIT for) pcre2_match() still works */
    enc->jit = (pcre2_jit_compile(enc->code, PCRE2_JIT_COMPLETE) == 0);

    return enc;
}


void
sp_tok_enc_free(sp_tok_enc_t *enc)
{
    if (enc != NULL) {
        pcre2_code_free(enc->code);
        free(enc);
    }
}


const sp_tok_vocab_t *
sp_tok_enc_vocab(const sp_tok_enc_t *enc)
{
    return enc->vocab;
}


sp_tok_ctx_t *
sp_tok_ctx_create(size_t max_piece)
{
    sp_tok_ctx_t  *ctx;

    if (max_piece == 0) {
        max_piece = 65536;
    }

    /* positions are uint32 and the scratch size must not overflow */
    if (max_piece > (SIZE_MAX / SP_TOK_SCRATCH_PER_BYTE) - 1
        || max_piece >= UINT32_MAX / 4)
    {
        return NULL;
    }

    ctx = calloc(1, sizeof(sp_tok_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->max_piece = max_piece;
    ctx->md = pcre2_match_data_create(1, NULL);
    ctx->mctx = pcre2_match_context_create(NULL);
    ctx->stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    ctx->scratch = malloc(SP_TOK_SCRATCH_PER_BYTE * (max_piece + 1));
    ctx->cache = calloc(SP_TOK_CACHE, sizeof(sp_tok_cached_t));

    if (ctx->cache == NULL || ctx->md == NULL || ctx->mctx == NULL || ctx->stack == NULL
        || ctx->scratch == NULL)
    {
        sp_tok_ctx_free(ctx);
        return NULL;
    }

    pcre2_jit_stack_assign(ctx->mctx, NULL, ctx->stack);

    return ctx;
}


void
sp_tok_ctx_free(sp_tok_ctx_t *ctx)
{
    if (ctx == NULL) {
        return;
    }

    pcre2_match_data_free(ctx->md);
    pcre2_match_context_free(ctx->mctx);
    pcre2_jit_stack_free(ctx->stack);
    free(ctx->scratch);
    free(ctx->cache);
    free(ctx);
}


static uint64_t
sp_tok_piece(const sp_tok_enc_t *enc, sp_tok_ctx_t *ctx, const uint8_t *p,
    size_t len, sp_tok_result_t *res)
{
    uint32_t          h;
    uint64_t          n;
    sp_tok_cached_t  *c;

    res->pieces++;

    if (len > SP_TOK_CACHE_PIECE) {
        if (sp_tok_rank(enc->vocab, p, len) != SP_TOK_RANK_NONE) {
            return 1;
        }

        if (len <= SP_TOK_SHORT_PIECE) {
            return sp_tok_merge_short(enc->vocab, p, len);
        }

        if (len <= ctx->max_piece) {
            return sp_tok_merge_heap(enc->vocab, p, len, ctx->scratch);
        }

        res->long_pieces++;

        return len;
    }

    h = sp_tok_hash(p, len);
    c = &ctx->cache[(h ^ (enc->which * 0x9e3779b9u)) & (SP_TOK_CACHE - 1)];

    if (c->hash == h && c->len == len && c->which == enc->which
        && sp_tok_equal(c->bytes, p, len))
    {
        return c->tokens;
    }

    if (len <= enc->vocab->max_len
        && sp_tok_rank_h(enc->vocab, p, len, h) != SP_TOK_RANK_NONE)
    {
        n = 1;

    } else {
        n = sp_tok_merge_short(enc->vocab, p, len);
    }

    c->hash = h;
    c->len = (uint8_t) len;
    c->which = (uint8_t) enc->which;
    c->tokens = (uint16_t) n;
    memcpy(c->bytes, p, len);

    return n;
}


uint64_t
sp_tok_count(const sp_tok_enc_t *enc, sp_tok_ctx_t *ctx, const char *text,
    size_t len, sp_tok_result_t *result)
{
    int               rc;
    size_t            pos, start, end;
    PCRE2_SIZE       *ov;
    const uint8_t    *p;
    sp_tok_result_t   res;

    memset(&res, 0, sizeof(res));
    p = (const uint8_t *) text;
    ov = pcre2_get_ovector_pointer(ctx->md);
    pos = 0;

    while (pos < len) {
        if (enc->jit) {
            rc = pcre2_jit_match(enc->code, p, len, pos, 0, ctx->md,
                                 ctx->mctx);
        } else {
            rc = pcre2_match(enc->code, p, len, pos, 0, ctx->md, ctx->mctx);
        }

        if (rc == PCRE2_ERROR_NOMATCH) {
            /* only invalid bytes are left */
            res.invalid_bytes += len - pos;
            res.tokens += len - pos;
            break;
        }

        if (rc < 0) {
            /* an engine limit: the rest a token a byte, an upper bound */
            res.long_pieces++;
            res.tokens += len - pos;
            break;
        }

        start = ov[0];
        end = ov[1];

        if (start < pos || end > len || end < start) {
            res.long_pieces++;
            res.tokens += len - pos;
            break;
        }

        /* what the search skipped cannot match: invalid UTF-8 */
        res.invalid_bytes += start - pos;
        res.tokens += start - pos;

        if (end == start) {
            /* no alternative matches empty; never loop on one that did */
            res.tokens++;
            res.invalid_bytes++;
            pos = start + 1;
            continue;
        }

        res.tokens += sp_tok_piece(enc, ctx, p + start, end - start, &res);
        pos = end;
    }

    res.exact = (res.long_pieces == 0);

    if (result != NULL) {
        result->tokens += res.tokens;
        result->pieces += res.pieces;
        result->invalid_bytes += res.invalid_bytes;
        result->long_pieces += res.long_pieces;
        result->exact = (result->long_pieces == 0);
    }

    return res.tokens;
}


uint64_t
sp_tok_chat(const sp_tok_enc_t *enc, sp_tok_ctx_t *ctx,
    const sp_tok_msg_t *msgs, size_t n, sp_tok_result_t *result)
{
    size_t    i;
    uint64_t  tokens;

    tokens = SP_TOK_CHAT_PER_REPLY;

    for (i = 0; i < n; i++) {
        tokens += SP_TOK_CHAT_PER_MESSAGE;
        tokens += sp_tok_count(enc, ctx, msgs[i].role, msgs[i].role_len,
                               result);
        tokens += sp_tok_count(enc, ctx, msgs[i].content,
                               msgs[i].content_len, result);

        if (msgs[i].name != NULL) {
            tokens += SP_TOK_CHAT_PER_NAME;
            tokens += sp_tok_count(enc, ctx, msgs[i].name, msgs[i].name_len,
                                   result);
        }
    }

    return tokens;
}


typedef struct {
    const char         *prefix;
    size_t              len;
    sp_tok_encoding_e   encoding;
} sp_tok_model_t;

#define SP_TOK_MODEL(p, e)  { p, sizeof(p) - 1, e }

/* the more specific first: "gpt-4.1" and "gpt-4o" before "gpt-4" */
static const sp_tok_model_t  sp_tok_models[] = {
    SP_TOK_MODEL("gpt-5", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("gpt-4.5", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("gpt-4.1", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("gpt-4o", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("chatgpt-4o", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("o1", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("o3", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("o4", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("gpt-oss", SP_TOK_O200K_BASE),
    SP_TOK_MODEL("gpt-4", SP_TOK_CL100K_BASE),
    SP_TOK_MODEL("gpt-3.5-turbo", SP_TOK_CL100K_BASE),
    SP_TOK_MODEL("gpt-35-turbo", SP_TOK_CL100K_BASE),
    SP_TOK_MODEL("text-embedding-ada-002", SP_TOK_CL100K_BASE),
    SP_TOK_MODEL("text-embedding-3-small", SP_TOK_CL100K_BASE),
    SP_TOK_MODEL("text-embedding-3-large", SP_TOK_CL100K_BASE),
};


int
sp_tok_encoding_for_model(const char *model, size_t len)
{
    char     c;
    size_t   i;

    if (len >= 3 && memcmp(model, "ft:", 3) == 0) {
        model += 3;
        len -= 3;
    }

    for (i = 0; i < sizeof(sp_tok_models) / sizeof(sp_tok_models[0]); i++) {
        const sp_tok_model_t  *m = &sp_tok_models[i];

        if (len < m->len || memcmp(model, m->prefix, m->len) != 0) {
            continue;
        }

        c = (len == m->len) ? '\0' : model[m->len];

        if (c == '\0' || c == '-' || c == '.' || c == ':' || c == '@') {
            return (int) m->encoding;
        }
    }

    return -1;
}
