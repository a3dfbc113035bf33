
/*
 * Copyright (C) Spendpol
 *
 * Fallback: a routed request's next target when an attempt fails before
 * any byte of its answer was passed on (the balancer,
 * ngx_http_spendpol_upstream.c, asks on a failed attempt). Every
 * fallback's address is resolved and judged before the first attempt;
 * the proxy's retry settings are the request's own copy; the request a
 * fallback attempt sends is written here (the proxy module writes one
 * request, for the first); a target that keeps failing cools down for
 * every worker: slots in the shared zone, judged by the clock at each
 * request, not swept.
 */


#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_COOLDOWN_PROBE  8


static void ngx_http_spendpol_fallback_log(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status);
static void ngx_http_spendpol_cooldown_record(
    ngx_http_spendpol_main_conf_t *smcf, ngx_http_spendpol_ctx_t *ctx,
    uint64_t hash, ngx_uint_t failed);
static ngx_uint_t ngx_http_spendpol_cooldown_better(
    ngx_http_spendpol_cooldown_t *a, ngx_http_spendpol_cooldown_t *b,
    int64_t now_ms);
static ngx_http_spendpol_cooldown_t *ngx_http_spendpol_cooldown_slot(
    ngx_http_spendpol_shctx_t *sh, uint64_t hash, ngx_uint_t create,
    int64_t now_ms);


/*
 * Before the proxy runs: every fallback's address, resolved now (a
 * worker cannot wait for DNS in the middle of a fallback). rc is the
 * outcome of the last resolution; NGX_AGAIN: one is in flight, and
 * ngx_http_spendpol_forward() is called again. A fallback whose address
 * is unknown or not allowed is left out. NGX_OK: the first target is
 * current again.
 */
ngx_int_t
ngx_http_spendpol_fallback_resolve(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc)
{
    ngx_uint_t                   i;
    ngx_http_spendpol_target_t  *t;

    if (ctx->route_resolving) {
        t = &ctx->targets[ctx->route_resolving - 1];

        if (rc == NGX_OK && ctx->upstream_naddrs) {
            ngx_http_spendpol_route_save(ctx, t);
            t->resolved = 1;

        } else {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: fallback %V/%V left out: its address "
                          "is unknown or not allowed",
                          &t->provider_name, &t->model);
            t->dropped = 1;
        }

        ctx->route_resolving = 0;

    } else {
        if (rc != NGX_OK) {
            return rc;
        }

        t = &ctx->targets[ctx->target];
        ngx_http_spendpol_route_save(ctx, t);
        t->resolved = 1;
    }

    for (i = 0; i < ctx->ntargets; i++) {
        t = &ctx->targets[i];

        if (t->resolved || t->dropped) {
            continue;
        }

        ngx_http_spendpol_route_load(ctx, t);
        ctx->route_resolving = i + 1;

        rc = ngx_http_spendpol_upstream_resolve(r, ctx);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_OK && ctx->upstream_naddrs) {
            ngx_http_spendpol_route_save(ctx, t);
            t->resolved = 1;

        } else {
            t->dropped = 1;
        }

        ctx->route_resolving = 0;
    }

    ngx_http_spendpol_route_load(ctx, &ctx->targets[ctx->target]);

    return NGX_OK;
}


/*
 * The proxy's settings for this request, when it may fall back: a copy
 * of the location's, retrying on 429, 5xx, errors and timeouts (even a
 * POST: the provider did not answer it), with the rule's attempt
 * timeout until the answer's headers arrive. Other requests keep the
 * location's settings: nginx's own, which never retry a POST.
 */
