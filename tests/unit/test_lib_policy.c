/*
 * libspendpol policies: validation (every error's member path), each
 * kind blocking, warning and logging, scopes, the PII policy's threshold,
 * entity filter and per-entity actions, redaction spans from PII and from
 * patterns, fail-closed pattern limits, lazy worst-case cost, and the
 * decision's lists and message.
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

#include "sp_policy.h"


#define KEY_A   "key_aaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B   "key_bbbbbbbbbbbbbbbbbbbbbbbb"
#define AGENT   "agt_cccccccccccccccccccccccc"
#define ORG     "\"scope\":{\"type\":\"organization\"}"

/* 2026-12-02 (a Wednesday) 10:30 UTC */
#define WED_1030_MS  1796207400000LL

#define CARD    "4111 1111 1111 1111"
#define EMAIL   "alice@example.com"


/* ---- a request ----------------------------------------------------- */

typedef struct {
    int64_t  worst;
    int      worst_calls;
} test_data_t;


static int64_t
test_worst(void *data)
{
    test_data_t  *d = data;

    d->worst_calls++;

    return d->worst;
}


static char  test_body[4096];


static void
test_request(sp_policy_request_t *req, test_data_t *data, const char *model,
    const char *text)
{
    memset(req, 0, sizeof(*req));
    memset(data, 0, sizeof(*data));

    snprintf(test_body, sizeof(test_body), "{\"model\":\"%s\",\"messages\":"
             "[{\"role\":\"user\",\"content\":\"%s\"}]}", model, text);

    req->provider = SP_PROVIDER_OPENAI;
    req->model = sp_str_from(model);
    req->api_key_id = sp_str_from(KEY_A);
    req->agent_id = sp_str_from("");
    req->department = sp_str_from("");
    req->project = sp_str_from("");
    req->max_tokens = -1;
    req->now_ms = WED_1030_MS;
    req->body = test_body;
    req->body_len = strlen(test_body);
    req->worst_case_nano = test_worst;
    req->data = data;
    data->worst = -1;
}


static sp_policy_set_t *
compile(const char *json)
{
    char              err[256], invalid[256];
    sp_policy_set_t  *set;

    set = sp_policy_compile(json, strlen(json), err, sizeof(err));

    if (set == NULL) {
        fail_msg("compile: %s", err);
    }

    if (sp_policy_invalid(set, invalid, sizeof(invalid)) != 0) {
        fail_msg("an invalid policy: %s", invalid);
    }

    return set;
}


static int
evaluate(const char *json, const sp_policy_request_t *req,
    sp_policy_decision_t *d)
{
    int               rc;
    sp_policy_set_t  *set;

    set = compile(json);
    rc = sp_policy_evaluate(set, req, d);
    sp_policy_free(set);

    assert_int_equal(rc, SP_OK);

    return d->decision;
}


static size_t
offset_of(const char *s)
{
    const char  *p = strstr(test_body, s);

    assert_non_null(p);

    return (size_t) (p - test_body);
}


#define POLICY(id, kind, action, rest)                                       \
    "{\"id\":\"" id "\",\"name\":\"" id " name\",\"kind\":\"" kind "\","     \
    ORG ",\"action\":\"" action "\"" rest "}"


/* ---- validation ---------------------------------------------------- */

static void
valid(const char *json)
{
    int   rc;
    char  field[96], err[256];

    rc = sp_policy_validate(json, strlen(json), field, sizeof(field), err,
                            sizeof(err));

    if (rc != SP_OK) {
        fail_msg("%s: %s: %s", json, field, err);
    }
}


static void
invalid(const char *json, const char *want_field, const char *want_err)
{
    int   rc;
    char  field[96], err[256];

    rc = sp_policy_validate(json, strlen(json), field, sizeof(field), err,
                            sizeof(err));

    if (rc != SP_ERROR) {
        fail_msg("accepted: %s", json);
    }

    if (strcmp(field, want_field) != 0 || strstr(err, want_err) == NULL) {
        fail_msg("%s: got %s: %s; want %s: ...%s...", json, field, err,
                 want_field, want_err);
    }
}


