/*
 * /routing: an organisation's routing rules (GET/POST /routing/rules,
 * GET/PATCH/DELETE /routing/rules/{id}) and the dry run POST
 * /routing/evaluate (issue 13).
 *
 * A rule is validated by sp_route_validate(), the code the module's
 * compiler trusts, so the admin API never stores a rule the proxy would
 * skip. name, priority and enabled are columns (the order and the on/off
 * switch are the snapshot's query); the rest of the rule is stored as
 * given, in rule (jsonb). The snapshot carries an organisation's enabled
 * rules as one JSON array (CD_ROUTING_RULES_JSON); /routing/evaluate
 * compiles the same array and evaluates it with sp_route_evaluate(), so
 * it gives the module's answer.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "controld.h"
#include "api.h"
#include "sp_route.h"
#include "sp_translate.h"


#define CD_ROUTING_SUBJECT    "routing"
#define CD_RULE_ID_PREFIX     "rr_"

#define CD_RULE_COLUMNS                                                      \
    "id, name, priority, enabled, rule::text, " CD_SQL_TS("created_at")     \
    ", " CD_SQL_TS("updated_at")

enum {
    CD_RULE_ID = 0, CD_RULE_NAME, CD_RULE_PRIORITY, CD_RULE_ENABLED,
    CD_RULE_RULE, CD_RULE_CREATED, CD_RULE_UPDATED
};

#define CD_RULE_NOT_FOUND                                                    \
    "routing_rule_not_found", "id", "no routing rule with id \"%s\""

/* members held in columns or made by controld, not in rule */
static const char  *cd_rule_column_members[] = {
    "id", "name", "priority", "enabled", "created_at", "updated_at", NULL
};

static const char  *cd_evaluate_fields[] = {
    "api_key_id", "department", "project", "agent_id", "provider", "model",
    "body", "headers", "now", NULL
};


/* ---- validation (pure, unit tested) ----------------------------------- */