ngx_int_t
ngx_http_spendpol_fallback_upstream(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_upstream_t *u)
{
    ngx_uint_t                 i, left;
    ngx_http_upstream_conf_t  *conf;

    if (ctx->targets == NULL
        || (ctx->max_attempts < 2 && ctx->attempt_timeout == 0))
    {
        return NGX_OK;
    }

    conf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
    if (conf == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(conf, u->conf, sizeof(ngx_http_upstream_conf_t));

    conf->next_upstream |= NGX_HTTP_UPSTREAM_FT_ERROR
                           | NGX_HTTP_UPSTREAM_FT_TIMEOUT
                           | NGX_HTTP_UPSTREAM_FT_HTTP_500
                           | NGX_HTTP_UPSTREAM_FT_HTTP_502
                           | NGX_HTTP_UPSTREAM_FT_HTTP_503
                           | NGX_HTTP_UPSTREAM_FT_HTTP_504
                           | NGX_HTTP_UPSTREAM_FT_HTTP_429
                           | NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT;
    conf->next_upstream_tries = 0;
    conf->next_upstream_timeout = 0;

    ctx->read_timeout = conf->read_timeout;

    if (ctx->attempt_timeout) {
        conf->read_timeout = ctx->attempt_timeout;
        conf->send_timeout = ngx_min(conf->send_timeout, ctx->attempt_timeout);
        conf->connect_timeout = ngx_min(conf->connect_timeout,
                                        ctx->attempt_timeout);
    }

    ctx->upstream_conf = conf;
    u->conf = conf;

    left = 0;

    for (i = ctx->target; i < ctx->ntargets; i++) {
        if (!ctx->targets[i].dropped) {
            left++;
        }
    }

    /* the last try passes its answer on, whatever it is */
    u->peer.tries = ngx_max(ngx_min(ctx->max_attempts, left), 1);

    return NGX_OK;
}


/*
 * An attempt failed before its answer was passed on (the balancer's
 * free with NGX_PEER_FAILED): counted against the target's cooldown,
 * logged, and the next usable target made current. Returns how many
 * more attempts the request may make (0: the answer, or nginx's error,
 * goes to the client).
 */
ngx_uint_t
ngx_http_spendpol_fallback_failed(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status)
{
    int64_t                         now;
    ngx_uint_t                      j, left;
    ngx_time_t                     *tp;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    ngx_http_spendpol_cooldown_record(smcf, ctx,
                                      ctx->targets[ctx->target].cooldown_hash,
                                      1);
    ngx_http_spendpol_fallback_log(r, ctx, status);

    if (ctx->attempts >= ctx->max_attempts) {
        return 0;
    }

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000 + tp->msec;

    for (j = ctx->target + 1; j < ctx->ntargets; j++) {
        if (ctx->targets[j].dropped) {
            continue;
        }

        if (j + 1 < ctx->ntargets
            && ngx_http_spendpol_fallback_cooling(smcf,
                                           ctx->targets[j].cooldown_hash,
                                           now))
        {
            ngx_http_spendpol_fallback_note(r, ctx, &ctx->targets[j],
                                            "cooling");
            continue;
        }

        break;
    }

    if (j >= ctx->ntargets) {
        return 0;
    }

    /*
     * Made current when the balancer is asked for the next connection:
     * nginx may still decide not to retry (the client went away, a
     * failure its settings do not retry), and then the request stays
     * the failed target's.
     */
    ctx->route_next = j;
    ctx->route_rebuild = 1;

    left = 0;

    for ( /* void */ ; j < ctx->ntargets; j++) {
        if (!ctx->targets[j].dropped) {
            left++;
        }
    }

    return ngx_min(left, ctx->max_attempts - ctx->attempts);
}


/*
 * The answer's headers arrived and go to the client: the attempt
 * timeout ends (the stream may take its time), and the target's
 * cooldown learns how it went.
 */
void
ngx_http_spendpol_fallback_answered(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status)
{
    ngx_uint_t                      failed;
    ngx_http_spendpol_main_conf_t  *smcf;

    if (ctx->targets == NULL || ctx->route_answered) {
        return;
    }

    ctx->route_answered = 1;

    if (ctx->upstream_conf && r->upstream
        && r->upstream->conf == ctx->upstream_conf)
    {
        ctx->upstream_conf->read_timeout = ctx->read_timeout;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    failed = status == NGX_HTTP_TOO_MANY_REQUESTS || status >= 500;

    ngx_http_spendpol_cooldown_record(smcf, ctx,
                                      ctx->targets[ctx->target].cooldown_hash,
                                      failed);

    if (failed && ctx->attempts > 1) {
        ngx_http_spendpol_fallback_log(r, ctx, status);
    }
}


/* appends "provider/model:what" to the request's attempt log */
void
ngx_http_spendpol_fallback_note(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_target_t *t,
    const char *what)
{
    u_char  *p, *last;

    if (ctx->attempt_log == NULL) {
        ctx->attempt_log = ngx_pnalloc(r->pool, SP_JOURNAL_NOTE_LEN);
        if (ctx->attempt_log == NULL) {
            return;
        }

        ctx->attempt_log_len = 0;
    }

    p = ctx->attempt_log + ctx->attempt_log_len;
    last = ctx->attempt_log + SP_JOURNAL_NOTE_LEN - 1;

    if (ctx->attempt_log_len && p < last) {
        *p++ = ',';
    }

    p = ngx_slprintf(p, last, "%V/%V:%s", &t->provider_name, &t->model,
                     what);

    ctx->attempt_log_len = p - ctx->attempt_log;
}


static void
ngx_http_spendpol_fallback_log(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status)
{
    u_char  buf[NGX_INT_T_LEN + 1];

    ngx_sprintf(buf, "%ui%Z", status);

    ngx_http_spendpol_fallback_note(r, ctx, &ctx->targets[ctx->target],
                                    (char *) buf);
}


/*
 * The next target made current, and the request a fallback attempt sends
 * it, in place of the proxy module's (written once, for the first): the
 * request line, Host, the target's credential in its provider's header,
 * the body.
 */
ngx_int_t
ngx_http_spendpol_fallback_request(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char               *p, *path, *last;
    size_t                len, scheme;
    ngx_buf_t            *b;
    ngx_chain_t          *cl;
    ngx_http_upstream_t  *u;
    const sp_provider_t  *provider;

    ngx_http_spendpol_route_save(ctx, &ctx->targets[ctx->target]);

    ctx->target = ctx->route_next;
    ngx_http_spendpol_route_load(ctx, &ctx->targets[ctx->target]);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "spendpol: falling back to %V/%V",
                  &ctx->targets[ctx->target].provider_name,
                  &ctx->targets[ctx->target].model);

    u = r->upstream;

    scheme = (ctx->upstream_url.len > 5
              && (ctx->upstream_url.data[4] | 0x20) == 's')
             ? sizeof("https://") - 1 : sizeof("http://") - 1;

    path = ctx->upstream_url.data + scheme
           + sizeof(NGX_HTTP_SPENDPOL_UPSTREAM) - 1;
    last = ctx->upstream_url.data + ctx->upstream_url.len;

    if (path > last) {
        return NGX_ERROR;
    }

    provider = sp_provider(ctx->provider);

    len = sizeof("POST  HTTP/1.1" CRLF) - 1 + (last - path)
          + sizeof("Host: " CRLF) - 1 + ctx->upstream_host.len
          + sizeof("Content-Type: application/json" CRLF) - 1
          + sizeof("Content-Length: " CRLF) - 1 + NGX_SIZE_T_LEN
          + ngx_strlen(provider->auth_header) + sizeof(": " CRLF) - 1
          + ngx_max(ctx->upstream_authorization.len, ctx->credential.len)
          + sizeof("anthropic-version: " CRLF) - 1
          + ctx->anthropic_version.len
          + sizeof("X-Spendpol-Trace-Id: " CRLF) - 1 + SP_ID_LEN
          + sizeof("X-Spendpol-Span-Id: " CRLF) - 1 + sizeof(ctx->span_id)
          + sizeof(CRLF) - 1 + ctx->body.len;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->last, "POST ", 5);
    p = ngx_cpymem(p, path, last - path);
    p = ngx_cpymem(p, " HTTP/1.1" CRLF "Host: ",
                   sizeof(" HTTP/1.1" CRLF "Host: ") - 1);
    p = ngx_cpymem(p, ctx->upstream_host.data, ctx->upstream_host.len);
    p = ngx_sprintf(p, CRLF "Content-Type: application/json" CRLF
                    "Content-Length: %uz" CRLF, ctx->body.len);

    /* the header the provider reads its key from (sp_provider.h) */
    p = ngx_cpymem(p, provider->auth_header,
                   ngx_strlen(provider->auth_header));
    *p++ = ':';
    *p++ = ' ';

    if (ctx->upstream_authorization.len) {
        p = ngx_cpymem(p, ctx->upstream_authorization.data,
                       ctx->upstream_authorization.len);

    } else {
        p = ngx_cpymem(p, ctx->credential.data, ctx->credential.len);
    }

    *p++ = CR;
    *p++ = LF;

    if (ctx->anthropic_version.len) {
        p = ngx_sprintf(p, "anthropic-version: %V" CRLF,
                        &ctx->anthropic_version);
    }

    p = ngx_sprintf(p, "X-Spendpol-Trace-Id: %s" CRLF
                    "X-Spendpol-Span-Id: %s" CRLF CRLF,
                    ctx->trace_id, ctx->span_id);

    p = ngx_cpymem(p, ctx->body.data, ctx->body.len);

    b->last = p;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    u->request_bufs = cl;
    u->ssl = ctx->targets[ctx->target].ssl;

    return NGX_OK;
}


