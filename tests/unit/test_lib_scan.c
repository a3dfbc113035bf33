/*
 * libspendpol streaming usage scanner: a JSON body too large to hold is
 * metered as it passes, and says what the whole body says, however it is
 * split. And the validating scanner that reads request bodies: it
 * answers as jansson does, or declines and lets jansson answer.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_scan.h"


static sp_scan_t  scan;


/* the scan of body fed in pieces of `piece` bytes (0: whole) */
static int
scan_split(sp_provider_e provider, const char *body, size_t piece,
    sp_response_info_t *info)
{
    size_t  pos, n, len;

    len = strlen(body);
    sp_scan_init(&scan);

    for (pos = 0; pos < len; pos += n) {
        n = piece && len - pos > piece ? piece : len - pos;
        sp_scan_feed(&scan, body + pos, n);
    }

    assert_int_equal(scan.bytes, (int64_t) len);

    memset(info, 0, sizeof(sp_response_info_t));

    return sp_scan_result(&scan, provider, info);
}


/* every split of body gives the usage the whole-body parser finds */
static void
assert_scan_matches_whole(sp_provider_e provider, const char *body)
{
    size_t              piece;
    sp_response_info_t  whole, scanned;

    memset(&whole, 0, sizeof(whole));
    assert_int_equal(sp_usage_from_json(provider, body, strlen(body), &whole),
                     SP_OK);
    assert_true(whole.has_usage);

    for (piece = 0; piece <= strlen(body); piece++) {
        assert_int_equal(scan_split(provider, body, piece, &scanned), SP_OK);
        assert_int_equal(scanned.has_usage, 1);
        assert_int_equal(scanned.usage.input_tokens,
                         whole.usage.input_tokens);
        assert_int_equal(scanned.usage.output_tokens,
                         whole.usage.output_tokens);
        assert_int_equal(scanned.usage.cached_tokens,
                         whole.usage.cached_tokens);
        assert_int_equal(scanned.usage.cache_write_tokens,
                         whole.usage.cache_write_tokens);
        assert_string_equal(scanned.model, whole.model);
    }
}


static void
test_scan_chat_completion_split_anywhere(void **state)
{
    (void) state;

    assert_scan_matches_whole(SP_PROVIDER_OPENAI,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"a \\\"usage\\\":"
        " {\\\"prompt_tokens\\\": 999} } ] \\\\\"}}],\n  \"usage\" : {"
        "\"prompt_tokens\":1200,\"completion_tokens\":34,"
        "\"prompt_tokens_details\":{\"cached_tokens\":600}} ,"
        "\"system_fingerprint\":\"fp\"}");
}


