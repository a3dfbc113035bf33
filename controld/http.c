/*
 * The admin REST API: libmicrohttpd with an internal thread pool, a route
 * table, admin-key authentication, request bodies capped at 1 MiB, and
 * the JSON helpers every resource uses.
 */

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include <openssl/crypto.h>

#include "controld.h"


#define CD_HTTP_SUBJECT      "http"
#define CD_HTTP_THREADS      4
#define CD_DB_WAIT_MS        5000


const cd_route_t  cd_routes[] = {
    { "GET",    "/healthz",                 cd_api_healthz,          0 },
    { "GET",    "/api-keys",                cd_api_keys_list,        1 },
    { "POST",   "/api-keys",                cd_api_keys_create,      1 },
    { "GET",    "/api-keys/{id}",           cd_api_keys_get,         1 },
    { "DELETE", "/api-keys/{id}",           cd_api_keys_revoke,      1 },
    { "PATCH",  "/api-keys/{id}",           cd_api_keys_update,      1 },
    { "POST",   "/api-keys/{id}/rotate",    cd_api_keys_rotate,      1 },
    { "GET",    "/providers",               cd_api_providers_list,   1 },
    { "GET",    "/providers/{name}",        cd_api_providers_get,    1 },
    { "PUT",    "/providers/{name}",        cd_api_providers_put,    1 },
    { "DELETE", "/providers/{name}",        cd_api_providers_delete, 1 },
    { "GET",    "/audit-logs",              cd_api_audit_list,       1 },
    { "GET",    "/org",                     cd_api_org_get,          1 },
    { "PATCH",  "/org",                     cd_api_org_update,       1 },
    { "PUT",    "/org",                     cd_api_org_update,       1 },
    { "GET",    "/pricing",                 cd_api_pricing_list,     1 },
    { "GET",    "/pricing/{provider}/{model}", cd_api_pricing_get,   1 },
    { "PUT",    "/pricing/{provider}/{model}", cd_api_pricing_put,   1 },
    { "DELETE", "/pricing/{provider}/{model}", cd_api_pricing_delete, 1 },
    { "GET",    "/alerts",                  cd_api_alerts_list,      1 },
    { "POST",   "/alerts",                  cd_api_alert_rules_create, 1 },
    { "GET",    "/alerts/rules",            cd_api_alert_rules_list, 1 },
    { "POST",   "/alerts/rules",            cd_api_alert_rules_create, 1 },
    { "DELETE", "/alerts/rules/{id}",       cd_api_alert_rules_delete, 1 },
    { "GET",    "/alerts/{id}",             cd_api_alerts_get,       1 },
    { "POST",   "/alerts/{id}/acknowledge", cd_api_alerts_acknowledge, 1 },
    { "GET",    "/budgets",                 cd_api_budgets_list,     1 },
    { "POST",   "/budgets",                 cd_api_budgets_create,   1 },
    { "GET",    "/budgets/{id}",            cd_api_budgets_get,      1 },
    { "PATCH",  "/budgets/{id}",            cd_api_budgets_update,   1 },
    { "DELETE", "/budgets/{id}",            cd_api_budgets_delete,   1 },
    { "GET",    "/budgets/{id}/spend",      cd_api_budgets_spend,    1 },
    { "GET",    "/agents",                  cd_api_agents_list,      1 },
    { "POST",   "/agents",                  cd_api_agents_create,    1 },
    { "GET",    "/agents/{id}",             cd_api_agents_get,       1 },
    { "PATCH",  "/agents/{id}",             cd_api_agents_update,    1 },
    { "DELETE", "/agents/{id}",             cd_api_agents_delete,    1 },
    { "POST",   "/agents/{id}/pause",       cd_api_agents_pause,     1 },
    { "POST",   "/agents/{id}/resume",      cd_api_agents_resume,    1 },
};

const size_t  cd_routes_count = sizeof(cd_routes) / sizeof(cd_routes[0]);


/* per-connection state across the access handler's calls */
typedef struct {
    char    *body;
    size_t   len;
    size_t   cap;
    int      too_large;
    int      responded;
} cd_http_upload_t;


/* ---- routing ---------------------------------------------------------- */

/*
 * Compares one pattern with path segment by segment; "{x}" matches one
 * non-empty segment. A trailing '/' on the path is not a match.
 */
