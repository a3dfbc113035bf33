/*
 * controld's JSON body validators, as the routes call them after
 * cd_request_json (jansson has parsed the body; no request or database
 * is needed):
 *
 * - cd_rate_limits_parse ("rate_limits" of POST/PATCH /keys): accepted
 *   limits are -1 (left out) or 0..CD_RATE_LIMIT_MAX; rebuilt as JSON
 *   they parse the same.
 * - cd_budget_body_parse (POST /budgets): an accepted budget has a name,
 *   a known scope (org without a value, key and agent ids well-formed), a
 *   known provider or none, limit > 0 (the same as sp_money_parse reads
 *   from the string, or whole USD), a known period (the static string),
 *   a well-formed time zone, block or warn, thresholds ascending and
 *   unique in 1..100; rebuilt as JSON (limit as sp_money_format writes
 *   it) it parses to the same budget. Thresholds written as PostgreSQL
 *   text ("{50,80,100}") read back the same (cd_budget_thresholds_from_
 *   text), which also reads the raw input.
 * - cd_price_body_parse (PUT /pricing): prices in 0..1e6 USD per 1M
 *   tokens, optional ones -1, max_output_tokens -1..1e9, effective_from
 *   an instant; rebuilt with decimal strings it parses the same.
 *
 * A refusal fills the error: status 400 or 422, a code, one of the
 * validator's own field names and a message.
 *
 * Input: a JSON document (any value; NUL allowed in strings), tried as
 * the body and as the "rate_limits" value.
 */

#include <time.h>

#include "fuzz_common.h"
#include "controld.h"
#include "api.h"
#include "sp_snapshot.h"


#define FUZZ_NANO_PER_USD  1000000000LL


static void
fuzz_error(const cd_field_error_t *err, const char *const *fields)
{
    size_t  i;

    FUZZ_CHECK(err->status == 400 || err->status == 422);
    FUZZ_CHECK(err->code != NULL && err->code[0] != '\0');
    FUZZ_CHECK(err->field != NULL);
    FUZZ_CHECK(memchr(err->message, '\0', sizeof(err->message)) != NULL);
    FUZZ_CHECK(err->message[0] != '\0');

    for (i = 0; fields[i] != NULL; i++) {
        if (strcmp(err->field, fields[i]) == 0) {
            return;
        }
    }

    fprintf(stderr, "unexpected field \"%s\"\n", err->field);
    FUZZ_CHECK(0);
}


/* ---- rate limits -------------------------------------------------------- */

static const char  *fuzz_rl_fields[] = {
    "rate_limits", "rate_limits.requests_per_minute",
    "rate_limits.tokens_per_minute", NULL
};


static void
fuzz_rate_limits(json_t *value)
{
    cd_rate_limits_t  rl, again;
    cd_field_error_t  err;
    json_t           *built;

    memset(&err, 0, sizeof(err));

    if (cd_rate_limits_parse(value, &rl, &err) != CD_OK) {
        fuzz_error(&err, fuzz_rl_fields);
        return;
    }

    FUZZ_CHECK(rl.rpm >= -1 && rl.rpm <= CD_RATE_LIMIT_MAX);
    FUZZ_CHECK(rl.tpm >= -1 && rl.tpm <= CD_RATE_LIMIT_MAX);

    if (value == NULL) {
        FUZZ_CHECK(rl.rpm == -1 && rl.tpm == -1);
        return;
    }

    if (json_is_null(value)) {
        FUZZ_CHECK(rl.rpm == 0 && rl.tpm == 0);
        return;
    }

    FUZZ_CHECK(json_is_object(value));
    FUZZ_CHECK((rl.rpm == -1)
               == (json_object_get(value, "requests_per_minute") == NULL));
    FUZZ_CHECK((rl.tpm == -1)
               == (json_object_get(value, "tokens_per_minute") == NULL));

    built = json_object();
    FUZZ_CHECK(built != NULL);

    if (rl.rpm >= 0) {
        FUZZ_CHECK(json_object_set_new(built, "requests_per_minute",
                                       json_integer(rl.rpm)) == 0);
    }

    if (rl.tpm >= 0) {
        FUZZ_CHECK(json_object_set_new(built, "tokens_per_minute",
                                       json_integer(rl.tpm)) == 0);
    }

    FUZZ_CHECK(cd_rate_limits_parse(built, &again, &err) == CD_OK);
    FUZZ_CHECK(again.rpm == rl.rpm && again.tpm == rl.tpm);
    json_decref(built);
}


