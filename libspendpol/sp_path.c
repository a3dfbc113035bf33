/*
 * The path and query string of an upstream request, and header values.
 *
 * The gateway never forwards the bytes a client sent in its request
 * target: it forwards what these functions write, each component decoded
 * once and re-encoded, so that the upstream request line can only hold the
 * bytes of the canonical alphabet. Before that, every component is decoded
 * again and again (an upstream or a proxy in front of it may decode more
 * than once) and refused when any round yields a byte that could end the
 * request line (CR, LF, NUL, space), walk up the tree ("..") or change
 * which segment is which ('/' from "%2F").
 */

#include <string.h>
#include <strings.h>

#include "sp_endpoint.h"


/* rounds of percent-decoding a component is checked through */
#define SP_DECODE_ROUNDS  8

/* what a byte may be, raw or decoded, in the two kinds of component */
#define SP_COMPONENT_PATH   0
#define SP_COMPONENT_QUERY  1


const char *const  sp_query_key_names[] = {
    "key",                  /* Google's ?key= */
    "api-key",              /* Azure's header, as a parameter */
    "api_key",
    "apikey",
    "x-api-key",            /* Anthropic's header */
    "x-goog-api-key",       /* Google's header */
    "spendpol-key",
    "x-spendpol-key",       /* Spendpol's own header */
    NULL
};


static const char  sp_hex_upper[] = "0123456789ABCDEF";


/* 1 when byte c is written as it is in a canonical path segment */
static int
sp_path_literal(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    return c != '\0' && strchr("-._~:@!$&'()*+,;=", c) != NULL;
}


/* the same in a query name or value, where '&', '=' and '+' mean more */
static int
sp_query_literal(unsigned char c)
{
    return sp_path_literal(c) && c != '&' && c != '=' && c != '+';
}


static const char *
sp_path_byte_name(unsigned char c)
{
    switch (c) {
    case '\r':
        return "CR";
    case '\n':
        return "LF";
    case '\0':
        return "NUL";
    case '\t':
        return "tab";
    case ' ':
        return "space";
    case '\\':
        return "backslash";
    case '/':
        return "slash";
    case '?':
        return "question mark";
    case '#':
        return "hash";
    default:
        return c < 0x20 || c == 0x7f ? "control character" : "byte";
    }
}


/* "raw" or "percent-encoded 2 times" */
static void
sp_path_refuse(char *err, size_t errlen, const char *what, unsigned char c,
    int round)
{
    if (round == 0) {
        sp_errorf(err, errlen, "the %s contains a %s (0x%02x); expected "
                  "printable characters, percent-encoded or not",
                  what, sp_path_byte_name(c), c);
        return;
    }

    sp_errorf(err, errlen, "the %s contains a %s (0x%02x) percent-encoded "
              "%d time%s; expected printable characters, percent-encoded "
              "at most once", what, sp_path_byte_name(c), c, round,
              round == 1 ? "" : "s");
}


/* "://" anywhere; memmem() is a GNU extension the nginx build lacks */
static int
sp_path_has_scheme(const char *in, size_t len)
{
    const char  *p, *last;

    last = in + len;

    for (p = in; last - p >= 3; p++) {
        p = memchr(p, ':', last - p - 2);
        if (p == NULL) {
            return 0;
        }

        if (p[1] == '/' && p[2] == '/') {
            return 1;
        }
    }

    return 0;
}


/* 1 when c may appear in a component after `round` rounds of decoding */
static int
sp_path_byte_allowed(unsigned char c, int kind, int round)
{
    if (c < 0x20 || c == 0x7f) {
        return 0;
    }

    if (kind == SP_COMPONENT_QUERY) {
        /* decoded, these are re-encoded and harmless in a query */
        return round > 0 || (c != ' ' && c != '\\' && c != '#');
    }

    if (c == ' ' || c == '\\' || c == '?' || c == '#') {
        return 0;
    }

    /* a raw '/' was the separator; one from "%2F" would move it */
    return c != '/';
}


/*
 * Checks one component (a path segment, a query name or value) through
 * every round of decoding and leaves its fully decoded form in buf (at
 * least len bytes), its length in *buflen.
 */
