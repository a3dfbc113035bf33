/*
 * libspendpol request parsing, the exact prompt counts of OpenAI's
 * models, and the stream_options rewrite.
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

    if (info.error_code == NULL
        || (strcmp(info.error_code, "invalid_json") != 0
            && strcmp(info.error_code, "invalid_field") != 0
            && strcmp(info.error_code, "duplicate_field") != 0))
    {
        fail_msg("%s: error code %s", body,
                 info.error_code ? info.error_code : "(null)");
    }
}


/* refused with this code, and a message holding each of two parts */
static void
parse_fails_code(const char *body, const char *code, const char *message,
    const char *message2)
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

    if (info.error_code == NULL || strcmp(info.error_code, code) != 0) {
        fail_msg("%s: code %s, expected %s (%s)", body,
                 info.error_code ? info.error_code : "(null)", code, err);
    }

    if (strstr(err, message) == NULL
        || (message2 != NULL && strstr(err, message2) == NULL))
    {
        fail_msg("%s: message \"%s\" lacks \"%s\" or \"%s\"", body, err,
                 message, message2 ? message2 : "");
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

    /* Azure runs the deployment the path names: a body's model loses */
    memset(&info, 0, sizeof(info));
    strcpy(info.model, "from-body");
    sp_request_from_path(SP_PROVIDER_AZURE, "/openai/deployments/dep/chat",
                         28, &info);
    assert_string_equal(info.model, "dep");

    /* an Azure path without a deployment (the v1 API) leaves the body's */
    memset(&info, 0, sizeof(info));
    strcpy(info.model, "from-body");
    sp_request_from_path(SP_PROVIDER_AZURE, "/openai/v1/chat/completions",
                         27, &info);
    assert_string_equal(info.model, "from-body");

    /* so does Google, where the path names the model that runs */
    memset(&info, 0, sizeof(info));
    strcpy(info.model, "gemini-2.5-flash-lite");
    sp_request_from_path(SP_PROVIDER_GOOGLE,
                         "/v1beta/models/gemini-2.5-pro:generateContent", 45,
                         &info);
    assert_string_equal(info.model, "gemini-2.5-pro");

    memset(&info, 0, sizeof(info));
    strcpy(info.model, "models/gemini-embedding-001");
    sp_request_from_path(SP_PROVIDER_GOOGLE,
                         "/v1beta/models/gemini-embedding-001:embedContent",
                         48, &info);
    assert_string_equal(info.model, "gemini-embedding-001");

    /* a Google path without a model leaves the body's */
    memset(&info, 0, sizeof(info));
    strcpy(info.model, "from-body");
    sp_request_from_path(SP_PROVIDER_GOOGLE, "/v1beta/files", 13, &info);
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


/* ---- issue 9: validation, choices, media ----------------------------- */


static void
test_request_error_codes_name_the_kind(void **state)
{
    (void) state;

    parse_fails_code("{\"model\": gpt}", "invalid_json", "not valid JSON",
                     "line 1 column");
    parse_fails_code("[1]", "invalid_json", "must be a JSON object", NULL);
    parse_fails_code("{\"model\":42}", "invalid_field", "\"model\"",
                     "must be a string, not an integer");
    parse_fails_code("{\"stream\":\"yes\"}", "invalid_field", "\"stream\"",
                     "must be a boolean, not a string");
}


static void
test_request_token_limits_are_bounded_integers(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"max_tokens\":100000000}", &info);
    assert_true(info.max_tokens == SP_REQUEST_MAX_OUTPUT_TOKENS);
    parse_ok("{\"max_tokens\":0}", &info);
    assert_true(info.max_tokens == 0);

    parse_fails_code("{\"max_tokens\":100000001}", "invalid_field",
                     "field \"max_tokens\" must be an integer from 0 to "
                     "100000000", "not 100000001");
    parse_fails_code("{\"max_tokens\":-1}", "invalid_field",
                     "field \"max_tokens\"", "not -1");
    parse_fails_code("{\"max_tokens\":9223372036854775807}", "invalid_field",
                     "field \"max_tokens\"", "not 9223372036854775807");
    parse_fails_code("{\"max_tokens\":-9223372036854775808}",
                     "invalid_field", "field \"max_tokens\"",
                     "not -9223372036854775808");
    parse_fails_code("{\"max_tokens\":16.0}", "invalid_field",
                     "field \"max_tokens\"", "not a number with a fraction");
    parse_fails_code("{\"max_tokens\":1e3}", "invalid_field",
                     "field \"max_tokens\"", "not a number with a fraction");
    parse_fails_code("{\"max_tokens\":\"16\"}", "invalid_field",
                     "field \"max_tokens\"", "not a string");
    parse_fails_code("{\"max_tokens\":false}", "invalid_field",
                     "field \"max_tokens\"", "not a boolean");
    parse_fails_code("{\"max_completion_tokens\":[1]}", "invalid_field",
                     "field \"max_completion_tokens\"", "not an array");
    parse_fails_code("{\"max_output_tokens\":200000000}", "invalid_field",
                     "field \"max_output_tokens\"", "from 0 to 100000000");

    /* every spelling is checked, not only the first one found */
    parse_fails_code("{\"max_tokens\":9,\"max_completion_tokens\":\"x\"}",
                     "invalid_field", "field \"max_completion_tokens\"",
                     NULL);
}


static void
test_request_largest_output_limit_wins(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"max_tokens\":5,\"max_completion_tokens\":9}", &info);
    assert_true(info.max_tokens == 9);
    parse_ok("{\"max_output_tokens\":700,\"max_tokens\":5}", &info);
    assert_true(info.max_tokens == 700);
}


static void
test_request_gemini_generation_config_is_read_and_checked(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}],"
             "\"generationConfig\":{\"maxOutputTokens\":512,"
             "\"candidateCount\":4,\"temperature\":0.5}}", &info);
    assert_true(info.max_tokens == 512);
    assert_true(info.choices == 4);
    assert_true(info.prompt_bytes == 2);

    /* protobuf JSON takes the field names as written in the proto too */
    parse_ok("{\"generation_config\":{\"max_output_tokens\":64,"
             "\"candidate_count\":2}}", &info);
    assert_true(info.max_tokens == 64);
    assert_true(info.choices == 2);

    parse_fails_code("{\"generationConfig\":{\"maxOutputTokens\":\"64\"}}",
                     "invalid_field",
                     "field \"generationConfig.maxOutputTokens\"",
                     "not a string");
    parse_fails_code("{\"generationConfig\":{\"maxOutputTokens\":"
                     "4611686018427387904}}", "invalid_field",
                     "field \"generationConfig.maxOutputTokens\"",
                     "from 0 to 100000000");
    parse_fails_code("{\"generation_config\":{\"candidate_count\":0}}",
                     "invalid_field",
                     "field \"generation_config.candidate_count\"",
                     "from 1 to 128");
    parse_fails_code("{\"generationConfig\":{\"candidateCount\":1000}}",
                     "invalid_field", "field \"generationConfig."
                     "candidateCount\"", "not 1000");
}


