
/*
 * Copyright (C) Spendpol
 *
 * Connections to the providers. $spendpol_upstream_url names the
 * upstream{} block this file adds (NGX_HTTP_SPENDPOL_UPSTREAM), not the
 * provider's host, so the proxy module asks our balancer for a connection
 * instead of making a throwaway peer for every request: the address comes
 * from the base URL of the request's provider (parsed, or resolved before
 * the proxy runs), and idle connections are kept in each worker for the
 * next request to the same address, scheme and host name.
 */


#include "ngx_http_spendpol_module.h"
#include <sp_netaddr.h>


/* a DNS name has at most 253 characters */
#define NGX_HTTP_SPENDPOL_NAME_LEN  256


/* an idle connection to a provider, kept for the next request to it */
typedef struct {
    ngx_queue_t                      queue;
    ngx_connection_t                *connection;
    ngx_http_spendpol_main_conf_t   *smcf;

    /*
     * What it was made for. A TLS connection carries the name it was
     * verified for: providers share addresses (Azure resources do), so
     * the address alone must never pick it.
     */
    socklen_t                        socklen;
    ngx_sockaddr_t                   sockaddr;
    ngx_uint_t                       ssl;
    size_t                           name_len;
    u_char                           name[NGX_HTTP_SPENDPOL_NAME_LEN];
} ngx_http_spendpol_keepalive_t;


#if (NGX_HTTP_SSL)

/* a TLS session with a provider's host, to resume the next handshake */
typedef struct {
    ngx_queue_t                      queue;
    ngx_ssl_session_t               *session;
    in_port_t                        port;
    size_t                           name_len;
    u_char                           name[NGX_HTTP_SPENDPOL_NAME_LEN];
} ngx_http_spendpol_session_t;

#endif


/* the balancer's state in one request */
typedef struct {
    ngx_http_request_t              *request;
    ngx_http_spendpol_ctx_t         *ctx;
    ngx_http_spendpol_main_conf_t   *smcf;
    ngx_uint_t                       next;      /* address to connect to */
} ngx_http_spendpol_peer_t;


static void ngx_http_spendpol_resolve_handler(ngx_resolver_ctx_t *rctx);
static ngx_int_t ngx_http_spendpol_resolved(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_resolver_ctx_t *rctx);
static void ngx_http_spendpol_resolve_cleanup(void *data);
static ngx_int_t ngx_http_spendpol_upstream_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_spendpol_upstream_get_peer(
    ngx_peer_connection_t *pc, void *data);
static ngx_addr_t *ngx_http_spendpol_keepalive_match(
    ngx_http_spendpol_keepalive_t *item, ngx_http_spendpol_ctx_t *ctx,
    ngx_uint_t ssl);
static void ngx_http_spendpol_upstream_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_uint_t ngx_http_spendpol_keepalive_open(ngx_connection_t *c);
static void ngx_http_spendpol_keepalive_dummy_handler(ngx_event_t *ev);
static void ngx_http_spendpol_keepalive_close_handler(ngx_event_t *ev);
static void ngx_http_spendpol_keepalive_close(ngx_connection_t *c);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_spendpol_upstream_set_session(
    ngx_peer_connection_t *pc, void *data);
static void ngx_http_spendpol_upstream_save_session(
    ngx_peer_connection_t *pc, void *data);
static ngx_http_spendpol_session_t *ngx_http_spendpol_session_find(
    ngx_http_spendpol_peer_t *peer);
#endif
static ngx_int_t ngx_http_spendpol_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static void ngx_http_spendpol_outbound_load(
    ngx_http_spendpol_main_conf_t *smcf, ngx_log_t *log);
static ngx_int_t ngx_http_spendpol_outbound_check(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t literal);
static ngx_int_t ngx_http_spendpol_outbound_sent(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc);


/*
 * The operator's outbound allow list and the admin API's address, from
 * the snapshot's settings, parsed once per snapshot in each worker (a
 * worker is one thread: plain statics).
 */
static sp_netallow_t   ngx_http_spendpol_allow;
static const void     *ngx_http_spendpol_allow_base;
static uint64_t        ngx_http_spendpol_allow_generation;
static ngx_uint_t      ngx_http_spendpol_admin_known;
static sp_netaddr_t    ngx_http_spendpol_admin;
static uint16_t        ngx_http_spendpol_admin_port;