/* ---- cooldowns: slots in the shared zone, under its mutex ------------ */

/* 1 when the target of hash is cooling down */
ngx_uint_t
ngx_http_spendpol_fallback_cooling(ngx_http_spendpol_main_conf_t *smcf,
    uint64_t hash, int64_t now_ms)
{
    ngx_uint_t                     cooling;
    ngx_http_spendpol_cooldown_t  *slot;

    if (smcf->sh == NULL) {
        return 0;
    }

    ngx_shmtx_lock(&smcf->shpool->mutex);

    slot = ngx_http_spendpol_cooldown_slot(smcf->sh, hash, 0, now_ms);
    cooling = slot != NULL && slot->until_ms > now_ms;

    ngx_shmtx_unlock(&smcf->shpool->mutex);

    return cooling;
}


/*
 * A failure in a row more, or a success: cooldown_failures failures in a
 * row take the target out for cooldown_ms (and start the count again:
 * after its cooldown it has as many tries as before).
 */
static void
ngx_http_spendpol_cooldown_record(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_ctx_t *ctx, uint64_t hash, ngx_uint_t failed)
{
    int64_t                        now;
    ngx_time_t                    *tp;
    ngx_http_spendpol_cooldown_t  *slot;

    if (smcf->sh == NULL) {
        return;
    }

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000 + tp->msec;

    ngx_shmtx_lock(&smcf->shpool->mutex);

    slot = ngx_http_spendpol_cooldown_slot(smcf->sh, hash, failed, now);

    if (slot) {
        slot->used_ms = now;

        if (!failed) {
            slot->failures = 0;

        } else if (++slot->failures >= ctx->cooldown_failures) {
            slot->failures = 0;
            slot->until_ms = now + ctx->cooldown_ms;
        }
    }

    ngx_shmtx_unlock(&smcf->shpool->mutex);
}


