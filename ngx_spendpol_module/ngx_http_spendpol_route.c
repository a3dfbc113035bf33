
/*
 * Copyright (C) Spendpol
 *
 * Stages 4 and 6 of the request path: prompt templates and routing
 * rules (libspendpol's sp_template.h and sp_route.h decide; this is the
 * glue). A routed request has targets, the first and then its fallbacks,
 * each made whole before admission (body, path, credential, address), so
 * that a fallback attempt only switches (ngx_http_spendpol_fallback.c).
 */


#include <sp_scan.h>

#include "ngx_http_spendpol_module.h"


/* an organisation's rules, compiled once per snapshot by each worker */
#define NGX_HTTP_SPENDPOL_RULES_CACHED  64


static void *ngx_http_spendpol_rules_compile(const char *json, size_t len,
    char *err, size_t errlen);
static void ngx_http_spendpol_rules_free(void *set);
static int64_t ngx_http_spendpol_route_prompt_tokens(void *data);
static int64_t ngx_http_spendpol_route_budget_used(void *data,
    sp_str_t budget_id);
static int ngx_http_spendpol_route_usable(void *data,
    const sp_route_target_t *target, char *why, size_t whylen);
static ngx_int_t ngx_http_spendpol_target_make(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_target_t *sent,
    const sp_route_target_t *rt, ngx_http_spendpol_target_t *t);
static ngx_int_t ngx_http_spendpol_target_model(ngx_http_request_t *r,
    ngx_http_spendpol_target_t *t);
static ngx_int_t ngx_http_spendpol_route_header(ngx_http_request_t *r,
    const char *name, u_char *value, size_t len);


/* a worker is one thread: plain statics, freed at exit */
static ngx_http_spendpol_compiled_t
    ngx_http_spendpol_rules_cache[NGX_HTTP_SPENDPOL_RULES_CACHED];


/*
 * Stage 4: X-Spendpol-Template: slug, slug@3 or slug@production builds
 * the request's messages from the organisation's template. A key that
 * requires templates refuses requests without one. NGX_DECLINED goes
 * on; anything else was sent.
 */
