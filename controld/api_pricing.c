/*
 * /pricing: the prices the proxy applies for the caller's organisation.
 * List prices (org_id NULL, loaded by prices.c) and the organisation's own
 * (PUT /pricing/{provider}/{model}), each effective from an instant. The
 * price in effect for a model is the organisation's latest with
 * effective_from <= now(), else the latest list price in effect (else
 * the latest list price at all, so a clock behind the seed date does not
 * leave models unpriced): exactly the rule of the snapshot publisher.
 *
 * The model "*" is the organisation's fallback price for a provider: what
 * the proxy reserves and bills for a model without a price of its own
 * (sp_snapshot_find_price(org, provider, "*")). Only an organisation has
 * one; the list-price loader and the table refuse a list "*".
 *
 * Prices are nano-USD per 1M tokens in the database and decimal USD
 * strings per 1M tokens in the API; no floating point touches them,
 * except to read a JSON number whose decimal form is unambiguous.
 */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controld.h"
#include "prices.h"
#include "api.h"
#include "sp_price.h"


#define CD_PRICING_SUBJECT    "pricing"
#define CD_NANO_PER_USD       1000000000LL

#define CD_PRICING_COLUMNS                                                   \
    "org_id, provider, model, input_nano, output_nano,"                      \
    " cached_input_nano, cache_write_nano, max_output_tokens, source_url, "  \
    CD_SQL_TS("effective_from") ", effective_from <= now()"

enum {
    CD_PRICING_ORG = 0, CD_PRICING_PROVIDER, CD_PRICING_MODEL,
    CD_PRICING_INPUT, CD_PRICING_OUTPUT, CD_PRICING_CACHED,
    CD_PRICING_CACHE_WRITE, CD_PRICING_MAX_OUTPUT, CD_PRICING_SOURCE_URL,
    CD_PRICING_EFFECTIVE, CD_PRICING_IN_EFFECT
};

static const char  *cd_pricing_fields[] = {
    "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
    "cache_write_usd_per_mtok", "max_output_tokens", "effective_from", NULL
};


/* ---- validation (pure, unit tested) ----------------------------------- */


int
cd_price_json_money(json_t *value, const char *field, int64_t *nano,
    cd_field_error_t *err)
{
    char        text[64];
    double      v;
    json_int_t  whole;
    const char  *s;

    if (json_is_string(value)) {
        s = json_string_value(value);

        if (strlen(s) != json_string_length(value)
            || sp_money_parse(s, strlen(s), nano) != SP_OK)
        {
            return cd_field_error(err, 422, "invalid_value", field,
                                  "%s must be a decimal amount of USD per 1M "
                                  "tokens with at most 9 decimals, e.g. "
                                  "\"2.50\"", field);
        }

    } else if (json_is_integer(value)) {
        whole = json_integer_value(value);

        if (whole < 0) {
            *nano = -1;

        } else if (whole > CD_PRICE_MAX_USD) {
            *nano = (int64_t) CD_PRICE_MAX_USD * CD_NANO_PER_USD + 1;

        } else {
            *nano = (int64_t) whole * CD_NANO_PER_USD;
        }

    } else if (json_is_real(value)) {
        v = json_real_value(value);

        if (v < 0) {
            *nano = -1;

        } else if (v > CD_PRICE_MAX_USD) {
            *nano = (int64_t) CD_PRICE_MAX_USD * CD_NANO_PER_USD + 1;

        } else if (sp_money_number_text(v, text, sizeof(text)) != SP_OK
                   || sp_money_parse(text, strlen(text), nano) != SP_OK)
        {
            return cd_field_error(err, 422, "invalid_value", field,
                                  "%s: this number has more than 9 decimals "
                                  "or 15 significant digits and cannot be "
                                  "read exactly; send it as a decimal "
                                  "string, e.g. \"2.50\"", field);
        }

    } else {
        return cd_field_error(err, 400, "invalid_type", field,
                              "%s must be a decimal string (e.g. \"2.50\") "
                              "or a number: USD per 1M tokens", field);
    }

    if (*nano < 0) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must not be negative", field);
    }

    if (*nano > (int64_t) CD_PRICE_MAX_USD * CD_NANO_PER_USD) {
        return cd_field_error(err, 422, "invalid_value", field,
                              "%s must be at most %d USD per 1M tokens",
                              field, CD_PRICE_MAX_USD);
    }

    return CD_OK;
}


