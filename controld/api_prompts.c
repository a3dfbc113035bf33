/*
 * /prompts: versioned prompt templates (issue 13). A template has a UUID,
 * a slug unique in its organisation and versions numbered from 1; a
 * version is validated by sp_template_validate(), the code the module's
 * expansion trusts, and never changes once written (the table refuses
 * UPDATE and DELETE). Labels ("production") name one version each.
 *
 * The snapshot carries one record per template (CD_PROMPT_RECORD_JSON,
 * SP_TABLE_TEMPLATES); every write here publishes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_template.h"


#define CD_PROMPTS_SUBJECT        "prompts"
#define CD_PROMPT_DESCRIPTION_MAX 2000
#define CD_PROMPT_VERSIONS_MAX    10000      /* per template */
#define CD_PROMPTS_MAX            10000      /* per organisation */
#define CD_UNIQUE_VIOLATION       "23505"

#define CD_PROMPT_NOT_FOUND                                                  \
    "template_not_found", "slug", "no prompt template with slug \"%s\""

static const char  *cd_prompt_fields[] = {
    "slug", "name", "description", "version", NULL
};

static const char  *cd_label_fields[] = { "version", NULL };


/* ---- validation (pure, unit tested) ----------------------------------- */

int
cd_prompt_version_parse(json_t *version, const char *prefix,
    cd_field_error_t *err)
{
    int    rc;
    char  *text, field[48], why[200];

    if (version == NULL || json_is_null(version)) {
        snprintf(err->field_buf, sizeof(err->field_buf), "%.*s",
                 (int) (strlen(prefix) ? strlen(prefix) - 1 : 0), prefix);
        return cd_field_error(err, 422, "missing_field",
                              err->field_buf[0] ? err->field_buf : NULL,
                              "a version object is required: {\"messages\":"
                              " [...], \"variables\": {...}}");
    }

    if (!json_is_object(version)) {
        snprintf(err->field_buf, sizeof(err->field_buf), "%.*s",
                 (int) (strlen(prefix) ? strlen(prefix) - 1 : 0), prefix);
        return cd_field_error(err, 400, "invalid_type",
                              err->field_buf[0] ? err->field_buf : NULL,
                              "a version must be a JSON object");
    }

    text = json_dumps(version, JSON_COMPACT);
    if (text == NULL) {
        return cd_field_error(err, 500, "out_of_memory", NULL,
                              "out of memory");
    }

    field[0] = '\0';
    why[0] = '\0';
    rc = sp_template_validate(text, strlen(text), field, sizeof(field), why,
                              sizeof(why));
    free(text);

    if (rc == SP_OK) {
        return CD_OK;
    }

    snprintf(err->field_buf, sizeof(err->field_buf), "%s%s", prefix, field);

    return cd_field_error(err, 422, "invalid_template",
                          err->field_buf[0] ? err->field_buf : NULL,
                          "%s%s%s", err->field_buf,
                          err->field_buf[0] ? ": " : "",
                          why[0] ? why : "not a valid template version");
}


/* ---- helpers ---------------------------------------------------------- */

/* {slug} of the path: an unknown one when it cannot be a slug (404) */
static int
cd_prompt_slug_param(cd_request_t *r)
{
    if (sp_template_slug_valid(r->params[0], strlen(r->params[0]))) {
        return CD_OK;
    }

    cd_respond_error(r, 404, "not_found_error", "template_not_found", "slug",
                     "no prompt template with slug \"%.64s\" (a slug is 1 "
                     "to %d of a-z, 0-9, _ and -, starting with a letter or"
                     " digit)", r->params[0], SP_TEMPLATE_SLUG_MAX);

    return CD_ERROR;
}


