/*
 * controld's own metrics (metrics.c), served by GET /metrics
 * (api_metrics.c) in the Prometheus text format, version 0.0.4.
 *
 * One process-wide set: counters and histograms are C11 atomics bumped
 * with relaxed adds from whichever thread does the work (the HTTP pool,
 * ingest, the publisher, the deliverer), with no lock on their path.
 * Every label set is fixed: routes are the route table's rows (the
 * pattern, never the raw path), statuses a list of codes, pools the
 * daemon's two. Gauges that already live elsewhere (the snapshot
 * generation, the committed journal offset, pool sizes) are read when
 * scraped, not copied. docs/metrics.md lists every metric.
 *
 * Needs controld.h first.
 */

#ifndef CD_METRICS_H
#define CD_METRICS_H


#include <stdatomic.h>


#define CD_METRICS_CONTENT_TYPE  "text/plain; version=0.0.4; charset=utf-8"

/* route table rows counted (the last slot is "unmatched") */
#define CD_METRICS_ROUTES_MAX    256
#define CD_METRICS_STATUSES      24
#define CD_METRICS_BUCKETS_MAX   16
#define CD_METRICS_POOLS         4
/* the longest route pattern rendered whole (a unit test checks the table) */
#define CD_METRICS_PATTERN_MAX   192

/* a delivery attempt's outcome */
typedef enum {
    CD_METRICS_DELIVERED = 0,   /* 2xx */
    CD_METRICS_RETRYING,        /* failed, another attempt is scheduled */
    CD_METRICS_GAVE_UP,         /* failed, the last attempt */
    CD_METRICS_DELIVERY_RESULTS
} cd_metrics_delivery_e;

/* per-bucket counts (not cumulative: added up when rendered) */
typedef struct {
    atomic_uint_least64_t   buckets[CD_METRICS_BUCKETS_MAX];
    atomic_uint_least64_t   sum_us;
} cd_metrics_histogram_t;

typedef struct {
    atomic_uintptr_t        pool;          /* cd_db_pool_t *, 0: free */
    atomic_uint_least64_t   waits;
    atomic_uint_least64_t   timeouts;
} cd_metrics_pool_t;

typedef struct {
    atomic_uint_least64_t   http_requests[CD_METRICS_ROUTES_MAX]
                                         [CD_METRICS_STATUSES];
    cd_metrics_histogram_t  http_duration[CD_METRICS_ROUTES_MAX];

    atomic_uint_least64_t   ingest_rows;        /* new rows in audit_logs */
    atomic_uint_least64_t   ingest_duplicates;  /* read again, not loaded */
    atomic_uint_least64_t   ingest_batches;
    atomic_uint_least64_t   ingest_failures;    /* batches rolled back */
    atomic_uint_least64_t   ingest_bytes;       /* journal bytes committed */
    atomic_uint_least64_t   ingest_dev;         /* of the file tailed */
    atomic_uint_least64_t   ingest_ino;

    atomic_uint_least64_t   snapshot_ok;
    atomic_uint_least64_t   snapshot_failed;
    cd_metrics_histogram_t  snapshot_duration;
    atomic_int_least64_t    snapshot_last_ms;   /* realtime, 0: never */

    atomic_uint_least64_t   deliveries[CD_METRICS_DELIVERY_RESULTS];

    cd_metrics_pool_t       pools[CD_METRICS_POOLS];
} cd_metrics_t;

/* the daemon's one set, zero at start */
extern cd_metrics_t  cd_metrics;


/* ---- hooks: each a few relaxed atomic adds ---------------------------- */

/*
 * A finished admin API request: route is the table row it matched (NULL:
 * none, 404/405/413), timed from start to end (CLOCK_MONOTONIC).
 */
void cd_metrics_http_request(const cd_route_t *route, unsigned status,
    const struct timespec *start, const struct timespec *end);

/*
 * A committed ingest batch of count records, inserted[i] set for those
 * that were new (the rest were loaded before), bytes of journal passed.
 */
void cd_metrics_ingest_batch(const unsigned char *inserted, size_t count,
    int64_t bytes);
void cd_metrics_ingest_failed(void);
/* the journal file ingest reads now (for the bytes behind it) */
void cd_metrics_ingest_file(dev_t dev, ino_t ino);

/* a publish attempt that began at started_ms (CLOCK_MONOTONIC, ms) */
void cd_metrics_snapshot_publish(int ok, int64_t started_ms);

void cd_metrics_webhook_delivery(cd_metrics_delivery_e result);

/*
 * cd_db_acquire found no free connection in pool and waits; returns 1,
 * for the caller to pass as waited on its next call (counted once per
 * acquire).
 */
int cd_metrics_db_wait(const cd_db_pool_t *pool, int waited);
void cd_metrics_db_timeout(const cd_db_pool_t *pool);


/* ---- scraping --------------------------------------------------------- */

typedef struct {
    const char  *name;            /* label value: "system", "tenant" */
    const void  *pool;            /* the cd_db_pool_t waits are kept by */
    uint64_t     size;
    uint64_t     in_use;
} cd_metrics_pool_state_t;

/* what the render reads besides cd_metrics, gathered at scrape time */
typedef struct {
    int64_t                  now_ms;               /* realtime */
    uint64_t                 snapshot_generation;  /* 0: none yet */
    int64_t                  committed_offset;
    int64_t                  drained_ms;           /* 0: not yet */
    int64_t                  behind_bytes;         /* -1: unknown */
    int64_t                  malformed_lines;
    int64_t                  refused_lines;
    cd_metrics_pool_state_t  pools[2];
    size_t                   npools;
} cd_metrics_state_t;

/* reads app's gauges into st (takes the pools' mutexes briefly) */
void cd_metrics_gather(cd_app_t *app, cd_metrics_state_t *st);

/*
 * The exposition text of m and st, NUL-terminated, in *len bytes; the
 * caller frees it. NULL when out of memory.
 */
char *cd_metrics_render(cd_metrics_t *m, const cd_metrics_state_t *st,
    size_t *len) CD_CHECK;

/* zeroes m (unit tests; never while other threads count) */
void cd_metrics_reset(cd_metrics_t *m);


#endif /* CD_METRICS_H */
