/*
 * controld's metrics: the counters the hooks bump, and the Prometheus
 * text they are scraped as (metrics.h says why it is one atomic set).
 *
 * A histogram keeps one count per bucket, not cumulative ones: a hook
 * adds to one bucket only, and the render adds them up, so each scrape's
 * buckets rise with le and its +Inf bucket equals its _count by
 * construction, even while requests are counted during the scrape.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "controld.h"
#include "api.h"
#include "metrics.h"


cd_metrics_t  cd_metrics;


typedef struct {
    const char  *le;            /* as rendered */
    uint64_t     us;            /* the same, in microseconds */
} cd_metrics_bound_t;

/* admin API requests: a cached GET to a slow report */
static const cd_metrics_bound_t  cd_metrics_http_bounds[] = {
    { "0.001", 1000 }, { "0.0025", 2500 }, { "0.005", 5000 },
    { "0.01", 10000 }, { "0.025", 25000 }, { "0.05", 50000 },
    { "0.1", 100000 }, { "0.25", 250000 }, { "0.5", 500000 },
    { "1", 1000000 }, { "2.5", 2500000 }, { "5", 5000000 },
    { "10", 10000000 },
};

/* snapshot publishes: a few keys to a million (tens of seconds) */
static const cd_metrics_bound_t  cd_metrics_publish_bounds[] = {
    { "0.005", 5000 }, { "0.01", 10000 }, { "0.025", 25000 },
    { "0.05", 50000 }, { "0.1", 100000 }, { "0.25", 250000 },
    { "0.5", 500000 }, { "1", 1000000 }, { "2.5", 2500000 },
    { "5", 5000000 }, { "10", 10000000 }, { "30", 30000000 },
    { "60", 60000000 },
};

#define CD_METRICS_NBOUNDS(b)  (sizeof(b) / sizeof((b)[0]))
#define CD_METRICS_LABELS_MAX  (CD_METRICS_PATTERN_MAX + 64)

/*
 * The codes the API answers with, each its own label value; any other is
 * counted as "other" (the last slot), so the label set stays fixed.
 */
static const unsigned  cd_metrics_statuses[CD_METRICS_STATUSES - 1] = {
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 410,
    411, 413, 415, 422, 429, 500, 501, 502, 503,
};

static const char  *cd_metrics_delivery_names[CD_METRICS_DELIVERY_RESULTS]
    = { "delivered", "retrying", "failed" };


/* ---- hooks ------------------------------------------------------------ */

static void
cd_metrics_add(atomic_uint_least64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}


static void
cd_metrics_observe(cd_metrics_histogram_t *h, const cd_metrics_bound_t *b,
    size_t nbounds, uint64_t us)
{
    size_t  i;

    for (i = 0; i < nbounds && us > b[i].us; i++) {
        /* void */
    }

    cd_metrics_add(&h->buckets[i], 1);
    cd_metrics_add(&h->sum_us, us);
}


static size_t
cd_metrics_status_slot(unsigned status)
{
    size_t  i;

    for (i = 0; i < CD_METRICS_STATUSES - 1; i++) {
        if (cd_metrics_statuses[i] == status) {
            return i;
        }
    }

    return CD_METRICS_STATUSES - 1;
}


/* the route's row, or the last slot ("unmatched") */
static size_t
cd_metrics_route_slot(const cd_route_t *route)
{
    size_t  i;

    if (route == NULL || route < cd_routes
        || route >= cd_routes + cd_routes_count)
    {
        return CD_METRICS_ROUTES_MAX - 1;
    }

    i = (size_t) (route - cd_routes);

    return i < CD_METRICS_ROUTES_MAX - 1 ? i : CD_METRICS_ROUTES_MAX - 1;
}


void
cd_metrics_http_request(const cd_route_t *route, unsigned status,
    const struct timespec *start, const struct timespec *end)
{
    size_t   slot;
    int64_t  us;

    slot = cd_metrics_route_slot(route);
    us = (int64_t) (end->tv_sec - start->tv_sec) * 1000000
         + (end->tv_nsec - start->tv_nsec) / 1000;

    cd_metrics_add(&cd_metrics.http_requests[slot]
                                            [cd_metrics_status_slot(status)],
                   1);
    cd_metrics_observe(&cd_metrics.http_duration[slot],
                       cd_metrics_http_bounds,
                       CD_METRICS_NBOUNDS(cd_metrics_http_bounds),
                       us > 0 ? (uint64_t) us : 0);
}


