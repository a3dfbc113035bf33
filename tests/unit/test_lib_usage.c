/*
 * libspendpol response usage: OpenAI JSON bodies and streamed chunks.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_usage_internal.h"


static int
json_body(const char *body, sp_response_info_t *info)
{
    return sp_usage_from_json(SP_PROVIDER_OPENAI, body, strlen(body), info);
}


static int
event(const char *data, sp_response_info_t *info)
{
    return sp_usage_from_event(SP_PROVIDER_OPENAI, "", data, strlen(data),
                               info);
}


static void
test_usage_from_chat_completion_json(void **state)
{
    sp_response_info_t  info;
    const char         *body;

    (void) state;

    body = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
           "\"model\":\"gpt-4o-mini-2024-07-18\","
           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
           "\"content\":\"Hello there\"},\"finish_reason\":\"stop\"}],"
           "\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,"
           "\"total_tokens\":1500,\"prompt_tokens_details\":"
           "{\"cached_tokens\":256,\"audio_tokens\":0},"
           "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}";

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(body, &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 1000);
    assert_true(info.usage.output_tokens == 500);
    assert_true(info.usage.cached_tokens == 256);
    assert_true(info.usage.cache_write_tokens == 0);
    assert_string_equal(info.model, "gpt-4o-mini-2024-07-18");
    /* with usage reported the text is not read (it is for estimates) */
    assert_true(info.output_bytes == 0);
    assert_int_equal(info.done, 1);
}


/*
 * The chat completion fast path reads only "usage" and "model"; what it
 * does not handle goes to the whole-body parse, with the same result.
 */
static void
test_usage_chat_completion_fast_path_edges(void **state)
{
    sp_response_info_t  info;

    (void) state;

    /* the last of duplicate members wins, as in jansson */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":{\"prompt_tokens\":1},"
                               "\"model\":\"a\",\"choices\":[{\"message\":"
                               "{\"content\":\"}]\\\"{\"}}],"
                               "\"usage\":{\"prompt_tokens\":7,"
                               "\"completion_tokens\":3},\"model\":\"b\"}",
                               &info), SP_OK);
    assert_true(info.usage.input_tokens == 7);
    assert_true(info.usage.output_tokens == 3);
    assert_string_equal(info.model, "b");

    /* an escaped model name is unescaped */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"model\":\"gpt\\u002d4o\",\"usage\":"
                               "{\"prompt_tokens\":2}}", &info), SP_OK);
    assert_string_equal(info.model, "gpt-4o");
    assert_true(info.usage.input_tokens == 2);

    /* an escaped key: the whole body is parsed, usage still found */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"\\u0075sage\":{\"prompt_tokens\":4}}",
                               &info), SP_OK);
    assert_true(info.usage.input_tokens == 4);

    /* no usage: the text is counted for an estimate */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"choices\":[{\"message\":{\"content\":"
                               "\"12345\"}}]}", &info), SP_OK);
    assert_int_equal(info.has_usage, 0);
    assert_true(info.output_bytes == 5);

    /* not one object: refused as before */
    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":{\"prompt_tokens\":4}} x",
                               &info), SP_ERROR);
    assert_int_equal(info.has_usage, 0);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":{\"prompt_tokens\":4},}",
                               &info), SP_ERROR);
    assert_int_equal(info.has_usage, 0);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":{\"prompt_tokens\":4}",
                               &info), SP_ERROR);
    assert_int_equal(info.has_usage, 0);
}


static void
test_usage_from_responses_api_json(void **state)
{
    sp_response_info_t  info;
    const char         *body;

    (void) state;

    body = "{\"id\":\"resp_1\",\"object\":\"response\",\"model\":\"gpt-4.1\","
           "\"status\":\"completed\",\"output\":[{\"type\":\"message\","
           "\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
           "\"text\":\"Hi\"}]}],"
           "\"usage\":{\"input_tokens\":36,\"input_tokens_details\":"
           "{\"cached_tokens\":4},\"output_tokens\":87,"
           "\"output_tokens_details\":{\"reasoning_tokens\":0},"
           "\"total_tokens\":123}}";

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body(body, &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 36);
    assert_true(info.usage.output_tokens == 87);
    assert_true(info.usage.cached_tokens == 4);
    assert_string_equal(info.model, "gpt-4.1");
}


