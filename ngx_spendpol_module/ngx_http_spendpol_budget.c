
/*
 * Copyright (C) Spendpol
 *
 * Budgets in the request path: reserve the worst case at admission
 * against every budget that covers the request, settle the actual cost
 * when the request ends, release on every other path (a pool cleanup,
 * as limit_conn does). Counters live in the shared zone
 * (ngx_http_spendpol_zone.c), so concurrent requests on all workers see
 * each other's reservations; spend from other nodes and from before this
 * zone comes from controld's spend file.
 */


#include <sys/mman.h>

#include "ngx_http_spendpol_module.h"


#define NGX_HTTP_SPENDPOL_MAX_BUDGETS  32

typedef struct {
    ngx_http_request_t              *r;
    ngx_http_spendpol_ctx_t         *ctx;
    ngx_http_spendpol_main_conf_t   *smcf;
    sp_str_t                         provider;
    sp_str_t                         model;
    int64_t                          now_ms;
    ngx_uint_t                       n;
    const sp_snapshot_budget_t      *budgets[NGX_HTTP_SPENDPOL_MAX_BUDGETS];
} ngx_http_spendpol_budget_scan_t;


static void ngx_http_spendpol_budget_scan(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_budget_scan_t *scan);
static void ngx_http_spendpol_budget_union(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_budget_scan_t *scan, uint32_t *covers);
static int ngx_http_spendpol_budget_visit(const sp_snapshot_budget_t *budget,
    void *arg);
static int64_t ngx_http_spendpol_effective(ngx_http_spendpol_counter_t *counter,
    const sp_spend_view_t *view);
static void ngx_http_spendpol_hold_cleanup(void *data);


/*
 * Admission: NGX_OK to go on (reservations held, warnings noted),
 * NGX_DECLINED when a blocking budget refuses (ctx->refused_*; with
 * ctx->refused_unpriced when the model has no price to hold), NGX_BUSY
 * when the zone has no room for a counter even after expiring idle ones
 * (nothing held: ngx_http_spendpol_zone_full() answers), NGX_AGAIN when
 * a blocking budget's lease lacks what the request needs and controld
 * may extend it (nothing held, ctx->refused_* set: wait and admit
 * again), NGX_ERROR on failure.
 */
