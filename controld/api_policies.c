/*
 * /policies: an organisation's policies (GET/POST /policies, GET/PATCH/
 * DELETE /policies/{id}) and the dry run POST /policies/evaluate
 * (issue 14).
 *
 * A policy is validated by sp_policy_validate(), the code the module's
 * compiler trusts, so the admin API never stores a policy the proxy
 * would skip. It is stored whole (but for id and the times, columns) in
 * policy (jsonb); kind, action, scope and enabled are generated columns
 * of it (migration 021), for the list's filters. The snapshot carries an
 * organisation's enabled policies as one JSON array (CD_POLICIES_JSON);
 * /policies/evaluate compiles the same array with sp_policy_compile()
 * and evaluates it with sp_policy_evaluate() after the module's
 * attribution (stage 4), so it gives the module's answer.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "controld.h"
#include "api.h"
#include "sp_budget.h"
#include "sp_endpoint.h"
#include "sp_policy.h"
#include "sp_tokenize.h"


#define CD_POLICIES_SUBJECT   "policies"
#define CD_POLICY_ID_PREFIX   SP_ID_POLICY_PREFIX

/*
 * What the module reserves for a request without an output limit when
 * the model's price names none (NGX_HTTP_SPENDPOL_DEFAULT_MAX_OUTPUT):
 * the worst case a limits policy compares with must be the module's.
 */
#define CD_POLICY_DEFAULT_MAX_OUTPUT  4096

#define CD_POLICY_COLUMNS                                                    \
    "id, policy::text, " CD_SQL_TS("created_at") ", "                        \
    CD_SQL_TS("updated_at")

enum {
    CD_POLICY_ID = 0, CD_POLICY_POLICY, CD_POLICY_CREATED, CD_POLICY_UPDATED
};

#define CD_POLICY_NOT_FOUND                                                  \
    "policy_not_found", "id", "no policy with id \"%s\""

/* members made by controld, not stored in policy */
static const char  *cd_policy_column_members[] = {
    "id", "created_at", "updated_at", NULL
};

static const char  *cd_policy_evaluate_fields[] = {
    "api_key_id", "department", "project", "agent_id", "headers",
    "provider", "model", "body", "body_text", "at", "policies", NULL
};

static const char  *cd_policy_kinds[] = {
    "model", "limits", "attribution", "pii", "pattern", "time_window", NULL
};

static const char  *cd_policy_scope_types[] = {
    "organization", "api_key", "agent", "department", "project", NULL
};


/* ---- validation (pure, unit tested) ----------------------------------- */

int
cd_policy_body_parse(json_t *body, const char *prefix, json_t **policy,
    cd_field_error_t *err)
{
    int          rc;
    char        *text, field[sizeof(err->field_buf)], why[256];
    json_t      *copy, *value;
    const char  *name, *problem, **member;

    *policy = NULL;

    value = json_object_get(body, "name");

    if (value == NULL || json_is_null(value)) {
        snprintf(err->field_buf, sizeof(err->field_buf), "%sname", prefix);
        return cd_field_error(err, 422, "missing_field", err->field_buf,
                              "%s is required: a name for the policy, 1 to "
                              CD_STRINGIFY(CD_NAME_MAX) " characters",
                              err->field_buf);
    }

    if (json_is_string(value)) {
        name = json_string_value(value);
        problem = cd_validate_text(name, 1, CD_NAME_MAX);

        if (problem != NULL || strlen(name) != json_string_length(value)
            || !cd_utf8_valid(name, strlen(name)))
        {
            snprintf(err->field_buf, sizeof(err->field_buf), "%sname",
                     prefix);
            return cd_field_error(err, 422, "validation_error",
                                  err->field_buf, "%s must be 1 to "
                                  CD_STRINGIFY(CD_NAME_MAX) " printable "
                                  "UTF-8 characters", err->field_buf);
        }
    }

    copy = json_deep_copy(body);
    if (copy == NULL) {
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    for (member = cd_policy_column_members; *member != NULL; member++) {
        json_object_del(copy, *member);
    }

    /*
     * The defaults written down, so that the stored policy, the list's
     * filters (generated columns) and the module read one value.
     */
    if (json_object_get(copy, "enabled") == NULL
        && json_object_set_new(copy, "enabled", json_true()) != 0)
    {
        json_decref(copy);
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    if (json_object_get(copy, "scope") == NULL
        && json_object_set_new(copy, "scope",
                               json_pack("{s:s}", "type", "organization"))
           != 0)
    {
        json_decref(copy);
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    /* the whole policy as the module's compiler will see it */
    text = json_dumps(copy, JSON_COMPACT);
    if (text == NULL) {
        json_decref(copy);
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    field[0] = '\0';
    why[0] = '\0';
    rc = sp_policy_validate(text, strlen(text), field, sizeof(field), why,
                            sizeof(why));
    free(text);

    if (rc != SP_OK) {
        json_decref(copy);
        snprintf(err->field_buf, sizeof(err->field_buf), "%s%s", prefix,
                 field);

        /* a regex PCRE2 refused: its message and offset are in why */
        return cd_field_error(err, 422,
                              strncmp(field, "patterns[", 9) == 0
                              ? "invalid_pattern" : "validation_error",
                              err->field_buf[0] ? err->field_buf : NULL,
                              "%s%s%s", err->field_buf,
                              err->field_buf[0] ? ": " : "",
                              why[0] ? why : "not a valid policy");
    }

    *policy = copy;

    return CD_OK;
}


/* ---- policy responses -------------------------------------------------- */

/* a policies row (CD_POLICY_COLUMNS) as the API shows it */
static json_t *
cd_policy_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_loads(PQgetvalue(res, row, CD_POLICY_POLICY), 0, NULL);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, CD_POLICY_ID)
        || cd_json_set_column(obj, "created_at", res, row, CD_POLICY_CREATED)
        || cd_json_set_column(obj, "updated_at", res, row, CD_POLICY_UPDATED))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* {id} of the path: "pol_" and 24 lowercase hex digits, else 404 */
static int
cd_policy_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_POLICY, "policy_not_found");
}


