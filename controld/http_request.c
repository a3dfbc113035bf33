/*
 * What every route handler uses around its own logic: answers and
 * errors in the OpenAI shape, query arguments, the JSON body and its
 * members, cursors and paged lists, and the request's transaction.
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "controld.h"
#include "crypto.h"
#include "api.h"


/* ---- responses -------------------------------------------------------- */

void
cd_respond(cd_request_t *r, unsigned status, json_t *json)
{
    json_decref(r->response);
    r->status = status;
    r->response = json;
}


void
cd_respond_error(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    cd_respond_verror(r, status, type, code, field, fmt, args);
    va_end(args);
}


void
cd_respond_verror(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, va_list args)
{
    char     message[512];
    json_t  *error;

    vsnprintf(message, sizeof(message), fmt, args);

    /* echoed input may be cut mid-character or not UTF-8 at all */
    if (!cd_utf8_valid(message, strlen(message))) {
        for (char *p = message; *p != '\0'; p++) {
            if ((unsigned char) *p >= 0x80) {
                *p = '?';
            }
        }
    }

    error = json_pack("{s:s, s:s, s:s}", "type", type, "code", code,
                      "message", message);

    if (error != NULL && field != NULL) {
        json_object_set_new(error, "field", json_string(field));
    }

    cd_respond(r, status, error ? json_pack("{s:o}", "error", error) : NULL);
}


int
cd_field_error(cd_field_error_t *err, unsigned status, const char *code,
    const char *field, const char *fmt, ...)
{
    va_list  args;

    err->status = status;
    err->code = code;
    err->field = field;

    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);

    return CD_ERROR;
}


void
cd_respond_field_error(cd_request_t *r, const cd_field_error_t *err)
{
    cd_respond_error(r, err->status, "invalid_request_error", err->code,
                     err->field, "%s", err->message);
}


int
cd_id_param(cd_request_t *r, unsigned kind, const char *not_found)
{
    char  expected[96];

    if (sp_id_valid(kind, r->params[0], strlen(r->params[0]))) {
        return CD_OK;
    }

    sp_id_expected(kind, expected, sizeof(expected));
    cd_respond_error(r, 404, "not_found_error", not_found, "id",
                     "no %s with id \"%.64s\" (expected %s)",
                     sp_id_format(kind)->noun, r->params[0], expected);

    return CD_ERROR;
}


int
cd_id_field(const char *id, unsigned kind, const char *field,
    cd_field_error_t *err)
{
    char  expected[96];

    if (sp_id_valid(kind, id, strlen(id))) {
        return CD_OK;
    }

    sp_id_expected(kind, expected, sizeof(expected));

    return cd_field_error(err, 422, "invalid_value", field,
                          "%s must be %s", field, expected);
}


void
cd_respond_db_error(cd_request_t *r)
{
    cd_respond_error(r, 503, "api_error", "database_unavailable", NULL,
                     "the database is unavailable; retry later");
}


const char *
cd_query(cd_request_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND,
                                       name);
}


int
cd_query_time(cd_request_t *r, const char *name, int64_t *us, int *given)
{
    const char  *value;

    value = cd_query(r, name);
    *given = value != NULL;

    if (value != NULL && cd_rfc3339_parse(value, us) != CD_OK) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_time",
                         name, "%s must be an RFC 3339 date-time, e.g. "
                         "\"2026-12-01T00:00:00Z\"", name);
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_query_time_text(cd_request_t *r, const char *name, char *us, size_t len)
{
    int      given;
    int64_t  t;

    us[0] = '\0';

    if (cd_query_time(r, name, &t, &given) != CD_OK) {
        return CD_ERROR;
    }

    if (given) {
        snprintf(us, len, "%lld", (long long) t);
    }

    return CD_OK;
}


int
cd_query_limit(cd_request_t *r, long def, long max, long *limit)
{
    long         n;
    char        *end;
    const char  *value;

    value = cd_query(r, "limit");

    if (value == NULL) {
        *limit = def;
        return CD_OK;
    }

    errno = 0;
    n = strtol(value, &end, 10);

    if (errno != 0 || end == value || *end != '\0' || n < 1 || n > max
        || !isdigit((unsigned char) value[0]))
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_limit",
                         "limit", "limit must be an integer from 1 to %ld",
                         max);
        return CD_ERROR;
    }

    *limit = n;

    return CD_OK;
}