int
cd_rule_body_parse(json_t *body, cd_rule_input_t *in, cd_field_error_t *err)
{
    int          rc;
    char        *text, field[sizeof(err->field_buf)], why[200];
    json_t      *value;
    json_int_t   priority;
    const char  *name, *problem, **member;

    memset(in, 0, sizeof(*in));
    in->priority = CD_RULE_PRIORITY_DEFAULT;
    in->enabled = 1;

    value = json_object_get(body, "name");

    if (value == NULL || json_is_null(value)) {
        return cd_field_error(err, 422, "missing_field", "name",
                              "name is required: a name for the rule, 1 to "
                              CD_STRINGIFY(CD_NAME_MAX) " characters");
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", "name",
                              "name must be a string");
    }

    name = json_string_value(value);
    problem = cd_validate_text(name, 1, CD_NAME_MAX);

    if (problem != NULL || strlen(name) != json_string_length(value)
        || !cd_utf8_valid(name, strlen(name)))
    {
        return cd_field_error(err, 422, "invalid_value", "name",
                              "name must be 1 to " CD_STRINGIFY(CD_NAME_MAX)
                              " printable UTF-8 characters");
    }

    value = json_object_get(body, "priority");

    if (value != NULL && !json_is_null(value)) {
        if (!json_is_integer(value)) {
            return cd_field_error(err, 400, "invalid_type", "priority",
                                  "priority must be an integer from %d to "
                                  "%d (lower first)", CD_RULE_PRIORITY_MIN,
                                  CD_RULE_PRIORITY_MAX);
        }

        priority = json_integer_value(value);

        if (priority < CD_RULE_PRIORITY_MIN
            || priority > CD_RULE_PRIORITY_MAX)
        {
            return cd_field_error(err, 422, "invalid_value", "priority",
                                  "priority is %lld; expected %d to %d",
                                  (long long) priority, CD_RULE_PRIORITY_MIN,
                                  CD_RULE_PRIORITY_MAX);
        }

        in->priority = (int) priority;
    }

    value = json_object_get(body, "enabled");

    if (value != NULL && !json_is_null(value)) {
        if (!json_is_boolean(value)) {
            return cd_field_error(err, 400, "invalid_type", "enabled",
                                  "enabled must be true or false");
        }

        in->enabled = json_is_true(value);
    }

    /* the whole rule as the module's compiler will see it */
    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL) {
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    field[0] = '\0';
    why[0] = '\0';
    rc = sp_route_validate(text, strlen(text), field, sizeof(field), why,
                           sizeof(why));
    free(text);

    if (rc != SP_OK) {
        memcpy(err->field_buf, field, sizeof(err->field_buf));
        return cd_field_error(err, 422, "invalid_rule",
                              err->field_buf[0] ? err->field_buf : NULL,
                              "%s%s%s", err->field_buf,
                              err->field_buf[0] ? ": " : "",
                              why[0] ? why : "not a valid routing rule");
    }

    in->name = name;
    in->rule = json_deep_copy(body);

    if (in->rule == NULL) {
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    for (member = cd_rule_column_members; *member != NULL; member++) {
        json_object_del(in->rule, *member);
    }

    return CD_OK;
}


int64_t
cd_route_used_ppm(int64_t spent_nano, int64_t limit_nano)
{
    __int128  ppm;

    if (limit_nano <= 0) {
        return -1;
    }

    if (spent_nano <= 0) {
        return 0;
    }

    /* 128 bits: spent * 10^6 overflows int64 past $9,223 */
    ppm = (__int128) spent_nano * 1000000 / limit_nano;

    return ppm > INT64_MAX ? INT64_MAX : (int64_t) ppm;
}


int
cd_route_headers_parse(json_t *headers, cd_route_headers_t *out,
    cd_field_error_t *err)
{
    json_t      *value;
    const char  *name, *s;

    memset(out, 0, sizeof(*out));

    if (headers == NULL || json_is_null(headers)) {
        return CD_OK;
    }

    if (!json_is_object(headers)) {
        return cd_field_error(err, 400, "invalid_type", "headers",
                              "headers must be an object of header names "
                              "and string values");
    }

    json_object_foreach(headers, name, value) {
        if (!json_is_string(value)) {
            snprintf(out->field, sizeof(out->field), "headers.%.40s", name);
            return cd_field_error(err, 400, "invalid_type", out->field,
                                  "%s must be a string", out->field);
        }

        s = json_string_value(value);

        /* header names are case-insensitive, as the module reads them */
        if (strcasecmp(name, "X-Spendpol-Route") == 0) {
            if (strcasecmp(s, "skip") != 0) {
                snprintf(out->field, sizeof(out->field), "headers.%s",
                         name);
                return cd_field_error(err, 422, "invalid_value", out->field,
                                      "%s must be \"skip\"", out->field);
            }

            out->skip = 1;

        } else if (strcasecmp(name, "X-Spendpol-Trace-Id") == 0) {
            out->trace_id = s;
        }
    }

    return CD_OK;
}


/* ---- rule responses ---------------------------------------------------- */

/* a routing_rules row (CD_RULE_COLUMNS) as the API shows it */
static json_t *
cd_rule_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_loads(PQgetvalue(res, row, CD_RULE_RULE), 0, NULL);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }

    if (cd_json_set_column(obj, "id", res, row, CD_RULE_ID)
        || cd_json_set_column(obj, "name", res, row, CD_RULE_NAME)
        || json_object_set_new(obj, "priority", json_integer(
               strtoll(PQgetvalue(res, row, CD_RULE_PRIORITY), NULL, 10)))
        || json_object_set_new(obj, "enabled", json_boolean(
               cd_db_bool(res, row, CD_RULE_ENABLED)))
        || cd_json_set_column(obj, "created_at", res, row, CD_RULE_CREATED)
        || cd_json_set_column(obj, "updated_at", res, row, CD_RULE_UPDATED))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* {id} of the path: "rr_" and 24 lowercase hex digits, else 404 */