static void
test_request_choices_take_the_larger_of_n_and_best_of(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_ok("{\"model\":\"m\"}", &info);
    assert_true(info.choices == 1);
    parse_ok("{\"n\":3}", &info);
    assert_true(info.choices == 3);
    parse_ok("{\"n\":2,\"best_of\":5}", &info);
    assert_true(info.choices == 5);
    parse_ok("{\"best_of\":2,\"n\":7}", &info);
    assert_true(info.choices == 7);
    parse_ok("{\"n\":128,\"best_of\":null}", &info);
    assert_true(info.choices == SP_REQUEST_MAX_CHOICES);

    parse_fails_code("{\"n\":0}", "invalid_field",
                     "field \"n\" must be an integer from 1 to 128", "not 0");
    parse_fails_code("{\"n\":129}", "invalid_field", "field \"n\"",
                     "not 129");
    parse_fails_code("{\"n\":2.5}", "invalid_field", "field \"n\"",
                     "a number with a fraction");
    parse_fails_code("{\"best_of\":\"3\"}", "invalid_field",
                     "field \"best_of\"", "not a string");
    parse_fails_code("{\"best_of\":true}", "invalid_field",
                     "field \"best_of\"", "not a boolean");
}


static void
test_request_number_outside_int64_names_the_field(void **state)
{
    (void) state;

    parse_fails_code("{\"max_tokens\":9223372036854775808}", "invalid_field",
                     "field \"max_tokens\" is a number too large",
                     "64-bit integer");
    parse_fails_code("{\"model\":\"m\", \"n\" :\n -99999999999999999999 }",
                     "invalid_field", "field \"n\" is a number too large",
                     NULL);
    parse_fails_code("{\"generationConfig\":{\"maxOutputTokens\":"
                     "18446744073709551616}}", "invalid_field",
                     "field \"maxOutputTokens\" is a number too large",
                     NULL);
    /* any field: the gateway cannot read the body as sent */
    parse_fails_code("{\"temperature\":1e400}", "invalid_field",
                     "field \"temperature\"", NULL);
    /* a key with an escaped quote, printed without it */
    parse_fails_code("{\"a\\\"b\":99999999999999999999}", "invalid_field",
                     "field \"a??b\"", NULL);
    /* in an array there is no field name: the position instead */
    parse_fails_code("{\"input\":[1,99999999999999999999]}", "invalid_field",
                     "number too large", "line 1 column");
    parse_fails_code("99999999999999999999", "invalid_field",
                     "number too large", "line 1 column");
}


static void
test_request_duplicate_keys_are_refused(void **state)
{
    (void) state;

    parse_fails_code("{\"model\":\"gpt-4o-mini\",\"model\":\"o1\"}",
                     "duplicate_field", "field \"model\" appears twice",
                     "send each field once");
    parse_fails_code("{\"max_tokens\":1,\"stream\":true,\"max_tokens\":900}",
                     "duplicate_field", "field \"max_tokens\"", NULL);
    parse_fails_code("{\"messages\":[{\"role\":\"user\",\"content\":\"a\","
                     "\"content\":\"b\"}]}", "duplicate_field",
                     "field \"content\"", NULL);
    parse_fails_code("{\"generationConfig\":{\"maxOutputTokens\":1,"
                     "\"maxOutputTokens\":2}}", "duplicate_field",
                     "field \"maxOutputTokens\"", NULL);
}


static void
test_request_model_with_control_characters_is_refused(void **state)
{
    sp_request_info_t  info;

    (void) state;

    parse_fails_code("{\"model\":\"gpt-4o-mini\\r\\nX-Injected: yes\"}",
                     "invalid_field",
                     "field \"model\" contains a control character", NULL);
    parse_fails_code("{\"model\":\"a\\tb\"}", "invalid_field",
                     "field \"model\" contains a control character", NULL);
    parse_fails_code("{\"model\":\"a\\u007f\"}", "invalid_field",
                     "field \"model\" contains a control character", NULL);
    parse_fails_code("{\"model\":\"\\u001b[31m\"}", "invalid_field",
                     "field \"model\" contains a control character", NULL);
    /* a NUL is named like any other control character */
    parse_fails_code("{\"model\":\"a\\u0000b\"}", "invalid_field",
                     "field \"model\" contains a control character", NULL);

    parse_ok("{\"model\":\"mod\\u00e8le-2 ~v1\"}", &info);
    assert_string_equal(info.model, "mod\xc3\xa8le-2 ~v1");
}


/* a JSON string of n base64-like bytes */
static char *
blob(size_t n)
{
    char  *s;

    s = malloc(n + 1);
    assert_non_null(s);
    memset(s, 'A', n);
    s[n] = '\0';

    return s;
}


static void
media(const char *body, int64_t text, int64_t media_tokens)
{
    sp_request_info_t  info;

    parse_ok(body, &info);

    if (info.prompt_bytes != text || info.media_tokens != media_tokens) {
        fail_msg("%.200s: text %lld media %lld, expected %lld %lld", body,
                 (long long) info.prompt_bytes,
                 (long long) info.media_tokens, (long long) text,
                 (long long) media_tokens);
    }
}