ngx_int_t
ngx_http_spendpol_budget_admit(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    int64_t                           worst;
    int64_t                           effective[NGX_HTTP_SPENDPOL_MAX_BUDGETS];
    uint32_t                          covers[NGX_HTTP_SPENDPOL_MAX_BUDGETS];
    sp_spend_view_t                   view;
    sp_str_t                          id;
    ngx_uint_t                        i, j, refused, waiting, hard, fits;
    ngx_http_spendpol_counter_t      *counter;
    ngx_http_spendpol_main_conf_t    *smcf;
    ngx_http_spendpol_reservation_t  *res;
    ngx_http_spendpol_budget_scan_t   scan;
    ngx_http_spendpol_lease_t         leases[NGX_HTTP_SPENDPOL_MAX_BUDGETS];

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->sh == NULL || smcf->snapshot_map == NULL
        || smcf->snapshot.header->entries[SP_TABLE_BUDGETS] == 0)
    {
        return NGX_OK;
    }

    ngx_http_spendpol_budget_scan(r, ctx, smcf, &scan);

    for (i = 0; i < scan.n; i++) {
        covers[i] = ctx->targets ? (uint32_t) 1 << ctx->target : 0;
    }

    if (ctx->targets && ctx->ntargets > 1) {
        /* a routed request holds against every target's budgets */
        ngx_http_spendpol_budget_union(r, ctx, smcf, &scan, covers);
    }

    if (scan.n == 0) {
        return NGX_OK;
    }

    /*
     * A call whose cost cannot be held (no price) does not pass a hard
     * budget; an endpoint the organisation allowed is not metered and
     * holds nothing, but does not pass a spent hard budget either.
     */
    hard = 0;

    for (i = 0; i < scan.n; i++) {
        if (scan.budgets[i]->action == SP_BUDGET_BLOCK) {
            hard = 1;
        }
    }

    if (!ctx->priced && !ctx->ungoverned
        && ctx->endpoint && ctx->endpoint->meter != SP_METER_FREE)
    {
        if (hard) {
            ctx->refused_unpriced = 1;
            return NGX_DECLINED;
        }

        /* an unpriced call costs 0 as recorded; nothing to hold */
        return NGX_OK;
    }

    worst = ctx->priced ? ctx->worst_nano : 0;

    /* a request parked for its lease comes back here: the room stays */
    if (ctx->nreservations_max < scan.n) {
        ctx->reservations = ngx_pcalloc(r->pool,
                              scan.n * sizeof(ngx_http_spendpol_reservation_t));
        if (ctx->reservations == NULL) {
            return NGX_ERROR;
        }

        ctx->nreservations_max = scan.n;
    }

    if (ngx_http_spendpol_hold(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    refused = 0;
    waiting = scan.n;
    ctx->refused_lease = SP_LEASE_OK;

    ngx_shmtx_lock(&smcf->shpool->mutex);

    /* the counters this admission finds cannot expire while it runs */
    smcf->sh->admissions++;

    /* check every budget first: a refusal holds nothing anywhere */
    for (i = 0; i < scan.n; i++) {
        id = sp_snapshot_str(&smcf->snapshot, scan.budgets[i]->budget_id);

        counter = ngx_http_spendpol_zone_count(smcf, &smcf->sh->rbtree,
                                        sp_budget_hash(id),
                                        scan.budgets[i]->period_start_ms,
                                        sizeof(ngx_http_spendpol_counter_t));
        if (counter == NULL) {
            ngx_shmtx_unlock(&smcf->shpool->mutex);
            return NGX_BUSY;
        }

        res = &ctx->reservations[i];
        res->counter = counter;
        res->hash = counter->count.node.key;
        res->period_start_ms = scan.budgets[i]->period_start_ms;

        ngx_http_spendpol_spend_view(smcf, res->hash, res->period_start_ms,
                                     &view);

        effective[i] = ngx_http_spendpol_effective(counter, &view);

        fits = effective[i] + worst <= scan.budgets[i]->limit_nano
               && !(ctx->ungoverned
                    && effective[i] >= scan.budgets[i]->limit_nano);

        leases[i].ask = NULL;

        if (scan.budgets[i]->action == SP_BUDGET_WARN) {
            if (!fits) {
                ctx->budget_warning = 1;
            }

            continue;
        }

        if (!fits) {
            refused = 1;
            break;
        }

        switch (ngx_http_spendpol_lease_check(smcf, counter, &view, worst,
                                              scan.now_ms, &leases[i]))
        {
        case SP_LEASE_OK:
            continue;

        case SP_LEASE_TOP_UP:
        case SP_LEASE_CATCHING_UP:
            /* a budget further on may refuse outright: no wait then */
            if (waiting == scan.n) {
                waiting = i;
            }

            continue;

        default:
            refused = 1;
            ctx->refused_lease = leases[i].verdict;
        }

        break;
    }

    /* the lease may have shrunk under the request: see sp_lease_publish */
    if (!refused && waiting == scan.n) {
        waiting = ngx_http_spendpol_lease_publish(leases, scan.n, worst,
                                                  scan.now_ms);
    }

    if (!refused && waiting < scan.n) {
        refused = 1;
        i = waiting;
        ctx->refused_lease = leases[i].verdict;

        for (j = 0; j < scan.n; j++) {
            if (ngx_http_spendpol_lease_ask(smcf, &leases[j], worst,
                                            j == i ? ctx : NULL)
                && j == i
                && ctx->lease_waiting)
            {
                /* answered since the request asked: no more to give */
                ctx->lease_answered = 1;
            }
        }
    }

    if (refused) {
        id = sp_snapshot_str(&smcf->snapshot, scan.budgets[i]->budget_id);

        sp_field_copy(ctx->refused_budget, sizeof(ctx->refused_budget),
                      id.data, id.len);
        ctx->refused_limit = scan.budgets[i]->limit_nano;
        ctx->refused_spent = effective[i];

    } else {
        for (i = 0; i < scan.n; i++) {
            ctx->reservations[i].amount = worst;
            ctx->reservations[i].covers = covers[i];
            ctx->reservations[i].counter->reserved_nano += worst;
        }

        ctx->nreservations = scan.n;
        ctx->reserved_nano = worst;
    }

    ngx_shmtx_unlock(&smcf->shpool->mutex);

    if (!refused) {
        return NGX_OK;
    }

    /* controld may extend the lease: the request waits, holding nothing */
    return (ctx->refused_lease == SP_LEASE_TOP_UP
            || ctx->refused_lease == SP_LEASE_CATCHING_UP)
           ? NGX_AGAIN : NGX_DECLINED;
}


/* every budget that covers the request, into scan */
static void
ngx_http_spendpol_budget_scan(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_budget_scan_t *scan)
{
    sp_str_t     org, id, values[SP_BUDGET_SCOPE_COUNT];
    ngx_uint_t   i;
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    ngx_memzero(scan, sizeof(*scan));
    scan->r = r;
    scan->ctx = ctx;
    scan->smcf = smcf;
    scan->now_ms = (int64_t) tp->sec * 1000 + tp->msec;
    scan->provider.data = (char *) ctx->provider_name.data;
    scan->provider.len = ctx->provider_name.len;
    scan->model.data = ctx->request->model;
    scan->model.len = ngx_strlen(ctx->request->model);

    org.data = (char *) ctx->org_id.data;
    org.len = ctx->org_id.len;

    values[SP_BUDGET_SCOPE_ORG].data = "";
    values[SP_BUDGET_SCOPE_ORG].len = 0;
    values[SP_BUDGET_SCOPE_API_KEY].data = (char *) ctx->key_id.data;
    values[SP_BUDGET_SCOPE_API_KEY].len = ctx->key_id.len;
    values[SP_BUDGET_SCOPE_AGENT].data = (char *) ctx->agent_id.data;
    values[SP_BUDGET_SCOPE_AGENT].len = ctx->agent_id.len;
    values[SP_BUDGET_SCOPE_DEPARTMENT].data = (char *) ctx->department.data;
    values[SP_BUDGET_SCOPE_DEPARTMENT].len = ctx->department.len;
    values[SP_BUDGET_SCOPE_PROJECT].data = (char *) ctx->project.data;
    values[SP_BUDGET_SCOPE_PROJECT].len = ctx->project.len;

    for (i = 0; i < SP_BUDGET_SCOPE_COUNT; i++) {
        if (i != SP_BUDGET_SCOPE_ORG && values[i].len == 0) {
            continue;
        }

        (void) sp_snapshot_foreach_budget(&smcf->snapshot, org, (uint32_t) i,
                                          values[i],
                                          ngx_http_spendpol_budget_visit,
                                          scan);
    }

    /* re-attributed by a key that allows it: the key's own budgets too */
    if (ctx->key_department.len) {
        id.data = (char *) ctx->key_department.data;
        id.len = ctx->key_department.len;

        (void) sp_snapshot_foreach_budget(&smcf->snapshot, org,
                                          SP_BUDGET_SCOPE_DEPARTMENT, id,
                                          ngx_http_spendpol_budget_visit,
                                          scan);
    }

    if (ctx->key_project.len) {
        id.data = (char *) ctx->key_project.data;
        id.len = ctx->key_project.len;

        (void) sp_snapshot_foreach_budget(&smcf->snapshot, org,
                                          SP_BUDGET_SCOPE_PROJECT, id,
                                          ngx_http_spendpol_budget_visit,
                                          scan);
    }
}


/*
 * The budgets of a routed request's other targets joined to scan's (a
 * fallback to another provider or model may fall under budgets the first
 * target does not); covers[i] gets a bit for each target budget i covers.
 */
static void
ngx_http_spendpol_budget_union(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_budget_scan_t *scan, uint32_t *covers)
{
    ngx_uint_t                        t, i, j, current;
    ngx_http_spendpol_budget_scan_t   other;

    current = ctx->target;

    ngx_http_spendpol_route_save(ctx, &ctx->targets[current]);

    for (t = 0; t < ctx->ntargets; t++) {

        if (t == current || ctx->targets[t].dropped) {
            continue;
        }

        ngx_http_spendpol_route_load(ctx, &ctx->targets[t]);
        ngx_http_spendpol_budget_scan(r, ctx, smcf, &other);

        for (j = 0; j < other.n; j++) {
            for (i = 0; i < scan->n; i++) {
                if (scan->budgets[i] == other.budgets[j]) {
                    break;
                }
            }

            if (i == scan->n) {
                if (scan->n == NGX_HTTP_SPENDPOL_MAX_BUDGETS) {
                    continue;
                }

                scan->budgets[scan->n] = other.budgets[j];
                covers[scan->n++] = 0;
            }

            covers[i] |= (uint32_t) 1 << t;
        }
    }

    ngx_http_spendpol_route_load(ctx, &ctx->targets[current]);
}


/*
 * The used share of a budget that covers the request, in parts per
 * million (routing rules' budget_used_pct): of budget_id, or the largest
 * over every budget that covers it (budget_id of length 0); -1 when none
 * does. Used is what admission compares: every node's ingested spend,
 * this node's settled and its reservations in flight.
 */
int64_t
ngx_http_spendpol_budget_used_ppm(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx, sp_str_t budget_id)
{
    int64_t                           used, ppm, best;
    sp_str_t                          id;
    ngx_uint_t                        i;
    sp_spend_view_t                   view;
    ngx_http_spendpol_counter_t      *counter;
    ngx_http_spendpol_main_conf_t    *smcf;
    ngx_http_spendpol_budget_scan_t   scan;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    if (smcf->sh == NULL || smcf->snapshot_map == NULL
        || smcf->snapshot.header->entries[SP_TABLE_BUDGETS] == 0)
    {
        return -1;
    }

    ngx_http_spendpol_budget_scan(r, ctx, smcf, &scan);

    best = -1;

    ngx_shmtx_lock(&smcf->shpool->mutex);

    for (i = 0; i < scan.n; i++) {
        id = sp_snapshot_str(&smcf->snapshot, scan.budgets[i]->budget_id);

        if (budget_id.len
            && (id.len != budget_id.len
                || ngx_strncmp(id.data, budget_id.data, id.len) != 0))
        {
            continue;
        }

        counter = ngx_http_spendpol_zone_count(smcf, &smcf->sh->rbtree,
                                        sp_budget_hash(id),
                                        scan.budgets[i]->period_start_ms,
                                        sizeof(ngx_http_spendpol_counter_t));
        if (counter == NULL) {
            continue;
        }

        ngx_http_spendpol_spend_view(smcf, counter->count.node.key,
                                     scan.budgets[i]->period_start_ms, &view);

        used = ngx_http_spendpol_effective(counter, &view);

        if (scan.budgets[i]->limit_nano <= 0) {
            ppm = used > 0 ? INT64_MAX : 0;

        } else {
            /* 128 bits: a budget past $9,223 would overflow 2^63 / 1e6 */
            ppm = (int64_t) ngx_min((__int128) used * 1000000
                                    / scan.budgets[i]->limit_nano,
                                    (__int128) INT64_MAX);
        }

        best = ngx_max(best, ppm);
    }

    ngx_shmtx_unlock(&smcf->shpool->mutex);

    return best;
}


static int
ngx_http_spendpol_budget_visit(const sp_snapshot_budget_t *budget, void *arg)
{
    ngx_http_spendpol_budget_scan_t  *scan = arg;

    if (!sp_budget_covers(&scan->smcf->snapshot, budget, scan->provider,
                          scan->model, scan->now_ms))
    {
        return 0;
    }

    if (scan->n == NGX_HTTP_SPENDPOL_MAX_BUDGETS) {
        ngx_log_error(NGX_LOG_WARN, scan->r->connection->log, 0,
                      "spendpol: more than %d budgets cover one request; "
                      "the others are not checked",
                      NGX_HTTP_SPENDPOL_MAX_BUDGETS);
        return 1;
    }

    scan->budgets[scan->n++] = budget;

    return 0;
}


/*
 * Under the zone mutex: 1 when forgetting a budget counter changes no
 * decision: nothing reserved, and everything settled in it already
 * ingested by controld (in global, and in node_nano for this epoch), so
 * the budget's effective spend is global whether the counter is there or
 * not; ngx_http_spendpol_effective() starts a counter made again at what
 * was ingested, so later spend is pending from there, not from zero.
 */
ngx_uint_t
ngx_http_spendpol_counter_idle(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_counter_t *counter)
{
    sp_spend_view_t  view;

    if (counter->reserved_nano > 0) {
        return 0;
    }

    if (counter->settled_nano <= 0) {
        return 1;
    }

    ngx_http_spendpol_spend_view(smcf, counter->count.node.key,
                                 counter->count.start_ms, &view);

    return counter->settled_nano <= view.epoch_nano;
}


/*
 * What controld published of a budget in the period (sp_spend_read): all
 * 0 without a spend file, or before controld publishes the budget; its
 * epoch_nano counts this zone's epoch only. The counter holds
 * sp_budget_hash() of the budget's id.
 */
void
ngx_http_spendpol_spend_view(ngx_http_spendpol_main_conf_t *smcf,
    uint64_t hash, int64_t period_start_ms, sp_spend_view_t *view)
{
    sp_spend_read(smcf->spend_map ? &smcf->spend : NULL, hash,
                  period_start_ms, smcf->sh->epoch_ms, view);
}


/*
 * global (all nodes, ingested) + pending (settled here, not yet ingested)
 * + reserved (in flight here); see sp_budget.h. A counter that settled
 * less than was ingested was expired and made again: it starts at what
 * was ingested, so that what it settles from now on counts as pending.
 */
static int64_t
ngx_http_spendpol_effective(ngx_http_spendpol_counter_t *counter,
    const sp_spend_view_t *view)
{
    if (counter->settled_nano < view->epoch_nano) {
        counter->settled_nano = view->epoch_nano;
    }

    return view->global_nano + (counter->settled_nano - view->epoch_nano)
           + counter->reserved_nano;
}


/*
 * releases the reservations, under the zone's mutex; cost: what to count
 * as settled (or -1)
 */
void
ngx_http_spendpol_budget_release(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_ctx_t *ctx, int64_t cost)
{
    ngx_uint_t                        i;
    ngx_http_spendpol_reservation_t  *res;

    for (i = 0; i < ctx->nreservations; i++) {
        res = &ctx->reservations[i];

        if (!ngx_http_spendpol_zone_held(&res->counter->count, res->hash,
                                         res->period_start_ms))
        {
            continue;
        }

        res->counter->reserved_nano -= res->amount;

        if (res->counter->reserved_nano < 0) {
            res->counter->reserved_nano = 0;
        }

        /* a routed request's cost counts where its answering target does */
        if (cost > 0
            && (res->covers == 0
                || (res->covers & ((uint32_t) 1 << ctx->target))))
        {
            res->counter->settled_nano += cost;
        }

        ngx_http_spendpol_lease_released(smcf, res->counter);
    }
}


/*
 * What a request holds in the zone (budget reservations, rate limit
 * tokens) is released by one pool cleanup whatever path the request takes;
 * the log phase releases it first, with the actual cost and usage.
 */
ngx_int_t
ngx_http_spendpol_hold(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    if (ctx->hold_cleanup) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_spendpol_hold_cleanup;
    cln->data = r;
    ctx->hold_cleanup = 1;

    return NGX_OK;
}


/*
 * Once, under one lock: both kinds are held until the request ends, and
 * nothing is taken after the first release (the log phase or the pool
 * cleanup, whichever comes first).
 */
void
ngx_http_spendpol_release(ngx_http_request_t *r, ngx_http_spendpol_ctx_t *ctx,
    ngx_uint_t settled)
{
    ngx_http_spendpol_main_conf_t  *smcf;

    if (ctx->released
        || (ctx->nreservations == 0 && ctx->nrate_windows == 0))
    {
        return;
    }

    ctx->released = 1;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_spendpol_module);

    ngx_shmtx_lock(&smcf->shpool->mutex);

    if (settled) {
        ngx_http_spendpol_budget_release(smcf, ctx, ctx->cost_nano);
        ngx_http_spendpol_ratelimit_release(ctx, ctx->usage.input_tokens
                                                 + ctx->usage.output_tokens);

    } else {
        /* the request ended without the log phase: nothing was spent */
        ngx_http_spendpol_budget_release(smcf, ctx, -1);
        ngx_http_spendpol_ratelimit_release(ctx, -1);
    }

    ngx_shmtx_unlock(&smcf->shpool->mutex);
}


