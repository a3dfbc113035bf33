/*
 * /budgets: what an organisation, or one key, agent, department or
 * project of it, may spend per period, optionally narrowed to a provider
 * or model. The proxy enforces them from the snapshot (reserving before
 * admission) and the spend file; journal ingest counts the spend
 * (budget_spend) in the batch's own transaction. Periods are computed by
 * PostgreSQL in the budget's time zone (spendpol_period_start/_end).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_snapshot.h"


#define CD_BUDGETS_SUBJECT   "budgets"
#define CD_NANO_PER_USD      1000000000LL

#define CD_BUDGET_PERIOD_START                                               \
    "spendpol_period_start(period, timezone, created_at, now())"
#define CD_BUDGET_PERIOD_END                                                 \
    "spendpol_period_end(period, timezone, now())"

#define CD_BUDGET_COLUMNS                                                    \
    "id, name, scope_type, scope_value, provider, model, limit_nano,"        \
    " period, timezone, action, to_json(thresholds)::text, "                 \
    CD_SQL_TS(CD_BUDGET_PERIOD_START) ", " CD_SQL_TS(CD_BUDGET_PERIOD_END)   \
    ", " CD_SQL_TS("created_at") ", " CD_SQL_TS("updated_at") ", "           \
    CD_SQL_US("created_at")

enum {
    CD_BUDGET_ID = 0, CD_BUDGET_NAME, CD_BUDGET_SCOPE_TYPE,
    CD_BUDGET_SCOPE_VALUE, CD_BUDGET_PROVIDER, CD_BUDGET_MODEL,
    CD_BUDGET_LIMIT, CD_BUDGET_PERIOD, CD_BUDGET_TIMEZONE, CD_BUDGET_ACTION,
    CD_BUDGET_THRESHOLDS, CD_BUDGET_PERIOD_START_COL,
    CD_BUDGET_PERIOD_END_COL, CD_BUDGET_CREATED, CD_BUDGET_UPDATED,
    CD_BUDGET_CREATED_US
};

static const char  *cd_budget_fields[] = {
    "name", "scope", "provider", "model", "limit_usd", "period", "timezone",
    "action", "thresholds", NULL
};

static const char  *cd_budget_scopes[SP_BUDGET_SCOPE_COUNT] = {
    "organization", "api_key", "agent", "department", "project"
};

static const char  *cd_budget_periods[] = {
    "daily", "weekly", "monthly", "total"
};


/* ---- validation (pure, unit tested) ----------------------------------- */


int
cd_budget_scope_parse(const char *name)
{
    int  i;

    for (i = 0; i < SP_BUDGET_SCOPE_COUNT; i++) {
        if (strcmp(name, cd_budget_scopes[i]) == 0) {
            return i;
        }
    }

    return -1;
}


const char *
cd_budget_scope_name(uint32_t scope)
{
    return scope < SP_BUDGET_SCOPE_COUNT ? cd_budget_scopes[scope] : NULL;
}


const char *
cd_budget_period_parse(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(cd_budget_periods) / sizeof(char *); i++) {
        if (strcmp(name, cd_budget_periods[i]) == 0) {
            return cd_budget_periods[i];
        }
    }

    return NULL;
}


int
cd_timezone_wellformed(const char *tz)
{
    size_t       len;
    const char  *p;

    len = strlen(tz);

    if (len == 0 || len > CD_TIMEZONE_MAX) {
        return 0;
    }

    for (p = tz; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '/' || *p == '_'
              || *p == '-' || *p == '+'))
        {
            return 0;
        }
    }

    return 1;
}


