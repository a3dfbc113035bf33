
/*
 * Copyright (C) Spendpol
 *
 * The log phase: one journal line per governed request, appended with a
 * single write() to the O_APPEND file nginx opened for us (so "nginx -s
 * reopen" works); controld loads it into PostgreSQL exactly once.
 */


#include "ngx_http_spendpol_module.h"


#define ngx_http_spendpol_copy_field(field, str)                              \
    sp_field_copy(rec.field, sizeof(rec.field), (char *) (str).data,          \
                  (str).len)


static void ngx_http_spendpol_journal_policy(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_journal_record_t *rec);


ngx_int_t
ngx_http_spendpol_log_handler(ngx_http_request_t *r)
{
    u_char                          line[SP_JOURNAL_LINE_MAX + 1], *start;
    size_t                          len;
    ngx_uint_t                      torn;
    ssize_t                         n;
    uint64_t                        now;
    ngx_str_t                       str;
    sp_journal_record_t             rec;
    ngx_http_spendpol_ctx_t        *ctx;
    ngx_http_spendpol_main_conf_t  *smcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx == NULL || ctx->journaled) {
        return NGX_OK;
    }

    ctx->journaled = 1;

    /*
     * Requests without a valid key are not anybody's spend, only a
     * refusal in the metrics; a raw provider key's refusal is journaled
     * for its shadow-AI alert.
     */
    if (!ctx->authenticated && !ctx->shadow) {
        ngx_http_spendpol_metrics_refused(r, ctx);
        return NGX_OK;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    ngx_http_spendpol_settle(r, ctx);
    ngx_http_spendpol_release(r, ctx, 1);

    ngx_memzero(&rec, sizeof(sp_journal_record_t));

    ngx_http_spendpol_copy_field(id, ((ngx_str_t) {
                                     ngx_strlen(ctx->audit_id),
                                     ctx->audit_id }));
    rec.ts_ms = ctx->start_ms;
    ngx_http_spendpol_copy_field(org_id, ctx->org_id);
    ngx_http_spendpol_copy_field(api_key_id, ctx->key_id);
    ngx_http_spendpol_copy_field(provider, ctx->provider_name);

    if (ctx->requested_model.data) {
        /* as the client sent it: routing may have sent another */
        ngx_http_spendpol_copy_field(requested_model, ctx->requested_model);

    } else if (ctx->request) {
        sp_field_copy(rec.requested_model, sizeof(rec.requested_model),
                      ctx->request->model, ngx_strlen(ctx->request->model));
    }

    if (ctx->request) {
        rec.stream = ctx->request->stream;
    }

    if (ctx->response.model[0]) {
        sp_field_copy(rec.model, sizeof(rec.model), ctx->response.model,
                      ngx_strlen(ctx->response.model));

    } else {
        ngx_memcpy(rec.model, rec.requested_model, sizeof(rec.model));
    }

    rec.input_tokens = ctx->usage.input_tokens;
    rec.output_tokens = ctx->usage.output_tokens;
    rec.cached_tokens = ctx->usage.cached_tokens;
    rec.cache_write_tokens = ctx->usage.cache_write_tokens;
    rec.cost_nano = ctx->cost_nano;
    rec.status = (int) r->headers_out.status;
    str = *ngx_http_spendpol_cache_state_name(ctx);
    sp_field_copy(rec.cache, sizeof(rec.cache), (char *) str.data, str.len);

    if (ctx->cache_state == NGX_HTTP_SPENDPOL_CACHE_HIT) {
        rec.saved_nano = ctx->cache_saved_nano;
    }

    now = ngx_http_spendpol_now_us();
    rec.latency_ms = (int64_t) ((now - ctx->start_us) / 1000);
    rec.gateway_us = (int64_t) ctx->gateway_us;

    ngx_http_spendpol_copy_field(department, ctx->department);
    ngx_http_spendpol_copy_field(project, ctx->project);
    ngx_http_spendpol_copy_field(agent_id, ctx->agent_id);
    sp_field_copy(rec.trace_id, sizeof(rec.trace_id), (char *) ctx->trace_id,
                  ngx_strlen(ctx->trace_id));
    sp_field_copy(rec.span_id, sizeof(rec.span_id), (char *) ctx->span_id,
                  ngx_strlen(ctx->span_id));
    sp_field_copy(rec.parent_id, sizeof(rec.parent_id),
                  (char *) ctx->parent_id, ngx_strlen(ctx->parent_id));

    str.len = ngx_http_spendpol_warnings(ctx, (u_char *) rec.warnings,
                                         sizeof(rec.warnings) - 1);
    rec.warnings[str.len] = '\0';

    if (ctx->error_code) {
        sp_field_copy(rec.error_code, sizeof(rec.error_code), ctx->error_code,
                      ngx_strlen(ctx->error_code));

    } else if (ctx->mode == NGX_HTTP_SPENDPOL_RESPONSE_STREAM
               && !ctx->response.done)
    {
        /* cut short: by the client or the provider; billed as delivered */
        ngx_memcpy(rec.error_code, "stream_incomplete",
                   sizeof("stream_incomplete"));
    }

    /* routing (ngx_http_spendpol_route.c) and templates */
    rec.routed = ctx->route_matched;
    ngx_http_spendpol_copy_field(route_rule, ctx->route_rule);
    rec.attempts = (int) ctx->attempts;

    if (ctx->attempt_log) {
        sp_field_copy(rec.attempt_log, sizeof(rec.attempt_log),
                      (char *) ctx->attempt_log, ctx->attempt_log_len);
    }

    ngx_http_spendpol_copy_field(route_note, ctx->route_note);

    if (ctx->template_applied) {
        sp_field_copy(rec.template_id, sizeof(rec.template_id),
                      (char *) ctx->template_id,
                      ngx_strlen(ctx->template_id));
        rec.template_version = ctx->template_version;
    }

    ngx_http_spendpol_journal_policy(r, ctx, &rec);

    rec.epoch = ngx_http_spendpol_epoch(smcf);
    rec.reserved_nano = ctx->reserved_nano;

    /* the method is nginx's (a token), the path our re-encoded one */
    ngx_snprintf((u_char *) rec.endpoint, sizeof(rec.endpoint) - 1, "%V %V%Z",
                 &r->method_name, &ctx->rest);

    /* the metrics count what the audit row says */
    ngx_http_spendpol_metrics_record(r, ctx, &rec);

    /* line[0] is kept for the newline that ends a torn line */
    len = sp_journal_format(&rec, (char *) line + 1, sizeof(line) - 1);

    if (len == 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "spendpol: journal line for %s does not fit",
                      ctx->audit_id);
        return NGX_OK;
    }

    /*
     * A short write (a full disk) leaves a line without its newline; the
     * next line written, by any worker, starts with one, so the torn line
     * stands alone and the next one is whole.
     */
    start = line + 1;
    torn = smcf->sh
           && __atomic_load_n(&smcf->sh->journal_torn, __ATOMIC_ACQUIRE);

    if (torn) {
        line[0] = '\n';
        start = line;
        len++;
    }

    n = ngx_write_fd(smcf->journal->fd, start, len);

    if (n == (ssize_t) len) {
        if (torn) {
            __atomic_store_n(&smcf->sh->journal_torn, 0, __ATOMIC_RELEASE);
        }

    } else {
        if (n > 0 && smcf->sh) {
            __atomic_store_n(&smcf->sh->journal_torn, 1, __ATOMIC_RELEASE);
        }

        if (smcf->journal_failures++ % 1000 == 0) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                          "spendpol: journal write to \"%V\" failed "
                          "(%z of %uz bytes), %ui failures so far",
                          &smcf->journal_path, n, len,
                          smcf->journal_failures);
        }
    }

    return NGX_OK;
}




