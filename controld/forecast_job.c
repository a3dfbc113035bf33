/*
 * The spend anomaly job, on its own thread, never in the ingest
 * transaction nor in the proxy's path: every SPENDPOL_FORECAST_JOB_MS,
 * for each organisation, the daily anomalies of its last
 * CD_ANOMALY_JOB_DAYS complete days (its total and each provider's
 * spend, read as the organisation under row-level security, scored as
 * GET /forecast/anomalies scores them) become spend_anomaly alerts
 * through cd_alerts_raise(). The dedupe key names the interval, the
 * group and the day, and an alert is raised once per key whatever its
 * state: acknowledging one does not bring it back, and several controld
 * nodes running the job raise it once.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controld.h"
#include "forecast.h"


#define CD_FORECAST_JOB_SUBJECT  "forecast-job"

struct cd_forecast_job_s {
    cd_app_t     *app;
    cd_thread_t   thread;
};


/* the anomalies of one organisation ($2, cd_forecast_anomalies' items) */
static const char  cd_forecast_job_alerts[] =
    "WITH new_alerts AS (SELECT $1::text AS org_id,"
    " 'spend_anomaly' AS type, 'warning' AS severity,"
    " format('Spend %s on %s%s: %s USD where %s USD was expected"
    " (robust z-score %s)', x->>'direction', x->>'date',"
    " CASE WHEN x->>'scope' = 'total' THEN ''"
    " ELSE format(' for %s %s', x->>'group_by',"
    " coalesce(x->>'group', '(none)')) END,"
    " x->>'actual_usd', x->>'expected_usd', x->>'z') AS message,"
    " x - 'dedupe_key' AS details, x->>'dedupe_key' AS dedupe_key"
    " FROM jsonb_array_elements($2::jsonb) x)";


/* the organisation's anomalies as JSON text, NULL when none or failed */
static char *
cd_forecast_job_find(cd_forecast_job_t *job, const char *org)
{
    char               *text;
    json_t             *items;
    int64_t             today, from;
    cd_db_conn_t       *c;
    cd_forecast_set_t   set;

    c = cd_db_acquire_begin(&job->app->tenant_db, 5000, CD_ROLE_APP, org);
    if (c == NULL) {
        return NULL;
    }

    today = (int64_t) time(NULL) / CD_FORECAST_DAY_S;
    from = today - CD_ANOMALY_JOB_DAYS;
    text = NULL;

    items = json_array();

    /* one load gives the total and each provider */
    if (items != NULL
        && cd_forecast_load(c, "provider", CD_FORECAST_DAY_S,
                            from - CD_ANOMALY_CONTEXT_DAYS, today,
                            CD_FORECAST_GROUPS_MAX, &set) == CD_OK)
    {
        if (cd_forecast_anomalies(&set, "provider", from, items) != CD_OK) {
            cd_log_warn(CD_FORECAST_JOB_SUBJECT, "out of memory scoring "
                        "org=%s", org);

        } else if (json_array_size(items) > 0) {
            /* z as rounded (12.4), as the HTTP answers print it */
            text = json_dumps(items, JSON_COMPACT | JSON_REAL_PRECISION(15));
        }

        cd_forecast_set_free(&set);

    } else {
        cd_log_warn(CD_FORECAST_JOB_SUBJECT, "cannot read the spend of "
                    "org=%s", org);
    }

    json_decref(items);
    cd_db_rollback(c);
    cd_db_release(&job->app->tenant_db, c);

    return text;
}


static void
cd_forecast_job_org(cd_forecast_job_t *job, const char *org)
{
    int            i;
    char          *text;
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    text = cd_forecast_job_find(job, org);
    if (text == NULL) {
        return;
    }

    c = cd_db_acquire_begin(&job->app->db, 5000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        free(text);
        return;
    }

    params[0] = org;
    params[1] = text;

    res = cd_alerts_raise(c, cd_forecast_job_alerts, NULL, 2, params);

    if (res == NULL) {
        cd_log_warn(CD_FORECAST_JOB_SUBJECT, "cannot raise the anomalies of "
                    "org=%s", org);

    } else if (cd_db_commit(c) == CD_OK) {
        for (i = 0; i < PQntuples(res); i++) {
            cd_log_info(CD_FORECAST_JOB_SUBJECT, "raised spend_anomaly %s "
                        "org=%s", PQgetvalue(res, i, 0), org);
        }
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&job->app->db, c);
    free(text);
}


static void
cd_forecast_job_once(cd_forecast_job_t *job)
{
    int            i;
    PGresult      *orgs;
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&job->app->db, 5000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return;
    }

    orgs = cd_db_exec(c, "SELECT id FROM orgs ORDER BY id", 0, NULL);
    cd_db_rollback(c);
    cd_db_release(&job->app->db, c);

    if (orgs == NULL) {
        cd_log_warn(CD_FORECAST_JOB_SUBJECT, "cannot list the organisations");
        return;
    }

    for (i = 0; i < PQntuples(orgs); i++) {
        if (cd_thread_stopping(&job->thread)) {
            break;
        }

        cd_forecast_job_org(job, PQgetvalue(orgs, i, 0));
    }

    PQclear(orgs);
}


static void *
cd_forecast_job_thread(void *data)
{
    cd_forecast_job_t  *job;

    job = data;

    /* the first run waits one period: the start belongs to ingest */
    for ( ;; ) {
        cd_thread_sleep(&job->thread,
                        (unsigned) job->app->config.forecast_job_ms);

        if (cd_thread_stopping(&job->thread)) {
            break;
        }

        cd_forecast_job_once(job);
    }

    return NULL;
}


int
cd_forecast_job_start(cd_app_t *app, cd_forecast_job_t **out)
{
    cd_forecast_job_t  *job;

    *out = NULL;

    job = calloc(1, sizeof(cd_forecast_job_t));
    if (job == NULL) {
        return CD_ERROR;
    }

    job->app = app;

    if (cd_thread_start(&job->thread, CD_FORECAST_JOB_SUBJECT,
                        cd_forecast_job_thread, job) != CD_OK)
    {
        free(job);
        return CD_ERROR;
    }

    *out = job;

    return CD_OK;
}


void
cd_forecast_job_stop(cd_forecast_job_t *job)
{
    if (job == NULL) {
        return;
    }

    cd_thread_stop(&job->thread);
    free(job);
}
