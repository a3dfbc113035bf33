/*
 * The response cache's rules: settings, names, the deterministic rule and
 * the cache key (sp_cache.h).
 *
 * The key is computed in two passes over caller-provided scratch, with no
 * allocation:
 *
 *   1. one pass over the body validates it (as jansson reads it: UTF-8,
 *      escapes, surrogates, the number grammar, nesting at most
 *      JSON_PARSER_MAX_DEPTH) and writes it without whitespace, in source
 *      order, into "compact". The members of the objects still open are
 *      on a stack in "members". When an object closes, one comparison per
 *      member tells whether its names already ascend: if they do, it is
 *      written as it stands and its members leave the stack; if not, they
 *      are sorted and moved to the top of "members", and the object gets
 *      an entry in "objects". The entries, made inner objects first, are
 *      put in the order the objects open when the pass ends.
 *   2. the compact text is copied into "canonical" once: everything
 *      verbatim except the objects with entries, whose members are
 *      written in sorted order. A span without such objects inside is one
 *      memcpy.
 *
 * Each byte is copied twice and each object sorted once: the cost is
 * linear in the body plus the sorting of objects' members, whatever the
 * nesting. The string scan, most of the work in a chat body, looks at 16
 * (or 8) bytes at a time; SHA-256 of the canonical text is most of the
 * rest. Scratch: sp_cache_key_scratch().
 */

#include <stdio.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <jansson.h>
#include <openssl/evp.h>

#include "sp_cache.h"
#include "sp_endpoint.h"
#include "sp_usage.h"


/*
 * The request parser's limit: its scanner declines deeper bodies and
 * jansson, which then decides, refuses them beyond this depth.
 */
#ifdef JSON_PARSER_MAX_DEPTH
#define SP_CACHE_DEPTH_MAX      JSON_PARSER_MAX_DEPTH
#else
#define SP_CACHE_DEPTH_MAX      2048
#endif

/*
 * The longest org_id, scope_value, provider and endpoint: the header they
 * form is hashed with the body and needs room of a size known in advance.
 * Ids and the catalogue's endpoints are far shorter.
 */
#define SP_CACHE_FIELD_MAX      1024

#define SP_CACHE_PREFIX         "spendpol-cache-v1"
#define SP_CACHE_PREFIX_LEN     (sizeof(SP_CACHE_PREFIX) - 1)

/* SP_CACHE_KEY_NO_PROMPT's: never the same bytes as an exact key's */
#define SP_CACHE_GROUP_PREFIX   "spendpol-cache-v1-group"
#define SP_CACHE_GROUP_PREFIX_LEN  (sizeof(SP_CACHE_GROUP_PREFIX) - 1)

#define SP_CACHE_HEADER_MAX     (SP_CACHE_GROUP_PREFIX_LEN + 5 * 4 \
                                 + 4 * SP_CACHE_FIELD_MAX)

/* members sorted by insertion up to this, by a heap above */
#define SP_CACHE_INSERTION_MAX  12



/*
 * An object whose members are out of order (an object in order, one
 * member or none included, is written as it stands and needs no entry);
 * offsets are into the compact text.
 */
typedef struct {
    uint32_t  open;         /* its '{' */
    uint32_t  close;        /* past its '}' */
    uint32_t  first;        /* its sorted members in members[] */
    uint32_t  count;
} sp_cache_object_t;

/* a member: from its name's opening quote to the end of its value */
typedef struct {
    uint32_t  start;
    uint32_t  name_len;     /* between the quotes, as spelled */
    uint32_t  end;
} sp_cache_member_t;

typedef struct {
    const char          *body;
    size_t               body_len;
    char                *compact;
    char                *canonical;
    size_t               out;            /* canonical bytes written */
    sp_cache_object_t   *objects;
    size_t               nobjects;
    size_t               objects_cap;
    sp_cache_member_t   *members;
    size_t               stack;          /* open objects' members: [0, stack) */
    size_t               sorted;         /* of closed ones: [sorted, cap) */
    size_t               members_cap;
    size_t               depth_cap;
    unsigned             flags;          /* SP_CACHE_KEY_* */

    /* the containers open during pass 1, on the C stack (10 KB) */
    uint32_t             base[SP_CACHE_DEPTH_MAX];   /* first member */
    uint8_t              array[SP_CACHE_DEPTH_MAX];
} sp_cache_ctx_t;


static const char  *sp_cache_mode_names[] = { "off", "exact", "semantic" };
static const char  *sp_cache_scope_names[] = {
    "org", "api_key", "project", "department"
};