/*
 * A key or agent scope names one of the organisation's (row-level
 * security hides the others'): 422 naming scope.value otherwise, as
 * budgets answer.
 */
static int
cd_policy_scope_exists(cd_request_t *r, cd_db_conn_t *c, json_t *policy)
{
    json_t      *scope;
    PGresult    *res;
    const char  *type, *value, *sql, *what, *params[1];

    scope = json_object_get(policy, "scope");
    type = json_string_value(json_object_get(scope, "type"));
    value = json_string_value(json_object_get(scope, "value"));

    if (type == NULL || value == NULL) {
        return CD_OK;
    }

    if (strcmp(type, "api_key") == 0) {
        sql = "SELECT 1 FROM api_keys WHERE id = $1";
        what = "API key";

    } else if (strcmp(type, "agent") == 0) {
        sql = "SELECT 1 FROM agents WHERE id = $1 FOR KEY SHARE";
        what = "agent";

    } else {
        return CD_OK;
    }

    params[0] = value;
    res = cd_db_exec(c, sql, 1, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 422, "invalid_request_error",
                         strcmp(type, "agent") == 0
                         ? "unknown_agent" : "unknown_api_key",
                         "scope.value", "scope.value: no %s %.64s in this "
                         "organization", what, value);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


/*
 * Writes policy with sql ($1 id, $2 policy; RETURNING CD_POLICY_COLUMNS),
 * commits, publishes and answers the policy.
 */
static void
cd_policy_store(cd_request_t *r, cd_db_conn_t *c, const char *id,
    json_t *policy, const char *sql, unsigned status, const char *what)
{
    char        *text;
    json_t      *json;
    PGresult    *res;
    const char  *params[2];

    if (cd_policy_scope_exists(r, c, policy) != CD_OK) {
        return;
    }

    text = json_dumps(policy, JSON_COMPACT);
    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return;
    }

    params[0] = id;
    params[1] = text;

    res = cd_db_exec(c, sql, 2, params);
    free(text);

    if (cd_request_found(r, c, res, CD_POLICY_NOT_FOUND, id) != CD_OK) {
        PQclear(res);
        return;
    }

    json = cd_policy_json(res, 0);
    PQclear(res);

    if (json == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return;
    }

    if (cd_request_commit_respond(r, c, 1, status, json) == CD_OK) {
        cd_log_info(CD_POLICIES_SUBJECT, "%s policy %s org=%s by %s", what,
                    id, r->org_id, r->key_id);
    }
}


