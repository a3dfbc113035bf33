
/*
 * Copyright (C) Spendpol
 *
 * The request path before the provider: route, authenticate, read and
 * parse the body once, prepare what the proxy module forwards. Runs in
 * the precontent phase, re-entered after the body is read (as the mirror
 * module does).
 */



#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_PREFIX             "/v1/"

/* a request waiting for its lease looks again this often (ms) */
#define NGX_HTTP_SPENDPOL_LEASE_RECHECK      5


static void ngx_http_spendpol_body_handler(ngx_http_request_t *r);
static void ngx_http_spendpol_after_admission(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc, uint64_t started);
static ngx_int_t ngx_http_spendpol_lease_park(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static void ngx_http_spendpol_lease_wake(ngx_http_request_t *r);
static ngx_int_t ngx_http_spendpol_park(ngx_http_request_t *r,
    ngx_msec_t delay, ngx_http_event_handler_pt handler);
static ngx_int_t ngx_http_spendpol_after_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price);
static void ngx_http_spendpol_cache_wake(ngx_http_request_t *r);
static ngx_int_t ngx_http_spendpol_admit(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_budget_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_path(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *query_key);
static ngx_int_t ngx_http_spendpol_canonical(ngx_http_request_t *r,
    ngx_str_t *in, ngx_str_t *out, char *reason);
static ngx_int_t ngx_http_spendpol_invalid_path(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const char *what, char *reason);
static ngx_int_t ngx_http_spendpol_authenticate(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    u_char *query_key);
static ngx_int_t ngx_http_spendpol_attribute(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_key_t *key);
static ngx_int_t ngx_http_spendpol_attribute_one(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const char *header, size_t len,
    ngx_uint_t may_override, ngx_str_t *value, ngx_str_t *key_value);
static ngx_int_t ngx_http_spendpol_governed(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static int ngx_http_spendpol_endpoint_visit(const sp_snapshot_endpoint_t *e,
    void *arg);
static ngx_int_t ngx_http_spendpol_check_price(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t **found);
static void ngx_http_spendpol_price_target(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static const sp_snapshot_price_t *ngx_http_spendpol_lookup_price(
    ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx);
static void ngx_http_spendpol_worst_case(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price);
static void ngx_http_spendpol_worst_tokens(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price,
    int64_t *input, int64_t *output);
static void ngx_http_spendpol_count_prompt(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_prepare(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_stream_usage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_route(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_uint_t ngx_http_spendpol_refuses_unpriced(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_copy(ngx_pool_t *pool, ngx_str_t *dst,
    sp_str_t src);
static ngx_int_t ngx_http_spendpol_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_request_body_filter_pt   ngx_http_next_request_body_filter;

/*
 * The prompt tokenizer of this process, kept the way nginx's ngx_regex.c
 * keeps its PCRE2 match data: the encodings (compiled patterns over the
 * linked-in vocabularies, read-only) are built once by the master, or by
 * nginx -t, before workers are forked, and survive reloads; each worker
 * makes its own context (match data, JIT stack, piece cache, scratch).
 */
static sp_request_tokenizer_t  ngx_http_spendpol_tokenizer;


static ngx_str_t  ngx_http_spendpol_key_headers[] = {
    ngx_string("X-Spendpol-Key"),
    ngx_string("x-api-key"),                /* Anthropic */
    ngx_string("api-key"),                  /* Azure OpenAI */
    ngx_string("x-goog-api-key"),           /* Google */
    ngx_null_string
};


uint64_t
ngx_http_spendpol_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


ngx_int_t
ngx_http_spendpol_handler(ngx_http_request_t *r)
{
    u_char                          query_key[SP_KEY_LEN + 1];
    uint64_t                        started;
    ngx_int_t                       rc;
    ngx_time_t                     *tp;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_loc_conf_t   *slcf;
    ngx_http_spendpol_main_conf_t  *smcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    if (!slcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx) {
        return ctx->phase_status;
    }

    started = ngx_http_spendpol_now_us();

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_spendpol_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->start_us = started;
    tp = ngx_timeofday();
    ctx->start_ms = (int64_t) tp->sec * 1000 + tp->msec;
    ctx->phase_status = NGX_DONE;

    ngx_http_set_ctx(r, ctx, ngx_http_spendpol_module);

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    ngx_http_spendpol_ids(r, ctx, smcf);

    query_key[0] = '\0';

    rc = ngx_http_spendpol_path(r, ctx, query_key);

    if (rc == NGX_OK && !ctx->replaced) {
        rc = ngx_http_spendpol_authenticate(r, ctx, smcf, query_key);
    }

    if (rc == NGX_OK && !ctx->replaced) {
        rc = ngx_http_spendpol_route(r, ctx);
    }

    if (rc == NGX_OK && !ctx->replaced
        && r->headers_in.content_length_n > (off_t) slcf->max_body_size)
    {
        rc = ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "invalid_request_error",
                                   "request_too_large",
                                   "request body is larger than "
                                   "spendpol_max_body_size");
    }

    ctx->gateway_us += ngx_http_spendpol_now_us() - started;

    if (rc != NGX_OK || ctx->replaced) {
        /* an error already sent, or one for nginx to send (as JSON) */
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_spendpol_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
            rc = ngx_http_spendpol_send_error(r, ctx, rc,
                                       "invalid_request_error",
                                       "request_too_large",
                                       "request body is larger than "
                                       "spendpol_max_body_size");
        }

        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_http_spendpol_body_handler(ngx_http_request_t *r)
{
    uint64_t                  started;
    ngx_int_t                 rc;
    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    started = ngx_http_spendpol_now_us();

    rc = ngx_http_spendpol_prepare(r, ctx);

    ngx_http_spendpol_after_admission(r, ctx, rc, started);
}


/*
 * After the budget stage: NGX_DECLINED resolves the provider's address
 * and forwards, NGX_AGAIN waits for the lease, anything else is ours to
 * send (an error already sent, or a failure).
 */
static void
ngx_http_spendpol_after_admission(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc, uint64_t started)
{
    if (rc == NGX_AGAIN && !ctx->cache_waiting) {
        rc = ngx_http_spendpol_lease_park(r, ctx);
    }

    if (rc != NGX_DECLINED) {
        ctx->gateway_us += ngx_http_spendpol_now_us() - started;

        if (rc == NGX_AGAIN) {
            return;
        }

        ctx->phase_status = NGX_DONE;
        ngx_http_finalize_request(r, rc);
        return;
    }

    rc = ngx_http_spendpol_upstream_resolve(r, ctx);

    ctx->gateway_us += ngx_http_spendpol_now_us() - started;

    if (rc == NGX_AGAIN) {
        /* the resolver's handler goes on */
        return;
    }

    ngx_http_spendpol_forward(r, ctx, rc);
}


/*
 * A request whose lease lacks what it needs waits for controld to extend
 * it, as limit_req delays a request (ngx_http_limit_req_module.c): a
 * timer on the write event, the budget stage run again on each wake.
 * It holds nothing meanwhile (its rate limit count excepted, as any
 * request in flight), and a client that goes away is noticed
 * (ngx_http_test_reading) and ends the request as any 499: the timer
 * goes with the connection.
 */
static ngx_int_t
ngx_http_spendpol_lease_park(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (ctx->lease_deadline - ngx_current_msec);

    return ngx_http_spendpol_park(r,
                                  ngx_min(NGX_HTTP_SPENDPOL_LEASE_RECHECK,
                                          ngx_max(left, 1)),
                                  ngx_http_spendpol_lease_wake);
}


/*
 * A request waits (for its lease, or for the cache's Redis tier) as
 * limit_req delays one: a timer on the write event, handler called when
 * it fires or when the wait is cut short (the event posted, delayed
 * cleared); a client that goes away meanwhile ends the request.
 */
static ngx_int_t
ngx_http_spendpol_park(ngx_http_request_t *r, ngx_msec_t delay,
    ngx_http_event_handler_pt handler)
{
    ngx_connection_t  *c;

    c = r->connection;

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);

    } else if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = handler;

    c->write->delayed = 1;
    ngx_add_timer(c->write, delay);

    return NGX_AGAIN;
}


/*
 * Cuts a wait short (an answer came): the request's handler runs from
 * the event loop, not from inside the caller (hiredis, a connection's
 * handler).
 */
void
ngx_http_spendpol_unpark(ngx_http_request_t *r)
{
    ngx_event_t  *wev;

    wev = r->connection->write;

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    wev->delayed = 0;
    ngx_post_event(wev, &ngx_posted_events);
}


static void
ngx_http_spendpol_lease_wake(ngx_http_request_t *r)
{
    uint64_t                  started;
    ngx_int_t                 rc;
    ngx_event_t              *wev;
    ngx_http_spendpol_ctx_t  *ctx;

    wev = r->connection->write;

    if (wev->delayed) {
        /* not the timer: the socket became writable meanwhile */
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    started = ngx_http_spendpol_now_us();

    rc = ngx_http_spendpol_budget_stage(r, ctx);

    if (rc != NGX_AGAIN) {
        if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        r->read_event_handler = ngx_http_block_reading;
        r->write_event_handler = ngx_http_core_run_phases;
    }

    ngx_http_spendpol_after_admission(r, ctx, rc, started);
}


/*
 * After the provider's address is known: NGX_OK runs the proxy, anything
 * else is nginx's error page (JSON, from our header filter).
 */
void
ngx_http_spendpol_forward(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    ngx_int_t rc)
{
    if (ctx->targets && rc != NGX_AGAIN) {
        /* a routed request's fallbacks are resolved before it goes */
        rc = ngx_http_spendpol_fallback_resolve(r, ctx, rc);

        if (rc == NGX_AGAIN) {
            return;
        }
    }

    if (rc != NGX_OK) {
        ctx->phase_status = NGX_DONE;
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->phase_status = NGX_DECLINED;
    ctx->proxied = 1;

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * Stage 1: "/v1/{provider}/{rest}?{query}" from the request target as the
 * client sent it, still percent-encoded: nginx's decoded URI may hold
 * CR, LF or spaces that would split the upstream request line, and has
 * its dot segments resolved. The whole path and the query are validated
 * and re-encoded by libspendpol; only their canonical forms reach the
 * provider. A Spendpol key in the query is taken out of it (into
 * query_key) whatever its spelling.
 */
static ngx_int_t
ngx_http_spendpol_path(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    u_char *query_key)
{
    int        has_key;
    char       reason[256];
    u_char    *p, *last, *start, *out;
    size_t     len;
    ngx_int_t  rc;
    ngx_str_t  target, path;

    /* the path as sent: up to the query, without nginx's decoding */
    target = r->unparsed_uri;

    p = ngx_strlchr(target.data, target.data + target.len, '?');

    if (p) {
        target.len = p - target.data;
    }

    rc = ngx_http_spendpol_canonical(r, &target, &path, reason);

    if (rc != NGX_OK) {
        return rc == NGX_DECLINED
               ? ngx_http_spendpol_invalid_path(r, ctx, "the path", reason)
               : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (path.len < sizeof(NGX_HTTP_SPENDPOL_PREFIX) - 1
        || ngx_strncmp(path.data, NGX_HTTP_SPENDPOL_PREFIX,
                       sizeof(NGX_HTTP_SPENDPOL_PREFIX) - 1) != 0)
    {
        /*
         * Not sent to /v1/: a rewrite of the configuration's brought it
         * here. Its result, decoded, is checked the same way.
         */
        rc = ngx_http_spendpol_canonical(r, &r->uri, &path, reason);

        if (rc != NGX_OK) {
            return rc == NGX_DECLINED
                   ? ngx_http_spendpol_invalid_path(r, ctx, "the path",
                                                    reason)
                   : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    p = path.data;
    last = path.data + path.len;

    if (path.len < sizeof(NGX_HTTP_SPENDPOL_PREFIX) - 1
        || ngx_strncmp(p, NGX_HTTP_SPENDPOL_PREFIX,
                       sizeof(NGX_HTTP_SPENDPOL_PREFIX) - 1) != 0)
    {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_NOT_FOUND,
                                   "invalid_request_error", "not_found",
                                   "expected a path /v1/{provider}/..., "
                                   "provider one of "
                                   SP_PROVIDER_NAMES_TEXT);
    }

    start = p + sizeof(NGX_HTTP_SPENDPOL_PREFIX) - 1;

    for (p = start; p < last && *p != '/'; p++) {
        /* void */
    }

    ctx->provider = sp_provider_from_name((char *) start, p - start);

    if (ctx->provider == SP_PROVIDER_UNKNOWN) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_NOT_FOUND,
                                   "invalid_request_error",
                                   "unknown_provider",
                                   "unknown provider in the path: expected "
                                   "/v1/{provider}/... with provider one of "
                                   SP_PROVIDER_NAMES_TEXT);
    }

    ctx->provider_name.data = (u_char *) sp_provider_name(ctx->provider);
    ctx->provider_name.len = ngx_strlen(ctx->provider_name.data);

    /* already canonical: every segment of the whole path was */
    ctx->rest.data = p;
    ctx->rest.len = last - p;

    if (ctx->rest.len == 0) {
        return ngx_http_spendpol_invalid_path(r, ctx, "the path",
                                   (char *) "it names no endpoint after "
                                   "/v1/{provider}");
    }

    ngx_str_null(&ctx->args);

    if (r->args.len == 0) {
        return NGX_OK;
    }

    len = r->args.len;

    if (len > SP_PATH_MAX) {
        return ngx_http_spendpol_invalid_path(r, ctx, "the query string",
                                              (char *) "it is too long");
    }

    out = ngx_pnalloc(r->pool, 3 * len + 1);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    has_key = 0;

    if (sp_query_canonical((char *) r->args.data, len, (char *) out,
                           3 * len + 1, &ctx->args.len, (char *) query_key,
                           &has_key, reason, sizeof(reason))
        != SP_OK)
    {
        return ngx_http_spendpol_invalid_path(r, ctx, "the query string",
                                              reason);
    }

    ctx->args.data = out;

    if (!has_key) {
        query_key[0] = '\0';
    }

    return NGX_OK;
}


/*
 * The canonical form of a whole path into out: NGX_OK, NGX_DECLINED with
 * the reason (256 bytes), or NGX_ERROR.
 */
static ngx_int_t
ngx_http_spendpol_canonical(ngx_http_request_t *r, ngx_str_t *in,
    ngx_str_t *out, char *reason)
{
    size_t  len;

    if (in->len > SP_PATH_MAX) {
        ngx_cpystrn((u_char *) reason, (u_char *) "it is too long", 256);
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(r->pool, 3 * in->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    if (sp_path_canonical((char *) in->data, in->len, (char *) out->data,
                          3 * in->len + 1, &len, reason, 256)
        != SP_OK)
    {
        return NGX_DECLINED;
    }

    out->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_spendpol_invalid_path(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const char *what, char *reason)
{
    char  err[384];

    ngx_snprintf((u_char *) err, sizeof(err) - 1,
                 "%s after /v1/{provider} is refused: %s; nothing was sent "
                 "to the provider%Z", what, reason);

    err[sizeof(err) - 1] = '\0';

    return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "invalid_request_error",
                                        "invalid_path", err);
}


static ngx_int_t
ngx_http_spendpol_authenticate(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    u_char *query_key)
{
    u_char                   *p, *last;
    uint8_t                   hash[SP_KEY_HASH_LEN];
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_str_t                 key;
    ngx_table_elt_t          *h;
    const sp_snapshot_key_t  *found;

    ngx_str_null(&key);

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        p = h->value.data + 7;
        last = h->value.data + h->value.len;

        while (p < last && *p == ' ') {
            p++;
        }

        key.data = p;
        key.len = last - p;
    }

    /* wherever the provider's own SDK puts its key */
    for (i = 0; key.len == 0 && ngx_http_spendpol_key_headers[i].len; i++) {
        h = ngx_http_spendpol_request_header(r,
                              (char *) ngx_http_spendpol_key_headers[i].data,
                              ngx_http_spendpol_key_headers[i].len);
        if (h) {
            key = h->value;
        }
    }

    if (key.len == 0 && query_key[0] != '\0') {
        key.data = query_key;
        key.len = ngx_strlen(query_key);
    }

    if (key.len == 0) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                   "authentication_error",
                                   "missing_api_key",
                                   "no Spendpol key: send \"Authorization: "
                                   "Bearer sp_key_...\", \"X-Spendpol-Key\", "
                                   "or the provider SDK's own key header");
    }

    if (smcf->snapshot_map == NULL) {
        ngx_http_spendpol_snapshot_refresh(smcf, r->connection->log);
    }

    if (smcf->snapshot_map == NULL) {
        return ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "api_error", "gateway_not_ready",
                                   "the gateway has no policy snapshot yet; "
                                   "is controld running?");
    }

    found = NULL;

    if (sp_key_is_wellformed((char *) key.data, key.len)) {
        sp_key_hash((char *) key.data, key.len, hash);
        ngx_memcpy(ctx->key_hash, hash, SP_KEY_HASH_LEN);
        found = sp_snapshot_find_key(&smcf->snapshot, hash);

        if (found == NULL) {
            /*
             * A key created a moment ago may be in a snapshot this worker
             * has not picked up yet: one stat() to look costs less than
             * refusing it.
             */
            ngx_http_spendpol_snapshot_refresh(smcf, r->connection->log);
            found = sp_snapshot_find_key(&smcf->snapshot, hash);
        }
    }

    if (found == NULL && !sp_key_is_wellformed((char *) key.data, key.len))
    {
        rc = ngx_http_spendpol_shadow_key(r, ctx, &key);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    if (found == NULL || !(found->scopes & SP_SCOPE_PROXY)) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                   "authentication_error",
                                   "invalid_api_key",
                                   "the Spendpol key is not valid: unknown, "
                                   "revoked or without the proxy scope");
    }

    if (ngx_http_spendpol_copy(r->pool, &ctx->org_id,
                               sp_snapshot_str(&smcf->snapshot,
                                               found->org_id)) != NGX_OK
        || ngx_http_spendpol_copy(r->pool, &ctx->key_id,
                                  sp_snapshot_str(&smcf->snapshot,
                                                  found->key_id)) != NGX_OK
        || ngx_http_spendpol_copy(r->pool, &ctx->department,
                                  sp_snapshot_str(&smcf->snapshot,
                                                  found->department))
           != NGX_OK
        || ngx_http_spendpol_copy(r->pool, &ctx->project,
                                  sp_snapshot_str(&smcf->snapshot,
                                                  found->project)) != NGX_OK
        || ngx_http_spendpol_copy(r->pool, &ctx->agent_id,
                                  sp_snapshot_str(&smcf->snapshot,
                                                  found->agent_id)) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Well formed (sp_key_ and hex), so safe in a header: the semantic
     * cache's embedding call presents it again (ngx_http_spendpol_embed.c).
     * A header's value lives as long as the request; only a key taken
     * from the query (in the caller's buffer) is copied.
     */
    ctx->presented_key = key;

    if (key.data == query_key) {
        ctx->presented_key.data = ngx_pstrdup(r->pool, &key);
        if (ctx->presented_key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->authenticated = 1;
    ctx->template_required = (found->flags & SP_KEY_TEMPLATE_REQUIRED) != 0;

    rc = ngx_http_spendpol_attribute(r, ctx, found);

    if (rc != NGX_OK || ctx->replaced) {
        return rc;
    }

    /* refused, and journaled: a paused agent's attempts are audited */
    if (found->flags & SP_KEY_AGENT_PAUSED) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                   "permission_error", "agent_paused",
                                   "the agent this key belongs to is "
                                   "paused: POST /agents/{id}/resume on the "
                                   "admin API");
    }

    return NGX_OK;
}


/*
 * Stage 4: attribution. A key's own department and project bind: a
 * header may name one only when the key has none, or when the key allows
 * overrides (a shared service key), and then the key's own values stay
 * in ctx->key_* so that their budgets apply as well. NGX_OK to go on;
 * a refusal is sent (ctx->replaced) and its status returned.
 */
static ngx_int_t
ngx_http_spendpol_attribute(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_key_t *key)
{
    ngx_int_t   rc;
    ngx_uint_t  may_override;

    may_override = (key->flags & SP_KEY_ATTRIBUTION_OVERRIDE) != 0;

    rc = ngx_http_spendpol_attribute_one(r, ctx, "X-Spendpol-Department",
                                         sizeof("X-Spendpol-Department") - 1,
                                         may_override, &ctx->department,
                                         &ctx->key_department);

    if (rc != NGX_OK || ctx->replaced) {
        return rc;
    }

    return ngx_http_spendpol_attribute_one(r, ctx, "X-Spendpol-Project",
                                    sizeof("X-Spendpol-Project") - 1,
                                    may_override, &ctx->project,
                                    &ctx->key_project);
}


static ngx_int_t
ngx_http_spendpol_attribute_one(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const char *header, size_t len,
    ngx_uint_t may_override, ngx_str_t *value, ngx_str_t *key_value)
{
    char              err[512];
    ngx_table_elt_t  *h;

    h = ngx_http_spendpol_request_header(r, header, len);

    if (h == NULL || h->value.len == 0) {
        return NGX_OK;
    }

    if (h->value.len >= SP_FIELD_LEN
        || !sp_header_value_ok((char *) h->value.data, h->value.len))
    {
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "header %s must be at most %d bytes without control "
                     "characters%Z", header, SP_FIELD_LEN - 1);

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_request_error",
                                            "invalid_header", err);
    }

    if (value->len == 0
        || (value->len == h->value.len
            && ngx_strncmp(value->data, h->value.data, value->len) == 0))
    {
        *value = h->value;
        return NGX_OK;
    }

    if (!may_override) {
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "this key is bound to its own attribution and %s names "
                     "another; send the key's own value or none, or give "
                     "the key \"attribution_override\": true (PATCH "
                     "/api-keys/{id} on the admin API)%Z", header);

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                            "permission_error",
                                            "attribution_not_allowed", err);
    }

    *key_value = *value;
    *value = h->value;

    return NGX_OK;
}


/* "/v1/{provider}/{rest}": the provider must be known and configured */
static ngx_int_t
ngx_http_spendpol_route(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    u_char                        *u;
    sp_str_t                       org, name, base_url, api_key;
    ngx_int_t                      rc;
    const char                    *scheme;
    ngx_table_elt_t               *h;
    ngx_http_spendpol_main_conf_t *smcf;
    const sp_snapshot_provider_t  *provider;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    name.data = (char *) ctx->provider_name.data;
    name.len = ctx->provider_name.len;

    provider = sp_snapshot_find_provider(&smcf->snapshot, org, name);

    if (provider == NULL) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_NOT_FOUND,
                                   "invalid_request_error",
                                   "provider_not_configured",
                                   "this provider has no credential in your "
                                   "organisation: PUT /providers/{name} on "
                                   "the admin API");
    }

    rc = ngx_http_spendpol_governed(r, ctx);

    if (rc != NGX_OK || ctx->replaced) {
        return rc;
    }

    base_url = sp_snapshot_str(&smcf->snapshot, provider->base_url);
    api_key = sp_snapshot_str(&smcf->snapshot, provider->api_key);

    if (ngx_http_spendpol_copy(r->pool, &ctx->credential, api_key)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_spendpol_upstream_target(r, ctx, (u_char *) base_url.data,
                                           base_url.len, &ctx->args);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_GATEWAY,
                                   "api_error", "upstream_unreachable",
                                   "the provider's base_url is not a valid "
                                   "http:// or https:// URL: PUT "
                                   "/providers/{name} on the admin API");
    }

    switch (ctx->provider) {

    case SP_PROVIDER_ANTHROPIC:
        h = ngx_http_spendpol_request_header(r, "anthropic-version",
                                             sizeof("anthropic-version") - 1);
        if (h && h->value.len) {
            if (!sp_header_value_ok((char *) h->value.data, h->value.len)) {
                return ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_header",
                                   "header anthropic-version must not "
                                   "contain control characters");
            }

            ctx->anthropic_version = h->value;

        } else {
            ngx_str_set(&ctx->anthropic_version,
                        NGX_HTTP_SPENDPOL_ANTHROPIC_VERSION);
        }

        break;

    default:
        break;
    }

    /* the catalogue says which providers take "Authorization: Bearer" */
    scheme = sp_provider(ctx->provider)->auth_scheme;

    if (scheme[0] != '\0') {
        ctx->upstream_authorization.len = ngx_strlen(scheme) + api_key.len;
        ctx->upstream_authorization.data =
                        ngx_pnalloc(r->pool, ctx->upstream_authorization.len);
        if (ctx->upstream_authorization.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        u = ngx_cpymem(ctx->upstream_authorization.data, scheme,
                       ngx_strlen(scheme));
        ngx_memcpy(u, api_key.data, api_key.len);
    }

    return NGX_OK;
}


