/*
 * /api-keys: Spendpol keys of the caller's organisation. Only SHA-256
 * hashes are stored; the plaintext is answered once, on create and
 * rotate. Also the bootstrap key and an organisation's first admin key.
 *
 * A key with the operator scope manages the whole deployment's
 * organisations; only an operator key may create or rotate one, so an
 * admin of the default organisation cannot mint itself an operator key (a
 * rotation answers the new plaintext). Revoking one gives nobody anything
 * and stays any admin's right: a leaked bootstrap key must be revocable.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"
#include "auth.h"
#include "api.h"
#include "sp_snapshot.h"


#define CD_KEYS_SUBJECT     "api-keys"
#define CD_KEY_PREFIX_SHOWN 11         /* "sp_key_" + 4 hex */
#define CD_KEY_ID_PREFIX    SP_ID_KEY_PREFIX
#define CD_KEY_ID_BYTES     SP_ID_RANDOM_BYTES

/* the code, field and message of the 404 for the {id} of a path */
#define CD_KEY_NOT_FOUND                                                     \
    "api_key_not_found", "id", "no API key with id \"%s\""

#define CD_KEY_COLUMNS                                                       \
    "id, key_prefix, name, department, project, agent_id, "                  \
    "to_json(scopes)::text, active, " CD_SQL_TS("created_at") ", "           \
    CD_SQL_TS("revoked_at") ", rotated_from, " CD_SQL_US("created_at") ","  \
    " rpm_limit, tpm_limit, attribution_override, require_template"

enum {
    CD_KEY_COL_ID = 0,
    CD_KEY_COL_PREFIX,
    CD_KEY_COL_NAME,
    CD_KEY_COL_DEPARTMENT,
    CD_KEY_COL_PROJECT,
    CD_KEY_COL_AGENT,
    CD_KEY_COL_SCOPES,
    CD_KEY_COL_ACTIVE,
    CD_KEY_COL_CREATED,
    CD_KEY_COL_REVOKED,
    CD_KEY_COL_ROTATED_FROM,
    CD_KEY_COL_CREATED_US,
    CD_KEY_COL_RPM,
    CD_KEY_COL_TPM,
    CD_KEY_COL_ATTRIBUTION_OVERRIDE,
    CD_KEY_COL_REQUIRE_TEMPLATE
};

static const char  *cd_key_fields[] = {
    "name", "department", "project", "agent_id", "scopes", "rate_limits",
    "attribution_override", "require_template", NULL
};

static const char  *cd_key_update_fields[] = {
    "name", "rate_limits", "attribution_override", "require_template", NULL
};


/* ---- rate limits ------------------------------------------------------ */

static int
cd_rate_limit_member(json_t *obj, const char *name, const char *field,
    int64_t *out, cd_field_error_t *err)
{
    json_t     *v;
    json_int_t  n;

    v = json_object_get(obj, name);

    if (v == NULL) {
        *out = -1;
        return CD_OK;
    }

    if (json_is_null(v)) {
        *out = 0;
        return CD_OK;
    }

    if (!json_is_integer(v)) {
        return cd_field_error(err, 400, "invalid_type", field, "%s must be "
                              "an integer (0 for no limit)", field);
    }

    n = json_integer_value(v);

    if (n < 0 || n > CD_RATE_LIMIT_MAX) {
        return cd_field_error(err, 422, "invalid_rate_limit", field,
                              "%s must be between 0 (no limit) and %lld",
                              field, CD_RATE_LIMIT_MAX);
    }

    *out = (int64_t) n;

    return CD_OK;
}


