/*
 * libspendpol journal lines: format, parse, escaping, field copies.
 */

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "sp_journal.h"
#include "../fuzz/fuzz_journal_oracle.h"


static void
fill_record(sp_journal_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));

    strcpy(rec->id, "evt_01HZY5J3");
    rec->ts_ms = 1764230000123LL;
    strcpy(rec->org_id, "org_a");
    strcpy(rec->api_key_id, "key_7");
    strcpy(rec->provider, "openai");
    strcpy(rec->requested_model, "gpt-4o-mini");
    strcpy(rec->model, "gpt-4o-mini-2024-07-18");
    rec->input_tokens = 12;
    rec->output_tokens = 34;
    rec->cached_tokens = 5;
    rec->cache_write_tokens = 6;
    rec->cost_nano = 150000;
    rec->status = 200;
    strcpy(rec->cache, "hit");
    rec->saved_nano = 120000;
    rec->stream = 1;
    rec->latency_ms = 1234;
    rec->gateway_us = 85;
    strcpy(rec->department, "eng");
    strcpy(rec->project, "apollo");
    strcpy(rec->agent_id, "agent-9");
    strcpy(rec->trace_id, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
    strcpy(rec->span_id, "00f067aa0ba902b7");
    strcpy(rec->parent_id, "53995c3f42cd8ad8");
    strcpy(rec->warnings, "usage_estimated,unpriced_model");
    strcpy(rec->error_code, "upstream_timeout");
    rec->epoch = 1764230000000;
    rec->reserved_nano = 450000;
    strcpy(rec->endpoint, "POST /chat/completions");
    rec->routed = 1;
    strcpy(rec->route_rule, "rr_0123456789abcdef01234567");
    rec->attempts = 3;
    strcpy(rec->attempt_log, "openai/gpt-4o:429,openai/gpt-4o:0");
    strcpy(rec->route_note, "rr_a: no tools on cohere");
    strcpy(rec->template_id, "7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f");
    rec->template_version = 3;
    rec->guard_score_milli = 850;
    strcpy(rec->pii_types, "card,email");
    strcpy(rec->policy_action, "redact");
    strcpy(rec->policy_ids, "pol_0123456789abcdef,pol_fedcba9876543210");
    strcpy(rec->policy_warnings, "pii_detected");
    rec->hallucination_pct = 12;
    strcpy(rec->shadow_key_type, "openai");
    strcpy(rec->shadow_key_fp, "fp_0123456789abcdef");
    strcpy(rec->client_addr, "10.0.0.7");
}


/* what a request with no PII, no policy and no score leaves unset */
static void
clear_policy_fields(sp_journal_record_t *rec)
{
    rec->guard_score_milli = 0;
    rec->pii_types[0] = '\0';
    rec->policy_action[0] = '\0';
    rec->policy_ids[0] = '\0';
    rec->policy_warnings[0] = '\0';
    rec->hallucination_pct = -1;
    rec->shadow_key_type[0] = '\0';
    rec->shadow_key_fp[0] = '\0';
    rec->client_addr[0] = '\0';
}


static void
assert_records_equal(const sp_journal_record_t *a,
    const sp_journal_record_t *b)
{
    assert_string_equal(a->id, b->id);
    assert_true(a->ts_ms == b->ts_ms);
    assert_string_equal(a->org_id, b->org_id);
    assert_string_equal(a->api_key_id, b->api_key_id);
    assert_string_equal(a->provider, b->provider);
    assert_string_equal(a->requested_model, b->requested_model);
    assert_string_equal(a->model, b->model);
    assert_true(a->input_tokens == b->input_tokens);
    assert_true(a->output_tokens == b->output_tokens);
    assert_true(a->cached_tokens == b->cached_tokens);
    assert_true(a->cache_write_tokens == b->cache_write_tokens);
    assert_true(a->cost_nano == b->cost_nano);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->cache, b->cache);
    assert_true(a->saved_nano == b->saved_nano);
    assert_int_equal(a->stream, b->stream);
    assert_true(a->latency_ms == b->latency_ms);
    assert_true(a->gateway_us == b->gateway_us);
    assert_string_equal(a->department, b->department);
    assert_string_equal(a->project, b->project);
    assert_string_equal(a->agent_id, b->agent_id);
    assert_string_equal(a->trace_id, b->trace_id);
    assert_string_equal(a->span_id, b->span_id);
    assert_string_equal(a->parent_id, b->parent_id);
    assert_string_equal(a->warnings, b->warnings);
    assert_string_equal(a->error_code, b->error_code);
    assert_true(a->epoch == b->epoch);
    assert_true(a->reserved_nano == b->reserved_nano);
    assert_string_equal(a->endpoint, b->endpoint);
    assert_int_equal(a->routed, b->routed);
    assert_string_equal(a->route_rule, b->route_rule);
    assert_int_equal(a->attempts, b->attempts);
    assert_string_equal(a->attempt_log, b->attempt_log);
    assert_string_equal(a->route_note, b->route_note);
    assert_string_equal(a->template_id, b->template_id);
    assert_true(a->template_version == b->template_version);
    assert_int_equal(a->guard_score_milli, b->guard_score_milli);
    assert_string_equal(a->pii_types, b->pii_types);
    assert_string_equal(a->policy_action, b->policy_action);
    assert_string_equal(a->policy_ids, b->policy_ids);
    assert_string_equal(a->policy_warnings, b->policy_warnings);
    assert_int_equal(a->hallucination_pct, b->hallucination_pct);
    assert_string_equal(a->shadow_key_type, b->shadow_key_type);
    assert_string_equal(a->shadow_key_fp, b->shadow_key_fp);
    assert_string_equal(a->client_addr, b->client_addr);
}


static size_t
format_ok(const sp_journal_record_t *rec, char *line)
{
    size_t  n;

    n = sp_journal_format(rec, line, SP_JOURNAL_LINE_MAX);
    assert_true(n > 0);
    assert_true(n <= SP_JOURNAL_LINE_MAX);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));

    /* for strstr: the writer does not terminate the line */
    if (n < SP_JOURNAL_LINE_MAX) {
        line[n] = '\0';
    }

    return n;
}


static void
parse_ok(const char *line, size_t n, sp_journal_record_t *rec)
{
    char  err[256];

    err[0] = '\0';

    if (sp_journal_parse(line, n, rec, err, sizeof(err)) != SP_OK) {
        fail_msg("parse failed: %s: %.*s", err, (int) n, line);
    }
}


static int differ_check(const char *line, size_t len);


