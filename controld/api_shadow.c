/*
 * /shadow-ai: clients that reach AI services directly instead of through
 * the gateway (docs/shadow-ai.md). Alerts come from two sources, one row
 * per organisation, source, client and UTC day (migrations/022):
 * raw-key alerts are upserted by a trigger on audit_logs as ingest loads
 * the module's rows; egress alerts from DNS and proxy logs posted to
 * POST /shadow-ai/logs here or tailed by shadow_tail.c, read by
 * libspendpol/sp_egress.c and matched against its catalogue.
 *
 * A batch of lines is one statement: each AI hit goes to PostgreSQL as
 * one element of a JSON array, which groups them by client and day and
 * upserts each group, so a batch of any size is a single round trip in
 * the caller's transaction.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "controld.h"
#include "api.h"


#define CD_SHADOW_SUBJECT   "shadow"

#define CD_SHADOW_COLUMNS                                                    \
    "id, source, client, day::text, array_to_json(services)::text,"         \
    " array_to_json(domains)::text, array_to_json(key_types)::text,"        \
    " array_to_json(key_fps)::text, hits, " CD_SQL_TS("first_seen") ", "     \
    CD_SQL_TS("last_seen") ", status, " CD_SQL_TS("acknowledged_at") ","     \
    " acknowledged_by, " CD_SQL_TS("created_at") ", "                        \
    CD_SQL_US("last_seen")

enum {
    CD_SHADOW_ID = 0, CD_SHADOW_SOURCE, CD_SHADOW_CLIENT, CD_SHADOW_DAY,
    CD_SHADOW_SERVICES, CD_SHADOW_DOMAINS, CD_SHADOW_KEY_TYPES,
    CD_SHADOW_KEY_FPS, CD_SHADOW_HITS, CD_SHADOW_FIRST, CD_SHADOW_LAST,
    CD_SHADOW_STATUS, CD_SHADOW_ACKED_AT, CD_SHADOW_ACKED_BY,
    CD_SHADOW_CREATED, CD_SHADOW_LAST_US
};

/*
 * The hits of a batch ($1, a JSON array of {"c": client, "s": service,
 * "h": host, "t": ms}) grouped by client and UTC day, each group upserted
 * in the organisation $2; the ids of the alerts touched, sorted.
 */
#define CD_SHADOW_UPSERT_SQL                                                 \
    "WITH h AS (SELECT c, s, h, t FROM jsonb_to_recordset($1::jsonb)"        \
    " AS x (c text, s text, h text, t bigint)),"                             \
    " g AS (SELECT c, (to_timestamp(t / 1000.0) AT TIME ZONE 'UTC')::date"   \
    " AS d, array_agg(DISTINCT s) AS s, array_agg(DISTINCT h) AS h,"         \
    " count(*) AS n, min(t) AS f, max(t) AS l FROM h GROUP BY 1, 2)"         \
    " SELECT DISTINCT spendpol_shadow_hit($2, 'egress', c, d, s, h, '{}',"   \
    " '{}', n, to_timestamp(f / 1000.0), to_timestamp(l / 1000.0)) AS id"    \
    " FROM g ORDER BY id"


/* ---- batches (shared with shadow_tail.c) ------------------------------ */

void
cd_shadow_batch_init(cd_shadow_batch_t *b, sp_egress_format_e format,
    int64_t now_ms)
{
    memset(b, 0, sizeof(cd_shadow_batch_t));
    b->format = format;
    b->now_ms = now_ms;
}


void
cd_shadow_batch_free(cd_shadow_batch_t *b)
{
    free(b->hits);
    b->hits = NULL;
    b->len = 0;
    b->cap = 0;
}


static int
cd_shadow_append(cd_shadow_batch_t *b, const char *s, size_t n)
{
    char    *grown;
    size_t   cap;

    if (b->len + n + 2 > b->cap) {
        cap = b->cap ? b->cap : 4096;

        while (cap < b->len + n + 2) {
            cap *= 2;
        }

        grown = realloc(b->hits, cap);
        if (grown == NULL) {
            return CD_ERROR;
        }

        b->hits = grown;
        b->cap = cap;
    }

    memcpy(b->hits + b->len, s, n);
    b->len += n;
    b->hits[b->len] = '\0';

    return CD_OK;
}


