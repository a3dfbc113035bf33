/*
 * libspendpol paths, query strings and header values (sp_path.c): what
 * may reach a provider's request line and a response header.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "sp_endpoint.h"


#define KEY  "sp_key_0123456789abcdef0123456789abcdef0123456789abcdef"


/* canonical path of in, or NULL with the reason in err */
static const char *
canon(const char *in, char *err)
{
    static char  out[3 * SP_PATH_MAX + 1];
    size_t       n;

    err[0] = '\0';
    n = 12345;

    if (sp_path_canonical(in, strlen(in), out, sizeof(out), &n, err, 256)
        != SP_OK)
    {
        assert_true(strlen(err) > 0);
        return NULL;
    }

    assert_int_equal(n, strlen(out));

    return out;
}


static void
assert_path_refused(const char *in, const char *reason)
{
    char  err[256];

    if (canon(in, err) != NULL) {
        fail_msg("path \"%s\" was accepted", in);
    }

    if (strstr(err, reason) == NULL) {
        fail_msg("path \"%s\": reason \"%s\" does not name \"%s\"", in, err,
                 reason);
    }
}


static void
assert_path(const char *in, const char *expected)
{
    const char  *out;
    char         err[256];

    out = canon(in, err);

    if (out == NULL) {
        fail_msg("path \"%s\" refused: %s", in, err);
    }

    assert_string_equal(out, expected);
}


static void
test_path_request_splitting_is_refused(void **state)
{
    (void) state;

    /* the path from issue 9 that became two upstream requests */
    assert_path_refused("/models%20HTTP/1.1%0d%0aHost:%20x%0d%0a%0d%0aPOST"
                        "%20/v1/chat/completions", "space (0x20)");
    assert_path_refused("/models%0d%0aHost:%20x", "CR (0x0d)");
    assert_path_refused("/models%0aHost", "LF (0x0a)");
    assert_path_refused("/models%0D%0AX-Injected:yes", "CR (0x0d)");
    /* raw, as a client that does not encode would send them */
    assert_path_refused("/models\r\nHost: x", "CR (0x0d)");
    assert_path_refused("/models HTTP/1.1", "space (0x20)");
}


static void
test_path_multiply_encoded_crlf_is_refused(void **state)
{
    (void) state;

    assert_path_refused("/models%250d%250aHost:x",
                        "CR (0x0d) percent-encoded 2 times");
    assert_path_refused("/models%25250d%25250a",
                        "CR (0x0d) percent-encoded 3 times");
    assert_path_refused("/models%252520HTTP", "space (0x20) percent-encoded "
                        "3 times");
    /* lowercase and uppercase hex decode the same */
    assert_path_refused("/models%250D%250A", "CR (0x0d)");
}


static void
test_path_nul_and_control_bytes_are_refused(void **state)
{
    char  in[] = "/models/x\0y", err[256], out[64];
    size_t n;
    int    c;

    (void) state;

    assert_int_equal(sp_path_canonical(in, sizeof(in) - 1, out, sizeof(out),
                                       &n, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "NUL (0x00)"));

    assert_path_refused("/models%00", "NUL (0x00)");
    assert_path_refused("/models%2500", "NUL (0x00) percent-encoded 2");
    assert_path_refused("/models%7f", "0x7f");
    assert_path_refused("/models%09", "tab (0x09)");

    /* every control byte, encoded once */
    for (c = 0; c < 0x20; c++) {
        snprintf(in, sizeof(in), "/m%%%02X", c);
        assert_null(canon(in, err));
    }
}


/* a key in the path would reach the provider, and the audit log */
static void
test_path_holding_a_key_is_refused(void **state)
{
    (void) state;

    assert_path_refused("/openai/deployments/sp_key_0123abcd/chat/completions",
                        "Spendpol key");
    assert_path_refused("/models/%73p_key_x", "Spendpol key");
    assert_path_refused("/models/x%2573p_key_", "Spendpol key");

    assert_path("/models/sp_keys", "/models/sp_keys");
    assert_path("/models/sp-key_", "/models/sp-key_");
}


