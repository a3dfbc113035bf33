/*
 * /chargeback/periods: an organisation's spend over a period, per group
 * (department, project, API key or agent), provider and model, summed
 * from audit_logs by PostgreSQL (exact: bigint sums, never a float), and
 * frozen by finalize (migrations/025_chargeback.sql, docs/chargeback.md).
 *
 * An open period's figures are computed on each read. Finalize takes the
 * organisation's chain lock (migrations/023), under which no ingest
 * transaction is half-way through the organisation's rows, records the
 * chain head as finalized_seq and stores the figures. Rows ingested
 * after that (chain_seq > finalized_seq) whose time falls in a finalized
 * period are late: they are adjustments of the next open period, until
 * that one is finalized and stores them in turn.
 *
 * Every write of a period (create, change, delete, finalize) holds the
 * organisation's chargeback lock first, so the overlap check and "the
 * next open period" are read in the state the write leaves.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "crypto.h"
#include "api.h"
#include "api_chargeback.h"


#define CD_CHARGEBACK_SUBJECT  "chargeback"

/* $n microseconds since the epoch as a timestamptz */
#define CD_CBP_AT(n)                                                         \
    "('epoch'::timestamptz + $" n "::bigint * interval '1 microsecond')"

#define CD_CBP_COLUMNS                                                       \
    "id, name, " CD_SQL_TS("starts_at") ", " CD_SQL_TS("ends_at") ","        \
    " group_by, status, " CD_SQL_TS("finalized_at") ", finalized_seq, "      \
    CD_SQL_TS("created_at") ", " CD_SQL_TS("updated_at") ", "                \
    CD_SQL_US("created_at") ", " CD_SQL_US("starts_at") ", "                 \
    CD_SQL_US("ends_at")

enum {
    CD_CBP_ID = 0, CD_CBP_NAME, CD_CBP_STARTS, CD_CBP_ENDS, CD_CBP_GROUP_BY,
    CD_CBP_STATUS, CD_CBP_FINALIZED_AT, CD_CBP_FINALIZED_SEQ,
    CD_CBP_CREATED, CD_CBP_UPDATED, CD_CBP_CREATED_US, CD_CBP_STARTS_US,
    CD_CBP_ENDS_US
};

/* the columns of a figure, live or stored */
enum {
    CD_FIG_KIND = 0, CD_FIG_ORIGINAL, CD_FIG_GROUP, CD_FIG_PROVIDER,
    CD_FIG_MODEL, CD_FIG_COST, CD_FIG_INPUT, CD_FIG_OUTPUT, CD_FIG_REQUESTS
};

/* one writer of an organisation's periods at a time (cd_org_cap_check's
   key, so the two never disagree) */
#define CD_CBP_LOCK_SQL                                                      \
    "SELECT pg_advisory_xact_lock(hashtext('chargeback_periods:' ||"         \
    " current_setting('spendpol.org_id')))"

#define CD_CBP_ROW_SQL                                                       \
    "SELECT " CD_CBP_COLUMNS " FROM chargeback_periods WHERE id = $1"

#define CD_CBP_GROUP_SQL                                                     \
    "CASE t.group_by WHEN 'department' THEN a.department"                    \
    " WHEN 'project' THEN a.project WHEN 'api_key' THEN a.api_key_id"        \
    " ELSE a.agent_id END"

/*
 * The figures of period $1 from the audit rows. Lines: its rows, all of
 * them while it is open, those up to its finalized_seq once finalized
 * (rows from before the chain, chain_seq NULL, are never late). Its
 * adjustments: the late rows of each finalized period p whose next open
 * period it is (no open period starts between p's end and its start),
 * not yet frozen by an earlier finalize: past p's finalized_seq and past
 * the finalized_seq of every period that stored adjustments of p (those
 * stored everything up to their finalized_seq: ingest links rows in
 * commit order under the lock finalize holds). src is materialized: one
 * row per finalized period, its "covered" worked out once, not per row.
 */
