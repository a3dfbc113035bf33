
/*
 * Copyright (C) Spendpol
 *
 * This node's leases of blocking budgets (libspendpol/sp_lease.h), the
 * module's side: the admission check against the lease controld
 * publishes in the spend file, and the ask file through which the module
 * tells its controld what it uses, what it admitted and what it lacks.
 *
 * The ask file (asks.slots beside the journal) is laid out by the master
 * with the shared zone and mapped MAP_SHARED before the workers are
 * forked, so every worker writes the same pages without opening it; a
 * reload keeps zone, epoch and file. Workers write it under the zone
 * mutex; controld only reads it and answers in the spend file.
 */


#include <fcntl.h>
#include <sys/mman.h>

#include "ngx_http_spendpol_module.h"


/* the zone's nodes are 128 bytes: the zone fills before the ask file */
#define NGX_HTTP_SPENDPOL_ASK_PER_ZONE  128

/* at most one "ask file is full" line a minute */
#define NGX_HTTP_SPENDPOL_ASK_LOG_MS    60000


static ngx_int_t ngx_http_spendpol_ask_create(
    ngx_http_spendpol_main_conf_t *smcf, ngx_log_t *log);


/*
 * In the master, from the zone's init: a new zone (a new epoch) lays out
 * a new ask file in place of the last one, a reload keeps the zone's.
 * nginx -t and -s leave the file of the running nginx alone. A file that
 * cannot be made is logged and the node goes on without one: its
 * controld then grants no lease, and budgets keep the check they had
 * before leases.
 */
ngx_int_t
ngx_http_spendpol_ask_init(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_main_conf_t *osmcf, ngx_log_t *log)
{
    if (osmcf) {
        smcf->ask = osmcf->ask;
        smcf->ask_size = osmcf->ask_size;
        return NGX_OK;
    }

    if (ngx_test_config || smcf->journal == NULL) {
        return NGX_OK;
    }

    (void) ngx_http_spendpol_ask_create(smcf, log);

    return NGX_OK;
}


/*
 * Written to a temporary file and renamed into place: controld never
 * maps a file not yet laid out, and knows a new one by its inode. The
 * journal's directory and mode: nginx writes, controld reads.
 */
static ngx_int_t
ngx_http_spendpol_ask_create(ngx_http_spendpol_main_conf_t *smcf,
    ngx_log_t *log)
{
    u_char     *p, *path, *temp;
    size_t      dir, size;
    void       *map;
    uint32_t    slots;
    ngx_fd_t    fd;
    ngx_err_t   err;
    ngx_str_t  *journal;

    journal = &smcf->journal->name;

    for (dir = journal->len; dir > 0 && journal->data[dir - 1] != '/'; dir--) {
        /* void */
    }

    size = dir + sizeof(SP_ASK_FILE) + NGX_INT64_LEN + sizeof(".tmp");

    path = ngx_alloc(2 * size, log);
    if (path == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(path, journal->data, dir);
    p = ngx_cpymem(p, SP_ASK_FILE, sizeof(SP_ASK_FILE) - 1);
    *p = '\0';

    temp = path + size;
    ngx_sprintf(temp, "%s.%P.tmp%Z", path, ngx_pid);

    slots = (uint32_t) ngx_min(smcf->zone_size
                               / NGX_HTTP_SPENDPOL_ASK_PER_ZONE,
                               NGX_MAX_UINT32_VALUE);
    size = sp_ask_size(slots);

    fd = ngx_open_file(temp, NGX_FILE_RDWR, NGX_FILE_TRUNCATE,
                       NGX_FILE_DEFAULT_ACCESS);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed: without an ask file "
                      "controld grants this node no budget lease; make "
                      "the journal's directory writable by nginx", temp);
        ngx_free(path);
        return NGX_ERROR;
    }

    map = MAP_FAILED;

    /*
     * the blocks for real, not a sparse file: a full disk (the journal's
     * own failure mode) must fail here, not as SIGBUS on a store later
     */
    err = posix_fallocate(fd, 0, (off_t) size);
    if (err != 0) {
        ngx_log_error(NGX_LOG_ERR, log, err,
                      "posix_fallocate(\"%s\", %uz) failed: without an ask "
                      "file controld grants this node no budget lease",
                      temp, size);
        goto failed;
    }

    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "mmap(\"%s\", %uz) failed", temp, size);
        goto failed;
    }

    sp_ask_init(map, slots, smcf->sh->epoch_ms);

    if (ngx_rename_file(temp, path) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      ngx_rename_file_n " \"%s\" to \"%s\" failed",
                      temp, path);
        goto failed;
    }

    (void) ngx_close_file(fd);
    ngx_free(path);

    smcf->ask = map;
    smcf->ask_size = size;

    return NGX_OK;

