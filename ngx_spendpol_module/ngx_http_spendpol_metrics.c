
/*
 * Copyright (C) Spendpol
 *
 * The proxy's metrics: counters in a shared zone of their own, added to by
 * every worker with atomics in the log phase (one journaled request, one
 * observation: the figures are the audit rows' sums), and a content
 * handler, "spendpol_metrics", that renders them in Prometheus text format.
 *
 * Label sets are bounded: a fixed table of model slots, taken first come
 * (the only time a lock is taken), then one "other" slot per provider;
 * refusal reasons are a fixed list plus "other". Names follow the
 * OpenTelemetry GenAI conventions where they define one (gen_ai_*), the
 * rest are spendpol_proxy_* (docs/metrics.md).
 */


#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_METRICS_MAGIC      0x53504d4554524931ULL

/* the model table: a power of two (probing wraps with a mask) */
#define NGX_HTTP_SPENDPOL_METRICS_MODELS     128

/* a longer model name, or one with other bytes, is counted as "other" */
#define NGX_HTTP_SPENDPOL_METRICS_MODEL_LEN  96

/* the longest bucket list, without +Inf */
#define NGX_HTTP_SPENDPOL_METRICS_BUCKETS    14

#define NGX_HTTP_SPENDPOL_METRICS_PROVIDERS  (SP_PROVIDER_COUNT + 1)

/* 1xx .. 5xx, then anything else (0: no status was sent) */
#define NGX_HTTP_SPENDPOL_METRICS_CLASSES    6

#define NGX_HTTP_SPENDPOL_METRICS_FREE       0
#define NGX_HTTP_SPENDPOL_METRICS_READY      1


typedef enum {
    NGX_HTTP_SPENDPOL_OP_CHAT = 0,
    NGX_HTTP_SPENDPOL_OP_TEXT_COMPLETION,
    NGX_HTTP_SPENDPOL_OP_GENERATE_CONTENT,
    NGX_HTTP_SPENDPOL_OP_EMBEDDINGS,
    NGX_HTTP_SPENDPOL_OP_OTHER,
    NGX_HTTP_SPENDPOL_OPS
} ngx_http_spendpol_operation_e;


typedef enum {
    NGX_HTTP_SPENDPOL_CACHE_RESULT_SKIP = 0,
    NGX_HTTP_SPENDPOL_CACHE_RESULT_MISS,
    NGX_HTTP_SPENDPOL_CACHE_RESULT_HIT,
    NGX_HTTP_SPENDPOL_CACHE_RESULT_SEMANTIC_HIT,
    NGX_HTTP_SPENDPOL_CACHE_RESULTS
} ngx_http_spendpol_cache_result_e;


/*
 * A histogram: counts per bucket, not cumulative (one atomic add per
 * observation; the renderer sums them), the last one +Inf; its _count is
 * the sum of the buckets, so the two always agree in a scrape.
 */
typedef struct {
    uint64_t                   bucket[NGX_HTTP_SPENDPOL_METRICS_BUCKETS + 1];
    uint64_t                   sum;
} ngx_http_spendpol_histogram_t;


/*
 * One (provider, operation, requested model, model) series set. The key
 * is written under the zone's mutex before state turns READY (a release
 * store), so a worker that reads READY (an acquire load) sees the whole
 * key without a lock; a slot is never freed.
 */
typedef struct {
    uint32_t                   state;
    uint8_t                    provider;
    uint8_t                    operation;
    uint8_t                    requested_len;
    uint8_t                    model_len;
    uint64_t                   hash;
    u_char                     requested[NGX_HTTP_SPENDPOL_METRICS_MODEL_LEN];
    u_char                     model[NGX_HTTP_SPENDPOL_METRICS_MODEL_LEN];

    uint64_t                   requests[NGX_HTTP_SPENDPOL_METRICS_CLASSES];
    uint64_t                   cost_nano;
    ngx_http_spendpol_histogram_t  tokens[2];     /* input, output */
} ngx_http_spendpol_metrics_slot_t;


/*
 * The audit rows' error codes a refusal is counted under; any other code
 * is "other". Codes the gateway answers with itself, kept in step with
 * ngx_http_spendpol_send_error()'s callers and the replaced error pages.
 */
static const char  *ngx_http_spendpol_metrics_reasons[] = {
    "budget_exceeded",
    "budget_unavailable",
    "rate_limit_exceeded",
    "policy_violation",
    "redaction_failed",
    "agent_paused",
    "missing_api_key",
    "invalid_api_key",
    "provider_key_not_allowed",
    "attribution_not_allowed",
    "template_required",
    "template_not_found",
    "template_invalid",
    "template_not_applicable",
    "unpriced_model",
    "endpoint_not_governed",
    "unknown_provider",
    "provider_not_configured",
    "request_too_large",
    "invalid_json",
    "invalid_field",
    "invalid_path",
    "invalid_header",
    "upstream_not_allowed",
    "upstream_unreachable",
    "gateway_busy",
    "gateway_not_ready",
    "gateway_error",
    "other"                              /* last */
};