static void
test_journal_round_trips_every_field(void **state)
{
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;

    (void) state;

    fill_record(&rec);
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);

    /* without the newline too */
    parse_ok(line, n - 1, &back);
    assert_records_equal(&rec, &back);

    /* stream false, empty strings, negative and extreme integers */
    memset(&rec, 0, sizeof(rec));
    strcpy(rec.id, "evt_x");
    strcpy(rec.org_id, "o");
    rec.ts_ms = INT64_MAX;
    rec.cost_nano = INT64_MIN;
    rec.input_tokens = -1;
    rec.status = 999;
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
}


static void
test_journal_line_is_the_documented_shape(void **state)
{
    sp_journal_record_t  rec;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;
    json_t              *root;
    json_error_t         jerr;

    (void) state;

    fill_record(&rec);
    rec.stream = 0;
    n = format_ok(&rec, line);

    assert_memory_equal(line, "{\"v\":1,\"id\":\"evt_01HZY5J3\","
                        "\"ts_ms\":1764230000123,", 45);

    root = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(root);
    assert_int_equal(json_object_size(root), 46);
    assert_true(json_is_false(json_object_get(root, "stream")));
    assert_true(json_is_integer(json_object_get(root, "cost_nano")));
    assert_true(json_is_integer(json_object_get(root, "status")));
    assert_string_equal(json_string_value(json_object_get(root, "cache")),
                        "hit");
    assert_true(json_integer_value(json_object_get(root, "saved_nano"))
                == 120000);
    /* saved_nano right after cache, as sp_journal.h shows the line */
    assert_non_null(strstr(line, "\"cache\":\"hit\",\"saved_nano\":120000,"));
    /* routing and template last, in the header's order */
    assert_non_null(strstr(line, "\"endpoint\":\"POST /chat/completions\","
                            "\"routed\":true,\"route_rule\":\"rr_"));
    assert_non_null(strstr(line, "\"template_version\":3,"
                            "\"guard_score_milli\":850,"));
    assert_non_null(strstr(line, "\"client_addr\":\"10.0.0.7\"}\n"));
    json_decref(root);
}


/* a request no rule or template touched keeps the line it had before */
static void
test_journal_unrouted_line_has_no_routing_or_template_members(void **state)
{
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;
    json_t              *root;
    json_error_t         jerr;

    (void) state;

    fill_record(&rec);
    rec.routed = 0;
    rec.route_rule[0] = '\0';
    rec.attempts = 1;                   /* one attempt: no fallback */
    rec.attempt_log[0] = '\0';
    rec.route_note[0] = '\0';
    rec.template_id[0] = '\0';
    rec.template_version = 0;
    clear_policy_fields(&rec);
    n = format_ok(&rec, line);

    root = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(root);
    assert_int_equal(json_object_size(root), 30);
    json_decref(root);
    assert_non_null(strstr(line, "\"endpoint\":\"POST /chat/completions\"}\n"));

    /* read back: 0 and "", attempts 1 as 0 (the same meaning) */
    parse_ok(line, n, &back);
    rec.attempts = 0;
    assert_records_equal(&rec, &back);

    /* each member alone is written, and only it */
    fill_record(&rec);
    memset(&back, 0, sizeof(back));
    rec.routed = 0;
    rec.route_rule[0] = '\0';
    rec.attempts = 0;
    rec.attempt_log[0] = '\0';
    rec.route_note[0] = '\0';
    rec.template_id[0] = '\0';
    rec.template_version = 0;
    clear_policy_fields(&rec);
    rec.attempts = 2;
    n = format_ok(&rec, line);
    assert_non_null(strstr(line, "\"endpoint\":\"POST /chat/completions\","
                            "\"attempts\":2}\n"));
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
}


static void
test_journal_round_trips_routing_and_template_fields(void **state)
{
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;

    (void) state;

    /* every new member set, with characters to escape */
    fill_record(&rec);
    strcpy(rec.route_note, "rr_a: \"tools\"\tnot on cohere\n"
           "rr_b: caf\xc3\xa9 \\ window closed");
    strcpy(rec.attempt_log, "openai/gpt-4o:429,anthropic/claude-3-5:500,"
           "mistral/mistral-large:0");
    rec.attempts = 8;
    rec.template_version = 2147483647;
    strcpy(rec.template_id, "7D4C9B1E-3F2A-4C6D-8E9F-0A1B2C3D4E5F");
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);

    /* out-of-range values are written and read back for the check */
    rec.attempts = -1;
    rec.template_version = -5;
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);

    /* a routed request without fallback, without a template */
    fill_record(&rec);
    rec.attempts = 0;
    rec.attempt_log[0] = '\0';
    rec.template_id[0] = '\0';
    rec.template_version = 0;
    n = format_ok(&rec, line);
    assert_null(strstr(line, "\"attempts\""));
    assert_null(strstr(line, "\"template"));
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
}


static void
test_journal_routing_fields_bounds(void **state)
{
    static const struct {
        const char  *members;
        const char  *message;
    } bad[] = {
        { "\"routed\":1", "field \"routed\" must be a boolean" },
        { "\"routed\":\"true\"", "field \"routed\" must be a boolean" },
        { "\"route_rule\":7", "field \"route_rule\" must be a string" },
        { "\"attempts\":\"2\"", "field \"attempts\" must be an integer" },
        { "\"attempts\":2.5", "field \"attempts\" must be an integer" },
        { "\"attempts\":4294967298", "field \"attempts\" must be 0..8" },
        { "\"attempts\":-4294967298", "field \"attempts\" must be 0..8" },
        { "\"attempt_log\":[]", "field \"attempt_log\" must be a string" },
        { "\"route_note\":{}", "field \"route_note\" must be a string" },
        { "\"template_id\":1", "field \"template_id\" must be a string" },
        { "\"template_version\":\"3\"",
          "field \"template_version\" must be an integer" },
    };
    static const struct {
        const char  *members;
        const char  *message;               /* NULL: the check passes */
    } checked[] = {
        { "\"attempts\":8", NULL },
        { "\"attempts\":1", NULL },
        { "\"attempts\":0", NULL },
        { "\"attempts\":9", "field \"attempts\" is 9, expected 0..8" },
        { "\"attempts\":-1", "field \"attempts\" is -1, expected 0..8" },
        { "\"template_version\":2147483647", NULL },
        { "\"template_version\":2147483648",
          "field \"template_version\" is 2147483648, expected "
          "0..2147483647" },
        { "\"template_version\":-1",
          "field \"template_version\" is -1, expected 0..2147483647" },
        { "\"template_id\":\"7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f\"", NULL },
        { "\"template_id\":\"\"", NULL },
        { "\"template_id\":null", NULL },
        { "\"template_id\":\"7d4c9b1e3f2a4c6d8e9f0a1b2c3d4e5f\"",
          "field \"template_id\" must be a UUID" },
        { "\"template_id\":\"7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5\"",
          "field \"template_id\" must be a UUID" },
        { "\"template_id\":\"7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5fa\"",
          "field \"template_id\" must be a UUID" },
        { "\"template_id\":\"7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5g\"",
          "field \"template_id\" must be a UUID" },
        { "\"template_id\":\"tpl_1\"", "field \"template_id\" must be a UUID" },
        { "\"routed\":false,\"route_rule\":\"\",\"route_note\":null", NULL },
    };
    char                 line[512], err[256];
    size_t               i;
    sp_journal_record_t  rec;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                 "\"org_id\":\"o\",%s}", bad[i].members);
        err[0] = '\0';

        if (sp_journal_parse(line, strlen(line), &rec, err, sizeof(err))
            != SP_ERROR || strcmp(err, bad[i].message) != 0)
        {
            fail_msg("%s: \"%s\", expected \"%s\"", line, err,
                     bad[i].message);
        }

        differ_check(line, strlen(line));
    }

    for (i = 0; i < sizeof(checked) / sizeof(checked[0]); i++) {
        snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                 "\"org_id\":\"o\",%s}", checked[i].members);
        parse_ok(line, strlen(line), &rec);
        differ_check(line, strlen(line));
        err[0] = '\0';

        if (checked[i].message == NULL) {
            if (sp_journal_check(&rec, err, sizeof(err)) != SP_OK) {
                fail_msg("%s: refused: %s", line, err);
            }

            continue;
        }

        if (sp_journal_check(&rec, err, sizeof(err)) != SP_ERROR
            || strstr(err, checked[i].message) == NULL)
        {
            fail_msg("%s: \"%s\", expected \"%s\"", line, err,
                     checked[i].message);
        }
    }
}


