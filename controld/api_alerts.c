/*
 * /alerts: conditions the organisation should act on, newest first,
 * keyset paginated on (created_at, id) like /audit-logs. controld raises
 * them (journal ingest raises unpriced_model in the batch's own
 * transaction); a tenant reads and acknowledges them. While an alert is
 * open its dedupe_key is unique in the organisation, so a repeated
 * condition updates the open alert's details instead of adding alerts.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"
#include "webhook.h"
#include "outbound.h"
#include "api.h"


#define CD_ALERTS_SUBJECT   "alerts"

#define CD_ALERT_COLUMNS                                                     \
    "id, type, state, severity, message, details::text, dedupe_key, "        \
    CD_SQL_TS("created_at") ", " CD_SQL_TS("acknowledged_at") ","            \
    " acknowledged_by, " CD_SQL_US("created_at")

enum {
    CD_ALERT_ID = 0, CD_ALERT_TYPE, CD_ALERT_STATE, CD_ALERT_SEVERITY,
    CD_ALERT_MESSAGE, CD_ALERT_DETAILS, CD_ALERT_DEDUPE, CD_ALERT_CREATED,
    CD_ALERT_ACKED_AT, CD_ALERT_ACKED_BY, CD_ALERT_CREATED_US
};


/* ---- pure helpers (unit tested) --------------------------------------- */


/* ---- alert rules: pure validation (unit tested) ----------------------- */

static const char  *cd_alert_rule_types[] = {
    "budget_threshold", "spend_spike", "error_rate", "unpriced_model", NULL
};


const char *
cd_alert_rule_type_parse(const char *name)
{
    size_t  i;

    for (i = 0; cd_alert_rule_types[i] != NULL; i++) {
        if (strcmp(name, cd_alert_rule_types[i]) == 0) {
            return cd_alert_rule_types[i];
        }
    }

    return NULL;
}


/* an integer parameter into out (defaulted when absent) */
static int
cd_rule_int(json_t *params, json_t *out, const char *name, json_int_t def,
    json_int_t min, json_int_t max, cd_field_error_t *err)
{
    char         field[64];
    json_t      *v;
    json_int_t   n;

    snprintf(field, sizeof(field), "params.%s", name);
    v = params ? json_object_get(params, name) : NULL;

    if (v == NULL || json_is_null(v)) {
        n = def;

    } else if (!json_is_integer(v)) {
        return cd_field_error(err, 400, "invalid_type", "params",
                              "%s must be an integer", field);

    } else {
        n = json_integer_value(v);

        if (n < min || n > max) {
            return cd_field_error(err, 422, "invalid_rule_param", "params",
                                  "%s must be between %lld and %lld", field,
                                  (long long) min, (long long) max);
        }
    }

    if (json_object_set_new(out, name, json_integer(n)) != 0) {
        return cd_field_error(err, 500, "out_of_memory", "params",
                              "out of memory");
    }

    return CD_OK;
}


