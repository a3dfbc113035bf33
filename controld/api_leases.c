/*
 * The budget leases of an organisation (lease.c, migration 016):
 *
 *   GET    /budget-leases            every node's lease of the org's
 *                                    budgets; live: the node renewed it
 *                                    within ttl + grace
 *   DELETE /budget-leases/{node_id}  frees the unused leases of a node
 *                                    gone for good (200, what was released
 *                                    per budget and period)
 *
 * A node whose controld stopped keeps its leases (the invariant needs
 * them held until its spend is counted): only an operator frees them.
 * If the node's journal is ingested afterwards, what it settled and was
 * never reported counts on top of the limit.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "controld.h"
#include "auth.h"
#include "api.h"


#define CD_LEASES_SUBJECT   "leases"
#define CD_LEASES_MAX       10000       /* rows a list returns */


static int
cd_lease_set_money(json_t *obj, const char *key, PGresult *res, int row,
    int col)
{
    char  text[SP_MONEY_STR_LEN];

    sp_money_format(strtoll(PQgetvalue(res, row, col), NULL, 10), text);

    return cd_json_set_str(obj, key, text);
}


static json_t *
cd_lease_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();

    if (obj == NULL
        || cd_json_set_column(obj, "node_id", res, row, 0)
        || cd_json_set_column(obj, "budget_id", res, row, 1)
        || cd_json_set_column(obj, "period_start", res, row, 2)
        || cd_lease_set_money(obj, "granted_usd", res, row, 3)
        || cd_lease_set_money(obj, "used_usd", res, row, 4)
        || cd_lease_set_money(obj, "spent_usd", res, row, 5)
        || cd_json_set_column(obj, "heartbeat_at", res, row, 6)
        || cd_json_set_column(obj, "expires_at", res, row, 7)
        || json_object_set_new(obj, "live",
                               json_boolean(cd_db_bool(res, row, 8))) != 0
        || cd_json_set_column(obj, "released_at", res, row, 9))
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


void
cd_api_leases_list(cd_request_t *r)
{
    char  sql[2048];

    /* the grace is a number of the configuration, never the request's */
    snprintf(sql, sizeof(sql),
        "SELECT l.node_id, l.budget_id, " CD_SQL_TS("l.period_start") ","
        " l.granted_nano, l.used_nano,"
        " coalesce((SELECT sum(s.spent_nano) FROM budget_node_spend s"
        " WHERE s.budget_id = l.budget_id"
        " AND s.period_start = l.period_start"
        " AND s.node_id = l.node_id), 0),"
        " " CD_SQL_TS("l.heartbeat_at") ", " CD_SQL_TS("l.expires_at") ","
        " l.reclaimed_at IS NULL AND l.expires_at"
        " + interval '%ld milliseconds' > now(),"
        " " CD_SQL_TS("l.reclaimed_at")
        " FROM budget_leases l"
        " ORDER BY l.node_id, l.budget_id, l.period_start"
        " LIMIT %d",
        r->app->config.lease_grace_ms, CD_LEASES_MAX);

    cd_list_respond(r, sql, cd_lease_json);
}


static int
cd_lease_node_param(cd_request_t *r)
{
    if (strlen(r->params[0]) > CD_ID_MAX - 1
        || cd_validate_text(r->params[0], 1, CD_ID_MAX - 1) != NULL)
    {
        cd_respond_error(r, 404, "not_found_error", "node_not_found",
                         "node_id", "no node with id \"%.64s\"",
                         r->params[0]);
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_api_leases_release(cd_request_t *r)
{
    int            i;
    json_t        *data, *item;
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (cd_lease_node_param(r) != CD_OK) {
        return;
    }

    /* the function lowers leases: the system role, scoped to the org */
    c = cd_db_acquire_begin(&r->app->db, CD_DB_WAIT_MS, CD_ROLE_SYSTEM,
                            NULL);
    if (c == NULL) {
        cd_respond_db_error(r);
        return;
    }

    params[0] = r->params[0];
    params[1] = r->org_id;

    res = cd_db_exec(c, "SELECT budget_id, "
                        CD_SQL_TS("period_start") ", released_nano"
                        " FROM spendpol_lease_release($1, $2)",
                     2, params);

    if (res == NULL || cd_db_commit(c) != CD_OK) {
        if (res != NULL) {
            PQclear(res);
        }

        cd_db_rollback(c);
        cd_db_release(&r->app->db, c);
        cd_respond_db_error(r);
        return;
    }

    cd_db_release(&r->app->db, c);

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 404, "not_found_error", "node_not_found",
                         "node_id", "no lease held by node \"%s\"",
                         r->params[0]);
        return;
    }

    data = json_array();

    for (i = 0; data != NULL && i < PQntuples(res); i++) {
        item = json_object();

        if (item == NULL || json_array_append_new(data, item) != 0
            || cd_json_set_column(item, "budget_id", res, i, 0)
            || cd_json_set_column(item, "period_start", res, i, 1)
            || cd_lease_set_money(item, "released_usd", res, i, 2))
        {
            json_decref(data);
            data = NULL;
        }
    }

    cd_log_info(CD_LEASES_SUBJECT, "released the leases of node %s org=%s "
                "by %s (%d)", r->params[0], r->org_id, r->key_id,
                PQntuples(res));

    PQclear(res);

    cd_respond(r, 200, data ? json_pack("{s:s, s:o}", "node_id",
                                        r->params[0], "data", data)
                            : NULL);
}