#define CD_CBP_LIVE_SQL                                                      \
    "WITH t AS (SELECT id, starts_at, ends_at, group_by, status,"            \
    " finalized_seq FROM chargeback_periods WHERE id = $1),"                 \
    " src AS MATERIALIZED (SELECT p.id, p.starts_at, p.ends_at,"            \
    " greatest(p.finalized_seq,"                                             \
    " coalesce((SELECT max(q.finalized_seq) FROM chargeback_periods q"       \
    " WHERE q.status = 'finalized' AND EXISTS (SELECT 1 FROM"                \
    " chargeback_lines l WHERE l.period_id = q.id"                           \
    " AND l.original_period_id = p.id)), 0)) AS covered"                     \
    " FROM chargeback_periods p, t WHERE p.status = 'finalized'"             \
    " AND p.ends_at <= t.starts_at AND NOT EXISTS (SELECT 1 FROM"            \
    " chargeback_periods o WHERE o.status = 'open'"                          \
    " AND o.starts_at >= p.ends_at AND o.starts_at < t.starts_at)),"         \
    " x AS (SELECT 'line'::text AS kind, NULL::text AS original, "           \
    CD_CBP_GROUP_SQL " AS g, a.provider, a.model, a.cost_nano,"              \
    " a.input_tokens, a.output_tokens FROM t JOIN audit_logs a"              \
    " ON a.created_at >= t.starts_at AND a.created_at < t.ends_at"           \
    " WHERE t.status = 'open' OR a.chain_seq IS NULL"                        \
    " OR a.chain_seq <= t.finalized_seq"                                     \
    " UNION ALL SELECT 'adjustment', src.id, " CD_CBP_GROUP_SQL ","          \
    " a.provider, a.model, a.cost_nano, a.input_tokens, a.output_tokens"     \
    " FROM t CROSS JOIN src JOIN audit_logs a"                               \
    " ON a.created_at >= src.starts_at AND a.created_at < src.ends_at"       \
    " WHERE a.chain_seq > src.covered"                                       \
    " AND (t.status = 'open' OR a.chain_seq <= t.finalized_seq))"            \
    " SELECT kind, original, g, provider, model, sum(cost_nano)::bigint,"    \
    " sum(input_tokens)::bigint, sum(output_tokens)::bigint, count(*)"       \
    " FROM x GROUP BY 1, 2, 3, 4, 5"

#define CD_CBP_STORED_SQL                                                    \
    "SELECT kind, original_period_id, group_value, provider, model,"         \
    " cost_nano, input_tokens, output_tokens, requests"                      \
    " FROM chargeback_lines WHERE period_id = $1"

/* lines first, then adjustments by original period; costliest first */
#define CD_CBP_FIGURES_SQL(inner)                                            \
    "SELECT f.* FROM (" inner ") AS f (kind, original, g, provider, model,"  \
    " cost, input, output, requests) ORDER BY f.kind DESC, f.original,"      \
    " f.cost DESC, f.g NULLS LAST, f.provider NULLS LAST,"                   \
    " f.model NULLS LAST"

static const char  *cd_cbp_fields[] = {
    "name", "starts_at", "ends_at", "group_by", NULL
};

static const char  *cd_cbp_groups[] = {
    "department", "project", "api_key", "agent"
};


/* ---- validation (pure, unit tested) ----------------------------------- */

