
/*
 * Copyright (C) Spendpol
 *
 * The response path: a JSON body is held (bounded, in memory) until it is
 * complete, so its cost goes in the headers; an SSE stream passes through
 * as it arrives, usage parsed on the side, cost in trailers; a JSON body
 * too large to hold passes through, its usage scanned as it passes (cost
 * in the journal only); nginx's own error pages become JSON errors in the
 * provider's shape.
 *
 * A client that hangs up after its request reached the provider does not
 * end the metering: the answer is still read (an "orphan", bounded by
 * spendpol_orphan_timeout and spendpol_orphan_max_size), nothing more is
 * written, and its real usage is settled, or an estimate when the answer
 * never completes.
 */


#include <sp_scan.h>

#include "ngx_http_spendpol_module.h"


static ngx_int_t ngx_http_spendpol_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_spendpol_pass_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_spendpol_replace_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_start_stream(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_buffer_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_spendpol_stream_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_spendpol_send_replacement(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_send_buffered(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t last);
static ngx_int_t ngx_http_spendpol_send_data(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *data, size_t len, ngx_uint_t last);
static void ngx_http_spendpol_sse_usage(ngx_http_spendpol_ctx_t *ctx,
    u_char *p, u_char *last);
static ngx_int_t ngx_http_spendpol_stream_end(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_result_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers, ngx_uint_t final);
static ngx_int_t ngx_http_spendpol_buffer_append(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t *b);
static ngx_int_t ngx_http_spendpol_scan_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_pass_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_spendpol_orphan(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_orphan_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_spendpol_orphan_timeout(ngx_event_t *ev);
static void ngx_http_spendpol_orphan_cleanup(void *data);
static void ngx_http_spendpol_check_client(ngx_http_request_t *r);
static ngx_int_t ngx_http_spendpol_translate_body(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx);
static ngx_int_t ngx_http_spendpol_translate_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in);
static ngx_buf_t *ngx_http_spendpol_out_buf(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t ***last, size_t size);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


/*
 * The gateway's own time excludes the filters after ours (the socket
 * writes plain nginx would do as well): they are timed separately.
 */
static ngx_int_t
ngx_http_spendpol_next_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    uint64_t   started;
    ngx_int_t  rc;

    started = ngx_http_spendpol_now_us();
    rc = ngx_http_next_header_filter(r);
    ctx->downstream_us += ngx_http_spendpol_now_us() - started;

    return rc;
}


/*
 * The headers of an answer passed on as it comes. A client gone by now
 * makes the request an orphan: nobody to send to, but the body is still
 * read and metered.
 */
static ngx_int_t
ngx_http_spendpol_pass_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->client_gone) {
        return NGX_OK;
    }

    rc = ngx_http_spendpol_next_header(r, ctx);

    if (rc == NGX_ERROR && r->connection->error
        && ngx_http_spendpol_orphan(r, ctx) == NGX_OK)
    {
        return NGX_OK;
    }

    return rc;
}


static ngx_int_t
ngx_http_spendpol_next_body(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    uint64_t   started;
    ngx_int_t  rc;

    started = ngx_http_spendpol_now_us();
    rc = ngx_http_next_body_filter(r, in);
    ctx->downstream_us += ngx_http_spendpol_now_us() - started;

    return rc;
}


ngx_int_t
ngx_http_spendpol_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_spendpol_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_spendpol_body_filter;

    return ngx_http_spendpol_request_body_init(cf);
}


