/*
 * Alerts: writing them and their dedupe keys (alerts.c), rules
 * (api_alerts.c), the evaluator and delivery threads (alert_jobs.c).
 * Included by controld.h.
 */

#ifndef CD_ALERTS_H
#define CD_ALERTS_H


#define CD_ALERT_ID_PREFIX    SP_ID_ALERT_PREFIX
#define CD_ALERT_KEY_MAX      (32 + 2 * 256)


/*
 * The dedupe key of an unpriced_model alert: "unpriced_model:PROVIDER:
 * MODEL". Provider names hold no ':', so the key is unambiguous. Returns
 * CD_ERROR when it does not fit in outlen.
 */
int cd_alert_unpriced_key(const char *provider, const char *model,
    char *out, size_t outlen) CD_CHECK;


/*
 * The one writer of alerts (alerts.c), in the caller's transaction. with
 * is a WITH list whose last query, named new_alerts, has the columns
 * org_id, type, severity, message, details (jsonb) and dedupe_key; each
 * of its rows becomes an alert unless one with its dedupe key exists: with
 * update NULL, in any state (a key raises once); else an open one, which
 * update (a SET list over alerts and EXCLUDED) changes instead. Every
 * alert inserted or updated queues a delivery for each rule whose
 * webhook wants it. Returns the alerts' id, org_id and type, or NULL
 * when the statement failed (logged).
 */
PGresult *cd_alerts_raise(cd_db_conn_t *c, const char *with,
    const char *update, int nparams, const char *const *params) CD_CHECK;


/* ---- alert rules (api_alerts.c) --------------------------------------- */

#define CD_ALERT_RULE_ID_PREFIX  SP_ID_ALERT_RULE_PREFIX

/* a validated POST /alerts/rules body */
typedef struct {
    const char  *type;         /* "budget_threshold" ... (static) */
    json_t      *params;       /* normalised, defaults filled; owned */
    const char  *url;          /* NULL: no webhook; points into body */
    const char  *format;       /* "json" or "slack" (static), or NULL */
} cd_alert_rule_input_t;

/* "budget_threshold" ... -> the same static string, or NULL */
const char *cd_alert_rule_type_parse(const char *name);

/* the whole body; on success in->params must be json_decref'ed */
int cd_alert_rule_parse(json_t *body, cd_alert_rule_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/* the Slack-compatible payload {"text": "..."} of an alert object */
json_t *cd_alert_slack_payload(json_t *alert);


/* ---- alert_jobs.c ----------------------------------------------------- */

#define CD_ALERT_EVAL_MS       15000
#define CD_ALERT_DELIVER_MS    500
#define CD_ALERT_CLAIM_BATCH   16

/*
 * Two threads: the evaluator (every CD_ALERT_EVAL_MS) raises spend_spike
 * and error_rate alerts from audit_logs; the deliverer posts the queued
 * deliveries, retrying with backoff, every attempt recorded in
 * alert_deliveries.
 */
typedef struct {
    cd_thread_t       eval;
    cd_thread_t       deliver;
} cd_alert_jobs_t;

int cd_alert_jobs_start(cd_app_t *app) CD_CHECK;
void cd_alert_jobs_stop(cd_app_t *app);


#endif /* CD_ALERTS_H */
