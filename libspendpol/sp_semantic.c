/*
 * The semantic cache's library (sp_semantic.h): the prompt to embed, the
 * lexical guard, int8 vectors and their search, the embeddings
 * endpoints' bodies and answers.
 *
 * JSON is read in place by a small cursor (sp_semantic_json_*): an
 * object's members or an array's elements are walked one after the
 * other, each value skipped by an iterative scanner with a bounded
 * bracket stack. A reader walks a fixed number of levels (the root, the
 * messages, one message, its parts), so every byte is looked at a
 * bounded number of times: linear, without jansson's allocations.
 * Strings are decoded (escapes, surrogates, UTF-8 checked) only for the
 * texts kept and the few member names compared.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <float.h>

/*
 * The widest vector kernels compiled in: 3 AVX-512 VNNI, 2 AVX2, 1 SSE2,
 * 0 plain C; the CPU still decides at run time. Lowered by hand
 * (-DSP_SEMANTIC_ISA=2) to test the narrower ones on a wider CPU.
 */
#ifndef SP_SEMANTIC_ISA
#define SP_SEMANTIC_ISA  3
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#if (SP_SEMANTIC_ISA >= 1)
#define SP_SEMANTIC_SSE2  1
#endif
#endif

#if defined(__x86_64__) && defined(__GNUC__) && (SP_SEMANTIC_ISA >= 2)
#include <immintrin.h>
#define SP_SEMANTIC_X86  1
#if (SP_SEMANTIC_ISA >= 3)
#define SP_SEMANTIC_AVX512  1
#endif
#endif

#include "sp_semantic.h"


#define SP_SEMANTIC_JSON_DEPTH   256     /* deeper values are refused */
#define SP_SEMANTIC_NAME_MAX     128     /* member names compared */
#define SP_SEMANTIC_NUMBER_MAX   64      /* an embedding's number, spelled */
#define SP_SEMANTIC_HASH_SEED    0x73656d616e746963ULL   /* "semantic" */
#define SP_SEMANTIC_WORD_MAX     16      /* longest word in the lists */
#define SP_SEMANTIC_REASON_TOKEN 8       /* a token quoted in a reason */
#define SP_SEMANTIC_AHEAD        4       /* vectors prefetched ahead */


/* ---- JSON, read in place ---------------------------------------------- */

typedef struct {
    const char  *p;          /* next member or element, or the close */
    const char  *end;
    const char  *value;      /* the value last returned, to skip */
    char         close;
    unsigned     started:1;
} sp_semantic_iter_t;


static const char *
sp_semantic_ws(const char *p, const char *end)
{
    while (p < end
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* p at '"': past the closing quote, or NULL (escapes and controls checked) */
static const char *
sp_semantic_string_end(const char *p, const char *end)
{
    int            i;
    unsigned char  c;

    for (p++; p < end; p++) {
        c = (unsigned char) *p;

        if (c == '"') {
            return p + 1;
        }

        if (c < 0x20) {
            return NULL;
        }

        if (c != '\\') {
            continue;
        }

        if (end - p < 2) {
            return NULL;
        }

        switch (p[1]) {

        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            p++;
            break;

        case 'u':
            if (end - p < 6) {
                return NULL;
            }

            for (i = 2; i < 6; i++) {
                if (sp_hex_digit((unsigned char) p[i]) < 0) {
                    return NULL;
                }
            }

            p += 5;
            break;

        default:
            return NULL;
        }
    }

    return NULL;
}


static int
sp_semantic_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}


/* the number grammar of RFC 8259: past it, or NULL */
static const char *
sp_semantic_number_end(const char *p, const char *end)
{
    if (p < end && *p == '-') {
        p++;
    }

    if (!sp_semantic_digit(p, end)) {
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else {
        while (sp_semantic_digit(p, end)) {
            p++;
        }
    }

    if (p < end && *p == '.') {
        p++;

        if (!sp_semantic_digit(p, end)) {
            return NULL;
        }

        while (sp_semantic_digit(p, end)) {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (!sp_semantic_digit(p, end)) {
            return NULL;
        }

        while (sp_semantic_digit(p, end)) {
            p++;
        }
    }

    return p;
}


/* past the value at p (any type, nested at most JSON_DEPTH), or NULL */
static const char *
sp_semantic_skip(const char *p, const char *end)
{
    size_t  depth, n;
    char    stack[SP_SEMANTIC_JSON_DEPTH];

    depth = 0;

value:

    p = sp_semantic_ws(p, end);

    if (p == end) {
        return NULL;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth == SP_SEMANTIC_JSON_DEPTH) {
            return NULL;
        }

        stack[depth++] = (*p == '{') ? '}' : ']';
        p = sp_semantic_ws(p + 1, end);

        if (p < end && *p == stack[depth - 1]) {
            p++;
            depth--;
            goto after;
        }

        if (stack[depth - 1] == '}') {
            goto key;
        }

        goto value;

    case '"':
        p = sp_semantic_string_end(p, end);
        break;

    case 't':
    case 'n':
        n = 4;
        goto literal;

    case 'f':
        n = 5;

    literal:

        if ((size_t) (end - p) < n
            || memcmp(p, *p == 't' ? "true" : *p == 'n' ? "null" : "false",
                      n) != 0)
        {
            return NULL;
        }

        p += n;
        break;

    default:
        p = sp_semantic_number_end(p, end);
    }

    if (p == NULL) {
        return NULL;
    }

after:

    if (depth == 0) {
        return p;
    }

    p = sp_semantic_ws(p, end);

    if (p == end) {
        return NULL;
    }

    if (*p == stack[depth - 1]) {
        p++;
        depth--;
        goto after;
    }

    if (*p != ',') {
        return NULL;
    }

    p++;

    if (stack[depth - 1] == ']') {
        goto value;
    }

key:

    p = sp_semantic_ws(p, end);

    if (p == end || *p != '"') {
        return NULL;
    }

    p = sp_semantic_string_end(p, end);

    if (p == NULL) {
        return NULL;
    }

    p = sp_semantic_ws(p, end);

    if (p == end || *p != ':') {
        return NULL;
    }

    p++;

    goto value;
}


static int
sp_semantic_iter_open(sp_semantic_iter_t *it, const char *v,
    const char *end, char open)
{
    if (v == NULL || v >= end || *v != open) {
        return SP_ERROR;
    }

    it->p = v + 1;
    it->end = end;
    it->value = NULL;
    it->close = (open == '{') ? '}' : ']';
    it->started = 0;

    return SP_OK;
}


/*
 * 1: the next member (its name as spelled in *name, for objects) or
 * element at *value; 0: the end; -1: not JSON.
 */
static int
sp_semantic_iter_next(sp_semantic_iter_t *it, sp_str_t *name,
    const char **value)
{
    const char  *p, *q, *end;

    end = it->end;
    p = it->p;

    if (it->value != NULL) {
        p = sp_semantic_skip(it->value, end);

        if (p == NULL) {
            return -1;
        }

        it->value = NULL;
    }

    p = sp_semantic_ws(p, end);

    if (p == end) {
        return -1;
    }

    if (*p == it->close && !it->started) {
        it->p = p + 1;
        return 0;
    }

    if (it->started) {
        if (*p == it->close) {
            it->p = p + 1;
            return 0;
        }

        if (*p != ',') {
            return -1;
        }

        p = sp_semantic_ws(p + 1, end);

        if (p == end || *p == it->close) {
            return -1;
        }
    }

    it->started = 1;

    if (it->close == '}') {
        if (*p != '"') {
            return -1;
        }

        q = sp_semantic_string_end(p, end);

        if (q == NULL) {
            return -1;
        }

        if (name != NULL) {
            name->data = p + 1;
            name->len = (size_t) (q - 1 - (p + 1));
        }

        p = sp_semantic_ws(q, end);

        if (p == end || *p != ':') {
            return -1;
        }

        p = sp_semantic_ws(p + 1, end);

        if (p == end) {
            return -1;
        }
    }

    *value = p;
    it->value = p;
    it->p = p;

    return 1;
}


/* the length of the UTF-8 sequence at p, or 0 when it is not one */
static size_t
sp_semantic_utf8(const unsigned char *p, const unsigned char *end)
{
    size_t    n, i;
    uint32_t  cp, min;

    if (p[0] < 0x80) {
        return 1;
    }

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2; cp = p[0] & 0x1f; min = 0x80;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3; cp = p[0] & 0x0f; min = 0x800;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4; cp = p[0] & 0x07; min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        cp = (cp << 6) | (p[i] & 0x3f);
    }

    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }

    return n;
}


static size_t
sp_semantic_put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (char) (0xc0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (char) (0xe0 | (cp >> 12));
        out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char) (0x80 | (cp & 0x3f));
        return 3;
    }

    out[0] = (char) (0xf0 | (cp >> 18));
    out[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char) (0x80 | (cp & 0x3f));
    return 4;
}


static uint32_t
sp_semantic_hex4(const char *p)
{
    uint32_t  cp;
    int       i;

    cp = 0;

    for (i = 0; i < 4; i++) {
        cp = cp * 16 + (uint32_t) sp_hex_digit((unsigned char) p[i]);
    }

    return cp;
}


/*
 * A string's bytes as spelled (between the quotes, escapes already
 * checked by sp_semantic_string_end) decoded into out, which has room for
 * len bytes (decoding never grows). The length, or -1 for bytes that are
 * not UTF-8 or a lone surrogate, as jansson refuses them.
 */
static long
sp_semantic_decode(const char *raw, size_t len, char *out)
{
    size_t                n, k;
    uint32_t              cp, lo;
    const unsigned char  *p, *end;

    p = (const unsigned char *) raw;
    end = p + len;
    n = 0;

    while (p < end) {
        if (*p != '\\') {
            k = sp_semantic_utf8(p, end);

            if (k == 0) {
                return -1;
            }

            memcpy(out + n, p, k);
            n += k;
            p += k;
            continue;
        }

        switch (p[1]) {
        case 'b': out[n++] = '\b'; p += 2; continue;
        case 'f': out[n++] = '\f'; p += 2; continue;
        case 'n': out[n++] = '\n'; p += 2; continue;
        case 'r': out[n++] = '\r'; p += 2; continue;
        case 't': out[n++] = '\t'; p += 2; continue;
        case 'u': break;
        default: out[n++] = (char) p[1]; p += 2; continue;
        }

        cp = sp_semantic_hex4((const char *) p + 2);
        p += 6;

        if (cp >= 0xdc00 && cp <= 0xdfff) {
            return -1;
        }

        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u') {
                return -1;
            }

            lo = sp_semantic_hex4((const char *) p + 2);

            if (lo < 0xdc00 || lo > 0xdfff) {
                return -1;
            }

            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
        }

        n += sp_semantic_put_utf8(out + n, cp);
    }

    return (long) n;
}


