/*
 * Budget leases across nodes (issue 18; the rules are sp_lease.h's).
 *
 * Every CD_LEASE_POLL_MS this thread loads the ask file's counter (nginx
 * bumps it when a request waits for a top-up); a change, or
 * CD_LEASE_HEARTBEAT_MS since the last round, runs a round. A round
 * takes every blocking budget in use on this node (an ask slot, spend of
 * this node, or a lease held), sizes its lease from the ask slot (used,
 * rate, the largest worst case, a parked request's need), and sends all
 * grants in one statement, one transaction, in budget id order (every
 * node takes the advisory locks in one order). What PostgreSQL granted
 * is stored in the spend file: left, live nodes, expiry, the lease, the
 * ask answered; then SP_SPEND_LEASES is set.
 *
 * A smaller lease is stored before it is sent, through the handshake of
 * sp_lease_shrink(), so no admission slips past it. Give-backs: a budget
 * idle for CD_LEASE_IDLE_MS, or nginx gone (no heartbeat for
 * CD_LEASE_GONE_MS and the journal drained since), gives back all it
 * does not use. On stop the leases are kept: the module admits inside
 * them until they expire, and a restart renews them.
 *
 * Until an ask file is first seen (nginx not running, or an nginx
 * without leases) no lease is taken and the flag stays clear: the
 * module's rule is the one before leases. Once set, the flag is not
 * cleared when the file goes (exactness: that nginx refuses hard budgets
 * instead of admitting without a lease); SPENDPOL_LEASES=0 clears it.
 */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "controld.h"
#include "sp_budget.h"
#include "sp_lease.h"


#define CD_LEASE_SUBJECT   "lease"

/* what this node holds of one budget and period */
typedef struct {
    cd_lease_budget_t  b;
    int64_t            lease;       /* granted, 0 before the first grant */
    int64_t            left;
    int64_t            live;
    int64_t            rate;
    int64_t            admitted;    /* the ask slot's, at the last round */
    int64_t            round_ms;    /* monotonic, of the last round */
    uint64_t           answered;    /* the last ask_seq answered */
    unsigned           granted:1;
    unsigned           seen:1;      /* in this round's budget list */
    /* this round */
    int64_t            used;
    int64_t            want;
    uint64_t           ask_seq;
} cd_lease_state_t;

typedef struct {
    cd_app_t           *app;
    char                path[4096];
    int                 fd;
    const uint8_t      *map;
    size_t              len;
    dev_t               dev;
    ino_t               ino;
    sp_ask_t            ask;
    int64_t             checked_ms;  /* monotonic: the file last looked at */
    cd_lease_state_t   *states;
    size_t              nstates;
    int                 failed;
    size_t              asked;       /* this round: known budgets asked */
    int64_t             woken_ms;    /* monotonic: spend.c last woken */
    int                 unlisted;    /* an ask named a budget spend.c had
                                        not listed: a round at its next list */
    uint64_t            listed;      /* spend.c's list count then */
    unsigned            relists;     /* spend.c woken for one ask change */
} cd_lease_ctx_t;


static int64_t
cd_lease_max(int64_t a, int64_t b)
{
    return a > b ? a : b;
}


static void
cd_lease_unmap(cd_lease_ctx_t *x)
{
    if (x->map != NULL) {
        munmap((void *) x->map, x->len);
        x->map = NULL;
    }

    if (x->fd >= 0) {
        close(x->fd);
        x->fd = -1;
    }
}


