/*
 * Routing rules: sp_route_validate, sp_route_compile and
 * sp_route_evaluate on any bytes; sp_route_glob_match against a simple
 * dynamic-programming matcher; sp_tz_parse on the same bytes as a TZif
 * file.
 *
 * Input: a rule object, an array of rules, or anything. A rule that
 * validates compiles (as a one-rule array) without an invalid rule, and
 * every decision is well formed: 1..SP_ROUTE_MAX_TARGETS targets of a
 * known provider with a NUL-terminated model, max_attempts 1..ntargets,
 * a NUL-terminated explanation, lazy values asked at most once each.
 */

#include "fuzz_common.h"
#include "sp_route.h"
#include "sp_tz.h"


typedef struct {
    uint64_t  seed;
    int       token_calls;
    int       budget_calls;
    int       usable_calls;
} fuzz_route_data_t;


static int64_t
fuzz_tokens(void *data)
{
    fuzz_route_data_t  *d = data;

    d->token_calls++;

    return (int64_t) (d->seed % 20000);
}


static int64_t
fuzz_budget(void *data, sp_str_t budget_id)
{
    fuzz_route_data_t  *d = data;

    d->budget_calls++;
    FUZZ_CHECK(budget_id.len == 0 || budget_id.data != NULL);

    return (int64_t) (sp_hash64(budget_id.data, budget_id.len, d->seed)
                      % 12000000) - 1000000;
}


static int
fuzz_usable(void *data, const sp_route_target_t *target, char *why,
    size_t whylen)
{
    fuzz_route_data_t  *d = data;

    d->usable_calls++;
    FUZZ_CHECK(target->provider >= SP_PROVIDER_OPENAI
               && target->provider <= SP_PROVIDER_MISTRAL);
    FUZZ_CHECK(memchr(target->model, '\0', sizeof(target->model)) != NULL);

    if ((d->seed >> (target->provider * 3)) % 5 == 0) {
        snprintf(why, whylen, "%s cannot take it",
                 sp_provider_name(target->provider));
        return 0;
    }

    return 1;
}


static void
fuzz_evaluate(const sp_route_set_t *set, const uint8_t *data, size_t len)
{
    size_t               i;
    uint64_t             h;
    sp_route_request_t   req;
    fuzz_route_data_t    d;
    sp_route_decision_t  out;

    static const char  *models[] = {
        "gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "", "gemini-2.5-pro",
        "o3", "x"
    };

    h = sp_hash64(data, len, 7);

    memset(&req, 0, sizeof(req));
    memset(&d, 0, sizeof(d));
    d.seed = h;

    req.provider = (sp_provider_e) (1 + h % 6);
    req.model = sp_str_from(models[(h >> 8) % 7]);
    req.api_key_id = sp_str_from("key_aaaaaaaaaaaaaaaaaaaaaaaa");
    req.agent_id = sp_str_from((h >> 12) & 1 ? "agt_1" : "");
    req.department = sp_str_from((h >> 13) & 1 ? "marketing" : "");
    req.project = sp_str_from("");
    req.trace_id = sp_str_from((h >> 14) & 1
                               ? "4bf92f3577b34da6a3ce929d0e0e4736" : "");
    req.has_tools = (h >> 15) & 1;
    req.has_images = (h >> 16) & 1;
    req.now_ms = (int64_t) (h >> 20) - (int64_t) (h >> 21);
    req.random = h * 31;

    if ((h >> 17) & 1) {
        req.prompt_tokens = fuzz_tokens;
        req.budget_used_ppm = fuzz_budget;
        req.usable = fuzz_usable;
        req.data = &d;
    }

    sp_route_evaluate(set, &req, &out);

    FUZZ_CHECK(out.ntargets >= 1 && out.ntargets <= SP_ROUTE_MAX_TARGETS);
    FUZZ_CHECK(out.max_attempts >= 1
               && (size_t) out.max_attempts <= out.ntargets);
    FUZZ_CHECK(memchr(out.explain, '\0', sizeof(out.explain)) != NULL);
    FUZZ_CHECK(memchr(out.rule_id, '\0', sizeof(out.rule_id)) != NULL);
    FUZZ_CHECK(memchr(out.rule_name, '\0', sizeof(out.rule_name)) != NULL);
    FUZZ_CHECK(d.token_calls <= 1);
    FUZZ_CHECK(out.cooldown_failures >= 1 && out.cooldown_ms >= 1000);
    FUZZ_CHECK(out.attempt_timeout_ms >= 0);

    for (i = 0; i < out.ntargets; i++) {
        FUZZ_CHECK(memchr(out.targets[i].model, '\0',
                          sizeof(out.targets[i].model)) != NULL);
    }

    if (!out.matched) {
        FUZZ_CHECK(out.ntargets == 1);
        FUZZ_CHECK(out.targets[0].provider == req.provider);
        FUZZ_CHECK(strcmp(out.targets[0].model, req.model.data) == 0);

    } else {
        for (i = 0; i < out.ntargets; i++) {
            FUZZ_CHECK(out.targets[i].provider >= SP_PROVIDER_OPENAI
                       && out.targets[i].provider <= SP_PROVIDER_MISTRAL);
        }
    }
}


