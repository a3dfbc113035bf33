/*
 * Forecasts and anomalies over a spend series (issue 15, docs/forecasts.md):
 * the pure maths behind controld's /forecast routes and its anomaly job,
 * here so it is unit tested alone.
 *
 * A series is spend per bucket (a UTC day or hour) in nano-USD, oldest
 * first, without gaps (a bucket without spend is 0). The season is the
 * buckets of one cycle: 7 for days (a week), 24 for hours (a day).
 *
 * Floating point is used inside the models only; every answer is integer
 * nano-USD, rounded once (half away from zero) and never below 0.
 */

#ifndef SP_FORECAST_H
#define SP_FORECAST_H

#include <stddef.h>
#include <stdint.h>


#define SP_FORECAST_SEASON_MAX   24

/* the method chosen by how much history there is */
typedef enum {
    SP_FORECAST_NONE = 0,              /* no history: expects 0 */
    SP_FORECAST_FLAT,                  /* 1-2 buckets: their mean */
    SP_FORECAST_LINEAR,                /* >= 3: least-squares trend */
    SP_FORECAST_HOLT_WINTERS           /* >= 2 seasons: additive, seasonal */
} sp_forecast_method_e;

/* a fitted model; sp_forecast_fit() fills it */
typedef struct {
    sp_forecast_method_e  method;
    size_t                n;           /* buckets of history */
    size_t                period;      /* the season's length */
    double                alpha;       /* Holt-Winters: level, */
    double                beta;        /* trend */
    double                gamma;       /* and season smoothing */
    double                level;       /* at the last bucket */
    double                trend;       /* per bucket */
    double                season[SP_FORECAST_SEASON_MAX];
                                       /* by bucket index mod period */
    double                sigma;       /* residuals' standard deviation */
} sp_forecast_model_t;

/* one forecast bucket, nano-USD, each >= 0 */
typedef struct {
    int64_t  expected;
    int64_t  low80;
    int64_t  high80;
    int64_t  low95;
    int64_t  high95;
} sp_forecast_point_t;

/* the two-sided normal quantiles of the intervals */
#define SP_FORECAST_Z80   1.2815515655446004
#define SP_FORECAST_Z95   1.959963984540054


/*
 * Fits series[0..n) with a season of period buckets (1..
 * SP_FORECAST_SEASON_MAX): Holt-Winters additive when n >= 2 * period,
 * its smoothing parameters the point of a small grid (documented in
 * docs/forecasts.md) with the least sum of squared one-step-ahead errors
 * after the first season; else a least-squares line when n >= 3; else the
 * mean. sigma is the standard deviation of the chosen model's one-step
 * residuals. Returns 0, or -1 for a period out of range.
 */
int sp_forecast_fit(const int64_t *series, size_t n, size_t period,
    sp_forecast_model_t *model);

/*
 * The forecast h >= 1 buckets after the last one of the history: the
 * expected value and the 80% and 95% intervals, expected +- z * sigma *
 * sqrt(h), all clipped at 0.
 */
void sp_forecast_at(const sp_forecast_model_t *model, size_t h,
    sp_forecast_point_t *point);

/*
 * The interval of a sum of buckets 1..h after the history, from the
 * per-bucket variances sigma^2 * k summed (k = 1..h, errors taken as
 * independent): sum +- z * sigma * sqrt(h (h + 1) / 2). expected_sum is
 * the sum of the buckets' expected values.
 */
void sp_forecast_sum_interval(const sp_forecast_model_t *model, size_t h,
    int64_t expected_sum, sp_forecast_point_t *point);

/* "none", "flat", "linear", "holt_winters" */
const char *sp_forecast_method_name(sp_forecast_method_e method);

/* a double as nano-USD: rounded half away from zero, 0 when below */
int64_t sp_forecast_nano(double value);


/* ---- anomalies -------------------------------------------------------- */

/* the default rule (docs/forecasts.md) */
#define SP_ANOMALY_Z_THRESHOLD     3.5
#define SP_ANOMALY_MIN_ABS_NANO    1000000000LL      /* 1 USD */
#define SP_ANOMALY_MIN_RATIO       0.2               /* of the expected */

typedef struct {
    double   z_threshold;      /* |z| above it flags */
    int64_t  min_abs_nano;     /* and |actual - expected| at least this */
    double   min_ratio;        /* and at least this part of expected */
} sp_anomaly_rule_t;

typedef struct {
    int64_t  expected;         /* level + season, nano-USD (>= 0) */
    double   z;                /* robust z-score of the residual */
    int      flagged;          /* 1: an anomaly */
    int      direction;        /* 1 spike, -1 drop, 0 none */
} sp_anomaly_t;

/* the default rule above */
void sp_anomaly_rule_default(sp_anomaly_rule_t *rule);

/*
 * Scores every bucket of series[0..n) (season period, 1..
 * SP_FORECAST_SEASON_MAX) into out[0..n): the residual after removing a
 * seasonal profile (median per position in the season) and a level
 * (centred rolling median of 2 * period + 1 buckets, cut at the ends),
 * its robust z-score 0.6745 (r - median(r)) / MAD(r) (the mean absolute
 * deviation times 1.2533 stands in for a MAD of 0), flagged by rule.
 * Needs n >= 2 * period to flag anything. Returns 0, -1 when period is
 * out of range or memory ran out.
 */
int sp_anomaly_detect(const int64_t *series, size_t n, size_t period,
    const sp_anomaly_rule_t *rule, sp_anomaly_t *out);


#endif /* SP_FORECAST_H */
