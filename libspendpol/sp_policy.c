/*
 * Policies: validation and compilation with jansson and PCRE2 (once per
 * admin call or per snapshot), evaluation per request on the compiled
 * set. Evaluation allocates nothing itself: the PCRE2 match data, the
 * JIT stack and the scratch space for pattern spans belong to the set,
 * which one thread uses at a time.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "sp_id.h"
#include "sp_pii.h"
#include "sp_conf.h"
#include "sp_policy.h"
#include "sp_provider.h"
#include "sp_route.h"
#include "sp_tz.h"


#define SP_POLICY_NAME_MAX      (SP_FIELD_LEN - 1)
#define SP_POLICY_VALUE_MAX     200       /* department, project values */
#define SP_POLICY_CODE_MAX      48
#define SP_POLICY_LIST_MAX      100       /* globs or providers per list */
#define SP_POLICY_TOKENS_MAX    1000000000
#define SP_POLICY_NANO_PER_USD  1000000000LL
#define SP_POLICY_COST_MAX_USD  1000000   /* per request: far above any */

/* the JIT stack: grows from 32 KB to at most 512 KB, then fails closed */
#define SP_POLICY_JIT_STACK_START  (32 * 1024)
#define SP_POLICY_JIT_STACK_MAX    (512 * 1024)
/* the interpreter's backtracking memory per match, in KiB */
#define SP_POLICY_HEAP_LIMIT       4096

#define SP_POLICY_NO_MEMORY     -2

/* attribution requirements */
#define SP_POLICY_REQ_DEPARTMENT  1
#define SP_POLICY_REQ_PROJECT     2
#define SP_POLICY_REQ_EITHER      3
#define SP_POLICY_REQ_BOTH        4

/* what the pattern pass left for a policy (scratch, per evaluation) */
#define SP_POLICY_PAT_SKIP      0         /* not a pattern policy, or out
                                             of scope */
#define SP_POLICY_PAT_PENDING   1
#define SP_POLICY_PAT_MATCHED   2
#define SP_POLICY_PAT_LIMIT     3         /* a limit hit: fail closed */
#define SP_POLICY_PAT_OVERFLOW  4         /* more spans than kept */


/* a string of the set's pool */
typedef struct {
    uint32_t  off;
    uint32_t  len;
} sp_policy_ref_t;

/* a compiled policy; the members every evaluation reads come first */
typedef struct {
    uint8_t          valid;
    uint8_t          kind;              /* sp_policy_kind_e */
    uint8_t          action;            /* sp_policy_action_e */
    uint8_t          scope;             /* SP_BUDGET_SCOPE_* numbering */
    sp_policy_ref_t  scope_value;

    /* model */
    uint8_t          allow_providers;   /* bit per sp_provider_e */
    uint8_t          deny_providers;
    uint8_t          has_allow_providers;
    uint8_t          require_max_tokens;
    uint32_t         allow_first;       /* globs in set->globs */
    uint32_t         allow_n;
    uint32_t         deny_first;
    uint32_t         deny_n;

    /* limits */
    int64_t          max_tokens;        /* 0: none */
    int64_t          max_cost_nano;     /* -1: none */

    /* attribution */
    uint8_t          require;           /* SP_POLICY_REQ_* */

    /* pii */
    uint8_t          scan_responses;
    uint16_t         threshold_milli;
    uint32_t         types;             /* the types the policy covers */
    uint8_t          entity_action[SP_PII_COUNT];

    /* pattern */
    uint8_t          caseless;
    uint32_t         pattern_first;     /* in set->patterns */
    uint32_t         pattern_n;

    /* time window */
    sp_tz_window_t   window;
    uint16_t         zone;              /* in set->zones */

    sp_policy_ref_t  id;
    sp_policy_ref_t  name;
    sp_policy_ref_t  code;
} sp_policy_t;

typedef struct {
    sp_tz_t          *tz;
    sp_policy_ref_t   name;
} sp_policy_zone_t;

struct sp_policy_set_s {
    size_t                  npolicies;
    size_t                  ninvalid;
    char                   *strings;
    size_t                  strings_len;
    size_t                  strings_cap;
    sp_policy_ref_t        *globs;
    size_t                  nglobs;
    size_t                  globs_cap;
    pcre2_code            **patterns;
    size_t                  npatterns;
    size_t                  patterns_cap;
    sp_policy_zone_t       *zones;
    size_t                  nzones;
    size_t                  zones_cap;

    /* evaluation's own, made at compile time */
    pcre2_match_context    *match_ctx;
    pcre2_jit_stack        *jit_stack;
    pcre2_match_data       *match_data;
    uint8_t                *pat_state;      /* SP_POLICY_PAT_*, a policy */
    uint8_t                *pat_index;      /* the pattern that hit a
                                               limit, a policy */
    sp_pii_entity_t        *spans;          /* pattern spans to redact */
    sp_pii_entity_t        *merged;
    size_t                  nspans;
    sp_pii_result_t        *text_pii;       /* one text's scan */

    char                    first_error[2 * SP_POLICY_REASON_LEN];
    sp_policy_t             policy[];
};


/* what one policy's validation writes to, and where it reports */
typedef struct {
    sp_policy_set_t  *set;          /* NULL: validate only */
    sp_policy_t      *policy;
    char             *field;
    size_t            fieldlen;
    char             *err;
    size_t            errlen;
} sp_policy_ctx_t;


static const char *const  sp_policy_actions[] = {
    "pass", "log", "warn", "redact", "block"
};

static const char *const  sp_policy_kinds[] = {
    "model", "limits", "attribution", "pii", "pattern", "time_window"
};

/* a warn's code when the policy names none */
static const char *const  sp_policy_codes[] = {
    "model_not_allowed", "limit_exceeded", "attribution_missing",
    "pii_detected", "pattern_matched", "outside_time_window"
};

static const char *const  sp_policy_scopes[] = {
    "organization", "api_key", "agent", "department", "project"
};

#define SP_POLICY_SCOPE_ORG         0
#define SP_POLICY_SCOPE_API_KEY     1
#define SP_POLICY_SCOPE_AGENT       2
#define SP_POLICY_SCOPE_DEPARTMENT  3
#define SP_POLICY_SCOPE_PROJECT     4

static const char *const  sp_policy_days[7] = {
    "sun", "mon", "tue", "wed", "thu", "fri", "sat"
};


const char *
sp_policy_action_name(sp_policy_action_e action)
{
    if ((unsigned) action > SP_POLICY_BLOCK) {
        return "pass";
    }

    return sp_policy_actions[action];
}


const char *
sp_policy_kind_name(sp_policy_kind_e kind)
{
    if ((unsigned) kind > SP_POLICY_KIND_TIME_WINDOW) {
        return "unknown";
    }

    return sp_policy_kinds[kind];
}


/* ---- errors ----------------------------------------------------------- */

static int
sp_policy_fail(sp_policy_ctx_t *ctx, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sp_policy_fail(sp_policy_ctx_t *ctx, const char *field, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    (void) sp_conf_vfail(ctx->field, ctx->fieldlen, ctx->err, ctx->errlen,
                         field, fmt, args);
    va_end(args);

    return SP_ERROR;
}


/* a key or a value as it can be quoted: printable, at most 64 bytes */
static void
sp_policy_print(const char *s, size_t len, char *out, size_t outlen)
{
    size_t  i;

    for (i = 0; i < len && i < 64 && i + 1 < outlen; i++) {
        out[i] = (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"'
                  || s[i] == '\\') ? '?' : s[i];
    }

    out[i] = '\0';
}


/* ---- the set's pools ------------------------------------------------ */

static int
sp_policy_grow(void **pool, size_t *cap, size_t n, size_t size)
{
    return sp_conf_grow(pool, cap, n, size) == SP_OK ? SP_OK
                                                     : SP_POLICY_NO_MEMORY;
}


static int
sp_policy_store(sp_policy_ctx_t *ctx, const char *s, size_t len,
    sp_policy_ref_t *ref)
{
    sp_policy_set_t  *set;

    ref->off = 0;
    ref->len = (uint32_t) len;

    set = ctx->set;

    if (set == NULL || len == 0) {
        return SP_OK;
    }

    return sp_conf_store(&set->strings, &set->strings_len, &set->strings_cap,
                         s, len, &ref->off) == SP_OK ? SP_OK
                                                     : SP_POLICY_NO_MEMORY;
}


static const char *
sp_policy_text(const sp_policy_set_t *set, sp_policy_ref_t ref)
{
    return (set->strings != NULL && ref.len > 0) ? set->strings + ref.off
                                                 : "";
}


static int
sp_policy_ref_eq(const sp_policy_set_t *set, sp_policy_ref_t ref,
    const char *s, size_t len)
{
    return ref.len == len
           && (len == 0 || memcmp(set->strings + ref.off, s, len) == 0);
}


/* ---- validation, writing the compiled policy ------------------------- */

/* printable text of min..max bytes, no control character */
static int
sp_policy_string(sp_policy_ctx_t *ctx, json_t *v, const char *path,
    size_t min, size_t max, const char *what, sp_policy_ref_t *ref)
{
    size_t       i, len;
    const char  *s;

    if (!json_is_string(v)) {
        return sp_policy_fail(ctx, path, "expected %s of %zu to %zu bytes, "
                              "not %s", what, min, max,
                              sp_conf_kind(v));
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len < min || len > max) {
        return sp_policy_fail(ctx, path, "expected %s of %zu to %zu bytes, "
                              "not %zu", what, min, max, len);
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            return sp_policy_fail(ctx, path, "expected %s without control "
                                  "characters", what);
        }
    }

    return ref ? sp_policy_store(ctx, s, len, ref) : SP_OK;
}


