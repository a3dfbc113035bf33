/*
 * libspendpol cross-provider translation: OpenAI chat-completions requests
 * for each target, and each target's answers (JSON, SSE, errors) back in
 * OpenAI's form.
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

#include "sp_scan.h"
#include "sp_translate.h"


/* ---- helpers ------------------------------------------------------------ */

typedef struct {
    char                    *out;
    size_t                   len;
    sp_translate_request_t   res;
    char                     err[256];
} req_t;


static int
translate(sp_provider_e target, const char *model, const char *body,
    req_t *r)
{
    size_t  size;
    int     rc;

    size = sp_translate_request_bound(strlen(body));
    r->out = malloc(size);
    assert_non_null(r->out);
    r->err[0] = '\0';

    rc = sp_translate_request(target, model, strlen(model), body,
                              strlen(body), r->out, size, &r->res, r->err,
                              sizeof(r->err));
    r->len = rc == SP_OK ? r->res.body_len : 0;

    return rc;
}


/* out (len bytes) parses as JSON equal to golden */
static void
assert_json(const char *out, size_t len, const char *golden)
{
    json_t        *a, *b;
    json_error_t   e;

    a = json_loadb(out, len, 0, &e);
    if (a == NULL) {
        fail_msg("not JSON (%s): %.*s", e.text, (int) len, out);
    }

    b = json_loads(golden, 0, &e);
    if (b == NULL) {
        fail_msg("golden not JSON (%s): %s", e.text, golden);
    }

    if (!json_equal(a, b)) {
        char *s = json_dumps(a, JSON_SORT_KEYS);
        char *g = json_dumps(b, JSON_SORT_KEYS);
        print_error("got:    %s\nwanted: %s\n", s, g);
        free(s);
        free(g);
        json_decref(a);
        json_decref(b);
        fail();
    }

    json_decref(a);
    json_decref(b);
}


static const char  chat[] =
    "{\"model\":\"gpt-4o\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"developer\",\"content\":[{\"type\":\"text\","
    "\"text\":\"Use tools.\"}]},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
    "\"Weather in \\\"Paris\\\"?\"},{\"type\":\"image_url\",\"image_url\":"
    "{\"url\":\"data:image/png;base64,iVBORw0K\"}}]},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
    "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
    "\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
    "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":"
    "\"get_time\",\"arguments\":\"{}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":"
    "[{\"type\":\"text\",\"text\":\"noon\"}]},"
    "{\"role\":\"user\",\"content\":\"Thanks\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
    "\"get_weather\",\"description\":\"Weather\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":"
    "{\"name\":\"get_time\"}}],"
    "\"tool_choice\":\"required\",\"max_completion_tokens\":300,"
    "\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\",\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true},\"seed\":7,"
    "\"user\":\"u-42\"}";


/* ---- requests ----------------------------------------------------------- */

static void
test_anthropic_request_maps_every_member(void **state)
{
    req_t  r;

    (void) state;

    assert_int_equal(translate(SP_PROVIDER_ANTHROPIC, "claude-sonnet-4-5",
                               chat, &r), SP_OK);
    assert_string_equal(r.res.path, "/v1/messages");
    assert_string_equal(r.res.query, "");
    assert_int_equal(r.res.stream, 1);
    assert_int_equal(r.res.include_usage, 1);

    assert_json(r.out, r.len,
        "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":300,"
        "\"system\":[{\"type\":\"text\",\"text\":\"Be brief.\"},"
        "{\"type\":\"text\",\"text\":\"Use tools.\"}],"
        "\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Weather in \\\"Paris\\\"?\"},{\"type\":\"image\",\"source\":"
        "{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":"
        "\"iVBORw0K\"}}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
        "\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{\"city\":"
        "\"Paris\"}},{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":"
        "\"get_time\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
        "\"tool_use_id\":\"call_1\",\"content\":\"18C\"},{\"type\":"
        "\"tool_result\",\"tool_use_id\":\"call_2\",\"content\":\"noon\"}]},"
        "{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"temperature\":0.5,\"top_p\":0.9,\"stop_sequences\":[\"END\"],"
        "\"stream\":true,\"metadata\":{\"user_id\":\"u-42\"},"
        "\"tools\":[{\"name\":\"get_weather\",\"description\":\"Weather\","
        "\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":"
        "{\"type\":\"string\"}},\"required\":[\"city\"]}},{\"name\":"
        "\"get_time\",\"input_schema\":{\"type\":\"object\","
        "\"properties\":{}}}],\"tool_choice\":{\"type\":\"any\"}}");

    free(r.out);
}


static void
test_anthropic_request_defaults_max_tokens(void **state)
{
    req_t  r;

    (void) state;

    assert_int_equal(translate(SP_PROVIDER_ANTHROPIC, "claude-haiku-4-5",
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}],\"tool_choice\":{\"type\":\"function\","
        "\"function\":{\"name\":\"f\"}},\"parallel_tool_calls\":false,"
        "\"stop\":[\"a\",\"b\"],\"image\":{\"url\":\"http://x\"}}", &r),
        SP_OK);
    assert_int_equal(r.res.stream, 0);
    assert_json(r.out, r.len,
        "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":4096,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"stop_sequences\":[\"a\",\"b\"],\"tool_choice\":{\"type\":"
        "\"tool\",\"name\":\"f\",\"disable_parallel_tool_use\":true}}");
    free(r.out);

    assert_int_equal(translate(SP_PROVIDER_ANTHROPIC, "claude-haiku-4-5",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.png\"}}]}]}",
        &r), SP_OK);
    assert_json(r.out, r.len,
        "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":4096,"
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
        "\"source\":{\"type\":\"url\",\"url\":\"https://x.test/a.png\"}}]}]}");
    free(r.out);
}