typedef struct {
    const sp_snapshot_t  *snapshot;
    ngx_str_t             method;
    ngx_str_t             path;
    ngx_uint_t            allowed;
} ngx_http_spendpol_allow_t;


/*
 * Stage 1, once the organisation is known: the endpoint must be one the
 * catalogue meters, or one the organisation allowed (journaled, rate
 * limited, refused while a hard budget is spent, never metered).
 */
static ngx_int_t
ngx_http_spendpol_governed(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char                            err[512];
    sp_str_t                        org, provider;
    ngx_http_spendpol_allow_t       allow;
    ngx_http_spendpol_main_conf_t  *smcf;

    ctx->endpoint = sp_endpoint_find(ctx->provider,
                                     (char *) r->method_name.data,
                                     r->method_name.len,
                                     (char *) ctx->rest.data, ctx->rest.len);

    if (ctx->endpoint) {
        return NGX_OK;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    provider.data = (char *) ctx->provider_name.data;
    provider.len = ctx->provider_name.len;

    allow.snapshot = &smcf->snapshot;
    allow.method = r->method_name;
    allow.path = ctx->rest;
    allow.allowed = 0;

    (void) sp_snapshot_foreach_endpoint(&smcf->snapshot, org, provider,
                                        ngx_http_spendpol_endpoint_visit,
                                        &allow);

    if (allow.allowed) {
        ctx->ungoverned = 1;
        return NGX_OK;
    }

    ngx_snprintf((u_char *) err, sizeof(err) - 1,
                 "%V %*s is not an endpoint Spendpol meters for %V, so it "
                 "is not forwarded; an administrator can allow it: PUT /org "
                 "{\"allowed_endpoints\":[{\"provider\":\"%V\",\"method\":"
                 "\"%V\",\"path\":\"%*s\"}]}%Z",
                 &r->method_name, ngx_min(ctx->rest.len, 100), ctx->rest.data,
                 &ctx->provider_name, &ctx->provider_name, &r->method_name,
                 ngx_min(ctx->rest.len, 100), ctx->rest.data);

    err[sizeof(err) - 1] = '\0';

    return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                        "permission_error",
                                        "endpoint_not_governed", err);
}


