
/*
 * Copyright (C) Spendpol
 *
 * Requests and tokens per minute, per key, agent and organisation, in
 * the shared zone (one window a minute, aligned to the clock). Tokens are
 * held at admission (the prompt estimate, media, and max_tokens for each
 * choice asked for: ctx->hold_tokens) and corrected
 * to the actual usage when the request ends. Other nodes' counts of the
 * same window come from controld through the spend file (sp_rate_find():
 * their journals, summed in Redis), so a limit holds across nodes. A
 * refusal is 429 with Retry-After and the x-ratelimit-* headers OpenAI
 * sends, which every SDK understands and retries after. A cache hit
 * counts as a request but uses no tokens: a token limit does not refuse
 * it.
 */


#include "ngx_http_spendpol_module.h"


typedef struct {
    uint32_t  rpm;
    uint32_t  tpm;
    uint64_t  hash;          /* sp_rate_hash() */
    int64_t   requests;      /* other nodes' counts */
    int64_t   tokens;
} ngx_http_spendpol_limit_t;


static ngx_int_t ngx_http_spendpol_ratelimit_header(ngx_http_request_t *r,
    const char *name, const char *fmt, int64_t value);
static ngx_int_t ngx_http_spendpol_ratelimit_headers(ngx_http_request_t *r,
    const char *const *names, uint32_t limit, int64_t used,
    int64_t seconds);


/* OpenAI's names: limit, remaining and reset, for requests and tokens */
static const char *const  ngx_http_spendpol_rpm_headers[] = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests"
};

static const char *const  ngx_http_spendpol_tpm_headers[] = {
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens"
};


static ngx_uint_t
ngx_http_spendpol_limit_add(ngx_http_spendpol_limit_t *limits, ngx_uint_t n,
    uint32_t rpm, uint32_t tpm, const char *kind, ngx_str_t *id)
{
    sp_str_t  s;

    if ((rpm == 0 && tpm == 0) || id->len == 0) {
        return n;
    }

    s.data = (char *) id->data;
    s.len = id->len;

    limits[n].rpm = rpm;
    limits[n].tpm = tpm;
    limits[n].hash = sp_rate_hash(kind, s);
    limits[n].requests = 0;
    limits[n].tokens = 0;

    return n + 1;
}


/* what the other nodes counted in this window, from controld */
static void
ngx_http_spendpol_limit_remote(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_limit_t *limit, int64_t start_ms)
{
    const sp_rate_slot_t  *slot;

    if (smcf->spend_map == NULL) {
        return;
    }

    slot = sp_rate_find(&smcf->spend, limit->hash, start_ms);

    if (slot) {
        limit->requests = __atomic_load_n(&slot->requests, __ATOMIC_ACQUIRE);
        limit->tokens = __atomic_load_n(&slot->tokens, __ATOMIC_ACQUIRE);

        if (limit->requests < 0) {
            limit->requests = 0;
        }

        if (limit->tokens < 0) {
            limit->tokens = 0;
        }
    }
}


/*
 * NGX_OK: admitted (requests counted, tokens held); NGX_DECLINED: refused,
 * the reason in ctx->rate_* (ctx->rate_refused clear: the zone had no room
 * for a window, nothing counted; ngx_http_spendpol_ratelimit_refuse()
 * answers either); NGX_ERROR.
 */