void
cd_metrics_ingest_batch(const unsigned char *inserted, size_t count,
    int64_t bytes)
{
    size_t    i;
    uint64_t  rows;

    rows = 0;

    for (i = 0; i < count; i++) {
        rows += inserted[i] != 0;
    }

    cd_metrics_add(&cd_metrics.ingest_rows, rows);
    cd_metrics_add(&cd_metrics.ingest_duplicates, count - rows);
    cd_metrics_add(&cd_metrics.ingest_batches, 1);
    cd_metrics_add(&cd_metrics.ingest_bytes, bytes > 0 ? (uint64_t) bytes
                                                       : 0);
}


void
cd_metrics_ingest_failed(void)
{
    cd_metrics_add(&cd_metrics.ingest_failures, 1);
}


void
cd_metrics_ingest_file(dev_t dev, ino_t ino)
{
    atomic_store_explicit(&cd_metrics.ingest_dev, (uint64_t) dev,
                          memory_order_relaxed);
    atomic_store_explicit(&cd_metrics.ingest_ino, (uint64_t) ino,
                          memory_order_relaxed);
}


void
cd_metrics_snapshot_publish(int ok, int64_t started_ms)
{
    int64_t  ms;

    ms = cd_clock_ms(CLOCK_MONOTONIC) - started_ms;

    cd_metrics_add(ok ? &cd_metrics.snapshot_ok : &cd_metrics.snapshot_failed,
                   1);
    cd_metrics_observe(&cd_metrics.snapshot_duration,
                       cd_metrics_publish_bounds,
                       CD_METRICS_NBOUNDS(cd_metrics_publish_bounds),
                       ms > 0 ? (uint64_t) ms * 1000 : 0);

    if (ok) {
        atomic_store_explicit(&cd_metrics.snapshot_last_ms,
                              cd_clock_ms(CLOCK_REALTIME),
                              memory_order_relaxed);
    }
}


void
cd_metrics_webhook_delivery(cd_metrics_delivery_e result)
{
    if (result < CD_METRICS_DELIVERY_RESULTS) {
        cd_metrics_add(&cd_metrics.deliveries[result], 1);
    }
}


/*
 * The slot of pool, claimed on its first wait: the pools are few and
 * live as long as the daemon (a pool beyond CD_METRICS_POOLS, such as
 * the migration owner's short one, is not counted).
 */
static cd_metrics_pool_t *
cd_metrics_pool_slot(cd_metrics_t *m, const void *pool, int claim)
{
    size_t      i;
    uintptr_t   seen;

    for (i = 0; i < CD_METRICS_POOLS; i++) {
        seen = atomic_load_explicit(&m->pools[i].pool, memory_order_acquire);

        if (seen == (uintptr_t) pool) {
            return &m->pools[i];
        }

        if (seen == 0 && claim) {
            if (atomic_compare_exchange_strong(&m->pools[i].pool, &seen,
                                               (uintptr_t) pool)
                || seen == (uintptr_t) pool)
            {
                return &m->pools[i];
            }
        }
    }

    return NULL;
}


int
cd_metrics_db_wait(const cd_db_pool_t *pool, int waited)
{
    cd_metrics_pool_t  *p;

    if (!waited) {
        p = cd_metrics_pool_slot(&cd_metrics, pool, 1);

        if (p != NULL) {
            cd_metrics_add(&p->waits, 1);
        }
    }

    return 1;
}


void
cd_metrics_db_timeout(const cd_db_pool_t *pool)
{
    cd_metrics_pool_t  *p;

    p = cd_metrics_pool_slot(&cd_metrics, pool, 1);

    if (p != NULL) {
        cd_metrics_add(&p->timeouts, 1);
    }
}


void
cd_metrics_reset(cd_metrics_t *m)
{
    memset(m, 0, sizeof(cd_metrics_t));
}