int
cd_budget_limit_parse(json_t *value, int64_t *nano, cd_field_error_t *err)
{
    json_int_t   whole;
    const char  *s;

    if (value == NULL || json_is_null(value)) {
        return cd_field_error(err, 422, "missing_field", "limit_usd",
                              "limit_usd is required: USD as a decimal "
                              "string, e.g. \"100.00\"");
    }

    if (json_is_string(value)) {
        s = json_string_value(value);

        if (strlen(s) != json_string_length(value)
            || sp_money_parse(s, strlen(s), nano) != SP_OK)
        {
            return cd_field_error(err, 422, "invalid_value", "limit_usd",
                                  "limit_usd must be a decimal amount of "
                                  "USD with at most 9 decimals, e.g. "
                                  "\"100.00\"");
        }

    } else if (json_is_integer(value)) {
        whole = json_integer_value(value);

        if (whole > INT64_MAX / CD_NANO_PER_USD) {
            return cd_field_error(err, 422, "invalid_value", "limit_usd",
                                  "limit_usd is too large");
        }

        *nano = whole < 0 ? -1 : (int64_t) whole * CD_NANO_PER_USD;

    } else {
        return cd_field_error(err, 400, "invalid_type", "limit_usd",
                              "limit_usd must be a decimal string, e.g. "
                              "\"100.00\"");
    }

    if (*nano <= 0) {
        return cd_field_error(err, 422, "invalid_value", "limit_usd",
                              "limit_usd must be greater than 0");
    }

    return CD_OK;
}


static int
cd_int_compare(const void *a, const void *b)
{
    return *(const int *) a - *(const int *) b;
}


/* sorts and drops duplicates in place */
static void
cd_thresholds_normalize(int *t, size_t *n)
{
    size_t  i, k;

    qsort(t, *n, sizeof(int), cd_int_compare);

    for (i = 0, k = 0; i < *n; i++) {
        if (k == 0 || t[k - 1] != t[i]) {
            t[k++] = t[i];
        }
    }

    *n = k;
}


int
cd_budget_thresholds_parse(json_t *value, int *out, size_t *n,
    cd_field_error_t *err)
{
    size_t      i;
    json_t     *item;
    json_int_t  v;

    if (value == NULL || json_is_null(value)) {
        out[0] = 50;
        out[1] = 80;
        out[2] = 100;
        *n = 3;
        return CD_OK;
    }

    if (!json_is_array(value)) {
        return cd_field_error(err, 400, "invalid_type", "thresholds",
                              "thresholds must be an array of integer "
                              "percents, e.g. [50, 80, 100]");
    }

    if (json_array_size(value) > CD_BUDGET_THRESHOLDS_MAX) {
        return cd_field_error(err, 422, "invalid_value", "thresholds",
                              "thresholds holds at most %d percents",
                              CD_BUDGET_THRESHOLDS_MAX);
    }

    json_array_foreach(value, i, item) {
        if (!json_is_integer(item)) {
            return cd_field_error(err, 400, "invalid_type", "thresholds",
                                  "thresholds[%zu] must be an integer "
                                  "percent from 1 to 100", i);
        }

        v = json_integer_value(item);

        if (v < 1 || v > 100) {
            return cd_field_error(err, 422, "invalid_value", "thresholds",
                                  "thresholds[%zu] must be from 1 to 100",
                                  i);
        }

        out[i] = (int) v;
    }

    *n = json_array_size(value);
    cd_thresholds_normalize(out, n);

    return CD_OK;
}


int
cd_budget_thresholds_from_text(const char *text, int *out, size_t *n)
{
    long         v;
    char        *end;
    const char  *p;

    *n = 0;

    if (text[0] != '{') {
        return CD_ERROR;
    }

    p = text + 1;

    if (*p == '}') {
        return p[1] == '\0' ? CD_OK : CD_ERROR;
    }

    for ( ;; ) {
        v = strtol(p, &end, 10);

        if (end == p || v < 1 || v > 100 || *n == CD_BUDGET_THRESHOLDS_MAX) {
            return CD_ERROR;
        }

        out[(*n)++] = (int) v;

        if (*end == '}') {
            return end[1] == '\0' ? CD_OK : CD_ERROR;
        }

        if (*end != ',') {
            return CD_ERROR;
        }

        p = end + 1;
    }
}


int
cd_budget_threshold_reached(int64_t limit_nano, int64_t spent_nano,
    int percent)
{
    return (__int128) spent_nano * 100 >= (__int128) limit_nano * percent;
}


