/* controld PUT /pricing body validation, exact money, RFC 3339 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"


/* parses a JSON body; returns CD_OK or CD_ERROR with err filled */
static int
parse_body(const char *text, cd_price_input_t *in, cd_field_error_t *err)
{
    int      rc;
    json_t  *body;

    body = json_loads(text, 0, NULL);
    assert_non_null(body);

    memset(err, 0, sizeof(*err));
    rc = cd_price_body_parse(body, in, err);
    json_decref(body);

    return rc;
}


static void
expect_refused(const char *text, unsigned status, const char *code,
    const char *field)
{
    cd_price_input_t  in;
    cd_field_error_t  err;

    assert_int_equal(parse_body(text, &in, &err), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_string_equal(err.code, code);
    assert_string_equal(err.field, field);
    assert_non_null(strstr(err.message, field));
}


static void
test_price_body_strings_become_nano_usd(void **state)
{
    cd_price_input_t  in;
    cd_field_error_t  err;

    assert_int_equal(parse_body("{\"input_usd_per_mtok\": \"2.50\","
                                " \"output_usd_per_mtok\": \"10\","
                                " \"cached_input_usd_per_mtok\": \"1.25\","
                                " \"cache_write_usd_per_mtok\":"
                                " \"0.000000001\","
                                " \"max_output_tokens\": 16384}",
                                &in, &err), CD_OK);
    assert_true(in.input == 2500000000LL);
    assert_true(in.output == 10000000000LL);
    assert_true(in.cached_input == 1250000000LL);
    assert_true(in.cache_write == 1);
    assert_true(in.max_output_tokens == 16384);
    assert_int_equal(in.has_effective, 0);
}


static void
test_price_body_optional_fields_default_to_none(void **state)
{
    cd_price_input_t  in;
    cd_field_error_t  err;

    assert_int_equal(parse_body("{\"input_usd_per_mtok\": \"0\","
                                " \"output_usd_per_mtok\": \"0\","
                                " \"cached_input_usd_per_mtok\": null,"
                                " \"max_output_tokens\": null,"
                                " \"effective_from\": null}",
                                &in, &err), CD_OK);
    assert_true(in.input == 0);
    assert_true(in.cached_input == -1);
    assert_true(in.cache_write == -1);
    assert_true(in.max_output_tokens == -1);
    assert_int_equal(in.has_effective, 0);
}


static void
test_price_body_numbers_are_read_exactly(void **state)
{
    cd_price_input_t  in;
    cd_field_error_t  err;

    /* 0.1, 0.3 and 1.1 have no exact double: the decimal text counts */
    assert_int_equal(parse_body("{\"input_usd_per_mtok\": 0.1,"
                                " \"output_usd_per_mtok\": 0.3,"
                                " \"cached_input_usd_per_mtok\": 1.1,"
                                " \"cache_write_usd_per_mtok\": 3}",
                                &in, &err), CD_OK);
    assert_true(in.input == 100000000LL);
    assert_true(in.output == 300000000LL);
    assert_true(in.cached_input == 1100000000LL);
    assert_true(in.cache_write == 3000000000LL);

    assert_int_equal(parse_body("{\"input_usd_per_mtok\": 0.000000001,"
                                " \"output_usd_per_mtok\": 1e-3}",
                                &in, &err), CD_OK);
    assert_true(in.input == 1);
    assert_true(in.output == 1000000LL);

    assert_int_equal(parse_body("{\"input_usd_per_mtok\": 999999.123456789,"
                                " \"output_usd_per_mtok\": 15.75}",
                                &in, &err), CD_OK);
    assert_true(in.input == 999999123456789LL);
    assert_true(in.output == 15750000000LL);
}


static void
test_price_body_ambiguous_numbers_are_refused(void **state)
{
    /* 10 decimals, then 16 significant digits: send a string instead */
    expect_refused("{\"input_usd_per_mtok\": 0.1234567891,"
                   " \"output_usd_per_mtok\": 1}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": 1,"
                   " \"output_usd_per_mtok\": 123456.1234567891}", 422,
                   "invalid_value", "output_usd_per_mtok");
}


static void
test_price_body_refusals_name_the_field(void **state)
{
    expect_refused("{\"output_usd_per_mtok\": \"1\"}", 422, "missing_field",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": null}", 422, "missing_field",
                   "output_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"-0.01\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": -1,"
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": -0.5}", 422, "invalid_value",
                   "output_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1.0000000001\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"$1\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1e3\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": true,"
                   " \"output_usd_per_mtok\": \"1\"}", 400, "invalid_type",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": \"1\","
                   " \"cached_input_usd_per_mtok\": [1]}", 400,
                   "invalid_type", "cached_input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1000000.000000001\","
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": 1e300,"
                   " \"output_usd_per_mtok\": \"1\"}", 422, "invalid_value",
                   "input_usd_per_mtok");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": \"1\","
                   " \"max_output_tokens\": 1.5}", 400, "invalid_type",
                   "max_output_tokens");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": \"1\","
                   " \"max_output_tokens\": -1}", 422, "invalid_value",
                   "max_output_tokens");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": \"1\","
                   " \"effective_from\": 1764201600}", 400, "invalid_type",
                   "effective_from");
    expect_refused("{\"input_usd_per_mtok\": \"1\","
                   " \"output_usd_per_mtok\": \"1\","
                   " \"effective_from\": \"2026-12-01\"}", 422,
                   "invalid_value", "effective_from");
}


