/*
 * Journal ingest: tails the file nginx appends to and loads it into
 * audit_logs in batches (at most CD_INGEST_BATCH_LINES lines or
 * CD_INGEST_BATCH_MS), each batch in ONE transaction with the new offset:
 * COPY into a temporary table, INSERT ... ON CONFLICT (id) DO NOTHING,
 * budget spend counted and alerts raised from the rows inserted, offset
 * upsert, commit. So a crash anywhere loses and duplicates nothing. The
 * file is the only buffer: when PostgreSQL is down the batch is dropped
 * and re-read from the committed offset later.
 *
 * A file is named by (path, device, inode). After a rotation (mv, then
 * nginx -s reopen) the old file is read to EOF for a grace period, then
 * the new one starts at 0. A rotation while controld was down is found at
 * start: a stored offset whose file is no longer at the path is looked for
 * in the journal's directory by device and inode, and its tail is read
 * before the current file.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/stat.h>

#include "controld.h"
#include "sp_journal.h"


#define CD_INGEST_SUBJECT     "ingest"
#define CD_INGEST_READ_SIZE   (256 * 1024)
#define CD_INGEST_IDLE_MS     50
#define CD_INGEST_ROTATE_MS   1000      /* late writes to a rotated file */
#define CD_INGEST_BACKOFF_MS  5000
#define CD_INGEST_TS_MAX      253402300799999LL    /* 9999-12-31, in ms */
#define CD_COPY_LINE_MAX      (4 * SP_JOURNAL_LINE_MAX + 256)


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
    char                  *copy;
    char                 (*alert_keys)[CD_ALERT_KEY_MAX];  /* per record,
                                                 "" when it raises none */
    size_t                 raises;        /* records with an alert key */
    cd_rates_conn_t        rates;
} cd_ingest_ctx_t;


static int
cd_ingest_stopping(cd_app_t *app)
{
    return __atomic_load_n(&app->ingest.stop, __ATOMIC_ACQUIRE);
}


/* sleeps ms, waking early when asked to stop */
static void
cd_ingest_sleep(cd_app_t *app, unsigned ms)
{
    struct timespec  ts;

    while (ms > 0 && !cd_ingest_stopping(app)) {
        unsigned  step = ms < 50 ? ms : 50;

        ts.tv_sec = 0;
        ts.tv_nsec = (long) step * 1000000;
        nanosleep(&ts, NULL);
        ms -= step;
    }
}