static void
test_policy_validate_accepts_each_kind(void **state)
{
    valid(POLICY("pol_1", "model", "block",
                 ",\"allow_models\":[\"gpt-4o*\",\"claude-[a-z]*\"],"
                 "\"deny_providers\":[\"google\"]"));
    valid(POLICY("pol_2", "limits", "warn",
                 ",\"max_tokens\":4000,\"require_max_tokens\":true,"
                 "\"max_cost_usd\":\"0.50\",\"code\":\"too_big\""));
    valid(POLICY("pol_3", "limits", "log", ",\"max_cost_usd\":0.25"));
    valid(POLICY("pol_4", "attribution", "block", ",\"require\":\"both\""));
    valid(POLICY("pol_5", "pii", "redact",
                 ",\"threshold\":0.5,\"entities\":{\"card\":\"block\","
                 "\"email\":\"log\"},\"scan_responses\":true"));
    valid(POLICY("pol_6", "pii", "warn", ",\"entities\":[\"iban\"]"));
    valid(POLICY("pol_7", "pattern", "redact",
                 ",\"patterns\":[\"secret-\\\\d+\"],"
                 "\"case_insensitive\":true"));
    valid(POLICY("pol_8", "time_window", "block",
                 ",\"timezone\":\"Europe/Paris\",\"days\":[\"mon\",\"fri\"],"
                 "\"start\":\"09:00\",\"end\":\"18:00\""));
    valid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"either\","
          "\"scope\":{\"type\":\"api_key\",\"value\":\"" KEY_A "\"},"
          "\"action\":\"warn\",\"enabled\":false,\"created_at\":\"x\","
          "\"updated_at\":\"y\"}");
}


static void
test_policy_validate_names_the_member_on_every_error(void **state)
{
    invalid("[", "", "expected a JSON policy object");
    invalid("[]", "", "expected a policy object");
    invalid("{\"name\":\"n\"," ORG ",\"action\":\"block\"}", "kind",
            "expected model, limits");
    invalid(POLICY("p", "model", "block", ",\"colour\":1"), "colour",
            "unknown member");
    invalid(POLICY("p", "model", "block", ",\"max_tokens\":1"), "max_tokens",
            "belongs to limits policies");
    invalid("{\"kind\":\"attribution\",\"require\":\"both\"," ORG
            ",\"action\":\"block\"}", "name", "expected a name");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"action\":\"block\"}", "scope", "expected a scope");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"scope\":{\"type\":\"team\"},\"action\":\"block\"}",
            "scope.type", "organization, api_key");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"scope\":{\"type\":\"api_key\",\"value\":\"k\"},"
            "\"action\":\"block\"}", "scope.value", "expected");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"scope\":{\"type\":\"department\"},\"action\":\"block\"}",
            "scope.value", "expected the department");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"scope\":{\"type\":\"organization\",\"value\":\"x\"},"
            "\"action\":\"block\"}", "scope.value", "takes none");
    invalid("{\"name\":\"n\",\"kind\":\"attribution\",\"require\":\"both\","
            "\"scope\":{\"type\":\"organization\",\"v\":\"x\"},"
            "\"action\":\"block\"}", "scope", "unknown member");
    invalid(POLICY("p", "attribution", "deny", ",\"require\":\"both\""),
            "action", "expected an action");
    invalid(POLICY("p", "model", "redact", ",\"deny_models\":[\"x\"]"),
            "action", "redact applies only to pii and pattern");
    invalid(POLICY("p", "attribution", "warn", ",\"require\":\"both\","
                   "\"code\":\"Bad-Code\""), "code", "a-z, 0-9");
    invalid(POLICY("p", "attribution", "warn", ",\"require\":\"team\""),
            "require", "department, project, either or both");
    invalid(POLICY("p", "attribution", "warn", ",\"require\":\"both\","
                   "\"enabled\":\"yes\""), "enabled", "true or false");

    invalid(POLICY("p", "model", "block", ""), "allow_models",
            "at least one of");
    invalid(POLICY("p", "model", "block", ",\"allow_models\":[]"),
            "allow_models", "array of 1 to");
    invalid(POLICY("p", "model", "block", ",\"deny_models\":[\"a\","
                   "\"gpt-[4\"]"), "deny_models[1]", "balanced brackets");
    invalid(POLICY("p", "model", "block", ",\"allow_providers\":"
                   "[\"openai\",\"acme\"]"), "allow_providers[1]",
            "expected a provider");

    invalid(POLICY("p", "limits", "block", ""), "max_tokens",
            "expected max_tokens, max_cost_usd");
    invalid(POLICY("p", "limits", "block", ",\"max_tokens\":0"),
            "max_tokens", "from 1 to");
    invalid(POLICY("p", "limits", "block", ",\"max_cost_usd\":\"1.2.3\""),
            "max_cost_usd", "at most 9 decimals");
    invalid(POLICY("p", "limits", "block", ",\"max_cost_usd\":"
                   "0.1234567891"), "max_cost_usd", "cannot be read");
    invalid(POLICY("p", "limits", "block", ",\"max_cost_usd\":\"0\""),
            "max_cost_usd", "more than 0");
    invalid(POLICY("p", "limits", "block", ",\"max_cost_usd\":true"),
            "max_cost_usd", "decimal string");
    invalid(POLICY("p", "limits", "block", ",\"max_tokens\":5,"
                   "\"require_max_tokens\":1"), "require_max_tokens",
            "true or false");

    invalid(POLICY("p", "pii", "block", ",\"threshold\":1.5"), "threshold",
            "from 0 to 1");
    invalid(POLICY("p", "pii", "block", ",\"threshold\":0.1234"),
            "threshold", "at most 3 decimals");
    invalid(POLICY("p", "pii", "block", ",\"entities\":{\"cc\":\"block\"}"),
            "entities.cc", "expected an entity type");
    invalid(POLICY("p", "pii", "block", ",\"entities\":{\"card\":\"nope\"}"),
            "entities.card", "expected an action");
    invalid(POLICY("p", "pii", "block", ",\"entities\":[\"card\",\"x\"]"),
            "entities[1]", "expected an entity type");
    invalid(POLICY("p", "pii", "block", ",\"entities\":[]"), "entities",
            "one or more");
    invalid(POLICY("p", "pii", "block", ",\"entities\":\"card\""),
            "entities", "an object of types and actions");
    invalid(POLICY("p", "pii", "block", ",\"scan_responses\":\"no\""),
            "scan_responses", "true or false");

    invalid(POLICY("p", "pattern", "block", ""), "patterns",
            "array of 1 to 32");
    invalid(POLICY("p", "pattern", "block", ",\"patterns\":[\"\"]"),
            "patterns[0]", "1 to 1024 bytes");
    invalid(POLICY("p", "pattern", "block", ",\"patterns\":[\"ok\",1]"),
            "patterns[1]", "1 to 1024 bytes");
    invalid(POLICY("p", "pattern", "block", ",\"patterns\":[\"a\"],"
                   "\"case_insensitive\":\"yes\""), "case_insensitive",
            "true or false");

    invalid(POLICY("p", "time_window", "block", ",\"timezone\":\"Mars/Base\""),
            "timezone", "IANA time zone");
    invalid(POLICY("p", "time_window", "block", ",\"timezone\":\"../etc\""),
            "timezone", "IANA time zone");
    invalid(POLICY("p", "time_window", "block", ",\"days\":[\"mon\",\"x\"]"),
            "days[1]", "expected a day");
    invalid(POLICY("p", "time_window", "block", ",\"start\":\"9:00\""),
            "start", "HH:MM");
    invalid(POLICY("p", "time_window", "block", ",\"end\":\"24:01\""),
            "end", "HH:MM");
}


