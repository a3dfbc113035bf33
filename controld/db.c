/*
 * PostgreSQL: a small pool of libpq connections guarded by a mutex and a
 * condition variable, and the transaction helper that puts every
 * statement under a role, so row-level security applies even though the
 * daemon may connect as a superuser or the tables' owner.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controld.h"
#include "metrics.h"


#define CD_DB_SUBJECT  "db"


static const char *cd_db_first_line(const char *message, char *buf,
    size_t len);


/* NOTICEs ("already exists, skipping") are not worth stderr */
static void
cd_db_notice(void *data, const char *message)
{
    (void) data;
    cd_log_debug(CD_DB_SUBJECT, "%.*s", (int) strcspn(message, "\n"),
                 message);
}


static PGconn *
cd_db_connect(const char *conninfo)
{
    PGconn  *pg;

    /* dbname last: values in the URL override these defaults */
    const char  *keywords[] = { "connect_timeout", "application_name",
                                "dbname", NULL };
    const char  *values[] = { "5", "spendpol-controld", conninfo, NULL };

    pg = PQconnectdbParams(keywords, values, 1);

    if (pg != NULL) {
        PQsetNoticeProcessor(pg, cd_db_notice, NULL);
    }

    return pg;
}


int
cd_db_pool_init(cd_db_pool_t *pool, const char *conninfo, size_t size)
{
    char     line[512];
    size_t   i;
    PGconn  *pg;

    memset(pool, 0, sizeof(*pool));

    pool->conninfo = strdup(conninfo);
    pool->conns = calloc(size, sizeof(cd_db_conn_t));

    if (pool->conninfo == NULL || pool->conns == NULL) {
        free(pool->conninfo);
        free(pool->conns);
        return CD_ERROR;
    }

    pool->size = size;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->cond, NULL);

    /* the first connection proves the URL; the others open lazily */
    pg = cd_db_connect(conninfo);

    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        cd_log_error(CD_DB_SUBJECT, "cannot connect to PostgreSQL: %s",
                     pg ? cd_db_first_line(PQerrorMessage(pg), line,
                                           sizeof(line))
                        : "out of memory");
        PQfinish(pg);
        /* the caller retries: nothing of this attempt may stay behind */
        cd_db_pool_close(pool);
        return CD_ERROR;
    }

    pool->conns[0].pg = pg;

    for (i = 1; i < size; i++) {
        pool->conns[i].pg = NULL;
    }

    return CD_OK;
}


void
cd_db_pool_close(cd_db_pool_t *pool)
{
    size_t  i;

    if (pool->conns == NULL) {
        return;
    }

    for (i = 0; i < pool->size; i++) {
        PQfinish(pool->conns[i].pg);
    }

    free(pool->conns);
    free(pool->conninfo);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond);
    memset(pool, 0, sizeof(*pool));
}


cd_db_conn_t *
cd_db_acquire(cd_db_pool_t *pool, unsigned timeout_ms)
{
    int               waited;
    char              line[512];
    size_t            i;
    cd_db_conn_t     *c;
    struct timespec   deadline;

    cd_deadline_after(&deadline, timeout_ms);
    waited = 0;

    pthread_mutex_lock(&pool->mutex);

    for ( ;; ) {
        c = NULL;

        /* prefer a connection that is already open */
        for (i = 0; i < pool->size; i++) {
            if (!pool->conns[i].in_use) {
                if (c == NULL || (c->pg == NULL && pool->conns[i].pg != NULL))
                {
                    c = &pool->conns[i];
                }
            }
        }

        if (c != NULL) {
            break;
        }

        waited = cd_metrics_db_wait(pool, waited);

        if (pthread_cond_timedwait(&pool->cond, &pool->mutex, &deadline)
            == ETIMEDOUT)
        {
            pthread_mutex_unlock(&pool->mutex);
            cd_metrics_db_timeout(pool);
            cd_log_warn(CD_DB_SUBJECT, "no free connection within %u ms",
                        timeout_ms);
            return NULL;
        }
    }

    c->in_use = 1;
    pthread_mutex_unlock(&pool->mutex);

    /* (re)connect outside the lock: it may take connect_timeout */
    if (c->pg != NULL && PQstatus(c->pg) != CONNECTION_OK) {
        PQfinish(c->pg);
        c->pg = NULL;
    }

    if (c->pg == NULL) {
        c->pg = cd_db_connect(pool->conninfo);

        if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
            cd_log_warn(CD_DB_SUBJECT, "cannot connect to PostgreSQL: %s",
                        c->pg ? cd_db_first_line(PQerrorMessage(c->pg), line,
                                                 sizeof(line))
                              : "out of memory");
            PQfinish(c->pg);
            c->pg = NULL;
            cd_db_release(pool, c);
            return NULL;
        }
    }

    return c;
}


