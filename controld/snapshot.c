/*
 * The snapshot publisher: reads every active key (flagged when its agent
 * is paused or it may override attribution), provider (decrypted), price,
 * budget (with its current period), organisation setting, allowed
 * endpoint, routing rule set and prompt template as spendpol_system in
 * one repeatable-read transaction and publishes them atomically for the
 * nginx workers. It runs once at start,
 * at once when signalled after a commit, and whenever the change marker
 * state_version moved (writes by other controld nodes), a stored price
 * reached its effective_from, a budget period rolled over (also noticed
 * within 200 ms by the spend writer, which signals), or the last try
 * failed. A failed publish
 * keeps the previous file.
 */

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netdb.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"
#include "prices.h"
#include "outbound.h"
#include "api.h"
#include "sp_budget.h"
#include "sp_snapshot.h"
#include "metrics.h"


#define CD_SNAPSHOT_SUBJECT   "snapshot"
/*
 * How often the change marker is read (one row). A cache purge, like any
 * write, reaches the node that took it at once (cd_snapshot_signal); the
 * other nodes see it at their next poll: 500 ms plus a publish keeps a
 * purge well within the 1 s the cache's docs promise on every node.
 */
#define CD_SNAPSHOT_POLL_MS   500


typedef int (*cd_snapshot_row_pt)(sp_snapshot_builder_t *b, PGresult *res,
    int row);


/* every row of res into the builder; a row function may skip its row */
static int
cd_snapshot_add_rows(sp_snapshot_builder_t *b, PGresult *res,
    cd_snapshot_row_pt add_row)
{
    int  i;

    for (i = 0; i < PQntuples(res); i++) {
        if (add_row(b, res, i) != CD_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


static int
cd_snapshot_key_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    const char            *scopes;
    sp_snapshot_key_in_t   key;

    memset(&key, 0, sizeof(key));

    if (cd_db_bytea(res, i, 0, key.key_hash, sizeof(key.key_hash))
        != SP_KEY_HASH_LEN)
    {
        cd_log_warn(CD_SNAPSHOT_SUBJECT, "key %s has a malformed hash; "
                    "skipped", PQgetvalue(res, i, 1));
        return CD_OK;
    }

    key.key_id = PQgetvalue(res, i, 1);
    key.org_id = PQgetvalue(res, i, 2);
    key.name = PQgetvalue(res, i, 3);
    key.department = cd_db_value(res, i, 4);
    key.project = cd_db_value(res, i, 5);
    key.agent_id = cd_db_value(res, i, 6);

    /* "{proxy,admin}": the table's CHECK allows only these words */
    scopes = PQgetvalue(res, i, 7);
    key.scopes = (strstr(scopes, "proxy") ? SP_SCOPE_PROXY : 0)
                 | (strstr(scopes, "admin") ? SP_SCOPE_ADMIN : 0);
    key.flags = (cd_db_bool(res, i, 8) ? SP_KEY_AGENT_PAUSED : 0)
                | (cd_db_bool(res, i, 13) ? SP_KEY_ATTRIBUTION_OVERRIDE
                                          : 0)
                | (cd_db_bool(res, i, 14) ? SP_KEY_TEMPLATE_REQUIRED : 0);
    key.rpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 9), NULL, 10);
    key.tpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 10), NULL, 10);
    key.agent_rpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 11),
                                             NULL, 10);
    key.agent_tpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 12),
                                             NULL, 10);

    return sp_snapshot_add_key(b, &key) == SP_OK ? CD_OK : CD_ERROR;
}