/* maps the ask file, again when nginx laid out a new one; 1 when mapped */
static int
cd_lease_map(cd_lease_ctx_t *x)
{
    int          fd;
    char         err[256];
    void        *map;
    struct stat  st;

    if (stat(x->path, &st) != 0) {
        cd_lease_unmap(x);
        return 0;
    }

    if (x->map != NULL && st.st_dev == x->dev && st.st_ino == x->ino) {
        return 1;
    }

    cd_lease_unmap(x);

    fd = open(x->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
        if (fd >= 0) {
            close(fd);
        }

        return 0;
    }

    map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);

    if (map == MAP_FAILED) {
        close(fd);
        return 0;
    }

    if (sp_ask_open(&x->ask, map, (size_t) st.st_size, err, sizeof(err))
        != SP_OK)
    {
        cd_log_warn(CD_LEASE_SUBJECT, "ignoring %s: %s", x->path, err);
        munmap(map, (size_t) st.st_size);
        close(fd);
        return 0;
    }

    x->fd = fd;
    x->map = map;
    x->len = (size_t) st.st_size;
    x->dev = st.st_dev;
    x->ino = st.st_ino;

    cd_log_info(CD_LEASE_SUBJECT, "reading asks from %s", x->path);

    return 1;
}


static uint64_t
cd_lease_asks(cd_lease_ctx_t *x)
{
    if (x->map == NULL) {
        return 0;
    }

    return __atomic_load_n(&x->ask.header->asks, __ATOMIC_ACQUIRE);
}


void
cd_lease_set_budgets(cd_app_t *app, cd_lease_budget_t *b, size_t n)
{
    cd_lease_t  *l;

    l = &app->lease;

    if (!__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE)) {
        free(b);
        return;
    }

    pthread_mutex_lock(&l->mutex);

    /* stopped meanwhile (spend.c stops after this thread): keep nothing */
    if (l->stopped) {
        pthread_mutex_unlock(&l->mutex);
        free(b);
        return;
    }

    free(l->budgets);
    l->budgets = b;
    l->nbudgets = n;
    pthread_mutex_unlock(&l->mutex);

    /* an ask may wait for this list: the lease thread looks at once */
    __atomic_add_fetch(&l->listed, 1, __ATOMIC_RELEASE);
    cd_thread_wake(&l->thread);
}


/* the spend slot of b; under app->spend.lock */
static sp_spend_slot_t *
cd_lease_spend_slot(cd_app_t *app, const cd_lease_budget_t *b)
{
    sp_spend_header_t  *header;

    if (app->spend.map == NULL) {
        return NULL;
    }

    header = (sp_spend_header_t *) app->spend.map;

    return (sp_spend_slot_t *) sp_slots_find(header + 1, header->slots,
                                             sizeof(sp_spend_slot_t),
                                             b->hash, b->period_ms);
}


static cd_lease_state_t *
cd_lease_state(cd_lease_ctx_t *x, const cd_lease_budget_t *b)
{
    size_t             i;
    sp_spend_slot_t   *spend;
    cd_lease_state_t  *s;

    for (i = 0; i < x->nstates; i++) {
        if (x->states[i].b.hash == b->hash
            && x->states[i].b.period_ms == b->period_ms
            && strcmp(x->states[i].b.id, b->id) == 0)
        {
            x->states[i].b.node_all = b->node_all;
            return &x->states[i];
        }
    }

    s = realloc(x->states, (x->nstates + 1) * sizeof(cd_lease_state_t));
    if (s == NULL) {
        return NULL;
    }

    x->states = s;
    s = &x->states[x->nstates++];
    memset(s, 0, sizeof(*s));
    s->b = *b;

    /*
     * After a restart the module still holds what the last controld
     * published: start from it, so a smaller lease goes through the
     * shrink handshake like any other
     */
    pthread_mutex_lock(&x->app->spend.lock);
    spend = cd_lease_spend_slot(x->app, b);

    if (spend != NULL
        && __atomic_load_n(&spend->lease_expires_ms, __ATOMIC_ACQUIRE) != 0)
    {
        s->lease = __atomic_load_n(&spend->lease_nano, __ATOMIC_SEQ_CST);
        s->left = __atomic_load_n(&spend->left_nano, __ATOMIC_ACQUIRE);
        s->live = __atomic_load_n(&spend->live_nodes, __ATOMIC_ACQUIRE);
        s->answered = __atomic_load_n(&spend->answered_seq, __ATOMIC_ACQUIRE);
        s->granted = 1;
    }

    pthread_mutex_unlock(&x->app->spend.lock);

    return s;
}