ngx_int_t
ngx_http_spendpol_template_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char                          *out;
    char                             err[512], code[SP_TEMPLATE_CODE_LEN];
    size_t                           size, len;
    int64_t                          version;
    ngx_int_t                        rc;
    sp_str_t                         org, slug, label, record;
    ngx_table_elt_t                 *h, *vars;
    sp_template_result_t             res;
    ngx_http_spendpol_main_conf_t   *smcf;
    const sp_snapshot_template_t    *tmpl;

    h = ngx_http_spendpol_request_header(r, "X-Spendpol-Template",
                                         sizeof("X-Spendpol-Template") - 1);

    if (h == NULL || h->value.len == 0) {
        if (!ctx->template_required) {
            return NGX_DECLINED;
        }

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                   "permission_error", "template_required",
                                   "this key may only send requests built "
                                   "from a prompt template: name one with "
                                   "the header X-Spendpol-Template: {slug}");
    }

    if (ctx->ungoverned || ctx->endpoint == NULL
        || ctx->endpoint->meter != SP_METER_TOKENS)
    {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "template_not_applicable",
                                   "prompt templates apply to chat and "
                                   "completion endpoints only");
    }

    if (sp_template_ref_parse((char *) h->value.data, h->value.len, &slug,
                              &version, &label, err, sizeof(err))
        != SP_OK)
    {
        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_request_error",
                                            "invalid_template", err);
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;

    tmpl = sp_snapshot_find_template(&smcf->snapshot, org, slug);

    if (tmpl == NULL) {
        ngx_snprintf((u_char *) err, sizeof(err) - 1,
                     "prompt template \"%*s\" does not exist in your "
                     "organisation: create it with POST /prompts on the "
                     "admin API%Z", ngx_min(slug.len, 64), slug.data);
        err[sizeof(err) - 1] = '\0';

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_request_error",
                                            "template_not_found", err);
    }

    record = sp_snapshot_str(&smcf->snapshot, tmpl->record);

    vars = ngx_http_spendpol_request_header(r,
                                    "X-Spendpol-Template-Variables",
                                    sizeof("X-Spendpol-Template-Variables")
                                    - 1);

    size = sp_template_apply_bound(record.len, ctx->body.len,
                                   vars ? vars->value.len : 0);

    out = ngx_pnalloc(r->pool, size + 1);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    code[0] = '\0';

    if (sp_template_apply(ctx->provider, record.data, record.len, version,
                          label, (char *) ctx->body.data, ctx->body.len,
                          vars ? (char *) vars->value.data : NULL,
                          vars ? vars->value.len : 0, (char *) out, size,
                          &len, &res, code, sizeof(code), err, sizeof(err))
        != SP_OK)
    {
        /* the journal keeps the code until the log phase */
        ctx->route_code = ngx_pnalloc(r->pool, sizeof(code));
        if (ctx->route_code == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_cpystrn(ctx->route_code,
                    (u_char *) (code[0] ? code : "invalid_template"),
                    sizeof(code));

        if (ngx_strcmp(ctx->route_code, "template_invalid") == 0
            || ngx_strcmp(ctx->route_code, "output_too_small") == 0)
        {
            /* controld validated the record: this is ours, not the client's */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "spendpol: template \"%*s\": %s: %s",
                          ngx_min(slug.len, 64), slug.data, code, err);

            return ngx_http_spendpol_send_error(r, ctx,
                                   NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "api_error", "template_invalid",
                                   "the gateway could not apply this "
                                   "template; its log says why");
        }

        return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_request_error",
                                            (char *) ctx->route_code, err);
    }

    out[len] = '\0';
    ctx->body.data = out;
    ctx->body.len = len;

    ngx_memzero(ctx->request, sizeof(sp_request_info_t));

    rc = ngx_http_spendpol_parse_body(r, ctx);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_cpystrn(ctx->template_id, (u_char *) res.id, sizeof(ctx->template_id));
    ctx->template_version = res.version;
    ctx->template_applied = 1;

    return NGX_DECLINED;
}


/*
 * Stage 6: the organisation's routing rules. A rule that applies gives
 * the request its targets; the first becomes the request's provider,
 * model, body and address. NGX_DECLINED goes on (routed or not);
 * anything else was sent.
 */