static int
cd_snapshot_add_providers(cd_app_t *app, sp_snapshot_builder_t *b,
    PGresult *res)
{
    int                         i, rc;
    char                        aad[CD_ID_MAX * 2 + 2];
    size_t                      sealed_len, plain_len;
    uint8_t                    *sealed, *plain;
    sp_snapshot_provider_in_t   provider;

    for (i = 0; i < PQntuples(res); i++) {
        sealed_len = (size_t) PQgetlength(res, i, 3) / 2;
        sealed = malloc(sealed_len + 1);
        plain = malloc(sealed_len + 1);

        if (sealed == NULL || plain == NULL) {
            free(sealed);
            free(plain);
            return CD_ERROR;
        }

        snprintf(aad, sizeof(aad), "%s/%s", PQgetvalue(res, i, 0),
                 PQgetvalue(res, i, 1));

        rc = cd_db_bytea(res, i, 3, sealed, sealed_len);

        if (rc < 0
            || cd_aead_decrypt(app->master_key, sealed, (size_t) rc, aad,
                               plain, &plain_len) != CD_OK)
        {
            /* a wrong master key: the proxy answers "not configured" */
            cd_log_error(CD_SNAPSHOT_SUBJECT, "cannot decrypt the %s key of "
                         "%s (was SPENDPOL_MASTER_KEY changed?); skipped",
                         PQgetvalue(res, i, 1), PQgetvalue(res, i, 0));
            free(sealed);
            free(plain);
            continue;
        }

        plain[plain_len] = '\0';

        provider.org_id = PQgetvalue(res, i, 0);
        provider.provider = PQgetvalue(res, i, 1);
        provider.base_url = PQgetvalue(res, i, 2);
        provider.api_key = (const char *) plain;

        rc = sp_snapshot_add_provider(b, &provider);

        OPENSSL_cleanse(plain, plain_len);
        free(plain);
        free(sealed);

        if (rc != SP_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


static int
cd_snapshot_add_prices(sp_snapshot_builder_t *b, PGresult *res)
{
    int                      i, end, row;
    sp_snapshot_price_in_t   price;
    static const cd_price_cols_t  cols = { 0, 1, 2, 8 };

    /* one price per (organisation, provider, model): the one in effect */
    for (i = 0; i < PQntuples(res); i = end) {
        if (cd_prices_in_effect(res, i, &cols, &end, &row) != CD_OK) {
            return CD_ERROR;
        }

        if (row < 0) {
            continue;
        }

        memset(&price, 0, sizeof(price));
        price.org_id = cd_db_value(res, row, 0);
        price.provider = PQgetvalue(res, row, 1);
        price.model = PQgetvalue(res, row, 2);
        price.price.input = strtoll(PQgetvalue(res, row, 3), NULL, 10);
        price.price.output = strtoll(PQgetvalue(res, row, 4), NULL, 10);
        price.price.cached_input = strtoll(PQgetvalue(res, row, 5), NULL, 10);
        price.price.cache_write = strtoll(PQgetvalue(res, row, 6), NULL, 10);
        price.max_output_tokens = strtoll(PQgetvalue(res, row, 7), NULL, 10);

        if (sp_snapshot_add_price(b, &price) != SP_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


static int
cd_snapshot_limit_set(PGresult *res, int row, int rpm, int tpm)
{
    return strcmp(PQgetvalue(res, row, rpm), "0") != 0
           || strcmp(PQgetvalue(res, row, tpm), "0") != 0;
}


static uint64_t
cd_snapshot_rate_hash(const char *kind, const char *id)
{
    sp_str_t  s;

    s.data = (char *) id;
    s.len = strlen(id);

    return sp_rate_hash(kind, s);
}


/*
 * Tells ingest which subjects have a rate limit (rates.c): the keys with
 * their own, the agents of keys carrying an agent's, the organisations
 * with one. Out of memory: the previous set stays.
 */
static void
cd_snapshot_limited(cd_app_t *app, PGresult *keys, PGresult *orgs)
{
    int        i;
    size_t     n;
    uint64_t  *hashes;

    hashes = malloc(((size_t) PQntuples(keys) * 2
                     + (size_t) PQntuples(orgs) + 1) * sizeof(uint64_t));
    if (hashes == NULL) {
        return;
    }

    n = 0;

    for (i = 0; i < PQntuples(keys); i++) {
        if (cd_snapshot_limit_set(keys, i, 9, 10)) {
            hashes[n++] = cd_snapshot_rate_hash("key", PQgetvalue(keys, i, 1));
        }

        if (PQgetvalue(keys, i, 6)[0] != '\0'
            && cd_snapshot_limit_set(keys, i, 11, 12))
        {
            hashes[n++] = cd_snapshot_rate_hash("agent",
                                                PQgetvalue(keys, i, 6));
        }
    }

    for (i = 0; i < PQntuples(orgs); i++) {
        if (cd_snapshot_limit_set(orgs, i, 2, 3)) {
            hashes[n++] = cd_snapshot_rate_hash("org", PQgetvalue(orgs, i, 0));
        }
    }

    cd_rates_set_limited(app, hashes, n);
}


static int
cd_snapshot_org_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    size_t                 len;
    sp_snapshot_org_in_t   org;

    memset(&org, 0, sizeof(org));
    org.org_id = PQgetvalue(res, i, 0);
    org.flags = (cd_db_bool(res, i, 1) ? SP_ORG_REFUSE_UNPRICED : 0)
                | (cd_db_bool(res, i, 15) ? SP_ORG_ROUTE_SKIP_FORBIDDEN : 0);
    org.rpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 2), NULL, 10);
    org.tpm_limit = (uint32_t) strtoul(PQgetvalue(res, i, 3), NULL, 10);

    /*
     * No cache_config row: the builder writes the defaults. The table's
     * CHECKs hold the names to the ones the parsers know; a name they do
     * not know (a newer migration) turns the cache off, never on.
     */
    if (!PQgetisnull(res, i, 4)) {
        org.cache_set = 1;
        sp_cache_config_default(&org.cache);

        if (sp_cache_mode_parse(PQgetvalue(res, i, 4),
                                (size_t) PQgetlength(res, i, 4),
                                &org.cache.mode)
            != SP_OK
            || sp_cache_scope_parse(PQgetvalue(res, i, 5),
                                    (size_t) PQgetlength(res, i, 5),
                                    &org.cache.scope)
               != SP_OK)
        {
            cd_log_warn(CD_SNAPSHOT_SUBJECT, "organisation %s has an "
                        "unknown cache mode or scope; its cache is off",
                        org.org_id);
            sp_cache_config_default(&org.cache);
            org.cache.mode = SP_CACHE_OFF;
        }

        org.cache.ttl_s = (uint32_t) strtoul(PQgetvalue(res, i, 6), NULL,
                                             10);
        org.cache.only_deterministic = cd_db_bool(res, i, 7);
        org.cache.max_entry_bytes = (uint32_t) strtoul(PQgetvalue(res, i, 8),
                                                       NULL, 10);
        org.cache.threshold_ppm = (uint32_t) strtoul(PQgetvalue(res, i, 9),
                                                     NULL, 10);
        org.cache.embed_system = cd_db_bool(res, i, 12);
        org.cache.embed_timeout_ms = (uint32_t) strtoul(
                                         PQgetvalue(res, i, 13), NULL, 10);
        org.cache.max_vectors = (uint32_t) strtoul(PQgetvalue(res, i, 14),
                                                   NULL, 10);

        /*
         * NULL: unset. A mode semantic without both reads as exact in
         * the workers (sp_snapshot_cache_config()); the table's CHECK
         * keeps such rows out anyway.
         */
        if (!PQgetisnull(res, i, 10)) {
            org.cache.embed_provider = sp_provider_from_name(
                                           PQgetvalue(res, i, 10),
                                           (size_t) PQgetlength(res, i, 10));
        }

        len = (size_t) PQgetlength(res, i, 11);

        if (!PQgetisnull(res, i, 11)
            && sp_cache_embed_model_valid(PQgetvalue(res, i, 11), len))
        {
            memcpy(org.cache.embed_model, PQgetvalue(res, i, 11), len);
        }
    }

    return sp_snapshot_add_org(b, &org) == SP_OK ? CD_OK : CD_ERROR;
}


static int
cd_snapshot_cache_purge_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_cache_purge_in_t  purge;

    purge.org_id = PQgetvalue(res, i, 0);
    purge.provider = PQgetvalue(res, i, 1);
    purge.model = PQgetvalue(res, i, 2);
    purge.purged_ms = strtoll(PQgetvalue(res, i, 3), NULL, 10);

    return sp_snapshot_add_cache_purge(b, &purge) == SP_OK
           ? CD_OK : CD_ERROR;
}


static int
cd_snapshot_alias_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_alias_in_t   alias;

    alias.org_id = PQgetvalue(res, i, 0);
    alias.provider = PQgetvalue(res, i, 1);
    alias.alias = PQgetvalue(res, i, 2);
    alias.model = PQgetvalue(res, i, 3);

    return sp_snapshot_add_alias(b, &alias) == SP_OK ? CD_OK : CD_ERROR;
}


static int
cd_snapshot_budget_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    int                      scope;
    sp_snapshot_budget_in_t  budget;

    scope = cd_budget_scope_parse(PQgetvalue(res, i, 2));

    if (scope < 0) {
        return CD_OK;
    }

    memset(&budget, 0, sizeof(budget));
    budget.budget_id = PQgetvalue(res, i, 0);
    budget.org_id = PQgetvalue(res, i, 1);
    budget.scope = (uint32_t) scope;
    budget.scope_value = scope == SP_BUDGET_SCOPE_ORG
                         ? "" : PQgetvalue(res, i, 3);
    budget.provider = cd_db_value(res, i, 4);
    budget.model = cd_db_value(res, i, 5);
    budget.action = strcmp(PQgetvalue(res, i, 6), "warn") == 0
                    ? SP_BUDGET_WARN : SP_BUDGET_BLOCK;
    budget.limit_nano = strtoll(PQgetvalue(res, i, 7), NULL, 10);
    budget.period_start_ms = strtoll(PQgetvalue(res, i, 8), NULL, 10);
    budget.period_end_ms = strtoll(PQgetvalue(res, i, 9), NULL, 10);

    return sp_snapshot_add_budget(b, &budget) == SP_OK ? CD_OK : CD_ERROR;
}


