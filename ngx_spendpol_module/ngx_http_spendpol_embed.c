
/*
 * Copyright (C) Spendpol
 *
 * The semantic cache's embedding call. It goes through the governed path
 * as any other call: an HTTP request to this nginx itself (the address
 * the client reached, or spendpol_cache_embed_address) with the client's
 * own Spendpol key, attribution and trace, to the embeddings endpoint the
 * organisation chose. So it is authenticated, held to budgets and rate
 * limits, exactly cached, priced and journaled like a call the client
 * made, and linked to it in the audit log (its parent is the request's
 * span).
 *
 * The call is made without waiting: a peer connection on nginx's events,
 * the request written (HTTP/1.0), the answer read (until the close, at most
 * NGX_HTTP_SPENDPOL_EMBED_MAX bytes) and its vector parsed
 * (sp_semantic.h). The request it serves is parked meanwhile, at most the
 * organisation's embedding_timeout_ms; whatever comes first wakes it. A
 * call given up on is closed: the gateway meters it as any client that
 * hung up, and the request goes on as a miss.
 */


#include <sp_semantic.h>

#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_EMBED_MAX   (1024 * 1024)


/* a failed connection is logged once until one is made */
static ngx_uint_t  ngx_http_spendpol_embed_failed;


struct ngx_http_spendpol_embed_s {
    ngx_pool_t                  *pool;
    ngx_peer_connection_t        peer;
    ngx_http_request_t          *request;    /* NULL: given up on */
    ngx_http_spendpol_ctx_t     *ctx;        /* the request's, at the start */
    ngx_uint_t                   provider;   /* sp_provider_e */
    ngx_uint_t                   starting:1;  /* not parked yet */
    ngx_addr_t                   addr;
    u_char                      *out;
    u_char                      *out_pos;
    u_char                      *out_last;
    u_char                      *in;
    size_t                       in_len;
    size_t                       in_size;
};


static void ngx_http_spendpol_embed_write(ngx_event_t *ev);
static void ngx_http_spendpol_embed_read(ngx_event_t *ev);
static void ngx_http_spendpol_embed_done(ngx_http_spendpol_embed_t *em,
    ngx_uint_t ok);
static void ngx_http_spendpol_embed_detach(void *data);
static void ngx_http_spendpol_embed_close(ngx_http_spendpol_embed_t *em);
static ngx_int_t ngx_http_spendpol_embed_target(ngx_http_request_t *r,
    ngx_addr_t *addr);


/*
 * Starts the call asking for the embedding of text. NGX_AGAIN when the
 * request is to wait for it; NGX_DECLINED when it cannot be made (no
 * address to call, no memory): a miss.
 */