static void
test_path_dot_segments_are_refused(void **state)
{
    (void) state;

    assert_path_refused("/models/../batches", "\"..\" segment");
    assert_path_refused("/..", "\"..\" segment");
    assert_path_refused("/models/.", "\".\" segment");
    assert_path_refused("/models/%2e%2e/batches", "\"..\" segment after "
                        "decoding");
    assert_path_refused("/models/%2E%2E", "\"..\" segment");
    assert_path_refused("/models/.%2e/files", "\"..\"");
    assert_path_refused("/models/%252e%252e/files", "\"..\"");
    /* a decoded '/' would make one from "..%2f" */
    assert_path_refused("/models/..%2ffiles", "slash (0x2f)");
    assert_path_refused("/models%2F..%2Fbatches", "slash (0x2f)");

    /* dots inside a segment are ordinary */
    assert_path("/models/gpt-4.1", "/models/gpt-4.1");
    assert_path("/models/..x", "/models/..x");
    assert_path("/models/...", "/models/...");
}


static void
test_path_authority_and_scheme_are_refused(void **state)
{
    (void) state;

    assert_path_refused("//evil.com", "empty segment");
    assert_path_refused("//evil.com/v1/chat/completions", "empty segment");
    assert_path_refused("/models//x", "empty segment");
    assert_path_refused("/http://x", "scheme");
    assert_path_refused("/https://evil.com/chat/completions", "scheme");
    assert_path_refused("/http:%2F%2Fx", "slash (0x2f)");
    assert_path_refused("/%2F%2Fevil.com", "slash (0x2f)");
}


static void
test_path_other_refusals(void **state)
{
    char   big[SP_PATH_MAX + 2], err[256], out[8];
    size_t n;

    (void) state;

    assert_path_refused("", "empty");
    assert_path_refused("models", "start with '/'");
    assert_path_refused("/models\\..\\x", "backslash (0x5c)");
    assert_path_refused("/models%5c..%5cx", "backslash (0x5c)");
    assert_path_refused("/models?x=1", "question mark (0x3f)");
    assert_path_refused("/models%3Fx=1", "question mark (0x3f)");
    assert_path_refused("/models#frag", "hash (0x23)");
    assert_path_refused("/models%23frag", "hash (0x23)");
    assert_path_refused("/models%", "malformed percent-escape");
    assert_path_refused("/models%2", "malformed percent-escape");
    assert_path_refused("/models%zz", "malformed percent-escape");
    assert_path_refused("/models%25zz", "malformed percent-escape after "
                        "decoding");
    /* a literal '%' cannot be told from an escape cut short */
    assert_path_refused("/a%25", "malformed percent-escape after");
    assert_path_refused("/a%2525b", "malformed percent-escape after");
    assert_path_refused("/models%2525252525252525252541",
                        "more than 8 times");

    /* at most SP_PATH_MAX bytes */
    memset(big, 'a', sizeof(big));
    big[0] = '/';
    big[SP_PATH_MAX] = '\0';
    assert_non_null(canon(big, err));
    big[SP_PATH_MAX] = 'a';
    big[SP_PATH_MAX + 1] = '\0';
    assert_path_refused(big, "at most 2048");

    /* an output buffer too small is refused, never overrun */
    assert_int_equal(sp_path_canonical("/models/abcdefgh", 16, out,
                                       sizeof(out), &n, err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "does not fit"));
    assert_int_equal(sp_path_canonical("/abcdefg", 8, out, 8, &n, err,
                                       sizeof(err)),
                     SP_ERROR);
    assert_int_equal(sp_path_canonical("/abcdef", 7, out, 8, &n, err,
                                       sizeof(err)),
                     SP_OK);
    assert_string_equal(out, "/abcdef");
}


static void
test_path_is_decoded_once_and_reencoded(void **state)
{
    (void) state;

    /* what the SDKs send passes unchanged */
    assert_path("/chat/completions", "/chat/completions");
    assert_path("/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_path("/openai/deployments/prod-chat/chat/completions",
                "/openai/deployments/prod-chat/chat/completions");
    assert_path("/models/ft:gpt-4o-mini:org:custom:abc123",
                "/models/ft:gpt-4o-mini:org:custom:abc123");
    assert_path("/", "/");
    assert_path("/models/", "/models/");

    /* unreserved and sub-delims literal, hex uppercase, the rest encoded */
    assert_path("/v1beta/models/gemini%3AgenerateContent",
                "/v1beta/models/gemini:generateContent");
    assert_path("/a%7e%2d%2E%5F", "/a~-._");
    /* decoded once only: what the client meant stays what it sends */
    assert_path("/a%252541", "/a%252541");
    assert_path("/%2541", "/%2541");
    assert_path("/a\"b<c>", "/a%22b%3Cc%3E");
    assert_path("/caf\xc3\xa9", "/caf%C3%A9");
    assert_path("/caf%c3%a9", "/caf%C3%A9");
    assert_path("/x!$&'()*+,;=@", "/x!$&'()*+,;=@");
    assert_path("/%5B%5D", "/%5B%5D");
}