static int
cd_snapshot_endpoint_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_endpoint_in_t  endpoint;

    endpoint.org_id = PQgetvalue(res, i, 0);
    endpoint.provider = PQgetvalue(res, i, 1);
    endpoint.method = PQgetvalue(res, i, 2);
    endpoint.pattern = PQgetvalue(res, i, 3);

    return sp_snapshot_add_endpoint(b, &endpoint) == SP_OK ? CD_OK : CD_ERROR;
}


/* the response cache's Redis tier: REDIS_URL's parts, the host resolved */
static int
cd_snapshot_add_redis(cd_app_t *app, sp_snapshot_builder_t *b)
{
    char                      host[NI_MAXHOST], port[16], db[16];
    size_t                    i;
    cd_redis_t               *rd;
    sp_snapshot_setting_in_t  settings[5];

    rd = &app->redis;

    if (!rd->enabled || cd_redis_resolve(rd, host, sizeof(host)) != CD_OK) {
        return CD_OK;
    }

    snprintf(port, sizeof(port), "%d", rd->port);
    snprintf(db, sizeof(db), "%d", rd->db);

    settings[0].name = SP_SETTING_REDIS_HOST;
    settings[0].value = host;
    settings[1].name = SP_SETTING_REDIS_PORT;
    settings[1].value = port;
    settings[2].name = SP_SETTING_REDIS_DB;
    settings[2].value = db;
    settings[3].name = SP_SETTING_REDIS_USER;
    settings[3].value = rd->user;
    settings[4].name = SP_SETTING_REDIS_PASSWORD;
    settings[4].value = rd->password;

    for (i = 0; i < 5; i++) {
        if (sp_snapshot_add_setting(b, &settings[i]) != SP_OK) {
            return CD_ERROR;
        }
    }

    return CD_OK;
}