/* 1 when a member name as spelled is name once decoded */
static int
sp_semantic_name_is(sp_str_t spelled, const char *name)
{
    long    n;
    size_t  len;
    char    buf[SP_SEMANTIC_NAME_MAX];

    len = strlen(name);

    if (memchr(spelled.data, '\\', spelled.len) == NULL) {
        return spelled.len == len && memcmp(spelled.data, name, len) == 0;
    }

    if (spelled.len > SP_SEMANTIC_NAME_MAX) {
        return 0;
    }

    n = sp_semantic_decode(spelled.data, spelled.len, buf);

    return n == (long) len && memcmp(buf, name, len) == 0;
}


/*
 * The value of member name in the object at v: 1 and *value, 0 when it
 * has none, -1 when v is not a JSON object or has the member twice (a
 * body jansson refuses: which one the provider reads is not ours to
 * guess).
 */
static int
sp_semantic_get(const char *v, const char *end, const char *name,
    const char **value)
{
    int                  rc, found;
    sp_str_t             spelled;
    const char          *item;
    sp_semantic_iter_t   it;

    if (sp_semantic_iter_open(&it, v, end, '{') != SP_OK) {
        return -1;
    }

    found = 0;

    while ((rc = sp_semantic_iter_next(&it, &spelled, &item)) == 1) {
        if (sp_semantic_name_is(spelled, name)) {
            if (found) {
                return -1;
            }

            found = 1;
            *value = item;
        }
    }

    return rc < 0 ? -1 : found;
}


/* the first element of the array at v: 1 and *value, 0: empty, -1 */
static int
sp_semantic_first(const char *v, const char *end, const char **value)
{
    sp_semantic_iter_t  it;

    if (sp_semantic_iter_open(&it, v, end, '[') != SP_OK) {
        return -1;
    }

    return sp_semantic_iter_next(&it, NULL, value);
}


/* ---- 1. the prompt ------------------------------------------------------ */

typedef struct {
    const char  *end;        /* of the body */
    char        *out;        /* scratch */
    size_t       cap;
    size_t       n;
    char        *err;
    size_t       errlen;
} sp_semantic_writer_t;


/* the string at v decoded into the scratch, after sep when not the first */
static int
sp_semantic_put_string(sp_semantic_writer_t *w, const char *v,
    size_t start, const char *sep, const char *what)
{
    long         n;
    size_t       seplen;
    const char  *q;

    q = sp_semantic_string_end(v, w->end);

    if (q == NULL) {
        sp_errorf(w->err, w->errlen, "%s is not a JSON string", what);
        return SP_ERROR;
    }

    seplen = (w->n > start) ? strlen(sep) : 0;

    /* decoding never grows and the two quotes pay for a separator */
    if (w->cap - w->n < seplen + (size_t) (q - v)) {
        sp_errorf(w->err, w->errlen, "scratch too small for %s", what);
        return SP_ERROR;
    }

    memcpy(w->out + w->n, sep, seplen);

    n = sp_semantic_decode(v + 1, (size_t) (q - v - 2),
                           w->out + w->n + seplen);

    if (n < 0) {
        sp_errorf(w->err, w->errlen, "%s is not UTF-8", what);
        return SP_ERROR;
    }

    if (n > 0) {
        w->n += seplen + (size_t) n;
    }

    return SP_OK;
}


/* a decoded string value, cut to size - 1 bytes, or "" when not a string */
static void
sp_semantic_short(const char *v, const char *end, char *out, size_t size)
{
    long         n;
    const char  *q;
    char         buf[SP_SEMANTIC_NAME_MAX];

    out[0] = '\0';

    if (v >= end || *v != '"') {
        return;
    }

    q = sp_semantic_string_end(v, end);

    if (q == NULL || (size_t) (q - v - 2) > sizeof(buf)) {
        return;
    }

    n = sp_semantic_decode(v + 1, (size_t) (q - v - 2), buf);

    if (n < 0) {
        return;
    }

    if ((size_t) n >= size) {
        n = (long) size - 1;
    }

    memcpy(out, buf, (size_t) n);
    out[n] = '\0';
}


/*
 * The text of a content value: a string, an array of parts (strings, or
 * objects whose "type" is absent, "text" or "input_text", their "text"
 * member), or null; parts joined by "\n".
 */
static int
sp_semantic_put_content(sp_semantic_writer_t *w, const char *v,
    const char *what)
{
    int                  rc, r;
    char                 type[16];
    size_t               start;
    const char          *part, *t;
    sp_semantic_iter_t   it;

    if (*v == '"') {
        return sp_semantic_put_string(w, v, w->n, "", what);
    }

    if (*v == 'n') {
        return SP_OK;
    }

    if (sp_semantic_iter_open(&it, v, w->end, '[') != SP_OK) {
        sp_errorf(w->err, w->errlen, "%s is not a string or an array",
                  what);
        return SP_ERROR;
    }

    start = w->n;

    while ((rc = sp_semantic_iter_next(&it, NULL, &part)) == 1) {
        if (*part == '"') {
            if (sp_semantic_put_string(w, part, start, "\n", what)
                != SP_OK)
            {
                return SP_ERROR;
            }

            continue;
        }

        if (*part != '{') {
            continue;
        }

        r = sp_semantic_get(part, w->end, "type", &t);

        if (r < 0) {
            goto invalid;
        }

        if (r == 1) {
            sp_semantic_short(t, w->end, type, sizeof(type));

            if (strcmp(type, "text") != 0
                && strcmp(type, "input_text") != 0)
            {
                continue;
            }
        }

        r = sp_semantic_get(part, w->end, "text", &t);

        if (r < 0) {
            goto invalid;
        }

        if (r == 1 && *t == '"'
            && sp_semantic_put_string(w, t, start, "\n", what) != SP_OK)
        {
            return SP_ERROR;
        }
    }

    if (rc == 0) {
        return SP_OK;
    }

invalid:

    sp_errorf(w->err, w->errlen, "%s is not JSON", what);
    return SP_ERROR;
}


typedef enum {
    SP_SEMANTIC_CHAT = 0,       /* openai, azure, mistral, cohere v2 */
    SP_SEMANTIC_ANTHROPIC,
    SP_SEMANTIC_GOOGLE
} sp_semantic_shape_e;


/*
 * A system prompt's text after what the scratch holds, "\n" between
 * them: a string, text blocks, or a Gemini Content. The separator is paid
 * for by the quotes of the text before it.
 */
static int
sp_semantic_put_joined(sp_semantic_writer_t *w, const char *v,
    sp_semantic_shape_e shape, const char *field)
{
    int          r;
    size_t       before;
    const char  *parts;

    before = w->n;

    if (before > 0) {
        if (w->cap == w->n) {
            sp_errorf(w->err, w->errlen, "scratch too small for %s",
                      field);
            return SP_ERROR;
        }

        w->out[w->n++] = '\n';
    }

    if (shape == SP_SEMANTIC_GOOGLE && *v == '{') {
        r = sp_semantic_get(v, w->end, "parts", &parts);

        if (r < 0) {
            sp_errorf(w->err, w->errlen, "%s is not JSON", field);
            return SP_ERROR;
        }

        r = (r == 1) ? sp_semantic_put_content(w, parts, field) : SP_OK;

    } else {
        r = sp_semantic_put_content(w, v, field);
    }

    /* nothing added: no separator either */
    if (w->n == before + 1 && before > 0) {
        w->n = before;
    }

    return r;
}


/*
 * Walks the messages array at v: system messages (chat shape) go to the
 * scratch as found; the last message must be the user's; its content,
 * the start of its element (what precedes it is the context) and the
 * count of the others are returned.
 */
static int
sp_semantic_messages(sp_semantic_writer_t *w, sp_semantic_shape_e shape,
    const char *v, const char *field, const char **content,
    const char **last, uint32_t *turns)
{
    int                  rc, r, is_system;
    char                 role[16];
    uint32_t             others;
    const char          *m, *rv, *cv;
    sp_semantic_iter_t   it;

    if (sp_semantic_iter_open(&it, v, w->end, '[') != SP_OK) {
        sp_errorf(w->err, w->errlen, "%s is not an array", field);
        return SP_ERROR;
    }

    *content = NULL;
    *last = NULL;
    others = 0;
    role[0] = '\0';

    while ((rc = sp_semantic_iter_next(&it, NULL, &m)) == 1) {
        if (*m != '{') {
            sp_errorf(w->err, w->errlen, "%s holds a non-object", field);
            return SP_ERROR;
        }

        r = sp_semantic_get(m, w->end, "role", &rv);

        if (r < 0) {
            goto invalid;
        }

        if (r == 0) {
            /* Gemini: a content without a role is the user's */
            strcpy(role, shape == SP_SEMANTIC_GOOGLE ? "user" : "");

        } else {
            sp_semantic_short(rv, w->end, role, sizeof(role));
        }

        r = sp_semantic_get(m, w->end,
                            shape == SP_SEMANTIC_GOOGLE ? "parts"
                                                        : "content", &cv);
        if (r < 0) {
            goto invalid;
        }

        is_system = shape == SP_SEMANTIC_CHAT
                    && (strcmp(role, "system") == 0
                        || strcmp(role, "developer") == 0);

        if (is_system) {
            if (r == 1
                && sp_semantic_put_joined(w, cv, shape, "a system message")
                   != SP_OK)
            {
                return SP_ERROR;
            }

            continue;
        }

        if (*last != NULL) {
            others++;
        }

        *last = m;
        *content = (r == 1) ? cv : NULL;
    }

    if (rc < 0) {
        goto invalid;
    }

    if (*last == NULL) {
        sp_errorf(w->err, w->errlen, "%s holds no user message", field);
        return SP_ERROR;
    }

    if (strcmp(role, "user") != 0) {
        sp_errorf(w->err, w->errlen, "the last message in %s is not the "
                  "user's (role \"%.12s\")", field, role);
        return SP_ERROR;
    }

    *turns = others;

    return SP_OK;

invalid:

    sp_errorf(w->err, w->errlen, "%s is not JSON", field);
    return SP_ERROR;
}


size_t
sp_semantic_prompt_scratch(size_t body_len)
{
    return body_len + 2;
}