#define NGX_HTTP_SPENDPOL_METRICS_REASONS                                     \
    (sizeof(ngx_http_spendpol_metrics_reasons)                                \
     / sizeof(ngx_http_spendpol_metrics_reasons[0]))


struct ngx_http_spendpol_metrics_s {
    uint64_t                   magic;
    uint64_t                   size;             /* sizeof this struct */
    uint64_t                   slots_used;

    ngx_http_spendpol_metrics_slot_t  slots[NGX_HTTP_SPENDPOL_METRICS_MODELS];

    /* per provider: models past the table, or not to be trusted */
    ngx_http_spendpol_metrics_slot_t
                      other[NGX_HTTP_SPENDPOL_METRICS_PROVIDERS]
                           [NGX_HTTP_SPENDPOL_OPS];

    /* upstream time, by provider and operation */
    ngx_http_spendpol_histogram_t
                      duration[NGX_HTTP_SPENDPOL_METRICS_PROVIDERS]
                              [NGX_HTTP_SPENDPOL_OPS];

    ngx_http_spendpol_histogram_t  gateway;
    uint64_t                   cache[NGX_HTTP_SPENDPOL_CACHE_RESULTS];
    uint64_t                   refusals[NGX_HTTP_SPENDPOL_METRICS_REASONS];
};


static ngx_int_t ngx_http_spendpol_metrics_handler(ngx_http_request_t *r);
static size_t ngx_http_spendpol_metrics_reason(const char *code);
static ngx_uint_t ngx_http_spendpol_metrics_operation(
    ngx_http_spendpol_ctx_t *ctx);
static ngx_http_spendpol_metrics_slot_t *ngx_http_spendpol_metrics_slot(
    ngx_http_spendpol_main_conf_t *smcf, ngx_uint_t provider,
    ngx_uint_t operation, const char *requested, const char *model);
static ngx_uint_t ngx_http_spendpol_metrics_label_ok(const char *s,
    size_t len);
static void ngx_http_spendpol_metrics_observe(
    ngx_http_spendpol_histogram_t *h, const uint64_t *bounds, ngx_uint_t n,
    uint64_t value);
static u_char *ngx_http_spendpol_metrics_render(
    ngx_http_spendpol_metrics_t *m, u_char *p, u_char *last);
static ngx_http_spendpol_metrics_slot_t *ngx_http_spendpol_metrics_next(
    ngx_http_spendpol_metrics_t *m, ngx_uint_t *i);
static uint64_t ngx_http_spendpol_metrics_count(
    ngx_http_spendpol_histogram_t *h);
static u_char *ngx_http_spendpol_metrics_histogram(u_char *p, u_char *last,
    const char *name, const char *labels, ngx_http_spendpol_histogram_t *h,
    const uint64_t *bounds, ngx_uint_t n, ngx_uint_t scale);
static u_char *ngx_http_spendpol_metrics_slot_labels(u_char *p, u_char *last,
    ngx_http_spendpol_metrics_slot_t *slot, ngx_uint_t otel);
static u_char *ngx_http_spendpol_metrics_escape(u_char *p, u_char *last,
    u_char *s, size_t len);
static u_char *ngx_http_spendpol_metrics_decimal(u_char *p, u_char *last,
    uint64_t value, ngx_uint_t scale);
static ngx_int_t ngx_http_spendpol_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


#define ngx_http_spendpol_metrics_add(v, n)                                   \
    (void) __atomic_fetch_add(&(v), (uint64_t) (n), __ATOMIC_RELAXED)

#define ngx_http_spendpol_metrics_get(v)                                      \
    __atomic_load_n(&(v), __ATOMIC_RELAXED)


/* gen_ai_system: OpenTelemetry's well-known values, by sp_provider_e */
static const char  *ngx_http_spendpol_metrics_systems[] = {
    "_OTHER",
    "openai",
    "anthropic",
    "gcp.gemini",
    "azure.ai.openai",
    "cohere",
    "mistral_ai"
};


/* gen_ai_operation_name, by ngx_http_spendpol_operation_e */
static const char  *ngx_http_spendpol_metrics_operations[] = {
    "chat",
    "text_completion",
    "generate_content",
    "embeddings",
    "other"
};


static const char  *ngx_http_spendpol_metrics_cache_results[] = {
    "skip",
    "miss",
    "hit",
    "semantic_hit"
};


static const char  *ngx_http_spendpol_metrics_classes[] = {
    "1xx", "2xx", "3xx", "4xx", "5xx", "other"
};