static void
test_policy_invalid_regex_gives_pcre2_message_and_offset(void **state)
{
    invalid(POLICY("p", "pattern", "block",
                   ",\"patterns\":[\"fine\",\"ab(cd\"]"),
            "patterns[1]", "missing closing parenthesis at offset 5");
    invalid(POLICY("p", "pattern", "block", ",\"patterns\":[\"a{2,1}\"]"),
            "patterns[0]", "at offset");
}


static void
test_policy_compile_counts_and_names_invalid_policies(void **state)
{
    char              err[256];
    sp_policy_set_t  *set;

    set = sp_policy_compile("[" POLICY("pol_ok", "attribution", "warn",
                                       ",\"require\":\"both\"") ","
                            POLICY("pol_bad", "pattern", "block",
                                   ",\"patterns\":[\"(\"]") "]",
                            strlen("[" POLICY("pol_ok", "attribution",
                                   "warn", ",\"require\":\"both\"") ","
                                   POLICY("pol_bad", "pattern", "block",
                                   ",\"patterns\":[\"(\"]") "]"),
                            err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(sp_policy_count(set), 2);
    assert_int_equal(sp_policy_invalid(set, err, sizeof(err)), 1);
    assert_non_null(strstr(err, "policy 2 pol_bad: patterns[0]"));
    sp_policy_free(set);

    assert_null(sp_policy_compile("{}", 2, err, sizeof(err)));
    assert_non_null(strstr(err, "not a JSON array"));
    assert_null(sp_policy_compile("[", 1, err, sizeof(err)));
    assert_non_null(strstr(err, "not JSON"));
}


/* ---- each kind ------------------------------------------------------ */

static void
test_policy_model_blocks_warns_and_logs(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "hello");

    assert_int_equal(evaluate("[" POLICY("pol_m", "model", "block",
                              ",\"deny_models\":[\"gpt-4*\"]") "]", &req,
                              &d), SP_POLICY_BLOCK);
    assert_int_equal(d.nmatches, 1);
    assert_int_equal(d.blocked_by, 0);
    assert_int_equal(d.matches[0].kind, SP_POLICY_KIND_MODEL);
    assert_string_equal(d.matches[0].code, "model_not_allowed");
    assert_string_equal(d.matches[0].reason,
                        "model gpt-4o matches deny glob \"gpt-4*\"");

    assert_int_equal(evaluate("[" POLICY("pol_m", "model", "warn",
                              ",\"allow_models\":[\"claude-*\"]") "]", &req,
                              &d), SP_POLICY_WARN);
    assert_string_equal(d.warnings, "model_not_allowed");
    assert_int_equal(d.blocked_by, -1);

    assert_int_equal(evaluate("[" POLICY("pol_m", "model", "log",
                              ",\"deny_providers\":[\"openai\"]") "]", &req,
                              &d), SP_POLICY_LOG);
    assert_string_equal(d.warnings, "");
    assert_string_equal(d.policy_ids, "pol_m");
    assert_string_equal(d.matches[0].reason, "provider openai is denied");

    /* allowed: no match */
    assert_int_equal(evaluate("[" POLICY("pol_m", "model", "block",
                              ",\"allow_models\":[\"gpt-4o\"],"
                              "\"allow_providers\":[\"openai\"]") "]", &req,
                              &d), SP_POLICY_PASS);
    assert_int_equal(d.nmatches, 0);
    assert_string_equal(d.policy_ids, "");
}