/* issue 14: the policy, score and shadow-AI members, written only when set */
static void
test_journal_round_trips_policy_and_score_fields(void **state)
{
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;
    char                 err[256];

    (void) state;

    fill_record(&rec);
    strcpy(rec.policy_ids, "pol_a,pol_\"b\"\tc");
    n = format_ok(&rec, line);
    assert_non_null(strstr(line, "\"guard_score_milli\":850,"
                            "\"pii_types\":\"card,email\","
                            "\"policy_action\":\"redact\","));
    assert_non_null(strstr(line, "\"hallucination_pct\":12,"
                            "\"shadow_key_type\":\"openai\","
                            "\"shadow_key_fp\":\"fp_0123456789abcdef\","));
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
    differ_check(line, n);
    assert_int_equal(sp_journal_check(&back, err, sizeof(err)), SP_OK);

    /* a score of 0 is written: it was scored, and found grounded */
    rec.hallucination_pct = 0;
    n = format_ok(&rec, line);
    assert_non_null(strstr(line, "\"hallucination_pct\":0,"));
    parse_ok(line, n, &back);
    assert_int_equal(back.hallucination_pct, 0);

    /* nothing set: none of them written, read back as 0, "" and -1 */
    clear_policy_fields(&rec);
    n = format_ok(&rec, line);
    assert_null(strstr(line, "guard_score"));
    assert_null(strstr(line, "pii_types"));
    assert_null(strstr(line, "policy_"));
    assert_null(strstr(line, "hallucination"));
    assert_null(strstr(line, "shadow_"));
    assert_null(strstr(line, "client_addr"));
    memset(&back, 0x5a, sizeof(back));
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
    assert_int_equal(back.guard_score_milli, 0);
    assert_int_equal(back.hallucination_pct, -1);
    assert_string_equal(back.policy_action, "");
    differ_check(line, n);

    /* an older line, and null, mean the same: not scored */
    n = (size_t) snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                          "\"org_id\":\"o\",\"hallucination_pct\":null}");
    parse_ok(line, n, &back);
    assert_int_equal(back.hallucination_pct, -1);
    assert_int_equal(back.guard_score_milli, 0);
    differ_check(line, n);

    /* out of range values are written and read back for the check */
    fill_record(&rec);
    rec.guard_score_milli = 1001;
    rec.hallucination_pct = -2;
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
}


static void
test_journal_policy_fields_bounds(void **state)
{
    static const struct {
        const char  *members;
        const char  *message;
    } bad[] = {
        { "\"guard_score_milli\":0.85",
          "field \"guard_score_milli\" must be an integer" },
        { "\"guard_score_milli\":\"850\"",
          "field \"guard_score_milli\" must be an integer" },
        { "\"guard_score_milli\":4294967296",
          "field \"guard_score_milli\" must be 0..1000" },
        { "\"pii_types\":[\"card\"]", "field \"pii_types\" must be a string" },
        { "\"policy_action\":1", "field \"policy_action\" must be a string" },
        { "\"policy_ids\":{}", "field \"policy_ids\" must be a string" },
        { "\"policy_warnings\":true",
          "field \"policy_warnings\" must be a string" },
        { "\"hallucination_pct\":12.5",
          "field \"hallucination_pct\" must be an integer" },
        { "\"hallucination_pct\":-4294967296",
          "field \"hallucination_pct\" must be -1..100" },
        { "\"shadow_key_type\":1",
          "field \"shadow_key_type\" must be a string" },
        { "\"shadow_key_fp\":[]", "field \"shadow_key_fp\" must be a string" },
        { "\"client_addr\":false", "field \"client_addr\" must be a string" },
    };
    static const struct {
        const char  *members;
        const char  *message;               /* NULL: the check passes */
    } checked[] = {
        { "\"guard_score_milli\":0", NULL },
        { "\"guard_score_milli\":1000", NULL },
        { "\"guard_score_milli\":1001",
          "field \"guard_score_milli\" is 1001, expected 0..1000" },
        { "\"guard_score_milli\":-1",
          "field \"guard_score_milli\" is -1, expected 0..1000" },
        { "\"hallucination_pct\":-1", NULL },
        { "\"hallucination_pct\":0", NULL },
        { "\"hallucination_pct\":100", NULL },
        { "\"hallucination_pct\":101",
          "field \"hallucination_pct\" is 101, expected -1..100" },
        { "\"hallucination_pct\":-2",
          "field \"hallucination_pct\" is -2, expected -1..100" },
        { "\"policy_action\":\"\"", NULL },
        { "\"policy_action\":\"log\"", NULL },
        { "\"policy_action\":\"warn\"", NULL },
        { "\"policy_action\":\"redact\"", NULL },
        { "\"policy_action\":\"block\"", NULL },
        { "\"policy_action\":\"pass\"",
          "field \"policy_action\" must be \"\", \"log\"" },
        { "\"policy_action\":\"BLOCK\"",
          "field \"policy_action\" must be \"\", \"log\"" },
    };
    char                 line[512], err[256];
    size_t               i;
    sp_journal_record_t  rec;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                 "\"org_id\":\"o\",%s}", bad[i].members);
        err[0] = '\0';

        if (sp_journal_parse(line, strlen(line), &rec, err, sizeof(err))
            != SP_ERROR || strcmp(err, bad[i].message) != 0)
        {
            fail_msg("%s: \"%s\", expected \"%s\"", line, err,
                     bad[i].message);
        }

        differ_check(line, strlen(line));
    }

    for (i = 0; i < sizeof(checked) / sizeof(checked[0]); i++) {
        snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                 "\"org_id\":\"o\",%s}", checked[i].members);
        parse_ok(line, strlen(line), &rec);
        differ_check(line, strlen(line));
        err[0] = '\0';

        if (checked[i].message == NULL) {
            if (sp_journal_check(&rec, err, sizeof(err)) != SP_OK) {
                fail_msg("%s: refused: %s", line, err);
            }

            continue;
        }

        if (sp_journal_check(&rec, err, sizeof(err)) != SP_ERROR
            || strstr(err, checked[i].message) == NULL)
        {
            fail_msg("%s: \"%s\", expected \"%s\"", line, err,
                     checked[i].message);
        }
    }
}


