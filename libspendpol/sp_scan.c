/*
 * Usage in a JSON body that streams through: see sp_scan.h.
 *
 * The scanner does not validate JSON. It follows strings (with their
 * escapes) and nesting, so that a brace or a name inside a string, or a
 * member of a nested object, is never taken for a top-level member; what
 * it copies is checked by jansson afterwards, as a small document.
 *
 * Request bodies are read by the second half of this file, a validating
 * scanner that writes a tape (sp_json_scan).
 */

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_scan.h"
#include "sp_usage_internal.h"


static int sp_scan_at_members(const sp_scan_t *scan);
static void sp_scan_keep(sp_scan_t *scan, char c);
static void sp_scan_start(sp_scan_t *scan);
static void sp_scan_end(sp_scan_t *scan);
static size_t sp_scan_room(int member);
static char *sp_scan_text(sp_scan_t *scan, int member);
static void sp_scan_parse(sp_provider_e provider, const char *name,
    const char *text, size_t len, sp_response_info_t *info);


void
sp_scan_init(sp_scan_t *scan)
{
    memset(scan, 0, sizeof(sp_scan_t));
}


void
sp_scan_feed(sp_scan_t *scan, const char *data, size_t len)
{
    char         c;
    const char  *p, *last;

    scan->bytes += (int64_t) len;

    p = data;
    last = data + len;

    while (p < last) {
        c = *p++;

        if (scan->in_string) {

            if (scan->escape) {
                scan->escape = 0;

            } else if (c == '\\') {
                scan->escape = 1;

            } else if (c == '"') {
                scan->in_string = 0;
                sp_scan_keep(scan, c);

                if (scan->in_key) {
                    scan->in_key = 0;
                    scan->key_done = 1;
                }

                continue;
            }

            if (scan->in_key) {
                if (scan->key_len < SP_SCAN_KEY_MAX) {
                    scan->key[scan->key_len++] = c;
                }

            } else {
                scan->text_bytes++;
            }

            sp_scan_keep(scan, c);
            continue;
        }

        switch (c) {

        case '"':
            scan->in_string = 1;

            if (scan->expect_key && sp_scan_at_members(scan)) {
                scan->expect_key = 0;
                scan->in_key = 1;
                scan->key_done = 0;
                scan->key_len = 0;
            }

            sp_scan_keep(scan, c);
            break;

        case '{':
        case '[':
            sp_scan_keep(scan, c);
            scan->depth++;

            if (scan->depth == 1) {
                scan->root = c;
                scan->element = 0;
                scan->expect_key = (c == '{');

            } else if (scan->depth == 2 && scan->root == '[') {
                scan->element = c;
                scan->expect_key = (c == '{');
            }

            break;

        case '}':
        case ']':
            if (scan->capturing && c == '}' && sp_scan_at_members(scan)) {
                sp_scan_end(scan);

            } else {
                sp_scan_keep(scan, c);
            }

            if (scan->depth == 0) {
                break;
            }

            if (scan->depth == 2 && scan->root == '[') {
                scan->element = 0;
            }

            scan->depth--;
            scan->key_done = 0;
            break;

        case ':':
            if (scan->key_done && sp_scan_at_members(scan)) {
                scan->key_done = 0;
                sp_scan_start(scan);
                break;
            }

            sp_scan_keep(scan, c);
            break;

        case ',':
            if (!sp_scan_at_members(scan)) {
                sp_scan_keep(scan, c);
                break;
            }

            if (scan->capturing) {
                sp_scan_end(scan);
            }

            scan->expect_key = 1;
            scan->key_done = 0;
            break;

        default:
            sp_scan_keep(scan, c);
            break;
        }
    }
}


/* at the depth of the members looked for, inside their object */
static int
sp_scan_at_members(const sp_scan_t *scan)
{
    if (scan->root == '{') {
        return scan->depth == 1;
    }

    return scan->root == '[' && scan->element == '{' && scan->depth == 2;
}


static void
sp_scan_keep(sp_scan_t *scan, char c)
{
    if (!scan->capturing) {
        return;
    }

    /* one past the room marks the value too large; it stays so */
    if (scan->work_len < sp_scan_room(scan->capturing - 1)) {
        scan->work[scan->work_len] = c;
    }

    if (scan->work_len <= sp_scan_room(scan->capturing - 1)) {
        scan->work_len++;
    }
}


