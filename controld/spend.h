/*
 * The spend file writer (spend.c). Included by controld.h.
 */

#ifndef CD_SPEND_H
#define CD_SPEND_H


#define CD_SPEND_INTERVAL_MS   200
#define CD_SPEND_MIN_SLOTS     64

/*
 * The spend file writer: every CD_SPEND_INTERVAL_MS it reads each
 * budget's spend in its current period and stores it in place in
 * SPENDPOL_SNAPSHOT_DIR/spend.slots (sp_budget.h), mapped read-write.
 * The lease fields of the slots and SP_SPEND_LEASES are lease.c's.
 */
typedef struct {
    cd_thread_t       thread;
    pthread_mutex_t   lock;         /* the map and its slots: held by this
                                       thread to lay out or store, and by
                                       lease.c to store lease fields */
    int               fd;
    uint8_t          *map;
    size_t            len;
    uint64_t          generation;
    dev_t             dev;
    ino_t             ino;
    cd_rates_conn_t   rates;
} cd_spend_t;

int cd_spend_start(cd_app_t *app) CD_CHECK;
void cd_spend_stop(cd_app_t *app);

/* the slots for n budgets: a power of two >= 2n, at least the minimum */
uint32_t cd_spend_slots_for(size_t budgets);


#endif /* CD_SPEND_H */