/* ---- scraping --------------------------------------------------------- */

static void
cd_metrics_pool_state(cd_metrics_pool_state_t *ps, const char *name,
    cd_db_pool_t *pool)
{
    size_t  i;

    ps->name = name;
    ps->pool = pool;
    ps->size = 0;
    ps->in_use = 0;

    /* a pool that failed to start has no mutex to take */
    if (pool->conns == NULL) {
        return;
    }

    pthread_mutex_lock(&pool->mutex);

    ps->size = pool->size;

    for (i = 0; i < pool->size; i++) {
        ps->in_use += pool->conns[i].in_use != 0;
    }

    pthread_mutex_unlock(&pool->mutex);
}


void
cd_metrics_gather(cd_app_t *app, cd_metrics_state_t *st)
{
    uint64_t     ino, dev;
    struct stat  sb;

    memset(st, 0, sizeof(cd_metrics_state_t));

    st->now_ms = cd_clock_ms(CLOCK_REALTIME);
    st->snapshot_generation = cd_snapshot_generation(app);
    st->committed_offset = cd_ingest_offset(app);
    st->drained_ms = cd_ingest_drained_ms(app);
    cd_ingest_counts(app, &st->malformed_lines, &st->refused_lines);

    /*
     * Bytes behind: the journal's size past the committed offset, when
     * ingest reads the file now at the journal's path; while it finishes
     * a rotated file the rest of that one is not known here (-1).
     */
    dev = atomic_load_explicit(&cd_metrics.ingest_dev, memory_order_relaxed);
    ino = atomic_load_explicit(&cd_metrics.ingest_ino, memory_order_relaxed);
    st->behind_bytes = -1;

    if (stat(app->config.journal_path, &sb) == 0 && ino != 0
        && (uint64_t) sb.st_ino == ino && (uint64_t) sb.st_dev == dev)
    {
        st->behind_bytes = sb.st_size > st->committed_offset
                           ? (int64_t) sb.st_size - st->committed_offset : 0;
    }

    cd_metrics_pool_state(&st->pools[0], "system", &app->db);
    cd_metrics_pool_state(&st->pools[1], "tenant", &app->tenant_db);
    st->npools = 2;
}


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      failed;            /* out of memory: the text is dropped */
} cd_metrics_text_t;


static void CD_PRINTF(2, 3)
cd_metrics_printf(cd_metrics_text_t *t, const char *fmt, ...)
{
    int       n;
    char     *grown;
    size_t    cap;
    va_list   args;

    if (t->failed) {
        return;
    }

    for ( ;; ) {
        va_start(args, fmt);
        n = vsnprintf(t->data + t->len, t->cap - t->len, fmt, args);
        va_end(args);

        if (n < 0) {
            t->failed = 1;
            return;
        }

        if ((size_t) n < t->cap - t->len) {
            t->len += (size_t) n;
            return;
        }

        cap = t->cap * 2 + (size_t) n;
        grown = realloc(t->data, cap);
        if (grown == NULL) {
            t->failed = 1;
            return;
        }

        t->data = grown;
        t->cap = cap;
    }
}


static void
cd_metrics_family(cd_metrics_text_t *t, const char *name, const char *type,
    const char *help)
{
    cd_metrics_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                      type);
}


/*
 * route="...",method="..." of a slot into buf. The patterns and methods
 * come from the route table in the code, which has no '"', '\\' or
 * newline to escape (a unit test checks).
 */
static const char *
cd_metrics_route_labels(size_t slot, char *buf, size_t len)
{
    int  matched;

    matched = slot < cd_routes_count && slot < CD_METRICS_ROUTES_MAX - 1;

    snprintf(buf, len, "route=\"%s\",method=\"%s\"",
             matched ? cd_routes[slot].pattern : "unmatched",
             matched ? cd_routes[slot].method : "any");

    return buf;
}


static uint64_t
cd_metrics_load(atomic_uint_least64_t *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}


/* seconds from microseconds, exactly: "1.000250" */
static void
cd_metrics_seconds_us(cd_metrics_text_t *t, uint64_t us)
{
    cd_metrics_printf(t, "%llu.%06llu", (unsigned long long) (us / 1000000),
                      (unsigned long long) (us % 1000000));
}