int
cd_utf8_valid(const char *s, size_t len)
{
    size_t               i, n, k;
    uint32_t             cp;
    const unsigned char  *p;

    p = (const unsigned char *) s;

    for (i = 0; i < len; i += n) {
        if (p[i] == 0) {
            return 0;
        }

        if (p[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = p[i] & 0x1f;
        } else if ((p[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = p[i] & 0x0f;
        } else if ((p[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = p[i] & 0x07;
        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = cp << 6 | (p[i + k] & 0x3f);
        }

        /* overlong forms, surrogates and beyond U+10FFFF */
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


size_t
cd_copy_escape(char *out, size_t pos, size_t outlen, const char *s)
{
    const char  *p;

    for (p = s; *p != '\0'; p++) {
        if (pos + 2 >= outlen) {
            return 0;
        }

        switch (*p) {
        case '\\':
            out[pos++] = '\\';
            out[pos++] = '\\';
            break;
        case '\t':
            out[pos++] = '\\';
            out[pos++] = 't';
            break;
        case '\n':
            out[pos++] = '\\';
            out[pos++] = 'n';
            break;
        case '\r':
            out[pos++] = '\\';
            out[pos++] = 'r';
            break;
        default:
            out[pos++] = *p;
        }
    }

    return pos;
}


/* the strings PostgreSQL would refuse: one bad event must not stall us */
static int
cd_record_acceptable(const sp_journal_record_t *rec)
{
    size_t       i;
    const char  *fields[] = {
        rec->id, rec->org_id, rec->api_key_id, rec->provider,
        rec->requested_model, rec->model, rec->cache, rec->department,
        rec->project, rec->agent_id, rec->trace_id, rec->span_id,
        rec->parent_id, rec->warnings, rec->error_code
    };

    if (rec->id[0] == '\0' || rec->org_id[0] == '\0'
        || rec->ts_ms < 0 || rec->ts_ms > CD_INGEST_TS_MAX)
    {
        return 0;
    }

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (!cd_utf8_valid(fields[i], strlen(fields[i]))) {
            return 0;
        }
    }

    return 1;
}


/*
 * 1 when the line at offset was not warned about yet: a batch dropped
 * after a failed load is read again, its lines warned about once.
 */
static int
cd_ingest_first_warning(cd_ingest_ctx_t *x, int64_t offset, size_t len)
{
    if (offset < x->warned_off) {
        return 0;
    }

    x->warned_off = offset + (int64_t) len + 1;

    return 1;
}


static void
cd_ingest_line(cd_ingest_ctx_t *x, const char *line, size_t len,
    int64_t offset)
{
    char                  err[256];
    sp_journal_record_t  *rec;

    if (len == 0 || (len == 1 && line[0] == '\r')) {
        return;
    }

    rec = &x->records[x->count];

    if (len > SP_JOURNAL_LINE_MAX
        || sp_journal_parse(line, len, rec, err, sizeof(err)) != SP_OK
        || !cd_record_acceptable(rec))
    {
        /* the reason may quote the line, and the line may hold anything */
        if (cd_ingest_first_warning(x, offset, len)) {
            cd_log_warn(CD_INGEST_SUBJECT, "%s: skipped a malformed line at "
                        "offset %lld (%zu bytes)",
                        x->app->config.journal_path, (long long) offset, len);
        }

        x->malformed++;
        return;
    }

    /*
     * A record whose numbers no gateway writes would bill or credit
     * anything at all: it is refused like a malformed line, its offset
     * passed with the batch, so it is skipped exactly once. The reason
     * names only the field and its bound; the id is the record's own
     * (cd_log_write escapes what it holds).
     */
    if (sp_journal_check(rec, err, sizeof(err)) != SP_OK) {
        if (cd_ingest_first_warning(x, offset, len)) {
            cd_log_warn(CD_INGEST_SUBJECT, "%s: refused event %s at offset "
                        "%lld: %s", x->app->config.journal_path, rec->id,
                        (long long) offset, err);
        }

        x->refused++;
        return;
    }

    x->alert_keys[x->count][0] = '\0';

    if (cd_warnings_has(rec->warnings, "unpriced_model")
        && cd_alert_unpriced_key(rec->provider,
                                 rec->model[0] ? rec->model
                                               : rec->requested_model,
                                 x->alert_keys[x->count], CD_ALERT_KEY_MAX)
           != CD_OK)
    {
        x->alert_keys[x->count][0] = '\0';
    }

    x->raises += x->alert_keys[x->count][0] != '\0';
    x->count++;
}


size_t
cd_journal_scan(const char *buf, size_t len, size_t cap, int64_t base,
    int *skipping, cd_journal_line_pt on_line, void *data)
{
    const char  *p, *end, *nl;

    p = buf;
    end = buf + len;

    while (p < end) {
        nl = memchr(p, '\n', end - p);
        if (nl == NULL) {
            break;
        }

        /* the tail of a line longer than a whole read is reported as such */
        if (on_line(data, p, nl - p, base + (p - buf), *skipping)) {
            *skipping = 0;
            p = nl + 1;
            break;
        }

        *skipping = 0;
        p = nl + 1;
    }

    if (p == buf && len == cap && cap > 0) {
        /* no newline in a whole read: longer than any journal line */
        *skipping = 1;
        return len;
    }

    return p - buf;
}


/* returns 1 when the batch is full */
static int
cd_ingest_on_line(void *data, const char *line, size_t len, int64_t offset,
    int overlong)
{
    cd_ingest_ctx_t  *x = data;

    if (overlong) {
        if (cd_ingest_first_warning(x, offset, len)) {
            cd_log_warn(CD_INGEST_SUBJECT, "%s: skipped an over-long line "
                        "ending at offset %lld", x->app->config.journal_path,
                        (long long) (offset + (int64_t) len));
        }

        x->malformed++;

    } else {
        cd_ingest_line(x, line, len, offset);
    }

    if (x->batch_started == 0) {
        x->batch_started = cd_clock_ms(CLOCK_MONOTONIC);
    }

    return x->count == CD_INGEST_BATCH_LINES;
}


/* reads complete lines after scan_off into the batch until it is full */
static int
cd_ingest_fill(cd_ingest_ctx_t *x)
{
    ssize_t  n;
    size_t   consumed;

    x->at_eof = 0;

    while (x->count < CD_INGEST_BATCH_LINES) {
        n = pread(x->fd, x->buf, CD_INGEST_READ_SIZE, x->scan_off);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            cd_log_error(CD_INGEST_SUBJECT, "cannot read %s: %s",
                         x->app->config.journal_path, strerror(errno));
            return CD_ERROR;
        }

        if (n == 0) {
            x->at_eof = 1;
            return CD_OK;
        }

        consumed = cd_journal_scan(x->buf, (size_t) n, CD_INGEST_READ_SIZE,
                                   x->scan_off, &x->skipping,
                                   cd_ingest_on_line, x);

        if (consumed > 0 && x->batch_started == 0) {
            x->batch_started = cd_clock_ms(CLOCK_MONOTONIC);
        }

        x->scan_off += (int64_t) consumed;

        if (n < CD_INGEST_READ_SIZE && x->count < CD_INGEST_BATCH_LINES) {
            /* what is left is a partial line waiting for its '\n' */
            x->at_eof = 1;
            return CD_OK;
        }
    }

    return CD_OK;
}


static int
cd_copy_field_str(char *out, size_t *pos, const char *s)
{
    size_t  n;

    n = cd_copy_escape(out, *pos, CD_COPY_LINE_MAX, s);

    if (n == 0 && s[0] != '\0') {
        return CD_ERROR;
    }

    *pos = n ? n : *pos;

    return CD_OK;
}


static int
cd_copy_record(const sp_journal_record_t *rec, const char *alert_key,
    char *out, size_t *len)
{
    int          n;
    size_t       pos, i;
    const char  *strings1[] = { rec->id, rec->org_id };
    const char  *strings2[] = { rec->api_key_id, rec->provider,
                                rec->requested_model, rec->model };
    const char  *strings3[] = { rec->cache };
    const char  *strings4[] = { rec->department, rec->project,
                                rec->agent_id, rec->trace_id, rec->span_id,
                                rec->parent_id, rec->warnings,
                                rec->error_code, alert_key };
    const char  *strings5[] = { rec->endpoint };

    pos = 0;

#define cd_copy_strings(list)                                                \
    for (i = 0; i < sizeof(list) / sizeof(list[0]); i++) {                   \
        if (cd_copy_field_str(out, &pos, list[i]) != CD_OK) {                \
            return CD_ERROR;                                                 \
        }                                                                    \
        out[pos++] = '\t';                                                   \
    }

    cd_copy_strings(strings1);

    n = snprintf(out + pos, CD_COPY_LINE_MAX - pos, "%lld\t",
                 (long long) rec->ts_ms);
    pos += (size_t) n;

    cd_copy_strings(strings2);

    n = snprintf(out + pos, CD_COPY_LINE_MAX - pos,
                 "%lld\t%lld\t%lld\t%lld\t%lld\t%d\t",
                 (long long) rec->input_tokens,
                 (long long) rec->output_tokens,
                 (long long) rec->cached_tokens,
                 (long long) rec->cache_write_tokens,
                 (long long) rec->cost_nano, rec->status);
    pos += (size_t) n;

    cd_copy_strings(strings3);

    n = snprintf(out + pos, CD_COPY_LINE_MAX - pos, "%s\t%lld\t%lld\t",
                 rec->stream ? "t" : "f", (long long) rec->latency_ms,
                 (long long) rec->gateway_us);
    pos += (size_t) n;

    cd_copy_strings(strings4);

    n = snprintf(out + pos, CD_COPY_LINE_MAX - pos, "%lld\t%lld\t",
                 (long long) rec->epoch, (long long) rec->reserved_nano);
    pos += (size_t) n;

    cd_copy_strings(strings5);

#undef cd_copy_strings

    /* the last field's tab is the line's end */
    out[pos - 1] = '\n';
    *len = pos;

    return CD_OK;
}


static int
cd_ingest_copy(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    size_t     i, len;
    PGresult  *res;

    if (cd_db_exec_script(c,
            "CREATE TEMP TABLE IF NOT EXISTS cd_journal_batch ("
            " id text, org_id text, ts_ms bigint, api_key_id text,"
            " provider text, requested_model text, model text,"
            " input_tokens bigint, output_tokens bigint,"
            " cached_tokens bigint, cache_write_tokens bigint,"
            " cost_nano bigint, status integer, cache text, stream boolean,"
            " latency_ms bigint, gateway_us bigint, department text,"
            " project text, agent_id text, trace_id text, span_id text,"
            " parent_id text, warnings text, error_code text,"
            " alert_key text, epoch bigint, reserved_nano bigint,"
            " endpoint text)"
            " ON COMMIT DELETE ROWS;"
            " CREATE TEMP TABLE IF NOT EXISTS cd_journal_inserted (id text)"
            " ON COMMIT DELETE ROWS;"
            " CREATE TEMP TABLE IF NOT EXISTS cd_budget_hits ("
            " budget_id text, org_id text, period_start timestamptz,"
            " provider text, model text, cost_nano bigint, epoch bigint)"
            " ON COMMIT DELETE ROWS") != CD_OK)
    {
        return CD_ERROR;
    }

    res = PQexec(c->pg, "COPY cd_journal_batch FROM STDIN");

    if (PQresultStatus(res) != PGRES_COPY_IN) {
        cd_log_warn(CD_INGEST_SUBJECT, "COPY failed: %s",
                    PQerrorMessage(c->pg));
        PQclear(res);
        return CD_ERROR;
    }

    PQclear(res);

    for (i = 0; i < x->count; i++) {
        if (cd_copy_record(&x->records[i], x->alert_keys[i], x->copy, &len)
            != CD_OK)
        {
            PQputCopyEnd(c->pg, "row does not fit");
            goto drain;
        }

        if (PQputCopyData(c->pg, x->copy, (int) len) != 1) {
            goto drain;
        }
    }

    if (PQputCopyEnd(c->pg, NULL) != 1) {
        goto drain;
    }

    res = PQgetResult(c->pg);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "COPY failed: %s",
                    PQerrorMessage(c->pg));
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


/*
 * Raises the alerts of the rows this batch inserted, in its transaction,
 * so a batch loaded twice raises and counts nothing twice. One open alert
 * per (org, dedupe_key) counts the requests. Under a savepoint with a
 * short lock timeout: an alert must never stall ingest, so on failure the
 * batch loads without them (logged).
 */
static void
cd_ingest_raise_alerts(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    PGresult  *res;

    if (cd_db_exec_script(c, "SAVEPOINT cd_alerts;"
                             " SET LOCAL lock_timeout = 1000") != CD_OK)
    {
        return;
    }

    res = cd_db_exec(c,
        "WITH raised AS ("
        " SELECT b.org_id, b.alert_key, min(b.provider) AS provider,"
        " min(coalesce(nullif(b.model, ''), b.requested_model)) AS model,"
        " count(*) AS requests,"
        " min(b.ts_ms) AS first_ms, max(b.ts_ms) AS last_ms"
        " FROM (SELECT DISTINCT ON (id) * FROM cd_journal_batch"
        " WHERE alert_key <> '') AS b"
        " JOIN cd_journal_inserted USING (id)"
        " GROUP BY b.org_id, b.alert_key)"
        " INSERT INTO alerts (id, org_id, type, severity, message,"
        " details, dedupe_key)"
        " SELECT 'alr_' || left(md5(gen_random_uuid()::text), 24),"
        " org_id, 'unpriced_model', 'warning',"
        " format('%s model \"%s\" has no price: its requests are"
        " served and recorded at $0 (warning unpriced_model). Price"
        " it with PUT /pricing/%s/%s, or refuse unpriced models"
        " with PATCH /org {\"refuse_unpriced_models\": true}.',"
        " provider, model, provider, model),"
        " jsonb_build_object('provider', provider, 'model', model,"
        " 'requests', requests, 'first_seen_at',"
        " 'epoch'::timestamptz + first_ms * interval '1 millisecond',"
        " 'last_seen_at',"
        " 'epoch'::timestamptz + last_ms * interval '1 millisecond'),"
        " alert_key FROM raised"
        " ON CONFLICT (org_id, dedupe_key)"
        " WHERE state = 'open' AND dedupe_key IS NOT NULL"
        " DO UPDATE SET details = alerts.details || jsonb_build_object("
        " 'requests', coalesce((alerts.details->>'requests')::bigint, 0)"
        " + (EXCLUDED.details->>'requests')::bigint,"
        " 'last_seen_at', greatest(alerts.details->>'last_seen_at',"
        " EXCLUDED.details->>'last_seen_at'))",
        0, NULL);

    if (res != NULL) {
        PQclear(res);

        if (cd_db_exec_script(c, "RELEASE SAVEPOINT cd_alerts") == CD_OK) {
            return;
        }
    }

    cd_log_warn(CD_INGEST_SUBJECT, "%s: could not raise the alerts of the "
                "batch ending at offset %lld; loading it without them",
                x->app->config.journal_path, (long long) x->scan_off);

    if (cd_db_exec_script(c, "ROLLBACK TO SAVEPOINT cd_alerts") != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "cannot roll back to the alerts "
                    "savepoint");
    }
}


/*
 * Raises a budget_threshold alert for each threshold a budget's spend in
 * a period has reached, once per budget, period and threshold (the
 * dedupe key, looked up whatever the alert's state): so also for a
 * threshold reached because the limit was lowered. Only the budgets this
 * batch counted spend for are looked at. Like unpriced_model, under a
 * savepoint with a short lock timeout: alerts never stall ingest.
 */
static void
cd_ingest_budget_alerts(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    int          i, k, thresholds[CD_BUDGET_THRESHOLDS_MAX];
    char        *ids, *percents, *starts;
    size_t       n, cap, ids_len, percents_len, starts_len;
    int64_t      limit, spent;
    PGresult    *res;
    const char  *params[3];

    if (cd_db_exec_script(c, "SAVEPOINT cd_budget_alerts;"
                             " SET LOCAL lock_timeout = 1000") != CD_OK)
    {
        return;
    }

    ids = percents = starts = NULL;

    res = cd_db_exec(c, "SELECT b.id, b.limit_nano, b.thresholds::text,"
                        " s.spent_nano, " CD_SQL_US("s.period_start")
                        " FROM (SELECT DISTINCT budget_id, period_start"
                        " FROM cd_budget_hits) h"
                        " JOIN budgets b ON b.id = h.budget_id"
                        " JOIN budget_spend s ON s.budget_id = h.budget_id"
                        " AND s.period_start = h.period_start", 0, NULL);
    if (res == NULL) {
        goto failed;
    }

    /* "{bud_...,...}", "{50,...}", "{<us>,...}": ids are hex, no quoting */
    cap = (size_t) PQntuples(res) * CD_BUDGET_THRESHOLDS_MAX * 32 + 8;
    ids = malloc(cap);
    percents = malloc(cap);
    starts = malloc(cap);

    if (ids == NULL || percents == NULL || starts == NULL) {
        goto failed;
    }

    ids_len = percents_len = starts_len = 1;
    ids[0] = percents[0] = starts[0] = '{';

    for (i = 0; i < PQntuples(res); i++) {
        limit = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        spent = strtoll(PQgetvalue(res, i, 3), NULL, 10);

        if (cd_budget_thresholds_from_text(PQgetvalue(res, i, 2),
                                           thresholds, &n) != CD_OK)
        {
            continue;
        }

        for (k = 0; k < (int) n; k++) {
            if (!cd_budget_threshold_reached(limit, spent, thresholds[k])) {
                continue;
            }

            ids_len += (size_t) snprintf(ids + ids_len, cap - ids_len,
                                         "%s%s", ids_len > 1 ? "," : "",
                                         PQgetvalue(res, i, 0));
            percents_len += (size_t) snprintf(percents + percents_len,
                                              cap - percents_len, "%s%d",
                                              percents_len > 1 ? "," : "",
                                              thresholds[k]);
            starts_len += (size_t) snprintf(starts + starts_len,
                                            cap - starts_len, "%s%s",
                                            starts_len > 1 ? "," : "",
                                            PQgetvalue(res, i, 4));
        }
    }

    PQclear(res);
    res = NULL;

    if (ids_len == 1) {
        goto done;
    }

    snprintf(ids + ids_len, cap - ids_len, "}");
    snprintf(percents + percents_len, cap - percents_len, "}");
    snprintf(starts + starts_len, cap - starts_len, "}");
    params[0] = ids;
    params[1] = percents;
    params[2] = starts;

    res = cd_db_exec(c,
        "WITH reached AS ("
        " SELECT b.id, b.org_id, b.name, b.limit_nano, b.action, t.percent,"
        " s.spent_nano, s.period_start,"
        " format('budget_threshold:%s:%s:%s', b.id, t.start_us, t.percent)"
        " AS dedupe_key"
        " FROM unnest($1::text[], $2::int[], $3::bigint[])"
        " AS t(budget_id, percent, start_us)"
        " JOIN budgets b ON b.id = t.budget_id"
        " JOIN budget_spend s ON s.budget_id = b.id AND s.period_start ="
        " 'epoch'::timestamptz + t.start_us * interval '1 microsecond')"
        " INSERT INTO alerts (id, org_id, type, severity, message, details,"
        " dedupe_key)"
        " SELECT 'alr_' || left(md5(gen_random_uuid()::text), 24), org_id,"
        " 'budget_threshold',"
        " CASE WHEN percent >= 100 THEN 'critical' ELSE 'warning' END,"
        " format('Budget \"%s\" (%s) reached %s%% of its limit: %s of %s"
        " USD spent in the period that started %s.%s', name, id, percent,"
        " trim_scale(spent_nano::numeric / 1000000000),"
        " trim_scale(limit_nano::numeric / 1000000000),"
        " " CD_SQL_TS("period_start") ","
        " CASE WHEN percent >= 100 AND action = 'block' THEN ' Requests it"
        " covers are refused (budget_exceeded) until the period ends or"
        " the limit is raised (PATCH /budgets/' || id || ').' ELSE '' END),"
        " jsonb_build_object('budget_id', id, 'budget_name', name,"
        " 'threshold_percent', percent, 'period_start', period_start,"
        " 'limit_usd', trim_scale(limit_nano::numeric / 1000000000)::text,"
        " 'spent_usd', trim_scale(spent_nano::numeric / 1000000000)::text,"
        " 'action', action),"
        " dedupe_key FROM reached r"
        " WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.org_id = r.org_id"
        " AND a.dedupe_key = r.dedupe_key)"
        " ON CONFLICT (org_id, dedupe_key)"
        " WHERE state = 'open' AND dedupe_key IS NOT NULL DO NOTHING",
        3, params);

    if (res == NULL) {
        goto failed;
    }

done:

    PQclear(res);
    free(ids);
    free(percents);
    free(starts);

    if (cd_db_exec_script(c, "RELEASE SAVEPOINT cd_budget_alerts")
        == CD_OK)
    {
        return;
    }

    cd_log_warn(CD_INGEST_SUBJECT, "cannot release the budget alerts "
                "savepoint");
    return;

failed:

    PQclear(res);
    free(ids);
    free(percents);
    free(starts);

    cd_log_warn(CD_INGEST_SUBJECT, "%s: could not raise the budget alerts "
                "of the batch ending at offset %lld; loading it without "
                "them", x->app->config.journal_path, (long long) x->scan_off);

    if (cd_db_exec_script(c, "ROLLBACK TO SAVEPOINT cd_budget_alerts")
        != CD_OK)
    {
        cd_log_warn(CD_INGEST_SUBJECT, "cannot roll back to the budget "
                    "alerts savepoint");
    }
}


/*
 * Counts the spend of the rows this batch really inserted against every
 * budget covering them (a department or project budget also covers the
 * calls of its keys that re-attributed themselves elsewhere, as the
 * module holds them), in the batch's transaction: a batch read twice
 * inserts no row the second time, so it counts nothing twice. A row
 * counts in the period of its budget containing its time (request
 * start); the scope, provider and model narrowing are those of
 * sp_budget_covers, the model being either the one requested or the one
 * the provider answered with. Upserts go in key order, so concurrent
 * nodes do not deadlock on them.
 */
static int
cd_ingest_count_spend(cd_ingest_ctx_t *x, cd_db_conn_t *c)
{
    size_t       i;
    PGresult    *res;
    const char  *node[1];
    static const char  *statements[] = {   /* [2] and [4] take $1, the
                                               node id */

        "INSERT INTO cd_budget_hits"
        " SELECT bu.id, bu.org_id,"
        " spendpol_period_start(bu.period, bu.timezone, bu.created_at,"
        " a.created_at), coalesce(a.provider, ''),"
        " coalesce(a.model, a.requested_model, ''), a.cost_nano,"
        " coalesce(a.epoch, 0)"
        " FROM cd_journal_inserted i JOIN audit_logs a ON a.id = i.id"
        " JOIN budgets bu ON bu.org_id = a.org_id"
        " LEFT JOIN api_keys k ON k.id = a.api_key_id"
        " WHERE (a.cost_nano > 0 OR a.status < 400)"
        " AND (bu.period <> 'total' OR a.created_at >= bu.created_at)"
        " AND CASE bu.scope_type WHEN 'organization' THEN true"
        " WHEN 'api_key' THEN a.api_key_id = bu.scope_value"
        " WHEN 'agent' THEN a.agent_id = bu.scope_value"
        " WHEN 'department' THEN a.department = bu.scope_value"
        " OR k.department = bu.scope_value"
        " ELSE a.project = bu.scope_value OR k.project = bu.scope_value END"
        " AND (bu.provider IS NULL OR bu.provider = a.provider)"
        " AND (bu.model IS NULL"
        " OR spendpol_model_covers(bu.model, a.requested_model)"
        " OR spendpol_model_covers(bu.model, a.model))",

        "INSERT INTO budget_spend (budget_id, org_id, period_start,"
        " spent_nano, requests)"
        " SELECT budget_id, min(org_id), period_start, sum(cost_nano),"
        " count(*) FROM cd_budget_hits GROUP BY budget_id, period_start"
        " ORDER BY budget_id, period_start"
        " ON CONFLICT (budget_id, period_start) DO UPDATE SET"
        " spent_nano = budget_spend.spent_nano + EXCLUDED.spent_nano,"
        " requests = budget_spend.requests + EXCLUDED.requests,"
        " updated_at = clock_timestamp()",

        "INSERT INTO budget_node_spend (budget_id, org_id, period_start,"
        " node_id, epoch, spent_nano)"
        " SELECT budget_id, min(org_id), period_start, $1, epoch,"
        " sum(cost_nano) FROM cd_budget_hits"
        " GROUP BY budget_id, period_start, epoch"
        " ORDER BY budget_id, period_start, epoch"
        " ON CONFLICT (budget_id, period_start, node_id, epoch) DO UPDATE"
        " SET spent_nano = budget_node_spend.spent_nano"
        " + EXCLUDED.spent_nano",

        "INSERT INTO budget_model_spend (budget_id, org_id, period_start,"
        " provider, model, spent_nano, requests)"
        " SELECT budget_id, min(org_id), period_start, provider, model,"
        " sum(cost_nano), count(*) FROM cd_budget_hits"
        " GROUP BY budget_id, period_start, provider, model"
        " ORDER BY budget_id, period_start, provider, model"
        " ON CONFLICT (budget_id, period_start, provider, model) DO UPDATE"
        " SET spent_nano = budget_model_spend.spent_nano"
        " + EXCLUDED.spent_nano,"
        " requests = budget_model_spend.requests + EXCLUDED.requests",

        /* this node's epoch: that of its latest line by request time */
        "INSERT INTO journal_nodes (node_id, epoch, last_at)"
        " SELECT $1, coalesce(a.epoch, 0), a.created_at"
        " FROM cd_journal_inserted i JOIN audit_logs a ON a.id = i.id"
        " ORDER BY a.created_at DESC, a.id DESC LIMIT 1"
        " ON CONFLICT (node_id) DO UPDATE SET epoch = EXCLUDED.epoch,"
        " last_at = EXCLUDED.last_at, updated_at = clock_timestamp()"
        " WHERE EXCLUDED.last_at >= journal_nodes.last_at"
    };

    node[0] = x->app->config.node_id;

    for (i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
        res = cd_db_exec(c, statements[i], i == 2 || i == 4,
                         i == 2 || i == 4 ? node : NULL);
        if (res == NULL) {
            cd_log_warn(CD_INGEST_SUBJECT, "cannot count the spend of the "
                        "batch ending at offset %lld",
                        (long long) x->scan_off);
            return CD_ERROR;
        }

        PQclear(res);
    }

    cd_ingest_budget_alerts(x, c);

    return CD_OK;
}


/* loads the batch and the new offset in one transaction */
static int
cd_ingest_flush(cd_ingest_ctx_t *x)
{
    char           dev[32], ino[32], off[32];
    PGresult      *res;
    const char    *params[4], *node[1];
    cd_db_conn_t  *c;

    node[0] = x->app->config.node_id;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    if (x->count > 0) {
        if (cd_ingest_copy(x, c) != CD_OK) {
            goto failed;
        }

        /* the ids really inserted: a batch read twice is skipped */
        res = cd_db_exec(c,
            "WITH inserted AS ("
            " INSERT INTO audit_logs (id, org_id, created_at, api_key_id,"
            " provider, requested_model, model, input_tokens, output_tokens,"
            " cached_tokens, cache_write_tokens, cost_nano, status, cache,"
            " stream, latency_ms, gateway_us, department, project, agent_id,"
            " trace_id, span_id, parent_id, warnings, error_code, node_id,"
            " epoch, reserved_nano, endpoint)"
            " SELECT id, org_id,"
            " 'epoch'::timestamptz + ts_ms * interval '1 millisecond',"
            " nullif(api_key_id, ''), nullif(provider, ''),"
            " nullif(requested_model, ''), nullif(model, ''), input_tokens,"
            " output_tokens, cached_tokens, cache_write_tokens, cost_nano,"
            " status, nullif(cache, ''), stream, latency_ms, gateway_us,"
            " nullif(department, ''), nullif(project, ''),"
            " nullif(agent_id, ''), nullif(trace_id, ''),"
            " nullif(span_id, ''), nullif(parent_id, ''),"
            " CASE WHEN warnings = '' THEN '{}'::text[]"
            " ELSE string_to_array(warnings, ',') END,"
            " nullif(error_code, ''), $1, epoch, reserved_nano,"
            " nullif(endpoint, '')"
            " FROM cd_journal_batch ON CONFLICT (id) DO NOTHING"
            " RETURNING id)"
            " INSERT INTO cd_journal_inserted SELECT id FROM inserted",
            1, node);

        if (res == NULL) {
            goto failed;
        }

        PQclear(res);

        if (cd_ingest_count_spend(x, c) != CD_OK) {
            goto failed;
        }

        if (x->raises) {
            cd_ingest_raise_alerts(x, c);
        }
    }

    snprintf(dev, sizeof(dev), "%lld", (long long) x->dev);
    snprintf(ino, sizeof(ino), "%lld", (long long) x->ino);
    snprintf(off, sizeof(off), "%lld", (long long) x->scan_off);
    params[0] = x->app->config.journal_path;
    params[1] = dev;
    params[2] = ino;
    params[3] = off;

    res = cd_db_exec(c, "INSERT INTO journal_offsets"
                        " (path, device, inode, \"offset\")"
                        " VALUES ($1, $2, $3, $4)"
                        " ON CONFLICT (path, device, inode) DO UPDATE SET"
                        " \"offset\" = EXCLUDED.\"offset\","
                        " updated_at = clock_timestamp()", 4, params);
    if (res == NULL) {
        goto failed;
    }

    PQclear(res);

    if (cd_db_commit(c) != CD_OK) {
        goto failed;
    }

    cd_db_release(&x->app->db, c);

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

failed:

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    return CD_ERROR;
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


static int
cd_ingest_pending(cd_ingest_ctx_t *x)
{
    return x->count > 0 || x->scan_off != x->commit_off;
}


/*
 * Flushes with backoff until it succeeds or we stop. On failure the batch
 * is dropped and the lines re-read later from the committed offset.
 */
static int
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


static int
cd_ingest_load_offset(cd_ingest_ctx_t *x, int64_t *offset)
{
    char           dev[32], ino[32];
    PGresult      *res;
    const char    *params[3];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    snprintf(dev, sizeof(dev), "%lld", (long long) x->dev);
    snprintf(ino, sizeof(ino), "%lld", (long long) x->ino);
    params[0] = x->app->config.journal_path;
    params[1] = dev;
    params[2] = ino;

    res = cd_db_exec(c, "SELECT \"offset\" FROM journal_offsets"
                        " WHERE path = $1 AND device = $2 AND inode = $3",
                     3, params);

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    if (res == NULL) {
        return CD_ERROR;
    }

    *offset = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);

    return CD_OK;
}


/* forgets a finished file, so a recycled inode starts at 0 */
static void
cd_ingest_forget(cd_ingest_ctx_t *x)
{
    char           dev[32], ino[32];
    PGresult      *res;
    const char    *params[3];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return;
    }

    snprintf(dev, sizeof(dev), "%lld", (long long) x->dev);
    snprintf(ino, sizeof(ino), "%lld", (long long) x->ino);
    params[0] = x->app->config.journal_path;
    params[1] = dev;
    params[2] = ino;

    res = cd_db_exec(c, "DELETE FROM journal_offsets WHERE path = $1"
                        " AND device = $2 AND inode = $3", 3, params);

    if (res != NULL) {
        PQclear(res);

        if (cd_db_commit(c) != CD_OK) {
            cd_log_warn(CD_INGEST_SUBJECT, "cannot forget the offset of the "
                        "rotated journal");
        }
    }

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);
}


/*
 * A file rotated away while we were not running: a stored (device, inode)
 * of this path that the path no longer names, with an unread tail. Its
 * new name is found in the journal's directory. CD_OK with x pointing at
 * it (offset from the store), CD_ERROR when there is none.
 */
static int
cd_ingest_open_rotated(cd_ingest_ctx_t *x)
{
    int             i, n, fd, found;
    char            dir[4096], *slash;
    DIR            *d;
    dev_t           dev;
    ino_t           ino;
    int64_t         offset;
    PGresult       *res;
    const char     *params[1];
    struct stat     now, st;
    cd_db_conn_t   *c;
    struct dirent  *e;

    c = cd_db_acquire_begin(&x->app->db, 2000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    params[0] = x->app->config.journal_path;
    res = cd_db_exec(c, "SELECT device, inode, \"offset\" FROM journal_offsets"
                        " WHERE path = $1", 1, params);

    cd_db_rollback(c);
    cd_db_release(&x->app->db, c);

    if (res == NULL) {
        return CD_ERROR;
    }

    if (stat(x->app->config.journal_path, &now) != 0) {
        now.st_dev = 0;
        now.st_ino = 0;
    }

    snprintf(dir, sizeof(dir), "%s", x->app->config.journal_path);
    slash = strrchr(dir, '/');

    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");

    } else if (slash == dir) {
        dir[1] = '\0';

    } else {
        *slash = '\0';
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        dev = (dev_t) strtoull(PQgetvalue(res, i, 0), NULL, 10);
        ino = (ino_t) strtoull(PQgetvalue(res, i, 1), NULL, 10);
        offset = strtoll(PQgetvalue(res, i, 2), NULL, 10);

        if (dev == now.st_dev && ino == now.st_ino) {
            continue;
        }

        found = 0;
        d = opendir(dir);

        while (d != NULL && (e = readdir(d)) != NULL) {
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0
                || !S_ISREG(st.st_mode) || st.st_dev != dev
                || st.st_ino != ino)
            {
                continue;
            }

            found = 1;

            if (st.st_size <= offset) {
                break;
            }

            fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);

            if (fd < 0) {
                break;
            }

            cd_log_info(CD_INGEST_SUBJECT, "%s/%s was rotated while we were "
                        "down: reading it from offset %lld first", dir,
                        e->d_name, (long long) offset);

            closedir(d);
            PQclear(res);

            x->fd = fd;
            x->dev = dev;
            x->ino = ino;
            x->commit_off = offset;
            x->scan_off = offset;
            x->skipping = 0;
            x->warned_off = 0;

            /* at its EOF, check_file moves on to the current file */
            x->rotated_at = cd_clock_ms(CLOCK_MONOTONIC);

            return CD_OK;
        }

        if (d != NULL) {
            closedir(d);
        }

        if (!found) {
            cd_log_warn(CD_INGEST_SUBJECT, "a rotated journal (inode %llu) "
                        "is gone; what it held after offset %lld is lost",
                        (unsigned long long) ino, (long long) offset);
        }

        /* read to its end, or gone: forget it */
        x->dev = dev;
        x->ino = ino;
        cd_ingest_forget(x);
    }

    PQclear(res);

    return CD_ERROR;
}


