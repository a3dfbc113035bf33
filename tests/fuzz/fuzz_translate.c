/*
 * Cross-provider translation on random input: requests for every target,
 * answers and stream events of every source.
 *
 * Input: any bytes, taken as an OpenAI request body, as a provider's
 * answer, and (split on newlines) as a provider's stream events. The
 * invariants: sp_translate_check() says 1 exactly when the request
 * translates into a buffer of sp_translate_request_bound() bytes;
 * whatever is written is JSON (each SSE chunk's data too) and fits the
 * bound; an exact-size buffer takes it and one byte less is refused
 * without a write past its end (ASan watches the malloc()ed buffers).
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_translate.h"


static void
fuzz_is_json(const char *s, size_t len)
{
    json_t  *v;

    v = json_loadb(s, len, JSON_ALLOW_NUL, NULL);
    if (v == NULL) {
        fprintf(stderr, "not JSON: %.*s\n", (int) len, s);
    }

    FUZZ_CHECK(v != NULL);
    json_decref(v);
}


/* "data: {json}\n\n" ... "data: [DONE]\n\n" */
static void
fuzz_is_sse(const char *s, size_t len)
{
    const char  *p, *end, *last;

    p = s;
    last = s + len;

    while (p < last) {
        FUZZ_CHECK(last - p >= 8 && memcmp(p, "data: ", 6) == 0);
        p += 6;
        end = memmem(p, (size_t) (last - p), "\n\n", 2);
        FUZZ_CHECK(end != NULL);

        if (!(end - p == 6 && memcmp(p, "[DONE]", 6) == 0)) {
            fuzz_is_json(p, (size_t) (end - p));
        }

        p = end + 2;
    }
}


static void
fuzz_request(sp_provider_e target, const char *body, size_t size)
{
    int                     ok, rc;
    char                   *out, why[128];
    size_t                  bound, need;
    sp_translate_request_t  res;

    ok = sp_translate_check(target, body, size, why, sizeof(why));
    FUZZ_CHECK(ok == 0 || ok == 1);

    bound = sp_translate_request_bound(size);
    out = malloc(bound);
    FUZZ_CHECK(out != NULL);

    rc = sp_translate_request(target, "tgt-model\"x", 11, body, size, out,
                              bound, &res, why, sizeof(why));

    if (target != SP_PROVIDER_OPENAI) {
        FUZZ_CHECK((rc == SP_OK) == ok);
    }

    need = res.body_len;

    /* the longest model, every byte escaped six-fold, where the path
     * does not hold it: the bound holds */
    if (rc == SP_OK && target != SP_PROVIDER_GOOGLE
        && target != SP_PROVIDER_AZURE)
    {
        char  model[SP_FIELD_LEN];

        memset(model, '\x01', sizeof(model));
        FUZZ_CHECK(sp_translate_request(target, model, sizeof(model) - 1,
                                        body, size, out, bound, &res, why,
                                        sizeof(why)) == SP_OK);
        fuzz_is_json(out, res.body_len);
    }

    free(out);

    if (rc != SP_OK) {
        return;
    }

    FUZZ_CHECK(need <= bound);
    FUZZ_CHECK(strlen(res.path) < SP_TRANSLATE_PATH_MAX);

    out = malloc(need);
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(sp_translate_request(target, "tgt-model\"x", 11, body, size,
                                    out, need, &res, why, sizeof(why))
               == SP_OK);
    fuzz_is_json(out, need);
    FUZZ_CHECK(sp_translate_request(target, "tgt-model\"x", 11, body, size,
                                    out, need - 1, &res, why, sizeof(why))
               == SP_ERROR);
    free(out);
}


static void
fuzz_response(sp_provider_e source, int status, const char *body,
    size_t size)
{
    char    *out, model[SP_FIELD_LEN];
    size_t   bound, len, len2;

    /* the longest requested model, every byte escaped six-fold */
    memset(model, '\x01', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';

    bound = sp_translate_response_bound(size);
    out = malloc(bound);
    FUZZ_CHECK(out != NULL);

    if (sp_translate_response_model(source, status, body, size, "chatcmpl-x",
                                    1, model, sizeof(model) - 1, out, bound,
                                    &len)
        != SP_OK)
    {
        free(out);
        return;
    }

    FUZZ_CHECK(len <= bound);
    fuzz_is_json(out, len);
    free(out);

    out = malloc(len);
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(sp_translate_response_model(source, status, body, size,
                   "chatcmpl-x", 1, model, sizeof(model) - 1, out, len,
                   &len2)
               == SP_OK && len2 == len);
    FUZZ_CHECK(sp_translate_response_model(source, status, body, size,
                   "chatcmpl-x", 1, model, sizeof(model) - 1, out,
                   len - 1, &len2)
               == SP_ERROR);
    free(out);
}


static void
fuzz_stream(sp_provider_e source, const char *body, size_t size)
{
    sp_translate_stream_t  st;
    const char            *p, *nl, *last;
    char                  *out;
    size_t                 bound, got, n;

    sp_translate_stream_init(&st, source, (int) (size & 1), "chatcmpl-x",
                             1);
    /* the longest model, every byte escaped six-fold: the bound holds */
    memset(st.model, (size & 2) ? '\x01' : 'm', sizeof(st.model) - 1);
    st.model[sizeof(st.model) - 1] = '\0';

    p = body;
    last = body + size;

    while (p < last) {
        nl = memchr(p, '\n', (size_t) (last - p));
        n = nl ? (size_t) (nl - p) : (size_t) (last - p);

        bound = sp_translate_stream_bound(n);
        out = malloc(bound);
        FUZZ_CHECK(out != NULL);

        got = sp_translate_stream_event(&st, "", 0, p, n, out, bound);

        if (got != (size_t) -1) {
            FUZZ_CHECK(got <= bound);
            fuzz_is_sse(out, got);
        }

        free(out);
        p += n + 1;
    }

    out = malloc(sp_translate_stream_bound(0));
    FUZZ_CHECK(out != NULL);
    got = sp_translate_stream_end(&st, out, sp_translate_stream_bound(0));
    FUZZ_CHECK(got != (size_t) -1);
    fuzz_is_sse(out, got);
    FUZZ_CHECK(st.done);
    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *body;
    int    p;

    /* exactly size bytes, no NUL after them */
    body = (char *) fuzz_dup(data, size);

    for (p = SP_PROVIDER_OPENAI; p <= SP_PROVIDER_MISTRAL; p++) {
        fuzz_request((sp_provider_e) p, body, size);
        fuzz_response((sp_provider_e) p, 200, body, size);
        fuzz_response((sp_provider_e) p, 429, body, size);
        fuzz_stream((sp_provider_e) p, body, size);
    }

    free(body);

    return 0;
}
