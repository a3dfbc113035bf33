/*
 * libspendpol response usage for Anthropic, Google and Cohere.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_usage.h"


static int
json_body(sp_provider_e p, const char *body, sp_response_info_t *info)
{
    return sp_usage_from_json(p, body, strlen(body), info);
}


static int
event(sp_provider_e p, const char *name, const char *data,
    sp_response_info_t *info)
{
    return sp_usage_from_event(p, name, data, strlen(data), info);
}


static void
test_anthropic_json_adds_cache_reads_and_writes_to_input(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_ANTHROPIC,
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"claude-3-5-haiku-20241022\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"Hello!\"}],\"stop_reason\":\"end_turn\","
        "\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":20,"
        "\"cache_read_input_tokens\":30,\"output_tokens\":5}}", &info),
        SP_OK);

    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 60);
    assert_true(info.usage.cached_tokens == 30);
    assert_true(info.usage.cache_write_tokens == 20);
    assert_true(info.usage.output_tokens == 5);
    assert_string_equal(info.model, "claude-3-5-haiku-20241022");
    assert_true(info.output_bytes == 6);
    assert_int_equal(info.done, 1);
}


static void
test_anthropic_stream_merges_start_and_cumulative_deltas(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));

    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_start",
        "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
        "\"model\":\"claude-sonnet-4-20250514\",\"content\":[],"
        "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,"
        "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}", &info), 0);
    assert_true(info.usage.input_tokens == 125);
    assert_true(info.usage.cached_tokens == 100);
    assert_true(info.usage.output_tokens == 1);

    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "ping",
                           "{\"type\":\"ping\"}", &info), 0);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "content_block_start",
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
        "{\"type\":\"text\",\"text\":\"\"}}", &info), 0);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "content_block_delta",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
        "{\"type\":\"text_delta\",\"text\":\"Hello\"}}", &info), 0);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "content_block_delta",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
        "{\"type\":\"text_delta\",\"text\":\" you\"}}", &info), 0);

    /* cumulative: the latest output count wins, input is kept */
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_delta",
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":10}}", &info), 0);
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_delta",
        "{\"type\":\"message_delta\",\"delta\":{},\"usage\":"
        "{\"output_tokens\":15}}", &info), 0);
    assert_true(info.usage.input_tokens == 125);
    assert_true(info.usage.cached_tokens == 100);
    assert_true(info.usage.cache_write_tokens == 0);
    assert_true(info.usage.output_tokens == 15);
    assert_int_equal(info.done, 0);

    /* a newer delta restating input replaces it */
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_delta",
        "{\"type\":\"message_delta\",\"usage\":{\"input_tokens\":30,"
        "\"cache_read_input_tokens\":100,\"output_tokens\":16}}", &info), 0);
    assert_true(info.usage.input_tokens == 130);
    assert_true(info.usage.output_tokens == 16);

    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_stop",
                           "{\"type\":\"message_stop\"}", &info), 0);
    assert_int_equal(info.done, 1);
    assert_string_equal(info.model, "claude-sonnet-4-20250514");
    assert_true(info.output_bytes == 9);
}


static void
test_google_json_counts_thoughts_as_output(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_GOOGLE,
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi there\"}],"
        "\"role\":\"model\"},\"finishReason\":\"STOP\"}],"
        "\"usageMetadata\":{\"promptTokenCount\":100,"
        "\"candidatesTokenCount\":20,\"thoughtsTokenCount\":7,"
        "\"cachedContentTokenCount\":40,\"totalTokenCount\":127},"
        "\"modelVersion\":\"gemini-2.5-flash\"}", &info), SP_OK);

    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 100);
    assert_true(info.usage.cached_tokens == 40);
    assert_true(info.usage.output_tokens == 27);
    assert_string_equal(info.model, "gemini-2.5-flash");
    assert_true(info.output_bytes == 8);
    assert_int_equal(info.done, 1);
}