static int
cd_rule_params(const char *type, json_t *params, json_t *out,
    cd_field_error_t *err)
{
    size_t               i;
    double               factor;
    json_t              *v;
    const char          *key, *budget;
    const char *const   *allowed;

    static const char  *allowed_budget[] = { "budget_id", NULL };
    static const char  *allowed_spike[] = {
        "window_minutes", "factor", "baseline_windows", NULL
    };
    static const char  *allowed_error[] = {
        "window_minutes", "threshold_percent", "min_requests", NULL
    };
    static const char  *allowed_none[] = { NULL };

    if (params != NULL && !json_is_null(params) && !json_is_object(params)) {
        return cd_field_error(err, 400, "invalid_type", "params",
                              "params must be an object");
    }

    if (params != NULL && json_is_null(params)) {
        params = NULL;
    }

    if (strcmp(type, "budget_threshold") == 0) {
        allowed = allowed_budget;
    } else if (strcmp(type, "spend_spike") == 0) {
        allowed = allowed_spike;
    } else if (strcmp(type, "error_rate") == 0) {
        allowed = allowed_error;
    } else {
        allowed = allowed_none;
    }

    if (params != NULL) {
        json_object_foreach(params, key, v) {
            for (i = 0; allowed[i] != NULL; i++) {
                if (strcmp(key, allowed[i]) == 0) {
                    break;
                }
            }

            if (allowed[i] == NULL) {
                return cd_field_error(err, 400, "unknown_field", "params",
                                      "params.%.64s is not a parameter of "
                                      "%s rules", key, type);
            }
        }
    }

    if (strcmp(type, "spend_spike") == 0) {
        if (cd_rule_int(params, out, "window_minutes", 60, 1, 1440, err)
            != CD_OK
            || cd_rule_int(params, out, "baseline_windows", 24, 1, 168, err)
               != CD_OK)
        {
            return CD_ERROR;
        }

        v = params ? json_object_get(params, "factor") : NULL;

        if (v == NULL || json_is_null(v)) {
            factor = 3;

        } else if (!json_is_number(v)) {
            return cd_field_error(err, 400, "invalid_type", "params",
                                  "params.factor must be a number");

        } else {
            factor = json_number_value(v);

            if (!(factor > 1 && factor <= 1000)) {
                return cd_field_error(err, 422, "invalid_rule_param",
                                      "params", "params.factor must be "
                                      "greater than 1 and at most 1000");
            }
        }

        if (json_object_set_new(out, "factor", json_real(factor)) != 0) {
            return cd_field_error(err, 500, "out_of_memory", "params",
                                  "out of memory");
        }

        return CD_OK;
    }

    if (strcmp(type, "error_rate") == 0) {
        if (cd_rule_int(params, out, "window_minutes", 5, 1, 1440, err)
            != CD_OK
            || cd_rule_int(params, out, "threshold_percent", 20, 1, 100, err)
               != CD_OK
            || cd_rule_int(params, out, "min_requests", 20, 1, 1000000, err)
               != CD_OK)
        {
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(type, "budget_threshold") == 0 && params != NULL) {
        v = json_object_get(params, "budget_id");

        if (v != NULL && !json_is_null(v)) {
            budget = json_string_value(v);

            if (budget == NULL) {
                return cd_field_error(err, 400, "invalid_type", "params",
                                      "params.budget_id must be a string");
            }

            if (!sp_id_valid(SP_ID_BUDGET, budget, strlen(budget))) {
                return cd_field_error(err, 422, "invalid_rule_param",
                                      "params", "params.budget_id must be "
                                      "a budget id (bud_ followed by 24 "
                                      "lowercase hex digits)");
            }

            if (json_object_set_new(out, "budget_id", json_string(budget))
                != 0)
            {
                return cd_field_error(err, 500, "out_of_memory", "params",
                                      "out of memory");
            }
        }
    }

    return CD_OK;
}


static int
cd_rule_webhook(json_t *webhook, cd_alert_rule_input_t *in,
    cd_field_error_t *err)
{
    char         msg[512];
    json_t      *v;
    cd_url_t     u;
    const char  *key, *format, *rule;

    if (webhook == NULL || json_is_null(webhook)) {
        return CD_OK;
    }

    if (!json_is_object(webhook)) {
        return cd_field_error(err, 400, "invalid_type", "webhook",
                              "webhook must be an object with url and "
                              "format");
    }

    json_object_foreach(webhook, key, v) {
        if (strcmp(key, "url") != 0 && strcmp(key, "format") != 0) {
            return cd_field_error(err, 400, "unknown_field", "webhook",
                                  "webhook.%.64s is not a known field (url,"
                                  " format)", key);
        }
    }

    v = json_object_get(webhook, "url");

    if (v == NULL || json_is_null(v)) {
        return cd_field_error(err, 422, "missing_field", "webhook.url",
                              "webhook.url is required");
    }

    in->url = json_string_value(v);

    if (in->url == NULL) {
        return cd_field_error(err, 400, "invalid_type", "webhook.url",
                              "webhook.url must be a string");
    }

    if (cd_url_parse(in->url, &u) != CD_OK) {
        in->url = NULL;
        return cd_field_error(err, 422, "invalid_webhook_url", "webhook.url",
                              "webhook.url must be an http:// or https:// "
                              "URL with a host name (at most %d characters)",
                              CD_URL_MAX);
    }

    OPENSSL_cleanse(u.userinfo, sizeof(u.userinfo));

    v = json_object_get(webhook, "format");
    in->format = "json";

    if (v != NULL && !json_is_null(v)) {
        format = json_string_value(v);

        if (format == NULL) {
            return cd_field_error(err, 400, "invalid_type", "webhook.format",
                                  "webhook.format must be a string");
        }

        if (strcmp(format, "json") == 0) {
            in->format = "json";

        } else if (strcmp(format, "slack") == 0) {
            in->format = "slack";

        } else {
            return cd_field_error(err, 422, "invalid_webhook_format",
                                  "webhook.format", "webhook.format must be"
                                  " \"json\" or \"slack\"");
        }
    }

    /*
     * Last: it may resolve the name. The deliverer judges every address
     * again when it connects.
     */
    if (cd_outbound_check_url(&u, msg, sizeof(msg), &rule) != CD_OK) {
        in->url = NULL;
        return cd_field_error(err, 422, "upstream_not_allowed",
                              "webhook.url", "webhook.url %s (rule: %s)",
                              msg, rule);
    }

    return CD_OK;
}


int
cd_alert_rule_parse(json_t *body, cd_alert_rule_input_t *in,
    cd_field_error_t *err)
{
    json_t      *v;
    const char  *type;

    memset(in, 0, sizeof(cd_alert_rule_input_t));

    v = json_object_get(body, "type");

    if (v == NULL || json_is_null(v)) {
        return cd_field_error(err, 422, "missing_field", "type",
                              "type is required: budget_threshold, "
                              "spend_spike, error_rate or unpriced_model");
    }

    type = json_string_value(v);

    if (type == NULL) {
        return cd_field_error(err, 400, "invalid_type", "type",
                              "type must be a string");
    }

    in->type = cd_alert_rule_type_parse(type);

    if (in->type == NULL) {
        return cd_field_error(err, 422, "invalid_alert_type", "type",
                              "type must be budget_threshold, spend_spike, "
                              "error_rate or unpriced_model");
    }

    in->params = json_object();
    if (in->params == NULL) {
        return cd_field_error(err, 500, "out_of_memory", "params",
                              "out of memory");
    }

    if (cd_rule_params(in->type, json_object_get(body, "params"),
                       in->params, err) != CD_OK
        || cd_rule_webhook(json_object_get(body, "webhook"), in, err)
           != CD_OK)
    {
        json_decref(in->params);
        in->params = NULL;
        return CD_ERROR;
    }

    return CD_OK;
}


json_t *
cd_alert_slack_payload(json_t *alert)
{
    char        *text;
    json_t      *out;
    const char  *severity, *type, *message, *id;

    severity = json_string_value(json_object_get(alert, "severity"));
    type = json_string_value(json_object_get(alert, "type"));
    message = json_string_value(json_object_get(alert, "message"));
    id = json_string_value(json_object_get(alert, "id"));

    if (asprintf(&text, "[Spendpol %s] %s: %s (alert %s)",
                 severity ? severity : "alert", type ? type : "alert",
                 message ? message : "", id ? id : "?") < 0)
    {
        return NULL;
    }

    out = json_pack("{s:s}", "text", text);
    free(text);

    return out;
}


/* ---- responses -------------------------------------------------------- */

static json_t *
cd_alert_json(PGresult *res, int row)
{
    json_t  *obj, *details;

    details = json_loads(PQgetvalue(res, row, CD_ALERT_DETAILS), 0, NULL);
    if (details == NULL) {
        return NULL;
    }

    obj = json_object();
    if (obj == NULL) {
        json_decref(details);
        return NULL;
    }


    if (cd_json_set_column(obj, "id", res, row, CD_ALERT_ID)
        || cd_json_set_column(obj, "type", res, row, CD_ALERT_TYPE)
        || cd_json_set_column(obj, "state", res, row, CD_ALERT_STATE)
        || cd_json_set_column(obj, "severity", res, row, CD_ALERT_SEVERITY)
        || cd_json_set_column(obj, "message", res, row, CD_ALERT_MESSAGE)
        || json_object_set_new(obj, "details", details)
        || cd_json_set_column(obj, "dedupe_key", res, row, CD_ALERT_DEDUPE)
        || cd_json_set_column(obj, "created_at", res, row, CD_ALERT_CREATED)
        || cd_json_set_column(obj, "acknowledged_at", res, row,
                              CD_ALERT_ACKED_AT)
        || cd_json_set_column(obj, "acknowledged_by", res, row,
                              CD_ALERT_ACKED_BY))
    {
        json_decref(obj);
        return NULL;
    }


    return obj;
}


/* a filter value: absent is no filter; malformed is a 400 */
static int
cd_alert_filter(cd_request_t *r, const char *name, const char **value)
{
    *value = cd_query(r, name);

    if (*value == NULL) {
        return CD_OK;
    }

    if (strcmp(name, "state") == 0) {
        if (strcmp(*value, "open") != 0
            && strcmp(*value, "acknowledged") != 0)
        {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "state must be open "
                             "or acknowledged");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if ((*value)[0] == '\0' || strlen(*value) > 64
        || cd_validate_text(*value, 1, 64) != NULL)
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_filter",
                         name, "%s must be an alert type such as "
                         "unpriced_model", name);
        return CD_ERROR;
    }

    return CD_OK;
}