static int
cd_route_path_matches(const char *pattern, const char *path,
    cd_param_t *params, size_t *nparams)
{
    size_t       n;
    const char  *p, *s, *p_end, *s_end;

    p = pattern;
    s = path;
    n = 0;

    while (*p == '/' && *s == '/') {
        p++;
        s++;
        p_end = p + strcspn(p, "/");
        s_end = s + strcspn(s, "/");

        if (*p == '{') {
            if (s_end == s || n == CD_ROUTE_MAX_PARAMS) {
                return 0;
            }

            params[n].data = s;
            params[n].len = s_end - s;
            n++;

        } else if (p_end - p != s_end - s || memcmp(p, s, p_end - p) != 0) {
            return 0;
        }

        p = p_end;
        s = s_end;
    }

    if (*p != '\0' || *s != '\0') {
        return 0;
    }

    *nparams = n;

    return 1;
}


cd_route_match_e
cd_route_match(const cd_route_t *routes, size_t n, const char *method,
    const char *path, const cd_route_t **route, cd_param_t *params,
    size_t *nparams)
{
    size_t             i, count;
    cd_param_t         scratch[CD_ROUTE_MAX_PARAMS];
    cd_route_match_e   rc;

    rc = CD_ROUTE_NOT_FOUND;

    for (i = 0; i < n; i++) {
        if (!cd_route_path_matches(routes[i].pattern, path, scratch, &count))
        {
            continue;
        }

        if (strcmp(routes[i].method, method) != 0
            && !(strcmp(method, "HEAD") == 0
                 && strcmp(routes[i].method, "GET") == 0))
        {
            rc = CD_ROUTE_BAD_METHOD;
            continue;
        }

        *route = &routes[i];
        memcpy(params, scratch, count * sizeof(cd_param_t));
        *nparams = count;

        return CD_ROUTE_FOUND;
    }

    return rc;
}


/* "GET, POST" for a path, into buf */
static const char *
cd_route_allow(const char *path, char *buf, size_t len)
{
    size_t       i, used, nparams;
    cd_param_t   params[CD_ROUTE_MAX_PARAMS];

    used = 0;
    buf[0] = '\0';

    for (i = 0; i < cd_routes_count; i++) {
        if (cd_route_path_matches(cd_routes[i].pattern, path, params,
                                  &nparams))
        {
            used += snprintf(buf + used, used < len ? len - used : 0, "%s%s",
                             used ? ", " : "", cd_routes[i].method);
        }
    }

    return buf;
}


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


