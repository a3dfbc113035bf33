
/*
 * Copyright (C) Spendpol
 *
 * Directives, configuration and initialisation. `spendpol on;` in a
 * location is a complete configuration: it sets up the proxy module for
 * that location (upstream URL, credential, body, streaming) by calling the
 * proxy module's own directive handlers, so users write nothing else.
 */


#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_DEFAULT_SNAPSHOT   "/dev/shm/spendpol"
#define NGX_HTTP_SPENDPOL_DEFAULT_JOURNAL    "/var/lib/spendpol/journal.log"
#define NGX_HTTP_SPENDPOL_CA_BUNDLE          "/etc/ssl/certs/ca-certificates.crt"
#define NGX_HTTP_SPENDPOL_RESOLV_CONF        "/etc/resolv.conf"


static ngx_int_t ngx_http_spendpol_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_spendpol_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void *ngx_http_spendpol_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_spendpol_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_spendpol_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_spendpol_cache_embed_address(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_spendpol_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_spendpol(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_spendpol_journal(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_spendpol_call(ngx_conf_t *cf, ngx_module_t *module,
    const char *name, ngx_uint_t nargs, ...);
static ngx_int_t ngx_http_spendpol_set_resolver(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);
static char *ngx_http_spendpol_ssl_trusted_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_spendpol_ssl_check(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf);
static ngx_int_t ngx_http_spendpol_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_spendpol_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_spendpol_init_process(ngx_cycle_t *cycle);
static void ngx_http_spendpol_exit_process(ngx_cycle_t *cycle);


extern ngx_module_t  ngx_http_proxy_module;


enum {
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_URL = 0,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_HOST,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_SNI,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_AUTHORIZATION,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_X_API_KEY,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_API_KEY,
    NGX_HTTP_SPENDPOL_VAR_UPSTREAM_GOOG_API_KEY,
    NGX_HTTP_SPENDPOL_VAR_ANTHROPIC_VERSION,
    NGX_HTTP_SPENDPOL_VAR_REQUEST_BODY,
    NGX_HTTP_SPENDPOL_VAR_AUDIT_ID,
    NGX_HTTP_SPENDPOL_VAR_TRACE_ID,
    NGX_HTTP_SPENDPOL_VAR_SPAN_ID,
    NGX_HTTP_SPENDPOL_VAR_PARENT_ID,
    NGX_HTTP_SPENDPOL_VAR_TRACEPARENT
};


static ngx_command_t  ngx_http_spendpol_commands[] = {

    { ngx_string("spendpol"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_spendpol,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, enable),
      NULL },

    { ngx_string("spendpol_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_spendpol_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("spendpol_snapshot"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, snapshot_dir),
      NULL },

    { ngx_string("spendpol_snapshot_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, snapshot_interval),
      NULL },

    { ngx_string("spendpol_journal"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_spendpol_journal,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("spendpol_region"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, region),
      NULL },

    { ngx_string("spendpol_zone_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, zone_size),
      NULL },

    { ngx_string("spendpol_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, cache_size),
      NULL },

    { ngx_string("spendpol_cache_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, cache_redis),
      NULL },

    { ngx_string("spendpol_cache_embed_address"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_spendpol_cache_embed_address,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("spendpol_cache_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, cache_redis_timeout),
      NULL },

    { ngx_string("spendpol_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("spendpol_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, max_response_size),
      NULL },

    { ngx_string("spendpol_orphan_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, orphan_timeout),
      NULL },

    { ngx_string("spendpol_orphan_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, orphan_max_size),
      NULL },

    { ngx_string("spendpol_lease_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_spendpol_loc_conf_t, lease_wait),
      NULL },

    { ngx_string("spendpol_upstream_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, keepalive),
      NULL },

    { ngx_string("spendpol_upstream_keepalive_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, keepalive_timeout),
      NULL },

    { ngx_string("spendpol_upstream_keepalive_requests"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_spendpol_main_conf_t, keepalive_requests),
      NULL },

    { ngx_string("spendpol_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_spendpol_ssl_trusted_certificate,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_spendpol_module_ctx = {
    ngx_http_spendpol_add_variables,       /* preconfiguration */
    ngx_http_spendpol_init,                /* postconfiguration */

    ngx_http_spendpol_create_main_conf,    /* create main configuration */
    ngx_http_spendpol_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_spendpol_create_loc_conf,     /* create location configuration */
    ngx_http_spendpol_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_spendpol_module = {
    NGX_MODULE_V1,
    &ngx_http_spendpol_module_ctx,         /* module context */
    ngx_http_spendpol_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_spendpol_init_module,         /* init module */
    ngx_http_spendpol_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_spendpol_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_spendpol_vars[] = {

    { ngx_string("spendpol_upstream_url"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_UPSTREAM_URL,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_host"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_UPSTREAM_HOST,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_sni"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_UPSTREAM_SNI,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_authorization"), NULL,
      ngx_http_spendpol_variable,
      NGX_HTTP_SPENDPOL_VAR_UPSTREAM_AUTHORIZATION,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_x_api_key"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_UPSTREAM_X_API_KEY,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_api_key"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_UPSTREAM_API_KEY,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_upstream_goog_api_key"), NULL,
      ngx_http_spendpol_variable,
      NGX_HTTP_SPENDPOL_VAR_UPSTREAM_GOOG_API_KEY,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_anthropic_version"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_ANTHROPIC_VERSION,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_request_body"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_REQUEST_BODY,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("spendpol_audit_id"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_AUDIT_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("spendpol_trace_id"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_TRACE_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("spendpol_span_id"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_SPAN_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("spendpol_parent_id"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_PARENT_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("spendpol_traceparent"), NULL,
      ngx_http_spendpol_variable, NGX_HTTP_SPENDPOL_VAR_TRACEPARENT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_spendpol_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_spendpol_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_spendpol_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                   *p;
    size_t                    len;
    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_spendpol_module);

    if (ctx == NULL || !ctx->authenticated) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_URL:
        p = ctx->upstream_url.data;
        len = ctx->upstream_url.len;
        break;

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_HOST:
        p = ctx->upstream_host.data;
        len = ctx->upstream_host.len;
        break;

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_SNI:
        p = ctx->upstream_name.data;
        len = ctx->upstream_name.len;
        break;

    /* each provider's credential goes in that provider's own header */

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_AUTHORIZATION:
        p = ctx->upstream_authorization.data;
        len = ctx->upstream_authorization.len;
        break;

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_X_API_KEY:
        p = ctx->credential.data;
        len = ctx->provider == SP_PROVIDER_ANTHROPIC ? ctx->credential.len : 0;
        break;

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_API_KEY:
        p = ctx->credential.data;
        len = ctx->provider == SP_PROVIDER_AZURE ? ctx->credential.len : 0;
        break;

    case NGX_HTTP_SPENDPOL_VAR_UPSTREAM_GOOG_API_KEY:
        p = ctx->credential.data;
        len = ctx->provider == SP_PROVIDER_GOOGLE ? ctx->credential.len : 0;
        break;

    case NGX_HTTP_SPENDPOL_VAR_ANTHROPIC_VERSION:
        p = ctx->anthropic_version.data;
        len = ctx->anthropic_version.len;
        break;

    case NGX_HTTP_SPENDPOL_VAR_REQUEST_BODY:
        p = ctx->body.data;
        len = ctx->body.len;
        break;

    case NGX_HTTP_SPENDPOL_VAR_AUDIT_ID:
        p = ctx->audit_id;
        len = ngx_strlen(ctx->audit_id);
        break;

    case NGX_HTTP_SPENDPOL_VAR_TRACE_ID:
        p = ctx->trace_id;
        len = ngx_strlen(ctx->trace_id);
        break;

    case NGX_HTTP_SPENDPOL_VAR_SPAN_ID:
        p = ctx->span_id;
        len = ngx_strlen(ctx->span_id);
        break;

    case NGX_HTTP_SPENDPOL_VAR_PARENT_ID:
        p = ctx->parent_id;
        len = ngx_strlen(ctx->parent_id);
        break;

    default: /* NGX_HTTP_SPENDPOL_VAR_TRACEPARENT */
        p = ctx->traceparent;
        len = ngx_http_spendpol_traceparent(ctx, ctx->traceparent);
        break;
    }

    if (p == NULL) {
        p = (u_char *) "";
        len = 0;
    }

    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static void *
ngx_http_spendpol_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_spendpol_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     smcf->snapshot_dir = { 0, NULL };
     *     smcf->journal = NULL;
     *     smcf->region = { 0, NULL };
     *     smcf->ssl_trusted_certificate = { 0, NULL };
     *     smcf->ssl_checked = 0;
     */

    smcf->snapshot_interval = NGX_CONF_UNSET_MSEC;
    smcf->zone_size = NGX_CONF_UNSET_SIZE;
    smcf->cache_size = NGX_CONF_UNSET_SIZE;
    smcf->cache_redis = NGX_CONF_UNSET;
    smcf->cache_redis_timeout = NGX_CONF_UNSET_MSEC;
    smcf->keepalive = NGX_CONF_UNSET_UINT;
    smcf->keepalive_timeout = NGX_CONF_UNSET_MSEC;
    smcf->keepalive_requests = NGX_CONF_UNSET_UINT;

    return smcf;
}


static char *
ngx_http_spendpol_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_spendpol_main_conf_t *smcf = conf;

    u_char     *p;
    ngx_str_t   path, zone;

    if (smcf->snapshot_dir.data == NULL) {
        ngx_str_set(&smcf->snapshot_dir, NGX_HTTP_SPENDPOL_DEFAULT_SNAPSHOT);
    }

    while (smcf->snapshot_dir.len > 1
           && smcf->snapshot_dir.data[smcf->snapshot_dir.len - 1] == '/')
    {
        smcf->snapshot_dir.len--;
    }

    smcf->snapshot_path.len = smcf->snapshot_dir.len + 1
                              + sizeof(SP_SNAPSHOT_FILE) - 1;
    smcf->snapshot_path.data = ngx_pnalloc(cf->pool,
                                           smcf->snapshot_path.len + 1);
    if (smcf->snapshot_path.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(smcf->snapshot_path.data, smcf->snapshot_dir.data,
                   smcf->snapshot_dir.len);
    *p++ = '/';
    p = ngx_cpymem(p, SP_SNAPSHOT_FILE, sizeof(SP_SNAPSHOT_FILE) - 1);
    *p = '\0';

    ngx_conf_init_msec_value(smcf->snapshot_interval, 200);
    ngx_conf_init_size_value(smcf->zone_size, 4 * 1024 * 1024);

    if (smcf->zone_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol_zone_size must be at least %uz",
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    smcf->spend_path.len = smcf->snapshot_dir.len + 1
                           + sizeof(SP_SPEND_FILE) - 1;
    smcf->spend_path.data = ngx_pnalloc(cf->pool, smcf->spend_path.len + 1);
    if (smcf->spend_path.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(smcf->spend_path.data, smcf->snapshot_dir.data,
                   smcf->snapshot_dir.len);
    *p++ = '/';
    p = ngx_cpymem(p, SP_SPEND_FILE, sizeof(SP_SPEND_FILE) - 1);
    *p = '\0';

    ngx_str_set(&zone, "spendpol");

    smcf->shm_zone = ngx_shared_memory_add(cf, &zone, smcf->zone_size,
                                           &ngx_http_spendpol_module);
    if (smcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    smcf->shm_zone->init = ngx_http_spendpol_init_zone;
    smcf->shm_zone->data = smcf;

    if (ngx_http_spendpol_metrics_add_zone(cf, smcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_size_value(smcf->cache_size, 64 * 1024 * 1024);
    ngx_conf_init_value(smcf->cache_redis, 1);
    ngx_conf_init_msec_value(smcf->cache_redis_timeout, 5);

    if (smcf->cache_redis_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol_cache_redis_timeout must be at least "
                           "1ms");
        return NGX_CONF_ERROR;
    }

    if (smcf->cache_size && smcf->cache_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol_cache_size must be 0 (no cache) or at "
                           "least %uz", 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    if (smcf->cache_size) {
        ngx_str_set(&zone, "spendpol_cache");

        smcf->cache_zone = ngx_shared_memory_add(cf, &zone, smcf->cache_size,
                                                 &ngx_http_spendpol_module);
        if (smcf->cache_zone == NULL) {
            return NGX_CONF_ERROR;
        }

        smcf->cache_zone->init = ngx_http_spendpol_cache_init_zone;
        smcf->cache_zone->data = smcf;
    }

    if (smcf->region.data == NULL) {
        ngx_str_set(&smcf->region, "local");
    }

    if (smcf->journal == NULL) {
        ngx_str_set(&path, NGX_HTTP_SPENDPOL_DEFAULT_JOURNAL);

        /* the default directory may not exist on a fresh machine */
        if (ngx_create_dir("/var/lib/spendpol", 0750) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ngx_conf_log_error(NGX_LOG_WARN, cf, ngx_errno,
                               ngx_create_dir_n " \"/var/lib/spendpol\" "
                               "failed; set spendpol_journal");
        }

        smcf->journal_path = path;
        smcf->journal = ngx_conf_open_file(cf->cycle, &path);
        if (smcf->journal == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_spendpol_upstream_init_main_conf(cf, smcf);
}


static char *
ngx_http_spendpol_journal(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_spendpol_main_conf_t *smcf = conf;

    ngx_str_t  *value;

    if (smcf->journal) {
        return "is duplicate";
    }

    value = cf->args->elts;

    smcf->journal_path = value[1];
    smcf->journal = ngx_conf_open_file(cf->cycle, &value[1]);
    if (smcf->journal == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_spendpol_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_spendpol_loc_conf_t  *slcf;

    slcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_spendpol_loc_conf_t));
    if (slcf == NULL) {
        return NULL;
    }

    slcf->enable = NGX_CONF_UNSET;
    slcf->max_body_size = NGX_CONF_UNSET_SIZE;
    slcf->max_response_size = NGX_CONF_UNSET_SIZE;
    slcf->orphan_timeout = NGX_CONF_UNSET_MSEC;
    slcf->orphan_max_size = NGX_CONF_UNSET_SIZE;
    slcf->lease_wait = NGX_CONF_UNSET_MSEC;

    return slcf;
}


static char *
ngx_http_spendpol_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_spendpol_loc_conf_t *prev = parent;
    ngx_http_spendpol_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /* "spendpol" is not inherited: it configures its own location */
    ngx_conf_init_value(conf->enable, 0);

    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              1024 * 1024);
    ngx_conf_merge_size_value(conf->max_response_size,
                              prev->max_response_size, 8 * 1024 * 1024);
    ngx_conf_merge_msec_value(conf->orphan_timeout, prev->orphan_timeout,
                              60000);
    ngx_conf_merge_size_value(conf->orphan_max_size, prev->orphan_max_size,
                              8 * 1024 * 1024);
    ngx_conf_merge_msec_value(conf->lease_wait, prev->lease_wait, 50);

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * The body limit is ours, answered in JSON; nginx's own check would
     * answer 413 in HTML before we run. Bodies up to the limit stay in
     * memory, so they are parsed without touching a temporary file.
     */
    clcf->client_max_body_size = 0;

    if (clcf->client_body_buffer_size < conf->max_body_size) {
        clcf->client_body_buffer_size = conf->max_body_size;
    }

    if (ngx_http_spendpol_set_resolver(cf, clcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Providers are reached by name; without a "resolver" nginx could not
 * resolve them at run time, so the system's name servers are the default.
 */
static ngx_int_t
ngx_http_spendpol_set_resolver(ngx_conf_t *cf, ngx_http_core_loc_conf_t *clcf)
{
    u_char       *p, *last, *start, buf[4096];
    ssize_t       n;
    ngx_fd_t      fd;
    ngx_str_t    *name;
    ngx_array_t   names;

    if (clcf->resolver && clcf->resolver->connections.nelts) {
        return NGX_OK;
    }

    fd = ngx_open_file(NGX_HTTP_SPENDPOL_RESOLV_CONF, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, ngx_errno,
                           "spendpol: cannot read "
                           NGX_HTTP_SPENDPOL_RESOLV_CONF "; set \"resolver\" "
                           "to reach providers by host name");
        return NGX_OK;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf) - 1);
    ngx_close_file(fd);

    if (n <= 0) {
        return NGX_OK;
    }

    if (ngx_array_init(&names, cf->temp_pool, 4, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    buf[n] = '\n';
    last = buf + n + 1;

    for (p = buf; p < last; p++) {
        start = p;

        while (p < last && *p != '\n') {
            p++;
        }

        if (p - start <= 11
            || ngx_strncmp(start, "nameserver", 10) != 0
            || (start[10] != ' ' && start[10] != '\t'))
        {
            continue;
        }

        start += 10;

        while (start < p && (*start == ' ' || *start == '\t')) {
            start++;
        }

        last = start;

        while (last < p && *last != ' ' && *last != '\t' && *last != '\r'
               && *last != '%')
        {
            last++;
        }

        if (last == start) {
            last = buf + n + 1;
            continue;
        }

        name = ngx_array_push(&names);
        if (name == NULL) {
            return NGX_ERROR;
        }

        if (ngx_strlchr(start, last, ':')) {
            /* IPv6 addresses are written in brackets for ngx_parse_url() */
            name->len = last - start + 2;
            name->data = ngx_pnalloc(cf->pool, name->len);
            if (name->data == NULL) {
                return NGX_ERROR;
            }

            name->data[0] = '[';
            ngx_memcpy(name->data + 1, start, last - start);
            name->data[name->len - 1] = ']';

        } else {
            name->len = last - start;
            name->data = ngx_pstrdup(cf->pool, &(ngx_str_t) {
                                         name->len, start });
            if (name->data == NULL) {
                return NGX_ERROR;
            }
        }

        last = buf + n + 1;
    }

    if (names.nelts == 0) {
        return NGX_OK;
    }

    clcf->resolver = ngx_resolver_create(cf, names.elts, names.nelts);
    if (clcf->resolver == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The bundle is handed to each "spendpol on" location's proxy when that
 * line is read, so it is an http{} setting that must come first; a later
 * one would leave earlier locations on another bundle.
 */
static char *
ngx_http_spendpol_ssl_trusted_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_spendpol_main_conf_t *smcf = conf;

    ngx_str_t  *value;

    /* first: the check fills in the default, which is no duplicate */
    if (smcf->ssl_checked) {
        return "must come before the first \"spendpol on\"";
    }

    if (smcf->ssl_trusted_certificate.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "needs a path";
    }

    /* nginx resolves a relative path against the prefix in the same way */
    smcf->ssl_trusted_certificate = value[1];

    if (ngx_conf_full_name(cf->cycle, &smcf->ssl_trusted_certificate, 1)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The proxy would fail later on an unreadable bundle too, but naming
 * neither our directive nor the default; a missing default bundle used to
 * turn verification off, which is never acceptable. Only readability is
 * checked here: OpenSSL judges the contents when the proxy loads them.
 */
static ngx_int_t
ngx_http_spendpol_ssl_check(ngx_conf_t *cf,
    ngx_http_spendpol_main_conf_t *smcf)
{
    u_char           byte;
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_err_t        err;
    ngx_str_t       *path;
    ngx_uint_t       is_default;
    const char      *problem;
    ngx_file_info_t  fi;

    if (smcf->ssl_checked) {
        return NGX_OK;
    }

    path = &smcf->ssl_trusted_certificate;

    is_default = (path->data == NULL);

    if (is_default) {
        ngx_str_set(path, NGX_HTTP_SPENDPOL_CA_BUNDLE);
    }

    err = 0;
    problem = NULL;

    /* the path came from ngx_conf_full_name() or a literal: terminated */
    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;
        problem = "cannot be opened";

    } else {
        if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
            err = ngx_errno;
            problem = "cannot be read";

        } else if (!ngx_is_file(&fi)) {
            problem = "is not a file";

        } else {
            n = ngx_read_fd(fd, &byte, 1);

            if (n == -1) {
                err = ngx_errno;
                problem = "cannot be read";

            } else if (n == 0) {
                problem = "is empty";
            }
        }

        ngx_close_file(fd);
    }

    if (problem) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                           "spendpol: CA bundle \"%V\" (%s"
                           "spendpol_ssl_trusted_certificate\") %s; "
                           "providers' certificates are always verified: "
                           "set spendpol_ssl_trusted_certificate in http{} "
                           "to a readable PEM bundle, or install "
                           "ca-certificates", path,
                           is_default ? "the default of \"" : "set by \"",
                           problem);
        return NGX_ERROR;
    }

    smcf->ssl_checked = 1;

    return NGX_OK;
}


/*
 * Calls another module's location-level directive as if it were written
 * in the configuration: "spendpol on;" stands for a block of proxy_*
 * settings that users would otherwise have to copy exactly.
 */
static char *
ngx_http_spendpol_call(ngx_conf_t *cf, ngx_module_t *module,
    const char *name, ngx_uint_t nargs, ...)
{
    char                 *rv;
    void                 *conf;
    va_list               args;
    ngx_str_t            *value;
    ngx_uint_t            i;
    ngx_array_t          *saved, array;
    ngx_command_t        *cmd;
    ngx_http_conf_ctx_t  *ctx;

    for (cmd = module->commands; cmd->name.len; cmd++) {
        if (cmd->name.len == ngx_strlen(name)
            && ngx_strcmp(cmd->name.data, name) == 0)
        {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol: this nginx has no \"%s\" directive",
                           name);
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&array, cf->pool, nargs + 1, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    value = ngx_array_push_n(&array, nargs + 1);
    if (value == NULL) {
        return NGX_CONF_ERROR;
    }

    value[0].data = (u_char *) name;
    value[0].len = ngx_strlen(name);

    va_start(args, nargs);

    for (i = 1; i <= nargs; i++) {
        value[i].data = (u_char *) va_arg(args, char *);
        value[i].len = ngx_strlen(value[i].data);
    }

    va_end(args);

    ctx = cf->ctx;
    conf = ctx->loc_conf[module->ctx_index];

    saved = cf->args;
    cf->args = &array;

    rv = cmd->set(cf, cmd, conf);

    cf->args = saved;

    if (rv != NGX_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"spendpol on\" sets \"%s\" itself: %s; remove "
                           "\"%s\" from this location", name,
                           rv == NGX_CONF_ERROR ? "failed" : rv, name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_spendpol(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                           *rv;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_spendpol_main_conf_t  *smcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (!((ngx_http_spendpol_loc_conf_t *) conf)->enable) {
        return NGX_CONF_OK;
    }

    /* the proxy would silently replace another handler, such as metrics */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "conflicts with another content handler in this location "
               "(such as \"spendpol_metrics\")";
    }

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_spendpol_module);

    if (ngx_http_spendpol_upstream_add(cf, smcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

#define NGX_HTTP_SPENDPOL_PROXY(...)                                          \
    if (ngx_http_spendpol_call(cf, &ngx_http_proxy_module, __VA_ARGS__)       \
        != NGX_CONF_OK)                                                       \
    {                                                                         \
        return NGX_CONF_ERROR;                                                \
    }

    /*
     * The URL's host is our upstream{} block, which keeps connections
     * alive; the provider's own host goes in Host and in the TLS name.
     */
    NGX_HTTP_SPENDPOL_PROXY("proxy_pass", 1, "$spendpol_upstream_url");
    NGX_HTTP_SPENDPOL_PROXY("proxy_http_version", 1, "1.1");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "Host",
                            "$spendpol_upstream_host");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "Connection", "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_body", 1, "$spendpol_request_body");

    /* the organisation's credential replaces whatever the client sent */
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "Authorization",
                            "$spendpol_upstream_authorization");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Key", "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "x-api-key",
                            "$spendpol_upstream_x_api_key");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "api-key",
                            "$spendpol_upstream_api_key");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "x-goog-api-key",
                            "$spendpol_upstream_goog_api_key");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "anthropic-version",
                            "$spendpol_anthropic_version");

    /* attribution is ours, not the provider's business */
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Department",
                            "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Project", "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Route", "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Template",
                            "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2,
                            "X-Spendpol-Template-Variables", "");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Parent-Id",
                            "$spendpol_parent_id");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "traceparent",
                            "$spendpol_traceparent");

    /* usage is read from the body: it must not arrive compressed */
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "Accept-Encoding", "");

    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Trace-Id",
                            "$spendpol_trace_id");
    NGX_HTTP_SPENDPOL_PROXY("proxy_set_header", 2, "X-Spendpol-Span-Id",
                            "$spendpol_span_id");

    /*
     * Streams pass through as they arrive; JSON bodies are held by our
     * body filter, in memory and bounded, not by the proxy.
     */
    NGX_HTTP_SPENDPOL_PROXY("proxy_buffering", 1, "off");

    /*
     * A client that hangs up must not stop the metering of work the
     * provider bills: ngx_http_spendpol_watch_client() watches the client
     * instead of the proxy and keeps reading the answer once the request
     * has been sent (spendpol_orphan_timeout, spendpol_orphan_max_size).
     */
    NGX_HTTP_SPENDPOL_PROXY("proxy_ignore_client_abort", 1, "on");
    NGX_HTTP_SPENDPOL_PROXY("proxy_read_timeout", 1, "600s");
    NGX_HTTP_SPENDPOL_PROXY("proxy_connect_timeout", 1, "10s");

    /* a provider must not steer nginx's internals */
    NGX_HTTP_SPENDPOL_PROXY("proxy_ignore_headers", 5, "X-Accel-Redirect",
                            "X-Accel-Expires", "X-Accel-Limit-Rate",
                            "X-Accel-Buffering", "X-Accel-Charset");

    NGX_HTTP_SPENDPOL_PROXY("proxy_ssl_server_name", 1, "on");
    NGX_HTTP_SPENDPOL_PROXY("proxy_ssl_name", 1, "$spendpol_upstream_sni");

    /* never unverified: a bundle that cannot be read fails the config */
    if (ngx_http_spendpol_ssl_check(cf, smcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    NGX_HTTP_SPENDPOL_PROXY("proxy_ssl_verify", 1, "on");
    NGX_HTTP_SPENDPOL_PROXY("proxy_ssl_trusted_certificate", 1,
                            (char *) smcf->ssl_trusted_certificate.data);

    /*
     * nginx's default depth, 1, refuses a chain with two intermediates
     * (cross-signed roots do that); providers' chains are public ones.
     */
    NGX_HTTP_SPENDPOL_PROXY("proxy_ssl_verify_depth", 1, "4");

#undef NGX_HTTP_SPENDPOL_PROXY

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_spendpol_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_spendpol_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_spendpol_log_handler;

    return ngx_http_spendpol_filter_init(cf);
}


/* in the master (and nginx -t), before workers are forked */
static ngx_int_t
ngx_http_spendpol_init_module(ngx_cycle_t *cycle)
{
    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_spendpol_module)
        == NULL)
    {
        return NGX_OK;
    }

    return ngx_http_spendpol_tokenizer_init(cycle);
}


static ngx_int_t
ngx_http_spendpol_init_process(ngx_cycle_t *cycle)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_spendpol_module);
    if (smcf == NULL) {
        return NGX_OK;
    }

    ngx_http_spendpol_random_init(smcf);

    if (ngx_http_spendpol_tokenizer_init_worker(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_spendpol_snapshot_init_worker(cycle, smcf);
}


static void
ngx_http_spendpol_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_spendpol_module);
    if (smcf == NULL) {
        return;
    }

    ngx_http_spendpol_redis_exit_worker();
    ngx_http_spendpol_upstream_exit_worker(smcf);
    ngx_http_spendpol_route_exit_worker();
    ngx_http_spendpol_policy_exit_worker();
    ngx_http_spendpol_snapshot_exit_worker(smcf);
    ngx_http_spendpol_tokenizer_exit_worker();
}


/*
 * spendpol_cache_embed_address ADDRESS:PORT: where the semantic cache's
 * embedding calls go (a plain-HTTP listener of this nginx with the
 * spendpol locations), instead of the address the client reached.
 */
static char *
ngx_http_spendpol_cache_embed_address(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_spendpol_main_conf_t *smcf = conf;

    ngx_url_t   u;
    ngx_str_t  *value;

    if (smcf->cache_embed_address) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
        || u.no_port || u.uri.len)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "spendpol_cache_embed_address must be a numeric "
                           "address and port of a plain-HTTP listener, "
                           "such as 127.0.0.1:8080, not \"%V\"%s%s",
                           &value[1], u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    smcf->cache_embed_address = &u.addrs[0];

    return NGX_CONF_OK;
}