/* a member's name has just ended with its ':' */
static void
sp_scan_start(sp_scan_t *scan)
{
    size_t       n;
    const char  *k;

    scan->capturing = 0;
    scan->work_len = 0;

    if (scan->key_len >= SP_SCAN_KEY_MAX) {
        return;
    }

    k = scan->key;
    n = scan->key_len;

    if ((n == 5 && memcmp(k, "usage", 5) == 0)
        || (n == 13 && memcmp(k, "usageMetadata", 13) == 0))
    {
        scan->capturing = SP_SCAN_USAGE + 1;

    } else if (n == 4 && memcmp(k, "meta", 4) == 0) {
        scan->capturing = SP_SCAN_META + 1;

    } else if ((n == 5 && memcmp(k, "model", 5) == 0)
               || (n == 12 && memcmp(k, "modelVersion", 12) == 0))
    {
        scan->capturing = SP_SCAN_MODEL + 1;
    }

    /* fits: checked above */
    memcpy(scan->capture_name, k, n);
    scan->capture_name[n] = '\0';
}


/* the member's value is complete: it replaces what an earlier one said */
static void
sp_scan_end(sp_scan_t *scan)
{
    int          member;
    size_t       start, end;
    const char  *w;

    member = scan->capturing - 1;
    scan->capturing = 0;

    if (scan->work_len > sp_scan_room(member)) {
        return;
    }

    w = scan->work;
    start = 0;
    end = scan->work_len;

    while (start < end
           && (w[start] == ' ' || w[start] == '\t' || w[start] == '\r'
               || w[start] == '\n'))
    {
        start++;
    }

    while (end > start
           && (w[end - 1] == ' ' || w[end - 1] == '\t'
               || w[end - 1] == '\r' || w[end - 1] == '\n'))
    {
        end--;
    }

    if (end == start) {
        return;
    }

    memcpy(sp_scan_text(scan, member), w + start, end - start);
    scan->len[member] = end - start;

    memcpy(scan->name[member], scan->capture_name, SP_SCAN_KEY_MAX);
}


static size_t
sp_scan_room(int member)
{
    return member == SP_SCAN_MODEL ? SP_SCAN_MODEL_MAX : SP_SCAN_USAGE_MAX;
}


static char *
sp_scan_text(sp_scan_t *scan, int member)
{
    switch (member) {

    case SP_SCAN_USAGE:
        return scan->usage;

    case SP_SCAN_META:
        return scan->meta;

    default:
        return scan->model;
    }
}


int
sp_scan_result(const sp_scan_t *scan, sp_provider_e provider,
    sp_response_info_t *info)
{
    info->output_bytes += scan->text_bytes;

    if (scan->len[SP_SCAN_MODEL]) {
        sp_scan_parse(provider, scan->name[SP_SCAN_MODEL], scan->model,
                      scan->len[SP_SCAN_MODEL], info);
    }

    if (scan->len[SP_SCAN_USAGE]) {
        sp_scan_parse(provider, scan->name[SP_SCAN_USAGE], scan->usage,
                      scan->len[SP_SCAN_USAGE], info);

    } else if (provider == SP_PROVIDER_COHERE && scan->len[SP_SCAN_META]) {
        /* Cohere v1's meta has v2's usage shape: billed_units, tokens */
        sp_scan_parse(provider, "usage", scan->meta, scan->len[SP_SCAN_META],
                      info);
    }

    return info->has_usage ? SP_OK : SP_ERROR;
}


/*
 * One member as a document of its own, {"name":value}, read by the
 * provider's own parser: the scan and a whole body agree by construction.
 */
static void
sp_scan_parse(sp_provider_e provider, const char *name, const char *text,
    size_t len, sp_response_info_t *info)
{
    char    doc[SP_SCAN_USAGE_MAX + SP_SCAN_KEY_MAX + 8];
    size_t  n, name_len;

    name_len = strlen(name);

    if (name_len + len + 5 > sizeof(doc)) {
        return;
    }

    n = 0;
    doc[n++] = '{';
    doc[n++] = '"';
    memcpy(doc + n, name, name_len);
    n += name_len;
    doc[n++] = '"';
    doc[n++] = ':';
    memcpy(doc + n, text, len);
    n += len;
    doc[n++] = '}';

    (void) sp_usage_from_json_tree(provider, doc, n, info);
}