static int
ngx_http_spendpol_endpoint_visit(const sp_snapshot_endpoint_t *e, void *arg)
{
    ngx_http_spendpol_allow_t  *allow = arg;

    sp_str_t  method, pattern;

    method = sp_snapshot_str(allow->snapshot, e->method);
    pattern = sp_snapshot_str(allow->snapshot, e->pattern);

    if (method.len == allow->method.len
        && ngx_strncmp(method.data, allow->method.data, method.len) == 0
        && sp_endpoint_match(pattern.data, pattern.len,
                             (char *) allow->path.data, allow->path.len))
    {
        allow->allowed = 1;
        return 1;
    }

    return 0;
}


/* after the body is read: NGX_DECLINED forwards, anything else is sent */
static ngx_int_t
ngx_http_spendpol_prepare(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    u_char                        *p;
    size_t                         len;
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_uint_t                     i, current;
    ngx_chain_t                   *cl;
    ngx_http_spendpol_loc_conf_t  *slcf;
    const sp_snapshot_price_t     *price;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    len = 0;
    price = NULL;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;

            if (ngx_buf_special(b)) {
                continue;
            }

            if (!ngx_buf_in_memory(b)) {
                /* only a body over the in-memory limit reaches a file */
                len = slcf->max_body_size + 1;
                break;
            }

            len += b->last - b->pos;
        }
    }

    if (len > slcf->max_body_size) {
        return ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "invalid_request_error",
                                   "request_too_large",
                                   "request body is larger than "
                                   "spendpol_max_body_size");
    }

    ctx->body.len = len;
    ctx->body.data = ngx_pnalloc(r->pool, len + 1);
    if (ctx->body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ctx->body.data;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (ngx_buf_in_memory(cl->buf)) {
                p = ngx_cpymem(p, cl->buf->pos,
                               cl->buf->last - cl->buf->pos);
            }
        }
    }

    *p = '\0';

    ctx->request = ngx_pcalloc(r->pool, sizeof(sp_request_info_t));
    if (ctx->request == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->ungoverned) {
        /* an endpoint the organisation allowed: its body is not ours */
        goto admit;
    }

    rc = ngx_http_spendpol_parse_body(r, ctx);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* stage 4 (attribution is done), 5 and 6 */
    rc = ngx_http_spendpol_template_stage(r, ctx);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_http_spendpol_policy_stage(r, ctx);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_http_spendpol_route_stage(r, ctx);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_http_spendpol_check_price(r, ctx, &price);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ctx->targets == NULL) {
        rc = ngx_http_spendpol_stream_usage(r, ctx);

    } else {
        /* each target of the chain is its own request */
        ngx_http_spendpol_route_keep(ctx);

        current = ctx->target;

        for (i = 0; i < ctx->ntargets; i++) {
            ngx_http_spendpol_route_load(ctx, &ctx->targets[i]);

            rc = ngx_http_spendpol_stream_usage(r, ctx);

            ngx_http_spendpol_route_save(ctx, &ctx->targets[i]);

            if (rc != NGX_OK) {
                break;
            }
        }

        ngx_http_spendpol_route_load(ctx, &ctx->targets[current]);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_spendpol_route_keep(ctx);

    /*
     * Stage 7 on the final body. A request that may fall back to another
     * target, or whose answer is translated, is not cached: the key
     * names one target's request, the answer could come from another.
     */
    if (ctx->targets && (ctx->ntargets > 1 || ctx->translate)) {
        rc = NGX_OK;

    } else {
        rc = ngx_http_spendpol_cache_lookup(r, ctx);
    }

    if (rc == NGX_AGAIN) {
        /* Redis or the embedding call answers, or its time runs out */
        ctx->cache_waiting = 1;

        return ngx_http_spendpol_park(r, ctx->cache_wait,
                                      ngx_http_spendpol_cache_wake);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_spendpol_after_lookup(r, ctx, price);

admit:

    return ngx_http_spendpol_admit(r, ctx);
}


/*
 * A streamed OpenAI-shaped chat call reports usage only when asked to;
 * ask, and keep the extra chunk from a client that did not. (The
 * Responses API always reports usage and has no stream_options.)
 */
static ngx_int_t
ngx_http_spendpol_stream_usage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char  *rewritten;
    size_t   n;

    if (!ctx->request->stream || ctx->request->include_usage
        || !(ctx->endpoint->flags & SP_ENDPOINT_CHAT))
    {
        return NGX_OK;
    }

    n = ctx->body.len * 2 + 64;

    rewritten = ngx_pnalloc(r->pool, n);
    if (rewritten == NULL) {
        return NGX_ERROR;
    }

    if (!ctx->request->has_stream_options) {
        n = sp_request_add_stream_usage((char *) ctx->body.data,
                                        ctx->body.len,
                                        (char *) rewritten, n);

    } else {
        n = sp_request_set_stream_usage((char *) ctx->body.data,
                                        ctx->body.len,
                                        (char *) rewritten, n);
    }

    if (n) {
        ctx->body.data = rewritten;
        ctx->body.len = n;
        ctx->strip_usage = 1;
    }

    return NGX_OK;
}


