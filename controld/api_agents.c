/*
 * /agents: automated callers that own API keys (api_keys.agent_id). A
 * paused agent's keys travel in the snapshot with SP_KEY_AGENT_PAUSED, so
 * every nginx worker refuses them (403 agent_paused) as soon as it maps
 * the next generation; pause and resume republish at once. Who paused or
 * resumed (the admin key) and when is kept in agent_events, which
 * outlives the agent. rate_limits (requests and tokens a minute across
 * all of the agent's keys) travel the same way, on each of its keys.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "api.h"


#define CD_AGENTS_SUBJECT      "agents"
#define CD_AGENT_DESCRIPTION   2000

#define CD_AGENT_COLUMNS                                                     \
    "id, name, description, state, " CD_SQL_TS("created_at") ", "            \
    CD_SQL_TS("updated_at") ", " CD_SQL_US("created_at") ", rpm_limit,"     \
    " tpm_limit"

enum {
    CD_AGENT_ID = 0, CD_AGENT_NAME, CD_AGENT_DESCRIPTION_COL, CD_AGENT_STATE,
    CD_AGENT_CREATED, CD_AGENT_UPDATED, CD_AGENT_CREATED_US, CD_AGENT_RPM,
    CD_AGENT_TPM
};

static const char  *cd_agent_fields[] = {
    "name", "description", "rate_limits", NULL
};


static json_t *
cd_agent_json(PGresult *res, int row)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }


    if (cd_json_set_column(obj, "id", res, row, CD_AGENT_ID)
        || cd_json_set_column(obj, "name", res, row, CD_AGENT_NAME)
        || cd_json_set_column(obj, "description", res, row,
                              CD_AGENT_DESCRIPTION_COL)
        || cd_json_set_column(obj, "state", res, row, CD_AGENT_STATE)
        || cd_json_set_column(obj, "created_at", res, row, CD_AGENT_CREATED)
        || cd_json_set_column(obj, "updated_at", res, row, CD_AGENT_UPDATED))
    {
        json_decref(obj);
        return NULL;
    }


    if (json_object_set_new(obj, "rate_limits",
            cd_rate_limits_json(cd_db_value(res, row, CD_AGENT_RPM),
                                cd_db_value(res, row, CD_AGENT_TPM)))
        != 0)
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* the agent's row and its events, oldest first, as one object */
static json_t *
cd_agent_load(cd_request_t *r, cd_db_conn_t *c, const char *id)
{
    int          i;
    json_t      *agent, *events, *event;
    PGresult    *res, *ev;
    const char  *params[1];

    params[0] = id;
    res = cd_db_exec(c, "SELECT " CD_AGENT_COLUMNS " FROM agents"
                        " WHERE id = $1", 1, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return NULL;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        cd_respond_error(r, 404, "not_found_error", "agent_not_found", "id",
                         "no agent with id \"%s\"", id);
        return NULL;
    }

    ev = cd_db_exec(c, "SELECT action, key_id, " CD_SQL_TS("created_at")
                       " FROM agent_events WHERE agent_id = $1"
                       " ORDER BY created_at, id", 1, params);
    if (ev == NULL) {
        PQclear(res);
        cd_respond_statement_error(r, c);
        return NULL;
    }

    agent = cd_agent_json(res, 0);
    events = json_array();

    if (agent == NULL || events == NULL
        || json_object_set_new(agent, "events", events) != 0)
    {
        events = NULL;
        goto failed;
    }

    for (i = 0; i < PQntuples(ev); i++) {
        event = json_object();

        if (event == NULL || json_array_append_new(events, event) != 0
            || cd_json_set_str(event, "action", PQgetvalue(ev, i, 0))
            || cd_json_set_str(event, "by", cd_db_value(ev, i, 1))
            || cd_json_set_str(event, "at", PQgetvalue(ev, i, 2)))
        {
            goto failed;
        }
    }

    PQclear(res);
    PQclear(ev);

    return agent;

failed:

    json_decref(agent);
    PQclear(res);
    PQclear(ev);
    cd_respond_error(r, 500, "api_error", "out_of_memory", NULL,
                     "out of memory");

    return NULL;
}


static int
cd_agent_event(cd_request_t *r, cd_db_conn_t *c, const char *id,
    const char *action)
{
    PGresult    *res;
    const char  *params[3];

    params[0] = id;
    params[1] = action;
    params[2] = r->key_id;

    res = cd_db_exec(c, "INSERT INTO agent_events (org_id, agent_id, action,"
                        " key_id) VALUES (current_setting('spendpol.org_id'),"
                        " $1, $2, $3)", 3, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);
        return CD_ERROR;
    }

    PQclear(res);

    return CD_OK;
}