/* ---- request bodies: the validating scanner -------------------------- */

/* bytes a string holds as they are: ASCII but controls, '"' and '\\' */
static const uint8_t  sp_json_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,     /* '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1      /* DEL too */
};


static const char *sp_json_skip_space(const char *p, const char *last);
static int sp_json_string(sp_json_tape_t *tape, const char **pp,
    const char *last, int key);
static int sp_json_number(sp_json_tape_t *tape, const char **pp,
    const char *last);
static int sp_json_literal(sp_json_tape_t *tape, const char **pp,
    const char *last);
static int sp_json_close_object(sp_json_tape_t *tape, size_t open);
static int sp_json_hex4(const char *p, uint32_t *cp);
static size_t sp_json_next(const char **pp, unsigned char *out);


void
sp_json_tape_init(sp_json_tape_t *tape)
{
    tape->token = tape->local;
    tape->n = 0;
    tape->cap = SP_JSON_TAPE_LOCAL;
    tape->nul = 0;
}


void
sp_json_tape_free(sp_json_tape_t *tape)
{
    if (tape->token != tape->local) {
        free(tape->token);
    }

    sp_json_tape_init(tape);
}


long
sp_json_tape_push(sp_json_tape_t *tape, sp_json_type_e type)
{
    size_t            cap;
    sp_json_token_t  *t;

    if (tape->n == tape->cap) {
        if (tape->cap >= UINT32_MAX / 2) {
            return -1;
        }

        cap = tape->cap * 2;

        if (tape->token == tape->local) {
            t = malloc(cap * sizeof(sp_json_token_t));

            if (t != NULL) {
                memcpy(t, tape->local, tape->n * sizeof(sp_json_token_t));
            }

        } else {
            t = realloc(tape->token, cap * sizeof(sp_json_token_t));
        }

        if (t == NULL) {
            return -1;
        }

        tape->token = t;
        tape->cap = cap;
    }

    t = &tape->token[tape->n];
    memset(t, 0, sizeof(sp_json_token_t));
    t->type = (uint8_t) type;
    t->end = (uint32_t) tape->n + 1;

    return (long) tape->n++;
}


/* past JSON whitespace, the four characters jansson skips */
static const char *
sp_json_skip_space(const char *p, const char *last)
{
    while (p < last && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    {
        p++;
    }

    return p;
}


int
sp_json_scan(sp_json_tape_t *tape, const char *body, size_t len)
{
    long         i;
    size_t       depth, top;
    uint32_t     open[SP_JSON_DEPTH_MAX];
    const char  *p, *last;

    if (len >= UINT32_MAX / 2) {
        return SP_ERROR;
    }

    p = body;
    last = body + len;
    depth = 0;

    p = sp_json_skip_space(p, last);

    /* as json_loadb without JSON_DECODE_ANY: an object or an array */
    if (p == last || (*p != '{' && *p != '[')) {
        return SP_ERROR;
    }

value:

    p = sp_json_skip_space(p, last);

    if (p == last) {
        return SP_ERROR;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth == SP_JSON_DEPTH_MAX) {
            return SP_ERROR;
        }

        i = sp_json_tape_push(tape, *p == '{' ? SP_JSON_OBJECT
                                               : SP_JSON_ARRAY);
        if (i < 0) {
            return SP_ERROR;
        }

        open[depth++] = (uint32_t) i;
        p++;

        p = sp_json_skip_space(p, last);

        if (p < last && (*p == '}' || *p == ']')) {
            /* empty; the closing bracket is checked below */
            goto close;
        }

        if (tape->token[i].type == SP_JSON_OBJECT) {
            goto key;
        }

        goto value;

    case '"':
        if (sp_json_string(tape, &p, last, 0) != SP_OK) {
            return SP_ERROR;
        }

        break;

    case 't':
    case 'f':
    case 'n':
        if (sp_json_literal(tape, &p, last) != SP_OK) {
            return SP_ERROR;
        }

        break;

    default:
        if (sp_json_number(tape, &p, last) != SP_OK) {
            return SP_ERROR;
        }

        break;
    }

next:

    /* a value is complete: a member of the container open around it */
    p = sp_json_skip_space(p, last);

    if (depth == 0) {
        return p == last ? SP_OK : SP_ERROR;
    }

    if (p == last) {
        return SP_ERROR;
    }

    top = open[depth - 1];
    tape->token[top].value++;

    if (*p == ',') {
        p++;

        if (tape->token[top].type == SP_JSON_OBJECT) {
            goto key;
        }

        goto value;
    }

close:

    top = open[depth - 1];

    if (p == last
        || *p != (tape->token[top].type == SP_JSON_OBJECT ? '}' : ']'))
    {
        return SP_ERROR;
    }

    p++;
    depth--;
    tape->token[top].end = (uint32_t) tape->n;

    if (tape->token[top].type == SP_JSON_OBJECT
        && sp_json_close_object(tape, top) != SP_OK)
    {
        return SP_ERROR;
    }

    goto next;

key:

    p = sp_json_skip_space(p, last);

    if (p == last || *p != '"' || sp_json_string(tape, &p, last, 1) != SP_OK)
    {
        return SP_ERROR;
    }

    p = sp_json_skip_space(p, last);

    if (p == last || *p != ':') {
        return SP_ERROR;
    }

    p++;

    goto value;
}


