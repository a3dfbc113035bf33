/*
 * Routing rules: validation and compilation with jansson (once per admin
 * call or per snapshot), evaluation per request on the compiled rules
 * without an allocation or a system call.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sp_id.h"
#include "sp_provider.h"
#include "sp_conf.h"
#include "sp_route.h"
#include "sp_tz.h"


#define SP_ROUTE_NAME_MAX       (SP_FIELD_LEN - 1)   /* model names, names */
#define SP_ROUTE_ID_MAX         (SP_ID_LEN - 1)
#define SP_ROUTE_WEIGHT_MAX     1000000
#define SP_ROUTE_PCT_MAX        1000
#define SP_ROUTE_PPM_PER_PCT    10000
#define SP_ROUTE_TIMEOUT_MAX    600000
#define SP_ROUTE_FAILURES_MAX   100
#define SP_ROUTE_SECONDS_MAX    3600

/*
 * Lazy values asked once per evaluation: budgets and time zones are
 * numbered at compile time; past these many distinct ones a value is
 * asked again for each rule that needs it.
 */
#define SP_ROUTE_BUDGET_CACHE   16
#define SP_ROUTE_ZONE_CACHE     16

#define SP_ROUTE_NO_MEMORY      -2

#define SP_ROUTE_HASH_SEED      0x726f757465ULL    /* "route" */

/* conditions, a bit each */
#define SP_ROUTE_C_PROVIDER     0x001
#define SP_ROUTE_C_TOOLS        0x002
#define SP_ROUTE_C_IMAGES       0x004
#define SP_ROUTE_C_KEY          0x008
#define SP_ROUTE_C_AGENT        0x010
#define SP_ROUTE_C_DEPARTMENT   0x020
#define SP_ROUTE_C_PROJECT      0x040
#define SP_ROUTE_C_MODEL        0x080
#define SP_ROUTE_C_WINDOW       0x100
#define SP_ROUTE_C_TOKENS       0x200
#define SP_ROUTE_C_BUDGET       0x400

typedef enum {
    SP_ROUTE_REWRITE = 1,
    SP_ROUTE_PROVIDER,
    SP_ROUTE_SPLIT,
    SP_ROUTE_FALLBACK
} sp_route_action_e;


/* a string of the set's pool */
typedef struct {
    uint32_t  off;
    uint32_t  len;
} sp_route_ref_t;

typedef struct {
    sp_route_ref_t  model;
    uint32_t        weight;
    uint32_t        provider;       /* sp_provider_e */
} sp_route_ctarget_t;

typedef struct {
    sp_route_ref_t  from;           /* a model, or "*" */
    sp_route_ref_t  to;
} sp_route_map_t;

typedef struct {
    sp_tz_t        *tz;
    sp_route_ref_t  name;
} sp_route_zone_t;

/*
 * A compiled rule. The members every evaluation reads come first: a rule
 * that does not match usually costs one or two of its cache lines.
 */
typedef struct {
    uint32_t            conds;          /* SP_ROUTE_C_* */
    uint8_t             valid;
    uint8_t             provider;
    uint8_t             has_tools;
    uint8_t             has_images;
    uint8_t             model_glob;     /* else compared exactly */
    sp_tz_window_t      window;
    uint16_t            zone;
    uint16_t            budget;         /* distinct budget_id number */
    sp_route_ref_t      model;
    sp_route_ref_t      api_key_id;
    sp_route_ref_t      agent_id;
    sp_route_ref_t      department;
    sp_route_ref_t      project;
    sp_route_ref_t      budget_id;
    int64_t             tokens_min;
    int64_t             tokens_max;
    int64_t             ppm_gte;
    int64_t             ppm_lt;

    sp_route_ref_t      id;
    sp_route_ref_t      name;
    uint8_t             action;         /* sp_route_action_e */
    uint8_t             sticky;
    uint8_t             act_provider;
    sp_route_ref_t      act_model;      /* rewrite, provider */
    uint32_t            map_first;
    uint32_t            map_n;
    uint64_t            total_weight;
    uint32_t            ntargets;       /* split, fallback */
    uint32_t            nfallback;
    int                 max_attempts;   /* 0: as many as targets */
    int                 cooldown_failures;
    int64_t             attempt_timeout_ms;
    int64_t             cooldown_ms;
    sp_route_ctarget_t  targets[SP_ROUTE_MAX_TARGETS];
    sp_route_ctarget_t  fallback[SP_ROUTE_MAX_TARGETS];
} sp_route_rule_t;

struct sp_route_set_s {
    size_t            nrules;
    size_t            ninvalid;
    char             *strings;
    size_t            strings_len;
    size_t            strings_cap;
    sp_route_map_t   *maps;
    size_t            nmaps;
    size_t            maps_cap;
    sp_route_zone_t  *zones;
    size_t            nzones;
    size_t            zones_cap;
    sp_route_ref_t   *budgets;
    size_t            nbudgets;
    size_t            budgets_cap;
    char              first_error[SP_ROUTE_EXPLAIN_LEN / 2];
    sp_route_rule_t   rule[];
};


/* what one rule's validation writes to, and where it reports */
typedef struct {
    sp_route_set_t   *set;          /* NULL: validate only */
    sp_route_rule_t  *rule;
    char             *field;
    size_t            fieldlen;
    char             *err;
    size_t            errlen;
} sp_route_ctx_t;


/* ---- errors ----------------------------------------------------------- */

static int
sp_route_fail(sp_route_ctx_t *ctx, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sp_route_fail(sp_route_ctx_t *ctx, const char *field, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    (void) sp_conf_vfail(ctx->field, ctx->fieldlen, ctx->err, ctx->errlen,
                         field, fmt, args);
    va_end(args);

    return SP_ERROR;
}


/* a key as it can be quoted in a field path: printable, at most 64 */
static void
sp_route_key_print(const char *key, char *out, size_t outlen)
{
    size_t  i;

    for (i = 0; key[i] != '\0' && i < 64 && i + 1 < outlen; i++) {
        out[i] = (key[i] < 0x20 || key[i] > 0x7e || key[i] == '"'
                  || key[i] == '\\') ? '?' : key[i];
    }

    out[i] = '\0';
}


/*
 * Every member of obj is one of names (NULL-terminated): a typo must not
 * silently widen a rule.
 */
static int
sp_route_members(sp_route_ctx_t *ctx, json_t *obj, const char *prefix,
    const char *const *names, const char *expected)
{
    char                path[160], key[72];
    size_t              i;
    json_t             *v;
    const char         *k;

    json_object_foreach(obj, k, v) {
        for (i = 0; names[i] != NULL; i++) {
            if (strcmp(names[i], k) == 0) {
                break;
            }
        }

        if (names[i] == NULL) {
            sp_route_key_print(k, key, sizeof(key));
            snprintf(path, sizeof(path), "%s%s%s", prefix,
                     prefix[0] ? "." : "", key);
            return sp_route_fail(ctx, path, "unknown member \"%s\"; "
                                 "expected one of %s", key, expected);
        }
    }

    return SP_OK;
}


/* ---- the set's pools ------------------------------------------------ */

static int
sp_route_store(sp_route_ctx_t *ctx, const char *s, size_t len,
    sp_route_ref_t *ref)
{
    sp_route_set_t  *set;

    ref->off = 0;
    ref->len = (uint32_t) len;

    set = ctx->set;

    if (set == NULL || len == 0) {
        return SP_OK;
    }

    return sp_conf_store(&set->strings, &set->strings_len, &set->strings_cap,
                         s, len, &ref->off) == SP_OK ? SP_OK
                                                     : SP_ROUTE_NO_MEMORY;
}


static const char *
sp_route_text(const sp_route_set_t *set, sp_route_ref_t ref)
{
    return set->strings ? set->strings + ref.off : "";
}


static int
sp_route_ref_eq(const sp_route_set_t *set, sp_route_ref_t a, const char *s,
    size_t len)
{
    return a.len == len
           && (len == 0 || memcmp(set->strings + a.off, s, len) == 0);
}


/* grows a pool of n elements of size bytes to hold one more */
static int
sp_route_grow(void **pool, size_t *cap, size_t n, size_t size)
{
    return sp_conf_grow(pool, cap, n, size) == SP_OK ? SP_OK
                                                     : SP_ROUTE_NO_MEMORY;
}


/* ---- glob ------------------------------------------------------------ */

/*
 * A bracket set at g[0] == '['; returns its length through the closing
 * ']', or 0 when malformed (unclosed, empty, a range high to low).
 */
static size_t
sp_route_set_len(const char *g, size_t len)
{
    size_t  i, first;

    i = 1;

    if (i < len && g[i] == '!') {
        i++;
    }

    first = i;

    for ( ;; ) {
        if (i >= len) {
            return 0;
        }

        if (g[i] == ']') {
            return i > first ? i + 1 : 0;
        }

        if (g[i] == '[') {
            return 0;
        }

        if (i + 2 < len && g[i + 1] == '-' && g[i + 2] != ']') {
            if ((unsigned char) g[i] > (unsigned char) g[i + 2]) {
                return 0;
            }

            i += 3;
            continue;
        }

        i++;
    }
}


int
sp_route_glob_valid(const char *g, size_t len)
{
    size_t  i, n;

    if (len == 0) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (g[i] == ']') {
            return 0;
        }

        if (g[i] == '[') {
            n = sp_route_set_len(g + i, len - i);

            if (n == 0) {
                return 0;
            }

            i += n - 1;
        }
    }

    return 1;
}