/*
 * The module judges each upstream address by the same allow list and
 * refuses the admin API's own address: both travel in the snapshot.
 */
static int
cd_snapshot_add_settings(cd_app_t *app, sp_snapshot_builder_t *b)
{
    char                      listen[SP_NETADDR_STRLEN + 16];
    sp_snapshot_setting_in_t  setting;

    setting.name = SP_SETTING_UPSTREAM_ALLOW;
    setting.value = cd_outbound_allow_text();

    if (sp_snapshot_add_setting(b, &setting) != SP_OK) {
        return CD_ERROR;
    }

    cd_outbound_admin_listen(app->http.port ? app->http.port
                                            : app->config.api_port,
                             listen, sizeof(listen));
    setting.name = SP_SETTING_ADMIN_LISTEN;
    setting.value = listen;

    if (sp_snapshot_add_setting(b, &setting) != SP_OK) {
        return CD_ERROR;
    }

    /* where the module journals a raw provider key's refusal */
    if (app->config.shadow_org && app->config.shadow_org[0]) {
        setting.name = SP_SETTING_SHADOW_ORG;
        setting.value = app->config.shadow_org;

        if (sp_snapshot_add_setting(b, &setting) != SP_OK) {
            return CD_ERROR;
        }
    }

    return cd_snapshot_add_redis(app, b);
}


