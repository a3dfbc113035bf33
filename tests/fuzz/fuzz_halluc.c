/*
 * The hallucination score on untrusted bytes.
 *
 * Input: a choice byte (provider: byte % 7, 0 unknown), then a request
 * body, a NUL, and an answer (no NUL: the same bytes are both). The
 * answer is read as a whole JSON answer and, split on newlines, as SSE
 * events' data, each from an exact-size copy; the kept text stays within
 * its room and NUL-terminated, and an input that is not JSON leaves the
 * answer as it was. The answer text is then scored against the body (as
 * a provider request) and against the raw body bytes (as plain-text
 * context), and the raw answer bytes are scored as text too: every
 * result is 0..100, unsupported <= claims, a NUL-terminated basis, and
 * the same when scored again.
 */

#include "fuzz_common.h"
#include "sp_halluc.h"


static void
fuzz_check_answer(const sp_halluc_answer_t *a)
{
    FUZZ_CHECK(a->len < SP_HALLUC_TEXT_MAX);
    FUZZ_CHECK(a->text[a->len] == '\0');
    FUZZ_CHECK(a->finish_length == 0 || a->finished == 1);
}


static void
fuzz_check_result(const sp_halluc_result_t *r)
{
    FUZZ_CHECK(r->pct >= 0 && r->pct <= 100);
    FUZZ_CHECK(r->grounded == 0 || r->grounded == 1);
    FUZZ_CHECK(r->unsupported <= r->claims);
    FUZZ_CHECK(memchr(r->basis, '\0', sizeof(r->basis)) != NULL);
    FUZZ_CHECK(r->grounded || r->claims == 0);
}


/* scored twice, the same result */
static void
fuzz_score(sp_provider_e provider, const uint8_t *body, size_t len,
    int text, const sp_halluc_answer_t *a)
{
    uint8_t             *copy;
    sp_halluc_result_t   r1, r2;

    copy = fuzz_dup(body, len);

    if (text) {
        sp_halluc_score_text((const char *) copy, len, a, &r1);
        sp_halluc_score_text((const char *) copy, len, a, &r2);

    } else {
        sp_halluc_score(provider, (const char *) copy, len, a, &r1);
        sp_halluc_score(provider, (const char *) copy, len, a, &r2);
    }

    free(copy);

    fuzz_check_result(&r1);
    FUZZ_CHECK(memcmp(&r1, &r2, sizeof(r1)) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               blen, alen, k, n;
    uint8_t             *copy;
    const uint8_t       *body, *answer, *nul, *p, *end, *nl;
    sp_provider_e        provider;
    sp_halluc_answer_t  *a, *before;

    if (size < 1) {
        return 0;
    }

    provider = (sp_provider_e) (data[0] % 7);
    body = data + 1;
    size--;

    nul = memchr(body, '\0', size);
    if (nul != NULL) {
        blen = (size_t) (nul - body);
        answer = nul + 1;
        alen = size - blen - 1;

    } else {
        blen = size;
        answer = body;
        alen = size;
    }

    a = malloc(sizeof(sp_halluc_answer_t));
    before = malloc(sizeof(sp_halluc_answer_t));
    FUZZ_CHECK(a != NULL && before != NULL);

    /* the whole answer */
    sp_halluc_answer_init(a);
    copy = fuzz_dup(answer, alen);

    if (sp_halluc_answer_json(provider, (const char *) copy, alen, a)
        != SP_OK)
    {
        FUZZ_CHECK(a->len == 0 && !a->finished && !a->truncated);
    }

    free(copy);
    fuzz_check_answer(a);

    fuzz_score(provider, body, blen, 0, a);
    fuzz_score(provider, body, blen, 1, a);

    /* events, one a line, onto the same answer */
    p = answer;
    end = answer + alen;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        n = nl ? (size_t) (nl - p) : (size_t) (end - p);

        memcpy(before, a, sizeof(sp_halluc_answer_t));
        copy = fuzz_dup(p, n);

        if (sp_halluc_answer_event(provider, (const char *) copy, n, a)
            != SP_OK)
        {
            FUZZ_CHECK(memcmp(before, a, sizeof(sp_halluc_answer_t)) == 0);
        }

        free(copy);
        fuzz_check_answer(a);
        FUZZ_CHECK(a->len >= before->len);

        p += n + 1;
    }

    fuzz_score(provider, body, blen, 0, a);

    /* the raw answer bytes as text: claims on anything */
    sp_halluc_answer_init(a);
    k = alen < SP_HALLUC_TEXT_MAX - 1 ? alen : SP_HALLUC_TEXT_MAX - 1;
    memcpy(a->text, answer, k);
    a->text[k] = '\0';
    a->len = k;
    a->finished = (int) (size & 1);

    fuzz_score(provider, body, blen, 1, a);
    fuzz_score(provider, body, blen, 0, a);

    free(a);
    free(before);

    return 0;
}
