/*
 * libspendpol routing rules: validation (every error's member path),
 * compilation, evaluation (each condition, each action, order, lazy
 * values, usable targets, splits) and the time zones of time windows.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "sp_route.h"
#include "sp_tz.h"


/* ---- a request and its lazy values ----------------------------------- */

typedef struct {
    int64_t   tokens;
    int64_t   ppm;               /* of any budget */
    int64_t   ppm_named;         /* of "bud_" + 24 x '1' */
    int       tokens_calls;
    int       budget_calls;
    int       usable_calls;
    /* a target of this provider cannot take the request */
    int       unusable;
} test_data_t;


static int64_t
test_tokens(void *data)
{
    test_data_t  *d = data;

    d->tokens_calls++;

    return d->tokens;
}


#define TEST_BUDGET  "bud_111111111111111111111111"

static int64_t
test_budget(void *data, sp_str_t budget_id)
{
    test_data_t  *d = data;

    d->budget_calls++;

    if (budget_id.len == 0) {
        return d->ppm;
    }

    return (budget_id.len == strlen(TEST_BUDGET)
            && memcmp(budget_id.data, TEST_BUDGET, budget_id.len) == 0)
           ? d->ppm_named : -1;
}


static int
test_usable(void *data, const sp_route_target_t *target, char *why,
    size_t whylen)
{
    test_data_t  *d = data;

    d->usable_calls++;

    if (d->unusable && (int) target->provider == d->unusable) {
        snprintf(why, whylen, "%s does not take n > 1",
                 sp_provider_name(target->provider));
        return 0;
    }

    return 1;
}


static void
test_request(sp_route_request_t *req, test_data_t *d, const char *model)
{
    memset(req, 0, sizeof(sp_route_request_t));
    memset(d, 0, sizeof(test_data_t));

    req->provider = SP_PROVIDER_OPENAI;
    req->model = sp_str_from(model);
    req->api_key_id = sp_str_from("key_aaaaaaaaaaaaaaaaaaaaaaaa");
    req->agent_id = sp_str_from("");
    req->department = sp_str_from("marketing");
    req->project = sp_str_from("");
    req->trace_id = sp_str_from("4bf92f3577b34da6a3ce929d0e0e4736");
    req->now_ms = 1796418000000LL;     /* 2026-12-04 21:00 UTC, Friday */
    req->prompt_tokens = test_tokens;
    req->budget_used_ppm = test_budget;
    req->usable = test_usable;
    req->data = d;

    d->ppm = -1;
    d->ppm_named = -1;
}


static sp_route_set_t *
compile_ok(const char *json)
{
    char             err[256];
    sp_route_set_t  *set;

    set = sp_route_compile(json, strlen(json), err, sizeof(err));

    if (set == NULL) {
        fail_msg("compile: %s: %s", json, err);
    }

    if (sp_route_invalid(set, err, sizeof(err)) != 0) {
        fail_msg("compile: %s: invalid: %s", json, err);
    }

    return set;
}


/* one rule array evaluated for req */
static void
evaluate(const char *json, const sp_route_request_t *req,
    sp_route_decision_t *out)
{
    sp_route_set_t  *set;

    set = compile_ok(json);
    sp_route_evaluate(set, req, out);
    sp_route_free(set);
}


/* whether the rule array matches for req */
static int
matches(const char *json, const sp_route_request_t *req)
{
    sp_route_decision_t  out;

    evaluate(json, req, &out);

    return out.matched;
}


static void
explain_has(const sp_route_decision_t *out, const char *text)
{
    if (strstr(out->explain, text) == NULL) {
        fail_msg("explain \"%s\" lacks \"%s\"", out->explain, text);
    }
}


static void
target_is(const sp_route_decision_t *out, size_t i, sp_provider_e provider,
    const char *model)
{
    if (i >= out->ntargets) {
        fail_msg("target %zu of %zu (%s)", i, out->ntargets, out->explain);
    }

    assert_int_equal(out->targets[i].provider, provider);
    assert_string_equal(out->targets[i].model, model);
}


/* ---- glob ------------------------------------------------------------ */

static int
glob(const char *g, const char *name)
{
    return sp_route_glob_match(g, strlen(g), name, strlen(name));
}


static void
test_route_glob_matches_stars_marks_and_sets(void **state)
{
    (void) state;

    assert_true(glob("gpt-4o", "gpt-4o"));
    assert_false(glob("gpt-4o", "gpt-4o-mini"));
    assert_true(glob("gpt-4o*", "gpt-4o-mini"));
    assert_true(glob("gpt-4o*", "gpt-4o"));
    assert_true(glob("*", ""));
    assert_true(glob("*mini*", "gpt-4o-mini-2024-07-18"));
    assert_false(glob("*mini", "gpt-4o-mini-2024-07-18"));
    assert_true(glob("gpt-?o", "gpt-4o"));
    assert_false(glob("gpt-?o", "gpt-o"));
    assert_true(glob("claude-[sh]*", "claude-sonnet-4-5"));
    assert_true(glob("claude-[sh]*", "claude-haiku-4-5"));
    assert_false(glob("claude-[sh]*", "claude-opus-4-1"));
    assert_true(glob("gpt-[3-5]*", "gpt-4.1"));
    assert_false(glob("gpt-[3-5]*", "gpt-o1"));
    assert_true(glob("gpt-[!3]*", "gpt-4o"));
    assert_false(glob("gpt-[!3]*", "gpt-3.5-turbo"));
    assert_true(glob("[-a]x", "-x"));
    assert_true(glob("a*b*c", "aXXbYYc"));
    assert_false(glob("a*b*c", "aXXbYY"));
    /* case-sensitive */
    assert_false(glob("GPT-4o", "gpt-4o"));
    assert_false(glob("gpt-4[O]", "gpt-4o"));
}


static void
test_route_glob_refuses_malformed_globs(void **state)
{
    (void) state;

    assert_false(glob("", ""));
    assert_false(glob("gpt-[4o", "gpt-4o"));
    assert_false(glob("gpt-4o]", "gpt-4o]"));
    assert_false(glob("gpt-[]", "gpt-"));
    assert_false(glob("gpt-[!]", "gpt-x"));
    assert_false(glob("gpt-[z-a]", "gpt-b"));
    assert_false(glob("[[a]]", "a"));
}


static void
test_route_glob_has_no_exponential_backtracking(void **state)
{
    char     name[4097], pattern[64];
    clock_t  start;

    (void) state;

    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(pattern, sizeof(pattern), "%s", "*a*a*a*a*a*a*a*a*a*a*a*b");

    start = clock();
    assert_false(glob(pattern, name));
    assert_true((double) (clock() - start) / CLOCKS_PER_SEC < 0.5);
}


/* ---- validation ------------------------------------------------------ */

static void
valid(const char *json)
{
    char  field[128], err[256];

    if (sp_route_validate(json, strlen(json), field, sizeof(field), err,
                          sizeof(err))
        != SP_OK)
    {
        fail_msg("refused: %s: %s: %s", json, field, err);
    }
}


