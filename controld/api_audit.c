/*
 * /audit-logs: the organisation's request events, newest first, keyset
 * paginated on (created_at, id) with an opaque cursor;
 * /audit-logs/summary: their requests and spend grouped (by prompt
 * template version), summed by PostgreSQL from the same rows; and
 * /audit-logs/export: every row of a window as CSV or JSON lines,
 * streamed from a cursor (docs/audit.md).
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

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


/*
 * The filters of the list and the export: the query arguments, and their
 * conditions with the statement's parameters named (the list's start at
 * $4, after its cursor and limit; the export's at $3, after from and to)
 */
#define CD_AUDIT_FILTER_NAMES                                                \
    "api_key_id", "provider", "model", "routed", "template_id",              \
    "template_version", "policy_action", "pii_type", "min_guard_score"

#define CD_AUDIT_FILTERS  9

#define CD_AUDIT_FILTERS_SQL(key, provider, model, routed, template,         \
                             version, action, pii, score)                    \
    " AND (" key "::text IS NULL OR api_key_id = " key ")"                   \
    " AND (" provider "::text IS NULL OR provider = " provider ")"           \
    " AND (" model "::text IS NULL OR model = " model                        \
    " OR requested_model = " model ")"                                       \
    " AND (" routed "::boolean IS NULL OR routed = " routed ")"              \
    " AND (" template "::uuid IS NULL OR template_id = " template ")"        \
    " AND (" version "::integer IS NULL"                                     \
    " OR template_version = " version ")"                                    \
    " AND (" action "::text IS NULL OR policy_action = " action ")"          \
    " AND (" pii "::text IS NULL OR " pii " = ANY(pii_types))"               \
    " AND (" score "::real IS NULL OR guard_score >= " score "::real)"


void
cd_api_audit_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_AUDIT_COLUMNS, "audit_logs",
                           CD_AUDIT_FILTERS_SQL("$4", "$5", "$6", "$7", "$8",
                                                "$9", "$10", "$11", "$12")),
        .default_limit = 50,
        .id_column = CD_AUDIT_ID,
        .created_us_column = CD_AUDIT_CREATED_US,
        .row_json = cd_audit_json,
        .filters = { CD_AUDIT_FILTER_NAMES },
        .filter = cd_audit_filter
    };

    cd_page_respond(r, &page);
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

    if (cd_query_time_text(r, "from", from, sizeof(from)) != CD_OK
        || cd_query_time_text(r, "to", to, sizeof(to)) != CD_OK)
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


/* ---- GET /audit-logs/export ------------------------------------------- */

/*
 * The export streams every matching row, newest first as the list, from
 * a server-side cursor in a read-only transaction of the tenant pool
 * (RLS as every route), FETCHed CD_EXPORT_FETCH rows at a time into a
 * chunked answer: memory holds one batch whatever the row count. The
 * format is docs/audit.md's (the contract with tools/spendpol-audit-verify
 * and the chain's GET /compliance/verify).
 */

#define CD_EXPORT_SUBJECT     "audit-export"
#define CD_EXPORT_FETCH       "1000"
#define CD_EXPORT_CURSOR      "cd_audit_export"

/* a timestamptz in UTC with microseconds: what the chain digests */
#define CD_EXPORT_SQL_TS(col)                                                \
    "to_char(" col " AT TIME ZONE 'UTC',"                                    \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* how a value is written in each format */
typedef enum {
    CD_EXPORT_TEXT = 0,     /* a string; neutralised in CSV */
    CD_EXPORT_NUMBER,       /* a decimal as PostgreSQL prints it */
    CD_EXPORT_BOOL,         /* "t" or "f": true or false */
    CD_EXPORT_STRING,       /* a timestamp, hex or a uuid: never a formula */
    CD_EXPORT_JSON          /* a JSON array's text */
} cd_export_kind_e;

typedef struct {
    const char         *name;
    const char         *sql;
    cd_export_kind_e    kind;
} cd_export_column_t;