/* OpenTelemetry's advisory buckets for gen_ai.client.token.usage */
static const uint64_t  ngx_http_spendpol_metrics_token_bounds[] = {
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
    16777216, 67108864
};

/* and for gen_ai.client.operation.duration, here in milliseconds */
static const uint64_t  ngx_http_spendpol_metrics_duration_bounds[] = {
    10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 40960,
    81920
};

/* the gateway's own time, in microseconds */
static const uint64_t  ngx_http_spendpol_metrics_gateway_bounds[] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
    250000
};

#define ngx_http_spendpol_metrics_nbounds(a)  (sizeof(a) / sizeof(a[0]))


/*
 * The log phase of a request that is journaled: rec is its audit row,
 * complete, so every figure here is that row's. A few relaxed atomic adds;
 * a lock only when a new model takes a slot.
 */
void
ngx_http_spendpol_metrics_record(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_journal_record_t *rec)
{
    ngx_uint_t                          i, provider, operation, cls, result;
    ngx_msec_t                          upstream_ms;
    ngx_uint_t                          upstream;
    const char                         *requested, *model;
    ngx_http_upstream_state_t          *state;
    ngx_http_spendpol_metrics_t        *m;
    ngx_http_spendpol_metrics_slot_t   *slot;
    ngx_http_spendpol_main_conf_t      *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
    m = smcf->metrics;

    if (m == NULL) {
        return;
    }

    provider = (ctx->provider > SP_PROVIDER_UNKNOWN
                && ctx->provider <= SP_PROVIDER_COUNT)
               ? (ngx_uint_t) ctx->provider : 0;
    operation = ngx_http_spendpol_metrics_operation(ctx);

    /*
     * A model name takes a slot only when the organisation's prices name
     * it, or a provider (or the cache) answered it with success: anything
     * else is the client's own text, and made-up names must not fill the
     * table.
     */
    requested = rec->requested_model;
    model = rec->model;

    if (!ctx->authenticated
        || !((ctx->priced && !ctx->fallback_price)
             || ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT
             || (ctx->proxied && rec->status >= 200 && rec->status < 300)))
    {
        requested = NULL;
        model = NULL;
    }

    slot = ngx_http_spendpol_metrics_slot(smcf, provider, operation,
                                          requested, model);

    cls = (rec->status >= 100 && rec->status < 600) ? rec->status / 100 - 1
                                                    : 5;

    ngx_http_spendpol_metrics_add(slot->requests[cls], 1);

    if (rec->cost_nano > 0) {
        ngx_http_spendpol_metrics_add(slot->cost_nano, rec->cost_nano);
    }

    /* usage is what a provider reported: only a request that reached one */
    if (ctx->proxied && ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT) {
        ngx_http_spendpol_metrics_observe(&slot->tokens[0],
                             ngx_http_spendpol_metrics_token_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_token_bounds),
                             (uint64_t) ngx_max(rec->input_tokens, 0));
        /* an embedding has no output tokens, by the conventions too */
        if (operation != NGX_HTTP_SPENDPOL_OP_EMBEDDINGS) {
            ngx_http_spendpol_metrics_observe(&slot->tokens[1],
                             ngx_http_spendpol_metrics_token_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_token_bounds),
                             (uint64_t) ngx_max(rec->output_tokens, 0));
        }
    }

    if (rec->error_code[0] && ngx_strcmp(rec->error_code, "stream_incomplete"))
    {
        ngx_http_spendpol_metrics_add(
            m->refusals[ngx_http_spendpol_metrics_reason(rec->error_code)], 1);
    }

    if (ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT) {
        result = ctx->cache_similarity != 0
                 ? NGX_HTTP_SPENDPOL_CACHE_RESULT_SEMANTIC_HIT
                 : NGX_HTTP_SPENDPOL_CACHE_RESULT_HIT;

    } else {
        result = ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_MISS
                 ? NGX_HTTP_SPENDPOL_CACHE_RESULT_MISS
                 : NGX_HTTP_SPENDPOL_CACHE_RESULT_SKIP;
    }

    ngx_http_spendpol_metrics_add(m->cache[result], 1);

    ngx_http_spendpol_metrics_observe(&m->gateway,
                             ngx_http_spendpol_metrics_gateway_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_gateway_bounds),
                             (uint64_t) ngx_max(rec->gateway_us, 0));

    /*
     * Upstream time as nginx measured it, connect to last byte, summed
     * over the attempts of a fallback chain (a zeroed state separates
     * upstreams; an attempt still open has no time yet).
     */
    if (!ctx->proxied || r->upstream_states == NULL) {
        return;
    }

    upstream = 0;
    upstream_ms = 0;
    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer == NULL
            || state[i].response_time == (ngx_msec_t) -1)
        {
            continue;
        }

        upstream = 1;
        upstream_ms += state[i].response_time;
    }

    if (upstream) {
        ngx_http_spendpol_metrics_observe(&m->duration[provider][operation],
                             ngx_http_spendpol_metrics_duration_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_duration_bounds),
                             upstream_ms);
    }
}