/* the states of this round's budgets; the others are forgotten */
static int
cd_lease_sync(cd_lease_ctx_t *x)
{
    size_t              i, j, n;
    cd_lease_t         *l;
    cd_lease_state_t   *s;
    cd_lease_budget_t  *b;

    l = &x->app->lease;

    for (i = 0; i < x->nstates; i++) {
        x->states[i].seen = 0;
    }

    pthread_mutex_lock(&l->mutex);

    n = l->nbudgets;
    b = n ? malloc(n * sizeof(cd_lease_budget_t)) : NULL;

    if (b != NULL) {
        memcpy(b, l->budgets, n * sizeof(cd_lease_budget_t));
    }

    pthread_mutex_unlock(&l->mutex);

    if (n > 0 && b == NULL) {
        return CD_ERROR;
    }

    for (i = 0; i < n; i++) {
        s = cd_lease_state(x, &b[i]);
        if (s == NULL) {
            free(b);
            return CD_ERROR;
        }

        s->seen = 1;
    }

    free(b);

    /* deleted, rolled over or no longer blocking: nothing to hold */
    for (i = 0, j = 0; i < x->nstates; i++) {
        if (x->states[i].seen) {
            x->states[j++] = x->states[i];
        }
    }

    x->nstates = j;

    return CD_OK;
}


static const sp_ask_slot_t *
cd_lease_ask_slot(cd_lease_ctx_t *x, const cd_lease_budget_t *b)
{
    if (x->map == NULL) {
        return NULL;
    }

    return sp_slots_find(x->ask.slots, x->ask.header->slots,
                         sizeof(sp_ask_slot_t), b->hash, b->period_ms);
}


/*
 * What to ask PostgreSQL for one budget: s->used and s->want; 0 when the
 * budget is not in use on this node (nothing to grant nor renew).
 */
