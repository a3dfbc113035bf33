/*
 * controld journal ingest: splitting reads into complete lines, the
 * binary COPY rows of audit_logs, the array literals of the spend upserts
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"


typedef struct {
    size_t   count;
    size_t   stop_after;       /* 0: never stop */
    char     lines[8][64];
    int64_t  offsets[8];
    int      overlong[8];
} seen_t;


static int
collect(void *data, const char *line, size_t len, int64_t offset,
    int overlong)
{
    seen_t  *seen = data;

    assert_true(seen->count < 8);
    assert_true(len < 64);
    memcpy(seen->lines[seen->count], line, len);
    seen->lines[seen->count][len] = '\0';
    seen->offsets[seen->count] = offset;
    seen->overlong[seen->count] = overlong;
    seen->count++;

    return seen->stop_after != 0 && seen->count == seen->stop_after;
}


static void
test_scan_feeds_complete_lines_with_offsets(void **state)
{
    const char  *buf = "one\ntwo\nthree\n";
    seen_t       seen = { 0 };
    int          skipping = 0;

    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 100, &skipping,
                                     collect, &seen), strlen(buf));
    assert_int_equal(seen.count, 3);
    assert_string_equal(seen.lines[0], "one");
    assert_string_equal(seen.lines[2], "three");
    assert_int_equal(seen.offsets[0], 100);
    assert_int_equal(seen.offsets[1], 104);
    assert_int_equal(seen.offsets[2], 108);
    assert_false(seen.overlong[0]);
}


static void
test_scan_leaves_a_partial_line_for_later(void **state)
{
    const char  *buf = "one\ntw";
    seen_t       seen = { 0 };
    int          skipping = 0;

    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 0, &skipping,
                                     collect, &seen), 4);
    assert_int_equal(seen.count, 1);
    assert_false(skipping);

    /* nothing complete at all: nothing consumed */
    seen.count = 0;
    assert_int_equal(cd_journal_scan("partial", 7, 4096, 4, &skipping,
                                     collect, &seen), 0);
    assert_int_equal(seen.count, 0);
}


static void
test_scan_stops_when_the_batch_is_full(void **state)
{
    const char  *buf = "a\nb\nc\n";
    seen_t       seen = { 0 };
    int          skipping = 0;

    seen.stop_after = 2;
    assert_int_equal(cd_journal_scan(buf, strlen(buf), 4096, 0, &skipping,
                                     collect, &seen), 4);
    assert_int_equal(seen.count, 2);
}


static void
test_scan_skips_a_line_longer_than_a_read(void **state)
{
    char    buf[16];
    seen_t  seen = { 0 };
    int     skipping = 0;

    /* a full read without '\n' is consumed and marks skipping */
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(cd_journal_scan(buf, sizeof(buf), sizeof(buf), 0,
                                     &skipping, collect, &seen),
                     sizeof(buf));
    assert_int_equal(seen.count, 0);
    assert_true(skipping);

    /* its tail arrives flagged overlong; the next line is normal */
    assert_int_equal(cd_journal_scan("xx\nok\n", 6, sizeof(buf), 16,
                                     &skipping, collect, &seen), 6);
    assert_int_equal(seen.count, 2);
    assert_true(seen.overlong[0]);
    assert_false(seen.overlong[1]);
    assert_string_equal(seen.lines[1], "ok");
    assert_int_equal(seen.offsets[1], 19);
    assert_false(skipping);
}


static void
test_scan_empty_lines_are_fed(void **state)
{
    seen_t  seen = { 0 };
    int     skipping = 0;

    assert_int_equal(cd_journal_scan("\n\n", 2, 4096, 0, &skipping, collect,
                                     &seen), 2);
    assert_int_equal(seen.count, 2);
    assert_string_equal(seen.lines[0], "");
}


static uint32_t
get_u32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}


static int64_t
get_i64(const uint8_t *p)
{
    return (int64_t) ((uint64_t) get_u32(p) << 32 | get_u32(p + 4));
}


/* walks to field n (0-based) of a row; returns its length (-1: NULL) */
static int32_t
field(const uint8_t *row, int n, const uint8_t **data)
{
    int32_t         len;
    const uint8_t  *p;

    p = row + 2;

    for ( ;; ) {
        len = (int32_t) get_u32(p);
        *data = p + 4;

        if (n-- == 0) {
            return len;
        }

        p += 4 + (len > 0 ? len : 0);
    }
}


