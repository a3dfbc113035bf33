/*
 * The alert jobs, each on its own thread, never in the ingest
 * transaction and never in the proxy's path:
 *
 * - the evaluator, every CD_ALERT_EVAL_MS, raises spend_spike and
 *   error_rate alerts from audit_logs for every such rule, at most once
 *   per rule and window (dedupe key "TYPE:RULE:WINDOW"), through
 *   cd_alerts_raise() (alerts.c);
 * - the deliverer, every CD_ALERT_DELIVER_MS, claims the due jobs that
 *   cd_alerts_raise() queued in alert_delivery_jobs with each alert
 *   (FOR UPDATE SKIP LOCKED, so several controld nodes share the queue;
 *   a claim is a 60 s lease), POSTs them outside any
 *   transaction and records every attempt in alert_deliveries. A 2xx
 *   answer delivers; anything else is retried after 1, 2, 4, 8 s, at
 *   most CD_WEBHOOK_ATTEMPTS attempts.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "webhook.h"
#include "metrics.h"


#define CD_JOBS_SUBJECT   "alert-jobs"


/* ---- the evaluator ---------------------------------------------------- */

/* the alerts of the rules that fired, for cd_alerts_raise() */
static const char  cd_eval_error_rate[] =
    "WITH r AS ("
    " SELECT id, org_id, (params->>'window_minutes')::int AS w,"
    " (params->>'threshold_percent')::int AS pct,"
    " (params->>'min_requests')::bigint AS min_requests"
    " FROM alert_rules WHERE type = 'error_rate'),"
    " s AS (SELECT r.*, x.total, x.errors,"
    " floor(extract(epoch FROM now()) / (r.w * 60))::bigint AS bucket"
    " FROM r CROSS JOIN LATERAL (SELECT count(*) AS total,"
    " count(*) FILTER (WHERE a.status >= 500) AS errors"
    " FROM audit_logs a WHERE a.org_id = r.org_id"
    " AND a.created_at >= now() - r.w * interval '1 minute') x),"
    " new_alerts AS (SELECT org_id, 'error_rate' AS type,"
    " 'warning' AS severity,"
    " format('%s of %s requests (%s%%) failed with a 5xx status in the"
    " last %s minutes (rule %s: alert at %s%% of at least %s requests)',"
    " errors, total, round(errors * 100.0 / total, 1), w, id, pct,"
    " min_requests) AS message,"
    " jsonb_build_object('rule_id', id, 'window_minutes', w,"
    " 'requests', total, 'errors', errors,"
    " 'error_percent', round(errors * 100.0 / total, 1),"
    " 'threshold_percent', pct) AS details,"
    " format('error_rate:%s:%s', id, bucket) AS dedupe_key"
    " FROM s WHERE total > 0 AND total >= min_requests"
    " AND errors * 100 >= pct * total)";

static const char  cd_eval_spend_spike[] =
    "WITH r AS ("
    " SELECT id, org_id, (params->>'window_minutes')::int AS w,"
    " (params->>'baseline_windows')::int AS n,"
    " (params->>'factor')::numeric AS factor"
    " FROM alert_rules WHERE type = 'spend_spike'),"
    " s AS (SELECT r.*, x.cur, x.prev,"
    " floor(extract(epoch FROM now()) / (r.w * 60))::bigint AS bucket"
    " FROM r CROSS JOIN LATERAL (SELECT"
    " coalesce(sum(a.cost_nano) FILTER (WHERE a.created_at >="
    " now() - r.w * interval '1 minute'), 0) AS cur,"
    " coalesce(sum(a.cost_nano) FILTER (WHERE a.created_at <"
    " now() - r.w * interval '1 minute'), 0) AS prev"
    " FROM audit_logs a WHERE a.org_id = r.org_id"
    " AND a.created_at >= now() - r.w * (r.n + 1) * interval '1 minute')"
    " x),"
    " new_alerts AS (SELECT org_id, 'spend_spike' AS type,"
    " 'warning' AS severity,"
    " format('Spend in the last %s minutes is %s USD, %s times the"
    " average of the %s windows before (%s USD; rule %s alerts at %s"
    " times)', w, trim_scale(cur::numeric / 1000000000),"
    " round(cur::numeric * n / prev, 2), n,"
    " round(prev::numeric / n / 1000000000, 9), id, factor) AS message,"
    " jsonb_build_object('rule_id', id, 'window_minutes', w,"
    " 'spend_usd', trim_scale(cur::numeric / 1000000000)::text,"
    " 'baseline_usd', trim_scale(round(prev::numeric / n / 1000000000,"
    " 9))::text, 'ratio', round(cur::numeric * n / prev, 2),"
    " 'factor', factor) AS details,"
    " format('spend_spike:%s:%s', id, bucket) AS dedupe_key"
    " FROM s WHERE cur > 0 AND prev > 0 AND cur::numeric * n >="
    " factor * prev)";