/* c in the well-formed set g[0..n) */
static int
sp_route_set_match(const char *g, size_t n, unsigned char c)
{
    int     negate, in;
    size_t  i;

    i = 1;
    negate = (g[i] == '!');
    i += negate;
    in = 0;

    while (i < n - 1) {
        if (i + 2 < n - 1 && g[i + 1] == '-') {
            in |= (c >= (unsigned char) g[i] && c <= (unsigned char) g[i + 2]);
            i += 3;
            continue;
        }

        in |= (c == (unsigned char) g[i]);
        i++;
    }

    return in != negate;
}


/*
 * A well-formed glob: iterative, backtracking only to the last '*' (a
 * later star subsumes an earlier one), so O(glob * name) at worst.
 */
static int
sp_route_glob(const char *g, size_t glen, const char *s, size_t slen)
{
    size_t  gi, si, star, star_s, n;

    gi = 0;
    si = 0;
    star = (size_t) -1;
    star_s = 0;

    while (si < slen) {
        if (gi < glen) {
            switch (g[gi]) {

            case '*':
                star = gi++;
                star_s = si;
                continue;

            case '?':
                gi++;
                si++;
                continue;

            case '[':
                n = sp_route_set_len(g + gi, glen - gi);

                if (sp_route_set_match(g + gi, n, (unsigned char) s[si])) {
                    gi += n;
                    si++;
                    continue;
                }

                break;

            default:
                if (g[gi] == s[si]) {
                    gi++;
                    si++;
                    continue;
                }

                break;
            }
        }

        if (star == (size_t) -1) {
            return 0;
        }

        gi = star + 1;
        si = ++star_s;
    }

    while (gi < glen && g[gi] == '*') {
        gi++;
    }

    return gi == glen;
}


int
sp_route_glob_match(const char *glob, size_t glob_len, const char *name,
    size_t len)
{
    if (!sp_route_glob_valid(glob, glob_len)) {
        return 0;
    }

    return sp_route_glob(glob, glob_len, name, len);
}


/* ---- validation, writing the compiled rule --------------------------- */

/* printable text of min..max bytes (no control character: headers) */
static int
sp_route_string(sp_route_ctx_t *ctx, json_t *v, const char *path,
    size_t min, size_t max, const char *what, sp_route_ref_t *ref)
{
    size_t       i, len;
    const char  *s;

    if (!json_is_string(v)) {
        return sp_route_fail(ctx, path, "expected %s of %zu to %zu bytes, "
                             "not %s", what, min, max, sp_conf_kind(v));
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len < min || len > max) {
        return sp_route_fail(ctx, path, "expected %s of %zu to %zu bytes, "
                             "not %zu", what, min, max, len);
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            return sp_route_fail(ctx, path, "expected %s without control "
                                 "characters", what);
        }
    }

    return sp_route_store(ctx, s, len, ref);
}


static int
sp_route_model(sp_route_ctx_t *ctx, json_t *v, const char *path,
    sp_route_ref_t *ref)
{
    return sp_route_string(ctx, v, path, 1, SP_ROUTE_NAME_MAX,
                           "a model name", ref);
}


static int
sp_route_provider(sp_route_ctx_t *ctx, json_t *v, const char *path,
    uint32_t *provider)
{
    const sp_provider_t  *p;

    p = json_is_string(v) ? sp_provider_find(json_string_value(v),
                                             json_string_length(v))
                          : NULL;

    if (p == NULL) {
        return sp_route_fail(ctx, path, "expected a provider, one of "
                             SP_PROVIDER_NAMES_TEXT);
    }

    *provider = (uint32_t) p->provider;

    return SP_OK;
}


static int
sp_route_int(sp_route_ctx_t *ctx, json_t *v, const char *path, int64_t min,
    int64_t max, int64_t *out)
{
    if (!json_is_integer(v)) {
        return sp_route_fail(ctx, path, "expected an integer from %lld to "
                             "%lld, not %s", (long long) min,
                             (long long) max, sp_conf_kind(v));
    }

    *out = json_integer_value(v);

    if (*out < min || *out > max) {
        return sp_route_fail(ctx, path, "expected an integer from %lld to "
                             "%lld, not %lld", (long long) min,
                             (long long) max, (long long) *out);
    }

    return SP_OK;
}


static int
sp_route_bool(sp_route_ctx_t *ctx, json_t *v, const char *path,
    uint8_t *out)
{
    if (!json_is_boolean(v)) {
        return sp_route_fail(ctx, path, "expected true or false, not %s",
                             sp_conf_kind(v));
    }

    *out = json_is_true(v);

    return SP_OK;
}


static int
sp_route_id(sp_route_ctx_t *ctx, json_t *v, const char *path, unsigned kind,
    sp_route_ref_t *ref)
{
    char  expected[96];

    if (!json_is_string(v)
        || !sp_id_valid(kind, json_string_value(v), json_string_length(v)))
    {
        sp_id_expected(kind, expected, sizeof(expected));
        return sp_route_fail(ctx, path, "expected %s", expected);
    }

    return sp_route_store(ctx, json_string_value(v), json_string_length(v),
                          ref);
}


/* {"provider", "model"} and, in a split, "weight" */
static int
sp_route_target(sp_route_ctx_t *ctx, json_t *v, const char *path,
    int weighted, sp_route_ctarget_t *t)
{
    int         rc;
    char        sub[176];           /* path is at most 159 bytes */
    int64_t     weight;
    json_t     *m;

    static const char *const  plain[] = { "provider", "model", NULL };
    static const char *const  split[] = { "provider", "model", "weight",
                                          NULL };

    if (!json_is_object(v)) {
        return sp_route_fail(ctx, path, "expected a target object "
                             "{\"provider\", \"model\"%s}, not %s",
                             weighted ? ", \"weight\"" : "",
                             sp_conf_kind(v));
    }

    rc = weighted ? sp_route_members(ctx, v, path, split,
                                     "provider, model, weight")
                  : sp_route_members(ctx, v, path, plain,
                                     "provider, model");
    if (rc != SP_OK) {
        return rc;
    }

    snprintf(sub, sizeof(sub), "%s.provider", path);
    m = json_object_get(v, "provider");

    if (m == NULL) {
        return sp_route_fail(ctx, sub, "expected a provider, one of "
                             SP_PROVIDER_NAMES_TEXT);
    }

    rc = sp_route_provider(ctx, m, sub, &t->provider);
    if (rc != SP_OK) {
        return rc;
    }

    snprintf(sub, sizeof(sub), "%s.model", path);
    m = json_object_get(v, "model");

    if (m == NULL) {
        return sp_route_fail(ctx, sub, "expected a model name of 1 to %d "
                             "bytes", SP_ROUTE_NAME_MAX);
    }

    rc = sp_route_model(ctx, m, sub, &t->model);
    if (rc != SP_OK) {
        return rc;
    }

    t->weight = 0;

    if (!weighted) {
        return SP_OK;
    }

    /* a weight left out is 1: equal shares */
    weight = 1;
    m = json_object_get(v, "weight");

    if (m != NULL) {
        snprintf(sub, sizeof(sub), "%s.weight", path);

        rc = sp_route_int(ctx, m, sub, 0, SP_ROUTE_WEIGHT_MAX, &weight);
        if (rc != SP_OK) {
            return rc;
        }
    }

    t->weight = (uint32_t) weight;

    return SP_OK;
}