/* an optional price: absent or null is -1 */
static int
cd_price_optional(json_t *body, const char *field, int64_t *nano,
    cd_field_error_t *err)
{
    json_t  *value;

    value = json_object_get(body, field);

    if (value == NULL || json_is_null(value)) {
        *nano = -1;
        return CD_OK;
    }

    return cd_price_json_money(value, field, nano, err);
}


static int
cd_price_required(json_t *body, const char *field, int64_t *nano,
    cd_field_error_t *err)
{
    json_t  *value;

    value = json_object_get(body, field);

    if (value == NULL || json_is_null(value)) {
        return cd_field_error(err, 422, "missing_field", field,
                              "%s is required: USD per 1M tokens as a "
                              "decimal string, e.g. \"2.50\"", field);
    }

    return cd_price_json_money(value, field, nano, err);
}


int
cd_price_body_parse(json_t *body, cd_price_input_t *in,
    cd_field_error_t *err)
{
    json_t      *value;
    json_int_t   tokens;
    const char  *s;

    memset(in, 0, sizeof(*in));

    if (cd_price_required(body, "input_usd_per_mtok", &in->input, err)
            != CD_OK
        || cd_price_required(body, "output_usd_per_mtok", &in->output, err)
            != CD_OK
        || cd_price_optional(body, "cached_input_usd_per_mtok",
                             &in->cached_input, err) != CD_OK
        || cd_price_optional(body, "cache_write_usd_per_mtok",
                             &in->cache_write, err) != CD_OK)
    {
        return CD_ERROR;
    }

    in->max_output_tokens = -1;
    value = json_object_get(body, "max_output_tokens");

    if (value != NULL && !json_is_null(value)) {
        if (!json_is_integer(value)) {
            return cd_field_error(err, 400, "invalid_type",
                                  "max_output_tokens", "max_output_tokens "
                                  "must be an integer or null");
        }

        tokens = json_integer_value(value);

        if (tokens < 0 || tokens > CD_PRICE_MAX_TOKENS) {
            return cd_field_error(err, 422, "invalid_value",
                                  "max_output_tokens", "max_output_tokens "
                                  "must be from 0 to %lld",
                                  (long long) CD_PRICE_MAX_TOKENS);
        }

        in->max_output_tokens = (int64_t) tokens;
    }

    value = json_object_get(body, "effective_from");

    if (value != NULL && !json_is_null(value)) {
        if (!json_is_string(value)) {
            return cd_field_error(err, 400, "invalid_type", "effective_from",
                                  "effective_from must be an RFC 3339 "
                                  "date-time string");
        }

        s = json_string_value(value);

        if (strlen(s) != json_string_length(value)
            || cd_rfc3339_parse(s, &in->effective_us) != CD_OK)
        {
            return cd_field_error(err, 422, "invalid_value", "effective_from",
                                  "effective_from must be an RFC 3339 "
                                  "date-time with a time zone, e.g. "
                                  "\"2026-12-01T00:00:00Z\"");
        }

        in->has_effective = 1;
    }

    return CD_OK;
}


/* exactly n digits at s */
static int
cd_digits(const char *s, int n, int *value)
{
    int  i;

    *value = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return CD_ERROR;
        }

        *value = *value * 10 + (s[i] - '0');
    }

    return CD_OK;
}