static void
test_google_request_maps_every_member(void **state)
{
    req_t  r;

    (void) state;

    assert_int_equal(translate(SP_PROVIDER_GOOGLE, "gemini-2.5-flash",
                               chat, &r), SP_OK);
    assert_string_equal(r.res.path, "/v1beta/models/gemini-2.5-flash"
                                    ":streamGenerateContent");
    assert_string_equal(r.res.query, "alt=sse");
    assert_int_equal(r.res.stream, 1);

    assert_json(r.out, r.len,
        "{\"contents\":["
        "{\"role\":\"user\",\"parts\":[{\"text\":"
        "\"Weather in \\\"Paris\\\"?\"},{\"inlineData\":{\"mimeType\":"
        "\"image/png\",\"data\":\"iVBORw0K\"}}]},"
        "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":"
        "\"get_weather\",\"args\":{\"city\":\"Paris\"}}},{\"functionCall\":"
        "{\"name\":\"get_time\",\"args\":{}}}]},"
        "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":"
        "\"get_weather\",\"response\":{\"content\":\"18C\"}}},"
        "{\"functionResponse\":{\"name\":\"get_time\",\"response\":"
        "{\"content\":\"noon\"}}}]},"
        "{\"role\":\"user\",\"parts\":[{\"text\":\"Thanks\"}]}],"
        "\"systemInstruction\":{\"parts\":[{\"text\":\"Be brief.\"},"
        "{\"text\":\"Use tools.\"}]},"
        "\"tools\":[{\"functionDeclarations\":[{\"name\":\"get_weather\","
        "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":"
        "[\"city\"]}},{\"name\":\"get_time\"}]}],"
        "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\"}},"
        "\"generationConfig\":{\"maxOutputTokens\":300,\"temperature\":0.5,"
        "\"topP\":0.9,\"stopSequences\":[\"END\"],\"seed\":7}}");
    free(r.out);

    /* not streamed; n; a model with a byte to escape; models/ prefix */
    assert_int_equal(translate(SP_PROVIDER_GOOGLE, "models/gem ini",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,"
        "\"response_format\":{\"type\":\"json_object\"}}", &r), SP_OK);
    assert_string_equal(r.res.path, "/v1beta/models/gem%20ini:generateContent");
    assert_string_equal(r.res.query, "");
    assert_json(r.out, r.len,
        "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"}]}],"
        "\"generationConfig\":{\"candidateCount\":2,"
        "\"responseMimeType\":\"application/json\"}}");
    free(r.out);
}


static void
test_cohere_request_maps_every_member(void **state)
{
    req_t  r;
    char   body[sizeof(chat)];
    char  *p;

    (void) state;

    /* Cohere takes no images: the same chat without its image */
    strcpy(body, chat);
    p = strstr(body, ",{\"type\":\"image_url\"");
    memmove(p, strstr(p, "}}") + 2, strlen(strstr(p, "}}") + 2) + 1);

    assert_int_equal(translate(SP_PROVIDER_COHERE, "command-a-03-2025", body,
                               &r), SP_OK);
    assert_string_equal(r.res.path, "/v2/chat");
    assert_json(r.out, r.len,
        "{\"model\":\"command-a-03-2025\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Use tools.\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"Weather in \\\"Paris\\\"?\"}]},"
        "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},{\"id\":"
        "\"call_2\",\"type\":\"function\",\"function\":{\"name\":"
        "\"get_time\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"noon\"}]},"
        "{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"get_weather\",\"description\":\"Weather\",\"parameters\":"
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
        "\"string\"}},\"required\":[\"city\"]}}},{\"type\":\"function\","
        "\"function\":{\"name\":\"get_time\"}}],"
        "\"tool_choice\":\"REQUIRED\",\"max_tokens\":300,"
        "\"temperature\":0.5,\"p\":0.9,\"stop_sequences\":[\"END\"],"
        "\"stream\":true,\"seed\":7}");
    free(r.out);

    /* top_p 1 is what Cohere takes as its highest p */
    assert_int_equal(translate(SP_PROVIDER_COHERE, "command-r",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"top_p\":1}", &r), SP_OK);
    assert_json(r.out, r.len,
        "{\"model\":\"command-r\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}],\"p\":0.99}");
    free(r.out);
}


static void
test_mistral_request_keeps_what_mistral_knows(void **state)
{
    req_t  r;

    (void) state;

    assert_int_equal(translate(SP_PROVIDER_MISTRAL, "mistral-large-latest",
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"developer\","
        "\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"hi\","
        "\"name\":\"bob\"}],\"max_completion_tokens\":50,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"seed\":3,"
        "\"user\":\"u\",\"store\":false,\"n\":1}", &r), SP_OK);
    assert_string_equal(r.res.path, "/v1/chat/completions");
    assert_int_equal(r.res.include_usage, 1);
    assert_json(r.out, r.len,
        "{\"model\":\"mistral-large-latest\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\","
        "\"content\":\"hi\"}],\"max_tokens\":50,\"stream\":true,"
        "\"random_seed\":3}");
    free(r.out);
}


static void
test_azure_and_openai_requests_change_only_the_model(void **state)
{
    req_t  r;

    (void) state;

    assert_int_equal(translate(SP_PROVIDER_AZURE, "prod-gpt4o",
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}],\"logprobs\":true,\"n\":3}", &r), SP_OK);
    assert_string_equal(r.res.path,
                        "/openai/deployments/prod-gpt4o/chat/completions");
    assert_string_equal(r.res.query, "api-version=2024-10-21");
    assert_json(r.out, r.len,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"logprobs\":true,\"n\":3}");
    free(r.out);

    assert_int_equal(translate(SP_PROVIDER_OPENAI, "gpt-4o-mini",
        "{\"model\":\"gpt-4o\",\"messages\":[],\"x\":{\"deep\":[1,2.5]}}",
        &r), SP_OK);
    assert_string_equal(r.res.path, "/v1/chat/completions");
    assert_json(r.out, r.len,
        "{\"model\":\"gpt-4o-mini\",\"messages\":[],\"x\":{\"deep\":"
        "[1,2.5]}}");
    free(r.out);
}


typedef struct {
    sp_provider_e   target;
    const char     *body;
    const char     *why;
} not_faithful_t;


