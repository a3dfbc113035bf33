/*
 * controld alert rules and webhooks: rule bodies, webhook URLs and their
 * redaction, the backoff schedule, status lines, Slack payloads; and the
 * rate_limits body of keys and the organisation.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "webhook.h"
#include "api.h"


/* ---- URLs ------------------------------------------------------------- */

static void
test_url_parse_http_https_ports_paths(void **state)
{
    cd_url_t  u;

    assert_int_equal(cd_url_parse("http://127.0.0.1:8080/hook?a=1", &u),
                     CD_OK);
    assert_false(u.https);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_true(u.explicit_port);
    assert_string_equal(u.path, "/hook?a=1");
    assert_string_equal(u.userinfo, "");

    assert_int_equal(cd_url_parse("https://hooks.slack.com/services/T/B/x",
                                  &u), CD_OK);
    assert_true(u.https);
    assert_int_equal(u.port, 443);
    assert_false(u.explicit_port);
    assert_string_equal(u.path, "/services/T/B/x");

    assert_int_equal(cd_url_parse("HTTP://example.com", &u), CD_OK);
    assert_int_equal(u.port, 80);
    assert_string_equal(u.path, "/");

    assert_int_equal(cd_url_parse("http://example.com?q=1#frag", &u), CD_OK);
    assert_string_equal(u.path, "/?q=1");

    assert_int_equal(cd_url_parse("http://[::1]:9000/x", &u), CD_OK);
    assert_true(u.ipv6);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9000);

    assert_int_equal(cd_url_parse("http://user:p%40ss@h.example/x", &u),
                     CD_OK);
    assert_string_equal(u.userinfo, "user:p%40ss");
    assert_string_equal(u.host, "h.example");
}