int
cd_chargeback_id_valid(const char *id)
{
    size_t  i, len;

    len = strlen(id);

    if (len != sizeof(CD_CHARGEBACK_ID_PREFIX) - 1 + CD_CHARGEBACK_ID_HEX
        || strncmp(id, CD_CHARGEBACK_ID_PREFIX,
                   sizeof(CD_CHARGEBACK_ID_PREFIX) - 1) != 0)
    {
        return 0;
    }

    for (i = sizeof(CD_CHARGEBACK_ID_PREFIX) - 1; i < len; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


const char *
cd_chargeback_group_parse(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(cd_cbp_groups) / sizeof(char *); i++) {
        if (strcmp(name, cd_cbp_groups[i]) == 0) {
            return cd_cbp_groups[i];
        }
    }

    return NULL;
}


/* a string member; absent or null leaves *out NULL */
static int
cd_cbp_string(json_t *body, const char *field, int required,
    size_t max_chars, const char **out, cd_field_error_t *err)
{
    json_t  *value;

    *out = NULL;
    value = json_object_get(body, field);

    if (value == NULL || json_is_null(value)) {
        if (required) {
            return cd_field_error(err, 422, "missing_field", field,
                                  "%s is required", field);
        }

        return CD_OK;
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be a string", field);
    }

    if (strlen(json_string_value(value)) != json_string_length(value)
        || cd_validate_text(json_string_value(value), 1, max_chars) != NULL)
    {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must be 1 to %zu characters without "
                              "control characters", field, max_chars);
    }

    *out = json_string_value(value);

    return CD_OK;
}


/* an RFC 3339 member to the millisecond; absent leaves *us as it was */
static int
cd_cbp_time(json_t *body, const char *field, int required, int64_t *us,
    cd_field_error_t *err)
{
    int64_t      t;
    const char  *s;

    if (cd_cbp_string(body, field, required, 64, &s, err) != CD_OK) {
        return CD_ERROR;
    }

    if (s == NULL) {
        return CD_OK;
    }

    if (cd_rfc3339_parse(s, &t) != CD_OK) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must be an RFC 3339 date-time, e.g. "
                              "\"2026-12-01T00:00:00Z\"", field);
    }

    /* the answers show milliseconds: a finer time could not be read back */
    if (t % 1000 != 0) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must be given to the millisecond at most",
                              field);
    }

    *us = t;

    return CD_OK;
}


int
cd_chargeback_body_parse(json_t *body, int patch, cd_chargeback_input_t *in,
    cd_field_error_t *err)
{
    const char  *name, *group;

    if (!patch) {
        memset(in, 0, sizeof(cd_chargeback_input_t));
        in->group_by = cd_cbp_groups[0];
    }

    if (cd_cbp_string(body, "name", !patch, CD_NAME_MAX, &name, err)
        != CD_OK
        || cd_cbp_time(body, "starts_at", !patch, &in->starts_us, err)
           != CD_OK
        || cd_cbp_time(body, "ends_at", !patch, &in->ends_us, err) != CD_OK
        || cd_cbp_string(body, "group_by", 0, 16, &group, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (name != NULL) {
        in->name = name;
    }

    if (group != NULL) {
        in->group_by = cd_chargeback_group_parse(group);

        if (in->group_by == NULL) {
            return cd_field_error(err, 422, "invalid_value", "group_by",
                                  "group_by must be department, project, "
                                  "api_key or agent");
        }
    }

    if (in->ends_us <= in->starts_us) {
        return cd_field_error(err, 422, "invalid_value", "ends_at",
                              "ends_at must be after starts_at: a period "
                              "is [starts_at, ends_at)");
    }

    if (in->ends_us - in->starts_us > CD_CHARGEBACK_US_MAX) {
        return cd_field_error(err, 422, "invalid_value", "ends_at",
                              "a period is at most %d days: ends_at must "
                              "be at most %d days after starts_at",
                              CD_CHARGEBACK_DAYS_MAX,
                              CD_CHARGEBACK_DAYS_MAX);
    }

    return CD_OK;
}


/* ---- responses -------------------------------------------------------- */

static int
cd_cbp_set_int(json_t *obj, const char *key, PGresult *res, int row,
    int col)
{
    if (PQgetisnull(res, row, col)) {
        return json_object_set_new(obj, key, json_null());
    }

    return json_object_set_new(obj, key, json_integer((json_int_t)
               strtoll(PQgetvalue(res, row, col), NULL, 10)));
}


static json_t *
cd_cbp_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, CD_CBP_ID)
        || cd_json_set_column(obj, "name", res, row, CD_CBP_NAME)
        || cd_json_set_column(obj, "starts_at", res, row, CD_CBP_STARTS)
        || cd_json_set_column(obj, "ends_at", res, row, CD_CBP_ENDS)
        || cd_json_set_column(obj, "group_by", res, row, CD_CBP_GROUP_BY)
        || cd_json_set_column(obj, "status", res, row, CD_CBP_STATUS)
        || cd_json_set_column(obj, "finalized_at", res, row,
                              CD_CBP_FINALIZED_AT)
        || cd_cbp_set_int(obj, "finalized_seq", res, row,
                          CD_CBP_FINALIZED_SEQ)
        || cd_json_set_column(obj, "created_at", res, row, CD_CBP_CREATED)
        || cd_json_set_column(obj, "updated_at", res, row, CD_CBP_UPDATED))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* sums of figures; int64 as the columns they come from */
