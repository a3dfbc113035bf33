/*
 * libspendpol money: cost in nano-USD, formatting and parsing.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "spendpol.h"


/* gpt-4o-mini list price: $0.15 / $0.60 / $0.075 per 1M tokens */
static const sp_price_t  mini = { 150000000, 600000000, 75000000, 0 };


static int64_t
cost_of(const sp_price_t *price, int64_t in, int64_t out, int64_t cached,
    int64_t written)
{
    sp_usage_t  usage;
    int64_t     cost;

    usage.input_tokens = in;
    usage.output_tokens = out;
    usage.cached_tokens = cached;
    usage.cache_write_tokens = written;

    cost = -12345;
    assert_int_equal(sp_cost_nano(price, &usage, &cost), SP_OK);

    return cost;
}


static void
test_cost_gpt4o_mini_exact(void **state)
{
    (void) state;

    assert_int_equal(cost_of(&mini, 1000, 500, 0, 0), 450000);
    assert_int_equal(cost_of(&mini, 1000000, 0, 0, 0), 150000000);
    assert_int_equal(cost_of(&mini, 0, 1000000, 0, 0), 600000000);
    assert_int_equal(cost_of(&mini, 1, 0, 0, 0), 150);
    assert_int_equal(cost_of(&mini, 0, 0, 0, 0), 0);
}


static void
test_cost_cached_tokens_use_cached_price(void **state)
{
    (void) state;

    /* 1000 input, 400 of them cached: 600 * 150 + 400 * 75 = 120000 */
    assert_int_equal(cost_of(&mini, 1000, 0, 400, 0), 120000);
    /* all cached */
    assert_int_equal(cost_of(&mini, 1000, 0, 1000, 0), 75000);
}


static void
test_cost_cached_tokens_clamped_to_input(void **state)
{
    (void) state;

    /* 5000 cached of 1000 input: all 1000 at the cached price */
    assert_int_equal(cost_of(&mini, 1000, 0, 5000, 0), 75000);
}


static void
test_cost_cache_write_clamped_to_uncached_input(void **state)
{
    sp_price_t  p = { 3000000000LL, 15000000000LL, 300000000LL,
                      3750000000LL };

    (void) state;

    /* 1000 in: 200 cached, 300 written, 500 plain */
    assert_int_equal(cost_of(&p, 1000, 0, 200, 300),
                     (500 * 3000000000LL + 200 * 300000000LL
                      + 300 * 3750000000LL) / 1000000);
    /* written clamped to input - cached = 800 */
    assert_int_equal(cost_of(&p, 1000, 0, 200, 10000),
                     (200 * 300000000LL + 800 * 3750000000LL) / 1000000);
}


static void
test_cost_negative_counts_are_zero(void **state)
{
    (void) state;

    assert_int_equal(cost_of(&mini, -1000, -500, -3, -4), 0);
    assert_int_equal(cost_of(&mini, 1000, -500, -3, 0), 150000);
}


static void
test_cost_rounds_half_up_to_whole_nano(void **state)
{
    sp_price_t  p = { 1, 1, 1, 0 };
    sp_price_t  half = { 500000, 0, 0, 0 };
    sp_price_t  below = { 499999, 0, 0, 0 };

    (void) state;

    /* 1 token at 1 nano per 1M: 0.000001 nano -> 0 */
    assert_int_equal(cost_of(&p, 1, 0, 0, 0), 0);
    /* exactly half a nano rounds up */
    assert_int_equal(cost_of(&half, 1, 0, 0, 0), 1);
    assert_int_equal(cost_of(&below, 1, 0, 0, 0), 0);
    assert_int_equal(cost_of(&half, 3, 0, 0, 0), 2);    /* 1.5 -> 2 */
    assert_int_equal(cost_of(&p, 1499999, 0, 0, 0), 1);
    assert_int_equal(cost_of(&p, 1500000, 0, 0, 0), 2);
}