/*
 * One histogram's series: labels (already rendered, "" for none) before
 * le; nothing when it observed nothing and skip_empty is set.
 */
static void
cd_metrics_histogram(cd_metrics_text_t *t, const char *name,
    cd_metrics_histogram_t *h, const cd_metrics_bound_t *b, size_t nbounds,
    const char *labels, int skip_empty)
{
    size_t    i;
    uint64_t  counts[CD_METRICS_BUCKETS_MAX], total;

    total = 0;

    for (i = 0; i <= nbounds; i++) {
        counts[i] = cd_metrics_load(&h->buckets[i]);
        total += counts[i];
    }

    if (total == 0 && skip_empty) {
        return;
    }

    total = 0;

    for (i = 0; i <= nbounds; i++) {
        total += counts[i];
        cd_metrics_printf(t, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels,
                          labels[0] ? "," : "",
                          i < nbounds ? b[i].le : "+Inf",
                          (unsigned long long) total);
    }

    cd_metrics_printf(t, "%s_sum%s%s%s ", name, labels[0] ? "{" : "", labels,
                      labels[0] ? "}" : "");
    cd_metrics_seconds_us(t, cd_metrics_load(&h->sum_us));
    cd_metrics_printf(t, "\n%s_count%s%s%s %llu\n", name,
                      labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
                      (unsigned long long) total);
}


static void
cd_metrics_render_http(cd_metrics_text_t *t, cd_metrics_t *m)
{
    char      labels[CD_METRICS_LABELS_MAX], status[16];
    size_t    slot, s;
    uint64_t  n;

    cd_metrics_family(t, "spendpol_controld_http_requests_total", "counter",
                      "Admin API requests answered, by route pattern, "
                      "method and status.");

    for (slot = 0; slot < CD_METRICS_ROUTES_MAX; slot++) {
        for (s = 0; s < CD_METRICS_STATUSES; s++) {
            n = cd_metrics_load(&m->http_requests[slot][s]);

            if (n == 0) {
                continue;
            }

            if (s < CD_METRICS_STATUSES - 1) {
                snprintf(status, sizeof(status), "%u",
                         cd_metrics_statuses[s]);
            } else {
                snprintf(status, sizeof(status), "other");
            }

            cd_metrics_printf(t, "spendpol_controld_http_requests_total"
                              "{%s,status=\"%s\"} %llu\n",
                              cd_metrics_route_labels(slot, labels,
                                                      sizeof(labels)),
                              status, (unsigned long long) n);
        }
    }

    cd_metrics_family(t, "spendpol_controld_http_request_duration_seconds",
                      "histogram", "Admin API request time, from the whole "
                      "request read to the answer queued, by route "
                      "pattern and method.");

    for (slot = 0; slot < CD_METRICS_ROUTES_MAX; slot++) {
        cd_metrics_histogram(t,
            "spendpol_controld_http_request_duration_seconds",
            &m->http_duration[slot], cd_metrics_http_bounds,
            CD_METRICS_NBOUNDS(cd_metrics_http_bounds),
            cd_metrics_route_labels(slot, labels, sizeof(labels)), 1);
    }
}


static void
cd_metrics_counter(cd_metrics_text_t *t, const char *name, const char *help,
    uint64_t value)
{
    cd_metrics_family(t, name, "counter", help);
    cd_metrics_printf(t, "%s %llu\n", name, (unsigned long long) value);
}


