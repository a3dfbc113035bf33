/*
 * Forecasts and anomalies over a spend series: see sp_forecast.h and
 * docs/forecasts.md for the methods and why they were chosen.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sp_forecast.h"


/*
 * The Holt-Winters grid. Small on purpose: a few hundred days times 150
 * points is well under a millisecond, and a finer grid only chases the
 * noise of the one-step errors. beta includes 0 (no trend) so a flat
 * series is not given a drift it does not have.
 */
static const double  sp_hw_alphas[] = { 0.05, 0.1, 0.2, 0.3, 0.5, 0.7 };
static const double  sp_hw_betas[] = { 0.0, 0.01, 0.05, 0.1, 0.2 };
static const double  sp_hw_gammas[] = { 0.05, 0.1, 0.2, 0.3, 0.5 };

#define SP_NELTS(a)  (sizeof(a) / sizeof((a)[0]))


int64_t
sp_forecast_nano(double value)
{
    if (!(value > 0.0)) {          /* NaN too */
        return 0;
    }

    if (value >= 9.2e18) {
        return INT64_MAX;
    }

    return (int64_t) floor(value + 0.5);
}


const char *
sp_forecast_method_name(sp_forecast_method_e method)
{
    switch (method) {
    case SP_FORECAST_FLAT:
        return "flat";
    case SP_FORECAST_LINEAR:
        return "linear";
    case SP_FORECAST_HOLT_WINTERS:
        return "holt_winters";
    default:
        return "none";
    }
}


/* ---- Holt-Winters additive -------------------------------------------- */

/*
 * The initial state from the first two seasons: level the mean of the
 * first, trend the difference of the two means per bucket, season the
 * first season's departures from its mean.
 */
static void
sp_hw_init(const int64_t *x, size_t p, double *level, double *trend,
    double *season)
{
    size_t  i;
    double  m1, m2;

    m1 = 0.0;
    m2 = 0.0;

    for (i = 0; i < p; i++) {
        m1 += (double) x[i];
        m2 += (double) x[p + i];
    }

    m1 /= (double) p;
    m2 /= (double) p;

    *level = m1;
    *trend = (m2 - m1) / (double) p;

    for (i = 0; i < p; i++) {
        season[i] = (double) x[i] - m1;
    }
}


/*
 * Runs the recursion over the whole series from the initial state; the
 * squared one-step errors after the first season (which the initial
 * state was taken from) are summed into *sse, counted in *count.
 */
static void
sp_hw_run(const int64_t *x, size_t n, size_t p, double alpha, double beta,
    double gamma, double *level, double *trend, double *season, double *sse,
    size_t *count)
{
    size_t  t, k;
    double  l, b, prev, y, e;

    sp_hw_init(x, p, level, trend, season);

    l = *level;
    b = *trend;
    *sse = 0.0;
    *count = 0;

    for (t = 0; t < n; t++) {
        k = t % p;
        y = (double) x[t];
        e = y - (l + b + season[k]);

        if (t >= p) {
            *sse += e * e;
            (*count)++;
        }

        prev = l;
        l = alpha * (y - season[k]) + (1.0 - alpha) * (l + b);
        b = beta * (l - prev) + (1.0 - beta) * b;
        season[k] = gamma * (y - l) + (1.0 - gamma) * season[k];
    }

    *level = l;
    *trend = b;
}


static void
sp_forecast_fit_hw(const int64_t *x, size_t n, size_t p,
    sp_forecast_model_t *m)
{
    size_t  a, b, g, count, best_count;
    double  sse, best, level, trend, season[SP_FORECAST_SEASON_MAX];

    best = -1.0;
    best_count = 0;

    /* ties keep the first point: the smoothest parameters */
    for (a = 0; a < SP_NELTS(sp_hw_alphas); a++) {
        for (b = 0; b < SP_NELTS(sp_hw_betas); b++) {
            for (g = 0; g < SP_NELTS(sp_hw_gammas); g++) {
                sp_hw_run(x, n, p, sp_hw_alphas[a], sp_hw_betas[b],
                          sp_hw_gammas[g], &level, &trend, season, &sse,
                          &count);

                if (best < 0.0 || sse < best) {
                    best = sse;
                    best_count = count;
                    m->alpha = sp_hw_alphas[a];
                    m->beta = sp_hw_betas[b];
                    m->gamma = sp_hw_gammas[g];
                    m->level = level;
                    m->trend = trend;
                    memcpy(m->season, season, p * sizeof(double));
                }
            }
        }
    }

    m->sigma = best_count > 0 ? sqrt(best / (double) best_count) : 0.0;
}


