/*
 * /providers/{name}: the organisation's provider credentials, encrypted
 * at rest with AES-256-GCM (the org and provider name are the associated
 * data). The credential is written, never read back.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controld.h"
#include "crypto.h"
#include "webhook.h"
#include "outbound.h"
#include "api.h"
#include "sp_provider.h"


#define CD_PROVIDERS_SUBJECT  "providers"
#define CD_BASE_URL_MAX       2048
#define CD_PROVIDER_KEY_MAX   8192

#define CD_ALIASES_MAX        1000

/* providers p: the aliases as one JSON object, sorted */
#define CD_PROVIDER_COLUMNS                                                  \
    "p.name, p.base_url, " CD_SQL_TS("p.updated_at") ","                     \
    " coalesce((SELECT json_object_agg(a.alias, a.model ORDER BY a.alias)"   \
    " FROM model_aliases a WHERE a.org_id = p.org_id"                        \
    " AND a.provider = p.name), '{}')::text"


static const char  *cd_provider_fields[] = {
    "api_key", "base_url", "model_aliases", NULL
};


const char *
cd_provider_default_url(const char *name)
{
    const sp_provider_t  *provider;

    provider = sp_provider_find(name, strlen(name));

    return provider ? provider->default_base_url : NULL;
}


int
cd_provider_param(cd_request_t *r, const char *name, unsigned status,
    const char *field)
{
    if (sp_provider_find(name, strlen(name)) != NULL) {
        return CD_OK;
    }

    cd_respond_error(r, status, status == 404 ? "not_found_error"
                     : "invalid_request_error", "unknown_provider", field,
                     "unknown provider \"%.64s\": expected one of "
                     SP_PROVIDER_NAMES_TEXT, name);

    return CD_ERROR;
}


int
cd_base_url_normalize(char *url)
{
    size_t       len, scheme;
    cd_url_t     parsed;
    const char  *p;

    if (strncmp(url, "https://", 8) == 0) {
        scheme = 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        scheme = 7;
    } else {
        return 0;
    }

    len = strlen(url);

    while (len > scheme && url[len - 1] == '/') {
        url[--len] = '\0';
    }

    /* a host, and nothing that could split or smuggle a request line */
    if (len == scheme || url[scheme] == '/' || url[scheme] == '?'
        || url[scheme] == '#' || url[scheme] == '@' || len > CD_BASE_URL_MAX)
    {
        return 0;
    }

    for (p = url; *p != '\0'; p++) {
        if ((unsigned char) *p <= 0x20 || *p == 0x7f || *p == '#'
            || *p == '?' || *p == '\\')
        {
            return 0;
        }
    }

    /*
     * The gateway takes what comes before the first '/' as host[:port]
     * (Host header, TLS name): it must be one, without userinfo.
     */
    if (cd_url_parse(url, &parsed) != CD_OK || parsed.userinfo[0] != '\0') {
        return 0;
    }

    return 1;
}


/*
 * The operator chooses the addresses the gateway may reach: refuses a
 * base URL outside SPENDPOL_UPSTREAM_ALLOW (answers 422).
 */
static int
cd_provider_url_allowed(cd_request_t *r, const char *base_url)
{
    char         msg[512];
    cd_url_t     u;
    const char  *rule;

    if (cd_url_parse(base_url, &u) != CD_OK) {
        return CD_ERROR;
    }

    if (cd_outbound_check_url(&u, msg, sizeof(msg), &rule) == CD_OK) {
        return CD_OK;
    }

    cd_respond_error(r, 422, "invalid_request_error", "upstream_not_allowed",
                     "base_url", "base_url %s (rule: %s)", msg, rule);
    cd_log_info(CD_PROVIDERS_SUBJECT, "refused base_url for %s org=%s: %s",
                r->params[0], r->org_id, rule);

    return CD_ERROR;
}


static int
cd_provider_name_param(cd_request_t *r)
{
    return cd_provider_param(r, r->params[0], 404, "name");
}


static json_t *
cd_provider_json(PGresult *res, int row)
{
    json_t  *aliases;

    aliases = json_loads(PQgetvalue(res, row, 3), 0, NULL);
    if (aliases == NULL) {
        return NULL;
    }

    return json_pack("{s:s, s:s, s:b, s:s, s:o}",
                     "name", PQgetvalue(res, row, 0),
                     "base_url", PQgetvalue(res, row, 1),
                     "api_key_set", 1,
                     "updated_at", PQgetvalue(res, row, 2),
                     "model_aliases", aliases);
}


