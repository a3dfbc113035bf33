
/*
 * Copyright (C) Spendpol
 *
 * Stage 5 of the request path: policies, the PII scan and its guard
 * score (libspendpol's sp_policy.h and sp_pii.h decide; this is the
 * glue); the hallucination score of the answer (sp_halluc.h); and the
 * shadow-AI signal of a raw provider key presented instead of a
 * Spendpol key.
 */


#include <sp_policy.h>
#include <sp_halluc.h>

#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_POLICIES_CACHED  64


static void *ngx_http_spendpol_policy_compile(const char *json, size_t len,
    char *err, size_t errlen);
static void ngx_http_spendpol_policy_free(void *set);
static int64_t ngx_http_spendpol_policy_worst(void *data);


/* a worker is one thread: plain statics, freed at exit */
static ngx_http_spendpol_compiled_t
    ngx_http_spendpol_policies_cache[NGX_HTTP_SPENDPOL_POLICIES_CACHED];


/*
 * What an organisation publishes as one JSON array (routing rules,
 * policies), compiled once per snapshot by each worker and kept in a
 * small table of the worker's: the set of org in the current snapshot,
 * or NULL (none, or it did not compile: not tried again until it
 * changes, and said once in the error log).
 */
void *
ngx_http_spendpol_compiled(ngx_http_request_t *r,
    ngx_http_spendpol_compiled_t *cache, ngx_uint_t n, ngx_str_t *org,
    sp_str_t json, ngx_http_spendpol_compile_pt compile,
    ngx_http_spendpol_free_pt release, const char *what)
{
    char                            err[256];
    uint64_t                        generation;
    ngx_http_spendpol_compiled_t   *c;
    ngx_http_spendpol_main_conf_t  *smcf;

    if (org->len >= SP_ID_LEN) {
        return NULL;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    generation = smcf->snapshot.header->generation;

    c = &cache[ngx_hash_key(org->data, org->len) % n];

    if ((c->set || c->failed) && c->generation == generation
        && c->base == smcf->snapshot.base && c->org_len == org->len
        && ngx_strncmp(c->org, org->data, org->len) == 0)
    {
        return c->set;
    }

    if (c->set) {
        release(c->set);
        c->set = NULL;
    }

    c->set = compile(json.data, json.len, err, sizeof(err));
    c->failed = (c->set == NULL);

    if (c->set == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: %s of %V not used: %s", what, org, err);
    }

    c->generation = generation;
    c->base = smcf->snapshot.base;
    c->org_len = org->len;
    ngx_memcpy(c->org, org->data, org->len);

    return c->set;
}


void
ngx_http_spendpol_compiled_free(ngx_http_spendpol_compiled_t *cache,
    ngx_uint_t n, ngx_http_spendpol_free_pt release)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (cache[i].set) {
            release(cache[i].set);
            cache[i].set = NULL;
        }
    }
}


void
ngx_http_spendpol_policy_exit_worker(void)
{
    ngx_http_spendpol_compiled_free(ngx_http_spendpol_policies_cache,
                                    NGX_HTTP_SPENDPOL_POLICIES_CACHED,
                                    ngx_http_spendpol_policy_free);
}


static void *
ngx_http_spendpol_policy_compile(const char *json, size_t len, char *err,
    size_t errlen)
{
    return sp_policy_compile(json, len, err, errlen);
}


static void
ngx_http_spendpol_policy_free(void *set)
{
    sp_policy_free(set);
}


/*
 * Stage 5: the organisation's policies on the request as templates left
 * it, before routing. The PII scan runs for every request (the guard
 * score is on every answer); a block is refused (403 policy_violation,
 * naming the policy), a redaction rewrites the body that goes on, warn
 * codes go to X-Spendpol-Policy-Warning. A body the scanner cannot read
 * is refused: the gateway never fails open. NGX_DECLINED goes on;
 * anything else was sent.
 */
