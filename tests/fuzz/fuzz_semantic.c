/*
 * The semantic cache's library on hostile input: the prompt of a body for
 * every provider (texts inside the scratch, UTF-8, not empty), the
 * embedding body for the text found (jansson reads back exactly the
 * text), the lexical guard (symmetric, a prompt may share its own
 * answer), the embeddings answers' parser (finite values, at most the
 * room given) and quantised vectors (a vector is similar to itself and
 * the search finds it).
 */

#include <math.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_semantic.h"


#define FUZZ_DIM  64


static int
fuzz_utf8(const char *s, size_t len)
{
    json_t  *v;
    int      ok;

    /* jansson decides what UTF-8 is, as for every request */
    v = json_stringn(s, len);
    ok = (v != NULL);
    json_decref(v);

    return ok;
}


static void
fuzz_inside(sp_str_t s, const char *scratch, size_t cap)
{
    FUZZ_CHECK(s.data >= scratch && s.data + s.len <= scratch + cap);
    fuzz_touch(s.data, s.len);
}


static void
fuzz_embed_body(sp_provider_e provider, sp_str_t text)
{
    int           rc;
    char         *out, err[128];
    size_t        cap, written;
    json_t       *root;
    json_error_t  jerr;

    cap = 6 * text.len + 256;
    out = malloc(cap);
    FUZZ_CHECK(out != NULL);

    rc = sp_semantic_embed_body(provider, sp_str_from("m"), text, out, cap,
                                &written, err, sizeof(err));

    if (provider == SP_PROVIDER_ANTHROPIC) {
        FUZZ_CHECK(rc == SP_ERROR);
        free(out);
        return;
    }

    FUZZ_CHECK(rc == SP_OK);
    FUZZ_CHECK(written < cap && out[written] == '\0');

    root = json_loadb(out, written, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &jerr);
    FUZZ_CHECK(root != NULL);
    json_decref(root);

    /* one byte short of room: refused, never cut */
    rc = sp_semantic_embed_body(provider, sp_str_from("m"), text, out,
                                written, &written, err, sizeof(err));
    FUZZ_CHECK(rc == SP_ERROR && written == 0);

    free(out);
}


static void
fuzz_prompt(const char *body, size_t size)
{
    int                    p, rc;
    char                  *scratch, err[256];
    size_t                 cap;
    sp_semantic_prompt_t   prompt;

    cap = sp_semantic_prompt_scratch(size);
    scratch = malloc(cap);
    FUZZ_CHECK(scratch != NULL);

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        err[0] = '\0';
        rc = sp_semantic_prompt((sp_provider_e) p, body, size,
                                SP_SEMANTIC_WITH_SYSTEM, scratch, cap,
                                &prompt, err, sizeof(err));

        if (rc != SP_OK) {
            FUZZ_CHECK(rc == SP_ERROR && err[0] != '\0');
            continue;
        }

        FUZZ_CHECK(prompt.user.len > 0);
        fuzz_inside(prompt.user, scratch, cap);
        fuzz_inside(prompt.text, scratch, cap);

        if (prompt.system.len) {
            fuzz_inside(prompt.system, scratch, cap);
        }

        FUZZ_CHECK(fuzz_utf8(prompt.text.data, prompt.text.len));

        fuzz_embed_body((sp_provider_e) p, prompt.text);
    }

    free(scratch);
}


static void
fuzz_guard(const char *data, size_t size)
{
    int     ab, ba, aa;
    size_t  half;
    char    reason[64];

    half = size / 2;

    ab = sp_semantic_guard(data, half, data + half, size - half, reason,
                           sizeof(reason));
    FUZZ_CHECK(ab == 0 || ab == 1);
    FUZZ_CHECK(strlen(reason) < sizeof(reason));

    ba = sp_semantic_guard(data + half, size - half, data, half, NULL, 0);
    FUZZ_CHECK(ab == ba);

    aa = sp_semantic_guard(data, half, data, half, reason, sizeof(reason));
    FUZZ_CHECK(aa == 1
               || strcmp(reason, "too many tokens to compare") == 0);
}


static void
fuzz_embedding(const char *body, size_t size)
{
    int       p, rc;
    char      err[256];
    float     v[FUZZ_DIM];
    int8_t    q[FUZZ_DIM], stored[2 * FUZZ_DIM];
    size_t    dim, i, best;
    double    s;
    uint32_t  norms[2];

    for (p = SP_PROVIDER_UNKNOWN; p <= SP_PROVIDER_MISTRAL; p++) {
        rc = sp_semantic_embedding((sp_provider_e) p, body, size, v,
                                   FUZZ_DIM, &dim, err, sizeof(err));

        if (rc != SP_OK) {
            FUZZ_CHECK(rc == SP_ERROR && dim == 0);
            continue;
        }

        FUZZ_CHECK(dim >= 1 && dim <= FUZZ_DIM);

        for (i = 0; i < dim; i++) {
            FUZZ_CHECK(isfinite(v[i]));
        }

        if (sp_semantic_quantise(v, dim, q) != SP_OK) {
            continue;
        }

        s = sp_semantic_similarity(q, q, dim);
        FUZZ_CHECK(s > 0.999999 && s <= 1);

        /* among itself negated and itself, it finds itself */
        for (i = 0; i < dim; i++) {
            stored[i] = (int8_t) -q[i];
            stored[dim + i] = q[i];
        }

        norms[0] = sp_semantic_norm(stored, dim);
        norms[1] = sp_semantic_norm(stored + dim, dim);

        rc = sp_semantic_search(stored, norms, 2, dim, q, 0.99, &best, &s);
        FUZZ_CHECK(rc == SP_OK && best == 1 && s > 0.999999);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *body;

    /* exactly size bytes, no NUL after them */
    body = (char *) fuzz_dup(data, size);

    fuzz_prompt(body, size);
    fuzz_guard(body, size);
    fuzz_embedding(body, size);

    free(body);

    return 0;
}
