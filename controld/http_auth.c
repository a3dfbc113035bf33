/*
 * Admin API authentication: the bearer key's hash looked up among the
 * active keys with the scope the route needs (admin, or operator for the
 * organisations); the request learns its org and key.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "auth.h"


#define CD_KEY_HASH_PARAMS_MAX  4


PGresult *
cd_key_hash_exec(cd_db_conn_t *c, const char *sql, const char *key,
    size_t len, int nparams, const char *const *params)
{
    int          i, lengths[CD_KEY_HASH_PARAMS_MAX],
                 formats[CD_KEY_HASH_PARAMS_MAX];
    uint8_t      hash[SP_KEY_HASH_LEN];
    PGresult    *res;
    const char  *all[CD_KEY_HASH_PARAMS_MAX];

    if (nparams + 1 > CD_KEY_HASH_PARAMS_MAX) {
        cd_log_error("auth", "a key statement with %d parameters", nparams);
        return NULL;
    }

    sp_key_hash(key, len, hash);

    all[0] = (const char *) hash;
    lengths[0] = SP_KEY_HASH_LEN;
    formats[0] = 1;

    for (i = 0; i < nparams; i++) {
        all[i + 1] = params[i];
        lengths[i + 1] = 0;
        formats[i + 1] = 0;
    }

    res = cd_db_exec_bin(c, sql, nparams + 1, all, lengths, formats);

    OPENSSL_cleanse(hash, sizeof(hash));

    return res;
}


/* ---- authentication --------------------------------------------------- */

int
cd_authenticate(cd_request_t *r)
{
    return cd_authenticate_scope(r, CD_ROUTE_ADMIN);
}


int
cd_authenticate_scope(cd_request_t *r, unsigned need)
{
    int             rc, col;
    size_t          len;
    PGresult       *res;
    const char     *header, *key;
    cd_db_conn_t   *c;

    header = MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_AUTHORIZATION);

    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0) {
        cd_respond_error(r, 401, "authentication_error", "missing_api_key",
                         NULL, "send an admin key as \"Authorization: Bearer "
                         "sp_key_...\"");
        return CD_ERROR;
    }

    key = header + 7;

    while (*key == ' ') {
        key++;
    }

    len = strlen(key);

    while (len > 0 && key[len - 1] == ' ') {
        len--;
    }

    if (!sp_key_is_wellformed(key, len)) {
        cd_respond_error(r, 401, "authentication_error", "missing_api_key",
                         NULL, "the Authorization header does not hold a "
                         "Spendpol key (\"Bearer sp_key_\" followed by 48 "
                         "hex characters)");
        return CD_ERROR;
    }

    /* across organisations: the key names its own tenant */
    c = cd_db_acquire_begin(&r->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            NULL);
    if (c == NULL) {
        cd_respond_db_error(r);
        return CD_ERROR;
    }

    res = cd_key_hash_exec(c, "SELECT id, org_id, 'admin' = ANY (scopes),"
                              " 'operator' = ANY (scopes)"
                              " FROM api_keys WHERE key_hash = $1 AND active",
                           key, len, 0, NULL);
    rc = CD_ERROR;
    col = need == CD_ROUTE_OPERATOR ? 3 : 2;

    if (res == NULL) {
        cd_respond_db_error(r);

    } else if (PQntuples(res) == 0) {
        cd_respond_error(r, 401, "authentication_error", "invalid_api_key",
                         NULL, "the API key is unknown or revoked");

    } else if (!cd_db_bool(res, 0, col)) {
        cd_respond_error(r, 403, "permission_error", "insufficient_scope",
                         NULL, "this API key lacks the %s scope",
                         col == 3 ? "operator" : "admin");

    } else if (PQgetlength(res, 0, 1) >= (int) sizeof(r->org_id)) {
        /*
         * 001 allows org ids longer than a request holds; cut short, one
         * could name another organisation
         */
        cd_log_error("auth", "key %s: its organisation's id is longer "
                     "than %zu characters; refused", PQgetvalue(res, 0, 0),
                     sizeof(r->org_id) - 1);
        cd_respond_error(r, 403, "permission_error", "org_id_too_long",
                         NULL, "this key's organization id is too long to "
                         "serve; give the organization a shorter id");

    } else {
        snprintf(r->key_id, sizeof(r->key_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(r->org_id, sizeof(r->org_id), "%s", PQgetvalue(res, 0, 1));
        rc = CD_OK;
    }

    PQclear(res);
    cd_db_rollback(c);
    cd_db_release(&r->app->db, c);

    return rc;
}