static int
cd_lease_size(cd_lease_ctx_t *x, cd_lease_state_t *s, int nginx_gone,
    int64_t now_ms, int64_t mono_ms)
{
    int64_t               used, admitted, delta, burst, slice, none;
    sp_lease_slice_t      in;
    sp_spend_slot_t      *spend;
    const sp_ask_slot_t  *ask;

    ask = cd_lease_ask_slot(x, &s->b);

    if (ask == NULL && !s->granted && s->b.node_all == 0) {
        return 0;
    }

    used = s->b.node_all;
    s->ask_seq = 0;
    memset(&in, 0, sizeof(in));

    if (ask != NULL) {
        s->ask_seq = __atomic_load_n(&ask->ask_seq, __ATOMIC_ACQUIRE);

        /* need_nano stays after its answer: it counts while asked */
        if (s->ask_seq != s->answered) {
            in.need = __atomic_load_n(&ask->need_nano, __ATOMIC_ACQUIRE);
        }

        in.floor = __atomic_load_n(&ask->worst_nano, __ATOMIC_ACQUIRE);

        /*
         * nginx gone: the reservations of requests it was serving never
         * settle, so what was ingested (node_all) is all it used
         */
        if (!nginx_gone) {
            used = cd_lease_max(used, __atomic_load_n(&ask->used_nano,
                                                      __ATOMIC_SEQ_CST));
        }
        admitted = __atomic_load_n(&ask->admitted_nano, __ATOMIC_ACQUIRE);
        delta = admitted >= s->admitted ? admitted - s->admitted : admitted;

        if (s->round_ms != 0) {
            s->rate = sp_lease_rate(s->rate, delta, mono_ms - s->round_ms);
        }

        s->admitted = admitted;

        /*
         * A burst outruns the average, which starts at 0: what this round
         * saw admitted and asked, as a rate over at least a heartbeat,
         * sizes the slice too (still at most half of what is left per
         * live node), so a busy budget far from its limit stops asking.
         */
        burst = sp_lease_rate(0, delta > INT64_MAX - in.need
                                 ? INT64_MAX : delta + in.need,
                              cd_lease_max(mono_ms - s->round_ms,
                                           CD_LEASE_HEARTBEAT_MS)) * 4;
        in.rate = cd_lease_max(s->rate, burst);

    } else {
        in.rate = s->rate;
    }

    s->round_ms = mono_ms;

    /* before the first grant what is left is PostgreSQL's to say */
    in.free = s->granted ? cd_lease_max(s->lease - used, 0) + s->left
                         : INT64_MAX / 4;
    in.live_nodes = s->live;
    in.horizon_ms = x->app->config.lease_horizon_ms;

    slice = sp_lease_slice(&in);

    if (nginx_gone
        || (ask != NULL && now_ms - __atomic_load_n(&ask->last_admit_ms,
                                                    __ATOMIC_ACQUIRE)
                           > CD_LEASE_IDLE_MS
            && in.need == 0))
    {
        slice = 0;
    }

    s->used = used;
    s->want = sp_lease_target(s->lease, used, slice);

    /*
     * an ask pays its shortfall now, even where the watermark would wait
     * (headroom exactly half a slice)
     */
    if (in.need > 0 && slice > 0 && s->want < s->lease + in.need) {
        s->want = s->lease + in.need;
    }

    if (!s->granted || s->want >= s->lease) {
        return 1;
    }

    /* a give-back: lower it here first; what was admitted meanwhile stays */
    none = 0;
    pthread_mutex_lock(&x->app->spend.lock);
    spend = cd_lease_spend_slot(x->app, &s->b);

    if (spend != NULL) {
        s->want = sp_lease_shrink(&spend->lease_nano,
                                  ask && !nginx_gone ? &ask->used_nano
                                                     : &none,
                                  s->want);
    }

    pthread_mutex_unlock(&x->app->spend.lock);

    s->used = cd_lease_max(s->used, s->want);

    return 1;
}


/*
 * Sets (on) or clears SP_SPEND_LEASES in the spend file; 0 when spend.c
 * has not laid it out yet.
 */
static int
cd_lease_set_flag(cd_app_t *app, int on)
{
    int                 done;
    sp_spend_header_t  *header;

    pthread_mutex_lock(&app->spend.lock);

    done = app->spend.map != NULL;

    if (done) {
        header = (sp_spend_header_t *) app->spend.map;

        if (on) {
            __atomic_or_fetch(&header->flags, SP_SPEND_LEASES,
                              __ATOMIC_RELEASE);

        } else {
            __atomic_and_fetch(&header->flags, ~(uint64_t) SP_SPEND_LEASES,
                               __ATOMIC_RELEASE);
        }
    }

    pthread_mutex_unlock(&app->spend.lock);

    return done;
}


static int
cd_lease_by_id(const void *a, const void *b)
{
    return strcmp((*(cd_lease_state_t * const *) a)->b.id,
                  (*(cd_lease_state_t * const *) b)->b.id);
}


