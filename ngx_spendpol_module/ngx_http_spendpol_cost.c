
/*
 * Copyright (C) Spendpol
 *
 * Pricing: a response's usage, model and cost once it is complete (or cut
 * short), and the price lookup admission and settlement share.
 */


#include <sp_scan.h>

#include "ngx_http_spendpol_module.h"


/*
 * Usage, model and cost once the response is complete (or cut short):
 * reported usage when there is any, else an estimate from the text seen
 * for a successful response; never $0 for a 2xx with output.
 */
void
ngx_http_spendpol_settle(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    int64_t                         estimate;
    ngx_http_spendpol_main_conf_t  *smcf;
    const sp_snapshot_price_t      *price;

    if (ctx->cost_done) {
        return;
    }

    ctx->cost_done = 1;

    if (ctx->client_gone) {
        /* the client's view: it left before the answer was complete */
        r->headers_out.status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
        r->headers_out.status_line.len = 0;
    }

    if (ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT) {
        /* no provider was asked: no usage, no cost (saved, journaled) */
        return;
    }

    if (ctx->ungoverned
        || (ctx->endpoint && ctx->endpoint->meter == SP_METER_FREE))
    {
        /* not metered (a model list, a token count, an allowed endpoint) */
        return;
    }

    if (ctx->scan) {
        (void) sp_scan_result(ctx->scan, ctx->provider, &ctx->response);

    } else if (ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_BUFFER
               && ctx->client_gone && !ctx->response.done)
    {
        /* held, never completed: what arrived is the output's measure */
        ctx->response.output_bytes = ctx->buffer_len;
    }

    if (ctx->response.has_usage) {
        ctx->usage = ctx->response.usage;

        /* the journal never carries what controld's ingest refuses */
        sp_usage_normalize(&ctx->usage);

        if ((ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_STREAM
             && !ctx->response.done)
            || ctx->orphan_cut)
        {
            /*
             * Cut short: the usage reported so far (Anthropic's
             * message_start) undercounts what was delivered.
             */
            estimate = sp_tokens_estimate(ctx->response.output_bytes);

            if (estimate > ctx->usage.output_tokens) {
                ctx->usage.output_tokens = estimate;
                ctx->usage_estimated = 1;
            }
        }

    } else if (ctx->proxied && ctx->request
               && (ctx->orphan_cut
                   || (r->upstream
                       && r->upstream->headers_in.status_n >= 200
                       && r->upstream->headers_in.status_n < 300)))
    {
        /*
         * An orphan we gave up on may not have answered at all yet: the
         * provider has the request, the prompt is billed (exactly, when
         * its tokenizer is public).
         */
        ctx->usage.input_tokens = sp_request_prompt_estimate(ctx->request);
        ctx->usage.output_tokens = sp_tokens_estimate(
                                                  ctx->response.output_bytes);
        ctx->usage_estimated = 1;
    }

    if (ctx->usage.input_tokens == 0 && ctx->usage.output_tokens == 0) {
        return;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot_map == NULL) {
        ctx->unpriced = 1;
        return;
    }

    price = NULL;

    if (ctx->response.model[0]) {
        price = ngx_http_spendpol_price(r, ctx, ctx->response.model);
    }

    if (price == NULL && ctx->request) {
        price = ngx_http_spendpol_price(r, ctx, ctx->request->model);
    }

    if (price) {
        ctx->fallback_price = 0;

    } else if (!ctx->fallback_price) {
        ctx->unpriced = 1;
        return;
    }

    /* the organisation's fallback price, as reserved at admission */
    if (sp_cost_nano(price ? &price->price : &ctx->price, &ctx->usage,
                     &ctx->cost_nano)
        != SP_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: cost overflow, usage %L/%L tokens",
                      ctx->usage.input_tokens, ctx->usage.output_tokens);
        ctx->cost_nano = 0;
        ctx->unpriced = 1;
    }
}


/*
 * The price of a model by the one rule of libspendpol/sp_price.h (alias,
 * organisation, list, undated base model): the rule GET /pricing shows
 */
const sp_snapshot_price_t *
ngx_http_spendpol_price(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    const char *name)
{
    sp_str_t                        org, provider, model;
    sp_price_found_t                found;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot_map == NULL || name[0] == '\0') {
        return NULL;
    }

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    provider.data = (char *) ctx->provider_name.data;
    provider.len = ctx->provider_name.len;
    model.data = name;
    model.len = ngx_strlen(name);

    return sp_snapshot_resolve_price(&smcf->snapshot, org, provider, model,
                                     0, &found);
}