/* a string member: absent or null is *out = NULL */
static int
cd_budget_string(json_t *obj, const char *field, const char *name,
    int required, size_t max_chars, const char **out, cd_field_error_t *err)
{
    json_t      *value;
    const char  *problem;

    *out = NULL;
    value = json_object_get(obj, field);

    if (value == NULL || json_is_null(value)) {
        if (required) {
            return cd_field_error(err, 422, "missing_field", name,
                                  "%s is required", name);
        }

        return CD_OK;
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", name,
                              "%s must be a string", name);
    }

    if (strlen(json_string_value(value)) != json_string_length(value)) {
        return cd_field_error(err, 422, "invalid_value", name,
                              "%s must not contain NUL characters", name);
    }

    problem = cd_validate_text(json_string_value(value), 1, max_chars);

    if (problem != NULL) {
        return cd_field_error(err, 422, "invalid_value", name,
                              "%s must be 1 to %zu characters without "
                              "control characters", name, max_chars);
    }

    *out = json_string_value(value);

    return CD_OK;
}


static int
cd_budget_scope_body(json_t *scope, cd_budget_input_t *in,
    cd_field_error_t *err)
{
    int          type;
    const char  *key, *name;
    json_t      *value;

    if (scope == NULL || json_is_null(scope)) {
        return cd_field_error(err, 422, "missing_field", "scope",
                              "scope is required: {\"type\": \"organization\"}"
                              " or {\"type\": \"api_key\"|\"agent\"|"
                              "\"department\"|\"project\", \"value\": ...}");
    }

    if (!json_is_object(scope)) {
        return cd_field_error(err, 400, "invalid_type", "scope",
                              "scope must be an object with type and value");
    }

    json_object_foreach(scope, key, value) {
        if (strcmp(key, "type") != 0 && strcmp(key, "value") != 0) {
            return cd_field_error(err, 400, "unknown_field", "scope",
                                  "scope has an unknown member; expected "
                                  "type and value");
        }
    }

    if (cd_budget_string(scope, "type", "scope.type", 1, 32, &name, err)
        != CD_OK)
    {
        return CD_ERROR;
    }

    type = cd_budget_scope_parse(name);

    if (type < 0) {
        return cd_field_error(err, 422, "invalid_value", "scope.type",
                              "scope.type must be organization, api_key, "
                              "agent, department or project");
    }

    in->scope = (uint32_t) type;

    if (cd_budget_string(scope, "value", "scope.value",
                         type != SP_BUDGET_SCOPE_ORG, CD_NAME_MAX,
                         &in->scope_value, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (type == SP_BUDGET_SCOPE_ORG) {
        if (in->scope_value != NULL) {
            return cd_field_error(err, 422, "invalid_value", "scope.value",
                                  "an organization scope takes no value");
        }

        in->scope_value = "";
    }

    if (type == SP_BUDGET_SCOPE_API_KEY) {
        return cd_id_field(in->scope_value, SP_ID_KEY, "scope.value", err);
    }

    if (type == SP_BUDGET_SCOPE_AGENT) {
        return cd_id_field(in->scope_value, SP_ID_AGENT, "scope.value", err);
    }

    return CD_OK;
}


int
cd_budget_body_parse(json_t *body, cd_budget_input_t *in,
    cd_field_error_t *err)
{
    const char  *s;

    memset(in, 0, sizeof(*in));

    if (cd_budget_string(body, "name", "name", 1, CD_NAME_MAX, &in->name,
                         err) != CD_OK
        || cd_budget_scope_body(json_object_get(body, "scope"), in, err)
           != CD_OK
        || cd_budget_string(body, "provider", "provider", 0, 32,
                            &in->provider, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (in->provider != NULL && cd_provider_default_url(in->provider) == NULL)
    {
        return cd_field_error(err, 422, "invalid_value", "provider",
                              "provider must be one of "
                              SP_PROVIDER_NAMES_TEXT);
    }

    if (cd_budget_string(body, "model", "model", 0, CD_NAME_MAX, &in->model,
                         err) != CD_OK
        || cd_budget_limit_parse(json_object_get(body, "limit_usd"),
                                 &in->limit_nano, err) != CD_OK
        || cd_budget_string(body, "period", "period", 1, 16, &s, err)
           != CD_OK)
    {
        return CD_ERROR;
    }

    in->period = cd_budget_period_parse(s);

    if (in->period == NULL) {
        return cd_field_error(err, 422, "invalid_value", "period",
                              "period must be daily, weekly, monthly or "
                              "total");
    }

    if (cd_budget_string(body, "timezone", "timezone", 0, CD_TIMEZONE_MAX,
                         &in->timezone, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (in->timezone == NULL) {
        in->timezone = "UTC";

    } else if (!cd_timezone_wellformed(in->timezone)) {
        return cd_field_error(err, 422, "invalid_value", "timezone",
                              "timezone must be an IANA time zone name, "
                              "e.g. \"Europe/Paris\" or \"UTC\"");
    }

    if (cd_budget_string(body, "action", "action", 0, 16, &s, err)
        != CD_OK)
    {
        return CD_ERROR;
    }

    if (s == NULL || strcmp(s, "block") == 0) {
        in->action = SP_BUDGET_BLOCK;

    } else if (strcmp(s, "warn") == 0) {
        in->action = SP_BUDGET_WARN;

    } else {
        return cd_field_error(err, 422, "invalid_value", "action",
                              "action must be block or warn");
    }

    return cd_budget_thresholds_parse(json_object_get(body, "thresholds"),
                                      in->thresholds, &in->nthresholds, err);
}


/* ---- responses -------------------------------------------------------- */

static json_t *
cd_budget_json(PGresult *res, int row)
{
    int      failed;
    char     money[SP_MONEY_STR_LEN];
    json_t  *obj, *scope, *thresholds;

    sp_money_format(strtoll(PQgetvalue(res, row, CD_BUDGET_LIMIT), NULL, 10),
                    money);

    obj = json_object();
    scope = json_object();
    thresholds = json_loads(PQgetvalue(res, row, CD_BUDGET_THRESHOLDS), 0,
                            NULL);

    /* json_object_set: obj takes its own references, ours go below */
    failed = obj == NULL || scope == NULL || thresholds == NULL
        || cd_json_set_column(scope, "type", res, row, CD_BUDGET_SCOPE_TYPE)
        || (strcmp(PQgetvalue(res, row, CD_BUDGET_SCOPE_TYPE), "organization")
            != 0
            ? cd_json_set_column(scope, "value", res, row,
                                 CD_BUDGET_SCOPE_VALUE)
            : cd_json_set_str(scope, "value", NULL))
        || cd_json_set_column(obj, "id", res, row, CD_BUDGET_ID)
        || cd_json_set_column(obj, "name", res, row, CD_BUDGET_NAME)
        || json_object_set(obj, "scope", scope)
        || cd_json_set_column(obj, "provider", res, row, CD_BUDGET_PROVIDER)
        || cd_json_set_column(obj, "model", res, row, CD_BUDGET_MODEL)
        || cd_json_set_str(obj, "limit_usd", money)
        || cd_json_set_column(obj, "period", res, row, CD_BUDGET_PERIOD)
        || cd_json_set_column(obj, "timezone", res, row, CD_BUDGET_TIMEZONE)
        || cd_json_set_column(obj, "action", res, row, CD_BUDGET_ACTION)
        || json_object_set(obj, "thresholds", thresholds)
        || cd_json_set_column(obj, "period_start", res, row,
                              CD_BUDGET_PERIOD_START_COL)
        || cd_json_set_column(obj, "period_end", res, row,
                              CD_BUDGET_PERIOD_END_COL)
        || cd_json_set_column(obj, "created_at", res, row, CD_BUDGET_CREATED)
        || cd_json_set_column(obj, "updated_at", res, row, CD_BUDGET_UPDATED);

    json_decref(scope);
    json_decref(thresholds);

    if (failed) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* the stored budget as a POST body, for PATCH to merge onto */
static json_t *
cd_budget_body_of(PGresult *res, int row)
{
    json_t  *obj, *scope;

    obj = cd_budget_json(res, row);
    if (obj == NULL) {
        return NULL;
    }

    scope = json_object_get(obj, "scope");

    if (json_is_null(json_object_get(scope, "value"))) {
        json_object_del(scope, "value");
    }

    json_object_del(obj, "id");
    json_object_del(obj, "period_start");
    json_object_del(obj, "period_end");
    json_object_del(obj, "created_at");
    json_object_del(obj, "updated_at");

    return obj;
}


static int
cd_budget_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_BUDGET, "budget_not_found");
}


/*
 * Checks what only the database can: the time zone is one PostgreSQL
 * knows, a key or agent scope names one of the organisation. Under a
 * savepoint, since an unknown zone fails the statement. Answers 422.
 */
static int
cd_budget_check_refs(cd_request_t *r, cd_db_conn_t *c,
    const cd_budget_input_t *in)
{
    PGresult    *res;
    const char  *params[1], *sql, *what;

    if (cd_db_exec_script(c, "SAVEPOINT cd_timezone") != CD_OK) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    params[0] = in->timezone;
    res = cd_db_exec(c, "SELECT now() AT TIME ZONE $1", 1, params);

    if (res == NULL) {
        if (PQstatus(c->pg) != CONNECTION_OK
            || cd_db_exec_script(c, "ROLLBACK TO SAVEPOINT cd_timezone")
               != CD_OK)
        {
            cd_respond_statement_error(r, c);
            return CD_ERROR;
        }

        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "timezone", "timezone \"%s\" is not a time zone "
                         "PostgreSQL knows; use an IANA name such as "
                         "\"Europe/Paris\"", in->timezone);
        return CD_ERROR;
    }

    PQclear(res);

    if (in->scope == SP_BUDGET_SCOPE_API_KEY) {
        sql = "SELECT 1 FROM api_keys WHERE id = $1";
        what = "API key";

    } else if (in->scope == SP_BUDGET_SCOPE_AGENT) {
        sql = "SELECT 1 FROM agents WHERE id = $1 FOR KEY SHARE";
        what = "agent";

    } else {
        return CD_OK;
    }

    params[0] = in->scope_value;
    res = cd_db_exec(c, sql, 1, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 422, "invalid_request_error",
                         in->scope == SP_BUDGET_SCOPE_AGENT
                         ? "unknown_agent" : "unknown_api_key",
                         "scope.value", "scope.value: no %s %s in this "
                         "organization", what, in->scope_value);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


static void
cd_budget_thresholds_literal(const cd_budget_input_t *in, char *out,
    size_t outlen)
{
    size_t  i, pos;

    pos = (size_t) snprintf(out, outlen, "{");

    for (i = 0; i < in->nthresholds && pos < outlen; i++) {
        pos += (size_t) snprintf(out + pos, outlen - pos, "%s%d",
                                 i ? "," : "", in->thresholds[i]);
    }

    if (pos < outlen) {
        snprintf(out + pos, outlen - pos, "}");
    }
}


/* ---- routes ----------------------------------------------------------- */

/*
 * Writes a budget with sql ($1 the id, $2..$11 its fields, RETURNING its
 * columns), commits, republishes the snapshot and answers the budget.
 */
static void
cd_budget_store(cd_request_t *r, cd_db_conn_t *c, const char *id,
    const cd_budget_input_t *in, const char *sql, unsigned status,
    const char *what)
{
    char         limit[32], thresholds[128];
    json_t      *budget;
    PGresult    *res;
    const char  *params[11];

    snprintf(limit, sizeof(limit), "%lld", (long long) in->limit_nano);
    cd_budget_thresholds_literal(in, thresholds, sizeof(thresholds));

    params[0] = id;
    params[1] = in->name;
    params[2] = cd_budget_scope_name(in->scope);
    params[3] = in->scope_value;
    params[4] = in->provider;
    params[5] = in->model;
    params[6] = limit;
    params[7] = in->period;
    params[8] = in->timezone;
    params[9] = in->action == SP_BUDGET_WARN ? "warn" : "block";
    params[10] = thresholds;

    res = cd_db_exec(c, sql, 11, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return;
    }

    budget = cd_budget_json(res, 0);
    PQclear(res);

    if (budget == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return;
    }

    if (cd_request_commit_respond(r, c, 1, status, budget) != CD_OK) {
        return;
    }

    cd_log_info(CD_BUDGETS_SUBJECT, "%s %s org=%s by %s", what, id,
                r->org_id, r->key_id);
}


void
cd_api_budgets_create(cd_request_t *r)
{
    char               id[CD_ID_MAX];
    json_t            *body;
    cd_db_conn_t      *c;
    cd_field_error_t   err;
    cd_budget_input_t  in;

    body = cd_request_json(r, cd_budget_fields);
    if (body == NULL) {
        return;
    }

    if (cd_budget_body_parse(body, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    c = cd_request_begin_create(r, CD_BUDGET_ID_PREFIX, id, "budgets", NULL,
                                r->app->config.max_budgets_per_org,
                                "SPENDPOL_MAX_BUDGETS_PER_ORG", "budgets");
    if (c == NULL) {
        json_decref(body);
        return;
    }

    if (cd_budget_check_refs(r, c, &in) == CD_OK) {
        cd_budget_store(r, c, id, &in,
                        "INSERT INTO budgets (id, org_id, name, scope_type,"
                        " scope_value, provider, model, limit_nano, period,"
                        " timezone, action, thresholds)"
                        " VALUES ($1, current_setting('spendpol.org_id'),"
                        " $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::int[])"
                        " RETURNING " CD_BUDGET_COLUMNS, 201, "created");
    }

    cd_request_end(r, c);
    json_decref(body);
}


void
cd_api_budgets_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_BUDGET_COLUMNS, "budgets", ""),
        .default_limit = 100,
        .id_column = CD_BUDGET_ID,
        .created_us_column = CD_BUDGET_CREATED_US,
        .row_json = cd_budget_json
    };

    cd_page_respond(r, &page);
}


void
cd_api_budgets_get(cd_request_t *r)
{
    cd_row_respond(r, cd_budget_id_param,
                   "SELECT " CD_BUDGET_COLUMNS " FROM budgets"
                   " WHERE id = $1",
                   cd_budget_json, "budget_not_found", "id",
                   "no budget with id \"%s\"");
}


/*
 * PATCH merges the body onto the stored budget and validates the result
 * as a POST would: a member set to null takes its default (provider and
 * model: no narrowing). Spend already counted stays with the period it
 * was counted in; a changed period or time zone starts counting in the
 * new period, a changed scope or narrowing counts from now on.
 */
void
cd_api_budgets_update(cd_request_t *r)
{
    json_t            *patch, *merged;
    PGresult          *old;
    const char        *params[1];
    cd_db_conn_t      *c;
    cd_field_error_t   err;
    cd_budget_input_t  in;

    if (cd_budget_id_param(r) != CD_OK) {
        return;
    }

    patch = cd_request_json(r, cd_budget_fields);
    if (patch == NULL) {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(patch);
        return;
    }

    merged = NULL;
    params[0] = r->params[0];

    old = cd_db_exec(c, "SELECT " CD_BUDGET_COLUMNS " FROM budgets"
                        " WHERE id = $1 FOR UPDATE", 1, params);
    if (cd_request_found(r, c, old, "budget_not_found", "id",
        "no budget with id \"%s\"", r->params[0]) != CD_OK)
    {
        goto done;
    }

    merged = cd_budget_body_of(old, 0);

    if (merged == NULL || json_object_update(merged, patch) != 0) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    if (cd_budget_body_parse(merged, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    if (cd_budget_check_refs(r, c, &in) != CD_OK) {
        goto done;
    }

    cd_budget_store(r, c, r->params[0], &in,
                    "UPDATE budgets SET name = $2, scope_type = $3,"
                    " scope_value = $4, provider = $5, model = $6,"
                    " limit_nano = $7, period = $8, timezone = $9,"
                    " action = $10, thresholds = $11::int[],"
                    " updated_at = clock_timestamp() WHERE id = $1"
                    " RETURNING " CD_BUDGET_COLUMNS, 200, "updated");

done:

    PQclear(old);
    json_decref(merged);
    json_decref(patch);
    cd_request_end(r, c);
}


void
cd_api_budgets_delete(cd_request_t *r)
{
    if (cd_delete_respond(r, cd_budget_id_param,
                          "DELETE FROM budgets WHERE id = $1",
                          "budget_not_found", "id",
                          "no budget with id \"%s\"") == CD_OK)
    {
        cd_log_info(CD_BUDGETS_SUBJECT, "deleted %s org=%s by %s",
                    r->params[0], r->org_id, r->key_id);
    }
}


static int
cd_budget_set_money(json_t *obj, const char *key, int64_t nano)
{
    char  text[SP_MONEY_STR_LEN];

    sp_money_format(nano, text);

    return cd_json_set_str(obj, key, text);
}


/*
 * The spend of the current period as ingested from every node's journal.
 * reserved_usd is null: reservations live in each node's nginx shared
 * memory, which controld cannot read; they are settled into spent_usd as
 * the journal is ingested (about every 200 ms).
 */
void
cd_api_budgets_spend(cd_request_t *r)
{
    int            i;
    int64_t        limit, spent;
    json_t        *obj, *by_model, *item;
    PGresult      *res, *models;
    const char    *params[1];
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_budget_id_param);
    if (c == NULL) {
        return;
    }

    models = NULL;
    obj = NULL;
    params[0] = r->params[0];

    res = cd_db_exec(c, "WITH b AS (SELECT id, limit_nano, "
                        CD_BUDGET_PERIOD_START " AS ps, "
                        CD_BUDGET_PERIOD_END " AS pe"
                        " FROM budgets WHERE id = $1)"
                        " SELECT b.id, b.limit_nano,"
                        " coalesce(s.spent_nano, 0), coalesce(s.requests, 0),"
                        " " CD_SQL_TS("b.ps") ", " CD_SQL_TS("b.pe")
                        " FROM b LEFT JOIN budget_spend s"
                        " ON s.budget_id = b.id AND s.period_start = b.ps",
                     1, params);
    if (cd_request_found(r, c, res, "budget_not_found", "id",
        "no budget with id \"%s\"", r->params[0]) != CD_OK)
    {
        goto done;
    }

    models = cd_db_exec(c, "SELECT m.provider, m.model, m.spent_nano,"
                           " m.requests FROM budget_model_spend m"
                           " JOIN budgets b ON b.id = m.budget_id"
                           " WHERE m.budget_id = $1 AND m.period_start = "
                           "spendpol_period_start(b.period, b.timezone,"
                           " b.created_at, now())"
                           " ORDER BY m.spent_nano DESC, m.provider, m.model",
                        1, params);
    if (models == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    limit = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    spent = strtoll(PQgetvalue(res, 0, 2), NULL, 10);

    obj = json_object();
    if (obj == NULL) {
        goto oom;
    }

    if (cd_json_set_str(obj, "budget_id", PQgetvalue(res, 0, 0))
        || cd_json_set_str(obj, "period_start", PQgetvalue(res, 0, 4))
        || cd_json_set_str(obj, "period_end", cd_db_value(res, 0, 5))
        || cd_budget_set_money(obj, "limit_usd", limit)
        || cd_budget_set_money(obj, "spent_usd", spent)
        || json_object_set_new(obj, "reserved_usd", json_null())
        || cd_budget_set_money(obj, "remaining_usd",
                               spent >= limit ? 0 : limit - spent)
        || json_object_set_new(obj, "requests", json_integer(
               (json_int_t) strtoll(PQgetvalue(res, 0, 3), NULL, 10))))
    {
        goto oom;
    }

    by_model = json_array();

    if (by_model == NULL
        || json_object_set_new(obj, "by_model", by_model) != 0)
    {
        goto oom;
    }

    for (i = 0; i < PQntuples(models); i++) {
        item = json_object();

        if (item == NULL || json_array_append_new(by_model, item) != 0
            || cd_json_set_str(item, "provider", PQgetvalue(models, i, 0))
            || cd_json_set_str(item, "model", PQgetvalue(models, i, 1))
            || cd_budget_set_money(item, "spent_usd",
                   strtoll(PQgetvalue(models, i, 2), NULL, 10))
            || json_object_set_new(item, "requests", json_integer(
                   (json_int_t) strtoll(PQgetvalue(models, i, 3), NULL, 10))))
        {
            goto oom;
        }
    }

    cd_respond(r, 200, obj);
    obj = NULL;
    goto done;

oom:

    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

done:

    json_decref(obj);
    PQclear(res);
    PQclear(models);
    cd_request_end(r, c);
}