static void
test_price_money_round_trips_through_format(void **state)
{
    size_t             i;
    char               text[SP_MONEY_STR_LEN];
    json_t            *value;
    int64_t            nano, back;
    cd_field_error_t   err;
    static const char  *inputs[] = {
        "0", "0.000000001", "0.15", "2.50", "10", "0.0375", "123.456789",
        "999999.999999999", "1000000"
    };

    for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        value = json_string(inputs[i]);
        assert_non_null(value);
        assert_int_equal(cd_price_json_money(value, "f", &nano, &err), CD_OK);
        json_decref(value);

        /* what GET /pricing shows parses back to the same nano-USD */
        sp_money_format(nano, text);
        assert_int_equal(sp_money_parse(text, strlen(text), &back), SP_OK);
        assert_true(back == nano);

        value = json_string(text);
        assert_non_null(value);
        assert_int_equal(cd_price_json_money(value, "f", &back, &err),
                         CD_OK);
        assert_true(back == nano);
        json_decref(value);
    }

    value = json_string("2.50");
    assert_int_equal(cd_price_json_money(value, "f", &nano, &err), CD_OK);
    json_decref(value);
    sp_money_format(nano, text);
    assert_string_equal(text, "2.500000");
}


static void
test_rfc3339_times_in_microseconds(void **state)
{
    int64_t  us;

    assert_int_equal(cd_rfc3339_parse("1970-01-01T00:00:00Z", &us), CD_OK);
    assert_true(us == 0);

    /* 2026-12-01 is 20788 days after the epoch */
    assert_int_equal(cd_rfc3339_parse("2026-12-01T00:00:00Z", &us), CD_OK);
    assert_true(us == 20788LL * 86400 * 1000000);

    assert_int_equal(cd_rfc3339_parse("2026-12-01T02:00:00+02:00", &us),
                     CD_OK);
    assert_true(us == 20788LL * 86400 * 1000000);

    assert_int_equal(cd_rfc3339_parse("2026-11-30t19:30:00.5-04:30", &us),
                     CD_OK);
    assert_true(us == 20788LL * 86400 * 1000000 + 500000);

    assert_int_equal(cd_rfc3339_parse("2024-02-29 12:00:00.1234567z", &us),
                     CD_OK);
    assert_true(us % 1000000 == 123456);

    /* a leap second is the last microsecond of its minute */
    assert_int_equal(cd_rfc3339_parse("2016-12-31T23:59:60Z", &us), CD_OK);
    assert_true(us == 1483228800LL * 1000000 - 1);

    assert_int_equal(cd_rfc3339_parse("9999-12-31T23:59:59Z", &us), CD_OK);
}


static void
test_rfc3339_malformed_times_are_refused(void **state)
{
    size_t   i;
    int64_t  us;
    static const char  *bad[] = {
        "", "2026-12-01", "2026-12-01T00:00:00", "2026-12-01T00:00Z",
        "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
        "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
        "2026-12-01T24:00:00Z", "2026-12-01T00:60:00Z",
        "2026-12-01T00:00:61Z", "2026-12-01T00:00:00.Z",
        "2026-12-01T00:00:00+0200", "2026-12-01T00:00:00+24:00",
        "2026-12-01T00:00:00Zjunk", "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00", "26-12-01T00:00:00Z",
        "2026/12/01T00:00:00Z", "2026-12-01X00:00:00Z",
        "+2026-12-01T00:00:00Z",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cd_rfc3339_parse(bad[i], &us), CD_ERROR);
    }
}


static void
test_price_body_effective_from_is_parsed(void **state)
{
    cd_price_input_t  in;
    cd_field_error_t  err;

    assert_int_equal(parse_body("{\"input_usd_per_mtok\": \"1\","
                                " \"output_usd_per_mtok\": \"1\","
                                " \"effective_from\":"
                                " \"2026-12-01T00:00:00Z\"}",
                                &in, &err), CD_OK);
    assert_int_equal(in.has_effective, 1);
    assert_true(in.effective_us == 20788LL * 86400 * 1000000);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_price_body_strings_become_nano_usd),
        cmocka_unit_test(test_price_body_optional_fields_default_to_none),
        cmocka_unit_test(test_price_body_numbers_are_read_exactly),
        cmocka_unit_test(test_price_body_ambiguous_numbers_are_refused),
        cmocka_unit_test(test_price_body_refusals_name_the_field),
        cmocka_unit_test(test_price_money_round_trips_through_format),
        cmocka_unit_test(test_rfc3339_times_in_microseconds),
        cmocka_unit_test(test_rfc3339_malformed_times_are_refused),
        cmocka_unit_test(test_price_body_effective_from_is_parsed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
