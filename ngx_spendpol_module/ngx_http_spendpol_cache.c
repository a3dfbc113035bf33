
/*
 * Copyright (C) Spendpol
 *
 * The exact response cache (stage 7 of the request path): a complete 200
 * answer is stored under the SHA-256 of what was asked (sp_cache.h) in a
 * shared zone of its own, and an identical request later is answered
 * from it with no upstream, no reservation and no cost.
 *
 * The zone is shaped as limit_req's (ngx_http_limit_req_module.c): a slab
 * of entries on an rbtree keyed by the first bytes of the hash and on one
 * LRU queue; expired entries are dropped from the LRU end before an
 * allocation, and when the slab is still full the least recently used
 * ones are evicted until the entry fits.
 *
 * What is stored is what the provider sent: for a stream, the raw events
 * (OpenAI's usage chunk included, which the stream filter takes out on
 * replay for a client that did not ask for it, exactly as live), so a
 * replay goes through the same response filters as a live answer and an
 * SDK cannot tell them apart.
 */


#include <sp_cache.h>

#include "ngx_http_spendpol_module.h"


/* entries looked at from the LRU end: expired ones before each store,
   and at most this many evicted for room */
#define NGX_HTTP_SPENDPOL_CACHE_EXPIRE   2
#define NGX_HTTP_SPENDPOL_CACHE_EVICT    64

/* a stream is captured in steps of this much, up to the entry limit */
#define NGX_HTTP_SPENDPOL_CACHE_CAPTURE  16384

/*
 * An entry as the Redis tier keeps it: "SPC1" and a version (8 bytes),
 * the time it was stored, its cost, the lengths of its content type
 * (high 32 bits) and body (low), all big-endian; then both.
 */
#define NGX_HTTP_SPENDPOL_CACHE_MAGIC    0x5350433100000001ULL
#define NGX_HTTP_SPENDPOL_CACHE_VALUE    32
#define NGX_HTTP_SPENDPOL_CACHE_TYPE_MAX 1024


typedef struct {
    ngx_rbtree_node_t          node;          /* key: the hash's first
                                                 bytes */
    ngx_queue_t                queue;
    u_char                     key[SP_CACHE_KEY_LEN];
    int64_t                    stored_ms;
    int64_t                    expires_ms;
    int64_t                    cost_nano;     /* what the answer cost */
    size_t                     body_len;
    size_t                     type_len;
    u_char                     data[1];       /* content type, then body */
} ngx_http_spendpol_cache_entry_t;


