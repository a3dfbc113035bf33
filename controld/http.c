/*
 * The admin REST API's server: libmicrohttpd with an internal thread
 * pool, the route table, connection limits, TLS and request bodies
 * capped at 1 MiB. Request helpers are in http_request.c, admin-key
 * authentication in http_auth.c.
 */

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "auth.h"
#include "api.h"
#include "metrics.h"


#define CD_HTTP_SUBJECT      "http"
#define CD_HTTP_THREADS      4


/* the last column: 0 no key, 1 an admin key, 2 an operator key (auth.h) */
const cd_route_t  cd_routes[] = {
    { "GET",    "/healthz",                 cd_api_healthz,          0 },
    { "GET",    "/openapi.json",            cd_api_openapi,          0 },
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
    { "GET",    "/audit-logs/summary",      cd_api_audit_summary,    1 },
    { "GET",    "/audit-logs/export",       cd_api_audit_export,     1 },
    { "GET",    "/compliance/verify",       cd_api_compliance_verify, 1 },
    { "POST",   "/compliance/erasure",      cd_api_compliance_erase, 1 },
    { "GET",    "/compliance/erasures",     cd_api_compliance_erasures, 1 },
    { "GET",    "/compliance/retention",    cd_api_compliance_retention_get,
      1 },
    { "PUT",    "/compliance/retention",    cd_api_compliance_retention_put,
      1 },
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
    { "GET",    "/budget-leases",           cd_api_leases_list,      1 },
    { "DELETE", "/budget-leases/{node_id}", cd_api_leases_release,   1 },
    { "GET",    "/metrics",                 cd_api_metrics,          0 },
    { "GET",    "/cache/config",            cd_api_cache_config_get, 1 },
    { "PUT",    "/cache/config",            cd_api_cache_config_put, 1 },
    { "GET",    "/cache/stats",             cd_api_cache_stats,      1 },
    { "DELETE", "/cache",                   cd_api_cache_purge,      1 },
    { "GET",    "/agents",                  cd_api_agents_list,      1 },
    { "POST",   "/agents",                  cd_api_agents_create,    1 },
    { "GET",    "/agents/{id}",             cd_api_agents_get,       1 },
    { "PATCH",  "/agents/{id}",             cd_api_agents_update,    1 },
    { "DELETE", "/agents/{id}",             cd_api_agents_delete,    1 },
    { "POST",   "/agents/{id}/pause",       cd_api_agents_pause,     1 },
    { "POST",   "/agents/{id}/resume",      cd_api_agents_resume,    1 },
    { "GET",    "/routing/rules",           cd_api_routing_rules_list, 1 },
    { "POST",   "/routing/rules",           cd_api_routing_rules_create, 1 },
    { "GET",    "/routing/rules/{id}",      cd_api_routing_rules_get, 1 },
    { "PATCH",  "/routing/rules/{id}",      cd_api_routing_rules_update, 1 },
    { "DELETE", "/routing/rules/{id}",      cd_api_routing_rules_delete, 1 },
    { "POST",   "/routing/evaluate",        cd_api_routing_evaluate, 1 },
    { "GET",    "/prompts",                 cd_api_prompts_list,     1 },
    { "POST",   "/prompts",                 cd_api_prompts_create,   1 },
    { "GET",    "/prompts/{slug}",          cd_api_prompts_get,      1 },
    { "POST",   "/prompts/{slug}/versions", cd_api_prompts_version_create,
      1 },
    { "PUT",    "/prompts/{slug}/labels/{label}", cd_api_prompts_label_put,
      1 },
    { "DELETE", "/prompts/{slug}/labels/{label}",
      cd_api_prompts_label_delete, 1 },
    { "GET",    "/policies",                cd_api_policies_list,    1 },
    { "POST",   "/policies",                cd_api_policies_create,  1 },
    { "POST",   "/policies/evaluate",       cd_api_policies_evaluate, 1 },
    { "GET",    "/policies/{id}",           cd_api_policies_get,     1 },
    { "PATCH",  "/policies/{id}",           cd_api_policies_update,  1 },
    { "DELETE", "/policies/{id}",           cd_api_policies_delete,  1 },
    { "GET",    "/shadow-ai/alerts",        cd_api_shadow_alerts_list, 1 },
    { "GET",    "/shadow-ai/alerts/{id}",   cd_api_shadow_alerts_get, 1 },
    { "POST",   "/shadow-ai/alerts/{id}/acknowledge",
      cd_api_shadow_alerts_acknowledge, 1 },
    { "POST",   CD_SHADOW_PATH,             cd_api_shadow_logs,      1 },
    { "GET",    "/orgs",                    cd_api_orgs_list,        2 },
    { "POST",   "/orgs",                    cd_api_orgs_create,      2 },
    { "GET",    "/orgs/{id}",               cd_api_orgs_get,         2 },
    { "GET",    "/forecast/spend",          cd_api_forecast_spend,   1 },
    { "GET",    "/forecast/anomalies",      cd_api_forecast_anomalies, 1 },
    { "POST",   "/forecast/what-if",        cd_api_forecast_what_if, 1 },
    { "GET",    "/chargeback/periods",      cd_api_chargeback_list,  1 },
    { "POST",   "/chargeback/periods",      cd_api_chargeback_create, 1 },
    { "GET",    "/chargeback/periods/{id}", cd_api_chargeback_get,   1 },
    { "PATCH",  "/chargeback/periods/{id}", cd_api_chargeback_update, 1 },
    { "DELETE", "/chargeback/periods/{id}", cd_api_chargeback_delete, 1 },
    { "POST",   "/chargeback/periods/{id}/finalize",
      cd_api_chargeback_finalize, 1 },
};