static void
test_request_images_are_charged_a_fixed_worst_case(void **state)
{
    char  body[512];

    (void) state;

    /* OpenAI chat, two images; the URL is not text */
    media("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
          "\"text\":\"abcd\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"data:image/png;base64,AAAA\",\"detail\":\"high\"}},"
          "{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"https://x/y.png\"}}]}]}", 4, 2 * SP_REQUEST_IMAGE_TOKENS);

    /* Responses API */
    media("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"input_text\",\"text\":\"ab\"},{\"type\":\"input_image\","
          "\"image_url\":\"data:image/jpeg;base64,AAAAAAAA\"}]}]}", 2,
          SP_REQUEST_IMAGE_TOKENS);

    /* Anthropic, also inside a tool result */
    media("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"image\",\"source\":{\"type\":\"base64\",\"media_type\":"
          "\"image/png\",\"data\":\"AAAAAAAAAAAA\"}},{\"type\":"
          "\"tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":"
          "\"image\",\"source\":{\"type\":\"url\",\"url\":\"u\"}}]}]}]}",
          /* "type" values are not text */
          (int64_t) (strlen("image/png") + strlen("t") + strlen("u")),
          2 * SP_REQUEST_IMAGE_TOKENS);

    /* Gemini: inline_data and fileData with an image mime type */
    media("{\"contents\":[{\"parts\":[{\"inline_data\":{\"mime_type\":"
          "\"image/png\",\"data\":\"AAAAAAAA\"}},{\"fileData\":{\"mimeType\":"
          "\"image/webp\",\"fileUri\":\"gs://b/i\"}},{\"text\":\"hey\"}]}]}",
          3, 2 * SP_REQUEST_IMAGE_TOKENS);

    /* Cohere embed: images as data URIs, and v2 inputs */
    snprintf(body, sizeof(body), "{\"model\":\"embed-v4.0\",\"images\":"
             "[\"data:image/png;base64,AAAA\",\"data:image/png;base64,BB\"],"
             "\"inputs\":[{\"content\":[{\"type\":\"text\",\"text\":\"xy\"},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:x\"}}]}]"
             "}");
    media(body, 2, 3 * SP_REQUEST_IMAGE_TOKENS);

    /* an image's charge covers gpt-4o-mini's 2,833 + 8 x 5,667 tokens */
    assert_true(SP_REQUEST_IMAGE_TOKENS >= 2833 + 8 * 5667);
}


static void
test_request_files_are_charged_by_their_bytes(void **state)
{
    char  *big, body[65536];

    (void) state;

    big = blob(30000);

    /* OpenAI chat: input_audio and a file; their data is not text */
    media("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"input_audio\",\"input_audio\":{\"data\":\"AAAA\",\"format\":"
          "\"wav\"}}]}]}", 0, SP_REQUEST_FILE_TOKENS);

    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"input_audio\",\"input_audio\":"
             "{\"data\":\"%s\",\"format\":\"mp3\"}},{\"type\":\"file\","
             "\"file\":{\"file_data\":\"data:application/pdf;base64,%s\","
             "\"filename\":\"a.pdf\"}}]}]}", big, big);
    media(body, (int64_t) strlen("a.pdf"), 30000 + 30000 + 28);

    /* a "file" part without its file: charged by reference, whatever
       file_data the body holds elsewhere */
    snprintf(body, sizeof(body), "{\"file_data\":\"%s\",\"messages\":"
             "[{\"role\":\"user\",\"content\":[{\"type\":\"file\"}]}]}",
             big);
    media(body, 0, SP_REQUEST_FILE_TOKENS);

    /* Responses: input_file by data and by id */
    snprintf(body, sizeof(body), "{\"input\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"input_file\",\"file_data\":\"%s\"},"
             "{\"type\":\"input_file\",\"file_id\":\"file-1\"}]}]}", big);
    media(body, 6, 30000 + SP_REQUEST_FILE_TOKENS);

    /* Anthropic documents: base64, plain text, by URL */
    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"document\",\"source\":{\"type\":"
             "\"base64\",\"media_type\":\"application/pdf\",\"data\":"
             "\"%s\"}},{\"type\":\"document\",\"source\":{\"type\":\"text\","
             "\"media_type\":\"text/plain\",\"data\":\"short\"}},"
             "{\"type\":\"document\",\"source\":{\"type\":\"url\",\"url\":"
             "\"https://x\"}}]}]}", big);
    media(body, (int64_t) (strlen("application/pdf") + strlen("text/plain")
                           + strlen("https://x")),
          30000 + 2 * SP_REQUEST_FILE_TOKENS);

    /* Gemini: pdf and audio inline, video by URI */
    snprintf(body, sizeof(body), "{\"contents\":[{\"parts\":[{\"inlineData\":"
             "{\"mimeType\":\"application/pdf\",\"data\":\"%s\"}},"
             "{\"inline_data\":{\"mime_type\":\"audio/mp3\",\"data\":\"AA\"}},"
             "{\"file_data\":{\"mime_type\":\"video/mp4\",\"file_uri\":"
             "\"gs://v\"}}]}]}", big);
    media(body, 0, 30000 + 2 * SP_REQUEST_FILE_TOKENS);

    /* Mistral: audio as a string, a document by URL */
    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"input_audio\",\"input_audio\":\"%s\"},"
             "{\"type\":\"document_url\",\"document_url\":\"https://d\"}]}]}",
             big);
    media(body, (int64_t) strlen("https://d"),
          30000 + SP_REQUEST_FILE_TOKENS);

    free(big);
}


static void
test_request_new_prompt_fields_are_text(void **state)
{
    (void) state;

    /* Responses instructions, Gemini embedContent, Cohere embed/rerank */
    media("{\"instructions\":\"abc\",\"input\":\"de\"}", 5, 0);
    media("{\"model\":\"models/text-embedding-004\",\"content\":{\"parts\":"
          "[{\"text\":\"abcd\"}]}}", 4, 0);
    media("{\"texts\":[\"ab\",\"cd\"],\"input_type\":\"search_document\"}",
          4, 0);
    media("{\"query\":\"abc\",\"documents\":[\"d1\",{\"text\":\"d22\"}],"
          "\"top_n\":3}", 8, 0);
    media("{\"prompt\":\"def f(\",\"suffix\":\"return\"}", 12, 0);
    media("{\"message\":\"hi\",\"preamble\":\"be nice\"}", 9, 0);
    media("{\"system_instruction\":{\"parts\":[{\"text\":\"ab\"}]}}", 2, 0);
    /* the model, options and ids are not */
    media("{\"model\":\"text-embedding-3-small\",\"encoding_format\":"
          "\"float\",\"dimensions\":256,\"user\":\"u\",\"input\":\"x\"}",
          1, 0);
}


static void
test_request_token_ids_count_as_tokens(void **state)
{
    (void) state;

    /* one token id = one estimated token = 4 bytes */
    media("{\"input\":[[1,2,3],[4]]}", 16, 0);
    media("{\"prompt\":[50256,1]}", 8, 0);
    media("{\"input\":[1.5,true,null]}", 0, 0);
    /* integers elsewhere are not token ids */
    media("{\"messages\":[{\"role\":\"user\",\"content\":\"ab\",\"x\":7}]}",
          2, 0);
}


