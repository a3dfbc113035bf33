/*
 * The spend file writer. nginx workers on this node map
 * SPENDPOL_SNAPSHOT_DIR/spend.slots read-only (sp_budget.h); every
 * CD_SPEND_INTERVAL_MS this thread stores, for each budget's current
 * period: global_nano (budget_spend: every node's ingested spend),
 * and for this node the epoch of its latest ingested journal line and
 * node_nano (budget_node_spend of this node and that epoch).
 *
 * Values are rewritten in place with 8-byte atomic stores. Readers check
 * budget_hash and period_start_ms, so a slot moving to a new period
 * first gets period_start_ms 0 (no data), then its values, then the new
 * period_start_ms (release). A new epoch first zeroes node_nano, so no
 * reader sees the new epoch with the old epoch's larger count (which
 * would hide pending spend). When the budgets outgrow the slots (half
 * full) or the file is replaced under us, a new file (generation + 1) is
 * laid out in a temporary file and renamed into place.
 *
 * Rate limit slots: every round also stores, for each subject counted in
 * Redis in the current minute, the other nodes' requests and tokens
 * (rates.c), with the same protocol (window_start_ms 0 while a slot moves
 * to a new window).
 *
 * Also notices a budget period rolling over (the publisher's
 * next_change, by the database clock) and asks for a republish, so the
 * snapshot carries the new period within about 200 ms.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "controld.h"
#include "sp_budget.h"


#define CD_SPEND_SUBJECT   "spend"

enum {
    CD_SPEND_ID = 0, CD_SPEND_PERIOD, CD_SPEND_GLOBAL, CD_SPEND_EPOCH,
    CD_SPEND_NODE, CD_SPEND_NOW_US, CD_SPEND_NODE_ALL, CD_SPEND_BLOCKS
};


uint32_t
cd_spend_slots_for(size_t budgets)
{
    uint32_t  n;

    n = CD_SPEND_MIN_SLOTS;

    while ((size_t) n < budgets * 2 && n < (1u << 30)) {
        n *= 2;
    }

    return n;
}


static int
cd_spend_stopping(cd_app_t *app)
{
    return cd_thread_stopping(&app->spend.thread);
}


static void
cd_spend_unmap(cd_spend_t *sp)
{
    if (sp->map != NULL) {
        munmap(sp->map, sp->len);
        sp->map = NULL;
    }

    if (sp->fd >= 0) {
        close(sp->fd);
        sp->fd = -1;
    }
}


/* the generation of the file in place, 0 when none or not valid */
static uint64_t
cd_spend_existing_generation(const char *path)
{
    int                 fd;
    ssize_t             n;
    sp_spend_header_t   header;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }

    n = pread(fd, &header, sizeof(header), 0);
    close(fd);

    if (n != (ssize_t) sizeof(header)
        || memcmp(header.magic, SP_SPEND_MAGIC, sizeof(header.magic)) != 0)
    {
        return 0;
    }

    return header.generation;
}


/*
 * A new layout keeps the slots of the old one that hold a live lease
 * (with their values), the flags and drained_ms. Under sp->lock.
 */
static void
cd_spend_carry(const uint8_t *from_map, uint8_t *map)
{
    int64_t                   now_ms;
    uint32_t                  i;
    sp_spend_slot_t          *to;
    sp_spend_header_t        *header;
    const sp_spend_slot_t    *from;
    const sp_spend_header_t  *old;

    old = (const sp_spend_header_t *) from_map;
    header = (sp_spend_header_t *) map;
    from = (const sp_spend_slot_t *) (old + 1);

    now_ms = cd_clock_ms(CLOCK_REALTIME);

    for (i = 0; i < old->slots; i++) {
        /* what the module must not lose: a lease it may admit inside */
        if (from[i].budget_hash == 0
            || __atomic_load_n(&from[i].lease_expires_ms, __ATOMIC_ACQUIRE)
               <= now_ms)
        {
            continue;
        }

        to = sp_slots_take(header + 1, header->slots, sizeof(sp_spend_slot_t),
                           from[i].budget_hash);
        if (to != NULL) {
            *to = from[i];
        }
    }

    header->flags = __atomic_load_n(&old->flags, __ATOMIC_ACQUIRE);
    header->drained_ms = __atomic_load_n(&old->drained_ms, __ATOMIC_ACQUIRE);
}


/*
 * At start, the file an earlier controld left: the module still admits
 * inside the leases it holds, so they are carried over too.
 */
