/*
 * libspendpol request parsing and the stream_options rewrite.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "sp_usage.h"


static void
parse_ok(const char *body, sp_request_info_t *info)
{
    char  err[256];

    err[0] = '\0';

    if (sp_request_parse(SP_PROVIDER_OPENAI, body, strlen(body), info, err,
                         sizeof(err))
        != SP_OK)
    {
        fail_msg("%s: %s", body, err);
    }
}


static void
parse_fails(const char *body, const char *message)
{
    sp_request_info_t  info;
    char               err[256];

    err[0] = '\0';

    if (sp_request_parse(SP_PROVIDER_OPENAI, body, strlen(body), &info, err,
                         sizeof(err))
        != SP_ERROR)
    {
        fail_msg("accepted: %s", body);
    }

    if (strstr(err, message) == NULL) {
        fail_msg("%s: message \"%s\" lacks \"%s\"", body, err, message);
    }
}


static void
test_request_reads_model_stream_and_max_tokens(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"model\":\"gpt-4o-mini\",\"stream\":true,\"max_tokens\":100,"
             "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}",
             &info);
    assert_string_equal(info.model, "gpt-4o-mini");
    assert_int_equal(info.stream, 1);
    assert_int_equal(info.include_usage, 0);
    assert_int_equal(info.has_stream_options, 0);
    assert_true(info.max_tokens == 100);
    assert_true(info.prompt_bytes == 5);

    parse_ok("{\"model\":\"o1\",\"stream\":false,"
             "\"max_completion_tokens\":2048}", &info);
    assert_string_equal(info.model, "o1");
    assert_int_equal(info.stream, 0);
    assert_true(info.max_tokens == 2048);

    parse_ok("{\"model\":\"gpt-4.1\",\"input\":\"abcdefgh\","
             "\"max_output_tokens\":7}", &info);
    assert_true(info.max_tokens == 7);
    assert_true(info.prompt_bytes == 8);

    /* max_tokens wins over max_completion_tokens */
    parse_ok("{\"max_completion_tokens\":5,\"max_tokens\":9}", &info);
    assert_true(info.max_tokens == 9);

    /* null means absent */
    parse_ok("{\"stream\":null,\"max_tokens\":null,"
             "\"max_completion_tokens\":3}", &info);
    assert_int_equal(info.stream, 0);
    assert_true(info.max_tokens == 3);

    parse_ok("{}", &info);
    assert_string_equal(info.model, "");
    assert_true(info.max_tokens == 0);
}


static void
test_request_reads_stream_options(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
             &info);
    assert_int_equal(info.has_stream_options, 1);
    assert_int_equal(info.include_usage, 1);

    parse_ok("{\"stream\":true,\"stream_options\":{\"include_usage\":false}}",
             &info);
    assert_int_equal(info.has_stream_options, 1);
    assert_int_equal(info.include_usage, 0);

    parse_ok("{\"stream\":true,\"stream_options\":{}}", &info);
    assert_int_equal(info.has_stream_options, 1);
    assert_int_equal(info.include_usage, 0);
}


static void
test_request_empty_body_is_valid(void **state)
{
    sp_request_info_t  info;
    char               err[64];

    (void) state;

    memset(&info, 0x55, sizeof(info));
    assert_int_equal(sp_request_parse(SP_PROVIDER_OPENAI, "", 0, &info, err,
                                      sizeof(err)), SP_OK);
    assert_string_equal(info.model, "");
    assert_int_equal(info.stream, 0);
}


static void
test_request_invalid_json_names_line_and_column(void **state)
{
    (void) state;

    parse_fails("{\"model\": gpt}", "line 1 column");
    parse_fails("{\"model\": gpt}", "not valid JSON");
    parse_fails("{\n  \"model\": \"a\",\n  \"stream\": tru\n}", "line 3");
    parse_fails("{\"model\":\"a\"", "not valid JSON");
    parse_fails("{\"model\":\"a\"} {}", "not valid JSON");
    parse_fails("   ", "not valid JSON");
}


static void
test_request_non_object_is_rejected(void **state)
{
    (void) state;

    parse_fails("[]", "must be a JSON object");
    parse_fails("[{\"model\":\"m\"}]", "must be a JSON object");
    /* scalars are refused by the JSON decoder itself */
    parse_fails("\"model\"", "line 1 column");
    parse_fails("42", "line 1 column");
    parse_fails("null", "line 1 column");
}