ngx_int_t
ngx_http_spendpol_route_stage(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    size_t                           len;
    ngx_str_t                        org;
    ngx_uint_t                       i, n, first;
    ngx_time_t                      *tp;
    sp_str_t                         org_id;
    ngx_table_elt_t                 *h;
    sp_route_set_t                  *set;
    sp_route_request_t               req;
    sp_route_decision_t             *d;
    ngx_http_spendpol_target_t       sent;
    ngx_http_spendpol_main_conf_t   *smcf;
    const sp_snapshot_org_t         *org_record;
    const sp_snapshot_routes_t      *routes;

    ctx->client_provider = ctx->provider;
    ctx->client_include_usage = ctx->request->include_usage ? 1 : 0;

    len = ngx_strlen(ctx->request->model);

    ctx->requested_model.data = ngx_pnalloc(r->pool, len + 1);
    if (ctx->requested_model.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->requested_model.data, ctx->request->model, len + 1);
    ctx->requested_model.len = len;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (ctx->ungoverned || ctx->endpoint == NULL
        || ctx->endpoint->meter != SP_METER_TOKENS
        || smcf->snapshot_map == NULL
        || smcf->snapshot.header->entries[SP_TABLE_ROUTES] == 0)
    {
        return NGX_DECLINED;
    }

    org_id.data = (char *) ctx->org_id.data;
    org_id.len = ctx->org_id.len;

    routes = sp_snapshot_find_routes(&smcf->snapshot, org_id);

    if (routes == NULL) {
        return NGX_DECLINED;
    }

    org = ctx->org_id;

    set = ngx_http_spendpol_compiled(r, ngx_http_spendpol_rules_cache,
                                     NGX_HTTP_SPENDPOL_RULES_CACHED, &org,
                                     sp_snapshot_str(&smcf->snapshot,
                                                     routes->rules),
                                     ngx_http_spendpol_rules_compile,
                                     ngx_http_spendpol_rules_free,
                                     "routing rules");

    if (set == NULL) {
        return NGX_DECLINED;
    }

    h = ngx_http_spendpol_request_header(r, "X-Spendpol-Route",
                                         sizeof("X-Spendpol-Route") - 1);

    if (h && h->value.len == 4
        && ngx_strncasecmp(h->value.data, (u_char *) "skip", 4) == 0)
    {
        org_record = sp_snapshot_find_org(&smcf->snapshot, org_id);

        if (org_record == NULL
            || !(org_record->flags & SP_ORG_ROUTE_SKIP_FORBIDDEN))
        {
            ctx->route_skipped = 1;
        }
    }

    tp = ngx_timeofday();

    ngx_memzero(&req, sizeof(sp_route_request_t));
    req.provider = ctx->provider;
    req.model.data = (char *) ctx->requested_model.data;
    req.model.len = ctx->requested_model.len;
    req.api_key_id.data = (char *) ctx->key_id.data;
    req.api_key_id.len = ctx->key_id.len;
    req.agent_id.data = (char *) ctx->agent_id.data;
    req.agent_id.len = ctx->agent_id.len;
    req.department.data = (char *) ctx->department.data;
    req.department.len = ctx->department.len;
    req.project.data = (char *) ctx->project.data;
    req.project.len = ctx->project.len;
    req.trace_id.data = (char *) ctx->trace_id;
    req.trace_id.len = ngx_strlen(ctx->trace_id);
    req.has_tools = ctx->request->has_tools;
    req.has_images = ctx->request->has_images;
    req.now_ms = (int64_t) tp->sec * 1000 + tp->msec;
    req.random = ngx_http_spendpol_random(smcf);
    req.prompt_tokens = ngx_http_spendpol_route_prompt_tokens;
    req.budget_used_ppm = ngx_http_spendpol_route_budget_used;
    req.usable = ngx_http_spendpol_route_usable;
    req.data = r;

    d = ngx_palloc(r->pool, sizeof(sp_route_decision_t));
    if (d == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sp_route_evaluate(set, &req, d);

    d->explain[sizeof(d->explain) - 1] = '\0';

    if (d->explain[0]) {
        ctx->route_note.len = ngx_strlen(d->explain);
        ctx->route_note.data = ngx_pnalloc(r->pool, ctx->route_note.len);
        if (ctx->route_note.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ctx->route_note.data, d->explain, ctx->route_note.len);
    }

    if (!d->matched || d->ntargets == 0) {
        return NGX_DECLINED;
    }

    ctx->route_matched = 1;

    ctx->route_rule.len = ngx_strlen(d->rule_id);
    ctx->route_rule.data = ngx_pnalloc(r->pool, ctx->route_rule.len);
    if (ctx->route_rule.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->route_rule.data, d->rule_id, ctx->route_rule.len);

    if (ctx->route_skipped) {
        /*
         * The client asked to skip routing: its request goes first as
         * sent, and the rule's fallbacks still stand behind it
         * (docs/routing.md).
         */
        d->targets[0].provider = ctx->provider;
        sp_field_copy(d->targets[0].model, sizeof(d->targets[0].model),
                      (char *) ctx->requested_model.data,
                      ctx->requested_model.len);
    }

    ngx_memzero(&sent, sizeof(ngx_http_spendpol_target_t));
    ngx_http_spendpol_route_save(ctx, &sent);
    sent.model = ctx->requested_model;

    ctx->targets = ngx_pcalloc(r->pool,
                          d->ntargets * sizeof(ngx_http_spendpol_target_t));
    if (ctx->targets == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 0;

    for (i = 0; i < d->ntargets && i < SP_ROUTE_MAX_TARGETS; i++) {

        switch (ngx_http_spendpol_target_make(r, ctx, &sent, &d->targets[i],
                                              &ctx->targets[n]))
        {
        case NGX_OK:
            n++;
            break;

        case NGX_DECLINED:
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: rule %V: target %s/%s left out: it "
                          "cannot take this request",
                          &ctx->route_rule,
                          sp_provider_name(d->targets[i].provider),
                          d->targets[i].model);
            break;

        default:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_http_spendpol_route_load(ctx, &sent);

    if (n == 0) {
        ctx->targets = NULL;
        ctx->route_matched = 0;
        return NGX_DECLINED;
    }

    ctx->ntargets = n;
    ctx->max_attempts = d->max_attempts > 0 ? (ngx_uint_t) d->max_attempts
                                            : n;
    ctx->max_attempts = ngx_min(ctx->max_attempts, n);
    ctx->attempt_timeout = (ngx_msec_t) d->attempt_timeout_ms;
    ctx->cooldown_failures = d->cooldown_failures > 0
                             ? (uint32_t) d->cooldown_failures
                             : SP_ROUTE_DEFAULT_COOLDOWN_FAILURES;
    ctx->cooldown_ms = d->cooldown_ms > 0
                       ? d->cooldown_ms
                       : SP_ROUTE_DEFAULT_COOLDOWN_SECONDS * 1000;

    /* a target cooling down is passed over, unless it is the last */
    first = 0;

    while (first + 1 < n
           && ngx_http_spendpol_fallback_cooling(smcf,
                                       ctx->targets[first].cooldown_hash,
                                       req.now_ms))
    {
        ngx_http_spendpol_fallback_note(r, ctx, &ctx->targets[first],
                                        "cooling");
        first++;
    }

    ctx->target = first;

    ngx_http_spendpol_route_load(ctx, &ctx->targets[first]);

    return NGX_DECLINED;
}


static void *
ngx_http_spendpol_rules_compile(const char *json, size_t len, char *err,
    size_t errlen)
{
    return sp_route_compile(json, len, err, errlen);
}


static void
ngx_http_spendpol_rules_free(void *set)
{
    sp_route_free(set);
}


void
ngx_http_spendpol_route_exit_worker(void)
{
    ngx_http_spendpol_compiled_free(ngx_http_spendpol_rules_cache,
                                    NGX_HTTP_SPENDPOL_RULES_CACHED,
                                    ngx_http_spendpol_rules_free);
}


static int64_t
ngx_http_spendpol_route_prompt_tokens(void *data)
{
    ngx_http_request_t  *r = data;

    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    return sp_request_prompt_estimate(ctx->request);
}


static int64_t
ngx_http_spendpol_route_budget_used(void *data, sp_str_t budget_id)
{
    ngx_http_request_t  *r = data;

    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    return ngx_http_spendpol_budget_used_ppm(r, ctx, budget_id);
}


/*
 * A target can take the request when its provider has a credential in
 * the organisation, and, for another provider than the client's, when
 * the request is an OpenAI chat completion that translates faithfully.
 */
static int
ngx_http_spendpol_route_usable(void *data, const sp_route_target_t *target,
    char *why, size_t whylen)
{
    ngx_http_request_t  *r = data;

    sp_str_t                        org, name;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_main_conf_t  *smcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    name = sp_str_from(sp_provider_name(target->provider));

    if (sp_snapshot_find_provider(&smcf->snapshot, org, name) == NULL) {
        sp_errorf(why, whylen, "%s has no credential in the organisation",
                  name.data);
        return 0;
    }

    if (target->provider == ctx->provider) {
        return 1;
    }

    if (ctx->provider != SP_PROVIDER_OPENAI
        || !(ctx->endpoint->flags & SP_ENDPOINT_CHAT))
    {
        sp_errorf(why, whylen, "only OpenAI chat completions are translated "
                  "to another provider");
        return 0;
    }

    return sp_translate_check(target->provider, (char *) ctx->body.data,
                              ctx->body.len, why, whylen);
}


/*
 * Makes target rt of the request as sent: NGX_OK, NGX_DECLINED when it
 * cannot take the request after all, NGX_ERROR. Leaves ctx's forwarding
 * fields pointing at t's (the caller loads what it chooses).
 */
static ngx_int_t
ngx_http_spendpol_target_make(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_target_t *sent,
    const sp_route_target_t *rt, ngx_http_spendpol_target_t *t)
{
    u_char                         *out, *p;
    char                            err[256];
    size_t                          size, len;
    uint64_t                        hash;
    sp_str_t                        org, name, base_url, api_key;
    ngx_int_t                       rc;
    const char                     *scheme;
    sp_translate_request_t          tr;
    ngx_http_spendpol_main_conf_t  *smcf;
    const sp_snapshot_provider_t   *provider;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    *t = *sent;

    t->provider = rt->provider;
    t->provider_name.data = (u_char *) sp_provider_name(rt->provider);
    t->provider_name.len = ngx_strlen(t->provider_name.data);

    len = ngx_strlen(rt->model);

    t->model.data = ngx_pnalloc(r->pool, len + 1);
    if (t->model.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(t->model.data, rt->model, len + 1);
    t->model.len = len;

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;
    name.data = (char *) t->provider_name.data;
    name.len = t->provider_name.len;

    provider = sp_snapshot_find_provider(&smcf->snapshot, org, name);

    if (provider == NULL) {
        return NGX_DECLINED;
    }

    if (rt->provider == sent->provider) {
        rc = ngx_http_spendpol_target_model(r, t);

        if (rc != NGX_OK) {
            return rc;
        }

    } else {
        size = sp_translate_request_bound(sent->body.len);

        out = ngx_pnalloc(r->pool, size + 1);
        if (out == NULL) {
            return NGX_ERROR;
        }

        if (sp_translate_request(rt->provider, (char *) t->model.data,
                                 t->model.len, (char *) sent->body.data,
                                 sent->body.len, (char *) out, size, &tr, err,
                                 sizeof(err))
            != SP_OK)
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "spendpol: not translated to %V: %s",
                          &t->provider_name, err);
            return NGX_DECLINED;
        }

        out[tr.body_len] = '\0';
        t->body.data = out;
        t->body.len = tr.body_len;

        t->rest.len = ngx_strlen(tr.path);
        t->rest.data = ngx_pnalloc(r->pool, t->rest.len);
        if (t->rest.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(t->rest.data, tr.path, t->rest.len);

        t->args.len = ngx_strlen(tr.query);
        t->args.data = ngx_pnalloc(r->pool, t->args.len + 1);
        if (t->args.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(t->args.data, tr.query, t->args.len);

        t->translate = 1;
        t->strip_usage = 0;
    }

    t->endpoint = sp_endpoint_find(t->provider, "POST", 4,
                                   (char *) t->rest.data, t->rest.len);

    if (t->endpoint == NULL) {
        return NGX_DECLINED;
    }

    t->request = ngx_pcalloc(r->pool, sizeof(sp_request_info_t));
    if (t->request == NULL) {
        return NGX_ERROR;
    }

    if (sp_request_parse(t->provider, (char *) t->body.data, t->body.len,
                         t->request, err, sizeof(err))
        != SP_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "spendpol: the request for %V does not parse: %s",
                      &t->provider_name, err);
        return NGX_DECLINED;
    }

    sp_request_from_path(t->provider, (char *) t->rest.data, t->rest.len,
                         t->request);

    base_url = sp_snapshot_str(&smcf->snapshot, provider->base_url);
    api_key = sp_snapshot_str(&smcf->snapshot, provider->api_key);

    t->credential.data = ngx_pnalloc(r->pool, api_key.len + 1);
    if (t->credential.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(t->credential.data, api_key.data, api_key.len);
    t->credential.len = api_key.len;

    ngx_str_null(&t->authorization);

    scheme = sp_provider(t->provider)->auth_scheme;

    if (scheme[0] != '\0') {
        t->authorization.len = ngx_strlen(scheme) + api_key.len;
        t->authorization.data = ngx_pnalloc(r->pool, t->authorization.len);
        if (t->authorization.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(t->authorization.data, scheme, ngx_strlen(scheme));
        ngx_memcpy(p, api_key.data, api_key.len);
    }

    if (t->provider == SP_PROVIDER_ANTHROPIC) {
        if (sent->provider != SP_PROVIDER_ANTHROPIC) {
            ngx_str_set(&t->anthropic_version,
                        NGX_HTTP_SPENDPOL_ANTHROPIC_VERSION);
        }

    } else {
        ngx_str_null(&t->anthropic_version);
    }

    /* the base URL is parsed into ctx's fields, then kept in t */
    ngx_http_spendpol_route_load(ctx, t);

    rc = ngx_http_spendpol_upstream_target(r, ctx, (u_char *) base_url.data,
                                           base_url.len, &ctx->args);

    if (rc != NGX_OK) {
        return rc == NGX_ERROR ? NGX_ERROR : NGX_DECLINED;
    }

    ngx_http_spendpol_route_save(ctx, t);

    t->ssl = ctx->upstream_url.len > 5
             && (ctx->upstream_url.data[4] | 0x20) == 's';

    /* even an address literal is judged (the outbound allow list) */
    t->resolved = 0;
    t->dropped = 0;

    /* cooldowns are per organisation (its credential), provider, model */
    hash = sp_hash64(ctx->org_id.data, ctx->org_id.len, 0x53505254ULL);
    hash = sp_hash64(t->provider_name.data, t->provider_name.len, hash);
    hash = sp_hash64(t->model.data, t->model.len, hash);

    t->cooldown_hash = hash ? hash : 1;

    return NGX_OK;
}


/*
 * The model of a target of the client's own provider: in the path for
 * Google and Azure deployments, else the body's "model" member.
 */
static ngx_int_t
ngx_http_spendpol_target_model(ngx_http_request_t *r,
    ngx_http_spendpol_target_t *t)
{
    u_char           *p, *q, *last, *out, *start, *end;
    size_t            len, n;
    ngx_uint_t        i;
    sp_json_tape_t    tape;
    sp_json_token_t  *tok;

    if (t->provider == SP_PROVIDER_GOOGLE
        || (t->provider == SP_PROVIDER_AZURE
            && t->rest.len > sizeof("/openai/deployments/") - 1
            && ngx_strncmp(t->rest.data, "/openai/deployments/",
                           sizeof("/openai/deployments/") - 1) == 0))
    {
        /* ".../models/{model}:verb" or "/openai/deployments/{name}/..." */
        last = t->rest.data + t->rest.len;

        if (t->provider == SP_PROVIDER_GOOGLE) {
            start = ngx_strnstr(t->rest.data, "/models/", t->rest.len);
            if (start == NULL) {
                return NGX_DECLINED;
            }

            start += sizeof("/models/") - 1;
            end = ngx_strlchr(start, last, ':');

        } else {
            start = t->rest.data + sizeof("/openai/deployments/") - 1;
            end = ngx_strlchr(start, last, '/');
        }

        if (end == NULL) {
            return NGX_DECLINED;
        }

        /* escaped as a path segment (":" too: Google's verb follows it) */
        n = t->model.len
            + 2 * ngx_escape_uri(NULL, t->model.data, t->model.len,
                                 NGX_ESCAPE_URI_COMPONENT);

        out = ngx_pnalloc(r->pool, t->rest.len - (end - start) + n);
        if (out == NULL) {
            return NGX_ERROR;
        }

        q = ngx_cpymem(out, t->rest.data, start - t->rest.data);
        q = (u_char *) ngx_escape_uri(q, t->model.data, t->model.len,
                                      NGX_ESCAPE_URI_COMPONENT);
        q = ngx_cpymem(q, end, last - end);

        t->rest.data = out;
        t->rest.len = q - out;

        return NGX_OK;
    }

    sp_json_tape_init(&tape);

    if (sp_json_scan(&tape, (char *) t->body.data, t->body.len) != SP_OK) {
        sp_json_tape_free(&tape);
        return NGX_DECLINED;
    }

    i = sp_json_get(&tape, 0, "model");

    if (i == 0 || tape.token[i].type != SP_JSON_STRING) {
        sp_json_tape_free(&tape);
        return NGX_DECLINED;
    }

    tok = &tape.token[i];

    /* the string as written, its quotes included */
    start = (u_char *) tok->text - 1;
    end = (u_char *) tok->text + tok->raw_len + 1;

    sp_json_tape_free(&tape);

    len = t->body.len - (end - start) + 2 + 6 * t->model.len;

    out = ngx_pnalloc(r->pool, len + 1);
    if (out == NULL) {
        return NGX_ERROR;
    }

    q = ngx_cpymem(out, t->body.data, start - t->body.data);
    *q++ = '"';

    for (i = 0; i < t->model.len; i++) {
        p = &t->model.data[i];

        if (*p == '"' || *p == '\\') {
            *q++ = '\\';
            *q++ = *p;

        } else if (*p < 0x20) {
            q = ngx_sprintf(q, "\\u%04xd", (int) *p);

        } else {
            *q++ = *p;
        }
    }

    *q++ = '"';
    q = ngx_cpymem(q, end, t->body.data + t->body.len - end);
    *q = '\0';

    t->body.data = out;
    t->body.len = q - out;

    return NGX_OK;
}


/* makes t the request's current target */
void
ngx_http_spendpol_route_load(ngx_http_spendpol_ctx_t *ctx,
    ngx_http_spendpol_target_t *t)
{
    ctx->provider = t->provider;
    ctx->provider_name = t->provider_name;
    ctx->rest = t->rest;
    ctx->args = t->args;
    ctx->endpoint = t->endpoint;
    ctx->request = t->request;
    ctx->body = t->body;
    ctx->credential = t->credential;
    ctx->upstream_authorization = t->authorization;
    ctx->anthropic_version = t->anthropic_version;
    ctx->upstream_url = t->upstream_url;
    ctx->upstream_host = t->upstream_host;
    ctx->upstream_name = t->upstream_name;
    ctx->upstream_port = t->upstream_port;
    ctx->upstream_addrs = t->upstream_addrs;
    ctx->upstream_naddrs = t->upstream_naddrs;
    ctx->translate = t->translate;
    ctx->strip_usage = t->strip_usage;
    ctx->priced = t->priced;
    ctx->fallback_price = t->fallback_price;
    ctx->price = t->price;
}


/* keeps ctx's current forwarding fields in t */
void
ngx_http_spendpol_route_save(ngx_http_spendpol_ctx_t *ctx,
    ngx_http_spendpol_target_t *t)
{
    t->provider = ctx->provider;
    t->provider_name = ctx->provider_name;
    t->rest = ctx->rest;
    t->args = ctx->args;
    t->endpoint = ctx->endpoint;
    t->request = ctx->request;
    t->body = ctx->body;
    t->credential = ctx->credential;
    t->authorization = ctx->upstream_authorization;
    t->anthropic_version = ctx->anthropic_version;
    t->upstream_url = ctx->upstream_url;
    t->upstream_host = ctx->upstream_host;
    t->upstream_name = ctx->upstream_name;
    t->upstream_port = ctx->upstream_port;
    t->upstream_addrs = ctx->upstream_addrs;
    t->upstream_naddrs = ctx->upstream_naddrs;
    t->translate = ctx->translate;
    t->strip_usage = ctx->strip_usage;
    t->priced = ctx->priced;
    t->fallback_price = ctx->fallback_price;
    t->price = ctx->price;
}


void
ngx_http_spendpol_route_keep(ngx_http_spendpol_ctx_t *ctx)
{
    if (ctx->targets) {
        ngx_http_spendpol_route_save(ctx, &ctx->targets[ctx->target]);
    }
}


/*
 * The worst case a routed request reserves: the largest of its targets'
 * (each priced at its own provider's price), so that any fallback is
 * covered. price_target() prices the current target as the handler does.
 */
void
ngx_http_spendpol_route_worst_case(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx,
    void (*price_target)(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx))
{
    int64_t     worst, hold;
    ngx_uint_t  i, current;

    current = ctx->target;
    worst = 0;
    hold = 0;

    ngx_http_spendpol_route_save(ctx, &ctx->targets[current]);

    for (i = 0; i < ctx->ntargets; i++) {
        ngx_http_spendpol_route_load(ctx, &ctx->targets[i]);

        ctx->priced = 0;
        ctx->fallback_price = 0;
        ctx->worst_nano = 0;
        ctx->hold_tokens = 0;

        price_target(r, ctx);

        ngx_http_spendpol_route_save(ctx, &ctx->targets[i]);
        ctx->targets[i].worst_nano = ctx->worst_nano;

        if (i != current && !ctx->priced
            && ctx->endpoint->meter != SP_METER_FREE)
        {
            /* its cost could not be held, nor checked against a budget */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "spendpol: fallback %V/%V left out: no price",
                          &ctx->targets[i].provider_name,
                          &ctx->targets[i].model);

            ngx_http_spendpol_fallback_note(r, ctx, &ctx->targets[i],
                                            "unpriced");
            ctx->targets[i].dropped = 1;
            continue;
        }

        worst = ngx_max(worst, ctx->worst_nano);
        hold = ngx_max(hold, ctx->hold_tokens);
    }

    ngx_http_spendpol_route_load(ctx, &ctx->targets[current]);

    ctx->worst_nano = worst;
    ctx->hold_tokens = hold;
}


/* X-Spendpol-Routed, -Requested-Model, -Attempts, -Template-Id, -Version */
ngx_int_t
ngx_http_spendpol_route_headers(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    u_char      buf[NGX_INT64_LEN + 1], *p, *value;
    size_t      len;
    ngx_uint_t  routed;

    if (ctx->template_applied) {
        p = ngx_sprintf(buf, "%L", ctx->template_version);

        if (ngx_http_spendpol_route_header(r, "X-Spendpol-Template-Id",
                                           ctx->template_id,
                                           ngx_strlen(ctx->template_id))
            != NGX_OK
            || ngx_http_spendpol_route_header(r,
                                              "X-Spendpol-Template-Version",
                                              buf, p - buf)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->requested_model.data == NULL) {
        return NGX_OK;
    }

    routed = ctx->targets
             && (ctx->provider != ctx->client_provider
                 || ctx->targets[ctx->target].model.len
                    != ctx->requested_model.len
                 || ngx_strncmp(ctx->targets[ctx->target].model.data,
                                ctx->requested_model.data,
                                ctx->requested_model.len) != 0);

    if (ngx_http_spendpol_route_header(r, "X-Spendpol-Routed",
                                       (u_char *) (routed ? "true" : "false"),
                                       routed ? 4 : 5)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    value = ctx->requested_model.data;
    len = ctx->requested_model.len;

    if (len && !sp_header_value_ok((char *) value, len)) {
        value = ngx_pnalloc(r->pool, 3 * len);
        if (value == NULL) {
            return NGX_ERROR;
        }

        len = sp_header_value_escape((char *) ctx->requested_model.data,
                                     ctx->requested_model.len,
                                     (char *) value, 3 * len);
    }

    if (len
        && ngx_http_spendpol_route_header(r, "X-Spendpol-Requested-Model",
                                          value, len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->attempts > 1) {
        p = ngx_sprintf(buf, "%ui", ctx->attempts);

        if (ngx_http_spendpol_route_header(r, "X-Spendpol-Attempts", buf,
                                           p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_spendpol_route_header(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len)
{
    return ngx_http_spendpol_add_header(r, &r->headers_out.headers, name,
                                        value, len);
}