static void
cd_spend_carry_file(const char *path, uint8_t *map)
{
    int          fd;
    char         err[256];
    void        *old;
    sp_spend_t   spend;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }

    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        return;
    }

    old = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);

    if (old == MAP_FAILED) {
        return;
    }

    if (sp_spend_open(&spend, old, (size_t) st.st_size, err, sizeof(err))
        == SP_OK)
    {
        cd_spend_carry(old, map);
    }

    munmap(old, (size_t) st.st_size);
}


/* lays out a file for slots (carrying the old one over), renames it */
static int
cd_spend_create(cd_app_t *app, uint32_t slots)
{
    int          fd;
    char         path[4096], tmp[4096];
    size_t       len;
    uint8_t     *map;
    uint64_t     generation;
    cd_spend_t  *sp;
    struct stat  st;

    sp = &app->spend;

    snprintf(path, sizeof(path), "%s/%s", app->config.snapshot_dir,
             SP_SPEND_FILE);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", app->config.snapshot_dir,
             SP_SPEND_FILE, (int) getpid());

    generation = sp->generation + 1;

    if (sp->generation == 0) {
        generation = cd_spend_existing_generation(path) + 1;
    }

    len = sp_spend_size(slots);

    (void) unlink(tmp);
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
              app->config.snapshot_mode);

    if (fd < 0) {
        cd_log_error(CD_SPEND_SUBJECT, "cannot create %s: %s", tmp,
                     strerror(errno));
        return CD_ERROR;
    }

    if (fchmod(fd, app->config.snapshot_mode) != 0
        || ftruncate(fd, (off_t) len) != 0
        || fstat(fd, &st) != 0)
    {
        cd_log_error(CD_SPEND_SUBJECT, "cannot size %s: %s", tmp,
                     strerror(errno));
        goto failed;
    }

    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    if (map == MAP_FAILED) {
        cd_log_error(CD_SPEND_SUBJECT, "cannot map %s: %s", tmp,
                     strerror(errno));
        goto failed;
    }

    sp_spend_init(map, slots, generation);

    if (sp->map != NULL) {
        cd_spend_carry(sp->map, map);

    } else {
        cd_spend_carry_file(path, map);
    }

    if (rename(tmp, path) != 0) {
        cd_log_error(CD_SPEND_SUBJECT, "cannot rename %s to %s: %s", tmp,
                     path, strerror(errno));
        munmap(map, len);
        goto failed;
    }

    cd_spend_unmap(sp);

    sp->fd = fd;
    sp->map = map;
    sp->len = len;
    sp->generation = generation;
    sp->dev = st.st_dev;
    sp->ino = st.st_ino;

    cd_log_info(CD_SPEND_SUBJECT, "laid out %s: generation %llu, %u slots",
                path, (unsigned long long) generation,
                ((sp_spend_header_t *) map)->slots);

    return CD_OK;

failed:

    close(fd);
    (void) unlink(tmp);

    return CD_ERROR;
}


/* 1 when the file in place is not the one we map (deleted, replaced) */
static int
cd_spend_replaced(cd_app_t *app)
{
    char         path[4096];
    struct stat  st;

    snprintf(path, sizeof(path), "%s/%s", app->config.snapshot_dir,
             SP_SPEND_FILE);

    return stat(path, &st) != 0 || st.st_dev != app->spend.dev
           || st.st_ino != app->spend.ino;
}


static uint32_t
cd_spend_used(cd_spend_t *sp)
{
    uint32_t          i, used;
    sp_spend_slot_t  *slots;

    slots = (sp_spend_slot_t *) (sp->map + sizeof(sp_spend_header_t));
    used = 0;

    for (i = 0; i < ((sp_spend_header_t *) sp->map)->slots; i++) {
        used += slots[i].budget_hash != 0;
    }

    return used;
}


static void
cd_spend_store(sp_spend_slot_t *slot, int64_t period_start, int64_t global,
    int64_t epoch, int64_t node, int64_t node_all, int64_t now_ms)
{
    if (__atomic_load_n(&slot->period_start_ms, __ATOMIC_RELAXED)
        != period_start)
    {
        /*
         * readers of the old period see "no data" until we are done; the
         * new period holds no lease until lease.c grants one
         */
        __atomic_store_n(&slot->period_start_ms, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->lease_nano, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&slot->lease_expires_ms, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->left_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->live_nodes, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->node_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->epoch, epoch, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->node_all_nano, node_all, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->node_nano, node, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->global_nano, global, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->updated_ms, now_ms, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->period_start_ms, period_start,
                         __ATOMIC_RELEASE);
        return;
    }

    if (__atomic_load_n(&slot->epoch, __ATOMIC_RELAXED) != epoch) {
        __atomic_store_n(&slot->node_nano, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->epoch, epoch, __ATOMIC_RELEASE);
    }

    /* node_all first: a reader loads node_nano first, so overcounts */
    __atomic_store_n(&slot->node_all_nano, node_all, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->node_nano, node, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->global_nano, global, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->updated_ms, now_ms, __ATOMIC_RELEASE);
}


