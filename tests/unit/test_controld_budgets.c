/* controld budgets and agents: body validation, thresholds, node ids */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "controld.h"
#include "api.h"
#include "sp_snapshot.h"


/* parses text as a body; returns the parse result, err filled */
static int
parse(const char *text, cd_budget_input_t *in, cd_field_error_t *err,
    json_t **keep)
{
    json_error_t  jerr;

    *keep = json_loads(text, 0, &jerr);
    assert_non_null(*keep);

    return cd_budget_body_parse(*keep, in, err);
}


static void
assert_refused(const char *text, unsigned status, const char *field)
{
    json_t             *body;
    cd_field_error_t    err;
    cd_budget_input_t   in;

    assert_int_equal(parse(text, &in, &err, &body), CD_ERROR);
    assert_int_equal(err.status, status);
    assert_string_equal(err.field, field);
    json_decref(body);
}


static void
test_scope_names_map_to_snapshot_scopes(void **state)
{
    assert_int_equal(cd_budget_scope_parse("organization"),
                     SP_BUDGET_SCOPE_ORG);
    assert_int_equal(cd_budget_scope_parse("api_key"),
                     SP_BUDGET_SCOPE_API_KEY);
    assert_int_equal(cd_budget_scope_parse("agent"), SP_BUDGET_SCOPE_AGENT);
    assert_int_equal(cd_budget_scope_parse("department"),
                     SP_BUDGET_SCOPE_DEPARTMENT);
    assert_int_equal(cd_budget_scope_parse("project"),
                     SP_BUDGET_SCOPE_PROJECT);
    assert_int_equal(cd_budget_scope_parse("org"), -1);
    assert_int_equal(cd_budget_scope_parse(""), -1);
    assert_string_equal(cd_budget_scope_name(SP_BUDGET_SCOPE_AGENT),
                        "agent");
    assert_null(cd_budget_scope_name(SP_BUDGET_SCOPE_COUNT));
}


static void
test_period_kinds_are_daily_weekly_monthly_total(void **state)
{
    assert_string_equal(cd_budget_period_parse("daily"), "daily");
    assert_string_equal(cd_budget_period_parse("weekly"), "weekly");
    assert_string_equal(cd_budget_period_parse("monthly"), "monthly");
    assert_string_equal(cd_budget_period_parse("total"), "total");
    assert_null(cd_budget_period_parse("hourly"));
    assert_null(cd_budget_period_parse("Daily"));
    assert_null(cd_budget_period_parse(""));
}


