/*
 * controld chargeback periods: the body of POST and PATCH (required
 * members, types, times, the range rules) and period ids.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"
#include "api_chargeback.h"


/* 2026-12-01T00:00:00Z */
#define DEC1_US   1796083200000000LL
#define DAY_US    (86400LL * 1000000)


static int
parse(const char *text, int patch, cd_chargeback_input_t *in,
    cd_field_error_t *err, json_t **keep)
{
    json_error_t  jerr;

    *keep = json_loads(text, 0, &jerr);
    assert_non_null(*keep);

    return cd_chargeback_body_parse(*keep, patch, in, err);
}


static void
assert_refused(const char *text, unsigned status, const char *code,
    const char *field)
{
    json_t                 *body;
    cd_field_error_t        err;
    cd_chargeback_input_t   in;

    assert_int_equal(parse(text, 0, &in, &err, &body), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_string_equal(err.code, code);
    assert_string_equal(err.field, field);
    json_decref(body);
}


static void
test_post_body_reads_times_and_defaults_the_grouping(void **state)
{
    json_t                 *body;
    cd_field_error_t        err;
    cd_chargeback_input_t   in;

    (void) state;

    assert_int_equal(parse("{\"name\": \"December\", \"starts_at\":"
                           " \"2026-12-01T00:00:00Z\", \"ends_at\":"
                           " \"2027-01-01T01:00:00+01:00\"}", 0, &in, &err,
                           &body), CD_OK);
    assert_string_equal(in.name, "December");
    assert_true(in.starts_us == DEC1_US);
    assert_true(in.ends_us == DEC1_US + 31 * DAY_US);
    assert_string_equal(in.group_by, "department");
    json_decref(body);

    assert_int_equal(parse("{\"name\": \"Q\", \"starts_at\":"
                           " \"2026-12-01T00:00:00.250Z\", \"ends_at\":"
                           " \"2026-12-01T00:00:01Z\", \"group_by\":"
                           " \"api_key\"}", 0, &in, &err, &body), CD_OK);
    assert_true(in.starts_us == DEC1_US + 250000);
    assert_string_equal(in.group_by, "api_key");
    json_decref(body);
}


static void
test_post_body_errors_name_the_field(void **state)
{
    (void) state;

    assert_refused("{}", 422, "missing_field", "name");
    assert_refused("{\"name\": \"x\"}", 422, "missing_field", "starts_at");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01T00:00:00Z\""
                   "}", 422, "missing_field", "ends_at");
    assert_refused("{\"name\": 3, \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-12-02T00:00:00Z\"}", 400,
                   "invalid_type", "name");
    assert_refused("{\"name\": \"\", \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-12-02T00:00:00Z\"}", 422,
                   "invalid_value", "name");
    assert_refused("{\"name\": \"x\", \"starts_at\": 1796083200,"
                   " \"ends_at\": \"2026-12-02T00:00:00Z\"}", 400,
                   "invalid_type", "starts_at");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01\","
                   " \"ends_at\": \"2026-12-02T00:00:00Z\"}", 422,
                   "invalid_value", "starts_at");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-02-30T00:00:00Z\"}", 422,
                   "invalid_value", "ends_at");
    /* finer than the answers can show */
    assert_refused("{\"name\": \"x\", \"starts_at\":"
                   " \"2026-12-01T00:00:00.0005Z\", \"ends_at\":"
                   " \"2026-12-02T00:00:00Z\"}", 422, "invalid_value",
                   "starts_at");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-12-02T00:00:00Z\", \"group_by\":"
                   " \"team\"}", 422, "invalid_value", "group_by");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-12-02T00:00:00Z\", \"group_by\":"
                   " [\"project\"]}", 400, "invalid_type", "group_by");
}