/* opens the journal and finds where we stopped; CD_ERROR to retry later */
static int
cd_ingest_open(cd_ingest_ctx_t *x)
{
    int          fd;
    int64_t      offset;
    struct stat  st;

    if (cd_ingest_open_rotated(x) == CD_OK) {
        __atomic_store_n(&x->app->ingest.committed_offset, x->commit_off,
                         __ATOMIC_RELEASE);
        return CD_OK;
    }

    fd = open(x->app->config.journal_path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        if (errno != ENOENT) {
            cd_log_warn(CD_INGEST_SUBJECT, "cannot open %s: %s",
                        x->app->config.journal_path, strerror(errno));
        }

        return CD_ERROR;
    }

    if (fstat(fd, &st) != 0) {
        close(fd);
        return CD_ERROR;
    }

    x->fd = fd;
    x->dev = st.st_dev;
    x->ino = st.st_ino;

    if (cd_ingest_load_offset(x, &offset) != CD_OK) {
        close(fd);
        x->fd = -1;
        return CD_ERROR;
    }

    if (offset > st.st_size) {
        cd_log_warn(CD_INGEST_SUBJECT, "%s is shorter (%lld bytes) than the "
                    "stored offset %lld: starting at 0",
                    x->app->config.journal_path, (long long) st.st_size,
                    (long long) offset);
        offset = 0;
    }

    x->commit_off = offset;
    x->scan_off = offset;
    x->skipping = 0;
    x->warned_off = 0;
    x->rotated_at = 0;
    __atomic_store_n(&x->app->ingest.committed_offset, offset,
                     __ATOMIC_RELEASE);

    cd_log_info(CD_INGEST_SUBJECT, "tailing %s from offset %lld",
                x->app->config.journal_path, (long long) offset);

    return CD_OK;
}


