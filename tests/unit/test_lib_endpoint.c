/*
 * libspendpol endpoint catalogue (sp_endpoint.c): which calls each
 * provider's catalogue governs, the pattern syntax organisations use for
 * more, and the checks controld runs on those patterns.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sp_endpoint.h"


static const sp_endpoint_t *
find(sp_provider_e provider, const char *method, const char *path)
{
    return sp_endpoint_find(provider, method, strlen(method), path,
                            strlen(path));
}


static void
assert_governed(sp_provider_e provider, const char *method,
    const char *path, const char *name, sp_meter_e meter, unsigned flags)
{
    const sp_endpoint_t  *e;

    e = find(provider, method, path);

    if (e == NULL) {
        fail_msg("%s %s %s is not governed", sp_provider_name(provider),
                 method, path);
    }

    assert_string_equal(e->method, method);
    assert_string_equal(e->name, name);
    assert_int_equal(e->meter, meter);
    assert_int_equal(e->flags, flags);
}


static void
assert_not_governed(sp_provider_e provider, const char *method,
    const char *path)
{
    const sp_endpoint_t  *e;

    e = find(provider, method, path);

    if (e != NULL) {
        fail_msg("%s %s %s is governed as %s", sp_provider_name(provider),
                 method, path, e->name);
    }
}


#define STREAMS_JSON     (SP_ENDPOINT_STREAMS | SP_ENDPOINT_JSON_BODY)
#define CHAT             (STREAMS_JSON | SP_ENDPOINT_CHAT)
#define JSON             SP_ENDPOINT_JSON_BODY


static void
test_endpoint_openai(void **state)
{
    sp_provider_e  p = SP_PROVIDER_OPENAI;

    (void) state;

    assert_governed(p, "POST", "/chat/completions", "chat.completions",
                    SP_METER_TOKENS, CHAT);
    assert_governed(p, "POST", "/completions", "completions",
                    SP_METER_TOKENS, CHAT);
    assert_governed(p, "POST", "/responses", "responses", SP_METER_TOKENS,
                    STREAMS_JSON);
    assert_governed(p, "POST", "/embeddings", "embeddings", SP_METER_EMBED,
                    JSON);
    assert_governed(p, "GET", "/models", "models.list", SP_METER_FREE, 0);
    assert_governed(p, "GET", "/models/gpt-4o-mini", "models.retrieve",
                    SP_METER_FREE, 0);
    assert_governed(p, "GET", "/models/ft:gpt-4o-mini:org:custom:abc",
                    "models.retrieve", SP_METER_FREE, 0);

    assert_not_governed(p, "POST", "/batches");
    assert_not_governed(p, "GET", "/batches");
    assert_not_governed(p, "POST", "/files");
    assert_not_governed(p, "GET", "/files/file-abc/content");
    assert_not_governed(p, "POST", "/fine_tuning/jobs");
    assert_not_governed(p, "POST", "/assistants");
    assert_not_governed(p, "POST", "/threads/thread_1/runs");
    assert_not_governed(p, "GET", "/responses/resp_123");
    assert_not_governed(p, "DELETE", "/responses/resp_123");
    assert_not_governed(p, "POST", "/responses/resp_123/cancel");
    assert_not_governed(p, "POST", "/images/generations");
    assert_not_governed(p, "POST", "/audio/transcriptions");
    assert_not_governed(p, "POST", "/moderations");
    assert_not_governed(p, "DELETE", "/models/ft:gpt-4o-mini:org:x");
    /* near misses */
    assert_not_governed(p, "GET", "/chat/completions");
    assert_not_governed(p, "post", "/chat/completions");
    assert_not_governed(p, "POST", "/chat/completions/");
    assert_not_governed(p, "POST", "/chat/completions/x");
    assert_not_governed(p, "POST", "/chat/completionsx");
    assert_not_governed(p, "POST", "/v1/chat/completions");
    assert_not_governed(p, "GET", "/models/");
    assert_not_governed(p, "GET", "/models/a/b");
    assert_not_governed(p, "POST", "/");
    assert_not_governed(p, "POST", "");
}