static int
sp_policy_bool(sp_policy_ctx_t *ctx, json_t *v, const char *path,
    uint8_t *out)
{
    if (!json_is_boolean(v)) {
        return sp_policy_fail(ctx, path, "expected true or false, not %s",
                              sp_conf_kind(v));
    }

    *out = json_is_true(v);

    return SP_OK;
}


/* "block" .. "log"; redact only where allowed */
static int
sp_policy_action(sp_policy_ctx_t *ctx, json_t *v, const char *path,
    int redact, uint8_t *out)
{
    int          a;
    const char  *s;

    s = json_is_string(v) ? json_string_value(v) : "";

    for (a = SP_POLICY_LOG; a <= SP_POLICY_BLOCK; a++) {
        if (strcmp(s, sp_policy_actions[a]) == 0
            && strlen(s) == json_string_length(v))
        {
            break;
        }
    }

    if (a > SP_POLICY_BLOCK) {
        return sp_policy_fail(ctx, path, "expected an action: %s",
                              redact ? "block, warn, log or redact"
                                     : "block, warn or log");
    }

    if (a == SP_POLICY_REDACT && !redact) {
        return sp_policy_fail(ctx, path, "expected block, warn or log: "
                              "redact applies only to pii and pattern "
                              "policies");
    }

    *out = (uint8_t) a;

    return SP_OK;
}


static int
sp_policy_scope(sp_policy_ctx_t *ctx, json_t *v)
{
    char         expected[96];
    size_t       i;
    json_t      *t, *value, *m;
    unsigned     id_kind;
    const char  *k, *s;

    if (v == NULL) {
        return sp_policy_fail(ctx, "scope", "expected a scope such as "
                              "{\"type\": \"organization\"}");
    }

    if (!json_is_object(v)) {
        return sp_policy_fail(ctx, "scope", "expected an object {\"type\", "
                              "\"value\"}, not %s", sp_conf_kind(v));
    }

    json_object_foreach(v, k, m) {
        if (strcmp(k, "type") != 0 && strcmp(k, "value") != 0) {
            sp_policy_print(k, strlen(k), expected, sizeof(expected));
            return sp_policy_fail(ctx, "scope", "unknown member \"%s\"; "
                                  "expected type and value", expected);
        }
    }

    t = json_object_get(v, "type");
    s = json_is_string(t) ? json_string_value(t) : "";

    for (i = 0; i < sizeof(sp_policy_scopes) / sizeof(sp_policy_scopes[0]);
         i++)
    {
        if (strcmp(s, sp_policy_scopes[i]) == 0
            && strlen(s) == json_string_length(t))
        {
            break;
        }
    }

    if (i == sizeof(sp_policy_scopes) / sizeof(sp_policy_scopes[0])) {
        return sp_policy_fail(ctx, "scope.type", "expected organization, "
                              "api_key, agent, department or project");
    }

    ctx->policy->scope = (uint8_t) i;
    value = json_object_get(v, "value");

    if (i == SP_POLICY_SCOPE_ORG) {
        if (value != NULL) {
            return sp_policy_fail(ctx, "scope.value", "expected no value: "
                                  "an organization scope takes none");
        }

        return SP_OK;
    }

    if (value == NULL) {
        return sp_policy_fail(ctx, "scope.value", "expected the %s the "
                              "policy applies to", sp_policy_scopes[i]);
    }

    if (i == SP_POLICY_SCOPE_API_KEY || i == SP_POLICY_SCOPE_AGENT) {
        id_kind = i == SP_POLICY_SCOPE_API_KEY ? SP_ID_KEY : SP_ID_AGENT;

        if (!json_is_string(value)
            || !sp_id_valid(id_kind, json_string_value(value),
                            json_string_length(value)))
        {
            sp_id_expected(id_kind, expected, sizeof(expected));
            return sp_policy_fail(ctx, "scope.value", "expected %s",
                                  expected);
        }
    }

    return sp_policy_string(ctx, value, "scope.value", 1,
                            SP_POLICY_VALUE_MAX, "a name",
                            &ctx->policy->scope_value);
}


static int
sp_policy_code(sp_policy_ctx_t *ctx, json_t *v)
{
    size_t       i, len;
    const char  *s;

    s = json_is_string(v) ? json_string_value(v) : "";
    len = json_is_string(v) ? json_string_length(v) : 0;

    if (len == 0 || len > SP_POLICY_CODE_MAX) {
        return sp_policy_fail(ctx, "code", "expected 1 to %d of a-z, 0-9 "
                              "and _", SP_POLICY_CODE_MAX);
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '_'))
        {
            return sp_policy_fail(ctx, "code", "expected 1 to %d of a-z, "
                                  "0-9 and _", SP_POLICY_CODE_MAX);
        }
    }

    return sp_policy_store(ctx, s, len, &ctx->policy->code);
}


/* allow_models, deny_models: globs in set->globs */
static int
sp_policy_globs(sp_policy_ctx_t *ctx, json_t *v, const char *name,
    uint32_t *first, uint32_t *n)
{
    int               rc;
    char              path[64];
    size_t            i;
    json_t           *g;
    sp_policy_set_t  *set;

    set = ctx->set;

    if (!json_is_array(v) || json_array_size(v) == 0
        || json_array_size(v) > SP_POLICY_LIST_MAX)
    {
        return sp_policy_fail(ctx, name, "expected an array of 1 to %d "
                              "model globs such as \"gpt-4o*\"",
                              SP_POLICY_LIST_MAX);
    }

    *first = set ? (uint32_t) set->nglobs : 0;
    *n = (uint32_t) json_array_size(v);

    json_array_foreach(v, i, g) {
        snprintf(path, sizeof(path), "%s[%zu]", name, i);

        rc = sp_policy_string(ctx, g, path, 1, SP_POLICY_NAME_MAX,
                              "a model glob", NULL);
        if (rc != SP_OK) {
            return rc;
        }

        if (!sp_route_glob_valid(json_string_value(g),
                                 json_string_length(g)))
        {
            return sp_policy_fail(ctx, path, "expected a glob (* ? [a-z] "
                                  "[!x]) with balanced brackets");
        }

        if (set == NULL) {
            continue;
        }

        if (sp_policy_grow((void **) &set->globs, &set->globs_cap,
                           set->nglobs, sizeof(sp_policy_ref_t)) != SP_OK)
        {
            return SP_POLICY_NO_MEMORY;
        }

        rc = sp_policy_store(ctx, json_string_value(g),
                             json_string_length(g),
                             &set->globs[set->nglobs]);
        if (rc != SP_OK) {
            return rc;
        }

        set->nglobs++;
    }

    return SP_OK;
}