/* ---- budgets ------------------------------------------------------------ */

static const char  *fuzz_budget_fields[] = {
    "name", "scope", "scope.type", "scope.value", "provider", "model",
    "limit_usd", "period", "timezone", "action", "thresholds", NULL
};


static size_t
fuzz_utf8_chars(const char *s)
{
    size_t  n;

    for (n = 0; *s != '\0'; s++) {
        n += ((unsigned char) *s & 0xc0) != 0x80;
    }

    return n;
}


static void
fuzz_thresholds_text(const int *t, size_t n)
{
    char    text[CD_BUDGET_THRESHOLDS_MAX * 4 + 3];
    int     back[CD_BUDGET_THRESHOLDS_MAX];
    size_t  i, pos, m;

    pos = 0;
    text[pos++] = '{';

    for (i = 0; i < n; i++) {
        pos += (size_t) snprintf(text + pos, sizeof(text) - pos, "%s%d",
                                 i ? "," : "", t[i]);
        FUZZ_CHECK(pos < sizeof(text) - 1);
    }

    text[pos++] = '}';
    text[pos] = '\0';

    FUZZ_CHECK(cd_budget_thresholds_from_text(text, back, &m) == CD_OK);
    FUZZ_CHECK(m == n);
    FUZZ_CHECK(n == 0 || memcmp(back, t, n * sizeof(int)) == 0);
}


static json_t *
fuzz_budget_json(const cd_budget_input_t *in)
{
    char     money[SP_MONEY_STR_LEN];
    size_t   i;
    json_t  *body, *scope, *t;

    FUZZ_CHECK(sp_money_format(in->limit_nano, money) > 0);

    scope = json_pack("{s:s}", "type", cd_budget_scope_name(in->scope));
    FUZZ_CHECK(scope != NULL);

    if (in->scope != SP_BUDGET_SCOPE_ORG) {
        FUZZ_CHECK(json_object_set_new(scope, "value",
                                       json_string(in->scope_value)) == 0);
    }

    t = json_array();
    FUZZ_CHECK(t != NULL);

    for (i = 0; i < in->nthresholds; i++) {
        FUZZ_CHECK(json_array_append_new(t, json_integer(in->thresholds[i]))
                   == 0);
    }

    body = json_pack("{s:s, s:o, s:s, s:s, s:s, s:s, s:o}",
                     "name", in->name, "scope", scope, "limit_usd", money,
                     "period", in->period, "timezone", in->timezone,
                     "action", in->action == SP_BUDGET_WARN
                               ? "warn" : "block",
                     "thresholds", t);
    FUZZ_CHECK(body != NULL);

    if (in->provider != NULL) {
        FUZZ_CHECK(json_object_set_new(body, "provider",
                                       json_string(in->provider)) == 0);
    }

    if (in->model != NULL) {
        FUZZ_CHECK(json_object_set_new(body, "model",
                                       json_string(in->model)) == 0);
    }

    return body;
}


static int
fuzz_same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL)
           || (a != NULL && b != NULL && strcmp(a, b) == 0);
}