/*
 * A string from its opening quote: UTF-8 checked as jansson does
 * (shortest form, no surrogates, at most U+10FFFF), escapes checked and
 * the decoded length counted. A key may not hold NUL (jansson refuses
 * one whatever the flags).
 */
static int
sp_json_string(sp_json_tape_t *tape, const char **pp, const char *last,
    int key)
{
    long                  i;
    int64_t               decoded;
    uint32_t              cp, low;
    unsigned              escaped;
    const unsigned char  *p, *start, *end, *run;

    p = (const unsigned char *) *pp + 1;
    end = (const unsigned char *) last;
    start = p;
    decoded = 0;
    escaped = 0;

    for ( ;; ) {

        /* the common case first: a run of plain ASCII, one test a byte */
        run = p;

        while (p < end && sp_json_plain[*p]) {
            p++;
        }

        decoded += p - run;

        if (p == end) {
            return SP_ERROR;
        }

        if (*p == '"') {
            break;
        }

        if (*p < 0x20) {
            return SP_ERROR;
        }

        if (*p == '\\') {
            escaped = 1;

            if (end - p < 2) {
                return SP_ERROR;
            }

            switch (p[1]) {

            case '"': case '\\': case '/': case 'b': case 'f': case 'n':
            case 'r': case 't':
                p += 2;
                decoded++;
                continue;

            case 'u':
                break;

            default:
                return SP_ERROR;
            }

            if (end - p < 6 || sp_json_hex4((const char *) p + 2, &cp)
                               != SP_OK)
            {
                return SP_ERROR;
            }

            p += 6;

            if (cp >= 0xdc00 && cp <= 0xdfff) {
                return SP_ERROR;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u'
                    || sp_json_hex4((const char *) p + 2, &low) != SP_OK
                    || low < 0xdc00 || low > 0xdfff)
                {
                    return SP_ERROR;
                }

                p += 6;
                decoded += 4;
                continue;
            }

            if (cp == 0) {
                if (key) {
                    return SP_ERROR;
                }

                tape->nul = 1;
            }

            decoded += cp < 0x80 ? 1 : (cp < 0x800 ? 2 : 3);
            continue;
        }

        /* a multibyte sequence */
        if (*p >= 0xc2 && *p <= 0xdf) {
            if (end - p < 2 || (p[1] & 0xc0) != 0x80) {
                return SP_ERROR;
            }

            p += 2;
            decoded += 2;
            continue;
        }

        if (*p >= 0xe0 && *p <= 0xef) {
            if (end - p < 3 || (p[1] & 0xc0) != 0x80
                || (p[2] & 0xc0) != 0x80
                || (*p == 0xe0 && p[1] < 0xa0)
                || (*p == 0xed && p[1] > 0x9f))
            {
                return SP_ERROR;
            }

            p += 3;
            decoded += 3;
            continue;
        }

        if (*p >= 0xf0 && *p <= 0xf4) {
            if (end - p < 4 || (p[1] & 0xc0) != 0x80
                || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80
                || (*p == 0xf0 && p[1] < 0x90)
                || (*p == 0xf4 && p[1] > 0x8f))
            {
                return SP_ERROR;
            }

            p += 4;
            decoded += 4;
            continue;
        }

        return SP_ERROR;
    }

    i = sp_json_tape_push(tape, SP_JSON_STRING);
    if (i < 0) {
        return SP_ERROR;
    }

    tape->token[i].text = (const char *) start;
    tape->token[i].raw_len = (uint32_t) (p - start);
    tape->token[i].value = decoded;
    tape->token[i].escaped = (uint8_t) escaped;

    *pp = (const char *) p + 1;

    return SP_OK;
}