static ngx_int_t
ngx_http_spendpol_header_filter(ngx_http_request_t *r)
{
    uint64_t                       started, downstream;
    ngx_int_t                      rc;
    ngx_str_t                     *type;
    ngx_http_spendpol_ctx_t       *ctx;
    ngx_http_spendpol_loc_conf_t  *slcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx == NULL || r != r->main || ctx->replaced) {
        return ngx_http_next_header_filter(r);
    }

    started = ngx_http_spendpol_now_us();

    if (ctx->cache_state != NGX_HTTP_SPENDPOL_CACHE_HIT
        && (!ctx->proxied || r->upstream == NULL
            || r->upstream->headers_in.status_n == 0))
    {
        /* nginx's own error page: 502, 504, a late 413, ... */
        downstream = ctx->downstream_us;
        rc = ngx_http_spendpol_replace_header(r, ctx);
        ctx->gateway_us += ngx_http_spendpol_now_us() - started
                           - (ctx->downstream_us - downstream);
        return rc;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);
    type = &r->headers_out.content_type;

    if (ctx->targets) {
        ngx_http_spendpol_fallback_answered(r, ctx, r->headers_out.status);

        if (ctx->translate && !r->header_only
            && r->headers_out.content_length_n
               > (off_t) slcf->max_response_size)
        {
            /* a translation needs the whole answer: none comes raw */
            r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
            r->headers_out.status_line.len = 0;

            rc = ngx_http_spendpol_replace_header(r, ctx);
            ctx->gateway_us += ngx_http_spendpol_now_us() - started;
            return rc;
        }
    }

    if (type->len >= sizeof("text/event-stream") - 1
        && ngx_strncasecmp(type->data, (u_char *) "text/event-stream",
                           sizeof("text/event-stream") - 1) == 0)
    {
        rc = ngx_http_spendpol_start_stream(r, ctx);

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->gateway_us += ngx_http_spendpol_now_us() - started;

        return ngx_http_spendpol_pass_header(r, ctx);
    }

    if (r->header_only
        || r->headers_out.content_length_n > (off_t) slcf->max_response_size)
    {
        ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_PASS;

        if (ngx_http_spendpol_add_request_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        if (!r->header_only && ngx_http_spendpol_scan_start(r, ctx) != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->gateway_us += ngx_http_spendpol_now_us() - started;

        return ngx_http_spendpol_pass_header(r, ctx);
    }

    /* hold the headers until the body is in: cost goes in them */
    ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_BUFFER;
    ctx->buffer_size = r->headers_out.content_length_n > 0
                       ? (size_t) r->headers_out.content_length_n : 16384;

    ctx->buffer = ngx_pnalloc(r->pool, ctx->buffer_size);
    if (ctx->buffer == NULL) {
        return NGX_ERROR;
    }

    r->filter_need_in_memory = 1;
    r->allow_ranges = 0;

    ctx->gateway_us += ngx_http_spendpol_now_us() - started;

    return NGX_OK;
}


static ngx_int_t
ngx_http_spendpol_replace_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_uint_t   status;
    const char  *type, *code, *message;

    status = r->headers_out.status;

    switch (status) {

    case NGX_HTTP_BAD_GATEWAY:
        code = "upstream_unreachable";
        message = "the provider could not be reached or answered with an "
                  "invalid response";
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        /* a routed request whose every target refused (the last one's
           answer went where nginx's retries go) */
        code = "upstream_rate_limited";
        message = "every provider this request may go to refused it (429)";
        break;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        code = "upstream_timeout";
        message = "the provider did not answer in time";
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        code = "request_too_large";
        message = "request body is larger than spendpol_max_body_size";
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        code = "request_timeout";
        message = "the request body did not arrive in time";
        break;

    case NGX_HTTP_BAD_REQUEST:
        code = "bad_request";
        message = "the request could not be read (malformed HTTP)";
        break;

    default:
        code = status >= 500 ? "gateway_error" : "invalid_request";
        message = status >= 500 ? "the gateway failed to process the "
                                  "request"
                                : "the request was refused";
        break;
    }

    type = status >= 500 ? "api_error" : "invalid_request_error";

    ctx->error_code = code;
    ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_REPLACE;

    if (ngx_http_spendpol_error_json(r->pool, type, code, message,
                                     &ctx->replacement)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    r->headers_out.content_length_n = ctx->replacement.len;

    if (ngx_http_spendpol_add_request_headers(r, ctx) != NGX_OK
        || ngx_http_spendpol_latency_header(r, ctx, &r->headers_out.headers)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_spendpol_next_header(r, ctx);
}


static ngx_int_t
ngx_http_spendpol_start_stream(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char      *data, id[64];
    const char  *warnings;

    ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_STREAM;

    data = ngx_pnalloc(r->pool, NGX_HTTP_SPENDPOL_SSE_EVENT_MAX);
    if (data == NULL) {
        return NGX_ERROR;
    }

    sp_sse_init(&ctx->sse, (char *) data, NGX_HTTP_SPENDPOL_SSE_EVENT_MAX);

    if (ctx->strip_usage || ctx->response_mask) {
        ctx->event = ngx_pnalloc(r->pool, NGX_HTTP_SPENDPOL_SSE_EVENT_MAX);
        if (ctx->event == NULL) {
            return NGX_ERROR;
        }
    }

    if (ctx->translate) {
        ctx->translate_stream = ngx_palloc(r->pool,
                                           sizeof(sp_translate_stream_t));
        if (ctx->translate_stream == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(id, "chatcmpl-%s%Z", ctx->audit_id);

        sp_translate_stream_init(ctx->translate_stream, ctx->provider,
                                 ctx->client_include_usage, (char *) id,
                                 ngx_time());

        /* the model the rule named, when the events name none (Cohere) */
        sp_field_copy(ctx->translate_stream->model,
                      sizeof(ctx->translate_stream->model),
                      (char *) ctx->targets[ctx->target].model.data,
                      ctx->targets[ctx->target].model.len);
    }

    /* the cost is known only at the end: it goes in trailers */
    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    r->expect_trailers = 1;

    if (ngx_http_spendpol_add_request_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_spendpol_halluc_start(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_spendpol_add_header(r, &r->headers_out.headers, "Trailer",
                                     (u_char *) NGX_HTTP_SPENDPOL_TRAILERS,
                                     sizeof(NGX_HTTP_SPENDPOL_TRAILERS) - 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the policies' warnings are known now; the trailer says them all */
    warnings = ngx_http_spendpol_policy_warnings(ctx);

    if (warnings[0]
        && ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                        "X-Spendpol-Policy-Warning",
                                        (u_char *) warnings,
                                        ngx_strlen(warnings)) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_spendpol_result_headers(r, ctx, &r->headers_out.headers,
                                            0);
}


static ngx_int_t
ngx_http_spendpol_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    uint64_t                  started, downstream;
    ngx_int_t                 rc;
    ngx_chain_t              *cl;
    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx == NULL || r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->finished) {
        /*
         * Our whole answer has gone on (a held body, a stream's end, a
         * replacement): what comes now is the writer flushing what the
         * socket did not take yet, or nginx's own page after ours.
         */
        for (cl = in; ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_REPLACE && cl;
             cl = cl->next)
        {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
        }

        return ngx_http_spendpol_next_body(r, ctx,
                           ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_REPLACE
                           ? NULL : in);
    }

    switch (ctx->mode) {

    case NGX_HTTP_SPENDPOL_RESPONSE_BUFFER:
    case NGX_HTTP_SPENDPOL_RESPONSE_STREAM:
    case NGX_HTTP_SPENDPOL_RESPONSE_PASS:

        if (ctx->client_gone) {
            return ngx_http_spendpol_orphan_filter(r, ctx, in);
        }

        downstream = ctx->downstream_us;
        started = ngx_http_spendpol_now_us();

        if (ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_BUFFER) {
            rc = ngx_http_spendpol_buffer_filter(r, ctx, in);

        } else if (ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_STREAM) {
            rc = ngx_http_spendpol_stream_filter(r, ctx, in);

        } else {
            rc = ngx_http_spendpol_pass_filter(r, ctx, in);
        }

        ctx->gateway_us += ngx_http_spendpol_now_us() - started
                           - (ctx->downstream_us - downstream);

        if (rc == NGX_ERROR && r->connection->error && !ctx->client_gone
            && ngx_http_spendpol_orphan(r, ctx) == NGX_OK)
        {
            /*
             * The client went away as we wrote to it: what we were given
             * has been metered and goes nowhere; the rest is still read.
             * (An orphan that began inside the call has had its say.)
             */
            for (cl = in; cl; cl = cl->next) {
                cl->buf->pos = cl->buf->last;
                cl->buf->file_pos = cl->buf->file_last;
            }

            return NGX_OK;
        }

        return rc;

    case NGX_HTTP_SPENDPOL_RESPONSE_REPLACE:

        /* nginx's HTML goes nowhere; our JSON goes once */
        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
        }

        return ngx_http_spendpol_send_replacement(r, ctx);

    default:
        return ngx_http_next_body_filter(r, in);
    }
}


static ngx_int_t
ngx_http_spendpol_send_replacement(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    if (ctx->finished) {
        return NGX_OK;
    }

    ctx->finished = 1;

    return ngx_http_spendpol_send_data(r, ctx, ctx->replacement.data,
                                       ctx->replacement.len, 1);
}


static ngx_int_t
ngx_http_spendpol_buffer_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t     rc;
    ngx_uint_t    last;
    ngx_chain_t  *cl;

    last = 0;

    for (cl = in; cl; cl = cl->next) {

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            last = 1;
        }

        rc = ngx_http_spendpol_buffer_append(r, ctx, cl->buf);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED && ctx->translate) {
            /* a translation needs the whole answer: none comes raw */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: answer to translate over "
                          "spendpol_max_response_size");

            r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
            r->headers_out.status_line.len = 0;
            ctx->buffer_len = 0;

            rc = ngx_http_spendpol_replace_header(r, ctx);

            if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
                return rc;
            }

            return ngx_http_spendpol_send_replacement(r, ctx);
        }

        if (rc == NGX_DECLINED) {
            /*
             * Too large to hold: what we have goes out without a cost
             * header and the rest passes through, its usage scanned on
             * the way; the journal still gets the cost.
             */
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "spendpol: response over "
                          "spendpol_max_response_size, passed through and "
                          "metered as it passes");

            ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_PASS;

            if (ngx_http_spendpol_scan_start(r, ctx) != NGX_OK) {
                return NGX_ERROR;
            }

            rc = ngx_http_spendpol_send_buffered(r, ctx, 0);

            if (rc == NGX_ERROR && r->connection->error
                && ngx_http_spendpol_orphan(r, ctx) == NGX_OK)
            {
                return ngx_http_spendpol_orphan_filter(r, ctx, cl);
            }

            if (rc == NGX_ERROR || rc > NGX_OK) {
                return rc;
            }

            return ngx_http_spendpol_pass_filter(r, ctx, cl);
        }
    }

    if (!last) {

        if (r->upstream == NULL || r->upstream->peer.connection != NULL) {
            return NGX_OK;
        }

        /*
         * The provider went away mid-body (the proxy closed its
         * connection and flushes without a last buffer). Nothing has
         * reached the client yet: it gets a JSON 502, not a reset.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "spendpol: provider response cut after %uz bytes",
                      ctx->buffer_len);

        r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
        r->headers_out.status_line.len = 0;
        ctx->buffer_len = 0;

        rc = ngx_http_spendpol_replace_header(r, ctx);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        return ngx_http_spendpol_send_replacement(r, ctx);
    }

    if (r->headers_out.status >= 200 && r->headers_out.status < 300) {
        (void) sp_usage_from_json(ctx->provider, (char *) ctx->buffer,
                                  ctx->buffer_len, &ctx->response);

        if (ngx_http_spendpol_halluc_start(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_spendpol_halluc_json(ctx, ctx->buffer, ctx->buffer_len);
        ngx_http_spendpol_halluc_end(ctx);
    }

    ngx_http_spendpol_settle(r, ctx);

    /* what policies redact in answers is not stored either */
    if (ngx_http_spendpol_scan_answer(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_spendpol_cache_store(r, ctx, ctx->buffer, ctx->buffer_len);

    if (ctx->translate) {
        rc = ngx_http_spendpol_translate_body(r, ctx);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            /* a JSON 502: the client never gets a shape it did not ask for */
            r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
            r->headers_out.status_line.len = 0;
            ctx->buffer_len = 0;

            rc = ngx_http_spendpol_replace_header(r, ctx);

            if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
                return rc;
            }

            return ngx_http_spendpol_send_replacement(r, ctx);
        }
    }

    return ngx_http_spendpol_send_buffered(r, ctx, 1);
}