static void
test_google_stream_last_usage_wins(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(event(SP_PROVIDER_GOOGLE, "",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}],"
        "\"usageMetadata\":{\"promptTokenCount\":9,"
        "\"candidatesTokenCount\":1},\"modelVersion\":\"gemini-2.0-flash\"}",
        &info), 0);
    assert_int_equal(info.done, 0);
    assert_true(info.usage.output_tokens == 1);

    assert_int_equal(event(SP_PROVIDER_GOOGLE, "",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}]},"
        "\"finishReason\":\"STOP\"}],\"usageMetadata\":"
        "{\"promptTokenCount\":9,\"candidatesTokenCount\":4}}", &info), 0);
    assert_true(info.usage.input_tokens == 9);
    assert_true(info.usage.output_tokens == 4);
    assert_int_equal(info.done, 1);
    assert_true(info.output_bytes == 5);
    assert_string_equal(info.model, "gemini-2.0-flash");
}


static void
test_google_json_array_stream(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_GOOGLE,
        "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
        "\"usageMetadata\":{\"promptTokenCount\":3,"
        "\"candidatesTokenCount\":1}},"
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"bc\"}]},"
        "\"finishReason\":\"STOP\"}],\"usageMetadata\":"
        "{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}, 7]", &info),
        SP_OK);
    assert_true(info.usage.input_tokens == 3);
    assert_true(info.usage.output_tokens == 2);
    assert_true(info.output_bytes == 3);
    assert_int_equal(info.done, 1);

    /* an array is not a response for the others */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_OPENAI, "[{}]", &info), SP_ERROR);
}


static void
test_cohere_billed_units_win_over_tokens(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"id\":\"c1\",\"finish_reason\":\"COMPLETE\",\"message\":"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
        "\"text\":\"Hola\"}]},\"usage\":{\"billed_units\":"
        "{\"input_tokens\":5,\"output_tokens\":3},\"tokens\":"
        "{\"input_tokens\":70,\"output_tokens\":3}}}", &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 5);
    assert_true(info.usage.output_tokens == 3);
    assert_true(info.output_bytes == 4);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"usage\":{\"tokens\":{\"input_tokens\":70,\"output_tokens\":2}}}",
        &info), SP_OK);
    assert_true(info.usage.input_tokens == 70);
    assert_true(info.usage.output_tokens == 2);
}


static void
test_cohere_stream_usage_in_message_end(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(event(SP_PROVIDER_COHERE, "message-start",
        "{\"type\":\"message-start\",\"id\":\"x\",\"delta\":{\"message\":"
        "{\"role\":\"assistant\"}}}", &info), 0);
    assert_int_equal(event(SP_PROVIDER_COHERE, "content-delta",
        "{\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":"
        "{\"content\":{\"text\":\"Hi\"}}}}", &info), 0);
    assert_int_equal(info.has_usage, 0);
    assert_int_equal(info.done, 0);

    assert_int_equal(event(SP_PROVIDER_COHERE, "message-end",
        "{\"type\":\"message-end\",\"delta\":{\"finish_reason\":"
        "\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":4,"
        "\"output_tokens\":2},\"tokens\":{\"input_tokens\":60,"
        "\"output_tokens\":2}}}}", &info), 0);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 4);
    assert_true(info.usage.output_tokens == 2);
    assert_int_equal(info.done, 1);
    assert_true(info.output_bytes == 2);
}