/*
 * The log phase of a request refused before it had a key (not anybody's
 * spend, so not journaled): counted as a refusal only.
 */
void
ngx_http_spendpol_metrics_refused(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    if (ctx->error_code == NULL) {
        return;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->metrics == NULL) {
        return;
    }

    ngx_http_spendpol_metrics_add(
        smcf->metrics->refusals[ngx_http_spendpol_metrics_reason(
                                                       ctx->error_code)], 1);
}


static size_t
ngx_http_spendpol_metrics_reason(const char *code)
{
    size_t  i;

    for (i = 0; i < NGX_HTTP_SPENDPOL_METRICS_REASONS - 1; i++) {
        if (ngx_strcmp(code, ngx_http_spendpol_metrics_reasons[i]) == 0) {
            return i;
        }
    }

    return NGX_HTTP_SPENDPOL_METRICS_REASONS - 1;
}


static ngx_uint_t
ngx_http_spendpol_metrics_operation(ngx_http_spendpol_ctx_t *ctx)
{
    const char  *name;

    if (ctx->endpoint == NULL) {
        return NGX_HTTP_SPENDPOL_OP_OTHER;
    }

    if (ctx->endpoint->meter == SP_METER_EMBED) {
        return NGX_HTTP_SPENDPOL_OP_EMBEDDINGS;
    }

    if (ctx->endpoint->meter != SP_METER_TOKENS) {
        return NGX_HTTP_SPENDPOL_OP_OTHER;
    }

    name = ctx->endpoint->name;

    if (ngx_strcmp(name, "completions") == 0
        || ngx_strcmp(name, "fim.completions") == 0)
    {
        return NGX_HTTP_SPENDPOL_OP_TEXT_COMPLETION;
    }

    if (ngx_strcmp(name, "generateContent") == 0
        || ngx_strcmp(name, "streamGenerateContent") == 0)
    {
        return NGX_HTTP_SPENDPOL_OP_GENERATE_CONTENT;
    }

    return NGX_HTTP_SPENDPOL_OP_CHAT;
}


/*
 * The slot of (provider, operation, requested, model): found by linear
 * probing from the key's hash without a lock; a free slot is taken under
 * the zone's mutex, checked again there (another worker may have just
 * taken it, for this key or another). NULL names, names that are too long
 * or hold bytes outside printable ASCII, and a full table: the provider's
 * "other" slot for the operation.
 */
static ngx_http_spendpol_metrics_slot_t *
ngx_http_spendpol_metrics_slot(ngx_http_spendpol_main_conf_t *smcf,
    ngx_uint_t provider, ngx_uint_t operation, const char *requested,
    const char *model)
{
    size_t                             rlen, mlen;
    uint64_t                           hash;
    uint32_t                           state;
    ngx_uint_t                         i, n;
    const u_char                      *p;
    ngx_slab_pool_t                   *shpool;
    ngx_http_spendpol_metrics_t       *m;
    ngx_http_spendpol_metrics_slot_t  *slot;

    m = smcf->metrics;

    if (requested == NULL || model == NULL) {
        return &m->other[provider][operation];
    }

    rlen = ngx_strlen(requested);
    mlen = ngx_strlen(model);

    if (!ngx_http_spendpol_metrics_label_ok(requested, rlen)
        || !ngx_http_spendpol_metrics_label_ok(model, mlen))
    {
        return &m->other[provider][operation];
    }

    /* FNV-1a, 64 bits, over the whole key */
    hash = 0xcbf29ce484222325ULL;
    hash = (hash ^ provider) * 0x100000001b3ULL;
    hash = (hash ^ operation) * 0x100000001b3ULL;

    for (p = (const u_char *) requested; *p; p++) {
        hash = (hash ^ *p) * 0x100000001b3ULL;
    }

    hash = (hash ^ 0xff) * 0x100000001b3ULL;

    for (p = (const u_char *) model; *p; p++) {
        hash = (hash ^ *p) * 0x100000001b3ULL;
    }

    shpool = (ngx_slab_pool_t *) smcf->metrics_zone->shm.addr;

    for (n = 0; n < NGX_HTTP_SPENDPOL_METRICS_MODELS; n++) {
        i = (hash + n) & (NGX_HTTP_SPENDPOL_METRICS_MODELS - 1);
        slot = &m->slots[i];

        state = __atomic_load_n(&slot->state, __ATOMIC_ACQUIRE);

        if (state == NGX_HTTP_SPENDPOL_METRICS_FREE) {
            ngx_shmtx_lock(&shpool->mutex);

            if (slot->state == NGX_HTTP_SPENDPOL_METRICS_FREE) {
                slot->provider = (uint8_t) provider;
                slot->operation = (uint8_t) operation;
                slot->requested_len = (uint8_t) rlen;
                slot->model_len = (uint8_t) mlen;
                slot->hash = hash;
                ngx_memcpy(slot->requested, requested, rlen);
                ngx_memcpy(slot->model, model, mlen);
                ngx_http_spendpol_metrics_add(m->slots_used, 1);

                __atomic_store_n(&slot->state,
                                 NGX_HTTP_SPENDPOL_METRICS_READY,
                                 __ATOMIC_RELEASE);

                ngx_shmtx_unlock(&shpool->mutex);
                return slot;
            }

            ngx_shmtx_unlock(&shpool->mutex);
        }

        if (slot->hash == hash
            && slot->provider == provider
            && slot->operation == operation
            && slot->requested_len == rlen
            && slot->model_len == mlen
            && ngx_memcmp(slot->requested, requested, rlen) == 0
            && ngx_memcmp(slot->model, model, mlen) == 0)
        {
            return slot;
        }
    }

    return &m->other[provider][operation];
}