static const cd_export_column_t  cd_export_columns[CD_EXPORT_COLUMNS] = {
    { "id", "id", CD_EXPORT_TEXT },
    { "org_id", "org_id", CD_EXPORT_TEXT },
    { "created_at", CD_EXPORT_SQL_TS("created_at"), CD_EXPORT_STRING },
    { "ingested_at", CD_EXPORT_SQL_TS("ingested_at"), CD_EXPORT_STRING },
    { "api_key_id", "api_key_id", CD_EXPORT_TEXT },
    { "provider", "provider", CD_EXPORT_TEXT },
    { "requested_model", "requested_model", CD_EXPORT_TEXT },
    { "model", "model", CD_EXPORT_TEXT },
    { "input_tokens", "input_tokens", CD_EXPORT_NUMBER },
    { "output_tokens", "output_tokens", CD_EXPORT_NUMBER },
    { "cached_tokens", "cached_tokens", CD_EXPORT_NUMBER },
    { "cache_write_tokens", "cache_write_tokens", CD_EXPORT_NUMBER },
    { "cost_nano", "cost_nano", CD_EXPORT_NUMBER },
    { "reserved_nano", "reserved_nano", CD_EXPORT_NUMBER },
    { "saved_nano", "saved_nano", CD_EXPORT_NUMBER },
    { "status", "status", CD_EXPORT_NUMBER },
    { "cache", "cache", CD_EXPORT_TEXT },
    { "stream", "stream", CD_EXPORT_BOOL },
    { "latency_ms", "latency_ms", CD_EXPORT_NUMBER },
    { "gateway_us", "gateway_us", CD_EXPORT_NUMBER },
    { "endpoint", "endpoint", CD_EXPORT_TEXT },
    { "department", "department", CD_EXPORT_TEXT },
    { "project", "project", CD_EXPORT_TEXT },
    { "agent_id", "agent_id", CD_EXPORT_TEXT },
    { "trace_id", "trace_id", CD_EXPORT_TEXT },
    { "span_id", "span_id", CD_EXPORT_TEXT },
    { "parent_id", "parent_id", CD_EXPORT_TEXT },
    { "warnings", "to_json(warnings)::text", CD_EXPORT_JSON },
    { "error_code", "error_code", CD_EXPORT_TEXT },
    { "node_id", "node_id", CD_EXPORT_TEXT },
    { "routed", "routed", CD_EXPORT_BOOL },
    { "route_rule", "route_rule", CD_EXPORT_TEXT },
    { "attempts", "attempts", CD_EXPORT_NUMBER },
    { "attempt_log", "attempt_log", CD_EXPORT_TEXT },
    { "route_note", "route_note", CD_EXPORT_TEXT },
    { "template_id", "template_id::text", CD_EXPORT_STRING },
    { "template_version", "template_version", CD_EXPORT_NUMBER },
    /* exactly 3 decimals, as the list and the chain read it */
    { "guard_score", "round(guard_score::numeric, 3)::text",
      CD_EXPORT_NUMBER },
    { "pii_types", "to_json(pii_types)::text", CD_EXPORT_JSON },
    { "policy_action", "policy_action", CD_EXPORT_TEXT },
    { "policy_ids", "to_json(policy_ids)::text", CD_EXPORT_JSON },
    { "policy_warnings", "to_json(policy_warnings)::text", CD_EXPORT_JSON },
    { "hallucination_score", "hallucination_score", CD_EXPORT_NUMBER },
    { "shadow_key_type", "shadow_key_type", CD_EXPORT_TEXT },
    { "shadow_key_fp", "shadow_key_fp", CD_EXPORT_TEXT },
    { "client_addr", "client_addr", CD_EXPORT_TEXT },
    /* the hash chain of migration 023 (docs/compliance.md) */
    { "chain_seq", "chain_seq", CD_EXPORT_NUMBER },
    { "prev_hash", "encode(prev_hash, 'hex')", CD_EXPORT_STRING },
    { "row_hash", "encode(row_hash, 'hex')", CD_EXPORT_STRING },
    { "subject_salt", "encode(subject_salt, 'hex')", CD_EXPORT_STRING },
    { "subject_digest", "encode(subject_digest, 'hex')", CD_EXPORT_STRING },
    { "erased_at", CD_EXPORT_SQL_TS("erased_at"), CD_EXPORT_STRING }
};


const char *
cd_export_column_name(size_t i)
{
    return i < CD_EXPORT_COLUMNS ? cd_export_columns[i].name : NULL;
}