static void
test_requests_a_target_cannot_take_say_why(void **state)
{
    static const not_faithful_t  cases[] = {
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"n\":2}", "anthropic does not take n > 1" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"response_format\":{\"type\":\"json_schema\"}}",
          "anthropic does not take response_format json_schema" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"response_format\":{\"type\":\"json_object\"}}",
          "anthropic does not take response_format json_object" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"logprobs\":true}",
          "anthropic does not return logprobs" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"audio\":{\"voice\":\"alloy\"}}",
          "anthropic does not answer with audio" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[],\"temperature\":1.5}",
          "anthropic takes temperature from 0 to 1" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"input_audio\",\"input_audio\":{}}]}]}",
          "anthropic does not take this kind of content part" },
        { SP_PROVIDER_ANTHROPIC,
          "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":"
          "\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\","
          "\"arguments\":\"{not json\"}}]}]}",
          "a tool call's arguments are not a JSON object" },
        { SP_PROVIDER_GOOGLE,
          "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"image_url\",\"image_url\":{\"url\":\"https://x/a.png\"}}]}]}",
          "google does not take images by URL" },
        { SP_PROVIDER_GOOGLE,
          "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c9\","
          "\"content\":\"x\"}]}",
          "no earlier tool call has its tool_call_id" },
        { SP_PROVIDER_GOOGLE,
          "{\"messages\":[],\"response_format\":{\"type\":\"json_schema\"}}",
          "google does not take response_format json_schema" },
        { SP_PROVIDER_COHERE,
          "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
          "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
          "AA\"}}]}]}",
          "cohere does not take image inputs" },
        { SP_PROVIDER_COHERE,
          "{\"messages\":[],\"n\":3}", "cohere does not take n > 1" },
        { SP_PROVIDER_COHERE,
          "{\"messages\":[],\"tool_choice\":{\"type\":\"function\","
          "\"function\":{\"name\":\"f\"}}}",
          "cohere cannot be made to call one named function" },
        { SP_PROVIDER_MISTRAL,
          "{\"messages\":[],\"n\":2}", "mistral does not take n > 1" },
        { SP_PROVIDER_MISTRAL,
          "{\"messages\":[],\"logit_bias\":{\"50256\":-100}}",
          "mistral does not take logit_bias" },
    };

    char    why[256], out[4096];
    size_t  i;
    sp_translate_request_t  res;

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        why[0] = '\0';
        assert_int_equal(sp_translate_check(cases[i].target, cases[i].body,
                                            strlen(cases[i].body), why,
                                            sizeof(why)), 0);
        if (strstr(why, cases[i].why) == NULL) {
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, why,
                     cases[i].why);
        }

        /* the request refuses it with the same reason */
        why[0] = '\0';
        assert_int_equal(sp_translate_request(cases[i].target, "m", 1,
                                              cases[i].body,
                                              strlen(cases[i].body), out,
                                              sizeof(out), &res, why,
                                              sizeof(why)), SP_ERROR);
        assert_non_null(strstr(why, cases[i].why));
    }

    /* what each can take, it takes; OpenAI always */
    assert_int_equal(sp_translate_check(SP_PROVIDER_ANTHROPIC, chat,
                                        strlen(chat), why, sizeof(why)), 1);
    assert_int_equal(sp_translate_check(SP_PROVIDER_GOOGLE, chat,
                                        strlen(chat), why, sizeof(why)), 1);
    assert_int_equal(sp_translate_check(SP_PROVIDER_MISTRAL, chat,
                                        strlen(chat), why, sizeof(why)), 1);
    assert_int_equal(sp_translate_check(SP_PROVIDER_AZURE, chat,
                                        strlen(chat), why, sizeof(why)), 1);
    assert_int_equal(sp_translate_check(SP_PROVIDER_OPENAI, "nonsense", 8,
                                        why, sizeof(why)), 1);
    assert_int_equal(sp_translate_check(SP_PROVIDER_COHERE, chat,
                                        strlen(chat), why, sizeof(why)), 0);
    assert_non_null(strstr(why, "cohere does not take image inputs"));
}


static void
test_request_output_one_byte_short_is_an_error(void **state)
{
    static const sp_provider_e  targets[] = {
        SP_PROVIDER_OPENAI, SP_PROVIDER_ANTHROPIC, SP_PROVIDER_GOOGLE,
        SP_PROVIDER_AZURE, SP_PROVIDER_MISTRAL
    };

    char                    *out, err[128];
    size_t                   i, need;
    sp_translate_request_t   res;

    (void) state;

    for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        out = malloc(sp_translate_request_bound(strlen(chat)));
        assert_non_null(out);

        assert_int_equal(sp_translate_request(targets[i], "m", 1, chat,
                             strlen(chat), out,
                             sp_translate_request_bound(strlen(chat)), &res,
                             err, sizeof(err)), SP_OK);
        need = res.body_len;
        free(out);

        /* exactly need bytes: ASan sees any write past them */
        out = malloc(need);
        assert_non_null(out);
        assert_int_equal(sp_translate_request(targets[i], "m", 1, chat,
                             strlen(chat), out, need, &res, err,
                             sizeof(err)), SP_OK);
        assert_int_equal(res.body_len, need);
        assert_int_equal(sp_translate_request(targets[i], "m", 1, chat,
                             strlen(chat), out, need - 1, &res, err,
                             sizeof(err)), SP_ERROR);
        free(out);
    }
}


static void
test_hostile_requests_are_errors(void **state)
{
    static const char  *bodies[] = {
        "", "{", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}",
        "[]", "{\"messages\":{}}", "{\"messages\":[1]}",
        "{\"messages\":[{\"role\":5}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":7}]}",
        "{\"messages\":[],\"max_tokens\":\"9\"}",
        "{\"messages\":[],\"max_tokens\":-1}",
        "{\"messages\":[],\"temperature\":\"hot\"}",
        "{\"messages\":[],\"stream\":1}",
        "{\"messages\":[],\"stop\":[1]}",
        "{\"messages\":[],\"tools\":{}}",
        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":1}]}]}",
        "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
        "{\"messages\":[],\"a\":1,\"a\":2}",
    };

    static const sp_provider_e  targets[] = {
        SP_PROVIDER_ANTHROPIC, SP_PROVIDER_GOOGLE, SP_PROVIDER_COHERE,
        SP_PROVIDER_MISTRAL
    };

    char                    out[4096], err[128];
    size_t                  i, j;
    sp_translate_request_t  res;

    (void) state;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (j = 0; j < sizeof(targets) / sizeof(targets[0]); j++) {
            err[0] = '\0';

            if (sp_translate_request(targets[j], "m", 1, bodies[i],
                                     strlen(bodies[i]), out, sizeof(out),
                                     &res, err, sizeof(err)) != SP_ERROR)
            {
                fail_msg("body %zu to target %d was translated", i,
                         (int) targets[j]);
            }

            assert_true(err[0] != '\0');
            assert_int_equal(sp_translate_check(targets[j], bodies[i],
                                                strlen(bodies[i]), err,
                                                sizeof(err)), 0);
        }
    }

    /* a model too long for the path once escaped */
    memset(out, ' ', 300);
    assert_int_equal(sp_translate_request(SP_PROVIDER_GOOGLE, out, 255,
                         "{\"messages\":[]}", 15, out + 512, 2048, &res, err,
                         sizeof(err)), SP_ERROR);
}


