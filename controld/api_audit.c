/*
 * /audit-logs: the organisation's request events, newest first, keyset
 * paginated on (created_at, id) with an opaque cursor; and
 * /audit-logs/summary: their requests and spend grouped (by prompt
 * template version), summed by PostgreSQL from the same rows.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_journal.h"
#include "sp_pii.h"


#define CD_AUDIT_COLUMNS                                                     \
    "id, " CD_SQL_TS("created_at") ", api_key_id, provider,"                 \
    " requested_model, model, input_tokens, output_tokens, cached_tokens,"   \
    " cache_write_tokens, cost_nano, status, cache, stream, latency_ms,"     \
    " gateway_us, department, project, agent_id, trace_id, span_id,"         \
    " parent_id, to_json(warnings)::text, error_code, "                      \
    CD_SQL_US("created_at") ", endpoint, saved_nano, routed, route_rule,"  \
    " attempts, attempt_log, route_note, template_id, template_version,"   \
    " round(guard_score::numeric, 3)::text, to_json(pii_types)::text,"       \
    " policy_action, to_json(policy_ids)::text,"                             \
    " to_json(policy_warnings)::text, hallucination_score, shadow_key_type," \
    " shadow_key_fp, client_addr"

enum {
    CD_AUDIT_ID = 0, CD_AUDIT_CREATED, CD_AUDIT_KEY, CD_AUDIT_PROVIDER,
    CD_AUDIT_REQUESTED_MODEL, CD_AUDIT_MODEL, CD_AUDIT_INPUT,
    CD_AUDIT_OUTPUT, CD_AUDIT_CACHED, CD_AUDIT_CACHE_WRITE, CD_AUDIT_COST,
    CD_AUDIT_STATUS, CD_AUDIT_CACHE, CD_AUDIT_STREAM, CD_AUDIT_LATENCY,
    CD_AUDIT_GATEWAY, CD_AUDIT_DEPARTMENT, CD_AUDIT_PROJECT, CD_AUDIT_AGENT,
    CD_AUDIT_TRACE, CD_AUDIT_SPAN, CD_AUDIT_PARENT, CD_AUDIT_WARNINGS,
    CD_AUDIT_ERROR, CD_AUDIT_CREATED_US, CD_AUDIT_ENDPOINT, CD_AUDIT_SAVED,
    CD_AUDIT_ROUTED, CD_AUDIT_ROUTE_RULE, CD_AUDIT_ATTEMPTS,
    CD_AUDIT_ATTEMPT_LOG, CD_AUDIT_ROUTE_NOTE, CD_AUDIT_TEMPLATE_ID,
    CD_AUDIT_TEMPLATE_VERSION, CD_AUDIT_GUARD_SCORE, CD_AUDIT_PII_TYPES,
    CD_AUDIT_POLICY_ACTION, CD_AUDIT_POLICY_IDS, CD_AUDIT_POLICY_WARNINGS,
    CD_AUDIT_HALLUCINATION, CD_AUDIT_SHADOW_KEY_TYPE, CD_AUDIT_SHADOW_KEY_FP,
    CD_AUDIT_CLIENT_ADDR
};

#define CD_AUDIT_VERSION_MAX  2147483647   /* template_version, an integer */


static json_int_t
cd_audit_int(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col)
           ? 0 : (json_int_t) strtoll(PQgetvalue(res, row, col), NULL, 10);
}


/* an integer column, null when NULL */
static int
cd_audit_set_int_or_null(json_t *obj, const char *key, PGresult *res,
    int row, int col)
{
    return json_object_set_new(obj, key,
                               PQgetisnull(res, row, col)
                               ? json_null()
                               : json_integer(cd_audit_int(res, row, col)));
}


/* a text[] column read as to_json(...)::text: a JSON array, [] for NULL */
static json_t *
cd_audit_array(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return json_array();
    }

    return json_loads(PQgetvalue(res, row, col), 0, NULL);
}


