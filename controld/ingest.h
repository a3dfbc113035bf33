/*
 * Journal ingest, split by concern:
 *
 *   ingest_tail.c   follows the journal file (reads, rotation, restart)
 *                   and parses its lines into a batch;
 *   ingest_load.c   loads a batch: binary COPY into audit_logs, the
 *                   journal offset, the transaction (and its fallback
 *                   when the rows were loaded before);
 *   ingest_spend.c  what a loaded batch spent: budget attribution in C,
 *                   the spend upserts, budget and unpriced_model alerts.
 *
 * Each batch is one transaction holding its rows, their spend and the new
 * offset: a crash anywhere loses and duplicates nothing.
 */

#ifndef CD_INGEST_H
#define CD_INGEST_H

#include <sys/types.h>

#include "controld.h"
#include "sp_journal.h"


#define CD_INGEST_SUBJECT     "ingest"
#define CD_INGEST_READ_SIZE   (256 * 1024)
#define CD_INGEST_TS_MAX      253402300799999LL    /* 9999-12-31, in ms */
#define CD_INGEST_MONTHS      8     /* audit_logs partitions remembered */


typedef struct cd_ingest_spend_s  cd_ingest_spend_t;

typedef struct {
    cd_app_t              *app;
    int                    fd;
    dev_t                  dev;
    ino_t                  ino;
    int64_t                commit_off;    /* in journal_offsets */
    int64_t                scan_off;      /* end of the batch's lines */
    int                    skipping;      /* inside an over-long line */
    int                    at_eof;
    int64_t                rotated_at;    /* ms; 0 while path is ours */
    sp_journal_record_t   *records;
    size_t                 count;
    size_t                 malformed;     /* in this batch: not a record */
    size_t                 refused;       /* in this batch: a record out
                                             of sp_journal_check's bounds */
    int64_t                warned_off;    /* lines before this offset were
                                             logged once already: a batch
                                             re-read after a failed load
                                             is not logged again */
    int64_t                batch_started; /* ms of the first pending line */
    char                  *buf;
    char                 (*alert_keys)[CD_ALERT_KEY_MAX];  /* per record,
                                                 "" when it raises none */
    size_t                 raises;        /* records with an alert key */
    unsigned char         *inserted;      /* per record: loaded by this
                                             batch (not a duplicate) */
    uint8_t               *copy;          /* binary COPY data */
    size_t                 copy_cap;
    int64_t                months[CD_INGEST_MONTHS];  /* partitions known
                                             to exist, by month start ms */
    size_t                 nmonths;
    int64_t                retention_at;  /* ms of the last retention */
    cd_ingest_spend_t     *spend;
    cd_rates_conn_t        rates;
} cd_ingest_ctx_t;


/* ingest_tail.c */
int cd_ingest_stopping(cd_app_t *app);
void cd_ingest_sleep(cd_app_t *app, unsigned ms);
int cd_ingest_fill(cd_ingest_ctx_t *x) CD_CHECK;

/* ingest_load.c */
int cd_ingest_flush(cd_ingest_ctx_t *x) CD_CHECK;
int cd_ingest_flush_retry(cd_ingest_ctx_t *x);
int cd_ingest_pending(cd_ingest_ctx_t *x);
int cd_ingest_load_offset(cd_ingest_ctx_t *x, int64_t *offset) CD_CHECK;
void cd_ingest_forget(cd_ingest_ctx_t *x);
int cd_ingest_load_init(cd_ingest_ctx_t *x) CD_CHECK;

/*
 * At most hourly, with SPENDPOL_AUDIT_RETENTION_MONTHS set: drops the
 * audit_logs months older than that (spendpol_audit_drop_months).
 */
void cd_ingest_retention(cd_ingest_ctx_t *x);
void cd_ingest_load_free(cd_ingest_ctx_t *x);

/* UTC month start (ms) of a time in ms: the audit_logs partition's */
int64_t cd_ingest_month_start(int64_t ms);

/*
 * Appends one record as a row of binary COPY (the columns of
 * CD_INGEST_AUDIT_COLUMNS) to out; returns the new length, or 0 when it
 * does not fit in cap.
 */
size_t cd_ingest_copy_row(const sp_journal_record_t *rec, const char *node_id,
    uint8_t *out, size_t pos, size_t cap);

/* ingest_spend.c */
cd_ingest_spend_t *cd_ingest_spend_create(void);
void cd_ingest_spend_free(cd_ingest_spend_t *s);

/*
 * In the batch's transaction, for the records marked inserted: counts
 * their spend against the budgets covering them (budget_spend,
 * budget_node_spend, budget_model_spend), this node's epoch
 * (journal_nodes), and raises the budget_threshold and unpriced_model
 * alerts. CD_ERROR rolls the batch back; a failed alert only logs.
 */
int cd_ingest_count_spend(cd_ingest_ctx_t *x, cd_db_conn_t *c) CD_CHECK;

/*
 * Appends s to a PostgreSQL array literal being built in out: quoted,
 * with '"' and '\' escaped, after a ',' unless first. Returns the new
 * length, or 0 when it does not fit.
 */
size_t cd_ingest_array_add(char *out, size_t pos, size_t cap, const char *s,
    size_t len);


#endif /* CD_INGEST_H */
