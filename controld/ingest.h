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
 *
 * Included by controld.h: first the ingest thread as the daemon sees it,
 * then what the three files share.
 */

#ifndef CD_INGEST_H
#define CD_INGEST_H

#include <sys/types.h>

#include "sp_journal.h"
#include "sp_chain.h"


#define CD_INGEST_BATCH_LINES   1000
#define CD_INGEST_BATCH_MS      200

typedef struct {
    cd_thread_t       thread;
    int64_t           committed_offset;  /* atomically read by /healthz */
    /* since start, atomic, counted when the offset past them commits */
    int64_t           malformed_lines;   /* lines that are no record */
    int64_t           refused_lines;     /* records sp_journal_check
                                            refused */
    int64_t           drained_ms;        /* atomic: every journal line
                                            written before it (realtime
                                            ms) is committed */
} cd_ingest_t;

int cd_ingest_start(cd_app_t *app) CD_CHECK;
void cd_ingest_stop(cd_app_t *app);
int64_t cd_ingest_offset(cd_app_t *app);

/*
 * Realtime ms before which every line nginx wrote to the journal is in
 * PostgreSQL (a read that began then reached the end of the current file
 * with every batch committed); 0 until then. Lease checks need it.
 */
int64_t cd_ingest_drained_ms(cd_app_t *app);

/* the lines skipped since start: not journal records, and refused ones */
void cd_ingest_counts(cd_app_t *app, int64_t *malformed, int64_t *refused);

/*
 * Appends s to a COPY text-format field: backslash, tab, newline and
 * carriage return escaped. Returns the new length, or 0 on overflow.
 */
size_t cd_copy_escape(char *out, size_t pos, size_t outlen, const char *s);

/* a line without its '\n'; returns 1 to stop scanning after it */
typedef int (*cd_journal_line_pt)(void *data, const char *line, size_t len,
    int64_t offset, int overlong);

/*
 * Feeds the complete lines of buf[0..len), read at file offset base, to
 * on_line and returns the bytes consumed (through the last '\n' fed). A
 * trailing partial line is left for the next read, unless a full read
 * (len == cap) holds no '\n' at all: that line is longer than any journal
 * line, so buf is consumed, *skipping set, and its tail is later fed with
 * overlong = 1.
 */
size_t cd_journal_scan(const char *buf, size_t len, size_t cap, int64_t base,
    int *skipping, cd_journal_line_pt on_line, void *data);


/* between ingest_tail.c, ingest_load.c and ingest_spend.c */

#define CD_INGEST_SUBJECT     "ingest"
#define CD_INGEST_READ_SIZE   (256 * 1024)
#define CD_INGEST_TS_MAX      253402300799999LL    /* 9999-12-31, in ms */
#define CD_INGEST_MONTHS      8     /* audit_logs partitions remembered */


typedef struct cd_ingest_spend_s  cd_ingest_spend_t;

/*
 * A record's link in its organisation's audit chain (sp_chain.h), set
 * by ingest_load.c in the batch's transaction; seq 0: not linked (a row
 * loaded before), its chain columns NULL.
 */
typedef struct {
    int64_t  seq;
    uint8_t  prev[SP_CHAIN_HASH_LEN];
    uint8_t  hash[SP_CHAIN_HASH_LEN];
    uint8_t  salt[SP_CHAIN_SALT_LEN];
    uint8_t  subject[SP_CHAIN_HASH_LEN];
} cd_ingest_link_t;

typedef struct {
    const char  *org_id;
    size_t       record;
} cd_ingest_order_t;

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
    int64_t                fill_started_ms; /* realtime ms the last
                                             cd_ingest_fill began */
    int64_t                eof_started_ms; /* of the last fill that read
                                             to the end of the file */
    int64_t                eof_off;       /* where that fill ended, */
    ino_t                  eof_ino;       /* in this file */
    char                  *buf;
    char                 (*alert_keys)[CD_ALERT_KEY_MAX];  /* per record,
                                                 "" when it raises none */
    size_t                 raises;        /* records with an alert key */
    unsigned char         *inserted;      /* per record: loaded by this
                                             batch (not a duplicate) */
    cd_ingest_link_t      *links;         /* per record */
    cd_ingest_order_t     *order;         /* the records by organisation,
                                             then batch order: the
                                             chain's order */
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
 * CD_INGEST_AUDIT_COLUMNS, its chain link last; NULL link or seq 0: the
 * chain columns NULL) to out; returns the new length, or 0 when it does
 * not fit in cap.
 */
size_t cd_ingest_copy_row(const sp_journal_record_t *rec,
    const cd_ingest_link_t *link, const char *node_id, uint8_t *out,
    size_t pos, size_t cap);

/*
 * The 16 bytes of a UUID written as 8-4-4-4-12 hex digits (either case,
 * nothing around them): PostgreSQL's binary uuid. CD_ERROR when s is no
 * such UUID (the API's filters check theirs with it too).
 */
int cd_uuid_parse(const char *s, uint8_t *out) CD_CHECK;

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

/*
 * A PostgreSQL array literal being built (ingest, leases): init sizes it
 * for elements of at most each bytes, so str and int always fit; end
 * closes it and returns the literal, "{}" when empty. The caller frees
 * data.
 */
typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} cd_spend_array_t;

int cd_spend_array_init(cd_spend_array_t *a, size_t elements, size_t each)
    CD_CHECK;
void cd_spend_array_str(cd_spend_array_t *a, const char *s);
void cd_spend_array_int(cd_spend_array_t *a, int64_t v);
const char *cd_spend_array_end(cd_spend_array_t *a);


#endif /* CD_INGEST_H */
