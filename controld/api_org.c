/*
 * /org: the caller's organisation and the settings the proxy enforces
 * (refuse_unpriced_models: 400 unpriced_model instead of serving a model
 * without a price; rate_limits; allowed_endpoints: endpoints forwarded
 * beyond the built-in catalogue; route_skip_forbidden: X-Spendpol-Route:
 * skip is ignored, the routing rules always apply). PATCH and PUT both
 * change only the members given; allowed_endpoints, when given, replaces
 * the whole list.
 */

#include <stdio.h>
#include <string.h>

#include "controld.h"
#include "api.h"
#include "sp_endpoint.h"


#define CD_ORG_COLUMNS                                                       \
    "id, name, refuse_unpriced, " CD_SQL_TS("updated_at") ","               \
    " rpm_limit, tpm_limit, route_skip_forbidden"

static const char  *cd_org_fields[] = {
    "refuse_unpriced_models", "rate_limits", "allowed_endpoints",
    "route_skip_forbidden", NULL
};


/* ---- allowed_endpoints validation (pure, unit tested) ----------------- */

/* entry i's member (or the entry, member NULL) as the error's field */
static const char *
cd_endpoint_field(cd_field_error_t *err, size_t i, const char *member)
{
    if (member == NULL) {
        snprintf(err->field_buf, sizeof(err->field_buf),
                 "allowed_endpoints[%zu]", i);
    } else {
        snprintf(err->field_buf, sizeof(err->field_buf),
                 "allowed_endpoints[%zu].%s", i, member);
    }

    return err->field_buf;
}


/* a required string member of entry i, without NUL */
static int
cd_endpoint_string(json_t *entry, size_t i, const char *member,
    const char *expected, const char **out, cd_field_error_t *err)
{
    json_t      *value;
    const char  *field;

    value = json_object_get(entry, member);

    if (value == NULL || json_is_null(value)) {
        field = cd_endpoint_field(err, i, member);
        return cd_field_error(err, 422, "missing_field", field,
                              "%s is required: %s", field, expected);
    }

    if (!json_is_string(value)) {
        field = cd_endpoint_field(err, i, member);
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be a string: %s", field, expected);
    }

    *out = json_string_value(value);

    if (strlen(*out) != json_string_length(value)) {
        field = cd_endpoint_field(err, i, member);
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must not contain NUL characters", field);
    }

    return CD_OK;
}


