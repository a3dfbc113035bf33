/*
 * Leased budgets across nodes (issue 18): the pure rules both sides use.
 *
 * Each node's controld holds, per blocking budget and period, a lease: a
 * ceiling on what the node may settle and hold in flight in the period,
 * granted from PostgreSQL (spendpol_lease_grant, migration 016) so that
 * the leases of all nodes (or a node's ingested spend, if larger) never
 * pass the limit. The module admits while
 *
 *     used + worst <= lease
 *     used = node_all  (this node's ingested spend, every epoch)
 *          + pending   (settled in this zone epoch, not yet ingested)
 *          + reserved  (this node's in-flight worst cases)
 *
 * so no node settles more than its lease, and all nodes together no more
 * than the limit. controld sizes the lease (sp_lease_slice), tops it up
 * or shrinks it (sp_lease_target) and publishes it in the spend file
 * (sp_budget.h). All amounts are nano-USD; nothing here allocates.
 */

#ifndef SP_LEASE_H
#define SP_LEASE_H

#include "spendpol.h"


#define SP_LEASE_HORIZON_MS     10000   /* a slice lasts this long */
#define SP_LEASE_TTL_MS         10000   /* a lease unconfirmed this long */
#define SP_LEASE_GRACE_MS       5000    /* then reclaimable after this */
#define SP_LEASE_MIN_WORST      16      /* a slice's traffic: at least this
                                           many of the largest worst case */


/* what the module may do with a request against its lease */
typedef enum {
    SP_LEASE_OK = 0,        /* it fits this node's lease */
    SP_LEASE_TOP_UP,        /* it does not, but may fit what is left:
                               ask controld for more, wait, check again */
    SP_LEASE_CATCHING_UP,   /* the journal of an earlier nginx on this
                               node is not all counted yet: wait as for
                               a top-up */
    SP_LEASE_EXHAUSTED,     /* neither the lease nor what the cluster
                               can still grant pays it: 402 */
    SP_LEASE_EXPIRED        /* controld has not confirmed the lease in
                               time (controld or PostgreSQL unreachable):
                               402, whatever is left */
} sp_lease_verdict_t;


/* the admission check's inputs, from the spend file and the zone */
typedef struct {
    int64_t   used;             /* sp_lease_used() */
    int64_t   worst;            /* the request's worst case */
    int64_t   lease;            /* lease_nano */
    int64_t   left;             /* left_nano: the cluster's ungranted rest */
    int64_t   expires_ms;       /* lease_expires_ms */
    int64_t   drained_ms;       /* the spend file header's */
    int64_t   epoch_ms;         /* the zone's epoch */
    int64_t   now_ms;
    unsigned  found:1;          /* controld published a lease at all */
} sp_lease_check_t;

/*
 * The verdict, and in shortfall what the lease lacks for the request
 * (the size of a top-up ask; 0 when it fits).
 */
sp_lease_verdict_t sp_lease_check(const sp_lease_check_t *in,
    int64_t *shortfall);

/*
 * used = node_all + pending + reserved, where pending = settled - what
 * was ingested of this epoch (never below 0: a counter made again after
 * expiry starts at what was ingested). Saturates at INT64_MAX.
 */
int64_t sp_lease_used(int64_t node_all, int64_t epoch_ingested,
    int64_t settled, int64_t reserved);


/* controld: how large a node's headroom should be */
typedef struct {
    int64_t   free;             /* this node's headroom (lease - used)
                                   + what the cluster can still grant */
    int64_t   live_nodes;       /* nodes holding a live lease, >= 1 */
    int64_t   rate;             /* this node's nano-USD a second */
    int64_t   horizon_ms;       /* SP_LEASE_HORIZON_MS */
    int64_t   floor;            /* the largest recent worst case */
    int64_t   need;             /* what the waiting requests lack */
} sp_lease_slice_t;

/*
 * min(free / (2 * live_nodes), max(rate * horizon, SP_LEASE_MIN_WORST *
 * floor)), at least floor and need, at most free: far from the limit a
 * node holds a horizon of its own traffic (and, while its rate is still
 * unknown, a few requests' worth, so a cold start does not wait for a
 * round per request); near it, each grant hands out half of what is left
 * per node, so the last dollars are shared by the nodes that ask for them.
 */