int
cd_rate_limits_parse(json_t *value, cd_rate_limits_t *rl,
    cd_field_error_t *err)
{
    const char  *key;
    json_t      *v;

    rl->rpm = -1;
    rl->tpm = -1;

    if (value == NULL) {
        return CD_OK;
    }

    if (json_is_null(value)) {
        rl->rpm = 0;
        rl->tpm = 0;
        return CD_OK;
    }

    if (!json_is_object(value)) {
        return cd_field_error(err, 400, "invalid_type", "rate_limits",
                              "rate_limits must be an object with "
                              "requests_per_minute and/or "
                              "tokens_per_minute");
    }

    json_object_foreach(value, key, v) {
        if (strcmp(key, "requests_per_minute") != 0
            && strcmp(key, "tokens_per_minute") != 0)
        {
            return cd_field_error(err, 400, "unknown_field", "rate_limits",
                                  "rate_limits.%.64s is not a known field "
                                  "(requests_per_minute, "
                                  "tokens_per_minute)", key);
        }
    }

    if (cd_rate_limit_member(value, "requests_per_minute",
                             "rate_limits.requests_per_minute", &rl->rpm,
                             err) != CD_OK
        || cd_rate_limit_member(value, "tokens_per_minute",
                                "rate_limits.tokens_per_minute", &rl->tpm,
                                err) != CD_OK)
    {
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_rate_limits_text(const cd_rate_limits_t *rl, char *rpm, char *tpm)
{
    snprintf(rpm, CD_INT_TEXT, "%lld",
             (long long) (rl->rpm < 0 ? 0 : rl->rpm));
    snprintf(tpm, CD_INT_TEXT, "%lld",
             (long long) (rl->tpm < 0 ? 0 : rl->tpm));
}


int
cd_rate_limits_of(cd_request_t *r, json_t *body, cd_rate_limits_t *rl)
{
    cd_field_error_t  err;

    if (cd_rate_limits_parse(json_object_get(body, "rate_limits"), rl, &err)
        != CD_OK)
    {
        cd_respond_field_error(r, &err);
        return CD_ERROR;
    }

    return CD_OK;
}


json_t *
cd_rate_limits_json(const char *rpm, const char *tpm)
{
    return json_pack("{s:I, s:I}",
                     "requests_per_minute",
                     (json_int_t) strtoll(rpm ? rpm : "0", NULL, 10),
                     "tokens_per_minute",
                     (json_int_t) strtoll(tpm ? tpm : "0", NULL, 10));
}


int
cd_scopes_parse(json_t *array, uint32_t *bits, size_t *bad_index)
{
    size_t       i;
    json_t      *item;
    const char  *s;

    *bits = 0;

    json_array_foreach(array, i, item) {
        s = json_string_value(item);

        if (s != NULL && strcmp(s, "proxy") == 0) {
            *bits |= SP_SCOPE_PROXY;

        } else if (s != NULL && strcmp(s, "admin") == 0) {
            *bits |= SP_SCOPE_ADMIN;

        } else if (s != NULL && strcmp(s, "operator") == 0) {
            *bits |= CD_SCOPE_OPERATOR;

        } else {
            *bad_index = i;
            return CD_ERROR;
        }
    }

    return CD_OK;
}


/* a text[] literal from constants only; proxy when bits has none */
static const char *
cd_scopes_literal(uint32_t bits)
{
    static const char  *literals[] = {
        "{proxy}", "{proxy}", "{admin}", "{proxy,admin}",
        "{operator}", "{proxy,operator}", "{admin,operator}",
        "{proxy,admin,operator}"
    };

    return literals[((bits & SP_SCOPE_PROXY) ? 1 : 0)
                    | ((bits & SP_SCOPE_ADMIN) ? 2 : 0)
                    | ((bits & CD_SCOPE_OPERATOR) ? 4 : 0)];
}


/*
 * A key with the operator scope is made or rotated by an operator key
 * only (target NULL: a new key with the operator scope).
 * CD_ERROR has answered: 403 naming scopes, or the statement's error.
 */
static int
cd_key_operator_guard(cd_request_t *r, cd_db_conn_t *c, const char *target)
{
    int          target_operator, caller_operator;
    PGresult    *res;
    const char  *params[2];

    params[0] = r->key_id;
    params[1] = target;

    res = cd_db_exec(c, "SELECT coalesce((SELECT 'operator' = ANY (scopes)"
                        " FROM api_keys WHERE id = $1), false),"
                        " coalesce((SELECT 'operator' = ANY (scopes)"
                        " FROM api_keys WHERE id = $2), $2 IS NULL)",
                     2, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    caller_operator = cd_db_bool(res, 0, 0);
    target_operator = cd_db_bool(res, 0, 1);
    PQclear(res);

    if (target_operator && !caller_operator) {
        cd_respond_error(r, 403, "permission_error", "insufficient_scope",
                         "scopes", "only a key with the operator scope may "
                         "%s a key with the operator scope",
                         target ? "rotate" : "create");
        return CD_ERROR;
    }

    return CD_OK;
}


static json_t *
cd_key_json(PGresult *res, int row, const char *plaintext)
{
    json_t  *obj, *scopes, *limits;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    scopes = json_loads(PQgetvalue(res, row, CD_KEY_COL_SCOPES), 0, NULL);
    limits = cd_rate_limits_json(cd_db_value(res, row, CD_KEY_COL_RPM),
                                 cd_db_value(res, row, CD_KEY_COL_TPM));

    if (cd_json_set_column(obj, "id", res, row, CD_KEY_COL_ID)
        || (plaintext && cd_json_set_str(obj, "key", plaintext))
        || cd_json_set_column(obj, "key_prefix", res, row, CD_KEY_COL_PREFIX)
        || cd_json_set_column(obj, "name", res, row, CD_KEY_COL_NAME)
        || cd_json_set_column(obj, "department", res, row,
                              CD_KEY_COL_DEPARTMENT)
        || cd_json_set_column(obj, "project", res, row, CD_KEY_COL_PROJECT)
        || cd_json_set_column(obj, "agent_id", res, row, CD_KEY_COL_AGENT)
        || scopes == NULL
        || json_object_set_new(obj, "scopes", scopes)
        || json_object_set_new(obj, "active",
               json_boolean(cd_db_bool(res, row, CD_KEY_COL_ACTIVE)))
        || json_object_set_new(obj, "attribution_override",
               json_boolean(cd_db_bool(res, row,
                                       CD_KEY_COL_ATTRIBUTION_OVERRIDE)))
        || json_object_set_new(obj, "require_template",
               json_boolean(cd_db_bool(res, row,
                                       CD_KEY_COL_REQUIRE_TEMPLATE)))
        || cd_json_set_column(obj, "created_at", res, row, CD_KEY_COL_CREATED)
        || cd_json_set_column(obj, "revoked_at", res, row, CD_KEY_COL_REVOKED)
        || cd_json_set_column(obj, "rotated_from", res, row,
                              CD_KEY_COL_ROTATED_FROM)
        || limits == NULL)
    {
        json_decref(limits);
        json_decref(obj);
        return NULL;
    }

    if (json_object_set_new(obj, "rate_limits", limits) != 0) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/*
 * Inserts a fresh key into the transaction's org (RLS checks it) and
 * returns its row in *out, the plaintext in plaintext. Only the SHA-256
 * is stored. attribution_override and require_template are "t" or "f".
 * On failure the error is
 * answered.
 */
static int
cd_key_insert(cd_request_t *r, cd_db_conn_t *c, const char *name,
    const char *department, const char *project, const char *agent_id,
    const char *scopes, const char *rotated_from, const char *rpm,
    const char *tpm, const char *attribution_override,
    const char *require_template, PGresult **out, char *plaintext)
{
    int          lengths[13], formats[13];
    char         id[CD_ID_MAX], prefix[CD_KEY_PREFIX_SHOWN + 1];
    uint8_t      hash[SP_KEY_HASH_LEN];
    PGresult    *res;
    const char  *params[13];

    if (sp_key_generate(plaintext) != SP_OK
        || cd_random_id(CD_KEY_ID_PREFIX, CD_KEY_ID_BYTES, id) != CD_OK)
    {
        cd_respond_error(r, 500, "api_error", "no_randomness", NULL,
                         "could not generate a key");
        return CD_ERROR;
    }

    sp_key_hash(plaintext, SP_KEY_LEN, hash);
    memcpy(prefix, plaintext, CD_KEY_PREFIX_SHOWN);
    prefix[CD_KEY_PREFIX_SHOWN] = '\0';

    memset(formats, 0, sizeof(formats));
    memset(lengths, 0, sizeof(lengths));

    params[0] = id;
    params[1] = name;
    params[2] = (const char *) hash;
    lengths[2] = SP_KEY_HASH_LEN;
    formats[2] = 1;
    params[3] = prefix;
    params[4] = department;
    params[5] = project;
    params[6] = agent_id;
    params[7] = scopes;
    params[8] = rotated_from;
    params[9] = rpm;
    params[10] = tpm;
    params[11] = attribution_override;
    params[12] = require_template;

    res = cd_db_exec_bin(c,
              "INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix,"
              " department, project, agent_id, scopes, rotated_from,"
              " rpm_limit, tpm_limit, attribution_override,"
              " require_template)"
              " VALUES ($1, current_setting('spendpol.org_id'), $2, $3, $4,"
              " $5, $6, $7, $8::text[], $9, $10::bigint, $11::bigint,"
              " $12::boolean, $13::boolean)"
              " RETURNING " CD_KEY_COLUMNS,
              13, params, lengths, formats);

    OPENSSL_cleanse(hash, sizeof(hash));

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    *out = res;

    return CD_OK;
}


/*
 * The key's agent must be one of the organisation's; FOR KEY SHARE holds
 * it until commit, so a concurrent DELETE /agents waits and sees the key.
 */
static int
cd_key_agent_exists(cd_request_t *r, cd_db_conn_t *c, const char *agent_id)
{
    int          found;
    PGresult    *res;
    const char  *params[1];

    params[0] = agent_id;
    res = cd_db_exec(c, "SELECT 1 FROM agents WHERE id = $1 FOR KEY SHARE",
                     1, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    found = PQntuples(res) > 0;
    PQclear(res);

    if (!found) {
        cd_respond_error(r, 422, "invalid_request_error", "unknown_agent",
                         "agent_id", "no agent %s in this organization; "
                         "create one with POST /agents", agent_id);
        return CD_ERROR;
    }

    return CD_OK;
}


/*
 * rate_limits, attribution_override and require_template, read by create
 * and update
 */
typedef struct {
    int                override;
    int                require_template;    /* -1: not given */
    cd_rate_limits_t   limits;
    char               rpm[CD_INT_TEXT];
    char               tpm[CD_INT_TEXT];
} cd_key_limits_t;


/* CD_ERROR has answered */
static int
cd_key_limits_of(cd_request_t *r, json_t *body, cd_key_limits_t *k)
{
    if (cd_rate_limits_of(r, body, &k->limits) != CD_OK
        || cd_json_bool(r, body, "attribution_override", &k->override)
           != CD_OK
        || cd_json_bool(r, body, "require_template", &k->require_template)
           != CD_OK)
    {
        return CD_ERROR;
    }

    cd_rate_limits_text(&k->limits, k->rpm, k->tpm);

    return CD_OK;
}


void
cd_api_keys_create(cd_request_t *r)
{
    char              plaintext[SP_KEY_LEN + 1];
    size_t            bad;
    json_t           *body, *scopes_json, *key;
    uint32_t          scopes;
    PGresult         *res;
    const char       *name, *department, *project, *agent_id;
    cd_db_conn_t     *c;
    cd_key_limits_t   k;

    body = cd_request_json(r, cd_key_fields);
    if (body == NULL) {
        return;
    }

    if (cd_json_string(r, body, "name", 1, 1, CD_NAME_MAX, &name) != CD_OK
        || cd_json_string(r, body, "department", 0, 0, CD_NAME_MAX,
                          &department) != CD_OK
        || cd_json_string(r, body, "project", 0, 0, CD_NAME_MAX, &project)
           != CD_OK
        || cd_json_string(r, body, "agent_id", 0, 0, CD_NAME_MAX, &agent_id)
           != CD_OK)
    {
        json_decref(body);
        return;
    }

    if (cd_key_limits_of(r, body, &k) != CD_OK) {
        json_decref(body);
        return;
    }

    scopes = SP_SCOPE_PROXY;
    scopes_json = json_object_get(body, "scopes");

    if (scopes_json != NULL && !json_is_null(scopes_json)) {
        if (!json_is_array(scopes_json)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             "scopes", "scopes must be an array of "
                             "\"proxy\", \"admin\" and \"operator\"");
            json_decref(body);
            return;
        }

        if (cd_scopes_parse(scopes_json, &scopes, &bad) != CD_OK) {
            if (json_is_string(json_array_get(scopes_json, bad))) {
                cd_respond_error(r, 422, "invalid_request_error",
                                 "invalid_scope", "scopes", "scopes[%zu] "
                                 "must be \"proxy\", \"admin\" or "
                                 "\"operator\"", bad);
            } else {
                cd_respond_error(r, 400, "invalid_request_error",
                                 "invalid_type", "scopes", "scopes[%zu] "
                                 "must be a string", bad);
            }

            json_decref(body);
            return;
        }

        if (scopes == 0) {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_scope",
                             "scopes", "scopes must hold at least one of "
                             "\"proxy\", \"admin\" and \"operator\"");
            json_decref(body);
            return;
        }
    }

    if (agent_id != NULL
        && !sp_id_valid(SP_ID_AGENT, agent_id, strlen(agent_id)))
    {
        cd_respond_error(r, 422, "invalid_request_error", "unknown_agent",
                         "agent_id", "agent_id must be the id of an agent "
                         "of this organization (agt_ followed by 24 hex "
                         "characters; create one with POST /agents)");
        json_decref(body);
        return;
    }

    /*
     * cd_key_insert makes the id; revoked keys do not count: revoking
     * one makes room for another
     */
    c = cd_request_begin_create(r, NULL, NULL, "api_keys", "active",
                                r->app->config.max_keys_per_org,
                                "SPENDPOL_MAX_KEYS_PER_ORG", "active keys");
    if (c == NULL) {
        json_decref(body);
        return;
    }

    if ((scopes & CD_SCOPE_OPERATOR)
        && cd_key_operator_guard(r, c, NULL) != CD_OK)
    {
        goto done;
    }

    if (agent_id != NULL && cd_key_agent_exists(r, c, agent_id) != CD_OK) {
        goto done;
    }

    if (cd_key_insert(r, c, name, department, project, agent_id,
                      cd_scopes_literal(scopes), NULL, k.rpm, k.tpm,
                      k.override == 1 ? "t" : "f",
                      k.require_template == 1 ? "t" : "f", &res, plaintext)
        != CD_OK)
    {
        goto done;
    }

    key = cd_key_json(res, 0, plaintext);
    PQclear(res);

    if (cd_request_commit_respond(r, c, 1, 201, key) != CD_OK) {
        goto done;
    }

done:

    OPENSSL_cleanse(plaintext, sizeof(plaintext));
    cd_request_end(r, c);
    json_decref(body);
}


int
cd_key_create_first(cd_request_t *r, cd_db_conn_t *c, json_t **key)
{
    int        rc;
    char       plaintext[SP_KEY_LEN + 1];
    PGresult  *res;

    rc = cd_key_insert(r, c, "first admin", NULL, NULL, NULL,
                       cd_scopes_literal(SP_SCOPE_PROXY | SP_SCOPE_ADMIN),
                       NULL, "0", "0", "f", "f", &res, plaintext);

    if (rc == CD_OK) {
        *key = cd_key_json(res, 0, plaintext);
        PQclear(res);

        if (*key == NULL) {
            cd_respond_error(r, 500, "api_error", "internal_error", NULL,
                             "out of memory");
            rc = CD_ERROR;
        }
    }

    OPENSSL_cleanse(plaintext, sizeof(plaintext));

    return rc;
}


/* a listed key: never a plaintext */
static json_t *
cd_key_list_json(PGresult *res, int row)
{
    return cd_key_json(res, row, NULL);
}


void
cd_api_keys_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_KEY_COLUMNS, "api_keys", ""),
        .default_limit = 100,
        .id_column = CD_KEY_COL_ID,
        .created_us_column = CD_KEY_COL_CREATED_US,
        .row_json = cd_key_list_json
    };

    cd_page_respond(r, &page);
}