/* ---- linear trend and mean -------------------------------------------- */

static void
sp_forecast_fit_linear(const int64_t *x, size_t n, sp_forecast_model_t *m)
{
    size_t  t;
    double  mt, mx, sxx, sxy, slope, icept, e, sse;

    mt = (double) (n - 1) / 2.0;
    mx = 0.0;

    for (t = 0; t < n; t++) {
        mx += (double) x[t];
    }

    mx /= (double) n;
    sxx = 0.0;
    sxy = 0.0;

    for (t = 0; t < n; t++) {
        sxx += ((double) t - mt) * ((double) t - mt);
        sxy += ((double) t - mt) * ((double) x[t] - mx);
    }

    slope = sxy / sxx;                /* n >= 3: sxx > 0 */
    icept = mx - slope * mt;
    sse = 0.0;

    for (t = 0; t < n; t++) {
        e = (double) x[t] - (icept + slope * (double) t);
        sse += e * e;
    }

    /* two parameters fitted: n - 2 degrees of freedom */
    m->level = icept + slope * (double) (n - 1);
    m->trend = slope;
    m->sigma = sqrt(sse / (double) (n - 2));
}


static void
sp_forecast_fit_flat(const int64_t *x, size_t n, sp_forecast_model_t *m)
{
    size_t  t;
    double  mean, e, sse;

    mean = 0.0;

    for (t = 0; t < n; t++) {
        mean += (double) x[t];
    }

    mean /= (double) n;
    sse = 0.0;

    for (t = 0; t < n; t++) {
        e = (double) x[t] - mean;
        sse += e * e;
    }

    m->level = mean;
    m->trend = 0.0;
    m->sigma = n > 1 ? sqrt(sse / (double) (n - 1)) : 0.0;
}


int
sp_forecast_fit(const int64_t *series, size_t n, size_t period,
    sp_forecast_model_t *model)
{
    if (period == 0 || period > SP_FORECAST_SEASON_MAX) {
        return -1;
    }

    memset(model, 0, sizeof(sp_forecast_model_t));
    model->n = n;
    model->period = period;

    if (period > 1 && n >= 2 * period) {
        model->method = SP_FORECAST_HOLT_WINTERS;
        sp_forecast_fit_hw(series, n, period, model);

    } else if (n >= 3) {
        model->method = SP_FORECAST_LINEAR;
        sp_forecast_fit_linear(series, n, model);

    } else if (n > 0) {
        model->method = SP_FORECAST_FLAT;
        sp_forecast_fit_flat(series, n, model);

    } else {
        model->method = SP_FORECAST_NONE;
    }

    return 0;
}


static void
sp_forecast_band(double expected, double spread, sp_forecast_point_t *p)
{
    p->expected = sp_forecast_nano(expected);
    p->low80 = sp_forecast_nano(expected - SP_FORECAST_Z80 * spread);
    p->high80 = sp_forecast_nano(expected + SP_FORECAST_Z80 * spread);
    p->low95 = sp_forecast_nano(expected - SP_FORECAST_Z95 * spread);
    p->high95 = sp_forecast_nano(expected + SP_FORECAST_Z95 * spread);
}


void
sp_forecast_at(const sp_forecast_model_t *model, size_t h,
    sp_forecast_point_t *point)
{
    double  expected;

    expected = model->level + (double) h * model->trend;

    if (model->method == SP_FORECAST_HOLT_WINTERS) {
        expected += model->season[(model->n - 1 + h) % model->period];
    }

    /* spend is never negative: a falling trend ends at 0 */
    if (expected < 0.0) {
        expected = 0.0;
    }

    sp_forecast_band(expected, model->sigma * sqrt((double) h), point);
}


void
sp_forecast_sum_interval(const sp_forecast_model_t *model, size_t h,
    int64_t expected_sum, sp_forecast_point_t *point)
{
    double  spread;

    spread = model->sigma * sqrt((double) h * (double) (h + 1) / 2.0);

    sp_forecast_band((double) expected_sum, spread, point);
    point->expected = expected_sum;
}


/* ---- anomalies -------------------------------------------------------- */

void
sp_anomaly_rule_default(sp_anomaly_rule_t *rule)
{
    rule->z_threshold = SP_ANOMALY_Z_THRESHOLD;
    rule->min_abs_nano = SP_ANOMALY_MIN_ABS_NANO;
    rule->min_ratio = SP_ANOMALY_MIN_RATIO;
}


static int
sp_double_cmp(const void *a, const void *b)
{
    double  x, y;

    x = *(const double *) a;
    y = *(const double *) b;

    return (x > y) - (x < y);
}