static void
cd_spend_store_rate(sp_rate_slot_t *slot, int64_t window, const cd_rate_t *rate,
    int64_t now_ms)
{
    int64_t  start;

    start = __atomic_load_n(&slot->window_start_ms, __ATOMIC_RELAXED);

    if (start != window) {
        __atomic_store_n(&slot->window_start_ms, 0, __ATOMIC_RELEASE);
    }

    __atomic_store_n(&slot->requests, rate->requests, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->tokens, rate->tokens, __ATOMIC_RELEASE);
    __atomic_store_n(&slot->updated_ms, now_ms, __ATOMIC_RELEASE);

    if (start != window) {
        __atomic_store_n(&slot->window_start_ms, window, __ATOMIC_RELEASE);
    }
}


/* one round: read every budget's spend, store it; CD_ERROR to retry */
static int
cd_spend_update(cd_app_t *app)
{
    int                i, n;
    size_t             nrates, r, nleases;
    int64_t            now_ms, next_change, window, drained_ms;
    uint32_t           slots;
    PGresult          *res;
    cd_rate_t         *rates;
    const char        *params[1];
    cd_db_conn_t      *c;
    sp_str_t           id;
    sp_rate_slot_t    *rate;
    sp_spend_slot_t   *slot;
    sp_spend_header_t *header;
    cd_lease_budget_t *leases;

    /* the journal read before this round's values */
    drained_ms = cd_ingest_drained_ms(app);

    /* Redis down: the rate slots keep their last values for this window */
    window = 0;

    if (cd_rates_fetch(app, &app->spend.rates, &rates, &nrates, &window)
        != CD_OK)
    {
        rates = NULL;
        nrates = 0;
    }

    c = cd_db_acquire_begin(&app->db, 1000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        free(rates);
        return CD_ERROR;
    }

    params[0] = app->config.node_id;

    res = cd_db_exec(c,
        "WITH b AS (SELECT id, action, spendpol_period_start(period,"
        " timezone, created_at, now()) AS ps FROM budgets),"
        " n AS (SELECT epoch FROM journal_nodes WHERE node_id = $1)"
        " SELECT b.id, " CD_SQL_MS("b.ps") ", coalesce(s.spent_nano, 0),"
        " coalesce((SELECT epoch FROM n), 0),"
        " coalesce(ns.spent_nano, 0), " CD_SQL_US("clock_timestamp()") ","
        " coalesce(na.spent, 0), b.action = 'block'"
        " FROM b LEFT JOIN budget_spend s"
        " ON s.budget_id = b.id AND s.period_start = b.ps"
        " LEFT JOIN budget_node_spend ns ON ns.budget_id = b.id"
        " AND ns.period_start = b.ps AND ns.node_id = $1"
        " AND ns.epoch = (SELECT epoch FROM n)"
        " LEFT JOIN (SELECT budget_id, period_start, sum(spent_nano) AS spent"
        " FROM budget_node_spend WHERE node_id = $1 GROUP BY 1, 2) na"
        " ON na.budget_id = b.id AND na.period_start = b.ps"
        " UNION ALL SELECT NULL, 0, 0, 0, 0, "
        CD_SQL_US("clock_timestamp()") ", 0, false",
        1, params);

    cd_db_rollback(c);
    cd_db_release(&app->db, c);

    if (res == NULL) {
        free(rates);
        return CD_ERROR;
    }

    n = PQntuples(res) - 1 + (int) nrates;

    leases = calloc((size_t) PQntuples(res), sizeof(cd_lease_budget_t));
    nleases = 0;

    if (leases == NULL) {
        PQclear(res);
        free(rates);
        return CD_ERROR;
    }

    pthread_mutex_lock(&app->spend.lock);

    if (app->spend.map == NULL || cd_spend_replaced(app)
        || (uint32_t) n * 2 > ((sp_spend_header_t *) app->spend.map)->slots
        || cd_spend_used(&app->spend)
           >= ((sp_spend_header_t *) app->spend.map)->slots * 3 / 4)
    {
        slots = cd_spend_slots_for((size_t) (n > 0 ? n : 0));

        if (cd_spend_create(app, slots) != CD_OK) {
            pthread_mutex_unlock(&app->spend.lock);
            PQclear(res);
            free(rates);
            free(leases);
            return CD_ERROR;
        }
    }

    now_ms = cd_clock_ms(CLOCK_REALTIME);

    for (i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, CD_SPEND_ID)) {
            continue;
        }

        id.data = PQgetvalue(res, i, CD_SPEND_ID);
        id.len = (size_t) PQgetlength(res, i, CD_SPEND_ID);

        slot = sp_spend_slot(app->spend.map, id);

        if (slot == NULL) {
            /* cannot happen below half full; the next round grows it */
            continue;
        }

        cd_spend_store(slot,
                       strtoll(PQgetvalue(res, i, CD_SPEND_PERIOD), NULL, 10),
                       strtoll(PQgetvalue(res, i, CD_SPEND_GLOBAL), NULL, 10),
                       strtoll(PQgetvalue(res, i, CD_SPEND_EPOCH), NULL, 10),
                       strtoll(PQgetvalue(res, i, CD_SPEND_NODE), NULL, 10),
                       strtoll(PQgetvalue(res, i, CD_SPEND_NODE_ALL), NULL,
                               10),
                       now_ms);

        if (cd_db_bool(res, i, CD_SPEND_BLOCKS) && id.len <= CD_ID_MAX) {
            memcpy(leases[nleases].id, id.data, id.len);
            leases[nleases].hash = slot->budget_hash;
            leases[nleases].period_ms = slot->period_start_ms;
            leases[nleases].node_all = slot->node_all_nano;
            nleases++;
        }
    }

    /*
     * the values above count every line written before drained_ms; it
     * never goes back (a restarted ingest starts at 0, the file carried
     * over holds the last controld's); only leases read it
     */
    header = (sp_spend_header_t *) app->spend.map;

    if (app->config.leases
        && drained_ms > __atomic_load_n(&header->drained_ms,
                                        __ATOMIC_RELAXED))
    {
        __atomic_store_n(&header->drained_ms, drained_ms, __ATOMIC_RELEASE);
    }

    for (r = 0; r < nrates; r++) {
        if (rates[r].hash == 0) {
            continue;
        }

        rate = sp_rate_slot(app->spend.map, rates[r].hash);

        if (rate != NULL) {
            cd_spend_store_rate(rate, window, &rates[r], now_ms);
        }
    }

    pthread_mutex_unlock(&app->spend.lock);
    free(rates);

    cd_lease_set_budgets(app, leases, nleases);

    /* a period rolled over: the snapshot must carry the new one */
    pthread_mutex_lock(&app->snapshot.mutex);
    next_change = app->snapshot.next_change_us;
    pthread_mutex_unlock(&app->snapshot.mutex);

    if (next_change > 0
        && strtoll(PQgetvalue(res, 0, CD_SPEND_NOW_US), NULL, 10)
           >= next_change)
    {
        cd_snapshot_signal(app);
    }

    PQclear(res);

    return CD_OK;
}