static void
test_path_three_times_length_always_fits(void **state)
{
    char    in[64], out[3 * sizeof(in) + 1], err[256];
    size_t  n;

    (void) state;

    /* every byte needing an escape: the worst case of the promise */
    memset(in, '"', sizeof(in));
    in[0] = '/';
    assert_int_equal(sp_path_canonical(in, sizeof(in), out,
                                       3 * sizeof(in) + 1, &n, err,
                                       sizeof(err)),
                     SP_OK);
    assert_int_equal(n, 1 + 3 * (sizeof(in) - 1));
}


/* canonical query of in, or NULL with the reason in err */
static const char *
query(const char *in, char *keybuf, int *has_key, char *err)
{
    static char  out[3 * SP_PATH_MAX + 1];
    size_t       n;

    err[0] = '\0';

    if (sp_query_canonical(in, strlen(in), out, sizeof(out), &n, keybuf,
                           has_key, err, 256)
        != SP_OK)
    {
        assert_true(strlen(err) > 0);
        return NULL;
    }

    assert_int_equal(n, strlen(out));

    return out;
}


static void
assert_query(const char *in, const char *expected)
{
    const char  *out;
    char         err[256];

    out = query(in, NULL, NULL, err);

    if (out == NULL) {
        fail_msg("query \"%s\" refused: %s", in, err);
    }

    assert_string_equal(out, expected);
}


static void
assert_query_refused(const char *in, const char *reason)
{
    char  err[256];

    if (query(in, NULL, NULL, err) != NULL) {
        fail_msg("query \"%s\" was accepted", in);
    }

    if (strstr(err, reason) == NULL) {
        fail_msg("query \"%s\": reason \"%s\" does not name \"%s\"", in, err,
                 reason);
    }
}


/* every spelling, in lower, upper and mixed case, encoded or not */
static void
test_query_every_key_spelling_is_removed(void **state)
{
    const char *const  *name;
    const char         *out;
    char                in[512], cased[64], keybuf[SP_KEY_LEN + 1], err[256];
    size_t              i, len;
    int                 has_key, variant;

    (void) state;

    for (name = sp_query_key_names; *name; name++) {
        len = strlen(*name);
        assert_true(len < sizeof(cased));

        for (variant = 0; variant < 4; variant++) {
            for (i = 0; i <= len; i++) {
                cased[i] = (*name)[i];

                if (variant == 1 || (variant == 2 && i % 2 == 0)) {
                    cased[i] = (char) toupper((unsigned char) cased[i]);
                }
            }

            if (variant == 3) {
                /* the first letter percent-encoded, uppercase */
                snprintf(in, sizeof(in), "alt=sse&%%%02X%s=" KEY "&b=2",
                         toupper((unsigned char) (*name)[0]), *name + 1);

            } else {
                snprintf(in, sizeof(in), "alt=sse&%s=" KEY "&b=2", cased);
            }

            has_key = -1;
            memset(keybuf, 'X', sizeof(keybuf));
            out = query(in, keybuf, &has_key, err);

            if (out == NULL) {
                fail_msg("query \"%s\" refused: %s", in, err);
            }

            if (strcmp(out, "alt=sse&b=2") != 0) {
                fail_msg("query \"%s\" became \"%s\"", in, out);
            }

            assert_int_equal(has_key, 1);
            assert_string_equal(keybuf, KEY);
        }
    }
}


static void
test_query_key_names_list(void **state)
{
    static const char  *expected[] = {
        "key", "api-key", "api_key", "apikey", "x-api-key",
        "x-goog-api-key", "spendpol-key", "x-spendpol-key", NULL
    };
    size_t               i;

    (void) state;

    for (i = 0; expected[i]; i++) {
        assert_non_null(sp_query_key_names[i]);
        assert_string_equal(sp_query_key_names[i], expected[i]);
    }

    assert_null(sp_query_key_names[i]);
}