/*
 * A body the tape scanner declines (an object too wide to check for twin
 * keys) is read by jansson: the translation is the same.
 */
static void
test_request_the_scanner_declines_translates_the_same(void **state)
{
    char    wide[8192], narrow[4096];
    size_t  len, k;
    req_t   a, b;

    (void) state;

    len = (size_t) snprintf(wide, sizeof(wide), "{\"metadata\":{");

    for (k = 0; k < 80; k++) {
        len += (size_t) snprintf(wide + len, sizeof(wide) - len,
                                 "%s\"k%zu\":%zu.5", k ? "," : "", k, k);
    }

    snprintf(wide + len, sizeof(wide) - len, "},%s", chat + 1);
    snprintf(narrow, sizeof(narrow), "%s", chat);

    {
        sp_json_tape_t  tape;

        /* it is declined indeed */
        sp_json_tape_init(&tape);
        assert_int_equal(sp_json_scan(&tape, wide, strlen(wide)), SP_ERROR);
        sp_json_tape_free(&tape);
    }

    assert_int_equal(translate(SP_PROVIDER_ANTHROPIC, "claude", wide, &a),
                     SP_OK);
    assert_int_equal(translate(SP_PROVIDER_ANTHROPIC, "claude", narrow, &b),
                     SP_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.out, b.out, a.len);
    free(a.out);
    free(b.out);

    assert_int_equal(translate(SP_PROVIDER_GOOGLE, "gemini", wide, &a),
                     SP_OK);
    assert_int_equal(translate(SP_PROVIDER_GOOGLE, "gemini", narrow, &b),
                     SP_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.out, b.out, a.len);
    free(a.out);
    free(b.out);

    /* Azure keeps the wide member as written */
    assert_int_equal(translate(SP_PROVIDER_AZURE, "dep", wide, &a), SP_OK);
    assert_non_null(memmem(a.out, a.len, "\"k79\":79.5}", 11));
    free(a.out);
}


/* ---- answers: JSON ------------------------------------------------------ */

static void
answer(sp_provider_e source, int status, const char *body,
    const char *golden)
{
    char    *out;
    size_t   size, len;

    size = sp_translate_response_bound(strlen(body));
    out = malloc(size);
    assert_non_null(out);

    assert_int_equal(sp_translate_response_model(source, status, body,
                         strlen(body), "chatcmpl-1", 1700000000,
                         "asked-model", 11, out, size, &len), SP_OK);
    assert_json(out, len, golden);

    free(out);
}


/* the usage numbers are the ones sp_usage reads from the same answer */
static void
usage_agrees(sp_provider_e source, const char *body)
{
    char                out[8192];
    size_t              len;
    json_t             *root, *usage;
    sp_response_info_t  info;

    memset(&info, 0, sizeof(info));
    assert_int_equal(sp_usage_from_json(source, body, strlen(body), &info),
                     SP_OK);
    assert_int_equal(info.has_usage, 1);

    assert_int_equal(sp_translate_response(source, 200, body, strlen(body),
                                           "chatcmpl-1", 1, out, sizeof(out),
                                           &len), SP_OK);
    root = json_loadb(out, len, 0, NULL);
    assert_non_null(root);
    usage = json_object_get(root, "usage");

    assert_true(json_integer_value(json_object_get(usage, "prompt_tokens"))
                == info.usage.input_tokens);
    assert_true(json_integer_value(json_object_get(usage,
                                                   "completion_tokens"))
                == info.usage.output_tokens);
    assert_true(json_integer_value(json_object_get(json_object_get(usage,
                    "prompt_tokens_details"), "cached_tokens"))
                == info.usage.cached_tokens);

    json_decref(root);
}


static const char  anthropic_answer[] =
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-sonnet-4-5-20250929\",\"content\":["
    "{\"type\":\"thinking\",\"thinking\":\"hmm\",\"signature\":\"s\"},"
    "{\"type\":\"text\",\"text\":\"Let me \\\"check\\\".\"},"
    "{\"type\":\"text\",\"text\":\" Done.\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
    "\"input\":{\"city\": \"Paris \\\\ \\\"FR\\\"\", \"n\": [1, 2.5]}}],"
    "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{"
    "\"input_tokens\":10,\"cache_creation_input_tokens\":20,"
    "\"cache_read_input_tokens\":30,\"output_tokens\":5}}";

static const char  google_answer[] =
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"think\","
    "\"thought\":true},{\"text\":\"Hello\"},{\"text\":\" there\"},"
    "{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}],\"role\":"
    "\"model\"},\"finishReason\":\"STOP\",\"index\":0},{\"content\":"
    "{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"finishReason\":"
    "\"MAX_TOKENS\",\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":"
    "12,\"candidatesTokenCount\":8,\"thoughtsTokenCount\":4,"
    "\"cachedContentTokenCount\":6,\"totalTokenCount\":24},"
    "\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}";

static const char  cohere_answer[] =
    "{\"id\":\"c1\",\"message\":{\"role\":\"assistant\",\"tool_plan\":"
    "\"plan\",\"tool_calls\":[{\"id\":\"get_weather_1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
    "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":\"TOOL_CALL\","
    "\"usage\":{\"billed_units\":{\"input_tokens\":7,\"output_tokens\":3},"
    "\"tokens\":{\"input_tokens\":70,\"output_tokens\":4}}}";