static void *
cd_spend_thread(void *data)
{
    int        failed;
    cd_app_t  *app;

    app = data;
    failed = 0;

    while (!cd_spend_stopping(app)) {
        if (cd_spend_update(app) != CD_OK) {
            if (!failed) {
                cd_log_warn(CD_SPEND_SUBJECT, "cannot update the spend file;"
                            " retrying (the proxy keeps the last values)");
            }

            failed = 1;

        } else if (failed) {
            cd_log_info(CD_SPEND_SUBJECT, "spend file updated again");
            failed = 0;
        }

        cd_thread_sleep(&app->spend.thread, CD_SPEND_INTERVAL_MS);
    }

    pthread_mutex_lock(&app->spend.lock);
    cd_spend_unmap(&app->spend);
    pthread_mutex_unlock(&app->spend.lock);
    cd_rates_close(&app->spend.rates);

    return NULL;
}


int
cd_spend_start(cd_app_t *app)
{
    app->spend.fd = -1;
    app->spend.map = NULL;

    if (pthread_mutex_init(&app->spend.lock, NULL) != 0) {
        return CD_ERROR;
    }

    memset(&app->spend.rates, 0, sizeof(cd_rates_conn_t));

    return cd_thread_start(&app->spend.thread, CD_SPEND_SUBJECT,
                           cd_spend_thread, app);
}


void
cd_spend_stop(cd_app_t *app)
{
    cd_thread_stop(&app->spend.thread);
}