/* an organisation's enabled rules: org_id, CD_ROUTING_RULES_JSON */
static int
cd_snapshot_routes_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_routes_in_t  routes;

    routes.org_id = PQgetvalue(res, i, 0);
    routes.rules = PQgetvalue(res, i, 1);

    return sp_snapshot_add_routes(b, &routes) == SP_OK ? CD_OK : CD_ERROR;
}


/* an organisation's enabled policies: org_id, CD_POLICIES_JSON */
static int
cd_snapshot_policies_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_routes_in_t  policies;

    policies.org_id = PQgetvalue(res, i, 0);
    policies.rules = PQgetvalue(res, i, 1);

    return sp_snapshot_add_policies(b, &policies) == SP_OK ? CD_OK : CD_ERROR;
}


/* a template: org_id, slug, CD_PROMPT_RECORD_JSON */
static int
cd_snapshot_template_row(sp_snapshot_builder_t *b, PGresult *res, int i)
{
    sp_snapshot_template_in_t  tmpl;

    tmpl.org_id = PQgetvalue(res, i, 0);
    tmpl.slug = PQgetvalue(res, i, 1);
    tmpl.record = PQgetvalue(res, i, 2);

    return sp_snapshot_add_template(b, &tmpl) == SP_OK ? CD_OK : CD_ERROR;
}


static PGresult *
cd_snapshot_query(cd_db_conn_t *c, const char *sql)
{
    PGresult  *res;

    res = cd_db_exec(c, sql, 0, NULL);

    if (res == NULL) {
        cd_log_error(CD_SNAPSHOT_SUBJECT, "query failed: %s",
                     PQerrorMessage(c->pg));
    }

    return res;
}