static void
test_request_schemas_count_their_property_names(void **state)
{
    sp_request_info_t  info;
    char              *name, body[4096];

    (void) state;

    name = blob(1000);
    snprintf(body, sizeof(body), "{\"tools\":[{\"type\":\"function\","
             "\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
             "\"object\",\"properties\":{\"%s\":{\"type\":\"string\"}}}}}]}",
             name);
    parse_ok(body, &info);
    /* the model reads the 1000-byte property name */
    assert_true(info.prompt_bytes >= 1000);
    assert_true(info.prompt_bytes < 1100);
    assert_true(info.media_tokens == 0);

    snprintf(body, sizeof(body), "{\"response_format\":{\"type\":"
             "\"json_schema\",\"json_schema\":{\"schema\":{\"properties\":"
             "{\"%s\":{}}}}}}", name);
    parse_ok(body, &info);
    assert_true(info.prompt_bytes >= 1000);

    /* in a schema, a "type" of image is a word, not an image */
    parse_ok("{\"tools\":[{\"type\":\"image\",\"data\":\"abc\"}]}", &info);
    assert_true(info.media_tokens == 0);
    assert_true(info.prompt_bytes == (int64_t) strlen("typeimagedataabc"));

    free(name);
}


static void
test_request_worst_case_multiplies_and_saturates(void **state)
{
    sp_request_info_t  info;
    int64_t            prompt, output;

    (void) state;

    parse_ok("{\"n\":3,\"max_tokens\":100,\"messages\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"text\",\"text\":\"abcdefgh\"},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}}]}]}",
             &info);
    sp_request_worst_case(&info, 16384, &prompt, &output);
    assert_true(prompt == 8 + SP_REQUEST_FRAMING_TOKENS
                          + SP_REQUEST_IMAGE_TOKENS);
    assert_true(output == 300);

    /* no limit in the request: the model's, per choice */
    parse_ok("{\"best_of\":2,\"prompt\":\"x\"}", &info);
    sp_request_worst_case(&info, 16384, &prompt, &output);
    assert_true(output == 32768);
    assert_true(prompt == 1 + SP_REQUEST_FRAMING_TOKENS);

    parse_ok("{}", &info);
    sp_request_worst_case(&info, 0, &prompt, &output);
    assert_true(output == 0);
    assert_true(prompt == SP_REQUEST_FRAMING_TOKENS);

    /* the largest values the parser lets through cannot overflow */
    parse_ok("{\"n\":128,\"max_tokens\":100000000}", &info);
    sp_request_worst_case(&info, 0, &prompt, &output);
    assert_true(output == 12800000000LL);

    /* and sums near the top saturate */
    memset(&info, 0, sizeof(info));
    info.choices = 128;
    info.prompt_bytes = INT64_MAX - 10;
    info.media_tokens = INT64_MAX - 10;
    sp_request_worst_case(&info, INT64_MAX / 2, &prompt, &output);
    assert_true(prompt == INT64_MAX);
    assert_true(output == INT64_MAX);

    info.prompt_bytes = -5;
    info.media_tokens = -5;
    info.choices = 0;
    sp_request_worst_case(&info, -1, &prompt, &output);
    assert_true(prompt == SP_REQUEST_FRAMING_TOKENS);
    assert_true(output == 0);
}

/* ---- exact prompt tokens -------------------------------------------- */

static sp_request_tokenizer_t  tokenizer;


static int
tokenizer_setup(void **state)
{
    int                    e;
    char                   err[256];

    static const sp_tok_vocab_t  *vocab[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    (void) state;

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        tokenizer.enc[e] = sp_tok_enc_create(e, vocab[e], err, sizeof(err));

        if (tokenizer.enc[e] == NULL) {
            fprintf(stderr, "tokenizer: %s\n", err);
            return -1;
        }
    }

    tokenizer.ctx = sp_tok_ctx_create(0);

    return tokenizer.ctx ? 0 : -1;
}


static int
tokenizer_teardown(void **state)
{
    int  e;

    (void) state;

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        sp_tok_enc_free((sp_tok_enc_t *) tokenizer.enc[e]);
    }

    sp_tok_ctx_free(tokenizer.ctx);

    return 0;
}


/* parses body and counts it for model; returns prompt_tokens */
static int64_t
counted(sp_provider_e provider, const char *model, int embeddings,
    const char *body, size_t len, sp_request_info_t *info)
{
    char  err[256];

    if (sp_request_parse(provider, body, len, info, err, sizeof(err))
        != SP_OK)
    {
        fail_msg("%.*s: %s", (int) (len < 200 ? len : 200), body, err);
    }

    if (sp_request_count_prompt(&tokenizer, provider, model, embeddings,
                                body, len, info)
        != SP_OK)
    {
        fail_msg("not counted for %s: %.*s", model,
                 (int) (len < 200 ? len : 200), body);
    }

    assert_true(info->prompt_counted);

    return info->prompt_tokens;
}


/* a body {"model": model, member: value} serialised with these flags */
static int64_t
counted_json(const char *model, const char *member, json_t *value,
    int embeddings, size_t flags, sp_request_info_t *info)
{
    char     *body;
    json_t   *root;
    int64_t   n;

    root = json_pack("{s:s, s:O}", "model", model, member, value);
    assert_non_null(root);

    body = json_dumps(root, flags);
    assert_non_null(body);

    n = counted(SP_PROVIDER_OPENAI, model, embeddings, body, strlen(body),
                info);

    free(body);
    json_decref(root);

    return n;
}


static json_t *
load_corpus(void)
{
    json_t        *corpus;
    const char    *path;
    json_error_t   jerr;

    path = getenv("SPENDPOL_PROMPT_CORPUS");
    path = path ? path : "tests/fixtures/prompt-corpus.json";

    corpus = json_load_file(path, 0, &jerr);

    if (corpus == NULL) {
        fail_msg("%s: %s (run from the repository's root)", path, jerr.text);
    }

    return corpus;
}


/*
 * The corpus's texts and chats, with js-tiktoken's counts
 * (tests/fixtures/prompt-tokens.mjs): every endpoint shape counts them
 * exactly, escaped (\n, \u00e9, surrogate pairs) or not.
 */
