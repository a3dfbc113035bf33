/*
 * /forecast (issue 15, docs/forecasts.md), computed here from the audit
 * rows, never by an outside service:
 *
 * - GET /forecast/spend: per day, the total and per group, from the
 *   history of complete days (up to CD_FORECAST_HISTORY_DAYS) with
 *   sp_forecast_fit() (Holt-Winters with a weekly season, a trend, or the
 *   mean by how much history there is), to the end of the month and to
 *   the horizon; and for each budget the day its expected spend crosses
 *   its limit within its period;
 * - GET /forecast/anomalies: the days or hours flagged by
 *   sp_anomaly_detect() (robust z-score on the seasonal residual);
 *   forecast_job.c raises the same as alerts;
 * - POST /forecast/what-if: a past window re-priced under other models or
 *   prices, with the proxy's price resolution (cd_pricing_resolve) and
 *   cost (sp_cost_nano), row by row as it billed them.
 *
 * Every statement runs as spendpol_app under the caller's organisation:
 * row-level security is the fence. Buckets are UTC days or hours.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controld.h"
#include "api.h"
#include "forecast.h"
#include "sp_price.h"


#define CD_FORECAST_SUBJECT     "forecast"
#define CD_FC_NANO_PER_USD      1000000000LL
/* the widest what-if window */
#define CD_WHATIF_WINDOW_US     (366LL * CD_FORECAST_DAY_S * 1000000)

#define CD_FORECAST_GROUPS_TEXT                                              \
    "provider, model, api_key, department, project, agent"


static const struct {
    const char  *name;
    const char  *column;
} cd_forecast_groups[] = {
    { "provider",   "provider" },
    { "model",      "model" },
    { "api_key",    "api_key_id" },
    { "department", "department" },
    { "project",    "project" },
    { "agent",      "agent_id" },
};


const char *
cd_forecast_group_column(const char *group_by)
{
    size_t  i;

    for (i = 0; i < sizeof(cd_forecast_groups) / sizeof(cd_forecast_groups[0]);
         i++)
    {
        if (strcmp(group_by, cd_forecast_groups[i].name) == 0) {
            return cd_forecast_groups[i].column;
        }
    }

    return NULL;
}


/* ---- small helpers ---------------------------------------------------- */

/* "PREFIX_nano": nano and "PREFIX_usd": its decimal text */
static int
cd_fc_money(json_t *obj, const char *prefix, int64_t nano)
{
    char  key[64], text[SP_MONEY_STR_LEN];

    sp_money_format(nano, text);

    snprintf(key, sizeof(key), "%s_nano", prefix);
    if (json_object_set_new(obj, key, json_integer((json_int_t) nano)) != 0) {
        return CD_ERROR;
    }

    snprintf(key, sizeof(key), "%s_usd", prefix);

    return cd_json_set_str(obj, key, text) ? CD_ERROR : CD_OK;
}


/* expected, and low/high of both intervals, as money members */
static int
cd_fc_band(json_t *obj, const char *expected, const sp_forecast_point_t *p)
{
    if (cd_fc_money(obj, expected, p->expected) != CD_OK
        || cd_fc_money(obj, "low", p->low80) != CD_OK
        || cd_fc_money(obj, "high", p->high80) != CD_OK
        || cd_fc_money(obj, "low_95", p->low95) != CD_OK
        || cd_fc_money(obj, "high_95", p->high95) != CD_OK)
    {
        return CD_ERROR;
    }

    return CD_OK;
}