failed:

    if (map != MAP_FAILED) {
        munmap(map, size);
    }

    (void) ngx_close_file(fd);
    (void) ngx_delete_file(temp);
    ngx_free(path);

    return NGX_ERROR;
}


/* each worker's snapshot timer: nginx is alive (controld gives back the
   leases of an nginx whose heartbeat stopped), and the cache's figures */
void
ngx_http_spendpol_ask_heartbeat(ngx_http_spendpol_main_conf_t *smcf)
{
    ngx_time_t       *tp;
    sp_ask_header_t  *header;

    if (smcf->ask == NULL) {
        return;
    }

    header = smcf->ask;
    tp = ngx_timeofday();

    __atomic_store_n(&header->heartbeat_ms,
                     (int64_t) tp->sec * 1000 + tp->msec, __ATOMIC_RELEASE);

    ngx_http_spendpol_cache_report(smcf);
}


/*
 * Under the zone mutex, for a blocking budget: this node's spend of every
 * epoch, pending and reserved, plus the worst case, within the lease
 * controld holds for it (sp_lease_check); lease gets what the handshake
 * and an ask need. Without SP_SPEND_LEASES (controld grants no leases, or
 * no spend file) the global check is the rule, as before leases; a
 * request that costs nothing needs no lease.
 */
sp_lease_verdict_t
ngx_http_spendpol_lease_check(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_counter_t *counter, const sp_spend_view_t *view,
    int64_t worst, int64_t now_ms, ngx_http_spendpol_lease_t *lease)
{
    uint64_t          hash;
    int64_t           start_ms;
    sp_lease_check_t  in;

    ngx_memzero(lease, sizeof(ngx_http_spendpol_lease_t));

    if (!view->leases || worst <= 0) {
        return SP_LEASE_OK;
    }

    hash = counter->count.node.key;
    start_ms = counter->count.start_ms;

    in.used = sp_lease_used(view->node_all_nano, view->epoch_nano,
                            counter->settled_nano, counter->reserved_nano);
    in.worst = worst;
    in.lease = view->lease_nano;
    in.left = view->left_nano;
    in.expires_ms = view->lease_expires_ms;
    in.drained_ms = view->drained_ms;
    in.epoch_ms = smcf->sh->epoch_ms;
    in.now_ms = now_ms;
    in.found = view->found;

    lease->used = in.used;
    lease->verdict = sp_lease_check(&in, &lease->shortfall);

    /* found: sp_lease_check() says OK only then */
    lease->spend = view->slot;

    if (smcf->ask) {
        lease->ask = sp_ask_slot(smcf->ask, hash, start_ms);
    }

    if (lease->ask == NULL && lease->verdict != SP_LEASE_EXHAUSTED) {
        /*
         * controld cannot see what this node uses: it might give back
         * what the request needs (sp_lease_publish), so nothing passes
         */
        if (now_ms - smcf->sh->ask_logged_ms >= NGX_HTTP_SPENDPOL_ASK_LOG_MS)
        {
            smcf->sh->ask_logged_ms = now_ms;

            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "spendpol: the ask file has no slot for another "
                          "budget (%s); hard budgets without one refuse "
                          "with 402 budget_unavailable until nginx is "
                          "restarted: raise spendpol_zone_size",
                          smcf->ask ? "full" : "none was made at start");
        }

        lease->verdict = SP_LEASE_EXPIRED;
    }

    return lease->verdict;
}


/*
 * Under the zone mutex, once every budget said OK: the handshake with a
 * controld that shrinks leases (sp_lease_publish) for each leased budget,
 * then the admission counted for controld's rate and slice, and an ask
 * controld answered cleared. n when all
 * passed, else the index of the budget whose lease shrank under the
 * request (its verdict now SP_LEASE_TOP_UP), with used put back
 * everywhere.
 */
ngx_uint_t
ngx_http_spendpol_lease_publish(ngx_http_spendpol_lease_t *leases,
    ngx_uint_t n, int64_t worst, int64_t now_ms)
{
    int64_t         lease;
    ngx_uint_t      i, j;
    sp_ask_slot_t  *ask;

    for (i = 0; i < n; i++) {
        ask = leases[i].ask;

        if (ask == NULL || leases[i].verdict != SP_LEASE_OK) {
            continue;
        }

        if (sp_lease_publish(&ask->used_nano, &leases[i].spend->lease_nano,
                             leases[i].used + worst))
        {
            continue;
        }

        for (j = 0; j <= i; j++) {
            if (leases[j].ask) {
                __atomic_store_n(&leases[j].ask->used_nano, leases[j].used,
                                 __ATOMIC_RELEASE);
            }
        }

        lease = __atomic_load_n(&leases[i].spend->lease_nano,
                                __ATOMIC_ACQUIRE);

        leases[i].verdict = SP_LEASE_TOP_UP;
        leases[i].shortfall = leases[i].used + worst - lease;

        return i;
    }

    for (i = 0; i < n; i++) {
        ask = leases[i].ask;

        if (ask == NULL || leases[i].verdict != SP_LEASE_OK) {
            continue;
        }

        __atomic_store_n(&ask->admitted_nano, ask->admitted_nano + worst,
                         __ATOMIC_RELEASE);

        if (worst > ask->worst_nano) {
            __atomic_store_n(&ask->worst_nano, worst, __ATOMIC_RELEASE);
        }

        __atomic_store_n(&ask->last_admit_ms, now_ms, __ATOMIC_RELEASE);

        /* answered and admitting again: nothing outstanding (idle needs 0) */
        if (ask->need_nano != 0
            && __atomic_load_n(&leases[i].spend->answered_seq,
                               __ATOMIC_ACQUIRE)
               >= ask->ask_seq)
        {
            __atomic_store_n(&ask->need_nano, 0, __ATOMIC_RELEASE);
        }
    }

    return n;
}