/* true, false or null, spelt out in full */
static int
sp_json_literal(sp_json_tape_t *tape, const char **pp, const char *last)
{
    size_t          len;
    const char     *text;
    sp_json_type_e  type;

    switch (**pp) {

    case 't':
        text = "true";
        type = SP_JSON_TRUE;
        break;

    case 'f':
        text = "false";
        type = SP_JSON_FALSE;
        break;

    default:
        text = "null";
        type = SP_JSON_NULL;
        break;
    }

    len = strlen(text);

    if ((size_t) (last - *pp) < len || memcmp(*pp, text, len) != 0
        || sp_json_tape_push(tape, type) < 0)
    {
        return SP_ERROR;
    }

    *pp += len;

    return SP_OK;
}


static int
sp_json_hex4(const char *p, uint32_t *cp)
{
    int  i, d;

    *cp = 0;

    for (i = 0; i < 4; i++) {
        d = sp_hex_digit((unsigned char) p[i]);

        if (d < 0) {
            return SP_ERROR;
        }

        *cp = *cp * 16 + (uint32_t) d;
    }

    return SP_OK;
}


/*
 * A number as RFC 8259 writes it. An integer must fit int64 (jansson's
 * strtoll); a real must not overflow a double (its strtod): one whose
 * digits and exponent could is declined.
 */
static int
sp_json_number(sp_json_tape_t *tape, const char **pp, const char *last)
{
    int          negative, real, exp_negative, nonzero;
    long         i;
    int64_t      digits, exponent, frac_zeros, int_digits, e;
    uint64_t     n, limit;
    const char  *p;

    p = *pp;
    negative = 0;
    real = 0;
    n = 0;
    digits = 0;
    nonzero = 0;
    frac_zeros = 0;
    int_digits = 0;

    if (*p == '-') {
        negative = 1;
        p++;
    }

    if (p == last || *p < '0' || *p > '9') {
        return SP_ERROR;
    }

    limit = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

    if (*p == '0') {
        p++;

    } else {
        nonzero = 1;

        while (p < last && *p >= '0' && *p <= '9') {
            if (n > (limit - (uint64_t) (*p - '0')) / 10) {
                /* too large for an integer; a real is judged below */
                n = limit + 1;

            } else {
                n = n * 10 + (uint64_t) (*p - '0');
            }

            digits++;
            p++;
        }

        int_digits = digits;
    }

    if (p < last && *p == '.') {
        real = 1;
        p++;

        if (p == last || *p < '0' || *p > '9') {
            return SP_ERROR;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            if (*p != '0') {
                nonzero = 1;

            } else if (!nonzero) {
                frac_zeros++;
            }

            digits++;
            p++;
        }
    }

    exponent = 0;

    if (p < last && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        exp_negative = 0;

        if (p < last && (*p == '+' || *p == '-')) {
            exp_negative = (*p == '-');
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            return SP_ERROR;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            if (exponent < 100000) {
                exponent = exponent * 10 + (*p - '0');
            }

            p++;
        }

        if (exp_negative) {
            exponent = -exponent;
        }
    }

    if (real) {
        /* below 10^300 whatever the digits: no strtod overflow */
        if (digits + exponent >= 300) {
            return SP_ERROR;
        }

        /*
         * Whether strtod makes it 0, as jansson's tree says: the value is
         * in [10^e, 10^(e+1)); below 10^-324 it rounds to 0, from 10^-323
         * up it does not, and between, rare, jansson decides.
         */
        if (nonzero) {
            e = (n != 0) ? int_digits - 1 + exponent
                         : exponent - frac_zeros - 1;

            if (e == -324) {
                return SP_ERROR;
            }

            if (e < -324) {
                nonzero = 0;
            }
        }

        i = sp_json_tape_push(tape, SP_JSON_REAL);

        if (i >= 0) {
            tape->token[i].value = nonzero;
        }

    } else {
        if (n > limit) {
            return SP_ERROR;
        }

        i = sp_json_tape_push(tape, SP_JSON_INTEGER);

        if (i >= 0) {
            tape->token[i].value = negative ? (int64_t) (0 - n)
                                            : (int64_t) n;
        }
    }

    if (i < 0) {
        return SP_ERROR;
    }

    *pp = p;

    return SP_OK;
}