static int cd_ingest_open_next_rotated(cd_ingest_ctx_t *x, dev_t done_dev,
    ino_t done_ino, struct timespec done_mtime);


/* at EOF with nothing pending: truncated or rotated? */
static void
cd_ingest_check_file(cd_ingest_ctx_t *x)
{
    dev_t            dev;
    ino_t            ino;
    int64_t          now;
    struct stat      st;
    struct timespec  mtime;

    if (fstat(x->fd, &st) == 0 && st.st_size < x->scan_off) {
        cd_log_warn(CD_INGEST_SUBJECT, "%s was truncated: starting at 0",
                    x->app->config.journal_path);
        x->scan_off = 0;
        x->skipping = 0;
        x->warned_off = 0;

        if (cd_ingest_flush_retry(x) != CD_OK) {
            return;
        }
    }

    if (stat(x->app->config.journal_path, &st) == 0
        && st.st_dev == x->dev && st.st_ino == x->ino)
    {
        x->rotated_at = 0;
        return;
    }

    now = cd_clock_ms(CLOCK_MONOTONIC);

    if (x->rotated_at == 0) {
        x->rotated_at = now;
        return;
    }

    /* a new file exists and the old one went quiet: switch */
    if (now - x->rotated_at >= CD_INGEST_ROTATE_MS
        && stat(x->app->config.journal_path, &st) == 0)
    {
        if (x->scan_off < (fstat(x->fd, &st) == 0 ? st.st_size : 0)) {
            cd_log_warn(CD_INGEST_SUBJECT, "the rotated journal ends with "
                        "an incomplete line; %lld bytes skipped",
                        (long long) (st.st_size - x->scan_off));
        }

        cd_log_info(CD_INGEST_SUBJECT, "%s was rotated; finished the old "
                    "file at offset %lld", x->app->config.journal_path,
                    (long long) x->scan_off);

        mtime = fstat(x->fd, &st) == 0 ? st.st_mtim : (struct timespec) {0};
        dev = x->dev;
        ino = x->ino;

        cd_ingest_forget(x);
        close(x->fd);
        x->fd = -1;

        /*
         * More than one rotation may have happened meanwhile (ingest was
         * behind, PostgreSQL was down): a file rotated after this one is
         * read before the current one.
         */
        (void) cd_ingest_open_next_rotated(x, dev, ino, mtime);
    }
}