static void
test_copy_row_is_binary_copy_of_the_audit_columns(void **state)
{
    size_t                len;
    uint8_t               out[64 * 1024];
    const uint8_t        *d;
    sp_journal_record_t   rec;

    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_1");
    strcpy(rec.org_id, "org_default");
    rec.ts_ms = 946684800123LL;             /* 2000-01-01T00:00:00.123Z */
    strcpy(rec.provider, "openai");
    strcpy(rec.model, "gpt-4o");
    rec.cost_nano = 1234567;
    rec.status = 200;
    rec.stream = 1;
    strcpy(rec.warnings, "unpriced_model,,x");
    rec.epoch = -2;
    rec.saved_nano = 987654;
    rec.hallucination_pct = -1;

    len = cd_ingest_copy_row(&rec, NULL, "node-a", out, 0, sizeof(out));
    assert_true(len > 0);
    assert_int_equal(out[0] << 8 | out[1], 51);

    assert_int_equal(field(out, 0, &d), 5);
    assert_memory_equal(d, "evt_1", 5);
    assert_int_equal(field(out, 2, &d), 8);
    assert_int_equal(get_i64(d), 123000);   /* us since 2000-01-01 */
    assert_int_equal(field(out, 3, &d), -1);        /* no key: NULL */
    assert_int_equal(field(out, 4, &d), 6);
    assert_int_equal(field(out, 11, &d), 8);
    assert_int_equal(get_i64(d), 1234567);
    assert_int_equal(field(out, 12, &d), 4);
    assert_int_equal(get_u32(d), 200);
    assert_int_equal(field(out, 14, &d), 1);
    assert_int_equal(d[0], 1);

    /* warnings: text[] of 3, the empty one kept (string_to_array) */
    assert_true(field(out, 23, &d) > 0);
    assert_int_equal(get_u32(d), 1);                /* one dimension */
    assert_int_equal(get_u32(d + 8), 25);           /* of text */
    assert_int_equal(get_u32(d + 12), 3);
    assert_int_equal(get_u32(d + 20), 14);
    assert_memory_equal(d + 24, "unpriced_model", 14);
    assert_int_equal(get_u32(d + 38), 0);
    assert_int_equal(get_u32(d + 42), 1);

    assert_int_equal(field(out, 25, &d), 6);
    assert_memory_equal(d, "node-a", 6);
    assert_int_equal(field(out, 26, &d), 8);
    assert_int_equal(get_i64(d), -2);
    assert_int_equal(field(out, 28, &d), -1);       /* no endpoint */
    assert_int_equal(field(out, 29, &d), 8);
    assert_int_equal(get_i64(d), 987654);

    /* no routing, no template: false, NULL, 1 attempt, NULL... */
    assert_int_equal(field(out, 30, &d), 1);
    assert_int_equal(d[0], 0);
    assert_int_equal(field(out, 31, &d), -1);
    assert_int_equal(field(out, 32, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 1);
    assert_int_equal(field(out, 33, &d), -1);
    assert_int_equal(field(out, 34, &d), -1);
    assert_int_equal(field(out, 35, &d), -1);
    assert_int_equal(field(out, 36, &d), -1);

    /* nothing found, no policy, not scored: 0, {}, NULL, {}, {}, NULL.. */
    assert_int_equal(field(out, 37, &d), 4);
    assert_int_equal(get_u32(d), 0);                /* 0.0f */
    assert_int_equal(field(out, 38, &d), 12);
    assert_int_equal(field(out, 39, &d), -1);
    assert_int_equal(field(out, 40, &d), 12);
    assert_int_equal(field(out, 41, &d), 12);
    assert_int_equal(field(out, 42, &d), -1);
    assert_int_equal(field(out, 43, &d), -1);
    assert_int_equal(field(out, 44, &d), -1);
    assert_int_equal(field(out, 45, &d), -1);
    assert_int_equal(field(out, 50, &d), -1);       /* no chain link */
    assert_int_equal(d - out, (ptrdiff_t) len);

    /* no warnings: an empty array, not NULL */
    rec.warnings[0] = '\0';
    len = cd_ingest_copy_row(&rec, NULL, "node-a", out, 0, sizeof(out));
    assert_int_equal(field(out, 23, &d), 12);
    assert_int_equal(get_u32(d), 0);

    /* too little room: refused, nothing written past it */
    assert_int_equal(cd_ingest_copy_row(&rec, NULL, "node-a", out, 0, 1024),
                     0);
}


/* a journal line through the reader, its check and the COPY row */
static size_t
ingest_line(const char *line, uint8_t *out, size_t cap)
{
    char                 err[256];
    size_t               len;
    sp_journal_record_t  rec;

    if (sp_journal_parse(line, strlen(line), &rec, err, sizeof(err))
        != SP_OK || sp_journal_check(&rec, err, sizeof(err)) != SP_OK)
    {
        fail_msg("%s: %s", line, err);
    }

    len = cd_ingest_copy_row(&rec, NULL, "node-a", out, 0, cap);
    assert_true(len > 0);
    assert_int_equal(out[0] << 8 | out[1], 51);

    return len;
}


static void
test_copy_row_carries_policy_score_and_shadow_fields(void **state)
{
    size_t                len;
    uint8_t               out[64 * 1024];
    float                 score;
    uint32_t              bits;
    const uint8_t        *d;

    (void) state;

    len = ingest_line("{\"v\":1,\"id\":\"evt_1\",\"ts_ms\":1764230000123,"
                      "\"org_id\":\"org_a\",\"status\":403,"
                      "\"guard_score_milli\":850,"
                      "\"pii_types\":\"card,email\","
                      "\"policy_action\":\"block\","
                      "\"policy_ids\":\"pol_a,pol_b\","
                      "\"policy_warnings\":\"pii_detected\","
                      "\"hallucination_pct\":0,"
                      "\"shadow_key_type\":\"openai\","
                      "\"shadow_key_fp\":\"fp_0123456789abcdef\","
                      "\"client_addr\":\"10.0.0.7\"}", out, sizeof(out));

    assert_int_equal(field(out, 37, &d), 4);
    bits = get_u32(d);
    memcpy(&score, &bits, sizeof(score));
    assert_true(score > 0.8499f && score < 0.8501f);

    /* pii_types: text[] of 2 */
    assert_true(field(out, 38, &d) > 0);
    assert_int_equal(get_u32(d + 12), 2);
    assert_int_equal(get_u32(d + 20), 4);
    assert_memory_equal(d + 24, "card", 4);
    assert_int_equal(get_u32(d + 28), 5);
    assert_memory_equal(d + 32, "email", 5);

    assert_int_equal(field(out, 39, &d), 5);
    assert_memory_equal(d, "block", 5);
    assert_true(field(out, 40, &d) > 0);
    assert_int_equal(get_u32(d + 12), 2);
    assert_true(field(out, 41, &d) > 0);
    assert_int_equal(get_u32(d + 12), 1);

    /* scored 0 is a score, not NULL */
    assert_int_equal(field(out, 42, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 0);

    assert_int_equal(field(out, 43, &d), 6);
    assert_memory_equal(d, "openai", 6);
    assert_int_equal(field(out, 44, &d), 19);
    assert_memory_equal(d, "fp_0123456789abcdef", 19);
    assert_int_equal(field(out, 45, &d), 8);
    assert_memory_equal(d, "10.0.0.7", 8);
    assert_int_equal(field(out, 50, &d), -1);       /* no chain link */
    assert_int_equal(d - out, (ptrdiff_t) len);

    /* an older line: guard score 0, hallucination NULL */
    (void) ingest_line("{\"v\":1,\"id\":\"evt_2\",\"ts_ms\":1764230000123,"
                       "\"org_id\":\"org_a\",\"status\":200,"
                       "\"hallucination_pct\":100}", out, sizeof(out));
    assert_int_equal(field(out, 42, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 100);

    (void) ingest_line("{\"v\":1,\"id\":\"evt_3\",\"ts_ms\":1764230000123,"
                       "\"org_id\":\"org_a\",\"status\":200}", out,
                       sizeof(out));
    assert_int_equal(field(out, 37, &d), 4);
    assert_int_equal(get_u32(d), 0);
    assert_int_equal(field(out, 42, &d), -1);
}


static void
test_copy_row_carries_routing_and_template_fields(void **state)
{
    static const uint8_t  uuid[16] = {
        0x7d, 0x4c, 0x9b, 0x1e, 0x3f, 0x2a, 0x4c, 0x6d,
        0x8e, 0x9f, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f
    };
    size_t                len;
    uint8_t               out[64 * 1024];
    const uint8_t        *d;

    (void) state;

    len = ingest_line("{\"v\":1,\"id\":\"evt_1\",\"ts_ms\":1764230000123,"
                      "\"org_id\":\"org_a\",\"status\":200,"
                      "\"routed\":true,\"route_rule\":\"rr_1\","
                      "\"attempts\":3,\"attempt_log\":"
                      "\"openai/gpt-4o:429,openai/gpt-4o:0\","
                      "\"route_note\":\"rr_0: \\\"tools\\\" not on cohere\","
                      "\"template_id\":"
                      "\"7D4C9B1E-3f2a-4c6d-8e9f-0a1b2c3d4e5f\","
                      "\"template_version\":12}", out, sizeof(out));

    assert_int_equal(field(out, 30, &d), 1);
    assert_int_equal(d[0], 1);
    assert_int_equal(field(out, 31, &d), 4);
    assert_memory_equal(d, "rr_1", 4);
    assert_int_equal(field(out, 32, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 3);
    assert_int_equal(field(out, 33, &d), 33);
    assert_memory_equal(d, "openai/gpt-4o:429,openai/gpt-4o:0", 33);
    assert_int_equal(field(out, 34, &d), 27);
    assert_memory_equal(d, "rr_0: \"tools\" not on cohere", 27);
    assert_int_equal(field(out, 35, &d), 16);
    assert_memory_equal(d, uuid, 16);
    assert_int_equal(field(out, 36, &d), 4);
    assert_int_equal(get_u32(d), 12);
    assert_int_equal(field(out, 45, &d), -1);       /* the row's last */
    assert_int_equal(field(out, 50, &d), -1);       /* no chain link */
    assert_int_equal(d - out, (ptrdiff_t) len);

    /* an older writer's line: the columns' defaults, as before them */
    len = ingest_line("{\"v\":1,\"id\":\"evt_2\",\"ts_ms\":1764230000123,"
                      "\"org_id\":\"org_a\",\"status\":200,"
                      "\"endpoint\":\"POST /chat/completions\"}",
                      out, sizeof(out));

    assert_int_equal(field(out, 30, &d), 1);
    assert_int_equal(d[0], 0);
    assert_int_equal(field(out, 31, &d), -1);
    assert_int_equal(field(out, 32, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 1);
    assert_int_equal(field(out, 33, &d), -1);
    assert_int_equal(field(out, 34, &d), -1);
    assert_int_equal(field(out, 35, &d), -1);
    assert_int_equal(field(out, 36, &d), -1);
    assert_int_equal(field(out, 45, &d), -1);
    assert_int_equal(field(out, 50, &d), -1);       /* no chain link */
    assert_int_equal(d - out, (ptrdiff_t) len);

    /* one attempt written out is no fallback either */
    (void) ingest_line("{\"v\":1,\"id\":\"evt_3\",\"org_id\":\"org_a\","
                       "\"attempts\":1,\"routed\":false}", out,
                       sizeof(out));
    assert_int_equal(field(out, 32, &d), 2);
    assert_int_equal(d[0] << 8 | d[1], 1);
    assert_int_equal(field(out, 30, &d), 1);
    assert_int_equal(d[0], 0);
}


static void
test_copy_row_carries_the_chain_link(void **state)
{
    size_t               len;
    uint8_t              out[64 * 1024];
    const uint8_t       *d;
    cd_ingest_link_t     link;
    sp_journal_record_t  rec;

    (void) state;

    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_1");
    strcpy(rec.org_id, "org_a");
    rec.ts_ms = 1764230000123LL;
    rec.status = 200;
    rec.hallucination_pct = -1;

    memset(&link, 0, sizeof(link));
    link.seq = 7;
    memset(link.prev, 0xaa, sizeof(link.prev));
    memset(link.hash, 0xbb, sizeof(link.hash));
    memset(link.salt, 0xcc, sizeof(link.salt));
    memset(link.subject, 0xdd, sizeof(link.subject));

    len = cd_ingest_copy_row(&rec, &link, "node-a", out, 0, sizeof(out));
    assert_true(len > 0);

    /* chain_seq, prev_hash, row_hash, subject_salt, subject_digest */
    assert_int_equal(field(out, 46, &d), 8);
    assert_int_equal(get_i64(d), 7);
    assert_int_equal(field(out, 47, &d), 32);
    assert_memory_equal(d, link.prev, 32);
    assert_int_equal(field(out, 48, &d), 32);
    assert_memory_equal(d, link.hash, 32);
    assert_int_equal(field(out, 49, &d), 16);
    assert_memory_equal(d, link.salt, 16);
    assert_int_equal(field(out, 50, &d), 32);
    assert_memory_equal(d, link.subject, 32);
    assert_int_equal(d + 32 - out, (ptrdiff_t) len);

    /* seq 0: a row loaded before, not linked again: NULLs */
    link.seq = 0;
    len = cd_ingest_copy_row(&rec, &link, "node-a", out, 0, sizeof(out));
    assert_int_equal(field(out, 46, &d), -1);
    assert_int_equal(field(out, 50, &d), -1);
    assert_int_equal(d - out, (ptrdiff_t) len);
}


static void
test_uuid_parse_takes_only_the_8_4_4_4_12_form(void **state)
{
    size_t       i;
    uint8_t      bytes[16];
    const char  *bad[] = {
        "", "7d4c9b1e", "7d4c9b1e3f2a4c6d8e9f0a1b2c3d4e5f",
        "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5",
        "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f0",
        "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5g",
        "7d4c9b1e-3f2a-4c6d-8e9f_0a1b2c3d4e5f",
        "{7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f}",
        " 7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f",
        "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f ",
        "7d4c9b1e--3f2a-4c6d-8e9f-0a1b2c3d4e5",
    };

    (void) state;

    assert_int_equal(cd_uuid_parse("00000000-0000-0000-0000-00000000000a",
                                   bytes), CD_OK);
    assert_int_equal(bytes[15], 10);
    assert_int_equal(cd_uuid_parse("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF",
                                   bytes), CD_OK);
    assert_int_equal(bytes[0], 0xff);
    assert_int_equal(bytes[15], 0xff);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cd_uuid_parse(bad[i], bytes) != CD_ERROR) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}


static void
test_array_literal_quotes_what_it_must(void **state)
{
    char    out[64];
    size_t  pos;

    pos = cd_ingest_array_add(out, 0, sizeof(out), "a\"b", 3);
    pos = cd_ingest_array_add(out, pos, sizeof(out), "c\\,}", 4);
    assert_string_equal(out, "{\"a\\\"b\",\"c\\\\,}\"");
    assert_int_equal(pos, strlen(out));

    /* no room for the worst case: 0, the literal unchanged */
    assert_int_equal(cd_ingest_array_add(out, pos, pos + 8, "abcd", 4), 0);
}


static void
test_month_start_is_the_utc_month(void **state)
{
    /* 2026-03-31T23:59:59.999Z and 2026-04-01T00:00:00Z */
    assert_int_equal(cd_ingest_month_start(1775001599999LL), 1772323200000LL);
    assert_int_equal(cd_ingest_month_start(1775001600000LL), 1775001600000LL);
    assert_int_equal(cd_ingest_month_start(0), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_scan_feeds_complete_lines_with_offsets),
        cmocka_unit_test(test_scan_leaves_a_partial_line_for_later),
        cmocka_unit_test(test_scan_stops_when_the_batch_is_full),
        cmocka_unit_test(test_scan_skips_a_line_longer_than_a_read),
        cmocka_unit_test(test_scan_empty_lines_are_fed),
        cmocka_unit_test(test_copy_row_is_binary_copy_of_the_audit_columns),
        cmocka_unit_test(test_copy_row_carries_routing_and_template_fields),
        cmocka_unit_test(test_copy_row_carries_policy_score_and_shadow_fields),
        cmocka_unit_test(test_copy_row_carries_the_chain_link),
        cmocka_unit_test(test_uuid_parse_takes_only_the_8_4_4_4_12_form),
        cmocka_unit_test(test_array_literal_quotes_what_it_must),
        cmocka_unit_test(test_month_start_is_the_utc_month),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