/* a list of targets at path: min..max of them */
static int
sp_route_targets(sp_route_ctx_t *ctx, json_t *v, const char *path,
    size_t min, size_t max, int weighted, sp_route_ctarget_t *out,
    uint32_t *n)
{
    int      rc;
    char     sub[160];
    size_t   i;
    json_t  *t;

    if (!json_is_array(v) || json_array_size(v) < min
        || json_array_size(v) > max)
    {
        return sp_route_fail(ctx, path, "expected an array of %zu to %zu "
                             "targets", min, max);
    }

    json_array_foreach(v, i, t) {
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);

        rc = sp_route_target(ctx, t, sub, weighted, &out[i]);
        if (rc != SP_OK) {
            return rc;
        }
    }

    *n = (uint32_t) json_array_size(v);

    return SP_OK;
}


static int
sp_route_zone(sp_route_ctx_t *ctx, const char *name, size_t len,
    const char *path)
{
    int               rc;
    char              reason[128];
    size_t            i;
    sp_tz_t          *tz;
    sp_route_set_t   *set;
    sp_route_zone_t  *z;

    set = ctx->set;

    /* a zone several rules name is loaded once */
    for (i = 0; set != NULL && i < set->nzones; i++) {
        if (sp_route_ref_eq(set, set->zones[i].name, name, len)) {
            ctx->rule->zone = (uint16_t) i;
            return SP_OK;
        }
    }

    tz = sp_tz_load(NULL, name, len, reason, sizeof(reason));

    if (tz == NULL) {
        return sp_route_fail(ctx, path, "expected an IANA time zone such as "
                             "Europe/Paris (%s)", reason);
    }

    if (set == NULL) {
        sp_tz_free(tz);
        return SP_OK;
    }

    if (set->nzones >= UINT16_MAX
        || sp_route_grow((void **) &set->zones, &set->zones_cap, set->nzones,
                         sizeof(sp_route_zone_t)) != SP_OK)
    {
        sp_tz_free(tz);
        return SP_ROUTE_NO_MEMORY;
    }

    z = &set->zones[set->nzones];
    z->tz = tz;

    rc = sp_route_store(ctx, name, len, &z->name);
    if (rc != SP_OK) {
        sp_tz_free(tz);
        return rc;
    }

    ctx->rule->zone = (uint16_t) set->nzones++;

    return SP_OK;
}


/* the window's form and checks are sp_tz's, shared with policies */
static int
sp_route_window(sp_route_ctx_t *ctx, json_t *w)
{
    int          rc;
    char         member[96], reason[160], path[160];
    size_t       zone_len;
    const char  *zone;

    rc = sp_tz_window_parse(w, &ctx->rule->window, &zone, &zone_len,
                            member, sizeof(member), reason, sizeof(reason));

    if (rc != SP_OK) {
        snprintf(path, sizeof(path), "conditions.time_window%s%s",
                 member[0] ? "." : "", member);
        return sp_route_fail(ctx, path, "%s", reason);
    }

    rc = sp_route_zone(ctx, zone, zone_len,
                       "conditions.time_window.timezone");
    if (rc != SP_OK) {
        return rc;
    }

    ctx->rule->conds |= SP_ROUTE_C_WINDOW;

    return SP_OK;
}


/* a percentage 0..1000, fractions allowed, as parts per million */
static int
sp_route_pct(sp_route_ctx_t *ctx, json_t *v, const char *path, int64_t *ppm)
{
    double  pct;

    if (!json_is_number(v)) {
        return sp_route_fail(ctx, path, "expected a percentage from 0 to "
                             "%d, not %s", SP_ROUTE_PCT_MAX,
                             sp_conf_kind(v));
    }

    pct = json_number_value(v);

    if (!(pct >= 0 && pct <= SP_ROUTE_PCT_MAX)) {
        return sp_route_fail(ctx, path, "expected a percentage from 0 to "
                             "%d", SP_ROUTE_PCT_MAX);
    }

    /* a threshold, not money: 80 is exactly 800000, 82.5 825000 */
    *ppm = (int64_t) llround(pct * SP_ROUTE_PPM_PER_PCT);

    return SP_OK;
}