/* ---- JSON input ------------------------------------------------------- */

json_t *
cd_request_json(cd_request_t *r, const char *const *allowed)
{
    size_t         i;
    json_t        *root, *value;
    const char    *key;
    json_error_t   error;

    if (r->body_len == 0) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_json",
                         NULL, "the request body must be a JSON object");
        return NULL;
    }

    root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &error);

    if (root == NULL) {
        /* error.text may quote the body, which may hold a secret */
        cd_respond_error(r, 400, "invalid_request_error", "invalid_json",
                         NULL, "the request body is not valid JSON (line %d,"
                         " column %d)", error.line, error.column);
        return NULL;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        cd_respond_error(r, 400, "invalid_request_error", "invalid_json",
                         NULL, "the request body must be a JSON object");
        return NULL;
    }

    /* allowed NULL: any members, left to the resource's validator */
    json_object_foreach(root, key, value) {
        if (allowed == NULL) {
            break;
        }

        for (i = 0; allowed[i] != NULL; i++) {
            if (strcmp(key, allowed[i]) == 0) {
                break;
            }
        }

        if (allowed[i] == NULL) {
            cd_respond_error(r, 400, "invalid_request_error", "unknown_field",
                             key, "unknown field \"%.64s\"", key);
            json_decref(root);
            return NULL;
        }
    }

    return root;
}


int
cd_request_no_options(cd_request_t *r)
{
    json_t             *body;
    static const char  *none[] = { NULL };

    if (r->body_len == 0) {
        return CD_OK;
    }

    body = cd_request_json(r, none);
    if (body == NULL) {
        return CD_ERROR;
    }

    json_decref(body);

    return CD_OK;
}


int
cd_bool_parse(json_t *obj, const char *field, int *out,
    cd_field_error_t *err)
{
    json_t  *value;

    value = json_object_get(obj, field);

    if (value == NULL) {
        *out = -1;
        return CD_OK;
    }

    if (!json_is_boolean(value)) {
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be true or false", field);
    }

    *out = json_is_true(value);

    return CD_OK;
}


int
cd_json_bool(cd_request_t *r, json_t *obj, const char *field, int *out)
{
    cd_field_error_t  err;

    if (cd_bool_parse(obj, field, out, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_json_string(cd_request_t *r, json_t *obj, const char *field,
    int required, size_t min_chars, size_t max_chars, const char **out)
{
    json_t      *value;
    const char  *problem;

    *out = NULL;
    value = json_object_get(obj, field);

    if (value == NULL || json_is_null(value)) {
        if (required) {
            cd_respond_error(r, 422, "invalid_request_error",
                             "missing_field", field,
                             "%s is required", field);
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (!json_is_string(value)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         field, "%s must be a string", field);
        return CD_ERROR;
    }

    if (strlen(json_string_value(value)) != json_string_length(value)) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         field, "%s must not contain NUL characters", field);
        return CD_ERROR;
    }

    problem = cd_validate_text(json_string_value(value), min_chars,
                               max_chars);

    if (problem != NULL) {
        if (strcmp(problem, "control_character") == 0) {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                             field, "%s must not contain control characters",
                             field);

        } else if (min_chars > 0 && strcmp(problem, "too_short") == 0) {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                             field, "%s must be a non-empty string of at "
                             "most %zu characters", field, max_chars);

        } else {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                             field, "%s must be at most %zu characters",
                             field, max_chars);
        }

        return CD_ERROR;
    }

    *out = json_string_value(value);

    return CD_OK;
}


int
cd_json_set_str(json_t *obj, const char *key, const char *value)
{
    return json_object_set_new(obj, key,
                               value ? json_string(value) : json_null())
           == 0 ? CD_OK : CD_ERROR;
}


int
cd_json_set_column(json_t *obj, const char *key, PGresult *res, int row,
    int col)
{
    return cd_json_set_str(obj, key, cd_db_value(res, row, col));
}


/* ---- cursors: base64url of "<microseconds>:<id>" ----------------------- */

static const char  cd_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


