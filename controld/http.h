/*
 * The admin API server (http.c) and what every handler uses: answers, the
 * request's transaction, JSON bodies, cursors, paged lists
 * (http_request.c). Included by controld.h.
 */

#ifndef CD_HTTP_H
#define CD_HTTP_H


#define CD_ROUTE_MAX_PARAMS   4

typedef struct cd_request_s  cd_request_t;
typedef void (*cd_handler_pt)(cd_request_t *r);

typedef struct {
    const char     *method;
    const char     *pattern;      /* "/api-keys/{id}/rotate" */
    cd_handler_pt   handler;
    unsigned        admin:2;      /* the key's scope: CD_ROUTE_* (auth.h) */
} cd_route_t;

typedef enum {
    CD_ROUTE_FOUND = 0,
    CD_ROUTE_NOT_FOUND,
    CD_ROUTE_BAD_METHOD
} cd_route_match_e;

typedef struct {
    const char  *data;
    size_t       len;
} cd_param_t;

/*
 * A streamed answer (http.c): read fills buf with up to max bytes of the
 * body and returns their count (> 0), CD_STREAM_END after the last byte,
 * or CD_STREAM_ERROR to cut the body (the connection closes without the
 * chunked terminator, so the client sees a truncated answer). free is
 * called once, from the connection's thread, when the answer is done,
 * sent or not (the client hung up, the server stops).
 */
#define CD_STREAM_END     -1
#define CD_STREAM_ERROR   -2

typedef ssize_t (*cd_stream_read_pt)(void *data, char *buf, size_t max);
typedef void (*cd_stream_free_pt)(void *data);

typedef struct {
    cd_stream_read_pt    read;            /* NULL: no stream */
    cd_stream_free_pt    free;
    void                *data;
    const char          *content_type;    /* a constant */
    char                 filename[128];   /* attachment; "" for none */
} cd_stream_t;

/*
 * Matches method and path against the table. On CD_ROUTE_FOUND, *route
 * and params (borrowed slices of path) are set; CD_ROUTE_BAD_METHOD means
 * some route has the path but not the method.
 */
cd_route_match_e cd_route_match(const cd_route_t *routes, size_t n,
    const char *method, const char *path, const cd_route_t **route,
    cd_param_t *params, size_t *nparams);

struct cd_request_s {
    cd_app_t                *app;
    struct MHD_Connection   *connection;
    const char              *method;
    const char              *path;
    char                    *params[CD_ROUTE_MAX_PARAMS];
    size_t                   nparams;
    char                    *body;
    size_t                   body_len;
    char                     org_id[CD_ID_MAX];      /* of the admin key */
    char                     key_id[CD_ID_MAX];
    unsigned                 status;
    json_t                  *response;               /* NULL: no body */
    char                    *text;                   /* a body that is no
                                                        JSON (GET /metrics),
                                                        of content_type;
                                                        freed once sent */
    const char              *content_type;
    const cd_route_t        *route;                  /* matched, or NULL */
    const char              *allow;                  /* for 405 */
    cd_stream_t              stream;                 /* instead of response */
    unsigned                 stream_slot:1;          /* holds one */
};

/*
 * Streamed answers hold a pooled database connection for as long as the
 * client reads: at most this many at once, so they cannot starve the
 * other routes of the tenant pool
 */
#define CD_HTTP_STREAMS_MAX   2

typedef struct {
    void                    *daemon;                 /* MHD_Daemon */
    uint16_t                 port;                   /* bound */
    unsigned                 streams;                /* atomic: running */
} cd_http_t;

int cd_http_start(cd_app_t *app) CD_CHECK;
void cd_http_stop(cd_app_t *app);

/*
 * Takes one of the CD_HTTP_STREAMS_MAX stream slots for the request, or
 * answers 429 too_many_streams (what names the streams: "audit log
 * exports") and returns CD_ERROR. Take it before the database: the slot
 * goes with the stream to its end, or back when the handler answers
 * without one.
 */
int cd_stream_slot(cd_request_t *r, const char *what) CD_CHECK;

/*
 * Answers 200 with a body streamed by read (chunked), in place of JSON;
 * needs the request's stream slot. From here data belongs to the stream:
 * release(data) is called once whatever happens, even if the answer cannot
 * be queued. content_type is a constant; filename (or NULL) goes in
 * Content-Disposition: attachment.
 */
void cd_respond_stream(cd_request_t *r, const char *content_type,
    const char *filename, cd_stream_read_pt read,
    cd_stream_free_pt release, void *data);


/* ---- http_request.c: what every handler uses -------------------------- */

/* how long a request waits for a pooled database connection */
#define CD_DB_WAIT_MS         5000

/* response helpers; respond steals json */
void cd_respond(cd_request_t *r, unsigned status, json_t *json);
void cd_respond_error(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, ...)
    CD_PRINTF(6, 7);
void cd_respond_verror(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, va_list args)
    CD_PRINTF(6, 0);
void cd_respond_db_error(cd_request_t *r);

/*
 * A pooled connection inside BEGIN as spendpol_app with the request's
 * org, or NULL after answering 503. cd_request_end rolls back whatever
 * was not committed and releases.
 */