static void
cd_metrics_render_ingest(cd_metrics_text_t *t, cd_metrics_t *m,
    const cd_metrics_state_t *st)
{
    int64_t  lag;

    cd_metrics_counter(t, "spendpol_controld_ingest_rows_total",
                       "Journal records loaded into audit_logs as new rows "
                       "(rate() is rows per second).",
                       cd_metrics_load(&m->ingest_rows));
    cd_metrics_counter(t, "spendpol_controld_ingest_duplicate_rows_total",
                       "Journal records read again after a lost commit and "
                       "not loaded twice.",
                       cd_metrics_load(&m->ingest_duplicates));
    cd_metrics_counter(t, "spendpol_controld_ingest_batches_total",
                       "Ingest batches committed (rows, spend and offset "
                       "in one transaction).",
                       cd_metrics_load(&m->ingest_batches));
    cd_metrics_counter(t, "spendpol_controld_ingest_batch_failures_total",
                       "Ingest batches rolled back and read again later.",
                       cd_metrics_load(&m->ingest_failures));
    cd_metrics_counter(t, "spendpol_controld_ingest_read_bytes_total",
                       "Journal bytes passed by committed batches.",
                       cd_metrics_load(&m->ingest_bytes));

    cd_metrics_family(t, "spendpol_controld_ingest_skipped_lines_total",
                      "counter", "Journal lines skipped since start: not a "
                      "record (malformed) or a record out of bounds "
                      "(refused).");
    cd_metrics_printf(t, "spendpol_controld_ingest_skipped_lines_total"
                      "{reason=\"malformed\"} %lld\n"
                      "spendpol_controld_ingest_skipped_lines_total"
                      "{reason=\"refused\"} %lld\n",
                      (long long) st->malformed_lines,
                      (long long) st->refused_lines);

    cd_metrics_family(t, "spendpol_controld_ingest_offset_bytes", "gauge",
                      "Committed offset in the journal file ingest reads.");
    cd_metrics_printf(t, "spendpol_controld_ingest_offset_bytes %lld\n",
                      (long long) st->committed_offset);

    /* no sample while unknown: absent, not a made-up 0 */
    cd_metrics_family(t, "spendpol_controld_ingest_behind_bytes", "gauge",
                      "Journal bytes written by nginx and not yet "
                      "committed to PostgreSQL.");

    if (st->behind_bytes >= 0) {
        cd_metrics_printf(t, "spendpol_controld_ingest_behind_bytes %lld\n",
                          (long long) st->behind_bytes);
    }

    cd_metrics_family(t, "spendpol_controld_ingest_lag_seconds", "gauge",
                      "Age of the oldest journal line that may not be in "
                      "PostgreSQL yet: now minus the time before which "
                      "every line is loaded.");

    if (st->drained_ms > 0) {
        lag = st->now_ms > st->drained_ms ? st->now_ms - st->drained_ms : 0;
        cd_metrics_printf(t, "spendpol_controld_ingest_lag_seconds "
                          "%lld.%03lld\n", (long long) (lag / 1000),
                          (long long) (lag % 1000));
    }
}


static void
cd_metrics_render_snapshot(cd_metrics_text_t *t, cd_metrics_t *m,
    const cd_metrics_state_t *st)
{
    int64_t  last;

    cd_metrics_family(t, "spendpol_controld_snapshot_generation", "gauge",
                      "Generation of the policy snapshot last published "
                      "(the module's X-Spendpol-Snapshot).");
    cd_metrics_printf(t, "spendpol_controld_snapshot_generation %llu\n",
                      (unsigned long long) st->snapshot_generation);

    cd_metrics_family(t, "spendpol_controld_snapshot_publishes_total",
                      "counter", "Snapshot publish attempts, by result "
                      "(failed: the previous snapshot stays).");
    cd_metrics_printf(t, "spendpol_controld_snapshot_publishes_total"
                      "{result=\"ok\"} %llu\n"
                      "spendpol_controld_snapshot_publishes_total"
                      "{result=\"failed\"} %llu\n",
                      (unsigned long long) cd_metrics_load(&m->snapshot_ok),
                      (unsigned long long)
                      cd_metrics_load(&m->snapshot_failed));

    cd_metrics_family(t, "spendpol_controld_snapshot_publish_duration_seconds",
                      "histogram", "Snapshot publish time: read, build and "
                      "write (millisecond resolution).");
    cd_metrics_histogram(t,
                         "spendpol_controld_snapshot_publish_duration_seconds",
                         &m->snapshot_duration, cd_metrics_publish_bounds,
                         CD_METRICS_NBOUNDS(cd_metrics_publish_bounds), "",
                         0);

    last = atomic_load_explicit(&m->snapshot_last_ms, memory_order_relaxed);

    cd_metrics_family(t,
                      "spendpol_controld_snapshot_last_publish_timestamp_"
                      "seconds", "gauge", "Unix time of the last successful "
                      "snapshot publish.");

    if (last > 0) {
        cd_metrics_printf(t, "spendpol_controld_snapshot_last_publish_"
                          "timestamp_seconds %lld.%03lld\n",
                          (long long) (last / 1000),
                          (long long) (last % 1000));
    }
}