typedef struct {
    int64_t  cost;
    int64_t  input;
    int64_t  output;
    int64_t  requests;
} cd_cbp_sum_t;


static int
cd_cbp_sum_add(cd_cbp_sum_t *sum, const cd_cbp_sum_t *add)
{
    if (__builtin_add_overflow(sum->cost, add->cost, &sum->cost)
        || __builtin_add_overflow(sum->input, add->input, &sum->input)
        || __builtin_add_overflow(sum->output, add->output, &sum->output)
        || __builtin_add_overflow(sum->requests, add->requests,
                                  &sum->requests))
    {
        return CD_ERROR;
    }

    return CD_OK;
}


/* {"cost_nano", "cost_usd", "input_tokens", "output_tokens", "requests"}
   into obj */
static int
cd_cbp_set_sum(json_t *obj, const cd_cbp_sum_t *sum)
{
    char  usd[SP_MONEY_STR_LEN];

    sp_money_format(sum->cost, usd);

    return json_object_set_new(obj, "cost_nano",
                               json_integer((json_int_t) sum->cost))
        || json_object_set_new(obj, "cost_usd", json_string(usd))
        || json_object_set_new(obj, "input_tokens",
                               json_integer((json_int_t) sum->input))
        || json_object_set_new(obj, "output_tokens",
                               json_integer((json_int_t) sum->output))
        || json_object_set_new(obj, "requests",
                               json_integer((json_int_t) sum->requests));
}


/*
 * The figures of res into period: "lines" and "adjustments" (each with
 * group null for rows without one), "adjustments_total" and "totals"
 * (both kinds). CD_ERROR: out of memory or a total past int64.
 */