void
cd_respond_field_error(cd_request_t *r, const cd_field_error_t *err)
{
    cd_respond_error(r, err->status, "invalid_request_error", err->code,
                     err->field, "%s", err->message);
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

    json_object_foreach(root, key, value) {
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


const char *
cd_validate_text(const char *s, size_t min_chars, size_t max_chars)
{
    size_t               chars;
    const unsigned char  *p;

    chars = 0;

    for (p = (const unsigned char *) s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return "control_character";
        }

        /* count code points: continuation bytes are 10xxxxxx */
        if ((*p & 0xc0) != 0x80) {
            chars++;
        }
    }

    if (chars < min_chars) {
        return "too_short";
    }

    if (chars > max_chars) {
        return "too_long";
    }

    return NULL;
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


/* ---- authentication --------------------------------------------------- */

int
cd_authenticate(cd_request_t *r)
{
    int             rc, formats[1], lengths[1];
    size_t          len;
    uint8_t         hash[SP_KEY_HASH_LEN];
    PGresult       *res;
    const char     *header, *key, *params[1];
    cd_db_conn_t   *c;

    header = MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_AUTHORIZATION);

    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0) {
        cd_respond_error(r, 401, "authentication_error", "missing_api_key",
                         NULL, "send an admin key as \"Authorization: Bearer "
                         "sp_key_...\"");
        return CD_ERROR;
    }

    key = header + 7;

    while (*key == ' ') {
        key++;
    }

    len = strlen(key);

    while (len > 0 && key[len - 1] == ' ') {
        len--;
    }

    if (!sp_key_is_wellformed(key, len)) {
        cd_respond_error(r, 401, "authentication_error", "missing_api_key",
                         NULL, "the Authorization header does not hold a "
                         "Spendpol key (\"Bearer sp_key_\" followed by 48 "
                         "hex characters)");
        return CD_ERROR;
    }

    sp_key_hash(key, len, hash);

    /* across organisations: the key names its own tenant */
    c = cd_db_acquire_begin(&r->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            NULL);
    if (c == NULL) {
        cd_respond_db_error(r);
        return CD_ERROR;
    }

    params[0] = (const char *) hash;
    lengths[0] = SP_KEY_HASH_LEN;
    formats[0] = 1;

    res = cd_db_exec_bin(c, "SELECT id, org_id, 'admin' = ANY (scopes) "
                            "FROM api_keys WHERE key_hash = $1 AND active",
                         1, params, lengths, formats);
    rc = CD_ERROR;

    if (res == NULL) {
        cd_respond_db_error(r);

    } else if (PQntuples(res) == 0) {
        cd_respond_error(r, 401, "authentication_error", "invalid_api_key",
                         NULL, "the API key is unknown or revoked");

    } else if (!cd_db_bool(res, 0, 2)) {
        cd_respond_error(r, 403, "permission_error", "insufficient_scope",
                         NULL, "this API key lacks the admin scope");

    } else {
        snprintf(r->key_id, sizeof(r->key_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(r->org_id, sizeof(r->org_id), "%s", PQgetvalue(res, 0, 1));
        rc = CD_OK;
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&r->app->db, c);

    return rc;
}


/* ---- the server ------------------------------------------------------- */

/*
 * A response text, freed by libmicrohttpd once sent. Created and rotated
 * keys are answered in plaintext once: no copy of them outlives the
 * answer (jansson's own copies are wiped by cd_json_wipe_on_free).
 */
static void
cd_http_response_free(void *text)
{
    if (text != NULL) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
}


static enum MHD_Result
cd_http_send(struct MHD_Connection *connection, cd_request_t *r)
{
    char                  *text, allow[64];
    size_t                 len;
    enum MHD_Result        ret;
    struct MHD_Response   *response;

    text = NULL;
    len = 0;

    if (r->response != NULL) {
        text = json_dumps(r->response, JSON_COMPACT);

        if (text == NULL) {
            r->status = 500;
        } else {
            len = strlen(text);
        }
    }

    if (text == NULL && r->status != 204) {
        r->status = r->status >= 400 ? r->status : 500;
        text = strdup("{\"error\":{\"type\":\"api_error\",\"code\":"
                      "\"internal_error\",\"message\":\"internal error\"}}");
        len = text ? strlen(text) : 0;
    }

    if (text != NULL) {
        response = MHD_create_response_from_buffer_with_free_callback(
                       len, text, cd_http_response_free);

    } else {
        response = MHD_create_response_from_buffer(0, (char *) "",
                                                   MHD_RESPMEM_PERSISTENT);
    }

    if (response == NULL) {
        cd_http_response_free(text);
        return MHD_NO;
    }

    if (r->status != 204) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json");
    }

    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL,
                            "no-store");

    if (r->status == 401) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer");
    }

    if (r->status == 405) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW,
                                cd_route_allow(r->path, allow,
                                               sizeof(allow)));
    }

    ret = MHD_queue_response(connection, r->status, response);
    MHD_destroy_response(response);

    return ret;
}


static void
cd_http_dispatch(cd_request_t *r)
{
    size_t              i, nparams;
    cd_param_t          params[CD_ROUTE_MAX_PARAMS];
    const cd_route_t   *route;

    switch (cd_route_match(cd_routes, cd_routes_count, r->method, r->path,
                           &route, params, &nparams))
    {
    case CD_ROUTE_NOT_FOUND:
        cd_respond_error(r, 404, "not_found_error", "unknown_route", NULL,
                         "no route for %s %.200s", r->method, r->path);
        return;

    case CD_ROUTE_BAD_METHOD:
        cd_respond_error(r, 405, "invalid_request_error",
                         "method_not_allowed", NULL,
                         "%s is not allowed on %.200s", r->method, r->path);
        return;

    case CD_ROUTE_FOUND:
        break;
    }

    for (i = 0; i < nparams; i++) {
        r->params[i] = strndup(params[i].data, params[i].len);

        if (r->params[i] == NULL) {
            return;
        }

        r->nparams = i + 1;
    }

    if (route->admin && cd_authenticate(r) != CD_OK) {
        return;
    }

    route->handler(r);
}


