/*
 * /cache: the response cache's settings, purges and figures (issue 12).
 *
 * The settings (GET/PUT /cache/config) and purges (DELETE /cache) are
 * rows the snapshot carries to the module (snapshot.c): a change is
 * published at once on this node and within a poll on the others. The
 * figures (GET /cache/stats) are the audit rows' cache outcomes in a time
 * range, and this node's zone as the ask header reports it.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controld.h"
#include "api.h"
#include "sp_cache.h"
#include "sp_provider.h"
#include "sp_usage.h"


#define CD_CACHE_COLUMNS                                                     \
    "mode, ttl_seconds, scope, only_deterministic, max_entry_bytes,"         \
    " similarity_threshold_ppm, embedding_provider, embedding_model,"        \
    " embed_system_prompt, embedding_timeout_ms, max_vectors"

#define CD_CACHE_EMBED_PROVIDERS                                             \
    "\"openai\", \"azure\", \"google\", \"cohere\" or \"mistral\""

#define CD_CACHE_STATS_DEFAULT_US   (24LL * 3600 * 1000000)

static const char  *cd_cache_fields[] = {
    "mode", "ttl_seconds", "scope", "only_deterministic", "max_entry_bytes",
    "similarity_threshold", "embedding_provider", "embedding_model",
    "embed_system_prompt", "embedding_timeout_ms", "max_vectors", NULL
};


/* ---- PUT /cache/config validation (pure, unit tested) ----------------- */

/* an integer member lo..hi; absent leaves *out */
static int
cd_cache_integer(json_t *body, const char *field, json_int_t lo,
    json_int_t hi, uint32_t *out, unsigned bit, unsigned *given,
    cd_field_error_t *err)
{
    json_t      *value;
    json_int_t   n;

    value = json_object_get(body, field);

    if (value == NULL) {
        return CD_OK;
    }

    if (!json_is_integer(value)) {
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be an integer from %lld to %lld",
                              field, (long long) lo, (long long) hi);
    }

    n = json_integer_value(value);

    if (n < lo || n > hi) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s is %lld; expected %lld to %lld", field,
                              (long long) n, (long long) lo, (long long) hi);
    }

    *out = (uint32_t) n;
    *given |= bit;

    return CD_OK;
}


/*
 * similarity_threshold: a number from 0.5 to 1.0 with at most 6 decimals,
 * stored as millionths so that the module compares exactly what was set
 */
static int
cd_cache_threshold(json_t *body, sp_cache_config_t *config,
    unsigned *given, cd_field_error_t *err)
{
    double   d, ppm, rounded;
    json_t  *value;

    value = json_object_get(body, "similarity_threshold");

    if (value == NULL) {
        return CD_OK;
    }

    if (!json_is_number(value)) {
        return cd_field_error(err, 400, "invalid_type",
                              "similarity_threshold", "similarity_threshold "
                              "must be a number from 0.5 to 1.0");
    }

    d = json_number_value(value);

    if (!(d >= 0.5 && d <= 1.0)) {
        return cd_field_error(err, 422, "invalid_value",
                              "similarity_threshold", "similarity_threshold "
                              "is %.15g; expected 0.5 to 1.0", d);
    }

    /* a double is within 1e-10 of a 6-decimal number in this range */
    ppm = d * 1e6;
    rounded = floor(ppm + 0.5);

    if (fabs(ppm - rounded) > 1e-6) {
        return cd_field_error(err, 422, "invalid_value",
                              "similarity_threshold", "similarity_threshold "
                              "is %.15g; expected at most 6 decimals "
                              "(e.g. 0.95)", d);
    }

    config->threshold_ppm = (uint32_t) rounded;
    *given |= CD_CACHE_THRESHOLD;

    return CD_OK;
}