/* sends the held headers and body; last: the body is complete */
static ngx_int_t
ngx_http_spendpol_send_buffered(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t last)
{
    ngx_int_t  rc;

    if (ngx_http_spendpol_add_request_headers(r, ctx) != NGX_OK
        || ngx_http_spendpol_result_headers(r, ctx, &r->headers_out.headers,
                                            last)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (last) {
        r->headers_out.content_length_n = ctx->buffer_len;

        if (r->headers_out.content_length) {
            r->headers_out.content_length->hash = 0;
            r->headers_out.content_length = NULL;
        }
    }

    ctx->headers_sent = 1;

    rc = ngx_http_spendpol_next_header(r, ctx);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (ctx->buffer_len == 0 && !last) {
        return NGX_OK;
    }

    ctx->finished = last;

    return ngx_http_spendpol_send_data(r, ctx, ctx->buffer, ctx->buffer_len,
                                       last);
}


/*
 * Sends data on as one buffer. An empty one is a special buffer (only
 * its flags), as the write filter wants; what is not the end is flushed.
 */
static ngx_int_t
ngx_http_spendpol_send_data(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *data, size_t len, ngx_uint_t last)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = len ? 1 : 0;
    b->last_buf = last;
    b->last_in_chain = last;

    if (!last) {
        b->flush = 1;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_spendpol_next_body(r, ctx, &out);
}


/* the usage in the SSE events of data, when its stream is only read */
static void
ngx_http_spendpol_sse_usage(ngx_http_spendpol_ctx_t *ctx, u_char *p,
    u_char *last)
{
    int     done;
    size_t  n;

    for ( /* void */ ; p < last; p += n) {
        n = sp_sse_feed(&ctx->sse, (char *) p, last - p, &done);

        if (done && !ctx->sse.truncated) {
            (void) sp_usage_from_event(ctx->provider, ctx->sse.event,
                                       ctx->sse.data, ctx->sse.data_len,
                                       &ctx->response);
            ngx_http_spendpol_halluc_event(ctx);
        }
    }
}


/* the end of a stream: settled, the cost sent as trailers */
static ngx_int_t
ngx_http_spendpol_stream_end(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_http_spendpol_settle(r, ctx);
    ngx_http_spendpol_halluc_end(ctx);
    ngx_http_spendpol_scan_answer_text(ctx);

    ngx_http_spendpol_cache_store(r, ctx, ctx->cache_capture,
                                  ctx->cache_captured);

    return ngx_http_spendpol_result_headers(r, ctx, &r->headers_out.trailers,
                                            1);
}


static ngx_int_t
ngx_http_spendpol_stream_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    u_char       *p, *last;
    size_t        n, needed;
    ngx_int_t     rc;
    ngx_buf_t    *b, *ob;
    ngx_uint_t    last_buf, flush;
    ngx_chain_t  *cl, *out, **ll;
    int           done, usage_only;

    last_buf = 0;
    flush = 0;

    if (ctx->translate_stream) {
        return ngx_http_spendpol_translate_filter(r, ctx, in);
    }

    if (ctx->cache_store
        && ngx_http_spendpol_cache_capture(r, ctx, in) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ctx->strip_usage && ctx->response_mask == 0) {

        for (cl = in; cl; cl = cl->next) {
            b = cl->buf;

            if (b->last_buf) {
                last_buf = 1;
            }

            if (ngx_buf_in_memory(b)) {
                ngx_http_spendpol_sse_usage(ctx, b->pos, b->last);
            }
        }

        if (last_buf) {
            if (ngx_http_spendpol_stream_end(r, ctx) != NGX_OK) {
                return NGX_ERROR;
            }

            ctx->finished = 1;
        }

        return ngx_http_spendpol_next_body(r, ctx, in);
    }

    /*
     * We asked the provider for usage the client did not ask for, or a
     * policy scans the answer: pass complete events on (each scanned, a
     * redacted one written anew), except the one that carries only that
     * usage.
     * Event bytes are copied (the upstream buffer is reused as soon as we
     * return), into output buffers that are recycled through free/busy.
     */
    needed = ctx->event_len;

    for (cl = in; cl; cl = cl->next) {
        needed += ngx_buf_in_memory(cl->buf) ? ngx_buf_size(cl->buf) : 0;
    }

    ob = NULL;
    out = NULL;
    ll = &out;

    if (needed) {
        ob = ngx_http_spendpol_out_buf(r, ctx, &ll, needed);
        if (ob == NULL) {
            return NGX_ERROR;
        }
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last_buf = 1;
        }

        if (b->flush) {
            flush = 1;
        }

        if (!ngx_buf_in_memory(b)) {
            continue;
        }

        last = b->last;

        for (p = b->pos; p < last; p += n) {
            n = sp_sse_feed(&ctx->sse, (char *) p, last - p, &done);

            if (ctx->event_len + n <= NGX_HTTP_SPENDPOL_SSE_EVENT_MAX) {
                ngx_memcpy(ctx->event + ctx->event_len, p, n);
                ctx->event_len += n;

            } else {
                /* an event too large to hold passes on unexamined */
                if (ngx_http_spendpol_out_room(r, ctx, &ob, &ll,
                                               ctx->event_len + n)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ob->last = ngx_cpymem(ob->last, ctx->event, ctx->event_len);
                ob->last = ngx_cpymem(ob->last, p, n);
                ctx->event_len = 0;
            }

            if (!done) {
                continue;
            }

            usage_only = 0;

            if (!ctx->sse.truncated) {
                usage_only = sp_usage_from_event(ctx->provider,
                                                 ctx->sse.event,
                                                 ctx->sse.data,
                                                 ctx->sse.data_len,
                                                 &ctx->response);
                ngx_http_spendpol_halluc_event(ctx);
            }

            if (usage_only) {
                ctx->event_dropped++;

            } else if (ctx->response_mask && !ctx->sse.truncated) {
                if (ngx_http_spendpol_scan_event(r, ctx, &ob, &ll) != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else {
                if (ngx_http_spendpol_out_room(r, ctx, &ob, &ll,
                                               ctx->event_len)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ob->last = ngx_cpymem(ob->last, ctx->event, ctx->event_len);
            }

            ctx->event_len = 0;
        }

        b->pos = last;
    }

    if (last_buf) {
        /* an unfinished event at the end still belongs to the client */
        if (ctx->event_len) {
            if (ngx_http_spendpol_out_room(r, ctx, &ob, &ll, ctx->event_len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ob->last = ngx_cpymem(ob->last, ctx->event, ctx->event_len);
            ctx->event_len = 0;
        }

        if (ngx_http_spendpol_stream_end(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ob && ob->last == ob->pos) {

        if (!last_buf && !flush) {
            /* nothing complete yet: the buffer goes back unused */
            out->next = ctx->free;
            ctx->free = out;
            return NGX_OK;
        }

        /* no data, only the flag: a special buffer */
        ob->memory = 0;
    }

    if (ob == NULL && (last_buf || flush)) {
        ob = ngx_http_spendpol_out_buf(r, ctx, &ll, 0);
        if (ob == NULL) {
            return NGX_ERROR;
        }

        /* no data, only the flag: a special buffer */
        ob->memory = 0;
    }

    if (ob) {
        ob->last_buf = last_buf;
        ob->last_in_chain = last_buf;
        ob->flush = flush;
    }

    if (out == NULL) {
        return NGX_OK;
    }

    ctx->finished = last_buf;

    rc = ngx_http_spendpol_next_body(r, ctx, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_spendpol_module);

    return rc;
}


/*
 * Appends a buffer's bytes to the held body. NGX_DECLINED: they do not
 * fit in spendpol_max_response_size (nothing is taken).
 */
static ngx_int_t
ngx_http_spendpol_buffer_append(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t *b)
{
    u_char                        *grown;
    size_t                         size, need;
    ngx_http_spendpol_loc_conf_t  *slcf;

    if (!ngx_buf_in_memory(b)) {
        return NGX_OK;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    size = b->last - b->pos;
    need = ctx->buffer_len + size;

    if (need > slcf->max_response_size) {
        return NGX_DECLINED;
    }

    if (need > ctx->buffer_size) {
        size = ngx_max(need, ctx->buffer_size * 2);
        size = ngx_min(size, slcf->max_response_size);

        grown = ngx_pnalloc(r->pool, size);
        if (grown == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(grown, ctx->buffer, ctx->buffer_len);
        ngx_pfree(r->pool, ctx->buffer);

        ctx->buffer = grown;
        ctx->buffer_size = size;
        size = b->last - b->pos;
    }

    ngx_memcpy(ctx->buffer + ctx->buffer_len, b->pos, size);
    ctx->buffer_len += size;

    b->pos = b->last;

    return NGX_OK;
}


/*
 * A body that will not be held: its usage is scanned as it passes, from
 * what is held so far on. Only a successful answer that may be JSON costs
 * anything; the rest passes unexamined.
 */
static ngx_int_t
ngx_http_spendpol_scan_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_str_t  *type;

    if (ctx->scan || !ctx->proxied || r->upstream == NULL
        || r->upstream->headers_in.status_n < 200
        || r->upstream->headers_in.status_n >= 300)
    {
        return NGX_OK;
    }

    type = &r->headers_out.content_type;

    if (type->len
        && ngx_strlcasestrn(type->data, type->data + type->len,
                            (u_char *) "json", sizeof("json") - 2)
           == NULL)
    {
        return NGX_OK;
    }

    ctx->scan = ngx_palloc(r->pool, sizeof(sp_scan_t));
    if (ctx->scan == NULL) {
        return NGX_ERROR;
    }

    sp_scan_init(ctx->scan);
    sp_scan_feed(ctx->scan, (char *) ctx->buffer, ctx->buffer_len);

    return NGX_OK;
}


/* PASS: on to the client as it comes, a JSON body's usage scanned */
static ngx_int_t
ngx_http_spendpol_pass_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_uint_t    last;
    ngx_chain_t  *cl;

    last = 0;

    for (cl = in; cl; cl = cl->next) {

        if (cl->buf->last_buf) {
            last = 1;
        }

        if (ctx->scan && ngx_buf_in_memory(cl->buf)) {
            sp_scan_feed(ctx->scan, (char *) cl->buf->pos,
                         cl->buf->last - cl->buf->pos);
        }
    }

    if (last) {
        /* the headers are gone: the cost is in the journal only */
        ngx_http_spendpol_settle(r, ctx);
    }

    return ngx_http_spendpol_next_body(r, ctx, in);
}


/*
 * The client has gone. When its request has reached the provider, the
 * provider bills the answer: it is read to its end (or to a bound), and
 * goes nowhere. NGX_DECLINED: nothing to wait for, end as nginx would.
 */
static ngx_int_t
ngx_http_spendpol_orphan(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    ngx_pool_cleanup_t            *cln;
    ngx_http_spendpol_loc_conf_t  *slcf;

    if (ctx->client_gone) {
        return NGX_OK;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    if (slcf->orphan_timeout == 0
        || !ctx->proxied
        || ctx->cost_done
        || ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_REPLACE
        || r->upstream == NULL
        || r->upstream->peer.connection == NULL
        || !r->upstream->request_sent)
    {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_spendpol_orphan_cleanup;
    cln->data = ctx;

    ctx->client_gone = 1;

    ctx->orphan_timer.handler = ngx_http_spendpol_orphan_timeout;
    ctx->orphan_timer.data = r;
    ctx->orphan_timer.log = r->connection->log;

    ngx_add_timer(&ctx->orphan_timer, slcf->orphan_timeout);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "spendpol: client closed the connection, the provider's "
                  "answer is read to meter it");

    return NGX_OK;
}


/* what reaches the body filter once the client has gone: metered only */
static ngx_int_t
ngx_http_spendpol_orphan_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_uint_t                     last;
    ngx_chain_t                   *cl;
    ngx_http_spendpol_loc_conf_t  *slcf;

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (!ngx_buf_in_memory(b)) {
            continue;
        }

        ctx->orphan_bytes += b->last - b->pos;

        switch (ctx->mode) {

        case NGX_HTTP_SPENDPOL_RESPONSE_BUFFER:
            rc = ngx_http_spendpol_buffer_append(r, ctx, b);

            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (rc == NGX_OK) {
                break;
            }

            ctx->mode = NGX_HTTP_SPENDPOL_RESPONSE_PASS;

            if (ngx_http_spendpol_scan_start(r, ctx) != NGX_OK) {
                return NGX_ERROR;
            }

            /* fall through */

        case NGX_HTTP_SPENDPOL_RESPONSE_PASS:
            if (ctx->scan) {
                sp_scan_feed(ctx->scan, (char *) b->pos, b->last - b->pos);
            }

            break;

        default: /* STREAM */
            ngx_http_spendpol_sse_usage(ctx, b->pos, b->last);
            break;
        }

        b->pos = b->last;
        b->file_pos = b->file_last;
    }

    if (last) {
        if (ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_BUFFER
            && r->headers_out.status >= 200 && r->headers_out.status < 300)
        {
            (void) sp_usage_from_json(ctx->provider, (char *) ctx->buffer,
                                      ctx->buffer_len, &ctx->response);
        }

        ngx_http_spendpol_settle(r, ctx);

        return NGX_OK;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_spendpol_module);

    if (ctx->orphan_bytes > (off_t) slcf->orphan_max_size) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "spendpol: %O bytes of the provider's answer read "
                      "since the client left, over spendpol_orphan_max_size;"
                      " billed an estimate", ctx->orphan_bytes);

        ctx->orphan_cut = 1;

        /* the proxy closes the connection: nothing more is read */
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_spendpol_orphan_timeout(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_spendpol_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    ngx_log_error(NGX_LOG_WARN, c->log, 0,
                  "spendpol: the provider's answer did not end within "
                  "spendpol_orphan_timeout after the client left; billed an "
                  "estimate");

    ctx->orphan_cut = 1;

    ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_spendpol_orphan_cleanup(void *data)
{
    ngx_http_spendpol_ctx_t  *ctx = data;

    if (ctx->orphan_timer.timer_set) {
        ngx_del_timer(&ctx->orphan_timer);
    }
}


/*
 * From the proxy's start on, a client that closes its connection is
 * noticed here rather than by the proxy (proxy_ignore_client_abort is on
 * in our locations): before the request was sent it ends the request, as
 * nginx would; after, the request becomes an orphan.
 */
void
ngx_http_spendpol_watch_client(ngx_http_request_t *r)
{
    r->read_event_handler = ngx_http_spendpol_check_client;

    /* a close that arrived earlier has been reported already */
    if (r->connection->read->ready) {
        ngx_post_event(r->connection->read, &ngx_posted_events);
    }
}


/* ngx_http_upstream_check_broken_connection(), for a read event */
static void
ngx_http_spendpol_check_client(ngx_http_request_t *r)
{
    int                       n;
    char                      buf[1];
    ngx_err_t                 err;
    ngx_int_t                 rc;
    ngx_event_t              *ev;
    ngx_connection_t         *c;
    ngx_http_spendpol_ctx_t  *ctx;

    c = r->connection;
    ev = c->read;

    if (c->error) {
        goto gone;
    }

#if (NGX_HTTP_V2)
    if (r->stream) {
        return;
    }
#endif

#if (NGX_HAVE_EPOLLRDHUP)

    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup) {
        socklen_t  len;

        if (!ev->pending_eof) {
            return;
        }

        ev->eof = 1;
        c->error = 1;

        err = 0;
        len = sizeof(ngx_err_t);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ev->error = 1;
        }

        goto gone;
    }

#endif

    n = recv(c->fd, buf, 1, MSG_PEEK);

    err = ngx_socket_errno;

    if ((ngx_event_flags & NGX_USE_LEVEL_EVENT) && ev->active) {
        if (ngx_del_event(ev, NGX_READ_EVENT, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (n > 0) {
        return;
    }

    if (n == -1) {
        if (err == NGX_EAGAIN) {
            return;
        }

        ev->error = 1;
    }

    ev->eof = 1;
    c->error = 1;

gone:

    if ((ngx_event_flags & NGX_USE_LEVEL_EVENT) && ev->active) {
        if (ngx_del_event(ev, NGX_READ_EVENT, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    rc = ctx ? ngx_http_spendpol_orphan(r, ctx) : NGX_DECLINED;

    if (rc == NGX_OK) {
        return;
    }

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "client prematurely closed connection, so upstream "
                  "connection is closed too");

    ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
}


size_t
ngx_http_spendpol_warnings(ngx_http_spendpol_ctx_t *ctx, u_char *buf,
    size_t len)
{
    u_char  *p, *last;

    p = buf;
    last = buf + len;

    if (ctx->usage_estimated) {
        p = ngx_slprintf(p, last, "usage_estimated");
    }

    if (ctx->unpriced) {
        p = ngx_slprintf(p, last, "%sunpriced_model",
                         p == buf ? "" : ",");
    }

    if (ctx->budget_warning) {
        p = ngx_slprintf(p, last, "%sbudget_exceeded",
                         p == buf ? "" : ",");
    }

    if (ctx->fallback_price) {
        p = ngx_slprintf(p, last, "%sfallback_price",
                         p == buf ? "" : ",");
    }

    if (ctx->response_pii) {
        p = ngx_slprintf(p, last, "%spii_in_response",
                         p == buf ? "" : ",");
    }

    if (ctx->policy && ctx->policy->warnings[0]) {
        p = ngx_slprintf(p, last, "%s%s", p == buf ? "" : ",",
                         ctx->policy->warnings);
    }

    return p - buf;
}


/*
 * A held answer of the target, metered, written back in OpenAI's form
 * (the client spoke OpenAI's chat completions). NGX_DECLINED: it cannot
 * be.
 */
static ngx_int_t
ngx_http_spendpol_translate_body(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char  *out, id[64];
    size_t   size, len;

    size = sp_translate_response_bound(ctx->buffer_len);

    out = ngx_pnalloc(r->pool, size);
    if (out == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(id, "chatcmpl-%s%Z", ctx->audit_id);

    /* the model the rule named, when the answer names none (Cohere) */
    if (sp_translate_response_model(ctx->provider,
                                    (int) r->headers_out.status,
                                    (char *) ctx->buffer, ctx->buffer_len,
                                    (char *) id, ngx_time(),
                                    (char *) ctx->targets[ctx->target]
                                                 .model.data,
                                    ngx_min(ctx->targets[ctx->target]
                                                .model.len,
                                            SP_FIELD_LEN - 1),
                                    (char *) out, size, &len)
        == SP_OK)
    {
        ctx->buffer = out;
        ctx->buffer_len = len;
        ctx->buffer_size = size;

        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.charset.len = 0;

        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "spendpol: the answer of %V could not be translated",
                  &ctx->provider_name);

    return NGX_DECLINED;
}


/*
 * A stream of the target, metered as it comes and written back as
 * OpenAI's chunks, event by event (nothing is held longer than an
 * event). Output buffers are recycled through free/busy.
 */
static ngx_int_t
ngx_http_spendpol_translate_filter(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t *in)
{
    int            done;
    u_char        *p, *last;
    size_t         n, need, written;
    ngx_int_t      rc;
    ngx_buf_t     *b, *ob;
    ngx_uint_t     last_buf, flush;
    ngx_chain_t   *cl, *out, **ll;

    last_buf = 0;
    flush = 0;
    out = NULL;
    ll = &out;
    ob = NULL;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last_buf = 1;
        }

        if (b->flush) {
            flush = 1;
        }

        if (!ngx_buf_in_memory(b)) {
            continue;
        }

        last = b->last;

        for (p = b->pos; p < last; p += n) {
            n = sp_sse_feed(&ctx->sse, (char *) p, last - p, &done);

            if (!done) {
                continue;
            }

            if (ctx->sse.truncated) {
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "spendpol: an event of %V's stream over %uz "
                              "bytes is not translated",
                              &ctx->provider_name,
                              (size_t) NGX_HTTP_SPENDPOL_SSE_EVENT_MAX);
                continue;
            }

            (void) sp_usage_from_event(ctx->provider, ctx->sse.event,
                                       ctx->sse.data, ctx->sse.data_len,
                                       &ctx->response);
            ngx_http_spendpol_halluc_event(ctx);

            need = sp_translate_stream_bound(ctx->sse.data_len);

            if (ngx_http_spendpol_out_room(r, ctx, &ob, &ll, need)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            written = sp_translate_stream_event(ctx->translate_stream,
                                                ctx->sse.event,
                                                ctx->sse.event_len,
                                                ctx->sse.data,
                                                ctx->sse.data_len,
                                                (char *) ob->last,
                                                ob->end - ob->last);

            if (written == (size_t) -1) {
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "spendpol: an event of %V's stream could not "
                              "be translated", &ctx->provider_name);
                continue;
            }

            ob->last += written;
        }

        b->pos = last;
    }

    if (last_buf) {
        need = sp_translate_stream_bound(0);

        if (ngx_http_spendpol_out_room(r, ctx, &ob, &ll, need) != NGX_OK) {
            return NGX_ERROR;
        }

        written = sp_translate_stream_end(ctx->translate_stream,
                                          (char *) ob->last,
                                          ob->end - ob->last);

        if (written != (size_t) -1) {
            ob->last += written;
        }

        if (ngx_http_spendpol_stream_end(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (out == NULL) {
        if (!last_buf && !flush) {
            return NGX_OK;
        }

        ob = ngx_http_spendpol_out_buf(r, ctx, &ll, 0);
        if (ob == NULL) {
            return NGX_ERROR;
        }
    }

    for (cl = out; cl; cl = cl->next) {
        if (cl->buf->last == cl->buf->pos) {
            /* no data, only flags: a special buffer */
            cl->buf->memory = 0;
        }

        if (cl->next == NULL) {
            cl->buf->last_buf = last_buf;
            cl->buf->last_in_chain = last_buf;
            cl->buf->flush = !last_buf;
        }
    }

    ctx->finished = last_buf;

    rc = ngx_http_spendpol_next_body(r, ctx, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_spendpol_module);

    return rc;
}


/*
 * Room for size more bytes in *ob: its own, else a larger storage for an
 * ob still empty (an empty buffer must not stay in the chain: the writer
 * refuses a zero-size buffer without flags), else a new buffer linked at
 * *last.
 */
ngx_int_t
ngx_http_spendpol_out_room(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_buf_t **ob, ngx_chain_t ***last,
    size_t size)
{
    size_t      n;
    ngx_buf_t  *b;

    b = *ob;

    if (b && (size_t) (b->end - b->last) >= size) {
        return NGX_OK;
    }

    if (b && b->last == b->pos) {
        n = ngx_max(size, NGX_HTTP_SPENDPOL_OUT_BUF_SIZE);

        b->start = ngx_palloc(r->pool, n);
        if (b->start == NULL) {
            return NGX_ERROR;
        }

        b->end = b->start + n;
        b->pos = b->start;
        b->last = b->start;

        return NGX_OK;
    }

    *ob = ngx_http_spendpol_out_buf(r, ctx, last, size);

    return *ob ? NGX_OK : NGX_ERROR;
}


/* an output buffer of at least size bytes, linked at *last */
static ngx_buf_t *
ngx_http_spendpol_out_buf(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_chain_t ***last, size_t size)
{
    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        return NULL;
    }

    b = cl->buf;

    if (size && (b->start == NULL || (size_t) (b->end - b->start) < size)) {
        n = ngx_max(size, NGX_HTTP_SPENDPOL_OUT_BUF_SIZE);

        b->start = ngx_palloc(r->pool, n);
        if (b->start == NULL) {
            return NULL;
        }

        b->end = b->start + n;
    }

    b->pos = b->start;
    b->last = b->start;
    b->memory = 1;
    b->tag = (ngx_buf_tag_t) &ngx_http_spendpol_module;
    b->flush = 0;
    b->last_buf = 0;
    b->last_in_chain = 0;

    cl->next = NULL;
    **last = cl;
    *last = &cl->next;

    return b;
}


/* cost, tokens, model and the gateway's own time */
static ngx_int_t
ngx_http_spendpol_result_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers, ngx_uint_t final)
{
    u_char      buf[SP_FIELD_LEN], *p;
    size_t      len;
    ngx_str_t   model;

    if (final) {
        len = sp_money_format(ctx->cost_nano, (char *) buf);

        if (ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Cost", buf,
                                         len) != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_sprintf(buf, "%L/%L", ctx->usage.input_tokens,
                        ctx->usage.output_tokens);

        if (ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Tokens", buf,
                                         p - buf) != NGX_OK)
        {
            return NGX_ERROR;
        }

        len = ngx_http_spendpol_warnings(ctx, buf, sizeof(buf));

        if (len
            && ngx_http_spendpol_add_header(r, headers,
                                            "X-Spendpol-Policy-Warning", buf,
                                            len) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_spendpol_halluc_header(r, ctx, headers) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (headers == &r->headers_out.trailers) {
        return NGX_OK;
    }

    model.data = (u_char *) (ctx->response.model[0] ? ctx->response.model
                             : ctx->request ? ctx->request->model : "");
    model.len = ngx_strlen(model.data);

    if (model.len
        && !sp_header_value_ok((char *) model.data, model.len))
    {
        /* the provider's bytes never go raw into a header: %XX them */
        p = ngx_pnalloc(r->pool, 3 * model.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        model.len = sp_header_value_escape((char *) model.data, model.len,
                                           (char *) p, 3 * model.len);
        model.data = p;
    }

    if (model.len
        && ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Model",
                                        model.data, model.len) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_spendpol_latency_header(r, ctx, headers);
}


/* X-Spendpol-Latency-Ms: the gateway's own time, on every answer */
ngx_int_t
ngx_http_spendpol_latency_header(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_list_t *headers)
{
    u_char    buf[NGX_INT64_LEN + 8], *p;
    uint64_t  us;

    us = ctx->gateway_us;

    p = ngx_sprintf(buf, "%uL.%03uL", us / 1000, us % 1000);

    return ngx_http_spendpol_add_header(r, headers, "X-Spendpol-Latency-Ms",
                                        buf, p - buf);
}