static void
test_journal_escapes_quotes_backslashes_and_controls(void **state)
{
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX], ctl[40];
    size_t               n;
    int                  i;

    (void) state;

    fill_record(&rec);
    strcpy(rec.requested_model, "a\"b\\c\"\\");
    strcpy(rec.department, "line1\nline2\r\ttab");

    for (i = 1; i < 32; i++) {
        ctl[i - 1] = (char) i;
    }

    ctl[31] = 0x7f;
    ctl[32] = '\0';
    strcpy(rec.project, ctl);
    strcpy(rec.warnings, "}\n{\"v\":1");

    n = format_ok(&rec, line);

    /* no raw control character in the line but its final newline */
    for (i = 0; i < (int) n - 1; i++) {
        if ((unsigned char) line[i] < 0x20 || line[i] == 0x7f) {
            fail_msg("raw 0x%02x at %d", (unsigned char) line[i], i);
        }
    }

    assert_non_null(strstr(line, "\"a\\\"b\\\\c\\\"\\\\\""));
    assert_non_null(strstr(line, "\\u000a"));
    assert_non_null(strstr(line, "\\u001f\\u007f\""));

    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);
}


static void
test_journal_invalid_utf8_becomes_replacement_and_parses(void **state)
{
    static const char   *bad[] = {
        "\xff", "a\x80z", "\xc3", "\xc3(", "\xe2\x82", "\xe2\x82(",
        "\xf0\x9f\x98", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
        "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xfe\xff",
        "ok \xf0\x9f\x98\x80 \xff end", NULL
    };
    sp_journal_record_t  rec, back;
    char                 line[SP_JOURNAL_LINE_MAX];
    size_t               n;
    int                  i;

    (void) state;

    for (i = 0; bad[i]; i++) {
        fill_record(&rec);
        strcpy(rec.model, bad[i]);
        n = format_ok(&rec, line);
        parse_ok(line, n, &back);

        if (strstr(back.model, "\xef\xbf\xbd") == NULL) {
            fail_msg("case %d: no U+FFFD in \"%s\"", i, back.model);
        }
    }

    /* valid UTF-8 passes through unchanged */
    fill_record(&rec);
    strcpy(rec.model, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
           "\xf4\x8f\xbf\xbf");
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_string_equal(back.model, rec.model);

    /* exactly one replacement for one bad byte, the rest kept */
    fill_record(&rec);
    strcpy(rec.model, "ok \xf0\x9f\x98\x80 \xff end");
    n = format_ok(&rec, line);
    parse_ok(line, n, &back);
    assert_string_equal(back.model, "ok \xf0\x9f\x98\x80 \xef\xbf\xbd end");
}


static void
test_journal_format_returns_0_when_buffer_too_small(void **state)
{
    sp_journal_record_t  rec;
    char                *line;
    size_t               n, len;

    (void) state;

    fill_record(&rec);
    line = malloc(SP_JOURNAL_LINE_MAX);
    n = sp_journal_format(&rec, line, SP_JOURNAL_LINE_MAX);
    assert_true(n > 0);
    free(line);

    /* every shorter exact-size heap buffer: 0, no write past it */
    for (len = 0; len < n; len++) {
        line = malloc(len ? len : 1);
        assert_int_equal(sp_journal_format(&rec, line, len), 0);
        free(line);
    }

    line = malloc(n);
    assert_int_equal(sp_journal_format(&rec, line, n), n);
    free(line);
}


static void
fill_all(sp_journal_record_t *rec, unsigned char c)
{
#define SP_FILL(f) memset(rec->f, c, sizeof(rec->f) - 1); \
                   rec->f[sizeof(rec->f) - 1] = '\0'
    SP_FILL(id);
    memcpy(rec->id, "evt_", 4);
    SP_FILL(org_id);
    SP_FILL(api_key_id);
    SP_FILL(provider);
    SP_FILL(requested_model);
    SP_FILL(model);
    SP_FILL(cache);
    SP_FILL(department);
    SP_FILL(project);
    SP_FILL(agent_id);
    SP_FILL(trace_id);
    SP_FILL(span_id);
    SP_FILL(parent_id);
    SP_FILL(warnings);
    SP_FILL(error_code);
    SP_FILL(endpoint);
    SP_FILL(route_rule);
    SP_FILL(attempt_log);
    SP_FILL(route_note);
    SP_FILL(template_id);
    SP_FILL(pii_types);
    SP_FILL(policy_action);
    SP_FILL(policy_ids);
    SP_FILL(policy_warnings);
    SP_FILL(shadow_key_type);
    SP_FILL(shadow_key_fp);
    SP_FILL(client_addr);
#undef SP_FILL
}


/*
 * Every field at its longest, of characters that need escaping: does the
 * line still fit in SP_JOURNAL_LINE_MAX as the header promises?
 */
