
/*
 * Copyright (C) Spendpol
 *
 * Errors the gateway makes itself: JSON in the OpenAI shape,
 * {"error":{"type","code","message","param"}}, which every provider's SDK
 * turns into its typed error; the status decides whether an SDK retries
 * (only 429 and 5xx are). Every refusal goes through here.
 */


#include <jansson.h>

#include "ngx_http_spendpol_module.h"


/*
 * Answers with a JSON error in the OpenAI shape, which the providers'
 * SDKs turn into their typed errors; the status decides whether an SDK
 * retries (only 429 and 5xx are retried).
 */
ngx_int_t
ngx_http_spendpol_send_error(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t status, const char *type,
    const char *code, const char *message)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_str_t    body;
    ngx_chain_t  out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    ctx->error_code = code;

    if (ngx_http_spendpol_error_json(r->pool, type, code, message, &body)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body.data;
    b->last = body.data + body.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_spendpol_add_request_headers(r, ctx) != NGX_OK
        || ngx_http_spendpol_latency_header(r, ctx, &r->headers_out.headers)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == NGX_HTTP_UNAUTHORIZED) {
        r->headers_out.www_authenticate = ngx_list_push(
                                                   &r->headers_out.headers);
        if (r->headers_out.www_authenticate == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.www_authenticate->hash = 1;
#if (nginx_version >= 1023000)
        r->headers_out.www_authenticate->next = NULL;
#endif
        ngx_str_set(&r->headers_out.www_authenticate->key,
                    "WWW-Authenticate");
        ngx_str_set(&r->headers_out.www_authenticate->value,
                    "Bearer realm=\"spendpol\"");
    }

    ctx->replaced = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    rc = ngx_http_output_filter(r, &out);

    /*
     * What the socket did not take yet is the writer's, which finalizing
     * installs; NGX_AGAIN is kept for the lease wait in the handler.
     */
    return rc == NGX_AGAIN ? NGX_OK : rc;
}


ngx_int_t
ngx_http_spendpol_error_json(ngx_pool_t *pool, const char *type,
    const char *code, const char *message, ngx_str_t *out)
{
    char    *text;
    json_t  *root;

    root = json_pack("{s:{s:s,s:s,s:s,s:n}}", "error", "type", type,
                     "code", code, "message", message, "param");

    if (root == NULL) {
        /* the message was not valid UTF-8: say less, never nothing */
        root = json_pack("{s:{s:s,s:s,s:s,s:n}}", "error", "type", type,
                         "code", code, "message", code, "param");
        if (root == NULL) {
            return NGX_ERROR;
        }
    }

    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);

    if (text == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_strlen(text);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, text, out->len);
    free(text);

    return NGX_OK;
}