/* bucket number b of bucket_s seconds as "YYYY-MM-DD" (date) and RFC 3339 */
static void
cd_fc_bucket_text(int64_t b, int64_t bucket_s, char *date, char *at)
{
    time_t     t;
    struct tm  tm;

    t = (time_t) (b * bucket_s);
    gmtime_r(&t, &tm);

    if (date != NULL) {
        strftime(date, 16, "%Y-%m-%d", &tm);
    }

    if (at != NULL) {
        strftime(at, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
}


static json_t *
cd_fc_real2(double v)
{
    return json_real(round(v * 100.0) / 100.0);
}


/* ---- loading series --------------------------------------------------- */

void
cd_forecast_set_free(cd_forecast_set_t *set)
{
    size_t  i;

    for (i = 0; i < set->ngroups; i++) {
        free(set->groups[i].name);
        free(set->groups[i].values);
    }

    free(set->groups);
    free(set->total);
    memset(set, 0, sizeof(cd_forecast_set_t));
}


static int
cd_fc_group_cmp(const void *a, const void *b)
{
    const cd_forecast_group_t  *x, *y;

    x = a;
    y = b;

    if (x->sum != y->sum) {
        return x->sum > y->sum ? -1 : 1;
    }

    /* the rows without a value last, then by name: a stable answer */
    if (x->name == NULL || y->name == NULL) {
        return (x->name == NULL) - (y->name == NULL);
    }

    return strcmp(x->name, y->name);
}


static cd_forecast_group_t *
cd_fc_group_add(cd_forecast_set_t *set, const char *name)
{
    cd_forecast_group_t  *groups, *g;

    groups = realloc(set->groups,
                     (set->ngroups + 1) * sizeof(cd_forecast_group_t));
    if (groups == NULL) {
        return NULL;
    }

    set->groups = groups;
    g = &groups[set->ngroups];
    memset(g, 0, sizeof(cd_forecast_group_t));

    g->values = calloc(set->n ? set->n : 1, sizeof(int64_t));
    if (g->values == NULL) {
        return NULL;
    }

    if (name != NULL) {
        g->name = strdup(name);
        if (g->name == NULL) {
            free(g->values);
            return NULL;
        }
    }

    set->ngroups++;

    return g;
}


int
cd_forecast_load(cd_db_conn_t *c, const char *group_by, int64_t bucket_s,
    int64_t first, int64_t end, size_t groups_max, cd_forecast_set_t *set)
{
    int                   i, rows;
    char                  sql[640], p_bucket[CD_INT_TEXT], p_first[CD_INT_TEXT];
    char                  p_end[CD_INT_TEXT];
    int64_t               b, v;
    PGresult             *res;
    const char           *column, *name, *params[3];
    cd_forecast_group_t  *g;

    memset(set, 0, sizeof(cd_forecast_set_t));
    set->bucket_s = bucket_s;
    set->first = first;
    set->n = end > first ? (size_t) (end - first) : 0;

    set->total = calloc(set->n ? set->n : 1, sizeof(int64_t));
    if (set->total == NULL) {
        return CD_ERROR;
    }

    column = group_by != NULL ? cd_forecast_group_column(group_by) : NULL;

    /* column is one of cd_forecast_groups' constants */
    snprintf(sql, sizeof(sql),
             "SELECT %s, floor(extract(epoch FROM created_at)"
             " / $1::bigint)::bigint, sum(cost_nano)::text FROM audit_logs"
             " WHERE created_at >= 'epoch'::timestamptz"
             " + $1::bigint * $2::bigint * interval '1 second'"
             " AND created_at < 'epoch'::timestamptz"
             " + $1::bigint * $3::bigint * interval '1 second'"
             " GROUP BY 1, 2 ORDER BY 1, 2",
             column != NULL ? column : "NULL::text");

    snprintf(p_bucket, sizeof(p_bucket), "%lld", (long long) bucket_s);
    snprintf(p_first, sizeof(p_first), "%lld", (long long) first);
    snprintf(p_end, sizeof(p_end), "%lld", (long long) end);
    params[0] = p_bucket;
    params[1] = p_first;
    params[2] = p_end;

    res = cd_db_exec(c, sql, 3, params);
    if (res == NULL) {
        cd_forecast_set_free(set);
        return CD_ERROR;
    }

    rows = PQntuples(res);
    g = NULL;

    for (i = 0; i < rows; i++) {
        b = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        v = strtoll(PQgetvalue(res, i, 2), NULL, 10);

        if (b < first || b >= end) {
            continue;
        }

        set->total[b - first] += v;

        if (column == NULL) {
            continue;
        }

        name = cd_db_value(res, i, 0);

        /* the rows come ordered by group: a new group starts a new entry */
        if (g == NULL || (name == NULL) != (g->name == NULL)
            || (name != NULL && strcmp(name, g->name) != 0))
        {
            g = cd_fc_group_add(set, name);
            if (g == NULL) {
                PQclear(res);
                cd_forecast_set_free(set);
                return CD_ERROR;
            }
        }

        g->values[b - first] += v;
        g->sum += v;
    }

    PQclear(res);

    if (set->ngroups > 1) {
        qsort(set->groups, set->ngroups, sizeof(cd_forecast_group_t),
              cd_fc_group_cmp);
    }

    while (set->ngroups > groups_max) {
        set->ngroups--;
        set->omitted++;
        free(set->groups[set->ngroups].name);
        free(set->groups[set->ngroups].values);
    }

    return CD_OK;
}


/* ---- anomalies -------------------------------------------------------- */

static int
cd_fc_anomalies_of(const cd_forecast_set_t *set, const int64_t *values,
    const char *group_by, const cd_forecast_group_t *g, int64_t from,
    json_t *out)
{
    int                rc;
    char               date[16], at[32], key[CD_ALERT_KEY_MAX];
    size_t             start, n, t, period;
    int64_t            b, diff;
    json_t            *item;
    const char        *interval;
    sp_anomaly_t      *a;
    sp_anomaly_rule_t  rule;

    /* a series starts with its first spend: no spike at a group's birth */
    for (start = 0; start < set->n && values[start] == 0; start++) {
        /* void */
    }

    if (start == set->n) {
        return CD_OK;
    }

    n = set->n - start;
    period = set->bucket_s == CD_FORECAST_DAY_S ? 7 : 24;
    interval = set->bucket_s == CD_FORECAST_DAY_S ? "day" : "hour";

    a = malloc(n * sizeof(sp_anomaly_t));
    if (a == NULL) {
        return CD_ERROR;
    }

    sp_anomaly_rule_default(&rule);

    if (sp_anomaly_detect(values + start, n, period, &rule, a) != 0) {
        free(a);
        return CD_ERROR;
    }

    rc = CD_OK;

    for (t = 0; t < n && rc == CD_OK; t++) {
        b = set->first + (int64_t) (start + t);

        if (b < from || !a[t].flagged) {
            continue;
        }

        cd_fc_bucket_text(b, set->bucket_s, date, at);
        diff = values[start + t] - a[t].expected;

        /* the group's name last: a ':' in it cannot shift the key's parts */
        if (g == NULL) {
            snprintf(key, sizeof(key), "spend_anomaly:%s:total:%s",
                     interval, at);
        } else {
            snprintf(key, sizeof(key), "spend_anomaly:%s:%s:%s:%.256s",
                     interval, group_by, at, g->name ? g->name : "");
        }

        item = json_object();

        if (item == NULL || json_array_append_new(out, item) != 0
            || cd_json_set_str(item, "scope", g == NULL ? "total" : "group")
            || cd_json_set_str(item, "group_by", g == NULL ? NULL : group_by)
            || cd_json_set_str(item, "group", g == NULL ? NULL : g->name)
            || cd_json_set_str(item, "interval", interval)
            || cd_json_set_str(item, "bucket_start", at)
            || cd_json_set_str(item, "date", date)
            || cd_fc_money(item, "actual", values[start + t]) != CD_OK
            || cd_fc_money(item, "expected", a[t].expected) != CD_OK
            || cd_fc_money(item, "difference", diff) != CD_OK
            || json_object_set_new(item, "z", cd_fc_real2(a[t].z))
            || cd_json_set_str(item, "direction",
                               a[t].direction > 0 ? "spike" : "drop")
            || cd_json_set_str(item, "dedupe_key", key))
        {
            rc = CD_ERROR;
        }
    }

    free(a);

    return rc;
}


int
cd_forecast_anomalies(const cd_forecast_set_t *set, const char *group_by,
    int64_t from, json_t *out)
{
    size_t  i;

    if (cd_fc_anomalies_of(set, set->total, group_by, NULL, from, out)
        != CD_OK)
    {
        return CD_ERROR;
    }

    for (i = 0; i < set->ngroups; i++) {
        if (cd_fc_anomalies_of(set, set->groups[i].values, group_by,
                               &set->groups[i], from, out) != CD_OK)
        {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


/* ---- query arguments -------------------------------------------------- */

static int
cd_fc_group_by(cd_request_t *r, const char **group_by)
{
    *group_by = cd_query(r, "group_by");

    if (*group_by != NULL && cd_forecast_group_column(*group_by) == NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "group_by", "group_by must be one of "
                         CD_FORECAST_GROUPS_TEXT);
        return CD_ERROR;
    }

    return CD_OK;
}


/* "30d": 1 .. CD_FORECAST_HORIZON_MAX days */
static int
cd_fc_horizon(cd_request_t *r, size_t *days)
{
    char        *end;
    long         n;
    const char  *value;

    value = cd_query(r, "horizon");

    if (value == NULL) {
        *days = 30;
        return CD_OK;
    }

    n = -1;

    if (value[0] >= '0' && value[0] <= '9' && strlen(value) <= 4) {
        n = strtol(value, &end, 10);

        if (strcmp(end, "d") != 0) {
            n = -1;
        }
    }

    if (n < 1 || n > CD_FORECAST_HORIZON_MAX) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "horizon", "horizon must be a number of days from "
                         "1d to " CD_STRINGIFY(CD_FORECAST_HORIZON_MAX) "d, "
                         "e.g. \"30d\"");
        return CD_ERROR;
    }

    *days = (size_t) n;

    return CD_OK;
}


/* ---- GET /forecast/spend ---------------------------------------------- */

/* the days a spend forecast answers, all day numbers (epoch / 86400) */
typedef struct {
    int64_t  today;
    int64_t  month_first;       /* the 1st of today's month */
    size_t   month_days;        /* today .. the month's last day */
    size_t   horizon;           /* days from today */
    size_t   npoints;           /* the longer of the two */
    int64_t  history_first;     /* today - CD_FORECAST_HISTORY_DAYS */
} cd_fc_span_t;

/* one series' forecast from today on */
typedef struct {
    sp_forecast_model_t   model;
    size_t                history_days;
    int64_t               today_actual;
    int64_t               today_rest;   /* expected today less today_actual */
    int64_t               month_spent;  /* this month's complete days+today */
    sp_forecast_point_t  *points;       /* span->npoints, today first */
} cd_fc_forecast_t;


static void
cd_fc_span_init(cd_fc_span_t *sp, size_t horizon)
{
    time_t     now, t;
    struct tm  tm;

    now = time(NULL);
    sp->today = (int64_t) now / CD_FORECAST_DAY_S;
    sp->history_first = sp->today - CD_FORECAST_HISTORY_DAYS;

    gmtime_r(&now, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    t = timegm(&tm);
    sp->month_first = (int64_t) t / CD_FORECAST_DAY_S;

    tm.tm_mon++;
    t = timegm(&tm);                    /* normalises December + 1 */
    sp->month_days = (size_t) ((int64_t) t / CD_FORECAST_DAY_S - sp->today);

    sp->horizon = horizon;
    sp->npoints = horizon > sp->month_days ? horizon : sp->month_days;
}


/*
 * values[0 .. today - history_first] are the series' days, today last
 * (partial): the history is the complete days from the first spend on.
 */
static int
cd_fc_forecast(const cd_fc_span_t *sp, const int64_t *values,
    cd_fc_forecast_t *f)
{
    size_t   nh, start, k;
    int64_t  day;

    memset(f, 0, sizeof(cd_fc_forecast_t));

    nh = (size_t) (sp->today - sp->history_first);

    for (start = 0; start < nh && values[start] == 0; start++) {
        /* void */
    }

    f->history_days = nh - start;
    f->today_actual = values[nh];

    if (sp_forecast_fit(values + start, nh - start, 7, &f->model) != 0) {
        return CD_ERROR;
    }

    f->points = malloc(sp->npoints * sizeof(sp_forecast_point_t));
    if (f->points == NULL) {
        return CD_ERROR;
    }

    for (k = 0; k < sp->npoints; k++) {
        sp_forecast_at(&f->model, k + 1, &f->points[k]);
    }

    f->today_rest = f->points[0].expected > f->today_actual
                    ? f->points[0].expected - f->today_actual : 0;

    f->month_spent = f->today_actual;

    for (day = sp->month_first; day < sp->today; day++) {
        if (day >= sp->history_first) {
            f->month_spent += values[day - sp->history_first];
        }
    }

    return CD_OK;
}


/*
 * Expected spend from now to the end of day `days - 1` after today: what
 * is left of today's expected, then whole days; its interval as a sum of
 * `days` buckets (sp_forecast_sum_interval). Plus base on every member.
 */
static void
cd_fc_sum(const cd_fc_forecast_t *f, size_t days, int64_t base,
    sp_forecast_point_t *sum)
{
    size_t   k;
    int64_t  expected;

    expected = f->today_rest;

    for (k = 1; k < days; k++) {
        expected += f->points[k].expected;
    }

    sp_forecast_sum_interval(&f->model, days, expected, sum);

    sum->expected += base;
    sum->low80 += base;
    sum->high80 += base;
    sum->low95 += base;
    sum->high95 += base;
}


static json_t *
cd_fc_forecast_json(const cd_fc_span_t *sp, const cd_fc_forecast_t *f)
{
    char                 date[16];
    size_t               k;
    json_t              *obj, *points, *p, *params, *month, *horizon;
    sp_forecast_point_t  sum;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    /* each is the object's once set: json_object_set_new steals it */
    points = json_array();
    month = json_object();
    horizon = json_object();

    if (json_object_set_new(obj, "points", points)
        || json_object_set_new(obj, "to_month_end", month)
        || json_object_set_new(obj, "to_horizon", horizon))
    {
        goto failed;
    }

    if (json_object_set_new(obj, "method", json_string(
            sp_forecast_method_name(f->model.method)))
        || json_object_set_new(obj, "history_days",
                               json_integer((json_int_t) f->history_days))
        || cd_fc_money(obj, "sigma", sp_forecast_nano(f->model.sigma))
        || cd_fc_money(obj, "today_actual", f->today_actual))
    {
        goto failed;
    }

    if (f->model.method == SP_FORECAST_HOLT_WINTERS) {
        params = json_pack("{s:f, s:f, s:f}", "alpha", f->model.alpha,
                           "beta", f->model.beta, "gamma", f->model.gamma);

        if (params == NULL
            || json_object_set_new(obj, "parameters", params) != 0)
        {
            goto failed;
        }
    }

    for (k = 0; k < sp->npoints; k++) {
        cd_fc_bucket_text(sp->today + (int64_t) k, CD_FORECAST_DAY_S, date,
                          NULL);
        p = json_object();

        if (p == NULL || json_array_append_new(points, p) != 0
            || cd_json_set_str(p, "date", date)
            || cd_fc_band(p, "expected", &f->points[k]) != CD_OK)
        {
            goto failed;
        }
    }

    cd_fc_bucket_text(sp->today + (int64_t) sp->month_days - 1,
                      CD_FORECAST_DAY_S, date, NULL);
    cd_fc_sum(f, sp->month_days, f->month_spent, &sum);

    if (cd_json_set_str(month, "end_date", date)
        || cd_fc_money(month, "spent", f->month_spent) != CD_OK
        || cd_fc_money(month, "expected_rest",
                       sum.expected - f->month_spent) != CD_OK
        || cd_fc_band(month, "expected_total", &sum) != CD_OK)
    {
        goto failed;
    }

    cd_fc_bucket_text(sp->today + (int64_t) sp->horizon - 1,
                      CD_FORECAST_DAY_S, date, NULL);
    cd_fc_sum(f, sp->horizon, 0, &sum);

    if (json_object_set_new(horizon, "days",
                            json_integer((json_int_t) sp->horizon))
        || cd_json_set_str(horizon, "end_date", date)
        || cd_fc_band(horizon, "expected", &sum) != CD_OK)
    {
        goto failed;
    }

    return obj;

failed:

    json_decref(obj);

    return NULL;
}


/* the series of one budget's covered rows, per day */
#define CD_FC_BUDGETS                                                        \
    "WITH b AS (SELECT id, name, period, limit_nano, scope_type,"            \
    " scope_value, provider, model, created_at,"                             \
    " spendpol_period_start(period, timezone, created_at, now()) AS ps,"     \
    " spendpol_period_end(period, timezone, now()) AS pe FROM budgets"       \
    " ORDER BY created_at, id LIMIT " CD_STRINGIFY(CD_FORECAST_BUDGETS_MAX)  \
    ")"

static const char  cd_fc_budgets_sql[] =
    CD_FC_BUDGETS
    " SELECT b.id, b.name, b.period, b.limit_nano,"
    " coalesce(s.spent_nano, 0), " CD_SQL_TS("b.ps") ", "
    CD_SQL_TS("b.pe") ", coalesce(ceil(extract(epoch FROM b.pe)"
    " / 86400)::bigint, 0)"
    " FROM b LEFT JOIN budget_spend s"
    " ON s.budget_id = b.id AND s.period_start = b.ps"
    " ORDER BY b.created_at, b.id";

enum {
    CD_FCB_ID = 0, CD_FCB_NAME, CD_FCB_PERIOD, CD_FCB_LIMIT, CD_FCB_SPENT,
    CD_FCB_START, CD_FCB_END, CD_FCB_END_DAY
};

/* the rows each budget covers: sp_budget_covers' rule, in SQL */
static const char  cd_fc_budget_series_sql[] =
    CD_FC_BUDGETS
    " SELECT b.id, floor(extract(epoch FROM a.created_at) / 86400)::bigint,"
    " sum(a.cost_nano)::text FROM b JOIN audit_logs a ON"
    " (b.scope_type = 'organization'"
    " OR (b.scope_type = 'api_key' AND a.api_key_id = b.scope_value)"
    " OR (b.scope_type = 'agent' AND a.agent_id = b.scope_value)"
    " OR (b.scope_type = 'department' AND a.department = b.scope_value)"
    " OR (b.scope_type = 'project' AND a.project = b.scope_value))"
    " AND (b.provider IS NULL OR a.provider = b.provider)"
    " AND spendpol_model_covers(b.model, a.model)"
    " WHERE a.created_at >= 'epoch'::timestamptz"
    " + $1::bigint * interval '1 day'"
    " AND a.created_at < 'epoch'::timestamptz"
    " + $2::bigint * interval '1 day'"
    " GROUP BY 1, 2";


static json_t *
cd_fc_budget_json(const cd_fc_span_t *sp, PGresult *res, int row,
    const int64_t *values)
{
    char               date[16];
    size_t             k, last;
    int64_t            limit, spent, cum, end_day;
    json_t            *obj, *runs_out;
    cd_fc_forecast_t   f;

    if (cd_fc_forecast(sp, values, &f) != CD_OK) {
        return NULL;
    }

    limit = strtoll(PQgetvalue(res, row, CD_FCB_LIMIT), NULL, 10);
    spent = strtoll(PQgetvalue(res, row, CD_FCB_SPENT), NULL, 10);
    end_day = strtoll(PQgetvalue(res, row, CD_FCB_END_DAY), NULL, 10);

    /*
     * The days of the period left, today first: to the period's end, or
     * for a total budget (no end) to the horizon. Days are UTC; a
     * period ending mid-day (its time zone) keeps that day.
     */
    if (end_day == 0) {
        last = sp->horizon;
    } else if (end_day > sp->today) {
        last = (size_t) (end_day - sp->today);
        last = last < sp->npoints ? last : sp->npoints;
    } else {
        last = 1;
    }

    runs_out = json_null();
    cum = spent;

    for (k = 0; k < last; k++) {
        cum += k == 0 ? f.today_rest : f.points[k].expected;

        if (cum >= limit && json_is_null(runs_out)) {
            cd_fc_bucket_text(sp->today + (int64_t) k, CD_FORECAST_DAY_S,
                              date, NULL);
            runs_out = json_string(date);
        }
    }

    cd_fc_bucket_text(sp->today + (int64_t) last - 1, CD_FORECAST_DAY_S,
                      date, NULL);

    obj = json_object();

    if (obj == NULL || json_object_set_new(obj, "runs_out_at", runs_out)
        || cd_json_set_column(obj, "id", res, row, CD_FCB_ID)
        || cd_json_set_column(obj, "name", res, row, CD_FCB_NAME)
        || cd_json_set_column(obj, "period", res, row, CD_FCB_PERIOD)
        || cd_json_set_column(obj, "period_start", res, row, CD_FCB_START)
        || cd_json_set_column(obj, "period_end", res, row, CD_FCB_END)
        || cd_fc_money(obj, "limit", limit) != CD_OK
        || cd_fc_money(obj, "spent", spent) != CD_OK
        || json_object_set_new(obj, "method", json_string(
               sp_forecast_method_name(f.model.method)))
        || json_object_set_new(obj, "history_days",
                               json_integer((json_int_t) f.history_days))
        || cd_fc_money(obj, "expected_spend", cum) != CD_OK
        || cd_json_set_str(obj, "expected_until", date)
        || json_object_set_new(obj, "exhausted", json_boolean(spent >= limit)))
    {
        if (obj == NULL) {
            json_decref(runs_out);
        }

        json_decref(obj);
        free(f.points);
        return NULL;
    }

    free(f.points);

    return obj;
}


/* CD_ERROR: a statement failed; CD_FC_NO_MEMORY: memory ran out */
#define CD_FC_NO_MEMORY  -2

static int
cd_fc_budgets(const cd_fc_span_t *sp, cd_db_conn_t *c, json_t *out)
{
    int          i, j, n, rc;
    char         p_first[CD_INT_TEXT], p_end[CD_INT_TEXT];
    size_t       days;
    int64_t      b, *values;
    json_t      *item;
    PGresult    *res, *series;
    const char  *params[2];

    res = cd_db_exec(c, cd_fc_budgets_sql, 0, NULL);
    if (res == NULL) {
        return CD_ERROR;
    }

    n = PQntuples(res);

    if (n == 0) {
        PQclear(res);
        return CD_OK;
    }

    snprintf(p_first, sizeof(p_first), "%lld", (long long) sp->history_first);
    snprintf(p_end, sizeof(p_end), "%lld", (long long) sp->today + 1);
    params[0] = p_first;
    params[1] = p_end;

    series = cd_db_exec(c, cd_fc_budget_series_sql, 2, params);
    days = (size_t) (sp->today + 1 - sp->history_first);
    values = calloc((size_t) n * days, sizeof(int64_t));

    if (series == NULL || values == NULL) {
        rc = series == NULL ? CD_ERROR : CD_FC_NO_MEMORY;
        PQclear(series);
        PQclear(res);
        free(values);
        return rc;
    }

    for (i = 0; i < PQntuples(series); i++) {
        b = strtoll(PQgetvalue(series, i, 1), NULL, 10);

        if (b < sp->history_first || b > sp->today) {
            continue;
        }

        /* at most CD_FORECAST_BUDGETS_MAX budgets: a scan is enough */
        for (j = 0; j < n; j++) {
            if (strcmp(PQgetvalue(series, i, 0), PQgetvalue(res, j, 0)) == 0)
            {
                values[(size_t) j * days + (size_t) (b - sp->history_first)]
                    += strtoll(PQgetvalue(series, i, 2), NULL, 10);
                break;
            }
        }
    }

    rc = CD_OK;

    for (j = 0; j < n && rc == CD_OK; j++) {
        item = cd_fc_budget_json(sp, res, j, values + (size_t) j * days);

        if (item == NULL || json_array_append_new(out, item) != 0) {
            rc = CD_FC_NO_MEMORY;
        }
    }

    free(values);
    PQclear(series);
    PQclear(res);

    return rc;
}


static json_t *
cd_fc_series_json(const cd_fc_span_t *sp, const int64_t *values)
{
    json_t            *obj;
    cd_fc_forecast_t   f;

    if (cd_fc_forecast(sp, values, &f) != CD_OK) {
        free(f.points);
        return NULL;
    }

    obj = cd_fc_forecast_json(sp, &f);
    free(f.points);

    return obj;
}


void
cd_api_forecast_spend(cd_request_t *r)
{
    int                 rc;
    char                date[16];
    size_t              horizon, i;
    json_t             *obj, *groups, *budgets, *item;
    const char         *group_by, *interval;
    cd_db_conn_t       *c;
    cd_fc_span_t        sp;
    cd_forecast_set_t   set;

    if (cd_fc_horizon(r, &horizon) != CD_OK
        || cd_fc_group_by(r, &group_by) != CD_OK)
    {
        return;
    }

    interval = cd_query(r, "interval");

    if (interval != NULL && strcmp(interval, "day") != 0) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "interval", "interval must be \"day\": spend is "
                         "forecast per UTC day");
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    cd_fc_span_init(&sp, horizon);
    obj = NULL;

    if (cd_forecast_load(c, group_by, CD_FORECAST_DAY_S, sp.history_first,
                         sp.today + 1, CD_FORECAST_GROUPS_MAX, &set)
        != CD_OK)
    {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    cd_fc_bucket_text(sp.today, CD_FORECAST_DAY_S, date, NULL);

    obj = json_object();
    if (obj == NULL) {
        goto oom;
    }

    /* the object's from here on: json_object_set_new steals, set or not */
    groups = json_array();
    budgets = json_array();

    if (json_object_set_new(obj, "groups", groups)
        || json_object_set_new(obj, "budgets", budgets)
        || json_object_set_new(obj, "interval", json_string("day"))
        || cd_json_set_str(obj, "group_by", group_by)
        || cd_json_set_str(obj, "today", date)
        || json_object_set_new(obj, "horizon_days",
                               json_integer((json_int_t) horizon)))
    {
        goto oom;
    }

    item = cd_fc_series_json(&sp, set.total);

    if (item == NULL || json_object_set_new(obj, "total", item) != 0) {
        goto oom;
    }

    for (i = 0; i < set.ngroups; i++) {
        item = cd_fc_series_json(&sp, set.groups[i].values);

        if (item == NULL || json_array_append_new(groups, item) != 0
            || cd_json_set_str(item, "group", set.groups[i].name))
        {
            goto oom;
        }
    }

    if (json_object_set_new(obj, "groups_omitted",
                            json_integer((json_int_t) set.omitted)))
    {
        goto oom;
    }

    rc = cd_fc_budgets(&sp, c, budgets);

    if (rc == CD_FC_NO_MEMORY) {
        goto oom;
    }

    if (rc != CD_OK) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    cd_respond(r, 200, obj);
    obj = NULL;
    goto done;

oom:

    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

done:

    json_decref(obj);
    cd_forecast_set_free(&set);
    cd_request_end(r, c);
}


/* ---- GET /forecast/anomalies ------------------------------------------ */

void
cd_api_forecast_anomalies(cd_request_t *r)
{
    int                 given_from, given_to;
    char                at[32], min_change[SP_MONEY_STR_LEN];
    json_t             *obj, *data, *rule;
    int64_t             bucket_s, from_us, to_us, from, end, now, context;
    int64_t             window;
    const char         *group_by, *interval;
    cd_db_conn_t       *c;
    cd_forecast_set_t   set;

    interval = cd_query(r, "interval");

    if (interval == NULL || strcmp(interval, "day") == 0) {
        interval = "day";
        bucket_s = CD_FORECAST_DAY_S;
        context = CD_ANOMALY_CONTEXT_DAYS;
        window = CD_ANOMALY_WINDOW_DAYS;

    } else if (strcmp(interval, "hour") == 0) {
        bucket_s = CD_FORECAST_HOUR_S;
        context = CD_ANOMALY_CONTEXT_HOURS;
        window = CD_ANOMALY_WINDOW_HOURS;

    } else {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "interval", "interval must be \"day\" or \"hour\"");
        return;
    }

    if (cd_fc_group_by(r, &group_by) != CD_OK
        || cd_query_time(r, "from", &from_us, &given_from) != CD_OK
        || cd_query_time(r, "to", &to_us, &given_to) != CD_OK)
    {
        return;
    }

    /*
     * Whole buckets only, and never the current one: a day still under
     * way would look like a drop. from rounds down, to up.
     */
    now = (int64_t) time(NULL) / bucket_s;
    end = given_to ? (to_us / 1000000 + bucket_s - 1) / bucket_s : now;
    end = end < now ? end : now;

    from = given_from ? from_us / 1000000 / bucket_s
                      : end - (bucket_s == CD_FORECAST_DAY_S ? 30 : 48);

    if (given_from && given_to && from_us >= to_us) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_range",
                         "from", "from must be before to");
        return;
    }

    if (end - from > window) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "from", "the window from .. to must be at most %lld "
                         "%ss", (long long) window, interval);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    obj = NULL;
    memset(&set, 0, sizeof(set));

    if (cd_forecast_load(c, group_by, bucket_s, from - context,
                         end > from ? end : from, CD_FORECAST_GROUPS_MAX,
                         &set) != CD_OK)
    {
        cd_respond_statement_error(r, c);
        goto done;
    }

    obj = json_object();
    if (obj == NULL) {
        goto oom;
    }

    sp_money_format(SP_ANOMALY_MIN_ABS_NANO, min_change);
    data = json_array();
    rule = json_pack("{s:f, s:s, s:f}", "z_threshold", SP_ANOMALY_Z_THRESHOLD,
                     "min_change_usd", min_change,
                     "min_change_ratio", SP_ANOMALY_MIN_RATIO);

    /* json_object_set_new steals its value, set or not */
    if (json_object_set_new(obj, "data", data)
        || json_object_set_new(obj, "rule", rule))
    {
        goto oom;
    }

    cd_fc_bucket_text(from, bucket_s, NULL, at);

    if (json_object_set_new(obj, "interval", json_string(interval))
        || cd_json_set_str(obj, "group_by", group_by)
        || cd_json_set_str(obj, "from", at)
        || json_object_set_new(obj, "groups_omitted",
                               json_integer((json_int_t) set.omitted)))
    {
        goto oom;
    }

    cd_fc_bucket_text(end, bucket_s, NULL, at);

    if (cd_json_set_str(obj, "to", at)
        || cd_forecast_anomalies(&set, group_by, from, data) != CD_OK)
    {
        goto oom;
    }

    cd_respond(r, 200, obj);
    obj = NULL;
    goto done;