int
sp_semantic_prompt(sp_provider_e provider, const char *body, size_t len,
    unsigned flags, char *scratch, size_t scratch_len,
    sp_semantic_prompt_t *prompt, char *err, size_t errlen)
{
    int                    r, i;
    size_t                 user_start, system_len;
    const char            *names[2];
    uint32_t               turns;
    uint64_t               hash;
    const char            *root, *end, *v, *content, *last, *array;
    const char            *field;
    sp_semantic_iter_t     it;
    sp_semantic_shape_e    shape;
    sp_semantic_writer_t   w;

    memset(prompt, 0, sizeof(sp_semantic_prompt_t));
    prompt->text.data = "";
    prompt->user.data = "";
    prompt->system.data = "";

    end = body + len;
    root = sp_semantic_ws(body, end);

    if (root == end || *root != '{') {
        sp_errorf(err, errlen, "the body is not a JSON object");
        return SP_ERROR;
    }

    w.end = end;
    w.out = scratch;
    w.cap = scratch_len;
    w.n = 0;
    w.err = err;
    w.errlen = errlen;

    content = NULL;
    last = NULL;
    array = NULL;
    turns = 0;

    switch (provider) {

    case SP_PROVIDER_OPENAI:
    case SP_PROVIDER_AZURE:
    case SP_PROVIDER_MISTRAL:
    case SP_PROVIDER_COHERE:
        shape = SP_SEMANTIC_CHAT;
        field = "messages";
        break;

    case SP_PROVIDER_ANTHROPIC:
        shape = SP_SEMANTIC_ANTHROPIC;
        field = "messages";
        break;

    case SP_PROVIDER_GOOGLE:
        shape = SP_SEMANTIC_GOOGLE;
        field = "contents";
        break;

    default:
        sp_errorf(err, errlen, "unknown provider");
        return SP_ERROR;
    }

    /* the system prompt first: it goes first in the scratch */
    if (shape == SP_SEMANTIC_ANTHROPIC || shape == SP_SEMANTIC_GOOGLE) {
        names[0] = "system";
        names[1] = NULL;

        if (shape == SP_SEMANTIC_GOOGLE) {
            names[0] = "systemInstruction";
            names[1] = "system_instruction";
        }

        for (i = 0; i < 2 && names[i] != NULL; i++) {
            r = sp_semantic_get(root, end, names[i], &v);

            if (r < 0) {
                sp_errorf(err, errlen, "the body is not JSON");
                return SP_ERROR;
            }

            if (r == 1
                && sp_semantic_put_joined(&w, v, shape, names[i]) != SP_OK)
            {
                return SP_ERROR;
            }
        }
    }

    r = sp_semantic_get(root, end, field, &array);

    if (r < 0) {
        sp_errorf(err, errlen, "the body is not JSON");
        return SP_ERROR;
    }

    if (r == 0 && provider == SP_PROVIDER_COHERE) {
        /* Cohere v1: preamble, chat_history, message */
        if (sp_semantic_get(root, end, "preamble", &v) == 1
            && sp_semantic_put_joined(&w, v, shape, "preamble") != SP_OK)
        {
            return SP_ERROR;
        }

        r = sp_semantic_get(root, end, "message", &content);

        if (r != 1) {
            sp_errorf(err, errlen, "no messages array and no message");
            return SP_ERROR;
        }

        if (*content != '"') {
            sp_errorf(err, errlen, "message is not a string");
            return SP_ERROR;
        }

        if (sp_semantic_get(root, end, "chat_history", &array) == 1) {
            /* the context: the history, as spelled */
            if (sp_semantic_iter_open(&it, array, end, '[') != SP_OK) {
                sp_errorf(err, errlen, "chat_history is not an array");
                return SP_ERROR;
            }

            while ((r = sp_semantic_iter_next(&it, NULL, &v)) == 1) {
                turns++;
            }

            last = it.p;

            if (r < 0) {
                sp_errorf(err, errlen, "chat_history is not JSON");
                return SP_ERROR;
            }

        } else {
            array = content;
            last = content;
        }

    } else if (r == 0) {
        sp_errorf(err, errlen, "no %s array", field);
        return SP_ERROR;

    } else if (sp_semantic_messages(&w, shape, array, field, &content,
                                    &last, &turns)
               != SP_OK)
    {
        return SP_ERROR;
    }

    system_len = w.n;

    if (content == NULL) {
        sp_errorf(err, errlen, "the last user message has no content");
        return SP_ERROR;
    }

    /* room for "\n\n" between system and user: the quotes paid for it */
    user_start = system_len ? system_len + 2 : 0;

    if (user_start > w.cap) {
        sp_errorf(err, errlen, "scratch too small");
        return SP_ERROR;
    }

    w.n = user_start;

    if (shape == SP_SEMANTIC_GOOGLE && *content != '[') {
        sp_errorf(err, errlen, "the last content's parts is not an array");
        return SP_ERROR;
    }

    if (sp_semantic_put_content(&w, content, "the last user message")
        != SP_OK)
    {
        return SP_ERROR;
    }

    if (w.n == user_start) {
        sp_errorf(err, errlen, "the last user message has no text");
        return SP_ERROR;
    }

    if (system_len) {
        scratch[system_len] = '\n';
        scratch[system_len + 1] = '\n';
    }

    prompt->system.data = scratch;
    prompt->system.len = system_len;
    prompt->user.data = scratch + user_start;
    prompt->user.len = w.n - user_start;

    if ((flags & SP_SEMANTIC_WITH_SYSTEM) && system_len) {
        prompt->text.data = scratch;
        prompt->text.len = w.n;

    } else {
        prompt->text = prompt->user;
    }

    prompt->turns = turns;

    hash = sp_hash64(scratch, system_len, SP_SEMANTIC_HASH_SEED);
    prompt->context = sp_hash64(array, (size_t) (last - array), hash);

    return SP_OK;
}


/* ---- 2. the lexical guard ---------------------------------------------- */

typedef enum {
    SP_SEMANTIC_NEGATION = 0,
    SP_SEMANTIC_NUMBER,
    SP_SEMANTIC_DATE,
    SP_SEMANTIC_QUOTED,
    SP_SEMANTIC_IDENTIFIER,
    SP_SEMANTIC_ENTITY
} sp_semantic_category_e;

static const char  *sp_semantic_category_names[] = {
    "negation", "number", "date or time", "quoted string", "identifier",
    "named entity"
};

typedef struct {
    const char  *data;
    uint32_t     len;
    uint8_t      category;
    uint8_t      fold;        /* compared ASCII case folded */
} sp_semantic_token_t;

typedef struct {
    sp_semantic_token_t  *token;
    size_t                n;
    int                   overflow;
} sp_semantic_tokens_t;

typedef struct {
    const char  *word;
    const char  *as;          /* the token it counts as */
    uint8_t      category;
} sp_semantic_word_t;


#define NEG  SP_SEMANTIC_NEGATION
#define NUM  SP_SEMANTIC_NUMBER
#define DAT  SP_SEMANTIC_DATE

/* sorted by word (bytewise): a binary search; a unit test checks */
static const sp_semantic_word_t  sp_semantic_words[] = {
    { "above", "above", NEG },
    { "after", "after", NEG },
    { "afternoon", "afternoon", DAT },
    { "ago", "ago", DAT },
    { "allow", "allow", NEG },
    { "allowed", "allow", NEG },
    { "allowing", "allow", NEG },
    { "allows", "allow", NEG },
    { "annual", "annual", DAT },
    { "annually", "annual", DAT },
    { "apr", "april", DAT },
    { "april", "april", DAT },
    { "aug", "august", DAT },
    { "august", "august", DAT },
    { "before", "before", NEG },
    { "below", "below", NEG },
    { "billion", "1000000000", NUM },
    { "billions", "1000000000", NUM },
    { "cannot", "not", NEG },
    { "cant", "not", NEG },
    { "centuries", "century", DAT },
    { "century", "century", DAT },
    { "daily", "daily", DAT },
    { "day", "day", DAT },
    { "days", "day", DAT },
    { "dec", "december", DAT },
    { "decade", "decade", DAT },
    { "decades", "decade", DAT },
    { "december", "december", DAT },
    { "decrease", "decrease", NEG },
    { "decreased", "decrease", NEG },
    { "decreases", "decrease", NEG },
    { "decreasing", "decrease", NEG },
    { "denied", "deny", NEG },
    { "denies", "deny", NEG },
    { "deny", "deny", NEG },
    { "denying", "deny", NEG },
    { "disable", "disable", NEG },
    { "disabled", "disable", NEG },
    { "disables", "disable", NEG },
    { "disabling", "disable", NEG },
    { "doesnt", "not", NEG },
    { "dont", "not", NEG },
    { "dozen", "12", NUM },
    { "dozens", "12", NUM },
    { "eight", "8", NUM },
    { "eighteen", "18", NUM },
    { "eighth", "8th", NUM },
    { "eighty", "80", NUM },
    { "eleven", "11", NUM },
    { "enable", "enable", NEG },
    { "enabled", "enable", NEG },
    { "enables", "enable", NEG },
    { "enabling", "enable", NEG },
    { "evening", "evening", DAT },
    { "except", "except", NEG },
    { "exclude", "exclude", NEG },
    { "excluded", "exclude", NEG },
    { "excludes", "exclude", NEG },
    { "excluding", "exclude", NEG },
    { "false", "false", NEG },
    { "feb", "february", DAT },
    { "february", "february", DAT },
    { "fewer", "fewer", NEG },
    { "fifteen", "15", NUM },
    { "fifth", "5th", NUM },
    { "fifty", "50", NUM },
    { "first", "1st", NUM },
    { "five", "5", NUM },
    { "forty", "40", NUM },
    { "four", "4", NUM },
    { "fourteen", "14", NUM },
    { "fourth", "4th", NUM },
    { "fri", "friday", DAT },
    { "friday", "friday", DAT },
    { "half", "half", NUM },
    { "higher", "higher", NEG },
    { "hour", "hour", DAT },
    { "hourly", "hourly", DAT },
    { "hours", "hour", DAT },
    { "hundred", "100", NUM },
    { "hundreds", "100", NUM },
    { "include", "include", NEG },
    { "included", "include", NEG },
    { "includes", "include", NEG },
    { "including", "include", NEG },
    { "increase", "increase", NEG },
    { "increased", "increase", NEG },
    { "increases", "increase", NEG },
    { "increasing", "increase", NEG },
    { "isnt", "not", NEG },
    { "jan", "january", DAT },
    { "january", "january", DAT },
    { "jul", "july", DAT },
    { "july", "july", DAT },
    { "jun", "june", DAT },
    { "june", "june", DAT },
    { "last", "last", DAT },
    { "least", "least", NEG },
    { "less", "less", NEG },
    { "lower", "lower", NEG },
    { "mar", "march", DAT },
    { "march", "march", DAT },
    { "max", "max", NEG },
    { "maximum", "max", NEG },
    { "midnight", "midnight", DAT },
    { "million", "1000000", NUM },
    { "millions", "1000000", NUM },
    { "min", "min", NEG },
    { "minimum", "min", NEG },
    { "minute", "minute", DAT },
    { "minutes", "minute", DAT },
    { "monday", "monday", DAT },
    { "month", "month", DAT },
    { "monthly", "monthly", DAT },
    { "months", "month", DAT },
    { "more", "more", NEG },
    { "morning", "morning", DAT },
    { "most", "most", NEG },
    { "never", "never", NEG },
    { "next", "next", DAT },
    { "nine", "9", NUM },
    { "nineteen", "19", NUM },
    { "ninety", "90", NUM },
    { "ninth", "9th", NUM },
    { "no", "no", NEG },
    { "nobody", "nobody", NEG },
    { "none", "none", NEG },
    { "noon", "noon", DAT },
    { "nor", "nor", NEG },
    { "not", "not", NEG },
    { "nothing", "nothing", NEG },
    { "nov", "november", DAT },
    { "november", "november", DAT },
    { "nowhere", "nowhere", NEG },
    { "oct", "october", DAT },
    { "october", "october", DAT },
    { "off", "off", NEG },
    { "on", "on", NEG },
    { "once", "once", NUM },
    { "one", "1", NUM },
    { "previous", "previous", DAT },
    { "recent", "recent", DAT },
    { "saturday", "saturday", DAT },
    { "second", "2nd", NUM },
    { "seconds", "second", DAT },
    { "sep", "september", DAT },
    { "sept", "september", DAT },
    { "september", "september", DAT },
    { "seven", "7", NUM },
    { "seventeen", "17", NUM },
    { "seventh", "7th", NUM },
    { "seventy", "70", NUM },
    { "six", "6", NUM },
    { "sixteen", "16", NUM },
    { "sixth", "6th", NUM },
    { "sixty", "60", NUM },
    { "sunday", "sunday", DAT },
    { "ten", "10", NUM },
    { "tenth", "10th", NUM },
    { "third", "3rd", NUM },
    { "thirteen", "13", NUM },
    { "thirty", "30", NUM },
    { "thousand", "1000", NUM },
    { "thousands", "1000", NUM },
    { "three", "3", NUM },
    { "thu", "thursday", DAT },
    { "thursday", "thursday", DAT },
    { "today", "today", DAT },
    { "tomorrow", "tomorrow", DAT },
    { "tonight", "tonight", DAT },
    { "trillion", "1000000000000", NUM },
    { "true", "true", NEG },
    { "tue", "tuesday", DAT },
    { "tuesday", "tuesday", DAT },
    { "twelve", "12", NUM },
    { "twenty", "20", NUM },
    { "twice", "twice", NUM },
    { "two", "2", NUM },
    { "unless", "unless", NEG },
    { "wednesday", "wednesday", DAT },
    { "week", "week", DAT },
    { "weekend", "weekend", DAT },
    { "weekends", "weekend", DAT },
    { "weekly", "weekly", DAT },
    { "weeks", "week", DAT },
    { "without", "without", NEG },
    { "wont", "not", NEG },
    { "year", "year", DAT },
    { "yearly", "yearly", DAT },
    { "years", "year", DAT },
    { "yesterday", "yesterday", DAT },
    { "zero", "0", NUM },
};