void
sp_cache_config_default(sp_cache_config_t *config)
{
    config->mode = SP_CACHE_DEFAULT_MODE;
    config->scope = SP_CACHE_DEFAULT_SCOPE;
    config->ttl_s = SP_CACHE_DEFAULT_TTL_S;
    config->max_entry_bytes = SP_CACHE_DEFAULT_MAX_ENTRY;
    config->only_deterministic = 1;
    config->threshold_ppm = SP_CACHE_DEFAULT_THRESHOLD_PPM;
    config->embed_provider = SP_PROVIDER_UNKNOWN;
    config->embed_system = 0;
    config->embed_timeout_ms = SP_CACHE_DEFAULT_EMBED_TIMEOUT;
    config->max_vectors = SP_CACHE_DEFAULT_MAX_VECTORS;
    memset(config->embed_model, 0, SP_CACHE_EMBED_MODEL_LEN);
}


int
sp_cache_embed_provider_valid(uint32_t provider)
{
    switch (provider) {
    case SP_PROVIDER_OPENAI:
    case SP_PROVIDER_AZURE:
    case SP_PROVIDER_GOOGLE:
    case SP_PROVIDER_COHERE:
    case SP_PROVIDER_MISTRAL:
        return 1;
    }

    return 0;
}


int
sp_cache_embed_model_valid(const char *model, size_t len)
{
    size_t  i;

    if (model == NULL || len == 0 || len >= SP_CACHE_EMBED_MODEL_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (model[i] < 0x21 || model[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


const char *
sp_cache_mode_name(uint32_t mode)
{
    return mode < sizeof(sp_cache_mode_names) / sizeof(char *)
           ? sp_cache_mode_names[mode] : NULL;
}


const char *
sp_cache_scope_name(uint32_t scope)
{
    return scope < sizeof(sp_cache_scope_names) / sizeof(char *)
           ? sp_cache_scope_names[scope] : NULL;
}


static int
sp_cache_name_find(const char **names, uint32_t n, const char *name,
    size_t len, uint32_t *value)
{
    uint32_t  i;

    if (name == NULL) {
        return SP_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0) {
            *value = i;
            return SP_OK;
        }
    }

    return SP_ERROR;
}


int
sp_cache_mode_parse(const char *name, size_t len, uint32_t *mode)
{
    return sp_cache_name_find(sp_cache_mode_names,
                              sizeof(sp_cache_mode_names) / sizeof(char *),
                              name, len, mode);
}


int
sp_cache_scope_parse(const char *name, size_t len, uint32_t *scope)
{
    return sp_cache_name_find(sp_cache_scope_names,
                              sizeof(sp_cache_scope_names) / sizeof(char *),
                              name, len, scope);
}


int
sp_cache_deterministic(int temperature_zero, int has_seed, int meter)
{
    return temperature_zero || has_seed || meter == SP_METER_EMBED
           || meter == SP_METER_SEARCH;
}


/*
 * Capacities for a body of len bytes, counting bytes no two own: a
 * member owns the '{' or ',' before it, its name's quotes, its ':' and
 * the last byte of its value (5 bytes); an object with an entry has at
 * least two members (10). The lists never fill up (they are checked
 * anyway).
 */
static size_t
sp_cache_members_cap(size_t len)
{
    return len / 5 + 2;
}


static size_t
sp_cache_objects_cap(size_t len)
{
    return len / 10 + 2;
}


/* each level opens and closes: a body nests at most len / 2 deep */
static size_t
sp_cache_depth_cap(size_t len)
{
    return (len / 2 < SP_CACHE_DEPTH_MAX ? len / 2 : SP_CACHE_DEPTH_MAX) + 1;
}


/*
 * The lists, then the compact text, then the canonical one. The header
 * hashed with the canonical text is written right before it, over the
 * end of the compact text (no longer needed by then), which is made at
 * least as long as the longest header.
 */
size_t
sp_cache_key_scratch(size_t body_len)
{
    if (body_len > UINT32_MAX / 4) {
        return SIZE_MAX;
    }

    /* 8: aligning the caller's pointer */
    return 8 + sp_cache_objects_cap(body_len) * sizeof(sp_cache_object_t)
           + sp_cache_members_cap(body_len) * sizeof(sp_cache_member_t)
           + (body_len > SP_CACHE_HEADER_MAX ? body_len : SP_CACHE_HEADER_MAX)
           + body_len;
}


/* ---- pass 1: validate and compact ----------------------------------- */

static const char *
sp_cache_space(const char *p, const char *last)
{
    while (p < last && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    {
        p++;
    }

    return p;
}


static int
sp_cache_hex4(const unsigned char *p, const unsigned char *last,
    uint32_t *cp)
{
    int  i, d;

    if (last - p < 4) {
        return SP_ERROR;
    }

    *cp = 0;

    for (i = 0; i < 4; i++) {
        d = sp_hex_digit(p[i]);

        if (d < 0) {
            return SP_ERROR;
        }

        *cp = *cp * 16 + (uint32_t) d;
    }

    return SP_OK;
}


#define SP_CACHE_ONES           0x0101010101010101ULL
#define SP_CACHE_HIGHS          0x8080808080808080ULL

/*
 * Past the bytes from p on that need no look (not a quote, a backslash,
 * below 0x20 or above 0x7f), many at a time: the text of a prompt is
 * such runs, and this is most of the work. Stops at such a byte or
 * short of end, where the byte loop takes over.
 */
static inline const unsigned char *
sp_cache_plain_run(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    unsigned  mask;
    __m128i   x, quote, backslash, space;

    quote = _mm_set1_epi8('"');
    backslash = _mm_set1_epi8('\\');
    space = _mm_set1_epi8(0x20);

    /* signed: bytes above 0x7f are below 0x20 too */
    while (end - p >= 16) {
        x = _mm_loadu_si128((const __m128i *) p);
        mask = (unsigned) _mm_movemask_epi8(
                   _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                             _mm_cmpeq_epi8(x, backslash)),
                                _mm_cmplt_epi8(x, space)));

        if (mask != 0) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }

#else
    uint64_t  w, hit;

    /*
     * Bytes above 0x7f show in w's high bits; when there are none, a
     * byte minus 1 (or 0x20) sets its high bit exactly when the byte was
     * 0 (below 0x20), and only such a byte borrows from the next: the
     * lowest bit set is the first byte to look at.
     */
    while (end - p >= 8) {
        memcpy(&w, p, 8);

        hit = (w | (w - SP_CACHE_ONES * 0x20)
               | ((w ^ (SP_CACHE_ONES * '"')) - SP_CACHE_ONES)
               | ((w ^ (SP_CACHE_ONES * '\\')) - SP_CACHE_ONES))
              & SP_CACHE_HIGHS;

        if (hit != 0) {
#if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
            return p + __builtin_ctzll(hit) / 8;
#else
            return p;
#endif
        }

        p += 8;
    }

#endif

    return p;
}


/*
 * A string from after its opening quote to past its closing one, checked
 * as jansson checks it: no raw control character, known escapes, paired
 * surrogates, UTF-8 without overlong forms, surrogates or code points
 * past U+10FFFF. A name may not hold \u0000 (jansson refuses it in keys).
 */
static const char *
sp_cache_string(const char *start, const char *last, int name,
    const char **reason)
{
    uint32_t              cp, low;
    const unsigned char  *p, *end;

    p = (const unsigned char *) start;
    end = (const unsigned char *) last;

    for ( ;; ) {
        p = sp_cache_plain_run(p, end);

        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"'
               && *p != '\\')
        {
            p++;
        }

        if (p == end) {
            *reason = "a string is not closed";
            return NULL;
        }

        if (*p == '"') {
            return (const char *) p + 1;
        }

        if (*p < 0x20) {
            *reason = "a string holds a raw control character";
            return NULL;
        }

        if (*p == '\\') {
            p++;

            if (p == end) {
                *reason = "a string is not closed";
                return NULL;
            }

            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p++;
                continue;

            case 'u':
                break;

            default:
                *reason = "a string holds an unknown escape";
                return NULL;
            }

            if (sp_cache_hex4(p + 1, end, &cp) != SP_OK) {
                *reason = "a string holds a bad \\u escape";
                return NULL;
            }

            p += 5;

            if (cp >= 0xdc00 && cp <= 0xdfff) {
                *reason = "a string holds a lone low surrogate";
                return NULL;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 2 || p[0] != '\\' || p[1] != 'u'
                    || sp_cache_hex4(p + 2, end, &low) != SP_OK
                    || low < 0xdc00 || low > 0xdfff)
                {
                    *reason = "a string holds a lone high surrogate";
                    return NULL;
                }

                p += 6;
            }

            if (cp == 0 && name) {
                *reason = "a member name holds \\u0000";
                return NULL;
            }

            continue;
        }

        /* a UTF-8 sequence: lead byte, then continuation bytes */
        if (*p >= 0xc2 && *p <= 0xdf) {
            if (end - p < 2 || (p[1] & 0xc0) != 0x80) {
                goto utf8;
            }

            p += 2;

        } else if (*p >= 0xe0 && *p <= 0xef) {
            if (end - p < 3 || (p[1] & 0xc0) != 0x80
                || (p[2] & 0xc0) != 0x80
                || (*p == 0xe0 && p[1] < 0xa0)
                || (*p == 0xed && p[1] > 0x9f))
            {
                goto utf8;
            }

            p += 3;

        } else if (*p >= 0xf0 && *p <= 0xf4) {
            if (end - p < 4 || (p[1] & 0xc0) != 0x80
                || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80
                || (*p == 0xf0 && p[1] < 0x90)
                || (*p == 0xf4 && p[1] > 0x8f))
            {
                goto utf8;
            }

            p += 4;

        } else {
            goto utf8;
        }
    }

