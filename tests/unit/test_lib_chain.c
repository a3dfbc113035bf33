/*
 * libspendpol sp_chain: the audit chain's digests, pinned. The expected
 * values were computed with python3's hashlib from the canonical text
 * sp_chain.h describes (the same a verifier re-implements):
 *
 *   body = "id=evt_1\norg_id=org_a\ncreated_at=1764230000123000\n"
 *          "api_key_id=key_1\nprovider=openai\nrequested_model=gpt-4o\n"
 *          "model=gpt-4o-mini\ninput_tokens=12\noutput_tokens=34\n"
 *          "cached_tokens=0\ncache_write_tokens=0\ncost_nano=150000\n"
 *          "reserved_nano=450000\nsaved_nano=0\nstatus=200\ncache=miss\n"
 *          "stream=f\nendpoint=POST /chat/completions\ndepartment=eng\n"
 *          "project=\nagent_id=\nerror_code=\nrouted=t\nroute_rule=rr_1\n"
 *          "template_id=0123abcd-0000-4000-8000-00000000abcd\n"
 *          "template_version=3\nguard_score=850\npii_types=card,email\n"
 *          "policy_action=redact\npolicy_ids=pol_1\nhallucination_score=\n"
 *          "shadow_key_type=\nshadow_key_fp=\n"
 *   hashlib.sha256(body.encode()).hexdigest()
 *     = 64ebdea101f879594edd3afc212ce3cd16ee3f0d9c33f83f22bd48ecef163677
 *
 *   salt = bytes(range(16))
 *   hashlib.sha256(salt + b"client_addr=10.0.0.7\ntrace_id=t1\n"
 *                  b"span_id=\nparent_id=\n").hexdigest()
 *     = 9994f17ea50ca28c2b896c2483ed9937bb5e249e395d099178dad02a528bdcb5
 *
 *   hashlib.sha256(bytes(32) + body_digest + subject_digest).hexdigest()
 *     = 0e904c6f796ab1613bc0145ed331563199bc21b8cc95be62526b5397dd66f547
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "spendpol.h"
#include "sp_chain.h"


#define BODY_HEX                                                             \
    "64ebdea101f879594edd3afc212ce3cd16ee3f0d9c33f83f22bd48ecef163677"
#define SUBJECT_HEX                                                          \
    "9994f17ea50ca28c2b896c2483ed9937bb5e249e395d099178dad02a528bdcb5"
#define ROW_HEX                                                              \
    "0e904c6f796ab1613bc0145ed331563199bc21b8cc95be62526b5397dd66f547"


static void
record(sp_journal_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    strcpy(rec->id, "evt_1");
    strcpy(rec->org_id, "org_a");
    rec->ts_ms = 1764230000123LL;
    strcpy(rec->api_key_id, "key_1");
    strcpy(rec->provider, "openai");
    strcpy(rec->requested_model, "gpt-4o");
    strcpy(rec->model, "gpt-4o-mini");
    rec->input_tokens = 12;
    rec->output_tokens = 34;
    rec->cost_nano = 150000;
    rec->reserved_nano = 450000;
    rec->status = 200;
    strcpy(rec->cache, "miss");
    strcpy(rec->endpoint, "POST /chat/completions");
    strcpy(rec->department, "eng");
    rec->routed = 1;
    strcpy(rec->route_rule, "rr_1");
    /* upper case in the journal: the database prints it in lower */
    strcpy(rec->template_id, "0123ABCD-0000-4000-8000-00000000abcd");
    rec->template_version = 3;
    rec->guard_score_milli = 850;
    strcpy(rec->pii_types, "card,email");
    strcpy(rec->policy_action, "redact");
    strcpy(rec->policy_ids, "pol_1");
    rec->hallucination_pct = -1;
    strcpy(rec->client_addr, "10.0.0.7");
    strcpy(rec->trace_id, "t1");

    /* not covered by the body digest: changing them changes nothing */
    rec->latency_ms = 99;
    rec->gateway_us = 77;
    strcpy(rec->warnings, "usage_estimated");
    rec->attempts = 2;
}


static void
hex(const uint8_t *digest, char *out)
{
    sp_hex_encode(digest, SP_CHAIN_HASH_LEN, out);
}


static void
test_chain_digests_match_the_documented_formula(void **state)
{
    char                 h[2 * SP_CHAIN_HASH_LEN + 1];
    uint8_t              salt[SP_CHAIN_SALT_LEN], body[SP_CHAIN_HASH_LEN];
    uint8_t              subject[SP_CHAIN_HASH_LEN], prev[SP_CHAIN_HASH_LEN];
    uint8_t              row[SP_CHAIN_HASH_LEN];
    size_t               i;
    sp_journal_record_t  rec;

    (void) state;

    record(&rec);

    for (i = 0; i < sizeof(salt); i++) {
        salt[i] = (uint8_t) i;
    }

    sp_chain_body_digest(&rec, body);
    hex(body, h);
    assert_string_equal(h, BODY_HEX);

    sp_chain_subject_digest(&rec, salt, subject);
    hex(subject, h);
    assert_string_equal(h, SUBJECT_HEX);

    memset(prev, 0, sizeof(prev));
    sp_chain_link(prev, body, subject, row);
    hex(row, h);
    assert_string_equal(h, ROW_HEX);
}