/*
 * Stage 3: ctx->body read into ctx->request (the path says what the body
 * does not). NGX_DECLINED goes on; a body that is not a valid request is
 * refused, naming the field.
 */
ngx_int_t
ngx_http_spendpol_parse_body(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char  err[512];

    if (sp_request_parse(ctx->provider, (char *) ctx->body.data,
                         ctx->body.len, ctx->request, err, sizeof(err))
        != SP_OK)
    {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   ctx->request->error_code
                                   ? ctx->request->error_code
                                   : "invalid_json", err);
    }

    sp_request_from_path(ctx->provider, (char *) ctx->rest.data,
                         ctx->rest.len, ctx->request);

    return NGX_DECLINED;
}


/*
 * After stage 7. A hit needs no worst case (it holds no tokens and
 * reserves nothing), so the prompt is not counted for it.
 */
static ngx_int_t
ngx_http_spendpol_after_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price)
{
    if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT) {
        if (ctx->targets && ctx->ntargets > 1) {
            ngx_http_spendpol_route_worst_case(r, ctx,
                                              ngx_http_spendpol_price_target);

        } else {
            ngx_http_spendpol_worst_case(r, ctx, price);
        }

    } else {
        /* nothing is billed, at any price */
        ctx->fallback_price = 0;
    }

    return ngx_http_spendpol_admit(r, ctx);
}