void
cd_api_policies_create(cd_request_t *r)
{
    char              id[CD_ID_MAX];
    json_t           *body, *policy;
    cd_db_conn_t     *c;
    cd_field_error_t  err;

    body = cd_request_json(r, NULL);
    if (body == NULL) {
        return;
    }

    if (cd_policy_body_parse(body, "", &policy, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    c = cd_request_begin_create(r, CD_POLICY_ID_PREFIX, id, "policies", NULL,
                                SP_POLICY_MAX, "SP_POLICY_MAX", "policies");
    if (c != NULL) {
        cd_policy_store(r, c, id, policy,
                        "INSERT INTO policies (id, org_id, policy)"
                        " VALUES ($1, current_setting('spendpol.org_id'),"
                        " $2::jsonb) RETURNING " CD_POLICY_COLUMNS, 201,
                        "created");
        cd_request_end(r, c);
    }

    json_decref(policy);
    json_decref(body);
}


/* a list filter: absent NULL; one of values, else 400 naming it */
static int
cd_policy_filter(cd_request_t *r, const char *name, const char **values,
    const char **out)
{
    char    expected[256];
    size_t  i, pos;

    *out = cd_query(r, name);

    if (*out == NULL) {
        return CD_OK;
    }

    pos = 0;
    expected[0] = '\0';

    for (i = 0; values[i] != NULL; i++) {
        if (strcmp(*out, values[i]) == 0) {
            return CD_OK;
        }

        if (pos < sizeof(expected)) {
            pos += (size_t) snprintf(expected + pos, sizeof(expected) - pos,
                                     "%s%s", i ? ", " : "", values[i]);
        }
    }

    cd_respond_error(r, 400, "invalid_request_error", "invalid_value", name,
                     "%s must be one of %s", name, expected);

    return CD_ERROR;
}


/* oldest first: the order the snapshot carries (enabled ones) */
void
cd_api_policies_list(cd_request_t *r)
{
    json_t        *data;
    PGresult      *res;
    const char    *params[3];
    cd_db_conn_t  *c;

    static const char  *booleans[] = { "true", "false", NULL };

    if (cd_policy_filter(r, "kind", cd_policy_kinds, &params[0]) != CD_OK
        || cd_policy_filter(r, "scope_type", cd_policy_scope_types,
                            &params[1]) != CD_OK
        || cd_policy_filter(r, "enabled", booleans, &params[2]) != CD_OK)
    {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = cd_db_exec(c, "SELECT " CD_POLICY_COLUMNS " FROM policies"
                        " WHERE ($1::text IS NULL OR kind = $1)"
                        " AND ($2::text IS NULL OR scope_type = $2)"
                        " AND ($3::boolean IS NULL OR enabled = $3)"
                        " ORDER BY created_at, id", 3, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    data = cd_rows_json(res, PQntuples(res), cd_policy_json);

    PQclear(res);
    cd_request_end(r, c);
    cd_respond(r, 200, data ? json_pack("{s:o}", "data", data) : NULL);
}


void
cd_api_policies_get(cd_request_t *r)
{
    cd_row_respond(r, cd_policy_id_param,
                   "SELECT " CD_POLICY_COLUMNS " FROM policies"
                   " WHERE id = $1", cd_policy_json, CD_POLICY_NOT_FOUND);
}


/*
 * PATCH merges the members given onto the stored policy (a member set to
 * null is removed: optional ones take their defaults) and validates the
 * merged policy as a POST would. Objects and lists (scope, entities,
 * patterns, ...) are replaced whole when given.
 */
void
cd_api_policies_update(cd_request_t *r)
{
    json_t            *patch, *merged, *value, *policy;
    PGresult          *old;
    const char        *key, *params[1];
    cd_db_conn_t      *c;
    cd_field_error_t   err;

    if (cd_policy_id_param(r) != CD_OK) {
        return;
    }

    patch = cd_request_json(r, NULL);
    if (patch == NULL) {
        return;
    }

    json_object_del(patch, "id");
    json_object_del(patch, "created_at");
    json_object_del(patch, "updated_at");

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(patch);
        return;
    }

    merged = NULL;
    policy = NULL;
    params[0] = r->params[0];

    old = cd_db_exec(c, "SELECT " CD_POLICY_COLUMNS " FROM policies"
                        " WHERE id = $1 FOR UPDATE", 1, params);
    if (cd_request_found(r, c, old, CD_POLICY_NOT_FOUND, r->params[0])
        != CD_OK)
    {
        goto done;
    }

    merged = cd_policy_json(old, 0);

    if (merged == NULL || json_object_update(merged, patch) != 0) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    json_object_foreach(patch, key, value) {
        if (json_is_null(value) && strcmp(key, "name") != 0) {
            json_object_del(merged, key);
        }
    }

    if (cd_policy_body_parse(merged, "", &policy, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    cd_policy_store(r, c, r->params[0], policy,
                    "UPDATE policies SET policy = $2::jsonb,"
                    " updated_at = clock_timestamp()"
                    " WHERE id = $1 RETURNING " CD_POLICY_COLUMNS, 200,
                    "updated");

done:

    PQclear(old);
    json_decref(policy);
    json_decref(merged);
    json_decref(patch);
    cd_request_end(r, c);
}


void
cd_api_policies_delete(cd_request_t *r)
{
    if (cd_delete_respond(r, cd_policy_id_param,
                          "DELETE FROM policies WHERE id = $1",
                          CD_POLICY_NOT_FOUND) == CD_OK)
    {
        cd_log_info(CD_POLICIES_SUBJECT, "deleted policy %s org=%s by %s",
                    r->params[0], r->org_id, r->key_id);
    }
}


/* ---- POST /policies/evaluate ------------------------------------------ */

/* what the worst-case callback reads */
typedef struct {
    cd_db_conn_t       *conn;
    const char         *org_id;
    const char         *provider;
    const char         *model;
    sp_provider_e       provider_id;
    const char         *body;
    size_t              body_len;
    sp_request_info_t  *info;
    int                 failed;       /* a statement failed */
} cd_policy_eval_t;


/*
 * The module's prompt tokenizers (ngx_http_spendpol_tokenizer_init()),
 * built on the first dry run that prices a request rather than at
 * start: most controlds never need them. An encoding that cannot be
 * built leaves its models at the bytes bound, and says so once.
 */
static pthread_once_t  cd_policy_tok_once = PTHREAD_ONCE_INIT;
static sp_tok_enc_t   *cd_policy_tok_enc[SP_TOK_ENCODINGS];


static void
cd_policy_tok_init(void)
{
    char               err[256];
    sp_tok_encoding_e  e;

    static const sp_tok_vocab_t  *vocabs[SP_TOK_ENCODINGS] = {
        &sp_tok_vocab_o200k_base, &sp_tok_vocab_cl100k_base
    };

    for (e = 0; e < SP_TOK_ENCODINGS; e++) {
        err[0] = '\0';
        cd_policy_tok_enc[e] = sp_tok_enc_create(e, vocabs[e], err,
                                                 sizeof(err));

        if (cd_policy_tok_enc[e] == NULL) {
            cd_log_warn(CD_POLICIES_SUBJECT, "cannot build the %s prompt "
                        "tokenizer (%s): /policies/evaluate bounds those "
                        "prompts by their bytes", vocabs[e]->name, err);
        }
    }
}


/*
 * The module's ngx_http_spendpol_count_prompt(): OpenAI's models (an
 * Azure deployment as the model its alias runs) counted exactly, the
 * others left to the bytes bound. A failure to count leaves the bound
 * too, as in the module.
 */
static int
cd_policy_eval_count_prompt(cd_policy_eval_t *e)
{
    int                      rc, i;
    char                     model[SP_FIELD_LEN];
    PGresult                *res;
    const char              *params[2];
    sp_request_tokenizer_t   tokenizer;

    snprintf(model, sizeof(model), "%s", e->model);

    if (e->provider_id == SP_PROVIDER_AZURE) {
        params[0] = e->provider;
        params[1] = model;
        res = cd_db_exec(e->conn, "SELECT model FROM model_aliases"
                                  " WHERE provider = $1 AND alias = $2", 2,
                         params);
        if (res == NULL) {
            return CD_ERROR;
        }

        if (PQntuples(res) == 1) {
            snprintf(model, sizeof(model), "%s", PQgetvalue(res, 0, 0));
        }

        PQclear(res);
    }

    if (e->provider_id != SP_PROVIDER_OPENAI
        && e->provider_id != SP_PROVIDER_AZURE)
    {
        return CD_OK;
    }

    (void) pthread_once(&cd_policy_tok_once, cd_policy_tok_init);

    for (i = 0; i < SP_TOK_ENCODINGS; i++) {
        tokenizer.enc[i] = cd_policy_tok_enc[i];
    }

    /* one context per dry run: the HTTP threads run them concurrently */
    tokenizer.ctx = sp_tok_ctx_create(0);
    if (tokenizer.ctx == NULL) {
        return CD_OK;
    }

    rc = sp_request_count_prompt(&tokenizer, e->provider_id, model, 0,
                                 e->body, e->body_len, e->info);
    (void) rc;

    sp_tok_ctx_free(tokenizer.ctx);

    return CD_OK;
}


/*
 * The module's ngx_http_spendpol_worst_case() for a chat or generation
 * endpoint: the requested model's price as /pricing resolves it, the
 * prompt counted as the module counts it and the output limit asked,
 * else the model's, else the module's default.
 */
static int64_t
cd_policy_eval_worst_case(void *data)
{
    int                priced;
    int64_t            input, output, limit, nano;
    sp_price_t         price;
    cd_policy_eval_t  *e = data;

    if (cd_pricing_resolve(e->conn, e->org_id, e->provider, e->model,
                           &price, &limit, &priced) != CD_OK)
    {
        e->failed = 1;
        return -1;
    }

    if (!priced) {
        return -1;
    }

    if (cd_policy_eval_count_prompt(e) != CD_OK) {
        e->failed = 1;
        return -1;
    }

    sp_request_worst_case(e->info,
                          limit > 0 ? limit : CD_POLICY_DEFAULT_MAX_OUTPUT,
                          &input, &output);

    if (sp_cost_worst_case(&price, input, output, &nano) != SP_OK) {
        nano = INT64_MAX / 4;
    }

    return nano;
}


/*
 * The attribution headers of "headers" (names case-insensitive, as the
 * module reads them): X-Spendpol-Department and X-Spendpol-Project.
 * Others are ignored, as the module ignores them at this stage.
 */
static int
cd_policy_eval_headers(cd_request_t *r, json_t *headers,
    const char **department, const char **project)
{
    char         field[96];
    json_t      *value;
    const char  *name, *s, **out;

    if (headers == NULL || json_is_null(headers)) {
        return CD_OK;
    }

    if (!json_is_object(headers)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "headers", "headers must be an object of header "
                         "names and string values");
        return CD_ERROR;
    }

    json_object_foreach(headers, name, value) {
        snprintf(field, sizeof(field), "headers.%.64s", name);

        if (!json_is_string(value)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             field, "%s must be a string", field);
            return CD_ERROR;
        }

        if (strcasecmp(name, "X-Spendpol-Department") == 0) {
            out = department;

        } else if (strcasecmp(name, "X-Spendpol-Project") == 0) {
            out = project;

        } else {
            continue;
        }

        s = json_string_value(value);

        /* the module's check: 400 invalid_header there */
        if (json_string_length(value) >= SP_FIELD_LEN
            || !sp_header_value_ok(s, json_string_length(value)))
        {
            cd_respond_error(r, 422, "invalid_request_error",
                             "invalid_header", field, "%s must be at most "
                             "%d bytes without control characters (the "
                             "proxy answers 400 invalid_header)", field,
                             SP_FIELD_LEN - 1);
            return CD_ERROR;
        }

        if (*out != NULL && strcmp(*out, s) != 0) {
            cd_respond_error(r, 422, "invalid_request_error",
                             "conflicting_values", field, "%s and the "
                             "top-level member name the same header with "
                             "different values", field);
            return CD_ERROR;
        }

        *out = s;
    }

    return CD_OK;
}


/*
 * Stage 4 as ngx_http_spendpol_attribute() does it: the key's own
 * department and project bind; a header value replaces one only when
 * the key has none, or names the same, or the key allows overrides.
 * *value is the key's and becomes the request's.
 */
static int
cd_policy_eval_attribute(cd_request_t *r, const char *header,
    const char *given, int may_override, const char **value)
{
    if (given == NULL || given[0] == '\0') {
        return CD_OK;
    }

    if (*value == NULL || (*value)[0] == '\0' || strcmp(*value, given) == 0
        || may_override)
    {
        *value = given;
        return CD_OK;
    }

    cd_respond_error(r, 422, "invalid_request_error",
                     "attribution_not_allowed", header, "this key is bound "
                     "to its own attribution and %s names another: the "
                     "proxy answers 403 attribution_not_allowed before "
                     "any policy (give the key \"attribution_override\": "
                     "true to allow it)", header);

    return CD_ERROR;
}


/*
 * "policies": unsaved policies to try instead of the saved ones, each
 * validated as POST /policies would ("policies[1].patterns[0]"), an id
 * given when it has none: what the matches name.
 */
static char *
cd_policy_eval_given(cd_request_t *r, json_t *given)
{
    char              *text, id[32];
    size_t             i;
    json_t            *array, *item, *policy;
    cd_field_error_t   err;

    if (!json_is_array(given)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "policies",
                         "policies must be an array of policies");
        return NULL;
    }

    if (json_array_size(given) > SP_POLICY_MAX) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "policies", "policies holds at most %d policies",
                         SP_POLICY_MAX);
        return NULL;
    }

    array = json_array();
    if (array == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return NULL;
    }

    json_array_foreach(given, i, item) {
        snprintf(id, sizeof(id), "policies[%zu].", i);

        if (!json_is_object(item)) {
            id[strlen(id) - 1] = '\0';
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             id, "%s must be a policy object", id);
            json_decref(array);
            return NULL;
        }

        if (cd_policy_body_parse(item, id, &policy, &err) != CD_OK) {
            cd_respond_field_error(r, &err);
            json_decref(array);
            return NULL;
        }

        snprintf(id, sizeof(id), "unsaved_%zu", i);

        if (json_object_set_new(policy, "id",
                                json_is_string(json_object_get(item, "id"))
                                ? json_incref(json_object_get(item, "id"))
                                : json_string(id)) != 0
            || json_array_append_new(array, policy) != 0)
        {
            json_decref(array);
            cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                             "out of memory");
            return NULL;
        }
    }

    text = json_dumps(array, JSON_COMPACT);
    json_decref(array);

    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
    }

    return text;
}


