/*
 * /audit-logs: the organisation's request events, newest first, keyset
 * paginated on (created_at, id) with an opaque cursor.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_journal.h"


#define CD_AUDIT_COLUMNS                                                     \
    "id, " CD_SQL_TS("created_at") ", api_key_id, provider,"                 \
    " requested_model, model, input_tokens, output_tokens, cached_tokens,"   \
    " cache_write_tokens, cost_nano, status, cache, stream, latency_ms,"     \
    " gateway_us, department, project, agent_id, trace_id, span_id,"         \
    " parent_id, to_json(warnings)::text, error_code, "                      \
    CD_SQL_US("created_at") ", endpoint, saved_nano"

enum {
    CD_AUDIT_ID = 0, CD_AUDIT_CREATED, CD_AUDIT_KEY, CD_AUDIT_PROVIDER,
    CD_AUDIT_REQUESTED_MODEL, CD_AUDIT_MODEL, CD_AUDIT_INPUT,
    CD_AUDIT_OUTPUT, CD_AUDIT_CACHED, CD_AUDIT_CACHE_WRITE, CD_AUDIT_COST,
    CD_AUDIT_STATUS, CD_AUDIT_CACHE, CD_AUDIT_STREAM, CD_AUDIT_LATENCY,
    CD_AUDIT_GATEWAY, CD_AUDIT_DEPARTMENT, CD_AUDIT_PROJECT, CD_AUDIT_AGENT,
    CD_AUDIT_TRACE, CD_AUDIT_SPAN, CD_AUDIT_PARENT, CD_AUDIT_WARNINGS,
    CD_AUDIT_ERROR, CD_AUDIT_CREATED_US, CD_AUDIT_ENDPOINT, CD_AUDIT_SAVED
};


static json_int_t
cd_audit_int(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col)
           ? 0 : (json_int_t) strtoll(PQgetvalue(res, row, col), NULL, 10);
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
        || cd_json_set_column(obj, "endpoint", res, row, CD_AUDIT_ENDPOINT))
    {
        json_decref(obj);
        return NULL;
    }

#undef cd_audit_num

    return obj;
}


/* a filter value: absent is no filter; empty or oversized is a 400 */
static int
cd_audit_filter(cd_request_t *r, const char *name, const char **value)
{
    *value = cd_query(r, name);

    if (*value != NULL
        && ((*value)[0] == '\0' || strlen(*value) > SP_FIELD_LEN
            || !cd_utf8_valid(*value, strlen(*value))))
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
                           " OR requested_model = $6)"),
        .default_limit = 50,
        .id_column = CD_AUDIT_ID,
        .created_us_column = CD_AUDIT_CREATED_US,
        .row_json = cd_audit_json,
        .filters = { "api_key_id", "provider", "model" },
        .filter = cd_audit_filter
    };

    cd_page_respond(r, &page);
}