static void
test_scan_providers_members(void **state)
{
    (void) state;

    /* Anthropic: usage with cache counts, model */
    assert_scan_matches_whole(SP_PROVIDER_ANTHROPIC,
        "{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"{{{[[\"}],\"model\":\"claude-sonnet-4-5\","
        "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":20,"
        "\"cache_creation_input_tokens\":5,\"output_tokens\":7}}");

    /* Google: usageMetadata and modelVersion */
    assert_scan_matches_whole(SP_PROVIDER_GOOGLE,
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]},"
        "\"finishReason\":\"STOP\"}],\"usageMetadata\":{"
        "\"promptTokenCount\":11,\"candidatesTokenCount\":3,"
        "\"thoughtsTokenCount\":2},\"modelVersion\":\"gemini-2.5-flash\"}");

    /* Google without alt=sse: an array of chunks, the last usage wins */
    assert_scan_matches_whole(SP_PROVIDER_GOOGLE,
        "[{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":1}},"
        " {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":11,"
        "\"candidatesTokenCount\":30},\"modelVersion\":\"gemini-2.0\"}]");

    /* Cohere v2 */
    assert_scan_matches_whole(SP_PROVIDER_COHERE,
        "{\"id\":\"c\",\"message\":{\"role\":\"assistant\",\"content\":[{"
        "\"type\":\"text\",\"text\":\"x\"}]},\"usage\":{\"billed_units\":{"
        "\"input_tokens\":5,\"output_tokens\":6},\"tokens\":{"
        "\"input_tokens\":50,\"output_tokens\":6}}}");
}


static void
test_scan_cohere_v1_meta(void **state)
{
    sp_response_info_t  info;

    (void) state;

    assert_int_equal(scan_split(SP_PROVIDER_COHERE,
                                "{\"text\":\"hello\",\"meta\":{\"api_version\""
                                ":{\"version\":\"1\"},\"billed_units\":{"
                                "\"input_tokens\":12,\"output_tokens\":4}}}",
                                7, &info),
                     SP_OK);
    assert_int_equal(info.usage.input_tokens, 12);
    assert_int_equal(info.usage.output_tokens, 4);

    /* "meta" means nothing to the other providers */
    assert_int_equal(scan_split(SP_PROVIDER_OPENAI,
                                "{\"meta\":{\"billed_units\":{"
                                "\"input_tokens\":12}}}", 0, &info),
                     SP_ERROR);
    assert_int_equal(info.has_usage, 0);
}


static void
test_scan_ignores_nested_and_quoted_members(void **state)
{
    sp_response_info_t  info;

    (void) state;

    assert_int_equal(scan_split(SP_PROVIDER_OPENAI,
                                "{\"choices\":[{\"usage\":{\"prompt_tokens\":"
                                "5}}],\"x\":{\"usage\":{\"prompt_tokens\":6}},"
                                "\"text\":\"\\\",\\\"usage\\\":{\\\"prompt_"
                                "tokens\\\":7}\",\"model\":\"m\"}", 3, &info),
                     SP_ERROR);
    assert_int_equal(info.has_usage, 0);
    assert_string_equal(info.model, "m");
    /* the string values' bytes are kept for an estimate */
    assert_true(info.output_bytes > 20);
}


static void
test_scan_last_duplicate_wins(void **state)
{
    sp_response_info_t  info;

    (void) state;

    assert_int_equal(scan_split(SP_PROVIDER_OPENAI,
                                "{\"usage\":{\"prompt_tokens\":1,"
                                "\"completion_tokens\":1},\"usage\":{"
                                "\"prompt_tokens\":2,\"completion_tokens\":3}"
                                "}", 1, &info),
                     SP_OK);
    assert_int_equal(info.usage.input_tokens, 2);
    assert_int_equal(info.usage.output_tokens, 3);
}


static void
test_scan_cut_or_oversized_usage_is_not_used(void **state)
{
    char                body[3 * SP_SCAN_USAGE_MAX];
    size_t              n;
    sp_response_info_t  info;

    (void) state;

    /* cut inside the usage object: nothing half-read is believed */
    assert_int_equal(scan_split(SP_PROVIDER_OPENAI,
                                "{\"choices\":[],\"usage\":{\"prompt_tokens\""
                                ":12,\"completion_tokens\":3", 5, &info),
                     SP_ERROR);
    assert_int_equal(info.has_usage, 0);

    /* a usage object larger than the copy: not kept, the earlier one is */
    n = (size_t) snprintf(body, sizeof(body),
                          "{\"usage\":{\"prompt_tokens\":4,"
                          "\"completion_tokens\":5},\"usage\":{\"pad\":\"");
    memset(body + n, 'x', SP_SCAN_USAGE_MAX);
    n += SP_SCAN_USAGE_MAX;
    snprintf(body + n, sizeof(body) - n, "\",\"prompt_tokens\":9}}");

    assert_int_equal(scan_split(SP_PROVIDER_OPENAI, body, 100, &info), SP_OK);
    assert_int_equal(info.usage.input_tokens, 4);
    assert_int_equal(info.usage.output_tokens, 5);

    /* not JSON at all: no usage, and no crash */
    assert_int_equal(scan_split(SP_PROVIDER_OPENAI, "}}]]\"usage\":{:,,",
                                1, &info),
                     SP_ERROR);
}


/* ---- request bodies: the validating scanner ------------------------- */

static sp_json_tape_t  tape;


/* 1 when the scanner accepts body (len bytes) itself, 0 when it declines */
static int
json_scans(const char *body, size_t len)
{
    int  rc;

    sp_json_tape_init(&tape);
    rc = sp_json_scan(&tape, body, len);
    sp_json_tape_free(&tape);

    return rc == SP_OK;
}

#define json_scans_str(s)  json_scans(s, sizeof(s) - 1)


/*
 * The request parser answers as jansson alone does, for a body the
 * scanner accepts and for one it declines: same result, same fields,
 * same message.
 */
static int
request_agrees(const char *body, size_t len, char *err, size_t errlen)
{
    int                rc, rc_tree;
    char               err_tree[512];
    sp_request_info_t  info, info_tree;

    err[0] = '\0';
    err_tree[0] = '\0';

    rc = sp_request_parse(SP_PROVIDER_OPENAI, body, len, &info, err, errlen);
    rc_tree = sp_request_parse_tree(SP_PROVIDER_OPENAI, body, len,
                                    &info_tree, err_tree, sizeof(err_tree));

    assert_int_equal(rc, rc_tree);
    assert_string_equal(err, err_tree);

    if (rc == SP_OK) {
        assert_memory_equal(&info, &info_tree, sizeof(sp_request_info_t));

    } else {
        assert_string_equal(info.error_code, info_tree.error_code);
    }

    return rc;
}

#define request_agrees_str(s, err) \
    request_agrees(s, sizeof(s) - 1, err, sizeof(err))


static void
test_request_scan_accepts_ordinary_bodies(void **state)
{
    char               err[512];
    sp_request_info_t  info;

    static const char  chat[] =
        "{\"model\":\"gpt-4o-mini\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"You are helpful.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"caf\\u00e9 \\ud83d\\ude00 \xc3\xa9\\n\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}],"
        "\"max_tokens\":64,\"temperature\":0.7,\"top_p\":1e-3,"
        "\"stream\":false,\"n\":2,\"stop\":null,\"seed\":-9223372036854775808"
        ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{}}}}}]}";

    /* read by the scanner itself, not handed to jansson */
    assert_true(json_scans_str(chat));
    assert_true(json_scans_str(" [ ] "));
    assert_true(json_scans_str("{\"a\":{\"b\":[1,2,{\"c\":true}]},\"b\":1}"));

    assert_int_equal(request_agrees_str(chat, err), SP_OK);

    assert_int_equal(sp_request_parse(SP_PROVIDER_OPENAI, chat,
                                      sizeof(chat) - 1, &info, err,
                                      sizeof(err)),
                     SP_OK);
    assert_string_equal(info.model, "gpt-4o-mini");
    assert_int_equal(info.max_tokens, 64);
    assert_int_equal(info.choices, 2);
    assert_int_equal(info.media_tokens, SP_REQUEST_IMAGE_TOKENS);
    /*
     * "You are helpful." 16, "caf\u00e9 \ud83d\ude00 \u00e9\n" 14
     * decoded; keys and types are not text, except in the tool schema:
     * type function function name f parameters type object properties a
     */
    assert_int_equal(info.prompt_bytes, 16 + 14 + 4 + 8 + 8 + 4 + 1 + 10
                                        + 4 + 6 + 10 + 1);
}