static void
test_query_google_alt_sse_with_key(void **state)
{
    const char  *out;
    char         keybuf[SP_KEY_LEN + 1], err[256];
    int          has_key;

    (void) state;

    out = query("alt=sse&key=" KEY, keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "alt=sse");
    assert_int_equal(has_key, 1);
    assert_string_equal(keybuf, KEY);

    out = query("key=" KEY, keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "");
    assert_int_equal(has_key, 1);

    out = query("KEY=" KEY "&alt=sse", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "alt=sse");
    assert_int_equal(has_key, 1);
}


static void
test_query_key_values_anywhere_are_removed(void **state)
{
    const char  *out;
    char         keybuf[SP_KEY_LEN + 1], err[256];
    int          has_key;

    (void) state;

    /* a key under any name is never forwarded, and authenticates */
    out = query("a=1&token=" KEY "&c=3", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "a=1&c=3");
    assert_int_equal(has_key, 1);
    assert_string_equal(keybuf, KEY);

    /* encoded: "sp%5Fkey_" is still a key */
    out = query("a=1&t=sp%5Fkey_0123456789abcdef0123456789abcdef0123456789"
                "abcdef", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "a=1");
    assert_int_equal(has_key, 1);
    assert_string_equal(keybuf, KEY);

    /* a malformed key is dropped without authenticating */
    out = query("a=1&x=sp_key_short&key=AIzaSyFAKE", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "a=1");
    assert_int_equal(has_key, 0);

    /* a key-named parameter without a value is dropped too */
    out = query("key&a=1&api_key=", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "a=1");
    assert_int_equal(has_key, 0);

    /* the first key wins */
    out = query("key=" KEY "&api-key=sp_key_ffffffffffffffffffffffffffffffff"
                "ffffffffffffffff", keybuf, &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "");
    assert_string_equal(keybuf, KEY);

    /* a key inside a value or as a bare name is removed, and does not
     * authenticate (fuzzing found the bare name) */
    out = query("a=1&auth=Bearer%20" KEY "&" KEY "&sp_key_x=1&b=2", keybuf,
                &has_key, err);
    assert_non_null(out);
    assert_string_equal(out, "a=1&b=2");
    assert_int_equal(has_key, 0);

    /* without a keybuf the parameter is removed all the same */
    assert_query("x-goog-api-key=" KEY "&alt=sse", "alt=sse");
    /* names that only contain a key name stay */
    assert_query("keys=1&monkey=2&key_id=3", "keys=1&monkey=2&key_id=3");
}


static void
test_query_parameters_keep_their_order(void **state)
{
    (void) state;

    assert_query("api-version=2024-10-21", "api-version=2024-10-21");
    assert_query("api-version=2024-10-21&api-key=" KEY,
                 "api-version=2024-10-21");
    assert_query("z=1&Api-Key=" KEY "&a=2&APIKEY=" KEY "&m=3",
                 "z=1&a=2&m=3");
    assert_query("", "");
    assert_query("&&a=1&&b=2&", "a=1&b=2");
    assert_query("a&b=&=c", "a&b=&=c");
}


static void
test_query_reencoding(void **state)
{
    (void) state;

    /* '+' means a space: raw stays raw, encoded stays encoded */
    assert_query("q=a+b&r=a%2Bb", "q=a+b&r=a%2Bb");
    /* '=' and '&' inside a value stay encoded */
    assert_query("q=a%3Db%26c", "q=a%3Db%26c");
    assert_query("q=a=b", "q=a%3Db");
    assert_query("q=%7e%41%2f", "q=~A%2F");
    assert_query("q=%2541", "q=%2541");
    /* decoded '/', '?', '#' and space are harmless once re-encoded */
    assert_query("q=a%20b%2Fc%3F%23", "q=a%20b%2Fc%3F%23");
    assert_query("after=caf%c3%a9", "after=caf%C3%A9");
}


static void
test_query_control_bytes_are_refused(void **state)
{
    (void) state;

    assert_query_refused("a=%0d%0aX-Injected:%20yes", "CR (0x0d)");
    assert_query_refused("a=%250d%250a", "CR (0x0d) percent-encoded 2 "
                         "times");
    assert_query_refused("a=%25250a", "LF (0x0a) percent-encoded 3");
    assert_query_refused("a%00=1", "NUL (0x00)");
    assert_query_refused("a=%7F", "0x7f");
    assert_query_refused("a=1\r\n", "CR (0x0d)");
    assert_query_refused("a=1 HTTP/1.1", "space (0x20)");
    assert_query_refused("a=1#x", "hash (0x23)");
    assert_query_refused("a=%zz", "malformed percent-escape");
    assert_query_refused("a=%2", "malformed percent-escape");
    assert_query_refused("a=100%25", "malformed percent-escape after");
}