static ngx_int_t ngx_http_spendpol_cache_send_answer(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_http_spendpol_cache_entry_t *ngx_http_spendpol_cache_find(
    ngx_http_spendpol_cache_sh_t *sh, u_char *key);
static ngx_int_t ngx_http_spendpol_cache_insert(
    ngx_http_spendpol_main_conf_t *smcf, ngx_log_t *log, u_char *key,
    int64_t stored_ms, int64_t expires_ms, int64_t cost_nano,
    ngx_str_t *type, u_char *body, size_t len);
static u_char *ngx_http_spendpol_cache_put64(u_char *p, uint64_t v);
static uint64_t ngx_http_spendpol_cache_get64(u_char *p);
static void ngx_http_spendpol_cache_free(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_cache_entry_t *entry);
static void ngx_http_spendpol_cache_expire(
    ngx_http_spendpol_main_conf_t *smcf, int64_t now_ms);
static ngx_uint_t ngx_http_spendpol_cache_skip_asked(ngx_http_request_t *r);
static void ngx_http_spendpol_cache_rbtree_insert_value(
    ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);


/* request headers forwarded to the provider that may change its answer */
static const char  *ngx_http_spendpol_cache_headers_keyed[] = {
    "anthropic-version",
    "anthropic-beta",
    "openai-beta"
};

#define NGX_HTTP_SPENDPOL_CACHE_HEADERS                                       \
    (sizeof(ngx_http_spendpol_cache_headers_keyed)                            \
     / sizeof(ngx_http_spendpol_cache_headers_keyed[0]))


static ngx_str_t  ngx_http_spendpol_cache_states[] = {
    ngx_string("skip"),
    ngx_string("miss"),
    ngx_string("hit")
};


/*
 * Stage 7's lookup, on the body as it goes upstream. Decides the request's
 * X-Spendpol-Cache: skip (not looked up: asked so, the organisation's
 * mode is off, or not cacheable), miss (to be stored when the answer is
 * complete) or hit (the stored answer is copied into the request's pool,
 * to be sent by ngx_http_spendpol_cache_send()). NGX_OK; NGX_AGAIN when
 * a miss waits for the Redis tier (ngx_http_spendpol_cache_found() may
 * make it a hit, then the handler goes on); or
 * NGX_ERROR.
 */
ngx_int_t
ngx_http_spendpol_cache_lookup(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char                           *endpoint, *p, *scratch;
    char                              err[128];
    size_t                            n;
    ngx_uint_t                        i;
    ngx_table_elt_t                  *h[NGX_HTTP_SPENDPOL_CACHE_HEADERS];
    int64_t                           now_ms, purged_ms, max_entry;
    sp_str_t                          org;
    sp_cache_config_t                 config;
    ngx_int_t                         rc;
    ngx_uint_t                        semantic;
    sp_cache_key_in_t                 in;
    ngx_http_spendpol_main_conf_t    *smcf;

    ctx->cache_state = NGX_HTTP_SPENDPOL_CACHE_SKIP;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->cache_sh == NULL
        || smcf->snapshot_map == NULL
        || ctx->ungoverned
        || ctx->endpoint == NULL
        || ctx->request == NULL
        || ctx->endpoint->meter == SP_METER_FREE
        || r->method != NGX_HTTP_POST
        || ngx_http_spendpol_cache_skip_asked(r))
    {
        return NGX_OK;
    }

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;

    sp_snapshot_cache_config(&smcf->snapshot, org, &config);

    if (config.mode == SP_CACHE_OFF
        || (config.only_deterministic
            && !sp_cache_deterministic(ctx->request->temperature_zero,
                                       ctx->request->has_seed,
                                       ctx->endpoint->meter)))
    {
        return NGX_OK;
    }

    /*
     * "POST /chat/completions?alt=sse": the query may change the answer,
     * and so may the provider's version and beta headers the client sends
     * on (one line each after the path)
     */
    n = r->method_name.len + 1 + ctx->rest.len + 1 + ctx->args.len;

    for (i = 0; i < NGX_HTTP_SPENDPOL_CACHE_HEADERS; i++) {
        h[i] = ngx_http_spendpol_request_header(r,
                                    ngx_http_spendpol_cache_headers_keyed[i],
                                    ngx_strlen(
                                    ngx_http_spendpol_cache_headers_keyed[i]));
        if (h[i]) {
            n += 1 + ngx_strlen(ngx_http_spendpol_cache_headers_keyed[i]) + 2
                 + h[i]->value.len;
        }
    }

    endpoint = ngx_pnalloc(r->pool, n);
    if (endpoint == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(endpoint, "%V %V", &r->method_name, &ctx->rest);

    if (ctx->args.len) {
        p = ngx_sprintf(p, "?%V", &ctx->args);
    }

    for (i = 0; i < NGX_HTTP_SPENDPOL_CACHE_HEADERS; i++) {
        if (h[i]) {
            p = ngx_sprintf(p, "\n%s: %V",
                            ngx_http_spendpol_cache_headers_keyed[i],
                            &h[i]->value);
        }
    }

    ngx_memzero(&in, sizeof(sp_cache_key_in_t));

    in.org_id = org;
    in.scope = config.scope;

    switch (config.scope) {

    case SP_CACHE_SCOPE_API_KEY:
        in.scope_value.data = (char *) ctx->key_id.data;
        in.scope_value.len = ctx->key_id.len;
        break;

    case SP_CACHE_SCOPE_PROJECT:
        in.scope_value.data = (char *) ctx->project.data;
        in.scope_value.len = ctx->project.len;
        break;

    case SP_CACHE_SCOPE_DEPARTMENT:
        in.scope_value.data = (char *) ctx->department.data;
        in.scope_value.len = ctx->department.len;
        break;

    default: /* SP_CACHE_SCOPE_ORG */
        in.scope_value.data = "";
        break;
    }

    if (in.scope != SP_CACHE_SCOPE_ORG && in.scope_value.len == 0) {
        /*
         * no project (or department) to share with: the key's own
         * entries, not every unattributed request's of the organisation
         */
        in.scope = SP_CACHE_SCOPE_API_KEY;
        in.scope_value.data = (char *) ctx->key_id.data;
        in.scope_value.len = ctx->key_id.len;
    }

    in.provider.data = (char *) ctx->provider_name.data;
    in.provider.len = ctx->provider_name.len;
    in.endpoint.data = (char *) endpoint;
    in.endpoint.len = p - endpoint;
    in.body = (char *) ctx->body.data;
    in.body_len = ctx->body.len;

    n = sp_cache_key_scratch(ctx->body.len);

    scratch = ngx_palloc(r->pool, n);
    if (scratch == NULL) {
        return NGX_ERROR;
    }

    if (sp_cache_key(&in, scratch, n, ctx->cache_key, err, sizeof(err))
        != SP_OK)
    {
        /* not a body the cache can key (not JSON): not cached */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "spendpol cache: not keyed: %s", err);
        ngx_pfree(r->pool, scratch);
        return NGX_OK;
    }

    semantic = 0;

    if (config.mode == SP_CACHE_SEMANTIC
        && (ctx->endpoint->flags & SP_ENDPOINT_CHAT))
    {
        /* the semantic group's first part: the key without the prompt */
        in.flags = SP_CACHE_KEY_NO_PROMPT;

        semantic = sp_cache_key(&in, scratch, n, ctx->cache_group, err,
                                sizeof(err))
                   == SP_OK;
    }

    ngx_pfree(r->pool, scratch);

    purged_ms = ngx_http_spendpol_cache_purged_ms(r, ctx);

    /* one entry may take at most a quarter of the zone */
    max_entry = ngx_min((int64_t) config.max_entry_bytes,
                        (int64_t) smcf->cache_size / 4);

    ctx->cache_state = NGX_HTTP_SPENDPOL_CACHE_MISS;
    ctx->cache_ttl_ms = (int64_t) config.ttl_s * 1000;
    ctx->cache_max_entry = max_entry > 0 ? (size_t) max_entry : 0;
    ctx->cache_store = ctx->cache_max_entry > 0;

    now_ms = ngx_http_spendpol_cache_now_ms();
    ctx->cache_lookup_ms = now_ms;

    if (semantic) {
        /* kept for the semantic step, after the exact ones */
        ctx->cache_config = ngx_palloc(r->pool, sizeof(sp_cache_config_t));
        if (ctx->cache_config == NULL) {
            return NGX_ERROR;
        }

        *ctx->cache_config = config;
    }

    ngx_shmtx_lock(&smcf->cache_shpool->mutex);

    rc = ngx_http_spendpol_cache_fetch_locked(r, ctx, ctx->cache_key, now_ms,
                                              purged_ms);

    ngx_shmtx_unlock(&smcf->cache_shpool->mutex);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* a miss: the Redis tier, then the semantic cache, when there are */
    return ngx_http_spendpol_cache_next(r, ctx);
}


