/*
 * Request handling: sp_request_parse, sp_request_from_path,
 * sp_request_add_stream_usage and sp_request_set_stream_usage, for every
 * provider; sp_request_count_prompt for an o200k_base and a cl100k_base
 * model, which must count a body and its rewrites (re-escaped by
 * jansson) alike.
 *
 * Input: a path, a newline, the body ("/v1/chat/completions\n{...}");
 * without a newline the whole input is the body and the path is empty.
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_usage.h"


/* the rewritten body is JSON that asks for stream usage */
static void
fuzz_check_rewritten(const char *out, size_t n)
{
    sp_request_info_t  info;
    char               err[256];

    FUZZ_CHECK(sp_request_parse(SP_PROVIDER_OPENAI, out, n, &info, err,
                                sizeof(err))
               == SP_OK);
    FUZZ_CHECK(info.has_stream_options);
    FUZZ_CHECK(info.include_usage);
}


static sp_request_tokenizer_t  fuzz_tokenizer;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int   e;
    char  err[256];

    static const sp_tok_vocab_t  *vocab[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        fuzz_tokenizer.enc[e] = sp_tok_enc_create(e, vocab[e], err,
                                                  sizeof(err));
        FUZZ_CHECK(fuzz_tokenizer.enc[e] != NULL);
    }

    fuzz_tokenizer.ctx = sp_tok_ctx_create(0);
    FUZZ_CHECK(fuzz_tokenizer.ctx != NULL);

    return 0;
}


/* the prompt counts of a parsed body, for both encodings, or -1 */
static void
fuzz_count(const char *body, size_t len, int embeddings, int64_t counts[2])
{
    int                 e, rc;
    char                err[256];
    int64_t             worst_prompt, worst_output;
    sp_request_info_t   info;

    static const char  *models[2] = { "gpt-4o-mini", "gpt-4" };

    for (e = 0; e < 2; e++) {
        counts[e] = -1;

        if (sp_request_parse(SP_PROVIDER_OPENAI, body, len, &info, err,
                             sizeof(err))
            != SP_OK)
        {
            continue;
        }

        rc = sp_request_count_prompt(&fuzz_tokenizer, SP_PROVIDER_OPENAI,
                                     models[e], embeddings, body, len, &info);

        FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
        FUZZ_CHECK((rc == SP_OK) == (info.prompt_counted != 0));

        if (rc != SP_OK) {
            continue;
        }

        FUZZ_CHECK(info.prompt_bound >= 0);
        FUZZ_CHECK(info.prompt_tokens >= info.prompt_bound);

        sp_request_worst_case(&info, 16384, &worst_prompt, &worst_output);
        FUZZ_CHECK(worst_prompt >= info.prompt_tokens);
        FUZZ_CHECK(sp_request_prompt_estimate(&info) == info.prompt_tokens);

        counts[e] = info.prompt_tokens;
    }
}