static int
cd_cbp_set_figures(json_t *period, PGresult *res)
{
    int           i, adjustment;
    json_t       *lines, *adjustments, *item, *totals, *adjusted;
    cd_cbp_sum_t  one, all, late;

    memset(&all, 0, sizeof(cd_cbp_sum_t));
    memset(&late, 0, sizeof(cd_cbp_sum_t));

    lines = json_array();
    adjustments = json_array();
    totals = json_object();
    adjusted = json_object();

    /* json_object_set: period takes its own references, ours go below */
    if (lines == NULL || adjustments == NULL || totals == NULL
        || adjusted == NULL
        || json_object_set(period, "lines", lines)
        || json_object_set(period, "adjustments", adjustments)
        || json_object_set(period, "adjustments_total", adjusted)
        || json_object_set(period, "totals", totals))
    {
        json_decref(lines);
        json_decref(adjustments);
        json_decref(totals);
        json_decref(adjusted);
        return CD_ERROR;
    }

    json_decref(lines);
    json_decref(adjustments);
    json_decref(totals);
    json_decref(adjusted);

    for (i = 0; i < PQntuples(res); i++) {
        adjustment = strcmp(PQgetvalue(res, i, CD_FIG_KIND), "adjustment")
                     == 0;

        one.cost = strtoll(PQgetvalue(res, i, CD_FIG_COST), NULL, 10);
        one.input = strtoll(PQgetvalue(res, i, CD_FIG_INPUT), NULL, 10);
        one.output = strtoll(PQgetvalue(res, i, CD_FIG_OUTPUT), NULL, 10);
        one.requests = strtoll(PQgetvalue(res, i, CD_FIG_REQUESTS), NULL,
                               10);

        if (cd_cbp_sum_add(&all, &one) != CD_OK
            || (adjustment && cd_cbp_sum_add(&late, &one) != CD_OK))
        {
            return CD_ERROR;
        }

        item = json_object();

        if (json_array_append_new(adjustment ? adjustments : lines, item)
            || (adjustment
                && cd_json_set_column(item, "original_period_id", res, i,
                                      CD_FIG_ORIGINAL))
            || cd_json_set_column(item, "group", res, i, CD_FIG_GROUP)
            || cd_json_set_column(item, "provider", res, i, CD_FIG_PROVIDER)
            || cd_json_set_column(item, "model", res, i, CD_FIG_MODEL)
            || cd_cbp_set_sum(item, &one))
        {
            return CD_ERROR;
        }
    }

    return cd_cbp_set_sum(totals, &all) || cd_cbp_set_sum(adjusted, &late)
           ? CD_ERROR : CD_OK;
}


/*
 * A period's figures are one aggregate over up to a year of audit rows,
 * which PostgreSQL would JIT-compile past jit_above_cost: 18 s of
 * compiling for a 1 s read of a month of 175,000 rows (measured, PG 15),
 * past the tenant's 10 s statement timeout. Read once per request, the
 * query never pays its compilation back.
 */
static int
cd_cbp_no_jit(cd_request_t *r, cd_db_conn_t *c)
{
    if (cd_db_exec_script(c, "SET LOCAL jit = off") != CD_OK) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    return CD_OK;
}


/*
 * Period id with its figures (stored once finalized, else live) into
 * *out, in c's transaction. CD_ERROR after answering (404, 500).
 */
static int
cd_cbp_detail(cd_request_t *r, cd_db_conn_t *c, const char *id,
    json_t **out)
{
    int          finalized;
    json_t      *period;
    PGresult    *row, *figures;
    const char  *params[1];

    params[0] = id;
    row = cd_db_exec(c, CD_CBP_ROW_SQL, 1, params);

    if (cd_request_found(r, c, row, "period_not_found", "id",
                         "no chargeback period with id \"%s\"", id)
        != CD_OK)
    {
        PQclear(row);
        return CD_ERROR;
    }

    finalized = strcmp(PQgetvalue(row, 0, CD_CBP_STATUS), "finalized") == 0;

    if (cd_cbp_no_jit(r, c) != CD_OK) {
        PQclear(row);
        return CD_ERROR;
    }

    figures = cd_db_exec(c, finalized
                            ? CD_CBP_FIGURES_SQL(CD_CBP_STORED_SQL)
                            : CD_CBP_FIGURES_SQL(CD_CBP_LIVE_SQL),
                         1, params);
    if (figures == NULL) {
        PQclear(row);
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    period = cd_cbp_json(row, 0);

    if (period == NULL || cd_cbp_set_figures(period, figures) != CD_OK) {
        json_decref(period);
        PQclear(row);
        PQclear(figures);
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "out of memory, or a total past 2^63 nano-USD");
        return CD_ERROR;
    }

    PQclear(row);
    PQclear(figures);
    *out = period;

    return CD_OK;
}