static void
test_request_counts_corpus_prompts_exactly(void **state)
{
    size_t              i, f;
    json_t             *corpus, *item, *value, *pair;
    int64_t             o200k, cl100k, overhead;
    const char         *name;
    sp_request_info_t   info;

    static const size_t  flags[] = { JSON_COMPACT, JSON_ENSURE_ASCII };

    (void) state;

    corpus = load_corpus();

    json_array_foreach(json_object_get(corpus, "texts"), i, item) {
        name = json_string_value(json_object_get(item, "name"));
        value = json_object_get(item, "text");
        o200k = json_integer_value(json_object_get(item, "o200k_base"));
        cl100k = json_integer_value(json_object_get(item, "cl100k_base"));
        pair = json_pack("[O,O]", value, value);

        /* "user" is one token in both encodings */
        overhead = SP_TOK_CHAT_PER_MESSAGE + 1 + SP_TOK_CHAT_PER_REPLY;

        for (f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
            if (counted_json("gpt-4o", "prompt", value, 0, flags[f], &info)
                != o200k)
            {
                fail_msg("%s: o200k_base %lld, js-tiktoken %lld", name,
                         (long long) info.prompt_tokens, (long long) o200k);
            }

            if (counted_json("gpt-4-turbo", "prompt", value, 0, flags[f],
                             &info)
                != cl100k)
            {
                fail_msg("%s: cl100k_base %lld, js-tiktoken %lld", name,
                         (long long) info.prompt_tokens, (long long) cl100k);
            }

            assert_int_equal(info.prompt_bound, 0);

            assert_int_equal(counted_json("text-embedding-3-small", "input",
                                          pair, 1, flags[f], &info),
                             2 * cl100k);
            assert_int_equal(counted_json("gpt-4.1-mini", "input", value, 0,
                                          flags[f], &info),
                             o200k + overhead);
        }

        json_decref(pair);
    }

    json_array_foreach(json_object_get(corpus, "chats"), i, item) {
        name = json_string_value(json_object_get(item, "name"));
        value = json_object_get(item, "messages");
        o200k = json_integer_value(json_object_get(item, "o200k_base"));
        cl100k = json_integer_value(json_object_get(item, "cl100k_base"));

        for (f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
            if (counted_json("gpt-4o-mini", "messages", value, 0, flags[f],
                             &info)
                != o200k
                || counted_json("gpt-3.5-turbo", "messages", value, 0,
                                flags[f], &info)
                   != cl100k)
            {
                fail_msg("%s: chat counts differ from the cookbook's "
                         "(o200k_base %lld, cl100k_base %lld)", name,
                         (long long) o200k, (long long) cl100k);
            }

            /* the Responses API takes the same messages as input items */
            assert_int_equal(counted_json("o4-mini", "input", value, 0,
                                          flags[f], &info),
                             o200k);
        }
    }

    json_decref(corpus);
}


/*
 * Other providers keep prompt bytes + framing: their tokenizers are not
 * public, so no count is known to hold it to, and byte-level BPE (and
 * SentencePiece's byte fallback) can spend a token on every byte of rare
 * text. On the corpus the bound holds for both public encodings, whose
 * tightest text (numbers) still takes 1.86 bytes a token.
 */
static void
test_request_bytes_bound_covers_corpus_for_other_providers(void **state)
{
    char               *body;
    size_t              i;
    json_t             *corpus, *item, *root;
    int64_t             prompt, output, most;
    sp_request_info_t   info;

    (void) state;

    corpus = load_corpus();

    json_array_foreach(json_object_get(corpus, "texts"), i, item) {
        root = json_pack("{s:s, s:[{s:s, s:O}]}", "model", "claude-sonnet-4",
                         "messages", "role", "user", "content",
                         json_object_get(item, "text"));
        body = json_dumps(root, JSON_COMPACT);
        parse_ok(body, &info);

        /* not an OpenAI model, or not OpenAI: not counted */
        assert_int_equal(sp_request_count_prompt(&tokenizer,
                             SP_PROVIDER_ANTHROPIC, "claude-sonnet-4", 0,
                             body, strlen(body), &info),
                         SP_ERROR);
        assert_int_equal(sp_request_count_prompt(&tokenizer,
                             SP_PROVIDER_OPENAI, "claude-sonnet-4", 0,
                             body, strlen(body), &info),
                         SP_ERROR);
        assert_false(info.prompt_counted);

        sp_request_worst_case(&info, 0, &prompt, &output);

        most = json_integer_value(json_object_get(item, "cl100k_base"));
        if (json_integer_value(json_object_get(item, "o200k_base")) > most) {
            most = json_integer_value(json_object_get(item, "o200k_base"));
        }

        assert_true(prompt == json_integer_value(json_object_get(item,
                                                                 "bytes"))
                              + SP_REQUEST_FRAMING_TOKENS);
        assert_true(prompt >= most + SP_TOK_CHAT_PER_MESSAGE + 1
                              + SP_TOK_CHAT_PER_REPLY);

        free(body);
        json_decref(root);
    }

    json_decref(corpus);
}


static int64_t
count_openai(const char *model, const char *body, sp_request_info_t *info)
{
    return counted(SP_PROVIDER_OPENAI, model, 0, body, strlen(body), info);
}


static int64_t
text_tokens(const char *text)
{
    return (int64_t) sp_tok_count(tokenizer.enc[SP_TOK_O200K_BASE],
                                  tokenizer.ctx, text, strlen(text), NULL);
}


/*
 * What OpenAI does not document keeps a bound: tools and response
 * formats, tool calls, parts that are neither text nor media, items
 * without a role. The counted part stays exact, the rest is bytes plus
 * the framing once.
 */