#undef NEG
#undef NUM
#undef DAT


static int
sp_semantic_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}


static int
sp_semantic_space(unsigned char c)
{
    return c <= 0x20 || c == 0x7f;
}


static int
sp_semantic_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}


static void
sp_semantic_push(sp_semantic_tokens_t *t, const char *data, size_t len,
    int category, int fold)
{
    sp_semantic_token_t  *tok;

    if (t->n == SP_SEMANTIC_GUARD_TOKENS) {
        t->overflow = 1;
        return;
    }

    tok = &t->token[t->n++];
    tok->data = data;
    tok->len = (uint32_t) (len > UINT32_MAX ? UINT32_MAX : len);
    tok->category = (uint8_t) category;
    tok->fold = (uint8_t) fold;
}


/* the list's entry for a word (folded, ’ as '), or NULL */
static const sp_semantic_word_t *
sp_semantic_lookup(const char *w, size_t len)
{
    int     c;
    size_t  lo, hi, mid, n, i;
    char    buf[SP_SEMANTIC_WORD_MAX];

    n = 0;

    for (i = 0; i < len; i++) {
        if (n == sizeof(buf) - 1) {
            return NULL;
        }

        buf[n++] = (char) sp_semantic_lower((unsigned char) w[i]);
    }

    buf[n] = '\0';
    lo = 0;
    hi = sizeof(sp_semantic_words) / sizeof(sp_semantic_word_t);

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = strcmp(buf, sp_semantic_words[mid].word);

        if (c == 0) {
            return &sp_semantic_words[mid];
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/* a 3-byte UTF-8 punctuation at p: “ ” ‘ ’ … (E2 80 xx) */
static int
sp_semantic_punct3(const char *p, const char *end, unsigned char third)
{
    return end - p >= 3 && (unsigned char) p[0] == 0xe2
           && (unsigned char) p[1] == 0x80 && (unsigned char) p[2] == third;
}


/* the quoted strings of text: see the header */
static void
sp_semantic_quotes(const char *text, size_t len, sp_semantic_tokens_t *t)
{
    size_t       i, j, k, run, no_close, no_close3;
    const char  *end;

    end = text + len;
    no_close = len + 1;        /* no closing ' at or after this */
    no_close3 = len + 1;       /* no closing ’ at or after this */
    i = 0;

    while (i < len) {
        unsigned char  c = (unsigned char) text[i];

        if (c == '"') {
            const char  *q = memchr(text + i + 1, '"', len - i - 1);

            j = q ? (size_t) (q - text) : len;
            sp_semantic_push(t, text + i + 1, j - i - 1,
                             SP_SEMANTIC_QUOTED, 0);
            i = j + 1;
            continue;
        }

        if (c == '`') {
            for (run = 0; i + run < len && text[i + run] == '`'; run++) {
                /* the opening run */
            }

            for (j = i + run; j < len; j += k ? k : 1) {
                for (k = 0; j + k < len && text[j + k] == '`'; k++) {
                    /* a run */
                }

                if (k == run) {
                    break;
                }
            }

            sp_semantic_push(t, text + i + run, (j < len ? j : len) - i - run,
                             SP_SEMANTIC_QUOTED, 0);
            i = (j < len) ? j + run : len;
            continue;
        }

        if (sp_semantic_punct3(text + i, end, 0x9c)) {      /* “ */
            for (j = i + 3; j < len; j++) {
                if (sp_semantic_punct3(text + j, end, 0x9d)) {
                    break;
                }
            }

            sp_semantic_push(t, text + i + 3, (j < len ? j : len) - i - 3,
                             SP_SEMANTIC_QUOTED, 0);
            i = (j < len) ? j + 3 : len;
            continue;
        }

        /* ' and ‘: only from a word's start to a word's end */
        if ((c == '\'' || sp_semantic_punct3(text + i, end, 0x98))
            && (i == 0 || !sp_semantic_word_char((unsigned char) text[i - 1])))
        {
            size_t  open = (c == '\'') ? 1 : 3;

            if (i + open >= len
                || sp_semantic_space((unsigned char) text[i + open])
                || i >= (c == '\'' ? no_close : no_close3))
            {
                i += open;
                continue;
            }

            for (j = i + open; j < len; j++) {
                if (c == '\'' ? text[j] == '\''
                              : sp_semantic_punct3(text + j, end, 0x99))
                {
                    k = j + (c == '\'' ? 1 : 3);

                    if ((k == len
                         || !sp_semantic_word_char((unsigned char) text[k])
                         || sp_semantic_punct3(text + k, end, 0x9d))
                        && !sp_semantic_space((unsigned char) text[j - 1]))
                    {
                        break;
                    }
                }
            }

            if (j >= len) {
                /* nothing closes from here on: apostrophes, not quotes */
                if (c == '\'') {
                    no_close = i;

                } else {
                    no_close3 = i;
                }

                i += open;
                continue;
            }

            sp_semantic_push(t, text + i + open, j - i - open,
                             SP_SEMANTIC_QUOTED, 0);
            i = j + (c == '\'' ? 1 : 3);
            continue;
        }

        i++;
    }
}


/* one word of a chunk (no punctuation around it, no '.', '/', '-') */
static void
sp_semantic_word(const char *w, size_t len, int sentence_start,
    int after_number, sp_semantic_tokens_t *t)
{
    size_t                     i, upper, lower, digits;
    const sp_semantic_word_t  *entry;

    /* week's, France’s: week, France */
    if (len > 2 && memcmp(w + len - 2, "'s", 2) == 0) {
        len -= 2;

    } else if (len > 4 && memcmp(w + len - 4, "\xe2\x80\x99s", 4) == 0) {
        len -= 4;
    }

    if (len == 0) {
        return;
    }

    upper = 0;
    lower = 0;
    digits = 0;

    for (i = 0; i < len; i++) {
        unsigned char  c = (unsigned char) w[i];

        upper += (c >= 'A' && c <= 'Z');
        lower += (c >= 'a' && c <= 'z');
        digits += (c >= '0' && c <= '9');
    }

    if (digits) {
        sp_semantic_push(t, w, len, (w[0] >= '0' && w[0] <= '9')
                                    ? SP_SEMANTIC_NUMBER
                                    : SP_SEMANTIC_IDENTIFIER,
                         w[0] >= '0' && w[0] <= '9');
        return;
    }

    /* n't, n’t, N'T: "not" */
    if (len >= 3 && sp_semantic_lower((unsigned char) w[len - 1]) == 't'
        && ((w[len - 2] == '\''
             && sp_semantic_lower((unsigned char) w[len - 3]) == 'n')
            || (len >= 5 && memcmp(w + len - 4, "\xe2\x80\x99", 3) == 0
                && sp_semantic_lower((unsigned char) w[len - 5]) == 'n')))
    {
        sp_semantic_push(t, "not", 3, SP_SEMANTIC_NEGATION, 0);
        return;
    }

    entry = sp_semantic_lookup(w, len);

    if (entry != NULL) {
        sp_semantic_push(t, entry->as, strlen(entry->as), entry->category,
                         0);
        return;
    }

    if (after_number && len == 2
        && ((w[0] | 0x20) == 'a' || (w[0] | 0x20) == 'p')
        && (w[1] | 0x20) == 'm')
    {
        sp_semantic_push(t, w, len, SP_SEMANTIC_DATE, 1);
        return;
    }

    if (upper >= 2 && lower == 0) {
        sp_semantic_push(t, w, len, SP_SEMANTIC_IDENTIFIER, 0);
        return;
    }

    /* camelCase: a capital after a lowercase letter */
    for (i = 1; i < len; i++) {
        if (w[i] >= 'A' && w[i] <= 'Z' && w[i - 1] >= 'a' && w[i - 1] <= 'z')
        {
            sp_semantic_push(t, w, len, SP_SEMANTIC_IDENTIFIER, 0);
            return;
        }
    }

    if (w[0] >= 'A' && w[0] <= 'Z' && !sentence_start
        && !(w[0] == 'I' && (len == 1 || w[1] == '\'' || w[1] == '\xe2')))
    {
        sp_semantic_push(t, w, len, SP_SEMANTIC_ENTITY, 0);
    }
}


static int
sp_semantic_currency(const char *p, const char *end, size_t *n)
{
    unsigned char  c = (unsigned char) p[0];

    if (c == '$' || c == '+' || c == '-') {
        *n = 1;
        return 1;
    }

    /* £ ¥ (C2 A3, C2 A5), € (E2 82 AC) */
    if (c == 0xc2 && end - p >= 2
        && ((unsigned char) p[1] == 0xa3 || (unsigned char) p[1] == 0xa5))
    {
        *n = 2;
        return 1;
    }

    if (c == 0xe2 && end - p >= 3 && (unsigned char) p[1] == 0x82
        && (unsigned char) p[2] == 0xac)
    {
        *n = 3;
        return 1;
    }

    return 0;
}


/* a chunk without its punctuation: see the header */
static int
sp_semantic_chunk(const char *s, size_t len, int sentence_start,
    int after_number, sp_semantic_tokens_t *t)
{
    size_t       i, n, start;
    const char  *end;
    int          first;

    end = s + len;

    if (sp_semantic_currency(s, end, &n) && n < len
        && s[n] >= '0' && s[n] <= '9')
    {
        sp_semantic_push(t, s, len, SP_SEMANTIC_NUMBER, 1);
        return 1;
    }

    if (s[0] >= '0' && s[0] <= '9') {
        sp_semantic_push(t, s, len, SP_SEMANTIC_NUMBER, 1);
        return 1;
    }

    for (i = 0; i < len; i++) {
        if (s[i] == '/' || s[i] == '\\' || s[i] == '_' || s[i] == '@'
            || (s[i] == ':' && i + 2 < len && s[i + 1] == '/')
            || (s[i] == '.' && i > 0 && i + 1 < len
                && sp_semantic_word_char((unsigned char) s[i - 1])
                && sp_semantic_word_char((unsigned char) s[i + 1])))
        {
            sp_semantic_push(t, s, len, SP_SEMANTIC_IDENTIFIER, 0);
            return 0;
        }
    }

    /* words split at hyphens and other ASCII punctuation, ' aside */
    start = 0;
    first = 1;

    for (i = 0; i <= len; i++) {
        if (i < len
            && (sp_semantic_word_char((unsigned char) s[i])
                || s[i] == '\''))
        {
            continue;
        }

        if (i > start) {
            sp_semantic_word(s + start, i - start, first && sentence_start,
                             first && after_number, t);
            first = 0;
        }

        start = i + 1;
    }

    return 0;
}


/* every token of text, in the categories of the header */
static void
sp_semantic_tokens(const char *text, size_t len, sp_semantic_tokens_t *t)
{
    int          sentence_start, after_number, ends;
    size_t       i, s, e, n;
    const char  *end;

    sp_semantic_quotes(text, len, t);

    end = text + len;
    sentence_start = 1;
    after_number = 0;
    i = 0;

    while (i < len && !t->overflow) {
        if (sp_semantic_space((unsigned char) text[i])) {
            if (text[i] == '\n') {
                sentence_start = 1;
            }

            i++;
            continue;
        }

        s = i;

        while (i < len && !sp_semantic_space((unsigned char) text[i])) {
            i++;
        }

        e = i;
        ends = 0;

        /* leading ( [ { < " ' ` * and “ ‘ « */
        for ( ;; ) {
            if (s < e && strchr("([{<\"'`*", text[s]) != NULL) {
                s++;

            } else if (sp_semantic_punct3(text + s, text + e, 0x9c)
                       || sp_semantic_punct3(text + s, text + e, 0x98))
            {
                s += 3;

            } else if (e - s >= 2 && (unsigned char) text[s] == 0xc2
                       && (unsigned char) text[s + 1] == 0xab)
            {
                s += 2;

            } else {
                break;
            }
        }

        /* trailing . , ; : ! ? ) ] } > " ' ` * and ” ’ » … */
        for ( ;; ) {
            if (e > s && strchr(".,;:!?)]}>\"'`*", text[e - 1]) != NULL) {
                if (strchr(".:!?", text[e - 1]) != NULL) {
                    ends = 1;
                }

                e--;

            } else if (e - s >= 3
                       && (sp_semantic_punct3(text + e - 3, end, 0x9d)
                           || sp_semantic_punct3(text + e - 3, end, 0x99)
                           || sp_semantic_punct3(text + e - 3, end, 0xa6)))
            {
                if ((unsigned char) text[e - 1] == 0xa6) {
                    ends = 1;
                }

                e -= 3;

            } else if (e - s >= 2 && (unsigned char) text[e - 2] == 0xc2
                       && (unsigned char) text[e - 1] == 0xbb)
            {
                e -= 2;

            } else {
                break;
            }
        }

        n = 0;

        if (e > s) {
            n = (size_t) sp_semantic_chunk(text + s, e - s, sentence_start,
                                           after_number, t);
            sentence_start = 0;
        }

        after_number = (n == 1);

        if (ends) {
            sentence_start = 1;
        }
    }
}


static int
sp_semantic_token_cmp(const sp_semantic_token_t *a,
    const sp_semantic_token_t *b)
{
    int       ca, cb;
    uint32_t  i, n;

    if (a->category != b->category) {
        return a->category < b->category ? -1 : 1;
    }

    n = a->len < b->len ? a->len : b->len;

    for (i = 0; i < n; i++) {
        ca = (unsigned char) a->data[i];
        cb = (unsigned char) b->data[i];

        if (a->fold) {
            ca = sp_semantic_lower((unsigned char) ca);
            cb = sp_semantic_lower((unsigned char) cb);
        }

        if (ca != cb) {
            return ca < cb ? -1 : 1;
        }
    }

    return a->len == b->len ? 0 : (a->len < b->len ? -1 : 1);
}


/* heap sort: no allocation, n log n whatever the input */
static void
sp_semantic_sift(sp_semantic_token_t *t, size_t root, size_t n)
{
    size_t               child;
    sp_semantic_token_t  tmp;

    while ((child = 2 * root + 1) < n) {
        if (child + 1 < n
            && sp_semantic_token_cmp(&t[child], &t[child + 1]) < 0)
        {
            child++;
        }

        if (sp_semantic_token_cmp(&t[root], &t[child]) >= 0) {
            return;
        }

        tmp = t[root];
        t[root] = t[child];
        t[child] = tmp;
        root = child;
    }
}


static void
sp_semantic_sort(sp_semantic_token_t *t, size_t n)
{
    size_t               i;
    sp_semantic_token_t  tmp;

    for (i = n / 2; i-- > 0; ) {
        sp_semantic_sift(t, i, n);
    }

    for (i = n; i-- > 1; ) {
        tmp = t[0];
        t[0] = t[i];
        t[i] = tmp;
        sp_semantic_sift(t, 0, i);
    }
}


/* a token as a reason may show it: short printable ASCII, else "" */
static void
sp_semantic_reason_token(const sp_semantic_token_t *tok, char *out)
{
    uint32_t  i;

    out[0] = '\0';

    if (tok == NULL) {
        strcpy(out, "none");
        return;
    }

    if (tok->category > SP_SEMANTIC_DATE
        || tok->len > SP_SEMANTIC_REASON_TOKEN)
    {
        return;
    }

    for (i = 0; i < tok->len; i++) {
        if (tok->data[i] < 0x21 || tok->data[i] > 0x7e) {
            out[0] = '\0';
            return;
        }

        out[i] = (char) sp_semantic_lower((unsigned char) tok->data[i]);
    }

    out[tok->len] = '\0';
}


int
sp_semantic_guard(const char *a, size_t alen, const char *b, size_t blen,
    char *reason, size_t reasonlen)
{
    int                         c;
    size_t                      i, j;
    char                        ta[SP_SEMANTIC_REASON_TOKEN + 1];
    char                        tb[SP_SEMANTIC_REASON_TOKEN + 1];
    const sp_semantic_token_t  *x, *y, *first;
    sp_semantic_tokens_t        ka, kb;
    sp_semantic_token_t         bufa[SP_SEMANTIC_GUARD_TOKENS];
    sp_semantic_token_t         bufb[SP_SEMANTIC_GUARD_TOKENS];

    ka.token = bufa;
    ka.n = 0;
    ka.overflow = 0;
    kb.token = bufb;
    kb.n = 0;
    kb.overflow = 0;

    sp_semantic_tokens(a, alen, &ka);
    sp_semantic_tokens(b, blen, &kb);

    if (ka.overflow || kb.overflow) {
        sp_errorf(reason, reasonlen, "too many tokens to compare");
        return 0;
    }

    sp_semantic_sort(bufa, ka.n);
    sp_semantic_sort(bufb, kb.n);

    for (i = 0, j = 0; i < ka.n || j < kb.n; i++, j++) {
        x = (i < ka.n) ? &bufa[i] : NULL;
        y = (j < kb.n) ? &bufb[j] : NULL;

        if (x != NULL && y != NULL) {
            c = sp_semantic_token_cmp(x, y);

            if (c == 0) {
                continue;
            }

            /* a token of a lower category has no match on the other side */
            if (x->category < y->category) {
                y = NULL;

            } else if (y->category < x->category) {
                x = NULL;
            }
        }

        first = x ? x : y;
        sp_semantic_reason_token(x, ta);
        sp_semantic_reason_token(y, tb);

        if (ta[0] != '\0' && tb[0] != '\0') {
            sp_errorf(reason, reasonlen, "%s differs: %s vs %s",
                      sp_semantic_category_names[first->category], ta, tb);

        } else {
            sp_errorf(reason, reasonlen, "%s differs",
                      sp_semantic_category_names[first->category]);
        }

        return 0;
    }

    if (reason != NULL && reasonlen > 0) {
        reason[0] = '\0';
    }

    return 1;
}


/* ---- 3. vectors --------------------------------------------------------- */

/*
 * sqrt without libm (the module links none): the instruction with SSE2,
 * Newton's iteration elsewhere.
 */
static double
sp_semantic_sqrt(double x)
{
#if defined(__SSE2__)
    return _mm_cvtsd_f64(_mm_sqrt_sd(_mm_setzero_pd(), _mm_set_sd(x)));
#else
    int     i;
    double  y;

    if (x <= 0) {
        return 0;
    }

    y = x > 1 ? x : 1;

    for (i = 0; i < 200; i++) {
        double  next = 0.5 * (y + x / y);

        if (next >= y) {
            break;
        }

        y = next;
    }

    return y;
#endif
}


int
sp_semantic_quantise(const float *v, size_t dim, int8_t *out)
{
    size_t  i;
    double  max, x, scale;

    if (dim == 0 || dim > SP_SEMANTIC_DIM_MAX) {
        return SP_ERROR;
    }

    max = 0;

    for (i = 0; i < dim; i++) {
        x = v[i];

        /* NaN and infinities: x - x is not 0 */
        if (x - x != 0) {
            return SP_ERROR;
        }

        x = x < 0 ? -x : x;

        if (x > max) {
            max = x;
        }
    }

    if (max == 0) {
        return SP_ERROR;
    }

    scale = 127.0 / max;

    for (i = 0; i < dim; i++) {
        x = v[i] * scale;
        x = x < 0 ? x - 0.5 : x + 0.5;

        /* the largest component is exactly 127 before rounding */
        if (x > 127) {
            x = 127;

        } else if (x < -127) {
            x = -127;
        }

        out[i] = (int8_t) x;
    }

    return SP_OK;
}


static int32_t
sp_semantic_dot_c(const int8_t *a, const int8_t *b, size_t dim)
{
    size_t   i;
    int32_t  sum;

    sum = 0;

    for (i = 0; i < dim; i++) {
        sum += (int32_t) a[i] * b[i];
    }

    return sum;
}


#if defined(SP_SEMANTIC_SSE2)

/* 16 components at a time: sign-extended to int16, pmaddwd */
static int32_t
sp_semantic_dot_sse2(const int8_t *a, const int8_t *b, size_t dim)
{
    size_t   i;
    int32_t  sum[4];
    __m128i  zero, acc, va, vb, sa, sb;

    zero = _mm_setzero_si128();
    acc = zero;

    for (i = 0; i + 16 <= dim; i += 16) {
        va = _mm_loadu_si128((const __m128i *) (a + i));
        vb = _mm_loadu_si128((const __m128i *) (b + i));
        sa = _mm_cmpgt_epi8(zero, va);
        sb = _mm_cmpgt_epi8(zero, vb);

        acc = _mm_add_epi32(acc,
                  _mm_madd_epi16(_mm_unpacklo_epi8(va, sa),
                                 _mm_unpacklo_epi8(vb, sb)));
        acc = _mm_add_epi32(acc,
                  _mm_madd_epi16(_mm_unpackhi_epi8(va, sa),
                                 _mm_unpackhi_epi8(vb, sb)));
    }

    _mm_storeu_si128((__m128i *) sum, acc);

    return sum[0] + sum[1] + sum[2] + sum[3]
           + sp_semantic_dot_c(a + i, b + i, dim - i);
}

#endif


#if defined(SP_SEMANTIC_X86)

/*
 * 32 components at a time: |a| (unsigned) times b with a's sign, pairs
 * summed into int16 by pmaddubsw (at most 2 * 128 * 127, no
 * saturation), then into int32. A component of -128 in b (quantise never
 * writes one) would lose its sign.
 */
__attribute__((target("avx2")))
static int32_t
sp_semantic_dot_avx2(const int8_t *a, const int8_t *b, size_t dim)
{
    size_t   i;
    int32_t  sum[8];
    __m256i  acc, ones, va, vb;
    __m256i  acc2;

    acc = _mm256_setzero_si256();
    acc2 = _mm256_setzero_si256();
    ones = _mm256_set1_epi16(1);

    for (i = 0; i + 64 <= dim; i += 64) {
        va = _mm256_loadu_si256((const __m256i *) (a + i));
        vb = _mm256_loadu_si256((const __m256i *) (b + i));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ones,
                  _mm256_maddubs_epi16(_mm256_abs_epi8(va),
                                       _mm256_sign_epi8(vb, va))));

        va = _mm256_loadu_si256((const __m256i *) (a + i + 32));
        vb = _mm256_loadu_si256((const __m256i *) (b + i + 32));
        acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(ones,
                   _mm256_maddubs_epi16(_mm256_abs_epi8(va),
                                        _mm256_sign_epi8(vb, va))));
    }

    for ( /* void */ ; i + 32 <= dim; i += 32) {
        va = _mm256_loadu_si256((const __m256i *) (a + i));
        vb = _mm256_loadu_si256((const __m256i *) (b + i));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ones,
                  _mm256_maddubs_epi16(_mm256_abs_epi8(va),
                                       _mm256_sign_epi8(vb, va))));
    }

    acc = _mm256_add_epi32(acc, acc2);
    _mm256_storeu_si256((__m256i *) sum, acc);

    return sum[0] + sum[1] + sum[2] + sum[3] + sum[4] + sum[5] + sum[6]
           + sum[7] + sp_semantic_dot_c(a + i, b + i, dim - i);
}