static int
cd_agent_id_param(cd_request_t *r)
{
    return cd_id_param(r, SP_ID_AGENT, "agent_not_found");
}


/* what POST and PATCH /agents read from the body */
typedef struct {
    const char        *name;
    const char        *description;
    cd_rate_limits_t   limits;
    char               rpm[CD_INT_TEXT];
    char               tpm[CD_INT_TEXT];
} cd_agent_body_t;


/*
 * reads the body both writes of an agent take; name_required is 1 for a
 * create, 0 for an update; NULL has answered
 */
static json_t *
cd_agent_body(cd_request_t *r, int name_required, cd_agent_body_t *a)
{
    json_t  *body;

    body = cd_request_json(r, cd_agent_fields);
    if (body == NULL) {
        return NULL;
    }

    if (cd_json_string(r, body, "name", name_required, 1, CD_NAME_MAX,
                       &a->name) != CD_OK
        || cd_json_string(r, body, "description", 0, 0, CD_AGENT_DESCRIPTION,
                          &a->description) != CD_OK
        || cd_rate_limits_of(r, body, &a->limits) != CD_OK)
    {
        json_decref(body);
        return NULL;
    }

    cd_rate_limits_text(&a->limits, a->rpm, a->tpm);

    return body;
}


/* commits, republishes when the proxy must see it, answers agent */
static void
cd_agent_finish(cd_request_t *r, cd_db_conn_t *c, const char *id,
    unsigned status, int republish, const char *what)
{
    json_t  *agent;

    agent = cd_agent_load(r, c, id);
    if (agent == NULL) {
        return;
    }

    if (cd_request_commit_respond(r, c, republish, status, agent) != CD_OK) {
        return;
    }

    cd_log_info(CD_AGENTS_SUBJECT, "%s %s org=%s by %s", what, id, r->org_id,
                r->key_id);
}


void
cd_api_agents_create(cd_request_t *r)
{
    char              id[CD_ID_MAX];
    json_t           *body;
    PGresult         *res;
    const char       *params[5];
    cd_db_conn_t     *c;
    cd_agent_body_t   a;

    body = cd_agent_body(r, 1, &a);
    if (body == NULL) {
        return;
    }

    c = cd_request_begin_create(r, CD_AGENT_ID_PREFIX, id, "agents", NULL,
                                r->app->config.max_agents_per_org,
                                "SPENDPOL_MAX_AGENTS_PER_ORG", "agents");
    if (c == NULL) {
        json_decref(body);
        return;
    }

    params[0] = id;
    params[1] = a.name;
    params[2] = a.description;
    params[3] = a.rpm;
    params[4] = a.tpm;

    res = cd_db_exec(c, "INSERT INTO agents (id, org_id, name, description,"
                        " rpm_limit, tpm_limit)"
                        " VALUES ($1, current_setting('spendpol.org_id'),"
                        " $2, $3, $4, $5)", 5, params);
    if (res == NULL) {
        cd_respond_statement_error(r, c);

    } else if (cd_agent_event(r, c, id, "created") == CD_OK) {
        cd_agent_finish(r, c, id, 201, 0, "created");
    }

    PQclear(res);
    cd_request_end(r, c);
    json_decref(body);
}


/* ?state=active|paused */
static int
cd_agent_state_filter(cd_request_t *r, const char *name, const char **value)
{
    *value = cd_query(r, name);

    if (*value != NULL && strcmp(*value, "active") != 0
        && strcmp(*value, "paused") != 0)
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_filter",
                         name, "%s must be active or paused", name);
        return CD_ERROR;
    }

    return CD_OK;
}


void
cd_api_agents_list(cd_request_t *r)
{
    static const cd_page_t  page = {
        .sql = CD_PAGE_SQL(CD_AGENT_COLUMNS, "agents",
                           " AND ($4::text IS NULL OR state = $4)"),
        .default_limit = 100,
        .id_column = CD_AGENT_ID,
        .created_us_column = CD_AGENT_CREATED_US,
        .row_json = cd_agent_json,
        .filters = { "state" },
        .filter = cd_agent_state_filter
    };

    cd_page_respond(r, &page);
}


void
cd_api_agents_get(cd_request_t *r)
{
    json_t        *agent;
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_agent_id_param);
    if (c == NULL) {
        return;
    }

    agent = cd_agent_load(r, c, r->params[0]);

    if (agent != NULL) {
        cd_respond(r, 200, agent);
    }

    cd_request_end(r, c);
}


