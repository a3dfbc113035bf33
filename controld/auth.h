/*
 * Admin and operator keys: the bootstrap key and an organisation's first
 * admin key (api_keys.c), authenticating a request (http_auth.c). Needs
 * controld.h first.
 */

#ifndef CD_AUTH_H
#define CD_AUTH_H


/*
 * sql with $1 the hash (SHA-256, bytea) of key[0..len) and $2... the
 * nparams text params (at most 3); the hash is wiped after
 */
PGresult *cd_key_hash_exec(cd_db_conn_t *c, const char *sql, const char *key,
    size_t len, int nparams, const char *const *params) CD_CHECK;

/*
 * The operator scope: organisations (POST/GET /orgs). controld's alone,
 * beside SP_SCOPE_PROXY and SP_SCOPE_ADMIN; the snapshot never carries
 * it, the proxy has no use for it.
 */
#define CD_SCOPE_OPERATOR     0x80u

/* cd_route_t.admin: the scope a route's key needs */
#define CD_ROUTE_PUBLIC       0
#define CD_ROUTE_ADMIN        1
#define CD_ROUTE_OPERATOR     2

/*
 * the bootstrap key (SPENDPOL_ADMIN_KEY or admin.key): proxy, admin and
 * operator in the default organisation
 */
int cd_admin_bootstrap(cd_app_t *app) CD_CHECK;

/*
 * The first admin key (proxy and admin) of the organisation named by
 * spendpol.org_id in c's transaction, whichever role it runs as; *key is
 * its JSON with the plaintext, shown this once. On failure answers and
 * returns CD_ERROR.
 */
int cd_key_create_first(cd_request_t *r, cd_db_conn_t *c, json_t **key)
    CD_CHECK;

/*
 * The org and id of the key in the Authorization header, which must
 * hold the scope need (CD_ROUTE_ADMIN or CD_ROUTE_OPERATOR); answers
 * 401/403 itself and returns CD_ERROR.
 */
int cd_authenticate_scope(cd_request_t *r, unsigned need) CD_CHECK;

/* cd_authenticate_scope(r, CD_ROUTE_ADMIN) */
int cd_authenticate(cd_request_t *r) CD_CHECK;


#endif /* CD_AUTH_H */