oom:

    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

done:

    json_decref(obj);
    cd_forecast_set_free(&set);
    cd_request_end(r, c);
}


/* ---- POST /forecast/what-if ------------------------------------------- */

static const char  *cd_whatif_fields[] = {
    "from", "to", "changes", "group_by", NULL
};

static const char  *cd_whatif_change_fields[] = {
    "provider", "from_model", "to_model", "model", "prices", NULL
};

/* PUT /pricing's names, in sp_price_t's order */
static const char  *cd_whatif_price_fields[] = {
    "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
    "cache_write_usd_per_mtok", NULL
};


static int
cd_whatif_time(json_t *body, const char *field, int64_t *us,
    cd_field_error_t *err)
{
    json_t  *value;

    value = json_object_get(body, field);

    if (value == NULL || json_is_null(value)) {
        return cd_field_error(err, 422, "missing_field", field,
                              "%s is required: an RFC 3339 date-time, e.g. "
                              "\"2026-12-01T00:00:00Z\"", field);
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be a string: an RFC 3339 date-time",
                              field);
    }

    if (cd_rfc3339_parse(json_string_value(value), us) != CD_OK) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must be an RFC 3339 date-time, e.g. "
                              "\"2026-12-01T00:00:00Z\"", field);
    }

    return CD_OK;
}