ngx_int_t
ngx_http_spendpol_embed_start(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, const sp_cache_config_t *config,
    sp_str_t text)
{
    u_char                     *p, *body;
    char                        err[128];
    size_t                      body_len, n, path_len;
    ngx_int_t                   rc;
    ngx_str_t                   path, host;
    ngx_addr_t                  addr;
    ngx_pool_t                 *pool;
    ngx_table_elt_t            *dept, *proj;
    sp_str_t                    model;
    ngx_pool_cleanup_t         *cln;
    ngx_http_spendpol_embed_t  *em;

    if (ngx_http_spendpol_embed_target(r, &addr) != NGX_OK) {
        return NGX_DECLINED;
    }

    model = sp_str_from(config->embed_model);

    /* the endpoint, as the provider's SDK calls it through the gateway */
    path_len = 96 + 2 * (model.len
                         + 2 * ngx_escape_uri(NULL, (u_char *) model.data,
                                              model.len,
                                              NGX_ESCAPE_URI_COMPONENT));

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_DECLINED;
    }

    em = ngx_pcalloc(pool, sizeof(ngx_http_spendpol_embed_t));
    path.data = ngx_pnalloc(pool, path_len);
    n = 6 * (text.len + model.len) + 160;
    body = ngx_pnalloc(pool, n);

    if (em == NULL || path.data == NULL || body == NULL) {
        goto failed;
    }

    em->pool = pool;
    em->provider = config->embed_provider;

    switch (config->embed_provider) {

    case SP_PROVIDER_OPENAI:
        p = ngx_sprintf(path.data, "/v1/openai/embeddings");
        break;

    case SP_PROVIDER_MISTRAL:
        p = ngx_sprintf(path.data, "/v1/mistral/v1/embeddings");
        break;

    case SP_PROVIDER_COHERE:
        p = ngx_sprintf(path.data, "/v1/cohere/v2/embed");
        break;

    case SP_PROVIDER_GOOGLE:
        /* the model in the path, escaped: "/", "?", "#", "%" stay its own */
        p = ngx_cpymem(path.data, "/v1/google/v1beta/models/",
                       sizeof("/v1/google/v1beta/models/") - 1);
        p = (u_char *) ngx_escape_uri(p, (u_char *) model.data, model.len,
                                      NGX_ESCAPE_URI_COMPONENT);
        p = ngx_cpymem(p, ":embedContent", sizeof(":embedContent") - 1);
        break;

    case SP_PROVIDER_AZURE:
        p = ngx_cpymem(path.data, "/v1/azure/openai/deployments/",
                       sizeof("/v1/azure/openai/deployments/") - 1);
        p = (u_char *) ngx_escape_uri(p, (u_char *) model.data, model.len,
                                      NGX_ESCAPE_URI_COMPONENT);
        p = ngx_sprintf(p, "/embeddings?api-version=2024-10-21");
        break;

    default:
        goto failed;
    }

    path.len = p - path.data;

    if (sp_semantic_embed_body(config->embed_provider, model, text,
                               (char *) body, n, &body_len, err,
                               sizeof(err))
        != SP_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "spendpol semantic: no embedding body: %s", err);
        goto failed;
    }

    dept = ngx_http_spendpol_request_header(r, "X-Spendpol-Department",
                                    sizeof("X-Spendpol-Department") - 1);
    proj = ngx_http_spendpol_request_header(r, "X-Spendpol-Project",
                                    sizeof("X-Spendpol-Project") - 1);

    /* the same server{} as the request */
    host = r->headers_in.server;

    if (host.len == 0) {
        ngx_str_set(&host, "localhost");
    }

    n = path.len + host.len + ctx->presented_key.len + body_len + 512
        + (dept ? dept->value.len : 0) + (proj ? proj->value.len : 0);

    em->out = ngx_pnalloc(pool, n);
    if (em->out == NULL) {
        goto failed;
    }

    /* HTTP/1.0: the answer comes whole, never chunked, then the close */
    p = ngx_sprintf(em->out, "POST %V HTTP/1.0" CRLF
                    "Host: %V" CRLF
                    "X-Spendpol-Key: %V" CRLF
                    "Content-Type: application/json" CRLF
                    "Content-Length: %uz" CRLF
                    "X-Spendpol-Trace-Id: %s" CRLF
                    "X-Spendpol-Parent-Id: %s" CRLF
                    "Connection: close" CRLF,
                    &path, &host, &ctx->presented_key, body_len, ctx->trace_id,
                    ctx->span_id);

    if (dept) {
        p = ngx_sprintf(p, "X-Spendpol-Department: %V" CRLF, &dept->value);
    }

    if (proj) {
        p = ngx_sprintf(p, "X-Spendpol-Project: %V" CRLF, &proj->value);
    }

    p = ngx_cpymem(p, CRLF, 2);
    p = ngx_cpymem(p, body, body_len);

    em->out_pos = em->out;
    em->out_last = p;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    em->addr = addr;
    em->peer.sockaddr = em->addr.sockaddr;
    em->peer.socklen = em->addr.socklen;
    em->peer.name = &em->addr.name;
    em->peer.get = ngx_event_get_peer;
    em->peer.log = ngx_cycle->log;
    em->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&em->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (!ngx_http_spendpol_embed_failed) {
            ngx_http_spendpol_embed_failed = 1;
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: the semantic cache cannot call %V for "
                          "an embedding; semantic lookups are misses (logged "
                          "once until a call is made)", &addr.name);
        }

        if (em->peer.connection) {
            ngx_close_connection(em->peer.connection);
        }

        goto failed;
    }

    ngx_http_spendpol_embed_failed = 0;

    em->peer.connection->data = em;
    em->peer.connection->pool = pool;
    em->peer.connection->read->handler = ngx_http_spendpol_embed_read;
    em->peer.connection->write->handler = ngx_http_spendpol_embed_write;

    em->request = r;
    em->ctx = ctx;
    ctx->cache_embed = em;
    cln->handler = ngx_http_spendpol_embed_detach;
    cln->data = ctx;

    if (rc == NGX_OK) {
        /* connected at once: a failure now must not wake the request */
        em->starting = 1;
        ngx_http_spendpol_embed_write(em->peer.connection->write);

        if (ctx->cache_embed == NULL) {
            return NGX_DECLINED;
        }

        em->starting = 0;
    }

    return NGX_AGAIN;