static int
cd_cbp_id_param(cd_request_t *r)
{
    if (cd_chargeback_id_valid(r->params[0])) {
        return CD_OK;
    }

    cd_respond_error(r, 404, "not_found_error", "period_not_found", "id",
                     "no chargeback period with id \"%.64s\" (expected "
                     "\"" CD_CHARGEBACK_ID_PREFIX "\" followed by %d "
                     "lowercase hex digits)", r->params[0],
                     CD_CHARGEBACK_ID_HEX);

    return CD_ERROR;
}


/* the organisation's chargeback lock, to the end of the transaction */
static int
cd_cbp_lock(cd_request_t *r, cd_db_conn_t *c)
{
    PGresult  *res;

    res = cd_db_exec(c, CD_CBP_LOCK_SQL, 0, NULL);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/*
 * Under the lock: the open period r names, locked, or NULL after
 * answering 404, or 409 period_finalized when it is finalized.
 */
static PGresult *
cd_cbp_open_row(cd_request_t *r, cd_db_conn_t *c, const char *what)
{
    PGresult  *res;

    if (cd_cbp_lock(r, c) != CD_OK) {
        return NULL;
    }

    res = cd_request_row(r, c, CD_CBP_ROW_SQL " FOR UPDATE",
                         "period_not_found", "id",
                         "no chargeback period with id \"%s\"");
    if (res == NULL) {
        return NULL;
    }

    if (strcmp(PQgetvalue(res, 0, CD_CBP_STATUS), "finalized") == 0) {
        cd_respond_error(r, 409, "conflict_error", "period_finalized", "id",
                         "chargeback period %s is finalized: its figures "
                         "are frozen and it cannot be %s; late rows are "
                         "booked as adjustments to the next open period",
                         r->params[0], what);
        PQclear(res);
        return NULL;
    }

    return res;
}


/* 409 period_overlap naming the first other period in's range meets */
static int
cd_cbp_overlap_check(cd_request_t *r, cd_db_conn_t *c, const char *self,
    const cd_chargeback_input_t *in)
{
    char         starts[CD_INT_TEXT], ends[CD_INT_TEXT];
    PGresult    *res;
    const char  *params[3];

    snprintf(starts, sizeof(starts), "%lld", (long long) in->starts_us);
    snprintf(ends, sizeof(ends), "%lld", (long long) in->ends_us);

    params[0] = starts;
    params[1] = ends;
    params[2] = self;

    res = cd_db_exec(c, "SELECT id, " CD_SQL_TS("starts_at") ", "
                        CD_SQL_TS("ends_at") " FROM chargeback_periods"
                        " WHERE starts_at < " CD_CBP_AT("2")
                        " AND ends_at > " CD_CBP_AT("1")
                        " AND id <> $3 ORDER BY starts_at LIMIT 1",
                     3, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    if (PQntuples(res) > 0) {
        cd_respond_error(r, 409, "conflict_error", "period_overlap",
                         "starts_at", "the period overlaps chargeback "
                         "period %s [%s, %s): the periods of an "
                         "organization may not overlap",
                         PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                         PQgetvalue(res, 0, 2));
        PQclear(res);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/* writes in with sql ($1 id, $2 name, $3 starts, $4 ends, $5 group_by) */
static int
cd_cbp_write(cd_request_t *r, cd_db_conn_t *c, const char *id,
    const cd_chargeback_input_t *in, const char *sql)
{
    char         starts[CD_INT_TEXT], ends[CD_INT_TEXT];
    PGresult    *res;
    const char  *params[5];

    snprintf(starts, sizeof(starts), "%lld", (long long) in->starts_us);
    snprintf(ends, sizeof(ends), "%lld", (long long) in->ends_us);

    params[0] = id;
    params[1] = in->name;
    params[2] = starts;
    params[3] = ends;
    params[4] = in->group_by;

    res = cd_db_exec(c, sql, 5, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/* answers period id as it stands in c's transaction, after committing */
static void
cd_cbp_commit_detail(cd_request_t *r, cd_db_conn_t *c, const char *id,
    unsigned status, const char *what)
{
    json_t  *period;

    if (cd_cbp_detail(r, c, id, &period) != CD_OK) {
        return;
    }

    if (cd_request_commit_respond(r, c, 0, status, period) == CD_OK) {
        cd_log_info(CD_CHARGEBACK_SUBJECT, "%s %s org=%s by %s", what, id,
                    r->org_id, r->key_id);
    }
}


/* ---- routes ----------------------------------------------------------- */

void
cd_api_chargeback_create(cd_request_t *r)
{
    char                   id[CD_ID_MAX];
    json_t                *body;
    cd_db_conn_t          *c;
    cd_field_error_t       err;
    cd_chargeback_input_t  in;

    body = cd_request_json(r, cd_cbp_fields);
    if (body == NULL) {
        return;
    }

    if (cd_chargeback_body_parse(body, 0, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    if (cd_random_id(CD_CHARGEBACK_ID_PREFIX, CD_CHARGEBACK_ID_HEX / 2, id)
        != CD_OK)
    {
        cd_respond_error(r, 500, "api_error", "no_randomness", NULL,
                         "could not generate an id");
        json_decref(body);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    if (cd_cbp_lock(r, c) == CD_OK
        && cd_cbp_overlap_check(r, c, id, &in) == CD_OK
        && cd_cbp_write(r, c, id, &in,
                        "INSERT INTO chargeback_periods (id, org_id, name,"
                        " starts_at, ends_at, group_by) VALUES ($1,"
                        " current_setting('spendpol.org_id'), $2, "
                        CD_CBP_AT("3") ", " CD_CBP_AT("4") ", $5)")
           == CD_OK)
    {
        cd_cbp_commit_detail(r, c, id, 201, "created");
    }

    cd_request_end(r, c);
    json_decref(body);
}


static int
cd_cbp_filter(cd_request_t *r, const char *name, const char **value)
{
    *value = cd_query(r, name);

    if (*value != NULL && strcmp(*value, "open") != 0
        && strcmp(*value, "finalized") != 0)
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_filter",
                         name, "status must be open or finalized");
        return CD_ERROR;
    }

    return CD_OK;
}


/* GET /chargeback/periods: newest first, without figures */
void
cd_api_chargeback_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_CBP_COLUMNS, "chargeback_periods",
                           " AND ($4::text IS NULL OR status = $4)"),
        .default_limit = 100,
        .id_column = CD_CBP_ID,
        .created_us_column = CD_CBP_CREATED_US,
        .row_json = cd_cbp_json,
        .filters = { "status" },
        .filter = cd_cbp_filter
    };

    cd_page_respond(r, &page);
}


void
cd_api_chargeback_get(cd_request_t *r)
{
    json_t        *period;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_cbp_id_param);
    if (c == NULL) {
        return;
    }

    if (cd_cbp_detail(r, c, r->params[0], &period) == CD_OK) {
        cd_respond(r, 200, period);
    }

    cd_request_end(r, c);
}


/* PATCH: name, dates and group_by of an open period */
void
cd_api_chargeback_update(cd_request_t *r)
{
    json_t                *patch;
    PGresult              *old;
    cd_db_conn_t          *c;
    cd_field_error_t       err;
    cd_chargeback_input_t  in;

    if (cd_cbp_id_param(r) != CD_OK) {
        return;
    }

    patch = cd_request_json(r, cd_cbp_fields);
    if (patch == NULL) {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(patch);
        return;
    }

    old = cd_cbp_open_row(r, c, "changed");
    if (old == NULL) {
        goto done;
    }

    in.name = PQgetvalue(old, 0, CD_CBP_NAME);
    in.starts_us = strtoll(PQgetvalue(old, 0, CD_CBP_STARTS_US), NULL, 10);
    in.ends_us = strtoll(PQgetvalue(old, 0, CD_CBP_ENDS_US), NULL, 10);
    in.group_by = cd_chargeback_group_parse(PQgetvalue(old, 0,
                                                       CD_CBP_GROUP_BY));

    if (in.group_by == NULL) {
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "the stored period has an unknown group_by");
        goto done;
    }

    if (cd_chargeback_body_parse(patch, 1, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    if (cd_cbp_overlap_check(r, c, r->params[0], &in) == CD_OK
        && cd_cbp_write(r, c, r->params[0], &in,
                        "UPDATE chargeback_periods SET name = $2,"
                        " starts_at = " CD_CBP_AT("3") ", ends_at = "
                        CD_CBP_AT("4") ", group_by = $5,"
                        " updated_at = clock_timestamp() WHERE id = $1")
           == CD_OK)
    {
        cd_cbp_commit_detail(r, c, r->params[0], 200, "updated");
    }

done:

    PQclear(old);
    json_decref(patch);
    cd_request_end(r, c);
}


void
cd_api_chargeback_delete(cd_request_t *r)
{
    PGresult      *old, *res;
    const char    *params[1];
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_cbp_id_param);
    if (c == NULL) {
        return;
    }

    old = cd_cbp_open_row(r, c, "deleted");
    if (old == NULL) {
        cd_request_end(r, c);
        return;
    }

    PQclear(old);
    params[0] = r->params[0];

    res = cd_db_exec(c, "DELETE FROM chargeback_periods WHERE id = $1", 1,
                     params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    PQclear(res);

    if (cd_request_commit_respond(r, c, 0, 204, NULL) == CD_OK) {
        cd_log_info(CD_CHARGEBACK_SUBJECT, "deleted %s org=%s by %s",
                    r->params[0], r->org_id, r->key_id);
    }

    cd_request_end(r, c);
}


/*
 * POST .../finalize: under the chain lock (taken after the chargeback
 * lock; ingest takes only the chain lock, so the two never wait on each
 * other in a cycle) every committed row of the organisation has a
 * chain_seq up to the head read here, and no other can commit until this
 * transaction ends: the lines and adjustments stored are exactly the
 * rows up to finalized_seq.
 */
void
cd_api_chargeback_finalize(cd_request_t *r)
{
    PGresult      *old, *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (cd_cbp_id_param(r) != CD_OK || cd_request_no_options(r) != CD_OK) {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    old = cd_cbp_open_row(r, c, "finalized again");
    if (old == NULL) {
        cd_request_end(r, c);
        return;
    }

    PQclear(old);
    params[0] = r->params[0];
    params[1] = r->key_id;

    res = cd_db_exec(c, "SELECT spendpol_chain_lock("
                        "current_setting('spendpol.org_id'))", 0, NULL);
    PQclear(res);

    /* each statement below sees every row committed before the lock */
    if (res != NULL) {
        res = cd_db_exec(c, "UPDATE chargeback_periods SET status ="
                            " 'finalized', finalized_at = clock_timestamp(),"
                            " finalized_seq = coalesce((SELECT seq FROM"
                            " audit_chain_heads WHERE org_id ="
                            " current_setting('spendpol.org_id')), 0),"
                            " finalized_by = $2,"
                            " updated_at = clock_timestamp()"
                            " WHERE id = $1", 2, params);
        PQclear(res);
    }

    if (res != NULL && cd_cbp_no_jit(r, c) != CD_OK) {
        cd_request_end(r, c);
        return;
    }

    if (res != NULL) {
        res = cd_db_exec(c, "INSERT INTO chargeback_lines (period_id,"
                            " org_id, kind, original_period_id, group_value,"
                            " provider, model, cost_nano, input_tokens,"
                            " output_tokens, requests) SELECT $1,"
                            " current_setting('spendpol.org_id'), f.* FROM ("
                            CD_CBP_LIVE_SQL ") AS f", 1, params);
        PQclear(res);
    }

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    cd_cbp_commit_detail(r, c, r->params[0], 200, "finalized");
    cd_request_end(r, c);
}
