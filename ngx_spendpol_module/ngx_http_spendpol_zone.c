
/*
 * Copyright (C) Spendpol
 *
 * The module's shared zone: one slab holding budget counters and rate
 * limit windows, each an rbtree node keyed by a hash and on one LRU
 * queue. Nodes are made on first use and expired when idle, before an
 * allocation and once more after one failed, as limit_req does; a zone
 * still full answers 503 (retried by the SDKs), logged once a minute.
 */


#include "ngx_http_spendpol_module.h"


/*
 * Idle nodes looked at from the LRU end before every allocation (stopping
 * at the first still needed, as limit_req's expire(ctx, 1) does), and
 * after an allocation failed (skipping the ones still needed).
 */
#define NGX_HTTP_SPENDPOL_EXPIRE_IDLE  3
#define NGX_HTTP_SPENDPOL_EXPIRE_FULL  64

/* at most one "zone is full" line a minute */
#define NGX_HTTP_SPENDPOL_FULL_LOG_MS  60000


static void ngx_http_spendpol_zone_expire(ngx_http_spendpol_main_conf_t *smcf,
    ngx_uint_t n, ngx_uint_t force);
static ngx_uint_t ngx_http_spendpol_zone_idle(
    ngx_http_spendpol_main_conf_t *smcf, ngx_http_spendpol_count_t *count,
    int64_t now_ms);
static void ngx_http_spendpol_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


/*
 * Under the zone mutex: the node of the tree that counts hash, created
 * zeroed when absent, its counts zeroed when start_ms moved on (a new
 * period or minute: reservations still in flight for the old one are
 * released against nothing, see the start_ms checks on release). Every
 * node found goes to the front of the zone's LRU queue. When the slab is
 * full, idle nodes are expired from the back and the allocation is tried
 * once more, as limit_req does; NULL when it still fails (logged here at
 * most once a minute).
 */
void *
ngx_http_spendpol_zone_count(ngx_http_spendpol_main_conf_t *smcf,
    ngx_rbtree_t *tree, uint64_t hash, int64_t start_ms, size_t size)
{
    ngx_time_t                 *tp;
    int64_t                     now_ms;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_spendpol_count_t  *count;

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        count = (ngx_http_spendpol_count_t *) node;

        ngx_queue_remove(&count->queue);
        ngx_queue_insert_head(&smcf->sh->queue, &count->queue);
        count->admission = smcf->sh->admissions;

        if (count->start_ms != start_ms) {
            ngx_memzero((u_char *) count + sizeof(ngx_http_spendpol_count_t),
                        size - sizeof(ngx_http_spendpol_count_t));
            count->start_ms = start_ms;
        }

        return count;
    }

    ngx_http_spendpol_zone_expire(smcf, NGX_HTTP_SPENDPOL_EXPIRE_IDLE, 0);

    count = ngx_slab_alloc_locked(smcf->shpool, size);

    if (count == NULL) {
        ngx_http_spendpol_zone_expire(smcf, NGX_HTTP_SPENDPOL_EXPIRE_FULL, 1);

        count = ngx_slab_alloc_locked(smcf->shpool, size);

        if (count == NULL) {
            tp = ngx_timeofday();
            now_ms = (int64_t) tp->sec * 1000 + tp->msec;

            if (now_ms - smcf->sh->full_logged_ms
                >= NGX_HTTP_SPENDPOL_FULL_LOG_MS)
            {
                smcf->sh->full_logged_ms = now_ms;

                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "spendpol: shared zone \"%V\" is full "
                              "(spendpol_zone_size %uz) and nothing in it "
                              "is idle; requests needing a new budget "
                              "counter or rate limit window get 503: "
                              "raise spendpol_zone_size",
                              &smcf->shm_zone->shm.name, smcf->zone_size);
            }

            return NULL;
        }
    }

    ngx_memzero(count, size);
    count->node.key = hash;
    count->start_ms = start_ms;
    count->window = (tree == &smcf->sh->windows);
    count->admission = smcf->sh->admissions;

    ngx_rbtree_insert(tree, &count->node);
    ngx_queue_insert_head(&smcf->sh->queue, &count->queue);

    return count;
}


/*
 * Under the zone mutex: frees idle nodes from the LRU end of the queue,
 * looking at n of them at most. Without force it stops at the first node
 * still needed, as the queue is in order of use; with force it looks past
 * those (a budget counter whose spend controld has not ingested yet may
 * sit behind idle ones). It never frees a node the running admission
 * found: those are at the front, so the walk stops there.
 */