/* s as the inside of a JSON string (clients may hold '"' or '\\') */
static int
cd_shadow_append_escaped(cd_shadow_batch_t *b, const char *s)
{
    for ( /* void */ ; *s; s++) {
        if ((*s == '"' || *s == '\\')
            && cd_shadow_append(b, "\\", 1) != CD_OK)
        {
            return CD_ERROR;
        }

        if (cd_shadow_append(b, s, 1) != CD_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


int
cd_shadow_batch_line(cd_shadow_batch_t *b, const char *line, size_t len)
{
    int                     rc;
    char                    err[128], t[CD_INT_TEXT + 8];
    sp_egress_event_t       ev;
    const sp_ai_service_t  *service;

    b->lines++;

    rc = sp_egress_parse(b->format, line, len, b->now_ms, &ev, err,
                         sizeof(err));

    if (rc == SP_DECLINED) {
        return CD_OK;
    }

    if (rc != SP_OK) {
        if (b->unreadable++ == 0) {
            b->first_unreadable = b->lines;
            /* the reason describes the line's shape, never its content */
            snprintf(b->first_reason, sizeof(b->first_reason), "%s", err);
        }

        return CD_OK;
    }

    b->queries++;

    service = sp_egress_service(ev.host, strlen(ev.host));
    if (service == NULL) {
        return CD_OK;
    }

    b->ai_queries++;

    snprintf(t, sizeof(t), "\",\"t\":%lld}", (long long) ev.ts_ms);

    if (cd_shadow_append(b, b->len ? ",{\"c\":\"" : "[{\"c\":\"", 7)
           != CD_OK
        || cd_shadow_append_escaped(b, ev.client) != CD_OK
        || cd_shadow_append(b, "\",\"s\":\"", 7) != CD_OK
        || cd_shadow_append_escaped(b, service->service) != CD_OK
        || cd_shadow_append(b, "\",\"h\":\"", 7) != CD_OK
        || cd_shadow_append_escaped(b, ev.host) != CD_OK
        || cd_shadow_append(b, t, strlen(t)) != CD_OK)
    {
        return CD_ERROR;
    }

    return CD_OK;
}


int
cd_shadow_batch_text(cd_shadow_batch_t *b, const char *text, size_t len,
    size_t *consumed)
{
    size_t       n;
    const char  *p, *end, *nl;

    p = text;
    end = text + len;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));

        if (nl == NULL && consumed != NULL) {
            /* a tail reader keeps a partial last line for later */
            break;
        }

        n = (size_t) ((nl ? nl : end) - p);

        if (n > 0 && p[n - 1] == '\r') {
            n--;
        }

        if (b->lines >= CD_SHADOW_LINES_MAX && consumed == NULL) {
            return CD_DECLINED;
        }

        if (cd_shadow_batch_line(b, p, n) != CD_OK) {
            return CD_ERROR;
        }

        p = nl ? nl + 1 : end;
    }

    if (consumed != NULL) {
        *consumed = (size_t) (p - text);
    }

    return CD_OK;
}


PGresult *
cd_shadow_batch_commit(cd_db_conn_t *c, const char *org,
    cd_shadow_batch_t *b)
{
    const char  *params[2];

    if (b->len == 0) {
        return NULL;
    }

    if (cd_shadow_append(b, "]", 1) != CD_OK) {
        return NULL;
    }

    params[0] = b->hits;
    params[1] = org;

    return cd_db_exec(c, CD_SHADOW_UPSERT_SQL, 2, params);
}


/* ---- responses -------------------------------------------------------- */

static int
cd_shadow_set_array(json_t *obj, const char *key, PGresult *res, int row,
    int col)
{
    json_t  *array;

    array = json_loads(PQgetvalue(res, row, col), 0, NULL);

    if (array == NULL || !json_is_array(array)) {
        json_decref(array);
        return -1;
    }

    return json_object_set_new(obj, key, array);
}


