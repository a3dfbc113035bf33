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
 */
typedef struct {
    cd_thread_t       thread;
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