void
cd_export_buf_free(cd_export_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


/* room for n more bytes */
static int
cd_export_reserve(cd_export_buf_t *b, size_t n)
{
    char    *grown;
    size_t   cap;

    if (b->len + n <= b->cap) {
        return CD_OK;
    }

    cap = b->cap ? b->cap : 4096;

    while (cap < b->len + n) {
        cap *= 2;
    }

    grown = realloc(b->data, cap);
    if (grown == NULL) {
        return CD_ERROR;
    }

    b->data = grown;
    b->cap = cap;

    return CD_OK;
}


static int
cd_export_add(cd_export_buf_t *b, const char *s, size_t n)
{
    if (cd_export_reserve(b, n) != CD_OK) {
        return CD_ERROR;
    }

    memcpy(b->data + b->len, s, n);
    b->len += n;

    return CD_OK;
}


/* a CSV cell: quoted, '"' doubled, a text that a spreadsheet would
   take for a formula behind one apostrophe */
static int
cd_export_csv_cell(cd_export_buf_t *b, const char *v, size_t n,
    cd_export_kind_e kind)
{
    char    *p;
    size_t   i;

    if (cd_export_reserve(b, 2 * n + 3) != CD_OK) {
        return CD_ERROR;
    }

    p = b->data + b->len;
    *p++ = '"';

    if (v != NULL && n > 0 && kind == CD_EXPORT_TEXT
        && memchr("=+-@\t\r'", v[0], 7) != NULL)
    {
        *p++ = '\'';
    }

    for (i = 0; v != NULL && i < n; i++) {
        if (v[i] == '"') {
            *p++ = '"';
        }

        *p++ = v[i];
    }

    *p++ = '"';
    b->len = p - b->data;

    return CD_OK;
}


/* a JSON string: '"' and '\\' escaped, and every control character */
static int
cd_export_json_string(cd_export_buf_t *b, const char *v, size_t n)
{
    char           *p;
    size_t          i;
    unsigned char   c;

    static const char  hex[] = "0123456789abcdef";

    if (cd_export_reserve(b, 6 * n + 2) != CD_OK) {
        return CD_ERROR;
    }

    p = b->data + b->len;
    *p++ = '"';

    for (i = 0; i < n; i++) {
        c = (unsigned char) v[i];

        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char) c;

        } else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else if (c == '\r') {
            *p++ = '\\';
            *p++ = 'r';

        } else if (c == '\t') {
            *p++ = '\\';
            *p++ = 't';

        } else if (c < 0x20) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];

        } else {
            *p++ = (char) c;
        }
    }

    *p++ = '"';
    b->len = p - b->data;

    return CD_OK;
}


int
cd_export_header(cd_export_buf_t *b, cd_export_format_e format)
{
    size_t  i;

    if (format != CD_EXPORT_CSV) {
        return CD_OK;
    }

    for (i = 0; i < CD_EXPORT_COLUMNS; i++) {
        if ((i > 0 && cd_export_add(b, ",", 1) != CD_OK)
            || cd_export_csv_cell(b, cd_export_columns[i].name,
                                  strlen(cd_export_columns[i].name),
                                  CD_EXPORT_STRING) != CD_OK)
        {
            return CD_ERROR;
        }
    }

    return cd_export_add(b, "\r\n", 2);
}


static int
cd_export_json_value(cd_export_buf_t *b, const cd_export_column_t *col,
    const char *v, size_t n)
{
    if (v == NULL) {
        return cd_export_add(b, "null", 4);
    }

    switch (col->kind) {

    case CD_EXPORT_NUMBER:
    case CD_EXPORT_JSON:
        return cd_export_add(b, v, n);

    case CD_EXPORT_BOOL:
        return v[0] == 't' ? cd_export_add(b, "true", 4)
                           : cd_export_add(b, "false", 5);

    default:
        return cd_export_json_string(b, v, n);
    }
}


int
cd_export_row(cd_export_buf_t *b, cd_export_format_e format,
    const char *const *values, const int *lengths)
{
    size_t                     i, n;
    const char                *v;
    const cd_export_column_t  *col;

    if (format == CD_EXPORT_JSONL && cd_export_add(b, "{", 1) != CD_OK) {
        return CD_ERROR;
    }

    for (i = 0; i < CD_EXPORT_COLUMNS; i++) {
        col = &cd_export_columns[i];
        v = values[i];
        n = v ? (size_t) lengths[i] : 0;

        if (i > 0 && cd_export_add(b, ",", 1) != CD_OK) {
            return CD_ERROR;
        }

        if (format == CD_EXPORT_CSV) {
            /* the words true and false, as in JSONL */
            if (v != NULL && col->kind == CD_EXPORT_BOOL) {
                v = v[0] == 't' ? "true" : "false";
                n = strlen(v);
            }

            if (cd_export_csv_cell(b, v, n, col->kind) != CD_OK) {
                return CD_ERROR;
            }

            continue;
        }

        /* the names are constants of ours: nothing to escape */
        if (cd_export_add(b, "\"", 1) != CD_OK
            || cd_export_add(b, col->name, strlen(col->name)) != CD_OK
            || cd_export_add(b, "\":", 2) != CD_OK
            || cd_export_json_value(b, col, v, n) != CD_OK)
        {
            return CD_ERROR;
        }
    }

    return format == CD_EXPORT_CSV ? cd_export_add(b, "\r\n", 2)
                                   : cd_export_add(b, "}\n", 2);
}


