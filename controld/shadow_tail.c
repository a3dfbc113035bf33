/*
 * The egress log tail: each file of SPENDPOL_EGRESS_LOG is read from the
 * offset stored in egress_offsets for its (path, device, inode), whole
 * lines at a time; the AI hits of a chunk and the new offset are written
 * in one transaction, so a restart neither loses nor doubles a line.
 * Rotation is noticed by the inode under the path: the old file is read
 * to its end first, then the new one from its start; a file cut short
 * (copytruncate) is read again from its start.
 *
 * Like the journal tail (ingest_tail.c), and for the same reason: the
 * offset is the file's, not the daemon's.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "controld.h"
#include "api.h"
#include "shadow_tail.h"


#define CD_SHADOW_TAIL_SUBJECT  "shadow-tail"
#define CD_SHADOW_TAIL_CHUNK    (1024 * 1024)
#define CD_SHADOW_TAIL_POLL_MS  500

typedef struct {
    char                *path;
    sp_egress_format_e   format;
    int                  fd;            /* -1: not open */
    dev_t                dev;
    ino_t                ino;
    int64_t              offset;        /* committed */
    int                  missing_logged;
} cd_shadow_file_t;

struct cd_shadow_tail_s {
    cd_app_t            *app;
    cd_thread_t          thread;
    cd_shadow_file_t     files[CD_SHADOW_TAIL_FILES_MAX];
    size_t               nfiles;
    char                *buf;           /* CD_SHADOW_TAIL_CHUNK */
};


/* ---- the setting (unit tested) ---------------------------------------- */

int
cd_shadow_tail_parse(const char *value, char **paths, int *formats,
    size_t *n, char *err, size_t errlen)
{
    int          format;
    size_t       len, i;
    const char  *p, *end, *colon, *s;

    *n = 0;
    p = value;

    for ( ;; ) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        len = (size_t) (end - p);

        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }

        format = SP_EGRESS_AUTO;
        colon = NULL;

        for (s = p; s < p + len; s++) {
            if (*s == ':') {
                colon = s;
            }
        }

        if (colon != NULL) {
            format = sp_egress_format(colon + 1,
                                      (size_t) (p + len - colon - 1));
            if (format >= 0) {
                len = (size_t) (colon - p);

            } else {
                /* a ':' of the path itself */
                format = SP_EGRESS_AUTO;
            }
        }

        if (len == 0) {
            snprintf(err, errlen, "SPENDPOL_EGRESS_LOG: entry %zu has no"
                     " path (expected \"path[:format]\", comma-separated;"
                     " formats auto, dnsmasq, bind, squid, generic)",
                     *n + 1);
            goto failed;
        }

        if (*n == CD_SHADOW_TAIL_FILES_MAX) {
            snprintf(err, errlen, "SPENDPOL_EGRESS_LOG: at most %d files",
                     CD_SHADOW_TAIL_FILES_MAX);
            goto failed;
        }

        paths[*n] = strndup(p, len);
        if (paths[*n] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto failed;
        }

        formats[*n] = format;
        (*n)++;

        if (*end == '\0') {
            return CD_OK;
        }

        p = end + 1;
    }

failed:

    for (i = 0; i < *n; i++) {
        free(paths[i]);
    }

    *n = 0;

    return CD_ERROR;
}


/* ---- one file --------------------------------------------------------- */

/* the committed offset of f's file, 0 when none; CD_ERROR: no database */
static int
cd_shadow_tail_load(cd_shadow_tail_t *t, cd_shadow_file_t *f)
{
    char           dev[CD_INT_TEXT], ino[CD_INT_TEXT];
    PGresult      *res;
    const char    *params[3];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&t->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    snprintf(dev, sizeof(dev), "%llu", (unsigned long long) f->dev);
    snprintf(ino, sizeof(ino), "%llu", (unsigned long long) f->ino);
    params[0] = f->path;
    params[1] = dev;
    params[2] = ino;

    res = cd_db_exec(c, "SELECT \"offset\" FROM egress_offsets WHERE"
                        " path = $1 AND device = $2 AND inode = $3",
                     3, params);

    if (res != NULL) {
        f->offset = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                                   : 0;
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&t->app->db, c);

    return res != NULL ? CD_OK : CD_ERROR;
}


/*
 * The hits of b and the offset after consumed bytes, in one
 * transaction. The stored offset is locked and compared first: another
 * tail of the same file (a second controld) that moved it wins, and
 * this one takes the stored offset instead of writing the lines again
 * (CD_DECLINED).
 */
