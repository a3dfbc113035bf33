/*
 * Migrations: migrations/NNN_name.sql applied in name order, each in its
 * own transaction together with its row in schema_migrations, the whole
 * run under an advisory lock so that several controlds may start at once.
 */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "migrate.h"


#define CD_MIGRATE_SUBJECT  "migrate"
/* any fixed number; "spendpol" in ASCII */
#define CD_MIGRATE_LOCK     "7310595153598492780"
#define CD_MIGRATION_MAX    (4 * 1024 * 1024)


int
cd_migration_name_valid(const char *name)
{
    size_t  len;

    len = strlen(name);

    if (len < 9 || name[3] != '_'
        || name[0] < '0' || name[0] > '9'
        || name[1] < '0' || name[1] > '9'
        || name[2] < '0' || name[2] > '9'
        || strcmp(name + len - 4, ".sql") != 0)
    {
        return 0;
    }

    return 1;
}


static int
cd_migration_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static char *
cd_file_read(const char *path, size_t max)
{
    FILE    *f;
    char    *data;
    size_t   n;

    f = fopen(path, "re");
    if (f == NULL) {
        return NULL;
    }

    data = malloc(max + 1);
    if (data == NULL) {
        fclose(f);
        return NULL;
    }

    n = fread(data, 1, max + 1, f);

    if (ferror(f) || n > max) {
        fclose(f);
        free(data);
        errno = EFBIG;
        return NULL;
    }

    fclose(f);
    data[n] = '\0';

    return data;
}


static int
cd_migration_apply(cd_db_conn_t *c, const char *dir, const char *name)
{
    char        *path, *sql, version[256];
    PGresult    *res;
    const char  *params[1];

    snprintf(version, sizeof(version), "%.*s", (int) (strlen(name) - 4),
             name);
    params[0] = version;

    res = cd_db_exec(c, "SELECT 1 FROM schema_migrations WHERE version = $1",
                     1, params);
    if (res == NULL) {
        return CD_ERROR;
    }

    if (PQntuples(res) > 0) {
        PQclear(res);
        return CD_OK;
    }

    PQclear(res);

    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        return CD_ERROR;
    }

    sql = cd_file_read(path, CD_MIGRATION_MAX);

    if (sql == NULL) {
        cd_log_error(CD_MIGRATE_SUBJECT, "cannot read %s: %s", path,
                     strerror(errno));
        free(path);
        return CD_ERROR;
    }

    if (cd_db_exec_script(c, "BEGIN") != CD_OK) {
        goto failed;
    }

    if (cd_db_exec_script(c, sql) != CD_OK) {
        cd_log_error(CD_MIGRATE_SUBJECT, "%s failed: %s", name,
                     PQerrorMessage(c->pg));
        cd_db_rollback(c);
        goto failed;
    }

    res = cd_db_exec(c, "INSERT INTO schema_migrations (version) "
                        "VALUES ($1)", 1, params);
    if (res == NULL) {
        cd_db_rollback(c);
        goto failed;
    }

    PQclear(res);

    if (cd_db_commit(c) != CD_OK) {
        goto failed;
    }

    cd_log_info(CD_MIGRATE_SUBJECT, "applied %s", name);
    free(sql);
    free(path);

    return CD_OK;

failed:

    free(sql);
    free(path);

    return CD_ERROR;
}


int
cd_migrate(cd_db_pool_t *pool, const char *dir)
{
    int             rc;
    DIR            *d;
    char          **names, **grown;
    size_t          n, cap, i;
    cd_db_conn_t   *c;
    struct dirent  *de;

    d = opendir(dir);
    if (d == NULL) {
        cd_log_error(CD_MIGRATE_SUBJECT, "cannot open migrations directory "
                     "%s: %s", dir, strerror(errno));
        return CD_ERROR;
    }

    names = NULL;
    n = 0;
    cap = 0;
    rc = CD_ERROR;

    while ((de = readdir(d)) != NULL) {
        if (!cd_migration_name_valid(de->d_name)) {
            continue;
        }

        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            grown = realloc(names, cap * sizeof(char *));

            if (grown == NULL) {
                goto done;
            }

            names = grown;
        }

        names[n] = strdup(de->d_name);

        if (names[n] == NULL) {
            goto done;
        }

        n++;
    }

    if (n == 0) {
        cd_log_error(CD_MIGRATE_SUBJECT, "no NNN_name.sql files in %s", dir);
        goto done;
    }

    qsort(names, n, sizeof(char *), cd_migration_compare);

    c = cd_db_acquire(pool, 10000);
    if (c == NULL) {
        goto done;
    }

    /* session lock: held across the per-file transactions */
    if (cd_db_exec_script(c, "SELECT pg_advisory_lock(" CD_MIGRATE_LOCK ")")
        != CD_OK)
    {
        cd_db_release(pool, c);
        goto done;
    }

    if (cd_db_exec_script(c,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        != CD_OK)
    {
        goto unlock;
    }

    for (i = 0; i < n; i++) {
        if (cd_migration_apply(c, dir, names[i]) != CD_OK) {
            goto unlock;
        }
    }

    cd_log_info(CD_MIGRATE_SUBJECT, "schema is current (%zu migrations in "
                "%s)", n, dir);
    rc = CD_OK;

unlock:

    if (rc != CD_OK && strcmp(cd_db_last_sqlstate(c), "42501") == 0) {
        cd_log_error(CD_MIGRATE_SUBJECT, "the migrations' role may not "
                     "change the schema: set SPENDPOL_MIGRATE_DATABASE_URL "
                     "to a URL of the tables' owner (make run: "
                     "spendpol_owner)");
    }

    if (cd_db_exec_script(c, "SELECT pg_advisory_unlock(" CD_MIGRATE_LOCK
                             ")") != CD_OK)
    {
        /* the lock dies with the session: drop it */
        PQfinish(c->pg);
        c->pg = NULL;
    }

    cd_db_release(pool, c);

done:

    closedir(d);

    for (i = 0; i < n; i++) {
        free(names[i]);
    }

    free(names);

    return rc;
}