static void
test_request_wrong_types_are_named(void **state)
{
    (void) state;

    parse_fails("{\"model\":42}", "\"model\"");
    parse_fails("{\"model\":null}", "\"model\"");
    parse_fails("{\"model\":[\"a\"]}", "\"model\"");
    parse_fails("{\"stream\":\"true\"}", "\"stream\"");
    parse_fails("{\"stream\":1}", "\"stream\"");
    parse_fails("{\"max_tokens\":\"100\"}", "\"max_tokens\"");
    parse_fails("{\"max_tokens\":1.5}", "\"max_tokens\"");
    parse_fails("{\"max_tokens\":-1}", "\"max_tokens\"");
    parse_fails("{\"max_completion_tokens\":true}",
                "\"max_completion_tokens\"");
    parse_fails("{\"max_output_tokens\":{}}", "\"max_output_tokens\"");
}


static void
test_request_long_model_is_cut_to_field(void **state)
{
    sp_request_info_t  info;
    char               body[1024];

    (void) state;

    memcpy(body, "{\"model\":\"", 10);
    memset(body + 10, 'm', 600);
    memcpy(body + 610, "\"}", 3);

    parse_ok(body, &info);
    assert_int_equal(strlen(info.model), SP_FIELD_LEN - 1);
}


static void
test_request_prompt_bytes_skip_ids_and_images(void **state)
{
    sp_request_info_t  info;
    char               body[8192];
    int                i, n;

    (void) state;

    parse_ok("{\"messages\":[{\"role\":\"system\",\"content\":\"abcd\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
             "\"text\":\"efgh\"},{\"type\":\"image_url\",\"image_url\":"
             "{\"url\":\"data:image/png;base64,AAAA\"}}]}],"
             "\"model\":\"long-model-name-not-prompt\"}", &info);
    assert_true(info.prompt_bytes == 8);

    /* hostile nesting: bounded, no crash */
    n = 0;
    n += sprintf(body + n, "{\"messages\":");

    for (i = 0; i < 1000; i++) {
        body[n++] = '[';
    }

    n += sprintf(body + n, "\"x\"");

    for (i = 0; i < 1000; i++) {
        body[n++] = ']';
    }

    body[n++] = '}';
    body[n] = '\0';

    {
        sp_request_info_t  deep;
        char               err[256];

        /* jansson may refuse the depth; either way, no crash */
        (void) sp_request_parse(SP_PROVIDER_OPENAI, body, (size_t) n, &deep,
                                err, sizeof(err));
    }
}


static void
test_tokens_estimate_rounds_up_quarters(void **state)
{
    (void) state;

    assert_true(sp_tokens_estimate(0) == 0);
    assert_true(sp_tokens_estimate(-5) == 0);
    assert_true(sp_tokens_estimate(1) == 1);
    assert_true(sp_tokens_estimate(4) == 1);
    assert_true(sp_tokens_estimate(5) == 2);
    assert_true(sp_tokens_estimate(4000) == 1000);
    assert_true(sp_tokens_estimate(INT64_MAX) == INT64_MAX / 4 + 1);
    assert_true(sp_tokens_estimate(INT64_MAX - 3) == INT64_MAX / 4);
}


static void
test_provider_names_round_trip(void **state)
{
    static const char  *names[] = {
        "openai", "anthropic", "google", "azure", "cohere", "mistral"
    };
    size_t              i;

    (void) state;

    for (i = 0; i < 6; i++) {
        sp_provider_e  p = sp_provider_from_name(names[i], strlen(names[i]));

        assert_int_not_equal(p, SP_PROVIDER_UNKNOWN);
        assert_string_equal(sp_provider_name(p), names[i]);
    }

    assert_int_equal(sp_provider_from_name("openai", 5), SP_PROVIDER_UNKNOWN);
    assert_int_equal(sp_provider_from_name("OpenAI", 6), SP_PROVIDER_UNKNOWN);
    assert_int_equal(sp_provider_from_name("", 0), SP_PROVIDER_UNKNOWN);
    assert_int_equal(sp_provider_from_name("openaix", 7),
                     SP_PROVIDER_UNKNOWN);
    assert_string_equal(sp_provider_name(SP_PROVIDER_UNKNOWN), "");
    assert_string_equal(sp_provider_name((sp_provider_e) 99), "");
}