utf8:

    *reason = "a string is not valid UTF-8";
    return NULL;
}


/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *
sp_cache_number(const char *p, const char *last)
{
    if (p < last && *p == '-') {
        p++;
    }

    if (p == last || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        p++;

        /* jansson refuses leading zeros */
        if (p < last && *p >= '0' && *p <= '9') {
            return NULL;
        }

    } else {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && *p == '.') {
        p++;

        if (p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    return p;
}


static int
sp_cache_name_cmp(const sp_cache_ctx_t *ctx, const sp_cache_member_t *a,
    const sp_cache_member_t *b)
{
    int     rc;
    size_t  n;

    n = a->name_len < b->name_len ? a->name_len : b->name_len;
    rc = memcmp(ctx->compact + a->start + 1, ctx->compact + b->start + 1, n);

    if (rc != 0) {
        return rc;
    }

    return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}


static void
sp_cache_sift(const sp_cache_ctx_t *ctx, sp_cache_member_t *m, size_t i,
    size_t n)
{
    size_t             child;
    sp_cache_member_t  t;

    for ( ;; ) {
        child = 2 * i + 1;

        if (child >= n) {
            return;
        }

        if (child + 1 < n
            && sp_cache_name_cmp(ctx, &m[child], &m[child + 1]) < 0)
        {
            child++;
        }

        if (sp_cache_name_cmp(ctx, &m[i], &m[child]) >= 0) {
            return;
        }

        t = m[i];
        m[i] = m[child];
        m[child] = t;
        i = child;
    }
}


/*
 * Sorts n members in place: insertion for small objects, a heap for
 * large ones (in place, so the member list needs no room for a copy).
 */
static void
sp_cache_sort(const sp_cache_ctx_t *ctx, sp_cache_member_t *m, size_t n)
{
    size_t             i, j;
    sp_cache_member_t  t;

    if (n <= SP_CACHE_INSERTION_MAX) {
        for (i = 1; i < n; i++) {
            t = m[i];

            for (j = i; j > 0 && sp_cache_name_cmp(ctx, &m[j - 1], &t) > 0;
                 j--)
            {
                m[j] = m[j - 1];
            }

            m[j] = t;
        }

        return;
    }

    for (i = n / 2; i > 0; i--) {
        sp_cache_sift(ctx, m, i - 1, n);
    }

    for (i = n - 1; i > 0; i--) {
        t = m[0];
        m[0] = m[i];
        m[i] = t;
        sp_cache_sift(ctx, m, 0, i);
    }
}


/*
 * The object that has just closed, its members on the stack from base.
 * In order (names strictly ascending, so no twins either), it is written
 * as it stands: its members leave the stack. Otherwise they are sorted,
 * checked for twins and moved to the top of members[], and the object
 * gets an entry (objects[] is in the order objects close until pass 1
 * ends).
 */
static int
sp_cache_close_object(sp_cache_ctx_t *ctx, size_t base, uint32_t close,
    const char **reason)
{
    size_t              n, i;
    sp_cache_member_t  *m, *sorted;
    sp_cache_object_t  *object;

    n = ctx->stack - base;
    m = &ctx->members[base];

    for (i = 1; i < n; i++) {
        if (sp_cache_name_cmp(ctx, &m[i - 1], &m[i]) >= 0) {
            break;
        }
    }

    if (i >= n) {
        ctx->stack = base;
        return SP_OK;
    }

    if (ctx->nobjects == ctx->objects_cap) {
        *reason = "internal: object list overflow";
        return SP_ERROR;
    }

    object = &ctx->objects[ctx->nobjects++];

    /* the first member written follows the '{' */
    object->open = m[0].start - 1;
    object->close = close;

    sp_cache_sort(ctx, m, n);

    /* to the top: the stack is below the sorted lists, overlap or not */
    sorted = &ctx->members[ctx->sorted - n];
    memmove(sorted, m, n * sizeof(sp_cache_member_t));

    /*
     * Names are compared as spelled: the request parser refuses twins
     * that differ only in escapes, here they would make two keys (a miss,
     * never a wrong hit).
     */
    for (i = 1; i < n; i++) {
        if (sp_cache_name_cmp(ctx, &sorted[i - 1], &sorted[i]) == 0) {
            *reason = "a member name appears twice in one object";
            return SP_ERROR;
        }
    }

    ctx->sorted -= n;
    ctx->stack = base;

    object->first = (uint32_t) ctx->sorted;
    object->count = (uint32_t) n;

    return SP_OK;
}


/*
 * Top-level members that do not change the answer; with
 * SP_CACHE_KEY_NO_PROMPT also those that carry the prompt (the providers'
 * spellings: OpenAI, Mistral and Anthropic messages and system, Google
 * contents and systemInstruction or system_instruction, Cohere message,
 * chat_history and preamble).
 */
static int
sp_cache_ignored(const char *name, size_t len, unsigned flags)
{
    if ((len == 4 && memcmp(name, "user", 4) == 0)
        || (len == 8 && memcmp(name, "metadata", 8) == 0)
        || (len == 14 && memcmp(name, "stream_options", 14) == 0))
    {
        return 1;
    }

    if (!(flags & SP_CACHE_KEY_NO_PROMPT)) {
        return 0;
    }

    switch (len) {
    case 6:
        return memcmp(name, "system", 6) == 0;
    case 7:
        return memcmp(name, "message", 7) == 0;
    case 8:
        return memcmp(name, "messages", 8) == 0
               || memcmp(name, "contents", 8) == 0
               || memcmp(name, "preamble", 8) == 0;
    case 12:
        return memcmp(name, "chat_history", 12) == 0;
    case 17:
        return memcmp(name, "systemInstruction", 17) == 0;
    case 18:
        return memcmp(name, "system_instruction", 18) == 0;
    }

    return 0;
}


static int
sp_cache_compact(sp_cache_ctx_t *ctx, size_t *compact_len,
    const char **reason)
{
    char                *w;
    size_t               depth, top_stack, top_sorted, top_objects;
    uint32_t             top_w;
    const char          *p, *last, *q;
    sp_cache_member_t   *m;

    p = ctx->body;
    last = p + ctx->body_len;
    w = ctx->compact;
    depth = 0;
    top_w = 0;
    top_stack = 0;
    top_sorted = 0;
    top_objects = 0;

    p = sp_cache_space(p, last);

    if (p == last) {
        *reason = "the body is empty";
        return SP_ERROR;
    }

value:

    p = sp_cache_space(p, last);

    if (p == last) {
        *reason = "the body ends where a value is expected";
        return SP_ERROR;
    }

    /* jansson counts every value, a string or number too, as a level */
    if (depth == SP_CACHE_DEPTH_MAX) {
        *reason = "the body nests deeper than the request parser allows";
        return SP_ERROR;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth + 1 >= ctx->depth_cap) {
            /* unclosed brackets: the body ends inside them */
            *reason = "the body ends inside an object or array";
            return SP_ERROR;
        }

        ctx->array[depth] = (*p == '[');
        ctx->base[depth] = (uint32_t) ctx->stack;
        depth++;
        *w++ = *p++;

        p = sp_cache_space(p, last);

        if (p < last && (*p == '}' || *p == ']')) {
            goto close;
        }

        if (ctx->array[depth - 1]) {
            goto value;
        }

        goto name;

    case '"':
        q = sp_cache_string(p + 1, last, 0, reason);

        if (q == NULL) {
            return SP_ERROR;
        }

        memcpy(w, p, (size_t) (q - p));
        w += q - p;
        p = q;
        break;

    case 't':
    case 'f':
    case 'n':
        q = (*p == 't') ? "true" : (*p == 'f') ? "false" : "null";

        if ((size_t) (last - p) < strlen(q)
            || memcmp(p, q, strlen(q)) != 0)
        {
            *reason = "the body holds an unknown literal";
            return SP_ERROR;
        }

        memcpy(w, q, strlen(q));
        w += strlen(q);
        p += strlen(q);
        break;

    default:
        q = sp_cache_number(p, last);

        if (q == NULL) {
            *reason = "the body holds an invalid value";
            return SP_ERROR;
        }

        memcpy(w, p, (size_t) (q - p));
        w += q - p;
        p = q;
        break;
    }

next:

    /* a value is complete: a member or element of the container around */
    p = sp_cache_space(p, last);

    if (depth == 0) {
        if (p != last) {
            *reason = "the body has bytes after its JSON value";
            return SP_ERROR;
        }

        *compact_len = (size_t) (w - ctx->compact);
        return SP_OK;
    }

    if (!ctx->array[depth - 1]) {
        m = &ctx->members[ctx->stack - 1];
        m->end = (uint32_t) (w - ctx->compact);

        if (depth == 1
            && sp_cache_ignored(ctx->compact + m->start + 1, m->name_len,
                                ctx->flags))
        {
            /* as if it had never been there */
            w = ctx->compact + top_w;
            ctx->stack = top_stack;
            ctx->sorted = top_sorted;
            ctx->nobjects = top_objects;
        }
    }

    if (p == last) {
        *reason = "the body ends inside an object or array";
        return SP_ERROR;
    }

    if (*p == ',') {
        p++;

        if (ctx->array[depth - 1]) {
            *w++ = ',';
            goto value;
        }

        goto name;
    }

close:

    if (p == last) {
        *reason = "the body ends inside an object or array";
        return SP_ERROR;
    }

    if (*p != (ctx->array[depth - 1] ? ']' : '}')) {
        *reason = ctx->array[depth - 1] ? "an array is not closed by ']'"
                                        : "an object is not closed by '}'";
        return SP_ERROR;
    }

    *w++ = *p++;

    if (!ctx->array[depth - 1]
        && sp_cache_close_object(ctx, ctx->base[depth - 1],
                                 (uint32_t) (w - ctx->compact), reason)
           != SP_OK)
    {
        return SP_ERROR;
    }

    depth--;
    goto next;

name:

    p = sp_cache_space(p, last);

    if (p == last) {
        *reason = "the body ends inside an object or array";
        return SP_ERROR;
    }

    if (*p != '"') {
        *reason = "an object member does not start with a quoted name";
        return SP_ERROR;
    }

    if (depth == 1) {
        top_w = (uint32_t) (w - ctx->compact);
        top_stack = ctx->stack;
        top_sorted = ctx->sorted;
        top_objects = ctx->nobjects;
    }

    /* the open object's members written so far are those on the stack */
    if (ctx->stack > ctx->base[depth - 1]) {
        *w++ = ',';
    }

    if (ctx->stack == ctx->sorted) {
        *reason = "internal: member list overflow";
        return SP_ERROR;
    }

    m = &ctx->members[ctx->stack++];
    m->start = (uint32_t) (w - ctx->compact);

    q = sp_cache_string(p + 1, last, 1, reason);

    if (q == NULL) {
        return SP_ERROR;
    }

    m->name_len = (uint32_t) (q - p - 2);
    memcpy(w, p, (size_t) (q - p));
    w += q - p;
    p = sp_cache_space(q, last);

    if (p == last || *p != ':') {
        *reason = "an object member's name is not followed by ':'";
        return SP_ERROR;
    }

    *w++ = ':';
    p++;

    goto value;
}


/* ---- pass 2: the canonical text ------------------------------------- */

static void
sp_cache_objects_sift(sp_cache_object_t *o, size_t i, size_t n)
{
    size_t             child;
    sp_cache_object_t  t;

    for ( ;; ) {
        child = 2 * i + 1;

        if (child >= n) {
            return;
        }

        if (child + 1 < n && o[child].open < o[child + 1].open) {
            child++;
        }

        if (o[i].open >= o[child].open) {
            return;
        }

        t = o[i];
        o[i] = o[child];
        o[child] = t;
        i = child;
    }
}


/*
 * The entries, made as objects closed (inner ones before the object
 * around them), put in the order objects open. An object's entry moves
 * in front of its nested ones', usually few (a chat body: the top-level
 * object in front of its messages): an insertion, while the entries
 * moved stay within a few times their number; past that, a heap sort,
 * so deep nesting costs n log n, not n times the depth.
 */
static void
sp_cache_objects_order(sp_cache_ctx_t *ctx)
{
    size_t              i, lo, hi, mid, n, moved;
    sp_cache_object_t  *o, t;

    o = ctx->objects;
    n = ctx->nobjects;
    moved = 0;

    for (i = 1; i < n; i++) {
        if (o[i - 1].open < o[i].open) {
            continue;
        }

        /* o[0, i) is in order: the first that opens after o[i] */
        lo = 0;
        hi = i - 1;

        while (lo < hi) {
            mid = lo + (hi - lo) / 2;

            if (o[mid].open < o[i].open) {
                lo = mid + 1;

            } else {
                hi = mid;
            }
        }

        moved += i - lo;

        if (moved > 4 * n + 64) {
            break;
        }

        t = o[i];
        memmove(&o[lo + 1], &o[lo], (i - lo) * sizeof(sp_cache_object_t));
        o[lo] = t;
    }

    if (i >= n) {
        return;
    }

    for (i = n / 2; i > 0; i--) {
        sp_cache_objects_sift(o, i - 1, n);
    }

    for (i = n - 1; i > 0; i--) {
        t = o[0];
        o[0] = o[i];
        o[i] = t;
        sp_cache_objects_sift(o, 0, i);
    }
}


/* the first entry from i on of an object opening at or after offset */
static size_t
sp_cache_object_from(const sp_cache_ctx_t *ctx, size_t i, uint32_t offset)
{
    size_t  n, half;

    n = ctx->nobjects - i;

    while (n > 0) {
        half = n / 2;

        if (ctx->objects[i + half].open < offset) {
            i += half + 1;
            n -= half + 1;

        } else {
            n = half;
        }
    }

    return i;
}


static size_t sp_cache_emit_object(sp_cache_ctx_t *ctx, size_t i);


/*
 * compact[start, end) into canonical: verbatim but for the outermost
 * objects with entries in it, objects[i] and on, which are written
 * sorted. Returns the first entry of an object opening at or after end.
 */
static size_t
sp_cache_emit_span(sp_cache_ctx_t *ctx, size_t start, size_t end, size_t i)
{
    sp_cache_object_t  *object;

    while (i < ctx->nobjects && ctx->objects[i].open < end) {
        object = &ctx->objects[i];

        memcpy(ctx->canonical + ctx->out, ctx->compact + start,
               object->open - start);
        ctx->out += object->open - start;
        start = object->close;

        i = sp_cache_emit_object(ctx, i);
    }

    memcpy(ctx->canonical + ctx->out, ctx->compact + start, end - start);
    ctx->out += end - start;

    return i;
}


/*
 * objects[i], its members sorted; returns the first entry past the ones
 * nested in it. Recursion: one level an object, at most
 * SP_CACHE_DEPTH_MAX.
 */
static size_t
sp_cache_emit_object(sp_cache_ctx_t *ctx, size_t i)
{
    int                 nested;
    size_t              k, next, j;
    sp_cache_member_t  *m;
    sp_cache_object_t  *object;

    object = &ctx->objects[i];
    next = i + 1;
    nested = next < ctx->nobjects && ctx->objects[next].open < object->close;

    ctx->canonical[ctx->out++] = '{';

    for (k = 0; k < object->count; k++) {
        if (k > 0) {
            ctx->canonical[ctx->out++] = ',';
        }

        m = &ctx->members[object->first + k];

        if (!nested) {
            memcpy(ctx->canonical + ctx->out, ctx->compact + m->start,
                   m->end - m->start);
            ctx->out += m->end - m->start;
            continue;
        }

        j = sp_cache_emit_span(ctx, m->start, m->end,
                               sp_cache_object_from(ctx, i + 1, m->start));

        if (j > next) {
            next = j;
        }
    }

    ctx->canonical[ctx->out++] = '}';

    return next;
}


static char *
sp_cache_header_field(char *p, const void *data, size_t len)
{
    *p++ = (char) (len >> 24);
    *p++ = (char) (len >> 16);
    *p++ = (char) (len >> 8);
    *p++ = (char) len;

    if (len) {
        memcpy(p, data, len);
    }

    return p + len;
}


/*
 * SHA-256 fetched once per process. SHA256() looks the digest up on
 * every call (a lock and two reference counts, about 250 ns: a tenth of
 * a 2 KB body's key); a fetched EVP_MD is immutable and shared by
 * threads. Two threads may both fetch the first time: one keeps its
 * copy, the other frees its own. It is never freed, like OpenSSL's own
 * tables. NULL if the fetch failed.
 */
static const EVP_MD *
sp_cache_sha256(void)
{
    EVP_MD         *md, *expected;
    static EVP_MD  *fetched;

    md = __atomic_load_n(&fetched, __ATOMIC_ACQUIRE);

    if (md != NULL) {
        return md;
    }

    md = EVP_MD_fetch(NULL, "SHA256", NULL);

    if (md == NULL) {
        return NULL;
    }

    expected = NULL;

    if (!__atomic_compare_exchange_n(&fetched, &expected, md, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        EVP_MD_free(md);
        md = expected;
    }

    return md;
}


int
sp_cache_key(const sp_cache_key_in_t *in, void *scratch,
    size_t scratch_len, uint8_t *key, char *err, size_t errlen)
{
    char            *p, *header, number[4];
    size_t           need, compact_len, header_len, prefix_len, i;
    uintptr_t        align;
    const char      *reason, *prefix;
    const EVP_MD    *md;
    sp_cache_ctx_t   ctx;

    static const struct {
        const char  *name;
        size_t       offset;
    } fields[] = {
        { "org_id", offsetof(sp_cache_key_in_t, org_id) },
        { "scope_value", offsetof(sp_cache_key_in_t, scope_value) },
        { "provider", offsetof(sp_cache_key_in_t, provider) },
        { "endpoint", offsetof(sp_cache_key_in_t, endpoint) },
    };

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (((const sp_str_t *) ((const char *) in + fields[i].offset))->len
            > SP_CACHE_FIELD_MAX)
        {
            sp_errorf(err, errlen, "cache key: %s is longer than %d bytes",
                      fields[i].name, SP_CACHE_FIELD_MAX);
            return SP_ERROR;
        }
    }

    need = sp_cache_key_scratch(in->body_len);

    if (need == SIZE_MAX || scratch == NULL || scratch_len < need) {
        sp_errorf(err, errlen, "cache key: scratch of %zu bytes is too "
                  "small for a body of %zu bytes (%zu needed)", scratch_len,
                  in->body_len, need);
        return SP_ERROR;
    }

    /* the arrays first, 8-aligned; then the texts */
    align = (8 - ((uintptr_t) scratch & 7)) & 7;
    p = (char *) scratch + align;

    ctx.body = in->body;
    ctx.body_len = in->body_len;
    ctx.out = 0;
    ctx.nobjects = 0;
    ctx.stack = 0;
    ctx.flags = in->flags;

    ctx.objects = (sp_cache_object_t *) p;
    ctx.objects_cap = sp_cache_objects_cap(in->body_len);
    p += ctx.objects_cap * sizeof(sp_cache_object_t);

    ctx.members = (sp_cache_member_t *) p;
    ctx.members_cap = sp_cache_members_cap(in->body_len);
    ctx.sorted = ctx.members_cap;
    p += ctx.members_cap * sizeof(sp_cache_member_t);

    ctx.depth_cap = sp_cache_depth_cap(in->body_len);

    ctx.compact = p;
    p += in->body_len > SP_CACHE_HEADER_MAX ? in->body_len
                                            : SP_CACHE_HEADER_MAX;
    ctx.canonical = p;

    if (in->body == NULL && in->body_len > 0) {
        sp_errorf(err, errlen, "cache key: no body");
        return SP_ERROR;
    }

    if (sp_cache_compact(&ctx, &compact_len, &reason) != SP_OK) {
        sp_errorf(err, errlen, "cache key: %s", reason);
        return SP_ERROR;
    }

    sp_cache_objects_order(&ctx);
    (void) sp_cache_emit_span(&ctx, 0, compact_len, 0);

    number[0] = (char) (in->scope >> 24);
    number[1] = (char) (in->scope >> 16);
    number[2] = (char) (in->scope >> 8);
    number[3] = (char) in->scope;

    if (in->flags & SP_CACHE_KEY_NO_PROMPT) {
        prefix = SP_CACHE_GROUP_PREFIX;
        prefix_len = SP_CACHE_GROUP_PREFIX_LEN;

    } else {
        prefix = SP_CACHE_PREFIX;
        prefix_len = SP_CACHE_PREFIX_LEN;
    }

    header_len = prefix_len + 5 * 4 + in->org_id.len
                 + in->scope_value.len + in->provider.len + in->endpoint.len;
    p = ctx.canonical - header_len;
    header = p;

    memcpy(p, prefix, prefix_len);
    p += prefix_len;
    p = sp_cache_header_field(p, in->org_id.data, in->org_id.len);
    memcpy(p, number, 4);
    p += 4;
    p = sp_cache_header_field(p, in->scope_value.data, in->scope_value.len);
    p = sp_cache_header_field(p, in->provider.data, in->provider.len);
    p = sp_cache_header_field(p, in->endpoint.data, in->endpoint.len);

    md = sp_cache_sha256();

    if (md == NULL
        || !EVP_Digest(header, header_len + ctx.out, key, NULL, md, NULL))
    {
        sp_errorf(err, errlen, "cache key: SHA-256 is not available");
        return SP_ERROR;
    }

    return SP_OK;
}