static void
test_endpoint_azure(void **state)
{
    sp_provider_e  p = SP_PROVIDER_AZURE;

    (void) state;

    /* what the AzureOpenAI SDK sends (tests/fixtures/providers/azure.mjs) */
    assert_governed(p, "POST", "/openai/deployments/prod-chat/chat/"
                    "completions", "chat.completions", SP_METER_TOKENS,
                    CHAT);
    assert_governed(p, "POST", "/openai/deployments/mini-eu/completions",
                    "completions", SP_METER_TOKENS, CHAT);
    assert_governed(p, "POST", "/openai/deployments/emb/embeddings",
                    "embeddings", SP_METER_EMBED, JSON);
    assert_governed(p, "POST", "/openai/v1/chat/completions",
                    "chat.completions", SP_METER_TOKENS, CHAT);
    assert_governed(p, "POST", "/openai/v1/completions", "completions",
                    SP_METER_TOKENS, CHAT);
    assert_governed(p, "POST", "/openai/v1/responses", "responses",
                    SP_METER_TOKENS, STREAMS_JSON);
    assert_governed(p, "POST", "/openai/v1/embeddings", "embeddings",
                    SP_METER_EMBED, JSON);
    assert_governed(p, "POST", "/openai/responses", "responses",
                    SP_METER_TOKENS, STREAMS_JSON);
    assert_governed(p, "GET", "/openai/models", "models.list",
                    SP_METER_FREE, 0);
    assert_governed(p, "GET", "/openai/v1/models", "models.list",
                    SP_METER_FREE, 0);

    assert_not_governed(p, "POST", "/openai/deployments//chat/completions");
    assert_not_governed(p, "POST", "/openai/deployments/a/b/chat/"
                        "completions");
    assert_not_governed(p, "POST", "/openai/batches");
    assert_not_governed(p, "POST", "/openai/v1/batches");
    assert_not_governed(p, "POST", "/openai/files");
    assert_not_governed(p, "POST", "/openai/fine_tuning/jobs");
    assert_not_governed(p, "POST", "/openai/assistants");
    assert_not_governed(p, "POST", "/openai/deployments/d/images/"
                        "generations");
    assert_not_governed(p, "GET", "/openai/v1/responses/resp_1");
    assert_not_governed(p, "POST", "/chat/completions");
}


static void
test_endpoint_anthropic(void **state)
{
    sp_provider_e  p = SP_PROVIDER_ANTHROPIC;

    (void) state;

    assert_governed(p, "POST", "/v1/messages", "messages", SP_METER_TOKENS,
                    STREAMS_JSON);
    assert_governed(p, "POST", "/v1/messages/count_tokens",
                    "messages.count_tokens", SP_METER_FREE, JSON);
    assert_governed(p, "GET", "/v1/models", "models.list", SP_METER_FREE, 0);
    assert_governed(p, "GET", "/v1/models/claude-sonnet-4-5",
                    "models.retrieve", SP_METER_FREE, 0);

    assert_not_governed(p, "POST", "/v1/messages/batches");
    assert_not_governed(p, "GET", "/v1/messages/batches");
    assert_not_governed(p, "GET", "/v1/messages/batches/msgbatch_1/results");
    assert_not_governed(p, "POST", "/v1/files");
    assert_not_governed(p, "POST", "/v1/complete");
    assert_not_governed(p, "GET", "/v1/messages");
    assert_not_governed(p, "POST", "/messages");
}


static void
test_endpoint_google(void **state)
{
    static const char  *versions[] = { "/v1beta", "/v1", NULL };
    sp_provider_e       p = SP_PROVIDER_GOOGLE;
    char                path[256];
    int                 i;

    (void) state;

    for (i = 0; versions[i]; i++) {
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash:"
                 "generateContent", versions[i]);
        assert_governed(p, "POST", path, "generateContent", SP_METER_TOKENS,
                        JSON);
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash-lite:"
                 "streamGenerateContent", versions[i]);
        assert_governed(p, "POST", path, "streamGenerateContent",
                        SP_METER_TOKENS, STREAMS_JSON);
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-pro:countTokens",
                 versions[i]);
        assert_governed(p, "POST", path, "countTokens", SP_METER_FREE, JSON);
        snprintf(path, sizeof(path), "%s/models/gemini-embedding-001:"
                 "embedContent", versions[i]);
        assert_governed(p, "POST", path, "embedContent", SP_METER_EMBED,
                        JSON);
        snprintf(path, sizeof(path), "%s/models/gemini-embedding-001:"
                 "batchEmbedContents", versions[i]);
        assert_governed(p, "POST", path, "batchEmbedContents",
                        SP_METER_EMBED, JSON);
        snprintf(path, sizeof(path), "%s/models", versions[i]);
        assert_governed(p, "GET", path, "models.list", SP_METER_FREE, 0);
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash",
                 versions[i]);
        assert_governed(p, "GET", path, "models.get", SP_METER_FREE, 0);

        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash:"
                 "batchGenerateContent", versions[i]);
        assert_not_governed(p, "POST", path);
        snprintf(path, sizeof(path), "%s/models/:generateContent",
                 versions[i]);
        assert_not_governed(p, "POST", path);
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash:"
                 "generateContentX", versions[i]);
        assert_not_governed(p, "POST", path);
        snprintf(path, sizeof(path), "%s/models/gemini-2.5-flash:"
                 "generateContent", versions[i]);
        assert_not_governed(p, "PUT", path);
        snprintf(path, sizeof(path), "%s/tunedModels/x:generateContent",
                 versions[i]);
        assert_not_governed(p, "POST", path);
        snprintf(path, sizeof(path), "%s/batches", versions[i]);
        assert_not_governed(p, "GET", path);
        snprintf(path, sizeof(path), "%s/files", versions[i]);
        assert_not_governed(p, "POST", path);
        snprintf(path, sizeof(path), "%s/cachedContents", versions[i]);
        assert_not_governed(p, "POST", path);
    }

    assert_not_governed(p, "POST", "/upload/v1beta/files");
    assert_not_governed(p, "POST", "/v2/models/gemini:generateContent");
}


