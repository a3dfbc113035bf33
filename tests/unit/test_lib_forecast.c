/*
 * libspendpol forecasts: the method by history length, Holt-Winters on a
 * weekly pattern, the intervals, and the anomaly rule.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "sp_forecast.h"


#define USD  1000000000LL

/* Monday .. Sunday, in USD: weekends are quiet */
static const int64_t  weekly[7] = { 100, 110, 105, 120, 95, 40, 30 };


/* a deterministic PRNG (xorshift32), uniform in [-1, 1] */
static uint32_t  rng_state;

static double
noise(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;

    return (double) rng_state / 2147483647.5 - 1.0;
}


/* days of the weekly pattern, +- ratio noise */
static void
series_weekly(int64_t *x, size_t n, double ratio)
{
    size_t  t;

    rng_state = 2463534242u;

    for (t = 0; t < n; t++) {
        x[t] = (int64_t) ((double) weekly[t % 7] * USD
                          * (1.0 + ratio * noise()));
    }
}


static void
test_forecast_method_follows_history_length(void **state)
{
    int64_t              x[14];
    sp_forecast_model_t  m;

    series_weekly(x, 14, 0.0);

    assert_int_equal(sp_forecast_fit(x, 0, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_NONE);
    assert_int_equal(sp_forecast_fit(x, 2, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_FLAT);
    assert_int_equal(sp_forecast_fit(x, 3, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_LINEAR);
    assert_int_equal(sp_forecast_fit(x, 13, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_LINEAR);
    assert_int_equal(sp_forecast_fit(x, 14, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_HOLT_WINTERS);
    assert_string_equal(sp_forecast_method_name(m.method), "holt_winters");

    assert_int_equal(sp_forecast_fit(x, 14, 0, &m), -1);
    assert_int_equal(sp_forecast_fit(x, 14, SP_FORECAST_SEASON_MAX + 1, &m),
                     -1);
}


static void
test_forecast_flat_is_the_mean(void **state)
{
    int64_t              x[2] = { 10 * USD, 20 * USD };
    sp_forecast_model_t  m;
    sp_forecast_point_t  p;

    assert_int_equal(sp_forecast_fit(x, 2, 7, &m), 0);
    sp_forecast_at(&m, 5, &p);

    assert_int_equal(p.expected, 15 * USD);
    assert_true(p.low80 < p.expected && p.high80 > p.expected);
    assert_true(p.low95 <= p.low80 && p.high95 >= p.high80);
}


static void
test_forecast_linear_extends_an_exact_line(void **state)
{
    int64_t              x[5] = { 1 * USD, 2 * USD, 3 * USD, 4 * USD,
                                  5 * USD };
    sp_forecast_model_t  m;
    sp_forecast_point_t  p;

    assert_int_equal(sp_forecast_fit(x, 5, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_LINEAR);

    sp_forecast_at(&m, 1, &p);
    assert_int_equal(p.expected, 6 * USD);
    /* an exact line has no residual: the interval is the point */
    assert_int_equal(p.low95, 6 * USD);
    assert_int_equal(p.high95, 6 * USD);

    sp_forecast_at(&m, 10, &p);
    assert_int_equal(p.expected, 15 * USD);
}


static void
test_forecast_falling_trend_stops_at_zero(void **state)
{
    int64_t              x[4] = { 4 * USD, 3 * USD, 2 * USD, 1 * USD };
    sp_forecast_model_t  m;
    sp_forecast_point_t  p;

    assert_int_equal(sp_forecast_fit(x, 4, 7, &m), 0);
    sp_forecast_at(&m, 30, &p);

    assert_int_equal(p.expected, 0);
    assert_int_equal(p.low95, 0);
}


static void
test_forecast_holt_winters_learns_the_weekly_pattern(void **state)
{
    size_t               h, n;
    int64_t              x[91];
    double               err;
    sp_forecast_model_t  m;
    sp_forecast_point_t  p;

    n = 84;                   /* twelve weeks; the next day is a Monday */
    series_weekly(x, 91, 0.05);

    assert_int_equal(sp_forecast_fit(x, n, 7, &m), 0);
    assert_int_equal(m.method, SP_FORECAST_HOLT_WINTERS);
    assert_true(m.sigma > 0.0);

    for (h = 1; h <= 7; h++) {
        sp_forecast_at(&m, h, &p);

        /* the noiseless value lies in the 95% interval, close to expected */
        assert_true(p.low95 <= weekly[(n - 1 + h) % 7] * USD);
        assert_true(p.high95 >= weekly[(n - 1 + h) % 7] * USD);

        err = fabs((double) p.expected - (double) weekly[(n - 1 + h) % 7]
                   * USD);
        assert_true(err < 0.1 * (double) weekly[(n - 1 + h) % 7] * USD);
    }

    /* h = 6 is a Saturday: the season, not a flat line */
    sp_forecast_at(&m, 6, &p);
    assert_true(p.expected < 50 * USD);
}


static void
test_forecast_interval_widens_with_sqrt_h(void **state)
{
    int64_t              x[28];
    sp_forecast_model_t  m;
    sp_forecast_point_t  p1, p4;

    series_weekly(x, 28, 0.1);
    assert_int_equal(sp_forecast_fit(x, 28, 7, &m), 0);

    /* same weekday, four weeks apart: h = 7 and h = 28 */
    sp_forecast_at(&m, 7, &p1);
    sp_forecast_at(&m, 28, &p4);

    assert_true(llabs((p4.high80 - p4.expected)
                      - 2 * (p1.high80 - p1.expected)) <= 2);
}


static void
test_forecast_sum_interval(void **state)
{
    sp_forecast_model_t  m;
    sp_forecast_point_t  p;

    memset(&m, 0, sizeof(m));
    m.method = SP_FORECAST_FLAT;
    m.sigma = (double) USD;

    /* h = 3: sigma * sqrt(6) */
    sp_forecast_sum_interval(&m, 3, 30 * USD, &p);

    assert_int_equal(p.expected, 30 * USD);
    assert_int_equal(p.high95, sp_forecast_nano(30.0 * USD
                     + SP_FORECAST_Z95 * sqrt(6.0) * USD));
    assert_int_equal(p.low95, sp_forecast_nano(30.0 * USD
                     - SP_FORECAST_Z95 * sqrt(6.0) * USD));
}


static void
test_forecast_nano_rounds_once_and_clips(void **state)
{
    assert_int_equal(sp_forecast_nano(1.5), 2);
    assert_int_equal(sp_forecast_nano(1.49), 1);
    assert_int_equal(sp_forecast_nano(-3.0), 0);
    assert_int_equal(sp_forecast_nano(NAN), 0);
    assert_int_equal(sp_forecast_nano(1e30), INT64_MAX);
}


static size_t
count_flagged(const sp_anomaly_t *a, size_t n)
{
    size_t  t, k;

    for (k = 0, t = 0; t < n; t++) {
        k += a[t].flagged;
    }

    return k;
}


static void
test_anomaly_finds_a_doubling_and_a_quiet_stretch(void **state)
{
    size_t             t;
    int64_t            x[90];
    sp_anomaly_t       a[90];
    sp_anomaly_rule_t  rule;

    series_weekly(x, 90, 0.08);

    x[30] *= 2;
    x[31] *= 2;

    for (t = 60; t < 63; t++) {
        x[t] = x[t] / 5;
    }

    sp_anomaly_rule_default(&rule);
    assert_int_equal(sp_anomaly_detect(x, 90, 7, &rule, a), 0);

    assert_true(a[30].flagged && a[30].direction == 1);
    assert_true(a[31].flagged && a[31].direction == 1);
    assert_true(a[30].z > 3.5);

    for (t = 60; t < 63; t++) {
        assert_true(a[t].flagged);
        assert_int_equal(a[t].direction, -1);
    }

    /* and nothing else: ordinary noise is not flagged */
    assert_int_equal(count_flagged(a, 90), 5);
}


static void
test_anomaly_plain_noise_flags_nothing(void **state)
{
    int64_t            x[120];
    sp_anomaly_t       a[120];
    sp_anomaly_rule_t  rule;

    series_weekly(x, 120, 0.1);
    sp_anomaly_rule_default(&rule);

    assert_int_equal(sp_anomaly_detect(x, 120, 7, &rule, a), 0);
    assert_int_equal(count_flagged(a, 120), 0);
}


static void
test_anomaly_minimum_change_ignores_cents(void **state)
{
    size_t             t;
    int64_t            x[28];
    sp_anomaly_t       a[28];
    sp_anomaly_rule_t  rule;

    /* a near-zero series: 1 cent a day, one day at 10 cents */
    for (t = 0; t < 28; t++) {
        x[t] = USD / 100;
    }

    x[20] = USD / 10;
    sp_anomaly_rule_default(&rule);

    assert_int_equal(sp_anomaly_detect(x, 28, 7, &rule, a), 0);
    assert_true(fabs(a[20].z) > 3.5);
    assert_int_equal(count_flagged(a, 28), 0);

    /* the same shape in dollars is flagged (MAD 0: the mean deviation) */
    for (t = 0; t < 28; t++) {
        x[t] = 10 * USD;
    }

    x[20] = 100 * USD;

    assert_int_equal(sp_anomaly_detect(x, 28, 7, &rule, a), 0);
    assert_int_equal(count_flagged(a, 28), 1);
    assert_true(a[20].flagged && a[20].direction == 1);
    assert_int_equal(a[20].expected, 10 * USD);
}


static void
test_anomaly_short_history_flags_nothing(void **state)
{
    int64_t            x[10] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1000 * USD };
    sp_anomaly_t       a[10];
    sp_anomaly_rule_t  rule;

    sp_anomaly_rule_default(&rule);

    assert_int_equal(sp_anomaly_detect(x, 10, 7, &rule, a), 0);
    assert_int_equal(count_flagged(a, 10), 0);
    assert_int_equal(sp_anomaly_detect(x, 10, 0, &rule, a), -1);
}


static void
test_anomaly_hourly_season(void **state)
{
    size_t             t;
    int64_t            x[24 * 14];
    sp_anomaly_t       a[24 * 14];
    sp_anomaly_rule_t  rule;

    rng_state = 88172645u;

    /* busy office hours, quiet nights */
    for (t = 0; t < 24 * 14; t++) {
        x[t] = (int64_t) (((t % 24) >= 8 && (t % 24) < 18 ? 50.0 : 5.0)
                          * USD * (1.0 + 0.05 * noise()));
    }

    x[24 * 10 + 3] = 60 * USD;       /* a busy hour at 3 a.m. */

    sp_anomaly_rule_default(&rule);
    assert_int_equal(sp_anomaly_detect(x, 24 * 14, 24, &rule, a), 0);

    assert_true(a[24 * 10 + 3].flagged);
    assert_int_equal(count_flagged(a, 24 * 14), 1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_forecast_method_follows_history_length),
        cmocka_unit_test(test_forecast_flat_is_the_mean),
        cmocka_unit_test(test_forecast_linear_extends_an_exact_line),
        cmocka_unit_test(test_forecast_falling_trend_stops_at_zero),
        cmocka_unit_test(test_forecast_holt_winters_learns_the_weekly_pattern),
        cmocka_unit_test(test_forecast_interval_widens_with_sqrt_h),
        cmocka_unit_test(test_forecast_sum_interval),
        cmocka_unit_test(test_forecast_nano_rounds_once_and_clips),
        cmocka_unit_test(test_anomaly_finds_a_doubling_and_a_quiet_stretch),
        cmocka_unit_test(test_anomaly_plain_noise_flags_nothing),
        cmocka_unit_test(test_anomaly_minimum_change_ignores_cents),
        cmocka_unit_test(test_anomaly_short_history_flags_nothing),
        cmocka_unit_test(test_anomaly_hourly_season),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