static int
cd_shadow_tail_commit(cd_shadow_tail_t *t, cd_shadow_file_t *f,
    cd_shadow_batch_t *b, size_t consumed)
{
    int            ok, moved;
    char           dev[CD_INT_TEXT], ino[CD_INT_TEXT], off[CD_INT_TEXT];
    int64_t        stored;
    PGresult      *res;
    const char    *params[4];
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&t->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    snprintf(dev, sizeof(dev), "%llu", (unsigned long long) f->dev);
    snprintf(ino, sizeof(ino), "%llu", (unsigned long long) f->ino);
    snprintf(off, sizeof(off), "%lld",
             (long long) (f->offset + (int64_t) consumed));
    params[0] = f->path;
    params[1] = dev;
    params[2] = ino;
    params[3] = off;

    ok = 0;
    moved = 0;

    /*
     * The row first, so that two tails of a file new to both serialise
     * on it: the second waits for the first's commit, then finds its
     * offset moved
     */
    res = cd_db_exec(c, "INSERT INTO egress_offsets (path, device, inode,"
                        " \"offset\") VALUES ($1, $2, $3, 0)"
                        " ON CONFLICT DO NOTHING", 3, params);
    if (res == NULL) {
        goto done;
    }

    PQclear(res);

    res = cd_db_exec(c, "SELECT \"offset\" FROM egress_offsets WHERE"
                        " path = $1 AND device = $2 AND inode = $3"
                        " FOR UPDATE", 3, params);
    if (res == NULL) {
        goto done;
    }

    stored = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);

    if (stored != f->offset) {
        cd_log_info(CD_SHADOW_TAIL_SUBJECT, "%s: offset %lld moved to %lld"
                    " elsewhere", f->path, (long long) f->offset,
                    (long long) stored);
        f->offset = stored;
        moved = 1;
        goto done;
    }

    if (b->len != 0) {
        res = cd_shadow_batch_commit(c, t->app->config.shadow_org, b);
        if (res == NULL) {
            goto done;
        }

        PQclear(res);
    }

    res = cd_db_exec(c, "UPDATE egress_offsets SET \"offset\" = $4,"
                        " updated_at = clock_timestamp() WHERE path = $1"
                        " AND device = $2 AND inode = $3", 4, params);
    if (res == NULL) {
        goto done;
    }

    PQclear(res);

    if (cd_db_commit(c) == CD_OK) {
        f->offset += (int64_t) consumed;
        ok = 1;
    }

done:

    if (!ok) {
        cd_db_rollback(c);
    }

    cd_db_release(&t->app->db, c);

    return ok ? CD_OK : (moved ? CD_DECLINED : CD_ERROR);
}


/* 1 when the path now names another file than f's open one, or none */
static int
cd_shadow_tail_rotated(cd_shadow_file_t *f)
{
    struct stat  st;

    if (stat(f->path, &st) != 0) {
        return 1;
    }

    return st.st_dev != f->dev || st.st_ino != f->ino;
}


static void
cd_shadow_tail_close(cd_shadow_file_t *f)
{
    if (f->fd >= 0) {
        close(f->fd);
    }

    f->fd = -1;
    f->offset = 0;
}