static void
test_request_scan_invalid_utf8(void **state)
{
    char  err[512];

    static const char  *bad[] = {
        "{\"model\":\"\xc3\"}",             /* cut short */
        "{\"model\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"model\":\"\xe0\x80\xaf\"}",     /* overlong, 3 bytes */
        "{\"model\":\"\xed\xa0\x80\"}",     /* a surrogate, encoded */
        "{\"model\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"model\":\"\xff\"}",
        "{\"model\":\"\x80\"}",             /* a lone continuation */
        "{\"model\":\"\\ud800\"}",          /* a lone high surrogate */
        "{\"model\":\"\\udc00\"}",          /* a lone low surrogate */
        "{\"model\":\"\\ud800\\u0041\"}",   /* high, then not low */
        "{\"model\":\"a\tb\"}",             /* a raw control character */
        "{\"model\":\"\\x41\"}",            /* not an escape */
        "{\"model\":\"\\u12g4\"}",
        "{\"m\xff\":1}",                    /* in a key */
        NULL
    };
    const char  **b;

    for (b = bad; *b; b++) {
        assert_false(json_scans(*b, strlen(*b)));
        assert_int_equal(request_agrees(*b, strlen(*b), err, sizeof(err)),
                         SP_ERROR);
        assert_non_null(strstr(err, "request body is not valid JSON"));
    }

    /* the longest valid sequences pass */
    assert_true(json_scans_str("{\"m\":\"\xf4\x8f\xbf\xbf\xef\xbf\xbd"
                               "\xdf\xbf\"}"));
}