static void
test_url_parse_refuses_what_is_not_a_webhook(void **state)
{
    cd_url_t  u;

    assert_int_equal(cd_url_parse("", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("ftp://example.com/", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("example.com/hook", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http:///path", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host:/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host:0/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host:65536/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host:80a/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host:+80/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://ho st/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host/a b", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://host/a\r\nX: y", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://[::1/x", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://[::1]x/", &u), CD_ERROR);
    assert_int_equal(cd_url_parse("http://user@/x", &u), CD_ERROR);
}


static void
test_url_redaction_strips_userinfo_query_fragment(void **state)
{
    char  out[256];

    cd_url_redact("https://bob:secret@hooks.example.com/a/b?token=x#f", out,
                  sizeof(out));
    assert_string_equal(out, "https://hooks.example.com/a/b");

    cd_url_redact("http://127.0.0.1:9999/hook?sig=abc", out, sizeof(out));
    assert_string_equal(out, "http://127.0.0.1:9999/hook");

    cd_url_redact("http://u:p@[::1]:81?x", out, sizeof(out));
    assert_string_equal(out, "http://[::1]:81/");

    cd_url_redact("not a url with secret", out, sizeof(out));
    assert_null(strstr(out, "secret"));

    /* truncation never overflows */
    cd_url_redact("http://example.com/very/long/path", out, 10);
    assert_int_equal(strlen(out), 9);
}


static void
test_userinfo_is_percent_decoded(void **state)
{
    char  out[32];

    assert_int_equal(cd_url_pct_decode("user:p%40ss", out, sizeof(out)), 9);
    assert_string_equal(out, "user:p@ss");
    assert_int_equal(cd_url_pct_decode("a%2", out, sizeof(out)), 3);
    assert_string_equal(out, "a%2");
    assert_int_equal(cd_url_pct_decode("%zz%3a", out, sizeof(out)), 4);
    assert_string_equal(out, "%zz:");
    assert_int_equal(cd_url_pct_decode("abcdef", out, 4), 3);
    assert_string_equal(out, "abc");
}


/* ---- backoff and status lines ----------------------------------------- */

static void
test_backoff_doubles_from_one_second_and_is_capped(void **state)
{
    assert_int_equal(cd_webhook_backoff_ms(1), 1000);
    assert_int_equal(cd_webhook_backoff_ms(2), 2000);
    assert_int_equal(cd_webhook_backoff_ms(3), 4000);
    assert_int_equal(cd_webhook_backoff_ms(4), 8000);
    assert_int_equal(cd_webhook_backoff_ms(0), 1000);
    assert_int_equal(cd_webhook_backoff_ms(7), 60000);
    assert_int_equal(cd_webhook_backoff_ms(1000), 60000);
    assert_int_equal(CD_WEBHOOK_ATTEMPTS, 5);
}


static void
test_status_line(void **state)
{
    int  status;

    assert_int_equal(cd_http_status_parse("HTTP/1.1 200 OK\r\n", 17,
                                          &status), CD_OK);
    assert_int_equal(status, 200);
    assert_int_equal(cd_http_status_parse("HTTP/1.0 503 x", 14, &status),
                     CD_OK);
    assert_int_equal(status, 503);
    assert_int_equal(cd_http_status_parse("HTTP/1.1 20", 11, &status),
                     CD_ERROR);
    assert_int_equal(cd_http_status_parse("HTTP/2 200 OK", 13, &status),
                     CD_ERROR);
    assert_int_equal(cd_http_status_parse("HTTP/1.1 999 x", 14, &status),
                     CD_ERROR);
    assert_int_equal(cd_http_status_parse("SSH-2.0-OpenSSH", 15, &status),
                     CD_ERROR);
}


/* ---- rule bodies ------------------------------------------------------ */

static int
parse_rule(const char *text, cd_alert_rule_input_t *in,
    cd_field_error_t *err)
{
    int      rc;
    json_t  *body;

    body = json_loads(text, 0, NULL);
    assert_non_null(body);

    rc = cd_alert_rule_parse(body, in, err);

    /* url points into body: only its presence is checked after this */
    if (rc == CD_OK && in->url != NULL) {
        in->url = "(set)";
    }

    json_decref(body);

    return rc;
}


static void
expect_rule_error(const char *text, unsigned status, const char *field)
{
    cd_field_error_t       err;
    cd_alert_rule_input_t  in;

    assert_int_equal(parse_rule(text, &in, &err), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_string_equal(err.field, field);
    assert_null(in.params);
}


static void
test_rule_types(void **state)
{
    assert_string_equal(cd_alert_rule_type_parse("budget_threshold"),
                        "budget_threshold");
    assert_string_equal(cd_alert_rule_type_parse("spend_spike"),
                        "spend_spike");
    assert_string_equal(cd_alert_rule_type_parse("error_rate"),
                        "error_rate");
    assert_string_equal(cd_alert_rule_type_parse("unpriced_model"),
                        "unpriced_model");
    assert_null(cd_alert_rule_type_parse("Error_rate"));
    assert_null(cd_alert_rule_type_parse(""));
}


static void
test_rule_defaults_are_filled(void **state)
{
    cd_field_error_t       err;
    cd_alert_rule_input_t  in;

    assert_int_equal(parse_rule("{\"type\": \"error_rate\"}", &in, &err),
                     CD_OK);
    assert_int_equal(json_integer_value(json_object_get(in.params,
                                        "window_minutes")), 5);
    assert_int_equal(json_integer_value(json_object_get(in.params,
                                        "threshold_percent")), 20);
    assert_int_equal(json_integer_value(json_object_get(in.params,
                                        "min_requests")), 20);
    assert_null(in.url);
    assert_null(in.format);
    json_decref(in.params);

    assert_int_equal(parse_rule("{\"type\": \"spend_spike\", \"params\":"
                                " {\"window_minutes\": 30, \"factor\": 2.5},"
                                " \"webhook\": {\"url\": \"https://h.example"
                                "/x\", \"format\": \"slack\"}}", &in, &err),
                     CD_OK);
    assert_int_equal(json_integer_value(json_object_get(in.params,
                                        "window_minutes")), 30);
    assert_true(json_real_value(json_object_get(in.params, "factor"))
                == 2.5);
    assert_int_equal(json_integer_value(json_object_get(in.params,
                                        "baseline_windows")), 24);
    assert_string_equal(in.format, "slack");
    assert_non_null(in.url);
    json_decref(in.params);

    assert_int_equal(parse_rule("{\"type\": \"budget_threshold\", \"webhook\":"
                                " {\"url\": \"https://hooks.example/\"}}",
                                &in, &err), CD_OK);
    assert_string_equal(in.format, "json");
    assert_int_equal(json_object_size(in.params), 0);
    json_decref(in.params);

    assert_int_equal(parse_rule("{\"type\": \"budget_threshold\", \"params\":"
                                " {\"budget_id\": \"bud_0123456789abcdef0123"
                                "4567\"}}", &in, &err), CD_OK);
    assert_string_equal(json_string_value(json_object_get(in.params,
                        "budget_id")), "bud_0123456789abcdef01234567");
    json_decref(in.params);
}


static void
test_rule_errors_name_the_field(void **state)
{
    expect_rule_error("{}", 422, "type");
    expect_rule_error("{\"type\": 3}", 400, "type");
    expect_rule_error("{\"type\": \"latency\"}", 422, "type");
    expect_rule_error("{\"type\": \"error_rate\", \"params\": []}", 400,
                      "params");
    expect_rule_error("{\"type\": \"error_rate\", \"params\":"
                      " {\"window_minutes\": 0}}", 422, "params");
    expect_rule_error("{\"type\": \"error_rate\", \"params\":"
                      " {\"threshold_percent\": 101}}", 422, "params");
    expect_rule_error("{\"type\": \"error_rate\", \"params\":"
                      " {\"min_requests\": \"20\"}}", 400, "params");
    expect_rule_error("{\"type\": \"error_rate\", \"params\":"
                      " {\"factor\": 3}}", 400, "params");
    expect_rule_error("{\"type\": \"spend_spike\", \"params\":"
                      " {\"factor\": 1}}", 422, "params");
    expect_rule_error("{\"type\": \"spend_spike\", \"params\":"
                      " {\"factor\": \"3\"}}", 400, "params");
    expect_rule_error("{\"type\": \"unpriced_model\", \"params\":"
                      " {\"window_minutes\": 5}}", 400, "params");
    expect_rule_error("{\"type\": \"budget_threshold\", \"params\":"
                      " {\"budget_id\": \"x\"}}", 422, "params");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\": 1}",
                      400, "webhook");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\": {}}",
                      422, "webhook.url");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\":"
                      " {\"url\": \"ftp://x/\"}}", 422, "webhook.url");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\":"
                      " {\"url\": 5}}", 400, "webhook.url");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\":"
                      " {\"url\": \"https://x.example/\", \"format\": \"xml\"}}", 422,
                      "webhook.format");
    expect_rule_error("{\"type\": \"budget_threshold\", \"webhook\":"
                      " {\"url\": \"https://x.example/\", \"secret\": \"y\"}}", 400,
                      "webhook");
}