/*
 * A label value as it is, but for '\\' and '"' (escaped when rendered):
 * printable ASCII, not empty, short enough for a slot.
 */
static ngx_uint_t
ngx_http_spendpol_metrics_label_ok(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_SPENDPOL_METRICS_MODEL_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((u_char) s[i] < 0x20 || (u_char) s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_spendpol_metrics_observe(ngx_http_spendpol_histogram_t *h,
    const uint64_t *bounds, ngx_uint_t n, uint64_t value)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (value <= bounds[i]) {
            break;
        }
    }

    ngx_http_spendpol_metrics_add(h->bucket[i], 1);
    ngx_http_spendpol_metrics_add(h->sum, value);
}


static ngx_int_t
ngx_http_spendpol_metrics_handler(ngx_http_request_t *r)
{
    size_t                             size;
    ngx_int_t                          rc;
    ngx_uint_t                         i, j, tries;
    ngx_buf_t                         *b;
    ngx_chain_t                        out;
    ngx_http_spendpol_metrics_t       *m;
    ngx_http_spendpol_metrics_slot_t  *slot;
    ngx_http_spendpol_main_conf_t     *smcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);
    m = smcf->metrics;

    if (m == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /*
     * An upper bound: a fixed part, and each series set's lines (6 status
     * classes, cost, 2 histograms of 17 lines) at 320 bytes and its model
     * names, escaped, at most twice as long. A model that takes a slot
     * meanwhile may not fit: the size is doubled once.
     */
    size = 16 * 1024;

    for (i = 0; (slot = ngx_http_spendpol_metrics_next(m, &i)); /* void */) {
        size += 41 * (320 + 4 * ((size_t) slot->requested_len
                                 + slot->model_len));
    }

    for (i = 0; i < NGX_HTTP_SPENDPOL_METRICS_PROVIDERS; i++) {
        for (j = 0; j < NGX_HTTP_SPENDPOL_OPS; j++) {
            if (ngx_http_spendpol_metrics_count(&m->duration[i][j])) {
                size += 17 * 320;
            }
        }
    }

    for (tries = 0; /* void */; tries++) {
        b = ngx_create_temp_buf(r->pool, size + 1);
        if (b == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->last = ngx_http_spendpol_metrics_render(m, b->pos, b->end);

        if (b->last < b->end) {
            break;
        }

        if (tries == 1) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "spendpol: the metrics do not fit in %uz bytes",
                          size + 1);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        size *= 2;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_spendpol_metrics_render(ngx_http_spendpol_metrics_t *m, u_char *p,
    u_char *last)
{
    u_char                             labels[1024], *l;
    uint64_t                           v;
    ngx_uint_t                         i, j, k, pass;
    ngx_http_spendpol_metrics_slot_t  *slot;

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_requests_total Requests the gateway "
            "journaled (one per audit row), by provider, operation, "
            "requested model, model and status class.\n"
            "# TYPE spendpol_proxy_requests_total counter\n");

    for (i = 0; (slot = ngx_http_spendpol_metrics_next(m, &i)); /* void */) {
        l = ngx_http_spendpol_metrics_slot_labels(labels,
                                                  labels + sizeof(labels),
                                                  slot, 0);

        for (k = 0; k < NGX_HTTP_SPENDPOL_METRICS_CLASSES; k++) {
            v = ngx_http_spendpol_metrics_get(slot->requests[k]);

            if (v) {
                p = ngx_slprintf(p, last,
                                 "spendpol_proxy_requests_total{%*s,"
                                 "status_class=\"%s\"} %uL\n",
                                 (size_t) (l - labels), labels,
                                 ngx_http_spendpol_metrics_classes[k], v);
            }
        }
    }

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_cost_nano_usd_total What the journaled "
            "requests cost, in nano-USD (1e-9 USD), as in the audit rows.\n"
            "# TYPE spendpol_proxy_cost_nano_usd_total counter\n");

    for (i = 0; (slot = ngx_http_spendpol_metrics_next(m, &i)); /* void */) {
        l = ngx_http_spendpol_metrics_slot_labels(labels,
                                                  labels + sizeof(labels),
                                                  slot, 0);

        p = ngx_slprintf(p, last,
                         "spendpol_proxy_cost_nano_usd_total{%*s} %uL\n",
                         (size_t) (l - labels), labels,
                         ngx_http_spendpol_metrics_get(slot->cost_nano));
    }

    p = ngx_slprintf(p, last,
            "# HELP gen_ai_client_token_usage Tokens a provider reported "
            "per request, by token type (OpenTelemetry GenAI).\n"
            "# TYPE gen_ai_client_token_usage histogram\n");

    for (pass = 0; pass < 2; pass++) {
        for (i = 0; (slot = ngx_http_spendpol_metrics_next(m, &i)); /**/) {

            if (ngx_http_spendpol_metrics_count(&slot->tokens[pass]) == 0) {
                continue;
            }

            l = ngx_http_spendpol_metrics_slot_labels(labels,
                                                labels + sizeof(labels) - 64,
                                                slot, 1);
            l = ngx_slprintf(l, labels + sizeof(labels) - 1,
                             ",gen_ai_token_type=\"%s\"",
                             pass ? "output" : "input");
            *l = '\0';

            p = ngx_http_spendpol_metrics_histogram(p, last,
                             "gen_ai_client_token_usage", (char *) labels,
                             &slot->tokens[pass],
                             ngx_http_spendpol_metrics_token_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_token_bounds),
                             0);
        }
    }

    p = ngx_slprintf(p, last,
            "# HELP gen_ai_client_operation_duration_seconds Time spent on "
            "the provider, connect to last byte, summed over fallback "
            "attempts (OpenTelemetry GenAI).\n"
            "# TYPE gen_ai_client_operation_duration_seconds histogram\n");

    for (i = 0; i < NGX_HTTP_SPENDPOL_METRICS_PROVIDERS; i++) {
        for (j = 0; j < NGX_HTTP_SPENDPOL_OPS; j++) {

            if (ngx_http_spendpol_metrics_count(&m->duration[i][j]) == 0) {
                continue;
            }

            l = ngx_slprintf(labels, labels + sizeof(labels) - 1,
                             "gen_ai_system=\"%s\","
                             "gen_ai_operation_name=\"%s\"",
                             ngx_http_spendpol_metrics_systems[i],
                             ngx_http_spendpol_metrics_operations[j]);
            *l = '\0';

            p = ngx_http_spendpol_metrics_histogram(p, last,
                             "gen_ai_client_operation_duration_seconds",
                             (char *) labels, &m->duration[i][j],
                             ngx_http_spendpol_metrics_duration_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_duration_bounds),
                             3);
        }
    }

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_gateway_duration_seconds The gateway's "
            "own time per journaled request, without the provider's and "
            "the client's.\n"
            "# TYPE spendpol_proxy_gateway_duration_seconds histogram\n");

    p = ngx_http_spendpol_metrics_histogram(p, last,
                             "spendpol_proxy_gateway_duration_seconds", NULL,
                             &m->gateway,
                             ngx_http_spendpol_metrics_gateway_bounds,
                             ngx_http_spendpol_metrics_nbounds(
                                 ngx_http_spendpol_metrics_gateway_bounds),
                             6);

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_refusals_total Answers the gateway made "
            "itself instead of a provider's, by error code.\n"
            "# TYPE spendpol_proxy_refusals_total counter\n");

    for (i = 0; i < NGX_HTTP_SPENDPOL_METRICS_REASONS; i++) {
        p = ngx_slprintf(p, last,
                         "spendpol_proxy_refusals_total{reason=\"%s\"} %uL\n",
                         ngx_http_spendpol_metrics_reasons[i],
                         ngx_http_spendpol_metrics_get(m->refusals[i]));
    }

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_cache_results_total The response "
            "cache's answer for each journaled request.\n"
            "# TYPE spendpol_proxy_cache_results_total counter\n");

    for (i = 0; i < NGX_HTTP_SPENDPOL_CACHE_RESULTS; i++) {
        p = ngx_slprintf(p, last,
                         "spendpol_proxy_cache_results_total{result=\"%s\"} "
                         "%uL\n", ngx_http_spendpol_metrics_cache_results[i],
                         ngx_http_spendpol_metrics_get(m->cache[i]));
    }

    p = ngx_slprintf(p, last,
            "# HELP spendpol_proxy_model_slots Model label slots; a model "
            "past them is counted as \"other\".\n"
            "# TYPE spendpol_proxy_model_slots gauge\n"
            "spendpol_proxy_model_slots %ui\n"
            "# HELP spendpol_proxy_model_slots_used Model label slots "
            "taken.\n"
            "# TYPE spendpol_proxy_model_slots_used gauge\n"
            "spendpol_proxy_model_slots_used %uL\n",
            (ngx_uint_t) NGX_HTTP_SPENDPOL_METRICS_MODELS,
            ngx_http_spendpol_metrics_get(m->slots_used));

    return p;
}