static void
test_request_count_bounds_what_is_not_public(void **state)
{
    int64_t            prompt, output, exact;
    sp_request_info_t  info;

    (void) state;

    exact = SP_TOK_CHAT_PER_MESSAGE + 1 + text_tokens("hi")
            + SP_TOK_CHAT_PER_REPLY;

    assert_int_equal(count_openai("gpt-4o",
                         "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":"
                         "\"user\",\"content\":\"hi\"}]}", &info),
                     exact);
    assert_int_equal(info.prompt_bound, 0);

    /* "name" and "parameters", "type" and "x": keys and values */
    count_openai("gpt-4o",
                 "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                 "\"content\":\"hi\"}],\"tools\":[{\"name\":\"f\","
                 "\"parameters\":{\"type\":\"x\"}}]}", &info);
    assert_int_equal(info.prompt_bound, 4 + 1 + 10 + 4 + 1
                                        + SP_REQUEST_FRAMING_TOKENS);
    assert_int_equal(info.prompt_tokens, exact + info.prompt_bound);

    /* a tool call: its key and its text; the tool's answer: its id */
    count_openai("gpt-4o",
                 "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"assistant\","
                 "\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\","
                 "\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
                 "\"tool_call_id\":\"c1\",\"content\":\"ok\"}]}", &info);
    assert_int_equal(info.prompt_bound,
                     10 + (2 + 2 + 8 + 4 + 1 + 9 + 2) + 12 + 2
                     + SP_REQUEST_FRAMING_TOKENS);
    assert_int_equal(info.prompt_tokens - info.prompt_bound,
                     2 * SP_TOK_CHAT_PER_MESSAGE + text_tokens("assistant")
                     + text_tokens("tool") + text_tokens("ok")
                     + SP_TOK_CHAT_PER_REPLY);

    /*
     * Text parts count each, a token of slack at each seam; an image is
     * media_tokens, not text; an unknown part is bounded.
     */
    count_openai("gpt-4o",
                 "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"hello\"},"
                 "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}},"
                 "{\"type\":\"text\",\"text\":\" world\"}]}]}", &info);
    assert_int_equal(info.prompt_bound, 0);
    assert_int_equal(info.prompt_tokens,
                     SP_TOK_CHAT_PER_MESSAGE + 1 + text_tokens("hello") + 2
                     + text_tokens(" world") + SP_TOK_CHAT_PER_REPLY);
    assert_int_equal(info.media_tokens, SP_REQUEST_IMAGE_TOKENS);

    sp_request_worst_case(&info, 0, &prompt, &output);
    assert_true(prompt == info.prompt_tokens + SP_REQUEST_IMAGE_TOKENS);

    count_openai("gpt-4o",
                 "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                 "\"content\":[{\"type\":\"novel\",\"z\":\"abc\"}]}]}",
                 &info);
    assert_int_equal(info.prompt_bound, 4 + 5 + 1 + 3
                                        + SP_REQUEST_FRAMING_TOKENS);

    /* Responses: instructions, and an item without a role */
    count_openai("gpt-5",
                 "{\"model\":\"gpt-5\",\"instructions\":\"Be brief.\","
                 "\"input\":[{\"type\":\"function_call_output\","
                 "\"call_id\":\"c\",\"output\":\"42\"}]}", &info);
    assert_int_equal(info.prompt_bound, 4 + 20 + 7 + 1 + 6 + 2
                                        + SP_REQUEST_FRAMING_TOKENS);
    assert_int_equal(info.prompt_tokens - info.prompt_bound,
                     SP_TOK_CHAT_PER_MESSAGE + text_tokens("developer")
                     + text_tokens("Be brief.") + SP_TOK_CHAT_PER_REPLY);

    /* token ids are a token each */
    count_openai("gpt-3.5-turbo-instruct",
                 "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":"
                 "[[1,2,3],[4]],\"suffix\":\"end\"}", &info);
    assert_int_equal(info.prompt_tokens, 4 + 1);
}


/*
 * Counted when the tokenizer is public and the request is OpenAI's:
 * Azure (the caller resolves the deployment's model), not Anthropic; an
 * unknown or older model, an empty body, a missing encoding keep the
 * bytes bound. A body the scanner declines (here: more than 64 members)
 * is counted through jansson's tree, the same.
 */
static void
test_request_count_applies_to_openai_models_only(void **state)
{
    char                    body[4096];
    size_t                  i, n;
    sp_request_info_t       info;
    sp_request_tokenizer_t  partial;

    static const char  chat[] = "{\"model\":\"gpt-4o\",\"messages\":"
                                "[{\"role\":\"user\",\"content\":\"hi\"}]}";

    (void) state;

    assert_int_equal(counted(SP_PROVIDER_AZURE, "gpt-4o", 0, chat,
                             sizeof(chat) - 1, &info),
                     3 + 1 + 1 + 3);

    parse_ok(chat, &info);
    assert_int_equal(sp_request_count_prompt(&tokenizer, SP_PROVIDER_MISTRAL,
                         "gpt-4o", 0, chat, sizeof(chat) - 1, &info),
                     SP_ERROR);
    assert_int_equal(sp_request_count_prompt(&tokenizer, SP_PROVIDER_OPENAI,
                         "text-davinci-003", 0, chat, sizeof(chat) - 1,
                         &info),
                     SP_ERROR);
    assert_int_equal(sp_request_count_prompt(&tokenizer, SP_PROVIDER_OPENAI,
                         "my-deployment", 0, chat, sizeof(chat) - 1, &info),
                     SP_ERROR);
    assert_int_equal(sp_request_count_prompt(NULL, SP_PROVIDER_OPENAI,
                         "gpt-4o", 0, chat, sizeof(chat) - 1, &info),
                     SP_ERROR);
    assert_int_equal(sp_request_count_prompt(&tokenizer, SP_PROVIDER_OPENAI,
                         "gpt-4o", 0, "", 0, &info),
                     SP_ERROR);
    assert_int_equal(sp_request_count_prompt(&tokenizer, SP_PROVIDER_OPENAI,
                         "gpt-4o", 0, "[1]", 3, &info),
                     SP_ERROR);

    partial = tokenizer;
    partial.enc[SP_TOK_O200K_BASE] = NULL;
    assert_int_equal(sp_request_count_prompt(&partial, SP_PROVIDER_OPENAI,
                         "gpt-4o", 0, chat, sizeof(chat) - 1, &info),
                     SP_ERROR);
    assert_false(info.prompt_counted);
    assert_int_equal(sp_request_prompt_estimate(&info),
                     sp_tokens_estimate(info.prompt_bytes));

    n = snprintf(body, sizeof(body), "{");

    for (i = 0; i < 70; i++) {
        n += snprintf(body + n, sizeof(body) - n, "\"x%zu\":%zu,", i, i);
    }

    n += snprintf(body + n, sizeof(body) - n, "%s", chat + 1);

    assert_int_equal(counted(SP_PROVIDER_OPENAI, "gpt-4o", 0, body, n,
                             &info),
                     3 + 1 + 1 + 3);
    assert_int_equal(sp_request_prompt_estimate(&info), 8);
}