static void
test_slack_payload_is_text_only(void **state)
{
    json_t      *alert, *slack;
    const char  *text;

    alert = json_pack("{s:s, s:s, s:s, s:s}", "id",
                      "alr_0123456789abcdef01234567", "type",
                      "budget_threshold", "severity", "warning", "message",
                      "Budget \"x\" reached 50% of its limit");
    assert_non_null(alert);

    slack = cd_alert_slack_payload(alert);
    assert_non_null(slack);
    assert_int_equal(json_object_size(slack), 1);

    text = json_string_value(json_object_get(slack, "text"));
    assert_non_null(text);
    assert_non_null(strstr(text, "budget_threshold"));
    assert_non_null(strstr(text, "reached 50%"));
    assert_non_null(strstr(text, "alr_0123456789abcdef01234567"));

    json_decref(slack);
    json_decref(alert);
}


/* ---- rate_limits bodies ----------------------------------------------- */

static int
parse_limits(const char *text, cd_rate_limits_t *rl, cd_field_error_t *err)
{
    int      rc;
    json_t  *v;

    v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    assert_true(text == NULL || v != NULL);

    rc = cd_rate_limits_parse(v, rl, err);
    json_decref(v);

    return rc;
}


static void
test_rate_limits_absent_null_and_partial(void **state)
{
    cd_field_error_t  err;
    cd_rate_limits_t  rl;

    assert_int_equal(parse_limits(NULL, &rl, &err), CD_OK);
    assert_int_equal(rl.rpm, -1);
    assert_int_equal(rl.tpm, -1);

    assert_int_equal(parse_limits("null", &rl, &err), CD_OK);
    assert_int_equal(rl.rpm, 0);
    assert_int_equal(rl.tpm, 0);

    assert_int_equal(parse_limits("{}", &rl, &err), CD_OK);
    assert_int_equal(rl.rpm, -1);
    assert_int_equal(rl.tpm, -1);

    assert_int_equal(parse_limits("{\"requests_per_minute\": 3}", &rl, &err),
                     CD_OK);
    assert_int_equal(rl.rpm, 3);
    assert_int_equal(rl.tpm, -1);

    assert_int_equal(parse_limits("{\"requests_per_minute\": 0,"
                                  " \"tokens_per_minute\": 4294967295}",
                                  &rl, &err), CD_OK);
    assert_int_equal(rl.rpm, 0);
    assert_int_equal(rl.tpm, 4294967295LL);

    assert_int_equal(parse_limits("{\"tokens_per_minute\": null}", &rl,
                                  &err), CD_OK);
    assert_int_equal(rl.tpm, 0);
}