static int
sp_path_check(const char *in, size_t len, int kind, const char *what,
    char *buf, size_t *buflen, char *err, size_t errlen)
{
    unsigned char  c;
    size_t         i, n, d;
    int            round, hi, lo, escaped;

    memcpy(buf, in, len);
    n = len;

    for (round = 0; /* void */; round++) {
        escaped = 0;

        for (i = 0; i < n; i++) {
            c = (unsigned char) buf[i];

            if (!sp_path_byte_allowed(c, kind, round)) {
                sp_path_refuse(err, errlen, what, c, round);
                return SP_ERROR;
            }

            if (c != '%') {
                continue;
            }

            if (n - i < 3
                || sp_hex_digit((unsigned char) buf[i + 1]) < 0
                || sp_hex_digit((unsigned char) buf[i + 2]) < 0)
            {
                sp_errorf(err, errlen, "the %s contains a malformed "
                          "percent-escape%s; expected %%XX with two hex "
                          "digits", what,
                          round ? " after decoding" : "");
                return SP_ERROR;
            }

            escaped = 1;
        }

        if (kind == SP_COMPONENT_PATH
            && ((n == 1 && buf[0] == '.')
                || (n == 2 && buf[0] == '.' && buf[1] == '.')))
        {
            sp_errorf(err, errlen, "the %s contains a \"%.*s\" segment%s; "
                      "expected a path without dot segments", what,
                      (int) n, buf, round ? " after decoding" : "");
            return SP_ERROR;
        }

        if (!escaped) {
            break;
        }

        if (round == SP_DECODE_ROUNDS) {
            sp_errorf(err, errlen, "the %s is percent-encoded more than %d "
                      "times", what, SP_DECODE_ROUNDS);
            return SP_ERROR;
        }

        /* decoding in place: the write position never passes the read */
        for (i = 0, d = 0; i < n; d++) {
            if (buf[i] == '%') {
                hi = sp_hex_digit((unsigned char) buf[i + 1]);
                lo = sp_hex_digit((unsigned char) buf[i + 2]);
                buf[d] = (char) (hi << 4 | lo);
                i += 3;

            } else {
                buf[d] = buf[i++];
            }
        }

        n = d;
    }

    *buflen = n;

    return SP_OK;
}


/*
 * Appends a checked component decoded once and re-encoded; a raw '+' in a
 * query stays '+' (it means a space there), one from "%2B" stays encoded.
 */
static int
sp_path_reencode(const char *in, size_t len, int kind, char *out,
    size_t outcap, size_t *pos)
{
    unsigned char  c;
    size_t         i, p;
    int            literal;

    p = *pos;

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        if (c == '%') {
            c = (unsigned char) (sp_hex_digit((unsigned char) in[i + 1]) << 4
                                 | sp_hex_digit((unsigned char) in[i + 2]));
            i += 2;
            literal = kind == SP_COMPONENT_QUERY ? sp_query_literal(c)
                                                 : sp_path_literal(c);

        } else {
            literal = kind == SP_COMPONENT_QUERY
                      ? sp_query_literal(c) || c == '+'
                      : sp_path_literal(c);
        }

        if (literal) {
            if (outcap - p < 1) {
                return SP_ERROR;
            }

            out[p++] = (char) c;
            continue;
        }

        if (outcap - p < 3) {
            return SP_ERROR;
        }

        out[p++] = '%';
        out[p++] = sp_hex_upper[c >> 4];
        out[p++] = sp_hex_upper[c & 0x0f];
    }

    *pos = p;

    return SP_OK;
}


static int
sp_path_terminate(char *out, size_t outcap, size_t pos, size_t *outlen,
    const char *what, char *err, size_t errlen)
{
    if (pos >= outcap) {
        sp_errorf(err, errlen, "the canonical %s does not fit in %zu bytes",
                  what, outcap);
        return SP_ERROR;
    }

    out[pos] = '\0';
    *outlen = pos;

    return SP_OK;
}


/*
 * 1 when a decoded component (a path segment, a query name or value)
 * holds "sp_key_" anywhere: a key pasted into a value ("Bearer
 * sp_key_...") or a path goes nowhere, though only a query value that is
 * exactly a key authenticates.
 */
static int
sp_has_key(const char *s, size_t len)
{
    const char  *p, *last;

    last = s + len;

    for (p = s; (size_t) (last - p) >= SP_KEY_PREFIX_LEN; p++) {
        p = memchr(p, 's', last - p - SP_KEY_PREFIX_LEN + 1);
        if (p == NULL) {
            return 0;
        }

        if (memcmp(p, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN) == 0) {
            return 1;
        }
    }

    return 0;
}


int
sp_path_canonical(const char *in, size_t len, char *out, size_t outcap,
    size_t *outlen, char *err, size_t errlen)
{
    char         buf[SP_PATH_MAX];
    const char  *seg, *end, *last;
    size_t       pos, n;

    if (len == 0) {
        sp_errorf(err, errlen, "the path is empty; expected a path starting "
                  "with '/' after /v1/{provider}");
        return SP_ERROR;
    }

    if (in[0] != '/') {
        sp_errorf(err, errlen, "the path must start with '/'");
        return SP_ERROR;
    }

    if (len > SP_PATH_MAX) {
        sp_errorf(err, errlen, "the path is %zu bytes long; expected at most "
                  "%d", len, SP_PATH_MAX);
        return SP_ERROR;
    }

    if (sp_path_has_scheme(in, len)) {
        sp_errorf(err, errlen, "the path contains a scheme (\"://\"); "
                  "expected a path relative to the provider's base URL");
        return SP_ERROR;
    }

    last = in + len;
    pos = 0;

    /* each segment starts after a '/' */
    for (seg = in + 1; /* void */; seg = end + 1) {
        end = memchr(seg, '/', last - seg);
        if (end == NULL) {
            end = last;
        }

        if (end == seg && end != last) {
            sp_errorf(err, errlen, "the path contains an empty segment "
                      "(\"//\"); expected segments separated by one '/'");
            return SP_ERROR;
        }

        if (sp_path_check(seg, end - seg, SP_COMPONENT_PATH, "path", buf, &n,
                          err, errlen)
            != SP_OK)
        {
            return SP_ERROR;
        }

        /* it would reach the provider, and the journal, in the path */
        if (sp_has_key(buf, n)) {
            sp_errorf(err, errlen, "the path holds a Spendpol key; send "
                      "the key in a header, never in the path");
            return SP_ERROR;
        }

        if (pos >= outcap) {
            goto too_small;
        }

        out[pos++] = '/';

        if (sp_path_reencode(seg, end - seg, SP_COMPONENT_PATH, out, outcap,
                             &pos)
            != SP_OK)
        {
            goto too_small;
        }

        if (end == last) {
            break;
        }
    }

    return sp_path_terminate(out, outcap, pos, outlen, "path", err, errlen);

too_small:

    sp_errorf(err, errlen, "the canonical path does not fit in %zu bytes",
              outcap);
    return SP_ERROR;
}