#endif


#if defined(SP_SEMANTIC_AVX512)

/*
 * The search's kernel where the CPU has AVX-512 VNNI: vpdpbusd multiplies
 * unsigned by signed bytes, four products into each int32 at once, so v
 * is read as v + 128 (its sign bit flipped) and the surplus, 128 times
 * the sum of q's components, is taken off by the caller: 3 instructions
 * per 64 components. Four sums hide vpdpbusd's latency; the tail is a
 * masked load (the bytes masked off are 0 in q, so add nothing).
 */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static int32_t
sp_semantic_dot_vnni(const int8_t *v, const int8_t *q, size_t dim)
{
    size_t     i;
    __m512i    flip, s0, s1, s2, s3, x;
    __mmask64  m;

    flip = _mm512_set1_epi8((char) 0x80);
    s0 = _mm512_setzero_si512();
    s1 = s0;
    s2 = s0;
    s3 = s0;

    for (i = 0; i + 256 <= dim; i += 256) {
        x = _mm512_xor_si512(_mm512_loadu_si512(v + i), flip);
        s0 = _mm512_dpbusd_epi32(s0, x, _mm512_loadu_si512(q + i));
        x = _mm512_xor_si512(_mm512_loadu_si512(v + i + 64), flip);
        s1 = _mm512_dpbusd_epi32(s1, x, _mm512_loadu_si512(q + i + 64));
        x = _mm512_xor_si512(_mm512_loadu_si512(v + i + 128), flip);
        s2 = _mm512_dpbusd_epi32(s2, x, _mm512_loadu_si512(q + i + 128));
        x = _mm512_xor_si512(_mm512_loadu_si512(v + i + 192), flip);
        s3 = _mm512_dpbusd_epi32(s3, x, _mm512_loadu_si512(q + i + 192));
    }

    for ( /* void */ ; i < dim; i += 64) {
        m = (dim - i >= 64) ? ~(__mmask64) 0
                            : (((__mmask64) 1 << (dim - i)) - 1);
        x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, v + i), flip);
        s0 = _mm512_dpbusd_epi32(s0, x, _mm512_maskz_loadu_epi8(m, q + i));
    }

    s0 = _mm512_add_epi32(_mm512_add_epi32(s0, s1),
                          _mm512_add_epi32(s2, s3));

    return _mm512_reduce_add_epi32(s0);
}