static void
test_endpoint_cohere(void **state)
{
    sp_provider_e  p = SP_PROVIDER_COHERE;

    (void) state;

    assert_governed(p, "POST", "/v2/chat", "chat", SP_METER_TOKENS,
                    STREAMS_JSON);
    assert_governed(p, "POST", "/v1/chat", "chat", SP_METER_TOKENS,
                    STREAMS_JSON);
    assert_governed(p, "POST", "/v2/embed", "embed", SP_METER_EMBED, JSON);
    assert_governed(p, "POST", "/v1/embed", "embed", SP_METER_EMBED, JSON);
    assert_governed(p, "POST", "/v2/rerank", "rerank", SP_METER_SEARCH, JSON);
    assert_governed(p, "POST", "/v1/rerank", "rerank", SP_METER_SEARCH, JSON);
    assert_governed(p, "GET", "/v1/models", "models.list", SP_METER_FREE, 0);

    assert_not_governed(p, "POST", "/v1/embed-jobs");
    assert_not_governed(p, "POST", "/v1/datasets");
    assert_not_governed(p, "POST", "/v1/finetuning/finetuned-models");
    assert_not_governed(p, "POST", "/v1/classify");
    assert_not_governed(p, "POST", "/v2/chat/x");
}


static void
test_endpoint_mistral(void **state)
{
    sp_provider_e  p = SP_PROVIDER_MISTRAL;

    (void) state;

    /* Mistral reports stream usage unasked: STREAMS without CHAT */
    assert_governed(p, "POST", "/v1/chat/completions", "chat.completions",
                    SP_METER_TOKENS, STREAMS_JSON);
    assert_governed(p, "POST", "/v1/fim/completions", "fim.completions",
                    SP_METER_TOKENS, STREAMS_JSON);
    assert_governed(p, "POST", "/v1/embeddings", "embeddings",
                    SP_METER_EMBED, JSON);
    assert_governed(p, "GET", "/v1/models", "models.list", SP_METER_FREE, 0);

    assert_not_governed(p, "POST", "/v1/batch/jobs");
    assert_not_governed(p, "POST", "/v1/files");
    assert_not_governed(p, "POST", "/v1/fine_tuning/jobs");
    assert_not_governed(p, "POST", "/v1/agents/completions");
    assert_not_governed(p, "POST", "/v1/ocr");
    assert_not_governed(p, "POST", "/chat/completions");
}


static void
test_endpoint_unknown_provider(void **state)
{
    (void) state;

    assert_null(find(SP_PROVIDER_UNKNOWN, "POST", "/chat/completions"));
    assert_null(find((sp_provider_e) 99, "POST", "/chat/completions"));
}


/* every path the integration tests send through /v1/{provider} */
static void
test_endpoint_paths_the_tests_use_stay_governed(void **state)
{
    (void) state;

    assert_non_null(find(SP_PROVIDER_OPENAI, "POST", "/chat/completions"));
    assert_non_null(find(SP_PROVIDER_ANTHROPIC, "POST", "/v1/messages"));
    assert_non_null(find(SP_PROVIDER_GOOGLE, "POST",
                         "/v1beta/models/gemini-pro:streamGenerateContent"));
    assert_non_null(find(SP_PROVIDER_GOOGLE, "POST",
                         "/v1beta/models/gemini-2.5-flash-lite:"
                         "generateContent"));
    assert_non_null(find(SP_PROVIDER_AZURE, "POST",
                         "/openai/deployments/mini-eu/chat/completions"));
    assert_non_null(find(SP_PROVIDER_COHERE, "POST", "/v2/chat"));
    assert_non_null(find(SP_PROVIDER_MISTRAL, "POST",
                         "/v1/chat/completions"));
}