/*
 * The series sets to render, from *i on: the table's slots in use, then
 * the "other" slots that counted a request. NULL after the last.
 */
static ngx_http_spendpol_metrics_slot_t *
ngx_http_spendpol_metrics_next(ngx_http_spendpol_metrics_t *m, ngx_uint_t *i)
{
    ngx_uint_t                         j, k;
    ngx_http_spendpol_metrics_slot_t  *slot;

    for ( /* void */ ; *i < NGX_HTTP_SPENDPOL_METRICS_MODELS
                            + NGX_HTTP_SPENDPOL_METRICS_PROVIDERS
                              * NGX_HTTP_SPENDPOL_OPS;
         (*i)++)
    {
        if (*i < NGX_HTTP_SPENDPOL_METRICS_MODELS) {
            slot = &m->slots[*i];

            if (__atomic_load_n(&slot->state, __ATOMIC_ACQUIRE)
                == NGX_HTTP_SPENDPOL_METRICS_READY)
            {
                (*i)++;
                return slot;
            }

            continue;
        }

        j = *i - NGX_HTTP_SPENDPOL_METRICS_MODELS;
        slot = &m->other[j / NGX_HTTP_SPENDPOL_OPS][j % NGX_HTTP_SPENDPOL_OPS];

        for (k = 0; k < NGX_HTTP_SPENDPOL_METRICS_CLASSES; k++) {
            if (ngx_http_spendpol_metrics_get(slot->requests[k])) {
                (*i)++;
                return slot;
            }
        }
    }

    return NULL;
}