static void
test_rate_limits_errors_name_the_field(void **state)
{
    cd_field_error_t  err;
    cd_rate_limits_t  rl;

    assert_int_equal(parse_limits("5", &rl, &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "rate_limits");

    assert_int_equal(parse_limits("{\"rpm\": 5}", &rl, &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "rate_limits");

    assert_int_equal(parse_limits("{\"requests_per_minute\": -1}", &rl,
                                  &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.field, "rate_limits.requests_per_minute");

    assert_int_equal(parse_limits("{\"tokens_per_minute\": 4294967296}", &rl,
                                  &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.field, "rate_limits.tokens_per_minute");

    assert_int_equal(parse_limits("{\"tokens_per_minute\": 1.5}", &rl, &err),
                     CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "rate_limits.tokens_per_minute");

    assert_int_equal(parse_limits("{\"requests_per_minute\": \"3\"}", &rl,
                                  &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.field, "rate_limits.requests_per_minute");
}


static void
test_rate_limits_json(void **state)
{
    json_t  *j;

    j = cd_rate_limits_json("3", "0");
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j,
                                        "requests_per_minute")), 3);
    assert_int_equal(json_integer_value(json_object_get(j,
                                        "tokens_per_minute")), 0);
    json_decref(j);

    j = cd_rate_limits_json(NULL, "4294967295");
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j,
                                        "requests_per_minute")), 0);
    assert_int_equal(json_integer_value(json_object_get(j,
                                        "tokens_per_minute")), 4294967295LL);
    json_decref(j);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_url_parse_http_https_ports_paths),
        cmocka_unit_test(test_url_parse_refuses_what_is_not_a_webhook),
        cmocka_unit_test(test_url_redaction_strips_userinfo_query_fragment),
        cmocka_unit_test(test_userinfo_is_percent_decoded),
        cmocka_unit_test(test_backoff_doubles_from_one_second_and_is_capped),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_rule_types),
        cmocka_unit_test(test_rule_defaults_are_filled),
        cmocka_unit_test(test_rule_errors_name_the_field),
        cmocka_unit_test(test_slack_payload_is_text_only),
        cmocka_unit_test(test_rate_limits_absent_null_and_partial),
        cmocka_unit_test(test_rate_limits_errors_name_the_field),
        cmocka_unit_test(test_rate_limits_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