static void
fuzz_budget(json_t *body)
{
    static cd_budget_input_t  in, again;
    cd_field_error_t          err;
    json_t                   *limit, *built;
    int64_t                   nano;
    size_t                    i;
    const char               *s;

    memset(&err, 0, sizeof(err));

    if (cd_budget_body_parse(body, &in, &err) != CD_OK) {
        fuzz_error(&err, fuzz_budget_fields);
        return;
    }

    FUZZ_CHECK(json_is_object(body));

    FUZZ_CHECK(in.name != NULL && in.name[0] != '\0');
    FUZZ_CHECK(fuzz_utf8_chars(in.name) <= CD_NAME_MAX);
    FUZZ_CHECK(cd_validate_text(in.name, 1, CD_NAME_MAX) == NULL);

    FUZZ_CHECK(in.scope < SP_BUDGET_SCOPE_COUNT);
    FUZZ_CHECK(in.scope_value != NULL);

    if (in.scope == SP_BUDGET_SCOPE_ORG) {
        FUZZ_CHECK(in.scope_value[0] == '\0');
    } else {
        FUZZ_CHECK(cd_validate_text(in.scope_value, 1, CD_NAME_MAX)
                   == NULL);
    }

    if (in.scope == SP_BUDGET_SCOPE_API_KEY) {
        FUZZ_CHECK(sp_id_valid(SP_ID_KEY, in.scope_value,
                               strlen(in.scope_value)));
    }

    if (in.scope == SP_BUDGET_SCOPE_AGENT) {
        FUZZ_CHECK(sp_id_valid(SP_ID_AGENT, in.scope_value,
                               strlen(in.scope_value)));
    }

    FUZZ_CHECK(in.provider == NULL
               || cd_provider_default_url(in.provider) != NULL);
    FUZZ_CHECK(in.model == NULL
               || cd_validate_text(in.model, 1, CD_NAME_MAX) == NULL);

    /* limit > 0, and what the member says */
    FUZZ_CHECK(in.limit_nano > 0);
    limit = json_object_get(body, "limit_usd");
    FUZZ_CHECK(limit != NULL);

    if (json_is_string(limit)) {
        s = json_string_value(limit);
        FUZZ_CHECK(sp_money_parse(s, strlen(s), &nano) == SP_OK);
        FUZZ_CHECK(nano == in.limit_nano);

    } else {
        FUZZ_CHECK(json_is_integer(limit));
        FUZZ_CHECK(json_integer_value(limit) > 0);
        FUZZ_CHECK(in.limit_nano
                   == json_integer_value(limit) * FUZZ_NANO_PER_USD);
    }

    /* a known period: the validator's own static string */
    FUZZ_CHECK(in.period != NULL);
    FUZZ_CHECK(cd_budget_period_parse(in.period) == in.period);

    FUZZ_CHECK(in.timezone != NULL && cd_timezone_wellformed(in.timezone));
    FUZZ_CHECK(in.action == SP_BUDGET_BLOCK || in.action == SP_BUDGET_WARN);

    FUZZ_CHECK(in.nthresholds <= CD_BUDGET_THRESHOLDS_MAX);

    for (i = 0; i < in.nthresholds; i++) {
        FUZZ_CHECK(in.thresholds[i] >= 1 && in.thresholds[i] <= 100);
        FUZZ_CHECK(i == 0 || in.thresholds[i - 1] < in.thresholds[i]);
    }

    fuzz_thresholds_text(in.thresholds, in.nthresholds);

    /* the budget as JSON parses to itself */
    built = fuzz_budget_json(&in);
    FUZZ_CHECK(cd_budget_body_parse(built, &again, &err) == CD_OK);
    FUZZ_CHECK(fuzz_same_str(again.name, in.name));
    FUZZ_CHECK(again.scope == in.scope);
    FUZZ_CHECK(fuzz_same_str(again.scope_value, in.scope_value));
    FUZZ_CHECK(fuzz_same_str(again.provider, in.provider));
    FUZZ_CHECK(fuzz_same_str(again.model, in.model));
    FUZZ_CHECK(again.limit_nano == in.limit_nano);
    FUZZ_CHECK(again.period == in.period);
    FUZZ_CHECK(fuzz_same_str(again.timezone, in.timezone));
    FUZZ_CHECK(again.action == in.action);
    FUZZ_CHECK(again.nthresholds == in.nthresholds);
    FUZZ_CHECK(in.nthresholds == 0
               || memcmp(again.thresholds, in.thresholds,
                         in.nthresholds * sizeof(int)) == 0);
    json_decref(built);
}


/* ---- prices ------------------------------------------------------------- */

static const char  *fuzz_price_fields[] = {
    "input_usd_per_mtok", "output_usd_per_mtok",
    "cached_input_usd_per_mtok", "cache_write_usd_per_mtok",
    "max_output_tokens", "effective_from", NULL
};