int
cd_snapshot_publish_now(cd_app_t *app)
{
    int                     rc;
    char                    err[256];
    int64_t                 version;
    uint64_t                generation;
    PGresult               *marker, *keys, *providers, *prices, *gen;
    PGresult               *orgs, *aliases, *next_change, *budgets;
    PGresult               *endpoints, *purges, *routes, *templates;
    PGresult               *policies;
    int64_t                 next_us, budget_end_us;
    int64_t                 started, queried, built, published;
    cd_db_conn_t           *c;
    sp_snapshot_builder_t  *b;

    marker = keys = providers = prices = gen = orgs = aliases = NULL;
    next_change = budgets = endpoints = purges = routes = templates = NULL;
    policies = NULL;
    b = NULL;
    rc = CD_ERROR;
    started = cd_clock_ms(CLOCK_MONOTONIC);

    c = cd_db_acquire_begin(&app->db, 10000, CD_ROLE_SYSTEM, NULL);
    if (c == NULL) {
        cd_metrics_snapshot_publish(0, started);
        return CD_ERROR;
    }

    /* one consistent view of keys, providers and prices */
    if (cd_db_exec_script(c, "SET TRANSACTION ISOLATION LEVEL "
                             "REPEATABLE READ") != CD_OK)
    {
        goto done;
    }

    marker = cd_snapshot_query(c, "SELECT version FROM state_version");
    keys = marker ? cd_snapshot_query(c,
               "SELECT k.key_hash, k.id, k.org_id, k.name, k.department,"
               " k.project, k.agent_id, k.scopes::text,"
               " coalesce(a.state = 'paused', false),"
               " k.rpm_limit, k.tpm_limit, coalesce(a.rpm_limit, 0),"
               " coalesce(a.tpm_limit, 0), k.attribution_override,"
               " k.require_template"
               " FROM api_keys k LEFT JOIN agents a"
               " ON a.id = k.agent_id AND a.org_id = k.org_id"
               " WHERE k.active") : NULL;
    providers = keys ? cd_snapshot_query(c,
               "SELECT org_id, name, base_url, api_key_enc FROM providers")
               : NULL;

    /*
     * Every dated price, newest first per (org, provider, model): which
     * one is in effect is sp_price_effective()'s rule, applied in
     * cd_snapshot_add_prices(), the same the admin API shows.
     */
    prices = providers ? cd_snapshot_query(c,
               "SELECT org_id, provider, model, input_nano, output_nano,"
               " coalesce(cached_input_nano, input_nano),"
               " coalesce(cache_write_nano, input_nano),"
               " coalesce(max_output_tokens, 0), effective_from <= now()"
               " FROM model_prices"
               " ORDER BY org_id NULLS FIRST, provider, model,"
               " effective_from DESC") : NULL;
    next_change = prices ? cd_snapshot_query(c,
               "SELECT coalesce(" CD_SQL_US("min(effective_from)") ", 0),"
               " (SELECT coalesce(" CD_SQL_US("min(spendpol_period_end("
               "period, timezone, now()))") ", 0) FROM budgets)"
               " FROM model_prices WHERE effective_from > now()") : NULL;

    /* each budget's current period, in its time zone */
    budgets = next_change ? cd_snapshot_query(c,
               "SELECT id, org_id, scope_type, scope_value, provider, model,"
               " action, limit_nano, "
               CD_SQL_MS("spendpol_period_start(period, timezone,"
                         " created_at, now())") ", coalesce("
               CD_SQL_MS("spendpol_period_end(period, timezone, now())")
               ", 0) FROM budgets") : NULL;
    orgs = budgets ? cd_snapshot_query(c,
               "SELECT o.id, o.refuse_unpriced, o.rpm_limit, o.tpm_limit,"
               " c.mode, c.scope, c.ttl_seconds, c.only_deterministic,"
               " c.max_entry_bytes, c.similarity_threshold_ppm,"
               " c.embedding_provider, c.embedding_model,"
               " c.embed_system_prompt, c.embedding_timeout_ms,"
               " c.max_vectors, o.route_skip_forbidden"
               " FROM orgs o LEFT JOIN cache_config c ON c.org_id = o.id")
               : NULL;
    aliases = orgs ? cd_snapshot_query(c,
               "SELECT org_id, provider, alias, model FROM model_aliases")
               : NULL;
    endpoints = aliases ? cd_snapshot_query(c,
               "SELECT org_id, provider, method, pattern"
               " FROM org_allowed_endpoints") : NULL;
    /* the database's clock: the module compares it with entries' ages */
    purges = endpoints ? cd_snapshot_query(c,
               "SELECT org_id, provider, model, "
               CD_SQL_MS("purged_at") " FROM cache_purges") : NULL;
    routes = purges ? cd_snapshot_query(c,
               "SELECT org_id, " CD_ROUTING_RULES_JSON
               " FROM routing_rules WHERE enabled GROUP BY org_id") : NULL;
    templates = routes ? cd_snapshot_query(c,
               "SELECT p.org_id, p.slug, " CD_PROMPT_RECORD_JSON
               " FROM prompts p") : NULL;
    policies = templates ? cd_snapshot_query(c,
               "SELECT org_id, " CD_POLICIES_JSON
               " FROM policies WHERE enabled GROUP BY org_id") : NULL;
    gen = policies ? cd_snapshot_query(c,
               "SELECT nextval('snapshot_generation')") : NULL;

    if (gen == NULL || PQntuples(marker) != 1) {
        goto done;
    }

    if (cd_db_commit(c) != CD_OK) {
        goto done;
    }

    queried = cd_clock_ms(CLOCK_MONOTONIC);
    version = strtoll(PQgetvalue(marker, 0, 0), NULL, 10);

    /* the next price to take effect or budget period to roll over */
    next_us = strtoll(PQgetvalue(next_change, 0, 0), NULL, 10);
    budget_end_us = strtoll(PQgetvalue(next_change, 0, 1), NULL, 10);

    if (budget_end_us > 0 && (next_us == 0 || budget_end_us < next_us)) {
        next_us = budget_end_us;
    }

    generation = strtoull(PQgetvalue(gen, 0, 0), NULL, 10);

    b = sp_snapshot_builder_new(generation);

    if (b == NULL
        || cd_snapshot_add_rows(b, keys, cd_snapshot_key_row) != CD_OK
        || cd_snapshot_add_providers(app, b, providers) != CD_OK
        || cd_snapshot_add_prices(b, prices) != CD_OK
        || cd_snapshot_add_rows(b, orgs, cd_snapshot_org_row) != CD_OK
        || cd_snapshot_add_rows(b, aliases, cd_snapshot_alias_row) != CD_OK
        || cd_snapshot_add_rows(b, budgets, cd_snapshot_budget_row) != CD_OK
        || cd_snapshot_add_rows(b, endpoints, cd_snapshot_endpoint_row)
           != CD_OK
        || cd_snapshot_add_rows(b, purges, cd_snapshot_cache_purge_row)
           != CD_OK
        || cd_snapshot_add_rows(b, routes, cd_snapshot_routes_row) != CD_OK
        || cd_snapshot_add_rows(b, templates, cd_snapshot_template_row)
           != CD_OK
        || cd_snapshot_add_rows(b, policies, cd_snapshot_policies_row)
           != CD_OK
        || cd_snapshot_add_settings(app, b) != CD_OK)
    {
        cd_log_error(CD_SNAPSHOT_SUBJECT, "out of memory building "
                     "generation %llu", (unsigned long long) generation);
        goto done;
    }

    built = cd_clock_ms(CLOCK_MONOTONIC);

    if (sp_snapshot_publish(b, app->config.snapshot_dir, SP_SNAPSHOT_FILE,
                            app->config.snapshot_mode, err, sizeof(err))
        != SP_OK)
    {
        cd_log_error(CD_SNAPSHOT_SUBJECT, "cannot publish generation %llu "
                     "to %s: %s; the previous snapshot stays",
                     (unsigned long long) generation,
                     app->config.snapshot_dir, err);
        goto done;
    }

    published = cd_clock_ms(CLOCK_MONOTONIC);

    cd_snapshot_limited(app, keys, orgs);

    pthread_mutex_lock(&app->snapshot.mutex);
    app->snapshot.generation = generation;
    app->snapshot.state_version = version;
    app->snapshot.next_change_us = next_us;
    pthread_mutex_unlock(&app->snapshot.mutex);

    cd_log_info(CD_SNAPSHOT_SUBJECT, "published generation %llu (%d keys, "
                "%d providers, %d prices, %d orgs, %d aliases, %d budgets, "
                "%d allowed endpoints, %d cache purges, %d routing rule "
                "sets, %d templates, %d policy sets) "
                "in %lld ms (read %lld, build %lld, write %lld)",
                (unsigned long long) generation, PQntuples(keys),
                PQntuples(providers), PQntuples(prices), PQntuples(orgs),
                PQntuples(aliases), PQntuples(budgets), PQntuples(endpoints),
                PQntuples(purges), PQntuples(routes), PQntuples(templates),
                PQntuples(policies), (long long) (published - started),
                (long long) (queried - started), (long long) (built - queried),
                (long long) (published - built));
    rc = CD_OK;

done:

    sp_snapshot_builder_free(b);
    PQclear(marker);
    PQclear(keys);
    PQclear(providers);
    PQclear(prices);
    PQclear(gen);
    PQclear(orgs);
    PQclear(aliases);
    PQclear(next_change);
    PQclear(budgets);
    PQclear(endpoints);
    PQclear(purges);
    PQclear(routes);
    PQclear(templates);
    PQclear(policies);
    cd_db_rollback(c);
    cd_db_release(&app->db, c);
    cd_metrics_snapshot_publish(rc == CD_OK, started);

    /*
     * A large publish (1M keys: ~900 MB of rows, records and the file's
     * copy) leaves freed memory in malloc's arenas; give it back, so
     * controld's RSS returns to its size between publishes.
     */
    malloc_trim(0);

    return rc;
}