/* 20261201T000000Z, or ".123456" before the Z when not a whole second */
static void
cd_export_stamp(char *out, size_t len, int64_t us)
{
    int        frac;
    time_t     sec;
    struct tm  tm;

    sec = (time_t) (us / 1000000);
    frac = (int) (us % 1000000);

    if (gmtime_r(&sec, &tm) == NULL) {
        snprintf(out, len, "%lld", (long long) us);
        return;
    }

    if (frac == 0) {
        strftime(out, len, "%Y%m%dT%H%M%SZ", &tm);
        return;
    }

    strftime(out, len, "%Y%m%dT%H%M%S", &tm);
    snprintf(out + strlen(out), len - strlen(out), ".%06dZ", frac);
}


void
cd_export_filename(char *out, size_t len, const char *org, int64_t from_us,
    int64_t to_us, int64_t now_us, cd_export_format_e format)
{
    char    from[40], to[40], name[CD_ID_MAX];
    size_t  i;

    for (i = 0; org[i] != '\0' && i < sizeof(name) - 1; i++) {
        name[i] = (isalnum((unsigned char) org[i]) || org[i] == '_'
                   || org[i] == '-') ? org[i] : '_';
    }

    name[i] = '\0';

    if (from_us < 0) {
        snprintf(from, sizeof(from), "start");
    } else {
        cd_export_stamp(from, sizeof(from), from_us);
    }

    cd_export_stamp(to, sizeof(to), to_us < 0 ? now_us : to_us);

    snprintf(out, len, "audit-logs-%s-%s-%s.%s", name, from, to,
             format == CD_EXPORT_CSV ? "csv" : "jsonl");
}


/* one export, from the handler to the stream's end */
typedef struct {
    cd_app_t            *app;
    cd_db_conn_t        *conn;        /* NULL once the transaction ended */
    PGresult            *res;         /* the batch being written */
    int                  row;
    int                  nrows;
    cd_export_format_e   format;
    cd_export_buf_t      out;
    size_t               sent;        /* bytes of out already given */
    long long            rows;
    unsigned long long   bytes;
    int64_t              start_ms;
    unsigned             done:1;      /* the cursor is exhausted */
    unsigned             ended:1;     /* the last byte was given */
    unsigned             failed:1;    /* a database error cut it */
    char                 org_id[CD_ID_MAX];
} cd_audit_export_t;


/* rolls the read-only transaction back and gives the connection back */
static void
cd_audit_export_release(cd_audit_export_t *x)
{
    PQclear(x->res);
    x->res = NULL;

    if (x->conn != NULL) {
        cd_db_rollback(x->conn);
        cd_db_release(&x->app->tenant_db, x->conn);
        x->conn = NULL;
    }
}


/* the next batch into x->res; CD_ERROR when the statement failed */
static int
cd_audit_export_fetch(cd_audit_export_t *x)
{
    PGresult  *res;

    PQclear(x->res);
    x->res = NULL;
    x->row = 0;
    x->nrows = 0;

    res = cd_db_exec(x->conn, "FETCH " CD_EXPORT_FETCH " FROM "
                              CD_EXPORT_CURSOR, 0, NULL);
    if (res == NULL) {
        return CD_ERROR;
    }

    if (PQnfields(res) != CD_EXPORT_COLUMNS) {
        PQclear(res);
        return CD_ERROR;
    }

    x->res = res;
    x->nrows = PQntuples(res);

    /* the last batch: the connection is of no more use to the export */
    if (x->nrows == 0) {
        x->done = 1;
        cd_audit_export_release(x);
    }

    return CD_OK;
}