/*
 * After a miss so far, the next place to look: the Redis tier, then the
 * semantic cache (after its embedding call answered: the search). NGX_OK
 * when there is nowhere left (ctx->cache_state says hit or miss);
 * NGX_AGAIN when the request is to wait, at most ctx->cache_wait, for
 * an answer (the handler calls this again once it came or not).
 */
ngx_int_t
ngx_http_spendpol_cache_next(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_MISS) {
        return NGX_OK;
    }

    if (!ctx->cache_redis_tried) {
        ctx->cache_redis_tried = 1;

        if (ngx_http_spendpol_redis_lookup(r, ctx) == NGX_AGAIN) {
            smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
            ctx->cache_wait = smcf->cache_redis_timeout;
            return NGX_AGAIN;
        }

        if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_MISS) {
            return NGX_OK;
        }
    }

    if (ctx->cache_config == NULL) {
        return NGX_OK;
    }

    if (!ctx->cache_semantic_tried) {
        ctx->cache_semantic_tried = 1;

        if (ngx_http_spendpol_semantic_begin(r, ctx) == NGX_AGAIN) {
            ctx->cache_wait = ctx->cache_config->embed_timeout_ms;
            return NGX_AGAIN;
        }
    }

    if (ctx->cache_vector) {
        ngx_http_spendpol_semantic_search(r, ctx);
    }

    return NGX_OK;
}