const size_t  cd_routes_count = sizeof(cd_routes) / sizeof(cd_routes[0]);


/* per-connection state across the access handler's calls */
typedef struct {
    char    *body;
    size_t   len;
    size_t   cap;
    size_t   discarded;
    size_t   max;               /* the body cap of this request */
    int      too_large;
    int      responded;
} cd_http_upload_t;


/*
 * An oversized body is read and dropped up to this many times the cap
 * before the 413 is sent, so the client sees the answer instead of a
 * connection reset while it is still writing (nginx's lingering close does
 * the same); a body larger than that is refused at once.
 */
#define CD_HTTP_DRAIN_FACTOR  8


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


/* ---- streamed answers ------------------------------------------------- */

/* a stream's state in libmicrohttpd's hands, with the slot it holds */
typedef struct {
    cd_app_t           *app;
    cd_stream_read_pt   read;
    cd_stream_free_pt   free;
    void               *data;
} cd_http_stream_t;

/* the stream's bytes of a chunked body */
#define CD_HTTP_STREAM_BLOCK  (32 * 1024)


static void
cd_http_stream_slot_release(cd_app_t *app)
{
    __atomic_sub_fetch(&app->http.streams, 1, __ATOMIC_ACQ_REL);
}


int
cd_stream_slot(cd_request_t *r, const char *what)
{
    if (r->stream_slot) {
        return CD_OK;
    }

    if (__atomic_add_fetch(&r->app->http.streams, 1, __ATOMIC_ACQ_REL)
        > CD_HTTP_STREAMS_MAX)
    {
        cd_http_stream_slot_release(r->app);
        cd_respond_error(r, 429, "rate_limit_error", "too_many_streams",
                         NULL, "at most %d %s run at once; retry when one "
                         "of them ends", CD_HTTP_STREAMS_MAX, what);
        return CD_ERROR;
    }

    r->stream_slot = 1;

    return CD_OK;
}


void
cd_respond_stream(cd_request_t *r, const char *content_type,
    const char *filename, cd_stream_read_pt read,
    cd_stream_free_pt release, void *data)
{
    if (!r->stream_slot) {
        release(data);
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "internal error");
        return;
    }

    json_decref(r->response);
    r->response = NULL;
    r->status = 200;
    r->stream.read = read;
    r->stream.free = release;
    r->stream.data = data;
    r->stream.content_type = content_type;
    snprintf(r->stream.filename, sizeof(r->stream.filename), "%s",
             filename ? filename : "");
}


static ssize_t
cd_http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    ssize_t            n;
    cd_http_stream_t  *s;

    (void) pos;
    s = cls;

    n = s->read(s->data, buf, max);

    if (n == CD_STREAM_END) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }

    /* 0 would have the polling thread call again at once: never */
    if (n <= 0) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }

    return n;
}


static void
cd_http_stream_free(void *cls)
{
    cd_http_stream_t  *s;

    s = cls;
    s->free(s->data);
    cd_http_stream_slot_release(s->app);
    free(s);
}


/* the request's stream as a chunked answer; its free runs whatever */
static enum MHD_Result
cd_http_send_stream(struct MHD_Connection *connection, cd_request_t *r)
{
    char                   disposition[192];
    enum MHD_Result        ret;
    cd_http_stream_t      *s;
    struct MHD_Response   *response;

    s = malloc(sizeof(cd_http_stream_t));
    if (s == NULL) {
        r->stream.free(r->stream.data);
        cd_http_stream_slot_release(r->app);
        return MHD_NO;
    }

    s->app = r->app;
    s->read = r->stream.read;
    s->free = r->stream.free;
    s->data = r->stream.data;

    /* the slot and the data are the response's now */
    r->stream_slot = 0;
    r->stream.read = NULL;

    response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN,
                                                 CD_HTTP_STREAM_BLOCK,
                                                 cd_http_stream_read, s,
                                                 cd_http_stream_free);
    if (response == NULL) {
        cd_http_stream_free(s);
        return MHD_NO;
    }

    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->stream.content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL,
                            "no-store");
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");

    if (r->stream.filename[0] != '\0') {
        snprintf(disposition, sizeof(disposition),
                 "attachment; filename=\"%s\"", r->stream.filename);
        MHD_add_response_header(response,
                                MHD_HTTP_HEADER_CONTENT_DISPOSITION,
                                disposition);
    }

    ret = MHD_queue_response(connection, r->status, response);

    /* the connection holds its own reference until the answer is done */
    MHD_destroy_response(response);

    return ret;
}