static void
test_usage_json_without_usage_or_invalid(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"error\":{\"message\":\"bad key\"}}",
                               &info), SP_OK);
    assert_int_equal(info.has_usage, 0);
    assert_true(info.usage.input_tokens == 0);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":null}", &info), SP_OK);
    assert_int_equal(info.has_usage, 0);

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("not json", &info), SP_ERROR);
    assert_int_equal(json_body("", &info), SP_ERROR);
    assert_int_equal(json_body("[1]", &info), SP_ERROR);
    assert_int_equal(json_body("{\"usage\":{", &info), SP_ERROR);
    assert_int_equal(info.has_usage, 0);
}


static void
test_usage_ignores_negative_and_wrong_typed_counts(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"usage\":{\"prompt_tokens\":-5,"
                               "\"completion_tokens\":\"7\","
                               "\"prompt_tokens_details\":{\"cached_tokens\":"
                               "1.5}}}", &info), SP_OK);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 0);
    assert_true(info.usage.output_tokens == 0);
    assert_true(info.usage.cached_tokens == 0);
}


static void
test_usage_from_stream_with_include_usage_final_chunk(void **state)
{
    static const char   *chunks[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"finish_reason\":null}],\"usage\":null}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],"
        "\"usage\":null}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
        "\"delta\":{\"content\":\" world\"},\"finish_reason\":null}],"
        "\"usage\":null}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,"
        "\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
    };
    sp_response_info_t   info;
    size_t               i;

    (void) state;

    memset(&info, 0, sizeof(info));

    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        assert_int_equal(event(chunks[i], &info), 0);
    }

    assert_int_equal(info.has_usage, 0);
    assert_int_equal(info.done, 0);
    assert_true(info.output_bytes == 11);
    assert_string_equal(info.model, "gpt-4o-mini-2024-07-18");

    /* the usage-only chunk the client did not ask for */
    assert_int_equal(event("{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
                           "\"model\":\"gpt-4o-mini-2024-07-18\","
                           "\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
                           "\"completion_tokens\":2,\"total_tokens\":11,"
                           "\"prompt_tokens_details\":{\"cached_tokens\":0}}}",
                           &info), 1);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 9);
    assert_true(info.usage.output_tokens == 2);
    assert_true(info.usage.cached_tokens == 0);

    assert_int_equal(event("[DONE]", &info), 0);
    assert_int_equal(info.done, 1);
    assert_true(info.usage.input_tokens == 9);
}


static void
test_usage_from_responses_api_stream(void **state)
{
    static const char   *events[] = {
        "{\"type\":\"response.created\",\"sequence_number\":0,"
        "\"response\":{\"id\":\"resp_1\",\"object\":\"response\","
        "\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\","
        "\"output\":[],\"usage\":null}}",
        "{\"type\":\"response.in_progress\",\"sequence_number\":1,"
        "\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\","
        "\"model\":\"gpt-4.1-2025-04-14\",\"usage\":null}}",
        "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,"
        "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
        "\"delta\":\"Hello\"}",
        "{\"type\":\"response.output_text.delta\",\"sequence_number\":5,"
        "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
        "\"delta\":\" world\"}",
        "{\"type\":\"response.output_text.done\",\"sequence_number\":6,"
        "\"text\":\"Hello world\"}",
    };
    sp_response_info_t   info;
    size_t               i;

    (void) state;

    memset(&info, 0, sizeof(info));

    for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        assert_int_equal(event(events[i], &info), 0);
    }

    assert_int_equal(info.has_usage, 0);
    assert_int_equal(info.done, 0);
    assert_string_equal(info.model, "gpt-4.1-2025-04-14");
    assert_true(info.output_bytes == 11);

    /* the client asked for this event: it is not usage-only */
    assert_int_equal(event("{\"type\":\"response.completed\","
                           "\"sequence_number\":9,\"response\":{\"id\":"
                           "\"resp_1\",\"status\":\"completed\",\"model\":"
                           "\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":"
                           "{\"input_tokens\":36,\"input_tokens_details\":"
                           "{\"cached_tokens\":4},\"output_tokens\":87,"
                           "\"total_tokens\":123}}}", &info), 0);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 36);
    assert_true(info.usage.output_tokens == 87);
    assert_true(info.usage.cached_tokens == 4);
    assert_int_equal(info.done, 1);

    /* a response cut at max_output_tokens ends the stream too */
    memset(&info, 0, sizeof(info));
    assert_int_equal(event("{\"type\":\"response.incomplete\","
                           "\"response\":{\"status\":\"incomplete\","
                           "\"usage\":{\"input_tokens\":5,"
                           "\"output_tokens\":16}}}", &info), 0);
    assert_int_equal(info.done, 1);
    assert_true(info.usage.output_tokens == 16);
}


