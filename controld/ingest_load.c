/*
 * Journal ingest, the load: each batch in ONE transaction with the new
 * journal offset.
 *
 * The fast path is a binary COPY straight into the batch's monthly
 * partitions of audit_logs: no temporary table, no ON CONFLICT. Rows are
 * seen twice only when the commit of their offset was lost (the reply to
 * COMMIT never arrived, or the stored offset was forgotten); then the
 * COPY fails on the primary key and the batch is loaded again through
 * the dedupe path: COPY into a temporary table and INSERT ... ON
 * CONFLICT DO NOTHING RETURNING, so each row is loaded, and its spend
 * counted (ingest_spend.c), exactly once.
 *
 * The audit chain (sp_chain.h, migration 023): before its COPY, the batch
 * takes each of its organisations' chain locks in org id order, reads
 * their heads, links the rows it inserts in batch order and moves the
 * heads, all in the same transaction; the dedupe path first learns which
 * rows are present, so only the rows it inserts are linked and the seqs
 * have no gap and no duplicate.
 *
 * Why the partitions and not the parent: PostgreSQL refuses COPY FROM
 * into a table with row-level security, and audit_logs forces it for
 * the tenants' reads. The partitions have none; only spendpol_system may
 * insert into them and no other role may read them (migration 015), so
 * tenants still read every row through the parent's policies.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "controld.h"


#define CD_INGEST_BACKOFF_MS  5000
#define CD_INGEST_RETENTION_MS  (3600 * 1000)
#define CD_INGEST_COPY_SIZE   (256 * 1024)
#define CD_INGEST_ROW_MAX     (32 * 1024)   /* > any record's fields */

#define CD_INGEST_PG_EPOCH_MS 946684800000LL   /* 2000-01-01, unix ms */

#define CD_INGEST_AUDIT_COLUMNS                                              \
    "id, org_id, created_at, api_key_id, provider, requested_model, model,"  \
    " input_tokens, output_tokens, cached_tokens, cache_write_tokens,"       \
    " cost_nano, status, cache, stream, latency_ms, gateway_us,"             \
    " department, project, agent_id, trace_id, span_id, parent_id,"          \
    " warnings, error_code, node_id, epoch, reserved_nano, endpoint,"        \
    " saved_nano, routed, route_rule, attempts, attempt_log, route_note,"    \
    " template_id, template_version, guard_score, pii_types,"               \
    " policy_action, policy_ids, policy_warnings, hallucination_score,"      \
    " shadow_key_type, shadow_key_fp, client_addr,"                        \
    " chain_seq, prev_hash, row_hash, subject_salt, subject_digest"

#define CD_INGEST_AUDIT_NCOLUMNS  51

/*
 * A row is the record's strings (each shorter than its array), 4 bytes
 * of length per column and the headers of the four text[] columns (at
 * most 4 bytes per element, one element per byte of the string, and 20
 * each).
 */
_Static_assert(sizeof(sp_journal_record_t) + 4 * CD_INGEST_AUDIT_NCOLUMNS
               + 5 * (3 * SP_FIELD_LEN + SP_JOURNAL_NOTE_LEN) + 4 * 20
               + sizeof(cd_ingest_link_t)
               < CD_INGEST_ROW_MAX,
               "CD_INGEST_ROW_MAX holds a whole audit row");

#define CD_INGEST_UNIQUE_VIOLATION  "23505"
#define CD_INGEST_UNDEFINED_TABLE   "42P01"


static const uint8_t  cd_copy_signature[] = "PGCOPY\n\377\r\n";


/*
 * Text-format COPY escaping: no longer used by ingest (binary COPY); kept
 * for its declaration in ingest.h and its unit test until they go.
 */
size_t
cd_copy_escape(char *out, size_t pos, size_t outlen, const char *s)
{
    const char  *p, *e;

    /* COPY text format escapes these four; the loop never meets the NUL */
    static const char  special[] = "\\\t\n\r", letter[] = "\\tnr";

    for (p = s; *p != '\0'; p++) {
        if (pos + 2 >= outlen) {
            return 0;
        }

        e = strchr(special, *p);

        if (e != NULL) {
            out[pos++] = '\\';
            out[pos++] = letter[e - special];

        } else {
            out[pos++] = *p;
        }
    }

    return pos;
}


static size_t
cd_copy_u32(uint8_t *out, size_t pos, uint32_t v)
{
    out[pos] = (uint8_t) (v >> 24);
    out[pos + 1] = (uint8_t) (v >> 16);
    out[pos + 2] = (uint8_t) (v >> 8);
    out[pos + 3] = (uint8_t) v;

    return pos + 4;
}


static size_t
cd_copy_i64(uint8_t *out, size_t pos, int64_t v)
{
    pos = cd_copy_u32(out, pos, 8);
    pos = cd_copy_u32(out, pos, (uint32_t) ((uint64_t) v >> 32));

    return cd_copy_u32(out, pos, (uint32_t) v);
}


/* "" is SQL NULL: the columns the journal leaves empty are nullable */
static size_t
cd_copy_text(uint8_t *out, size_t pos, const char *s, int empty_is_null)
{
    size_t  n;

    n = strlen(s);

    if (n == 0 && empty_is_null) {
        return cd_copy_u32(out, pos, 0xffffffff);
    }

    pos = cd_copy_u32(out, pos, (uint32_t) n);
    memcpy(out + pos, s, n);

    return pos + n;
}


