/*
 * controld: main() only. Startup order: configuration, directories,
 * master key, PostgreSQL (waiting for it), migrations, bootstrap admin
 * key, first snapshot, HTTP, background threads, then "controld ready".
 * SIGINT and SIGTERM are taken synchronously with sigwait() by this
 * thread; every other thread has them blocked.
 */

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>

#include "controld.h"


#define CD_MAIN_SUBJECT  "main"
#define CD_POOL_SIZE     8


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


static int
cd_main_dirs(cd_config_t *cf)
{
    char  *copy;
    int    rc;

    if (cd_mkdir_p(cf->data_dir, 0700) != CD_OK) {
        fprintf(stderr, "controld: cannot create SPENDPOL_DATA_DIR %s: %s\n",
                cf->data_dir, strerror(errno));
        return CD_ERROR;
    }

    /* nginx workers map the snapshot: the directory is readable */
    if (cd_mkdir_p(cf->snapshot_dir, 0755) != CD_OK) {
        fprintf(stderr, "controld: cannot create SPENDPOL_SNAPSHOT_DIR %s: "
                "%s\n", cf->snapshot_dir, strerror(errno));
        return CD_ERROR;
    }

    copy = strdup(cf->journal_path);
    if (copy == NULL) {
        return CD_ERROR;
    }

    rc = cd_mkdir_p(dirname(copy), 0755);

    if (rc != CD_OK) {
        /* nginx may create it; ingest waits for the file either way */
        cd_log_warn(CD_MAIN_SUBJECT, "cannot create the journal directory "
                    "of %s: %s", cf->journal_path, strerror(errno));
    }

    free(copy);

    return CD_OK;
}


int
main(int argc, char **argv)
{
    int        status;
    char       err[512];
    sigset_t   signals;
    cd_app_t  *app;

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

    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    cd_snapshot_init(app);
    cd_rates_init(app);

    if (cd_redis_init(&app->redis, app->config.redis_url) != CD_OK) {
        cd_log_error(CD_MAIN_SUBJECT, "SPENDPOL_REDIS_URL is not a "
                     "redis://host:port[/db] URL; Redis is disabled");
        cd_redis_close(&app->redis);

        if (cd_redis_init(&app->redis, NULL) != CD_OK) {
            goto done;
        }
    }

    if (cd_main_dirs(&app->config) != CD_OK) {
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

    /* PostgreSQL may still be starting: wait for it, interruptibly */
    while (cd_db_pool_init(&app->db, app->config.database_url, CD_POOL_SIZE)
           != CD_OK)
    {
        cd_log_warn(CD_MAIN_SUBJECT, "waiting for PostgreSQL");

        if (cd_main_wait_signal(&signals, 1000)) {
            status = 0;
            goto done;
        }
    }

    if (cd_migrate(&app->db, app->config.migrations_dir) != CD_OK) {
        cd_log_error(CD_MAIN_SUBJECT, "migrations failed; not starting");
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

    if (cd_admin_bootstrap(app) != CD_OK) {
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
        || cd_alert_jobs_start(app) != CD_OK)
    {
        goto done;
    }

    printf("controld ready api=http://%s%s%s:%u generation=%llu\n",
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
    cd_alert_jobs_stop(app);
    cd_ingest_stop(app);
    cd_spend_stop(app);
    cd_snapshot_stop(app);
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