static int
match(const char *pattern, const char *path)
{
    return sp_endpoint_match(pattern, strlen(pattern), path, strlen(path));
}


static void
test_endpoint_match_syntax(void **state)
{
    (void) state;

    assert_true(match("/v1/files", "/v1/files"));
    assert_false(match("/v1/files", "/v1/file"));
    assert_false(match("/v1/files", "/v1/filesx"));
    assert_false(match("/v1/files", "/v1/files/"));
    assert_true(match("/", "/"));
    assert_false(match("/", "/x"));

    /* '*': one or more bytes within a segment */
    assert_true(match("/v1/files/*", "/v1/files/f"));
    assert_true(match("/v1/files/*", "/v1/files/file-abc"));
    assert_false(match("/v1/files/*", "/v1/files/"));
    assert_false(match("/v1/files/*", "/v1/files"));
    assert_false(match("/v1/files/*", "/v1/files/a/b"));
    assert_true(match("/v1/files/*/content", "/v1/files/f1/content"));
    assert_false(match("/v1/files/*/content", "/v1/files//content"));
    assert_true(match("/m/*:gen", "/m/a:gen"));
    assert_true(match("/m/*:gen", "/m/a:b:gen"));
    assert_true(match("/m/*:gen", "/m/a:gen:gen"));
    assert_false(match("/m/*:gen", "/m/:gen"));
    assert_false(match("/m/*:gen", "/m/a:genx"));
    assert_true(match("/m/a*b*c", "/m/aXbYc"));
    assert_true(match("/m/a*b*c", "/m/abbbbcbc"));
    assert_false(match("/m/a*b*c", "/m/abc"));
    assert_true(match("/m/pre*", "/m/prefix"));
    assert_false(match("/m/pre*", "/m/pre"));
    assert_true(match("/*", "/x"));
    assert_false(match("/*", "/"));

    /* a final "**": one or more bytes, '/' included */
    assert_true(match("/v1/files/**", "/v1/files/a"));
    assert_true(match("/v1/files/**", "/v1/files/a/b/c"));
    assert_false(match("/v1/files/**", "/v1/files/"));
    assert_false(match("/v1/files/**", "/v1/files"));
    assert_false(match("/v1/files/**", "/v1/filesx/a"));
    assert_true(match("/**", "/anything/at/all"));
    assert_false(match("/**", "/"));
    assert_true(match("/v1/*/**", "/v1/batches/b1/cancel"));

    /* the path must be a path */
    assert_false(match("/x", "x"));
    assert_false(match("x", "x"));
    assert_false(match("", ""));
    assert_false(match("/x", ""));
}


static void
assert_pattern_refused(const char *pattern, const char *reason)
{
    char  err[256];

    err[0] = '\0';

    if (sp_endpoint_pattern_valid(pattern, strlen(pattern), err, sizeof(err))
        != SP_ERROR)
    {
        fail_msg("pattern \"%s\" was accepted", pattern);
    }

    if (strstr(err, reason) == NULL) {
        fail_msg("pattern \"%s\": reason \"%s\" does not name \"%s\"",
                 pattern, err, reason);
    }
}