/* float4 in network order: its IEEE 754 bits as a 32-bit integer */
static size_t
cd_copy_f32(uint8_t *out, size_t pos, float v)
{
    uint32_t  bits;

    memcpy(&bits, &v, sizeof(bits));

    return cd_copy_u32(out, pos, bits);
}


static size_t
cd_copy_bool(uint8_t *out, size_t pos, int v)
{
    pos = cd_copy_u32(out, pos, 1);
    out[pos++] = v ? 1 : 0;

    return pos;
}


static int
cd_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


int
cd_uuid_parse(const char *s, uint8_t *out)
{
    int     hi, lo;
    size_t  i, k;

    /* 8-4-4-4-12 hex digits, either case, and nothing after */
    for (i = 0, k = 0; k < 16; k++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i++] != '-') {
                return CD_ERROR;
            }
        }

        hi = cd_hex_digit(s[i]);
        lo = hi < 0 ? -1 : cd_hex_digit(s[i + 1]);

        if (lo < 0) {
            return CD_ERROR;
        }

        out[k] = (uint8_t) (hi << 4 | lo);
        i += 2;
    }

    return s[i] == '\0' ? CD_OK : CD_ERROR;
}


/* a uuid, or NULL when s is "" or (sp_journal_check refused it) no uuid */
static size_t
cd_copy_uuid(uint8_t *out, size_t pos, const char *s)
{
    uint8_t  bytes[16];

    if (s[0] == '\0' || cd_uuid_parse(s, bytes) != CD_OK) {
        return cd_copy_u32(out, pos, 0xffffffff);
    }

    pos = cd_copy_u32(out, pos, 16);
    memcpy(out + pos, bytes, 16);

    return pos + 16;
}


/* text[] of the comma-separated names, as string_to_array(s, ',') */
static size_t
cd_copy_text_array(uint8_t *out, size_t pos, const char *s)
{
    size_t       start, n, elements;
    const char  *p, *comma;

    start = pos;
    pos += 4;                               /* the field's length */

    if (s[0] == '\0') {
        pos = cd_copy_u32(out, pos, 0);     /* no dimension */
        pos = cd_copy_u32(out, pos, 0);     /* no NULL */
        pos = cd_copy_u32(out, pos, 25);    /* text */
        (void) cd_copy_u32(out, start, (uint32_t) (pos - start - 4));
        return pos;
    }

    elements = 1;

    for (p = s; *p; p++) {
        elements += *p == ',';
    }

    pos = cd_copy_u32(out, pos, 1);
    pos = cd_copy_u32(out, pos, 0);
    pos = cd_copy_u32(out, pos, 25);
    pos = cd_copy_u32(out, pos, (uint32_t) elements);
    pos = cd_copy_u32(out, pos, 1);         /* lower bound */

    for (p = s; ; p = comma + 1) {
        comma = strchr(p, ',');
        n = comma ? (size_t) (comma - p) : strlen(p);
        pos = cd_copy_u32(out, pos, (uint32_t) n);
        memcpy(out + pos, p, n);
        pos += n;

        if (comma == NULL) {
            break;
        }
    }

    (void) cd_copy_u32(out, start, (uint32_t) (pos - start - 4));

    return pos;
}


/* bytea of n bytes */
static size_t
cd_copy_bytes(uint8_t *out, size_t pos, const uint8_t *p, size_t n)
{
    pos = cd_copy_u32(out, pos, (uint32_t) n);
    memcpy(out + pos, p, n);

    return pos + n;
}