/* stage 5's decision, the scores and a shadow key's signal */
static void
ngx_http_spendpol_journal_policy(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_journal_record_t *rec)
{
    u_char                *p, *last;
    ngx_uint_t             t;
    sp_policy_decision_t  *d;

    rec->guard_score_milli = (int) ctx->guard_score;
    rec->hallucination_pct = ctx->halluc_scored ? (int) ctx->halluc_pct : -1;

    d = ctx->policy;

    if (d) {
        p = (u_char *) rec->pii_types;
        last = p + sizeof(rec->pii_types) - 1;

        for (t = 0; t < SP_PII_COUNT; t++) {
            if (d->pii.types & (1u << t)) {
                p = ngx_slprintf(p, last, "%s%s",
                                 p == (u_char *) rec->pii_types ? "" : ",",
                                 sp_pii_name(t));
            }
        }

        *p = '\0';

        if (d->decision != SP_POLICY_PASS) {
            ngx_cpystrn((u_char *) rec->policy_action,
                        (u_char *) sp_policy_action_name(d->decision),
                        sizeof(rec->policy_action));
        }

        ngx_cpystrn((u_char *) rec->policy_ids, (u_char *) d->policy_ids,
                    sizeof(rec->policy_ids));
        ngx_cpystrn((u_char *) rec->policy_warnings, (u_char *) d->warnings,
                    sizeof(rec->policy_warnings));
    }

    if (ctx->shadow_key_type) {
        ngx_cpystrn((u_char *) rec->shadow_key_type,
                    (u_char *) ctx->shadow_key_type,
                    sizeof(rec->shadow_key_type));
        ngx_cpystrn((u_char *) rec->shadow_key_fp, ctx->shadow_key_fp,
                    sizeof(rec->shadow_key_fp));
        sp_field_copy(rec->client_addr, sizeof(rec->client_addr),
                      (char *) r->connection->addr_text.data,
                      r->connection->addr_text.len);
    }
}
