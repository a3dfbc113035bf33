/*
 * Alerts: rows, dedupe keys, rules, and the evaluator and delivery threads
 * (alert_jobs.c). Included by controld.h.
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
 * and error_rate alerts from audit_logs; the deliverer queues every alert
 * of a type some rule has a webhook for and posts it, retrying with
 * backoff, every attempt recorded in alert_deliveries.
 */
typedef struct {
    cd_thread_t       eval;
    cd_thread_t       deliver;
} cd_alert_jobs_t;

int cd_alert_jobs_start(cd_app_t *app) CD_CHECK;
void cd_alert_jobs_stop(cd_app_t *app);


#endif /* CD_ALERTS_H */