static int
cd_audit_export_format_row(cd_audit_export_t *x)
{
    int          i, lengths[CD_EXPORT_COLUMNS];
    const char  *values[CD_EXPORT_COLUMNS];

    for (i = 0; i < CD_EXPORT_COLUMNS; i++) {
        values[i] = cd_db_value(x->res, x->row, i);
        lengths[i] = PQgetlength(x->res, x->row, i);
    }

    x->row++;
    x->rows++;

    return cd_export_row(&x->out, x->format, values, lengths);
}


/*
 * A failure after the headers: the stream ends with a line no parser
 * takes for a whole record (an unterminated quoted cell, a JSON object
 * not closed) and then without the chunked terminator, so a client that
 * checks neither still cannot take the file for complete.
 */
static void
cd_audit_export_fail(cd_audit_export_t *x, const char *why)
{
    x->failed = 1;
    cd_audit_export_release(x);

    cd_log_warn(CD_EXPORT_SUBJECT, "export org=%s cut after %lld rows: %s",
                x->org_id, x->rows, why);

    x->out.len = 0;
    x->sent = 0;

    /* no memory for one byte: the cut connection alone says it */
    (void) cd_export_add(&x->out, x->format == CD_EXPORT_CSV ? "\"" : "{",
                         1);
}


static ssize_t
cd_audit_export_read(void *data, char *buf, size_t max)
{
    size_t              n, k;
    cd_audit_export_t  *x;

    x = data;
    n = 0;

    while (n < max) {
        if (x->sent < x->out.len) {
            k = x->out.len - x->sent;
            k = k < max - n ? k : max - n;
            memcpy(buf + n, x->out.data + x->sent, k);
            x->sent += k;
            n += k;
            continue;
        }

        x->out.len = 0;
        x->sent = 0;

        if (x->failed || x->done) {
            break;
        }

        if (x->row < x->nrows) {
            if (cd_audit_export_format_row(x) != CD_OK) {
                cd_audit_export_fail(x, "out of memory");
            }

            continue;
        }

        if (cd_audit_export_fetch(x) != CD_OK) {
            cd_audit_export_fail(x, "the database failed mid-stream (see "
                                 "the db line above)");
        }
    }

    if (n > 0) {
        x->bytes += n;
        return (ssize_t) n;
    }

    if (x->failed) {
        return CD_STREAM_ERROR;
    }

    x->ended = 1;

    return CD_STREAM_END;
}


static void
cd_audit_export_free(void *data)
{
    cd_audit_export_t  *x;

    x = data;

    cd_log(x->failed ? CD_LOG_WARN : CD_LOG_INFO, CD_EXPORT_SUBJECT,
           "export org=%s format=%s: %s, %lld rows, %llu bytes in %.1f s",
           x->org_id, x->format == CD_EXPORT_CSV ? "csv" : "jsonl",
           x->ended ? "complete"
                    : x->failed ? "cut by a database error"
                                : "stopped early (the client hung up or "
                                  "timed out)",
           x->rows, x->bytes,
           (double) (cd_clock_ms(CLOCK_MONOTONIC) - x->start_ms) / 1e3);

    cd_audit_export_release(x);
    cd_export_buf_free(&x->out);
    free(x);
}


/* the first query argument the export does not take, or NULL */
typedef struct {
    const char  *unknown;
} cd_audit_args_t;


static enum MHD_Result
cd_audit_export_arg(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
    size_t            i;
    cd_audit_args_t  *args;

    static const char  *known[] = { "format", "from", "to",
                                    CD_AUDIT_FILTER_NAMES };

    (void) kind;
    (void) value;
    args = cls;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (strcmp(key, known[i]) == 0) {
            return MHD_YES;
        }
    }

    args->unknown = key;

    return MHD_NO;
}


