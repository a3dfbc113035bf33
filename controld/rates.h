/*
 * Rate limit counts across nodes (rates.c). Included by controld.h.
 */

#ifndef CD_RATES_H
#define CD_RATES_H


typedef struct cd_app_s  cd_app_t;

/* one thread's Redis connection for rate counts */
typedef struct {
    void     *ctx;          /* redisContext, NULL when down */
    int64_t   failed_ms;    /* of the last failure: retried after 5 s */
    int       down;
} cd_rates_conn_t;

/* the other nodes' counts of one subject in the current window */
typedef struct {
    uint64_t  hash;         /* sp_rate_hash() */
    int64_t   requests;
    int64_t   tokens;
} cd_rate_t;

/*
 * The subjects that have a rate limit (sorted sp_rate_hash() values),
 * from each snapshot publish; ingest pushes only theirs, so Redis and the
 * spend thread's reads grow with the limited subjects in use, not with
 * every key. Until the first publish (known 0) every subject is pushed.
 */
typedef struct {
    pthread_mutex_t   mutex;
    uint64_t         *hashes;
    size_t            n;
    int               known;
} cd_rates_limited_t;

void cd_rates_init(cd_app_t *app);
void cd_rates_destroy(cd_app_t *app);

/* takes hashes (malloc()ed, any order, duplicates allowed) */
void cd_rates_set_limited(cd_app_t *app, uint64_t *hashes, size_t n);

/* ingest: adds committed journal lines to this node's counts in Redis */
void cd_rates_push(cd_app_t *app, cd_rates_conn_t *rc,
    const sp_journal_record_t *records, size_t count);

/*
 * The current window's subjects and the other nodes' counts (*out is
 * malloc()ed, NULL when none); CD_OK also when Redis is not configured or
 * down (nothing to add).
 */
int cd_rates_fetch(cd_app_t *app, cd_rates_conn_t *rc, cd_rate_t **out,
    size_t *nout, int64_t *window_ms);
void cd_rates_close(cd_rates_conn_t *rc);


#endif /* CD_RATES_H */