/* 1 when a is a better slot to give up than b */
static ngx_uint_t
ngx_http_spendpol_cooldown_better(ngx_http_spendpol_cooldown_t *a,
    ngx_http_spendpol_cooldown_t *b, int64_t now_ms)
{
    ngx_uint_t  a_cooling, b_cooling;

    if (b->hash == 0) {
        return 0;
    }

    if (a->hash == 0) {
        return 1;
    }

    a_cooling = a->until_ms > now_ms;
    b_cooling = b->until_ms > now_ms;

    if (a_cooling != b_cooling) {
        return !a_cooling;
    }

    return a_cooling ? a->until_ms < b->until_ms : a->used_ms < b->used_ms;
}


/* the slot of hash; with create, made (in the stalest of its probe) */
static ngx_http_spendpol_cooldown_t *
ngx_http_spendpol_cooldown_slot(ngx_http_spendpol_shctx_t *sh, uint64_t hash,
    ngx_uint_t create, int64_t now_ms)
{
    ngx_uint_t                     i, n;
    ngx_http_spendpol_cooldown_t  *slot, *stalest;

    stalest = NULL;

    for (i = 0; i < NGX_HTTP_SPENDPOL_COOLDOWN_PROBE; i++) {
        n = (hash + i) % NGX_HTTP_SPENDPOL_COOLDOWNS;
        slot = &sh->cooldowns[n];

        if (slot->hash == hash) {
            return slot;
        }

        /*
         * Room for a new one: a free slot, else the least recently used
         * that is not cooling, else the one whose cooldown ends first.
         */
        if (stalest == NULL
            || ngx_http_spendpol_cooldown_better(slot, stalest, now_ms))
        {
            stalest = slot;
        }
    }

    if (!create) {
        return NULL;
    }

    ngx_memzero(stalest, sizeof(ngx_http_spendpol_cooldown_t));
    stalest->hash = hash;

    return stalest;
}