/* a version row (version, body, created_at, created_by) as the API shows */
static json_t *
cd_prompt_version_json(PGresult *res, int row, int col)
{
    json_t  *obj;

    obj = json_loads(PQgetvalue(res, row, col + 1), 0, NULL);

    if (obj == NULL || !json_is_object(obj)
        || json_object_set_new(obj, "version", json_integer(
               strtoll(PQgetvalue(res, row, col), NULL, 10)))
        || cd_json_set_column(obj, "created_at", res, row, col + 2)
        || cd_json_set_column(obj, "created_by", res, row, col + 3))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/*
 * The template of the transaction's organisation named slug, every
 * version and label: {"id", "slug", "name", "description", "created_at",
 * "latest", "labels", "versions"}. NULL with *found 0 when there is none;
 * NULL with *found 1 on failure (answered as a statement error).
 */
static json_t *
cd_prompt_load(cd_request_t *r, cd_db_conn_t *c, const char *slug,
    int *found)
{
    int          i;
    json_t      *obj, *versions, *labels, *v;
    PGresult    *res, *rows;
    const char  *params[1];

    *found = 1;
    obj = NULL;
    rows = NULL;
    params[0] = slug;

    res = cd_db_exec(c, "SELECT p.id::text, p.slug, p.name, p.description, "
                        CD_SQL_TS("p.created_at") ", (SELECT coalesce("
                        "jsonb_object_agg(l.label, l.version), '{}'::jsonb)"
                        " FROM prompt_labels l WHERE l.prompt_id = p.id)"
                        "::text"
                        " FROM prompts p WHERE p.slug = $1", 1, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return NULL;
    }

    if (PQntuples(res) == 0) {
        *found = 0;
        goto done;
    }

    params[0] = PQgetvalue(res, 0, 0);
    rows = cd_db_exec(c, "SELECT version, body::text, "
                         CD_SQL_TS("created_at") ", created_by"
                         " FROM prompt_versions WHERE prompt_id = $1::uuid"
                         " ORDER BY version", 1, params);

    if (rows == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    versions = json_array();
    labels = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    obj = json_object();

    if (obj == NULL || versions == NULL || labels == NULL
        || cd_json_set_column(obj, "id", res, 0, 0)
        || cd_json_set_column(obj, "slug", res, 0, 1)
        || cd_json_set_column(obj, "name", res, 0, 2)
        || cd_json_set_column(obj, "description", res, 0, 3)
        || cd_json_set_column(obj, "created_at", res, 0, 4)
        || json_object_set_new(obj, "latest", json_integer(
               PQntuples(rows) ? strtoll(PQgetvalue(rows, PQntuples(rows) - 1,
                                                    0), NULL, 10) : 0))
        || json_object_set(obj, "labels", labels)
        || json_object_set(obj, "versions", versions))
    {
        goto oom;
    }

    for (i = 0; i < PQntuples(rows); i++) {
        v = cd_prompt_version_json(rows, i, 0);

        if (v == NULL || json_array_append_new(versions, v) != 0) {
            goto oom;
        }
    }

    json_decref(versions);
    json_decref(labels);
    goto done;

oom:

    json_decref(versions);
    json_decref(labels);
    json_decref(obj);
    obj = NULL;
    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

done:

    PQclear(res);
    PQclear(rows);

    return obj;
}


/* ---- routes ----------------------------------------------------------- */

static json_t *
cd_prompt_list_json(PGresult *res, int row)
{
    json_t  *obj, *labels;

    labels = json_loads(PQgetvalue(res, row, 6), 0, NULL);
    obj = json_object();

    if (obj == NULL || labels == NULL
        || cd_json_set_column(obj, "id", res, row, 0)
        || cd_json_set_column(obj, "slug", res, row, 1)
        || cd_json_set_column(obj, "name", res, row, 2)
        || cd_json_set_column(obj, "description", res, row, 3)
        || cd_json_set_column(obj, "created_at", res, row, 4)
        || json_object_set_new(obj, "latest", json_integer(
               strtoll(PQgetvalue(res, row, 5), NULL, 10)))
        || json_object_set_new(obj, "labels", labels))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


void
cd_api_prompts_list(cd_request_t *r)
{
    cd_list_respond(r, "SELECT p.id::text, p.slug, p.name, p.description, "
                       CD_SQL_TS("p.created_at") ","
                       " (SELECT coalesce(max(v.version), 0)"
                       " FROM prompt_versions v WHERE v.prompt_id = p.id),"
                       " (SELECT coalesce(jsonb_object_agg(l.label,"
                       " l.version), '{}'::jsonb) FROM prompt_labels l"
                       " WHERE l.prompt_id = p.id)::text"
                       " FROM prompts p ORDER BY p.slug",
                    cd_prompt_list_json);
}


void
cd_api_prompts_create(cd_request_t *r)
{
    int                found;
    char              *text, id[CD_ID_MAX];
    json_t            *body, *version, *tmpl, *slug_json;
    PGresult          *res;
    const char        *slug, *name, *description, *params[5];
    cd_db_conn_t      *c;
    cd_field_error_t   err;

    body = cd_request_json(r, cd_prompt_fields);
    if (body == NULL) {
        return;
    }

    c = NULL;
    text = NULL;
    res = NULL;
    slug_json = json_object_get(body, "slug");

    if (cd_json_string(r, body, "slug", 1, 1, SP_TEMPLATE_SLUG_MAX, &slug)
        != CD_OK)
    {
        goto done;
    }

    if (!sp_template_slug_valid(slug, json_string_length(slug_json))) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "slug", "slug must be 1 to %d of a-z, 0-9, _ and -,"
                         " starting with a letter or digit",
                         SP_TEMPLATE_SLUG_MAX);
        goto done;
    }

    if (cd_json_string(r, body, "name", 0, 1, CD_NAME_MAX, &name) != CD_OK
        || cd_json_string(r, body, "description", 0, 0,
                          CD_PROMPT_DESCRIPTION_MAX, &description) != CD_OK)
    {
        goto done;
    }

    version = json_object_get(body, "version");

    if (cd_prompt_version_parse(version, "version.", &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    text = json_dumps(version, JSON_COMPACT);
    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    c = cd_request_begin_create(r, NULL, NULL, "prompts", NULL,
                                CD_PROMPTS_MAX, "CD_PROMPTS_MAX",
                                "prompt templates");
    if (c == NULL) {
        goto done;
    }

    params[0] = slug;
    params[1] = name ? name : slug;
    params[2] = description ? description : "";

    /* a slug taken: no row, and nothing written */
    res = cd_db_exec(c, "INSERT INTO prompts (org_id, slug, name,"
                        " description)"
                        " VALUES (current_setting('spendpol.org_id'), $1, $2,"
                        " $3) ON CONFLICT (org_id, slug) DO NOTHING"
                        " RETURNING id::text", 3, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (PQntuples(res) == 0) {
        cd_respond_error(r, 409, "conflict_error", "slug_taken", "slug",
                         "a prompt template with slug \"%s\" exists; add a "
                         "version with POST /prompts/%s/versions", slug,
                         slug);
        goto done;
    }

    /* the id outlives the result it came in */
    snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    params[0] = id;
    params[1] = text;
    params[2] = r->key_id;

    res = cd_db_exec(c, "INSERT INTO prompt_versions (prompt_id, org_id,"
                        " version, body, created_by)"
                        " VALUES ($1::uuid, current_setting('spendpol.org_id'),"
                        " 1, $2::jsonb, $3)", 3, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    tmpl = cd_prompt_load(r, c, slug, &found);

    if (tmpl == NULL) {
        if (!found) {
            cd_respond_statement_error(r, c);
        }

        goto done;
    }

    if (cd_request_commit_respond(r, c, 1, 201, tmpl) == CD_OK) {
        cd_log_info(CD_PROMPTS_SUBJECT, "created template %s org=%s by %s",
                    slug, r->org_id, r->key_id);
    }

done:

    PQclear(res);
    free(text);

    if (c != NULL) {
        cd_request_end(r, c);
    }

    json_decref(body);
}


void
cd_api_prompts_get(cd_request_t *r)
{
    int            found;
    json_t        *tmpl;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_prompt_slug_param);
    if (c == NULL) {
        return;
    }

    tmpl = cd_prompt_load(r, c, r->params[0], &found);

    if (tmpl != NULL) {
        cd_respond(r, 200, tmpl);

    } else if (!found) {
        cd_respond_error(r, 404, "not_found_error", CD_PROMPT_NOT_FOUND,
                         r->params[0]);
    }

    cd_request_end(r, c);
}


/*
 * The template's id, locked until the transaction ends so that versions
 * number without gaps or clashes and a label never names a version being
 * written. An advisory lock on the id, not FOR UPDATE: that would need an
 * UPDATE privilege on prompts, which no statement uses.
 */
static PGresult *
cd_prompt_lock(cd_request_t *r, cd_db_conn_t *c)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = r->params[0];
    res = cd_db_exec(c, "SELECT id::text,"
                        " pg_advisory_xact_lock(hashtextextended(id::text,"
                        " 19)) FROM prompts WHERE slug = $1", 1, params);

    if (cd_request_found(r, c, res, CD_PROMPT_NOT_FOUND, r->params[0])
        != CD_OK)
    {
        PQclear(res);
        return NULL;
    }

    return res;
}


void
cd_api_prompts_version_create(cd_request_t *r)
{
    char              *text;
    json_t            *body, *answer;
    PGresult          *tmpl, *res;
    const char        *params[4];
    cd_db_conn_t      *c;
    cd_field_error_t   err;
    char               cap[CD_INT_TEXT];

    if (cd_prompt_slug_param(r) != CD_OK) {
        return;
    }

    if (r->body_len == 0) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_json",
                         NULL, "the request body must be a version object");
        return;
    }

    body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, NULL);

    if (body == NULL || !json_is_object(body)) {
        json_decref(body);
        cd_respond_error(r, 400, "invalid_request_error", "invalid_json",
                         NULL, "the request body must be a version object "
                         "(JSON)");
        return;
    }

    c = NULL;
    tmpl = res = NULL;
    text = NULL;

    if (cd_prompt_version_parse(body, "", &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        goto done;
    }

    tmpl = cd_prompt_lock(r, c);
    if (tmpl == NULL) {
        goto done;
    }

    snprintf(cap, sizeof(cap), "%d", CD_PROMPT_VERSIONS_MAX);
    params[0] = PQgetvalue(tmpl, 0, 0);
    params[1] = text;
    params[2] = r->key_id;
    params[3] = cap;

    res = cd_db_exec(c, "INSERT INTO prompt_versions (prompt_id, org_id,"
                        " version, body, created_by)"
                        " SELECT $1::uuid, current_setting('spendpol.org_id'),"
                        " coalesce(max(version), 0) + 1, $2::jsonb, $3"
                        " FROM prompt_versions WHERE prompt_id = $1::uuid"
                        " HAVING coalesce(max(version), 0) < $4::integer"
                        " RETURNING version, body::text, "
                        CD_SQL_TS("created_at") ", created_by", 4, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (PQntuples(res) == 0) {
        cd_respond_error(r, 422, "invalid_request_error", "org_limit_reached",
                         NULL, "template %s already has %d versions, the "
                         "most allowed", r->params[0],
                         CD_PROMPT_VERSIONS_MAX);
        goto done;
    }

    answer = cd_prompt_version_json(res, 0, 0);

    if (answer == NULL
        || json_object_set_new(answer, "template_id",
                               json_string(PQgetvalue(tmpl, 0, 0)))
        || json_object_set_new(answer, "slug", json_string(r->params[0])))
    {
        json_decref(answer);
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    if (cd_request_commit_respond(r, c, 1, 201, answer) == CD_OK) {
        cd_log_info(CD_PROMPTS_SUBJECT, "template %s version %s org=%s by %s",
                    r->params[0], PQgetvalue(res, 0, 0), r->org_id,
                    r->key_id);
    }

done:

    PQclear(tmpl);
    PQclear(res);
    free(text);

    if (c != NULL) {
        cd_request_end(r, c);
    }

    json_decref(body);
}


/* {label} of the path: the slug alphabet, else 422 naming label */
static int
cd_prompt_label_param(cd_request_t *r, unsigned status)
{
    if (sp_template_slug_valid(r->params[1], strlen(r->params[1]))) {
        return CD_OK;
    }

    cd_respond_error(r, status, status == 404 ? "not_found_error"
                                              : "invalid_request_error",
                     status == 404 ? "label_not_found" : "invalid_value",
                     "label", "label \"%.64s\" must be 1 to %d of a-z, 0-9, "
                     "_ and -, starting with a letter or digit",
                     r->params[1], SP_TEMPLATE_LABEL_MAX);

    return CD_ERROR;
}


void
cd_api_prompts_label_put(cd_request_t *r)
{
    char           version_text[CD_INT_TEXT];
    json_t        *body, *value, *answer;
    PGresult      *tmpl, *res;
    json_int_t     version;
    const char    *params[3];
    cd_db_conn_t  *c;

    if (cd_prompt_slug_param(r) != CD_OK
        || cd_prompt_label_param(r, 422) != CD_OK)
    {
        return;
    }

    body = cd_request_json(r, cd_label_fields);
    if (body == NULL) {
        return;
    }

    value = json_object_get(body, "version");

    if (value == NULL || !json_is_integer(value)) {
        cd_respond_error(r, value == NULL ? 422 : 400,
                         "invalid_request_error",
                         value == NULL ? "missing_field" : "invalid_type",
                         "version", "version must be the integer of one of "
                         "the template's versions");
        json_decref(body);
        return;
    }

    version = json_integer_value(value);
    json_decref(body);
    snprintf(version_text, sizeof(version_text), "%lld",
             (long long) version);

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = NULL;

    tmpl = cd_prompt_lock(r, c);
    if (tmpl == NULL) {
        goto done;
    }

    params[0] = PQgetvalue(tmpl, 0, 0);
    params[1] = r->params[1];
    params[2] = version_text;

    /* the version must exist: the select yields no row otherwise */
    res = cd_db_exec(c, "INSERT INTO prompt_labels AS l (prompt_id, org_id,"
                        " label, version)"
                        " SELECT v.prompt_id, v.org_id, $2, v.version"
                        " FROM prompt_versions v WHERE v.prompt_id = $1::uuid"
                        " AND v.version = $3::bigint"
                        " ON CONFLICT (prompt_id, label) DO UPDATE"
                        " SET version = EXCLUDED.version,"
                        " updated_at = clock_timestamp()"
                        " RETURNING l.label, l.version, "
                        CD_SQL_TS("l.updated_at"), 3, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (PQntuples(res) == 0) {
        cd_respond_error(r, 404, "not_found_error", "version_not_found",
                         "version", "template %s has no version %lld",
                         r->params[0], (long long) version);
        goto done;
    }

    answer = json_pack("{s:s, s:s, s:s, s:I, s:s}",
                       "template_id", PQgetvalue(tmpl, 0, 0),
                       "slug", r->params[0],
                       "label", PQgetvalue(res, 0, 0),
                       "version", (json_int_t) version,
                       "updated_at", PQgetvalue(res, 0, 2));

    if (answer == NULL) {
        cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                         "out of memory");
        goto done;
    }

    if (cd_request_commit_respond(r, c, 1, 200, answer) == CD_OK) {
        cd_log_info(CD_PROMPTS_SUBJECT, "template %s label %s -> %lld org=%s"
                    " by %s", r->params[0], r->params[1],
                    (long long) version, r->org_id, r->key_id);
    }

done:

    PQclear(tmpl);
    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_prompts_label_delete(cd_request_t *r)
{
    PGresult      *tmpl, *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (cd_prompt_slug_param(r) != CD_OK
        || cd_prompt_label_param(r, 404) != CD_OK)
    {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    res = NULL;

    tmpl = cd_prompt_lock(r, c);
    if (tmpl == NULL) {
        goto done;
    }

    params[0] = PQgetvalue(tmpl, 0, 0);
    params[1] = r->params[1];

    res = cd_db_exec(c, "DELETE FROM prompt_labels"
                        " WHERE prompt_id = $1::uuid AND label = $2",
                     2, params);

    if (cd_request_found(r, c, res, "label_not_found", "label",
                         "template %s has no label \"%s\"", r->params[0],
                         r->params[1]) != CD_OK)
    {
        goto done;
    }

    if (cd_request_commit_respond(r, c, 1, 204, NULL) == CD_OK) {
        cd_log_info(CD_PROMPTS_SUBJECT, "template %s label %s deleted org=%s"
                    " by %s", r->params[0], r->params[1], r->org_id,
                    r->key_id);
    }

done:

    PQclear(tmpl);
    PQclear(res);
    cd_request_end(r, c);
}