static void
ngx_http_spendpol_hold_cleanup(void *data)
{
    ngx_http_request_t  *r = data;

    ngx_http_spendpol_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_spendpol_module);

    if (ctx) {
        ngx_http_spendpol_release(r, ctx, 0);
    }
}


/* the spend file, checked with the snapshot; missing is not an error */
void
ngx_http_spendpol_spend_refresh(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    void             *map;
    char              err[256];
    sp_spend_t        spend;
    ngx_file_info_t   fi;

    if (ngx_file_info(smcf->spend_path.data, &fi) == NGX_FILE_ERROR
        || (smcf->spend_map
            && ngx_file_uniq(&fi) == smcf->spend_ino
            && (size_t) ngx_file_size(&fi) == smcf->spend_size))
    {
        return;
    }

    /* controld updates it in place: the shared mapping sees every store */
    map = ngx_http_spendpol_map_file(&smcf->spend_path, &fi, log);
    if (map == NULL) {
        return;
    }

    if (sp_spend_open(&spend, map, (size_t) ngx_file_size(&fi), err,
                      sizeof(err))
        != SP_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "spendpol: refused spend file \"%V\": %s",
                      &smcf->spend_path, err);
        munmap(map, (size_t) ngx_file_size(&fi));
        return;
    }

    if (smcf->spend_map) {
        munmap(smcf->spend_map, smcf->spend_size);
    }

    smcf->spend = spend;
    smcf->spend_map = map;
    smcf->spend_size = (size_t) ngx_file_size(&fi);
    smcf->spend_ino = ngx_file_uniq(&fi);
}