static void
test_cost_overflow_is_error(void **state)
{
    sp_price_t  p = { INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX };
    sp_usage_t  u = { INT64_MAX, INT64_MAX, 0, 0 };
    sp_usage_t  big = { INT64_MAX, 0, 0, 0 };
    sp_price_t  one = { 1000000, 0, 0, 0 };
    int64_t     cost;

    (void) state;

    cost = 7;
    assert_int_equal(sp_cost_nano(&p, &u, &cost), SP_ERROR);
    assert_int_equal(cost, 7);

    /* every product at its largest, all four terms */
    u.cached_tokens = INT64_MAX / 3;
    u.cache_write_tokens = INT64_MAX / 3;
    assert_int_equal(sp_cost_nano(&p, &u, &cost), SP_ERROR);

    /* exactly INT64_MAX fits: 1 nano per token */
    assert_int_equal(sp_cost_nano(&one, &big, &cost), SP_OK);
    assert_true(cost == INT64_MAX);

    one.input = 1000001;
    assert_int_equal(sp_cost_nano(&one, &big, &cost), SP_ERROR);
}


static void
check_format(int64_t nano, const char *expect)
{
    char    out[SP_MONEY_STR_LEN];
    size_t  n;

    memset(out, 'x', sizeof(out));
    n = sp_money_format(nano, out);
    assert_string_equal(out, expect);
    assert_int_equal(n, strlen(expect));
}


static void
test_money_format_values(void **state)
{
    (void) state;

    check_format(0, "0.000000");
    check_format(150000, "0.000150");
    check_format(150, "0.00000015");
    check_format(1, "0.000000001");
    check_format(12345678901LL, "12.345678901");
    check_format(1000000000LL, "1.000000");
    check_format(1500000000LL, "1.500000");
    check_format(-1500000000LL, "-1.500000");
    check_format(-150, "-0.00000015");
    check_format(-1, "-0.000000001");
    check_format(100, "0.0000001");
    check_format(1230, "0.00000123");
    check_format(1000, "0.000001");
    check_format(999999999, "0.999999999");
    check_format(10000000000LL, "10.000000");
    check_format(INT64_MAX, "9223372036.854775807");
    check_format(INT64_MIN, "-9223372036.854775808");
}


static void
test_money_format_fits_in_str_len(void **state)
{
    char  out[SP_MONEY_STR_LEN];

    (void) state;

    assert_true(sp_money_format(INT64_MIN, out) < SP_MONEY_STR_LEN);
}


static int
parse(const char *s, int64_t *nano)
{
    return sp_money_parse(s, strlen(s), nano);
}


static void
test_money_parse_values(void **state)
{
    int64_t  v;

    (void) state;

    assert_int_equal(parse("1.25", &v), SP_OK);
    assert_true(v == 1250000000LL);
    assert_int_equal(parse("0.000000150", &v), SP_OK);
    assert_true(v == 150);
    assert_int_equal(parse("3", &v), SP_OK);
    assert_true(v == 3000000000LL);
    assert_int_equal(parse("-1.5", &v), SP_OK);
    assert_true(v == -1500000000LL);
    assert_int_equal(parse("0", &v), SP_OK);
    assert_true(v == 0);
    assert_int_equal(parse("-0", &v), SP_OK);
    assert_true(v == 0);
    assert_int_equal(parse("0.123456789", &v), SP_OK);
    assert_true(v == 123456789);
    assert_int_equal(parse("9223372036.854775807", &v), SP_OK);
    assert_true(v == INT64_MAX);
}


static void
test_money_parse_uses_len_not_nul(void **state)
{
    int64_t  v;

    (void) state;

    assert_int_equal(sp_money_parse("1.25xyz", 4, &v), SP_OK);
    assert_true(v == 1250000000LL);
}