static void
ngx_http_spendpol_zone_expire(ngx_http_spendpol_main_conf_t *smcf,
    ngx_uint_t n, ngx_uint_t force)
{
    int64_t                     now_ms;
    ngx_time_t                 *tp;
    ngx_queue_t                *q, *prev;
    ngx_http_spendpol_count_t  *count;

    tp = ngx_timeofday();
    now_ms = (int64_t) tp->sec * 1000 + tp->msec;

    q = ngx_queue_last(&smcf->sh->queue);

    while (n-- && q != ngx_queue_sentinel(&smcf->sh->queue)) {

        prev = ngx_queue_prev(q);
        count = ngx_queue_data(q, ngx_http_spendpol_count_t, queue);

        if (count->admission == smcf->sh->admissions) {
            return;
        }

        if (!ngx_http_spendpol_zone_idle(smcf, count, now_ms)) {
            if (!force) {
                return;
            }

            q = prev;
            continue;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(count->window ? &smcf->sh->windows
                                        : &smcf->sh->rbtree,
                          &count->node);
        ngx_slab_free_locked(smcf->shpool, count);

        q = prev;
    }
}


/*
 * 1 when forgetting the node changes no decision. A rate limit window:
 * its minute is over and no request still holds tokens in it. A budget
 * counter: see ngx_http_spendpol_counter_idle().
 */
static ngx_uint_t
ngx_http_spendpol_zone_idle(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_count_t *count, int64_t now_ms)
{
    ngx_http_spendpol_window_t  *window;

    if (count->window) {
        window = (ngx_http_spendpol_window_t *) count;

        return window->holders == 0
               && now_ms - count->start_ms >= NGX_HTTP_SPENDPOL_WINDOW_MS;
    }

    return ngx_http_spendpol_counter_idle(smcf,
                                   (ngx_http_spendpol_counter_t *) count);
}


/*
 * Whether a count is still the one a request took: its period or minute
 * may have moved on, and only then can the node have been freed and made
 * again (nothing was held on it any more); the key and start tell.
 */
ngx_uint_t
ngx_http_spendpol_zone_held(ngx_http_spendpol_count_t *count, uint64_t hash,
    int64_t start_ms)
{
    return count->node.key == hash && count->start_ms == start_ms;
}


/*
 * The zone had no room for what the request must count in it: 503, which
 * the SDKs retry; nothing was held. The cause is in the error log.
 */
ngx_int_t
ngx_http_spendpol_zone_full(ngx_http_request_t *r,
    ngx_http_spendpol_ctx_t *ctx)
{
    if (ngx_http_spendpol_add_header(r, &r->headers_out.headers,
                                     "Retry-After", (u_char *) "1", 1)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_spendpol_send_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "api_error", "gateway_busy",
                                        "the gateway's shared zone is full "
                                        "of budgets and rate limits in use; "
                                        "retry shortly (operators: raise "
                                        "spendpol_zone_size)");
}


int64_t
ngx_http_spendpol_epoch(ngx_http_spendpol_main_conf_t *smcf)
{
    return smcf->sh ? smcf->sh->epoch_ms : 0;
}


ngx_int_t
ngx_http_spendpol_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_spendpol_main_conf_t  *osmcf = data;

    ngx_time_t                     *tp;
    ngx_http_spendpol_main_conf_t  *smcf;

    smcf = shm_zone->data;

    if (osmcf) {
        /* a reload keeps the counters, their epoch and the ask file */
        smcf->sh = osmcf->sh;
        smcf->shpool = osmcf->shpool;
        return ngx_http_spendpol_ask_init(smcf, osmcf, shm_zone->shm.log);
    }

    smcf->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        smcf->sh = smcf->shpool->data;
        return NGX_OK;
    }

    /* a full zone is answered and logged once a minute, not per request */
    smcf->shpool->log_nomem = 0;

    smcf->sh = ngx_slab_calloc(smcf->shpool,
                               sizeof(ngx_http_spendpol_shctx_t));
    if (smcf->sh == NULL) {
        return NGX_ERROR;
    }

    smcf->shpool->data = smcf->sh;

    ngx_rbtree_init(&smcf->sh->rbtree, &smcf->sh->sentinel,
                    ngx_http_spendpol_rbtree_insert_value);
    ngx_rbtree_init(&smcf->sh->windows, &smcf->sh->windows_sentinel,
                    ngx_http_spendpol_rbtree_insert_value);
    ngx_queue_init(&smcf->sh->queue);

    tp = ngx_timeofday();
    smcf->sh->epoch_ms = (int64_t) tp->sec * 1000 + tp->msec;

    smcf->shpool->log_ctx = (u_char *) " in spendpol zone";

    return ngx_http_spendpol_ask_init(smcf, NULL, shm_zone->shm.log);
}


static void
ngx_http_spendpol_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {
        p = (node->key < temp->key) ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
