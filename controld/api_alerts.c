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

#include "controld.h"


#define CD_ALERTS_SUBJECT   "alerts"
#define CD_ALERT_ID_HEX     24

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

int
cd_alert_id_valid(const char *id)
{
    size_t  i, len;

    len = strlen(id);

    if (len != sizeof(CD_ALERT_ID_PREFIX) - 1 + CD_ALERT_ID_HEX
        || strncmp(id, CD_ALERT_ID_PREFIX, sizeof(CD_ALERT_ID_PREFIX) - 1)
           != 0)
    {
        return 0;
    }

    for (i = sizeof(CD_ALERT_ID_PREFIX) - 1; i < len; i++) {
        if (!((id[i] >= '0' && id[i] <= '9')
              || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


int
cd_warnings_has(const char *warnings, const char *name)
{
    size_t       len, n;
    const char  *p;

    len = strlen(name);

    if (len == 0) {
        return 0;
    }

    for (p = warnings; *p != '\0'; p += n + (p[n] == ',')) {
        n = strcspn(p, ",");

        if (n == len && memcmp(p, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


int
cd_alert_unpriced_key(const char *provider, const char *model, char *out,
    size_t outlen)
{
    int  n;

    n = snprintf(out, outlen, "unpriced_model:%s:%s", provider, model);

    return n < 0 || (size_t) n >= outlen ? CD_ERROR : CD_OK;
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

#define cd_alert_str(key, col)                                               \
    cd_json_set_str(obj, key, cd_db_value(res, row, col))

    if (cd_alert_str("id", CD_ALERT_ID)
        || cd_alert_str("type", CD_ALERT_TYPE)
        || cd_alert_str("state", CD_ALERT_STATE)
        || cd_alert_str("severity", CD_ALERT_SEVERITY)
        || cd_alert_str("message", CD_ALERT_MESSAGE)
        || json_object_set_new(obj, "details", details)
        || cd_alert_str("dedupe_key", CD_ALERT_DEDUPE)
        || cd_alert_str("created_at", CD_ALERT_CREATED)
        || cd_alert_str("acknowledged_at", CD_ALERT_ACKED_AT)
        || cd_alert_str("acknowledged_by", CD_ALERT_ACKED_BY))
    {
        json_decref(obj);
        return NULL;
    }

#undef cd_alert_str

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
    int            i, n;
    long           limit;
    char           id[CD_ID_MAX], us_text[32], limit_text[32];
    char           cursor[CD_CURSOR_MAX + 1];
    json_t        *data, *item, *list;
    int64_t        us;
    PGresult      *res;
    const char    *cursor_in, *params[5];
    cd_db_conn_t  *c;

    if (cd_query_limit(r, 50, 1000, &limit) != CD_OK
        || cd_alert_filter(r, "type", &params[2]) != CD_OK
        || cd_alert_filter(r, "state", &params[3]) != CD_OK)
    {
        return;
    }

    params[0] = NULL;
    params[1] = NULL;
    cursor_in = cd_query(r, "cursor");

    if (cursor_in != NULL) {
        if (cd_cursor_decode(cursor_in, &us, id, sizeof(id)) != CD_OK) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_cursor", "cursor", "cursor must be a "
                             "next_cursor value from a previous page");
            return;
        }

        snprintf(us_text, sizeof(us_text), "%lld", (long long) us);
        params[0] = us_text;
        params[1] = id;
    }

    snprintf(limit_text, sizeof(limit_text), "%ld", limit + 1);
    params[4] = limit_text;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* no org predicate on purpose: row-level security is the fence */
    res = cd_db_exec(c, "SELECT " CD_ALERT_COLUMNS " FROM alerts"
                        " WHERE ($1::bigint IS NULL OR (created_at, id) <"
                        " ('epoch'::timestamptz + $1::bigint"
                        " * interval '1 microsecond', $2::text))"
                        " AND ($3::text IS NULL OR type = $3)"
                        " AND ($4::text IS NULL OR state = $4)"
                        " ORDER BY created_at DESC, id DESC LIMIT $5",
                     5, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    data = json_array();
    n = PQntuples(res);

    for (i = 0; data != NULL && i < n && i < limit; i++) {
        item = cd_alert_json(res, i);

        if (item == NULL || json_array_append_new(data, item) != 0) {
            json_decref(data);
            data = NULL;
        }
    }

    list = NULL;

    if (data != NULL) {
        list = json_pack("{s:o, s:n}", "data", data, "next_cursor");

        if (list != NULL && n > limit
            && cd_cursor_encode(strtoll(PQgetvalue(res, limit - 1,
                                                   CD_ALERT_CREATED_US),
                                        NULL, 10),
                                PQgetvalue(res, limit - 1, CD_ALERT_ID),
                                cursor, sizeof(cursor)) == CD_OK)
        {
            json_object_set_new(list, "next_cursor", json_string(cursor));
        }
    }

    PQclear(res);
    cd_request_end(r, c);
    cd_respond(r, 200, list);
}


void
cd_api_alerts_acknowledge(cd_request_t *r)
{
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (!cd_alert_id_valid(r->params[0])) {
        cd_respond_error(r, 404, "not_found_error", "alert_not_found", "id",
                         "no alert %.64s (alert ids are alr_ followed by "
                         "24 hex characters)", r->params[0]);
        return;
    }

    c = cd_request_begin(r);
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

    res = cd_db_exec(c, "SELECT " CD_ALERT_COLUMNS " FROM alerts"
                        " WHERE id = $1", 1, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);

    } else if (PQntuples(res) == 0) {
        cd_respond_error(r, 404, "not_found_error", "alert_not_found", "id",
                         "no alert %s", r->params[0]);

    } else {
        json_t  *alert = cd_alert_json(res, 0);

        if (cd_request_commit(r, c) == CD_OK) {
            cd_log_info(CD_ALERTS_SUBJECT, "%s acknowledged by %s org=%s",
                        r->params[0], r->key_id, r->org_id);
            cd_respond(r, 200, alert);

        } else {
            json_decref(alert);
        }
    }

    PQclear(res);
    cd_request_end(r, c);
}
