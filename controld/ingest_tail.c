/*
 * Journal ingest, the tail: follows the file nginx appends to, parses its
 * complete lines into a batch (at most CD_INGEST_BATCH_LINES lines or
 * CD_INGEST_BATCH_MS) and hands it to ingest_load.c. The file is the only
 * buffer: when PostgreSQL is down the batch is dropped and re-read from
 * the committed offset later.
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
#include "metrics.h"


#define CD_INGEST_IDLE_MS     50
#define CD_INGEST_ROTATE_MS   1000      /* late writes to a rotated file */


int
cd_ingest_stopping(cd_app_t *app)
{
    return cd_thread_stopping(&app->ingest.thread);
}


/* sleeps ms, waking early when asked to stop */
void
cd_ingest_sleep(cd_app_t *app, unsigned ms)
{
    cd_thread_sleep(&app->ingest.thread, ms);
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
        rec->parent_id, rec->warnings, rec->error_code, rec->endpoint,
        rec->route_rule, rec->attempt_log, rec->route_note,
        rec->pii_types, rec->policy_action, rec->policy_ids,
        rec->policy_warnings, rec->shadow_key_type, rec->shadow_key_fp,
        rec->client_addr
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
int
cd_ingest_fill(cd_ingest_ctx_t *x)
{
    ssize_t  n;
    size_t   consumed;

    x->at_eof = 0;
    x->fill_started_ms = cd_clock_ms(CLOCK_REALTIME);

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


/*
 * Publishes drained_ms once the lines the last read to the end of the
 * current file found are committed (the offset passed where that read
 * ended): under steady load too, where no read finds nothing new.
 */
static void
cd_ingest_drained(cd_ingest_ctx_t *x)
{
    if (x->fd >= 0 && x->rotated_at == 0 && x->eof_started_ms != 0
        && x->eof_ino == x->ino && x->commit_off >= x->eof_off)
    {
        __atomic_store_n(&x->app->ingest.drained_ms, x->eof_started_ms,
                         __ATOMIC_RELEASE);
    }
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
    x.alert_keys = calloc(CD_INGEST_BATCH_LINES, CD_ALERT_KEY_MAX);

    if (x.records == NULL || x.buf == NULL || x.alert_keys == NULL
        || cd_ingest_load_init(&x) != CD_OK)
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

        cd_metrics_ingest_file(x.dev, x.ino);

        if (x.at_eof) {
            /* every line written before this read began is below here */
            x.eof_started_ms = x.fill_started_ms;
            x.eof_off = x.scan_off;
            x.eof_ino = x.ino;
        }

        cd_ingest_drained(&x);

        if (cd_ingest_pending(&x)) {
            age = cd_clock_ms(CLOCK_MONOTONIC) - x.batch_started;

            if (x.count == CD_INGEST_BATCH_LINES
                || age >= CD_INGEST_BATCH_MS || x.batch_started == 0)
            {
                (void) cd_ingest_flush_retry(&x);
                cd_ingest_drained(&x);
                continue;
            }

            cd_ingest_sleep(x.app, CD_INGEST_IDLE_MS);
            continue;
        }

        if (x.at_eof) {
            cd_ingest_retention(&x);
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
    free(x.alert_keys);
    cd_ingest_load_free(&x);

    return NULL;
}


int
cd_ingest_start(cd_app_t *app)
{
    return cd_thread_start(&app->ingest.thread, CD_INGEST_SUBJECT,
                           cd_ingest_thread, app);
}


void
cd_ingest_stop(cd_app_t *app)
{
    cd_thread_stop(&app->ingest.thread);
}


int64_t
cd_ingest_offset(cd_app_t *app)
{
    return __atomic_load_n(&app->ingest.committed_offset, __ATOMIC_ACQUIRE);
}


int64_t
cd_ingest_drained_ms(cd_app_t *app)
{
    return __atomic_load_n(&app->ingest.drained_ms, __ATOMIC_ACQUIRE);
}


void
cd_ingest_counts(cd_app_t *app, int64_t *malformed, int64_t *refused)
{
    *malformed = __atomic_load_n(&app->ingest.malformed_lines,
                                 __ATOMIC_RELAXED);
    *refused = __atomic_load_n(&app->ingest.refused_lines, __ATOMIC_RELAXED);
}