static void
test_usage_chunk_with_choices_and_usage_is_not_usage_only(void **state)
{
    sp_response_info_t  info;

    (void) state;

    /* Azure and Mistral put usage on a chunk that still has choices */
    memset(&info, 0, sizeof(info));
    assert_int_equal(event("{\"choices\":[{\"delta\":{\"content\":\"x\"},"
                           "\"finish_reason\":\"stop\"}],\"usage\":"
                           "{\"prompt_tokens\":3,\"completion_tokens\":1}}",
                           &info), 0);
    assert_int_equal(info.has_usage, 1);
    assert_true(info.usage.input_tokens == 3);
    assert_true(info.output_bytes == 1);

    /* empty choices without usage: not a usage chunk */
    memset(&info, 0, sizeof(info));
    assert_int_equal(event("{\"choices\":[],\"usage\":null}", &info), 0);
    assert_int_equal(info.has_usage, 0);
}


static void
test_usage_model_is_first_seen(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(event("{\"model\":\"first\",\"choices\":[]}", &info),
                     0);
    assert_int_equal(event("{\"model\":\"second\",\"choices\":[]}", &info),
                     0);
    assert_string_equal(info.model, "first");
}


static void
test_usage_bad_events_are_ignored(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(event("", &info), 0);
    assert_int_equal(event("[DONE", &info), 0);
    assert_int_equal(event("[DONE] ", &info), 0);
    assert_int_equal(event("{\"choices\":", &info), 0);
    assert_int_equal(event("[]", &info), 0);
    assert_int_equal(event("42", &info), 0);
    assert_int_equal(event("{\"choices\":{\"delta\":1},\"usage\":[]}",
                           &info), 0);
    assert_int_equal(info.done, 0);
    assert_int_equal(info.has_usage, 0);

    /* [DONE] is matched on its exact bytes, not NUL-terminated */
    assert_int_equal(sp_usage_from_event(SP_PROVIDER_OPENAI, "", "[DONE]xyz",
                                         6, &info), 0);
    assert_int_equal(info.done, 1);
}


static void
test_usage_legacy_completions_text_counts_output(void **state)
{
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));
    assert_int_equal(json_body("{\"choices\":[{\"text\":\"abc\"},"
                               "{\"text\":\"de\"}]}", &info), SP_OK);
    assert_true(info.output_bytes == 5);
}


static void
test_stream_chunks_without_usage_are_counted_without_json(void **state)
{
    static const char  first[] =
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":"
        "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}";
    static const char  text[] =
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":"
        "\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"say \\\"hi\\\"\"}}],\"usage\":null}";
    static const char  last[] =
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":"
        "\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":"
        "{\"prompt_tokens\":7,\"completion_tokens\":3}}";
    sp_response_info_t  info;

    (void) state;

    memset(&info, 0, sizeof(info));

    assert_int_equal(sp_usage_from_event(SP_PROVIDER_OPENAI, "", first,
                                         sizeof(first) - 1, &info), 0);
    assert_string_equal(info.model, "gpt-4o-mini-2024-07-18");

    /* say "hi": 8 characters, the escaped quotes counted once each */
    assert_int_equal(sp_usage_from_event(SP_PROVIDER_OPENAI, "", text,
                                         sizeof(text) - 1, &info), 0);
    assert_true(info.output_bytes == 8);
    assert_false(info.has_usage);

    /* the usage chunk is still parsed, and still recognised as usage-only */
    assert_int_equal(sp_usage_from_event(SP_PROVIDER_OPENAI, "", last,
                                         sizeof(last) - 1, &info), 1);
    assert_true(info.has_usage);
    assert_true(info.usage.input_tokens == 7);
    assert_true(info.usage.output_tokens == 3);
}


/*
 * An embeddings answer (OpenAI, Azure OpenAI, Mistral) is mostly a
 * "data" array of floats: the fast path must step over it and read the
 * usage, and agree with the whole-body parse.
 */
