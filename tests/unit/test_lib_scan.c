/*
 * libspendpol streaming usage scanner: a JSON body too large to hold is
 * metered as it passes, and says what the whole body says, however it is
 * split.
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
