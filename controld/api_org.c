/*
 * /org: the caller's organisation and the settings the proxy enforces
 * (refuse_unpriced_models: 400 unpriced_model instead of serving a model
 * without a price).
 */

#include <stdio.h>
#include <string.h>

#include "controld.h"


#define CD_ORG_COLUMNS                                                       \
    "id, name, refuse_unpriced, " CD_SQL_TS("updated_at") ","               \
    " rpm_limit, tpm_limit"

static const char  *cd_org_fields[] = {
    "refuse_unpriced_models", "rate_limits", NULL
};


static json_t *
cd_org_json(PGresult *res)
{
    json_t  *limits;

    limits = cd_rate_limits_json(PQgetvalue(res, 0, 4),
                                 PQgetvalue(res, 0, 5));
    if (limits == NULL) {
        return NULL;
    }

    return json_pack("{s:s, s:s, s:b, s:o, s:s}",
                     "id", PQgetvalue(res, 0, 0),
                     "name", PQgetvalue(res, 0, 1),
                     "refuse_unpriced_models", cd_db_bool(res, 0, 2),
                     "rate_limits", limits,
                     "updated_at", PQgetvalue(res, 0, 3));
}


void
cd_api_org_get(cd_request_t *r)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* RLS leaves exactly the caller's row */
    res = cd_db_exec(c, "SELECT " CD_ORG_COLUMNS " FROM orgs", 0, NULL);

    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);
    } else {
        cd_respond(r, 200, cd_org_json(res));
    }

    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_org_update(cd_request_t *r)
{
    char              rpm[24], tpm[24];
    json_t           *body, *refuse;
    PGresult         *res;
    const char       *params[3];
    cd_db_conn_t     *c;
    cd_rate_limits_t  limits;

    body = cd_request_json(r, cd_org_fields);
    if (body == NULL) {
        return;
    }

    refuse = json_object_get(body, "refuse_unpriced_models");

    if (refuse != NULL && !json_is_boolean(refuse)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "refuse_unpriced_models", "refuse_unpriced_models "
                         "must be true or false");
        json_decref(body);
        return;
    }

    if (cd_rate_limits_of(r, body, &limits) != CD_OK) {
        json_decref(body);
        return;
    }

    snprintf(rpm, sizeof(rpm), "%lld", (long long) limits.rpm);
    snprintf(tpm, sizeof(tpm), "%lld", (long long) limits.tpm);

    /* NULL keeps the stored value: PATCH semantics */
    params[0] = refuse == NULL ? NULL : json_is_true(refuse) ? "t" : "f";
    params[1] = limits.rpm < 0 ? NULL : rpm;
    params[2] = limits.tpm < 0 ? NULL : tpm;

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    res = cd_db_exec(c, "UPDATE orgs SET refuse_unpriced ="
                        " coalesce($1::boolean, refuse_unpriced),"
                        " rpm_limit = coalesce($2::bigint, rpm_limit),"
                        " tpm_limit = coalesce($3::bigint, tpm_limit),"
                        " updated_at = clock_timestamp()"
                        " RETURNING " CD_ORG_COLUMNS, 3, params);

    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);

    } else {
        json_t  *org = cd_org_json(res);

        if (cd_request_commit(r, c) == CD_OK) {
            cd_snapshot_signal(r->app);
            cd_log_info("org", "settings of %s updated", r->org_id);
            cd_respond(r, 200, org);
        } else {
            json_decref(org);
        }
    }

    PQclear(res);
    cd_request_end(r, c);
    json_decref(body);
}
