/*
 * Admin keys: the bootstrap key (api_keys.c) and authenticating a
 * request (http_auth.c). Needs controld.h first.
 */

#ifndef CD_AUTH_H
#define CD_AUTH_H


/*
 * sql with $1 the hash (SHA-256, bytea) of key[0..len) and $2... the
 * nparams text params (at most 3); the hash is wiped after
 */
PGresult *cd_key_hash_exec(cd_db_conn_t *c, const char *sql, const char *key,
    size_t len, int nparams, const char *const *params) CD_CHECK;

/* the bootstrap admin key (SPENDPOL_ADMIN_KEY or admin.key) */
int cd_admin_bootstrap(cd_app_t *app) CD_CHECK;

/*
 * The admin key's org and id for a presented Authorization
 * header value; answers 401/403 itself and returns CD_ERROR.
 */
int cd_authenticate(cd_request_t *r) CD_CHECK;


#endif /* CD_AUTH_H */