void
cd_api_audit_export(cd_request_t *r)
{
    int                  i;
    char                 from[CD_INT_TEXT], to[CD_INT_TEXT], sql[4096];
    char                 filename[128];
    size_t               used;
    int64_t              from_us, to_us;
    const char          *format, *params[2 + CD_AUDIT_FILTERS];
    cd_db_conn_t        *c;
    cd_audit_args_t      args;
    cd_audit_export_t   *x;
    cd_export_format_e   fmt;

    static const char  *filters[] = { CD_AUDIT_FILTER_NAMES };

    args.unknown = NULL;
    MHD_get_connection_values(r->connection, MHD_GET_ARGUMENT_KIND,
                              cd_audit_export_arg, &args);

    if (args.unknown != NULL) {
        cd_respond_error(r, 400, "invalid_request_error", "unknown_field",
                         args.unknown, "unknown query parameter \"%.64s\": "
                         "the export takes format, from, to and the "
                         "filters of GET /audit-logs", args.unknown);
        return;
    }

    format = cd_query(r, "format");

    if (format == NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "format", "format is required: csv or jsonl");
        return;
    }

    if (strcmp(format, "csv") == 0) {
        fmt = CD_EXPORT_CSV;

    } else if (strcmp(format, "jsonl") == 0) {
        fmt = CD_EXPORT_JSONL;

    } else {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "format", "format must be csv or jsonl");
        return;
    }

    if (cd_query_time_text(r, "from", from, sizeof(from)) != CD_OK
        || cd_query_time_text(r, "to", to, sizeof(to)) != CD_OK)
    {
        return;
    }

    from_us = from[0] ? strtoll(from, NULL, 10) : -1;
    to_us = to[0] ? strtoll(to, NULL, 10) : -1;

    if (from_us >= 0 && to_us >= 0 && to_us <= from_us) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_range",
                         "from", "from must be before to (from is "
                         "inclusive, to exclusive)");
        return;
    }

    params[0] = from[0] ? from : NULL;
    params[1] = to[0] ? to : NULL;

    for (i = 0; i < CD_AUDIT_FILTERS; i++) {
        if (cd_audit_filter(r, filters[i], &params[2 + i]) != CD_OK) {
            return;
        }
    }

    used = (size_t) snprintf(sql, sizeof(sql), "DECLARE " CD_EXPORT_CURSOR
                             " NO SCROLL CURSOR FOR SELECT");

    for (i = 0; i < CD_EXPORT_COLUMNS && used < sizeof(sql); i++) {
        used += (size_t) snprintf(sql + used, sizeof(sql) - used, "%s %s",
                                  i ? "," : "", cd_export_columns[i].sql);
    }

    if (used < sizeof(sql)) {
        used += (size_t) snprintf(sql + used, sizeof(sql) - used,
                   " FROM audit_logs"
                   " WHERE ($1::bigint IS NULL OR created_at >="
                   " 'epoch'::timestamptz + $1::bigint"
                   " * interval '1 microsecond')"
                   " AND ($2::bigint IS NULL OR created_at <"
                   " 'epoch'::timestamptz + $2::bigint"
                   " * interval '1 microsecond')"
                   CD_AUDIT_FILTERS_SQL("$3", "$4", "$5", "$6", "$7", "$8",
                                        "$9", "$10", "$11")
                   " ORDER BY created_at DESC, id DESC");
    }

    if (used >= sizeof(sql)) {
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "internal error");
        return;
    }

    if (cd_stream_slot(r, "audit log exports") != CD_OK) {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* the cursor's snapshot is the export's one consistent cut */
    if (cd_db_command(c, "SET TRANSACTION READ ONLY", 0, NULL) != CD_OK
        || cd_db_command(c, sql, 2 + CD_AUDIT_FILTERS, params) != CD_OK)
    {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    x = calloc(1, sizeof(cd_audit_export_t));
    if (x == NULL) {
        cd_request_end(r, c);
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "out of memory");
        return;
    }

    x->app = r->app;
    x->conn = c;
    x->format = fmt;
    x->start_ms = cd_clock_ms(CLOCK_MONOTONIC);
    snprintf(x->org_id, sizeof(x->org_id), "%s", r->org_id);

    /*
     * The header and the first batch before the 200: a query that fails
     * at once is answered as an error, not as an empty file
     */
    if (cd_export_header(&x->out, fmt) != CD_OK
        || cd_audit_export_fetch(x) != CD_OK)
    {
        if (x->conn != NULL) {
            cd_respond_statement_error(r, x->conn);
        } else {
            cd_respond_db_error(r);
        }

        cd_audit_export_release(x);
        cd_export_buf_free(&x->out);
        free(x);
        return;
    }

    cd_export_filename(filename, sizeof(filename), r->org_id, from_us,
                       to_us, cd_clock_ms(CLOCK_REALTIME) * 1000, fmt);

    cd_respond_stream(r, fmt == CD_EXPORT_CSV ? "text/csv; charset=utf-8"
                                              : "application/x-ndjson",
                      filename, cd_audit_export_read, cd_audit_export_free,
                      x);
}