/*
 * The base URL of the request's provider, split: the proxy goes to our
 * upstream{} block with the base URL's scheme and path, the Host header
 * and the TLS name keep its host, and its address is the host parsed
 * here, or resolved by ngx_http_spendpol_upstream_resolve() when it is a
 * name. NGX_DECLINED: not an http:// or https:// URL.
 */
ngx_int_t
ngx_http_spendpol_upstream_target(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, u_char *base_url, size_t len,
    ngx_str_t *args)
{
    u_char     *base, *last, *host, *path, *p;
    size_t      scheme;
    in_port_t   port;
    ngx_url_t   url;

    if (len > 8 && ngx_strncasecmp(base_url, (u_char *) "https://", 8) == 0) {
        scheme = 8;
        port = 443;

    } else if (len > 7
               && ngx_strncasecmp(base_url, (u_char *) "http://", 7) == 0)
    {
        scheme = 7;
        port = 80;

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: the provider's base URL \"%*s\" is not "
                      "http:// or https://", len, base_url);
        return NGX_DECLINED;
    }

    /* the snapshot may be replaced during the request */
    base = ngx_pnalloc(r->pool, len);
    if (base == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(base, base_url, len);

    last = base + len;
    host = base + scheme;

    path = ngx_strlchr(host, last, '/');

    if (path == NULL) {
        path = last;
    }

    ngx_memzero(&url, sizeof(ngx_url_t));

    url.url.data = host;
    url.url.len = path - host;
    url.default_port = port;
    url.no_resolve = 1;

    if (ngx_parse_url(r->pool, &url) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: the provider's base URL \"%*s\": %s", len,
                      base_url, url.err ? url.err : "invalid host");
        return url.err ? NGX_DECLINED : NGX_ERROR;
    }

    ctx->upstream_host.data = host;
    ctx->upstream_host.len = path - host;
    ctx->upstream_name = url.host;
    ctx->upstream_port = url.port;

    /* an address literal; a name has none yet */
    ctx->upstream_addrs = url.addrs;
    ctx->upstream_naddrs = url.naddrs;

    ctx->upstream_url.len = scheme + sizeof(NGX_HTTP_SPENDPOL_UPSTREAM) - 1
                            + (last - path) + ctx->rest.len
                            + (args->len ? 1 + args->len : 0);

    ctx->upstream_url.data = ngx_pnalloc(r->pool, ctx->upstream_url.len);
    if (ctx->upstream_url.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(ctx->upstream_url.data, base, scheme);
    p = ngx_cpymem(p, NGX_HTTP_SPENDPOL_UPSTREAM,
                   sizeof(NGX_HTTP_SPENDPOL_UPSTREAM) - 1);
    p = ngx_cpymem(p, path, last - path);
    p = ngx_cpymem(p, ctx->rest.data, ctx->rest.len);

    if (args->len) {
        *p++ = '?';
        ngx_memcpy(p, args->data, args->len);
    }

    return NGX_OK;
}


/*
 * The provider's addresses before the proxy runs: NGX_OK (known, or
 * answered from the resolver's cache), NGX_AGAIN (being resolved: the
 * handler goes on with ngx_http_spendpol_forward()), or a status.
 */