size_t
cd_ingest_copy_row(const sp_journal_record_t *rec,
    const cd_ingest_link_t *link, const char *node_id, uint8_t *out,
    size_t pos, size_t cap)
{
    int  i;

    /* every field is bounded by sp_journal_record_t's arrays */
    if (cap < pos || cap - pos < CD_INGEST_ROW_MAX + strlen(node_id)) {
        return 0;
    }

    out[pos++] = 0;
    out[pos++] = CD_INGEST_AUDIT_NCOLUMNS;

    pos = cd_copy_text(out, pos, rec->id, 0);
    pos = cd_copy_text(out, pos, rec->org_id, 0);
    pos = cd_copy_i64(out, pos, (rec->ts_ms - CD_INGEST_PG_EPOCH_MS) * 1000);
    pos = cd_copy_text(out, pos, rec->api_key_id, 1);
    pos = cd_copy_text(out, pos, rec->provider, 1);
    pos = cd_copy_text(out, pos, rec->requested_model, 1);
    pos = cd_copy_text(out, pos, rec->model, 1);
    pos = cd_copy_i64(out, pos, rec->input_tokens);
    pos = cd_copy_i64(out, pos, rec->output_tokens);
    pos = cd_copy_i64(out, pos, rec->cached_tokens);
    pos = cd_copy_i64(out, pos, rec->cache_write_tokens);
    pos = cd_copy_i64(out, pos, rec->cost_nano);
    pos = cd_copy_u32(out, pos, 4);
    pos = cd_copy_u32(out, pos, (uint32_t) rec->status);
    pos = cd_copy_text(out, pos, rec->cache, 1);
    pos = cd_copy_bool(out, pos, rec->stream);
    pos = cd_copy_i64(out, pos, rec->latency_ms);
    pos = cd_copy_i64(out, pos, rec->gateway_us);
    pos = cd_copy_text(out, pos, rec->department, 1);
    pos = cd_copy_text(out, pos, rec->project, 1);
    pos = cd_copy_text(out, pos, rec->agent_id, 1);
    pos = cd_copy_text(out, pos, rec->trace_id, 1);
    pos = cd_copy_text(out, pos, rec->span_id, 1);
    pos = cd_copy_text(out, pos, rec->parent_id, 1);
    pos = cd_copy_text_array(out, pos, rec->warnings);
    pos = cd_copy_text(out, pos, rec->error_code, 1);
    pos = cd_copy_text(out, pos, node_id, 0);
    pos = cd_copy_i64(out, pos, rec->epoch);
    pos = cd_copy_i64(out, pos, rec->reserved_nano);
    pos = cd_copy_text(out, pos, rec->endpoint, 1);
    pos = cd_copy_i64(out, pos, rec->saved_nano);

    pos = cd_copy_bool(out, pos, rec->routed);
    pos = cd_copy_text(out, pos, rec->route_rule, 1);

    /* smallint; the journal's 0 and 1 both mean no fallback: 1 attempt */
    pos = cd_copy_u32(out, pos, 2);
    out[pos++] = 0;
    out[pos++] = (uint8_t) (rec->attempts > 1 ? rec->attempts : 1);

    pos = cd_copy_text(out, pos, rec->attempt_log, 1);
    pos = cd_copy_text(out, pos, rec->route_note, 1);
    pos = cd_copy_uuid(out, pos, rec->template_id);

    if (rec->template_version > 0) {
        pos = cd_copy_u32(out, pos, 4);
        pos = cd_copy_u32(out, pos, (uint32_t) rec->template_version);

    } else {
        pos = cd_copy_u32(out, pos, 0xffffffff);
    }

    /*
     * real, 0..1 (NOT NULL: a request with nothing found scores 0); the
     * milli value is exact in a float's 24-bit mantissa before the
     * division, and /audit-logs rounds to 3 decimals again.
     */
    pos = cd_copy_u32(out, pos, 4);
    pos = cd_copy_f32(out, pos, (float) rec->guard_score_milli / 1000.0f);
    pos = cd_copy_text_array(out, pos, rec->pii_types);
    pos = cd_copy_text(out, pos, rec->policy_action, 1);
    pos = cd_copy_text_array(out, pos, rec->policy_ids);
    pos = cd_copy_text_array(out, pos, rec->policy_warnings);

    /* smallint percent; -1 (not scored) is NULL */
    if (rec->hallucination_pct >= 0) {
        pos = cd_copy_u32(out, pos, 2);
        out[pos++] = 0;
        out[pos++] = (uint8_t) rec->hallucination_pct;

    } else {
        pos = cd_copy_u32(out, pos, 0xffffffff);
    }

    pos = cd_copy_text(out, pos, rec->shadow_key_type, 1);
    pos = cd_copy_text(out, pos, rec->shadow_key_fp, 1);
    pos = cd_copy_text(out, pos, rec->client_addr, 1);

    if (link == NULL || link->seq == 0) {
        for (i = 0; i < 5; i++) {
            pos = cd_copy_u32(out, pos, 0xffffffff);
        }

        return pos;
    }

    pos = cd_copy_i64(out, pos, link->seq);
    pos = cd_copy_bytes(out, pos, link->prev, SP_CHAIN_HASH_LEN);
    pos = cd_copy_bytes(out, pos, link->hash, SP_CHAIN_HASH_LEN);
    pos = cd_copy_bytes(out, pos, link->salt, SP_CHAIN_SALT_LEN);

    return cd_copy_bytes(out, pos, link->subject, SP_CHAIN_HASH_LEN);
}


/*
 * The civil date of a day since 1970-01-01 (days >= 0), by integer
 * arithmetic (H. Hinnant's days_from_civil inverse): called per record,
 * where gmtime_r and timegm would cost a microsecond each.
 */
static void
cd_ingest_civil(int64_t days, int *year, int *month, int *day)
{
    int64_t  z, era, doe, yoe, doy, mp;

    z = days + 719468;
    era = z / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *day = (int) (doy - (153 * mp + 2) / 5 + 1);
    *month = (int) (mp < 10 ? mp + 3 : mp - 9);
    *year = (int) (yoe + era * 400 + (*month <= 2));
}


/* ms >= 0, as cd_record_acceptable holds */
int64_t
cd_ingest_month_start(int64_t ms)
{
    int      year, month, day;
    int64_t  days;

    days = ms / 86400000;
    cd_ingest_civil(days, &year, &month, &day);

    return (days - (day - 1)) * 86400000;
}


/* the partition of a month: spendpol_audit_partition's name for it */
static void
cd_ingest_partition_name(int64_t month_ms, char *out, size_t len)
{
    int  year, month, day;

    cd_ingest_civil(month_ms / 86400000, &year, &month, &day);

    snprintf(out, len, "audit_logs_p%04d%02d", year, month);
}


static int
cd_ingest_month_known(cd_ingest_ctx_t *x, int64_t month)
{
    size_t  i;

    for (i = 0; i < x->nmonths; i++) {
        if (x->months[i] == month) {
            return 1;
        }
    }

    return 0;
}


/*
 * Makes sure the partitions of the batch's months exist, and next
 * month's (so that the first rows of a month do not wait for its
 * creation), before the batch's transaction: a partition is created
 * once, in a short transaction of its own, by the owner's function
 * spendpol_audit_partition (migration 015). No row is ever refused for
 * want of one.
 */