static void
test_anthropic_answer_becomes_a_chat_completion(void **state)
{
    (void) state;

    answer(SP_PROVIDER_ANTHROPIC, 200, anthropic_answer,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"claude-sonnet-4-5-20250929\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"Let me \\\"check\\\". Done.\",\"refusal\":null,"
        "\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"city\\\":\\\"Paris \\\\\\\\ \\\\\\\"FR\\\\\\\"\\\","
        "\\\"n\\\":[1,2.5]}\"}}]},\"logprobs\":null,\"finish_reason\":"
        "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":60,"
        "\"completion_tokens\":5,\"total_tokens\":65,"
        "\"prompt_tokens_details\":{\"cached_tokens\":30}}}");

    usage_agrees(SP_PROVIDER_ANTHROPIC, anthropic_answer);

    /* the arguments are the input, exactly */
    {
        char     out[4096];
        size_t   len;
        json_t  *root, *args, *input;

        assert_int_equal(sp_translate_response(SP_PROVIDER_ANTHROPIC, 200,
                             anthropic_answer, strlen(anthropic_answer),
                             "chatcmpl-1", 1, out, sizeof(out), &len),
                         SP_OK);
        root = json_loadb(out, len, 0, NULL);
        args = json_loads(json_string_value(json_object_get(json_object_get(
                   json_array_get(json_object_get(json_object_get(
                   json_array_get(json_object_get(root, "choices"), 0),
                   "message"), "tool_calls"), 0), "function"),
                   "arguments")), 0, NULL);
        input = json_loads("{\"city\": \"Paris \\\\ \\\"FR\\\"\", "
                           "\"n\": [1, 2.5]}", 0, NULL);
        assert_non_null(args);
        assert_true(json_equal(args, input));
        json_decref(args);
        json_decref(input);
        json_decref(root);
    }

    answer(SP_PROVIDER_ANTHROPIC, 200,
        "{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\","
        "\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"stop_reason\":"
        "\"max_tokens\"}",
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"asked-model\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"x\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
        "\"length\"}]}");
}


static void
test_google_answer_becomes_a_chat_completion(void **state)
{
    (void) state;

    answer(SP_PROVIDER_GOOGLE, 200, google_answer,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"gemini-2.5-flash\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"Hello there\",\"refusal\":null,\"tool_calls\":[{"
        "\"id\":\"call_chatcmpl-1_0\",\"type\":\"function\",\"function\":{"
        "\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},\"logprobs\":"
        "null,\"finish_reason\":\"tool_calls\"},{\"index\":1,\"message\":"
        "{\"role\":\"assistant\",\"content\":\"Hi\",\"refusal\":null},"
        "\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{"
        "\"prompt_tokens\":12,\"completion_tokens\":12,\"total_tokens\":24,"
        "\"prompt_tokens_details\":{\"cached_tokens\":6}}}");

    usage_agrees(SP_PROVIDER_GOOGLE, google_answer);

    answer(SP_PROVIDER_GOOGLE, 200,
        "{\"candidates\":[{\"finishReason\":\"SAFETY\",\"index\":0}]}",
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"asked-model\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "null,\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
        "\"content_filter\"}]}");
}


static void
test_cohere_and_mistral_answers_become_chat_completions(void **state)
{
    static const char  mistral[] =
        "{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":5,"
        "\"model\":\"mistral-large-2411\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"tool_calls\":null,"
        "\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\"usage\":{"
        "\"prompt_tokens\":3,\"total_tokens\":5,\"completion_tokens\":2}}";

    (void) state;

    answer(SP_PROVIDER_COHERE, 200, cohere_answer,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"asked-model\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
        "\"refusal\":null,\"tool_calls\":[{\"id\":\"get_weather_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"logprobs\":"
        "null,\"finish_reason\":\"tool_calls\"}],\"usage\":{"
        "\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,"
        "\"prompt_tokens_details\":{\"cached_tokens\":0}}}");

    usage_agrees(SP_PROVIDER_COHERE, cohere_answer);

    answer(SP_PROVIDER_MISTRAL, 200, mistral,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
        "\"created\":1700000000,\"model\":\"mistral-large-2411\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"tool_calls\":null,\"content\":\"ok\"},\"finish_reason\":"
        "\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
        "\"total_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":"
        "0}}}");

    usage_agrees(SP_PROVIDER_MISTRAL, mistral);
}


static void
test_error_answers_take_openai_error_shape(void **state)
{
    (void) state;

    answer(SP_PROVIDER_ANTHROPIC, 429,
        "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
        "\"message\":\"slow down \\u00e4\"},\"request_id\":\"r\"}",
        "{\"error\":{\"message\":\"slow down \\u00e4\",\"type\":"
        "\"rate_limit_error\",\"param\":null,\"code\":"
        "\"rate_limit_error\"}}");

    answer(SP_PROVIDER_GOOGLE, 400,
        "{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":"
        "\"INVALID_ARGUMENT\"}}",
        "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\","
        "\"param\":null,\"code\":\"INVALID_ARGUMENT\"}}");

    answer(SP_PROVIDER_COHERE, 500, "{\"id\":\"u\",\"message\":\"boom\"}",
        "{\"error\":{\"message\":\"boom\",\"type\":\"api_error\","
        "\"param\":null,\"code\":null}}");

    answer(SP_PROVIDER_MISTRAL, 401,
        "{\"message\":\"Unauthorized\",\"request_id\":\"q\"}",
        "{\"error\":{\"message\":\"Unauthorized\",\"type\":"
        "\"authentication_error\",\"param\":null,\"code\":null}}");

    answer(SP_PROVIDER_AZURE, 404,
        "{\"error\":{\"code\":\"DeploymentNotFound\",\"message\":\"no\"}}",
        "{\"error\":{\"message\":\"no\",\"type\":\"not_found_error\","
        "\"param\":null,\"code\":\"DeploymentNotFound\"}}");
}


static void
test_hostile_answers_are_errors(void **state)
{
    static const char  *bodies[] = {
        "", "{", "[1]", "{\"content\":5}", "{\"candidates\":{}}",
        "{\"message\":[]}", "{\"choices\":{}}", "{\"content\":[",
    };

    char    out[4096];
    size_t  i, len;
    int     p;

    (void) state;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (p = SP_PROVIDER_OPENAI; p <= SP_PROVIDER_MISTRAL; p++) {
            assert_int_equal(sp_translate_response((sp_provider_e) p, 200,
                                 bodies[i], strlen(bodies[i]), "chatcmpl-1",
                                 1, out, sizeof(out), &len), SP_ERROR);
        }
    }

    /* an error without a message; an id that cannot be written */
    assert_int_equal(sp_translate_response(SP_PROVIDER_ANTHROPIC, 500,
                         "{\"error\":{}}", 12, "chatcmpl-1", 1, out,
                         sizeof(out), &len), SP_ERROR);
    assert_int_equal(sp_translate_response(SP_PROVIDER_ANTHROPIC, 200,
                         anthropic_answer, strlen(anthropic_answer),
                         "chat\"cmpl", 1, out, sizeof(out), &len), SP_ERROR);
}