int
cd_allowed_endpoints_parse(json_t *value, cd_allowed_endpoint_t *out,
    size_t *n, cd_field_error_t *err)
{
    char                    reason[160];
    size_t                  i, j;
    json_t                 *entry, *member;
    const char             *key, *field;
    cd_allowed_endpoint_t  *e;

    *n = 0;

    if (!json_is_array(value)) {
        return cd_field_error(err, 400, "invalid_type", "allowed_endpoints",
                              "allowed_endpoints must be an array of "
                              "{\"provider\", \"method\", \"path\"} "
                              "objects ([] allows none)");
    }

    if (json_array_size(value) > CD_ALLOWED_ENDPOINTS_MAX) {
        return cd_field_error(err, 422, "too_many_endpoints",
                              "allowed_endpoints", "allowed_endpoints holds "
                              "%zu entries; at most %d are allowed",
                              json_array_size(value),
                              CD_ALLOWED_ENDPOINTS_MAX);
    }

    json_array_foreach(value, i, entry) {
        if (!json_is_object(entry)) {
            field = cd_endpoint_field(err, i, NULL);
            return cd_field_error(err, 400, "invalid_type", field,
                                  "%s must be an object with provider, "
                                  "method and path", field);
        }

        json_object_foreach(entry, key, member) {
            if (strcmp(key, "provider") != 0 && strcmp(key, "method") != 0
                && strcmp(key, "path") != 0)
            {
                field = cd_endpoint_field(err, i, NULL);
                return cd_field_error(err, 400, "unknown_field", field,
                                      "%s.%.64s is not a known field "
                                      "(provider, method, path)", field,
                                      key);
            }
        }

        e = &out[i];

        if (cd_endpoint_string(entry, i, "provider",
                               "one of " SP_PROVIDER_NAMES_TEXT,
                               &e->provider, err) != CD_OK
            || cd_endpoint_string(entry, i, "method", "GET, POST, PUT, "
                                  "PATCH or DELETE", &e->method, err)
               != CD_OK
            || cd_endpoint_string(entry, i, "path", "a path pattern after "
                                  "/v1/{provider}, e.g. \"/batches\"",
                                  &e->path, err) != CD_OK)
        {
            return CD_ERROR;
        }

        if (cd_provider_default_url(e->provider) == NULL) {
            field = cd_endpoint_field(err, i, "provider");
            return cd_field_error(err, 422, "unknown_provider", field,
                                  "%s: unknown provider \"%.32s\"; expected "
                                  "one of " SP_PROVIDER_NAMES_TEXT, field,
                                  e->provider);
        }

        if (!sp_endpoint_method_valid(e->method, strlen(e->method))) {
            field = cd_endpoint_field(err, i, "method");
            return cd_field_error(err, 422, "invalid_method", field,
                                  "%s: \"%.16s\" is not a method that can "
                                  "be allowed; expected GET, POST, PUT, "
                                  "PATCH or DELETE (uppercase)", field,
                                  e->method);
        }

        reason[0] = '\0';

        if (sp_endpoint_pattern_valid(e->path, strlen(e->path), reason,
                                      sizeof(reason)) != SP_OK)
        {
            field = cd_endpoint_field(err, i, "path");
            return cd_field_error(err, 422, "invalid_path", field,
                                  "%s: %s", field,
                                  reason[0] ? reason : "not a usable path "
                                  "pattern");
        }

        for (j = 0; j < i; j++) {
            if (strcmp(out[j].provider, e->provider) == 0
                && strcmp(out[j].method, e->method) == 0
                && strcmp(out[j].path, e->path) == 0)
            {
                field = cd_endpoint_field(err, i, NULL);
                return cd_field_error(err, 422, "duplicate_endpoint", field,
                                      "%s repeats allowed_endpoints[%zu]",
                                      field, j);
            }
        }

        *n = i + 1;
    }

    return CD_OK;
}


/* ---- routes ----------------------------------------------------------- */

/* the organisation row (CD_ORG_COLUMNS) and its allowed endpoints */
static json_t *
cd_org_json(PGresult *res, PGresult *endpoints)
{
    int      i;
    json_t  *limits, *list, *entry;

    limits = cd_rate_limits_json(PQgetvalue(res, 0, 4),
                                 PQgetvalue(res, 0, 5));
    if (limits == NULL) {
        return NULL;
    }

    list = json_array();
    if (list == NULL) {
        json_decref(limits);
        return NULL;
    }

    for (i = 0; i < PQntuples(endpoints); i++) {
        entry = json_pack("{s:s, s:s, s:s}",
                          "provider", PQgetvalue(endpoints, i, 0),
                          "method", PQgetvalue(endpoints, i, 1),
                          "path", PQgetvalue(endpoints, i, 2));

        if (entry == NULL || json_array_append_new(list, entry) != 0) {
            json_decref(limits);
            json_decref(list);
            return NULL;
        }
    }

    return json_pack("{s:s, s:s, s:b, s:o, s:o, s:b, s:s}",
                     "id", PQgetvalue(res, 0, 0),
                     "name", PQgetvalue(res, 0, 1),
                     "refuse_unpriced_models", cd_db_bool(res, 0, 2),
                     "rate_limits", limits,
                     "allowed_endpoints", list,
                     "route_skip_forbidden", cd_db_bool(res, 0, 6),
                     "updated_at", PQgetvalue(res, 0, 3));
}


static PGresult *
cd_org_endpoints(cd_db_conn_t *c)
{
    return cd_db_exec(c, "SELECT provider, method, pattern"
                         " FROM org_allowed_endpoints ORDER BY ordinal",
                      0, NULL);
}


void
cd_api_org_get(cd_request_t *r)
{
    PGresult      *res, *endpoints;
    cd_db_conn_t  *c;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* RLS leaves exactly the caller's row, and the caller's endpoints */
    res = cd_db_exec(c, "SELECT " CD_ORG_COLUMNS " FROM orgs", 0, NULL);
    endpoints = res ? cd_org_endpoints(c) : NULL;

    if (res == NULL || PQntuples(res) != 1 || endpoints == NULL) {
        cd_respond_statement_error(r, c);
    } else {
        cd_respond(r, 200, cd_org_json(res, endpoints));
    }

    PQclear(res);
    PQclear(endpoints);
    cd_request_end(r, c);
}