/* the median of v[0..n), n > 0; v is reordered */
static double
sp_median(double *v, size_t n)
{
    qsort(v, n, sizeof(double), sp_double_cmp);

    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}


/* out[t]: the median of in[t - half .. t + half], cut at the ends */
static void
sp_rolling_median(const double *in, size_t n, size_t half, double *scratch,
    double *out)
{
    size_t  t, lo, hi;

    for (t = 0; t < n; t++) {
        lo = t >= half ? t - half : 0;
        hi = t + half < n ? t + half : n - 1;

        memcpy(scratch, in + lo, (hi - lo + 1) * sizeof(double));
        out[t] = sp_median(scratch, hi - lo + 1);
    }
}


/*
 * The seasonal profile of v: the median of each position in the season,
 * less the median of those medians, so the profile moves no level.
 */
static void
sp_season_profile(const double *v, size_t n, size_t p, double *scratch,
    double *season)
{
    size_t  k, t, m;
    double  centre, medians[SP_FORECAST_SEASON_MAX];

    for (k = 0; k < p; k++) {
        m = 0;

        for (t = k; t < n; t += p) {
            scratch[m++] = v[t];
        }

        season[k] = m > 0 ? sp_median(scratch, m) : 0.0;
    }

    memcpy(medians, season, p * sizeof(double));
    centre = sp_median(medians, p);

    for (k = 0; k < p; k++) {
        season[k] -= centre;
    }
}


int
sp_anomaly_detect(const int64_t *series, size_t n, size_t period,
    const sp_anomaly_rule_t *rule, sp_anomaly_t *out)
{
    size_t   t;
    double  *x, *level, *work, *scratch, *resid;
    double   season[SP_FORECAST_SEASON_MAX], med, mad, mean_ad, scale, r;
    double   expected, change;

    if (period == 0 || period > SP_FORECAST_SEASON_MAX) {
        return -1;
    }

    memset(out, 0, n * sizeof(sp_anomaly_t));

    if (n < 2 * period) {
        for (t = 0; t < n; t++) {
            out[t].expected = series[t] > 0 ? series[t] : 0;
        }

        return 0;
    }

    x = malloc(5 * n * sizeof(double));
    if (x == NULL) {
        return -1;
    }

    level = x + n;
    work = level + n;
    scratch = work + n;
    resid = scratch + n;

    for (t = 0; t < n; t++) {
        x[t] = (double) series[t];
    }

    /*
     * A first level from the raw series (a window of two seasons and one
     * bucket spans every position twice, so the season barely moves its
     * median), the season from what is left, then the level again from
     * the series without its season. Medians throughout: a spike or a
     * quiet stretch shorter than half the window moves neither.
     */
    sp_rolling_median(x, n, period, scratch, level);

    for (t = 0; t < n; t++) {
        work[t] = x[t] - level[t];
    }

    sp_season_profile(work, n, period, scratch, season);

    for (t = 0; t < n; t++) {
        work[t] = x[t] - season[t % period];
    }

    sp_rolling_median(work, n, period, scratch, level);

    for (t = 0; t < n; t++) {
        resid[t] = x[t] - (level[t] + season[t % period]);
    }

    memcpy(scratch, resid, n * sizeof(double));
    med = sp_median(scratch, n);

    mean_ad = 0.0;

    for (t = 0; t < n; t++) {
        scratch[t] = fabs(resid[t] - med);
        mean_ad += scratch[t];
    }

    mad = sp_median(scratch, n);
    mean_ad /= (double) n;

    /*
     * Iglewicz and Hoaglin's modified z-score, 0.6745 (r - med) / MAD;
     * when more than half the residuals are equal (MAD 0), the mean
     * absolute deviation times 1.2533 takes its place (both estimate
     * sigma / 1.4826 ... sigma * 0.7979 for normal noise).
     */
    if (mad > 0.0) {
        scale = mad / 0.6745;

    } else if (mean_ad > 0.0) {
        scale = mean_ad * 1.253314;

    } else {
        scale = 0.0;
    }

    for (t = 0; t < n; t++) {
        expected = level[t] + season[t % period];
        out[t].expected = sp_forecast_nano(expected);

        r = resid[t] - med;
        out[t].z = scale > 0.0 ? r / scale : 0.0;

        change = fabs(x[t] - (expected > 0.0 ? expected : 0.0));

        if (fabs(out[t].z) > rule->z_threshold
            && change >= (double) rule->min_abs_nano
            && change >= rule->min_ratio * fabs(expected))
        {
            out[t].flagged = 1;
            out[t].direction = out[t].z > 0.0 ? 1 : -1;
        }
    }

    free(x);

    return 0;
}