static void
test_policy_scopes_match_their_value_only(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

#define SCOPED(type, value)                                                  \
    "[{\"id\":\"pol_s\",\"name\":\"s\",\"kind\":\"model\",\"action\":"       \
    "\"block\",\"deny_models\":[\"*\"],\"scope\":{\"type\":\"" type "\","    \
    "\"value\":\"" value "\"}}]"

    test_request(&req, &data, "gpt-4o", "hello");
    req.agent_id = sp_str_from(AGENT);
    req.department = sp_str_from("research");

    assert_int_equal(evaluate(SCOPED("api_key", KEY_A), &req, &d),
                     SP_POLICY_BLOCK);
    assert_int_equal(evaluate(SCOPED("api_key", KEY_B), &req, &d),
                     SP_POLICY_PASS);
    assert_int_equal(evaluate(SCOPED("agent", AGENT), &req, &d),
                     SP_POLICY_BLOCK);
    assert_int_equal(evaluate(SCOPED("department", "research"), &req, &d),
                     SP_POLICY_BLOCK);
    assert_int_equal(evaluate(SCOPED("department", "sales"), &req, &d),
                     SP_POLICY_PASS);
    assert_int_equal(evaluate(SCOPED("project", "research"), &req, &d),
                     SP_POLICY_PASS);

    /* a disabled policy never matches */
    assert_int_equal(evaluate("[" POLICY("pol_d", "model", "block",
                              ",\"deny_models\":[\"*\"],\"enabled\":false")
                              "]", &req, &d), SP_POLICY_PASS);
#undef SCOPED
}


static void
test_policy_limits_max_tokens_and_required_output_limit(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "hello");
    req.max_tokens = 5000;

    assert_int_equal(evaluate("[" POLICY("pol_l", "limits", "block",
                              ",\"max_tokens\":4000") "]", &req, &d),
                     SP_POLICY_BLOCK);
    assert_string_equal(d.matches[0].reason,
                        "max_tokens 5000 above the limit 4000");
    assert_string_equal(d.matches[0].code, "limit_exceeded");

    req.max_tokens = 4000;
    assert_int_equal(evaluate("[" POLICY("pol_l", "limits", "block",
                              ",\"max_tokens\":4000") "]", &req, &d),
                     SP_POLICY_PASS);

    req.max_tokens = -1;
    assert_int_equal(evaluate("[" POLICY("pol_l", "limits", "block",
                              ",\"max_tokens\":4000") "]", &req, &d),
                     SP_POLICY_PASS);
    assert_int_equal(evaluate("[" POLICY("pol_l", "limits", "warn",
                              ",\"max_tokens\":4000,"
                              "\"require_max_tokens\":true") "]", &req, &d),
                     SP_POLICY_WARN);
    assert_non_null(strstr(d.matches[0].reason, "no output limit"));
    /* no max_cost_usd: the worst case is never asked */
    assert_int_equal(data.worst_calls, 0);
}


static void
test_policy_worst_case_is_asked_once_and_only_when_needed(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    const char  *two = "["
        POLICY("pol_a", "limits", "warn", ",\"max_cost_usd\":\"0.50\"") ","
        POLICY("pol_b", "limits", "block", ",\"max_cost_usd\":1") "]";

    test_request(&req, &data, "gpt-4o", "hello");
    data.worst = 750000000;                       /* $0.75 */

    assert_int_equal(evaluate(two, &req, &d), SP_POLICY_WARN);
    assert_int_equal(data.worst_calls, 1);
    assert_string_equal(d.matches[0].reason,
                        "worst-case cost $0.750000 above the limit "
                        "$0.500000");

    /* exactly the limit does not violate; an unpriced model neither */
    data.worst = 500000000;
    data.worst_calls = 0;
    assert_int_equal(evaluate(two, &req, &d), SP_POLICY_PASS);
    assert_int_equal(data.worst_calls, 1);

    data.worst = -1;
    data.worst_calls = 0;
    assert_int_equal(evaluate(two, &req, &d), SP_POLICY_PASS);

    /* a cost policy out of scope: never asked */
    data.worst_calls = 0;
    assert_int_equal(evaluate("[{\"id\":\"pol_c\",\"name\":\"c\","
                              "\"kind\":\"limits\",\"action\":\"block\","
                              "\"max_cost_usd\":\"0.01\",\"scope\":{\"type\":"
                              "\"api_key\",\"value\":\"" KEY_B "\"}}]",
                              &req, &d), SP_POLICY_PASS);
    assert_int_equal(data.worst_calls, 0);
}