static json_t *
cd_shadow_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, CD_SHADOW_ID)
        || cd_json_set_column(obj, "source", res, row, CD_SHADOW_SOURCE)
        || cd_json_set_column(obj, "client", res, row, CD_SHADOW_CLIENT)
        || cd_json_set_column(obj, "day", res, row, CD_SHADOW_DAY)
        || cd_shadow_set_array(obj, "services", res, row,
                               CD_SHADOW_SERVICES)
        || cd_shadow_set_array(obj, "domains", res, row, CD_SHADOW_DOMAINS)
        || cd_shadow_set_array(obj, "key_types", res, row,
                               CD_SHADOW_KEY_TYPES)
        || cd_shadow_set_array(obj, "key_fps", res, row, CD_SHADOW_KEY_FPS)
        || json_object_set_new(obj, "hits",
               json_integer(strtoll(PQgetvalue(res, row, CD_SHADOW_HITS),
                                    NULL, 10)))
        || cd_json_set_column(obj, "first_seen", res, row, CD_SHADOW_FIRST)
        || cd_json_set_column(obj, "last_seen", res, row, CD_SHADOW_LAST)
        || cd_json_set_column(obj, "status", res, row, CD_SHADOW_STATUS)
        || cd_json_set_column(obj, "acknowledged_at", res, row,
                              CD_SHADOW_ACKED_AT)
        || cd_json_set_column(obj, "acknowledged_by", res, row,
                              CD_SHADOW_ACKED_BY)
        || cd_json_set_column(obj, "created_at", res, row,
                              CD_SHADOW_CREATED))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* a filter value: absent is no filter; malformed is a 400 */
static int
cd_shadow_filter(cd_request_t *r, const char *name, const char **value)
{
    int64_t  us;

    *value = cd_query(r, name);

    if (*value == NULL) {
        return CD_OK;
    }

    if (strcmp(name, "source") == 0) {
        if (strcmp(*value, "raw_key") != 0 && strcmp(*value, "egress") != 0)
        {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "source must be"
                             " raw_key or egress");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "status") == 0) {
        if (strcmp(*value, "open") != 0
            && strcmp(*value, "acknowledged") != 0)
        {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_filter", name, "status must be open"
                             " or acknowledged");
            return CD_ERROR;
        }

        return CD_OK;
    }

    if (strcmp(name, "from") == 0 || strcmp(name, "to") == 0) {
        if (cd_rfc3339_parse(*value, &us) != CD_OK) {
            cd_respond_error(r, 400, "invalid_request_error",
                             "invalid_time", name, "%s must be an RFC 3339"
                             " date-time, e.g. \"2026-12-01T00:00:00Z\"",
                             name);
            return CD_ERROR;
        }

        return CD_OK;
    }

    /* client, service */
    if ((*value)[0] == '\0' || cd_validate_text(*value, 1, 64) != NULL) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_filter",
                         name, "%s must be 1 to 64 printable characters",
                         name);
        return CD_ERROR;
    }

    return CD_OK;
}


/* ---- routes ----------------------------------------------------------- */

/*
 * GET /shadow-ai/alerts: newest last_seen first, keyset paged on
 * (last_seen, id) as /audit-logs on (created_at, id). from and to bound
 * last_seen (from inclusive, to exclusive); service matches any of the
 * alert's services, case aside ("openai" finds raw-key and egress
 * alerts).
 */
void
cd_api_shadow_alerts_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = "SELECT " CD_SHADOW_COLUMNS " FROM shadow_ai_alerts"
               " WHERE ($1::bigint IS NULL OR (last_seen, id) <"
               " ('epoch'::timestamptz + $1::bigint"
               " * interval '1 microsecond', $2::text))"
               " AND ($4::text IS NULL OR source = $4)"
               " AND ($5::text IS NULL OR status = $5)"
               " AND ($6::text IS NULL OR client = $6)"
               " AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM"
               " unnest(services) AS s (name) WHERE lower(s.name) ="
               " lower($7)))"
               " AND ($8::timestamptz IS NULL OR last_seen >= $8)"
               " AND ($9::timestamptz IS NULL OR last_seen < $9)"
               " ORDER BY last_seen DESC, id DESC LIMIT $3",
        .default_limit = 50,
        .id_column = CD_SHADOW_ID,
        .created_us_column = CD_SHADOW_LAST_US,
        .row_json = cd_shadow_json,
        .filters = { "source", "status", "client", "service", "from", "to" },
        .filter = cd_shadow_filter
    };

    cd_page_respond(r, &page);
}


