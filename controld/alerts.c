/*
 * Alert rows: the one place that writes them. The evaluator thread
 * (spend_spike, error_rate) and ingest (budget_threshold, unpriced_model,
 * inside each batch's transaction) describe the alerts they raise as
 * rows; cd_alerts_raise() inserts them, deduplicated by (org, dedupe
 * key), and queues a webhook delivery for every rule that wants each one,
 * in the caller's transaction: an alert is never raised without its
 * deliveries, nor delivered when its transaction rolls back.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"


/*
 * The rules that deliver an alert (a of raised): those of its
 * organisation and type, with a webhook, created before it, and for a
 * budget_threshold rule naming a budget, that budget's alerts only. An
 * alert older than an hour (an open unpriced_model alert counting more
 * requests) queues nothing it did not queue when raised.
 */
#define CD_ALERT_QUEUE                                                       \
    "INSERT INTO alert_delivery_jobs (alert_id, rule_id, org_id)"            \
    " SELECT a.id, r.id, r.org_id FROM alert_rules r JOIN raised a"          \
    " ON a.org_id = r.org_id AND a.type = r.type"                            \
    " AND a.created_at >= r.created_at"                                      \
    " AND a.created_at > now() - interval '1 hour'"                          \
    " WHERE r.webhook_url IS NOT NULL"                                       \
    " AND (r.params->>'budget_id' IS NULL"                                   \
    " OR a.details->>'budget_id' = r.params->>'budget_id')"                  \
    " ON CONFLICT DO NOTHING"


int
cd_alert_unpriced_key(const char *provider, const char *model, char *out,
    size_t outlen)
{
    int  n;

    n = snprintf(out, outlen, "unpriced_model:%s:%s", provider, model);

    return n < 0 || (size_t) n >= outlen ? CD_ERROR : CD_OK;
}


PGresult *
cd_alerts_raise(cd_db_conn_t *c, const char *with, const char *update,
    int nparams, const char *const *params)
{
    int        n;
    char      *sql;
    size_t     len;
    PGresult  *res;

    static const char  fmt[] =
        "%s, raised AS ("
        " INSERT INTO alerts (id, org_id, type, severity, message, details,"
        " dedupe_key)"
        " SELECT 'alr_' || left(md5(gen_random_uuid()::text), 24), org_id,"
        " type, severity, message, details, dedupe_key FROM new_alerts h"
        "%s"
        " ON CONFLICT (org_id, dedupe_key)"
        " WHERE state = 'open' AND dedupe_key IS NOT NULL %s%s"
        " RETURNING id, org_id, type, details, created_at),"
        " queued AS (" CD_ALERT_QUEUE ")"
        " SELECT id, org_id, type FROM raised";

    /* without an update, a key raises one alert ever, whatever its state */
    static const char  once[] =
        " WHERE NOT EXISTS (SELECT 1 FROM alerts a"
        " WHERE a.org_id = h.org_id AND a.dedupe_key = h.dedupe_key)";

    len = sizeof(fmt) + strlen(with) + sizeof(once)
          + (update != NULL ? strlen(update) : 0) + 32;

    sql = malloc(len);
    if (sql == NULL) {
        cd_log_error("alerts", "out of memory for an alert statement");
        return NULL;
    }

    n = snprintf(sql, len, fmt, with, update != NULL ? "" : once,
                 update != NULL ? "DO UPDATE SET " : "DO NOTHING",
                 update != NULL ? update : "");

    res = NULL;

    if (n > 0 && (size_t) n < len) {
        res = cd_db_exec(c, sql, nparams, params);
    }

    free(sql);

    return res;
}