ngx_int_t
ngx_http_spendpol_upstream_resolve(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    ngx_resolver_ctx_t        *rctx;
    ngx_pool_cleanup_t        *cln;
    ngx_http_core_loc_conf_t  *clcf;

    if (ctx->upstream_naddrs) {
        /* an address literal: judged before anything connects */
        return ngx_http_spendpol_outbound_sent(r, ctx,
                   ngx_http_spendpol_outbound_check(r, ctx, 1));
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    rctx = ngx_resolve_start(clcf->resolver, NULL);
    if (rctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: no resolver to resolve \"%V\": set "
                      "\"resolver\"", &ctx->upstream_name);
        return NGX_HTTP_BAD_GATEWAY;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_resolve_name_done(rctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_spendpol_resolve_cleanup;
    cln->data = ctx;

    rctx->name = ctx->upstream_name;
    rctx->handler = ngx_http_spendpol_resolve_handler;
    rctx->data = r;
    rctx->timeout = clcf->resolver_timeout;

    ctx->resolver_ctx = rctx;
    ctx->resolving = 1;

    if (ngx_resolve_name(rctx) != NGX_OK) {
        ctx->resolver_ctx = NULL;
        ctx->resolving = 0;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->resolving = 0;

    if (ctx->resolver_ctx == NULL) {
        /* the handler ran already: the answer was in the resolver's cache */
        return ngx_http_spendpol_outbound_sent(r, ctx, ctx->resolved_rc);
    }

    return NGX_AGAIN;
}


static void
ngx_http_spendpol_resolve_handler(ngx_resolver_ctx_t *rctx)
{
    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_spendpol_ctx_t  *ctx;

    r = rctx->data;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    ngx_http_set_log_request(c->log, r);

    rc = ngx_http_spendpol_resolved(r, ctx, rctx);

    ngx_resolve_name_done(rctx);
    ctx->resolver_ctx = NULL;

    if (ctx->resolving) {
        ctx->resolved_rc = rc;
        return;
    }

    /* a refusal already answered: the request only ends */
    ngx_http_spendpol_forward(r, ctx, rc == NGX_DONE ? NGX_AGAIN : rc);

    ngx_http_run_posted_requests(c);
}


/* copies the answer: the resolver frees its own with the context */
static ngx_int_t
ngx_http_spendpol_resolved(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    ngx_resolver_ctx_t *rctx)
{
    u_char           *p;
    size_t            len;
    socklen_t         socklen;
    ngx_uint_t        i;
    ngx_addr_t       *addrs;
    struct sockaddr  *sockaddr;

    if (rctx->state || rctx->naddrs == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: the provider's host \"%V\" could not be "
                      "resolved (%i: %s)", &rctx->name, rctx->state,
                      ngx_resolver_strerror(rctx->state));
        return NGX_HTTP_BAD_GATEWAY;
    }

    addrs = ngx_palloc(r->pool, rctx->naddrs * sizeof(ngx_addr_t));
    if (addrs == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < rctx->naddrs; i++) {
        socklen = rctx->addrs[i].socklen;

        sockaddr = ngx_palloc(r->pool, socklen);
        if (sockaddr == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(sockaddr, rctx->addrs[i].sockaddr, socklen);
        ngx_inet_set_port(sockaddr, ctx->upstream_port);

        p = ngx_pnalloc(r->pool, NGX_SOCKADDR_STRLEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_sock_ntop(sockaddr, socklen, p, NGX_SOCKADDR_STRLEN, 1);

        addrs[i].sockaddr = sockaddr;
        addrs[i].socklen = socklen;
        addrs[i].name.len = len;
        addrs[i].name.data = p;
    }

    ctx->upstream_addrs = addrs;
    ctx->upstream_naddrs = rctx->naddrs;

    /* what the name resolves to now, not when it was stored */
    return ngx_http_spendpol_outbound_check(r, ctx, 0);
}


static void
ngx_http_spendpol_outbound_load(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    u_char                       *p, *last, *colon;
    char                          err[256];
    ngx_int_t                     port;
    sp_str_t                      name, value, host;
    const sp_snapshot_setting_t  *setting;

    ngx_http_spendpol_allow_base = smcf->snapshot.base;
    ngx_http_spendpol_allow_generation = smcf->snapshot.header->generation;
    ngx_http_spendpol_admin_known = 0;

    name.data = SP_SETTING_UPSTREAM_ALLOW;
    name.len = sizeof(SP_SETTING_UPSTREAM_ALLOW) - 1;
    setting = sp_snapshot_find_setting(&smcf->snapshot, name);
    value.data = "";
    value.len = 0;

    if (setting != NULL) {
        value = sp_snapshot_str(&smcf->snapshot, setting->value);
    }

    if (sp_netallow_parse(&ngx_http_spendpol_allow, value.data, value.len,
                          err, sizeof(err))
        != SP_OK)
    {
        /* controld validated it: the defaults (public https) hold */
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "spendpol: snapshot %uL: %s; only https to public "
                      "addresses is allowed",
                      ngx_http_spendpol_allow_generation, err);
    }

    name.data = SP_SETTING_ADMIN_LISTEN;
    name.len = sizeof(SP_SETTING_ADMIN_LISTEN) - 1;
    setting = sp_snapshot_find_setting(&smcf->snapshot, name);

    if (setting == NULL) {
        return;
    }

    value = sp_snapshot_str(&smcf->snapshot, setting->value);

    /* "a.b.c.d:port" or "[v6]:port" */
    p = (u_char *) value.data;
    last = p + value.len;
    colon = NULL;

    for ( /* void */ ; p < last; p++) {
        if (*p == ':') {
            colon = p;
        }
    }

    if (colon == NULL || colon + 1 == last) {
        return;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);

    if (port <= 0 || port > 65535) {
        return;
    }

    host.data = value.data;
    host.len = (const char *) colon - value.data;

    if (host.len >= 2 && host.data[0] == '[' && host.data[host.len - 1] == ']')
    {
        host.data++;
        host.len -= 2;
    }

    if (sp_netaddr_parse(&ngx_http_spendpol_admin, host.data, host.len)
        == SP_OK)
    {
        ngx_http_spendpol_admin_port = (uint16_t) port;
        ngx_http_spendpol_admin_known = 1;
    }
}


/*
 * In ngx_http_spendpol_upstream_resolve(), whose caller touches the
 * request after it returns and then passes anything but NGX_AGAIN to
 * ngx_http_spendpol_forward(): a refusal already answered (NGX_DONE) is
 * finalized here with a reference held (r->main->count), so the request
 * outlives the caller, which drops the reference by finalizing NGX_DONE.
 */
static ngx_int_t
ngx_http_spendpol_outbound_sent(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_int_t rc)
{
    if (rc != NGX_DONE) {
        return rc;
    }

    r->main->count++;

    /* NGX_AGAIN: as nginx finalizes after an output filter's answer */
    ngx_http_spendpol_forward(r, ctx, NGX_AGAIN);

    return NGX_DONE;
}


/*
 * Every address the request may connect to must be one the operator
 * allows (SPENDPOL_UPSTREAM_ALLOW through the snapshot) and never the
 * admin API's own. A refusal is a 502 that names the rule but not the
 * address (the client must not learn the provider's internal address);
 * the log line names both.
 */
static ngx_int_t
ngx_http_spendpol_outbound_check(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t literal)
{
    u_char                         *name;
    size_t                          name_len;
    uint16_t                        port;
    ngx_int_t                       rc;
    ngx_uint_t                      i, https;
    sp_netaddr_t                    addr;
    sp_netdecision_t                d;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->snapshot.header == NULL) {
        return NGX_HTTP_BAD_GATEWAY;
    }

    if (smcf->snapshot.base != ngx_http_spendpol_allow_base
        || smcf->snapshot.header->generation
           != ngx_http_spendpol_allow_generation)
    {
        ngx_http_spendpol_outbound_load(smcf, r->connection->log);
    }

    /* "http://" or "https://", in either case */
    https = ctx->upstream_url.len > 5
            && (ctx->upstream_url.data[4] | 0x20) == 's';

    name = literal ? NULL : ctx->upstream_name.data;
    name_len = literal ? 0 : ctx->upstream_name.len;

    for (i = 0; i < ctx->upstream_naddrs; i++) {
        if (sp_netaddr_from_sockaddr(&addr, &port,
                                     ctx->upstream_addrs[i].sockaddr,
                                     ctx->upstream_addrs[i].socklen)
            != SP_OK)
        {
            d.verdict = SP_NET_REFUSED_CLASS;
            d.class = SP_NET_RESERVED;

        } else {
            sp_netaddr_decide(&d, &ngx_http_spendpol_allow, (int) https,
                              (const char *) name, name_len, &addr, port,
                              ngx_http_spendpol_admin_known
                              ? &ngx_http_spendpol_admin : NULL,
                              ngx_http_spendpol_admin_port);
        }

        if (d.verdict == SP_NET_ALLOWED) {
            continue;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "spendpol: provider %s: upstream %V at %V refused: "
                      "%s (rule %s)%s", sp_provider_name(ctx->provider),
                      &ctx->upstream_host, &ctx->upstream_addrs[i].name,
                      sp_netdecision_text(&d), sp_netdecision_rule(&d),
                      d.verdict == SP_NET_REFUSED_ADMIN_API
                      ? "" : "; allow it with SPENDPOL_UPSTREAM_ALLOW");

        if (ctx->route_resolving) {
            /* a fallback's address: the fallback is left out, no answer */
            return NGX_DECLINED;
        }

        rc = ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_GATEWAY,
                 "api_error", "upstream_not_allowed",
                 "the provider's address is not one the gateway's operator "
                 "allows (SPENDPOL_UPSTREAM_ALLOW); the gateway's log names "
                 "the rule");

        /* sent: NGX_DONE, which the callers turn into a finalization */
        return (rc == NGX_OK || rc == NGX_AGAIN) ? NGX_DONE : rc;
    }

    return NGX_OK;
}


/* a request that ends while its provider's name is being resolved */
static void
ngx_http_spendpol_resolve_cleanup(void *data)
{
    ngx_http_spendpol_ctx_t  *ctx = data;

    if (ctx->resolver_ctx) {
        ngx_resolve_name_done(ctx->resolver_ctx);
        ctx->resolver_ctx = NULL;
    }
}


static ngx_int_t
ngx_http_spendpol_upstream_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t            *u;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_peer_t       *peer;
    ngx_http_spendpol_main_conf_t  *smcf;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_spendpol_module);

    if (ctx == NULL || ctx->upstream_naddrs == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "\"" NGX_HTTP_SPENDPOL_UPSTREAM "\" is reached only "
                      "through \"spendpol on\"");
        return NGX_ERROR;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    peer = ngx_palloc(r->pool, sizeof(ngx_http_spendpol_peer_t));
    if (peer == NULL) {
        return NGX_ERROR;
    }

    peer->request = r;
    peer->ctx = ctx;
    peer->smcf = smcf;

    /*
     * A name with several addresses: new connections take them in turn,
     * and a failed one passes the request to the next (the proxy module's
     * own rules decide when: never after a POST was sent).
     */
    peer->next = smcf->upstream_rotation++ % ctx->upstream_naddrs;

    u = r->upstream;

    u->peer.data = peer;
    u->peer.get = ngx_http_spendpol_upstream_get_peer;
    u->peer.free = ngx_http_spendpol_upstream_free_peer;
    u->peer.tries = ctx->upstream_naddrs;

    /* a routed request may fall back: its own retry settings and tries */
    if (ngx_http_spendpol_fallback_upstream(r, ctx, u) != NGX_OK) {
        return NGX_ERROR;
    }