ngx_int_t
ngx_http_spendpol_ratelimit_admit(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    int64_t                         now_ms, start_ms, tokens, requests;
    int64_t                         used;
    sp_str_t                        org;
    ngx_uint_t                      i, n;
    ngx_time_t                     *tp;
    const sp_snapshot_key_t        *key;
    const sp_snapshot_org_t        *settings;
    ngx_http_spendpol_limit_t       limits[NGX_HTTP_SPENDPOL_LIMITS];
    ngx_http_spendpol_window_t     *window[NGX_HTTP_SPENDPOL_LIMITS];
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->sh == NULL || smcf->snapshot_map == NULL) {
        return NGX_OK;
    }

    n = 0;

    key = sp_snapshot_find_key(&smcf->snapshot, ctx->key_hash);

    if (key) {
        n = ngx_http_spendpol_limit_add(limits, n, key->rpm_limit,
                                        key->tpm_limit, "key", &ctx->key_id);
        n = ngx_http_spendpol_limit_add(limits, n, key->agent_rpm_limit,
                                        key->agent_tpm_limit, "agent",
                                        &ctx->agent_id);
    }

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    settings = sp_snapshot_find_org(&smcf->snapshot, org);

    if (settings) {
        n = ngx_http_spendpol_limit_add(limits, n, settings->rpm_limit,
                                        settings->tpm_limit, "org",
                                        &ctx->org_id);
    }

    if (n == 0) {
        return NGX_OK;
    }

    tp = ngx_timeofday();
    now_ms = (int64_t) tp->sec * 1000 + tp->msec;
    start_ms = now_ms - now_ms % NGX_HTTP_SPENDPOL_WINDOW_MS;

    for (i = 0; i < n; i++) {
        ngx_http_spendpol_limit_remote(smcf, &limits[i], start_ms);
    }

    tokens = ctx->hold_tokens;

    if (ngx_http_spendpol_hold(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&smcf->shpool->mutex);

    /* the windows this admission finds cannot expire while it runs */
    smcf->sh->admissions++;

    for (i = 0; i < n; i++) {
        window[i] = ngx_http_spendpol_zone_count(smcf, &smcf->sh->windows,
                                        limits[i].hash, start_ms,
                                        sizeof(ngx_http_spendpol_window_t));

        if (window[i] == NULL) {
            ngx_shmtx_unlock(&smcf->shpool->mutex);
            return NGX_DECLINED;
        }

        requests = window[i]->requests + limits[i].requests;
        used = window[i]->tokens + limits[i].tokens;

        if ((limits[i].rpm && requests + 1 > limits[i].rpm)
            || (limits[i].tpm
                && ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT
                && used + tokens > limits[i].tpm))
        {
            ctx->rate_refused = 1;
            ctx->rate_rpm = limits[i].rpm;
            ctx->rate_tpm = limits[i].tpm;
            ctx->rate_requests = requests;
            ctx->rate_tokens = used;
            ctx->rate_reset_ms = start_ms + NGX_HTTP_SPENDPOL_WINDOW_MS
                                 - now_ms;
            break;
        }
    }

    if (!ctx->rate_refused) {
        for (i = 0; i < n; i++) {
            window[i]->requests++;
            window[i]->tokens += tokens;
            window[i]->holders++;
            ctx->rate_windows[i] = window[i];
            ctx->rate_hashes[i] = limits[i].hash;
        }

        ctx->nrate_windows = n;
        ctx->rate_window_start_ms = start_ms;
        ctx->rate_held_tokens = tokens;
    }

    ngx_shmtx_unlock(&smcf->shpool->mutex);

    return ctx->rate_refused ? NGX_DECLINED : NGX_OK;
}


/*
 * the tokens held become the tokens used (-1: none were), under the
 * zone's mutex
 */
void
ngx_http_spendpol_ratelimit_release(ngx_http_spendpol_ctx_t *ctx, int64_t used)
{
    ngx_uint_t                   i;
    ngx_http_spendpol_window_t  *window;

    for (i = 0; i < ctx->nrate_windows; i++) {
        window = ctx->rate_windows[i];

        if (!ngx_http_spendpol_zone_held(&window->count, ctx->rate_hashes[i],
                                         ctx->rate_window_start_ms))
        {
            continue;
        }

        window->tokens += (used < 0 ? 0 : used) - ctx->rate_held_tokens;

        if (window->tokens < 0) {
            window->tokens = 0;
        }

        if (window->holders > 0) {
            window->holders--;
        }
    }
}


/* the 429: Retry-After and OpenAI's x-ratelimit-* headers */
ngx_int_t
ngx_http_spendpol_ratelimit_refuse(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char     message[256];
    int64_t  seconds;

    if (!ctx->rate_refused) {
        return ngx_http_spendpol_zone_full(r, ctx);
    }

    seconds = (ctx->rate_reset_ms + 999) / 1000;

    if (ngx_http_spendpol_ratelimit_header(r, "Retry-After", "%L", seconds)
        != NGX_OK
        || ngx_http_spendpol_ratelimit_headers(r,
                                               ngx_http_spendpol_rpm_headers,
                                               ctx->rate_rpm,
                                               ctx->rate_requests, seconds)
           != NGX_OK
        || ngx_http_spendpol_ratelimit_headers(r,
                                               ngx_http_spendpol_tpm_headers,
                                               ctx->rate_tpm, ctx->rate_tokens,
                                               seconds)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_snprintf((u_char *) message, sizeof(message) - 1,
                 "rate limit reached: %uD requests and %uD tokens a minute "
                 "(0: no limit); retry in %L s%Z", ctx->rate_rpm,
                 ctx->rate_tpm, seconds);

    return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                        "rate_limit_error",
                                        "rate_limit_exceeded", message);
}


/* the three headers of one limit (none when it is 0: no limit) */
static ngx_int_t
ngx_http_spendpol_ratelimit_headers(ngx_http_request_t *r,
    const char *const *names, uint32_t limit, int64_t used, int64_t seconds)
{
    if (limit == 0) {
        return NGX_OK;
    }

    if (ngx_http_spendpol_ratelimit_header(r, names[0], "%L", limit)
        != NGX_OK
        || ngx_http_spendpol_ratelimit_header(r, names[1], "%L",
                                              ngx_max((int64_t) limit - used,
                                                      0))
           != NGX_OK
        || ngx_http_spendpol_ratelimit_header(r, names[2], "%Ls", seconds)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* fmt: an ngx_sprintf() format of one int64_t and at most a unit after it */
static ngx_int_t
ngx_http_spendpol_ratelimit_header(ngx_http_request_t *r, const char *name,
    const char *fmt, int64_t value)
{
    u_char  buf[NGX_INT64_LEN + 2], *p;

    p = ngx_sprintf(buf, fmt, value);

    return ngx_http_spendpol_add_header(r, &r->headers_out.headers, name, buf,
                                        p - buf);
}