/*
 * Under the zone's mutex: the entry stored under key, when it is still
 * good (not expired by its own time or the organisation's current TTL,
 * not purged), copied into the request as its hit. NGX_OK (a hit),
 * NGX_DECLINED, or NGX_ERROR.
 */
ngx_int_t
ngx_http_spendpol_cache_fetch_locked(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *key, int64_t now_ms,
    int64_t purged_ms)
{
    u_char                           *p;
    ngx_http_spendpol_cache_entry_t  *entry;
    ngx_http_spendpol_main_conf_t    *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    entry = ngx_http_spendpol_cache_find(smcf->cache_sh, key);

    if (entry == NULL) {
        return NGX_DECLINED;
    }

    if (entry->expires_ms <= now_ms
        || now_ms - entry->stored_ms >= ctx->cache_ttl_ms
        || entry->stored_ms <= purged_ms)
    {
        /* expired, by its own time or a shorter one set since, or purged */
        ngx_http_spendpol_cache_free(smcf, entry);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&entry->queue);
    ngx_queue_insert_head(&smcf->cache_sh->queue, &entry->queue);

    /* copied out: the entry may go as soon as the mutex is released */
    p = ngx_pnalloc(r->pool, entry->type_len + entry->body_len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, entry->data, entry->type_len + entry->body_len);

    ctx->cache_type.data = p;
    ctx->cache_type.len = entry->type_len;
    ctx->cache_body.data = p + entry->type_len;
    ctx->cache_body.len = entry->body_len;
    ctx->cache_saved_nano = entry->cost_nano;
    ctx->cache_age_s = (now_ms - entry->stored_ms) / 1000;
    ctx->cache_state = NGX_HTTP_SPENDPOL_CACHE_HIT;
    ctx->cache_store = 0;

    return NGX_OK;
}


/*
 * A hit goes out as the provider's answer would: through the response
 * filters (a stream's usage chunk taken out for a client that did not ask
 * for it, the cost headers or trailers added), status 200. Returns what
 * to finalize the request with.
 */
ngx_int_t
ngx_http_spendpol_cache_send(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    uint64_t   started;
    ngx_int_t  rc;

    /*
     * The filters count their own time in gateway_us, and the caller
     * counts the time up to its return: the send as a whole is taken out
     * here, so the filters' share is counted once and the socket writes
     * not at all.
     */
    started = ngx_http_spendpol_now_us();

    rc = ngx_http_spendpol_cache_send_answer(r, ctx);

    ctx->gateway_us -= ngx_http_spendpol_now_us() - started;

    /* as ngx_http_spendpol_send_error(): NGX_AGAIN is the lease wait's */
    return rc == NGX_AGAIN ? NGX_OK : rc;
}