/* the codes of a comma-separated list, as a JSON array */
static json_t *
cd_policy_list_json(const char *s)
{
    json_t      *array;
    const char  *comma;

    array = json_array();

    while (array != NULL && s[0] != '\0') {
        comma = strchr(s, ',');

        if (json_array_append_new(array, json_stringn(s, comma
                                          ? (size_t) (comma - s)
                                          : strlen(s))) != 0)
        {
            json_decref(array);
            return NULL;
        }

        s = comma ? comma + 1 : s + strlen(s);
    }

    return array;
}


static const char *
cd_policy_entity_name(uint32_t type)
{
    return type == SP_PII_PATTERN ? "pattern"
                                  : sp_pii_name((sp_pii_type_e) type);
}


/*
 * The answer: never a value found (reasons and entities name types and
 * offsets only); the redacted body only when the decision redacts.
 */
static json_t *
cd_policy_decision_json(const sp_policy_decision_t *d, const char *text,
    size_t len)
{
    char                      *out, message[SP_POLICY_REASON_LEN + 256];
    size_t                     i, n, outlen;
    json_t                    *obj, *matches, *entities, *types, *redacted;
    json_t                    *blocked;
    const sp_policy_match_t   *m;

    obj = NULL;
    redacted = NULL;
    matches = json_array();
    entities = json_array();
    types = json_array();

    if (matches == NULL || entities == NULL || types == NULL) {
        goto failed;
    }

    for (i = 0; i < d->nmatches; i++) {
        m = &d->matches[i];

        if (json_array_append_new(matches, json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:s}",
                "policy_id", m->policy_id, "name", m->name,
                "kind", sp_policy_kind_name((sp_policy_kind_e) m->kind),
                "action", sp_policy_action_name(
                              (sp_policy_action_e) m->action),
                "code", m->code, "reason", m->reason)) != 0)
        {
            goto failed;
        }
    }

    for (i = 0; i < d->pii.nentities; i++) {
        if (json_array_append_new(entities, json_pack("{s:s, s:I, s:I}",
                "type", cd_policy_entity_name(d->pii.entities[i].type),
                "start", (json_int_t) d->pii.entities[i].start,
                "end", (json_int_t) d->pii.entities[i].end)) != 0)
        {
            goto failed;
        }
    }

    for (i = 0; i < SP_PII_COUNT; i++) {
        if ((d->pii.types & (1u << i))
            && json_array_append_new(types,
                   json_string(sp_pii_name((sp_pii_type_e) i))) != 0)
        {
            goto failed;
        }
    }

    if (d->decision == SP_POLICY_REDACT) {
        outlen = len + 32 * d->pii.nentities + 1;
        out = malloc(outlen);
        if (out == NULL) {
            goto failed;
        }

        n = sp_pii_redact(text, len, &d->pii, d->redact_mask, out, outlen);
        redacted = n ? json_loadb(out, n, 0, NULL) : NULL;
        free(out);

        if (redacted == NULL) {
            goto failed;
        }
    }

    blocked = json_null();

    if (d->blocked_by >= 0 && (size_t) d->blocked_by < d->nmatches) {
        m = &d->matches[d->blocked_by];
        blocked = json_pack("{s:s, s:s}", "id", m->policy_id, "name",
                            m->name);
    }

    message[0] = '\0';

    if (d->decision == SP_POLICY_BLOCK) {
        (void) sp_policy_message(d, message, sizeof(message));
    }

    obj = json_pack("{s:s, s:i, s:o?, s:o, s:I, s:o?, s:f, s:o, s:o,"
                    " s:o?}",
                    "decision", sp_policy_action_name(
                                    (sp_policy_action_e) d->decision),
                    "status", d->decision == SP_POLICY_BLOCK ? 403 : 200,
                    "blocked_by", blocked,
                    "matches", matches,
                    "total_matches", (json_int_t) d->total_matches,
                    "warnings", cd_policy_list_json(d->warnings),
                    "guard_score", d->pii.score_milli / 1000.0,
                    "pii_types", types,
                    "entities", entities,
                    "message", message[0] ? json_string(message)
                                          : json_null());
    matches = entities = types = NULL;

    if (obj == NULL) {
        goto failed;
    }

    if (redacted != NULL
        && json_object_set_new(obj, "redacted_body", redacted) != 0)
    {
        redacted = NULL;
        goto failed;
    }

    return obj;