static int
cd_rule_id_param(cd_request_t *r)
{
    size_t       i, len;
    const char  *id;

    id = r->params[0];
    len = strlen(id);

    if (len == sizeof(CD_RULE_ID_PREFIX) - 1 + 2 * CD_RANDOM_ID_BYTES
        && memcmp(id, CD_RULE_ID_PREFIX, sizeof(CD_RULE_ID_PREFIX) - 1) == 0)
    {
        for (i = sizeof(CD_RULE_ID_PREFIX) - 1; i < len; i++) {
            if (!((id[i] >= '0' && id[i] <= '9')
                  || (id[i] >= 'a' && id[i] <= 'f')))
            {
                break;
            }
        }

        if (i == len) {
            return CD_OK;
        }
    }

    cd_respond_error(r, 404, "not_found_error", "routing_rule_not_found",
                     "id", "no routing rule with id \"%.64s\" (expected "
                     CD_RULE_ID_PREFIX " and %d lowercase hex digits)", id,
                     2 * CD_RANDOM_ID_BYTES);

    return CD_ERROR;
}


/*
 * Writes in with sql ($1 id, $2 name, $3 priority, $4 enabled, $5 rule;
 * RETURNING CD_RULE_COLUMNS), commits, publishes and answers the rule.
 */
static void
cd_rule_store(cd_request_t *r, cd_db_conn_t *c, const char *id,
    const cd_rule_input_t *in, const char *sql, unsigned status,
    const char *what)
{
    char        *rule, priority[CD_INT_TEXT];
    json_t      *json;
    PGresult    *res;
    const char  *params[5];

    rule = json_dumps(in->rule, JSON_COMPACT);
    if (rule == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return;
    }

    snprintf(priority, sizeof(priority), "%d", in->priority);

    params[0] = id;
    params[1] = in->name;
    params[2] = priority;
    params[3] = in->enabled ? "t" : "f";
    params[4] = rule;

    res = cd_db_exec(c, sql, 5, params);
    free(rule);

    if (cd_request_found(r, c, res, CD_RULE_NOT_FOUND, id) != CD_OK) {
        PQclear(res);
        return;
    }

    json = cd_rule_json(res, 0);
    PQclear(res);

    if (json == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        return;
    }

    if (cd_request_commit_respond(r, c, 1, status, json) == CD_OK) {
        cd_log_info(CD_ROUTING_SUBJECT, "%s rule %s org=%s by %s", what, id,
                    r->org_id, r->key_id);
    }
}