ngx_int_t
ngx_http_spendpol_policy_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    char                            message[512];
    u_char                         *out;
    size_t                          n;
    sp_str_t                        org;
    ngx_time_t                     *tp;
    sp_policy_set_t                *set;
    sp_policy_request_t             req;
    sp_policy_decision_t           *d;
    const sp_snapshot_policies_t   *policies;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    set = NULL;

    if (smcf->snapshot_map) {
        org.data = (char *) ctx->org_id.data;
        org.len = ctx->org_id.len;

        policies = sp_snapshot_find_policies(&smcf->snapshot, org);

        if (policies) {
            set = ngx_http_spendpol_compiled(r,
                               ngx_http_spendpol_policies_cache,
                               NGX_HTTP_SPENDPOL_POLICIES_CACHED,
                               &ctx->org_id,
                               sp_snapshot_str(&smcf->snapshot,
                                               policies->rules),
                               ngx_http_spendpol_policy_compile,
                               ngx_http_spendpol_policy_free, "policies");
        }
    }

    d = ngx_palloc(r->pool, sizeof(sp_policy_decision_t));
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&req, sizeof(sp_policy_request_t));

    req.provider = ctx->provider;
    req.model = sp_str_from(ctx->request->model);
    req.api_key_id.data = (char *) ctx->key_id.data;
    req.api_key_id.len = ctx->key_id.len;
    req.agent_id.data = (char *) ctx->agent_id.data;
    req.agent_id.len = ctx->agent_id.len;
    req.department.data = (char *) ctx->department.data;
    req.department.len = ctx->department.len;
    req.project.data = (char *) ctx->project.data;
    req.project.len = ctx->project.len;
    req.max_tokens = ctx->request->max_tokens ? ctx->request->max_tokens : -1;

    tp = ngx_timeofday();
    req.now_ms = (int64_t) tp->sec * 1000 + tp->msec;

    req.body = (char *) ctx->body.data;
    req.body_len = ctx->body.len;
    req.worst_case_nano = ngx_http_spendpol_policy_worst;
    req.data = r;

    if (sp_policy_evaluate(set, &req, d) != SP_OK) {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_json",
                                   "the request body is not JSON the "
                                   "gateway can scan for policies");
    }

    ctx->policy = d;
    ctx->guard_score = d->pii.score_milli;
    ctx->response_mask = d->response_mask;

    if (d->decision == SP_POLICY_BLOCK) {
        (void) sp_policy_message(d, message, sizeof(message));

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                            "permission_error",
                                            "policy_violation", message);
    }

    if (d->redact_mask == 0 || d->pii.nentities == 0) {
        return NGX_DECLINED;
    }

    n = ctx->body.len + 32 * d->pii.nentities + 1;

    out = ngx_pnalloc(r->pool, n);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = sp_pii_redact((char *) ctx->body.data, ctx->body.len, &d->pii,
                      d->redact_mask, (char *) out, n - 1);

    if (n == 0) {
        /* cannot happen with the room given; never pass it unredacted */
        return ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "api_error", "redaction_failed",
                                   "the gateway could not redact the "
                                   "request");
    }

    out[n] = '\0';
    ctx->body.data = out;
    ctx->body.len = n;
    ctx->redacted = 1;

    /* what the request says is read again from what goes on */
    return ngx_http_spendpol_parse_body(r, ctx);
}


/* a limits policy's max_cost_usd: the requested model's worst case */
static int64_t
ngx_http_spendpol_policy_worst(void *data)
{
    ngx_http_request_t  *r = data;

    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    return ngx_http_spendpol_request_worst(r, ctx);
}


/* the policy warn codes for X-Spendpol-Policy-Warning, or "" */
const char *
ngx_http_spendpol_policy_warnings(ngx_http_spendpol_ctx_t *ctx)
{
    return ctx->policy ? ctx->policy->warnings : "";
}


/* X-Spendpol-Guard-Score: 0 when nothing was found or scanned */
ngx_int_t
ngx_http_spendpol_guard_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char      buf[16], *p;
    ngx_int_t   score;

    score = ctx->guard_score;

    if (score <= 0) {
        p = ngx_cpymem(buf, "0", 1);

    } else {
        p = ngx_sprintf(buf, "%ui.%03ui", (ngx_uint_t) score / 1000,
                        (ngx_uint_t) score % 1000);
    }

    return ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                        "X-Spendpol-Guard-Score", buf,
                                        p - buf);
}


/*
 * Stage 2: a token that is no Spendpol key but a provider's or a
 * cloud's own secret. It is refused like any unknown key, and journaled
 * (in the deployment's shadow organisation) with its kind and a
 * fingerprint, never the key: controld raises a shadow-AI alert from
 * the audit row. NGX_DECLINED: not such a key.
 */
