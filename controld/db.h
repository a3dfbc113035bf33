/*
 * The PostgreSQL pools and statement helpers (db.c). Included by
 * controld.h.
 */

#ifndef CD_DB_H
#define CD_DB_H


typedef enum {
    CD_ROLE_APP = 0,        /* tenant requests: RLS by spendpol.org_id */
    CD_ROLE_SYSTEM          /* ingest, publisher, bootstrap, auth */
} cd_db_role_e;

typedef struct {
    PGconn  *pg;
    int      in_use;
    char     sqlstate[8];     /* of the last failed statement */
} cd_db_conn_t;

typedef struct {
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    char             *conninfo;
    cd_db_conn_t     *conns;
    size_t            size;
} cd_db_pool_t;

int cd_db_pool_init(cd_db_pool_t *pool, const char *conninfo, size_t size)
    CD_CHECK;
void cd_db_pool_close(cd_db_pool_t *pool);

/*
 * A connection that is up, or NULL when PostgreSQL cannot be reached or
 * none frees up within timeout_ms.
 */
cd_db_conn_t *cd_db_acquire(cd_db_pool_t *pool, unsigned timeout_ms)
    CD_CHECK;
void cd_db_release(cd_db_pool_t *pool, cd_db_conn_t *c);

/*
 * BEGIN; SET LOCAL ROLE <role>; set_config('spendpol.org_id', org, true).
 * org_id may be NULL for CD_ROLE_SYSTEM.
 */
int cd_db_begin(cd_db_conn_t *c, cd_db_role_e role, const char *org_id)
    CD_CHECK;
/* acquire + begin, retried once on a connection the server dropped */
cd_db_conn_t *cd_db_acquire_begin(cd_db_pool_t *pool, unsigned timeout_ms,
    cd_db_role_e role, const char *org_id) CD_CHECK;
int cd_db_commit(cd_db_conn_t *c) CD_CHECK;
void cd_db_rollback(cd_db_conn_t *c);
/*
 * Refuses (CD_ERROR, with a message naming the role and var, the setting
 * the pool's URL came from) a runtime role that is, or may SET ROLE to,
 * a superuser, a BYPASSRLS role or the owner of a table with row-level
 * security, or, for role CD_ROLE_APP (the tenant pool), spendpol_system;
 * with insecure set it only warns. A role that cannot become the pool's
 * own role (spendpol_app or spendpol_system) is refused always.
 */
int cd_db_check_role(cd_db_pool_t *pool, cd_db_role_e role, const char *var,
    int insecure) CD_CHECK;

/*
 * Runs sql with text parameters (NULL = SQL NULL); returns a result with
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK, else logs and returns NULL.
 */
PGresult *cd_db_exec(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params) CD_CHECK;

/* like cd_db_exec, with some binary parameters (lengths and formats) */
PGresult *cd_db_exec_bin(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params, const int *lengths, const int *formats)
    CD_CHECK;

/* cd_db_exec for a statement whose rows are not read: CD_OK or CD_ERROR */
int cd_db_command(cd_db_conn_t *c, const char *sql, int nparams,
    const char *const *params) CD_CHECK;

/* several statements without parameters (simple protocol) */
int cd_db_exec_script(cd_db_conn_t *c, const char *sql) CD_CHECK;

/* the SQLSTATE of the last failed statement on c, or "" */
const char *cd_db_last_sqlstate(cd_db_conn_t *c);

/* NULL for SQL NULL, else the value */
const char *cd_db_value(PGresult *res, int row, int col);

/* "t" -> 1 */
int cd_db_bool(PGresult *res, int row, int col);

/* bytea in hex output format ("\\x...") into out; returns length or -1 */
ssize_t cd_db_bytea(PGresult *res, int row, int col, uint8_t *out,
    size_t outlen);

/* SQL expression for RFC 3339 UTC with milliseconds of a timestamptz */
#define CD_SQL_TS(col)                                                       \
    "to_char(" col " AT TIME ZONE 'UTC', "                                   \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* milliseconds since the epoch of a timestamptz (snapshot, spend file) */
#define CD_SQL_MS(col)                                                       \
    "floor(extract(epoch FROM " col ") * 1000)::bigint"

/* microseconds since the epoch of a timestamptz, for cursors */
#define CD_SQL_US(col)                                                       \
    "(extract(epoch FROM " col ") * 1000000)::bigint"


#endif /* CD_DB_H */