/* one statement, one transaction: every grant of the round */
static int
cd_lease_grant(cd_lease_ctx_t *x, cd_lease_state_t **round, size_t n,
    int64_t now_ms)
{
    int                  rc;
    char                 ttl[32], grace[32];
    size_t               i, k, row;
    PGresult            *res;
    const char          *params[8];
    cd_db_conn_t        *c;
    sp_spend_slot_t     *spend;
    cd_spend_array_t     a[5];

    rc = CD_ERROR;
    memset(a, 0, sizeof(a));

    for (k = 0; k < 5; k++) {
        if (cd_spend_array_init(&a[k], n, k == 0 ? CD_ID_MAX : 24)
            != CD_OK)
        {
            goto done;
        }
    }

    for (i = 0; i < n; i++) {
        cd_spend_array_str(&a[0], round[i]->b.id);
        cd_spend_array_int(&a[1], round[i]->b.period_ms * 1000);
        cd_spend_array_int(&a[2], round[i]->used);
        cd_spend_array_int(&a[3], round[i]->want);
        cd_spend_array_int(&a[4], round[i]->rate);
    }

    for (k = 0; k < 5; k++) {
        params[k] = cd_spend_array_end(&a[k]);
    }

    snprintf(ttl, sizeof(ttl), "%ld", x->app->config.lease_ttl_ms);
    snprintf(grace, sizeof(grace), "%ld", x->app->config.lease_grace_ms);
    params[5] = x->app->config.node_id;
    params[6] = ttl;
    params[7] = grace;

    c = cd_db_acquire_begin(&x->app->db, 1000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        goto done;
    }

    res = cd_db_exec(c,
        "SELECT t.n, g.granted_nano, g.left_nano, g.live_nodes"
        " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],"
        " $5::bigint[]) WITH ORDINALITY AS t(budget, period_us, used, want,"
        " rate, n),"
        " LATERAL spendpol_lease_grant(t.budget,"
        " 'epoch'::timestamptz + t.period_us * interval '1 microsecond',"
        " $6, t.used, t.want, t.rate, $7, $8) g ORDER BY t.n",
        8, params);

    if (res == NULL || (size_t) PQntuples(res) != n
        || cd_db_commit(c) != CD_OK)
    {
        if (res != NULL) {
            PQclear(res);
        }

        cd_db_rollback(c);
        cd_db_release(&x->app->db, c);
        goto done;
    }

    cd_db_release(&x->app->db, c);

    pthread_mutex_lock(&x->app->spend.lock);

    for (row = 0; row < n; row++) {
        i = (size_t) strtoll(PQgetvalue(res, (int) row, 0), NULL, 10) - 1;

        if (i >= n) {
            continue;
        }

        round[i]->lease = strtoll(PQgetvalue(res, (int) row, 1), NULL, 10);
        round[i]->left = strtoll(PQgetvalue(res, (int) row, 2), NULL, 10);
        round[i]->live = strtoll(PQgetvalue(res, (int) row, 3), NULL, 10);
        round[i]->granted = 1;
        round[i]->answered = round[i]->ask_seq;

        spend = cd_lease_spend_slot(x->app, &round[i]->b);
        if (spend == NULL) {
            continue;
        }

        __atomic_store_n(&spend->left_nano, round[i]->left, __ATOMIC_RELEASE);
        __atomic_store_n(&spend->live_nodes, round[i]->live,
                         __ATOMIC_RELEASE);
        __atomic_store_n(&spend->lease_expires_ms,
                         now_ms + x->app->config.lease_ttl_ms,
                         __ATOMIC_RELEASE);
        __atomic_store_n(&spend->lease_nano, round[i]->lease,
                         __ATOMIC_SEQ_CST);
        __atomic_store_n(&spend->answered_seq, round[i]->ask_seq,
                         __ATOMIC_RELEASE);
    }

    pthread_mutex_unlock(&x->app->spend.lock);

    PQclear(res);
    rc = CD_OK;

done:

    for (k = 0; k < 5; k++) {
        free(a[k].data);
    }

    return rc;
}


