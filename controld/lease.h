/*
 * Budget leases across nodes (lease.c, issue 18). Included by controld.h.
 */

#ifndef CD_LEASE_H
#define CD_LEASE_H


#define CD_LEASE_POLL_MS        5       /* the ask file's counter */
#define CD_LEASE_HEARTBEAT_MS   200     /* a round at least this often */
#define CD_LEASE_IDLE_MS        10000   /* no admission: give back */
#define CD_LEASE_GONE_MS        5000    /* no nginx heartbeat: give back */
#define CD_LEASE_RELISTS        8       /* spend.c rounds awaited for an ask
                                           naming a budget it has not listed */

/* a blocking budget in its current period, as spend.c last read it */
typedef struct {
    char      id[CD_ID_MAX + 1];
    uint64_t  hash;                 /* sp_budget_hash */
    int64_t   period_ms;
    int64_t   node_all;             /* this node's spend, every epoch */
} cd_lease_budget_t;

/*
 * The lease manager: a thread that reads this node's ask file
 * (dirname(SPENDPOL_JOURNAL)/asks.slots, written by nginx), sizes each
 * blocking budget's lease (sp_lease.h), grants it in PostgreSQL
 * (spendpol_lease_grant, one transaction a round) and stores it in the
 * spend file, which spend.c lays out.
 */
typedef struct {
    cd_thread_t         thread;
    pthread_mutex_t     mutex;      /* budgets */
    int                 ready;      /* mutex exists */
    int                 stopped;    /* under mutex: takes no more lists */
    cd_lease_budget_t  *budgets;    /* from spend.c, each of its rounds */
    size_t              nbudgets;
    uint64_t            listed;     /* spend.c's rounds so far (atomic) */
} cd_lease_t;

int cd_lease_start(cd_app_t *app) CD_CHECK;
void cd_lease_stop(cd_app_t *app);

/*
 * GET /cache/stats: this node's response cache zone as the ask header
 * reports it (zone[0] entries, [1] bytes, [2] evictions); zeros when no
 * ask file is there or it is not one. Maps the file for the call only, so
 * it works whether the lease thread runs or not.
 */
void cd_lease_cache_figures(cd_app_t *app, int64_t zone[3]);

/* spend.c: the blocking budgets of its round; takes b (malloc'ed) */
void cd_lease_set_budgets(cd_app_t *app, cd_lease_budget_t *b, size_t n);


#endif /* CD_LEASE_H */
