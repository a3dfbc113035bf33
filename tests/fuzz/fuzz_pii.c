/*
 * The PII scanner (sp_pii.c, sp_pii_text.c). The first byte chooses the
 * provider (its value mod 7), request or answer (bit 3) and text or body
 * (bit 4); the rest is the input, on an exact-size copy.
 *
 * Text: entities lie in the text, in order, not overlapping; counts add
 * up to the total; the score is sp_pii_score() of the types found.
 * Body: a body jansson reads (an object or an array, no key twice) is
 * scanned and one it refuses is refused, never passed unscanned; every
 * text the walk visits maps to raw offsets inside the body, in order;
 * spans as for text; redaction into len + 32 per entity succeeds and,
 * from a body jansson read, gives JSON jansson reads too; an exact-size
 * room takes it and one byte less is refused. The bytes as a whole token
 * go through sp_pii_secret_kind() for the provider.
 */

#include <jansson.h>

#include "fuzz_common.h"
#include "sp_pii.h"


static sp_pii_result_t  res;


static void
fuzz_check_result(const sp_pii_result_t *r, size_t len)
{
    size_t    k, sum;
    uint32_t  types;

    sum = 0;
    types = 0;

    for (k = 0; k < SP_PII_COUNT; k++) {
        sum += r->counts[k];

        if (r->counts[k]) {
            types |= 1u << k;
        }
    }

    FUZZ_CHECK(sum == r->total);
    FUZZ_CHECK(types == r->types);
    FUZZ_CHECK(r->nentities <= SP_PII_MAX_ENTITIES);
    FUZZ_CHECK(r->nentities <= r->total);
    FUZZ_CHECK(r->score_milli == sp_pii_score(r->types));
    FUZZ_CHECK(r->score_milli >= 0 && r->score_milli <= 1000);
    FUZZ_CHECK((r->total == 0) == (r->score_milli == 0));

    for (k = 0; k < r->nentities; k++) {
        FUZZ_CHECK(r->entities[k].type < SP_PII_COUNT);
        FUZZ_CHECK(r->entities[k].start < r->entities[k].end);
        FUZZ_CHECK(r->entities[k].end <= len);

        if (k > 0) {
            FUZZ_CHECK(r->entities[k - 1].end <= r->entities[k].start);
        }
    }
}


typedef struct {
    size_t  len;
    size_t  texts;
} fuzz_walk_t;


static int
fuzz_visit(const sp_pii_text_t *t, void *arg)
{
    size_t        k;
    fuzz_walk_t  *w;

    w = arg;
    w->texts++;

    FUZZ_CHECK(t->context == 0 || t->context == 1);
    FUZZ_CHECK(t->raw[t->len] <= w->len);
    fuzz_touch(t->text, t->len);

    for (k = 0; k < t->len; k++) {
        FUZZ_CHECK(t->raw[k] <= t->raw[k + 1]);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int            rc, answer;
    char          *out;
    size_t         len, n, room;
    uint8_t       *body;
    json_t        *root, *again;
    fuzz_walk_t    walk;
    json_error_t   jerr;
    sp_provider_e  provider;

    if (size < 1) {
        return 0;
    }

    provider = (sp_provider_e) (data[0] % 7);
    answer = (data[0] >> 3) & 1;
    len = size - 1;
    body = fuzz_dup(data + 1, len);

    (void) sp_pii_secret_kind(provider, (const char *) body, len);

    if (!(data[0] & 0x10)) {
        sp_pii_scan_text((const char *) body, len, SP_PII_ALL, &res);
        fuzz_check_result(&res, len);
        FUZZ_CHECK(res.scanned == len);
        free(body);
        return 0;
    }

    root = json_loadb((const char *) body, len,
                      JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);

    memset(&walk, 0, sizeof(walk));
    walk.len = len;
    rc = sp_pii_body_text(provider, answer, (const char *) body, len,
                          fuzz_visit, &walk);
    FUZZ_CHECK((rc == SP_OK) == (root != NULL));

    rc = sp_pii_scan_body(provider, answer, (const char *) body, len,
                          SP_PII_ALL, &res);
    FUZZ_CHECK((rc == SP_OK) == (root != NULL));

    if (rc != SP_OK) {
        free(body);
        return 0;
    }

    fuzz_check_result(&res, len);

    room = len + 32 * res.nentities;
    out = malloc(room ? room : 1);
    FUZZ_CHECK(out != NULL);

    n = sp_pii_redact((const char *) body, len, &res, SP_PII_ALL
                      | (1u << SP_PII_PATTERN), out, room);
    FUZZ_CHECK(n > 0 || len == 0);

    again = json_loadb(out, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                       &jerr);
    if (again == NULL) {
        fprintf(stderr, "redacted body is not JSON: %s\n", jerr.text);
    }

    FUZZ_CHECK(again != NULL);
    json_decref(again);
    free(out);

    /* exactly its size, then one byte less */
    out = malloc(n ? n : 1);
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(sp_pii_redact((const char *) body, len, &res, SP_PII_ALL,
                             out, n) == n);

    if (n > 0 && res.nentities > 0) {
        FUZZ_CHECK(sp_pii_redact((const char *) body, len, &res, SP_PII_ALL,
                                 out, n - 1) == 0);
    }

    free(out);
    json_decref(root);
    free(body);

    return 0;
}