static void
test_provider_events_with_wrong_types_are_ignored(void **state)
{
    static const char   *bad[] = {
        "{\"type\":7}", "{\"type\":\"message_start\",\"message\":3}",
        "{\"type\":\"message_delta\",\"usage\":[1]}",
        "{\"type\":\"content_block_delta\",\"delta\":\"x\"}",
        "{\"candidates\":{},\"usageMetadata\":[]}",
        "{\"type\":\"message-end\",\"delta\":[]}",
        "{\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":7}}}",
        "{\"usage\":{\"input_tokens\":\"1\"}}", "[]", "", "null",
    };
    sp_provider_e        providers[] = {
        SP_PROVIDER_ANTHROPIC, SP_PROVIDER_GOOGLE, SP_PROVIDER_COHERE,
        SP_PROVIDER_AZURE, SP_PROVIDER_MISTRAL, SP_PROVIDER_UNKNOWN
    };
    sp_response_info_t   info;
    size_t               i, j;

    (void) state;

    for (j = 0; j < sizeof(providers) / sizeof(providers[0]); j++) {
        memset(&info, 0, sizeof(info));

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            (void) event(providers[j], "", bad[i], &info);
            (void) json_body(providers[j], bad[i], &info);
        }

        assert_true(info.usage.input_tokens >= 0);
        assert_true(info.usage.output_tokens >= 0);
    }
}


/*
 * Found by fuzzing (tests/fuzz/fuzz_usage_json): counts up to INT64_MAX
 * are valid JSON integers, and adding them overflowed (undefined
 * behaviour, negative tokens). Sums saturate at INT64_MAX.
 */
static void
test_huge_token_counts_saturate(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_GOOGLE,
                     "{\"usageMetadata\":{"
                     "\"promptTokenCount\":9223372036854775807,"
                     "\"toolUsePromptTokenCount\":9223372036854775807,"
                     "\"candidatesTokenCount\":9223372036854775807,"
                     "\"thoughtsTokenCount\":1}}", &info), SP_OK);
    assert_true(info.usage.input_tokens == INT64_MAX);
    assert_true(info.usage.output_tokens == INT64_MAX);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_ANTHROPIC,
                     "{\"usage\":{\"input_tokens\":9223372036854775807,"
                     "\"cache_read_input_tokens\":9223372036854775807,"
                     "\"cache_creation_input_tokens\":1,"
                     "\"output_tokens\":5}}", &info), SP_OK);
    assert_true(info.usage.input_tokens == INT64_MAX);
    assert_true(info.usage.cached_tokens == INT64_MAX);
    assert_true(info.usage.cache_write_tokens == 1);

    /* a later delta merges into the saturated counts without overflow */
    assert_int_equal(event(SP_PROVIDER_ANTHROPIC, "message_delta",
                     "{\"type\":\"message_delta\",\"usage\":"
                     "{\"cache_creation_input_tokens\":9223372036854775807,"
                     "\"output_tokens\":9}}", &info), 0);
    assert_true(info.usage.input_tokens == INT64_MAX);
    assert_true(info.usage.cache_write_tokens == INT64_MAX);
    assert_true(info.usage.output_tokens == 9);
}