static uint64_t
ngx_http_spendpol_metrics_count(ngx_http_spendpol_histogram_t *h)
{
    uint64_t    count;
    ngx_uint_t  i;

    count = 0;

    for (i = 0; i <= NGX_HTTP_SPENDPOL_METRICS_BUCKETS; i++) {
        count += ngx_http_spendpol_metrics_get(h->bucket[i]);
    }

    return count;
}


/*
 * A histogram's _bucket lines (cumulative), _sum and _count. The sum is
 * an integer in the unit of the bounds, written with scale decimals
 * (3: milliseconds as seconds).
 */
static u_char *
ngx_http_spendpol_metrics_histogram(u_char *p, u_char *last,
    const char *name, const char *labels, ngx_http_spendpol_histogram_t *h,
    const uint64_t *bounds, ngx_uint_t n, ngx_uint_t scale)
{
    uint64_t    count;
    ngx_uint_t  i;
    const char *comma;

    comma = labels ? "," : "";
    labels = labels ? labels : "";

    count = 0;

    for (i = 0; i <= n; i++) {
        count += ngx_http_spendpol_metrics_get(h->bucket[i]);

        p = ngx_slprintf(p, last, "%s_bucket{%s%sle=\"", name, labels, comma);

        if (i == n) {
            p = ngx_slprintf(p, last, "+Inf");

        } else {
            p = ngx_http_spendpol_metrics_decimal(p, last, bounds[i], scale);
        }

        p = ngx_slprintf(p, last, "\"} %uL\n", count);
    }

    p = ngx_slprintf(p, last, "%s_sum%s%s%s ", name, *labels ? "{" : "",
                     labels, *labels ? "}" : "");
    p = ngx_http_spendpol_metrics_decimal(p, last,
                                   ngx_http_spendpol_metrics_get(h->sum),
                                   scale);
    p = ngx_slprintf(p, last, "\n%s_count%s%s%s %uL\n", name,
                     *labels ? "{" : "", labels, *labels ? "}" : "", count);

    return p;
}


/*
 * A slot's labels, without braces: Spendpol's names (provider,
 * operation, requested_model, model: the audit rows' columns) or
 * OpenTelemetry's (gen_ai_*).
 */