#endif




typedef int32_t (*sp_semantic_dot_pt)(const int8_t *a, const int8_t *b,
    size_t dim);


/*
 * The heads: the dot product of v and q over their first k components
 * and |v|^2 over them into *norm, in one pass where the kernel allows.
 */
#if defined(SP_SEMANTIC_SSE2)
static int32_t
sp_semantic_head_sse2(const int8_t *v, const int8_t *q, size_t k,
    int32_t *norm)
{
    *norm = sp_semantic_dot_sse2(v, v, k);
    return sp_semantic_dot_sse2(v, q, k);
}
#else
static int32_t
sp_semantic_head_c(const int8_t *v, const int8_t *q, size_t k,
    int32_t *norm)
{
    *norm = sp_semantic_dot_c(v, v, k);
    return sp_semantic_dot_c(v, q, k);
}
#endif

#if defined(SP_SEMANTIC_X86)

/* |v| (unsigned) is shared: times q with v's sign, and times itself */
__attribute__((target("avx2")))
static int32_t
sp_semantic_head_avx2(const int8_t *v, const int8_t *q, size_t k,
    int32_t *norm)
{
    size_t   i;
    int32_t  sum[8];
    __m256i  ones, x, a, dot0, dot1, norm0, norm1;

    ones = _mm256_set1_epi16(1);
    dot0 = _mm256_setzero_si256();
    dot1 = dot0;
    norm0 = dot0;
    norm1 = dot0;

    /* k is a multiple of 64 */
    for (i = 0; i < k; i += 64) {
        x = _mm256_loadu_si256((const __m256i *) (v + i));
        a = _mm256_abs_epi8(x);
        dot0 = _mm256_add_epi32(dot0, _mm256_madd_epi16(ones,
                   _mm256_maddubs_epi16(a, _mm256_sign_epi8(
                       _mm256_loadu_si256((const __m256i *) (q + i)), x))));
        norm0 = _mm256_add_epi32(norm0, _mm256_madd_epi16(ones,
                    _mm256_maddubs_epi16(a, a)));

        x = _mm256_loadu_si256((const __m256i *) (v + i + 32));
        a = _mm256_abs_epi8(x);
        dot1 = _mm256_add_epi32(dot1, _mm256_madd_epi16(ones,
                   _mm256_maddubs_epi16(a, _mm256_sign_epi8(
                       _mm256_loadu_si256((const __m256i *) (q + i + 32)),
                       x))));
        norm1 = _mm256_add_epi32(norm1, _mm256_madd_epi16(ones,
                    _mm256_maddubs_epi16(a, a)));
    }

    _mm256_storeu_si256((__m256i *) sum, _mm256_add_epi32(norm0, norm1));
    *norm = sum[0] + sum[1] + sum[2] + sum[3] + sum[4] + sum[5] + sum[6]
            + sum[7];

    _mm256_storeu_si256((__m256i *) sum, _mm256_add_epi32(dot0, dot1));

    return sum[0] + sum[1] + sum[2] + sum[3] + sum[4] + sum[5] + sum[6]
           + sum[7];
}

#endif

#if defined(SP_SEMANTIC_AVX512)

/*
 * Two independent chains of vpdpbusd each: v + 128 times q (the surplus
 * taken off by the caller) and |v| unsigned times |v| signed.
 */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static int32_t