/*
 * Under the zone mutex, for a request the lease lacks shortfall for. An
 * ask is state: controld reads need_nano whenever it looks. When controld
 * answered the last ask, a new one asks for the shortfall; while one is
 * outstanding, each further waiting request (ctx, the budget that stopped
 * it) adds its whole worst case once, so that one answer can pay every
 * request waiting, not one a round; for another budget of the request
 * (ctx NULL) the ask grows to the shortfall. 1 when controld had answered
 * every ask so far, or one this request was counted in (and still the
 * lease does not cover the request).
 */
ngx_uint_t
ngx_http_spendpol_lease_ask(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_lease_t *lease, int64_t worst,
    ngx_http_spendpol_ctx_t *ctx)
{
    int64_t           need;
    uint64_t          seq, answered;
    ngx_uint_t        mine;
    sp_ask_slot_t    *ask;
    sp_ask_header_t  *header;

    ask = lease->ask;

    if (ask == NULL || lease->verdict != SP_LEASE_TOP_UP) {
        return 0;
    }

    seq = ask->ask_seq;
    answered = lease->spend ? __atomic_load_n(&lease->spend->answered_seq,
                                              __ATOMIC_ACQUIRE)
                            : 0;

    /* controld answered an ask this request was counted in */
    mine = ctx != NULL && ctx->lease_ask_hash == ask->budget_hash
           && ctx->lease_ask_seq != 0 && ctx->lease_ask_seq <= answered;

    if (answered >= seq) {
        need = lease->shortfall;

    } else if (ctx == NULL) {
        if (lease->shortfall <= ask->need_nano) {
            /* asked for at least this, not answered yet */
            return 0;
        }

        need = lease->shortfall;

    } else if (ctx->lease_ask_hash == ask->budget_hash
               && ctx->lease_ask_seq > answered)
    {
        /* this request is counted in an ask not answered yet */
        return 0;

    } else {
        need = ask->need_nano > INT64_MAX - worst ? INT64_MAX
                                                  : ask->need_nano + worst;
    }

    header = smcf->ask;

    __atomic_store_n(&ask->need_nano, need, __ATOMIC_RELEASE);
    __atomic_store_n(&ask->ask_seq, seq + 1, __ATOMIC_RELEASE);
    __atomic_fetch_add(&header->asks, 1, __ATOMIC_RELEASE);

    if (ctx != NULL) {
        ctx->lease_ask_hash = ask->budget_hash;
        ctx->lease_ask_seq = seq + 1;
    }

    return answered >= seq || mine;
}


/*
 * Under the zone mutex, when a request let its reservation go: what this
 * node uses now, so that controld can give back what it no longer needs
 * (until then it only sees too much, never too little). Only a budget
 * whose admissions were published has a slot: warning budgets take none.
 */
void
ngx_http_spendpol_lease_released(ngx_http_spendpol_main_conf_t *smcf,
    ngx_http_spendpol_counter_t *counter)
{
    sp_ask_slot_t    *ask;
    sp_spend_view_t   view;
    sp_ask_header_t  *header;

    if (smcf->ask == NULL || smcf->spend_map == NULL
        || !(__atomic_load_n(&smcf->spend.header->flags, __ATOMIC_ACQUIRE)
             & SP_SPEND_LEASES))
    {
        return;
    }

    header = smcf->ask;

    ask = (sp_ask_slot_t *) sp_slots_find(header + 1, header->slots,
                                          sizeof(sp_ask_slot_t),
                                          counter->count.node.key,
                                          counter->count.start_ms);
    if (ask == NULL) {
        return;
    }

    ngx_http_spendpol_spend_view(smcf, counter->count.node.key,
                                 counter->count.start_ms, &view);

    __atomic_store_n(&ask->used_nano,
                     sp_lease_used(view.node_all_nano, view.epoch_nano,
                                   counter->settled_nano,
                                   counter->reserved_nano),
                     __ATOMIC_RELEASE);
}
