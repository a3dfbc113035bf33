/*
 * controld: the Spendpol control daemon.
 *
 * One file per subsystem (config, log, db, crypto, http, snapshot, ingest,
 * migrate, redis) and one per REST resource (api_*.c), all under this
 * header. Every exported name starts with cd_ (functions, types) or CD_
 * (macros). main.c holds main() only, so the rest links into unit tests.
 */

#ifndef CONTROLD_H
#define CONTROLD_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "spendpol.h"
#include "sp_id.h"
#include "sp_provider.h"
#include "sp_journal.h"


#define CD_OK       0
#define CD_ERROR   -1

#define CD_STRINGIFY_(x)   #x
#define CD_STRINGIFY(x)    CD_STRINGIFY_(x)     /* a macro's value, "200" */

#define CD_CHECK    __attribute__((warn_unused_result))
#define CD_PRINTF(fmt, args)  __attribute__((format(printf, fmt, args)))

#define CD_DEFAULT_ORG        "org_default"
#define CD_ID_MAX             64
#define CD_NAME_MAX           200      /* characters of name and tags */
#define CD_MASTER_KEY_LEN     32       /* AES-256 */


/* milliseconds of a clock: CLOCK_REALTIME (unix) or CLOCK_MONOTONIC */
static inline int64_t
cd_clock_ms(clockid_t clock)
{
    struct timespec  ts;

    clock_gettime(clock, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* ---- log.c ------------------------------------------------------------ */

typedef enum {
    CD_LOG_ERROR = 0,
    CD_LOG_WARN,
    CD_LOG_INFO,
    CD_LOG_DEBUG
} cd_log_level_e;

extern int  cd_log_level;

void cd_log_write(int level, const char *subject, const char *fmt, ...)
    CD_PRINTF(3, 4);

#define cd_log(level, subject, ...)                                          \
    do {                                                                     \
        if ((level) <= cd_log_level) {                                       \
            cd_log_write(level, subject, __VA_ARGS__);                       \
        }                                                                    \
    } while (0)

#define cd_log_error(subject, ...)  cd_log(CD_LOG_ERROR, subject, __VA_ARGS__)
#define cd_log_warn(subject, ...)   cd_log(CD_LOG_WARN, subject, __VA_ARGS__)
#define cd_log_info(subject, ...)   cd_log(CD_LOG_INFO, subject, __VA_ARGS__)
#define cd_log_debug(subject, ...)  cd_log(CD_LOG_DEBUG, subject, __VA_ARGS__)

/*
 * Copies s[0..len) into out for a log line: a backslash doubled; C0 and
 * C1 control characters, DEL and bytes that are not UTF-8 as \xNN (a C1
 * character as its two bytes, \xc2\x9b); other UTF-8 as is. Truncates
 * before an escape that does not fit, always NUL-terminates (outlen > 0)
 * and returns the length written. 4 * len + 1 bytes always suffice.
 */
size_t cd_log_escape(const char *s, size_t len, char *out, size_t outlen);

/* "error" ... "debug" -> level, or -1 */
int cd_log_level_parse(const char *name);


/* ---- config.c --------------------------------------------------------- */

typedef struct {
    char      *database_url;       /* the runtime role */
    char      *migrate_database_url; /* the owner role; NULL: database_url */
    char      *api_database_url;   /* tenant statements; NULL: database_url */
    long       database_insecure;  /* 1: runtime role may bypass RLS */
    char      *redis_url;          /* NULL: redis disabled */
    char      *api_listen;
    char      *api_host;           /* parsed from api_listen */
    uint16_t   api_port;
    char      *data_dir;
    char      *snapshot_dir;
    unsigned   snapshot_mode;
    char      *journal_path;
    char      *master_key_hex;     /* NULL: data_dir/master.key */
    char      *admin_key;          /* NULL: generated on first run */
    char      *migrations_dir;     /* NULL: searched at start */
    char      *prices_file;        /* NULL: migrations_dir/data/... */
    char      *node_id;            /* this node in budget_node_spend */
    char      *user;               /* run as this user when root */
    char      *upstream_allow;     /* SPENDPOL_UPSTREAM_ALLOW, as given */
    int        log_level;

    /* admin API limits: request bodies, connections, per-org rows */
    long       api_body_max;                  /* bytes */
    long       api_connection_limit;
    long       api_per_ip_connection_limit;   /* 0: no limit */
    long       api_connection_timeout;        /* seconds idle */
    char      *api_tls_cert;                  /* paths, both or neither */
    char      *api_tls_key;
    char      *api_tls_cert_pem;              /* their contents */
    char      *api_tls_key_pem;               /* secret: wiped */
    long       api_insecure;                  /* 1: plain HTTP anywhere */
    long       max_keys_per_org;              /* active keys */
    long       max_budgets_per_org;
    long       max_alert_rules_per_org;
    long       max_agents_per_org;
    long       audit_retention_months;        /* 0: keep audit_logs */
} cd_config_t;

/* looks a variable up; NULL when unset. Tests pass a fake environment. */
typedef const char *(*cd_getenv_pt)(const char *name, void *data);

/*
 * Fills cf from the environment through getenv_fn. On failure returns
 * CD_ERROR with a message naming the variable and what it expects.
 */
int cd_config_load(cd_config_t *cf, cd_getenv_pt getenv_fn, void *data,
    char *err, size_t errlen) CD_CHECK;
void cd_config_free(cd_config_t *cf);

/* "host:port", "[v6]:port"; port 0 allowed (any free port) */
int cd_config_parse_listen(const char *value, char **host, uint16_t *port)
    CD_CHECK;

/*
 * The default node id: hostname + '-' + 8 hex of a hash of the journal
 * path, so two nodes on one machine (two journals) differ. out holds
 * CD_ID_MAX bytes.
 */
void cd_config_default_node_id(const char *hostname, const char *journal,
    char *out, size_t outlen);

/* the first existing candidate directory, or NULL; caller frees */
char *cd_config_find_migrations(void);

/*
 * 1 when host (as in SPENDPOL_API_LISTEN) is a loopback address:
 * 127.0.0.0/8, ::1, ::ffff:127.x.x.x or "localhost". Names are not
 * resolved: any other name counts as reachable from outside.
 */
int cd_config_host_is_loopback(const char *host);


/* ---- crypto.c --------------------------------------------------------- */

#define CD_AEAD_NONCE_LEN     12
#define CD_AEAD_TAG_LEN       16
#define CD_AEAD_OVERHEAD      (CD_AEAD_NONCE_LEN + CD_AEAD_TAG_LEN)

/*
 * AES-256-GCM. out receives nonce(12) || ciphertext || tag(16), so it
 * must hold len + CD_AEAD_OVERHEAD bytes. aad binds the ciphertext to its
 * row, so a ciphertext copied to another row does not decrypt.
 */
int cd_aead_encrypt(const uint8_t *key, const uint8_t *plain, size_t len,
    const char *aad, uint8_t *out, size_t *outlen) CD_CHECK;

/* out must hold len - CD_AEAD_OVERHEAD bytes; CD_ERROR when tampered */
int cd_aead_decrypt(const uint8_t *key, const uint8_t *sealed, size_t len,
    const char *aad, uint8_t *out, size_t *outlen) CD_CHECK;

/* from SPENDPOL_MASTER_KEY, else data_dir/master.key (created) */
int cd_master_key_load(const cd_config_t *cf, uint8_t *key, char *err,
    size_t errlen) CD_CHECK;

/*
 * Makes jansson wipe every block it frees: request bodies hold provider
 * keys and responses the plaintext of created keys, and jansson copies
 * each string it holds. Called once, before any thread uses jansson.
 */
void cd_json_wipe_on_free(void);

/* id = prefix + 2 * nbytes lowercase hex chars; out holds CD_ID_MAX */
int cd_random_id(const char *prefix, size_t nbytes, char *out) CD_CHECK;

/* writes a file with O_EXCL and mode; CD_ERROR with errno set */
int cd_write_new_file(const char *path, const char *data, size_t len,
    unsigned mode) CD_CHECK;

/* mkdir -p with mode for the directories it creates */
int cd_mkdir_p(const char *path, unsigned mode) CD_CHECK;


/* ---- db.c ------------------------------------------------------------- */

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


/* ---- migrate.c -------------------------------------------------------- */

int cd_migrate(cd_db_pool_t *pool, const char *dir) CD_CHECK;

/* 1 when name looks like NNN_something.sql */
int cd_migration_name_valid(const char *name);


/* ---- prices.c --------------------------------------------------------- */

/*
 * The tail of an INSERT INTO model_prices: a price at the same instant
 * replaces the one stored (both the catalogue and PUT /pricing write so)
 */
#define CD_PRICE_UPSERT                                                      \
    " ON CONFLICT (org_id, provider, model,"                                 \
    " effective_from) DO UPDATE SET"                                         \
    " input_nano = EXCLUDED.input_nano,"                                     \
    " output_nano = EXCLUDED.output_nano,"                                   \
    " cached_input_nano = EXCLUDED.cached_input_nano,"                       \
    " cache_write_nano = EXCLUDED.cache_write_nano,"                         \
    " max_output_tokens = EXCLUDED.max_output_tokens"

typedef struct {
    char     provider[16];
    char     model[128];
    int64_t  input;                 /* nano-USD per 1M tokens */
    int64_t  output;
    int64_t  cached_input;          /* -1: billed as input */
    int64_t  cache_write;           /* -1: billed as input */
    int64_t  max_output_tokens;     /* -1: unknown */
} cd_price_row_t;

/* 1 for a row, 0 for a comment or blank line, -1 with a reason in err */
int cd_price_parse_line(char *line, cd_price_row_t *row, char *err,
    size_t errlen);

/*
 * Loads the list-price data file into model_prices, all or nothing. A
 * missing or malformed file is logged and leaves the prices as they are;
 * CD_ERROR only when PostgreSQL fails.
 */
int cd_prices_load(cd_db_pool_t *pool, const char *path) CD_CHECK;

/*
 * Rows of model_prices sorted by (organisation, provider, model,
 * effective_from DESC), with the columns named in cols: the end of the
 * group starting at first (same organisation, provider and model) and
 * in *row the group's price in effect by sp_price_effective(), -1 when
 * none. CD_ERROR when out of memory.
 */
typedef struct {
    int  org;                       /* NULL for a list price */
    int  provider;
    int  model;
    int  in_effect;                 /* boolean: effective_from <= now() */
} cd_price_cols_t;

int cd_prices_in_effect(PGresult *res, int first, const cd_price_cols_t *cols,
    int *end, int *row) CD_CHECK;


/* ---- redis.c ---------------------------------------------------------- */

typedef struct {
    pthread_mutex_t   mutex;
    char             *host;
    int               port;
    int               db;
    char             *user;
    char             *password;
    void             *ctx;          /* redisContext, NULL when down */
    int               enabled;
} cd_redis_t;

/* parses redis://[[user]:password@]host[:port][/db] */
int cd_redis_parse_url(const char *url, char **host, int *port, int *db,
    char **user, char **password) CD_CHECK;
int cd_redis_init(cd_redis_t *rd, const char *url) CD_CHECK;
void cd_redis_close(cd_redis_t *rd);

/* "ok", "down" or "disabled" */
const char *cd_redis_health(cd_redis_t *rd);

/* a new connection (redisContext *) with timeout_ms, or NULL */
void *cd_redis_connect(cd_redis_t *rd, unsigned timeout_ms);


/* ---- rates.c: rate limit counts across nodes -------------------------- */

typedef struct cd_app_s  cd_app_t;

/* one thread's Redis connection for rate counts */
typedef struct {
    void     *ctx;          /* redisContext, NULL when down */
    int64_t   failed_ms;    /* of the last failure: retried after 5 s */
    int       down;
} cd_rates_conn_t;

/* the other nodes' counts of one subject in the current window */
typedef struct {
    uint64_t  hash;         /* sp_rate_hash() */
    int64_t   requests;
    int64_t   tokens;
} cd_rate_t;

/*
 * The subjects that have a rate limit (sorted sp_rate_hash() values),
 * from each snapshot publish; ingest pushes only theirs, so Redis and the
 * spend thread's reads grow with the limited subjects in use, not with
 * every key. Until the first publish (known 0) every subject is pushed.
 */
typedef struct {
    pthread_mutex_t   mutex;
    uint64_t         *hashes;
    size_t            n;
    int               known;
} cd_rates_limited_t;

void cd_rates_init(cd_app_t *app);
void cd_rates_destroy(cd_app_t *app);

/* takes hashes (malloc()ed, any order, duplicates allowed) */
void cd_rates_set_limited(cd_app_t *app, uint64_t *hashes, size_t n);

/* ingest: adds committed journal lines to this node's counts in Redis */
void cd_rates_push(cd_app_t *app, cd_rates_conn_t *rc,
    const sp_journal_record_t *records, size_t count);

/*
 * The current window's subjects and the other nodes' counts (*out is
 * malloc()ed, NULL when none); CD_OK also when Redis is not configured or
 * down (nothing to add).
 */
int cd_rates_fetch(cd_app_t *app, cd_rates_conn_t *rc, cd_rate_t **out,
    size_t *nout, int64_t *window_ms);
void cd_rates_close(cd_rates_conn_t *rc);


/* ---- thread.c --------------------------------------------------------- */

/*
 * A background thread and its one way to stop: cd_thread_stop sets the
 * flag, wakes cd_thread_sleep at once and joins.
 */
typedef struct {
    const char       *name;              /* log subject */
    pthread_t         thread;
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    int               stop;              /* atomic; set under mutex */
    int               started;
} cd_thread_t;

int cd_thread_start(cd_thread_t *t, const char *name, void *(*fn)(void *),
    void *arg) CD_CHECK;
void cd_thread_stop(cd_thread_t *t);
int cd_thread_stopping(cd_thread_t *t);

/* sleeps ms, waking early when asked to stop */
void cd_thread_sleep(cd_thread_t *t, unsigned ms);

/* CLOCK_REALTIME now plus ms, for pthread_cond_timedwait */
void cd_deadline_after(struct timespec *deadline, unsigned ms);


/* ---- snapshot.c ------------------------------------------------------- */


typedef struct {
    pthread_t         thread;
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    int               signalled;
    int               stop;
    int               started;
    int64_t           state_version;     /* of the last publish, -1 none */
    uint64_t          generation;        /* last published */
    int64_t           next_change_us;    /* a stored price takes effect
                                            then (database clock), 0 none */
} cd_snapshot_t;

void cd_snapshot_init(cd_app_t *app);
void cd_snapshot_destroy(cd_app_t *app);

/* builds and publishes once, synchronously */
int cd_snapshot_publish_now(cd_app_t *app) CD_CHECK;
int cd_snapshot_start(cd_app_t *app) CD_CHECK;
void cd_snapshot_signal(cd_app_t *app);
void cd_snapshot_stop(cd_app_t *app);
uint64_t cd_snapshot_generation(cd_app_t *app);


/* ---- spend.c ---------------------------------------------------------- */

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


/* ---- ingest.c --------------------------------------------------------- */

#define CD_INGEST_BATCH_LINES   1000
#define CD_INGEST_BATCH_MS      200

typedef struct {
    cd_thread_t       thread;
    int64_t           committed_offset;  /* atomically read by /healthz */
    /* since start, atomic, counted when the offset past them commits */
    int64_t           malformed_lines;   /* lines that are no record */
    int64_t           refused_lines;     /* records sp_journal_check
                                            refused */
} cd_ingest_t;

int cd_ingest_start(cd_app_t *app) CD_CHECK;
void cd_ingest_stop(cd_app_t *app);
int64_t cd_ingest_offset(cd_app_t *app);

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

/* 1 when s[0..len) is valid UTF-8 without NUL */
int cd_utf8_valid(const char *s, size_t len);


/* ---- http.c ----------------------------------------------------------- */

#define CD_ROUTE_MAX_PARAMS   4

typedef struct cd_request_s  cd_request_t;
typedef void (*cd_handler_pt)(cd_request_t *r);

typedef struct {
    const char     *method;
    const char     *pattern;      /* "/api-keys/{id}/rotate" */
    cd_handler_pt   handler;
    unsigned        admin:1;      /* needs an admin key */
} cd_route_t;

typedef enum {
    CD_ROUTE_FOUND = 0,
    CD_ROUTE_NOT_FOUND,
    CD_ROUTE_BAD_METHOD
} cd_route_match_e;

typedef struct {
    const char  *data;
    size_t       len;
} cd_param_t;

/*
 * Matches method and path against the table. On CD_ROUTE_FOUND, *route
 * and params (borrowed slices of path) are set; CD_ROUTE_BAD_METHOD means
 * some route has the path but not the method.
 */
cd_route_match_e cd_route_match(const cd_route_t *routes, size_t n,
    const char *method, const char *path, const cd_route_t **route,
    cd_param_t *params, size_t *nparams);

struct cd_request_s {
    cd_app_t                *app;
    struct MHD_Connection   *connection;
    const char              *method;
    const char              *path;
    char                    *params[CD_ROUTE_MAX_PARAMS];
    size_t                   nparams;
    char                    *body;
    size_t                   body_len;
    char                     org_id[CD_ID_MAX];      /* of the admin key */
    char                     key_id[CD_ID_MAX];
    unsigned                 status;
    json_t                  *response;               /* NULL: no body */
    const char              *allow;                  /* for 405 */
};

typedef struct {
    void                    *daemon;                 /* MHD_Daemon */
    uint16_t                 port;                   /* bound */
} cd_http_t;

int cd_http_start(cd_app_t *app) CD_CHECK;
void cd_http_stop(cd_app_t *app);


/* ---- http_request.c: what every handler uses -------------------------- */

/* how long a request waits for a pooled database connection */
#define CD_DB_WAIT_MS         5000

/* response helpers; respond steals json */
void cd_respond(cd_request_t *r, unsigned status, json_t *json);
void cd_respond_error(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, ...)
    CD_PRINTF(6, 7);
void cd_respond_verror(cd_request_t *r, unsigned status, const char *type,
    const char *code, const char *field, const char *fmt, va_list args)
    CD_PRINTF(6, 0);
void cd_respond_db_error(cd_request_t *r);

/*
 * A pooled connection inside BEGIN as spendpol_app with the request's
 * org, or NULL after answering 503. cd_request_end rolls back whatever
 * was not committed and releases.
 */
cd_db_conn_t *cd_request_begin(cd_request_t *r) CD_CHECK;
int cd_request_commit(cd_request_t *r, cd_db_conn_t *c) CD_CHECK;

/*
 * check(r) on the route's parameters (it answers 400/404 and returns
 * CD_ERROR), then cd_request_begin; NULL when either answered.
 */
cd_db_conn_t *cd_request_begin_param(cd_request_t *r,
    int (*check)(cd_request_t *r)) CD_CHECK;
void cd_request_end(cd_request_t *r, cd_db_conn_t *c);

/*
 * Commits, then answers status with json (stolen) and, with publish,
 * asks for a new snapshot. When the commit fails its 500 stands, json is
 * dropped and CD_ERROR returned.
 */
int cd_request_commit_respond(cd_request_t *r, cd_db_conn_t *c,
    int publish, unsigned status, json_t *json) CD_CHECK;
void cd_respond_statement_error(cd_request_t *r, cd_db_conn_t *c);

/*
 * After a statement that names one row (res may be NULL: it failed):
 * CD_OK when it returned or changed a row; else answers (the statement
 * error, or 404 not_found_error with code, field and the message fmt)
 * and returns CD_ERROR. The caller still clears res.
 */
int cd_request_found(cd_request_t *r, cd_db_conn_t *c, PGresult *res,
    const char *code, const char *field, const char *fmt, ...)
    CD_CHECK CD_PRINTF(6, 7);

/*
 * Inside a request's transaction: answers 422 org_limit_reached, naming
 * cap and setting (the variable that raises it), and returns CD_ERROR
 * when the organisation already has cap rows of table (and where, an SQL
 * condition from code, or NULL). Holds a lock on (table, org) until the
 * transaction ends.
 */
int cd_org_cap_check(cd_request_t *r, cd_db_conn_t *c, const char *table,
    const char *where, long cap, const char *setting, const char *what)
    CD_CHECK;

/*
 * The start of a creation: a fresh id of prefix into id (CD_ID_MAX; none
 * when prefix is NULL), the request's transaction, and the cap check
 * above. NULL after answering (500 no_randomness, 503, 422) with the
 * transaction ended.
 */
cd_db_conn_t *cd_request_begin_create(cd_request_t *r, const char *prefix,
    char *id, const char *table, const char *where, long cap,
    const char *setting, const char *what) CD_CHECK;

/* the query argument, or NULL */
const char *cd_query(cd_request_t *r, const char *name);

/*
 * Parses the body as a JSON object whose keys are all in allowed (NULL
 * terminated). On failure answers 400 and returns NULL.
 */
json_t *cd_request_json(cd_request_t *r, const char *const *allowed)
    CD_CHECK;

/*
 * A route without options: no body or an empty JSON object. Anything
 * else answers 400 (as cd_request_json) and returns CD_ERROR.
 */
int cd_request_no_options(cd_request_t *r) CD_CHECK;

/*
 * Optional string member: absent or null leaves *out NULL; a non-string
 * answers 400; longer than max characters or with control characters
 * answers 422 (when required and absent too). Returns CD_OK / CD_ERROR.
 */
int cd_json_string(cd_request_t *r, json_t *obj, const char *field,
    int required, size_t min_chars, size_t max_chars, const char **out)
    CD_CHECK;

/* validation for unit tests: 0 ok, else an error code string */
const char *cd_validate_text(const char *s, size_t min_chars,
    size_t max_chars);

/* adds a string or null member */
int cd_json_set_str(json_t *obj, const char *key, const char *value)
    CD_CHECK;

/* limit query parameter: default when absent; 400 when out of 1..max */
int cd_query_limit(cd_request_t *r, long def, long max, long *limit)
    CD_CHECK;


/* ---- cursors (http_request.c) ----------------------------------------- */

#define CD_CURSOR_MAX   128

/* opaque cursor for (created_at microseconds, id) */
int cd_cursor_encode(int64_t us, const char *id, char *out, size_t outlen)
    CD_CHECK;
int cd_cursor_decode(const char *cursor, int64_t *us, char *id,
    size_t idlen) CD_CHECK;


/* ---- paged lists (http_request.c) ------------------------------------- */

#define CD_PAGE_LIMIT_MAX     1000
#define CD_PAGE_FILTERS_MAX   4

/*
 * The query of a paged list, newest first: $1 and $2 are the cursor's
 * created_at microseconds and id (NULL on the first page), $3 the limit
 * plus one, $4... the route's filter values, which filters (" AND (...)"
 * conditions, or "") tests. No org predicate: row-level security is the
 * fence.
 */
#define CD_PAGE_SQL(columns, table, filters)                                 \
    "SELECT " columns " FROM " table                                         \
    " WHERE ($1::bigint IS NULL OR (created_at, id) <"                       \
    " ('epoch'::timestamptz + $1::bigint * interval '1 microsecond',"        \
    " $2::text))" filters                                                    \
    " ORDER BY created_at DESC, id DESC LIMIT $3"

/* a row of the list's query as JSON, or NULL when out of memory */
typedef json_t *(*cd_page_row_pt)(PGresult *res, int row);

/* the first n rows of res as a JSON array, or NULL when out of memory */
json_t *cd_rows_json(PGresult *res, int n, cd_page_row_pt row_json);

/*
 * Reads the query argument name into *value (NULL: absent, no filter),
 * or answers 400 and returns CD_ERROR.
 */
typedef int (*cd_page_filter_pt)(cd_request_t *r, const char *name,
    const char **value);

typedef struct {
    const char          *sql;                /* CD_PAGE_SQL(...) */
    long                 default_limit;      /* 1 .. CD_PAGE_LIMIT_MAX */
    int                  id_column;
    int                  created_us_column;  /* CD_SQL_US("created_at") */
    cd_page_row_pt       row_json;
    /* query arguments read in this order by filter into $4... */
    const char          *filters[CD_PAGE_FILTERS_MAX];
    cd_page_filter_pt    filter;             /* when filters are named */
} cd_page_t;

/*
 * Answers a GET of a paged list. Checked in this order: ?limit= (1 ..
 * CD_PAGE_LIMIT_MAX, else 400 invalid_limit), the route's filters,
 * ?cursor= (400 invalid_cursor); then 200 {"data": [...], "next_cursor":
 * the cursor of the page's last row, or null when no row follows}.
 */
void cd_page_respond(cd_request_t *r, const cd_page_t *page);

/*
 * A GET of one row: sql with $1 the route's checked first parameter,
 * then 200 with row_json of the row, or 404 not_found_error with code,
 * field and the message fmt, whose one argument is that parameter.
 */
void cd_row_respond(cd_request_t *r, const char *sql, cd_page_row_pt row_json,
    const char *code, const char *field, const char *fmt);

/*
 * A DELETE of one row: check validates the route's first parameter, sql
 * deletes with it as $1; 204 and CD_OK, for the caller to log, or the
 * 404 of cd_row_respond (code, field, fmt) or another error answered.
 */
int cd_delete_respond(cd_request_t *r, int (*check)(cd_request_t *r),
    const char *sql, const char *code, const char *field, const char *fmt);

/* a list without pages: 200 {"data": [every row of sql (no parameters)]} */
void cd_list_respond(cd_request_t *r, const char *sql,
    cd_page_row_pt row_json);


/* ---- api_*.c: one file per resource ----------------------------------- */

extern const cd_route_t  cd_routes[];
extern const size_t      cd_routes_count;

void cd_api_healthz(cd_request_t *r);

void cd_api_keys_create(cd_request_t *r);
void cd_api_keys_list(cd_request_t *r);
void cd_api_keys_get(cd_request_t *r);
void cd_api_keys_revoke(cd_request_t *r);
void cd_api_keys_rotate(cd_request_t *r);
void cd_api_keys_update(cd_request_t *r);

void cd_api_providers_put(cd_request_t *r);
void cd_api_providers_list(cd_request_t *r);
void cd_api_providers_get(cd_request_t *r);
void cd_api_providers_delete(cd_request_t *r);

void cd_api_audit_list(cd_request_t *r);

void cd_api_org_get(cd_request_t *r);
void cd_api_org_update(cd_request_t *r);


/* "openai" ... -> default base URL ("" when none), NULL when unknown */
const char *cd_provider_default_url(const char *name);

/*
 * CD_OK when name is a provider of the catalogue (sp_provider.h), else
 * CD_ERROR after answering status (404 for a path part, 400 for a query
 * value) naming field and the providers expected
 */
int cd_provider_param(cd_request_t *r, const char *name, unsigned status,
    const char *field);

/* normalises a base URL in place (trailing '/' stripped); 0 if invalid */
int cd_base_url_normalize(char *url);


/* scopes array -> bits; CD_ERROR with the offending index */
int cd_scopes_parse(json_t *array, uint32_t *bits, size_t *bad_index)
    CD_CHECK;

/* the bootstrap admin key (SPENDPOL_ADMIN_KEY or admin.key) */
int cd_admin_bootstrap(cd_app_t *app) CD_CHECK;

/*
 * http_auth.c: the admin key's org and id for a presented Authorization
 * header value; answers 401/403 itself and returns CD_ERROR.
 */
int cd_authenticate(cd_request_t *r) CD_CHECK;


/* ---- api_pricing.c ---------------------------------------------------- */

#define CD_PRICE_MAX_USD      1000000        /* per 1M tokens */
#define CD_PRICE_MAX_TOKENS   1000000000LL   /* max_output_tokens */

/* a validated PUT /pricing body; -1 means "not given" where optional */
typedef struct {
    int64_t  input;                 /* nano-USD per 1M tokens */
    int64_t  output;
    int64_t  cached_input;          /* -1: billed as input */
    int64_t  cache_write;           /* -1: billed as input */
    int64_t  max_output_tokens;     /* -1: unknown */
    int64_t  effective_us;          /* since the epoch */
    int      has_effective;         /* 0: from now */
} cd_price_input_t;

/* why a body was refused: the HTTP status, error code and field */
typedef struct {
    unsigned     status;            /* 400 wrong type, 422 bad value */
    const char  *code;
    const char  *field;
    char         message[256];
    char         field_buf[64];     /* a field named at run time
                                       ("allowed_endpoints[2].path"):
                                       field points here then */
} cd_field_error_t;

/* answers err as an invalid_request_error naming its field */
void cd_respond_field_error(cd_request_t *r, const cd_field_error_t *err);

/*
 * A boolean member: absent is -1, true 1, false 0; anything else (null
 * too) fills err (400 invalid_type, "FIELD must be true or false") and
 * returns CD_ERROR.
 */
int cd_bool_parse(json_t *obj, const char *field, int *out,
    cd_field_error_t *err) CD_CHECK;

/* cd_bool_parse, answering 400 itself */
int cd_json_bool(cd_request_t *r, json_t *obj, const char *field, int *out)
    CD_CHECK;

/*
 * A price as a decimal string ("2.50") or a JSON number, into nano-USD
 * per 1M tokens, exactly: a number is accepted only when its shortest
 * decimal form (at most 15 significant digits) has at most 9 decimals.
 * Fills err (field included) and returns CD_ERROR when refused.
 */
int cd_price_json_money(json_t *value, const char *field, int64_t *nano,
    cd_field_error_t *err) CD_CHECK;

/* validates the PUT /pricing body (keys already checked) into in */
int cd_price_body_parse(json_t *body, cd_price_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/*
 * RFC 3339 date-time ("2026-12-01T00:00:00Z", "...T09:30:00.5+02:00")
 * into microseconds since the epoch; digits past microseconds are
 * dropped, a leap second counts as :59.999999. Years 1970 to 9999.
 */
int cd_rfc3339_parse(const char *s, int64_t *us) CD_CHECK;

/*
 * NULL when model is a name the pricing routes take: 1 to CD_NAME_MAX
 * printable UTF-8 characters, "*" only as the whole name (the
 * organisation's fallback price for the provider, SP_PRICE_FALLBACK_MODEL
 * in the snapshot); else the reason, a sentence.
 */
const char *cd_price_model_problem(const char *model);

void cd_api_pricing_list(cd_request_t *r);
void cd_api_pricing_get(cd_request_t *r);
void cd_api_pricing_put(cd_request_t *r);
void cd_api_pricing_delete(cd_request_t *r);


/* fills err and returns CD_ERROR (api_pricing.c) */
int cd_field_error(cd_field_error_t *err, unsigned status, const char *code,
    const char *field, const char *fmt, ...) CD_PRINTF(5, 6);


/* ---- allowed endpoints (api_org.c) ------------------------------------ */

/* "allowed_endpoints" of PUT /org: at most this many, replaced whole */
#define CD_ALLOWED_ENDPOINTS_MAX  64

typedef struct {
    const char  *provider;      /* one of the six; all point into the body */
    const char  *method;        /* sp_endpoint_method_valid() */
    const char  *path;          /* sp_endpoint_pattern_valid() */
} cd_allowed_endpoint_t;

/*
 * Validates an "allowed_endpoints" array into out (n entries, room for
 * CD_ALLOWED_ENDPOINTS_MAX). Each refusal names its entry and member
 * ("allowed_endpoints[2].path: ..."): 400 for a wrong type or an unknown
 * member, 422 for a missing member, an unknown provider or method, a path
 * the gateway cannot match, a repeated entry or too many.
 */
int cd_allowed_endpoints_parse(json_t *value, cd_allowed_endpoint_t *out,
    size_t *n, cd_field_error_t *err) CD_CHECK;


/* ---- rate limits (api_keys.c) ----------------------------------------- */

#define CD_RATE_LIMIT_MAX     4294967295LL    /* the snapshot's uint32 */

/*
 * "rate_limits": {"requests_per_minute": n, "tokens_per_minute": n}, each
 * an integer 0..CD_RATE_LIMIT_MAX (0: none). A member left out is -1
 * (POST: none; PATCH: unchanged); null for the whole object sets both to
 * 0. Fills err (field "rate_limits.requests_per_minute" ...) on refusal.
 */
typedef struct {
    int64_t  rpm;
    int64_t  tpm;
} cd_rate_limits_t;

int cd_rate_limits_parse(json_t *value, cd_rate_limits_t *rl,
    cd_field_error_t *err) CD_CHECK;

/* body's "rate_limits", or CD_ERROR after answering 400/422 */
int cd_rate_limits_of(cd_request_t *r, json_t *body, cd_rate_limits_t *rl)
    CD_CHECK;

/* the longest decimal text of an int64_t, with its NUL */
#define CD_INT_TEXT  24

/* rl as SQL parameters; an absent limit (< 0) is 0, unlimited */
void cd_rate_limits_text(const cd_rate_limits_t *rl, char *rpm, char *tpm);

/* {"requests_per_minute": rpm, "tokens_per_minute": tpm} */
json_t *cd_rate_limits_json(const char *rpm, const char *tpm);


/* ---- api_budgets.c, api_agents.c -------------------------------------- */

#define CD_BUDGET_ID_PREFIX       SP_ID_BUDGET_PREFIX
#define CD_AGENT_ID_PREFIX        SP_ID_AGENT_PREFIX
#define CD_RANDOM_ID_BYTES        SP_ID_RANDOM_BYTES  /* 24 hex characters */
#define CD_BUDGET_THRESHOLDS_MAX  20
#define CD_TIMEZONE_MAX           64

/* a validated budget body (POST, or PATCH merged onto the stored one) */
typedef struct {
    const char  *name;
    uint32_t     scope;                /* SP_BUDGET_SCOPE_* */
    const char  *scope_value;          /* "" for the organisation */
    const char  *provider;             /* NULL: any */
    const char  *model;                /* NULL: any */
    int64_t      limit_nano;
    const char  *period;               /* "daily" ... "total" */
    const char  *timezone;
    uint32_t     action;               /* SP_BUDGET_BLOCK / SP_BUDGET_WARN */
    int          thresholds[CD_BUDGET_THRESHOLDS_MAX];   /* ascending */
    size_t       nthresholds;
} cd_budget_input_t;

/*
 * r->params[0] as an id of kind SP_ID_*: CD_OK, or CD_ERROR after a 404
 * with code not_found (e.g. "budget_not_found") saying what ids look like
 */
int cd_id_param(cd_request_t *r, unsigned kind, const char *not_found);

/* CD_OK when id is of kind SP_ID_*, else a 422 on field saying why */
int cd_id_field(const char *id, unsigned kind, const char *field,
    cd_field_error_t *err);

/* "organization" ... -> SP_BUDGET_SCOPE_*, or -1 */
int cd_budget_scope_parse(const char *name);
/* SP_BUDGET_SCOPE_* -> "organization" ..., NULL when out of range */
const char *cd_budget_scope_name(uint32_t scope);

/* "daily", "weekly", "monthly", "total" -> the same static string */
const char *cd_budget_period_parse(const char *name);

/* 1 when tz looks like an IANA zone name (PostgreSQL has the last word) */
int cd_timezone_wellformed(const char *tz);

/* limit_usd: a decimal string or an integer, > 0, into nano-USD */
int cd_budget_limit_parse(json_t *value, int64_t *nano,
    cd_field_error_t *err) CD_CHECK;

/* thresholds: integer percents 1..100, sorted, duplicates dropped */
int cd_budget_thresholds_parse(json_t *value, int *out, size_t *n,
    cd_field_error_t *err) CD_CHECK;

/* a PostgreSQL int[] text ("{50,80,100}") into out; CD_ERROR if not one */
int cd_budget_thresholds_from_text(const char *text, int *out, size_t *n)
    CD_CHECK;

/* the whole body; strings point into body */
int cd_budget_body_parse(json_t *body, cd_budget_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/* 1 when spent reached percent % of limit (exact, no overflow) */
int cd_budget_threshold_reached(int64_t limit_nano, int64_t spent_nano,
    int percent);

void cd_api_budgets_create(cd_request_t *r);
void cd_api_budgets_list(cd_request_t *r);
void cd_api_budgets_get(cd_request_t *r);
void cd_api_budgets_update(cd_request_t *r);
void cd_api_budgets_delete(cd_request_t *r);
void cd_api_budgets_spend(cd_request_t *r);

void cd_api_agents_create(cd_request_t *r);
void cd_api_agents_list(cd_request_t *r);
void cd_api_agents_get(cd_request_t *r);
void cd_api_agents_update(cd_request_t *r);
void cd_api_agents_delete(cd_request_t *r);
void cd_api_agents_pause(cd_request_t *r);
void cd_api_agents_resume(cd_request_t *r);


/* ---- api_alerts.c ----------------------------------------------------- */

#define CD_ALERT_ID_PREFIX    SP_ID_ALERT_PREFIX
#define CD_ALERT_KEY_MAX      (32 + 2 * 256)


/* 1 when the comma-separated list holds exactly the word name */
int cd_warnings_has(const char *warnings, const char *name);

/*
 * The dedupe key of an unpriced_model alert: "unpriced_model:PROVIDER:
 * MODEL". Provider names hold no ':', so the key is unambiguous. Returns
 * CD_ERROR when it does not fit in outlen.
 */
int cd_alert_unpriced_key(const char *provider, const char *model,
    char *out, size_t outlen) CD_CHECK;

void cd_api_alerts_list(cd_request_t *r);
void cd_api_alerts_get(cd_request_t *r);
void cd_api_alerts_acknowledge(cd_request_t *r);


/* ---- alert rules (api_alerts.c) --------------------------------------- */

#define CD_ALERT_RULE_ID_PREFIX  SP_ID_ALERT_RULE_PREFIX

/* a validated POST /alerts/rules body */
typedef struct {
    const char  *type;         /* "budget_threshold" ... (static) */
    json_t      *params;       /* normalised, defaults filled; owned */
    const char  *url;          /* NULL: no webhook; points into body */
    const char  *format;       /* "json" or "slack" (static), or NULL */
} cd_alert_rule_input_t;

/* "budget_threshold" ... -> the same static string, or NULL */
const char *cd_alert_rule_type_parse(const char *name);

/* the whole body; on success in->params must be json_decref'ed */
int cd_alert_rule_parse(json_t *body, cd_alert_rule_input_t *in,
    cd_field_error_t *err) CD_CHECK;

/* the Slack-compatible payload {"text": "..."} of an alert object */
json_t *cd_alert_slack_payload(json_t *alert);

void cd_api_alert_rules_create(cd_request_t *r);
void cd_api_alert_rules_list(cd_request_t *r);
void cd_api_alert_rules_delete(cd_request_t *r);


/* ---- webhook.c -------------------------------------------------------- */

#define CD_URL_MAX                   2048
#define CD_WEBHOOK_TIMEOUT_MS        5000
#define CD_WEBHOOK_ATTEMPTS          5
#define CD_WEBHOOK_BACKOFF_BASE_MS   1000LL
#define CD_WEBHOOK_BACKOFF_MAX_MS    60000LL

typedef struct {
    int       https;
    int       ipv6;              /* host was [v6] */
    int       explicit_port;
    uint16_t  port;
    char      host[256];
    char      userinfo[256];     /* "user:password" or "" */
    char      path[CD_URL_MAX + 2];   /* path and query, "/" at least */
} cd_url_t;

/* http(s)://[userinfo@]host[:port][/path][?query][#fragment] */
int cd_url_parse(const char *url, cd_url_t *u) CD_CHECK;

/* scheme://host[:port]/path: no userinfo, query or fragment */
void cd_url_redact(const char *url, char *out, size_t outlen);

/* %XX-decodes s into out (NUL-terminated); returns the decoded length */
size_t cd_url_pct_decode(const char *s, char *out, size_t outlen);

/* the wait after failed attempt n (1-based): 1 s, 2 s, 4 s ... capped */
int64_t cd_webhook_backoff_ms(int attempt);

/* the status code of "HTTP/1.x NNN ..." */
int cd_http_status_parse(const char *buf, size_t len, int *status)
    CD_CHECK;

/*
 * POSTs body as application/json within timeout_ms (connect, send and
 * status line). CD_OK with *status set when an answer came, else
 * CD_ERROR with err naming what failed (never the URL's credentials).
 */
int cd_webhook_post(const cd_url_t *u, const char *body, size_t len,
    unsigned timeout_ms, int *status, char *err, size_t errlen) CD_CHECK;


/* ---- alert_jobs.c ----------------------------------------------------- */

#define CD_ALERT_EVAL_MS       15000
#define CD_ALERT_DELIVER_MS    500
#define CD_ALERT_CLAIM_BATCH   16

/*
 * Two threads: the evaluator (every CD_ALERT_EVAL_MS) raises spend_spike
 * and error_rate alerts from audit_logs; the deliverer queues every alert
 * of a type some rule has a webhook for and posts it, retrying with
 * backoff, every attempt recorded in alert_deliveries.
 */
typedef struct {
    pthread_t         eval_thread;
    pthread_t         deliver_thread;
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    int               stop;
    int               eval_started;
    int               deliver_started;
} cd_alert_jobs_t;

int cd_alert_jobs_start(cd_app_t *app) CD_CHECK;
void cd_alert_jobs_stop(cd_app_t *app);


/* ---- the daemon ------------------------------------------------------- */

struct cd_app_s {
    cd_config_t      config;
    uint8_t          master_key[CD_MASTER_KEY_LEN];
    cd_db_pool_t     db;           /* spendpol_system transactions */
    cd_db_pool_t     tenant_db;    /* the admin API's spendpol_app ones */
    cd_redis_t       redis;
    cd_snapshot_t    snapshot;
    cd_ingest_t      ingest;
    cd_spend_t       spend;
    cd_rates_limited_t  rates;
    cd_http_t        http;
    cd_alert_jobs_t  alert_jobs;
};


#endif /* CONTROLD_H */