static u_char *
ngx_http_spendpol_metrics_slot_labels(u_char *p, u_char *last,
    ngx_http_spendpol_metrics_slot_t *slot, ngx_uint_t otel)
{
    ngx_uint_t   other;
    const char  *provider;

    other = (slot->requested_len == 0);

    if (otel) {
        p = ngx_slprintf(p, last,
                         "gen_ai_system=\"%s\",gen_ai_operation_name=\"%s\","
                         "gen_ai_request_model=\"",
                         ngx_http_spendpol_metrics_systems[slot->provider],
                         ngx_http_spendpol_metrics_operations[
                                                           slot->operation]);

    } else {
        provider = slot->provider ? sp_provider_name(slot->provider) : NULL;

        p = ngx_slprintf(p, last,
                         "provider=\"%s\",operation=\"%s\","
                         "requested_model=\"",
                         provider ? provider : "other",
                         ngx_http_spendpol_metrics_operations[
                                                           slot->operation]);
    }

    if (other) {
        p = ngx_slprintf(p, last, "other");

    } else {
        p = ngx_http_spendpol_metrics_escape(p, last, slot->requested,
                                             slot->requested_len);
    }

    p = ngx_slprintf(p, last, otel ? "\",gen_ai_response_model=\""
                                   : "\",model=\"");

    if (other) {
        p = ngx_slprintf(p, last, "other");

    } else {
        p = ngx_http_spendpol_metrics_escape(p, last, slot->model,
                                             slot->model_len);
    }

    if (p < last) {
        *p++ = '"';
    }

    return p;
}


/* a label value: '\\' and '"' escaped (slots hold printable ASCII only) */
static u_char *
ngx_http_spendpol_metrics_escape(u_char *p, u_char *last, u_char *s,
    size_t len)
{
    size_t  i;

    for (i = 0; i < len && p + 2 <= last; i++) {
        if (s[i] == '\\' || s[i] == '"') {
            *p++ = '\\';
        }

        *p++ = s[i];
    }

    return p;
}


/* value / 10^scale (0, 3 or 6), exactly, without floating point */
static u_char *
ngx_http_spendpol_metrics_decimal(u_char *p, u_char *last, uint64_t value,
    ngx_uint_t scale)
{
    switch (scale) {

    case 3:
        return ngx_slprintf(p, last, "%uL.%03uL", value / 1000,
                            value % 1000);

    case 6:
        return ngx_slprintf(p, last, "%uL.%06uL", value / 1000000,
                            value % 1000000);

    default:
        return ngx_slprintf(p, last, "%uL", value);
    }
}


/* "spendpol_metrics;" in a location: the content handler */
char *
ngx_http_spendpol_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "conflicts with another content handler in this location "
               "(such as \"spendpol on\" or \"proxy_pass\"): give the "
               "metrics a location of their own";
    }

    clcf->handler = ngx_http_spendpol_metrics_handler;

    return NGX_CONF_OK;
}


/* from ngx_http_spendpol_init_main_conf(): every http{} has the zone */
ngx_int_t
ngx_http_spendpol_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf)
{
    size_t     size;
    ngx_str_t  name;

    ngx_str_set(&name, "spendpol_metrics");

    /* the counters, and room for the slab pool's own pages */
    size = ngx_align(sizeof(ngx_http_spendpol_metrics_t), ngx_pagesize)
           + 16 * ngx_pagesize;

    smcf->metrics_zone = ngx_shared_memory_add(cf, &name, size,
                                               &ngx_http_spendpol_module);
    if (smcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    smcf->metrics_zone->init = ngx_http_spendpol_metrics_init_zone;
    smcf->metrics_zone->data = smcf;

    return NGX_OK;
}


/*
 * A reload keeps the counters (Prometheus counters do not reset but on a
 * restart); a module of another layout loaded by the reload starts afresh.
 */
static ngx_int_t
ngx_http_spendpol_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_spendpol_main_conf_t  *osmcf = data;

    ngx_uint_t                      i, j;
    ngx_slab_pool_t                *shpool;
    ngx_http_spendpol_metrics_t    *m;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    m = NULL;

    if (osmcf) {
        m = osmcf->metrics;

    } else if (shm_zone->shm.exists) {
        m = shpool->data;
    }

    if (m && m->magic == NGX_HTTP_SPENDPOL_METRICS_MAGIC
        && m->size == sizeof(ngx_http_spendpol_metrics_t))
    {
        smcf->metrics = m;
        return NGX_OK;
    }

    if (m) {
        ngx_slab_free(shpool, m);
    }

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_spendpol_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->magic = NGX_HTTP_SPENDPOL_METRICS_MAGIC;
    m->size = sizeof(ngx_http_spendpol_metrics_t);

    /* the "other" slots: no model names (requested_len 0 says so) */
    for (i = 0; i < NGX_HTTP_SPENDPOL_METRICS_PROVIDERS; i++) {
        for (j = 0; j < NGX_HTTP_SPENDPOL_OPS; j++) {
            m->other[i][j].provider = (uint8_t) i;
            m->other[i][j].operation = (uint8_t) j;
        }
    }

    shpool->data = m;
    shpool->log_ctx = (u_char *) " in spendpol metrics zone";

    smcf->metrics = m;

    return NGX_OK;
}