/*
 * A lookup that waited for the Redis tier goes on: answered (a hit or a
 * miss), or its time ran out (a miss). The price is found again: the
 * snapshot may have changed meanwhile.
 */
static void
ngx_http_spendpol_cache_wake(ngx_http_request_t *r)
{
    uint64_t                    started;
    ngx_int_t                   rc;
    ngx_event_t                *wev;
    ngx_http_spendpol_ctx_t    *ctx;
    const sp_snapshot_price_t  *price;

    wev = r->connection->write;

    if (wev->delayed) {
        /* not the timer nor the answer: the socket became writable */
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (wev->posted) {
        /* both the socket and the answer woke it: once is enough */
        ngx_delete_posted_event(wev);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    started = ngx_http_spendpol_now_us();

    /* what did not answer in time is a miss */
    ngx_http_spendpol_redis_abandon(ctx);
    ngx_http_spendpol_embed_abandon(ctx);

    rc = ngx_http_spendpol_cache_next(r, ctx);

    if (rc == NGX_AGAIN) {
        /* the next step waits too */
        rc = ngx_http_spendpol_park(r, ctx->cache_wait,
                                    ngx_http_spendpol_cache_wake);

        ctx->gateway_us += ngx_http_spendpol_now_us() - started;

        if (rc != NGX_AGAIN) {
            ctx->phase_status = NGX_DONE;
            ngx_http_finalize_request(r, rc);
        }

        return;
    }

    ctx->cache_waiting = 0;

    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    rc = NGX_DECLINED;
    price = NULL;

    if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT) {
        rc = ngx_http_spendpol_check_price(r, ctx, &price);
    }

    if (rc == NGX_DECLINED) {
        rc = ngx_http_spendpol_after_lookup(r, ctx, price);
    }

    ngx_http_spendpol_after_admission(r, ctx, rc, started);
}


/* stages 7 (rate limits) and 8, or a hit's answer */
static ngx_int_t
ngx_http_spendpol_admit(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_spendpol_ratelimit_admit(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        if (ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT) {
            /* found but not served: no hit, nothing saved */
            ctx->cache_state = NGX_HTTP_SPENDPOL_CACHE_SKIP;
        }

        return ngx_http_spendpol_ratelimit_refuse(r, ctx);
    }

    if (ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT) {
        /* no upstream, no reservation */
        return ngx_http_spendpol_cache_send(r, ctx);
    }

    return ngx_http_spendpol_budget_stage(r, ctx);
}


/*
 * Stage 8: the budget reservation. NGX_DECLINED goes on, NGX_AGAIN waits
 * for the lease (until spendpol_lease_wait has passed), anything else
 * was sent.
 */
static ngx_int_t
ngx_http_spendpol_budget_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char                         money[80];
    char                           err[512];
    size_t                         spent, limit;
    ngx_int_t                      rc;
    const char                    *cause;
    ngx_http_spendpol_loc_conf_t  *slcf;

    rc = ngx_http_spendpol_budget_admit(r, ctx);

    if (rc == NGX_AGAIN) {
        slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

        if (!ctx->lease_waiting) {
            ctx->lease_waiting = 1;
            ctx->lease_deadline = ngx_current_msec + slcf->lease_wait;
        }

        if ((ngx_msec_int_t) (ctx->lease_deadline - ngx_current_msec) > 0) {
            return NGX_AGAIN;
        }

        rc = NGX_DECLINED;

        if (ctx->lease_answered) {
            /* controld answered: the other nodes hold what is left */
            ctx->refused_lease = SP_LEASE_EXHAUSTED;
        }
    }

    if (rc == NGX_BUSY) {
        return ngx_http_spendpol_zone_full(r, ctx);
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED && ctx->refused_unpriced) {
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "model \"%s\" has no price and a budget with a hard "
                     "limit covers this request, so its cost could not be "
                     "held against it; add a price with PUT "
                     "/pricing/%V/{model}, or a fallback price for every "
                     "unpriced %V model with PUT /pricing/%V/* on the admin "
                     "API%Z", ctx->request->model, &ctx->provider_name,
                     &ctx->provider_name, &ctx->provider_name);

        err[sizeof(err) - 1] = '\0';

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                            "permission_error",
                                            "unpriced_model", err);
    }

    if (rc == NGX_DECLINED && ctx->refused_lease != SP_LEASE_OK
        && ctx->refused_lease != SP_LEASE_EXHAUSTED)
    {
        switch (ctx->refused_lease) {

        case SP_LEASE_EXPIRED:
            cause = "has expired: its control daemon has not renewed it "
                    "(controld stopped or PostgreSQL unreachable)";
            break;

        case SP_LEASE_CATCHING_UP:
            cause = "is not usable yet: its control daemon has not yet "
                    "counted what this node's previous nginx spent "
                    "(controld stopped or PostgreSQL unreachable)";
            break;

        default: /* SP_LEASE_TOP_UP */
            cause = "does not cover this request and its control daemon "
                    "did not extend it within spendpol_lease_wait "
                    "(controld stopped or slow, or PostgreSQL "
                    "unreachable)";
        }

        /* exactness over availability: docs/budgets.md, Failures */
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "budget %s: this node's share of the budget %s; a hard "
                     "budget refuses rather than risk overspending%Z",
                     ctx->refused_budget, cause);

        err[sizeof(err) - 1] = '\0';

        return ngx_http_spendpol_send_error(r, ctx, 402, "insufficient_quota",
                                            "budget_unavailable", err);
    }

    if (rc == NGX_DECLINED) {
        spent = sp_money_format(ctx->refused_spent, (char *) money);
        money[spent] = '\0';
        limit = sp_money_format(ctx->refused_limit, (char *) money + 40);
        money[40 + limit] = '\0';

        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "budget %s would be exceeded: %s of %s USD spent or "
                     "reserved in this period%Z", ctx->refused_budget,
                     money, money + 40);

        /* 402: the SDKs do not retry it, and they should not */
        return ngx_http_spendpol_send_error(r, ctx, 402, "insufficient_quota",
                                            "budget_exceeded", err);
    }

    return NGX_DECLINED;
}