static int
cd_ingest_partitions(cd_ingest_ctx_t *x)
{
    char           ms[32];
    size_t         i, k;
    int64_t        month, wanted[CD_INGEST_MONTHS];
    PGresult      *res;
    const char    *params[1];
    cd_db_conn_t  *c;

    k = 0;

    for (i = 0; i <= x->count && k < CD_INGEST_MONTHS; i++) {
        month = i < x->count
                ? cd_ingest_month_start(x->records[i].ts_ms)
                : cd_ingest_month_start(cd_ingest_month_start(
                      cd_clock_ms(CLOCK_REALTIME)) + 32LL * 86400000);

        if (!cd_ingest_month_known(x, month)) {
            wanted[k++] = month;
            x->months[x->nmonths++ % CD_INGEST_MONTHS] = month;

            if (x->nmonths > CD_INGEST_MONTHS) {
                x->nmonths = CD_INGEST_MONTHS;
            }
        }
    }

    if (k == 0) {
        return CD_OK;
    }

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        x->nmonths = 0;
        return CD_ERROR;
    }

    for (i = 0; i < k; i++) {
        snprintf(ms, sizeof(ms), "%lld", (long long) wanted[i]);
        params[0] = ms;

        res = cd_db_exec(c, "SELECT spendpol_audit_partition('epoch'::"
                            "timestamptz + $1::bigint"
                            " * interval '1 millisecond')", 1, params);
        if (res == NULL) {
            goto failed;
        }

        PQclear(res);
    }

    if (cd_db_commit(c) != CD_OK) {
        goto failed;
    }

    cd_db_release(&x->app->db, c);

    return CD_OK;

failed:

    /* forgotten, so the next attempt asks again */
    x->nmonths = 0;
    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    return CD_ERROR;
}


/*
 * One COPY of the batch's records of one month (month != 0) into its
 * partition, or of all of them (month 0) into table. On failure the
 * SQLSTATE is in state.
 */
static int
cd_ingest_copy(cd_ingest_ctx_t *x, cd_db_conn_t *c, const char *table,
    int64_t month, char *state, size_t state_len)
{
    char         sql[sizeof(CD_INGEST_AUDIT_COLUMNS) + 128];
    size_t       i, pos, n;
    PGresult    *res;
    const char  *s;

    state[0] = '\0';

    snprintf(sql, sizeof(sql), "COPY %s (" CD_INGEST_AUDIT_COLUMNS ")"
             " FROM STDIN (FORMAT binary)", table);

    res = PQexec(c->pg, sql);

    if (PQresultStatus(res) != PGRES_COPY_IN) {
        s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(state, state_len, "%s", s ? s : "");
        cd_log_warn(CD_INGEST_SUBJECT, "COPY into %s failed (sqlstate %s)",
                    table, state[0] ? state : "-");
        PQclear(res);
        return CD_ERROR;
    }

    PQclear(res);

    memcpy(x->copy, cd_copy_signature, 11);
    pos = cd_copy_u32(x->copy, 11, 0);          /* flags */
    pos = cd_copy_u32(x->copy, pos, 0);         /* no header extension */

    for (i = 0; i < x->count; i++) {
        if (!x->inserted[i]
            || (month != 0
                && cd_ingest_month_start(x->records[i].ts_ms) != month))
        {
            continue;
        }

        n = cd_ingest_copy_row(&x->records[i], &x->links[i],
                               x->app->config.node_id, x->copy, pos,
                               x->copy_cap);
        if (n == 0) {
            if (PQputCopyData(c->pg, (char *) x->copy, (int) pos) != 1) {
                goto drain;
            }

            pos = cd_ingest_copy_row(&x->records[i], &x->links[i],
                                     x->app->config.node_id, x->copy, 0,
                                     x->copy_cap);
            if (pos == 0) {
                PQputCopyEnd(c->pg, "row does not fit");
                goto drain;
            }

            continue;
        }

        pos = n;
    }

    x->copy[pos++] = 0xff;                      /* the trailer: -1 */
    x->copy[pos++] = 0xff;

    if (PQputCopyData(c->pg, (char *) x->copy, (int) pos) != 1
        || PQputCopyEnd(c->pg, NULL) != 1)
    {
        goto drain;
    }

    res = PQgetResult(c->pg);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(state, state_len, "%s", s ? s : "");

        /* the DETAIL line would quote a row: only the SQLSTATE */
        cd_log(strcmp(state, CD_INGEST_UNIQUE_VIOLATION) == 0
               ? CD_LOG_INFO : CD_LOG_WARN, CD_INGEST_SUBJECT,
               "COPY into %s failed (sqlstate %s)", table,
               state[0] ? state : "-");
        PQclear(res);
        goto drain;
    }

    PQclear(res);

    while ((res = PQgetResult(c->pg)) != NULL) {
        PQclear(res);
    }

    return CD_OK;

drain:

    while ((res = PQgetResult(c->pg)) != NULL) {
        PQclear(res);
    }

    return CD_ERROR;
}