#if (NGX_HTTP_SSL)
    u->peer.set_session = ngx_http_spendpol_upstream_set_session;
    u->peer.save_session = ngx_http_spendpol_upstream_save_session;
#endif

    /*
     * proxy_ignore_client_abort is on in our locations: we watch the
     * client ourselves, from now until the answer is read.
     */
    ngx_http_spendpol_watch_client(r);

    return NGX_OK;
}


static ngx_int_t
ngx_http_spendpol_upstream_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_spendpol_peer_t  *peer = data;

    ngx_uint_t                      ssl;
    ngx_addr_t                     *addr;
    ngx_queue_t                    *q, *next, *cache;
    ngx_connection_t               *c;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_keepalive_t  *item;

    ctx = peer->ctx;

    if (ctx->route_rebuild) {
        /* a fallback: its target's request, written here */
        if (ngx_http_spendpol_fallback_request(peer->request, ctx)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->route_rebuild = 0;
    }

    ctx->attempts++;

    ssl = peer->request->upstream->ssl;

    pc->cached = 0;
    pc->connection = NULL;

    /* an idle connection to any of the name's addresses first */

    cache = &peer->smcf->keepalive_cache;

    for (q = ngx_queue_head(cache); q != ngx_queue_sentinel(cache); q = next) {

        next = ngx_queue_next(q);

        item = ngx_queue_data(q, ngx_http_spendpol_keepalive_t, queue);

        addr = ngx_http_spendpol_keepalive_match(item, ctx, ssl);

        if (addr == NULL) {
            continue;
        }

        c = item->connection;

        ngx_queue_remove(q);
        ngx_queue_insert_head(&peer->smcf->keepalive_free, q);

        /*
         * The provider may have closed it since we last looked: one recv()
         * costs less than a POST that fails and cannot be retried.
         */
        if (!ngx_http_spendpol_keepalive_open(c)) {
            ngx_http_spendpol_keepalive_close(c);
            continue;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "spendpol upstream: reusing connection %p to %V",
                       c, &addr->name);

        c->idle = 0;
        c->sent = 0;
        c->data = NULL;
        c->log = pc->log;
        c->read->log = pc->log;
        c->write->log = pc->log;
        c->pool->log = pc->log;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        pc->sockaddr = addr->sockaddr;
        pc->socklen = addr->socklen;
        pc->name = &addr->name;
        pc->connection = c;
        pc->cached = 1;

        return NGX_DONE;
    }

    addr = &ctx->upstream_addrs[peer->next++ % ctx->upstream_naddrs];

    pc->sockaddr = addr->sockaddr;
    pc->socklen = addr->socklen;
    pc->name = &addr->name;

    return NGX_OK;
}