static void
test_policy_attribution_requires_department_or_project(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "hello");

    assert_int_equal(evaluate("[" POLICY("pol_a", "attribution", "block",
                              ",\"require\":\"either\"") "]", &req, &d),
                     SP_POLICY_BLOCK);
    assert_string_equal(d.matches[0].code, "attribution_missing");

    req.project = sp_str_from("apollo");
    assert_int_equal(evaluate("[" POLICY("pol_a", "attribution", "block",
                              ",\"require\":\"either\"") "]", &req, &d),
                     SP_POLICY_PASS);
    assert_int_equal(evaluate("[" POLICY("pol_a", "attribution", "warn",
                              ",\"require\":\"both\"") "]", &req, &d),
                     SP_POLICY_WARN);
    assert_string_equal(d.matches[0].reason, "no department");
    assert_int_equal(evaluate("[" POLICY("pol_a", "attribution", "log",
                              ",\"require\":\"department\"") "]", &req, &d),
                     SP_POLICY_LOG);
}


static void
test_policy_time_window_outside_matches(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "hello");

    /* Wednesday 10:30 UTC is 11:30 in Paris */
    assert_int_equal(evaluate("[" POLICY("pol_t", "time_window", "block",
                              ",\"timezone\":\"Europe/Paris\","
                              "\"start\":\"09:00\",\"end\":\"11:00\"") "]",
                              &req, &d), SP_POLICY_BLOCK);
    assert_string_equal(d.matches[0].code, "outside_time_window");
    assert_string_equal(d.matches[0].reason,
                        "wed 11:30 in Europe/Paris is outside 09:00-11:00");

    assert_int_equal(evaluate("[" POLICY("pol_t", "time_window", "warn",
                              ",\"timezone\":\"Europe/Paris\","
                              "\"start\":\"09:00\",\"end\":\"18:00\","
                              "\"days\":[\"wed\"]") "]", &req, &d),
                     SP_POLICY_PASS);
    assert_int_equal(evaluate("[" POLICY("pol_t", "time_window", "warn",
                              ",\"days\":[\"sat\",\"sun\"]") "]", &req, &d),
                     SP_POLICY_WARN);
    assert_int_equal(evaluate("[" POLICY("pol_t", "time_window", "log",
                              ",\"start\":\"22:00\",\"end\":\"06:00\"") "]",
                              &req, &d), SP_POLICY_LOG);
}


/* ---- PII ----------------------------------------------------------- */

static void
test_policy_scan_runs_without_policies(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "pay with " CARD " please");

    assert_int_equal(sp_policy_evaluate(NULL, &req, &d), SP_OK);
    assert_int_equal(d.decision, SP_POLICY_PASS);
    assert_true(d.pii.types & (1u << SP_PII_CARD));
    assert_int_equal(d.pii.score_milli, sp_pii_score(1u << SP_PII_CARD));

    /* a body the scanner cannot read is refused, never passed */
    req.body = "{\"messages\":";
    req.body_len = strlen(req.body);
    assert_int_equal(sp_policy_evaluate(NULL, &req, &d), SP_ERROR);
}


static void
test_policy_pii_blocks_warns_logs_and_redacts(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "card " CARD " thanks");

    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "block", "") "]",
                              &req, &d), SP_POLICY_BLOCK);
    assert_string_equal(d.matches[0].code, "pii_detected");
    assert_non_null(strstr(d.matches[0].reason, "card (1)"));
    assert_null(strstr(d.matches[0].reason, "4111"));

    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "warn", "") "]",
                              &req, &d), SP_POLICY_WARN);
    assert_string_equal(d.warnings, "pii_detected");
    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "log", "") "]",
                              &req, &d), SP_POLICY_LOG);

    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "redact", "") "]",
                              &req, &d), SP_POLICY_REDACT);
    assert_int_equal(d.redact_mask, 1u << SP_PII_CARD);
    assert_int_equal(d.pii.nentities, 1);
    assert_int_equal(d.pii.entities[0].type, SP_PII_CARD);
    assert_int_equal(d.pii.entities[0].start, offset_of(CARD));
    assert_int_equal(d.pii.entities[0].end, offset_of(CARD) + strlen(CARD));
}