void
cd_api_routing_rules_create(cd_request_t *r)
{
    char              id[CD_ID_MAX];
    json_t           *body;
    cd_db_conn_t     *c;
    cd_rule_input_t   in;
    cd_field_error_t  err;

    body = cd_request_json(r, NULL);
    if (body == NULL) {
        return;
    }

    /* POST makes the id and the times: given ones are not the client's */
    json_object_del(body, "id");
    json_object_del(body, "created_at");
    json_object_del(body, "updated_at");

    if (cd_rule_body_parse(body, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    c = cd_request_begin_create(r, CD_RULE_ID_PREFIX, id, "routing_rules",
                                NULL, SP_ROUTE_MAX_RULES,
                                "SP_ROUTE_MAX_RULES", "routing rules");
    if (c != NULL) {
        cd_rule_store(r, c, id, &in,
                      "INSERT INTO routing_rules (id, org_id, name,"
                      " priority, enabled, rule)"
                      " VALUES ($1, current_setting('spendpol.org_id'), $2,"
                      " $3::integer, $4::boolean, $5::jsonb)"
                      " RETURNING " CD_RULE_COLUMNS, 201, "created");
        cd_request_end(r, c);
    }

    json_decref(in.rule);
    json_decref(body);
}


/* evaluation order: what the snapshot carries (enabled ones) */
void
cd_api_routing_rules_list(cd_request_t *r)
{
    cd_list_respond(r, "SELECT " CD_RULE_COLUMNS " FROM routing_rules"
                       " ORDER BY priority, created_at, id",
                    cd_rule_json);
}


void
cd_api_routing_rules_get(cd_request_t *r)
{
    cd_row_respond(r, cd_rule_id_param,
                   "SELECT " CD_RULE_COLUMNS " FROM routing_rules"
                   " WHERE id = $1", cd_rule_json, CD_RULE_NOT_FOUND);
}


/*
 * PATCH merges the members given onto the stored rule (a member set to
 * null is removed: optional ones take their defaults) and validates the
 * merged rule as a POST would. Conditions, action and fallback are
 * replaced whole when given.
 */
void
cd_api_routing_rules_update(cd_request_t *r)
{
    json_t            *patch, *merged, *value;
    PGresult          *old;
    const char        *key, *params[1];
    cd_db_conn_t      *c;
    cd_rule_input_t    in;
    cd_field_error_t   err;

    if (cd_rule_id_param(r) != CD_OK) {
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
    in.rule = NULL;
    params[0] = r->params[0];

    old = cd_db_exec(c, "SELECT " CD_RULE_COLUMNS " FROM routing_rules"
                        " WHERE id = $1 FOR UPDATE", 1, params);
    if (cd_request_found(r, c, old, CD_RULE_NOT_FOUND, r->params[0])
        != CD_OK)
    {
        goto done;
    }

    merged = cd_rule_json(old, 0);

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

    json_object_del(merged, "id");
    json_object_del(merged, "created_at");
    json_object_del(merged, "updated_at");

    if (cd_rule_body_parse(merged, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    cd_rule_store(r, c, r->params[0], &in,
                  "UPDATE routing_rules SET name = $2,"
                  " priority = $3::integer, enabled = $4::boolean,"
                  " rule = $5::jsonb, updated_at = clock_timestamp()"
                  " WHERE id = $1 RETURNING " CD_RULE_COLUMNS, 200,
                  "updated");

done:

    PQclear(old);
    json_decref(in.rule);
    json_decref(merged);
    json_decref(patch);
    cd_request_end(r, c);
}


void
cd_api_routing_rules_delete(cd_request_t *r)
{
    if (cd_delete_respond(r, cd_rule_id_param,
                          "DELETE FROM routing_rules WHERE id = $1",
                          CD_RULE_NOT_FOUND) == CD_OK)
    {
        cd_log_info(CD_ROUTING_SUBJECT, "deleted rule %s org=%s by %s",
                    r->params[0], r->org_id, r->key_id);
    }
}


/* ---- POST /routing/evaluate ------------------------------------------- */

/* what the evaluation's callbacks read */
typedef struct {
    sp_request_info_t  *info;
    PGresult           *budgets;      /* id, limit, spent, covers */
    sp_provider_e       provider;
    int                 openai_chat;
    const char         *body;
    size_t              body_len;
} cd_route_eval_t;


static int64_t
cd_route_eval_prompt_tokens(void *data)
{
    cd_route_eval_t  *e = data;

    return sp_request_prompt_estimate(e->info);
}


/*
 * The used share of budget_id (any of the organisation's), or the
 * largest of those covering the request; -1 when there is none. Spend is
 * the current period's as GET /budgets/{id}/spend shows it.
 */
static int64_t
cd_route_eval_budget_ppm(void *data, sp_str_t budget_id)
{
    int               i;
    int64_t           ppm, best;
    const char       *id;
    cd_route_eval_t  *e = data;

    best = -1;

    for (i = 0; i < PQntuples(e->budgets); i++) {
        id = PQgetvalue(e->budgets, i, 0);

        if (budget_id.len > 0) {
            if (strlen(id) != budget_id.len
                || memcmp(id, budget_id.data, budget_id.len) != 0)
            {
                continue;
            }

        } else if (!cd_db_bool(e->budgets, i, 3)) {
            continue;
        }

        ppm = cd_route_used_ppm(
                  strtoll(PQgetvalue(e->budgets, i, 2), NULL, 10),
                  strtoll(PQgetvalue(e->budgets, i, 1), NULL, 10));

        if (ppm > best) {
            best = ppm;
        }
    }

    return best;
}


/*
 * The request's own provider always; another only for an OpenAI
 * chat-completions request the translation can carry faithfully.
 */
static int
cd_route_eval_usable(void *data, const sp_route_target_t *target,
    char *why, size_t whylen)
{
    cd_route_eval_t  *e = data;

    if (target->provider == e->provider) {
        return 1;
    }

    if (!e->openai_chat) {
        snprintf(why, whylen, "only OpenAI chat-completions requests are "
                 "translated to another provider");
        return 0;
    }

    return sp_translate_check(target->provider, e->body, e->body_len, why,
                              whylen);
}


/* a string member of the evaluate body: absent NULL; answers 400/422 */
static int
cd_route_eval_string(cd_request_t *r, json_t *body, const char *field,
    const char **out)
{
    return cd_json_string(r, body, field, 0, 1, CD_NAME_MAX, out);
}


static json_t *
cd_route_target_json(sp_provider_e provider, const char *model)
{
    return json_pack("{s:s, s:s}", "provider", sp_provider_name(provider),
                     "model", model);
}


static json_t *
cd_route_decision_json(const sp_route_decision_t *d, int skipped,
    sp_provider_e provider, const char *model, const char *explain)
{
    size_t   i;
    json_t  *obj, *targets, *rule;

    targets = json_array();
    if (targets == NULL) {
        return NULL;
    }

    if (d->matched && d->ntargets > 0) {
        for (i = 0; i < d->ntargets; i++) {
            if (json_array_append_new(targets, cd_route_target_json(
                    d->targets[i].provider, d->targets[i].model)) != 0)
            {
                json_decref(targets);
                return NULL;
            }
        }

    } else if (json_array_append_new(targets,
                   cd_route_target_json(provider, model)) != 0)
    {
        json_decref(targets);
        return NULL;
    }

    rule = d->matched ? json_pack("{s:s, s:s}", "id", d->rule_id, "name",
                                  d->rule_name)
                      : json_null();

    obj = json_pack("{s:b, s:b, s:o?, s:{s:s, s:s}, s:o, s:I, s:I, s:s}",
                    "matched", d->matched,
                    "skipped_by_header", skipped,
                    "rule", rule,
                    "requested", "provider", sp_provider_name(provider),
                    "model", model,
                    "targets", targets,
                    "max_attempts", (json_int_t) (d->matched
                                    && d->max_attempts > 0
                                    ? d->max_attempts : 1),
                    "attempt_timeout_ms",
                    (json_int_t) (d->matched ? d->attempt_timeout_ms : 0),
                    "explain", explain);

    return obj;
}


/*
 * The request's attribution: the key's own department, project and agent
 * bind (as in the module) unless the key allows overrides or lacks one;
 * values given directly fill the rest.
 */
static int
cd_route_eval_key(cd_request_t *r, cd_db_conn_t *c, const char *key_id,
    PGresult **out)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = key_id;
    res = cd_db_exec(c, "SELECT department, project, agent_id,"
                        " attribution_override FROM api_keys"
                        " WHERE id = $1", 1, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 422, "invalid_request_error", "unknown_api_key",
                         "api_key_id", "api_key_id: no API key %s in this "
                         "organization", key_id);
        return CD_ERROR;
    }

    *out = res;

    return CD_OK;
}


static const char *
cd_route_eval_attribute(PGresult *key, int col, const char *given)
{
    const char  *own;

    if (key == NULL) {
        return given;
    }

    own = cd_db_value(key, 0, col);

    if (own == NULL || (given != NULL && cd_db_bool(key, 0, 3))) {
        return given;
    }

    return own;
}


void
cd_api_routing_evaluate(cd_request_t *r)
{
    int                   skip_forbidden, skipped;
    char                 *text, why[256], explain[SP_ROUTE_EXPLAIN_LEN + 160];
    json_t               *body, *request, *answer;
    int64_t               now_us;
    PGresult             *key, *org, *rules, *budgets;
    const char           *key_id, *department, *project, *agent_id;
    const char           *provider_name, *model, *now, *params[6];
    cd_db_conn_t         *c;
    sp_provider_e         provider;
    sp_route_set_t       *set;
    cd_route_eval_t       eval;
    cd_field_error_t      err;
    sp_request_info_t     info;
    cd_route_headers_t    headers;
    sp_route_request_t    req;
    sp_route_decision_t   d;

    body = cd_request_json(r, cd_evaluate_fields);
    if (body == NULL) {
        return;
    }

    c = NULL;
    text = NULL;
    set = NULL;
    key = org = rules = budgets = NULL;

    if (cd_route_eval_string(r, body, "api_key_id", &key_id) != CD_OK
        || cd_route_eval_string(r, body, "department", &department) != CD_OK
        || cd_route_eval_string(r, body, "project", &project) != CD_OK
        || cd_route_eval_string(r, body, "agent_id", &agent_id) != CD_OK
        || cd_route_eval_string(r, body, "model", &model) != CD_OK
        || cd_route_eval_string(r, body, "now", &now) != CD_OK
        || cd_json_string(r, body, "provider", 1, 1, 32, &provider_name)
           != CD_OK)
    {
        goto done;
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

    if (now != NULL && cd_rfc3339_parse(now, &now_us) != CD_OK) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_time",
                         "now", "now must be an RFC 3339 date-time, e.g. "
                         "\"2026-12-01T09:30:00Z\"");
        goto done;
    }

    if (cd_route_headers_parse(json_object_get(body, "headers"), &headers,
                               &err) != CD_OK)
    {
        cd_respond_field_error(r, &err);
        goto done;
    }

    request = json_object_get(body, "body");

    if (request == NULL || !json_is_object(request)) {
        cd_respond_error(r, request == NULL ? 422 : 400,
                         "invalid_request_error",
                         request == NULL ? "missing_field" : "invalid_type",
                         "body", "body must be the request's JSON object, "
                         "e.g. {\"model\": \"gpt-4o\", \"messages\": [...]}");
        goto done;
    }

    text = json_dumps(request, JSON_COMPACT);
    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    memset(&info, 0, sizeof(info));

    if (sp_request_parse(provider, text, strlen(text), &info, why,
                         sizeof(why)) != SP_OK)
    {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_body",
                         "body", "body: %s", why);
        goto done;
    }

    /* Google names the model in the path: "model" stands for it */
    if (model == NULL) {
        model = info.model;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        goto done;
    }

    if (key_id != NULL && cd_route_eval_key(r, c, key_id, &key) != CD_OK) {
        goto done;
    }

    department = cd_route_eval_attribute(key, 0, department);
    project = cd_route_eval_attribute(key, 1, project);
    agent_id = cd_route_eval_attribute(key, 2, agent_id);

    org = cd_db_exec(c, "SELECT route_skip_forbidden FROM orgs", 0, NULL);
    rules = org ? cd_db_exec(c, "SELECT " CD_ROUTING_RULES_JSON
                                " FROM routing_rules WHERE enabled", 0, NULL)
                : NULL;

    params[0] = key_id ? key_id : "";
    params[1] = agent_id ? agent_id : "";
    params[2] = department ? department : "";
    params[3] = project ? project : "";
    params[4] = provider_name;
    params[5] = model;

    /*
     * The figures of GET /budgets/{id}/spend: the current period's. The
     * cover is sp_budget_covers()'s: the scopes, then the provider and
     * model narrowing (a model covers its dated names, as ingest counts).
     */
    budgets = rules ? cd_db_exec(c,
                  "SELECT b.id, b.limit_nano, coalesce(s.spent_nano, 0),"
                  " (b.scope_type = 'organization'"
                  " OR (b.scope_type = 'api_key' AND b.scope_value = $1)"
                  " OR (b.scope_type = 'agent' AND b.scope_value = $2)"
                  " OR (b.scope_type = 'department' AND b.scope_value = $3)"
                  " OR (b.scope_type = 'project' AND b.scope_value = $4))"
                  " AND (b.provider IS NULL OR b.provider = $5)"
                  " AND spendpol_model_covers(b.model, $6)"
                  " FROM budgets b LEFT JOIN budget_spend s"
                  " ON s.budget_id = b.id AND s.period_start ="
                  " spendpol_period_start(b.period, b.timezone,"
                  " b.created_at, now())", 6, params)
              : NULL;

    if (budgets == NULL || PQntuples(org) != 1 || PQntuples(rules) != 1) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    skip_forbidden = cd_db_bool(org, 0, 0);
    skipped = headers.skip && !skip_forbidden;

    set = sp_route_compile(PQgetvalue(rules, 0, 0),
                           (size_t) PQgetlength(rules, 0, 0), why,
                           sizeof(why));
    if (set == NULL) {
        cd_log_error(CD_ROUTING_SUBJECT, "the rules of %s do not compile: "
                     "%s", r->org_id, why);
        cd_respond_error(r, 500, "api_error", "rules_not_compiled", NULL,
                         "the organization's routing rules could not be "
                         "compiled");
        goto done;
    }

    eval.info = &info;
    eval.budgets = budgets;
    eval.provider = provider;
    eval.openai_chat = provider == SP_PROVIDER_OPENAI
                       && json_is_array(json_object_get(request, "messages"));
    eval.body = text;
    eval.body_len = strlen(text);

    memset(&req, 0, sizeof(req));
    req.provider = provider;
    req.model = sp_str_from(model);
    req.api_key_id = sp_str_from(key_id);
    req.agent_id = sp_str_from(agent_id);
    req.department = sp_str_from(department);
    req.project = sp_str_from(project);
    req.trace_id = sp_str_from(headers.trace_id);
    req.has_tools = info.has_tools;
    req.has_images = info.has_images;
    req.now_ms = now_us / 1000;

    if (RAND_bytes((unsigned char *) &req.random, sizeof(req.random)) != 1) {
        req.random = (uint64_t) now_us;
    }

    req.prompt_tokens = cd_route_eval_prompt_tokens;
    req.budget_used_ppm = cd_route_eval_budget_ppm;
    req.usable = cd_route_eval_usable;
    req.data = &eval;

    sp_route_evaluate(set, &req, &d);

    /*
     * As the module does: skip sends the request first as it came, and
     * the rule's fallbacks still stand behind it.
     */
    if (skipped && d.matched && d.ntargets > 0) {
        d.targets[0].provider = provider;
        snprintf(d.targets[0].model, sizeof(d.targets[0].model), "%s",
                 model);
    }

    snprintf(explain, sizeof(explain), "%s%s",
             skipped ? "X-Spendpol-Route: skip: the request goes first as "
                       "sent, the rule's fallbacks behind it; "
             : headers.skip ? "X-Spendpol-Route: skip ignored: this "
                              "organization forbids skipping the rules; "
             : "", d.explain);

    answer = cd_route_decision_json(&d, skipped, provider, model, explain);

    if (answer == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
    } else {
        cd_respond(r, 200, answer);
    }

done:

    sp_route_free(set);
    PQclear(key);
    PQclear(org);
    PQclear(rules);
    PQclear(budgets);
    free(text);

    if (c != NULL) {
        cd_request_end(r, c);
    }

    json_decref(body);
}