static ngx_int_t
ngx_http_spendpol_cache_send_answer(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = ctx->cache_type;
    r->headers_out.content_type_len = ctx->cache_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = ctx->cache_body.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->cache_body.data;
    b->last = ctx->cache_body.data + ctx->cache_body.len;
    b->memory = ctx->cache_body.len ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * A stream to be stored is kept as it arrives, before the stream filter
 * looks at it, up to the entry limit; past it the stream is not stored.
 */
ngx_int_t
ngx_http_spendpol_cache_capture(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    u_char       *grown;
    size_t        size, need;
    ngx_chain_t  *cl;

    for (cl = in; cl && ctx->cache_store; cl = cl->next) {

        if (!ngx_buf_in_memory(cl->buf)) {
            continue;
        }

        size = cl->buf->last - cl->buf->pos;
        need = ctx->cache_captured + size;

        if (need > ctx->cache_max_entry) {
            ctx->cache_store = 0;

            if (ctx->cache_capture) {
                ngx_pfree(r->pool, ctx->cache_capture);
                ctx->cache_capture = NULL;
            }

            break;
        }

        if (need > ctx->cache_capture_size) {
            size = ngx_max(need, ngx_max(2 * ctx->cache_capture_size,
                                         NGX_HTTP_SPENDPOL_CACHE_CAPTURE));
            size = ngx_min(size, ctx->cache_max_entry);

            grown = ngx_pnalloc(r->pool, size);
            if (grown == NULL) {
                /* a live answer is never cut for the cache's sake */
                ctx->cache_store = 0;
                break;
            }

            if (ctx->cache_capture) {
                ngx_memcpy(grown, ctx->cache_capture, ctx->cache_captured);
                ngx_pfree(r->pool, ctx->cache_capture);
            }

            ctx->cache_capture = grown;
            ctx->cache_capture_size = size;
        }

        ngx_memcpy(ctx->cache_capture + ctx->cache_captured, cl->buf->pos,
                   cl->buf->last - cl->buf->pos);
        ctx->cache_captured = need;
    }

    return NGX_OK;
}


/*
 * Stores a complete answer, once its cost is known: only a 200 from the
 * provider that ended as it should (a JSON body parsed, a stream with its
 * terminal event) with usage the provider reported; never an error, a cut
 * stream or an estimate. A failure to store is only a later miss.
 */
void
ngx_http_spendpol_cache_store(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *body, size_t len)
{
    u_char                           *value, *p;
    int64_t                           now_ms;
    ngx_str_t                        *type;
    ngx_http_spendpol_main_conf_t    *smcf;

    if (!ctx->cache_store) {
        return;
    }

    ctx->cache_store = 0;

    if (!ctx->proxied
        || r->upstream == NULL
        || r->upstream->headers_in.status_n != NGX_HTTP_OK
        || ctx->client_gone
        || !ctx->response.done
        || !ctx->response.has_usage
        || ctx->usage_estimated
        || body == NULL
        || len > ctx->cache_max_entry)
    {
        return;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
    type = &r->headers_out.content_type;

    /*
     * An entry's time is its request's lookup: an answer still in flight
     * when a purge was made is older than the purge, and not stored.
     */
    if (ngx_http_spendpol_cache_purged_ms(r, ctx) >= ctx->cache_lookup_ms) {
        return;
    }

    now_ms = ngx_http_spendpol_cache_now_ms();

    if (ngx_http_spendpol_cache_insert(smcf, r->connection->log,
                                       ctx->cache_key, ctx->cache_lookup_ms,
                                       ctx->cache_lookup_ms
                                       + ctx->cache_ttl_ms,
                                       ctx->cost_nano, type, body, len)
        != NGX_OK)
    {
        return;
    }

    if (ctx->cache_vector) {
        ngx_http_spendpol_semantic_store(r, ctx, ctx->cache_lookup_ms);
    }

    if (!ngx_http_spendpol_redis_ready(smcf, r->connection->log)) {
        return;
    }

    value = ngx_pnalloc(r->pool, NGX_HTTP_SPENDPOL_CACHE_VALUE + type->len
                                 + len);
    if (value == NULL) {
        return;
    }

    p = ngx_http_spendpol_cache_put64(value, NGX_HTTP_SPENDPOL_CACHE_MAGIC);
    p = ngx_http_spendpol_cache_put64(p, (uint64_t) ctx->cache_lookup_ms);
    p = ngx_http_spendpol_cache_put64(p, (uint64_t) ctx->cost_nano);
    p = ngx_http_spendpol_cache_put64(p, ((uint64_t) type->len << 32) | len);
    p = ngx_cpymem(p, type->data, type->len);
    p = ngx_cpymem(p, body, len);

    ngx_http_spendpol_redis_store(r, ctx, ctx->cache_lookup_ms
                                          + ctx->cache_ttl_ms - now_ms,
                                  value, p - value);
}


/*
 * The Redis tier's answer to a lookup (the value as the store above made
 * it): a hit when it is whole, within the request's limits, not expired
 * by the organisation's TTL and newer than its purges; it is kept in the
 * zone too, under its own time. Anything else stays a miss.
 */
void
ngx_http_spendpol_cache_found(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *value, size_t len)
{
    u_char                         *p;
    int64_t                         now_ms, stored_ms, cost, purged_ms;
    uint64_t                        lens;
    size_t                          type_len, body_len;
    ngx_str_t                       type;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (len < NGX_HTTP_SPENDPOL_CACHE_VALUE
        || ngx_http_spendpol_cache_get64(value)
           != NGX_HTTP_SPENDPOL_CACHE_MAGIC)
    {
        return;
    }

    stored_ms = (int64_t) ngx_http_spendpol_cache_get64(value + 8);
    cost = (int64_t) ngx_http_spendpol_cache_get64(value + 16);
    lens = ngx_http_spendpol_cache_get64(value + 24);
    type_len = (size_t) (lens >> 32);
    body_len = (size_t) (lens & 0xffffffff);

    if (type_len > NGX_HTTP_SPENDPOL_CACHE_TYPE_MAX
        || body_len > ctx->cache_max_entry
        || len != NGX_HTTP_SPENDPOL_CACHE_VALUE + type_len + body_len
        || cost < 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "spendpol: an entry of the cache's Redis tier is "
                      "not one this version reads, or is larger than this "
                      "organisation's max_entry_bytes; a miss");
        return;
    }

    purged_ms = ngx_http_spendpol_cache_purged_ms(r, ctx);
    now_ms = ngx_http_spendpol_cache_now_ms();

    if (stored_ms <= purged_ms
        || stored_ms > now_ms + 60000
        || now_ms - stored_ms >= ctx->cache_ttl_ms)
    {
        return;
    }

    /* a header value: whoever can write to Redis must not add headers */
    for (p = value + NGX_HTTP_SPENDPOL_CACHE_VALUE;
         p < value + NGX_HTTP_SPENDPOL_CACHE_VALUE + type_len;
         p++)
    {
        if (*p < 0x20 || *p == 0x7f) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "spendpol: an entry of the cache's Redis tier has "
                          "a control character in its content type; a miss");
            return;
        }
    }

    p = ngx_pnalloc(r->pool, type_len + body_len);
    if (p == NULL) {
        return;
    }

    ngx_memcpy(p, value + NGX_HTTP_SPENDPOL_CACHE_VALUE, type_len + body_len);

    ctx->cache_type.data = p;
    ctx->cache_type.len = type_len;
    ctx->cache_body.data = p + type_len;
    ctx->cache_body.len = body_len;
    ctx->cache_saved_nano = cost;
    ctx->cache_age_s = ngx_max(now_ms - stored_ms, 0) / 1000;
    ctx->cache_state = NGX_HTTP_SPENDPOL_CACHE_HIT;
    ctx->cache_store = 0;

    type = ctx->cache_type;

    (void) ngx_http_spendpol_cache_insert(smcf, r->connection->log,
                                          ctx->cache_key, stored_ms,
                                          stored_ms + ctx->cache_ttl_ms,
                                          cost, &type, ctx->cache_body.data,
                                          body_len);
}