static enum MHD_Result
cd_http_send(struct MHD_Connection *connection, cd_request_t *r)
{
    char                  *text, allow[64];
    size_t                 len;
    const char            *type;
    enum MHD_Result        ret;
    struct MHD_Response   *response;

    if (r->stream.read != NULL) {
        return cd_http_send_stream(connection, r);
    }

    text = NULL;
    len = 0;
    type = "application/json";

    if (r->text != NULL) {
        text = r->text;
        r->text = NULL;
        len = strlen(text);
        type = r->content_type;

    } else if (r->response != NULL) {
        /*
         * 15 significant digits (DBL_DIG): a decimal of up to 15 digits,
         * as a user typed it or a rate rounded to 4 places, prints as
         * itself ("0.6667", not jansson's default "0.66669999999999996")
         */
        text = json_dumps(r->response,
                          JSON_COMPACT | JSON_REAL_PRECISION(15));

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
                                type);
    }

    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL,
                            "no-store");

    if (r->status == 401) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer");
    }

    /* the one 429 of the API: a stream slot, freed within seconds */
    if (r->status == 429) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, "5");
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

    r->route = route;

    for (i = 0; i < nparams; i++) {
        r->params[i] = strndup(params[i].data, params[i].len);

        if (r->params[i] == NULL) {
            return;
        }

        r->nparams = i + 1;
    }

    if (route->admin != CD_ROUTE_PUBLIC
        && cd_authenticate_scope(r, route->admin) != CD_OK)
    {
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


/*
 * SPENDPOL_API_BODY_MAX, or more for POST /shadow-ai/logs: a day of a
 * DNS log is megabytes, and the route reads it line by line
 */
static size_t
cd_http_body_max(cd_app_t *app, const char *method, const char *url)
{
    if (strcmp(method, "POST") == 0 && strcmp(url, CD_SHADOW_PATH) == 0
        && app->config.api_body_max < CD_SHADOW_BODY_MAX)
    {
        return CD_SHADOW_BODY_MAX;
    }

    return (size_t) app->config.api_body_max;
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
        up->max = cd_http_body_max(app, method, url);

        header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                             MHD_HTTP_HEADER_CONTENT_LENGTH);

        if (header != NULL) {
            length = strtoll(header, NULL, 10);

            if (length > (long long) up->max) {
                up->too_large = 1;

                /* far over the cap: refuse before reading a byte */
                if (length / CD_HTTP_DRAIN_FACTOR > (long long) up->max) {
                    goto respond;
                }
            }
        }

        return MHD_YES;
    }

    if (*upload_data_size != 0) {
        if (!up->too_large
            && up->len + *upload_data_size > up->max)
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

        up->discarded += up->too_large ? *upload_data_size : 0;
        *upload_data_size = 0;

        /*
         * no answer can be queued while upload data is handled: a body
         * that goes on far past the cap (chunked) loses its connection
         */
        if (up->discarded / CD_HTTP_DRAIN_FACTOR > up->max)
        {
            return MHD_NO;
        }

        return MHD_YES;
    }

respond:

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
                         NULL, "the request body exceeds the limit of %zu "
                         "bytes%s", up->max,
                         up->max == (size_t) app->config.api_body_max
                         ? " (SPENDPOL_API_BODY_MAX)" : "");
    } else {
        cd_http_dispatch(&r);
    }

    /* a slot taken for a stream the handler did not start goes back */
    if (r.stream_slot && r.stream.read == NULL) {
        r.stream_slot = 0;
        cd_http_stream_slot_release(app);
    }

    if (r.status == 0) {
        cd_respond_error(&r, 500, "api_error", "internal_error", NULL,
                         "internal error");
    }

    ret = cd_http_send(connection, &r);

    clock_gettime(CLOCK_MONOTONIC, &end);
    cd_metrics_http_request(r.route, r.status, &start, &end);

    cd_log(r.status >= 500 ? CD_LOG_WARN : CD_LOG_INFO, CD_HTTP_SUBJECT,
           "%s %.200s -> %u (%.1f ms)%s%s", method, url, r.status,
           (double) (end.tv_sec - start.tv_sec) * 1e3
           + (double) (end.tv_nsec - start.tv_nsec) / 1e6,
           r.org_id[0] ? " org=" : "", r.org_id);

    for (i = 0; i < r.nparams; i++) {
        free(r.params[i]);
    }

    json_decref(r.response);
    free(r.text);

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