static int
cd_shadow_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_SHADOW_ALERT, "shadow_alert_not_found");
}


void
cd_api_shadow_alerts_get(cd_request_t *r)
{
    cd_row_respond(r, cd_shadow_id_param,
                   "SELECT " CD_SHADOW_COLUMNS " FROM shadow_ai_alerts"
                   " WHERE id = $1", cd_shadow_json,
                   "shadow_alert_not_found", "id", "no shadow AI alert %s");
}


void
cd_api_shadow_alerts_acknowledge(cd_request_t *r)
{
    json_t        *alert;
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_shadow_id_param);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    params[1] = r->key_id;

    /* idempotent: an acknowledged alert keeps its first acknowledgement */
    res = cd_db_exec(c, "UPDATE shadow_ai_alerts SET status ="
                        " 'acknowledged', acknowledged_at ="
                        " clock_timestamp(), acknowledged_by = $2,"
                        " updated_at = clock_timestamp()"
                        " WHERE id = $1 AND status = 'open'", 2, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    PQclear(res);

    res = cd_request_row(r, c, "SELECT " CD_SHADOW_COLUMNS
                               " FROM shadow_ai_alerts WHERE id = $1",
                         "shadow_alert_not_found", "id",
                         "no shadow AI alert %s");

    if (res != NULL) {
        alert = cd_shadow_json(res, 0);

        if (cd_request_commit_respond(r, c, 0, 200, alert) == CD_OK) {
            cd_log_info(CD_SHADOW_SUBJECT, "%s acknowledged by %s org=%s",
                        r->params[0], r->key_id, r->org_id);
        }
    }

    PQclear(res);
    cd_request_end(r, c);
}


/* ?format= or the JSON body's "format" */
static int
cd_shadow_format(cd_request_t *r, const char *name, sp_egress_format_e *fmt)
{
    int  f;

    if (name == NULL) {
        *fmt = SP_EGRESS_AUTO;
        return CD_OK;
    }

    f = sp_egress_format(name, strlen(name));

    if (f < 0) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_format",
                         "format", "format must be auto, dnsmasq, bind,"
                         " squid or generic");
        return CD_ERROR;
    }

    *fmt = (sp_egress_format_e) f;

    return CD_OK;
}


static void
cd_shadow_too_many_lines(cd_request_t *r)
{
    cd_respond_error(r, 413, "invalid_request_error", "too_many_lines",
                     "lines", "at most %d lines per request; split the log",
                     CD_SHADOW_LINES_MAX);
}


/* the lines of a JSON body {"format": .., "lines": [..]} into b */
static int
cd_shadow_json_lines(cd_request_t *r, cd_shadow_batch_t *b)
{
    size_t              i;
    json_t             *body, *lines, *line;
    const char         *format;
    sp_egress_format_e  fmt;

    static const char  *fields[] = { "format", "lines", NULL };

    body = cd_request_json(r, fields);
    if (body == NULL) {
        return CD_ERROR;
    }

    format = NULL;

    if (cd_json_string(r, body, "format", 0, 1, 16, &format) != CD_OK
        || cd_shadow_format(r, format ? format : cd_query(r, "format"),
                            &fmt) != CD_OK)
    {
        json_decref(body);
        return CD_ERROR;
    }

    b->format = fmt;
    lines = json_object_get(body, "lines");

    if (lines == NULL || !json_is_array(lines)) {
        cd_respond_error(r, lines ? 400 : 422, "invalid_request_error",
                         lines ? "invalid_type" : "missing_field", "lines",
                         "lines must be an array of strings, one log line"
                         " each");
        json_decref(body);
        return CD_ERROR;
    }

    if (json_array_size(lines) > CD_SHADOW_LINES_MAX) {
        cd_shadow_too_many_lines(r);
        json_decref(body);
        return CD_ERROR;
    }

    json_array_foreach(lines, i, line) {
        if (!json_is_string(line)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             "lines", "lines[%zu] must be a string", i);
            json_decref(body);
            return CD_ERROR;
        }

        if (cd_shadow_batch_line(b, json_string_value(line),
                                 json_string_length(line)) != CD_OK)
        {
            cd_respond(r, 500, NULL);
            json_decref(body);
            return CD_ERROR;
        }
    }

    json_decref(body);

    return CD_OK;
}