static int
cd_key_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_KEY, "api_key_not_found");
}


/* the 404 of every handler that looks a key up by the {id} of its path */
static int
cd_key_found(cd_request_t *r, cd_db_conn_t *c, PGresult *res)
{
    return cd_request_found(r, c, res, CD_KEY_NOT_FOUND, r->params[0]);
}


/*
 * commits and answers with row 0 of res, then logs what was done to the
 * key; a failed commit has answered already and is not logged
 */
static void
cd_key_respond(cd_request_t *r, cd_db_conn_t *c, PGresult *res,
    const char *plaintext, int status, const char *done)
{
    json_t  *key;

    key = cd_key_json(res, 0, plaintext);

    if (cd_request_commit_respond(r, c, 1, status, key) != CD_OK) {
        return;
    }

    cd_log_info(CD_KEYS_SUBJECT, "%s %s org=%s", done, r->params[0],
                r->org_id);
}


void
cd_api_keys_get(cd_request_t *r)
{
    cd_row_respond(r, cd_key_id_param,
                   "SELECT " CD_KEY_COLUMNS " FROM api_keys"
                   " WHERE id = $1",
                   cd_key_list_json, CD_KEY_NOT_FOUND);
}


void
cd_api_keys_revoke(cd_request_t *r)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_key_id_param);
    if (c == NULL) {
        return;
    }

    /* idempotent: a second revoke keeps the first revoked_at */
    res = cd_request_row(r, c, "UPDATE api_keys SET active = false,"
                               " revoked_at = coalesce(revoked_at,"
                               " clock_timestamp()) WHERE id = $1"
                               " RETURNING " CD_KEY_COLUMNS,
                         CD_KEY_NOT_FOUND);

    if (res != NULL) {
        cd_key_respond(r, c, res, NULL, 200, "revoked");
    }

    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_keys_rotate(cd_request_t *r)
{
    char           plaintext[SP_KEY_LEN + 1];
    PGresult      *old, *res, *update;
    const char    *params[1];
    cd_db_conn_t  *c;

    if (cd_key_id_param(r) != CD_OK) {
        return;
    }

    /* no options yet; an empty object is accepted */
    c = cd_request_begin_param(r, cd_request_no_options);
    if (c == NULL) {
        return;
    }

    res = NULL;
    params[0] = r->params[0];

    /* the row lock makes concurrent rotations of one key serial */
    old = cd_db_exec(c, "SELECT name, department, project, agent_id,"
                        " scopes::text, active, rpm_limit, tpm_limit,"
                        " attribution_override, require_template"
                        " FROM api_keys WHERE id = $1 FOR UPDATE", 1,
                        params);

    if (cd_key_found(r, c, old) != CD_OK
        || cd_key_operator_guard(r, c, r->params[0]) != CD_OK)
    {
        goto done;
    }

    if (!cd_db_bool(old, 0, 5)) {
        cd_respond_error(r, 409, "conflict_error", "key_revoked", "id",
                         "API key %s is revoked; only an active key can be "
                         "rotated", r->params[0]);
        goto done;
    }

    update = cd_db_exec(c, "UPDATE api_keys SET active = false,"
                           " revoked_at = clock_timestamp() WHERE id = $1",
                        1, params);
    if (update == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    PQclear(update);

    if (cd_key_insert(r, c, cd_db_value(old, 0, 0), cd_db_value(old, 0, 1),
                      cd_db_value(old, 0, 2), cd_db_value(old, 0, 3),
                      cd_db_value(old, 0, 4), r->params[0],
                      cd_db_value(old, 0, 6), cd_db_value(old, 0, 7),
                      cd_db_bool(old, 0, 8) ? "t" : "f",
                      cd_db_bool(old, 0, 9) ? "t" : "f", &res, plaintext)
        != CD_OK)
    {
        res = NULL;
        goto done;
    }

    cd_key_respond(r, c, res, plaintext, 201, "rotated");

done:

    OPENSSL_cleanse(plaintext, sizeof(plaintext));
    PQclear(old);
    PQclear(res);
    cd_request_end(r, c);
}


/*
 * PATCH /api-keys/{id}: name, rate_limits, attribution_override and
 * require_template; what is left out stays
 */
void
cd_api_keys_update(cd_request_t *r)
{
    json_t           *body, *key;
    PGresult         *res;
    const char       *name, *params[6];
    cd_db_conn_t     *c;
    cd_key_limits_t   k;

    if (cd_key_id_param(r) != CD_OK) {
        return;
    }

    body = cd_request_json(r, cd_key_update_fields);
    if (body == NULL) {
        return;
    }

    if (cd_json_string(r, body, "name", 0, 1, CD_NAME_MAX, &name) != CD_OK) {
        json_decref(body);
        return;
    }

    if (cd_key_limits_of(r, body, &k) != CD_OK) {
        json_decref(body);
        return;
    }

    params[0] = r->params[0];
    params[1] = name;
    params[2] = k.limits.rpm < 0 ? NULL : k.rpm;
    params[3] = k.limits.tpm < 0 ? NULL : k.tpm;
    params[4] = k.override < 0 ? NULL : k.override ? "t" : "f";
    params[5] = k.require_template < 0 ? NULL
                : k.require_template ? "t" : "f";

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    res = cd_db_exec(c, "UPDATE api_keys SET name = coalesce($2, name),"
                        " rpm_limit = coalesce($3::bigint, rpm_limit),"
                        " tpm_limit = coalesce($4::bigint, tpm_limit),"
                        " attribution_override = coalesce($5::boolean,"
                        " attribution_override),"
                        " require_template = coalesce($6::boolean,"
                        " require_template)"
                        " WHERE id = $1 RETURNING " CD_KEY_COLUMNS,
                     6, params);

    if (cd_key_found(r, c, res) == CD_OK) {
        key = cd_key_json(res, 0, NULL);

        if (cd_request_commit_respond(r, c, 1, 200, key) == CD_OK) {
            /* who may re-attribute spend is worth a line of its own */
            cd_log_info(CD_KEYS_SUBJECT, "updated %s org=%s%s", r->params[0],
                        r->org_id, k.override < 0 ? ""
                        : k.override ? " attribution_override=true"
                        : " attribution_override=false");
        }
    }

    PQclear(res);
    cd_request_end(r, c);
    json_decref(body);
}


/* ---- the bootstrap admin key ------------------------------------------ */

static int
cd_admin_ensure(cd_db_conn_t *c, const char *plaintext, int *created)
{
    char         id[CD_ID_MAX], prefix[CD_KEY_PREFIX_SHOWN + 1];
    size_t       len;
    PGresult    *res;
    const char  *params[2];

    len = strlen(plaintext);

    /* an existing row is made an active proxy+admin+operator key again */
    res = cd_key_hash_exec(c, "UPDATE api_keys SET active = true,"
                              " revoked_at = NULL,"
                              " scopes = '{proxy,admin,operator}'"
                              " WHERE key_hash = $1 AND org_id = '"
                              CD_DEFAULT_ORG "' RETURNING id, org_id",
                           plaintext, len, 0, NULL);
    if (res == NULL) {
        return CD_ERROR;
    }

    *created = PQntuples(res) == 0;

    if (!*created) {
        cd_log_info("bootstrap", "admin key %s of %s is active",
                    PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        PQclear(res);
        return CD_OK;
    }

    PQclear(res);

    if (cd_random_id(CD_KEY_ID_PREFIX, CD_KEY_ID_BYTES, id) != CD_OK) {
        return CD_ERROR;
    }

    memcpy(prefix, plaintext, CD_KEY_PREFIX_SHOWN);
    prefix[CD_KEY_PREFIX_SHOWN] = '\0';
    params[0] = id;
    params[1] = prefix;

    res = cd_key_hash_exec(c, "INSERT INTO api_keys (id, org_id, name,"
                              " key_hash, key_prefix, scopes)"
                              " VALUES ($2, '" CD_DEFAULT_ORG "',"
                              " 'bootstrap admin', $1, $3,"
                              " '{proxy,admin,operator}')",
                           plaintext, len, 2, params);
    if (res == NULL) {
        if (strcmp(cd_db_last_sqlstate(c), "23505") == 0) {
            cd_log_error("bootstrap", "SPENDPOL_ADMIN_KEY is already a key "
                         "of another organisation; choose another key");
        }

        return CD_ERROR;
    }

    PQclear(res);
    cd_log_info("bootstrap", "created admin key %s in " CD_DEFAULT_ORG, id);

    return CD_OK;
}


int
cd_admin_bootstrap(cd_app_t *app)
{
    int            rc, created, need;
    char           path[4096], plaintext[SP_KEY_LEN + 2];
    PGresult      *res;
    cd_db_conn_t  *c;
    struct stat    st;

    snprintf(path, sizeof(path), "%s/admin.key", app->config.data_dir);

    if (app->config.admin_key == NULL && stat(path, &st) == 0) {
        return CD_OK;
    }

    c = cd_db_acquire(&app->db, 10000);
    if (c == NULL) {
        return CD_ERROR;
    }

    rc = CD_ERROR;
    plaintext[0] = '\0';

    if (cd_db_begin(c, CD_ROLE_SYSTEM, NULL) != CD_OK) {
        goto done;
    }

    /* serialises controlds that bootstrap one database at once */
    res = cd_db_exec(c, "SELECT pg_advisory_xact_lock(7310595153598492781)",
                     0, NULL);
    if (res == NULL) {
        goto done;
    }

    PQclear(res);

    if (app->config.admin_key != NULL) {
        if (cd_admin_ensure(c, app->config.admin_key, &created) != CD_OK) {
            goto done;
        }

        rc = cd_db_commit(c);
        goto done;
    }

    res = cd_db_exec(c, "SELECT 1 FROM api_keys WHERE org_id = '"
                        CD_DEFAULT_ORG "' AND active"
                        " AND 'admin' = ANY (scopes) LIMIT 1", 0, NULL);
    if (res == NULL) {
        goto done;
    }

    need = PQntuples(res) == 0;
    PQclear(res);

    if (!need) {
        rc = CD_OK;
        goto done;
    }

    if (sp_key_generate(plaintext) != SP_OK
        || cd_admin_ensure(c, plaintext, &created) != CD_OK)
    {
        goto done;
    }

    plaintext[SP_KEY_LEN] = '\n';

    if (cd_write_new_file(path, plaintext, SP_KEY_LEN + 1, 0600) != CD_OK) {
        cd_log_error("bootstrap", "cannot write %s: %s", path,
                     strerror(errno));
        goto done;
    }

    if (cd_db_commit(c) != CD_OK) {
        unlink(path);
        goto done;
    }

    plaintext[SP_KEY_LEN] = '\0';

    /* on a terminal only: a redirected stdout is a log file */
    if (isatty(STDOUT_FILENO)) {
        printf("admin key: %s\n", plaintext);
        fflush(stdout);
    }

    cd_log_info("bootstrap", "the admin key is in %s (mode 0600)", path);
    rc = CD_OK;

done:

    OPENSSL_cleanse(plaintext, sizeof(plaintext));
    cd_db_rollback(c);
    cd_db_release(&app->db, c);

    return rc;
}