static size_t
cd_b64url_encode(const uint8_t *in, size_t len, char *out)
{
    size_t    i, o;
    uint32_t  v;

    for (i = 0, o = 0; i + 2 < len; i += 3) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[o++] = cd_b64url[v >> 18 & 63];
        out[o++] = cd_b64url[v >> 12 & 63];
        out[o++] = cd_b64url[v >> 6 & 63];
        out[o++] = cd_b64url[v & 63];
    }

    if (len - i == 1) {
        v = (uint32_t) in[i] << 16;
        out[o++] = cd_b64url[v >> 18 & 63];
        out[o++] = cd_b64url[v >> 12 & 63];

    } else if (len - i == 2) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        out[o++] = cd_b64url[v >> 18 & 63];
        out[o++] = cd_b64url[v >> 12 & 63];
        out[o++] = cd_b64url[v >> 6 & 63];
    }

    out[o] = '\0';

    return o;
}


static int
cd_b64url_value(char c)
{
    const char  *p;

    if (c == '\0') {
        return -1;
    }

    p = strchr(cd_b64url, c);

    return p ? (int) (p - cd_b64url) : -1;
}


/* returns the decoded length or -1 */
static ssize_t
cd_b64url_decode(const char *in, uint8_t *out, size_t outlen)
{
    int       d;
    size_t    i, len, o, bits;
    uint32_t  acc;

    len = strlen(in);

    if (len % 4 == 1) {
        return -1;
    }

    acc = 0;
    bits = 0;
    o = 0;

    for (i = 0; i < len; i++) {
        d = cd_b64url_value(in[i]);
        if (d < 0) {
            return -1;
        }

        acc = acc << 6 | (uint32_t) d;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;

            if (o == outlen) {
                return -1;
            }

            out[o++] = (uint8_t) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    /* canonical: the leftover bits are zero */
    if (acc != 0) {
        return -1;
    }

    return (ssize_t) o;
}


static int
cd_id_chars_valid(const char *id, size_t len)
{
    size_t  i;

    if (len == 0 || len >= CD_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!isalnum((unsigned char) id[i]) && id[i] != '_' && id[i] != '-')
        {
            return 0;
        }
    }

    return 1;
}


int
cd_cursor_encode(int64_t us, const char *id, char *out, size_t outlen)
{
    int   n;
    char  plain[96];

    n = snprintf(plain, sizeof(plain), "%lld:%s", (long long) us, id);

    if (n < 0 || (size_t) n >= sizeof(plain)
        || ((size_t) n + 2) / 3 * 4 + 1 > outlen)
    {
        return CD_ERROR;
    }

    cd_b64url_encode((const uint8_t *) plain, (size_t) n, out);

    return CD_OK;
}


int
cd_cursor_decode(const char *cursor, int64_t *us, char *id, size_t idlen)
{
    char        plain[96], *colon, *end;
    ssize_t     n;
    long long   v;

    if (strlen(cursor) > CD_CURSOR_MAX) {
        return CD_ERROR;
    }

    n = cd_b64url_decode(cursor, (uint8_t *) plain, sizeof(plain) - 1);
    if (n <= 0) {
        return CD_ERROR;
    }

    plain[n] = '\0';

    if (memchr(plain, '\0', (size_t) n) != NULL) {
        return CD_ERROR;
    }

    colon = strchr(plain, ':');

    if (colon == NULL || colon == plain
        || !(isdigit((unsigned char) plain[0]) || plain[0] == '-'))
    {
        return CD_ERROR;
    }

    errno = 0;
    v = strtoll(plain, &end, 10);

    if (errno != 0 || end != colon) {
        return CD_ERROR;
    }

    if (!cd_id_chars_valid(colon + 1, strlen(colon + 1))
        || strlen(colon + 1) >= idlen)
    {
        return CD_ERROR;
    }

    *us = (int64_t) v;
    strcpy(id, colon + 1);

    return CD_OK;
}


/* ---- paged lists ------------------------------------------------------ */

json_t *
cd_rows_json(PGresult *res, int n, cd_page_row_pt row_json)
{
    int      i;
    json_t  *data, *item;

    data = json_array();

    for (i = 0; data != NULL && i < n; i++) {
        item = row_json(res, i);

        if (item == NULL || json_array_append_new(data, item) != 0) {
            json_decref(data);
            data = NULL;
        }
    }

    return data;
}