static void
test_request_scan_deep_nesting(void **state)
{
    char    err[512], *body;
    size_t  depth, n, i;

    body = malloc(2 * 3000 + 32);
    assert_non_null(body);

    /* at the scanner's limit, past it (jansson reads it), past jansson's */
    for (depth = SP_JSON_DEPTH_MAX - 1; depth <= 3000; depth += 1000) {
        n = 0;
        n += (size_t) sprintf(body, "{\"messages\":");

        for (i = 0; i < depth; i++) {
            body[n++] = '[';
        }

        body[n++] = '"';
        body[n++] = 'x';
        body[n++] = '"';

        for (i = 0; i < depth; i++) {
            body[n++] = ']';
        }

        body[n++] = '}';

        assert_int_equal(json_scans(body, n), depth < SP_JSON_DEPTH_MAX);

        if (depth <= 2000) {
            assert_int_equal(request_agrees(body, n, err, sizeof(err)),
                             SP_OK);

        } else {
            assert_int_equal(request_agrees(body, n, err, sizeof(err)),
                             SP_ERROR);
            assert_non_null(strstr(err, "maximum parsing depth"));
        }

        /* cut short anywhere: refused, with jansson's words */
        assert_int_equal(request_agrees(body, n / 2, err, sizeof(err)),
                         SP_ERROR);
    }

    free(body);
}


static void
test_request_scan_duplicate_keys(void **state)
{
    char  err[512];

    /* twice at the top, in a nested object, spelt with an escape */
    assert_false(json_scans_str("{\"model\":\"a\",\"model\":\"b\"}"));
    assert_int_equal(request_agrees_str("{\"model\":\"a\",\"model\":\"b\"}",
                                        err),
                     SP_ERROR);
    assert_string_equal(err, "field \"model\" appears twice in one object "
                        "of the request body; send each field once");

    assert_int_equal(request_agrees_str("{\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"a\",\"role\":\"x\"}]}",
                                        err),
                     SP_ERROR);
    assert_non_null(strstr(err, "\"role\" appears twice"));

    assert_int_equal(request_agrees_str("{\"n\":1,\"\\u006e\":2}", err),
                     SP_ERROR);

    /* the same name in two objects, and names alike but not equal */
    assert_true(json_scans_str("{\"a\":{\"a\":1},\"b\":[{\"a\":1},"
                               "{\"a\":2}],\"ab\":1,\"ba\":2}"));
    assert_int_equal(request_agrees_str("{\"a\":{\"a\":1},\"b\":[{\"a\":1},"
                                        "{\"a\":2}],\"ab\":1,\"ba\":2}",
                                        err),
                     SP_OK);

    /* an escape that only looks alike: declined, then accepted */
    assert_false(json_scans_str("{\"ab\":1,\"\\u0061c\":2}"));
    assert_int_equal(request_agrees_str("{\"ab\":1,\"\\u0061c\":2}", err),
                     SP_OK);
}


