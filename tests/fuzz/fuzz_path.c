/*
 * Paths and query strings: sp_path_canonical, sp_query_canonical, and the
 * endpoint catalogue and pattern syntax on what they accept.
 *
 * Input: a request target after "/v1/{provider}", "path?query" (without
 * '?': a path only). The path is also tried as an endpoint pattern.
 */

#include "fuzz_common.h"
#include "sp_endpoint.h"


/* every byte of a canonical component: literal, '%' + uppercase hex */
static void
fuzz_check_alphabet(const char *s, size_t len, const char *extra)
{
    size_t  i;
    char    c;

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c == '%') {
            FUZZ_CHECK(i + 2 < len);
            FUZZ_CHECK(s[i + 1] != '\0'
                       && strchr("0123456789ABCDEF", s[i + 1]) != NULL);
            FUZZ_CHECK(s[i + 2] != '\0'
                       && strchr("0123456789ABCDEF", s[i + 2]) != NULL);
            i += 2;
            continue;
        }

        FUZZ_CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                   || (c >= '0' && c <= '9')
                   || (c != '\0' && strchr("-._~:@!$'()*,;", c) != NULL)
                   || (c != '\0' && strchr(extra, c) != NULL));
    }
}


static void
fuzz_path(const char *in, size_t len)
{
    static const char  *methods[] = { "GET", "POST", "PUT", NULL };
    const sp_endpoint_t  *e;
    size_t                cap, n, n2;
    char                 *out, *again, *exact, err[256];
    int                   rc, p, m;

    cap = 3 * len + 1;
    out = malloc(cap);
    FUZZ_CHECK(out != NULL);

    rc = sp_path_canonical(in, len, out, cap, &n, err, sizeof(err));
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);

    if (rc != SP_OK) {
        FUZZ_CHECK(strlen(err) > 0);
        free(out);
        return;
    }

    FUZZ_CHECK(n < cap && out[n] == '\0' && strlen(out) == n);
    FUZZ_CHECK(n >= 1 && out[0] == '/');
    FUZZ_CHECK(n <= 3 * len);
    FUZZ_CHECK(memmem(out, n, "//", 2) == NULL);
    fuzz_check_alphabet(out, n, "/&+=");

    /*
     * canonical is a fixed point: accepted again, unchanged (re-encoding
     * may take it past the length limit, which applies to the input)
     */
    if (n <= SP_PATH_MAX) {
        again = malloc(3 * n + 1);
        FUZZ_CHECK(again != NULL);
        FUZZ_CHECK(sp_path_canonical(out, n, again, 3 * n + 1, &n2, err,
                                     sizeof(err))
                   == SP_OK);
        FUZZ_CHECK(n2 == n && memcmp(again, out, n) == 0);
        free(again);
    }

    /* one byte short (no room for the NUL) is refused, never overrun */
    exact = malloc(n);
    FUZZ_CHECK(exact != NULL);
    FUZZ_CHECK(sp_path_canonical(in, len, exact, n, &n2, err, sizeof(err))
               == SP_ERROR);
    free(exact);

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL + 1; p++) {
        for (m = 0; methods[m]; m++) {
            e = sp_endpoint_find((sp_provider_e) p, methods[m],
                                 strlen(methods[m]), out, n);

            if (e != NULL) {
                FUZZ_CHECK(strcmp(e->method, methods[m]) == 0);
                FUZZ_CHECK(sp_endpoint_match(e->pattern, strlen(e->pattern),
                                             out, n));
            }
        }
    }

    /* the raw path as an organisation's pattern, against the canonical */
    if (sp_endpoint_pattern_valid(in, len, err, sizeof(err)) == SP_OK) {
        FUZZ_CHECK(len >= 1 && len <= SP_ENDPOINT_PATTERN_MAX);
        FUZZ_CHECK(memmem(in, len, "//", 2) == NULL);

        /* a pattern without '*' matches exactly itself */
        if (memchr(in, '*', len) == NULL) {
            FUZZ_CHECK(sp_endpoint_match(in, len, out, n)
                       == (len == n && memcmp(in, out, n) == 0));
        }
    }

    (void) sp_endpoint_match(in, len, out, n);

    free(out);
}


static void
fuzz_query(const char *in, size_t len)
{
    size_t  cap, n, n2;
    char   *out, *again, *exact, err[256], keybuf[SP_KEY_LEN + 1];
    int     rc, has_key;

    cap = 3 * len + 1;
    out = malloc(cap);
    FUZZ_CHECK(out != NULL);

    has_key = -1;
    rc = sp_query_canonical(in, len, out, cap, &n, keybuf, &has_key, err,
                            sizeof(err));
    FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
    FUZZ_CHECK(has_key == 0 || has_key == 1);

    if (rc != SP_OK) {
        FUZZ_CHECK(strlen(err) > 0);
        free(out);
        return;
    }

    if (has_key) {
        FUZZ_CHECK(strlen(keybuf) == SP_KEY_LEN);
        FUZZ_CHECK(sp_key_is_wellformed(keybuf, SP_KEY_LEN));
    }

    FUZZ_CHECK(n < cap && out[n] == '\0' && strlen(out) == n);
    FUZZ_CHECK(n <= 3 * len);
    fuzz_check_alphabet(out, n, "&=+");
    /* no key left behind, raw */
    FUZZ_CHECK(memmem(out, n, SP_KEY_PREFIX, SP_KEY_PREFIX_LEN) == NULL);

    /* a fixed point: nothing more to drop, no key found again */
    if (n <= SP_PATH_MAX) {
        again = malloc(3 * n + 1);
        FUZZ_CHECK(again != NULL);
        has_key = -1;
        FUZZ_CHECK(sp_query_canonical(out, n, again, 3 * n + 1, &n2, keybuf,
                                      &has_key, err, sizeof(err))
                   == SP_OK);
        FUZZ_CHECK(n2 == n && memcmp(again, out, n) == 0);
        FUZZ_CHECK(has_key == 0);
        free(again);
    }

    exact = malloc(n ? n : 1);
    FUZZ_CHECK(exact != NULL);
    FUZZ_CHECK(sp_query_canonical(in, len, exact, n, &n2, NULL, NULL, err,
                                  sizeof(err))
               == SP_ERROR);
    free(exact);

    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t  *q;
    size_t          plen;
    char           *path, *query;

    q = memchr(data, '?', size);
    plen = q ? (size_t) (q - data) : size;

    /* each part in its own buffer of exactly its size */
    path = (char *) fuzz_dup(data, plen);
    fuzz_path(path, plen);
    free(path);

    if (q != NULL) {
        query = (char *) fuzz_dup(q + 1, size - plen - 1);
        fuzz_query(query, size - plen - 1);
        free(query);
    }

    return 0;
}