void
cd_db_release(cd_db_pool_t *pool, cd_db_conn_t *c)
{
    /* a connection left inside a transaction is not reusable as is */
    if (c->pg != NULL && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        PQfinish(c->pg);
        c->pg = NULL;
    }

    pthread_mutex_lock(&pool->mutex);
    c->in_use = 0;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->mutex);
}


static const char *
cd_db_first_line(const char *message, char *buf, size_t len)
{
    size_t  n;

    n = strcspn(message, "\n");
    if (n >= len) {
        n = len - 1;
    }

    memcpy(buf, message, n);
    buf[n] = '\0';

    return buf;
}


PGresult *
cd_db_exec_bin(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params, const int *lengths, const int *formats)
{
    char            line[512];
    PGresult       *res;
    const char     *state;
    ExecStatusType  st;

    res = PQexecParams(c->pg, sql, nparams, NULL, params, lengths, formats, 0);
    st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        c->sqlstate[0] = '\0';
        return res;
    }

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");

    /*
     * Only the first line: the DETAIL line may quote row values. Integrity
     * violations are expected (and answered 409/422) by the callers.
     */
    cd_log(strncmp(c->sqlstate, "23", 2) == 0 ? CD_LOG_DEBUG : CD_LOG_WARN,
           CD_DB_SUBJECT, "statement failed (sqlstate %s): %s",
           c->sqlstate[0] ? c->sqlstate : "-",
           cd_db_first_line(PQerrorMessage(c->pg), line, sizeof(line)));

    PQclear(res);

    return NULL;
}


PGresult *
cd_db_exec(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params)
{
    return cd_db_exec_bin(c, sql, nparams, params, NULL, NULL);
}