/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t
cd_days_from_civil(int y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


int
cd_rfc3339_parse(const char *s, int64_t *us)
{
    int          year, month, day, hour, minute, second, frac, digits;
    int          off_hour, off_minute, sign, leap, mdays;
    const char  *p;
    static const int  days_in[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (strlen(s) < 20
        || cd_digits(s, 4, &year) != CD_OK || s[4] != '-'
        || cd_digits(s + 5, 2, &month) != CD_OK || s[7] != '-'
        || cd_digits(s + 8, 2, &day) != CD_OK
        || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        || cd_digits(s + 11, 2, &hour) != CD_OK || s[13] != ':'
        || cd_digits(s + 14, 2, &minute) != CD_OK || s[16] != ':'
        || cd_digits(s + 17, 2, &second) != CD_OK)
    {
        return CD_ERROR;
    }

    if (year < 1970 || month < 1 || month > 12 || hour > 23 || minute > 59
        || second > 60)
    {
        return CD_ERROR;
    }

    leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    mdays = days_in[month - 1] + (month == 2 && leap);

    if (day < 1 || day > mdays) {
        return CD_ERROR;
    }

    p = s + 19;
    frac = 0;
    digits = 0;

    if (*p == '.') {
        p++;

        while (*p >= '0' && *p <= '9') {
            if (digits < 6) {
                frac = frac * 10 + (*p - '0');
            }

            digits++;
            p++;
        }

        if (digits == 0) {
            return CD_ERROR;
        }

        for ( ; digits < 6; digits++) {
            frac *= 10;
        }
    }

    if (second == 60) {
        second = 59;
        frac = 999999;
    }

    if (*p == 'Z' || *p == 'z') {
        sign = 0;
        off_hour = 0;
        off_minute = 0;
        p++;

    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;

        if (cd_digits(p + 1, 2, &off_hour) != CD_OK || p[3] != ':'
            || cd_digits(p + 4, 2, &off_minute) != CD_OK
            || off_hour > 23 || off_minute > 59)
        {
            return CD_ERROR;
        }

        p += 6;

    } else {
        return CD_ERROR;
    }

    if (*p != '\0') {
        return CD_ERROR;
    }

    *us = ((cd_days_from_civil(year, month, day) * 86400
            + hour * 3600 + minute * 60 + second
            - (int64_t) sign * (off_hour * 3600 + off_minute * 60))
           * 1000000) + frac;

    /* "1970-01-01T00:30:00+01:00" is before the epoch */
    return *us < 0 ? CD_ERROR : CD_OK;
}


/* ---- responses -------------------------------------------------------- */

static int
cd_pricing_set_money(json_t *obj, const char *key, PGresult *res, int row,
    int col)
{
    char  text[SP_MONEY_STR_LEN];

    if (PQgetisnull(res, row, col)) {
        return json_object_set_new(obj, key, json_null());
    }

    sp_money_format(strtoll(PQgetvalue(res, row, col), NULL, 10), text);

    return json_object_set_new(obj, key, json_string(text));
}


/* one model_prices row selected with CD_PRICING_COLUMNS */
static json_t *
cd_pricing_json(PGresult *res, int row)
{
    json_t  *obj, *max_output;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    max_output = PQgetisnull(res, row, CD_PRICING_MAX_OUTPUT)
                 ? json_null()
                 : json_integer((json_int_t) strtoll(
                       PQgetvalue(res, row, CD_PRICING_MAX_OUTPUT), NULL, 10));

    if (cd_json_set_str(obj, "provider",
                        PQgetvalue(res, row, CD_PRICING_PROVIDER)) != CD_OK
        || cd_json_set_str(obj, "model",
                           PQgetvalue(res, row, CD_PRICING_MODEL)) != CD_OK
        || cd_pricing_set_money(obj, "input_usd_per_mtok", res, row,
                                CD_PRICING_INPUT) != 0
        || cd_pricing_set_money(obj, "output_usd_per_mtok", res, row,
                                CD_PRICING_OUTPUT) != 0
        || cd_pricing_set_money(obj, "cached_input_usd_per_mtok", res, row,
                                CD_PRICING_CACHED) != 0
        || cd_pricing_set_money(obj, "cache_write_usd_per_mtok", res, row,
                                CD_PRICING_CACHE_WRITE) != 0
        || max_output == NULL
        || json_object_set_new(obj, "max_output_tokens", max_output) != 0
        || cd_json_set_str(obj, "source",
                           !PQgetisnull(res, row, CD_PRICING_ORG)
                           ? "organization" : "list") != CD_OK
        || cd_json_set_str(obj, "effective_from",
                           PQgetvalue(res, row, CD_PRICING_EFFECTIVE))
           != CD_OK
        || cd_json_set_str(obj, "source_url",
                           cd_db_value(res, row, CD_PRICING_SOURCE_URL))
           != CD_OK)
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/*
 * The prices GET /pricing answers from: model_prices rows (the list's and,
 * through row-level security, the caller's organisation's) grouped by
 * (provider, model), each group's organisation rows first, newest first;
 * per group the organisation's and the list's price in effect by the rule
 * the snapshot publisher applies (cd_prices_in_effect()). Prices are then
 * resolved by sp_price_resolve() over these groups and the caller's
 * aliases: the rule the proxy applies to its snapshot.
 */
typedef struct {
    int  first;
    int  end;
    int  row[2];                    /* in effect: [0] org, [1] list; -1 */
} cd_pricing_group_t;

typedef struct {
    PGresult            *res;
    PGresult            *aliases;   /* provider, alias, model */
    cd_pricing_group_t  *groups;
    int                  ngroups;
} cd_pricing_book_t;


static int
cd_pricing_is_org(PGresult *res, int row)
{
    return !PQgetisnull(res, row, CD_PRICING_ORG);
}


static int
cd_pricing_str_is(sp_str_t s, const char *value)
{
    return strlen(value) == s.len && memcmp(value, s.data, s.len) == 0;
}


static int
cd_pricing_same_model(PGresult *res, int a, int b)
{
    return strcmp(PQgetvalue(res, a, CD_PRICING_PROVIDER),
                  PQgetvalue(res, b, CD_PRICING_PROVIDER)) == 0
           && strcmp(PQgetvalue(res, a, CD_PRICING_MODEL),
                     PQgetvalue(res, b, CD_PRICING_MODEL)) == 0;
}


static int
cd_pricing_book_open(cd_pricing_book_t *book)
{
    int                       i, end, row, n;
    cd_pricing_group_t       *g;
    static const cd_price_cols_t  cols = {
        CD_PRICING_ORG, CD_PRICING_PROVIDER, CD_PRICING_MODEL,
        CD_PRICING_IN_EFFECT
    };

    n = PQntuples(book->res);
    book->ngroups = 0;
    book->groups = calloc((size_t) n + 1, sizeof(cd_pricing_group_t));
    if (book->groups == NULL) {
        return CD_ERROR;
    }

    g = NULL;

    for (i = 0; i < n; i = end) {
        if (cd_prices_in_effect(book->res, i, &cols, &end, &row) != CD_OK) {
            return CD_ERROR;
        }

        if (g == NULL || !cd_pricing_same_model(book->res, g->first, i)) {
            g = &book->groups[book->ngroups++];
            g->first = i;
            g->row[0] = g->row[1] = -1;
        }

        g->end = end;
        g->row[cd_pricing_is_org(book->res, i) ? 0 : 1] = row;
    }

    return CD_OK;
}


static const cd_pricing_group_t *
cd_pricing_book_group(const cd_pricing_book_t *book, sp_str_t provider,
    sp_str_t model)
{
    int                        i;
    const cd_pricing_group_t  *g;

    for (i = 0; i < book->ngroups; i++) {
        g = &book->groups[i];

        if (cd_pricing_str_is(provider, PQgetvalue(book->res, g->first,
                                                   CD_PRICING_PROVIDER))
            && cd_pricing_str_is(model, PQgetvalue(book->res, g->first,
                                                   CD_PRICING_MODEL)))
        {
            return g;
        }
    }

    return NULL;
}


/* sp_price_lookup_t: the row in effect, as a pointer to its index */
static const void *
cd_pricing_book_price(void *data, sp_str_t org_id, sp_str_t provider,
    sp_str_t model)
{
    const int                 *row;
    const cd_pricing_group_t  *g;

    g = cd_pricing_book_group(data, provider, model);

    if (g == NULL) {
        return NULL;
    }

    row = &g->row[org_id.len ? 0 : 1];

    return *row >= 0 ? row : NULL;
}


static sp_str_t
cd_pricing_book_alias(void *data, sp_str_t org_id, sp_str_t provider,
    sp_str_t alias)
{
    int                 i;
    sp_str_t            model;
    cd_pricing_book_t  *book;

    book = data;
    model.data = "";
    model.len = 0;

    for (i = 0; i < PQntuples(book->aliases); i++) {
        if (cd_pricing_str_is(provider, PQgetvalue(book->aliases, i, 0))
            && cd_pricing_str_is(alias, PQgetvalue(book->aliases, i, 1)))
        {
            model.data = PQgetvalue(book->aliases, i, 2);
            model.len = strlen(model.data);
            break;
        }
    }

    return model;
}


/* how the requested name was priced: what the proxy applies to it */
static json_t *
cd_pricing_match(const char *model, const sp_price_found_t *found)
{
    return json_pack("{s:s, s:s, s:b, s:b}", "requested_model", model,
                     "source", sp_price_source_name(found->source),
                     "alias", (found->via & SP_PRICE_VIA_ALIAS) != 0,
                     "base_model", (found->via & SP_PRICE_VIA_BASE_MODEL)
                                   != 0);
}


/*
 * The item GET /pricing shows for a model name: the price the proxy
 * applies to it (sp_price_resolve()), with "match" saying how it was
 * found, the list price under "list_price" when the organisation's own
 * wins, and the organisation's prices of that model not yet in effect
 * under "scheduled" (soonest first). A name priced only by an
 * organisation's price dated ahead shows that price with "in_effect":
 * false. NULL when the name has no price at all, or out of memory
 * (*failed set).
 */
static json_t *
cd_pricing_item(cd_pricing_book_t *book, const char *org_id,
    const char *provider, const char *model, unsigned options, int *failed)
{
    int                        i, shown, is_org;
    json_t                    *item, *scheduled, *entry, *list_price;
    PGresult                  *res;
    sp_price_found_t           found;
    sp_price_lookup_t          lookup;
    const cd_pricing_group_t  *g;
    sp_str_t                   org, prov, name;

    res = book->res;
    lookup.find_price = cd_pricing_book_price;
    lookup.find_alias = cd_pricing_book_alias;
    lookup.data = book;

    org.data = org_id;
    org.len = strlen(org_id);
    prov.data = provider;
    prov.len = strlen(provider);
    name.data = model;
    name.len = strlen(model);

    shown = -1;
    g = NULL;

    if (sp_price_resolve(&lookup, org, prov, name, options, &found) != NULL) {
        shown = *(const int *) found.record;
        g = cd_pricing_book_group(book, prov, found.model);

    } else {
        g = cd_pricing_book_group(book, prov, name);
    }

    if (g == NULL) {
        return NULL;
    }

    *failed = 1;

    scheduled = json_array();
    if (scheduled == NULL) {
        return NULL;
    }

    /* future organisation rows come first, newest first: walk backwards */
    for (i = g->end - 1; i >= g->first; i--) {
        if (!cd_pricing_is_org(res, i)
            || cd_db_bool(res, i, CD_PRICING_IN_EFFECT))
        {
            continue;
        }

        if (shown < 0) {
            shown = i;
            continue;
        }

        entry = cd_pricing_json(res, i);

        if (entry == NULL || json_array_append_new(scheduled, entry) != 0) {
            json_decref(scheduled);
            return NULL;
        }
    }

    if (shown < 0) {
        /* only list rows, none in effect: sp_price_effective() took one */
        *failed = 0;
        json_decref(scheduled);
        return NULL;
    }

    item = cd_pricing_json(res, shown);

    if (item == NULL) {
        json_decref(scheduled);
        return NULL;
    }

    /* a list price is what the proxy applies, even one dated ahead */
    is_org = cd_pricing_is_org(res, shown);

    if (json_object_set_new(item, "in_effect", json_boolean(
            !is_org || cd_db_bool(res, shown, CD_PRICING_IN_EFFECT))) != 0
        || json_object_set_new(item, "match", cd_pricing_match(model, &found))
           != 0)
    {
        goto failed;
    }

    if (is_org) {
        list_price = g->row[1] >= 0 ? cd_pricing_json(res, g->row[1])
                                    : json_null();

        if (list_price == NULL
            || json_object_set_new(item, "list_price", list_price) != 0)
        {
            goto failed;
        }
    }

    /* json_object_set_new() takes the reference even when it fails */
    if (json_object_set_new(item, "scheduled", scheduled) != 0) {
        json_decref(item);
        return NULL;
    }

    *failed = 0;

    return item;

failed:

    json_decref(scheduled);
    json_decref(item);

    return NULL;
}


/* the provider path or query value: one of the six, else answered */
static int
cd_pricing_provider(cd_request_t *r, const char *name, unsigned status)
{
    return cd_provider_param(r, name, status, "provider");
}


const char *
cd_price_model_problem(const char *model)
{
    if (cd_validate_text(model, 1, CD_NAME_MAX) != NULL
        || !cd_utf8_valid(model, strlen(model)))
    {
        return "the model must be 1 to " CD_STRINGIFY(CD_NAME_MAX)
               " printable UTF-8 characters";
    }

    /* "gpt-4*" would read like a wildcard; prices are exact names */
    if (strchr(model, '*') != NULL
        && strcmp(model, SP_PRICE_FALLBACK_MODEL) != 0)
    {
        return "\"*\" is a model name only alone: the organization's "
               "fallback price for the provider (PUT /pricing/{provider}/*);"
               " other names are exact, without wildcards";
    }

    return NULL;
}


static int
cd_pricing_model(cd_request_t *r, const char *model)
{
    const char  *problem;

    problem = cd_price_model_problem(model);

    if (problem != NULL) {
        cd_respond_error(r, 422, "invalid_request_error", "invalid_value",
                         "model", "%s", problem);
        return CD_ERROR;
    }

    return CD_OK;
}


static int
cd_pricing_is_fallback(const char *model)
{
    return strcmp(model, SP_PRICE_FALLBACK_MODEL) == 0;
}



int
cd_pricing_resolve(cd_db_conn_t *c, const char *org_id, const char *provider,
    const char *model, sp_price_t *price, int64_t *max_output_tokens,
    int *priced)
{
    int                 rc, row;
    const void         *record;
    sp_str_t            org, prov, name;
    sp_price_found_t    found;
    sp_price_lookup_t   lookup;
    cd_pricing_book_t   book;

    memset(&book, 0, sizeof(book));
    rc = CD_ERROR;
    *priced = 0;

    /* GET /pricing's book for the one provider, under row-level security */
    book.res = cd_db_exec(c, "SELECT " CD_PRICING_COLUMNS " FROM model_prices"
                             " WHERE provider = $1"
                             " ORDER BY provider, model, org_id IS NULL,"
                             " effective_from DESC", 1, &provider);
    book.aliases = book.res ? cd_db_exec(c, "SELECT provider, alias, model"
                                            " FROM model_aliases"
                                            " WHERE provider = $1", 1,
                                         &provider) : NULL;

    if (book.aliases == NULL || cd_pricing_book_open(&book) != CD_OK) {
        goto done;
    }

    lookup.find_price = cd_pricing_book_price;
    lookup.find_alias = cd_pricing_book_alias;
    lookup.data = &book;
    org = sp_str_from(org_id);
    prov = sp_str_from(provider);
    name = sp_str_from(model);

    record = sp_price_resolve(&lookup, org, prov, name,
                              SP_PRICE_WITH_FALLBACK, &found);

    if (record == NULL) {
        rc = CD_OK;
        goto done;
    }

    /* as the snapshot publisher reads a row: unset cached prices as input */
    row = *(const int *) record;
    price->input = strtoll(PQgetvalue(book.res, row, CD_PRICING_INPUT),
                           NULL, 10);
    price->output = strtoll(PQgetvalue(book.res, row, CD_PRICING_OUTPUT),
                            NULL, 10);
    price->cached_input = PQgetisnull(book.res, row, CD_PRICING_CACHED)
                          ? price->input
                          : strtoll(PQgetvalue(book.res, row,
                                               CD_PRICING_CACHED), NULL, 10);
    price->cache_write = PQgetisnull(book.res, row, CD_PRICING_CACHE_WRITE)
                         ? price->input
                         : strtoll(PQgetvalue(book.res, row,
                                              CD_PRICING_CACHE_WRITE),
                                   NULL, 10);
    *max_output_tokens = strtoll(PQgetvalue(book.res, row,
                                            CD_PRICING_MAX_OUTPUT), NULL, 10);
    *priced = 1;
    rc = CD_OK;

done:

    free(book.groups);
    PQclear(book.aliases);
    PQclear(book.res);

    return rc;
}


/* ---- routes ----------------------------------------------------------- */

/*
 * The items for an optional provider and model; single answers the one
 * item itself (resolved as the proxy resolves it: alias, base model,
 * fallback), or 404 when the model has no price at all.
 */
static void
cd_pricing_answer(cd_request_t *r, const char *provider, const char *model,
    int single)
{
    int                 i, failed;
    json_t             *data, *item;
    const char         *name;
    cd_db_conn_t       *c;
    cd_pricing_book_t   book;

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    memset(&book, 0, sizeof(book));

    /* row-level security leaves the list prices and the caller's own */
    book.res = cd_db_exec(c, "SELECT " CD_PRICING_COLUMNS " FROM model_prices"
                             " WHERE ($1::text IS NULL OR provider = $1)"
                             " ORDER BY provider, model, org_id IS NULL,"
                             " effective_from DESC", 1, &provider);
    book.aliases = book.res ? cd_db_exec(c, "SELECT provider, alias, model"
                                            " FROM model_aliases WHERE"
                                            " ($1::text IS NULL"
                                            " OR provider = $1)", 1,
                                         &provider) : NULL;
    if (book.aliases == NULL) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    data = json_array();

    if (data == NULL || cd_pricing_book_open(&book) != CD_OK) {
        json_decref(data);
        goto done;
    }

    failed = 0;

    if (single) {
        item = cd_pricing_item(&book, r->org_id, provider, model,
                               SP_PRICE_WITH_FALLBACK, &failed);

        if (item != NULL && json_array_append_new(data, item) != 0) {
            failed = 1;
        }
    }

    /* the list: every priced model name, as the proxy prices it */
    for (i = 0; !single && !failed && i < book.ngroups; i++) {
        name = PQgetvalue(book.res, book.groups[i].first, CD_PRICING_MODEL);

        if (model != NULL && strcmp(name, model) != 0) {
            continue;
        }

        item = cd_pricing_item(&book, r->org_id,
                               PQgetvalue(book.res, book.groups[i].first,
                                          CD_PRICING_PROVIDER),
                               name, 0, &failed);

        if (item != NULL && json_array_append_new(data, item) != 0) {
            failed = 1;
        }
    }

    if (failed) {
        json_decref(data);
        goto done;
    }

    if (!single) {
        cd_respond(r, 200, json_pack("{s:o}", "data", data));

    } else if (json_array_size(data) == 0 && cd_pricing_is_fallback(model)) {
        cd_respond_error(r, 404, "not_found_error", "price_not_found",
                         "model", "the organization has no fallback price "
                         "for %s; set one with PUT /pricing/%s/*", provider,
                         provider);
        json_decref(data);

    } else if (json_array_size(data) == 0) {
        cd_respond_error(r, 404, "not_found_error", "model_unpriced",
                         "model", "%s/%.200s has no price: its requests are "
                         "recorded at $0; set one with PUT /pricing/%s/"
                         "%.200s", provider, model, provider, model);
        json_decref(data);

    } else {
        cd_respond(r, 200, json_incref(json_array_get(data, 0)));
        json_decref(data);
    }

done:

    free(book.groups);
    PQclear(book.aliases);
    PQclear(book.res);
    cd_request_end(r, c);
}


void
cd_api_pricing_list(cd_request_t *r)
{
    const char  *provider, *model;

    provider = cd_query(r, "provider");
    model = cd_query(r, "model");

    if ((provider != NULL && cd_pricing_provider(r, provider, 400) != CD_OK)
        || (model != NULL && cd_pricing_model(r, model) != CD_OK))
    {
        return;
    }

    cd_pricing_answer(r, provider, model, 0);
}


void
cd_api_pricing_get(cd_request_t *r)
{
    if (cd_pricing_provider(r, r->params[0], 404) != CD_OK
        || cd_pricing_model(r, r->params[1]) != CD_OK)
    {
        return;
    }

    cd_pricing_answer(r, r->params[0], r->params[1], 1);
}


void
cd_api_pricing_put(cd_request_t *r)
{
    int                i;
    char               nums[6][24];
    json_t            *body, *price, *list_price;
    int64_t            values[6];
    PGresult          *res;
    const char        *params[8];
    cd_db_conn_t      *c;
    cd_field_error_t   err;
    cd_price_input_t   in;

    if (cd_pricing_provider(r, r->params[0], 404) != CD_OK
        || cd_pricing_model(r, r->params[1]) != CD_OK)
    {
        return;
    }

    body = cd_request_json(r, cd_pricing_fields);
    if (body == NULL) {
        return;
    }

    if (cd_price_body_parse(body, &in, &err) != CD_OK) {
        cd_respond_field_error(r, &err);
        json_decref(body);
        return;
    }

    json_decref(body);

    values[0] = in.input;
    values[1] = in.output;
    values[2] = in.cached_input;
    values[3] = in.cache_write;
    values[4] = in.max_output_tokens;
    values[5] = in.has_effective ? in.effective_us : -1;

    params[0] = r->params[0];
    params[1] = r->params[1];

    for (i = 0; i < 6; i++) {
        snprintf(nums[i], sizeof(nums[i]), "%lld", (long long) values[i]);
        params[2 + i] = values[i] < 0 ? NULL : nums[i];
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    /* the same instant again replaces that price: PUT is idempotent */
    res = cd_db_exec(c, "INSERT INTO model_prices (org_id, provider, model,"
                        " input_nano, output_nano, cached_input_nano,"
                        " cache_write_nano, max_output_tokens, effective_from)"
                        " VALUES (current_setting('spendpol.org_id'), $1, $2,"
                        " $3, $4, $5, $6, $7, coalesce('epoch'::timestamptz"
                        " + $8::bigint * interval '1 microsecond', now()))"
                        CD_PRICE_UPSERT ","
                        " created_at = clock_timestamp()"
                        " RETURNING " CD_PRICING_COLUMNS, 8, params);

    if (res == NULL || PQntuples(res) != 1) {
        cd_respond_statement_error(r, c);
        goto done;
    }

    price = cd_pricing_json(res, 0);

    if (price == NULL
        || json_object_set_new(price, "in_effect", json_boolean(
               cd_db_bool(res, 0, CD_PRICING_IN_EFFECT))) != 0)
    {
        json_decref(price);
        goto done;
    }

    PQclear(res);

    /*
     * Rows older than the organisation's price in effect can never apply
     * again; the schedule after it stays.
     */
    res = cd_db_exec(c, "DELETE FROM model_prices"
                        " WHERE org_id = current_setting('spendpol.org_id')"
                        " AND provider = $1 AND model = $2"
                        " AND effective_from < (SELECT max(effective_from)"
                        " FROM model_prices WHERE org_id ="
                        " current_setting('spendpol.org_id')"
                        " AND provider = $1 AND model = $2"
                        " AND effective_from <= now())", 2, params);
    if (res == NULL) {
        json_decref(price);
        cd_respond_statement_error(r, c);
        goto done;
    }

    PQclear(res);

    res = cd_db_exec(c, "SELECT " CD_PRICING_COLUMNS " FROM model_prices"
                        " WHERE org_id IS NULL AND provider = $1"
                        " AND model = $2 ORDER BY effective_from <= now()"
                        " DESC, effective_from DESC LIMIT 1", 2, params);
    if (res == NULL) {
        json_decref(price);
        cd_respond_statement_error(r, c);
        goto done;
    }

    list_price = PQntuples(res) ? cd_pricing_json(res, 0) : json_null();

    if (list_price == NULL
        || json_object_set_new(price, "list_price", list_price) != 0)
    {
        json_decref(price);
        goto done;
    }

    if (cd_request_commit_respond(r, c, 1, 200, price) != CD_OK) {
        goto done;
    }

    cd_log_info(CD_PRICING_SUBJECT, "set %s/%s org=%s", r->params[0],
                r->params[1], r->org_id);

done:

    PQclear(res);
    cd_request_end(r, c);
}


void
cd_api_pricing_delete(cd_request_t *r)
{
    PGresult      *res;
    const char    *params[2];
    cd_db_conn_t  *c;

    if (cd_pricing_provider(r, r->params[0], 404) != CD_OK
        || cd_pricing_model(r, r->params[1]) != CD_OK)
    {
        return;
    }

    c = cd_request_begin(r);
    if (c == NULL) {
        return;
    }

    params[0] = r->params[0];
    params[1] = r->params[1];

    /* the schedule goes too: the list price applies from now on */
    res = cd_db_exec(c, "DELETE FROM model_prices"
                        " WHERE org_id = current_setting('spendpol.org_id')"
                        " AND provider = $1 AND model = $2", 2, params);

    if (res == NULL) {
        cd_respond_statement_error(r, c);

    } else if (strcmp(PQcmdTuples(res), "0") == 0
               && cd_pricing_is_fallback(r->params[1]))
    {
        cd_respond_error(r, 404, "not_found_error", "price_not_found",
                         "model", "the organization has no fallback price "
                         "for %s", r->params[0]);

    } else if (strcmp(PQcmdTuples(res), "0") == 0) {
        cd_respond_error(r, 404, "not_found_error", "price_not_found",
                         "model", "the organization has no price of its own "
                         "for %s/%.200s; the list price applies",
                         r->params[0], r->params[1]);

    } else if (cd_request_commit_respond(r, c, 1, 204, NULL) == CD_OK) {
        cd_log_info(CD_PRICING_SUBJECT, "deleted %s/%s org=%s",
                    r->params[0], r->params[1], r->org_id);
    }

    PQclear(res);
    cd_request_end(r, c);
}