static void
test_chain_values_give_the_records_digests(void **state)
{
    char         h[2 * SP_CHAIN_HASH_LEN + 1];
    uint8_t      salt[SP_CHAIN_SALT_LEN], out[SP_CHAIN_HASH_LEN];
    size_t       i;

    /* as verify reads them back: NULL for SQL NULL */
    static const char *const  body[] = {
        "evt_1", "org_a", "1764230000123000", "key_1", "openai", "gpt-4o",
        "gpt-4o-mini", "12", "34", "0", "0", "150000", "450000", "0", "200",
        "miss", "f", "POST /chat/completions", "eng", NULL, NULL, NULL, "t",
        "rr_1", "0123abcd-0000-4000-8000-00000000abcd", "3", "850",
        "card,email", "redact", "pol_1", NULL, NULL, NULL
    };
    static const char *const  subject[] = { "10.0.0.7", "t1", NULL, "" };

    (void) state;

    for (i = 0; i < sizeof(salt); i++) {
        salt[i] = (uint8_t) i;
    }

    assert_int_equal(sp_chain_body_digest_values(body, 33, out), SP_OK);
    hex(out, h);
    assert_string_equal(h, BODY_HEX);

    assert_int_equal(sp_chain_subject_digest_values(salt, subject, 4, out),
                     SP_OK);
    hex(out, h);
    assert_string_equal(h, SUBJECT_HEX);

    /* the lists' lengths are part of the contract */
    assert_int_equal(sp_chain_body_digest_values(body, 32, out), SP_ERROR);
    assert_int_equal(sp_chain_subject_digest_values(salt, subject, 5, out),
                     SP_ERROR);
}


static void
test_chain_every_field_and_the_salt_change_a_digest(void **state)
{
    uint8_t              salt[SP_CHAIN_SALT_LEN], a[SP_CHAIN_HASH_LEN];
    uint8_t              b[SP_CHAIN_HASH_LEN];
    sp_journal_record_t  rec;

    (void) state;

    record(&rec);
    memset(salt, 7, sizeof(salt));

    sp_chain_body_digest(&rec, a);
    rec.cost_nano++;
    sp_chain_body_digest(&rec, b);
    assert_memory_not_equal(a, b, SP_CHAIN_HASH_LEN);

    /* a value moved from one field to the next is another text */
    record(&rec);
    strcpy(rec.department, "");
    strcpy(rec.project, "eng");
    sp_chain_body_digest(&rec, b);
    assert_memory_not_equal(a, b, SP_CHAIN_HASH_LEN);

    /* negative and extreme integers: decimal, '-' first */
    {
        static const char *const  vals[] = {
            "evt_1", "org_a", "1764230000123000", "key_1", "openai", "gpt-4o",
            "gpt-4o-mini", "-9223372036854775808", "9223372036854775807",
            "0", "0", "150000", "450000", "0", "200", "miss", "f",
            "POST /chat/completions", "eng", NULL, NULL, NULL, "t", "rr_1",
            "0123abcd-0000-4000-8000-00000000abcd", "3", "850", "card,email",
            "redact", "pol_1", NULL, NULL, NULL
        };

        record(&rec);
        rec.input_tokens = INT64_MIN;
        rec.output_tokens = INT64_MAX;
        sp_chain_body_digest(&rec, a);
        assert_int_equal(sp_chain_body_digest_values(vals, 33, b), SP_OK);
        assert_memory_equal(a, b, SP_CHAIN_HASH_LEN);
    }

    /* no template: NULL, as ingest stores a malformed one */
    record(&rec);
    strcpy(rec.template_id, "not-a-uuid");
    sp_chain_body_digest(&rec, a);
    rec.template_id[0] = '\0';
    sp_chain_body_digest(&rec, b);
    assert_memory_equal(a, b, SP_CHAIN_HASH_LEN);

    record(&rec);
    sp_chain_subject_digest(&rec, salt, a);
    salt[0] ^= 1;
    sp_chain_subject_digest(&rec, salt, b);
    assert_memory_not_equal(a, b, SP_CHAIN_HASH_LEN);
}


static void
test_chain_long_stored_values_still_hash(void **state)
{
    char        *big;
    uint8_t      a[SP_CHAIN_HASH_LEN], b[SP_CHAIN_HASH_LEN];
    size_t       i;
    const char  *values[33];

    (void) state;

    /* longer than any journal field: a tampered row is still hashed */
    big = malloc(100000);
    assert_non_null(big);
    memset(big, 'x', 99999);
    big[99999] = '\0';

    for (i = 0; i < 33; i++) {
        values[i] = NULL;
    }

    values[0] = big;
    assert_int_equal(sp_chain_body_digest_values(values, 33, a), SP_OK);
    big[0] = 'y';
    assert_int_equal(sp_chain_body_digest_values(values, 33, b), SP_OK);
    assert_memory_not_equal(a, b, SP_CHAIN_HASH_LEN);

    free(big);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_chain_digests_match_the_documented_formula),
        cmocka_unit_test(test_chain_values_give_the_records_digests),
        cmocka_unit_test(test_chain_every_field_and_the_salt_change_a_digest),
        cmocka_unit_test(test_chain_long_stored_values_still_hash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