static void
test_journal_longest_record_fits_line_max(void **state)
{
    sp_journal_record_t  rec, back;
    char                *line;
    size_t               n;

    (void) state;

    line = malloc(SP_JOURNAL_LINE_MAX);

    fill_record(&rec);
    fill_all(&rec, 'x');
    rec.ts_ms = INT64_MIN;
    rec.input_tokens = INT64_MIN;
    rec.output_tokens = INT64_MIN;
    rec.cached_tokens = INT64_MIN;
    rec.cache_write_tokens = INT64_MIN;
    rec.cost_nano = INT64_MIN;
    rec.saved_nano = INT64_MIN;
    rec.latency_ms = INT64_MIN;
    rec.gateway_us = INT64_MIN;
    rec.status = 999;
    rec.attempts = INT_MIN;
    rec.template_version = INT64_MIN;
    rec.guard_score_milli = INT_MIN;
    rec.hallucination_pct = INT_MIN;
    n = sp_journal_format(&rec, line, SP_JOURNAL_LINE_MAX);
    assert_true(n > 0);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);

    /* every string of characters escaped 6x ("\u0001"): still fits */
    fill_all(&rec, 0x01);
    n = sp_journal_format(&rec, line, SP_JOURNAL_LINE_MAX);
    assert_true(n > 0);
    print_message("the widest line: %zu of %d bytes\n", n,
                  SP_JOURNAL_LINE_MAX);
    parse_ok(line, n, &back);
    assert_records_equal(&rec, &back);

    /* and of bytes that are no UTF-8, each one a 6-byte U+FFFD escape */
    fill_all(&rec, 0xff);
    n = sp_journal_format(&rec, line, SP_JOURNAL_LINE_MAX);
    assert_true(n > 0);

    free(line);
}


static void
test_journal_parse_rejects_bad_lines_with_message(void **state)
{
    static const struct {
        const char  *line;
        const char  *message;
    } bad[] = {
        { "", "not JSON" },
        { "\n", "not JSON" },
        { "{", "not JSON" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\"", "not JSON" },
        { "[1,2]", "not a JSON object" },
        { "\"evt_1\"", "not" },
        { "{}", "\"v\"" },
        { "{\"v\":2,\"id\":\"evt_1\",\"org_id\":\"o\"}", "\"v\"" },
        { "{\"v\":\"1\",\"id\":\"evt_1\",\"org_id\":\"o\"}", "\"v\"" },
        { "{\"v\":1,\"org_id\":\"o\"}", "\"id\"" },
        { "{\"v\":1,\"id\":\"evt_1\"}", "\"org_id\"" },
        { "{\"v\":1,\"id\":\"x_1\",\"org_id\":\"o\"}", "evt_" },
        { "{\"v\":1,\"id\":7,\"org_id\":\"o\"}", "\"id\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"model\":1}",
          "\"model\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"cost_nano\":\"5\"}",
          "\"cost_nano\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"cost_nano\":1.5}",
          "\"cost_nano\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"status\":1000}",
          "\"status\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"status\":-1}",
          "\"status\"" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"v\":1}", "not JSON" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\"} x", "not JSON" },
        { "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\"}\n{\"v\":1}",
          "not JSON" },
    };
    sp_journal_record_t  rec;
    char                 err[256];
    size_t               i;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';

        if (sp_journal_parse(bad[i].line, strlen(bad[i].line), &rec, err,
                             sizeof(err)) != SP_ERROR)
        {
            fail_msg("accepted: %s", bad[i].line);
        }

        if (strstr(err, bad[i].message) == NULL) {
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].line, err,
                     bad[i].message);
        }
    }

    /* no error buffer at all */
    assert_int_equal(sp_journal_parse("{", 1, &rec, NULL, 0), SP_ERROR);
}


static void
test_journal_parse_minimal_line_defaults_and_ignores_unknown(void **state)
{
    sp_journal_record_t  rec;
    const char          *line;

    (void) state;

    line = "{\"v\":1,\"id\":\"evt_1\",\"org_id\":\"o\",\"future\":[1,{}],"
           "\"model\":null,\"stream\":true}\r\n";
    parse_ok(line, strlen(line), &rec);
    assert_string_equal(rec.id, "evt_1");
    assert_string_equal(rec.org_id, "o");
    assert_string_equal(rec.model, "");
    assert_int_equal(rec.status, 0);
    assert_int_equal(rec.stream, 1);
    assert_true(rec.cost_nano == 0);
    /* an older writer's line has no saved_nano: nothing was saved */
    assert_true(rec.saved_nano == 0);
}


static void
test_journal_parse_truncates_long_strings_at_utf8_boundary(void **state)
{
    sp_journal_record_t  rec;
    char                 line[4096], model[1024];
    size_t               i, n;

    (void) state;

    /* 300 x "é" (2 bytes) does not fit model[256]: cut between chars */
    n = 0;

    for (i = 0; i < 300; i++) {
        model[n++] = '\xc3';
        model[n++] = '\xa9';
    }

    model[n] = '\0';

    n = (size_t) snprintf(line, sizeof(line), "{\"v\":1,\"id\":\"evt_1\","
                          "\"org_id\":\"o\",\"model\":\"%s\"}", model);
    parse_ok(line, n, &rec);
    assert_int_equal(strlen(rec.model), 254);
    assert_memory_equal(rec.model, model, 254);
}


static uint64_t
next_random(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;

    return *x * 0x2545f4914f6cdd1dULL;
}


/*
 * Mutated lines: whatever parses formats into a line that parses back to
 * the same record (controld may re-emit what it read), and the parser
 * agrees with the jansson-only one it replaced (see differ_check).
 */
static void
test_journal_mutated_lines_parse_or_fail_cleanly(void **state)
{
    static const char     alphabet[] = "\"\\{}[]:,0123456789-.eE"
                                       "truefalsn\x01\x1f\x7f\xc3\xa9\xff"
                                       "\xed\xa0\x80u ";
    sp_journal_record_t   rec, back, again;
    char                  line[SP_JOURNAL_LINE_MAX], *copy;
    char                  out[SP_JOURNAL_LINE_MAX], err[128];
    uint64_t              x;
    size_t                n, len, off;
    int                   round, k, i, parsed;

    (void) state;

    fill_record(&rec);
    n = format_ok(&rec, line);
    x = 0x243f6a8885a308d3ULL;
    parsed = 0;

    for (round = 0; round < 20000; round++) {
        len = n;
        copy = malloc(n + 16);
        memcpy(copy, line, n);
        k = 1 + (int) (next_random(&x) % 4);

        for (i = 0; i < k; i++) {
            off = next_random(&x) % len;

            switch (next_random(&x) % 3) {
            case 0:
                copy[off] = alphabet[next_random(&x) % (sizeof(alphabet) - 1)];
                break;
            case 1:
                memmove(copy + off, copy + off + 1, len - off - 1);
                len--;
                break;
            default:
                if (len < n + 16) {
                    memmove(copy + off + 1, copy + off, len - off);
                    copy[off] = alphabet[next_random(&x)
                                         % (sizeof(alphabet) - 1)];
                    len++;
                }
            }
        }

        /* and the jansson-only parser says the same of it */
        differ_check(copy, len);

        if (sp_journal_parse(copy, len, &back, err, sizeof(err)) == SP_OK) {
            parsed++;
            len = sp_journal_format(&back, out, sizeof(out));
            assert_true(len > 0);
            parse_ok(out, len, &again);
            assert_records_equal(&back, &again);

        } else {
            assert_true(strlen(err) > 0);
        }

        free(copy);
    }

    assert_true(parsed > 0);
}