static char *
embedding_body(int vectors, int dims, const char *model, int prompt_tokens)
{
    char    *body, *p;
    size_t   cap;
    int      v, d;
    double   x;

    cap = (size_t) vectors * dims * 24 + 1024;
    body = malloc(cap);
    assert_non_null(body);

    p = body;
    p += sprintf(p, "{\n  \"object\": \"list\",\n  \"data\": [");

    for (v = 0; v < vectors; v++) {
        p += sprintf(p, "%s\n    {\n      \"object\": \"embedding\",\n"
                     "      \"index\": %d,\n      \"embedding\": [",
                     v ? "," : "", v);

        for (d = 0; d < dims; d++) {
            /* negative, tiny (exponent) and ordinary values */
            x = ((d * 7919 + v * 104729) % 20001 - 10000) / 313370.0;

            if (d % 97 == 0) {
                p += sprintf(p, "%s%.8e", d ? ", " : "", x / 1000);

            } else {
                p += sprintf(p, "%s%.10f", d ? ", " : "", x);
            }
        }

        p += sprintf(p, "]\n    }");
    }

    p += sprintf(p, "\n  ],\n  \"model\": \"%s\",\n  \"usage\": {\n"
                 "    \"prompt_tokens\": %d,\n    \"total_tokens\": %d\n"
                 "  }\n}\n", model, prompt_tokens, prompt_tokens);

    assert_true((size_t) (p - body) < cap);

    return body;
}


static void
embedding_usage(sp_provider_e provider, const char *body,
    const char *model, int64_t input)
{
    sp_response_info_t  fast, tree;

    memset(&fast, 0, sizeof(fast));
    memset(&tree, 0, sizeof(tree));

    assert_int_equal(sp_usage_from_json(provider, body, strlen(body), &fast),
                     SP_OK);
    assert_int_equal(sp_usage_from_json_tree(provider, body, strlen(body),
                                             &tree), SP_OK);

    assert_int_equal(fast.has_usage, 1);
    assert_true(fast.usage.input_tokens == input);
    assert_true(fast.usage.output_tokens == 0);
    assert_true(fast.usage.cached_tokens == 0);
    assert_string_equal(fast.model, model);
    assert_true(fast.output_bytes == 0);
    assert_int_equal(fast.done, 1);

    assert_int_equal(tree.has_usage, 1);
    assert_true(tree.usage.input_tokens == input);
    assert_true(tree.usage.output_tokens == 0);
    assert_string_equal(tree.model, model);
    assert_true(tree.output_bytes == 0);
}


static void
test_usage_from_embeddings_json(void **state)
{
    char  *body;

    (void) state;

    /* text-embedding-3-small's 1,536 dimensions, as OpenAI indents them */
    body = embedding_body(1, 1536, "text-embedding-3-small", 8);
    assert_true(strlen(body) > 1536 * 12);
    embedding_usage(SP_PROVIDER_OPENAI, body, "text-embedding-3-small", 8);
    embedding_usage(SP_PROVIDER_AZURE, body, "text-embedding-3-small", 8);
    free(body);

    /* a batch of inputs */
    body = embedding_body(16, 1536, "text-embedding-3-large", 4242);
    embedding_usage(SP_PROVIDER_OPENAI, body, "text-embedding-3-large",
                    4242);
    free(body);

    /* Mistral adds an id and completion_tokens: 0 */
    embedding_usage(SP_PROVIDER_MISTRAL,
        "{\"id\":\"embd-aad6fc62b17349b192ef09225058bc45\",\"object\":"
        "\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":"
        "[-0.016632080078125,0.0701904296875,0.03143310546875,"
        "1.2e-05],\"index\":0}],\"model\":\"mistral-embed\",\"usage\":"
        "{\"prompt_tokens\":15,\"total_tokens\":15,\"completion_tokens\":0}}",
        "mistral-embed", 15);

    /* encoding_format "base64": one long string per vector */
    embedding_usage(SP_PROVIDER_OPENAI,
        "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":"
        "0,\"embedding\":\"AAAAP8l2Pr+\\/q0o9\"}],\"model\":"
        "\"text-embedding-ada-002\",\"usage\":{\"prompt_tokens\":3,"
        "\"total_tokens\":3}}", "text-embedding-ada-002", 3);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_stream_chunks_without_usage_are_counted_without_json),
        cmocka_unit_test(test_usage_from_chat_completion_json),
        cmocka_unit_test(test_usage_from_embeddings_json),
        cmocka_unit_test(test_usage_chat_completion_fast_path_edges),
        cmocka_unit_test(test_usage_from_responses_api_json),
        cmocka_unit_test(test_usage_json_without_usage_or_invalid),
        cmocka_unit_test(test_usage_ignores_negative_and_wrong_typed_counts),
        cmocka_unit_test(
            test_usage_from_stream_with_include_usage_final_chunk),
        cmocka_unit_test(test_usage_from_responses_api_stream),
        cmocka_unit_test(
            test_usage_chunk_with_choices_and_usage_is_not_usage_only),
        cmocka_unit_test(test_usage_model_is_first_seen),
        cmocka_unit_test(test_usage_bad_events_are_ignored),
        cmocka_unit_test(test_usage_legacy_completions_text_counts_output),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