static json_t *
cd_audit_json(PGresult *res, int row)
{
    char     cost[SP_MONEY_STR_LEN], saved[SP_MONEY_STR_LEN];
    json_t  *obj, *warnings;
    int64_t  nano;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    nano = (int64_t) cd_audit_int(res, row, CD_AUDIT_COST);
    sp_money_format(nano, cost);
    sp_money_format((int64_t) cd_audit_int(res, row, CD_AUDIT_SAVED), saved);

    warnings = json_loads(PQgetvalue(res, row, CD_AUDIT_WARNINGS), 0, NULL);

#define cd_audit_num(key, col)                                               \
    json_object_set_new(obj, key, json_integer(cd_audit_int(res, row, col)))

    if (cd_json_set_column(obj, "id", res, row, CD_AUDIT_ID)
        || cd_json_set_column(obj, "created_at", res, row, CD_AUDIT_CREATED)
        || cd_json_set_column(obj, "api_key_id", res, row, CD_AUDIT_KEY)
        || cd_json_set_column(obj, "provider", res, row, CD_AUDIT_PROVIDER)
        || cd_json_set_column(obj, "requested_model", res, row,
                              CD_AUDIT_REQUESTED_MODEL)
        || cd_json_set_column(obj, "model", res, row, CD_AUDIT_MODEL)
        || cd_audit_num("input_tokens", CD_AUDIT_INPUT)
        || cd_audit_num("output_tokens", CD_AUDIT_OUTPUT)
        || cd_audit_num("cached_tokens", CD_AUDIT_CACHED)
        || cd_audit_num("cache_write_tokens", CD_AUDIT_CACHE_WRITE)
        || json_object_set_new(obj, "cost_usd", json_string(cost))
        || cd_audit_num("cost_nano", CD_AUDIT_COST)
        || cd_audit_num("status", CD_AUDIT_STATUS)
        || cd_json_set_column(obj, "cache", res, row, CD_AUDIT_CACHE)
        || json_object_set_new(obj, "saved_usd", json_string(saved))
        || json_object_set_new(obj, "stream",
               json_boolean(cd_db_bool(res, row, CD_AUDIT_STREAM)))
        || cd_audit_num("latency_ms", CD_AUDIT_LATENCY)
        || cd_audit_num("gateway_latency_us", CD_AUDIT_GATEWAY)
        || cd_json_set_column(obj, "department", res, row, CD_AUDIT_DEPARTMENT)
        || cd_json_set_column(obj, "project", res, row, CD_AUDIT_PROJECT)
        || cd_json_set_column(obj, "agent_id", res, row, CD_AUDIT_AGENT)
        || cd_json_set_column(obj, "trace_id", res, row, CD_AUDIT_TRACE)
        || cd_json_set_column(obj, "span_id", res, row, CD_AUDIT_SPAN)
        || cd_json_set_column(obj, "parent_id", res, row, CD_AUDIT_PARENT)
        || warnings == NULL
        || json_object_set_new(obj, "warnings", warnings)
        || cd_json_set_column(obj, "error_code", res, row, CD_AUDIT_ERROR)
        || cd_json_set_column(obj, "endpoint", res, row, CD_AUDIT_ENDPOINT)
        || json_object_set_new(obj, "routed",
               json_boolean(cd_db_bool(res, row, CD_AUDIT_ROUTED)))
        || cd_json_set_column(obj, "route_rule", res, row,
                              CD_AUDIT_ROUTE_RULE)
        || cd_audit_num("attempts", CD_AUDIT_ATTEMPTS)
        || cd_json_set_column(obj, "attempt_log", res, row,
                              CD_AUDIT_ATTEMPT_LOG)
        || cd_json_set_column(obj, "route_note", res, row,
                              CD_AUDIT_ROUTE_NOTE)
        || cd_json_set_column(obj, "template_id", res, row,
                              CD_AUDIT_TEMPLATE_ID)
        || cd_audit_set_int_or_null(obj, "template_version", res, row,
                                    CD_AUDIT_TEMPLATE_VERSION)
        /* 0..1, rounded to 3 decimals by the query (a real is not) */
        || json_object_set_new(obj, "guard_score", json_real(
               PQgetisnull(res, row, CD_AUDIT_GUARD_SCORE)
               ? 0.0 : strtod(PQgetvalue(res, row, CD_AUDIT_GUARD_SCORE),
                              NULL)))
        /* json_object_set_new() fails on NULL, and takes the reference */
        || json_object_set_new(obj, "pii_types",
               cd_audit_array(res, row, CD_AUDIT_PII_TYPES))
        || cd_json_set_column(obj, "policy_action", res, row,
                              CD_AUDIT_POLICY_ACTION)
        || json_object_set_new(obj, "policy_ids",
               cd_audit_array(res, row, CD_AUDIT_POLICY_IDS))
        || json_object_set_new(obj, "policy_warnings",
               cd_audit_array(res, row, CD_AUDIT_POLICY_WARNINGS))
        || cd_audit_set_int_or_null(obj, "hallucination_score", res, row,
                                    CD_AUDIT_HALLUCINATION)
        || cd_json_set_column(obj, "shadow_key_type", res, row,
                              CD_AUDIT_SHADOW_KEY_TYPE)
        || cd_json_set_column(obj, "shadow_key_fp", res, row,
                              CD_AUDIT_SHADOW_KEY_FP)
        || cd_json_set_column(obj, "client_addr", res, row,
                              CD_AUDIT_CLIENT_ADDR))
    {
        json_decref(obj);
        return NULL;
    }

#undef cd_audit_num

    return obj;
}