static void
test_limit_is_exact_and_positive(void **state)
{
    int64_t            nano;
    json_t            *v;
    cd_field_error_t   err;

    v = json_string("100.50");
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_OK);
    assert_int_equal(nano, 100500000000LL);
    json_decref(v);

    v = json_string("0.000000001");
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_OK);
    assert_int_equal(nano, 1);
    json_decref(v);

    v = json_integer(5);
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_OK);
    assert_int_equal(nano, 5000000000LL);
    json_decref(v);

    v = json_string("0");
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    json_decref(v);

    v = json_string("-1");
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    json_decref(v);

    v = json_string("1.0000000001");
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    assert_string_equal(err.field, "limit_usd");
    json_decref(v);

    v = json_integer(-3);
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    json_decref(v);

    v = json_integer(100000000000LL);
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    json_decref(v);

    v = json_real(1.5);
    assert_int_equal(cd_budget_limit_parse(v, &nano, &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    json_decref(v);

    assert_int_equal(cd_budget_limit_parse(NULL, &nano, &err), CD_ERROR);
    assert_string_equal(err.code, "missing_field");
}


static void
test_thresholds_default_sort_and_dedupe(void **state)
{
    int                t[CD_BUDGET_THRESHOLDS_MAX];
    size_t             n;
    json_t            *v;
    cd_field_error_t   err;

    assert_int_equal(cd_budget_thresholds_parse(NULL, t, &n, &err), CD_OK);
    assert_int_equal(n, 3);
    assert_int_equal(t[0], 50);
    assert_int_equal(t[2], 100);

    v = json_loads("[100, 10, 50, 50]", 0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_OK);
    assert_int_equal(n, 3);
    assert_int_equal(t[0], 10);
    assert_int_equal(t[1], 50);
    assert_int_equal(t[2], 100);
    json_decref(v);

    v = json_loads("[]", 0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_OK);
    assert_int_equal(n, 0);
    json_decref(v);

    v = json_loads("[0]", 0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_ERROR);
    assert_int_equal(err.status, 422);
    json_decref(v);

    v = json_loads("[101]", 0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_ERROR);
    json_decref(v);

    v = json_loads("[\"50\"]", 0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_ERROR);
    assert_int_equal(err.status, 400);
    json_decref(v);

    v = json_loads("[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]",
                   0, NULL);
    assert_int_equal(cd_budget_thresholds_parse(v, t, &n, &err), CD_ERROR);
    json_decref(v);
}


static void
test_thresholds_read_back_from_postgres_arrays(void **state)
{
    int     t[CD_BUDGET_THRESHOLDS_MAX];
    size_t  n;

    assert_int_equal(cd_budget_thresholds_from_text("{50,80,100}", t, &n),
                     CD_OK);
    assert_int_equal(n, 3);
    assert_int_equal(t[1], 80);
    assert_int_equal(cd_budget_thresholds_from_text("{}", t, &n), CD_OK);
    assert_int_equal(n, 0);
    assert_int_equal(cd_budget_thresholds_from_text("{7}", t, &n), CD_OK);
    assert_int_equal(t[0], 7);
    assert_int_equal(cd_budget_thresholds_from_text("50,80", t, &n),
                     CD_ERROR);
    assert_int_equal(cd_budget_thresholds_from_text("{50,}", t, &n),
                     CD_ERROR);
    assert_int_equal(cd_budget_thresholds_from_text("{0}", t, &n), CD_ERROR);
    assert_int_equal(cd_budget_thresholds_from_text("{50}x", t, &n),
                     CD_ERROR);
}


static void
test_threshold_reached_exactly_at_the_percent(void **state)
{
    /* 80 % of 10 USD is 8 USD */
    assert_false(cd_budget_threshold_reached(10000000000LL, 7999999999LL,
                                             80));
    assert_true(cd_budget_threshold_reached(10000000000LL, 8000000000LL,
                                            80));
    assert_true(cd_budget_threshold_reached(10000000000LL, 8000000001LL,
                                            80));
    assert_false(cd_budget_threshold_reached(3, 0, 1));
    /* 1 % of 3 nano is 0.03 nano: reached by the first nano */
    assert_true(cd_budget_threshold_reached(3, 1, 1));
    assert_false(cd_budget_threshold_reached(100, 99, 100));
    assert_true(cd_budget_threshold_reached(100, 100, 100));
    /* no overflow near INT64_MAX */
    assert_false(cd_budget_threshold_reached(INT64_MAX, INT64_MAX / 2,
                                             100));
    assert_true(cd_budget_threshold_reached(INT64_MAX, INT64_MAX, 100));
}


static void
test_body_defaults_and_scopes(void **state)
{
    json_t             *body;
    cd_field_error_t    err;
    cd_budget_input_t   in;

    assert_int_equal(parse("{\"name\":\"n\",\"scope\":{\"type\":"
                           "\"organization\"},\"limit_usd\":\"10\","
                           "\"period\":\"daily\"}", &in, &err, &body),
                     CD_OK);
    assert_int_equal(in.scope, SP_BUDGET_SCOPE_ORG);
    assert_string_equal(in.scope_value, "");
    assert_null(in.provider);
    assert_null(in.model);
    assert_string_equal(in.timezone, "UTC");
    assert_int_equal(in.action, SP_BUDGET_BLOCK);
    assert_int_equal(in.nthresholds, 3);
    assert_int_equal(in.limit_nano, 10000000000LL);
    json_decref(body);

    assert_int_equal(parse("{\"name\":\"n\",\"scope\":{\"type\":"
                           "\"project\",\"value\":\"apollo\"},"
                           "\"provider\":\"anthropic\",\"model\":"
                           "\"claude-3-5-haiku\",\"limit_usd\":\"1\","
                           "\"period\":\"total\",\"timezone\":"
                           "\"America/New_York\",\"action\":\"warn\","
                           "\"thresholds\":[90]}", &in, &err, &body),
                     CD_OK);
    assert_int_equal(in.scope, SP_BUDGET_SCOPE_PROJECT);
    assert_string_equal(in.scope_value, "apollo");
    assert_string_equal(in.provider, "anthropic");
    assert_string_equal(in.period, "total");
    assert_string_equal(in.timezone, "America/New_York");
    assert_int_equal(in.action, SP_BUDGET_WARN);
    assert_int_equal(in.nthresholds, 1);
    json_decref(body);
}


static void
test_body_errors_name_the_field(void **state)
{
    assert_refused("{\"scope\":{\"type\":\"organization\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\"}", 422, "name");
    assert_refused("{\"name\":\"n\",\"limit_usd\":\"1\","
                   "\"period\":\"daily\"}", 422, "scope");
    assert_refused("{\"name\":\"n\",\"scope\":\"organization\","
                   "\"limit_usd\":\"1\",\"period\":\"daily\"}", 400, "scope");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"team\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\"}", 422,
                   "scope.type");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\","
                   "\"extra\":1},\"limit_usd\":\"1\",\"period\":\"daily\"}",
                   400, "scope");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"department\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\"}", 422,
                   "scope.value");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\","
                   "\"value\":\"x\"},\"limit_usd\":\"1\","
                   "\"period\":\"daily\"}", 422, "scope.value");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"api_key\","
                   "\"value\":\"sp_key_x\"},\"limit_usd\":\"1\","
                   "\"period\":\"daily\"}", 422, "scope.value");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"agent\","
                   "\"value\":\"bot-1\"},\"limit_usd\":\"1\","
                   "\"period\":\"daily\"}", 422, "scope.value");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\"},"
                   "\"provider\":\"openrouter\",\"limit_usd\":\"1\","
                   "\"period\":\"daily\"}", 422, "provider");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\"},"
                   "\"limit_usd\":\"1\",\"period\":\"yearly\"}", 422,
                   "period");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\","
                   "\"timezone\":\"Europe/Paris; DROP\"}", 422, "timezone");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\","
                   "\"action\":\"stop\"}", 422, "action");
    assert_refused("{\"name\":\"n\",\"scope\":{\"type\":\"organization\"},"
                   "\"limit_usd\":\"1\",\"period\":\"daily\","
                   "\"thresholds\":50}", 400, "thresholds");
}


