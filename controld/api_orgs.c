/*
 * /orgs: the deployment's organisations, for a key with the operator
 * scope (docs/organisations.md). POST creates one with its first admin
 * key, answered in plaintext once; GET lists them with their key counts.
 *
 * These routes run as spendpol_system over the system pool: the orgs
 * table's policy shows spendpol_app its own row only. They touch orgs,
 * and api_keys for the new organisation's first key and the counts;
 * everything else an organisation owns is written through the admin API
 * by its own keys, as spendpol_app under row-level security.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "auth.h"
#include "api.h"


#define CD_ORGS_SUBJECT     "orgs"
#define CD_ORG_PREFIX       "org_"
#define CD_ORG_PREFIX_LEN   4

/*
 * 001 allows 60 characters after "org_"; a request carries the org id in
 * CD_ID_MAX bytes with its NUL, so ids made here stop one short of that
 */
#define CD_ORG_TAIL_MAX     (CD_ID_MAX - 1 - CD_ORG_PREFIX_LEN)

#define CD_ORG_NOT_FOUND                                                     \
    "org_not_found", "id", "no organization with id \"%s\""

#define CD_ORGS_COLUMNS                                                      \
    "o.id, o.name, " CD_SQL_TS("o.created_at") ","                           \
    " (SELECT count(*) FROM api_keys k WHERE k.org_id = o.id"                \
    " AND k.active),"                                                        \
    " (SELECT count(*) FROM api_keys k WHERE k.org_id = o.id"                \
    " AND k.active AND 'admin' = ANY (k.scopes))"

enum {
    CD_ORG_COL_ID = 0,
    CD_ORG_COL_NAME,
    CD_ORG_COL_CREATED,
    CD_ORG_COL_KEYS,
    CD_ORG_COL_ADMIN_KEYS
};

static const char  *cd_orgs_fields[] = { "name", "id", NULL };


/* ---- ids -------------------------------------------------------------- */

/* "org_" and 1 to CD_ORG_TAIL_MAX of [A-Za-z0-9_] */
static int
cd_org_id_valid(const char *id)
{
    size_t  i, len;

    len = strlen(id);

    if (len <= CD_ORG_PREFIX_LEN || len - CD_ORG_PREFIX_LEN > CD_ORG_TAIL_MAX
        || strncmp(id, CD_ORG_PREFIX, CD_ORG_PREFIX_LEN) != 0)
    {
        return 0;
    }

    for (i = CD_ORG_PREFIX_LEN; i < len; i++) {
        if (!isalnum((unsigned char) id[i]) && id[i] != '_') {
            return 0;
        }
    }

    return 1;
}


/*
 * "org_" and the name in lower case, each run of other characters one
 * '_', none at either end; CD_ERROR when nothing of the name is left
 * (the caller then asks for an id)
 */
static int
cd_org_slug(const char *name, char *id)
{
    size_t  n;
    int     gap;

    memcpy(id, CD_ORG_PREFIX, CD_ORG_PREFIX_LEN);
    n = 0;
    gap = 0;

    for ( /* void */ ; *name != '\0' && n < CD_ORG_TAIL_MAX; name++) {
        if (!isalnum((unsigned char) *name) || (unsigned char) *name > 0x7f)
        {
            gap = n > 0;
            continue;
        }

        if (gap) {
            id[CD_ORG_PREFIX_LEN + n++] = '_';
            gap = 0;

            if (n == CD_ORG_TAIL_MAX) {
                break;
            }
        }

        id[CD_ORG_PREFIX_LEN + n++] = (char) tolower((unsigned char) *name);
    }

    while (n > 0 && id[CD_ORG_PREFIX_LEN + n - 1] == '_') {
        n--;
    }

    id[CD_ORG_PREFIX_LEN + n] = '\0';

    return n > 0 ? CD_OK : CD_ERROR;
}


/* ---- answers ---------------------------------------------------------- */

static json_t *
cd_org_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, CD_ORG_COL_ID)
        || cd_json_set_column(obj, "name", res, row, CD_ORG_COL_NAME)
        || cd_json_set_column(obj, "created_at", res, row,
                              CD_ORG_COL_CREATED)
        || json_object_set_new(obj, "active_keys", json_integer(
               strtoll(PQgetvalue(res, row, CD_ORG_COL_KEYS), NULL, 10)))
        || json_object_set_new(obj, "admin_keys", json_integer(
               strtoll(PQgetvalue(res, row, CD_ORG_COL_ADMIN_KEYS), NULL,
                       10))))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/*
 * A transaction as spendpol_system on the system pool, spendpol.org_id
 * set to org_id (NULL: none); NULL after answering 503
 */