static void
fuzz_price_member(json_t *obj, const char *key, int64_t nano)
{
    char  money[SP_MONEY_STR_LEN];

    if (nano < 0) {
        return;
    }

    FUZZ_CHECK(sp_money_format(nano, money) > 0);
    FUZZ_CHECK(json_object_set_new(obj, key, json_string(money)) == 0);
}


static void
fuzz_price(json_t *body)
{
    cd_price_input_t  in, again;
    cd_field_error_t  err;
    json_t           *built;
    int64_t           max;
    char              when[64];
    struct tm         tm;
    time_t            t;

    memset(&err, 0, sizeof(err));

    if (cd_price_body_parse(body, &in, &err) != CD_OK) {
        fuzz_error(&err, fuzz_price_fields);
        return;
    }

    max = (int64_t) CD_PRICE_MAX_USD * FUZZ_NANO_PER_USD;

    FUZZ_CHECK(in.input >= 0 && in.input <= max);
    FUZZ_CHECK(in.output >= 0 && in.output <= max);
    FUZZ_CHECK(in.cached_input >= -1 && in.cached_input <= max);
    FUZZ_CHECK(in.cache_write >= -1 && in.cache_write <= max);
    FUZZ_CHECK(in.max_output_tokens >= -1
               && in.max_output_tokens <= CD_PRICE_MAX_TOKENS);
    FUZZ_CHECK(in.has_effective == 0 || in.has_effective == 1);

    built = json_object();
    FUZZ_CHECK(built != NULL);
    fuzz_price_member(built, "input_usd_per_mtok", in.input);
    fuzz_price_member(built, "output_usd_per_mtok", in.output);
    fuzz_price_member(built, "cached_input_usd_per_mtok", in.cached_input);
    fuzz_price_member(built, "cache_write_usd_per_mtok", in.cache_write);

    if (in.max_output_tokens >= 0) {
        FUZZ_CHECK(json_object_set_new(built, "max_output_tokens",
                                       json_integer(in.max_output_tokens))
                   == 0);
    }

    /* the instant again as UTC text, when it is in the accepted years */
    if (in.has_effective && in.effective_us >= 0) {
        t = (time_t) (in.effective_us / 1000000);
        FUZZ_CHECK(gmtime_r(&t, &tm) != NULL);

        if (tm.tm_year + 1900 > 9999) {
            in.has_effective = 0;

        } else {
            snprintf(when, sizeof(when),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int) (in.effective_us % 1000000));
            FUZZ_CHECK(json_object_set_new(built, "effective_from",
                                           json_string(when)) == 0);
        }

    } else {
        in.has_effective = 0;
    }

    FUZZ_CHECK(cd_price_body_parse(built, &again, &err) == CD_OK);
    FUZZ_CHECK(again.input == in.input && again.output == in.output);
    FUZZ_CHECK(again.cached_input == in.cached_input);
    FUZZ_CHECK(again.cache_write == in.cache_write);
    FUZZ_CHECK(again.max_output_tokens == in.max_output_tokens);
    FUZZ_CHECK(again.has_effective == in.has_effective);
    FUZZ_CHECK(!in.has_effective || again.effective_us == in.effective_us);
    json_decref(built);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t  *doc;
    char    *text;
    int      t[CD_BUDGET_THRESHOLDS_MAX];
    size_t   n, i;

    /* the raw bytes as a PostgreSQL int[] text */
    text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    if (cd_budget_thresholds_from_text(text, t, &n) == CD_OK) {
        FUZZ_CHECK(n <= CD_BUDGET_THRESHOLDS_MAX);

        for (i = 0; i < n; i++) {
            FUZZ_CHECK(t[i] >= 1 && t[i] <= 100);
        }

        fuzz_thresholds_text(t, n);
    }

    free(text);

    doc = json_loadb((const char *) data, size,
                     JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (doc == NULL) {
        return 0;
    }

    fuzz_rate_limits(doc);
    fuzz_rate_limits(json_object_get(doc, "rate_limits"));
    fuzz_budget(doc);
    fuzz_price(doc);

    json_decref(doc);

    return 0;
}