static void
invalid(const char *json, const char *field, const char *message)
{
    char  got_field[128], err[256];

    if (sp_route_validate(json, strlen(json), got_field, sizeof(got_field),
                          err, sizeof(err))
        != SP_ERROR)
    {
        fail_msg("accepted: %s", json);
    }

    if (strcmp(got_field, field) != 0) {
        fail_msg("%s: field \"%s\", expected \"%s\" (%s)", json, got_field,
                 field, err);
    }

    if (strstr(err, message) == NULL) {
        fail_msg("%s: message \"%s\" lacks \"%s\"", json, err, message);
    }
}


#define RW  "\"action\":{\"type\":\"rewrite\",\"model\":\"gpt-4o-mini\"}"

static void
test_route_validate_accepts_every_documented_member(void **state)
{
    (void) state;

    valid("{" RW "}");
    valid("{\"id\":\"rr_1\",\"name\":\"cheap when 80% spent\",\"priority\":10,"
          "\"enabled\":true,\"created_at\":\"2026-12-04T00:00:00Z\","
          "\"updated_at\":null,"
          "\"conditions\":{\"model\":\"gpt-4o*\",\"provider\":\"openai\","
          "\"api_key_id\":\"key_0123456789abcdef01234567\","
          "\"agent_id\":\"agt_1\",\"department\":\"marketing\","
          "\"project\":\"web\",\"prompt_tokens\":{\"min\":0,\"max\":8000},"
          "\"time_window\":{\"timezone\":\"Europe/Paris\",\"days\":[\"mon\","
          "\"tue\",\"friday\"],\"start\":\"09:00\",\"end\":\"18:00\"},"
          "\"budget_used_pct\":{\"gte\":80,\"lt\":100.5,\"budget_id\":"
          "\"" TEST_BUDGET "\"},\"has_tools\":true,\"has_images\":false},"
          RW ",\"fallback\":[{\"provider\":\"anthropic\",\"model\":"
          "\"claude-sonnet-4-5\"}],\"max_attempts\":2,"
          "\"attempt_timeout_ms\":30000,\"cooldown\":{\"failures\":3,"
          "\"seconds\":30}}");
    valid("{\"action\":{\"type\":\"provider\",\"provider\":\"anthropic\","
          "\"model\":\"claude-sonnet-4-5\"}}");
    /* a model_map without "*": unmapped models skip the rule */
    valid("{\"action\":{\"type\":\"provider\",\"provider\":\"google\","
          "\"model_map\":{\"gpt-4o\":\"gemini-2.5-pro\"}}}");
    valid("{\"action\":{\"type\":\"split\",\"sticky\":true,\"targets\":["
          "{\"provider\":\"openai\",\"model\":\"gpt-4o\",\"weight\":70},"
          "{\"provider\":\"openai\",\"model\":\"gpt-4o-mini\",\"weight\":0},"
          "{\"provider\":\"mistral\",\"model\":\"mistral-large\"}]}}");
    valid("{\"action\":{\"type\":\"fallback\",\"targets\":[{\"provider\":"
          "\"anthropic\",\"model\":\"claude-sonnet-4-5\"}]}}");
    valid("{\"conditions\":{\"time_window\":{\"timezone\":\"UTC\","
          "\"start\":\"22:00\",\"end\":\"06:00\"}}," RW "}");
    valid("{\"conditions\":{\"time_window\":{\"end\":\"24:00\"}}," RW "}");
    valid("{\"conditions\":{\"budget_used_pct\":{\"gte\":82.5}}," RW "}");
    valid("{\"conditions\":{}," RW ",\"fallback\":[]}");
}