/* changes[i].member as a string into *out; required or absent-is-NULL */
static int
cd_whatif_string(json_t *change, size_t i, const char *member, int required,
    const char **out, cd_field_error_t *err)
{
    json_t      *value;
    const char  *problem;

    *out = NULL;
    value = json_object_get(change, member);
    snprintf(err->field_buf, sizeof(err->field_buf), "changes[%zu].%s", i,
             member);

    if (value == NULL || json_is_null(value)) {
        if (!required) {
            return CD_OK;
        }

        return cd_field_error(err, 422, "missing_field", err->field_buf,
                              "%s is required", err->field_buf);
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", err->field_buf,
                              "%s must be a string", err->field_buf);
    }

    *out = json_string_value(value);

    if (strcmp(member, "provider") == 0) {
        if (sp_provider_find(*out, strlen(*out)) == NULL) {
            return cd_field_error(err, 422, "invalid_value", err->field_buf,
                                  "%s: unknown provider: expected one of "
                                  SP_PROVIDER_NAMES_TEXT, err->field_buf);
        }

        return CD_OK;
    }

    problem = cd_price_model_problem(*out);

    if (problem != NULL || strlen(*out) != json_string_length(value)) {
        return cd_field_error(err, 422, "invalid_value", err->field_buf,
                              "%s: %s", err->field_buf,
                              problem ? problem : "a model name");
    }

    return CD_OK;
}