cd_db_conn_t *cd_request_begin(cd_request_t *r) CD_CHECK;
int cd_request_commit(cd_request_t *r, cd_db_conn_t *c) CD_CHECK;

/*
 * check(r) on the route's parameters (it answers 400/404 and returns
 * CD_ERROR), then cd_request_begin; NULL when either answered.
 */
cd_db_conn_t *cd_request_begin_param(cd_request_t *r,
    int (*check)(cd_request_t *r)) CD_CHECK;
void cd_request_end(cd_request_t *r, cd_db_conn_t *c);

/*
 * Commits, then answers status with json (stolen) and, with publish,
 * asks for a new snapshot. When the commit fails its 500 stands, json is
 * dropped and CD_ERROR returned.
 */
int cd_request_commit_respond(cd_request_t *r, cd_db_conn_t *c,
    int publish, unsigned status, json_t *json) CD_CHECK;
void cd_respond_statement_error(cd_request_t *r, cd_db_conn_t *c);

/*
 * After a statement that names one row (res may be NULL: it failed):
 * CD_OK when it returned or changed a row; else answers (the statement
 * error, or 404 not_found_error with code, field and the message fmt)
 * and returns CD_ERROR. The caller still clears res.
 */
int cd_request_found(cd_request_t *r, cd_db_conn_t *c, PGresult *res,
    const char *code, const char *field, const char *fmt, ...)
    CD_CHECK CD_PRINTF(6, 7);

/*
 * sql with $1 the route's first parameter, in the request's transaction:
 * its result when it returned or changed a row, else NULL after
 * answering as cd_request_found (fmt's one argument is that parameter).
 */
PGresult *cd_request_row(cd_request_t *r, cd_db_conn_t *c, const char *sql,
    const char *code, const char *field, const char *fmt) CD_CHECK;

/*
 * Inside a request's transaction: answers 422 org_limit_reached, naming
 * cap and setting (the variable that raises it), and returns CD_ERROR
 * when the organisation already has cap rows of table (and where, an SQL
 * condition from code, or NULL). Holds a lock on (table, org) until the
 * transaction ends.
 */
int cd_org_cap_check(cd_request_t *r, cd_db_conn_t *c, const char *table,
    const char *where, long cap, const char *setting, const char *what)
    CD_CHECK;

/*
 * The start of a creation: a fresh id of prefix into id (CD_ID_MAX; none
 * when prefix is NULL), the request's transaction, and the cap check
 * above. NULL after answering (500 no_randomness, 503, 422) with the
 * transaction ended.
 */
cd_db_conn_t *cd_request_begin_create(cd_request_t *r, const char *prefix,
    char *id, const char *table, const char *where, long cap,
    const char *setting, const char *what) CD_CHECK;

/* the query argument, or NULL */
const char *cd_query(cd_request_t *r, const char *name);

/*
 * ?name= as an RFC 3339 date-time, in microseconds since the epoch:
 * *given 0 when absent (*us untouched); 400 invalid_time naming it when
 * malformed. _text: the same as decimal text, "" when absent (an SQL
 * parameter).
 */
int cd_query_time(cd_request_t *r, const char *name, int64_t *us,
    int *given) CD_CHECK;
int cd_query_time_text(cd_request_t *r, const char *name, char *us,
    size_t len) CD_CHECK;

/*
 * Parses the body as a JSON object whose keys are all in allowed (NULL
 * terminated; allowed NULL: any keys, for a validator that names the
 * unknown one by its path). On failure answers 400 and returns NULL.
 */
json_t *cd_request_json(cd_request_t *r, const char *const *allowed)
    CD_CHECK;

/*
 * A route without options: no body or an empty JSON object. Anything
 * else answers 400 (as cd_request_json) and returns CD_ERROR.
 */
int cd_request_no_options(cd_request_t *r) CD_CHECK;

/*
 * Optional string member: absent or null leaves *out NULL; a non-string
 * answers 400; longer than max characters or with control characters
 * answers 422 (when required and absent too). Returns CD_OK / CD_ERROR.
 */
int cd_json_string(cd_request_t *r, json_t *obj, const char *field,
    int required, size_t min_chars, size_t max_chars, const char **out)
    CD_CHECK;


/* adds column col of row as a string member, null for SQL NULL */
int cd_json_set_column(json_t *obj, const char *key, PGresult *res, int row,
    int col) CD_CHECK;

/* adds a string or null member */
int cd_json_set_str(json_t *obj, const char *key, const char *value)
    CD_CHECK;

/* limit query parameter: default when absent; 400 when out of 1..max */
int cd_query_limit(cd_request_t *r, long def, long max, long *limit)
    CD_CHECK;


/* ---- field errors and ids (http_request.c) --------------------------- */

/* why a body was refused: the HTTP status, error code and field */
typedef struct {
    unsigned     status;            /* 400 wrong type, 422 bad value */
    const char  *code;
    const char  *field;
    char         message[256];
    char         field_buf[64];     /* a field named at run time
                                       ("allowed_endpoints[2].path"):
                                       field points here then */
} cd_field_error_t;