/*
 * temperature_zero and has_seed as provider said, by both readers (the
 * scanner and jansson alone): they must agree.
 */
static void
flags_are(sp_provider_e provider, const char *body, int temperature_zero,
    int has_seed)
{
    int                 tree;
    char                err[256];
    sp_request_info_t   info;

    for (tree = 0; tree < 2; tree++) {
        err[0] = '\0';

        if ((tree ? sp_request_parse_tree : sp_request_parse)(provider, body,
                strlen(body), &info, err, sizeof(err))
            != SP_OK)
        {
            fail_msg("%s: %s", body, err);
        }

        if (info.temperature_zero != temperature_zero
            || info.has_seed != has_seed)
        {
            fail_msg("%s (%s, %s): temperature_zero %d has_seed %d, expected "
                     "%d %d", body, sp_provider_name(provider),
                     tree ? "tree" : "scan", info.temperature_zero,
                     info.has_seed, temperature_zero, has_seed);
        }
    }
}


static void
test_request_temperature_zero_is_a_number_equal_to_0(void **state)
{
    size_t  i;

    static const sp_provider_e  top[] = {
        SP_PROVIDER_OPENAI, SP_PROVIDER_AZURE, SP_PROVIDER_MISTRAL,
        SP_PROVIDER_COHERE, SP_PROVIDER_ANTHROPIC
    };

    (void) state;

    for (i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        flags_are(top[i], "{\"temperature\":0}", 1, 0);
        flags_are(top[i], "{\"temperature\":0.0}", 1, 0);
        flags_are(top[i], "{\"temperature\":-0}", 1, 0);
        flags_are(top[i], "{\"temperature\":-0.0}", 1, 0);
        flags_are(top[i], "{\"temperature\":0e5}", 1, 0);
        flags_are(top[i], "{\"temperature\":0.000E-7}", 1, 0);
        flags_are(top[i], "{\"model\":\"m\", \"temperature\" : 0 }", 1, 0);

        flags_are(top[i], "{\"temperature\":0.1}", 0, 0);
        flags_are(top[i], "{\"temperature\":1}", 0, 0);
        flags_are(top[i], "{\"temperature\":1e-300}", 0, 0);
        flags_are(top[i], "{\"temperature\":0.0000001}", 0, 0);
        flags_are(top[i], "{\"temperature\":null}", 0, 0);
        flags_are(top[i], "{\"temperature\":\"0\"}", 0, 0);
        flags_are(top[i], "{\"temperature\":false}", 0, 0);
        flags_are(top[i], "{\"temperature\":[0]}", 0, 0);
        flags_are(top[i], "{\"model\":\"m\"}", 0, 0);
        flags_are(top[i], "", 0, 0);

        /* only the top level's */
        flags_are(top[i], "{\"x\":{\"temperature\":0}}", 0, 0);
        flags_are(top[i], "{\"generationConfig\":{\"temperature\":0}}",
                  0, 0);
    }

    /*
     * What a double makes of it, by both readers: below the smallest
     * denormal it is 0, a denormal is not.
     */
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":1e-400}", 1, 0);
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":0.001e-323}", 1, 0);
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":12e-327}", 1, 0);
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":3e-324}", 0, 0);
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":1e-320}", 0, 0);
    flags_are(SP_PROVIDER_OPENAI, "{\"temperature\":0.5e-300}", 0, 0);
}


static void
test_request_gemini_temperature_and_seed_are_in_generation_config(
    void **state)
{
    (void) state;

    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generationConfig\":{\"temperature\":0}}", 1, 0);
    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generationConfig\":{\"temperature\":0.0,\"seed\":7}}", 1, 1);
    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generation_config\":{\"temperature\":-0.0e3}}", 1, 0);
    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generation_config\":{\"seed\":1}}", 0, 1);
    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generationConfig\":{\"temperature\":0.7,\"seed\":null}}",
              0, 0);
    flags_are(SP_PROVIDER_GOOGLE,
              "{\"generationConfig\":{\"temperature\":\"0\"}}", 0, 0);

    /* Gemini reads neither at the top level */
    flags_are(SP_PROVIDER_GOOGLE, "{\"temperature\":0,\"seed\":1}", 0, 0);

    /* other providers do not read generationConfig's */
    flags_are(SP_PROVIDER_OPENAI,
              "{\"generationConfig\":{\"temperature\":0,\"seed\":1}}", 0, 0);
}


static void
test_request_seed_is_present_and_not_null(void **state)
{
    size_t  i;

    static const sp_provider_e  seed[] = {
        SP_PROVIDER_OPENAI, SP_PROVIDER_AZURE, SP_PROVIDER_COHERE
    };

    (void) state;

    for (i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
        flags_are(seed[i], "{\"seed\":42}", 0, 1);
        flags_are(seed[i], "{\"seed\":0}", 0, 1);
        flags_are(seed[i], "{\"seed\":\"x\"}", 0, 1);
        flags_are(seed[i], "{\"seed\":null}", 0, 0);
        flags_are(seed[i], "{\"temperature\":0,\"seed\":3}", 1, 1);
        flags_are(seed[i], "{\"random_seed\":3}", 0, 0);
        flags_are(seed[i], "{\"x\":{\"seed\":3}}", 0, 0);
    }

    flags_are(SP_PROVIDER_MISTRAL, "{\"random_seed\":3}", 0, 1);
    flags_are(SP_PROVIDER_MISTRAL, "{\"random_seed\":null}", 0, 0);
    flags_are(SP_PROVIDER_MISTRAL, "{\"seed\":3}", 0, 0);
    flags_are(SP_PROVIDER_MISTRAL, "{\"temperature\":0,\"random_seed\":1}",
              1, 1);

    /* Anthropic has no seed */
    flags_are(SP_PROVIDER_ANTHROPIC, "{\"seed\":3}", 0, 0);
    flags_are(SP_PROVIDER_ANTHROPIC, "{\"random_seed\":3}", 0, 0);
}


/* has_tools and has_images as provider said, by both readers */
static void
routing_flags_are(sp_provider_e provider, const char *body, int has_tools,
    int has_images)
{
    int                 tree;
    char                err[256];
    sp_request_info_t   info;

    for (tree = 0; tree < 2; tree++) {
        err[0] = '\0';

        if ((tree ? sp_request_parse_tree : sp_request_parse)(provider, body,
                strlen(body), &info, err, sizeof(err))
            != SP_OK)
        {
            fail_msg("%s: %s", body, err);
        }

        if (info.has_tools != has_tools || info.has_images != has_images) {
            fail_msg("%s (%s, %s): has_tools %d has_images %d, expected "
                     "%d %d", body, sp_provider_name(provider),
                     tree ? "tree" : "scan", info.has_tools,
                     info.has_images, has_tools, has_images);
        }
    }
}


