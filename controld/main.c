/*
 * controld: main() only. Startup order: configuration, directories,
 * master key, PostgreSQL (waiting for it), migrations, bootstrap admin
 * key, first snapshot, HTTP, background threads, then "controld ready".
 * SIGINT and SIGTERM are taken synchronously with sigwait() by this
 * thread; every other thread has them blocked.
 */

#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"
#include "migrate.h"
#include "prices.h"
#include "outbound.h"
#include "auth.h"
#include "shadow_tail.h"
#include "forecast.h"


#define CD_MAIN_SUBJECT  "main"
#define CD_POOL_SIZE     8
/* the admin API's tenant transactions; the cluster allows 100 in all */
#define CD_TENANT_POOL_SIZE  8


static const char *
cd_main_getenv(const char *name, void *data)
{
    (void) data;
    return getenv(name);
}


/* waits up to ms for SIGINT/SIGTERM; 1 when one arrived */
static int
cd_main_wait_signal(const sigset_t *signals, unsigned ms)
{
    int              sig;
    struct timespec  timeout;

    timeout.tv_sec = ms / 1000;
    timeout.tv_nsec = (long) (ms % 1000) * 1000000;

    sig = sigtimedwait(signals, NULL, &timeout);

    if (sig > 0) {
        cd_log_info(CD_MAIN_SUBJECT, "received %s", strsignal(sig));
        return 1;
    }

    return 0;
}


/*
 * A core dump would hold the master key, provider keys and the plaintext
 * of keys being created. Not dumpable also keeps other processes of our
 * user from reading our memory (ptrace, /proc/PID/mem).
 */