static void
test_policy_pii_entity_filter_and_per_entity_actions(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "mail " EMAIL " card " CARD);

    /* a policy limited to other types does not match */
    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "block",
                              ",\"entities\":[\"iban\",\"ssn\"]") "]",
                              &req, &d), SP_POLICY_PASS);

    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "block",
                              ",\"entities\":[\"email\"]") "]", &req, &d),
                     SP_POLICY_BLOCK);
    assert_non_null(strstr(d.matches[0].reason, "email (1)"));
    assert_null(strstr(d.matches[0].reason, "card"));

    /* each type its own action, the match the strongest */
    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "log",
                              ",\"entities\":{\"card\":\"redact\","
                              "\"email\":\"warn\"}") "]", &req, &d),
                     SP_POLICY_REDACT);
    assert_int_equal(d.redact_mask, 1u << SP_PII_CARD);
    assert_int_equal(d.matches[0].action, SP_POLICY_REDACT);

    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "redact",
                              ",\"entities\":{\"card\":\"block\"}") "]",
                              &req, &d), SP_POLICY_BLOCK);
    /* the email still redacts, with its policy's action */
    assert_int_equal(d.redact_mask, 1u << SP_PII_EMAIL);
}


static void
test_policy_pii_threshold_at_exactly_the_score_matches(void **state)
{
    int                   score;
    char                  json[512];
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "card " CARD);
    score = sp_pii_score(1u << SP_PII_CARD);

    snprintf(json, sizeof(json), "[" POLICY("pol_p", "pii", "block",
             ",\"threshold\":%d.%03d") "]", score / 1000, score % 1000);
    assert_int_equal(evaluate(json, &req, &d), SP_POLICY_BLOCK);

    if (score < 1000) {
        score++;
        snprintf(json, sizeof(json), "[" POLICY("pol_p", "pii", "block",
                 ",\"threshold\":%d.%03d") "]", score / 1000, score % 1000);
        assert_int_equal(evaluate(json, &req, &d), SP_POLICY_PASS);
    }

    /* no entity of its types: no match even at threshold 0 */
    test_request(&req, &data, "gpt-4o", "nothing here");
    assert_int_equal(evaluate("[" POLICY("pol_p", "pii", "block",
                              ",\"threshold\":0") "]", &req, &d),
                     SP_POLICY_PASS);
}


static void
test_policy_response_mask_is_the_union_of_scanning_policies(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "nothing here");

    evaluate("[" POLICY("pol_1", "pii", "warn", ",\"entities\":[\"card\"],"
             "\"scan_responses\":true") ","
             POLICY("pol_2", "pii", "warn", ",\"entities\":[\"email\"],"
             "\"scan_responses\":true") ","
             POLICY("pol_3", "pii", "warn", ",\"entities\":[\"iban\"]") ","
             "{\"id\":\"pol_4\",\"name\":\"x\",\"kind\":\"pii\","
             "\"action\":\"warn\",\"entities\":[\"ssn\"],"
             "\"scan_responses\":true,\"scope\":{\"type\":\"project\","
             "\"value\":\"other\"}}]", &req, &d);

    assert_int_equal(d.response_mask,
                     (1u << SP_PII_CARD) | (1u << SP_PII_EMAIL));
}


/* ---- patterns ------------------------------------------------------ */

static void
test_policy_scan_with_patterns_equals_scan_body(void **state)
{
    size_t                i;
    test_data_t           data;
    sp_pii_result_t       alone;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    /* escapes before the entities: spans are raw body offsets */
    test_request(&req, &data, "gpt-4o", "caf\\u00e9\\n\\\"x\\\" "
                 "mail " EMAIL ", card " CARD ", ip 10.1.2.3 and "
                 "bob@example.org");

    assert_int_equal(sp_pii_scan_body(req.provider, 0, req.body,
                                      req.body_len, SP_PII_ALL, &alone),
                     SP_OK);
    assert_true(alone.nentities >= 3);

    /* a pattern policy walks the texts once for both */
    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "log",
                              ",\"patterns\":[\"nothing\"]") "]", &req,
                              &d), SP_POLICY_PASS);

    assert_int_equal(d.pii.nentities, alone.nentities);
    assert_int_equal(d.pii.total, alone.total);
    assert_int_equal(d.pii.types, alone.types);
    assert_int_equal(d.pii.score_milli, alone.score_milli);
    assert_int_equal(d.pii.scanned, alone.scanned);
    assert_memory_equal(d.pii.counts, alone.counts, sizeof(alone.counts));

    for (i = 0; i < alone.nentities; i++) {
        assert_int_equal(d.pii.entities[i].type, alone.entities[i].type);
        assert_int_equal(d.pii.entities[i].start, alone.entities[i].start);
        assert_int_equal(d.pii.entities[i].end, alone.entities[i].end);
    }
}