static int
sp_policy_providers(sp_policy_ctx_t *ctx, json_t *v, const char *name,
    uint8_t *mask)
{
    char                  path[64];
    size_t                i;
    json_t               *p;
    const sp_provider_t  *prov;

    if (!json_is_array(v) || json_array_size(v) == 0
        || json_array_size(v) > SP_POLICY_LIST_MAX)
    {
        return sp_policy_fail(ctx, name, "expected an array of providers, "
                              "each one of " SP_PROVIDER_NAMES_TEXT);
    }

    *mask = 0;

    json_array_foreach(v, i, p) {
        prov = json_is_string(p) ? sp_provider_find(json_string_value(p),
                                                    json_string_length(p))
                                 : NULL;

        if (prov == NULL) {
            snprintf(path, sizeof(path), "%s[%zu]", name, i);
            return sp_policy_fail(ctx, path, "expected a provider, one of "
                                  SP_PROVIDER_NAMES_TEXT);
        }

        *mask |= (uint8_t) (1u << prov->provider);
    }

    return SP_OK;
}


static int
sp_policy_model(sp_policy_ctx_t *ctx, json_t *obj)
{
    int           rc;
    json_t       *v;
    sp_policy_t  *p;

    p = ctx->policy;

    v = json_object_get(obj, "allow_models");
    if (v != NULL) {
        rc = sp_policy_globs(ctx, v, "allow_models", &p->allow_first,
                             &p->allow_n);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(obj, "deny_models");
    if (v != NULL) {
        rc = sp_policy_globs(ctx, v, "deny_models", &p->deny_first,
                             &p->deny_n);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(obj, "allow_providers");
    if (v != NULL) {
        rc = sp_policy_providers(ctx, v, "allow_providers",
                                 &p->allow_providers);
        if (rc != SP_OK) {
            return rc;
        }

        p->has_allow_providers = 1;
    }

    v = json_object_get(obj, "deny_providers");
    if (v != NULL) {
        rc = sp_policy_providers(ctx, v, "deny_providers",
                                 &p->deny_providers);
        if (rc != SP_OK) {
            return rc;
        }
    }

    if (p->allow_n == 0 && p->deny_n == 0 && !p->has_allow_providers
        && p->deny_providers == 0)
    {
        return sp_policy_fail(ctx, "allow_models", "expected at least one "
                              "of allow_models, deny_models, "
                              "allow_providers, deny_providers");
    }

    return SP_OK;
}


static int
sp_policy_cost(sp_policy_ctx_t *ctx, json_t *v, int64_t *nano)
{
    char         text[64];
    const char  *s;

    if (json_is_string(v)) {
        s = json_string_value(v);

        if (strlen(s) != json_string_length(v)
            || sp_money_parse(s, strlen(s), nano) != SP_OK)
        {
            return sp_policy_fail(ctx, "max_cost_usd", "expected a decimal "
                                  "amount of USD with at most 9 decimals, "
                                  "e.g. \"0.50\"");
        }

    } else if (json_is_integer(v)) {
        if (json_integer_value(v) < 0
            || json_integer_value(v) > SP_POLICY_COST_MAX_USD)
        {
            *nano = -1;

        } else {
            *nano = json_integer_value(v) * SP_POLICY_NANO_PER_USD;
        }

    } else if (json_is_real(v)) {
        if (json_real_value(v) < 0
            || json_real_value(v) > SP_POLICY_COST_MAX_USD)
        {
            *nano = -1;

        } else if (sp_money_number_text(json_real_value(v), text,
                                         sizeof(text)) != SP_OK
                   || sp_money_parse(text, strlen(text), nano) != SP_OK)
        {
            return sp_policy_fail(ctx, "max_cost_usd", "this number has "
                                  "more than 9 decimals or 15 significant "
                                  "digits and cannot be read exactly; send "
                                  "it as a decimal string, e.g. \"0.50\"");
        }

    } else {
        return sp_policy_fail(ctx, "max_cost_usd", "expected a decimal "
                              "string (e.g. \"0.50\") or a number of USD, "
                              "not %s", sp_conf_kind(v));
    }

    if (*nano <= 0 || *nano > SP_POLICY_COST_MAX_USD * SP_POLICY_NANO_PER_USD)
    {
        return sp_policy_fail(ctx, "max_cost_usd", "expected more than 0 "
                              "and at most %d USD", SP_POLICY_COST_MAX_USD);
    }

    return SP_OK;
}


static int
sp_policy_limits(sp_policy_ctx_t *ctx, json_t *obj)
{
    int           rc;
    json_t       *v;
    sp_policy_t  *p;

    p = ctx->policy;
    p->max_cost_nano = -1;

    v = json_object_get(obj, "max_tokens");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > SP_POLICY_TOKENS_MAX)
        {
            return sp_policy_fail(ctx, "max_tokens", "expected an integer "
                                  "from 1 to %d", SP_POLICY_TOKENS_MAX);
        }

        p->max_tokens = json_integer_value(v);
    }

    v = json_object_get(obj, "require_max_tokens");
    if (v != NULL) {
        rc = sp_policy_bool(ctx, v, "require_max_tokens",
                            &p->require_max_tokens);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(obj, "max_cost_usd");
    if (v != NULL) {
        rc = sp_policy_cost(ctx, v, &p->max_cost_nano);
        if (rc != SP_OK) {
            return rc;
        }
    }

    if (p->max_tokens == 0 && p->max_cost_nano < 0 && !p->require_max_tokens)
    {
        return sp_policy_fail(ctx, "max_tokens", "expected max_tokens, "
                              "max_cost_usd or \"require_max_tokens\": "
                              "true");
    }

    return SP_OK;
}


static int
sp_policy_attribution(sp_policy_ctx_t *ctx, json_t *obj)
{
    size_t       i;
    json_t      *v;
    const char  *s;

    static const char *const  names[] = {
        "", "department", "project", "either", "both"
    };

    v = json_object_get(obj, "require");
    s = json_is_string(v) ? json_string_value(v) : "";

    for (i = SP_POLICY_REQ_DEPARTMENT; i <= SP_POLICY_REQ_BOTH; i++) {
        if (strcmp(s, names[i]) == 0 && strlen(s) == json_string_length(v))
        {
            ctx->policy->require = (uint8_t) i;
            return SP_OK;
        }
    }

    return sp_policy_fail(ctx, "require", "expected department, project, "
                          "either or both");
}


static int
sp_policy_pii(sp_policy_ctx_t *ctx, json_t *obj)
{
    int           rc, type;
    char          path[96], key[72];
    size_t        i;
    double        t;
    json_t       *v, *e;
    const char   *k;
    sp_policy_t  *p;

    p = ctx->policy;
    p->types = SP_PII_ALL;

    for (i = 0; i < SP_PII_COUNT; i++) {
        p->entity_action[i] = p->action;
    }

    v = json_object_get(obj, "threshold");
    if (v != NULL) {
        t = json_is_number(v) ? json_number_value(v) : -1;

        if (t < 0 || t > 1 || fabs(t * 1000 - round(t * 1000)) > 1e-6) {
            return sp_policy_fail(ctx, "threshold", "expected a number from "
                                  "0 to 1 with at most 3 decimals");
        }

        p->threshold_milli = (uint16_t) lround(t * 1000);
    }

    v = json_object_get(obj, "entities");

    if (json_is_array(v)) {
        if (json_array_size(v) == 0) {
            return sp_policy_fail(ctx, "entities", "expected one or more "
                                  "entity types");
        }

        p->types = 0;

        json_array_foreach(v, i, e) {
            type = json_is_string(e) ? sp_pii_type(json_string_value(e),
                                                   json_string_length(e))
                                     : -1;
            if (type < 0 || type >= SP_PII_COUNT) {
                snprintf(path, sizeof(path), "entities[%zu]", i);
                return sp_policy_fail(ctx, path, "expected an entity type: "
                                      "email, phone, ssn, card, iban, ipv4, "
                                      "ipv6, api_key, jwt, private_key or "
                                      "dob");
            }

            p->types |= 1u << type;
        }

    } else if (json_is_object(v)) {
        json_object_foreach(v, k, e) {
            sp_policy_print(k, strlen(k), key, sizeof(key));
            snprintf(path, sizeof(path), "entities.%s", key);

            type = sp_pii_type(k, strlen(k));

            if (type < 0 || type >= SP_PII_COUNT) {
                return sp_policy_fail(ctx, path, "expected an entity type: "
                                      "email, phone, ssn, card, iban, ipv4, "
                                      "ipv6, api_key, jwt, private_key or "
                                      "dob");
            }

            rc = sp_policy_action(ctx, e, path, 1,
                                  &p->entity_action[type]);
            if (rc != SP_OK) {
                return rc;
            }
        }

    } else if (v != NULL) {
        return sp_policy_fail(ctx, "entities", "expected an object of "
                              "types and actions ({\"card\": \"redact\"}) "
                              "or an array of types, not %s",
                              sp_conf_kind(v));
    }

    v = json_object_get(obj, "scan_responses");
    if (v != NULL) {
        return sp_policy_bool(ctx, v, "scan_responses", &p->scan_responses);
    }

    return SP_OK;
}


/*
 * Compiles a pattern as evaluation will run it: UTF (invalid UTF-8 in a
 * text is matched around, not an error), JIT when the platform has it.
 */
static int
sp_policy_pattern(sp_policy_ctx_t *ctx, json_t *v, const char *path,
    int caseless)
{
    int               errcode;
    char              message[160];
    uint32_t          options;
    PCRE2_SIZE        offset;
    pcre2_code       *code;
    sp_policy_set_t  *set;

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > SP_POLICY_PATTERN_MAX_LEN)
    {
        return sp_policy_fail(ctx, path, "expected a regular expression of "
                              "1 to %d bytes", SP_POLICY_PATTERN_MAX_LEN);
    }

    options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C;

    if (caseless) {
        options |= PCRE2_CASELESS;
    }

    code = pcre2_compile((PCRE2_SPTR) json_string_value(v),
                         json_string_length(v), options, &errcode, &offset,
                         NULL);

    if (code == NULL) {
        if (errcode == PCRE2_ERROR_NOMEMORY) {
            return SP_POLICY_NO_MEMORY;
        }

        message[0] = '\0';
        pcre2_get_error_message(errcode, (PCRE2_UCHAR *) message,
                                sizeof(message));

        return sp_policy_fail(ctx, path, "%s at offset %zu", message,
                              (size_t) offset);
    }

    set = ctx->set;

    if (set == NULL) {
        pcre2_code_free(code);
        return SP_OK;
    }

    /* without JIT (a platform without it) the interpreter runs it */
    (void) pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);

    if (sp_policy_grow((void **) &set->patterns, &set->patterns_cap,
                       set->npatterns, sizeof(pcre2_code *)) != SP_OK)
    {
        pcre2_code_free(code);
        return SP_POLICY_NO_MEMORY;
    }

    set->patterns[set->npatterns++] = code;

    return SP_OK;
}