ngx_int_t
ngx_http_spendpol_shadow_key(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_str_t *key)
{
    u_char                         *p;
    uint8_t                         hash[SP_KEY_HASH_LEN];
    sp_str_t                        name, org;
    ngx_uint_t                      i;
    const char                     *kind;
    const sp_snapshot_setting_t    *setting;
    ngx_http_spendpol_main_conf_t  *smcf;

    kind = sp_pii_secret_kind(ctx->provider, (char *) key->data, key->len);

    if (kind == NULL) {
        return NGX_DECLINED;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    sp_key_hash((char *) key->data, key->len, hash);

    p = ngx_cpymem(ctx->shadow_key_fp, "fp_", 3);

    for (i = 0; i < 8; i++) {
        p = ngx_sprintf(p, "%02xd", hash[i]);
    }

    *p = '\0';

    ctx->shadow_key_type = kind;

    name.data = SP_SETTING_SHADOW_ORG;
    name.len = sizeof(SP_SETTING_SHADOW_ORG) - 1;

    setting = sp_snapshot_find_setting(&smcf->snapshot, name);

    if (setting) {
        org = sp_snapshot_str(&smcf->snapshot, setting->value);

        if (org.len && org.len < SP_ID_LEN) {
            ctx->org_id.data = ngx_pnalloc(r->pool, org.len);
            if (ctx->org_id.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(ctx->org_id.data, org.data, org.len);
            ctx->org_id.len = org.len;
            ctx->shadow = 1;
        }
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "spendpol: a raw %s provider key (%s) was presented "
                  "instead of a Spendpol key: refused", kind,
                  ctx->shadow_key_fp);

    return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                               "authentication_error",
                               "provider_key_not_allowed",
                               "a provider's own API key was sent: the "
                               "gateway holds the provider keys, send a "
                               "Spendpol key (sp_key_...) instead; this "
                               "attempt is recorded as a shadow-AI alert");
}


/* ---- the answer's scores ------------------------------------------- */


/* the answer is scored when it is a success of a governed request */
ngx_int_t
ngx_http_spendpol_halluc_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    if (ctx->request == NULL || ctx->ungoverned || ctx->halluc
        || r->headers_out.status < 200 || r->headers_out.status >= 300
        || !(ctx->endpoint->flags & SP_ENDPOINT_CHAT))
    {
        return NGX_OK;
    }

    ctx->halluc = ngx_palloc(r->pool, sizeof(sp_halluc_answer_t));
    if (ctx->halluc == NULL) {
        return NGX_ERROR;
    }

    sp_halluc_answer_init(ctx->halluc);

    return NGX_OK;
}


/* one SSE event of the answer (ctx->sse holds it) */
void
ngx_http_spendpol_halluc_event(ngx_http_spendpol_ctx_t *ctx)
{
    if (ctx->halluc && !ctx->sse.truncated) {
        (void) sp_halluc_answer_event(ctx->provider, ctx->sse.data,
                                      ctx->sse.data_len, ctx->halluc);
    }
}


/* a whole JSON answer, as the provider sent it */
void
ngx_http_spendpol_halluc_json(ngx_http_spendpol_ctx_t *ctx, u_char *data,
    size_t len)
{
    if (ctx->halluc) {
        (void) sp_halluc_answer_json(ctx->provider, (char *) data, len,
                                     ctx->halluc);
    }
}


/* the answer is complete: its score */
void
ngx_http_spendpol_halluc_end(ngx_http_spendpol_ctx_t *ctx)
{
    sp_halluc_result_t  res;

    if (ctx->halluc == NULL || ctx->halluc_scored) {
        return;
    }

    sp_halluc_score(ctx->provider, (char *) ctx->body.data, ctx->body.len,
                    ctx->halluc, &res);

    ctx->halluc_pct = res.pct;
    ctx->halluc_scored = 1;
}


ngx_int_t
ngx_http_spendpol_halluc_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers)
{
    u_char  buf[NGX_INT_T_LEN], *p;

    if (!ctx->halluc_scored) {
        return NGX_OK;
    }

    p = ngx_sprintf(buf, "%i", ctx->halluc_pct);

    return ngx_http_spendpol_add_header(r, headers,
                                        "X-Spendpol-Hallucination-Score",
                                        buf, p - buf);
}


/*
 * A JSON answer scanned for the PII types policies asked to scan
 * answers for (scan_responses): the types a policy redacts are
 * redacted in place of the held body, the others raise the warning
 * pii_in_response. NGX_OK; NGX_ERROR when out of memory.
 */
