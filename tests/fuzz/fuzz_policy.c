/*
 * Policies: sp_policy_validate, sp_policy_compile and sp_policy_evaluate
 * on any bytes.
 *
 * Input: policies, then a newline, then a request body (no newline: the
 * bytes are both). A policy that validates compiles (as a one-policy
 * array) without an invalid policy; every decision is well formed: an
 * action in range, a block named by blocked_by and its message, at most
 * SP_POLICY_MAX_MATCHES kept, NUL-terminated lists, entities in order of
 * start, not overlapping and inside the body, the worst case asked at
 * most once. A body evaluation refuses (SP_ERROR) leaves a pass.
 */

#include "fuzz_common.h"
#include "sp_policy.h"


typedef struct {
    uint64_t  seed;
    int       worst_calls;
} fuzz_policy_data_t;


static int64_t
fuzz_worst(void *data)
{
    fuzz_policy_data_t  *d = data;

    d->worst_calls++;

    return (int64_t) (d->seed % 3000000000ULL) - 1000000;
}


static void
fuzz_evaluate(sp_policy_set_t *set, const uint8_t *data, size_t len,
    const char *body, size_t body_len)
{
    int                   rc;
    char                  msg[512];
    size_t                i;
    uint64_t              h;
    fuzz_policy_data_t    d;
    sp_policy_request_t   req;
    sp_policy_decision_t  out;

    static const char  *models[] = {
        "gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "", "gemini-2.5-pro",
        "o3", "x"
    };

    h = sp_hash64(data, len, 11);

    memset(&req, 0, sizeof(req));
    memset(&d, 0, sizeof(d));
    d.seed = h;

    req.provider = (sp_provider_e) (1 + h % 6);
    req.model = sp_str_from(models[(h >> 8) % 7]);
    req.api_key_id = sp_str_from("key_aaaaaaaaaaaaaaaaaaaaaaaa");
    req.agent_id = sp_str_from((h >> 12) & 1 ? "agt_1" : "");
    req.department = sp_str_from((h >> 13) & 1 ? "marketing" : "");
    req.project = sp_str_from((h >> 14) & 1 ? "apollo" : "");
    req.max_tokens = (h >> 15) & 1 ? (int64_t) ((h >> 16) % 100000) : -1;
    req.now_ms = (int64_t) (h >> 20) - (int64_t) (h >> 21);
    req.body = body;
    req.body_len = body_len;

    if ((h >> 17) & 1) {
        req.worst_case_nano = fuzz_worst;
        req.data = &d;
    }

    rc = sp_policy_evaluate(set, &req, &out);

    FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
    FUZZ_CHECK(d.worst_calls <= 1);

    if (rc == SP_ERROR) {
        FUZZ_CHECK(out.decision == SP_POLICY_PASS);
        return;
    }

    FUZZ_CHECK(out.decision >= SP_POLICY_PASS
               && out.decision <= SP_POLICY_BLOCK);
    FUZZ_CHECK(out.nmatches <= SP_POLICY_MAX_MATCHES);
    FUZZ_CHECK(out.nmatches <= out.total_matches);
    FUZZ_CHECK(memchr(out.warnings, '\0', sizeof(out.warnings)) != NULL);
    FUZZ_CHECK(memchr(out.policy_ids, '\0', sizeof(out.policy_ids))
               != NULL);
    FUZZ_CHECK(out.pii.nentities <= SP_PII_MAX_ENTITIES);
    FUZZ_CHECK((out.decision == SP_POLICY_PASS) == (out.total_matches == 0));

    if (out.decision == SP_POLICY_BLOCK) {
        FUZZ_CHECK(out.blocked_by >= 0
                   && (size_t) out.blocked_by < out.nmatches);
        FUZZ_CHECK(out.matches[out.blocked_by].action == SP_POLICY_BLOCK);
        FUZZ_CHECK(sp_policy_message(&out, msg, sizeof(msg)) > 0);
        FUZZ_CHECK(strncmp(msg, "blocked by policy \"", 19) == 0);

    } else {
        FUZZ_CHECK(out.blocked_by == -1);
    }

    for (i = 0; i < out.nmatches; i++) {
        FUZZ_CHECK(out.matches[i].action > SP_POLICY_PASS
                   && out.matches[i].action <= SP_POLICY_BLOCK);
        FUZZ_CHECK(out.matches[i].action <= out.decision);
        FUZZ_CHECK(memchr(out.matches[i].reason, '\0',
                          sizeof(out.matches[i].reason)) != NULL);
        FUZZ_CHECK(memchr(out.matches[i].code, '\0',
                          sizeof(out.matches[i].code)) != NULL);
    }

    for (i = 0; i < out.pii.nentities; i++) {
        FUZZ_CHECK(out.pii.entities[i].start < out.pii.entities[i].end);
        FUZZ_CHECK(out.pii.entities[i].end <= body_len);
        FUZZ_CHECK(out.pii.entities[i].type <= SP_PII_PATTERN);
        FUZZ_CHECK(i == 0 || out.pii.entities[i - 1].end
                             <= out.pii.entities[i].start);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    int               rc;
    char              field[128], err[256], *wrapped;
    size_t            plen, blen;
    uint8_t          *copy, *body;
    const uint8_t    *nl;
    sp_policy_set_t  *set;

    nl = memchr(data, '\n', len);
    plen = nl ? (size_t) (nl - data) : len;
    blen = nl ? len - plen - 1 : len;

    copy = fuzz_dup(data, plen);
    body = fuzz_dup(nl ? nl + 1 : data, blen);

    rc = sp_policy_validate((const char *) copy, plen, field, sizeof(field),
                            err, sizeof(err));

    FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
    FUZZ_CHECK(memchr(field, '\0', sizeof(field)) != NULL);
    FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);

    if (rc == SP_ERROR) {
        FUZZ_CHECK(err[0] != '\0');
    }

    /* what validates compiles, as a one-policy array, and is valid */
    wrapped = malloc(plen + 2);
    FUZZ_CHECK(wrapped != NULL);
    wrapped[0] = '[';
    memcpy(wrapped + 1, copy, plen);
    wrapped[plen + 1] = ']';

    set = sp_policy_compile(wrapped, plen + 2, err, sizeof(err));

    if (rc == SP_OK) {
        FUZZ_CHECK(set != NULL);
        FUZZ_CHECK(sp_policy_count(set) == 1);
        FUZZ_CHECK(sp_policy_invalid(set, err, sizeof(err)) == 0);
    }

    if (set != NULL) {
        fuzz_evaluate(set, data, len, (const char *) body, blen);
        sp_policy_free(set);
    }

    free(wrapped);

    /* the bytes as an array of policies */
    set = sp_policy_compile((const char *) copy, plen, err, sizeof(err));

    if (set != NULL) {
        FUZZ_CHECK(sp_policy_invalid(set, err, sizeof(err))
                   <= sp_policy_count(set));
        fuzz_evaluate(set, data, len, (const char *) body, blen);
        /* twice on one set: nothing of the first run leaks into the next */
        fuzz_evaluate(set, data, len, (const char *) body, blen);
        sp_policy_free(set);
    }

    /* no policies: the scan alone */
    fuzz_evaluate(NULL, data, len, (const char *) body, blen);

    free(copy);
    free(body);

    return 0;
}