/*
 * The oldest file in the journal's directory, named like the journal, that
 * was written after the file just finished (its mtime is not older) and is
 * neither that file nor the current one. CD_OK with x pointing at it.
 */
static int
cd_ingest_open_next_rotated(cd_ingest_ctx_t *x, dev_t done_dev,
    ino_t done_ino, struct timespec done_mtime)
{
    int              fd;
    char             dir[4096], best[1024];
    const char      *base, *slash;
    DIR             *d;
    size_t           base_len;
    int64_t          offset;
    struct stat      now, st, best_st;
    struct dirent   *e;

    slash = strrchr(x->app->config.journal_path, '/');
    base = slash ? slash + 1 : x->app->config.journal_path;
    base_len = strlen(base);

    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");

    } else {
        snprintf(dir, sizeof(dir), "%.*s",
                 (int) (slash == x->app->config.journal_path
                        ? 1 : slash - x->app->config.journal_path),
                 x->app->config.journal_path);
    }

    if (stat(x->app->config.journal_path, &now) != 0) {
        now.st_dev = 0;
        now.st_ino = 0;
    }

    d = opendir(dir);
    if (d == NULL) {
        return CD_ERROR;
    }

    best[0] = '\0';
    memset(&best_st, 0, sizeof(best_st));

    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, base, base_len) != 0
            || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0
            || !S_ISREG(st.st_mode)
            || (st.st_dev == now.st_dev && st.st_ino == now.st_ino)
            || (st.st_dev == done_dev && st.st_ino == done_ino)
            || st.st_mtim.tv_sec < done_mtime.tv_sec
            || (st.st_mtim.tv_sec == done_mtime.tv_sec
                && st.st_mtim.tv_nsec < done_mtime.tv_nsec))
        {
            continue;
        }

        if (best[0] == '\0'
            || st.st_mtim.tv_sec < best_st.st_mtim.tv_sec
            || (st.st_mtim.tv_sec == best_st.st_mtim.tv_sec
                && st.st_mtim.tv_nsec < best_st.st_mtim.tv_nsec))
        {
            snprintf(best, sizeof(best), "%s", e->d_name);
            best_st = st;
        }
    }

    if (best[0] == '\0') {
        closedir(d);
        return CD_ERROR;
    }

    fd = openat(dirfd(d), best, O_RDONLY | O_CLOEXEC);
    closedir(d);

    if (fd < 0) {
        return CD_ERROR;
    }

    x->fd = fd;
    x->dev = best_st.st_dev;
    x->ino = best_st.st_ino;

    if (cd_ingest_load_offset(x, &offset) != CD_OK
        || offset > best_st.st_size)
    {
        offset = 0;
    }

    cd_log_info(CD_INGEST_SUBJECT, "%s/%s was rotated too: reading it from "
                "offset %lld first", dir, best, (long long) offset);

    x->commit_off = offset;
    x->scan_off = offset;
    x->skipping = 0;
    x->warned_off = 0;
    x->rotated_at = cd_clock_ms(CLOCK_MONOTONIC);
    __atomic_store_n(&x->app->ingest.committed_offset, offset,
                     __ATOMIC_RELEASE);

    return CD_OK;
}