static void
test_cohere_embed_reads_meta_billed_units(void **state)
{
    sp_response_info_t  info;

    (void) state;

    /* v2 embed */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"id\":\"da6e531f-54c6-4a73-bf92-f60566d8d753\",\"embeddings\":"
        "{\"float\":[[0.016296387,-0.008354187,-0.04699707,1.1e-05]]},"
        "\"texts\":[\"hello\"],\"meta\":{\"api_version\":{\"version\":\"2\"},"
        "\"billed_units\":{\"input_tokens\":2}},\"response_type\":"
        "\"embeddings_by_type\"}", &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 2);
    assert_true(info.usage.output_tokens == 0);
    assert_true(info.output_bytes == 0);

    /* v1 embed, floats directly */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"id\":\"e1\",\"embeddings\":[[0.1,0.2],[0.3,0.4]],\"texts\":"
        "[\"a b c\",\"d e\"],\"meta\":{\"api_version\":{\"version\":\"1\"},"
        "\"billed_units\":{\"input_tokens\":7}},\"response_type\":"
        "\"embeddings_floats\"}", &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 7);

    /* embed-v4.0 images are billed in image tokens: counted as input */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"billed_units\":{\"input_tokens\":3,"
        "\"image_tokens\":1000}}}", &info), SP_OK);
    assert_true(info.usage.input_tokens == 1003);

    /* v1 chat reports output too */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"text\":\"hi\",\"meta\":{\"billed_units\":{\"input_tokens\":4,"
        "\"output_tokens\":9}}}", &info), SP_OK);
    assert_true(info.usage.input_tokens == 4);
    assert_true(info.usage.output_tokens == 9);

    /* v2 chat's usage wins over a meta */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"billed_units\":{\"input_tokens\":99}},\"usage\":"
        "{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":1}}}",
        &info), SP_OK);
    assert_true(info.usage.input_tokens == 5);

    /* nothing billed, or not an object: no usage */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"api_version\":{\"version\":\"2\"},\"billed_units\":{}}}",
        &info), SP_OK);
    assert_int_equal(info.has_usage, 0);
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"billed_units\":[1]}}", &info), SP_OK);
    assert_int_equal(info.has_usage, 0);
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"billed_units\":{\"input_tokens\":\"5\"}}}", &info),
        SP_OK);
    assert_int_equal(info.has_usage, 0);

    /* counts near INT64_MAX saturate */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"meta\":{\"billed_units\":{\"input_tokens\":9223372036854775807,"
        "\"image_tokens\":9223372036854775807}}}", &info), SP_OK);
    assert_true(info.usage.input_tokens == INT64_MAX);
}


static void
test_cohere_rerank_search_units_are_input(void **state)
{
    sp_response_info_t  info;
    sp_price_t          rerank;
    int64_t             cost;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_COHERE,
        "{\"results\":[{\"index\":3,\"relevance_score\":0.999071},"
        "{\"index\":4,\"relevance_score\":0.7867867}],\"id\":"
        "\"2d6c6dc3-2b4e-4a6d-b1a1-1d0e3ea0f0b4\",\"meta\":{\"api_version\":"
        "{\"version\":\"2\"},\"billed_units\":{\"search_units\":1}}}", &info),
        SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 1);
    assert_true(info.usage.output_tokens == 0);
    assert_int_equal(info.done, 1);

    /* $2.00 per 1,000 searches is 2000 USD per 1M units: $0.002 each */
    memset(&rerank, 0, sizeof(rerank));
    rerank.input = 2000LL * 1000000000LL;
    assert_int_equal(sp_cost_nano(&rerank, &info.usage, &cost), SP_OK);
    assert_true(cost == 2000000);
}


static void
test_google_embed_content_has_no_usage(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_GOOGLE,
        "{\"embedding\":{\"values\":[0.013168523,-0.008711934,-0.046782676,"
        "0.00069968984,-0.009518873]}}", &info), SP_OK);
    assert_int_equal(info.has_usage, 0);
    assert_true(info.usage.input_tokens == 0);
    assert_true(info.output_bytes == 0);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(SP_PROVIDER_GOOGLE,
        "{\"embeddings\":[{\"values\":[0.1]},{\"values\":[0.2]}]}", &info),
        SP_OK);
    assert_int_equal(info.has_usage, 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(
            test_anthropic_json_adds_cache_reads_and_writes_to_input),
        cmocka_unit_test(
            test_anthropic_stream_merges_start_and_cumulative_deltas),
        cmocka_unit_test(test_google_json_counts_thoughts_as_output),
        cmocka_unit_test(test_google_stream_last_usage_wins),
        cmocka_unit_test(test_google_json_array_stream),
        cmocka_unit_test(test_cohere_billed_units_win_over_tokens),
        cmocka_unit_test(test_cohere_embed_reads_meta_billed_units),
        cmocka_unit_test(test_cohere_rerank_search_units_are_input),
        cmocka_unit_test(test_google_embed_content_has_no_usage),
        cmocka_unit_test(test_cohere_stream_usage_in_message_end),
        cmocka_unit_test(test_provider_events_with_wrong_types_are_ignored),
        cmocka_unit_test(test_huge_token_counts_saturate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