static void
path_model(sp_provider_e provider, const char *path, const char *model,
    int stream)
{
    sp_request_info_t  info;
    char              *copy;
    size_t             len;

    /* an exact-size heap copy without NUL: ASan sees any over-read */
    len = strlen(path);
    copy = malloc(len ? len : 1);
    memcpy(copy, path, len);

    memset(&info, 0, sizeof(info));
    sp_request_from_path(provider, copy, len, &info);

    if (strcmp(info.model, model) != 0 || info.stream != stream) {
        fail_msg("%s: model \"%s\" stream %d, expected \"%s\" %d", path,
                 info.model, info.stream, model, stream);
    }

    free(copy);
}


static void
test_request_model_and_stream_from_path(void **state)
{
    sp_request_info_t  info;

    (void) state;

    path_model(SP_PROVIDER_GOOGLE,
               "/v1beta/models/gemini-2.0-flash:generateContent",
               "gemini-2.0-flash", 0);
    path_model(SP_PROVIDER_GOOGLE,
               "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
               "?alt=sse", "gemini-2.0-flash", 1);
    path_model(SP_PROVIDER_GOOGLE,
               "/v1/google/v1beta/models/gemini-pro:streamGenerateContent",
               "gemini-pro", 1);
    path_model(SP_PROVIDER_GOOGLE, "/v1beta/models/gemini-pro", "", 0);
    path_model(SP_PROVIDER_GOOGLE, "/v1beta/models/:generateContent", "", 0);
    path_model(SP_PROVIDER_GOOGLE, "/v1beta/models/", "", 0);
    path_model(SP_PROVIDER_GOOGLE, "/v1beta/models", "", 0);
    path_model(SP_PROVIDER_GOOGLE, "/v1beta/x?q=/models/m:generateContent",
               "", 0);
    path_model(SP_PROVIDER_GOOGLE, "/models/m:streamGenerate", "m", 0);
    path_model(SP_PROVIDER_GOOGLE, "", "", 0);

    path_model(SP_PROVIDER_AZURE,
               "/openai/deployments/gpt4o-prod/chat/completions"
               "?api-version=2024-10-21", "gpt4o-prod", 0);
    path_model(SP_PROVIDER_AZURE, "/openai/deployments/dep?x=1", "dep", 0);
    path_model(SP_PROVIDER_AZURE, "/openai/deployments/", "", 0);
    path_model(SP_PROVIDER_AZURE, "/openai/deployment/x/chat", "", 0);

    path_model(SP_PROVIDER_OPENAI, "/v1/models/gpt-4o:x", "", 0);

    /* the body's model wins */
    memset(&info, 0, sizeof(info));
    strcpy(info.model, "from-body");
    sp_request_from_path(SP_PROVIDER_AZURE, "/openai/deployments/dep/chat",
                         28, &info);
    assert_string_equal(info.model, "from-body");
}


/* ---- stream usage rewrite -------------------------------------------- */