/* 1..CD_AUDIT_VERSION_MAX in decimal digits, nothing else */
static int
cd_audit_version_valid(const char *s)
{
    size_t   i;
    int64_t  v;

    v = 0;

    for (i = 0; s[i] >= '0' && s[i] <= '9' && i < 10; i++) {
        v = v * 10 + (s[i] - '0');
    }

    return i > 0 && s[i] == '\0' && v >= 1 && v <= CD_AUDIT_VERSION_MAX;
}


/* "0", "1", "0.5", "0.125", "1.000": 0 to 1, at most 3 decimals */
static int
cd_audit_score_valid(const char *s)
{
    size_t  i;

    if ((s[0] != '0' && s[0] != '1') || (s[1] != '\0' && s[1] != '.')) {
        return 0;
    }

    if (s[1] == '\0') {
        return 1;
    }

    for (i = 2; s[i] >= '0' && s[i] <= '9'; i++) {
        /* 1.000 and no more than 1 */
        if (s[0] == '1' && s[i] != '0') {
            return 0;
        }
    }

    return i > 2 && i <= 5 && s[i] == '\0';
}


/*
 * A filter value: absent is no filter; a bad value is a 400 naming the
 * filter. routed is true or false, template_id a UUID, template_version
 * a version number, policy_action a decision, pii_type an entity type,
 * min_guard_score 0 to 1; the others non-empty UTF-8 strings.
 */
static int
cd_audit_filter(cd_request_t *r, const char *name, const char **value)
{
    uint8_t  uuid[16];

    *value = cd_query(r, name);

    if (*value == NULL) {
        return CD_OK;
    }

    if (strcmp(name, "routed") == 0) {
        if (strcmp(*value, "true") != 0 && strcmp(*value, "false") != 0) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "routed must be true "
                             "or false");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "template_id") == 0) {
        if (cd_uuid_parse(*value, uuid) != CD_OK) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "template_id must be a "
                             "template's UUID (8-4-4-4-12 hex digits)");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "template_version") == 0) {
        if (!cd_audit_version_valid(*value)) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "template_version must "
                             "be a version number, 1 to %d",
                             CD_AUDIT_VERSION_MAX);
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "policy_action") == 0) {
        if (strcmp(*value, "log") != 0 && strcmp(*value, "warn") != 0
            && strcmp(*value, "redact") != 0 && strcmp(*value, "block") != 0)
        {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "policy_action must be "
                             "log, warn, redact or block");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "pii_type") == 0) {
        if (sp_pii_type(*value, strlen(*value)) < 0) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "pii_type must be an "
                             "entity type: email, phone, ssn, card, iban, "
                             "ipv4, ipv6, api_key, jwt, private_key or dob");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "min_guard_score") == 0) {
        if (!cd_audit_score_valid(*value)) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "min_guard_score must "
                             "be a decimal from 0 to 1 with at most 3 "
                             "decimals, e.g. 0.5");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if ((*value)[0] == '\0' || strlen(*value) > SP_FIELD_LEN
        || !cd_utf8_valid(*value, strlen(*value)))
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_filter",
                         name, "%s must be a non-empty UTF-8 string of at most "
                         "%d bytes", name, SP_FIELD_LEN);
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_api_audit_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_AUDIT_COLUMNS, "audit_logs",
                           " AND ($4::text IS NULL OR api_key_id = $4)"
                           " AND ($5::text IS NULL OR provider = $5)"
                           " AND ($6::text IS NULL OR model = $6"
                           " OR requested_model = $6)"
                           " AND ($7::boolean IS NULL OR routed = $7)"
                           " AND ($8::uuid IS NULL OR template_id = $8)"
                           " AND ($9::integer IS NULL"
                           " OR template_version = $9)"
                           " AND ($10::text IS NULL OR policy_action = $10)"
                           " AND ($11::text IS NULL OR $11 = ANY(pii_types))"
                           " AND ($12::real IS NULL"
                           " OR guard_score >= $12::real)"),
        .default_limit = 50,
        .id_column = CD_AUDIT_ID,
        .created_us_column = CD_AUDIT_CREATED_US,
        .row_json = cd_audit_json,
        .filters = { "api_key_id", "provider", "model", "routed",
                     "template_id", "template_version", "policy_action",
                     "pii_type", "min_guard_score" },
        .filter = cd_audit_filter
    };

    cd_page_respond(r, &page);
}