/* fills err and returns CD_ERROR */
int cd_field_error(cd_field_error_t *err, unsigned status, const char *code,
    const char *field, const char *fmt, ...) CD_PRINTF(5, 6);

/* answers err as an invalid_request_error naming its field */
void cd_respond_field_error(cd_request_t *r, const cd_field_error_t *err);

/*
 * A boolean member: absent is -1, true 1, false 0; anything else (null
 * too) fills err (400 invalid_type, "FIELD must be true or false") and
 * returns CD_ERROR.
 */
int cd_bool_parse(json_t *obj, const char *field, int *out,
    cd_field_error_t *err) CD_CHECK;

/* cd_bool_parse, answering 400 itself */
int cd_json_bool(cd_request_t *r, json_t *obj, const char *field, int *out)
    CD_CHECK;

/*
 * r->params[0] as an id of kind SP_ID_*: CD_OK, or CD_ERROR after a 404
 * with code not_found (e.g. "budget_not_found") saying what ids look like
 */
int cd_id_param(cd_request_t *r, unsigned kind, const char *not_found);

/* CD_OK when id is of kind SP_ID_*, else a 422 on field saying why */
int cd_id_field(const char *id, unsigned kind, const char *field,
    cd_field_error_t *err);


/* ---- cursors (http_request.c) ----------------------------------------- */

#define CD_CURSOR_MAX   128

/* opaque cursor for (created_at microseconds, id) */
int cd_cursor_encode(int64_t us, const char *id, char *out, size_t outlen)
    CD_CHECK;
int cd_cursor_decode(const char *cursor, int64_t *us, char *id,
    size_t idlen) CD_CHECK;


/* ---- paged lists (http_request.c) ------------------------------------- */

#define CD_PAGE_LIMIT_MAX     1000
#define CD_PAGE_FILTERS_MAX   9

/*
 * The query of a paged list, newest first: $1 and $2 are the cursor's
 * created_at microseconds and id (NULL on the first page), $3 the limit
 * plus one, $4... the route's filter values, which filters (" AND (...)"
 * conditions, or "") tests. No org predicate: row-level security is the
 * fence.
 */
#define CD_PAGE_SQL(columns, table, filters)                                 \
    "SELECT " columns " FROM " table                                         \
    " WHERE ($1::bigint IS NULL OR (created_at, id) <"                       \
    " ('epoch'::timestamptz + $1::bigint * interval '1 microsecond',"        \
    " $2::text))" filters                                                    \
    " ORDER BY created_at DESC, id DESC LIMIT $3"

/* a row of the list's query as JSON, or NULL when out of memory */
typedef json_t *(*cd_page_row_pt)(PGresult *res, int row);

/* the first n rows of res as a JSON array, or NULL when out of memory */
json_t *cd_rows_json(PGresult *res, int n, cd_page_row_pt row_json);

/*
 * Reads the query argument name into *value (NULL: absent, no filter),
 * or answers 400 and returns CD_ERROR.
 */
typedef int (*cd_page_filter_pt)(cd_request_t *r, const char *name,
    const char **value);

typedef struct {
    const char          *sql;                /* CD_PAGE_SQL(...) */
    long                 default_limit;      /* 1 .. CD_PAGE_LIMIT_MAX */
    int                  id_column;
    int                  created_us_column;  /* CD_SQL_US("created_at") */
    cd_page_row_pt       row_json;
    /* query arguments read in this order by filter into $4... */
    const char          *filters[CD_PAGE_FILTERS_MAX];
    cd_page_filter_pt    filter;             /* when filters are named */
} cd_page_t;

/*
 * Answers a GET of a paged list. Checked in this order: ?limit= (1 ..
 * CD_PAGE_LIMIT_MAX, else 400 invalid_limit), the route's filters,
 * ?cursor= (400 invalid_cursor); then 200 {"data": [...], "next_cursor":
 * the cursor of the page's last row, or null when no row follows}.
 */
void cd_page_respond(cd_request_t *r, const cd_page_t *page);

/*
 * A GET of one row: check validates the route's first parameter (it
 * answers), sql selects with it as $1; then 200 with row_json of the row,
 * or 404 not_found_error with code, field and the message fmt, whose one
 * argument is that parameter.
 */
void cd_row_respond(cd_request_t *r, int (*check)(cd_request_t *r),
    const char *sql, cd_page_row_pt row_json, const char *code,
    const char *field, const char *fmt);

/*
 * A DELETE of one row: check validates the route's first parameter, sql
 * deletes with it as $1; 204 and CD_OK, for the caller to log, or the
 * 404 of cd_row_respond (code, field, fmt) or another error answered.
 */
int cd_delete_respond(cd_request_t *r, int (*check)(cd_request_t *r),
    const char *sql, const char *code, const char *field, const char *fmt);

/* a list without pages: 200 {"data": [every row of sql (no parameters)]} */
void cd_list_respond(cd_request_t *r, const char *sql,
    cd_page_row_pt row_json);


#endif /* CD_HTTP_H */