void
cd_api_agents_update(cd_request_t *r)
{
    json_t           *body;
    PGresult         *res;
    const char       *params[6];
    cd_db_conn_t     *c;
    cd_agent_body_t   a;

    if (cd_agent_id_param(r) != CD_OK) {
        return;
    }

    /* name may be left out, not cleared; description null clears it */
    body = cd_agent_body(r, 0, &a);
    if (body == NULL) {
        return;
    }

    if (json_is_null(json_object_get(body, "name"))) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "name", "name cannot be null");
        json_decref(body);
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        json_decref(body);
        return;
    }

    params[0] = r->params[0];
    params[1] = a.name;
    params[2] = a.description;
    params[3] = json_object_get(body, "description") != NULL ? "t" : "f";

    /* NULL keeps the stored limit */
    params[4] = a.limits.rpm < 0 ? NULL : a.rpm;
    params[5] = a.limits.tpm < 0 ? NULL : a.tpm;

    res = cd_db_exec(c, "UPDATE agents SET name = coalesce($2, name),"
                        " description = CASE WHEN $4::boolean THEN $3"
                        " ELSE description END,"
                        " rpm_limit = coalesce($5::bigint, rpm_limit),"
                        " tpm_limit = coalesce($6::bigint, tpm_limit),"
                        " updated_at = clock_timestamp() WHERE id = $1",
                     6, params);

    if (cd_request_found(r, c, res, "agent_not_found", "id",
        "no agent with id \"%s\"", r->params[0]) == CD_OK
        && cd_agent_event(r, c, r->params[0], "updated") == CD_OK)
    {
        cd_agent_finish(r, c, r->params[0], 200,
                        a.limits.rpm >= 0 || a.limits.tpm >= 0, "updated");
    }

    PQclear(res);
    cd_request_end(r, c);
    json_decref(body);
}


/*
 * 409 while an active key belongs to the agent: its keys would lose
 * their agent, and with it a pause. The DELETE comes first so that a key
 * being created for the agent (which locks the agent row) is waited for.
 */
void
cd_api_agents_delete(cd_request_t *r)
{
    PGresult      *res, *keys;
    const char    *params[1];
    cd_db_conn_t  *c;

    c = cd_request_begin_param(r, cd_agent_id_param);
    if (c == NULL) {
        return;
    }

    keys = NULL;
    params[0] = r->params[0];
    res = cd_db_exec(c, "DELETE FROM agents WHERE id = $1", 1, params);

    if (cd_request_found(r, c, res, "agent_not_found", "id",
        "no agent with id \"%s\"", r->params[0]) != CD_OK)
    {
        goto done;
    }

    keys = cd_db_exec(c, "SELECT count(*) FROM api_keys"
                         " WHERE agent_id = $1 AND active", 1, params);
    if (keys == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (strcmp(PQgetvalue(keys, 0, 0), "0") != 0) {
        cd_respond_error(r, 409, "conflict_error", "agent_in_use", "id",
                         "agent %s still has %s active API key(s); revoke "
                         "them first (DELETE /api-keys/{id})", r->params[0],
                         PQgetvalue(keys, 0, 0));
        goto done;
    }

    if (cd_agent_event(r, c, r->params[0], "deleted") != CD_OK
        || cd_request_commit_respond(r, c, 1, 204, NULL) != CD_OK)
    {
        goto done;
    }

    cd_log_info(CD_AGENTS_SUBJECT, "deleted %s org=%s by %s", r->params[0],
                r->org_id, r->key_id);

done:

    PQclear(res);
    PQclear(keys);
    cd_request_end(r, c);
}


/* idempotent: an event is recorded only when the state changes */
static void
cd_agent_set_state(cd_request_t *r, const char *state, const char *action)
{
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (cd_agent_id_param(r) != CD_OK || cd_request_no_options(r) != CD_OK) {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    params[1] = state;

    res = cd_db_exec(c, "UPDATE agents SET state = $2,"
                        " updated_at = clock_timestamp()"
                        " WHERE id = $1 AND state <> $2", 2, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);

    } else if (strcmp(PQcmdTuples(res), "0") == 0) {
        /* unchanged, or unknown: the load answers 404 for the latter */
        cd_agent_finish(r, c, r->params[0], 200, 0, "unchanged");

    } else if (cd_agent_event(r, c, r->params[0], action) == CD_OK) {
        cd_agent_finish(r, c, r->params[0], 200, 1, action);
    }

    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_agents_pause(cd_request_t *r)
{
    cd_agent_set_state(r, "paused", "paused");
}


void
cd_api_agents_resume(cd_request_t *r)
{
    cd_agent_set_state(r, "active", "resumed");
}