static void
test_answer_output_one_byte_short_is_an_error(void **state)
{
    static const sp_provider_e  sources[] = {
        SP_PROVIDER_ANTHROPIC, SP_PROVIDER_GOOGLE, SP_PROVIDER_COHERE
    };
    const char  *bodies[] = { anthropic_answer, google_answer, cohere_answer };

    char    *out, big[8192];
    size_t   i, need, len;

    (void) state;

    for (i = 0; i < 3; i++) {
        assert_int_equal(sp_translate_response(sources[i], 200, bodies[i],
                             strlen(bodies[i]), "chatcmpl-1", 1, big,
                             sizeof(big), &need), SP_OK);
        out = malloc(need);
        assert_non_null(out);
        assert_int_equal(sp_translate_response(sources[i], 200, bodies[i],
                             strlen(bodies[i]), "chatcmpl-1", 1, out, need,
                             &len), SP_OK);
        assert_int_equal(len, need);
        assert_int_equal(sp_translate_response(sources[i], 200, bodies[i],
                             strlen(bodies[i]), "chatcmpl-1", 1, out,
                             need - 1, &len), SP_ERROR);
        free(out);
    }
}


/* ---- answers: streams ------------------------------------------------ */

typedef struct {
    char     content[1024];
    char     tool_id[4][64];
    char     tool_name[4][64];
    char     tool_args[4][256];
    int      tools;
    char     finish[32];
    int64_t  prompt, completion, cached;
    int      has_usage;
    int      done;
    int      chunks;
    int      errors;
    char     model[64];
} seen_t;


/* an OpenAI stream, read as the openai SDK reads it */
static void
read_stream(const char *s, size_t len, seen_t *seen)
{
    const char  *p, *end, *last;
    json_t      *root, *choice, *delta, *v, *call;
    size_t       i, k;
    int          index;

    memset(seen, 0, sizeof(seen_t));
    p = s;
    last = s + len;

    while (p < last) {
        end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_true(end < last);
        assert_memory_equal(p, "data: ", 6);
        p += 6;

        assert_false(seen->done);

        if (end - p == 6 && memcmp(p, "[DONE]", 6) == 0) {
            seen->done = 1;
            p = end + 2;
            continue;
        }

        root = json_loadb(p, (size_t) (end - p), 0, NULL);
        if (root == NULL) {
            fail_msg("not JSON: %.*s", (int) (end - p), p);
        }

        if (json_object_get(root, "error")) {
            seen->errors++;
            json_decref(root);
            p = end + 2;
            continue;
        }

        assert_string_equal(json_string_value(json_object_get(root,
                                                              "object")),
                            "chat.completion.chunk");
        assert_string_equal(json_string_value(json_object_get(root, "id")),
                            "chatcmpl-9");
        assert_true(json_integer_value(json_object_get(root, "created"))
                    == 1700000001);
        v = json_object_get(root, "model");
        assert_true(json_is_string(v));
        snprintf(seen->model, sizeof(seen->model), "%s",
                 json_string_value(v));

        if (seen->chunks++ == 0) {
            /* the first chunk: the role and an empty content */
            delta = json_object_get(json_array_get(json_object_get(root,
                                                   "choices"), 0), "delta");
            assert_string_equal(json_string_value(json_object_get(delta,
                                                  "role")), "assistant");
        }

        v = json_object_get(root, "usage");

        if (json_is_object(v)) {
            assert_int_equal(json_array_size(json_object_get(root,
                                                             "choices")), 0);
            seen->has_usage = 1;
            seen->prompt = json_integer_value(json_object_get(v,
                                              "prompt_tokens"));
            seen->completion = json_integer_value(json_object_get(v,
                                                  "completion_tokens"));
            seen->cached = json_integer_value(json_object_get(
                               json_object_get(v, "prompt_tokens_details"),
                               "cached_tokens"));
            assert_true(json_integer_value(json_object_get(v,
                            "total_tokens"))
                        == seen->prompt + seen->completion);
        }

        json_array_foreach(json_object_get(root, "choices"), i, choice) {
            delta = json_object_get(choice, "delta");
            v = json_object_get(delta, "content");

            if (json_is_string(v)) {
                strcat(seen->content, json_string_value(v));
            }

            json_array_foreach(json_object_get(delta, "tool_calls"), k, call)
            {
                index = (int) json_integer_value(json_object_get(call,
                                                                 "index"));
                assert_true(index >= 0 && index < 4);

                if (index + 1 > seen->tools) {
                    seen->tools = index + 1;
                }

                v = json_object_get(call, "id");
                if (json_is_string(v)) {
                    strcpy(seen->tool_id[index], json_string_value(v));
                }

                v = json_object_get(json_object_get(call, "function"),
                                    "name");
                if (json_is_string(v)) {
                    strcpy(seen->tool_name[index], json_string_value(v));
                }

                v = json_object_get(json_object_get(call, "function"),
                                    "arguments");
                if (json_is_string(v)) {
                    strcat(seen->tool_args[index], json_string_value(v));
                }
            }

            v = json_object_get(choice, "finish_reason");

            if (json_is_string(v)) {
                /* the finish chunk's delta is empty */
                assert_int_equal(json_object_size(delta), 0);
                snprintf(seen->finish, sizeof(seen->finish), "%s",
                         json_string_value(v));
            }
        }

        json_decref(root);
        p = end + 2;
    }
}


typedef struct {
    const char  *event;
    const char  *data;
} ev_t;


/* events through a stream into one buffer; each event's output exact */
static size_t
run_stream(sp_provider_e source, int include_usage, const ev_t *evs,
    size_t n, int end, char *all, size_t allsize)
{
    sp_translate_stream_t  st;
    size_t                 i, len, got, bound;
    char                  *out;

    sp_translate_stream_init(&st, source, include_usage, "chatcmpl-9",
                             1700000001);
    len = 0;

    for (i = 0; i < n; i++) {
        bound = sp_translate_stream_bound(strlen(evs[i].data));
        out = malloc(bound);
        assert_non_null(out);

        got = sp_translate_stream_event(&st, evs[i].event,
                                        strlen(evs[i].event), evs[i].data,
                                        strlen(evs[i].data), out, bound);
        if (got == (size_t) -1) {
            fail_msg("event %zu refused: %s", i, evs[i].data);
        }

        assert_true(len + got <= allsize);
        memcpy(all + len, out, got);
        len += got;
        free(out);
    }

    if (end) {
        out = malloc(8192);
        assert_non_null(out);
        got = sp_translate_stream_end(&st, out, 8192);
        assert_true(got != (size_t) -1);
        memcpy(all + len, out, got);
        len += got;
        free(out);
    }

    return len;
}