/* replaces the organisation's allowed endpoints; answers a failure */
static int
cd_org_store_endpoints(cd_request_t *r, cd_db_conn_t *c,
    const cd_allowed_endpoint_t *list, size_t n)
{
    char         ordinal[24];
    size_t       i;
    PGresult    *res;
    const char  *params[4];

    res = cd_db_exec(c, "DELETE FROM org_allowed_endpoints", 0, NULL);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    PQclear(res);

    for (i = 0; i < n; i++) {
        snprintf(ordinal, sizeof(ordinal), "%zu", i);
        params[0] = ordinal;
        params[1] = list[i].provider;
        params[2] = list[i].method;
        params[3] = list[i].path;

        res = cd_db_exec(c, "INSERT INTO org_allowed_endpoints (org_id,"
                            " ordinal, provider, method, pattern)"
                            " VALUES (current_setting('spendpol.org_id'),"
                            " $1::integer, $2, $3, $4)", 4, params);
        if (res == NULL) {
            cd_respond_statement_error(r, c);
            return CD_ERROR;
        }

        PQclear(res);
    }

    return CD_OK;
}


void
cd_api_org_update(cd_request_t *r)
{
    int                    refuse, skip_forbidden;
    char                   rpm[CD_INT_TEXT], tpm[CD_INT_TEXT];
    size_t                 nendpoints;
    json_t                *body, *allowed, *org;
    PGresult              *res, *endpoints;
    const char            *params[4];
    cd_db_conn_t          *c;
    cd_field_error_t       err;
    cd_rate_limits_t       limits;
    cd_allowed_endpoint_t  list[CD_ALLOWED_ENDPOINTS_MAX];

    body = cd_request_json(r, cd_org_fields);
    if (body == NULL) {
        return;
    }

    if (cd_json_bool(r, body, "refuse_unpriced_models", &refuse) != CD_OK
        || cd_json_bool(r, body, "route_skip_forbidden", &skip_forbidden)
           != CD_OK
        || cd_rate_limits_of(r, body, &limits) != CD_OK)
    {
        json_decref(body);
        return;
    }

    allowed = json_object_get(body, "allowed_endpoints");

    if (allowed != NULL
        && cd_allowed_endpoints_parse(allowed, list, &nendpoints, &err)
           != CD_OK)
    {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    cd_rate_limits_text(&limits, rpm, tpm);

    /* NULL keeps the stored value */
    params[0] = refuse < 0 ? NULL : refuse ? "t" : "f";
    params[1] = limits.rpm < 0 ? NULL : rpm;
    params[2] = limits.tpm < 0 ? NULL : tpm;
    params[3] = skip_forbidden < 0 ? NULL : skip_forbidden ? "t" : "f";

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    endpoints = NULL;

    /* the row lock also makes concurrent replacements of the list serial */
    res = cd_db_exec(c, "UPDATE orgs SET refuse_unpriced ="
                        " coalesce($1::boolean, refuse_unpriced),"
                        " rpm_limit = coalesce($2::bigint, rpm_limit),"
                        " tpm_limit = coalesce($3::bigint, tpm_limit),"
                        " route_skip_forbidden = coalesce($4::boolean,"
                        " route_skip_forbidden),"
                        " updated_at = clock_timestamp()"
                        " RETURNING " CD_ORG_COLUMNS, 4, params);

    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (allowed != NULL
        && cd_org_store_endpoints(r, c, list, nendpoints) != CD_OK)
    {
        goto done;
    }

    endpoints = cd_org_endpoints(c);
    if (endpoints == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    org = cd_org_json(res, endpoints);

    if (cd_request_commit_respond(r, c, 1, 200, org) != CD_OK) {
        goto done;
    }

    if (allowed != NULL) {
        cd_log_info("org", "settings of %s updated, %zu allowed endpoints",
                    r->org_id, nendpoints);
    } else {
        cd_log_info("org", "settings of %s updated", r->org_id);
    }

done:

    PQclear(res);
    PQclear(endpoints);
    cd_request_end(r, c);
    json_decref(body);
}