static void
test_route_validate_names_the_member_of_every_error(void **state)
{
    (void) state;

    invalid("[]", "", "expected a rule object");
    invalid("{", "", "expected a JSON rule object");
    invalid("{\"action\":1,\"action\":2}", "", "duplicate");
    invalid("{}", "action", "rewrite, provider, split or fallback");
    invalid("{\"actoin\":{}}", "actoin", "unknown member");

    /* conditions */
    invalid("{\"conditions\":[]," RW "}", "conditions", "an object");
    invalid("{\"conditions\":{\"modle\":\"gpt-4o\"}," RW "}",
            "conditions.modle", "unknown member \"modle\"");
    invalid("{\"conditions\":{\"model\":\"gpt-[4o\"}," RW "}",
            "conditions.model", "balanced");
    invalid("{\"conditions\":{\"model\":\"\"}," RW "}",
            "conditions.model", "1 to 255 bytes");
    invalid("{\"conditions\":{\"model\":\"gpt-4o]\"}," RW "}",
            "conditions.model", "glob");
    invalid("{\"conditions\":{\"model\":\"a\\nb\"}," RW "}",
            "conditions.model", "control characters");
    invalid("{\"conditions\":{\"provider\":\"openia\"}," RW "}",
            "conditions.provider",
            "one of openai, anthropic, google, azure, cohere, mistral");
    invalid("{\"conditions\":{\"api_key_id\":\"key_x\"}," RW "}",
            "conditions.api_key_id", "key");
    invalid("{\"conditions\":{\"agent_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}," RW "}",
            "conditions.agent_id", "1 to 63 bytes");
    invalid("{\"conditions\":{\"department\":7}," RW "}",
            "conditions.department", "not an integer");
    invalid("{\"conditions\":{\"prompt_tokens\":{\"min\":9,\"max\":8}},"
            RW "}", "conditions.prompt_tokens.min", "at most max");
    invalid("{\"conditions\":{\"prompt_tokens\":{\"min\":-1}}," RW "}",
            "conditions.prompt_tokens.min", "integer from 0");
    invalid("{\"conditions\":{\"prompt_tokens\":{\"mx\":1}}," RW "}",
            "conditions.prompt_tokens.mx", "unknown member");
    invalid("{\"conditions\":{\"time_window\":{\"timezone\":"
            "\"Europe/Pariss\"}}," RW "}",
            "conditions.time_window.timezone", "IANA time zone");
    invalid("{\"conditions\":{\"time_window\":{\"timezone\":"
            "\"../../etc/passwd\"}}," RW "}",
            "conditions.time_window.timezone", "IANA time zone");
    invalid("{\"conditions\":{\"time_window\":{\"timezone\":"
            "\"/etc/localtime\"}}," RW "}",
            "conditions.time_window.timezone", "IANA time zone");
    invalid("{\"conditions\":{\"time_window\":{\"timezone\":"
            "\"Europe\"}}," RW "}",
            "conditions.time_window.timezone", "IANA time zone");
    invalid("{\"conditions\":{\"time_window\":{\"start\":\"9:00\"}}," RW "}",
            "conditions.time_window.start", "HH:MM");
    invalid("{\"conditions\":{\"time_window\":{\"start\":\"24:00\"}}," RW
            "}", "conditions.time_window.start", "HH:MM");
    invalid("{\"conditions\":{\"time_window\":{\"end\":\"18:60\"}}," RW "}",
            "conditions.time_window.end", "HH:MM");
    invalid("{\"conditions\":{\"time_window\":{\"days\":[\"mon\","
            "\"funday\"]}}," RW "}",
            "conditions.time_window.days[1]", "expected a day");
    invalid("{\"conditions\":{\"time_window\":{\"days\":[]}}," RW "}",
            "conditions.time_window.days", "one or more days");
    invalid("{\"conditions\":{\"budget_used_pct\":{\"gte\":1000.5}}," RW
            "}", "conditions.budget_used_pct.gte", "from 0 to 1000");
    invalid("{\"conditions\":{\"budget_used_pct\":{\"gte\":-1}}," RW "}",
            "conditions.budget_used_pct.gte", "from 0 to 1000");
    invalid("{\"conditions\":{\"budget_used_pct\":{\"gte\":\"80\"}}," RW
            "}", "conditions.budget_used_pct.gte", "not a string");
    invalid("{\"conditions\":{\"budget_used_pct\":{\"gte\":80,\"lt\":80}},"
            RW "}", "conditions.budget_used_pct.lt", "above gte");
    invalid("{\"conditions\":{\"budget_used_pct\":{\"budget_id\":\"x\"}},"
            RW "}", "conditions.budget_used_pct.budget_id", "budget id");
    invalid("{\"conditions\":{\"has_tools\":1}," RW "}",
            "conditions.has_tools", "true or false");
    invalid("{\"conditions\":{\"has_images\":\"yes\"}," RW "}",
            "conditions.has_images", "true or false");

    /* actions */
    invalid("{\"action\":{\"type\":\"teleport\"}}", "action.type",
            "rewrite, provider, split, fallback");
    invalid("{\"action\":{\"type\":\"rewrite\"}}", "action.model", "model");
    invalid("{\"action\":{\"type\":\"rewrite\",\"model\":\"m\","
            "\"provider\":\"openai\"}}", "action.provider",
            "unknown member");
    invalid("{\"action\":{\"type\":\"provider\",\"provider\":\"acme\","
            "\"model\":\"m\"}}", "action.provider", "one of openai");
    invalid("{\"action\":{\"type\":\"provider\",\"provider\":\"google\"}}",
            "action.model", "model_map");
    invalid("{\"action\":{\"type\":\"provider\",\"provider\":\"google\","
            "\"model\":\"m\",\"model_map\":{\"*\":\"m\"}}}",
            "action.model_map", "not both");
    invalid("{\"action\":{\"type\":\"provider\",\"provider\":\"google\","
            "\"model_map\":{}}}", "action.model_map", "one or more");
    invalid("{\"action\":{\"type\":\"provider\",\"provider\":\"google\","
            "\"model_map\":{\"gpt-4o\":3}}}", "action.model_map.gpt-4o",
            "model name");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[]}}",
            "action.targets", "1 to 8 targets");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[{\"provider\":"
            "\"openai\",\"model\":\"a\",\"weight\":0},{\"provider\":"
            "\"openai\",\"model\":\"b\",\"weight\":0}]}}", "action.targets",
            "weights that sum to more than zero");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[{\"provider\":"
            "\"openai\",\"model\":\"a\",\"weight\":-1}]}}",
            "action.targets[0].weight", "integer from 0");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[{\"provider\":"
            "\"openai\",\"model\":\"a\",\"weight\":1},{\"provider\":"
            "\"openai\",\"model\":\"b\",\"weight\":0.5}]}}",
            "action.targets[1].weight", "integer");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[{\"provider\":"
            "\"opneai\",\"model\":\"a\"}]}}", "action.targets[0].provider",
            "one of openai");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":[{\"provider\":"
            "\"openai\"}]}}", "action.targets[0].model", "model name");
    invalid("{\"action\":{\"type\":\"split\",\"targets\":["
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"}]}}",
            "action.targets", "1 to 8 targets");
    invalid("{\"action\":{\"type\":\"fallback\",\"targets\":[{\"provider\":"
            "\"openai\",\"model\":\"a\",\"weight\":1}]}}",
            "action.targets[0].weight", "unknown member");
    invalid("{\"action\":{\"type\":\"fallback\",\"targets\":[]}}",
            "action.targets", "1 to 7 targets");
    invalid("{\"action\":{\"type\":\"split\",\"sticky\":1,\"targets\":["
            "{\"provider\":\"openai\",\"model\":\"a\"}]}}", "action.sticky",
            "true or false");

    /* the rest of the rule */
    invalid("{" RW ",\"fallback\":{}}", "fallback", "at most 7 targets");
    invalid("{\"action\":{\"type\":\"fallback\",\"targets\":["
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"}]},\"fallback\":["
            "{\"provider\":\"openai\",\"model\":\"a\"},"
            "{\"provider\":\"openai\",\"model\":\"a\"}]}", "fallback",
            "at most 1 targets");
    invalid("{" RW ",\"fallback\":[{\"provider\":\"anthropic\"}]}",
            "fallback[0].model", "model name");
    invalid("{" RW ",\"max_attempts\":0}", "max_attempts",
            "integer from 1 to 8");
    invalid("{" RW ",\"max_attempts\":9}", "max_attempts",
            "integer from 1 to 8");
    invalid("{" RW ",\"attempt_timeout_ms\":600001}", "attempt_timeout_ms",
            "integer from 0 to 600000");
    invalid("{" RW ",\"cooldown\":{\"failures\":0}}", "cooldown.failures",
            "integer from 1 to 100");
    invalid("{" RW ",\"cooldown\":{\"seconds\":3601}}", "cooldown.seconds",
            "integer from 1 to 3600");
    invalid("{" RW ",\"cooldown\":{\"secs\":3}}", "cooldown.secs",
            "unknown member");
    invalid("{" RW ",\"priority\":\"high\"}", "priority", "an integer");
    invalid("{" RW ",\"enabled\":\"yes\"}", "enabled", "true or false");
    invalid("{" RW ",\"name\":5}", "name", "a name");
}


/* ---- compilation ----------------------------------------------------- */

static void
test_route_compile_keeps_invalid_rules_as_never_matching(void **state)
{
    char                 err[256];
    sp_route_set_t      *set;
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    static const char  json[] =
        "[{\"id\":\"rr_bad\",\"conditions\":{\"time_window\":{\"timezone\":"
        "\"Mars/Olympus\"}},\"action\":{\"type\":\"rewrite\",\"model\":"
        "\"x\"}},"
        "{\"id\":\"rr_good\",\"action\":{\"type\":\"rewrite\",\"model\":"
        "\"gpt-4o-mini\"}}]";

    (void) state;

    set = sp_route_compile(json, strlen(json), err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(sp_route_count(set), 2);
    assert_int_equal(sp_route_invalid(set, err, sizeof(err)), 1);
    assert_non_null(strstr(err, "rule 1 rr_bad"));
    assert_non_null(strstr(err, "conditions.time_window.timezone"));

    test_request(&req, &d, "gpt-4o");
    sp_route_evaluate(set, &req, &out);
    assert_true(out.matched);
    assert_string_equal(out.rule_id, "rr_good");

    sp_route_free(set);

    assert_null(sp_route_compile("{}", 2, err, sizeof(err)));
    assert_non_null(strstr(err, "not a JSON array"));
    assert_null(sp_route_compile("[", 1, err, sizeof(err)));
    assert_non_null(strstr(err, "not JSON"));

    set = sp_route_compile("[]", 2, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(sp_route_count(set), 0);
    sp_route_evaluate(set, &req, &out);
    assert_false(out.matched);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");
    assert_int_equal(out.max_attempts, 1);
    sp_route_free(set);

    /* a disabled rule is valid and never matches */
    set = compile_ok("[{\"enabled\":false," RW "}]");
    sp_route_evaluate(set, &req, &out);
    assert_false(out.matched);
    sp_route_free(set);

    sp_route_evaluate(NULL, &req, &out);
    assert_false(out.matched);
    assert_int_equal(sp_route_count(NULL), 0);
    sp_route_free(NULL);
}


/* ---- conditions -------------------------------------------------------- */

#define RULE(conditions)                                                      \
    "[{\"id\":\"rr_1\",\"conditions\":{" conditions "}," RW "}]"

static void
test_route_each_condition_holds_and_fails(void **state)
{
    test_data_t         d;
    sp_route_request_t  req;

    (void) state;

    test_request(&req, &d, "gpt-4o");

    assert_true(matches(RULE(""), &req));
    assert_true(matches(RULE("\"model\":\"gpt-4o\""), &req));
    assert_false(matches(RULE("\"model\":\"gpt-4\""), &req));
    assert_true(matches(RULE("\"model\":\"gpt-4*\""), &req));
    assert_false(matches(RULE("\"model\":\"claude-*\""), &req));
    assert_true(matches(RULE("\"provider\":\"openai\""), &req));
    assert_false(matches(RULE("\"provider\":\"azure\""), &req));
    assert_true(matches(RULE("\"api_key_id\":"
                             "\"key_aaaaaaaaaaaaaaaaaaaaaaaa\""), &req));
    assert_false(matches(RULE("\"api_key_id\":"
                              "\"key_bbbbbbbbbbbbbbbbbbbbbbbb\""), &req));
    assert_false(matches(RULE("\"agent_id\":\"agt_1\""), &req));
    req.agent_id = sp_str_from("agt_1");
    assert_true(matches(RULE("\"agent_id\":\"agt_1\""), &req));
    assert_true(matches(RULE("\"department\":\"marketing\""), &req));
    assert_false(matches(RULE("\"department\":\"Marketing\""), &req));
    assert_false(matches(RULE("\"project\":\"web\""), &req));
    req.project = sp_str_from("web");
    assert_true(matches(RULE("\"project\":\"web\""), &req));

    d.tokens = 1200;
    assert_true(matches(RULE("\"prompt_tokens\":{\"min\":1000}"), &req));
    assert_true(matches(RULE("\"prompt_tokens\":{\"min\":1200,"
                             "\"max\":1200}"), &req));
    assert_false(matches(RULE("\"prompt_tokens\":{\"max\":1199}"), &req));
    assert_false(matches(RULE("\"prompt_tokens\":{\"min\":1201}"), &req));

    d.ppm = 500000;
    assert_true(matches(RULE("\"budget_used_pct\":{\"gte\":50}"), &req));
    assert_false(matches(RULE("\"budget_used_pct\":{\"gte\":50.01}"), &req));
    assert_true(matches(RULE("\"budget_used_pct\":{\"lt\":50.01}"), &req));
    assert_false(matches(RULE("\"budget_used_pct\":{\"lt\":50}"), &req));
    d.ppm = -1;
    assert_false(matches(RULE("\"budget_used_pct\":{}"), &req));
    d.ppm_named = 900000;
    assert_true(matches(RULE("\"budget_used_pct\":{\"gte\":90,"
                             "\"budget_id\":\"" TEST_BUDGET "\"}"), &req));
    assert_false(matches(RULE("\"budget_used_pct\":{\"gte\":90}"), &req));

    assert_true(matches(RULE("\"has_tools\":false"), &req));
    assert_false(matches(RULE("\"has_tools\":true"), &req));
    req.has_tools = 1;
    assert_true(matches(RULE("\"has_tools\":true"), &req));
    assert_true(matches(RULE("\"has_images\":false"), &req));
    req.has_images = 1;
    assert_true(matches(RULE("\"has_images\":true"), &req));
    assert_false(matches(RULE("\"has_images\":false"), &req));

    /* ANDed: one failing condition is enough */
    assert_false(matches(RULE("\"model\":\"gpt-4o\",\"provider\":"
                              "\"anthropic\""), &req));

    /* 2026-12-04 21:00 UTC is Friday 22:00 in Paris, 16:00 in New York */
    assert_true(matches(RULE("\"time_window\":{\"timezone\":"
                             "\"Europe/Paris\",\"days\":[\"fri\"],"
                             "\"start\":\"22:00\",\"end\":\"23:00\"}"),
                        &req));
    assert_false(matches(RULE("\"time_window\":{\"timezone\":"
                              "\"Europe/Paris\",\"start\":\"09:00\","
                              "\"end\":\"18:00\"}"), &req));
    assert_true(matches(RULE("\"time_window\":{\"timezone\":"
                             "\"America/New_York\",\"start\":\"09:00\","
                             "\"end\":\"18:00\"}"), &req));
    assert_false(matches(RULE("\"time_window\":{\"timezone\":"
                              "\"America/New_York\",\"days\":[\"sat\","
                              "\"sun\"]}"), &req));
    assert_true(matches(RULE("\"time_window\":{\"start\":\"21:00\"}"),
                        &req));
    assert_false(matches(RULE("\"time_window\":{\"end\":\"21:00\"}"), &req));
}


static void
test_route_time_window_past_midnight_belongs_to_its_first_day(void **state)
{
    test_data_t         d;
    sp_route_request_t  req;

    (void) state;

    test_request(&req, &d, "gpt-4o");

    /* Saturday 2026-12-05 02:00 UTC: in Friday's night window */
    req.now_ms = (1796418000LL + 5 * 3600) * 1000;
    assert_true(matches(RULE("\"time_window\":{\"days\":[\"fri\"],"
                             "\"start\":\"22:00\",\"end\":\"06:00\"}"),
                        &req));
    assert_false(matches(RULE("\"time_window\":{\"days\":[\"sat\"],"
                              "\"start\":\"22:00\",\"end\":\"06:00\"}"),
                         &req));
    /* Friday 2026-12-04 02:00 UTC: Thursday's night, not Friday's */
    req.now_ms = (1796418000LL - 19 * 3600) * 1000;
    assert_false(matches(RULE("\"time_window\":{\"days\":[\"fri\"],"
                              "\"start\":\"22:00\",\"end\":\"06:00\"}"),
                         &req));
    assert_true(matches(RULE("\"time_window\":{\"days\":[\"thu\"],"
                             "\"start\":\"22:00\",\"end\":\"06:00\"}"),
                        &req));
    /* the end is not in it */
    req.now_ms = (1796418000LL + 9 * 3600) * 1000;       /* Sat 06:00 */
    assert_false(matches(RULE("\"time_window\":{\"days\":[\"fri\"],"
                              "\"start\":\"22:00\",\"end\":\"06:00\"}"),
                         &req));
}


/* ---- time zones -------------------------------------------------------- */

static void
local_is(const sp_tz_t *tz, int64_t unix_s, int weekday, int minute)
{
    int  wd, min;

    sp_tz_local(tz, unix_s * 1000, &wd, &min);

    if (wd != weekday || min != minute) {
        fail_msg("at %lld: weekday %d minute %d, expected %d %d",
                 (long long) unix_s, wd, min, weekday, minute);
    }
}


static void
test_route_tz_europe_paris_across_both_changes_of_2026(void **state)
{
    char      err[128];
    sp_tz_t  *tz;

    (void) state;

    tz = sp_tz_load(NULL, "Europe/Paris", 12, err, sizeof(err));
    if (tz == NULL) {
        fail_msg("Europe/Paris: %s", err);
    }

    /* Sunday 29 March: 02:00 CET becomes 03:00 CEST at 01:00 UTC */
    assert_int_equal(sp_tz_offset(tz, 1774745999), 3600);
    assert_int_equal(sp_tz_offset(tz, 1774746000), 7200);
    local_is(tz, 1774745999, 0, 1 * 60 + 59);
    local_is(tz, 1774746000, 0, 3 * 60);
    /* Sunday 25 October: 03:00 CEST becomes 02:00 CET at 01:00 UTC */
    assert_int_equal(sp_tz_offset(tz, 1792889999), 7200);
    assert_int_equal(sp_tz_offset(tz, 1792890000), 3600);
    local_is(tz, 1792889999, 0, 2 * 60 + 59);
    local_is(tz, 1792890000, 0, 2 * 60);
    /* Monday 5 January 2026 08:00 UTC is 09:00 in Paris */
    local_is(tz, 1767600000, 1, 9 * 60);
    /* far past the file's transitions: the footer's rule (2100) */
    assert_int_equal(sp_tz_offset(tz, 4118061600LL), 7200);   /* July */
    assert_int_equal(sp_tz_offset(tz, 4102444800LL), 3600);   /* January */

    sp_tz_free(tz);
}


static void
test_route_tz_america_new_york_across_both_changes_of_2026(void **state)
{
    char      err[128];
    sp_tz_t  *tz;

    (void) state;

    tz = sp_tz_load(NULL, "America/New_York", 16, err, sizeof(err));
    if (tz == NULL) {
        fail_msg("America/New_York: %s", err);
    }

    /* Sunday 8 March: 02:00 EST becomes 03:00 EDT at 07:00 UTC */
    assert_int_equal(sp_tz_offset(tz, 1772953199), -5 * 3600);
    assert_int_equal(sp_tz_offset(tz, 1772953200), -4 * 3600);
    local_is(tz, 1772953199, 0, 1 * 60 + 59);
    local_is(tz, 1772953200, 0, 3 * 60);
    /* Sunday 1 November: 02:00 EDT becomes 01:00 EST at 06:00 UTC */
    local_is(tz, 1793512799, 0, 1 * 60 + 59);
    local_is(tz, 1793512800, 0, 1 * 60);
    /* Friday 4 December 21:00 UTC: 16:00 */
    local_is(tz, 1796418000, 5, 16 * 60);
    /* before 1970: still a Friday and the right time */
    local_is(tz, -86400LL * 7 + 3600 * 12, 4, 7 * 60);

    sp_tz_free(tz);
}


/* a TZif v2 file without transitions: only its footer decides */
static sp_tz_t *
tz_from_footer(const char *footer)
{
    char            err[128];
    size_t          len, flen;
    sp_tz_t        *tz;
    unsigned char   file[512];

    memset(file, 0, sizeof(file));
    len = 0;

    /* v1 header and data: one type (offset 0), one abbreviation byte */
    memcpy(file, "TZif2", 5);
    file[39] = 1;       /* typecnt */
    file[43] = 1;       /* charcnt */
    len = 44 + 6 + 1;
    memcpy(file + len, file, 44);
    len += 44 + 6 + 1;
    flen = strlen(footer);
    file[len++] = '\n';
    memcpy(file + len, footer, flen);
    len += flen;
    file[len++] = '\n';

    tz = sp_tz_parse(file, len, err, sizeof(err));

    if (tz == NULL) {
        fail_msg("%s: %s", footer, err);
    }

    return tz;
}


static void
test_route_tz_footer_rules_alone(void **state)
{
    char      err[128];
    sp_tz_t  *tz;

    (void) state;

    /* a slim Paris: the same answers from the rule */
    tz = tz_from_footer("CET-1CEST,M3.5.0,M10.5.0/3");
    assert_int_equal(sp_tz_offset(tz, 1774745999), 3600);
    assert_int_equal(sp_tz_offset(tz, 1774746000), 7200);
    assert_int_equal(sp_tz_offset(tz, 1792889999), 7200);
    assert_int_equal(sp_tz_offset(tz, 1792890000), 3600);
    sp_tz_free(tz);

    /* New York */
    tz = tz_from_footer("EST5EDT,M3.2.0,M11.1.0");
    assert_int_equal(sp_tz_offset(tz, 1772953199), -5 * 3600);
    assert_int_equal(sp_tz_offset(tz, 1772953200), -4 * 3600);
    assert_int_equal(sp_tz_offset(tz, 1793512799), -4 * 3600);
    assert_int_equal(sp_tz_offset(tz, 1793512800), -5 * 3600);
    sp_tz_free(tz);

    /* the south: daylight time across the new year (Sydney) */
    tz = tz_from_footer("AEST-10AEDT,M10.1.0,M4.1.0/3");
    assert_int_equal(sp_tz_offset(tz, 1767600000), 11 * 3600);  /* Jan */
    assert_int_equal(sp_tz_offset(tz, 1784000000), 10 * 3600);  /* Jul */
    sp_tz_free(tz);

    /* quoted names, minutes, no daylight time */
    tz = tz_from_footer("<+0530>-5:30");
    assert_int_equal(sp_tz_offset(tz, 1767600000), 5 * 3600 + 1800);
    sp_tz_free(tz);

    /* all year daylight time, Julian days */
    tz = tz_from_footer("EST5EDT,0/0,J365/25");
    assert_int_equal(sp_tz_offset(tz, 1784000000), -4 * 3600);
    sp_tz_free(tz);

    assert_null(sp_tz_parse((const unsigned char *) "TZif", 4, err,
                            sizeof(err)));
}


static void
test_route_tz_names_stay_in_the_zoneinfo_directory(void **state)
{
    char      err[128];
    sp_tz_t  *tz;

    (void) state;

    assert_true(sp_tz_name_valid("Europe/Paris", 12));
    assert_true(sp_tz_name_valid("Etc/GMT+5", 9));
    assert_true(sp_tz_name_valid("America/Port-au-Prince", 22));
    assert_false(sp_tz_name_valid("", 0));
    assert_false(sp_tz_name_valid("/etc/passwd", 11));
    assert_false(sp_tz_name_valid("../etc/passwd", 13));
    assert_false(sp_tz_name_valid("Europe/..", 9));
    assert_false(sp_tz_name_valid("Europe/Paris ", 13));
    assert_false(sp_tz_name_valid("Europe\\Paris", 12));

    /* UTC works, with a file or without one */
    tz = sp_tz_load("/nonexistent", "UTC", 3, err, sizeof(err));
    assert_non_null(tz);
    assert_int_equal(sp_tz_offset(tz, 1774746000), 0);
    sp_tz_free(tz);

    tz = sp_tz_load(NULL, "UTC", 3, err, sizeof(err));
    assert_non_null(tz);
    local_is(tz, 1796418000, 5, 21 * 60);
    sp_tz_free(tz);

    /* a directory, a file that is not TZif */
    assert_null(sp_tz_load(NULL, "Europe", 6, err, sizeof(err)));
    assert_null(sp_tz_load(NULL, "zone.tab", 8, err, sizeof(err)));
}


/* ---- order, actions, explanations ------------------------------------ */

static void
test_route_first_match_wins_in_array_order(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    (void) state;

    test_request(&req, &d, "gpt-4o");

    evaluate("[{\"id\":\"rr_a\",\"conditions\":{\"model\":\"claude-*\"},"
             "\"action\":{\"type\":\"rewrite\",\"model\":\"a\"}},"
             "{\"id\":\"rr_b\",\"name\":\"second\",\"conditions\":{\"model\":"
             "\"gpt-*\"},\"action\":{\"type\":\"rewrite\",\"model\":\"b\"}},"
             "{\"id\":\"rr_c\",\"action\":{\"type\":\"rewrite\",\"model\":"
             "\"c\"}}]", &req, &out);

    assert_true(out.matched);
    assert_string_equal(out.rule_id, "rr_b");
    assert_string_equal(out.rule_name, "second");
    target_is(&out, 0, SP_PROVIDER_OPENAI, "b");
    assert_int_equal(out.ntargets, 1);

    test_request(&req, &d, "mistral-large");
    evaluate("[{\"id\":\"rr_a\",\"conditions\":{\"model\":\"claude-*\"},"
             "\"action\":{\"type\":\"rewrite\",\"model\":\"a\"}}]", &req,
             &out);
    assert_false(out.matched);
    assert_string_equal(out.rule_id, "");
    target_is(&out, 0, SP_PROVIDER_OPENAI, "mistral-large");
    explain_has(&out, "no rule matched");
}


static void
test_route_rewrite_explains_the_budget_threshold(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    static const char  rule[] =
        "[{\"id\":\"rr_1\",\"name\":\"cheap when 80% spent\",\"conditions\":"
        "{\"model\":\"gpt-4o\",\"budget_used_pct\":{\"gte\":80}},"
        "\"action\":{\"type\":\"rewrite\",\"model\":\"gpt-4o-mini\"}}]";

    (void) state;

    test_request(&req, &d, "gpt-4o");

    d.ppm = 825000;
    evaluate(rule, &req, &out);
    assert_true(out.matched);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o-mini");
    assert_int_equal(out.ntargets, 1);
    assert_int_equal(out.max_attempts, 1);
    assert_int_equal(out.cooldown_failures,
                     SP_ROUTE_DEFAULT_COOLDOWN_FAILURES);
    assert_int_equal(out.cooldown_ms,
                     SP_ROUTE_DEFAULT_COOLDOWN_SECONDS * 1000);
    explain_has(&out, "rule rr_1 \"cheap when 80% spent\": model gpt-4o "
                "matches \"gpt-4o\", budget used 82.5% >= 80%");
    explain_has(&out, "-> openai/gpt-4o-mini");

    /* exactly at the threshold: 80.000% is 800000 ppm */
    d.ppm = 800000;
    evaluate(rule, &req, &out);
    assert_true(out.matched);
    explain_has(&out, "budget used 80% >= 80%");

    d.ppm = 799999;
    evaluate(rule, &req, &out);
    assert_false(out.matched);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");

    /* a rewrite to the model as sent is still a route */
    evaluate("[{\"action\":{\"type\":\"rewrite\",\"model\":\"gpt-4o\"}}]",
             &req, &out);
    assert_true(out.matched);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");
    explain_has(&out, "rule #1: no conditions");
}


static void
test_route_provider_action_maps_models(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    static const char  mapped[] =
        "[{\"id\":\"rr_map\",\"action\":{\"type\":\"provider\",\"provider\":"
        "\"anthropic\",\"model_map\":{\"gpt-4o\":\"claude-sonnet-4-5\","
        "\"gpt-4o-mini\":\"claude-haiku-4-5\"}}},"
        "{\"id\":\"rr_star\",\"action\":{\"type\":\"provider\",\"provider\":"
        "\"google\",\"model_map\":{\"*\":\"gemini-2.5-flash\","
        "\"o3\":\"gemini-2.5-pro\"}}}]";

    (void) state;

    test_request(&req, &d, "gpt-4o-mini");
    evaluate(mapped, &req, &out);
    assert_string_equal(out.rule_id, "rr_map");
    target_is(&out, 0, SP_PROVIDER_ANTHROPIC, "claude-haiku-4-5");

    /* unmapped: the rule is skipped, the next one's "*" takes it */
    test_request(&req, &d, "gpt-3.5-turbo");
    evaluate(mapped, &req, &out);
    assert_string_equal(out.rule_id, "rr_star");
    target_is(&out, 0, SP_PROVIDER_GOOGLE, "gemini-2.5-flash");
    explain_has(&out, "rule rr_map skipped: its model_map has no entry for "
                "gpt-3.5-turbo");

    test_request(&req, &d, "o3");
    evaluate(mapped, &req, &out);
    target_is(&out, 0, SP_PROVIDER_GOOGLE, "gemini-2.5-pro");

    evaluate("[{\"action\":{\"type\":\"provider\",\"provider\":\"mistral\","
             "\"model\":\"mistral-large-latest\"}}]", &req, &out);
    target_is(&out, 0, SP_PROVIDER_MISTRAL, "mistral-large-latest");
}


static void
test_route_fallback_action_puts_the_request_first(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    (void) state;

    test_request(&req, &d, "gpt-4o");
    evaluate("[{\"id\":\"rr_fb\",\"action\":{\"type\":\"fallback\","
             "\"targets\":[{\"provider\":\"anthropic\",\"model\":"
             "\"claude-sonnet-4-5\"},{\"provider\":\"google\",\"model\":"
             "\"gemini-2.5-pro\"}]},\"fallback\":[{\"provider\":\"mistral\","
             "\"model\":\"mistral-large\"}],\"attempt_timeout_ms\":15000,"
             "\"cooldown\":{\"failures\":5,\"seconds\":60}}]", &req, &out);

    assert_true(out.matched);
    assert_int_equal(out.ntargets, 4);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");
    target_is(&out, 1, SP_PROVIDER_ANTHROPIC, "claude-sonnet-4-5");
    target_is(&out, 2, SP_PROVIDER_GOOGLE, "gemini-2.5-pro");
    target_is(&out, 3, SP_PROVIDER_MISTRAL, "mistral-large");
    assert_int_equal(out.max_attempts, 4);
    assert_int_equal(out.attempt_timeout_ms, 15000);
    assert_int_equal(out.cooldown_failures, 5);
    assert_int_equal(out.cooldown_ms, 60000);
    explain_has(&out, "-> openai/gpt-4o, then anthropic/claude-sonnet-4-5, "
                "then google/gemini-2.5-pro, then mistral/mistral-large");

    /* max_attempts caps the attempts, never above the targets */
    evaluate("[{\"action\":{\"type\":\"rewrite\",\"model\":\"m\"},"
             "\"fallback\":[{\"provider\":\"anthropic\",\"model\":\"c\"},"
             "{\"provider\":\"google\",\"model\":\"g\"}],"
             "\"max_attempts\":2}]", &req, &out);
    assert_int_equal(out.ntargets, 3);
    assert_int_equal(out.max_attempts, 2);

    evaluate("[{\"action\":{\"type\":\"rewrite\",\"model\":\"m\"},"
             "\"fallback\":[{\"provider\":\"anthropic\",\"model\":\"c\"}],"
             "\"max_attempts\":8}]", &req, &out);
    assert_int_equal(out.ntargets, 2);
    assert_int_equal(out.max_attempts, 2);
}


static void
test_route_unusable_targets_skip_the_rule_or_leave_the_chain(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    static const char  rules[] =
        "[{\"id\":\"rr_x\",\"action\":{\"type\":\"provider\",\"provider\":"
        "\"anthropic\",\"model\":\"claude-sonnet-4-5\"}},"
        "{\"id\":\"rr_y\",\"action\":{\"type\":\"rewrite\",\"model\":"
        "\"gpt-4o-mini\"},\"fallback\":[{\"provider\":\"anthropic\","
        "\"model\":\"claude-haiku-4-5\"},{\"provider\":\"google\","
        "\"model\":\"gemini-2.5-flash\"}]}]";

    (void) state;

    test_request(&req, &d, "gpt-4o");
    d.unusable = SP_PROVIDER_ANTHROPIC;
    evaluate(rules, &req, &out);

    assert_true(out.matched);
    assert_string_equal(out.rule_id, "rr_y");
    explain_has(&out, "rule rr_x skipped: anthropic does not take n > 1");
    assert_int_equal(out.ntargets, 2);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o-mini");
    target_is(&out, 1, SP_PROVIDER_GOOGLE, "gemini-2.5-flash");
    explain_has(&out, "anthropic/claude-haiku-4-5 left out: anthropic does "
                "not take n > 1");
    assert_int_equal(out.max_attempts, 2);

    /* every rule skipped: the request as sent */
    d.unusable = SP_PROVIDER_OPENAI;
    evaluate(rules, &req, &out);
    assert_true(out.matched);
    assert_string_equal(out.rule_id, "rr_x");

    d.unusable = SP_PROVIDER_ANTHROPIC;
    evaluate("[{\"id\":\"rr_x\",\"action\":{\"type\":\"provider\","
             "\"provider\":\"anthropic\",\"model\":\"c\"}}]", &req, &out);
    assert_false(out.matched);
    assert_int_equal(out.ntargets, 1);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");
    explain_has(&out, "rule rr_x skipped: anthropic does not take n > 1; "
                "no rule matched");
}


#define SPLIT                                                                 \
    "[{\"id\":\"rr_s\",\"action\":{\"type\":\"split\",%s\"targets\":["      \
    "{\"provider\":\"openai\",\"model\":\"gpt-4o\",\"weight\":70},"          \
    "{\"provider\":\"anthropic\",\"model\":\"claude-sonnet-4-5\","          \
    "\"weight\":30}]},\"fallback\":[{\"provider\":\"google\",\"model\":"     \
    "\"gemini-2.5-pro\"}]}]"

static void
test_route_split_follows_its_weights(void **state)
{
    int                  i, first;
    char                 json[512];
    uint64_t             x;
    sp_route_set_t      *set;
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    (void) state;

    snprintf(json, sizeof(json), SPLIT, "");
    set = compile_ok(json);
    test_request(&req, &d, "gpt-4o");

    first = 0;
    x = 88172645463325252ULL;

    for (i = 0; i < 10000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        req.random = x;
        sp_route_evaluate(set, &req, &out);

        assert_true(out.matched);
        assert_int_equal(out.ntargets, 2);
        target_is(&out, 1, SP_PROVIDER_GOOGLE, "gemini-2.5-pro");
        first += (out.targets[0].provider == SP_PROVIDER_OPENAI);
    }

    /* within 2% of 70/30 */
    if (first < 6800 || first > 7200) {
        fail_msg("gpt-4o took %d of 10000", first);
    }

    req.random = 69;
    sp_route_evaluate(set, &req, &out);
    target_is(&out, 0, SP_PROVIDER_OPENAI, "gpt-4o");
    req.random = 70;
    sp_route_evaluate(set, &req, &out);
    target_is(&out, 0, SP_PROVIDER_ANTHROPIC, "claude-sonnet-4-5");
    explain_has(&out, "-> anthropic/claude-sonnet-4-5 (split), then "
                "google/gemini-2.5-pro");

    sp_route_free(set);

    /* a weight of 0 is never chosen */
    test_request(&req, &d, "gpt-4o");
    set = compile_ok("[{\"action\":{\"type\":\"split\",\"targets\":["
                     "{\"provider\":\"openai\",\"model\":\"a\","
                     "\"weight\":0},{\"provider\":\"openai\",\"model\":"
                     "\"b\",\"weight\":5}]}}]");

    for (i = 0; i < 100; i++) {
        req.random = (uint64_t) i * 7919;
        sp_route_evaluate(set, &req, &out);
        target_is(&out, 0, SP_PROVIDER_OPENAI, "b");
    }

    sp_route_free(set);
}


static void
test_route_sticky_split_follows_the_trace_id(void **state)
{
    int                  i, first;
    char                 json[512], trace[40];
    sp_route_set_t      *set;
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out, again;

    (void) state;

    snprintf(json, sizeof(json), SPLIT, "\"sticky\":true,");
    set = compile_ok(json);
    test_request(&req, &d, "gpt-4o");

    first = 0;

    for (i = 0; i < 2000; i++) {
        snprintf(trace, sizeof(trace), "%032x", i * 2654435761u);
        req.trace_id = sp_str_from(trace);
        req.random = 1;
        sp_route_evaluate(set, &req, &out);

        /* the same trace id, whatever the random value: the same target */
        req.random = 123456789;
        sp_route_evaluate(set, &req, &again);
        assert_int_equal(out.targets[0].provider, again.targets[0].provider);
        assert_string_equal(out.targets[0].model, again.targets[0].model);

        first += (out.targets[0].provider == SP_PROVIDER_OPENAI);
    }

    if (first < 1300 || first > 1500) {
        fail_msg("gpt-4o took %d of 2000 trace ids", first);
    }

    explain_has(&out, "sticky by trace id");

    sp_route_free(set);
}


static void
test_route_lazy_values_are_asked_only_when_needed_and_once(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    (void) state;

    test_request(&req, &d, "gpt-4o");
    d.tokens = 10;
    d.ppm = 100000;

    /* the model does not match: neither value is asked */
    evaluate("[{\"conditions\":{\"model\":\"claude-*\",\"prompt_tokens\":"
             "{\"min\":1},\"budget_used_pct\":{\"gte\":1}}," RW "}]", &req,
             &out);
    assert_false(out.matched);
    assert_int_equal(d.tokens_calls, 0);
    assert_int_equal(d.budget_calls, 0);

    /* no rule needs them */
    evaluate(RULE("\"model\":\"gpt-4o\""), &req, &out);
    assert_int_equal(d.tokens_calls, 0);
    assert_int_equal(d.budget_calls, 0);

    /* three rules need them: asked once each (per budget) */
    evaluate("[{\"conditions\":{\"prompt_tokens\":{\"min\":100},"
             "\"budget_used_pct\":{\"gte\":90}}," RW "},"
             "{\"conditions\":{\"prompt_tokens\":{\"min\":50},"
             "\"budget_used_pct\":{\"gte\":50}}," RW "},"
             "{\"conditions\":{\"prompt_tokens\":{\"min\":1},"
             "\"budget_used_pct\":{\"gte\":5}}," RW "}]", &req, &out);
    assert_true(out.matched);
    explain_has(&out, "rule #3");
    explain_has(&out, "prompt tokens 10 >= 1");
    assert_int_equal(d.tokens_calls, 1);
    assert_int_equal(d.budget_calls, 1);

    /* two budgets: one ask each */
    d.budget_calls = 0;
    d.ppm_named = 950000;
    evaluate("[{\"conditions\":{\"budget_used_pct\":{\"gte\":99}}," RW "},"
             "{\"conditions\":{\"budget_used_pct\":{\"gte\":99,"
             "\"budget_id\":\"" TEST_BUDGET "\"}}," RW "},"
             "{\"conditions\":{\"budget_used_pct\":{\"gte\":90,"
             "\"budget_id\":\"" TEST_BUDGET "\"}}," RW "}]", &req, &out);
    assert_true(out.matched);
    explain_has(&out, "budget " TEST_BUDGET " used 95% >= 90%");
    assert_int_equal(d.budget_calls, 2);

    /* without callbacks, their conditions do not hold */
    req.prompt_tokens = NULL;
    req.budget_used_ppm = NULL;
    req.usable = NULL;
    assert_false(matches(RULE("\"prompt_tokens\":{\"min\":0}"), &req));
    assert_false(matches(RULE("\"budget_used_pct\":{\"gte\":0}"), &req));
    assert_true(matches(RULE("\"model\":\"gpt-4o\""), &req));
}


static void
test_route_explains_every_condition(void **state)
{
    test_data_t          d;
    sp_route_request_t   req;
    sp_route_decision_t  out;

    (void) state;

    test_request(&req, &d, "gpt-4o");
    req.agent_id = sp_str_from("agt_1");
    req.project = sp_str_from("web");
    req.has_tools = 1;
    d.tokens = 1200;
    d.ppm = 825000;

    evaluate("[{\"id\":\"rr_all\",\"conditions\":{\"model\":\"gpt-4o*\","
             "\"provider\":\"openai\",\"api_key_id\":"
             "\"key_aaaaaaaaaaaaaaaaaaaaaaaa\",\"agent_id\":\"agt_1\","
             "\"department\":\"marketing\",\"project\":\"web\","
             "\"prompt_tokens\":{\"min\":0,\"max\":8000},\"time_window\":"
             "{\"timezone\":\"Europe/Paris\",\"start\":\"20:00\",\"end\":"
             "\"23:30\"},\"budget_used_pct\":{\"gte\":80,\"lt\":90},"
             "\"has_tools\":true,\"has_images\":false}," RW "}]", &req,
             &out);

    assert_true(out.matched);
    explain_has(&out, "model gpt-4o matches \"gpt-4o*\"");
    explain_has(&out, "provider openai");
    explain_has(&out, "api key key_aaaaaaaaaaaaaaaaaaaaaaaa");
    explain_has(&out, "agent agt_1");
    explain_has(&out, "department marketing");
    explain_has(&out, "project web");
    explain_has(&out, "prompt tokens 1200 in 0..8000");
    explain_has(&out, "Fri 22:00 in Europe/Paris within 20:00-23:30");
    explain_has(&out, "budget used 82.5% >= 80% < 90%");
    explain_has(&out, "has tools");
    explain_has(&out, "no images");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_route_glob_matches_stars_marks_and_sets),
        cmocka_unit_test(test_route_glob_refuses_malformed_globs),
        cmocka_unit_test(test_route_glob_has_no_exponential_backtracking),
        cmocka_unit_test(test_route_validate_accepts_every_documented_member),
        cmocka_unit_test(test_route_validate_names_the_member_of_every_error),
        cmocka_unit_test(
            test_route_compile_keeps_invalid_rules_as_never_matching),
        cmocka_unit_test(test_route_each_condition_holds_and_fails),
        cmocka_unit_test(
            test_route_time_window_past_midnight_belongs_to_its_first_day),
        cmocka_unit_test(
            test_route_tz_europe_paris_across_both_changes_of_2026),
        cmocka_unit_test(
            test_route_tz_america_new_york_across_both_changes_of_2026),
        cmocka_unit_test(test_route_tz_footer_rules_alone),
        cmocka_unit_test(test_route_tz_names_stay_in_the_zoneinfo_directory),
        cmocka_unit_test(test_route_first_match_wins_in_array_order),
        cmocka_unit_test(test_route_rewrite_explains_the_budget_threshold),
        cmocka_unit_test(test_route_provider_action_maps_models),
        cmocka_unit_test(test_route_fallback_action_puts_the_request_first),
        cmocka_unit_test(
            test_route_unusable_targets_skip_the_rule_or_leave_the_chain),
        cmocka_unit_test(test_route_split_follows_its_weights),
        cmocka_unit_test(test_route_sticky_split_follows_the_trace_id),
        cmocka_unit_test(
            test_route_lazy_values_are_asked_only_when_needed_and_once),
        cmocka_unit_test(test_route_explains_every_condition),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