sp_semantic_head_vnni(const int8_t *v, const int8_t *q, size_t k,
    int32_t *norm)
{
    size_t   i;
    __m512i  flip, dot0, dot1, norm0, norm1, x;

    flip = _mm512_set1_epi8((char) 0x80);
    dot0 = _mm512_setzero_si512();
    dot1 = dot0;
    norm0 = dot0;
    norm1 = dot0;

    for (i = 0; i + 128 <= k; i += 128) {
        x = _mm512_loadu_si512(v + i);
        dot0 = _mm512_dpbusd_epi32(dot0, _mm512_xor_si512(x, flip),
                                   _mm512_loadu_si512(q + i));
        x = _mm512_abs_epi8(x);
        norm0 = _mm512_dpbusd_epi32(norm0, x, x);

        x = _mm512_loadu_si512(v + i + 64);
        dot1 = _mm512_dpbusd_epi32(dot1, _mm512_xor_si512(x, flip),
                                   _mm512_loadu_si512(q + i + 64));
        x = _mm512_abs_epi8(x);
        norm1 = _mm512_dpbusd_epi32(norm1, x, x);
    }

    /* k is a multiple of 64 */
    if (i < k) {
        x = _mm512_loadu_si512(v + i);
        dot0 = _mm512_dpbusd_epi32(dot0, _mm512_xor_si512(x, flip),
                                   _mm512_loadu_si512(q + i));
        x = _mm512_abs_epi8(x);
        norm0 = _mm512_dpbusd_epi32(norm0, x, x);
    }

    *norm = _mm512_reduce_add_epi32(_mm512_add_epi32(norm0, norm1));

    return _mm512_reduce_add_epi32(_mm512_add_epi32(dot0, dot1));
}

#endif


/* the fastest kernel this CPU runs; asked once, the answer never changes */
static sp_semantic_dot_pt
sp_semantic_dot_kernel(void)
{
#if defined(SP_SEMANTIC_X86)
    if (__builtin_cpu_supports("avx2")) {
        return sp_semantic_dot_avx2;
    }
#endif

#if defined(SP_SEMANTIC_SSE2)
    return sp_semantic_dot_sse2;
#else
    return sp_semantic_dot_c;
#endif
}


static double
sp_semantic_cosine(int32_t dot, int64_t na, int64_t nb)
{
    double  c;

    if (na <= 0 || nb <= 0) {
        return 0;
    }

    c = (double) dot / sp_semantic_sqrt((double) na * (double) nb);

    return c > 1 ? 1 : (c < -1 ? -1 : c);
}


double
sp_semantic_similarity(const int8_t *a, const int8_t *b, size_t dim)
{
    sp_semantic_dot_pt  dot;

    if (dim == 0 || dim > SP_SEMANTIC_DIM_MAX) {
        return 0;
    }

    dot = sp_semantic_dot_kernel();

    return sp_semantic_cosine(dot(a, b, dim), dot(a, a, dim),
                              dot(b, b, dim));
}


uint32_t
sp_semantic_norm(const int8_t *v, size_t dim)
{
    if (dim == 0 || dim > SP_SEMANTIC_DIM_MAX) {
        return 0;
    }

    return (uint32_t) sp_semantic_dot_kernel()(v, v, dim);
}


/*
 * A scan over stored vectors with their norms: the index of the highest
 * cosine among those that may reach t, ranked by d |d| / |v|^2, which
 * orders as the cosine does (|q| is common to all) without a square
 * root; the first of equals wins. SP_SEMANTIC_NONE when none may.
 *
 * Most vectors are ruled out after their first k components (a quarter):
 * by Cauchy-Schwarz the rest adds at most |q_rest| |v_rest| to the dot
 * product, |v_rest|^2 being |v|^2 less the prefix's, so a vector whose
 * bound stays below t cannot reach it and is skipped, exactly: the
 * search finds what brute force finds. Unrelated vectors (a bound near
 * sqrt(3/4) = 0.87 of the product of norms) go after a quarter of the
 * work; a threshold low enough to keep them costs one more prefix pass.
 * One scan per kernel, which the compiler inlines, with its head for the
 * prefix (the dot product and |v|^2 in one pass) and one square root per
 * vector.
 */
typedef struct {
    size_t   k;             /* prefix: 0 for none */
    int32_t  surplus;       /* the kernel's, over the prefix and the rest */
    int32_t  surplus_rest;
    double   t;
    double   nq;            /* |q|^2 */
    double   nq_rest;       /* |q_rest|^2 */
} sp_semantic_scan_t;

#define SP_SEMANTIC_SCAN(name, attr, dot, head)                               \
attr static size_t                                                            \
name(const int8_t *vectors, const uint32_t *norms, size_t count,              \
    size_t dim, const int8_t *q, const sp_semantic_scan_t *sc,                \
    int32_t *dot_best)                                                        \
{                                                                             \
    size_t        i, j, best;                                                 \
    int32_t       d, np;                                                      \
    double        score, top, nv, reach, rest, tq;                            \
    const int8_t *v;                                                          \
                                                                              \
    best = SP_SEMANTIC_NONE;                                                  \
    top = -1e300;                                                             \
    *dot_best = 0;                                                            \
                                                                              \
    /* a hair of slack for rounding: a vector in doubt is compared */         \
    tq = (sc->t - 1e-9) * sp_semantic_sqrt(sc->nq);                           \
                                                                              \
    for (i = 0; i < count; i++) {                                             \
        v = vectors + i * dim;                                                \
        nv = norms[i];                                                        \
                                                                              \
        if (sc->k) {                                                          \
            /* the prefix a few vectors on: its lines are not adjacent */     \
            if (i + SP_SEMANTIC_AHEAD < count) {                              \
                for (j = 0; j < sc->k; j += 64) {                             \
                    __builtin_prefetch(v + SP_SEMANTIC_AHEAD * dim + j);      \
                }                                                             \
            }                                                                 \
                                                                              \
            d = head(v, q, sc->k, &np) - sc->surplus;                         \
                                                                              \
            /*                                                                \
             * what the rest must add to reach t |q| |v|, and at most can:    \
             * out when |q_rest|^2 |v_rest|^2 < reach^2, reach > 0            \
             */                                                               \
            reach = tq * sp_semantic_sqrt(nv) - d;                            \
            rest = nv - np;                                                   \
                                                                              \
            if (reach > 0                                                     \
                && sc->nq_rest * (rest > 0 ? rest : 0) < reach * reach)       \
            {                                                                 \
                continue;                                                     \
            }                                                                 \
                                                                              \
            d += dot(v + sc->k, q + sc->k, dim - sc->k) - sc->surplus_rest;   \
                                                                              \
        } else {                                                              \
            d = dot(v, q, dim) - sc->surplus;                                 \
        }                                                                     \
                                                                              \
        score = nv ? (double) d * (d < 0 ? -(double) d : (double) d) / nv    \
                   : 0;                                                       \
                                                                              \
        if (score > top) {                                                    \
            top = score;                                                      \
            best = i;                                                         \
            *dot_best = d;                                                    \
        }                                                                     \
    }                                                                         \
                                                                              \
    return best;                                                              \
}

#if defined(SP_SEMANTIC_SSE2)
SP_SEMANTIC_SCAN(sp_semantic_scan_sse2, , sp_semantic_dot_sse2,
                 sp_semantic_head_sse2)
#else
SP_SEMANTIC_SCAN(sp_semantic_scan_c, , sp_semantic_dot_c,
                 sp_semantic_head_c)
#endif

#if defined(SP_SEMANTIC_X86)
SP_SEMANTIC_SCAN(sp_semantic_scan_avx2, __attribute__((target("avx2"))),
                 sp_semantic_dot_avx2, sp_semantic_head_avx2)
#endif

#if defined(SP_SEMANTIC_AVX512)
SP_SEMANTIC_SCAN(sp_semantic_scan_vnni,
                 __attribute__((target("avx512f,avx512bw,avx512vnni"))),
                 sp_semantic_dot_vnni, sp_semantic_head_vnni)
#endif


int
sp_semantic_search(const int8_t *vectors, const uint32_t *norms,
    size_t count, size_t dim, const int8_t *query, double threshold,
    size_t *best, double *similarity)
{
    int                  vnni;
    size_t               i, found;
    double               s, top;
    int32_t              d, sum_head, sum_rest;
    int64_t              nq, nv;
    const int8_t        *v;
    sp_semantic_dot_pt   dot;
    sp_semantic_scan_t   sc;

    *best = SP_SEMANTIC_NONE;
    *similarity = -1;

    if (dim == 0 || dim > SP_SEMANTIC_DIM_MAX || count == 0) {
        return SP_ERROR;
    }

    dot = sp_semantic_dot_kernel();
    nq = dot(query, query, dim);

    if (norms == NULL) {
        /* the slow way: each vector's norm too, and no bound */
        top = -2;
        found = 0;

        for (i = 0, v = vectors; i < count; i++, v += dim) {
            nv = dot(v, v, dim);
            s = sp_semantic_cosine(dot(v, query, dim), nq, nv);

            if (s > top) {
                top = s;
                found = i;
            }
        }

        goto done;
    }

    /* the prefix: a quarter, in whole 64-byte blocks; none when short */
    sc.k = (dim >= 256 && threshold > -1) ? (dim / 4) & ~(size_t) 63 : 0;
    sc.t = threshold;
    sc.nq = (double) nq;
    sc.nq_rest = (double) (nq - dot(query, query, sc.k));

    vnni = 0;
    sum_head = 0;
    sum_rest = 0;

#if defined(SP_SEMANTIC_AVX512)
    vnni = __builtin_cpu_supports("avx512vnni")
           && __builtin_cpu_supports("avx512bw");
#endif

    if (vnni) {
        for (i = 0; i < dim; i++) {
            if (i < sc.k) {
                sum_head += 128 * query[i];

            } else {
                sum_rest += 128 * query[i];
            }
        }
    }

    sc.surplus = sc.k ? sum_head : sum_head + sum_rest;
    sc.surplus_rest = sum_rest;

#if defined(SP_SEMANTIC_AVX512)
    if (vnni) {
        found = sp_semantic_scan_vnni(vectors, norms, count, dim, query,
                                      &sc, &d);
    } else
#endif
#if defined(SP_SEMANTIC_X86)
    if (__builtin_cpu_supports("avx2")) {
        found = sp_semantic_scan_avx2(vectors, norms, count, dim, query,
                                      &sc, &d);
    } else
#endif
    {
#if defined(SP_SEMANTIC_SSE2)
        found = sp_semantic_scan_sse2(vectors, norms, count, dim, query,
                                      &sc, &d);
#else
        found = sp_semantic_scan_c(vectors, norms, count, dim, query, &sc,
                                   &d);
#endif
    }

    if (found == SP_SEMANTIC_NONE) {
        return SP_ERROR;
    }

    top = sp_semantic_cosine(d, nq, norms[found]);

done:

    *similarity = top;

    /* NaN threshold: nothing is at least NaN */
    if (!(top >= threshold)) {
        return SP_ERROR;
    }

    *best = found;

    return SP_OK;
}