/* ---- routes ----------------------------------------------------------- */

void
cd_api_alerts_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_ALERT_COLUMNS, "alerts",
                           " AND ($4::text IS NULL OR type = $4)"
                           " AND ($5::text IS NULL OR state = $5)"),
        .default_limit = 50,
        .id_column = CD_ALERT_ID,
        .created_us_column = CD_ALERT_CREATED_US,
        .row_json = cd_alert_json,
        .filters = { "type", "state" },
        .filter = cd_alert_filter
    };

    cd_page_respond(r, &page);
}


static int
cd_alert_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_ALERT, "alert_not_found");
}


/*
 * the alert of the {id} of the path; NULL has answered (404, or the
 * statement's error)
 */
static PGresult *
cd_alert_find(cd_request_t *r, cd_db_conn_t *c)
{
    return cd_request_row(r, c, "SELECT " CD_ALERT_COLUMNS " FROM alerts"
                                " WHERE id = $1",
                          "alert_not_found", "id", "no alert %s");
}


void
cd_api_alerts_acknowledge(cd_request_t *r)
{
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_alert_id_param);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    params[1] = r->key_id;

    /* idempotent: an acknowledged alert keeps its first acknowledgement */
    res = cd_db_exec(c, "UPDATE alerts SET state = 'acknowledged',"
                        " acknowledged_at = clock_timestamp(),"
                        " acknowledged_by = $2"
                        " WHERE id = $1 AND state = 'open'", 2, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    PQclear(res);

    res = cd_alert_find(r, c);

    if (res != NULL) {
        json_t  *alert = cd_alert_json(res, 0);

        if (cd_request_commit_respond(r, c, 0, 200, alert) == CD_OK) {
            cd_log_info(CD_ALERTS_SUBJECT, "%s acknowledged by %s org=%s",
                        r->params[0], r->key_id, r->org_id);
        }
    }

    PQclear(res);
    cd_request_end(r, c);
}