static void
test_request_has_tools_is_a_non_empty_tools_array(void **state)
{
    (void) state;

    routing_flags_are(SP_PROVIDER_OPENAI, "{\"model\":\"gpt-4o\"}", 0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{}}}],\"messages\":[]}", 1, 0);
    routing_flags_are(SP_PROVIDER_OPENAI, "{\"tools\":[]}", 0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI, "{\"tools\":null}", 0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI, "{\"tools\":{\"a\":1}}", 0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"functions\":[{\"name\":\"f\",\"parameters\":{}}]}", 1, 0);
    /* a tool_choice alone, or tools named inside a message, is not tools */
    routing_flags_are(SP_PROVIDER_OPENAI, "{\"tool_choice\":\"auto\"}", 0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"tools\":[1]}]}", 0, 0);
    routing_flags_are(SP_PROVIDER_ANTHROPIC,
        "{\"tools\":[{\"name\":\"f\",\"input_schema\":{}}]}", 1, 0);
    routing_flags_are(SP_PROVIDER_GOOGLE,
        "{\"tools\":[{\"functionDeclarations\":[{\"name\":\"f\"}]}]}", 1, 0);
    routing_flags_are(SP_PROVIDER_COHERE,
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        1, 0);
}


static void
test_request_has_images_in_every_providers_shape(void **state)
{
    (void) state;

    /* OpenAI chat, Mistral, Cohere v2 */
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"what\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"https://x/y.png\"}}]}]}", 0, 1);
    routing_flags_are(SP_PROVIDER_MISTRAL,
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"image_url\",\"image_url\":\"data:image/png;base64,AA==\"}]}]}",
        0, 1);
    /* OpenAI Responses */
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"input_image\",\"image_url\":\"https://x\"}]}]}", 0, 1);
    /* Anthropic */
    routing_flags_are(SP_PROVIDER_ANTHROPIC,
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
        "\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
        "\"data\":\"AA==\"}}]}]}", 0, 1);
    /* Gemini, both spellings; audio is not an image */
    routing_flags_are(SP_PROVIDER_GOOGLE,
        "{\"contents\":[{\"parts\":[{\"inlineData\":{\"mimeType\":"
        "\"image/jpeg\",\"data\":\"AA==\"}}]}]}", 0, 1);
    routing_flags_are(SP_PROVIDER_GOOGLE,
        "{\"contents\":[{\"parts\":[{\"file_data\":{\"mime_type\":"
        "\"image/png\",\"file_uri\":\"gs://b/x.png\"}}]}]}", 0, 1);
    routing_flags_are(SP_PROVIDER_GOOGLE,
        "{\"contents\":[{\"parts\":[{\"inlineData\":{\"mimeType\":"
        "\"audio/wav\",\"data\":\"AA==\"}}]}]}", 0, 0);
    /* Cohere embed: images as data URIs */
    routing_flags_are(SP_PROVIDER_COHERE,
        "{\"images\":[\"data:image/png;base64,AA==\"]}", 0, 1);
    routing_flags_are(SP_PROVIDER_COHERE, "{\"images\":[]}", 0, 0);
    /* files, audio and text are not images */
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"input_audio\",\"input_audio\":{\"data\":\"AA==\",\"format\":"
        "\"wav\"}},{\"type\":\"file\",\"file\":{\"file_id\":\"f\"}}]}]}",
        0, 0);
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"an image_url\"}]}",
        0, 0);
    /* an image in a tool's schema is a schema, not an input */
    routing_flags_are(SP_PROVIDER_OPENAI,
        "{\"tools\":[{\"type\":\"image_url\"}],\"messages\":[]}", 1, 0);
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
        cmocka_unit_test(test_request_error_codes_name_the_kind),
        cmocka_unit_test(test_request_token_limits_are_bounded_integers),
        cmocka_unit_test(test_request_largest_output_limit_wins),
        cmocka_unit_test(
            test_request_gemini_generation_config_is_read_and_checked),
        cmocka_unit_test(
            test_request_choices_take_the_larger_of_n_and_best_of),
        cmocka_unit_test(test_request_number_outside_int64_names_the_field),
        cmocka_unit_test(test_request_duplicate_keys_are_refused),
        cmocka_unit_test(
            test_request_model_with_control_characters_is_refused),
        cmocka_unit_test(test_request_images_are_charged_a_fixed_worst_case),
        cmocka_unit_test(test_request_files_are_charged_by_their_bytes),
        cmocka_unit_test(test_request_new_prompt_fields_are_text),
        cmocka_unit_test(test_request_token_ids_count_as_tokens),
        cmocka_unit_test(test_request_schemas_count_their_property_names),
        cmocka_unit_test(test_request_worst_case_multiplies_and_saturates),
        cmocka_unit_test(
            test_request_temperature_zero_is_a_number_equal_to_0),
        cmocka_unit_test(
            test_request_gemini_temperature_and_seed_are_in_generation_config),
        cmocka_unit_test(test_request_seed_is_present_and_not_null),
        cmocka_unit_test(test_request_has_tools_is_a_non_empty_tools_array),
        cmocka_unit_test(test_request_has_images_in_every_providers_shape),
        cmocka_unit_test(test_tokens_estimate_rounds_up_quarters),
        cmocka_unit_test(test_provider_names_round_trip),
        cmocka_unit_test(test_request_model_and_stream_from_path),
        cmocka_unit_test(test_stream_usage_is_added_after_opening_brace),
        cmocka_unit_test(test_stream_usage_not_applied_to_non_objects),
        cmocka_unit_test(test_stream_usage_too_small_buffer_returns_0),
        cmocka_unit_test(test_stream_usage_is_forced_when_client_said_false),
        cmocka_unit_test(test_request_counts_corpus_prompts_exactly),
        cmocka_unit_test(
            test_request_bytes_bound_covers_corpus_for_other_providers),
        cmocka_unit_test(test_request_count_bounds_what_is_not_public),
        cmocka_unit_test(test_request_count_applies_to_openai_models_only),
    };

    return cmocka_run_group_tests(tests, tokenizer_setup, tokenizer_teardown);
}