static void
test_field_copy_truncates_at_utf8_boundary(void **state)
{
    char  dst[8];

    (void) state;

    sp_field_copy(dst, sizeof(dst), "abc", 3);
    assert_string_equal(dst, "abc");

    sp_field_copy(dst, sizeof(dst), "abcdefgh", 8);
    assert_string_equal(dst, "abcdefg");

    /* "abcde" + "€" (3 bytes): the euro does not fit whole */
    sp_field_copy(dst, sizeof(dst), "abcde\xe2\x82\xac", 8);
    assert_string_equal(dst, "abcde");

    /* "abcd" + "€": fits exactly in 7 */
    sp_field_copy(dst, sizeof(dst), "abcd\xe2\x82\xac" "z", 8);
    assert_string_equal(dst, "abcd\xe2\x82\xac");

    /* a 4-byte character straddling the end */
    sp_field_copy(dst, sizeof(dst), "abcdef\xf0\x9f\x98\x80", 10);
    assert_string_equal(dst, "abcdef");

    sp_field_copy(dst, 1, "abc", 3);
    assert_string_equal(dst, "");

    dst[0] = 'q';
    sp_field_copy(dst, 0, "abc", 3);
    assert_int_equal(dst[0], 'q');

    sp_field_copy(dst, sizeof(dst), "", 0);
    assert_string_equal(dst, "");
}


static void
test_journal_check_accepts_a_written_record_and_the_bounds(void **state)
{
    char                 err[256];
    sp_journal_record_t  rec;

    (void) state;

    fill_record(&rec);
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_OK);

    /* the largest values the bounds allow, and the statuses at the ends */
    rec.input_tokens = SP_JOURNAL_TOKENS_MAX;
    rec.output_tokens = SP_JOURNAL_TOKENS_MAX;
    rec.cached_tokens = SP_JOURNAL_TOKENS_MAX / 2;
    rec.cache_write_tokens = SP_JOURNAL_TOKENS_MAX / 2;
    rec.cost_nano = SP_JOURNAL_NANO_MAX;
    rec.reserved_nano = SP_JOURNAL_NANO_MAX;
    rec.saved_nano = SP_JOURNAL_NANO_MAX;
    rec.status = 599;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_OK);

    rec.status = 100;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_OK);

    /* no response sent: nginx leaves the status 0 */
    fill_record(&rec);
    rec.status = 0;
    rec.input_tokens = 0;
    rec.output_tokens = 0;
    rec.cached_tokens = 0;
    rec.cache_write_tokens = 0;
    rec.cost_nano = 0;
    rec.reserved_nano = 0;
    rec.saved_nano = 0;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_OK);
}


static void
test_journal_check_refuses_out_of_range_numbers_naming_the_field(
    void **state)
{
    size_t               i;
    char                 err[256];
    sp_journal_record_t  rec;
    const struct {
        size_t       offset;
        int64_t      value;
        const char  *field;
    } cases[] = {
        { offsetof(sp_journal_record_t, input_tokens), -1, "input_tokens" },
        { offsetof(sp_journal_record_t, output_tokens), -5,
          "output_tokens" },
        { offsetof(sp_journal_record_t, cached_tokens), -1,
          "cached_tokens" },
        { offsetof(sp_journal_record_t, cache_write_tokens), INT64_MIN,
          "cache_write_tokens" },
        { offsetof(sp_journal_record_t, cost_nano), -1, "cost_nano" },
        { offsetof(sp_journal_record_t, reserved_nano), -150000,
          "reserved_nano" },
        { offsetof(sp_journal_record_t, input_tokens),
          SP_JOURNAL_TOKENS_MAX + 1, "input_tokens" },
        { offsetof(sp_journal_record_t, output_tokens), INT64_MAX,
          "output_tokens" },
        { offsetof(sp_journal_record_t, cost_nano), SP_JOURNAL_NANO_MAX + 1,
          "cost_nano" },
        { offsetof(sp_journal_record_t, reserved_nano), INT64_MAX,
          "reserved_nano" },
        { offsetof(sp_journal_record_t, saved_nano), -1, "saved_nano" },
        { offsetof(sp_journal_record_t, saved_nano),
          SP_JOURNAL_NANO_MAX + 1, "saved_nano" },
    };

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fill_record(&rec);
        memcpy((char *) &rec + cases[i].offset, &cases[i].value,
               sizeof(int64_t));
        err[0] = '\0';

        assert_int_equal(sp_journal_check(&rec, err, sizeof(err)),
                         SP_ERROR);
        assert_non_null(strstr(err, cases[i].field));
        /* the reason never quotes the record's strings */
        assert_null(strstr(err, rec.org_id));
    }
}


static void
test_journal_check_refuses_cached_beyond_input_and_bad_status(void **state)
{
    char                 err[256];
    sp_journal_record_t  rec;

    (void) state;

    fill_record(&rec);
    rec.input_tokens = 10;
    rec.cached_tokens = 6;
    rec.cache_write_tokens = 5;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "exceed \"input_tokens\" (10)"));

    rec.cache_write_tokens = 4;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_OK);

    rec.status = 99;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_ERROR);
    assert_non_null(strstr(err, "\"status\" is 99"));

    rec.status = 600;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_ERROR);

    rec.status = 999;
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_ERROR);
}


static void
test_journal_check_refuses_a_parsed_line_with_negative_tokens(void **state)
{
    char                 err[256];
    const char          *line;
    sp_journal_record_t  rec;

    (void) state;

    /* the parser takes any integer; the check is what refuses it */
    line = "{\"v\":1,\"id\":\"evt_neg\",\"org_id\":\"org_a\","
           "\"input_tokens\":-1000000,\"output_tokens\":3,"
           "\"cost_nano\":-5,\"status\":200}";

    assert_int_equal(sp_journal_parse(line, strlen(line), &rec, err,
                                      sizeof(err)), SP_OK);
    assert_int_equal(sp_journal_check(&rec, err, sizeof(err)), SP_ERROR);
    assert_string_equal(err, "field \"input_tokens\" is -1000000, "
                             "expected 0..1000000000000");
}


/* ---- the tape reader against the jansson-only parser it replaced ---- */