/* GET /alerts/{id}: the alert and every webhook delivery attempt */
void
cd_api_alerts_get(cd_request_t *r)
{
    int            i;
    json_t        *alert, *deliveries, *item;
    PGresult      *res, *att;
    const char    *params[1], *v;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_alert_id_param);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    att = NULL;

    res = cd_alert_find(r, c);
    if (res == NULL) {
        goto done;
    }

    att = cd_db_exec(c, "SELECT rule_id, attempt, status_code, error, "
                        CD_SQL_TS("at") " FROM alert_deliveries"
                        " WHERE alert_id = $1 ORDER BY at, id",
                     1, params);
    if (att == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    alert = cd_alert_json(res, 0);
    deliveries = json_array();

    if (alert == NULL || deliveries == NULL
        || json_object_set_new(alert, "deliveries", deliveries) != 0)
    {
        json_decref(alert);
        cd_respond(r, 500, NULL);
        goto done;
    }

    for (i = 0; i < PQntuples(att); i++) {
        v = cd_db_value(att, i, 2);

        item = json_pack("{s:s, s:I, s:o, s:o, s:s}",
                         "rule_id", PQgetvalue(att, i, 0),
                         "attempt",
                         (json_int_t) strtoll(PQgetvalue(att, i, 1), NULL,
                                              10),
                         "status_code",
                         v ? json_integer(strtoll(v, NULL, 10))
                           : json_null(),
                         "error",
                         cd_db_value(att, i, 3)
                           ? json_string(cd_db_value(att, i, 3))
                           : json_null(),
                         "at", PQgetvalue(att, i, 4));

        if (item == NULL || json_array_append_new(deliveries, item) != 0) {
            json_decref(alert);
            cd_respond(r, 500, NULL);
            goto done;
        }
    }

    cd_respond(r, 200, alert);

done:

    PQclear(res);
    PQclear(att);
    cd_request_end(r, c);
}


/* ---- /alerts/rules ---------------------------------------------------- */

#define CD_RULE_COLUMNS                                                      \
    "id, type, params::text, webhook_url, webhook_format, "                  \
    CD_SQL_TS("created_at") ", " CD_SQL_US("created_at")