static void
test_endpoint_pattern_valid(void **state)
{
    char  big[SP_ENDPOINT_PATTERN_MAX + 2], err[256];

    (void) state;

    assert_int_equal(sp_endpoint_pattern_valid("/batches", 8, err,
                                               sizeof(err)),
                     SP_OK);
    assert_int_equal(sp_endpoint_pattern_valid("/v1/files/**", 12, err,
                                               sizeof(err)),
                     SP_OK);
    assert_int_equal(sp_endpoint_pattern_valid("/v1beta/models/*:batch"
                                               "GenerateContent", 37, err,
                                               sizeof(err)),
                     SP_OK);
    assert_int_equal(sp_endpoint_pattern_valid("/a-b_c.d~e:f@g!h$i&j'k(l)m"
                                               "+n,o;p=q/*", 36, err,
                                               sizeof(err)),
                     SP_OK);
    assert_int_equal(sp_endpoint_pattern_valid("/", 1, err, sizeof(err)),
                     SP_OK);

    assert_pattern_refused("", "start with '/'");
    assert_pattern_refused("batches", "start with '/'");
    assert_pattern_refused("/v1//files", "empty segment");
    assert_pattern_refused("//evil.com/x", "empty segment");
    assert_pattern_refused("/v1/../files", "\"..\" segment");
    assert_pattern_refused("/..", "\"..\" segment");
    assert_pattern_refused("/v1/./files", "\".\" segment");
    assert_pattern_refused("/v1/**/files", "\"**\" may only be");
    assert_pattern_refused("/v1/files**", "\"**\" may only be");
    assert_pattern_refused("/v1/a**b", "\"**\" may only be");
    assert_pattern_refused("/v1/files%2F", "'%'");
    assert_pattern_refused("/v1/files?x=1", "'?'");
    assert_pattern_refused("/v1/files#x", "'#'");
    assert_pattern_refused("/v1/files x", "' '");
    assert_pattern_refused("/v1/files\\x", "'\\'");
    assert_pattern_refused("/v1/files\r\n", "0x0d");
    assert_pattern_refused("/v1/caf\xc3\xa9", "0xc3");
    assert_pattern_refused("http://evil.com/x", "start with '/'");
    assert_pattern_refused("/http://evil.com/x", "empty segment");

    memset(big, 'a', sizeof(big));
    big[0] = '/';
    assert_int_equal(sp_endpoint_pattern_valid(big, SP_ENDPOINT_PATTERN_MAX,
                                               err, sizeof(err)),
                     SP_OK);
    assert_int_equal(sp_endpoint_pattern_valid(big,
                                               SP_ENDPOINT_PATTERN_MAX + 1,
                                               err, sizeof(err)),
                     SP_ERROR);
    assert_non_null(strstr(err, "at most 256 bytes"));
}


static void
test_endpoint_method_valid(void **state)
{
    static const char  *ok[] = { "GET", "POST", "PUT", "PATCH", "DELETE",
                                 NULL };
    static const char  *bad[] = { "get", "Post", "HEAD", "OPTIONS",
                                  "CONNECT", "TRACE", "", "GETX", "PO",
                                  NULL };
    int                 i;

    (void) state;

    for (i = 0; ok[i]; i++) {
        assert_int_equal(sp_endpoint_method_valid(ok[i], strlen(ok[i])), 1);
    }

    for (i = 0; bad[i]; i++) {
        assert_int_equal(sp_endpoint_method_valid(bad[i], strlen(bad[i])),
                         0);
    }

    assert_int_equal(sp_endpoint_method_valid("POSTX", 4), 1);
}


/* every catalogue entry passes the organisations' own checks and finds
 * itself */
static void
test_endpoint_catalogue_patterns_are_valid(void **state)
{
    const sp_endpoint_t  *e;
    char                  err[256];
    int                   p, n;

    (void) state;

    assert_null(sp_endpoint_catalogue(SP_PROVIDER_UNKNOWN));

    for (p = SP_PROVIDER_OPENAI; p <= SP_PROVIDER_MISTRAL; p++) {
        e = sp_endpoint_catalogue((sp_provider_e) p);
        assert_non_null(e);

        for (n = 0; e->method; e++, n++) {
            if (sp_endpoint_pattern_valid(e->pattern, strlen(e->pattern),
                                          err, sizeof(err))
                != SP_OK)
            {
                fail_msg("%s %s: %s", sp_provider_name((sp_provider_e) p),
                         e->pattern, err);
            }

            assert_true(sp_endpoint_method_valid(e->method,
                                                 strlen(e->method)));
            assert_non_null(e->name);
            assert_true(e->meter >= SP_METER_TOKENS
                        && e->meter <= SP_METER_FREE);
            /* a GET has no body to read, a POST always a JSON one */
            assert_int_equal(strcmp(e->method, "POST") == 0,
                             (e->flags & SP_ENDPOINT_JSON_BODY) != 0);
            /* the hot path scans these linearly: keep them few */
            assert_true(n < 16);
        }

        assert_true(n >= 4);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_endpoint_openai),
        cmocka_unit_test(test_endpoint_azure),
        cmocka_unit_test(test_endpoint_anthropic),
        cmocka_unit_test(test_endpoint_google),
        cmocka_unit_test(test_endpoint_cohere),
        cmocka_unit_test(test_endpoint_mistral),
        cmocka_unit_test(test_endpoint_unknown_provider),
        cmocka_unit_test(test_endpoint_paths_the_tests_use_stay_governed),
        cmocka_unit_test(test_endpoint_match_syntax),
        cmocka_unit_test(test_endpoint_pattern_valid),
        cmocka_unit_test(test_endpoint_method_valid),
        cmocka_unit_test(test_endpoint_catalogue_patterns_are_valid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