failed:

    ngx_destroy_pool(pool);
    return NGX_DECLINED;
}


/* the timer won: the call is closed and the request goes on as a miss */
void
ngx_http_spendpol_embed_abandon(ngx_http_spendpol_ctx_t *ctx)
{
    ngx_http_spendpol_embed_t  *em;

    em = ctx->cache_embed;

    if (em == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, em->request->connection->log, 0,
                  "spendpol: the semantic cache's embedding call took "
                  "longer than embedding_timeout_ms; a miss");

    ctx->cache_embed = NULL;
    ngx_http_spendpol_embed_close(em);
}


static void
ngx_http_spendpol_embed_write(ngx_event_t *wev)
{
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_spendpol_embed_t  *em;

    c = wev->data;
    em = c->data;

    if (wev->timedout) {
        ngx_http_spendpol_embed_done(em, 0);
        return;
    }

    while (em->out_pos < em->out_last) {
        n = c->send(c, em->out_pos, em->out_last - em->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_spendpol_embed_done(em, 0);
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_spendpol_embed_done(em, 0);
            return;
        }

        em->out_pos += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_spendpol_embed_done(em, 0);
    }
}


static void
ngx_http_spendpol_embed_read(ngx_event_t *rev)
{
    u_char                     *grown;
    size_t                      size;
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_spendpol_embed_t  *em;

    c = rev->data;
    em = c->data;

    for ( ;; ) {
        if (em->in_len == em->in_size) {
            if (em->in_size >= NGX_HTTP_SPENDPOL_EMBED_MAX) {
                ngx_http_spendpol_embed_done(em, 0);
                return;
            }

            size = em->in_size ? 2 * em->in_size : 16384;
            size = ngx_min(size, NGX_HTTP_SPENDPOL_EMBED_MAX);

            grown = ngx_pnalloc(em->pool, size);
            if (grown == NULL) {
                ngx_http_spendpol_embed_done(em, 0);
                return;
            }

            if (em->in_len) {
                ngx_memcpy(grown, em->in, em->in_len);
            }

            em->in = grown;
            em->in_size = size;
        }

        n = c->recv(c, em->in + em->in_len, em->in_size - em->in_len);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_spendpol_embed_done(em, 0);
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_spendpol_embed_done(em, 0);
            return;
        }

        if (n == 0) {
            /* Connection: close: the whole answer is in */
            ngx_http_spendpol_embed_done(em, 1);
            return;
        }

        em->in_len += n;
    }
}


/*
 * The answer is in (ok) or the call failed: a 200 with a JSON body whose
 * vector parses gives the request its query vector; then it is woken.
 */