/* bodies carry provider keys (PUT /providers): wiped before freed */
static void
cd_http_body_free(cd_http_upload_t *up)
{
    if (up->body != NULL) {
        OPENSSL_cleanse(up->body, up->cap);
        free(up->body);
    }

    up->body = NULL;
    up->len = 0;
    up->cap = 0;
}


static enum MHD_Result
cd_http_access(void *cls, struct MHD_Connection *connection,
    const char *url, const char *method, const char *version,
    const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    char                *grown;
    size_t               i, cap, len;
    long long            length;
    const char          *header;
    enum MHD_Result      ret;
    cd_request_t         r;
    struct timespec      start, end;
    cd_app_t            *app;
    cd_http_upload_t    *up;

    (void) version;
    app = cls;
    up = *con_cls;

    if (up == NULL) {
        up = calloc(1, sizeof(cd_http_upload_t));
        if (up == NULL) {
            return MHD_NO;
        }

        *con_cls = up;

        header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                             MHD_HTTP_HEADER_CONTENT_LENGTH);

        if (header != NULL) {
            length = strtoll(header, NULL, 10);

            /* refuse before reading a byte of an oversized body */
            if (length > app->config.api_body_max) {
                up->too_large = 1;
            }
        }

        if (!up->too_large) {
            return MHD_YES;
        }
    }

    if (*upload_data_size != 0) {
        if (!up->too_large
            && up->len + *upload_data_size
               > (size_t) app->config.api_body_max)
        {
            up->too_large = 1;
            cd_http_body_free(up);
            up->len = 0;
        }

        if (!up->too_large) {
            if (up->len + *upload_data_size + 1 > up->cap) {
                cap = up->cap ? up->cap : 4096;

                while (cap < up->len + *upload_data_size + 1) {
                    cap *= 2;
                }

                /* not realloc(): the old copy may hold a provider key */
                grown = malloc(cap);
                if (grown == NULL) {
                    return MHD_NO;
                }

                len = up->len;

                if (len) {
                    memcpy(grown, up->body, len);
                }

                /* cd_http_body_free() zeroes len: keep what was read */
                cd_http_body_free(up);
                up->body = grown;
                up->len = len;
                up->cap = cap;
            }

            memcpy(up->body + up->len, upload_data, *upload_data_size);
            up->len += *upload_data_size;
            up->body[up->len] = '\0';
        }

        *upload_data_size = 0;

        return MHD_YES;
    }

    if (up->responded) {
        return MHD_YES;
    }

    up->responded = 1;

    clock_gettime(CLOCK_MONOTONIC, &start);

    memset(&r, 0, sizeof(r));
    r.app = cls;
    r.connection = connection;
    r.method = method;
    r.path = url;
    r.body = up->body;
    r.body_len = up->len;

    if (up->too_large) {
        cd_respond_error(&r, 413, "invalid_request_error", "body_too_large",
                         NULL, "the request body exceeds the limit of %ld "
                         "bytes (SPENDPOL_API_BODY_MAX)",
                         app->config.api_body_max);
    } else {
        cd_http_dispatch(&r);
    }

    if (r.status == 0) {
        cd_respond_error(&r, 500, "api_error", "internal_error", NULL,
                         "internal error");
    }

    ret = cd_http_send(connection, &r);

    clock_gettime(CLOCK_MONOTONIC, &end);

    cd_log(r.status >= 500 ? CD_LOG_WARN : CD_LOG_INFO, CD_HTTP_SUBJECT,
           "%s %.200s -> %u (%.1f ms)%s%s", method, url, r.status,
           (double) (end.tv_sec - start.tv_sec) * 1e3
           + (double) (end.tv_nsec - start.tv_nsec) / 1e6,
           r.org_id[0] ? " org=" : "", r.org_id);

    for (i = 0; i < r.nparams; i++) {
        free(r.params[i]);
    }

    json_decref(r.response);

    return ret;
}


static void
cd_http_completed(void *cls, struct MHD_Connection *connection,
    void **con_cls, enum MHD_RequestTerminationCode toe)
{
    cd_http_upload_t  *up;

    (void) cls;
    (void) connection;
    (void) toe;
    up = *con_cls;

    if (up != NULL) {
        cd_http_body_free(up);
        free(up);
        *con_cls = NULL;
    }
}