/*
 * An entry into the zone (one with the same key replaced), room made by
 * expiring and then evicting from the LRU end. NGX_OK, or NGX_DECLINED
 * when no room was found (only a later miss).
 */
static ngx_int_t
ngx_http_spendpol_cache_insert(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log, u_char *key, int64_t stored_ms, int64_t expires_ms,
    int64_t cost_nano, ngx_str_t *type, u_char *body, size_t len)
{
    size_t                            size;
    ngx_uint_t                        n;
    ngx_queue_t                      *q;
    ngx_http_spendpol_cache_entry_t  *entry;

    size = offsetof(ngx_http_spendpol_cache_entry_t, data) + type->len + len;

    ngx_shmtx_lock(&smcf->cache_shpool->mutex);

    /* an identical request that missed at the same time stored first */
    entry = ngx_http_spendpol_cache_find(smcf->cache_sh, key);

    if (entry) {
        ngx_http_spendpol_cache_free(smcf, entry);
    }

    ngx_http_spendpol_cache_expire(smcf, ngx_http_spendpol_cache_now_ms());

    entry = ngx_slab_alloc_locked(smcf->cache_shpool, size);

    for (n = 0; entry == NULL && n < NGX_HTTP_SPENDPOL_CACHE_EVICT; n++) {
        q = ngx_queue_last(&smcf->cache_sh->queue);

        if (q == ngx_queue_sentinel(&smcf->cache_sh->queue)) {
            break;
        }

        ngx_http_spendpol_cache_free(smcf,
                      ngx_queue_data(q, ngx_http_spendpol_cache_entry_t,
                                     queue));
        smcf->cache_sh->evictions++;

        entry = ngx_slab_alloc_locked(smcf->cache_shpool, size);
    }

    if (entry == NULL) {
        ngx_shmtx_unlock(&smcf->cache_shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "spendpol: an answer of %uz bytes found no room in "
                      "the cache zone (spendpol_cache_size %uz); not stored",
                      len, smcf->cache_size);
        return NGX_DECLINED;
    }

    ngx_memcpy(entry->key, key, SP_CACHE_KEY_LEN);
    entry->node.key = ngx_hash_key(key, sizeof(ngx_rbtree_key_t));
    entry->stored_ms = stored_ms;
    entry->expires_ms = expires_ms;
    entry->cost_nano = cost_nano;
    entry->body_len = len;
    entry->type_len = type->len;
    ngx_memcpy(entry->data, type->data, type->len);
    ngx_memcpy(entry->data + type->len, body, len);

    ngx_rbtree_insert(&smcf->cache_sh->rbtree, &entry->node);
    ngx_queue_insert_head(&smcf->cache_sh->queue, &entry->queue);

    smcf->cache_sh->entries++;
    smcf->cache_sh->bytes += len;

    ngx_shmtx_unlock(&smcf->cache_shpool->mutex);

    return NGX_OK;
}