/*
 * Both parsers on one line: the same verdict, the same error text and the
 * same record, byte for byte (what was read before an error included).
 * Returns whether the line parsed.
 */
static int
differ_check(const char *line, size_t len)
{
    int                  ra, rb;
    char                 ea[256], eb[256];
    sp_journal_record_t  a, b;

    memset(&a, 0x5a, sizeof(a));
    memset(&b, 0xa5, sizeof(b));
    strcpy(ea, "(unset)");
    strcpy(eb, "(unset)");

    ra = oracle_journal_parse(line, len, &a, ea, sizeof(ea));
    rb = sp_journal_parse(line, len, &b, eb, sizeof(eb));

    if (ra != rb || (ra != SP_OK && strcmp(ea, eb) != 0)
        || memcmp(&a, &b, sizeof(a)) != 0)
    {
        fail_msg("differs on %.*s\n  jansson: %d %s\n  tape:    %d %s",
                 (int) len, line, ra, ra == SP_OK ? "" : ea, rb,
                 rb == SP_OK ? "" : eb);
    }

    return ra == SP_OK;
}


/* the members of a line the writer could have written, raw JSON values */
static const char  *differ_members[][2] = {
    { "v", "1" },
    { "id", "\"evt_01HZY5J3\"" },
    { "ts_ms", "1764230000123" },
    { "org_id", "\"org_a\"" },
    { "api_key_id", "\"key_7\"" },
    { "provider", "\"openai\"" },
    { "requested_model", "\"gpt-4o-mini\"" },
    { "model", "\"gpt-4o-mini-2024-07-18\"" },
    { "input_tokens", "12" },
    { "output_tokens", "34" },
    { "cached_tokens", "5" },
    { "cache_write_tokens", "6" },
    { "cost_nano", "150000" },
    { "status", "200" },
    { "cache", "\"hit\"" },
    { "saved_nano", "120000" },
    { "stream", "true" },
    { "latency_ms", "1234" },
    { "gateway_us", "85" },
    { "department", "\"eng\"" },
    { "project", "\"apollo\"" },
    { "agent_id", "\"agent-9\"" },
    { "trace_id", "\"4bf92f35-77b3-4da6-a3ce-929d0e0e4736\"" },
    { "span_id", "\"00f067aa0ba902b7\"" },
    { "parent_id", "\"53995c3f42cd8ad8\"" },
    { "warnings", "\"usage_estimated,unpriced_model\"" },
    { "error_code", "\"upstream_timeout\"" },
    { "epoch", "1764230000000" },
    { "reserved_nano", "450000" },
    { "endpoint", "\"POST /chat/completions\"" },
    { "routed", "true" },
    { "route_rule", "\"rr_0123456789abcdef01234567\"" },
    { "attempts", "3" },
    { "attempt_log", "\"openai/gpt-4o:429,openai/gpt-4o:0\"" },
    { "route_note", "\"rr_a: no tools on cohere\"" },
    { "template_id", "\"7d4c9b1e-3f2a-4c6d-8e9f-0a1b2c3d4e5f\"" },
    { "template_version", "3" },
    { "guard_score_milli", "850" },
    { "pii_types", "\"card,email\"" },
    { "policy_action", "\"redact\"" },
    { "policy_ids", "\"pol_0123456789abcdef\"" },
    { "policy_warnings", "\"pii_detected\"" },
    { "hallucination_pct", "12" },
    { "shadow_key_type", "\"openai\"" },
    { "shadow_key_fp", "\"fp_0123456789abcdef\"" },
    { "client_addr", "\"10.0.0.7\"" },
};

#define DIFFER_NMEMBERS                                                       \
    (sizeof(differ_members) / sizeof(differ_members[0]))


/*
 * A line of all members but member which (if any), whose value is raw
 * instead (NULL: left out; its key written as key when key is not NULL),
 * then extra before the closing brace.
 */
static size_t
differ_line(char *out, size_t size, size_t which, const char *key,
    const char *raw, const char *extra)
{
    size_t       i, n;
    const char  *value, *name;

    n = (size_t) snprintf(out, size, "{");

    for (i = 0; i < DIFFER_NMEMBERS; i++) {
        name = differ_members[i][0];
        value = differ_members[i][1];

        if (i == which) {
            if (raw == NULL) {
                continue;
            }

            value = raw;
            name = key ? key : name;
        }

        n += (size_t) snprintf(out + n, size - n, "%s\"%s\":%s",
                               n > 1 ? "," : "", name, value);
    }

    n += (size_t) snprintf(out + n, size - n, "%s}\n", extra);
    assert_true(n < size);

    return n;
}