/* ?from= and ?to=: absent is no bound; else an RFC 3339 date-time */
static int
cd_audit_time(cd_request_t *r, const char *name, char *us, size_t len)
{
    int64_t      t;
    const char  *value;

    us[0] = '\0';
    value = cd_query(r, name);

    if (value == NULL) {
        return CD_OK;
    }

    if (cd_rfc3339_parse(value, &t) != CD_OK) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_time",
                         name, "%s must be an RFC 3339 date-time, e.g. "
                         "\"2026-12-01T00:00:00Z\"", name);
        return CD_ERROR;
    }

    snprintf(us, len, "%lld", (long long) t);

    return CD_OK;
}


static json_t *
cd_audit_summary_json(PGresult *res, int row)
{
    char     cost[SP_MONEY_STR_LEN];
    json_t  *obj;
    int64_t  nano;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    nano = (int64_t) cd_audit_int(res, row, 3);
    sp_money_format(nano, cost);

    if (cd_json_set_column(obj, "template_id", res, row, 0)
        || cd_audit_set_int_or_null(obj, "template_version", res, row, 1)
        || json_object_set_new(obj, "requests",
                               json_integer(cd_audit_int(res, row, 2)))
        || json_object_set_new(obj, "cost_nano", json_integer(nano))
        || json_object_set_new(obj, "cost_usd", json_string(cost)))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


void
cd_api_audit_summary(cd_request_t *r)
{
    int            n;
    char           from[CD_INT_TEXT], to[CD_INT_TEXT];
    json_t        *data, *json;
    PGresult      *res;
    const char    *group_by, *params[2];
    cd_db_conn_t  *c;

    group_by = cd_query(r, "group_by");

    if (group_by == NULL || strcmp(group_by, "template") != 0) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_group_by",
                         "group_by", "group_by must be \"template\" (spend "
                         "by prompt template version)");
        return;
    }

    if (cd_audit_time(r, "from", from, sizeof(from)) != CD_OK
        || cd_audit_time(r, "to", to, sizeof(to)) != CD_OK)
    {
        return;
    }

    if (from[0] && to[0] && strtoll(from, NULL, 10) > strtoll(to, NULL, 10)) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_range",
                         "from", "from must not be after to");
        return;
    }

    params[0] = from[0] ? from : NULL;
    params[1] = to[0] ? to : NULL;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /*
     * The templated rows only (a request without a template is in no
     * group), by the partial index of migration 020; RLS supplies the
     * organisation. The sums are exact: numeric, cast back to bigint
     * (more than 9.2e9 USD in one group fails the statement rather than
     * round).
     */
    res = cd_db_exec(c, "SELECT template_id, template_version, count(*),"
                        " sum(cost_nano)::bigint"
                        " FROM audit_logs"
                        " WHERE template_id IS NOT NULL"
                        " AND ($1::bigint IS NULL OR created_at >="
                        " 'epoch'::timestamptz"
                        " + $1::bigint * interval '1 microsecond')"
                        " AND ($2::bigint IS NULL OR created_at <"
                        " 'epoch'::timestamptz"
                        " + $2::bigint * interval '1 microsecond')"
                        " GROUP BY template_id, template_version"
                        " ORDER BY 4 DESC, 1, 2",
                     2, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    n = PQntuples(res);
    data = cd_rows_json(res, n, cd_audit_summary_json);
    json = data ? json_pack("{s:s, s:o}", "group_by", "template", "data",
                            data)
                : NULL;

    PQclear(res);
    cd_request_end(r, c);

    if (json == NULL) {
        cd_respond_db_error(r);
        return;
    }

    cd_respond(r, 200, json);
}
