/*
 * Forecasts (issue 15, docs/forecasts.md): spend series loaded from
 * audit_logs (api_forecast.c), shared by the /forecast routes and the
 * anomaly job (forecast_job.c). The maths is libspendpol's sp_forecast.
 * Needs controld.h first.
 */

#ifndef CD_FORECAST_H
#define CD_FORECAST_H


#include "sp_forecast.h"


#define CD_FORECAST_DAY_S           86400
#define CD_FORECAST_HOUR_S          3600
/* days of history a spend forecast reads */
#define CD_FORECAST_HISTORY_DAYS    365
#define CD_FORECAST_HORIZON_MAX     365      /* days */
/* groups answered (the biggest spenders; the total counts them all) */
#define CD_FORECAST_GROUPS_MAX      50
#define CD_FORECAST_BUDGETS_MAX     100
/* buckets before an anomaly window that give its level and season */
#define CD_ANOMALY_CONTEXT_DAYS     56
#define CD_ANOMALY_CONTEXT_HOURS    (7 * 24)
/* the widest anomaly window: a year of days, a month of hours */
#define CD_ANOMALY_WINDOW_DAYS      366
#define CD_ANOMALY_WINDOW_HOURS     (31 * 24)
/* the job looks at the last this many complete days */
#define CD_ANOMALY_JOB_DAYS         30

/* one group's buckets */
typedef struct {
    char       *name;           /* owned; NULL: rows without a value */
    int64_t    *values;         /* set->n buckets, nano-USD */
    int64_t     sum;
} cd_forecast_group_t;

/* spend per bucket [first, first + n), the total and per group */
typedef struct {
    int64_t               bucket_s;     /* CD_FORECAST_DAY_S or _HOUR_S */
    int64_t               first;        /* epoch / bucket_s of values[0] */
    size_t                n;
    int64_t              *total;
    cd_forecast_group_t  *groups;       /* by sum, descending */
    size_t                ngroups;
    size_t                omitted;      /* groups beyond groups_max */
} cd_forecast_set_t;

/*
 * "provider", "model", "api_key", "department", "project", "agent" -> the
 * audit_logs column (a constant, safe to splice into SQL), else NULL
 */
const char *cd_forecast_group_column(const char *group_by);

/*
 * Spend of the audit rows the transaction sees (row-level security) per
 * bucket in [first, end), grouped by group_by's column (NULL: the total
 * only), the groups_max biggest kept. CD_ERROR: a statement failed or
 * memory ran out; the set is then empty.
 */
int cd_forecast_load(cd_db_conn_t *c, const char *group_by, int64_t bucket_s,
    int64_t first, int64_t end, size_t groups_max, cd_forecast_set_t *set)
    CD_CHECK;

void cd_forecast_set_free(cd_forecast_set_t *set);

/*
 * The anomalies of set's total and groups in the buckets from `from` on,
 * appended to out as objects {scope, group_by, group, bucket_start, date,
 * actual_*, expected_*, difference_*, z, direction, dedupe_key}. The
 * season is a week of days or a day of hours. CD_ERROR: no memory.
 */
int cd_forecast_anomalies(const cd_forecast_set_t *set, const char *group_by,
    int64_t from, json_t *out) CD_CHECK;


/* ---- POST /forecast/what-if (api_forecast.c) -------------------------- */

#define CD_WHATIF_CHANGES_MAX   20

typedef struct {
    const char  *provider;          /* all point into the body */
    const char  *model;             /* the model matched: from_model */
    const char  *to_model;          /* NULL: re-priced in place */
    sp_price_t   price;             /* to_model's, or the given prices */
    int          priced;            /* price is set */
} cd_whatif_change_t;

typedef struct {
    int64_t              from_us;
    int64_t              to_us;
    const char          *group_by;  /* NULL: the total only */
    cd_whatif_change_t   changes[CD_WHATIF_CHANGES_MAX];
    size_t               nchanges;
} cd_whatif_t;

/*
 * Validates a what-if body (its keys already checked): from and to, the
 * changes (unknown members 400 unknown_field naming "changes[i].x"),
 * group_by. Prices given are read exactly (cd_price_json_money); the
 * price of a to_model is left to the caller (cd_pricing_resolve).
 */
int cd_whatif_parse(json_t *body, cd_whatif_t *w, cd_field_error_t *err)
    CD_CHECK;


/* ---- forecast_job.c --------------------------------------------------- */

/*
 * The anomaly job: every SPENDPOL_FORECAST_JOB_MS, for every
 * organisation, the daily anomalies of the last CD_ANOMALY_JOB_DAYS
 * complete days (total and per provider) become spend_anomaly alerts,
 * once per (organisation, group, day).
 */
typedef struct cd_forecast_job_s  cd_forecast_job_t;

int cd_forecast_job_start(cd_app_t *app, cd_forecast_job_t **out) CD_CHECK;
void cd_forecast_job_stop(cd_forecast_job_t *job);


#endif /* CD_FORECAST_H */