/*
 * Stage 3's checks: the price of the requested model (or the
 * organisation's fallback "*" price for the provider) into *found, NULL
 * when unpriced; refuses an unpriced model where the organisation says
 * so, and an output limit above the model's. NGX_DECLINED goes on;
 * anything else was sent.
 */
static ngx_int_t
ngx_http_spendpol_check_price(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t **found)
{
    char                        err[384];
    int64_t                     limit;
    sp_request_info_t          *req;
    const sp_snapshot_price_t  *price;

    req = ctx->request;

    *found = NULL;

    if (ctx->endpoint->meter == SP_METER_FREE) {
        return NGX_DECLINED;
    }

    price = ngx_http_spendpol_price(r, ctx, req->model);

    if (price == NULL && ngx_http_spendpol_refuses_unpriced(r, ctx)) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "unpriced_model",
                                   "this model has no price and your "
                                   "organisation refuses unpriced models: "
                                   "PUT /pricing/{provider}/{model} on the "
                                   "admin API");
    }

    if (price == NULL) {
        price = ngx_http_spendpol_lookup_price(r, ctx);
    }

    *found = price;

    limit = price ? price->max_output_tokens : 0;

    if (limit && req->max_tokens > limit) {
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "field \"max_tokens\" (or max_completion_tokens, "
                     "max_output_tokens, maxOutputTokens) is %L, above the "
                     "output limit of \"%s\", %L tokens%Z",
                     req->max_tokens, req->model, limit);

        err[sizeof(err) - 1] = '\0';

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_request_error",
                                            "invalid_field", err);
    }

    return NGX_DECLINED;
}