static u_char *
ngx_http_spendpol_cache_put64(u_char *p, uint64_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < 8; i++) {
        p[i] = (u_char) (v >> (56 - 8 * i));
    }

    return p + 8;
}


static uint64_t
ngx_http_spendpol_cache_get64(u_char *p)
{
    uint64_t    v;
    ngx_uint_t  i;

    v = 0;

    for (i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }

    return v;
}


/* X-Spendpol-Cache on every response, X-Spendpol-Cache-Age on a hit */
ngx_int_t
ngx_http_spendpol_cache_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char      age[NGX_INT64_LEN];
    ngx_str_t  *state;

    state = &ngx_http_spendpol_cache_states[ctx->cache_state];

    if (ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                     "X-Spendpol-Cache", state->data,
                                     state->len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT) {
        return NGX_OK;
    }

    if (ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                     "X-Spendpol-Cache-Age", age,
                                     ngx_sprintf(age, "%L", ctx->cache_age_s)
                                     - age)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->cache_similarity == 0) {
        return NGX_OK;
    }

    /* a semantic hit: how close its prompt was, 4 decimals */
    return ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                        "X-Spendpol-Cache-Similarity", age,
                                        ngx_sprintf(age, "%.4f",
                                                    ctx->cache_similarity)
                                        - age);
}


/* the journal's and the header's word for the request's state */
ngx_str_t *
ngx_http_spendpol_cache_state_name(ngx_http_spendpol_ctx_t *ctx)
{
    return &ngx_http_spendpol_cache_states[ctx->cache_state];
}