/* a statement whose rows, if any, are not read */
int
cd_db_command(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params)
{
    PGresult  *res;

    res = cd_db_exec(c, sql, nparams, params);
    if (res == NULL) {
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


int
cd_db_exec_script(cd_db_conn_t *c, const char *sql)
{
    char            line[512];
    PGresult       *res;
    const char     *state;
    ExecStatusType  st;

    /* the simple protocol: several statements, no parameters */
    res = PQexec(c->pg, sql);
    st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return CD_OK;
    }

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
    cd_log_warn(CD_DB_SUBJECT, "script failed (sqlstate %s): %s",
                c->sqlstate[0] ? c->sqlstate : "-",
                cd_db_first_line(PQerrorMessage(c->pg), line,
                                 sizeof(line)));
    PQclear(res);

    return CD_ERROR;
}


const char *
cd_db_last_sqlstate(cd_db_conn_t *c)
{
    return c->sqlstate;
}


int
cd_db_begin(cd_db_conn_t *c, cd_db_role_e role, const char *org_id)
{
    PGresult    *res;
    const char  *params[1];

    /*
     * The role name is a constant of ours, never input. The timeouts keep
     * a stuck lock from holding an HTTP thread or a pooled connection.
     */
    if (cd_db_exec_script(c, role == CD_ROLE_APP
                             ? "BEGIN; SET LOCAL ROLE spendpol_app;"
                               " SET LOCAL statement_timeout = 10000"
                             : "BEGIN; SET LOCAL ROLE spendpol_system;"
                               " SET LOCAL statement_timeout = 60000")
        != CD_OK)
    {
        cd_db_rollback(c);
        return CD_ERROR;
    }

    if (org_id == NULL) {
        if (role == CD_ROLE_APP) {
            /* a tenant transaction without a tenant sees nothing */
            org_id = "";
        } else {
            return CD_OK;
        }
    }

    params[0] = org_id;
    res = cd_db_exec(c, "SELECT set_config('spendpol.org_id', $1, true)",
                     1, params);
    if (res == NULL) {
        cd_db_rollback(c);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


cd_db_conn_t *
cd_db_acquire_begin(cd_db_pool_t *pool, unsigned timeout_ms,
    cd_db_role_e role, const char *org_id)
{
    int            attempt;
    cd_db_conn_t  *c;

    /*
     * A pooled connection learns that the server restarted only when it
     * is used; BEGIN is that first use and safe to repeat. Every idle
     * connection may be stale after a restart, hence size + 1 tries.
     */
    for (attempt = 0; (size_t) attempt <= pool->size; attempt++) {
        c = cd_db_acquire(pool, timeout_ms);
        if (c == NULL) {
            return NULL;
        }

        if (cd_db_begin(c, role, org_id) == CD_OK) {
            return c;
        }

        if (PQstatus(c->pg) == CONNECTION_OK) {
            cd_db_release(pool, c);
            return NULL;
        }

        cd_db_release(pool, c);
    }

    return NULL;
}


int
cd_db_commit(cd_db_conn_t *c)
{
    PGresult  *res;

    res = cd_db_exec(c, "COMMIT", 0, NULL);
    if (res == NULL) {
        cd_db_rollback(c);
        return CD_ERROR;
    }

    /* COMMIT of an aborted transaction answers ROLLBACK, not an error */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        PQclear(res);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


void
cd_db_rollback(cd_db_conn_t *c)
{
    PGresult  *res;

    if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
        return;
    }

    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
        return;
    }

    res = PQexec(c->pg, "ROLLBACK");
    PQclear(res);
}


const char *
cd_db_value(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return NULL;
    }

    return PQgetvalue(res, row, col);
}


int
cd_db_bool(PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}


ssize_t
cd_db_bytea(PGresult *res, int row, int col, uint8_t *out, size_t outlen)
{
    size_t       len;
    const char  *v;

    v = PQgetvalue(res, row, col);
    len = (size_t) PQgetlength(res, row, col);

    if (len < 2 || v[0] != '\\' || v[1] != 'x' || (len - 2) % 2 != 0
        || (len - 2) / 2 > outlen)
    {
        return -1;
    }

    if (sp_hex_decode(v + 2, len - 2, out, (len - 2) / 2) != SP_OK) {
        return -1;
    }

    return (ssize_t) (len - 2) / 2;
}


/*
 * A runtime role must not be able to step around row-level security:
 * not a superuser, not BYPASSRLS, not the owner of a table with RLS,
 * and not a member of any such role (it could SET ROLE or RESET ROLE
 * into it). pg_has_role(..., 'MEMBER') covers membership through any
 * chain, with or without INHERIT. $1 is the role every transaction of
 * the pool sets (it must be reachable); $2, if not NULL, a role it must
 * not reach: spendpol_system for the tenant pool, or an injected
 * "SET LOCAL ROLE spendpol_system" would see every organisation's rows.
 */
#define CD_DB_ROLE_SQL                                                        \
    "SELECT current_user,"                                                    \
    " (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname)"                 \
    "    FROM pg_roles r WHERE r.rolsuper"                                    \
    "     AND pg_has_role(current_user, r.oid, 'MEMBER')),"                   \
    " (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname)"                 \
    "    FROM pg_roles r WHERE r.rolbypassrls"                                \
    "     AND pg_has_role(current_user, r.oid, 'MEMBER')),"                   \
    " (SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner), ', ')"         \
    "    FROM pg_class c WHERE c.relrowsecurity"                              \
    "     AND c.relnamespace = (SELECT n.oid FROM pg_namespace n"              \
    "                           WHERE n.nspname = current_schema())"          \
    "     AND pg_has_role(current_user, c.relowner, 'MEMBER')),"              \
    " (SELECT string_agg(r.rolname, ', ')"                                    \
    "    FROM pg_roles r WHERE r.rolname = $2::text"                          \
    "     AND pg_has_role(current_user, r.oid, 'MEMBER')),"                   \
    " EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = $1::text"            \
    "          AND pg_has_role(current_user, r.oid, 'MEMBER'))"

#define CD_DB_CHECKS  4

int
cd_db_check_role(cd_db_pool_t *pool, cd_db_role_e role, const char *var,
    int insecure)
{
    int            i, bad, member;
    char           user[256], found[CD_DB_CHECKS][512];
    PGresult      *res;
    const char    *v, *params[2], *what[CD_DB_CHECKS];
    cd_db_conn_t  *c;

    /* role names are constants of ours, as in cd_db_begin */
    params[0] = role == CD_ROLE_APP ? "spendpol_app" : "spendpol_system";
    params[1] = role == CD_ROLE_APP ? "spendpol_system" : NULL;

    what[0] = "is (or can become) the superuser (";
    what[1] = "is (or can become) the BYPASSRLS role (";
    what[2] = "owns (or can become the owner of) tables with row-level "
              "security (owner: ";
    what[3] = "can become the role of every organisation's rows too (";

    c = cd_db_acquire(pool, 10000);
    if (c == NULL) {
        return CD_ERROR;
    }

    res = cd_db_exec(c, CD_DB_ROLE_SQL, 2, params);

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        cd_db_release(pool, c);
        cd_log_error(CD_DB_SUBJECT, "cannot inspect the database role of "
                     "%s", var);
        return CD_ERROR;
    }

    /* names come from the database: escaped before they reach a log */
    v = PQgetvalue(res, 0, 0);
    cd_log_escape(v, strlen(v), user, sizeof(user));
    bad = 0;

    for (i = 0; i < CD_DB_CHECKS; i++) {
        found[i][0] = '\0';

        if (!PQgetisnull(res, 0, i + 1)) {
            v = PQgetvalue(res, 0, i + 1);
            cd_log_escape(v, strlen(v), found[i], sizeof(found[i]));
            bad = 1;
        }
    }

    member = cd_db_bool(res, 0, CD_DB_CHECKS + 1);

    PQclear(res);
    cd_db_release(pool, c);

    if (!bad && member) {
        cd_log_info(CD_DB_SUBJECT, "%s role \"%s\" (%s): no superuser, "
                    "BYPASSRLS or table owner%s within reach",
                    role == CD_ROLE_APP ? "tenant" : "runtime", user, var,
                    role == CD_ROLE_APP ? ", nor spendpol_system" : "");
        return CD_OK;
    }

    for (i = 0; i < CD_DB_CHECKS; i++) {
        if (found[i][0] != '\0') {
            cd_log(insecure ? CD_LOG_WARN : CD_LOG_ERROR, CD_DB_SUBJECT,
                   "the role \"%s\" of %s %s%s), so row-level security "
                   "does not bind %s", user, var, what[i], found[i],
                   i == 3 ? "its tenant statements" : "it");
        }
    }

    /*
     * Without the pool's role every transaction would fail: no start,
     * whatever SPENDPOL_DATABASE_INSECURE says; the advice below still
     * follows when the role had more to answer for.
     */
    if (!member) {
        cd_log_error(CD_DB_SUBJECT, "not starting: the role \"%s\" of %s "
                     "is not a member of %s, which its transactions SET "
                     "ROLE to", user, var, params[0]);

        if (!bad || insecure) {
            return CD_ERROR;
        }
    }

    if (insecure) {
        cd_log_warn(CD_DB_SUBJECT, "SPENDPOL_DATABASE_INSECURE=1: starting "
                    "anyway");
        return CD_OK;
    }

    if (role == CD_ROLE_APP) {
        cd_log_error(CD_DB_SUBJECT, "not starting: set "
                     "SPENDPOL_API_DATABASE_URL to a role that is no "
                     "superuser, has no BYPASSRLS, owns no table and is "
                     "only a member of spendpol_app (make run creates "
                     "spendpol_api), or set SPENDPOL_DATABASE_INSECURE=1 to "
                     "accept this");
        return CD_ERROR;
    }

    cd_log_error(CD_DB_SUBJECT, "not starting: let SPENDPOL_DATABASE_URL "
                 "log in as a role that is no superuser, has no BYPASSRLS, "
                 "owns no table and is only a member of spendpol_system "
                 "(make run creates spendpol_controld), run migrations as "
                 "the owner with SPENDPOL_MIGRATE_DATABASE_URL, or set "
                 "SPENDPOL_DATABASE_INSECURE=1 to accept this");

    return CD_ERROR;
}