static void
test_journal_parse_agrees_with_jansson_on_a_table_of_lines(void **state)
{
    static const char   *values[] = {
        NULL, "null", "\"\"", "\"x\"", "0", "-0", "1", "-1", "999", "1000",
        "1.5", "1e3", "1E-2", "-0.0", "true", "false", "[]", "{}", "[1,2]",
        "{\"a\":1}", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "-9223372036854775809",
        "123456789012345678901234567890", "1e400", "\"evt_\"",
        "\"evt_\\u00e9\"", "\"evt_\\ud83d\\ude00\"", "\"evt_\\ud83d\"",
        "\"evt_\\u0000x\"", "\"\\u0000\"", "\"a\\nb\\t\\\"\\\\\\/\"",
        "\"caf\xc3\xa9\"", "\"bad\xff\"", "\"bad\xc3\"", "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"", "\"raw\x01\"", "\"evt_\\x\"", "01", "+1",
        "- 1", ".5", "1.", "tru", "nul", "\"unterminated",
    };
    static const char   *keys[] = {
        "\\u0076", "i\\u0064", "\\u006frg_id", "stat\\u0075s", "st\\u0072eam",
        "id\\u0000", "v\\u0000", "\\ud83d\\ude00", "ID", "",
        "a_key_that_is_longer_than_any_field_name_at_all",
    };
    static const char   *extras[] = {
        ",\"v\":1", ",\"id\":\"evt_2\"", ",\"status\":200", ",\"stream\":false",
        ",\"stream\":true", ",\"x\":1,\"x\":2", ",\"i\\u0064\":\"evt_3\"",
        ",\"unknown\":{\"deep\":[1,2,{\"v\":2}]}",
        ",\"n\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]",
        ",\"u\":\"\\u0000\"", ",\"e\":\"\\ud800\"", "  ", "\t\r\n ", ",",
        ",\"z\"", ",\"z\":", ",\"z\":1}", "} ", "}{}", "]",
    };
    char                 line[SP_JOURNAL_LINE_MAX], wide[8192];
    const char          *fixed[] = {
        "", " ", "\n", "\r\n", "{}", "[]", "[{\"v\":1}]", "\"evt_\"", "1",
        "null", "{\"v\":1}", "{\"v\":1,\"id\":\"evt_a\"}",
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}",
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}\r\n\r\n",
        "\xef\xbb\xbf{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}",
        " {\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"} ",
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}\n{}",
        "{\"v\":1,\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}",
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\",\"org_id\":\"o\"}",
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\",\"org\\u005fid\":\"o\"}",
        "{\"v\":01}", "{\"v\":1.0}", "{\"v\":\"1\"}", "{\"v\":2}",
    };
    static const char    nul_in_string[] =
        "{\"v\":1,\"id\":\"evt_\0a\",\"org_id\":\"o\"}";
    static const char    nul_between[] =
        "{\"v\":1,\"id\":\"evt_a\",\0\"org_id\":\"o\"}";
    static const char    nul_after[] =
        "{\"v\":1,\"id\":\"evt_a\",\"org_id\":\"o\"}\0";
    size_t               i, j, n, ok, cut, total;

    (void) state;

    ok = 0;
    total = 0;

    /* every member: left out, or any of the values */
    for (i = 0; i < DIFFER_NMEMBERS; i++) {
        for (j = 0; j < sizeof(values) / sizeof(values[0]); j++) {
            n = differ_line(line, sizeof(line), i, NULL, values[j], "");
            ok += differ_check(line, n);
            total++;
        }

        /* the member's key spelt otherwise, escaped or not */
        for (j = 0; j < sizeof(keys) / sizeof(keys[0]); j++) {
            n = differ_line(line, sizeof(line), i, keys[j],
                            differ_members[i][1], "");
            ok += differ_check(line, n);
            total++;
        }
    }

    for (j = 0; j < sizeof(extras) / sizeof(extras[0]); j++) {
        n = differ_line(line, sizeof(line), SIZE_MAX, NULL, NULL,
                        extras[j]);
        ok += differ_check(line, n);
        total++;
    }

    for (j = 0; j < sizeof(fixed) / sizeof(fixed[0]); j++) {
        ok += differ_check(fixed[j], strlen(fixed[j]));
        total++;
    }

    /* a NUL byte in the line, raw: in a string, between members, after */
    differ_check(nul_in_string, sizeof(nul_in_string) - 1);
    differ_check(nul_between, sizeof(nul_between) - 1);
    differ_check(nul_after, sizeof(nul_after) - 1);
    total += 3;

    /* the whole line cut short, at every byte */
    n = differ_line(line, sizeof(line), SIZE_MAX, NULL, NULL, "");

    for (cut = 0; cut <= n; cut++) {
        ok += differ_check(line, cut);
        total++;
    }

    /* overlong strings, cut at UTF-8 boundaries, plain and escaped */
    for (j = 0; j < 4; j++) {
        static const char  *unit[] = { "a", "\xc3\xa9", "\xe6\x97\xa5",
                                       "\\u00e9" };
        size_t               w;

        w = (size_t) snprintf(wide, sizeof(wide), "\"evt_");

        for (i = 0; i < 300; i++) {
            w += (size_t) snprintf(wide + w, sizeof(wide) - w, "%s",
                                   unit[j]);
            snprintf(wide + w, sizeof(wide) - w, "\"");

            n = differ_line(line, sizeof(line), 1, NULL, wide, "");
            ok += differ_check(line, n);
            n = differ_line(line, sizeof(line), 7, NULL, wide, "");
            ok += differ_check(line, n);
            total += 2;
        }
    }

    /* nesting deeper than the scanner follows, and than jansson takes */
    for (j = 300; j <= 3000; j += 2700) {
        n = differ_line(line, sizeof(line), SIZE_MAX, NULL, NULL, "") - 2;
        n += (size_t) snprintf(line + n, sizeof(line) - n, ",\"n\":");
        memset(line + n, '[', j);
        memset(line + n + j, ']', j);
        memcpy(line + n + 2 * j, "}\n", 3);
        ok += differ_check(line, n + 2 * j + 2);
        total++;
    }

    /* more members than the scanner checks for twins: jansson reads it */
    n = differ_line(line, sizeof(line), SIZE_MAX, NULL, NULL, "");
    n -= 2;

    for (i = 0; i < 80; i++) {
        n += (size_t) snprintf(line + n, sizeof(line) - n, ",\"x%zu\":%zu",
                               i, i);
        memcpy(line + n, "}\n", 3);
        ok += differ_check(line, n + 2);
        total++;
    }

    memcpy(line + n - 6, ",\"x0\":0}", 9);
    differ_check(line, strlen(line));

    /* the table has both outcomes in number */
    print_message("%zu lines, %zu parsed\n", total, ok);
    assert_true(ok > 300);
    assert_true(total - ok > 600);
}

int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_journal_round_trips_every_field),
        cmocka_unit_test(test_journal_line_is_the_documented_shape),
        cmocka_unit_test(
            test_journal_unrouted_line_has_no_routing_or_template_members),
        cmocka_unit_test(test_journal_round_trips_routing_and_template_fields),
        cmocka_unit_test(test_journal_routing_fields_bounds),
        cmocka_unit_test(test_journal_round_trips_policy_and_score_fields),
        cmocka_unit_test(test_journal_policy_fields_bounds),
        cmocka_unit_test(test_journal_escapes_quotes_backslashes_and_controls),
        cmocka_unit_test(
            test_journal_invalid_utf8_becomes_replacement_and_parses),
        cmocka_unit_test(test_journal_format_returns_0_when_buffer_too_small),
        cmocka_unit_test(test_journal_longest_record_fits_line_max),
        cmocka_unit_test(test_journal_parse_rejects_bad_lines_with_message),
        cmocka_unit_test(
            test_journal_parse_minimal_line_defaults_and_ignores_unknown),
        cmocka_unit_test(
            test_journal_parse_truncates_long_strings_at_utf8_boundary),
        cmocka_unit_test(test_journal_mutated_lines_parse_or_fail_cleanly),
        cmocka_unit_test(test_field_copy_truncates_at_utf8_boundary),
        cmocka_unit_test(
            test_journal_check_accepts_a_written_record_and_the_bounds),
        cmocka_unit_test(
            test_journal_check_refuses_out_of_range_numbers_naming_the_field),
        cmocka_unit_test(
            test_journal_check_refuses_cached_beyond_input_and_bad_status),
        cmocka_unit_test(
            test_journal_check_refuses_a_parsed_line_with_negative_tokens),
        cmocka_unit_test(
            test_journal_parse_agrees_with_jansson_on_a_table_of_lines),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