static void
test_policy_pattern_blocks_warns_and_logs(void **state)
{
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "the PROJECT-X plans");

    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "block",
                              ",\"patterns\":[\"nothing\",\"project-x\"],"
                              "\"case_insensitive\":true") "]", &req, &d),
                     SP_POLICY_BLOCK);
    assert_string_equal(d.matches[0].code, "pattern_matched");
    assert_null(strstr(d.matches[0].reason, "PROJECT"));

    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "warn",
                              ",\"patterns\":[\"project-x\"]") "]", &req,
                              &d), SP_POLICY_PASS);
    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "warn",
                              ",\"patterns\":[\"PROJECT-\\\\w\"]") "]",
                              &req, &d), SP_POLICY_WARN);
    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "log",
                              ",\"patterns\":[\"plans$\"]") "]", &req, &d),
                     SP_POLICY_LOG);

    /* the model name is not text the model reads */
    assert_int_equal(evaluate("[" POLICY("pol_x", "pattern", "block",
                              ",\"patterns\":[\"gpt\"]") "]", &req, &d),
                     SP_POLICY_PASS);
}


static void
test_policy_pattern_redact_spans_merge_with_pii(void **state)
{
    size_t                a, b;
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o",
                 "code secret-12 and secret-345, card " CARD " end");

    assert_int_equal(evaluate("[" POLICY("pol_r", "pattern", "redact",
                              ",\"patterns\":[\"secret-\\\\d+\"]") "]",
                              &req, &d), SP_POLICY_REDACT);
    assert_true(d.redact_mask & (1u << SP_PII_PATTERN));
    assert_false(d.redact_mask & (1u << SP_PII_CARD));
    /* two pattern spans and the card, in order of start */
    assert_int_equal(d.pii.nentities, 3);
    assert_int_equal(d.pii.entities[0].type, SP_PII_PATTERN);
    assert_int_equal(d.pii.entities[0].start, offset_of("secret-12"));
    assert_int_equal(d.pii.entities[0].end, offset_of("secret-12") + 9);
    assert_int_equal(d.pii.entities[1].start, offset_of("secret-345"));
    assert_int_equal(d.pii.entities[1].end, offset_of("secret-345") + 10);
    assert_int_equal(d.pii.entities[2].type, SP_PII_CARD);

    /* a pattern span over a card merges into the wider span */
    test_request(&req, &data, "gpt-4o", "my card " CARD " ok");
    a = offset_of("card ");
    b = offset_of(CARD) + strlen(CARD);

    assert_int_equal(evaluate("[" POLICY("pol_r", "pattern", "redact",
                              ",\"patterns\":[\"card \\\\d{4}\"]") ","
                              POLICY("pol_p", "pii", "redact", "") "]",
                              &req, &d), SP_POLICY_REDACT);
    assert_int_equal(d.pii.nentities, 1);
    assert_int_equal(d.pii.entities[0].start, a);
    assert_int_equal(d.pii.entities[0].end, b);
    assert_int_equal(d.pii.entities[0].type, SP_PII_PATTERN);
    assert_string_equal(d.policy_ids, "pol_r,pol_p");

    /* labelled by the first, but never left unredacted */
    assert_int_equal(evaluate("[" POLICY("pol_r", "pattern", "redact",
                              ",\"patterns\":[\"card \\\\d{4}\"]") ","
                              POLICY("pol_p", "pii", "log", "") "]",
                              &req, &d), SP_POLICY_REDACT);
    assert_int_equal(d.pii.nentities, 1);
    assert_int_equal(d.pii.entities[0].type, SP_PII_PATTERN);
    assert_int_equal(d.pii.entities[0].end, b);
}


static void
test_policy_catastrophic_regex_fails_closed_quickly(void **state)
{
    char                  text[64];
    clock_t               start;
    double                seconds;
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    memset(text, 'a', 30);
    text[30] = 'b';
    text[31] = '\0';

    test_request(&req, &data, "gpt-4o", text);

    start = clock();
    assert_int_equal(evaluate("[" POLICY("pol_c", "pattern", "warn",
                              ",\"patterns\":[\"zzz\",\"(a+)+$\"]") "]",
                              &req, &d), SP_POLICY_WARN);
    seconds = (double) (clock() - start) / CLOCKS_PER_SEC;

    assert_string_equal(d.matches[0].reason,
                        "pattern 2 hit its match limit (fail closed)");
    assert_true(seconds < 0.5);

    /* a redact that cannot find its spans blocks */
    assert_int_equal(evaluate("[" POLICY("pol_c", "pattern", "redact",
                              ",\"patterns\":[\"(a+)+$\"]") "]", &req, &d),
                     SP_POLICY_BLOCK);
}


/* ---- the decision -------------------------------------------------- */