/*
 * model_aliases: {"deployment-or-alias": "model", ...}, e.g. an Azure
 * deployment name -> the model it runs, so it is priced. Answers the
 * error and returns CD_ERROR when invalid.
 */
static int
cd_provider_aliases(cd_request_t *r, json_t *aliases)
{
    json_t      *model;
    const char  *alias, *problem;

    if (!json_is_object(aliases)) {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "model_aliases", "model_aliases must be an object "
                         "mapping an alias (e.g. an Azure deployment) to a "
                         "model name");
        return CD_ERROR;
    }

    if (json_object_size(aliases) > CD_ALIASES_MAX) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "model_aliases", "model_aliases holds at most %d "
                         "entries", CD_ALIASES_MAX);
        return CD_ERROR;
    }

    json_object_foreach(aliases, alias, model) {
        if (!json_is_string(model)) {
            cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                             "model_aliases", "model_aliases[\"%.64s\"] must "
                             "be a model name string", alias);
            return CD_ERROR;
        }

        problem = cd_validate_text(alias, 1, CD_NAME_MAX);

        if (problem == NULL) {
            problem = cd_validate_text(json_string_value(model), 1,
                                       CD_NAME_MAX);
        }

        if (problem != NULL
            || strlen(json_string_value(model)) != json_string_length(model))
        {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                             "model_aliases", "model_aliases[\"%.64s\"]: "
                             "aliases and models must be 1 to %d printable "
                             "characters", alias, CD_NAME_MAX);
            return CD_ERROR;
        }
    }

    return CD_OK;
}