/* 1 when the marker moved since the last publish or the file is gone */
static int
cd_snapshot_stale(cd_app_t *app)
{
    int            stale;
    char           path[4096];
    int64_t        published, next_change;
    PGresult      *res;
    cd_db_conn_t  *c;
    struct stat    st;

    snprintf(path, sizeof(path), "%s/%s", app->config.snapshot_dir,
             SP_SNAPSHOT_FILE);

    if (stat(path, &st) != 0) {
        cd_log_warn(CD_SNAPSHOT_SUBJECT, "%s is missing; republishing", path);
        return 1;
    }

    c = cd_db_acquire(&app->db, 2000);
    if (c == NULL) {
        return 0;
    }

    /* the database's clock decides when a stored price takes effect */
    res = cd_db_exec(c, "SELECT version, "
                        CD_SQL_US("clock_timestamp()")
                        " FROM state_version", 0, NULL);
    cd_db_release(&app->db, c);

    if (res == NULL || PQntuples(res) != 1) {
        PQclear(res);
        return 0;
    }

    pthread_mutex_lock(&app->snapshot.mutex);
    published = app->snapshot.state_version;
    next_change = app->snapshot.next_change_us;
    pthread_mutex_unlock(&app->snapshot.mutex);

    stale = strtoll(PQgetvalue(res, 0, 0), NULL, 10) != published
            || (next_change > 0
                && strtoll(PQgetvalue(res, 0, 1), NULL, 10) >= next_change);
    PQclear(res);

    return stale;
}