/* one round; CD_ERROR when PostgreSQL did not answer */
static int
cd_lease_round(cd_lease_ctx_t *x)
{
    int                 rc, gone;
    size_t              i, n;
    int64_t             now_ms, mono_ms, heartbeat;
    cd_lease_state_t  **round;

    if (cd_lease_sync(x) != CD_OK) {
        return CD_ERROR;
    }

    now_ms = cd_clock_ms(CLOCK_REALTIME);
    mono_ms = cd_clock_ms(CLOCK_MONOTONIC);

    /*
     * nginx gone: no worker heartbeat for CD_LEASE_GONE_MS, and a journal
     * read that began after that is committed (killed requests never
     * settle, so what was ingested is all it spent)
     */
    gone = 0;

    if (x->map != NULL) {
        heartbeat = __atomic_load_n(&x->ask.header->heartbeat_ms,
                                    __ATOMIC_ACQUIRE);
        gone = now_ms - heartbeat > CD_LEASE_GONE_MS
               && cd_ingest_drained_ms(x->app) > heartbeat
                                                  + CD_LEASE_GONE_MS;
    }

    round = malloc((x->nstates ? x->nstates : 1) * sizeof(*round));
    if (round == NULL) {
        return CD_ERROR;
    }

    n = 0;
    x->asked = 0;

    for (i = 0; i < x->nstates; i++) {
        if (cd_lease_size(x, &x->states[i], gone, now_ms, mono_ms)) {
            round[n++] = &x->states[i];
            x->asked += x->states[i].ask_seq != x->states[i].answered;
        }
    }

    rc = CD_OK;

    if (n > 0) {
        qsort(round, n, sizeof(*round), cd_lease_by_id);
        rc = cd_lease_grant(x, round, n, now_ms);
    }

    free(round);

    if (rc == CD_OK && x->map != NULL) {
        /* the module may rely on leases: it asks for those it lacks */
        (void) cd_lease_set_flag(x->app, 1);
    }

    return rc;
}


/* asks spend.c for a round now (a new budget, drained_ms), every 20 ms */
static void
cd_lease_wake_spend(cd_lease_ctx_t *x, int64_t mono_ms)
{
    if (mono_ms - x->woken_ms >= 20) {
        x->woken_ms = mono_ms;
        cd_thread_wake(&x->app->spend.thread);
    }
}


/*
 * 1 while the spend file's drained_ms is older than this nginx's epoch
 * though the journal is drained past it: the module waits for spend.c
 */
static int
cd_lease_catching_up(cd_lease_ctx_t *x)
{
    int      behind;
    int64_t  epoch;

    if (x->map == NULL) {
        return 0;
    }

    epoch = __atomic_load_n(&x->ask.header->epoch_ms, __ATOMIC_ACQUIRE);

    if (cd_ingest_drained_ms(x->app) < epoch) {
        return 0;
    }

    pthread_mutex_lock(&x->app->spend.lock);
    behind = x->app->spend.map != NULL
             && __atomic_load_n(&((sp_spend_header_t *)
                                  x->app->spend.map)->drained_ms,
                                __ATOMIC_ACQUIRE) < epoch;
    pthread_mutex_unlock(&x->app->spend.lock);

    return behind;
}