void
cd_api_providers_put(cd_request_t *r)
{
    int            lengths[4], formats[4];
    char          *base_url, *aliases_text, aad[CD_ID_MAX * 2 + 2];
    json_t        *body, *provider, *aliases;
    size_t         sealed_len;
    uint8_t       *sealed;
    PGresult      *res;
    const char    *api_key, *given_url, *params[4];
    cd_db_conn_t  *c;

    if (cd_provider_name_param(r) != CD_OK) {
        return;
    }

    body = cd_request_json(r, cd_provider_fields);
    if (body == NULL) {
        return;
    }

    base_url = NULL;
    aliases_text = NULL;
    sealed = NULL;
    c = NULL;
    res = NULL;

    if (!json_is_string(json_object_get(body, "api_key"))
        && json_object_get(body, "api_key") != NULL
        && !json_is_null(json_object_get(body, "api_key")))
    {
        cd_respond_error(r, 400, "invalid_request_error", "invalid_type",
                         "api_key", "api_key must be a string");
        goto done;
    }

    api_key = json_string_value(json_object_get(body, "api_key"));

    if (api_key == NULL || api_key[0] == '\0') {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "api_key", "api_key is required: the provider's "
                         "API key as a non-empty string");
        goto done;
    }

    /* never echo it: the messages name the field, not the value */
    if (strlen(api_key) > CD_PROVIDER_KEY_MAX
        || cd_validate_text(api_key, 1, CD_PROVIDER_KEY_MAX) != NULL)
    {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "api_key", "api_key must be printable text of at "
                         "most %d bytes", CD_PROVIDER_KEY_MAX);
        goto done;
    }

    if (cd_json_string(r, body, "base_url", 0, 1, CD_BASE_URL_MAX,
                       &given_url) != CD_OK)
    {
        goto done;
    }

    if (given_url != NULL) {
        base_url = strdup(given_url);

        if (base_url == NULL) {
            goto done;
        }

        if (!cd_base_url_normalize(base_url)) {
            cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                             "base_url", "base_url must be an http:// or "
                             "https:// URL with a host, without query or "
                             "fragment");
            goto done;
        }

        if (cd_provider_url_allowed(r, base_url) != CD_OK) {
            goto done;
        }

    } else if (cd_provider_default_url(r->params[0])[0] != '\0') {
        base_url = strdup(cd_provider_default_url(r->params[0]));

        if (base_url == NULL) {
            goto done;
        }
    }

    aliases = json_object_get(body, "model_aliases");

    if (json_is_null(aliases)) {
        aliases = NULL;
    }

    if (aliases != NULL && cd_provider_aliases(r, aliases) != CD_OK) {
        goto done;
    }

    snprintf(aad, sizeof(aad), "%s/%s", r->org_id, r->params[0]);
    sealed = malloc(strlen(api_key) + CD_AEAD_OVERHEAD);

    if (sealed == NULL
        || cd_aead_encrypt(r->app->master_key, (const uint8_t *) api_key,
                           strlen(api_key), aad, sealed, &sealed_len)
           != CD_OK)
    {
        cd_respond_error(r, 500, "api_error", "encryption_failed", NULL,
                         "could not encrypt the provider key");
        goto done;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        goto done;
    }

    memset(lengths, 0, sizeof(lengths));
    memset(formats, 0, sizeof(formats));
    params[0] = r->params[0];
    params[1] = base_url;
    params[2] = (const char *) sealed;
    lengths[2] = (int) sealed_len;
    formats[2] = 1;

    /*
     * Without base_url an existing row keeps its own; a new azure row
     * has none and is refused below, inside the same transaction.
     */
    res = cd_db_exec_bin(c,
              "INSERT INTO providers (org_id, name, base_url, api_key_enc)"
              " SELECT current_setting('spendpol.org_id'), $1, b.url, $3"
              " FROM (SELECT coalesce($2, (SELECT base_url FROM providers"
              " WHERE name = $1)) AS url) AS b WHERE b.url IS NOT NULL"
              " ON CONFLICT (org_id, name) DO UPDATE SET"
              " base_url = EXCLUDED.base_url,"
              " api_key_enc = EXCLUDED.api_key_enc,"
              " updated_at = clock_timestamp()"
              " RETURNING name",
              3, params, lengths, formats);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    if (PQntuples(res) == 0) {
        cd_respond_error(r, 422, "invalid_request_error", "missing_field",
                         "base_url", "base_url is required for %s: there is "
                         "no default endpoint (e.g. https://<resource>."
                         "openai.azure.com: the SDK's paths start with "
                         "/openai)", r->params[0]);
        goto done;
    }

    PQclear(res);
    res = NULL;

    /* given aliases replace the provider's set; absent ones are kept */
    if (aliases != NULL) {
        aliases_text = json_dumps(aliases, JSON_COMPACT);

        if (aliases_text == NULL) {
            goto done;
        }

        if (cd_db_command(c, "DELETE FROM model_aliases WHERE provider = $1",
                          1, params) != CD_OK)
        {
            cd_respond_statement_error(r, c);
            goto done;
        }

        params[1] = aliases_text;
        if (cd_db_command(c, "INSERT INTO model_aliases (org_id, provider,"
                             " alias, model)"
                             " SELECT current_setting('spendpol.org_id'), $1,"
                             " key, value FROM json_each_text($2::json)",
                          2, params) != CD_OK)
        {
            cd_respond_statement_error(r, c);
            goto done;
        }
    }

    res = cd_db_exec(c, "SELECT " CD_PROVIDER_COLUMNS " FROM providers p"
                        " WHERE p.name = $1", 1, params);
    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    provider = cd_provider_json(res, 0);

    if (cd_request_commit_respond(r, c, 1, 200, provider) != CD_OK) {
        goto done;
    }

    cd_log_info(CD_PROVIDERS_SUBJECT, "set %s org=%s", r->params[0],
                r->org_id);

done:

    if (c != NULL) {
        cd_request_end(r, c);
    }

    PQclear(res);

    if (sealed != NULL) {
        OPENSSL_cleanse(sealed, sealed_len);
        free(sealed);
    }

    free(base_url);
    free(aliases_text);
    json_decref(body);
}


void
cd_api_providers_list(cd_request_t *r)
{
    cd_list_respond(r, "SELECT " CD_PROVIDER_COLUMNS " FROM providers p"
                       " ORDER BY p.name",
                    cd_provider_json);
}


void
cd_api_providers_get(cd_request_t *r)
{
    cd_row_respond(r, cd_provider_name_param,
                   "SELECT " CD_PROVIDER_COLUMNS " FROM providers p"
                   " WHERE p.name = $1",
                   cd_provider_json, "provider_not_configured", "name",
                   "provider %1$s is not configured; PUT /providers/%1$s"
                   " with an api_key");
}


void
cd_api_providers_delete(cd_request_t *r)
{
    if (cd_delete_respond(r, cd_provider_name_param,
                          "DELETE FROM providers WHERE name = $1",
                          "provider_not_configured", "name",
                          "provider %s is not configured") == CD_OK)
    {
        cd_log_info(CD_PROVIDERS_SUBJECT, "deleted %s org=%s", r->params[0],
                    r->org_id);
    }
}