/* the fast path: every row is new, COPY into each month's partition */
static int
cd_ingest_copy_months(cd_ingest_ctx_t *x, cd_db_conn_t *c, char *state,
    size_t state_len)
{
    char     table[64];
    size_t   i, k, n;
    int64_t  month, done[CD_INGEST_MONTHS];

    n = 0;

    for (i = 0; i < x->count; i++) {
        month = cd_ingest_month_start(x->records[i].ts_ms);

        for (k = 0; k < n && done[k] != month; k++) { /* void */ }

        if (k < n) {
            continue;
        }

        if (n == CD_INGEST_MONTHS) {
            /* more months than one batch should span: the dedupe path */
            snprintf(state, state_len, "%s", CD_INGEST_UNIQUE_VIOLATION);
            return CD_ERROR;
        }

        done[n++] = month;
        cd_ingest_partition_name(month, table, sizeof(table));

        if (cd_ingest_copy(x, c, table, month, state, state_len) != CD_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


static int
cd_ingest_order_cmp(const void *one, const void *two)
{
    int                       rc;
    const cd_ingest_order_t  *a = one, *b = two;

    rc = strcmp(a->org_id, b->org_id);

    if (rc != 0) {
        return rc;
    }

    return a->record < b->record ? -1 : a->record > b->record;
}


/*
 * Sorts the batch into the chain's order (organisation, then batch
 * order) and takes each organisation's chain lock, in org id order: two
 * nodes' batches then never wait on each other in a cycle. Bytewise
 * order, as strcmp and COLLATE "C" both give it.
 */
static int
cd_ingest_chain_lock(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    int                rc;
    size_t             i;
    const char        *params[1];
    cd_spend_array_t   orgs;

    for (i = 0; i < x->count; i++) {
        x->order[i].org_id = x->records[i].org_id;
        x->order[i].record = i;
    }

    qsort(x->order, x->count, sizeof(cd_ingest_order_t),
          cd_ingest_order_cmp);

    if (cd_spend_array_init(&orgs, x->count, SP_ID_LEN) != CD_OK) {
        return CD_ERROR;
    }

    for (i = 0; i < x->count; i++) {
        if (i == 0
            || strcmp(x->order[i].org_id, x->order[i - 1].org_id) != 0)
        {
            cd_spend_array_str(&orgs, x->order[i].org_id);
        }
    }

    params[0] = cd_spend_array_end(&orgs);

    /* volatile, so evaluated after the sort: one lock after the other */
    rc = cd_db_command(c, "SELECT spendpol_chain_lock(o)"
                          " FROM unnest($1::text[]) WITH ORDINALITY"
                          " AS u(o, n) ORDER BY n", 1, params);

    free(orgs.data);

    return rc;
}


/*
 * Links the inserted records, organisation by organisation in batch
 * order, after the head each organisation's chain has (none: seq 0 and
 * 32 zero bytes), and moves the heads. Under the chain locks.
 */
static int
cd_ingest_chain_link(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    int                  row, nrows, rc;
    char                 hex[2 * SP_CHAIN_HASH_LEN + 1];
    size_t               i, k, end, linked;
    int64_t              seq;
    uint8_t              prev[SP_CHAIN_HASH_LEN], body[SP_CHAIN_HASH_LEN];
    uint8_t              salts[CD_INGEST_BATCH_LINES * SP_CHAIN_SALT_LEN];
    PGresult            *res;
    const char          *params[3], *org;
    cd_ingest_link_t    *link;

    org = "";
    cd_spend_array_t     a[3];

    linked = 0;

    for (i = 0; i < x->count; i++) {
        x->links[i].seq = 0;
        linked += x->inserted[i];
    }

    if (linked == 0) {
        return CD_OK;
    }

    /* one call for the batch: RAND_bytes costs more per call than byte */
    if (RAND_bytes(salts, (int) (linked * SP_CHAIN_SALT_LEN)) != 1) {
        cd_log_error(CD_INGEST_SUBJECT, "no randomness for the audit "
                     "chain's subject salts");
        return CD_ERROR;
    }

    if (cd_spend_array_init(&a[0], linked, SP_ID_LEN) != CD_OK) {
        return CD_ERROR;
    }

    if (cd_spend_array_init(&a[1], linked, 24) != CD_OK) {
        free(a[0].data);
        return CD_ERROR;
    }

    if (cd_spend_array_init(&a[2], linked, sizeof(hex)) != CD_OK) {
        free(a[0].data);
        free(a[1].data);
        return CD_ERROR;
    }

    for (i = 0; i < x->count; i++) {
        if (x->inserted[x->order[i].record]
            && (a[0].len == 0
                || strcmp(x->order[i].org_id, org) != 0))
        {
            org = x->order[i].org_id;
            cd_spend_array_str(&a[0], org);
        }
    }

    params[0] = cd_spend_array_end(&a[0]);

    res = cd_db_exec(c, "SELECT org_id, seq, hash FROM audit_chain_heads"
                        " WHERE org_id = ANY($1::text[])"
                        " ORDER BY org_id COLLATE \"C\"", 1, params);
    if (res == NULL) {
        goto failed;
    }

    a[0].len = 0;
    nrows = PQntuples(res);
    row = 0;
    linked = 0;

    for (i = 0; i < x->count; i = end) {
        org = x->order[i].org_id;

        for (end = i; end < x->count
                      && strcmp(x->order[end].org_id, org) == 0; end++)
        { /* void */ }

        /* the heads come in the same bytewise order: a merge */
        while (row < nrows && strcmp(PQgetvalue(res, row, 0), org) < 0) {
            row++;
        }

        if (row < nrows && strcmp(PQgetvalue(res, row, 0), org) == 0) {
            seq = strtoll(PQgetvalue(res, row, 1), NULL, 10);

            if (cd_db_bytea(res, row, 2, prev, sizeof(prev))
                != SP_CHAIN_HASH_LEN)
            {
                cd_log_error(CD_INGEST_SUBJECT, "the audit chain head of "
                             "organisation %s is no SHA-256", org);
                PQclear(res);
                goto failed;
            }

        } else {
            seq = 0;
            memset(prev, 0, sizeof(prev));
        }

        for (k = i; k < end; k++) {
            if (!x->inserted[x->order[k].record]) {
                continue;
            }

            link = &x->links[x->order[k].record];
            link->seq = ++seq;
            memcpy(link->prev, prev, SP_CHAIN_HASH_LEN);
            memcpy(link->salt, salts + linked++ * SP_CHAIN_SALT_LEN,
                   SP_CHAIN_SALT_LEN);

            sp_chain_body_digest(&x->records[x->order[k].record], body);
            sp_chain_subject_digest(&x->records[x->order[k].record],
                                    link->salt, link->subject);
            sp_chain_link(prev, body, link->subject, link->hash);

            memcpy(prev, link->hash, SP_CHAIN_HASH_LEN);
        }

        /* an organisation with nothing inserted keeps its head */
        for (k = i; k < end && !x->inserted[x->order[k].record]; k++)
        { /* void */ }

        if (k < end) {
            sp_hex_encode(prev, SP_CHAIN_HASH_LEN, hex);
            cd_spend_array_str(&a[0], org);
            cd_spend_array_int(&a[1], seq);
            cd_spend_array_str(&a[2], hex);
        }
    }

    PQclear(res);

    params[0] = cd_spend_array_end(&a[0]);
    params[1] = cd_spend_array_end(&a[1]);
    params[2] = cd_spend_array_end(&a[2]);

    rc = cd_db_command(c, "INSERT INTO audit_chain_heads (org_id, seq, hash)"
                          " SELECT o, s, decode(h, 'hex')"
                          " FROM unnest($1::text[], $2::bigint[],"
                          " $3::text[]) AS u(o, s, h)"
                          " ON CONFLICT (org_id) DO UPDATE"
                          " SET seq = EXCLUDED.seq, hash = EXCLUDED.hash,"
                          " updated_at = clock_timestamp()", 3, params);

    for (i = 0; i < 3; i++) {
        free(a[i].data);
    }

    return rc;

failed:

    for (i = 0; i < 3; i++) {
        free(a[i].data);
    }

    return CD_ERROR;
}


/*
 * The dedupe path, before linking: marks inserted the records whose row
 * is not in audit_logs yet, and of a line read twice within the batch
 * only its first copy. Under the chain locks, so no other batch of these
 * organisations commits in between.
 */
static int
cd_ingest_mark_new(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    int                  i, n;
    size_t               j, k, r, present;
    PGresult            *res;
    const char          *params[3];
    cd_spend_array_t     a[3];
    sp_journal_record_t *rec;

    if (cd_spend_array_init(&a[0], x->count, SP_ID_LEN) != CD_OK) {
        return CD_ERROR;
    }

    if (cd_spend_array_init(&a[1], x->count, SP_ID_LEN) != CD_OK) {
        free(a[0].data);
        return CD_ERROR;
    }

    if (cd_spend_array_init(&a[2], x->count, 24) != CD_OK) {
        free(a[0].data);
        free(a[1].data);
        return CD_ERROR;
    }

    for (j = 0; j < x->count; j++) {
        cd_spend_array_str(&a[0], x->records[j].org_id);
        cd_spend_array_str(&a[1], x->records[j].id);
        cd_spend_array_int(&a[2], x->records[j].ts_ms * 1000);
    }

    params[0] = cd_spend_array_end(&a[0]);
    params[1] = cd_spend_array_end(&a[1]);
    params[2] = cd_spend_array_end(&a[2]);

    /* the primary key's columns: one index probe per record */
    res = cd_db_exec(c, "SELECT u.n FROM unnest($1::text[], $2::text[],"
                        " $3::bigint[]) WITH ORDINALITY AS u(o, i, us, n)"
                        " JOIN audit_logs a ON a.org_id = u.o"
                        " AND a.created_at = 'epoch'::timestamptz"
                        " + u.us * interval '1 microsecond'"
                        " AND a.id = u.i", 3, params);

    for (j = 0; j < 3; j++) {
        free(a[j].data);
    }

    if (res == NULL) {
        return CD_ERROR;
    }

    memset(x->inserted, 1, x->count);
    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        r = (size_t) strtoull(PQgetvalue(res, i, 0), NULL, 10);

        if (r >= 1 && r <= x->count) {
            x->inserted[r - 1] = 0;
        }
    }

    PQclear(res);

    /* a line twice in one batch: in the same organisation's group */
    for (j = 0; j < x->count; j++) {
        r = x->order[j].record;
        rec = &x->records[r];

        for (k = j; k > 0; k--) {
            if (strcmp(x->order[k - 1].org_id, rec->org_id) != 0) {
                break;
            }

            if (x->records[x->order[k - 1].record].ts_ms == rec->ts_ms
                && strcmp(x->records[x->order[k - 1].record].id, rec->id)
                   == 0)
            {
                x->inserted[r] = 0;
                break;
            }
        }
    }

    present = 0;

    for (j = 0; j < x->count; j++) {
        present += !x->inserted[j];
    }

    cd_log_info(CD_INGEST_SUBJECT, "%s: %zu of the %zu events of the batch "
                "ending at offset %lld were loaded before; skipped",
                x->app->config.journal_path, present, x->count,
                (long long) x->scan_off);

    return CD_OK;
}


/*
 * The dedupe path: the new rows (cd_ingest_mark_new) through a temporary
 * table, inserted unless present; any row found present now was linked
 * in vain, so the batch fails and is tried again.
 */
static int
cd_ingest_copy_dedupe(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    char       state[8];
    size_t     k, expected;
    PGresult  *res;

    if (cd_db_exec_script(c,
            "CREATE TEMP TABLE IF NOT EXISTS cd_audit_batch"
            " (LIKE audit_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        != CD_OK)
    {
        return CD_ERROR;
    }

    if (cd_ingest_copy(x, c, "cd_audit_batch", 0, state, sizeof(state))
        != CD_OK)
    {
        return CD_ERROR;
    }

    res = cd_db_exec(c, "INSERT INTO audit_logs (" CD_INGEST_AUDIT_COLUMNS ")"
                        " SELECT " CD_INGEST_AUDIT_COLUMNS
                        " FROM cd_audit_batch"
                        " ON CONFLICT (org_id, created_at, id) DO NOTHING",
                     0, NULL);
    if (res == NULL) {
        return CD_ERROR;
    }

    expected = 0;

    for (k = 0; k < x->count; k++) {
        expected += x->inserted[k];
    }

    if (strtoull(PQcmdTuples(res), NULL, 10) != expected) {
        cd_log_warn(CD_INGEST_SUBJECT, "%s rows of %zu inserted: another "
                    "loader of this journal? trying the batch again",
                    PQcmdTuples(res), expected);
        PQclear(res);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/* $1..$3 of the journal_offsets statements: the file's path and id */
static void
cd_ingest_file_params(cd_ingest_ctx_t *x, char *dev, char *ino,
    const char **params)
{
    snprintf(dev, 32, "%lld", (long long) x->dev);
    snprintf(ino, 32, "%lld", (long long) x->ino);
    params[0] = x->app->config.journal_path;
    params[1] = dev;
    params[2] = ino;
}


static int
cd_ingest_save_offset(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    char         dev[32], ino[32], off[32];
    PGresult    *res;
    const char  *params[4];

    cd_ingest_file_params(x, dev, ino, params);
    snprintf(off, sizeof(off), "%lld", (long long) x->scan_off);
    params[3] = off;

    res = cd_db_exec(c, "INSERT INTO journal_offsets"
                        " (path, device, inode, \"offset\")"
                        " VALUES ($1, $2, $3, $4)"
                        " ON CONFLICT (path, device, inode) DO UPDATE SET"
                        " \"offset\" = EXCLUDED.\"offset\","
                        " updated_at = clock_timestamp()", 4, params);
    if (res == NULL) {
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/* one attempt: rows, spend and offset in one transaction */
static int
cd_ingest_load(cd_ingest_ctx_t *x, int dedupe, char *state, size_t state_len)
{
    cd_db_conn_t  *c;

    state[0] = '\0';

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    if (x->count > 0) {
        if (cd_ingest_chain_lock(x, c) != CD_OK) {
            goto failed;
        }

        if (dedupe) {
            if (cd_ingest_mark_new(x, c) != CD_OK) {
                goto failed;
            }

        } else {
            memset(x->inserted, 1, x->count);
        }

        if (cd_ingest_chain_link(x, c) != CD_OK
            || (dedupe ? cd_ingest_copy_dedupe(x, c)
                       : cd_ingest_copy_months(x, c, state, state_len)))
        {
            goto failed;
        }

        if (cd_ingest_count_spend(x, c) != CD_OK) {
            goto failed;
        }
    }

    if (cd_ingest_save_offset(x, c) != CD_OK || cd_db_commit(c) != CD_OK) {
        goto failed;
    }

    cd_db_release(&x->app->db, c);

    return CD_OK;

failed:

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    return CD_ERROR;
}


/* loads the batch and the new offset in one transaction */
int
cd_ingest_flush(cd_ingest_ctx_t *x)
{
    char  state[8];

    if (x->count > 0 && cd_ingest_partitions(x) != CD_OK) {
        return CD_ERROR;
    }

    if (cd_ingest_load(x, 0, state, sizeof(state)) != CD_OK) {
        if (strcmp(state, CD_INGEST_UNDEFINED_TABLE) == 0) {
            /* a partition dropped by retention: created again next time */
            x->nmonths = 0;
        }

        if (strcmp(state, CD_INGEST_UNIQUE_VIOLATION) != 0
            || cd_ingest_load(x, 1, state, sizeof(state)) != CD_OK)
        {
            return CD_ERROR;
        }
    }

    cd_log_debug(CD_INGEST_SUBJECT, "loaded %zu events (%zu malformed, %zu "
                 "refused) up to offset %lld", x->count, x->malformed,
                 x->refused, (long long) x->scan_off);

    /* counted with the offset that passes them: once, whatever retries */
    __atomic_add_fetch(&x->app->ingest.malformed_lines,
                       (int64_t) x->malformed, __ATOMIC_RELAXED);
    __atomic_add_fetch(&x->app->ingest.refused_lines, (int64_t) x->refused,
                       __ATOMIC_RELAXED);

    x->commit_off = x->scan_off;
    __atomic_store_n(&x->app->ingest.committed_offset, x->commit_off,
                     __ATOMIC_RELEASE);

    /* committed once: now the other nodes may count these lines */
    cd_rates_push(x->app, &x->rates, x->records, x->count);

    return CD_OK;
}


/*
 * spendpol_audit_retention(): every organisation's rows older than its
 * audit_retention_days, in chain order, and the months that left empty
 */
static void
cd_ingest_org_retention(cd_ingest_ctx_t *x)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, "SELECT spendpol_audit_retention()", 0, NULL);

    if (res == NULL || cd_db_commit(c) != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "could not delete the audit rows "
                    "past the organisations' retention; trying again in "
                    "an hour");

    } else if (strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
        cd_log_info(CD_INGEST_SUBJECT, "deleted %s audit rows past their "
                    "organisation's audit_retention_days",
                    PQgetvalue(res, 0, 0));

        /* a month dropped is created again if a late line needs it */
        x->nmonths = 0;
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);
}


void
cd_ingest_retention(cd_ingest_ctx_t *x)
{
    char           months[32];
    int64_t        now;
    PGresult      *res;
    const char    *params[1];
    cd_db_conn_t  *c;

    now = cd_clock_ms(CLOCK_MONOTONIC);

    if (x->retention_at != 0
        && now - x->retention_at < CD_INGEST_RETENTION_MS)
    {
        return;
    }

    x->retention_at = now;

    /* each organisation's own audit_retention_days (migration 024) */
    cd_ingest_org_retention(x);

    if (x->app->config.audit_retention_months <= 0) {
        return;
    }

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return;
    }

    snprintf(months, sizeof(months), "%ld",
             x->app->config.audit_retention_months);
    params[0] = months;

    /* a whole month at a time: a DROP TABLE, no DELETE, no vacuum */
    res = cd_db_exec(c, "SELECT spendpol_audit_drop_months($1::integer)",
                     1, params);

    if (res == NULL || cd_db_commit(c) != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "could not drop the audit_logs "
                    "months older than %s months; trying again in an hour",
                    months);

    } else if (atoi(PQgetvalue(res, 0, 0)) > 0) {
        cd_log_info(CD_INGEST_SUBJECT, "dropped %s audit_logs months older "
                    "than %s months (SPENDPOL_AUDIT_RETENTION_MONTHS)",
                    PQgetvalue(res, 0, 0), months);

        /* a month dropped is created again if a late line needs it */
        x->nmonths = 0;
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);
}


int
cd_ingest_load_init(cd_ingest_ctx_t *x)
{
    x->copy_cap = CD_INGEST_COPY_SIZE;
    x->copy = malloc(x->copy_cap);
    x->inserted = malloc(CD_INGEST_BATCH_LINES);
    x->links = calloc(CD_INGEST_BATCH_LINES, sizeof(cd_ingest_link_t));
    x->order = calloc(CD_INGEST_BATCH_LINES, sizeof(cd_ingest_order_t));
    x->spend = cd_ingest_spend_create();

    if (x->copy == NULL || x->inserted == NULL || x->links == NULL
        || x->order == NULL || x->spend == NULL)
    {
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_ingest_load_free(cd_ingest_ctx_t *x)
{
    free(x->copy);
    free(x->inserted);
    free(x->links);
    free(x->order);
    cd_ingest_spend_free(x->spend);
    x->copy = NULL;
    x->inserted = NULL;
    x->links = NULL;
    x->order = NULL;
    x->spend = NULL;
}


static void
cd_ingest_reset_batch(cd_ingest_ctx_t *x)
{
    x->count = 0;
    x->raises = 0;
    x->malformed = 0;
    x->refused = 0;
    x->batch_started = 0;
}


int
cd_ingest_pending(cd_ingest_ctx_t *x)
{
    return x->count > 0 || x->scan_off != x->commit_off;
}


/*
 * Flushes with backoff until it succeeds or we stop. On failure the batch
 * is dropped and the lines re-read later from the committed offset.
 */
int
cd_ingest_flush_retry(cd_ingest_ctx_t *x)
{
    unsigned  backoff;

    backoff = 100;

    for ( ;; ) {
        if (cd_ingest_flush(x) == CD_OK) {
            cd_ingest_reset_batch(x);
            return CD_OK;
        }

        cd_ingest_reset_batch(x);
        x->scan_off = x->commit_off;
        x->skipping = 0;

        if (cd_ingest_stopping(x->app)) {
            return CD_ERROR;
        }

        cd_log_warn(CD_INGEST_SUBJECT, "cannot load the journal into "
                    "PostgreSQL; retrying in %u ms from offset %lld",
                    backoff, (long long) x->commit_off);
        cd_ingest_sleep(x->app, backoff);

        backoff = backoff * 2 > CD_INGEST_BACKOFF_MS
                  ? CD_INGEST_BACKOFF_MS : backoff * 2;

        /* re-read from the file rather than hold lines in memory */
        if (cd_ingest_fill(x) != CD_OK) {
            return CD_ERROR;
        }
    }
}


/*
 * runs sql on the journal_offsets row of the file in a transaction of its
 * own, committed when commit_failed (what to warn if it is not) is set;
 * NULL when no connection came or the statement failed
 */
static PGresult *
cd_ingest_offset_exec(cd_ingest_ctx_t *x, const char *sql,
    const char *commit_failed)
{
    char           dev[32], ino[32];
    PGresult      *res;
    const char    *params[3];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return NULL;
    }

    cd_ingest_file_params(x, dev, ino, params);

    res = cd_db_exec(c, sql, 3, params);

    if (res != NULL && commit_failed != NULL && cd_db_commit(c) != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "%s", commit_failed);
    }

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    return res;
}


int
cd_ingest_load_offset(cd_ingest_ctx_t *x, int64_t *offset)
{
    PGresult  *res;

    res = cd_ingest_offset_exec(x, "SELECT \"offset\" FROM journal_offsets"
                                   " WHERE path = $1 AND device = $2"
                                   " AND inode = $3", NULL);
    if (res == NULL) {
        return CD_ERROR;
    }

    *offset = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);

    return CD_OK;
}


/* forgets a finished file, so a recycled inode starts at 0 */
void
cd_ingest_forget(cd_ingest_ctx_t *x)
{
    PQclear(cd_ingest_offset_exec(x, "DELETE FROM journal_offsets"
                                     " WHERE path = $1 AND device = $2"
                                     " AND inode = $3",
                                  "cannot forget the offset of the rotated "
                                  "journal"));
}