static int
sp_policy_patterns(sp_policy_ctx_t *ctx, json_t *obj)
{
    int           rc;
    char          path[32];
    size_t        i;
    json_t       *v, *pat;
    sp_policy_t  *p;

    p = ctx->policy;

    v = json_object_get(obj, "case_insensitive");
    if (v != NULL) {
        rc = sp_policy_bool(ctx, v, "case_insensitive", &p->caseless);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(obj, "patterns");

    if (!json_is_array(v) || json_array_size(v) == 0
        || json_array_size(v) > SP_POLICY_MAX_PATTERNS)
    {
        return sp_policy_fail(ctx, "patterns", "expected an array of 1 to "
                              "%d regular expressions (PCRE2 syntax)",
                              SP_POLICY_MAX_PATTERNS);
    }

    p->pattern_first = ctx->set ? (uint32_t) ctx->set->npatterns : 0;

    json_array_foreach(v, i, pat) {
        snprintf(path, sizeof(path), "patterns[%zu]", i);

        rc = sp_policy_pattern(ctx, pat, path, p->caseless);
        if (rc != SP_OK) {
            return rc;
        }

        p->pattern_n++;
    }

    return SP_OK;
}


static int
sp_policy_zone(sp_policy_ctx_t *ctx, const char *name, size_t len)
{
    int                rc;
    char               reason[128];
    size_t             i;
    sp_tz_t           *tz;
    sp_policy_set_t   *set;
    sp_policy_zone_t  *z;

    set = ctx->set;

    /* a zone several policies name is loaded once */
    for (i = 0; set != NULL && i < set->nzones; i++) {
        if (sp_policy_ref_eq(set, set->zones[i].name, name, len)) {
            ctx->policy->zone = (uint16_t) i;
            return SP_OK;
        }
    }

    tz = sp_tz_load(NULL, name, len, reason, sizeof(reason));

    if (tz == NULL) {
        return sp_policy_fail(ctx, "timezone", "expected an IANA time zone "
                              "such as Europe/Paris (%s)", reason);
    }

    if (set == NULL) {
        sp_tz_free(tz);
        return SP_OK;
    }

    if (set->nzones >= UINT16_MAX
        || sp_policy_grow((void **) &set->zones, &set->zones_cap,
                          set->nzones, sizeof(sp_policy_zone_t)) != SP_OK)
    {
        sp_tz_free(tz);
        return SP_POLICY_NO_MEMORY;
    }

    z = &set->zones[set->nzones];
    z->tz = tz;

    rc = sp_policy_store(ctx, name, len, &z->name);
    if (rc != SP_OK) {
        sp_tz_free(tz);
        return rc;
    }

    ctx->policy->zone = (uint16_t) set->nzones++;

    return SP_OK;
}


/* the window's members sit in the policy object itself */
static int
sp_policy_window(sp_policy_ctx_t *ctx, json_t *obj)
{
    int          rc;
    char         member[96], reason[160];
    size_t       i, zone_len;
    json_t      *w, *v;
    const char  *zone;

    static const char *const  names[] = { "timezone", "days", "start",
                                          "end" };

    w = json_object();
    if (w == NULL) {
        return SP_POLICY_NO_MEMORY;
    }

    for (i = 0; i < 4; i++) {
        v = json_object_get(obj, names[i]);

        if (v != NULL && json_object_set(w, names[i], v) != 0) {
            json_decref(w);
            return SP_POLICY_NO_MEMORY;
        }
    }

    rc = sp_tz_window_parse(w, &ctx->policy->window, &zone, &zone_len,
                            member, sizeof(member), reason, sizeof(reason));

    if (rc != SP_OK) {
        json_decref(w);
        return sp_policy_fail(ctx, member, "%s", reason);
    }

    rc = sp_policy_zone(ctx, zone, zone_len);
    json_decref(w);

    return rc;
}


/* members every kind takes, then each kind's own */
static const char *const  sp_policy_common[] = {
    "id", "name", "enabled", "scope", "action", "code", "kind",
    "created_at", "updated_at", NULL
};

static const char *const  sp_policy_members[][7] = {
    { "allow_models", "deny_models", "allow_providers", "deny_providers",
      NULL },
    { "max_tokens", "require_max_tokens", "max_cost_usd", NULL },
    { "require", NULL },
    { "threshold", "entities", "scan_responses", NULL },
    { "patterns", "case_insensitive", NULL },
    { "timezone", "days", "start", "end", NULL }
};


static int
sp_policy_known(const char *k, int kind)
{
    size_t  i;

    for (i = 0; sp_policy_common[i] != NULL; i++) {
        if (strcmp(k, sp_policy_common[i]) == 0) {
            return 1;
        }
    }

    for (i = 0; kind >= 0 && sp_policy_members[kind][i] != NULL; i++) {
        if (strcmp(k, sp_policy_members[kind][i]) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
sp_policy_one(sp_policy_ctx_t *ctx, json_t *obj)
{
    int           rc, kind, other;
    char          key[72];
    size_t        i;
    json_t       *v;
    uint8_t       enabled;
    const char   *k, *s;
    sp_policy_t  *p;

    p = ctx->policy;
    memset(p, 0, sizeof(sp_policy_t));
    p->max_cost_nano = -1;

    if (!json_is_object(obj)) {
        return sp_policy_fail(ctx, "", "expected a policy object, not %s",
                              sp_conf_kind(obj));
    }

    /* the id first: a policy that fails is named by it in the logs */
    v = json_object_get(obj, "id");
    if (json_is_string(v) && json_string_length(v) < SP_ID_LEN) {
        rc = sp_policy_store(ctx, json_string_value(v),
                             json_string_length(v), &p->id);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(obj, "kind");
    s = json_is_string(v) ? json_string_value(v) : "";

    for (kind = 0; kind <= SP_POLICY_KIND_TIME_WINDOW; kind++) {
        if (strcmp(s, sp_policy_kinds[kind]) == 0
            && strlen(s) == json_string_length(v))
        {
            break;
        }
    }

    if (kind > SP_POLICY_KIND_TIME_WINDOW) {
        return sp_policy_fail(ctx, "kind", "expected model, limits, "
                              "attribution, pii, pattern or time_window");
    }

    p->kind = (uint8_t) kind;

    /* a typo, or a member of another kind, must not silently widen it */
    json_object_foreach(obj, k, v) {
        if (sp_policy_known(k, kind)) {
            continue;
        }

        sp_policy_print(k, strlen(k), key, sizeof(key));

        for (other = 0; other <= SP_POLICY_KIND_TIME_WINDOW; other++) {
            for (i = 0; sp_policy_members[other][i] != NULL; i++) {
                if (strcmp(k, sp_policy_members[other][i]) == 0) {
                    return sp_policy_fail(ctx, key, "\"%s\" belongs to %s "
                                          "policies, not %s", key,
                                          sp_policy_kinds[other],
                                          sp_policy_kinds[kind]);
                }
            }
        }

        return sp_policy_fail(ctx, key, "unknown member \"%s\"", key);
    }

    rc = sp_policy_string(ctx, json_object_get(obj, "name"), "name", 1,
                          SP_POLICY_NAME_MAX, "a name", &p->name);
    if (rc != SP_OK) {
        return rc;
    }

    enabled = 1;
    v = json_object_get(obj, "enabled");
    if (v != NULL) {
        rc = sp_policy_bool(ctx, v, "enabled", &enabled);
        if (rc != SP_OK) {
            return rc;
        }
    }

    rc = sp_policy_scope(ctx, json_object_get(obj, "scope"));
    if (rc != SP_OK) {
        return rc;
    }

    v = json_object_get(obj, "action");
    if (v == NULL) {
        return sp_policy_fail(ctx, "action", "expected an action: block, "
                              "warn, log%s", (kind == SP_POLICY_KIND_PII
                                              || kind
                                                 == SP_POLICY_KIND_PATTERN)
                                             ? " or redact" : "");
    }

    rc = sp_policy_action(ctx, v, "action",
                          kind == SP_POLICY_KIND_PII
                          || kind == SP_POLICY_KIND_PATTERN, &p->action);
    if (rc != SP_OK) {
        return rc;
    }

    v = json_object_get(obj, "code");
    if (v != NULL) {
        rc = sp_policy_code(ctx, v);

    } else {
        s = sp_policy_codes[kind];
        rc = sp_policy_store(ctx, s, strlen(s), &p->code);
    }

    if (rc != SP_OK) {
        return rc;
    }

    switch (kind) {
    case SP_POLICY_KIND_MODEL:
        rc = sp_policy_model(ctx, obj);
        break;
    case SP_POLICY_KIND_LIMITS:
        rc = sp_policy_limits(ctx, obj);
        break;
    case SP_POLICY_KIND_ATTRIBUTION:
        rc = sp_policy_attribution(ctx, obj);
        break;
    case SP_POLICY_KIND_PII:
        rc = sp_policy_pii(ctx, obj);
        break;
    case SP_POLICY_KIND_PATTERN:
        rc = sp_policy_patterns(ctx, obj);
        break;
    default:
        rc = sp_policy_window(ctx, obj);
        break;
    }

    if (rc != SP_OK) {
        return rc;
    }

    p->valid = enabled;

    return SP_OK;
}


int
sp_policy_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen)
{
    int               rc;
    json_t           *root;
    sp_policy_t       policy;
    json_error_t      jerr;
    sp_policy_ctx_t   ctx;

    ctx.set = NULL;
    ctx.policy = &policy;
    ctx.field = field;
    ctx.fieldlen = fieldlen;
    ctx.err = err;
    ctx.errlen = errlen;

    sp_errorf(field, fieldlen, "%s", "");
    sp_errorf(err, errlen, "%s", "");

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        return sp_policy_fail(&ctx, "", "expected a JSON policy object: %s "
                              "at line %d column %d", jerr.text, jerr.line,
                              jerr.column);
    }

    rc = sp_policy_one(&ctx, root);
    json_decref(root);

    if (rc == SP_POLICY_NO_MEMORY) {
        return sp_policy_fail(&ctx, "", "out of memory");
    }

    return rc;
}


/* ---- the compiled set ------------------------------------------------ */

void
sp_policy_free(sp_policy_set_t *set)
{
    size_t  i;

    if (set == NULL) {
        return;
    }

    for (i = 0; i < set->npatterns; i++) {
        pcre2_code_free(set->patterns[i]);
    }

    for (i = 0; i < set->nzones; i++) {
        sp_tz_free(set->zones[i].tz);
    }

    pcre2_match_data_free(set->match_data);
    pcre2_jit_stack_free(set->jit_stack);
    pcre2_match_context_free(set->match_ctx);

    free(set->patterns);
    free(set->zones);
    free(set->globs);
    free(set->strings);
    free(set->pat_state);
    free(set->pat_index);
    free(set->spans);
    free(set->merged);
    free(set->text_pii);
    free(set);
}


/* what evaluation needs, made once: no allocation per request */
static int
sp_policy_prepare(sp_policy_set_t *set)
{
    size_t  n;

    n = set->npolicies ? set->npolicies : 1;

    set->pat_state = calloc(n, 1);
    set->pat_index = calloc(n, 1);
    set->spans = calloc(SP_PII_MAX_ENTITIES, sizeof(sp_pii_entity_t));
    set->merged = calloc(SP_PII_MAX_ENTITIES, sizeof(sp_pii_entity_t));

    if (set->pat_state == NULL || set->pat_index == NULL
        || set->spans == NULL || set->merged == NULL)
    {
        return SP_POLICY_NO_MEMORY;
    }

    if (set->npatterns == 0) {
        return SP_OK;
    }

    set->text_pii = malloc(sizeof(sp_pii_result_t));
    if (set->text_pii == NULL) {
        return SP_POLICY_NO_MEMORY;
    }

    set->match_ctx = pcre2_match_context_create(NULL);
    if (set->match_ctx == NULL) {
        return SP_POLICY_NO_MEMORY;
    }

    /* no pattern can stall a worker: each limit is a fail-closed match */
    pcre2_set_match_limit(set->match_ctx, SP_POLICY_MATCH_LIMIT);
    pcre2_set_depth_limit(set->match_ctx, SP_POLICY_DEPTH_LIMIT);
    pcre2_set_heap_limit(set->match_ctx, SP_POLICY_HEAP_LIMIT);

    set->jit_stack = pcre2_jit_stack_create(SP_POLICY_JIT_STACK_START,
                                            SP_POLICY_JIT_STACK_MAX, NULL);
    if (set->jit_stack == NULL) {
        return SP_POLICY_NO_MEMORY;
    }

    pcre2_jit_stack_assign(set->match_ctx, NULL, set->jit_stack);

    /* only the whole match's offsets are read */
    set->match_data = pcre2_match_data_create(1, NULL);
    if (set->match_data == NULL) {
        return SP_POLICY_NO_MEMORY;
    }

    return SP_OK;
}


sp_policy_set_t *
sp_policy_compile(const char *json, size_t len, char *err, size_t errlen)
{
    int               rc;
    char              field[96], reason[192];
    size_t            i, n;
    json_t           *root, *v;
    json_error_t      jerr;
    sp_policy_ctx_t   ctx;
    sp_policy_set_t  *set;

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        sp_errorf(err, errlen, "policies are not JSON: %s at line %d column "
                  "%d", jerr.text, jerr.line, jerr.column);
        return NULL;
    }

    if (!json_is_array(root)) {
        json_decref(root);
        sp_errorf(err, errlen, "policies are not a JSON array");
        return NULL;
    }

    n = json_array_size(root);

    set = calloc(1, sizeof(sp_policy_set_t) + n * sizeof(sp_policy_t));
    if (set == NULL) {
        json_decref(root);
        sp_errorf(err, errlen, "out of memory compiling %zu policies", n);
        return NULL;
    }

    set->npolicies = n;

    ctx.set = set;
    ctx.field = field;
    ctx.fieldlen = sizeof(field);
    ctx.err = reason;
    ctx.errlen = sizeof(reason);

    json_array_foreach(root, i, v) {
        ctx.policy = &set->policy[i];
        field[0] = '\0';

        rc = sp_policy_one(&ctx, v);

        if (rc == SP_POLICY_NO_MEMORY) {
            goto no_memory;
        }

        if (rc != SP_OK) {
            /* kept in its place, never matching */
            set->policy[i].valid = 0;

            if (set->ninvalid++ == 0) {
                snprintf(set->first_error, sizeof(set->first_error),
                         "policy %zu%s%.*s: %s%s%s", i + 1,
                         set->policy[i].id.len ? " " : "",
                         (int) set->policy[i].id.len,
                         sp_policy_text(set, set->policy[i].id), field,
                         field[0] ? ": " : "", reason);
            }
        }
    }

    json_decref(root);
    root = NULL;

    if (sp_policy_prepare(set) != SP_OK) {
        goto no_memory;
    }

    return set;

no_memory:

    json_decref(root);
    sp_policy_free(set);
    sp_errorf(err, errlen, "out of memory compiling %zu policies", n);

    return NULL;
}


size_t
sp_policy_count(const sp_policy_set_t *set)
{
    return set ? set->npolicies : 0;
}


size_t
sp_policy_invalid(const sp_policy_set_t *set, char *err, size_t errlen)
{
    if (set == NULL || set->ninvalid == 0) {
        sp_errorf(err, errlen, "%s", "");
        return 0;
    }

    sp_errorf(err, errlen, "%s", set->first_error);

    return set->ninvalid;
}


/* ---- evaluation ------------------------------------------------------ */

typedef struct {
    sp_policy_set_t             *set;
    const sp_policy_request_t   *req;
    sp_policy_decision_t        *out;
    int64_t                      worst;
    int                          worst_known;
    int                          ids_full;
    int                          warnings_full;
    size_t                       npending;    /* pattern policies running */
} sp_policy_eval_t;


static int
sp_policy_str_eq(const sp_policy_set_t *set, sp_policy_ref_t ref,
    sp_str_t s)
{
    return ref.len == s.len
           && (s.len == 0
               || memcmp(set->strings + ref.off, s.data, s.len) == 0);
}


static int
sp_policy_applies(const sp_policy_set_t *set, const sp_policy_t *p,
    const sp_policy_request_t *req)
{
    if (!p->valid) {
        return 0;
    }

    switch (p->scope) {
    case SP_POLICY_SCOPE_ORG:
        return 1;
    case SP_POLICY_SCOPE_API_KEY:
        return sp_policy_str_eq(set, p->scope_value, req->api_key_id);
    case SP_POLICY_SCOPE_AGENT:
        return sp_policy_str_eq(set, p->scope_value, req->agent_id);
    case SP_POLICY_SCOPE_DEPARTMENT:
        return sp_policy_str_eq(set, p->scope_value, req->department);
    default:
        return sp_policy_str_eq(set, p->scope_value, req->project);
    }
}


/* a span of text [a, b) as raw body offsets, kept for redaction */
static int
sp_policy_add_span(sp_policy_set_t *set, const sp_pii_text_t *text,
    size_t a, size_t b)
{
    sp_pii_entity_t  *e;

    if (set->nspans >= SP_PII_MAX_ENTITIES) {
        return SP_ERROR;
    }

    e = &set->spans[set->nspans++];
    e->type = SP_PII_PATTERN;
    e->start = text->raw[a];
    e->end = text->raw[b];

    return SP_OK;
}


/*
 * One policy's patterns on one text. A policy that does not redact stops
 * at its first match; one that redacts collects every span.
 */
static void
sp_policy_run(sp_policy_eval_t *ev, size_t i, const sp_pii_text_t *text)
{
    int                rc;
    size_t             k, start;
    PCRE2_SIZE        *ov;
    sp_policy_set_t   *set;
    const sp_policy_t *p;

    set = ev->set;
    p = &set->policy[i];
    ov = pcre2_get_ovector_pointer(set->match_data);

    for (k = 0; k < p->pattern_n; k++) {
        start = 0;

        while (start <= text->len) {
            rc = pcre2_match(set->patterns[p->pattern_first + k],
                             (PCRE2_SPTR) text->text, text->len, start, 0,
                             set->match_data, set->match_ctx);

            if (rc == PCRE2_ERROR_NOMATCH) {
                break;
            }

            if (rc < 0) {
                /*
                 * A limit (match, depth, heap, JIT stack) or any other
                 * error: the text may hold what the pattern looks for,
                 * so it counts as matched (fail closed).
                 */
                set->pat_state[i] = SP_POLICY_PAT_LIMIT;
                set->pat_index[i] = (uint8_t) k;
                ev->npending--;
                return;
            }

            if (set->pat_state[i] == SP_POLICY_PAT_PENDING) {
                set->pat_state[i] = SP_POLICY_PAT_MATCHED;
            }

            if (p->action != SP_POLICY_REDACT) {
                ev->npending--;
                return;
            }

            if (ov[1] > ov[0]) {
                if (sp_policy_add_span(set, text, ov[0], ov[1]) != SP_OK) {
                    set->pat_state[i] = SP_POLICY_PAT_OVERFLOW;
                    ev->npending--;
                    return;
                }

                start = ov[1];
                continue;
            }

            /* an empty match: step over one character */
            start = ov[1] + 1;

            while (start < text->len
                   && ((unsigned char) text->text[start] & 0xc0) == 0x80)
            {
                start++;
            }
        }
    }
}


/*
 * One walk of the body's texts for the PII scan and the patterns: each
 * text is scanned as sp_pii_scan_body() scans it (sp_pii_scan_text(),
 * spans mapped to the body, counts added up), then the pattern policies
 * still running look at it. A second walk would cost as much as the
 * scan itself.
 */
static int
sp_policy_visit(const sp_pii_text_t *text, void *arg)
{
    size_t             i;
    uint32_t           t;
    sp_pii_entity_t   *e;
    sp_pii_result_t   *pii, *one;
    sp_policy_eval_t  *ev;
    sp_policy_set_t   *set;

    ev = arg;
    set = ev->set;
    pii = &ev->out->pii;
    one = set->text_pii;

    sp_pii_scan_text(text->text, text->len, SP_PII_ALL, one);

    for (i = 0; i < one->nentities; i++) {
        if (pii->nentities == SP_PII_MAX_ENTITIES) {
            break;
        }

        e = &pii->entities[pii->nentities++];
        e->type = one->entities[i].type;
        e->start = text->raw[one->entities[i].start];
        e->end = text->raw[one->entities[i].end];
    }

    for (t = 0; t < SP_PII_COUNT; t++) {
        pii->counts[t] += one->counts[t];
    }

    pii->total += one->total;
    pii->types |= one->types;
    pii->scanned += text->len;

    for (i = 0; i < set->npolicies && ev->npending > 0; i++) {
        if (set->pat_state[i] == SP_POLICY_PAT_PENDING
            || (set->pat_state[i] == SP_POLICY_PAT_MATCHED
                && set->policy[i].action == SP_POLICY_REDACT))
        {
            sp_policy_run(ev, i, text);
        }
    }

    return 0;
}


/*
 * The scan, and the patterns of the pattern policies in scope, in one
 * walk; without pattern policies, sp_pii_scan_body() itself.
 */
static int
sp_policy_scan(sp_policy_eval_t *ev)
{
    int                         rc;
    size_t                      i;
    sp_policy_set_t            *set;
    sp_pii_result_t            *pii;
    const sp_policy_request_t  *req;

    set = ev->set;
    req = ev->req;
    pii = &ev->out->pii;
    ev->npending = 0;

    for (i = 0; set != NULL && i < set->npolicies; i++) {
        if (set->policy[i].kind == SP_POLICY_KIND_PATTERN
            && sp_policy_applies(set, &set->policy[i], req))
        {
            set->pat_state[i] = SP_POLICY_PAT_PENDING;
            ev->npending++;

        } else {
            set->pat_state[i] = SP_POLICY_PAT_SKIP;
        }
    }

    if (set != NULL) {
        set->nspans = 0;
    }

    if (req->body == NULL || req->body_len == 0) {
        sp_pii_scan_text("", 0, SP_PII_ALL, pii);
        return SP_OK;
    }

    if (ev->npending == 0) {
        return sp_pii_scan_body(req->provider, 0, req->body, req->body_len,
                                SP_PII_ALL, pii);
    }

    sp_pii_scan_text("", 0, SP_PII_ALL, pii);

    rc = sp_pii_body_text(req->provider, 0, req->body, req->body_len,
                          sp_policy_visit, ev);

    pii->score_milli = sp_pii_score(pii->types);

    return rc;
}


/* the reason's text: what it names is never a value found */
typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} sp_policy_buf_t;


static void
sp_policy_addf(sp_policy_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sp_policy_addf(sp_policy_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (b->len + 1 >= b->cap) {
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, args);
    va_end(args);

    if (n > 0) {
        b->len += (size_t) n;

        if (b->len >= b->cap) {
            b->len = b->cap - 1;
        }
    }
}


static int64_t
sp_policy_worst(sp_policy_eval_t *ev)
{
    if (!ev->worst_known) {
        ev->worst = ev->req->worst_case_nano
                    ? ev->req->worst_case_nano(ev->req->data) : -1;
        ev->worst_known = 1;
    }

    return ev->worst;
}


static int
sp_policy_check_model(sp_policy_eval_t *ev, const sp_policy_t *p,
    sp_policy_buf_t *why)
{
    char                        model[72];
    size_t                      i;
    const char                 *prov;
    sp_policy_ref_t             g;
    const sp_policy_set_t      *set;
    const sp_policy_request_t  *req;

    set = ev->set;
    req = ev->req;
    prov = sp_provider_name(req->provider);
    prov = prov ? prov : "unknown";
    sp_policy_print(req->model.data, req->model.len, model, sizeof(model));

    if ((unsigned) req->provider < 8
        && (p->deny_providers & (1u << req->provider)))
    {
        sp_policy_addf(why, "provider %s is denied", prov);
        return 1;
    }

    if (p->has_allow_providers
        && ((unsigned) req->provider >= 8
            || !(p->allow_providers & (1u << req->provider))))
    {
        sp_policy_addf(why, "provider %s is not in the allowed providers",
                       prov);
        return 1;
    }

    for (i = 0; i < p->deny_n; i++) {
        g = set->globs[p->deny_first + i];

        if (sp_route_glob_match(set->strings + g.off, g.len, req->model.data,
                                req->model.len))
        {
            sp_policy_addf(why, "model %s matches deny glob \"%.*s\"", model,
                           (int) g.len, set->strings + g.off);
            return 1;
        }
    }

    if (p->allow_n == 0) {
        return 0;
    }

    for (i = 0; i < p->allow_n; i++) {
        g = set->globs[p->allow_first + i];

        if (sp_route_glob_match(set->strings + g.off, g.len, req->model.data,
                                req->model.len))
        {
            return 0;
        }
    }

    sp_policy_addf(why, "model %s matches none of the allowed models",
                   model);

    return 1;
}


static int
sp_policy_check_limits(sp_policy_eval_t *ev, const sp_policy_t *p,
    sp_policy_buf_t *why)
{
    char                        worst[32], limit[32];
    int64_t                     w;
    const sp_policy_request_t  *req;

    req = ev->req;

    if (p->max_tokens > 0 && req->max_tokens > p->max_tokens) {
        sp_policy_addf(why, "max_tokens %lld above the limit %lld",
                       (long long) req->max_tokens,
                       (long long) p->max_tokens);
        return 1;
    }

    if (p->require_max_tokens && req->max_tokens < 0) {
        sp_policy_addf(why, "no output limit (max_tokens) and the policy "
                       "requires one");
        return 1;
    }

    if (p->max_cost_nano < 0) {
        return 0;
    }

    /* an unpriced model's worst case is unknown: not a violation */
    w = sp_policy_worst(ev);

    if (w >= 0 && w > p->max_cost_nano) {
        sp_money_format(w, worst);
        sp_money_format(p->max_cost_nano, limit);
        sp_policy_addf(why, "worst-case cost $%s above the limit $%s", worst,
                       limit);
        return 1;
    }

    return 0;
}


static int
sp_policy_check_attribution(sp_policy_eval_t *ev, const sp_policy_t *p,
    sp_policy_buf_t *why)
{
    int  dept, proj;

    dept = ev->req->department.len > 0;
    proj = ev->req->project.len > 0;

    switch (p->require) {
    case SP_POLICY_REQ_DEPARTMENT:
        if (!dept) {
            sp_policy_addf(why, "no department");
            return 1;
        }
        return 0;
    case SP_POLICY_REQ_PROJECT:
        if (!proj) {
            sp_policy_addf(why, "no project");
            return 1;
        }
        return 0;
    case SP_POLICY_REQ_EITHER:
        if (!dept && !proj) {
            sp_policy_addf(why, "neither a department nor a project");
            return 1;
        }
        return 0;
    default:
        if (!dept || !proj) {
            sp_policy_addf(why, "no %s", !dept && !proj
                                         ? "department and no project"
                                         : !dept ? "department"
                                                 : "project");
            return 1;
        }
        return 0;
    }
}


/*
 * The score over the policy's own types; each type found takes its own
 * action, the match the strongest. Returns the action, SP_POLICY_PASS
 * when the policy is not violated.
 */
static int
sp_policy_check_pii(sp_policy_eval_t *ev, const sp_policy_t *p,
    sp_policy_buf_t *why)
{
    int                      action, score, t, n;
    uint32_t                 found;
    sp_policy_decision_t    *out;

    out = ev->out;
    found = out->pii.types & p->types;

    if (found == 0) {
        return SP_POLICY_PASS;
    }

    score = sp_pii_score(found);

    if (score < p->threshold_milli) {
        return SP_POLICY_PASS;
    }

    action = SP_POLICY_PASS;
    n = 0;

    sp_policy_addf(why, "guard score %d.%03d", score / 1000, score % 1000);

    if (p->threshold_milli > 0) {
        sp_policy_addf(why, " >= %d.%03d", p->threshold_milli / 1000,
                       p->threshold_milli % 1000);
    }

    sp_policy_addf(why, ":");

    for (t = 0; t < SP_PII_COUNT; t++) {
        if (!(found & (1u << t))) {
            continue;
        }

        if (p->entity_action[t] > action) {
            action = p->entity_action[t];
        }

        if (p->entity_action[t] == SP_POLICY_REDACT) {
            out->redact_mask |= 1u << t;
        }

        sp_policy_addf(why, "%s %s (%u)", n++ ? "," : "",
                       sp_pii_name((sp_pii_type_e) t),
                       (unsigned) out->pii.counts[t]);
    }

    /*
     * Entities past the ones kept cannot be redacted: a redact would
     * let them through, so it blocks (never fail open).
     */
    if (action == SP_POLICY_REDACT && out->pii.total > out->pii.nentities) {
        sp_policy_addf(why, "; more entities than can be redacted (fail "
                       "closed)");
        action = SP_POLICY_BLOCK;
    }

    return action;
}


static int
sp_policy_check_pattern(sp_policy_eval_t *ev, size_t i, sp_policy_buf_t *why)
{
    const sp_policy_t  *p;
    sp_policy_set_t    *set;

    set = ev->set;
    p = &set->policy[i];

    switch (set->pat_state[i]) {
    case SP_POLICY_PAT_MATCHED:
        sp_policy_addf(why, "the text matches %s", p->pattern_n > 1
                                                   ? "its patterns"
                                                   : "its pattern");
        if (p->action == SP_POLICY_REDACT) {
            ev->out->redact_mask |= 1u << SP_PII_PATTERN;
        }
        return p->action;

    case SP_POLICY_PAT_LIMIT:
        sp_policy_addf(why, "pattern %u hit its match limit (fail closed)",
                       (unsigned) set->pat_index[i] + 1);
        /* a span it could not find cannot be redacted */
        return p->action == SP_POLICY_REDACT ? SP_POLICY_BLOCK : p->action;

    case SP_POLICY_PAT_OVERFLOW:
        sp_policy_addf(why, "more than %d spans to redact (fail closed)",
                       SP_PII_MAX_ENTITIES);
        return SP_POLICY_BLOCK;

    default:
        return SP_POLICY_PASS;
    }
}


static int
sp_policy_check_window(sp_policy_eval_t *ev, const sp_policy_t *p,
    sp_policy_buf_t *why)
{
    int                       weekday, minute;
    const sp_policy_zone_t   *z;

    z = &ev->set->zones[p->zone];
    sp_tz_local(z->tz, ev->req->now_ms, &weekday, &minute);

    if (sp_tz_window_contains(&p->window, weekday, minute)) {
        return 0;
    }

    sp_policy_addf(why, "%s %02d:%02d in %.*s is outside %02d:%02d-"
                   "%02d:%02d", sp_policy_days[weekday], minute / 60,
                   minute % 60, (int) z->name.len,
                   sp_policy_text(ev->set, z->name), p->window.start / 60,
                   p->window.start % 60, p->window.end / 60,
                   p->window.end % 60);

    if (p->window.days != 0x7f) {
        sp_policy_addf(why, " of its days");
    }

    return 1;
}


/*
 * Appends s to a comma-separated list, whole or not at all; once one
 * does not fit, none after it is added (*full): the list is a prefix.
 */
static void
sp_policy_list_add(char *list, size_t cap, int *full, const char *s,
    size_t len)
{
    size_t  used;

    if (*full || len == 0) {
        return;
    }

    used = strlen(list);

    if (used + (used > 0) + len + 1 > cap) {
        *full = 1;
        return;
    }

    if (used > 0) {
        list[used++] = ',';
    }

    memcpy(list + used, s, len);
    list[used + len] = '\0';
}


static int
sp_policy_list_has(const char *list, const char *s, size_t len)
{
    const char  *p, *end;

    for (p = list; *p != '\0'; p = *end ? end + 1 : end) {
        end = strchr(p, ',');
        end = end ? end : p + strlen(p);

        if ((size_t) (end - p) == len && memcmp(p, s, len) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
sp_policy_record(sp_policy_eval_t *ev, const sp_policy_t *p, int action,
    const char *why)
{
    size_t                  k;
    const char             *code;
    sp_policy_match_t      *m;
    sp_policy_decision_t   *out;
    const sp_policy_set_t  *set;

    out = ev->out;
    set = ev->set;
    out->total_matches++;

    if (action > out->decision) {
        out->decision = action;
    }

    sp_policy_list_add(out->policy_ids, sizeof(out->policy_ids),
                       &ev->ids_full, sp_policy_text(set, p->id), p->id.len);

    code = sp_policy_text(set, p->code);

    if (action == SP_POLICY_WARN
        && !sp_policy_list_has(out->warnings, code, p->code.len))
    {
        sp_policy_list_add(out->warnings, sizeof(out->warnings),
                           &ev->warnings_full, code, p->code.len);
    }

    if (out->nmatches < SP_POLICY_MAX_MATCHES) {
        k = out->nmatches++;

    } else if (action == SP_POLICY_BLOCK && out->blocked_by < 0) {
        /* the block a client is told of is always kept */
        k = SP_POLICY_MAX_MATCHES - 1;

    } else {
        return;
    }

    if (action == SP_POLICY_BLOCK && out->blocked_by < 0) {
        out->blocked_by = (int) k;
    }

    m = &out->matches[k];
    snprintf(m->policy_id, sizeof(m->policy_id), "%.*s", (int) p->id.len,
             sp_policy_text(set, p->id));
    snprintf(m->name, sizeof(m->name), "%.*s", (int) p->name.len,
             sp_policy_text(set, p->name));
    m->kind = p->kind;
    m->action = action;
    snprintf(m->code, sizeof(m->code), "%.*s", (int) p->code.len, code);
    snprintf(m->reason, sizeof(m->reason), "%s", why);
}


static int
sp_policy_span_cmp(const void *a, const void *b)
{
    const sp_pii_entity_t  *x = a, *y = b;

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }

    return (x->end > y->end) - (x->end < y->end);
}


/*
 * Pattern spans join the scan's entities: one list in order of start,
 * not overlapping. Overlapping spans merge into the wider one, labelled
 * by the first, unless only a later one is to be redacted: a merged span
 * is redacted when any part of it was to be.
 */
static void
sp_policy_merge(sp_policy_eval_t *ev)
{
    size_t             i, j, n;
    uint32_t           mask;
    sp_pii_entity_t   *e, *last;
    sp_policy_set_t   *set;
    sp_pii_result_t   *pii;

    set = ev->set;
    pii = &ev->out->pii;
    mask = ev->out->redact_mask;

    if (set->nspans == 0) {
        return;
    }

    qsort(set->spans, set->nspans, sizeof(sp_pii_entity_t),
          sp_policy_span_cmp);

    i = 0;
    j = 0;
    n = 0;

    while (i < pii->nentities || j < set->nspans) {
        if (j == set->nspans
            || (i < pii->nentities
                && pii->entities[i].start <= set->spans[j].start))
        {
            e = &pii->entities[i++];

        } else {
            e = &set->spans[j++];
        }

        last = n ? &set->merged[n - 1] : NULL;

        if (last != NULL && e->start < last->end) {
            if (e->end > last->end) {
                last->end = e->end;
            }

            if (!(mask & (1u << last->type)) && (mask & (1u << e->type))) {
                last->type = e->type;
            }

            continue;
        }

        if (n == SP_PII_MAX_ENTITIES) {
            /* cannot happen with both lists capped, but never overrun */
            break;
        }

        set->merged[n++] = *e;
    }

    memcpy(pii->entities, set->merged, n * sizeof(sp_pii_entity_t));
    pii->total += n > pii->nentities ? n - pii->nentities : 0;
    pii->nentities = n;
}


int
sp_policy_evaluate(sp_policy_set_t *set, const sp_policy_request_t *req,
    sp_policy_decision_t *out)
{
    int                  action, hit;
    char                 reason[SP_POLICY_REASON_LEN];
    size_t               i;
    unsigned             t;
    sp_policy_buf_t      why;
    sp_policy_eval_t     ev;
    const sp_policy_t   *p;

    out->decision = SP_POLICY_PASS;
    out->blocked_by = -1;
    out->nmatches = 0;
    out->total_matches = 0;
    out->warnings[0] = '\0';
    out->policy_ids[0] = '\0';
    out->redact_mask = 0;
    out->response_mask = 0;
    out->response_redact = 0;

    ev.set = set;
    ev.req = req;
    ev.out = out;
    ev.worst = -1;
    ev.worst_known = 0;
    ev.ids_full = 0;
    ev.warnings_full = 0;

    /* the guard score for every request, policies or not */
    if (sp_policy_scan(&ev) != SP_OK) {
        out->pii.nentities = 0;
        return SP_ERROR;
    }

    if (set == NULL || set->npolicies == 0) {
        return SP_OK;
    }

    for (i = 0; i < set->npolicies; i++) {
        p = &set->policy[i];

        if (!sp_policy_applies(set, p, req)) {
            continue;
        }

        if (p->kind == SP_POLICY_KIND_PII && p->scan_responses) {
            out->response_mask |= p->types;

            for (t = 0; t < SP_PII_COUNT; t++) {
                if ((p->types & (1u << t))
                    && p->entity_action[t] == SP_POLICY_REDACT)
                {
                    out->response_redact |= 1u << t;
                }
            }
        }

        why.p = reason;
        why.len = 0;
        why.cap = sizeof(reason);
        reason[0] = '\0';

        switch (p->kind) {
        case SP_POLICY_KIND_MODEL:
            hit = sp_policy_check_model(&ev, p, &why);
            action = hit ? p->action : SP_POLICY_PASS;
            break;
        case SP_POLICY_KIND_LIMITS:
            hit = sp_policy_check_limits(&ev, p, &why);
            action = hit ? p->action : SP_POLICY_PASS;
            break;
        case SP_POLICY_KIND_ATTRIBUTION:
            hit = sp_policy_check_attribution(&ev, p, &why);
            action = hit ? p->action : SP_POLICY_PASS;
            break;
        case SP_POLICY_KIND_PII:
            action = sp_policy_check_pii(&ev, p, &why);
            break;
        case SP_POLICY_KIND_PATTERN:
            action = sp_policy_check_pattern(&ev, i, &why);
            break;
        default:
            hit = sp_policy_check_window(&ev, p, &why);
            action = hit ? p->action : SP_POLICY_PASS;
            break;
        }

        if (action != SP_POLICY_PASS) {
            sp_policy_record(&ev, p, action, reason);
        }
    }

    sp_policy_merge(&ev);

    return SP_OK;
}


size_t
sp_policy_message(const sp_policy_decision_t *d, char *out, size_t outlen)
{
    int                       n;
    const sp_policy_match_t  *m;

    if (outlen == 0) {
        return 0;
    }

    if (d->blocked_by < 0 || (size_t) d->blocked_by >= d->nmatches) {
        out[0] = '\0';
        return 0;
    }

    m = &d->matches[d->blocked_by];
    n = snprintf(out, outlen, "blocked by policy \"%s\" (%s): %s", m->name,
                 m->policy_id, m->reason);

    if (n < 0) {
        out[0] = '\0';
        return 0;
    }

    return (size_t) n < outlen ? (size_t) n : outlen - 1;
}