failed:

    json_decref(matches);
    json_decref(entities);
    json_decref(types);
    json_decref(redacted);
    json_decref(obj);

    return NULL;
}


void
cd_api_policies_evaluate(cd_request_t *r)
{
    int                    may_override;
    char                  *text, *given_text, why[256];
    json_t                *body, *request, *raw, *given, *answer;
    size_t                 len;
    int64_t                now_us;
    PGresult              *key, *stored;
    const char            *key_id, *department, *project, *agent_id;
    const char            *h_department, *h_project, *provider_name;
    const char            *model, *at, *body_field, *policies, *params[1];
    cd_db_conn_t          *c;
    sp_provider_e          provider;
    sp_policy_set_t       *set;
    cd_policy_eval_t       eval;
    sp_request_info_t      info;
    sp_policy_request_t    req;
    sp_policy_decision_t  *d;

    body = cd_request_json(r, cd_policy_evaluate_fields);
    if (body == NULL) {
        return;
    }

    c = NULL;
    text = NULL;
    given_text = NULL;
    set = NULL;
    d = NULL;
    key = stored = NULL;
    provider_name = NULL;

    if (cd_json_string(r, body, "api_key_id", 0, 1, CD_NAME_MAX, &key_id)
        != CD_OK
        || cd_json_string(r, body, "department", 0, 0, CD_NAME_MAX,
                          &h_department) != CD_OK
        || cd_json_string(r, body, "project", 0, 0, CD_NAME_MAX, &h_project)
           != CD_OK
        || cd_json_string(r, body, "agent_id", 0, 1, CD_NAME_MAX, &agent_id)
           != CD_OK
        || cd_json_string(r, body, "model", 0, 1, CD_NAME_MAX, &model)
           != CD_OK
        || cd_json_string(r, body, "at", 0, 1, 64, &at) != CD_OK
        || cd_json_string(r, body, "provider", 0, 1, 32, &provider_name)
           != CD_OK)
    {
        goto done;
    }

    if (provider_name == NULL) {
        provider_name = "openai";
    }

    provider = sp_provider_from_name(provider_name, strlen(provider_name));

    if (provider == SP_PROVIDER_UNKNOWN) {
        cd_respond_error(r, 422, "invalid_request_error", "unknown_provider",
                         "provider", "unknown provider \"%.32s\": expected "
                         "one of openai, anthropic, google, azure, cohere, "
                         "mistral", provider_name);
        goto done;
    }

    now_us = cd_clock_ms(CLOCK_REALTIME) * 1000;

    if (at != NULL && cd_rfc3339_parse(at, &now_us) != CD_OK) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_time",
                         "at", "at must be an RFC 3339 date-time, e.g. "
                         "\"2026-12-01T09:30:00Z\"");
        goto done;
    }

    if (cd_policy_eval_headers(r, json_object_get(body, "headers"),
                               &h_department, &h_project) != CD_OK)
    {
        goto done;
    }

    /* the request body: as sent (body_text), or jansson's compact form */
    request = json_object_get(body, "body");
    raw = json_object_get(body, "body_text");

    if ((request == NULL) == (raw == NULL)) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "body", "give the request body as body (a JSON "
                         "object) or as body_text (the raw JSON string), "
                         "one of them");
        goto done;
    }

    if (raw != NULL) {
        body_field = "body_text";

        if (!json_is_string(raw)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             "body_text", "body_text must be a string: the "
                             "request body as sent");
            goto done;
        }

        len = json_string_length(raw);
        text = malloc(len + 1);

        if (text != NULL) {
            memcpy(text, json_string_value(raw), len + 1);
        }

    } else {
        body_field = "body";

        if (!json_is_object(request)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             "body", "body must be the request's JSON "
                             "object, e.g. {\"model\": \"gpt-4o\", "
                             "\"messages\": [...]}");
            goto done;
        }

        text = json_dumps(request, JSON_COMPACT);
        len = text ? strlen(text) : 0;
    }

    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    memset(&info, 0, sizeof(info));

    if (sp_request_parse(provider, text, len, &info, why, sizeof(why))
        != SP_OK)
    {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_body",
                         body_field, "%s: %s (the proxy answers 400)",
                         body_field, why);
        goto done;
    }

    /* Google and Azure name the model in the path: "model" stands for it */
    if (model == NULL) {
        model = info.model;
    }

    given = json_object_get(body, "policies");

    if (given != NULL && !json_is_null(given)) {
        given_text = cd_policy_eval_given(r, given);
        if (given_text == NULL) {
            goto done;
        }
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        goto done;
    }

    /* the key as the module knows it: active ones are in the snapshot */
    department = h_department;
    project = h_project;

    if (key_id != NULL) {
        params[0] = key_id;
        key = cd_db_exec(c, "SELECT coalesce(department, ''),"
                            " coalesce(project, ''), coalesce(agent_id, ''),"
                            " attribution_override, active"
                            " FROM api_keys WHERE id = $1", 1, params);

        if (key == NULL) {
            cd_respond_statement_error(r, c);
            goto done;
        }

        if (PQntuples(key) == 0 || !cd_db_bool(key, 0, 4)) {
            cd_respond_error(r, 422, "invalid_request_error",
                             "unknown_api_key", "api_key_id", "api_key_id: "
                             "no active API key %.64s in this organization",
                             key_id);
            goto done;
        }

        may_override = cd_db_bool(key, 0, 3);
        department = PQgetvalue(key, 0, 0);
        project = PQgetvalue(key, 0, 1);

        if (cd_policy_eval_attribute(r, "headers.X-Spendpol-Department",
                                     h_department, may_override,
                                     &department) != CD_OK
            || cd_policy_eval_attribute(r, "headers.X-Spendpol-Project",
                                        h_project, may_override, &project)
               != CD_OK)
        {
            goto done;
        }

        /* the module takes the agent from the key alone */
        if (agent_id != NULL && strcmp(agent_id, PQgetvalue(key, 0, 2)) != 0)
        {
            cd_respond_error(r, 422, "invalid_request_error",
                             "conflicting_values", "agent_id", "agent_id: "
                             "the proxy takes the agent from the key, and "
                             "this key's is \"%.64s\"", PQgetvalue(key, 0, 2));
            goto done;
        }

        agent_id = PQgetvalue(key, 0, 2);
    }

    if (given_text != NULL) {
        policies = given_text;

    } else {
        stored = cd_db_exec(c, "SELECT " CD_POLICIES_JSON " FROM policies"
                               " WHERE enabled", 0, NULL);

        if (stored == NULL || PQntuples(stored) != 1) {
            cd_respond_statement_error(r, c);
            goto done;
        }

        policies = PQgetvalue(stored, 0, 0);
    }

    set = sp_policy_compile(policies, strlen(policies), why, sizeof(why));
    if (set == NULL) {
        cd_log_error(CD_POLICIES_SUBJECT, "the policies of %s do not "
                     "compile: %s", r->org_id, why);
        cd_respond_error(r, 500, "api_error", "policies_not_compiled", NULL,
                         "the organization's policies could not be "
                         "compiled");
        goto done;
    }

    eval.conn = c;
    eval.org_id = r->org_id;
    eval.provider = provider_name;
    eval.model = model;
    eval.provider_id = provider;
    eval.body = text;
    eval.body_len = len;
    eval.info = &info;
    eval.failed = 0;

    memset(&req, 0, sizeof(req));
    req.provider = provider;
    req.model = sp_str_from(model);
    req.api_key_id = sp_str_from(key_id);
    req.agent_id = sp_str_from(agent_id);
    req.department = sp_str_from(department);
    req.project = sp_str_from(project);
    req.max_tokens = info.max_tokens > 0 ? info.max_tokens : -1;
    req.now_ms = now_us / 1000;
    req.body = text;
    req.body_len = len;
    req.worst_case_nano = cd_policy_eval_worst_case;
    req.data = &eval;

    /* a decision holds a whole scan: too large for the HTTP thread stack */
    d = calloc(1, sizeof(sp_policy_decision_t));
    if (d == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    if (sp_policy_evaluate(set, &req, d) != SP_OK) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_body",
                         body_field, "%s: not JSON the PII scanner can read "
                         "(the proxy refuses it: it never passes a body "
                         "unscanned)", body_field);
        goto done;
    }

    if (eval.failed) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    answer = cd_policy_decision_json(d, text, len);

    if (answer == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
    } else {
        cd_respond(r, 200, answer);
    }

done:

    free(d);
    sp_policy_free(set);
    PQclear(key);
    PQclear(stored);
    free(given_text);
    free(text);

    if (c != NULL) {
        cd_request_end(r, c);
    }

    json_decref(body);
}