/* the request's address that an idle connection goes to, if it fits */
static ngx_addr_t *
ngx_http_spendpol_keepalive_match(ngx_http_spendpol_keepalive_t *item,
    ngx_http_spendpol_ctx_t *ctx, ngx_uint_t ssl)
{
    ngx_uint_t   i;
    ngx_addr_t  *addr;

    if (item->ssl != ssl
        || item->name_len != ctx->upstream_name.len
        || ngx_strncasecmp(item->name, ctx->upstream_name.data,
                           item->name_len) != 0)
    {
        return NULL;
    }

    addr = ctx->upstream_addrs;

    for (i = 0; i < ctx->upstream_naddrs; i++) {
        if (ngx_cmp_sockaddr((struct sockaddr *) &item->sockaddr,
                             item->socklen, addr[i].sockaddr,
                             addr[i].socklen, 1)
            == NGX_OK)
        {
            return &addr[i];
        }
    }

    return NULL;
}


static void
ngx_http_spendpol_upstream_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_spendpol_peer_t  *peer = data;

    ngx_queue_t                    *q;
    ngx_connection_t               *c;
    ngx_http_upstream_t            *u;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_keepalive_t  *item;
    ngx_http_spendpol_main_conf_t  *smcf;

    if (pc->tries) {
        pc->tries--;
    }

    smcf = peer->smcf;
    ctx = peer->ctx;
    u = peer->request->upstream;
    c = pc->connection;

    if (ctx->targets && (state & NGX_PEER_FAILED)) {

        if (pc->cached && u->headers_in.status_n == 0 && c != NULL
            && !c->read->timedout && !c->write->timedout)
        {
            /* an idle connection the provider had closed: nginx retries */
            ctx->attempts--;

        } else {
            pc->tries = ngx_min(pc->tries,
                                ngx_http_spendpol_fallback_failed(
                                    peer->request, ctx,
                                    u->headers_in.status_n));
        }
    }

    /* only a connection whose response was read to its end is reusable */

    if (smcf->keepalive == 0
        || state & NGX_PEER_FAILED
        || c == NULL
        || c->read->eof
        || c->read->error
        || c->read->timedout
        || c->write->error
        || c->write->timedout
        || c->requests >= smcf->keepalive_requests
        || !u->keepalive
        || !u->request_body_sent
        || ngx_terminate
        || ngx_exiting
        || ctx->upstream_name.len > NGX_HTTP_SPENDPOL_NAME_LEN)
    {
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return;
    }

    if (ngx_queue_empty(&smcf->keepalive_free)) {

        /* the least recently used makes room */

        q = ngx_queue_last(&smcf->keepalive_cache);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_spendpol_keepalive_t, queue);

        ngx_http_spendpol_keepalive_close(item->connection);

    } else {
        q = ngx_queue_head(&smcf->keepalive_free);
        ngx_queue_remove(q);

        item = ngx_queue_data(q, ngx_http_spendpol_keepalive_t, queue);
    }

    ngx_queue_insert_head(&smcf->keepalive_cache, q);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "spendpol upstream: keeping connection %p to %V",
                   c, pc->name);

    item->connection = c;
    item->socklen = pc->socklen;
    ngx_memcpy(&item->sockaddr, pc->sockaddr, pc->socklen);
    item->ssl = u->ssl;
    item->name_len = ctx->upstream_name.len;
    ngx_memcpy(item->name, ctx->upstream_name.data, item->name_len);

    pc->connection = NULL;

    c->read->delayed = 0;
    ngx_add_timer(c->read, smcf->keepalive_timeout);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->write->handler = ngx_http_spendpol_keepalive_dummy_handler;
    c->read->handler = ngx_http_spendpol_keepalive_close_handler;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        ngx_http_spendpol_keepalive_close_handler(c->read);
    }
}