static void
test_policy_decision_lists_warnings_ids_and_first_block(void **state)
{
    char                  msg[512];
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    test_request(&req, &data, "gpt-4o", "hello");

    assert_int_equal(evaluate("["
        POLICY("pol_1", "attribution", "warn", ",\"require\":\"project\"")
        "," POLICY("pol_2", "model", "warn", ",\"deny_models\":[\"gpt*\"]")
        "," POLICY("pol_3", "attribution", "warn", ",\"require\":\"both\"")
        "," POLICY("pol_4", "model", "log", ",\"deny_models\":[\"*\"]")
        "," POLICY("pol_5", "model", "block", ",\"deny_models\":[\"*4o\"]")
        "," POLICY("pol_6", "model", "block", ",\"deny_models\":[\"*\"]")
        "," POLICY("pol_7", "model", "warn", ",\"deny_models\":[\"x\"]")
        "]", &req, &d), SP_POLICY_BLOCK);

    assert_int_equal(d.nmatches, 6);
    assert_int_equal(d.total_matches, 6);
    assert_string_equal(d.warnings, "attribution_missing,model_not_allowed");
    assert_string_equal(d.policy_ids, "pol_1,pol_2,pol_3,pol_4,pol_5,pol_6");
    assert_int_equal(d.blocked_by, 4);
    assert_string_equal(d.matches[4].policy_id, "pol_5");

    sp_policy_message(&d, msg, sizeof(msg));
    assert_string_equal(msg, "blocked by policy \"pol_5 name\" (pol_5): "
                        "model gpt-4o matches deny glob \"*4o\"");

    /* a short buffer: truncated, NUL-terminated */
    assert_int_equal(sp_policy_message(&d, msg, 8), 7);
    assert_string_equal(msg, "blocked");
}


static void
test_policy_block_beyond_kept_matches_is_kept(void **state)
{
    char                  json[16384], msg[512];
    size_t                i, n;
    test_data_t           data;
    sp_policy_request_t   req;
    sp_policy_decision_t  d;

    n = (size_t) snprintf(json, sizeof(json), "[");

    for (i = 0; i < 20; i++) {
        n += (size_t) snprintf(json + n, sizeof(json) - n, "{\"id\":"
                               "\"pol_%zu\",\"name\":\"w\",\"kind\":\"model\","
                               ORG ",\"action\":\"%s\",\"deny_models\":"
                               "[\"*\"]},", i, i == 18 ? "block" : "log");
    }

    json[n - 1] = ']';

    test_request(&req, &data, "gpt-4o", "hello");
    assert_int_equal(evaluate(json, &req, &d), SP_POLICY_BLOCK);
    assert_int_equal(d.nmatches, SP_POLICY_MAX_MATCHES);
    assert_int_equal(d.total_matches, 20);
    assert_int_equal(d.blocked_by, SP_POLICY_MAX_MATCHES - 1);
    sp_policy_message(&d, msg, sizeof(msg));
    assert_non_null(strstr(msg, "(pol_18)"));
}


static void
test_policy_names(void **state)
{
    assert_string_equal(sp_policy_action_name(SP_POLICY_REDACT), "redact");
    assert_string_equal(sp_policy_action_name(SP_POLICY_PASS), "pass");
    assert_string_equal(sp_policy_kind_name(SP_POLICY_KIND_TIME_WINDOW),
                        "time_window");
    assert_string_equal(sp_policy_kind_name(SP_POLICY_KIND_PII), "pii");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_policy_validate_accepts_each_kind),
        cmocka_unit_test(
            test_policy_validate_names_the_member_on_every_error),
        cmocka_unit_test(
            test_policy_invalid_regex_gives_pcre2_message_and_offset),
        cmocka_unit_test(
            test_policy_compile_counts_and_names_invalid_policies),
        cmocka_unit_test(test_policy_model_blocks_warns_and_logs),
        cmocka_unit_test(test_policy_scopes_match_their_value_only),
        cmocka_unit_test(
            test_policy_limits_max_tokens_and_required_output_limit),
        cmocka_unit_test(
            test_policy_worst_case_is_asked_once_and_only_when_needed),
        cmocka_unit_test(
            test_policy_attribution_requires_department_or_project),
        cmocka_unit_test(test_policy_time_window_outside_matches),
        cmocka_unit_test(test_policy_scan_runs_without_policies),
        cmocka_unit_test(test_policy_pii_blocks_warns_logs_and_redacts),
        cmocka_unit_test(
            test_policy_pii_entity_filter_and_per_entity_actions),
        cmocka_unit_test(
            test_policy_pii_threshold_at_exactly_the_score_matches),
        cmocka_unit_test(
            test_policy_response_mask_is_the_union_of_scanning_policies),
        cmocka_unit_test(test_policy_scan_with_patterns_equals_scan_body),
        cmocka_unit_test(test_policy_pattern_blocks_warns_and_logs),
        cmocka_unit_test(test_policy_pattern_redact_spans_merge_with_pii),
        cmocka_unit_test(test_policy_catastrophic_regex_fails_closed_quickly),
        cmocka_unit_test(
            test_policy_decision_lists_warnings_ids_and_first_block),
        cmocka_unit_test(test_policy_block_beyond_kept_matches_is_kept),
        cmocka_unit_test(test_policy_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