/* reads f from its offset to its end, a chunk per transaction */
static void
cd_shadow_tail_file(cd_shadow_tail_t *t, cd_shadow_file_t *f)
{
    int                rc, rotated;
    size_t             consumed;
    ssize_t            n;
    struct stat        st;
    cd_shadow_batch_t  b;

    if (f->fd < 0) {
        f->fd = open(f->path, O_RDONLY | O_CLOEXEC);

        if (f->fd < 0) {
            if (!f->missing_logged) {
                cd_log_warn(CD_SHADOW_TAIL_SUBJECT, "%s: %s; waiting for"
                            " it", f->path, strerror(errno));
                f->missing_logged = 1;
            }

            return;
        }

        f->missing_logged = 0;

        if (fstat(f->fd, &st) != 0) {
            cd_shadow_tail_close(f);
            return;
        }

        f->dev = st.st_dev;
        f->ino = st.st_ino;

        if (cd_shadow_tail_load(t, f) != CD_OK) {
            cd_shadow_tail_close(f);
            return;
        }

        cd_log_info(CD_SHADOW_TAIL_SUBJECT, "%s (%s) from offset %lld",
                    f->path, sp_egress_format_name(f->format),
                    (long long) f->offset);
    }

    while (!cd_thread_stopping(&t->thread)) {
        if (fstat(f->fd, &st) == 0 && st.st_size < f->offset) {
            /* cut short in place: its new lines start at 0 */
            cd_log_info(CD_SHADOW_TAIL_SUBJECT, "%s was truncated",
                        f->path);
            f->offset = 0;
        }

        n = pread(f->fd, t->buf, CD_SHADOW_TAIL_CHUNK, f->offset);

        if (n < 0) {
            cd_log_warn(CD_SHADOW_TAIL_SUBJECT, "%s: %s", f->path,
                        strerror(errno));
            cd_shadow_tail_close(f);
            return;
        }

        rotated = (n < CD_SHADOW_TAIL_CHUNK) && cd_shadow_tail_rotated(f);

        if (n == 0) {
            if (rotated) {
                cd_log_info(CD_SHADOW_TAIL_SUBJECT, "%s was rotated",
                            f->path);
                cd_shadow_tail_close(f);
            }

            return;
        }

        cd_shadow_batch_init(&b, f->format, cd_clock_ms(CLOCK_REALTIME));

        if (cd_shadow_batch_text(&b, t->buf, (size_t) n, &consumed)
            != CD_OK)
        {
            cd_shadow_batch_free(&b);
            return;
        }

        /*
         * A line without its end: a longer one than a chunk, or the last
         * of a file that will not grow again (rotated), is taken as it
         * is; otherwise it waits for its '\n'.
         */
        if (consumed == 0 && (n == CD_SHADOW_TAIL_CHUNK || rotated)) {
            if (cd_shadow_batch_line(&b, t->buf, (size_t) n) != CD_OK) {
                cd_shadow_batch_free(&b);
                return;
            }

            consumed = (size_t) n;
        }

        if (consumed == 0) {
            cd_shadow_batch_free(&b);
            return;
        }

        rc = cd_shadow_tail_commit(t, f, &b, consumed);

        if (rc == CD_DECLINED) {
            cd_shadow_batch_free(&b);
            continue;
        }

        if (rc != CD_OK) {
            cd_log_warn(CD_SHADOW_TAIL_SUBJECT, "%s: could not store %ld"
                        " lines at offset %lld; retrying", f->path,
                        b.lines, (long long) f->offset);
            cd_shadow_batch_free(&b);
            return;
        }

        if (b.unreadable) {
            cd_log_warn(CD_SHADOW_TAIL_SUBJECT, "%s: %ld unreadable lines"
                        " (the first: %s)", f->path, b.unreadable,
                        b.first_reason);
        }

        cd_shadow_batch_free(&b);
    }
}


static void *
cd_shadow_tail_run(void *arg)
{
    size_t             i;
    cd_shadow_tail_t  *t;

    t = arg;

    while (!cd_thread_stopping(&t->thread)) {
        for (i = 0; i < t->nfiles; i++) {
            cd_shadow_tail_file(t, &t->files[i]);
        }

        cd_thread_sleep(&t->thread, CD_SHADOW_TAIL_POLL_MS);
    }

    return NULL;
}


/* ---- start and stop --------------------------------------------------- */

static void
cd_shadow_tail_free(cd_shadow_tail_t *t)
{
    size_t  i;

    for (i = 0; i < t->nfiles; i++) {
        cd_shadow_tail_close(&t->files[i]);
        free(t->files[i].path);
    }

    free(t->buf);
    free(t);
}


int
cd_shadow_tail_start(cd_app_t *app, cd_shadow_tail_t **out)
{
    int                formats[CD_SHADOW_TAIL_FILES_MAX];
    char               err[256], *paths[CD_SHADOW_TAIL_FILES_MAX];
    size_t             i, n;
    cd_shadow_tail_t  *t;

    *out = NULL;

    if (app->config.egress_log == NULL || app->config.egress_log[0] == '\0')
    {
        return CD_OK;
    }

    if (cd_shadow_tail_parse(app->config.egress_log, paths, formats, &n,
                             err, sizeof(err)) != CD_OK)
    {
        cd_log_error(CD_SHADOW_TAIL_SUBJECT, "%s", err);
        return CD_ERROR;
    }

    t = calloc(1, sizeof(cd_shadow_tail_t));
    if (t != NULL) {
        t->buf = malloc(CD_SHADOW_TAIL_CHUNK);
    }

    if (t == NULL || t->buf == NULL) {
        for (i = 0; i < n; i++) {
            free(paths[i]);
        }

        free(t);
        return CD_ERROR;
    }

    t->app = app;
    t->nfiles = n;

    for (i = 0; i < n; i++) {
        t->files[i].path = paths[i];
        t->files[i].format = (sp_egress_format_e) formats[i];
        t->files[i].fd = -1;
    }

    if (cd_thread_start(&t->thread, CD_SHADOW_TAIL_SUBJECT,
                        cd_shadow_tail_run, t) != CD_OK)
    {
        cd_shadow_tail_free(t);
        return CD_ERROR;
    }

    cd_log_info(CD_SHADOW_TAIL_SUBJECT, "tailing %zu egress logs into %s",
                n, app->config.shadow_org);

    *out = t;

    return CD_OK;
}


void
cd_shadow_tail_stop(cd_shadow_tail_t *t)
{
    if (t == NULL) {
        return;
    }

    cd_thread_stop(&t->thread);
    cd_shadow_tail_free(t);
}