/* embedding_provider: one with an embeddings endpoint; null unsets it */
static int
cd_cache_embed_provider(json_t *body, sp_cache_config_t *config,
    unsigned *given, cd_field_error_t *err)
{
    json_t         *value;
    const char     *s;
    sp_provider_e   provider;

    value = json_object_get(body, "embedding_provider");

    if (value == NULL) {
        return CD_OK;
    }

    if (json_is_null(value)) {
        config->embed_provider = SP_PROVIDER_UNKNOWN;
        *given |= CD_CACHE_EMBED_PROVIDER;
        return CD_OK;
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", "embedding_provider",
                              "embedding_provider must be a string: "
                              CD_CACHE_EMBED_PROVIDERS ", or null");
    }

    s = json_string_value(value);
    provider = sp_provider_from_name(s, json_string_length(value));

    if (provider == SP_PROVIDER_ANTHROPIC) {
        return cd_field_error(err, 422, "invalid_value", "embedding_provider",
                              "anthropic has no embeddings endpoint; "
                              "expected " CD_CACHE_EMBED_PROVIDERS);
    }

    if (!sp_cache_embed_provider_valid(provider)) {
        return cd_field_error(err, 422, "invalid_value", "embedding_provider",
                              "unknown embedding_provider \"%.32s\": "
                              "expected " CD_CACHE_EMBED_PROVIDERS, s);
    }

    config->embed_provider = provider;
    *given |= CD_CACHE_EMBED_PROVIDER;

    return CD_OK;
}


/* embedding_model: a name the module may send as it stands; null unsets */
static int
cd_cache_embed_model(json_t *body, sp_cache_config_t *config,
    unsigned *given, cd_field_error_t *err)
{
    size_t   len;
    json_t  *value;

    value = json_object_get(body, "embedding_model");

    if (value == NULL) {
        return CD_OK;
    }

    if (json_is_null(value)) {
        memset(config->embed_model, 0, SP_CACHE_EMBED_MODEL_LEN);
        *given |= CD_CACHE_EMBED_MODEL;
        return CD_OK;
    }

    if (!json_is_string(value)) {
        return cd_field_error(err, 400, "invalid_type", "embedding_model",
                              "embedding_model must be a string, or null");
    }

    len = json_string_length(value);

    if (!sp_cache_embed_model_valid(json_string_value(value), len)) {
        return cd_field_error(err, 422, "invalid_value", "embedding_model",
                              "embedding_model must be 1 to %d printable "
                              "ASCII characters without spaces",
                              SP_CACHE_EMBED_MODEL_LEN - 1);
    }

    memset(config->embed_model, 0, SP_CACHE_EMBED_MODEL_LEN);
    memcpy(config->embed_model, json_string_value(value), len);
    *given |= CD_CACHE_EMBED_MODEL;

    return CD_OK;
}