static const char  *cd_alert_rule_fields[] = {
    "type", "params", "webhook", NULL
};


static json_t *
cd_alert_rule_json(PGresult *res, int row)
{
    char        redacted[CD_URL_MAX + 64];
    json_t      *obj, *params, *webhook;
    const char  *url;

    params = json_loads(PQgetvalue(res, row, 2), 0, NULL);
    if (params == NULL) {
        return NULL;
    }

    url = cd_db_value(res, row, 3);

    if (url != NULL) {
        cd_url_redact(url, redacted, sizeof(redacted));
        webhook = json_pack("{s:s, s:s}", "url", redacted,
                            "format", PQgetvalue(res, row, 4));
    } else {
        webhook = json_null();
    }

    if (webhook == NULL) {
        json_decref(params);
        return NULL;
    }

    obj = json_pack("{s:s, s:s, s:o, s:o, s:s}",
                    "id", PQgetvalue(res, row, 0),
                    "type", PQgetvalue(res, row, 1),
                    "params", params,
                    "webhook", webhook,
                    "created_at", PQgetvalue(res, row, 5));

    return obj;
}


static int
cd_alert_rule_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_ALERT_RULE, "alert_rule_not_found");
}


void
cd_api_alert_rules_create(cd_request_t *r)
{
    char                   id[CD_ID_MAX], redacted[CD_URL_MAX + 64];
    char                  *params_text;
    json_t                *body, *rule;
    PGresult              *res;
    const char            *params[5];
    cd_db_conn_t          *c;
    cd_field_error_t       err;
    cd_alert_rule_input_t  in;

    body = cd_request_json(r, cd_alert_rule_fields);
    if (body == NULL) {
        return;
    }

    if (cd_alert_rule_parse(body, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    params_text = json_dumps(in.params, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(in.params);

    if (params_text == NULL
        || cd_random_id(CD_ALERT_RULE_ID_PREFIX, CD_RANDOM_ID_BYTES, id)
           != CD_OK)
    {
        free(params_text);
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "could not create the rule");
        json_decref(body);
        return;
    }

    params[0] = id;
    params[1] = in.type;
    params[2] = params_text;
    params[3] = in.url;
    params[4] = in.url ? in.format : NULL;

    c = cd_request_begin_create(r, NULL, NULL, "alert_rules", NULL,
                                r->app->config.max_alert_rules_per_org,
                                "SPENDPOL_MAX_ALERT_RULES_PER_ORG",
                                "alert rules");
    if (c == NULL) {
        free(params_text);
        json_decref(body);
        return;
    }

    res = cd_db_exec(c, "INSERT INTO alert_rules (id, org_id, type, params,"
                        " webhook_url, webhook_format) VALUES ($1,"
                        " current_setting('spendpol.org_id'), $2,"
                        " $3::jsonb, $4, $5) RETURNING " CD_RULE_COLUMNS,
                     5, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);

    } else {
        rule = cd_alert_rule_json(res, 0);

        if (cd_request_commit_respond(r, c, 0, 201, rule) == CD_OK) {
            if (in.url != NULL) {
                cd_url_redact(in.url, redacted, sizeof(redacted));
            }

            cd_log_info(CD_ALERTS_SUBJECT, "rule %s (%s) created org=%s "
                        "webhook=%s", id, in.type, r->org_id,
                        in.url ? redacted : "none");
        }
    }

    PQclear(res);
    free(params_text);
    cd_request_end(r, c);
    json_decref(body);
}


void
cd_api_alert_rules_list(cd_request_t *r)
{
    cd_list_respond(r, "SELECT " CD_RULE_COLUMNS " FROM alert_rules"
                       " ORDER BY created_at DESC, id DESC LIMIT 1000",
                    cd_alert_rule_json);
}


void
cd_api_alert_rules_delete(cd_request_t *r)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_alert_rule_id_param);
    if (c == NULL) {
        return;
    }

    res = cd_request_row(r, c, "DELETE FROM alert_rules WHERE id = $1"
                               " RETURNING id",
                         "alert_rule_not_found", "id", "no alert rule %s");

    if (res != NULL
        && cd_request_commit_respond(r, c, 0, 200,
                                     json_pack("{s:s, s:b}", "id",
                                               r->params[0], "deleted", 1))
           == CD_OK)
    {
        cd_log_info(CD_ALERTS_SUBJECT, "rule %s deleted org=%s",
                    r->params[0], r->org_id);
    }

    PQclear(res);
    cd_request_end(r, c);
}