/*
 * No key twice in the object that has just closed. Keys are compared as
 * written; two of the same decoded length of which one holds escapes, or
 * an object too wide to compare pairwise, are declined.
 */
static int
sp_json_close_object(sp_json_tape_t *tape, size_t open)
{
    size_t                  k, j, n;
    uint32_t                keys[SP_JSON_WIDTH_MAX];
    const sp_json_token_t  *a, *b, *t;

    t = tape->token;
    n = 0;

    for (k = open + 1; k < t[open].end; k = t[k + 1].end) {
        if (n == SP_JSON_WIDTH_MAX) {
            return SP_ERROR;
        }

        a = &t[k];

        for (j = 0; j < n; j++) {
            b = &t[keys[j]];

            if (a->value != b->value) {
                continue;
            }

            if (a->escaped || b->escaped
                || memcmp(a->text, b->text, a->raw_len) == 0)
            {
                return SP_ERROR;
            }
        }

        keys[n++] = (uint32_t) k;
    }

    return SP_OK;
}


/* the next decoded character of a scanned string: its UTF-8 bytes */
static size_t
sp_json_next(const char **pp, unsigned char *out)
{
    uint32_t     cp, low;
    const char  *p;

    p = *pp;

    if (*p != '\\') {
        *out = (unsigned char) *p;
        *pp = p + 1;
        return 1;
    }

    *pp = p + 2;

    switch (p[1]) {
    case 'b':
        *out = '\b';
        return 1;
    case 'f':
        *out = '\f';
        return 1;
    case 'n':
        *out = '\n';
        return 1;
    case 'r':
        *out = '\r';
        return 1;
    case 't':
        *out = '\t';
        return 1;
    case 'u':
        break;
    default:
        *out = (unsigned char) p[1];
        return 1;
    }

    /* checked by the scan: four hex digits, surrogates in pairs */
    (void) sp_json_hex4(p + 2, &cp);
    *pp = p + 6;

    if (cp >= 0xd800 && cp <= 0xdbff) {
        (void) sp_json_hex4(p + 8, &low);
        *pp = p + 12;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);

        out[0] = (unsigned char) (0xf0 | (cp >> 18));
        out[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        out[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        out[3] = (unsigned char) (0x80 | (cp & 0x3f));
        return 4;
    }

    if (cp < 0x80) {
        out[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (unsigned char) (0xc0 | (cp >> 6));
        out[1] = (unsigned char) (0x80 | (cp & 0x3f));
        return 2;
    }

    out[0] = (unsigned char) (0xe0 | (cp >> 12));
    out[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
    out[2] = (unsigned char) (0x80 | (cp & 0x3f));
    return 3;
}


size_t
sp_json_decode(const sp_json_token_t *t, char *out, size_t size)
{
    size_t          n, k;
    unsigned char   c[4];
    const char     *p, *last;

    if (!t->escaped) {
        n = t->raw_len < size ? t->raw_len : size;
        memcpy(out, t->text, n);
        return n;
    }

    p = t->text;
    last = t->text + t->raw_len;
    n = 0;

    while (p < last && n < size) {
        k = sp_json_next(&p, c);

        if (k > size - n) {
            k = size - n;
        }

        memcpy(out + n, c, k);
        n += k;
    }

    return n;
}


char *
sp_json_cstr(const sp_json_token_t *t, char *out, size_t size)
{
    size_t       n;
    const char  *nul;

    n = sp_json_decode(t, out, size - 1);
    nul = memchr(out, '\0', n);

    out[nul ? (size_t) (nul - out) : n] = '\0';

    return out;
}


size_t
sp_json_get(const sp_json_tape_t *tape, size_t i, const char *name)
{
    size_t                  k, len;
    char                    key[SP_SCAN_KEY_MAX * 2];
    const sp_json_token_t  *t;

    t = tape->token;
    len = strlen(name);

    if (t[i].type != SP_JSON_OBJECT) {
        return 0;
    }

    for (k = i + 1; k < t[i].end; k = t[k + 1].end) {
        if ((size_t) t[k].value != len) {
            continue;
        }

        if (t[k].escaped) {
            if (len < sizeof(key)
                && sp_json_decode(&t[k], key, sizeof(key)) == len
                && memcmp(key, name, len) == 0)
            {
                return k + 1;
            }

            continue;
        }

        if (memcmp(t[k].text, name, len) == 0) {
            return k + 1;
        }
    }

    return 0;
}


_Static_assert(JSON_OBJECT + 1 == SP_JSON_OBJECT
               && JSON_ARRAY + 1 == SP_JSON_ARRAY
               && JSON_STRING + 1 == SP_JSON_STRING
               && JSON_INTEGER + 1 == SP_JSON_INTEGER
               && JSON_REAL + 1 == SP_JSON_REAL
               && JSON_TRUE + 1 == SP_JSON_TRUE
               && JSON_FALSE + 1 == SP_JSON_FALSE
               && JSON_NULL + 1 == SP_JSON_NULL,
               "sp_json_type_e follows json_type, one up");


int
sp_json_tape_from_tree(sp_json_tape_t *tape, json_t *v)
{
    long         i, k;
    size_t       j, klen;
    json_t      *item;
    const char  *key;

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        i = sp_json_tape_push(tape, SP_JSON_OBJECT);
        if (i < 0) {
            return SP_ERROR;
        }

        json_object_keylen_foreach(v, key, klen, item) {
            k = sp_json_tape_push(tape, SP_JSON_STRING);
            if (k < 0) {
                return SP_ERROR;
            }

            tape->token[k].text = key;
            tape->token[k].raw_len = (uint32_t) klen;
            tape->token[k].value = (int64_t) klen;

            if (sp_json_tape_from_tree(tape, item) != SP_OK) {
                return SP_ERROR;
            }

            tape->token[i].value++;
        }

        break;

    case JSON_ARRAY:
        i = sp_json_tape_push(tape, SP_JSON_ARRAY);
        if (i < 0) {
            return SP_ERROR;
        }

        json_array_foreach(v, j, item) {
            if (sp_json_tape_from_tree(tape, item) != SP_OK) {
                return SP_ERROR;
            }

            tape->token[i].value++;
        }

        break;

    case JSON_STRING:
        i = sp_json_tape_push(tape, SP_JSON_STRING);
        if (i < 0) {
            return SP_ERROR;
        }

        tape->token[i].text = json_string_value(v);
        tape->token[i].raw_len = (uint32_t) json_string_length(v);
        tape->token[i].value = (int64_t) json_string_length(v);
        return SP_OK;

    case JSON_INTEGER:
        i = sp_json_tape_push(tape, SP_JSON_INTEGER);
        if (i < 0) {
            return SP_ERROR;
        }

        tape->token[i].value = (int64_t) json_integer_value(v);
        return SP_OK;

    case JSON_REAL:
        i = sp_json_tape_push(tape, SP_JSON_REAL);
        if (i < 0) {
            return SP_ERROR;
        }

        tape->token[i].value = (json_real_value(v) != 0.0);
        return SP_OK;

    default:
        /* true, false or null: the tape's types are jansson's */
        return sp_json_tape_push(tape, (sp_json_type_e) (json_typeof(v) + 1))
               < 0 ? SP_ERROR : SP_OK;
    }

    tape->token[i].end = (uint32_t) tape->n;

    return SP_OK;
}