static void
cd_eval_once(cd_app_t *app, const char *sql, const char *what)
{
    int            i;
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&app->db, 5000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return;
    }

    res = cd_alerts_raise(c, sql, NULL, 0, NULL);

    if (res == NULL) {
        cd_log_warn(CD_JOBS_SUBJECT, "cannot evaluate the %s rules", what);

    } else if (cd_db_commit(c) == CD_OK) {
        for (i = 0; i < PQntuples(res); i++) {
            cd_log_info(CD_JOBS_SUBJECT, "raised %s %s org=%s",
                        PQgetvalue(res, i, 2), PQgetvalue(res, i, 0),
                        PQgetvalue(res, i, 1));
        }
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&app->db, c);
}


static void *
cd_eval_thread(void *data)
{
    cd_app_t  *app;

    app = data;

    do {
        cd_eval_once(app, cd_eval_error_rate, "error_rate");
        cd_eval_once(app, cd_eval_spend_spike, "spend_spike");

        cd_thread_sleep(&app->alert_jobs.eval, CD_ALERT_EVAL_MS);

    } while (!cd_thread_stopping(&app->alert_jobs.eval));

    return NULL;
}


/* ---- the deliverer ---------------------------------------------------- */

/* a deleted rule's queued deliveries end */
static const char  cd_deliver_orphans[] =
    "UPDATE alert_delivery_jobs j SET state = 'failed'"
    " WHERE state = 'pending' AND NOT EXISTS"
    " (SELECT 1 FROM alert_rules r WHERE r.id = j.rule_id)";

static const char  cd_deliver_claim[] =
    "WITH due AS (SELECT alert_id, rule_id FROM alert_delivery_jobs"
    " WHERE state = 'pending' AND next_at <= clock_timestamp()"
    " ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " UPDATE alert_delivery_jobs j SET attempts = j.attempts + 1,"
    " next_at = clock_timestamp() + interval '60 seconds'"
    " FROM due, alert_rules r, alerts a"
    " WHERE j.alert_id = due.alert_id AND j.rule_id = due.rule_id"
    " AND r.id = j.rule_id AND a.id = j.alert_id"
    " RETURNING j.alert_id, j.rule_id, j.org_id, j.attempts,"
    " r.webhook_url, r.webhook_format,"
    " jsonb_build_object('id', a.id, 'type', a.type, 'state', a.state,"
    " 'severity', a.severity, 'message', a.message,"
    " 'details', a.details, 'dedupe_key', a.dedupe_key,"
    " 'created_at', " CD_SQL_TS("a.created_at") ","
    " 'acknowledged_at', " CD_SQL_TS("a.acknowledged_at") ","
    " 'acknowledged_by', a.acknowledged_by)::text";

enum {
    CD_JOB_ALERT = 0, CD_JOB_RULE, CD_JOB_ORG, CD_JOB_ATTEMPT, CD_JOB_URL,
    CD_JOB_FORMAT, CD_JOB_ALERT_JSON
};


static PGresult *
cd_deliver_claim_jobs(cd_app_t *app)
{
    char           limit[16];
    PGresult      *res, *q;
    const char    *params[1];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&app->db, 5000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return NULL;
    }

    snprintf(limit, sizeof(limit), "%d", CD_ALERT_CLAIM_BATCH);
    params[0] = limit;
    res = NULL;

    q = cd_db_exec(c, cd_deliver_orphans, 0, NULL);
    if (q == NULL) {
        goto done;
    }

    PQclear(q);

    res = cd_db_exec(c, cd_deliver_claim, 1, params);

    if (res != NULL && cd_db_commit(c) != CD_OK) {
        PQclear(res);
        res = NULL;
    }

done:

    cd_db_rollback(c);
    cd_db_release(&app->db, c);

    return res;
}