/* 1 when a decoded parameter name is one that carries a Spendpol key */
static int
sp_query_is_key_name(const char *name, size_t len)
{
    const char *const  *k;

    for (k = sp_query_key_names; *k; k++) {
        if (strlen(*k) == len && strncasecmp(*k, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}




int
sp_query_canonical(const char *in, size_t len, char *out, size_t outcap,
    size_t *outlen, char *keybuf, int *has_key, char *err, size_t errlen)
{
    char         buf[SP_PATH_MAX];
    const char  *param, *end, *last, *eq;
    size_t       pos, n, name_len;
    int          drop;

    if (has_key != NULL) {
        *has_key = 0;
    }

    if (len > SP_PATH_MAX) {
        sp_errorf(err, errlen, "the query string is %zu bytes long; "
                  "expected at most %d", len, SP_PATH_MAX);
        return SP_ERROR;
    }

    last = in + len;
    pos = 0;

    for (param = in; param < last; param = end + 1) {
        end = memchr(param, '&', last - param);
        if (end == NULL) {
            end = last;
        }

        if (end == param) {
            continue;
        }

        eq = memchr(param, '=', end - param);
        name_len = (eq ? eq : end) - param;

        if (sp_path_check(param, name_len, SP_COMPONENT_QUERY,
                          "query string", buf, &n, err, errlen)
            != SP_OK)
        {
            return SP_ERROR;
        }

        drop = sp_query_is_key_name(buf, n) || sp_has_key(buf, n);

        if (eq != NULL) {
            if (sp_path_check(eq + 1, end - eq - 1, SP_COMPONENT_QUERY,
                              "query string", buf, &n, err, errlen)
                != SP_OK)
            {
                return SP_ERROR;
            }

            if (sp_has_key(buf, n)) {
                drop = 1;
            }

            if (drop && keybuf != NULL && has_key != NULL && !*has_key
                && sp_key_is_wellformed(buf, n))
            {
                memcpy(keybuf, buf, n);
                keybuf[n] = '\0';
                *has_key = 1;
            }
        }

        if (drop) {
            continue;
        }

        if (pos != 0) {
            if (pos >= outcap) {
                goto too_small;
            }

            out[pos++] = '&';
        }

        if (sp_path_reencode(param, name_len, SP_COMPONENT_QUERY, out,
                             outcap, &pos)
            != SP_OK)
        {
            goto too_small;
        }

        if (eq != NULL) {
            if (pos >= outcap) {
                goto too_small;
            }

            out[pos++] = '=';

            if (sp_path_reencode(eq + 1, end - eq - 1, SP_COMPONENT_QUERY,
                                 out, outcap, &pos)
                != SP_OK)
            {
                goto too_small;
            }
        }
    }

    return sp_path_terminate(out, outcap, pos, outlen, "query string", err,
                             errlen);

too_small:

    sp_errorf(err, errlen, "the canonical query string does not fit in %zu "
              "bytes", outcap);
    return SP_ERROR;
}


int
sp_header_value_ok(const char *v, size_t len)
{
    unsigned char  c;
    size_t         i;

    for (i = 0; i < len; i++) {
        c = (unsigned char) v[i];

        if (c < 0x20 || c == 0x7f) {
            return 0;
        }
    }

    return 1;
}


size_t
sp_header_value_escape(const char *v, size_t len, char *out, size_t outcap)
{
    unsigned char  c;
    size_t         i, p;

    p = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) v[i];

        if (c >= 0x20 && c != 0x7f && c != '%') {
            if (outcap - p < 1) {
                return 0;
            }

            out[p++] = (char) c;
            continue;
        }

        if (outcap - p < 3) {
            return 0;
        }

        out[p++] = '%';
        out[p++] = sp_hex_upper[c >> 4];
        out[p++] = sp_hex_upper[c & 0x0f];
    }

    if (p < outcap) {
        out[p] = '\0';
    }

    return p;
}