static void *
cd_lease_thread(void *data)
{
    int64_t          mono_ms, last_ms;
    int              relisted;
    uint64_t         asks, last_asks, listed;
    char             dir[4096];
    cd_lease_ctx_t   x;

    memset(&x, 0, sizeof(x));
    x.app = data;
    x.fd = -1;
    last_ms = 0;
    last_asks = 0;

    snprintf(dir, sizeof(dir), "%s", x.app->config.journal_path);
    snprintf(x.path, sizeof(x.path), "%s/%s", dirname(dir), SP_ASK_FILE);

    /*
     * leasing off: the flag an earlier controld set (carried over in the
     * spend file) must not keep the module waiting for leases
     */
    while (!x.app->config.leases
           && !cd_thread_stopping(&x.app->lease.thread))
    {
        if (cd_lease_set_flag(x.app, 0)) {
            cd_log_info(CD_LEASE_SUBJECT, "budget leases off "
                        "(SPENDPOL_LEASES=0): each node checks a budget "
                        "alone");
            return NULL;
        }

        cd_thread_sleep(&x.app->lease.thread, CD_LEASE_POLL_MS);
    }

    while (!cd_thread_stopping(&x.app->lease.thread)) {
        mono_ms = cd_clock_ms(CLOCK_MONOTONIC);

        if (mono_ms - x.checked_ms >= CD_LEASE_HEARTBEAT_MS) {
            (void) cd_lease_map(&x);
            x.checked_ms = mono_ms;
        }

        asks = cd_lease_asks(&x);
        listed = __atomic_load_n(&x.app->lease.listed, __ATOMIC_ACQUIRE);

        relisted = x.unlisted && listed != x.listed;

        if ((x.map != NULL || x.nstates > 0)
            && (asks != last_asks || relisted
                || mono_ms - last_ms >= CD_LEASE_HEARTBEAT_MS))
        {
            x.unlisted = 0;

            if (cd_lease_round(&x) != CD_OK) {
                if (!x.failed) {
                    cd_log_warn(CD_LEASE_SUBJECT, "cannot renew the budget "
                                "leases; retrying (this node admits inside "
                                "them until they expire)");
                }

                x.failed = 1;

            } else {
                if (asks != last_asks) {
                    x.relists = 0;
                }

                if ((asks != last_asks || relisted) && x.asked == 0
                    && x.relists++ < CD_LEASE_RELISTS)
                {
                    /*
                     * an ask for a budget spend.c has not listed yet (or
                     * listed from a read begun before it existed): a
                     * round again as soon as spend.c lists its budgets
                     */
                    x.unlisted = 1;
                    x.listed = listed;
                    cd_lease_wake_spend(&x, mono_ms);
                }

                if (x.failed) {
                    cd_log_info(CD_LEASE_SUBJECT, "budget leases renewed "
                                "again");
                }

                x.failed = 0;
                last_asks = asks;
            }

            last_ms = mono_ms;
        }

        if (cd_lease_catching_up(&x)) {
            /* nginx waits for drained_ms: spend.c publishes it */
            cd_lease_wake_spend(&x, mono_ms);
        }

        cd_thread_sleep(&x.app->lease.thread, CD_LEASE_POLL_MS);
    }

    /* the leases stay: a restart renews them, nginx keeps serving */
    cd_lease_unmap(&x);
    free(x.states);

    return NULL;
}


void
cd_lease_cache_figures(cd_app_t *app, int64_t zone[3])
{
    int                     fd;
    char                    dir[4096], path[4096], err[256];
    void                   *map;
    sp_ask_t                ask;
    struct stat             st;

    zone[0] = zone[1] = zone[2] = 0;

    snprintf(dir, sizeof(dir), "%s", app->config.journal_path);
    snprintf(path, sizeof(path), "%s/%s", dirname(dir), SP_ASK_FILE);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }

    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        return;
    }

    map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);

    if (map == MAP_FAILED) {
        return;
    }

    /* workers store the figures atomically: load them so */
    if (sp_ask_open(&ask, map, (size_t) st.st_size, err, sizeof(err))
        == SP_OK)
    {
        zone[0] = __atomic_load_n(&ask.header->cache_entries,
                                  __ATOMIC_RELAXED);
        zone[1] = __atomic_load_n(&ask.header->cache_bytes,
                                  __ATOMIC_RELAXED);
        zone[2] = __atomic_load_n(&ask.header->cache_evictions,
                                  __ATOMIC_RELAXED);
    }

    munmap(map, (size_t) st.st_size);
}


int
cd_lease_start(cd_app_t *app)
{
    if (pthread_mutex_init(&app->lease.mutex, NULL) != 0) {
        return CD_ERROR;
    }

    __atomic_store_n(&app->lease.ready, 1, __ATOMIC_RELEASE);

    return cd_thread_start(&app->lease.thread, CD_LEASE_SUBJECT,
                           cd_lease_thread, app);
}


void
cd_lease_stop(cd_app_t *app)
{
    cd_thread_stop(&app->lease.thread);

    if (__atomic_load_n(&app->lease.ready, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&app->lease.mutex);
        app->lease.stopped = 1;
        free(app->lease.budgets);
        app->lease.budgets = NULL;
        app->lease.nbudgets = 0;
        pthread_mutex_unlock(&app->lease.mutex);
    }
}