/* the organisation's fallback "*" price of the request's provider */
static const sp_snapshot_price_t *
ngx_http_spendpol_lookup_price(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    sp_str_t                        org, provider, any;
    ngx_http_spendpol_main_conf_t  *smcf;
    const sp_snapshot_price_t      *price;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot_map == NULL) {
        return NULL;
    }

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    provider.data = (char *) ctx->provider_name.data;
    provider.len = ctx->provider_name.len;
    any.data = "*";
    any.len = 1;

    price = sp_snapshot_find_price(&smcf->snapshot, org, provider, any);

    if (price) {
        ctx->fallback_price = 1;
    }

    return price;
}


/*
 * A routed request's target, priced as stage 3 prices the request (its
 * model's price, else the "*" one) and its worst case computed: the
 * reservation covers the costliest target (ngx_http_spendpol_route.c).
 */
/*
 * The tokens a request may cost at worst at price (NULL: unpriced): its
 * prompt counted, and its output up to what it asks for or the model's
 * limit, as the endpoint meters them.
 */
static void
ngx_http_spendpol_worst_tokens(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price,
    int64_t *input, int64_t *output)
{
    int64_t  limit;

    limit = price ? price->max_output_tokens : 0;

    ngx_http_spendpol_count_prompt(r, ctx);

    sp_request_worst_case(ctx->request,
                          limit ? limit : NGX_HTTP_SPENDPOL_DEFAULT_MAX_OUTPUT,
                          input, output);

    switch (ctx->endpoint->meter) {

    case SP_METER_EMBED:
        *output = 0;
        break;

    case SP_METER_SEARCH:
        /*
         * Search units: one per query and 100 documents (or 500-token
         * chunks); a document takes at least 3 bytes of the body.
         */
        *input = 1 + (int64_t) ctx->body.len / 300;
        *output = 0;
        break;

    default:
        break;
    }
}


/*
 * What the request as it stands may cost at worst at its model's own
 * price (a limits policy's max_cost_usd); -1 when the model has none.
 */
int64_t
ngx_http_spendpol_request_worst(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    int64_t                     input, output, worst;
    const sp_snapshot_price_t  *price;

    if (ctx->endpoint->meter == SP_METER_FREE) {
        return 0;
    }

    price = ngx_http_spendpol_price(r, ctx, ctx->request->model);

    if (price == NULL) {
        return -1;
    }

    ngx_http_spendpol_worst_tokens(r, ctx, price, &input, &output);

    if (sp_cost_worst_case(&price->price, input, output, &worst) != SP_OK) {
        return INT64_MAX / 4;
    }

    return worst;
}


static void
ngx_http_spendpol_price_target(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    const sp_snapshot_price_t  *price;

    price = NULL;

    if (ctx->endpoint->meter != SP_METER_FREE) {
        price = ngx_http_spendpol_price(r, ctx, ctx->request->model);

        if (price == NULL) {
            price = ngx_http_spendpol_lookup_price(r, ctx);
        }
    }

    ngx_http_spendpol_worst_case(r, ctx, price);
}


/*
 * Stage 3's numbers, for a request that will be forwarded: the worst
 * case it may cost at price (NULL: unpriced) and the tokens the rate
 * limits hold: every token of the prompt (a token covers at least one
 * byte of text, plus framing), the media charges, and every output it
 * may ask for (each of n choices up to the output limit, the model's own
 * limit when the request sets none).
 */