static void *
cd_snapshot_thread(void *data)
{
    int        woken, failed;
    cd_app_t  *app;

    app = data;
    failed = 0;

    for ( ;; ) {
        woken = cd_thread_sleep(&app->snapshot.thread, CD_SNAPSHOT_POLL_MS);

        if (cd_thread_stopping(&app->snapshot.thread)) {
            break;
        }

        if (woken || failed || cd_snapshot_stale(app)) {
            failed = cd_snapshot_publish_now(app) != CD_OK;

            /*
             * a budget the module can now see is laid out in the spend
             * file and listed for leases before its first request asks
             */
            if (!failed) {
                cd_thread_wake(&app->spend.thread);
            }
        }
    }

    return NULL;
}


int
cd_snapshot_init(cd_app_t *app)
{
    memset(&app->snapshot, 0, sizeof(cd_snapshot_t));
    app->snapshot.state_version = -1;

    if (pthread_mutex_init(&app->snapshot.mutex, NULL) != 0) {
        cd_log_error(CD_SNAPSHOT_SUBJECT, "no mutex");
        return CD_ERROR;
    }

    /* before the start: a publish asked for meanwhile is kept */
    if (cd_thread_init(&app->snapshot.thread, CD_SNAPSHOT_SUBJECT)
        != CD_OK)
    {
        pthread_mutex_destroy(&app->snapshot.mutex);
        return CD_ERROR;
    }

    app->snapshot.inited = 1;

    return CD_OK;
}


void
cd_snapshot_destroy(cd_app_t *app)
{
    if (app->snapshot.inited) {
        pthread_mutex_destroy(&app->snapshot.mutex);
        app->snapshot.inited = 0;
    }
}


int
cd_snapshot_start(cd_app_t *app)
{
    return cd_thread_start(&app->snapshot.thread, CD_SNAPSHOT_SUBJECT,
                           cd_snapshot_thread, app);
}


void
cd_snapshot_signal(cd_app_t *app)
{
    cd_thread_wake(&app->snapshot.thread);
}


void
cd_snapshot_stop(cd_app_t *app)
{
    cd_thread_stop(&app->snapshot.thread);
}


uint64_t
cd_snapshot_generation(cd_app_t *app)
{
    uint64_t  generation;

    pthread_mutex_lock(&app->snapshot.mutex);
    generation = app->snapshot.generation;
    pthread_mutex_unlock(&app->snapshot.mutex);

    return generation;
}