/* an accepted model can go into a header: no control characters */
static void
fuzz_check_model(const char *model)
{
    const unsigned char  *p;

    for (p = (const unsigned char *) model; *p; p++) {
        FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_request_info_t   info, again;
    const uint8_t      *nl;
    size_t              path_len, body_len, outlen, small, n;
    char               *path, *body, *out, err[256];
    int                 p, rc, embeddings;
    int64_t             worst_prompt, worst_output, counts[2], again_counts[2];

    nl = memchr(data, '\n', size);

    if (nl) {
        path_len = (size_t) (nl - data);
        body_len = size - path_len - 1;

    } else {
        path_len = 0;
        body_len = size;
    }

    path = (char *) fuzz_dup(data, path_len);
    body = (char *) fuzz_dup(data + size - body_len, body_len);

    /* compact re-serialisation may lengthen numbers ("1e2" -> "100.0") */
    outlen = body_len * 8 + 256;
    out = malloc(outlen);
    FUZZ_CHECK(out != NULL);

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        err[0] = '\0';
        rc = sp_request_parse((sp_provider_e) p, body, body_len, &info, err,
                              sizeof(err));

        FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
        FUZZ_CHECK(strlen(err) < sizeof(err));

        if (rc != SP_OK) {
            FUZZ_CHECK(err[0] != '\0');
            FUZZ_CHECK(info.error_code != NULL);
            FUZZ_CHECK(strcmp(info.error_code, "invalid_json") == 0
                       || strcmp(info.error_code, "invalid_field") == 0
                       || strcmp(info.error_code, "duplicate_field") == 0);
            memset(&info, 0, sizeof(info));
            info.choices = 1;

        } else {
            fuzz_check_model(info.model);
        }

        FUZZ_CHECK(strlen(info.model) < sizeof(info.model));
        FUZZ_CHECK(info.max_tokens >= 0 && info.prompt_bytes >= 0);
        FUZZ_CHECK(info.max_tokens <= SP_REQUEST_MAX_OUTPUT_TOKENS);
        FUZZ_CHECK(info.choices >= 1
                   && info.choices <= SP_REQUEST_MAX_CHOICES);
        FUZZ_CHECK(info.media_tokens >= 0);
        FUZZ_CHECK(info.prompt_bytes <= (int64_t) body_len * 4);

        sp_request_worst_case(&info, 16384, &worst_prompt, &worst_output);
        FUZZ_CHECK(worst_prompt >= SP_REQUEST_FRAMING_TOKENS);
        FUZZ_CHECK(worst_output >= 0);

        sp_request_from_path((sp_provider_e) p, path, path_len, &info);

        FUZZ_CHECK(strlen(info.model) < sizeof(info.model));
        (void) sp_tokens_estimate(info.prompt_bytes);
    }

    rc = sp_request_parse(SP_PROVIDER_OPENAI, body, body_len, &info, err,
                          sizeof(err));

    embeddings = path_len > 0 && memmem(path, path_len, "embed", 5) != NULL;
    fuzz_count(body, body_len, embeddings, counts);

    /* the module's case: streamed, no stream_options in the body */
    n = sp_request_add_stream_usage(body, body_len, out, outlen);

    if (rc == SP_OK && body_len && !info.has_stream_options) {
        FUZZ_CHECK(n > 0);
        fuzz_check_rewritten(out, n);

        /* the rest of the request is unchanged */
        FUZZ_CHECK(sp_request_parse(SP_PROVIDER_OPENAI, out, n, &again, err,
                                    sizeof(err))
                   == SP_OK);
        FUZZ_CHECK(strcmp(again.model, info.model) == 0);
        FUZZ_CHECK(again.stream == info.stream);
        FUZZ_CHECK(again.max_tokens == info.max_tokens);
        FUZZ_CHECK(again.prompt_bytes == info.prompt_bytes);
        FUZZ_CHECK(again.choices == info.choices);
        FUZZ_CHECK(again.media_tokens == info.media_tokens);

        fuzz_count(out, n, embeddings, again_counts);
        FUZZ_CHECK(again_counts[0] == counts[0]
                   && again_counts[1] == counts[1]);
    }

    FUZZ_CHECK(n <= outlen);

    n = sp_request_set_stream_usage(body, body_len, out, outlen);

    if (rc == SP_OK && body_len) {
        FUZZ_CHECK(n > 0);
        fuzz_check_rewritten(out, n);

        /* jansson re-escapes every string: the counts stay */
        fuzz_count(out, n, embeddings, again_counts);
        FUZZ_CHECK(again_counts[0] == counts[0]
                   && again_counts[1] == counts[1]);
    }

    FUZZ_CHECK(n <= outlen);

    free(out);

    /* outputs that do not fit: exact-size buffers, so ASan sees overruns */
    small = body_len ? (size_t) (sp_hash64(body, body_len, 7) % (body_len
                                                                 + 48))
                     : 0;
    out = malloc(small ? small : 1);
    FUZZ_CHECK(out != NULL);

    n = sp_request_add_stream_usage(body, body_len, out, small);
    FUZZ_CHECK(n <= small);
    n = sp_request_set_stream_usage(body, body_len, out, small);
    FUZZ_CHECK(n <= small);

    free(out);
    free(body);
    free(path);

    return 0;
}