static int
sp_route_budget(sp_route_ctx_t *ctx, json_t *b)
{
    int               rc;
    size_t            i;
    json_t           *v;
    sp_route_set_t   *set;
    sp_route_rule_t  *r;

    static const char *const  members[] = { "gte", "lt", "budget_id", NULL };

    r = ctx->rule;

    if (!json_is_object(b)) {
        return sp_route_fail(ctx, "conditions.budget_used_pct", "expected "
                             "an object {\"gte\", \"lt\", \"budget_id\"}, "
                             "not %s", sp_conf_kind(b));
    }

    rc = sp_route_members(ctx, b, "conditions.budget_used_pct", members,
                          "gte, lt, budget_id");
    if (rc != SP_OK) {
        return rc;
    }

    r->ppm_gte = 0;
    r->ppm_lt = INT64_MAX;

    v = json_object_get(b, "gte");

    if (v != NULL) {
        rc = sp_route_pct(ctx, v, "conditions.budget_used_pct.gte",
                          &r->ppm_gte);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(b, "lt");

    if (v != NULL) {
        rc = sp_route_pct(ctx, v, "conditions.budget_used_pct.lt",
                          &r->ppm_lt);
        if (rc != SP_OK) {
            return rc;
        }

        if (r->ppm_lt <= r->ppm_gte) {
            return sp_route_fail(ctx, "conditions.budget_used_pct.lt",
                                 "expected a percentage above gte");
        }
    }

    v = json_object_get(b, "budget_id");

    if (v != NULL) {
        rc = sp_route_id(ctx, v, "conditions.budget_used_pct.budget_id",
                         SP_ID_BUDGET, &r->budget_id);
        if (rc != SP_OK) {
            return rc;
        }
    }

    r->conds |= SP_ROUTE_C_BUDGET;
    set = ctx->set;

    if (set == NULL) {
        return SP_OK;
    }

    /* numbered among the set's distinct budget ids ("" too): one ask */
    for (i = 0; i < set->nbudgets; i++) {
        if (sp_route_ref_eq(set, set->budgets[i], sp_route_text(set,
                            r->budget_id), r->budget_id.len))
        {
            break;
        }
    }

    if (i == set->nbudgets) {
        if (sp_route_grow((void **) &set->budgets, &set->budgets_cap,
                          set->nbudgets, sizeof(sp_route_ref_t))
            != SP_OK)
        {
            return SP_ROUTE_NO_MEMORY;
        }

        set->budgets[set->nbudgets++] = r->budget_id;
    }

    r->budget = (uint16_t) (i < UINT16_MAX ? i : UINT16_MAX);

    return SP_OK;
}


static int
sp_route_tokens(sp_route_ctx_t *ctx, json_t *t)
{
    int               rc;
    json_t           *v;
    sp_route_rule_t  *r;

    static const char *const  members[] = { "min", "max", NULL };

    r = ctx->rule;

    if (!json_is_object(t)) {
        return sp_route_fail(ctx, "conditions.prompt_tokens", "expected an "
                             "object {\"min\", \"max\"}, not %s",
                             sp_conf_kind(t));
    }

    rc = sp_route_members(ctx, t, "conditions.prompt_tokens", members,
                          "min, max");
    if (rc != SP_OK) {
        return rc;
    }

    r->tokens_min = 0;
    r->tokens_max = INT64_MAX;

    v = json_object_get(t, "min");

    if (v != NULL) {
        rc = sp_route_int(ctx, v, "conditions.prompt_tokens.min", 0,
                          INT64_MAX, &r->tokens_min);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(t, "max");

    if (v != NULL) {
        rc = sp_route_int(ctx, v, "conditions.prompt_tokens.max", 0,
                          INT64_MAX, &r->tokens_max);
        if (rc != SP_OK) {
            return rc;
        }

        if (r->tokens_max < r->tokens_min) {
            return sp_route_fail(ctx, "conditions.prompt_tokens.min",
                                 "expected min at most max (%lld)",
                                 (long long) r->tokens_max);
        }
    }

    r->conds |= SP_ROUTE_C_TOKENS;

    return SP_OK;
}


static int
sp_route_conditions(sp_route_ctx_t *ctx, json_t *c)
{
    int               rc;
    json_t           *v;
    uint32_t          provider;
    const char       *glob;
    sp_route_rule_t  *r;

    static const char *const  members[] = {
        "model", "provider", "api_key_id", "agent_id", "department",
        "project", "prompt_tokens", "time_window", "budget_used_pct",
        "has_tools", "has_images", NULL
    };

    r = ctx->rule;

    if (!json_is_object(c)) {
        return sp_route_fail(ctx, "conditions", "expected an object, not %s",
                             sp_conf_kind(c));
    }

    rc = sp_route_members(ctx, c, "conditions", members,
                          "model, provider, api_key_id, agent_id, "
                          "department, project, prompt_tokens, time_window, "
                          "budget_used_pct, has_tools, has_images");
    if (rc != SP_OK) {
        return rc;
    }

    v = json_object_get(c, "model");

    if (v != NULL) {
        rc = sp_route_model(ctx, v, "conditions.model", &r->model);
        if (rc != SP_OK) {
            return rc;
        }

        glob = json_string_value(v);

        if (!sp_route_glob_valid(glob, json_string_length(v))) {
            return sp_route_fail(ctx, "conditions.model", "expected a model "
                                 "name or a glob (* ? [a-z] [!x]) with "
                                 "balanced, non-empty brackets");
        }

        r->model_glob = (strpbrk(glob, "*?[") != NULL);
        r->conds |= SP_ROUTE_C_MODEL;
    }

    v = json_object_get(c, "provider");

    if (v != NULL) {
        rc = sp_route_provider(ctx, v, "conditions.provider", &provider);
        if (rc != SP_OK) {
            return rc;
        }

        r->provider = (uint8_t) provider;
        r->conds |= SP_ROUTE_C_PROVIDER;
    }

    v = json_object_get(c, "api_key_id");

    if (v != NULL) {
        rc = sp_route_id(ctx, v, "conditions.api_key_id", SP_ID_KEY,
                         &r->api_key_id);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_KEY;
    }

    v = json_object_get(c, "agent_id");

    if (v != NULL) {
        rc = sp_route_string(ctx, v, "conditions.agent_id", 1,
                             SP_ROUTE_ID_MAX, "an agent id", &r->agent_id);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_AGENT;
    }

    v = json_object_get(c, "department");

    if (v != NULL) {
        rc = sp_route_string(ctx, v, "conditions.department", 1,
                             SP_ROUTE_NAME_MAX, "a department",
                             &r->department);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_DEPARTMENT;
    }

    v = json_object_get(c, "project");

    if (v != NULL) {
        rc = sp_route_string(ctx, v, "conditions.project", 1,
                             SP_ROUTE_NAME_MAX, "a project", &r->project);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_PROJECT;
    }

    v = json_object_get(c, "prompt_tokens");

    if (v != NULL) {
        rc = sp_route_tokens(ctx, v);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(c, "time_window");

    if (v != NULL) {
        rc = sp_route_window(ctx, v);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(c, "budget_used_pct");

    if (v != NULL) {
        rc = sp_route_budget(ctx, v);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(c, "has_tools");

    if (v != NULL) {
        rc = sp_route_bool(ctx, v, "conditions.has_tools", &r->has_tools);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_TOOLS;
    }

    v = json_object_get(c, "has_images");

    if (v != NULL) {
        rc = sp_route_bool(ctx, v, "conditions.has_images", &r->has_images);
        if (rc != SP_OK) {
            return rc;
        }

        r->conds |= SP_ROUTE_C_IMAGES;
    }

    return SP_OK;
}


static int
sp_route_model_map(sp_route_ctx_t *ctx, json_t *m)
{
    int              rc;
    char             path[160], key[72];
    json_t          *v, *k;
    const char      *from;
    sp_route_map_t   map;
    sp_route_set_t  *set;

    if (!json_is_object(m) || json_object_size(m) == 0) {
        return sp_route_fail(ctx, "action.model_map", "expected an object "
                             "of one or more requested models (or \"*\") "
                             "to target models");
    }

    set = ctx->set;
    ctx->rule->map_first = set ? (uint32_t) set->nmaps : 0;
    ctx->rule->map_n = (uint32_t) json_object_size(m);

    json_object_foreach(m, from, v) {
        sp_route_key_print(from, key, sizeof(key));
        snprintf(path, sizeof(path), "action.model_map.%s", key);

        /* the key as a model name, checked as any other */
        k = json_string(from);
        if (k == NULL) {
            return SP_ROUTE_NO_MEMORY;
        }

        rc = sp_route_model(ctx, k, path, &map.from);
        json_decref(k);

        if (rc != SP_OK) {
            return rc;
        }

        rc = sp_route_model(ctx, v, path, &map.to);
        if (rc != SP_OK) {
            return rc;
        }

        if (set == NULL) {
            continue;
        }

        if (sp_route_grow((void **) &set->maps, &set->maps_cap, set->nmaps,
                          sizeof(sp_route_map_t))
            != SP_OK)
        {
            return SP_ROUTE_NO_MEMORY;
        }

        set->maps[set->nmaps++] = map;
    }

    return SP_OK;
}


static int
sp_route_action(sp_route_ctx_t *ctx, json_t *a)
{
    int               rc;
    json_t           *v, *type;
    uint32_t          i;
    const char       *t;
    sp_route_rule_t  *r;

    static const char *const  rewrite[] = { "type", "model", NULL };
    static const char *const  provider[] = { "type", "provider", "model",
                                             "model_map", NULL };
    static const char *const  split[] = { "type", "targets", "sticky",
                                          NULL };
    static const char *const  fallback[] = { "type", "targets", NULL };

    r = ctx->rule;

    if (!json_is_object(a)) {
        return sp_route_fail(ctx, "action", "expected an object with a "
                             "\"type\": rewrite, provider, split or "
                             "fallback");
    }

    type = json_object_get(a, "type");
    t = json_is_string(type) ? json_string_value(type) : "";

    if (strcmp(t, "rewrite") == 0) {
        rc = sp_route_members(ctx, a, "action", rewrite,
                              "type, model (a rewrite)");
        if (rc != SP_OK) {
            return rc;
        }

        r->action = SP_ROUTE_REWRITE;
        v = json_object_get(a, "model");

        if (v == NULL) {
            return sp_route_fail(ctx, "action.model", "expected the model "
                                 "to rewrite to");
        }

        return sp_route_model(ctx, v, "action.model", &r->act_model);
    }

    if (strcmp(t, "provider") == 0) {
        rc = sp_route_members(ctx, a, "action", provider,
                              "type, provider, model, model_map "
                              "(a provider action)");
        if (rc != SP_OK) {
            return rc;
        }

        r->action = SP_ROUTE_PROVIDER;
        v = json_object_get(a, "provider");

        if (v == NULL) {
            return sp_route_fail(ctx, "action.provider", "expected a "
                                 "provider, one of "
                                 SP_PROVIDER_NAMES_TEXT);
        }

        rc = sp_route_provider(ctx, v, "action.provider", &i);
        if (rc != SP_OK) {
            return rc;
        }

        r->act_provider = (uint8_t) i;

        v = json_object_get(a, "model");

        if (v != NULL && json_object_get(a, "model_map") != NULL) {
            return sp_route_fail(ctx, "action.model_map", "expected either "
                                 "model or model_map, not both");
        }

        if (v != NULL) {
            return sp_route_model(ctx, v, "action.model", &r->act_model);
        }

        v = json_object_get(a, "model_map");

        if (v == NULL) {
            return sp_route_fail(ctx, "action.model", "expected a model, or "
                                 "a model_map from requested models to "
                                 "this provider's");
        }

        return sp_route_model_map(ctx, v);
    }

    if (strcmp(t, "split") == 0) {
        rc = sp_route_members(ctx, a, "action", split,
                              "type, targets, sticky (a split)");
        if (rc != SP_OK) {
            return rc;
        }

        r->action = SP_ROUTE_SPLIT;

        v = json_object_get(a, "targets");

        if (v == NULL) {
            return sp_route_fail(ctx, "action.targets", "expected an array "
                                 "of 1 to %d targets", SP_ROUTE_MAX_TARGETS);
        }

        rc = sp_route_targets(ctx, v, "action.targets", 1,
                              SP_ROUTE_MAX_TARGETS, 1, r->targets,
                              &r->ntargets);
        if (rc != SP_OK) {
            return rc;
        }

        r->total_weight = 0;

        for (i = 0; i < r->ntargets; i++) {
            r->total_weight += r->targets[i].weight;
        }

        if (r->total_weight == 0) {
            return sp_route_fail(ctx, "action.targets", "expected weights "
                                 "that sum to more than zero");
        }

        v = json_object_get(a, "sticky");

        return v ? sp_route_bool(ctx, v, "action.sticky", &r->sticky)
                 : SP_OK;
    }

    if (strcmp(t, "fallback") == 0) {
        rc = sp_route_members(ctx, a, "action", fallback,
                              "type, targets (a fallback)");
        if (rc != SP_OK) {
            return rc;
        }

        r->action = SP_ROUTE_FALLBACK;
        v = json_object_get(a, "targets");

        if (v == NULL) {
            return sp_route_fail(ctx, "action.targets", "expected an array "
                                 "of 1 to %d targets",
                                 SP_ROUTE_MAX_TARGETS - 1);
        }

        /* the request as sent is tried first: it takes one place */
        return sp_route_targets(ctx, v, "action.targets", 1,
                                SP_ROUTE_MAX_TARGETS - 1, 0, r->targets,
                                &r->ntargets);
    }

    return sp_route_fail(ctx, "action.type", "expected one of rewrite, "
                         "provider, split, fallback");
}


/* one rule object into ctx->rule; SP_ERROR names the member */
static int
sp_route_rule(sp_route_ctx_t *ctx, json_t *rule)
{
    int               rc, disabled;
    size_t            chain;
    json_t           *v, *c;
    int64_t           n;
    sp_route_rule_t  *r;

    static const char *const  members[] = {
        "id", "name", "priority", "enabled", "conditions", "action",
        "fallback", "max_attempts", "attempt_timeout_ms", "cooldown",
        "created_at", "updated_at", NULL
    };
    static const char *const  cooldown[] = { "failures", "seconds", NULL };

    r = ctx->rule;
    memset(r, 0, sizeof(sp_route_rule_t));
    r->cooldown_failures = SP_ROUTE_DEFAULT_COOLDOWN_FAILURES;
    r->cooldown_ms = (int64_t) SP_ROUTE_DEFAULT_COOLDOWN_SECONDS * 1000;

    if (!json_is_object(rule)) {
        return sp_route_fail(ctx, "", "expected a rule object, not %s",
                             sp_conf_kind(rule));
    }

    rc = sp_route_members(ctx, rule, "", members,
                          "id, name, priority, enabled, conditions, action, "
                          "fallback, max_attempts, attempt_timeout_ms, "
                          "cooldown");
    if (rc != SP_OK) {
        return rc;
    }

    /* the id is controld's; kept for explanations, not checked */
    v = json_object_get(rule, "id");

    if (json_is_string(v)) {
        rc = sp_route_store(ctx, json_string_value(v),
                            json_string_length(v) > SP_ROUTE_ID_MAX
                            ? SP_ROUTE_ID_MAX : json_string_length(v),
                            &r->id);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(rule, "name");

    if (v != NULL) {
        rc = sp_route_string(ctx, v, "name", 0, SP_ROUTE_NAME_MAX, "a name",
                             &r->name);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(rule, "priority");

    if (v != NULL && !json_is_integer(v)) {
        return sp_route_fail(ctx, "priority", "expected an integer, not %s",
                             sp_conf_kind(v));
    }

    v = json_object_get(rule, "enabled");

    if (v != NULL && !json_is_boolean(v)) {
        return sp_route_fail(ctx, "enabled", "expected true or false, not "
                             "%s", sp_conf_kind(v));
    }

    /* controld publishes enabled rules only; a disabled one never matches */
    disabled = json_is_false(v);

    c = json_object_get(rule, "conditions");

    if (c != NULL) {
        rc = sp_route_conditions(ctx, c);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(rule, "action");

    if (v == NULL) {
        return sp_route_fail(ctx, "action", "expected an object with a "
                             "\"type\": rewrite, provider, split or "
                             "fallback");
    }

    rc = sp_route_action(ctx, v);
    if (rc != SP_OK) {
        return rc;
    }

    /* the chain: what the action sends to, then the fallbacks */
    chain = r->action == SP_ROUTE_FALLBACK ? 1 + r->ntargets : 1;

    v = json_object_get(rule, "fallback");

    if (v != NULL) {
        if (!json_is_array(v)
            || json_array_size(v) > SP_ROUTE_MAX_TARGETS - chain)
        {
            return sp_route_fail(ctx, "fallback", "expected an array of at "
                                 "most %zu targets (%d in all with the "
                                 "action's)", SP_ROUTE_MAX_TARGETS - chain,
                                 SP_ROUTE_MAX_TARGETS);
        }

        rc = sp_route_targets(ctx, v, "fallback", 0,
                              SP_ROUTE_MAX_TARGETS - chain, 0, r->fallback,
                              &r->nfallback);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(rule, "max_attempts");

    if (v != NULL) {
        rc = sp_route_int(ctx, v, "max_attempts", 1, SP_ROUTE_MAX_TARGETS,
                          &n);
        if (rc != SP_OK) {
            return rc;
        }

        r->max_attempts = (int) n;
    }

    v = json_object_get(rule, "attempt_timeout_ms");

    if (v != NULL) {
        rc = sp_route_int(ctx, v, "attempt_timeout_ms", 0,
                          SP_ROUTE_TIMEOUT_MAX, &r->attempt_timeout_ms);
        if (rc != SP_OK) {
            return rc;
        }
    }

    v = json_object_get(rule, "cooldown");

    if (v != NULL) {
        if (!json_is_object(v)) {
            return sp_route_fail(ctx, "cooldown", "expected an object "
                                 "{\"failures\", \"seconds\"}, not %s",
                                 sp_conf_kind(v));
        }

        rc = sp_route_members(ctx, v, "cooldown", cooldown,
                              "failures, seconds");
        if (rc != SP_OK) {
            return rc;
        }

        c = json_object_get(v, "failures");

        if (c != NULL) {
            rc = sp_route_int(ctx, c, "cooldown.failures", 1,
                              SP_ROUTE_FAILURES_MAX, &n);
            if (rc != SP_OK) {
                return rc;
            }

            r->cooldown_failures = (int) n;
        }

        c = json_object_get(v, "seconds");

        if (c != NULL) {
            rc = sp_route_int(ctx, c, "cooldown.seconds", 1,
                              SP_ROUTE_SECONDS_MAX, &n);
            if (rc != SP_OK) {
                return rc;
            }

            r->cooldown_ms = n * 1000;
        }
    }

    r->valid = !disabled;

    return SP_OK;
}


int
sp_route_validate(const char *json, size_t len, char *field,
    size_t fieldlen, char *err, size_t errlen)
{
    int               rc;
    json_t           *root;
    json_error_t      jerr;
    sp_route_ctx_t    ctx;
    sp_route_rule_t   rule;

    ctx.set = NULL;
    ctx.rule = &rule;
    ctx.field = field;
    ctx.fieldlen = fieldlen;
    ctx.err = err;
    ctx.errlen = errlen;

    if (field != NULL && fieldlen > 0) {
        field[0] = '\0';
    }

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        return sp_route_fail(&ctx, "", "expected a JSON rule object: %s at "
                             "line %d column %d", jerr.text, jerr.line,
                             jerr.column);
    }

    rc = sp_route_rule(&ctx, root);
    json_decref(root);

    if (rc == SP_ROUTE_NO_MEMORY) {
        return sp_route_fail(&ctx, "", "out of memory");
    }

    return rc;
}


/* ---- the compiled set ------------------------------------------------ */

void
sp_route_free(sp_route_set_t *set)
{
    size_t  i;

    if (set == NULL) {
        return;
    }

    for (i = 0; i < set->nzones; i++) {
        sp_tz_free(set->zones[i].tz);
    }

    free(set->zones);
    free(set->maps);
    free(set->budgets);
    free(set->strings);
    free(set);
}


sp_route_set_t *
sp_route_compile(const char *json, size_t len, char *err, size_t errlen)
{
    int               rc;
    char              field[160], reason[256];
    size_t            i, n;
    json_t           *root, *v;
    json_error_t      jerr;
    sp_route_ctx_t    ctx;
    sp_route_set_t   *set;

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        sp_errorf(err, errlen, "routing rules are not JSON: %s at line %d "
                  "column %d", jerr.text, jerr.line, jerr.column);
        return NULL;
    }

    if (!json_is_array(root)) {
        json_decref(root);
        sp_errorf(err, errlen, "routing rules are not a JSON array");
        return NULL;
    }

    n = json_array_size(root);

    set = calloc(1, sizeof(sp_route_set_t) + n * sizeof(sp_route_rule_t));
    if (set == NULL) {
        json_decref(root);
        sp_errorf(err, errlen, "out of memory compiling %zu routing rules",
                  n);
        return NULL;
    }

    set->nrules = n;

    ctx.set = set;
    ctx.field = field;
    ctx.fieldlen = sizeof(field);
    ctx.err = reason;
    ctx.errlen = sizeof(reason);

    json_array_foreach(root, i, v) {
        ctx.rule = &set->rule[i];

        rc = sp_route_rule(&ctx, v);

        if (rc == SP_ROUTE_NO_MEMORY) {
            json_decref(root);
            sp_route_free(set);
            sp_errorf(err, errlen, "out of memory compiling %zu routing "
                      "rules", n);
            return NULL;
        }

        if (rc != SP_OK) {
            /* kept in its place, never matching */
            set->rule[i].valid = 0;

            if (set->ninvalid++ == 0) {
                snprintf(set->first_error, sizeof(set->first_error),
                         "rule %zu%s%.*s: %s%s%s", i + 1,
                         set->rule[i].id.len ? " " : "",
                         (int) set->rule[i].id.len,
                         sp_route_text(set, set->rule[i].id), field,
                         field[0] ? ": " : "", reason);
            }
        }
    }

    json_decref(root);

    return set;
}


size_t
sp_route_count(const sp_route_set_t *set)
{
    return set ? set->nrules : 0;
}


size_t
sp_route_invalid(const sp_route_set_t *set, char *err, size_t errlen)
{
    if (set == NULL || set->ninvalid == 0) {
        sp_errorf(err, errlen, "%s", "");
        return 0;
    }

    sp_errorf(err, errlen, "%s", set->first_error);

    return set->ninvalid;
}


/* ---- evaluation ------------------------------------------------------ */

/* a bounded text: appends what fits, always NUL-terminated */
typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} sp_route_text_t;


static void
sp_route_add(sp_route_text_t *t, const char *s, size_t n)
{
    if (t->len + 1 >= t->cap) {
        return;
    }

    if (n > t->cap - 1 - t->len) {
        n = t->cap - 1 - t->len;
    }

    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}


static void
sp_route_adds(sp_route_text_t *t, const char *s)
{
    sp_route_add(t, s, strlen(s));
}


static void
sp_route_addf(sp_route_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sp_route_addf(sp_route_text_t *t, const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (t->len + 1 >= t->cap) {
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, args);
    va_end(args);

    if (n > 0) {
        t->len += (size_t) n < t->cap - t->len ? (size_t) n
                                               : t->cap - t->len - 1;
    }
}


/* parts per million of a percent as "82.5%" */
static void
sp_route_add_pct(sp_route_text_t *t, int64_t ppm)
{
    int      digits;
    int64_t  frac;

    frac = ppm % SP_ROUTE_PPM_PER_PCT;
    digits = 4;

    while (frac != 0 && frac % 10 == 0) {
        frac /= 10;
        digits--;
    }

    if (frac == 0) {
        sp_route_addf(t, "%lld%%", (long long) (ppm / SP_ROUTE_PPM_PER_PCT));

    } else {
        sp_route_addf(t, "%lld.%0*lld%%",
                      (long long) (ppm / SP_ROUTE_PPM_PER_PCT), digits,
                      (long long) frac);
    }
}


static void
sp_route_add_rule(sp_route_text_t *t, const sp_route_set_t *set,
    const sp_route_rule_t *r)
{
    sp_route_adds(t, "rule ");

    if (r->id.len) {
        sp_route_add(t, sp_route_text(set, r->id), r->id.len);

    } else {
        sp_route_addf(t, "#%zu", (size_t) (r - set->rule) + 1);
    }
}


/* what one evaluation has asked already */
typedef struct {
    const sp_route_set_t      *set;
    const sp_route_request_t  *req;
    int64_t                    tokens;
    int                        tokens_known;
    uint32_t                   budgets_known;
    uint32_t                   zones_known;
    int64_t                    ppm[SP_ROUTE_BUDGET_CACHE];
    int16_t                    minute[SP_ROUTE_ZONE_CACHE];
    int8_t                     weekday[SP_ROUTE_ZONE_CACHE];
} sp_route_eval_t;


static int64_t
sp_route_eval_tokens(sp_route_eval_t *ev)
{
    if (!ev->tokens_known) {
        ev->tokens = ev->req->prompt_tokens
                     ? ev->req->prompt_tokens(ev->req->data) : -1;
        ev->tokens_known = 1;
    }

    return ev->tokens;
}


static int64_t
sp_route_eval_ppm(sp_route_eval_t *ev, const sp_route_rule_t *r)
{
    int64_t   ppm;
    sp_str_t  id;

    if (r->budget < SP_ROUTE_BUDGET_CACHE
        && (ev->budgets_known & (1u << r->budget)))
    {
        return ev->ppm[r->budget];
    }

    if (ev->req->budget_used_ppm == NULL) {
        ppm = -1;

    } else {
        id.data = sp_route_text(ev->set, r->budget_id);
        id.len = r->budget_id.len;
        ppm = ev->req->budget_used_ppm(ev->req->data, id);
    }

    if (r->budget < SP_ROUTE_BUDGET_CACHE) {
        ev->ppm[r->budget] = ppm;
        ev->budgets_known |= 1u << r->budget;
    }

    return ppm;
}


static void
sp_route_eval_local(sp_route_eval_t *ev, const sp_route_rule_t *r,
    int *weekday, int *minute)
{
    if (r->zone < SP_ROUTE_ZONE_CACHE && (ev->zones_known & (1u << r->zone)))
    {
        *weekday = ev->weekday[r->zone];
        *minute = ev->minute[r->zone];
        return;
    }

    sp_tz_local(ev->set->zones[r->zone].tz, ev->req->now_ms, weekday,
                minute);

    if (r->zone < SP_ROUTE_ZONE_CACHE) {
        ev->weekday[r->zone] = (int8_t) *weekday;
        ev->minute[r->zone] = (int16_t) *minute;
        ev->zones_known |= 1u << r->zone;
    }
}


static int
sp_route_str_eq(const sp_route_set_t *set, sp_route_ref_t ref, sp_str_t s)
{
    return ref.len == s.len
           && (s.len == 0
               || memcmp(set->strings + ref.off, s.data, s.len) == 0);
}


/* all of the rule's conditions hold; cheap ones first, lazy ones last */
static int
sp_route_matches(sp_route_eval_t *ev, const sp_route_rule_t *r)
{
    int                        weekday, minute;
    int64_t                    v;
    uint32_t                   c;
    const sp_route_set_t      *set;
    const sp_route_request_t  *req;

    c = r->conds;

    if (c == 0) {
        return 1;
    }

    set = ev->set;
    req = ev->req;

    if ((c & SP_ROUTE_C_PROVIDER) && (uint32_t) req->provider != r->provider)
    {
        return 0;
    }

    if ((c & SP_ROUTE_C_TOOLS) && (req->has_tools != 0) != r->has_tools) {
        return 0;
    }

    if ((c & SP_ROUTE_C_IMAGES) && (req->has_images != 0) != r->has_images) {
        return 0;
    }

    if ((c & SP_ROUTE_C_KEY)
        && !sp_route_str_eq(set, r->api_key_id, req->api_key_id))
    {
        return 0;
    }

    if ((c & SP_ROUTE_C_AGENT)
        && !sp_route_str_eq(set, r->agent_id, req->agent_id))
    {
        return 0;
    }

    if ((c & SP_ROUTE_C_DEPARTMENT)
        && !sp_route_str_eq(set, r->department, req->department))
    {
        return 0;
    }

    if ((c & SP_ROUTE_C_PROJECT)
        && !sp_route_str_eq(set, r->project, req->project))
    {
        return 0;
    }

    if (c & SP_ROUTE_C_MODEL) {
        if (r->model_glob
            ? !sp_route_glob(set->strings + r->model.off, r->model.len,
                             req->model.data, req->model.len)
            : !sp_route_str_eq(set, r->model, req->model))
        {
            return 0;
        }
    }

    if (c & SP_ROUTE_C_WINDOW) {
        sp_route_eval_local(ev, r, &weekday, &minute);

        if (!sp_tz_window_contains(&r->window, weekday, minute)) {
            return 0;
        }
    }

    if (c & SP_ROUTE_C_TOKENS) {
        v = sp_route_eval_tokens(ev);

        if (v < r->tokens_min || v > r->tokens_max) {
            return 0;
        }
    }

    if (c & SP_ROUTE_C_BUDGET) {
        v = sp_route_eval_ppm(ev, r);

        if (v < 0 || v < r->ppm_gte || v >= r->ppm_lt) {
            return 0;
        }
    }

    return 1;
}


/* ", " between the conditions of an explanation */
static void
sp_route_sep(sp_route_text_t *t, int *n)
{
    if ((*n)++ > 0) {
        sp_route_adds(t, ", ");
    }
}


/* the conditions that held, for the explanation (values asked already) */
static void
sp_route_explain_match(sp_route_eval_t *ev, const sp_route_rule_t *r,
    sp_route_text_t *t)
{
    int                        weekday, minute, n;
    int64_t                    v;
    uint32_t                   c;
    const sp_route_set_t      *set;
    const sp_route_request_t  *req;

    static const char  *days[7] = {
        "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
    };

    set = ev->set;
    req = ev->req;
    c = r->conds;
    n = 0;

    sp_route_add_rule(t, set, r);

    if (r->name.len) {
        sp_route_adds(t, " \"");
        sp_route_add(t, sp_route_text(set, r->name), r->name.len);
        sp_route_adds(t, "\"");
    }

    sp_route_adds(t, ": ");

    if (c == 0) {
        sp_route_adds(t, "no conditions");
    }

    if (c & SP_ROUTE_C_MODEL) {
        sp_route_sep(t, &n);
        sp_route_adds(t, "model ");
        sp_route_add(t, req->model.data, req->model.len);
        sp_route_adds(t, " matches \"");
        sp_route_add(t, sp_route_text(set, r->model), r->model.len);
        sp_route_adds(t, "\"");
    }

    if (c & SP_ROUTE_C_PROVIDER) {
        sp_route_sep(t, &n);
        sp_route_addf(t, "provider %s", sp_provider_name(req->provider));
    }

    if (c & SP_ROUTE_C_KEY) {
        sp_route_sep(t, &n);
        sp_route_adds(t, "api key ");
        sp_route_add(t, req->api_key_id.data, req->api_key_id.len);
    }

    if (c & SP_ROUTE_C_AGENT) {
        sp_route_sep(t, &n);
        sp_route_adds(t, "agent ");
        sp_route_add(t, req->agent_id.data, req->agent_id.len);
    }

    if (c & SP_ROUTE_C_DEPARTMENT) {
        sp_route_sep(t, &n);
        sp_route_adds(t, "department ");
        sp_route_add(t, req->department.data, req->department.len);
    }

    if (c & SP_ROUTE_C_PROJECT) {
        sp_route_sep(t, &n);
        sp_route_adds(t, "project ");
        sp_route_add(t, req->project.data, req->project.len);
    }

    if (c & SP_ROUTE_C_TOKENS) {
        sp_route_sep(t, &n);
        v = sp_route_eval_tokens(ev);

        if (r->tokens_max == INT64_MAX) {
            sp_route_addf(t, "prompt tokens %lld >= %lld", (long long) v,
                          (long long) r->tokens_min);

        } else {
            sp_route_addf(t, "prompt tokens %lld in %lld..%lld",
                          (long long) v, (long long) r->tokens_min,
                          (long long) r->tokens_max);
        }
    }

    if (c & SP_ROUTE_C_WINDOW) {
        sp_route_sep(t, &n);
        sp_route_eval_local(ev, r, &weekday, &minute);
        sp_route_addf(t, "%s %02d:%02d in ", days[weekday], minute / 60,
                      minute % 60);
        sp_route_add(t, sp_route_text(set, set->zones[r->zone].name),
                     set->zones[r->zone].name.len);
        sp_route_addf(t, " within %02d:%02d-%02d:%02d",
                      r->window.start / 60, r->window.start % 60,
                      r->window.end / 60, r->window.end % 60);
    }

    if (c & SP_ROUTE_C_BUDGET) {
        sp_route_sep(t, &n);
        v = sp_route_eval_ppm(ev, r);
        sp_route_adds(t, "budget ");

        if (r->budget_id.len) {
            sp_route_add(t, sp_route_text(set, r->budget_id),
                         r->budget_id.len);
            sp_route_adds(t, " ");
        }

        sp_route_adds(t, "used ");
        sp_route_add_pct(t, v);

        if (r->ppm_gte > 0) {
            sp_route_adds(t, " >= ");
            sp_route_add_pct(t, r->ppm_gte);
        }

        if (r->ppm_lt != INT64_MAX) {
            sp_route_adds(t, " < ");
            sp_route_add_pct(t, r->ppm_lt);
        }
    }

    if (c & SP_ROUTE_C_TOOLS) {
        sp_route_sep(t, &n);
        sp_route_adds(t, r->has_tools ? "has tools" : "no tools");
    }

    if (c & SP_ROUTE_C_IMAGES) {
        sp_route_sep(t, &n);
        sp_route_adds(t, r->has_images ? "has images" : "no images");
    }
}


static void
sp_route_add_target(sp_route_text_t *t, const sp_route_target_t *target)
{
    sp_route_adds(t, sp_provider_name(target->provider));
    sp_route_adds(t, "/");
    sp_route_adds(t, target->model);
}


static void
sp_route_set_target(sp_route_target_t *out, sp_provider_e provider,
    const char *model, size_t len)
{
    out->provider = provider;
    sp_field_copy(out->model, sizeof(out->model), model, len);
}


static void
sp_route_set_ctarget(const sp_route_set_t *set, sp_route_target_t *out,
    const sp_route_ctarget_t *t)
{
    sp_route_set_target(out, (sp_provider_e) t->provider,
                        sp_route_text(set, t->model), t->model.len);
}


static int
sp_route_usable(const sp_route_request_t *req,
    const sp_route_target_t *target, char *why, size_t whylen)
{
    why[0] = '\0';

    if (req->usable == NULL) {
        return 1;
    }

    return req->usable(req->data, target, why, whylen);
}


/*
 * The rule's targets into out: the action's (its primary first), then
 * the fallbacks. 0 when the rule cannot take the request (an unmapped
 * model, a primary the request cannot use): skipped, and said why in t.
 */
static int
sp_route_apply(sp_route_eval_t *ev, const sp_route_rule_t *r,
    sp_route_decision_t *out, sp_route_text_t *t)
{
    char                       why[160];
    size_t                     i, n;
    uint64_t                   pick, sum;
    const sp_route_map_t      *map, *star;
    const sp_route_set_t      *set;
    sp_route_target_t          chain[2 * SP_ROUTE_MAX_TARGETS];
    const sp_route_request_t  *req;

    set = ev->set;
    req = ev->req;
    n = 0;

    switch (r->action) {

    case SP_ROUTE_REWRITE:
        sp_route_set_target(&chain[n++], req->provider,
                            sp_route_text(set, r->act_model),
                            r->act_model.len);
        break;

    case SP_ROUTE_PROVIDER:
        if (r->map_n == 0) {
            sp_route_set_target(&chain[n++],
                                (sp_provider_e) r->act_provider,
                                sp_route_text(set, r->act_model),
                                r->act_model.len);
            break;
        }

        star = NULL;
        map = NULL;

        for (i = 0; i < r->map_n; i++) {
            map = &set->maps[r->map_first + i];

            if (sp_route_str_eq(set, map->from, req->model)) {
                break;
            }

            if (map->from.len == 1 && set->strings[map->from.off] == '*') {
                star = map;
            }

            map = NULL;
        }

        if (map == NULL) {
            map = star;
        }

        if (map == NULL) {
            sp_route_add_rule(t, set, r);
            sp_route_adds(t, " skipped: its model_map has no entry for ");
            sp_route_add(t, req->model.data, req->model.len);
            sp_route_adds(t, "; ");
            return 0;
        }

        sp_route_set_target(&chain[n++], (sp_provider_e) r->act_provider,
                            sp_route_text(set, map->to), map->to.len);
        break;

    case SP_ROUTE_SPLIT:
        /* sticky without a trace id: as if not sticky */
        pick = (r->sticky && req->trace_id.len)
               ? sp_hash64(req->trace_id.data, req->trace_id.len,
                           SP_ROUTE_HASH_SEED)
               : req->random;
        pick %= r->total_weight;
        sum = 0;

        for (i = 0; i + 1 < r->ntargets; i++) {
            sum += r->targets[i].weight;

            if (pick < sum) {
                break;
            }
        }

        sp_route_set_ctarget(set, &chain[n++], &r->targets[i]);
        break;

    default: /* SP_ROUTE_FALLBACK */
        sp_route_set_target(&chain[n++], req->provider, req->model.data,
                            req->model.len);

        for (i = 0; i < r->ntargets; i++) {
            sp_route_set_ctarget(set, &chain[n++], &r->targets[i]);
        }

        break;
    }

    for (i = 0; i < r->nfallback; i++) {
        sp_route_set_ctarget(set, &chain[n++], &r->fallback[i]);
    }

    if (!sp_route_usable(req, &chain[0], why, sizeof(why))) {
        sp_route_add_rule(t, set, r);
        sp_route_adds(t, " skipped: ");

        if (why[0]) {
            sp_route_adds(t, why);

        } else {
            sp_route_adds(t, "the request cannot go to ");
            sp_route_add_target(t, &chain[0]);
        }

        sp_route_adds(t, "; ");
        return 0;
    }

    out->targets[0] = chain[0];
    out->ntargets = 1;

    sp_route_explain_match(ev, r, t);
    sp_route_adds(t, " -> ");
    sp_route_add_target(t, &chain[0]);

    if (r->action == SP_ROUTE_SPLIT) {
        sp_route_addf(t, " (split%s)", r->sticky && req->trace_id.len
                                       ? ", sticky by trace id" : "");
    }

    for (i = 1; i < n && out->ntargets < SP_ROUTE_MAX_TARGETS; i++) {
        if (!sp_route_usable(req, &chain[i], why, sizeof(why))) {
            sp_route_adds(t, "; ");
            sp_route_add_target(t, &chain[i]);
            sp_route_adds(t, " left out");

            if (why[0]) {
                sp_route_adds(t, ": ");
                sp_route_adds(t, why);
            }

            continue;
        }

        out->targets[out->ntargets++] = chain[i];
        sp_route_adds(t, ", then ");
        sp_route_add_target(t, &chain[i]);
    }

    return 1;
}


void
sp_route_evaluate(const sp_route_set_t *set, const sp_route_request_t *req,
    sp_route_decision_t *out)
{
    size_t                  i;
    sp_route_text_t         t;
    sp_route_eval_t         ev;
    const sp_route_rule_t  *r;

    out->matched = 0;
    out->rule_id[0] = '\0';
    out->rule_name[0] = '\0';
    out->explain[0] = '\0';

    /* no rule: the request as sent, once */
    sp_route_set_target(&out->targets[0], req->provider, req->model.data,
                        req->model.len);
    out->ntargets = 1;
    out->max_attempts = 1;
    out->attempt_timeout_ms = 0;
    out->cooldown_failures = SP_ROUTE_DEFAULT_COOLDOWN_FAILURES;
    out->cooldown_ms = (int64_t) SP_ROUTE_DEFAULT_COOLDOWN_SECONDS * 1000;

    t.p = out->explain;
    t.len = 0;
    t.cap = sizeof(out->explain);

    if (set == NULL || set->nrules == 0) {
        sp_route_adds(&t, "no routing rules");
        return;
    }

    ev.set = set;
    ev.req = req;
    ev.tokens_known = 0;
    ev.budgets_known = 0;
    ev.zones_known = 0;

    for (i = 0; i < set->nrules; i++) {
        r = &set->rule[i];

        if (!r->valid || !sp_route_matches(&ev, r)) {
            continue;
        }

        if (!sp_route_apply(&ev, r, out, &t)) {
            continue;
        }

        out->matched = 1;
        sp_field_copy(out->rule_id, sizeof(out->rule_id),
                      sp_route_text(set, r->id), r->id.len);
        sp_field_copy(out->rule_name, sizeof(out->rule_name),
                      sp_route_text(set, r->name), r->name.len);

        out->max_attempts = (r->max_attempts > 0
                             && (size_t) r->max_attempts < out->ntargets)
                            ? r->max_attempts : (int) out->ntargets;
        out->attempt_timeout_ms = r->attempt_timeout_ms;
        out->cooldown_failures = r->cooldown_failures;
        out->cooldown_ms = r->cooldown_ms;
        return;
    }

    /* a skipped rule wrote nothing but its note: the request as sent */
    sp_route_adds(&t, "no rule matched");
}