static void
test_request_scan_wide_object(void **state)
{
    char    err[512], body[8192];
    size_t  n, i;

    n = (size_t) sprintf(body, "{\"max_tokens\":7");

    for (i = 0; i < SP_JSON_WIDTH_MAX + 10; i++) {
        n += (size_t) sprintf(body + n, ",\"k%zu\":%zu", i, i);
    }

    body[n++] = '}';

    /* too wide to compare pairwise: jansson checks the names */
    assert_false(json_scans(body, n));
    assert_int_equal(request_agrees(body, n, err, sizeof(err)), SP_OK);

    n = (size_t) sprintf(body + n - 1, ",\"k3\":0}") + n - 1;
    assert_int_equal(request_agrees(body, n, err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "\"k3\" appears twice"));
}


static void
test_request_scan_huge_numbers(void **state)
{
    char  err[512];

    assert_true(json_scans_str("{\"a\":9223372036854775807,"
                               "\"b\":-9223372036854775808,\"c\":1e-400,"
                               "\"d\":123456.789e-5,\"e\":-0}"));
    assert_int_equal(request_agrees_str("{\"a\":9223372036854775807,"
                                        "\"c\":1e-400}", err),
                     SP_OK);

    assert_false(json_scans_str("{\"max_tokens\":9223372036854775808}"));
    assert_int_equal(request_agrees_str("{\"max_tokens\":"
                                        "9223372036854775808}", err),
                     SP_ERROR);
    assert_string_equal(err, "field \"max_tokens\" is a number too large "
                        "for the gateway to read (at most a 64-bit "
                        "integer)");

    assert_int_equal(request_agrees_str("{\"x\":-9223372036854775809}",
                                        err),
                     SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":[1e400]}", err), SP_ERROR);

    /* near the limit of a double: declined, jansson decides */
    assert_false(json_scans_str("{\"x\":1.5e307}"));
    assert_int_equal(request_agrees_str("{\"x\":1.5e307}", err), SP_OK);

    /* the grammar: no leading zero, plus sign, bare point or exponent */
    assert_int_equal(request_agrees_str("{\"x\":01}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":+1}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":1.}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":.5}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":1e}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"x\":-}", err), SP_ERROR);

    /* an integer where a real is expected, and the other way round */
    assert_int_equal(request_agrees_str("{\"max_tokens\":64.0}", err),
                     SP_ERROR);
    assert_string_equal(err, "field \"max_tokens\" must be an integer from "
                        "0 to 100000000, not a number with a fraction or "
                        "exponent");
}