static void
cd_deliver_record(cd_app_t *app, PGresult *jobs, int row, int status,
    const char *error, int delivered)
{
    int            attempt;
    char           code[16], wait[32];
    int64_t        backoff;
    const char    *params[6], *state;
    cd_db_conn_t  *c;

    attempt = atoi(PQgetvalue(jobs, row, CD_JOB_ATTEMPT));
    backoff = cd_webhook_backoff_ms(attempt);

    state = delivered ? "delivered"
            : attempt >= CD_WEBHOOK_ATTEMPTS ? "failed" : "pending";
    cd_metrics_webhook_delivery(delivered ? CD_METRICS_DELIVERED
                                : attempt >= CD_WEBHOOK_ATTEMPTS
                                ? CD_METRICS_GAVE_UP : CD_METRICS_RETRYING);

    snprintf(code, sizeof(code), "%d", status);
    snprintf(wait, sizeof(wait), "%lld", (long long) backoff);

    c = cd_db_acquire_begin(&app->db, 5000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        /* the lease runs out and the attempt is made again */
        return;
    }

    params[0] = PQgetvalue(jobs, row, CD_JOB_ORG);
    params[1] = PQgetvalue(jobs, row, CD_JOB_ALERT);
    params[2] = PQgetvalue(jobs, row, CD_JOB_RULE);
    params[3] = PQgetvalue(jobs, row, CD_JOB_ATTEMPT);
    params[4] = status > 0 ? code : NULL;
    params[5] = error;

    if (cd_db_command(c, "INSERT INTO alert_deliveries (org_id, alert_id,"
                         " rule_id, attempt, status_code, error)"
                         " VALUES ($1, $2, $3, $4::int, $5::int, $6)",
                      6, params) != CD_OK)
    {
        goto done;
    }

    params[0] = PQgetvalue(jobs, row, CD_JOB_ALERT);
    params[1] = PQgetvalue(jobs, row, CD_JOB_RULE);
    params[2] = state;
    params[3] = wait;

    if (cd_db_command(c, "UPDATE alert_delivery_jobs SET state = $3,"
                         " next_at = clock_timestamp() + $4::bigint"
                         " * interval '1 millisecond'"
                         " WHERE alert_id = $1 AND rule_id = $2",
                      4, params) != CD_OK)
    {
        goto done;
    }

    if (cd_db_commit(c) != CD_OK) {
        goto done;
    }

done:

    cd_db_rollback(c);
    cd_db_release(&app->db, c);
}


static void
cd_deliver_one(cd_app_t *app, PGresult *jobs, int row)
{
    int          status, delivered;
    char         err[256], redacted[CD_URL_MAX + 64], *body;
    json_t      *alert, *payload;
    cd_url_t     u;
    const char  *url;

    url = PQgetvalue(jobs, row, CD_JOB_URL);
    cd_url_redact(url, redacted, sizeof(redacted));

    status = 0;
    delivered = 0;
    err[0] = '\0';
    body = NULL;

    alert = json_loads(PQgetvalue(jobs, row, CD_JOB_ALERT_JSON), 0, NULL);

    if (alert == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto record;
    }

    if (strcmp(PQgetvalue(jobs, row, CD_JOB_FORMAT), "slack") == 0) {
        payload = cd_alert_slack_payload(alert);
        json_decref(alert);

    } else {
        payload = alert;
    }

    body = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);

    if (body == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto record;
    }

    if (cd_url_parse(url, &u) != CD_OK) {
        snprintf(err, sizeof(err), "invalid URL");
        goto record;
    }

    if (cd_webhook_post(&u, body, strlen(body), CD_WEBHOOK_TIMEOUT_MS,
                        &status, err, sizeof(err)) == CD_OK)
    {
        delivered = status >= 200 && status < 300;

        if (!delivered) {
            snprintf(err, sizeof(err), "HTTP status %d", status);
        }
    }

    OPENSSL_cleanse(&u, sizeof(u));

record:

    free(body);

    if (delivered) {
        cd_log_info(CD_JOBS_SUBJECT, "delivered %s (rule %s) to %s: %d, "
                    "attempt %s", PQgetvalue(jobs, row, CD_JOB_ALERT),
                    PQgetvalue(jobs, row, CD_JOB_RULE), redacted, status,
                    PQgetvalue(jobs, row, CD_JOB_ATTEMPT));
    } else {
        cd_log_warn(CD_JOBS_SUBJECT, "delivering %s (rule %s) to %s failed "
                    "(attempt %s of %d): %s",
                    PQgetvalue(jobs, row, CD_JOB_ALERT),
                    PQgetvalue(jobs, row, CD_JOB_RULE), redacted,
                    PQgetvalue(jobs, row, CD_JOB_ATTEMPT),
                    CD_WEBHOOK_ATTEMPTS, err);
    }

    cd_deliver_record(app, jobs, row, status, delivered ? NULL : err,
                      delivered);
}


static void *
cd_deliver_thread(void *data)
{
    int        i;
    cd_app_t  *app;
    PGresult  *jobs;

    app = data;

    do {
        jobs = cd_deliver_claim_jobs(app);

        for (i = 0; jobs != NULL && i < PQntuples(jobs); i++) {
            cd_deliver_one(app, jobs, i);
        }

        PQclear(jobs);

        cd_thread_sleep(&app->alert_jobs.deliver, CD_ALERT_DELIVER_MS);

    } while (!cd_thread_stopping(&app->alert_jobs.deliver));

    return NULL;
}


/* ---- start and stop --------------------------------------------------- */

int
cd_alert_jobs_start(cd_app_t *app)
{
    if (cd_thread_start(&app->alert_jobs.eval, CD_JOBS_SUBJECT, cd_eval_thread,
                        app)
        != CD_OK)
    {
        return CD_ERROR;
    }

    return cd_thread_start(&app->alert_jobs.deliver, CD_JOBS_SUBJECT,
                           cd_deliver_thread, app);
}


void
cd_alert_jobs_stop(cd_app_t *app)
{
    cd_thread_stop(&app->alert_jobs.eval);
    cd_thread_stop(&app->alert_jobs.deliver);
}