/* an idle connection is open while it has nothing to read, not even EOF */
static ngx_uint_t
ngx_http_spendpol_keepalive_open(ngx_connection_t *c)
{
    int   n;
    char  buf[1];

    n = recv(c->fd, buf, 1, MSG_PEEK);

    return n == -1 && ngx_socket_errno == NGX_EAGAIN;
}


static void
ngx_http_spendpol_keepalive_dummy_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "spendpol upstream: idle connection writable");
}


/* the provider closed an idle connection, its time is up, or ours is */
static void
ngx_http_spendpol_keepalive_close_handler(ngx_event_t *ev)
{
    ngx_connection_t               *c;
    ngx_http_spendpol_keepalive_t  *item;

    c = ev->data;

    if (!c->close && !ev->timedout && ngx_http_spendpol_keepalive_open(c)) {
        ev->ready = 0;

        if (ngx_handle_read_event(ev, 0) == NGX_OK) {
            return;
        }
    }

    item = c->data;

    ngx_http_spendpol_keepalive_close(c);

    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&item->smcf->keepalive_free, &item->queue);
}


static void
ngx_http_spendpol_keepalive_close(ngx_connection_t *c)
{
#if (NGX_HTTP_SSL)

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_spendpol_keepalive_close;
            return;
        }
    }