static void
rewrite_ok(const char *body, const char *expect)
{
    size_t   len, n;
    char    *out;
    json_t  *root, *v;

    len = strlen(body);
    out = malloc(len + 64);
    n = sp_request_add_stream_usage(body, len, out, len + 64);

    if (n == 0) {
        fail_msg("no rewrite of %s", body);
    }

    if (strlen(expect) != n || memcmp(out, expect, n) != 0) {
        fail_msg("%s became %.*s, expected %s", body, (int) n, out, expect);
    }

    root = json_loadb(out, n, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(root);
    v = json_object_get(json_object_get(root, "stream_options"),
                        "include_usage");
    assert_true(json_is_true(v));
    json_decref(root);
    free(out);
}


static void
test_stream_usage_is_added_after_opening_brace(void **state)
{
    (void) state;

    rewrite_ok("{}", "{\"stream_options\":{\"include_usage\":true}}");
    rewrite_ok("{ }", "{ \"stream_options\":{\"include_usage\":true}}");
    rewrite_ok("{\"model\":\"gpt-4o\",\"stream\":true}",
               "{\"stream_options\":{\"include_usage\":true},"
               "\"model\":\"gpt-4o\",\"stream\":true}");
    rewrite_ok("{ \"model\":\"m\"}",
               "{ \"stream_options\":{\"include_usage\":true},"
               "\"model\":\"m\"}");
    rewrite_ok("\n\t {\n  \"model\": \"m\"\n}\n",
               "\n\t {\n  \"stream_options\":{\"include_usage\":true},"
               "\"model\": \"m\"\n}\n");
}


static void
test_stream_usage_not_applied_to_non_objects(void **state)
{
    char  out[256];

    (void) state;

    assert_int_equal(sp_request_add_stream_usage("", 0, out, sizeof(out)),
                     0);
    assert_int_equal(sp_request_add_stream_usage("  ", 2, out, sizeof(out)),
                     0);
    assert_int_equal(sp_request_add_stream_usage("[{}]", 4, out,
                                                 sizeof(out)), 0);
    assert_int_equal(sp_request_add_stream_usage("x{}", 3, out,
                                                 sizeof(out)), 0);
}


static void
test_stream_usage_too_small_buffer_returns_0(void **state)
{
    static const char  *bodies[] = { "{}", "{\"model\":\"m\"}", " { \"a\":1}" };
    size_t              i, len, need, outlen;
    char               *big, *out;

    (void) state;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        len = strlen(bodies[i]);
        big = malloc(len + 64);
        need = sp_request_add_stream_usage(bodies[i], len, big, len + 64);
        assert_true(need > len);

        /* exact-size heap buffers: ASan sees any write past them */
        for (outlen = 0; outlen < need; outlen++) {
            out = malloc(outlen ? outlen : 1);
            assert_int_equal(sp_request_add_stream_usage(bodies[i], len, out,
                                                         outlen), 0);
            free(out);
        }

        free(big);
    }
}


static void
test_stream_usage_is_forced_when_client_said_false(void **state)
{
    static const char   body[] =
        "{\"model\":\"gpt-4o\",\"stream\":true,"
        "\"stream_options\":{\"include_usage\":false},\"n\":1}";
    char                out[256];
    size_t              n;
    sp_request_info_t   info;
    char                err[128];

    (void) state;

    n = sp_request_set_stream_usage(body, sizeof(body) - 1, out,
                                    sizeof(out));
    assert_true(n > 0);

    assert_int_equal(sp_request_parse(SP_PROVIDER_OPENAI, out, n, &info, err,
                                      sizeof(err)), SP_OK);
    assert_true(info.include_usage);
    assert_true(info.stream);
    assert_string_equal(info.model, "gpt-4o");

    /* the client's other fields and their order are kept */
    out[n] = '\0';
    assert_non_null(strstr(out, "\"n\":1"));
    assert_true(strstr(out, "\"model\"") < strstr(out, "\"n\""));

    /* stream_options: null becomes an object */
    n = sp_request_set_stream_usage("{\"stream_options\":null}", 23, out,
                                    sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");

    /* too small, or not an object: 0 */
    assert_int_equal(sp_request_set_stream_usage(body, sizeof(body) - 1, out,
                                                 10), 0);
    assert_int_equal(sp_request_set_stream_usage("[1]", 3, out,
                                                 sizeof(out)), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_request_reads_model_stream_and_max_tokens),
        cmocka_unit_test(test_request_reads_stream_options),
        cmocka_unit_test(test_request_empty_body_is_valid),
        cmocka_unit_test(test_request_invalid_json_names_line_and_column),
        cmocka_unit_test(test_request_non_object_is_rejected),
        cmocka_unit_test(test_request_wrong_types_are_named),
        cmocka_unit_test(test_request_long_model_is_cut_to_field),
        cmocka_unit_test(test_request_prompt_bytes_skip_ids_and_images),
        cmocka_unit_test(test_tokens_estimate_rounds_up_quarters),
        cmocka_unit_test(test_provider_names_round_trip),
        cmocka_unit_test(test_request_model_and_stream_from_path),
        cmocka_unit_test(test_stream_usage_is_added_after_opening_brace),
        cmocka_unit_test(test_stream_usage_not_applied_to_non_objects),
        cmocka_unit_test(test_stream_usage_too_small_buffer_returns_0),
        cmocka_unit_test(test_stream_usage_is_forced_when_client_said_false),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