void
cd_page_respond(cd_request_t *r, const cd_page_t *page)
{
    int            i, n, nparams;
    long           limit;
    char           id[CD_ID_MAX], us_text[32], limit_text[32];
    char           cursor[CD_CURSOR_MAX + 1];
    json_t        *data, *list;
    int64_t        us;
    PGresult      *res;
    const char    *cursor_in, *params[3 + CD_PAGE_FILTERS_MAX];
    cd_db_conn_t  *c;

    if (cd_query_limit(r, page->default_limit, CD_PAGE_LIMIT_MAX, &limit)
        != CD_OK)
    {
        return;
    }

    nparams = 3;

    for (i = 0; i < CD_PAGE_FILTERS_MAX && page->filters[i] != NULL; i++) {
        if (page->filter(r, page->filters[i], &params[nparams++]) != CD_OK) {
            return;
        }
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

    /* one more than asked tells whether there is a next page */
    snprintf(limit_text, sizeof(limit_text), "%ld", limit + 1);
    params[2] = limit_text;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, page->sql, nparams, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    n = PQntuples(res);
    data = cd_rows_json(res, n < limit ? n : (int) limit, page->row_json);

    list = NULL;

    if (data != NULL) {
        list = json_pack("{s:o, s:n}", "data", data, "next_cursor");

        if (list != NULL && n > limit
            && cd_cursor_encode(strtoll(PQgetvalue(res, limit - 1,
                                                   page->created_us_column),
                                        NULL, 10),
                                PQgetvalue(res, limit - 1, page->id_column),
                                cursor, sizeof(cursor)) == CD_OK)
        {
            json_object_set_new(list, "next_cursor", json_string(cursor));
        }
    }

    PQclear(res);
    cd_request_end(r, c);
    cd_respond(r, 200, list);
}


/* ---- request transactions --------------------------------------------- */

cd_db_conn_t *
cd_request_begin(cd_request_t *r)
{
    cd_db_conn_t  *c;

    /*
     * every tenant statement runs as spendpol_app under the key's org,
     * over the tenant pool's login, which cannot become spendpol_system
     */
    c = cd_db_acquire_begin(&r->app->tenant_db, CD_DB_WAIT_MS, CD_ROLE_APP,
                            r->org_id);
    if (c == NULL) {
        cd_respond_db_error(r);
        return NULL;
    }

    return c;
}


cd_db_conn_t *
cd_request_begin_param(cd_request_t *r, int (*check)(cd_request_t *r))
{
    if (check(r) != CD_OK) {
        return NULL;
    }

    return cd_request_begin(r);
}


int
cd_request_commit(cd_request_t *r, cd_db_conn_t *c)
{
    if (cd_db_commit(c) != CD_OK) {
        cd_respond_error(r, 500, "api_error", "commit_failed", NULL,
                         "the change could not be committed; nothing was "
                         "written, retry");
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_request_commit_respond(cd_request_t *r, cd_db_conn_t *c, int publish,
    unsigned status, json_t *json)
{
    if (cd_request_commit(r, c) != CD_OK) {
        json_decref(json);
        return CD_ERROR;
    }

    if (publish) {
        cd_snapshot_signal(r->app);
    }

    cd_respond(r, status, json);

    return CD_OK;
}


void
cd_request_end(cd_request_t *r, cd_db_conn_t *c)
{
    cd_db_rollback(c);
    cd_db_release(&r->app->tenant_db, c);
}


/*
 * Per-organisation caps. A transaction-scoped advisory lock on (table,
 * org) serialises creations of one kind in one organisation, so two
 * concurrent requests at cap - 1 cannot both pass; the count stops at cap
 * rows, so the check costs O(cap) at most.
 */
int
cd_org_cap_check(cd_request_t *r, cd_db_conn_t *c, const char *table,
    const char *where, long cap, const char *setting, const char *what)
{
    int          n;
    char         sql[512], limit[24];
    PGresult    *res;
    const char  *params[1];

    params[0] = table;
    res = cd_db_exec(c, "SELECT pg_advisory_xact_lock(hashtext($1 || ':' ||"
                        " current_setting('spendpol.org_id')))", 1, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    PQclear(res);

    snprintf(limit, sizeof(limit), "%ld", cap);
    n = snprintf(sql, sizeof(sql), "SELECT count(*) FROM (SELECT 1 FROM %s"
                 " WHERE org_id = current_setting('spendpol.org_id')%s%s"
                 " LIMIT $1::bigint) capped", table, where ? " AND " : "",
                 where ? where : "");

    if (n < 0 || (size_t) n >= sizeof(sql)) {
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "internal error");
        return CD_ERROR;
    }

    params[0] = limit;
    res = cd_db_exec(c, sql, 1, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    n = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);

    if (n >= cap) {
        cd_respond_error(r, 422, "invalid_request_error", "org_limit_reached",
                         NULL, "this organization already has %ld %s, the "
                         "most allowed (%s=%ld); delete some or raise %s",
                         cap, what, setting, cap, setting);
        return CD_ERROR;
    }

    return CD_OK;
}


cd_db_conn_t *
cd_request_begin_create(cd_request_t *r, const char *prefix, char *id,
    const char *table, const char *where, long cap, const char *setting,
    const char *what)
{
    cd_db_conn_t  *c;

    if (prefix != NULL
        && cd_random_id(prefix, CD_RANDOM_ID_BYTES, id) != CD_OK)
    {
        cd_respond_error(r, 500, "api_error", "no_randomness", NULL,
                         "could not generate an id");
        return NULL;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return NULL;
    }

    if (cd_org_cap_check(r, c, table, where, cap, setting, what) != CD_OK) {
        cd_request_end(r, c);
        return NULL;
    }

    return c;
}


/* a statement failed inside a request: 503 when the server went away */
void
cd_respond_statement_error(cd_request_t *r, cd_db_conn_t *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK) {
        cd_respond_db_error(r);
        return;
    }

    cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                     "the request failed inside the database; nothing was "
                     "written");
}


/*
 * A statement that names one row: found when it returned a row or
 * changed one (DELETE and UPDATE without RETURNING count by their
 * command tag).
 */
int
cd_request_found(cd_request_t *r, cd_db_conn_t *c, PGresult *res,
    const char *code, const char *field, const char *fmt, ...)
{
    va_list  args;

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) > 0
                                               : strcmp(PQcmdTuples(res),
                                                        "0") != 0)
    {
        return CD_OK;
    }

    va_start(args, fmt);
    cd_respond_verror(r, 404, "not_found_error", code, field, fmt, args);
    va_end(args);

    return CD_ERROR;
}