#endif

    ngx_destroy_pool(c->pool);
    ngx_close_connection(c);
}


#if (NGX_HTTP_SSL)

/*
 * A new connection resumes the last session with the same host name and
 * port, whichever of its addresses it goes to; the name is what the
 * certificate was verified for, and a resumed session keeps that result.
 */
static ngx_int_t
ngx_http_spendpol_upstream_set_session(ngx_peer_connection_t *pc,
    void *data)
{
    ngx_http_spendpol_peer_t  *peer = data;

    ngx_http_spendpol_session_t  *session;

    session = ngx_http_spendpol_session_find(peer);

    if (session == NULL) {
        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "spendpol upstream: resuming session %p with \"%V\"",
                   session->session, &peer->ctx->upstream_name);

    return ngx_ssl_set_session(pc->connection, session->session);
}


static void
ngx_http_spendpol_upstream_save_session(ngx_peer_connection_t *pc,
    void *data)
{
    ngx_http_spendpol_peer_t  *peer = data;

    ngx_queue_t                    *q;
    ngx_ssl_session_t              *ssl_session;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_session_t    *session;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = peer->smcf;
    ctx = peer->ctx;

    if (ngx_queue_empty(&smcf->ssl_sessions)
        || ctx->upstream_name.len > NGX_HTTP_SPENDPOL_NAME_LEN)
    {
        return;
    }

    ssl_session = ngx_ssl_get_session(pc->connection);

    if (ssl_session == NULL) {
        return;
    }

    session = ngx_http_spendpol_session_find(peer);

    if (session == NULL) {

        /* the least recently used host's makes room */

        q = ngx_queue_last(&smcf->ssl_sessions);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&smcf->ssl_sessions, q);

        session = ngx_queue_data(q, ngx_http_spendpol_session_t, queue);

        session->port = ctx->upstream_port;
        session->name_len = ctx->upstream_name.len;
        ngx_memcpy(session->name, ctx->upstream_name.data,
                   session->name_len);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "spendpol upstream: saving session %p with \"%V\"",
                   ssl_session, &ctx->upstream_name);

    if (session->session) {
        ngx_ssl_free_session(session->session);
    }

    session->session = ssl_session;
}


/* the request's host's session, moved to the front; NULL: none yet */
static ngx_http_spendpol_session_t *
ngx_http_spendpol_session_find(ngx_http_spendpol_peer_t *peer)
{
    ngx_queue_t                  *q, *sessions;
    ngx_http_spendpol_ctx_t      *ctx;
    ngx_http_spendpol_session_t  *session;

    ctx = peer->ctx;
    sessions = &peer->smcf->ssl_sessions;

    for (q = ngx_queue_head(sessions);
         q != ngx_queue_sentinel(sessions);
         q = ngx_queue_next(q))
    {
        session = ngx_queue_data(q, ngx_http_spendpol_session_t, queue);

        if (session->session == NULL) {
            /* the used ones are all in front */
            return NULL;
        }

        if (session->port == ctx->upstream_port
            && session->name_len == ctx->upstream_name.len
            && ngx_strncasecmp(session->name, ctx->upstream_name.data,
                               session->name_len) == 0)
        {
            ngx_queue_remove(q);
            ngx_queue_insert_head(sessions, q);

            return session;
        }
    }

    return NULL;
}