static int
cd_main_no_core_dumps(void)
{
    struct rlimit  rl;

    rl.rlim_cur = 0;
    rl.rlim_max = 0;

    if (setrlimit(RLIMIT_CORE, &rl) != 0
        || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    {
        fprintf(stderr, "controld: cannot disable core dumps: %s\n",
                strerror(errno));
        return CD_ERROR;
    }

    return CD_OK;
}


/*
 * Wipes a secret read once at start: our copy and the environment's
 * string in place, which is also what /proc/PID/environ shows.
 */
static void
cd_main_forget(char **value, const char *name)
{
    char  *env;

    if (*value != NULL) {
        OPENSSL_cleanse(*value, strlen(*value));
        free(*value);
        *value = NULL;
    }

    env = getenv(name);

    if (env != NULL) {
        OPENSSL_cleanse(env, strlen(env));
    }
}


/* a user's name for messages into buf; "?" when it has none */
static const char *
cd_main_user(uid_t uid, char *buf, size_t size)
{
    struct passwd  *pw;

    pw = getpwuid(uid);
    snprintf(buf, size, "%s", pw != NULL ? pw->pw_name : "?");

    return buf;
}


static void cd_main_journal_dir(const cd_config_t *cf);


/* dir with mode, its missing parents 0755 (e.g. /dev/shm: not ours) */
static int
cd_main_mkdir(const char *what, const char *dir, unsigned mode)
{
    int    rc;
    char  *copy;

    copy = strdup(dir);
    if (copy == NULL) {
        fprintf(stderr, "controld: out of memory\n");
        return CD_ERROR;
    }

    rc = cd_mkdir_p(dirname(copy), 0755) == CD_OK
         && (mkdir(dir, mode) == 0 || errno == EEXIST);

    free(copy);

    if (!rc) {
        fprintf(stderr, "controld: cannot create %s %s: %s\n", what, dir,
                strerror(errno));
        return CD_ERROR;
    }

    return CD_OK;
}


/*
 * The snapshot and the spend file steer every nginx worker: whoever can
 * write into their directory can plant a policy (keys, budgets, an old
 * generation). controld makes the directory itself, 0700; one that
 * already exists must be ours and closed to others: 0700, or 0750 when
 * the operator gave the nginx workers' group read access (chgrp). A
 * symbolic link is refused too: its owner could point it elsewhere
 * after this check.
 */
static int
cd_main_snapshot_dir(const char *dir)
{
    char          owner[64], self[64];
    uid_t         uid;
    struct stat   st;

    if (cd_main_mkdir("SPENDPOL_SNAPSHOT_DIR", dir, 0700) != CD_OK) {
        return CD_ERROR;
    }

    if (lstat(dir, &st) != 0) {
        fprintf(stderr, "controld: cannot stat SPENDPOL_SNAPSHOT_DIR %s: "
                "%s\n", dir, strerror(errno));
        return CD_ERROR;
    }

    uid = geteuid();

    if (S_ISDIR(st.st_mode)
        && st.st_uid == uid
        && (st.st_mode & (S_IWGRP | S_IRWXO)) == 0)
    {
        return CD_OK;
    }

    fprintf(stderr, "controld: SPENDPOL_SNAPSHOT_DIR %s is %s owned by %s "
            "(uid %u) with mode %04o; expected a directory owned by "
            "controld's user %s (uid %u) with mode 0700, or 0750 for the "
            "nginx workers' group: nobody else may write there or read it. "
            "Remove it (controld creates it) or fix it with chown and "
            "chmod\n", dir,
            S_ISDIR(st.st_mode) ? "a directory"
                : S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory",
            cd_main_user(st.st_uid, owner, sizeof(owner)),
            (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777),
            cd_main_user(uid, self, sizeof(self)), (unsigned) uid);

    return CD_ERROR;
}


/*
 * A directory root makes for us (missing until now) or a private one
 * (0700) root made before (an older version ran as root): given to the
 * user. Anything else is checked after the switch and refused when it
 * is not ours.
 */
static int
cd_main_own_dir(const char *what, const char *dir, unsigned mode,
    const struct passwd *pw)
{
    int           created;
    struct stat   st;

    created = 0;

    if (lstat(dir, &st) != 0) {
        created = 1;

        if (cd_main_mkdir(what, dir, mode) != CD_OK) {
            return CD_ERROR;
        }

        if (lstat(dir, &st) != 0) {
            fprintf(stderr, "controld: cannot stat %s %s: %s\n", what, dir,
                    strerror(errno));
            return CD_ERROR;
        }
    }

    if (!created
        && (!S_ISDIR(st.st_mode) || st.st_uid != 0
            || (st.st_mode & (S_IRWXG | S_IRWXO))))
    {
        return CD_OK;
    }

    if (chown(dir, pw->pw_uid, pw->pw_gid) != 0 || chmod(dir, mode) != 0) {
        fprintf(stderr, "controld: cannot give %s %s to user %s: %s\n",
                what, dir, pw->pw_name, strerror(errno));
        return CD_ERROR;
    }

    return CD_OK;
}


/*
 * Started as root, controld becomes SPENDPOL_USER (default "spendpol")
 * before it reads a key, opens a socket or connects to the database.
 * While still root it makes the directories that must be the user's:
 * the data dir (0700: master.key, admin.key) and the snapshot dir
 * (0750: its group is the user's primary group, the one the nginx
 * workers run with, so they read what controld publishes and write
 * nothing). A port below 1024 cannot be bound afterwards.
 */
static int
cd_main_drop_privileges(cd_config_t *cf)
{
    const char      *name;
    struct passwd   *pw;

    name = cf->user != NULL ? cf->user : "spendpol";

    if (geteuid() != 0) {
        pw = getpwuid(geteuid());

        if (cf->user != NULL && (pw == NULL || strcmp(pw->pw_name, name)))
        {
            fprintf(stderr, "controld: SPENDPOL_USER=%s is ignored: "
                    "controld was not started as root\n", name);
        }

        return CD_OK;
    }

    pw = getpwnam(name);

    if (pw == NULL) {
        fprintf(stderr, "controld: started as root, controld runs as "
                "SPENDPOL_USER=%s, which does not exist: create it "
                "(useradd --system --user-group --home-dir /nonexistent "
                "--shell /usr/sbin/nologin %s) or set SPENDPOL_USER to "
                "another unprivileged user\n", name, name);
        return CD_ERROR;
    }

    if (pw->pw_uid == 0 || pw->pw_gid == 0) {
        fprintf(stderr, "controld: SPENDPOL_USER=%s has uid %u gid %u: "
                "controld does not run as root; name an unprivileged "
                "user\n", name, (unsigned) pw->pw_uid,
                (unsigned) pw->pw_gid);
        return CD_ERROR;
    }

    if (cd_main_own_dir("SPENDPOL_DATA_DIR", cf->data_dir, 0700, pw)
        != CD_OK
        || cd_main_own_dir("SPENDPOL_SNAPSHOT_DIR", cf->snapshot_dir, 0750,
                           pw) != CD_OK)
    {
        return CD_ERROR;
    }

    cd_main_journal_dir(cf);

    if (initgroups(pw->pw_name, pw->pw_gid) != 0
        || setgid(pw->pw_gid) != 0
        || setuid(pw->pw_uid) != 0)
    {
        fprintf(stderr, "controld: cannot switch to user %s: %s\n",
                pw->pw_name, strerror(errno));
        return CD_ERROR;
    }

    /* the switch must be one way */
    if (setuid(0) == 0 || geteuid() == 0) {
        fprintf(stderr, "controld: still able to become root after "
                "switching to user %s; not starting\n", pw->pw_name);
        return CD_ERROR;
    }

    cd_log_info(CD_MAIN_SUBJECT, "running as user %s (uid %u, gid %u)",
                pw->pw_name, (unsigned) pw->pw_uid, (unsigned) pw->pw_gid);

    /* a change of user resets the dumpable flag */
    return cd_main_no_core_dumps();
}


static int
cd_main_dirs(cd_config_t *cf)
{
    char  self[64];

    if (cd_mkdir_p(cf->data_dir, 0700) != CD_OK) {
        fprintf(stderr, "controld: cannot create SPENDPOL_DATA_DIR %s: %s\n",
                cf->data_dir, strerror(errno));
        return CD_ERROR;
    }

    /* master.key and admin.key are written there */
    if (access(cf->data_dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "controld: SPENDPOL_DATA_DIR %s is not writable by "
                "controld's user %s: %s; give it to that user (chown)\n",
                cf->data_dir, cd_main_user(geteuid(), self, sizeof(self)),
                strerror(errno));
        return CD_ERROR;
    }

    if (cd_main_snapshot_dir(cf->snapshot_dir) != CD_OK) {
        return CD_ERROR;
    }

    cd_main_journal_dir(cf);

    return CD_OK;
}


/*
 * nginx's master (root) creates the journal in it, controld only reads
 * it: made while controld may still be root (after its data dir, which
 * may hold it), and again as its user when it was not (a no-op when it
 * exists). nginx may create it too; ingest waits for the file.
 */
static void
cd_main_journal_dir(const cd_config_t *cf)
{
    char  *copy;

    copy = strdup(cf->journal_path);

    if (copy == NULL || cd_mkdir_p(dirname(copy), 0755) != CD_OK) {
        cd_log_warn(CD_MAIN_SUBJECT, "cannot create the journal directory "
                    "of %s: %s", cf->journal_path, strerror(errno));
    }

    free(copy);
}


/*
 * SPENDPOL_ADMIN_KEY seeds an empty database only. Once an admin key
 * exists, keys are the API's business: re-creating or re-activating the
 * bootstrap key at every start would undo its revocation or rotation
 * at the next restart. Then the variable is dropped, and
 * cd_admin_bootstrap() only checks that an active admin key remains.
 */
static int
cd_main_admin_seed(cd_app_t *app)
{
    char           state[CD_ID_MAX + 16];
    long           admins;
    PGresult      *res;
    cd_db_conn_t  *c;

    if (app->config.admin_key == NULL) {
        return CD_OK;
    }

    c = cd_db_acquire_begin(&app->db, 10000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        return CD_ERROR;
    }

    res = cd_key_hash_exec(c, "SELECT (SELECT count(*) FROM api_keys"
                              " WHERE 'admin' = ANY (scopes)),"
                              " (SELECT id || CASE WHEN active"
                              " THEN ' (active)' ELSE ' (revoked)' END"
                              " FROM api_keys WHERE key_hash = $1)",
                           app->config.admin_key,
                           strlen(app->config.admin_key), 0, NULL);

    if (res == NULL) {
        cd_db_rollback(c);
        cd_db_release(&app->db, c);
        return CD_ERROR;
    }

    admins = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    snprintf(state, sizeof(state), "%s",
             PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&app->db, c);

    if (admins == 0) {
        return CD_OK;
    }

    if (state[0] != '\0') {
        cd_log_info(CD_MAIN_SUBJECT, "SPENDPOL_ADMIN_KEY is key %s and "
                    "stays as the API left it: it only seeds an empty "
                    "database", state);

    } else {
        cd_log_warn(CD_MAIN_SUBJECT, "SPENDPOL_ADMIN_KEY is ignored: it is "
                    "not a key of this database, which already has %ld "
                    "admin keys; it only seeds an empty database (create "
                    "keys through the API)", admins);
    }

    cd_main_forget(&app->config.admin_key, "SPENDPOL_ADMIN_KEY");

    return CD_OK;
}


int
main(int argc, char **argv)
{
    int                 status, migrated;
    char                err[512];
    sigset_t            signals;
    cd_app_t           *app;
    cd_shadow_tail_t   *shadow_tail;
    cd_forecast_job_t  *forecast_job;

    if (argc > 1) {
        fprintf(stderr, "usage: controld (configured by SPENDPOL_* "
                "environment variables)\n");
        return argc == 2 && (strcmp(argv[1], "-h") == 0
                             || strcmp(argv[1], "--help") == 0) ? 0 : 2;
    }

    if (cd_main_no_core_dumps() != CD_OK) {
        return 1;
    }

    /* before any thread: jansson's allocator is process-wide */
    cd_json_wipe_on_free();

    shadow_tail = NULL;
    forecast_job = NULL;
    app = calloc(1, sizeof(cd_app_t));
    if (app == NULL) {
        fprintf(stderr, "controld: out of memory\n");
        return 1;
    }

    status = 1;

    if (cd_config_load(&app->config, cd_main_getenv, NULL, err, sizeof(err))
        != CD_OK)
    {
        fprintf(stderr, "controld: %s\n", err);
        free(app);
        return 2;
    }

    cd_log_level = app->config.log_level;

    /* workers need read at most; nobody but controld writes */
    if (app->config.snapshot_mode & ~0640u) {
        fprintf(stderr, "controld: SPENDPOL_SNAPSHOT_MODE=%04o gives more "
                "than 0640: expected at most owner read-write and group "
                "read, such as 0640 or 0600\n", app->config.snapshot_mode);
        cd_config_free(&app->config);
        free(app);
        return 2;
    }

    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    cd_rates_init(app);

    if (cd_snapshot_init(app) != CD_OK) {
        goto done;
    }

    if (cd_redis_init(&app->redis, app->config.redis_url) != CD_OK) {
        cd_log_error(CD_MAIN_SUBJECT, "SPENDPOL_REDIS_URL is not a "
                     "redis://host:port[/db] URL; Redis is disabled");
        cd_redis_close(&app->redis);

        if (cd_redis_init(&app->redis, NULL) != CD_OK) {
            goto done;
        }
    }

    if (cd_main_drop_privileges(&app->config) != CD_OK
        || cd_main_dirs(&app->config) != CD_OK)
    {
        goto done;
    }

    if (cd_master_key_load(&app->config, app->master_key, err, sizeof(err))
        != CD_OK)
    {
        fprintf(stderr, "controld: %s\n", err);
        goto done;
    }

    cd_main_forget(&app->config.master_key_hex, "SPENDPOL_MASTER_KEY");

    if (app->config.migrations_dir == NULL) {
        app->config.migrations_dir = cd_config_find_migrations();

        if (app->config.migrations_dir == NULL) {
            fprintf(stderr, "controld: no migrations directory found (tried "
                    "./migrations, <binary>/../migrations, "
                    "<binary>/../../migrations, /usr/share/spendpol/"
                    "migrations); set SPENDPOL_MIGRATIONS_DIR\n");
            goto done;
        }
    }

    /*
     * Migrations run as the tables' owner over their own short-lived
     * connection when SPENDPOL_MIGRATE_DATABASE_URL is set, closed before
     * anything is served; the pool logs in as the runtime role.
     */
    migrated = 0;

    if (app->config.migrate_database_url != NULL) {
        int           rc;
        cd_db_pool_t  owner;

        /* PostgreSQL may still be starting: wait for it, interruptibly */
        while (cd_db_pool_init(&owner, app->config.migrate_database_url, 1)
               != CD_OK)
        {
            cd_log_warn(CD_MAIN_SUBJECT, "waiting for PostgreSQL "
                        "(SPENDPOL_MIGRATE_DATABASE_URL)");

            if (cd_main_wait_signal(&signals, 1000)) {
                status = 0;
                goto done;
            }
        }

        rc = cd_migrate(&owner, app->config.migrations_dir);
        cd_db_pool_close(&owner);
        cd_main_forget(&app->config.migrate_database_url,
                       "SPENDPOL_MIGRATE_DATABASE_URL");

        if (rc != CD_OK) {
            cd_log_error(CD_MAIN_SUBJECT, "migrations failed; not starting");
            goto done;
        }

        migrated = 1;
    }

    while (cd_db_pool_init(&app->db, app->config.database_url, CD_POOL_SIZE)
           != CD_OK)
    {
        cd_log_warn(CD_MAIN_SUBJECT, "waiting for PostgreSQL");

        if (cd_main_wait_signal(&signals, 1000)) {
            status = 0;
            goto done;
        }
    }

    if (!migrated
        && cd_migrate(&app->db, app->config.migrations_dir) != CD_OK)
    {
        cd_log_error(CD_MAIN_SUBJECT, "migrations failed; not starting");
        goto done;
    }

    if (cd_db_check_role(&app->db, CD_ROLE_SYSTEM, "SPENDPOL_DATABASE_URL",
                         app->config.database_insecure != 0)
        != CD_OK)
    {
        goto done;
    }

    /*
     * The admin API's tenant statements have a login of their own that
     * can become spendpol_app only: an injected "SET LOCAL ROLE
     * spendpol_system" then fails instead of showing every organisation.
     * Without one they share the runtime role, which the check refuses
     * when it can become both (unless SPENDPOL_DATABASE_INSECURE=1).
     */
    while (cd_db_pool_init(&app->tenant_db,
                           app->config.api_database_url
                           ? app->config.api_database_url
                           : app->config.database_url,
                           CD_TENANT_POOL_SIZE)
           != CD_OK)
    {
        cd_log_warn(CD_MAIN_SUBJECT, "waiting for PostgreSQL "
                    "(SPENDPOL_API_DATABASE_URL)");

        if (cd_main_wait_signal(&signals, 1000)) {
            status = 0;
            goto done;
        }
    }

    if (cd_db_check_role(&app->tenant_db, CD_ROLE_APP,
                         app->config.api_database_url
                         ? "SPENDPOL_API_DATABASE_URL"
                         : "SPENDPOL_DATABASE_URL (the admin API's tenant "
                           "statements too: SPENDPOL_API_DATABASE_URL is "
                           "unset)",
                         app->config.database_insecure != 0)
        != CD_OK)
    {
        goto done;
    }

    if (app->config.prices_file == NULL
        && asprintf(&app->config.prices_file, "%s/data/prices.tsv",
                    app->config.migrations_dir) < 0)
    {
        app->config.prices_file = NULL;
        goto done;
    }

    if (cd_prices_load(&app->db, app->config.prices_file) != CD_OK) {
        cd_log_error(CD_MAIN_SUBJECT, "cannot load the list prices");
        goto done;
    }

    if (cd_main_admin_seed(app) != CD_OK
        || cd_admin_bootstrap(app) != CD_OK)
    {
        cd_log_error(CD_MAIN_SUBJECT, "cannot set up the admin key");
        goto done;
    }

    cd_main_forget(&app->config.admin_key, "SPENDPOL_ADMIN_KEY");

    if (cd_snapshot_publish_now(app) != CD_OK) {
        cd_log_error(CD_MAIN_SUBJECT, "cannot publish the first snapshot to "
                     "%s", app->config.snapshot_dir);
        goto done;
    }

    if (cd_http_start(app) != CD_OK
        || cd_snapshot_start(app) != CD_OK
        || cd_ingest_start(app) != CD_OK
        || cd_spend_start(app) != CD_OK
        || cd_lease_start(app) != CD_OK
        || cd_alert_jobs_start(app) != CD_OK
        || cd_forecast_job_start(app, &forecast_job) != CD_OK
        || cd_shadow_tail_start(app, &shadow_tail) != CD_OK)
    {
        goto done;
    }

    printf("controld ready api=%s://%s%s%s:%u generation=%llu\n",
           app->config.api_tls_cert_pem ? "https" : "http",
           strchr(app->config.api_host, ':') ? "[" : "",
           app->config.api_host,
           strchr(app->config.api_host, ':') ? "]" : "",
           app->http.port,
           (unsigned long long) cd_snapshot_generation(app));
    fflush(stdout);

    while (!cd_main_wait_signal(&signals, 60000)) {
        /* nothing periodic here yet: the threads keep their own time */
    }

    cd_log_info(CD_MAIN_SUBJECT, "stopping");
    status = 0;

done:

    cd_http_stop(app);
    cd_shadow_tail_stop(shadow_tail);
    cd_forecast_job_stop(forecast_job);
    cd_alert_jobs_stop(app);
    cd_lease_stop(app);
    cd_ingest_stop(app);
    cd_spend_stop(app);
    cd_snapshot_stop(app);
    cd_db_pool_close(&app->tenant_db);
    cd_db_pool_close(&app->db);
    cd_redis_close(&app->redis);
    cd_snapshot_destroy(app);
    cd_rates_destroy(app);
    OPENSSL_cleanse(app->master_key, sizeof(app->master_key));
    cd_config_free(&app->config);
    free(app);

    if (status == 0) {
        cd_log_info(CD_MAIN_SUBJECT, "stopped");
    }

    return status;
}