static const ev_t  anthropic_events[] = {
    { "message_start", "{\"type\":\"message_start\",\"message\":{\"id\":"
      "\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
      "\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,"
      "\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":5,"
      "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}" },
    { "content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
      "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}" },
    { "ping", "{\"type\": \"ping\"}" },
    { "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
      "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello \\\"you\\\"\"}}" },
    { "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
      "\"delta\":{\"type\":\"text_delta\",\"text\":\", \\u00e4!\"}}" },
    { "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}" },
    { "content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
      "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\","
      "\"name\":\"get_weather\",\"input\":{}}}" },
    { "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
      "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}" },
    { "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
      "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
      "\"{\\\"city\\\": \\\"Pa\"}}" },
    { "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,"
      "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
      "\"ris\\\"}\"}}" },
    { "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}" },
    { "message_delta", "{\"type\":\"message_delta\",\"delta\":{"
      "\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{"
      "\"output_tokens\":42}}" },
    { "message_stop", "{\"type\":\"message_stop\"}" },
};


static void
test_anthropic_stream_becomes_chunks(void **state)
{
    char    all[16384];
    size_t  len;
    seen_t  seen;

    (void) state;

    len = run_stream(SP_PROVIDER_ANTHROPIC, 1, anthropic_events,
                     sizeof(anthropic_events) / sizeof(ev_t), 1, all,
                     sizeof(all));
    read_stream(all, len, &seen);

    assert_string_equal(seen.content, "Hello \"you\", \xc3\xa4!");
    assert_int_equal(seen.tools, 1);
    assert_string_equal(seen.tool_id[0], "toolu_1");
    assert_string_equal(seen.tool_name[0], "get_weather");
    assert_string_equal(seen.tool_args[0], "{\"city\": \"Paris\"}");
    assert_string_equal(seen.finish, "tool_calls");
    assert_int_equal(seen.has_usage, 1);
    assert_true(seen.prompt == 130);
    assert_true(seen.completion == 42);
    assert_true(seen.cached == 100);
    assert_int_equal(seen.done, 1);
    assert_string_equal(seen.model, "claude-sonnet-4-5-20250929");

    /* without include_usage: no usage chunk, no "usage" member at all */
    len = run_stream(SP_PROVIDER_ANTHROPIC, 0, anthropic_events,
                     sizeof(anthropic_events) / sizeof(ev_t), 0, all,
                     sizeof(all));
    read_stream(all, len, &seen);
    assert_int_equal(seen.has_usage, 0);
    assert_int_equal(seen.done, 1);
    assert_null(memmem(all, len, "\"usage\"", 7));
}


static void
test_google_stream_becomes_chunks(void **state)
{
    static const ev_t  evs[] = {
        { "", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],"
          "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{"
          "\"promptTokenCount\":9,\"candidatesTokenCount\":1},"
          "\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r\"}" },
        { "", "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"},"
          "{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":\"b\"}}}],"
          "\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],"
          "\"usageMetadata\":{\"promptTokenCount\":9,"
          "\"candidatesTokenCount\":4,\"thoughtsTokenCount\":2,"
          "\"cachedContentTokenCount\":3},\"modelVersion\":"
          "\"gemini-2.5-flash\",\"responseId\":\"r\"}" },
    };

    char    all[16384];
    size_t  len;
    seen_t  seen;

    (void) state;

    len = run_stream(SP_PROVIDER_GOOGLE, 1, evs, 2, 1, all, sizeof(all));
    read_stream(all, len, &seen);

    assert_string_equal(seen.content, "Hello");
    assert_int_equal(seen.tools, 1);
    assert_string_equal(seen.tool_name[0], "f");
    assert_string_equal(seen.tool_id[0], "call_chatcmpl-9_0");
    assert_string_equal(seen.tool_args[0], "{\"a\":\"b\"}");
    assert_string_equal(seen.finish, "tool_calls");
    assert_true(seen.prompt == 9);
    assert_true(seen.completion == 6);
    assert_true(seen.cached == 3);
    assert_int_equal(seen.done, 1);
    assert_string_equal(seen.model, "gemini-2.5-flash");
}


static void
test_cohere_stream_becomes_chunks(void **state)
{
    static const ev_t  evs[] = {
        { "message-start", "{\"id\":\"x\",\"type\":\"message-start\","
          "\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],"
          "\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}" },
        { "content-start", "{\"type\":\"content-start\",\"index\":0,"
          "\"delta\":{\"message\":{\"content\":{\"type\":\"text\","
          "\"text\":\"\"}}}}" },
        { "content-delta", "{\"type\":\"content-delta\",\"index\":0,"
          "\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}" },
        { "content-end", "{\"type\":\"content-end\",\"index\":0}" },
        { "tool-call-start", "{\"type\":\"tool-call-start\",\"index\":0,"
          "\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"t1\",\"type\":"
          "\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"\"}}}}}" },
        { "tool-call-delta", "{\"type\":\"tool-call-delta\",\"index\":0,"
          "\"delta\":{\"message\":{\"tool_calls\":{\"function\":{"
          "\"arguments\":\"{\\\"q\\\":1}\"}}}}}" },
        { "tool-call-end", "{\"type\":\"tool-call-end\",\"index\":0}" },
        { "message-end", "{\"type\":\"message-end\",\"delta\":{"
          "\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{"
          "\"input_tokens\":5,\"output_tokens\":7},\"tokens\":{"
          "\"input_tokens\":69,\"output_tokens\":8}}}}" },
        { "", "[DONE]" },
    };

    char    all[16384];
    size_t  len;
    seen_t  seen;

    (void) state;

    len = run_stream(SP_PROVIDER_COHERE, 1, evs, sizeof(evs) / sizeof(ev_t),
                     1, all, sizeof(all));
    read_stream(all, len, &seen);

    assert_string_equal(seen.content, "Hi");
    assert_int_equal(seen.tools, 1);
    assert_string_equal(seen.tool_id[0], "t1");
    assert_string_equal(seen.tool_name[0], "g");
    assert_string_equal(seen.tool_args[0], "{\"q\":1}");
    assert_string_equal(seen.finish, "tool_calls");
    assert_true(seen.prompt == 5);
    assert_true(seen.completion == 7);
    assert_int_equal(seen.done, 1);
}