static cd_db_conn_t *
cd_orgs_begin(cd_request_t *r, const char *org_id)
{
    cd_db_conn_t  *c;

    c = cd_db_acquire_begin(&r->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            org_id);
    if (c == NULL) {
        cd_respond_db_error(r);
    }

    return c;
}


static void
cd_orgs_end(cd_request_t *r, cd_db_conn_t *c)
{
    cd_db_rollback(c);
    cd_db_release(&r->app->db, c);
}


/* ---- routes ----------------------------------------------------------- */

void
cd_api_orgs_create(cd_request_t *r)
{
    char           id[CD_ID_MAX];
    json_t        *body, *org, *key;
    PGresult      *res;
    const char    *name, *given, *params[2];
    cd_db_conn_t  *c;

    body = cd_request_json(r, cd_orgs_fields);
    if (body == NULL) {
        return;
    }

    if (cd_json_string(r, body, "name", 1, 1, CD_NAME_MAX, &name) != CD_OK
        || cd_json_string(r, body, "id", 0, 1, CD_ID_MAX, &given) != CD_OK)
    {
        json_decref(body);
        return;
    }

    if (given != NULL) {
        if (!cd_org_id_valid(given)) {
            cd_respond_error(r, 422, "invalid_request_error",
                             "invalid_value", "id", "id must be \"org_\" "
                             "followed by 1 to %d letters, digits or '_'",
                             CD_ORG_TAIL_MAX);
            json_decref(body);
            return;
        }

        snprintf(id, sizeof(id), "%s", given);

    } else if (cd_org_slug(name, id) != CD_OK) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "id", "name has no ASCII letter or digit to make "
                         "an id of; give an id (\"org_\" followed by "
                         "letters, digits or '_')");
        json_decref(body);
        return;
    }

    /* spendpol.org_id: the first key's INSERT takes its org from it */
    c = cd_orgs_begin(r, id);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    params[0] = id;
    params[1] = name;

    res = cd_db_exec(c, "INSERT INTO orgs AS o (id, name) VALUES ($1, $2)"
                        " ON CONFLICT (id) DO NOTHING"
                        " RETURNING " CD_ORGS_COLUMNS, 2, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 409, "conflict_error", "org_exists", "id",
                         "an organization with id \"%s\" exists%s", id,
                         given ? "" : "; give another name or an id");
        goto done;
    }

    org = cd_org_json(res, 0);
    PQclear(res);
    key = NULL;

    if (org == NULL) {
        cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                         "out of memory");
        goto done;
    }

    if (cd_key_create_first(r, c, &key) != CD_OK
        || json_object_set_new(org, "admin_key", key) != 0)
    {
        json_decref(org);
        goto done;
    }

    /* the snapshot carries the new key: the proxy serves it at once */
    if (cd_request_commit_respond(r, c, 1, 201, org) == CD_OK) {
        cd_log_info(CD_ORGS_SUBJECT, "created %s by operator key %s", id,
                    r->key_id);
    }

done:

    cd_orgs_end(r, c);
    json_decref(body);
}


void
cd_api_orgs_list(cd_request_t *r)
{
    json_t        *data;
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_orgs_begin(r, NULL);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, "SELECT " CD_ORGS_COLUMNS " FROM orgs o"
                        " ORDER BY o.created_at, o.id", 0, NULL);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_orgs_end(r, c);
        return;
    }

    data = cd_rows_json(res, PQntuples(res), cd_org_json);

    PQclear(res);
    cd_orgs_end(r, c);
    cd_respond(r, 200, data ? json_pack("{s:o}", "data", data) : NULL);
}


void
cd_api_orgs_get(cd_request_t *r)
{
    PGresult      *res;
    const char    *params[1];
    cd_db_conn_t  *c;

    if (!cd_org_id_valid(r->params[0])) {
        cd_respond_error(r, 404, "not_found_error", CD_ORG_NOT_FOUND,
                         r->params[0]);
        return;
    }

    c = cd_orgs_begin(r, NULL);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    res = cd_db_exec(c, "SELECT " CD_ORGS_COLUMNS " FROM orgs o"
                        " WHERE o.id = $1", 1, params);

    if (cd_request_found(r, c, res, CD_ORG_NOT_FOUND, r->params[0])
        == CD_OK)
    {
        cd_respond(r, 200, cd_org_json(res, 0));
    }

    PQclear(res);
    cd_orgs_end(r, c);
}