int
cd_cache_config_parse(json_t *body, sp_cache_config_t *config,
    unsigned *given, cd_field_error_t *err)
{
    int          b;
    json_t      *value;
    const char  *s;

    *given = 0;

    value = json_object_get(body, "mode");

    if (value != NULL) {
        if (!json_is_string(value)) {
            return cd_field_error(err, 400, "invalid_type", "mode",
                                  "mode must be a string: \"exact\", "
                                  "\"semantic\" or \"off\"");
        }

        s = json_string_value(value);

        if (sp_cache_mode_parse(s, json_string_length(value), &config->mode)
            != SP_OK)
        {
            return cd_field_error(err, 422, "invalid_value", "mode",
                                  "unknown mode \"%.32s\": expected "
                                  "\"exact\", \"semantic\" or \"off\"", s);
        }

        *given |= CD_CACHE_MODE;
    }

    value = json_object_get(body, "scope");

    if (value != NULL) {
        if (!json_is_string(value)) {
            return cd_field_error(err, 400, "invalid_type", "scope",
                                  "scope must be a string: \"org\", "
                                  "\"api_key\", \"project\" or "
                                  "\"department\"");
        }

        s = json_string_value(value);

        if (sp_cache_scope_parse(s, json_string_length(value),
                                 &config->scope)
            != SP_OK)
        {
            return cd_field_error(err, 422, "invalid_value", "scope",
                                  "unknown scope \"%.32s\": expected "
                                  "\"org\", \"api_key\", \"project\" or "
                                  "\"department\"", s);
        }

        *given |= CD_CACHE_SCOPE;
    }

    if (cd_cache_integer(body, "ttl_seconds", 1, SP_CACHE_TTL_MAX_S,
                         &config->ttl_s, CD_CACHE_TTL, given, err)
        != CD_OK
        || cd_cache_integer(body, "max_entry_bytes", 1,
                            SP_CACHE_MAX_ENTRY_MAX, &config->max_entry_bytes,
                            CD_CACHE_MAX_ENTRY, given, err)
           != CD_OK
        || cd_bool_parse(body, "only_deterministic", &b, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (b >= 0) {
        config->only_deterministic = (uint32_t) b;
        *given |= CD_CACHE_DETERMINISTIC;
    }

    if (cd_cache_threshold(body, config, given, err) != CD_OK
        || cd_cache_embed_provider(body, config, given, err) != CD_OK
        || cd_cache_embed_model(body, config, given, err) != CD_OK
        || cd_cache_integer(body, "embedding_timeout_ms",
                            SP_CACHE_EMBED_TIMEOUT_MIN,
                            SP_CACHE_EMBED_TIMEOUT_MAX,
                            &config->embed_timeout_ms, CD_CACHE_EMBED_TIMEOUT,
                            given, err)
           != CD_OK
        || cd_cache_integer(body, "max_vectors", 1, SP_CACHE_MAX_VECTORS_MAX,
                            &config->max_vectors, CD_CACHE_MAX_VECTORS,
                            given, err)
           != CD_OK
        || cd_bool_parse(body, "embed_system_prompt", &b, err) != CD_OK)
    {
        return CD_ERROR;
    }

    if (b >= 0) {
        config->embed_system = (uint32_t) b;
        *given |= CD_CACHE_EMBED_SYSTEM;
    }

    return CD_OK;
}


int
cd_cache_config_merge(sp_cache_config_t *config,
    const sp_cache_config_t *put, unsigned given, cd_field_error_t *err)
{
    const char  *missing;

    if (given & CD_CACHE_MODE) {
        config->mode = put->mode;
    }

    if (given & CD_CACHE_TTL) {
        config->ttl_s = put->ttl_s;
    }

    if (given & CD_CACHE_SCOPE) {
        config->scope = put->scope;
    }

    if (given & CD_CACHE_DETERMINISTIC) {
        config->only_deterministic = put->only_deterministic;
    }

    if (given & CD_CACHE_MAX_ENTRY) {
        config->max_entry_bytes = put->max_entry_bytes;
    }

    if (given & CD_CACHE_THRESHOLD) {
        config->threshold_ppm = put->threshold_ppm;
    }

    if (given & CD_CACHE_EMBED_PROVIDER) {
        config->embed_provider = put->embed_provider;
    }

    if (given & CD_CACHE_EMBED_MODEL) {
        memcpy(config->embed_model, put->embed_model,
               SP_CACHE_EMBED_MODEL_LEN);
    }

    if (given & CD_CACHE_EMBED_SYSTEM) {
        config->embed_system = put->embed_system;
    }

    if (given & CD_CACHE_EMBED_TIMEOUT) {
        config->embed_timeout_ms = put->embed_timeout_ms;
    }

    if (given & CD_CACHE_MAX_VECTORS) {
        config->max_vectors = put->max_vectors;
    }

    if (config->mode != SP_CACHE_SEMANTIC) {
        return CD_OK;
    }

    /* never a half-configured semantic cache: the snapshot would say exact */
    if (config->embed_model[0] != '\0'
        && config->embed_provider != SP_PROVIDER_UNKNOWN)
    {
        return CD_OK;
    }

    if (config->embed_model[0] == '\0'
        && config->embed_provider == SP_PROVIDER_UNKNOWN)
    {
        return cd_field_error(err, 422, "missing_field", "embedding_model",
                              "mode \"semantic\" needs embedding_provider "
                              "and embedding_model: give them in this PUT "
                              "or set them first");
    }

    missing = config->embed_model[0] == '\0' ? "embedding_model"
                                             : "embedding_provider";

    return cd_field_error(err, 422, "missing_field", missing,
                          "mode \"semantic\" needs %s: give it in this PUT "
                          "or set it first", missing);
}


json_t *
cd_cache_config_json(const sp_cache_config_t *config)
{
    size_t       len;
    json_t      *provider, *model;
    const char  *mode, *scope, *name;

    mode = sp_cache_mode_name(config->mode);
    scope = sp_cache_scope_name(config->scope);

    if (mode == NULL || scope == NULL) {
        return NULL;
    }

    if (config->embed_provider == SP_PROVIDER_UNKNOWN) {
        provider = json_null();

    } else {
        name = sp_cache_embed_provider_valid(config->embed_provider)
               ? sp_provider_name(config->embed_provider) : NULL;

        if (name == NULL) {
            return NULL;
        }

        provider = json_string(name);
    }

    len = strnlen(config->embed_model, SP_CACHE_EMBED_MODEL_LEN);
    model = len ? json_stringn(config->embed_model, len) : json_null();

    /* "o" takes the references, and a NULL one fails the whole pack */
    return json_pack("{s:s, s:I, s:s, s:b, s:I, s:f, s:o, s:o, s:b, s:I,"
                     " s:I}",
                     "mode", mode,
                     "ttl_seconds", (json_int_t) config->ttl_s,
                     "scope", scope,
                     "only_deterministic", (int) config->only_deterministic,
                     "max_entry_bytes", (json_int_t) config->max_entry_bytes,
                     "similarity_threshold",
                     (double) config->threshold_ppm / 1e6,
                     "embedding_provider", provider,
                     "embedding_model", model,
                     "embed_system_prompt", (int) config->embed_system,
                     "embedding_timeout_ms",
                     (json_int_t) config->embed_timeout_ms,
                     "max_vectors", (json_int_t) config->max_vectors);
}


/* ---- routes ----------------------------------------------------------- */

/*
 * A cache_config row (CD_CACHE_COLUMNS) into config; the table's CHECKs
 * hold it to the values the parsers know, so a failure is a bug or a
 * newer schema: the caller answers 500.
 */
static int
cd_cache_config_row(PGresult *res, sp_cache_config_t *config)
{
    size_t  len;

    if (sp_cache_mode_parse(PQgetvalue(res, 0, 0),
                            (size_t) PQgetlength(res, 0, 0), &config->mode)
        != SP_OK
        || sp_cache_scope_parse(PQgetvalue(res, 0, 2),
                                (size_t) PQgetlength(res, 0, 2),
                                &config->scope)
           != SP_OK)
    {
        return CD_ERROR;
    }

    config->ttl_s = (uint32_t) strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    config->only_deterministic = (uint32_t) cd_db_bool(res, 0, 3);
    config->max_entry_bytes = (uint32_t) strtoul(PQgetvalue(res, 0, 4),
                                                 NULL, 10);
    config->threshold_ppm = (uint32_t) strtoul(PQgetvalue(res, 0, 5), NULL,
                                               10);
    config->embed_system = (uint32_t) cd_db_bool(res, 0, 8);
    config->embed_timeout_ms = (uint32_t) strtoul(PQgetvalue(res, 0, 9),
                                                  NULL, 10);
    config->max_vectors = (uint32_t) strtoul(PQgetvalue(res, 0, 10), NULL,
                                             10);

    config->embed_provider = SP_PROVIDER_UNKNOWN;

    if (!PQgetisnull(res, 0, 6)) {
        config->embed_provider = sp_provider_from_name(
                                     PQgetvalue(res, 0, 6),
                                     (size_t) PQgetlength(res, 0, 6));

        if (!sp_cache_embed_provider_valid(config->embed_provider)) {
            return CD_ERROR;
        }
    }

    memset(config->embed_model, 0, SP_CACHE_EMBED_MODEL_LEN);

    if (!PQgetisnull(res, 0, 7)) {
        len = (size_t) PQgetlength(res, 0, 7);

        if (!sp_cache_embed_model_valid(PQgetvalue(res, 0, 7), len)) {
            return CD_ERROR;
        }

        memcpy(config->embed_model, PQgetvalue(res, 0, 7), len);
    }

    return CD_OK;
}


static void
cd_cache_respond_config(cd_request_t *r, cd_db_conn_t *c, PGresult *res,
    int commit)
{
    json_t             *json;
    sp_cache_config_t   config;

    sp_cache_config_default(&config);

    if (PQntuples(res) == 1 && cd_cache_config_row(res, &config) != CD_OK) {
        cd_log_error("cache", "the cache settings of %s hold an unknown "
                     "mode, scope or embeddings endpoint", r->org_id);
        cd_respond_db_error(r);
        return;
    }

    json = cd_cache_config_json(&config);

    if (json == NULL) {
        cd_respond_db_error(r);
        return;
    }

    if (!commit) {
        cd_respond(r, 200, json);
        return;
    }

    if (cd_request_commit_respond(r, c, 1, 200, json) == CD_OK) {
        cd_log_info("cache", "cache settings of %s updated: mode %s, ttl "
                    "%u s, scope %s", r->org_id,
                    sp_cache_mode_name(config.mode), config.ttl_s,
                    sp_cache_scope_name(config.scope));
    }
}


void
cd_api_cache_config_get(cd_request_t *r)
{
    PGresult      *res;
    cd_db_conn_t  *c;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* RLS leaves the caller's row, or none: the defaults */
    res = cd_db_exec(c, "SELECT " CD_CACHE_COLUMNS " FROM cache_config",
                     0, NULL);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
    } else {
        cd_cache_respond_config(r, c, res, 0);
    }

    PQclear(res);
    cd_request_end(r, c);
}


/*
 * The PUT's statement. A new row is the merged settings ($14..$24: the
 * defaults and the PUT; PostgreSQL checks the table's CHECKs on them
 * even when the row exists). An existing row takes only the members
 * given ($1..$13, NULL keeps the stored value; embedding_provider and
 * embedding_model, which null unsets, when their flag $7, $9 says so):
 * two concurrent partial PUTs merge, neither is lost.
 */
#define CD_CACHE_UPSERT                                                      \
    "INSERT INTO cache_config AS c (org_id, mode, ttl_seconds, scope,"       \
    " only_deterministic, max_entry_bytes, similarity_threshold_ppm,"        \
    " embedding_provider, embedding_model, embed_system_prompt,"             \
    " embedding_timeout_ms, max_vectors, updated_at)"                        \
    " VALUES (current_setting('spendpol.org_id'), $14, $15::integer, $16,"   \
    " $17::boolean, $18::integer, $19::integer, $20, $21, $22::boolean,"     \
    " $23::integer, $24::integer, clock_timestamp())"                        \
    " ON CONFLICT (org_id) DO UPDATE SET"                                    \
    " mode = coalesce($1, c.mode),"                                          \
    " ttl_seconds = coalesce($2::integer, c.ttl_seconds),"                   \
    " scope = coalesce($3, c.scope),"                                        \
    " only_deterministic = coalesce($4::boolean, c.only_deterministic),"     \
    " max_entry_bytes = coalesce($5::integer, c.max_entry_bytes),"           \
    " similarity_threshold_ppm = coalesce($6::integer,"                      \
    " c.similarity_threshold_ppm),"                                          \
    " embedding_provider = CASE WHEN $7::boolean THEN $8"                    \
    " ELSE c.embedding_provider END,"                                        \
    " embedding_model = CASE WHEN $9::boolean THEN $10"                      \
    " ELSE c.embedding_model END,"                                           \
    " embed_system_prompt = coalesce($11::boolean, c.embed_system_prompt),"  \
    " embedding_timeout_ms = coalesce($12::integer,"                         \
    " c.embedding_timeout_ms),"                                              \
    " max_vectors = coalesce($13::integer, c.max_vectors),"                  \
    " updated_at = clock_timestamp()"                                        \
    " RETURNING " CD_CACHE_COLUMNS

#define CD_CACHE_CHECK_VIOLATION   "23514"

#define CD_CACHE_PARAMS            24

/* the texts of one config's values, for the statement's parameters */
typedef struct {
    char  ttl[CD_INT_TEXT];
    char  max_entry[CD_INT_TEXT];
    char  threshold[CD_INT_TEXT];
    char  timeout[CD_INT_TEXT];
    char  vectors[CD_INT_TEXT];
} cd_cache_text_t;


static void
cd_cache_text(cd_cache_text_t *t, const sp_cache_config_t *config)
{
    snprintf(t->ttl, sizeof(t->ttl), "%u", config->ttl_s);
    snprintf(t->max_entry, sizeof(t->max_entry), "%u",
             config->max_entry_bytes);
    snprintf(t->threshold, sizeof(t->threshold), "%u",
             config->threshold_ppm);
    snprintf(t->timeout, sizeof(t->timeout), "%u", config->embed_timeout_ms);
    snprintf(t->vectors, sizeof(t->vectors), "%u", config->max_vectors);
}


/*
 * config's values into params[0..12] in the statement's order: all of
 * them (given NULL, for a new row: provider and model after their
 * flags, which are then unused), or those given only
 */
static void
cd_cache_params(const char **params, const sp_cache_config_t *config,
    const cd_cache_text_t *t, const unsigned *given)
{
    unsigned  all;

    all = given ? *given : ~0u;

    params[0] = (all & CD_CACHE_MODE) ? sp_cache_mode_name(config->mode)
                                      : NULL;
    params[1] = (all & CD_CACHE_TTL) ? t->ttl : NULL;
    params[2] = (all & CD_CACHE_SCOPE) ? sp_cache_scope_name(config->scope)
                                       : NULL;
    params[3] = (all & CD_CACHE_DETERMINISTIC)
                ? (config->only_deterministic ? "t" : "f") : NULL;
    params[4] = (all & CD_CACHE_MAX_ENTRY) ? t->max_entry : NULL;
    params[5] = (all & CD_CACHE_THRESHOLD) ? t->threshold : NULL;
    params[6] = (all & CD_CACHE_EMBED_PROVIDER) ? "t" : "f";
    params[7] = config->embed_provider != SP_PROVIDER_UNKNOWN
                ? sp_provider_name(config->embed_provider) : NULL;
    params[8] = (all & CD_CACHE_EMBED_MODEL) ? "t" : "f";
    params[9] = config->embed_model[0] != '\0' ? config->embed_model : NULL;
    params[10] = (all & CD_CACHE_EMBED_SYSTEM)
                 ? (config->embed_system ? "t" : "f") : NULL;
    params[11] = (all & CD_CACHE_EMBED_TIMEOUT) ? t->timeout : NULL;
    params[12] = (all & CD_CACHE_MAX_VECTORS) ? t->vectors : NULL;
}


void
cd_api_cache_config_put(cd_request_t *r)
{
    json_t             *body;
    unsigned            given;
    PGresult           *res;
    const char         *params[CD_CACHE_PARAMS], *merged_params[13];
    cd_db_conn_t       *c;
    cd_cache_text_t     put_text, merged_text;
    cd_field_error_t    err;
    sp_cache_config_t   put, merged;

    body = cd_request_json(r, cd_cache_fields);
    if (body == NULL) {
        return;
    }

    sp_cache_config_default(&put);

    if (cd_cache_config_parse(body, &put, &given, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    json_decref(body);

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /*
     * The stored settings, locked: whether mode semantic has its
     * embeddings endpoint depends on them, and a PUT unsetting one must
     * not slip in between this check and the write. (Two first PUTs of
     * an organisation without a row are not serialised by the lock; the
     * table's CHECK refuses a half-configured result, answered 409.)
     */
    res = cd_db_exec(c, "SELECT " CD_CACHE_COLUMNS " FROM cache_config"
                        " FOR UPDATE", 0, NULL);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    sp_cache_config_default(&merged);

    if (PQntuples(res) == 1 && cd_cache_config_row(res, &merged) != CD_OK) {
        cd_log_error("cache", "the cache settings of %s hold an unknown "
                     "mode, scope or embeddings endpoint", r->org_id);
        cd_respond_db_error(r);
        goto done;
    }

    PQclear(res);
    res = NULL;

    if (cd_cache_config_merge(&merged, &put, given, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        goto done;
    }

    cd_cache_text(&put_text, &put);
    cd_cache_text(&merged_text, &merged);
    cd_cache_params(params, &put, &put_text, &given);
    cd_cache_params(merged_params, &merged, &merged_text, NULL);

    /* $14..$24: the merged values, without the two flags */
    memcpy(&params[13], &merged_params[0], 6 * sizeof(char *));
    params[19] = merged_params[7];
    params[20] = merged_params[9];
    memcpy(&params[21], &merged_params[10], 3 * sizeof(char *));

    res = cd_db_exec(c, CD_CACHE_UPSERT, CD_CACHE_PARAMS, params);

    if (res == NULL
        && strcmp(cd_db_last_sqlstate(c), CD_CACHE_CHECK_VIOLATION) == 0)
    {
        cd_respond_error(r, 409, "conflict_error", "concurrent_update",
                         "embedding_provider", "the cache settings changed "
                         "while this request ran; nothing was written, "
                         "retry");

    } else if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);

    } else {
        cd_cache_respond_config(r, c, res, 1);
    }

done:

    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_cache_purge(cd_request_t *r)
{
    json_t        *json;
    PGresult      *res;
    const char    *provider, *model, *params[2];
    cd_db_conn_t  *c;

    provider = cd_query(r, "provider");
    model = cd_query(r, "model");

    if (provider != NULL
        && cd_provider_param(r, provider, 422, "provider") != CD_OK)
    {
        return;
    }

    if (model != NULL) {
        if (provider == NULL) {
            cd_respond_error(r, 422, "invalid_request_error",
                             "provider_required", "model",
                             "model purges one provider's model: give "
                             "provider too (DELETE /cache?provider=openai"
                             "&model=gpt-4o-mini)");
            return;
        }

        if (cd_validate_text(model, 1, CD_NAME_MAX) != NULL
            || !cd_utf8_valid(model, strlen(model)))
        {
            cd_respond_error(r, 422, "invalid_request_error",
                             "invalid_value", "model", "model must be 1 to "
                             CD_STRINGIFY(CD_NAME_MAX) " printable UTF-8 "
                             "characters");
            return;
        }
    }

    params[0] = provider ? provider : "";
    params[1] = model ? model : "";

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /*
     * The database's clock, as the snapshot carries it: an entry the
     * module stored before it is not served. clock_timestamp(), not
     * now(): an entry stored while this transaction ran is purged too.
     */
    res = cd_db_exec(c, "INSERT INTO cache_purges AS p (org_id, provider,"
                        " model, purged_at)"
                        " VALUES (current_setting('spendpol.org_id'), $1, $2,"
                        " clock_timestamp())"
                        " ON CONFLICT (org_id, provider, model) DO UPDATE"
                        " SET purged_at = EXCLUDED.purged_at"
                        " RETURNING " CD_SQL_TS("purged_at"), 2, params);

    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    json = json_pack("{s:{s:s?, s:s?, s:s}}", "purged",
                     "provider", provider, "model", model,
                     "purged_at", PQgetvalue(res, 0, 0));

    if (json == NULL) {
        cd_respond_db_error(r);
        goto done;
    }

    /* publish: this node's snapshot carries the purge at once */
    if (cd_request_commit_respond(r, c, 1, 200, json) == CD_OK) {
        cd_log_info("cache", "cache of %s purged (provider %s, model %s)",
                    r->org_id, provider ? provider : "all",
                    model ? "given" : "all");
    }

done:

    PQclear(res);
    cd_request_end(r, c);
}


/* microseconds since the epoch as RFC 3339 UTC with milliseconds */
static void
cd_cache_time_text(int64_t us, char *out, size_t outlen)
{
    char       stamp[32];
    time_t     sec;
    struct tm  tm;

    sec = (time_t) (us / 1000000);
    gmtime_r(&sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03dZ", stamp, (int) (us % 1000000 / 1000));
}


/* hits / (hits + misses), 4 decimals; 0 when neither */
static json_t *
cd_cache_hit_rate(int64_t hits, int64_t misses)
{
    if (hits + misses == 0) {
        return json_integer(0);
    }

    return json_real(round((double) hits * 10000 / (double) (hits + misses))
                     / 10000);
}


/* the outcome counts of a stats row (columns 2..5) into obj */
static int
cd_cache_counts(json_t *obj, PGresult *res, int row)
{
    char     saved[SP_MONEY_STR_LEN];
    int64_t  hits, misses, skips;

    hits = strtoll(PQgetvalue(res, row, 2), NULL, 10);
    misses = strtoll(PQgetvalue(res, row, 3), NULL, 10);
    skips = strtoll(PQgetvalue(res, row, 4), NULL, 10);
    sp_money_format(strtoll(PQgetvalue(res, row, 5), NULL, 10), saved);

    return json_object_set_new(obj, "hits", json_integer(hits))
           || json_object_set_new(obj, "misses", json_integer(misses))
           || json_object_set_new(obj, "skips", json_integer(skips))
           || json_object_set_new(obj, "hit_rate",
                                  cd_cache_hit_rate(hits, misses))
           || json_object_set_new(obj, "saved_usd", json_string(saved));
}


static json_t *
cd_cache_stats_json(PGresult *res, const char *from, const char *to,
    const int64_t *zone)
{
    int      i;
    json_t  *obj, *list, *entry;

    obj = json_pack("{s:s, s:s}", "from", from, "to", to);
    list = json_array();

    if (obj == NULL || list == NULL) {
        goto failed;
    }

    /* row 0 is the whole range's (ORDER BY grouping first) */
    if (PQntuples(res) < 1 || !cd_db_bool(res, 0, 6)
        || cd_cache_counts(obj, res, 0)
        || json_object_set_new(obj, "entries", json_integer(zone[0]))
        || json_object_set_new(obj, "bytes", json_integer(zone[1]))
        || json_object_set_new(obj, "evictions", json_integer(zone[2])))
    {
        goto failed;
    }

    for (i = 1; i < PQntuples(res); i++) {
        entry = json_object();

        if (entry == NULL || json_array_append_new(list, entry) != 0
            || cd_json_set_column(entry, "provider", res, i, 0)
            || cd_json_set_column(entry, "model", res, i, 1)
            || cd_cache_counts(entry, res, i))
        {
            goto failed;
        }
    }

    if (json_object_set_new(obj, "by_model", list) != 0) {
        list = NULL;
        goto failed;
    }

    return obj;

failed:

    json_decref(obj);
    json_decref(list);

    return NULL;
}


void
cd_api_cache_stats(cd_request_t *r)
{
    int            from_given, to_given;
    char           from[40], to[40], from_us[CD_INT_TEXT];
    char           to_us[CD_INT_TEXT];
    json_t        *json;
    int64_t        from_t, to_t, zone[3];
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    to_t = cd_clock_ms(CLOCK_REALTIME) * 1000;
    from_t = 0;

    if (cd_query_time(r, "from", &from_t, &from_given) != CD_OK
        || cd_query_time(r, "to", &to_t, &to_given) != CD_OK)
    {
        return;
    }

    if (!from_given) {
        from_t = to_t - CD_CACHE_STATS_DEFAULT_US;
        from_t = from_t < 0 ? 0 : from_t;
    }

    if (from_t > to_t) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_range",
                         "from", "from must not be after to");
        return;
    }

    snprintf(from_us, sizeof(from_us), "%lld", (long long) from_t);
    snprintf(to_us, sizeof(to_us), "%lld", (long long) to_t);
    params[0] = from_us;
    params[1] = to_us;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /*
     * One pass over the range's rows by the primary key (org_id,
     * created_at, id): RLS supplies org_id, the range prunes the
     * partitions to the months it covers. The grouping set () is the
     * whole range, always one row, first.
     */
    res = cd_db_exec(c, "SELECT provider, model,"
                        " count(*) FILTER (WHERE cache = 'hit'),"
                        " count(*) FILTER (WHERE cache = 'miss'),"
                        " count(*) FILTER (WHERE cache = 'skip'),"
                        " coalesce(sum(saved_nano), 0),"
                        " grouping(provider, model) <> 0 AS total"
                        " FROM audit_logs"
                        " WHERE created_at >= 'epoch'::timestamptz"
                        " + $1::bigint * interval '1 microsecond'"
                        " AND created_at < 'epoch'::timestamptz"
                        " + $2::bigint * interval '1 microsecond'"
                        " AND cache IN ('hit', 'miss', 'skip')"
                        " GROUP BY GROUPING SETS ((provider, model), ())"
                        " ORDER BY total DESC, 3 DESC, provider, model",
                     2, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);
        cd_request_end(r, c);
        return;
    }

    cd_cache_time_text(from_t, from, sizeof(from));
    cd_cache_time_text(to_t, to, sizeof(to));
    cd_lease_cache_figures(r->app, zone);

    json = cd_cache_stats_json(res, from, to, zone);

    if (json == NULL) {
        cd_respond_db_error(r);
    } else {
        cd_respond(r, 200, json);
    }

    PQclear(res);
    cd_request_end(r, c);
}