ngx_int_t
ngx_http_spendpol_scan_answer(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char           *out;
    size_t            n;
    uint32_t          redact;
    sp_pii_result_t  *res;

    if (ctx->response_mask == 0 || ctx->buffer_len == 0
        || r->headers_out.status < 200 || r->headers_out.status >= 300)
    {
        return NGX_OK;
    }

    res = ngx_palloc(r->pool, sizeof(sp_pii_result_t));
    if (res == NULL) {
        return NGX_ERROR;
    }

    if (sp_pii_scan_body(ctx->provider, 1, (char *) ctx->buffer,
                         ctx->buffer_len, ctx->response_mask, res)
        != SP_OK || res->total == 0)
    {
        return NGX_OK;
    }

    ctx->response_pii = 1;

    redact = ctx->policy->response_redact & res->types;

    if (redact == 0) {
        return NGX_OK;
    }

    n = ctx->buffer_len + 32 * res->nentities;

    out = ngx_pnalloc(r->pool, n);
    if (out == NULL) {
        return NGX_ERROR;
    }

    n = sp_pii_redact((char *) ctx->buffer, ctx->buffer_len, res, redact,
                      (char *) out, n);

    if (n) {
        ctx->buffer = out;
        ctx->buffer_len = n;
        ctx->buffer_size = n;
    }

    return NGX_OK;
}


/*
 * One complete event of a streamed answer (ctx->event, its data in
 * ctx->sse) on its way out, scanned like a JSON answer: with nothing to
 * redact its bytes go on as they came; else it is written anew, "event:"
 * and one "data:" line of the redacted data. Nothing is held back beyond
 * the event itself. An entity split across two events is not redacted;
 * the whole answer's text is scanned at the end for the warning
 * (ngx_http_spendpol_scan_answer_text()).
 */
ngx_int_t
ngx_http_spendpol_scan_event(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t **ob, ngx_chain_t ***last)
{
    size_t            n, room;
    uint32_t          redact;
    ngx_buf_t        *b;
    sp_pii_result_t  *res;

    res = ctx->answer_pii;

    if (res == NULL) {
        res = ngx_palloc(r->pool, sizeof(sp_pii_result_t));
        if (res == NULL) {
            return NGX_ERROR;
        }

        ctx->answer_pii = res;
    }

    redact = 0;

    if (ctx->sse.data_len
        && sp_pii_scan_body(ctx->provider, 1, ctx->sse.data,
                            ctx->sse.data_len, ctx->response_mask, res)
           == SP_OK
        && res->total)
    {
        ctx->response_pii = 1;
        redact = ctx->policy->response_redact & res->types;
    }

    if (redact == 0) {
        if (ngx_http_spendpol_out_room(r, ctx, ob, last, ctx->event_len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        (*ob)->last = ngx_cpymem((*ob)->last, ctx->event, ctx->event_len);

        return NGX_OK;
    }

    room = sizeof("event: \ndata: \n\n") + ctx->sse.event_len
           + ctx->sse.data_len + 32 * res->nentities;

    if (ngx_http_spendpol_out_room(r, ctx, ob, last, room) != NGX_OK) {
        return NGX_ERROR;
    }

    b = *ob;

    if (ctx->sse.event_len) {
        b->last = ngx_cpymem(b->last, "event: ", 7);
        b->last = ngx_cpymem(b->last, ctx->sse.event, ctx->sse.event_len);
        *b->last++ = '\n';
    }

    b->last = ngx_cpymem(b->last, "data: ", 6);

    /* the redacted data is JSON without a newline: one data line */
    n = sp_pii_redact(ctx->sse.data, ctx->sse.data_len, res, redact,
                      (char *) b->last, b->end - b->last);

    if (n == 0) {
        return NGX_ERROR;
    }

    b->last += n;
    b->last = ngx_cpymem(b->last, "\n\n", 2);

    return NGX_OK;
}


/* a streamed answer's whole text, for what no single event showed */
void
ngx_http_spendpol_scan_answer_text(ngx_http_spendpol_ctx_t *ctx)
{
    sp_pii_result_t  *res;

    res = ctx->answer_pii;

    if (ctx->response_mask == 0 || ctx->halluc == NULL || res == NULL
        || ctx->response_pii)
    {
        return;
    }

    sp_pii_scan_text(ctx->halluc->text, ctx->halluc->len, ctx->response_mask,
                     res);

    if (res->total) {
        ctx->response_pii = 1;
    }
}