/*
 * POST /shadow-ai/logs: text/plain lines (?format=) or JSON {"format",
 * "lines"}; at most CD_SHADOW_BODY_MAX bytes (http.c) and
 * CD_SHADOW_LINES_MAX lines, else 413. One transaction.
 */
void
cd_api_shadow_logs(cd_request_t *r)
{
    int                 rc, i;
    json_t             *out, *ids;
    PGresult           *res;
    const char         *type;
    cd_db_conn_t       *c;
    cd_shadow_batch_t   b;
    sp_egress_format_e  fmt;

    cd_shadow_batch_init(&b, SP_EGRESS_AUTO, cd_clock_ms(CLOCK_REALTIME));

    type = MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_CONTENT_TYPE);

    if (type != NULL && strncasecmp(type, "application/json", 16) == 0) {
        if (cd_shadow_json_lines(r, &b) != CD_OK) {
            cd_shadow_batch_free(&b);
            return;
        }

    } else {
        if (cd_shadow_format(r, cd_query(r, "format"), &fmt) != CD_OK) {
            return;
        }

        b.format = fmt;

        rc = cd_shadow_batch_text(&b, r->body ? r->body : "", r->body_len,
                                  NULL);

        if (rc == CD_DECLINED) {
            cd_shadow_too_many_lines(r);
            cd_shadow_batch_free(&b);
            return;
        }

        if (rc != CD_OK) {
            cd_respond(r, 500, NULL);
            cd_shadow_batch_free(&b);
            return;
        }
    }

    ids = json_array();
    out = json_pack("{s:I, s:I, s:I, s:I, s:o}",
                    "lines", (json_int_t) b.lines,
                    "queries", (json_int_t) b.queries,
                    "ai_queries", (json_int_t) b.ai_queries,
                    "unreadable", (json_int_t) b.unreadable,
                    "first_unreadable_line",
                    b.first_unreadable
                    ? json_integer((json_int_t) b.first_unreadable)
                    : json_null());

    if (ids == NULL || out == NULL
        || json_object_set(out, "alerts", ids) != 0
        || (b.first_unreadable
            && json_object_set_new(out, "first_unreadable_reason",
                                   json_string(b.first_reason)) != 0))
    {
        json_decref(ids);
        json_decref(out);
        cd_shadow_batch_free(&b);
        cd_respond(r, 500, NULL);
        return;
    }

    if (b.len == 0) {
        /* no AI hit: nothing to write */
        json_decref(ids);
        cd_shadow_batch_free(&b);
        cd_respond(r, 200, out);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(ids);
        json_decref(out);
        cd_shadow_batch_free(&b);
        return;
    }

    res = cd_shadow_batch_commit(c, r->org_id, &b);
    cd_shadow_batch_free(&b);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        json_decref(ids);
        json_decref(out);
        cd_request_end(r, c);
        return;
    }

    for (i = 0; i < PQntuples(res); i++) {
        if (json_array_append_new(ids, json_string(PQgetvalue(res, i, 0)))
            != 0)
        {
            PQclear(res);
            json_decref(ids);
            json_decref(out);
            cd_respond(r, 500, NULL);
            cd_request_end(r, c);
            return;
        }
    }

    PQclear(res);
    json_decref(ids);

    if (cd_request_commit_respond(r, c, 0, 200, out) == CD_OK) {
        cd_log_info(CD_SHADOW_SUBJECT, "logs: %ld lines, %ld AI queries,"
                    " %ld unreadable, %d alerts org=%s", b.lines,
                    b.ai_queries, b.unreadable, i, r->org_id);
    }

    cd_request_end(r, c);
}