static int
cd_whatif_prices(json_t *prices, size_t i, sp_price_t *price,
    cd_field_error_t *err)
{
    size_t       k;
    int64_t      nano[4];
    json_t      *value;
    const char  *key;

    snprintf(err->field_buf, sizeof(err->field_buf), "changes[%zu].prices", i);

    if (!json_is_object(prices)) {
        return cd_field_error(err, 400, "invalid_type", err->field_buf,
                              "%s must be an object of USD per 1M tokens "
                              "(input_usd_per_mtok, output_usd_per_mtok, "
                              "...)", err->field_buf);
    }

    json_object_foreach(prices, key, value) {
        for (k = 0; cd_whatif_price_fields[k] != NULL; k++) {
            if (strcmp(key, cd_whatif_price_fields[k]) == 0) {
                break;
            }
        }

        if (cd_whatif_price_fields[k] == NULL) {
            snprintf(err->field_buf, sizeof(err->field_buf),
                     "changes[%zu].prices.%.24s", i, key);
            return cd_field_error(err, 400, "unknown_field", err->field_buf,
                                  "unknown member %s", err->field_buf);
        }
    }

    for (k = 0; k < 4; k++) {
        value = json_object_get(prices, cd_whatif_price_fields[k]);
        snprintf(err->field_buf, sizeof(err->field_buf),
                 "changes[%zu].prices.%s", i, cd_whatif_price_fields[k]);

        if (value == NULL || json_is_null(value)) {
            if (k < 2) {
                return cd_field_error(err, 422, "missing_field",
                                      err->field_buf, "%s is required",
                                      err->field_buf);
            }

            /* unset cached prices bill as input, as the snapshot does */
            nano[k] = nano[0];
            continue;
        }

        if (cd_price_json_money(value, err->field_buf, &nano[k], err)
            != CD_OK)
        {
            return CD_ERROR;
        }
    }

    price->input = nano[0];
    price->output = nano[1];
    price->cached_input = nano[2];
    price->cache_write = nano[3];

    return CD_OK;
}