static void
ngx_http_spendpol_embed_done(ngx_http_spendpol_embed_t *em, ngx_uint_t ok)
{
    u_char                   *p, *last, *body;
    char                      err[160];
    float                    *v;
    int8_t                   *q;
    size_t                    dim;
    ngx_http_request_t       *r;
    ngx_http_spendpol_ctx_t  *ctx;

    r = em->request;

    if (r == NULL) {
        ngx_http_spendpol_embed_close(em);
        return;
    }

    ctx = em->ctx;
    ctx->cache_embed = NULL;

    if (ngx_http_get_module_ctx(r, ngx_http_spendpol_module) != ctx) {
        /* the request was redirected meanwhile (an error_page): not ours */
        ngx_http_spendpol_embed_close(em);
        return;
    }

    p = em->in;
    last = em->in + em->in_len;
    body = NULL;

    if (ok
        && em->in_len > sizeof("HTTP/1.1 200") - 1
        && ngx_strncmp(p, "HTTP/1.", sizeof("HTTP/1.") - 1) == 0
        && ngx_strncmp(p + sizeof("HTTP/1.1"), "200", 3) == 0)
    {
        body = ngx_strlcasestrn(p, last, (u_char *) CRLF CRLF, 4 - 1);
    }

    v = NULL;

    if (body) {
        body += 4;
        v = ngx_palloc(em->pool, SP_SEMANTIC_DIM_MAX * sizeof(float));
    }

    if (v != NULL
        && sp_semantic_embedding(em->provider, (char *) body, last - body, v,
                                 SP_SEMANTIC_DIM_MAX, &dim, err, sizeof(err))
           == SP_OK)
    {
        q = ngx_pnalloc(r->pool, dim);

        if (q && sp_semantic_quantise(v, dim, q) == SP_OK) {
            ctx->cache_vector = q;
            ctx->cache_dim = dim;
        }

    } else if (body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "spendpol: the semantic cache's embedding answer "
                      "has no vector (%s); a miss", v ? err : "no memory");

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "spendpol: the semantic cache's embedding call "
                      "failed (%*s); a miss",
                      em->in_len ? (size_t) ngx_min(em->in_len, 12) : 9,
                      em->in_len ? em->in : (u_char *) "no answer");
    }

    if (em->starting) {
        ngx_http_spendpol_embed_close(em);
        return;
    }

    ngx_http_spendpol_embed_close(em);

    ngx_http_spendpol_unpark(r);
}


/* the request's pool goes: a call still in flight is closed */
static void
ngx_http_spendpol_embed_detach(void *data)
{
    ngx_http_spendpol_ctx_t  *ctx = data;

    ngx_http_spendpol_embed_t  *em;

    em = ctx->cache_embed;

    if (em) {
        ctx->cache_embed = NULL;
        ngx_http_spendpol_embed_close(em);
    }
}


static void
ngx_http_spendpol_embed_close(ngx_http_spendpol_embed_t *em)
{
    em->request = NULL;

    if (em->peer.connection) {
        ngx_close_connection(em->peer.connection);
        em->peer.connection = NULL;
    }

    ngx_destroy_pool(em->pool);
}


/*
 * Where to call: spendpol_cache_embed_address, or the address and port
 * the client reached when it came over plain HTTP. A TLS listener
 * without the directive cannot be called (logged once).
 */
static ngx_int_t
ngx_http_spendpol_embed_target(ngx_http_request_t *r, ngx_addr_t *addr)
{
    u_char                         *p;
    ngx_connection_t               *c;
    ngx_http_spendpol_main_conf_t  *smcf;

    static ngx_uint_t               tls_logged;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->cache_embed_address) {
        *addr = *smcf->cache_embed_address;
        return NGX_OK;
    }

#if (NGX_HTTP_SSL)
    if (r->http_connection->ssl) {
        if (!tls_logged) {
            tls_logged = 1;
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: the semantic cache calls this nginx "
                          "for embeddings over plain HTTP, and this "
                          "listener is TLS: set spendpol_cache_embed_address "
                          "to a plain-HTTP listener on loopback; until then "
                          "semantic lookups are misses");
        }

        return NGX_DECLINED;
    }
#endif

    c = r->connection;

    if (ngx_connection_local_sockaddr(c, NULL, 0) != NGX_OK) {
        return NGX_DECLINED;
    }

    addr->sockaddr = ngx_palloc(r->pool, c->local_socklen);
    p = ngx_pnalloc(r->pool, NGX_SOCKADDR_STRLEN);

    if (addr->sockaddr == NULL || p == NULL) {
        return NGX_DECLINED;
    }

    ngx_memcpy(addr->sockaddr, c->local_sockaddr, c->local_socklen);
    addr->socklen = c->local_socklen;
    addr->name.data = p;
    addr->name.len = ngx_sock_ntop(addr->sockaddr, addr->socklen, p,
                                   NGX_SOCKADDR_STRLEN, 1);

    return NGX_OK;
}