static void
test_request_scan_truncated_input(void **state)
{
    char    err[512];
    size_t  n;

    static const char  body[] =
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"h\\u00e9llo \\\"q\\\"\"}],\"max_tokens\":5,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"x\":[null,false,1.5]}";

    /* every prefix: refused as jansson refuses it, never read past */
    for (n = 1; n < sizeof(body) - 1; n++) {
        assert_false(json_scans(body, n));
        assert_int_equal(request_agrees(body, n, err, sizeof(err)),
                         SP_ERROR);
    }

    assert_int_equal(request_agrees(body, n, err, sizeof(err)), SP_OK);

    /* and what follows the object */
    assert_int_equal(request_agrees_str("{} {}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{}x", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"a\":tru}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"a\":truex}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"a\" 1}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"a\":1,}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("[1,]", err), SP_ERROR);
    assert_int_equal(request_agrees_str("{\"a\":[1}", err), SP_ERROR);
    assert_int_equal(request_agrees_str("\"a\"", err), SP_ERROR);
    assert_int_equal(request_agrees_str("[1]", err), SP_ERROR);
    assert_string_equal(err, "request body must be a JSON object");
}


static void
test_request_scan_nul_and_controls(void **state)
{
    char               err[512];
    sp_request_info_t  info;

    /* NUL in a value is let through, in a key refused (by jansson) */
    assert_true(json_scans_str("{\"messages\":\"a\\u0000b\"}"));
    sp_json_tape_init(&tape);
    assert_int_equal(sp_json_scan(&tape, "[\"\\u0000\"]", 10), SP_OK);
    assert_true(tape.nul);
    sp_json_tape_free(&tape);
    assert_false(tape.nul);
    assert_int_equal(request_agrees_str("{\"messages\":\"a\\u0000b\"}", err),
                     SP_OK);
    assert_false(json_scans_str("{\"a\\u0000\":1}"));
    assert_int_equal(request_agrees_str("{\"a\\u0000\":1}", err), SP_ERROR);

    /* a control character in the model, escaped or raw DEL */
    assert_int_equal(request_agrees_str("{\"model\":\"a\\nb\"}", err),
                     SP_ERROR);
    assert_string_equal(err, "field \"model\" contains a control "
                        "character");
    assert_int_equal(request_agrees_str("{\"model\":\"a\\u001fb\"}", err),
                     SP_ERROR);
    assert_int_equal(request_agrees_str("{\"model\":\"a\x7f\"}", err),
                     SP_ERROR);
    assert_int_equal(request_agrees_str("{\"model\":\"a\\u007f\"}", err),
                     SP_ERROR);

    /* escapes that are not control characters are decoded */
    assert_int_equal(request_agrees_str("{\"model\":\"a\\/b\\\\c\\\"d"
                                        "\\u00e9\"}", err),
                     SP_OK);
    assert_int_equal(sp_request_parse(SP_PROVIDER_OPENAI,
                                      "{\"model\":\"a\\/b\\\\c\\\"d"
                                      "\\u00e9\"}", 28, &info, err,
                                      sizeof(err)),
                     SP_OK);
    assert_string_equal(info.model, "a/b\\c\"d\xc3\xa9");

    /* a type whose name goes on after a NUL is still that type */
    assert_int_equal(request_agrees_str("{\"messages\":[{\"type\":"
                                        "\"image\\u0000x\"}]}", err),
                     SP_OK);
}


static void
test_request_scan_long_prompt_grows_the_tape(void **state)
{
    char    err[512], *body;
    size_t  n, i;

    body = malloc(128 * 1024);
    assert_non_null(body);

    n = (size_t) sprintf(body, "{\"model\":\"m\",\"messages\":[");

    for (i = 0; i < 2000; i++) {
        n += (size_t) sprintf(body + n, "%s{\"role\":\"user\","
                              "\"content\":\"message %zu\"}",
                              i ? "," : "", i);
    }

    n += (size_t) sprintf(body + n, "]}");

    assert_true(json_scans(body, n));
    assert_int_equal(request_agrees(body, n, err, sizeof(err)), SP_OK);

    free(body);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_chat_completion_split_anywhere),
        cmocka_unit_test(test_scan_providers_members),
        cmocka_unit_test(test_scan_cohere_v1_meta),
        cmocka_unit_test(test_scan_ignores_nested_and_quoted_members),
        cmocka_unit_test(test_scan_last_duplicate_wins),
        cmocka_unit_test(test_scan_cut_or_oversized_usage_is_not_used),
        cmocka_unit_test(test_request_scan_accepts_ordinary_bodies),
        cmocka_unit_test(test_request_scan_invalid_utf8),
        cmocka_unit_test(test_request_scan_deep_nesting),
        cmocka_unit_test(test_request_scan_duplicate_keys),
        cmocka_unit_test(test_request_scan_wide_object),
        cmocka_unit_test(test_request_scan_huge_numbers),
        cmocka_unit_test(test_request_scan_truncated_input),
        cmocka_unit_test(test_request_scan_nul_and_controls),
        cmocka_unit_test(test_request_scan_long_prompt_grows_the_tape),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