static void
test_mistral_stream_moves_usage_to_its_own_chunk(void **state)
{
    static const ev_t  evs[] = {
        { "", "{\"id\":\"m\",\"object\":\"chat.completion.chunk\","
          "\"created\":3,\"model\":\"mistral-small-latest\",\"choices\":[{"
          "\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
          "\"finish_reason\":null}]}" },
        { "", "{\"id\":\"m\",\"object\":\"chat.completion.chunk\","
          "\"created\":3,\"model\":\"mistral-small-latest\",\"choices\":[{"
          "\"index\":0,\"delta\":{\"content\":\"Bonjour\"},"
          "\"finish_reason\":null}]}" },
        { "", "{\"id\":\"m\",\"object\":\"chat.completion.chunk\","
          "\"created\":3,\"model\":\"mistral-small-latest\",\"choices\":[{"
          "\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],"
          "\"usage\":{\"prompt_tokens\":4,\"total_tokens\":20,"
          "\"completion_tokens\":16}}" },
        { "", "[DONE]" },
    };

    char    all[16384];
    size_t  len;
    seen_t  seen;

    (void) state;

    len = run_stream(SP_PROVIDER_MISTRAL, 1, evs, 4, 0, all, sizeof(all));
    read_stream(all, len, &seen);

    assert_string_equal(seen.content, "Bonjour");
    assert_string_equal(seen.finish, "length");
    assert_true(seen.prompt == 4);
    assert_true(seen.completion == 16);
    assert_int_equal(seen.done, 1);
    assert_string_equal(seen.model, "mistral-small-latest");
}


static void
test_stream_errors_and_hostile_events(void **state)
{
    sp_translate_stream_t  st;
    char                   out[8192];
    size_t                 got;
    seen_t                 seen;
    int                    p;

    static const char   overloaded[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}";
    static const char  *bad[] = {
        "", "{", "nope", "[1,2]", "{\"type\":5}",
        "{\"candidates\":{}}", "{\"choices\":{}}",
    };
    size_t  i;

    (void) state;

    sp_translate_stream_init(&st, SP_PROVIDER_ANTHROPIC, 1, "chatcmpl-9",
                             1700000001);
    got = sp_translate_stream_event(&st, "error", 5, overloaded,
                                    strlen(overloaded), out, sizeof(out));
    assert_true(got != (size_t) -1);
    read_stream(out, got, &seen);
    assert_int_equal(seen.errors, 1);
    assert_int_equal(seen.done, 0);

    /* nothing follows an error */
    assert_int_equal(sp_translate_stream_end(&st, out, sizeof(out)), 0);

    for (p = SP_PROVIDER_OPENAI; p <= SP_PROVIDER_MISTRAL; p++) {
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            sp_translate_stream_init(&st, (sp_provider_e) p, 1, "chatcmpl-9",
                                     1);
            got = sp_translate_stream_event(&st, "", 0, bad[i],
                                            strlen(bad[i]), out,
                                            sizeof(out));

            /* a Gemini chunk may carry no candidates (usage only) */
            if (i < 4 || (i == 4 && p != SP_PROVIDER_GOOGLE)
                || (i == 5 && p == SP_PROVIDER_GOOGLE)
                || (i == 6 && (p == SP_PROVIDER_OPENAI
                               || p == SP_PROVIDER_AZURE
                               || p == SP_PROVIDER_MISTRAL)))
            {
                if (got != (size_t) -1) {
                    fail_msg("provider %d took \"%s\"", p, bad[i]);
                }
            }
        }
    }

    /* one byte short of an event's output */
    sp_translate_stream_init(&st, SP_PROVIDER_ANTHROPIC, 1, "chatcmpl-9", 1);
    got = sp_translate_stream_event(&st, "", 0, anthropic_events[0].data,
                                    strlen(anthropic_events[0].data), out,
                                    sizeof(out));
    assert_true(got > 0 && got != (size_t) -1);
    sp_translate_stream_init(&st, SP_PROVIDER_ANTHROPIC, 1, "chatcmpl-9", 1);
    assert_true(sp_translate_stream_event(&st, "", 0,
                    anthropic_events[0].data,
                    strlen(anthropic_events[0].data), out, got - 1)
                == (size_t) -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_anthropic_request_maps_every_member),
        cmocka_unit_test(test_anthropic_request_defaults_max_tokens),
        cmocka_unit_test(test_google_request_maps_every_member),
        cmocka_unit_test(test_cohere_request_maps_every_member),
        cmocka_unit_test(test_mistral_request_keeps_what_mistral_knows),
        cmocka_unit_test(test_azure_and_openai_requests_change_only_the_model),
        cmocka_unit_test(test_requests_a_target_cannot_take_say_why),
        cmocka_unit_test(test_request_output_one_byte_short_is_an_error),
        cmocka_unit_test(test_hostile_requests_are_errors),
        cmocka_unit_test(test_request_the_scanner_declines_translates_the_same),
        cmocka_unit_test(test_anthropic_answer_becomes_a_chat_completion),
        cmocka_unit_test(test_google_answer_becomes_a_chat_completion),
        cmocka_unit_test(
            test_cohere_and_mistral_answers_become_chat_completions),
        cmocka_unit_test(test_error_answers_take_openai_error_shape),
        cmocka_unit_test(test_hostile_answers_are_errors),
        cmocka_unit_test(test_answer_output_one_byte_short_is_an_error),
        cmocka_unit_test(test_anthropic_stream_becomes_chunks),
        cmocka_unit_test(test_google_stream_becomes_chunks),
        cmocka_unit_test(test_cohere_stream_becomes_chunks),
        cmocka_unit_test(test_mistral_stream_moves_usage_to_its_own_chunk),
        cmocka_unit_test(test_stream_errors_and_hostile_events),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