static void
test_inverted_empty_and_long_ranges_name_ends_at(void **state)
{
    json_t                 *body;
    cd_field_error_t        err;
    cd_chargeback_input_t   in;

    (void) state;

    /* inverted, empty */
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-02T00:00:00Z\","
                   " \"ends_at\": \"2026-12-01T00:00:00Z\"}", 422,
                   "invalid_value", "ends_at");
    assert_refused("{\"name\": \"x\", \"starts_at\": \"2026-12-01T00:00:00Z\","
                   " \"ends_at\": \"2026-12-01T01:00:00+01:00\"}", 422,
                   "invalid_value", "ends_at");

    /* 366 days is the longest, one millisecond more is refused */
    assert_int_equal(parse("{\"name\": \"x\", \"starts_at\":"
                           " \"2027-01-01T00:00:00Z\", \"ends_at\":"
                           " \"2028-01-02T00:00:00Z\"}", 0, &in, &err,
                           &body), CD_OK);
    assert_true(in.ends_us - in.starts_us == CD_CHARGEBACK_US_MAX);
    json_decref(body);

    assert_refused("{\"name\": \"x\", \"starts_at\": \"2027-01-01T00:00:00Z\","
                   " \"ends_at\": \"2028-01-02T00:00:00.001Z\"}", 422,
                   "invalid_value", "ends_at");
}


static void
test_patch_replaces_only_the_members_given(void **state)
{
    json_t                 *body;
    cd_field_error_t        err;
    cd_chargeback_input_t   in;

    (void) state;

    in.name = "stored";
    in.starts_us = DEC1_US;
    in.ends_us = DEC1_US + 31 * DAY_US;
    in.group_by = "project";

    assert_int_equal(parse("{\"name\": null, \"group_by\": \"agent\"}", 1,
                           &in, &err, &body), CD_OK);
    assert_string_equal(in.name, "stored");
    assert_string_equal(in.group_by, "agent");
    assert_true(in.starts_us == DEC1_US);
    json_decref(body);

    assert_int_equal(parse("{}", 1, &in, &err, &body), CD_OK);
    json_decref(body);

    /* a new end checked against the stored start */
    assert_int_equal(parse("{\"ends_at\": \"2026-11-30T00:00:00Z\"}", 1,
                           &in, &err, &body), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.field, "ends_at");
    json_decref(body);

    /* and a new start against the stored end: still the end's fault */
    in.ends_us = DEC1_US + 31 * DAY_US;
    assert_int_equal(parse("{\"starts_at\": \"2025-12-01T00:00:00Z\"}", 1,
                           &in, &err, &body), CD_ERROR);
    assert_string_equal(err.field, "ends_at");
    json_decref(body);
}


static void
test_ids_and_groupings(void **state)
{
    (void) state;

    assert_true(cd_chargeback_id_valid("cbp_0123456789abcdef01234567"));
    assert_false(cd_chargeback_id_valid("cbp_0123456789ABCDEF01234567"));
    assert_false(cd_chargeback_id_valid("cbp_0123456789abcdef0123456"));
    assert_false(cd_chargeback_id_valid("cbp_0123456789abcdef012345678"));
    assert_false(cd_chargeback_id_valid("bud_0123456789abcdef01234567"));
    assert_false(cd_chargeback_id_valid(""));

    assert_string_equal(cd_chargeback_group_parse("department"),
                        "department");
    assert_string_equal(cd_chargeback_group_parse("project"), "project");
    assert_string_equal(cd_chargeback_group_parse("api_key"), "api_key");
    assert_string_equal(cd_chargeback_group_parse("agent"), "agent");
    assert_null(cd_chargeback_group_parse("Department"));
    assert_null(cd_chargeback_group_parse("organization"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_post_body_reads_times_and_defaults_the_grouping),
        cmocka_unit_test(test_post_body_errors_name_the_field),
        cmocka_unit_test(test_inverted_empty_and_long_ranges_name_ends_at),
        cmocka_unit_test(test_patch_replaces_only_the_members_given),
        cmocka_unit_test(test_ids_and_groupings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