static void
cd_http_log(void *cls, const char *fmt, va_list ap)
{
    char  message[512];

    (void) cls;
    vsnprintf(message, sizeof(message), fmt, ap);
    message[strcspn(message, "\n")] = '\0';
    cd_log_warn(CD_HTTP_SUBJECT, "libmicrohttpd: %s", message);
}


int
cd_http_start(cd_app_t *app)
{
    int                         rc;
    char                        port[8];
    unsigned                    flags;
    struct addrinfo             hints, *ai;
    struct MHD_Daemon          *daemon;
    const union MHD_DaemonInfo *info;
    struct MHD_OptionItem       opts[8], *ops;

    memset(&hints, 0, sizeof(hints));
    memset(opts, 0, sizeof(opts));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%u", app->config.api_port);

    rc = getaddrinfo(app->config.api_host, port, &hints, &ai);
    if (rc != 0) {
        cd_log_error(CD_HTTP_SUBJECT, "cannot resolve %s: %s",
                     app->config.api_host, gai_strerror(rc));
        return CD_ERROR;
    }

    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG
            | MHD_USE_AUTO;

    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }

    ops = opts;

    /*
     * Limits against a client that holds connections or sends slowly:
     * the idle timeout closes a connection that stalls mid-request, the
     * per-IP limit keeps one host from taking every connection.
     */
    ops->option = MHD_OPTION_CONNECTION_TIMEOUT;
    ops->value = app->config.api_connection_timeout;
    ops++;
    ops->option = MHD_OPTION_CONNECTION_LIMIT;
    ops->value = app->config.api_connection_limit;
    ops++;

    if (app->config.api_per_ip_connection_limit > 0) {
        ops->option = MHD_OPTION_PER_IP_CONNECTION_LIMIT;
        ops->value = app->config.api_per_ip_connection_limit;
        ops++;
    }

    if (app->config.api_tls_cert_pem != NULL) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            cd_log_error(CD_HTTP_SUBJECT, "SPENDPOL_API_TLS_CERT is set but "
                         "this libmicrohttpd has no TLS support");
            freeaddrinfo(ai);
            return CD_ERROR;
        }

        flags |= MHD_USE_TLS;
        ops->option = MHD_OPTION_HTTPS_MEM_CERT;
        ops->ptr_value = app->config.api_tls_cert_pem;
        ops++;
        ops->option = MHD_OPTION_HTTPS_MEM_KEY;
        ops->ptr_value = app->config.api_tls_key_pem;
        ops++;
    }

    ops->option = MHD_OPTION_END;

    daemon = MHD_start_daemon(flags, app->config.api_port, NULL, NULL,
                 cd_http_access, app,
                 MHD_OPTION_EXTERNAL_LOGGER, cd_http_log, app,
                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned) CD_HTTP_THREADS,
                 MHD_OPTION_NOTIFY_COMPLETED, cd_http_completed, app,
                 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned) 1,
                 MHD_OPTION_ARRAY, opts,
                 MHD_OPTION_END);

    freeaddrinfo(ai);

    if (daemon == NULL) {
        cd_log_error(CD_HTTP_SUBJECT, "cannot listen on %s: %s",
                     app->config.api_listen, strerror(errno));
        return CD_ERROR;
    }

    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);

    app->http.daemon = daemon;
    app->http.port = info ? info->port : app->config.api_port;

    cd_log_info(CD_HTTP_SUBJECT, "listening on %s port %u (%d threads, %s, "
                "%ld connections, %ld per IP, %ld s idle timeout, bodies up "
                "to %ld bytes)", app->config.api_host, app->http.port,
                CD_HTTP_THREADS,
                app->config.api_tls_cert_pem ? "https" : "plain http",
                app->config.api_connection_limit,
                app->config.api_per_ip_connection_limit,
                app->config.api_connection_timeout,
                app->config.api_body_max);

    return CD_OK;
}


void
cd_http_stop(cd_app_t *app)
{
    if (app->http.daemon != NULL) {
        MHD_stop_daemon(app->http.daemon);
        app->http.daemon = NULL;
    }
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