PGresult *
cd_request_row(cd_request_t *r, cd_db_conn_t *c, const char *sql,
    const char *code, const char *field, const char *fmt)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = r->params[0];
    res = cd_db_exec(c, sql, 1, params);

    if (cd_request_found(r, c, res, code, field, fmt, r->params[0])
        != CD_OK)
    {
        PQclear(res);
        return NULL;
    }

    return res;
}


void
cd_row_respond(cd_request_t *r, int (*check)(cd_request_t *r),
    const char *sql, cd_page_row_pt row_json, const char *code,
    const char *field, const char *fmt)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, check);
    if (c == NULL) {
        return;
    }

    res = cd_request_row(r, c, sql, code, field, fmt);

    if (res != NULL) {
        cd_respond(r, 200, row_json(res, 0));
    }

    PQclear(res);
    cd_request_end(r, c);
}


int
cd_delete_respond(cd_request_t *r, int (*check)(cd_request_t *r),
    const char *sql, const char *code, const char *field, const char *fmt)
{
    int            rc;
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, check);
    if (c == NULL) {
        return CD_ERROR;
    }

    res = cd_request_row(r, c, sql, code, field, fmt);

    rc = res != NULL && cd_request_commit_respond(r, c, 1, 204, NULL) == CD_OK
         ? CD_OK : CD_ERROR;

    PQclear(res);
    cd_request_end(r, c);

    return rc;
}


/*
 * A list without pages: 200 {"data": [every row of sql]}; sql takes no
 * parameters and bounds itself.
 */
void
cd_list_respond(cd_request_t *r, const char *sql, cd_page_row_pt row_json)
{
    json_t        *data;
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, sql, 0, NULL);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    data = cd_rows_json(res, PQntuples(res), row_json);

    PQclear(res);
    cd_request_end(r, c);
    cd_respond(r, 200, data ? json_pack("{s:o}", "data", data) : NULL);
}