static void
test_query_limits(void **state)
{
    char    big[SP_PATH_MAX + 2], out[8], err[256];
    size_t  n;
    int     has_key;

    (void) state;

    memset(big, 'a', sizeof(big));
    big[SP_PATH_MAX + 1] = '\0';
    assert_query_refused(big, "at most 2048");
    big[SP_PATH_MAX] = '\0';
    assert_non_null(query(big, NULL, NULL, err));

    assert_int_equal(sp_query_canonical("a=12345678", 10, out, sizeof(out),
                                        &n, NULL, &has_key, err,
                                        sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "does not fit"));
    assert_int_equal(sp_query_canonical("a=123", 5, out, 6, &n, NULL,
                                        &has_key, err, sizeof(err)),
                     SP_OK);
    assert_string_equal(out, "a=123");
    assert_int_equal(has_key, 0);
}


static void
test_header_value_ok(void **state)
{
    char  v[2];
    int   c;

    (void) state;

    assert_true(sp_header_value_ok("gpt-4o-mini", 11));
    assert_true(sp_header_value_ok("", 0));
    assert_true(sp_header_value_ok("caf\xc3\xa9 \"x\" %0d",
                                  strlen("caf\xc3\xa9 \"x\" %0d")));
    assert_false(sp_header_value_ok("gpt-4o-mini\r\nX-Injected: yes", 28));
    assert_false(sp_header_value_ok("a\tb", 3));
    assert_false(sp_header_value_ok("a\x7f", 2));
    assert_false(sp_header_value_ok("a\0b", 3));

    for (c = 0; c < 256; c++) {
        v[0] = 'a';
        v[1] = (char) c;
        assert_int_equal(sp_header_value_ok(v, 2), c >= 0x20 && c != 0x7f);
    }
}


static void
test_header_value_escape(void **state)
{
    char    out[64];
    size_t  n;

    (void) state;

    n = sp_header_value_escape("gpt-4o-mini\r\nX-Injected: yes", 28, out,
                               sizeof(out));
    assert_int_equal(n, strlen("gpt-4o-mini%0D%0AX-Injected: yes"));
    assert_string_equal(out, "gpt-4o-mini%0D%0AX-Injected: yes");
    assert_true(sp_header_value_ok(out, n));

    n = sp_header_value_escape("100%\t\x7f\0", 7, out, sizeof(out));
    assert_int_equal(n, 15);
    assert_memory_equal(out, "100%25%09%7F%00", 15);

    n = sp_header_value_escape("plain", 5, out, sizeof(out));
    assert_int_equal(n, 5);
    assert_string_equal(out, "plain");

    /* too small: 0, nothing past outcap */
    memset(out, 'Z', sizeof(out));
    assert_int_equal(sp_header_value_escape("a\r", 2, out, 3), 0);
    assert_int_equal(out[3], 'Z');
    assert_int_equal(sp_header_value_escape("abc", 3, out, 3), 3);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(out[3], 'Z');
    assert_int_equal(sp_header_value_escape("a\r", 2, out, 4), 4);
    assert_memory_equal(out, "a%0D", 4);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_path_request_splitting_is_refused),
        cmocka_unit_test(test_path_multiply_encoded_crlf_is_refused),
        cmocka_unit_test(test_path_nul_and_control_bytes_are_refused),
        cmocka_unit_test(test_path_dot_segments_are_refused),
        cmocka_unit_test(test_path_holding_a_key_is_refused),
        cmocka_unit_test(test_path_authority_and_scheme_are_refused),
        cmocka_unit_test(test_path_other_refusals),
        cmocka_unit_test(test_path_is_decoded_once_and_reencoded),
        cmocka_unit_test(test_path_three_times_length_always_fits),
        cmocka_unit_test(test_query_every_key_spelling_is_removed),
        cmocka_unit_test(test_query_key_names_list),
        cmocka_unit_test(test_query_google_alt_sse_with_key),
        cmocka_unit_test(test_query_key_values_anywhere_are_removed),
        cmocka_unit_test(test_query_parameters_keep_their_order),
        cmocka_unit_test(test_query_reencoding),
        cmocka_unit_test(test_query_control_bytes_are_refused),
        cmocka_unit_test(test_query_limits),
        cmocka_unit_test(test_header_value_ok),
        cmocka_unit_test(test_header_value_escape),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