static void
ngx_http_spendpol_worst_case(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_snapshot_price_t *price)
{
    int64_t             input, output;
    sp_request_info_t  *req;

    req = ctx->request;

    if (ctx->endpoint->meter == SP_METER_FREE) {
        return;
    }

    ngx_http_spendpol_worst_tokens(r, ctx, price, &input, &output);

    /*
     * The rate limits hold the estimate plus what was asked for (all of
     * them at most 1e8 times 128, or saturated media: no overflow).
     */
    ctx->hold_tokens = ngx_min(sp_request_prompt_estimate(req),
                               INT64_MAX / 4)
                       + ngx_min(req->media_tokens, INT64_MAX / 4)
                       + req->max_tokens * ngx_max(req->choices, 1);

    if (price == NULL) {
        return;
    }

    ctx->priced = 1;
    ctx->price = price->price;

    if (sp_cost_worst_case(&price->price, input, output, &ctx->worst_nano)
        != SP_OK)
    {
        ctx->worst_nano = INT64_MAX / 4;
    }
}


/*
 * OpenAI's models count their prompt exactly (libspendpol's
 * sp_request_count_prompt says what and how); an Azure deployment counts
 * as the model its alias runs. Anything else keeps the bytes bound.
 */
static void
ngx_http_spendpol_count_prompt(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char                            model[SP_FIELD_LEN];
    sp_str_t                        org, provider, name, runs;
    const sp_snapshot_alias_t      *alias;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    ngx_cpystrn((u_char *) model, (u_char *) ctx->request->model,
                sizeof(model));

    if (ctx->provider == SP_PROVIDER_AZURE && smcf->snapshot_map) {
        org.data = (char *) ctx->org_id.data;
        org.len = ctx->org_id.len;
        provider.data = (char *) ctx->provider_name.data;
        provider.len = ctx->provider_name.len;
        name = sp_str_from(model);

        alias = sp_snapshot_find_alias(&smcf->snapshot, org, provider, name);

        if (alias) {
            runs = sp_snapshot_str(&smcf->snapshot, alias->model);
            sp_field_copy(model, sizeof(model), runs.data, runs.len);
        }
    }

    if (sp_request_count_prompt(&ngx_http_spendpol_tokenizer, ctx->provider,
                                model,
                                ctx->endpoint->meter == SP_METER_EMBED,
                                (char *) ctx->body.data, ctx->body.len,
                                ctx->request)
        == SP_OK)
    {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "spendpol: prompt of \"%s\": %L tokens, %L bounded",
                       model, ctx->request->prompt_tokens,
                       ctx->request->prompt_bound);
    }
}


ngx_int_t
ngx_http_spendpol_tokenizer_init(ngx_cycle_t *cycle)
{
    char                   err[256];
    sp_tok_enc_t          *enc;
    sp_tok_encoding_e      e;

    static const sp_tok_vocab_t  *vocabs[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        if (ngx_http_spendpol_tokenizer.enc[e]) {
            continue;
        }

        err[0] = '\0';
        enc = sp_tok_enc_create(e, vocabs[e], err, sizeof(err));

        if (enc == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "spendpol: cannot build the %s prompt tokenizer: "
                          "%s", vocabs[e]->name, err);
            return NGX_ERROR;
        }

        ngx_http_spendpol_tokenizer.enc[e] = enc;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_spendpol_tokenizer_init_worker(ngx_cycle_t *cycle)
{
    ngx_http_spendpol_tokenizer.ctx = sp_tok_ctx_create(0);

    if (ngx_http_spendpol_tokenizer.ctx == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "spendpol: no memory for the prompt tokenizer");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_spendpol_tokenizer_exit_worker(void)
{
    sp_tok_ctx_free(ngx_http_spendpol_tokenizer.ctx);
    ngx_http_spendpol_tokenizer.ctx = NULL;
}


static ngx_uint_t
ngx_http_spendpol_refuses_unpriced(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    sp_str_t                        org;
    const sp_snapshot_org_t        *settings;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;

    settings = sp_snapshot_find_org(&smcf->snapshot, org);

    return settings && (settings->flags & SP_ORG_REFUSE_UNPRICED);
}


ngx_table_elt_t *
ngx_http_spendpol_request_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_spendpol_copy(ngx_pool_t *pool, ngx_str_t *dst, sp_str_t src)
{
    dst->len = src.len;

    if (src.len == 0) {
        dst->data = (u_char *) "";
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(pool, src.len);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src.data, src.len);

    return NGX_OK;
}


ngx_int_t
ngx_http_spendpol_add_header(ngx_http_request_t *r, ngx_list_t *headers,
    const char *name, u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);

    h->value.data = ngx_pnalloc(r->pool, len);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(h->value.data, value, len);
    h->value.len = len;

    return NGX_OK;
}


/* the headers every governed response carries, known before the body */
ngx_int_t
ngx_http_spendpol_add_request_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_list_t                     *headers;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
    headers = &r->headers_out.headers;

    if (ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Audit-Id",
                                     ctx->audit_id,
                                     ngx_strlen(ctx->audit_id)) != NGX_OK
        || ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Trace-Id",
                                        ctx->trace_id,
                                        ngx_strlen(ctx->trace_id)) != NGX_OK
        || ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Span-Id",
                                        ctx->span_id,
                                        ngx_strlen(ctx->span_id)) != NGX_OK
        || ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Region",
                                        smcf->region.data, smcf->region.len)
           != NGX_OK
        || ngx_http_spendpol_route_headers(r, ctx) != NGX_OK
        || ngx_http_spendpol_guard_header(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_spendpol_cache_headers(r, ctx);
}


ngx_int_t
ngx_http_spendpol_request_body_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_spendpol_request_body_filter;

    return NGX_OK;
}


/*
 * client_max_body_size is off in our locations (its 413 is HTML), so a
 * chunked body is held to spendpol_max_body_size here, as it arrives.
 */
static ngx_int_t
ngx_http_spendpol_request_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                   *cl;
    ngx_http_spendpol_ctx_t       *ctx;
    ngx_http_spendpol_loc_conf_t  *slcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx == NULL || r != r->main) {
        return ngx_http_next_request_body_filter(r, in);
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    for (cl = in; cl; cl = cl->next) {
        ctx->body_received += ngx_buf_size(cl->buf);
    }

    if (ctx->body_received > (off_t) slcf->max_body_size) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_next_request_body_filter(r, in);
}