/* each worker's snapshot timer: the zone's figures for GET /cache/stats */
void
ngx_http_spendpol_cache_report(ngx_http_spendpol_main_conf_t *smcf)
{
    sp_ask_header_t               *header;
    ngx_http_spendpol_cache_sh_t  *sh;

    if (smcf->ask == NULL || smcf->cache_sh == NULL) {
        return;
    }

    header = smcf->ask;
    sh = smcf->cache_sh;

    __atomic_store_n(&header->cache_entries,
                     __atomic_load_n(&sh->entries, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&header->cache_bytes,
                     __atomic_load_n(&sh->bytes, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&header->cache_evictions,
                     __atomic_load_n(&sh->evictions, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}


/* 1 when the request says "X-Spendpol-Cache: skip" */
static ngx_uint_t
ngx_http_spendpol_cache_skip_asked(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_http_spendpol_request_header(r, "X-Spendpol-Cache",
                                         sizeof("X-Spendpol-Cache") - 1);

    return h != NULL
           && h->value.len == sizeof("skip") - 1
           && ngx_strncasecmp(h->value.data, (u_char *) "skip",
                              sizeof("skip") - 1) == 0;
}


/* under the cache mutex */
static ngx_http_spendpol_cache_entry_t *
ngx_http_spendpol_cache_find(ngx_http_spendpol_cache_sh_t *sh, u_char *key)
{
    ngx_int_t                         rc;
    ngx_rbtree_key_t                  hash;
    ngx_rbtree_node_t                *node, *sentinel;
    ngx_http_spendpol_cache_entry_t  *entry;

    hash = ngx_hash_key(key, sizeof(ngx_rbtree_key_t));

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        entry = (ngx_http_spendpol_cache_entry_t *) node;

        rc = ngx_memcmp(key, entry->key, SP_CACHE_KEY_LEN);

        if (rc == 0) {
            return entry;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* under the cache mutex */
static void
ngx_http_spendpol_cache_free(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_cache_entry_t *entry)
{
    ngx_queue_remove(&entry->queue);
    ngx_rbtree_delete(&smcf->cache_sh->rbtree, &entry->node);

    smcf->cache_sh->entries--;
    smcf->cache_sh->bytes -= entry->body_len;

    ngx_slab_free_locked(smcf->cache_shpool, entry);
}


/* under the cache mutex: expired entries from the LRU end, a few */
static void
ngx_http_spendpol_cache_expire(ngx_http_spendpol_main_conf_t *smcf,
    int64_t now_ms)
{
    ngx_uint_t                        n;
    ngx_queue_t                      *q;
    ngx_http_spendpol_cache_entry_t  *entry;

    for (n = 0; n < NGX_HTTP_SPENDPOL_CACHE_EXPIRE; n++) {
        q = ngx_queue_last(&smcf->cache_sh->queue);

        if (q == ngx_queue_sentinel(&smcf->cache_sh->queue)) {
            return;
        }

        entry = ngx_queue_data(q, ngx_http_spendpol_cache_entry_t, queue);

        if (entry->expires_ms > now_ms) {
            return;
        }

        ngx_http_spendpol_cache_free(smcf, entry);
    }
}


/*
 * The time of the last purge (DELETE /cache) covering the request's
 * organisation, provider and model: entries stored at or before it are
 * not served. Without a snapshot, everything counts as purged.
 */
int64_t
ngx_http_spendpol_cache_purged_ms(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    sp_str_t                        org, provider;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot_map == NULL) {
        return INT64_MAX;
    }

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    provider.data = (char *) ctx->provider_name.data;
    provider.len = ctx->provider_name.len;

    return sp_snapshot_cache_purged_ms(&smcf->snapshot, org, provider,
                                       sp_str_from(ctx->request->model));
}


int64_t
ngx_http_spendpol_cache_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


ngx_int_t
ngx_http_spendpol_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_spendpol_main_conf_t  *osmcf = data;

    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = shm_zone->data;

    if (osmcf) {
        /* a reload keeps what is stored */
        smcf->cache_sh = osmcf->cache_sh;
        smcf->cache_shpool = osmcf->cache_shpool;
        return NGX_OK;
    }

    smcf->cache_shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        smcf->cache_sh = smcf->cache_shpool->data;
        return NGX_OK;
    }

    /* a full zone evicts; it is not an error worth a line per request */
    smcf->cache_shpool->log_nomem = 0;

    smcf->cache_sh = ngx_slab_alloc(smcf->cache_shpool,
                                    sizeof(ngx_http_spendpol_cache_sh_t));
    if (smcf->cache_sh == NULL) {
        return NGX_ERROR;
    }

    smcf->cache_shpool->data = smcf->cache_sh;

    ngx_rbtree_init(&smcf->cache_sh->rbtree, &smcf->cache_sh->sentinel,
                    ngx_http_spendpol_cache_rbtree_insert_value);
    ngx_queue_init(&smcf->cache_sh->queue);
    ngx_http_spendpol_semantic_init_zone(smcf->cache_sh);

    smcf->cache_shpool->log_ctx = (u_char *) " in spendpol cache zone";

    return NGX_OK;
}


/* ngx_http_limit_req_module.c's order: the hash, then the whole key */
static void
ngx_http_spendpol_cache_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t                **p;
    ngx_http_spendpol_cache_entry_t   *e, *et;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            e = (ngx_http_spendpol_cache_entry_t *) node;
            et = (ngx_http_spendpol_cache_entry_t *) temp;

            p = (ngx_memcmp(e->key, et->key, SP_CACHE_KEY_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