static void
test_money_parse_rejects_malformed(void **state)
{
    static const char  *bad[] = {
        "", ".", "1.", "abc", "-", "--1", "+1", " 1", "1 ", "1.2.3",
        "1e3", "0x10", "1,5", "0.1234567890", "1.0000000000", "-.", "1-",
        NULL
    };
    int64_t             v;
    int                 i;

    (void) state;

    for (i = 0; bad[i]; i++) {
        v = 42;
        if (parse(bad[i], &v) != SP_ERROR) {
            fail_msg("\"%s\" was accepted as %lld", bad[i], (long long) v);
        }
    }
}


static void
test_money_parse_rejects_overflow(void **state)
{
    static const char  *bad[] = {
        "9223372036.854775808", "9223372037", "10000000000",
        "92233720369", "184467440737", "99999999999999999999",
        "-9223372036.854775809", "92233720368547758080", NULL
    };
    int64_t             v;
    int                 i;

    (void) state;

    for (i = 0; bad[i]; i++) {
        v = 42;
        if (parse(bad[i], &v) != SP_ERROR) {
            fail_msg("\"%s\" was accepted as %lld", bad[i], (long long) v);
        }
    }
}


static void
test_money_format_parse_round_trip(void **state)
{
    static const int64_t  values[] = {
        0, 1, -1, 150, 150000, 999999999, 1000000000, 12345678901LL,
        -12345678901LL, 100000, 123456789012345LL, INT64_MAX, INT64_MIN,
        INT64_MAX - 1, INT64_MIN + 1
    };
    char                  out[SP_MONEY_STR_LEN];
    int64_t               v;
    size_t                i, n;

    (void) state;

    for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        n = sp_money_format(values[i], out);
        v = 42;
        if (sp_money_parse(out, n, &v) != SP_OK || v != values[i]) {
            fail_msg("%lld formatted as \"%s\" did not parse back",
                     (long long) values[i], out);
        }
    }
}


/* what a provider reports is clamped before it is billed or journaled */
static void
test_usage_normalize_clamps_cached_and_negative_counts(void **state)
{
    sp_usage_t  u;

    (void) state;

    u.input_tokens = 100;
    u.output_tokens = -5;
    u.cached_tokens = 80;
    u.cache_write_tokens = 50;
    sp_usage_normalize(&u);
    assert_true(u.input_tokens == 100);
    assert_true(u.output_tokens == 0);
    assert_true(u.cached_tokens == 80);
    assert_true(u.cache_write_tokens == 20);

    u.input_tokens = 10;
    u.output_tokens = 7;
    u.cached_tokens = 500;
    u.cache_write_tokens = -1;
    sp_usage_normalize(&u);
    assert_true(u.cached_tokens == 10);
    assert_true(u.cache_write_tokens == 0);
    assert_true(u.output_tokens == 7);

    u.input_tokens = -3;
    u.cached_tokens = 2;
    u.cache_write_tokens = 2;
    sp_usage_normalize(&u);
    assert_true(u.input_tokens == 0 && u.cached_tokens == 0
                && u.cache_write_tokens == 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_usage_normalize_clamps_cached_and_negative_counts),
        cmocka_unit_test(test_cost_gpt4o_mini_exact),
        cmocka_unit_test(test_cost_cached_tokens_use_cached_price),
        cmocka_unit_test(test_cost_cached_tokens_clamped_to_input),
        cmocka_unit_test(test_cost_cache_write_clamped_to_uncached_input),
        cmocka_unit_test(test_cost_negative_counts_are_zero),
        cmocka_unit_test(test_cost_rounds_half_up_to_whole_nano),
        cmocka_unit_test(test_cost_overflow_is_error),
        cmocka_unit_test(test_money_format_values),
        cmocka_unit_test(test_money_format_fits_in_str_len),
        cmocka_unit_test(test_money_parse_values),
        cmocka_unit_test(test_money_parse_uses_len_not_nul),
        cmocka_unit_test(test_money_parse_rejects_malformed),
        cmocka_unit_test(test_money_parse_rejects_overflow),
        cmocka_unit_test(test_money_format_parse_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