int
cd_whatif_parse(json_t *body, cd_whatif_t *w, cd_field_error_t *err)
{
    size_t               i;
    json_t              *changes, *change, *value;
    const char          *key, **f;
    cd_whatif_change_t  *ch;

    memset(w, 0, sizeof(cd_whatif_t));

    if (cd_whatif_time(body, "from", &w->from_us, err) != CD_OK
        || cd_whatif_time(body, "to", &w->to_us, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (w->from_us >= w->to_us) {
        return cd_field_error(err, 422, "invalid_range", "from",
                              "from must be before to");
    }

    if (w->to_us - w->from_us > CD_WHATIF_WINDOW_US) {
        return cd_field_error(err, 422, "invalid_value", "to",
                              "the window from .. to must be at most 366 "
                              "days");
    }

    value = json_object_get(body, "group_by");

    if (value != NULL && !json_is_null(value)) {
        if (!json_is_string(value)) {
            return cd_field_error(err, 400, "invalid_type", "group_by",
                                  "group_by must be a string: one of "
                                  CD_FORECAST_GROUPS_TEXT);
        }

        w->group_by = json_string_value(value);

        if (cd_forecast_group_column(w->group_by) == NULL) {
            return cd_field_error(err, 422, "invalid_value", "group_by",
                                  "group_by must be one of "
                                  CD_FORECAST_GROUPS_TEXT);
        }
    }

    changes = json_object_get(body, "changes");

    if (changes == NULL || json_is_null(changes)) {
        return cd_field_error(err, 422, "missing_field", "changes",
                              "changes is required: a list of "
                              "{provider, from_model, to_model} or "
                              "{provider, model, prices}");
    }

    if (!json_is_array(changes)) {
        return cd_field_error(err, 400, "invalid_type", "changes",
                              "changes must be an array");
    }

    if (json_array_size(changes) == 0
        || json_array_size(changes) > CD_WHATIF_CHANGES_MAX)
    {
        return cd_field_error(err, 422, "invalid_value", "changes",
                              "changes must hold 1 to "
                              CD_STRINGIFY(CD_WHATIF_CHANGES_MAX)
                              " changes");
    }

    json_array_foreach(changes, i, change) {
        ch = &w->changes[i];

        if (!json_is_object(change)) {
            snprintf(err->field_buf, sizeof(err->field_buf), "changes[%zu]",
                     i);
            return cd_field_error(err, 400, "invalid_type", err->field_buf,
                                  "%s must be an object", err->field_buf);
        }

        json_object_foreach(change, key, value) {
            for (f = cd_whatif_change_fields; *f != NULL; f++) {
                if (strcmp(key, *f) == 0) {
                    break;
                }
            }

            if (*f == NULL) {
                snprintf(err->field_buf, sizeof(err->field_buf),
                         "changes[%zu].%.24s", i, key);
                return cd_field_error(err, 400, "unknown_field",
                                      err->field_buf, "unknown member %s: "
                                      "a change is {provider, from_model, "
                                      "to_model} or {provider, model, "
                                      "prices}", err->field_buf);
            }
        }

        if (cd_whatif_string(change, i, "provider", 1, &ch->provider, err)
            != CD_OK)
        {
            return CD_ERROR;
        }

        if (json_object_get(change, "prices") != NULL) {
            if (json_object_get(change, "from_model") != NULL
                || json_object_get(change, "to_model") != NULL)
            {
                snprintf(err->field_buf, sizeof(err->field_buf),
                         "changes[%zu].prices", i);
                return cd_field_error(err, 422, "invalid_value",
                                      err->field_buf, "%s: a change either "
                                      "moves from_model to to_model or "
                                      "re-prices model, not both",
                                      err->field_buf);
            }

            if (cd_whatif_string(change, i, "model", 1, &ch->model, err)
                != CD_OK
                || cd_whatif_prices(json_object_get(change, "prices"), i,
                                    &ch->price, err) != CD_OK)
            {
                return CD_ERROR;
            }

            ch->priced = 1;

        } else {
            if (json_object_get(change, "model") != NULL) {
                snprintf(err->field_buf, sizeof(err->field_buf),
                         "changes[%zu].model", i);
                return cd_field_error(err, 422, "invalid_value",
                                      err->field_buf, "%s goes with prices; "
                                      "to move traffic give from_model and "
                                      "to_model", err->field_buf);
            }

            if (cd_whatif_string(change, i, "from_model", 1, &ch->model, err)
                != CD_OK
                || cd_whatif_string(change, i, "to_model", 1, &ch->to_model,
                                    err) != CD_OK)
            {
                return CD_ERROR;
            }
        }

        w->nchanges++;
    }

    return CD_OK;
}


/* the change that applies to provider/model, or NULL: first match wins */
static const cd_whatif_change_t *
cd_whatif_match(const cd_whatif_t *w, const char *provider, const char *model)
{
    size_t    i;
    sp_str_t  name, base;

    name = sp_str_from(model);
    base = sp_price_base_model(name);

    for (i = 0; i < w->nchanges; i++) {
        if (strcmp(w->changes[i].provider, provider) != 0) {
            continue;
        }

        if (strcmp(w->changes[i].model, model) == 0
            || (base.len == strlen(w->changes[i].model)
                && memcmp(base.data, w->changes[i].model, base.len) == 0))
        {
            return &w->changes[i];
        }
    }

    return NULL;
}


typedef struct {
    int64_t  actual;
    int64_t  what_if;
    int64_t  requests;
    int64_t  changed;
} cd_whatif_sum_t;


static int
cd_whatif_sum_json(json_t *obj, const cd_whatif_sum_t *s)
{
    if (cd_fc_money(obj, "actual", s->actual) != CD_OK
        || cd_fc_money(obj, "what_if", s->what_if) != CD_OK
        || cd_fc_money(obj, "difference", s->what_if - s->actual) != CD_OK
        || json_object_set_new(obj, "requests",
                               json_integer((json_int_t) s->requests))
        || json_object_set_new(obj, "repriced_requests",
                               json_integer((json_int_t) s->changed)))
    {
        return CD_ERROR;
    }

    return CD_OK;
}


/* a price as GET /pricing shows one: USD per 1M tokens, decimal text */
static int
cd_whatif_price_json(json_t *obj, const sp_price_t *price)
{
    char           text[SP_MONEY_STR_LEN];
    size_t         k;
    const int64_t  nano[4] = { price->input, price->output,
                               price->cached_input, price->cache_write };

    for (k = 0; k < 4; k++) {
        sp_money_format(nano[k], text);

        if (cd_json_set_str(obj, cd_whatif_price_fields[k], text)) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


static json_t *
cd_whatif_changes_json(const cd_whatif_t *w)
{
    size_t                     i;
    json_t                    *arr, *item, *price;
    const cd_whatif_change_t  *ch;

    arr = json_array();
    if (arr == NULL) {
        return NULL;
    }

    for (i = 0; i < w->nchanges; i++) {
        ch = &w->changes[i];
        item = json_object();
        price = json_object();

        if (item == NULL || price == NULL
            || json_array_append_new(arr, item) != 0
            || json_object_set_new(item, "price", price) != 0)
        {
            json_decref(price);
            json_decref(item);
            json_decref(arr);
            return NULL;
        }

        if (cd_json_set_str(item, "provider", ch->provider)
            || cd_json_set_str(item, ch->to_model ? "from_model" : "model",
                               ch->model)
            || (ch->to_model != NULL
                && cd_json_set_str(item, "to_model", ch->to_model))
            || cd_whatif_price_json(price, &ch->price) != CD_OK)
        {
            json_decref(arr);
            return NULL;
        }
    }

    return arr;
}


/*
 * One row per (group, provider, model, token counts) with its requests
 * and billed cost: each is priced as the proxy prices one request, then
 * multiplied, so rounding is the proxy's, request by request.
 */
#define CD_WHATIF_SQL(column)                                                \
    "SELECT " column ", coalesce(provider, ''), coalesce(model, ''),"        \
    " input_tokens, output_tokens, cached_tokens, cache_write_tokens,"       \
    " count(*), sum(cost_nano)::text FROM audit_logs"                        \
    " WHERE created_at >= 'epoch'::timestamptz"                             \
    " + $1::bigint * interval '1 microsecond'"                               \
    " AND created_at < 'epoch'::timestamptz"                                 \
    " + $2::bigint * interval '1 microsecond'"                               \
    " GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3"


static int
cd_whatif_row(const cd_whatif_t *w, PGresult *res, int row,
    cd_whatif_sum_t *s)
{
    int64_t                    count, billed, cost;
    __int128                   total;
    sp_usage_t                 usage;
    const cd_whatif_change_t  *ch;

    count = strtoll(PQgetvalue(res, row, 7), NULL, 10);
    billed = strtoll(PQgetvalue(res, row, 8), NULL, 10);

    s->actual += billed;
    s->requests += count;

    ch = cd_whatif_match(w, PQgetvalue(res, row, 1), PQgetvalue(res, row, 2));

    if (ch == NULL) {
        s->what_if += billed;
        return CD_OK;
    }

    usage.input_tokens = strtoll(PQgetvalue(res, row, 3), NULL, 10);
    usage.output_tokens = strtoll(PQgetvalue(res, row, 4), NULL, 10);
    usage.cached_tokens = strtoll(PQgetvalue(res, row, 5), NULL, 10);
    usage.cache_write_tokens = strtoll(PQgetvalue(res, row, 6), NULL, 10);

    if (sp_cost_nano(&ch->price, &usage, &cost) != SP_OK) {
        return CD_ERROR;
    }

    total = (__int128) cost * count + s->what_if;

    if (total > INT64_MAX) {
        return CD_ERROR;
    }

    s->what_if = (int64_t) total;
    s->changed += count;

    return CD_OK;
}


void
cd_api_forecast_what_if(cd_request_t *r)
{
    int                  i, n, priced, same;
    char                 sql[1024], p_from[CD_INT_TEXT], p_to[CD_INT_TEXT];
    size_t               k;
    json_t              *body, *obj, *groups, *item;
    int64_t              max_output;
    PGresult            *res;
    const char          *params[2], *column, *prev;
    cd_whatif_t          w;
    cd_db_conn_t        *c;
    cd_whatif_sum_t      total, group;
    cd_field_error_t     err;
    cd_whatif_change_t  *ch;

    body = cd_request_json(r, cd_whatif_fields);
    if (body == NULL) {
        return;
    }

    if (cd_whatif_parse(body, &w, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    res = NULL;
    obj = NULL;

    /* the model moved to is priced as the proxy would price it now */
    for (k = 0; k < w.nchanges; k++) {
        ch = &w.changes[k];

        if (ch->priced) {
            continue;
        }

        if (cd_pricing_resolve(c, r->org_id, ch->provider, ch->to_model,
                               &ch->price, &max_output, &priced) != CD_OK)
        {
            cd_respond_statement_error(r, c);
            goto done;
        }

        if (!priced) {
            snprintf(err.field_buf, sizeof(err.field_buf),
                     "changes[%zu].to_model", k);
            cd_respond_error(r, 422, "invalid_request_error",
                             "unknown_model", err.field_buf,
                             "%s: %s/%.200s has no price (GET /pricing lists "
                             "the priced models)", err.field_buf,
                             ch->provider, ch->to_model);
            goto done;
        }

        ch->priced = 1;
    }

    column = w.group_by != NULL ? cd_forecast_group_column(w.group_by)
                                : "NULL::text";

    /* column is one of cd_forecast_groups' constants */
    snprintf(sql, sizeof(sql), CD_WHATIF_SQL("%s"), column);
    snprintf(p_from, sizeof(p_from), "%lld", (long long) w.from_us);
    snprintf(p_to, sizeof(p_to), "%lld", (long long) w.to_us);
    params[0] = p_from;
    params[1] = p_to;

    res = cd_db_exec(c, sql, 2, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    obj = json_object();
    if (obj == NULL) {
        goto oom;
    }

    /* json_object_set_new steals its value, set or not */
    groups = json_array();

    if (json_object_set_new(obj, "groups", groups)
        || json_object_set_new(obj, "changes", cd_whatif_changes_json(&w)))
    {
        goto oom;
    }

    memset(&total, 0, sizeof(total));
    memset(&group, 0, sizeof(group));
    n = PQntuples(res);
    prev = NULL;

    for (i = 0; i < n; i++) {
        /* rows come by group: a group ends where the next one starts */
        same = i > 0 && PQgetisnull(res, i, 0) == PQgetisnull(res, i - 1, 0)
               && strcmp(PQgetvalue(res, i, 0), PQgetvalue(res, i - 1, 0))
                  == 0;

        if (i > 0 && !same && w.group_by != NULL) {
            item = json_object();

            if (item == NULL || json_array_append_new(groups, item) != 0
                || cd_json_set_str(item, "group", prev)
                || cd_whatif_sum_json(item, &group) != CD_OK)
            {
                goto oom;
            }

            memset(&group, 0, sizeof(group));
        }

        prev = cd_db_value(res, i, 0);

        if (cd_whatif_row(&w, res, i, &group) != CD_OK
            || cd_whatif_row(&w, res, i, &total) != CD_OK)
        {
            cd_respond_error(r, 422, "invalid_request_error", "overflow",
                             "changes", "the re-priced cost overflows");
            goto done;
        }
    }

    if (n > 0 && w.group_by != NULL) {
        item = json_object();

        if (item == NULL || json_array_append_new(groups, item) != 0
            || cd_json_set_str(item, "group", prev)
            || cd_whatif_sum_json(item, &group) != CD_OK)
        {
            goto oom;
        }
    }

    item = json_object();

    if (item == NULL || json_object_set_new(obj, "total", item)
        || cd_whatif_sum_json(item, &total) != CD_OK
        || cd_json_set_str(obj, "from", json_string_value(
               json_object_get(body, "from")))
        || cd_json_set_str(obj, "to", json_string_value(
               json_object_get(body, "to")))
        || cd_json_set_str(obj, "group_by", w.group_by))
    {
        goto oom;
    }

    cd_respond(r, 200, obj);
    obj = NULL;
    goto done;

oom:

    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

done:

    json_decref(obj);
    PQclear(res);
    json_decref(body);
    cd_request_end(r, c);
}