/* ---- 4. embeddings endpoints ------------------------------------------ */

typedef struct {
    char    *out;
    size_t   cap;
    size_t   n;
    int      full;
} sp_semantic_buf_t;


static void
sp_semantic_add(sp_semantic_buf_t *b, const char *s, size_t len)
{
    if (b->full || b->cap - b->n < len) {
        b->full = 1;
        return;
    }

    memcpy(b->out + b->n, s, len);
    b->n += len;
}


/* s JSON-escaped, without quotes; SP_ERROR when it is not UTF-8 */
static int
sp_semantic_add_escaped(sp_semantic_buf_t *b, sp_str_t s)
{
    size_t                k;
    char                  esc[8];
    const unsigned char  *p, *end, *run;

    p = (const unsigned char *) s.data;
    end = p + s.len;

    for (run = p; p < end; ) {
        if (*p >= 0x20 && *p != '"' && *p != '\\') {
            k = sp_semantic_utf8(p, end);

            if (k == 0) {
                return SP_ERROR;
            }

            p += k;
            continue;
        }

        sp_semantic_add(b, (const char *) run, (size_t) (p - run));

        switch (*p) {
        case '"': sp_semantic_add(b, "\\\"", 2); break;
        case '\\': sp_semantic_add(b, "\\\\", 2); break;
        case '\n': sp_semantic_add(b, "\\n", 2); break;
        case '\r': sp_semantic_add(b, "\\r", 2); break;
        case '\t': sp_semantic_add(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            sp_semantic_add(b, esc, 6);
        }

        run = ++p;
    }

    sp_semantic_add(b, (const char *) run, (size_t) (p - run));

    return SP_OK;
}


static int
sp_semantic_add_string(sp_semantic_buf_t *b, sp_str_t s)
{
    int  rc;

    sp_semantic_add(b, "\"", 1);
    rc = sp_semantic_add_escaped(b, s);
    sp_semantic_add(b, "\"", 1);

    return rc;
}


#define sp_semantic_lit(b, s)  sp_semantic_add(b, s, sizeof(s) - 1)


int
sp_semantic_embed_body(sp_provider_e provider, sp_str_t model,
    sp_str_t text, char *out, size_t outlen, size_t *written, char *err,
    size_t errlen)
{
    int                rc;
    sp_semantic_buf_t  b;

    *written = 0;

    if (provider == SP_PROVIDER_ANTHROPIC) {
        sp_errorf(err, errlen, "anthropic has no embeddings endpoint");
        return SP_ERROR;
    }

    if (provider < SP_PROVIDER_OPENAI || provider > SP_PROVIDER_MISTRAL) {
        sp_errorf(err, errlen, "unknown provider");
        return SP_ERROR;
    }

    if (model.len == 0 && provider != SP_PROVIDER_AZURE) {
        sp_errorf(err, errlen, "the embedding model is empty");
        return SP_ERROR;
    }

    if (outlen == 0) {
        sp_errorf(err, errlen, "out too small");
        return SP_ERROR;
    }

    b.out = out;
    b.cap = outlen - 1;          /* the NUL */
    b.n = 0;
    b.full = 0;
    rc = SP_OK;

    sp_semantic_lit(&b, "{");

    if (provider == SP_PROVIDER_GOOGLE) {
        sp_semantic_lit(&b, "\"model\":\"");

        if (model.len < 7 || memcmp(model.data, "models/", 7) != 0) {
            sp_semantic_lit(&b, "models/");
        }

        rc |= sp_semantic_add_escaped(&b, model);
        sp_semantic_lit(&b, "\"");
        sp_semantic_lit(&b, ",\"content\":{\"parts\":[{\"text\":");
        rc |= sp_semantic_add_string(&b, text);
        sp_semantic_lit(&b, "}]}}");

    } else if (provider == SP_PROVIDER_COHERE) {
        sp_semantic_lit(&b, "\"model\":");
        rc |= sp_semantic_add_string(&b, model);
        sp_semantic_lit(&b, ",\"texts\":[");
        rc |= sp_semantic_add_string(&b, text);
        sp_semantic_lit(&b, "],\"input_type\":\"search_query\","
                            "\"embedding_types\":[\"float\"]}");

    } else {
        if (model.len) {
            sp_semantic_lit(&b, "\"model\":");
            rc |= sp_semantic_add_string(&b, model);
            sp_semantic_lit(&b, ",");
        }

        /*
         * Mistral documents a list of inputs; float is OpenAI's default,
         * asked for since its SDKs default to base64; Azure's older
         * api-versions refuse the member, and default to float too
         */
        if (provider == SP_PROVIDER_MISTRAL) {
            sp_semantic_lit(&b, "\"input\":[");
            rc |= sp_semantic_add_string(&b, text);
            sp_semantic_lit(&b, "]}");

        } else {
            sp_semantic_lit(&b, "\"input\":");
            rc |= sp_semantic_add_string(&b, text);

            if (provider == SP_PROVIDER_OPENAI) {
                sp_semantic_lit(&b, ",\"encoding_format\":\"float\"");
            }

            sp_semantic_lit(&b, "}");
        }
    }

    if (rc != SP_OK) {
        sp_errorf(err, errlen, "the text or the model is not UTF-8");
        return SP_ERROR;
    }

    if (b.full) {
        sp_errorf(err, errlen, "out too small (%zu bytes)", outlen);
        return SP_ERROR;
    }

    out[b.n] = '\0';
    *written = b.n;

    return SP_OK;
}


/* the numbers of the array at v into out */
static int
sp_semantic_floats(const char *v, const char *end, const char *what,
    float *out, size_t max_dim, size_t *dim, char *err, size_t errlen)
{
    int                  rc;
    size_t               n, len;
    double               x;
    const char          *item, *q;
    char                 buf[SP_SEMANTIC_NUMBER_MAX];
    sp_semantic_iter_t   it;

    if (v != NULL && *v == '"') {
        sp_errorf(err, errlen, "%s is a string (base64?): ask for "
                  "encoding_format float", what);
        return SP_ERROR;
    }

    if (sp_semantic_iter_open(&it, v, end, '[') != SP_OK) {
        sp_errorf(err, errlen, "%s is not an array of numbers", what);
        return SP_ERROR;
    }

    n = 0;

    while ((rc = sp_semantic_iter_next(&it, NULL, &item)) == 1) {
        q = sp_semantic_number_end(item, end);

        if (q == NULL) {
            sp_errorf(err, errlen, "%s[%zu] is not a number", what, n);
            return SP_ERROR;
        }

        len = (size_t) (q - item);

        if (len >= sizeof(buf)) {
            sp_errorf(err, errlen, "%s[%zu] is spelled too long", what, n);
            return SP_ERROR;
        }

        if (n == max_dim) {
            sp_errorf(err, errlen, "%s has more than %zu values", what,
                      max_dim);
            return SP_ERROR;
        }

        memcpy(buf, item, len);
        buf[len] = '\0';
        x = strtod(buf, NULL);

        if (!(x >= -FLT_MAX && x <= FLT_MAX)) {
            sp_errorf(err, errlen, "%s[%zu] is out of float range", what,
                      n);
            return SP_ERROR;
        }

        out[n++] = (float) x;
    }

    if (rc < 0) {
        sp_errorf(err, errlen, "%s is not JSON", what);
        return SP_ERROR;
    }

    if (n == 0) {
        sp_errorf(err, errlen, "%s is empty", what);
        return SP_ERROR;
    }

    *dim = n;

    return SP_OK;
}


int
sp_semantic_embedding(sp_provider_e provider, const char *body,
    size_t len, float *out, size_t max_dim, size_t *dim, char *err,
    size_t errlen)
{
    const char  *root, *end, *v, *first, *what;

    *dim = 0;
    end = body + len;
    root = sp_semantic_ws(body, end);
    v = NULL;

    if (root == end || *root != '{') {
        sp_errorf(err, errlen, "the answer is not a JSON object");
        return SP_ERROR;
    }

    /* whole, once: a member missing is then told from a broken answer */
    if (sp_semantic_skip(root, end) == NULL) {
        sp_errorf(err, errlen, "the answer is not JSON");
        return SP_ERROR;
    }

    switch (provider) {

    case SP_PROVIDER_OPENAI:
    case SP_PROVIDER_AZURE:
    case SP_PROVIDER_MISTRAL:
        what = "data[0].embedding";

        if (sp_semantic_get(root, end, "data", &v) != 1
            || sp_semantic_first(v, end, &first) != 1
            || sp_semantic_get(first, end, "embedding", &v) != 1)
        {
            goto missing;
        }

        break;

    case SP_PROVIDER_GOOGLE:
        if (sp_semantic_get(root, end, "embedding", &v) == 1) {
            what = "embedding.values";

            if (sp_semantic_get(v, end, "values", &v) != 1) {
                goto missing;
            }

            break;
        }

        what = "embedding.values or embeddings[0].values";

        if (sp_semantic_get(root, end, "embeddings", &v) != 1
            || sp_semantic_first(v, end, &first) != 1
            || sp_semantic_get(first, end, "values", &v) != 1)
        {
            goto missing;
        }

        break;

    case SP_PROVIDER_COHERE:
        what = "embeddings.float[0]";

        if (sp_semantic_get(root, end, "embeddings", &v) != 1) {
            goto missing;
        }

        if (*v == '[') {
            /* v1, or v2 asked without embedding_types */
            what = "embeddings[0]";

        } else if (sp_semantic_get(v, end, "float", &v) != 1) {
            sp_errorf(err, errlen, "no embeddings.float: ask for "
                      "embedding_types [\"float\"]");
            return SP_ERROR;
        }

        if (sp_semantic_first(v, end, &v) != 1) {
            goto missing;
        }

        break;

    default:
        sp_errorf(err, errlen, "%s has no embeddings endpoint",
                  provider == SP_PROVIDER_ANTHROPIC ? "anthropic"
                                                    : "this provider");
        return SP_ERROR;
    }

    return sp_semantic_floats(v, end, what, out, max_dim, dim, err, errlen);

missing:

    sp_errorf(err, errlen, "the answer has no %s", what);
    return SP_ERROR;
}