#endif


/* the worker is exiting: what is still idle is closed, not leaked */
void
ngx_http_spendpol_upstream_exit_worker(ngx_http_spendpol_main_conf_t *smcf)
{
    ngx_queue_t                    *q;
    ngx_http_spendpol_keepalive_t  *item;
#if (NGX_HTTP_SSL)
    ngx_http_spendpol_session_t    *session;
#endif

    while (!ngx_queue_empty(&smcf->keepalive_cache)) {
        q = ngx_queue_head(&smcf->keepalive_cache);
        ngx_queue_remove(q);
        ngx_queue_insert_head(&smcf->keepalive_free, q);

        item = ngx_queue_data(q, ngx_http_spendpol_keepalive_t, queue);

        ngx_http_spendpol_keepalive_close(item->connection);
    }

#if (NGX_HTTP_SSL)

    for (q = ngx_queue_head(&smcf->ssl_sessions);
         q != ngx_queue_sentinel(&smcf->ssl_sessions);
         q = ngx_queue_next(q))
    {
        session = ngx_queue_data(q, ngx_http_spendpol_session_t, queue);

        if (session->session) {
            ngx_ssl_free_session(session->session);
            session->session = NULL;
        }
    }

#endif
}


/*
 * Adds the upstream{} block $spendpol_upstream_url names, once; a user's
 * block of the same name is refused as a duplicate.
 */
ngx_int_t
ngx_http_spendpol_upstream_add(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf)
{
    ngx_url_t  u;

    if (smcf->upstream) {
        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    ngx_str_set(&u.host, NGX_HTTP_SPENDPOL_UPSTREAM);
    u.no_port = 1;

    smcf->upstream = ngx_http_upstream_add(cf, &u, NGX_HTTP_UPSTREAM_CREATE);
    if (smcf->upstream == NULL) {
        return NGX_ERROR;
    }

    smcf->upstream->peer.init_upstream = ngx_http_spendpol_upstream_init;

    return NGX_OK;
}


/* called by the upstream module's init_main_conf: it has no servers */
static ngx_int_t
ngx_http_spendpol_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_spendpol_upstream_init_peer;

    return NGX_OK;
}


char *
ngx_http_spendpol_upstream_init_main_conf(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf)
{
    ngx_uint_t                      i;
    ngx_http_spendpol_keepalive_t  *items;
#if (NGX_HTTP_SSL)
    ngx_http_spendpol_session_t    *sessions;
#endif

    ngx_conf_init_uint_value(smcf->keepalive, 32);
    ngx_conf_init_msec_value(smcf->keepalive_timeout, 60000);
    ngx_conf_init_uint_value(smcf->keepalive_requests, 1000);

    if (smcf->keepalive_requests == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol_upstream_keepalive_requests must be at "
                           "least 1; \"spendpol_upstream_keepalive 0\" "
                           "turns keepalive off");
        return NGX_CONF_ERROR;
    }

    ngx_queue_init(&smcf->keepalive_cache);
    ngx_queue_init(&smcf->keepalive_free);
    ngx_queue_init(&smcf->ssl_sessions);

    if (smcf->keepalive == 0) {
        return NGX_CONF_OK;
    }

    items = ngx_pcalloc(cf->pool, smcf->keepalive
                                  * sizeof(ngx_http_spendpol_keepalive_t));
    if (items == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < smcf->keepalive; i++) {
        items[i].smcf = smcf;
        ngx_queue_insert_head(&smcf->keepalive_free, &items[i].queue);
    }

#if (NGX_HTTP_SSL)

    /* as many hosts' TLS sessions as idle connections */

    sessions = ngx_pcalloc(cf->pool, smcf->keepalive
                                     * sizeof(ngx_http_spendpol_session_t));
    if (sessions == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < smcf->keepalive; i++) {
        ngx_queue_insert_tail(&smcf->ssl_sessions, &sessions[i].queue);
    }

#endif

    return NGX_CONF_OK;
}