static void *
cd_ingest_thread(void *data)
{
    int64_t           age;
    cd_ingest_ctx_t   x;

    memset(&x, 0, sizeof(x));
    x.app = data;
    x.fd = -1;
    x.records = calloc(CD_INGEST_BATCH_LINES, sizeof(sp_journal_record_t));
    x.buf = malloc(CD_INGEST_READ_SIZE);
    x.copy = malloc(CD_COPY_LINE_MAX);
    x.alert_keys = calloc(CD_INGEST_BATCH_LINES, CD_ALERT_KEY_MAX);

    if (x.records == NULL || x.buf == NULL || x.copy == NULL
        || x.alert_keys == NULL)
    {
        cd_log_error(CD_INGEST_SUBJECT, "out of memory; ingest stopped");
        goto done;
    }

    while (!cd_ingest_stopping(x.app)) {
        if (x.fd < 0) {
            if (cd_ingest_open(&x) != CD_OK) {
                cd_ingest_sleep(x.app, 200);
                continue;
            }
        }

        if (cd_ingest_fill(&x) != CD_OK) {
            cd_ingest_sleep(x.app, 1000);
            continue;
        }

        if (cd_ingest_pending(&x)) {
            age = cd_clock_ms(CLOCK_MONOTONIC) - x.batch_started;

            if (x.count == CD_INGEST_BATCH_LINES
                || age >= CD_INGEST_BATCH_MS || x.batch_started == 0)
            {
                (void) cd_ingest_flush_retry(&x);
                continue;
            }

            cd_ingest_sleep(x.app, CD_INGEST_IDLE_MS);
            continue;
        }

        if (x.at_eof) {
            cd_ingest_check_file(&x);

            if (x.fd >= 0) {
                cd_ingest_sleep(x.app, CD_INGEST_IDLE_MS);
            }
        }
    }

    /* stopping: the batch read so far is loaded, once */
    if (x.fd >= 0 && cd_ingest_pending(&x) && cd_ingest_flush(&x) != CD_OK) {
        cd_log_warn(CD_INGEST_SUBJECT, "could not load the last batch; it "
                    "will be read again from offset %lld at the next start",
                    (long long) x.commit_off);
    }

done:

    if (x.fd >= 0) {
        close(x.fd);
    }

    cd_rates_close(&x.rates);
    free(x.records);
    free(x.buf);
    free(x.copy);
    free(x.alert_keys);

    return NULL;
}


int
cd_ingest_start(cd_app_t *app)
{
    int  err;

    app->ingest.stop = 0;

    err = pthread_create(&app->ingest.thread, NULL, cd_ingest_thread, app);
    if (err != 0) {
        cd_log_error(CD_INGEST_SUBJECT, "cannot start: %s", strerror(err));
        return CD_ERROR;
    }

    app->ingest.started = 1;

    return CD_OK;
}


void
cd_ingest_stop(cd_app_t *app)
{
    if (!app->ingest.started) {
        return;
    }

    __atomic_store_n(&app->ingest.stop, 1, __ATOMIC_RELEASE);
    pthread_join(app->ingest.thread, NULL);
    app->ingest.started = 0;
}


int64_t
cd_ingest_offset(cd_app_t *app)
{
    return __atomic_load_n(&app->ingest.committed_offset, __ATOMIC_ACQUIRE);
}


void
cd_ingest_counts(cd_app_t *app, int64_t *malformed, int64_t *refused)
{
    *malformed = __atomic_load_n(&app->ingest.malformed_lines,
                                 __ATOMIC_RELAXED);
    *refused = __atomic_load_n(&app->ingest.refused_lines, __ATOMIC_RELAXED);
}