static void
test_timezone_names_look_like_iana(void **state)
{
    assert_true(cd_timezone_wellformed("UTC"));
    assert_true(cd_timezone_wellformed("Europe/Paris"));
    assert_true(cd_timezone_wellformed("America/Argentina/Buenos_Aires"));
    assert_true(cd_timezone_wellformed("Etc/GMT+5"));
    assert_false(cd_timezone_wellformed(""));
    assert_false(cd_timezone_wellformed("Europe/Paris "));
    assert_false(cd_timezone_wellformed("a'b"));
}


static void
test_default_node_id_is_host_and_journal_hash(void **state)
{
    char  a[CD_ID_MAX], b[CD_ID_MAX], c[CD_ID_MAX];
    char  host[200];

    cd_config_default_node_id("gw1", "/var/log/spendpol/journal.log", a,
                              sizeof(a));
    cd_config_default_node_id("gw1", "/var/log/spendpol/journal2.log", b,
                              sizeof(b));
    cd_config_default_node_id("gw1", "/var/log/spendpol/journal.log", c,
                              sizeof(c));

    assert_int_equal(strlen(a), 3 + 1 + 8);
    assert_memory_equal(a, "gw1-", 4);
    assert_string_not_equal(a, b);
    assert_string_equal(a, c);

    /* a long hostname is cut, the hash kept */
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    cd_config_default_node_id(host, "/j", a, sizeof(a));
    assert_int_equal(strlen(a), CD_ID_MAX - 1);
    assert_int_equal(a[CD_ID_MAX - 10], '-');
}


static void
test_spend_slots_stay_at_most_half_full(void **state)
{
    assert_int_equal(cd_spend_slots_for(0), CD_SPEND_MIN_SLOTS);
    assert_int_equal(cd_spend_slots_for(32), CD_SPEND_MIN_SLOTS);
    assert_int_equal(cd_spend_slots_for(33), 128);
    assert_int_equal(cd_spend_slots_for(1000), 2048);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_scope_names_map_to_snapshot_scopes),
        cmocka_unit_test(test_period_kinds_are_daily_weekly_monthly_total),
        cmocka_unit_test(test_limit_is_exact_and_positive),
        cmocka_unit_test(test_thresholds_default_sort_and_dedupe),
        cmocka_unit_test(test_thresholds_read_back_from_postgres_arrays),
        cmocka_unit_test(test_threshold_reached_exactly_at_the_percent),
        cmocka_unit_test(test_body_defaults_and_scopes),
        cmocka_unit_test(test_body_errors_name_the_field),
        cmocka_unit_test(test_timezone_names_look_like_iana),
        cmocka_unit_test(test_default_node_id_is_host_and_journal_hash),
        cmocka_unit_test(test_spend_slots_stay_at_most_half_full),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