static void
cd_metrics_render_db(cd_metrics_text_t *t, cd_metrics_t *m,
    const cd_metrics_state_t *st)
{
    size_t              i;
    cd_metrics_pool_t  *p;
    uint64_t            waits[2], timeouts[2];

    for (i = 0; i < st->npools && i < 2; i++) {
        p = cd_metrics_pool_slot(m, st->pools[i].pool, 0);
        waits[i] = p ? cd_metrics_load(&p->waits) : 0;
        timeouts[i] = p ? cd_metrics_load(&p->timeouts) : 0;
    }

    cd_metrics_family(t, "spendpol_controld_db_pool_connections", "gauge",
                      "PostgreSQL connections of each pool (system: "
                      "ingest, publisher, auth; tenant: the admin API).");

    for (i = 0; i < st->npools && i < 2; i++) {
        cd_metrics_printf(t, "spendpol_controld_db_pool_connections"
                          "{pool=\"%s\"} %llu\n", st->pools[i].name,
                          (unsigned long long) st->pools[i].size);
    }

    cd_metrics_family(t, "spendpol_controld_db_pool_connections_in_use",
                      "gauge", "PostgreSQL connections of each pool taken "
                      "now.");

    for (i = 0; i < st->npools && i < 2; i++) {
        cd_metrics_printf(t, "spendpol_controld_db_pool_connections_in_use"
                          "{pool=\"%s\"} %llu\n", st->pools[i].name,
                          (unsigned long long) st->pools[i].in_use);
    }

    cd_metrics_family(t, "spendpol_controld_db_pool_waits_total", "counter",
                      "Acquisitions that found every connection of the "
                      "pool taken and waited.");

    for (i = 0; i < st->npools && i < 2; i++) {
        cd_metrics_printf(t, "spendpol_controld_db_pool_waits_total"
                          "{pool=\"%s\"} %llu\n", st->pools[i].name,
                          (unsigned long long) waits[i]);
    }

    cd_metrics_family(t, "spendpol_controld_db_pool_wait_timeouts_total",
                      "counter", "Acquisitions that waited in vain (the "
                      "API answers 503).");

    for (i = 0; i < st->npools && i < 2; i++) {
        cd_metrics_printf(t, "spendpol_controld_db_pool_wait_timeouts_total"
                          "{pool=\"%s\"} %llu\n", st->pools[i].name,
                          (unsigned long long) timeouts[i]);
    }
}


char *
cd_metrics_render(cd_metrics_t *m, const cd_metrics_state_t *st,
    size_t *len)
{
    size_t             i;
    cd_metrics_text_t  t;

    t.cap = 16384;
    t.len = 0;
    t.failed = 0;
    t.data = malloc(t.cap);

    if (t.data == NULL) {
        return NULL;
    }

    t.data[0] = '\0';

    cd_metrics_render_http(&t, m);
    cd_metrics_render_ingest(&t, m, st);
    cd_metrics_render_snapshot(&t, m, st);

    cd_metrics_family(&t, "spendpol_controld_webhook_deliveries_total",
                      "counter", "Alert webhook delivery attempts, by "
                      "result (retrying: another attempt is scheduled; "
                      "failed: it was the last).");

    for (i = 0; i < CD_METRICS_DELIVERY_RESULTS; i++) {
        cd_metrics_printf(&t, "spendpol_controld_webhook_deliveries_total"
                          "{result=\"%s\"} %llu\n",
                          cd_metrics_delivery_names[i],
                          (unsigned long long)
                          cd_metrics_load(&m->deliveries[i]));
    }

    cd_metrics_render_db(&t, m, st);

    if (t.failed) {
        free(t.data);
        return NULL;
    }

    *len = t.len;

    return t.data;
}