int64_t sp_lease_slice(const sp_lease_slice_t *in);

/*
 * The lease controld should ask for, given what it holds, what is used
 * and the slice: used + slice when the headroom fell under half a slice
 * (top-up, the watermark) or grew past two (shrink, near the end or
 * idle: slice 0 returns everything unused); else lease, unchanged.
 */
int64_t sp_lease_target(int64_t lease, int64_t used, int64_t slice);

/*
 * A node's rate from the last one and what it reserved in elapsed_ms:
 * an exponential moving average weighing the newest interval 1/4.
 */
int64_t sp_lease_rate(int64_t rate, int64_t reserved, int64_t elapsed_ms);


/* ---- the ask file: this node's nginx to its controld ---------------- */

/*
 * asks.slots beside the journal (the same trust and permissions: nginx
 * writes, controld reads), laid out by the nginx master with the zone; a
 * new zone (epoch) lays out a new file. Workers write it under the zone
 * mutex; controld only reads it and answers in the spend file
 * (lease_nano, answered_seq). An ask is state, not a message: controld
 * reads what is asked now, whenever it looks.
 */

#define SP_ASK_MAGIC        "SPASKS01"
#define SP_ASK_VERSION      1
#define SP_ASK_FILE         "asks.slots"

typedef struct {
    char      magic[8];
    uint32_t  version;
    uint32_t  slots;            /* power of two */
    int64_t   epoch_ms;         /* the zone's */
    int64_t   heartbeat_ms;     /* workers' timers: nginx is alive */
    uint64_t  asks;             /* bumped on each new ask; controld polls */
    /* the response cache's zone on this node, for GET /cache/stats
       (written by workers with atomic stores; 0 before the first) */
    int64_t   cache_entries;
    int64_t   cache_bytes;      /* of entries' data, as stored */
    int64_t   cache_evictions;  /* taken out for room before expiry */
} sp_ask_header_t;

/* one budget and period, keyed as in the spend file (sp_slots_take) */
typedef struct {
    uint64_t  budget_hash;      /* sp_budget_hash(), 0 = empty */
    int64_t   period_start_ms;
    int64_t   used_nano;        /* sp_lease_used(), see sp_lease_publish */
    int64_t   admitted_nano;    /* worst cases reserved so far: the rate */
    int64_t   need_nano;        /* the largest parked request's shortfall */
    uint64_t  ask_seq;          /* bumped with need_nano */
    int64_t   last_admit_ms;
    int64_t   worst_nano;       /* the largest worst case this period:
                                   the slice's floor */
} sp_ask_slot_t;

typedef struct {
    const sp_ask_header_t  *header;
    const sp_ask_slot_t    *slots;
} sp_ask_t;

size_t sp_ask_size(uint32_t slots);
void sp_ask_init(void *data, uint32_t slots, int64_t epoch_ms);

/*
 * nginx, under the zone mutex: the slot of a budget for the period
 * starting at period_start_ms, taken when absent and emptied when it
 * held an earlier period; NULL when the file is full.
 */
sp_ask_slot_t *sp_ask_slot(void *data, uint64_t hash,
    int64_t period_start_ms);

/* controld: validates a mapped ask file; SP_ERROR with a reason in err */
int sp_ask_open(sp_ask_t *ask, const void *data, size_t len, char *err,
    size_t errlen);

/*
 * Shrinking a lease races admissions; two sequentially consistent words
 * settle it (Dekker). The module, after sp_lease_check() said OK under
 * the zone mutex: sp_lease_publish() stores used (with the request's
 * worst case) in the ask slot, then loads the lease again; 0 when the
 * lease shrank under it (the module then stores used back without the
 * request and treats it as SP_LEASE_TOP_UP). controld giving back:
 * sp_lease_shrink() stores the smaller lease, then loads used, and
 * returns max(lease, used): the lease to keep (and to tell PostgreSQL).
 * In any interleaving controld sees the admission or the module sees
 * the smaller lease.
 */
int sp_lease_publish(int64_t *ask_used, const int64_t *lease, int64_t used);
int64_t sp_lease_shrink(int64_t *lease, const int64_t *ask_used,
    int64_t smaller);


#endif /* SP_LEASE_H */