/* the reference: a table of which prefixes match, O(glob * name) */
static int
fuzz_glob_reference(const char *g, size_t gl, const char *s, size_t sl)
{
    int            in, negate, ok;
    size_t         i, j, k, end;
    unsigned char  c;
    static char    m[66][66];

    memset(m, 0, sizeof(m));
    m[0][0] = 1;

    for (i = 0, k = 0; k < gl; i++) {
        /* the token at g[k..end) */
        end = k + 1;

        if (g[k] == '[') {
            end = k + 1;
            end += (end < gl && g[end] == '!');

            do {
                end++;
            } while (end < gl && g[end] != ']');

            end++;
        }

        for (j = 0; j <= sl; j++) {
            ok = 0;

            if (g[k] == '*') {
                ok = m[i][j] || (j > 0 && m[i + 1][j - 1]);

            } else if (j > 0 && m[i][j - 1]) {
                c = (unsigned char) s[j - 1];

                if (g[k] == '?') {
                    ok = 1;

                } else if (g[k] == '[') {
                    negate = (g[k + 1] == '!');
                    in = 0;

                    for (size_t p = k + 1 + negate; p < end - 1; p++) {
                        if (p + 2 < end - 1 && g[p + 1] == '-') {
                            in |= c >= (unsigned char) g[p]
                                  && c <= (unsigned char) g[p + 2];
                            p += 2;

                        } else {
                            in |= c == (unsigned char) g[p];
                        }
                    }

                    ok = in != negate;

                } else {
                    ok = (c == (unsigned char) g[k]);
                }
            }

            m[i + 1][j] = (char) ok;
        }

        k = end;
    }

    return m[i][sl];
}


/* 1 when the glob is well formed (the library's rule, restated) */
static int
fuzz_glob_valid(const char *g, size_t gl)
{
    size_t  i, first;

    if (gl == 0) {
        return 0;
    }

    for (i = 0; i < gl; i++) {
        if (g[i] == ']') {
            return 0;
        }

        if (g[i] != '[') {
            continue;
        }

        i++;
        i += (i < gl && g[i] == '!');
        first = i;

        while (i < gl && g[i] != ']') {
            if (g[i] == '[') {
                return 0;
            }

            if (i + 2 < gl && g[i + 1] == '-' && g[i + 2] != ']') {
                if ((unsigned char) g[i] > (unsigned char) g[i + 2]) {
                    return 0;
                }

                i += 2;
            }

            i++;
        }

        if (i >= gl || i == first) {
            return 0;
        }
    }

    return 1;
}


static void
fuzz_glob(const uint8_t *data, size_t len)
{
    size_t       gl, sl;
    const char  *g, *s, *nl;

    nl = memchr(data, '\n', len);

    if (nl == NULL) {
        return;
    }

    g = (const char *) data;
    gl = (size_t) (nl - g);
    s = nl + 1;
    sl = len - gl - 1;

    if (gl > 64 || sl > 64) {
        return;
    }

    if (!fuzz_glob_valid(g, gl)) {
        FUZZ_CHECK(sp_route_glob_match(g, gl, s, sl) == 0);
        return;
    }

    FUZZ_CHECK(sp_route_glob_match(g, gl, s, sl)
               == fuzz_glob_reference(g, gl, s, sl));
}


static void
fuzz_tz(const uint8_t *data, size_t len)
{
    int        weekday, minute, k;
    int32_t    off;
    int64_t    t;
    sp_tz_t   *tz;
    char       err[128];

    tz = sp_tz_parse(data, len, err, sizeof(err));

    if (tz == NULL) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        return;
    }

    for (k = 0; k < 16; k++) {
        t = (int64_t) sp_hash64(data, len, (uint64_t) k);

        if (k < 8) {
            t %= (int64_t) 1 << 34;
        }

        off = sp_tz_offset(tz, t);
        FUZZ_CHECK(off >= -26 * 3600 && off <= 26 * 3600);

        sp_tz_local(tz, t, &weekday, &minute);
        FUZZ_CHECK(weekday >= 0 && weekday <= 6);
        FUZZ_CHECK(minute >= 0 && minute < 1440);
    }

    sp_tz_free(tz);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    int              rc;
    char             field[128], err[256], *wrapped;
    uint8_t         *copy;
    sp_route_set_t  *set;

    copy = fuzz_dup(data, len);

    rc = sp_route_validate((const char *) copy, len, field, sizeof(field),
                           err, sizeof(err));

    FUZZ_CHECK(rc == SP_OK || rc == SP_ERROR);
    FUZZ_CHECK(memchr(field, '\0', sizeof(field)) != NULL);
    FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);

    if (rc == SP_ERROR) {
        FUZZ_CHECK(err[0] != '\0');
    }

    /* what validates compiles, as a one-rule array, and is valid there */
    wrapped = malloc(len + 2);
    FUZZ_CHECK(wrapped != NULL);
    wrapped[0] = '[';
    memcpy(wrapped + 1, copy, len);
    wrapped[len + 1] = ']';

    set = sp_route_compile(wrapped, len + 2, err, sizeof(err));

    if (rc == SP_OK) {
        FUZZ_CHECK(set != NULL);
        FUZZ_CHECK(sp_route_count(set) == 1);
        FUZZ_CHECK(sp_route_invalid(set, err, sizeof(err)) == 0);
    }

    if (set != NULL) {
        fuzz_evaluate(set, copy, len);
        sp_route_free(set);
    }

    free(wrapped);

    /* the bytes as an array of rules */
    set = sp_route_compile((const char *) copy, len, err, sizeof(err));

    if (set != NULL) {
        FUZZ_CHECK(sp_route_invalid(set, err, sizeof(err))
                   <= sp_route_count(set));
        fuzz_evaluate(set, copy, len);
        sp_route_free(set);
    }

    fuzz_glob(copy, len);
    fuzz_tz(copy, len);

    free(copy);

    return 0;
}
